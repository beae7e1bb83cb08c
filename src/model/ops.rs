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

/// RMSNorm over the last dimension as transformers' Qwen3 RMSNorm computes it: normalised
/// in f32, rounded to the input dtype, then scaled by the weight in that dtype (for f32
/// input the rounding is the identity).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, grad: Grad) -> Result<Tensor> {
    let dtype = x.dtype();
    if dtype != DType::F32 {
        if grad == Grad::None && matches!(dtype, DType::BF16 | DType::F16) {
            return x.contiguous()?.apply_op2_no_bwd(
                &weight.to_dtype(dtype)?.contiguous()?,
                &RmsNormRounded { eps: eps as f32 },
            );
        }
        let x = x.to_dtype(DType::F32)?;
        let ones = Tensor::ones(weight.dims1()?, DType::F32, x.device())?;
        let normed = rms_norm_composed(&x, &ones, eps)?;
        return normed
            .to_dtype(dtype)?
            .broadcast_mul(&weight.to_dtype(dtype)?);
    }
    match grad {
        Grad::None => {
            candle_nn::ops::rms_norm(&x.contiguous()?, &weight.to_dtype(DType::F32)?, eps as f32)
        }
        Grad::Track if x.device().is_cpu() || x.device().is_cuda() => x.contiguous()?.apply_op2(
            &weight.to_dtype(DType::F32)?.contiguous()?,
            RmsNormTrack { eps },
        ),
        Grad::Track => rms_norm_composed(x, &weight.to_dtype(DType::F32)?, eps),
    }
}

/// RMSNorm of 16-bit input as transformers rounds it, in one pass for inference (no
/// backward): per row, r = 1/sqrt(mean(x²) + eps) in f32, then y = round(round(x·r)·w),
/// each product in f32 rounded to the input type. CPU here; CUDA in src/kernels/inference.cu.
struct RmsNormRounded {
    eps: f32,
}

/// The start and end of a contiguous tensor's elements in its storage.
type Range2 = (usize, usize);

/// The element ranges of a normalisation's input and weight, checked: contiguous, and the
/// weight as long as the input's last dimension (`op` names the op in errors).
fn row_weight_ranges(
    op: &str,
    l1: &candle_core::Layout,
    l2: &candle_core::Layout,
) -> Result<(Range2, Range2)> {
    let (Some(x), Some(w)) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
        candle_core::bail!("{op}: inputs must be contiguous");
    };
    let d = w.1 - w.0;
    if d == 0 || l1.dims().last() != Some(&d) {
        candle_core::bail!("{op}: weight does not match the last dimension");
    }
    Ok((x, w))
}

impl RmsNormRounded {
    /// One row: `to`/`from` convert the 16-bit type to and from f32.
    fn row<T: Copy>(&self, x: &[T], w: &[T], y: &mut [T], to: fn(T) -> f32, from: fn(f32) -> T) {
        let ss: f32 = x.iter().map(|&v| to(v) * to(v)).sum();
        let r = 1.0 / (ss / x.len() as f32 + self.eps).sqrt();
        for ((o, &v), &wv) in y.iter_mut().zip(x).zip(w) {
            *o = from(to(from(to(v) * r)) * to(wv));
        }
    }
}

impl candle_core::CustomOp2 for RmsNormRounded {
    fn name(&self) -> &'static str {
        "rms-norm-rounded"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage as S;
        use rayon::prelude::*;
        let ((x0, x1), (w0, w1)) = row_weight_ranges(self.name(), l1, l2)?;
        let d = w1 - w0;
        macro_rules! run {
            ($x:expr, $w:expr, $ty:ty, $wrap:ident) => {{
                let (x, w) = (&$x[x0..x1], &$w[w0..w1]);
                let mut y = vec![<$ty>::ZERO; x.len()];
                y.par_chunks_mut(d)
                    .zip(x.par_chunks(d))
                    .with_min_len(crate::workers::min_split())
                    .for_each(|(yr, xr)| self.row(xr, w, yr, <$ty>::to_f32, <$ty>::from_f32));
                S::$wrap(y)
            }};
        }
        let out = match (s1, s2) {
            (S::BF16(x), S::BF16(w)) => run!(x, w, half::bf16, BF16),
            (S::F16(x), S::F16(w)) => run!(x, w, half::f16, F16),
            _ => candle_core::bail!("rms-norm-rounded: bf16 or f16 input and weight of one type"),
        };
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CudaStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        use kernels::{Module, Scalar};
        let (x, w) = row_weight_ranges(self.name(), l1, l2)?;
        if matches!(
            s1.slice,
            candle_core::cuda_backend::CudaStorageSlice::F32(_)
        ) {
            candle_core::bail!("rms-norm-rounded: bf16 or f16 input");
        }
        let (n, d) = (x.1 - x.0, w.1 - w.0);
        let scalars = [Scalar::U32(d as u32), Scalar::F32(self.eps)];
        let cfg = kernels::rows_config(n / d, d);
        let inputs = [(s1, x), (s2, w)];
        // SAFETY: rms_norm_rounded_*(x, w, y, d, eps).
        let y = unsafe {
            kernels::run(
                Module::Inference,
                "rms_norm_rounded",
                &inputs,
                n,
                &scalars,
                cfg,
            )
        }?;
        Ok((y, l1.shape().clone()))
    }
}

/// RMSNorm from plain differentiable ops (the reference for [`RmsNormTrack`], and the path
/// on other devices).
fn rms_norm_composed(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let var = x.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = x.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.broadcast_mul(w)
}

/// f32 rows of a contiguous CPU tensor.
pub(crate) fn cpu_f32<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
) -> Result<&'a [f32]> {
    let candle_core::CpuStorage::F32(data) = storage else {
        candle_core::bail!("f32 only");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("input must be contiguous");
    };
    Ok(&data[start..end])
}

/// RMSNorm with its backward pass in one op each, for training in f32 on the CPU and the
/// GPU (src/kernels/training.cu): the composed version costs six element-wise passes
/// forward and about twice that backward.
/// y = x · r · w with r = 1/sqrt(mean(x²) + eps) per row; backward:
/// dx = r·(w∘g) − r³/d · x · Σ(w∘g∘x), dw = Σ_rows g∘x·r.
struct RmsNormTrack {
    eps: f64,
}

/// 1/sqrt(mean(x²) + eps) of a row, as [`RmsNormTrack`] computes it.
fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ms = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
    1.0 / (ms + eps).sqrt()
}

/// RMSNorm of each `d`-wide row: (y, 1/rms per row); [`RmsNormTrack`]'s CPU forward, and
/// `train_layer`'s.
pub(super) fn rms_rows(x: &[f32], w: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    use rayon::prelude::*;
    let d = w.len();
    let mut y = vec![0f32; x.len()];
    let mut r = vec![0f32; x.len() / d];
    y.par_chunks_mut(d)
        .zip(r.par_iter_mut())
        .zip(x.par_chunks(d))
        .with_min_len(crate::workers::min_split())
        .for_each(|((yr, rr), xr)| {
            *rr = inv_rms(xr, eps);
            for ((o, &v), &wv) in yr.iter_mut().zip(xr).zip(w) {
                *o = v * *rr * wv;
            }
        });
    (y, r)
}

