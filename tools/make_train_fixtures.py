#!/usr/bin/env python3
"""Fixtures for supervised labels, SLEB and fine-tuning (development tool; CI has no Python).

Everything is computed by transformers / PyTorch on the committed tiny models, with the
label rule of docs/SPEC.md step 4 implemented here independently of the Rust code (span
boundaries found by tokenising rendered prefixes, not by token offsets):

- `data.json`: LLaVA-style conversations (image paths relative to this directory).
- `labels.json`: per model and conversation, input_ids and the supervised-token mask.
- `sleb.json`: greedy SLEB on tiny-b over the first conversations: every round's candidate
  losses (mean cross-entropy over supervised tokens, layers deleted from the loaded model).
- `step.json` + `step.safetensors`: two optimizer steps on tiny-b fine-tuning layers 1 and 4
  (everything else frozen): per step the loss (mean over all supervised tokens of the
  accumulated batch), the gradient norm before clipping, the trainable tensors' gradients of
  step 1 and their values after each step (torch.optim.AdamW, clip_grad_norm_ 1.0).
- `schedule.json`: transformers' get_cosine_schedule_with_warmup multipliers and the warm-up
  step count of a 0.03 ratio.

    /tmp/venv/bin/python tools/make_train_fixtures.py
"""

import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import FIX, load_processor  # noqa: E402
from transformers import Qwen3VLForConditionalGeneration  # noqa: E402
from transformers.image_utils import load_image  # noqa: E402
from transformers.optimization import get_cosine_schedule_with_warmup  # noqa: E402

OUT = FIX / "train"
MODELS = ["tiny-a", "tiny-b"]

# LLaVA-style conversations. Images with no <image> marker go, in order, at the start of the
# first user turn, ahead of the marked ones (FineVision rows carry no markers at all).
DATA = [
    {"conversations": [
        {"from": "human", "value": "What is two plus two?"},
        {"from": "gpt", "value": "Four."}]},
    {"image": "../images/photo_83x57.jpg", "conversations": [
        {"from": "human", "value": "<image>\nDescribe the picture."},
        {"from": "gpt", "value": "A small photo with soft colours."}]},
    {"image": ["../images/odd_97x61.png", "../images/gray_70x45.png"], "conversations": [
        {"from": "human", "value": "Compare the two images."},
        {"from": "gpt", "value": "The first is colourful, the second is gray."}]},
    {"image": "../images/wide_150x12.png", "conversations": [
        {"from": "system", "value": "You are a careful assistant."},
        {"from": "human", "value": "Hello!"},
        {"from": "gpt", "value": "Hi there."},
        {"from": "human", "value": "<image>\nWhat shape is this?"},
        {"from": "gpt", "value": "A long thin strip."}]},
    {"image": ["../images/tiny_13x9.png", "../images/tall_11x170.png"], "conversations": [
        {"from": "human", "value": "Look at this <image> and this <image> please."},
        {"from": "gpt", "value": "\nThe second one is tall."}]},
    {"image": ["../images/rgba_45x38.png"], "conversations": [
        {"from": "human", "value": "Count the colours."},
        {"from": "gpt", "value": "3"},
        {"from": "human", "value": "Are you sure?"},
        {"from": "gpt", "value": "Yes, three."}]},
    {"conversations": [
        {"from": "human", "value": "Spell cat backwards."},
        {"from": "gpt", "value": "t a c"}]},
    {"image": "../images/odd_97x61.png", "conversations": [
        {"from": "human", "value": "<image>\nIs there a red area? Answer yes or no."},
        {"from": "gpt", "value": "yes"}]},
]

ROLE = {"human": "user", "gpt": "assistant", "system": "system"}
SLEB_MODEL = "tiny-b"
SLEB_SAMPLES = 4
SLEB_ROUNDS = 2
STEP_MODEL = "tiny-b"
STEP_LAYERS = [1, 4]
STEP_LR = 1e-3
STEP_CLIP = 1.0
# Two optimizer steps, each two micro-batches of two conversations (indices into DATA).
STEP_BATCHES = [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]


def messages_and_images(sample):
    images = sample.get("image", [])
    if isinstance(images, str):
        images = [images]
    turns = sample["conversations"]
    n_markers = sum(t["value"].count("<image>") for t in turns)
    unmarked = len(images) - n_markers
    first_user = next(i for i, t in enumerate(turns) if t["from"] == "human")
    messages = []
    for i, t in enumerate(turns):
        content = [{"type": "image"}] * unmarked if i == first_user else []
        pieces = t["value"].split("<image>")
        for k, piece in enumerate(pieces):
            if k > 0:
                content.append({"type": "image"})
            if piece:
                content.append({"type": "text", "text": piece})
        messages.append({"role": ROLE[t["from"]], "content": content})
    # Images named by path are loaded the way transformers loads a path it is given
    # (`load_image`: EXIF transpose, then convert("RGB"), which drops alpha).
    return messages, [load_image(str(OUT / p)) for p in images]


def count_images(messages):
    return sum(1 for m in messages for c in m["content"] if c.get("type") == "image")


def supervised(processor, messages, images):
    """input_ids, pixel inputs and the supervised mask: for each assistant turn, the tokens
    between the tokenised prefix ending in its generation prompt and the tokenised prefix
    ending after the turn."""
    render = lambda msgs, gen: processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    def ids_of(msgs, gen):
        text = render(msgs, gen)
        k = count_images(msgs)
        enc = processor(text=[text], images=images[:k] or None, return_tensors="pt")
        return enc

    full = ids_of(messages, False)
    ids = full["input_ids"][0]
    mask = torch.zeros(len(ids), dtype=torch.bool)
    for j, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        b = ids_of(messages[:j], True)["input_ids"][0]
        a = ids_of(messages[: j + 1], False)["input_ids"][0]
        assert torch.equal(ids[: len(b)], b) and torch.equal(ids[: len(a)], a), "prefix tokenisation differs"
        mask[len(b): len(a)] = True
    return full, mask


