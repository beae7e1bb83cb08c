#!/usr/bin/env python3
"""Similarity throughput: the authors' approach vs `interlace similarity` (development tool).

The reference scripts run transformers with output_hidden_states once per pack size and
average token cosines; we run one pass per sample that stops before the last layer. Both
score the same samples of the mid-size benchmark model (built by tools/bench_forward.py).

    /tmp/venv/bin/python tools/bench_forward.py --runs 1      # once, builds the model
    cargo build --release
    /tmp/venv/bin/python tools/bench_similarity.py [--samples 16]
"""

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/interlace-bench/mid")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each side; the median is reported")
    args = ap.parse_args()
    mdir = Path(args.dir)
    data_dir = mdir / "simdata"
    data_dir.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    records = []
    for i in range(args.samples):
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(data_dir / f"{i}.png")
        words = " ".join(["describe", "the", "picture", "and", "count", "objects"] * (5 + i % 4))
        records.append({"image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\n" + words}, {"from": "gpt", "value": "ok"}]})
    (data_dir / "data.json").write_text(json.dumps(records))

    # --- ours: the CLI, model load included. It runs first: run after the reference, it
    # shared the cores with this process's idle-spinning OpenMP threads and took 25-35 %
    # longer. ---
    binary = ROOT / "target" / "release" / "interlace"
    runs = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        subprocess.run([str(binary), "similarity", "--model", str(mdir), "--data", str(data_dir / "data.json"),
                        "--portion", "1", "--out", str(data_dir / "sim.json")], check=True, capture_output=True)
        runs.append(time.perf_counter() - t0)
    ours = statistics.median(runs)

    # --- reference approach: one transformers pass per pack size, output_hidden_states ---
    processor = AutoProcessor.from_pretrained(mdir)
    model = Qwen3VLForConditionalGeneration.from_pretrained(mdir, dtype=torch.float32).eval()
    inputs = []
    for r in records:
        text = r["conversations"][0]["value"].replace("<image>\n", "")
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        prompt = processor.apply_chat_template(msgs, add_generation_prompt=True)
        img = Image.open(data_dir / r["image"]).convert("RGB")
        inputs.append(processor(text=[prompt], images=[img], return_tensors="pt"))
    L = model.config.text_config.num_hidden_layers
    runs = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        with torch.inference_mode():
            for k in (1, 2, 3):
                for x in inputs:
                    hs = model(**x, output_hidden_states=True).hidden_states
                    for i in range(L - k):
                        torch.nn.functional.cosine_similarity(hs[i][0], hs[i + k][0], dim=-1).mean().item()
        runs.append(time.perf_counter() - t0)
    ref = statistics.median(runs)

    n = args.samples
    print(f"{n} samples, {L} layers, packs 1..3, {torch.get_num_threads()} torch threads, "
          f"median of {args.repeat} runs each")
    print(f"reference (transformers, one pass per pack): {ref:.2f} s = {n / ref:.2f} samples/s")
    print(f"interlace similarity (one pass, stops early): {ours:.2f} s = {n / ours:.2f} samples/s")
    print(f"speed-up: {ref / ours:.2f}x")


if __name__ == "__main__":
    main()