/// RMSNorm's backward on `d`-wide rows: `dx (+)= r·(w∘g) − r³/d · x · Σ(w∘g∘x)`, and
/// `Σ_rows g∘x·r` (the weight's gradient) when `want_dw`.
pub(super) fn rms_rows_backward(
    x: &[f32],
    r: &[f32],
    w: &[f32],
    g: &[f32],
    dx: &mut [f32],
    accumulate: bool,
    want_dw: bool,
) -> Option<Vec<f32>> {
    use rayon::prelude::*;
    let d = w.len();
    dx.par_chunks_mut(d)
        .zip(x.par_chunks(d).zip(g.par_chunks(d)))
        .zip(r.par_iter())
        .with_min_len(crate::workers::min_split())
        .for_each(|((dxr, (xr, gr)), &rv)| {
            let dot: f32 = xr
                .iter()
                .zip(gr)
                .zip(w)
                .map(|((&xv, &gv), &wv)| wv * gv * xv)
                .sum();
            let c = rv * rv * rv * dot / d as f32;
            for j in 0..d {
                let v = rv * w[j] * gr[j] - c * xr[j];
                if accumulate {
                    dxr[j] += v;
                } else {
                    dxr[j] = v;
                }
            }
        });
    if !want_dw {
        return None;
    }
    // Σ g∘x·r over rows, in fixed blocks: pair each row with its r.
    const BLOCK: usize = 64;
    let partial: Vec<Vec<f32>> = x
        .par_chunks(d * BLOCK)
        .zip(g.par_chunks(d * BLOCK))
        .zip(r.par_chunks(BLOCK))
        .with_min_len(crate::workers::min_split())
        .map(|((xb, gb), rb)| {
            let mut acc = vec![0f32; d];
            for ((xr, gr), &rv) in xb.chunks_exact(d).zip(gb.chunks_exact(d)).zip(rb) {
                for j in 0..d {
                    acc[j] += gr[j] * xr[j] * rv;
                }
            }
            acc
        })
        .collect();
    let mut dw = vec![0f32; d];
    for p in &partial {
        dw.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    Some(dw)
}

impl candle_core::CustomOp2 for RmsNormTrack {
    fn name(&self) -> &'static str {
        "rms-norm-track"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        row_weight_ranges(self.name(), l1, l2)?;
        let (x, w) = (cpu_f32(s1, l1)?, cpu_f32(s2, l2)?);
        let (y, _) = rms_rows(x, w, self.eps as f32);
        Ok((candle_core::CpuStorage::F32(y), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CudaStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        use kernels::{Module, Scalar};
        let (x, w) = row_weight_ranges(self.name(), l1, l2)?;
        if !matches!(
            s1.slice,
            candle_core::cuda_backend::CudaStorageSlice::F32(_)
        ) {
            candle_core::bail!("rms-norm-track: f32 only");
        }
        let (n, d) = (x.1 - x.0, w.1 - w.0);
        let scalars = [Scalar::U32(d as u32), Scalar::F32(self.eps as f32)];
        let cfg = kernels::rows_config(n / d, d);
        let inputs = [(s1, x), (s2, w)];
        // SAFETY: rms_norm_track_f32(x, w, y, d, eps).
        let y = unsafe {
            kernels::run(
                Module::Training,
                "rms_norm_track",
                &inputs,
                n,
                &scalars,
                cfg,
            )
        }?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        if x.device().is_cuda() {
            // dx and the per-row terms of dw from one kernel; dw sums them over rows.
            let d = w.elem_count();
            let rows = x.elem_count() / d.max(1);
            let out = x.contiguous()?.apply_op3_no_bwd(
                w,
                &grad.contiguous()?,
                &RmsNormTrackBackward { eps: self.eps },
            )?;
            let dx = out.narrow(0, 0, rows)?.reshape(x.shape())?;
            let dw = out.narrow(0, rows, rows)?.sum(0)?.reshape(w.shape())?;
            return Ok((Some(dx), Some(dw)));
        }
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let ws = w.to_vec1::<f32>()?;
        let gs = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let d = ws.len();
        let eps = self.eps as f32;
        let r: Vec<f32> = xs.chunks(d).map(|row| inv_rms(row, eps)).collect();
        let mut dx = vec![0f32; xs.len()];
        let dw = rms_rows_backward(&xs, &r, &ws, &gs, &mut dx, false, true)
            .expect("the weight's gradient, asked for");
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, w.shape(), dev)?),
        ))
    }
}

/// The GPU side of [`RmsNormTrack`]'s backward (the CPU computes it in `bwd` itself): from
/// x, w and the incoming gradient, a (2·rows, d) tensor holding dx in its first rows and
/// the per-row terms of dw in the next.
struct RmsNormTrackBackward {
    #[allow(dead_code)] // read by the CUDA side only
    eps: f64,
}

impl candle_core::CustomOp3 for RmsNormTrackBackward {
    fn name(&self) -> &'static str {
        "rms-norm-track-backward"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        candle_core::bail!("rms-norm-track-backward: the CPU computes it in RmsNormTrack::bwd")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CudaStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CudaStorage,
        l3: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        use kernels::{Module, Scalar};
        let (x, w) = row_weight_ranges(self.name(), l1, l2)?;
        let (Some(g), true) = (l3.contiguous_offsets(), l3.shape() == l1.shape()) else {
            candle_core::bail!("rms-norm-track-backward: the gradient does not match the input");
        };
        if !matches!(
            s1.slice,
            candle_core::cuda_backend::CudaStorageSlice::F32(_)
        ) {
            candle_core::bail!("rms-norm-track-backward: f32 only");
        }
        let (n, d) = (x.1 - x.0, w.1 - w.0);
        let rows = n / d;
        let scalars = [
            Scalar::U32(rows as u32),
            Scalar::U32(d as u32),
            Scalar::F32(self.eps as f32),
        ];
        let cfg = kernels::rows_config(rows, d);
        let inputs = [(s1, x), (s2, w), (s3, g)];
        let kernel = "rms_norm_track_backward";
        // SAFETY: rms_norm_track_backward_f32(x, w, g, out, rows, d, eps), out of 2·n.
        let out = unsafe { kernels::run(Module::Training, kernel, &inputs, 2 * n, &scalars, cfg) }?;
        Ok((out, candle_core::Shape::from((2 * rows, d))))
    }
}

/// LayerNorm over the last dimension with weight and bias. For 16-bit input the
/// differentiable path computes in f32 and rounds once, as torch's layer_norm does (the
/// fused one does the same inside its kernel).
pub fn layer_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    grad: Grad,
) -> Result<Tensor> {
    if grad == Grad::Track && x.dtype() != DType::F32 {
        let f = |t: &Tensor| t.to_dtype(DType::F32);
        return layer_norm(&f(x)?, &f(weight)?, &f(bias)?, eps, grad)?.to_dtype(x.dtype());
    }
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

/// Softmax over the last dimension, computed in f32 whatever the input dtype (as torch's
/// `softmax(dtype=torch.float32)` in transformers' attention) and returned in it.
pub fn softmax_last_dim(x: &Tensor, grad: Grad) -> Result<Tensor> {
    if x.dtype() != DType::F32 {
        return softmax_last_dim(&x.to_dtype(DType::F32)?, grad)?.to_dtype(x.dtype());
    }
    match grad {
        Grad::None => candle_nn::ops::softmax_last_dim(&x.contiguous()?),
        Grad::Track => {
            let max = x.max_keepdim(D::Minus1)?.detach();
            let e = x.broadcast_sub(&max)?.exp()?;
            e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
        }
    }
}

/// Rotary embedding on `x` of shape (batch, seq, heads, head_dim) with `cos`/`sin` of shape
/// (seq, head_dim) laid out as `cat(freqs, freqs)` (non-interleaved halves).
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor, grad: Grad) -> Result<Tensor> {
    let half = cos.dim(D::Minus1)? / 2;
    let c = cos.narrow(D::Minus1, 0, half)?.contiguous()?;
    let s = sin.narrow(D::Minus1, 0, half)?.contiguous()?;
    match grad {
        Grad::None => candle_nn::rotary_emb::rope_thd(&x.contiguous()?, &c, &s),
        Grad::Track => {
            let (c, s) = (c.to_dtype(x.dtype())?, s.to_dtype(x.dtype())?);
            x.contiguous()?.apply_op3(&c, &s, Rope { sign: 1.0 })
        }
    }
}

/// `body` on CPU storages `s…` of one float type, bound to slices `v…`, with `to`/`from`
/// converting that type to and from f32; the result wrapped in the same type's storage.
macro_rules! per_float_type {
    ($op:expr, ($($s:expr),+), |$($v:ident),+; $to:ident, $from:ident| $body:expr) => {{
        use candle_core::CpuStorage as S;
        match ($($s,)+) {
            ($(S::F32($v),)+) => {
                let ($to, $from): (fn(f32) -> f32, fn(f32) -> f32) = (|v| v, |v| v);
                S::F32($body)
            }
            ($(S::BF16($v),)+) => {
                let ($to, $from) = (half::bf16::to_f32, half::bf16::from_f32);
                S::BF16($body)
            }
            ($(S::F16($v),)+) => {
                let ($to, $from) = (half::f16::to_f32, half::f16::from_f32);
                S::F16($body)
            }
            _ => candle_core::bail!("{}: f32, bf16 or f16 inputs of one type", $op),
        }
    }};
}

/// Rotary embedding with its backward pass, for training (CPU: f32, bf16, f16; CUDA in
/// src/kernels/training.cu). `x` (batch, seq, heads, d), `cos`/`sin` (seq, d/2) of x's
/// type: y[i] = x[i]·c[i] − x[i+h]·s[i], y[i+h] = x[i+h]·c[i] + x[i]·s[i], each product
/// and the sum rounded to the type (transformers' `q * cos + rotate_half(q) * sin`
/// in that type, so the result is bit-equal to it). With `sign` −1 it is its own
/// backward: dx = the same map of the gradient with −sin (the tables repeat over both
/// halves).
#[derive(Clone, Copy)]
struct Rope {
    sign: f32,
}

impl Rope {
    /// (rows, heads, seq, d) of `x` with its tables, checked, and the three element ranges.
    #[allow(clippy::type_complexity)]
    fn geometry(
        x: &candle_core::Layout,
        c: &candle_core::Layout,
        s: &candle_core::Layout,
    ) -> Result<((usize, usize, usize, usize), [Range2; 3])> {
        let (b, seq, heads, d) = x.shape().dims4()?;
        let (Some(xr), Some(cr), Some(sr)) = (
            x.contiguous_offsets(),
            c.contiguous_offsets(),
            s.contiguous_offsets(),
        ) else {
            candle_core::bail!("rope: inputs must be contiguous");
        };
        if d % 2 != 0 || c.dims() != [seq, d / 2] || s.dims() != [seq, d / 2] {
            candle_core::bail!("rope: tables {:?} for input {:?}", c.dims(), x.dims());
        }
        Ok(((b * seq * heads, heads, seq, d), [xr, cr, sr]))
    }

