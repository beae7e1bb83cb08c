//! Hugging Face `config.json` of every supported family: which family it is (from
//! `model_type`, else `architectures`), the text decoder, the vision tower (multimodal
//! families) and the special token ids. RoPE settings are read from either the published
//! layout (`rope_scaling` + `rope_theta`) or the newer `rope_parameters`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::qwen2_vl::vision::Qwen2VisionConfig;
pub use super::vision::VisionSpec;

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
    /// M-RoPE sections (t, h, w) in frequency slots; empty for plain 1-D RoPE.
    pub mrope_section: Vec<usize>,
    /// Qwen3-VL interleaves the M-RoPE axes over the frequency slots (T,H,W,T,H,W,...);
    /// Qwen2-VL and Qwen2.5-VL give each axis one contiguous section.
    pub mrope_interleaved: bool,
    /// Frequency scaling (`rope_type`): none, linear or Llama 3.
    pub rope_scaling: RopeScaling,
    /// Bias on q/k/v projections (Qwen2: always; Qwen3, Llama: `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Qwen3, Llama: `attention_bias`; Qwen2: never).
    pub o_bias: bool,
    /// RMSNorm over each head of q and k before RoPE (Qwen3, Qwen3-VL).
    pub qk_norm: bool,
    /// Bias on the MLP projections (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    pub max_position_embeddings: usize,
}

/// How RoPE frequencies are rescaled (`rope_type`), as transformers' `modeling_rope_utils`.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// `linear`: every frequency divided by `factor`.
    Linear {
        factor: f64,
    },
    /// `llama3`: long wavelengths divided by `factor`, short ones kept, smoothed between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// The model families this build runs, told apart by `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `Qwen3VLForConditionalGeneration` (dense): vision tower with DeepStack, interleaved
    /// M-RoPE, q/k norms.
    Qwen3Vl,
    /// `Qwen2VLForConditionalGeneration`: sectioned M-RoPE, biased q/k/v.
    Qwen2Vl,
    /// `Qwen2_5_VLForConditionalGeneration`: as Qwen2-VL with a windowed vision tower.
    Qwen25Vl,
    /// `Qwen3ForCausalLM`: text only, q/k norms.
    Qwen3,
    /// `LlamaForCausalLM`: text only, optional Llama 3 RoPE scaling.
    Llama,
}

