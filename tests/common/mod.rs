//! Helpers shared by the integration tests: fixture paths and tensor comparison.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use interlace::processor::image::decode_image_file;
use interlace::processor::{DynamicImage, Message};

/// tests/fixtures of this repository; INTERLACE_REPO names the repository when the test
/// binary runs on another machine than the one that built it (scripts/gpu-check.sh).
pub fn fixtures() -> PathBuf {
    std::env::var_os("INTERLACE_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("tests/fixtures")
}

/// The interlace binary under test: cargo's, or the one INTERLACE_BIN names (the binary
/// carried to the GPU machine by scripts/gpu-check.sh).
pub fn bin() -> PathBuf {
    std::env::var_os("INTERLACE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_interlace")))
}

/// A command that runs [`bin`], for the tests to add arguments, environment or a working
/// directory to.
pub fn cli() -> std::process::Command {
    std::process::Command::new(bin())
}

/// Runs `interlace ARGS... PATHS...` and returns its output (whatever its exit status).
pub fn interlace(args: &[&str], paths: &[&std::path::Path]) -> std::process::Output {
    cli()
        .args(args)
        .args(paths)
        .output()
        .expect("run interlace")
}

/// Asserts that a command succeeded, showing its stderr if not; returns its stdout.
pub fn assert_ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "the command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

pub const MODELS: &[&str] = &["tiny-a", "tiny-b"];

