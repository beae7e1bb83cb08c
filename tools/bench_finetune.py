#!/usr/bin/env python3
"""Fine-tuning step benchmark: PyTorch + transformers vs `interlace finetune` (development
tool; see BENCHMARKS.md).

Same checkpoint, same conversations (each one random 224x224 image, a question and an
answer), same batch size and accumulation, same trainable layers (everything else frozen),
AdamW + clipping on both sides. The PyTorch side pads each micro-batch (as a Trainer with a
padding collator does) and computes the loss on the assistant tokens; our side is the
release binary. Both sides resize the images within the same pixel bounds (`--max-pixels`,
`--min-pixels`: `interlace finetune`'s defaults, 224 x 224 at most) and the run stops unless
both trained on the same number of tokens. Reported: median seconds per optimizer step after
the first, peak resident memory of each process, and the tokens of each step.

    /tmp/venv/bin/python tools/bench_forward.py --runs 1          # once: builds the mid model
    cargo build --release
    /tmp/venv/bin/python tools/bench_finetune.py --dir /tmp/interlace-bench/mid --layers 2,5,8
    /tmp/venv/bin/python tools/bench_finetune.py --build-2b --dir /tmp/interlace-bench/2b \\
        --layers 4,11,18 --samples 2 --batch-size 1 --grad-accum 2 --steps 2 --grad-checkpoint
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_forward import build  # noqa: E402
from make_train_fixtures import supervised  # noqa: E402
from transformers import AutoImageProcessor, AutoProcessor, Qwen3VLForConditionalGeneration  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORDS = "red green blue shape circle square left right above below small large count chart bar".split()


def build_2b(out: Path) -> None:
    """A random checkpoint shaped like Qwen3-VL-2B (28 layers, hidden 2048, vocab 151 936)."""
    build(out, text=dict(
        vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0,
                         "mrope_section": [24, 20, 20], "mrope_interleaved": True},
        max_position_embeddings=32768, tie_word_embeddings=True,
    ), vision=dict(
        depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, patch_size=16,
        temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=2048,
        num_position_embeddings=2304, deepstack_visual_indexes=[5, 11, 17],
    ))


def make_data(dir: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        img = dir / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(img)
        q = " ".join(rng.choice(WORDS, 30))
        a = " ".join(rng.choice(WORDS, 20))
        rows.append({"image": img.name, "conversations": [
            {"from": "human", "value": "<image>\n" + q + "?"}, {"from": "gpt", "value": a + "."}]})
    path = dir / "data.json"
    path.write_text(json.dumps(rows))
    return path


def torch_side(args, data_path: Path) -> tuple[list[float], float, list[int]]:
    torch.set_num_threads(args.threads)
    model_dir = Path(args.dir)
    proc = AutoProcessor.from_pretrained(str(model_dir))
    proc.image_processor = AutoImageProcessor.from_pretrained(str(model_dir), backend="pil")
    # The pixel bounds `interlace finetune` is given (its defaults, the paper's recipe), not
    # the checkpoint's: with the mid-size model's 5120-pixel bound, transformers saw 16
    # patches per image where ours saw 196 (every run before session 32 compared such steps).
    proc.image_processor.size = {"shortest_edge": args.min_pixels, "longest_edge": args.max_pixels}
    model = Qwen3VLForConditionalGeneration.from_pretrained(str(model_dir), dtype=torch.float32)
    model.train()
    if args.grad_checkpoint:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for i in args.layers:
        for p in model.model.language_model.layers[i].parameters():
            p.requires_grad_(True)
            params.append(p)
    opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    rows = json.loads(data_path.read_text())
    convs = []
    for r in rows:
        img = Image.open(data_path.parent / r["image"]).convert("RGB")
        q = r["conversations"][0]["value"].replace("<image>", "")  # the image at its marker (SPEC)
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]},
                {"role": "assistant", "content": [{"type": "text", "text": r["conversations"][1]["value"]}]}]
        enc, mask = supervised(proc, msgs, [img])
        convs.append((msgs, img, mask))
    per_step = args.batch_size * args.grad_accum
    times, tokens = [], []
    for step in range(args.steps):
        t0 = time.perf_counter()
        tokens.append(0)
        opt.zero_grad()
        chosen = [convs[(step * per_step + k) % len(convs)] for k in range(per_step)]
        total = sum(int(m[1:].sum()) for _, _, m in chosen)
        for mb in range(args.grad_accum):
            part = chosen[mb * args.batch_size:(mb + 1) * args.batch_size]
            texts = [proc.apply_chat_template(m, tokenize=False) for m, _, _ in part]
            enc = proc(text=texts, images=[i for _, i, _ in part], padding=True, return_tensors="pt")
            tokens[-1] += int(enc["attention_mask"].sum())
            labels = torch.full_like(enc["input_ids"], -100)
            for b, (_, _, m) in enumerate(part):
                ids = enc["input_ids"][b, : len(m)]
                labels[b, : len(m)] = torch.where(m, ids, torch.tensor(-100))
            model.model.rope_deltas = None
            out = model(**enc, use_cache=False)
            logits = out.logits[:, :-1].float()
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=-100, reduction="sum") / total
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
        print(f"  torch step {step + 1}: {times[-1]:.2f} s", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    return times, peak, tokens


def ours(args, data_path: Path) -> tuple[list[float], float, list[int]]:
    tmp = Path(tempfile.mkdtemp())
    plan = tmp / "plan.json"
    n = json.loads((Path(args.dir) / "config.json").read_text())["text_config"]["num_hidden_layers"]
    plan.write_text(json.dumps({
        "strategy": "manual", "ratio": 0.0, "num_layers": n, "drop": [], "finetune": args.layers,
        "freeze": [i for i in range(n) if i not in args.layers], "anchors": [], "kept": list(range(n))}))
    per_step = args.batch_size * args.grad_accum
    cmd = ["/usr/bin/time", "-f", "%M", str(ROOT / "target/release/interlace"), "finetune",
           "--model", args.dir, "--plan", str(plan), "--data", str(data_path), "--out", str(tmp / "out"),
           "--samples", str(min(args.samples, per_step * args.steps)), "--batch-size", str(args.batch_size),
           "--grad-accum", str(args.grad_accum), "--epochs", str(max(1, (per_step * args.steps) // args.samples)),
           "--warmup-ratio", "0", "--lr", "1e-5",
           "--min-pixels", str(args.min_pixels), "--max-pixels", str(args.max_pixels)]
    if args.grad_checkpoint:
        cmd.append("--grad-checkpoint")
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(res.stderr)
    peak_kb = int(res.stderr.strip().splitlines()[-1])
    log = [json.loads(l) for l in (tmp / "out" / "training_log.jsonl").read_text().splitlines()]
    times = [r["seconds"] for r in log]
    tokens = [round(r["tokens_per_s"] * r["seconds"]) for r in log]
    for i, t in enumerate(times):
        print(f"  interlace step {i + 1}: {t:.2f} s", flush=True)
    shutil.rmtree(tmp)
    return times, peak_kb / 1024 / 1024, tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/interlace-bench/mid")
    ap.add_argument("--build-2b", action="store_true")
    ap.add_argument("--layers", default="2,5,8")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--grad-checkpoint", action="store_true")
    ap.add_argument("--max-pixels", type=int, default=50176, help="both sides' image bound")
    ap.add_argument("--min-pixels", type=int, default=784)
    ap.add_argument("--only", choices=["torch", "ours"])
    ap.add_argument("--workers", type=int, default=None,
                    help="interlace finetune --workers (default: its own, one per core)")
    args = ap.parse_args()
    args.layers = [int(x) for x in args.layers.split(",")]
    if args.build_2b and not (Path(args.dir) / "config.json").exists():
        build_2b(Path(args.dir))
    data = make_data(Path(args.dir) / "ftdata", args.samples)
    results = {}
    if args.only != "ours":
        results["torch"] = torch_side(args, data)
    if args.only != "torch":
        results["ours"] = ours(args, data)
    for k, (times, peak, tokens) in results.items():
        tail = times[1:] or times
        print(f"{k}: median {statistics.median(tail):.2f} s/step (steps after the first), peak RSS {peak:.2f} GiB, "
              f"tokens per step {tokens}")
    if len(results) == 2:
        # Ours shuffles the samples within each epoch, the PyTorch side takes them in order:
        # per step the tokens differ, over whole epochs they must not.
        if sum(results["torch"][2]) != sum(results["ours"][2]):
            raise SystemExit("the two sides trained on different tokens: not the same job")
        t = statistics.median(results["torch"][0][1:] or results["torch"][0])
        o = statistics.median(results["ours"][0][1:] or results["ours"][0])
        print(f"speed-up (torch / interlace): {t / o:.2f}x; memory ratio (interlace / torch): "
              f"{results['ours'][1] / results['torch'][1]:.2f}")


if __name__ == "__main__":
    main()
