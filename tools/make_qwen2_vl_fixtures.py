#!/usr/bin/env python3
"""Generate the Qwen2-VL and Qwen2.5-VL fixtures of `interlace` under tests/fixtures/families/.

Development tool only (CI has no Python). Builds two tiny randomly initialised checkpoints,
`Qwen2VLForConditionalGeneration` and `Qwen2_5_VLForConditionalGeneration` (float32, fixed seeds),
with the tokenizer and chat template of tests/fixtures/models/tiny-a, saves them with
`save_pretrained`, and records transformers' outputs for two prompts (text only; one image +
text): input ids, pixel values, image grid, the vision tower's merged output, M-RoPE position
ids, the text rotary tables, every `output_hidden_states` entry, logits and 8 greedy tokens.

Usage (from the repository root; needs tests/fixtures/models/tiny-a and tests/fixtures/images
from tools/make_fixtures.py):

    /tmp/venv/bin/python tools/make_qwen2_vl_fixtures.py

It deletes and rewrites tests/fixtures/families/{qwen2-vl,qwen2.5-vl} and its own section of
tests/fixtures/families/README.md.
"""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from transformers import (
    AutoProcessor,
    GenerationConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import dump_json, load_processor, open_image, reinit_weights, st_save  # noqa: E402

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "families"
TOK_SRC = FIX / "models" / "tiny-a"
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "chat_template.jinja"]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
MAX_NEW_TOKENS = 8

torch.set_num_threads(2)


def special_ids() -> dict:
    tj = json.loads((TOK_SRC / "tokenizer.json").read_text(encoding="utf-8"))
    return {t["content"]: t["id"] for t in tj["added_tokens"]}


def text_config(ids: dict, vocab_size: int, mrope_section: list[int], tie: bool) -> dict:
    return dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_act="silu",
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        tie_word_embeddings=tie,
    )


# name -> how to build it
FAMILIES = {
    "qwen2-vl": dict(
        cls=Qwen2VLForConditionalGeneration,
        config_cls=Qwen2VLConfig,
        seed=2024,
        tie=True,  # as Qwen2-VL-2B
        # head_dim 16: 8 frequency slots in sections t, h, w
        mrope_section=[2, 3, 3],
        vision=dict(
            depth=3,
            embed_dim=32,
            hidden_size=64,  # = the text hidden size (the merger's output)
            hidden_act="quick_gelu",
            mlp_ratio=2,
            num_heads=2,
            in_channels=3,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image="images/odd_97x61.png",
        processor_class="Qwen2VLProcessor",
    ),
    "qwen2.5-vl": dict(
        cls=Qwen2_5_VLForConditionalGeneration,
        config_cls=Qwen2_5_VLConfig,
        seed=2025,
        tie=False,  # as Qwen2.5-VL-7B
        mrope_section=[4, 2, 2],
        vision=dict(
            depth=4,
            hidden_size=32,
            intermediate_size=48,
            out_hidden_size=64,
            hidden_act="silu",
            num_heads=2,
            in_channels=3,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            # 56 px = 2x2 merged tokens per window; the image's 3x4 merged grid splits into
            # windows of 4, 4, 2 and 2 merged tokens (blocks 0 and 2); blocks 1 and 3 attend fully.
            window_size=56,
            fullatt_block_indexes=[1, 3],
            tokens_per_second=2,
        ),
        image="images/photo_83x57.jpg",
        processor_class="Qwen2_5_VLProcessor",
    ),
}

# min_pixels upscales both fixture images to 84x112 (grid 6x8 patches, 3x4 merged tokens)
MIN_PIXELS = 28 * 28 * 8
MAX_PIXELS = 28 * 28 * 16

SYSTEM = "You are a helpful assistant."
BEGIN = "<!-- make_qwen2_vl_fixtures.py: begin -->"
END = "<!-- make_qwen2_vl_fixtures.py: end -->"


def cases(image: str) -> dict:
    return {
        "text": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Which shop grew the most?"},
        ],
        "one_image": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": image},
                    {"type": "text", "text": "Describe the image in one sentence."},
                ],
            }
        ],
    }


