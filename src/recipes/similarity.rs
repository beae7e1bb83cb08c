//! `interlace similarity`: hidden-state similarity of every layer pack over a calibration
//! sample, one forward pass per sample, written to sim.json.

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::{DType, Device};

use crate::data::{choose_portion, Sample};
use crate::model::{ModelInputs, Qwen3VlModel};
use crate::processor::Processor;
use crate::progress::Progress;
use crate::prune::{SimilarityAccumulator, SimilarityScores};

#[derive(Debug, clap::Args)]
pub struct SimilarityArgs {
    /// Hugging Face model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Calibration data, detected by content: a LLaVA-style JSON or JSONL file (image paths
    /// relative to the file), a FineVision Parquet file, or a directory of them (each
    /// directory holding Parquet files, e.g. each FineVision subset, is sampled on its own).
    #[arg(long, value_name = "FILE|DIR")]
    pub data: PathBuf,
    /// Share of the samples of each source (file or subset) to use, chosen at random with
    /// --seed.
    #[arg(long, default_value_t = 0.1)]
    pub portion: f64,
    /// Use this many samples in all instead of --portion, split over the sources in
    /// proportion to their sizes.
    #[arg(long, value_name = "N")]
    pub samples: Option<usize>,
    /// Seed of the sample choice.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Largest pack size to score.
    #[arg(long, default_value_t = 3)]
    pub max_pack: usize,
    /// Where to write sim.json.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub fn run(args: &SimilarityArgs) -> Result<String> {
    let device = Device::Cpu;
    // Opening the data reads only file headers: cheap, so bad data fails before the model loads.
    let portion = choose_portion(&args.data, args.portion, args.samples, args.seed)?;
    let processor = Processor::from_dir(&args.model)?;
    let model = Qwen3VlModel::load(&args.model, DType::F32, &device)?;
    let num_layers = model.layers.len();
    if portion.sources().len() > 1 {
        eprintln!(
            "similarity: {} of {} samples chosen from {} sources",
            portion.len(),
            portion.total(),
            portion.sources().len()
        );
    }
    let mut acc = SimilarityAccumulator::new(num_layers, args.max_pack)?;
    let progress = Progress::new("similarity", "samples", portion.len());
    let mut skipped: Vec<String> = Vec::new();
    for (done, row) in portion.iter().enumerate() {
        // The outer error is a corrupt file: stop. A bad row is skipped like a bad image.
        let used =
            row?.and_then(|sample| score_sample(&model, &processor, &sample, &mut acc, &device));
        if let Err(e) = used {
            skipped.push(crate::error_line(&e));
        }
        let msg = if skipped.is_empty() {
            String::new()
        } else {
            format!("({} skipped)", skipped.len())
        };
        progress.set(done + 1, &msg);
    }
    progress.finish();
    if acc.num_samples() == 0 {
        bail!(
            "{}: none of the {} chosen samples could be used (first problem: {})",
            args.data.display(),
            portion.len(),
            skipped.first().map(String::as_str).unwrap_or("?")
        );
    }
    let model_type = model.config.model_type.clone();
    let scores = SimilarityScores::new(
        args.model.display().to_string(),
        model_type,
        num_layers,
        acc.into_packs(),
    )?;
    scores.write(&args.out)?;
    let picture = args.out.with_extension("svg");
    let title = format!("layer similarity of {}", args.model.display());
    crate::prune::write_atomic(
        &picture,
        crate::prune::heatmap::svg(&scores, None, &title).as_bytes(),
    )?;
    let mut report = format!(
        "{}: {} samples scored, packs 1..={}, {} layers",
        args.out.display(),
        scores.num_samples(),
        args.max_pack,
        num_layers
    );
    if !skipped.is_empty() {
        report.push_str(&format!("; {} skipped, e.g. {}", skipped.len(), skipped[0]));
    }
    report.push_str(&format!("\nheat-map: {}\n", picture.display()));
    Ok(report)
}

fn score_sample(
    model: &Qwen3VlModel,
    processor: &Processor,
    sample: &Sample,
    acc: &mut SimilarityAccumulator,
    device: &Device,
) -> Result<()> {
    let message = sample.first_user_turn()?;
    let images = sample
        .images
        .iter()
        .map(|s| s.load())
        .collect::<Result<Vec<_>>>()
        .map_err(|e| e.context(sample.origin.clone()))?;
    let enc = processor.encode(&[message], &images, true)?;
    let inputs = ModelInputs::from_encoded(&enc, device)?;
    let emb = model.embed(&inputs, Default::default())?;
    let mut obs = acc.sample();
    model.run_decoder(&emb, Some(&mut obs), Default::default())?;
    Ok(())
}
