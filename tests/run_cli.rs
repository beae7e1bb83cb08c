//! `interlace run`: the whole pipeline on a fixture model with explicit data and benchmarks —
//! every stage's output, the wiring between stages, continuing a run, and --compare.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{assert_ok, assert_one_line_error, fixtures, interlace, load_tensors, model_dir};
use serde_json::Value;

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// `interlace run` on tiny-b with the training fixture and two benchmark fixtures.
fn run_args(out: &Path) -> Vec<String> {
    let f = fixtures();
    let s = |p: PathBuf| p.display().to_string();
    vec![
        "run".into(),
        "--model".into(),
        s(model_dir("tiny-b")),
        "--data".into(),
        s(f.join("train/data.json")),
        "--bench".into(),
        s(f.join("bench/mcq_fixture.tsv")),
        "--bench".into(),
        s(f.join("bench/POPE_fixture.tsv")),
        "--calib-samples".into(),
        "4".into(),
        "--samples".into(),
        "8".into(),
        "--batch-size".into(),
        "2".into(),
        "--out".into(),
        s(out.to_path_buf()),
    ]
}

fn run(args: &[String]) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    interlace(&refs, &[])
}

fn all_tensors(dir: &Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    let mut all = std::collections::HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "safetensors") {
            all.extend(load_tensors(&p));
        }
    }
    all
}

#[test]
fn run_writes_every_stage_and_the_report_and_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let args = run_args(&out);
    let o = run(&args);
    assert_ok(&o);
    for f in [
        "run.json",
        "sim.json",
        "sim.svg",
        "plan.json",
        "plan.svg",
        "pruned/config.json",
        "finetuned/config.json",
        "finetuned/training_log.jsonl",
        "eval/dense.json",
        "eval/pruned.json",
        "eval/finetuned.json",
        "report.md",
        "report.json",
        "scores.svg",
        "loss.svg",
    ] {
        assert!(out.join(f).exists(), "missing {f}");
    }

    // The plan is the one `interlace plan` makes from the run's own similarity file.
    let own_plan = tmp.path().join("own-plan.json");
    let o3 = interlace(
        &["plan", "--ratio", "0.25", "--out"],
        &[&own_plan, Path::new("--similarity"), &out.join("sim.json")],
    );
    assert!(
        o3.status.success(),
        "{}",
        String::from_utf8_lossy(&o3.stderr)
    );
    let plan = read_json(&out.join("plan.json"));
    assert_eq!(plan["drop"], read_json(&own_plan)["drop"]);
    let drop = plan["drop"].as_array().unwrap().len();
    assert!(drop >= 1);

    // The pruned checkpoint lost exactly the dropped layers.
    let cfg = read_json(&out.join("pruned/config.json"));
    assert_eq!(
        cfg["text_config"]["num_hidden_layers"].as_u64().unwrap() as usize,
        6 - drop
    );

    // Fine-tuning changed the plan's fine-tune layers and nothing else.
    let kept: Vec<u64> = plan["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let tuned_pos: Vec<usize> = plan["finetune"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| kept.iter().position(|k| k == &f.as_u64().unwrap()).unwrap())
        .collect();
    let before = all_tensors(&out.join("pruned"));
    let after = all_tensors(&out.join("finetuned"));
    assert_eq!(before.len(), after.len());
    let mut changed = 0;
    for (name, t) in &before {
        let a = common::to_f32_vec(t);
        let b = common::to_f32_vec(&after[name]);
        let trainable = tuned_pos
            .iter()
            .any(|p| name.starts_with(&format!("model.language_model.layers.{p}.")));
        if trainable {
            changed += usize::from(a != b);
        } else {
            assert_eq!(a, b, "{name} is frozen but changed");
        }
    }
    assert!(changed > 0, "fine-tuning changed no tensor");

    // The report carries the evaluation files' scores.
    let report = read_json(&out.join("report.json"));
    for (key, file) in [
        ("dense", "dense"),
        ("pruned", "pruned"),
        ("finetuned", "finetuned"),
    ] {
        let ev = read_json(&out.join(format!("eval/{file}.json")));
        for b in ev["benchmarks"].as_array().unwrap() {
            let name = b["name"].as_str().unwrap();
            assert_eq!(report["scores"][name][key], b["score"], "{key} {name}");
        }
    }
    assert_eq!(report["plan"]["drop"], plan["drop"]);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| mcq_fixture |") && md.contains("| POPE_fixture |"));

    // Running the same command again does no stage twice.
    let o = run(&args);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    for label in ["similarity", "prune", "fine-tune", "evaluate dense"] {
        assert!(
            err.contains(&format!("run: {label}: already done")),
            "{label} was not reused:\n{err}"
        );
    }
    assert!(!err.contains("finetune: step"), "{err}");
    assert_eq!(
        read_json(&out.join("report.json"))["scores"],
        report["scores"]
    );

    // Other settings on the same directory are refused.
    let mut other = args.clone();
    other.extend(["--ratio".into(), "0.5".into()]);
    let o = run(&other);
    assert_one_line_error(&o, "ratio");
}

