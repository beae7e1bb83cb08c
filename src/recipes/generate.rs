//! `interlace generate`: greedy answer to one prompt with images; only the generated text
//! goes to stdout, timings to stderr.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::eval::generate::{eos_ids, greedy, prompt_inputs};
use crate::model::Model;
use crate::processor::Processor;

#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Hugging Face model directory, or a Hub repository id in the local cache
    /// (Org/Name[@revision], e.g. Qwen/Qwen3-VL-2B-Instruct).
    #[arg(long, value_parser = crate::hub::model_arg)]
    pub model: PathBuf,
    /// An image to show the model (repeat for several; they come before the prompt).
    #[arg(long, value_name = "PATH")]
    pub image: Vec<PathBuf>,
    /// The user's text.
    #[arg(long)]
    pub prompt: String,
    /// Stop after this many new tokens (an end-of-sequence token stops earlier).
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Most tokens of prompt plus answer; a longer prompt is refused before the model
    /// loads (memory grows with the square of the length). Never more than the model's
    /// max_position_embeddings.
    #[arg(long, default_value_t = crate::model::config::DEFAULT_MAX_LENGTH)]
    pub max_length: usize,
    #[command(flatten)]
    pub placement: crate::recipes::placement::DeviceArgs,
}

pub fn run(args: &GenerateArgs) -> Result<String> {
    let processor =
        Processor::from_dir(&args.model)?.with_image_backend(args.placement.image_backend);
    let images = processor.load_images(&args.image)?;
    let placement = args.placement.resolve()?;
    let device = placement.device.clone();
    let inputs = prompt_inputs(&processor, &images, &args.prompt, &device)?;
    let config = crate::model::ModelConfig::from_dir(&args.model)?;
    config
        .check_length(inputs.input_ids.len(), args.max_new_tokens, args.max_length)
        .context("--prompt")?;
    let model = Model::load_for_inference(&args.model, placement.dtype, &device)?;
    let eos = eos_ids(&args.model, &processor)?;
    let out = greedy(&model, &inputs, args.max_new_tokens, &eos)?;
    let n = out.tokens.len();
    eprintln!(
        "generate: {} prompt tokens, {n} new; first token after {:.3} s, then {:.1} tokens/s ({})",
        out.prompt_len,
        out.prefill.as_secs_f64(),
        if n > 1 {
            (n - 1) as f64 / out.decode.as_secs_f64().max(1e-9)
        } else {
            0.0
        },
        placement.describe()
    );
    let mut text = processor.tokenizer.decode(&out.tokens, true)?;
    text.push('\n');
    Ok(text)
}
