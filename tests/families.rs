//! The text-only families, Qwen3 (`Qwen3ForCausalLM`) and Llama (`LlamaForCausalLM` with
//! Llama 3 RoPE scaling and biased attention), against transformers (fixtures by
//! tools/make_text_family_fixtures.py): token ids, every hidden state and the logits within
//! 1e-4, similarity scores from one pass against the same scores from transformers' hidden
//! states, greedy generation token for token, a pruned checkpoint against transformers'
//! own layer deletion, one fine-tuning step against PyTorch, and every command on each.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{assert_ok, fixtures, load_tensors, max_abs_diff, mean_cosine, to_f32_vec};
use interlace::model::{CollectHidden, Family, Model, ModelInputs};
use interlace::processor::{Message, Processor};
use serde_json::Value;

const FAMILIES: &[(&str, Family)] = &[("qwen3", Family::Qwen3), ("llama", Family::Llama)];

fn family_dir(name: &str) -> PathBuf {
    fixtures().join("families").join(name)
}

fn model_dir(name: &str) -> PathBuf {
    family_dir(name).join("model")
}

fn meta(name: &str, file: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(family_dir(name).join(file)).unwrap()).unwrap()
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|x| x as u32)
        .collect()
}

/// The fixture's cases: (name, messages) as written by the script.
fn cases(name: &str) -> Vec<(String, Vec<Message>)> {
    let m = meta(name, "cases.json");
    m["cases"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(case, c)| {
            let msgs = c["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| Message::text(t["role"].as_str().unwrap(), t["content"].as_str().unwrap()))
                .collect();
            (case.clone(), msgs)
        })
        .collect()
}

/// Our processor's token ids for a case, checked equal to transformers'.
fn inputs(
    name: &str,
    processor: &Processor,
    case: &str,
    msgs: &[Message],
    t: &HashMap<String, Tensor>,
) -> ModelInputs {
    let enc = processor.encode(msgs, &[], true).unwrap();
    assert_eq!(
        enc.input_ids,
        ids(&t[&format!("{case}.input_ids")]),
        "{name}/{case}: token ids"
    );
    ModelInputs::from_encoded(&enc, &Device::Cpu).unwrap()
}

#[test]
fn config_names_the_family_and_its_parts() {
    for &(name, family) in FAMILIES {
        let model = Model::load(&model_dir(name), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(model.config.family, family);
        assert!(model.visual.is_none(), "{name}: a text-only model");
        assert_eq!(model.names.decoder, "model");
        let t = &model.config.text;
        assert_eq!(t.qk_norm, family == Family::Qwen3, "{name}: q/k norms");
        assert_eq!(t.qkv_bias, family == Family::Llama, "{name}: biases");
        assert_eq!(
            model.lm_head.is_none(),
            family == Family::Qwen3,
            "{name}: tied head"
        );
    }
}

#[test]
fn hidden_states_and_logits_match_transformers() {
    for &(name, _) in FAMILIES {
        let dir = model_dir(name);
        let model = Model::load(&dir, DType::F32, &Device::Cpu).unwrap();
        let processor = Processor::from_dir(&dir).unwrap();
        let t = load_tensors(&family_dir(name).join("cases.safetensors"));
        for (case, msgs) in cases(name) {
            let inputs = inputs(name, &processor, &case, &msgs, &t);
            let mut hidden = CollectHidden::default();
            let logits = model.forward(&inputs, Some(&mut hidden)).unwrap();
            let n = meta(name, "cases.json")["cases"][&case]["hidden_states"]
                .as_u64()
                .unwrap() as usize;
            assert_eq!(hidden.0.len(), n, "{name}/{case}: hidden state count");
            for (i, h) in hidden.0.iter().enumerate() {
                let want = to_f32_vec(&t[&format!("{case}.hidden.{i}")]);
                let d = max_abs_diff(&to_f32_vec(&h.squeeze(0).unwrap()), &want);
                assert!(d < 1e-4, "{name}/{case}: hidden state {i} differs by {d}");
            }
            let d = max_abs_diff(
                &to_f32_vec(&logits),
                &to_f32_vec(&t[&format!("{case}.logits")]),
            );
            println!("{name}/{case}: max |logits - transformers| = {d:e}");
            assert!(d < 1e-4, "{name}/{case}: logits differ by {d}");
        }
    }
}

#[test]
fn similarity_from_one_pass_matches_transformers_hidden_states() {
    use interlace::prune::{SimilarityAccumulator, SimilarityScores};
    for &(name, _) in FAMILIES {
        let dir = model_dir(name);
        let model = Model::load(&dir, DType::F32, &Device::Cpu).unwrap();
        let processor = Processor::from_dir(&dir).unwrap();
        let t = load_tensors(&family_dir(name).join("cases.safetensors"));
        let l = model.config.text.num_hidden_layers;
        let mut acc = SimilarityAccumulator::new(l, 3).unwrap();
        let cases = cases(name);
        for (case, msgs) in &cases {
            let inputs = inputs(name, &processor, case, msgs, &t);
            let emb = model.embed(&inputs, Default::default()).unwrap();
            let mut obs = acc.sample();
            model
                .run_decoder(&emb, Some(&mut obs), Default::default())
                .unwrap();
        }
        let scores = SimilarityScores::new(name, name, l, acc.into_packs()).unwrap();
        for (s, (case, _)) in cases.iter().enumerate() {
            for k in 1..=3 {
                for i in 0..l - k {
                    let want = mean_cosine(
                        &t[&format!("{case}.hidden.{i}")],
                        &t[&format!("{case}.hidden.{}", i + k)],
                    );
                    let ours = scores.samples(k, i).unwrap()[s];
                    assert!(
                        (ours - want).abs() < 1e-4,
                        "{name}/{case}: s_{k}({i}) = {ours}, transformers {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    for &(name, _) in FAMILIES {
        let dir = model_dir(name);
        let model = Model::load(&dir, DType::F32, &Device::Cpu).unwrap();
        let processor = Processor::from_dir(&dir).unwrap();
        let t = load_tensors(&family_dir(name).join("cases.safetensors"));
        for (case, msgs) in cases(name) {
            let inputs = inputs(name, &processor, &case, &msgs, &t);
            let want = ids(&t[&format!("{case}.generated")]);
            let got = interlace::eval::generate::greedy(&model, &inputs, want.len(), &[]).unwrap();
            assert_eq!(got.tokens, want, "{name}/{case}: greedy tokens");
        }
    }
}

fn write_plan(path: &Path, num_layers: usize, drop: &[usize]) {
    let kept: Vec<usize> = (0..num_layers).filter(|l| !drop.contains(l)).collect();
    let plan = serde_json::json!({
        "strategy": "manual", "ratio": drop.len() as f64 / num_layers as f64,
        "num_layers": num_layers, "drop": drop, "finetune": [], "freeze": kept,
        "anchors": [], "kept": kept,
    });
    std::fs::write(path, plan.to_string()).unwrap();
}

#[test]
fn pruned_checkpoint_matches_transformers_layer_deletion() {
    for &(name, _) in FAMILIES {
        let tmp = tempfile::tempdir().unwrap();
        let drop: Vec<usize> =
            serde_json::from_value(meta(name, "cases.json")["drop"].clone()).unwrap();
        let plan = tmp.path().join("plan.json");
        write_plan(&plan, 5, &drop);
        let out = tmp.path().join("pruned");
        assert_ok(
            &common::cli()
                .arg("prune")
                .arg("--model")
                .arg(model_dir(name))
                .arg("--plan")
                .arg(&plan)
                .arg("--out")
                .arg(&out)
                .output()
                .unwrap(),
        );
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(
            config["num_hidden_layers"],
            5 - drop.len(),
            "{name}: config.json layer count"
        );
        assert!(
            config.get("text_config").is_none(),
            "{name}: no text_config added"
        );
        let model = Model::load(&out, DType::F32, &Device::Cpu).unwrap();
        let kept: Vec<usize> = model.layers.iter().map(|l| l.original_index).collect();
        assert_eq!(
            kept,
            (0..5).filter(|l| !drop.contains(l)).collect::<Vec<_>>()
        );
        let processor = Processor::from_dir(&out).unwrap();
        let t = load_tensors(&family_dir(name).join("cases.safetensors"));
        let want = load_tensors(&family_dir(name).join("pruned.safetensors"));
        for (case, msgs) in cases(name) {
            let inputs = inputs(name, &processor, &case, &msgs, &t);
            let logits = model.forward(&inputs, None).unwrap();
            let d = max_abs_diff(
                &to_f32_vec(&logits),
                &to_f32_vec(&want[&format!("{case}.logits")]),
            );
            assert!(
                d < 1e-4,
                "{name}/{case}: pruned logits differ from transformers' deletion by {d}"
            );
        }
    }
}

/// One AdamW step on two layers of a conversation (LLaVA JSON: text only for Qwen3 and
/// Llama, with an image for Qwen2-VL and Qwen2.5-VL): our labels equal the script's (found
/// by tokenising rendered prefixes), and the loss, the gradient norm, the gradients and the
/// updated weights equal PyTorch's.
#[test]
fn one_finetuning_step_matches_pytorch() {
    use interlace::train::trainer::{TrainOptions, Trainer};
    for &(name, _) in FAMILIES.iter().chain(VL_FAMILIES) {
        let dir = model_dir(name);
        let m = meta(name, "step.json");
        let reference = load_tensors(&family_dir(name).join("step.safetensors"));
        // The script ran transformers' PIL image processor.
        let processor = Processor::from_dir(&dir)
            .unwrap()
            .with_image_backend(common::PIL);
        let samples =
            interlace::data::llava::read(&family_dir(name).join("step_data.json")).unwrap();
        let data: Vec<_> = samples
            .iter()
            .map(|s| interlace::data::labels::prepare(&processor, s, 1 << 20).unwrap())
            .collect();
        assert_eq!(
            data[0].enc.input_ids,
            ids(&reference["input_ids"]),
            "{name}: token ids"
        );
        let mask: Vec<bool> = ids(&reference["supervised"])
            .iter()
            .map(|&x| x == 1)
            .collect();
        assert_eq!(data[0].supervised, mask, "{name}: supervised tokens");
        let model = Model::load(&dir, DType::F32, &Device::Cpu).unwrap();
        let layers: Vec<usize> = serde_json::from_value(m["finetune"].clone()).unwrap();
        let options = TrainOptions {
            max_grad_norm: m["max_grad_norm"].as_f64().unwrap(),
            ..Default::default()
        };
        let mut trainer = Trainer::new(model, &layers, options).unwrap();
        let want = |key: &str| {
            to_f32_vec(
                reference
                    .get(key)
                    .unwrap_or_else(|| panic!("{name}: {key}")),
            )
        };
        let (grads, _, _) = trainer.gradients(&data).unwrap();
        assert!(!trainer.params.is_empty());
        for (p, g) in trainer.params.iter().zip(&grads) {
            let w = want(&format!("grad.{}", p.name));
            let scale = w.iter().fold(0f32, |a, x| a.max(x.abs()));
            assert!(
                g.iter().any(|&x| x != 0.0),
                "{name}: {} gets no gradient",
                p.name
            );
            let err = max_abs_diff(g, &w) / scale;
            assert!(err < 1e-4, "{name}: {} gradient rel err {err}", p.name);
        }
        let stats = trainer.step(&data, m["lr"].as_f64().unwrap()).unwrap();
        assert_eq!(
            stats.supervised_tokens as u64,
            m["tokens"].as_u64().unwrap(),
            "{name}: supervised tokens"
        );
        let (loss, norm) = (
            m["loss"].as_f64().unwrap(),
            m["grad_norm"].as_f64().unwrap(),
        );
        assert!(
            (stats.loss - loss).abs() / loss < 1e-6,
            "{name}: loss {} vs {loss}",
            stats.loss
        );
        assert!(
            (stats.grad_norm - norm).abs() / norm < 1e-4,
            "{name}: grad norm {} vs {norm}",
            stats.grad_norm
        );
        // As in tests/finetune.rs: AdamW's first step moves a weight by about lr whatever
        // its gradient, except at noise-level gradients (< 1e-6, where a difference in the
        // sum's last bits moves lr·g/(|g| + 1e-8) by several per cent): those are held to
        // 10 % of lr (a flipped sign would be about 190 %). Measured: one weight of
        // Qwen2-VL's layer 2 gate_proj (torch gradient -1.7e-7) is 6.5 % of lr off.
        let lr = m["lr"].as_f64().unwrap() as f32;
        let (mut worst, mut worst_noise) = (0f32, 0f32);
        for (p, v) in trainer.params.iter().zip(trainer.values().unwrap()) {
            let after = want(&format!("after1.{}", p.name));
            let g = want(&format!("grad.{}", p.name));
            for ((a, b), g) in v.iter().zip(&after).zip(&g) {
                if g.abs() < 1e-6 {
                    worst_noise = worst_noise.max((a - b).abs());
                } else {
                    worst = worst.max((a - b).abs());
                }
            }
        }
        println!(
            "{name}: loss {} vs torch {loss}; max |weight - torch| {worst:e}",
            stats.loss
        );
        assert!(worst < 1e-5, "{name}: updated weights differ by {worst}");
        assert!(
            worst_noise < 0.1 * lr,
            "{name}: noise-level weights differ by {worst_noise}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Qwen2-VL and Qwen2.5-VL (fixtures by tools/make_qwen2_vl_fixtures.py: a text-only case and
// a one-image case, each with transformers' processor output, hidden states, logits, greedy
// tokens, and the logits of transformers' own deletion of decoder layer 1).

const VL_FAMILIES: &[(&str, Family)] = &[
    ("qwen2-vl", Family::Qwen2Vl),
    ("qwen2.5-vl", Family::Qwen25Vl),
];
const VL_CASES: &[&str] = &["text", "one_image"];

fn vl_case(name: &str, case: &str) -> (HashMap<String, Tensor>, Value) {
    (
        load_tensors(&family_dir(name).join(format!("{case}.safetensors"))),
        meta(name, &format!("{case}.json")),
    )
}

/// Our processor on the case's rendered prompt and images: transformers' token ids. (The
/// script ran transformers' PIL image processor, so ours runs its PIL backend too.)
fn vl_inputs(name: &str, processor: &Processor, case: &str) -> ModelInputs {
    let (t, m) = vl_case(name, case);
    let images: Vec<_> = m["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| common::open_like_pil(p.as_str().unwrap()))
        .collect();
    let enc = processor
        .encode_prompt(m["prompt"].as_str().unwrap().to_string(), &images)
        .unwrap();
    assert_eq!(
        enc.input_ids,
        ids(&t["input_ids"]),
        "{name}/{case}: token ids"
    );
    ModelInputs::from_encoded(&enc, &Device::Cpu).unwrap()
}

#[test]
fn vl_families_match_transformers() {
    for &(name, family) in VL_FAMILIES {
        let dir = model_dir(name);
        let model = Model::load(&dir, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(model.config.family, family);
        assert_eq!(
            (model.names.decoder.as_str(), model.names.visual.as_str()),
            ("model", "visual")
        );
        assert!(
            model.config.text.qkv_bias && !model.config.text.o_bias && !model.config.text.qk_norm
        );
        let processor = Processor::from_dir(&dir)
            .unwrap()
            .with_image_backend(common::PIL);
        for &case in VL_CASES {
            let (t, _) = vl_case(name, case);
            let inputs = vl_inputs(name, &processor, case);
            let mut hidden = CollectHidden::default();
            let logits = model.forward(&inputs, Some(&mut hidden)).unwrap();
            for (i, h) in hidden.0.iter().enumerate() {
                let want = to_f32_vec(&t[&format!("hidden_state.{i}")]);
                let d = max_abs_diff(&to_f32_vec(&h.squeeze(0).unwrap()), &want);
                assert!(d < 1e-4, "{name}/{case}: hidden state {i} differs by {d}");
            }
            assert!(t.contains_key(&format!("hidden_state.{}", hidden.0.len() - 1)));
            assert!(!t.contains_key(&format!("hidden_state.{}", hidden.0.len())));
            let d = max_abs_diff(&to_f32_vec(&logits), &to_f32_vec(&t["logits"]));
            println!("{name}/{case}: max |logits - transformers| = {d:e}");
            assert!(d < 1e-4, "{name}/{case}: logits differ by {d}");
            let want = ids(&t["generated_ids"]);
            let got = interlace::eval::generate::greedy(&model, &inputs, want.len(), &[]).unwrap();
            assert_eq!(got.tokens, want, "{name}/{case}: greedy tokens");
        }
    }
}

#[test]
fn vl_pruned_checkpoints_match_transformers_layer_deletion() {
    for &(name, _) in VL_FAMILIES {
        let tmp = tempfile::tempdir().unwrap();
        let plan = tmp.path().join("plan.json");
        write_plan(&plan, 3, &[1]);
        let out = tmp.path().join("pruned");
        assert_ok(
            &common::cli()
                .args(["prune", "--model"])
                .arg(model_dir(name))
                .arg("--plan")
                .arg(&plan)
                .arg("--out")
                .arg(&out)
                .output()
                .unwrap(),
        );
        let model = Model::load(&out, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(model.layers.len(), 2);
        let processor = Processor::from_dir(&out)
            .unwrap()
            .with_image_backend(common::PIL);
        for &case in VL_CASES {
            let (t, _) = vl_case(name, case);
            let logits = model
                .forward(&vl_inputs(name, &processor, case), None)
                .unwrap();
            let d = max_abs_diff(&to_f32_vec(&logits), &to_f32_vec(&t["logits_pruned"]));
            assert!(
                d < 1e-4,
                "{name}/{case}: pruned logits differ from transformers' deletion by {d}"
            );
        }
    }
}

/// Every command on every family: inspect, similarity, plan, prune, finetune, generate,
/// eval and latency, chained as a user would (text-only data for the text-only families,
/// LLaVA conversations with images for the multimodal ones; eval on a text-only
/// multiple-choice file, which every family can answer).
#[test]
fn every_command_runs_on_every_family() {
    let all: Vec<(&str, bool)> = FAMILIES
        .iter()
        .map(|f| (f.0, false))
        .chain(VL_FAMILIES.iter().map(|f| (f.0, true)))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let text_data = tmp.path().join("text.json");
    let rows: Vec<Value> = (0..6)
        .map(|i| {
            serde_json::json!({"conversations": [
                {"from": "human", "value": format!("What is {i} plus {i}?")},
                {"from": "gpt", "value": format!("{}.", 2 * i)}]})
        })
        .collect();
    std::fs::write(&text_data, serde_json::to_string(&rows).unwrap()).unwrap();
    let vl_data = tmp.path().join("vl.json");
    std::fs::write(
        &vl_data,
        serde_json::to_string(&common::train_data_absolute()).unwrap(),
    )
    .unwrap();
    let bench = fixtures().join("vlmevalkit/probe_AI2D_TEST.tsv");
    let image = fixtures().join("images/odd_97x61.png");
    let run = |args: &[&str], paths: &[(&str, &Path)]| -> String {
        let mut cmd = common::cli();
        cmd.args(args);
        for (flag, p) in paths {
            cmd.arg(flag).arg(p);
        }
        assert_ok(&cmd.output().unwrap())
    };
    for (name, multimodal) in all {
        let dir = model_dir(name);
        let out = tmp.path().join(name);
        std::fs::create_dir(&out).unwrap();
        let data = if multimodal { &vl_data } else { &text_data };
        let layers = Model::load(&dir, DType::F32, &Device::Cpu)
            .unwrap()
            .layers
            .len();
        let pack = (layers - 1).min(3).to_string();
        let info = run(&["inspect"], &[("--model", &dir)]);
        assert!(info.contains("decoder layers"), "{name}: {info}");
        let (sim, plan, pruned, ft) = (
            out.join("sim.json"),
            out.join("plan.json"),
            out.join("pruned"),
            out.join("ft"),
        );
        run(
            &["similarity", "--samples", "4", "--max-pack", &pack],
            &[("--model", &dir), ("--data", data), ("--out", &sim)],
        );
        run(
            &["plan", "--ratio", "0.34"],
            &[("--similarity", &sim), ("--out", &plan)],
        );
        run(
            &["prune"],
            &[("--model", &dir), ("--plan", &plan), ("--out", &pruned)],
        );
        run(
            &[
                "finetune",
                "--samples",
                "4",
                "--batch-size",
                "2",
                "--warmup-ratio",
                "0",
            ],
            &[
                ("--model", &pruned),
                ("--plan", &plan),
                ("--data", data),
                ("--out", &ft),
            ],
        );
        let mut gen: Vec<(&str, &Path)> = vec![("--model", &ft)];
        if multimodal {
            gen.push(("--image", &image));
        }
        run(
            &["generate", "--prompt", "Hello", "--max-new-tokens", "3"],
            &gen,
        );
        let report = out.join("report.json");
        run(
            &["eval", "--limit", "3"],
            &[("--model", &ft), ("--bench", &bench), ("--out", &report)],
        );
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        assert!(r.to_string().contains("AI2D"), "{name}: {r}");
        run(
            &[
                "latency",
                "--runs",
                "1",
                "--warmup",
                "0",
                "--new-tokens",
                "2",
            ],
            &[("--model", &ft)],
        );
    }
}

/// An unknown family is a one-line error naming it (by model_type, else by architecture)
/// and listing what is supported.
#[test]
fn unknown_family_is_named() {
    use interlace::model::ModelConfig;
    let mut raw: Value = serde_json::from_str(
        &std::fs::read_to_string(model_dir("llama").join("config.json")).unwrap(),
    )
    .unwrap();
    raw["model_type"] = "mistral".into();
    let err = format!("{:#}", ModelConfig::from_value(raw.clone()).unwrap_err());
    assert!(
        err.contains("\"mistral\"") && err.contains("qwen2_5_vl") && !err.contains('\n'),
        "{err}"
    );
    raw.as_object_mut().unwrap().remove("model_type");
    raw["architectures"] = serde_json::json!(["MistralForCausalLM"]);
    let err = format!("{:#}", ModelConfig::from_value(raw.clone()).unwrap_err());
    assert!(
        err.contains("MistralForCausalLM") && err.contains("LlamaForCausalLM"),
        "{err}"
    );
    // The architecture alone is enough for a supported family.
    raw["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
    assert_eq!(ModelConfig::from_value(raw).unwrap().family, Family::Llama);
}

/// Similarity scores from one pass on Qwen2-VL and Qwen2.5-VL (a text and an image
/// conversation) against the same scores from transformers' hidden states.
#[test]
fn vl_similarity_matches_transformers_hidden_states() {
    use interlace::prune::{SimilarityAccumulator, SimilarityScores};
    for &(name, _) in VL_FAMILIES {
        let dir = model_dir(name);
        let model = Model::load(&dir, DType::F32, &Device::Cpu).unwrap();
        let processor = Processor::from_dir(&dir)
            .unwrap()
            .with_image_backend(common::PIL);
        let l = model.config.text.num_hidden_layers;
        let mut acc = SimilarityAccumulator::new(l, l - 1).unwrap();
        for &case in VL_CASES {
            let emb = model
                .embed(&vl_inputs(name, &processor, case), Default::default())
                .unwrap();
            let mut obs = acc.sample();
            model
                .run_decoder(&emb, Some(&mut obs), Default::default())
                .unwrap();
        }
        let scores = SimilarityScores::new(name, name, l, acc.into_packs()).unwrap();
        for (s, &case) in VL_CASES.iter().enumerate() {
            let (t, _) = vl_case(name, case);
            for k in 1..l {
                for i in 0..l - k {
                    let want = mean_cosine(
                        &t[&format!("hidden_state.{i}")],
                        &t[&format!("hidden_state.{}", i + k)],
                    );
                    let ours = scores.samples(k, i).unwrap()[s];
                    assert!(
                        (ours - want).abs() < 1e-4,
                        "{name}/{case}: s_{k}({i}) = {ours}, transformers {want}"
                    );
                }
            }
        }
    }
}
