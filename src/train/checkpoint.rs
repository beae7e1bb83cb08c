//! Resumable training state: the trainable tensors, AdamW's moments and step, and the
//! position in the run, saved under a state directory as `step-N/` folders. A folder is
//! written under a temporary name and renamed when complete, then `latest` is replaced
//! (also by rename) to point at it, so a run killed at any moment leaves the previous
//! checkpoint intact. Which samples each step uses follows from the seed and the step
//! number, so the step number is the whole data position.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::adamw::Moments;
use super::trainer::Trainer;
use crate::model::weights::save_tensors;

/// Progress and identity of a run, stored as `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    /// Optimizer steps completed.
    pub step: usize,
    pub total_steps: usize,
    /// Samples skipped so far (failed to load or to label).
    pub skipped: usize,
    /// The settings that determine the result; a resumed run must have the same.
    pub fingerprint: serde_json::Value,
}

pub const LATEST: &str = "latest";

fn step_dir(state_dir: &Path, step: usize) -> PathBuf {
    state_dir.join(format!("step-{step}"))
}

/// A model directory and the names of its files (config, tokenizer, templates) that turn a
/// checkpoint of a trainer whose every tensor is trainable into a loadable model.
pub type ModelFiles<'a> = (&'a Path, &'a [&'a str]);

