//! `interlace latency --compare` on a dense and a pruned fixture: both rows, and the ideal
//! speed-ups computed from the checkpoints' parameter counts.

mod common;

use common::{load_tensors, model_dir};
use interlace::prune::surgery::prune_checkpoint;
use interlace::prune::Plan;

/// Parameters of the decoder layers, the vision tower and the (tied) head of a checkpoint.
fn counts(dir: &std::path::Path) -> (f64, f64, f64) {
    let mut tensors = std::collections::HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "safetensors") {
            tensors.extend(load_tensors(&p));
        }
    }
    let sum = |pred: &dyn Fn(&str) -> bool| -> f64 {
        tensors
            .iter()
            .filter(|(k, _)| pred(k))
            .map(|(_, t)| t.elem_count() as f64)
            .sum()
    };
    let head = match sum(&|k| k == "lm_head.weight") {
        0.0 => sum(&|k| k == "model.language_model.embed_tokens.weight"),
        h => h,
    };
    (
        sum(&|k| k.starts_with("model.language_model.layers.")),
        sum(&|k| k.starts_with("model.visual.")),
        head,
    )
}

#[test]
fn compare_reports_both_models_and_the_ideal_speed_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dense = model_dir("tiny-b");
    let pruned = tmp.path().join("pruned");
    let plan = Plan::from_roles("manual", 0.34, 6, vec![1, 4], vec![], vec![]).unwrap();
    prune_checkpoint(&dense, &plan, &pruned).unwrap();
    let out = common::cli()
        .arg("latency")
        .arg("--model")
        .arg(&dense)
        .arg("--compare")
        .arg(&pruned)
        .args([
            "--runs",
            "2",
            "--warmup",
            "0",
            "--new-tokens",
            "4",
            "--prompt",
            "Hello",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("| 6 |") && text.contains("| 4 |"), "{text}");
    // Decoding: per token, every decoder weight and the head once.
    let (d_dec, _, d_head) = counts(&dense);
    let (p_dec, _, p_head) = counts(&pruned);
    let ideal = (d_dec + d_head) / (p_dec + p_head);
    let want = format!("(ideal {ideal:.2}x)");
    assert!(text.contains(&want), "expected {want} in\n{text}");
}
