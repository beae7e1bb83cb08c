//! Models: one interface ([`Model`]) over every supported family, chosen by `config.json`
//! ([`config::Family`]); configuration, checkpoint I/O, the shared decoder, and each family's
//! own parts (the Qwen3-VL and Qwen2-VL vision towers).

pub mod config;
#[cfg(feature = "cuda")]
pub(crate) mod cuda_kernels;
pub mod decoder;
pub mod device;
pub mod dir;
pub mod fastmath;
pub mod layers;
pub mod lm;
pub mod loss;
pub mod ops;
pub mod qwen2_vl;
pub mod qwen3_vl;
pub mod rope;
pub mod sgemm;
pub(crate) mod train_layer;
pub mod vision;
pub mod weights;

pub use config::{Family, ModelConfig};
pub use lm::{CollectHidden, Embedded, Flow, KvSlot, LayerObserver, Model, ModelInputs};
