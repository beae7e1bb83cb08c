//! `interlace pretrain`: trains a small Qwen3-VL from scratch with every tensor trainable.
//!
//! It trains a byte-level BPE tokenizer on the data's texts (Qwen2's pre-tokenizer and
//! special tokens), writes a Qwen3-VL checkpoint directory of the chosen shape with weights
//! initialised as transformers' `_init_weights` does (normal(0, initializer_range) for
//! linear, convolution and embedding weights, zero biases, norm weights one), then trains
//! all of it (causal-LM loss on the assistant tokens, AdamW with weight decay, cosine
//! schedule with warm-up, clipping) and writes a complete checkpoint that every other
//! command and transformers read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use serde_json::{json, Value};

use crate::data::{readable_portion, Sample, Take};
use crate::fsio::write_dir_atomic;
use crate::model::qwen3_vl::shape::{init_weights, Shape, TokenIds, VisionShape};
use crate::model::Model;
use crate::processor::Processor;
use crate::train::adamw::AdamWConfig;
use crate::train::schedule::{warmup_steps, CosineSchedule};
use crate::train::session::{write_log_and_curve, Session};
use crate::train::trainer::{TrainOptions, Trainer};

/// Qwen3-VL's chat template (as published), written into the checkpoint.
pub const CHAT_TEMPLATE: &str = include_str!("../../tools/qwen3_vl_chat_template.jinja");

/// Qwen2's pre-tokenizer pattern (the `Split` of published Qwen2/2.5/3(-VL) tokenizer.json).
pub const PRETOKENIZE_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Added special tokens in the order (hence ids) of published Qwen2.5/Qwen3-VL tokenizers.
pub const SPECIAL_TOKENS: [&str; 14] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
];
/// Added tokens that are not special (the chat template writes them).
pub const OTHER_ADDED: [&str; 4] = ["<tool_call>", "</tool_call>", "<think>", "</think>"];