#[test]
fn run_refuses_incomplete_arguments() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixtures();
    let o = interlace(
        &["run", "--model"],
        &[
            &model_dir("tiny-b"),
            Path::new("--data"),
            &f.join("train/data.json"),
            Path::new("--out"),
            tmp.path(),
        ],
    );
    assert_one_line_error(&o, "--bench");
    let o = interlace(
        &["run", "--model"],
        &[tmp.path(), Path::new("--out"), &tmp.path().join("x")],
    );
    assert_one_line_error(&o, "config.json");
}

#[test]
fn compare_runs_every_strategy_with_and_without_fine_tuning() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cmp");
    let mut args = run_args(&out);
    args.extend(
        [
            "--compare",
            "--compare-ratios",
            "0.25",
            "--compare-seeds",
            "2",
        ]
        .map(String::from),
    );
    let o = run(&args);
    assert_ok(&o);
    let cmp = read_json(&out.join("compare.json"));
    let rows = cmp["rows"].as_array().unwrap();
    let methods: Vec<&str> = rows.iter().map(|r| r["method"].as_str().unwrap()).collect();
    assert_eq!(
        methods,
        [
            "Dense",
            "Dense-FT",
            "SLEB",
            "SLEB-FT",
            "ShortGPT",
            "ShortGPT-FT",
            "consecutive",
            "consecutive-FT",
            "random",
            "random-FT",
            "interlace-oa",
            "interlace-oa-FT",
            "interlace-tn",
            "interlace-tn-FT",
            "INTERLACE",
            "INTERLACE-FT"
        ]
    );
    // Every fine-tuned row and the random strategy ran with both seeds; the other pruned
    // rows are deterministic.
    for row in rows {
        let m = row["method"].as_str().unwrap();
        let want: &[u64] = if m.ends_with("-FT") || m == "random" {
            &[42, 43]
        } else {
            &[42]
        };
        let seeds: Vec<u64> = row["seeds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap())
            .collect();
        assert_eq!(seeds, want, "{m}");
        assert_eq!(
            row["scores_per_seed"].as_array().unwrap().len(),
            want.len(),
            "{m}"
        );
        for v in [&row["relative_to_dense"], &row["relative_to_dense_ft"]] {
            // Interval fields or null (the fixture model's scores may be 0).
            assert!(
                v.is_null() || v["low"].as_f64() <= v["high"].as_f64(),
                "{m}: {v}"
            );
        }
    }
    for row in &rows[2..] {
        for plan in row["plans"].as_array().unwrap() {
            // floor(6 × 0.25) = 1 layer dropped, at least one layer fine-tuned.
            assert_eq!(plan["drop"].as_array().unwrap().len(), 1, "{row}");
            assert!(!plan["finetune"].as_array().unwrap().is_empty(), "{row}");
        }
    }
    // The SLEB rows follow the SLEB plan file; the INTERLACE rows the main run's plan; the
    // random rows one plan per seed.
    let sleb = read_json(&out.join("compare/ratio-0.25/sleb/plan.json"));
    assert_eq!(rows[2]["plans"][0]["drop"], sleb["drop"]);
    assert_eq!(
        rows[15]["plans"][0]["drop"],
        read_json(&out.join("plan.json"))["drop"]
    );
    let random43 = read_json(&out.join("compare/ratio-0.25/random/seed-43/plan.json"));
    assert_eq!(rows[9]["plans"][1]["drop"], random43["drop"]);
    // Every fine-tuned row used the same number of samples: the same number of steps; the
    // second seed drew other batches.
    let log = |dir: &Path| std::fs::read_to_string(dir.join("training_log.jsonl")).unwrap();
    let steps = |dir: &Path| log(dir).lines().count();
    let reference = steps(&out.join("finetuned"));
    let c = out.join("compare");
    for dir in [
        c.join("dense-ft/model"),
        c.join("dense-ft/seed-43/model"),
        c.join("ratio-0.25/sleb/ft"),
        c.join("ratio-0.25/sleb/seed-43/ft"),
        c.join("ratio-0.25/shortgpt/ft"),
        c.join("ratio-0.25/interlace-tn/seed-43/ft"),
        c.join("ratio-0.25/random/seed-43/ft"),
    ] {
        assert_eq!(steps(&dir), reference, "{}", dir.display());
    }
    let first_step = |dir: &Path| log(dir).lines().next().unwrap().to_string();
    assert_ne!(
        first_step(&c.join("ratio-0.25/sleb/ft")),
        first_step(&c.join("ratio-0.25/sleb/seed-43/ft"))
    );
    // The fixture model scores 0 everywhere, so there is nothing relative to Dense to test.
    assert!(cmp["tests"].as_array().unwrap().is_empty());
    let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
    assert!(md.contains("No test"), "{md}");
    assert!(out.join("compare.svg").exists());
}

