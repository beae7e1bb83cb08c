//! Which tokens a conversation supervises (docs/SPEC.md step 4).
//!
//! The whole conversation is rendered once with the chat template. An assistant turn's
//! supervised tokens are those its rendering adds after the generation prompt: its content,
//! its end-of-turn token and whatever the template writes after that token. Spans are found
//! by rendering prefixes of the conversation (with and without the generation prompt),
//! which works for any template whose renderings of prefixes are prefixes of the whole.

use std::ops::Range;

use anyhow::{bail, Context, Result};

use crate::data::{Sample, IMAGE_MARKER};
use crate::processor::{expand_image_placeholders, Content, Encoded, Message, Processor};

/// A conversation ready for the loss: model inputs and the supervised token positions.
#[derive(Debug, Clone)]
pub struct Supervised {
    pub enc: Encoded,
    /// `true` at the tokens the loss predicts (assistant content, end-of-turn and after).
    pub supervised: Vec<bool>,
}

impl Supervised {
    /// Positions `t` whose hidden state predicts a supervised token `t + 1`, with that token.
    pub fn targets(&self) -> (Vec<u32>, Vec<u32>) {
        let ids = &self.enc.input_ids;
        (1..ids.len())
            .filter(|&t| self.supervised[t])
            .map(|t| ((t - 1) as u32, ids[t]))
            .unzip()
    }

    pub fn num_targets(&self) -> usize {
        self.supervised.iter().skip(1).filter(|&&s| s).count()
    }
}

/// The sample's turns as chat messages with its images placed: each `<image>` marker is
/// replaced by the next image at that place; images beyond the markers' count (all of them
/// for FineVision rows, which carry no markers) go, in order, at the start of the first user
/// turn, ahead of the marked ones.
pub fn conversation(sample: &Sample) -> Result<Vec<Message>> {
    let markers: usize = sample
        .turns
        .iter()
        .map(|t| t.text.matches(IMAGE_MARKER).count())
        .sum();
    let n_images = sample.images.len();
    if markers > n_images {
        bail!(
            "{}: {markers} <image> markers but {n_images} image(s)",
            sample.origin
        );
    }
    let Some(first_user) = sample.turns.iter().position(|t| t.role == "user") else {
        bail!("{}: no user turn", sample.origin);
    };
    Ok(sample
        .turns
        .iter()
        .enumerate()
        .map(|(i, turn)| {
            let mut content = Vec::new();
            if i == first_user {
                content.extend(std::iter::repeat_n(Content::Image, n_images - markers));
            }
            for (k, piece) in turn.text.split(IMAGE_MARKER).enumerate() {
                if k > 0 {
                    content.push(Content::Image);
                }
                if !piece.is_empty() {
                    content.push(Content::Text(piece.to_string()));
                }
            }
            Message::new(turn.role.clone(), content)
        })
        .collect())
}

/// The rendered conversation and the byte ranges of it that the assistant turns supervise.
pub fn assistant_spans(
    processor: &Processor,
    messages: &[Message],
) -> Result<(String, Vec<Range<usize>>)> {
    let full = processor.render(messages, false)?;
    let mut spans = Vec::new();
    for (j, m) in messages.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let before = processor.render(&messages[..j], true)?;
        let after = processor.render(&messages[..=j], false)?;
        if !(full.starts_with(&before) && full.starts_with(&after) && after.len() >= before.len()) {
            bail!(
                "the chat template renders turn {} differently inside the whole conversation; cannot find its supervised tokens",
                j + 1
            );
        }
        if after.len() > before.len() {
            spans.push(before.len()..after.len());
        }
    }
    if spans.is_empty() {
        bail!("no assistant turn to learn from");
    }
    Ok((full, spans))
}