def build(name: str, spec: dict, ids: dict, vocab_size: int) -> Path:
    out = OUT / name / "model"
    out.mkdir(parents=True, exist_ok=True)
    cfg = spec["config_cls"](
        text_config=text_config(ids, vocab_size, spec["mrope_section"], spec["tie"]),
        vision_config=dict(spec["vision"]),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=spec["tie"],
    )
    torch.manual_seed(spec["seed"])
    model = spec["cls"](cfg).to(torch.float32).eval()
    reinit_weights(model, gain=1.0, embed_std=0.25 if spec["tie"] else 1.0)
    model.save_pretrained(out)
    GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        do_sample=False,
    ).save_pretrained(out)
    for f in TOKENIZER_FILES:
        shutil.copyfile(TOK_SRC / f, out / f)
    v = spec["vision"]
    dump_json(
        {
            "min_pixels": MIN_PIXELS,
            "max_pixels": MAX_PIXELS,
            "patch_size": v["patch_size"],
            "temporal_patch_size": v["temporal_patch_size"],
            "merge_size": v["spatial_merge_size"],
            "image_mean": CLIP_MEAN,
            "image_std": CLIP_STD,
            "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": spec["processor_class"],
        },
        out / "preprocessor_config.json",
    )
    return out


def stored_names(model_dir: Path) -> list[str]:
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        return sorted(f.keys())


# Decoder layers deleted for `logits_pruned` (transformers' own layer deletion).
DROP = [1]


def deleted(model):
    """The model with layers DROP removed from the loaded module list."""
    lm = model.model.language_model
    keep = [l for i, l in enumerate(lm.layers) if i not in DROP]
    lm.layers = torch.nn.ModuleList(keep)
    model.config.text_config.num_hidden_layers = len(keep)
    for i, layer in enumerate(keep):
        layer.self_attn.layer_idx = i
    return model


