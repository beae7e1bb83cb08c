//! The CPU's f32 matrix product for the linear layers of a model that only runs forward,
//! `x · wᵀ (+ b)`, on AVX-512, with the weight packed once at load time.
//!
//! candle's CPU matrix product (the `gemm` crate) repacks the weight on every call, from
//! memory, before it multiplies: on the 2-core AVX-512 Xeon of BENCHMARKS.md (session 26)
//! that packing was 12 % of the forward pass and the products ran at 260–290 GFLOP/s where
//! PyTorch's MKL reached 300–360. Here the weight is stored as [`PANEL`]-column panels
//! (see [`pack_panels`]), each reduction step of a panel one contiguous 128-byte row, so
//! the product reads it in place:
//!
//! - the output is computed in 12 × 32 tiles kept in 24 zmm registers: per step of the
//!   reduction, two vector loads of the weight panel, twelve broadcasts of the activations,
//!   24 FMAs (one thread over cache-resident panels: 150–165 GFLOP/s in all, of which perf
//!   gave the kernel 81 % of the samples, so about 200 inside it, against 213 for a bare
//!   FMA loop on the same core);
//! - the reduction is cut in blocks of `KC` so that a block of a panel (32 KiB) stays in L1
//!   while every 12-row strip of the activations passes over it; the activations are read
//!   in place (the last, partial strip is copied with zero rows);
//! - the panels are split between rayon's threads (one pool for everything), and the bias
//!   is added when a tile is first stored;
//! - panels and outputs start on 64-byte boundaries (each 16-float load one cache line), and
//!   the next panel is prefetched into L2 a line every few reduction steps;
//! - several weights applied to the same input (a layer's q, k, v; gate and up) are one
//!   product ([`products`]), and attention's two products per head run on one thread each
//!   ([`matmul_here`], from `ops::attention_panels`).
//!
//! The reduction runs in a different order than gemm's or MKL's, so results differ from
//! theirs in the last bits (the tests compare with sums in f64; every parity test against
//! transformers runs through it on a CPU with AVX-512).

/// Rows of the output tile (tokens).
const MR: usize = 12;
/// Columns of the output tile and of a weight panel (output features): two 16-float vectors.
pub const PANEL: usize = 32;
const NR: usize = PANEL;
/// Largest reduction block: a KC × NR block of a panel is 32 KiB, within a 48 KiB L1.
const KC: usize = 256;
/// Reduction steps of the in-place kernel per prefetched line of the next panel.
const PF_EVERY: usize = 8;

/// Whether this CPU runs [`matmul`] (x86-64 with AVX-512F; checked once).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX512.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether a weight with `n` output features can be stored as panels.
pub fn packable(n: usize) -> bool {
    n > 0 && n.is_multiple_of(PANEL)
}

/// The panels of a weight `w` (n, k), row-major, given element by element through `f` (its
/// stored values, converted): panel p holds columns 32p..32p+32 of `wᵀ`, row by row:
/// `panels[p·k·32 + kk·32 + j] = w[32p + j][kk]`, where `panels` is `vec[offset..offset +
/// n·k]`. The panels start on a 64-byte boundary, so that every 16-float row of a panel is
/// one cache line: the allocator gives 16-byte alignment, and then each of the kernel's
/// weight loads straddled two lines (the products ran 5–12 % slower). `n` must be
/// [`packable`].
pub fn pack_panels<T: Copy + Send + Sync>(
    src: &[T],
    (n, k): (usize, usize),
    f: impl Fn(T) -> f32 + Sync,
) -> (Vec<f32>, usize) {
    assert!(
        packable(n) && src.len() == n * k,
        "sgemm: cannot pack ({n}, {k})"
    );
    const LINE: usize = 64 / std::mem::size_of::<f32>();
    let mut vec = vec![0f32; n * k + LINE - 1];
    let offset = vec.as_ptr().align_offset(64).min(LINE - 1);
    let out = &mut vec[offset..offset + n * k];
    // Each panel is the transpose of a 32-row block of w.
    crate::workers::on_all_cores(|| {
        use rayon::prelude::*;
        out.par_chunks_mut(NR * k)
            .zip(src.par_chunks(NR * k))
            .for_each(|(panel, block)| {
                for (j, row) in block.chunks_exact(k).enumerate() {
                    for (kk, &v) in row.iter().enumerate() {
                        panel[kk * NR + j] = f(v);
                    }
                }
            })
    });
    (vec, offset)
}

/// One weight of a product: `n` output features as [`pack_panels`]' panels (n·k floats),
/// an optional bias (n,).
#[derive(Clone, Copy)]
pub struct Weight<'a> {
    pub panels: &'a [f32],
    pub n: usize,
    pub bias: Option<&'a [f32]>,
}

/// `c = a · wᵀ (+ bias)`: `a` (m, k) row-major with row stride `lda`, `w` (n, k) given as
/// its [`pack_panels`], `bias` (n,), `c` (m, n) row-major, overwritten. Panics unless
/// [`available`] and `n` is [`packable`] (callers check), or when a slice is too short.
pub fn matmul(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    lda: usize,
    panels: &[f32],
    bias: Option<&[f32]>,
    c: &mut [f32],
) {
    assert!(c.len() >= m * n, "sgemm: c is too short");
    let w = Weight { panels, n, bias };
    // SAFETY: `c` holds m·n floats (checked) and is borrowed for the call.
    unsafe { matmul_into((m, k), a, lda, &[(w, SendPtr(c.as_mut_ptr()))], false, true) }
}

/// [`matmul`] into a new vector (m·n), not zeroed first.
pub fn matmul_new(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    lda: usize,
    panels: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    fresh_product((m, k), a, lda, Weight { panels, n, bias }, true)
}

/// `a · wᵀ (+ bias)` (m, w.n) into a new vector, not zeroed first (see [`matmul_into`]).
fn fresh_product(
    (m, k): (usize, usize),
    a: &[f32],
    lda: usize,
    w: Weight,
    parallel: bool,
) -> Vec<f32> {
    let mut c = Vec::<f32>::with_capacity(m * w.n);
    // SAFETY: the capacity is m·n floats, and matmul_into writes every one of them.
    unsafe {
        matmul_into(
            (m, k),
            a,
            lda,
            &[(w, SendPtr(c.as_mut_ptr()))],
            false,
            parallel,
        );
        c.set_len(m * w.n);
    }
    c
}

/// [`matmul`] on the calling thread alone (no bias): for many small products run side by
/// side, such as attention's heads.
pub fn matmul_here(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    lda: usize,
    panels: &[f32],
    c: &mut [f32],
) {
    assert!(c.len() >= m * n, "sgemm: c is too short");
    let w = Weight {
        panels,
        n,
        bias: None,
    };
    // SAFETY: `c` holds m·n floats (checked) and is borrowed for the call.
    unsafe {
        matmul_into(
            (m, k),
            a,
            lda,
            &[(w, SendPtr(c.as_mut_ptr()))],
            false,
            false,
        )
    }
}

