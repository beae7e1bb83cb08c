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
    /// sample (the scores do not depend on it) [default: 16 on a GPU; on the CPU 4, fewer
    /// when there are too few samples to give every worker a pass]. A pass also stops
    /// growing at 16384 tokens.
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    /// CPU only: threads that score samples side by side, each with single-threaded tensor
    /// ops (default: one per core, at most the number of samples). 1: one sample at a time
    /// with candle's multi-threaded ops. The scores do not depend on it.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Most tokens of one sample (first user turn and its images); a longer sample is
    /// skipped and counted, so memory stays bounded whatever the data holds. Never more
    /// than the model's max_position_embeddings.
    #[arg(long, default_value_t = crate::model::config::DEFAULT_MAX_LENGTH)]
    pub max_length: usize,
    #[command(flatten)]
    pub placement: crate::recipes::placement::DeviceArgs,
}

/// Samples per pass on the CPU by default: on the mid-size benchmark model, 4 per pass
/// scored 16 samples in 1.02–1.13 s against 1.26–1.27 s one at a time (2 workers).
const CPU_BATCH: usize = 4;

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
    // Before the first tensor op: several workers make every op single-threaded.
    let workers = if placement.is_gpu() {
        if args.workers.is_some_and(|w| w > 1) {
            bail!("--workers: on a GPU samples are packed into passes (--batch), not scored by several threads");
        }
        1
    } else {
        crate::workers::resolve(args.workers, portion.len().max(1))?
    };
    let load_start = std::time::Instant::now();
    // As `Model::load_for_inference`, except for the LM head (or the token embeddings tied
    // to it): the pass stops before it, so laying it out would only cost load time.
    let model = Model::load_laid_out(&args.model, placement.dtype, &placement.device, |name| {
        name != "lm_head.weight" && !name.ends_with("embed_tokens.weight")
    })?;
    let load_secs = load_start.elapsed().as_secs_f64();
    let scoring_start = std::time::Instant::now();
    let batch = args.batch.unwrap_or(if placement.is_gpu() {
        16
    } else {
        // Longer products run nearer the matrix-multiply peak; but every worker gets work.
        portion.len().div_ceil(workers).clamp(1, CPU_BATCH)
    });
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
    let done = std::sync::atomic::AtomicUsize::new(0);
    let skipped_so_far = std::sync::atomic::AtomicUsize::new(0);
    let mut rows = portion.iter();
    // Rows are read here, a round at a time; within a round the workers take passes of
    // `batch` rows in turn and each pass's scores are added in row order afterwards, so the
    // result is the same for any number of workers. One worker reads one pass at a time
    // (a GPU's passes hold 16 samples and their images).
    let round = if workers == 1 {
        batch
    } else {
        batch * workers * 8
    };
    loop {
        // The outer error is a corrupt file: stop. A bad row is skipped like a bad image.
        let mut chosen = Vec::with_capacity(round);
        for row in rows.by_ref().take(round) {
            chosen.push(row?);
        }
        if chosen.is_empty() {
            break;
        }
        let passes: Vec<&[Result<Sample>]> = chosen.chunks(batch).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let scored = crate::workers::on_threads(workers, |_| {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(pass) = passes.get(i) else {
                    break;
                };
                let mut part = SimilarityAccumulator::new(num_layers, args.max_pack)?;
                let bad = score_rows(&model, &processor, &placement, args, pass, &mut part)?;
                let n = done.fetch_add(pass.len(), std::sync::atomic::Ordering::Relaxed);
                let s = skipped_so_far.fetch_add(bad.len(), std::sync::atomic::Ordering::Relaxed);
                let s = s + bad.len();
                let msg = if s == 0 {
                    String::new()
                } else {
                    format!("({s} skipped)")
                };
                progress.set(n + pass.len(), &msg);
                mine.push((i, part, bad));
            }
            Ok(mine)
        })?;
        let mut scored: Vec<_> = scored.into_iter().flatten().collect();
        scored.sort_by_key(|(i, _, _)| *i);
        for (_, part, bad) in scored {
            acc.append(part);
            skipped.extend(bad);
        }
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
        "\non {}, {batch} samples per pass, {workers} worker(s): model loaded in {load_secs:.2} s, samples read and scored in {scoring_secs:.2} s ({:.4} s per sample)",
        placement.describe(),
        scoring_secs / portion.len().max(1) as f64
    ));
    report.push_str(&format!("\nheat-map: {}\n", picture.display()));
    Ok(report)
}

/// Reads, encodes and scores `rows` (one pass, or several when they exceed
/// [`PACK_TOKENS`]) into `acc`; returns the rows skipped, each as one line.
fn score_rows(
    model: &Model,
    processor: &Processor,
    placement: &crate::model::device::Placement,
    args: &SimilarityArgs,
    rows: &[Result<Sample>],
    acc: &mut SimilarityAccumulator,
) -> Result<Vec<String>> {
    let mut skipped = Vec::new();
    // Images are decoded and resized on every core at once (one worker); the model then
    // runs the samples in packs.
    let encoded = crate::workers::par_map(rows, |row| {
        let sample = row
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{}", crate::error_line(e)))?;
        let enc = encode_sample(processor, sample)?;
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
                    score_pack(model, std::mem::take(&mut pack), acc)?;
                    tokens = 0;
                }
                tokens += len;
                pack.push(emb);
            }
            Err(e) => skipped.push(crate::error_line(&e)),
        }
    }
    if !pack.is_empty() {
        score_pack(model, pack, acc)?;
    }
    Ok(skipped)
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
