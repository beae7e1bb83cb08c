//! Parameterised layers in torch's weight layout, shared by the vision tower and decoder.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::ops::{self, Grad};

/// `nn.Linear`: weight (out, in), optional bias.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(x, &self.weight, self.bias.as_ref())
    }

    /// Several layers applied to the same input, their outputs in order: one product on the
    /// CPU's panel path (see [`ops::linear_many`]).
    pub fn forward_many<const N: usize>(x: &Tensor, layers: [&Linear; N]) -> Result<[Tensor; N]> {
        let ws = layers.map(|l| (&l.weight, l.bias.as_ref()));
        let outs = ops::linear_many(x, &ws)?;
        Ok(outs
            .try_into()
            .unwrap_or_else(|_| unreachable!("linear_many returns one output per weight")))
    }
}

/// `nn.LayerNorm` with weight and bias (eps 1e-6 throughout Qwen3-VL's vision tower).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor, grad: Grad) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, self.eps, grad)
    }
}

/// Qwen's RMSNorm (weight only).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn new(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor, grad: Grad) -> Result<Tensor> {
        ops::rms_norm(x, &self.weight, self.eps, grad)
    }
}

/// The vision towers' self-attention core, shared by Qwen3-VL and Qwen2-VL / Qwen2.5-VL:
/// the fused `qkv` projection's output (n, 3·heads·head_dim) split into q, k, v, q and k
/// rotated by the 2-D tables `cos`/`sin` in f32 (as transformers'
/// `apply_rotary_pos_emb_vision` rounds back afterwards), then bidirectional attention
/// within each `(start, len)` segment (a frame, or a window). Returns (n, heads·head_dim).
pub fn segmented_rope_attention(
    qkv: &Tensor,
    heads: usize,
    cos: &Tensor,
    sin: &Tensor,
    segments: &[(usize, usize)],
    grad: Grad,
) -> Result<Tensor> {
    let n = qkv.dim(0)?;
    let hd = qkv.dim(1)? / (3 * heads);
    // (n, 3, heads, hd) -> three (1, n, heads, hd)
    let qkv = qkv.reshape((n, 3, heads, hd))?;
    let split = |i: usize| -> Result<Tensor> { qkv.narrow(1, i, 1)?.squeeze(1)?.unsqueeze(0) };
    let rope = |t: Tensor| -> Result<Tensor> {
        let dtype = t.dtype();
        ops::apply_rope(&t.to_dtype(candle_core::DType::F32)?, cos, sin, grad)?.to_dtype(dtype)
    };
    let q = rope(split(0)?)?;
    let k = rope(split(1)?)?;
    let v = split(2)?;
    let mut outs = Vec::with_capacity(segments.len());
    for &(s, len) in segments {
        let part = |t: &Tensor| t.narrow(1, s, len);
        outs.push(ops::attention(
            &part(&q)?,
            &part(&k)?,
            &part(&v)?,
            false,
            grad,
        )?);
    }
    Tensor::cat(&outs, 1)?.squeeze(0)
}
