//! AdamW with visible, saveable state, computing exactly what `torch.optim.AdamW` computes
//! (its single-tensor CPU path, in f32 with the bias corrections in double precision), so
//! that runs can resume from a checkpoint and match PyTorch step for step.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// docs/SPEC.md step 4: β 0.9/0.999, ε 1e-8, no weight decay.
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// First and second moments of one parameter: in host memory for the CPU's update, as
/// tensors on the model's device for the update there (a GPU's moments never leave it).
#[derive(Debug, Clone)]
pub enum Moments {
    /// Not updated yet: all zeros, nothing allocated.
    Zeros(usize),
    Host {
        exp_avg: Vec<f32>,
        exp_avg_sq: Vec<f32>,
    },
    /// Flat f32 tensors.
    Tensors { exp_avg: Tensor, exp_avg_sq: Tensor },
}

impl Moments {
    pub fn len(&self) -> usize {
        match self {
            Moments::Zeros(n) => *n,
            Moments::Host { exp_avg, .. } => exp_avg.len(),
            Moments::Tensors { exp_avg, .. } => exp_avg.elem_count(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Both moments as host vectors (copied from a device), e.g. to save them.
    pub fn to_host(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok(match self {
            Moments::Zeros(n) => (vec![0.0; *n], vec![0.0; *n]),
            Moments::Host {
                exp_avg,
                exp_avg_sq,
            } => (exp_avg.clone(), exp_avg_sq.clone()),
            Moments::Tensors {
                exp_avg,
                exp_avg_sq,
            } => (exp_avg.to_vec1()?, exp_avg_sq.to_vec1()?),
        })
    }

    /// The moments in host vectors, moved there if they are not.
    fn host_mut(&mut self) -> Result<(&mut Vec<f32>, &mut Vec<f32>)> {
        if !matches!(self, Moments::Host { .. }) {
            let (exp_avg, exp_avg_sq) = self.to_host()?;
            *self = Moments::Host {
                exp_avg,
                exp_avg_sq,
            };
        }
        match self {
            Moments::Host {
                exp_avg,
                exp_avg_sq,
            } => Ok((exp_avg, exp_avg_sq)),
            _ => unreachable!("just made host moments"),
        }
    }

    /// The moments as flat f32 tensors on `device`, moved there if they are not.
    fn tensors_on(&mut self, device: &Device) -> Result<(Tensor, Tensor)> {
        let on_device = match &*self {
            Moments::Tensors { exp_avg, .. } => exp_avg.device().same_device(device),
            _ => false,
        };
        if !on_device {
            let (exp_avg, exp_avg_sq) = match &*self {
                Moments::Zeros(n) => (
                    Tensor::zeros(*n, DType::F32, device)?,
                    Tensor::zeros(*n, DType::F32, device)?,
                ),
                Moments::Host {
                    exp_avg,
                    exp_avg_sq,
                } => (
                    Tensor::from_slice(exp_avg, exp_avg.len(), device)?,
                    Tensor::from_slice(exp_avg_sq, exp_avg_sq.len(), device)?,
                ),
                Moments::Tensors {
                    exp_avg,
                    exp_avg_sq,
                } => (exp_avg.to_device(device)?, exp_avg_sq.to_device(device)?),
            };
            *self = Moments::Tensors {
                exp_avg,
                exp_avg_sq,
            };
        }
        match self {
            Moments::Tensors {
                exp_avg,
                exp_avg_sq,
            } => Ok((exp_avg.clone(), exp_avg_sq.clone())),
            _ => unreachable!("just made tensor moments"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdamW {
    pub config: AdamWConfig,
    /// Optimizer steps taken (torch's `state["step"]`, shared by all parameters here).
    pub step: u64,
    pub moments: Vec<Moments>,
}

impl AdamW {
    /// State for parameters of the given element counts.
    pub fn new(config: AdamWConfig, sizes: &[usize]) -> Self {
        Self {
            config,
            step: 0,
            moments: sizes.iter().map(|&n| Moments::Zeros(n)).collect(),
        }
    }

    /// One update of every parameter with its gradient at learning rate `lr`.
    pub fn step(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>], lr: f64) -> Result<()> {
        if params.len() != self.moments.len() || grads.len() != self.moments.len() {
            bail!(
                "optimizer holds {} parameters, got {} values and {} gradients",
                self.moments.len(),
                params.len(),
                grads.len()
            );
        }
        self.begin_step();
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            self.update(i, p, g, lr)?;
        }
        Ok(())
    }

    /// Starts an optimizer step (advances the step count used by the bias corrections);
    /// then [`AdamW::update`] each parameter once.
    pub fn begin_step(&mut self) {
        self.step += 1;
    }

    /// Updates parameter `index` in place with its gradient, at the current step.
    pub fn update(&mut self, index: usize, p: &mut [f32], g: &[f32], lr: f64) -> Result<()> {
        let (config, step) = (self.config, self.step);
        let Some(m) = self.moments.get_mut(index) else {
            bail!("optimizer has no parameter {index}");
        };
        update_moments(config, step, m, p, g, lr)
    }
}

/// The scalars of one update at optimizer step `step` (from 1) and learning rate `lr`,
/// rounded to f32 as torch's single-tensor AdamW rounds them.
struct StepScalars {
    step_size: f32,
    bc2_sqrt: f32,
    decay: f32,
    w1: f32,
    b2: f32,
    w2: f32,
    eps: f32,
}

impl StepScalars {
    fn new(c: AdamWConfig, step: u64, lr: f64) -> Self {
        let t = step.max(1) as i32;
        let bias_correction1 = 1.0 - c.beta1.powi(t);
        let bias_correction2 = 1.0 - c.beta2.powi(t);
        Self {
            step_size: (lr / bias_correction1) as f32,
            bc2_sqrt: bias_correction2.sqrt() as f32,
            decay: (1.0 - lr * c.weight_decay) as f32,
            w1: (1.0 - c.beta1) as f32,
            b2: c.beta2 as f32,
            w2: (1.0 - c.beta2) as f32,
            eps: c.eps as f32,
        }
    }
}

/// [`AdamW::update`] of one parameter with its moments `m`, at optimizer step `step`: for
/// updating several parameters at once from different threads.
pub fn update_moments(
    c: AdamWConfig,
    step: u64,
    m: &mut Moments,
    p: &mut [f32],
    g: &[f32],
    lr: f64,
) -> Result<()> {
    update_scaled(c, step, m, p, g, None, lr)
}

/// [`update_moments`] with the gradient multiplied by `coef` first (gradient clipping; each
/// product rounded to f32, as torch's `clip_grad_norm_` scales the gradients in place).
/// Long tensors are updated in chunks on rayon's threads: every element's update depends
/// only on its own values, so the result is the same on any number of threads.
pub fn update_scaled(
    c: AdamWConfig,
    step: u64,
    m: &mut Moments,
    p: &mut [f32],
    g: &[f32],
    coef: Option<f32>,
    lr: f64,
) -> Result<()> {
    use rayon::prelude::*;
    if p.len() != g.len() || p.len() != m.len() {
        bail!("parameter and gradient sizes differ");
    }
    let s = StepScalars::new(c, step, lr);
    let decay = c.weight_decay != 0.0;
    let (exp_avg, exp_avg_sq) = m.host_mut()?;
    let update = |p: &mut [f32], g: &[f32], exp_avg: &mut [f32], exp_avg_sq: &mut [f32]| {
        for i in 0..p.len() {
            if decay {
                p[i] *= s.decay;
            }
            let gi = match coef {
                Some(c) => g[i] * c,
                None => g[i],
            };
            // exp_avg.lerp_(grad, 1 - beta1)
            exp_avg[i] += s.w1 * (gi - exp_avg[i]);
            // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            exp_avg_sq[i] = exp_avg_sq[i] * s.b2 + s.w2 * gi * gi;
            let denom = exp_avg_sq[i].sqrt() / s.bc2_sqrt + s.eps;
            // param.addcdiv_(exp_avg, denom, value=-step_size)
            p[i] += -s.step_size * (exp_avg[i] / denom);
        }
    };
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(exp_avg.par_chunks_mut(CHUNK))
        .zip(exp_avg_sq.par_chunks_mut(CHUNK))
        .with_min_len(crate::workers::min_split())
        .for_each(|(((p, g), m), v)| update(p, g, m, v));
    Ok(())
}

/// Elements per task of the parallel update and of [`sum_of_squares`].
const CHUNK: usize = 1 << 16;

/// `Σ x²` in f64: chunks of [`CHUNK`] summed in order, on rayon's threads, and their sums
/// added in order (the same on any number of threads).
pub fn sum_of_squares(x: &[f32]) -> f64 {
    use rayon::prelude::*;
    let parts: Vec<f64> = x
        .par_chunks(CHUNK)
        .with_min_len(crate::workers::min_split())
        .map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>())
        .collect();
    parts.iter().sum()
}

/// [`update_moments`] with tensors, on whatever device they are (a GPU's parameters,
/// gradients and moments stay there): the same operations in the same order, each
/// rounded to f32, so on the CPU it gives the same bits as the host loop. `p` is the
/// f32 master weight (any shape), `g` its gradient. Returns the new weight, flat.
pub fn update_tensors(
    c: AdamWConfig,
    step: u64,
    m: &mut Moments,
    p: &Tensor,
    g: &Tensor,
    lr: f64,
) -> Result<Tensor> {
    if p.elem_count() != g.elem_count() || p.elem_count() != m.len() {
        bail!("parameter and gradient sizes differ");
    }
    let s = StepScalars::new(c, step, lr);
    let (exp_avg, exp_avg_sq) = m.tensors_on(p.device())?;
    let (p, g) = (p.flatten_all()?, g.flatten_all()?);
    let p = if c.weight_decay != 0.0 {
        p.affine(s.decay as f64, 0.0)?
    } else {
        p
    };
    // Each scalar passes through f64 and back to the same f32 (affine's arguments).
    let exp_avg = ((&g - &exp_avg)?.affine(s.w1 as f64, 0.0)? + &exp_avg)?;
    let exp_avg_sq = (exp_avg_sq.affine(s.b2 as f64, 0.0)? + (g.affine(s.w2 as f64, 0.0)? * &g)?)?;
    // A true division by the bias correction (candle's `tensor / scalar` multiplies by
    // the reciprocal, which rounds differently).
    let bc2 = Tensor::new(s.bc2_sqrt, p.device())?;
    let denom = exp_avg_sq
        .sqrt()?
        .broadcast_div(&bc2)?
        .affine(1.0, s.eps as f64)?;
    let p = ((&exp_avg / &denom)?.affine(-(s.step_size as f64), 0.0)? + p)?;
    *m = Moments::Tensors {
        exp_avg,
        exp_avg_sq,
    };
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first AdamW step moves each weight by lr·g/(|g|+ε) (m̂ = g, v̂ = g²), by the
    /// definition of the algorithm.
    #[test]
    fn first_step_is_sign_like() {
        let mut opt = AdamW::new(AdamWConfig::default(), &[3]);
        let mut p = vec![vec![1.0f32, -2.0, 0.5]];
        let g = vec![vec![0.3f32, -4.0, 0.0]];
        opt.step(&mut p, &g, 0.1).unwrap();
        let want = [1.0 - 0.1 * 0.3 / (0.3 + 1e-8), -2.0 + 0.1, 0.5];
        for (a, b) in p[0].iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
        assert_eq!(opt.step, 1);
    }

    #[test]
    fn decoupled_weight_decay_scales_first() {
        let cfg = AdamWConfig {
            weight_decay: 0.5,
            ..Default::default()
        };
        let mut opt = AdamW::new(cfg, &[1]);
        let mut p = vec![vec![2.0f32]];
        opt.step(&mut p, &[vec![0.0]], 0.1).unwrap();
        // p·(1 - lr·wd) with a zero gradient.
        assert!((p[0][0] - 1.9).abs() < 1e-6);
    }
}
