//! The Qwen2-VL and Qwen2.5-VL vision towers (transformers' `Qwen2VisionTransformerPretrainedModel`
//! and `Qwen2_5_VisionTransformerPretrainedModel`): patch embedding (a bias-free Conv3d done as
//! one matmul), 2-D rotary attention blocks within each frame (Qwen2.5-VL: within windows,
//! except in `fullatt_block_indexes`) and the patch merger. Weight names are relative to the
//! tower (`visual.` in published checkpoints, `model.visual.` as transformers 5 names the
//! module); the caller points the `VarBuilder` there.

use anyhow::{bail, ensure, Context, Result};
use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde_json::Value;

use crate::model::layers::{segmented_rope_attention, LayerNorm, Linear, RmsNorm};
use crate::model::ops::{self, Grad};
use crate::model::qwen3_vl::rope;

/// Which of the two towers a checkpoint has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionFamily {
    /// Qwen2-VL: LayerNorm, fc1/fc2 MLP, attention within each frame in every block.
    Qwen2Vl,
    /// Qwen2.5-VL: RMSNorm, gated MLP with biases, window attention except in
    /// `fullatt_block_indexes`.
    Qwen25Vl,
}

/// The MLP activation (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionAct {
    /// `x · sigmoid(1.702 x)` (Qwen2-VL's default).
    QuickGelu,
    /// `x · sigmoid(x)` (Qwen2.5-VL's default).
    Silu,
    /// Exact (erf) GELU.
    GeluErf,
    /// tanh-approximated GELU.
    GeluTanh,
}

impl VisionAct {
    fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "quick_gelu" => Self::QuickGelu,
            "silu" | "swish" => Self::Silu,
            "gelu" => Self::GeluErf,
            "gelu_pytorch_tanh" | "gelu_new" => Self::GeluTanh,
            other => bail!("vision_config.hidden_act: unsupported activation {other:?}"),
        })
    }

    fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::QuickGelu => x.mul(&candle_nn::ops::sigmoid(&(x * 1.702)?)?),
            Self::Silu => x.silu(),
            Self::GeluErf => x.gelu_erf(),
            Self::GeluTanh => ops::gelu_tanh(x),
        }
    }
}

/// `vision_config` of a Qwen2-VL or Qwen2.5-VL `config.json`, with the two families' keys
/// mapped to one set of fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2VisionConfig {
    pub family: VisionFamily,
    pub depth: usize,
    /// Width of the blocks (Qwen2-VL `embed_dim`, Qwen2.5-VL `hidden_size`).
    pub hidden_size: usize,
    /// MLP width (Qwen2-VL `embed_dim · mlp_ratio`, Qwen2.5-VL `intermediate_size`).
    pub intermediate_size: usize,
    pub num_heads: usize,
    /// Width of the merged tokens handed to the decoder (Qwen2-VL `hidden_size`, Qwen2.5-VL
    /// `out_hidden_size`).
    pub out_hidden_size: usize,
    pub in_channels: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub spatial_merge_size: usize,
    pub hidden_act: VisionAct,
    pub rope_theta: f64,
    /// Qwen2.5-VL: window side in pixels (`window_size`); `None` for Qwen2-VL.
    pub window_size: Option<usize>,
    /// Qwen2.5-VL: the blocks that attend over whole frames.
    pub fullatt_block_indexes: Vec<usize>,
}

fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn req_usize(v: &Value, key: &str) -> Result<usize> {
    let x = field(v, key).with_context(|| format!("missing field vision_config.{key}"))?;
    x.as_u64()
        .map(|n| n as usize)
        .with_context(|| format!("vision_config.{key} must be a non-negative integer, got {x}"))
}

fn opt_usize(v: &Value, keys: &[&str], default: usize) -> Result<usize> {
    match keys.iter().find(|k| field(v, k).is_some()) {
        Some(k) => req_usize(v, k),
        None => Ok(default),
    }
}

/// An integer that some configs write as a one-element or square list (`patch_size`).
fn opt_size(v: &Value, key: &str, default: usize) -> Result<usize> {
    match field(v, key) {
        Some(Value::Array(items)) => {
            let vals: Vec<u64> = items.iter().filter_map(|x| x.as_u64()).collect();
            match vals.as_slice() {
                [a, rest @ ..] if vals.len() == items.len() && rest.iter().all(|b| b == a) => {
                    Ok(*a as usize)
                }
                _ => bail!("vision_config.{key} must be an integer or a list of equal integers"),
            }
        }
        Some(_) => req_usize(v, key),
        None => Ok(default),
    }
}

