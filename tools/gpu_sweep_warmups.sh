#!/bin/bash
# Dev only: the two GPU recipe sweeps of session 6 (README, "Easy forms of every question,
# and bigger steps"), one device call each, several recipes side by side on one GPU.
#
#   interlace synth --out /tmp/sw --seed 42 --captions --warm-ups --train-rows 2000 --bench-rows 10
#   MODEL_DIR=<a pretrain init dir or demo/model> TRAIN_DIR=/tmp/sw/train OUT=<logs> \
#       bash tools/gpu_sweep_warmups.sh small   # steps of 8/16, 420 s each, 4 recipes
#   ... bash tools/gpu_sweep_warmups.sh large   # steps of 64, 230 s each, 3 recipes
#
# MODEL_DIR gives the config, tokenizer and processor only. Each recipe logs per-family
# teacher-forced accuracy on 60 held-out rows to $OUT/NAME.jsonl.
set -eu
: "${MODEL_DIR:?}" "${TRAIN_DIR:?}" "${OUT:?}"
W=SynthBasic,SynthBasicPOPE,SynthBasicMCQ,SynthBasicCount,SynthBasicText,SynthBasicChart,SynthBasicHR
case "${1:-}" in
small) S=420 ARGS="--workers 2" ;;
large) S=230 ARGS="--workers 4 --warmup 100" ;;
*) echo "usage: $0 small|large" >&2; exit 2 ;;
esac
T="python3 tools/torch_grounding_sweep.py $MODEL_DIR $TRAIN_DIR --seconds $S --heldout 60 --threads 2 $ARGS"
run() { n=$1; shift; $T --name "$n" --log "$OUT/$n.jsonl" "$@" > "$OUT/$n.out" 2>&1 & }
if [ "$1" = small ]; then
  run W600 --batch 8 --lr 2e-3 --eval-every 300 --first-families $W --first-steps 600
  run W1500 --batch 8 --lr 2e-3 --eval-every 300 --first-families $W --first-steps 1500
  run M --batch 8 --lr 2e-3 --eval-every 300
  run W600b16 --batch 16 --lr 2e-3 --eval-every 150 --first-families $W --first-steps 300
else
  run M64 --batch 64 --lr 2e-3 --eval-every 100
  run C64 --batch 64 --lr 2e-3 --eval-every 100 --first-families SynthBasic --first-steps 100
  run W64 --batch 64 --lr 2e-3 --eval-every 100 --first-families $W --first-steps 150
fi
wait
for f in "$OUT"/*.out; do echo "== $f"; tail -1 "$f" | cut -c1-900; done
