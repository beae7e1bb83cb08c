//! Our scoring rules against VLMEvalKit's own functions on probe predictions
//! (tests/fixtures/vlmevalkit/verdicts.json and predictions_file.json, made by
//! tools/make_vlmevalkit_fixtures.py from VLMEvalKit's source: `can_infer`,
//! `CountBenchQA.evaluate`, `POPE_rating`, `mcq_circular_eval`, and its `dump`/`load` of
//! predictions files).

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

/// The POPE probe of verdicts.json as a benchmark file (in a temporary directory kept alive
/// by the first value) and the answers VLMEvalKit's extraction turns into its `extracted`.
fn pope_probe(
    pope: &serde_json::Value,
) -> (
    tempfile::TempDir,
    interlace::eval::Benchmark,
    Vec<Result<String, String>>,
) {
    use interlace::eval::{BenchSpec, Benchmark};
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
        outcomes.push(Ok(r["extracted"].as_str().unwrap().to_string()));
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("POPE_probe.tsv");
    std::fs::write(&path, tsv).unwrap();
    let bench = Benchmark::open(&BenchSpec::new(&path), None).unwrap();
    (tmp, bench, outcomes)
}

/// POPE: rows whose category joins several splits count once per split, in Overall too
/// (the probe of the issue: VLMEvalKit's F1 differs from counting such a row once).
#[test]
fn pope_rating_equals_vlmevalkit() {
    let v = verdicts();
    let pope = &v["pope"];
    let (_tmp, bench, outcomes) = pope_probe(pope);
    let report = interlace::eval::report::score_benchmark(&bench, &outcomes, 8);
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

/// `interlace eval --predictions FILE`, its report read back.
fn score_predictions(file: &std::path::Path) -> interlace::eval::report::EvalReport {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report.json");
    let run = common::cli()
        .args(["eval", "--predictions"])
        .arg(file)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    interlace::eval::report::EvalReport::read(&out).unwrap()
}

/// A probe file of tests/fixtures/vlmevalkit.
fn probe_file(name: &str) -> std::path::PathBuf {
    common::fixtures().join("vlmevalkit").join(name)
}

fn predictions_file() -> serde_json::Value {
    common::fixture_json("vlmevalkit/predictions_file.json")
}

/// A predictions file written by VLMEvalKit's own `dump` (.xlsx through xlsxwriter, .tsv
/// quoted), read as its `load` reads it: every cell's `str()`, NaN being "nan". The probe
/// column mixes the kinds of cell a spreadsheet holds (numbers, booleans, escaped control
/// characters, NA-like strings, empty cells).
#[test]
fn predictions_files_read_as_vlmevalkit_loads_them() {
    use interlace::eval::benchmarks::vlmevalkit_prediction;
    use interlace::eval::tsv::Table;
    let v = predictions_file();
    for ext in ["xlsx", "tsv"] {
        let want = &v[ext];
        let path = probe_file(want["file"].as_str().unwrap());
        let table = Table::read(&path).unwrap();
        let columns: Vec<&str> = want["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(table.header, columns, "{ext}");
        let rows = want["cells"].as_array().unwrap();
        assert_eq!(table.records.len(), rows.len(), "{ext}");
        let mut wrong = Vec::new();
        for (record, row) in table.records.iter().zip(rows) {
            assert!(record.problem.is_none(), "{ext}: {:?}", record.problem);
            for ((cell, want), column) in record
                .cells
                .iter()
                .zip(row.as_array().unwrap())
                .zip(&columns)
            {
                let ours = table.cell_text(cell).unwrap();
                // NaN cells: pandas' NA strings and empty cells are NaN, str() "nan".
                let ours = vlmevalkit_prediction(&ours);
                if ours != want.as_str().unwrap() {
                    wrong.push(format!(
                        "{ext} line {} {column}: ours {ours:?}, VLMEvalKit {want}",
                        record.line
                    ));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "{} cells differ:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }
}

/// `eval --predictions` on the same files: each row's option and verdict are VLMEvalKit's
/// (`build_choices` + `can_infer` on the loaded row, exact matching).
#[test]
fn eval_predictions_scores_xlsx_and_tsv_as_vlmevalkit() {
    let v = predictions_file();
    for ext in ["xlsx", "tsv"] {
        let want = &v[ext];
        let path = probe_file(want["file"].as_str().unwrap());
        let report = score_predictions(&path);
        let bench = &report.benchmarks[0];
        assert_eq!(bench.name, "AI2D_TEST", "{ext}: MODEL_DATASET name");
        let options = want["options"].as_array().unwrap();
        let correct = want["correct"].as_array().unwrap();
        assert_eq!(bench.results.len(), options.len());
        assert_eq!(bench.malformed, 0, "{ext}");
        for ((r, option), hit) in bench.results.iter().zip(options).zip(correct) {
            // No option found: VLMEvalKit's 'Z', our absent `extracted`.
            let ours = r.extracted.as_deref().unwrap_or("Z");
            assert_eq!(ours, option.as_str().unwrap(), "{ext} row {}", r.index);
            assert_eq!(r.correct, hit.as_bool(), "{ext} row {}", r.index);
        }
        let hits = correct.iter().filter(|c| c.as_bool().unwrap()).count();
        let want_score = 100.0 * hits as f64 / correct.len() as f64;
        assert!((bench.score.unwrap() - want_score).abs() < 1e-9, "{ext}");
    }
}

/// Circular evaluation against VLMEvalKit's `mcq_circular_eval` (exact matching): a question
/// counts when every rotation is right, grouped by index modulo 1 000 000 (MMBench) or by
/// the `g_index` column. Each question is its own category, so the category means are the
/// per-question hits.
#[test]
fn circular_evaluation_equals_vlmevalkit_mcq_circular_eval() {
    let v = predictions_file();
    let probes = v["circular"].as_array().unwrap();
    assert_eq!(probes.len(), 2);
    for probe in probes {
        let file = probe["file"].as_str().unwrap();
        let report = score_predictions(&probe_file(file));
        let bench = &report.benchmarks[0];
        assert_eq!(bench.metric, "circular accuracy", "{file}");
        let hits = probe["hits"].as_object().unwrap();
        assert_eq!(bench.scored, hits.len(), "{file}");
        for (question, hit) in hits {
            let ours = bench.categories[question].score;
            assert_eq!(ours, 100.0 * hit.as_f64().unwrap(), "{file} {question}");
        }
        let want = 100.0 * probe["accuracy"].as_f64().unwrap();
        assert!(
            (bench.score.unwrap() - want).abs() < 1e-9,
            "{file}: {:?} vs {want}",
            bench.score
        );
    }
}

/// The score of summed unit counts (`score_units`, what `run --compare`'s intervals and
/// tests resample).
fn score_from_units(
    bench: &interlace::eval::Benchmark,
    report: &interlace::eval::BenchReport,
) -> Option<f64> {
    let (agg, units) = interlace::eval::report::score_units(bench, report).unwrap();
    let mut sum = [0.0; 4];
    for u in &units {
        for (s, x) in sum.iter_mut().zip(u) {
            *s += x;
        }
    }
    agg.score(&sum)
}

/// Re-judged unit by unit, the answers of a report add up to VLMEvalKit's score: the
/// circular probes' accuracy (units are questions), AI2D's accuracy (rows) and POPE's F1
/// with rows counted once per split.
#[test]
fn score_units_add_up_to_the_vlmevalkit_scores() {
    use interlace::eval::{BenchSpec, Benchmark};
    let v = predictions_file();
    let mut cases: Vec<(std::path::PathBuf, f64)> = v["circular"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                probe_file(p["file"].as_str().unwrap()),
                100.0 * p["accuracy"].as_f64().unwrap(),
            )
        })
        .collect();
    let ai2d = &v["tsv"];
    let correct = ai2d["correct"].as_array().unwrap();
    let hits = correct.iter().filter(|c| c.as_bool().unwrap()).count();
    cases.push((
        probe_file(ai2d["file"].as_str().unwrap()),
        100.0 * hits as f64 / correct.len() as f64,
    ));
    for (path, want) in cases {
        let report = score_predictions(&path);
        let bench = Benchmark::open_predictions(&BenchSpec::new(&path), None).unwrap();
        let got = score_from_units(&bench, &report.benchmarks[0]).unwrap();
        assert!(
            (got - want).abs() < 1e-9,
            "{}: {got} vs {want}",
            path.display()
        );
    }

    // POPE: the probe of pope_rating_equals_vlmevalkit, as a report.
    let v = verdicts();
    let pope = &v["pope"];
    let (_tmp, bench, outcomes) = pope_probe(pope);
    let report = interlace::eval::report::score_benchmark(&bench, &outcomes, 8);
    let got = score_from_units(&bench, &report).unwrap();
    let want = pope["splits"]["Overall"]["F1"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-9, "POPE: {got} vs {want}");
}
