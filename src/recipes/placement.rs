//! `--device` and `--dtype`, shared by every command that runs a model.

use anyhow::Result;

use crate::model::device::{resolve, DTypeChoice, DeviceChoice, Placement};

#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct DeviceArgs {
    /// Where the model runs: auto (the first GPU when this binary was built with CUDA and
    /// one is visible, else the CPU), cpu, cuda (GPU 0) or cuda:N.
    #[arg(long, default_value = "auto", value_name = "auto|cpu|cuda|cuda:N")]
    pub device: DeviceChoice,
    /// Precision of weights and activations: auto (bf16 on a GPU, f32 on the CPU), bf16
    /// or f32. Norms, softmax, rotary tables and similarity scores are computed in f32
    /// either way, as transformers does.
    #[arg(long, value_enum, ignore_case = true, default_value = "auto")]
    pub dtype: DTypeChoice,
}

impl DeviceArgs {
    pub fn resolve(&self) -> Result<Placement> {
        resolve(self.device, self.dtype)
    }
}
