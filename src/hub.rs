//! Models and data sets named as the Hugging Face ecosystem names them: `--model
//! Qwen/Qwen3-VL-8B-Instruct` or `--data HuggingFaceM4/FineVision`, optionally
//! `@revision`, resolved offline to the local Hugging Face cache exactly as
//! `huggingface_hub` finds a cached snapshot (no network, ever):
//!
//! - the cache is `HF_HUB_CACHE`, else the legacy `HUGGINGFACE_HUB_CACHE`, else
//!   `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`
//!   (`~` and `$VAR` expanded, as `huggingface_hub.constants` does);
//! - a repository lives in `models--Org--Name` (`datasets--Org--Name` for data);
//! - the revision (default `main`) is looked up in its `refs/` (a branch or tag name gives
//!   the commit it points to), and the snapshot is `snapshots/<commit>/`.
//!
//! An existing local path always wins, as in transformers' `from_pretrained`; a model path
//! that exists must be a directory ([`check_model_dir`]).

use std::path::{Path, PathBuf};

/// What kind of Hub repository a name is looked up as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoType {
    Model,
    Dataset,
}

impl RepoType {
    /// The cache folder prefix (`models`, `datasets`).
    fn folder(self) -> &'static str {
        match self {
            RepoType::Model => "models",
            RepoType::Dataset => "datasets",
        }
    }
}

/// `~` at the start and `$VAR` / `${VAR}` anywhere replaced, as Python's `expanduser` and
/// `expandvars` do (an unknown variable is left as written).
fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let s = match s.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => match env("HOME") {
            Some(home) => format!("{home}{rest}"),
            None => s.to_string(),
        },
        _ => s.to_string(),
    };
    let mut out = String::new();
    let mut rest = s.as_str();
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match (len > 0 && !name.is_empty()).then(|| env(name)).flatten() {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[i..i + 1 + len]),
        }
        rest = &rest[i + 1 + len..];
    }
    out.push_str(rest);
    out
}

/// The Hugging Face Hub cache directory, from the environment `env` (see the module
/// documentation for the order).
pub fn cache_dir_from(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    let hub = match var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        Some(dir) => dir,
        None => {
            let home = var("HF_HOME").unwrap_or_else(|| {
                let xdg = var("XDG_CACHE_HOME").unwrap_or_else(|| "~/.cache".to_string());
                format!("{xdg}/huggingface")
            });
            format!("{}/hub", expand(&home, env))
        }
    };
    PathBuf::from(expand(&hub, env))
}

/// The cache directory of this process's environment.
pub fn cache_dir() -> PathBuf {
    cache_dir_from(&|k| std::env::var(k).ok())
}

/// A Hub repository id `Org/Name` with an optional `@revision`, if `s` has that form
/// (names of letters, digits, `-`, `_`, `.`, not starting with `.` or `-`, without `--` or
/// `..`, as the Hub allows).
pub fn parse_repo_id(s: &str) -> Option<(&str, Option<&str>)> {
    let (id, revision) = match s.split_once('@') {
        Some((id, rev)) if !rev.is_empty() => (id, Some(rev)),
        Some(_) => return None,
        None => (s, None),
    };
    let (org, name) = id.split_once('/')?;
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !p.starts_with(['.', '-'])
            && !p.contains("--")
            && !p.contains("..")
    };
    (part_ok(org) && part_ok(name)).then_some((id, revision))
}