/// `run --compare` on the demo model, shrunk to a few rows and one step per fine-tuning:
/// every row gets intervals, INTERLACE-FT is tested against the other 15 rows, and the
/// chart has a whisker per bar.
#[test]
fn compare_on_the_demo_reports_intervals_and_paired_tests() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo-cmp");
    let o = common::cli()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "run",
            "--compare",
            "--compare-seeds",
            "2",
            "--calib-samples",
            "4",
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--warmup-ratio",
            "0",
            "--limit",
            "4",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_ok(&o);
    let cmp = read_json(&out.join("compare.json"));
    assert_eq!(cmp["rows_per_benchmark"]["SynthMMB"], 4);
    let rows = cmp["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 16);
    for row in rows {
        let m = row["method"].as_str().unwrap();
        let r = &row["relative_to_dense"];
        let (e, lo, hi) = (
            r["estimate"].as_f64().unwrap(),
            r["low"].as_f64().unwrap(),
            r["high"].as_f64().unwrap(),
        );
        assert!(lo <= e + 1e-9 && e <= hi + 1e-9, "{m}: {r}");
        assert!(row["relative_to_dense_ft"]["estimate"].is_number(), "{m}");
    }
    // Dense against itself: exactly 1, in every bootstrap draw too.
    assert_eq!(rows[0]["relative_to_dense"]["low"], 1.0);
    assert_eq!(rows[0]["relative_to_dense"]["high"], 1.0);
    let tests = cmp["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 15);
    let against: Vec<&str> = tests
        .iter()
        .map(|t| t["against"].as_str().unwrap())
        .collect();
    assert!(
        against.contains(&"Dense")
            && against.contains(&"INTERLACE")
            && !against.contains(&"INTERLACE-FT")
    );
    for t in tests {
        let (p, holm) = (t["p"].as_f64().unwrap(), t["p_holm"].as_f64().unwrap());
        assert!(p > 0.0 && p <= 1.0 && holm >= p && holm <= 1.0, "{t}");
    }
    let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
    assert!(md.contains("95 % interval") && md.contains("INTERLACE-FT against"));
    // 14 pruned rows × (÷ Dense, ÷ Dense-FT): a bar and a whisker each.
    let svg = std::fs::read_to_string(out.join("compare.svg")).unwrap();
    assert_eq!(svg.matches(" 95 % interval ").count(), 28);
}

/// The README's first command, shrunk: no --model and no --data, so the demo model and
/// freshly generated synthetic data and benchmarks are used.
#[test]
fn run_defaults_to_the_demo_model_and_synthetic_data() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let o = common::cli()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "run",
            "--calib-samples",
            "4",
            "--samples",
            "8",
            "--batch-size",
            "4",
            "--limit",
            "2",
            // One optimizer step: without this its warm-up would give it learning rate 0.
            "--warmup-ratio",
            "0",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_ok(&o);
    let manifest = read_json(&out.join("data/synth.json"));
    let report = read_json(&out.join("report.json"));
    assert!(report["model"].as_str().unwrap().ends_with("demo/model"));
    // Every synthetic benchmark is in the report with its category and chance level.
    for b in manifest["benchmarks"].as_array().unwrap() {
        let name = b["name"].as_str().unwrap();
        let entry = &report["scores"][name];
        assert_eq!(entry["category"], b["category"], "{name}");
        assert_eq!(
            entry["chance"].as_f64().unwrap(),
            b["chance"].as_f64().unwrap() * 100.0
        );
        assert!(entry["dense"].is_number(), "{name}");
    }
    // 12 layers at ratio 0.25: three dropped.
    assert_eq!(report["plan"]["drop"].as_array().unwrap().len(), 3);
    // The benchmarks hold --compare's 200 rows; the main run read --limit of them.
    for b in manifest["benchmarks"].as_array().unwrap() {
        assert_eq!(b["rows"].as_u64(), Some(200), "{b}");
    }
    let dense = read_json(&out.join("eval/dense.json"));
    for b in dense["benchmarks"].as_array().unwrap() {
        assert_eq!(b["rows"].as_u64(), Some(2), "{}", b["name"]);
    }
    // The synthetic rows have worked answers (the form the demo model was trained on): a
    // four-option question is answered with an option's text, not its letter.
    let rows = interlace::data::load_portion(
        &out.join("data/train/SynthMMB"),
        1.0,
        None,
        0,
        interlace::data::Take::Random,
    )
    .unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        let sample = row.unwrap();
        let (prompt, answer) = (&sample.turns[0].text, &sample.turns[1].text);
        assert!(answer.len() > 1, "{answer}");
        assert!(
            prompt.lines().any(|l| l.get(3..) == Some(answer.as_str())),
            "{answer:?} is no option of {prompt:?}"
        );
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("(synthetic, worked answers)"), "{md}");
}

