//! The optimizer-step loop that `finetune` and `pretrain` share: resuming from the latest
//! checkpoint, labelling each step's samples, one [`Trainer::step`] per optimizer step,
//! the JSON-lines training log, the progress bar, periodic checkpoints, and the pieces of
//! the final output (log file, loss curve, closing summary).

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::checkpoint::{self, RunState};
use super::plot::loss_curve_svg;
use super::schedule::CosineSchedule;
use super::trainer::Trainer;
use crate::data::labels::{self, Supervised};
use crate::data::Sample;
use crate::fsio::write_atomic;
use crate::model::dir::{CURVE_FILE, LOG_FILE};
use crate::processor::Processor;
use crate::progress::Progress;

/// What a training command hands the loop.
pub struct Session<'a> {
    /// The command's name, which prefixes every message ("finetune", "pretrain").
    pub name: &'static str,
    /// Where checkpoints and the running log live (`OUT.train/`).
    pub state_dir: &'a Path,
    /// Save a resumable checkpoint every N optimizer steps.
    pub save_every: Option<usize>,
    /// Conversations are cut to this many tokens.
    pub max_length: usize,
    /// With every tensor trainable: files that make each checkpoint a loadable model too
    /// ([`checkpoint::save`]).
    pub model_files: Option<checkpoint::ModelFiles<'a>>,
}

/// The loop's result: the whole log, and what was skipped.
pub struct Finished {
    pub log_lines: Vec<String>,
    pub skipped: usize,
    pub last_problem: Option<String>,
    /// Mean wall time of the optimizer steps run by this invocation.
    pub seconds_per_step: f64,
}

impl Session<'_> {
    /// The run's starting state: fresh, or with `resume` the latest checkpoint's (weights
    /// and optimizer state loaded into `trainer`) and the log lines up to it. A checkpoint
    /// saved with other settings is refused. Creates the state directory and (re)writes
    /// its log.
    pub fn open(
        &self,
        trainer: &mut Trainer,
        fingerprint: Value,
        total: usize,
        skipped: usize,
        resume: bool,
    ) -> Result<(RunState, Vec<String>)> {
        let mut state = RunState {
            step: 0,
            total_steps: total,
            skipped,
            fingerprint: fingerprint.clone(),
        };
        let log_path = self.state_dir.join(LOG_FILE);
        let mut log_lines = Vec::new();
        if resume {
            match checkpoint::latest(self.state_dir)? {
                Some(dir) => {
                    state = checkpoint::load(&dir, trainer)?;
                    let changed = fingerprint_changes(&state.fingerprint, &fingerprint);
                    if !changed.is_empty() {
                        bail!(
                            "{}: was saved by a run with other settings: {}; resume with the same flags and data",
                            dir.display(),
                            changed.join("; ")
                        );
                    }
                    // Settings an older version did not record are taken from this run.
                    state.fingerprint = fingerprint.clone();
                    // The log up to the checkpoint; later lines belong to the lost work.
                    if let Ok(text) = std::fs::read_to_string(&log_path) {
                        log_lines = text
                            .lines()
                            .filter(|l| {
                                serde_json::from_str::<Value>(l)
                                    .ok()
                                    .and_then(|v| v["step"].as_u64())
                                    .is_some_and(|s| s as usize <= state.step)
                            })
                            .map(str::to_string)
                            .collect();
                    }
                    if log_lines.len() < state.step {
                        eprintln!(
                            "{}: {} holds {} of the {} steps before the checkpoint (cut short by a crash, or steps whose samples were all skipped); the log and loss curve will miss the others",
                            self.name,
                            log_path.display(),
                            log_lines.len(),
                            state.step
                        );
                    }
                    eprintln!(
                        "{}: resuming at step {}/{total} from {}",
                        self.name,
                        state.step,
                        dir.display()
                    );
                }
                None => eprintln!(
                    "{}: --resume: no checkpoint in {}; starting from the beginning",
                    self.name,
                    self.state_dir.display()
                ),
            }
        }
        std::fs::create_dir_all(self.state_dir)
            .with_context(|| format!("{}: cannot create", self.state_dir.display()))?;
        write_atomic(&log_path, join_lines(&log_lines).as_bytes())?;
        Ok((state, log_lines))
    }

    /// Runs the optimizer steps from `state.step` to the end of `steps` (sample indices
    /// per step). A sample that cannot be labelled, or has nothing to learn from, is
    /// skipped and counted; a step whose samples were all skipped makes no update. A
    /// failing step names the last good checkpoint.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        trainer: &mut Trainer,
        processor: &Processor,
        samples: &[Sample],
        steps: &[Vec<usize>],
        schedule: &CosineSchedule,
        mut state: RunState,
        mut log_lines: Vec<String>,
        first_problem: Option<String>,
    ) -> Result<Finished> {
        let total = steps.len();
        let log_path = self.state_dir.join(LOG_FILE);
        let mut log_file = std::fs::OpenOptions::new()
            .append(true)
            .open(&log_path)
            .with_context(|| format!("{}: cannot open", log_path.display()))?;
        let progress = Progress::new(self.name, "steps", total);
        let mut last_problem = first_problem;
        let started_all = Instant::now();
        let mut timed_steps = 0usize;
        while state.step < total {
            let started = Instant::now();
            let mut batch: Vec<Supervised> = Vec::with_capacity(steps[state.step].len());
            for &i in &steps[state.step] {
                match labels::prepare(processor, &samples[i], self.max_length) {
                    Ok(s) if s.num_targets() > 0 => batch.push(s),
                    Ok(_) => state.skipped += 1,
                    Err(e) => {
                        state.skipped += 1;
                        last_problem = Some(crate::error_line(&e));
                    }
                }
            }
            let lr = schedule.lr(state.step);
            if batch.is_empty() {
                eprintln!(
                    "{}: step {}: every sample was skipped; no update",
                    self.name,
                    state.step + 1
                );
                state.step += 1;
                continue;
            }
            let stats = match trainer.step(&batch, lr) {
                Ok(s) => s,
                Err(e) => {
                    progress.finish();
                    let kept = match checkpoint::latest(self.state_dir)? {
                        Some(d) => format!("the last good checkpoint is {}", d.display()),
                        None => "no checkpoint was saved (use --save-every N)".to_string(),
                    };
                    return Err(
                        e.context(format!("step {} of {total} failed; {kept}", state.step + 1))
                    );
                }
            };
            state.step += 1;
            timed_steps += 1;
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            let line = json!({
                "step": state.step,
                "loss": stats.loss,
                "lr": stats.lr,
                "grad_norm": stats.grad_norm,
                "seconds": secs,
                "samples_per_s": batch.len() as f64 / secs,
                "tokens_per_s": stats.input_tokens as f64 / secs,
                "supervised_tokens": stats.supervised_tokens,
                "samples": batch.len(),
            })
            .to_string();
            writeln!(log_file, "{line}")
                .with_context(|| format!("{}: cannot write", log_path.display()))?;
            log_lines.push(line);
            progress.set(
                state.step,
                &format!(
                    "loss {:.4}, lr {:.2e}, {:.2} s/step, {:.0} tok/s{}",
                    stats.loss,
                    stats.lr,
                    secs,
                    stats.input_tokens as f64 / secs,
                    if state.skipped > 0 {
                        format!(", {} skipped", state.skipped)
                    } else {
                        String::new()
                    }
                ),
            );
            if let Some(every) = self.save_every {
                if every > 0 && state.step.is_multiple_of(every) && state.step < total {
                    checkpoint::save(self.state_dir, trainer, &state, self.model_files)?;
                }
            }
        }
        progress.finish();
        Ok(Finished {
            log_lines,
            skipped: state.skipped,
            last_problem,
            seconds_per_step: started_all.elapsed().as_secs_f64() / timed_steps.max(1) as f64,
        })
    }
}

