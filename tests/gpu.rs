//! GPU tests: the inference paths on CUDA against transformers. They need a binary built
//! with `--features cuda` and a visible GPU, so they are ignored by default:
//!
//!   cargo test --release --features cuda --test gpu -- --ignored
//!
//! or, on a machine without Rust, `scripts/gpu-check.sh` with the test binary that
//! `scripts/build-cuda.sh --tests` builds. The bf16 tests compare with transformers' own
//! bf16 run *on the GPU* (INTERLACE_BF16_REF: the directory written there by
//! `tools/make_bf16_fixtures.py --device cuda --out DIR`); the f32 tests with the committed
//! f32 fixtures (transformers on the CPU in f32, which CUDA f32 must reproduce to 1e-4:
//! candle's f32 matrix products on CUDA do not use TF32).
//!
//! Tolerances for bf16 are those of tests/bf16.rs (bf16 on the CPU), whose header explains
//! them: within 6e-2 of transformers' bf16 (relative to the largest value), and no more
//! than twice as far from f32 as transformers' own bf16 is.
//!
//! Training: two f32 fine-tuning steps on CUDA against PyTorch's (the committed fixture,
//! 1e-5) and against the same steps on the CPU (1e-5); two bf16 steps with f32 masters
//! against PyTorch's bf16 steps on the same GPU (INTERLACE_BF16_TRAIN_REF, written there by
//! `tools/make_bf16_train_fixture.py --device cuda --out DIR`; tolerances of
//! tests/finetune.rs); every trainable tensor gets a non-zero gradient; a fine-tuning run
//! killed and resumed on the GPU ends bit-equal to an uninterrupted one (INTERLACE_BIN: the
//! CUDA binary, when the test binary runs away from the tree that built it).

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use interlace::model::device::{resolve, DTypeChoice, DeviceChoice, Placement};
use interlace::model::ops::{attention_padded, Grad};
use interlace::model::Model;

const F32_TOL: f32 = 1e-4;
const BF16_TOL: f32 = 6e-2;
const PRECISION_RATIO: f32 = 2.0;
const MIN_GAP: f64 = 0.1;

/// GPU 0, or the CPU with INTERLACE_GPU_TESTS_ON_CPU=1 (a check of these tests' own code
/// on a machine without a GPU, against the CPU references; it says nothing about CUDA).
fn gpu(dtype: DTypeChoice) -> Placement {
    let device = if std::env::var_os("INTERLACE_GPU_TESTS_ON_CPU").is_some() {
        DeviceChoice::Cpu
    } else {
        DeviceChoice::Cuda(0)
    };
    let p = resolve(device, dtype).expect("a GPU (these tests need one)");
    eprintln!("running on {}", p.describe());
    p
}

/// `--device` for `p`.
fn device_flag(p: &Placement) -> &'static str {
    if p.is_gpu() {
        "cuda"
    } else {
        "cpu"
    }
}

#[test]
#[ignore = "needs a GPU and the cuda feature"]
fn cuda_f32_hidden_states_and_logits_match_transformers() {
    let p = gpu(DTypeChoice::F32);
    for &name in MODELS {
        let model = Model::load(&model_dir(name), DType::F32, &p.device).unwrap();
        for &case in CASES {
            let (hidden, logits) = forward_errors(&model, name, case, &fixtures().join("cases"));
            eprintln!(
                "{name}/{case}: cuda f32: worst hidden state {hidden:.2e}, logits {logits:.2e}"
            );
            assert!(
                hidden < F32_TOL,
                "{name}/{case}: hidden states differ by {hidden:e}"
            );
            assert!(
                logits < F32_TOL,
                "{name}/{case}: logits differ by {logits:e}"
            );
        }
    }
}

