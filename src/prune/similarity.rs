//! Hidden-state similarity (docs/SPEC.md step 1) in one forward pass per sample.
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
        self.pack(Vec::new())
    }

    /// The observer for a forward pass over several samples packed into one sequence
    /// (`segments`: their token counts, in order; attention kept within each). Each sample
    /// gets its own scores, the mean over its own tokens, added in order.
    pub fn pack(&mut self, segments: Vec<usize>) -> SampleObserver<'_> {
        SampleObserver {
            acc: self,
            segments,
            window: VecDeque::new(),
            scores: Vec::new(),
        }
    }

    pub fn num_samples(&self) -> usize {
        self.packs[0][0].len()
    }

    /// Adds `other`'s samples after this one's (same model and pack sizes).
    pub fn append(&mut self, other: SimilarityAccumulator) {
        debug_assert_eq!(
            (self.num_layers, self.max_pack),
            (other.num_layers, other.max_pack)
        );
        for (mine, theirs) in self.packs.iter_mut().zip(other.packs) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                m.extend(t);
            }
        }
    }

    /// `packs[k-1][i]` = the per-sample scores, as `SimilarityScores::new` takes them.
    pub fn into_packs(self) -> Vec<Vec<Vec<f64>>> {
        self.packs
    }
}

/// Watches one forward pass; see [`SimilarityAccumulator::sample`] and
/// [`SimilarityAccumulator::pack`].
pub struct SampleObserver<'a> {
    acc: &'a mut SimilarityAccumulator,
    /// Token counts of the packed samples (empty: one sample, all tokens).
    segments: Vec<usize>,
    /// (index, hidden) of the last `max_pack` states.
    window: VecDeque<(usize, Tensor)>,
    /// (k, i, one score per sample) of this pass.
    scores: Vec<(usize, usize, Vec<f64>)>,
}

impl SampleObserver<'_> {
    /// Mean of each segment's per-token cosines (f32 values summed in f64).
    fn segment_means(&self, cos: &[f32]) -> Result<Vec<f64>> {
        let mean = |c: &[f32]| c.iter().map(|&x| x as f64).sum::<f64>() / c.len().max(1) as f64;
        if self.segments.is_empty() {
            return Ok(vec![mean(cos)]);
        }
        if self.segments.iter().sum::<usize>() != cos.len() {
            bail!(
                "packed samples hold {} tokens but the hidden state has {}",
                self.segments.iter().sum::<usize>(),
                cos.len()
            );
        }
        let mut start = 0;
        Ok(self
            .segments
            .iter()
            .map(|&len| {
                let m = mean(&cos[start..start + len]);
                start += len;
                m
            })
            .collect())
    }
}

impl LayerObserver for SampleObserver<'_> {
    fn observe(&mut self, index: usize, _layer: Option<usize>, hidden: &Tensor) -> Result<Flow> {
        let last = self.acc.num_layers - 1; // h_{L-1} is the last state any pack uses
        let mut new = Vec::with_capacity(self.window.len());
        for (prev_index, prev) in &self.window {
            let k = index - prev_index;
            let cos = row_cosine(prev, hidden)?.flatten_all()?.to_vec1::<f32>()?;
            new.push((k, *prev_index, self.segment_means(&cos)?));
        }
        self.scores.extend(new);
        self.window.push_back((index, hidden.clone()));
        if self.window.len() > self.acc.max_pack {
            self.window.pop_front();
        }
        if index == last {
            for (k, i, per_sample) in self.scores.drain(..) {
                self.acc.packs[k - 1][i].extend(per_sample);
            }
            return Ok(Flow::Stop);
        }
        Ok(Flow::Continue)
    }
}
