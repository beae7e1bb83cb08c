//! The training losses as tensor ops: next-token cross-entropy (one fused op with its
//! backward, CPU and CUDA) over the rows of logits the caller formed (only the positions
//! that predict supervised tokens), and the distillation KL divergence.

use anyhow::Result;
use candle_core::{DType, Tensor};

/// Sum over rows of `-log softmax(logits)[label]`, computed in f32 whatever the logits'
/// type (as transformers upcasts them), in one fused op with its backward pass (CPU and
/// CUDA): no vocabulary-sized intermediate beyond the gradient itself.
pub fn cross_entropy_sum(logits: &Tensor, labels: &[u32]) -> Result<Tensor> {
    let (rows, vocab) = logits.dims2()?;
    if labels.len() != rows {
        anyhow::bail!("{} labels for {rows} rows of logits", labels.len());
    }
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= vocab) {
        anyhow::bail!("label {bad} is beyond the vocabulary of {vocab}");
    }
    let op = CrossEntropy {
        labels: labels.to_vec(),
    };
    Ok(logits.contiguous()?.apply_op1(op)?.sum_all()?)
}

/// [`cross_entropy_sum`] of `rows · wᵀ` for a frozen LM head `w` stored as
/// [`super::sgemm`]'s panels, rows f32 on the CPU, as one node of the graph: the
/// vocabulary-sized logits and their gradient stay inside it (through candle's backward
/// they cost a zeroed buffer of their size and an add: 17 MB per micro-batch on the
/// mid-size benchmark of BENCHMARKS.md), and the node hands back the rows' gradient only.
/// `Ok(None)` (nothing done) where `w` is not such panels or `rows` not f32 on the CPU.
pub fn head_cross_entropy_sum(rows: &Tensor, w: &Tensor, labels: &[u32]) -> Result<Option<Tensor>> {
    let Some(panels) = super::ops::PanelWeight::of(w) else {
        return Ok(None);
    };
    let (n, k) = (panels.n, panels.k);
    let (m, rk) = rows.dims2()?;
    if !rows.device().is_cpu() || rows.dtype() != DType::F32 || rk != k {
        return Ok(None);
    }
    if labels.len() != m {
        anyhow::bail!("{} labels for {m} rows", labels.len());
    }
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= n) {
        anyhow::bail!("label {bad} is beyond the vocabulary of {n}");
    }
    let op = HeadCrossEntropy {
        w: panels,
        labels: labels.to_vec(),
        logits: std::sync::Mutex::new(None),
    };
    Ok(Some(rows.contiguous()?.apply_op1(op)?.sum_all()?))
}

/// The op of [`head_cross_entropy_sum`]: forward the per-row losses, keeping the logits;
/// backward `g·(softmax − onehot) · w` per row.
struct HeadCrossEntropy {
    w: super::ops::PanelWeight,
    labels: Vec<u32>,
    /// The forward pass's logits, (rows, vocab), with each row's max and ln Σ exp(x − max).
    #[allow(clippy::type_complexity)]
    logits: std::sync::Mutex<Option<(Vec<f32>, Vec<(f32, f32)>)>>,
}

impl candle_core::CustomOp1 for HeadCrossEntropy {
    fn name(&self) -> &'static str {
        "head-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let (m, k) = layout.shape().dims2()?;
        let x = super::ops::cpu_f32(storage, layout)?;
        let n = self.w.n;
        let logits = self
            .w
            .with_panels(|p| super::sgemm::matmul_new((m, n, k), x, k, p, None))?;
        let stats: Vec<(f32, f32)> = logits
            .par_chunks(n)
            .with_min_len(crate::workers::min_split())
            .map(CrossEntropy::max_lse)
            .collect();
        let loss = logits
            .chunks(n)
            .zip(&stats)
            .zip(&self.labels)
            .map(|((row, &(mx, lse)), &label)| lse - (row[label as usize] - mx))
            .collect();
        *self.logits.lock().expect("head-cross-entropy: logits") = Some((logits, stats));
        Ok((
            candle_core::CpuStorage::F32(loss),
            candle_core::Shape::from(m),
        ))
    }

    fn bwd(
        &self,
        rows: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        use rayon::prelude::*;
        let Some((mut dl, stats)) = self
            .logits
            .lock()
            .expect("head-cross-entropy: logits")
            .take()
        else {
            candle_core::bail!("head-cross-entropy: a second backward pass through one forward");
        };
        let (m, k) = rows.dims2()?;
        let n = self.w.n;
        let g = grad.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        dl.par_chunks_mut(n)
            .zip(stats.par_iter())
            .zip(self.labels.par_iter().zip(g.par_iter()))
            .with_min_len(crate::workers::min_split())
            .for_each(|((row, &(mx, lse)), (&label, &gr))| {
                for v in row.iter_mut() {
                    *v = gr * (*v - mx - lse).exp();
                }
                row[label as usize] -= gr;
            });
        let dx = self.w.with_panels(|p| {
            super::sgemm::gemm_by_panels_new((m, k, n), super::sgemm::View::rows(&dl, n), p, true)
        })?;
        Ok(Some(Tensor::from_vec(dx, (m, k), rows.device())?))
    }
}

