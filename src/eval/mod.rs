//! Using a model: greedy generation with a KV cache, and timing it.

pub mod generate;
pub mod latency;
