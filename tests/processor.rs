//! The processor against transformers' outputs (tests/fixtures, made by tools/make_fixtures.py
//! and, for tests/fixtures/image_backends, tools/make_image_backend_fixtures.py): image
//! preprocessing vs both backends of transformers' image processor (torchvision, the default,
//! and PIL), rendered prompts, token ids and mm_token_type_ids vs `Qwen3VLProcessor`, plus
//! error messages for broken inputs.

mod common;

use candle_core::Tensor;
use common::*;
use interlace::processor::image::{
    convert_to_rgb, resize_bicubic_aa, ImageBackend, ImageProcessor, ImageProcessorConfig,
};
use interlace::processor::{load_image, DynamicImage, Message, Processor};

const IMAGES: &[&str] = &[
    "tiny_13x9.png",
    "wide_150x12.png",
    "tall_11x170.png",
    "odd_97x61.png",
    "rgba_45x38.png",
    "gray_70x45.png",
    "photo_83x57.jpg",
];

/// Extra images of tests/fixtures/image_backends/images (up both ways, down in width and up in
/// height, gray + alpha, a large JPEG).
const EXTRA_IMAGES: &[&str] = &[
    "up_5x7.png",
    "mixed_300x20.png",
    "la_33x77.png",
    "big_400x300.jpg",
];

fn processor_with(model: &str, backend: ImageBackend) -> ImageProcessor {
    ImageProcessor::with_backend(
        ImageProcessorConfig::from_dir(model_dir(model)).unwrap(),
        backend,
    )
}

