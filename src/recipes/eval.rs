//! `interlace eval`: a model on benchmarks in VLMEvalKit's TSV format, scored with
//! VLMEvalKit's rule-based evaluators, written as `report.json` and `report.md`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::eval::benchmarks::BenchSpec;
use crate::eval::evaluate::{evaluate_model_dir, open_benchmarks, EvalOptions};
use crate::eval::report::{markdown_path, read_baseline_scores};

#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Hugging Face model directory, or a Hub repository id in the local cache
    /// (Org/Name[@revision], e.g. Qwen/Qwen3-VL-2B-Instruct).
    #[arg(long, required_unless_present = "predictions", value_parser = crate::hub::model_arg)]
    pub model: Option<PathBuf>,
    /// A VLMEvalKit TSV file, optionally with its task after a colon (FILE.tsv:mcq); repeat
    /// for several. Tasks: mcq, yorn, vqa, chartqa, ocrbench, count, count-number. Without
    /// one, the task follows from the file name as in VLMEvalKit (MMBench_DEV_EN.tsv is
    /// multiple choice, POPE.tsv yes/no, ChartQA_TEST.tsv ChartQA, ...), else from the
    /// columns (A and B: multiple choice, otherwise open VQA). Next to the report, eval
    /// writes each benchmark's predictions in VLMEvalKit's layout
    /// (OUT-STEM.predictions/NAME.tsv).
    #[arg(
        long = "bench",
        value_name = "FILE[:TASK]",
        required_unless_present = "predictions"
    )]
    pub benches: Vec<BenchSpec>,
    /// greedy-mixin: the prompts of VLMEvalKit's Qwen3-VL prompt mixin, greedy decoding,
    /// 32 new tokens (128 for OCRBench); deterministic. vlmevalkit: exactly VLMEvalKit's
    /// shipped config for Qwen3-VL: the datasets' own prompts, sampling (temperature 0.7,
    /// top-p 0.8, top-k 20, presence penalty 1.5) seeded by --seed, up to 16 384 new tokens
    /// (cut to what --max-length leaves after the prompt). The report says which ran.
    #[arg(long, value_enum, default_value = "greedy-mixin")]
    pub protocol: crate::eval::benchmarks::Protocol,
    /// Seed of --protocol vlmevalkit's sampling (each row has its own stream, so answers
    /// do not depend on --batch or --workers, up to the float rounding of batched products).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Score predictions without a model (instead of --model and --bench), optionally with
    /// a task after a colon; repeat for several. A .tsv or .xlsx in VLMEvalKit's layout, the
    /// benchmark's columns plus `prediction` (what VLMEvalKit's inference writes, or what
    /// eval writes next to its report); a file named MODEL_DATASET.xlsx, as VLMEvalKit names
    /// them, is the benchmark DATASET when that is a dataset VLMEvalKit knows. Or an earlier
    /// report.json: its answers re-scored with today's rules against the benchmark files it
    /// names (found as written, else next to the report), each with the task it was run
    /// with unless one is given.
    #[arg(
        long,
        value_name = "FILE[:TASK]",
        conflicts_with_all = ["model", "benches", "max_new_tokens", "min_pixels", "max_pixels", "workers", "batch"]
    )]
    pub predictions: Vec<BenchSpec>,
    /// A report.json of an earlier run (e.g. the dense model): adds each benchmark's score
    /// ÷ baseline score and their equal-weight mean (relative performance).
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// New tokens per answer [default: 32; 128 for OCRBench].
    #[arg(long, value_name = "N")]
    pub max_new_tokens: Option<usize>,
    /// Evaluate only the first N rows of each file (a quick look).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Least pixels per image after resizing, for every file [default: as VLMEvalKit
    /// resizes for Qwen3-VL: 4 x f x f with f = patch size x merge size (32 for Qwen3-VL);
    /// for OCRBench.tsv 10 x 10 x 32 x 32].
    #[arg(long, value_name = "N")]
    pub min_pixels: Option<usize>,
    /// Most pixels per image after resizing [default: 16384 x f x f].
    #[arg(long, value_name = "N")]
    pub max_pixels: Option<usize>,
    /// Where to write the JSON report; the Markdown summary goes next to it (.md).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// CPU only: threads that answer rows side by side, each with single-threaded tensor
    /// ops (default: one per core). 1: one row at a time with candle's multi-threaded ops.
    /// Answers do not depend on it. On a GPU rows are batched instead (--batch).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Rows answered together in one batched generation (the prompts packed for the
    /// first token, then decoded side by side) [default: 16 on a GPU, 1 on the CPU, where
    /// --workers answers rows side by side instead]. Answers do not depend on it beyond
    /// float rounding.
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    /// Most tokens of a row's prompt plus its answer; a longer row is not run and counts
    /// as a malformed row (memory grows with the square of the length). Never more than
    /// the model's max_position_embeddings.
    #[arg(long, default_value_t = crate::model::config::DEFAULT_MAX_LENGTH)]
    pub max_length: usize,
    #[command(flatten)]
    pub placement: crate::recipes::placement::DeviceArgs,
}

