//! interlace: prune whole decoder layers of vision-language models (Qwen3-VL first) and
//! recover quality by fine-tuning a few surviving layers (the INTERLACE method).
//!
//! The library is usable without the command-line program: `model` loads and runs
//! checkpoints, `processor` turns conversations and images into model inputs.

pub mod data;
pub mod eval;
pub mod model;
pub mod processor;
pub mod progress;
pub mod prune;
pub mod recipes;
pub mod train;

/// One line for a user: every context of the error chain, joined by ": ", keeping only the
/// first line of each (candle's errors may append a backtrace on further lines).
pub fn error_line(err: &anyhow::Error) -> String {
    err.chain()
        .map(|e| {
            e.to_string()
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}
