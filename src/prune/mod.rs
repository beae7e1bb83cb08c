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
pub use select::{
    drop_count, select, FinetunePolicy, SelectOptions, Selection, SplitMix64, Strategy,
};
pub use similarity::SimilarityAccumulator;

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, flushed and
/// synced, then renamed over `path`. On failure the temporary file is removed and `path` is
/// left untouched, so no partial file ever looks complete.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::anyhow!("{}: cannot write: {e}", path.display()));
    }
    Ok(())
}
