#!/usr/bin/env bash
# The fine-tuning budget sweep of demo/README.md: steps x learning rate on the pruned demo
# model, everything else as `interlace run` does it. One `interlace run --out BASE` makes
# the synthetic data, the plan, the pruned model and the dense and pruned evaluations; each
# setting then reuses those stages (run skips a stage whose output is there) and only
# fine-tunes and evaluates. Appends one line per setting to OUT/sweep.tsv:
#   seed steps lr conversations seconds(fine-tuning) relative(pruned) relative(fine-tuned)
# Usage, from the repository root after `cargo build --release`:
#   bash tools/demo_budget_sweep.sh OUT SEED "STEPS..." "LRS..."
set -euo pipefail
OUT=${1:?out dir}
SEED=${2:-42}
STEPS=${3:-"50 100 150"}
LRS=${4:-"1e-4 2e-4 4e-4"}
B=${B:-target/release/interlace} # B=/path/to/interlace: another build
BATCH=32 # run's --batch-size 16 x --grad-accum 2
mkdir -p "$OUT"
BASE=$OUT/base-$SEED
# The shared stages: fine-tuning on the fewest samples a step needs (1 step), then removed.
if [ ! -f "$BASE/eval/pruned.json" ]; then
  $B run --out "$BASE" --seed "$SEED" --samples $BATCH --warmup-ratio 0 > "$OUT/base-$SEED.log" 2>&1
fi
rel() { # relative performance of a report against the dense one
  python3 - "$1" "$BASE/eval/dense.json" <<'PY'
import json, sys
r, d = (json.load(open(p)) for p in sys.argv[1:3])
ds = {b["name"]: b["score"] for b in d["benchmarks"]}
ratios = [b["score"] / ds[b["name"]] for b in r["benchmarks"] if ds.get(b["name"])]
print(f"{100 * sum(ratios) / len(ratios):.1f}")
PY
}
[ -f "$OUT/sweep.tsv" ] || printf "seed\tsteps\tlr\tconversations\tfinetune_s\tpruned_rel\tfinetuned_rel\n" > "$OUT/sweep.tsv"
for steps in $STEPS; do
  for lr in $LRS; do
    d=$OUT/s$SEED-$steps-$lr
    [ -f "$d/eval/finetuned.json" ] && continue
    rm -rf "$d" && mkdir -p "$d"
    for f in data sim.json plan.json pruned eval; do cp -r "$BASE/$f" "$d/"; done
    rm -f "$d/eval/finetuned.json"
    n=$((steps * BATCH))
    start=$(date +%s.%N)
    $B run --out "$d" --seed "$SEED" --samples $n --lr "$lr" > "$d.log" 2>&1
    secs=$(grep -o "fine-tune done in [0-9.]*" "$d.log" | grep -o "[0-9.]*$")
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$SEED" "$steps" "$lr" "$n" "$secs" \
      "$(rel "$BASE/eval/pruned.json")" "$(rel "$d/eval/finetuned.json")" | tee -a "$OUT/sweep.tsv"
    rm -rf "$d/pruned" "$d/data" "$d/finetuned.train"
  done
done
