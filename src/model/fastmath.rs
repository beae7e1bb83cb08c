//! exp and tanh in f32 without libm calls, and the CPU loops of the fused element-wise ops
//! that use them, vectorised.
//!
//! glibc's `expf`/`tanhf` are one call per element: on the vision tower's tanh-GELU they
//! were a fifth of its time. These are plain f32 arithmetic that LLVM vectorises; each loop
//! is compiled three times (AVX-512, AVX2 + FMA, the baseline) and chosen once at run time.
//! Every version performs the same IEEE operations in the same order (Rust never contracts
//! a·b + c into an FMA), so the results should be bit-identical on every x86-64 CPU; the
//! tests check the version the CPU at hand runs against the scalar functions.
//!
//! Accuracy, checked against f64 in the tests: exp within 2 ulps over its whole range
//! (Cephes' polynomial after Cody–Waite reduction), tanh within 3e-7 relative. torch's
//! CPU kernels use Sleef's vectorised exp/tanh (1 ulp), so neither libm nor this is
//! bit-equal to torch; both are well inside the fixtures' tolerances.

/// e^x for every f32 x: 0 below −103.97 (after gradual underflow), +inf above 88.72,
/// NaN for NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 = C1 + C2 with C1 exact in 9 bits, so n·C1 is exact.
    const C1: f32 = 355.0 / 512.0;
    const C2: f32 = -2.121_944_4e-4;
    const HI: f32 = 88.722_84; // ln(f32::MAX)
    const LO: f32 = -103.972_08; // ln of half the smallest subnormal
    const MAGIC: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
    let xc = x.clamp(LO, HI);
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC; // round(x·log2 e), ties to even
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = xc - n * C1 - n * C2; // |r| ≤ ln 2 / 2
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let p = p * r * r + r + 1.0;
    // 2^n in two halves, each a normal number, so the result under- or overflows gradually.
    let half = ni >> 1;
    let s1 = f32::from_bits(((half + 127) as u32) << 23);
    let s2 = f32::from_bits(((ni - half + 127) as u32) << 23);
    let y = p * s1 * s2;
    if x > HI {
        f32::INFINITY
    } else if x < LO {
        0.0
    } else {
        y
    }
}

/// tanh(x): its Taylor series up to x¹³ for |x| < 0.3, (1 − e^{−2|x|}) / (1 + e^{−2|x|})
/// with x's sign beyond.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let a2 = a * a;
    let mut s = 21_844.0f32 / 6_081_075.0;
    s = s * a2 - 1_382.0 / 155_925.0;
    s = s * a2 + 62.0 / 2_835.0;
    s = s * a2 - 17.0 / 315.0;
    s = s * a2 + 2.0 / 15.0;
    s = s * a2 - 1.0 / 3.0;
    let small = s * a2 * a + a;
    let e = exp(-2.0 * a);
    let large = (1.0 - e) / (1.0 + e);
    let t = if a < 0.3 { small } else { large };
    t.copysign(x)
}