/// Saves the trainer and run state as `step-{state.step}` and points `latest` at it; older
/// step folders are removed afterwards. The trainable tensors are stored in their checkpoint
/// shapes (the Conv3d patch embedding as five dimensions), so with `model_files` (which
/// copies those files in and adds a `model.safetensors.index.json` naming
/// `trainable.safetensors`) the folder also loads as a model: `eval --model OUT.train/step-N`.
pub fn save(
    state_dir: &Path,
    trainer: &Trainer,
    state: &RunState,
    model_files: Option<ModelFiles>,
) -> Result<()> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("{}: cannot create", state_dir.display()))?;
    let final_dir = step_dir(state_dir, state.step);
    let tmp = state_dir.join(format!(".step-{}.tmp", state.step));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    let device = Device::Cpu;
    let mut params = HashMap::new();
    let mut moments = HashMap::new();
    for (p, m) in trainer.params.iter().zip(&trainer.opt.moments) {
        params.insert(
            p.name.clone(),
            p.var.as_tensor().reshape(p.stored_shape.as_slice())?,
        );
        let shape = p.var.shape();
        let (exp_avg, exp_avg_sq) = m.to_host()?;
        moments.insert(
            format!("{}.exp_avg", p.name),
            Tensor::from_vec(exp_avg, shape, &device)?,
        );
        moments.insert(
            format!("{}.exp_avg_sq", p.name),
            Tensor::from_vec(exp_avg_sq, shape, &device)?,
        );
    }
    save_tensors(&tmp.join("trainable.safetensors"), &params)?;
    save_tensors(&tmp.join("optimizer.safetensors"), &moments)?;
    if let Some((dir, names)) = model_files {
        for name in names {
            std::fs::copy(dir.join(name), tmp.join(name))
                .with_context(|| format!("{}: cannot copy", dir.join(name).display()))?;
        }
        let total_size: usize = params.values().map(|t| t.elem_count() * 4).sum();
        let weight_map: serde_json::Map<String, serde_json::Value> = params
            .keys()
            .map(|k| (k.clone(), "trainable.safetensors".into()))
            .collect();
        crate::fsio::write_json(
            &tmp.join("model.safetensors.index.json"),
            &serde_json::json!({"metadata": {"total_size": total_size}, "weight_map": weight_map}),
        )?;
    }
    let json = serde_json::json!({
        "run": state,
        "optimizer_step": trainer.opt.step,
        "adamw": {
            "beta1": trainer.opt.config.beta1,
            "beta2": trainer.opt.config.beta2,
            "eps": trainer.opt.config.eps,
            "weight_decay": trainer.opt.config.weight_decay,
        },
    });
    std::fs::write(
        tmp.join("state.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )
    .with_context(|| format!("{}: cannot write", tmp.display()))?;
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&tmp, &final_dir)
        .with_context(|| format!("{}: cannot create", final_dir.display()))?;
    crate::fsio::write_atomic(
        &state_dir.join(LATEST),
        format!("step-{}\n", state.step).as_bytes(),
    )?;
    // Older checkpoints are no longer needed.
    for entry in std::fs::read_dir(state_dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("step-") && entry.path() != final_dir {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// Removes the half-written `.step-N.tmp` folders a run killed while saving left behind.
/// Call with the output locked (no other run is writing into the state directory).
pub fn remove_half_written(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".step-") && name.ends_with(".tmp") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The folder `latest` points at, if any.
pub fn latest(state_dir: &Path) -> Result<Option<PathBuf>> {
    let path = state_dir.join(LATEST);
    if !path.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let dir = state_dir.join(name.trim());
    if !dir.join("state.json").exists() {
        bail!(
            "{}: names {}, which is not a complete checkpoint",
            path.display(),
            dir.display()
        );
    }
    Ok(Some(dir))
}

/// Restores the trainer from a checkpoint folder and returns its run state.
pub fn load(dir: &Path, trainer: &mut Trainer) -> Result<RunState> {
    let state_path = dir.join("state.json");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&state_path)
            .with_context(|| format!("{}: cannot read", state_path.display()))?,
    )
    .with_context(|| format!("{}: not valid JSON", state_path.display()))?;
    let state: RunState = serde_json::from_value(json["run"].clone())
        .with_context(|| format!("{}: missing or malformed \"run\"", state_path.display()))?;
    let opt_step = json["optimizer_step"]
        .as_u64()
        .with_context(|| format!("{}: missing optimizer_step", state_path.display()))?;
    let device = Device::Cpu;
    let read = |name: &str| -> Result<HashMap<String, Tensor>> {
        let path = dir.join(name);
        candle_core::safetensors::load(&path, &device)
            .with_context(|| format!("{}: cannot read", path.display()))
    };
    let params = read("trainable.safetensors")?;
    let moments = read("optimizer.safetensors")?;
    let get = |map: &HashMap<String, Tensor>, key: &str, file: &str| -> Result<Vec<f32>> {
        map.get(key)
            .with_context(|| {
                format!(
                    "{}: no tensor {key}; the checkpoint is for other trainable layers",
                    dir.join(file).display()
                )
            })?
            .flatten_all()?
            .to_vec1::<f32>()
            .map_err(Into::into)
    };
    let mut values = Vec::new();
    for (p, m) in trainer.params.iter().zip(trainer.opt.moments.iter_mut()) {
        let v = get(&params, &p.name, "trainable.safetensors")?;
        if v.len() != p.var.elem_count() {
            bail!("{}: {} has the wrong size", dir.display(), p.name);
        }
        values.push(v);
        let exp_avg = get(
            &moments,
            &format!("{}.exp_avg", p.name),
            "optimizer.safetensors",
        )?;
        let exp_avg_sq = get(
            &moments,
            &format!("{}.exp_avg_sq", p.name),
            "optimizer.safetensors",
        )?;
        if exp_avg.len() != p.var.elem_count() || exp_avg_sq.len() != p.var.elem_count() {
            bail!(
                "{}: the moments of {} have the wrong size",
                dir.join("optimizer.safetensors").display(),
                p.name
            );
        }
        *m = Moments::Host {
            exp_avg,
            exp_avg_sq,
        };
    }
    if params.len() != trainer.params.len() {
        bail!(
            "{}: holds {} trainable tensors, this run has {}",
            dir.display(),
            params.len(),
            trainer.params.len()
        );
    }
    trainer.set_values(values)?;
    trainer.opt.step = opt_step;
    Ok(state)
}