impl Family {
    /// (model_type, architecture, family) for every supported family.
    const TABLE: &'static [(&'static str, &'static str, Family)] = &[
        (
            "qwen3_vl",
            "Qwen3VLForConditionalGeneration",
            Family::Qwen3Vl,
        ),
        (
            "qwen2_vl",
            "Qwen2VLForConditionalGeneration",
            Family::Qwen2Vl,
        ),
        (
            "qwen2_5_vl",
            "Qwen2_5_VLForConditionalGeneration",
            Family::Qwen25Vl,
        ),
        ("qwen3", "Qwen3ForCausalLM", Family::Qwen3),
        ("llama", "LlamaForCausalLM", Family::Llama),
    ];

    /// The family of a `config.json`: its `model_type`, else its first `architectures` entry.
    pub fn of(raw: &Value) -> Result<Self> {
        let model_type = get(raw, "model_type").and_then(Value::as_str);
        let arch = get(raw, "architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str);
        let found = Self::TABLE.iter().find(|(mt, ar, _)| match model_type {
            Some(t) => t == *mt,
            None => arch == Some(*ar),
        });
        match (found, model_type, arch) {
            (Some(&(_, _, f)), _, _) => Ok(f),
            (None, Some(t), _) => bail!(
                "model_type {t:?} is not supported (supported: {})",
                SUPPORTED_MODEL_TYPES.join(", ")
            ),
            (None, None, Some(a)) => bail!(
                "architecture {a:?} is not supported (supported: {})",
                Self::TABLE
                    .iter()
                    .map(|r| r.1)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (None, None, None) => bail!("missing field model_type (and no architectures)"),
        }
    }

    /// transformers' `model_type`.
    pub fn model_type(self) -> &'static str {
        Self::TABLE
            .iter()
            .find(|r| r.2 == self)
            .map_or("?", |r| r.0)
    }

    /// Whether the family has a vision tower.
    pub fn is_multimodal(self) -> bool {
        matches!(self, Family::Qwen3Vl | Family::Qwen2Vl | Family::Qwen25Vl)
    }
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
pub struct ModelConfig {
    pub family: Family,
    pub model_type: String,
    pub text: TextConfig,
    /// The vision tower; None for a text-only family.
    pub vision: Option<VisionSpec>,
    pub image_token_id: u32,
    pub video_token_id: u32,
    pub vision_start_token_id: u32,
    pub vision_end_token_id: u32,
    pub tie_word_embeddings: bool,
    /// The raw JSON, kept so that pruning can write it back with only the layer count changed.
    pub raw: Value,
}

/// Model types this build can run.
pub const SUPPORTED_MODEL_TYPES: &[&str] =
    &["qwen3_vl", "qwen2_vl", "qwen2_5_vl", "qwen3", "llama"];

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

/// A number of a RoPE parameter block.
fn rope_num(params: &Value, key: &str) -> Result<f64> {
    get(params, key)
        .with_context(|| format!("rope_scaling.{key} is missing"))?
        .as_f64()
        .with_context(|| format!("rope_scaling.{key} must be a number"))
}

/// RoPE settings of a text config, from `rope_parameters` (newer transformers) or
/// `rope_scaling` + `rope_theta` (published checkpoints): theta, M-RoPE sections (empty for
/// 1-D RoPE), whether they interleave, and the frequency scaling.
fn text_rope(
    text: &Value,
    family: Family,
    default_theta: f64,
) -> Result<(f64, Vec<usize>, bool, RopeScaling)> {
    let params = get(text, "rope_parameters").or_else(|| get(text, "rope_scaling"));
    let theta = params
        .and_then(|p| get(p, "rope_theta"))
        .or_else(|| get(text, "rope_theta"))
        .map(|v| v.as_f64().context("rope_theta must be a number"))
        .transpose()?
        .unwrap_or(default_theta);
    let kind = params
        .and_then(|p| get(p, "rope_type").or_else(|| get(p, "type")))
        .map(|k| k.as_str().unwrap_or("?").to_string())
        .unwrap_or_else(|| "default".into());
    let scaling = match (kind.as_str(), params) {
        ("default" | "mrope", _) | (_, None) => RopeScaling::None,
        ("linear", Some(p)) => RopeScaling::Linear {
            factor: rope_num(p, "factor")?,
        },
        ("llama3", Some(p)) => RopeScaling::Llama3 {
            factor: rope_num(p, "factor")?,
            low_freq_factor: rope_num(p, "low_freq_factor")?,
            high_freq_factor: rope_num(p, "high_freq_factor")?,
            original_max_position_embeddings: rope_num(p, "original_max_position_embeddings")?,
        },
        (other, _) => {
            bail!("rope_type {other:?} is not supported (supported: default, linear, llama3)")
        }
    };
    if family.is_multimodal() && scaling != RopeScaling::None {
        bail!("text_config rope_type {kind:?} is not supported with M-RoPE (only default)");
    }
    let (section, interleaved) = match family {
        Family::Qwen3Vl => {
            if params
                .and_then(|p| get(p, "mrope_interleaved"))
                .and_then(|v| v.as_bool())
                == Some(false)
            {
                bail!(
                    "text_config: mrope_interleaved=false is not supported (Qwen3-VL interleaves)"
                );
            }
            let section = match params.and_then(|p| get(p, "mrope_section")) {
                Some(v) => usize_list(v, "text_config mrope_section")?,
                None => vec![24, 20, 20],
            };
            (section, true)
        }
        Family::Qwen2Vl | Family::Qwen25Vl => {
            let section = match params.and_then(|p| get(p, "mrope_section")) {
                Some(v) => usize_list(v, "rope_scaling.mrope_section")?,
                None => bail!("missing field rope_scaling.mrope_section"),
            };
            (section, false)
        }
        Family::Qwen3 | Family::Llama => (Vec::new(), false),
    };
    Ok((theta, section, interleaved, scaling))
}

impl ModelConfig {
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
        let family = Family::of(&raw)?;
        let model_type = family.model_type().to_string();
        // Qwen3-VL nests the decoder's settings in text_config; Qwen2-VL and Qwen2.5-VL do
        // in transformers 5 and at the top level in the published checkpoints; the text-only
        // families keep them at the top level.
        let (t, ts) = match family {
            Family::Qwen3Vl => (
                get(&raw, "text_config").context("missing field text_config")?,
                "text_config",
            ),
            Family::Qwen2Vl | Family::Qwen25Vl => match get(&raw, "text_config") {
                Some(t) if get(t, "hidden_size").is_some() => (t, "text_config"),
                _ => (&raw, "config"),
            },
            Family::Qwen3 | Family::Llama => (&raw, "config"),
        };
        let (default_theta, default_max_pos) = match family {
            Family::Qwen3Vl => (500_000.0, 128_000),
            Family::Qwen2Vl | Family::Qwen25Vl => (1_000_000.0, 32_768),
            Family::Qwen3 => (10_000.0, 32_768),
            Family::Llama => (10_000.0, 2048),
        };
        if opt_bool(t, "use_sliding_window", false)? {
            bail!("{ts}.use_sliding_window = true is not supported (only full attention)");
        }
        if let Some(f) = get(t, "partial_rotary_factor").and_then(Value::as_f64) {
            if f != 1.0 {
                bail!("{ts}.partial_rotary_factor = {f} is not supported (only 1.0)");
            }
        }
        let hidden_size = req_usize(t, "hidden_size", ts)?;
        let num_attention_heads = req_usize(t, "num_attention_heads", ts)?;
        let (rope_theta, mrope_section, mrope_interleaved, rope_scaling) =
            text_rope(t, family, default_theta)?;
        let attention_bias = opt_bool(t, "attention_bias", false)?;
        let qwen2 = matches!(family, Family::Qwen2Vl | Family::Qwen25Vl);
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
            mrope_interleaved,
            rope_scaling,
            qkv_bias: qwen2 || attention_bias,
            o_bias: !qwen2 && attention_bias,
            qk_norm: matches!(family, Family::Qwen3Vl | Family::Qwen3),
            mlp_bias: opt_bool(t, "mlp_bias", false)?,
            max_position_embeddings: opt_usize(t, "max_position_embeddings", ts, default_max_pos)?,
        };
        let vision = match family {
            Family::Qwen3Vl => Self::qwen3_vl_vision(&raw)?.map(VisionSpec::Qwen3Vl),
            Family::Qwen2Vl | Family::Qwen25Vl => Some(VisionSpec::Qwen2Vl(
                Qwen2VisionConfig::from_config_json(&raw)?,
            )),
            Family::Qwen3 | Family::Llama => None,
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
        let cfg = ModelConfig {
            family,
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

    fn qwen3_vl_vision(raw: &Value) -> Result<Option<VisionConfig>> {
        let v = get(raw, "vision_config").context("missing field vision_config")?;
        let vs = "vision_config";
        let vision_theta = get(v, "rope_parameters")
            .and_then(|p| get(p, "rope_theta"))
            .or_else(|| get(v, "rope_theta"))
            .and_then(|x| x.as_f64())
            .unwrap_or(10_000.0);
        Ok(Some(VisionConfig {
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
        }))
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
        if !t.mrope_section.is_empty() && (t.mrope_section.len() != 3 || sections != t.head_dim / 2)
        {
            bail!(
                "text_config: mrope_section {:?} must have 3 entries summing to head_dim/2 = {}",
                t.mrope_section,
                t.head_dim / 2
            );
        }
        let v = match &self.vision {
            None => return Ok(()),
            Some(VisionSpec::Qwen2Vl(v)) => {
                if v.out_hidden_size != t.hidden_size {
                    bail!(
                        "vision_config's output width ({}) differs from the decoder's hidden_size ({})",
                        v.out_hidden_size,
                        t.hidden_size
                    );
                }
                return v.validate();
            }
            Some(VisionSpec::Qwen3Vl(v)) => v,
        };
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

impl ModelConfig {
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
