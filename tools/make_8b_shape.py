"""A random bf16 checkpoint shaped like Qwen3-VL-8B (development tool, issue 29 item 2).

36 decoder layers, hidden 4096, MLP 12 288, 32 heads / 8 KV heads, vocabulary 151 936 with
an untied LM head; vision depth 27, hidden 1152, DeepStack [8, 16, 24]: 8.77 B parameters,
17.5 GB. The tensor names and shapes come from transformers' own model class (built on the
meta device, so nothing of that size is ever held by this process); the values are drawn
tensor by tensor (normal, std 1/sqrt(fan-in); norms 1, biases 0) and written in ~2 GB
shards with an index, as `save_pretrained` would. The tokenizer and processor files are the
fixture tokenizer's, as in tools/bench_forward.py.

    /tmp/venv/bin/python tools/make_8b_shape.py --out /tmp/interlace-bench/8b
"""

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

from bench_forward import TOKENIZER_FROM

TEXT = dict(
    vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
    num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0,
                     "mrope_section": [24, 20, 20], "mrope_interleaved": True},
    max_position_embeddings=262144, tie_word_embeddings=False,
)
VISION = dict(
    depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, patch_size=16,
    temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=4096,
    num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24],
)
SHARD_BYTES = 2 << 30


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/interlace-bench/8b"))
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cfg = Qwen3VLConfig(text_config=TEXT, vision_config=VISION, tie_word_embeddings=False)
    src_cfg = json.loads((TOKENIZER_FROM / "config.json").read_text())
    for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        setattr(cfg, k, src_cfg[k])
    cfg.dtype = torch.bfloat16
    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    shard, size, files, index, total = {}, 0, [], {}, 0

    def flush():
        nonlocal shard, size
        if shard:
            name = f"model-{len(files) + 1:05d}.safetensors"
            save_file(shard, str(out / name), metadata={"format": "pt"})
            files.append(name)
            for k in shard:
                index[k] = name
            print(f"{name}: {len(shard)} tensors, {size / 2**30:.2f} GiB", flush=True)
        shard, size = {}, 0

    for name, shape in shapes.items():
        if len(shape) >= 2:
            fan_in = 1
            for d in shape[1:]:
                fan_in *= d
            t = torch.randn(shape, dtype=torch.float32).mul_(fan_in ** -0.5).to(torch.bfloat16)
        elif name.endswith("bias"):
            t = torch.zeros(shape, dtype=torch.bfloat16)
        else:
            t = torch.ones(shape, dtype=torch.bfloat16)
        shard[name] = t
        size += t.numel() * 2
        total += t.numel()
        if size >= SHARD_BYTES:
            flush()
    flush()
    # Shard names as save_pretrained writes them: model-0000K-of-0000N.safetensors.
    n = len(files)
    renamed = {f: f.replace(".safetensors", f"-of-{n:05d}.safetensors") for f in files}
    for old, new in renamed.items():
        (out / old).rename(out / new)
    (out / "model.safetensors.index.json").write_text(json.dumps({
        "metadata": {"total_size": total * 2},
        "weight_map": {k: renamed[v] for k, v in index.items()},
    }, indent=2))
    cfg.save_pretrained(out)
    for f in TOKENIZER_FROM.iterdir():
        if f.name not in ("config.json", "generation_config.json") and not f.name.endswith(".safetensors"):
            shutil.copy(f, out / f.name)
    print(f"{out}: {total / 1e9:.2f} B parameters in {n} shards")


if __name__ == "__main__":
    main()
