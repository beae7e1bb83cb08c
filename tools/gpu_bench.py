#!/usr/bin/env python3
"""The PyTorch side of scripts/gpu-check.sh (development tool; the product never needs Python).

Subcommands, each printing or writing JSON:

  model      a random Qwen3-VL checkpoint of a published shape (2b, 8b; tiny for a dry run
             on a CPU), bf16, with the demo model's tokenizer and chat template (its special
             tokens are Qwen's; only the embedding rows of its 1024 ids are ever used) and
             Qwen3-VL's published image settings.
  data       N calibration conversations (LLaVA JSON) with one 640x480 JPEG each.
  similarity the authors' pipeline: for each pack size k in 1, 2, 3 a pass over the
             samples one at a time (chat template, processor, transformers forward with
             output_hidden_states and SDPA, mean token cosine of h_i and h_{i+k}); seconds
             per sample, model loading excluded.
  latency    transformers' time to first token (vision tower + prefill: generate with one
             new token) and decoding tokens/s (64 new tokens), medians over runs.
  report     merges the JSON files of one gpu-check run into results.json and results.md.
  train-data N conversations of about 500 tokens (one 448x448 JPEG, a question, a long
             answer) as LLaVA JSON, for the fine-tuning comparison.
  train      a PyTorch + transformers fine-tuning loop on the layers of a plan: bf16 model,
             f32 master weights and AdamW, SDPA, gradient checkpointing, micro-batches of
             --batch-size padded conversations, --grad-accum of them per step, loss on the
             assistant tokens; seconds per optimizer step (after a warm-up step) and peak
             GPU memory (torch.cuda.max_memory_allocated; gpu-train-check.sh also polls
             nvidia-smi for both sides).
  train-report  merges scripts/gpu-train-check.sh's JSON files into train-results.md/.json.

    python tools/gpu_bench.py model --shape 2b --out /tmp/q2b --device cuda
"""

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Published Qwen3-VL shapes (config.json of Qwen/Qwen3-VL-{2B,8B}-Instruct); tiny: a dry run.
SHAPES = {
    "2b": dict(
        text=dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
        vision=dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2048,
                    deepstack_visual_indexes=[5, 11, 17], num_position_embeddings=2304)),
    "8b": dict(
        text=dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                  num_key_value_heads=8, head_dim=128, tie_word_embeddings=False),
        vision=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                    deepstack_visual_indexes=[8, 16, 24], num_position_embeddings=2304)),
    "tiny": dict(
        text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=8, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, tie_word_embeddings=True),
        vision=dict(depth=4, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=128,
                    deepstack_visual_indexes=[1, 2, 3], num_position_embeddings=2304)),
}
VOCAB = 151936


def cmd_model(args):
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    demo = ROOT / "demo" / "model"
    demo_cfg = json.loads((demo / "config.json").read_text())
    shape = SHAPES[args.shape]
    tie = shape["text"]["tie_word_embeddings"]
    text = dict(shape["text"], vocab_size=VOCAB, rms_norm_eps=1e-6, rope_theta=5_000_000.0,
                max_position_embeddings=262144, hidden_act="silu", attention_bias=False,
                rope_scaling={"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True})
    if shape["text"]["head_dim"] != 128:
        hd = shape["text"]["head_dim"] // 2
        text["rope_scaling"]["mrope_section"] = [hd - 2 * (hd * 5 // 16), hd * 5 // 16, hd * 5 // 16]
    vision = dict(shape["vision"], patch_size=16, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
                  hidden_act="gelu_pytorch_tanh")
    cfg = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=tie,
                        image_token_id=demo_cfg["image_token_id"], video_token_id=demo_cfg["video_token_id"],
                        vision_start_token_id=demo_cfg["vision_start_token_id"],
                        vision_end_token_id=demo_cfg["vision_end_token_id"])
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(args.device):
        model = Qwen3VLForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16)
    model.eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size="5GB")
    for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"]:
        shutil.copy(demo / f, out / f)
    (out / "preprocessor_config.json").write_text(json.dumps({
        "size": {"longest_edge": 16777216, "shortest_edge": 65536}, "patch_size": 16, "temporal_patch_size": 2,
        "merge_size": 2, "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "processor_class": "Qwen3VLProcessor",
        "image_processor_type": "Qwen2VLImageProcessorFast"}, indent=1))
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"shape": args.shape, "dir": str(out), "parameters": params,
                      "seconds": round(time.perf_counter() - t0, 1)}))


