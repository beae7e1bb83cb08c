//! Our scoring rules against VLMEvalKit's own functions on probe predictions
//! (tests/fixtures/vlmevalkit/verdicts.json, made by tools/make_vlmevalkit_fixtures.py from
//! VLMEvalKit's source: `can_infer`, `CountBenchQA.evaluate`, `POPE_rating`).

mod common;

use interlace::eval::metrics::{can_infer, count_correct_vlmevalkit};

fn verdicts() -> serde_json::Value {
    common::fixture_json("vlmevalkit/verdicts.json")
}

#[test]
fn multiple_choice_extraction_equals_vlmevalkit_can_infer() {
    let v = verdicts();
    let probes = v["mcq"].as_array().unwrap();
    assert!(probes.len() > 100);
    let mut wrong = Vec::new();
    for p in probes {
        let prediction = p["prediction"].as_str().unwrap();
        let choices: Vec<(char, String)> = p["choices"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, t)| (k.chars().next().unwrap(), t.as_str().unwrap().to_string()))
            .collect();
        let expected = p["option"].as_str().unwrap().chars().next().unwrap();
        // Under exact matching, nothing inferred is option "Z".
        let ours = can_infer(prediction, &choices).unwrap_or('Z');
        if ours != expected {
            wrong.push(format!(
                "{prediction:?} {choices:?}: ours {ours}, VLMEvalKit {expected}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn counting_rule_equals_countbenchqa() {
    for p in verdicts()["count"].as_array().unwrap() {
        let (pred, answer) = (
            p["prediction"].as_str().unwrap(),
            p["answer"].as_str().unwrap(),
        );
        assert_eq!(
            count_correct_vlmevalkit(pred, answer),
            p["correct"].as_bool().unwrap(),
            "{pred:?} vs {answer:?}"
        );
    }
}

/// POPE: rows whose category joins several splits count once per split, in Overall too
/// (the probe of the issue: VLMEvalKit's F1 differs from counting such a row once).
#[test]
fn pope_rating_equals_vlmevalkit() {
    use interlace::eval::report::score_benchmark;
    use interlace::eval::{BenchSpec, Benchmark};
    let v = verdicts();
    let pope = &v["pope"];
    let mut png = Vec::new();
    image::RgbImage::new(8, 8)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let b64 = interlace::eval::tsv::encode_base64(&png);
    let mut tsv = String::from("index\timage\tquestion\tanswer\tcategory\n");
    let mut outcomes = Vec::new();
    for (i, r) in pope["rows"].as_array().unwrap().iter().enumerate() {
        tsv.push_str(&format!(
            "{i}\t{b64}\tIs there a cat?\t{}\t{}\n",
            r["answer"].as_str().unwrap(),
            r["category"].as_str().unwrap()
        ));
        // The prediction VLMEvalKit's extraction turns into `extracted`.
        outcomes.push(Ok(r["extracted"].as_str().unwrap().to_string()));
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("POPE_probe.tsv");
    std::fs::write(&path, tsv).unwrap();
    let bench = Benchmark::open(&BenchSpec::new(&path), None).unwrap();
    let report = score_benchmark(&bench, &outcomes, 8);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    for (split, want) in pope["splits"].as_object().unwrap() {
        let key = |m: &str| {
            if split == "Overall" {
                m.to_string()
            } else {
                format!("{m} ({split})")
            }
        };
        for (ours, theirs) in [
            ("F1", "F1"),
            ("accuracy", "acc"),
            ("precision", "precision"),
            ("recall", "recall"),
        ] {
            let got = report.metrics[&key(ours)];
            let expected = want[theirs].as_f64().unwrap();
            assert!(
                close(got, expected),
                "{split} {ours}: ours {got}, VLMEvalKit {expected}"
            );
        }
    }
    assert!(close(
        report.score.unwrap(),
        pope["splits"]["Overall"]["F1"].as_f64().unwrap()
    ));
}

/// Predictions are scored as they come back from VLMEvalKit's xlsx file: an NA-like answer
/// ("None", "NA", "", ...) is the text "nan" to its evaluators.
#[test]
fn predictions_are_scored_as_after_vlmevalkit_xlsx_round_trip() {
    use interlace::eval::benchmarks::vlmevalkit_prediction;
    let v = verdicts();
    let probes = v["xlsx_round_trip"].as_array().unwrap();
    assert!(probes.len() > 20);
    for p in probes {
        let written = p["written"].as_str().unwrap();
        assert_eq!(
            vlmevalkit_prediction(written),
            p["scored"].as_str().unwrap(),
            "{written:?}"
        );
    }
}
