//! `interlace finetune` end to end: output checkpoint, frozen tensors untouched, resume after
//! SIGKILL equal to an uninterrupted run, bad samples skipped and counted, NaN stops.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device};
use common::{load_tensors, model_dir, to_f32_vec};
use interlace::model::Model;
use serde_json::Value;

const PLAN: &str = r#"{"strategy": "manual", "ratio": 0.0, "num_layers": 6, "drop": [],
 "finetune": [1, 4], "freeze": [0, 2, 3, 5], "anchors": [], "kept": [0, 1, 2, 3, 4, 5]}"#;

/// Training data with absolute image paths, plus `extra` samples.
fn write_data(dir: &Path, extra: &[Value]) -> PathBuf {
    let mut data = common::train_data_absolute();
    data.extend(extra.iter().cloned());
    let path = dir.join("data.json");
    std::fs::write(&path, serde_json::to_string(&data).unwrap()).unwrap();
    path
}

fn finetune_cmd(dir: &Path, data: &Path, out: &Path, extra: &[&str]) -> Command {
    let plan = dir.join("plan.json");
    std::fs::write(&plan, PLAN).unwrap();
    let mut cmd = common::cli();
    cmd.arg("finetune")
        .arg("--model")
        .arg(model_dir("tiny-b"))
        .arg("--plan")
        .arg(&plan)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(["--portion", "1", "--grad-accum", "1"])
        .args(extra);
    if !extra.contains(&"--lr") {
        cmd.args(["--lr", "1e-3"]);
    }
    cmd
}

