//! `interlace latency`: time to first token and decoding speed of one model, or of a dense
//! and a pruned model side by side with the best speed-up the removed layers allow.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::device::Placement;
use anyhow::{bail, Context, Result};

use crate::eval::generate::{greedy, prompt_inputs};
use crate::eval::latency::{median, ComputeShape};
use crate::model::Model;
use crate::processor::Processor;

#[derive(Debug, Clone, clap::Args)]
pub struct LatencyArgs {
    /// Hugging Face model directory (the dense one when comparing).
    #[arg(long, value_parser = crate::hub::model_arg)]
    pub model: PathBuf,
    /// A second model to time on the same input, e.g. the pruned one.
    #[arg(long, value_name = "DIR", value_parser = crate::hub::model_arg)]
    pub compare: Option<PathBuf>,
    /// Image(s) in the prompt (default: none).
    #[arg(long, value_name = "PATH")]
    pub image: Vec<PathBuf>,
    #[arg(long, default_value = "Describe this image in detail.")]
    pub prompt: String,
    /// Timed runs per model (the median is reported), after --warmup untimed ones.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Tokens decoded per run (end-of-sequence tokens do not stop it).
    #[arg(long, default_value_t = 32)]
    pub new_tokens: usize,
    /// Most tokens of prompt plus decoded tokens; a longer input is refused before the model
    /// loads (memory grows with the square of the length). Never more than the model's
    /// max_position_embeddings.
    #[arg(long, default_value_t = crate::model::config::DEFAULT_MAX_LENGTH)]
    pub max_length: usize,
    /// Also write the measurements as JSON to this file (for scripts).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub placement: crate::recipes::placement::DeviceArgs,
}

/// Medians for one model.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub ttft: Duration,
    pub decode_tokens_per_s: f64,
    pub prompt_tokens: usize,
    pub patches: usize,
    pub shape: ComputeShape,
}

pub fn time_model(dir: &Path, args: &LatencyArgs, placement: &Placement) -> Result<Timing> {
    let device = placement.device.clone();
    let processor = Processor::from_dir(dir)?.with_image_backend(args.placement.image_backend);
    let images = processor.load_images(&args.image)?;
    let inputs = prompt_inputs(&processor, &images, &args.prompt, &device)?;
    crate::model::ModelConfig::from_dir(dir)?
        .check_length(inputs.input_ids.len(), args.new_tokens, args.max_length)
        .context("--prompt")?;
    let model = Model::load_for_inference(dir, placement.dtype, &device)?;
    let patches = inputs
        .image_grid_thw
        .iter()
        .map(|g| g[0] * g[1] * g[2])
        .sum();
    let (mut ttft, mut rate) = (Vec::new(), Vec::new());
    for run in 0..args.warmup + args.runs {
        let g = greedy(&model, &inputs, args.new_tokens, &[])?;
        if run >= args.warmup {
            ttft.push(g.prefill);
            let n = g.tokens.len().saturating_sub(1);
            rate.push(Duration::from_secs_f64(
                g.decode.as_secs_f64() / n.max(1) as f64,
            ));
        }
    }
    let per_token = median(rate).as_secs_f64();
    Ok(Timing {
        ttft: median(ttft),
        decode_tokens_per_s: if per_token > 0.0 {
            1.0 / per_token
        } else {
            0.0
        },
        prompt_tokens: inputs.input_ids.len(),
        patches,
        shape: ComputeShape::of(dir)?,
    })
}

pub fn run(args: &LatencyArgs) -> Result<String> {
    if args.runs == 0 || args.new_tokens < 2 {
        bail!("--runs must be at least 1 and --new-tokens at least 2");
    }
    let placement = args.placement.resolve()?;
    let a = time_model(&args.model, args, &placement)?;
    let mut out = format!(
        "{} prompt tokens ({} image patches), {} new tokens, median of {} runs after {} warm-up, on {}\n\n",
        a.prompt_tokens,
        a.patches,
        args.new_tokens,
        args.runs,
        args.warmup,
        placement.describe()
    );
    out.push_str(
        "| model | decoder layers | time to first token | decode tokens/s |\n|---|---|---|---|\n",
    );
    let row = |name: &Path, t: &Timing| {
        format!(
            "| {} | {} | {:.1} ms | {:.1} |\n",
            name.display(),
            t.shape.decoder_layers,
            t.ttft.as_secs_f64() * 1e3,
            t.decode_tokens_per_s
        )
    };
    out.push_str(&row(&args.model, &a));
    let entry = |name: &Path, t: &Timing| {
        serde_json::json!({
            "model": name.display().to_string(),
            "decoder_layers": t.shape.decoder_layers,
            "ttft_ms": t.ttft.as_secs_f64() * 1e3,
            "decode_tokens_per_s": t.decode_tokens_per_s,
        })
    };
    let mut json = serde_json::json!({
        "device": placement.describe(),
        "prompt_tokens": a.prompt_tokens,
        "image_patches": a.patches,
        "new_tokens": args.new_tokens,
        "runs": args.runs,
        "warmup": args.warmup,
        "models": [entry(&args.model, &a)],
    });
    if let Some(other) = &args.compare {
        let b = time_model(other, args, &placement)?;
        out.push_str(&row(other, &b));
        let ideal_ttft = a.shape.prefill_macs(a.prompt_tokens, a.patches)
            / b.shape.prefill_macs(b.prompt_tokens, b.patches);
        let ideal_decode = a.shape.decode_macs() / b.shape.decode_macs();
        out.push_str(&format!(
            "\ntime to first token: {:.2}x faster (ideal {:.2}x from the removed layers' share of the multiply-adds)\ndecoding: {:.2}x faster (ideal {:.2}x)\n",
            a.ttft.as_secs_f64() / b.ttft.as_secs_f64().max(1e-12),
            ideal_ttft,
            b.decode_tokens_per_s / a.decode_tokens_per_s.max(1e-12),
            ideal_decode
        ));
        json["models"]
            .as_array_mut()
            .expect("a list")
            .push(entry(other, &b));
        json["speedup"] = serde_json::json!({
            "ttft": a.ttft.as_secs_f64() / b.ttft.as_secs_f64().max(1e-12),
            "ttft_ideal": ideal_ttft,
            "decode": b.decode_tokens_per_s / a.decode_tokens_per_s.max(1e-12),
            "decode_ideal": ideal_decode,
        });
    }
    if let Some(path) = &args.json {
        crate::fsio::write_atomic(path, serde_json::to_string_pretty(&json)?.as_bytes())?;
    }
    Ok(out)
}
