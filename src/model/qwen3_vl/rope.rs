//! Positions: the 3-D M-RoPE position ids of the decoder (transformers' `get_rope_index`),
//! the vision tower's 2-D rotary tables and the bilinear resampling of its learned position
//! embeddings. The decoder's rotary tables are [`crate::model::rope`]'s.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

/// Token modality as transformers' `mm_token_type_ids`: 0 text, 1 image, 2 video.
pub const TOKEN_TEXT: u8 = 0;
pub const TOKEN_IMAGE: u8 = 1;
pub const TOKEN_VIDEO: u8 = 2;

/// 3-D positions (t, h, w) for every token, and the rope delta used when decoding
/// (`max position + 1 - sequence length`).
#[derive(Debug, Clone, PartialEq)]
pub struct RopeIndex {
    /// Three rows (temporal, height, width), one entry per token.
    pub positions: [Vec<i64>; 3],
    pub delta: i64,
}

/// transformers' `Qwen3VLModel.get_rope_index` for one unpadded sequence of images and text.
/// Runs of text tokens count up in all three rows; a run of image tokens is laid out on its
/// merged grid, offset by the position reached so far, and advances it by max(h, w).
pub fn get_rope_index(
    mm_token_type_ids: &[u8],
    image_grid_thw: &[[usize; 3]],
    spatial_merge_size: usize,
) -> Result<RopeIndex> {
    let n = mm_token_type_ids.len();
    let mut pos: [Vec<i64>; 3] = [
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    ];
    let mut grids = image_grid_thw.iter();
    let mut current: i64 = 0;
    let mut start = 0;
    while start < n {
        let kind = mm_token_type_ids[start];
        let mut end = start;
        while end < n && mm_token_type_ids[end] == kind {
            end += 1;
        }
        match kind {
            TOKEN_TEXT => {
                for i in 0..(end - start) as i64 {
                    for row in pos.iter_mut() {
                        row.push(current + i);
                    }
                }
                current += (end - start) as i64;
            }
            TOKEN_IMAGE => {
                let Some(&[t, h, w]) = grids.next() else {
                    bail!("more image token runs than images in image_grid_thw");
                };
                let (gh, gw) = (h / spatial_merge_size, w / spatial_merge_size);
                if t * gh * gw != end - start {
                    bail!(
                        "an image run has {} tokens but its grid {t}x{h}x{w} needs {}",
                        end - start,
                        t * gh * gw
                    );
                }
                for ti in 0..t {
                    for hi in 0..gh {
                        for wi in 0..gw {
                            pos[0].push(ti as i64 + current);
                            pos[1].push(hi as i64 + current);
                            pos[2].push(wi as i64 + current);
                        }
                    }
                }
                current += (gh.max(gw)) as i64;
            }
            TOKEN_VIDEO => bail!("video inputs are not supported"),
            other => bail!("unknown mm_token_type_id {other}"),
        }
        start = end;
    }
    if grids.next().is_some() {
        bail!("image_grid_thw lists more images than the input has image token runs");
    }
    let max = pos
        .iter()
        .flat_map(|r| r.iter())
        .copied()
        .max()
        .unwrap_or(-1);
    Ok(RopeIndex {
        positions: pos,
        delta: max + 1 - n as i64,
    })
}

pub(crate) use crate::model::rope::inv_freq;

/// (row, col) of every patch in the order the vision tower sees them: frames, then
/// merge blocks in raster order, then the patches of each block in raster order.
pub fn vision_patch_coords(grid_thw: &[[usize; 3]], merge: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for &[t, h, w] in grid_thw {
        for _ in 0..t {
            for bh in 0..h / merge {
                for bw in 0..w / merge {
                    for ih in 0..merge {
                        for iw in 0..merge {
                            out.push((bh * merge + ih, bw * merge + iw));
                        }
                    }
                }
            }
        }
    }
    out
}

