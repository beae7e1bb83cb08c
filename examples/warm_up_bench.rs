//! Writes the training-only warm-up families (SynthBasic, SynthBasicPOPE, ...) as
//! VLMEvalKit benchmarks, for a look at what a model has learned on the easy forms:
//! `OUT/<Family>.tsv` for each, from the benchmark split of seed SEED (rows no training
//! set holds), with the task after a colon in the printed `--bench` arguments.
//!
//! ```sh
//! cargo run --release --example warm_up_bench -- OUT [--rows 80] [--seed 42]
//! interlace eval --model demo/model $(cat OUT/bench-args) --out OUT/report.json
//! ```

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use interlace::synth::bench_tsv;
use interlace::synth::tasks::Family;

fn main() -> Result<()> {
    let usage = "usage: warm_up_bench OUT [--rows N] [--seed S]";
    let mut args = std::env::args().skip(1);
    let (mut out, mut rows, mut seed) = (None, 80usize, 42u64);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rows" => rows = args.next().context(usage)?.parse().context("--rows")?,
            "--seed" => seed = args.next().context(usage)?.parse().context("--seed")?,
            _ if out.is_none() && !a.starts_with("--") => out = Some(PathBuf::from(a)),
            _ => bail!(usage),
        }
    }
    let out = out.context(usage)?;
    std::fs::create_dir_all(&out).with_context(|| format!("{}: cannot create", out.display()))?;
    let mut bench_args = Vec::new();
    for family in Family::WARM_UPS {
        let (text, chance) = bench_tsv(seed, family, rows)?;
        let path = out.join(format!("{}.tsv", family.name()));
        std::fs::write(&path, text).with_context(|| format!("{}: cannot write", path.display()))?;
        let task = serde_json::to_value(family.task())?;
        let task = task.as_str().context("a task name")?.to_string();
        println!(
            "{}: {rows} rows, chance {:.1} %",
            path.display(),
            100.0 * chance
        );
        bench_args.push(format!("--bench {}:{task}", path.display()));
    }
    let args_path = out.join("bench-args");
    std::fs::write(&args_path, bench_args.join(" ") + "\n")
        .with_context(|| format!("{}: cannot write", args_path.display()))?;
    Ok(())
}
