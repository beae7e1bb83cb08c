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
    Ok(first_max(
        &logits.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?,
    ))
}

/// The index of the first maximum, as torch.argmax picks it.
fn first_max(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
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

/// Greedy generation for several prompts at once: one packed prefill, then decoding steps
/// that advance every prompt by one token (the KV cache left-padded), until every prompt
/// has produced an end-of-sequence id or `max_new` tokens. Each prompt's tokens are what
/// [`greedy`] gives it alone, up to float rounding (the matrix products see other rows).
/// The timings of every result are the batch's.
pub fn greedy_batch(
    model: &Qwen3VlModel,
    inputs: &[ModelInputs],
    max_new: usize,
    eos: &[u32],
) -> Result<Vec<Generation>> {
    if inputs.len() == 1 {
        return Ok(vec![greedy(model, &inputs[0], max_new, eos)?]);
    }
    let start = Instant::now();
    let mut prompts = Vec::with_capacity(inputs.len());
    for i in inputs {
        prompts.push(model.embed(i, Default::default())?);
    }
    let deltas: Vec<i64> = prompts.iter().map(|e| e.rope_delta).collect();
    let lens: Vec<usize> = inputs.iter().map(|i| i.input_ids.len()).collect();
    let mut tokens: Vec<Vec<u32>> = vec![Vec::with_capacity(max_new); inputs.len()];
    let finish = |prefill: Duration, decode: Duration, tokens: Vec<Vec<u32>>| {
        tokens
            .into_iter()
            .zip(&lens)
            .map(|(tokens, &prompt_len)| Generation {
                tokens,
                prompt_len,
                prefill,
                decode,
            })
            .collect()
    };
    if max_new == 0 {
        return Ok(finish(start.elapsed(), Duration::ZERO, tokens));
    }
    let mut cache: Vec<KvSlot> = Vec::new();
    let (logits, left_pad) = model.prefill_batch(prompts, &mut cache)?;
    let mut next = argmax_rows(&logits)?;
    let prefill = start.elapsed();
    let decode_start = Instant::now();
    let mut done = vec![false; inputs.len()];
    let mut step = 0;
    loop {
        for (b, &t) in next.iter().enumerate() {
            if !done[b] {
                tokens[b].push(t);
                done[b] = tokens[b].len() >= max_new || eos.contains(&t);
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
        step += 1;
        // Entry b's new token sits at text position (its index in b's own sequence) + delta.
        let positions: Vec<i64> = lens
            .iter()
            .zip(&deltas)
            .map(|(&l, &d)| (l + step - 1) as i64 + d)
            .collect();
        let logits = model.decode_batch(&next, &positions, &mut cache, &left_pad)?;
        next = argmax_rows(&logits)?;
    }
    Ok(finish(prefill, decode_start.elapsed(), tokens))
}

/// [`argmax`] of every row of (batch, vocab) logits.
fn argmax_rows(logits: &candle_core::Tensor) -> Result<Vec<u32>> {
    let rows = logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
    Ok(rows.iter().map(|r| first_max(r)).collect())
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
