//! The Hugging Face model directory: the names of the files interlace adds to it, which
//! files a derived checkpoint carries over, and rewriting its safetensors shards.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::fsio::write_json;
use crate::model::weights::{self, tensor_bytes, OutTensor};

/// The plan a pruned checkpoint was made with (original layer numbering, composed over
/// repeated pruning).
pub const PLAN_FILE: &str = "interlace_plan.json";
/// The per-step log that training writes next to a checkpoint (and in `OUT.train/`).
pub const LOG_FILE: &str = "training_log.jsonl";
/// The loss-curve picture written next to a trained checkpoint.
pub const CURVE_FILE: &str = "loss.svg";

/// Rewrites every safetensors file of `src` into `dst` (same file names, `{"format": "pt"}`
/// metadata, and `model.safetensors.index.json` when the source is sharded), one shard at a
/// time from its memory map. `rename` gives each tensor's new name, or None to leave it
/// out; `replace` holds new values by *new* name, written in the dtype the source stored.
/// Returns (tensors written, tensors left out).
pub fn rewrite_weights(
    src: &Path,
    dst: &Path,
    rename: impl Fn(&str) -> Result<Option<String>>,
    replace: &HashMap<String, candle_core::Tensor>,
) -> Result<(usize, usize)> {
    let files = weights::weight_files(src)?;
    let mut weight_map = BTreeMap::new();
    let (mut written, mut removed, mut total_size) = (0, 0, 0usize);
    let mut replaced = 0;
    for file in &files {
        let mmap = weights::map_file(file)?;
        let st = weights::parse(file, &mmap)?;
        let mut views = Vec::new();
        for (name, view) in st.tensors() {
            let Some(renamed) = rename(&name).with_context(|| file.display().to_string())? else {
                removed += 1;
                continue;
            };
            let out = match replace.get(&renamed) {
                Some(t) => {
                    if t.dims() != view.shape() {
                        bail!(
                            "{}: new value of {renamed} has shape {:?}, stored {:?}",
                            file.display(),
                            t.dims(),
                            view.shape()
                        );
                    }
                    replaced += 1;
                    OutTensor::Owned {
                        dtype: view.dtype(),
                        shape: view.shape().to_vec(),
                        data: tensor_bytes(t, view.dtype())?,
                    }
                }
                None => OutTensor::Mapped(view),
            };
            total_size += safetensors::View::data_len(&&out);
            views.push((renamed, out));
        }
        views.sort_by(|a, b| a.0.cmp(&b.0));
        let file_name = file
            .file_name()
            .context("weight file without a name")?
            .to_owned();
        for (name, _) in &views {
            weight_map.insert(name.clone(), file_name.to_string_lossy().into_owned());
        }
        written += views.len();
        let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
        let dest = dst.join(&file_name);
        let refs: Vec<(&String, &OutTensor)> = views.iter().map(|(n, v)| (n, v)).collect();
        safetensors::serialize_to_file(refs, metadata, &dest)
            .map_err(|e| anyhow::anyhow!("{}: cannot write ({e})", dest.display()))?;
    }
    if replaced != replace.len() {
        bail!(
            "{}: {} of the {} tensors to replace are not in the checkpoint",
            src.display(),
            replace.len() - replaced,
            replace.len()
        );
    }
    if files.len() > 1 || src.join("model.safetensors.index.json").exists() {
        let index = serde_json::json!({
            "metadata": {"total_size": total_size},
            "weight_map": weight_map,
        });
        write_json(&dst.join("model.safetensors.index.json"), &index)?;
    }
    Ok((written, removed))
}

/// Files our training commands write next to a checkpoint about how *it* was trained
/// (`pretrain`'s and `finetune`'s log and loss curve): a model derived from it did not have
/// that training, so they are not carried over.
pub const TRAINING_RECORDS: [&str; 2] = [LOG_FILE, CURVE_FILE];

/// Copies everything but the weights, their index, `config.json`, the plan file and the
/// [`TRAINING_RECORDS`] (so: tokenizer, templates, preprocessor and generation configs, a
/// model card or licence) from `src` to `dst`.
pub fn copy_other_files(src: &Path, dst: &Path) -> Result<()> {
    for entry in
        std::fs::read_dir(src).with_context(|| format!("{}: cannot list", src.display()))?
    {
        let entry = entry?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        let handled = name_str.ends_with(".safetensors")
            || name_str == "model.safetensors.index.json"
            || name_str == "config.json"
            || name_str == PLAN_FILE
            || TRAINING_RECORDS.contains(&name_str.as_ref());
        // Follows symbolic links: a Hugging Face cache snapshot links its files into the
        // cache's blob store, and the copy gets the content.
        if !handled && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            std::fs::copy(entry.path(), dst.join(&name))
                .with_context(|| format!("{}: cannot copy", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Where a checkpoint keeps the decoder and the vision tower: transformers 5 writes
/// `model.language_model.*` and `model.visual.*` for the multimodal families, the Hub's
/// Qwen2-VL and Qwen2.5-VL checkpoints (and every text-only model) `model.*` and `visual.*`.
/// Read from the checkpoint's own tensor names, so what interlace writes back keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorNames {
    /// `model.language_model` or `model`.
    pub decoder: String,
    /// `model.visual` or `visual`.
    pub visual: String,
}

impl TensorNames {
    /// The layout of a checkpoint holding tensors named `names`.
    pub fn detect<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let (mut nested, mut nested_visual) = (false, false);
        for n in names {
            nested |= n.starts_with("model.language_model.");
            nested_visual |= n.starts_with("model.visual.");
        }
        Self {
            decoder: if nested {
                "model.language_model"
            } else {
                "model"
            }
            .into(),
            visual: if nested || nested_visual {
                "model.visual"
            } else {
                "visual"
            }
            .into(),
        }
    }

    /// `<decoder>.layers.` — every decoder layer's tensors start with it and the index.
    pub fn layers_prefix(&self) -> String {
        format!("{}.layers.", self.decoder)
    }

    /// `<decoder>.embed_tokens.weight`.
    pub fn embed_tokens(&self) -> String {
        format!("{}.embed_tokens.weight", self.decoder)
    }

    /// `<decoder>.norm.weight`.
    pub fn norm(&self) -> String {
        format!("{}.norm.weight", self.decoder)
    }

    /// `<visual>.` — every vision tower tensor starts with it.
    pub fn visual_prefix(&self) -> String {
        format!("{}.", self.visual)
    }

    /// `<decoder>.layers.{i}.rest` -> Some((i, rest)).
    pub fn split_layer<'a>(&self, name: &'a str) -> Option<(usize, &'a str)> {
        let rest = name.strip_prefix(&self.layers_prefix())?;
        let (idx, rest) = rest.split_once('.')?;
        Some((idx.parse().ok()?, rest))
    }
}
