//! Files written so that nothing partial ever looks complete: a file or a directory is
//! built under a temporary sibling name and renamed into place when complete; on failure
//! the temporary is removed.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, flushed and
/// synced, then renamed over `path`. On failure the temporary file is removed and `path` is
/// left untouched, so no partial file ever looks complete.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
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

/// Builds an output directory under a temporary sibling name with `fill` and renames it
/// to `out` when complete; on failure the temporary directory is removed.
pub fn write_dir_atomic<T>(out: &Path, fill: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let tmp = tmp_dir_for(out)?;
    let result = std::fs::create_dir_all(&tmp)
        .with_context(|| format!("{}: cannot create", tmp.display()))
        .and_then(|()| fill(&tmp));
    match result {
        Ok(v) => {
            std::fs::rename(&tmp, out)
                .with_context(|| format!("{}: cannot create", out.display()))?;
            Ok(v)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// The temporary sibling name [`write_dir_atomic`] builds `out` under.
pub fn tmp_dir_for(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .with_context(|| format!("{}: not a directory path", out.display()))?;
    Ok(out.with_file_name(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Pretty JSON with a trailing newline (not atomic: for files inside a directory that
/// [`write_dir_atomic`] renames into place when complete).
pub fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    std::fs::write(path, text).with_context(|| format!("{}: cannot write", path.display()))
}
