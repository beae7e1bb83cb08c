//! `interlace run`: the whole INTERLACE pipeline in one command — (synthetic data) →
//! similarity → plan → prune → fine-tune → evaluation of the dense, pruned and fine-tuned
//! models → a report directory. With `--compare`, the paper's comparison of selection
//! strategies on the same model, data and fine-tuning budget.
//!
//! Every stage writes its output under `--out` atomically (a temporary name renamed when
//! complete) and is skipped when that output is already there, so a run that stops or is
//! killed continues where it was by running the same command again; fine-tuning itself
//! resumes from its last checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::eval::bars::{grouped_bars_svg, Series};
use crate::eval::benchmarks::{BenchSpec, Benchmark};
use crate::eval::evaluate::{evaluate_model_dir, open_benchmarks, EvalOptions};
use crate::eval::report::EvalReport;
use crate::eval::stats;
use crate::model::weights;
use crate::prune::{FinetunePolicy, Plan, Strategy};
use crate::recipes::finetune::{state_dir, FinetuneArgs};
use crate::recipes::plan::PlanArgs;
use crate::recipes::similarity::SimilarityArgs;

/// The built-in demo model, relative to the repository root.
pub const DEMO_MODEL: &str = "demo/model";

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Model to prune [default: the built-in demo model, demo/model].
    #[arg(long, value_parser = crate::hub::model_arg)]
    pub model: Option<PathBuf>,
    /// Calibration and fine-tuning data (LLaVA JSON/JSONL, FineVision Parquet or a directory
    /// of them). Default: the synthetic data set of `interlace synth`, generated into
    /// OUT/data with --seed (its benchmarks are then the default --bench).
    #[arg(long, value_name = "FILE|DIR", value_parser = crate::hub::data_arg)]
    pub data: Option<PathBuf>,
    /// Without --data: write the synthetic training rows with bare answers (the option
    /// letter, Yes/No) instead of worked ones (`synth --worked`: the option's text, what
    /// the image shows before Yes/No), the form the demo model was last trained on.
    /// Both are scored the same; this only changes what calibration and fine-tuning see.
    #[arg(long, conflicts_with = "data")]
    pub plain_answers: bool,
    /// Benchmarks to evaluate on, FILE.tsv or FILE.tsv:TASK (see `interlace eval`); repeat
    /// for several. Needed with --data; default: the synthetic benchmarks.
    #[arg(long = "bench", value_name = "FILE[:TASK]")]
    pub benches: Vec<BenchSpec>,
    /// Share of decoder layers to drop.
    #[arg(long, default_value_t = 0.25)]
    pub ratio: f64,
    /// How the layers to drop (and to fine-tune) are chosen (--compare runs them all).
    #[arg(long, value_enum, default_value = "interlace")]
    pub strategy: Strategy,
    /// Output directory: every stage's files and the report. Running again with the same
    /// --out continues a stopped run and reuses what is done.
    #[arg(long, default_value = "interlace-run")]
    pub out: PathBuf,
    /// Calibration conversations for the similarity analysis (and for SLEB).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub calib_samples: usize,
    /// Fine-tuning budget in optimizer steps: STEPS x --batch-size x --grad-accum
    /// conversations from the data, one epoch [default without --data: 200, chosen by the
    /// sweep in demo/README.md; with --data: --portion 0.01 instead].
    #[arg(long, value_name = "STEPS", conflicts_with_all = ["portion", "samples"])]
    pub steps: Option<usize>,
    /// Share of each data source to fine-tune on [default with --data: 0.01, the paper's
    /// 1 % of FineVision]. What recovers is the number of optimizer steps, not the share:
    /// the paper's 1 % is about 240 K conversations, thousands of steps; 1 % of the demo's
    /// synthetic data is 10 steps, which recover nothing.
    #[arg(long, conflicts_with = "samples")]
    pub portion: Option<f64>,
    /// Fine-tune on this many conversations in all instead of --portion or --steps.
    #[arg(long, value_name = "N")]
    pub samples: Option<usize>,
    /// Which rows of each source fine-tuning and calibration use: random (drawn with
    /// --seed) or first (in file order, as the INTERLACE authors prepare their data).
    #[arg(long, value_enum, default_value = "random")]
    pub take: crate::data::Take,
    /// Peak fine-tuning learning rate [default without --data: 2e-4, chosen by the sweep
    /// in demo/README.md for the 12 M-parameter demo model; with --data: 1e-5, the paper's,
    /// for 2B-8B models].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Conversations per micro-batch.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 2)]
    pub grad_accum: usize,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Share of the optimizer steps over which the learning rate warms up from 0 (the
    /// paper's 0.03). With very few steps the warm-up can cover them all; the fine-tuning
    /// stage then refuses to run (nothing would change), and 0 is the way out.
    #[arg(long, default_value_t = 0.03)]
    pub warmup_ratio: f64,
    /// Heal by distillation from the dense model (`finetune --distill`): every pruned
    /// model's fine-tuning (not Dense-FT's) mixes cross-entropy with the KL divergence
    /// from the dense model's next-token distributions.
    #[arg(long)]
    pub distill: bool,
    /// Temperature of --distill.
    #[arg(long, default_value_t = 1.0, requires = "distill")]
    pub distill_temperature: f64,
    /// Weight of the distillation loss against cross-entropy (--distill).
    #[arg(long, default_value_t = 0.5, requires = "distill")]
    pub distill_weight: f64,
    /// Prune and heal in K rounds to the same ratio (the iterative schedule of
    /// Minitron-style pipelines): each round analyses the current model, drops its share of
    /// the layers and fine-tunes on its share of the budget (the same total as one round).
    /// Rounds live in OUT/rounds/round-I/; the last one is the run's pruned and fine-tuned
    /// model.
    #[arg(long, value_name = "K", default_value_t = 1, conflicts_with_all = ["compare", "sweep"])]
    pub rounds: usize,
    /// Seed of the synthetic data, the sample choices and the random strategy.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Evaluate only the first N rows of each benchmark [default: every row, except that
    /// without --data and --bench the dense, pruned and fine-tuned models of the main run
    /// are evaluated on the first 100 of the synthetic benchmarks' 200 and --compare on all
    /// 200].
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Also run the paper's comparison: Dense, Dense-FT and every strategy (SLEB, ShortGPT,
    /// consecutive, random, interlace-oa, interlace-tn, INTERLACE) with and without the
    /// same fine-tuning, at each of --compare-ratios, every fine-tuned row and the random
    /// strategy repeated over --compare-seeds. Reports each method's mean with a 95 %
    /// bootstrap interval (over benchmark rows and seeds), its retention against Dense and
    /// Dense-FT, and a paired test of INTERLACE-FT against every other method. Writes
    /// compare.md/.json/.svg. Long: on the demo model with the default budget 1 h 46 min
    /// measured on 2 cores, partly alongside builds (about 1.5 h alone; README.md);
    /// `--limit 20 --compare-seeds 1 --steps 20` is a 4-minute smoke test.
    #[arg(long)]
    pub compare: bool,
    /// Pruning ratios of --compare (the paper's headline ratio; `--compare-ratios 0.25,0.1`
    /// adds its second: over an hour more on the demo model, estimated, not measured).
    #[arg(long, value_delimiter = ',', default_value = "0.25")]
    pub compare_ratios: Vec<f64>,
    /// Seeds of --compare: every fine-tuning (which conversations, in which order) and the
    /// random strategy's choice are repeated with --seed, --seed + 1, ... (the data, the
    /// benchmarks and the other strategies' plans stay those of --seed).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub compare_seeds: usize,
    /// Also prune and heal (--strategy, the same fine-tuning budget) at each of these
    /// ratios and measure quality against time to first token: writes sweep.md, sweep.json
    /// and sweep.svg (relative performance of the pruned and the fine-tuned model against
    /// TTFT, the dense model at ratio 0). TTFT is the median of 5 runs on one image of the
    /// data with the prompt "Describe this image in detail.", on this run's device.
    #[arg(long, value_delimiter = ',', value_name = "RATIOS")]
    pub sweep: Vec<f64>,
    /// Fine-tuning and evaluation threads (`finetune --workers`, `eval --workers`;
    /// default: one per core, at most --batch-size). With more than one, every tensor op of the run is single-threaded,
    /// evaluation included: faster on a model as small as the demo's, slower on large
    /// ones, where `--workers 1` keeps candle's multi-threaded ops.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Where every stage runs and in what precision (see `interlace forward --help`;
    /// fine-tuning in bf16 keeps f32 master weights, see `interlace finetune --help`).
    #[command(flatten)]
    pub placement: crate::recipes::placement::DeviceArgs,
}

