//! interlace: prune whole decoder layers of vision-language models (Qwen3-VL first) and
//! recover quality by fine-tuning a few surviving layers (the INTERLACE method).
//!
//! The library is usable without the command-line program: `model` loads and runs
//! checkpoints, `processor` turns conversations and images into model inputs.

pub mod data;
pub mod eval;
pub mod model;
pub mod outlock;
pub mod processor;
pub mod progress;
pub mod prune;
pub mod recipes;
pub mod train;

/// Process-wide settings for the CPU, for `main` to call before any thread starts (the
/// benchmarks call it too, to time what the command-line tool runs).
///
/// - Training allocates and frees many large tensors per step. By default glibc's malloc
///   hands each one back to the kernel and takes fresh zeroed pages for the next: a third
///   of a fine-tuning step went to page faults and page clearing (measured with perf).
///   Allocations up to 32 MiB (glibc's maximum) stay in the heap, trimmed only past
///   512 MiB free.
/// - candle's element-wise thread pool spins (25 000 pause instructions by default) after
///   each op before it sleeps, and so takes cores from the matrix products that follow on
///   rayon's threads; with no spinning the forward benchmark ran 6-8 % faster (BENCHMARKS.md).
///   A value the user set in `CANDLE_BARRIER_POOL_SPIN_LIMIT` is kept.
pub fn tune_process() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
    const SPIN: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
    if std::env::var_os(SPIN).is_none() {
        std::env::set_var(SPIN, "0");
    }
}

/// One line for a user: every context of the error chain, joined by ": ", keeping only the
/// first line of each (candle's errors may append a backtrace on further lines).
pub fn error_line(err: &anyhow::Error) -> String {
    err.chain()
        .map(|e| {
            e.to_string()
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}
