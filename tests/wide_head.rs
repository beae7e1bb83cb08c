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

/// Fine-tuning layer 1 alone against PyTorch (`train.safetensors`): the loss and every
/// gradient of the layer within 1e-4 of the largest, for both sequences packed into one
/// micro-batch, one per micro-batch, two workers, and with gradient checkpointing. Loaded
/// for fine-tuning on a CPU with AVX-512, the frozen layers and the tied LM head are
/// panels, so this checks the trained layer's one-node pass (`model::train_layer`) and the
/// gradients through frozen panels (`sgemm::gemm_by_panels`) against transformers.
#[test]
fn finetuning_gradients_match_pytorch() {
    use interlace::data::labels::Supervised;
    use interlace::processor::Encoded;
    use interlace::train::trainer::{TrainOptions, Trainer};
    let dir = fixtures().join("wide-head");
    let cases = load_tensors(&dir.join("cases.safetensors"));
    let reference = load_tensors(&dir.join("train.safetensors"));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("train.json")).unwrap()).unwrap();
    let layer = meta["layer"].as_u64().unwrap() as usize;
    let batch: Vec<Supervised> = LENGTHS
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
    for (micro_batch, workers, grad_checkpoint) in
        [(2, 1, false), (1, 1, false), (2, 2, false), (2, 1, true)]
    {
        let model =
            Model::load_for_finetune(&dir.join("model"), DType::F32, &Device::Cpu, &[layer])
                .unwrap();
        if interlace::model::sgemm::available() {
            assert_eq!(model.layers[layer].self_attn.q_proj.weight.rank(), 2);
            assert_eq!(model.layers[layer + 1].mlp.down_proj.weight.rank(), 3);
        }
        let options = TrainOptions {
            micro_batch,
            workers,
            grad_checkpoint,
            ..Default::default()
        };
        let trainer = Trainer::new(model, &[layer], options).unwrap();
        let (grads, loss, tokens) = trainer.gradients(&batch).unwrap();
        let case = format!(
            "micro-batch {micro_batch}, workers {workers}, checkpointing {grad_checkpoint}"
        );
        assert_eq!(tokens as u64, meta["tokens"].as_u64().unwrap(), "{case}");
        let want_loss = meta["loss"].as_f64().unwrap();
        assert!(
            ((loss - want_loss) / want_loss).abs() < 1e-5,
            "{case}: loss {loss} vs {want_loss}"
        );
        assert_eq!(grads.len(), 11, "{case}: the layer's tensors");
        for (p, g) in trainer.params.iter().zip(&grads) {
            let want = common::to_f32_vec(&reference[&format!("grad.{}", p.name)]);
            let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
            let err = g
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
                / scale;
            assert!(scale > 0.0 && g.len() == want.len(), "{case}: {}", p.name);
            assert!(err < 1e-4, "{case}: {} gradient off by {err:e}", p.name);
        }
    }
}