/// Where the demo model is: `demo/model` under the working directory, else in the source
/// tree this program was built from.
pub fn default_model() -> PathBuf {
    let local = PathBuf::from(DEMO_MODEL);
    if local.join("config.json").exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(DEMO_MODEL)
}

/// Fine-tuning budget of the demo (no --data): optimizer steps and peak learning rate,
/// chosen by the sweep of demo/README.md (tools/demo_budget_sweep.sh).
pub const DEMO_STEPS: usize = 200;
pub const DEMO_LR: f64 = 2e-4;
/// Rows of each synthetic benchmark `run` writes: what `--compare` evaluates on.
pub const COMPARE_ROWS: usize = 200;
/// Rows of each synthetic benchmark the main run's three models are evaluated on (the first
/// of the COMPARE_ROWS; the same rows as `interlace synth`'s default 100-row files).
pub const DEMO_EVAL_ROWS: usize = 100;
/// With --data: the paper's 1 % of every source and its learning rate.
pub const PAPER_PORTION: f64 = 0.01;
pub const PAPER_LR: f64 = 1e-5;

/// Rows of each benchmark the main run's evaluations and --compare's read (None: all).
/// The synthetic benchmarks hold COMPARE_ROWS rows; the main run reads the first
/// DEMO_EVAL_ROWS of them (the rows of `interlace synth`'s default files), --compare all.
/// --limit sets both; a user's own benchmarks are read whole by both.
pub fn eval_limits(args: &RunArgs) -> (Option<usize>, Option<usize>) {
    let synthetic_benches = args.data.is_none() && args.benches.is_empty();
    (
        args.limit.or(synthetic_benches.then_some(DEMO_EVAL_ROWS)),
        args.limit,
    )
}

/// What a run fine-tunes on and how hard, resolved from the flags and their defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Conversations in all (None: `portion` of every source).
    pub samples: Option<usize>,
    pub portion: f64,
    pub lr: f64,
    /// Where the budget comes from, for the report.
    pub why: String,
}

impl Budget {
    pub fn resolve(args: &RunArgs) -> Result<Self> {
        let per_step = args.batch_size * args.grad_accum;
        let demo = args.data.is_none();
        let lr = args.lr.unwrap_or(if demo { DEMO_LR } else { PAPER_LR });
        if !(lr > 0.0 && lr.is_finite()) {
            bail!("--lr must be a positive number, got {lr}");
        }
        let portion = args.portion.unwrap_or(PAPER_PORTION);
        let (samples, why) = match (args.samples, args.steps, args.portion) {
            (Some(n), _, _) => (Some(n), format!("--samples {n}")),
            (None, Some(steps), _) => (
                Some(steps * per_step),
                format!("--steps {steps} x {per_step} conversations per step"),
            ),
            (None, None, Some(p)) => (None, format!("--portion {p} of each source")),
            (None, None, None) if demo => (
                Some(DEMO_STEPS * per_step),
                format!(
                    "the demo's default budget: {DEMO_STEPS} steps x {per_step} conversations (demo/README.md's sweep)"
                ),
            ),
            (None, None, None) => (
                None,
                format!("the paper's {} % of each source", PAPER_PORTION * 100.0),
            ),
        };
        if samples == Some(0) {
            bail!("the fine-tuning budget is 0 conversations ({why})");
        }
        Ok(Self {
            samples,
            portion,
            lr,
            why,
        })
    }
}

/// One benchmark's metadata for the report (from the synthetic manifest when there is one).
#[derive(Debug, Clone, Default)]
struct BenchInfo {
    category: Option<String>,
    chance: Option<f64>,
}

struct Run<'a> {
    args: &'a RunArgs,
    model: PathBuf,
    data: PathBuf,
    specs: Vec<BenchSpec>,
    info: BTreeMap<String, BenchInfo>,
    /// The benchmarks, opened once per row limit.
    benches: BTreeMap<Option<usize>, Vec<Benchmark>>,
    /// Rows of each benchmark of the main run's evaluations, and of --compare's.
    main_limit: Option<usize>,
    compare_limit: Option<usize>,
    /// Seconds per stage that ran in this invocation (reused stages are absent).
    timings: Vec<(String, f64)>,
    /// Fine-tuning and evaluation workers (resolved `--workers`).
    workers: usize,
    /// Where the model runs outside fine-tuning (resolved `--device`, `--dtype`).
    placement: crate::model::device::Placement,
    /// The fine-tuning budget (resolved `--steps`, `--portion`, `--samples`, `--lr`).
    budget: Budget,
    /// `--rounds`: what each round dropped and trained on, for the report.
    rounds_note: Option<String>,
}

/// Runs `f` unless `done` exists already; logs and times it.
fn stage(
    timings: &mut Vec<(String, f64)>,
    label: &str,
    done: &Path,
    f: impl FnOnce() -> Result<String>,
) -> Result<()> {
    if done.exists() {
        eprintln!("run: {label}: already done ({})", done.display());
        return Ok(());
    }
    eprintln!("run: {label} ...");
    let t = Instant::now();
    let text = f().with_context(|| format!("stage '{label}'"))?;
    eprint!("{text}");
    let secs = t.elapsed().as_secs_f64();
    eprintln!("run: {label} done in {secs:.1} s");
    timings.push((label.to_string(), secs));
    Ok(())
}

fn settings(
    args: &RunArgs,
    budget: &Budget,
    model: &Path,
    data: &Path,
    specs: &[BenchSpec],
) -> Value {
    let mut v = json!({
        "model": model.display().to_string(),
        "data": data.display().to_string(),
        "benches": specs.iter().map(|s| s.path.display().to_string()).collect::<Vec<_>>(),
        "ratio": args.ratio,
        "strategy": args.strategy.name(),
        "calib_samples": args.calib_samples,
        "portion": budget.portion,
        "samples": budget.samples,
        "lr": budget.lr,
        "batch_size": args.batch_size,
        "grad_accum": args.grad_accum,
        "epochs": args.epochs,
        "seed": args.seed,
        "limit": args.limit,
        "plain_answers": args.data.is_none() && args.plain_answers,
    });
    // Recorded only when not the default, so that runs made before these options existed
    // still continue.
    if args.take != crate::data::Take::Random {
        v["take"] = json!(args.take.name());
    }
    if args.rounds > 1 {
        v["rounds"] = json!(args.rounds);
    }
    if args.distill {
        v["distill"] = json!({
            "temperature": args.distill_temperature,
            "weight": args.distill_weight,
        });
    }
    v
}

/// Records the run's settings in OUT/run.json, or checks them against an earlier run's.
fn check_settings(out: &Path, now: &Value) -> Result<()> {
    let path = out.join("run.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let before: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", path.display()))?;
        if let (Some(b), Some(n)) = (before.as_object(), now.as_object()) {
            for (k, v) in n {
                if b.get(k) != Some(v) {
                    bail!(
                        "{}: holds a run with {k} = {}, not {v}; choose another --out or remove it",
                        out.display(),
                        b.get(k).cloned().unwrap_or(Value::Null)
                    );
                }
            }
        }
        return Ok(());
    }
    crate::fsio::write_atomic(&path, serde_json::to_string_pretty(now)?.as_bytes())
}

