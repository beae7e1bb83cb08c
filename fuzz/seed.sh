#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ with the repository's own good files (test fixtures, and a
# sim.json/plan.json made by the release binary). Run from the repository root after
# `cargo build --release`.
set -euo pipefail
F=tests/fixtures
C=fuzz/corpus
B=target/release/interlace
mkdir -p $C/{safetensors,config_json,jpeg,image,chat_template,tokenizer_json,llava,finevision_parquet,vlmevalkit_tsv,predictions_xlsx,sim_json,plan_json}
# safetensors: the headers of the tiny models (the target pads the data with zeros).
for f in $F/models/tiny-a/model.safetensors $F/models/tiny-b/model-0000*.safetensors; do
  n=$(od -An -t u8 -N 8 "$f" | tr -d ' ')
  head -c $((8 + n)) "$f" > $C/safetensors/$(basename $(dirname $f))-$(basename $f .safetensors).header
done
cp $F/models/tiny-a/config.json $C/config_json/tiny-a.json
cp $F/models/tiny-b/config.json $C/config_json/tiny-b.json
cp $F/images/*.jpg $F/truncated/*.jpg $C/jpeg/
cp $F/images/* $F/truncated/*.jpg $F/truncated/*.png $C/image/
cp $F/models/tiny-a/chat_template.jinja $C/chat_template/tiny-a.jinja
cp tools/qwen3_vl_chat_template.jinja $C/chat_template/qwen3-vl.jinja
cp $F/models/tiny-a/tokenizer.json $C/tokenizer_json/tiny-a.json
cp $F/train/data.json $C/llava/data.json
head -c 4000 demo/model/training_log.jsonl > $C/llava/not-llava.jsonl
cp $F/data/finevision/subset_a/*.parquet $F/data/bad/*.parquet $C/finevision_parquet/
cp $F/bench/*.tsv $C/vlmevalkit_tsv/
cp $F/vlmevalkit/*.xlsx $C/predictions_xlsx/
tmp=$(mktemp -d)
$B similarity --model $F/models/tiny-a --data $F/train/data.json --samples 2 --out $tmp/sim.json > /dev/null 2>&1
cp $tmp/sim.json $C/sim_json/
for s in interlace random consecutive; do
  $B plan --similarity $tmp/sim.json --ratio 0.25 --strategy $s --out $tmp/plan-$s.json > /dev/null
  cp $tmp/plan-$s.json $C/plan_json/
done
rm -rf "$tmp"
du -sh $C/*
