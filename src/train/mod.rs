//! Recovery fine-tuning (docs/SPEC.md step 4): supervised-token labels, the loss, and the
//! training loop (shared with `pretrain`) with its optimizer, schedule and checkpoints.

pub mod adamw;
pub mod checkpoint;
pub mod plot;
pub mod schedule;
pub mod session;
pub mod trainer;
