//! Benchmark scoring without a model: canned predictions through `score_benchmark`, checked
//! against VLMEvalKit's definitions (circular evaluation of MMBench, POPE's F1 headline,
//! relative performance of docs/SPEC.md).

use std::collections::BTreeMap;
use std::path::Path;

use interlace::eval::benchmarks::{BenchSpec, Benchmark};
use interlace::eval::report::{relative_performance, score_benchmark, EvalReport};

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Any cell longer than 64 characters is an image for the reader; these are never decoded.
fn img() -> String {
    "A".repeat(100)
}

/// VLMEvalKit `mcq_circular_eval`: rows whose index modulo 1e6 equals a main row's index are
/// rotations of that question, which is right only if every rotation is right; the score is
/// over questions. A question with a malformed rotation is not scored.
#[test]
fn mmbench_is_scored_circularly() {
    let tmp = tempfile::tempdir().unwrap();
    let i = img();
    let rows = [
        format!("1\tq1\tx\ty\tz\tw\tA\tcat1\t{i}"),
        "1000001\tq1\ty\tz\tw\tx\tB\tcat1\t1".to_string(),
        "2000001\tq1\tz\tw\tx\ty\tC\tcat1\t1".to_string(),
        format!("2\tq2\tx\ty\tz\tw\tB\tcat2\t{i}"),
        "1000002\tq2\ty\tz\tw\tx\tC\tcat2\t2".to_string(),
        format!("3\tq3\tx\ty\tz\tw\tA\tcat2\t{i}"),
        "1000003\tq3\ty\tz\tw\tx\tE\tcat2\t3".to_string(),
        format!("4\tq4\tx\ty\tz\tw\tD\tcat1\t{i}"),
    ];
    let text = format!(
        "index\tquestion\tA\tB\tC\tD\tanswer\tcategory\timage\n{}\n",
        rows.join("\n")
    );
    let path = write(tmp.path(), "MMBench_DEV_EN.tsv", &text);
    let bench = Benchmark::open(&BenchSpec::new(&path), None).unwrap();
    assert!(bench.circular);
    let preds = ["A", "B", "C", "B", "A", "A", "A", "The answer is D."];
    let outcomes: Vec<Result<String, String>> = preds.iter().map(|p| Ok(p.to_string())).collect();
    let r = score_benchmark(&bench, &outcomes, 32);
    assert_eq!(r.metric, "circular accuracy");
    assert_eq!(r.malformed, 1);
    // Questions 1 and 4 right, 2 wrong (its rotation answered A), 3 not scored.
    assert_eq!(r.scored, 3);
    assert!((r.score.unwrap() - 200.0 / 3.0).abs() < 1e-9);
    // Rotations counted one by one: 6 of the 7 well-formed rows are right.
    assert!((r.metrics["row accuracy"] - 600.0 / 7.0).abs() < 1e-9);
    assert_eq!(r.categories["cat1"].count, 2);
    assert_eq!(r.categories["cat1"].score, 100.0);
    assert_eq!(r.categories["cat2"].count, 1);
    assert_eq!(r.categories["cat2"].score, 0.0);
    assert_eq!(r.results[1].group.as_deref(), Some("1"));
}

/// VLMEvalKit's other circular triggers ("circular" or "MMCR" in the name) and its `g_index`
/// column: when present it, not index modulo 1e6, names each row's group.
#[test]
fn circular_by_name_and_g_index() {
    let tmp = tempfile::tempdir().unwrap();
    let i = img();
    // Two questions, 10 (rows 10, 11, 12) and 20 (rows 20, 21), grouped by g_index only.
    let rows = [
        format!("10\t10\tq1\tx\ty\tA\t{i}"),
        "11\t10\tq1\ty\tx\tB\t10".to_string(),
        "12\t10\tq1\tx\ty\tA\t10".to_string(),
        format!("20\t20\tq2\tx\ty\tB\t{i}"),
        "21\t20\tq2\ty\tx\tA\t20".to_string(),
    ];
    let text = format!(
        "index\tg_index\tquestion\tA\tB\tanswer\timage\n{}\n",
        rows.join("\n")
    );
    // Row 21 is answered wrong: question 20 fails, question 10 holds.
    let preds = ["A", "B", "A", "B", "B"];
    let outcomes: Vec<Result<String, String>> = preds.iter().map(|p| Ok(p.to_string())).collect();
    for name in ["BLINK_circular.tsv", "MMCR.tsv"] {
        let path = write(tmp.path(), name, &text);
        let bench = Benchmark::open(&BenchSpec::new(&path), None).unwrap();
        assert!(bench.circular, "{name}");
        let r = score_benchmark(&bench, &outcomes, 32);
        assert_eq!(r.scored, 2, "{name}");
        assert!(
            (r.score.unwrap() - 50.0).abs() < 1e-9,
            "{name}: {:?}",
            r.score
        );
        assert_eq!(r.results[2].group.as_deref(), Some("10"));
    }
    // Without a trigger in the name: every row on its own, 4 of 5 right.
    let path = write(tmp.path(), "Plain.tsv", &text);
    let bench = Benchmark::open(&BenchSpec::new(&path), None).unwrap();
    assert!(!bench.circular);
    let r = score_benchmark(&bench, &outcomes, 32);
    assert!((r.score.unwrap() - 80.0).abs() < 1e-9);
}