    /// The map on contiguous rows of `d`, computing in f32 and rounding each product and the
    /// sum with `round` (the identity for f32).
    #[allow(clippy::too_many_arguments)]
    fn rows<T: Copy + Send + Sync>(
        &self,
        x: &[T],
        c: &[T],
        s: &[T],
        (heads, seq, d): (usize, usize, usize),
        to: fn(T) -> f32,
        from: fn(f32) -> T,
    ) -> Vec<T> {
        use rayon::prelude::*;
        let h = d / 2;
        let r = |v: f32| to(from(v));
        let mut y = x.to_vec();
        y.par_chunks_mut(d)
            .enumerate()
            .with_min_len(crate::workers::min_split())
            .for_each(|(row, yr)| {
                let t = (row / heads) % seq;
                let (cs, ss) = (&c[t * h..(t + 1) * h], &s[t * h..(t + 1) * h]);
                for i in 0..h {
                    let (a, b) = (to(yr[i]), to(yr[i + h]));
                    let (cv, sv) = (to(cs[i]), self.sign * to(ss[i]));
                    yr[i] = from(r(a * cv) - r(b * sv));
                    yr[i + h] = from(r(b * cv) + r(a * sv));
                }
            });
        y
    }
}

impl candle_core::CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "rope-track"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CpuStorage,
        l3: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let ((_, heads, seq, d), [xr, cr, sr]) = Self::geometry(l1, l2, l3)?;
        let g = (heads, seq, d);
        let out = per_float_type!(self.name(), (s1, s2, s3), |x, c, s; to, from| {
            self.rows(&x[xr.0..xr.1], &c[cr.0..cr.1], &s[sr.0..sr.1], g, to, from)
        });
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CudaStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CudaStorage,
        l3: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        use kernels::{Module, Scalar};
        let ((rows, heads, seq, d), [xr, cr, sr]) = Self::geometry(l1, l2, l3)?;
        let scalars = [
            Scalar::U64(rows as u64),
            Scalar::U32(heads as u32),
            Scalar::U32(seq as u32),
            Scalar::U32(d as u32),
            Scalar::F32(self.sign),
        ];
        let cfg = kernels::elems_config(rows * d / 2);
        let inputs = [(s1, xr), (s2, cr), (s3, sr)];
        // SAFETY: rope_*(x, cos, sin, y, rows, heads, seq, d, sign).
        let y =
            unsafe { kernels::run(Module::Training, "rope", &inputs, rows * d, &scalars, cfg) }?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let back = Rope { sign: -self.sign };
        let dx = grad.contiguous()?.apply_op3_no_bwd(cos, sin, &back)?;
        Ok((Some(dx), None, None))
    }
}

/// `silu(g) · u` (the gated MLP of the Qwen decoders) with its backward pass, for
/// inference and training (CPU and CUDA; f32, bf16, f16), with torch's roundings: silu(g) =
/// g / (1 + exp(−g)) rounded to the type, then the product rounded.
pub fn swiglu(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    g.contiguous()?.apply_op2(&u.contiguous()?, SwiGlu)
}

struct SwiGlu;

/// The element ranges of same-shaped contiguous inputs.
fn same_shape_ranges<const N: usize>(
    op: &str,
    layouts: [&candle_core::Layout; N],
) -> Result<[Range2; N]> {
    let mut out = [(0, 0); N];
    for (o, l) in out.iter_mut().zip(layouts) {
        let Some(r) = l.contiguous_offsets() else {
            candle_core::bail!("{op}: inputs must be contiguous");
        };
        if l.shape() != layouts[0].shape() {
            candle_core::bail!("{op}: inputs of different shapes");
        }
        *o = r;
    }
    Ok(out)
}

use super::fastmath::{self, silu_parts};

impl SwiGlu {
    fn forward<T: Copy + Send + Sync + Default>(
        g: &[T],
        u: &[T],
        to: fn(T) -> f32,
        from: fn(f32) -> T,
    ) -> Vec<T> {
        use rayon::prelude::*;
        let mut y = vec![T::default(); g.len()];
        y.par_iter_mut()
            .zip(g.par_iter().zip(u))
            .with_min_len(crate::workers::min_split())
            .for_each(|(o, (&gv, &uv))| {
                let (act, _) = silu_parts(to(gv), |v| to(from(v)));
                *o = from(act * to(uv));
            });
        y
    }

    /// dg then du (2·n values), as torch's mul and silu backward round them: a = dy·u,
    /// dg = a·s·(1 + g·(1 − s)), du = dy·silu(g).
    fn backward<T: Copy + Send + Sync + Default>(
        g: &[T],
        u: &[T],
        dy: &[T],
        to: fn(T) -> f32,
        from: fn(f32) -> T,
    ) -> Vec<T> {
        use rayon::prelude::*;
        let n = g.len();
        let mut out = vec![T::default(); 2 * n];
        let (dg, du) = out.split_at_mut(n);
        dg.par_iter_mut()
            .zip(du.par_iter_mut())
            .zip(g.par_iter().zip(u.par_iter().zip(dy)))
            .with_min_len(crate::workers::min_split())
            .for_each(|((dgo, duo), (&gv, (&uv, &dv)))| {
                let (gv, d) = (to(gv), to(dv));
                let (act, s) = silu_parts(gv, |v| to(from(v)));
                let a = to(from(d * to(uv)));
                *dgo = from(a * s * (1.0 + gv * (1.0 - s)));
                *duo = from(d * act);
            });
        out
    }
}

impl candle_core::CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let [gr, ur] = same_shape_ranges(self.name(), [l1, l2])?;
        if let (candle_core::CpuStorage::F32(g), candle_core::CpuStorage::F32(u)) = (s1, s2) {
            let y = fastmath::par_map2(&g[gr.0..gr.1], &u[ur.0..ur.1], fastmath::swiglu_slice);
            return Ok((candle_core::CpuStorage::F32(y), l1.shape().clone()));
        }
        let out = per_float_type!(self.name(), (s1, s2), |g, u; to, from| {
            Self::forward(&g[gr.0..gr.1], &u[ur.0..ur.1], to, from)
        });
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CudaStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        let [gr, ur] = same_shape_ranges(self.name(), [l1, l2])?;
        let n = gr.1 - gr.0;
        // SAFETY: swiglu_*(g, u, y, n).
        let y = unsafe { kernels::elementwise("swiglu", &[(s1, gr), (s2, ur)], n) }?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = g.elem_count();
        let out = g.apply_op3_no_bwd(u, &grad.contiguous()?, &SwiGluBackward)?;
        let dg = out.narrow(0, 0, n)?.reshape(g.shape())?;
        let du = out.narrow(0, n, n)?.reshape(u.shape())?;
        Ok((Some(dg), Some(du)))
    }
}

/// [`SwiGlu`]'s backward: from g, u and the incoming gradient, dg then du, flat (2·n).
struct SwiGluBackward;

impl candle_core::CustomOp3 for SwiGluBackward {
    fn name(&self) -> &'static str {
        "swiglu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CpuStorage,
        l3: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage as S;
        use rayon::prelude::*;
        let [gr, ur, dr] = same_shape_ranges(self.name(), [l1, l2, l3])?;
        let n = gr.1 - gr.0;
        if let (S::F32(g), S::F32(u), S::F32(d)) = (s1, s2, s3) {
            let (g, u, d) = (&g[gr.0..gr.1], &u[ur.0..ur.1], &d[dr.0..dr.1]);
            let mut out = vec![0f32; 2 * n];
            let (dg, du) = out.split_at_mut(n);
            let c = fastmath::CHUNK;
            dg.par_chunks_mut(c)
                .zip(du.par_chunks_mut(c))
                .zip(g.par_chunks(c).zip(u.par_chunks(c)).zip(d.par_chunks(c)))
                .with_min_len(crate::workers::min_split())
                .for_each(|((dg, du), ((g, u), d))| fastmath::swiglu_grad_slice(g, u, d, dg, du));
            return Ok((S::F32(out), candle_core::Shape::from(2 * n)));
        }
        let out = per_float_type!(self.name(), (s1, s2, s3), |g, u, d; to, from| {
            SwiGlu::backward(&g[gr.0..gr.1], &u[ur.0..ur.1], &d[dr.0..dr.1], to, from)
        });
        Ok((out, candle_core::Shape::from(2 * n)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CudaStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CudaStorage,
        l3: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        let [gr, ur, dr] = same_shape_ranges(self.name(), [l1, l2, l3])?;
        let n = gr.1 - gr.0;
        // SAFETY: swiglu_backward_*(g, u, dy, out, n), out of 2·n.
        let out = unsafe {
            kernels::elementwise("swiglu_backward", &[(s1, gr), (s2, ur), (s3, dr)], 2 * n)
        }?;
        Ok((out, candle_core::Shape::from(2 * n)))
    }
}

/// Scale, optional causal mask, optional left padding and softmax over the last dimension
/// in one pass, on the CPU (f32) and the GPU (f32, bf16, f16; src/kernels/inference.cu),
/// with its backward pass in one more ([`SoftmaxGrad`]). Rows are query positions; with grouped-query attention
/// several heads are folded into the rows, so row `r` is query position `r % seq_q` of
/// batch entry `r / rows_per_batch`. Row `r` sees the keys `[left_pad[batch], end)` with
/// `end` the causal limit (or every key); the rest get probability 0.
#[derive(Clone)]
pub(super) struct ScaledMaskedSoftmax {
    pub(super) scale: f32,
    pub(super) causal: bool,
    pub(super) seq_q: usize,
    pub(super) rows_per_batch: usize,
    /// Masked keys at the start of each batch entry's row (left-padded batches); empty: none.
    pub(super) left_pad: Vec<u32>,
}

impl ScaledMaskedSoftmax {
    /// The keys row `r` of a `seq_k`-wide score matrix may see.
    fn visible(&self, r: usize, seq_k: usize) -> std::ops::Range<usize> {
        // Causal alignment: query i sees keys 0..=i + (seq_k - seq_q).
        let offset = seq_k.saturating_sub(self.seq_q);
        let end = if self.causal {
            (r % self.seq_q + offset + 1).min(seq_k)
        } else {
            seq_k
        };
        let begin = self
            .left_pad
            .get(r / self.rows_per_batch.max(1))
            .map_or(0, |&p| (p as usize).min(end));
        begin..end
    }

