//! The families beside Qwen3-VL against transformers 5.25: Qwen3 (`Qwen3ForCausalLM`) and
//! Llama (`LlamaForCausalLM` with Llama 3 RoPE scaling and biased attention), fixtures by
//! tools/make_text_family_fixtures.py; Qwen2-VL and Qwen2.5-VL (a text and a one-image
//! conversation), fixtures by tools/make_qwen2_vl_fixtures.py. For each: token ids, every
//! hidden state and the logits within 1e-4, similarity scores from one pass against the same
//! scores from transformers' hidden states, greedy generation token for token, a pruned
//! checkpoint against transformers' own layer deletion, one fine-tuning step against
//! PyTorch, and every command.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{assert_ok, fixtures, load_tensors, max_abs_diff, mean_cosine, to_f32_vec};
use interlace::model::{CollectHidden, Family, Model, ModelInputs};
use interlace::processor::{Message, Processor};
use serde_json::Value;

const FAMILIES: &[(&str, Family)] = &[("qwen3", Family::Qwen3), ("llama", Family::Llama)];
const VL_FAMILIES: &[(&str, Family)] = &[
    ("qwen2-vl", Family::Qwen2Vl),
    ("qwen2.5-vl", Family::Qwen25Vl),
];

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

/// One fixture conversation: our processor's model inputs (their token ids checked equal
/// to transformers') and transformers' outputs for it. The two scripts name the tensors
/// differently; `key` hides that.
struct Case {
    label: String,
    inputs: ModelInputs,
    tensors: HashMap<String, Tensor>,
    /// `"{case}."` for the text families' shared file, empty for a per-case file.
    prefix: String,
    hidden: &'static str,
    generated: &'static str,
    /// transformers' logits after its own deletion of the family's `DROP` layers.
    pruned_logits: Tensor,
}

impl Case {
    fn get(&self, key: &str) -> &Tensor {
        &self.tensors[&format!("{}{key}", self.prefix)]
    }

    fn hidden_state(&self, i: usize) -> Option<&Tensor> {
        self.tensors
            .get(&format!("{}{}.{i}", self.prefix, self.hidden))
    }
}

/// Every case of family `name`, through our processor (the PIL image backend: the scripts
/// ran transformers' PIL image processor).
fn cases(name: &str) -> Vec<Case> {
    let processor = Processor::from_dir(model_dir(name))
        .unwrap()
        .with_image_backend(common::PIL);
    let check = |label: &str, enc: interlace::processor::Encoded, want: &Tensor| {
        assert_eq!(enc.input_ids, ids(want), "{label}: token ids");
        ModelInputs::from_encoded(&enc, &Device::Cpu).unwrap()
    };
    if VL_FAMILIES.iter().any(|f| f.0 == name) {
        return ["text", "one_image"]
            .iter()
            .map(|&case| {
                let label = format!("{name}/{case}");
                let tensors = load_tensors(&family_dir(name).join(format!("{case}.safetensors")));
                let m = meta(name, &format!("{case}.json"));
                let images: Vec<_> = m["images"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| common::open_like_pil(p.as_str().unwrap()))
                    .collect();
                let enc = processor
                    .encode_prompt(m["prompt"].as_str().unwrap().to_string(), &images)
                    .unwrap();
                let inputs = check(&label, enc, &tensors["input_ids"]);
                let pruned_logits = tensors["logits_pruned"].clone();
                Case {
                    label,
                    inputs,
                    tensors,
                    prefix: String::new(),
                    hidden: "hidden_state",
                    generated: "generated_ids",
                    pruned_logits,
                }
            })
            .collect();
    }
    let tensors = load_tensors(&family_dir(name).join("cases.safetensors"));
    let pruned = load_tensors(&family_dir(name).join("pruned.safetensors"));
    meta(name, "cases.json")["cases"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(case, c)| {
            let label = format!("{name}/{case}");
            let msgs: Vec<Message> = c["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| Message::text(t["role"].as_str().unwrap(), t["content"].as_str().unwrap()))
                .collect();
            let enc = processor.encode(&msgs, &[], true).unwrap();
            let inputs = check(&label, enc, &tensors[&format!("{case}.input_ids")]);
            Case {
                label,
                inputs,
                tensors: tensors.clone(),
                prefix: format!("{case}."),
                hidden: "hidden",
                generated: "generated",
                pruned_logits: pruned[&format!("{case}.logits")].clone(),
            }
        })
        .collect()
}

/// The layers the family's script deleted for its pruned logits.
fn dropped(name: &str) -> Vec<usize> {
    if VL_FAMILIES.iter().any(|f| f.0 == name) {
        vec![1] // tools/make_qwen2_vl_fixtures.py's DROP
    } else {
        serde_json::from_value(meta(name, "cases.json")["drop"].clone()).unwrap()
    }
}

fn all_families() -> impl Iterator<Item = &'static (&'static str, Family)> {
    FAMILIES.iter().chain(VL_FAMILIES)
}