/// The products `a · wᵢᵀ (+ biasᵢ)` of one activation `a` (m, k) (row stride `lda`) with
/// each weight of `weights`, as new row-major (m, nᵢ) matrices: each one is
/// `vec[offset..offset + m·nᵢ]` of the returned `(vec, offset)`, starting on a 64-byte
/// boundary (the kernel's tile rows are then whole cache lines).
///
/// Several weights (a layer's q, k and v; gate and up) are one product over all their
/// panels: one hand-off to the threads instead of one per weight, the activations read
/// from cache by every weight, and the panels shared evenly however unequal the weights.
pub fn products(
    (m, k): (usize, usize),
    a: &[f32],
    lda: usize,
    weights: &[Weight],
) -> Vec<(Vec<f32>, usize)> {
    const LINE: usize = 64 / std::mem::size_of::<f32>();
    let mut outs: Vec<(Vec<f32>, usize)> = weights
        .iter()
        .map(|w| {
            let mut v = Vec::<f32>::with_capacity(m * w.n + LINE - 1);
            let offset = v.as_ptr().align_offset(64).min(LINE - 1);
            v.resize(offset, 0.0);
            (v, offset)
        })
        .collect();
    let jobs: Vec<(Weight, SendPtr)> = weights
        .iter()
        .zip(outs.iter_mut())
        // SAFETY: the capacity is offset + m·n at least.
        .map(|(w, (v, offset))| (*w, SendPtr(unsafe { v.as_mut_ptr().add(*offset) })))
        .collect();
    // SAFETY: each vector's capacity holds m·nᵢ floats from its offset; they outlive the
    // call and are disjoint.
    unsafe { matmul_into((m, k), a, lda, &jobs, false, true) };
    for ((v, offset), w) in outs.iter_mut().zip(weights) {
        // SAFETY: `matmul_into` wrote all m·n floats after the offset.
        unsafe { v.set_len(*offset + m * w.n) };
    }
    outs
}

/// A strided f32 matrix: element (i, j) at `data[i·rs + j·cs]`.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major (·, cols) matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of this view (no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rs: self.cs,
            cs: self.rs,
        }
    }

    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }

    /// Whether every element of an (m, n) matrix lies in `data`.
    fn holds(&self, m: usize, n: usize) -> bool {
        m == 0 || n == 0 || (m - 1) * self.rs + (n - 1) * self.cs < self.data.len()
    }
}

/// `c = a · b` (or `c += a · b` with `accumulate`): `a` (m, k) and `b` (k, n) any strided
/// [`View`]s, `c` (m, n) row-major. For training's products (a layer's input gradient
/// `dy · w`, a weight's gradient `dyᵀ · x`, attention's products per head), where no
/// operand is packed ahead: `b` is packed into panels here (zero columns past `n`), `a` is
/// read in place when its rows are contiguous and copied otherwise; the kernel is
/// [`matmul`]'s. `parallel`: split the panels over rayon's threads (false inside a task
/// that already has its own thread). Without AVX-512, candle's product (copies in and
/// out).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    (m, n, k): (usize, usize, usize),
    a: View,
    b: View,
    c: &mut [f32],
    accumulate: bool,
    parallel: bool,
) {
    assert!(
        a.holds(m, k) && b.holds(k, n) && c.len() >= m * n,
        "sgemm: a view is too short for ({m}, {n}, {k})"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    if !available() {
        let dense = |v: View, r: usize, cols: usize| -> Vec<f32> {
            (0..r)
                .flat_map(|i| (0..cols).map(move |j| (i, j)))
                .map(|(i, j)| v.at(i, j))
                .collect()
        };
        let cpu = candle_core::Device::Cpu;
        let product = candle_core::Tensor::from_vec(dense(a, m, k), (m, k), &cpu)
            .and_then(|ta| {
                let tb = candle_core::Tensor::from_vec(dense(b, k, n), (k, n), &cpu)?;
                ta.matmul(&tb)?.flatten_all()?.to_vec1::<f32>()
            })
            .expect("sgemm: candle's CPU product of f32 matrices");
        if accumulate {
            c[..m * n]
                .iter_mut()
                .zip(&product)
                .for_each(|(o, v)| *o += v);
        } else {
            c[..m * n].copy_from_slice(&product);
        }
        return;
    }
    with_packed(b, n, k, |panels| {
        run_packed((m, n, k), a, panels, Out::Into(c, accumulate), parallel)
    });
}

/// [`gemm`] into a new vector (m·n, not zeroed first).
pub fn gemm_new((m, n, k): (usize, usize, usize), a: View, b: View, parallel: bool) -> Vec<f32> {
    if m == 0 || n == 0 || k == 0 || !available() {
        let mut c = vec![0f32; m * n];
        gemm((m, n, k), a, b, &mut c, false, parallel);
        return c;
    }
    assert!(
        a.holds(m, k) && b.holds(k, n),
        "sgemm: a view is too short for ({m}, {n}, {k})"
    );
    let mut c = Vec::new();
    with_packed(b, n, k, |panels| {
        run_packed((m, n, k), a, panels, Out::Fresh(&mut c), parallel)
    });
    c
}

thread_local! {
    /// Each thread's buffer for [`with_packed`]'s panels, kept between products.
    static PACKING: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Frees this thread's buffers kept between products ([`with_packed`]'s and
/// [`gemm_by_panels`]'s); a later product makes new ones.
pub fn release_thread_buffers() {
    for cell in [&PACKING, &TRANSPOSED] {
        cell.with(|c| {
            if let Ok(mut buf) = c.try_borrow_mut() {
                *buf = Vec::new();
            }
        });
    }
}

/// Largest packing (floats) that [`with_packed`] keeps for the thread's next product.
const KEEP: usize = 16 << 20;

/// `f(panels)` with `b` (k, n) packed as panels of 32 columns, [kk][j] within each (zero
/// columns past n), starting on a 64-byte boundary.
///
/// Up to [`KEEP`] floats, the panels go into the thread's own buffer, which stays for its
/// next product: a fresh one per product is fresh pages, above glibc's largest mmap
/// threshold (32 MiB), and a trained 2B-shaped MLP weight (50 MB), packed for each of its
/// products, was a page fault per 4 KiB, a third of a fine-tuning step's faults
/// (BENCHMARKS.md, session 30). When the buffer is in use (a product that waits for
/// rayon's threads may run another one on its own), a fresh one.
fn with_packed<R>(b: View, n: usize, k: usize, f: impl FnOnce(&[f32]) -> R) -> R {
    const LINE: usize = 64 / std::mem::size_of::<f32>();
    let len = n.div_ceil(NR) * NR * k;
    PACKING.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) if len + LINE - 1 <= KEEP => {
            if buf.len() < len + LINE - 1 {
                buf.resize(len + LINE - 1, 0.0);
            }
            let off = buf.as_ptr().align_offset(64).min(LINE - 1);
            let panels = &mut buf[off..off + len];
            pack_into(b, n, k, panels);
            f(panels)
        }
        _ => {
            let (mut pv, off) = aligned(len);
            pack_into(b, n, k, &mut pv[off..off + len]);
            f(&pv[off..off + len])
        }
    })
}

