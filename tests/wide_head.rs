//! Heads 32 wide against transformers 5.25 (fixture by tools/make_wide_head_fixture.py: a
//! tiny Qwen3, 4 query heads over 2 key/value heads): every hidden state and the logits
//! within 1e-4 for two sequences whose lengths (45, 70) are not multiples of 32, and
//! greedy generation token for token. On a CPU with AVX-512, a model loaded for inference
//! stores every linear weight of this model as panels and runs attention on our own
//! product (`ops::attention_panels`, which needs whole 32-float panels per head; the other
//! fixture models' heads are narrower, so their attention takes candle's path).

mod common;

use candle_core::{DType, Device};
use common::{fixtures, load_tensors, rel_err, to_i64};
use interlace::model::{CollectHidden, Model, ModelInputs};

const TOL: f32 = 1e-4;
const LENGTHS: [usize; 2] = [45, 70];

#[test]
fn wide_heads_match_transformers() {
    let dir = fixtures().join("wide-head");
    let cases = load_tensors(&dir.join("cases.safetensors"));
    for inference in [false, true] {
        let model = if inference {
            Model::load_for_inference(&dir.join("model"), DType::F32, &Device::Cpu).unwrap()
        } else {
            Model::load(&dir.join("model"), DType::F32, &Device::Cpu).unwrap()
        };
        if inference && interlace::model::sgemm::available() {
            // The weights really are panels (else this would test candle's path twice).
            assert_eq!(model.layers[0].self_attn.q_proj.weight.rank(), 3);
        }
        for n in LENGTHS {
            let ids: Vec<u32> = to_i64(&cases[&format!("{n}.input_ids")])
                .into_iter()
                .map(|x| x as u32)
                .collect();
            assert_eq!(ids.len(), n);
            let inputs = ModelInputs::text(ids);
            let mut seen = CollectHidden::default();
            let logits = model.forward(&inputs, Some(&mut seen)).unwrap();
            assert_eq!(seen.0.len(), 4, "hidden states: embeddings and 3 layers");
            for (i, h) in seen.0.iter().enumerate() {
                let err = rel_err(&h.squeeze(0).unwrap(), &cases[&format!("{n}.hidden.{i}")]);
                assert!(
                    err < TOL,
                    "length {n}, inference {inference}: hidden state {i} off by {err:e}"
                );
            }
            let err = rel_err(&logits, &cases[&format!("{n}.logits")]);
            assert!(
                err < TOL,
                "length {n}, inference {inference}: logits off by {err:e}"
            );
            let want: Vec<u32> = to_i64(&cases[&format!("{n}.generated")])
                .into_iter()
                .map(|x| x as u32)
                .collect();
            let got = interlace::eval::generate::greedy(&model, &inputs, want.len(), &[])
                .unwrap()
                .tokens;
            assert_eq!(
                got, want,
                "length {n}, inference {inference}: greedy tokens"
            );
        }
    }
}

/// The fine-tuning fixture's two conversations (`cases.safetensors`), the second half of
/// each supervised, and PyTorch's loss and gradients for them (`train.safetensors`,
/// `train.json`).
struct TrainCase {
    batch: Vec<interlace::data::labels::Supervised>,
    reference: std::collections::HashMap<String, candle_core::Tensor>,
    meta: serde_json::Value,
    layer: usize,
}

fn train_case() -> TrainCase {
    use interlace::data::labels::Supervised;
    use interlace::processor::Encoded;
    let dir = fixtures().join("wide-head");
    let cases = load_tensors(&dir.join("cases.safetensors"));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("train.json")).unwrap()).unwrap();
    let layer = meta["layer"].as_u64().unwrap() as usize;
    let batch = LENGTHS
        .iter()
        .map(|&n| {
            let ids: Vec<u32> = to_i64(&cases[&format!("{n}.input_ids")])
                .into_iter()
                .map(|x| x as u32)
                .collect();
            Supervised {
                enc: Encoded {
                    input_ids: ids,
                    pixel_values: Vec::new(),
                    patch_dim: 0,
                    image_grid_thw: Vec::new(),
                    mm_token_type_ids: vec![0; n],
                    prompt: String::new(),
                    offsets: Vec::new(),
                },
                supervised: (0..n).map(|t| t >= n / 2).collect(),
            }
        })
        .collect();
    TrainCase {
        batch,
        reference: load_tensors(&dir.join("train.safetensors")),
        meta,
        layer,
    }
}

