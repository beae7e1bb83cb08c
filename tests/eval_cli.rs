//! `interlace eval` end to end on the fixture benchmarks of tests/fixtures/bench (made by
//! tools/make_bench_fixtures.py) with the tiny random model tiny-a. Its answers are
//! garbage, so the tests check structure: counts, which rows are malformed and why, that
//! every verdict is what the metric functions say of the prediction, the prompts, the
//! baseline ratios, and the report files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{fixtures, interlace, model_dir};
use interlace::eval::benchmarks::{BenchSpec, Benchmark, Task};
use interlace::eval::metrics::{can_infer, vqa_score, yes_no_metrics, yorn_extraction, YesNo};
use interlace::eval::report::EvalReport;
use serde_json::Value;

fn bench_file(name: &str) -> PathBuf {
    fixtures().join("bench").join(format!("{name}.tsv"))
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("bench/expected.json")).unwrap())
        .unwrap()
}

fn eval_fixtures(out: &Path, extra: &[&str]) -> Output {
    let model = model_dir("tiny-a");
    let mut args = vec!["eval", "--model", model.to_str().unwrap()];
    let files: Vec<String> = ["mcq_fixture", "POPE_fixture", "vqa_fixture"]
        .iter()
        .map(|n| bench_file(n).display().to_string())
        .collect();
    for f in &files {
        args.extend(["--bench", f.as_str()]);
    }
    args.extend(["--max-new-tokens", "3"]);
    args.extend(extra);
    args.push("--out");
    interlace(&args, &[out])
}