/// The other families (Qwen3, Llama, Qwen2-VL, Qwen2.5-VL) in f32 on the GPU against the
/// committed transformers fixtures (tests/families.rs checks them on the CPU): every
/// hidden state and the logits within 1e-4, greedy tokens identical. The inputs are the
/// fixtures' own token ids and pixel values, so no processor is involved.
#[test]
#[ignore = "needs a GPU and the cuda feature"]
fn cuda_f32_other_families_match_transformers() {
    use interlace::model::{CollectHidden, ModelInputs};
    let p = gpu(DTypeChoice::F32);
    let ids = |t: &Tensor| -> Vec<u32> {
        t.to_dtype(DType::I64)
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|x| x as u32)
            .collect()
    };
    // (family, case file, key prefix, hidden-state key, generated key)
    let text = |f: &'static str, c: &'static str| (f, "cases", c, "hidden", "generated");
    let vl = |f: &'static str, c: &'static str| (f, c, "", "hidden_state", "generated_ids");
    let cases = [
        text("qwen3", "short"),
        text("qwen3", "multiturn"),
        text("llama", "short"),
        text("llama", "multiturn"),
        vl("qwen2-vl", "text"),
        vl("qwen2-vl", "one_image"),
        vl("qwen2.5-vl", "text"),
        vl("qwen2.5-vl", "one_image"),
    ];
    for (family, file, case, hidden_key, gen_key) in cases {
        let dir = fixtures().join("families").join(family);
        let model = Model::load(&dir.join("model"), DType::F32, &p.device).unwrap();
        let t = load_tensors(&dir.join(format!("{file}.safetensors")));
        let key = |k: &str| {
            if case.is_empty() {
                k.to_string()
            } else {
                format!("{case}.{k}")
            }
        };
        let label = format!("{family}/{}", if case.is_empty() { file } else { case });
        let input_ids = ids(&t[&key("input_ids")]);
        let mut inputs = ModelInputs::text(input_ids);
        if let Some(pv) = t.get("pixel_values") {
            inputs.pixel_values = Some(pv.to_device(&p.device).unwrap());
            let g = ids(&t["image_grid_thw"].flatten_all().unwrap());
            inputs.image_grid_thw = g
                .chunks(3)
                .map(|c| [c[0] as usize, c[1] as usize, c[2] as usize])
                .collect();
            inputs.mm_token_type_ids = ids(&t["mm_token_type_ids"])
                .iter()
                .map(|&x| x as u8)
                .collect();
        }
        let mut hidden = CollectHidden::default();
        let logits = model.forward(&inputs, Some(&mut hidden)).unwrap();
        let mut worst = 0f32;
        for (i, h) in hidden.0.iter().enumerate() {
            let want = to_f32_vec(&t[&key(&format!("{hidden_key}.{i}"))]);
            worst = worst.max(max_abs_diff(&to_f32_vec(&h.squeeze(0).unwrap()), &want));
        }
        let dl = max_abs_diff(&to_f32_vec(&logits), &to_f32_vec(&t[&key("logits")]));
        eprintln!(
            "{label}: {}: worst hidden state {worst:.2e}, logits {dl:.2e}",
            p.describe()
        );
        assert!(
            worst < F32_TOL && dl < F32_TOL,
            "{label}: hidden {worst:e}, logits {dl:e}"
        );
        let want = ids(&t[&key(gen_key)]);
        let got = interlace::eval::generate::greedy(&model, &inputs, want.len(), &[]).unwrap();
        assert_eq!(got.tokens, want, "{label}: greedy tokens");
    }
}

#[test]
#[ignore = "needs a GPU and the cuda feature"]
fn cuda_bf16_hidden_states_and_logits_match_transformers_bf16() {
    let p = gpu(DTypeChoice::Bf16);
    assert_bf16_forward_matches(&p.device, &bf16_reference(true), BF16_TOL, PRECISION_RATIO);
}

#[test]
#[ignore = "needs a GPU and the cuda feature"]
fn cuda_f32_greedy_generation_equals_transformers() {
    let p = gpu(DTypeChoice::F32);
    let expected = fixture_json("generate.json");
    for batched in [false, true] {
        let (cases, tokens) = check_generations(&expected, &p, 1e-3, batched);
        eprintln!(
            "cuda f32 greedy (batched: {batched}): {tokens} tokens of {cases} cases identical"
        );
        assert!(tokens > 0);
    }
}

#[test]
#[ignore = "needs a GPU and the cuda feature"]
fn cuda_bf16_greedy_generation_follows_transformers_bf16() {
    let p = gpu(DTypeChoice::Bf16);
    let path = bf16_reference(true).join("generate.json");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for batched in [false, true] {
        let (cases, tokens) = check_generations(&expected, &p, MIN_GAP, batched);
        eprintln!("cuda bf16 greedy (batched: {batched}): {tokens} tokens of {cases} cases identical while the gap allows");
        assert!(tokens > cases * 4, "too few tokens compared: {tokens}");
    }
}