/// The fine-tuning budget `run` uses by default and with each flag (`Budget::resolve` on
/// parsed command lines), and what `run --help` says of it.
#[test]
fn run_budget_defaults_follow_the_data() {
    use clap::Parser;
    use interlace::recipes::run::{
        eval_limits, Budget, RunArgs, COMPARE_ROWS, DEMO_EVAL_ROWS, DEMO_LR, DEMO_STEPS, PAPER_LR,
    };
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }
    let budget = |args: &[&str]| {
        let cli = Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied()));
        Budget::resolve(&cli.unwrap().run).unwrap()
    };
    // The demo: the sweep's steps of 16 x 2 conversations and its learning rate.
    let demo = budget(&[]);
    assert_eq!(demo.samples, Some(DEMO_STEPS * 32));
    assert_eq!(demo.lr, DEMO_LR);
    assert!(demo.why.contains("steps"), "{}", demo.why);
    // Own data: the paper's 1 % of every source at its learning rate.
    let own = budget(&["--data", "d", "--bench", "b.tsv"]);
    assert_eq!((own.samples, own.portion, own.lr), (None, 0.01, PAPER_LR));
    assert_eq!(
        budget(&["--steps", "10", "--batch-size", "4"]).samples,
        Some(80)
    );
    let p = budget(&["--portion", "0.2", "--lr", "3e-4"]);
    assert_eq!((p.samples, p.portion, p.lr), (None, 0.2, 3e-4));
    assert_eq!(budget(&["--samples", "7"]).samples, Some(7));
    for clash in [
        ["--steps", "5", "--samples", "3"],
        ["--steps", "5", "--portion", "0.1"],
    ] {
        let args = std::iter::once("run").chain(clash);
        assert!(Cli::try_parse_from(args).is_err(), "{clash:?}");
    }
    let cli = Cli::try_parse_from(["run", "--steps", "0"]).unwrap();
    assert!(Budget::resolve(&cli.run).is_err());
    // Rows evaluated: the main run reads the first 100 of the synthetic benchmarks' 200,
    // --compare all 200; --limit sets both; own benchmarks are read whole.
    let limits = |args: &[&str]| {
        let cli = Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied()));
        eval_limits(&cli.unwrap().run)
    };
    assert_eq!((DEMO_EVAL_ROWS, COMPARE_ROWS), (100, 200));
    assert_eq!(limits(&[]), (Some(DEMO_EVAL_ROWS), None));
    assert_eq!(limits(&["--limit", "20"]), (Some(20), Some(20)));
    assert_eq!(limits(&["--bench", "b.tsv"]), (None, None));
    assert_eq!(limits(&["--data", "d", "--bench", "b.tsv"]), (None, None));
    // --help states the same defaults.
    let help = interlace(&["run", "--help"], &[]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains(&format!("default without --data: {DEMO_STEPS}")),
        "{help}"
    );
    assert!(
        help.contains(&format!("default without --data: {DEMO_LR:e}")),
        "{help}"
    );
}