#[test]
fn eval_reports_every_row_and_scores_with_the_metric_functions() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nested/report.json");
    // A baseline that has two of the three benchmarks.
    let baseline = tmp.path().join("baseline.json");
    std::fs::write(
        &baseline,
        r#"{"benchmarks": [{"name": "mcq_fixture", "score": 50.0},
                           {"name": "POPE_fixture", "score": 80.0},
                           {"name": "other", "score": 10.0}]}"#,
    )
    .unwrap();
    let res = eval_fixtures(&out, &["--baseline", baseline.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(stdout.contains("relative performance"), "{stdout}");
    // Progress lines (stderr is not a terminal here) report rows per second.
    assert!(
        stderr.contains("rows, ") && stderr.contains("/s"),
        "{stderr}"
    );

    // The JSON is valid and reads back as the library's report type.
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let report = EvalReport::read(&out).unwrap();
    assert_eq!(report.benchmarks.len(), 3);
    assert_eq!(json["benchmarks"].as_array().unwrap().len(), 3);

    let expected = expected();
    for b in &report.benchmarks {
        let exp = &expected[&b.name];
        let task = Task::parse(exp["task"].as_str().unwrap()).unwrap();
        assert_eq!(b.task, task, "{}", b.name);
        assert_eq!(b.rows, exp["rows"].as_u64().unwrap() as usize, "{}", b.name);
        assert_eq!(b.max_new_tokens, 3);
        let malformed = exp["malformed"].as_object().unwrap();
        assert_eq!(b.malformed, malformed.len(), "{}", b.name);
        assert_eq!(b.scored, b.rows - b.malformed, "{}", b.name);
        assert_eq!(b.results.len(), b.rows);
        for r in &b.results {
            match malformed.get(&r.index) {
                Some(why) => {
                    let err = r.error.as_deref().unwrap_or_else(|| {
                        panic!("{} row {} should be malformed", b.name, r.index)
                    });
                    assert!(err.contains(why.as_str().unwrap()), "{}: {err}", b.name);
                    assert!(r.prediction.is_none() && r.score.is_none());
                }
                None => {
                    assert!(
                        r.error.is_none(),
                        "{} row {}: {:?}",
                        b.name,
                        r.index,
                        r.error
                    );
                    assert!(r.prediction.is_some() && r.score.is_some());
                }
            }
        }

        // Every verdict is what the metric functions say; the score is their mean.
        let bench = Benchmark::open(&BenchSpec::new(bench_file(&b.name)), None).unwrap();
        let mut row_scores = Vec::new();
        let mut pairs = Vec::new();
        for (row, r) in bench.rows.iter().zip(&b.results) {
            assert_eq!(row.index, r.index);
            let (Ok(item), Some(pred)) = (&row.item, &r.prediction) else {
                continue;
            };
            assert_eq!(r.prompt.as_deref(), Some(item.prompt.as_str()));
            let want = match b.task {
                Task::Mcq => {
                    let answer = item.answer.trim().chars().next().unwrap();
                    let got = can_infer(pred.trim(), &item.options);
                    f64::from(u8::from(got == Some(answer)))
                }
                Task::Yorn => {
                    let truth = YesNo::parse_reference(&item.answer).unwrap();
                    let got = yorn_extraction(pred);
                    assert_eq!(r.extracted.as_deref(), Some(got.as_str()));
                    pairs.push((truth, got));
                    f64::from(u8::from(got == truth))
                }
                Task::Vqa => vqa_score(pred, &item.references),
                other => panic!("unexpected task {other}"),
            };
            assert_eq!(r.score, Some(want), "{} row {}", b.name, r.index);
            row_scores.push(want);
        }
        let mean = 100.0 * row_scores.iter().sum::<f64>() / row_scores.len() as f64;
        if b.name == "POPE_fixture" {
            assert_eq!(b.metric, "F1");
            let m = yes_no_metrics(&pairs).unwrap();
            assert_eq!(b.score, Some(100.0 * m.f1));
            assert!((b.metrics["accuracy"] - mean).abs() < 1e-9);
            // "adversarial,random" counts for both categories.
            assert_eq!(b.categories["adversarial"].count, 2);
            assert_eq!(b.categories["random"].count, 1);
        } else {
            assert!((b.score.unwrap() - mean).abs() < 1e-9, "{}", b.name);
        }
    }

    // Images: shared (row 2 refers to row 1), several per row, from paths.
    let mcq = Benchmark::open(&BenchSpec::new(bench_file("mcq_fixture")), None).unwrap();
    for (name, exp) in expected.as_object().unwrap() {
        let bench = Benchmark::open(&BenchSpec::new(bench_file(name)), None).unwrap();
        for (index, n) in exp["images"].as_object().unwrap() {
            let row = bench.rows.iter().find(|r| &r.index == index).unwrap();
            assert_eq!(
                bench.load_images(row).unwrap().len(),
                n.as_u64().unwrap() as usize,
                "{name} row {index}"
            );
        }
        let found_when_read: Vec<&str> = exp["found_when_read"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for row in &bench.rows {
            assert_eq!(
                row.item.is_err(),
                found_when_read.contains(&row.index.as_str()),
                "{name} row {}",
                row.index
            );
        }
    }
    let r1 = &mcq.rows[0];
    let r2 = &mcq.rows[1];
    assert_eq!(
        mcq.load_images(r1).unwrap()[0].to_rgb8().into_raw(),
        mcq.load_images(r2).unwrap()[0].to_rgb8().into_raw()
    );

    // The prompt Qwen3-VL gets in VLMEvalKit (vlmeval/vlm/qwen3_vl/prompt.py).
    let first = &report.benchmarks[0].results[0];
    assert_eq!(
        first.prompt.as_deref(),
        Some(
            "Hint: Look at the whole image.\nQuestion: What colour dominates the picture?\n\
             Options:\nA. red\nB. green\nC. blue\nD. grey\nAnswer with the option letter only."
        )
    );
    let pope = &report.benchmarks[1].results[0];
    assert_eq!(
        pope.prompt.as_deref(),
        Some("Is there a dog in the image? Please answer yes or no.")
    );

    // Relative performance: score ÷ baseline per benchmark in both, equal-weight mean.
    let rel = report.relative.as_ref().unwrap();
    let mcq_ratio = report.score("mcq_fixture").unwrap() / 50.0;
    let pope_ratio = report.score("POPE_fixture").unwrap() / 80.0;
    assert_eq!(rel.ratios["mcq_fixture"], mcq_ratio);
    assert_eq!(rel.ratios["POPE_fixture"], pope_ratio);
    assert_eq!(rel.mean, Some((mcq_ratio + pope_ratio) / 2.0));
    assert_eq!(rel.missing, ["vqa_fixture"]);

    // The Markdown summary next to it: a table row per benchmark, categories, malformed rows.
    let md = std::fs::read_to_string(tmp.path().join("nested/report.md")).unwrap();
    assert!(md.starts_with("# Evaluation of"), "{md}");
    assert!(md.contains("| benchmark | task | metric | score |"), "{md}");
    for name in ["mcq_fixture", "POPE_fixture", "vqa_fixture"] {
        assert!(md.contains(&format!("| {name} |")), "{md}");
        assert!(md.contains(&format!("## {name}")), "{md}");
    }
    assert!(md.contains("| category | score | n |"), "{md}");
    assert!(md.contains("Relative performance against"), "{md}");
    assert!(
        md.contains("- index 4 (line 5): answer 'E' is not one of the row's options (A, B)"),
        "{md}"
    );
    let table_lines = md.lines().filter(|l| l.starts_with('|')).count();
    assert!(table_lines > 10, "{md}");
}

#[test]
fn eval_limit_and_task_override() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report.json");
    let model = model_dir("tiny-a");
    // The VQA fixture scored as counting, first two rows only.
    let spec = format!("{}:count", bench_file("vqa_fixture").display());
    let res = interlace(
        &[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--bench",
            &spec,
            "--limit",
            "2",
            "--max-new-tokens",
            "2",
            "--out",
        ],
        &[&out],
    );
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let report = EvalReport::read(&out).unwrap();
    let b = &report.benchmarks[0];
    assert_eq!((b.task, b.rows), (Task::Count, 2));
    assert!(b.task_from.starts_with("--bench"), "{}", b.task_from);
    // Row 2's answer "cat" has no number: malformed for counting.
    assert_eq!(b.malformed, 1);
    assert!(b.results[1].error.as_deref().unwrap().contains("no number"));
}

fn assert_fails_with(res: &Output, needles: &[&str]) {
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    let last = err.trim_end().lines().last().unwrap_or("");
    for n in needles {
        assert!(
            last.contains(n),
            "expected {n:?} in the last line of:\n{err}"
        );
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn eval_rejects_bad_input_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report.json");
    let model = model_dir("tiny-a");
    let m = model.to_str().unwrap();
    let run = |bench: &str, extra: &[&str]| {
        let mut args = vec!["eval", "--model", m, "--bench", bench];
        args.extend(extra);
        args.push("--out");
        interlace(&args, &[&out])
    };

    let missing = tmp.path().join("nope.tsv");
    assert_fails_with(
        &run(missing.to_str().unwrap(), &[]),
        &["nope.tsv", "cannot open"],
    );

    let no_answer = tmp.path().join("noanswer.tsv");
    std::fs::write(&no_answer, "index\tquestion\timage\n1\tq\tabc\n").unwrap();
    assert_fails_with(
        &run(no_answer.to_str().unwrap(), &[]),
        &["noanswer.tsv", "no 'answer' column"],
    );

    let judge = tmp.path().join("MIA-Bench.tsv");
    std::fs::write(&judge, "index\tquestion\tanswer\timage\n1\tq\ta\tabc\n").unwrap();
    assert_fails_with(
        &run(judge.to_str().unwrap(), &[]),
        &["MIA-Bench.tsv", "LLM judge"],
    );

    let res = run(
        &format!("{}:quiz", bench_file("vqa_fixture").display()),
        &[],
    );
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("unknown task 'quiz'"));

    let bad_baseline = tmp.path().join("baseline.json");
    std::fs::write(&bad_baseline, "{\"not\": \"a report\"}").unwrap();
    let vqa = bench_file("vqa_fixture");
    assert_fails_with(
        &run(
            vqa.to_str().unwrap(),
            &["--baseline", bad_baseline.to_str().unwrap()],
        ),
        &["baseline.json", "not an interlace eval report"],
    );

    let md_out = tmp.path().join("report.md");
    let res = interlace(
        &[
            "eval",
            "--model",
            m,
            "--bench",
            vqa.to_str().unwrap(),
            "--out",
        ],
        &[&md_out],
    );
    assert_fails_with(&res, &["report.md", "--out names the JSON report"]);

    // A broken model directory: the error names it and no report is left behind.
    let res = interlace(
        &[
            "eval",
            "--model",
            tmp.path().to_str().unwrap(),
            "--bench",
            vqa.to_str().unwrap(),
            "--out",
        ],
        &[&out],
    );
    assert!(!res.status.success());
    assert!(!out.exists());
    assert!(!tmp.path().join("report.md").exists());
}

/// Rows answered in batches (`--batch`, what a GPU does by default; malformed rows mixed
/// in) get the answers they get one at a time, and the same errors. (That batched
/// generation gives transformers' tokens is tests/generate.rs.)
#[test]
fn eval_batches_give_the_answers_of_single_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let reports: Vec<EvalReport> = [["1", "1"], ["4", "1"], ["3", "2"]]
        .iter()
        .map(|[batch, workers]| {
            let out = tmp.path().join(format!("report-{batch}-{workers}.json"));
            let res = eval_fixtures(
                &out,
                &["--batch", batch, "--workers", workers, "--device", "cpu"],
            );
            assert!(
                res.status.success(),
                "{}",
                String::from_utf8_lossy(&res.stderr)
            );
            let stderr = String::from_utf8_lossy(&res.stderr);
            assert!(
                stderr.contains(&format!("{batch} row(s) per batch")),
                "{stderr}"
            );
            EvalReport::read(&out).unwrap()
        })
        .collect();
    let rows = |r: &EvalReport| -> Vec<(String, Option<String>, Option<String>)> {
        r.benchmarks
            .iter()
            .flat_map(|b| {
                b.results
                    .iter()
                    .map(|x| (x.index.clone(), x.prediction.clone(), x.error.clone()))
            })
            .collect()
    };
    let single = rows(&reports[0]);
    assert!(single.len() > 10);
    for r in &reports[1..] {
        assert_eq!(rows(r), single);
    }
}

