#!/usr/bin/env bash
# The GPU fine-tuning check (GPU, part 2), the companion of scripts/gpu-check.sh, on the
# same kind of machine (NVIDIA GPU, PyTorch, transformers, torchvision, safetensors; no
# Rust) with the binary of scripts/build-cuda.sh. For random Qwen3-VL checkpoints of the
# 2B and 8B shapes built there by transformers, pruned by 25 % with our plan:
#   - interlace finetune of the plan's layers, bf16 with f32 masters, --grad-checkpoint,
#     batch 16 x 2, conversations of about 500 tokens (one 448x448 image each);
#   - a PyTorch + transformers loop on the same layers, data and settings
#     (tools/gpu_bench.py train: SDPA, gradient checkpointing, bf16 with f32 masters);
# seconds per optimizer step (median after the first) and peak GPU memory (nvidia-smi
# polled every 200 ms during each run, the same way for both). Targets: >= 1.0x PyTorch's
# step speed at <= 1.0x its peak memory; the 8B shape's 9 plan layers train on one GPU.
# Writes train-results.md/.json and the raw files under $OUT; meant to finish in 10 minutes.
#
#   OUT=/tmp/out scripts/gpu-train-check.sh
#   scripts/gpu-train-check.sh --dry-run          # here: tiny shape, CPU (checks the script)
set -uo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
OUT="${OUT:-$REPO/gpu-check-out}"
WORK="${WORK:-/tmp/interlace-gpu-train-check}"
mkdir -p "$OUT" "$WORK"
PY="${PYTHON:-python3}"

if [ "${1:-}" = "--dry-run" ]; then
    SHAPES=(tiny); DEVICE=cpu; DTYPE=f32; SAMPLES=12; BATCH=2; ACCUM=2; STEPS=3
    BIN="$REPO/target/release/interlace"
else
    SHAPES=(2b 8b); DEVICE=cuda; DTYPE=bf16; SAMPLES=96; BATCH=16; ACCUM=2; STEPS=3
    BIN="$REPO/target-cuda/release/interlace"
fi

LOGFILE="$OUT/train-check.log"
# shellcheck source=scripts/check-lib.sh
. scripts/check-lib.sh
# measured NAME JSON-OUT cmd...: runs cmd while sampling the GPU's memory in use (or, on
# the CPU, the process's peak resident memory) and writes {"peak_gib": ...} to JSON-OUT.
measured() {
    local name="$1" mem="$2"; shift 2
    if [ "$DEVICE" = cuda ]; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$mem.samples" 2>/dev/null &
        local poller=$!
        step "$name" 300 "$@"
        local rc=$?
        kill "$poller" 2>/dev/null; wait "$poller" 2>/dev/null
        "$PY" -c "import json,sys; v=[float(x) for x in open(sys.argv[1]) if x.strip()]; print(json.dumps({'peak_gib': max(v)/1024 if v else None, 'how': 'nvidia-smi memory.used, every 200 ms'}))" "$mem.samples" > "$mem"
    else
        step "$name" 300 /usr/bin/time -f "%M" -o "$mem.samples" "$@"
        local rc=$?
        "$PY" -c "import json,sys; print(json.dumps({'peak_gib': int(open(sys.argv[1]).read().split()[-1])/2**20, 'how': 'peak resident memory'}))" "$mem.samples" > "$mem"
    fi
    return $rc
}

unpack "$BIN"
[ -x "$BIN" ] || { log "no binary at $BIN"; exit 1; }
[ "$DEVICE" = cuda ] && eval "$(scripts/cuda-env.sh)"
log "binary: $("$BIN" --version 2>&1)"

DATA="$WORK/data"
step "training data" 60 "$PY" tools/gpu_bench.py train-data --out "$DATA" --samples "$SAMPLES" > /dev/null
for shape in "${SHAPES[@]}"; do
    M="$WORK/$shape"
    rm -rf "$M" "$M-pruned" "$WORK/$shape-ft" "$WORK/$shape-ft.train"
    step "$shape: random checkpoint" 240 "$PY" tools/gpu_bench.py model --shape "$shape" --out "$M" --device "$DEVICE" \
        > "$OUT/$shape-train-model.json" || continue
    step "$shape: similarity, plan, prune 25 %" 240 bash -c "'$BIN' similarity --model '$M' --data '$DATA/train.json' \
        --samples 16 --device $DEVICE --out '$WORK/$shape-sim.json' > /dev/null && '$BIN' plan \
        --similarity '$WORK/$shape-sim.json' --ratio 0.25 --out '$WORK/$shape-plan.json' > '$OUT/$shape-train-plan.txt' \
        && '$BIN' prune --model '$M' --plan '$WORK/$shape-plan.json' --out '$M-pruned' >> '$OUT/$shape-train-plan.txt'" \
        || continue
    rm -rf "$M"
    measured "$shape: fine-tuning, interlace" "$OUT/$shape-train-ours-mem.json" "$BIN" finetune --model "$M-pruned" \
        --data "$DATA/train.json" --samples "$((BATCH * ACCUM * STEPS))" --batch-size "$BATCH" --grad-accum "$ACCUM" \
        --grad-checkpoint --lr 1e-5 --max-pixels 200704 --device "$DEVICE" --dtype "$DTYPE" --out "$WORK/$shape-ft" \
        > "$OUT/$shape-train-ours.txt" 2>&1
    "$PY" - "$WORK/$shape-ft/training_log.jsonl" "$WORK/$shape-plan.json" > "$OUT/$shape-train-ours.json" <<'EOF'
import json, statistics, sys
try:
    rows = [json.loads(l) for l in open(sys.argv[1])]
except OSError:
    print("{}"); raise SystemExit
secs = [r["seconds"] for r in rows]
plan = json.load(open(sys.argv[2]))
print(json.dumps({"steps": len(rows), "seconds_per_step": statistics.median(secs[1:] or secs), "step_seconds": secs,
                  "trainable_layers": plan["finetune"]}))
EOF
    measured "$shape: fine-tuning, PyTorch" "$OUT/$shape-train-torch-mem.json" "$PY" tools/gpu_bench.py train \
        --model "$M-pruned" --plan "$M-pruned/interlace_plan.json" --data "$DATA/train.json" --batch-size "$BATCH" \
        --grad-accum "$ACCUM" --steps "$STEPS" --device "$DEVICE" > "$OUT/$shape-train-torch.json" 2>"$OUT/$shape-train-torch.err"
    rm -rf "$M-pruned" "$WORK/$shape-ft" "$WORK/$shape-ft.train"
done
"$PY" tools/gpu_bench.py train-report --dir "$OUT" --shapes "${SHAPES[@]}" | tee -a "$OUT/train-check.log"
