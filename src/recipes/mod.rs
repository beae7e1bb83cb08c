//! End-to-end flows behind the subcommands. Everything below them knows nothing of the CLI.

pub mod eval;
pub mod finetune;
pub mod forward;
pub mod generate;
pub mod inspect;
pub mod latency;
pub mod placement;
pub mod plan;
pub mod pretrain;
pub mod prune;
pub mod run;
pub mod similarity;
pub mod synth;