/// `b` (k, n) into `panels` (n rounded up to whole panels, times k) as [`with_packed`]
/// lays it out; every element written.
fn pack_into(b: View, n: usize, k: usize, panels: &mut [f32]) {
    each_panel(panels, k, |p, panel| {
        let j0 = p * NR;
        let cols = NR.min(n - j0);
        if cols < NR {
            for row in panel.chunks_exact_mut(NR) {
                row[cols..].fill(0.0);
            }
        }
        if b.cs == 1 {
            for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
                row[..cols].copy_from_slice(&b.data[kk * b.rs + j0..][..cols]);
            }
        } else {
            if b.rs == 1 {
                // Rows j0.. of b's storage, each k long, transposed into the panel.
                // SAFETY: b holds (k, n) (asserted by the callers), so data[(j0 + j)·cs + kk]
                // exists for j < cols, kk < k; the panel has k·NR elements.
                unsafe {
                    transpose_block(
                        b.data.as_ptr().add(j0 * b.cs),
                        b.cs,
                        panel.as_mut_ptr(),
                        NR,
                        (cols, k),
                    )
                };
                return;
            }
            for j in 0..cols {
                let base = (j0 + j) * b.cs;
                for kk in 0..k {
                    panel[kk * NR + j] = b.data[base + kk * b.rs];
                }
            }
        }
    });
}

/// `f(p, panel)` for each `NR · k`-float panel of `panels`, on rayon's threads (on the
/// calling thread alone from a `--workers` thread, see `workers::min_split`): packing a
/// 2B-shaped weight on one thread took as long as multiplying by it on two.
fn each_panel(panels: &mut [f32], k: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    use rayon::prelude::*;
    panels
        .par_chunks_mut(NR * k)
        .enumerate()
        .with_min_len(crate::workers::min_split())
        .for_each(|(p, panel)| f(p, panel));
}

/// [`gemm`] with `b` (k, n) given as [`pack_panels`]' panels of its k rows (a torch-layout
/// weight (k, n) of a model that runs forward is stored so; `k` a multiple of 32): the
/// input's gradient `dy · w` of a frozen linear layer, or of the tied LM head.
///
/// The panels are read in place, as the left operand of `cᵀ = bᵀ · aᵀ`: within a panel,
/// row j of `bᵀ` is 32 contiguous steps of the reduction, so a 12-row tile of `bᵀ` is one
/// contiguous 1.5 KiB block per panel, and the kernel broadcasts from it at fixed offsets
/// while `aᵀ`, packed in 32-column panels, supplies the vectors. `cᵀ` is then transposed
/// into `c`. (Transposing the weight's panels into the product's on every call, as this
/// did before, was 6.7 % of a 2B-shaped fine-tuning step, and the LM head's backward
/// repacked its 151 936-wide activations once per 32 output columns: 6.5 % more.)
#[allow(clippy::too_many_arguments)]
pub fn gemm_by_panels(
    (m, n, k): (usize, usize, usize),
    a: View,
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
    parallel: bool,
) {
    assert!(c.len() >= m * n, "sgemm: c is too short");
    // SAFETY: c holds m·n floats (asserted), initialised, borrowed for the call.
    unsafe {
        panels_into(
            (m, n, k),
            a,
            b,
            SendPtr(c.as_mut_ptr()),
            accumulate,
            parallel,
        )
    }
}

/// [`gemm_by_panels`] into `c` given by its pointer.
///
/// # Safety
/// As for [`by_panels`]'s `c`.
unsafe fn panels_into(
    (m, n, k): (usize, usize, usize),
    a: View,
    b: &[f32],
    c: SendPtr,
    accumulate: bool,
    parallel: bool,
) {
    assert!(
        packable(k) && b.len() >= n * k && a.holds(m, k),
        "sgemm: ({m}, {k}) times panels of ({k}, {n})"
    );
    assert!(available(), "sgemm: this CPU has no AVX-512");
    if m == 0 || n == 0 {
        return;
    }
    // aᵀ (k, m) as panels of 32 of its columns (a's rows), zero columns past m.
    with_packed(a.t(), m, k, |tokens| {
        // SAFETY: the caller's contract.
        unsafe { by_panels((m, n, k), tokens, b, c, accumulate, parallel) }
    });
}

thread_local! {
    /// Each thread's `cᵀ` buffer for [`by_panels`], kept between products (zeroed anew
    /// for every product, it was a memset of the product's size).
    static TRANSPOSED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`gemm_by_panels`] with aᵀ packed (`tokens`, mp·k) and `b`'s panels checked (n·k).
///
/// # Safety
/// `c` must be valid for writing m·n floats (and for reading them, initialised, with
/// `accumulate`), and not accessed elsewhere during the call; the CPU must have AVX-512.
unsafe fn by_panels(
    (m, n, k): (usize, usize, usize),
    tokens: &[f32],
    b: &[f32],
    out: SendPtr,
    accumulate: bool,
    parallel: bool,
) {
    let mp = m.div_ceil(NR) * NR;
    let tiles = n.div_ceil(MR);
    let threads = if parallel {
        rayon::current_num_threads().clamp(1, tiles)
    } else {
        1
    };
    let run = |t: usize| {
        let range = tiles * t / threads..tiles * (t + 1) / threads;
        if range.is_empty() {
            return;
        }
        let rows = range.start * MR..(range.end * MR).min(n);
        // cᵀ for this thread's rows of bᵀ (columns of c): rows.len() × mp, every element
        // that is read below written by the kernel first.
        let len = rows.len() * mp;
        TRANSPOSED.with(|cell| {
            let mut kept = cell.try_borrow_mut().ok().filter(|_| len <= KEEP);
            let mut fresh = Vec::new();
            let ct = match kept.as_deref_mut() {
                Some(buf) => {
                    if buf.len() < len {
                        buf.resize(len, 0.0);
                    }
                    &mut buf[..len]
                }
                None => {
                    fresh.resize(len, 0.0);
                    &mut fresh[..]
                }
            };
            // SAFETY: the panels hold n·k floats, the packed aᵀ mp·k, ct rows.len()·mp;
            // the CPU has AVX-512 (the caller's contract).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                x86::run_transposed((m, n, k), b, tokens, ct, rows.clone())
            };
            transpose_out(ct, mp, m, n, rows.clone(), out, accumulate);
        });
    };
    if threads == 1 {
        run(0);
    } else {
        use rayon::prelude::*;
        (0..threads).into_par_iter().for_each(run);
    }
}

