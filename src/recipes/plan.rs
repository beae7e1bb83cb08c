//! `interlace plan`: similarity scores -> which layers to drop, fine-tune, anchor, freeze.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::data::{load_portion, Take};
use crate::model::Model;
use crate::processor::Processor;
use crate::progress::Progress;
use crate::prune::sleb::{self, calibration_loss, CalibrationExample};
use crate::prune::{
    drop_count, role_table, select, Plan, SelectOptions, SimilarityScores, Strategy,
};

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// sim.json from `interlace similarity`.
    #[arg(long, value_name = "FILE")]
    pub similarity: Option<PathBuf>,
    /// Reference scripts' pack-1 score file (instead of --similarity).
    #[arg(long, value_name = "FILE")]
    pub pack1: Option<PathBuf>,
    /// Reference scripts' pack-2 score file.
    #[arg(long, value_name = "FILE", requires = "pack1")]
    pub pack2: Option<PathBuf>,
    /// Reference scripts' pack-3 score file.
    #[arg(long, value_name = "FILE", requires = "pack2")]
    pub pack3: Option<PathBuf>,
    /// Share of decoder layers to drop: floor(layers x ratio) layers, 0 <= ratio < 1.
    #[arg(long, default_value_t = 0.25)]
    pub ratio: f64,
    /// How the layers to drop (and to fine-tune) are chosen.
    #[arg(long, value_enum, default_value = "interlace")]
    pub strategy: crate::prune::Strategy,
    /// Which kept layers to fine-tune: paired (the strategy's own), next (the layer after
    /// each dropped one), all, none.
    #[arg(long, value_enum, default_value = "paired")]
    pub finetune_policy: crate::prune::FinetunePolicy,
    /// Seed of the random strategy.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where to write plan.json.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// sleb only: the model whose layers are removed.
    #[arg(long, help_heading = "SLEB", value_parser = crate::hub::model_arg)]
    pub model: Option<PathBuf>,
    /// sleb only: calibration conversations (LLaVA JSON/JSONL, FineVision Parquet or a
    /// directory of them); the loss is next-token cross-entropy on their assistant turns.
    #[arg(long, value_name = "FILE|DIR", help_heading = "SLEB", value_parser = crate::hub::data_arg)]
    pub data: Option<PathBuf>,
    /// sleb only: number of calibration conversations, chosen at random with --seed.
    #[arg(long, value_name = "N", default_value_t = 32, help_heading = "SLEB")]
    pub samples: usize,
    /// sleb only: conversations are cut to this many tokens.
    #[arg(long, default_value_t = 8192, help_heading = "SLEB")]
    pub max_length: usize,
    /// sleb only: conversations per forward pass, packed into one sequence with attention
    /// kept inside each (the losses do not depend on it) [default: 16 on a GPU, 1 on the
    /// CPU].
    #[arg(long, value_name = "N", help_heading = "SLEB")]
    pub batch: Option<usize>,
    /// sleb only: where the model runs and in what precision (see `interlace forward --help`).
    #[command(flatten)]
    pub placement: crate::recipes::placement::DeviceArgs,
}

/// Most tokens of one packed SLEB pass.
const SLEB_PACK_TOKENS: usize = 16384;

/// floor(layers × ratio), refused when it is 0: such a plan drops nothing, and `prune` would
/// then write an unpruned copy.
pub fn drop_count_of_some(num_layers: usize, ratio: f64) -> Result<usize> {
    let n = drop_count(num_layers, ratio)?;
    if n == 0 {
        // The smallest ratio (to 4 decimals, rounded up) whose floor(L × ratio) is 1.
        let smallest = (1..=10_000)
            .map(|k| k as f64 / 10_000.0)
            .find(|&r| drop_count(num_layers, r).is_ok_and(|n| n > 0))
            .unwrap_or(1.0);
        bail!(
            "--ratio {ratio} drops no layer of {num_layers} (floor({num_layers} x {ratio}) = 0); the smallest ratio that drops one is {smallest}"
        );
    }
    Ok(n)
}

