//! The fixed-point separable passes both image backends resize with (Pillow's `Resample.c`
//! and PyTorch's uint8 antialiased bicubic kernel compute the same sums): each output value
//! is `clamp((2^(precision-1) + Σ input · weight) >> precision, 0, 255)`. The backends
//! differ in how they make the weights ([`FixedCoeffs`]) and in pass order.

/// Per output index `i`: inputs `start[i]..` weighted by `weights[i]`, shifted right by
/// `precision` bits.
pub(crate) struct FixedCoeffs {
    pub start: Vec<usize>,
    pub weights: Vec<Vec<i64>>,
    pub precision: u32,
}

impl FixedCoeffs {
    fn value(&self, acc: i64) -> u8 {
        (acc >> self.precision).clamp(0, 255) as u8
    }

    fn half(&self) -> i64 {
        1i64 << (self.precision - 1)
    }
}

/// Horizontal pass: `w x h` interleaved RGB to `out_w x h`.
pub(crate) fn horizontal(src: &[u8], w: usize, h: usize, out_w: usize, c: &FixedCoeffs) -> Vec<u8> {
    let mut out = vec![0u8; out_w * h * 3];
    for y in 0..h {
        let row = &src[y * w * 3..(y + 1) * w * 3];
        for xx in 0..out_w {
            let (x0, k) = (c.start[xx], &c.weights[xx]);
            let mut acc = [c.half(); 3];
            for (i, &wt) in k.iter().enumerate() {
                let p = &row[(x0 + i) * 3..(x0 + i) * 3 + 3];
                for ch in 0..3 {
                    acc[ch] += p[ch] as i64 * wt;
                }
            }
            let o = (y * out_w + xx) * 3;
            for ch in 0..3 {
                out[o + ch] = c.value(acc[ch]);
            }
        }
    }
    out
}

/// Vertical pass: `w x h` interleaved RGB to `w x out_h`.
pub(crate) fn vertical(src: &[u8], w: usize, out_h: usize, c: &FixedCoeffs) -> Vec<u8> {
    let mut out = vec![0u8; w * out_h * 3];
    let mut acc = vec![0i64; w * 3];
    for yy in 0..out_h {
        let (y0, k) = (c.start[yy], &c.weights[yy]);
        acc.fill(c.half());
        for (i, &wt) in k.iter().enumerate() {
            let row = &src[(y0 + i) * w * 3..(y0 + i + 1) * w * 3];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i64 * wt;
            }
        }
        for (o, &a) in out[yy * w * 3..(yy + 1) * w * 3].iter_mut().zip(&acc) {
            *o = c.value(a);
        }
    }
    out
}
