//! `interlace similarity`: hidden-state similarity of every layer pack over a calibration
//! sample, one forward pass per sample, written to sim.json.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::data::{choose_portion, Sample};
use crate::model::{Embedded, Model, ModelInputs};
use crate::processor::{Encoded, Processor};
use crate::progress::Progress;
use crate::prune::{SimilarityAccumulator, SimilarityScores};

#[derive(Debug, clap::Args)]
pub struct SimilarityArgs {
    /// Hugging Face model directory, or a Hub repository id in the local cache
    /// (Org/Name[@revision], e.g. Qwen/Qwen3-VL-2B-Instruct).
    #[arg(long, value_parser = crate::hub::model_arg)]
    pub model: PathBuf,
    /// Calibration data, detected by content: a LLaVA-style JSON or JSONL file (image paths
    /// relative to the file), a FineVision Parquet file, or a directory of them (each
    /// directory holding Parquet files, e.g. each FineVision subset, is sampled on its own).
    #[arg(long, value_name = "FILE|DIR", value_parser = crate::hub::data_arg)]
    pub data: PathBuf,
    /// Share of the samples of each source (file or subset) to use (which ones: --take).
    #[arg(long, default_value_t = 0.1)]
    pub portion: f64,
    /// Use this many samples in all instead of --portion, split over the sources in
    /// proportion to their sizes.
    #[arg(long, value_name = "N")]
    pub samples: Option<usize>,
    /// Seed of the sample choice.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Which rows of each source: random (drawn with --seed) or first (in file order).
    #[arg(long, value_enum, default_value = "random")]
    pub take: crate::data::Take,
    /// Largest pack size to score.
    #[arg(long, default_value_t = 3)]
    pub max_pack: usize,
    /// Where to write sim.json.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Samples per forward pass, packed into one sequence with attention kept inside each
    /// sample (the scores do not depend on it) [default: 16 on a GPU, 1 on the CPU]. A pass
    /// also stops growing at 16384 tokens.
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    /// Most tokens of one sample (first user turn and its images); a longer sample is
    /// skipped and counted, so memory stays bounded whatever the data holds. Never more
    /// than the model's max_position_embeddings.
    #[arg(long, default_value_t = crate::model::config::DEFAULT_MAX_LENGTH)]
    pub max_length: usize,
    #[command(flatten)]
    pub placement: crate::recipes::placement::DeviceArgs,
}

/// Most tokens of one packed similarity pass.
const PACK_TOKENS: usize = 16384;

pub fn run(args: &SimilarityArgs) -> Result<String> {
    if args.batch == Some(0) {
        bail!("--batch must be at least 1");
    }
    // Opening the data reads only file headers: cheap, so bad data fails before the model loads.
    let portion = choose_portion(&args.data, args.portion, args.samples, args.seed, args.take)?;
    let processor =
        Processor::from_dir(&args.model)?.with_image_backend(args.placement.image_backend);
    let placement = args.placement.resolve()?;
    let load_start = std::time::Instant::now();
    let model = Model::load_for_inference(&args.model, placement.dtype, &placement.device)?;
    let load_secs = load_start.elapsed().as_secs_f64();
    let scoring_start = std::time::Instant::now();
    let batch = args
        .batch
        .unwrap_or(if placement.is_gpu() { 16 } else { 1 });
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
    let mut done = 0;
    let mut rows = portion.iter();
    loop {
        // The outer error is a corrupt file: stop. A bad row is skipped like a bad image.
        let mut chosen = Vec::with_capacity(batch);
        for row in rows.by_ref().take(batch) {
            chosen.push(row?);
        }
        if chosen.is_empty() {
            break;
        }
        let n = chosen.len();
        // Images are decoded and resized on every core at once; the model then runs the
        // samples in packs.
        let encoded = crate::workers::par_map(&chosen, |row| {
            let sample = row
                .as_ref()
                .map_err(|e| anyhow::anyhow!("{}", crate::error_line(e)))?;
            let enc = encode_sample(&processor, sample)?;
            model
                .config
                .check_length(enc.input_ids.len(), 0, args.max_length)
                .map_err(|e| e.context(sample.origin.clone()))?;
            Ok(enc)
        });
        let mut pack: Vec<Embedded> = Vec::new();
        let mut tokens = 0;
        for inputs in encoded {
            let embedded = inputs
                .and_then(|enc| ModelInputs::from_encoded(&enc, &placement.device))
                .and_then(|i| model.embed(&i, Default::default()));
            match embedded {
                Ok(emb) => {
                    let len = emb.embeds.dim(1)?;
                    if !pack.is_empty() && tokens + len > PACK_TOKENS {
                        score_pack(&model, std::mem::take(&mut pack), &mut acc)?;
                        tokens = 0;
                    }
                    tokens += len;
                    pack.push(emb);
                }
                Err(e) => skipped.push(crate::error_line(&e)),
            }
        }
        if !pack.is_empty() {
            score_pack(&model, pack, &mut acc)?;
        }
        done += n;
        let msg = if skipped.is_empty() {
            String::new()
        } else {
            format!("({} skipped)", skipped.len())
        };
        progress.set(done, &msg);
    }
    progress.finish();
    let scoring_secs = scoring_start.elapsed().as_secs_f64();
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
    crate::fsio::write_atomic(
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
    report.push_str(&format!(
        "\non {}, {batch} samples per pass: model loaded in {load_secs:.2} s, samples read and scored in {scoring_secs:.2} s ({:.4} s per sample)",
        placement.describe(),
        scoring_secs / portion.len().max(1) as f64
    ));
    report.push_str(&format!("\nheat-map: {}\n", picture.display()));
    Ok(report)
}

/// A sample's first user turn, tokenized, its images decoded and resized (CPU work).
fn encode_sample(processor: &Processor, sample: &Sample) -> Result<Encoded> {
    let message = sample.first_user_turn()?;
    let images = sample
        .images
        .iter()
        .map(|s| s.load())
        .collect::<Result<Vec<_>>>()
        .map_err(|e| e.context(sample.origin.clone()))?;
    processor.encode(&[message], &images, true)
}

/// One forward pass over packed samples, stopping after h_{L-1}; adds each sample's scores.
fn score_pack(model: &Model, pack: Vec<Embedded>, acc: &mut SimilarityAccumulator) -> Result<()> {
    let segments = pack
        .iter()
        .map(|e| e.embeds.dim(1))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let emb = Embedded::pack(pack)?;
    let mut obs = acc.pack(segments);
    model.run_decoder(&emb, Some(&mut obs), Default::default())?;
    Ok(())
}
