//! The Qwen3-VL vision tower: patch embedding (transformers' Conv3d as one matmul),
//! resampled learned position embeddings, 2-D rotary attention blocks, the patch merger
//! and the DeepStack mergers. Weight names mirror `model.visual.*`.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

use super::rope;
use crate::model::config::VisionConfig;
use crate::model::layers::{segmented_rope_attention, LayerNorm, Linear};
use crate::model::ops::{self, Grad};

#[derive(Debug, Clone)]
struct Block {
    norm1: LayerNorm,
    norm2: LayerNorm,
    qkv: Linear,
    proj: Linear,
    fc1: Linear,
    fc2: Linear,
}

/// `Qwen3VLVisionPatchMerger`: groups each merge×merge block of patches into one token.
#[derive(Debug, Clone)]
struct PatchMerger {
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    /// DeepStack mergers normalise after grouping, the main merger before.
    postshuffle_norm: bool,
    merged_dim: usize,
}

impl PatchMerger {
    fn new(
        vb: VarBuilder,
        cfg: &VisionConfig,
        postshuffle_norm: bool,
    ) -> candle_core::Result<Self> {
        let merged_dim = cfg.hidden_size * cfg.spatial_merge_size * cfg.spatial_merge_size;
        let norm_dim = if postshuffle_norm {
            merged_dim
        } else {
            cfg.hidden_size
        };
        Ok(Self {
            norm: LayerNorm::new(vb.pp("norm"), norm_dim, 1e-6)?,
            fc1: Linear::new(vb.pp("linear_fc1"), merged_dim, merged_dim, true)?,
            fc2: Linear::new(vb.pp("linear_fc2"), merged_dim, cfg.out_hidden_size, true)?,
            postshuffle_norm,
            merged_dim,
        })
    }

    fn forward(&self, x: &Tensor, grad: Grad) -> candle_core::Result<Tensor> {
        let x = if self.postshuffle_norm {
            self.norm
                .forward(&x.reshape(((), self.merged_dim))?, grad)?
        } else {
            self.norm.forward(x, grad)?.reshape(((), self.merged_dim))?
        };
        // nn.GELU() in the merger is the exact (erf) GELU.
        self.fc2.forward(&self.fc1.forward(&x)?.gelu_erf()?)
    }
}

/// Output of the vision tower for a batch of images.
#[derive(Debug, Clone)]
pub struct VisionOutput {
    /// Merged image tokens, (tokens, out_hidden), images concatenated in order.
    pub image_embeds: Tensor,
    /// One (tokens, out_hidden) tensor per DeepStack index.
    pub deepstack: Vec<Tensor>,
}

#[derive(Debug, Clone)]
pub struct VisionModel {
    cfg: VisionConfig,
    patch_w: Tensor,
    patch_b: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    merger: PatchMerger,
    deepstack_mergers: Vec<PatchMerger>,
    act: candle_nn::Activation,
}