/// `c[i][j] (+)= cᵀ[j][i]` for the columns `rows` of `c` (m, n), `ct` (rows.len(), mp).
///
/// # Safety
/// As for [`by_panels`]'s `c`; no other thread touches these columns.
unsafe fn transpose_out(
    ct: &[f32],
    mp: usize,
    m: usize,
    n: usize,
    rows: std::ops::Range<usize>,
    out: SendPtr,
    accumulate: bool,
) {
    // c[i][j] (+)= cᵀ[j][i] for this thread's columns j, 16 at a time.
    const B: usize = 16;
    let mut block = [0f32; B * NR];
    for j0 in (0..rows.len()).step_by(B) {
        let w = B.min(rows.len() - j0);
        for i0 in (0..m).step_by(NR) {
            let h = NR.min(m - i0);
            // SAFETY: ct holds rows.len()·mp floats; block holds NR·B.
            unsafe {
                transpose_block(
                    ct.as_ptr().add(j0 * mp + i0),
                    mp,
                    block.as_mut_ptr(),
                    B,
                    (w, h),
                )
            };
            for (ii, brow) in block.chunks_exact(B).take(h).enumerate() {
                // SAFETY: row i0 + ii < m of c, columns rows.start + j0.. + w ≤ n: c
                // holds m·n floats, and no other thread writes these columns (the
                // caller's contract); uninitialised unless accumulating, so written
                // through the pointer.
                unsafe {
                    let dst = out.at((i0 + ii) * n + rows.start + j0);
                    if accumulate {
                        std::slice::from_raw_parts_mut(dst, w)
                            .iter_mut()
                            .zip(brow)
                            .for_each(|(o, v)| *o += v);
                    } else {
                        std::ptr::copy_nonoverlapping(brow.as_ptr(), dst, w);
                    }
                }
            }
        }
    }
}

/// [`gemm_by_panels`] into a new vector (m·n).
pub fn gemm_by_panels_new(
    (m, n, k): (usize, usize, usize),
    a: View,
    b: &[f32],
    parallel: bool,
) -> Vec<f32> {
    let mut c = Vec::<f32>::with_capacity(m * n);
    // SAFETY: c's capacity is m·n floats, written (not read) by the call, which writes
    // every one of them (or panics); then they are initialised.
    unsafe {
        panels_into((m, n, k), a, b, SendPtr(c.as_mut_ptr()), false, parallel);
        c.set_len(m * n);
    }
    c
}