/// Generates the synthetic data set into OUT/data (once) and returns the training data
/// and the benchmarks with their categories and chance levels.
fn synthetic_data(
    out: &Path,
    seed: u64,
    worked: bool,
    timings: &mut Vec<(String, f64)>,
) -> Result<(PathBuf, Vec<BenchSpec>, BTreeMap<String, BenchInfo>)> {
    use crate::synth::{write_synth, SynthManifest, SynthOptions};
    let dir = out.join("data");
    stage(timings, "synthetic data", &dir, || {
        let m = write_synth(
            &dir,
            &SynthOptions {
                seed,
                worked,
                bench_rows: COMPARE_ROWS,
                ..Default::default()
            },
        )?;
        Ok(format!(
            "synth: training data in {}, {} benchmarks\n",
            m.train.display(),
            m.benchmarks.len()
        ))
    })?;
    let m = SynthManifest::read(&dir)?;
    let specs = m
        .benchmarks
        .iter()
        .map(|b| BenchSpec::with_task(&b.file, b.task))
        .collect();
    let info = m
        .benchmarks
        .iter()
        .map(|b| {
            (
                b.name.clone(),
                BenchInfo {
                    category: Some(b.category.clone()),
                    chance: Some(b.chance * 100.0),
                },
            )
        })
        .collect();
    Ok((m.train, specs, info))
}

impl Run<'_> {
    fn benches(&mut self, limit: Option<usize>) -> Result<&[Benchmark]> {
        if !self.benches.contains_key(&limit) {
            let opened = open_benchmarks(&self.specs, limit)?;
            self.benches.insert(limit, opened);
        }
        Ok(&self.benches[&limit])
    }

    /// Evaluates `model` on the first `limit` rows of every benchmark (once; a later run
    /// reads the report back, and evaluates again if the report holds other rows, as one
    /// of a run made before the benchmarks grew).
    fn eval(
        &mut self,
        label: &str,
        model: &Path,
        out: &Path,
        limit: Option<usize>,
    ) -> Result<EvalReport> {
        let rows: Vec<(String, usize)> = self
            .benches(limit)?
            .iter()
            .map(|b| (b.name.clone(), b.rows.len()))
            .collect();
        let stale = out.exists() && {
            let old = EvalReport::read(out)?;
            let old_rows: Vec<(String, usize)> = old
                .benchmarks
                .iter()
                .map(|b| (b.name.clone(), b.rows))
                .collect();
            old_rows != rows
        };
        if stale {
            eprintln!(
                "run: evaluate {label}: {} holds other rows than these benchmarks'; evaluating again",
                out.display()
            );
        }
        if !out.exists() || stale {
            let gpu = self.placement.is_gpu();
            let opts = EvalOptions {
                limit,
                workers: if gpu { 1 } else { self.workers },
                batch: if gpu { 16 } else { 1 },
                image_backend: self.args.placement.image_backend,
                ..Default::default()
            };
            let t = Instant::now();
            eprintln!("run: evaluate {label} ...");
            let placement = self.placement.clone();
            let report = evaluate_model_dir(model, self.benches(limit)?, &opts, &placement)?;
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("{}: cannot create", dir.display()))?;
            }
            report.write(out)?;
            let secs = t.elapsed().as_secs_f64();
            eprintln!("run: evaluate {label} done in {secs:.1} s");
            self.timings.push((format!("evaluate {label}"), secs));
        } else {
            eprintln!("run: evaluate {label}: already done ({})", out.display());
        }
        EvalReport::read(out)
    }

    /// The similarity analysis of `model` (the dense model, or a round's model).
    fn similarity(&mut self, model: &Path, path: &Path) -> Result<()> {
        let mut args: SimilarityArgs = crate::recipes::defaults(&[
            ("model", model.as_os_str()),
            ("data", self.data.as_os_str()),
            ("out", path.as_os_str()),
        ])?;
        args.portion = 1.0;
        args.samples = Some(self.args.calib_samples);
        args.seed = self.args.seed;
        args.take = self.args.take;
        args.placement = self.args.placement.clone();
        stage(&mut self.timings, "similarity", path, || {
            crate::recipes::similarity::run(&args)
        })
    }

    /// The plan for `model` (whose similarity scores are `sim`; SLEB runs `model` itself);
    /// `seed` draws the random strategy's layers.
    fn plan(
        &mut self,
        model: &Path,
        sim: &Path,
        (strategy, ratio, seed): (Strategy, f64, u64),
        out: &Path,
    ) -> Result<()> {
        let sleb = strategy == Strategy::Sleb;
        let args = PlanArgs {
            similarity: Some(sim.to_path_buf()),
            pack1: None,
            pack2: None,
            pack3: None,
            ratio,
            strategy,
            finetune_policy: FinetunePolicy::Paired,
            seed,
            out: out.to_path_buf(),
            model: sleb.then(|| model.to_path_buf()),
            data: sleb.then(|| self.data.clone()),
            samples: self.args.calib_samples,
            max_length: 8192,
            batch: None,
            placement: self.args.placement.clone(),
        };
        let label = format!("plan ({strategy}, ratio {ratio})");
        stage(&mut self.timings, &label, out, || {
            crate::recipes::plan::run(&args)
        })
    }

    fn prune(&mut self, model: &Path, plan: &Path, out: &Path) -> Result<()> {
        let model = model.to_path_buf();
        stage(&mut self.timings, "prune", out, || {
            crate::recipes::prune::run(&model, plan, out)
        })
    }

    /// Fine-tunes `model` (its interlace_plan.json, or `plan`) into `out`, drawing and
    /// ordering the conversations with `seed`; resumes a fine-tuning that was stopped.
    /// With --distill, a pruned model (no `plan` given) is healed by distillation from the
    /// dense model.
    fn finetune(
        &mut self,
        label: &str,
        (model, plan): (&Path, Option<&Path>),
        out: &Path,
        seed: u64,
    ) -> Result<()> {
        let a = self.args;
        let mut args: FinetuneArgs = crate::recipes::defaults(&[
            ("model", model.as_os_str()),
            ("data", self.data.as_os_str()),
            ("out", out.as_os_str()),
        ])?;
        args.plan = plan.map(Path::to_path_buf);
        args.portion = self.budget.portion;
        args.samples = self.budget.samples;
        args.take = a.take;
        args.lr = self.budget.lr;
        args.batch_size = a.batch_size;
        args.grad_accum = a.grad_accum;
        args.epochs = a.epochs;
        args.warmup_ratio = a.warmup_ratio;
        args.seed = seed;
        // Checkpoints every 20 steps, so a stopped run continues where it was.
        args.save_every = Some(20);
        args.resume = state_dir(out).exists();
        // The teacher is the dense model, for the pruned models' fine-tuning.
        args.distill = (a.distill && plan.is_none()).then(|| self.model.clone());
        args.distill_temperature = a.distill_temperature;
        args.distill_weight = a.distill_weight;
        args.workers = Some(self.workers);
        args.placement = self.args.placement.clone();
        stage(&mut self.timings, label, out, || {
            crate::recipes::finetune::run(&args)
        })
    }

    /// plan → prune → evaluate → fine-tune → evaluate one strategy at one ratio, in `dir`
    /// (plan.json, pruned/, eval-pruned.json, ft/, eval-ft.json), evaluating on the first
    /// `limit` rows and planning and fine-tuning with `seed`. Returns the plan and the
    /// reports of the pruned and the fine-tuned model. A plan that leaves nothing to tune
    /// (consecutive, when the dropped block ends the stack) counts the pruned model as its
    /// fine-tuned one.
    fn prune_and_heal(
        &mut self,
        sim: &Path,
        (strategy, ratio, seed): (Strategy, f64, u64),
        dir: &Path,
        limit: Option<usize>,
    ) -> Result<(Plan, EvalReport, EvalReport)> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        let plan_path = dir.join("plan.json");
        let model = self.model.clone();
        self.plan(&model, sim, (strategy, ratio, seed), &plan_path)?;
        let plan = Plan::read(&plan_path)?;
        self.prune(&model, &plan_path, &dir.join("pruned"))?;
        let label = format!("{strategy} {ratio}");
        let before = self.eval(
            &label,
            &dir.join("pruned"),
            &dir.join("eval-pruned.json"),
            limit,
        )?;
        let after = self.heal(&label, &plan, &before, dir, (dir, limit, seed))?;
        Ok((plan, before, after))
    }

    /// Fine-tunes the pruned model `pruned_dir/pruned` with `seed` into `dir/ft` and
    /// evaluates it into `dir/eval-ft.json`; a plan that fine-tunes no layer gives the
    /// pruned model's report `before`.
    fn heal(
        &mut self,
        label: &str,
        plan: &Plan,
        before: &EvalReport,
        pruned_dir: &Path,
        (dir, limit, seed): (&Path, Option<usize>, u64),
    ) -> Result<EvalReport> {
        if plan.finetune.is_empty() {
            eprintln!(
                "run: {label}: the plan fine-tunes no layer; its -FT row is the pruned model"
            );
            return Ok(before.clone());
        }
        self.finetune(
            &format!("fine-tune {label} (seed {seed})"),
            (&pruned_dir.join("pruned"), None),
            &dir.join("ft"),
            seed,
        )?;
        self.eval(
            &format!("{label} + FT (seed {seed})"),
            &dir.join("ft"),
            &dir.join("eval-ft.json"),
            limit,
        )
    }

    fn info(&self, name: &str) -> BenchInfo {
        self.info.get(name).cloned().unwrap_or_default()
    }
}

