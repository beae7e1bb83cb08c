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