impl Qwen2VisionConfig {
    /// Reads the tower's settings from a whole `config.json` (its `model_type` picks the
    /// family: `qwen2_vl` or `qwen2_5_vl`).
    pub fn from_config_json(raw: &Value) -> Result<Self> {
        let model_type = field(raw, "model_type")
            .and_then(|v| v.as_str())
            .context("missing field model_type")?;
        let vision = field(raw, "vision_config").context("missing field vision_config")?;
        Self::from_vision_config(model_type, vision)
    }

    /// Reads `vision_config` of a checkpoint whose top-level `model_type` is `model_type`.
    /// Shapes are required; the other fields default as in transformers' config classes.
    pub fn from_vision_config(model_type: &str, v: &Value) -> Result<Self> {
        ensure!(
            v.is_object(),
            "vision_config must be a JSON object, got {v}"
        );
        let family = match model_type {
            "qwen2_vl" => VisionFamily::Qwen2Vl,
            "qwen2_5_vl" => VisionFamily::Qwen25Vl,
            other => bail!("model_type {other:?} has no Qwen2-VL vision tower (expected qwen2_vl or qwen2_5_vl)"),
        };
        let depth = req_usize(v, "depth")?;
        let num_heads = req_usize(v, "num_heads")?;
        let act_name = match field(v, "hidden_act") {
            Some(a) => a
                .as_str()
                .context("vision_config.hidden_act must be a string")?
                .to_string(),
            None if family == VisionFamily::Qwen2Vl => "quick_gelu".into(),
            None => "silu".into(),
        };
        let hidden_act = VisionAct::parse(&act_name)?;
        let (hidden_size, intermediate_size, out_hidden_size) = match family {
            VisionFamily::Qwen2Vl => {
                let embed_dim = req_usize(v, "embed_dim")?;
                let ratio = match field(v, "mlp_ratio") {
                    None => 4.0,
                    Some(r) => r.as_f64().filter(|r| *r > 0.0).with_context(|| {
                        format!("vision_config.mlp_ratio must be a positive number, got {r}")
                    })?,
                };
                // transformers: int(embed_dim * mlp_ratio)
                let inter = (embed_dim as f64 * ratio) as usize;
                (embed_dim, inter, req_usize(v, "hidden_size")?)
            }
            VisionFamily::Qwen25Vl => (
                req_usize(v, "hidden_size")?,
                req_usize(v, "intermediate_size")?,
                req_usize(v, "out_hidden_size")?,
            ),
        };
        let rope_theta = match field(v, "rope_parameters")
            .and_then(|p| field(p, "rope_theta"))
            .or_else(|| field(v, "rope_theta"))
        {
            None => 10_000.0,
            Some(t) => t
                .as_f64()
                .with_context(|| format!("vision_config.rope_theta must be a number, got {t}"))?,
        };
        if let Some(kind) = field(v, "rope_parameters").and_then(|p| field(p, "rope_type")) {
            if kind.as_str() != Some("axial") {
                bail!(
                    "vision_config.rope_parameters.rope_type {kind} is not supported (only axial)"
                );
            }
        }
        let (window_size, fullatt_block_indexes) = match family {
            VisionFamily::Qwen2Vl => (None, Vec::new()),
            VisionFamily::Qwen25Vl => {
                let w = opt_usize(v, &["window_size"], 112)?;
                let full = match field(v, "fullatt_block_indexes") {
                    None => vec![7, 15, 23, 31],
                    Some(list) => list
                        .as_array()
                        .and_then(|a| {
                            a.iter()
                                .map(|x| x.as_u64().map(|n| n as usize))
                                .collect::<Option<Vec<_>>>()
                        })
                        .with_context(|| {
                            format!("vision_config.fullatt_block_indexes must be a list of non-negative integers, got {list}")
                        })?,
                };
                (Some(w), full)
            }
        };
        let cfg = Self {
            family,
            depth,
            hidden_size,
            intermediate_size,
            num_heads,
            out_hidden_size,
            in_channels: opt_usize(v, &["in_channels", "in_chans"], 3)?,
            patch_size: opt_size(v, "patch_size", 14)?,
            temporal_patch_size: opt_size(v, "temporal_patch_size", 2)?,
            spatial_merge_size: opt_usize(v, &["spatial_merge_size"], 2)?,
            hidden_act,
            rope_theta,
            window_size,
            fullatt_block_indexes,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks sizes the tower divides by or reshapes with (done by the parser; again by
    /// [`Qwen2VisionModel::new`] for hand-built configs).
    pub fn validate(&self) -> Result<()> {
        let width = match self.family {
            VisionFamily::Qwen2Vl => "embed_dim",
            VisionFamily::Qwen25Vl => "hidden_size",
        };
        for (name, val) in [
            ("depth", self.depth),
            ("num_heads", self.num_heads),
            (width, self.hidden_size),
            ("intermediate size", self.intermediate_size),
            ("output hidden size", self.out_hidden_size),
            ("in_channels", self.in_channels),
            ("patch_size", self.patch_size),
            ("temporal_patch_size", self.temporal_patch_size),
            ("spatial_merge_size", self.spatial_merge_size),
        ] {
            ensure!(val > 0, "vision_config: {name} must be positive");
        }
        ensure!(
            self.hidden_size.is_multiple_of(self.num_heads) && self.head_dim().is_multiple_of(4),
            "vision_config: {width} {} over {} heads must give a head size divisible by 4 \
             (2-D rotary embedding)",
            self.hidden_size,
            self.num_heads
        );
        if let Some(w) = self.window_size {
            ensure!(
                w / self.spatial_merge_size / self.patch_size > 0,
                "vision_config.window_size {w} is smaller than one merged token \
                 (spatial_merge_size x patch_size = {} pixels)",
                self.spatial_merge_size * self.patch_size
            );
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Values per patch row of `pixel_values`: C·T·P·P.
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// Window side in merged tokens (`window_size // spatial_merge_size // patch_size`).
    pub fn merged_window(&self) -> Option<usize> {
        self.window_size
            .map(|w| w / self.spatial_merge_size / self.patch_size)
    }
}

/// transformers' `get_vision_window_index`: the order of the merged tokens that groups them
/// window by window (frames, then windows in raster order, then tokens of a window in raster
/// order), and the window lengths in patches (empty windows left out), over all images.
pub fn window_index(
    grid_thw: &[[usize; 3]],
    merge: usize,
    window: usize,
) -> Result<(Vec<usize>, Vec<usize>)> {
    ensure!(
        merge > 0 && window > 0,
        "window and merge sizes must be positive"
    );
    let unit = merge * merge;
    let mut order = Vec::new();
    let mut lengths = Vec::new();
    let mut offset = 0;
    for &[t, h, w] in grid_thw {
        ensure!(
            h.is_multiple_of(merge) && w.is_multiple_of(merge),
            "image grid {t}x{h}x{w} is not a multiple of spatial_merge_size {merge}"
        );
        let (gh, gw) = (h / merge, w / merge);
        for ti in 0..t {
            for wy in 0..gh.div_ceil(window) {
                for wx in 0..gw.div_ceil(window) {
                    let before = order.len();
                    for y in wy * window..((wy + 1) * window).min(gh) {
                        for x in wx * window..((wx + 1) * window).min(gw) {
                            order.push(offset + ti * gh * gw + y * gw + x);
                        }
                    }
                    if order.len() > before {
                        lengths.push((order.len() - before) * unit);
                    }
                }
            }
        }
        offset += t * gh * gw;
    }
    Ok((order, lengths))
}

#[derive(Debug, Clone)]
enum Norm {
    Layer(LayerNorm),
    Rms(RmsNorm),
}

impl Norm {
    fn new(family: VisionFamily, vb: VarBuilder, dim: usize) -> candle_core::Result<Self> {
        Ok(match family {
            VisionFamily::Qwen2Vl => Self::Layer(LayerNorm::new(vb, dim, 1e-6)?),
            VisionFamily::Qwen25Vl => Self::Rms(RmsNorm::new(vb, dim, 1e-6)?),
        })
    }

    fn forward(&self, x: &Tensor, grad: Grad) -> candle_core::Result<Tensor> {
        match self {
            Self::Layer(n) => n.forward(x, grad),
            Self::Rms(n) => n.forward(x, grad),
        }
    }

    fn params_mut<'a>(&'a mut self, name: &str, out: &mut Vec<(String, &'a mut Tensor)>) {
        match self {
            Self::Layer(n) => {
                out.push((format!("{name}.weight"), &mut n.weight));
                out.push((format!("{name}.bias"), &mut n.bias));
            }
            Self::Rms(n) => out.push((format!("{name}.weight"), &mut n.weight)),
        }
    }
}

#[derive(Debug, Clone)]
enum Mlp {
    /// Qwen2-VL: `fc2(act(fc1(x)))`.
    Plain { fc1: Linear, fc2: Linear },
    /// Qwen2.5-VL: `down_proj(act(gate_proj(x)) · up_proj(x))`, all with biases.
    Gated {
        gate: Linear,
        up: Linear,
        down: Linear,
    },
}

#[derive(Debug, Clone)]
struct Block {
    norm1: Norm,
    norm2: Norm,
    qkv: Linear,
    proj: Linear,
    mlp: Mlp,
}

fn push_linear<'a>(out: &mut Vec<(String, &'a mut Tensor)>, name: &str, l: &'a mut Linear) {
    out.push((format!("{name}.weight"), &mut l.weight));
    if let Some(b) = l.bias.as_mut() {
        out.push((format!("{name}.bias"), b));
    }
}

/// A Qwen2-VL or Qwen2.5-VL vision tower.
#[derive(Debug, Clone)]
pub struct Qwen2VisionModel {
    cfg: Qwen2VisionConfig,
    /// The Conv3d weight as a (hidden, C·T·P·P) matrix.
    patch_w: Tensor,
    blocks: Vec<Block>,
    ln_q: Norm,
    merger_fc1: Linear,
    merger_fc2: Linear,
}

impl Qwen2VisionModel {
    /// Builds the tower from weights under `vb` (already pointed at `visual` or
    /// `model.visual`, whichever the checkpoint uses).
    pub fn new(cfg: &Qwen2VisionConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let h = cfg.hidden_size;
        let conv = vb
            .pp("patch_embed.proj")
            .get(
                (
                    h,
                    cfg.in_channels,
                    cfg.temporal_patch_size,
                    cfg.patch_size,
                    cfg.patch_size,
                ),
                "weight",
            )
            .context("vision patch embedding")?;
        // A Conv3d whose stride equals its kernel, over one patch, is a matmul.
        let patch_w = conv.reshape((h, cfg.patch_dim()))?;
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let b = vb.pp(format!("blocks.{i}"));
            let m = b.pp("mlp");
            let inter = cfg.intermediate_size;
            let mlp = match cfg.family {
                VisionFamily::Qwen2Vl => Mlp::Plain {
                    fc1: Linear::new(m.pp("fc1"), h, inter, true)?,
                    fc2: Linear::new(m.pp("fc2"), inter, h, true)?,
                },
                VisionFamily::Qwen25Vl => Mlp::Gated {
                    gate: Linear::new(m.pp("gate_proj"), h, inter, true)?,
                    up: Linear::new(m.pp("up_proj"), h, inter, true)?,
                    down: Linear::new(m.pp("down_proj"), inter, h, true)?,
                },
            };
            blocks.push(Block {
                norm1: Norm::new(cfg.family, b.pp("norm1"), h)?,
                norm2: Norm::new(cfg.family, b.pp("norm2"), h)?,
                qkv: Linear::new(b.pp("attn.qkv"), h, 3 * h, true)?,
                proj: Linear::new(b.pp("attn.proj"), h, h, true)?,
                mlp,
            });
        }
        let merged = h * cfg.spatial_merge_size * cfg.spatial_merge_size;
        let m = vb.pp("merger");
        Ok(Self {
            cfg: cfg.clone(),
            patch_w,
            blocks,
            ln_q: Norm::new(cfg.family, m.pp("ln_q"), h)?,
            merger_fc1: Linear::new(m.pp("mlp.0"), merged, merged, true)?,
            merger_fc2: Linear::new(m.pp("mlp.2"), merged, cfg.out_hidden_size, true)?,
        })
    }

    pub fn config(&self) -> &Qwen2VisionConfig {
        &self.cfg
    }

    /// Every tensor of the tower with its checkpoint name relative to the tower's prefix, for
    /// the trainer to swap in trainable copies. The patch embedding is held as the 2-D matrix
    /// (hidden, C·T·P·P); [`Qwen2VisionModel::patch_weight_shape`] gives its stored shape.
    pub fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out = vec![("patch_embed.proj.weight".to_string(), &mut self.patch_w)];
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let p = format!("blocks.{i}");
            b.norm1.params_mut(&format!("{p}.norm1"), &mut out);
            b.norm2.params_mut(&format!("{p}.norm2"), &mut out);
            push_linear(&mut out, &format!("{p}.attn.qkv"), &mut b.qkv);
            push_linear(&mut out, &format!("{p}.attn.proj"), &mut b.proj);
            match &mut b.mlp {
                Mlp::Plain { fc1, fc2 } => {
                    push_linear(&mut out, &format!("{p}.mlp.fc1"), fc1);
                    push_linear(&mut out, &format!("{p}.mlp.fc2"), fc2);
                }
                Mlp::Gated { gate, up, down } => {
                    push_linear(&mut out, &format!("{p}.mlp.gate_proj"), gate);
                    push_linear(&mut out, &format!("{p}.mlp.up_proj"), up);
                    push_linear(&mut out, &format!("{p}.mlp.down_proj"), down);
                }
            }
        }
        self.ln_q.params_mut("merger.ln_q", &mut out);
        push_linear(&mut out, "merger.mlp.0", &mut self.merger_fc1);
        push_linear(&mut out, "merger.mlp.2", &mut self.merger_fc2);
        out
    }