def loss_sum(model, inputs, mask):
    model.model.rope_deltas = None
    out = model(**inputs, use_cache=False)
    logits = out.logits[0, :-1].float()
    target = inputs["input_ids"][0, 1:]
    m = mask[1:]
    return F.cross_entropy(logits[m], target[m], reduction="sum"), int(m.sum())


def load(name):
    return Qwen3VLForConditionalGeneration.from_pretrained(str(FIX / "models" / name), dtype=torch.float32).eval()


def make_labels(prepared):
    out = {}
    for name in MODELS:
        out[name] = [
            {"input_ids": enc["input_ids"][0].tolist(), "supervised": mask.int().tolist()}
            for enc, mask in prepared[name]
        ]
    return out


def make_sleb(prepared):
    model = load(SLEB_MODEL)
    layers = list(model.model.language_model.layers)
    examples = prepared[SLEB_MODEL][:SLEB_SAMPLES]

    def loss_of(kept):
        model.model.language_model.layers = torch.nn.ModuleList([layers[i] for i in kept])
        model.config.text_config.num_hidden_layers = len(kept)
        total, count = 0.0, 0
        with torch.no_grad():
            for enc, mask in examples:
                s, n = loss_sum(model, enc, mask)
                total += float(s)
                count += n
        return total / count

    kept = list(range(len(layers)))
    rounds = []
    for _ in range(SLEB_ROUNDS):
        cands = [(l, loss_of([k for k in kept if k != l])) for l in kept]
        removed = min(cands, key=lambda c: (c[1], c[0]))[0]
        ordered = sorted(c[1] for c in cands)
        rounds.append({"candidates": cands, "removed": removed, "margin": ordered[1] - ordered[0]})
        kept.remove(removed)
    dense = loss_of(list(range(len(layers))))
    return {"model": SLEB_MODEL, "samples": SLEB_SAMPLES, "dense_loss": dense, "rounds": rounds}


def make_step(prepared):
    model = load(STEP_MODEL)
    for p in model.parameters():
        p.requires_grad_(False)
    named = {}
    for i in STEP_LAYERS:
        for n, p in model.model.language_model.layers[i].named_parameters():
            p.requires_grad_(True)
            named[f"model.language_model.layers.{i}.{n}"] = p
    params = list(named.values())
    opt = torch.optim.AdamW(params, lr=STEP_LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    tensors, steps = {}, []
    for s, micro in enumerate(STEP_BATCHES):
        opt.zero_grad()
        total = sum(int(prepared[STEP_MODEL][i][1][1:].sum()) for mb in micro for i in mb)
        loss_total = 0.0
        for mb in micro:
            for i in mb:
                enc, mask = prepared[STEP_MODEL][i]
                ls, _ = loss_sum(model, enc, mask)
                (ls / total).backward()
                loss_total += float(ls)
        if s == 0:
            for n, p in named.items():
                tensors[f"grad.{n}"] = p.grad.detach().clone()
        norm = torch.nn.utils.clip_grad_norm_(params, STEP_CLIP)
        opt.step()
        for n, p in named.items():
            tensors[f"after{s + 1}.{n}"] = p.detach().clone()
        steps.append({"loss": loss_total / total, "grad_norm": float(norm), "tokens": total})
    meta = {"model": STEP_MODEL, "finetune": STEP_LAYERS, "lr": STEP_LR, "max_grad_norm": STEP_CLIP,
            "batches": STEP_BATCHES, "steps": steps}
    return meta, {k: v.contiguous() for k, v in tensors.items()}


def make_schedule():
    out = {"cosine": [], "warmup_steps_at_0.03": {}}
    for warmup, total in [(0, 10), (3, 10), (1, 1), (2, 5), (3, 100), (0, 1)]:
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=1.0)
        sched = get_cosine_schedule_with_warmup(opt, warmup, total)
        values = []
        for _ in range(total + 1):
            values.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        out["cosine"].append({"warmup": warmup, "total": total, "lr": values})
    # transformers' TrainingArguments.get_warmup_steps for a ratio below 1: ceil(total * ratio).
    for total in [1, 10, 33, 34, 67, 100, 1000]:
        out["warmup_steps_at_0.03"][str(total)] = math.ceil(total * 0.03)
    return out


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "data.json").write_text(json.dumps(DATA, indent=1) + "\n")
    prepared = {}
    for name in MODELS:
        processor = load_processor(FIX / "models" / name, "pil")
        prepared[name] = [supervised(processor, *messages_and_images(s)) for s in DATA]
    (OUT / "labels.json").write_text(json.dumps(make_labels(prepared)) + "\n")
    sleb = make_sleb(prepared)
    (OUT / "sleb.json").write_text(json.dumps(sleb, indent=1) + "\n")
    meta, tensors = make_step(prepared)
    (OUT / "step.json").write_text(json.dumps(meta, indent=1) + "\n")
    save_file(tensors, str(OUT / "step.safetensors"), metadata={"format": "pt"})
    (OUT / "schedule.json").write_text(json.dumps(make_schedule(), indent=1) + "\n")
    print("sleb:", json.dumps(sleb["rounds"]))
    print("steps:", meta["steps"])


if __name__ == "__main__":
    main()