/// Total parameters of a checkpoint, from its tensor headers.
fn param_count(dir: &Path) -> Result<usize> {
    let infos = weights::read_tensor_infos(&weights::weight_files(dir)?)?;
    Ok(crate::recipes::inspect::count_params(&infos).total())
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.1}")).unwrap_or_else(|| "–".into())
}

fn rel_pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1} %", v * 100.0))
        .unwrap_or_else(|| "–".into())
}

/// Mean over benchmarks of score ÷ baseline score (docs/SPEC.md's relative performance).
fn relative(report: &EvalReport, baseline: &EvalReport) -> Option<f64> {
    let scores: BTreeMap<String, f64> = baseline
        .benchmarks
        .iter()
        .filter_map(|b| Some((b.name.clone(), b.score?)))
        .collect();
    crate::eval::report::relative_performance(report, "baseline", &scores).mean
}

fn final_loss(model_dir: &Path) -> Option<(usize, f64)> {
    let text = std::fs::read_to_string(model_dir.join(crate::model::dir::LOG_FILE)).ok()?;
    let last: Value = serde_json::from_str(text.lines().last()?).ok()?;
    Some((
        last.get("step")?.as_u64()? as usize,
        last.get("loss")?.as_f64()?,
    ))
}

pub fn run(args: &RunArgs) -> Result<String> {
    if !(0.0..1.0).contains(&args.ratio) {
        bail!("--ratio must be in [0, 1), got {}", args.ratio);
    }
    // Before any tensor op: more than one worker makes the whole run single-threaded.
    let placement = args.placement.resolve()?;
    let workers =
        crate::recipes::finetune::training_workers(args.workers, args.batch_size, &placement)?;
    let model = args.model.clone().unwrap_or_else(default_model);
    if !model.join("config.json").exists() {
        bail!(
            "{}: no config.json; give --model DIR (a Hugging Face Qwen3-VL directory){}",
            model.display(),
            if args.model.is_none() {
                " or run from the interlace repository, where demo/model is"
            } else {
                ""
            }
        );
    }
    let num_layers = crate::model::ModelConfig::from_dir(&model)?
        .text
        .num_hidden_layers;
    let drops = crate::recipes::plan::drop_count_of_some(num_layers, args.ratio)?;
    if args.rounds == 0 || args.rounds > drops {
        bail!(
            "--rounds {}: ratio {} drops {drops} of {num_layers} layers; rounds must be between 1 and {drops} (fewer than one per round otherwise)",
            args.rounds,
            args.ratio
        );
    }
    if args.compare && args.compare_seeds == 0 {
        bail!("--compare-seeds must be at least 1");
    }
    if let Some(bad) = args
        .compare_ratios
        .iter()
        .find(|r| !(**r > 0.0 && **r < 1.0))
    {
        bail!("--compare-ratios: ratio {bad} is not in (0, 1)");
    }
    if let Some(bad) = args.sweep.iter().find(|r| !(**r > 0.0 && **r < 1.0)) {
        bail!("--sweep: ratio {bad} is not in (0, 1)");
    }
    if args.distill {
        crate::train::trainer::Distill::check_settings(
            args.distill_temperature,
            args.distill_weight,
        )?;
    }
    let out = args.out.clone();
    // One pipeline per --out at a time (its stages lock their own outputs too).
    let _lock = crate::outlock::OutputLock::acquire(&out)?;
    std::fs::create_dir_all(&out).with_context(|| format!("{}: cannot create", out.display()))?;
    let mut timings = Vec::new();
    let (data, specs, info) = match &args.data {
        Some(d) => {
            if args.benches.is_empty() {
                bail!("with --data, give the benchmarks to evaluate on with --bench FILE.tsv");
            }
            (d.clone(), args.benches.clone(), BTreeMap::new())
        }
        None => {
            let (train, mut specs, info) =
                synthetic_data(&out, args.seed, !args.plain_answers, &mut timings)?;
            if !args.benches.is_empty() {
                specs = args.benches.clone();
            }
            (train, specs, info)
        }
    };
    let budget = Budget::resolve(args)?;
    let mut now = settings(args, &budget, &model, &data, &specs);
    if placement.dtype != candle_core::DType::F32 {
        // Scores computed in another precision must not be mixed into an earlier run's.
        now["dtype"] = json!(crate::model::device::dtype_name(placement.dtype));
    }
    check_settings(&out, &now)?;
    let synthetic_benches = args.data.is_none() && args.benches.is_empty();
    let (main_limit, compare_limit) = eval_limits(args);
    let mut r = Run {
        args,
        model,
        data,
        specs,
        info,
        benches: BTreeMap::new(),
        main_limit,
        compare_limit,
        timings,
        workers,
        placement,
        budget,
        rounds_note: None,
    };
    // Bad benchmark files fail here, before any long stage.
    r.benches(main_limit)?;
    if args.compare {
        let short: Vec<String> = r
            .benches(args.limit)?
            .iter()
            .filter(|b| b.rows.len() < COMPARE_ROWS)
            .map(|b| format!("{} ({})", b.name, b.rows.len()))
            .collect();
        if !short.is_empty() && args.limit.is_none() {
            eprintln!(
                "run: compare: fewer than {COMPARE_ROWS} rows in {}: the intervals will be wide{}",
                short.join(", "),
                if synthetic_benches {
                    " (this run's synthetic data predates 200-row benchmarks; a new --out writes them)"
                } else {
                    ""
                }
            );
        }
    }

    let sim = out.join("sim.json");
    let plan_path = out.join("plan.json");
    let pruned = out.join("pruned");
    let tuned = out.join("finetuned");
    let model_dir = r.model.clone();
    r.similarity(&model_dir, &sim)?;
    let (plan_path, pruned, tuned) = if args.rounds > 1 {
        rounds(&mut r, &sim, num_layers)?
    } else {
        r.plan(
            &model_dir,
            &sim,
            (args.strategy, args.ratio, args.seed),
            &plan_path,
        )?;
        r.prune(&model_dir, &plan_path, &pruned)?;
        r.finetune("fine-tune", (&pruned, None), &tuned, args.seed)?;
        (plan_path, pruned, tuned)
    };
    let limit = r.main_limit;
    let dense = r.eval("dense", &model_dir, &out.join("eval/dense.json"), limit)?;
    let before = r.eval("pruned", &pruned, &out.join("eval/pruned.json"), limit)?;
    let after = r.eval(
        "pruned + fine-tuned",
        &tuned,
        &out.join("eval/finetuned.json"),
        limit,
    )?;
    let plan = Plan::read(&plan_path)?;

    let mut text = write_report(&r, &plan, [&dense, &before, &after], &pruned, &tuned)?;
    if args.compare {
        text.push_str(&compare(&mut r, &sim)?);
    }
    if !args.sweep.is_empty() {
        let main = SweepPoint {
            ratio: args.ratio,
            dir: out.clone(),
            plan,
            pruned: before,
            tuned: after,
        };
        text.push_str(&sweep(&mut r, &sim, &dense, main)?);
    }
    Ok(text)
}

