//! Qwen3-VL's own parts: the vision tower (with DeepStack), its M-RoPE position ids and
//! its initial weights. The decoder and the model interface are shared ([`crate::model::lm`]).

pub mod rope;
pub mod shape;
pub mod vision;
