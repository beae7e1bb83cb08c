#!/usr/bin/env python3
"""Forward-pass benchmark, transformers side (development tool; see BENCHMARKS.md).

Builds (once) a mid-size random Qwen3-VL checkpoint, writes one fixed input (one 224x224
image + ~200 text tokens, processed by transformers' own processor) next to it, and times
transformers' forward pass on it. `cargo bench --bench forward -- DIR` times ours on the
same checkpoint and the same input file.

    /tmp/venv/bin/python tools/bench_forward.py [--dir /tmp/interlace-bench/mid] [--runs 10]
"""

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_FROM = ROOT / "tests" / "fixtures" / "models" / "tiny-a"


MID_TEXT = dict(
    vocab_size=16384, hidden_size=512, intermediate_size=1536, num_hidden_layers=12,
    num_attention_heads=8, num_key_value_heads=4, head_dim=64, rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0,
                     "mrope_section": [12, 10, 10], "mrope_interleaved": True},
    max_position_embeddings=4096, tie_word_embeddings=True,
)
MID_VISION = dict(
    depth=6, hidden_size=384, intermediate_size=1536, num_heads=6, patch_size=16,
    temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=512,
    num_position_embeddings=2304, deepstack_visual_indexes=[1, 3, 5],
)


def build(out: Path, text: dict = MID_TEXT, vision: dict = MID_VISION) -> None:
    """A random Qwen3-VL checkpoint of the given shape with the fixture tokenizer."""
    torch.manual_seed(0)
    cfg = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True)
    src_cfg = json.loads((TOKENIZER_FROM / "config.json").read_text())
    for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        setattr(cfg, k, src_cfg[k])
    model = Qwen3VLForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for f in TOKENIZER_FROM.iterdir():
        if f.name not in ("config.json", "generation_config.json") and not f.name.endswith(".safetensors"):
            shutil.copy(f, out / f.name)


def make_inputs(out: Path):
    processor = AutoProcessor.from_pretrained(out)
    # The benchmark's image: 224x224, left at 224x224 by smart resize (14x14 patches).
    processor.image_processor.size = {"shortest_edge": 224 * 224, "longest_edge": 224 * 224}
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8))
    words = ("describe the picture in detail and count every object you can see " * 10).split()[:60]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " ".join(words)}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[img], return_tensors="pt")
    save_file(
        {
            "input_ids": inputs["input_ids"][0].contiguous(),
            "mm_token_type_ids": inputs["mm_token_type_ids"][0].contiguous(),
            "pixel_values": inputs["pixel_values"].contiguous(),
            "image_grid_thw": inputs["image_grid_thw"].contiguous(),
        },
        str(out / "bench_inputs.safetensors"),
    )
    return inputs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/interlace-bench/mid")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    out = Path(args.dir)
    if not (out / "model.safetensors").exists():
        build(out)
    inputs = make_inputs(out)
    torch.set_num_threads(args.threads)
    model = Qwen3VLForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()
    seq = inputs["input_ids"].shape[1]
    with torch.inference_mode():
        for _ in range(2):
            model(**inputs)
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            model(**inputs)
            times.append(time.perf_counter() - t)
    print(f"transformers {__import__('transformers').__version__}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, attn {model.config._attn_implementation}")
    print(f"sequence {seq} tokens, {inputs['pixel_values'].shape[0]} patches")
    print(f"forward median {statistics.median(times) * 1000:.1f} ms over {args.runs} runs "
          f"(min {min(times) * 1000:.1f})")


if __name__ == "__main__":
    main()
