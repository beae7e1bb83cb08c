//! `interlace finetune`: train exactly the plan's fine-tune layers on a small share of the
//! data (docs/SPEC.md step 4), with resumable checkpoints, and write a complete checkpoint with
//! `interlace_plan.json`, `training_log.jsonl` and a loss-curve picture.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use serde_json::json;

use crate::data::readable_portion;
use crate::fsio::write_dir_atomic;
use crate::model::dir::PLAN_FILE;
use crate::model::dir::{copy_other_files, rewrite_weights};
use crate::model::Model;
use crate::processor::Processor;
use crate::prune::Plan;
use crate::train::adamw::AdamWConfig;
use crate::train::schedule::{warmup_steps, CosineSchedule};
use crate::train::session::{write_log_and_curve, Session};
use crate::train::trainer::{TrainOptions, Trainer};

#[derive(Debug, Clone, clap::Args)]
pub struct FinetuneArgs {
    /// Model directory to fine-tune, usually the output of `interlace prune`.
    #[arg(long, value_parser = crate::hub::model_arg)]
    pub model: PathBuf,
    /// plan.json naming the layers to fine-tune (original indices); default: the model's
    /// own interlace_plan.json.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Training data, detected by content: LLaVA-style JSON/JSONL, a FineVision Parquet
    /// file, or a directory of them (each directory holding Parquet files, e.g. each
    /// FineVision subset, is sampled on its own).
    #[arg(long, value_name = "FILE|DIR", value_parser = crate::hub::data_arg)]
    pub data: PathBuf,
    /// Output directory: the fine-tuned checkpoint (must not exist yet).
    #[arg(long)]
    pub out: PathBuf,
    /// Share of the samples of each source (file or subset) to train on (which ones:
    /// --take).
    #[arg(long, default_value_t = 0.01)]
    pub portion: f64,
    /// Train on this many samples in all instead of --portion, split over the sources in
    /// proportion to their sizes.
    #[arg(long, value_name = "N")]
    pub samples: Option<usize>,
    /// Which rows of each source: random (drawn with --seed, spread over the whole
    /// source) or first (the first rows in file order, as the INTERLACE authors prepare
    /// their 1 % of FineVision).
    #[arg(long, value_enum, default_value = "random")]
    pub take: crate::data::Take,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-5)]
    pub lr: f64,
    /// Conversations per micro-batch.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 2)]
    pub grad_accum: usize,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Share of the optimizer steps spent warming the learning rate up from 0.
    #[arg(long, default_value_t = 0.03)]
    pub warmup_ratio: f64,
    /// Global gradient-norm clip (0: none).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Images are resized to at most this many pixels.
    #[arg(long, default_value_t = 50176)]
    pub max_pixels: usize,
    /// Images are resized to at least this many pixels.
    #[arg(long, default_value_t = 784)]
    pub min_pixels: usize,
    /// Conversations are cut to this many tokens.
    #[arg(long, default_value_t = 8192)]
    pub max_length: usize,
    /// Seed of the sample choice and order.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Save a resumable checkpoint every N optimizer steps (in OUT.train/).
    #[arg(long, value_name = "N")]
    pub save_every: Option<usize>,
    /// Continue from the last checkpoint in OUT.train/ (same settings required).
    #[arg(long)]
    pub resume: bool,
    /// Recompute each layer in the backward pass instead of keeping its activations
    /// (much less memory, about a third more compute).
    #[arg(long)]
    pub grad_checkpoint: bool,
    /// Heal by distillation from TEACHER, the dense model the input was pruned from: the
    /// loss becomes (1 - W) x cross-entropy + W x T^2 x KL(teacher || student) of the
    /// next-token distributions at the supervised positions (W: --distill-weight, T:
    /// --distill-temperature). The teacher runs without gradients; the leading layers it
    /// shares with the model (same weights, below the first trained layer) are computed
    /// once for both. The logged loss is this mixed loss. Costs the teacher's memory and
    /// its forward pass over the layers not shared.
    #[arg(long, value_name = "TEACHER", value_parser = crate::hub::model_arg)]
    pub distill: Option<PathBuf>,
    /// Temperature T of the distributions compared by --distill.
    #[arg(long, default_value_t = 1.0, requires = "distill")]
    pub distill_temperature: f64,
    /// Weight W of the distillation loss against cross-entropy (0: cross-entropy alone,
    /// 1: distillation alone).
    #[arg(long, default_value_t = 0.5, requires = "distill")]
    pub distill_weight: f64,
    /// Data-parallel training threads: each takes a share of every micro-batch's
    /// conversations, with single-threaded tensor ops (default: one per core, at most the
    /// micro-batch size). 1: one thread whose tensor ops use every core. Results differ
    /// between worker counts by float rounding only (gradients added in another order).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Where to train and in what precision (see `interlace forward --help`). In bf16 the
    /// frozen weights are bf16 and the trained layers keep f32 master weights and f32
    /// AdamW moments; the model computes with their bf16 casts and the saved checkpoint is
    /// rounded once, at the end, to the stored dtype.
    #[command(flatten)]
    pub placement: crate::recipes::placement::DeviceArgs,
}

