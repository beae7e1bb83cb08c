#!/usr/bin/env python3
"""Dev only: how many pretraining steps until a from-scratch demo model uses the image?

PyTorch + transformers (on a GPU when there is one) train a fresh Qwen3-VL of MODEL_DIR's
config on `interlace synth` training data (FineVision Parquet, one folder per family), with
our pretraining recipe (AdamW, weight decay 0.01, clip 1.0, loss = mean over the assistant
turns' tokens of the batch), for a wall-clock budget, and every --eval-every steps print the
teacher-forced exact-match accuracy of the first answer on held-out rows of each family
(the last --heldout rows of each family are never trained on). Our engine's loss curves
match this one (README, "Learning to use the image is the slow part"), so this is a cheap
way to compare recipes before spending CPU hours on `interlace pretrain`.

    python tools/torch_grounding_sweep.py MODEL_DIR TRAIN_DIR --name NAME [options]

MODEL_DIR gives the config, tokenizer and processor (e.g. `interlace pretrain`'s
OUT.train/init); its weights are not used. The learning rate warms up linearly for
--warmup steps, then stays constant (the question is when, not how well).
"""
import argparse
import glob
import inspect
import io
import json
import os
import random
import sys
import time

import pyarrow.parquet as pq
import torch
from PIL import Image
from transformers import AutoConfig, AutoProcessor, Qwen3VLForConditionalGeneration


def load_family(train_dir, fam):
    rows = []
    for f in sorted(glob.glob(os.path.join(train_dir, fam, "*.parquet"))):
        for r in pq.read_table(f).to_pylist():
            rows.append((r["images"][0]["bytes"], [(t["user"], t["assistant"]) for t in r["texts"]]))
    return rows


class Encoder:
    def __init__(self, mdir, turns):
        self.proc = AutoProcessor.from_pretrained(mdir)
        self.tok = self.proc.tokenizer
        self.turns = turns

    def __call__(self, item):
        img_bytes, turns = item
        turns = turns[: self.turns]
        img = Image.open(io.BytesIO(img_bytes)).convert("RGB")
        vis = self.proc.image_processor(images=[img], return_tensors="pt")
        n_img = int(vis["image_grid_thw"].prod()) // (self.proc.image_processor.merge_size ** 2)
        msgs = []
        for k, (u, a) in enumerate(turns):
            content = ([{"type": "image"}] if k == 0 else []) + [{"type": "text", "text": u}]
            msgs.append({"role": "user", "content": content})
            msgs.append({"role": "assistant", "content": [{"type": "text", "text": a}]})

        def ids(m, gen):
            text = self.proc.apply_chat_template(m, tokenize=False, add_generation_prompt=gen)
            text = text.replace("<|image_pad|>", "<|image_pad|>" * n_img)
            return self.tok(text, add_special_tokens=False)["input_ids"]

        full = ids(msgs, False)
        labels = [-100] * len(full)
        for j in range(1, len(msgs), 2):
            b, a = len(ids(msgs[:j], True)), len(ids(msgs[: j + 1], False))
            labels[b:a] = full[b:a]
        return {
            "input_ids": torch.tensor(full),
            "labels": torch.tensor(labels),
            "pixel_values": vis["pixel_values"],
            "image_grid_thw": vis["image_grid_thw"],
        }


KEEP = {"input_ids", "labels", "attention_mask", "pixel_values", "image_grid_thw",
        "mm_token_type_ids"}
IMAGE_PAD = [None]  # the <|image_pad|> id, set in main


def collate(samples, pad_id):
    n = max(len(s["input_ids"]) for s in samples)
    ids = torch.full((len(samples), n), pad_id)
    lab = torch.full((len(samples), n), -100)
    mask = torch.zeros((len(samples), n), dtype=torch.long)
    for i, s in enumerate(samples):
        k = len(s["input_ids"])
        ids[i, :k], lab[i, :k], mask[i, :k] = s["input_ids"], s["labels"], 1
    return {
        "input_ids": ids,
        "labels": lab,
        "attention_mask": mask,
        "pixel_values": torch.cat([s["pixel_values"] for s in samples]),
        "image_grid_thw": torch.cat([s["image_grid_thw"] for s in samples]),
        "mm_token_type_ids": (ids == IMAGE_PAD[0]).long(),
    }