pub fn run(args: &EvalArgs) -> Result<String> {
    // Everything that can be checked cheaply is checked before the model loads: the
    // baseline, the output directory, the benchmark files.
    let baseline = args
        .baseline
        .as_ref()
        .map(|p| read_baseline_scores(p).map(|s| (p, s)))
        .transpose()?;
    if args.out.is_dir() {
        bail!(
            "{}: is a directory; --out names the JSON report file",
            args.out.display()
        );
    }
    if args.out.extension().is_some_and(|e| e == "md") {
        bail!(
            "{}: --out names the JSON report; the Markdown summary is written next to it as .md",
            args.out.display()
        );
    }
    if args.batch == Some(0) {
        bail!("--batch must be at least 1");
    }
    if !args.predictions.is_empty() {
        return score_predictions(args, baseline);
    }
    let Some(model) = &args.model else {
        bail!("give --model DIR and --bench FILE, or --predictions FILE");
    };
    if args.max_new_tokens == Some(0) {
        bail!("--max-new-tokens must be at least 1 (with 0 no row would be answered)");
    }
    let placement = args.placement.resolve()?;
    let (workers, batch) = if placement.is_gpu() {
        // One stream: rows are batched on the GPU, not answered by competing threads.
        if args.workers.is_some_and(|w| w > 1) {
            bail!("--workers: on a GPU rows are answered in batches (--batch), not by several threads");
        }
        (1, args.batch.unwrap_or(16))
    } else {
        (
            crate::workers::resolve(args.workers, usize::MAX)?,
            args.batch.unwrap_or(1),
        )
    };
    let opts = EvalOptions {
        max_new_tokens: args.max_new_tokens,
        limit: args.limit,
        min_pixels: args.min_pixels,
        max_pixels: args.max_pixels,
        workers,
        batch,
        max_length: Some(args.max_length),
        protocol: args.protocol,
        seed: args.seed,
        image_backend: args.placement.image_backend,
    };
    let mut benches = open_benchmarks(&args.benches, args.limit)?;
    for b in &mut benches {
        b.set_protocol(args.protocol);
    }
    // After the inputs are known good (nothing is left at --out by a bad one), before the
    // model loads (an uncreatable directory fails in seconds, not after the evaluation).
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create directory", dir.display()))?;
    }
    eprintln!(
        "eval: on {}, {} row(s) per batch, {workers} worker(s)",
        placement.describe(),
        batch
    );
    for b in &benches {
        eprintln!(
            "eval: {} — {} rows, task {} (from {}){}{}",
            b.name,
            b.rows.len(),
            b.task,
            b.task_from,
            if b.circular { ", circular" } else { "" },
            match b.malformed() {
                0 => String::new(),
                n => format!(", {n} malformed"),
            }
        );
    }
    let mut report = match evaluate_model_dir(model, &benches, &opts, &placement) {
        Ok(report) => report,
        Err(e) => {
            // The model failed part-way: keep what was answered before it, then fail.
            let Some(stopped) = e.downcast_ref::<crate::eval::report::EvalStopped>() else {
                return Err(e);
            };
            let mut partial = stopped.partial.clone();
            if let Some((path, scores)) = &baseline {
                partial.set_baseline(&path.display().to_string(), scores);
            }
            partial.write(&args.out)?;
            let answered: usize = partial.benchmarks.iter().map(|b| b.scored).sum();
            bail!(
                "{} (the report of the {answered} rows scored before it, marked incomplete, is in {})",
                crate::error_line(&e),
                args.out.display()
            );
        }
    };
    if let Some((path, scores)) = &baseline {
        report.set_baseline(&path.display().to_string(), scores);
    }
    report.write(&args.out)?;
    let mut written = Vec::new();
    for (bench, b) in benches.iter().zip(&report.benchmarks) {
        let path = predictions_path(&args.out, &bench.name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create directory", dir.display()))?;
        }
        let predictions: Vec<Option<String>> =
            b.results.iter().map(|r| r.prediction.clone()).collect();
        bench.write_predictions(&predictions, &path)?;
        written.push(path);
    }
    let mut text = summary(&report, &args.out);
    for p in written {
        text.push_str(&format!(
            "predictions (VLMEvalKit's layout): {}\n",
            p.display()
        ));
    }
    Ok(text)
}