    /// Row `r` of the probabilities from its scores `s` (all `seq_k` keys) into `d`: the
    /// softmax of the scaled scores over the keys the row may see, zero for the others
    /// (all zero when it sees none).
    pub(super) fn row(&self, r: usize, s: &[f32], d: &mut [f32]) {
        let range = self.visible(r, s.len());
        d[..range.start].fill(0.0);
        d[range.end..].fill(0.0);
        let (d, s) = (&mut d[range.clone()], &s[range]);
        if s.is_empty() {
            return;
        }
        let max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) * self.scale;
        fastmath::exp_scaled_slice(s, self.scale, max, d);
        let sum: f32 = d.iter().sum();
        d.iter_mut().for_each(|o| *o /= sum);
    }
}

impl candle_core::CustomOp1 for ScaledMaskedSoftmax {
    fn name(&self) -> &'static str {
        "scaled-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let candle_core::CpuStorage::F32(src) = storage else {
            candle_core::bail!("scaled-masked-softmax: f32 only on the CPU");
        };
        let Some((o1, o2)) = layout.contiguous_offsets() else {
            candle_core::bail!("scaled-masked-softmax: input must be contiguous");
        };
        let src = &src[o1..o2];
        let seq_k = layout.dims()[layout.dims().len() - 1];
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(seq_k)
            .zip(src.par_chunks(seq_k))
            .enumerate()
            .with_min_len(crate::workers::min_split())
            .for_each(|(r, (d, s))| self.row(r, s, d));
        Ok((candle_core::CpuStorage::F32(dst), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let op = SoftmaxGrad { scale: self.scale };
        Ok(Some(res.apply_op2_no_bwd(&grad_res.contiguous()?, &op)?))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;
        let Some((o1, o2)) = layout.contiguous_offsets() else {
            candle_core::bail!("scaled-masked-softmax: input must be contiguous");
        };
        let dev = storage.device.clone();
        let seq_k = layout.dims()[layout.dims().len() - 1];
        let n = o2 - o1;
        let cfg = kernels::rows_config(n / seq_k.max(1), seq_k);
        let pad = if self.left_pad.is_empty() {
            None
        } else {
            Some(dev.cuda_stream().clone_htod(&self.left_pad).w()?)
        };
        let null: u64 = 0; // a null pointer: no padding
        let (seq_k, seq_q) = (seq_k as u32, self.seq_q as u32);
        let rows_per_batch = self.rows_per_batch.max(1) as u32;
        let causal = u32::from(self.causal);
        let slice = kernels::per_float_slice!(self.name(), &storage.slice, |s, T, suffix, wrap| {
            let src = s.slice(o1..o2);
            // SAFETY: every element is written by the kernel.
            let dst = unsafe { dev.alloc::<T>(n)? };
            let name = format!("scaled_masked_softmax_{suffix}");
            let f = kernels::func(&dev, kernels::Module::Inference, &name)?;
            let mut b = f.builder();
            b.arg(&src).arg(&dst);
            match &pad {
                Some(p) => b.arg(p),
                None => b.arg(&null),
            };
            b.arg(&seq_k)
                .arg(&seq_q)
                .arg(&rows_per_batch)
                .arg(&causal)
                .arg(&self.scale);
            // SAFETY: the arguments of scaled_masked_softmax_*, in order.
            unsafe { kernels::launch(b, cfg) }?;
            wrap(dst)
        });
        Ok((
            candle_core::CudaStorage { slice, device: dev },
            layout.shape().clone(),
        ))
    }
}

/// The backward pass of [`ScaledMaskedSoftmax`]: from the probabilities y and their
/// gradient dy (rows over the last dimension), dx = scale · y ∘ (dy − Σ y∘dy), computed
/// in f32 (masked keys have y = 0 and get no gradient). CPU (f32) and CUDA (f32, bf16,
/// f16; src/kernels/training.cu).
struct SoftmaxGrad {
    scale: f32,
}

impl SoftmaxGrad {
    /// Both inputs' element ranges (contiguous, of one shape) and the row length.
    fn ranges(
        l1: &candle_core::Layout,
        l2: &candle_core::Layout,
    ) -> Result<(Range2, Range2, usize)> {
        let (Some(y), Some(g)) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            candle_core::bail!("softmax-grad: inputs must be contiguous");
        };
        if l1.shape() != l2.shape() {
            candle_core::bail!("softmax-grad: shapes differ");
        }
        Ok((y, g, l1.dims().last().copied().unwrap_or(1).max(1)))
    }
}

impl candle_core::CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let (y, g) = (cpu_f32(s1, l1)?, cpu_f32(s2, l2)?);
        let (_, _, d) = Self::ranges(l1, l2)?;
        let mut dx = vec![0f32; y.len()];
        dx.par_chunks_mut(d)
            .zip(y.par_chunks(d).zip(g.par_chunks(d)))
            .with_min_len(crate::workers::min_split())
            .for_each(|(o, (yr, gr))| {
                let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                for ((o, &yv), &gv) in o.iter_mut().zip(yr).zip(gr) {
                    *o = self.scale * yv * (gv - dot);
                }
            });
        Ok((candle_core::CpuStorage::F32(dx), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CudaStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        use kernels::{Module, Scalar};
        let (y, g, d) = Self::ranges(l1, l2)?;
        let n = y.1 - y.0;
        let scalars = [Scalar::U32(d as u32), Scalar::F32(self.scale)];
        let cfg = kernels::rows_config(n / d, d);
        let inputs = [(s1, y), (s2, g)];
        // SAFETY: softmax_backward_*(y, dy, dx, d, scale).
        let dx = unsafe {
            kernels::run(
                Module::Training,
                "softmax_backward",
                &inputs,
                n,
                &scalars,
                cfg,
            )
        }?;
        Ok((dx, l1.shape().clone()))
    }
}

/// tanh-GELU (`gelu_pytorch_tanh`, the vision tower's activation) with its backward pass,
/// as torch computes it: 0.5·x·(1 + tanh(b·(x + k·x³))) with b = √(2/π), k = 0.044715, in
/// f32 and rounded once to x's type (CPU and CUDA; f32, bf16, f16).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluTanh)
}

struct GeluTanh;

impl candle_core::CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "gelu-tanh"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let [r] = same_shape_ranges(self.name(), [layout])?;
        if let candle_core::CpuStorage::F32(x) = storage {
            let y = fastmath::par_map1(&x[r.0..r.1], fastmath::gelu_tanh_slice);
            return Ok((candle_core::CpuStorage::F32(y), layout.shape().clone()));
        }
        let out = per_float_type!(self.name(), (storage), |x; to, from| {
            x[r.0..r.1]
                .par_iter()
                .with_min_len(crate::workers::min_split())
                .map(|&v| from(fastmath::gelu_tanh(to(v))))
                .collect()
        });
        Ok((out, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        let [r] = same_shape_ranges(self.name(), [layout])?;
        let n = r.1 - r.0;
        // SAFETY: gelu_tanh_*(x, y, n).
        let y = unsafe { kernels::elementwise("gelu_tanh", &[(storage, r)], n) }?;
        Ok((y, layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(
            &grad.contiguous()?,
            &GeluTanhBackward,
        )?))
    }
}

/// [`GeluTanh`]'s backward: dx = dy · gelu′(x), computed in f32, rounded once.
struct GeluTanhBackward;

impl candle_core::CustomOp2 for GeluTanhBackward {
    fn name(&self) -> &'static str {
        "gelu-tanh-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let [xr, gr] = same_shape_ranges(self.name(), [l1, l2])?;
        if let (candle_core::CpuStorage::F32(x), candle_core::CpuStorage::F32(g)) = (s1, s2) {
            let dx = fastmath::par_map2(
                &x[xr.0..xr.1],
                &g[gr.0..gr.1],
                fastmath::gelu_tanh_grad_slice,
            );
            return Ok((candle_core::CpuStorage::F32(dx), l1.shape().clone()));
        }
        let out = per_float_type!(self.name(), (s1, s2), |x, g; to, from| {
            x[xr.0..xr.1]
                .par_iter()
                .zip(&g[gr.0..gr.1])
                .with_min_len(crate::workers::min_split())
                .map(|(&v, &d)| from(to(d) * fastmath::gelu_tanh_derivative(to(v))))
                .collect()
        });
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CudaStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        let [xr, gr] = same_shape_ranges(self.name(), [l1, l2])?;
        let n = xr.1 - xr.0;
        // SAFETY: gelu_tanh_backward_*(x, dy, dx, n).
        let dx = unsafe { kernels::elementwise("gelu_tanh_backward", &[(s1, xr), (s2, gr)], n) }?;
        Ok((dx, l1.shape().clone()))
    }
}

#[cfg(feature = "cuda")]
use super::cuda_kernels as kernels;

