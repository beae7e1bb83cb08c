//! Pruning surgery (docs/SPEC.md step 3): delete the dropped decoder layers of a checkpoint,
//! renumber the rest, set `num_hidden_layers`, copy every other file, and record the plan
//! (in original layer indices) as `interlace_plan.json`.
//!
//! Shards are rewritten one by one straight from their memory maps, so the model is never
//! held in memory twice; the output is built in a temporary directory that is renamed into
//! place only when complete.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::plan::Plan;
use crate::fsio::{write_dir_atomic, write_json};
use crate::model::config::ModelConfig;
use crate::model::dir::{copy_other_files, rewrite_weights, TensorNames, PLAN_FILE};
use crate::model::weights;

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

/// Applies `edit` to each object of a `config.json` that holds the decoder's settings:
/// `text_config` when it has them (Qwen3-VL, transformers 5's Qwen2-VL), the top level when
/// it has them (text-only families, the Hub's Qwen2-VL), or both.
fn edit_decoder_sections(
    config: &mut Value,
    mut edit: impl FnMut(&mut serde_json::Map<String, Value>),
) {
    if let Some(t) = config.get_mut("text_config").and_then(Value::as_object_mut) {
        if t.contains_key("num_hidden_layers") {
            edit(t);
        }
    }
    if let Some(top) = config.as_object_mut() {
        if top.contains_key("num_hidden_layers") {
            edit(top);
        }
    }
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
    let layers_before = ModelConfig::from_value(config.clone())
        .with_context(|| config_path.display().to_string())?
        .text
        .num_hidden_layers;
    let names = TensorNames::detect(
        weights::read_tensor_infos(&weights::weight_files(src)?)?
            .iter()
            .map(|i| i.name.as_str()),
    );
    let layer_prefix = names.layers_prefix();
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
            Ok(match names.split_layer(name) {
                Some((i, rest)) => match new_index.get(i).copied().flatten() {
                    Some(j) => Some(format!("{layer_prefix}{j}.{rest}")),
                    None if i < layers_before => None,
                    None => bail!("tensor {name} is beyond num_hidden_layers"),
                },
                None => Some(name.to_string()),
            })
        };
        let (written, removed) = rewrite_weights(src, tmp, rename, &HashMap::new())?;
        edit_decoder_sections(&mut config, |section| {
            section.insert("num_hidden_layers".into(), layers_after.into());
            if let Some(types) = section.get_mut("layer_types").and_then(Value::as_array_mut) {
                let kept: Vec<Value> = plan
                    .kept
                    .iter()
                    .filter_map(|&i| types.get(i).cloned())
                    .collect();
                *types = kept;
            }
        });
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
