#!/usr/bin/env python3
"""Fixtures for whole-model training (`interlace pretrain`; development tool, CI has no Python).

- `step.json` + `step.safetensors`: two optimizer steps on tiny-a (tied embeddings) with EVERY
  parameter trainable (token embeddings = tied LM head, vision tower with patch embedding,
  position table, blocks, merger and DeepStack mergers, all decoder layers, final norm):
  torch.optim.AdamW (β 0.9/0.999, ε 1e-6 (see EPS), weight decay 0.1, lr 1e-3), clip_grad_norm_ 1.0,
  each step two micro-batches of two conversations of make_train_fixtures.DATA. Per step the
  loss (mean over all supervised tokens of the step) and the gradient norm before clipping;
  every parameter's value after step 2 (checkpoint names and shapes, Conv3d weight 5-D).
- `demo_count.json`: the parameter count transformers gives the `demo` shape of
  `interlace pretrain` (vocabulary 1024), built on the meta device.

    /tmp/venv/bin/python tools/make_pretrain_fixtures.py
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import FIX, load_processor  # noqa: E402
from make_train_fixtures import DATA, loss_sum, messages_and_images, supervised, load  # noqa: E402
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration  # noqa: E402

OUT = FIX / "pretrain"
MODEL = "tiny-a"
LR = 1e-3
WD = 0.1
# AdamW divides by sqrt(v) + eps: with eps 1e-8 an entry whose gradient is ~1e-8 moves by up to
# lr·g/(|g|+eps), so float noise of 1e-10 in such a gradient (the summation order of a
# 49 152-entry patch embedding) changes the update by ~1e-5. eps 1e-6 keeps the comparison about
# our arithmetic, not about that conditioning.
EPS = 1e-6
CLIP = 1.0
BATCHES = [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]


def make_step():
    processor = load_processor(FIX / "models" / MODEL, "pil")
    prepared = [supervised(processor, *messages_and_images(s)) for s in DATA]
    model = load(MODEL)
    named = dict(model.named_parameters())
    for p in named.values():
        p.requires_grad_(True)
    params = list(named.values())
    opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), eps=EPS, weight_decay=WD)
    steps = []
    for micro in BATCHES:
        opt.zero_grad()
        total = sum(int(prepared[i][1][1:].sum()) for mb in micro for i in mb)
        loss_total = 0.0
        for mb in micro:
            for i in mb:
                enc, mask = prepared[i]
                ls, _ = loss_sum(model, enc, mask)
                (ls / total).backward()
                loss_total += float(ls)
        zero = [n for n, p in named.items() if p.grad is None or float(p.grad.abs().sum()) == 0.0]
        norm = torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        steps.append({"loss": loss_total / total, "grad_norm": float(norm), "tokens": total,
                      "zero_grad_tensors": zero})
    tensors = {f"after2.{n}": p.detach().clone().contiguous() for n, p in named.items()}
    meta = {"model": MODEL, "lr": LR, "weight_decay": WD, "eps": EPS, "max_grad_norm": CLIP, "batches": BATCHES,
            "steps": steps, "num_tensors": len(named),
            "num_parameters": sum(p.numel() for p in params)}
    return meta, tensors


def demo_count():
    """The `demo` shape of `interlace pretrain` as transformers builds it."""
    cfg = Qwen3VLConfig(
        text_config=dict(vocab_size=1024, hidden_size=256, num_hidden_layers=12, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=64, intermediate_size=768,
                         tie_word_embeddings=True,
                         rope_scaling={"rope_type": "default", "mrope_section": [12, 10, 10],
                                       "mrope_interleaved": True}),
        vision_config=dict(hidden_size=128, depth=4, num_heads=2, intermediate_size=512, patch_size=16,
                           temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=256,
                           num_position_embeddings=196, deepstack_visual_indexes=[1, 2, 3]),
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration(cfg)
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for n, p in model.named_parameters() if n.startswith("model.visual."))
    return {"vocab_size": 1024, "parameters": total, "vision_parameters": vision,
            "tensors": len(list(model.parameters()))}


def main():
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    meta, tensors = make_step()
    (OUT / "step.json").write_text(json.dumps(meta, indent=1) + "\n")
    save_file(tensors, str(OUT / "step.safetensors"))
    (OUT / "demo_count.json").write_text(json.dumps(demo_count(), indent=1) + "\n")
    print(json.dumps(meta["steps"], indent=1))


if __name__ == "__main__":
    main()