/// Selects, writes `plan.json` and returns the report (summary + role table).
pub fn run(args: &PlanArgs) -> Result<String> {
    let pack_files: Vec<&PathBuf> = [&args.pack1, &args.pack2, &args.pack3]
        .into_iter()
        .flatten()
        .collect();
    let scores = match (&args.similarity, pack_files.is_empty()) {
        (Some(path), true) => Some(SimilarityScores::read(path)?),
        (None, false) => Some(SimilarityScores::from_pack_files(&pack_files)?),
        (Some(_), false) => bail!("give either --similarity or --pack1/--pack2/--pack3, not both"),
        (None, true) if args.strategy == Strategy::Sleb => None,
        (None, true) => {
            bail!("no scores: give --similarity sim.json (or the reference scripts' --pack1 ...)")
        }
    };
    let mut report = String::new();
    let plan = if args.strategy == Strategy::Sleb {
        let (plan, log) = sleb_plan(args, scores.as_ref())?;
        report.push_str(&log);
        plan
    } else {
        if args.model.is_some() || args.data.is_some() {
            bail!("--model and --data are only used by --strategy sleb");
        }
        let opts = SelectOptions {
            seed: args.seed,
            finetune: args.finetune_policy,
        };
        let scores = scores.as_ref().expect("checked above");
        drop_count_of_some(scores.num_layers(), args.ratio)?;
        select(scores, args.strategy, args.ratio, &opts)?
    };
    plan.write(&args.out)?;
    let picture = args.out.with_extension("svg");
    if let Some(scores) = &scores {
        let title = format!("{} at ratio {}", args.strategy, args.ratio);
        crate::fsio::write_atomic(
            &picture,
            crate::prune::heatmap::svg(scores, Some(&plan), &title).as_bytes(),
        )?;
    }
    report.push_str(&format!(
        "{}: ratio {} of {} layers -> drop {:?}, fine-tune {:?}, anchors {:?} (strategy {}, fine-tune policy {})\n",
        args.out.display(),
        args.ratio,
        plan.num_layers,
        plan.drop,
        plan.finetune,
        plan.anchors,
        args.strategy,
        args.finetune_policy
    ));
    report.push_str(&role_table(&plan, scores.as_ref())?);
    if scores.is_some() {
        report.push_str(&format!("heat-map: {}\n", picture.display()));
    }
    Ok(report)
}

/// SLEB: greedy removal by calibration loss on the model itself.
fn sleb_plan(args: &PlanArgs, scores: Option<&SimilarityScores>) -> Result<(Plan, String)> {
    let (Some(model_dir), Some(data)) = (&args.model, &args.data) else {
        bail!("strategy sleb needs --model DIR and --data FILE (calibration conversations)");
    };
    if args.batch == Some(0) {
        bail!("--batch must be at least 1");
    }
    let placement = args.placement.resolve()?;
    let device = placement.device.clone();
    let model = Model::load_for_inference(model_dir, placement.dtype, &device)?;
    let batch = args
        .batch
        .unwrap_or(if placement.is_gpu() { 16 } else { 1 });
    let processor =
        Processor::from_dir(model_dir)?.with_image_backend(args.placement.image_backend);
    let num_layers = model.layers.len();
    if let Some(s) = scores {
        if s.num_layers() != num_layers {
            bail!(
                "the similarity scores are for {} layers but {} has {num_layers}",
                s.num_layers(),
                model_dir.display()
            );
        }
    }
    let n = drop_count_of_some(num_layers, args.ratio)?;
    let rows = load_portion(data, 1.0, Some(args.samples), args.seed, Take::Random)?;
    let n_rows = rows.len();
    let mut examples = Vec::new();
    let mut skipped = Vec::new();
    for row in rows {
        match row
            .and_then(|s| CalibrationExample::new(&model, &processor, &s, args.max_length, &device))
        {
            Ok(ex) => examples.push(ex),
            Err(e) => skipped.push(crate::error_line(&e)),
        }
    }
    if examples.is_empty() {
        bail!(
            "{}: none of the {} chosen conversations can be used (first problem: {})",
            data.display(),
            n_rows,
            skipped.first().map(String::as_str).unwrap_or("no samples")
        );
    }
    let n_examples = examples.len();
    let examples = sleb::pack_examples(examples, batch, SLEB_PACK_TOKENS)?;
    let mut log = format!(
        "sleb: {} calibration conversations ({} skipped{}) in {} packed passes on {}, removing {n} of {num_layers} layers\n",
        n_examples,
        skipped.len(),
        skipped
            .first()
            .map(|s| format!(", e.g. {s}"))
            .unwrap_or_default(),
        examples.len(),
        placement.describe()
    );
    let kept: Vec<usize> = (0..num_layers).collect();
    let dense = calibration_loss(&model, &examples, &kept)?;
    log.push_str(&format!(
        "sleb: calibration loss of the whole model {dense:.5}\n"
    ));
    let total = (0..n).map(|r| num_layers - r).sum::<usize>();
    let progress = Progress::new("sleb", "candidate stacks", total);
    let mut done = 0;
    let rounds = sleb::greedy(num_layers, n, |stack| {
        let l = calibration_loss(&model, &examples, stack);
        done += 1;
        progress.set(done, "");
        l
    })?;
    progress.finish();
    for (r, round) in rounds.iter().enumerate() {
        let loss = round
            .candidates
            .iter()
            .find(|c| c.0 == round.removed)
            .map(|c| c.1)
            .unwrap_or(f64::NAN);
        log.push_str(&format!(
            "sleb: round {}: remove layer {} (loss {loss:.5})\n",
            r + 1,
            round.removed
        ));
    }
    let drops = rounds.iter().map(|r| r.removed).collect();
    let plan = Plan::from_drops("sleb", args.ratio, num_layers, drops, args.finetune_policy)?;
    Ok((plan, log))
}