/// The image backend the fixtures were made with (all but tests/fixtures/image_backends):
/// transformers' PIL ("slow") image processor, so the tests that compare with them ask for it.
pub const PIL: Option<interlace::processor::ImageBackend> =
    Some(interlace::processor::ImageBackend::Pil);
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
pub fn prepared_train_data(model: &str) -> Vec<interlace::data::labels::Supervised> {
    let processor = interlace::processor::Processor::from_dir(model_dir(model))
        .unwrap()
        .with_image_backend(PIL);
    interlace::data::llava::read(&fixtures().join("train/data.json"))
        .unwrap()
        .iter()
        .map(|s| interlace::data::labels::prepare(&processor, s, 1 << 20).unwrap())
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

/// Where transformers' bf16 reference lives: the committed CPU run (tests/fixtures/bf16,
/// by tools/make_bf16_fixtures.py) or, for the GPU tests, the directory that
/// scripts/gpu-check.sh filled with the same script on the GPU (INTERLACE_BF16_REF).
pub fn bf16_reference(gpu: bool) -> PathBuf {
    if gpu {
        PathBuf::from(std::env::var("INTERLACE_BF16_REF").expect(
            "INTERLACE_BF16_REF: the directory of `tools/make_bf16_fixtures.py --device cuda --out DIR` (scripts/gpu-check.sh sets it)",
        ))
    } else {
        fixtures().join("bf16")
    }
}

/// The worst relative error ([`rel_err`]) over every hidden state, and that of the
/// logits, of `model` on fixture case `case` against transformers' tensors in `reference`
/// (a directory of `<model>/<case>.safetensors`, or the f32 `cases/` layout).
pub fn forward_errors(
    model: &interlace::model::Model,
    name: &str,
    case: &str,
    reference: &std::path::Path,
) -> (f32, f32) {
    let inputs_case = load_case(name, case);
    let reference = load_tensors(&reference.join(name).join(format!("{case}.safetensors")));
    let device = model.device().clone();
    let input_ids = to_u32(&inputs_case["input_ids"]);
    let mm: Vec<u8> = match inputs_case.get("mm_token_type_ids") {
        Some(t) => to_i64(t).into_iter().map(|x| x as u8).collect(),
        None => input_ids
            .iter()
            .map(|&id| u8::from(id == model.config.image_token_id))
            .collect(),
    };
    let grids: Vec<[usize; 3]> = match inputs_case.get("image_grid_thw") {
        Some(t) => to_i64(t)
            .chunks(3)
            .map(|c| [c[0] as usize, c[1] as usize, c[2] as usize])
            .collect(),
        None => Vec::new(),
    };
    let inputs = interlace::model::ModelInputs {
        input_ids,
        mm_token_type_ids: mm,
        pixel_values: inputs_case
            .get("pixel_values")
            .map(|p| p.to_device(&device).unwrap()),
        image_grid_thw: grids,
    };
    let mut seen = interlace::model::CollectHidden::default();
    let logits = model.forward(&inputs, Some(&mut seen)).unwrap();
    let cpu = |t: &Tensor| t.to_device(&Device::Cpu).unwrap();
    let mut worst = 0f32;
    for (i, h) in seen.0.iter().enumerate() {
        let err = rel_err(
            &cpu(&h.squeeze(0).unwrap()),
            &reference[&format!("hidden_state.{i}")],
        );
        worst = worst.max(err);
    }
    (worst, rel_err(&cpu(&logits), &reference["logits"]))
}

/// Greedy generation of every case of a `generate.json` (tools/make_generate_fixtures.py
/// or tools/make_bf16_fixtures.py) on `placement`, compared with transformers' tokens:
/// identical up to the first step whose recorded best-vs-second logit gap is below
/// `min_gap` (from there on rounding may pick the other token), or everywhere when the
/// file records only `min_gap` and it is above `min_gap`. Returns (cases, tokens compared).
pub fn check_generations(
    expected: &serde_json::Value,
    placement: &interlace::model::device::Placement,
    min_gap: f64,
    batched: bool,
) -> (usize, usize) {
    use interlace::eval::generate::{eos_ids, greedy, greedy_batch, prompt_inputs};
    use interlace::processor::{load_image, Processor};
    let max_new = expected["max_new_tokens"].as_u64().unwrap() as usize;
    let (mut cases, mut compared) = (0, 0);
    for (label, entry) in expected["cases"].as_object().unwrap() {
        let tmp = tempfile::tempdir().unwrap();
        let src = model_dir(entry["model"].as_str().unwrap());
        let drop: Vec<usize> = serde_json::from_value(entry["drop"].clone()).unwrap();
        let dir = if drop.is_empty() {
            src
        } else {
            let n = interlace::model::ModelConfig::from_dir(&src)
                .unwrap()
                .text
                .num_hidden_layers;
            let plan = interlace::prune::Plan::from_roles("manual", 0.34, n, drop, vec![], vec![])
                .unwrap();
            let out = tmp.path().join("pruned");
            interlace::prune::surgery::prune_checkpoint(&src, &plan, &out).unwrap();
            out
        };
        let model =
            interlace::model::Model::load(&dir, placement.dtype, &placement.device).unwrap();
        let processor = Processor::from_dir(&dir).unwrap().with_image_backend(PIL);
        let eos = eos_ids(&dir, &processor).unwrap();
        let mut inputs = Vec::new();
        let mut wants = Vec::new();
        for (case, want) in entry["cases"].as_object().unwrap() {
            let images: Vec<_> = want["images"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| load_image(fixtures().join("images").join(i.as_str().unwrap())).unwrap())
                .collect();
            let input = prompt_inputs(
                &processor,
                &images,
                want["prompt"].as_str().unwrap(),
                &placement.device,
            )
            .unwrap();
            assert_eq!(
                input.input_ids.len() as u64,
                want["prompt_len"].as_u64().unwrap(),
                "{label} {case}: prompt length"
            );
            inputs.push(input);
            wants.push((case.clone(), want.clone()));
        }
        let outs = if batched {
            greedy_batch(&model, &inputs, max_new, &eos).unwrap()
        } else {
            inputs
                .iter()
                .map(|i| greedy(&model, i, max_new, &eos).unwrap())
                .collect()
        };
        for ((case, want), out) in wants.iter().zip(outs) {
            let tokens: Vec<u32> = serde_json::from_value(want["tokens"].clone()).unwrap();
            let n = match want.get("gaps").and_then(|g| g.as_array()) {
                Some(gaps) => gaps
                    .iter()
                    .position(|g| g.as_f64().unwrap() < min_gap)
                    .unwrap_or(tokens.len()),
                None if want["min_gap"].as_f64().unwrap() >= min_gap => tokens.len(),
                None => 0,
            };
            assert!(
                out.tokens.len() >= n,
                "{label} {case}: stopped after {} tokens",
                out.tokens.len()
            );
            assert_eq!(
                out.tokens[..n],
                tokens[..n],
                "{label} {case}: the first {n} tokens (gap >= {min_gap})"
            );
            cases += 1;
            compared += n;
        }
    }
    (cases, compared)
}

/// Three fixture prompts of tiny-b (two with images, one text-only) scored in one packed
/// similarity pass on `placement` (f32) give, sample by sample, the scores of
/// transformers' hidden states.
pub fn assert_packed_similarity_matches_transformers(
    placement: &interlace::model::device::Placement,
) {
    use interlace::model::ops::Grad;
    use interlace::model::{Embedded, Model, ModelInputs};
    use interlace::prune::{SimilarityAccumulator, SimilarityScores};
    let model = Model::load(&model_dir("tiny-b"), placement.dtype, &placement.device).unwrap();
    let processor = interlace::processor::Processor::from_dir(model_dir("tiny-b"))
        .unwrap()
        .with_image_backend(PIL);
    let cases = ["one_image", "text", "two_images"];
    let mut parts: Vec<Embedded> = Vec::new();
    for case in cases {
        let (messages, images, gen) = case_conversation("tiny-b", case);
        let enc = processor.encode(&messages, &images, gen).unwrap();
        let inputs = ModelInputs::from_encoded(&enc, &placement.device).unwrap();
        parts.push(model.embed(&inputs, Grad::None).unwrap());
    }
    let segments: Vec<usize> = parts.iter().map(|e| e.embeds.dim(1).unwrap()).collect();
    let mut acc = SimilarityAccumulator::new(model.layers.len(), 3).unwrap();
    {
        let mut obs = acc.pack(segments);
        let emb = Embedded::pack(parts).unwrap();
        model.run_decoder(&emb, Some(&mut obs), Grad::None).unwrap();
    }
    let scores = SimilarityScores::new("tiny-b", "qwen3_vl", 6, acc.into_packs()).unwrap();
    for (s, case) in cases.iter().enumerate() {
        assert_scores_match_case(&scores, s, "tiny-b", case);
    }
}

/// How far transformers' bf16 tensors in `reference` are from its f32 ones (the committed
/// f32 fixtures): worst hidden state and logits, as [`rel_err`].
pub fn bf16_reference_errors(name: &str, case: &str, reference: &std::path::Path) -> (f32, f32) {
    let f32_case = load_case(name, case);
    let bf16 = load_tensors(&reference.join(name).join(format!("{case}.safetensors")));
    let worst = (0..)
        .map_while(|i| bf16.get(&format!("hidden_state.{i}")).map(|t| (i, t)))
        .map(|(i, t)| rel_err(t, &f32_case[&format!("hidden_state.{i}")]))
        .fold(0f32, f32::max);
    (worst, rel_err(&bf16["logits"], &f32_case["logits"]))
}

/// Tolerances of a bf16 step against PyTorch's bf16 step with f32 masters (both sides'
/// bf16 roundings differ in place: packed against per-conversation forward passes, fused
/// against separate ops).
pub struct Bf16Tolerances {
    pub loss: f64,
    pub grad_norm: f64,
    pub grads: f32,
    /// Largest |master - torch's master| per step taken, in units of the learning rate:
    /// an AdamW step moves each weight by about lr, so an element whose tiny gradient has
    /// the other sign on the two sides may end up 2 lr apart per step.
    pub weights_in_lr: f32,
    /// Most elements must agree far better: the share more than 0.1 lr apart.
    pub far_share: f64,
}

/// Two fine-tuning steps in bf16 with f32 master weights on `device` against PyTorch's
/// (`step_bf16.json` and `.safetensors` in `reference_dir`, by tools/make_bf16_train_fixture.py).
pub fn check_two_bf16_steps(
    device: &candle_core::Device,
    reference_dir: &std::path::Path,
    tol: &Bf16Tolerances,
    grad_checkpoint: bool,
    micro_batch: usize,
    tensor_update: Option<bool>,
) {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reference_dir.join("step_bf16.json")).unwrap(),
    )
    .unwrap();
    let reference = load_tensors(&reference_dir.join("step_bf16.safetensors"));
    let name = meta["model"].as_str().unwrap();
    let layers: Vec<usize> = serde_json::from_value(meta["finetune"].clone()).unwrap();
    let lr = meta["lr"].as_f64().unwrap();
    let data = prepared_train_data(name);
    let model = interlace::model::Model::load_with_f32_layers(
        &model_dir(name),
        DType::BF16,
        device,
        &layers,
    )
    .unwrap();
    let options = interlace::train::trainer::TrainOptions {
        grad_checkpoint,
        micro_batch,
        max_grad_norm: meta["max_grad_norm"].as_f64().unwrap(),
        tensor_update,
        ..Default::default()
    };
    let mut trainer = interlace::train::trainer::Trainer::new(model, &layers, options).unwrap();
    assert_eq!(trainer.compute, DType::BF16);
    let steps = meta["steps"].as_array().unwrap();
    let want_vec = |key: &str| to_f32_vec(reference.get(key).unwrap_or_else(|| panic!("{key}")));
    for (s, batch) in step_batches(&meta, &data).into_iter().enumerate() {
        if s == 0 {
            let (grads, _, _) = trainer.gradients(&batch).unwrap();
            let mut worst = 0f32;
            for (p, g) in trainer.params.iter().zip(&grads) {
                let want = want_vec(&format!("grad.{}", p.name));
                let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
                assert!(g.iter().any(|&x| x != 0.0), "{}: no gradient", p.name);
                worst = worst.max(max_abs_diff(g, &want) / scale);
            }
            println!("bf16 step 1: worst gradient error {worst:.2e} of the largest");
            assert!(worst < tol.grads, "gradients differ by {worst:e}");
        }
        let stats = trainer.step(&batch, lr).unwrap();
        let want = &steps[s];
        let want_loss = want["loss"].as_f64().unwrap();
        let want_norm = want["grad_norm"].as_f64().unwrap();
        let (loss_err, norm_err) = (
            (stats.loss - want_loss).abs() / want_loss,
            (stats.grad_norm - want_norm).abs() / want_norm,
        );
        let (mut worst, mut far, mut count) = (0f32, 0usize, 0usize);
        for (p, v) in trainer.params.iter().zip(trainer.values().unwrap()) {
            let want = want_vec(&format!("after{}.{}", s + 1, p.name));
            worst = worst.max(max_abs_diff(&v, &want));
            far += v
                .iter()
                .zip(&want)
                .filter(|(a, b)| (*a - *b).abs() > 0.1 * lr as f32)
                .count();
            count += v.len();
        }
        let worst_lr = worst / lr as f32;
        let far_share = far as f64 / count as f64;
        println!(
            "bf16 step {}: loss {:.6} vs torch {want_loss:.6} ({loss_err:.1e}), grad norm {:.5} vs {want_norm:.5} ({norm_err:.1e}), masters within {worst_lr:.3} lr, {:.2} % of them more than 0.1 lr apart",
            s + 1,
            stats.loss,
            stats.grad_norm,
            far_share * 100.0
        );
        assert!(loss_err < tol.loss, "loss");
        assert!(norm_err < tol.grad_norm, "grad norm");
        let bound = tol.weights_in_lr * (s + 1) as f32;
        assert!(worst_lr < bound, "masters differ by {worst_lr} lr");
        assert!(
            far_share < tol.far_share,
            "{far_share} of the masters more than 0.1 lr apart"
        );
    }
}