def cmd_data(args):
    import numpy as np
    from PIL import Image

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    records = []
    yy, xx = np.mgrid[0:480, 0:640]
    for i in range(args.samples):
        # Smooth colour fields with a few rectangles: photo-like JPEG sizes, not noise.
        base = np.stack([(xx * rng.uniform(0.1, 0.4) + yy * rng.uniform(0.1, 0.4) + rng.uniform(0, 255)) % 256
                         for _ in range(3)], -1)
        for _ in range(6):
            x0, y0 = rng.integers(0, 560), rng.integers(0, 400)
            base[y0:y0 + rng.integers(20, 80), x0:x0 + rng.integers(20, 80)] = rng.integers(0, 255, 3)
        Image.fromarray(base.astype(np.uint8)).save(out / f"{i}.jpg", quality=90)
        words = " ".join(["Describe", "the", "picture", "and", "count", "the", "objects", "in", "it."] * (2 + i % 5))
        records.append({"image": f"{i}.jpg", "conversations": [
            {"from": "human", "value": "<image>\n" + words}, {"from": "gpt", "value": "A picture."}]})
    (out / "data.json").write_text(json.dumps(records))
    print(json.dumps({"dir": str(out), "samples": args.samples}))


def load(model_dir, device):
    import torch
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(model_dir)
    model = Qwen3VLForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.bfloat16 if device != "cpu" else torch.float32, attn_implementation="sdpa"
    ).to(device).eval()
    return processor, model


