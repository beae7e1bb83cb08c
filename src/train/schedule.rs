//! The learning-rate schedule: transformers' `get_cosine_schedule_with_warmup` (linear
//! warm-up from 0, then a half cosine down to 0) with `TrainingArguments`' warm-up step
//! count for a ratio (`ceil(total × ratio)`).

/// Warm-up steps for `ratio` of `total` optimizer steps.
pub fn warmup_steps(total: usize, ratio: f64) -> usize {
    (total as f64 * ratio).ceil() as usize
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineSchedule {
    pub base_lr: f64,
    pub warmup: usize,
    pub total: usize,
}

impl CosineSchedule {
    /// The multiplier of optimizer step `step` (0-based: the first step uses `lambda(0)`,
    /// which is 0 when there is a warm-up, as in transformers).
    pub fn lambda(&self, step: usize) -> f64 {
        if step < self.warmup {
            return step as f64 / self.warmup.max(1) as f64;
        }
        let progress =
            (step - self.warmup) as f64 / (self.total.saturating_sub(self.warmup)).max(1) as f64;
        (0.5 * (1.0 + (std::f64::consts::PI * 0.5 * 2.0 * progress).cos())).max(0.0)
    }

    pub fn lr(&self, step: usize) -> f64 {
        self.base_lr * self.lambda(step)
    }
}
