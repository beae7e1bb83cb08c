//! Qwen2-VL and Qwen2.5-VL against transformers: the vision towers (including Qwen2.5-VL's
//! window attention), the sectioned M-RoPE tables and the M-RoPE position ids, on the tiny
//! checkpoints of tests/fixtures/families (tools/make_qwen2_vl_fixtures.py).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::{fixtures, load_tensors, open_like_pil, to_f32_vec, to_i64};
use interlace::model::config::{ModelConfig, TextConfig};
use interlace::model::ops::{self, Grad};
use interlace::model::qwen2_vl::{
    get_rope_index, Qwen2VisionConfig, Qwen2VisionModel, VisionFamily,
};
use interlace::model::rope::TextRope;
use interlace::model::weights;
use interlace::processor::image::{ImageProcessor, ImageProcessorConfig};
use interlace::processor::ImageBackend;

const FAMILIES: &[&str] = &["qwen2-vl", "qwen2.5-vl"];

fn family_dir(name: &str) -> PathBuf {
    fixtures().join("families").join(name)
}

fn case(name: &str, case: &str) -> HashMap<String, Tensor> {
    load_tensors(&family_dir(name).join(format!("{case}.safetensors")))
}

fn config_json(name: &str) -> serde_json::Value {
    let path = family_dir(name).join("model/config.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    to_f32_vec(a)
        .iter()
        .zip(to_f32_vec(b))
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn grid(t: &Tensor) -> Vec<[usize; 3]> {
    to_i64(t)
        .chunks(3)
        .map(|g| [g[0] as usize, g[1] as usize, g[2] as usize])
        .collect()
}

#[test]
fn vision_towers_match_transformers() {
    for name in FAMILIES {
        let dir = family_dir(name).join("model");
        let cfg = Qwen2VisionConfig::from_config_json(&config_json(name)).unwrap();
        let expected_family = if *name == "qwen2-vl" {
            VisionFamily::Qwen2Vl
        } else {
            VisionFamily::Qwen25Vl
        };
        assert_eq!(cfg.family, expected_family);
        let (vb, infos) = weights::var_builder(&dir, DType::F32, &Device::Cpu).unwrap();
        // save_pretrained writes the Hub's layout: the tower under `visual.`
        assert!(infos.iter().any(|i| i.name.starts_with("visual.blocks.")));
        let model = Qwen2VisionModel::new(&cfg, vb.pp("visual")).unwrap();
        let c = case(name, "one_image");
        let g = grid(&c["image_grid_thw"]);
        for grad in [Grad::None, Grad::Track] {
            let out = model.forward(&c["pixel_values"], &g, grad).unwrap();
            let d = max_abs(&out, &c["image_embeds"]);
            eprintln!("{name} vision tower ({grad:?}): max |ours - transformers| = {d:.3e}");
            assert!(d < 1e-4, "{name}: vision tower off by {d}");
        }

        // The same weights named as transformers 5 names the module (`model.visual.`).
        let renamed: HashMap<String, Tensor> = infos
            .iter()
            .filter(|i| i.name.starts_with("visual."))
            .map(|i| {
                (
                    format!("model.{}", i.name),
                    vb.get(i.shape.as_slice(), &i.name).unwrap(),
                )
            })
            .collect();
        let vb2 = VarBuilder::from_tensors(renamed, DType::F32, &Device::Cpu);
        let mut model2 = Qwen2VisionModel::new(&cfg, vb2.pp("model.visual")).unwrap();
        let out = model2.forward(&c["pixel_values"], &g, Grad::None).unwrap();
        assert!(max_abs(&out, &c["image_embeds"]) < 1e-4);

        // params_mut names every stored tensor of the tower, relative to its prefix.
        let shape = model2.patch_weight_shape();
        let mut names: Vec<String> = model2
            .params_mut()
            .into_iter()
            .map(|(n, t)| {
                let stored = infos.iter().find(|i| i.name == format!("visual.{n}"));
                let stored = stored.unwrap_or_else(|| panic!("{name}: no stored tensor {n}"));
                if n == "patch_embed.proj.weight" {
                    assert_eq!(stored.shape, shape);
                } else {
                    assert_eq!(stored.shape, t.dims());
                }
                n
            })
            .collect();
        names.sort();
        let mut stored: Vec<String> = infos
            .iter()
            .filter_map(|i| i.name.strip_prefix("visual.").map(str::to_string))
            .collect();
        stored.sort();
        assert_eq!(names, stored);
    }
}

#[test]
fn vision_tower_gradients_flow_on_the_tracked_path() {
    for name in FAMILIES {
        let dir = family_dir(name).join("model");
        let cfg = Qwen2VisionConfig::from_config_json(&config_json(name)).unwrap();
        let (vb, _) = weights::var_builder(&dir, DType::F32, &Device::Cpu).unwrap();
        let mut model = Qwen2VisionModel::new(&cfg, vb.pp("visual")).unwrap();
        let mut vars = Vec::new();
        for (_, t) in model.params_mut() {
            let v = candle_core::Var::from_tensor(t).unwrap();
            *t = v.as_tensor().clone();
            vars.push(v);
        }
        let c = case(name, "one_image");
        let out = model
            .forward(&c["pixel_values"], &grid(&c["image_grid_thw"]), Grad::Track)
            .unwrap();
        let grads = out.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        for v in &vars {
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{name}: a tower tensor got no gradient"));
            let n = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                n > 0.0 && n.is_finite(),
                "{name}: zero or non-finite gradient"
            );
        }
    }
}

#[test]
fn sectioned_mrope_tables_match_transformers() {
    for name in FAMILIES {
        let config = ModelConfig::from_dir(&family_dir(name).join("model")).unwrap();
        let head_dim = config.text.head_dim;
        let rope = TextRope::new(&config.text);
        let interleaved = TextRope::new(&TextConfig {
            mrope_interleaved: true,
            ..config.text.clone()
        });
        for case_name in ["text", "one_image"] {
            let c = case(name, case_name);
            let pos = to_i64(&c["position_ids"]);
            let seq = pos.len() / 3;
            let rows = [
                pos[..seq].to_vec(),
                pos[seq..2 * seq].to_vec(),
                pos[2 * seq..].to_vec(),
            ];
            let (cos, sin) = rope.cos_sin(&rows, &Device::Cpu).unwrap();
            let dc = max_abs(&cos, &c["rope_cos"]);
            let ds = max_abs(&sin, &c["rope_sin"]);
            eprintln!("{name}/{case_name}: cos {dc:.3e}, sin {ds:.3e}");
            assert!(
                dc < 1e-5 && ds < 1e-5,
                "{name}/{case_name}: cos {dc}, sin {ds}"
            );
            if case_name == "one_image" {
                // The case tells the layouts apart: Qwen3-VL's interleaved tables differ.
                let (icos, _) = interleaved.cos_sin(&rows, &Device::Cpu).unwrap();
                assert!(max_abs(&icos, &c["rope_cos"]) > 1e-2);
            }
            // And as ops::apply_rope consumes them: transformers' q·cos + rotate_half(q)·sin
            // computed from transformers' own tables.
            let q = Tensor::randn(0f32, 1.0, (1, seq, 2, head_dim), &Device::Cpu).unwrap();
            let ours = ops::apply_rope(&q, &cos, &sin, Grad::None).unwrap();
            let (tc, ts) = (
                c["rope_cos"].unsqueeze(1).unwrap(),
                c["rope_sin"].unsqueeze(1).unwrap(),
            );
            let half = head_dim / 2;
            let rot = Tensor::cat(
                &[
                    q.narrow(3, half, half).unwrap().neg().unwrap(),
                    q.narrow(3, 0, half).unwrap(),
                ],
                3,
            )
            .unwrap();
            let reference =
                (q.broadcast_mul(&tc).unwrap() + rot.broadcast_mul(&ts).unwrap()).unwrap();
            assert!(max_abs(&ours, &reference) < 1e-5);
        }
    }
}

#[test]
fn rope_index_matches_transformers() {
    for name in FAMILIES {
        for case_name in ["text", "one_image"] {
            let c = case(name, case_name);
            let types: Vec<u8> = to_i64(&c["mm_token_type_ids"])
                .iter()
                .map(|&x| x as u8)
                .collect();
            let grids = c.get("image_grid_thw").map(grid).unwrap_or_default();
            let r = get_rope_index(&types, &grids, 2).unwrap();
            let pos = to_i64(&c["position_ids"]);
            let seq = types.len();
            for (a, row) in r.positions.iter().enumerate() {
                assert_eq!(
                    row.as_slice(),
                    &pos[a * seq..(a + 1) * seq],
                    "{name}/{case_name} row {a}"
                );
            }
            assert_eq!(r.delta, to_i64(&c["rope_deltas"])[0], "{name}/{case_name}");
        }
    }
}

/// Our image processor on the families' preprocessor_config.json (CLIP mean and std,
/// top-level min/max_pixels) gives transformers' pixel values.
#[test]
fn pixel_values_match_the_pil_processor() {
    for name in FAMILIES {
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(family_dir(name).join("one_image.json")).unwrap(),
        )
        .unwrap();
        let image = meta["images"][0].as_str().unwrap();
        let config = ImageProcessorConfig::from_dir(family_dir(name).join("model")).unwrap();
        let p = ImageProcessor::with_backend(config, ImageBackend::Pil);
        let out = p.preprocess(&open_like_pil(image)).unwrap();
        let c = case(name, "one_image");
        assert_eq!(vec![out.grid_thw], grid(&c["image_grid_thw"]));
        let ours = Tensor::from_vec(
            out.pixel_values,
            (out.grid_thw.iter().product::<usize>(), out.patch_dim),
            &Device::Cpu,
        )
        .unwrap();
        let d = max_abs(&ours, &c["pixel_values"]);
        assert!(d < 1e-5, "{name}: pixel values off by {d}");
    }
}
