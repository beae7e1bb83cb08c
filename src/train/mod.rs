//! Recovery fine-tuning (SPEC.md step 4): supervised-token labels, the loss, and the
//! training loop with its optimizer, schedule and checkpoints.

pub mod adamw;
pub mod labels;
pub mod loss;
pub mod schedule;
pub mod trainer;