/// Two f32 fine-tuning steps of tests/fixtures/train/step.json on `device` against PyTorch:
/// step-1 gradients (1e-4 relative, none zero), loss (1e-5), gradient norm (1e-4 relative),
/// updated weights (1e-5); frozen layers untouched. `tensor_update`: as
/// [`interlace::train::trainer::TrainOptions::tensor_update`].
pub fn check_two_f32_steps(
    device: &Device,
    grad_checkpoint: bool,
    micro_batch: usize,
    workers: usize,
    tensor_update: Option<bool>,
    for_finetune: bool,
) -> Vec<Vec<f32>> {
    let meta = fixture_json("train/step.json");
    let reference = load_tensors(&fixtures().join("train/step.safetensors"));
    let name = meta["model"].as_str().unwrap();
    let layers: Vec<usize> = serde_json::from_value(meta["finetune"].clone()).unwrap();
    let lr = meta["lr"].as_f64().unwrap();
    let data = prepared_train_data(name);
    // As `interlace finetune` loads it (on the CPU the frozen weights laid out for the
    // forward product: for tiny-b's widths their transposes), or as plain `Model::load`.
    let model = if for_finetune {
        interlace::model::Model::load_for_finetune(&model_dir(name), DType::F32, device, &layers)
            .unwrap()
    } else {
        interlace::model::Model::load(&model_dir(name), DType::F32, device).unwrap()
    };
    let frozen_before = to_f32_vec(&model.layers[0].self_attn.q_proj.weight);
    let options = interlace::train::trainer::TrainOptions {
        grad_checkpoint,
        micro_batch,
        max_grad_norm: meta["max_grad_norm"].as_f64().unwrap(),
        workers,
        tensor_update,
        ..Default::default()
    };
    let mut trainer = interlace::train::trainer::Trainer::new(model, &layers, options).unwrap();
    let reference_vec = |key: &str| -> Vec<f32> {
        to_f32_vec(reference.get(key).unwrap_or_else(|| panic!("{key}")))
    };
    let steps = meta["steps"].as_array().unwrap();
    for (s, batch) in step_batches(&meta, &data).into_iter().enumerate() {
        if s == 0 {
            let (grads, _, _) = trainer.gradients(&batch).unwrap();
            for (p, g) in trainer.params.iter().zip(&grads) {
                let want = reference_vec(&format!("grad.{}", p.name));
                let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
                let err = max_abs_diff(g, &want) / scale;
                assert!(scale > 0.0, "{}: zero reference gradient", p.name);
                assert!(g.iter().any(|&x| x != 0.0), "{}: no gradient", p.name);
                assert!(err < 1e-4, "{}: gradient rel err {err}", p.name);
            }
        }
        let stats = trainer.step(&batch, lr).unwrap();
        let want = &steps[s];
        let want_loss = want["loss"].as_f64().unwrap();
        let want_norm = want["grad_norm"].as_f64().unwrap();
        println!(
            "step {}: loss {:.7} vs torch {want_loss:.7}, grad norm {:.6} vs torch {want_norm:.6}",
            s + 1,
            stats.loss,
            stats.grad_norm
        );
        assert!((stats.loss - want_loss).abs() < 1e-5, "loss");
        assert!(
            (stats.grad_norm - want_norm).abs() / want_norm < 1e-4,
            "grad norm"
        );
        assert_eq!(
            stats.supervised_tokens as u64,
            want["tokens"].as_u64().unwrap()
        );
        let values = trainer.values().unwrap();
        // AdamW's first step moves a weight by lr·g/(|g| + eps): by lr whatever |g| is,
        // except where |g| is within a hundred times eps (1e-8), and there the gradient
        // itself is at f32's noise level, so the step is noise on both sides: a relative
        // error of 10 % in a 1e-7 gradient moves the weight by 1 % of lr. Those few
        // weights (|g| < 1e-6 in torch's first step) are held to 5 % of lr (a flipped
        // sign would be 200 %), the rest (all but a handful) to 1e-6.
        let (mut worst, mut worst_noise, mut noise) = (0f32, 0f32, 0usize);
        for (p, v) in trainer.params.iter().zip(&values) {
            let want = reference_vec(&format!("after{}.{}", s + 1, p.name));
            let g = reference_vec(&format!("grad.{}", p.name));
            for ((a, b), g) in v.iter().zip(&want).zip(&g) {
                if g.abs() < 1e-6 {
                    worst_noise = worst_noise.max((a - b).abs());
                    noise += 1;
                } else {
                    worst = worst.max((a - b).abs());
                }
            }
        }
        println!(
            "step {}: max |weight - torch| = {worst:e}; at the {noise} weights with noise-level gradients {worst_noise:e}",
            s + 1
        );
        assert!(worst < 1e-6, "updated weights differ by {worst}");
        assert!(
            worst_noise < 0.05 * lr as f32,
            "weights with noise-level gradients differ by {worst_noise}"
        );
    }
    let frozen_after = to_f32_vec(&trainer.model.layers[0].self_attn.q_proj.weight);
    assert_eq!(frozen_before, frozen_after, "a frozen layer changed");
    trainer.values().unwrap()
}