/// Flags of a run whose step 1 is checkpointed and whose step 2 fails: lr 1e38 with no
/// clipping makes the loss NaN (`lr` may be changed to test a resume).
fn nan_at_step_2(lr: &'static str) -> Vec<&'static str> {
    vec![
        "--batch-size",
        "1",
        "--lr",
        lr,
        "--warmup-ratio",
        "0",
        "--max-grad-norm",
        "0",
        "--save-every",
        "1",
    ]
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "finetune failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn log_values(dir: &Path) -> Vec<(u64, f64, f64, f64)> {
    std::fs::read_to_string(dir.join("training_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert!(v["tokens_per_s"].as_f64().unwrap() > 0.0);
            (
                v["step"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap(),
                v["lr"].as_f64().unwrap(),
                v["grad_norm"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let mut all = Vec::new();
    for f in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        for (k, t) in load_tensors(&dir.join(f)) {
            all.push((k, to_f32_vec(&t)));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[test]
fn output_is_complete_and_only_trainable_layers_change() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path(), &[]);
    let out = tmp.path().join("ft");
    let report = ok(
        finetune_cmd(tmp.path(), &data, &out, &["--batch-size", "4"])
            .output()
            .unwrap(),
    );
    assert!(
        report.contains("fine-tuned layers 1, 4 for 2 steps"),
        "{report}"
    );
    for f in [
        "config.json",
        "interlace_plan.json",
        "loss.svg",
        "tokenizer.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let log = log_values(&out);
    assert_eq!(log.len(), 2);
    // One warm-up step (ceil(2 × 0.03)): the first step runs at learning rate 0.
    assert_eq!(log[0].2, 0.0);
    assert!((log[1].2 - 1e-3).abs() < 1e-15);
    let before = weights(&model_dir("tiny-b"));
    let after = weights(&out);
    assert_eq!(before.len(), after.len());
    let mut changed = 0;
    for ((name, a), (name2, b)) in before.iter().zip(&after) {
        assert_eq!(name, name2);
        let trainable = name.starts_with("model.language_model.layers.1.")
            || name.starts_with("model.language_model.layers.4.");
        if trainable {
            // Step 1 has lr 0, step 2 moves every weight with a non-zero gradient.
            if a != b {
                changed += 1;
            }
        } else {
            assert_eq!(a, b, "{name}: a frozen tensor changed");
        }
    }
    assert_eq!(changed, 22, "every trainable tensor should change");
    // Loads in our code; state directory removed after success.
    Model::load(&out, DType::F32, &Device::Cpu).unwrap();
    assert!(!tmp.path().join("ft.train").exists());
}

/// A run killed after its third checkpoint and resumed ends with the weights and log of an
/// uninterrupted run (`dtype`: extra flags, e.g. bf16 with its f32 masters).
fn killed_run_resumes_to_the_same_weights(dtype: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path(), &[]);
    let mut flags = vec!["--batch-size", "1", "--epochs", "6", "--save-every", "1"];
    flags.extend(dtype);
    let whole = tmp.path().join("whole");
    ok(finetune_cmd(tmp.path(), &data, &whole, &flags)
        .output()
        .unwrap());

    let out = tmp.path().join("killed");
    let state = tmp.path().join("killed.train");
    common::kill_after_third_checkpoint(finetune_cmd(tmp.path(), &data, &out, &flags), &state);
    assert!(!out.exists(), "the run finished before it could be killed");
    // A fresh start is refused while the state is there.
    let refused = finetune_cmd(tmp.path(), &data, &out, &flags)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));
    ok(finetune_cmd(tmp.path(), &data, &out, &flags)
        .arg("--resume")
        .output()
        .unwrap());
    let (a, b) = (weights(&whole), weights(&out));
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        let d = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert_eq!(d, 0.0, "{name}: resumed run differs by {d}");
    }
    let (la, lb) = (log_values(&whole), log_values(&out));
    assert_eq!(la.len(), 48);
    assert_eq!(la, lb, "training logs differ");
}

#[test]
fn killed_run_resumes_to_the_same_weights_f32() {
    killed_run_resumes_to_the_same_weights(&[]);
}

#[test]
fn killed_bf16_run_resumes_to_the_same_weights() {
    killed_run_resumes_to_the_same_weights(&["--dtype", "bf16", "--device", "cpu"]);
}

#[test]
fn bad_samples_are_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\nnot really a png").unwrap();
    let long = "word ".repeat(400);
    let extra = [
        serde_json::json!({"conversations": [{"from": "human", "value": "No answer here."}]}),
        serde_json::json!({"image": broken.display().to_string(), "conversations": [
            {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "Broken."}]}),
        serde_json::json!({"conversations": [
            {"from": "human", "value": long}, {"from": "gpt", "value": "Too long."}]}),
    ];
    let data = write_data(tmp.path(), &extra);
    let out = tmp.path().join("ft");
    let report = ok(finetune_cmd(
        tmp.path(),
        &data,
        &out,
        &[
            "--batch-size",
            "11",
            "--max-length",
            "300",
            "--warmup-ratio",
            "0",
        ],
    )
    .output()
    .unwrap());
    assert!(report.contains("3 samples skipped"), "{report}");
    let log: Vec<Value> = std::fs::read_to_string(out.join("training_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["samples"], 8);
}

#[test]
fn nan_loss_stops_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path(), &[]);
    let out = tmp.path().join("ft");
    let run = finetune_cmd(tmp.path(), &data, &out, &nan_at_step_2("1e38"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("the last good checkpoint is"), "{err}");
    let last = err.trim().lines().last().unwrap();
    assert!(
        last.starts_with("error: step 2 of 8 failed") && last.contains("NaN"),
        "{err}"
    );
    assert!(!out.exists());
    let latest = std::fs::read_to_string(tmp.path().join("ft.train/latest")).unwrap();
    assert!(latest.starts_with("step-"));
    // What a run killed while saving leaves behind is removed by the next run.
    let half = tmp.path().join("ft.train/.step-2.tmp");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("trainable.safetensors"), b"partial").unwrap();
    let again = finetune_cmd(tmp.path(), &data, &out, &nan_at_step_2("1e38"))
        .arg("--resume")
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        !half.exists(),
        "the half-written checkpoint folder is still there"
    );
}

#[test]
fn refuses_an_unpruned_model_with_a_dropping_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path(), &[]);
    let plan = tmp.path().join("drop.json");
    std::fs::write(
        &plan,
        r#"{"strategy": "interlace", "ratio": 0.34, "num_layers": 6, "drop": [1, 4],
 "finetune": [2, 5], "freeze": [0, 3], "anchors": [], "kept": [0, 2, 3, 5]}"#,
    )
    .unwrap();
    let run = common::cli()
        .arg("finetune")
        .arg("--model")
        .arg(model_dir("tiny-b"))
        .arg("--plan")
        .arg(&plan)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(tmp.path().join("x"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("run `interlace prune` first"), "{err}");
}

#[test]
fn a_run_whose_schedule_changes_nothing_is_refused() {
    // One optimizer step with the default warm-up ratio: transformers' schedule gives that
    // step learning rate 0, so the "fine-tuned" output would be the input.
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path(), &[]);
    let out = tmp.path().join("ft");
    let run = finetune_cmd(tmp.path(), &data, &out, &["--batch-size", "8"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("warm-up of 1 step covers all 1 optimizer step")
            && err.contains("--warmup-ratio 0"),
        "{err}"
    );
    assert!(!out.exists() && !tmp.path().join("ft.train").exists());
    // Without the warm-up the same run trains.
    ok(finetune_cmd(
        tmp.path(),
        &data,
        &out,
        &["--batch-size", "8", "--warmup-ratio", "0"],
    )
    .output()
    .unwrap());
    assert_eq!(log_values(&out).len(), 1);
}

