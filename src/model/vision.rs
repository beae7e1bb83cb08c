//! The vision towers behind one face: Qwen3-VL's (with DeepStack) and Qwen2-VL's /
//! Qwen2.5-VL's (windowed in 2.5). The model calls them through [`VisionTower`] and
//! configures them through [`VisionSpec`].

use anyhow::Result;
use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::config::VisionConfig;
use super::ops::Grad;
use super::qwen2_vl::vision::{Qwen2VisionConfig, Qwen2VisionModel};
use super::qwen3_vl::vision::{VisionModel, VisionOutput};

/// A multimodal family's `vision_config`.
#[derive(Debug, Clone, PartialEq)]
pub enum VisionSpec {
    Qwen3Vl(VisionConfig),
    /// Qwen2-VL or Qwen2.5-VL (the config says which).
    Qwen2Vl(Qwen2VisionConfig),
}

impl VisionSpec {
    /// Patches merged into one token per side.
    pub fn spatial_merge_size(&self) -> usize {
        match self {
            VisionSpec::Qwen3Vl(c) => c.spatial_merge_size,
            VisionSpec::Qwen2Vl(c) => c.spatial_merge_size,
        }
    }

    /// Width of the image tokens handed to the decoder.
    pub fn out_hidden_size(&self) -> usize {
        match self {
            VisionSpec::Qwen3Vl(c) => c.out_hidden_size,
            VisionSpec::Qwen2Vl(c) => c.out_hidden_size,
        }
    }

    /// Qwen3-VL's settings, when this is Qwen3-VL's tower.
    pub fn qwen3_vl(&self) -> Option<&VisionConfig> {
        match self {
            VisionSpec::Qwen3Vl(c) => Some(c),
            VisionSpec::Qwen2Vl(_) => None,
        }
    }

    /// (blocks, width, heads, MLP width, patch, temporal patch), for `inspect`.
    pub fn summary(&self) -> (usize, usize, usize, usize, usize, usize) {
        match self {
            VisionSpec::Qwen3Vl(c) => (
                c.depth,
                c.hidden_size,
                c.num_heads,
                c.intermediate_size,
                c.patch_size,
                c.temporal_patch_size,
            ),
            VisionSpec::Qwen2Vl(c) => (
                c.depth,
                c.hidden_size,
                c.num_heads,
                c.intermediate_size,
                c.patch_size,
                c.temporal_patch_size,
            ),
        }
    }
}

/// A loaded vision tower.
#[derive(Debug, Clone)]
pub enum VisionTower {
    Qwen3Vl(VisionModel),
    Qwen2Vl(Qwen2VisionModel),
}

impl VisionTower {
    /// Builds the tower of `spec` from `vb`, already pointed at the tower's prefix.
    pub fn new(spec: &VisionSpec, vb: VarBuilder) -> Result<Self> {
        Ok(match spec {
            VisionSpec::Qwen3Vl(c) => VisionTower::Qwen3Vl(VisionModel::new(c, vb)?),
            VisionSpec::Qwen2Vl(c) => VisionTower::Qwen2Vl(Qwen2VisionModel::new(c, vb)?),
        })
    }

    /// Image tokens (and Qwen3-VL's DeepStack features; none for Qwen2-VL).
    pub fn forward(
        &self,
        pixel_values: &Tensor,
        grid_thw: &[[usize; 3]],
        grad: Grad,
    ) -> Result<VisionOutput> {
        match self {
            VisionTower::Qwen3Vl(v) => v.forward(pixel_values, grid_thw, grad),
            VisionTower::Qwen2Vl(v) => Ok(VisionOutput {
                image_embeds: v.forward(pixel_values, grid_thw, grad)?,
                deepstack: Vec::new(),
            }),
        }
    }

    /// Every tensor with its name relative to the tower's prefix.
    pub fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        match self {
            VisionTower::Qwen3Vl(v) => v.params_mut(),
            VisionTower::Qwen2Vl(v) => v.params_mut(),
        }
    }

    /// The checkpoint's (Conv3d) shape of the patch embedding the tower holds as a matrix.
    pub fn patch_weight_shape(&self) -> Vec<usize> {
        match self {
            VisionTower::Qwen3Vl(v) => v.patch_weight_shape(),
            VisionTower::Qwen2Vl(v) => v.patch_weight_shape(),
        }
    }
}