/// Where [`run_packed`] puts the product: into a slice (overwritten, or added to), or into
/// an empty vector, which it fills (no zeroing first).
enum Out<'a> {
    Into(&'a mut [f32], bool),
    Fresh(&'a mut Vec<f32>),
}

/// A zeroed vector of `len` floats plus the offset at which they start on a 64-byte
/// boundary.
fn aligned(len: usize) -> (Vec<f32>, usize) {
    const LINE: usize = 64 / std::mem::size_of::<f32>();
    let v = vec![0f32; len + LINE - 1];
    let off = v.as_ptr().align_offset(64).min(LINE - 1);
    (v, off)
}

/// `a` (m, k) as a row-major copy, in 16 × 16 blocks (both sides stay in cache when `a` is
/// a transposed view).
fn dense(a: View, m: usize, k: usize) -> Vec<f32> {
    const B: usize = 16;
    let mut out = vec![0f32; m * k];
    if a.rs == 1 {
        // a's columns are rows of its storage: out[i·k + l] = data[l·cs + i].
        // SAFETY: a holds (m, k) (asserted by the callers: data[l·cs + i] for l < k, i < m);
        // out has m·k elements.
        unsafe { transpose_block(a.data.as_ptr(), a.cs, out.as_mut_ptr(), k, (k, m)) };
        return out;
    }
    for i0 in (0..m).step_by(B) {
        for l0 in (0..k).step_by(B) {
            for l in l0..(l0 + B).min(k) {
                for i in i0..(i0 + B).min(m) {
                    out[i * k + l] = a.data[i * a.rs + l * a.cs];
                }
            }
        }
    }
    out
}

/// `dst[j·ldd + i] = src[i·lds + j]` for `i < rows`, `j < cols`: 8 × 8 blocks through AVX
/// registers (`fastmath::transpose8x8`), the edges element by element.
///
/// # Safety
/// `src` must be valid for reading every `src[i·lds + j]`, `dst` for writing every
/// `dst[j·ldd + i]`, and the CPU must have AVX (every CPU with AVX-512 has).
unsafe fn transpose_block(
    src: *const f32,
    lds: usize,
    dst: *mut f32,
    ldd: usize,
    (rows, cols): (usize, usize),
) {
    for i0 in (0..rows).step_by(8) {
        for j0 in (0..cols).step_by(8) {
            if i0 + 8 <= rows && j0 + 8 <= cols {
                #[cfg(target_arch = "x86_64")]
                crate::model::fastmath::transpose8x8(
                    src.add(i0 * lds + j0),
                    lds,
                    dst.add(j0 * ldd + i0),
                    ldd,
                );
                #[cfg(target_arch = "x86_64")]
                continue;
            }
            for i in i0..(i0 + 8).min(rows) {
                for j in j0..(j0 + 8).min(cols) {
                    *dst.add(j * ldd + i) = *src.add(i * lds + j);
                }
            }
        }
    }
}

/// The product of [`gemm`] with `b` packed as `panels` ([`with_packed`]; n rounded up to whole
/// panels).
fn run_packed((m, n, k): (usize, usize, usize), a: View, panels: &[f32], out: Out, parallel: bool) {
    let panels = &panels[..n.div_ceil(NR) * NR * k];
    // a in place (row stride rs) when its rows are contiguous, else a row-major copy.
    let copied;
    let (ad, lda) = if a.cs == 1 {
        (&a.data[..(m - 1) * a.rs + k], a.rs)
    } else {
        copied = dense(a, m, k);
        (&copied[..], k)
    };
    let np = panels.len() / k;
    let w = Weight {
        panels,
        n: np,
        bias: None,
    };
    let (c, accumulate) = match out {
        Out::Into(c, accumulate) => (c, accumulate),
        Out::Fresh(v) => {
            v.clear();
            v.reserve_exact(m * n);
            let ptr = v.as_mut_ptr();
            if np == n {
                // SAFETY: the capacity is m·n; matmul_into writes every element.
                unsafe {
                    matmul_into((m, k), ad, lda, &[(w, SendPtr(ptr))], false, parallel);
                    v.set_len(m * n);
                }
                return;
            }
            let tmp = fresh_product((m, k), ad, lda, w, parallel);
            // SAFETY: each of the m rows of v gets its n values (the capacity is m·n).
            unsafe {
                for (i, row) in tmp.chunks_exact(np).enumerate() {
                    std::ptr::copy_nonoverlapping(row.as_ptr(), ptr.add(i * n), n);
                }
                v.set_len(m * n);
            }
            return;
        }
    };
    if np == n {
        // SAFETY: c holds m·n floats (asserted by the callers) and is borrowed for the call.
        unsafe {
            matmul_into(
                (m, k),
                ad,
                lda,
                &[(w, SendPtr(c.as_mut_ptr()))],
                accumulate,
                parallel,
            )
        };
        return;
    }
    let tmp = fresh_product((m, k), ad, lda, w, parallel);
    for (crow, trow) in c[..m * n].chunks_exact_mut(n).zip(tmp.chunks_exact(np)) {
        if accumulate {
            crow.iter_mut().zip(trow).for_each(|(o, v)| *o += v);
        } else {
            crow.copy_from_slice(&trow[..n]);
        }
    }
}

/// Each job's `c` (m, n) `= a · wᵀ (+ bias)`, into memory that need not be initialised:
/// every element of `c[..m·n]` is written (the first reduction block stores, later ones
/// add to what it stored). With `accumulate`, `c += a · wᵀ` instead (every block adds;
/// no bias): a weight's gradient summed over micro-batches in place, with no product-sized
/// temporary.
///
/// # Safety
/// Each job's pointer must be valid for writing m·n floats (and, with `accumulate`, for
/// reading them initialised), the jobs' outputs disjoint.
unsafe fn matmul_into(
    (m, k): (usize, usize),
    a: &[f32],
    lda: usize,
    jobs: &[(Weight, SendPtr)],
    accumulate: bool,
    parallel: bool,
) {
    assert!(available(), "sgemm: this CPU has no AVX-512");
    assert!(
        lda >= k && (m == 0 || a.len() >= (m - 1) * lda + k),
        "sgemm: a is too short"
    );
    for (w, _) in jobs {
        let n = w.n;
        assert!(
            packable(n),
            "sgemm: {n} output features are not whole panels"
        );
        assert!(
            w.panels.len() >= n * k,
            "sgemm: the weight panels are too short"
        );
        if let Some(bias) = w.bias {
            assert!(bias.len() >= n, "sgemm: bias is too short");
            assert!(!accumulate, "sgemm: a bias while accumulating");
        }
    }
    if m == 0 || (k == 0 && accumulate) {
        return;
    }
    if k == 0 {
        for (w, c) in jobs {
            for i in 0..m {
                for j in 0..w.n {
                    c.0.add(i * w.n + j).write(w.bias.map_or(0.0, |b| b[j]));
                }
            }
        }
        return;
    }
    // The activations, packed once for all threads: strip s (rows 12s..12s+12, zero rows
    // past m) as [kk][r] at s·12·k.
    // Long rows are copied (a row stride of 8 KiB or more put all twelve rows of a strip
    // in the same L1 sets: the 800 × 2048 → 6144 product ran at 210-220 GFLOP/s in place,
    // 247-268 packed); short ones are read in place, where the copy cost more than it saved.
    let shared = k >= 2048;
    let strips = m.div_ceil(MR);
    let mut apk = Vec::new();
    if shared {
        apk = vec![0f32; strips * MR * k];
        let pack = |(s, strip): (usize, &mut [f32])| {
            let i0 = s * MR;
            for r in 0..MR.min(m - i0) {
                let row = &a[(i0 + r) * lda..][..k];
                for (kk, &v) in row.iter().enumerate() {
                    strip[kk * MR + r] = v;
                }
            }
        };
        if parallel {
            use rayon::prelude::*;
            apk.par_chunks_mut(MR * k)
                .enumerate()
                .with_min_len(crate::workers::min_split())
                .for_each(pack);
        } else {
            apk.chunks_mut(MR * k).enumerate().for_each(pack);
        }
    }
    let apk = shared.then_some(&apk[..]);
    let count: usize = jobs.iter().map(|(w, _)| w.n / NR).sum();
    let threads = if parallel {
        rayon::current_num_threads().clamp(1, count)
    } else {
        1
    };
    let run = |t: usize| {
        // Panels split as evenly as possible, in order.
        let range = count * t / threads..count * (t + 1) / threads;
        // SAFETY: each thread writes only the columns of its own panels; the outputs
        // outlive the scope; the CPU has AVX-512 (asserted above); the slices were checked.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            x86::run_panels((m, k), a, lda, apk, jobs, range, accumulate)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = range;
            unreachable!()
        }
    };
    if threads == 1 {
        run(0);
    } else {
        use rayon::prelude::*;
        (0..threads).into_par_iter().for_each(run);
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the threads write disjoint elements (see `matmul`).
unsafe impl Send for SendPtr {}

impl SendPtr {
    /// The pointer `i` floats on (a method, so that closures capture the `SendPtr`, which
    /// is `Sync`, rather than its field).
    ///
    /// # Safety
    /// As for `pointer::add`.
    unsafe fn at(self, i: usize) -> *mut f32 {
        self.0.add(i)
    }
}
unsafe impl Sync for SendPtr {}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{SendPtr, Weight, KC, MR, NR, PF_EVERY};
    use std::arch::x86_64::*;
    use std::cell::RefCell;

    thread_local! {
        /// Per-thread buffer for the last, partial strip of the activations.
        static TAIL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }

    /// Output panels `panels` of the jobs' products, the panels numbered through the jobs
    /// in order; added to the outputs with `accumulate`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run_panels(
        (m, k): (usize, usize),
        a: &[f32],
        lda: usize,
        apk: Option<&[f32]>,
        jobs: &[(Weight, SendPtr)],
        panels: std::ops::Range<usize>,
        accumulate: bool,
    ) {
        // Panel p as (job, panel within the job).
        let locate = |mut p: usize| {
            for (j, (w, _)) in jobs.iter().enumerate() {
                if p < w.n / NR {
                    return (j, p);
                }
                p -= w.n / NR;
            }
            unreachable!("a panel past the jobs")
        };
        // Equal reduction blocks no longer than KC.
        let kcb = k.div_ceil(k.div_ceil(KC));
        let full = m / MR * MR;
        TAIL.with(|tail| {
            let mut tail = tail.borrow_mut();
            tail.resize(MR * kcb, 0.0);
            for pc in (0..k).step_by(kcb) {
                let kc = kcb.min(k - pc);
                if full < m && apk.is_none() {
                    pack_a(a, lda, full, pc, m - full, kc, &mut tail);
                }
                let (mut j, mut q) = locate(panels.start);
                for p in panels.clone() {
                    if q == jobs[j].0.n / NR {
                        (j, q) = (j + 1, 0);
                    }
                    let (w, c) = &jobs[j];
                    let n = w.n;
                    let j0 = q * NR;
                    let bp = w.panels.as_ptr().add(q * k * NR + pc * NR);
                    let bias = if pc == 0 && !accumulate {
                        Some(w.bias.map(|b| b[j0..].as_ptr()))
                    } else {
                        None
                    };
                    // The same block of the next panel, into L2 a share before each strip:
                    // a weight is read from memory once per pass, and without this every
                    // block's first strip waited for it (the LM head ran at half speed).
                    let next = if p + 1 < panels.end {
                        let (nj, nq) = if q + 1 < n / NR {
                            (j, q + 1)
                        } else {
                            (j + 1, 0)
                        };
                        jobs[nj].0.panels.as_ptr().add(nq * k * NR + pc * NR) as *const i8
                    } else {
                        std::ptr::null()
                    };
                    let lines = if next.is_null() { 0 } else { kc * NR * 4 / 64 };
                    let per_strip = lines.div_ceil(m.div_ceil(MR));
                    let mut line = 0;
                    for (s, i0) in (0..m).step_by(MR).enumerate() {
                        let until = lines.min(line + per_strip);
                        let out = c.0.add(i0 * n + j0);
                        let rows = MR.min(m - i0);
                        // The in-place kernel spreads its share of the prefetches over its
                        // reduction (one line every PF_EVERY steps): issued in one burst,
                        // they filled the line-fill buffers and stalled the loads beside
                        // them (perf gave the burst 6–9 % of a forward pass).
                        let spread = if apk.is_none() && rows == MR {
                            (until - line).min((kc - 1) / PF_EVERY)
                        } else {
                            0
                        };
                        while line + spread < until {
                            _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(line * 64));
                            line += 1;
                        }
                        if let Some(apk) = apk {
                            let ap = apk.as_ptr().add(s * MR * k + pc * MR);
                            kernel_packed_rows(rows, kc, ap, bp, out, n, bias);
                        } else if rows == MR {
                            let ap = a.as_ptr().add(i0 * lda + pc);
                            let pf = (next.wrapping_add(line * 64), spread);
                            kernel_in_place(kc, ap, lda, bp, out, n, bias, pf);
                            line += spread;
                        } else {
                            kernel_packed_rows(rows, kc, tail.as_ptr(), bp, out, n, bias);
                        }
                    }
                    q += 1;
                }
            }
        })
    }

    /// Rows `rows` of `cᵀ = bᵀ · aᵀ` into `ct` (rows.len() × mp, mp = m rounded up to whole
    /// panels), for [`super::gemm_by_panels`]: `b` (k, n) as stored panels (panel p holds
    /// b's rows 32p..32p + 32 as `[j][r]`), `tokens` aᵀ (k, m) as panels of 32 columns
    /// (`[kk][i]`). `rows.start` a multiple of MR.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run_transposed(
        (m, n, k): (usize, usize, usize),
        b: &[f32],
        tokens: &[f32],
        ct: &mut [f32],
        rows: std::ops::Range<usize>,
    ) {
        let mp = m.div_ceil(NR) * NR;
        debug_assert!(
            rows.start.is_multiple_of(MR) && rows.end <= n && ct.len() >= rows.len() * mp
        );
        debug_assert!(b.len() >= n * k && tokens.len() >= mp * k && k % NR == 0);
        // Reduction blocks of whole panels, about KC steps each.
        let kcb = (k / NR).div_ceil((k / NR).div_ceil(KC / NR)) * NR;
        for pc in (0..k).step_by(kcb) {
            let kc = kcb.min(k - pc);
            let first = pc == 0;
            for j0 in rows.clone().step_by(MR) {
                let h = MR.min(rows.end - j0);
                // Rows j0.. of bᵀ: in panel pc/32, from its row j0, 32 floats per row.
                let ap = b.as_ptr().add(pc * n + j0 * NR);
                for (t, i0) in (0..m).step_by(NR).enumerate() {
                    let bp = tokens.as_ptr().add(t * NR * k + pc * NR);
                    let out = ct.as_mut_ptr().add((j0 - rows.start) * mp + i0);
                    let two = m - i0 > NR / 2;
                    // The first pass over a tile brings the next tile's blocks (right after
                    // this tile's in each panel) into L2.
                    let pf = t == 0 && j0 + MR < rows.end;
                    macro_rules! dispatch {
                        ($($r:literal)*) => {
                            match (h, two) {
                                $(($r, true) => kernel_t::<$r, 2>(kc, ap, n * NR, bp, out, mp, first, pf),
                                  ($r, false) => kernel_t::<$r, 1>(kc, ap, n * NR, bp, out, mp, first, pf),)*
                                _ => unreachable!("a tile has 1 to 12 rows"),
                            }
                        };
                    }
                    dispatch!(1 2 3 4 5 6 7 8 9 10 11 12)
                }
            }
        }
    }

    /// `c[0..ROWS][0..16·V] (=, or += when not first) a · b` over `kc` reduction steps
    /// (a multiple of 32): row r of `a` at step s is `a[(s / 32)·pstride + r·32 + s % 32]`
    /// (a weight's stored panels, read in place), `b` packed `[s][32]`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel_t<const ROWS: usize, const V: usize>(
        kc: usize,
        a: *const f32,
        pstride: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        first: bool,
        pf: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); V]; ROWS];
        // The tile's earlier sums, read at the end: fetched now, their misses overlap the
        // reduction instead of stalling the stores.
        if !first {
            prefetch_tile(c, ldc, ROWS);
        }
        let (mut ap, mut bp) = (a, b);
        for _ in 0..kc / NR {
            for kk in 0..NR {
                // 24 lines (a 12-row block of the next tile) over the 32 steps of a panel;
                // past the weight's end when that tile is partial (wrapping: a prefetch
                // never faults, and no pointer past the allocation is formed with `add`).
                if pf && kk < MR * NR / 16 {
                    _mm_prefetch::<_MM_HINT_T1>(ap.wrapping_add(MR * NR + 16 * kk) as *const i8);
                }
                // The packed tokens stream from L2, a new 32 KiB block per tile of tokens
                // (perf put the stalls on these loads): four steps ahead into L1 (wrapping
                // past the block's end: a prefetch never faults). Session 32's probe: the
                // product about 3 % faster (-2 to +6 % over eight runs).
                for v in 0..V {
                    _mm_prefetch::<_MM_HINT_T0>(bp.wrapping_add(NR * 4 + 16 * v) as *const i8);
                }
                let mut bv = [_mm512_setzero_ps(); V];
                for (v, bv) in bv.iter_mut().enumerate() {
                    *bv = _mm512_loadu_ps(bp.add(16 * v));
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*ap.add(r * NR + kk));
                    for (acc, bv) in acc.iter_mut().zip(bv) {
                        *acc = _mm512_fmadd_ps(av, bv, *acc);
                    }
                }
                bp = bp.add(NR);
            }
            ap = ap.add(pstride);
        }
        for (r, acc) in acc.iter().enumerate() {
            for (v, acc) in acc.iter().enumerate() {
                let p = c.add(r * ldc + 16 * v);
                let val = if first {
                    *acc
                } else {
                    _mm512_add_ps(*acc, _mm512_loadu_ps(p))
                };
                _mm512_storeu_ps(p, val);
            }
        }
    }

    /// Rows `ic..ic + mc`, columns `pc..pc + kc` of `a`, as strips of MR rows, each k-major
    /// (`[strip][kk][r]`); rows past the end are zeros.
    fn pack_a(a: &[f32], lda: usize, ic: usize, pc: usize, mc: usize, kc: usize, out: &mut [f32]) {
        for (s, strip) in out[..mc.div_ceil(MR) * MR * kc]
            .chunks_exact_mut(MR * kc)
            .enumerate()
        {
            let i0 = ic + s * MR;
            let rows = MR.min(ic + mc - i0);
            for r in 0..rows {
                let row = &a[(i0 + r) * lda + pc..][..kc];
                for (kk, &v) in row.iter().enumerate() {
                    strip[kk * MR + r] = v;
                }
            }
            for r in rows..MR {
                for kk in 0..kc {
                    strip[kk * MR + r] = 0.0;
                }
            }
        }
    }

    /// `c[0..12] (+)= a · panel block` with the twelve rows of `a` read in place (row
    /// stride `lda`), plus the bias on the first reduction block (see [`store`]); prefetches
    /// `pf.1` lines from `pf.0` into L2 on the way, one every [`PF_EVERY`] steps
    /// (`pf.1 · PF_EVERY < kc`).
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel_in_place(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        first: Option<Option<*const f32>>,
        (mut pf, pf_lines): (*const i8, usize),
    ) {
        debug_assert!(pf_lines * PF_EVERY < kc);
        prefetch_tile(c, ldc, MR);
        // Four base pointers three rows apart, each row addressed as base + {0, 1, 2}·lda
        // (LLVM re-derives the twelve addresses its own way anyway: about ten integer adds
        // per reduction step beside the 24 FMAs, in the asm of this build).
        let mut base = [a, a.add(3 * lda), a.add(6 * lda), a.add(9 * lda)];
        let mut bp = b;
        // The first step multiplies (a product plus zero is the same product, rounded
        // once), so that the accumulators need no zeroing: zeroed, they were a memset of
        // the whole array on the stack per call.
        let b0 = _mm512_loadu_ps(bp);
        let b1 = _mm512_loadu_ps(bp.add(16));
        let mut acc = [[b0; 2]; MR];
        for (g, p) in base.iter().enumerate() {
            for i in 0..3 {
                let av = _mm512_set1_ps(*p.add(i * lda));
                acc[g * 3 + i] = [_mm512_mul_ps(av, b0), _mm512_mul_ps(av, b1)];
            }
        }
        let step =
            |base: &mut [*const f32; 4], bp: &mut *const f32, acc: &mut [[__m512; 2]; MR]| {
                for p in base.iter_mut() {
                    *p = p.add(1);
                }
                *bp = bp.add(NR);
                let b0 = _mm512_loadu_ps(*bp);
                let b1 = _mm512_loadu_ps(bp.add(16));
                for (g, p) in base.iter().enumerate() {
                    for i in 0..3 {
                        let av = _mm512_set1_ps(*p.add(i * lda));
                        let acc = &mut acc[g * 3 + i];
                        acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
                        acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
                    }
                }
            };
        // Steps 1..kc: PF_EVERY at a time with one prefetch while lines are left, then
        // the rest.
        let mut done = 1;
        for _ in 0..pf_lines {
            _mm_prefetch::<_MM_HINT_T1>(pf);
            pf = pf.add(64);
            for _ in 0..PF_EVERY {
                step(&mut base, &mut bp, &mut acc);
            }
            done += PF_EVERY;
        }
        for _ in done.min(kc)..kc {
            step(&mut base, &mut bp, &mut acc);
        }
        store(&acc, c, ldc, first);
    }

    /// `c[0..ROWS] (+)= a · panel block` with `a` a packed strip (`[kk][12]`, rows past
    /// ROWS unused): only ROWS rows are computed, so one row (decoding a token) costs a
    /// twelfth of a full strip.
    #[target_feature(enable = "avx512f")]
    unsafe fn kernel_packed<const ROWS: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        first: Option<Option<*const f32>>,
    ) {
        prefetch_tile(c, ldc, ROWS);
        let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
        let (mut ap, mut bp) = (a, b);
        for _ in 0..kc {
            let b0 = _mm512_loadu_ps(bp);
            let b1 = _mm512_loadu_ps(bp.add(16));
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ap.add(r));
                acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
            }
            ap = ap.add(MR);
            bp = bp.add(NR);
        }
        store(&acc, c, ldc, first);
    }

    /// [`kernel_packed`] for `rows` in 1..=12.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn kernel_packed_rows(
        rows: usize,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        first: Option<Option<*const f32>>,
    ) {
        macro_rules! dispatch {
            ($($r:literal)*) => {
                match rows {
                    $($r => kernel_packed::<$r>(kc, a, b, c, ldc, first),)*
                    _ => unreachable!("a strip holds 1 to 12 rows"),
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8 9 10 11 12)
    }

    /// The output tile is read (later blocks) or written at the end: fetch its lines first,
    /// so the misses overlap the reduction instead of following it.
    #[target_feature(enable = "avx512f")]
    unsafe fn prefetch_tile(c: *mut f32, ldc: usize, rows: usize) {
        for r in 0..rows {
            let row = c.add(r * ldc) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(row);
            _mm_prefetch::<_MM_HINT_T0>(row.add(64));
        }
    }

    /// Stores `acc` into the tile at `c`: plus the bias on the first reduction block
    /// (`Some(Some(bias))`), as is on the first block without bias (`Some(None)`), added
    /// to what is there on later blocks (`None`).
    #[target_feature(enable = "avx512f")]
    unsafe fn store<const ROWS: usize>(
        acc: &[[__m512; 2]; ROWS],
        c: *mut f32,
        ldc: usize,
        first: Option<Option<*const f32>>,
    ) {
        let (base0, base1) = match first {
            Some(Some(bias)) => (_mm512_loadu_ps(bias), _mm512_loadu_ps(bias.add(16))),
            _ => (_mm512_setzero_ps(), _mm512_setzero_ps()),
        };
        let accumulate = first.is_none();
        for (r, acc) in acc.iter().enumerate() {
            let row = c.add(r * ldc);
            let (mut v0, mut v1) = (_mm512_add_ps(acc[0], base0), _mm512_add_ps(acc[1], base1));
            if accumulate {
                v0 = _mm512_add_ps(v0, _mm512_loadu_ps(row));
                v1 = _mm512_add_ps(v1, _mm512_loadu_ps(row.add(16)));
            }
            _mm512_storeu_ps(row, v0);
            _mm512_storeu_ps(row.add(16), v1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        (0..len)
            .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
            .collect()
    }

    /// [`gemm`] against the product summed in f64, for every orientation of both operands,
    /// widths that are and are not whole panels, overwriting and accumulating.
    #[test]
    fn strided_products_match_the_exact_product() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (13, 40, 7),
            (30, 64, 300),
            (7, 3, 2100),
            (50, 96, 33),
            // Whole panels, the activations packed (k ≥ 2048), a partial strip: adds in
            // place when accumulating.
            (13, 64, 2100),
        ] {
            let av = values(m * k, (m * 7 + k) as u64);
            let bv = values(k * n, (n * 5 + k) as u64);
            let start = values(m * n, 3);
            for a_t in [false, true] {
                for b_t in [false, true] {
                    // a (m, k) stored row-major or as its transpose; b likewise.
                    let a = if a_t {
                        View::rows(&av, m).t()
                    } else {
                        View::rows(&av, k)
                    };
                    let b = if b_t {
                        View::rows(&bv, k).t()
                    } else {
                        View::rows(&bv, n)
                    };
                    for accumulate in [false, true] {
                        for parallel in [false, true] {
                            let mut c = start.clone();
                            gemm((m, n, k), a, b, &mut c, accumulate, parallel);
                            if !accumulate {
                                // Into a new vector: the same bits.
                                assert_eq!(gemm_new((m, n, k), a, b, parallel), c);
                            }
                            for i in 0..m {
                                for j in 0..n {
                                    let mut want = if accumulate {
                                        start[i * n + j] as f64
                                    } else {
                                        0.0
                                    };
                                    for l in 0..k {
                                        want += a.at(i, l) as f64 * b.at(l, j) as f64;
                                    }
                                    let got = c[i * n + j] as f64;
                                    assert!(
                                        (got - want).abs() <= 1e-6 * (k as f64 + 2.0),
                                        "({m}, {n}, {k}) a_t {a_t} b_t {b_t} acc {accumulate}: \
                                         ({i}, {j}) {got} vs {want}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// [`gemm_by_panels`] against the product summed in f64: `a · w` for a weight `w`
    /// (k, n) given as its panels, n whole panels or not, overwriting and accumulating.
    #[test]
    fn products_by_stored_panels_match_the_exact_product() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        // Rows of a: one partial panel of aᵀ (≤ 16 and > 16 wide), whole panels plus a
        // part of ≤ 16 (40) or > 16 (50); n: a partial tile of 12, tiles split over the
        // threads; k: one reduction block, blocks of unequal panels (288: 160 + 128), many.
        for &(m, n, k) in &[
            (1, 1, 32),
            (13, 40, 64),
            (30, 64, 96),
            (50, 7, 32),
            (40, 100, 288),
            (64, 25, 256),
            (3, 70, 65536),
        ] {
            let av = values(m * k, (m * 3 + k) as u64);
            let w = values(k * n, (n * 11 + k) as u64);
            let (v, off) = pack_panels(&w, (k, n), |v| v);
            let start = values(m * n, 9);
            for accumulate in [false, true] {
                let mut c = start.clone();
                if !accumulate {
                    let fresh = gemm_by_panels_new(
                        (m, n, k),
                        View::rows(&av, k),
                        &v[off..off + k * n],
                        true,
                    );
                    let mut into = vec![0f32; m * n];
                    gemm_by_panels(
                        (m, n, k),
                        View::rows(&av, k),
                        &v[off..off + k * n],
                        &mut into,
                        false,
                        true,
                    );
                    assert_eq!(fresh, into);
                }
                gemm_by_panels(
                    (m, n, k),
                    View::rows(&av, k),
                    &v[off..off + k * n],
                    &mut c,
                    accumulate,
                    true,
                );
                for i in 0..m {
                    for j in 0..n {
                        let mut want = if accumulate {
                            start[i * n + j] as f64
                        } else {
                            0.0
                        };
                        for l in 0..k {
                            want += av[i * k + l] as f64 * w[l * n + j] as f64;
                        }
                        let got = c[i * n + j] as f64;
                        assert!(
                            (got - want).abs() <= 1e-6 * (k as f64 + 2.0),
                            "({m}, {n}, {k}) acc {accumulate}: ({i}, {j}) {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn panels_hold_the_transposed_column_blocks() {
        let (n, k) = (64, 5);
        let w: Vec<u32> = (0..(n * k) as u32).collect();
        let (v, off) = pack_panels(&w, (n, k), |v| v as f32);
        assert_eq!(v[off..].as_ptr() as usize % 64, 0);
        let p = &v[off..off + n * k];
        for row in 0..n {
            for kk in 0..k {
                let (panel, j) = (row / PANEL, row % PANEL);
                assert_eq!(p[panel * k * PANEL + kk * PANEL + j], (row * k + kk) as f32);
            }
        }
        assert!(!packable(0) && !packable(33) && packable(96));
    }

    /// Against the product summed in f64, at every edge: rows not a multiple of the 12-row
    /// tile (and fewer than 12), a reduction longer than one block and not a multiple of
    /// it, a row stride of `a` beyond its width, with and without bias, 1 and 2 threads.
    #[test]
    fn matches_the_exact_product_at_every_edge() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        let pools: Vec<_> = [1, 2]
            .iter()
            .map(|&t| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap()
            })
            .collect();
        let mut checked = 0;
        for &(m, n, k, lda) in &[
            (1, 32, 1, 1),
            (5, 64, 3, 3),
            (12, 32, 256, 256),
            (13, 96, 257, 300),
            (25, 64, 600, 600),
            (500, 32, 40, 41),
            (30, 128, 513, 513),
            // Long rows: the activations are packed once for both threads.
            (7, 32, 2048, 2048),
            (27, 64, 2100, 2111),
        ] {
            let a = values(m * lda, (m * 31 + k) as u64);
            let w = values(n * k, (n * 17 + k) as u64);
            let bias = values(n, 7);
            let (v, off) = pack_panels(&w, (n, k), |v| v);
            let panels = &v[off..off + n * k];
            let w2 = values(32 * k, (k + 5) as u64);
            let (v2, off2) = pack_panels(&w2, (32, k), |v| v);
            let panels2 = &v2[off2..off2 + 32 * k];
            for with_bias in [false, true] {
                let bias = with_bias.then_some(&bias[..]);
                for pool in &pools {
                    let mut c = vec![f32::NAN; m * n];
                    pool.install(|| matmul((m, n, k), &a, lda, panels, bias, &mut c));
                    for i in 0..m {
                        for j in 0..n {
                            let mut want = bias.map_or(0.0, |b| b[j] as f64);
                            for kk in 0..k {
                                want += a[i * lda + kk] as f64 * w[j * k + kk] as f64;
                            }
                            let got = c[i * n + j] as f64;
                            // f32 accumulation of k terms of size ≤ 1.
                            assert!(
                                (got - want).abs() <= 1e-6 * (k as f64 + 1.0),
                                "({m}, {n}, {k}) bias {with_bias} at ({i}, {j}): {got} vs {want}"
                            );
                        }
                    }
                    // The same product into new, uninitialised, aligned vectors, as one
                    // product with a second weight (of 32 features, no bias) after it.
                    let mut c2 = vec![f32::NAN; m * 32];
                    pool.install(|| matmul((m, 32, k), &a, lda, panels2, None, &mut c2));
                    let both = [
                        Weight { panels, n, bias },
                        Weight {
                            panels: panels2,
                            n: 32,
                            bias: None,
                        },
                    ];
                    let fresh = pool.install(|| products((m, k), &a, lda, &both));
                    for ((v, off), want) in fresh.iter().zip([&c, &c2]) {
                        assert_eq!(v[*off..].as_ptr() as usize % 64, 0);
                        assert_eq!(
                            v[*off..].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                        );
                    }
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 9 * 2 * 2);
    }
}