/// Scaled dot-product attention. `q` (batch, seq, heads, head_dim), `k`/`v` (batch, seq,
/// kv_heads, head_dim) with heads a multiple of kv_heads (grouped-query attention).
/// Returns (batch, seq, heads * head_dim).
///
/// The query heads that share a K/V head are folded into the rows of one matmul, so K/V
/// are never copied per head. Scale, mask and softmax are one pass (and one more backward).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool, grad: Grad) -> Result<Tensor> {
    attention_padded(q, k, v, causal, &[], grad)
}

/// [`attention`] for a left-padded batch: the first `left_pad[b]` keys of batch entry `b`
/// are padding and get no weight (empty: no padding).
pub fn attention_padded(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    causal: bool,
    left_pad: &[usize],
    grad: Grad,
) -> Result<Tensor> {
    let (b, seq, heads, hd) = q.dims4()?;
    let kv_heads = k.dim(2)?;
    if !left_pad.is_empty() && left_pad.len() != b {
        candle_core::bail!(
            "attention: {} padding lengths for a batch of {b}",
            left_pad.len()
        );
    }
    let scale = (hd as f64).powf(-0.5);
    let rep = heads / kv_heads;
    let op = ScaledMaskedSoftmax {
        scale: scale as f32,
        causal,
        seq_q: seq,
        rows_per_batch: kv_heads * rep * seq,
        left_pad: left_pad.iter().map(|&p| p as u32).collect(),
    };
    if grad == Grad::None
        && [q, k, v]
            .iter()
            .all(|t| t.dtype() == DType::F32 && t.device().is_cpu())
        && hd % super::sgemm::PANEL == 0
        && k.dim(1)? > 0
        && super::sgemm::available()
    {
        return attention_panels(q, k, v, &op);
    }
    let q = q
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, kv_heads, rep * seq, hd))?;
    let k = k.transpose(1, 2)?.contiguous()?;
    let v = v.transpose(1, 2)?.contiguous()?;
    let scores = q.matmul(&k.t()?)?; // (b, kv, rep*seq, seq_k)
    let apply = |t: &Tensor| match grad {
        Grad::None => t.apply_op1_no_bwd(&op),
        Grad::Track => t.apply_op1(op.clone()),
    };
    let att = if q.device().is_cpu() && q.dtype() != DType::F32 {
        // The CPU kernel is f32-only; the probabilities are rounded back, as on the GPU.
        apply(&scores.to_dtype(DType::F32)?)?.to_dtype(q.dtype())?
    } else {
        apply(&scores)?
    };
    att.matmul(&v)?
        .reshape((b, heads, seq, hd))?
        .transpose(1, 2)?
        .reshape((b, seq, heads * hd))
}

/// [`attention_padded`] forward-only in f32 on a CPU that runs [`super::sgemm`], the head
/// dimension whole panels: each (batch entry, key/value head) on one thread, its keys and
/// values packed as panels once for its query heads, both products by `sgemm` on that
/// thread, the softmax of `op` between them. The query heads are read in place and no
/// transposed copy of q, k, v or the output is made: on the mid-size model of
/// BENCHMARKS.md candle's path (transposed copies, then `gemm` per head) was about 7 % of
/// a forward pass.
fn attention_panels(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    op: &ScaledMaskedSoftmax,
) -> Result<Tensor> {
    use super::sgemm::{matmul_here, PANEL};
    use rayon::prelude::*;
    let (b, seq, heads, hd) = q.dims4()?;
    let (_, seq_k, kv_heads, _) = k.dims4()?;
    let rep = heads / kv_heads;
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let guards = [
        q.storage_and_layout(),
        k.storage_and_layout(),
        v.storage_and_layout(),
    ];
    let mut data = Vec::with_capacity(3);
    for (storage, layout) in &guards {
        let candle_core::Storage::Cpu(cpu) = &**storage else {
            candle_core::bail!("attention: a tensor that is not on the CPU");
        };
        data.push(cpu_f32(cpu, layout)?);
    }
    let (qd, kd, vd) = (data[0], data[1], data[2]);
    // Keys padded with zero keys to whole panels (their scores are never read).
    let n_pad = seq_k.div_ceil(PANEL) * PANEL;
    let per_head = |(bi, g): (usize, usize)| -> Vec<f32> {
        let at = |t: &[f32], pos: usize, d: usize| t[((bi * seq_k + pos) * kv_heads + g) * hd + d];
        // The keys as the weight of q · kᵀ: (n_pad, hd) in panels.
        let mut kp = vec![0f32; n_pad * hd];
        for (p, panel) in kp.chunks_exact_mut(PANEL * hd).enumerate() {
            for j in 0..PANEL.min(seq_k - p * PANEL) {
                for d in 0..hd {
                    panel[d * PANEL + j] = at(kd, p * PANEL + j, d);
                }
            }
        }
        // The values as the weight of p · v: vᵀ (hd, seq_k) in panels, each a 32-column
        // slice of v's rows.
        let mut vp = vec![0f32; hd * seq_k];
        for (p, panel) in vp.chunks_exact_mut(PANEL * seq_k).enumerate() {
            for (pos, row) in panel.chunks_exact_mut(PANEL).enumerate() {
                let start = ((bi * seq_k + pos) * kv_heads + g) * hd + p * PANEL;
                row.copy_from_slice(&vd[start..start + PANEL]);
            }
        }
        let mut scores = vec![0f32; seq * n_pad];
        let mut probs = vec![0f32; seq * n_pad];
        let mut out = vec![0f32; rep * seq * hd];
        for (r, out) in out.chunks_exact_mut(seq * hd).enumerate() {
            let h = g * rep + r;
            // Query rows of head h: row stride heads·hd in q (b, seq, heads, hd).
            let a = &qd[(bi * seq * heads + h) * hd..];
            matmul_here((seq, n_pad, hd), a, heads * hd, &kp, &mut scores);
            for (i, (srow, prow)) in scores
                .chunks_exact(n_pad)
                .zip(probs.chunks_exact_mut(n_pad))
                .enumerate()
            {
                // The same rows, masks and arithmetic as the op's own CPU kernel.
                op.row(
                    bi * op.rows_per_batch + i,
                    &srow[..seq_k],
                    &mut prow[..seq_k],
                );
            }
            matmul_here((seq, hd, seq_k), &probs, n_pad, &vp, out);
        }
        out
    };
    let tasks: Vec<(usize, usize)> = (0..b)
        .flat_map(|bi| (0..kv_heads).map(move |g| (bi, g)))
        .collect();
    let parts: Vec<Vec<f32>> = tasks
        .par_iter()
        .with_min_len(crate::workers::min_split())
        .map(|&t| per_head(t))
        .collect();
    // (b, seq, heads, hd) from each task's (rep, seq, hd).
    let mut o = vec![0f32; b * seq * heads * hd];
    for (&(bi, g), part) in tasks.iter().zip(&parts) {
        for (r, head) in part.chunks_exact(seq * hd).enumerate() {
            let h = g * rep + r;
            for (i, row) in head.chunks_exact(hd).enumerate() {
                let start = ((bi * seq + i) * heads + h) * hd;
                o[start..start + hd].copy_from_slice(row);
            }
        }
    }
    drop(guards);
    Tensor::from_vec(o, (b, seq, heads * hd), q.device())
}

/// `x @ w.T` for a frozen weight (one that no gradient must reach) on the CPU or the GPU:
/// autograd then computes only the input's gradient. (candle's matmul backward always
/// computes both operands' gradients, which for frozen layers above the trained ones is a
/// third of the backward pass wasted.)
struct FrozenMatmul {
    w: Tensor,
}

impl FrozenMatmul {
    /// (m, n, k) of `x` (m, k) times `w.T` (k, n), and the layout of `w.T`.
    fn dims(
        &self,
        x: &candle_core::Layout,
    ) -> Result<((usize, usize, usize), candle_core::Layout)> {
        let (m, k) = x.shape().dims2()?;
        let (n, wk) = self.w.dims2()?;
        if wk != k {
            candle_core::bail!("frozen-matmul: ({m}, {k}) times a ({n}, {wk}) weight");
        }
        Ok(((m, n, k), self.w.layout().transpose(0, 1)?))
    }
}