/// Where a run keeps its resumable state.
pub fn state_dir(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".to_string());
    out.with_file_name(format!("{name}.train"))
}

/// The plan to follow and the positions of its fine-tune layers in the model, whose layers
/// have the original indices `original`.
fn plan_and_positions(args: &FinetuneArgs, original: &[usize]) -> Result<(Plan, Vec<usize>)> {
    let plan = match &args.plan {
        Some(p) => Plan::read(p)?,
        None => {
            let p = args.model.join(PLAN_FILE);
            if !p.exists() {
                bail!(
                    "{}: no {PLAN_FILE}; give --plan plan.json naming the layers to fine-tune",
                    args.model.display()
                );
            }
            Plan::read(&p)?
        }
    };
    if original != plan.kept {
        if original.len() == plan.num_layers && !plan.drop.is_empty() {
            bail!(
                "{} still has all {} layers but the plan drops {:?}: run `interlace prune` first and fine-tune its output",
                args.model.display(),
                plan.num_layers,
                plan.drop
            );
        }
        bail!(
            "the plan keeps layers {:?} but {} holds layers {:?}",
            plan.kept,
            args.model.display(),
            original
        );
    }
    let positions = plan
        .finetune
        .iter()
        .map(|f| {
            original
                .iter()
                .position(|o| o == f)
                .with_context(|| format!("fine-tune layer {f} is not in the model"))
        })
        .collect::<Result<Vec<_>>>()?;
    if positions.is_empty() {
        bail!(
            "the plan fine-tunes no layer (strategy {}, finetune [])",
            plan.strategy
        );
    }
    Ok((plan, positions))
}