#[derive(Debug, Clone, clap::Args)]
pub struct PretrainArgs {
    /// Training data, detected by content: LLaVA-style JSON/JSONL, a FineVision Parquet
    /// file, or a directory of them.
    #[arg(long, value_name = "FILE|DIR", value_parser = crate::hub::data_arg)]
    pub data: PathBuf,
    /// Output directory: the trained checkpoint (must not exist yet).
    #[arg(long)]
    pub out: PathBuf,
    /// Curriculum: train on this data alone for the first --first-steps optimizer steps,
    /// then on --data (e.g. `synth`'s easy warm-up families SynthBasic*, which teach a
    /// model from scratch to look at the image far sooner than the full mix does). Repeat
    /// the flag to give several; their samples are mixed. The tokenizer is learnt from all
    /// the data.
    #[arg(long, value_name = "FILE|DIR", requires = "first_steps")]
    pub first: Vec<PathBuf>,
    /// Optimizer steps on --first's data; they count towards --steps.
    #[arg(long, value_name = "N", requires = "first")]
    pub first_steps: Option<usize>,
    /// Continue pretraining this checkpoint (a model directory, e.g. an earlier
    /// `pretrain`'s output) instead of starting from random weights: its weights, shape,
    /// tokenizer and chat template are kept, and every tensor is trained again with a fresh
    /// optimizer and schedule. Excludes --shape and --vocab-size.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["shape", "vocab_size"])]
    pub init: Option<PathBuf>,
    /// Model shape: `demo` (about 12 M parameters) or a JSON file overriding any of its
    /// fields ({"text": {...}, "vision": {...}}, names as in config.json).
    #[arg(long, default_value = "demo", value_name = "demo|FILE.json")]
    pub shape: String,
    /// Vocabulary size of the model (the tokenizer's BPE vocabulary plus its 18 added
    /// tokens; embedding rows beyond what the data supports stay unused).
    #[arg(long, default_value_t = 1024)]
    pub vocab_size: usize,
    /// Passes over the data (ignored with --steps).
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Train for exactly N optimizer steps instead (reshuffling at each pass over the data).
    #[arg(long, value_name = "N")]
    pub steps: Option<usize>,
    /// Conversations per optimizer step.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Conversations packed into one forward/backward pass (default: the whole batch).
    #[arg(long, value_name = "N")]
    pub micro_batch: Option<usize>,
    /// Data-parallel training threads: each takes a share of every micro-batch's
    /// conversations, with single-threaded tensor ops (default: one per core, at most the
    /// micro-batch size). 1: one thread whose tensor ops use every core. Results differ
    /// between worker counts by float rounding only (gradients added in another order).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Peak learning rate of the vision tower's tensors (`model.visual.*`), on the same
    /// warm-up and cosine schedule (default: --lr): the tower may need another rate than
    /// the language model to learn small details (README, "The vision tower alone").
    #[arg(long, value_name = "LR")]
    pub visual_lr: Option<f64>,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 0.03)]
    pub warmup_ratio: f64,
    /// Global gradient-norm clip (0: none).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Seed of the tokenizer-independent choices: weight initialisation and sample order.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Save a resumable checkpoint every N optimizer steps (in OUT.train/).
    #[arg(long, value_name = "N")]
    pub save_every: Option<usize>,
    /// Continue from the last checkpoint in OUT.train/ (same settings required).
    #[arg(long)]
    pub resume: bool,
    /// dtype of the written weights.
    #[arg(long, default_value = "bf16", value_parser = ["bf16", "f32"])]
    pub save_dtype: String,
    /// Where to train and in what precision (see `interlace forward --help`). Every tensor
    /// keeps an f32 master weight and f32 AdamW moments; in bf16 the model computes with
    /// their bf16 casts.
    #[command(flatten)]
    pub placement: crate::recipes::placement::DeviceArgs,
    /// Images are resized to at most this many pixels (also written to
    /// preprocessor_config.json).
    #[arg(long, default_value_t = 50176)]
    pub max_pixels: usize,
    /// Images are resized to at least this many pixels.
    #[arg(long, default_value_t = 784)]
    pub min_pixels: usize,
    /// Conversations are cut to this many tokens.
    #[arg(long, default_value_t = 2048)]
    pub max_length: usize,
}

/// Trains a byte-level BPE tokenizer (Qwen2's layout: NFC, the Qwen2 split pattern, byte
/// level, Qwen's added tokens at the end) on `texts` with `vocab_size` entries in all.
pub fn train_tokenizer(texts: &[String], vocab_size: usize) -> Result<tokenizers::Tokenizer> {
    use tokenizers::decoders::byte_level::ByteLevel;
    use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
    use tokenizers::normalizers::unicode::NFC;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, TokenizerImpl};
    let added = SPECIAL_TOKENS.len() + OTHER_ADDED.len();
    if vocab_size < 256 + added + 1 {
        bail!(
            "--vocab-size must be at least {} (256 byte symbols, {added} added tokens, one merge)",
            256 + added + 1
        );
    }
    let split = Split::new(
        SplitPattern::Regex(PRETOKENIZE_REGEX.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| anyhow::anyhow!("tokenizer pattern: {e}"))?;
    let byte_level = ByteLevel::new(false, false, false);
    let mut tok: TokenizerImpl<
        BPE,
        tokenizers::NormalizerWrapper,
        tokenizers::PreTokenizerWrapper,
        tokenizers::PostProcessorWrapper,
        tokenizers::DecoderWrapper,
    > = TokenizerImpl::new(BPE::default());
    tok.with_normalizer(Some(NFC));
    tok.with_pre_tokenizer(Some(Sequence::new(vec![
        PreTokenizerWrapper::Split(split),
        PreTokenizerWrapper::ByteLevel(byte_level),
    ])));
    tok.with_post_processor(Some(byte_level));
    tok.with_decoder(Some(byte_level));
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size - added)
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    tok.train(&mut trainer, texts.iter())
        .map_err(|e| anyhow::anyhow!("training the tokenizer failed: {e}"))?;
    let special: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true).normalized(false))
        .collect();
    tok.add_special_tokens(&special);
    let other: Vec<AddedToken> = OTHER_ADDED
        .iter()
        .map(|t| AddedToken::from(*t, false).normalized(false))
        .collect();
    tok.add_tokens(&other);
    let json = tok
        .to_string(false)
        .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
    json.parse::<tokenizers::Tokenizer>()
        .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))
}

