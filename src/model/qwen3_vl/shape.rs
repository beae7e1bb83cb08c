//! A Qwen3-VL's shape as a value: the checkpoint's tensor names and shapes (the weight
//! naming schema of transformers' `Qwen3VLForConditionalGeneration`), its config.json, its
//! parameter count, and initial weights drawn as transformers' `_init_weights` draws them
//! (normal(0, initializer_range) for linear, convolution and embedding weights, zero
//! biases, norm weights one). `interlace pretrain` builds models from it.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The text decoder's shape (names as in config.json's `text_config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextShape {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub mrope_section: Vec<usize>,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub initializer_range: f64,
}

/// The vision tower's shape (names as in config.json's `vision_config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VisionShape {
    pub hidden_size: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub spatial_merge_size: usize,
    pub out_hidden_size: usize,
    pub num_position_embeddings: usize,
    pub deepstack_visual_indexes: Vec<usize>,
    pub initializer_range: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Shape {
    pub text: TextShape,
    pub vision: VisionShape,
}

impl Default for TextShape {
    /// The `demo` decoder: 12 layers of width 256, GQA 4/2 heads of 64, M-RoPE sections of
    /// Qwen3-VL's [24, 20, 20] halved for head_dim 64, Qwen3-VL's rope_theta.
    fn default() -> Self {
        Self {
            hidden_size: 256,
            num_hidden_layers: 12,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 64,
            intermediate_size: 768,
            mrope_section: vec![12, 10, 10],
            rope_theta: 5_000_000.0,
            rms_norm_eps: 1e-6,
            max_position_embeddings: 32768,
            tie_word_embeddings: true,
            initializer_range: 0.02,
        }
    }
}

impl Default for VisionShape {
    /// The `demo` tower: 4 blocks of width 128, 16-px patches, a 14×14 position table
    /// (224-px images), DeepStack from blocks 1, 2, 3.
    fn default() -> Self {
        Self {
            hidden_size: 128,
            depth: 4,
            num_heads: 2,
            intermediate_size: 512,
            patch_size: 16,
            temporal_patch_size: 2,
            spatial_merge_size: 2,
            out_hidden_size: 256,
            num_position_embeddings: 196,
            deepstack_visual_indexes: vec![1, 2, 3],
            initializer_range: 0.02,
        }
    }
}

