//! `interlace similarity` on LLaVA-style data: per-sample scores equal the scores computed
//! from transformers' hidden states for the same prompts (fixture cases one_image and
//! two_images of tiny-b are exactly the calibration layout: images first, then the text).

mod common;

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
    // One sample per pass, all three in one packed pass, two workers taking one sample at
    // a time (the scores are added in row order whichever finishes first), and the
    // defaults (one worker per core; passes of 2 with two cores).
    let settings: [&[&str]; 4] = [
        &["--batch", "1", "--workers", "1"],
        &["--batch", "3", "--workers", "1"],
        &["--batch", "1", "--workers", "2"],
        &[],
    ];
    for (i, setting) in settings.iter().enumerate() {
        let sim = tmp.path().join(format!("sim-{i}.json"));
        let out = common::cli()
            .args([
                "similarity",
                "--model",
                model_dir("tiny-b").to_str().unwrap(),
            ])
            .arg("--data")
            .arg(&data_path)
            .args([
                "--portion",
                "1.0",
                "--device",
                "cpu",
                // The fixture cases were preprocessed by the PIL image processor.
                "--image-backend",
                "pil",
            ])
            .args(*setting)
            .arg("--out")
            .arg(&sim)
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
        if setting.contains(&"2") {
            assert!(report.contains("2 worker(s)"), "{report}");
        }

        assert!(std::fs::read_to_string(sim.with_extension("svg"))
            .unwrap()
            .contains("<svg"));
        let scores = SimilarityScores::read(&sim).unwrap();
        assert_eq!(scores.num_layers(), 6);
        for (s, case) in ["one_image", "two_images"].iter().enumerate() {
            assert_scores_match_case(&scores, s, "tiny-b", case);
        }
    }
}

#[test]
fn similarity_command_rejects_bad_data() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, "this is not json").unwrap();
    let out = common::cli()
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
    common::assert_one_line_error(&out, "bad.json");
    assert!(!tmp.path().join("sim.json").exists());
}

/// The FineVision fixture (two subsets, Parquet): `--samples 4` takes 2 rows of each subset
/// (rows chosen as tools/make_parquet_fixtures.py's own implementation of the rule says),
/// one with an undecodable image and one with a malformed turn among them: both are
/// skipped and counted, the others scored.
#[test]
fn similarity_command_reads_finevision_and_skips_bad_rows() {
    let exp: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("data/finevision_expected.json")).unwrap(),
    )
    .unwrap();
    let choice = &exp["choices"][0];
    assert_eq!(choice["samples"], 4);
    assert_eq!(choice["seed"], 42);
    let (mut scored, mut skipped) = (0, 0);
    for source in exp["sources"].as_array().unwrap() {
        let name = source["name"].as_str().unwrap();
        let rows: Vec<&serde_json::Value> = exp["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["file"].as_str().unwrap().starts_with(&format!("{name}/")))
            .collect();
        for i in choice["rows"][name].as_array().unwrap() {
            let row = rows[i.as_u64().unwrap() as usize];
            let bad_image = row["images"]
                .as_array()
                .unwrap()
                .iter()
                .any(|im| im["decodable"] == false);
            if bad_image || row["malformed"] == true {
                skipped += 1;
            } else {
                scored += 1;
            }
        }
    }
    assert!(scored > 0 && skipped > 0, "the fixture must exercise both");

    let tmp = tempfile::tempdir().unwrap();
    let out = common::cli()
        .args([
            "similarity",
            "--model",
            model_dir("tiny-a").to_str().unwrap(),
            "--data",
            fixtures().join("data/finevision").to_str().unwrap(),
            "--samples",
            "4",
            "--out",
        ])
        .arg(tmp.path().join("sim.json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let total = exp["rows"].as_array().unwrap().len();
    assert!(
        stderr.contains(&format!("4 of {total} samples chosen from 2 sources")),
        "{stderr}"
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("{scored} samples scored"))
            && report.contains(&format!("{skipped} skipped")),
        "{report}"
    );
    assert!(report.contains("broken.png"), "{report}");
    let scores = SimilarityScores::read(tmp.path().join("sim.json")).unwrap();
    assert_eq!(scores.num_samples(), scored);
}

#[test]
fn similarity_command_rejects_corrupt_parquet() {
    let tmp = tempfile::tempdir().unwrap();
    let good =
        std::fs::read(fixtures().join("data/finevision/subset_b/train-00000-of-00001.parquet"))
            .unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("part-0.parquet"), &good[..good.len() - 100]).unwrap();
    let out = common::cli()
        .args([
            "similarity",
            "--model",
            model_dir("tiny-a").to_str().unwrap(),
            "--data",
        ])
        .arg(&data)
        .arg("--out")
        .arg(tmp.path().join("sim.json"))
        .output()
        .unwrap();
    common::assert_one_line_error(&out, "part-0.parquet");
    assert!(!tmp.path().join("sim.json").exists());
}

/// A sample longer than --max-length is skipped and counted, not run (memory stays bounded
/// by the flag whatever the data holds).
#[test]
fn similarity_skips_samples_longer_than_max_length() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("images/photo_83x57.jpg"),
        tmp.path().join("photo_83x57.jpg"),
    )
    .unwrap();
    let long = "word ".repeat(300);
    let data = serde_json::json!([
        {"image": "photo_83x57.jpg", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image in one sentence."},
            {"from": "gpt", "value": "A boat."}]},
        {"conversations": [{"from": "human", "value": long}, {"from": "gpt", "value": "Ok."}]}
    ]);
    let data_path = tmp.path().join("data.json");
    std::fs::write(&data_path, data.to_string()).unwrap();
    let sim = tmp.path().join("sim.json");
    let out = common::cli()
        .args([
            "similarity",
            "--model",
            model_dir("tiny-b").to_str().unwrap(),
        ])
        .arg("--data")
        .arg(&data_path)
        .args(["--portion", "1.0", "--max-length", "500", "--out"])
        .arg(&sim)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("1 samples scored")
            && report.contains("1 skipped")
            && report.contains("more than the 500 that --max-length allows"),
        "{report}"
    );
}
