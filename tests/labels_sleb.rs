//! Supervised labels and SLEB against transformers (fixtures by tools/make_train_fixtures.py).

mod common;

use candle_core::{DType, Device};
use common::{fixtures, model_dir, MODELS, PIL};
use interlace::data::labels;
use interlace::data::llava;
use interlace::model::Model;
use interlace::processor::Processor;
use interlace::prune::sleb::{calibration_loss, greedy, CalibrationExample};
use serde_json::Value;

fn samples() -> Vec<interlace::data::Sample> {
    llava::read(&fixtures().join("train/data.json")).unwrap()
}

#[test]
fn labels_match_the_independent_rule() {
    let expected = common::fixture_json("train/labels.json");
    let samples = samples();
    for model in MODELS {
        let processor = Processor::from_dir(model_dir(model))
            .unwrap()
            .with_image_backend(PIL);
        let cases = expected[*model].as_array().unwrap();
        assert_eq!(cases.len(), samples.len());
        for (i, (sample, case)) in samples.iter().zip(cases).enumerate() {
            let sup = labels::prepare(&processor, sample, 1 << 20).unwrap();
            let ids: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).unwrap();
            let mask: Vec<u8> = serde_json::from_value(case["supervised"].clone()).unwrap();
            assert_eq!(
                sup.enc.input_ids, ids,
                "{model} conversation {i}: token ids"
            );
            let ours: Vec<u8> = sup.supervised.iter().map(|&b| b as u8).collect();
            assert_eq!(ours, mask, "{model} conversation {i}: supervised mask");
            assert!(sup.num_targets() > 0);
        }
    }
}

#[test]
fn truncation_drops_whole_images_and_refuses_cuts_through_them() {
    let processor = Processor::from_dir(model_dir("tiny-b"))
        .unwrap()
        .with_image_backend(PIL);
    let samples = samples();
    // Conversation 4: two marked images in the user turn, then the answer.
    let full = labels::prepare(&processor, &samples[4], 1 << 20).unwrap();
    let image = processor.special_token_ids().image_pad.unwrap();
    let first_image = full.enc.input_ids.iter().position(|&t| t == image).unwrap();
    let err = labels::prepare(&processor, &samples[4], first_image + 1).unwrap_err();
    assert!(
        format!("{err:#}").contains("cuts through an image"),
        "{err:#}"
    );
    // Cutting before any supervised token leaves nothing to learn.
    let err = labels::prepare(&processor, &samples[4], first_image).unwrap_err();
    assert!(format!("{err:#}").contains("nothing to learn"), "{err:#}");
    // Conversation 3: the image sits in the second user turn; cutting before it keeps the
    // first answer and drops the image with its pixels.
    let full = labels::prepare(&processor, &samples[3], 1 << 20).unwrap();
    let first_image = full.enc.input_ids.iter().position(|&t| t == image).unwrap();
    let cut = labels::prepare(&processor, &samples[3], first_image - 1).unwrap();
    assert!(cut.enc.image_grid_thw.is_empty() && cut.enc.pixel_values.is_empty());
    assert_eq!(cut.enc.input_ids[..], full.enc.input_ids[..first_image - 1]);
    assert_eq!(cut.supervised[..], full.supervised[..first_image - 1]);
    // A conversation with no assistant turn is refused.
    let mut s = samples[0].clone();
    s.turns.retain(|t| t.role != "assistant");
    let err = labels::prepare(&processor, &s, 1 << 20).unwrap_err();
    assert!(format!("{err:#}").contains("no assistant turn"), "{err:#}");
}