#[test]
#[ignore = "needs a GPU and the cuda feature"]
fn cuda_fused_attention_equals_the_cpu_kernel() {
    let p = gpu(DTypeChoice::F32);
    let cpu = Device::Cpu;
    // Grouped-query attention, a batch of 3 with left padding, prefill (causal) and decode.
    for (seq, seq_k, causal) in [
        (9usize, 9usize, true),
        (1, 17, true),
        (5, 5, false),
        (1, 1500, true),
    ] {
        let q = Tensor::randn(0f32, 1.0, (3, seq, 8, 16), &cpu).unwrap();
        let k = Tensor::randn(0f32, 1.0, (3, seq_k, 2, 16), &cpu).unwrap();
        let v = Tensor::randn(0f32, 1.0, (3, seq_k, 2, 16), &cpu).unwrap();
        let pad = if seq == 1 {
            vec![0, 4.min(seq_k - 1), 1]
        } else {
            vec![]
        };
        let want = attention_padded(&q, &k, &v, causal, &pad, Grad::None).unwrap();
        for dtype in [DType::F32, DType::BF16] {
            let on = |t: &Tensor| t.to_device(&p.device).unwrap().to_dtype(dtype).unwrap();
            let got =
                attention_padded(&on(&q), &on(&k), &on(&v), causal, &pad, Grad::None).unwrap();
            let err = rel_err(&got.to_device(&cpu).unwrap(), &want);
            let tol = if dtype == DType::F32 { 1e-5 } else { 2e-2 };
            eprintln!("attention seq {seq} keys {seq_k} causal {causal} {dtype:?}: {err:.2e}");
            assert!(err < tol, "{dtype:?}: {err:e}");
        }
    }
}

