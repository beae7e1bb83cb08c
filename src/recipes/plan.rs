//! `interlace plan`: similarity scores -> which layers to drop, fine-tune, anchor, freeze.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::prune::{role_table, select, SelectOptions, SimilarityScores, Strategy};

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
    /// interlace | interlace-oa | interlace-tn | random | consecutive | shortgpt | sleb
    #[arg(long, default_value = "interlace")]
    pub strategy: crate::prune::Strategy,
    /// Which kept layers to fine-tune: paired (the strategy's own), next (the layer after
    /// each dropped one), all, none.
    #[arg(long, default_value = "paired")]
    pub finetune_policy: crate::prune::FinetunePolicy,
    /// Seed of the random strategy.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where to write plan.json.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Selects, writes `plan.json` and returns the report (summary + role table).
pub fn run(args: &PlanArgs) -> Result<String> {
    let pack_files: Vec<&PathBuf> = [&args.pack1, &args.pack2, &args.pack3]
        .into_iter()
        .flatten()
        .collect();
    let scores = match (&args.similarity, pack_files.is_empty()) {
        (Some(path), true) => SimilarityScores::read(path)?,
        (None, false) => SimilarityScores::from_pack_files(&pack_files)?,
        (Some(_), false) => bail!("give either --similarity or --pack1/--pack2/--pack3, not both"),
        (None, true) => {
            bail!("no scores: give --similarity sim.json (or the reference scripts' --pack1 ...)")
        }
    };
    if args.strategy == Strategy::Sleb {
        bail!("strategy sleb needs the model and calibration data (--model/--data); it is not available in `plan` yet");
    }
    let opts = SelectOptions {
        seed: args.seed,
        finetune: args.finetune_policy,
    };
    let plan = select(&scores, args.strategy, args.ratio, &opts)?;
    plan.write(&args.out)?;
    let picture = args.out.with_extension("svg");
    let title = format!("{} at ratio {}", args.strategy, args.ratio);
    crate::prune::write_atomic(
        &picture,
        crate::prune::heatmap::svg(&scores, Some(&plan), &title).as_bytes(),
    )?;
    let mut report = format!(
        "{}: ratio {} of {} layers -> drop {:?}, fine-tune {:?}, anchors {:?} (strategy {}, fine-tune policy {})\n",
        args.out.display(),
        args.ratio,
        plan.num_layers,
        plan.drop,
        plan.finetune,
        plan.anchors,
        args.strategy,
        args.finetune_policy
    );
    report.push_str(&role_table(&plan, Some(&scores))?);
    report.push_str(&format!("heat-map: {}\n", picture.display()));
    Ok(report)
}