/// The samples of each optimizer step: a seeded shuffle per epoch, cut into steps of
/// batch_size × grad_accum samples.
fn schedule_samples(n: usize, per_step: usize, epochs: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut steps = Vec::new();
    for epoch in 0..epochs {
        let mut order: Vec<usize> = (0..n).collect();
        crate::rng::SplitMix64::new(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .shuffle(&mut order);
        steps.extend(order.chunks(per_step).map(<[usize]>::to_vec));
    }
    steps
}

fn fingerprint(
    args: &FinetuneArgs,
    plan: &Plan,
    samples: &[crate::data::Sample],
    dtype: DType,
) -> serde_json::Value {
    let n_samples = samples.len();
    let mut f = json!({
        "data_content": crate::data::content_fingerprint(samples),
        "model": args.model.display().to_string(),
        "data": args.data.display().to_string(),
        "finetune": plan.finetune,
        "samples": n_samples,
        "portion": args.portion,
        "take": args.take.name(),
        "lr": args.lr,
        "batch_size": args.batch_size,
        "grad_accum": args.grad_accum,
        "epochs": args.epochs,
        "warmup_ratio": args.warmup_ratio,
        "max_grad_norm": args.max_grad_norm,
        "weight_decay": args.weight_decay,
        "max_pixels": args.max_pixels,
        "min_pixels": args.min_pixels,
        "max_length": args.max_length,
        "seed": args.seed,
    });
    if let Some(teacher) = &args.distill {
        // (Absent without --distill, so that earlier runs still resume.)
        f["distill"] = json!({
            "teacher": teacher.display().to_string(),
            "temperature": args.distill_temperature,
            "weight": args.distill_weight,
        });
    }
    if dtype != DType::F32 {
        // (Absent for f32, so that runs started before --dtype existed still resume.)
        f["dtype"] = json!(crate::model::device::dtype_name(dtype));
    }
    if let Some(b) = args.placement.image_backend_fingerprint() {
        f["image_backend"] = json!(b);
    }
    f
}

pub fn run(args: &FinetuneArgs) -> Result<String> {
    let placement = args.placement.resolve()?;
    let workers = training_workers(args.workers, args.batch_size, &placement)?;
    if args.batch_size == 0 || args.grad_accum == 0 || args.epochs == 0 {
        bail!("--batch-size, --grad-accum and --epochs must be at least 1");
    }
    if !(0.0..1.0).contains(&args.warmup_ratio) {
        bail!(
            "--warmup-ratio must be in [0, 1), got {}",
            args.warmup_ratio
        );
    }
    if let Some(teacher) = &args.distill {
        // Checked before any data is read: a wrong teacher should fail at once.
        crate::train::trainer::Distill::check_settings(
            args.distill_temperature,
            args.distill_weight,
        )?;
        crate::hub::check_model_dir(teacher)?;
        let (t, s) = (
            crate::model::ModelConfig::from_dir(teacher)?,
            crate::model::ModelConfig::from_dir(&args.model)?,
        );
        if t.text.vocab_size != s.text.vocab_size || t.text.hidden_size != s.text.hidden_size {
            bail!(
                "{}: --distill teacher has vocabulary {} and width {}, the model {} and {}: not the model it was pruned from",
                teacher.display(),
                t.text.vocab_size,
                t.text.hidden_size,
                s.text.vocab_size,
                s.text.hidden_size
            );
        }
    }
    if args.min_pixels > args.max_pixels {
        bail!(
            "--min-pixels ({}) must not exceed --max-pixels ({})",
            args.min_pixels,
            args.max_pixels
        );
    }
    if !(args.lr > 0.0 && args.lr.is_finite()) {
        bail!("--lr must be a positive number, got {}", args.lr);
    }
    // Taken before any work, held to the end: covers OUT and its checkpoints in OUT.train.
    let _lock = crate::outlock::OutputLock::acquire(&args.out)?;
    if args.out.exists() {
        bail!(
            "{}: already exists; choose another --out or remove it",
            args.out.display()
        );
    }
    let state_dir = state_dir(&args.out);
    if state_dir.exists() && !args.resume {
        bail!(
            "{}: holds an earlier run's checkpoints; pass --resume to continue it, or remove it",
            state_dir.display()
        );
    }
    crate::train::checkpoint::remove_half_written(&state_dir);
    let processor = Processor::from_dir(&args.model)?
        .with_image_backend(args.placement.image_backend)
        .with_pixel_bounds(Some(args.min_pixels), Some(args.max_pixels))?;
    let original = crate::model::lm::original_layer_indices(&args.model)?;
    let (plan, positions) = plan_and_positions(args, &original)?;
    // The chosen rows are held in memory (image bytes included for Parquet data).
    let mut unreadable = Vec::new();
    let samples = readable_portion(
        &args.data,
        args.portion,
        args.samples,
        args.seed,
        args.take,
        &mut unreadable,
    )?;
    let per_step = args.batch_size * args.grad_accum;
    let steps = schedule_samples(samples.len(), per_step, args.epochs, args.seed);
    let total = steps.len();
    let schedule = CosineSchedule {
        base_lr: args.lr,
        warmup: warmup_steps(total, args.warmup_ratio),
        total,
    };
    if (0..total).all(|s| schedule.lr(s) == 0.0) {
        // (--lr is positive, checked above: this is a warm-up as long as the whole run.)
        bail!(
            "the schedule's warm-up of {} step{} covers all {total} optimizer step{} and gives {} learning rate 0, so the output would equal the input; use --warmup-ratio 0, or more samples or epochs (one step takes --batch-size x --grad-accum = {per_step} samples)",
            schedule.warmup,
            if schedule.warmup == 1 { "" } else { "s" },
            if total == 1 { "" } else { "s" },
            if total == 1 { "it" } else { "them" },
        );
    }
    // The trained layers are read in f32: their master weights start exact.
    let mut model =
        Model::load_for_finetune(&args.model, placement.dtype, &placement.device, &positions)?;
    let distill = match &args.distill {
        None => None,
        Some(dir) => {
            crate::hub::check_model_dir(dir)?;
            let teacher = Model::load(dir, placement.dtype, &placement.device)?;
            let first = positions.iter().copied().min().unwrap_or(0);
            let d = crate::train::trainer::Distill::new(
                &mut model,
                teacher,
                first,
                args.distill_temperature,
                args.distill_weight,
            )?;
            eprintln!(
                "finetune: distilling from {} (T {}, weight {}); {}",
                dir.display(),
                d.temperature,
                d.weight,
                if d.own_embedding {
                    "its embeddings differ from the model's: it embeds the inputs itself"
                        .to_string()
                } else {
                    format!("the first {} layer(s) are shared", d.shared)
                }
            );
            Some(d)
        }
    };
    let options = TrainOptions {
        grad_checkpoint: args.grad_checkpoint,
        micro_batch: args.batch_size,
        max_grad_norm: args.max_grad_norm,
        adamw: AdamWConfig {
            weight_decay: args.weight_decay,
            ..Default::default()
        },
        workers,
        tensor_update: None,
    };
    let mut trainer = Trainer::new(model, &positions, options)?;
    trainer.distill = distill;
    let session = Session {
        name: "finetune",
        state_dir: &state_dir,
        save_every: args.save_every,
        max_length: args.max_length,
        model_files: None,
    };
    let (state, log_lines) = session.open(
        &mut trainer,
        fingerprint(args, &plan, &samples, placement.dtype),
        total,
        unreadable.len(),
        args.resume,
    )?;
    let trainable_names: Vec<String> = plan.finetune.iter().map(|l| l.to_string()).collect();
    eprintln!(
        "finetune: {} samples, {total} optimizer steps of {per_step} ({} x {}), layers {} trainable ({} tensors, {} parameters), warm-up {} steps, on {}",
        samples.len(),
        args.batch_size,
        args.grad_accum,
        trainable_names.join(", "),
        trainer.params.len(),
        trainer.params.iter().map(|p| p.var.elem_count()).sum::<usize>(),
        schedule.warmup,
        placement.describe()
    );
    let done = session.run(
        &mut trainer,
        &processor,
        &samples,
        &steps,
        &schedule,
        state,
        log_lines,
        unreadable.first().cloned(),
    )?;
    if done.log_lines.is_empty() {
        // Not one update: a "fine-tuned" copy of the input would only mislead.
        let _ = std::fs::remove_dir_all(&state_dir);
        bail!(
            "every one of the {} samples was skipped, so nothing was trained and nothing was written{}",
            samples.len(),
            done.last_problem
                .as_deref()
                .map(|p| format!(" (e.g. {p})"))
                .unwrap_or_else(|| " (none has an assistant answer left within --max-length)".into())
        );
    }
    let trained: HashMap<String, Tensor> = trainer
        .params
        .iter()
        .map(|p| (p.name.clone(), p.var.as_tensor().clone()))
        .collect();
    // The frozen weights are no longer needed; free them before the output is written
    // (which maps the source shards: holding both would double the peak memory).
    drop(trainer);
    crate::release_free_memory();
    write_output(args, &trained, &plan, &done.log_lines)?;
    let _ = std::fs::remove_dir_all(&state_dir);
    Ok(format!(
        "{}: fine-tuned layers {} for {total} steps{}\n",
        args.out.display(),
        trainable_names.join(", "),
        done.summary()
    ))
}

/// `--workers` of a training command: threads on the CPU ([`crate::workers::resolve`]);
/// one on a GPU, whose one stream the micro-batches share.
pub fn training_workers(
    flag: Option<usize>,
    micro_batch: usize,
    placement: &crate::model::device::Placement,
) -> Result<usize> {
    if placement.is_gpu() {
        if flag.is_some_and(|w| w > 1) {
            bail!("--workers: on a GPU a micro-batch is one packed pass; use --batch-size instead of several threads");
        }
        return Ok(1);
    }
    crate::workers::resolve(flag, micro_batch)
}

/// The complete fine-tuned checkpoint, built in a temporary directory and renamed.
fn write_output(
    args: &FinetuneArgs,
    trained: &HashMap<String, Tensor>,
    plan: &Plan,
    log_lines: &[String],
) -> Result<()> {
    write_dir_atomic(&args.out, |tmp| {
        rewrite_weights(&args.model, tmp, |n| Ok(Some(n.to_string())), trained)?;
        std::fs::copy(args.model.join("config.json"), tmp.join("config.json")).with_context(
            || format!("{}: cannot copy", args.model.join("config.json").display()),
        )?;
        copy_other_files(&args.model, tmp)?;
        std::fs::write(tmp.join(PLAN_FILE), plan.to_json_string())?;
        let title = format!("fine-tuning loss, layers {:?}", plan.finetune);
        write_log_and_curve(tmp, &title, log_lines)
    })
}
