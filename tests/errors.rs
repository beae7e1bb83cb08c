//! Bad input gives one clear line naming the file and the problem, and a non-zero exit;
//! never a panic.

mod common;

use std::path::Path;

use common::model_dir;

/// Runs the CLI; returns (success, stderr).
fn interlace(args: &[&str]) -> (bool, String) {
    let out = common::cli().args(args).output().expect("run interlace");
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
    let out = common::cli()
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
fn load(dir: &Path) -> anyhow::Result<interlace::model::Model> {
    interlace::model::Model::load(dir, candle_core::DType::F32, &candle_core::Device::Cpu)
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
    let out = common::cli()
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
        !ok && stderr.contains("[possible values: auto, bf16, f32]"),
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
    let out = common::cli().arg("--version").output().unwrap();
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

/// One bad input of the corpus: the command line (`{dir}` is the case's own directory,
/// `{model}` a good model) and what its one error line must contain.
struct Case {
    what: &'static str,
    /// Writes the case's files into its directory.
    setup: fn(&Path),
    args: &'static [&'static str],
    needles: &'static [&'static str],
}

fn model_copy_into(dir: &Path) -> std::path::PathBuf {
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    for entry in std::fs::read_dir(model_dir("tiny-a")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), m.join(entry.file_name())).unwrap();
    }
    m
}

fn edit_config(model: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = model.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&path, cfg.to_string()).unwrap();
}

fn photo() -> Vec<u8> {
    std::fs::read(common::fixtures().join("images/photo_83x57.jpg")).unwrap()
}

