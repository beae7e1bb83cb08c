//! Where a model runs and in what precision: the `--device auto|cpu|cuda|cuda:N` and
//! `--dtype auto|bf16|f32` choices of every command that runs a model, resolved into a
//! candle [`Device`] and [`DType`].
//!
//! One candle device per GPU per process: candle refuses to mix tensors of two `Device`
//! values even when both name the same GPU, so every stage of a run (the similarity pass,
//! three evaluations, ...) must get the same one.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use anyhow::{bail, Result};
use candle_core::{DType, Device};

/// The backends this binary was built with, for `--version` and error messages.
pub const BACKENDS: &str = if cfg!(feature = "cuda") {
    "cpu, cuda"
} else {
    "cpu"
};

/// `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first GPU when the binary has CUDA and one is visible, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// A GPU by its CUDA ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(format!(
                    "'{s}' is not a device: expected auto, cpu, cuda or cuda:N (N = 0, 1, ...)"
                )),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// `--dtype` (any case; torch's names bfloat16, float32 and fp32 too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DTypeChoice {
    /// bf16 on a GPU, f32 on the CPU.
    #[default]
    Auto,
    #[value(alias = "bfloat16")]
    Bf16,
    #[value(aliases = ["float32", "fp32"])]
    F32,
}

/// A resolved device and compute dtype.
#[derive(Debug, Clone)]
pub struct Placement {
    pub device: Device,
    pub dtype: DType,
}

impl Placement {
    /// The CPU in f32 (what every command did before `--device` existed).
    pub fn cpu() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
        }
    }

    pub fn is_gpu(&self) -> bool {
        self.device.is_cuda()
    }

    /// "cpu, f32" / "cuda:0, bf16", for logs and reports.
    pub fn describe(&self) -> String {
        let device = match self.device.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
            candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        };
        format!("{device}, {}", dtype_name(self.dtype))
    }
}

pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        DType::F32 => "f32",
        DType::F64 => "f64",
        _ => "other",
    }
}

/// Resolves `--device` and `--dtype`. `auto` falls back to the CPU, with a note on stderr
/// when this binary has CUDA but no GPU could be opened; an explicit `cuda` that cannot be
/// honoured is an error naming why.
pub fn resolve(device: DeviceChoice, dtype: DTypeChoice) -> Result<Placement> {
    let device = match device {
        DeviceChoice::Cpu => Device::Cpu,
        DeviceChoice::Cuda(n) => {
            open_cuda(n).map_err(|e| anyhow::anyhow!("--device {}: {e}", DeviceChoice::Cuda(n)))?
        }
        DeviceChoice::Auto => {
            if cfg!(feature = "cuda") {
                match open_cuda(0) {
                    Ok(d) => d,
                    Err(e) => {
                        static NOTED: std::sync::Once = std::sync::Once::new();
                        NOTED.call_once(|| {
                            eprintln!(
                                "note: --device auto: no usable GPU ({e}); running on the CPU"
                            )
                        });
                        Device::Cpu
                    }
                }
            } else {
                Device::Cpu
            }
        }
    };
    let dtype = match dtype {
        DTypeChoice::Auto if device.is_cuda() => DType::BF16,
        DTypeChoice::Auto | DTypeChoice::F32 => DType::F32,
        DTypeChoice::Bf16 => DType::BF16,
    };
    Ok(Placement { device, dtype })
}

/// Opened GPUs by ordinal, so that every caller gets the same candle device.
static CUDA_DEVICES: Mutex<Vec<(usize, Device)>> = Mutex::new(Vec::new());

fn open_cuda(ordinal: usize) -> Result<Device> {
    if !cfg!(feature = "cuda") {
        bail!(
            "this interlace was built without CUDA (backends: {BACKENDS}); build the GPU binary with scripts/build-cuda.sh"
        );
    }
    let mut opened = CUDA_DEVICES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, d)) = opened.iter().find(|(n, _)| *n == ordinal) {
        return Ok(d.clone());
    }
    // cudarc panics (rather than erring) in a few corners of a broken installation; a
    // user should see one line either way.
    let result = std::panic::catch_unwind(|| Device::new_cuda(ordinal));
    let device = match result {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => bail!(
            "cannot open GPU {ordinal}: {}",
            e.to_string().lines().next().unwrap_or("unknown error")
        ),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("the CUDA libraries failed to load");
            bail!(
                "cannot open GPU {ordinal}: {}",
                msg.lines().next().unwrap_or("")
            )
        }
    };
    opened.push((ordinal, device.clone()));
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_choices_parse() {
        assert_eq!("auto".parse::<DeviceChoice>(), Ok(DeviceChoice::Auto));
        assert_eq!("CPU".parse::<DeviceChoice>(), Ok(DeviceChoice::Cpu));
        assert_eq!("cuda".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(3)));
        for bad in ["cuda:", "cuda:x", "tpu", "cuda:-1", ""] {
            assert!(bad.parse::<DeviceChoice>().is_err(), "{bad}");
        }
        assert_eq!(DeviceChoice::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn dtype_choices_parse() {
        use clap::ValueEnum;
        let parse = |s: &str| DTypeChoice::from_str(s, true);
        assert_eq!(parse("bf16"), Ok(DTypeChoice::Bf16));
        assert_eq!(parse("bfloat16"), Ok(DTypeChoice::Bf16));
        assert_eq!(parse("F32"), Ok(DTypeChoice::F32));
        assert_eq!(parse("fp32"), Ok(DTypeChoice::F32));
        assert_eq!(parse("auto"), Ok(DTypeChoice::Auto));
        assert!(parse("f16").is_err());
    }

    #[test]
    fn cpu_resolution_follows_the_dtype_rules() {
        let p = resolve(DeviceChoice::Cpu, DTypeChoice::Auto).unwrap();
        assert!(p.device.is_cpu() && p.dtype == DType::F32);
        let p = resolve(DeviceChoice::Cpu, DTypeChoice::Bf16).unwrap();
        assert!(p.device.is_cpu() && p.dtype == DType::BF16);
        assert_eq!(p.describe(), "cpu, bf16");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_on_a_cpu_build_is_a_clear_error() {
        let e = resolve(DeviceChoice::Cuda(0), DTypeChoice::Auto).unwrap_err();
        let msg = crate::error_line(&e);
        assert!(msg.starts_with("--device cuda:0: this interlace was built without CUDA"));
        // auto quietly means the CPU.
        let p = resolve(DeviceChoice::Auto, DTypeChoice::Auto).unwrap();
        assert!(p.device.is_cpu() && p.dtype == DType::F32);
    }
}
