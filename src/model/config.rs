//! Hugging Face `config.json` for Qwen3-VL: the text decoder, the vision tower and the
//! special token ids. RoPE settings are read from either the published layout
//! (`rope_scaling` + `rope_theta`) or the newer `rope_parameters`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub hidden_act: candle_nn::Activation,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub mrope_section: Vec<usize>,
    pub attention_bias: bool,
    pub max_position_embeddings: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub depth: usize,
    pub hidden_size: usize,
    pub hidden_act: candle_nn::Activation,
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub in_channels: usize,
    pub patch_size: usize,
    pub spatial_merge_size: usize,
    pub temporal_patch_size: usize,
    pub out_hidden_size: usize,
    pub num_position_embeddings: usize,
    pub deepstack_visual_indexes: Vec<usize>,
    pub rope_theta: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Qwen3VlConfig {
    pub model_type: String,
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub image_token_id: u32,
    pub video_token_id: u32,
    pub vision_start_token_id: u32,
    pub vision_end_token_id: u32,
    pub tie_word_embeddings: bool,
    /// The raw JSON, kept so that pruning can write it back with only the layer count changed.
    pub raw: Value,
}

/// Model types this build can run.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["qwen3_vl"];

fn get<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn req_usize(obj: &Value, key: &str, section: &str) -> Result<usize> {
    match get(obj, key) {
        Some(v) => v
            .as_u64()
            .map(|x| x as usize)
            .with_context(|| format!("{section}.{key} must be a non-negative integer, got {v}")),
        None => bail!("missing field {section}.{key}"),
    }
}

fn opt_usize(obj: &Value, key: &str, section: &str, default: usize) -> Result<usize> {
    if get(obj, key).is_none() {
        return Ok(default);
    }
    req_usize(obj, key, section)
}

fn opt_f64(obj: &Value, key: &str, section: &str, default: f64) -> Result<f64> {
    match get(obj, key) {
        None => Ok(default),
        Some(v) => v
            .as_f64()
            .with_context(|| format!("{section}.{key} must be a number, got {v}")),
    }
}

fn opt_bool(obj: &Value, key: &str, default: bool) -> Result<bool> {
    match get(obj, key) {
        None => Ok(default),
        Some(v) => v
            .as_bool()
            .with_context(|| format!("{key} must be true or false, got {v}")),
    }
}

fn activation(
    obj: &Value,
    key: &str,
    section: &str,
    default: &str,
) -> Result<candle_nn::Activation> {
    let name = match get(obj, key) {
        None => default.to_string(),
        Some(v) => v
            .as_str()
            .with_context(|| format!("{section}.{key} must be a string"))?
            .to_string(),
    };
    serde_json::from_value(Value::String(name.clone()))
        .with_context(|| format!("{section}.{key}: unsupported activation {name:?}"))
}

fn usize_list(v: &Value, what: &str) -> Result<Vec<usize>> {
    v.as_array()
        .with_context(|| format!("{what} must be a list of integers"))?
        .iter()
        .map(|x| {
            x.as_u64()
                .map(|x| x as usize)
                .with_context(|| format!("{what} must be a list of non-negative integers"))
        })
        .collect()
}

/// RoPE theta and M-RoPE sections, from `rope_parameters` (newer transformers) or
/// `rope_scaling` + `rope_theta` (published checkpoints).
fn text_rope(text: &Value) -> Result<(f64, Vec<usize>)> {
    let params = get(text, "rope_parameters").or_else(|| get(text, "rope_scaling"));
    let theta = params
        .and_then(|p| get(p, "rope_theta"))
        .or_else(|| get(text, "rope_theta"))
        .map(|v| {
            v.as_f64()
                .context("text_config.rope_theta must be a number")
        })
        .transpose()?
        .unwrap_or(500_000.0);
    if let Some(kind) = params.and_then(|p| get(p, "rope_type").or_else(|| get(p, "type"))) {
        let kind = kind.as_str().unwrap_or("?");
        if kind != "default" && kind != "mrope" {
            bail!("text_config rope_type {kind:?} is not supported (only default M-RoPE)");
        }
    }
    let section = match params.and_then(|p| get(p, "mrope_section")) {
        Some(v) => usize_list(v, "text_config mrope_section")?,
        None => vec![24, 20, 20],
    };
    if params
        .and_then(|p| get(p, "mrope_interleaved"))
        .and_then(|v| v.as_bool())
        == Some(false)
    {
        bail!("text_config: mrope_interleaved=false is not supported (Qwen3-VL interleaves)");
    }
    Ok((theta, section))
}