fn token_ids(tok: &tokenizers::Tokenizer) -> Result<TokenIds> {
    let id = |t: &str| {
        tok.token_to_id(t)
            .with_context(|| format!("internal error: the tokenizer lacks {t}"))
    };
    Ok(TokenIds {
        endoftext: id("<|endoftext|>")?,
        im_end: id("<|im_end|>")?,
        vision_start: id("<|vision_start|>")?,
        vision_end: id("<|vision_end|>")?,
        image_pad: id("<|image_pad|>")?,
        video_pad: id("<|video_pad|>")?,
    })
}

/// Writes the tokenizer, processor and generation files of the checkpoint into `dir`.
fn write_side_files(
    dir: &Path,
    tok: &tokenizers::Tokenizer,
    args: &PretrainArgs,
    patch: &VisionShape,
) -> Result<()> {
    let ids = token_ids(tok)?;
    let file = |name: &str| dir.join(name);
    tok.save(file("tokenizer.json"), false)
        .map_err(|e| anyhow::anyhow!("{}: cannot write ({e})", file("tokenizer.json").display()))?;
    let mut decoder = serde_json::Map::new();
    for t in SPECIAL_TOKENS.iter().chain(OTHER_ADDED.iter()) {
        let id = tok
            .token_to_id(t)
            .context("internal error: added token without id")?;
        decoder.insert(
            id.to_string(),
            json!({"content": t, "lstrip": false, "normalized": false, "rstrip": false,
                   "single_word": false, "special": SPECIAL_TOKENS.contains(t)}),
        );
    }
    let tokenizer_config = json!({
        "add_bos_token": false,
        "add_prefix_space": false,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": SPECIAL_TOKENS[1..].to_vec(),
        "bos_token": null,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": false,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "processor_class": "Qwen3VLProcessor",
        "split_special_tokens": false,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": null
    });
    let pretty = |v: &Value| serde_json::to_string_pretty(v).map(|s| s + "\n");
    std::fs::write(file("tokenizer_config.json"), pretty(&tokenizer_config)?)?;
    std::fs::write(file("chat_template.jinja"), CHAT_TEMPLATE)?;
    let image = |kind: &str, key: &str| {
        json!({
            "size": {"longest_edge": args.max_pixels, "shortest_edge": args.min_pixels},
            "patch_size": patch.patch_size,
            "temporal_patch_size": patch.temporal_patch_size,
            "merge_size": patch.spatial_merge_size,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "processor_class": "Qwen3VLProcessor",
            key: kind
        })
    };
    std::fs::write(
        file("preprocessor_config.json"),
        pretty(&image("Qwen2VLImageProcessorFast", "image_processor_type"))?,
    )?;
    std::fs::write(
        file("video_preprocessor_config.json"),
        pretty(&image("Qwen3VLVideoProcessor", "video_processor_type"))?,
    )?;
    let generation = json!({
        "bos_token_id": ids.endoftext,
        "do_sample": false,
        "eos_token_id": [ids.im_end, ids.endoftext],
        "pad_token_id": ids.endoftext,
        "transformers_version": "4.57.0"
    });
    std::fs::write(file("generation_config.json"), pretty(&generation)?)?;
    Ok(())
}

/// Every user and assistant text of the samples (what the tokenizer learns from).
fn texts_of(samples: &[Sample]) -> Vec<String> {
    samples
        .iter()
        .flat_map(|s| {
            s.turns
                .iter()
                .map(|t| t.text.replace(crate::data::IMAGE_MARKER, ""))
        })
        .collect()
}