/// Rows longer than --max-length are not run: each is a malformed row of the report, the
/// others keep their outcome and the report is written.
#[test]
fn eval_counts_overlong_rows_and_writes_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report.json");
    let model = model_dir("tiny-a");
    let bench = bench_file("vqa_fixture").display().to_string();
    let run = |max_length: &str| {
        let res = interlace(
            &[
                "eval",
                "--model",
                model.to_str().unwrap(),
                "--bench",
                &bench,
                "--max-new-tokens",
                "2",
                "--max-length",
                max_length,
                "--out",
            ],
            &[&out],
        );
        assert!(
            res.status.success(),
            "{}",
            String::from_utf8_lossy(&res.stderr)
        );
        EvalReport::read(&out).unwrap().benchmarks.remove(0)
    };
    let all = run("8192");
    let cut = run("40");
    assert_eq!(all.rows, cut.rows);
    // The fixture's two well-formed rows (74 and 84 tokens of prompt) are cut; the three
    // malformed ones keep their own errors (no answer, a missing image, no question).
    let limit = "more than the 40 that --max-length allows";
    for (a, c) in all.results.iter().zip(&cut.results) {
        let (ae, ce) = (a.error.as_deref(), c.error.as_deref());
        match ae {
            Some(e) if e.starts_with("no ") || e.contains("cannot read image") => {
                assert_eq!(ae, ce)
            }
            _ => assert!(ce.is_some_and(|e| e.contains(limit)), "{ce:?}"),
        }
    }
    let n_cut = cut
        .results
        .iter()
        .filter(|r| r.error.as_deref().is_some_and(|e| e.contains(limit)))
        .count();
    assert_eq!(n_cut, 2);
}

