//! The torchvision backend of transformers' Qwen2-VL image processor (`Qwen2VLImageProcessor`
//! in transformers 5, the one `AutoProcessor` loads by default). It receives the same
//! Pillow-decoded, `convert_to_rgb`-ed 8-bit image as the PIL backend, as a uint8 `[3, H, W]`
//! tensor, and then differs in two places:
//!
//! - **Resizing**: `torchvision.transforms.v2.functional.resize(.., BICUBIC, antialias=True)`
//!   keeps the uint8 tensor and calls PyTorch's `_upsample_bicubic2d_aa` on it, whose CPU
//!   kernel for uint8 (weights from `aten/src/ATen/native/cpu/UpSampleKernel.cpp`, sums in
//!   the AVX2 code of `UpSampleKernelAVXAntialias.h` on x86, where the fixtures were made,
//!   or in the generic loops `basic_loop_aa_*<uint8_t>`, which do the same integer sums) is
//!   Pillow's algorithm with other fixed-point details: the cubic is evaluated in PyTorch's
//!   form, the weights are int16 with a precision chosen from the largest weight of the pass
//!   (at most 22 bits), and the horizontal pass always runs first. This is transformers'
//!   default (images processed on the CPU); with `device="cuda"` torchvision resizes in
//!   float32 and rounds, which this module does not reproduce.
//! - **Rescale + normalise**: fused into one float32 `normalize` with `mean / rescale_factor`
//!   and `std / rescale_factor` (transformers' `_fuse_mean_std_and_rescale_factor`).

use anyhow::{bail, Context, Result};

use super::resample::{self, FixedCoeffs};
use image::RgbImage;

use super::image::ImageProcessorConfig;

/// PyTorch's `HelperInterpCubic::aa_filter` with `a = -0.5` (Keys, as Pillow), written as
/// PyTorch's `cubic_convolution1` / `cubic_convolution2` (the operation order matters in the
/// last bits of the weights).
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// `_compute_index_ranges_int16_weights` for bicubic with antialias, `align_corners=False`
/// and no explicit scale factor (transformers passes a size).
/// The weights are int16 in PyTorch; they are widened here for the shared passes.
fn int16_coeffs(in_size: usize, out_size: usize) -> FixedCoeffs {
    // area_pixel_compute_scale<double>: input_size / output_size.
    let scale = in_size as f64 / out_size as f64;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let max_interp_size = support.ceil() as i64 * 2 + 1;
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let mut start = Vec::with_capacity(out_size);
    let mut float_weights = Vec::with_capacity(out_size);
    let mut wt_max = 0.0f64;
    for i in 0..out_size {
        let center = scale * (i as f64 + 0.5);
        // C++ casts truncate toward zero, as Rust's `as` does.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xsize = (((center + support + 0.5) as i64).min(in_size as i64) - xmin)
            .clamp(0, max_interp_size);
        let mut w: Vec<f64> = (0..xsize)
            .map(|j| cubic(((j + xmin) as f64 - center + 0.5) * invscale))
            .collect();
        let total: f64 = w.iter().fold(0.0, |a, &b| a + b);
        if total != 0.0 {
            for v in &mut w {
                *v /= total;
                wt_max = wt_max.max(*v);
            }
        }
        start.push(xmin as usize);
        float_weights.push(w);
    }
    // The most fractional bits (below 22) that keep the largest weight inside int16.
    let mut precision = 0u32;
    while precision < 22 {
        let next = (0.5 + wt_max * (1i64 << (precision + 1)) as f64) as i32;
        if next >= 1 << 15 {
            break;
        }
        precision += 1;
    }
    let one = (1i64 << precision) as f64;
    let weights = float_weights
        .into_iter()
        .map(|w| {
            w.into_iter()
                .map(|v| {
                    let v = v * one;
                    i64::from(
                        (if v < 0.0 {
                            (-0.5 + v) as i32
                        } else {
                            (0.5 + v) as i32
                        }) as i16,
                    )
                })
                .collect()
        })
        .collect();
    FixedCoeffs {
        start,
        weights,
        precision,
    }
}

