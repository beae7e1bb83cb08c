//! Next-token cross-entropy on supervised tokens only, computed from the hidden states at
//! the positions that predict them (the vocabulary-sized logits of other positions are
//! never formed).

use anyhow::Result;
use candle_core::{DType, Device, Tensor, D};

use super::labels::Supervised;
use crate::model::ops::Grad;
use crate::model::{ModelInputs, Qwen3VlModel};

/// Sum over rows of `-log softmax(logits)[label]`, in f32. Differentiable (the row maximum
/// is a detached shift, which leaves the value and the gradient unchanged).
pub fn cross_entropy_sum(logits: &Tensor, labels: &[u32]) -> Result<Tensor> {
    let logits = logits.to_dtype(DType::F32)?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let idx = Tensor::new(labels, logits.device())?.unsqueeze(1)?;
    let picked = shifted.gather(&idx, 1)?;
    Ok((lse - picked)?.sum_all()?)
}

/// Summed loss of one conversation through the decoder `stack` (indices into the model's
/// layers), with no gradients, and its number of supervised tokens.
pub fn conversation_loss_sum(
    model: &Qwen3VlModel,
    sup: &Supervised,
    stack: &[usize],
    device: &Device,
) -> Result<(f64, usize)> {
    let (positions, labels) = sup.targets();
    let inputs = ModelInputs::from_encoded(&sup.enc, device)?;
    let emb = model.embed(&inputs, Grad::None)?;
    let h = model.run_stack(&emb, stack, emb.embeds.clone(), 0..stack.len(), Grad::None)?;
    let logits = model.logits_at(&h, &positions, Grad::None)?;
    let loss = cross_entropy_sum(&logits, &labels)?.to_scalar::<f32>()?;
    Ok((loss as f64, labels.len()))
}
