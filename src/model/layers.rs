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