const CORPUS: &[Case] = &[
    Case {
        what: "a JPEG cut in half",
        setup: |d| std::fs::write(d.join("half.jpg"), &photo()[..photo().len() / 2]).unwrap(),
        args: &[
            "forward",
            "--model",
            "{model}",
            "--image",
            "{dir}/half.jpg",
            "--prompt",
            "hi",
        ],
        needles: &["half.jpg", "image file is truncated"],
    },
    Case {
        what: "a JPEG without its EOI marker",
        setup: |d| std::fs::write(d.join("noeoi.jpg"), &photo()[..photo().len() - 2]).unwrap(),
        args: &[
            "generate",
            "--model",
            "{model}",
            "--image",
            "{dir}/noeoi.jpg",
            "--prompt",
            "hi",
        ],
        needles: &["noeoi.jpg", "image file is truncated"],
    },
    Case {
        what: "an image too thin for the processor",
        setup: |d| {
            image::RgbImage::new(1, 300)
                .save(d.join("thin.png"))
                .unwrap();
        },
        args: &[
            "generate",
            "--model",
            "{model}",
            "--image",
            "{dir}/thin.png",
            "--prompt",
            "hi",
        ],
        needles: &["thin.png", "aspect ratio must be smaller than 200"],
    },
    Case {
        what: "a NaN weight in decoder layer 1",
        setup: |d| {
            let m = model_copy_into(d);
            common::poison_element(
                &m,
                "model.language_model.layers.1.mlp.down_proj.weight",
                0,
                f32::NAN,
            );
        },
        args: &["forward", "--model", "{dir}/model", "--prompt", "hi"],
        needles: &["model", "first appear in the output of decoder layer 1"],
    },
    Case {
        what: "an infinite token embedding, in generation",
        setup: |d| {
            let m = model_copy_into(d);
            // Every rendered prompt starts with <|im_start|>: poison that token's row.
            let mut first = 0;
            let tok: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(m.join("tokenizer.json")).unwrap())
                    .unwrap();
            if let Some(added) = tok["added_tokens"].as_array() {
                for t in added {
                    if t["content"] == "<|im_start|>" {
                        first = t["id"].as_u64().unwrap();
                    }
                }
            }
            assert!(first > 0);
            let hidden = 64; // tiny-a text hidden_size
            common::poison_element(
                &m,
                "model.language_model.embed_tokens.weight",
                first as usize * hidden,
                f32::INFINITY,
            );
        },
        args: &["generate", "--model", "{dir}/model", "--prompt", "hi"],
        needles: &["model", "NaN or infinite values in the input embeddings"],
    },
    Case {
        what: "a tokenizer with ids beyond the model's vocabulary",
        setup: |d| {
            let m = model_copy_into(d);
            edit_config(&m, |c| {
                c["text_config"]["vocab_size"] = serde_json::json!(100)
            });
        },
        args: &["forward", "--model", "{dir}/model", "--prompt", "hi"],
        needles: &["tokenizer.json", "outside the model's vocabulary of 100"],
    },
    Case {
        what: "a model path that is a file",
        setup: |d| std::fs::write(d.join("model.bin"), b"weights").unwrap(),
        args: &["generate", "--model", "{dir}/model.bin", "--prompt", "hi"],
        needles: &["model.bin: not a directory"],
    },
    Case {
        what: "a chat template that raises",
        setup: |d| {
            let m = model_copy_into(d);
            std::fs::write(
                m.join("chat_template.jinja"),
                "{{ raise_exception('This model takes no system message') }}",
            )
            .unwrap();
        },
        args: &["generate", "--model", "{dir}/model", "--prompt", "hi"],
        needles: &["chat_template.jinja", "This model takes no system message"],
    },
    Case {
        what: "a binary file given as a benchmark",
        setup: |d| std::fs::write(d.join("bin.tsv"), photo()).unwrap(),
        args: &[
            "eval",
            "--model",
            "{model}",
            "--bench",
            "{dir}/bin.tsv",
            "--out",
            "{dir}/out/r.json",
        ],
        needles: &["bin.tsv", "not a TSV text file"],
    },
    Case {
        what: "a ratio that drops no layer",
        setup: write_sim,
        args: &[
            "plan",
            "--similarity",
            "{dir}/sim.json",
            "--ratio",
            "0",
            "--out",
            "{dir}/out/plan.json",
        ],
        needles: &[
            "--ratio 0 drops no layer of 6",
            "the smallest ratio that drops one is 0.1667",
        ],
    },
    Case {
        what: "a whole run at a ratio that drops no layer",
        setup: |_| {},
        args: &[
            "run",
            "--model",
            "{model}",
            "--ratio",
            "0.2",
            "--out",
            "{dir}/out",
        ],
        needles: &[
            "--ratio 0.2 drops no layer of 4",
            "the smallest ratio that drops one is 0.25",
        ],
    },
    Case {
        what: "a plan that drops nothing",
        setup: |d| {
            std::fs::write(
                d.join("plan.json"),
                r#"{"strategy": "manual", "ratio": 0.0, "num_layers": 4, "drop": [],
                    "finetune": [1], "freeze": [0, 2, 3], "anchors": [], "kept": [0, 1, 2, 3]}"#,
            )
            .unwrap();
        },
        args: &[
            "prune",
            "--model",
            "{model}",
            "--plan",
            "{dir}/plan.json",
            "--out",
            "{dir}/out/pruned",
        ],
        needles: &["plan.json: the plan drops no layer"],
    },
    Case {
        what: "a prompt longer than latency's --max-length",
        setup: |_| {},
        args: &[
            "latency",
            "--model",
            "{model}",
            "--prompt",
            "one two three four five six seven",
            "--max-length",
            "8",
        ],
        needles: &["--prompt", "more than the 8 that --max-length allows"],
    },
    Case {
        what: "a sim.json that is not JSON",
        setup: |d| std::fs::write(d.join("sim.json"), b"{\"packs\": [1, 2").unwrap(),
        args: &[
            "plan",
            "--similarity",
            "{dir}/sim.json",
            "--out",
            "{dir}/out/plan.json",
        ],
        needles: &["sim.json"],
    },
    Case {
        what: "a plan.json that is not JSON",
        setup: |d| std::fs::write(d.join("plan.json"), b"\x00\x01drop").unwrap(),
        args: &[
            "prune",
            "--model",
            "{model}",
            "--plan",
            "{dir}/plan.json",
            "--out",
            "{dir}/out/pruned",
        ],
        needles: &["plan.json"],
    },
    Case {
        what: "a tokenizer.json that is not a tokenizer",
        setup: |d| {
            let m = model_copy_into(d);
            std::fs::write(m.join("tokenizer.json"), b"{\"model\": 3}").unwrap();
        },
        args: &["generate", "--model", "{dir}/model", "--prompt", "hi"],
        needles: &["tokenizer.json", "cannot load tokenizer"],
    },
    Case {
        what: "LLaVA data that is not JSON",
        setup: |d| std::fs::write(d.join("data.json"), b"[{\"conversations\": ").unwrap(),
        args: &[
            "similarity",
            "--model",
            "{model}",
            "--data",
            "{dir}/data.json",
            "--out",
            "{dir}/out/sim.json",
        ],
        needles: &["data.json", "not a valid JSON array"],
    },
    Case {
        what: "a Parquet file with a broken footer",
        setup: |d| {
            let mut b = b"PAR1".to_vec();
            b.extend_from_slice(&[7u8; 64]);
            b.extend_from_slice(&20u32.to_le_bytes());
            b.extend_from_slice(b"PAR1");
            std::fs::write(d.join("part.parquet"), b).unwrap();
        },
        args: &[
            "similarity",
            "--model",
            "{model}",
            "--data",
            "{dir}/part.parquet",
            "--out",
            "{dir}/out/sim.json",
        ],
        needles: &["part.parquet"],
    },
    Case {
        what: "a config.json that is not JSON",
        setup: |d| {
            let m = model_copy_into(d);
            std::fs::write(m.join("config.json"), b"{\"model_type\": ").unwrap();
        },
        args: &["inspect", "--model", "{dir}/model"],
        needles: &["config.json", "not valid JSON"],
    },
    Case {
        what: "a --distill teacher that is a file",
        setup: |d| {
            std::fs::write(d.join("teacher.txt"), b"not a model").unwrap();
            std::fs::write(
                d.join("plan.json"),
                br#"{"strategy": "manual", "ratio": 0.0, "num_layers": 4, "drop": [],
                    "finetune": [1], "freeze": [0, 2, 3], "anchors": [], "kept": [0, 1, 2, 3]}"#,
            )
            .unwrap();
        },
        args: &[
            "finetune",
            "--model",
            "{model}",
            "--plan",
            "{dir}/plan.json",
            "--data",
            "{dir}/nothing.json",
            "--out",
            "{dir}/out",
            "--distill",
            "{dir}/teacher.txt",
        ],
        needles: &["teacher.txt", "not a directory"],
    },
    Case {
        what: "a --distill-weight of 3 for run",
        setup: |_| {},
        args: &[
            "run",
            "--distill",
            "--distill-weight",
            "3",
            "--out",
            "{dir}/out",
        ],
        needles: &["--distill-weight", "3"],
    },
    Case {
        what: "a --sweep ratio of 1.5",
        setup: |_| {},
        args: &["run", "--sweep", "0.2,1.5", "--out", "{dir}/out"],
        needles: &["--sweep", "1.5"],
    },
    Case {
        what: "a predictions .xlsx that is not a spreadsheet",
        setup: |d| {
            std::fs::write(d.join("m_AI2D_TEST.xlsx"), b"index\tprediction\n1\tA\n").unwrap()
        },
        args: &[
            "eval",
            "--predictions",
            "{dir}/m_AI2D_TEST.xlsx",
            "--out",
            "{dir}/out/r.json",
        ],
        needles: &["m_AI2D_TEST.xlsx", "not a readable spreadsheet"],
    },
    Case {
        what: "a spreadsheet cut short",
        setup: |d| {
            let x =
                std::fs::read(common::fixtures().join("vlmevalkit/probe_AI2D_TEST.xlsx")).unwrap();
            std::fs::write(d.join("cut_AI2D_TEST.xlsx"), &x[..x.len() * 2 / 3]).unwrap()
        },
        args: &[
            "eval",
            "--predictions",
            "{dir}/cut_AI2D_TEST.xlsx",
            "--out",
            "{dir}/out/r.json",
        ],
        needles: &["cut_AI2D_TEST.xlsx", "spreadsheet"],
    },
];

