//! `--device`, `--dtype` and `--image-backend`, shared by every command that runs a model
//! (all of them preprocess images).

use anyhow::Result;

use crate::model::device::{resolve, DTypeChoice, DeviceChoice, Placement};
use crate::processor::ImageBackend;

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
    /// Image preprocessing to reproduce bit for bit: transformers' torchvision or PIL image
    /// processor [default: transformers' choice, torchvision].
    ///
    /// torchvision is `Qwen2VLImageProcessor` (torchvision's antialiased bicubic resize),
    /// pil is `Qwen2VLImageProcessorPil` (Pillow's bicubic resize); resized pixels differ by
    /// a few 8-bit levels. transformers 5 loads torchvision for every Qwen-VL checkpoint: it
    /// ignores the `...Fast` / `use_fast` markers of preprocessor_config.json, and only
    /// `backend="pil"` in Python selects pil. Before this option existed interlace always
    /// used pil: pass it to reproduce earlier results or resume earlier runs.
    #[arg(long, value_enum, ignore_case = true, value_name = "torchvision|pil")]
    pub image_backend: Option<ImageBackend>,
}

impl DeviceArgs {
    pub fn resolve(&self) -> Result<Placement> {
        resolve(self.device, self.dtype)
    }

    /// The image backend for a resumable run's fingerprint: None for pil, the only
    /// preprocessing before `--image-backend` existed, so that those runs still resume (with
    /// `--image-backend pil`); a run never resumes with the other backend.
    pub fn image_backend_fingerprint(&self) -> Option<&'static str> {
        let b = self
            .image_backend
            .unwrap_or_else(ImageBackend::transformers_default);
        (b != ImageBackend::Pil).then_some(b.name())
    }
}