/// Where eval writes a benchmark's predictions in VLMEvalKit's layout: next to the report,
/// `{report stem}.predictions/{benchmark}.tsv` (the benchmark's own name, so that
/// `--predictions` detects its task from the name as `--bench` does).
pub fn predictions_path(report: &std::path::Path, bench: &str) -> PathBuf {
    let stem = report
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    report
        .with_file_name(format!("{stem}.predictions"))
        .join(format!("{bench}.tsv"))
}

/// `eval --predictions`: scores prediction files as they are, no model.
fn score_predictions(
    args: &EvalArgs,
    baseline: Option<(&PathBuf, std::collections::BTreeMap<String, f64>)>,
) -> Result<String> {
    let mut benchmarks = Vec::new();
    // What a single report.json given alone carries over (its model, protocol, stop).
    let mut carried = None;
    for spec in &args.predictions {
        let is_report = spec
            .path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if is_report {
            let mut old = crate::eval::report::rescore_report(&spec.path, spec.task, args.limit)?;
            benchmarks.append(&mut old.benchmarks);
            carried = Some(old);
            continue;
        }
        let bench = crate::eval::Benchmark::open_predictions(spec, args.limit)?;
        let outcomes = bench.predictions()?;
        benchmarks.push(crate::eval::report::score_benchmark(
            &bench,
            &outcomes,
            bench.task.default_max_new_tokens(),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    if let Some(dup) = benchmarks.iter().find(|b| !names.insert(b.name.as_str())) {
        bail!(
            "benchmark {} is given twice in --predictions (each benchmark once per report)",
            dup.name
        );
    }
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create directory", dir.display()))?;
    }
    let listed = || {
        format!(
            "predictions: {}",
            args.predictions
                .iter()
                .map(|p| p.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let mut report = match carried.filter(|_| args.predictions.len() == 1) {
        // One report re-scored: still that model's report, under today's rules.
        Some(old) => crate::eval::EvalReport { benchmarks, ..old },
        None => crate::eval::EvalReport {
            model: listed(),
            benchmarks,
            relative: None,
            stopped: None,
            protocol: None,
        },
    };
    if let Some((path, scores)) = &baseline {
        report.set_baseline(&path.display().to_string(), scores);
    }
    report.write(&args.out)?;
    Ok(summary(&report, &args.out))
}

/// The lines eval prints: each benchmark's score and counts, the relative performance, where
/// the report is.
fn summary(report: &crate::eval::EvalReport, out: &std::path::Path) -> String {
    let mut text = String::new();
    for b in &report.benchmarks {
        text.push_str(&format!(
            "{}: {} {} ({} scored, {} malformed of {} rows)",
            b.name,
            b.metric,
            b.score
                .map(|s| format!("{s:.2}"))
                .unwrap_or_else(|| "–".into()),
            b.scored,
            b.malformed,
            b.rows
        ));
        if let Some(r) = report.relative.as_ref().and_then(|r| r.ratios.get(&b.name)) {
            text.push_str(&format!(", {:.1} % of baseline", r * 100.0));
        }
        text.push('\n');
    }
    if let Some(rel) = &report.relative {
        match rel.mean {
            Some(m) => text.push_str(&format!(
                "relative performance: {:.1} % (mean over {} benchmarks)\n",
                m * 100.0,
                rel.ratios.len()
            )),
            None => {
                text.push_str("relative performance: no benchmark in common with the baseline\n")
            }
        }
    }
    text.push_str(&format!(
        "report: {} and {}\n",
        out.display(),
        markdown_path(out).display()
    ));
    text
}
