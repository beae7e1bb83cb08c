#!/usr/bin/env python3
"""Fixtures for the text-only decoder families: Qwen3 (`Qwen3ForCausalLM`) and Llama
(`LlamaForCausalLM`, Llama 3 RoPE scaling). Development tool only (CI has no Python).

For each family a tiny random checkpoint is written with `save_pretrained` into
tests/fixtures/families/<name>/model/ (tokenizer and chat template copied from
tests/fixtures/models/tiny-a), and transformers' outputs next to it:

- `cases.safetensors` + `cases.json`: per case (a chat rendered with the checkpoint's own
  template, as `apply_chat_template` does), `input_ids`, every `output_hidden_states`
  (`hidden.{i}`), the logits and the greedy continuation of 8 tokens (`generated`).
- `pruned.safetensors`: transformers' own layer deletion (layers `DROP` removed from the
  loaded model) on every case: `<case>.logits`.
- `step.json` + `step.safetensors`: one AdamW step fine-tuning layers `STEP_LAYERS` on the
  supervised tokens of `STEP_CHAT` (everything else frozen): loss, gradient norm before
  clipping, and the trained tensors after the step.

    /tmp/venv/bin/python tools/make_text_family_fixtures.py
    /tmp/venv/bin/python tools/make_text_family_fixtures.py --check NAME DIR

`--check` loads DIR (a checkpoint written by `interlace prune` from family NAME with layers
`DROP` removed) with transformers and compares its logits with the layer-deleted model's.
"""

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

import transformers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

transformers.logging.set_verbosity_error()
torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "families"
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "chat_template.jinja"]
DROP = [1, 3]
STEP_LAYERS = [1, 3]
STEP_LR = 1e-3
STEP_CLIP = 1.0
NEW_TOKENS = 8

CASES = {
    "short": [{"role": "user", "content": "What is two plus two?"}],
    "multiturn": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And another one, please?"},
    ],
}
STEP_CHAT = [
    {"role": "user", "content": "Count to three."},
    {"role": "assistant", "content": "One, two, three."},
    {"role": "user", "content": "Now backwards."},
    {"role": "assistant", "content": "Three, two, one."},
]

COMMON = dict(
    vocab_size=448,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=5,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=4096,
    bos_token_id=400,
    eos_token_id=402,
    pad_token_id=400,
)

FAMILIES = {
    "qwen3": lambda: Qwen3ForCausalLM(Qwen3Config(
        **COMMON,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )),
    # Llama 3 RoPE scaling with a short original context, so that all three frequency
    # bands (kept, divided by the factor, smoothed) occur among the 8 frequencies.
    "llama": lambda: LlamaForCausalLM(LlamaConfig(
        **COMMON,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        attention_bias=True,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    )),
}


@torch.no_grad()
def reinit(model: nn.Module) -> None:
    """O(1)-scale weights (the default std 0.02 makes every layer a near no-op)."""
    tied = model.config.tie_word_embeddings
    for name, mod in model.named_modules():
        if tied and name == "lm_head":
            continue
        if isinstance(mod, nn.Linear):
            mod.weight.normal_(0.0, 1.0 / math.sqrt(mod.weight.shape[1]))
            if mod.bias is not None:
                mod.bias.normal_(0.0, 0.1)
        elif isinstance(mod, nn.Embedding):
            mod.weight.normal_(0.0, 1.0)
        elif hasattr(mod, "weight") and isinstance(mod.weight, nn.Parameter) and mod.weight.ndim == 1:
            mod.weight.copy_(1.0 + 0.2 * torch.randn_like(mod.weight))
    if tied:
        model.tie_weights()
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def ids_of(tok, messages, gen):
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
    return tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]


def deleted(model, drop):
    """transformers' own layer deletion: the layers removed from the loaded model."""
    keep = [l for i, l in enumerate(model.model.layers) if i not in drop]
    model.model.layers = nn.ModuleList(keep)
    model.config.num_hidden_layers = len(keep)
    for i, layer in enumerate(keep):
        layer.self_attn.layer_idx = i
    return model