/// Bit-for-bit equality of f32 values, naming the first difference and the largest.
fn assert_bits_equal(ours: &[f32], expected: &[f32], label: &str) {
    assert_eq!(ours.len(), expected.len(), "{label}: length");
    let differ = ours
        .iter()
        .zip(expected)
        .position(|(a, b)| a.to_bits() != b.to_bits());
    if let Some(i) = differ {
        panic!(
            "{label}: value {i} is {} instead of {} (max |diff| {})",
            ours[i],
            expected[i],
            max_abs_diff(ours, expected)
        );
    }
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn grid_of(t: &Tensor) -> Vec<[usize; 3]> {
    to_i64(t)
        .chunks(3)
        .map(|c| [c[0] as usize, c[1] as usize, c[2] as usize])
        .collect()
}

#[test]
fn decoded_images_match_pil() {
    // `rgb_u8` is PIL's decode + transformers' convert_to_rgb (RGBA composited onto white).
    for image in IMAGES {
        let stem = image.rsplit_once('.').unwrap().0;
        let t = load_tensors(&fixtures().join(format!("processor/tiny-a__{stem}.safetensors")));
        let expected = t["rgb_u8"].flatten_all().unwrap().to_vec1::<u8>().unwrap();
        let ours = convert_to_rgb(&open_like_pil(&format!("images/{image}")));
        let ours = ours.as_raw();
        assert_eq!(ours.len(), expected.len(), "{image}: size");
        let max = ours
            .iter()
            .zip(&expected)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert_eq!(
            max, 0,
            "{image}: decoded pixels differ from PIL by up to {max}"
        );
    }
}

#[test]
fn pixel_values_match_slow_processor() {
    for model in MODELS {
        let proc = processor_with(model, ImageBackend::Pil);
        for image in IMAGES {
            let stem = image.rsplit_once('.').unwrap().0;
            let t =
                load_tensors(&fixtures().join(format!("processor/{model}__{stem}.safetensors")));
            let out = proc
                .preprocess(&open_like_pil(&format!("images/{image}")))
                .unwrap();
            assert_eq!(
                vec![out.grid_thw],
                grid_of(&t["image_grid_thw"]),
                "{model}/{image}"
            );
            assert_eq!(
                out.patch_dim,
                t["pixel_values"].dims()[1],
                "{model}/{image}"
            );
            assert_bits_equal(
                &out.pixel_values,
                &f32s(&t["pixel_values"]),
                &format!("{model}/{image} vs the slow processor"),
            );
        }
    }
}

#[test]
fn pixel_values_from_pil_decoded_rgb_match_slow_processor() {
    // Resizing + normalisation alone, starting from PIL's own decoded pixels.
    for model in MODELS {
        let proc = processor_with(model, ImageBackend::Pil);
        for image in IMAGES {
            let stem = image.rsplit_once('.').unwrap().0;
            let t =
                load_tensors(&fixtures().join(format!("processor/{model}__{stem}.safetensors")));
            let rgb = &t["rgb_u8"];
            let (h, w) = (rgb.dims()[0] as u32, rgb.dims()[1] as u32);
            let raw = rgb.flatten_all().unwrap().to_vec1::<u8>().unwrap();
            let img = DynamicImage::ImageRgb8(::image::RgbImage::from_raw(w, h, raw).unwrap());
            let out = proc.preprocess(&img).unwrap();
            let d = max_abs_diff(&out.pixel_values, &f32s(&t["pixel_values"]));
            assert!(d <= 1e-5, "{model}/{image}: max |ours - slow| = {d}");
        }
    }
}

#[test]
fn pixel_values_match_fast_processor() {
    // The torchvision backend, which is also what `ImageProcessor::from_dir` picks.
    for model in MODELS {
        let proc = ImageProcessor::from_dir(model_dir(model)).unwrap();
        assert_eq!(proc.backend, ImageBackend::Torchvision);
        for image in IMAGES {
            let stem = image.rsplit_once('.').unwrap().0;
            let t =
                load_tensors(&fixtures().join(format!("processor/{model}__{stem}.safetensors")));
            let out = proc
                .preprocess(&open_like_pil(&format!("images/{image}")))
                .unwrap();
            assert_eq!(
                vec![out.grid_thw],
                grid_of(&t["image_grid_thw"]),
                "{model}/{image}"
            );
            assert_bits_equal(
                &out.pixel_values,
                &f32s(&t["pixel_values_fast"]),
                &format!("{model}/{image} vs the fast processor"),
            );
        }
    }
}

#[test]
fn extra_images_match_both_backends() {
    for model in MODELS {
        for image in EXTRA_IMAGES {
            let stem = image.rsplit_once('.').unwrap().0;
            let t = load_tensors(
                &fixtures().join(format!("image_backends/{model}__{stem}.safetensors")),
            );
            let img = open_like_pil(&format!("image_backends/images/{image}"));
            for (backend, key) in [
                (ImageBackend::Torchvision, "pixel_values_torchvision"),
                (ImageBackend::Pil, "pixel_values_pil"),
            ] {
                let out = processor_with(model, backend).preprocess(&img).unwrap();
                assert_eq!(
                    vec![out.grid_thw],
                    grid_of(&t["image_grid_thw"]),
                    "{model}/{image}"
                );
                assert_bits_equal(
                    &out.pixel_values,
                    &f32s(&t[key]),
                    &format!("{model}/{image} vs {}", backend.transformers_class()),
                );
            }
        }
    }
}

#[test]
fn torchvision_resize_matches_torchvision() {
    // torchvision's F.resize(uint8, BICUBIC, antialias=True) over many size pairs: up, down,
    // mixed, 1-pixel sides, a 300x downscale (int16 weight precision at its 22-bit cap).
    let t = load_tensors(&fixtures().join("image_backends/resize_sweep.safetensors"));
    let mut cases = 0;
    for i in 0.. {
        let (Some(input), Some(want)) = (t.get(&format!("in_{i}")), t.get(&format!("out_{i}")))
        else {
            if i < 64 {
                continue;
            }
            break;
        };
        let (ih, iw) = (input.dims()[0], input.dims()[1]);
        let (oh, ow) = (want.dims()[0], want.dims()[1]);
        let raw = input.flatten_all().unwrap().to_vec1::<u8>().unwrap();
        let img = ::image::RgbImage::from_raw(iw as u32, ih as u32, raw).unwrap();
        let ours = resize_bicubic_aa(&img, ow, oh).unwrap();
        let want = want.flatten_all().unwrap().to_vec1::<u8>().unwrap();
        let max = ours
            .as_raw()
            .iter()
            .zip(&want)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert_eq!(
            max, 0,
            "case {i}: {iw}x{ih} -> {ow}x{oh} differs by up to {max} levels"
        );
        cases += 1;
    }
    assert!(cases >= 30, "only {cases} sweep cases");
}

#[test]
fn rescale_normalise_variants_match_both_backends() {
    let dir = fixtures().join("image_backends");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("variants.json")).unwrap()).unwrap();
    let t = load_tensors(&dir.join("variants.safetensors"));
    let model = meta["model"].as_str().unwrap();
    let img = open_like_pil(meta["image"].as_str().unwrap());
    let base: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model_dir(model).join("preprocessor_config.json")).unwrap(),
    )
    .unwrap();
    for (name, overrides) in meta["variants"].as_object().unwrap() {
        let mut cfg = base.clone();
        for (k, v) in overrides.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        let cfg = ImageProcessorConfig::from_json(&cfg).unwrap();
        for backend in [ImageBackend::Torchvision, ImageBackend::Pil] {
            let out = ImageProcessor::with_backend(cfg.clone(), backend)
                .preprocess(&img)
                .unwrap();
            assert_bits_equal(
                &out.pixel_values,
                &f32s(&t[&format!("{name}.{}", backend.name())]),
                &format!("{name} through {}", backend.name()),
            );
        }
    }
}