/// A valid sim.json for a 6-layer model (the plan command does not need the model).
fn write_sim(dir: &Path) {
    let means = |k: usize| -> Vec<f64> { (0..6 - k).map(|i| 0.5 + 0.05 * i as f64).collect() };
    let scores =
        interlace::prune::SimilarityScores::from_means(6, vec![means(1), means(2), means(3)])
            .unwrap();
    std::fs::write(dir.join("sim.json"), scores.to_json_string()).unwrap();
}

/// Every bad input above through the CLI: a non-zero exit (not a panic's or an abort's), one
/// line on stderr naming the file and the problem, and nothing at `--out`.
#[test]
fn bad_input_corpus() {
    let model = model_dir("tiny-a");
    for case in CORPUS {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        (case.setup)(dir);
        let args: Vec<String> = case
            .args
            .iter()
            .map(|a| {
                a.replace("{dir}", dir.to_str().unwrap())
                    .replace("{model}", model.to_str().unwrap())
            })
            .collect();
        let out = common::cli().args(&args).output().expect("run interlace");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", case.what);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(errors.len(), 1, "{}: {stderr}", case.what);
        assert!(
            errors[0].starts_with("error: ") && errors[0].len() < 600,
            "{}: {stderr}",
            case.what
        );
        assert!(!stderr.contains("panicked"), "{}: {stderr}", case.what);
        for n in case.needles {
            assert!(
                errors[0].contains(n),
                "{}: expected {n:?} in: {stderr}",
                case.what
            );
        }
        assert!(
            !dir.join("out").exists(),
            "{}: something was written at --out",
            case.what
        );
    }
}