/// The training path's own kernels on CUDA (fused softmax and its backward, f32 RMSNorm
/// forward and backward, RoPE, SwiGLU, tanh-GELU and cross-entropy with their backward,
/// the frozen-weight product)
/// against their CPU twins (which
/// tests/finetune.rs and the unit tests check against PyTorch and the definitions):
/// outputs and every input's gradient, f32 to 1e-5 of the largest value, bf16 to 4e-2
/// (several roundings to bf16 on the way: the CPU computing in bf16 is within 1.6e-2).
#[test]
#[ignore = "needs a GPU and the cuda feature"]
fn cuda_training_kernels_equal_their_cpu_twins() {
    use candle_core::Var;
    use interlace::model::ops::{apply_rope, linear, rms_norm, swiglu};
    let p = gpu(DTypeChoice::F32);
    let cpu = Device::Cpu;
    let randn = |shape: &[usize]| Tensor::randn(0f32, 1.0, shape, &cpu).unwrap();
    // A case: its output and its inputs' gradients, computed on `dev` in `dtype`.
    type Run<'a> = dyn Fn(&Device, DType) -> (Tensor, Vec<Tensor>) + 'a;
    let (q, k, v) = (
        randn(&[2, 33, 8, 16]),
        randn(&[2, 33, 2, 16]),
        randn(&[2, 33, 2, 16]),
    );
    let (x, w) = (randn(&[3, 40, 96]), randn(&[96]).affine(0.2, 1.0).unwrap());
    let frozen = randn(&[24, 96]);
    let rope_x = randn(&[2, 9, 4, 16]);
    let freqs = randn(&[9, 8]);
    let freqs = Tensor::cat(&[&freqs, &freqs], 1).unwrap();
    let (cos, sin) = (freqs.cos().unwrap(), freqs.sin().unwrap());
    let (gate, up) = (randn(&[3, 40, 96]), randn(&[3, 40, 96]));
    let logits = (randn(&[37, 3000]) * 3.0).unwrap();
    let labels: Vec<u32> = (0..37u32).map(|i| (i * 997) % 3000).collect();
    let grads_of = |out: &Tensor, vars: &[&Var]| -> Vec<Tensor> {
        let target = Tensor::ones_like(out).unwrap().affine(0.5, 0.25).unwrap();
        let loss = (out.to_dtype(DType::F32).unwrap() * target.to_dtype(DType::F32).unwrap())
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        let g = loss.backward().unwrap();
        vars.iter()
            .map(|v| g.get(v.as_tensor()).expect("a gradient").clone())
            .collect()
    };
    let cases: Vec<(&str, Box<Run<'_>>)> = vec![
        (
            "attention",
            Box::new(|dev: &Device, dtype: DType| {
                let var = |t: &Tensor| {
                    Var::from_tensor(&t.to_device(dev).unwrap().to_dtype(dtype).unwrap()).unwrap()
                };
                let (qv, kv, vv) = (var(&q), var(&k), var(&v));
                let out = attention_padded(
                    qv.as_tensor(),
                    kv.as_tensor(),
                    vv.as_tensor(),
                    true,
                    &[],
                    Grad::Track,
                )
                .unwrap();
                let g = grads_of(&out, &[&qv, &kv, &vv]);
                (out, g)
            }),
        ),
        (
            "rms-norm",
            Box::new(|dev: &Device, _dtype: DType| {
                let var = |t: &Tensor| Var::from_tensor(&t.to_device(dev).unwrap()).unwrap();
                let (xv, wv) = (var(&x), var(&w));
                let out = rms_norm(xv.as_tensor(), wv.as_tensor(), 1e-6, Grad::Track).unwrap();
                let g = grads_of(&out, &[&xv, &wv]);
                (out, g)
            }),
        ),
        (
            "frozen linear",
            Box::new(|dev: &Device, dtype: DType| {
                let xv =
                    Var::from_tensor(&x.to_device(dev).unwrap().to_dtype(dtype).unwrap()).unwrap();
                let wf = frozen.to_device(dev).unwrap().to_dtype(dtype).unwrap();
                let out = linear(xv.as_tensor(), &wf, None).unwrap();
                let g = grads_of(&out, &[&xv]);
                (out, g)
            }),
        ),
        (
            "rope",
            Box::new(|dev: &Device, dtype: DType| {
                let on = |t: &Tensor| t.to_device(dev).unwrap().to_dtype(dtype).unwrap();
                let xv = Var::from_tensor(&on(&rope_x)).unwrap();
                let out = apply_rope(xv.as_tensor(), &on(&cos), &on(&sin), Grad::Track).unwrap();
                let g = grads_of(&out, &[&xv]);
                (out, g)
            }),
        ),
        (
            "swiglu",
            Box::new(|dev: &Device, dtype: DType| {
                let var = |t: &Tensor| {
                    Var::from_tensor(&t.to_device(dev).unwrap().to_dtype(dtype).unwrap()).unwrap()
                };
                let (gv, uv) = (var(&gate), var(&up));
                let out = swiglu(gv.as_tensor(), uv.as_tensor()).unwrap();
                let g = grads_of(&out, &[&gv, &uv]);
                (out, g)
            }),
        ),
        (
            "cross-entropy",
            Box::new(|dev: &Device, dtype: DType| {
                let xv = Var::from_tensor(&logits.to_device(dev).unwrap().to_dtype(dtype).unwrap())
                    .unwrap();
                let out = interlace::model::loss::cross_entropy_sum(xv.as_tensor(), &labels)
                    .unwrap()
                    .reshape(1)
                    .unwrap();
                let g = grads_of(&out, &[&xv]);
                (out, g)
            }),
        ),
        (
            "gelu-tanh",
            Box::new(|dev: &Device, dtype: DType| {
                let xv = Var::from_tensor(&gate.to_device(dev).unwrap().to_dtype(dtype).unwrap())
                    .unwrap();
                let out = interlace::model::ops::gelu_tanh(xv.as_tensor()).unwrap();
                let g = grads_of(&out, &[&xv]);
                (out, g)
            }),
        ),
    ];
    for (name, run) in &cases {
        let (want, want_grads) = run(&cpu, DType::F32);
        for dtype in [DType::F32, DType::BF16] {
            if *name == "rms-norm" && dtype == DType::BF16 {
                continue; // the f32 op; bf16 RMSNorm trains through plain ops
            }
            let (got, got_grads) = run(&p.device, dtype);
            let tol = if dtype == DType::F32 { 1e-5 } else { 4e-2 };
            let mut worst = rel_err(&got.to_device(&cpu).unwrap(), &want);
            for (g, w) in got_grads.iter().zip(&want_grads) {
                worst = worst.max(rel_err(&g.to_device(&cpu).unwrap(), w));
            }
            eprintln!("{name} {dtype:?}: output and gradients within {worst:.2e} of the CPU's");
            assert!(worst < tol, "{name} {dtype:?}: {worst:e}");
        }
    }
}