#[test]
fn a_run_that_skips_every_sample_fails_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path(), &[]);
    let out = tmp.path().join("ft");
    let run = finetune_cmd(
        tmp.path(),
        &data,
        &out,
        &["--batch-size", "2", "--max-length", "5"],
    )
    .output()
    .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    let last = err.trim().lines().last().unwrap();
    assert!(
        last.starts_with("error: every one of the 8 samples was skipped"),
        "{err}"
    );
    assert!(!out.exists() && !tmp.path().join("ft.train").exists());
}

#[test]
fn a_second_finetune_on_the_same_out_fails_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path(), &[]);
    let out = tmp.path().join("ft");
    // A live run (process 1 always exists) holds the lock on --out.
    std::fs::write(tmp.path().join(".ft.lock"), "1").unwrap();
    let run = finetune_cmd(tmp.path(), &data, &out, &["--batch-size", "2"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("another interlace run (process 1)"), "{err}");
    // Neither the output nor the checkpoint directory was touched.
    assert!(!out.exists() && !tmp.path().join("ft.train").exists());
}

/// `--resume` names what changed: a flag, or the data's content (a file rewritten in place
/// between the crash and the resume).
#[test]
fn resume_names_the_flag_or_the_data_that_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path(), &[]);
    let out = tmp.path().join("ft");
    let flags = nan_at_step_2;
    // Step 2 fails (NaN) after step 1's checkpoint was saved.
    let first = finetune_cmd(tmp.path(), &data, &out, &flags("1e38"))
        .output()
        .unwrap();
    assert!(!first.status.success());
    let resume = |lr: &'static str| {
        let mut f = flags(lr);
        f.push("--resume");
        let run = finetune_cmd(tmp.path(), &data, &out, &f).output().unwrap();
        assert!(!run.status.success());
        let err = String::from_utf8_lossy(&run.stderr).into_owned();
        err.trim().lines().last().unwrap().to_string()
    };
    let last = resume("1e-3");
    assert!(
        last.contains("other settings: --lr: 1e+38 then, 0.001 now;"),
        "{last}"
    );
    // Same flags, but one answer of the data rewritten in place.
    let text = std::fs::read_to_string(&data).unwrap();
    let changed = text.replacen("\"value\":\"", "\"value\":\"Changed: ", 1);
    assert_ne!(text, changed);
    std::fs::write(&data, changed).unwrap();
    let last = resume("1e38");
    assert!(
        last.contains("other settings: the data's content (a file was changed or regenerated)"),
        "{last}"
    );
}

/// A training log cut short (a crash while writing it) is reported on resume instead of
/// silently losing the steps it missed.
#[test]
fn resume_reports_a_training_log_cut_short() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path(), &[]);
    let out = tmp.path().join("ft");
    let flags = nan_at_step_2("1e38");
    // Step 1's checkpoint is saved, step 2 fails (NaN).
    assert!(!finetune_cmd(tmp.path(), &data, &out, &flags)
        .output()
        .unwrap()
        .status
        .success());
    let log = tmp.path().join("ft.train/training_log.jsonl");
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);
    std::fs::write(&log, "").unwrap();
    let mut again = flags.clone();
    again.push("--resume");
    let run = finetune_cmd(tmp.path(), &data, &out, &again)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("holds 0 of the 1 steps before the checkpoint"),
        "{err}"
    );
}

/// `--distill TEACHER` reaches the trainer: with the model itself as teacher and weight 1
/// the first step's loss is KL(p ‖ p) = 0 (cross-entropy alone is several nats). Later
/// steps are not: AdamW scales even rounding-noise gradients to full-size updates.
#[test]
fn distill_flag_trains_against_the_teacher() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path(), &[]);
    let out = tmp.path().join("ft");
    let teacher = model_dir("tiny-b");
    let teacher = teacher.to_str().unwrap();
    ok(finetune_cmd(
        tmp.path(),
        &data,
        &out,
        &[
            "--batch-size",
            "4",
            "--distill",
            teacher,
            "--distill-weight",
            "1",
            "--warmup-ratio",
            "0",
        ],
    )
    .output()
    .unwrap());
    let log = log_values(&out);
    assert_eq!(log.len(), 2);
    assert!(log[0].1.abs() < 1e-6, "step 1: loss {}", log[0].1);
    let plain = tmp.path().join("plain");
    ok(finetune_cmd(
        tmp.path(),
        &data,
        &plain,
        &["--batch-size", "4", "--warmup-ratio", "0"],
    )
    .output()
    .unwrap());
    assert!(log_values(&plain)[0].1 > 1.0);
    // The distillation flags need --distill.
    let res = finetune_cmd(
        tmp.path(),
        &data,
        &tmp.path().join("x"),
        &["--distill-weight", "1"],
    )
    .output()
    .unwrap();
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("--distill"));
}
