//! Layer selection (docs/SPEC.md "The method", steps 1–2, as pure functions).
//!
//! - [`scores`](mod@scores): [`SimilarityScores`], the per-sample hidden-state cosine scores
//!   s_k(i) of a model, read from / written to `sim.json` or read from the reference
//!   scripts' per-pack files.
//! - [`select`](mod@select): the selection strategies (`interlace` and its ablations,
//!   `random`, `consecutive`, `shortgpt`) and the fine-tune policies, turning scores into a
//!   [`Plan`]. Drop sets computed elsewhere (e.g. `sleb`, which needs a model) become a plan
//!   through [`Plan::from_drops`].
//! - [`plan`](mod@plan): [`Plan`], the `plan.json` file, layer roles, the role table, and
//!   composition of a plan made on an already pruned model.

pub mod heatmap;
pub mod plan;
pub mod scores;
pub mod select;
pub mod similarity;
pub mod sleb;
pub mod surgery;

pub use plan::{role_table, Plan, Role};
pub use scores::SimilarityScores;
pub use select::{drop_count, select, FinetunePolicy, SelectOptions, Selection, Strategy};
pub use similarity::SimilarityAccumulator;