#[test]
#[ignore = "needs a GPU and the cuda feature"]
fn cuda_packed_similarity_matches_transformers() {
    assert_packed_similarity_matches_transformers(&gpu(DTypeChoice::F32));
}

#[test]
#[ignore = "needs a GPU and the cuda feature"]
fn cuda_f32_finetune_steps_equal_pytorch_and_the_cpu() {
    let p = gpu(DTypeChoice::F32);
    let cpu = check_two_f32_steps(&Device::Cpu, false, 1, 1, None, true);
    for (checkpointing, micro) in [(false, 1), (true, 4)] {
        let cuda = check_two_f32_steps(&p.device, checkpointing, micro, 1, None, true);
        let worst = cuda
            .iter()
            .zip(&cpu)
            .map(|(a, b)| max_abs_diff(a, b))
            .fold(0f32, f32::max);
        eprintln!("cuda f32 (checkpointing {checkpointing}): masters after two steps within {worst:.2e} of the CPU's");
        assert!(worst < 1e-5, "{worst}");
    }
}

#[test]
#[ignore = "needs a GPU and the cuda feature"]
fn cuda_bf16_finetune_steps_match_pytorch_bf16_with_f32_masters() {
    let p = gpu(DTypeChoice::Bf16);
    let dir = std::path::PathBuf::from(std::env::var("INTERLACE_BF16_TRAIN_REF").expect(
        "INTERLACE_BF16_TRAIN_REF: the --out of tools/make_bf16_train_fixture.py --device cuda",
    ));
    // The CPU test's tolerances (tests/finetune.rs).
    let tol = Bf16Tolerances {
        loss: 1e-3,
        grad_norm: 2e-2,
        grads: 1e-1,
        weights_in_lr: 2.1,
        far_share: 0.05,
    };
    check_two_bf16_steps(&p.device, &dir, &tol, false, 1, None);
    check_two_bf16_steps(&p.device, &dir, &tol, true, 2, None);
}

/// The CUDA binary: INTERLACE_BIN, else the one cargo built with this test.

#[test]
#[ignore = "needs a GPU and the cuda feature"]
fn cuda_finetune_killed_and_resumed_is_bit_equal() {
    let p = gpu(DTypeChoice::Bf16);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data.json");
    std::fs::write(
        &data,
        serde_json::to_string(&train_data_absolute()).unwrap(),
    )
    .unwrap();
    let plan = tmp.path().join("plan.json");
    std::fs::write(
        &plan,
        r#"{"strategy": "manual", "ratio": 0.0, "num_layers": 6, "drop": [],
 "finetune": [1, 4], "freeze": [0, 2, 3, 5], "anchors": [], "kept": [0, 1, 2, 3, 4, 5]}"#,
    )
    .unwrap();
    let cmd = |out: &std::path::Path| {
        let mut c = std::process::Command::new(common::bin());
        c.arg("finetune")
            .arg("--model")
            .arg(model_dir("tiny-b"))
            .arg("--plan")
            .arg(&plan)
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(out)
            .args([
                "--portion",
                "1",
                "--grad-accum",
                "1",
                "--lr",
                "1e-3",
                "--batch-size",
                "1",
            ])
            .args(["--epochs", "6", "--save-every", "1", "--dtype", "bf16"])
            .args(["--device", device_flag(&p)]);
        c
    };
    let whole = tmp.path().join("whole");
    let run = cmd(&whole).output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out = tmp.path().join("killed");
    kill_after_third_checkpoint(cmd(&out), &tmp.path().join("killed.train"));
    assert!(!out.exists(), "the run finished before it could be killed");
    let run = cmd(&out).arg("--resume").output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let read = |dir: &std::path::Path| {
        let m = Model::load(dir, DType::F32, &Device::Cpu).unwrap();
        [1usize, 4]
            .iter()
            .map(|&l| to_f32_vec(&m.layers[l].mlp.down_proj.weight))
            .collect::<Vec<_>>()
    };
    assert_eq!(read(&whole), read(&out), "the resumed run's weights differ");
    let log =
        |dir: &std::path::Path| std::fs::read_to_string(dir.join("training_log.jsonl")).unwrap();
    let strip = |s: String| -> Vec<(String, String)> {
        s.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["loss"].to_string(), v["grad_norm"].to_string())
            })
            .collect()
    };
    assert_eq!(strip(log(&whole)), strip(log(&out)), "losses differ");
}
