//! Pruning surgery: a pruned fixture computes what transformers computes for the same model
//! with the same decoder layers deleted (tests/fixtures/cases/tiny-b-drop-1-4, made by
//! tools/make_pruned_fixture.py, which also checks that transformers loads our output).

mod common;

use std::path::Path;
use std::process::Command;

use candle_core::{DType, Device};
use common::*;
use interlace::model::{CollectHidden, Model, ModelInputs};
use interlace::processor::Processor;

const PRUNED_CASES: &[&str] = &["one_image", "two_images_multiturn"];

fn write_plan(path: &Path, num_layers: usize, drop: &[usize]) {
    let kept: Vec<usize> = (0..num_layers).filter(|l| !drop.contains(l)).collect();
    let plan = serde_json::json!({
        "strategy": "manual", "ratio": drop.len() as f64 / num_layers as f64,
        "num_layers": num_layers, "drop": drop, "finetune": [], "freeze": kept,
        "anchors": [], "kept": kept,
    });
    std::fs::write(path, plan.to_string()).unwrap();
}

fn prune(model: &Path, plan: &Path, out: &Path) -> (bool, String) {
    let o = common::cli()
        .args(["prune", "--model"])
        .arg(model)
        .arg("--plan")
        .arg(plan)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Our model on the pruned checkpoint vs transformers with layers 1 and 4 deleted.
fn assert_matches_transformers_deleted_layers(dir: &Path) {
    let model = Model::load(dir, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(model.layers.len(), 4);
    let originals: Vec<usize> = model.layers.iter().map(|l| l.original_index).collect();
    assert_eq!(
        originals,
        vec![0, 2, 3, 5],
        "layers keep their original indices"
    );
    let processor = Processor::from_dir(dir).unwrap().with_image_backend(PIL);
    for &case in PRUNED_CASES {
        let (messages, images, add_gen) = case_conversation("tiny-b", case);
        let enc = processor.encode(&messages, &images, add_gen).unwrap();
        let inputs = ModelInputs::from_encoded(&enc, &Device::Cpu).unwrap();
        let mut seen = CollectHidden::default();
        let logits = model.forward(&inputs, Some(&mut seen)).unwrap();
        let expected = load_case("tiny-b-drop-1-4", case);
        assert_eq!(seen.0.len(), 5);
        for (i, h) in seen.0.iter().enumerate() {
            let err = rel_err(
                &h.squeeze(0).unwrap(),
                &expected[&format!("hidden_state.{i}")],
            );
            assert!(err < 1e-4, "{case}: hidden state {i} differs by {err:e}");
        }
        let err = rel_err(&logits, &expected["logits"]);
        assert!(err < 1e-4, "{case}: logits differ by {err:e}");
    }
}

#[test]
fn pruned_checkpoint_matches_transformers_with_layers_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    write_plan(&tmp.path().join("plan.json"), 6, &[1, 4]);
    let out = tmp.path().join("pruned");
    let (ok, err) = prune(&model_dir("tiny-b"), &tmp.path().join("plan.json"), &out);
    assert!(ok, "{err}");
    assert_matches_transformers_deleted_layers(&out);

    // Sharded like the input, with transformers' safetensors metadata; other files copied.
    let src_files: Vec<String> = std::fs::read_dir(model_dir("tiny-b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for f in &src_files {
        assert!(
            out.join(f).exists(),
            "{f} missing from the pruned checkpoint"
        );
    }
    for f in src_files.iter().filter(|f| f.ends_with(".safetensors")) {
        let bytes = std::fs::read(out.join(f)).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let md = meta.metadata().clone().unwrap_or_default();
        assert_eq!(md.get("format").map(String::as_str), Some("pt"), "{f}");
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["text_config"]["num_hidden_layers"], 4);
}

#[test]
fn pruning_a_pruned_checkpoint_composes() {
    let tmp = tempfile::tempdir().unwrap();
    // First drop original layer 1; the result's positions are original [0, 2, 3, 4, 5].
    write_plan(&tmp.path().join("a.json"), 6, &[1]);
    let once = tmp.path().join("once");
    assert!(prune(&model_dir("tiny-b"), &tmp.path().join("a.json"), &once).0);
    // Then drop position 3 of the pruned model, which is original layer 4.
    write_plan(&tmp.path().join("b.json"), 5, &[3]);
    let twice = tmp.path().join("twice");
    let (ok, err) = prune(&once, &tmp.path().join("b.json"), &twice);
    assert!(ok, "{err}");
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(twice.join("interlace_plan.json")).unwrap())
            .unwrap();
    assert_eq!(plan["num_layers"], 6);
    assert_eq!(plan["drop"], serde_json::json!([1, 4]));
    assert_eq!(plan["kept"], serde_json::json!([0, 2, 3, 5]));
    assert_matches_transformers_deleted_layers(&twice);
}

#[test]
fn bad_prune_requests_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    write_plan(&tmp.path().join("plan.json"), 4, &[1]);
    let (ok, err) = prune(
        &model_dir("tiny-b"),
        &tmp.path().join("plan.json"),
        &tmp.path().join("x"),
    );
    assert!(!ok);
    assert!(
        err.contains("plan is for a model with 4 decoder layers") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!tmp.path().join("x").exists());
    write_plan(&tmp.path().join("plan.json"), 6, &[1]);
    std::fs::create_dir(tmp.path().join("exists")).unwrap();
    let (ok, err) = prune(
        &model_dir("tiny-b"),
        &tmp.path().join("plan.json"),
        &tmp.path().join("exists"),
    );
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn the_source_models_training_records_are_not_copied() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("trained");
    std::fs::create_dir(&src).unwrap();
    for e in std::fs::read_dir(model_dir("tiny-b")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), src.join(e.file_name())).unwrap();
    }
    std::fs::write(
        src.join("training_log.jsonl"),
        "{\"step\":1,\"loss\":2.0}\n",
    )
    .unwrap();
    std::fs::write(src.join("loss.svg"), "<svg/>").unwrap();
    std::fs::write(src.join("README.md"), "model card").unwrap();
    write_plan(&tmp.path().join("plan.json"), 6, &[1, 4]);
    let out = tmp.path().join("pruned");
    let (ok, err) = prune(&src, &tmp.path().join("plan.json"), &out);
    assert!(ok, "{err}");
    assert!(!out.join("training_log.jsonl").exists());
    assert!(!out.join("loss.svg").exists());
    assert_eq!(
        std::fs::read_to_string(out.join("README.md")).unwrap(),
        "model card"
    );
    assert!(out.join("tokenizer.json").exists());
}