impl candle_core::CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::backend::BackendStorage;
        let ((m, n, k), wt) = self.dims(layout)?;
        let (w, _) = self.w.storage_and_layout();
        let candle_core::Storage::Cpu(w) = &*w else {
            candle_core::bail!("frozen-matmul: the weight is not on the CPU");
        };
        let y = storage.matmul(w, (1, m, n, k), layout, &wt)?;
        Ok((y, candle_core::Shape::from((m, n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        use candle_core::backend::BackendStorage;
        let ((m, n, k), wt) = self.dims(layout)?;
        let (w, _) = self.w.storage_and_layout();
        let candle_core::Storage::Cuda(w) = &*w else {
            candle_core::bail!("frozen-matmul: the weight is not on the GPU");
        };
        let y = storage.matmul(w, (1, m, n, k), layout, &wt)?;
        Ok((y, candle_core::Shape::from((m, n))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.matmul(&self.w)?))
    }
}

/// A frozen f32 CPU weight (n, k) stored as [`super::sgemm`]'s panels: a (n/32, 32, k)
/// tensor that tracks no op.
pub(crate) struct PanelWeight {
    w: Tensor,
    pub n: usize,
    pub k: usize,
}

impl PanelWeight {
    /// `w` as panels, if it is stored that way.
    pub(crate) fn of(w: &Tensor) -> Option<Self> {
        let (p, nr, k) = w.dims3().ok()?;
        let ok = nr == super::sgemm::PANEL
            && !w.track_op()
            && w.dtype() == DType::F32
            && w.device().is_cpu()
            && w.stride() == [nr * k, 1, nr];
        ok.then(|| Self {
            w: w.clone(),
            n: p * nr,
            k,
        })
    }

    /// `f` of the panels' floats.
    pub(crate) fn with_panels<R>(&self, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
        let (ws, wl) = self.w.storage_and_layout();
        let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(wd)) = &*ws else {
            candle_core::bail!("panels: the weight is not f32 on the CPU");
        };
        Ok(f(
            &wd[wl.start_offset()..wl.start_offset() + self.n * self.k]
        ))
    }
}

/// `x · wᵀ` for a frozen weight stored as [`super::sgemm`]'s panels, inside the training
/// graph: forward on the panels, backward only the input's gradient `dy · w`, from the
/// same panels ([`super::sgemm::gemm_by_panels`]).
struct FrozenPanels(PanelWeight);

impl candle_core::CustomOp1 for FrozenPanels {
    fn name(&self) -> &'static str {
        "frozen-panels"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (m, k) = layout.shape().dims2()?;
        let x = cpu_f32(storage, layout)?;
        let (n, wk) = (self.0.n, self.0.k);
        if wk != k {
            candle_core::bail!("frozen-panels: ({m}, {k}) times panels of ({n}, {wk})");
        }
        let y = self
            .0
            .with_panels(|panels| super::sgemm::matmul_new((m, n, k), x, k, panels, None))?;
        Ok((
            candle_core::CpuStorage::F32(y),
            candle_core::Shape::from((m, n)),
        ))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (m, k) = arg.dims2()?;
        let n = self.0.n;
        // The output's gradient read where it is (m × 151 936 floats for a 2B-shaped head).
        let grad = grad_res.contiguous()?;
        let (gs, gl) = grad.storage_and_layout();
        let candle_core::Storage::Cpu(gcpu) = &*gs else {
            candle_core::bail!("frozen-panels: the gradient is not on the CPU");
        };
        let dy = cpu_f32(gcpu, gl)?;
        let dx = self.0.with_panels(|panels| {
            super::sgemm::gemm_by_panels_new(
                (m, k, n),
                super::sgemm::View::rows(dy, n),
                panels,
                true,
            )
        })?;
        Ok(Some(Tensor::from_vec(dx, (m, k), arg.device())?))
    }
}

/// [`linear`] of one input by several weights, each weight's output in order: on this
/// CPU's panel path one product for all of them (see [`super::sgemm::products`]: a
/// layer's q, k and v, or gate and up), otherwise one [`linear`] each.
pub fn linear_many(x: &Tensor, ws: &[(&Tensor, Option<&Tensor>)]) -> Result<Vec<Tensor>> {
    if ws.iter().all(|(w, b)| panel_product_applies(x, w, *b)) {
        return panel_products(x, ws);
    }
    ws.iter().map(|(w, b)| linear(x, w, *b)).collect()
}

/// Whether `x · wᵀ (+ b)` runs on [`super::sgemm`]: `w` is stored as its panels (a 3-D
/// (n/32, 32, k) view, see [`super::weights::decode_panels`]; only models that run forward
/// hold them), nothing needs a gradient, and the input is f32 on a CPU that runs it.
fn panel_product_applies(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> bool {
    w.rank() == 3
        && !x.track_op()
        && !b.is_some_and(|b| b.track_op())
        && x.dtype() == DType::F32
        && x.device().is_cpu()
        && super::sgemm::available()
}

/// [`linear`] for a weight stored as [`super::sgemm`]'s panels.
fn linear_panels(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let frozen = (x.track_op()
        && b.is_none()
        && x.dtype() == DType::F32
        && x.device().is_cpu()
        && super::sgemm::available())
    .then(|| PanelWeight::of(w))
    .flatten();
    if let Some(pw) = frozen {
        // A frozen weight inside the training graph (the tied LM head of a fine-tuned
        // model): forward by the panels, the input's gradient from them too.
        let dims = x.dims().to_vec();
        let k = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let mut out = dims;
        let last = out.len() - 1;
        out[last] = pw.n;
        return x
            .reshape((rows, k))?
            .contiguous()?
            .apply_op1(FrozenPanels(pw))?
            .reshape(out);
    }
    if !panel_product_applies(x, w, b) {
        // Not a forward-only product on this CPU: the weight back in torch's layout (a copy).
        let (p, nr, k) = w.dims3()?;
        return linear(x, &w.reshape((p * nr, k))?, b);
    }
    Ok(panel_products(x, &[(w, b)])?.remove(0))
}

/// The outputs of [`linear_many`] on [`super::sgemm`], every weight in panels (checked by
/// [`panel_product_applies`]).
fn panel_products(x: &Tensor, ws: &[(&Tensor, Option<&Tensor>)]) -> Result<Vec<Tensor>> {
    use super::sgemm::{Weight, PANEL};
    let dims = x.dims().to_vec();
    let k = dims[dims.len() - 1];
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let x = x.reshape((rows, k))?.contiguous()?;
    let (xs, xl) = x.storage_and_layout();
    let candle_core::Storage::Cpu(xs) = &*xs else {
        candle_core::bail!("panel-linear: the input is not on the CPU");
    };
    let xd = cpu_f32(xs, xl)?;
    let mut guards = Vec::with_capacity(ws.len());
    let mut biases = Vec::with_capacity(ws.len());
    for (w, b) in ws {
        let (p, nr, wk) = w.dims3()?;
        if nr != PANEL || wk != k || w.stride() != [PANEL * k, 1, PANEL] {
            candle_core::bail!(
                "panel-linear: ({rows}, {k}) times a weight of shape {:?}, strides {:?}",
                w.dims(),
                w.stride()
            );
        }
        guards.push((w.storage_and_layout(), p * PANEL));
        biases.push(match b {
            Some(b) => Some(b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        });
    }
    let mut weights = Vec::with_capacity(ws.len());
    for (((ws, wl), n), bias) in guards.iter().zip(&biases) {
        let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(wd)) = &**ws else {
            candle_core::bail!("panel-linear: the weight is not f32 on the CPU");
        };
        if bias.as_ref().is_some_and(|b| b.len() != *n) {
            candle_core::bail!("panel-linear: a bias for {n} features of another length");
        }
        weights.push(Weight {
            panels: &wd[wl.start_offset()..wl.start_offset() + n * k],
            n: *n,
            bias: bias.as_deref(),
        });
    }
    let outs = super::sgemm::products((rows, k), xd, k, &weights);
    let mut shape = dims;
    let last = shape.len() - 1;
    outs.into_iter()
        .zip(&weights)
        .map(|((v, offset), w)| {
            shape[last] = w.n;
            let len = v.len();
            // The product starts `offset` floats in (a 64-byte boundary): a view from there.
            Tensor::from_vec(v, len, x.device())?
                .narrow(0, offset, rows * w.n)?
                .reshape(shape.as_slice())
        })
        .collect()
}

/// Rows `ids` (n,) of a weight stored as [`super::sgemm`]'s panels (see [`linear_panels`]),
/// as an (n, k) tensor: the token embeddings when they are also the tied LM head.
pub fn panel_rows(w: &Tensor, ids: &Tensor) -> Result<Tensor> {
    use super::sgemm::PANEL;
    let (p, nr, k) = w.dims3()?;
    if nr != PANEL || w.stride() != [PANEL * k, 1, PANEL] {
        candle_core::bail!(
            "panel-rows: a weight of shape {:?}, strides {:?}",
            w.dims(),
            w.stride()
        );
    }
    let ids = ids.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?;
    let (ws, wl) = w.storage_and_layout();
    let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(wd)) = &*ws else {
        candle_core::bail!("panel-rows: the weight is not f32 on the CPU");
    };
    let panels = &wd[wl.start_offset()..wl.start_offset() + p * PANEL * k];
    let mut out: Vec<f32> = Vec::with_capacity(ids.len() * k);
    for &id in &ids {
        let id = id as usize;
        if id >= p * PANEL {
            candle_core::bail!("panel-rows: row {id} of {}", p * PANEL);
        }
        let panel = &panels[id / PANEL * PANEL * k..][..PANEL * k];
        out.extend(panel.iter().skip(id % PANEL).step_by(PANEL));
    }
    Tensor::from_vec(out, (ids.len(), k), w.device())
}

