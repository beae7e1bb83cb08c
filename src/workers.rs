//! Data parallelism on the CPU: `--workers N` threads each take a share of every batch's
//! conversations (training; their gradients are added in a fixed order) or of a
//! benchmark's rows (evaluation), with single-threaded tensor ops.
//!
//! On a small model candle's own threading (matrix products split across threads,
//! element-wise ops across a barrier pool) spends much of a step waking and waiting for
//! its threads: on the 2-core development machine a demo-model pretraining step took the
//! same time with one thread as with two. Whole conversations per thread keep every core
//! busy instead (BENCHMARKS.md, "Data-parallel training").

/// The worker count for a training command's `--workers` (None: one per available core),
/// at most `micro_batch` (workers split each micro-batch, so that together they hold no
/// more activations than one thread with the whole micro-batch). With more than one,
/// candle's tensor ops are made single-threaded for the rest of the
/// process (RAYON_NUM_THREADS=1, which candle reads for its matrix products and for the
/// size of its element-wise thread pool): several workers each with several threads
/// would fight over the cores. Call it before the first tensor op of the process.
pub fn resolve(flag: Option<usize>, micro_batch: usize) -> anyhow::Result<usize> {
    if flag == Some(0) {
        anyhow::bail!("--workers must be at least 1");
    }
    let n = flag
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .min(micro_batch)
        .max(1);
    if n > 1 {
        // Set before any other thread of ours exists and before candle reads it.
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    Ok(n)
}

/// `f()` on a rayon pool with one thread per core, whatever RAYON_NUM_THREADS says (its
/// parallel iterators use that pool): for one-off work outside the tensor ops, such as
/// transposing weights while a model loads, that should use every core even when
/// [`resolve`] made the tensor ops single-threaded for several workers. The pool is made
/// on first use; if it cannot be, `f` runs on rayon's global pool.
pub fn on_all_cores<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(1, usize::from);
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("interlace-all-cores-{i}"))
            .build()
            .ok()
    });
    match pool {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

/// `f()` on a thread of rayon's global pool, the calling thread waiting: the CPU's tensor
/// ops of a whole pass then split their work from inside the pool. Called from outside it,
/// every matrix product handed its shares to the pool and put this thread to sleep until
/// they were done, and the pool's threads slept between products: the mid-size forward
/// pass of BENCHMARKS.md took 177–188 ms that way and 160–163 ms this way (session 27).
/// Runs `f` here when this already is a rayon thread, or when the pool has one thread
/// (the tensor ops single-threaded for several `--workers`, see [`resolve`]).
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() || rayon::current_num_threads() == 1 {
        return f();
    }
    rayon::scope(|_| f())
}

/// The fewest items rayon may split off a parallel iterator over a tensor op's rows or
/// chunks (its `with_min_len`): all of them, so that the calling thread runs the op alone,
/// on a `--workers` thread (not one of rayon's, the tensor ops single-threaded: rayon's
/// pool has one thread); otherwise 1. From such a thread every parallel op was handed to
/// that one pool thread and waited for: the workers took turns on it, two thread switches
/// per op.
pub fn min_split() -> usize {
    if rayon::current_thread_index().is_none() && rayon::current_num_threads() == 1 {
        usize::MAX
    } else {
        1
    }
}

/// `f(w)` for w in 0..n, on n threads (on this one for n = 1); the results in order of w,
/// or the first error.
pub fn on_threads<T: Send>(
    n: usize,
    f: impl Fn(usize) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    if n <= 1 {
        return Ok(vec![f(0)?]);
    }
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = (0..n).map(|w| s.spawn(move || f(w))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| anyhow::bail!("a worker thread panicked"))
            })
            .collect()
    })
}

/// `f(i)` for every item of every group, a thread per group; the results in item order.
pub fn on_groups<T: Send>(
    groups: &[Vec<usize>],
    f: impl Fn(usize) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    let parts = on_threads(groups.len(), |w| {
        groups[w]
            .iter()
            .map(|&i| Ok((i, f(i)?)))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let mut out: Vec<(usize, T)> = parts.into_iter().flatten().collect();
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, t)| t).collect())
}

/// `f` on every item, spread over all cores (rayon's pool); the results in item order. For
/// CPU-only work such as image decoding next to a model that runs on the GPU.
/// On the calling thread when there is one item or rayon has one thread (several
/// `--workers` each calling this must not queue behind one shared pool thread).
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    if items.len() <= 1 || rayon::current_num_threads() <= 1 {
        return items.iter().map(f).collect();
    }
    items.par_iter().map(f).collect()
}
