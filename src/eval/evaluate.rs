//! Running a model over benchmark files: for every row, the images and prompt of
//! [`crate::eval::benchmarks`] in one user message, greedy decoding, scoring by
//! [`crate::eval::report::score_benchmark`].
//!
//! Images are resized as VLMEvalKit's Qwen3-VL wrapper resizes them
//! (`vlmeval/vlm/qwen3_vl/model.py` hands them to `qwen_vl_utils.process_vision_info`, whose
//! bounds are 4 to 16384 merged-patch tokens, i.e. `4·f²` to `16384·f²` pixels for
//! f = patch size × merge size = 32, and raises the minimum to 10·10·32·32 pixels for
//! OCRBench), not with the bounds of the checkpoint's `preprocessor_config.json`;
//! `min_pixels` / `max_pixels` of [`EvalOptions`] override them.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use candle_core::Device;

use crate::model::device::Placement;

use crate::eval::benchmarks::{BenchRow, BenchSpec, Benchmark, Protocol};
use crate::eval::generate::{eos_ids, greedy_batch, sample_batch, Sampling};
use crate::eval::report::{score_benchmark, BenchReport, EvalReport, EvalStopped};
use crate::model::{Model, ModelInputs};
use crate::processor::image::{ImageBackend, ImageProcessor};
use crate::processor::{Message, Processor};
use crate::progress::Progress;
use crate::workers::on_groups;

/// Settings of an evaluation; the defaults are VLMEvalKit's protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvalOptions {
    /// New tokens per answer; default per task ([`crate::eval::benchmarks::Task::default_max_new_tokens`]).
    pub max_new_tokens: Option<usize>,
    /// Evaluate only the first N rows of each file.
    pub limit: Option<usize>,
    /// Least pixels per image after resizing (default 4·f², for OCRBench 102 400).
    pub min_pixels: Option<usize>,
    /// Most pixels per image after resizing (default 16384·f²).
    pub max_pixels: Option<usize>,
    /// Threads that answer rows side by side (0 or 1: one). Each row's answer does not
    /// depend on the count.
    pub workers: usize,
    /// Rows answered together by one batched generation (0 or 1: one at a time). Answers
    /// depend on it only through float rounding.
    pub batch: usize,
    /// Most tokens of a row's prompt plus its answer ([`crate::model::config::DEFAULT_MAX_LENGTH`]
    /// when None; never more than the model's max_position_embeddings). A longer row is
    /// a problem of that row, scored as unanswered, so memory stays bounded.
    pub max_length: Option<usize>,
    /// How questions are asked and answered; the benchmarks' prompts must have been built
    /// for it ([`Benchmark::set_protocol`]).
    pub protocol: Protocol,
    /// Seed of the sampling protocol: row r of benchmark B draws from a stream seeded with
    /// (seed, B, r), whatever the batch or worker that answers it.
    pub seed: u64,
    /// transformers' image processor to reproduce (None: transformers' default,
    /// [`ImageBackend::transformers_default`]).
    pub image_backend: Option<ImageBackend>,
}

