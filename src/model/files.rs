//! The names of the files interlace adds to a Hugging Face model directory.

/// The plan a pruned checkpoint was made with (original layer numbering, composed over
/// repeated pruning).
pub const PLAN_FILE: &str = "interlace_plan.json";
/// The per-step log that training writes next to a checkpoint (and in `OUT.train/`).
pub const LOG_FILE: &str = "training_log.jsonl";
/// The loss-curve picture written next to a trained checkpoint.
pub const CURVE_FILE: &str = "loss.svg";
