//! interlace: prune whole decoder layers of vision-language models (Qwen3-VL first) and
//! recover quality by fine-tuning a few surviving layers (the INTERLACE method).
//!
//! The library is usable without the command-line program: `model` loads and runs
//! checkpoints, `processor` turns conversations and images into model inputs.

pub mod data;
pub mod eval;
pub mod fsio;
pub mod hub;
pub mod model;
pub mod outlock;
pub mod processor;
pub mod progress;
pub mod prune;
pub mod recipes;
pub mod rng;
pub mod svg;
pub mod synth;
pub mod train;
pub mod workers;

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

/// Hands memory that is free but still held back to the system: the matrix products'
/// per-thread buffers (on rayon's threads and this one) and glibc's free heap memory
/// (kept by [`tune_process`]'s trim threshold, and in the threads' own arenas). For a
/// command that is done with its large working set before a phase that needs memory of
/// its own, such as `finetune` writing its checkpoint: on the 2B-shaped benchmark up to
/// a gigabyte more was still held there in some runs (BENCHMARKS.md, session 30).
pub fn release_free_memory() {
    rayon::broadcast(|_| model::sgemm::release_thread_buffers());
    model::sgemm::release_thread_buffers();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One line for a user: every context of the error chain, joined by ": ", keeping only the
/// first line of each (candle's errors may append a backtrace on further lines).
pub fn error_line(err: &anyhow::Error) -> String {
    err.chain()
        .map(|e| printable(e.to_string().lines().next().unwrap_or("").trim()))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Runs `f` and turns a panic inside it into an error holding the panic's message, with
/// the panic hook silenced meanwhile (no backtrace on stderr). For dependencies that panic
/// on malformed input instead of returning an error (fuzzing found one in `tokenizers`).
pub fn catch_panic<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> Result<T, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(f);
    std::panic::set_hook(hook);
    result.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".to_string())
    })
}

/// Most characters of one part of an error line; the rest is cut (a part quoting user data,
/// such as a binary file's "column names", must not flood the terminal).
const MAX_ERROR_PART: usize = 400;

/// `s` with control characters escaped (`\u{1b}`, `\0`, ...) and cut after
/// [`MAX_ERROR_PART`] characters.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(4 * MAX_ERROR_PART));
    for (i, c) in s.chars().enumerate() {
        if i == MAX_ERROR_PART {
            let rest = s.chars().count() - i;
            out.push_str(&format!("... ({rest} more characters)"));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_lines_escape_control_characters_and_cut_floods() {
        let e = anyhow::anyhow!("x\u{1}y\u{0}").context("f.tsv");
        assert_eq!(super::error_line(&e), "f.tsv: x\\u{1}y\\u{0}");
        let long = "é".repeat(1000);
        let line = super::error_line(&anyhow::anyhow!(long));
        assert_eq!(
            line,
            format!("{}... (600 more characters)", "é".repeat(400))
        );
        let e = anyhow::anyhow!("first line\nbacktrace").context("ctx");
        assert_eq!(super::error_line(&e), "ctx: first line");
    }
}
