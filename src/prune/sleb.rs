//! SLEB (Song et al., 2024) as docs/SPEC.md names it: repeatedly remove the one decoder layer
//! whose removal raises the calibration loss least. The loss is next-token cross-entropy on
//! the calibration conversations' assistant turns (mean over all their supervised tokens),
//! with the candidate's layers deleted exactly as pruning surgery deletes them.

use anyhow::{bail, Result};
use candle_core::Device;

use crate::data::labels;
use crate::data::Sample;
use crate::model::loss::cross_entropy_sum;
use crate::model::ops::Grad;
use crate::model::{Embedded, Model, ModelInputs};
use crate::processor::Processor;

/// One greedy round: the loss of each candidate removal, and the layer removed.
#[derive(Debug, Clone, PartialEq)]
pub struct SlebRound {
    /// (layer, calibration loss with it and every earlier choice removed), ascending layer.
    pub candidates: Vec<(usize, f64)>,
    pub removed: usize,
}

/// Greedy SLEB over layers `0..num_layers`: `n` rounds, each removing the layer whose
/// removal gives the lowest `loss` of the remaining stack (ties: the lowest index).
/// `loss` receives the kept layers in order.
pub fn greedy(
    num_layers: usize,
    n: usize,
    mut loss: impl FnMut(&[usize]) -> Result<f64>,
) -> Result<Vec<SlebRound>> {
    if n >= num_layers && num_layers > 0 {
        bail!("SLEB cannot remove {n} of {num_layers} layers");
    }
    let mut kept: Vec<usize> = (0..num_layers).collect();
    let mut rounds = Vec::with_capacity(n);
    for _ in 0..n {
        let mut candidates = Vec::with_capacity(kept.len());
        for (pos, &layer) in kept.iter().enumerate() {
            let mut stack = kept.clone();
            stack.remove(pos);
            let l = loss(&stack)?;
            if !l.is_finite() {
                bail!("calibration loss is {l} without layer {layer}");
            }
            candidates.push((layer, l));
        }
        let (best_pos, &(removed, _)) = candidates
            .iter()
            .enumerate()
            .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1).then(a.0.cmp(&b.0)))
            .expect("at least one candidate");
        kept.remove(best_pos);
        rounds.push(SlebRound {
            candidates,
            removed,
        });
    }
    Ok(rounds)
}

/// One calibration conversation, embedded once (vision tower included) and reused for
/// every candidate stack.
pub struct CalibrationExample {
    emb: Embedded,
    positions: Vec<u32>,
    labels: Vec<u32>,
}

impl CalibrationExample {
    pub fn new(
        model: &Model,
        processor: &Processor,
        sample: &Sample,
        max_len: usize,
        device: &Device,
    ) -> Result<Self> {
        let sup = labels::prepare(processor, sample, max_len)?;
        let (positions, labels) = sup.targets();
        let inputs = ModelInputs::from_encoded(&sup.enc, device)?;
        let emb = model.embed(&inputs, Grad::None)?;
        Ok(Self {
            emb,
            positions,
            labels,
        })
    }

    /// Several examples as one packed sequence (attention kept within each, each with its
    /// own positions and DeepStack features): its loss is the sum of theirs, in one pass.
    pub fn pack(examples: Vec<CalibrationExample>) -> Result<Self> {
        if examples.len() == 1 {
            return Ok(examples.into_iter().next().expect("one example"));
        }
        let (mut positions, mut labels, mut embs) = (Vec::new(), Vec::new(), Vec::new());
        let mut offset = 0u32;
        for ex in examples {
            positions.extend(ex.positions.iter().map(|p| p + offset));
            labels.extend(ex.labels);
            offset += ex.emb.embeds.dim(1)? as u32;
            embs.push(ex.emb);
        }
        Ok(Self {
            emb: Embedded::pack(embs)?,
            positions,
            labels,
        })
    }

    /// Tokens of the (packed) sequence.
    pub fn num_tokens(&self) -> usize {
        self.emb.embeds.dim(1).unwrap_or(0)
    }

    pub fn num_targets(&self) -> usize {
        self.labels.len()
    }

