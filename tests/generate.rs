//! Greedy generation against transformers' `generate(do_sample=False)` (fixture by
//! tools/make_generate_fixtures.py): dense models and a pruned one.

mod common;

use std::path::PathBuf;

use candle_core::{DType, Device};
use common::{fixtures, model_dir};
use interlace::eval::generate::{eos_ids, greedy, prompt_inputs};
use interlace::model::Qwen3VlModel;
use interlace::processor::{load_image, Processor};
use interlace::prune::surgery::prune_checkpoint;
use interlace::prune::Plan;
use serde_json::Value;

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("generate.json")).unwrap())
        .unwrap()
}

/// The model directory of a fixture label; pruned ones are made by our own surgery.
fn model_for(entry: &Value, tmp: &tempfile::TempDir) -> PathBuf {
    let src = model_dir(entry["model"].as_str().unwrap());
    let drop: Vec<usize> = serde_json::from_value(entry["drop"].clone()).unwrap();
    if drop.is_empty() {
        return src;
    }
    let plan = Plan::from_roles("manual", 0.34, 6, drop, vec![], vec![]).unwrap();
    let out = tmp.path().join("pruned");
    prune_checkpoint(&src, &plan, &out).unwrap();
    out
}

#[test]
fn greedy_tokens_match_transformers() {
    let expected = expected();
    let max_new = expected["max_new_tokens"].as_u64().unwrap() as usize;
    let device = Device::Cpu;
    for (label, entry) in expected["cases"].as_object().unwrap() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = model_for(entry, &tmp);
        let model = Qwen3VlModel::load(&dir, DType::F32, &device).unwrap();
        let processor = Processor::from_dir(&dir).unwrap();
        let eos = eos_ids(&dir, &processor).unwrap();
        for (case, want) in entry["cases"].as_object().unwrap() {
            let images: Vec<_> = want["images"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| load_image(fixtures().join("images").join(i.as_str().unwrap())).unwrap())
                .collect();
            let inputs = prompt_inputs(
                &processor,
                &images,
                want["prompt"].as_str().unwrap(),
                &device,
            )
            .unwrap();
            assert_eq!(
                inputs.input_ids.len() as u64,
                want["prompt_len"].as_u64().unwrap()
            );
            let out = greedy(&model, &inputs, max_new, &eos).unwrap();
            let tokens: Vec<u32> = serde_json::from_value(want["tokens"].clone()).unwrap();
            assert_eq!(out.tokens, tokens, "{label} {case}");
            println!("{label} {case}: {} tokens identical", tokens.len());
        }
    }
}

#[test]
fn generate_prints_only_the_answer() {
    let expected = expected();
    let want = &expected["cases"]["tiny-a"]["cases"]["one_image"];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_interlace"))
        .arg("generate")
        .arg("--model")
        .arg(model_dir("tiny-a"))
        .arg("--image")
        .arg(
            fixtures()
                .join("images")
                .join(want["images"][0].as_str().unwrap()),
        )
        .args(["--prompt", want["prompt"].as_str().unwrap()])
        .args(["--max-new-tokens", &expected["max_new_tokens"].to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout, format!("{}\n", want["text"].as_str().unwrap()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("prompt tokens"));
}

/// Batched greedy generation (packed prefill, left-padded decoding: what `eval --batch` and
/// a GPU use) gives every prompt transformers' tokens, here all nine prompts of a model in
/// one batch.
#[test]
fn batched_greedy_tokens_match_transformers() {
    let placement = interlace::model::device::Placement::cpu();
    let (cases, tokens) = common::check_generations(&expected(), &placement, 0.0, true);
    assert_eq!(cases, 9);
    println!("{tokens} tokens of {cases} prompts identical");
}