#[test]
fn default_backend_is_the_one_transformers_loads() {
    // default_backend.json: the class transformers' AutoImageProcessor / AutoProcessor load
    // for preprocessor_config.json variants with and without the fast / PIL markers.
    let path = fixtures().join("image_backends/default_backend.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let variants = json.as_object().unwrap();
    assert!(variants.len() >= 5);
    for (name, v) in variants {
        let dir = copy_model("tiny-b", "preprocessor_config.json");
        std::fs::write(
            dir.path().join("preprocessor_config.json"),
            serde_json::to_string_pretty(&v["preprocessor_config"]).unwrap(),
        )
        .unwrap();
        let ours = Processor::from_dir(dir.path())
            .unwrap()
            .image_processor
            .backend;
        assert_eq!(
            ours.transformers_class(),
            v["AutoProcessor"].as_str().unwrap(),
            "{name}"
        );
        let ours = ImageProcessor::from_dir(dir.path()).unwrap().backend;
        assert_eq!(
            ours.transformers_class(),
            v["AutoImageProcessor"].as_str().unwrap(),
            "{name}"
        );
    }
    // Both tiny checkpoints (Fast and base type names) get it too; --image-backend overrides.
    for model in MODELS {
        let p = Processor::from_dir(model_dir(model)).unwrap();
        assert_eq!(p.image_processor.backend, ImageBackend::Torchvision);
        let p = p.with_image_backend(Some(ImageBackend::Pil));
        assert_eq!(p.image_processor.backend, ImageBackend::Pil);
        let p = p.with_image_backend(None);
        assert_eq!(p.image_processor.backend, ImageBackend::Pil);
    }
}

#[test]
fn image_backend_flag_on_every_command_that_preprocesses_images() {
    for cmd in [
        "forward",
        "similarity",
        "plan",
        "finetune",
        "pretrain",
        "eval",
        "generate",
        "latency",
        "run",
    ] {
        let out = interlace(&[cmd, "--help"], &[]);
        let help = assert_ok(&out);
        assert!(
            help.contains("--image-backend <torchvision|pil>"),
            "{cmd} --help lacks --image-backend"
        );
    }
    // Accepted, in either case.
    let image = fixtures().join("images/rgba_45x38.png");
    for backend in ["pil", "TORCHVISION"] {
        let out = interlace(
            &[
                "forward",
                "--image-backend",
                backend,
                "--prompt",
                "Describe.",
                "--device",
                "cpu",
                "--model",
            ],
            &[
                &model_dir("tiny-b"),
                std::path::Path::new("--image"),
                &image,
            ],
        );
        assert_ok(&out);
    }
    // A bad value is clap's usage error (exit status 2) naming the choices.
    let out = interlace(
        &[
            "generate",
            "--image-backend",
            "opencv",
            "--prompt",
            "hi",
            "--model",
        ],
        &[&model_dir("tiny-b")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid value 'opencv' for '--image-backend")
            && err.contains("torchvision")
            && err.contains("pil"),
        "{err}"
    );
}

#[test]
fn cases_match_transformers_processor() {
    for model in MODELS {
        // The case fixtures were made with the slow (PIL) image processor.
        let processor = Processor::from_dir(model_dir(model))
            .unwrap()
            .with_image_backend(Some(ImageBackend::Pil));
        for case in CASES {
            let json = case_json(model, case);
            let t = load_case(model, case);
            let (messages, images, add_gen) = case_conversation(model, case);
            let enc = processor.encode(&messages, &images, add_gen).unwrap();
            let label = format!("{model}/{case}");

            assert_eq!(
                enc.prompt,
                json["prompt"].as_str().unwrap(),
                "{label}: prompt"
            );
            // The same prompt from the HF-format JSON messages directly.
            let direct = processor
                .chat_template
                .render_json(
                    &json["messages"],
                    add_gen,
                    &processor.tokenizer.special_tokens_map,
                    &Default::default(),
                )
                .unwrap();
            assert_eq!(direct, enc.prompt, "{label}: prompt from JSON messages");

            let ids: Vec<i64> = enc.input_ids.iter().map(|&x| x as i64).collect();
            assert_eq!(ids, to_i64(&t["input_ids"]), "{label}: input_ids");
            let mm: Vec<i64> = enc.mm_token_type_ids.iter().map(|&x| x as i64).collect();
            assert_eq!(
                mm,
                to_i64(&t["mm_token_type_ids"]),
                "{label}: mm_token_type_ids"
            );

            match t.get("pixel_values") {
                Some(pv) => {
                    assert_eq!(
                        enc.image_grid_thw,
                        grid_of(&t["image_grid_thw"]),
                        "{label}: grid"
                    );
                    assert_eq!(enc.patch_dim, pv.dims()[1], "{label}: patch_dim");
                    let d = max_abs_diff(&enc.pixel_values, &f32s(pv));
                    assert!(d <= 1e-5, "{label}: max |pixel_values diff| = {d}");
                }
                None => {
                    assert!(
                        enc.pixel_values.is_empty() && enc.image_grid_thw.is_empty(),
                        "{label}"
                    );
                }
            }
            // Decoding the ids gives back the expanded prompt.
            let text = processor.decode(&enc.input_ids).unwrap();
            assert_eq!(
                text.replace("<|image_pad|>", ""),
                enc.prompt.replace("<|image_pad|>", ""),
                "{label}: decode"
            );
        }
    }
}

#[test]
fn tokenizer_matches_transformers() {
    let path = fixtures().join("tokenizer/encodings.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for model in MODELS {
        let processor = Processor::from_dir(model_dir(model)).unwrap();
        for case in json["cases"].as_array().unwrap() {
            let s = case["text"].as_str().unwrap();
            let expected: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let ids = processor.tokenizer.encode(s, true).unwrap();
            assert_eq!(ids, expected, "{model}: {s:?}");
            assert_eq!(
                processor.encode_text(s).unwrap(),
                expected,
                "{model}: {s:?}"
            );
            assert_eq!(
                processor.decode(&ids).unwrap(),
                case["decoded"].as_str().unwrap(),
                "{model}: decode {s:?}"
            );
            assert_eq!(
                processor.tokenizer.decode(&ids, true).unwrap(),
                case["decoded_skip_special"].as_str().unwrap(),
                "{model}: decode(skip_special) {s:?}"
            );
        }
    }
}

#[test]
fn special_tokens_and_back_to_back_placeholders() {
    let processor = Processor::from_dir(model_dir("tiny-a")).unwrap();
    let ids = processor.special_token_ids();
    assert_eq!(ids.image_pad, Some(412));
    assert_eq!(ids.video_pad, Some(413));
    assert_eq!(ids.vision_start, Some(409));
    assert_eq!(ids.vision_end, Some(410));
    assert_eq!(ids.im_start, Some(401));
    assert_eq!(ids.im_end, Some(402));
    assert_eq!(ids.endoftext, Some(400));
    let toks = processor
        .encode_text("<|vision_start|><|image_pad|><|image_pad|><|image_pad|><|vision_end|>a")
        .unwrap();
    assert_eq!(&toks[..5], &[409, 412, 412, 412, 410]);
    assert_eq!(toks.len(), 6);
}

#[test]
fn placeholder_count_must_match_images() {
    let processor = Processor::from_dir(model_dir("tiny-a")).unwrap();
    let img = open_like_pil("images/tiny_13x9.png");
    let msgs = vec![Message::text("user", "no image here")];
    let err = processor.encode(&msgs, &[img], true).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("0 image placeholder") && msg.contains("1 image"),
        "{msg}"
    );
}

#[test]
fn pixel_bounds_override() {
    let processor = Processor::from_dir(model_dir("tiny-a"))
        .unwrap()
        .with_pixel_bounds(Some(784), Some(50176))
        .unwrap();
    let cfg = &processor.image_processor.config;
    assert_eq!((cfg.min_pixels, cfg.max_pixels), (784, 50176));
    let out = processor
        .image_processor
        .preprocess(&open_like_pil("images/odd_97x61.png"))
        .unwrap();
    // smart_resize(61, 97, 32, 784, 50176) = (64, 96).
    assert_eq!(out.grid_thw, [1, 4, 6]);
}

// ---------------------------------------------------------------------------------------------
// Errors name the file and the problem in one line.

fn copy_model(model: &str, skip: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(model_dir(model)).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == skip || name.to_string_lossy().ends_with(".safetensors") {
            continue;
        }
        std::fs::copy(entry.path(), dir.path().join(&name)).unwrap();
    }
    dir
}