/// Compiles `body` (a function of slices) for AVX-512, AVX2 + FMA and the baseline, and
/// defines `name` to call the best one the CPU runs.
macro_rules! multiversion {
    ($(#[$m:meta])* pub fn $name:ident($($a:ident: $t:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        pub fn $name($($a: $t),*) {
            #[inline(always)]
            fn body($($a: $t),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn v4($($a: $t),*) {
                    body($($a),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($a: $t),*) {
                    body($($a),*)
                }
                match *LEVEL {
                    // SAFETY: the CPU has the features each version was compiled for.
                    Level::V4 => return unsafe { v4($($a),*) },
                    Level::V3 => return unsafe { v3($($a),*) },
                    Level::Base => {}
                }
            }
            body($($a),*)
        }
    };
}

#[cfg(target_arch = "x86_64")]
enum Level {
    V4,
    V3,
    Base,
}

#[cfg(target_arch = "x86_64")]
static LEVEL: std::sync::LazyLock<Level> = std::sync::LazyLock::new(|| {
    let has = |f: &[bool]| f.iter().all(|&b| b);
    if has(&[
        is_x86_feature_detected!("avx512f"),
        is_x86_feature_detected!("avx512bw"),
        is_x86_feature_detected!("avx512dq"),
        is_x86_feature_detected!("avx512vl"),
        is_x86_feature_detected!("avx2"),
        is_x86_feature_detected!("fma"),
    ]) {
        Level::V4
    } else if has(&[
        is_x86_feature_detected!("avx2"),
        is_x86_feature_detected!("fma"),
    ]) {
        Level::V3
    } else {
        Level::Base
    }
});

/// Elements per parallel task in the slice loops below.
pub const CHUNK: usize = 4096;

/// `f(x, y)` over [`CHUNK`]-sized pieces of `x` on all cores; the result has x's length.
pub fn par_map1(x: &[f32], f: fn(&[f32], &mut [f32])) -> Vec<f32> {
    use rayon::prelude::*;
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .with_min_len(crate::workers::min_split())
        .for_each(|(y, x)| f(x, y));
    y
}

/// `f(a, b, y)` over [`CHUNK`]-sized pieces of same-length `a` and `b` on all cores.
pub fn par_map2(a: &[f32], b: &[f32], f: fn(&[f32], &[f32], &mut [f32])) -> Vec<f32> {
    use rayon::prelude::*;
    let mut y = vec![0f32; a.len()];
    y.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .with_min_len(crate::workers::min_split())
        .for_each(|(y, (a, b))| f(a, b, y));
    y
}

/// tanh-GELU constants: √(2/π) and torch's 0.044715.
pub const GELU_B: f32 = 0.797_884_6;
pub const GELU_K: f32 = 0.044715;

/// 0.5·x·(1 + tanh(b·(x + k·x³))), torch's `gelu(approximate="tanh")` formula.
#[inline(always)]
pub fn gelu_tanh(v: f32) -> f32 {
    0.5 * v * (1.0 + tanh(GELU_B * (v + GELU_K * v * v * v)))
}

/// d gelu_tanh / dx, torch's formula.
#[inline(always)]
pub fn gelu_tanh_derivative(v: f32) -> f32 {
    let t = tanh(GELU_B * (v + GELU_K * v * v * v));
    0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * GELU_B * (1.0 + 3.0 * GELU_K * v * v)
}

/// silu(g) rounded by `r`, and sigmoid(g), in f32.
#[inline(always)]
pub fn silu_parts(g: f32, r: impl Fn(f32) -> f32) -> (f32, f32) {
    let e = exp(-g);
    (r(g / (1.0 + e)), 1.0 / (1.0 + e))
}

multiversion! {
    /// y = gelu_tanh(x), element by element.
    pub fn gelu_tanh_slice(x: &[f32], y: &mut [f32]) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = gelu_tanh(v);
        }
    }
}

multiversion! {
    /// dx = dy · gelu_tanh′(x), element by element.
    pub fn gelu_tanh_grad_slice(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        for ((o, &v), &d) in dx.iter_mut().zip(x).zip(dy) {
            *o = d * gelu_tanh_derivative(v);
        }
    }
}

multiversion! {
    /// y = silu(g)·u, element by element.
    pub fn swiglu_slice(g: &[f32], u: &[f32], y: &mut [f32]) {
        for ((o, &gv), &uv) in y.iter_mut().zip(g).zip(u) {
            *o = silu_parts(gv, |v| v).0 * uv;
        }
    }
}

multiversion! {
    /// The gradients of silu(g)·u: dg = dy·u·s·(1 + g·(1 − s)) with s = sigmoid(g), and
    /// du = dy·silu(g).
    pub fn swiglu_grad_slice(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [f32], du: &mut [f32]) {
        for (((dgo, duo), (&gv, &uv)), &d) in dg.iter_mut().zip(du.iter_mut()).zip(g.iter().zip(u)).zip(dy) {
            let (act, s) = silu_parts(gv, |v| v);
            *dgo = d * uv * s * (1.0 + gv * (1.0 - s));
            *duo = d * act;
        }
    }
}

multiversion! {
    /// y = e^(x·scale − shift), element by element (softmax's numerators).
    pub fn exp_scaled_slice(x: &[f32], scale: f32, shift: f32, y: &mut [f32]) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = exp(v * scale - shift);
        }
    }
}

