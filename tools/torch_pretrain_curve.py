#!/usr/bin/env python3
"""Dev only: PyTorch + transformers pretraining from scratch on a LLaVA-style JSON, to
compare the loss curve with `interlace pretrain` on the same data (is slow learning ours,
or the setup's?).

    python tools/torch_pretrain_curve.py MODEL_DIR DATA.json STEPS LR [BATCH]

MODEL_DIR gives the config, tokenizer and processor (e.g. an `interlace pretrain` output);
the weights are freshly initialised by transformers (seed 1). Same recipe as ours: AdamW
(weight decay 0.01), warm-up 3 % then cosine, clip 1.0, loss = mean over the assistant
turns' tokens (content, <|im_end|>, newline) of the batch. Prints `step loss` per step.
"""
import json
import math
import os
import random
import sys

import torch
from PIL import Image
from transformers import AutoConfig, AutoProcessor, Qwen3VLForConditionalGeneration


def main():
    mdir, data, steps, lr = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    bs = int(sys.argv[5]) if len(sys.argv) > 5 else 16
    torch.manual_seed(1)
    random.seed(1)
    proc = AutoProcessor.from_pretrained(mdir)
    model = Qwen3VLForConditionalGeneration(AutoConfig.from_pretrained(mdir)).float().train()
    rows = json.load(open(data))
    root = os.path.dirname(os.path.abspath(data))

    def ids(msgs, img, gen=False):
        text = proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
        return proc(text=[text], images=[img], return_tensors="pt")

    def encode(r):
        img = Image.open(os.path.join(root, r["image"])).convert("RGB")
        msgs = []
        for k, t in enumerate(r["conversations"]):
            role = "user" if t["from"] == "human" else "assistant"
            content = [{"type": "image"}] if k == 0 else []
            content.append({"type": "text", "text": t["value"].replace("<image>\n", "")})
            msgs.append({"role": role, "content": content})
        inp = ids(msgs, img)
        labels = torch.full_like(inp["input_ids"], -100)
        for j, m in enumerate(msgs):
            if m["role"] == "assistant":
                b = ids(msgs[:j], img, gen=True)["input_ids"].shape[1]
                a = ids(msgs[: j + 1], img)["input_ids"].shape[1]
                labels[0, b:a] = inp["input_ids"][0, b:a]
        return inp, labels

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, math.ceil(0.03 * steps))
    order = list(range(len(rows)))
    random.shuffle(order)
    for s in range(steps):
        cur = lr * (s / warm if s < warm else
                    0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
        for g in opt.param_groups:
            g["lr"] = cur
        opt.zero_grad()
        batch = [encode(rows[order[(s * bs + i) % len(rows)]]) for i in range(bs)]
        n = sum(int((lab[:, 1:] != -100).sum()) for _, lab in batch)
        total = 0.0
        for inp, lab in batch:
            logits = model(**inp).logits[0, :-1]
            loss = torch.nn.functional.cross_entropy(
                logits, lab[0, 1:], ignore_index=-100, reduction="sum")
            (loss / n).backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        print(s + 1, round(total / n, 4), flush=True)


if __name__ == "__main__":
    main()