    /// The Conv3d weight's shape in a checkpoint: (hidden, C, T, P, P).
    pub fn patch_weight_shape(&self) -> Vec<usize> {
        let c = &self.cfg;
        vec![
            c.hidden_size,
            c.in_channels,
            c.temporal_patch_size,
            c.patch_size,
            c.patch_size,
        ]
    }

    /// Runs the tower on `pixel_values` (patches, C·T·P·P) for images with `grid_thw` and
    /// returns the merged image tokens, (tokens, out_hidden), images concatenated in order.
    pub fn forward(
        &self,
        pixel_values: &Tensor,
        grid_thw: &[[usize; 3]],
        grad: Grad,
    ) -> Result<Tensor> {
        let device = pixel_values.device();
        let merge = self.cfg.spatial_merge_size;
        for &[t, h, w] in grid_thw {
            ensure!(
                t > 0 && h > 0 && w > 0 && h.is_multiple_of(merge) && w.is_multiple_of(merge),
                "image grid {t}x{h}x{w} is not a positive multiple of spatial_merge_size {merge}"
            );
        }
        let n: usize = grid_thw.iter().map(|g| g[0] * g[1] * g[2]).sum();
        let (rows, cols) = pixel_values.dims2()?;
        let patch_dim = self.cfg.patch_dim();
        ensure!(
            cols == patch_dim,
            "pixel_values rows hold {cols} values but the vision tower expects {patch_dim} \
             (preprocessor_config.json and config.json disagree on patch or temporal patch size)"
        );
        ensure!(
            rows == n,
            "pixel_values has {rows} patches but image_grid_thw describes {n}"
        );
        let pixel_values = pixel_values.to_dtype(self.patch_w.dtype())?;
        let mut x = ops::linear(&pixel_values, &self.patch_w, None)?;
        let (mut cos, mut sin) = rope::vision_cos_sin(
            grid_thw,
            merge,
            self.cfg.head_dim(),
            self.cfg.rope_theta,
            device,
        )?;
        // Attention within each frame of each image.
        let mut frames = Vec::new();
        let mut start = 0;
        for &[t, h, w] in grid_thw {
            for _ in 0..t {
                frames.push((start, h * w));
                start += h * w;
            }
        }
        // Qwen2.5-VL: patches regrouped window by window (merge blocks stay together, so
        // frames stay contiguous); undone on the merged tokens at the end.
        let mut windows = Vec::new();
        let mut inverse = None;
        if let Some(win) = self.cfg.merged_window() {
            let (order, lengths) = window_index(grid_thw, merge, win)?;
            let unit = merge * merge;
            let patch_order: Vec<u32> = order
                .iter()
                .flat_map(|&m| (0..unit).map(move |j| (m * unit + j) as u32))
                .collect();
            let idx = Tensor::from_vec(patch_order, n, device)?;
            x = x.index_select(&idx, 0)?;
            cos = cos.index_select(&idx, 0)?;
            sin = sin.index_select(&idx, 0)?;
            let mut s = 0;
            for len in lengths {
                windows.push((s, len));
                s += len;
            }
            let mut inv = vec![0u32; order.len()];
            for (pos, &m) in order.iter().enumerate() {
                inv[m] = pos as u32;
            }
            inverse = Some(Tensor::from_vec(inv, order.len(), device)?);
        }
        for (i, block) in self.blocks.iter().enumerate() {
            let segments =
                if self.cfg.window_size.is_some() && !self.cfg.fullatt_block_indexes.contains(&i) {
                    &windows
                } else {
                    &frames
                };
            x = self.block_forward(block, &x, &cos, &sin, segments, grad)?;
        }
        let merged_dim = self.cfg.hidden_size * merge * merge;
        let y = self.ln_q.forward(&x, grad)?.reshape(((), merged_dim))?;
        // nn.GELU() in the merger is the exact (erf) GELU.
        let y = self
            .merger_fc2
            .forward(&self.merger_fc1.forward(&y)?.gelu_erf()?)?;
        Ok(match inverse {
            Some(inv) => y.index_select(&inv, 0)?,
            None => y,
        })
    }

