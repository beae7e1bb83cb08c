//! Whole-model training (`interlace pretrain`): every tensor trainable, checked against
//! PyTorch (fixture by tools/make_pretrain_fixtures.py), and the command end to end.

mod common;

use candle_core::{DType, Device};
use common::{fixtures, load_tensors, model_dir, to_f32_vec};
use interlace::data::llava;
use interlace::model::Qwen3VlModel;
use interlace::processor::Processor;
use interlace::train::adamw::AdamWConfig;
use interlace::train::labels::{self, Supervised};
use interlace::train::trainer::{TrainOptions, Trainer};
use serde_json::Value;

fn pretrain_json(name: &str) -> Value {
    let path = fixtures().join("pretrain").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn prepared(model: &str) -> Vec<Supervised> {
    let processor = Processor::from_dir(model_dir(model)).unwrap();
    llava::read(&fixtures().join("train/data.json"))
        .unwrap()
        .iter()
        .map(|s| labels::prepare(&processor, s, 1 << 20).unwrap())
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn whole_trainer(name: &str, meta: &Value, micro_batch: usize) -> Trainer {
    let model = Qwen3VlModel::load(&model_dir(name), DType::F32, &Device::Cpu).unwrap();
    let options = TrainOptions {
        grad_checkpoint: false,
        micro_batch,
        max_grad_norm: meta["max_grad_norm"].as_f64().unwrap(),
        adamw: AdamWConfig {
            weight_decay: meta["weight_decay"].as_f64().unwrap(),
            eps: meta["eps"].as_f64().unwrap(),
            ..Default::default()
        },
    };
    Trainer::whole_model(model, options).unwrap()
}

fn batches(meta: &Value) -> Vec<Vec<usize>> {
    meta["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            b.as_array()
                .unwrap()
                .iter()
                .flat_map(|mb| serde_json::from_value::<Vec<usize>>(mb.clone()).unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn every_tensor_is_trainable_and_gets_a_gradient() {
    let meta = pretrain_json("step.json");
    let name = meta["model"].as_str().unwrap();
    let data = prepared(name);
    let trainer = whole_trainer(name, &meta, 2);
    // Every tensor of the checkpoint (the tied head appears once, as the embeddings).
    assert_eq!(
        trainer.params.len() as u64,
        meta["num_tensors"].as_u64().unwrap()
    );
    let count: usize = trainer.params.iter().map(|p| p.var.elem_count()).sum();
    assert_eq!(count as u64, meta["num_parameters"].as_u64().unwrap());
    let batch: Vec<Supervised> = batches(&meta)[0].iter().map(|&i| data[i].clone()).collect();
    let (grads, _, _) = trainer.gradients(&batch).unwrap();
    for (p, g) in trainer.params.iter().zip(&grads) {
        assert!(g.iter().any(|&x| x != 0.0), "{}: no gradient", p.name);
        assert!(g.iter().all(|x| x.is_finite()), "{}: non-finite", p.name);
    }
}

fn check_two_steps(micro_batch: usize) {
    let meta = pretrain_json("step.json");
    let reference = load_tensors(&fixtures().join("pretrain/step.safetensors"));
    let name = meta["model"].as_str().unwrap();
    let lr = meta["lr"].as_f64().unwrap();
    let data = prepared(name);
    let mut trainer = whole_trainer(name, &meta, micro_batch);
    let steps = meta["steps"].as_array().unwrap();
    let mut losses = Vec::new();
    for (s, idx) in batches(&meta).iter().enumerate() {
        let batch: Vec<Supervised> = idx.iter().map(|&i| data[i].clone()).collect();
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
        losses.push((stats.loss, want_loss, stats.grad_norm, want_norm));
        assert_eq!(
            stats.supervised_tokens as u64,
            want["tokens"].as_u64().unwrap()
        );
    }
    let values = trainer.values().unwrap();
    let mut worst = (0f32, String::new());
    for (p, v) in trainer.params.iter().zip(&values) {
        let t = reference
            .get(&format!("after2.{}", p.name))
            .unwrap_or_else(|| panic!("{} missing from the fixture", p.name));
        assert_eq!(t.dims(), p.stored_shape.as_slice(), "{}", p.name);
        let d = max_abs_diff(v, &to_f32_vec(t));
        if d > 1e-5 {
            println!("{}: {d:e}", p.name);
        }
        if d > worst.0 {
            worst = (d, p.name.clone());
        }
    }
    println!("after 2 steps: max |weight - torch| = {:e} ({})", worst.0, worst.1);
    for (loss, want_loss, norm, want_norm) in losses {
        assert!((loss - want_loss).abs() < 1e-5, "loss {loss} vs {want_loss}");
        assert!(
            (norm - want_norm).abs() / want_norm < 1e-5,
            "grad norm {norm} vs {want_norm}"
        );
    }
    assert!(worst.0 < 1e-5, "updated weights differ by {worst:?}");
}

#[test]
fn two_whole_model_steps_match_pytorch() {
    check_two_steps(1);
}

#[test]
fn two_whole_model_steps_match_pytorch_packed() {
    check_two_steps(4);
}