/// The model loaded for fine-tuning its fixture layer, with the panels checked.
fn finetune_model(case: &TrainCase) -> Model {
    let dir = fixtures().join("wide-head");
    let model =
        Model::load_for_finetune(&dir.join("model"), DType::F32, &Device::Cpu, &[case.layer])
            .unwrap();
    if interlace::model::sgemm::available() {
        assert_eq!(model.layers[case.layer].self_attn.q_proj.weight.rank(), 2);
        assert_eq!(model.layers[case.layer + 1].mlp.down_proj.weight.rank(), 3);
    }
    model
}

/// The trainer's loss and gradients for the fixture's batch against PyTorch's.
fn check_against_pytorch(
    trainer: &interlace::train::trainer::Trainer,
    case: &TrainCase,
    what: &str,
) {
    let (grads, loss, tokens) = trainer.gradients(&case.batch).unwrap();
    assert_eq!(
        tokens as u64,
        case.meta["tokens"].as_u64().unwrap(),
        "{what}"
    );
    let want_loss = case.meta["loss"].as_f64().unwrap();
    assert!(
        ((loss - want_loss) / want_loss).abs() < 1e-5,
        "{what}: loss {loss} vs {want_loss}"
    );
    assert_eq!(grads.len(), 11, "{what}: the layer's tensors");
    for (p, g) in trainer.params.iter().zip(&grads) {
        let want = common::to_f32_vec(&case.reference[&format!("grad.{}", p.name)]);
        let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        let err = g
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
            / scale;
        assert!(scale > 0.0 && g.len() == want.len(), "{what}: {}", p.name);
        assert!(err < 1e-4, "{what}: {} gradient off by {err:e}", p.name);
    }
}

/// Fine-tuning layer 1 alone against PyTorch (`train.safetensors`): the loss and every
/// gradient of the layer within 1e-4 of the largest, for both sequences packed into one
/// micro-batch, one per micro-batch, two workers, and with gradient checkpointing. Loaded
/// for fine-tuning on a CPU with AVX-512, the frozen layers and the tied LM head are
/// panels, so this checks the trained layer's pass (`model::train_layer`), the gradients
/// through frozen panels (`sgemm::gemm_by_panels`) and the LM head fused with the loss
/// (`loss::head_cross_entropy_sum`) against transformers.
#[test]
fn finetuning_gradients_match_pytorch() {
    use interlace::train::trainer::{TrainOptions, Trainer};
    let case = train_case();
    for (micro_batch, workers, grad_checkpoint) in
        [(2, 1, false), (1, 1, false), (2, 2, false), (2, 1, true)]
    {
        let options = TrainOptions {
            micro_batch,
            workers,
            grad_checkpoint,
            ..Default::default()
        };
        let trainer = Trainer::new(finetune_model(&case), &[case.layer], options).unwrap();
        let what = format!(
            "micro-batch {micro_batch}, workers {workers}, checkpointing {grad_checkpoint}"
        );
        check_against_pytorch(&trainer, &case, &what);
    }
}

/// The same step with a teacher whose weight is 0: the loss is then plain cross-entropy,
/// but the LM head runs unfused, as a frozen-panel node of candle's graph
/// (`ops::FrozenPanels`, whose backward is `dy · w` from the panels), so this checks that
/// node's gradient against PyTorch's.
#[test]
fn finetuning_through_the_unfused_head_matches_pytorch() {
    use interlace::train::trainer::{Distill, TrainOptions, Trainer};
    let case = train_case();
    let dir = fixtures().join("wide-head");
    let mut student = finetune_model(&case);
    let teacher = Model::load(&dir.join("model"), DType::F32, &Device::Cpu).unwrap();
    let distill = Distill::new(&mut student, teacher, case.layer, 1.0, 0.0).unwrap();
    let mut trainer = Trainer::new(student, &[case.layer], TrainOptions::default()).unwrap();
    trainer.distill = Some(distill);
    check_against_pytorch(&trainer, &case, "teacher with weight 0");
}
