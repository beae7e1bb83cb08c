//! Qwen2-VL and Qwen2.5-VL: the two vision towers and the text side's sectioned M-RoPE tables.
//!
//! Positions: for inputs with images (no video), transformers 5.25's
//! `Qwen2VLModel.get_rope_index` and `Qwen2_5_VLModel.get_rope_index` compute exactly what
//! `Qwen3VLModel.get_rope_index` does (text runs count up in all three rows; an image run is
//! laid out on its merged grid offset by the position reached so far, which then advances by
//! max(h, w) / merge; Qwen2.5-VL's `tokens_per_second` scaling applies to videos only), so
//! [`get_rope_index`] is the Qwen3-VL function, re-exported.

pub mod vision;

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};

pub use crate::model::qwen3_vl::rope::{get_rope_index, RopeIndex};
pub use vision::{window_index, Qwen2VisionConfig, Qwen2VisionModel, VisionAct, VisionFamily};

/// `1 / theta^(2i/dim)` for i in 0..dim/2, rounded to f32 (as `qwen3_vl::rope` computes it).
fn inv_freq(dim: usize, theta: f64) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / dim as f32;
            (1.0 / theta.powf(exponent as f64)) as f32
        })
        .collect()
}

/// Text rotary tables for Qwen2-VL / Qwen2.5-VL M-RoPE positions: `cos`, `sin` of shape
/// (seq, head_dim), in the layout of `qwen3_vl::rope::text_cos_sin` (one half of frequencies,
/// duplicated over both halves) so that `ops::apply_rope` consumes them. The frequency slots
/// are taken section by section: the first `mrope_section[0]` from the temporal positions,
/// the next `mrope_section[1]` from the height positions, the last `mrope_section[2]` from the
/// width positions (transformers' `Qwen2VLRotaryEmbedding.recomposition_frequencies`, equal to
/// the 4.x `apply_multimodal_rotary_pos_emb` with `mrope_section * 2` over the whole head),
/// not interleaved as in Qwen3-VL.
pub fn mrope_sectioned_cos_sin(
    positions: &[Vec<i64>; 3],
    head_dim: usize,
    theta: f64,
    mrope_section: &[usize],
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    ensure!(
        head_dim > 0 && head_dim.is_multiple_of(2),
        "rotary head size {head_dim} must be a positive even number"
    );
    let half = head_dim / 2;
    ensure!(
        mrope_section.len() == 3 && mrope_section.iter().sum::<usize>() == half,
        "mrope_section {mrope_section:?} must have three entries summing to head_dim / 2 = {half}"
    );
    let seq = positions[0].len();
    ensure!(
        positions.iter().all(|r| r.len() == seq),
        "M-RoPE position rows differ in length: {}, {}, {}",
        positions[0].len(),
        positions[1].len(),
        positions[2].len()
    );
    let inv = inv_freq(head_dim, theta);
    // Which of t/h/w drives each frequency slot.
    let axis: Vec<usize> = mrope_section
        .iter()
        .enumerate()
        .flat_map(|(a, &n)| std::iter::repeat_n(a, n))
        .collect();
    let mut cos = Vec::with_capacity(seq * head_dim);
    let mut sin = Vec::with_capacity(seq * head_dim);
    let rows = positions[0].iter().zip(&positions[1]).zip(&positions[2]);
    for ((&t, &h), &w) in rows {
        let thw = [t, h, w];
        let row: Vec<f32> = (0..half).map(|j| thw[axis[j]] as f32 * inv[j]).collect();
        for _ in 0..2 {
            cos.extend(row.iter().map(|f| f.cos()));
            sin.extend(row.iter().map(|f| f.sin()));
        }
    }
    Ok((
        Tensor::from_vec(cos, (seq, head_dim), device)?,
        Tensor::from_vec(sin, (seq, head_dim), device)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_pick_their_axis() {
        // theta 1 makes every inverse frequency 1: each slot's angle is its axis's position.
        let pos = [vec![5], vec![7], vec![11]];
        let (cos, _) = mrope_sectioned_cos_sin(&pos, 8, 1.0, &[1, 2, 1], &Device::Cpu).unwrap();
        let got: Vec<f32> = cos.flatten_all().unwrap().to_vec1().unwrap();
        let want: Vec<f32> = [5.0f32, 7.0, 7.0, 11.0, 5.0, 7.0, 7.0, 11.0]
            .iter()
            .map(|a| a.cos())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn bad_sections_are_errors() {
        let pos = [vec![0], vec![0], vec![0]];
        assert!(mrope_sectioned_cos_sin(&pos, 8, 1e4, &[1, 1, 1], &Device::Cpu).is_err());
        assert!(mrope_sectioned_cos_sin(&pos, 8, 1e4, &[2, 2], &Device::Cpu).is_err());
        let ragged = [vec![0, 1], vec![0], vec![0]];
        assert!(mrope_sectioned_cos_sin(&ragged, 8, 1e4, &[2, 1, 1], &Device::Cpu).is_err());
    }
}