/// Where a run keeps its resumable state (and the initial checkpoint it trains from).
pub fn state_dir(out: &Path) -> PathBuf {
    crate::recipes::finetune::state_dir(out)
}

/// The samples of each optimizer step: a seeded shuffle per pass over the data, cut into
/// steps of `per_step` (a pass's last, shorter step included); with `steps`, exactly that
/// many steps, passing over the data as often as needed.
fn schedule_samples(
    n: usize,
    per_step: usize,
    epochs: usize,
    steps: Option<usize>,
    seed: u64,
) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut epoch = 0u64;
    loop {
        if steps.is_none() && epoch as usize >= epochs {
            break;
        }
        let mut order: Vec<usize> = (0..n).collect();
        crate::rng::SplitMix64::new(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .shuffle(&mut order);
        for chunk in order.chunks(per_step) {
            if steps.is_some_and(|s| out.len() >= s) {
                return out;
            }
            out.push(chunk.to_vec());
        }
        epoch += 1;
        if steps.is_some_and(|s| out.len() >= s) {
            return out;
        }
    }
    out
}

/// --first in a run's identity: null, one path (as runs before it was repeatable wrote
/// it) or a list.
fn first_json(first: &[PathBuf]) -> Value {
    let paths: Vec<String> = first.iter().map(|p| p.display().to_string()).collect();
    match paths.as_slice() {
        [] => Value::Null,
        [one] => json!(one),
        _ => json!(paths),
    }
}

/// Adds `--init` and `--visual-lr` to a run's identity (only when given, so that earlier
/// runs' saved identities still match).
fn with_init(mut identity: Value, args: &PretrainArgs) -> Value {
    if let Some(map) = identity.as_object_mut() {
        if let Some(dir) = &args.init {
            map.insert("init".into(), json!(dir.display().to_string()));
        }
        if let Some(lr) = args.visual_lr {
            map.insert("visual_lr".into(), json!(lr));
        }
    }
    identity
}

fn fingerprint(
    args: &PretrainArgs,
    shape: &Shape,
    vocab: usize,
    samples: &[crate::data::Sample],
    dtype: DType,
) -> Value {
    let n_samples = samples.len();
    let mut f = with_init(
        json!({
            "data_content": crate::data::content_fingerprint(samples),
            "data": args.data.display().to_string(),
            "first": first_json(&args.first),
            "first_steps": args.first_steps,
            "shape": shape,
            "vocab_size": vocab,
            "samples": n_samples,
            "epochs": args.epochs,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "weight_decay": args.weight_decay,
            "warmup_ratio": args.warmup_ratio,
            "max_grad_norm": args.max_grad_norm,
            "max_pixels": args.max_pixels,
            "min_pixels": args.min_pixels,
            "max_length": args.max_length,
            "seed": args.seed,
        }),
        args,
    );
    if dtype != DType::F32 {
        // (Absent for f32, so that runs started before --dtype existed still resume.)
        f["dtype"] = json!(crate::model::device::dtype_name(dtype));
    }
    if let Some(b) = args.placement.image_backend_fingerprint() {
        f["image_backend"] = json!(b);
    }
    f
}