class Stream(torch.utils.data.IterableDataset):
    """Batches of `bs` samples: from `first` for the first `first_steps` steps, then `rows`;
    a seeded shuffle per pass."""

    def __init__(self, rows, first, first_steps, bs, enc, pad_id, seed):
        self.rows, self.first, self.first_steps = rows, first, first_steps
        self.bs, self.enc, self.pad_id, self.seed = bs, enc, pad_id, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        rng = random.Random(self.seed)
        step = 0
        pools = {}
        while True:
            pool = self.first if step < self.first_steps and self.first else self.rows
            key = id(pool)
            if key not in pools or len(pools[key]) < self.bs:
                order = list(range(len(pool)))
                rng.shuffle(order)
                pools[key] = order
            idx = [pools[key].pop() for _ in range(self.bs)]
            if step % nw == wid:
                yield collate([self.enc(pool[i]) for i in idx], self.pad_id)
            step += 1


def evaluate(model, batches, dev):
    model.eval()
    out = {}
    with torch.no_grad():
        for fam, fam_batches in batches.items():
            right = total = 0
            for b in fam_batches:
                b = {key: v.to(dev) for key, v in b.items() if key in KEEP}
                lab = b.pop("labels")
                logits = model(**b).logits[:, :-1]
                tgt = lab[:, 1:]
                ok = (logits.argmax(-1) == tgt) | (tgt == -100)
                right += int(ok.all(dim=1).sum())
                total += len(tgt)
            out[fam] = round(100 * right / total, 1)
    model.train()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("train_dir")
    ap.add_argument("--name", required=True)
    ap.add_argument("--families", default="all")
    ap.add_argument("--first-families", default="", help="curriculum: trained alone first")
    ap.add_argument("--first-steps", type=int, default=0)
    ap.add_argument("--turns", type=int, default=2, help="1: answers only; 2: with the caption turn")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--max-steps", type=int, default=10**9)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--heldout", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--log", default=None)
    a = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    fams = sorted(os.listdir(a.train_dir)) if a.families == "all" else a.families.split(",")
    data = {f: load_family(a.train_dir, f) for f in fams}
    heldout = {f: rows[-a.heldout :] for f, rows in data.items()}
    rows = [r for f in fams for r in data[f][: -a.heldout]]
    first = [r for f in a.first_families.split(",") if f for r in data[f][: -a.heldout]]
    enc = Encoder(a.model_dir, a.turns)
    pad_id = enc.tok.convert_tokens_to_ids("<|endoftext|>")
    IMAGE_PAD[0] = enc.tok.convert_tokens_to_ids("<|image_pad|>")
    model = Qwen3VLForConditionalGeneration(AutoConfig.from_pretrained(a.model_dir)).float().to(dev).train()
    if "mm_token_type_ids" not in inspect.signature(model.model.forward).parameters:
        KEEP.discard("mm_token_type_ids")  # older transformers compute M-RoPE without it
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    loader = torch.utils.data.DataLoader(
        Stream(rows, first, a.first_steps, a.batch, enc, pad_id, a.seed),
        batch_size=None, num_workers=a.workers, prefetch_factor=8 if a.workers else None,
        worker_init_fn=lambda _: torch.set_num_threads(1))
    log = open(a.log, "w") if a.log else None
    # First answers only, encoded once.
    eval_batches = {
        f: [collate([enc((r[0], r[1][:1])) for r in rows[k : k + 50]], pad_id)
            for k in range(0, len(rows), 50)]
        for f, rows in heldout.items()
    }

    def emit(rec):
        rec["name"] = a.name
        line = json.dumps(rec)
        print(line, flush=True)
        if log:
            log.write(line + "\n")
            log.flush()

    start, losses, step = time.time(), [], 0
    for batch in loader:
        if step >= a.max_steps or time.time() - start > a.seconds:
            break
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1.0, (step + 1) / a.warmup)
        batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items() if k in KEEP}
        lab = batch.pop("labels")
        logits = model(**batch).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % a.eval_every == 0:
            emit({"step": step, "s": round(time.time() - start, 1),
                  "loss": round(sum(losses) / len(losses), 4),
                  "acc": evaluate(model, eval_batches, dev)})
            losses = []
    emit({"step": step, "s": round(time.time() - start, 1), "final": True,
          "acc": evaluate(model, eval_batches, dev)})


if __name__ == "__main__":
    sys.exit(main())
