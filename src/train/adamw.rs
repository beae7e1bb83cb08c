//! AdamW with visible, saveable state, computing exactly what `torch.optim.AdamW` computes
//! (its single-tensor CPU path, in f32 with the bias corrections in double precision), so
//! that runs can resume from a checkpoint and match PyTorch step for step.

use anyhow::{bail, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// SPEC.md step 4: β 0.9/0.999, ε 1e-8, no weight decay.
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// First and second moments of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    pub exp_avg: Vec<f32>,
    pub exp_avg_sq: Vec<f32>,
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
            moments: sizes
                .iter()
                .map(|&n| Moments {
                    exp_avg: vec![0.0; n],
                    exp_avg_sq: vec![0.0; n],
                })
                .collect(),
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
    if p.len() != g.len() || p.len() != m.exp_avg.len() {
        bail!("parameter and gradient sizes differ");
    }
    let t = step.max(1) as i32;
    let bias_correction1 = 1.0 - c.beta1.powi(t);
    let bias_correction2 = 1.0 - c.beta2.powi(t);
    let step_size = (lr / bias_correction1) as f32;
    let bc2_sqrt = bias_correction2.sqrt() as f32;
    let decay = (1.0 - lr * c.weight_decay) as f32;
    let (w1, b2, w2, eps) = (
        (1.0 - c.beta1) as f32,
        c.beta2 as f32,
        (1.0 - c.beta2) as f32,
        c.eps as f32,
    );
    for i in 0..p.len() {
        if c.weight_decay != 0.0 {
            p[i] *= decay;
        }
        let gi = g[i];
        // exp_avg.lerp_(grad, 1 - beta1)
        m.exp_avg[i] += w1 * (gi - m.exp_avg[i]);
        // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        m.exp_avg_sq[i] = m.exp_avg_sq[i] * b2 + w2 * gi * gi;
        let denom = m.exp_avg_sq[i].sqrt() / bc2_sqrt + eps;
        // param.addcdiv_(exp_avg, denom, value=-step_size)
        p[i] += -step_size * (m.exp_avg[i] / denom);
    }
    Ok(())
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