fn check_args(args: &PretrainArgs) -> Result<()> {
    if args.batch_size == 0 || args.epochs == 0 || args.steps == Some(0) {
        bail!("--batch-size, --epochs and --steps must be at least 1");
    }
    if args.micro_batch == Some(0) {
        bail!("--micro-batch must be at least 1");
    }
    if !(0.0..1.0).contains(&args.warmup_ratio) {
        bail!(
            "--warmup-ratio must be in [0, 1), got {}",
            args.warmup_ratio
        );
    }
    if !(args.lr > 0.0 && args.lr.is_finite()) {
        bail!("--lr must be a positive number, got {}", args.lr);
    }
    if let Some(lr) = args.visual_lr {
        if !(lr >= 0.0 && lr.is_finite()) {
            bail!("--visual-lr must be a non-negative number, got {lr}");
        }
    }
    if !(args.weight_decay >= 0.0 && args.weight_decay.is_finite()) {
        bail!(
            "--weight-decay must be a non-negative number, got {}",
            args.weight_decay
        );
    }
    if args.min_pixels > args.max_pixels {
        bail!("--min-pixels must not exceed --max-pixels");
    }
    if args.first_steps == Some(0) {
        bail!("--first-steps must be at least 1");
    }
    if let (Some(first), Some(steps)) = (args.first_steps, args.steps) {
        if first >= steps {
            bail!("--first-steps ({first}) must be less than --steps ({steps})");
        }
    }
    Ok(())
}

/// Builds (or, when resuming, reuses) the initial checkpoint in `dir`: tokenizer trained on
/// the data, config, processor files and seeded initial weights (f32); with `--init`, that
/// checkpoint's tokenizer, chat template and weights instead.
fn initial_checkpoint(
    dir: &Path,
    args: &PretrainArgs,
    shape: &Shape,
    vocab: usize,
    samples: &[Sample],
) -> Result<()> {
    let identity = with_init(
        json!({
            "data": args.data.display().to_string(),
            "first": first_json(&args.first),
            "shape": shape,
            "vocab_size": vocab,
            "seed": args.seed,
            "max_pixels": args.max_pixels,
            "min_pixels": args.min_pixels,
        }),
        args,
    );
    // Written last: its presence marks a complete initial checkpoint.
    let identity_path = dir.join("init.json");
    if identity_path.exists() {
        let saved: Value = serde_json::from_str(
            &std::fs::read_to_string(&identity_path)
                .with_context(|| format!("{}: cannot read", identity_path.display()))?,
        )
        .with_context(|| format!("{}: not valid JSON", identity_path.display()))?;
        if saved != identity {
            bail!(
                "{}: the initial checkpoint was made with other settings ({saved}); resume with the same flags or remove {}",
                identity_path.display(),
                dir.parent().unwrap_or(dir).display()
            );
        }
        return Ok(());
    }
    let tmp = dir.with_file_name("init.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    let (tok, weights) = match &args.init {
        Some(from) => {
            let file = from.join("tokenizer.json");
            let tok = crate::catch_panic(|| tokenizers::Tokenizer::from_file(&file))
                .map_err(|p| anyhow::anyhow!("{}: not a usable tokenizer ({p})", file.display()))?
                .map_err(|e| anyhow::anyhow!("{}: not a usable tokenizer ({e})", file.display()))?;
            (tok, init_weights_from(from, shape, vocab)?)
        }
        None => {
            let tok = train_tokenizer(&texts_of(samples), vocab)?;
            (tok, init_weights(shape, vocab, args.seed)?)
        }
    };
    if tok.get_vocab_size(true) > vocab {
        bail!(
            "the tokenizer has {} entries, more than the model's vocabulary of {vocab}",
            tok.get_vocab_size(true)
        );
    }
    write_side_files(&tmp, &tok, args, &shape.vision)?;
    if let Some(from) = &args.init {
        // The checkpoint's own chat template and tokenizer settings, not ours.
        for name in ["tokenizer_config.json", "chat_template.jinja"] {
            if from.join(name).exists() {
                std::fs::copy(from.join(name), tmp.join(name))
                    .with_context(|| format!("{}: cannot copy", from.join(name).display()))?;
            }
        }
    }
    let config = shape.config_json(vocab, &token_ids(&tok)?, "float32");
    std::fs::write(
        tmp.join("config.json"),
        serde_json::to_string_pretty(&config)? + "\n",
    )?;
    crate::model::weights::save_tensors(&tmp.join("model.safetensors"), &weights)?;
    std::fs::write(
        tmp.join("init.json"),
        serde_json::to_string_pretty(&identity)? + "\n",
    )?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    Ok(())
}