fn load(dir: &Path) -> Model {
    Model::load(dir, DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn config_names_the_family_and_its_parts() {
    for &(name, family) in all_families() {
        let model = load(&model_dir(name));
        assert_eq!(model.config.family, family);
        let t = &model.config.text;
        let qwen2 = matches!(family, Family::Qwen2Vl | Family::Qwen25Vl);
        assert_eq!(model.visual.is_some(), qwen2, "{name}: vision tower");
        // Every fixture is saved in the Hub's layout.
        assert_eq!(
            (model.names.decoder.as_str(), model.names.visual.as_str()),
            ("model", "visual")
        );
        assert_eq!(t.qk_norm, family == Family::Qwen3, "{name}: q/k norms");
        assert_eq!(
            t.qkv_bias,
            family == Family::Llama || qwen2,
            "{name}: q/k/v biases"
        );
        assert_eq!(t.o_bias, family == Family::Llama, "{name}: o_proj bias");
        assert_eq!(t.mrope_section.is_empty(), !qwen2, "{name}: M-RoPE");
        assert!(!t.mrope_interleaved, "{name}: no interleaving");
    }
}

#[test]
fn hidden_states_and_logits_match_transformers() {
    for &(name, _) in all_families() {
        let model = load(&model_dir(name));
        for case in cases(name) {
            let mut hidden = CollectHidden::default();
            let logits = model.forward(&case.inputs, Some(&mut hidden)).unwrap();
            let n = hidden.0.len();
            assert!(
                case.hidden_state(n - 1).is_some() && case.hidden_state(n).is_none(),
                "{}: {n} hidden states",
                case.label
            );
            for (i, h) in hidden.0.iter().enumerate() {
                let d = max_abs_diff(
                    &to_f32_vec(&h.squeeze(0).unwrap()),
                    &to_f32_vec(case.hidden_state(i).unwrap()),
                );
                assert!(d < 1e-4, "{}: hidden state {i} differs by {d}", case.label);
            }
            let d = max_abs_diff(&to_f32_vec(&logits), &to_f32_vec(case.get("logits")));
            println!("{}: max |logits - transformers| = {d:e}", case.label);
            assert!(d < 1e-4, "{}: logits differ by {d}", case.label);
        }
    }
}

#[test]
fn similarity_from_one_pass_matches_transformers_hidden_states() {
    use interlace::prune::{SimilarityAccumulator, SimilarityScores};
    for &(name, _) in all_families() {
        let model = load(&model_dir(name));
        let l = model.config.text.num_hidden_layers;
        let max_pack = (l - 1).min(3);
        let mut acc = SimilarityAccumulator::new(l, max_pack).unwrap();
        let cases = cases(name);
        for case in &cases {
            let emb = model.embed(&case.inputs, Default::default()).unwrap();
            let mut obs = acc.sample();
            model
                .run_decoder(&emb, Some(&mut obs), Default::default())
                .unwrap();
        }
        let scores = SimilarityScores::new(name, name, l, acc.into_packs()).unwrap();
        for (s, case) in cases.iter().enumerate() {
            for k in 1..=max_pack {
                for i in 0..l - k {
                    let want = mean_cosine(
                        case.hidden_state(i).unwrap(),
                        case.hidden_state(i + k).unwrap(),
                    );
                    let ours = scores.samples(k, i).unwrap()[s];
                    assert!(
                        (ours - want).abs() < 1e-4,
                        "{}: s_{k}({i}) = {ours}, transformers {want}",
                        case.label
                    );
                }
            }
        }
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    for &(name, _) in all_families() {
        let model = load(&model_dir(name));
        for case in cases(name) {
            let want = ids(case.get(case.generated));
            let got =
                interlace::eval::generate::greedy(&model, &case.inputs, want.len(), &[]).unwrap();
            assert_eq!(got.tokens, want, "{}: greedy tokens", case.label);
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

/// `interlace prune` with the layers the script deleted: the checkpoint keeps the source's
/// layout and config sections, and its logits are transformers' after its own deletion.
#[test]
fn pruned_checkpoint_matches_transformers_layer_deletion() {
    for &(name, _) in all_families() {
        let tmp = tempfile::tempdir().unwrap();
        let drop = dropped(name);
        let layers = load(&model_dir(name)).layers.len();
        let plan = tmp.path().join("plan.json");
        write_plan(&plan, layers, &drop);
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
        let before: Value = serde_json::from_str(
            &std::fs::read_to_string(model_dir(name).join("config.json")).unwrap(),
        )
        .unwrap();
        let after: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        for section in ["", "/text_config"] {
            let key = format!("{section}/num_hidden_layers");
            if before.pointer(&key).is_some() {
                assert_eq!(
                    after.pointer(&key).unwrap(),
                    layers - drop.len(),
                    "{name}: {key}"
                );
            }
        }
        assert_eq!(
            before.get("text_config").is_some(),
            after.get("text_config").is_some(),
            "{name}: config sections"
        );
        let model = load(&out);
        let kept: Vec<usize> = model.layers.iter().map(|l| l.original_index).collect();
        assert_eq!(
            kept,
            (0..layers)
                .filter(|l| !drop.contains(l))
                .collect::<Vec<_>>()
        );
        // The pruned directory's processor is the source's: the same inputs serve.
        for case in cases(name) {
            let logits = model.forward(&case.inputs, None).unwrap();
            let d = max_abs_diff(&to_f32_vec(&logits), &to_f32_vec(&case.pruned_logits));
            assert!(
                d < 1e-4,
                "{}: pruned logits differ from transformers' deletion by {d}",
                case.label
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
    for &(name, _) in all_families() {
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
        let layers: Vec<usize> = serde_json::from_value(m["finetune"].clone()).unwrap();
        let want = |key: &str| {
            to_f32_vec(
                reference
                    .get(key)
                    .unwrap_or_else(|| panic!("{name}: {key}")),
            )
        };
        // With gradient checkpointing too (the script's gradients, without it, are the
        // same numbers): Qwen2.5-VL's trains its first and last layers, which the
        // checkpointed pass treats apart.
        let mut trainer = None;
        for grad_checkpoint in [true, false] {
            let model = Model::load(&dir, DType::F32, &Device::Cpu).unwrap();
            let options = TrainOptions {
                max_grad_norm: m["max_grad_norm"].as_f64().unwrap(),
                grad_checkpoint,
                ..Default::default()
            };
            let t = Trainer::new(model, &layers, options).unwrap();
            let (grads, _, _) = t.gradients(&data).unwrap();
            assert!(!t.params.is_empty());
            for (p, g) in t.params.iter().zip(&grads) {
                let w = want(&format!("grad.{}", p.name));
                let scale = w.iter().fold(0f32, |a, x| a.max(x.abs()));
                let what = format!("{name}, checkpointing {grad_checkpoint}: {}", p.name);
                assert!(g.iter().any(|&x| x != 0.0), "{what} gets no gradient");
                let err = max_abs_diff(g, &w) / scale;
                assert!(err < 1e-4, "{what}: gradient rel err {err}");
            }
            trainer = Some(t);
        }
        let mut trainer = trainer.unwrap();
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