def run_case(model, processor, case: str, messages: list, out_dir: Path, image: str | None, pruned=None) -> dict:
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    images = [open_image(FIX / image)] if image else None
    inputs = processor(text=[prompt], images=images, return_tensors="pt")
    input_ids = inputs["input_ids"]
    mm = inputs["mm_token_type_ids"]
    model.model.rope_deltas = None
    position_ids, rope_deltas = model.model.get_rope_index(
        input_ids,
        mm_token_type_ids=mm,
        image_grid_thw=inputs.get("image_grid_thw"),
        attention_mask=inputs.get("attention_mask"),
    )
    model.model.rope_deltas = None
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, use_cache=False)
        lm = model.model.language_model
        probe = torch.zeros(1, input_ids.shape[1], lm.config.hidden_size)
        cos, sin = lm.rotary_emb(probe, position_ids)
    tensors = {
        "input_ids": input_ids[0],
        "mm_token_type_ids": mm[0],
        "position_ids": position_ids[:, 0, :],
        "rope_deltas": rope_deltas.reshape(1),
        "rope_cos": cos[0],
        "rope_sin": sin[0],
        "logits": out.logits[0],
    }
    assert cos.shape == (1, input_ids.shape[1], lm.config.hidden_size // lm.config.num_attention_heads)
    for i, h in enumerate(out.hidden_states):
        tensors[f"hidden_state.{i}"] = h[0]
    if image:
        tensors["pixel_values"] = inputs["pixel_values"]
        tensors["image_grid_thw"] = inputs["image_grid_thw"]
        with torch.no_grad():
            vo = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True)
        tensors["image_embeds"] = torch.cat(list(vo.pooler_output), dim=0)
        vis = input_ids[0] == model.config.image_token_id
        assert torch.equal(out.hidden_states[0][0][vis], tensors["image_embeds"]), "image embeds mismatch"
    model.model.rope_deltas = None
    with torch.no_grad():
        g = model.generate(
            **inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, top_k=None, top_p=None, temperature=None
        )
    model.model.rope_deltas = None
    tensors["generated_ids"] = g[0, input_ids.shape[1] :]
    if pruned is not None:
        pruned.model.rope_deltas = None
        with torch.no_grad():
            tensors["logits_pruned"] = pruned(**inputs, use_cache=False).logits[0]
        pruned.model.rope_deltas = None
    st_save(tensors, out_dir / f"{case}.safetensors")
    meta = {
        "messages": messages,
        "add_generation_prompt": True,
        "prompt": prompt,
        "images": [image] if image else [],
        "image_processor_class": type(processor.image_processor).__name__,
        "attn_implementation": model.config._attn_implementation,
        "dtype": "float32",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "seq_len": int(input_ids.shape[1]),
        "generation": {"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False},
        "tensors": {k: f"{str(v.dtype).replace('torch.', '')}{list(v.shape)}" for k, v in sorted(tensors.items())},
    }
    dump_json(meta, out_dir / f"{case}.json")
    return meta


# One fine-tuning step (docs/SPEC.md steps 4-5): layers STEP_LAYERS trained, everything else
# frozen, on the supervised tokens of one conversation with an image, as LLaVA JSON.
STEP_LAYERS = [0, 2]
STEP_LR = 1e-3
STEP_CLIP = 1.0
STEP_DATA = [{
    "image": "../../images/photo_83x57.jpg",
    "conversations": [
        {"from": "human", "value": "<image>\nWhat colour dominates?"},
        {"from": "gpt", "value": "Mostly green."},
        {"from": "human", "value": "And the shape?"},
        {"from": "gpt", "value": "A square, roughly."},
    ],
}]


def make_step(spec, mdir: Path, out_dir: Path) -> dict:
    """transformers + PyTorch on STEP_DATA: labels found by tokenising rendered prefixes
    (make_train_fixtures.supervised), mean cross-entropy over the supervised tokens,
    gradients, clip_grad_norm_, one torch.optim.AdamW step."""
    import torch.nn.functional as F
    from make_train_fixtures import supervised  # noqa: E402
    from transformers.image_utils import load_image

    sample = STEP_DATA[0]
    role = {"human": "user", "gpt": "assistant"}
    messages = []
    for i, t in enumerate(sample["conversations"]):
        pieces = t["value"].split("<image>")
        content = []
        for k, piece in enumerate(pieces):
            if k > 0:
                content.append({"type": "image"})
            if piece:
                content.append({"type": "text", "text": piece})
        messages.append({"role": role[t["from"]], "content": content})
    images = [load_image(str((out_dir / sample["image"]).resolve()))]
    processor = load_processor(mdir, "pil")
    enc, mask = supervised(processor, messages, images)
    model = spec["cls"].from_pretrained(str(mdir), dtype=torch.float32).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    named = {}
    for i in STEP_LAYERS:
        for n, p in model.model.language_model.layers[i].named_parameters():
            p.requires_grad_(True)
            named[f"model.layers.{i}.{n}"] = p
    params = list(named.values())
    opt = torch.optim.AdamW(params, lr=STEP_LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    model.model.rope_deltas = None
    logits = model(**enc, use_cache=False).logits[0, :-1].float()
    ids = enc["input_ids"][0]
    m = mask[1:]
    loss = F.cross_entropy(logits[m], ids[1:][m], reduction="mean")
    loss.backward()
    tensors = {f"grad.{n}": p.grad.detach().clone().contiguous() for n, p in named.items()}
    norm = torch.nn.utils.clip_grad_norm_(params, STEP_CLIP)
    opt.step()
    tensors.update({f"after1.{n}": p.detach().clone().contiguous() for n, p in named.items()})
    tensors["input_ids"] = ids.to(torch.int64)
    tensors["supervised"] = mask.to(torch.int64)
    st_save(tensors, out_dir / "step.safetensors")
    meta = {"finetune": STEP_LAYERS, "lr": STEP_LR, "max_grad_norm": STEP_CLIP,
            "loss": float(loss.detach()), "grad_norm": float(norm), "tokens": int(m.sum())}
    dump_json(meta, out_dir / "step.json")
    (out_dir / "step_data.json").write_text(json.dumps(STEP_DATA, indent=1) + "\n")
    return meta


def window_layout(model, grid_thw: torch.Tensor) -> dict:
    from transformers.vision_utils import get_vision_window_index

    vis = model.model.visual
    idx, cu = get_vision_window_index(grid_thw, vis.spatial_merge_size, vis.window_size, vis.patch_size)
    return {"window_index": idx.tolist(), "cu_window_seqlens": cu.tolist()}


def main() -> None:
    for name in FAMILIES:
        shutil.rmtree(OUT / name, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    ids = special_ids()
    vocab_size = json.loads((TOK_SRC / "config.json").read_text())["text_config"]["vocab_size"]
    report = {}
    for name, spec in FAMILIES.items():
        mdir = build(name, spec, ids, vocab_size)
        model = spec["cls"].from_pretrained(str(mdir), dtype=torch.float32).eval()
        processor = load_processor(mdir, "pil")
        # the PIL processor, as `use_fast=False` would give
        alt = AutoProcessor.from_pretrained(str(mdir), use_fast=False).image_processor
        assert type(alt).__name__ == type(processor.image_processor).__name__, (type(alt), type(processor.image_processor))
        ip = processor.image_processor
        assert list(ip.image_mean) == CLIP_MEAN and list(ip.image_std) == CLIP_STD
        info = {
            "image_processor_class": type(ip).__name__,
            "stored_tensor_names": stored_names(mdir),
            "config_json": json.loads((mdir / "config.json").read_text()),
            "cases": {},
        }
        for case, messages in cases(spec["image"]).items():
            image = spec["image"] if case == "one_image" else None
            pruned = deleted(spec["cls"].from_pretrained(str(mdir), dtype=torch.float32).eval())
            meta = run_case(model, processor, case, messages, OUT / name, image, pruned)
            info["cases"][case] = {"seq_len": meta["seq_len"], "tensors": meta["tensors"]}
            if image and name == "qwen2.5-vl":
                d = {}
                with safe_open(str(OUT / name / f"{case}.safetensors"), "pt") as f:
                    d["grid"] = f.get_tensor("image_grid_thw")
                info["window"] = window_layout(model, d["grid"])
        info["step"] = make_step(spec, mdir, OUT / name)
        report[name] = info
        dump_json(
            {k: v for k, v in info.items() if k != "config_json"},
            OUT / name / "report.json",
        )
    write_readme(report)
    for name, info in report.items():
        print(name, info["image_processor_class"], {c: v["seq_len"] for c, v in info["cases"].items()})
        print("  names:", [n for n in info["stored_tensor_names"] if ".1." not in n and ".2." not in n and ".3." not in n])
        if "window" in info:
            print("  window:", info["window"])


def summarise_names(names: list[str]) -> list[str]:
    """Names with block/layer numbers folded to `{i}`."""
    import re

    return sorted({re.sub(r"(blocks|layers)\.(\d+)\.", r"\1.{i}.", n) for n in names})


def write_readme(report: dict) -> None:
    lines = []
    w = lines.append
    w("## Qwen2-VL and Qwen2.5-VL (generated by tools/make_qwen2_vl_fixtures.py — do not edit by hand)")
    w("")
    w("Written by `tools/make_qwen2_vl_fixtures.py` (needs `models/tiny-a` and `images/` from")
    w("`tools/make_fixtures.py`). Regenerate with, from the repository root:")
    w("")
    w("```")
    w("/tmp/venv/bin/python tools/make_qwen2_vl_fixtures.py")
    w("```")
    w("")
    w(f"Generated with transformers {transformers.__version__}, torch {torch.__version__}; float32, sdpa")
    w("attention, fixed seeds. Each `<family>/` holds `model/` (a `save_pretrained` checkpoint plus the")
    w("tokenizer files and chat template copied from `models/tiny-a`, a Qwen2-VL-style")
    w("`preprocessor_config.json` with top-level min/max_pixels and the CLIP mean/std, and a greedy")
    w("`generation_config.json`), `text.safetensors` / `one_image.safetensors` with their `.json`")
    w("descriptions (prompt, tensor shapes) and `report.json` (stored tensor names and, for Qwen2.5-VL,")
    w("the window layout of the image).")
    w("")
    w("### Models")
    w("")
    w("| | qwen2-vl | qwen2.5-vl |")
    w("|---|---|---|")
    ca = report["qwen2-vl"]["config_json"]
    cb = report["qwen2.5-vl"]["config_json"]

    def tv(c, k):
        t = c.get("text_config", c)
        return t.get(k, c.get(k))

    for label, key in [
        ("decoder layers", "num_hidden_layers"),
        ("hidden_size", "hidden_size"),
        ("heads / KV heads", None),
        ("vocab_size", "vocab_size"),
        ("tie_word_embeddings", "tie_word_embeddings"),
    ]:
        if key is None:
            w(f"| {label} | {tv(ca, 'num_attention_heads')} / {tv(ca, 'num_key_value_heads')} | "
              f"{tv(cb, 'num_attention_heads')} / {tv(cb, 'num_key_value_heads')} |")
        else:
            w(f"| {label} | {tv(ca, key)} | {tv(cb, key)} |")
    w(f"| mrope_section | {FAMILIES['qwen2-vl']['mrope_section']} | {FAMILIES['qwen2.5-vl']['mrope_section']} |")
    va, vb = FAMILIES["qwen2-vl"]["vision"], FAMILIES["qwen2.5-vl"]["vision"]
    w(f"| vision | depth {va['depth']}, embed_dim {va['embed_dim']}, mlp_ratio {va['mlp_ratio']}, "
      f"{va['num_heads']} heads, LayerNorm, quick_gelu MLP | depth {vb['depth']}, hidden {vb['hidden_size']}, "
      f"intermediate {vb['intermediate_size']}, {vb['num_heads']} heads, RMSNorm, SwiGLU MLP with biases, "
      f"window_size {vb['window_size']}, fullatt_block_indexes {vb['fullatt_block_indexes']} |")
    w("| patch / merge / temporal | 14 / 2 / 2 | 14 / 2 / 2 |")
    w(f"| image (one_image case) | `{FAMILIES['qwen2-vl']['image']}` | `{FAMILIES['qwen2.5-vl']['image']}` |")
    w("")
    w(f"`min_pixels` {MIN_PIXELS} upscales both images to 84x112 px: grid (1, 6, 8), 12 merged tokens.")
    if "window" in report["qwen2.5-vl"]:
        win = report["qwen2.5-vl"]["window"]
        w(f"Qwen2.5-VL's windows of 2x2 merged tokens split it: window_index {win['window_index']},")
        w(f"cu_window_seqlens {win['cu_window_seqlens']} (in patches); blocks 0 and 2 attend within windows,")
        w("blocks 1 and 3 over the whole image.")
    w("")
    w("### Tensor names written by `save_pretrained`")
    w("")
    w(f"transformers {transformers.__version__} converts its module names back to the Hub's layout when")
    w("saving (block and layer numbers folded to `{i}`):")
    w("")
    for name in report:
        w(f"**{name}**:")
        w("")
        w("```")
        for n in summarise_names(report[name]["stored_tensor_names"]):
            w(n)
        w("```")
        w("")
    w("### Case tensors")
    w("")
    w("Cases: `text` (system + user text) and `one_image` (one image, then text), rendered with the")
    w("chat template and the generation prompt. Images go through the PIL image processor")
    w("(`backend='pil'`, the class `use_fast=False` gives). Every file holds:")
    w("")
    w("- `input_ids` (seq), `mm_token_type_ids` (seq)")
    w("- `position_ids` (3, seq) and `rope_deltas` (1) from `model.model.get_rope_index`")
    w("- `rope_cos`, `rope_sin` (seq, head_dim): `language_model.rotary_emb` at those positions")
    w("  (Qwen2-VL's sectioned M-RoPE layout, as `apply_multimodal_rotary_pos_emb` applies it)")
    w("- `hidden_state.{i}` (seq, hidden), i = 0..layers: `output_hidden_states`")
    w("- `logits` (seq, vocab)")
    w(f"- `generated_ids` ({MAX_NEW_TOKENS}): `generate(do_sample=False, max_new_tokens={MAX_NEW_TOKENS})`")
    w("- one_image only: `pixel_values` (patches, 1176), `image_grid_thw` (1, 3), `image_embeds`")
    w("  (tokens, text hidden): `model.model.get_image_features(...).pooler_output`, the merged vision")
    w("  tower output (after the reverse window reorder for Qwen2.5-VL)")
    w("")
    w("Sizes:")
    w("")
    w("```")
    for p in sorted(OUT.rglob("*")):
        if p.is_file() and p.name != "README.md":
            w(f"{str(p.relative_to(OUT)):50s} {p.stat().st_size:>9d} B")
    w("```")
    # Only this script's section of the README is rewritten; other families may add theirs.
    section = BEGIN + "\n" + "\n".join(lines) + "\n" + END + "\n"
    readme = OUT / "README.md"
    old = readme.read_text(encoding="utf-8") if readme.exists() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        new = head + section + ("\n" + tail if tail else "")
    else:
        new = (old.rstrip("\n") + "\n\n" if old else "") + section
    readme.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    main()