/// The weights of `--init`'s checkpoint in f32, which must be exactly the tensors of
/// `shape` (names and sizes).
fn init_weights_from(dir: &Path, shape: &Shape, vocab: usize) -> Result<HashMap<String, Tensor>> {
    let mut weights = HashMap::new();
    for file in crate::model::weights::weight_files(dir)? {
        let loaded = candle_core::safetensors::load(&file, &Device::Cpu)
            .with_context(|| format!("{}: cannot read the weights", file.display()))?;
        for (name, t) in loaded {
            weights.insert(name, t.to_dtype(DType::F32)?);
        }
    }
    let expected = shape.tensors(vocab);
    for (name, dims, _) in &expected {
        match weights.get(name) {
            None => bail!("{}: the weights lack {name}", dir.display()),
            Some(t) if t.dims() != dims.as_slice() => bail!(
                "{}: {name} has shape {:?} where its config.json implies {dims:?}",
                dir.display(),
                t.dims()
            ),
            Some(_) => {}
        }
    }
    if weights.len() != expected.len() {
        let known: std::collections::HashSet<&str> =
            expected.iter().map(|(n, _, _)| n.as_str()).collect();
        let mut extra: Vec<&String> = weights
            .keys()
            .filter(|n| !known.contains(n.as_str()))
            .collect();
        extra.sort();
        bail!(
            "{}: tensors that a Qwen3-VL of its config.json does not have: {extra:?}",
            dir.display()
        );
    }
    Ok(weights)
}

