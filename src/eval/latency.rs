//! Latency: time to first token (vision tower + prefill) and decoding speed, medians over
//! repeated runs, and the speed-up that removing decoder layers could give at best: the
//! removed layers' share of the multiply-adds of each phase.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::model::weights;

/// Parameter counts that set the cost of a pass (weights are multiply-adds per token).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ComputeShape {
    pub decoder_layers: usize,
    /// All decoder layer weights together.
    pub decoder_params: usize,
    pub vision_params: usize,
    /// LM head (vocab × hidden), applied to one position per step.
    pub head_params: usize,
}

impl ComputeShape {
    /// From a checkpoint's tensor headers (nothing is loaded).
    pub fn of(dir: &Path) -> Result<Self> {
        let infos = weights::read_tensor_infos(&weights::weight_files(dir)?)?;
        let count = |pred: &dyn Fn(&str) -> bool| -> usize {
            infos
                .iter()
                .filter(|i| pred(&i.name))
                .map(|i| i.shape.iter().product::<usize>())
                .sum()
        };
        let names = crate::model::dir::TensorNames::detect(infos.iter().map(|i| i.name.as_str()));
        let decoder_params = count(&|n| names.split_layer(n).is_some());
        let vision_params = count(&|n| n.starts_with(&names.visual_prefix()));
        let mut head_params = count(&|n| n == "lm_head.weight");
        if head_params == 0 {
            head_params = count(&|n| n == names.embed_tokens());
        }
        let layers: std::collections::BTreeSet<usize> = infos
            .iter()
            .filter_map(|i| names.split_layer(&i.name).map(|(l, _)| l))
            .collect();
        Ok(Self {
            decoder_layers: layers.len(),
            decoder_params,
            vision_params,
            head_params,
        })
    }

    /// Multiply-adds of a prefill of `tokens` tokens with `patches` image patches (weights
    /// only; attention's own products are small at these lengths and ignored).
    pub fn prefill_macs(&self, tokens: usize, patches: usize) -> f64 {
        self.decoder_params as f64 * tokens as f64
            + self.vision_params as f64 * patches as f64
            + self.head_params as f64
    }

    /// Multiply-adds of one decoding step.
    pub fn decode_macs(&self) -> f64 {
        (self.decoder_params + self.head_params) as f64
    }
}

pub fn median(mut xs: Vec<Duration>) -> Duration {
    if xs.is_empty() {
        return Duration::ZERO;
    }
    xs.sort();
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&x| Duration::from_millis(x))
                .collect::<Vec<_>>()
        };
        assert_eq!(median(ms(&[5, 1, 3])), Duration::from_millis(3));
        assert_eq!(median(ms(&[4, 1, 3, 2])), Duration::from_micros(2500));
        assert_eq!(median(vec![]), Duration::ZERO);
    }

    #[test]
    fn removing_a_quarter_of_the_layers_costs() {
        let dense = ComputeShape {
            decoder_layers: 4,
            decoder_params: 400,
            vision_params: 100,
            head_params: 50,
        };
        let pruned = ComputeShape {
            decoder_layers: 3,
            decoder_params: 300,
            ..dense
        };
        // 10 tokens, 20 patches: 4000 + 2000 + 50 vs 3000 + 2000 + 50.
        assert_eq!(dense.prefill_macs(10, 20), 6050.0);
        assert_eq!(pruned.prefill_macs(10, 20), 5050.0);
        assert_eq!(dense.decode_macs() / pruned.decode_macs(), 450.0 / 350.0);
    }
}
