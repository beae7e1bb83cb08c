//! Numerical building blocks shared by the vision tower and the decoder.
//!
//! candle's fused kernels (`rms_norm`, `layer_norm`, `softmax_last_dim`, `rotary_emb::rope`)
//! are fast but have no backward pass: gradients silently stop at them. Each function here
//! therefore takes a `Grad` switch: `Grad::None` for inference (fused, fast), `Grad::Track`
//! on any path that trains (plain differentiable tensor ops).

use candle_core::{DType, Result, Tensor, D};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Grad {
    /// Inference: fused kernels, no autograd graph needed.
    #[default]
    None,
    /// Training: only ops with a backward pass.
    Track,
}

/// RMSNorm over the last dimension, computed in f32 like transformers' Qwen3 RMSNorm.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, grad: Grad) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let y = match grad {
        Grad::None => {
            candle_nn::ops::rms_norm(&x.contiguous()?, &weight.to_dtype(DType::F32)?, eps as f32)?
        }
        Grad::Track => {
            let var = x.sqr()?.mean_keepdim(D::Minus1)?;
            let normed = x.broadcast_div(&(var + eps)?.sqrt()?)?;
            normed.broadcast_mul(&weight.to_dtype(DType::F32)?)?
        }
    };
    y.to_dtype(dtype)
}

/// LayerNorm over the last dimension with weight and bias.
pub fn layer_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    grad: Grad,
) -> Result<Tensor> {
    match grad {
        Grad::None => candle_nn::ops::layer_norm(&x.contiguous()?, weight, bias, eps as f32),
        Grad::Track => {
            let mean = x.mean_keepdim(D::Minus1)?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
            let normed = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
            normed.broadcast_mul(weight)?.broadcast_add(bias)
        }
    }
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor, grad: Grad) -> Result<Tensor> {
    match grad {
        Grad::None => candle_nn::ops::softmax_last_dim(&x.contiguous()?),
        Grad::Track => {
            let max = x.max_keepdim(D::Minus1)?.detach();
            let e = x.broadcast_sub(&max)?.exp()?;
            e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
        }
    }
}

/// `cat(-x2, x1)` over the last dimension (transformers' `rotate_half`).
fn rotate_half(x: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)
}

/// Rotary embedding on `x` of shape (batch, heads, seq, head_dim) with `cos`/`sin` of shape
/// (seq, head_dim) laid out as `cat(freqs, freqs)` (non-interleaved halves).
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor, grad: Grad) -> Result<Tensor> {
    match grad {
        Grad::None => {
            let half = cos.dim(D::Minus1)? / 2;
            let c = cos.narrow(D::Minus1, 0, half)?.contiguous()?;
            let s = sin.narrow(D::Minus1, 0, half)?.contiguous()?;
            candle_nn::rotary_emb::rope(&x.contiguous()?, &c, &s)
        }
        Grad::Track => {
            let rot = rotate_half(x)?;
            x.broadcast_mul(cos)? + rot.broadcast_mul(sin)?
        }
    }
}

/// `x @ w.T (+ b)` for a torch-layout Linear weight, with any number of leading dimensions.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let in_dim = dims[dims.len() - 1];
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let y = x.reshape((rows, in_dim))?.matmul(&w.t()?)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut out = dims;
    let last = out.len() - 1;
    out[last] = w.dim(0)?;
    y.reshape(out)
}

/// Cosine similarity of matching rows of `a` and `b` (…, dim) -> (…), computed in f32.
pub fn row_cosine(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let a = a.to_dtype(DType::F32)?;
    let b = b.to_dtype(DType::F32)?;
    let dot = (&a * &b)?.sum(D::Minus1)?;
    let na = a.sqr()?.sum(D::Minus1)?.sqrt()?;
    let nb = b.sqr()?.sum(D::Minus1)?.sqrt()?;
    // torch's cosine_similarity clamps each norm at eps = 1e-8.
    dot.div(&(na.clamp(1e-8f32, f32::MAX)? * nb.clamp(1e-8f32, f32::MAX)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn fused_and_differentiable_paths_agree() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 5, 8), &dev)?;
        let w = Tensor::randn(1f32, 0.2, 8, &dev)?;
        let b = Tensor::randn(0f32, 0.2, 8, &dev)?;
        let cos = Tensor::randn(0f32, 1.0, (5, 4), &dev)?;
        let cos = Tensor::cat(&[&cos, &cos], 1)?;
        let sin = Tensor::randn(0f32, 1.0, (5, 4), &dev)?;
        let sin = Tensor::cat(&[&sin, &sin], 1)?;
        assert!(
            max_diff(
                &rms_norm(&x, &w, 1e-6, Grad::None)?,
                &rms_norm(&x, &w, 1e-6, Grad::Track)?
            ) < 1e-5
        );
        assert!(
            max_diff(
                &layer_norm(&x, &w, &b, 1e-6, Grad::None)?,
                &layer_norm(&x, &w, &b, 1e-6, Grad::Track)?
            ) < 1e-5
        );
        assert!(
            max_diff(
                &softmax_last_dim(&x, Grad::None)?,
                &softmax_last_dim(&x, Grad::Track)?
            ) < 1e-6
        );
        assert!(
            max_diff(
                &apply_rope(&x, &cos, &sin, Grad::None)?,
                &apply_rope(&x, &cos, &sin, Grad::Track)?
            ) < 1e-5
        );
        Ok(())
    }

    #[test]
    fn row_cosine_matches_definition() -> Result<()> {
        let a = Tensor::new(&[[1f32, 0.0], [3.0, 4.0]], &Device::Cpu)?;
        let b = Tensor::new(&[[0f32, 2.0], [6.0, 8.0]], &Device::Cpu)?;
        let c = row_cosine(&a, &b)?.to_vec1::<f32>()?;
        assert!(c[0].abs() < 1e-7 && (c[1] - 1.0).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn differentiable_paths_pass_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = candle_core::Var::randn(0f32, 1.0, (2, 4, 8), &dev)?;
        let w = candle_core::Var::randn(1f32, 0.2, 8, &dev)?;
        let b = candle_core::Var::randn(0f32, 0.2, 8, &dev)?;
        let y = rms_norm(x.as_tensor(), w.as_tensor(), 1e-6, Grad::Track)?;
        let y = layer_norm(&y, w.as_tensor(), b.as_tensor(), 1e-6, Grad::Track)?;
        let y = softmax_last_dim(&y, Grad::Track)?;
        let target = Tensor::randn(0f32, 1.0, (2, 4, 8), &dev)?;
        let loss = (y * target)?.sum_all()?;
        let grads = loss.backward()?;
        for v in [&x, &w, &b] {
            let g = grads
                .get(v.as_tensor())
                .expect("gradient reaches every input");
            assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        }
        Ok(())
    }
}
