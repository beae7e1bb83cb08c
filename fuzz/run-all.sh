#!/usr/bin/env bash
# Runs every fuzz target for RUNS executions (default 1 000 000) one after the other and
# appends one line per target to fuzz/results.txt: target, executions, seconds, crashes.
# A crash stops that target (libFuzzer writes the input to fuzz/artifacts/<target>/); the
# script goes on with the next one. Usage, from the repository root:
#
#     bash fuzz/seed.sh                  # once: seeds from the test fixtures
#     bash fuzz/run-all.sh [RUNS] [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); RUSTC_BOOTSTRAP=1 lets it build on the
# stable toolchain. Built without a sanitizer (-s none): the parsers are safe Rust, and
# libFuzzer's coverage guidance is what matters here; panics and aborts are what it catches.
set -uo pipefail
RUNS=${1:-1000000}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(plan_json sim_json config_json llava chat_template vlmevalkit_tsv jpeg image \
           tokenizer_json safetensors finevision_parquet predictions_xlsx)
fi
export RUSTC_BOOTSTRAP=1
max_len() {
  case $1 in
    finevision_parquet|vlmevalkit_tsv|image|predictions_xlsx) echo 131072 ;;
    tokenizer_json|jpeg) echo 32768 ;;
    *) echo 16384 ;;
  esac
}
# Seconds one input may take before libFuzzer calls it a hang.
timeout_for() {
  case $1 in
    finevision_parquet) echo 60 ;;  # a known 28-second input of the parquet crate: README
    *) echo 20 ;;
  esac
}
for t in "${TARGETS[@]}"; do
  mkdir -p fuzz/corpus/$t fuzz/artifacts/$t fuzz/logs
  start=$(date +%s)
  cargo fuzz run -s none "$t" fuzz/corpus/$t -- -runs="$RUNS" -max_len="$(max_len $t)" \
    -rss_limit_mb=4096 -timeout="$(timeout_for $t)" -print_final_stats=1 > fuzz/logs/$t.log 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' fuzz/logs/$t.log | grep -o '[0-9]*$' | tail -1)
  crashes=$(ls fuzz/artifacts/$t | wc -l)
  echo "$t executions=${execs:-?} seconds=$secs exit=$rc artifacts=$crashes" | tee -a fuzz/results.txt
done