impl VisionModel {
    pub fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let patch_dim = cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size * cfg.patch_size;
        let conv = vb
            .pp("patch_embed.proj")
            .get(
                (
                    h,
                    cfg.in_channels,
                    cfg.temporal_patch_size,
                    cfg.patch_size,
                    cfg.patch_size,
                ),
                "weight",
            )
            .context("vision patch embedding")?;
        // A Conv3d whose stride equals its kernel over one patch is a matmul.
        let patch_w = conv.reshape((h, patch_dim))?;
        let patch_b = vb.pp("patch_embed.proj").get(h, "bias")?;
        let pos_embed = vb
            .pp("pos_embed")
            .get((cfg.num_position_embeddings, h), "weight")?;
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let b = vb.pp(format!("blocks.{i}"));
            blocks.push(Block {
                norm1: LayerNorm::new(b.pp("norm1"), h, 1e-6)?,
                norm2: LayerNorm::new(b.pp("norm2"), h, 1e-6)?,
                qkv: Linear::new(b.pp("attn.qkv"), h, 3 * h, true)?,
                proj: Linear::new(b.pp("attn.proj"), h, h, true)?,
                fc1: Linear::new(b.pp("mlp.linear_fc1"), h, cfg.intermediate_size, true)?,
                fc2: Linear::new(b.pp("mlp.linear_fc2"), cfg.intermediate_size, h, true)?,
            });
        }
        let merger = PatchMerger::new(vb.pp("merger"), cfg, false)?;
        let deepstack_mergers = (0..cfg.deepstack_visual_indexes.len())
            .map(|j| PatchMerger::new(vb.pp(format!("deepstack_merger_list.{j}")), cfg, true))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            patch_w,
            patch_b,
            pos_embed,
            blocks,
            merger,
            deepstack_mergers,
            act: cfg.hidden_act,
        })
    }

    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// Every tensor of the tower with its checkpoint name relative to `model.visual.`, for
    /// the trainer to swap in trainable copies. The patch embedding is held as the 2-D
    /// matrix (hidden, C·T·P·P); [`VisionModel::patch_weight_shape`] gives its stored shape.
    pub fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        fn linear<'a>(out: &mut Vec<(String, &'a mut Tensor)>, name: &str, l: &'a mut Linear) {
            out.push((format!("{name}.weight"), &mut l.weight));
            if let Some(b) = l.bias.as_mut() {
                out.push((format!("{name}.bias"), b));
            }
        }
        fn norm<'a>(out: &mut Vec<(String, &'a mut Tensor)>, name: &str, n: &'a mut LayerNorm) {
            out.push((format!("{name}.weight"), &mut n.weight));
            out.push((format!("{name}.bias"), &mut n.bias));
        }
        fn merger<'a>(out: &mut Vec<(String, &'a mut Tensor)>, name: &str, m: &'a mut PatchMerger) {
            norm(out, &format!("{name}.norm"), &mut m.norm);
            linear(out, &format!("{name}.linear_fc1"), &mut m.fc1);
            linear(out, &format!("{name}.linear_fc2"), &mut m.fc2);
        }
        let mut out = vec![
            ("patch_embed.proj.weight".to_string(), &mut self.patch_w),
            ("patch_embed.proj.bias".to_string(), &mut self.patch_b),
            ("pos_embed.weight".to_string(), &mut self.pos_embed),
        ];
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let p = format!("blocks.{i}");
            norm(&mut out, &format!("{p}.norm1"), &mut b.norm1);
            norm(&mut out, &format!("{p}.norm2"), &mut b.norm2);
            linear(&mut out, &format!("{p}.attn.qkv"), &mut b.qkv);
            linear(&mut out, &format!("{p}.attn.proj"), &mut b.proj);
            linear(&mut out, &format!("{p}.mlp.linear_fc1"), &mut b.fc1);
            linear(&mut out, &format!("{p}.mlp.linear_fc2"), &mut b.fc2);
        }
        merger(&mut out, "merger", &mut self.merger);
        for (j, m) in self.deepstack_mergers.iter_mut().enumerate() {
            merger(&mut out, &format!("deepstack_merger_list.{j}"), m);
        }
        out
    }

    /// The Conv3d weight's shape in a checkpoint: (hidden, C, T, P, P).
    pub fn patch_weight_shape(&self) -> Vec<usize> {
        let c = &self.cfg;
        vec![
            c.hidden_size,
            c.in_channels,
            c.temporal_patch_size,
            c.patch_size,
            c.patch_size,
        ]
    }

    /// Resampled learned position embeddings for every patch, (patches, hidden).
    fn position_embeddings(&self, grid_thw: &[[usize; 3]], device: &Device) -> Result<Tensor> {
        let side = (self.cfg.num_position_embeddings as f64).sqrt() as usize;
        let (idx, wts) =
            rope::vision_pos_interpolation(grid_thw, self.cfg.spatial_merge_size, side);
        let n = idx.len();
        let mut acc: Option<Tensor> = None;
        for tap in 0..4 {
            let ids: Vec<u32> = idx.iter().map(|i| i[tap]).collect();
            let w: Vec<f32> = wts.iter().map(|w| w[tap]).collect();
            let rows = self
                .pos_embed
                .index_select(&Tensor::from_vec(ids, n, device)?, 0)?;
            // transformers rounds the tap weights to the table's dtype and sums in it.
            let w = Tensor::from_vec(w, (n, 1), device)?.to_dtype(rows.dtype())?;
            let term = rows.broadcast_mul(&w)?;
            acc = Some(match acc {
                None => term,
                Some(a) => (a + term)?,
            });
        }
        Ok(acc.expect("four taps"))
    }

    /// Runs the tower on `pixel_values` (patches, C*T*P*P) for images with `grid_thw`.
    pub fn forward(
        &self,
        pixel_values: &Tensor,
        grid_thw: &[[usize; 3]],
        grad: Grad,
    ) -> Result<VisionOutput> {
        let device = pixel_values.device();
        let n: usize = grid_thw.iter().map(|g| g[0] * g[1] * g[2]).sum();
        let (rows, cols) = pixel_values.dims2()?;
        let patch_dim = self.patch_w.dim(1)?;
        anyhow::ensure!(
            cols == patch_dim,
            "pixel_values rows hold {cols} values but the vision tower expects {patch_dim} \
             (preprocessor_config.json and config.json disagree on patch or temporal patch size)"
        );
        anyhow::ensure!(
            rows == n,
            "pixel_values has {rows} patches but image_grid_thw describes {n}"
        );
        let pixel_values = pixel_values.to_dtype(self.patch_w.dtype())?;
        let mut x = ops::linear(&pixel_values, &self.patch_w, Some(&self.patch_b))?;
        x = (x + self.position_embeddings(grid_thw, device)?)?;
        let head_dim = self.cfg.hidden_size / self.cfg.num_heads;
        let (cos, sin) = rope::vision_cos_sin(
            grid_thw,
            self.cfg.spatial_merge_size,
            head_dim,
            self.cfg.rope_theta,
            device,
        )?;
        // Attention runs within each frame of each image.
        let mut segments = Vec::new();
        let mut start = 0;
        for &[t, h, w] in grid_thw {
            for _ in 0..t {
                segments.push((start, h * w));
                start += h * w;
            }
        }
        let mut deepstack = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            x = self.block_forward(block, &x, &cos, &sin, &segments, grad)?;
            if let Some(j) = self
                .cfg
                .deepstack_visual_indexes
                .iter()
                .position(|&d| d == i)
            {
                deepstack.push(self.deepstack_mergers[j].forward(&x, grad)?);
            }
        }
        let image_embeds = self.merger.forward(&x, grad)?;
        Ok(VisionOutput {
            image_embeds,
            deepstack,
        })
    }

    fn block_forward(
        &self,
        b: &Block,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        segments: &[(usize, usize)],
        grad: Grad,
    ) -> Result<Tensor> {
        let h = b.norm1.forward(x, grad)?;
        let attn = segmented_rope_attention(
            &b.qkv.forward(&h)?,
            self.cfg.num_heads,
            cos,
            sin,
            segments,
            grad,
        )?;
        let x = (x + b.proj.forward(&attn)?)?;
        let h = b.norm2.forward(&x, grad)?;
        let a = b.fc1.forward(&h)?;
        let a = if self.act == candle_nn::Activation::GeluPytorchTanh {
            ops::gelu_tanh(&a)?
        } else {
            a.apply(&self.act)?
        };
        let m = b.fc2.forward(&a)?;
        Ok((x + m)?)
    }
}
