#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, PyTorch, transformers, torchvision and
# safetensors (no Rust, no network needed), given this repository and the binaries that
# scripts/build-cuda.sh --tests built (target-cuda/release/interlace and
# interlace-gpu-tests, or their .xz files from `scripts/build-cuda.sh --tests --pack`):
#
#   1. transformers' own bf16 run of the test fixtures on this GPU (the GPU tests' reference);
#   2. the GPU tests (tests/gpu.rs: CUDA f32 and bf16 against transformers, generation,
#      the fused attention kernel, packed similarity, fine-tuning steps against PyTorch's,
#      resume after a kill);
#   3. for random Qwen3-VL checkpoints of the 2B and 8B shapes, built here by transformers,
#      side by side in bf16 on the same checkpoint and inputs:
#      - similarity, seconds per sample over 64 samples: interlace vs the authors'
#        pipeline (transformers output_hidden_states, SDPA, one pass per pack size, one
#        sample at a time);
#      - time to first token and decoding tokens/s, dense and 25 % pruned (our plan from
#        our similarity scores), interlace vs transformers, and our pruned speed-up against
#        the ideal the removed multiply-adds imply.
#
# Writes under $OUT (default ./gpu-check-out): results.md, results.json, every raw JSON
# and log. Meant to finish within 10 minutes on an H200; every step has its own time limit
# and a failed step is reported, not fatal.
#
#   OUT=/tmp/out scripts/gpu-check.sh            # on the GPU machine
#   scripts/gpu-check.sh --dry-run               # here: tiny shape, CPU, f32 (checks the script)
set -uo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
OUT="${OUT:-$REPO/gpu-check-out}"
mkdir -p "$OUT"
WORK="${WORK:-/tmp/interlace-gpu-check}"
mkdir -p "$WORK"
PY="${PYTHON:-python3}"

DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
if [ "$DRY" = 1 ]; then
    SHAPES=(tiny); DEVICE=cpu; SAMPLES=8; RUNS=2; NEW=8
    BIN="$REPO/target/release/interlace"; TESTS=""
else
    SHAPES=(2b 8b); DEVICE=cuda; SAMPLES=64; RUNS=5; NEW=64
    BIN="$REPO/target-cuda/release/interlace"; TESTS="$REPO/target-cuda/release/interlace-gpu-tests"
fi

LOGFILE="$OUT/check.log"
# shellcheck source=scripts/check-lib.sh
. scripts/check-lib.sh

unpack "$BIN" "$TESTS"
[ -x "$BIN" ] || { log "no binary at $BIN (run scripts/build-cuda.sh here or carry it)"; exit 1; }

if [ "$DRY" = 0 ]; then
    # The CUDA libraries the binary needs: the driver's libcuda.so.1 from the system, the
    # rest from PyTorch's install (scripts/cuda-env.sh).
    eval "$(scripts/cuda-env.sh)"
    missing=$(ldd "$BIN" 2>&1 | grep "not found")
    [ -z "$missing" ] || log "the binary will not start, libraries missing: $missing"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1
else
    echo "CPU dry run ($(nproc) cores)" > "$OUT/gpu.txt"
fi
log "binary: $("$BIN" --version 2>&1)"
log "device: $(cat "$OUT/gpu.txt")"
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" >> "$OUT/check.log" 2>&1

# 1-2. GPU tests against transformers' bf16 run on this GPU.
if [ -n "$TESTS" ]; then
    step "transformers bf16 reference on the GPU" 120 \
        "$PY" tools/make_bf16_fixtures.py --device cuda --out "$WORK/bf16-cuda" > "$OUT/bf16-reference.txt" 2>&1
    cp "$WORK/bf16-cuda/generate.json" "$OUT/bf16-cuda-generate.json" 2>/dev/null
    step "PyTorch bf16 fine-tuning steps on the GPU" 120 \
        "$PY" tools/make_bf16_train_fixture.py --device cuda --out "$WORK/bf16-train-cuda" >> "$OUT/bf16-reference.txt" 2>&1
    step "GPU tests" 240 env INTERLACE_REPO="$REPO" INTERLACE_BIN="$BIN" \
        INTERLACE_BF16_REF="$WORK/bf16-cuda" INTERLACE_BF16_TRAIN_REF="$WORK/bf16-train-cuda" \
        "$TESTS" --ignored --test-threads 1 --nocapture > "$OUT/gpu-tests.txt" 2>&1
    grep -E "^test |test result|running on" "$OUT/gpu-tests.txt" | tee -a "$OUT/check.log" >&2