    /// Summed cross-entropy of the supervised tokens through the decoder `stack`.
    pub fn loss_sum(&self, model: &Model, stack: &[usize]) -> Result<f64> {
        let e = &self.emb;
        let h = model.run_stack(e, stack, e.embeds.clone(), 0..stack.len(), Grad::None)?;
        let logits = model.logits_at(&h, &self.positions, Grad::None)?;
        Ok(cross_entropy_sum(&logits, &self.labels)?.to_scalar::<f32>()? as f64)
    }
}

/// Packs examples in order, at most `batch` per pack and, beyond the first of a pack, at
/// most `max_tokens` tokens per pack.
pub fn pack_examples(
    examples: Vec<CalibrationExample>,
    batch: usize,
    max_tokens: usize,
) -> Result<Vec<CalibrationExample>> {
    let mut packs = Vec::new();
    let mut current: Vec<CalibrationExample> = Vec::new();
    let mut tokens = 0;
    for ex in examples {
        let len = ex.num_tokens();
        if !current.is_empty() && (current.len() == batch.max(1) || tokens + len > max_tokens) {
            packs.push(CalibrationExample::pack(std::mem::take(&mut current))?);
            tokens = 0;
        }
        tokens += len;
        current.push(ex);
    }
    if !current.is_empty() {
        packs.push(CalibrationExample::pack(current)?);
    }
    Ok(packs)
}

/// Mean loss over every supervised token of `examples` through `stack`.
pub fn calibration_loss(
    model: &Model,
    examples: &[CalibrationExample],
    stack: &[usize],
) -> Result<f64> {
    let mut sum = 0.0;
    let mut count = 0;
    for ex in examples {
        sum += ex.loss_sum(model, stack)?;
        count += ex.num_targets();
    }
    if count == 0 {
        bail!("no supervised tokens in the calibration data");
    }
    Ok(sum / count as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loss = sum of fixed per-layer "importance" of the removed layers: greedy removes the
    /// least important first.
    #[test]
    fn removes_cheapest_layer_each_round() {
        let cost = [5.0, 1.0, 3.0, 0.5, 4.0];
        let loss = |kept: &[usize]| -> Result<f64> {
            Ok((0..5).filter(|l| !kept.contains(l)).map(|l| cost[l]).sum())
        };
        let rounds = greedy(5, 3, loss).unwrap();
        let removed: Vec<usize> = rounds.iter().map(|r| r.removed).collect();
        assert_eq!(removed, vec![3, 1, 2]);
        assert_eq!(rounds[0].candidates.len(), 5);
        assert_eq!(rounds[1].candidates.len(), 4);
        // Round 2 candidates exclude layer 3; removing 1 costs 0.5 + 1.
        assert_eq!(rounds[1].candidates[1], (1, 1.5));
    }

    #[test]
    fn ties_take_lowest_index_and_interactions_count() {
        // Removing 2 alone is free, but after 2 is gone removing 4 is cheaper than 0.
        let loss = |kept: &[usize]| -> Result<f64> {
            let gone = |l: usize| !kept.contains(&l);
            let mut v = 1.0;
            if gone(0) {
                v += 1.0;
            }
            if gone(1) || gone(3) {
                v += 1.0;
            }
            if gone(4) {
                v += if gone(2) { 0.1 } else { 2.0 };
            }
            Ok(v)
        };
        let rounds = greedy(5, 2, loss).unwrap();
        assert_eq!(rounds[0].removed, 2);
        assert_eq!(rounds[1].removed, 4);
        // A tie: 1 and 3 cost the same; with only ties left, the lowest index wins.
        let flat = |_: &[usize]| -> Result<f64> { Ok(1.0) };
        assert_eq!(greedy(4, 1, flat).unwrap()[0].removed, 0);
    }

    #[test]
    fn zero_rounds_and_errors() {
        assert!(greedy(4, 0, |_| Ok(0.0)).unwrap().is_empty());
        assert!(greedy(3, 3, |_| Ok(0.0)).is_err());
        let nan = greedy(3, 1, |_| Ok(f64::NAN)).unwrap_err().to_string();
        assert!(nan.contains("NaN"), "{nan}");
    }
}