/// When the model itself fails part-way (here: a NaN token embedding that only the third
/// row's prompt uses), eval exits non-zero in one line and still writes the report of the
/// rows answered before it, marked incomplete.
#[test]
fn eval_writes_what_it_scored_when_the_model_fails_part_way() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(model_dir("tiny-a")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
    }
    let questions = ["What colour is it?", "Is it red?", "Name the zebra quickly"];
    let tok = interlace::processor::Tokenizer::from_dir(&model).unwrap();
    let early: Vec<u32> = questions[..2]
        .iter()
        .flat_map(|q| tok.encode(q, false).unwrap())
        .collect();
    let late = tok.encode(questions[2], false).unwrap();
    let only_late = *late
        .iter()
        .find(|id| !early.contains(id))
        .expect("a token of row 3 only");
    // Poison that token's embedding row (tiny-a's text hidden size is 64).
    common::poison_element(
        &model,
        "model.language_model.embed_tokens.weight",
        only_late as usize * 64,
        f32::NAN,
    );

    let mut png = Vec::new();
    image::RgbImage::from_pixel(64, 64, image::Rgb([200, 30, 30]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let b64 = interlace::eval::tsv::encode_base64(&png);
    let mut tsv = String::from("index\timage\tquestion\tanswer\n");
    for (i, q) in questions.iter().enumerate() {
        tsv.push_str(&format!("{i}\t{b64}\t{q}\tred\n"));
    }
    let bench = tmp.path().join("probe.tsv");
    std::fs::write(&bench, tsv).unwrap();
    let out = tmp.path().join("report.json");
    let res = interlace(
        &[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--bench",
            bench.to_str().unwrap(),
            "--max-new-tokens",
            "1",
            "--workers",
            "1",
            "--batch",
            "1",
            "--out",
        ],
        &[&out],
    );
    assert_fails_with(
        &res,
        &[
            "NaN or infinite values in the input embeddings",
            "the report of the 2 rows scored before it, marked incomplete, is in",
        ],
    );
    let report = EvalReport::read(&out).unwrap();
    assert!(report.stopped.as_deref().is_some_and(|s| s.contains("NaN")));
    let rows = &report.benchmarks[0].results;
    assert!(rows[0].prediction.is_some() && rows[1].prediction.is_some());
    assert!(rows[2].prediction.is_none());
    assert!(rows[2]
        .error
        .as_deref()
        .is_some_and(|e| e.starts_with("not answered")));
    let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
    assert!(md.contains("**Incomplete**"), "{md}");
}

/// eval writes each benchmark's predictions in VLMEvalKit's layout (the benchmark's columns
/// without `image`, plus `prediction`); `eval --predictions` scores such files without a
/// model and gives the same scores and verdicts.
#[test]
fn predictions_files_round_trip_through_eval_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report.json");
    let res = eval_fixtures(&out, &[]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let first = EvalReport::read(&out).unwrap();
    let mut specs = Vec::new();
    for b in &first.benchmarks {
        let file = tmp
            .path()
            .join(format!("report.predictions/{}.tsv", b.name));
        let text = std::fs::read_to_string(&file).unwrap();
        let header: Vec<&str> = text.lines().next().unwrap().split('\t').collect();
        assert!(!header.contains(&"image"), "{header:?}");
        assert_eq!(header.last(), Some(&"prediction"));
        specs.push(file.display().to_string());
    }
    let rescored = tmp.path().join("rescored.json");
    let mut args = vec!["eval"];
    for s in &specs {
        args.extend(["--predictions", s.as_str()]);
    }
    args.push("--out");
    let res = interlace(&args, &[&rescored]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let second = EvalReport::read(&rescored).unwrap();
    assert_eq!(first.benchmarks.len(), second.benchmarks.len());
    for (a, b) in first.benchmarks.iter().zip(&second.benchmarks) {
        assert_eq!((&a.name, a.task), (&b.name, b.task));
        assert_eq!((a.score, a.scored), (b.score, b.scored), "{}", a.name);
        assert_eq!(a.metrics, b.metrics, "{}", a.name);
        // Only answered rows are written; each keeps its prediction and verdict.
        let answered: Vec<_> = a
            .results
            .iter()
            .filter(|r| r.prediction.is_some())
            .collect();
        assert_eq!(answered.len(), b.rows, "{}", a.name);
        for (x, y) in answered.iter().zip(&b.results) {
            assert_eq!(x.index, y.index);
            assert_eq!(
                (&x.prediction, x.score),
                (&y.prediction, y.score),
                "{} {}",
                a.name,
                x.index
            );
        }
    }
    // VLMEvalKit's own naming, MODEL_DATASET: the benchmark is DATASET.
    let pope = tmp.path().join("Qwen3-VL-2B-Instruct_POPE.tsv");
    std::fs::copy(
        tmp.path().join("report.predictions/POPE_fixture.tsv"),
        &pope,
    )
    .unwrap();
    let res = interlace(
        &["eval", "--predictions", pope.to_str().unwrap(), "--out"],
        &[&rescored],
    );
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let named = EvalReport::read(&rescored).unwrap();
    assert_eq!(named.benchmarks[0].name, "POPE");
    assert_eq!(
        named.benchmarks[0].task_from,
        "the name (VLMEvalKit dataset POPE)"
    );
    rescore_reports(tmp.path(), &out, &first);
    // A benchmark file is not a predictions file.
    let res = interlace(
        &[
            "eval",
            "--predictions",
            bench_file("vqa_fixture").to_str().unwrap(),
            "--out",
        ],
        &[&tmp.path().join("x.json")],
    );
    assert_fails_with(&res, &["vqa_fixture.tsv", "no 'prediction' column"]);
}

/// `eval --predictions report.json`: an earlier report's answers scored again against the
/// benchmark files it names, with the task each was run with.
fn rescore_reports(dir: &Path, out: &Path, first: &EvalReport) {
    let again = dir.join("again.json");
    let rescore = |report: &Path, extra: &[&str]| {
        let mut args = vec!["eval", "--predictions", report.to_str().unwrap()];
        args.extend(extra);
        args.push("--out");
        interlace(&args, &[&again])
    };
    // Same rules, same answers: the same report, model and protocol included.
    let res = rescore(out, &[]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let same = EvalReport::read(&again).unwrap();
    assert_eq!(same.model, first.model);
    assert_eq!(same.protocol, first.protocol);
    assert_eq!(same.benchmarks, first.benchmarks);

    // Answers changed in the report are what gets scored: every well-formed MCQ row
    // answered with its `answer` cell (read from the fixture) is right, so 100 %.
    let mcq = Benchmark::open(&BenchSpec::new(bench_file("mcq_fixture")), None).unwrap();
    let mut edited = first.clone();
    let b = edited
        .benchmarks
        .iter_mut()
        .find(|b| b.name == "mcq_fixture")
        .unwrap();
    let mut answered = 0;
    for (r, row) in b.results.iter_mut().zip(&mcq.rows) {
        assert_eq!(r.index, row.index);
        if let (Ok(item), Some(_)) = (&row.item, &r.prediction) {
            r.prediction = Some(format!("The answer is {}", item.answer));
            answered += 1;
        }
    }
    assert!(answered > 3);
    let edited_path = dir.join("edited.json");
    std::fs::write(&edited_path, serde_json::to_string(&edited).unwrap()).unwrap();
    let res = rescore(&edited_path, &[]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let scored = EvalReport::read(&again).unwrap();
    let m = scored
        .benchmarks
        .iter()
        .find(|b| b.name == "mcq_fixture")
        .unwrap();
    assert_eq!(m.score, Some(100.0));
    assert_eq!(m.scored, answered);

    // A report whose file is relative is found next to the report; one that is nowhere is a
    // clear error; a limit keeps the first rows.
    let sub = dir.join("moved");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::copy(bench_file("mcq_fixture"), sub.join("mcq_fixture.tsv")).unwrap();
    let mut moved = first.clone();
    moved.benchmarks.retain(|b| b.name == "mcq_fixture");
    moved.benchmarks[0].file = "mcq_fixture.tsv".into();
    let moved_path = sub.join("report.json");
    std::fs::write(&moved_path, serde_json::to_string(&moved).unwrap()).unwrap();
    let res = rescore(&moved_path, &["--limit", "2"]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let limited = EvalReport::read(&again).unwrap();
    assert_eq!(
        limited.benchmarks[0].results,
        moved.benchmarks[0].results[..2]
    );
    std::fs::remove_file(sub.join("mcq_fixture.tsv")).unwrap();
    let res = rescore(&moved_path, &[]);
    assert_fails_with(&res, &["report.json", "mcq_fixture", "not found"]);
    // The task can be overridden: the MCQ answers scored as open VQA.
    std::fs::copy(bench_file("mcq_fixture"), sub.join("mcq_fixture.tsv")).unwrap();
    let spec = format!("{}:vqa", moved_path.display());
    let res = interlace(
        &["eval", "--predictions", spec.as_str(), "--out"],
        &[&again],
    );
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(
        EvalReport::read(&again).unwrap().benchmarks[0].task,
        Task::Vqa
    );
}

/// --protocol vlmevalkit: the datasets' prompts, seeded sampling; each row has its own
/// random stream, so the answers do not depend on the batch size; the report names the
/// protocol and seed. The default protocol says so too.
#[test]
fn vlmevalkit_protocol_is_seeded_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let res = eval_fixtures(&out, extra);
        assert!(
            res.status.success(),
            "{}",
            String::from_utf8_lossy(&res.stderr)
        );
        EvalReport::read(&out).unwrap()
    };
    let one = run(
        "one.json",
        &["--protocol", "vlmevalkit", "--seed", "3", "--batch", "1"],
    );
    let three = run(
        "three.json",
        &["--protocol", "vlmevalkit", "--seed", "3", "--batch", "3"],
    );
    let other = run(
        "other.json",
        &["--protocol", "vlmevalkit", "--seed", "4", "--batch", "1"],
    );
    let greedy = run("greedy.json", &[]);
    assert_eq!(one.protocol.as_deref(), Some("vlmevalkit (seed 3)"));
    assert_eq!(greedy.protocol.as_deref(), Some("greedy-mixin"));
    let preds = |r: &EvalReport| -> Vec<Option<String>> {
        r.benchmarks
            .iter()
            .flat_map(|b| b.results.iter().map(|x| x.prediction.clone()))
            .collect()
    };
    assert_eq!(preds(&one), preds(&three), "answers depend on the batch");
    assert_ne!(preds(&one), preds(&other), "the seed changes nothing");
    let mcq = one
        .benchmarks
        .iter()
        .find(|b| b.name == "mcq_fixture")
        .unwrap();
    let prompt = mcq.results.iter().find_map(|r| r.prompt.clone()).unwrap();
    assert!(
        prompt.ends_with("Please select the correct answer from the options above. \n"),
        "{prompt:?}"
    );
}