/// `x @ w.T (+ b)` for a torch-layout Linear weight, with any number of leading dimensions.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    if w.rank() == 3 {
        return linear_panels(x, w, b);
    }
    let dims = x.dims().to_vec();
    let in_dim = dims[dims.len() - 1];
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let x2 = x.reshape((rows, in_dim))?;
    // A weight that tracks no op is frozen (a trained one is a variable, or in bf16 the
    // cast of one, through which its gradient flows).
    let frozen_in_graph = x.track_op()
        && !w.track_op()
        && (x.device().is_cpu() || x.device().is_cuda())
        && x.dtype() == w.dtype();
    let y = if frozen_in_graph {
        x2.contiguous()?.apply_op1(FrozenMatmul { w: w.clone() })?
    } else {
        x2.matmul(&w.t()?)?
    };
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

    /// Attention from its definition in f64: softmax(q·kᵀ/√hd) · v per query head, its
    /// key/value head `h / rep`, over the keys a query may see (causal: key j ≤ i + seq_k −
    /// seq; the first `left_pad[b]` keys of entry b never).
    fn attention_f64(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        causal: bool,
        left_pad: &[usize],
    ) -> Result<Vec<f64>> {
        let (b, seq, heads, hd) = q.dims4()?;
        let (_, seq_k, kv_heads, _) = k.dims4()?;
        let rep = heads / kv_heads;
        let [q, k, v] = [q, k, v].map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let mut out = vec![0f64; b * seq * heads * hd];
        for bi in 0..b {
            for h in 0..heads {
                let g = h / rep;
                for i in 0..seq {
                    let end = if causal { i + seq_k - seq + 1 } else { seq_k };
                    let begin = left_pad.get(bi).copied().unwrap_or(0).min(end);
                    let qi = |d: usize| q[((bi * seq + i) * heads + h) * hd + d] as f64;
                    let kv = |t: &[f32], j: usize, d: usize| {
                        t[((bi * seq_k + j) * kv_heads + g) * hd + d] as f64
                    };
                    let scores: Vec<f64> = (begin..end)
                        .map(|j| {
                            (0..hd).map(|d| qi(d) * kv(&k, j, d)).sum::<f64>() / (hd as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for d in 0..hd {
                        out[((bi * seq + i) * heads + h) * hd + d] = (begin..end)
                            .zip(&e)
                            .map(|(j, e)| e / sum * kv(&v, j, d))
                            .sum();
                    }
                }
            }
        }
        Ok(out)
    }

    /// Forward-only attention in f32 on the CPU (on AVX-512 the panel path, elsewhere
    /// candle's products) against the definition, at the edges of the panel path: head
    /// dimensions of one and two panels, key counts not a multiple of 32, grouped heads, a
    /// cache longer than the queries, left padding, a batch of two, a reduction over more
    /// than 2048 keys (whose probabilities are packed).
    #[test]
    fn forward_attention_matches_its_definition() -> Result<()> {
        let dev = Device::Cpu;
        // (b, seq, seq_k, heads, kv_heads, hd, causal, left_pad)
        type Case = (
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            bool,
            &'static [usize],
        );
        let cases: &[Case] = &[
            // (b, seq, seq_k, heads, kv_heads, hd, causal, left_pad)
            (1, 7, 7, 2, 2, 32, false, &[]),
            (1, 45, 45, 8, 4, 64, true, &[]),
            (1, 3, 40, 4, 1, 64, true, &[]),
            (2, 1, 33, 4, 2, 32, true, &[5, 0]),
            (2, 9, 9, 2, 1, 32, true, &[3, 0]),
            (1, 3, 2100, 2, 2, 32, true, &[]),
            (1, 5, 5, 2, 2, 16, true, &[]),
        ];
        for &(b, seq, seq_k, heads, kv_heads, hd, causal, left_pad) in cases {
            let q = Tensor::randn(0f32, 1.0, (b, seq, heads, hd), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (b, seq_k, kv_heads, hd), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (b, seq_k, kv_heads, hd), &dev)?;
            let got = attention_padded(&q, &k, &v, causal, left_pad, Grad::None)?;
            assert_eq!(got.dims(), [b, seq, heads * hd]);
            let got = got.flatten_all()?.to_vec1::<f32>()?;
            let want = attention_f64(&q, &k, &v, causal, left_pad)?;
            let err = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (*g as f64 - w).abs())
                .fold(0.0, f64::max);
            assert!(
                err < 1e-5,
                "(b {b}, seq {seq}, keys {seq_k}, heads {heads}/{kv_heads}, hd {hd}): off by {err}"
            );
        }
        Ok(())
    }

    #[test]
    fn fused_and_differentiable_paths_agree() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 5, 3, 8), &dev)?;
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

    /// Attention by its definition, in plain differentiable ops: K/V repeated per query
    /// head, softmax(q·kᵀ/√d + mask)·v with −∞ at the masked keys (causal: key j > query i
    /// + seq_k − seq_q; padding: key j < left_pad[b]).
    fn attention_reference(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        causal: bool,
        left_pad: &[usize],
    ) -> Result<Tensor> {
        let (b, seq, heads, hd) = q.dims4()?;
        let (seq_k, kv) = (k.dim(1)?, k.dim(2)?);
        let rep = heads / kv;
        let expand = |t: &Tensor| -> Result<Tensor> {
            let t = t.transpose(1, 2)?; // (b, kv, seq_k, hd)
            t.unsqueeze(2)?
                .repeat((1, 1, rep, 1, 1))?
                .reshape((b, heads, seq_k, hd))
        };
        let q = q.transpose(1, 2)?.contiguous()?;
        let (k, v) = (expand(k)?.contiguous()?, expand(v)?.contiguous()?);
        let scores = (q.matmul(&k.t()?)? * (hd as f64).powf(-0.5))?;
        let mask: Vec<f32> = (0..b)
            .flat_map(|e| {
                let pad = left_pad.get(e).copied().unwrap_or(0);
                (0..seq).flat_map(move |i| {
                    (0..seq_k).map(move |j| {
                        let hidden = (causal && j > i + seq_k - seq) || j < pad;
                        if hidden {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (b, 1, seq, seq_k), q.device())?;
        let att = softmax_last_dim(&scores.broadcast_add(&mask)?, Grad::Track)?;
        att.matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, seq, heads * hd))
    }

    #[test]
    fn fused_attention_and_its_backward_match_the_definition() -> Result<()> {
        let dev = Device::Cpu;
        let var =
            |shape: (usize, usize, usize, usize)| candle_core::Var::randn(0f32, 1.0, shape, &dev);
        let (q, k, v) = (var((2, 7, 6, 8))?, var((2, 7, 2, 8))?, var((2, 7, 2, 8))?);
        let target = Tensor::randn(0f32, 1.0, (2, 7, 48), &dev)?;
        // (Causal attention with left padding leaves the padding rows no key at all, where
        // the definition gives NaN; batched decoding never reads those rows.)
        for (causal, pad) in [(false, vec![]), (true, vec![]), (false, vec![0, 3])] {
            let (qt, kt, vt) = (q.as_tensor(), k.as_tensor(), v.as_tensor());
            let want = attention_reference(qt, kt, vt, causal, &pad)?;
            let fast = attention_padded(qt, kt, vt, causal, &pad, Grad::None)?;
            let tracked = attention_padded(qt, kt, vt, causal, &pad, Grad::Track)?;
            assert_eq!(fast.dims(), &[2, 7, 48]);
            assert!(max_diff(&fast, &want) < 1e-5, "{causal} {pad:?}");
            assert!(max_diff(&tracked, &want) < 1e-5, "{causal} {pad:?}");
            let loss = |t: &Tensor| (t * &target)?.sum_all()?.backward();
            let (gw, gt) = (loss(&want)?, loss(&tracked)?);
            for x in [&q, &k, &v] {
                let (a, b) = (
                    gt.get(x.as_tensor()).unwrap(),
                    gw.get(x.as_tensor()).unwrap(),
                );
                let sum = |t: &Tensor| t.abs()?.sum_all()?.to_scalar::<f32>();
                assert!(sum(a)? > 0.0 && sum(b)?.is_finite());
                assert!(
                    max_diff(a, b) < 1e-4,
                    "{causal} {pad:?}: {}",
                    max_diff(a, b)
                );
            }
        }
        // The first query position may only see the first key: its output is v[0] per head.
        let a = attention(
            q.as_tensor(),
            k.as_tensor(),
            v.as_tensor(),
            true,
            Grad::None,
        )?;
        let first = a.get(0)?.get(0)?.reshape((6, 8))?;
        let v0 = v.get(0)?.get(0)?; // (2, 8)
        let expected = Tensor::cat(
            &[
                &v0.get(0)?.unsqueeze(0)?.repeat((3, 1))?,
                &v0.get(1)?.unsqueeze(0)?.repeat((3, 1))?,
            ],
            0,
        )?;
        assert!(max_diff(&first, &expected) < 1e-6);
        Ok(())
    }

    /// A frozen weight's product passes the input's gradient (as a plain matmul's) and
    /// gives the weight none; a trained weight's is a plain matmul with both.
    #[test]
    fn frozen_linear_passes_only_the_input_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = candle_core::Var::randn(0f32, 1.0, (2, 3, 5), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (4, 5), &dev)?;
        let target = Tensor::randn(0f32, 1.0, (2, 3, 4), &dev)?;
        let y = linear(x.as_tensor(), &w, None)?;
        let plain = x.as_tensor().broadcast_matmul(&w.t()?)?;
        assert!(max_diff(&y, &plain) < 1e-6);
        let g = (y * &target)?.sum_all()?.backward()?;
        let gp = (plain * &target)?.sum_all()?.backward()?;
        let (a, b) = (
            g.get(x.as_tensor()).unwrap(),
            gp.get(x.as_tensor()).unwrap(),
        );
        assert!(max_diff(a, b) < 1e-6);
        assert!(g.get(&w).is_none(), "a frozen weight got a gradient");
        let wv = candle_core::Var::from_tensor(&w)?;
        let g = (linear(x.as_tensor(), wv.as_tensor(), None)? * &target)?
            .sum_all()?
            .backward()?;
        assert!(
            g.get(wv.as_tensor()).is_some(),
            "a trained weight got no gradient"
        );
        Ok(())
    }

    /// `cat(-x2, x1)` over the last dimension (transformers' `rotate_half`).
    fn rotate_half(x: &Tensor) -> Result<Tensor> {
        let half = x.dim(D::Minus1)? / 2;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)
    }

    /// transformers' rotary embedding, `x * cos + rotate_half(x) * sin`, in x's type.
    fn rope_reference(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let (cos, sin) = (cos.unsqueeze(1)?, sin.unsqueeze(1)?);
        x.broadcast_mul(&cos)? + rotate_half(x)?.broadcast_mul(&sin)?
    }

    #[test]
    fn fused_rope_and_its_backward_equal_transformers_ops() -> Result<()> {
        let dev = Device::Cpu;
        let freqs = Tensor::randn(0f32, 2.0, (5, 4), &dev)?;
        let freqs = Tensor::cat(&[&freqs, &freqs], 1)?;
        let (cos, sin) = (freqs.cos()?, freqs.sin()?);
        for dtype in [DType::F32, DType::BF16] {
            let x = candle_core::Var::from_tensor(
                &Tensor::randn(0f32, 1.0, (2, 5, 3, 8), &dev)?.to_dtype(dtype)?,
            )?;
            let (c, s) = (cos.to_dtype(dtype)?, sin.to_dtype(dtype)?);
            let want = rope_reference(x.as_tensor(), &c, &s)?;
            let got = apply_rope(x.as_tensor(), &c, &s, Grad::Track)?;
            // The same roundings in the same order: equal bits.
            assert_eq!(
                got.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
                want.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
                "{dtype:?}"
            );
            let target = Tensor::randn(0f32, 1.0, (2, 5, 3, 8), &dev)?.to_dtype(dtype)?;
            let loss = |t: &Tensor| (t * &target)?.to_dtype(DType::F32)?.sum_all()?.backward();
            let (gw, gg) = (loss(&want)?, loss(&got)?);
            let (a, b) = (
                gg.get(x.as_tensor()).unwrap(),
                gw.get(x.as_tensor()).unwrap(),
            );
            let tol = if dtype == DType::F32 { 1e-6 } else { 2e-2 };
            let (a, b) = (a.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?);
            assert!(max_diff(&a, &b) < tol, "{dtype:?}: {}", max_diff(&a, &b));
        }
        Ok(())
    }

    #[test]
    fn fused_swiglu_and_its_backward_equal_silu_times_up() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::BF16] {
            let var = || -> Result<candle_core::Var> {
                candle_core::Var::from_tensor(
                    &Tensor::randn(0f32, 2.0, (3, 7, 16), &dev)?.to_dtype(dtype)?,
                )
            };
            let (g, u) = (var()?, var()?);
            let (gt, ut) = (g.as_tensor(), u.as_tensor());
            // torch: act_fn(gate) * up, silu rounded to the type before the product.
            let silu =
                (gt.to_dtype(DType::F32)? / (gt.to_dtype(DType::F32)?.neg()?.exp()? + 1.0)?)?;
            let want = (silu.to_dtype(dtype)? * ut)?;
            let got = swiglu(gt, ut)?;
            let as_f32 = |t: &Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
            // Values: that rounding sequence exactly, with e^x from fastmath (checked
            // against f64 in its own tests; libm's differs from it and from torch's Sleef
            // by an ulp or two).
            let round = |v: f32| -> Result<f32> {
                Tensor::new(&[v], &dev)?
                    .to_dtype(dtype)?
                    .to_dtype(DType::F32)?
                    .to_vec1::<f32>()
                    .map(|r| r[0])
            };
            let exact = as_f32(gt)?
                .into_iter()
                .zip(as_f32(ut)?)
                .map(|(g, u)| round(round(g / (1.0 + super::fastmath::exp(-g)))? * u))
                .collect::<Result<Vec<f32>>>()?;
            assert_eq!(as_f32(&got)?, exact, "{dtype:?}");
            // And within a few f32 ulps (one of bf16) of the same sequence with libm's exp.
            let ulp = if dtype == DType::F32 { 4.8e-7 } else { 7.9e-3 };
            for (a, b) in as_f32(&got)?.into_iter().zip(as_f32(&want)?) {
                assert!(
                    (a - b).abs() <= ulp * b.abs().max(1e-30),
                    "{dtype:?}: {a} vs {b}"
                );
            }
            let target = Tensor::randn(0f32, 1.0, (3, 7, 16), &dev)?.to_dtype(dtype)?;
            let loss = |t: &Tensor| (t * &target)?.to_dtype(DType::F32)?.sum_all()?.backward();
            let (gw, gg) = (loss(&want)?, loss(&got)?);
            for v in [&g, &u] {
                let (a, b) = (
                    gg.get(v.as_tensor()).unwrap(),
                    gw.get(v.as_tensor()).unwrap(),
                );
                let (a, b) = (a.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?);
                let scale = b
                    .abs()?
                    .max_keepdim(0)?
                    .max(0)?
                    .max(0)?
                    .max(0)?
                    .to_scalar::<f32>()?;
                let tol = if dtype == DType::F32 { 1e-5 } else { 2e-2 };
                assert!(
                    max_diff(&a, &b) / scale < tol,
                    "{dtype:?}: {}",
                    max_diff(&a, &b)
                );
            }
        }
        Ok(())
    }

    #[test]
    fn fused_gelu_tanh_and_its_backward_match_torchs_formula() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::BF16] {
            let x = candle_core::Var::from_tensor(
                &Tensor::randn(0f32, 2.0, (4, 33), &dev)?.to_dtype(dtype)?,
            )?;
            // torch: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))) in f32.
            let v = x.as_tensor().to_dtype(DType::F32)?;
            let cube = (v.sqr()? * &v)?;
            let inner = ((cube * 0.044715)? + &v)? * (2.0 / std::f64::consts::PI).sqrt();
            let want = ((inner?.tanh()? + 1.0)? * (&v * 0.5)?)?.to_dtype(dtype)?;
            let got = gelu_tanh(x.as_tensor())?;
            let tol = if dtype == DType::F32 { 1e-6 } else { 1e-2 };
            let f = |t: &Tensor| t.to_dtype(DType::F32);
            assert!(max_diff(&f(&got)?, &f(&want)?) < tol, "{dtype:?}");
            let target = Tensor::randn(0f32, 1.0, (4, 33), &dev)?;
            let loss = |t: &Tensor| (t.to_dtype(DType::F32)? * &target)?.sum_all()?.backward();
            let (gw, gg) = (loss(&want)?, loss(&got)?);
            let (a, b) = (
                gg.get(x.as_tensor()).unwrap(),
                gw.get(x.as_tensor()).unwrap(),
            );
            let tol = if dtype == DType::F32 { 1e-5 } else { 3e-2 };
            assert!(
                max_diff(&f(a)?, &f(b)?) < tol,
                "{dtype:?}: {}",
                max_diff(&f(a)?, &f(b)?)
            );
        }
        Ok(())
    }

    #[test]
    fn fused_rms_norm_backward_equals_the_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        let x = candle_core::Var::randn(0f32, 1.0, (3, 5, 16), &dev)?;
        let w = candle_core::Var::randn(1f32, 0.3, 16, &dev)?;
        let target = Tensor::randn(0f32, 1.0, (3, 5, 16), &dev)?;
        let fused = rms_norm(x.as_tensor(), w.as_tensor(), 1e-6, Grad::Track)?;
        let composed = rms_norm_composed(x.as_tensor(), w.as_tensor(), 1e-6)?;
        assert!(max_diff(&fused, &composed) < 1e-5);
        let gf = (fused * &target)?.sum_all()?.backward()?;
        let gc = (composed * &target)?.sum_all()?.backward()?;
        for v in [&x, &w] {
            let (a, b) = (
                gf.get(v.as_tensor()).unwrap(),
                gc.get(v.as_tensor()).unwrap(),
            );
            assert!(max_diff(a, b) < 1e-4, "{}", max_diff(a, b));
        }
        Ok(())
    }

    #[test]
    fn rounded_rms_norm_is_transformers_sequence_of_roundings() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (4, 7, 96), &dev)?;
        let w = Tensor::randn(1f32, 0.3, 96, &dev)?;
        for dtype in [DType::BF16, DType::F16] {
            let (xd, wd) = (x.to_dtype(dtype)?, w.to_dtype(dtype)?);
            let fused = rms_norm(&xd, &wd, 1e-6, Grad::None)?;
            assert_eq!(fused.dtype(), dtype);
            // transformers: normalise in f32, round, multiply by the 16-bit weight.
            let x32 = xd.to_dtype(DType::F32)?;
            let ones = Tensor::ones(96, DType::F32, &dev)?;
            let want = rms_norm_composed(&x32, &ones, 1e-6)?
                .to_dtype(dtype)?
                .broadcast_mul(&wd)?;
            // Within two units in the last place: x·r against x/sqrt in f32 can round the
            // normalised value one unit apart, which the weight's product (rounded again)
            // can turn into two units of the result (seen once in f16 at 0.987); f16's
            // subnormals below 2^-14 step by 2^-24.
            let ulp = if dtype == DType::BF16 {
                2f32.powi(-7)
            } else {
                2f32.powi(-10)
            };
            let (got, want) = (
                fused
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
                want.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
            );
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 2.0 * w.abs() * ulp + 2f32.powi(-24),
                    "{dtype:?}: {g} vs {w}"
                );
            }
        }
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
