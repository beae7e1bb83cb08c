//! Bad input gives one clear line naming the file and the problem, and a non-zero exit;
//! never a panic.

mod common;

use std::path::Path;
use std::process::Command;

use common::model_dir;

/// Runs the CLI; returns (success, stderr).
fn interlace(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_interlace"))
        .args(args)
        .output()
        .expect("run interlace");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A copy of the tiny-a fixture in a fresh temporary directory.
fn copy_of_tiny_a() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(model_dir("tiny-a")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    tmp
}

fn assert_one_line_error(stderr: &str, needles: &[&str]) {
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "expected {n:?} in: {stderr}");
    }
}

fn inspect(dir: &Path) -> (bool, String) {
    interlace(&["inspect", "--model", dir.to_str().unwrap()])
}

#[test]
fn inspect_describes_a_good_checkpoint() {
    let dir = model_dir("tiny-b");
    let out = Command::new(env!("CARGO_BIN_EXE_interlace"))
        .args(["inspect", "--model", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // Expected values straight from the fixture's own files: tiny-b is sharded and untied.
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let shards: std::collections::BTreeSet<&str> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    let layers = cfg["text_config"]["num_hidden_layers"].as_u64().unwrap();
    assert!(
        text.contains(&format!("decoder layers         {layers}\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} file(s)", shards.len())),
        "{text}"
    );
    assert!(shards.len() > 1, "tiny-b must be sharded");
    assert!(!text.contains("tied to token embeddings"), "{text}");
}

#[test]
fn missing_model_directory() {
    let (ok, err) = inspect(Path::new("/nonexistent/model"));
    assert!(!ok);
    assert_one_line_error(&err, &["/nonexistent/model/config.json", "not found"]);
}

#[test]
fn missing_weights() {
    let tmp = copy_of_tiny_a();
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let (ok, err) = inspect(tmp.path());
    assert!(!ok);
    assert_one_line_error(&err, &["no model.safetensors"]);
}

#[test]
fn truncated_safetensors() {
    let tmp = copy_of_tiny_a();
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, err) = inspect(tmp.path());
    assert!(!ok);
    assert_one_line_error(&err, &["model.safetensors", "truncated or corrupt"]);
}

#[test]
fn unsupported_model_type() {
    let tmp = copy_of_tiny_a();
    let path = tmp.path().join("config.json");
    let cfg = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"qwen3_vl\"", "\"llava\"");
    std::fs::write(&path, cfg).unwrap();
    let (ok, err) = inspect(tmp.path());
    assert!(!ok);
    assert_one_line_error(
        &err,
        &["config.json", "model_type \"llava\" is not supported"],
    );
}

#[test]
fn invalid_json_config() {
    let tmp = copy_of_tiny_a();
    std::fs::write(tmp.path().join("config.json"), "{ not json").unwrap();
    let (ok, err) = inspect(tmp.path());
    assert!(!ok);
    assert_one_line_error(&err, &["config.json", "not valid JSON"]);
}

/// Loading (not just inspecting) must catch config/weights disagreements.
fn load(dir: &Path) -> anyhow::Result<interlace::model::Qwen3VlModel> {
    interlace::model::Qwen3VlModel::load(dir, candle_core::DType::F32, &candle_core::Device::Cpu)
}

