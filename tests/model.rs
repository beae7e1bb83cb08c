//! Forward-pass parity with transformers on the fixture checkpoints: same input ids and
//! pixel values (taken from transformers' processor), every hidden state, vision tower
//! outputs, M-RoPE positions and logits within 1e-4 relative in f32.

mod common;

use candle_core::{DType, Device};
use common::*;
use interlace::model::qwen3_vl::rope::get_rope_index;
use interlace::model::ModelInputs;
use interlace::model::{CollectHidden, Model};

const TOL: f32 = 1e-4;

fn inputs_from_case(
    model: &Model,
    case: &std::collections::HashMap<String, candle_core::Tensor>,
) -> ModelInputs {
    let input_ids = to_u32(&case["input_ids"]);
    let mm: Vec<u8> = match case.get("mm_token_type_ids") {
        Some(t) => to_i64(t).into_iter().map(|x| x as u8).collect(),
        None => input_ids
            .iter()
            .map(|&id| u8::from(id == model.config.image_token_id))
            .collect(),
    };
    let grids: Vec<[usize; 3]> = match case.get("image_grid_thw") {
        Some(t) => to_i64(t)
            .chunks(3)
            .map(|c| [c[0] as usize, c[1] as usize, c[2] as usize])
            .collect(),
        None => Vec::new(),
    };
    ModelInputs {
        input_ids,
        mm_token_type_ids: mm,
        pixel_values: case.get("pixel_values").cloned(),
        image_grid_thw: grids,
    }
}

#[test]
fn hidden_states_and_logits_match_transformers() {
    // Both weight layouts: torch's, as loaded for training, and the one laid out for the
    // forward product that the inference commands load.
    for (&name, inference) in MODELS.iter().flat_map(|n| [(n, false), (n, true)]) {
        let dir = model_dir(name);
        let model = if inference {
            Model::load_for_inference(&dir, DType::F32, &Device::Cpu).unwrap()
        } else {
            Model::load(&dir, DType::F32, &Device::Cpu).unwrap()
        };
        if inference {
            // The layout really changed (else this loop would test the same thing twice).
            assert!(!model.layers[0].self_attn.q_proj.weight.is_contiguous());
        }
        for &case_name in CASES {
            let case = load_case(name, case_name);
            let inputs = inputs_from_case(&model, &case);
            let mut seen = CollectHidden::default();
            let logits = model.forward(&inputs, Some(&mut seen)).unwrap();
            let n_layers = model.config.text.num_hidden_layers;
            assert_eq!(
                seen.0.len(),
                n_layers + 1,
                "{name}/{case_name}: number of hidden states"
            );
            let mut worst = 0f32;
            for (i, h) in seen.0.iter().enumerate() {
                let reference = &case[&format!("hidden_state.{i}")];
                let err = rel_err(&h.squeeze(0).unwrap(), reference);
                assert!(
                    err < TOL,
                    "{name}/{case_name}: hidden state {i} differs by {err:e} (relative)"
                );
                worst = worst.max(err);
            }
            eprintln!("{name}/{case_name}: worst hidden state relative error {worst:e}");
            let err = rel_err(&logits, &case["logits"]);
            eprintln!(
                "{name}/{case_name}: logits relative error {err:e}, seq {}",
                inputs.input_ids.len()
            );
            assert!(
                err < TOL,
                "{name}/{case_name}: logits differ by {err:e} (relative)"
            );
        }
    }
}

#[test]
fn mrope_positions_match_get_rope_index() {
    for &name in MODELS {
        let model = Model::load(&model_dir(name), DType::F32, &Device::Cpu).unwrap();
        for &case_name in CASES {
            let case = load_case(name, case_name);
            let inputs = inputs_from_case(&model, &case);
            let idx = get_rope_index(
                &inputs.mm_token_type_ids,
                &inputs.image_grid_thw,
                model.config.vision.as_ref().unwrap().spatial_merge_size(),
            )
            .unwrap();
            let expected = to_i64(&case["position_ids"]);
            let ours: Vec<i64> = idx.positions.iter().flatten().copied().collect();
            assert_eq!(ours, expected, "{name}/{case_name}: position ids");
            if let Some(d) = case.get("rope_deltas") {
                assert_eq!(idx.delta, to_i64(d)[0], "{name}/{case_name}: rope delta");
            }
        }
    }
}

