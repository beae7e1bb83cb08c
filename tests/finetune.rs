//! Fine-tuning steps against PyTorch (fixture by tools/make_train_fixtures.py): loss,
//! gradient norm before clipping, gradients and AdamW-updated weights of two steps.

mod common;

use candle_core::{DType, Device};
use common::{
    fixture_json, fixtures, load_tensors, max_abs_diff, model_dir, prepared_train_data, to_f32_vec,
};
use interlace::model::Qwen3VlModel;
use interlace::train::labels::Supervised;
use interlace::train::schedule::{warmup_steps, CosineSchedule};
use interlace::train::trainer::{TrainOptions, Trainer};

fn check_two_steps(grad_checkpoint: bool, micro_batch: usize, workers: usize) {
    let meta = fixture_json("train/step.json");
    let reference = load_tensors(&fixtures().join("train/step.safetensors"));
    let name = meta["model"].as_str().unwrap();
    let layers: Vec<usize> = serde_json::from_value(meta["finetune"].clone()).unwrap();
    let lr = meta["lr"].as_f64().unwrap();
    let data = prepared_train_data(name);
    let model = Qwen3VlModel::load(&model_dir(name), DType::F32, &Device::Cpu).unwrap();
    let frozen_before = to_f32_vec(&model.layers[0].self_attn.q_proj.weight);
    let options = TrainOptions {
        grad_checkpoint,
        micro_batch,
        max_grad_norm: meta["max_grad_norm"].as_f64().unwrap(),
        workers,
        ..Default::default()
    };
    let mut trainer = Trainer::new(model, &layers, options).unwrap();
    let reference_vec = |key: &str| -> Vec<f32> {
        to_f32_vec(reference.get(key).unwrap_or_else(|| panic!("{key}")))
    };
    let steps = meta["steps"].as_array().unwrap();
    for (s, batches) in meta["batches"].as_array().unwrap().iter().enumerate() {
        let idx: Vec<usize> = batches
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|mb| serde_json::from_value::<Vec<usize>>(mb.clone()).unwrap())
            .collect();
        let batch: Vec<Supervised> = idx.iter().map(|&i| data[i].clone()).collect();
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
        let mut worst = 0f32;
        for (p, v) in trainer.params.iter().zip(&values) {
            let want = reference_vec(&format!("after{}.{}", s + 1, p.name));
            worst = worst.max(max_abs_diff(v, &want));
        }
        println!("step {}: max |weight - torch| = {worst:e}", s + 1);
        assert!(worst < 1e-5, "updated weights differ by {worst}");
    }
    let frozen_after = to_f32_vec(&trainer.model.layers[0].self_attn.q_proj.weight);
    assert_eq!(frozen_before, frozen_after, "a frozen layer changed");
}

#[test]
fn two_steps_match_pytorch() {
    check_two_steps(false, 1, 1);
}

#[test]
fn two_steps_match_pytorch_packed_in_micro_batches_of_two() {
    check_two_steps(false, 2, 1);
}

#[test]
fn two_steps_match_pytorch_with_gradient_checkpointing() {
    check_two_steps(true, 4, 1);
}

#[test]
fn two_steps_match_pytorch_with_two_workers() {
    check_two_steps(false, 4, 2);
}

#[test]
fn two_steps_match_pytorch_with_two_workers_and_gradient_checkpointing() {
    check_two_steps(true, 4, 2);
}

#[test]
fn schedule_matches_transformers() {
    let expected = fixture_json("train/schedule.json");
    for case in expected["cosine"].as_array().unwrap() {
        let sched = CosineSchedule {
            base_lr: 1.0,
            warmup: case["warmup"].as_u64().unwrap() as usize,
            total: case["total"].as_u64().unwrap() as usize,
        };
        for (step, want) in case["lr"].as_array().unwrap().iter().enumerate() {
            let want = want.as_f64().unwrap();
            assert!(
                (sched.lr(step) - want).abs() < 1e-12,
                "{sched:?} step {step}: {} vs {want}",
                sched.lr(step)
            );
        }
    }
    for (total, want) in expected["warmup_steps_at_0.03"].as_object().unwrap() {
        let total: usize = total.parse().unwrap();
        assert_eq!(warmup_steps(total, 0.03) as u64, want.as_u64().unwrap());
    }
}
