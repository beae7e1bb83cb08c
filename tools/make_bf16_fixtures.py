#!/usr/bin/env python3
"""transformers' own bf16 run of the fixture checkpoints (development tool; CI has no Python).

For tiny-a and tiny-b, in bfloat16 (weights loaded with dtype=torch.bfloat16, SDPA
attention as transformers chooses by default):

- every case of tests/fixtures/cases/<model>/: the same inputs (input_ids, pixel_values,
  image_grid_thw, mm_token_type_ids as stored there by tools/make_fixtures.py), every
  hidden state of `output_hidden_states` and the logits, stored as float32 (bf16 values
  are exact in f32) in OUT/<model>/<case>.safetensors;
- the greedy generations of tools/make_generate_fixtures.py's prompts (tiny-a, tiny-b and
  tiny-b without layers 1 and 4), with the gap between the best and second-best logit at
  every step, in OUT/generate.json: a reimplementation can only be expected to follow
  transformers' bf16 path while that gap is larger than the two sides' rounding.

On the CPU (the default) it writes the committed fixture tests/fixtures/bf16/; on a GPU,
scripts/gpu-check.sh runs it with --device cuda --out DIR for the GPU tests to compare
with (transformers' CUDA bf16 kernels round differently from its CPU ones).

    /tmp/venv/bin/python tools/make_bf16_fixtures.py                      # tests/fixtures/bf16
    python tools/make_bf16_fixtures.py --device cuda --out /tmp/bf16-cuda  # on a GPU machine
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import FIX, load_processor  # noqa: E402
from make_generate_fixtures import CASES as GEN_CASES, MAX_NEW, drop_layers, generate_case, models as gen_models  # noqa: E402
from transformers import Qwen3VLForConditionalGeneration  # noqa: E402

MODELS = ["tiny-a", "tiny-b"]
CASES = ["text", "one_image", "two_images", "two_images_multiturn"]


def load(name, device, drop=None):
    model = Qwen3VLForConditionalGeneration.from_pretrained(
        str(FIX / "models" / name), dtype=torch.bfloat16
    ).to(device).eval()
    return drop_layers(model, drop)


def forward_cases(out_dir: Path, device: str):
    summary = {}
    for name in MODELS:
        model = load(name, device)
        for case in CASES:
            t = load_file(str(FIX / "cases" / name / f"{case}.safetensors"))
            ids = t["input_ids"].unsqueeze(0).to(device)
            kw = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            if "mm_token_type_ids" in t:
                kw["mm_token_type_ids"] = t["mm_token_type_ids"].unsqueeze(0).to(device)
            if "pixel_values" in t:
                kw["pixel_values"] = t["pixel_values"].to(device)
                kw["image_grid_thw"] = t["image_grid_thw"].to(device)
            model.model.rope_deltas = None
            with torch.no_grad():
                out = model(**kw, output_hidden_states=True, use_cache=False)
            tensors = {f"hidden_state.{i}": h[0].float().cpu().contiguous() for i, h in enumerate(out.hidden_states)}
            tensors["logits"] = out.logits[0].float().cpu().contiguous()
            (out_dir / name).mkdir(parents=True, exist_ok=True)
            save_file(tensors, str(out_dir / name / f"{case}.safetensors"), metadata={"format": "pt"})
            summary[f"{name}/{case}"] = {"tokens": int(ids.shape[1]), "attn": model.config._attn_implementation}
            print(name, case, ids.shape[1], "tokens")
    return summary


def generations(device: str):
    out = {"max_new_tokens": MAX_NEW, "cases": {}}
    for label, src, drop in gen_models():
        model = load(src, device, drop)
        processor = load_processor(FIX / "models" / src, "pil")
        out["cases"][label] = {"model": src, "drop": drop or [], "cases": {}}
        for case, (images, prompt) in GEN_CASES.items():
            prompt_len, new, gaps = generate_case(model, processor, images, prompt)
            out["cases"][label]["cases"][case] = {
                "images": images, "prompt": prompt, "prompt_len": prompt_len, "tokens": new, "gaps": gaps}
            print(label, case, len(new), "tokens; smallest gap", min(gaps))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=FIX / "bf16")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    summary = forward_cases(args.out, args.device)
    gen = generations(args.device)
    gen["device"] = args.device
    gen["versions"] = {"torch": torch.__version__, "transformers": __import__("transformers").__version__}
    gen["forward"] = summary
    (args.out / "generate.json").write_text(json.dumps(gen, indent=1) + "\n")
    (args.out / "README.md").write_text(
        "# transformers' bf16 run of the fixture checkpoints (generated: do not edit)\n\n"
        f"Written by `tools/make_bf16_fixtures.py --device {args.device}` with torch {torch.__version__}, "
        f"transformers {gen['versions']['transformers']}: for tiny-a and tiny-b in bfloat16, every hidden "
        "state and the logits of each case of `../cases/` (same inputs), as float32, in "
        "`<model>/<case>.safetensors`; greedy generations of tools/make_generate_fixtures.py's "
        "prompts with the top-2 logit gap of every step in `generate.json`. Used by tests/bf16.rs.\n")


if __name__ == "__main__":
    main()
