//! The decoder's rotary tables for every family: plain 1-D RoPE (Qwen3, Llama), M-RoPE
//! with interleaved axes (Qwen3-VL) or one section per axis (Qwen2-VL, Qwen2.5-VL), and the
//! frequency scalings of transformers' `modeling_rope_utils` (linear, Llama 3).

use anyhow::Result;
use candle_core::{Device, Tensor};

use super::config::{RopeScaling, TextConfig};

/// `1 / theta^(2i/dim)` for i in 0..dim/2, rounded to f32 as torch computes it.
pub fn inv_freq(dim: usize, theta: f64) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / dim as f32;
            (1.0 / theta.powf(exponent as f64)) as f32
        })
        .collect()
}

/// transformers' `_compute_llama3_parameters`, in its f32 tensor arithmetic: wavelengths
/// longer than `original / low` are divided by `factor`, shorter than `original / high` kept,
/// and those between interpolated.
fn llama3(inv: &[f32], factor: f64, low: f64, high: f64, original: f64) -> Vec<f32> {
    // torch compares and divides the f32 tensor by the Python floats in f32.
    let low_wavelen = (original / low) as f32;
    let high_wavelen = (original / high) as f32;
    let (factor, low, high) = (factor as f32, low as f32, high as f32);
    inv.iter()
        .map(|&f| {
            let wavelen = (2.0 * std::f64::consts::PI) as f32 / f;
            let scaled = if wavelen > low_wavelen { f / factor } else { f };
            if (high_wavelen..=low_wavelen).contains(&wavelen) {
                let smooth = (original as f32 / wavelen - low) / (high - low);
                (1.0 - smooth) * scaled / factor + smooth * scaled
            } else {
                scaled
            }
        })
        .collect()
}

/// A decoder's rotary embedding: its frequencies and which position axis drives each.
#[derive(Debug, Clone, PartialEq)]
pub struct TextRope {
    inv_freq: Vec<f32>,
    /// Per frequency slot, the M-RoPE axis (0 t, 1 h, 2 w); all 0 for 1-D RoPE.
    axis: Vec<usize>,
}

impl TextRope {
    pub fn new(cfg: &TextConfig) -> Self {
        let base = inv_freq(cfg.head_dim, cfg.rope_theta);
        let inv_freq = match cfg.rope_scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor as f32).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => llama3(
                &base,
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            ),
        };
        Self::with(inv_freq, &cfg.mrope_section, cfg.mrope_interleaved)
    }

    /// Tables for frequencies `inv_freq` and M-RoPE sections `section` (empty: 1-D).
    pub fn with(inv_freq: Vec<f32>, section: &[usize], interleaved: bool) -> Self {
        let half = inv_freq.len();
        let s = section;
        let axis = (0..half)
            .map(|j| match s {
                [] => 0,
                // transformers' `apply_interleaved_mrope`: T,H,W,T,H,W,... up to each
                // section's length.
                [_, h, w] if interleaved => {
                    if j % 3 == 1 && j < h * 3 {
                        1
                    } else if j % 3 == 2 && j < w * 3 {
                        2
                    } else {
                        0
                    }
                }
                // Qwen2-VL's `apply_multimodal_rotary_pos_emb`: one contiguous section per
                // axis, the same in both halves.
                [t, h, _] => {
                    if j < *t {
                        0
                    } else if j < t + h {
                        1
                    } else {
                        2
                    }
                }
                _ => 0,
            })
            .collect();
        Self { inv_freq, axis }
    }

    /// `cos`, `sin` of shape (seq, head_dim) for positions (t, h, w) per token (three equal
    /// rows for text and for 1-D RoPE), the frequencies duplicated across both halves.
    pub fn cos_sin(&self, positions: &[Vec<i64>; 3], device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let seq = positions[0].len();
        let mut cos = Vec::with_capacity(seq * half * 2);
        let mut sin = Vec::with_capacity(seq * half * 2);
        let rows = positions[0].iter().zip(&positions[1]).zip(&positions[2]);
        let mut row = vec![0f32; half];
        for ((&t, &h), &w) in rows {
            let thw = [t, h, w];
            for (j, r) in row.iter_mut().enumerate() {
                *r = thw[self.axis[j]] as f32 * self.inv_freq[j];
            }
            for _ in 0..2 {
                cos.extend(row.iter().map(|f| f.cos()));
                sin.extend(row.iter().map(|f| f.sin()));
            }
        }
        Ok((
            Tensor::from_vec(cos, (seq, half * 2), device)?,
            Tensor::from_vec(sin, (seq, half * 2), device)?,
        ))
    }

    /// The frequencies (head_dim / 2), after scaling.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With every frequency 1 each slot's angle is its axis's position: Qwen2-VL's sections
    /// take slots in runs (t, h h, w), Qwen3-VL's interleave them (t h w t), 1-D uses t.
    #[test]
    fn sections_pick_their_axis() {
        let pos = [vec![5], vec![7], vec![11]];
        let angles = |rope: TextRope| -> Vec<f32> {
            let (cos, _) = rope.cos_sin(&pos, &Device::Cpu).unwrap();
            let got: Vec<f32> = cos.flatten_all().unwrap().to_vec1().unwrap();
            got.iter().map(|c| c.acos()).collect()
        };
        let close = |a: Vec<f32>, b: [f32; 4]| {
            let b: Vec<f32> = b.iter().chain(b.iter()).map(|x| x.cos().acos()).collect();
            assert!(
                a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5),
                "{a:?} vs {b:?}"
            );
        };
        close(
            angles(TextRope::with(vec![1.0; 4], &[1, 2, 1], false)),
            [5.0, 7.0, 7.0, 11.0],
        );
        close(
            angles(TextRope::with(vec![1.0; 4], &[1, 2, 1], true)),
            [5.0, 7.0, 11.0, 5.0],
        );
        close(angles(TextRope::with(vec![1.0; 4], &[], false)), [5.0; 4]);
    }

    #[test]
    fn llama3_keeps_short_divides_long_and_smooths_between() {
        // head_dim 16, theta 500000, original context 64, factor 8, low 1, high 4:
        // wavelengths 2π/f; short (< 16) kept, long (> 64) divided by 8.
        let base = inv_freq(16, 500_000.0);
        let out = llama3(&base, 8.0, 1.0, 4.0, 64.0);
        let mut kinds = [0; 3];
        for (&b, &o) in base.iter().zip(&out) {
            let wavelen = 2.0 * std::f32::consts::PI / b;
            if wavelen < 16.0 {
                assert_eq!(o, b);
                kinds[0] += 1;
            } else if wavelen > 64.0 {
                assert_eq!(o, b / 8.0);
                kinds[1] += 1;
            } else {
                assert!(o < b && o > b / 8.0, "{o} between {} and {b}", b / 8.0);
                kinds[2] += 1;
            }
        }
        assert!(
            kinds.iter().all(|&k| k > 0),
            "all three bands occur: {kinds:?}"
        );
    }
}