fn one_line(err: &anyhow::Error) -> String {
    let msg = interlace::error_line(err);
    assert!(
        !format!("{err:#}").contains('\n'),
        "error spans several lines: {err:#}"
    );
    msg
}

#[test]
fn missing_preprocessor_config_names_the_file() {
    let dir = copy_model("tiny-a", "preprocessor_config.json");
    let err = Processor::from_dir(dir.path()).unwrap_err();
    let msg = one_line(&err);
    assert!(msg.contains("preprocessor_config.json"), "{msg}");
}

#[test]
fn bad_preprocessor_config_names_the_file_and_field() {
    let dir = copy_model("tiny-a", "");
    std::fs::write(
        dir.path().join("preprocessor_config.json"),
        r#"{"patch_size": "sixteen"}"#,
    )
    .unwrap();
    let err = ImageProcessor::from_dir(dir.path()).unwrap_err();
    let msg = one_line(&err);
    assert!(
        msg.contains("preprocessor_config.json") && msg.contains("patch_size"),
        "{msg}"
    );
}

#[test]
fn missing_tokenizer_names_the_file() {
    let dir = copy_model("tiny-b", "tokenizer.json");
    let err = Processor::from_dir(dir.path()).unwrap_err();
    let msg = one_line(&err);
    assert!(msg.contains("tokenizer.json"), "{msg}");
}

