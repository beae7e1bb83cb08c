//! Pruning surgery (docs/SPEC.md step 3): delete the dropped decoder layers of a checkpoint,
//! renumber the rest, set `num_hidden_layers`, copy every other file, and record the plan
//! (in original layer indices) as `interlace_plan.json`.
//!
//! Shards are rewritten one by one straight from their memory maps, so the model is never
//! held in memory twice; the output is built in a temporary directory that is renamed into
//! place only when complete.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::plan::Plan;
use crate::fsio::{write_dir_atomic, write_json};
use crate::model::files::PLAN_FILE;
use crate::model::weights::{self, tensor_bytes, OutTensor};

/// The decoder layers' tensor names begin with this and the layer index.
const LAYER_PREFIX: &str = "model.language_model.layers.";

/// What [`prune_checkpoint`] did.
#[derive(Debug, Clone)]
pub struct PruneReport {
    /// The plan in original indices, as written to `interlace_plan.json`.
    pub plan: Plan,
    pub layers_before: usize,
    pub layers_after: usize,
    pub tensors_written: usize,
    pub tensors_removed: usize,
}

/// The plan a pruned checkpoint carries, if any.
pub fn read_checkpoint_plan(dir: &Path) -> Result<Option<Plan>> {
    let path = dir.join(PLAN_FILE);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(Plan::read(&path)?))
}

/// `model.language_model.layers.{i}.rest` -> Some((i, rest)).
fn split_layer_name(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix(LAYER_PREFIX)?;
    let (idx, tail) = rest.split_once('.')?;
    Some((idx.parse().ok()?, tail))
}

/// Applies `plan` to the checkpoint in `src`, writing the pruned checkpoint to `out`.
///
/// `plan` speaks of the layers of `src` as they are: original indices for an unpruned
/// checkpoint, or positions 0..L' for an already pruned one (whose own
/// `interlace_plan.json` maps positions to original indices; the written plan composes both).
pub fn prune_checkpoint(src: &Path, plan: &Plan, out: &Path) -> Result<PruneReport> {
    let config_path = src.join("config.json");
    let mut config: Value = serde_json::from_str(
        &std::fs::read_to_string(&config_path)
            .with_context(|| format!("{}: cannot read", config_path.display()))?,
    )
    .with_context(|| format!("{}: not valid JSON", config_path.display()))?;
    let layers_before = config
        .pointer("/text_config/num_hidden_layers")
        .and_then(Value::as_u64)
        .with_context(|| {
            format!(
                "{}: missing text_config.num_hidden_layers",
                config_path.display()
            )
        })? as usize;
    if plan.num_layers != layers_before {
        bail!(
            "the plan is for a model with {} decoder layers but {} has {layers_before}",
            plan.num_layers,
            src.display()
        );
    }
    let written_plan = match read_checkpoint_plan(src)? {
        Some(prev) => plan
            .in_original_indices(&prev.kept, prev.num_layers)
            .with_context(|| {
                format!(
                    "{}: composing with the earlier plan",
                    src.join(PLAN_FILE).display()
                )
            })?,
        None => plan.clone(),
    };
    let _lock = crate::outlock::OutputLock::acquire(out)?;
    if out.exists() {
        bail!(
            "{}: already exists; choose another --out or remove it",
            out.display()
        );
    }
    // Position in `src` -> position in the output.
    let mut new_index = vec![None; layers_before];
    for (new, &old) in plan.kept.iter().enumerate() {
        new_index[old] = Some(new);
    }
    let layers_after = plan.kept.len();

    let (tensors_written, tensors_removed) = write_dir_atomic(out, |tmp| {
        let rename = |name: &str| -> Result<Option<String>> {
            Ok(match split_layer_name(name) {
                Some((i, rest)) => match new_index.get(i).copied().flatten() {
                    Some(j) => Some(format!("{LAYER_PREFIX}{j}.{rest}")),
                    None if i < layers_before => None,
                    None => bail!("tensor {name} is beyond num_hidden_layers"),
                },
                None => Some(name.to_string()),
            })
        };
        let (written, removed) = rewrite_weights(src, tmp, rename, &HashMap::new())?;
        config["text_config"]["num_hidden_layers"] = layers_after.into();
        if let Some(types) = config
            .pointer_mut("/text_config/layer_types")
            .and_then(Value::as_array_mut)
        {
            let kept: Vec<Value> = plan
                .kept
                .iter()
                .filter_map(|&i| types.get(i).cloned())
                .collect();
            *types = kept;
        }
        write_json(&tmp.join("config.json"), &config)?;
        let plan_path = tmp.join(PLAN_FILE);
        std::fs::write(&plan_path, written_plan.to_json_string())
            .with_context(|| format!("{}: cannot write", plan_path.display()))?;
        copy_other_files(src, tmp)?;
        Ok((written, removed))
    })?;
    Ok(PruneReport {
        plan: written_plan,
        layers_before,
        layers_after,
        tensors_written,
        tensors_removed,
    })
}

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
pub const TRAINING_RECORDS: [&str; 2] = [
    crate::model::files::LOG_FILE,
    crate::model::files::CURVE_FILE,
];

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
