//! Our CUDA kernels (src/kernels/*.cu, compiled to PTX by build.rs) and how to launch
//! them from the custom ops of `ops.rs`.

use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchArgs, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDevice, CudaStorageSlice as S, WrapErr};
use candle_core::{CudaStorage, Result};
use std::sync::Arc;

#[derive(Clone, Copy)]
pub enum Module {
    Inference,
    Training,
}

const INFERENCE: &str = include_str!(concat!(env!("OUT_DIR"), "/inference.ptx"));
const TRAINING: &str = include_str!(concat!(env!("OUT_DIR"), "/training.ptx"));

/// A kernel and the device's stream it runs on.
pub struct Kernel {
    stream: Arc<CudaStream>,
    func: CudaFunction,
}

impl Kernel {
    /// A launch of the kernel, taking its arguments.
    pub fn builder(&self) -> LaunchArgs<'_> {
        self.stream.launch_builder(&self.func)
    }
}

/// The kernel `name` of `module` (loaded once per device; candle caches it by module name).
pub fn func(dev: &CudaDevice, module: Module, name: &str) -> Result<Kernel> {
    let (key, ptx) = match module {
        Module::Inference => ("interlace_inference", INFERENCE),
        Module::Training => ("interlace_training", TRAINING),
    };
    let func = dev.get_or_load_custom_func(name, key, ptx)?;
    Ok(Kernel {
        stream: dev.cuda_stream(),
        func: func.into_cuda_function(),
    })
}

/// One block per row of `d` values: threads a multiple of the warp size, at most 1024.
pub fn rows_config(rows: usize, d: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (d.next_multiple_of(32).clamp(32, 1024) as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Enough blocks of 256 threads for `n` work items of a grid-stride loop.
pub fn elems_config(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 1 << 20) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launches the kernel whose arguments `args` holds.
///
/// # Safety
/// `args` must hold the kernel's arguments in the order and types of its signature.
pub unsafe fn launch(mut args: LaunchArgs<'_>, cfg: LaunchConfig) -> Result<()> {
    unsafe { args.launch(cfg) }.w()?;
    Ok(())
}

/// An element-wise training kernel, `{kernel}_{type}(inputs..., out, n)` with n the length
/// of the first input, over a grid-stride loop; `out` has `out_len` elements.
///
/// # Safety
/// As [`run`]: the kernel's signature must be one `const T *` per input, `T *out`, `size_t n`.
pub unsafe fn elementwise(
    kernel: &str,
    inputs: &[(&CudaStorage, (usize, usize))],
    out_len: usize,
) -> Result<CudaStorage> {
    let n = inputs.first().map_or(0, |(_, r)| r.1 - r.0);
    let scalars = [Scalar::U64(n as u64)];
    // SAFETY: passed on from the caller.
    unsafe {
        run(
            Module::Training,
            kernel,
            inputs,
            out_len,
            &scalars,
            elems_config(n),
        )
    }
}

/// `body` on a CUDA storage slice of f32, bf16 or f16 (an error for other types), with `s`
/// bound to the typed slice, `T` to its element type, `suffix` to the kernel-name suffix
/// ("f32", "bf16", "f16") and `wrap` to the function that puts a slice of that type back
/// into a storage slice.
macro_rules! per_float_slice {
    ($op:expr, $slice:expr, |$s:ident, $ty:ident, $suffix:ident, $wrap:ident| $body:expr) => {{
        use candle_core::cuda_backend::CudaStorageSlice as Slice;
        match $slice {
            Slice::F32($s) => {
                type $ty = f32;
                let ($suffix, $wrap) = ("f32", Slice::F32 as fn(_) -> Slice);
                $body
            }
            Slice::BF16($s) => {
                type $ty = half::bf16;
                let ($suffix, $wrap) = ("bf16", Slice::BF16 as fn(_) -> Slice);
                $body
            }
            Slice::F16($s) => {
                type $ty = half::f16;
                let ($suffix, $wrap) = ("f16", Slice::F16 as fn(_) -> Slice);
                $body
            }
            _ => candle_core::bail!("{}: f32, bf16 or f16 only", $op),
        }
    }};
}
pub(crate) use per_float_slice;

/// A scalar argument after a kernel's pointers.
pub enum Scalar {
    U32(u32),
    /// A `size_t`.
    U64(u64),
    F32(f32),
}

/// Runs `{kernel}_{f32|bf16|f16}(inputs..., out, scalars...)` for inputs of one float type
/// on one device, each given as its storage and element range, with `out` a fresh buffer of
/// `out_len` elements of that type (the kernel must write every one), and returns `out`.
///
/// # Safety
/// The kernel's signature must be: one `const T *` per input, `T *out`, then the scalars'
/// types in order (`uint32_t`, `size_t`, `float`).
pub unsafe fn run(
    module: Module,
    kernel: &str,
    inputs: &[(&CudaStorage, (usize, usize))],
    out_len: usize,
    scalars: &[Scalar],
    cfg: LaunchConfig,
) -> Result<CudaStorage> {
    unsafe fn typed<T: DeviceRepr>(
        dev: &CudaDevice,
        kernel: &Kernel,
        inputs: &[(&CudaSlice<T>, (usize, usize))],
        out_len: usize,
        scalars: &[Scalar],
        cfg: LaunchConfig,
    ) -> Result<CudaSlice<T>> {
        let views: Vec<_> = inputs.iter().map(|(s, r)| s.slice(r.0..r.1)).collect();
        // SAFETY: the kernel writes every element (the caller's promise).
        let out = unsafe { dev.alloc::<T>(out_len)? };
        let mut args = kernel.builder();
        for v in &views {
            args.arg(v);
        }
        args.arg(&out);
        for s in scalars {
            match s {
                Scalar::U32(v) => args.arg(v),
                Scalar::U64(v) => args.arg(v),
                Scalar::F32(v) => args.arg(v),
            };
        }
        // SAFETY: the arguments in the order of the signature (the caller's promise).
        unsafe { launch(args, cfg) }?;
        Ok(out)
    }
    let Some((first, _)) = inputs.first() else {
        candle_core::bail!("{kernel}: no input");
    };
    let dev = &first.device;
    macro_rules! go {
        ($variant:ident, $suffix:literal) => {{
            let typed_inputs = inputs
                .iter()
                .map(|(st, r)| match &st.slice {
                    S::$variant(s) => Ok((s, *r)),
                    _ => candle_core::bail!("{kernel}: inputs of different types"),
                })
                .collect::<Result<Vec<_>>>()?;
            let k = func(dev, module, &format!("{kernel}_{}", $suffix))?;
            // SAFETY: passed on from the caller.
            S::$variant(unsafe { typed(dev, &k, &typed_inputs, out_len, scalars, cfg) }?)
        }};
    }
    let slice = match &first.slice {
        S::F32(_) => go!(F32, "f32"),
        S::BF16(_) => go!(BF16, "bf16"),
        S::F16(_) => go!(F16, "f16"),
        _ => candle_core::bail!("{kernel}: f32, bf16 or f16 only"),
    };
    Ok(CudaStorage {
        slice,
        device: dev.clone(),
    })
}