/// Horizontal pass: `w x h` interleaved RGB to `out_w x h`.
fn resample_horizontal(src: &[u8], w: usize, h: usize, out_w: usize) -> Vec<u8> {
    resample::horizontal(src, w, h, out_w, &int16_coeffs(w, out_w))
}

/// Vertical pass: `w x h` interleaved RGB to `w x out_h`.
fn resample_vertical(src: &[u8], w: usize, h: usize, out_h: usize) -> Vec<u8> {
    resample::vertical(src, w, out_h, &int16_coeffs(h, out_h))
}

/// Resizes an 8-bit RGB image to `width x height` bit-identically to torchvision's
/// `F.resize(uint8 tensor, [height, width], InterpolationMode.BICUBIC, antialias=True)` on the
/// CPU: the horizontal pass first (when the width changes), then the vertical pass (when the
/// height changes), each rounded and saturated to 8 bits. The same size returns the image.
pub fn resize_bicubic_aa(img: &RgbImage, width: usize, height: usize) -> Result<RgbImage> {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    if width == 0 || height == 0 || in_w == 0 || in_h == 0 {
        bail!("cannot resize a {in_w}x{in_h} image to {width}x{height}");
    }
    let mut buf = img.as_raw().clone();
    if width != in_w {
        buf = resample_horizontal(&buf, in_w, in_h, width);
    }
    if height != in_h {
        buf = resample_vertical(&buf, width, in_h, height);
    }
    RgbImage::from_raw(width as u32, height as u32, buf)
        .context("internal error: resized buffer has the wrong length")
}

/// transformers' `TorchvisionBackend.rescale_and_normalize` on a uint8 image, returned as
/// `[3, h, w]` float32 planes. With both rescale and normalize, the mean and std become
/// `float32(mean) * float32(1 / rescale_factor)` (a float32 tensor times a Python float) and
/// each value is `(float32(x) - mean) / std`; normalize alone uses the float32 mean and std;
/// rescale alone is `float32(x) * float32(rescale_factor)`; neither leaves the uint8 values.
pub fn rescale_normalize(config: &ImageProcessorConfig, img: &RgbImage) -> Vec<f32> {
    let c = config;
    let (h, w) = (img.height() as usize, img.width() as usize);
    let (mean, std) = if c.do_rescale {
        let inv = (1.0 / c.rescale_factor) as f32;
        (
            c.image_mean.map(|m| m as f32 * inv),
            c.image_std.map(|s| s as f32 * inv),
        )
    } else {
        (
            c.image_mean.map(|m| m as f32),
            c.image_std.map(|s| s as f32),
        )
    };
    let factor = c.rescale_factor as f32;
    let mut out = vec![0f32; 3 * h * w];
    for (i, p) in img.pixels().enumerate() {
        for ch in 0..3 {
            let x = p[ch] as f32;
            out[ch * h * w + i] = if c.do_normalize {
                (x - mean[ch]) / std[ch]
            } else if c.do_rescale {
                x * factor
            } else {
                x
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 50, 7]));
        assert_eq!(resize_bicubic_aa(&img, 5, 4).unwrap(), img);
    }

    #[test]
    fn weights_fit_int16_and_sum_to_one() {
        for (i, o) in [(13, 64), (150, 16), (97, 48), (170, 176), (1000, 7)] {
            let c = int16_coeffs(i, o);
            assert!((1..=22).contains(&c.precision), "{i}->{o}");
            for k in &c.weights {
                let s: i64 = k.iter().sum();
                // Rounding each weight moves the sum by at most half a unit per tap.
                assert!(
                    (s - (1i64 << c.precision)).abs() <= k.len() as i64,
                    "{i}->{o}"
                );
            }
        }
    }
}
