//! Models: configuration, checkpoint I/O, shared layers and the Qwen3-VL implementation.

pub mod config;
#[cfg(feature = "cuda")]
pub(crate) mod cuda_kernels;
pub mod device;
pub mod dir;
pub mod fastmath;
pub mod layers;
pub mod ops;
pub mod qwen3_vl;
pub mod weights;

pub use config::Qwen3VlConfig;
pub use qwen3_vl::{
    CollectHidden, Embedded, Flow, KvSlot, LayerObserver, ModelInputs, Qwen3VlModel,
};

/// Refuses a model path that exists but is not a directory, so that the user reads "not a
/// directory" rather than "DIR/config.json: not found" (a missing path is left to the caller,
/// which names the first file it needed).
pub fn check_model_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!(
            "{}: not a directory (a model is a Hugging Face model directory holding config.json, the *.safetensors weights and tokenizer.json)",
            dir.display()
        );
    }
    Ok(())
}