impl Qwen3VlConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let raw: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", path.display()))?;
        Self::from_value(raw).with_context(|| format!("{}", path.display()))
    }

    pub fn from_dir(dir: &Path) -> Result<Self> {
        crate::hub::check_model_dir(dir)?;
        let path = dir.join("config.json");
        if !path.exists() {
            bail!(
                "{}: not found (is this a Hugging Face model directory?)",
                path.display()
            );
        }
        Self::from_file(&path)
    }

    pub fn from_value(raw: Value) -> Result<Self> {
        let model_type = get(&raw, "model_type")
            .and_then(|v| v.as_str())
            .context("missing field model_type")?
            .to_string();
        if !SUPPORTED_MODEL_TYPES.contains(&model_type.as_str()) {
            bail!(
                "model_type {model_type:?} is not supported (supported: {})",
                SUPPORTED_MODEL_TYPES.join(", ")
            );
        }
        let t = get(&raw, "text_config").context("missing field text_config")?;
        let v = get(&raw, "vision_config").context("missing field vision_config")?;
        let ts = "text_config";
        let vs = "vision_config";

        let hidden_size = req_usize(t, "hidden_size", ts)?;
        let num_attention_heads = req_usize(t, "num_attention_heads", ts)?;
        let (rope_theta, mrope_section) = text_rope(t)?;
        let text = TextConfig {
            vocab_size: req_usize(t, "vocab_size", ts)?,
            hidden_size,
            intermediate_size: req_usize(t, "intermediate_size", ts)?,
            num_hidden_layers: req_usize(t, "num_hidden_layers", ts)?,
            num_attention_heads,
            num_key_value_heads: opt_usize(t, "num_key_value_heads", ts, num_attention_heads)?,
            head_dim: opt_usize(t, "head_dim", ts, hidden_size / num_attention_heads.max(1))?,
            hidden_act: activation(t, "hidden_act", ts, "silu")?,
            rms_norm_eps: opt_f64(t, "rms_norm_eps", ts, 1e-6)?,
            rope_theta,
            mrope_section,
            attention_bias: opt_bool(t, "attention_bias", false)?,
            max_position_embeddings: opt_usize(t, "max_position_embeddings", ts, 128_000)?,
        };
        let vision_theta = get(v, "rope_parameters")
            .and_then(|p| get(p, "rope_theta"))
            .or_else(|| get(v, "rope_theta"))
            .and_then(|x| x.as_f64())
            .unwrap_or(10_000.0);
        let vision = VisionConfig {
            depth: req_usize(v, "depth", vs)?,
            hidden_size: req_usize(v, "hidden_size", vs)?,
            hidden_act: activation(v, "hidden_act", vs, "gelu_pytorch_tanh")?,
            intermediate_size: req_usize(v, "intermediate_size", vs)?,
            num_heads: req_usize(v, "num_heads", vs)?,
            in_channels: opt_usize(v, "in_channels", vs, 3)?,
            patch_size: opt_usize(v, "patch_size", vs, 16)?,
            spatial_merge_size: opt_usize(v, "spatial_merge_size", vs, 2)?,
            temporal_patch_size: opt_usize(v, "temporal_patch_size", vs, 2)?,
            out_hidden_size: req_usize(v, "out_hidden_size", vs)?,
            num_position_embeddings: opt_usize(v, "num_position_embeddings", vs, 2304)?,
            deepstack_visual_indexes: match get(v, "deepstack_visual_indexes") {
                Some(x) => usize_list(x, "vision_config.deepstack_visual_indexes")?,
                None => vec![8, 16, 24],
            },
            rope_theta: vision_theta,
        };
        let id = |key: &str, default: u32| -> Result<u32> {
            Ok(opt_usize(&raw, key, "config", default as usize)? as u32)
        };
        // Published checkpoints put tie_word_embeddings at the top level; some writers put it
        // in text_config. The top level wins, as in transformers.
        let tie_word_embeddings = match get(&raw, "tie_word_embeddings") {
            Some(_) => opt_bool(&raw, "tie_word_embeddings", false)?,
            None => opt_bool(t, "tie_word_embeddings", false)?,
        };
        let cfg = Qwen3VlConfig {
            model_type,
            image_token_id: id("image_token_id", 151_655)?,
            video_token_id: id("video_token_id", 151_656)?,
            vision_start_token_id: id("vision_start_token_id", 151_652)?,
            vision_end_token_id: id("vision_end_token_id", 151_653)?,
            tie_word_embeddings,
            text,
            vision,
            raw,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        if !(self.text.rms_norm_eps > 0.0 && self.text.rms_norm_eps.is_finite()) {
            bail!(
                "text_config.rms_norm_eps must be a positive number, got {} (it divides by sqrt(mean square + eps))",
                self.text.rms_norm_eps
            );
        }
        let t = &self.text;
        if t.num_attention_heads == 0 || t.num_key_value_heads == 0 {
            bail!("text_config: attention head counts must be positive");
        }
        if !t.num_attention_heads.is_multiple_of(t.num_key_value_heads) {
            bail!(
                "text_config: num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                t.num_attention_heads,
                t.num_key_value_heads
            );
        }
        if !t.head_dim.is_multiple_of(2) {
            bail!(
                "text_config: head_dim ({}) must be even for RoPE",
                t.head_dim
            );
        }
        let sections: usize = t.mrope_section.iter().sum();
        if t.mrope_section.len() != 3 || sections != t.head_dim / 2 {
            bail!(
                "text_config: mrope_section {:?} must have 3 entries summing to head_dim/2 = {}",
                t.mrope_section,
                t.head_dim / 2
            );
        }
        let v = &self.vision;
        if v.num_heads == 0 || !v.hidden_size.is_multiple_of(v.num_heads) {
            bail!(
                "vision_config: hidden_size ({}) is not a multiple of num_heads ({})",
                v.hidden_size,
                v.num_heads
            );
        }
        if !(v.hidden_size / v.num_heads).is_multiple_of(4) {
            bail!("vision_config: head dim must be a multiple of 4 for 2-D RoPE");
        }
        let side = (v.num_position_embeddings as f64).sqrt() as usize;
        if side * side != v.num_position_embeddings {
            bail!(
                "vision_config: num_position_embeddings ({}) is not a square",
                v.num_position_embeddings
            );
        }
        if let Some(&bad) = v.deepstack_visual_indexes.iter().find(|&&i| i >= v.depth) {
            bail!(
                "vision_config: deepstack_visual_indexes entry {bad} is beyond the vision depth {}",
                v.depth
            );
        }
        if v.out_hidden_size != t.hidden_size {
            bail!(
                "vision_config.out_hidden_size ({}) differs from text_config.hidden_size ({})",
                v.out_hidden_size,
                t.hidden_size
            );
        }
        Ok(())
    }
}

/// Default of `--max-length` for the commands that run the model on a user's input: the
/// attention scores of one layer take heads × length² × 4 bytes, so an unbounded input
/// (a 100 000-character prompt) would ask for hundreds of GB and abort.
pub const DEFAULT_MAX_LENGTH: usize = 8192;

impl Qwen3VlConfig {
    /// Refuses a sequence of `prompt` tokens that would grow by `new` more when the total
    /// exceeds `max_length` (the commands' `--max-length`) or `max_position_embeddings`.
    pub fn check_length(&self, prompt: usize, new: usize, max_length: usize) -> Result<()> {
        let model_max = self.text.max_position_embeddings;
        let (limit, why) = if max_length <= model_max {
            (max_length, "--max-length")
        } else {
            (model_max, "the model's max_position_embeddings")
        };
        if prompt + new > limit {
            let plus = if new > 0 {
                format!(" + {new} to generate")
            } else {
                String::new()
            };
            bail!("the input is {prompt} tokens{plus}, more than the {limit} that {why} allows");
        }
        Ok(())
    }
}
