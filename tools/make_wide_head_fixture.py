"""Writes tests/fixtures/wide-head/: a tiny random Qwen3 checkpoint whose heads are 32 wide
(the other fixture models' heads are 8, 16 or 24), with transformers' hidden states,
logits and greedy generation for two token sequences.

Why: on a CPU with AVX-512, forward-only attention runs on our own matrix product only
when the head dimension is a whole number of 32-float panels (`ops::attention_panels`),
and every linear layer of this model is stored as panels too. tests/wide_head.rs checks
that path against transformers. Sequence lengths 45 and 70 are not multiples of 32 (the
keys are padded to whole panels), 4 query heads share 2 key/value heads, and generating
8 tokens attends over a cache longer than the new queries.

    /tmp/venv/bin/python tools/make_wide_head_fixture.py     # transformers 5.25, torch 2.15
"""
import json
import math
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import Qwen3Config, Qwen3ForCausalLM

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "wide-head"
LENGTHS = [45, 70]
NEW_TOKENS = 8


TRAIN_LAYER = 1


def make_train(model, cases) -> None:
    """Gradients of layer TRAIN_LAYER for the sum of both sequences' losses (cross-entropy of
    each token of the second half from the position before it) over all those tokens."""
    for p in model.parameters():
        p.requires_grad_(False)
    named = {}
    for n, p in model.model.layers[TRAIN_LAYER].named_parameters():
        p.requires_grad_(True)
        named[f"model.layers.{TRAIN_LAYER}.{n}"] = p
    total = sum(n - n // 2 for n in LENGTHS)
    loss_sum = 0.0
    for n in LENGTHS:
        ids = cases[f"{n}.input_ids"][None, :]
        logits = model(input_ids=ids, use_cache=False).logits[0].float()
        target = ids[0, n // 2:]
        ls = torch.nn.functional.cross_entropy(logits[n // 2 - 1:n - 1], target, reduction="sum")
        (ls / total).backward()
        loss_sum += float(ls)
    grads = {f"grad.{k}": p.grad.detach().clone().contiguous() for k, p in named.items()}
    save_file(grads, str(OUT / "train.safetensors"), metadata={"format": "pt"})
    meta = {"layer": TRAIN_LAYER, "supervised_from": "n // 2", "loss": loss_sum / total, "tokens": total}
    (OUT / "train.json").write_text(json.dumps(meta, indent=1) + "\n")


def main() -> None:
    torch.manual_seed(32)
    cfg = Qwen3Config(
        vocab_size=448, hidden_size=128, intermediate_size=192, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=400, eos_token_id=402, pad_token_id=400,
    )
    model = Qwen3ForCausalLM(cfg).eval()
    with torch.no_grad():
        # O(1)-scale weights (the default std 0.02 makes every layer a near no-op).
        for name, mod in model.named_modules():
            if name == "lm_head":
                continue
            if isinstance(mod, nn.Linear):
                mod.weight.normal_(0.0, 1.0 / math.sqrt(mod.weight.shape[1]))
            elif isinstance(mod, nn.Embedding):
                mod.weight.normal_(0.0, 1.0)
            elif isinstance(getattr(mod, "weight", None), nn.Parameter) and mod.weight.ndim == 1:
                mod.weight.copy_(1.0 + 0.2 * torch.randn_like(mod.weight))
        model.tie_weights()
    if OUT.exists():
        shutil.rmtree(OUT)
    mdir = OUT / "model"
    model.save_pretrained(mdir)
    model = Qwen3ForCausalLM.from_pretrained(mdir, dtype=torch.float32).eval()
    tensors, meta = {}, {"lengths": LENGTHS, "new_tokens": NEW_TOKENS}
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for n in LENGTHS:
            ids = torch.randint(0, 400, (1, n), generator=gen)
            o = model(input_ids=ids, output_hidden_states=True, use_cache=False)
            tensors[f"{n}.input_ids"] = ids[0].to(torch.int64)
            for i, h in enumerate(o.hidden_states):
                tensors[f"{n}.hidden.{i}"] = h[0].contiguous()
            tensors[f"{n}.logits"] = o.logits[0].contiguous()
            g = model.generate(input_ids=ids, max_new_tokens=NEW_TOKENS, do_sample=False,
                               eos_token_id=None, pad_token_id=400)
            tensors[f"{n}.generated"] = g[0, n:].to(torch.int64)
    save_file(tensors, str(OUT / "cases.safetensors"), metadata={"format": "pt"})
    (OUT / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")
    make_train(model, tensors)
    import transformers
    (OUT / "README.md").write_text(
        "# Heads 32 wide (generated: do not edit by hand)\n\n"
        "Written by `tools/make_wide_head_fixture.py` with transformers "
        f"{transformers.__version__} and torch {torch.__version__}; read by tests/wide_head.rs.\n\n"
        "- `model/`: a random `Qwen3ForCausalLM` (3 layers, hidden 128, 4 heads of 32 over 2\n"
        "  key/value heads, intermediate 192, vocabulary 448, tied embeddings), no tokenizer.\n"
        f"- `cases.safetensors`: for each length n in {LENGTHS}, `n.input_ids` (random ids),\n"
        "  `n.hidden.{i}` (transformers' `hidden_states`), `n.logits`, and `n.generated` (greedy\n"
        f"  `generate`, {NEW_TOKENS} new tokens, no end token).\n"
        f"- `train.safetensors` + `train.json`: fine-tuning layer {TRAIN_LAYER} alone (the others\n"
        "  frozen) on both sequences, the loss on their second halves: the loss and every\n"
        "  gradient of the layer (`grad.<name>`), as a trainer computes them for one step.\n"
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