def sync(device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def cmd_similarity(args):
    import torch
    from PIL import Image

    data_dir = Path(args.data).parent
    records = json.loads(Path(args.data).read_text())[: args.samples]
    processor, model = load(args.model, args.device)
    L = model.config.text_config.num_hidden_layers

    def inputs_of(r):
        text = r["conversations"][0]["value"].replace("<image>\n", "")
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        prompt = processor.apply_chat_template(msgs, add_generation_prompt=True)
        img = Image.open(data_dir / r["image"]).convert("RGB")
        return processor(text=[prompt], images=[img], return_tensors="pt").to(args.device)

    with torch.inference_mode():  # warm-up: kernels, allocator
        model(**inputs_of(records[0]), output_hidden_states=True)
    sync(args.device)
    t0 = time.perf_counter()
    scores = {k: {} for k in (1, 2, 3)}
    with torch.inference_mode():
        for k in (1, 2, 3):
            for r in records:
                hs = model(**inputs_of(r), output_hidden_states=True).hidden_states
                for i in range(L - k):
                    c = torch.nn.functional.cosine_similarity(hs[i][0].float(), hs[i + k][0].float(), dim=-1)
                    scores[k].setdefault(i, []).append(c.mean().item())
    sync(args.device)
    secs = time.perf_counter() - t0
    n = len(records)
    print(json.dumps({"samples": n, "seconds": secs, "seconds_per_sample": secs / n, "layers": L,
                      "s1_first": scores[1][0][:4]}))


def cmd_latency(args):
    import torch
    from PIL import Image

    processor, model = load(args.model, args.device)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": args.prompt}]}]
    prompt = processor.apply_chat_template(msgs, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[Image.open(args.image).convert("RGB")], return_tensors="pt").to(args.device)

    def timed(new):
        sync(args.device)
        t = time.perf_counter()
        with torch.inference_mode():
            model.generate(**inputs, do_sample=False, max_new_tokens=new, min_new_tokens=new)
        sync(args.device)
        return time.perf_counter() - t

    for _ in range(args.warmup):
        timed(1)
        timed(args.new_tokens)
    ttft = [timed(1) for _ in range(args.runs)]
    full = [timed(args.new_tokens) for _ in range(args.runs)]
    t1, tn = statistics.median(ttft), statistics.median(full)
    print(json.dumps({"prompt_tokens": int(inputs["input_ids"].shape[1]), "ttft_ms": t1 * 1e3,
                      "decode_tokens_per_s": (args.new_tokens - 1) / max(tn - t1, 1e-9),
                      "new_tokens": args.new_tokens, "runs": args.runs}))


def read(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def cmd_report(args):
    out = Path(args.dir)
    res = {"date": time.strftime("%Y-%m-%d"), "gpu": (out / "gpu.txt").read_text().strip() if (out / "gpu.txt").exists() else "?",
           "shapes": {}}
    lines = [f"GPU check of {res['date']} on {res['gpu']} (scripts/gpu-check.sh; bf16 both sides)", ""]
    tests = out / "gpu-tests.txt"
    if tests.exists():
        summary = [l for l in tests.read_text().splitlines() if l.startswith("test result")]
        lines += ["GPU tests: " + (summary[-1] if summary else "no summary (see gpu-tests.txt)"), ""]
    lines += ["| shape | similarity s/sample: transformers 3 passes | interlace | speed-up | target |",
              "|---|---|---|---|---|"]
    for shape in args.shapes:
        theirs, ours = read(out / f"{shape}-sim-torch.json"), read(out / f"{shape}-sim-ours.json")
        r = {"similarity_torch": theirs, "similarity_ours": ours}
        if theirs and ours:
            sp = theirs["seconds_per_sample"] / ours["seconds_per_sample"]
            r["similarity_speedup"] = sp
            lines.append(f"| {shape} | {theirs['seconds_per_sample']:.4f} | {ours['seconds_per_sample']:.4f} | "
                         f"{sp:.2f}x | >= 3x: {'met' if sp >= 3 else 'NOT met'} |")
        else:
            lines.append(f"| {shape} | {theirs and theirs['seconds_per_sample']} | {ours and ours['seconds_per_sample']} | – | not measured |")
        res["shapes"][shape] = r
    lines += ["", "| shape | model | TTFT ms (interlace) | TTFT ms (transformers) | decode tok/s (interlace) | decode tok/s (transformers) |",
              "|---|---|---|---|---|---|"]
    for shape in args.shapes:
        lat = read(out / f"{shape}-latency-ours.json")
        r = res["shapes"][shape]
        r["latency_ours"] = lat
        if not lat:
            continue
        for m, tag in zip(lat["models"], ["dense", "pruned 25 %"]):
            t = read(out / f"{shape}-latency-torch-{tag.split()[0]}.json")
            r[f"latency_torch_{tag.split()[0]}"] = t
            lines.append(f"| {shape} | {tag} ({m['decoder_layers']} layers) | {m['ttft_ms']:.1f} | "
                         f"{t['ttft_ms'] if t else float('nan'):.1f} | {m['decode_tokens_per_s']:.1f} | "
                         f"{t['decode_tokens_per_s'] if t else float('nan'):.1f} |")
        sp = lat.get("speedup")
        if sp:
            fr_t, fr_d = sp["ttft"] / sp["ttft_ideal"], sp["decode"] / sp["decode_ideal"]
            r["pruned_share_of_ideal"] = {"ttft": fr_t, "decode": fr_d}
            lines.append("")
            lines.append(f"{shape}, pruned vs dense (interlace): TTFT {sp['ttft']:.3f}x of an ideal {sp['ttft_ideal']:.3f}x "
                         f"({fr_t * 100:.0f} % of ideal), decoding {sp['decode']:.3f}x of {sp['decode_ideal']:.3f}x "
                         f"({fr_d * 100:.0f} %); target >= 90 %: "
                         f"{'met' if min(fr_t, fr_d) >= 0.9 else 'NOT met'}")
    (out / "results.json").write_text(json.dumps(res, indent=1))
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


ANSWER = ("The picture shows a bright field of colour with several rectangles placed across it. "
          "Each rectangle has its own colour and size, and they overlap in places. ") * 6


def cmd_train_data(args):
    import numpy as np
    from PIL import Image

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    records = []
    for i in range(args.samples):
        img = rng.integers(0, 255, (1, 1, 3)) + np.zeros((448, 448, 3))
        for _ in range(8):
            x0, y0 = rng.integers(0, 380, 2)
            img[y0:y0 + rng.integers(20, 68), x0:x0 + rng.integers(20, 68)] = rng.integers(0, 255, 3)
        Image.fromarray(img.astype(np.uint8)).save(out / f"t{i}.jpg", quality=90)
        records.append({"image": f"t{i}.jpg", "conversations": [
            {"from": "human", "value": "<image>\nDescribe everything you can see in this picture, in detail."},
            {"from": "gpt", "value": ANSWER}]})
    (out / "train.json").write_text(json.dumps(records))
    print(json.dumps({"dir": str(out), "samples": args.samples}))


def cmd_train(args):
    import torch
    from PIL import Image

    plan = json.loads(Path(args.plan).read_text())
    data_dir = Path(args.data).parent
    records = json.loads(Path(args.data).read_text())
    processor, model = load(args.model, args.device)
    kept = plan["kept"]
    positions = [kept.index(l) for l in plan["finetune"]]
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    named = {}
    for pos in positions:
        for n, p in model.model.language_model.layers[pos].named_parameters():
            p.requires_grad_(True)
            named[f"{pos}.{n}"] = p
    masters = {n: torch.nn.Parameter(p.detach().float().clone()) for n, p in named.items()}
    opt = torch.optim.AdamW(list(masters.values()), lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    tok = processor.tokenizer

    def micro_batch(rs):
        texts, images = [], []
        for r in rs:
            q = r["conversations"][0]["value"].replace("<image>\n", "")
            msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]},
                    {"role": "assistant", "content": [{"type": "text", "text": r["conversations"][1]["value"]}]}]
            texts.append(processor.apply_chat_template(msgs, tokenize=False))
            images.append(Image.open(data_dir / r["image"]).convert("RGB"))
        enc = processor(text=texts, images=images, return_tensors="pt", padding=True)
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        # Supervise the answers: everything after the last "<|im_start|>assistant\n".
        start = tok.convert_tokens_to_ids("<|im_start|>")
        for row in range(labels.shape[0]):
            ids = enc["input_ids"][row].tolist()
            last = max(i for i, t in enumerate(ids) if t == start)
            labels[row, : last + 3] = -100
        enc["labels"] = labels
        return enc.to(args.device)

    per_step = args.batch_size * args.grad_accum
    steps = min(args.steps, len(records) // per_step)
    times, tokens = [], []
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for s in range(steps):
        sync(args.device)
        t0 = time.perf_counter()
        acc = {n: torch.zeros_like(m) for n, m in masters.items()}
        n_tok = 0
        for a in range(args.grad_accum):
            rs = records[(s * per_step + a * args.batch_size):(s * per_step + (a + 1) * args.batch_size)]
            batch = micro_batch(rs)
            n_tok += int(batch["attention_mask"].sum())
            loss = model(**batch).loss / args.grad_accum
            loss.backward()
            for n, p in named.items():
                acc[n] += p.grad.float()
                p.grad = None
        for n, m in masters.items():
            m.grad = acc[n]
        torch.nn.utils.clip_grad_norm_(list(masters.values()), 1.0)
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            for n, p in named.items():
                p.copy_(masters[n].to(torch.bfloat16))
        sync(args.device)
        times.append(time.perf_counter() - t0)
        tokens.append(n_tok)
        print(f"step {s + 1}: {times[-1]:.2f} s, {n_tok} tokens", file=sys.stderr)
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else None
    timed = times[1:] or times
    print(json.dumps({"steps": steps, "seconds_per_step": statistics.median(timed), "step_seconds": times,
                      "tokens_per_step": tokens, "trainable_layers": plan["finetune"],
                      "torch_peak_allocated_gib": peak}))


def cmd_train_report(args):
    out = Path(args.dir)
    res = {"date": time.strftime("%Y-%m-%d"), "shapes": {}}
    lines = [f"GPU fine-tuning check of {res['date']} (scripts/gpu-train-check.sh; bf16, f32 masters, "
             "gradient checkpointing, batch 16 x 2)", "",
             "| shape | trainable layers | s/step PyTorch | s/step interlace | speed (PyTorch / interlace) | peak GiB PyTorch | peak GiB interlace | memory ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for shape in args.shapes:
        t, o = read(out / f"{shape}-train-torch.json"), read(out / f"{shape}-train-ours.json")
        mt, mo = read(out / f"{shape}-train-torch-mem.json"), read(out / f"{shape}-train-ours-mem.json")
        res["shapes"][shape] = {"torch": t, "ours": o, "torch_mem": mt, "ours_mem": mo}
        if not (t and o):
            lines.append(f"| {shape} | – | {t and t['seconds_per_step']} | {o and o['seconds_per_step']} | not measured | | | |")
            continue
        speed = t["seconds_per_step"] / o["seconds_per_step"]
        pt = mt["peak_gib"] if mt else float("nan")
        po = mo["peak_gib"] if mo else float("nan")
        lines.append(f"| {shape} | {t['trainable_layers']} | {t['seconds_per_step']:.2f} | {o['seconds_per_step']:.2f} | "
                     f"{speed:.2f}x (target >= 1.0: {'met' if speed >= 1 else 'NOT met'}) | {pt:.1f} | {po:.1f} | "
                     f"{po / pt:.2f} (target <= 1.0: {'met' if po <= pt else 'NOT met'}) |")
    (out / "train-results.json").write_text(json.dumps(res, indent=1))
    (out / "train-results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("model")
    p.add_argument("--shape", choices=SHAPES, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p = sub.add_parser("data")
    p.add_argument("--out", required=True)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("similarity")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--device", default="cuda")
    p = sub.add_parser("latency")
    p.add_argument("--model", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--prompt", default="Describe this image in detail.")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--device", default="cuda")
    p = sub.add_parser("report")
    p.add_argument("--dir", required=True)
    p.add_argument("--shapes", nargs="+", default=["2b", "8b"])
    p = sub.add_parser("train-data")
    p.add_argument("--out", required=True)
    p.add_argument("--samples", type=int, default=96)
    p.add_argument("--seed", type=int, default=1)
    p = sub.add_parser("train")
    p.add_argument("--model", required=True)
    p.add_argument("--plan", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--device", default="cuda")
    p = sub.add_parser("train-report")
    p.add_argument("--dir", required=True)
    p.add_argument("--shapes", nargs="+", default=["2b", "8b"])
    args = ap.parse_args()
    globals()["cmd_" + args.cmd.replace("-", "_")](args)


if __name__ == "__main__":
    sys.exit(main())
