//! `interlace plan`: similarity scores -> which layers to drop, fine-tune, anchor, freeze.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::prune::{role_table, select, FinetunePolicy, SelectOptions, SimilarityScores, Strategy};

pub struct PlanArgs {
    /// `sim.json` written by `interlace similarity`.
    pub similarity: Option<PathBuf>,
    /// The reference scripts' per-pack files, pack 1 first.
    pub pack_files: Vec<PathBuf>,
    pub ratio: f64,
    pub strategy: Strategy,
    pub finetune_policy: FinetunePolicy,
    pub seed: u64,
    pub out: PathBuf,
}

/// Selects, writes `plan.json` and returns the report (summary + role table).
pub fn run(args: &PlanArgs) -> Result<String> {
    let scores = match (&args.similarity, args.pack_files.is_empty()) {
        (Some(path), true) => SimilarityScores::read(path)?,
        (None, false) => SimilarityScores::from_pack_files(&args.pack_files)?,
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