def make(name):
    torch.manual_seed(1234 + len(name))
    model = FAMILIES[name]()
    reinit(model)
    model.eval()
    out = OUT / name
    if out.exists():
        shutil.rmtree(out)
    mdir = out / "model"
    model.save_pretrained(mdir)
    for f in TOKENIZER_FILES:
        shutil.copy(FIX / "models" / "tiny-a" / f, mdir / f)
    gen = {"bos_token_id": 400, "eos_token_id": [402, 400], "pad_token_id": 400, "do_sample": False}
    (mdir / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    tok = AutoTokenizer.from_pretrained(mdir)
    model = type(model).from_pretrained(mdir, dtype=torch.float32).eval()

    tensors, meta = {}, {"family": name, "drop": DROP, "new_tokens": NEW_TOKENS, "cases": {}}
    with torch.no_grad():
        for case, messages in CASES.items():
            ids = ids_of(tok, messages, True)
            o = model(input_ids=ids, output_hidden_states=True, use_cache=False)
            tensors[f"{case}.input_ids"] = ids[0].to(torch.int64)
            for i, h in enumerate(o.hidden_states):
                tensors[f"{case}.hidden.{i}"] = h[0].contiguous()
            tensors[f"{case}.logits"] = o.logits[0].contiguous()
            g = model.generate(input_ids=ids, max_new_tokens=NEW_TOKENS, do_sample=False,
                               eos_token_id=None, pad_token_id=400)
            tensors[f"{case}.generated"] = g[0, ids.shape[1]:].to(torch.int64)
            meta["cases"][case] = {"messages": messages, "hidden_states": len(o.hidden_states)}
    save_file(tensors, str(out / "cases.safetensors"), metadata={"format": "pt"})
    (out / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")

    pruned = deleted(type(model).from_pretrained(mdir, dtype=torch.float32).eval(), DROP)
    with torch.no_grad():
        pt = {f"{c}.logits": pruned(input_ids=tensors[f"{c}.input_ids"][None], use_cache=False).logits[0].contiguous()
              for c in CASES}
    save_file(pt, str(out / "pruned.safetensors"), metadata={"format": "pt"})

    make_step(name, mdir, tok, out)
    print(f"{name}: written to {out}")


def make_step(name, mdir, tok, out):
    model = (Qwen3ForCausalLM if name == "qwen3" else LlamaForCausalLM).from_pretrained(mdir, dtype=torch.float32)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    named = {}
    for i in STEP_LAYERS:
        for n, p in model.model.layers[i].named_parameters():
            p.requires_grad_(True)
            named[f"model.layers.{i}.{n}"] = p
    # Supervised tokens: each assistant turn, between the prefix ending in its generation
    # prompt and the prefix ending after the turn (docs/SPEC.md step 4).
    ids = ids_of(tok, STEP_CHAT, False)[0]
    mask = torch.zeros(len(ids), dtype=torch.bool)
    for j, m in enumerate(STEP_CHAT):
        if m["role"] != "assistant":
            continue
        b = ids_of(tok, STEP_CHAT[:j], True)[0]
        a = ids_of(tok, STEP_CHAT[: j + 1], False)[0]
        assert torch.equal(ids[: len(b)], b) and torch.equal(ids[: len(a)], a)
        mask[len(b): len(a)] = True
    params = list(named.values())
    opt = torch.optim.AdamW(params, lr=STEP_LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    logits = model(input_ids=ids[None], use_cache=False).logits[0, :-1].float()
    m = mask[1:]
    loss = F.cross_entropy(logits[m], ids[1:][m], reduction="mean")
    loss.backward()
    grads = {f"grad.{n}": p.grad.detach().clone().contiguous() for n, p in named.items()}
    norm = torch.nn.utils.clip_grad_norm_(params, STEP_CLIP)
    opt.step()
    tensors = {f"after1.{n}": p.detach().clone().contiguous() for n, p in named.items()}
    tensors.update(grads)
    tensors["input_ids"] = ids.to(torch.int64)
    tensors["supervised"] = mask.to(torch.int64)
    meta = {"finetune": STEP_LAYERS, "lr": STEP_LR, "max_grad_norm": STEP_CLIP, "messages": STEP_CHAT,
            "loss": float(loss.detach()), "grad_norm": float(norm), "tokens": int(m.sum())}
    # The same conversation as LLaVA JSON, for the text-only data path.
    role = {"user": "human", "assistant": "gpt"}
    llava = [{"conversations": [{"from": role[t["role"]], "value": t["content"]} for t in STEP_CHAT]}]
    (out / "step_data.json").write_text(json.dumps(llava, indent=1) + "\n")
    save_file(tensors, str(out / "step.safetensors"), metadata={"format": "pt"})
    (out / "step.json").write_text(json.dumps(meta, indent=1) + "\n")


def check(name, path):
    from safetensors.torch import load_file
    cls = Qwen3ForCausalLM if name == "qwen3" else LlamaForCausalLM
    ours = cls.from_pretrained(path, dtype=torch.float32).eval()
    cases = load_file(str(OUT / name / "cases.safetensors"))
    want = load_file(str(OUT / name / "pruned.safetensors"))
    worst = 0.0
    with torch.no_grad():
        for c in CASES:
            got = ours(input_ids=cases[f"{c}.input_ids"][None], use_cache=False).logits[0]
            worst = max(worst, float((got - want[f"{c}.logits"]).abs().max()))
    print(f"{name}: transformers loads {path}: {ours.config.num_hidden_layers} layers, "
          f"max |logits - layer-deleted logits| = {worst:.3g}")
    sys.exit(0 if worst <= 1e-5 else 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", nargs=2, metavar=("NAME", "DIR"))
    a = ap.parse_args()
    if a.check:
        check(*a.check)
        return
    for name in FAMILIES:
        make(name)


if __name__ == "__main__":
    main()