/// The random stream of one row under a sampling protocol.
fn row_rng(seed: u64, bench: &str, index: &str) -> rand_chacha::ChaCha8Rng {
    use rand_core::SeedableRng;
    // FNV-1a over the benchmark name and the row index, mixed with the seed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bench.bytes().chain([0]).chain(index.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    rand_chacha::ChaCha8Rng::seed_from_u64(h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// `max_new_tokens` of VLMEvalKit's Qwen3-VL config.
pub const VLMEVALKIT_MAX_NEW_TOKENS: usize = 16384;

/// Minimum pixels VLMEvalKit's Qwen3-VL wrapper sets for OCRBench (`min_pixels = 10 * 10 * 32 * 32`).
pub const OCRBENCH_MIN_PIXELS: usize = 10 * 10 * 32 * 32;

/// Reads and checks every benchmark file (cheap next to loading a model: no image is
/// decoded), so a bad file fails before the model loads.
pub fn open_benchmarks(specs: &[BenchSpec], limit: Option<usize>) -> Result<Vec<Benchmark>> {
    if specs.is_empty() {
        bail!("no benchmark files given");
    }
    specs.iter().map(|s| Benchmark::open(s, limit)).collect()
}

/// Evaluates the checkpoint in `model_dir` on the benchmark files, on `placement`'s device
/// and dtype: the library entry point behind `interlace eval`.
pub fn evaluate_dir(
    model_dir: &Path,
    specs: &[BenchSpec],
    opts: &EvalOptions,
    placement: &Placement,
) -> Result<EvalReport> {
    let benches = open_benchmarks(specs, opts.limit)?;
    evaluate_model_dir(model_dir, &benches, opts, placement)
}

/// Like [`evaluate_dir`] for benchmarks already opened with [`open_benchmarks`] (e.g. to
/// evaluate several models on the same files without reading them again).
pub fn evaluate_model_dir(
    model_dir: &Path,
    benches: &[Benchmark],
    opts: &EvalOptions,
    placement: &Placement,
) -> Result<EvalReport> {
    let device = placement.device.clone();
    let processor = Processor::from_dir(model_dir)?.with_image_backend(opts.image_backend);
    let model = Model::load_for_inference(model_dir, placement.dtype, &device)?;
    let eos = eos_ids(model_dir, &processor)?;
    evaluate(
        &model,
        &processor,
        &eos,
        benches,
        opts,
        &device,
        &model_dir.display().to_string(),
    )
}

/// The image processor of one benchmark: the model's, with VLMEvalKit's pixel bounds.
pub fn image_processor_for(
    processor: &Processor,
    bench: &Benchmark,
    opts: &EvalOptions,
) -> Result<ImageProcessor> {
    let config = processor.image_processor.config.clone();
    let f = config.factor();
    let min = opts.min_pixels.unwrap_or(if bench.name == "OCRBench" {
        OCRBENCH_MIN_PIXELS
    } else {
        4 * f * f
    });
    let max = opts.max_pixels.unwrap_or(16384 * f * f);
    if min > max {
        bail!(
            "{}: minimum pixels {min} exceed maximum pixels {max}",
            bench.path.display()
        );
    }
    let config = config.with_pixel_bounds(Some(min), Some(max));
    config.validate()?;
    Ok(ImageProcessor::with_backend(
        config,
        processor.image_processor.backend,
    ))
}

/// The outcome of rows left unanswered when the model failed on another row.
const NOT_ANSWERED: &str = "not answered: the evaluation stopped at a failure of the model";

/// Evaluates a loaded model on opened benchmarks. Problems of single rows (malformed rows,
/// bad images) are recorded in the report; a failure of the model itself ends the run with
/// an [`EvalStopped`] error that carries the report of what was answered before it.
pub fn evaluate(
    model: &Model,
    processor: &Processor,
    eos: &[u32],
    benches: &[Benchmark],
    opts: &EvalOptions,
    device: &Device,
    model_name: &str,
) -> Result<EvalReport> {
    let total: usize = benches.iter().map(|b| b.rows.len()).sum();
    let progress = Progress::new("eval", "rows", total);
    let done = AtomicUsize::new(0);
    let mut reports: Vec<BenchReport> = Vec::with_capacity(benches.len());
    // The first failure of the model itself; later batches are then not run.
    let stopped: Mutex<Option<String>> = Mutex::new(None);
    for bench in benches {
        if stopped.lock().expect("not poisoned").is_some() {
            break;
        }
        let images = image_processor_for(processor, bench, opts)?;
        let sampling = opts.protocol == Protocol::Vlmevalkit;
        let max_new = opts.max_new_tokens.unwrap_or(if sampling {
            VLMEVALKIT_MAX_NEW_TOKENS
        } else {
            bench.task.default_max_new_tokens()
        });
        let max_length = opts
            .max_length
            .unwrap_or(crate::model::config::DEFAULT_MAX_LENGTH);
        let bad = AtomicUsize::new(0);
        let what = |row: &BenchRow| {
            format!(
                "{}: row index {} (line {})",
                bench.path.display(),
                row.index,
                row.line
            )
        };
        // Answers the rows `ids` (one batch) in order; a row's own problems are its outcome.
        let answer_batch = |ids: &[usize]| -> Result<Vec<std::result::Result<String, String>>> {
            let rows: Vec<&BenchRow> = ids.iter().map(|&i| &bench.rows[i]).collect();
            let prepared = crate::workers::par_map(&rows, |row| {
                let enc = prepare(bench, row, processor, &images)?;
                // VLMEvalKit's long token limit is cut to what --max-length leaves (below);
                // a row needs room for one new token at least.
                let want = if sampling { 1 } else { max_new };
                model
                    .config
                    .check_length(enc.input_ids.len(), want, max_length)?;
                Ok(enc)
            })
            .into_iter()
            .map(|p: Result<crate::processor::Encoded>| p.map_err(|e| crate::error_line(&e)))
            .collect::<Vec<_>>();
            let mut outcomes: Vec<std::result::Result<String, String>> =
                vec![Err(String::new()); rows.len()];
            let mut inputs = Vec::new();
            let mut slots = Vec::new();
            for (slot, p) in prepared.into_iter().enumerate() {
                match p {
                    Err(e) => outcomes[slot] = Err(e),
                    Ok(enc) => {
                        inputs.push(
                            ModelInputs::from_encoded(&enc, device)
                                .with_context(|| what(rows[slot]))?,
                        );
                        slots.push(slot);
                    }
                }
            }
            if !inputs.is_empty() {
                let generated = if sampling {
                    let longest = inputs.iter().map(|i| i.input_ids.len()).max().unwrap_or(0);
                    let limit = max_length
                        .min(model.config.text.max_position_embeddings)
                        .saturating_sub(longest);
                    let mut rngs: Vec<_> = slots
                        .iter()
                        .map(|&s| row_rng(opts.seed, &bench.name, &rows[s].index))
                        .collect();
                    sample_batch(
                        model,
                        &inputs,
                        max_new.min(limit),
                        eos,
                        &Sampling::VLMEVALKIT,
                        &mut rngs,
                    )
                } else {
                    greedy_batch(model, &inputs, max_new, eos)
                };
                let outs = generated.with_context(|| {
                    let first = rows[slots[0]];
                    if slots.len() == 1 {
                        what(first)
                    } else {
                        format!(
                            "{} and {} more rows answered with it",
                            what(first),
                            slots.len() - 1
                        )
                    }
                })?;
                for (out, &slot) in outs.iter().zip(&slots) {
                    outcomes[slot] = Ok(processor
                        .tokenizer
                        .decode(&out.tokens, true)
                        .with_context(|| what(rows[slot]))?);
                }
            }
            let n_bad = outcomes.iter().filter(|o| o.is_err()).count();
            let bad = bad.fetch_add(n_bad, Ordering::Relaxed) + n_bad;
            let n = done.fetch_add(rows.len(), Ordering::Relaxed) + rows.len();
            let msg = if bad > 0 {
                format!("{}: {bad} malformed", bench.name)
            } else {
                bench.name.clone()
            };
            progress.set(n, &msg);
            Ok(outcomes)
        };
        // A failure of the model (not of a row) marks the batch, and every batch after it,
        // as not answered and is kept for the report; the answered rows stay scored.
        let answer = |ids: &[usize]| -> Result<Vec<std::result::Result<String, String>>> {
            if stopped.lock().expect("not poisoned").is_some() {
                return Ok(vec![Err(NOT_ANSWERED.to_string()); ids.len()]);
            }
            match answer_batch(ids) {
                Ok(outcomes) => Ok(outcomes),
                Err(e) => {
                    let mut s = stopped.lock().expect("not poisoned");
                    if s.is_none() {
                        *s = Some(crate::error_line(&e));
                    }
                    Ok(vec![Err(NOT_ANSWERED.to_string()); ids.len()])
                }
            }
        };
        // Rows go in batches of `opts.batch`; worker w answers batches w, w + workers, ...;
        // the answers come back in row order.
        let batch = opts.batch.max(1);
        let batches: Vec<Vec<usize>> = (0..bench.rows.len())
            .collect::<Vec<_>>()
            .chunks(batch)
            .map(<[usize]>::to_vec)
            .collect();
        let workers = opts.workers.clamp(1, batches.len().max(1));
        let groups: Vec<Vec<usize>> = (0..workers)
            .map(|w| (w..batches.len()).step_by(workers).collect())
            .collect();
        let outcomes: Vec<_> = on_groups(&groups, |b| answer(&batches[b]))?
            .into_iter()
            .flatten()
            .collect();
        reports.push(score_benchmark(bench, &outcomes, max_new));
    }
    progress.finish();
    let report = EvalReport {
        model: model_name.to_string(),
        benchmarks: reports,
        relative: None,
        stopped: stopped.into_inner().expect("not poisoned"),
        protocol: Some(match opts.protocol {
            Protocol::GreedyMixin => opts.protocol.name().to_string(),
            Protocol::Vlmevalkit => format!("{} (seed {})", opts.protocol.name(), opts.seed),
        }),
    };
    if report.stopped.is_some() {
        return Err(EvalStopped { partial: report }.into());
    }
    Ok(report)
}

/// A row's model input: images decoded and preprocessed, prompt rendered with the chat
/// template and the generation prompt. Errors are problems of the row.
fn prepare(
    bench: &Benchmark,
    row: &BenchRow,
    processor: &Processor,
    images: &ImageProcessor,
) -> Result<crate::processor::Encoded> {
    let item = row.item.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    let decoded = bench.load_images(row)?;
    let processed = decoded
        .iter()
        .enumerate()
        .map(|(i, img)| {
            images
                .preprocess(img)
                .with_context(|| format!("image {}", i + 1))
        })
        .collect::<Result<Vec<_>>>()?;
    let message = Message::user_with_images(decoded.len(), item.prompt.clone());
    let prompt = processor.render(&[message], true)?;
    processor.encode_processed(prompt, processed)
}
