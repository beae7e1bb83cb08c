//! The PIL backend of transformers' Qwen2-VL image processor (`Qwen2VLImageProcessorPil`):
//! Pillow's bicubic resampling (`src/libImaging/Resample.c`, 8 bits per channel, bit-exact
//! including Pillow 13's choice of pass order), then rescale + normalise in numpy's float types.

use anyhow::{bail, Context, Result};

use super::resample::{self, FixedCoeffs};
use image::RgbImage;

use super::image::ImageProcessorConfig;

/// Fractional bits of Pillow's fixed-point coefficients: 32 bits minus 8 for the result minus 2
/// for overflow of negative lobes.
const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for a box `[0, in_size)`: the filter
/// support grows with the downscale factor (antialiasing), weights are normalised to sum to one
/// and then rounded away from zero to `PRECISION_BITS` fixed point.
fn precompute_coeffs(in_size: usize, out_size: usize) -> FixedCoeffs {
    const SUPPORT: f64 = 2.0;
    // Pillow computes `in1 - in0` in float (the box is float); exact for any real image size.
    let scale = (in_size as f32 - 0.0f32) as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
    let ss = 1.0 / filterscale;
    let mut start = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's `(int)` truncates toward zero; negatives are clamped to 0 either way.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut k: Vec<f64> = (0..n)
            .map(|x| bicubic_filter(((x + xmin) as f64 - center + 0.5) * ss))
            .collect();
        let ww: f64 = k.iter().sum();
        if ww != 0.0 {
            for w in &mut k {
                *w /= ww;
            }
        }
        let one = (1u64 << PRECISION_BITS) as f64;
        let fixed = k
            .iter()
            .map(|&w| {
                i64::from(if w < 0.0 {
                    (-0.5 + w * one) as i32
                } else {
                    (0.5 + w * one) as i32
                })
            })
            .collect();
        start.push(xmin);
        weights.push(fixed);
    }
    FixedCoeffs {
        start,
        weights,
        precision: PRECISION_BITS,
    }
}

/// Resizes an 8-bit RGB image to `width x height` with bicubic filtering, bit-identical to
/// Pillow 13's `Image.resize((width, height), Image.BICUBIC)`: two separable passes, each
/// rounded and clipped to 8 bits. A side that keeps its size is not filtered. The horizontal
/// pass runs first unless the height shrinks by more than twice as many pixels as the width
/// does (Pillow >= 13 runs the vertical pass first then; the order changes the rounding).
pub fn resize_bicubic(img: &RgbImage, width: usize, height: usize) -> Result<RgbImage> {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    if width == 0 || height == 0 || in_w == 0 || in_h == 0 {
        bail!("cannot resize a {in_w}x{in_h} image to {width}x{height}");
    }
    let src = img.as_raw().as_slice();
    let vertical_first = height < in_h && (in_h - height) as i64 > 2 * (in_w as i64 - width as i64);
    let out = if vertical_first {
        let tmp = resample_rows(src, in_w, in_h, height);
        resample_columns(&tmp, in_w, height, width)
    } else {
        let tmp = resample_columns(src, in_w, in_h, width);
        resample_rows(&tmp, width, in_h, height)
    };
    RgbImage::from_raw(width as u32, height as u32, out)
        .context("internal error: resized buffer has the wrong length")
}

/// Horizontal pass: `w x h` interleaved RGB to `out_w x h`.
fn resample_columns(src: &[u8], w: usize, h: usize, out_w: usize) -> Vec<u8> {
    if out_w == w {
        return src.to_vec();
    }
    resample::horizontal(src, w, h, out_w, &precompute_coeffs(w, out_w))
}

/// Vertical pass: `w x h` interleaved RGB to `w x out_h`.
fn resample_rows(src: &[u8], w: usize, h: usize, out_h: usize) -> Vec<u8> {
    if out_h == h {
        return src.to_vec();
    }
    resample::vertical(src, w, out_h, &precompute_coeffs(h, out_h))
}

/// numpy's arithmetic in transformers' PIL backend: `rescale` multiplies in float64 and casts
/// to float32; `normalize` subtracts and divides in float32 with the mean/std cast to float32.
/// Returns the image as `[3, h, w]` planes.
pub fn rescale_normalize(config: &ImageProcessorConfig, img: &RgbImage) -> Vec<f32> {
    let c = config;
    let (h, w) = (img.height() as usize, img.width() as usize);
    let mean = c.image_mean.map(|m| m as f32);
    let std = c.image_std.map(|s| s as f32);
    let mut out = vec![0f32; 3 * h * w];
    for (i, p) in img.pixels().enumerate() {
        for ch in 0..3 {
            let mut v = if c.do_rescale {
                (p[ch] as f64 * c.rescale_factor) as f32
            } else {
                p[ch] as f32
            };
            if c.do_normalize {
                v = (v - mean[ch]) / std[ch];
            }
            out[ch * h * w + i] = v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_same_size_is_identity() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 50, 7]));
        assert_eq!(resize_bicubic(&img, 5, 4).unwrap(), img);
    }
}