/// Row-wise log-softmax in f32 from differentiable ops (the row maximum is a constant
/// shift and carries no gradient).
fn log_softmax_rows(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Knowledge distillation loss, summed over rows: T² · Σ_rows KL(p ‖ q) with
/// p = softmax(teacher / T) and q = softmax(student / T), computed in f32 (as Hinton et
/// al.; the T² keeps the gradient's size independent of T). Its gradient with respect to
/// the student's logits is T · (q − p); the teacher gets none. Built from differentiable
/// ops, so it runs wherever the logits are; it holds a few (rows, vocab) f32 tensors.
pub fn kl_div_sum(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    if student.dims() != teacher.dims() {
        anyhow::bail!(
            "student logits {:?} and teacher logits {:?} differ in shape",
            student.dims(),
            teacher.dims()
        );
    }
    if !(temperature > 0.0 && temperature.is_finite()) {
        anyhow::bail!("the distillation temperature must be positive, got {temperature}");
    }
    let inv_t = 1.0 / temperature;
    let log_q = log_softmax_rows(&student.to_dtype(DType::F32)?.affine(inv_t, 0.0)?)?;
    // p log p is computed from log p (finite), never log of an underflowed p.
    let log_p = log_softmax_rows(&teacher.detach().to_dtype(DType::F32)?.affine(inv_t, 0.0)?)?;
    let p = log_p.exp()?;
    let kl = (p * (log_p - log_q)?)?.sum_all()?;
    Ok(kl.affine(temperature * temperature, 0.0)?)
}

/// Per-row cross-entropy, f32 (rows), of contiguous (rows, vocab) logits of any float type:
/// loss = ln Σ exp(x − m) − (x[label] − m), m the row maximum; backward
/// dx = g·(softmax(x) − onehot(label)), in the logits' type. CUDA in
/// src/kernels/training.cu.
struct CrossEntropy {
    labels: Vec<u32>,
}

impl CrossEntropy {
    /// The row maximum and ln Σ exp(x − max) of one row.
    fn max_lse(row: &[f32]) -> (f32, f32) {
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let sum: f32 = row.iter().map(|&x| (x - m).exp()).sum();
        (m, sum.ln())
    }

    /// The logits of a CPU storage as f32 rows (converted from 16-bit types).
    fn cpu_rows<'a>(
        storage: &'a candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<std::borrow::Cow<'a, [f32]>> {
        use candle_core::CpuStorage as S;
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("cross-entropy: logits must be contiguous");
        };
        Ok(match storage {
            S::F32(v) => std::borrow::Cow::Borrowed(&v[a..b]),
            S::BF16(v) => v[a..b].iter().map(|x| x.to_f32()).collect(),
            S::F16(v) => v[a..b].iter().map(|x| x.to_f32()).collect(),
            _ => candle_core::bail!("cross-entropy: f32, bf16 or f16 logits"),
        })
    }
}

impl candle_core::CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let (rows, vocab) = layout.shape().dims2()?;
        let x = Self::cpu_rows(storage, layout)?;
        let loss: Vec<f32> = x
            .par_chunks(vocab)
            .zip(&self.labels)
            .with_min_len(crate::workers::min_split())
            .map(|(row, &label)| {
                let (m, lse) = Self::max_lse(row);
                lse - (row[label as usize] - m)
            })
            .collect();
        Ok((
            candle_core::CpuStorage::F32(loss),
            candle_core::Shape::from(rows),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
        let (rows, _) = layout.shape().dims2()?;
        let loss = cuda::launch(self, "cross_entropy", storage, layout, None)?;
        Ok((loss, candle_core::Shape::from(rows)))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.to_dtype(DType::F32)?.contiguous()?;
        let op = CrossEntropyBackward {
            labels: self.labels.clone(),
        };
        Ok(Some(logits.apply_op2_no_bwd(&grad, &op)?))
    }
}