impl Shape {
    /// `demo` or a JSON file of overrides.
    pub fn from_arg(arg: &str) -> Result<Self> {
        if arg == "demo" {
            return Ok(Self::default());
        }
        let path = Path::new(arg);
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "{}: cannot read (--shape takes demo or a JSON file)",
                path.display()
            )
        })?;
        let shape: Shape = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not a model shape ({e})", path.display()))?;
        shape
            .check()
            .with_context(|| format!("{}: impossible shape", path.display()))?;
        Ok(shape)
    }

    /// The shape of an existing checkpoint (`--init`), with its vocabulary size.
    pub fn from_config(config: &crate::model::config::ModelConfig) -> Result<(Self, usize)> {
        let t = &config.text;
        let v = config
            .vision
            .as_ref()
            .and_then(|v| v.qwen3_vl())
            .context("pretrain builds Qwen3-VL models: this config has no vision tower")?;
        let range = |section: &str| {
            config
                .raw
                .get(section)
                .and_then(|c| c.get("initializer_range"))
                .or_else(|| config.raw.get("initializer_range"))
                .and_then(Value::as_f64)
                .unwrap_or(0.02)
        };
        let shape = Shape {
            text: TextShape {
                hidden_size: t.hidden_size,
                num_hidden_layers: t.num_hidden_layers,
                num_attention_heads: t.num_attention_heads,
                num_key_value_heads: t.num_key_value_heads,
                head_dim: t.head_dim,
                intermediate_size: t.intermediate_size,
                mrope_section: t.mrope_section.clone(),
                rope_theta: t.rope_theta,
                rms_norm_eps: t.rms_norm_eps,
                max_position_embeddings: t.max_position_embeddings,
                tie_word_embeddings: config.tie_word_embeddings,
                initializer_range: range("text_config"),
            },
            vision: VisionShape {
                hidden_size: v.hidden_size,
                depth: v.depth,
                num_heads: v.num_heads,
                intermediate_size: v.intermediate_size,
                patch_size: v.patch_size,
                temporal_patch_size: v.temporal_patch_size,
                spatial_merge_size: v.spatial_merge_size,
                out_hidden_size: v.out_hidden_size,
                num_position_embeddings: v.num_position_embeddings,
                deepstack_visual_indexes: v.deepstack_visual_indexes.clone(),
                initializer_range: range("vision_config"),
            },
        };
        shape.check()?;
        Ok((shape, t.vocab_size))
    }

    pub fn check(&self) -> Result<()> {
        let (t, v) = (&self.text, &self.vision);
        if t.hidden_size == 0 || t.num_hidden_layers == 0 || t.head_dim == 0 || v.depth == 0 {
            bail!("sizes must be positive");
        }
        if t.num_key_value_heads == 0 || t.num_attention_heads % t.num_key_value_heads != 0 {
            bail!("num_attention_heads must be a multiple of num_key_value_heads");
        }
        if t.mrope_section.len() != 3 || t.mrope_section.iter().sum::<usize>() * 2 != t.head_dim {
            bail!("mrope_section must have 3 entries summing to head_dim / 2");
        }
        if v.num_heads == 0 || v.hidden_size % v.num_heads != 0 {
            bail!("vision hidden_size must be a multiple of num_heads");
        }
        let side = (v.num_position_embeddings as f64).sqrt() as usize;
        if side * side != v.num_position_embeddings || side == 0 {
            bail!("num_position_embeddings must be a square");
        }
        if v.deepstack_visual_indexes.iter().any(|&i| i >= v.depth) {
            bail!("deepstack_visual_indexes must be below the vision depth");
        }
        if v.deepstack_visual_indexes.len() > t.num_hidden_layers {
            bail!("more DeepStack levels than decoder layers");
        }
        Ok(())
    }

    /// Every tensor of the checkpoint in a fixed order: name, shape, initialisation.
    pub fn tensors(&self, vocab: usize) -> Vec<(String, Vec<usize>, Init)> {
        let (t, v) = (&self.text, &self.vision);
        let (tn, vn) = (
            Init::Normal(t.initializer_range),
            Init::Normal(v.initializer_range),
        );
        let mut out = Vec::new();
        let mut add = |name: String, shape: Vec<usize>, init: Init| out.push((name, shape, init));
        let (h, hd, nh, nkv, im) = (
            t.hidden_size,
            t.head_dim,
            t.num_attention_heads,
            t.num_key_value_heads,
            t.intermediate_size,
        );
        add(
            "model.language_model.embed_tokens.weight".into(),
            vec![vocab, h],
            tn,
        );
        for i in 0..t.num_hidden_layers {
            let p = format!("model.language_model.layers.{i}");
            add(format!("{p}.self_attn.q_proj.weight"), vec![nh * hd, h], tn);
            add(
                format!("{p}.self_attn.k_proj.weight"),
                vec![nkv * hd, h],
                tn,
            );
            add(
                format!("{p}.self_attn.v_proj.weight"),
                vec![nkv * hd, h],
                tn,
            );
            add(format!("{p}.self_attn.o_proj.weight"), vec![h, nh * hd], tn);
            add(format!("{p}.self_attn.q_norm.weight"), vec![hd], Init::Ones);
            add(format!("{p}.self_attn.k_norm.weight"), vec![hd], Init::Ones);
            add(format!("{p}.mlp.gate_proj.weight"), vec![im, h], tn);
            add(format!("{p}.mlp.up_proj.weight"), vec![im, h], tn);
            add(format!("{p}.mlp.down_proj.weight"), vec![h, im], tn);
            add(format!("{p}.input_layernorm.weight"), vec![h], Init::Ones);
            add(
                format!("{p}.post_attention_layernorm.weight"),
                vec![h],
                Init::Ones,
            );
        }
        add(
            "model.language_model.norm.weight".into(),
            vec![h],
            Init::Ones,
        );
        if !t.tie_word_embeddings {
            add("lm_head.weight".into(), vec![vocab, h], tn);
        }
        let (vh, vi) = (v.hidden_size, v.intermediate_size);
        let p = "model.visual";
        add(
            format!("{p}.patch_embed.proj.weight"),
            vec![vh, 3, v.temporal_patch_size, v.patch_size, v.patch_size],
            vn,
        );
        add(format!("{p}.patch_embed.proj.bias"), vec![vh], Init::Zeros);
        add(
            format!("{p}.pos_embed.weight"),
            vec![v.num_position_embeddings, vh],
            vn,
        );
        let linear =
            |add: &mut dyn FnMut(String, Vec<usize>, Init), name: String, o: usize, i: usize| {
                add(format!("{name}.weight"), vec![o, i], vn);
                add(format!("{name}.bias"), vec![o], Init::Zeros);
            };
        let norm = |add: &mut dyn FnMut(String, Vec<usize>, Init), name: String, d: usize| {
            add(format!("{name}.weight"), vec![d], Init::Ones);
            add(format!("{name}.bias"), vec![d], Init::Zeros);
        };
        for b in 0..v.depth {
            let q = format!("{p}.blocks.{b}");
            norm(&mut add, format!("{q}.norm1"), vh);
            norm(&mut add, format!("{q}.norm2"), vh);
            linear(&mut add, format!("{q}.attn.qkv"), 3 * vh, vh);
            linear(&mut add, format!("{q}.attn.proj"), vh, vh);
            linear(&mut add, format!("{q}.mlp.linear_fc1"), vi, vh);
            linear(&mut add, format!("{q}.mlp.linear_fc2"), vh, vi);
        }
        let m = vh * v.spatial_merge_size * v.spatial_merge_size;
        norm(&mut add, format!("{p}.merger.norm"), vh);
        linear(&mut add, format!("{p}.merger.linear_fc1"), m, m);
        linear(
            &mut add,
            format!("{p}.merger.linear_fc2"),
            v.out_hidden_size,
            m,
        );
        for j in 0..v.deepstack_visual_indexes.len() {
            let q = format!("{p}.deepstack_merger_list.{j}");
            norm(&mut add, format!("{q}.norm"), m);
            linear(&mut add, format!("{q}.linear_fc1"), m, m);
            linear(&mut add, format!("{q}.linear_fc2"), v.out_hidden_size, m);
        }
        out
    }

    /// Parameters of the model with a vocabulary of `vocab`.
    pub fn num_parameters(&self, vocab: usize) -> usize {
        self.tensors(vocab)
            .iter()
            .map(|(_, s, _)| s.iter().product::<usize>())
            .sum()
    }

    /// config.json in Qwen3-VL's published layout.
    pub fn config_json(&self, vocab: usize, ids: &TokenIds, dtype: &str) -> Value {
        let (t, v) = (&self.text, &self.vision);
        json!({
            "architectures": ["Qwen3VLForConditionalGeneration"],
            "image_token_id": ids.image_pad,
            "model_type": "qwen3_vl",
            "text_config": {
                "attention_bias": false,
                "attention_dropout": 0.0,
                "bos_token_id": ids.endoftext,
                "dtype": dtype,
                "eos_token_id": ids.im_end,
                "head_dim": t.head_dim,
                "hidden_act": "silu",
                "hidden_size": t.hidden_size,
                "initializer_range": t.initializer_range,
                "intermediate_size": t.intermediate_size,
                "max_position_embeddings": t.max_position_embeddings,
                "model_type": "qwen3_vl_text",
                "num_attention_heads": t.num_attention_heads,
                "num_hidden_layers": t.num_hidden_layers,
                "num_key_value_heads": t.num_key_value_heads,
                "rms_norm_eps": t.rms_norm_eps,
                "rope_scaling": {
                    "mrope_interleaved": true,
                    "mrope_section": t.mrope_section,
                    "rope_type": "default"
                },
                "rope_theta": t.rope_theta,
                "tie_word_embeddings": t.tie_word_embeddings,
                "use_cache": true,
                "vocab_size": vocab
            },
            "tie_word_embeddings": t.tie_word_embeddings,
            "torch_dtype": dtype,
            "transformers_version": "4.57.0",
            "video_token_id": ids.video_pad,
            "vision_config": {
                "deepstack_visual_indexes": v.deepstack_visual_indexes,
                "depth": v.depth,
                "hidden_act": "gelu_pytorch_tanh",
                "hidden_size": v.hidden_size,
                "in_channels": 3,
                "initializer_range": v.initializer_range,
                "intermediate_size": v.intermediate_size,
                "model_type": "qwen3_vl",
                "num_heads": v.num_heads,
                "num_position_embeddings": v.num_position_embeddings,
                "out_hidden_size": v.out_hidden_size,
                "patch_size": v.patch_size,
                "spatial_merge_size": v.spatial_merge_size,
                "temporal_patch_size": v.temporal_patch_size
            },
            "vision_end_token_id": ids.vision_end,
            "vision_start_token_id": ids.vision_start
        })
    }
}