fi

# 3. Side-by-side measurements.
DATA="$WORK/data"
step "calibration data" 60 "$PY" tools/gpu_bench.py data --out "$DATA" --samples "$SAMPLES" > /dev/null
for shape in "${SHAPES[@]}"; do
    M="$WORK/$shape"
    rm -rf "$M" "$M-pruned"
    step "$shape: random checkpoint" 240 "$PY" tools/gpu_bench.py model --shape "$shape" --out "$M" --device "$DEVICE" \
        > "$OUT/$shape-model.json" || continue
    step "$shape: similarity, interlace" 180 "$BIN" similarity --model "$M" --data "$DATA/data.json" \
        --samples "$SAMPLES" --device "$DEVICE" --out "$WORK/$shape-sim.json" > "$OUT/$shape-sim-ours.txt" 2>"$OUT/$shape-sim-ours.err"
    "$PY" - "$OUT/$shape-sim-ours.txt" > "$OUT/$shape-sim-ours.json" <<'EOF'
import json, re, sys
text = open(sys.argv[1]).read()
m = re.search(r"(\d+) samples scored.*?model loaded in ([\d.]+) s, samples read and scored in ([\d.]+) s \(([\d.]+) s per sample\)", text, re.S)
print(json.dumps({"samples": int(m[1]), "load_seconds": float(m[2]), "seconds": float(m[3]), "seconds_per_sample": float(m[4])} if m else {}))
EOF
    step "$shape: similarity, transformers (authors' pipeline)" 240 "$PY" tools/gpu_bench.py similarity --model "$M" \
        --data "$DATA/data.json" --samples "$SAMPLES" --device "$DEVICE" > "$OUT/$shape-sim-torch.json" 2>"$OUT/$shape-sim-torch.err"
    # Latency on the 2B shape (the 8B one would need its pruned copy written: time).
    if [ "$shape" != 8b ]; then
        step "$shape: plan and prune 25 %" 120 bash -c "'$BIN' plan --similarity '$WORK/$shape-sim.json' --ratio 0.25 \
            --out '$WORK/$shape-plan.json' > '$OUT/$shape-plan.txt' && '$BIN' prune --model '$M' \
            --plan '$WORK/$shape-plan.json' --out '$M-pruned' >> '$OUT/$shape-plan.txt'"
        step "$shape: latency, interlace" 180 "$BIN" latency --model "$M" --compare "$M-pruned" --image "$DATA/0.jpg" \
            --runs "$RUNS" --new-tokens "$NEW" --device "$DEVICE" --json "$OUT/$shape-latency-ours.json" \
            > "$OUT/$shape-latency-ours.txt" 2>&1
        for tag in dense pruned; do
            dir="$M"; [ "$tag" = pruned ] && dir="$M-pruned"
            step "$shape: latency, transformers ($tag)" 180 "$PY" tools/gpu_bench.py latency --model "$dir" \
                --image "$DATA/0.jpg" --runs "$RUNS" --new-tokens "$NEW" --device "$DEVICE" \
                > "$OUT/$shape-latency-torch-$tag.json" 2>"$OUT/$shape-latency-torch-$tag.err"
        done
        rm -rf "$M-pruned"
    fi
    rm -rf "$M"
done
"$PY" tools/gpu_bench.py report --dir "$OUT" --shapes "${SHAPES[@]}" | tee -a "$OUT/check.log"
