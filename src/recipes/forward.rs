//! `interlace forward`: one forward pass over a prompt (and images) showing how much each
//! decoder layer changes the hidden state (mean cosine between consecutive hidden states,
//! the pack-1 score of the similarity analysis) and the most likely next tokens.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};

use crate::model::ops::row_cosine;
use crate::model::{Flow, LayerObserver, Model, ModelInputs};
use crate::processor::{Message, Processor};

#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    /// Hugging Face model directory, or a Hub repository id in the local cache
    /// (Org/Name[@revision], e.g. Qwen/Qwen3-VL-2B-Instruct).
    #[arg(long, value_parser = crate::hub::model_arg)]
    pub model: PathBuf,
    /// An image to put before the prompt (repeat for several, in order).
    #[arg(long = "image", value_name = "PATH")]
    pub images: Vec<PathBuf>,
    /// The user's text.
    #[arg(long)]
    pub prompt: String,
    /// How many next-token candidates to show.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Most tokens of the input; a longer one is refused before the model loads (memory
    /// grows with the square of the length). Never more than the model's
    /// max_position_embeddings.
    #[arg(long, default_value_t = crate::model::config::DEFAULT_MAX_LENGTH)]
    pub max_length: usize,
    #[command(flatten)]
    pub placement: crate::recipes::placement::DeviceArgs,
}

/// Mean over token positions of cos(h_i, h_{i+1}) for consecutive hidden states.
#[derive(Default)]
struct ConsecutiveCosine {
    prev: Option<Tensor>,
    /// (original layer index, mean cosine between its input and output)
    scores: Vec<(Option<usize>, f32)>,
}

impl LayerObserver for ConsecutiveCosine {
    fn observe(&mut self, _index: usize, layer: Option<usize>, hidden: &Tensor) -> Result<Flow> {
        if let Some(prev) = &self.prev {
            let c = row_cosine(prev, hidden)?.mean_all()?.to_scalar::<f32>()?;
            self.scores.push((layer, c));
        }
        self.prev = Some(hidden.clone());
        Ok(Flow::Continue)
    }
}

pub fn run(args: &ForwardArgs) -> Result<String> {
    let processor =
        Processor::from_dir(&args.model)?.with_image_backend(args.placement.image_backend);
    let images = processor.load_images(&args.images)?;
    let messages = [Message::user_with_images(
        images.len(),
        args.prompt.as_str(),
    )];
    let enc = processor.encode(&messages, &images, true)?;
    let config = crate::model::ModelConfig::from_dir(&args.model)?;
    config
        .check_length(enc.input_ids.len(), 0, args.max_length)
        .context("--prompt")?;
    let placement = args.placement.resolve()?;
    let device = placement.device.clone();
    let model = Model::load_for_inference(&args.model, placement.dtype, &device)?;
    let inputs = ModelInputs::from_encoded(&enc, &device)?;
    let mut obs = ConsecutiveCosine::default();
    let logits = model.forward(&inputs, Some(&mut obs))?;

    let mut out = String::new();
    let n_image_tokens = enc.mm_token_type_ids.iter().filter(|&&t| t == 1).count();
    out.push_str(&format!(
        "{} tokens ({} image tokens from {} image(s){})\n",
        enc.input_ids.len(),
        n_image_tokens,
        images.len(),
        describe_grids(&enc.image_grid_thw, &args.images)
    ));
    out.push_str("layer  cos(in, out)  (1.0 = the layer changes nothing)\n");
    let n = obs.scores.len();
    for (i, (layer, c)) in obs.scores.iter().enumerate() {
        let label = match layer {
            Some(l) if i + 1 < n => format!("{l:>5}"),
            Some(l) => format!("{l:>5}*"),
            None => "    ?".into(),
        };
        out.push_str(&format!("{label}  {c:.4}\n"));
    }
    out.push_str(&format!(
        "(* the last layer's output is compared after the final norm; ran on {})\n",
        placement.describe()
    ));

    let last = logits.get(logits.dim(0)? - 1)?.to_dtype(DType::F32)?;
    let probs = candle_nn::ops::softmax_last_dim(&last.unsqueeze(0)?)?.squeeze(0)?;
    let mut ranked: Vec<(usize, f32)> = probs.to_vec1::<f32>()?.into_iter().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    out.push_str("next token:");
    for (id, p) in ranked.into_iter().take(args.top_k) {
        let text = processor
            .decode(&[id as u32])
            .unwrap_or_else(|_| format!("<{id}>"));
        out.push_str(&format!(" {text:?} {p:.3}"));
    }
    out.push('\n');
    Ok(out)
}

fn describe_grids(grids: &[[usize; 3]], paths: &[PathBuf]) -> String {
    grids
        .iter()
        .zip(paths)
        .map(|(g, p)| format!("; {}: {}x{} patches", file_name(p), g[1], g[2]))
        .collect()
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}