/// bf16 forward passes of both fixture models on `device` against transformers' bf16 run in
/// `reference`: every hidden state and the logits within `tol` (relative to the largest
/// value), and no further from transformers' f32 than `ratio` times transformers' own bf16.
pub fn assert_bf16_forward_matches(
    device: &Device,
    reference: &std::path::Path,
    tol: f32,
    ratio: f32,
) {
    for &name in MODELS {
        let model = interlace::model::Model::load(&model_dir(name), DType::BF16, device).unwrap();
        for &case in CASES {
            let (hidden, logits) = forward_errors(&model, name, case, reference);
            let (ours_h, ours_l) = forward_errors(&model, name, case, &fixtures().join("cases"));
            let (theirs_h, theirs_l) = bf16_reference_errors(name, case, reference);
            eprintln!(
                "{name}/{case}: bf16 against transformers' bf16: hidden {hidden:.2e}, logits {logits:.2e}; \
                 against f32: ours {ours_h:.2e} / {ours_l:.2e}, transformers' {theirs_h:.2e} / {theirs_l:.2e}"
            );
            assert!(
                hidden < tol,
                "{name}/{case}: hidden states differ by {hidden:e}"
            );
            assert!(logits < tol, "{name}/{case}: logits differ by {logits:e}");
            assert!(ours_h <= ratio * theirs_h, "{name}/{case}: hidden states");
            assert!(ours_l <= ratio * theirs_l, "{name}/{case}: logits");
        }
    }
}

/// The conversations of each optimizer step of a training fixture (`batches`: per step,
/// micro-batches of indices into `data`), micro-batches concatenated.
pub fn step_batches(
    meta: &serde_json::Value,
    data: &[interlace::data::labels::Supervised],
) -> Vec<Vec<interlace::data::labels::Supervised>> {
    meta["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| {
            step.as_array()
                .unwrap()
                .iter()
                .flat_map(|mb| serde_json::from_value::<Vec<usize>>(mb.clone()).unwrap())
                .map(|i| data[i].clone())
                .collect()
        })
        .collect()
}

/// Rewrites `dir/model.safetensors` with element `flat` (row-major) of tensor `name` set to
/// `value` (a NaN or an infinity, for tests of bad weights).
#[allow(dead_code)]
pub fn poison_element(dir: &std::path::Path, name: &str, flat: usize, value: f32) {
    use candle_core::{DType, Device, Tensor};
    let path = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let t = tensors.get(name).unwrap_or_else(|| panic!("no {name}"));
    let (shape, dtype) = (t.shape().clone(), t.dtype());
    let mut v = t
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    v[flat] = value;
    let t = Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    tensors.insert(name.to_string(), t);
    candle_core::safetensors::save(&tensors, &path).unwrap();
}
