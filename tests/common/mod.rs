//! Helpers shared by the integration tests: fixture paths and tensor comparison.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use interlace::processor::image::decode_image_file;
use interlace::processor::{DynamicImage, Message};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

pub const MODELS: &[&str] = &["tiny-a", "tiny-b"];
pub const CASES: &[&str] = &["text", "one_image", "two_images", "two_images_multiturn"];

pub fn load_tensors(path: &std::path::Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The tensors transformers produced for one fixture case.
pub fn load_case(model: &str, case: &str) -> HashMap<String, Tensor> {
    load_tensors(&fixtures().join(format!("cases/{model}/{case}.safetensors")))
}

pub fn case_json(model: &str, case: &str) -> serde_json::Value {
    let path = fixtures()
        .join("cases")
        .join(model)
        .join(format!("{case}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn to_u32(t: &Tensor) -> Vec<u32> {
    to_i64(t).into_iter().map(|x| x as u32).collect()
}

pub fn to_i64(t: &Tensor) -> Vec<i64> {
    t.to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
}

/// Every element of a tensor as f32, flattened.
pub fn to_f32_vec(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// A failed command whose stderr is one line mentioning `needle`.
pub fn assert_one_line_error(out: &std::process::Output, needle: &str) {
    assert!(!out.status.success(), "the command should have failed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle) && err.lines().count() == 1, "{err}");
}

/// max |a - b| / max |b|: the error relative to the reference tensor's scale.
pub fn rel_err(ours: &Tensor, reference: &Tensor) -> f32 {
    assert_eq!(ours.dims(), reference.dims(), "shape mismatch");
    let (a, b) = (to_f32_vec(ours), to_f32_vec(reference));
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(diff.is_finite(), "non-finite values");
    diff / scale
}

/// What the fixtures passed to transformers' processor: `PIL.Image.open(path)`, mode kept
/// (the processor then composites RGBA onto white).
pub fn open_like_pil(rel: &str) -> DynamicImage {
    decode_image_file(&fixtures().join(rel)).unwrap()
}

/// A fixture case's conversation: messages, images in order, add_generation_prompt.
pub fn case_conversation(model: &str, case: &str) -> (Vec<Message>, Vec<DynamicImage>, bool) {
    let json = case_json(model, case);
    let messages = json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Message::from_json(m).unwrap())
        .collect();
    let images = json["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| open_like_pil(p.as_str().unwrap()))
        .collect();
    (
        messages,
        images,
        json["add_generation_prompt"].as_bool().unwrap(),
    )
}

/// Mean over tokens of cos(a[t], b[t]) for (tokens, hidden) tensors, in f64, straight from
/// the definition (the expected similarity scores from transformers' hidden states).
pub fn mean_cosine(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
    let b = b.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
    let per_token: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| {
            let dot: f64 = x.iter().zip(y).map(|(p, q)| p * q).sum();
            let nx: f64 = x.iter().map(|p| p * p).sum::<f64>().sqrt();
            let ny: f64 = y.iter().map(|q| q * q).sum::<f64>().sqrt();
            dot / (nx * ny)
        })
        .collect();
    per_token.iter().sum::<f64>() / per_token.len() as f64
}

/// Asserts that sample `s` of `scores` holds, for every pack k in 1..=3 and start i, the
/// mean token cosine of transformers' hidden states h_i and h_{i+k} of fixture `case`.
pub fn assert_scores_match_case(
    scores: &interlace::prune::SimilarityScores,
    s: usize,
    model: &str,
    case: &str,
) {
    let t = load_case(model, case);
    let l = scores.num_layers();
    for k in 1..=3 {
        for i in 0..l - k {
            let expected = mean_cosine(
                &t[&format!("hidden_state.{i}")],
                &t[&format!("hidden_state.{}", i + k)],
            );
            let ours = scores.samples(k, i).unwrap()[s];
            assert!(
                (ours - expected).abs() < 1e-4,
                "{model}/{case}: s_{k}({i}) = {ours}, transformers gives {expected}"
            );
        }
        assert!(scores.samples(k, l - k).is_none(), "no pack may use h_L");
    }
}

/// The training fixture's conversations (tests/fixtures/train/data.json) with image paths
/// made absolute, so they can be written to a scratch directory.
pub fn train_data_absolute() -> Vec<serde_json::Value> {
    use serde_json::Value;
    let base = fixtures().join("train");
    let mut data: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(base.join("data.json")).unwrap()).unwrap();
    for s in &mut data {
        let abs = |v: &Value| Value::String(base.join(v.as_str().unwrap()).display().to_string());
        if let Some(img) = s.get_mut("image") {
            *img = match img {
                Value::Array(a) => Value::Array(a.iter().map(abs).collect()),
                ref other => abs(other),
            };
        }
    }
    data
}

/// A JSON file of `tests/fixtures/`, by path relative to it ("train/step.json").
pub fn fixture_json(rel: &str) -> serde_json::Value {
    let path = fixtures().join(rel);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The training fixture's conversations (tests/fixtures/train/data.json), labelled with
/// `model`'s processor.
pub fn prepared_train_data(model: &str) -> Vec<interlace::train::labels::Supervised> {
    let processor = interlace::processor::Processor::from_dir(model_dir(model)).unwrap();
    interlace::data::llava::read(&fixtures().join("train/data.json"))
        .unwrap()
        .iter()
        .map(|s| interlace::train::labels::prepare(&processor, s, 1 << 20).unwrap())
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Starts a training command and SIGKILLs it once its state directory `state` holds a
/// checkpoint of step 3 or later; the command must still be running then.
pub fn kill_after_third_checkpoint(mut cmd: std::process::Command, state: &std::path::Path) {
    use std::time::{Duration, Instant};
    let mut child = cmd.stderr(std::process::Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    loop {
        let step = std::fs::read_to_string(state.join("latest"))
            .ok()
            .and_then(|s| s.trim().strip_prefix("step-")?.parse::<usize>().ok());
        if step.is_some_and(|s| s >= 3) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}