/// OUT/report.md, OUT/report.json and OUT/scores.svg for the main run; returns a summary.
fn write_report(
    r: &Run,
    plan: &Plan,
    [dense, before, after]: [&EvalReport; 3],
    pruned: &Path,
    tuned: &Path,
) -> Result<String> {
    let out = &r.args.out;
    let names: Vec<String> = dense.benchmarks.iter().map(|b| b.name.clone()).collect();
    let series = [
        ("dense", dense),
        ("pruned", before),
        ("pruned + fine-tuned", after),
    ];
    let chance: Vec<Option<f64>> = names.iter().map(|n| r.info(n).chance).collect();
    let svg = grouped_bars_svg(
        &format!(
            "{} at ratio {} ({} of {} layers dropped)",
            plan.strategy,
            plan.ratio,
            plan.drop.len(),
            plan.num_layers
        ),
        "score (%)",
        &names,
        &series
            .iter()
            .map(|(n, rep)| Series {
                name: n.to_string(),
                scores: names.iter().map(|b| rep.score(b)).collect(),
                intervals: vec![],
            })
            .collect::<Vec<_>>(),
        &chance,
    );
    crate::fsio::write_atomic(&out.join("scores.svg"), svg.as_bytes())?;
    let curve = crate::model::dir::CURVE_FILE;
    if tuned.join(curve).exists() {
        let bytes = std::fs::read(tuned.join(curve))?;
        crate::fsio::write_atomic(&out.join(curve), &bytes)?;
    }

    let (p_dense, p_pruned) = (param_count(&r.model)?, param_count(pruned)?);
    let rel_before = relative(before, dense);
    let rel_after = relative(after, dense);
    let loss = final_loss(tuned);
    let mut md = format!(
        "# interlace run\n\n\
         Model `{}` ({} decoder layers, {:.2} M parameters) pruned with **{}** at ratio {}: \
         dropped layers {:?}, fine-tuned {:?}, anchors {:?} → {} layers, {:.2} M parameters \
         ({:.1} % fewer).\n\n",
        r.model.display(),
        plan.num_layers,
        p_dense as f64 / 1e6,
        plan.strategy,
        plan.ratio,
        plan.drop,
        plan.finetune,
        plan.anchors,
        plan.kept.len(),
        p_pruned as f64 / 1e6,
        100.0 * (1.0 - p_pruned as f64 / p_dense as f64)
    );
    md.push_str(&format!(
        "Data: `{}`{}; similarity on {} calibration conversations; fine-tuning on {} for {} epoch(s), lr {}, batch {} × {}{}.\n\n",
        r.data.display(),
        match (&r.args.data, r.args.plain_answers) {
            (Some(_), _) => "",
            (None, false) => " (synthetic, worked answers)",
            (None, true) => " (synthetic, plain answers)",
        },
        r.args.calib_samples,
        match r.budget.samples {
            Some(n) => format!("{n} conversations ({})", r.budget.why),
            None => r.budget.why.clone(),
        },
        r.args.epochs,
        r.budget.lr,
        r.args.batch_size,
        r.args.grad_accum,
        loss.map(|(s, l)| format!(" ({s} steps, last loss {l:.4})"))
            .unwrap_or_default()
    ));
    if let Some(note) = &r.rounds_note {
        md.push_str(note);
    }
    md.push_str("| benchmark | category | task | chance | dense | pruned | pruned + fine-tuned |\n|---|---|---|---|---|---|---|\n");
    for b in &dense.benchmarks {
        let i = r.info(&b.name);
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            b.name,
            i.category.as_deref().unwrap_or("–"),
            b.task,
            pct(i.chance),
            pct(b.score),
            pct(before.score(&b.name)),
            pct(after.score(&b.name))
        ));
    }
    md.push_str(&format!(
        "| **relative to dense** | | | | 100.0 % | {} | {} |\n\n",
        rel_pct(rel_before),
        rel_pct(rel_after)
    ));
    md.push_str(
        "Pictures: `sim.svg` (layer similarity), `plan.svg` (each layer's role), \
         `loss.svg` (fine-tuning loss), `scores.svg` (scores per benchmark).\n\
         Details: `eval/*.md` (every benchmark's metrics), `finetuned/training_log.jsonl`.\n\n",
    );
    if !r.timings.is_empty() {
        md.push_str("| stage (this invocation) | seconds |\n|---|---|\n");
        for (s, t) in &r.timings {
            md.push_str(&format!("| {s} | {t:.1} |\n"));
        }
    }
    let json = json!({
        "model": r.model.display().to_string(),
        "data": r.data.display().to_string(),
        "plan": plan,
        "parameters": {"dense": p_dense, "pruned": p_pruned},
        "scores": names.iter().map(|n| (n.clone(), json!({
            "category": r.info(n).category,
            "chance": r.info(n).chance,
            "dense": dense.score(n),
            "pruned": before.score(n),
            "finetuned": after.score(n),
        }))).collect::<serde_json::Map<_, _>>(),
        "relative_to_dense": {"pruned": rel_before, "finetuned": rel_after},
        "finetune_last": loss.map(|(s, l)| json!({"step": s, "loss": l})),
        "timings_s": r.timings.iter().map(|(s, t)| (s.clone(), json!(t))).collect::<serde_json::Map<_, _>>(),
    });
    crate::fsio::write_atomic(&out.join("report.md"), md.as_bytes())?;
    crate::fsio::write_atomic(
        &out.join("report.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    Ok(format!(
        "{}relative to dense: pruned {}, pruned + fine-tuned {}\nreport: {}\n",
        md.lines()
            .skip(2)
            .take(1)
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
        rel_pct(rel_before),
        rel_pct(rel_after),
        out.join("report.md").display()
    ))
}