/// Vision rotary tables: (patches, head_dim) laid out `cat(h_freqs, w_freqs)` twice.
pub fn vision_cos_sin(
    grid_thw: &[[usize; 3]],
    merge: usize,
    head_dim: usize,
    theta: f64,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    // transformers builds inv_freq over head_dim/2 (one half for rows, one for columns).
    let inv = inv_freq(head_dim / 2, theta);
    let coords = vision_patch_coords(grid_thw, merge);
    let mut cos = Vec::with_capacity(coords.len() * head_dim);
    let mut sin = Vec::with_capacity(coords.len() * head_dim);
    for &(r, c) in &coords {
        let mut row: Vec<f32> = inv.iter().map(|f| r as f32 * f).collect();
        row.extend(inv.iter().map(|f| c as f32 * f));
        for _ in 0..2 {
            cos.extend(row.iter().map(|f| f.cos()));
            sin.extend(row.iter().map(|f| f.sin()));
        }
    }
    let n = coords.len();
    Ok((
        Tensor::from_vec(cos, (n, head_dim), device)?,
        Tensor::from_vec(sin, (n, head_dim), device)?,
    ))
}

/// Bilinear (align_corners=True) resampling of the square `side`x`side` learned position
/// table to every patch: 4 taps per patch as (indices, weights), each (patches, 4),
/// tap order (h0,w0), (h0,w1), (h1,w0), (h1,w1) as transformers sums them.
pub fn vision_pos_interpolation(
    grid_thw: &[[usize; 3]],
    merge: usize,
    side: usize,
) -> (Vec<[u32; 4]>, Vec<[f32; 4]>) {
    let mut idx = Vec::new();
    let mut wts = Vec::new();
    let axis = |i: usize, size: usize| -> ([usize; 2], [f32; 2]) {
        let denom = (size.max(2) - 1) as f32;
        let src = (i as f32 * (side - 1) as f32) / denom;
        let floor = src.floor();
        let mut taps = [0usize; 2];
        let mut w = [0f32; 2];
        for o in 0..2 {
            let raw = floor + o as f32;
            taps[o] = (raw as i64).clamp(0, side as i64 - 1) as usize;
            w[o] = (1.0 - (src - floor - o as f32).abs()).max(0.0);
        }
        (taps, w)
    };
    for &[t, h, w] in grid_thw {
        let coords = vision_patch_coords(&[[1, h, w]], merge);
        for _ in 0..t {
            for &(r, c) in &coords {
                let (ht, hw) = axis(r, h);
                let (wt, ww) = axis(c, w);
                let mut i4 = [0u32; 4];
                let mut w4 = [0f32; 4];
                for a in 0..2 {
                    for b in 0..2 {
                        i4[a * 2 + b] = (ht[a] * side + wt[b]) as u32;
                        w4[a * 2 + b] = hw[a] * ww[b];
                    }
                }
                idx.push(i4);
                wts.push(w4);
            }
        }
    }
    (idx, wts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_only_positions_count_up() {
        let r = get_rope_index(&[0, 0, 0, 0], &[], 2).unwrap();
        assert_eq!(r.positions[0], vec![0, 1, 2, 3]);
        assert_eq!(r.positions[2], vec![0, 1, 2, 3]);
        assert_eq!(r.delta, 0);
    }

    #[test]
    fn image_run_uses_merged_grid() {
        // 2 text, image of grid 1x4x6 (merged 2x3 = 6 tokens), 2 text.
        let types = [0, 0, 1, 1, 1, 1, 1, 1, 0, 0];
        let r = get_rope_index(&types, &[[1, 4, 6]], 2).unwrap();
        assert_eq!(r.positions[0], vec![0, 1, 2, 2, 2, 2, 2, 2, 5, 6]);
        assert_eq!(r.positions[1], vec![0, 1, 2, 2, 2, 3, 3, 3, 5, 6]);
        assert_eq!(r.positions[2], vec![0, 1, 2, 3, 4, 2, 3, 4, 5, 6]);
        assert_eq!(r.delta, 7 - 10);
    }

    #[test]
    fn mismatched_grid_is_an_error() {
        assert!(get_rope_index(&[1, 1, 1], &[[1, 4, 4]], 2).is_err());
        assert!(get_rope_index(&[0, 1], &[], 2).is_err());
        assert!(get_rope_index(&[0], &[[1, 2, 2]], 2).is_err());
    }

    #[test]
    fn bilinear_weights_sum_to_one_and_hit_corners() {
        let (idx, w) = vision_pos_interpolation(&[[1, 4, 6]], 2, 8);
        for wi in &w {
            assert!((wi.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        // The first patch is the top-left corner of the table, exactly.
        assert_eq!(idx[0][0], 0);
        assert_eq!(w[0][0], 1.0);
    }
}