/// Resolves a command-line model or data argument: an existing path as it is; else a
/// repository id found in `cache` as its snapshot directory; else an error naming where it
/// looked. Anything that is neither an existing path nor a repository id is returned as
/// given, for the command to report.
pub fn resolve_in(s: &str, kind: RepoType, cache: &Path) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    if path.exists() {
        return Ok(path);
    }
    let Some((id, revision)) = parse_repo_id(s) else {
        return Ok(path);
    };
    let repo = cache.join(format!("{}--{}", kind.folder(), id.replace('/', "--")));
    let what = match kind {
        RepoType::Model => "model",
        RepoType::Dataset => "data set",
    };
    if !repo.is_dir() {
        return Err(format!(
            "{s}: no such path, and no {what} {id} in the Hugging Face cache (looked for {}; \
             set HF_HUB_CACHE or HF_HOME if the cache is elsewhere; nothing is downloaded)",
            repo.display()
        ));
    }
    let revision = revision.unwrap_or("main");
    // A branch or tag names the commit in refs/; a commit hash is a snapshot's name itself.
    let commit = match std::fs::read_to_string(repo.join("refs").join(revision)) {
        Ok(text) => text.trim().to_string(),
        Err(_) => revision.to_string(),
    };
    let snapshot = repo.join("snapshots").join(&commit);
    if commit.is_empty() || !snapshot.is_dir() {
        return Err(format!(
            "{s}: revision {revision} of {id} is not in the Hugging Face cache (looked for {} \
             and {}; nothing is downloaded)",
            repo.join("refs").join(revision).display(),
            snapshot.display()
        ));
    }
    Ok(snapshot)
}

/// clap value parser of `--model` (and every other model directory argument).
pub fn model_arg(s: &str) -> Result<PathBuf, String> {
    resolve_in(s, RepoType::Model, &cache_dir())
}

/// clap value parser of `--data`.
pub fn data_arg(s: &str) -> Result<PathBuf, String> {
    resolve_in(s, RepoType::Dataset, &cache_dir())
}

/// Refuses a model path that exists but is not a directory, so that the user reads "not a
/// directory" rather than "DIR/config.json: not found" (a missing path is left to the caller,
/// which names the first file it needed).
pub fn check_model_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!(
            "{}: not a directory (a model is a Hugging Face model directory holding config.json, the *.safetensors weights and tokenizer.json)",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    /// huggingface_hub.constants: HF_HUB_CACHE, then HUGGINGFACE_HUB_CACHE, then
    /// HF_HOME/hub, then $XDG_CACHE_HOME/huggingface/hub, then ~/.cache/huggingface/hub.
    #[test]
    fn cache_dir_follows_huggingface_hub_order() {
        let c = |pairs: &[(&str, &str)]| cache_dir_from(&env_of(pairs));
        let home = ("HOME", "/home/u");
        assert_eq!(c(&[home]), PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert_eq!(
            c(&[home, ("XDG_CACHE_HOME", "/x")]),
            PathBuf::from("/x/huggingface/hub")
        );
        assert_eq!(
            c(&[home, ("XDG_CACHE_HOME", "/x"), ("HF_HOME", "~/hf")]),
            PathBuf::from("/home/u/hf/hub")
        );
        assert_eq!(
            c(&[
                home,
                ("HF_HOME", "/h"),
                ("HUGGINGFACE_HUB_CACHE", "/legacy")
            ]),
            PathBuf::from("/legacy")
        );
        assert_eq!(
            c(&[
                home,
                ("HF_HOME", "/h"),
                ("HUGGINGFACE_HUB_CACHE", "/legacy"),
                ("HF_HUB_CACHE", "$HOME/c/${USER}x")
            ]),
            PathBuf::from("/home/u/c/${USER}x")
        );
    }

    #[test]
    fn repo_ids_are_recognised() {
        assert_eq!(
            parse_repo_id("Qwen/Qwen3-VL-8B-Instruct"),
            Some(("Qwen/Qwen3-VL-8B-Instruct", None))
        );
        assert_eq!(
            parse_repo_id("HuggingFaceM4/FineVision@v1.0"),
            Some(("HuggingFaceM4/FineVision", Some("v1.0")))
        );
        for not in [
            "model", "./a/b", "/abs/x", "a/b/c", "a/b@", "a--b/c", "a/..b", ".a/b", "a/b c", "",
        ] {
            assert_eq!(parse_repo_id(not), None, "{not:?}");
        }
    }
}
