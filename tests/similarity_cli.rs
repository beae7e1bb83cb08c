//! `interlace similarity` on LLaVA-style data: per-sample scores equal the scores computed
//! from transformers' hidden states for the same prompts (fixture cases one_image and
//! two_images of tiny-b are exactly the calibration layout: images first, then the text).

mod common;

use std::process::Command;

use common::*;
use interlace::prune::SimilarityScores;

#[test]
fn similarity_command_matches_transformers_and_skips_bad_samples() {
    let tmp = tempfile::tempdir().unwrap();
    for img in ["photo_83x57.jpg", "tall_11x170.png", "gray_70x45.png"] {
        std::fs::copy(fixtures().join("images").join(img), tmp.path().join(img)).unwrap();
    }
    let data = serde_json::json!([
        {"image": "photo_83x57.jpg", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image in one sentence."},
            {"from": "gpt", "value": "A boat."}]},
        {"image": "missing.png", "conversations": [{"from": "human", "value": "<image>\nHi"}]},
        {"image": ["tall_11x170.png", "gray_70x45.png"], "conversations": [
            {"from": "human", "value": "<image>\n<image>\nWhat colors are they?"},
            {"from": "gpt", "value": "Grey."}]}
    ]);
    let data_path = tmp.path().join("data.json");
    std::fs::write(&data_path, data.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_interlace"))
        .args([
            "similarity",
            "--model",
            model_dir("tiny-b").to_str().unwrap(),
        ])
        .arg("--data")
        .arg(&data_path)
        .args(["--portion", "1.0", "--out"])
        .arg(tmp.path().join("sim.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("2 samples scored") && report.contains("1 skipped"),
        "{report}"
    );
    assert!(report.contains("missing.png"), "{report}");

    assert!(std::fs::read_to_string(tmp.path().join("sim.svg"))
        .unwrap()
        .contains("<svg"));
    let scores = SimilarityScores::read(tmp.path().join("sim.json")).unwrap();
    assert_eq!(scores.num_layers(), 6);
    for (s, case) in ["one_image", "two_images"].iter().enumerate() {
        assert_scores_match_case(&scores, s, "tiny-b", case);
    }
}

#[test]
fn similarity_command_rejects_bad_data() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, "this is not json").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_interlace"))
        .args([
            "similarity",
            "--model",
            model_dir("tiny-b").to_str().unwrap(),
        ])
        .arg("--data")
        .arg(&bad)
        .arg("--out")
        .arg(tmp.path().join("sim.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.json") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!tmp.path().join("sim.json").exists());
}
