//! LLaVA-style data: a JSON array or JSONL of
//! `{"image": "a.jpg" | ["a.jpg", ...], "conversations": [{"from": "human"|"gpt"|"system", "value": ...}]}`,
//! image paths relative to the file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{ImageSource, Sample, Turn};

/// The records of one LLaVA file, parsed as JSON but not yet checked as samples: a record
/// with the wrong shape is an error of that sample alone ([`Records::sample`]).
#[derive(Debug, Clone)]
pub struct Records {
    base: PathBuf,
    /// (origin "file#i", record)
    records: Vec<(String, Value)>,
}

impl Records {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Record `i` as a sample (panics if `i >= len()`).
    pub fn sample(&self, i: usize) -> Result<Sample> {
        let (origin, v) = &self.records[i];
        sample(v, &self.base, origin)
    }
}

/// Reads and parses a LLaVA JSON array or JSONL file; invalid JSON is an error naming the
/// file (and line).
pub fn open(path: &Path) -> Result<Records> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let Ok(text) = String::from_utf8(bytes) else {
        bail!(
            "{}: neither LLaVA-style JSON or JSONL (not UTF-8 text) nor Parquet (no PAR1 magic)",
            path.display()
        );
    };
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let name = path.display().to_string();
    let trimmed = text.trim_start();
    let records: Vec<(usize, Value)> = if trimmed.starts_with('[') {
        let arr: Vec<Value> = serde_json::from_str(&text)
            .with_context(|| format!("{name}: not a valid JSON array"))?;
        arr.into_iter().enumerate().collect()
    } else if trimmed.starts_with('{') {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map(|v| (i + 1, v))
                    .with_context(|| format!("{name}:{}: not valid JSON", i + 1))
            })
            .collect::<Result<_>>()?
    } else {
        bail!("{name}: neither LLaVA-style JSON or JSONL (expected '[' or '{{' first) nor Parquet");
    };
    Ok(Records {
        base,
        records: records
            .into_iter()
            .map(|(i, v)| (format!("{name}#{i}"), v))
            .collect(),
    })
}

/// Reads every sample of a LLaVA file; any malformed record is an error.
pub fn read(path: &Path) -> Result<Vec<Sample>> {
    let records = open(path)?;
    (0..records.len()).map(|i| records.sample(i)).collect()
}

fn sample(v: &Value, base: &Path, origin: &str) -> Result<Sample> {
    let images = match v.get("image") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .with_context(|| format!("{origin}: image list must hold strings"))
            })
            .collect::<Result<_>>()?,
        Some(_) => bail!("{origin}: \"image\" must be a string or a list of strings"),
    };
    let conv = v
        .get("conversations")
        .and_then(Value::as_array)
        .with_context(|| format!("{origin}: missing \"conversations\" list"))?;
    let turns = conv
        .iter()
        .map(|t| {
            let from = t.get("from").and_then(Value::as_str).unwrap_or("");
            let role = match from {
                "human" | "user" => "user",
                "gpt" | "assistant" => "assistant",
                "system" => "system",
                other => {
                    bail!("{origin}: unknown speaker {other:?} (expected human, gpt or system)")
                }
            };
            let text = t
                .get("value")
                .and_then(Value::as_str)
                .with_context(|| format!("{origin}: a turn has no string \"value\""))?;
            Ok(Turn {
                role: role.to_string(),
                text: text.to_string(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Sample {
        images: images
            .into_iter()
            .map(|p| ImageSource::Path(base.join(p)))
            .collect(),
        turns,
        origin: origin.to_string(),
    })
}
