//! Hidden-state similarity (SPEC.md step 1) in one forward pass per sample.
//!
//! For every pack size k in 1..=max_pack and start index i with i + k <= L - 1, a sample's
//! score is the mean over token positions of cos(h_i[t], h_{i+k}[t]). The observer keeps
//! only the last `max_pack` hidden states and stops the pass right after h_{L-1}, so the
//! last decoder layer, the final norm and the LM head never run, and memory does not grow
//! with the number of layers or samples beyond the score lists.

use std::collections::VecDeque;

use anyhow::{bail, Result};
use candle_core::Tensor;

use crate::model::ops::row_cosine;
use crate::model::{Flow, LayerObserver};

/// Per-sample scores of one model, filled one sample at a time.
#[derive(Debug, Clone)]
pub struct SimilarityAccumulator {
    num_layers: usize,
    max_pack: usize,
    /// `packs[k-1][i]`: one score per sample seen so far.
    packs: Vec<Vec<Vec<f64>>>,
}

impl SimilarityAccumulator {
    pub fn new(num_layers: usize, max_pack: usize) -> Result<Self> {
        if max_pack == 0 || max_pack + 1 > num_layers {
            bail!("pack sizes 1..={max_pack} need more than {num_layers} decoder layers");
        }
        let packs = (1..=max_pack)
            .map(|k| vec![Vec::new(); num_layers - k])
            .collect();
        Ok(Self {
            num_layers,
            max_pack,
            packs,
        })
    }

    /// The observer for one sample's forward pass. Its scores are added when the pass has
    /// delivered every hidden state they need; a failed pass adds nothing.
    pub fn sample(&mut self) -> SampleObserver<'_> {
        SampleObserver {
            acc: self,
            window: VecDeque::new(),
            scores: Vec::new(),
        }
    }

    pub fn num_samples(&self) -> usize {
        self.packs[0][0].len()
    }

    /// `packs[k-1][i]` = the per-sample scores, as `SimilarityScores::new` takes them.
    pub fn into_packs(self) -> Vec<Vec<Vec<f64>>> {
        self.packs
    }
}

/// Watches one forward pass; see [`SimilarityAccumulator::sample`].
pub struct SampleObserver<'a> {
    acc: &'a mut SimilarityAccumulator,
    /// (index, hidden) of the last `max_pack` states.
    window: VecDeque<(usize, Tensor)>,
    /// (k, i, score) of this sample.
    scores: Vec<(usize, usize, f64)>,
}

impl LayerObserver for SampleObserver<'_> {
    fn observe(&mut self, index: usize, _layer: Option<usize>, hidden: &Tensor) -> Result<Flow> {
        let last = self.acc.num_layers - 1; // h_{L-1} is the last state any pack uses
        for (prev_index, prev) in &self.window {
            let k = index - prev_index;
            let cos = row_cosine(prev, hidden)?
                .flatten_all()?
                .to_dtype(candle_core::DType::F64)?;
            self.scores
                .push((k, *prev_index, cos.mean_all()?.to_scalar::<f64>()?));
        }
        self.window.push_back((index, hidden.clone()));
        if self.window.len() > self.acc.max_pack {
            self.window.pop_front();
        }
        if index == last {
            for (k, i, s) in self.scores.drain(..) {
                self.acc.packs[k - 1][i].push(s);
            }
            return Ok(Flow::Stop);
        }
        Ok(Flow::Continue)
    }
}