#[test]
fn config_and_weights_shape_mismatch() {
    let tmp = copy_of_tiny_a();
    let path = tmp.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let inter = cfg["text_config"]["intermediate_size"].as_u64().unwrap();
    cfg["text_config"]["intermediate_size"] = (inter + 16).into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let err = interlace::error_line(&load(tmp.path()).err().expect("must fail"));
    assert!(err.contains("weights do not match config.json"), "{err}");
    assert!(err.contains("shape mismatch"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn config_layer_count_mismatch() {
    let tmp = copy_of_tiny_a();
    let path = tmp.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["text_config"]["num_hidden_layers"] = 3.into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let err = interlace::error_line(&load(tmp.path()).err().expect("must fail"));
    assert!(
        err.contains("num_hidden_layers = 3 but the weights hold 4"),
        "{err}"
    );
}

fn forward(dir: &Path, image: &Path) -> (bool, String) {
    interlace(&[
        "forward",
        "--model",
        dir.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--prompt",
        "What is this?",
    ])
}

#[test]
fn forward_runs_on_a_good_checkpoint() {
    let img = common::fixtures().join("images/odd_97x61.png");
    let out = Command::new(env!("CARGO_BIN_EXE_interlace"))
        .args(["forward", "--model", model_dir("tiny-b").to_str().unwrap()])
        .args([
            "--image",
            img.to_str().unwrap(),
            "--prompt",
            "What is this?",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // One line per decoder layer of tiny-b, then the next-token candidates.
    // Layer rows are the only lines that start with an indented number.
    let layers = text
        .lines()
        .filter(|l| {
            l.starts_with("    ") && l.trim_start().starts_with(|c: char| c.is_ascii_digit())
        })
        .count();
    assert_eq!(layers, 6, "{text}");
    assert!(text.contains("next token:"), "{text}");
}

#[test]
fn unreadable_image() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really a png").unwrap();
    let (ok, err) = forward(&model_dir("tiny-a"), &bad);
    assert!(!ok);
    assert_one_line_error(&err, &["broken.png"]);
    let (ok, err) = forward(&model_dir("tiny-a"), &tmp.path().join("missing.jpg"));
    assert!(!ok);
    assert_one_line_error(&err, &["missing.jpg"]);
}

#[test]
fn preprocessor_and_model_disagree_on_patch_size() {
    let tmp = copy_of_tiny_a();
    let path = tmp.path().join("preprocessor_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["patch_size"] = 8.into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let (ok, err) = forward(tmp.path(), &common::fixtures().join("images/odd_97x61.png"));
    assert!(!ok);
    assert_one_line_error(&err, &["disagree on patch"]);
}

/// Every command that runs a model takes --device and --dtype; on a binary without CUDA,
/// `--device cuda` is one line naming the flag and what to do, before any work.
#[cfg(not(feature = "cuda"))]
#[test]
fn device_cuda_without_cuda_is_one_clear_line() {
    let m = model_dir("tiny-a");
    let m = m.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("calib.json");
    std::fs::write(
        &data,
        r#"[{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]"#,
    )
    .unwrap();
    let data = data.to_str().unwrap();
    let bench = common::fixtures().join("bench/mcq_fixture.tsv");
    let bench = bench.to_str().unwrap();
    let out = tmp.path().join("out.json");
    let out = out.to_str().unwrap();
    let run_dir = tmp.path().join("run");
    let run_dir = run_dir.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["forward", "--model", m, "--prompt", "hi"],
        vec!["generate", "--model", m, "--prompt", "hi"],
        vec!["latency", "--model", m],
        vec!["similarity", "--model", m, "--data", data, "--out", out],
        vec![
            "plan",
            "--strategy",
            "sleb",
            "--model",
            m,
            "--data",
            data,
            "--samples",
            "1",
            "--out",
            out,
        ],
        vec!["eval", "--model", m, "--bench", bench, "--out", out],
        vec![
            "run", "--model", m, "--data", data, "--bench", bench, "--out", run_dir,
        ],
    ];
    for args in commands {
        for device in ["cuda", "cuda:1"] {
            let mut a = args.clone();
            a.extend(["--device", device, "--dtype", "bf16"]);
            let (ok, stderr) = interlace(&a);
            assert!(!ok, "{args:?}");
            assert_one_line_error(
                &stderr,
                &[
                    "--device cuda:",
                    "built without CUDA",
                    "scripts/build-cuda.sh",
                ],
            );
        }
    }
    // A device or dtype that does not exist is a usage error naming the choices.
    let (ok, stderr) = interlace(&["forward", "--model", m, "--prompt", "hi", "--dtype", "fp8"]);
    assert!(
        !ok && stderr.contains("expected auto, bf16 or f32"),
        "{stderr}"
    );
    let (ok, stderr) = interlace(&[
        "forward", "--model", m, "--prompt", "hi", "--device", "gpu:0",
    ]);
    assert!(
        !ok && stderr.contains("expected auto, cpu, cuda or cuda:N"),
        "{stderr}"
    );
    // --version names the backends.
    let out = Command::new(env!("CARGO_BIN_EXE_interlace"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("interlace {} (backends: cpu)", env!("CARGO_PKG_VERSION"))
    );
}

/// A prompt longer than the model takes (or than --max-length) is refused before the model
/// loads, in one line: unbounded, its attention scores would ask for hundreds of GB.
#[test]
fn overlong_prompts_are_refused_in_one_line() {
    let model = model_dir("tiny-b");
    let m = model.to_str().unwrap();
    let huge = "word ".repeat(20_000); // tens of thousands of tokens; tiny-b takes 2048
    let (ok, err) = interlace(&["generate", "--model", m, "--prompt", &huge]);
    assert!(!ok);
    assert_one_line_error(
        &err,
        &[
            "--prompt",
            "+ 64 to generate",
            "the 2048 that the model's max_position_embeddings allows",
        ],
    );
    let (ok, err) = interlace(&["forward", "--model", m, "--prompt", &huge]);
    assert!(!ok);
    assert_one_line_error(&err, &["--prompt", "max_position_embeddings"]);
    // --max-length below the model's limit is the one named.
    let short = "word ".repeat(100);
    let (ok, err) = interlace(&[
        "generate",
        "--model",
        m,
        "--prompt",
        &short,
        "--max-length",
        "50",
    ]);
    assert!(!ok);
    assert_one_line_error(&err, &["more than the 50 that --max-length allows"]);
}

/// Settings that would silently give NaN or nothing are refused in one line.
#[test]
fn settings_that_give_nan_or_nothing_are_refused() {
    // A negative rms_norm_eps makes every RMSNorm NaN (the output was NaN with exit 0).
    let tmp = copy_of_tiny_a();
    let path = tmp.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["text_config"]["rms_norm_eps"] = serde_json::json!(-1e-6);
    std::fs::write(&path, cfg.to_string()).unwrap();
    let (ok, err) = inspect(tmp.path());
    assert!(!ok);
    assert_one_line_error(
        &err,
        &["config.json", "rms_norm_eps must be a positive number"],
    );

    let model = model_dir("tiny-a");
    let m = model.to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = out.path().join("x");
    let o = o.to_str().unwrap();
    let (ok, err) = interlace(&[
        "finetune",
        "--model",
        m,
        "--data",
        "nothing.json",
        "--out",
        o,
        "--min-pixels",
        "5000",
        "--max-pixels",
        "4000",
    ]);
    assert!(!ok);
    assert_one_line_error(
        &err,
        &["--min-pixels (5000) must not exceed --max-pixels (4000)"],
    );
    let (ok, err) = interlace(&[
        "eval",
        "--model",
        m,
        "--bench",
        "nothing.tsv",
        "--max-new-tokens",
        "0",
        "--out",
        o,
    ]);
    assert!(!ok);
    assert_one_line_error(&err, &["--max-new-tokens must be at least 1"]);
    assert!(!out.path().join("x").exists());
}