/// `run --rounds K`: K rounds of similarity → plan → prune → fine-tune, each dropping its
/// share of the layers the ratio drops (as evenly as possible, earlier rounds first) from
/// the model the previous round healed, and fine-tuning on its share of the budget. The
/// first round uses the dense model's similarity scores `sim`. Returns the composed plan
/// (original layer indices), the last round's pruned and fine-tuned models.
fn rounds(r: &mut Run, sim: &Path, num_layers: usize) -> Result<(PathBuf, PathBuf, PathBuf)> {
    use crate::model::dir::PLAN_FILE;
    let k = r.args.rounds;
    // (1 ≤ k ≤ total was checked before the run began.)
    let total = crate::prune::drop_count(num_layers, r.args.ratio)?;
    let budget = r.budget.clone();
    let base = r.args.out.join("rounds");
    let mut model = r.model.clone();
    let mut n = num_layers;
    let mut dropped_before: Vec<usize> = Vec::new();
    let mut lines = Vec::new();
    let mut last = None;
    for i in 0..k {
        let d = total * (i + 1) / k - total * i / k;
        let dir = base.join(format!("round-{}", i + 1));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        let round_sim = if i == 0 {
            sim.to_path_buf()
        } else {
            let p = dir.join("sim.json");
            r.similarity(&model, &p)?;
            p
        };
        // A ratio whose drop count (rounded down) is exactly this round's share.
        let ratio = (d as f64 + 0.5) / n as f64;
        let plan_path = dir.join("plan.json");
        r.plan(
            &model,
            &round_sim,
            (r.args.strategy, ratio, r.args.seed),
            &plan_path,
        )?;
        let pruned = dir.join("pruned");
        r.prune(&model, &plan_path, &pruned)?;
        r.budget.samples = budget.samples.map(|s| s * (i + 1) / k - s * i / k);
        r.budget.portion = budget.portion / k as f64;
        let tuned = dir.join("finetuned");
        let label = format!("fine-tune (round {} of {k})", i + 1);
        let healed = r.finetune(&label, (&pruned, None), &tuned, r.args.seed);
        r.budget = budget.clone();
        healed?;
        let composed = Plan::read(pruned.join(PLAN_FILE))?;
        let new: Vec<usize> = composed
            .drop
            .iter()
            .copied()
            .filter(|l| !dropped_before.contains(l))
            .collect();
        lines.push(format!(
            "round {}: dropped original layers {new:?} ({n} → {} layers), fine-tuned {} on {}",
            i + 1,
            n - d,
            composed
                .finetune
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            match budget.samples {
                Some(s) => format!("{} conversations", s * (i + 1) / k - s * i / k),
                None => format!("{} % of each source", budget.portion / k as f64 * 100.0),
            }
        ));
        dropped_before = composed.drop.clone();
        model = tuned.clone();
        n -= d;
        last = Some((pruned, tuned));
    }
    r.rounds_note = Some(format!(
        "Pruned and healed in {k} rounds (`--rounds {k}`, the budget split between them; the \
         pruned column below is the last round's model before its fine-tuning):\n\n{}\n\n",
        lines
            .iter()
            .map(|l| format!("- {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    ));
    let (pruned, tuned) = last.context("no round ran")?;
    Ok((pruned.join(PLAN_FILE), pruned, tuned))
}

/// One ratio of `run --sweep`: its plan, where its models are, and their reports.
struct SweepPoint {
    ratio: f64,
    /// The directory holding `pruned/` and the fine-tuned model.
    dir: PathBuf,
    plan: Plan,
    pruned: EvalReport,
    tuned: EvalReport,
}

/// An image of the data (the first sample that has one), saved as PNG for the latency
/// measurements of `run --sweep`.
fn latency_image(data: &Path, seed: u64, out: &Path) -> Result<PathBuf> {
    let portion = crate::data::choose_portion(data, 1.0, Some(64), seed, crate::data::Take::First)?;
    for sample in portion.iter() {
        let Ok(Ok(sample)) = sample else { continue };
        if let Some(src) = sample.images.first() {
            let img = src.load()?;
            let path = out.join("ttft-image.png");
            let tmp = out.join(".ttft-image.png.tmp");
            img.save_with_format(&tmp, image::ImageFormat::Png)
                .with_context(|| format!("{}: cannot write", tmp.display()))?;
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("{}: cannot write", path.display()))?;
            return Ok(path);
        }
    }
    bail!(
        "{}: none of the first samples has an image to measure time to first token with",
        data.display()
    )
}

/// `run --sweep`: quality against time to first token over pruning ratios.
fn sweep(r: &mut Run, sim: &Path, dense: &EvalReport, main: SweepPoint) -> Result<String> {
    let out = r.args.out.join("sweep");
    std::fs::create_dir_all(&out).with_context(|| format!("{}: cannot create", out.display()))?;
    let num_layers = crate::model::config::ModelConfig::from_dir(&r.model)?
        .text
        .num_hidden_layers;
    let mut points = Vec::new();
    for &ratio in &r.args.sweep.clone() {
        if (ratio - main.ratio).abs() < 1e-12 {
            continue;
        }
        if crate::prune::drop_count(num_layers, ratio)? == 0 {
            eprintln!("run: sweep: ratio {ratio} of {num_layers} layers drops no layer; skipped");
            continue;
        }
        let dir = out.join(format!("ratio-{ratio}"));
        let (plan, pruned, tuned) = r.prune_and_heal(
            sim,
            (r.args.strategy, ratio, r.args.seed),
            &dir,
            r.main_limit,
        )?;
        points.push(SweepPoint {
            ratio,
            dir,
            plan,
            pruned,
            tuned,
        });
    }
    if r.args.sweep.iter().any(|&x| (x - main.ratio).abs() < 1e-12) {
        points.push(main);
    }
    points.sort_by(|a, b| a.ratio.total_cmp(&b.ratio));

    // Time to first token of every model on one image of the data.
    let image = latency_image(&r.data, r.args.seed, &out)?;
    let latency = crate::recipes::latency::LatencyArgs {
        model: r.model.clone(),
        compare: None,
        image: vec![image.clone()],
        prompt: "Describe this image in detail.".into(),
        runs: 5,
        warmup: 1,
        new_tokens: 2,
        max_length: crate::model::config::DEFAULT_MAX_LENGTH,
        json: None,
        placement: r.args.placement.clone(),
    };
    let timed = |dir: &Path| -> Result<f64> {
        let t = crate::recipes::latency::time_model(dir, &latency, &r.placement)?;
        Ok(t.ttft.as_secs_f64() * 1e3)
    };
    eprintln!(
        "run: sweep: timing the first token of {} models ...",
        points.len() + 1
    );
    let dense_ttft = timed(&r.model)?;
    let mut rows = Vec::new();
    for p in &points {
        // The fine-tuned model has the pruned one's shape; time the one that exists.
        let model_dir = if p.dir == r.args.out {
            p.dir.join("finetuned")
        } else if p.plan.finetune.is_empty() {
            p.dir.join("pruned")
        } else {
            p.dir.join("ft")
        };
        let ttft = timed(&model_dir)?;
        rows.push((
            p,
            ttft,
            relative(&p.pruned, dense),
            relative(&p.tuned, dense),
        ));
    }

    let pct1 = |x: Option<f64>| x.map(|v| v * 100.0);
    let mut md = format!(
        "# Quality against time to first token ({} at each ratio)\n\n\
         Time to first token: median of 5 runs (after 1 warm-up) on `{}` with the prompt \
         \"Describe this image in detail.\", on {}. Relative = mean over benchmarks of \
         score ÷ the dense model's score. Every fine-tuning used the same budget: {}.\n\n\
         | ratio | decoder layers | dropped | TTFT (ms) | speed-up | pruned | pruned + fine-tuned |\n\
         |---|---|---|---|---|---|---|\n\
         | 0 (dense) | {num_layers} | – | {dense_ttft:.1} | 1.00× | 100.0 % | – |\n",
        r.args.strategy,
        image.display(),
        r.placement.describe(),
        r.budget.why
    );
    let mut json_points = Vec::new();
    for (p, ttft, before, after) in &rows {
        md.push_str(&format!(
            "| {} | {} | {:?} | {ttft:.1} | {:.2}× | {} | {} |\n",
            p.ratio,
            p.plan.kept.len(),
            p.plan.drop,
            dense_ttft / ttft,
            rel_pct(*before),
            rel_pct(*after)
        ));
        json_points.push(json!({
            "ratio": p.ratio,
            "decoder_layers": p.plan.kept.len(),
            "dropped": p.plan.drop,
            "fine_tuned": p.plan.finetune,
            "ttft_ms": ttft,
            "speedup": dense_ttft / ttft,
            "relative_to_dense": {"pruned": before, "finetuned": after},
        }));
    }
    let json = json!({
        "strategy": r.args.strategy.name(),
        "image": image.display().to_string(),
        "device": r.placement.describe(),
        "budget": r.budget.why,
        "dense": {"decoder_layers": num_layers, "ttft_ms": dense_ttft},
        "points": json_points,
    });
    // One line per model kind: the dense point, then each ratio's (tuned: fine-tuned).
    let line = |name: &str, tuned: bool| {
        let mut pts = vec![(dense_ttft, 100.0, "dense".to_string())];
        pts.extend(rows.iter().filter_map(|(p, ttft, before, after)| {
            let rel = if tuned { after } else { before };
            Some((*ttft, pct1(*rel)?, format!("{}", p.ratio)))
        }));
        crate::eval::bars::Line {
            name: name.to_string(),
            points: pts,
        }
    };
    let svg = crate::eval::bars::xy_chart_svg(
        &format!(
            "{} on {}: quality against time to first token",
            r.args.strategy,
            r.model.display()
        ),
        "time to first token (ms)",
        "relative to dense (%)",
        &[line("pruned", false), line("pruned + fine-tuned", true)],
    );
    crate::fsio::write_atomic(&r.args.out.join("sweep.md"), md.as_bytes())?;
    crate::fsio::write_atomic(
        &r.args.out.join("sweep.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    crate::fsio::write_atomic(&r.args.out.join("sweep.svg"), svg.as_bytes())?;
    Ok(format!(
        "{}sweep: {} (and sweep.json, sweep.svg)\n",
        md.lines()
            .skip(4)
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
        r.args.out.join("sweep.md").display()
    ))
}

/// The strategies of the paper's comparison, in its table's order.
const COMPARED: [Strategy; 7] = [
    Strategy::Sleb,
    Strategy::ShortGpt,
    Strategy::Consecutive,
    Strategy::Random,
    Strategy::InterlaceOa,
    Strategy::InterlaceTn,
    Strategy::Interlace,
];

/// One row of the comparison: a method at a ratio, with one plan and report per seed it
/// ran with (Dense and the deterministic pruned rows: one).
struct Row {
    method: String,
    ratio: Option<f64>,
    seeds: Vec<u64>,
    plans: Vec<Plan>,
    reports: Vec<EvalReport>,
}

impl Row {
    fn tuned(&self) -> bool {
        self.method.ends_with("-FT")
    }
}

/// Bootstrap draws of the intervals and permutations of the paired tests in compare.md.
const BOOTSTRAP_DRAWS: usize = 2000;
const TEST_PERMUTATIONS: usize = 10_000;

/// `base` for the run's own seed, `base/seed-S` for another.
fn seed_dir(base: &Path, seed: u64, first: u64) -> PathBuf {
    if seed == first {
        base.to_path_buf()
    } else {
        base.join(format!("seed-{seed}"))
    }
}

fn compare(r: &mut Run, sim: &Path) -> Result<String> {
    let out = r.args.out.join("compare");
    let limit = r.compare_limit;
    let first = r.args.seed;
    let seeds: Vec<u64> = (0..r.args.compare_seeds as u64)
        .map(|i| first + i)
        .collect();
    let model = r.model.clone();
    let dense = r.eval("Dense", &model, &out.join("dense.json"), limit)?;
    let mut rows = vec![Row {
        method: "Dense".into(),
        ratio: None,
        seeds: vec![first],
        plans: vec![],
        reports: vec![dense],
    }];
    // Dense-FT: every decoder layer fine-tuned with the same data and settings.
    let num_layers = crate::model::config::ModelConfig::from_dir(&r.model)?
        .text
        .num_hidden_layers;
    let dense_dir = out.join("dense-ft");
    std::fs::create_dir_all(&dense_dir)?;
    let dense_plan = dense_dir.join("plan.json");
    if !dense_plan.exists() {
        Plan::from_drops("dense-ft", 0.0, num_layers, vec![], FinetunePolicy::All)?
            .write(&dense_plan)?;
    }
    let mut reports = Vec::new();
    for &s in &seeds {
        let dir = seed_dir(&dense_dir, s, first);
        r.finetune(
            &format!("fine-tune Dense-FT (seed {s})"),
            (&model, Some(&dense_plan)),
            &dir.join("model"),
            s,
        )?;
        reports.push(r.eval(
            &format!("Dense-FT (seed {s})"),
            &dir.join("model"),
            &dir.join("eval.json"),
            limit,
        )?);
    }
    rows.push(Row {
        method: "Dense-FT".into(),
        ratio: None,
        seeds: seeds.clone(),
        plans: vec![],
        reports,
    });
    for &ratio in &r.args.compare_ratios.clone() {
        if crate::prune::drop_count(num_layers, ratio)? == 0 {
            eprintln!("run: compare: ratio {ratio} of {num_layers} layers drops no layer; skipped");
            continue;
        }
        for strategy in COMPARED {
            let base = out.join(format!("ratio-{ratio}")).join(strategy.name());
            let (mut plans, mut befores, mut afters) = (vec![], vec![], vec![]);
            if strategy == Strategy::Random {
                // Each seed draws its own layers.
                for &s in &seeds {
                    let dir = seed_dir(&base, s, first);
                    let (plan, before, after) =
                        r.prune_and_heal(sim, (strategy, ratio, s), &dir, limit)?;
                    plans.push(plan);
                    befores.push(before);
                    afters.push(after);
                }
            } else {
                let (plan, before, after) =
                    r.prune_and_heal(sim, (strategy, ratio, first), &base, limit)?;
                afters.push(after);
                for &s in &seeds[1..] {
                    let dir = base.join(format!("seed-{s}"));
                    let label = format!("{strategy} {ratio}");
                    afters.push(r.heal(&label, &plan, &before, &base, (&dir, limit, s))?);
                }
                plans.push(plan);
                befores.push(before);
            }
            let name = match strategy {
                Strategy::Sleb => "SLEB".to_string(),
                Strategy::ShortGpt => "ShortGPT".to_string(),
                Strategy::Interlace => "INTERLACE".to_string(),
                s => s.name().to_string(),
            };
            let random = strategy == Strategy::Random;
            rows.push(Row {
                method: name.clone(),
                ratio: Some(ratio),
                seeds: if random { seeds.clone() } else { vec![first] },
                plans: plans.clone(),
                reports: befores,
            });
            rows.push(Row {
                method: format!("{name}-FT"),
                ratio: Some(ratio),
                seeds: seeds.clone(),
                plans,
                reports: afters,
            });
        }
    }
    write_compare(r, &rows)
}

fn interval_json(x: Option<stats::Interval>) -> Value {
    x.map(|i| json!({"estimate": i.estimate, "low": i.low, "high": i.high}))
        .unwrap_or(Value::Null)
}

fn rel_interval(x: Option<stats::Interval>) -> (String, String) {
    match x {
        Some(i) => (
            format!("{:.1} %", i.estimate * 100.0),
            format!("{:.1} – {:.1}", i.low * 100.0, i.high * 100.0),
        ),
        None => ("–".into(), "–".into()),
    }
}

/// A p-value for a table: 4 decimals, or "< 0.0001" at the resolution of the test.
fn p_text(p: f64) -> String {
    if p < 1e-4 {
        "< 0.0001".into()
    } else {
        format!("{p:.4}")
    }
}

fn write_compare(r: &mut Run, rows: &[Row]) -> Result<String> {
    use crate::eval::stats::{self, Design, Method};
    let out = r.args.out.clone();
    let benches = r.benches(r.compare_limit)?.to_vec();
    let names: Vec<String> = benches.iter().map(|b| b.name.clone()).collect();
    // Every row's counts per seed, benchmark and unit, for the intervals and the tests.
    let mut aggregates = Vec::new();
    let mut methods = Vec::new();
    for row in rows {
        let mut runs = Vec::new();
        for report in &row.reports {
            let mut per_bench = Vec::new();
            for bench in &benches {
                let b = report
                    .benchmarks
                    .iter()
                    .find(|b| b.name == bench.name)
                    .with_context(|| format!("{}: no report of {}", row.method, bench.name))?;
                let (agg, units) = crate::eval::report::score_units(bench, b)?;
                if aggregates.len() < benches.len() {
                    aggregates.push(agg);
                }
                per_bench.push(units);
            }
            runs.push(per_bench);
        }
        methods.push(Method {
            name: row.method.clone(),
            runs,
        });
    }
    let design = Design {
        benches: names.iter().cloned().zip(aggregates).collect(),
        methods,
    };
    // Rows 0 and 1 are Dense and Dense-FT.
    let summaries = stats::bootstrap(&design, &[0, 1], BOOTSTRAP_DRAWS, r.args.seed)?;
    // INTERLACE-FT at each ratio against every other row of that ratio and the dense rows.
    let mut tests = Vec::new();
    for (a, row) in rows.iter().enumerate() {
        if row.method != "INTERLACE-FT" {
            continue;
        }
        for (b, other) in rows.iter().enumerate() {
            if b == a || !(other.ratio.is_none() || other.ratio == row.ratio) {
                continue;
            }
            let seed = r.args.seed ^ ((a as u64) << 32 | b as u64);
            if let Some(t) = stats::paired_test(&design, (a, b, 0), TEST_PERMUTATIONS, seed)? {
                tests.push((a, b, t));
            }
        }
    }
    let holm = stats::holm(&tests.iter().map(|(_, _, t)| t.p).collect::<Vec<_>>());

    let ratio_text = |x: Option<f64>| x.map(|v| v.to_string()).unwrap_or_else(|| "–".into());
    let mut md = format!(
        "# The paper's comparison on this model\n\n\
         Every -FT row is fine-tuned with the same data and budget ({}; Dense-FT: every \
         decoder layer; pruned models: the plan's fine-tune layers). Fine-tuned rows and the \
         random strategy ran with seeds {} (which conversations, in which order; random: \
         which layers too), and a method's score pools its seeds' answers. Benchmarks: {}.\n\n\
         Relative = mean over benchmarks of score ÷ the reference's score. Intervals: 95 %, \
         percentile bootstrap over benchmark rows and seeds ({BOOTSTRAP_DRAWS} draws, the \
         same rows and seeds for every method).\n\n",
        r.budget.why,
        rows[1]
            .seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        benches
            .iter()
            .map(|b| format!("{} ({} rows)", b.name, b.rows.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    md.push_str(
        "| method | ratio | seeds | layers | dropped | tuned | rel. to Dense | 95 % interval | rel. to Dense-FT | 95 % interval |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut json_rows = Vec::new();
    for (row, sum) in rows.iter().zip(&summaries) {
        let plans = |f: &dyn Fn(&Plan) -> String| -> String {
            if row.plans.is_empty() {
                return "–".into();
            }
            let mut v: Vec<String> = row.plans.iter().map(f).collect();
            v.dedup();
            v.join(" / ")
        };
        let layers = if row.plans.is_empty() {
            "all".to_string()
        } else {
            plans(&|p| p.kept.len().to_string())
        };
        let dropped = plans(&|p| format!("{:?}", p.drop));
        let tuned = match (row.method.as_str(), row.tuned()) {
            ("Dense-FT", _) => "all".to_string(),
            (_, true) => plans(&|p| format!("{:?}", p.finetune)),
            _ => "–".into(),
        };
        let (d, di) = rel_interval(sum.relative[0]);
        let (f, fi) = rel_interval(sum.relative[1]);
        md.push_str(&format!(
            "| {} | {} | {} | {layers} | {dropped} | {tuned} | {d} | {di} | {f} | {fi} |\n",
            row.method,
            ratio_text(row.ratio),
            row.seeds.len(),
        ));
        json_rows.push(json!({
            "method": row.method,
            "ratio": row.ratio,
            "seeds": row.seeds,
            "plans": row.plans.iter().map(|p| json!({"drop": p.drop, "finetune": p.finetune})).collect::<Vec<_>>(),
            "scores": names.iter().zip(&sum.scores).map(|(n, s)| (n.clone(), interval_json(*s))).collect::<serde_json::Map<_, _>>(),
            "scores_per_seed": row.reports.iter().map(|rep| names.iter().map(|n| (n.clone(), json!(rep.score(n)))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
            "relative_to_dense": interval_json(sum.relative[0]),
            "relative_to_dense_ft": interval_json(sum.relative[1]),
        }));
    }
    md.push_str(&format!(
        "\n## INTERLACE-FT against every other method\n\n\
         Paired approximate randomization test over the benchmark rows ({TEST_PERMUTATIONS} \
         draws; each draw swaps the two methods' answers on every row with probability 1/2, \
         seeds pooled per row) of the difference in relative performance to Dense; p is \
         two-sided, and Holm's adjustment is over all {} tests.\n\n\
         | ratio | INTERLACE-FT against | INTERLACE-FT minus it (points) | p | p (Holm) |\n\
         |---|---|---|---|---|\n",
        tests.len()
    ));
    if tests.is_empty() {
        md.push_str(
            "No test: relative performance needs a benchmark on which Dense scored above 0.\n",
        );
    }
    let mut json_tests = Vec::new();
    for ((a, b, t), ph) in tests.iter().zip(&holm) {
        md.push_str(&format!(
            "| {} | {} | {:+.1} | {} | {} |\n",
            ratio_text(rows[*a].ratio),
            match rows[*b].ratio {
                Some(x) if rows[*b].method != "Dense" => format!("{} ({x})", rows[*b].method),
                _ => rows[*b].method.clone(),
            },
            t.difference * 100.0,
            p_text(t.p),
            p_text(*ph)
        ));
        json_tests.push(json!({
            "ratio": rows[*a].ratio,
            "against": rows[*b].method,
            "against_ratio": rows[*b].ratio,
            "difference": t.difference,
            "p": t.p,
            "p_holm": ph,
        }));
    }
    md.push_str("\n## Scores per benchmark, with 95 % intervals\n\n| method | ratio |");
    for n in &names {
        md.push_str(&format!(" {n} |"));
    }
    md.push_str("\n|---|---|");
    md.push_str(&"---|".repeat(names.len()));
    md.push('\n');
    for (row, sum) in rows.iter().zip(&summaries) {
        md.push_str(&format!("| {} | {} |", row.method, ratio_text(row.ratio)));
        for s in &sum.scores {
            md.push_str(&match s {
                Some(i) => format!(" {:.1} ({:.1}–{:.1}) |", i.estimate, i.low, i.high),
                None => " – |".into(),
            });
        }
        md.push('\n');
    }
    md.push_str(&format!(
        "\nChance levels: {}.\n",
        names
            .iter()
            .map(|n| format!("{n} {}", pct(r.info(n).chance)))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    // One group per method, one bar per ratio and reference, with its interval.
    let methods: Vec<String> = rows
        .iter()
        .filter(|row| row.ratio.is_some())
        .map(|row| row.method.clone())
        .fold(Vec::new(), |mut v, m| {
            if !v.contains(&m) {
                v.push(m);
            }
            v
        });
    let mut series = Vec::new();
    for &ratio in &r.args.compare_ratios {
        for (k, reference) in ["Dense", "Dense-FT"].iter().enumerate() {
            let cells: Vec<Option<stats::Interval>> = methods
                .iter()
                .map(|m| {
                    rows.iter()
                        .zip(&summaries)
                        .find(|(row, _)| &row.method == m && row.ratio == Some(ratio))
                        .and_then(|(_, s)| s.relative[k])
                })
                .collect();
            if cells.iter().all(Option::is_none) {
                continue;
            }
            series.push(Series {
                name: format!("ratio {ratio}, ÷ {reference}"),
                scores: cells
                    .iter()
                    .map(|c| c.map(|i| i.estimate * 100.0))
                    .collect(),
                intervals: cells
                    .iter()
                    .map(|c| c.map(|i| (i.low * 100.0, i.high * 100.0)))
                    .collect(),
            });
        }
    }
    let svg = grouped_bars_svg(
        "Relative performance to Dense and to Dense-FT (%), with 95 % intervals",
        "relative performance (%)",
        &methods,
        &series,
        &[],
    );
    crate::fsio::write_atomic(&out.join("compare.svg"), svg.as_bytes())?;
    crate::fsio::write_atomic(&out.join("compare.md"), md.as_bytes())?;
    crate::fsio::write_atomic(
        &out.join("compare.json"),
        serde_json::to_string_pretty(&json!({
            "budget": r.budget.why,
            "rows_per_benchmark": benches.iter().map(|b| (b.name.clone(), json!(b.rows.len()))).collect::<serde_json::Map<_, _>>(),
            "bootstrap_draws": BOOTSTRAP_DRAWS,
            "test_permutations": TEST_PERMUTATIONS,
            "rows": json_rows,
            "tests": json_tests,
        }))?
        .as_bytes(),
    )?;
    Ok(format!(
        "{md}\ncomparison: {}\n",
        out.join("compare.md").display()
    ))
}
