//! Qwen2-VL and Qwen2.5-VL: the two vision towers. (The decoder's sectioned M-RoPE tables
//! are [`crate::model::rope::TextRope`]'s.)
//!
//! Positions: for inputs with images (no video), transformers 5.25's
//! `Qwen2VLModel.get_rope_index` and `Qwen2_5_VLModel.get_rope_index` compute exactly what
//! `Qwen3VLModel.get_rope_index` does (text runs count up in all three rows; an image run is
//! laid out on its merged grid offset by the position reached so far, which then advances by
//! max(h, w) / merge; Qwen2.5-VL's `tokens_per_second` scaling applies to videos only), so
//! [`get_rope_index`] is the Qwen3-VL function, re-exported.

pub mod vision;

pub use crate::model::qwen3_vl::rope::{get_rope_index, RopeIndex};
pub use vision::{window_index, Qwen2VisionConfig, Qwen2VisionModel, VisionAct, VisionFamily};