pub fn run(args: &PretrainArgs) -> Result<String> {
    check_args(args)?;
    let placement = args.placement.resolve()?;
    let workers = crate::recipes::finetune::training_workers(
        args.workers,
        args.micro_batch.unwrap_or(args.batch_size),
        &placement,
    )?;
    let (shape, vocab) = match &args.init {
        Some(dir) => Shape::from_config(&crate::model::config::ModelConfig::from_dir(dir)?)
            .with_context(|| format!("{}: cannot continue from this model", dir.display()))?,
        None => (Shape::from_arg(&args.shape)?, args.vocab_size),
    };
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
    let mut unreadable = Vec::new();
    let mut first = Vec::new();
    for path in &args.first {
        first.extend(readable_portion(
            path,
            1.0,
            None,
            args.seed,
            Take::Random,
            &mut unreadable,
        )?);
    }
    let main = readable_portion(
        &args.data,
        1.0,
        None,
        args.seed,
        Take::Random,
        &mut unreadable,
    )?;
    let n_first = first.len();
    let samples: Vec<Sample> = first.into_iter().chain(main).collect();
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("{}: cannot create", state_dir.display()))?;
    let init_dir = state_dir.join("init");
    initial_checkpoint(&init_dir, args, &shape, vocab, &samples)?;
    let processor = Processor::from_dir(&init_dir)?
        .with_image_backend(args.placement.image_backend)
        .with_pixel_bounds(Some(args.min_pixels), Some(args.max_pixels))?;
    // Loaded in f32: the master weights start exact; the trainer casts for computing.
    let model = Model::load(&init_dir, DType::F32, &placement.device)?;

    // The curriculum's steps, then the main data's (indices after the first data's).
    let first_steps = args.first_steps.unwrap_or(0);
    let mut steps = schedule_samples(n_first, args.batch_size, 1, Some(first_steps), args.seed);
    steps.extend(
        schedule_samples(
            samples.len() - n_first,
            args.batch_size,
            args.epochs,
            args.steps.map(|s| s - first_steps),
            args.seed,
        )
        .into_iter()
        .map(|step| step.into_iter().map(|i| i + n_first).collect::<Vec<_>>()),
    );
    let total = steps.len();
    let schedule = CosineSchedule {
        base_lr: args.lr,
        warmup: warmup_steps(total, args.warmup_ratio),
        total,
    };
    let options = TrainOptions {
        grad_checkpoint: false,
        micro_batch: args.micro_batch.unwrap_or(args.batch_size),
        max_grad_norm: args.max_grad_norm,
        adamw: AdamWConfig {
            weight_decay: args.weight_decay,
            ..Default::default()
        },
        workers,
        tensor_update: None,
    };
    let mut trainer = Trainer::whole_model(model, options, placement.dtype)?;
    if let Some(lr) = args.visual_lr {
        let n = trainer.scale_lr("model.visual.", lr / args.lr);
        eprintln!("pretrain: the vision tower's {n} tensors at peak learning rate {lr:e}");
    }
    let n_params: usize = trainer.params.iter().map(|p| p.var.elem_count()).sum();
    let session = Session {
        name: "pretrain",
        state_dir: &state_dir,
        save_every: args.save_every,
        max_length: args.max_length,
        model_files: Some((&init_dir, &MODEL_FILES)),
    };
    let (state, log_lines) = session.open(
        &mut trainer,
        fingerprint(args, &shape, vocab, &samples, placement.dtype),
        total,
        unreadable.len(),
        args.resume,
    )?;
    eprintln!(
        "pretrain: {} parameters ({} tensors, all trainable), vocabulary {}, {} samples, {total} optimizer steps of {}, warm-up {} steps, on {}",
        n_params,
        trainer.params.len(),
        vocab,
        samples.len(),
        args.batch_size,
        schedule.warmup,
        placement.describe()
    );
    if !args.first.is_empty() {
        let paths: Vec<String> = args.first.iter().map(|p| p.display().to_string()).collect();
        eprintln!(
            "pretrain: the first {first_steps} steps on {} alone ({n_first} samples)",
            paths.join(", ")
        );
    }
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
    let save_dtype = if args.save_dtype == "f32" {
        DType::F32
    } else {
        DType::BF16
    };
    let trained: HashMap<String, Tensor> = trainer
        .params
        .iter()
        .map(|p| {
            Ok((
                p.name.clone(),
                p.var
                    .as_tensor()
                    .reshape(p.stored_shape.as_slice())?
                    .to_dtype(save_dtype)?,
            ))
        })
        .collect::<Result<_>>()?;
    drop(trainer);
    write_output(args, &shape, vocab, &init_dir, &trained, &done.log_lines)?;
    let _ = std::fs::remove_dir_all(&state_dir);
    Ok(format!(
        "{}: pretrained {n_params} parameters for {total} steps ({:.2} s/step){}\n",
        args.out.display(),
        done.seconds_per_step,
        done.summary()
    ))
}

/// The files of a model directory besides its weights, as pretraining writes them.
const MODEL_FILES: [&str; 7] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "generation_config.json",
];

/// The complete checkpoint, built in a temporary directory and renamed.
fn write_output(
    args: &PretrainArgs,
    shape: &Shape,
    vocab: usize,
    init_dir: &Path,
    trained: &HashMap<String, Tensor>,
    log_lines: &[String],
) -> Result<()> {
    write_dir_atomic(&args.out, |tmp| {
        for name in MODEL_FILES.iter().filter(|n| **n != "config.json") {
            std::fs::copy(init_dir.join(name), tmp.join(name))
                .with_context(|| format!("{}: cannot copy", init_dir.join(name).display()))?;
        }
        let tok = tokenizers::Tokenizer::from_file(init_dir.join("tokenizer.json"))
            .map_err(|e| anyhow::anyhow!("{}: {e}", init_dir.join("tokenizer.json").display()))?;
        let dtype = if args.save_dtype == "f32" {
            "float32"
        } else {
            "bfloat16"
        };
        let config = shape.config_json(vocab, &token_ids(&tok)?, dtype);
        std::fs::write(
            tmp.join("config.json"),
            serde_json::to_string_pretty(&config)? + "\n",
        )?;
        crate::model::weights::save_tensors(&tmp.join("model.safetensors"), trained)?;
        write_log_and_curve(tmp, "pretraining loss", log_lines)
    })
}