#[test]
fn vision_tower_matches_transformers() {
    for &name in MODELS {
        let model = Model::load(&model_dir(name), DType::F32, &Device::Cpu).unwrap();
        let case = load_case(name, "one_image");
        let inputs = inputs_from_case(&model, &case);
        let out = model
            .image_features(
                inputs.pixel_values.as_ref().unwrap(),
                &inputs.image_grid_thw,
                Default::default(),
            )
            .unwrap();
        let err = rel_err(&out.image_embeds, &case["image_embeds"]);
        assert!(err < TOL, "{name}: image embeds differ by {err:e}");
        assert_eq!(
            out.deepstack.len(),
            model
                .config
                .vision
                .as_ref()
                .and_then(|v| v.qwen3_vl())
                .unwrap()
                .deepstack_visual_indexes
                .len()
        );
        for (j, d) in out.deepstack.iter().enumerate() {
            let err = rel_err(d, &case[&format!("deepstack.{j}")]);
            assert!(err < TOL, "{name}: deepstack {j} differs by {err:e}");
        }
    }
}

/// The whole path a user takes: messages and image files through our processor, then our
/// model, against transformers' logits for the same conversation.
#[test]
fn conversation_to_logits_end_to_end() {
    for &name in MODELS {
        let dir = model_dir(name);
        // As `interlace forward` loads it.
        let model = Model::load_for_inference(&dir, DType::F32, &Device::Cpu).unwrap();
        let processor = interlace::processor::Processor::from_dir(&dir)
            .unwrap()
            .with_image_backend(PIL);
        for &case_name in CASES {
            let (messages, images, add_gen) = case_conversation(name, case_name);
            let enc = processor.encode(&messages, &images, add_gen).unwrap();
            let inputs = ModelInputs::from_encoded(&enc, &Device::Cpu).unwrap();
            let logits = model.forward(&inputs, None).unwrap();
            let err = rel_err(&logits, &load_case(name, case_name)["logits"]);
            assert!(
                err < TOL,
                "{name}/{case_name}: end-to-end logits differ by {err:e}"
            );
        }
    }
}

/// bf16 and f16 checkpoints load into f32 compute: converting a half-precision value to f32
/// is exact, so a checkpoint stored in bf16 must give exactly the logits of the same
/// weights stored as f32 after rounding to bf16.
#[test]
fn half_precision_checkpoints_convert_exactly() {
    use candle_core::Tensor;
    let src = model_dir("tiny-a");
    let weights = load_tensors(&src.join("model.safetensors"));
    for half in [DType::BF16, DType::F16] {
        let as_half: std::collections::HashMap<String, Tensor> = weights
            .iter()
            .map(|(k, v)| (k.clone(), v.to_dtype(half).unwrap()))
            .collect();
        let rounded: std::collections::HashMap<String, Tensor> = as_half
            .iter()
            .map(|(k, v)| (k.clone(), v.to_dtype(DType::F32).unwrap()))
            .collect();
        let mut logits = Vec::new();
        for tensors in [&as_half, &rounded] {
            let tmp = tempfile::tempdir().unwrap();
            for entry in std::fs::read_dir(&src).unwrap() {
                let entry = entry.unwrap();
                if entry.file_name() != "model.safetensors" {
                    std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
                }
            }
            candle_core::safetensors::save(tensors, tmp.path().join("model.safetensors")).unwrap();
            let model = Model::load(tmp.path(), DType::F32, &Device::Cpu).unwrap();
            let case = load_case("tiny-a", "one_image");
            let inputs = inputs_from_case(&model, &case);
            logits.push(model.forward(&inputs, None).unwrap());
        }
        assert_eq!(rel_err(&logits[0], &logits[1]), 0.0, "{half:?}");
        // And the rounding itself is visible: the half model is not the f32 fixture.
        assert!(rel_err(&logits[0], &load_case("tiny-a", "one_image")["logits"]) > 0.0);
    }
}