fn has_avx() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dst[j·ldd + i] = src[i·lds + j]` for i, j < 8: eight row loads, the textbook
/// unpack / shuffle / lane-permute sequence, eight row stores.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
pub(crate) unsafe fn transpose8x8(src: *const f32, lds: usize, dst: *mut f32, ldd: usize) {
    use std::arch::x86_64::*;
    let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * lds)));
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    let out = [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ];
    for (j, v) in out.into_iter().enumerate() {
        _mm256_storeu_ps(dst.add(j * ldd), v);
    }
}

/// The transpose (cols, rows) of a row-major (rows, cols) matrix, row-major, copied in
/// 32 × 32 tiles on all cores (candle's strided copy goes element by element and took half
/// of a small model's loading time).
pub fn transpose<T: Copy + Default + Send + Sync>(src: &[T], rows: usize, cols: usize) -> Vec<T> {
    // 4-byte elements (f32) move as bits in 8 × 8 blocks through AVX registers where the
    // CPU has AVX; the rest element by element.
    let blocks8 = std::mem::size_of::<T>() == 4 && has_avx();
    transpose_impl(src, rows, cols, |v| v, blocks8)
}

/// [`transpose`] with each element converted by `f` on the way (a checkpoint's stored
/// bytes to the compute dtype, in one pass and one allocation), element by element.
pub fn transpose_map<S: Copy + Send + Sync, T: Copy + Default + Send + Sync>(
    src: &[S],
    rows: usize,
    cols: usize,
    f: impl Fn(S) -> T + Sync,
) -> Vec<T> {
    transpose_impl(src, rows, cols, f, false)
}

/// [`transpose_map`] from little-endian f32 bytes: on a little-endian CPU with AVX the bits
/// move as they are, in [`transpose`]'s 8 × 8 blocks.
pub fn transpose_le_f32(src: &[[u8; 4]], rows: usize, cols: usize) -> Vec<f32> {
    let blocks8 = cfg!(target_endian = "little") && has_avx();
    transpose_impl(src, rows, cols, f32::from_le_bytes, blocks8)
}

/// `blocks8`: S and T are the same 4-byte type, `f` the identity, and the CPU has AVX.
fn transpose_impl<S: Copy + Send + Sync, T: Copy + Default + Send + Sync>(
    src: &[S],
    rows: usize,
    cols: usize,
    f: impl Fn(S) -> T + Sync,
    blocks8: bool,
) -> Vec<T> {
    use rayon::prelude::*;
    const TILE: usize = 32;
    assert_eq!(
        src.len(),
        rows * cols,
        "transpose: {rows} × {cols} from {}",
        src.len()
    );
    assert!(
        !blocks8 || (std::mem::size_of::<S>() == 4 && std::mem::size_of::<T>() == 4),
        "transpose: 8 x 8 blocks move 4-byte elements only"
    );
    let mut dst = vec![T::default(); src.len()];
    if rows == 0 || cols == 0 {
        return dst;
    }
    // Each task writes TILE rows of the result (TILE columns of the source), on every
    // core even when the tensor ops are single-threaded (`--workers`).
    crate::workers::on_all_cores(|| {
        dst.par_chunks_mut(TILE * rows)
            .enumerate()
            .for_each(|(block, out)| {
                let c0 = block * TILE;
                let width = out.len() / rows;
                for r0 in (0..rows).step_by(TILE) {
                    let end = (r0 + TILE).min(rows);
                    let mut r = r0;
                    if blocks8 {
                        while r + 8 <= end {
                            let mut j = 0;
                            while j + 8 <= width {
                                let from = &src[r * cols + c0 + j..];
                                let from = &from[..7 * cols + 8];
                                let to = &mut out[j * rows + r..];
                                let to = &mut to[..7 * rows + 8];
                                // SAFETY: 4-byte Copy elements moved as f32 bit patterns;
                                // the slices hold all 8 rows of 8 (bounds checked above);
                                // AVX is present (`has_avx`).
                                #[cfg(target_arch = "x86_64")]
                                unsafe {
                                    transpose8x8(
                                        from.as_ptr() as *const f32,
                                        cols,
                                        to.as_mut_ptr() as *mut f32,
                                        rows,
                                    )
                                };
                                j += 8;
                            }
                            for rr in r..r + 8 {
                                for jj in j..width {
                                    out[jj * rows + rr] = f(src[rr * cols + c0 + jj]);
                                }
                            }
                            r += 8;
                        }
                    }
                    for r in r..end {
                        let row = &src[r * cols + c0..r * cols + c0 + width];
                        for (j, &v) in row.iter().enumerate() {
                            out[j * rows + r] = f(v);
                        }
                    }
                }
            })
    });
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite f32 of one sign.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    /// Every 97th f32 bit pattern in [lo, hi] (about 10^5 to 10^7 values).
    fn sweep(lo: f32, hi: f32) -> impl Iterator<Item = f32> {
        let grid = (0..4_000_000u32).map(move |i| lo + (hi - lo) * (i as f32 / 4.0e6));
        grid.chain([lo, hi, 0.0, -0.0])
    }

    #[test]
    fn exp_is_within_two_ulps_of_the_exact_value() {
        let mut worst = 0;
        for x in sweep(-87.3, 88.72) {
            let want = (x as f64).exp() as f32;
            let got = exp(x);
            worst = worst.max(ulps(got, want));
        }
        assert!(worst <= 2, "exp: {worst} ulps");
        // Subnormal results: within 2 ulps of the correctly rounded subnormal too.
        for x in sweep(-103.9, -87.4) {
            let (got, want) = (exp(x), (x as f64).exp() as f32);
            assert!(ulps(got, want) <= 2, "exp({x}) = {got}, want {want}");
        }
        assert_eq!(exp(-104.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn tanh_is_within_3e7_relative_of_the_exact_value() {
        let mut worst = 0f64;
        for x in sweep(-12.0, 12.0).chain(sweep(-1e-3, 1e-3)) {
            let want = (x as f64).tanh();
            let got = tanh(x) as f64;
            let rel = if want == 0.0 {
                got.abs()
            } else {
                ((got - want) / want).abs()
            };
            worst = worst.max(rel);
        }
        assert!(worst < 3e-7, "tanh: relative error {worst:e}");
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(-100.0), -1.0);
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert!(tanh(-0.0).is_sign_negative());
        assert!(tanh(f32::NAN).is_nan());
    }

    #[test]
    fn transpose_moves_every_element() {
        // 4-byte elements take the 8 × 8 blocks (where the CPU has AVX) with element-wise
        // edges; 2-byte ones go element by element. Sizes with full blocks, partial blocks
        // in either direction, and none.
        let sizes = [
            (1, 1),
            (3, 70),
            (70, 3),
            (8, 8),
            (17, 40),
            (33, 65),
            (64, 32),
            (37, 203),
            (0, 5),
        ];
        for (rows, cols) in sizes {
            let src: Vec<u32> = (0..(rows * cols) as u32).collect();
            let t = transpose(&src, rows, cols);
            let half: Vec<u16> = src.iter().map(|&v| v as u16).collect();
            let th = transpose(&half, rows, cols);
            let bytes: Vec<[u8; 4]> = src.iter().map(|v| v.to_le_bytes()).collect();
            let tf = transpose_le_f32(&bytes, rows, cols);
            let tm = transpose_map(&half, rows, cols, |v| 2 * v as u32);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        t[c * rows + r],
                        src[r * cols + c],
                        "{rows}x{cols} at {r},{c}"
                    );
                    assert_eq!(th[c * rows + r], half[r * cols + c]);
                    assert_eq!(tf[c * rows + r].to_bits(), src[r * cols + c]);
                    assert_eq!(tm[c * rows + r], 2 * half[r * cols + c] as u32);
                }
            }
        }
    }

    #[test]
    fn slice_loops_equal_the_scalar_functions_bit_for_bit() {
        // The vectorised loop (whatever the CPU runs) against the scalar definition.
        let x: Vec<f32> = sweep(-20.0, 20.0).step_by(37).collect();
        let u: Vec<f32> = x.iter().map(|v| (v * 0.37).sin()).collect();
        let mut y = vec![0f32; x.len()];
        gelu_tanh_slice(&x, &mut y);
        assert!(y
            .iter()
            .zip(&x)
            .all(|(&a, &v)| a.to_bits() == gelu_tanh(v).to_bits()));
        let mut dx = vec![0f32; x.len()];
        gelu_tanh_grad_slice(&x, &u, &mut dx);
        for ((&a, &v), &d) in dx.iter().zip(&x).zip(&u) {
            assert_eq!(a.to_bits(), (d * gelu_tanh_derivative(v)).to_bits());
        }
        swiglu_slice(&x, &u, &mut y);
        for ((&a, &g), &w) in y.iter().zip(&x).zip(&u) {
            assert_eq!(a.to_bits(), (silu_parts(g, |v| v).0 * w).to_bits());
        }
        exp_scaled_slice(&x, 0.125, 1.5, &mut y);
        for (&a, &v) in y.iter().zip(&x) {
            assert_eq!(a.to_bits(), exp(v * 0.125 - 1.5).to_bits());
        }
    }
}
