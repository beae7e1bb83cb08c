#!/usr/bin/env python3
"""Two fine-tuning steps in bf16 with f32 master weights, by PyTorch (development tool).

The steps of tools/make_train_fixtures.py (tiny-b, layers 1 and 4 trainable, the same
batches, lr 1e-3, clip 1.0, AdamW β 0.9/0.999, ε 1e-8) with the model in bfloat16: the
frozen weights are bf16; each trainable tensor has an f32 master that AdamW updates, and the
model computes with its bf16 copy, written again after every step. The masters start from
the checkpoint's own values (f32 in the fixture), as interlace's do. Per micro-batch the
gradient of the bf16 weights is converted to f32 and accumulated in f32; the norm, the
clipping and the update are f32. This is what `interlace finetune --dtype bf16` does.

Writes step_bf16.json (loss, gradient norm before clipping, tokens per step) and
step_bf16.safetensors (the f32 gradients of step 1 as `grad.NAME`, the masters after each
step as `afterS.NAME`) to tests/fixtures/train/ (the CPU run, committed) or --out (on a GPU:
scripts/gpu-check.sh runs it with --device cuda).

    /tmp/venv/bin/python tools/make_bf16_train_fixture.py
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import FIX, load_processor  # noqa: E402
from make_train_fixtures import (  # noqa: E402
    DATA, STEP_BATCHES, STEP_CLIP, STEP_LAYERS, STEP_LR, STEP_MODEL, loss_sum, messages_and_images, supervised)
from transformers import Qwen3VLForConditionalGeneration  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=FIX / "train")
    args = ap.parse_args()
    dev = args.device
    processor = load_processor(FIX / "models" / STEP_MODEL, "pil")
    prepared = [supervised(processor, *messages_and_images(s)) for s in DATA]
    model = Qwen3VLForConditionalGeneration.from_pretrained(
        str(FIX / "models" / STEP_MODEL), dtype=torch.bfloat16).to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    named = {}
    for i in STEP_LAYERS:
        for n, p in model.model.language_model.layers[i].named_parameters():
            p.requires_grad_(True)
            named[f"model.language_model.layers.{i}.{n}"] = p
    # The masters start from the checkpoint's own values (f32 here), not from their bf16
    # rounding: the model computes with bf16(master) from the first step on.
    exact = dict(Qwen3VLForConditionalGeneration.from_pretrained(
        str(FIX / "models" / STEP_MODEL), dtype=torch.float32).named_parameters())
    masters = {n: torch.nn.Parameter(exact[n].detach().to(dev).clone()) for n in named}
    with torch.no_grad():
        for n, p in named.items():
            assert torch.equal(p, masters[n].to(torch.bfloat16))
    opt = torch.optim.AdamW(list(masters.values()), lr=STEP_LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    tensors, steps = {}, []
    for s, micro in enumerate(STEP_BATCHES):
        total = sum(int(prepared[i][1][1:].sum()) for mb in micro for i in mb)
        acc = {n: torch.zeros_like(m) for n, m in masters.items()}
        loss_total = 0.0
        for mb in micro:
            for p in named.values():
                p.grad = None
            mb_loss = 0.0
            for i in mb:
                enc, mask = prepared[i]
                ls, _ = loss_sum(model, enc.to(dev), mask.to(dev))
                mb_loss = mb_loss + ls
                loss_total += float(ls)
            (mb_loss / total).backward()
            for n, p in named.items():
                acc[n] += p.grad.float()
        if s == 0:
            for n, g in acc.items():
                tensors[f"grad.{n}"] = g.detach().cpu().clone()
        for n, m in masters.items():
            m.grad = acc[n]
        norm = torch.nn.utils.clip_grad_norm_(list(masters.values()), STEP_CLIP)
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            for n, p in named.items():
                p.copy_(masters[n].to(torch.bfloat16))
        for n, m in masters.items():
            tensors[f"after{s + 1}.{n}"] = m.detach().cpu().clone()
        steps.append({"loss": loss_total / total, "grad_norm": float(norm), "tokens": total})
        print("step", s + 1, steps[-1])
    meta = {"model": STEP_MODEL, "finetune": STEP_LAYERS, "lr": STEP_LR, "max_grad_norm": STEP_CLIP,
            "batches": STEP_BATCHES, "steps": steps, "dtype": "bf16", "device": dev,
            "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_bf16.json").write_text(json.dumps(meta, indent=1) + "\n")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(args.out / "step_bf16.safetensors"),
              metadata={"format": "pt"})


if __name__ == "__main__":
    main()