/// `run --sweep`: each ratio pruned and healed with the run's budget (the run's own ratio
/// reused), every model timed on one image of the data, sweep.md/.json/.svg written; and
/// `--distill` is recorded in run.json.
#[test]
fn sweep_writes_quality_against_time_to_first_token() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut args = run_args(&out);
    args.extend(["--sweep".into(), "0.25,0.2".into(), "--distill".into()]);
    let o = run(&args);
    assert_ok(&o);
    for f in [
        "sweep.md",
        "sweep.json",
        "sweep.svg",
        "sweep/ttft-image.png",
    ] {
        assert!(out.join(f).exists(), "missing {f}");
    }
    let sweep = read_json(&out.join("sweep.json"));
    let points = sweep["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    let report = read_json(&out.join("report.json"));
    // tiny-b has 6 decoder layers: 0.2 drops 1, 0.25 drops 2 (the run's own plan); the
    // points come in ratio order.
    assert_eq!(points[0]["ratio"], 0.2);
    assert_eq!(points[0]["dropped"].as_array().unwrap().len(), 1);
    assert!(out.join("sweep/ratio-0.2/eval-ft.json").exists());
    assert_eq!(points[1]["ratio"], 0.25);
    assert_eq!(points[1]["dropped"], report["plan"]["drop"]);
    assert_eq!(
        points[1]["relative_to_dense"]["finetuned"],
        report["relative_to_dense"]["finetuned"]
    );
    for p in points {
        assert!(p["ttft_ms"].as_f64().unwrap() > 0.0, "{p}");
    }
    assert!(sweep["dense"]["ttft_ms"].as_f64().unwrap() > 0.0);
    let svg = std::fs::read_to_string(out.join("sweep.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("pruned + fine-tuned"));
    let settings = read_json(&out.join("run.json"));
    assert_eq!(settings["distill"]["weight"], 0.5);
}

/// `run --rounds 2`: two rounds of analysis, pruning and fine-tuning, one layer each, the
/// budget split between them; the run's pruned and fine-tuned models are the last round's.
#[test]
fn rounds_prune_and_heal_step_by_step() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut args = run_args(&out);
    args.extend(
        ["--ratio", "0.34", "--rounds", "2", "--warmup-ratio", "0"]
            .iter()
            .map(|s| s.to_string()),
    );
    let o = run(&args);
    assert_ok(&o);
    for f in [
        "rounds/round-1/plan.json",
        "rounds/round-1/finetuned/config.json",
        "rounds/round-2/sim.json",
        "rounds/round-2/finetuned/config.json",
        "eval/finetuned.json",
    ] {
        assert!(out.join(f).exists(), "missing {f}");
    }
    let layers = |dir: &str| {
        read_json(&out.join(dir).join("config.json"))["text_config"]["num_hidden_layers"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(layers("rounds/round-1/pruned"), 5);
    assert_eq!(layers("rounds/round-2/pruned"), 4);
    // Each round trained on half of the 8 samples: one step of 2 x 2.
    for round in ["round-1", "round-2"] {
        let log = std::fs::read_to_string(
            out.join("rounds")
                .join(round)
                .join("finetuned/training_log.jsonl"),
        )
        .unwrap();
        assert_eq!(log.lines().count(), 1, "{round}");
    }
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["plan"]["drop"].as_array().unwrap().len(), 2);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("in 2 rounds"), "{md}");
    assert_eq!(read_json(&out.join("run.json"))["rounds"], 2);
    // More rounds than layers to drop is refused.
    let mut args = run_args(&tmp.path().join("other"));
    args.extend(["--rounds".to_string(), "3".to_string()]);
    let o = run(&args);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("fewer than one per round"));
}
