//! Forward-pass benchmark, our side. Times one full forward pass (vision tower, decoder,
//! LM head) on the checkpoint and input written by `tools/bench_forward.py`:
//!
//!     cargo bench --bench forward -- /tmp/interlace-bench/mid [runs]

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device};
use interlace::model::{Model, ModelInputs};

fn main() -> anyhow::Result<()> {
    interlace::tune_process();
    // cargo bench passes `--bench`; skip flags.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let dir = PathBuf::from(
        args.first()
            .map(String::as_str)
            .unwrap_or("/tmp/interlace-bench/mid"),
    );
    let runs: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(10);
    let device = Device::Cpu;
    let model = Model::load_for_inference(&dir, DType::F32, &device)?;
    let t = candle_core::safetensors::load(dir.join("bench_inputs.safetensors"), &device)?;
    let ids: Vec<u32> = t["input_ids"].to_dtype(DType::U32)?.to_vec1()?;
    let mm: Vec<u8> = t["mm_token_type_ids"].to_dtype(DType::U8)?.to_vec1()?;
    let grid: Vec<i64> = t["image_grid_thw"].flatten_all()?.to_vec1()?;
    let inputs = ModelInputs {
        input_ids: ids,
        mm_token_type_ids: mm,
        pixel_values: Some(t["pixel_values"].clone()),
        image_grid_thw: grid
            .chunks(3)
            .map(|c| [c[0] as usize, c[1] as usize, c[2] as usize])
            .collect(),
    };
    for _ in 0..2 {
        model.forward(&inputs, None)?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let logits = model.forward(&inputs, None)?;
        logits.sum_all()?.to_scalar::<f32>()?; // make sure the work is done
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "sequence {} tokens, {} patches, {} threads",
        inputs.input_ids.len(),
        t["pixel_values"].dim(0)?,
        candle_core::utils::get_num_threads()
    );
    println!(
        "forward median {:.1} ms over {runs} runs (min {:.1})",
        times[runs / 2] * 1000.0,
        times[0] * 1000.0
    );
    Ok(())
}
