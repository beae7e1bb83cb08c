//! Greedy generation against transformers' `generate(do_sample=False)` (fixture by
//! tools/make_generate_fixtures.py): dense models and a pruned one.

mod common;

use common::{fixtures, model_dir};
use serde_json::Value;

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("generate.json")).unwrap())
        .unwrap()
}

#[test]
fn greedy_tokens_match_transformers() {
    // Every recorded gap is above 0: every token is compared.
    let placement = interlace::model::device::Placement::cpu();
    let (cases, tokens) = common::check_generations(&expected(), &placement, 0.0, false);
    assert_eq!(cases, 9);
    println!("{tokens} tokens of {cases} prompts identical");
}

#[test]
fn generate_prints_only_the_answer() {
    let expected = expected();
    let want = &expected["cases"]["tiny-a"]["cases"]["one_image"];
    let out = common::cli()
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
        // The expected tokens come from transformers with its PIL image processor.
        .args(["--image-backend", "pil"])
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