/// Renders, tokenises and labels one conversation whose images are already preprocessed.
pub fn encode_supervised(
    processor: &Processor,
    messages: &[Message],
    images: Vec<crate::processor::ProcessedImage>,
) -> Result<Supervised> {
    let (prompt, spans) = assistant_spans(processor, messages)?;
    let merge = processor.image_processor.config.merge_size;
    let counts: Vec<usize> = images.iter().map(|i| i.num_tokens(merge)).collect();
    // Span boundaries in the expanded text: expand the prefix that ends there.
    let expanded_pos = |pos: usize| -> Result<usize> {
        let prefix = &prompt[..pos];
        let k = prefix
            .matches(crate::processor::tokenizer::IMAGE_PAD)
            .count();
        Ok(expand_image_placeholders(prefix, &counts[..k])?.len())
    };
    let spans = spans
        .into_iter()
        .map(|s| Ok(expanded_pos(s.start)?..expanded_pos(s.end)?))
        .collect::<Result<Vec<_>>>()?;
    let enc = processor.encode_processed(prompt, images)?;
    let supervised = enc
        .offsets
        .iter()
        .map(|&(start, end)| end > start && spans.iter().any(|s| s.contains(&start)))
        .collect();
    Ok(Supervised { enc, supervised })
}

/// Cuts a conversation to its first `max_len` tokens. Images whose tokens lie wholly past
/// the cut are dropped with their pixels; a cut through an image's tokens is an error, as is
/// a cut that leaves nothing to learn.
pub fn truncate(mut s: Supervised, max_len: usize, image_token: u32) -> Result<Supervised> {
    let len = s.enc.input_ids.len();
    if len <= max_len {
        return Ok(s);
    }
    let ids = &s.enc.input_ids;
    if max_len > 0 && ids[max_len - 1] == image_token && ids[max_len] == image_token {
        bail!("{len} tokens: --max-length {max_len} cuts through an image");
    }
    let kept_image_tokens = ids[..max_len].iter().filter(|&&i| i == image_token).count();
    let merge2 = {
        // Tokens per image = t*h*w / merge²; recover merge² from the totals.
        let total_tokens = ids.iter().filter(|&&i| i == image_token).count();
        let total_patches: usize = s
            .enc
            .image_grid_thw
            .iter()
            .map(|g| g[0] * g[1] * g[2])
            .sum();
        total_patches.checked_div(total_tokens).unwrap_or(1)
    };
    let (mut tokens, mut patches, mut keep) = (0, 0, 0);
    for g in &s.enc.image_grid_thw {
        let n = g[0] * g[1] * g[2];
        if tokens + n / merge2 > kept_image_tokens {
            break;
        }
        tokens += n / merge2;
        patches += n;
        keep += 1;
    }
    s.enc.image_grid_thw.truncate(keep);
    s.enc.pixel_values.truncate(patches * s.enc.patch_dim);
    s.enc.input_ids.truncate(max_len);
    s.enc.mm_token_type_ids.truncate(max_len);
    s.enc.offsets.truncate(max_len);
    s.supervised.truncate(max_len);
    if s.num_targets() == 0 {
        bail!("{len} tokens: nothing to learn within --max-length {max_len}");
    }
    Ok(s)
}

/// Loads a sample's images, places them, and labels the conversation.
pub fn prepare(processor: &Processor, sample: &Sample, max_len: usize) -> Result<Supervised> {
    let messages = conversation(sample)?;
    let images = sample
        .images
        .iter()
        .enumerate()
        .map(|(i, src)| {
            let img = src.load()?;
            processor
                .image_processor
                .preprocess(&img)
                .with_context(|| format!("image {}", i + 1))
        })
        .collect::<Result<Vec<_>>>()
        .with_context(|| sample.origin.clone())?;
    let image_token = processor
        .special_token_ids()
        .image_pad
        .context("the tokenizer has no <|image_pad|> token")?;
    let s =
        encode_supervised(processor, &messages, images).with_context(|| sample.origin.clone())?;
    truncate(s, max_len, image_token).with_context(|| sample.origin.clone())
}
