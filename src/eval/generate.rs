//! Greedy decoding with a KV cache, as transformers' `generate(do_sample=False)` does it:
//! the prompt (vision tower included) runs once, then one token at a time at text position
//! (index in the sequence) + the prompt's rope delta, until an end-of-sequence id or the
//! token limit.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use candle_core::Device;

use crate::model::{KvSlot, ModelInputs, Qwen3VlModel};
use crate::processor::{DynamicImage, Message, Processor};

/// What one generation produced, with its timings.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated ids, the end-of-sequence id included when one was produced.
    pub tokens: Vec<u32>,
    /// Prompt tokens.
    pub prompt_len: usize,
    /// Time to the first generated token (vision tower and prefill).
    pub prefill: Duration,
    /// Time of the decoding steps after the first token.
    pub decode: Duration,
}

/// The end-of-sequence ids: `eos_token_id` of `generation_config.json` (a number or a
/// list), else the tokenizer's end-of-sequence token.
pub fn eos_ids(model_dir: &Path, processor: &Processor) -> Result<Vec<u32>> {
    let path = model_dir.join("generation_config.json");
    if path.exists() {
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("{}: cannot read", path.display()))?,
        )
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
        let ids: Vec<u32> = match &json["eos_token_id"] {
            serde_json::Value::Number(n) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_u64())
                .map(|x| x as u32)
                .collect(),
            _ => Vec::new(),
        };
        if !ids.is_empty() {
            return Ok(ids);
        }
    }
    Ok(processor
        .tokenizer
        .eos_token()
        .and_then(|t| processor.tokenizer.token_to_id(t))
        .into_iter()
        .collect())
}

fn argmax(logits: &candle_core::Tensor) -> Result<u32> {
    let v = logits.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
    // The first maximum, as torch.argmax picks it.
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    Ok(best as u32)
}

/// Greedy generation of at most `max_new` tokens after `inputs`.
pub fn greedy(
    model: &Qwen3VlModel,
    inputs: &ModelInputs,
    max_new: usize,
    eos: &[u32],
) -> Result<Generation> {
    let start = Instant::now();
    let emb = model.embed(inputs, Default::default())?;
    let mut cache: Vec<KvSlot> = Vec::new();
    let prompt_len = inputs.input_ids.len();
    let mut tokens = Vec::with_capacity(max_new);
    if max_new == 0 {
        return Ok(Generation {
            tokens,
            prompt_len,
            prefill: start.elapsed(),
            decode: Duration::ZERO,
        });
    }
    let mut next = argmax(&model.prefill(&emb, &mut cache)?)?;
    let prefill = start.elapsed();
    let decode_start = Instant::now();
    tokens.push(next);
    while tokens.len() < max_new && !eos.contains(&next) {
        let position = (prompt_len + tokens.len() - 1) as i64 + emb.rope_delta;
        next = argmax(&model.decode_step(next, position, &mut cache)?)?;
        tokens.push(next);
    }
    Ok(Generation {
        tokens,
        prompt_len,
        prefill,
        decode: decode_start.elapsed(),
    })
}

/// One user message holding the images first, then the text, rendered with the chat
/// template and the generation prompt, as model inputs.
pub fn prompt_inputs(
    processor: &Processor,
    images: &[DynamicImage],
    prompt: &str,
    device: &Device,
) -> Result<ModelInputs> {
    let message = Message::user_with_images(images.len(), prompt);
    let enc = processor.encode(&[message], images, true)?;
    ModelInputs::from_encoded(&enc, device)
}
