//! Fine-tuning steps against PyTorch (fixtures by tools/make_train_fixtures.py and, for
//! bf16 with f32 master weights, tools/make_bf16_train_fixture.py): loss, gradient norm
//! before clipping, gradients and AdamW-updated weights of two steps; and what f32 masters
//! keep that bf16 weights would lose.

mod common;

use candle_core::{DType, Device};
use common::{
    check_two_bf16_steps, fixture_json, fixtures, model_dir, prepared_train_data, to_f32_vec,
    Bf16Tolerances,
};
use interlace::model::Model;
use interlace::train::schedule::{warmup_steps, CosineSchedule};
use interlace::train::trainer::{TrainOptions, Trainer};

fn check_two_steps(grad_checkpoint: bool, micro_batch: usize, workers: usize) {
    common::check_two_f32_steps(
        &Device::Cpu,
        grad_checkpoint,
        micro_batch,
        workers,
        None,
        true,
    );
}

#[test]
fn two_steps_match_pytorch() {
    check_two_steps(false, 1, 1);
}

/// The model as `Model::load` gives it (every weight in torch's layout), as a library user
/// building a `Trainer` may hold it.
#[test]
fn two_steps_match_pytorch_with_every_weight_as_loaded() {
    common::check_two_f32_steps(&Device::Cpu, false, 2, 1, None, false);
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

/// The update as a GPU runs it (AdamW, norm and clipping in tensor ops, moments kept as
/// tensors) also matches PyTorch, and on the CPU it gives the host loops' bits.
#[test]
fn two_steps_match_pytorch_with_the_tensor_update() {
    let host = common::check_two_f32_steps(&Device::Cpu, false, 2, 1, Some(false), true);
    let tensors = common::check_two_f32_steps(&Device::Cpu, false, 2, 1, Some(true), true);
    assert!(
        host == tensors,
        "the tensor update differs from the host loops"
    );
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

/// Seen on this fixture (printed): loss ≤ 3.2e-4 and gradient norm ≤ 3.9e-3 relative,
/// gradients ≤ 2.9e-2 of the largest, masters ≤ 3.8 lr apart after two steps with ≤ 1.9 %
/// of them more than 0.1 lr apart.
const BF16_CPU: Bf16Tolerances = Bf16Tolerances {
    loss: 1e-3,
    grad_norm: 2e-2,
    grads: 1e-1,
    weights_in_lr: 2.1,
    far_share: 0.05,
};

#[test]
fn two_bf16_steps_with_f32_masters_match_pytorch() {
    let dir = fixtures().join("train");
    check_two_bf16_steps(&Device::Cpu, &dir, &BF16_CPU, false, 1, None);
    check_two_bf16_steps(&Device::Cpu, &dir, &BF16_CPU, true, 2, None);
    // As a GPU updates the masters: with tensor ops.
    check_two_bf16_steps(&Device::Cpu, &dir, &BF16_CPU, false, 2, Some(true));
}

/// bf16 training keeps updates that bf16 weights updated in place would lose. Ten AdamW
/// steps at lr 1e-4 in bf16 with f32 masters; then, from the same sequence of f32 updates,
/// what bf16 weights rounded after every step would hold (b_k = bf16(b_{k-1} + Δ_k), pure
/// arithmetic). Elements that per-step rounding leaves where they started while the master,
/// rounded once, has moved: updates our training keeps. And the model computes with
/// exactly bf16(master) after every step.
#[test]
fn bf16_training_keeps_updates_that_per_step_rounding_loses() {
    use half::bf16;
    let layers = [1usize, 4];
    let data = prepared_train_data("tiny-b");
    let model =
        Model::load_with_f32_layers(&model_dir("tiny-b"), DType::BF16, &Device::Cpu, &layers)
            .unwrap();
    let mut trainer = Trainer::new(model, &layers, TrainOptions::default()).unwrap();
    let round = |v: &[f32]| -> Vec<f32> { v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect() };
    let start = trainer.values().unwrap();
    let mut per_step: Vec<Vec<f32>> = start.iter().map(|v| round(v)).collect();
    let mut prev = start.clone();
    for step in 0..10 {
        let batch = vec![data[step % data.len()].clone()];
        trainer.step(&batch, 1e-4).unwrap();
        let now = trainer.values().unwrap();
        for ((b, n), p) in per_step.iter_mut().zip(&now).zip(&prev) {
            for ((bi, &ni), &pi) in b.iter_mut().zip(n).zip(p) {
                *bi = bf16::from_f32(*bi + (ni - pi)).to_f32();
            }
        }
        prev = now;
    }
    let (mut kept, mut moved, mut total) = (0usize, 0usize, 0usize);
    for ((s, b), m) in start.iter().zip(&per_step).zip(&prev) {
        let (once, s_rounded) = (round(m), round(s));
        for i in 0..m.len() {
            total += 1;
            moved += usize::from(m[i] != s[i]);
            kept += usize::from(b[i] == s_rounded[i] && once[i] != s_rounded[i]);
        }
    }
    println!(
        "{moved} of {total} masters moved; {kept} of them would be lost by per-step bf16 rounding"
    );
    assert!(moved > total / 2, "training moved too few weights: {moved}");
    assert!(
        kept > 0,
        "no update smaller than bf16's resolution was tested"
    );
    // The model's copies are the masters rounded once.
    let q = &trainer.model.layers[1].self_attn.q_proj.weight;
    assert_eq!(q.dtype(), DType::BF16);
    let master = trainer
        .params
        .iter()
        .find(|p| p.name == "model.language_model.layers.1.self_attn.q_proj.weight")
        .unwrap();
    assert_eq!(to_f32_vec(q), round(&to_f32_vec(master.var.as_tensor())));
}

/// The tensor update's moments (kept as tensors, as on a GPU) survive a checkpoint: three
/// steps with a save and a load into a fresh trainer after the first equal three steps
/// straight through, bit for bit.
#[test]
fn tensor_update_resumes_from_a_checkpoint_bit_equal() {
    use interlace::train::checkpoint::{self, RunState};
    let layers = [1usize, 4];
    let data = prepared_train_data("tiny-b");
    let trainer = || {
        let model = Model::load(&model_dir("tiny-b"), DType::F32, &Device::Cpu).unwrap();
        let options = TrainOptions {
            tensor_update: Some(true),
            ..Default::default()
        };
        Trainer::new(model, &layers, options).unwrap()
    };
    let batch = |s: usize| vec![data[s % data.len()].clone()];
    let mut straight = trainer();
    for s in 0..3 {
        straight.step(&batch(s), 1e-3).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let mut first = trainer();
    first.step(&batch(0), 1e-3).unwrap();
    let state = RunState {
        step: 1,
        total_steps: 3,
        skipped: 0,
        fingerprint: serde_json::json!({}),
    };
    checkpoint::save(&dir, &first, &state, None).unwrap();
    drop(first);
    let mut resumed = trainer();
    let at = checkpoint::latest(&dir).unwrap().unwrap();
    assert_eq!(checkpoint::load(&at, &mut resumed).unwrap(), state);
    for s in 1..3 {
        resumed.step(&batch(s), 1e-3).unwrap();
    }
    assert!(
        straight.values().unwrap() == resumed.values().unwrap(),
        "the resumed run's weights differ"
    );
}

/// tiny-b with decoder layer `drop` removed in memory (the others keep their original
/// indices), as a pruned student, and the whole tiny-b as its teacher.
fn pruned_student(drop: usize) -> (Model, Model) {
    let load = || Model::load(&model_dir("tiny-b"), DType::F32, &Device::Cpu).unwrap();
    let mut student = load();
    student.layers.remove(drop);
    (student, load())
}

/// A distilling trainer of tiny-b without layer `drop`, training `positions`.
fn distilling_trainer(drop: usize, positions: &[usize], t: f64, w: f64) -> Trainer {
    use interlace::train::trainer::Distill;
    let (mut student, teacher) = pruned_student(drop);
    let first = positions.iter().copied().min().unwrap();
    let d = Distill::new(&mut student, teacher, first, t, w).unwrap();
    let mut trainer = Trainer::new(student, positions, TrainOptions::default()).unwrap();
    trainer.distill = Some(d);
    trainer
}

/// `--distill-weight 0` is plain fine-tuning, bit for bit, although the teacher runs: two
/// steps, same losses and weights.
#[test]
fn distillation_with_weight_zero_is_plain_fine_tuning() {
    let data = prepared_train_data("tiny-b");
    let positions = [2usize, 3];
    let (student, _) = pruned_student(3);
    let mut plain = Trainer::new(student, &positions, TrainOptions::default()).unwrap();
    let mut distilled = distilling_trainer(3, &positions, 2.0, 0.0);
    assert_eq!(distilled.distill.as_ref().unwrap().shared, 2);
    for step in 0..2 {
        let batch: Vec<_> = data.iter().skip(step).take(2).cloned().collect();
        let a = plain.step(&batch, 1e-3).unwrap();
        let b = distilled.step(&batch, 1e-3).unwrap();
        assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "step {step}");
        assert_eq!(a.grad_norm.to_bits(), b.grad_norm.to_bits(), "step {step}");
    }
    assert_eq!(plain.values().unwrap(), distilled.values().unwrap());
}

/// The teacher starts from the student's hidden state after the layers they share: that
/// gives the same gradients, bit for bit, as the teacher computing everything itself; the
/// shared prefix stops at the first dropped layer; every trained tensor gets a gradient;
/// and the loss is the weighted mix of cross-entropy and the distillation loss.
#[test]
fn distillation_shares_the_frozen_prefix_and_mixes_the_losses() {
    let data = prepared_train_data("tiny-b");
    let batch: Vec<_> = data.iter().take(3).cloned().collect();
    // Layer 1 dropped: positions 0 (layer 0), 1 (layer 2), 2 (layer 3), 3 (layer 4) ...
    let positions = [3usize];
    let shared = distilling_trainer(1, &positions, 2.0, 0.5);
    assert_eq!(shared.distill.as_ref().unwrap().shared, 1);
    let mut alone = distilling_trainer(1, &positions, 2.0, 0.5);
    alone.distill.as_mut().unwrap().own_embedding = true;
    let (ga, la, _) = shared.gradients(&batch).unwrap();
    let (gb, lb, _) = alone.gradients(&batch).unwrap();
    assert_eq!(la.to_bits(), lb.to_bits());
    assert_eq!(ga, gb);
    for (p, g) in shared.params.iter().zip(&ga) {
        assert!(g.iter().any(|&x| x != 0.0), "{} got no gradient", p.name);
    }
    // loss(w) = (1 - w) CE + w KL, so loss(0.5) is the mean of loss(0) and loss(1).
    let (_, l0, _) = distilling_trainer(1, &positions, 2.0, 0.0)
        .gradients(&batch)
        .unwrap();
    let (_, l1, _) = distilling_trainer(1, &positions, 2.0, 1.0)
        .gradients(&batch)
        .unwrap();
    assert!(
        (la - 0.5 * (l0 + l1)).abs() < 1e-6 * la.abs(),
        "{la} vs {l0} and {l1}"
    );
    assert!(l1 > 0.0 && l1 != l0, "{l0} {l1}");
}

/// A teacher identical to the student: the distributions agree, so the distillation loss
/// and its gradient are zero (KL(p ‖ p) = 0).
#[test]
fn distillation_from_an_identical_model_has_nothing_to_teach() {
    use interlace::train::trainer::Distill;
    let data = prepared_train_data("tiny-b");
    let load = || Model::load(&model_dir("tiny-b"), DType::F32, &Device::Cpu).unwrap();
    let mut student = load();
    let d = Distill::new(&mut student, load(), 4, 1.0, 1.0).unwrap();
    assert_eq!(d.shared, 4);
    let mut trainer = Trainer::new(student, &[4, 5], TrainOptions::default()).unwrap();
    trainer.distill = Some(d);
    let (grads, loss, _) = trainer.gradients(&data[..2]).unwrap();
    assert!(loss.abs() < 1e-6, "{loss}");
    let worst = grads.iter().flatten().fold(0f32, |m, x| m.max(x.abs()));
    assert!(worst < 1e-6, "{worst}");
}
