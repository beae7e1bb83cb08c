//! Models: configuration, checkpoint I/O, shared layers and the Qwen3-VL implementation.

pub mod config;
#[cfg(feature = "cuda")]
pub(crate) mod cuda_kernels;
pub mod device;
pub mod dir;
pub mod fastmath;
pub mod layers;
pub mod ops;
pub mod qwen2_vl;
pub mod qwen3_vl;
pub mod weights;

pub use config::Qwen3VlConfig;
pub use qwen3_vl::{
    CollectHidden, Embedded, Flow, KvSlot, LayerObserver, ModelInputs, Qwen3VlModel,
};