/// POPE (VLMEvalKit `POPE_rating`): the headline is F1 with "yes" positive; accuracy,
/// precision and recall are reported too; a failed row is counted, not scored.
#[test]
fn pope_headline_is_f1() {
    let tmp = tempfile::tempdir().unwrap();
    let i = img();
    let mut text = "index\tquestion\tanswer\tcategory\timage\n".to_string();
    // TP 3, FP 1, FN 2, TN 4 (as in the metric's worked example), plus one unreadable row.
    let cases = [
        ("yes", "Yes"),
        ("yes", "yes."),
        ("yes", "Yes, there is."),
        ("no", "Yes"),
        ("yes", "No"),
        ("yes", "I am not sure"),
        ("no", "No"),
        ("no", "no"),
        ("no", "No, there is not."),
        ("no", "NO"),
        ("no", "-"),
    ];
    for (k, (answer, _)) in cases.iter().enumerate() {
        text.push_str(&format!(
            "{}\tIs there a thing?\t{answer}\tpopular\t{i}\n",
            k + 1
        ));
    }
    let path = write(tmp.path(), "POPE.tsv", &text);
    let bench = Benchmark::open(&BenchSpec::new(&path), None).unwrap();
    let mut outcomes: Vec<Result<String, String>> =
        cases.iter().map(|(_, p)| Ok(p.to_string())).collect();
    outcomes[10] = Err("bad image".to_string());
    let r = score_benchmark(&bench, &outcomes, 32);
    assert_eq!((r.metric.as_str(), r.malformed, r.scored), ("F1", 1, 10));
    assert!((r.score.unwrap() - 200.0 / 3.0).abs() < 1e-9);
    assert!((r.metrics["accuracy"] - 70.0).abs() < 1e-9);
    assert!((r.metrics["precision"] - 75.0).abs() < 1e-9);
    assert!((r.metrics["recall"] - 60.0).abs() < 1e-9);
    assert_eq!(r.results[5].extracted.as_deref(), Some("Unknown"));
    assert_eq!(r.results[10].error.as_deref(), Some("bad image"));
}

/// docs/SPEC.md: relative performance = per-benchmark score ÷ baseline score, averaged with equal
/// weight. E.g. 40/50 = 0.8 and 90/100 = 0.9 give 0.85.
#[test]
fn relative_performance_is_the_mean_ratio() {
    let tmp = tempfile::tempdir().unwrap();
    let i = img();
    let path = write(
        tmp.path(),
        "custom.tsv",
        &format!("index\tquestion\tanswer\timage\n1\tq\tcat\t{i}\n"),
    );
    let bench = Benchmark::open(&BenchSpec::new(&path), None).unwrap();
    let mut b = score_benchmark(&bench, &[Ok("cat".into())], 32);
    let mut report = EvalReport {
        model: "m".into(),
        benchmarks: vec![],
        relative: None,
        stopped: None,
        protocol: None,
    };
    for (name, score) in [("a", 40.0), ("b", 90.0), ("c", 10.0), ("d", 5.0)] {
        b.name = name.into();
        b.score = Some(score);
        report.benchmarks.push(b.clone());
    }
    let base: BTreeMap<String, f64> = [("a", 50.0), ("b", 100.0), ("c", 0.0)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let rel = relative_performance(&report, "base.json", &base);
    assert!((rel.ratios["a"] - 0.8).abs() < 1e-12);
    assert!((rel.ratios["b"] - 0.9).abs() < 1e-12);
    assert!((rel.mean.unwrap() - 0.85).abs() < 1e-12);
    assert_eq!(rel.missing, ["c", "d"]);
    report.set_baseline("base.json", &base);
    let md = report.to_markdown();
    assert!(
        md.contains("| a | vqa | VQA accuracy | 40.00 | 1 | 1 | 0 | 50.00 | 80.0 % |"),
        "{md}"
    );
    assert!(md.contains("**85.0 %**"), "{md}");
    // Round trip through the file format.
    let out = tmp.path().join("r.json");
    report.write(&out).unwrap();
    assert_eq!(EvalReport::read(&out).unwrap(), report);
    assert!(tmp.path().join("r.md").exists());
}
