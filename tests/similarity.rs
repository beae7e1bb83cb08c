//! Similarity scores from one forward pass against the same scores computed from
//! transformers' hidden states (the fixtures' `hidden_state.{i}`), within 1e-4.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use interlace::model::{CollectHidden, Model, ModelInputs};
use interlace::processor::Processor;
use interlace::prune::{SimilarityAccumulator, SimilarityScores};

#[test]
fn one_pass_scores_match_transformers_hidden_states() {
    for &name in MODELS {
        let dir = model_dir(name);
        let model = Model::load(&dir, DType::F32, &Device::Cpu).unwrap();
        let processor = Processor::from_dir(&dir).unwrap().with_image_backend(PIL);
        let l = model.config.text.num_hidden_layers;
        let mut acc = SimilarityAccumulator::new(l, 3).unwrap();
        for &case in CASES {
            let (messages, images, add_gen) = case_conversation(name, case);
            let enc = processor.encode(&messages, &images, add_gen).unwrap();
            let inputs = ModelInputs::from_encoded(&enc, &Device::Cpu).unwrap();
            let emb = model.embed(&inputs, Default::default()).unwrap();
            let mut obs = acc.sample();
            let out = model
                .run_decoder(&emb, Some(&mut obs), Default::default())
                .unwrap();
            assert!(out.is_none(), "the pass must stop before the last layer");
        }
        let scores = SimilarityScores::new(name, "qwen3_vl", l, acc.into_packs()).unwrap();
        assert_eq!(scores.num_samples(), CASES.len());
        for (s, &case) in CASES.iter().enumerate() {
            assert_scores_match_case(&scores, s, name, case);
        }
    }
}

/// The observer stops right after h_{L-1}: the last decoder layer never runs.
#[test]
fn similarity_pass_stops_after_the_last_needed_state() {
    struct Count<'a>(interlace::prune::similarity::SampleObserver<'a>, usize);
    impl interlace::model::LayerObserver for Count<'_> {
        fn observe(
            &mut self,
            index: usize,
            layer: Option<usize>,
            hidden: &Tensor,
        ) -> anyhow::Result<interlace::model::Flow> {
            self.1 = self.1.max(index);
            self.0.observe(index, layer, hidden)
        }
    }
    let model = Model::load(&model_dir("tiny-b"), DType::F32, &Device::Cpu).unwrap();
    let l = model.config.text.num_hidden_layers;
    let case = load_case("tiny-b", "text");
    let inputs = ModelInputs::text(to_u32(&case["input_ids"]));
    let emb = model.embed(&inputs, Default::default()).unwrap();
    let mut acc = SimilarityAccumulator::new(l, 3).unwrap();
    let mut counted = Count(acc.sample(), 0);
    assert!(model
        .run_decoder(&emb, Some(&mut counted), Default::default())
        .unwrap()
        .is_none());
    assert_eq!(counted.1, l - 1);
    // Cross-check with a full pass that the same states were seen.
    let mut all = CollectHidden::default();
    model
        .run_decoder(&emb, Some(&mut all), Default::default())
        .unwrap();
    assert_eq!(all.0.len(), l + 1);
}

/// Several samples packed into one pass (what `similarity --batch N` and a GPU do) give
/// each sample the scores of transformers' hidden states for that sample alone.
#[test]
fn packed_pass_scores_each_sample_as_transformers_does() {
    assert_packed_similarity_matches_transformers(&interlace::model::device::Placement::cpu());
}