/// [`CrossEntropy`]'s backward: from the logits and the f32 gradient of each row's loss,
/// the logits' gradient in their type.
struct CrossEntropyBackward {
    labels: Vec<u32>,
}

impl candle_core::CustomOp2 for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "cross-entropy-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage as S;
        use rayon::prelude::*;
        let (_, vocab) = l1.shape().dims2()?;
        let x = CrossEntropy::cpu_rows(s1, l1)?;
        let g = CrossEntropy::cpu_rows(s2, l2)?;
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(vocab)
            .zip(x.par_chunks(vocab))
            .zip(self.labels.par_iter().zip(g.par_iter()))
            .with_min_len(crate::workers::min_split())
            .for_each(|((out, row), (&label, &gr))| {
                let (m, lse) = CrossEntropy::max_lse(row);
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = gr * (v - m - lse).exp();
                }
                out[label as usize] -= gr;
            });
        let out = match s1 {
            S::BF16(_) => S::BF16(dx.iter().map(|&v| half::bf16::from_f32(v)).collect()),
            S::F16(_) => S::F16(dx.iter().map(|&v| half::f16::from_f32(v)).collect()),
            _ => S::F32(dx),
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
    ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
        let ce = CrossEntropy {
            labels: self.labels.clone(),
        };
        let dx = cuda::launch(&ce, "cross_entropy_backward", s1, l1, Some((s2, l2)))?;
        Ok((dx, l1.shape().clone()))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::CrossEntropy;
    use crate::model::cuda_kernels::{self as kernels, Module};
    use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
    use candle_core::cuda_backend::{CudaStorageSlice as S, WrapErr};
    use candle_core::{CudaStorage, Layout, Result};

    /// `{kernel}_{type}`, one block per row of the logits: the forward when `grad` is None
    /// (x, labels, loss (f32, one per row), vocab) or the backward (x, labels, g (f32, one
    /// per row), dx (the logits' type), vocab).
    pub fn launch(
        op: &CrossEntropy,
        kernel: &str,
        x: &CudaStorage,
        layout: &Layout,
        grad: Option<(&CudaStorage, &Layout)>,
    ) -> Result<CudaStorage> {
        let (rows, vocab) = layout.shape().dims2()?;
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("cross-entropy: logits must be contiguous");
        };
        let dev = x.device.clone();
        let labels = dev.cuda_stream().clone_htod(&op.labels).w()?;
        let g = match grad {
            None => None,
            Some((s, l)) => {
                let (S::F32(g), Some((ga, gb))) = (&s.slice, l.contiguous_offsets()) else {
                    candle_core::bail!("cross-entropy: the gradient must be contiguous f32");
                };
                Some(g.slice(ga..gb))
            }
        };
        let v32 = vocab as u32;
        let cfg = kernels::rows_config(rows, vocab);
        let slice = kernels::per_float_slice!(kernel, &x.slice, |xs, T, suffix, wrap| {
            let xs = xs.slice(a..b);
            let k = kernels::func(&dev, Module::Training, &format!("{kernel}_{suffix}"))?;
            match &g {
                None => {
                    // SAFETY: the kernel writes every row's loss.
                    let loss = unsafe { dev.alloc::<f32>(rows)? };
                    let mut args = k.builder();
                    args.arg(&xs).arg(&labels).arg(&loss).arg(&v32);
                    // SAFETY: cross_entropy_*(x, labels, loss, vocab).
                    unsafe { kernels::launch(args, cfg) }?;
                    S::F32(loss)
                }
                Some(g) => {
                    // SAFETY: the kernel writes every element.
                    let dx = unsafe { dev.alloc::<T>(rows * vocab)? };
                    let mut args = k.builder();
                    args.arg(&xs).arg(&labels).arg(g).arg(&dx).arg(&v32);
                    // SAFETY: cross_entropy_backward_*(x, labels, g, dx, vocab).
                    unsafe { kernels::launch(args, cfg) }?;
                    wrap(dx)
                }
            }
        });
        Ok(CudaStorage { slice, device: dev })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    /// The definition in plain differentiable ops: Σ_rows logsumexp(x) − x[label], in f32.
    fn reference(logits: &Tensor, labels: &[u32]) -> candle_core::Result<Tensor> {
        let x = logits.to_dtype(DType::F32)?;
        let max = x.max_keepdim(D::Minus1)?.detach();
        let shifted = x.broadcast_sub(&max)?;
        let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
        let idx = Tensor::new(labels, x.device())?.unsqueeze(1)?;
        (lse - shifted.gather(&idx, 1)?)?.sum_all()
    }

    #[test]
    fn fused_cross_entropy_and_its_gradient_match_the_definition() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let labels = [3u32, 0, 99, 42, 7];
        for dtype in [DType::F32, DType::BF16] {
            let x =
                Var::from_tensor(&(Tensor::randn(0f32, 3.0, (5, 100), &dev)?.to_dtype(dtype)?))?;
            let ours = cross_entropy_sum(x.as_tensor(), &labels)?;
            let want = reference(x.as_tensor(), &labels)?;
            let (a, b) = (ours.to_scalar::<f32>()?, want.to_scalar::<f32>()?);
            assert!((a - b).abs() <= 1e-5 * b.abs(), "{dtype:?}: {a} vs {b}");
            let (ga, gb) = (ours.backward()?, want.backward()?);
            let f32s = |t: &Tensor| -> anyhow::Result<Vec<f32>> {
                Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
            };
            let (ga, gb) = (
                f32s(ga.get(x.as_tensor()).unwrap())?,
                f32s(gb.get(x.as_tensor()).unwrap())?,
            );
            // A row's gradient is softmax − onehot: entries in [−1, 1]; bf16 rounds it.
            let tol = if dtype == DType::F32 { 1e-6 } else { 4e-3 };
            let worst = ga
                .iter()
                .zip(&gb)
                .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            assert!(worst < tol, "{dtype:?}: gradients differ by {worst}");
        }
        Ok(())
    }

    /// KL loss and gradient against the definition computed directly in f64:
    /// T² Σ p (ln p − ln q) and T (q − p), p and q softmaxes of the logits over T.
    #[test]
    fn distillation_loss_and_its_gradient_match_a_direct_computation() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let (rows, vocab) = (4, 50);
        let s = Tensor::randn(0f32, 3.0, (rows, vocab), &dev)?;
        // One teacher row with a huge gap: p underflows to 0 for most entries.
        let mut t = Tensor::randn(0f32, 3.0, (rows, vocab), &dev)?.to_vec2::<f32>()?;
        t[2][7] = 400.0;
        let t = Tensor::new(t, &dev)?;
        for temperature in [1.0, 2.0, 0.5] {
            let x = Var::from_tensor(&s)?;
            let loss = kl_div_sum(x.as_tensor(), &t, temperature)?;
            let grad = loss.backward()?;
            let grad = grad.get(x.as_tensor()).unwrap().to_vec2::<f32>()?;
            let (sv, tv) = (s.to_vec2::<f32>()?, t.to_vec2::<f32>()?);
            let softmax = |row: &[f32]| -> Vec<f64> {
                let z: Vec<f64> = row.iter().map(|&v| v as f64 / temperature).collect();
                let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = z.iter().map(|v| (v - m).exp()).sum();
                z.iter().map(|v| (v - m).exp() / sum).collect()
            };
            let mut want = 0.0;
            for r in 0..rows {
                let (p, q) = (softmax(&tv[r]), softmax(&sv[r]));
                for j in 0..vocab {
                    if p[j] > 0.0 {
                        want += p[j] * (p[j].ln() - q[j].ln());
                    }
                    let g = temperature * (q[j] - p[j]);
                    assert!(
                        (grad[r][j] as f64 - g).abs() < 1e-6 + 1e-5 * g.abs(),
                        "T {temperature} [{r}][{j}]: {} vs {g}",
                        grad[r][j]
                    );
                }
            }
            want *= temperature * temperature;
            let got = loss.to_scalar::<f32>()? as f64;
            assert!(
                (got - want).abs() < 1e-5 * want.abs().max(1.0),
                "T {temperature}: {got} vs {want}"
            );
        }
        // Equal logits: no divergence, no gradient.
        let x = Var::from_tensor(&s)?;
        let loss = kl_div_sum(x.as_tensor(), &s, 1.5)?;
        assert!(loss.to_scalar::<f32>()?.abs() < 1e-5);
        Ok(())
    }

    #[test]
    fn a_label_beyond_the_vocabulary_is_an_error() {
        let x = Tensor::zeros((2, 10), DType::F32, &Device::Cpu).unwrap();
        let err = cross_entropy_sum(&x, &[1, 10]).unwrap_err().to_string();
        assert!(err.contains("beyond the vocabulary of 10"), "{err}");
    }
}
