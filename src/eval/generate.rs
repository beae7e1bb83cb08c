//! Greedy decoding with a KV cache, as transformers' `generate(do_sample=False)` does it:
//! the prompt (vision tower included) runs once, then one token at a time at text position
//! (index in the sequence) + the prompt's rope delta, until an end-of-sequence id or the
//! token limit.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use candle_core::Device;

use crate::model::{KvSlot, Model, ModelInputs};
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
    model: &Model,
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
    model: &Model,
    inputs: &[ModelInputs],
    max_new: usize,
    eos: &[u32],
) -> Result<Vec<Generation>> {
    if inputs.len() == 1 {
        return Ok(vec![greedy(model, &inputs[0], max_new, eos)?]);
    }
    generate_batch_with(model, inputs, max_new, eos, |logits, _| argmax_rows(logits))
}

/// Batched generation with `pick` choosing each row's next token from the (batch, vocab)
/// logits and the tokens generated so far: one packed prefill, then decoding steps that
/// advance every prompt by one token (the KV cache left-padded), until every prompt has
/// produced an end-of-sequence id or `max_new` tokens. The timings of every result are
/// the batch's.
fn generate_batch_with(
    model: &Model,
    inputs: &[ModelInputs],
    max_new: usize,
    eos: &[u32],
    mut pick: impl FnMut(&candle_core::Tensor, &[Vec<u32>]) -> Result<Vec<u32>>,
) -> Result<Vec<Generation>> {
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
    let mut next = pick(&logits, &tokens)?;
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
        next = pick(&logits, &tokens)?;
    }
    Ok(finish(prefill, decode_start.elapsed(), tokens))
}

/// Sampling settings of VLMEvalKit's Qwen3-VL config, applied as vLLM applies them: the
/// presence penalty is subtracted from the logit of every token already generated, then the
/// logits are divided by the temperature, cut to the `top_k` largest and to the smallest
/// set whose probability reaches `top_p`, and a token is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    pub presence_penalty: f32,
}

impl Sampling {
    /// `vlmeval/config.py`, "Qwen3-VL-*-Instruct".
    pub const VLMEVALKIT: Sampling = Sampling {
        temperature: 0.7,
        top_p: 0.8,
        top_k: 20,
        presence_penalty: 1.5,
    };

    /// One token from `logits` (vocab) after `generated`, drawn with `rng`.
    pub fn pick(&self, logits: &[f32], generated: &[u32], rng: &mut impl rand::Rng) -> u32 {
        let mut l = logits.to_vec();
        if self.presence_penalty != 0.0 {
            let mut seen = generated.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                if let Some(v) = l.get_mut(t as usize) {
                    *v -= self.presence_penalty;
                }
            }
        }
        if self.temperature <= 0.0 {
            return first_max(&l);
        }
        // Candidates by logit, highest first (ties: lower id first), cut to top_k.
        let mut order: Vec<u32> = (0..l.len() as u32).collect();
        order.sort_by(|&a, &b| l[b as usize].total_cmp(&l[a as usize]).then(a.cmp(&b)));
        if self.top_k > 0 {
            order.truncate(self.top_k);
        }
        let max = l[order[0] as usize] / self.temperature;
        let weights: Vec<f64> = order
            .iter()
            .map(|&t| f64::from(l[t as usize] / self.temperature - max).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        // The smallest prefix whose probability reaches top_p (at least one token).
        let mut keep = 0;
        let mut cum = 0.0;
        for w in &weights {
            keep += 1;
            cum += w / total;
            if cum >= f64::from(self.top_p) {
                break;
            }
        }
        let kept: f64 = weights[..keep].iter().sum();
        let mut u = rng.random::<f64>() * kept;
        for (i, w) in weights[..keep].iter().enumerate() {
            if u < *w {
                return order[i];
            }
            u -= w;
        }
        order[keep - 1]
    }
}

/// Generation for several prompts with [`Sampling`]: as [`greedy_batch`] (one packed
/// prefill, batched decoding), each prompt drawing from its own random stream `rngs[b]`, so
/// that its answer does not depend on what else is in the batch.
pub fn sample_batch(
    model: &Model,
    inputs: &[ModelInputs],
    max_new: usize,
    eos: &[u32],
    sampling: &Sampling,
    rngs: &mut [rand_chacha::ChaCha8Rng],
) -> Result<Vec<Generation>> {
    anyhow::ensure!(rngs.len() == inputs.len(), "one random stream per prompt");
    generate_batch_with(model, inputs, max_new, eos, |logits, tokens| {
        let rows = logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        Ok(rows
            .iter()
            .zip(tokens)
            .zip(rngs.iter_mut())
            .map(|((r, t), rng)| sampling.pick(r, t, rng))
            .collect())
    })
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

#[cfg(test)]
mod tests {
    use super::Sampling;
    use rand_core::SeedableRng;

    /// The draws follow the cut distribution: with probabilities 0.5, 0.3, 0.15, 0.05 and
    /// top-p 0.75, only the first two tokens are kept (vLLM keeps a token while the mass of
    /// the better ones is below p), renormalised to 0.625 and 0.375.
    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p_and_renormalises() {
        let probs = [0.5f32, 0.3, 0.15, 0.05];
        let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        let s = Sampling {
            temperature: 1.0,
            top_p: 0.75,
            top_k: 0,
            presence_penalty: 0.0,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let n = 40_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[s.pick(&logits, &[], &mut rng) as usize] += 1;
        }
        assert_eq!(counts[2] + counts[3], 0, "{counts:?}");
        let f0 = counts[0] as f64 / n as f64;
        // 4.5 standard deviations of a binomial frequency at p = 0.625.
        assert!(
            (f0 - 0.625).abs() < 4.5 * (0.625f64 * 0.375 / n as f64).sqrt(),
            "{f0}"
        );
    }

    /// top-k 1 is the arg max; temperature scales the logits; the presence penalty lowers
    /// every token already generated once, however often it was generated.
    #[test]
    fn top_k_temperature_and_presence_penalty() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let greedy = Sampling {
            temperature: 0.7,
            top_p: 1.0,
            top_k: 1,
            presence_penalty: 0.0,
        };
        assert_eq!(greedy.pick(&[0.1, 2.0, 1.9], &[], &mut rng), 1);
        // Token 1 generated (twice) loses 1.5: 0.5 < 1.9, so token 2 is the arg max.
        let penalised = Sampling {
            presence_penalty: 1.5,
            ..greedy
        };
        assert_eq!(penalised.pick(&[0.1, 2.0, 1.9], &[1, 1], &mut rng), 2);
        // A tiny temperature makes a 0.1 logit gap near certain: p(second) = e^(-0.1/0.01).
        let cold = Sampling {
            temperature: 0.01,
            top_p: 1.0,
            top_k: 0,
            presence_penalty: 0.0,
        };
        let second = (0..2000)
            .filter(|_| cold.pick(&[2.0, 1.9], &[], &mut rng) == 1)
            .count();
        assert!(second <= 3, "{second}");
    }
}