impl Finished {
    /// ", final loss X; N samples skipped, e.g. ..." for the command's closing line.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        if let Some(v) = self
            .log_lines
            .last()
            .and_then(|l| serde_json::from_str::<Value>(l).ok())
        {
            s.push_str(&format!(
                ", final loss {:.4}",
                v["loss"].as_f64().unwrap_or(f64::NAN)
            ));
        }
        if self.skipped > 0 {
            s.push_str(&format!(
                "; {} samples skipped, e.g. {}",
                self.skipped,
                self.last_problem
                    .as_deref()
                    .unwrap_or("(no supervised tokens, or before resuming)")
            ));
        }
        s
    }
}

/// What differs between the settings a checkpoint was saved with and this run's, one
/// entry per setting ("--lr: 0.001 then, 0.002 now"; an absent setting shows as null).
/// The data's content fingerprint is compared only when the saved run recorded one (runs
/// saved before it existed still resume).
fn fingerprint_changes(saved: &Value, now: &Value) -> Vec<String> {
    let (Some(saved), Some(now)) = (saved.as_object(), now.as_object()) else {
        return if saved == now {
            Vec::new()
        } else {
            vec![format!("{saved} then, {now} now")]
        };
    };
    let mut keys: Vec<&String> = saved.keys().chain(now.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for key in keys {
        let (was, is) = (
            saved.get(key).unwrap_or(&Value::Null),
            now.get(key).unwrap_or(&Value::Null),
        );
        if was == is || (key == "data_content" && was.is_null()) {
            continue;
        }
        let what = match key.as_str() {
            "data_content" => "the data's content (a file was changed or regenerated)".to_string(),
            "samples" => "the number of samples read".to_string(),
            "finetune" => "the plan's fine-tune layers".to_string(),
            "shape" => "the model shape".to_string(),
            "init" => "the initial checkpoint".to_string(),
            k => format!("--{}", k.replace('_', "-")),
        };
        out.push(if key == "data_content" {
            what
        } else {
            format!("{what}: {was} then, {is} now")
        });
    }
    out
}

fn join_lines(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Writes `training_log.jsonl` and its loss curve `loss.svg` (titled `title`) into `dir`.
pub fn write_log_and_curve(dir: &Path, title: &str, log_lines: &[String]) -> Result<()> {
    std::fs::write(dir.join(LOG_FILE), join_lines(log_lines))
        .with_context(|| format!("{}: cannot write", dir.join(LOG_FILE).display()))?;
    let points: Vec<(usize, f64, f64)> = log_lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            (
                v["step"].as_u64().unwrap_or(0) as usize,
                v["loss"].as_f64().unwrap_or(f64::NAN),
                v["lr"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    std::fs::write(dir.join(CURVE_FILE), loss_curve_svg(title, &points))
        .with_context(|| format!("{}: cannot write", dir.join(CURVE_FILE).display()))
}
