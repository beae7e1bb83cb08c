//! Throughput of the CPU's two panel products on one shape (development tool; see
//! BENCHMARKS.md, session 29): the forward product `x · wᵀ` (`sgemm::matmul`) and a frozen
//! weight's input gradient `dy · w` (`sgemm::gemm_by_panels`), each over COPIES weights
//! (more copies than fit in cache: the weights stream from memory), best of five passes.
//! Needs AVX-512. Not a test: numbers only, to compare builds side by side.
//!
//! ```sh
//! cargo build --release --example sgemm_probe
//! RAYON_NUM_THREADS=2 target/release/examples/sgemm_probe 170 6144 2048 4   # M N K COPIES
//! ```

use std::time::Instant;

use anyhow::{bail, Result};
use interlace::model::sgemm::{available, gemm_by_panels, matmul, pack_panels, View};

fn main() -> Result<()> {
    let args = std::env::args()
        .skip(1)
        .map(|s| s.parse::<usize>())
        .collect::<Result<Vec<_>, _>>()?;
    let [m, n, k, copies] = args[..] else {
        bail!("usage: sgemm_probe M N K COPIES (rows, output features, input features, weights)");
    };
    if !available() {
        bail!("this CPU has no AVX-512: the panel products do not run here");
    }
    if m == 0 || n == 0 || k % 32 != 0 || n % 32 != 0 || copies == 0 {
        bail!("M and COPIES must be positive, N and K multiples of 32");
    }
    let x: Vec<f32> = (0..m * k).map(|i| (i % 97) as f32 * 0.01).collect();
    let dy: Vec<f32> = (0..m * n).map(|i| (i % 83) as f32 * 0.01).collect();
    let weights: Vec<(Vec<f32>, usize)> = (0..copies)
        .map(|c| {
            let w: Vec<f32> = (0..n * k).map(|i| ((i + c) % 89) as f32 * 0.01).collect();
            pack_panels(&w, (n, k), |v| v)
        })
        .collect();
    let (mut y, mut dx) = (vec![0f32; m * n], vec![0f32; m * k]);
    let gflop = 2.0 * (m * n * k * copies) as f64 / 1e9;
    let (mut fwd, mut bwd) = (0f64, 0f64);
    for _ in 0..5 {
        let t = Instant::now();
        for (v, off) in &weights {
            matmul((m, n, k), &x, k, &v[*off..*off + n * k], None, &mut y);
        }
        fwd = fwd.max(gflop / t.elapsed().as_secs_f64());
        let t = Instant::now();
        for (v, off) in &weights {
            let panels = &v[*off..*off + n * k];
            gemm_by_panels((m, k, n), View::rows(&dy, n), panels, &mut dx, false, true);
        }
        bwd = bwd.max(gflop / t.elapsed().as_secs_f64());
    }
    println!("({m}, {n}, {k}) × {copies}: x·wᵀ {fwd:.1} GFLOP/s, dy·w {bwd:.1} GFLOP/s");
    Ok(())
}
