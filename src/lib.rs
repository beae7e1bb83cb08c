//! interlace: prune whole decoder layers of vision-language models (Qwen3-VL first) and
//! recover quality by fine-tuning a few surviving layers (the INTERLACE method).
//!
//! The library is usable without the command-line program: `model` loads and runs
//! checkpoints, `processor` turns conversations and images into model inputs.

pub mod model;
pub mod processor;
pub mod recipes;