/// How a tensor starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    Normal(f64),
    Zeros,
    Ones,
}

/// Deterministic initial weights: one ChaCha8 stream seeded with `seed`, tensors drawn in
/// the order of [`Shape::tensors`], normals by Box–Muller in double precision.
pub fn init_weights(shape: &Shape, vocab: usize, seed: u64) -> Result<HashMap<String, Tensor>> {
    use rand_core::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut uniform = move || -> f64 {
        // (0, 1]: 53 random bits.
        ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    };
    let mut out = HashMap::new();
    for (name, dims, init) in shape.tensors(vocab) {
        let n: usize = dims.iter().product();
        let data: Vec<f32> = match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal(std) => {
                let mut v = Vec::with_capacity(n + 1);
                while v.len() < n {
                    let (u1, u2) = (uniform(), uniform());
                    let r = (-2.0 * u1.ln()).sqrt();
                    let a = 2.0 * std::f64::consts::PI * u2;
                    v.push((std * r * a.cos()) as f32);
                    v.push((std * r * a.sin()) as f32);
                }
                v.truncate(n);
                v
            }
        };
        out.insert(name, Tensor::from_vec(data, dims, &Device::Cpu)?);
    }
    Ok(out)
}

/// Ids of the tokens the config and generation config name.
#[derive(Debug, Clone, Copy)]
pub struct TokenIds {
    pub endoftext: u32,
    pub im_end: u32,
    pub vision_start: u32,
    pub vision_end: u32,
    pub image_pad: u32,
    pub video_pad: u32,
}