/// Inputs that crashed the fuzz targets (fuzz/, tests/fixtures/fuzz): each is now one error
/// line through the CLI.
#[test]
fn fuzz_crashes_are_clean_errors() {
    let fuzz = common::fixtures().join("fuzz");
    let model = model_dir("tiny-a");
    let m = model.to_str().unwrap();
    // Over-subscribed Huffman tables made the JPEG decoder index past its lookup table.
    for name in ["jpeg-huffman-overflow.jpg", "image-huffman-overflow.jpg"] {
        let img = fuzz.join(name);
        let (ok, err) = interlace(&[
            "forward",
            "--model",
            m,
            "--image",
            img.to_str().unwrap(),
            "--prompt",
            "hi",
        ]);
        assert!(!ok);
        assert_one_line_error(&err, &[name]);
    }
    // The parquet crate looped over an exhausted file for 28 s on this page header.
    let slow = fuzz.join("parquet-thrift-skip-loop.parquet");
    let out = tempfile::tempdir().unwrap();
    let sim = out.path().join("sim.json");
    let (ok, err) = interlace(&[
        "similarity",
        "--model",
        m,
        "--data",
        slow.to_str().unwrap(),
        "--out",
        sim.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert_one_line_error(
        &err,
        &["parquet-thrift-skip-loop.parquet", "corrupt Parquet file"],
    );
    assert!(!sim.exists());
    // tokenizers panicked while reading this file's decoder.
    let tmp = copy_of_tiny_a();
    std::fs::copy(
        fuzz.join("tokenizer-decoder-panic.json"),
        tmp.path().join("tokenizer.json"),
    )
    .unwrap();
    let (ok, err) = interlace(&[
        "generate",
        "--model",
        tmp.path().to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert!(!ok);
    assert_one_line_error(&err, &["tokenizer.json", "cannot load tokenizer"]);
}