#[test]
fn missing_chat_template_names_the_directory() {
    let dir = copy_model("tiny-b", "chat_template.json");
    let err = Processor::from_dir(dir.path()).unwrap_err();
    let msg = one_line(&err);
    assert!(msg.contains("chat template"), "{msg}");
}

#[test]
fn unreadable_image_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.png");
    std::fs::write(&path, b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
    let msg = one_line(&load_image(&path).unwrap_err());
    assert!(msg.contains("broken.png"), "{msg}");
    let missing = dir.path().join("missing.jpg");
    let msg = one_line(&load_image(&missing).unwrap_err());
    assert!(msg.contains("missing.jpg"), "{msg}");
}

#[test]
fn extreme_aspect_ratio_is_an_error() {
    let proc = ImageProcessor::from_dir(model_dir("tiny-a")).unwrap();
    let img = DynamicImage::ImageRgb8(::image::RgbImage::new(402, 2));
    let msg = one_line(&proc.preprocess(&img).unwrap_err());
    assert!(msg.contains("aspect ratio"), "{msg}");
}

#[test]
fn processor_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Processor>();
}

/// Every prefix of small JPEG and PNG files against Pillow's verdict on the same prefix
/// (tests/fixtures/truncated, made by tools/make_truncation_fixture.py): what Pillow refuses
/// as truncated we refuse too (for JPEG exactly the same prefixes), with one line naming the
/// file.
#[test]
fn truncated_images_are_refused_as_pillow_refuses_them() {
    let dir = fixtures().join("truncated");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("verdicts.json")).unwrap()).unwrap();
    for (name, v) in meta["files"].as_object().unwrap() {
        let data = std::fs::read(dir.join(name)).unwrap();
        assert_eq!(data.len() as u64, v["len"].as_u64().unwrap(), "{name}");
        let accepted: Vec<usize> = v["pillow_accepts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap() as usize)
            .collect();
        let mut ours = Vec::new();
        for n in 0..=data.len() {
            match interlace::processor::image::decode_image_bytes(&data[..n], name) {
                Ok(_) => ours.push(n),
                Err(e) => {
                    let msg = interlace::error_line(&e);
                    assert!(
                        !msg.contains('\n') && msg.starts_with(name.as_str()),
                        "{msg:?}"
                    );
                }
            }
        }
        if name.ends_with(".jpg") {
            assert_eq!(
                ours, accepted,
                "{name}: prefixes we decode vs those Pillow decodes"
            );
        } else {
            // The png crate wants the whole zlib stream and IDAT chunk (checksums included);
            // Pillow stops reading once it has every row. So we refuse a few more prefixes
            // than Pillow (up to 20 bytes short of the end), never fewer.
            assert!(
                ours.iter().all(|n| accepted.contains(n)) && ours.contains(&data.len()),
                "{name}: we decode prefixes {ours:?}, Pillow {accepted:?}"
            );
        }
    }
}