#[test]
fn sleb_rounds_match_transformers() {
    let expected = common::fixture_json("train/sleb.json");
    let name = expected["model"].as_str().unwrap();
    let n_samples = expected["samples"].as_u64().unwrap() as usize;
    let device = Device::Cpu;
    let dir = model_dir(name);
    let model = Model::load(&dir, DType::F32, &device).unwrap();
    let processor = Processor::from_dir(&dir).unwrap().with_image_backend(PIL);
    // One conversation per pass, and packed three to a pass (`plan --batch 3`, a GPU).
    for batch in [1, 3] {
        let examples: Vec<CalibrationExample> = samples()[..n_samples]
            .iter()
            .map(|s| CalibrationExample::new(&model, &processor, s, 1 << 20, &device).unwrap())
            .collect();
        let examples = interlace::prune::sleb::pack_examples(examples, batch, 1 << 20).unwrap();
        assert_eq!(examples.len(), n_samples.div_ceil(batch));
        println!("batch {batch}:");
        check_sleb_rounds(&model, &examples, &expected);
    }
}

fn check_sleb_rounds(model: &Model, examples: &[CalibrationExample], expected: &Value) {
    let n = model.layers.len();
    let all: Vec<usize> = (0..n).collect();
    let dense = calibration_loss(model, examples, &all).unwrap();
    let want_dense = expected["dense_loss"].as_f64().unwrap();
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
    println!("dense calibration loss {dense} vs transformers {want_dense}");
    assert!(rel(dense, want_dense) < 1e-5);
    let rounds_expected = expected["rounds"].as_array().unwrap();
    let rounds = greedy(n, rounds_expected.len(), |stack| {
        calibration_loss(model, examples, stack)
    })
    .unwrap();
    for (r, (ours, want)) in rounds.iter().zip(rounds_expected).enumerate() {
        let cands = want["candidates"].as_array().unwrap();
        assert_eq!(ours.candidates.len(), cands.len());
        for (&(layer, loss), c) in ours.candidates.iter().zip(cands) {
            assert_eq!(layer as u64, c[0].as_u64().unwrap());
            let w = c[1].as_f64().unwrap();
            println!("round {r}: without layer {layer}: {loss:.7} vs transformers {w:.7}");
            assert!(rel(loss, w) < 1e-5, "round {r} layer {layer}");
        }
        assert_eq!(ours.removed as u64, want["removed"].as_u64().unwrap());
    }
}

#[test]
fn plan_cli_runs_sleb_and_explains_missing_inputs() {
    let expected = common::fixture_json("train/sleb.json");
    let n_samples = expected["samples"].as_u64().unwrap() as usize;
    let tmp = tempfile::tempdir().unwrap();
    // The fixture's calibration set, with image paths made absolute.
    let mut data = common::train_data_absolute();
    data.truncate(n_samples);
    let data_path = tmp.path().join("calib.json");
    std::fs::write(&data_path, serde_json::to_string(&data).unwrap()).unwrap();
    let out = tmp.path().join("plan.json");
    let rounds = expected["rounds"].as_array().unwrap().len();
    let ratio = format!("{}", (rounds as f64 + 0.5) / 6.0);
    let run = common::cli()
        .args(["plan", "--strategy", "sleb", "--finetune-policy", "next"])
        .arg("--model")
        .arg(model_dir("tiny-b"))
        .arg("--data")
        .arg(&data_path)
        .args(["--samples", &n_samples.to_string(), "--ratio", &ratio])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let plan: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let mut want: Vec<u64> = expected["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["removed"].as_u64().unwrap())
        .collect();
    want.sort_unstable();
    let drop: Vec<u64> = serde_json::from_value(plan["drop"].clone()).unwrap();
    assert_eq!(drop, want);
    assert_eq!(plan["strategy"], "sleb");
    // Each dropped layer's next kept layer is fine-tuned (policy next).
    assert!(!plan["finetune"].as_array().unwrap().is_empty());

    let run = common::cli()
        .args(["plan", "--strategy", "sleb", "--ratio", "0.25"])
        .arg("--out")
        .arg(tmp.path().join("x.json"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("sleb needs --model"), "{err}");
    assert!(!tmp.path().join("x.json").exists());
}