    fn block_forward(
        &self,
        b: &Block,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        segments: &[(usize, usize)],
        grad: Grad,
    ) -> Result<Tensor> {
        let h = b.norm1.forward(x, grad)?;
        let attn = segmented_rope_attention(
            &b.qkv.forward(&h)?,
            self.cfg.num_heads,
            cos,
            sin,
            segments,
            grad,
        )?;
        let x = (x + b.proj.forward(&attn)?)?;
        let h = b.norm2.forward(&x, grad)?;
        let act = self.cfg.hidden_act;
        let m = match &b.mlp {
            Mlp::Plain { fc1, fc2 } => fc2.forward(&act.apply(&fc1.forward(&h)?)?)?,
            Mlp::Gated { gate, up, down } => {
                let g = gate.forward(&h)?;
                let u = up.forward(&h)?;
                let a = if act == VisionAct::Silu {
                    ops::swiglu(&g, &u)?
                } else {
                    act.apply(&g)?.mul(&u)?
                };
                down.forward(&a)?
            }
        };
        Ok((x + m)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_split_a_grid_like_transformers() {
        // merged grid 3x4, windows of 2x2 merged tokens (the qwen2.5-vl fixture's layout,
        // as transformers' get_vision_window_index gives it)
        let (order, lens) = window_index(&[[1, 6, 8]], 2, 2).unwrap();
        assert_eq!(order, vec![0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 10, 11]);
        assert_eq!(lens, vec![16, 16, 8, 8]);
        // a second image continues the numbering
        let (order, lens) = window_index(&[[1, 2, 2], [1, 2, 4]], 2, 1).unwrap();
        assert_eq!(order, vec![0, 1, 2]);
        assert_eq!(lens, vec![4, 4, 4]);
        assert!(window_index(&[[1, 3, 4]], 2, 2).is_err());
    }

    #[test]
    fn config_errors_name_the_field() {
        let v = serde_json::json!({"depth": 2, "num_heads": 2, "hidden_size": 64});
        let e = Qwen2VisionConfig::from_vision_config("qwen2_vl", &v).unwrap_err();
        assert!(e.to_string().contains("vision_config.embed_dim"), "{e}");
        let e = Qwen2VisionConfig::from_vision_config("qwen2_5_vl", &v).unwrap_err();
        assert!(
            e.to_string().contains("vision_config.intermediate_size"),
            "{e}"
        );
        let e = Qwen2VisionConfig::from_vision_config("qwen3_vl", &v).unwrap_err();
        assert!(e.to_string().contains("qwen3_vl"), "{e}");
    }

    #[test]
    fn published_qwen2_vl_keys_parse() {
        // Qwen2-VL-2B-Instruct's vision_config as published
        let v = serde_json::json!({"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16,
            "in_chans": 3, "hidden_size": 1536, "patch_size": 14, "spatial_merge_size": 2,
            "spatial_patch_size": 14, "temporal_patch_size": 2});
        let c = Qwen2VisionConfig::from_vision_config("qwen2_vl", &v).unwrap();
        assert_eq!(c.intermediate_size, 5120);
        assert_eq!(c.out_hidden_size, 1536);
        assert_eq!(c.hidden_act, VisionAct::QuickGelu);
        assert_eq!(c.window_size, None);
        // Qwen2.5-VL-3B-Instruct's
        let v = serde_json::json!({"depth": 32, "hidden_act": "silu", "hidden_size": 1280,
            "intermediate_size": 3420, "num_heads": 16, "in_chans": 3, "out_hidden_size": 2048,
            "patch_size": 14, "spatial_merge_size": 2, "spatial_patch_size": 14, "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2, "temporal_patch_size": 2});
        let c = Qwen2VisionConfig::from_vision_config("qwen2_5_vl", &v).unwrap();
        assert_eq!(c.merged_window(), Some(4));
        assert_eq!(c.fullatt_block_indexes, vec![7, 15, 23, 31]);
        assert_eq!(c.head_dim(), 80);
    }
}