/// A second run on an --out that a live run is building fails at once, naming the first;
/// a killed run's lock and temporary directory are cleared by the next run.
#[test]
fn prune_locks_its_output_and_clears_what_killed_runs_left() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = tmp.path().join("plan.json");
    write_plan(&plan, 6, &[1]);
    let out = tmp.path().join("pruned");
    let lock = tmp.path().join(".pruned.lock");
    // A live holder (process 1 always exists).
    std::fs::write(&lock, "1").unwrap();
    let (ok, err) = prune(&model_dir("tiny-b"), &plan, &out);
    assert!(!ok);
    assert!(
        err.lines().count() == 1 && err.contains("another interlace run (process 1) is writing it"),
        "{err}"
    );
    assert!(!out.exists());
    // The holder died (kill -9) and left its lock and a half-written temporary directory.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(&lock, dead.to_string()).unwrap();
    let stale = tmp.path().join(format!(".pruned.tmp{dead}"));
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("model.safetensors"), b"half").unwrap();
    let (ok, err) = prune(&model_dir("tiny-b"), &plan, &out);
    assert!(ok, "{err}");
    assert!(err.contains("removed, left by an earlier run"), "{err}");
    assert!(out.join("config.json").exists());
    assert!(!stale.exists() && !lock.exists());
}
