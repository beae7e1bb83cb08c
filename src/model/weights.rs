//! Safetensors checkpoints in Hugging Face layout: a single `model.safetensors` or shards
//! listed by `model.safetensors.index.json`, memory-mapped, converted to the compute dtype
//! as each tensor is read.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

/// Name, dtype and shape of one stored tensor, read from the safetensors headers only.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    pub file: PathBuf,
    /// Byte range of the tensor's data in `file`.
    pub offset: usize,
    pub len: usize,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The safetensors files of a checkpoint directory, in shard order.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    crate::hub::check_model_dir(dir)?;
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index)
            .with_context(|| format!("{}: cannot read", index.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", index.display()))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .with_context(|| format!("{}: missing weight_map", index.display()))?;
        let names: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
        if names.is_empty() {
            bail!("{}: weight_map lists no files", index.display());
        }
        let files: Vec<PathBuf> = names.into_iter().map(|n| dir.join(n)).collect();
        for f in &files {
            if !f.exists() {
                bail!(
                    "{}: shard listed in {} is missing",
                    f.display(),
                    index.display()
                );
            }
        }
        return Ok(files);
    }
    bail!(
        "{}: no model.safetensors or model.safetensors.index.json found",
        dir.display()
    )
}

/// Memory-maps a safetensors file read-only.
pub fn map_file(file: &Path) -> Result<memmap2::Mmap> {
    let f =
        std::fs::File::open(file).with_context(|| format!("{}: cannot open", file.display()))?;
    // SAFETY: the file is opened read-only; like every mmap user we assume nobody
    // truncates it while we read.
    unsafe { memmap2::Mmap::map(&f) }
        .with_context(|| format!("{}: cannot memory-map", file.display()))
}

/// Parses a mapped safetensors file, naming the file on truncation or corruption.
pub fn parse<'a>(file: &Path, bytes: &'a [u8]) -> Result<safetensors::SafeTensors<'a>> {
    safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: truncated or corrupt safetensors file ({e})",
            file.display()
        )
    })
}

/// Reads every file's header, failing with the file's name on truncation or corruption.
pub fn read_tensor_infos(files: &[PathBuf]) -> Result<Vec<TensorInfo>> {
    let mut out = Vec::new();
    for file in files {
        let mmap = map_file(file)?;
        let st = parse(file, &mmap)?;
        for (name, view) in st.tensors() {
            let data = view.data();
            out.push(TensorInfo {
                name,
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                file: file.clone(),
                offset: data.as_ptr() as usize - mmap.as_ptr() as usize,
                len: data.len(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Which stored tensors to lay out for the forward product as they are read (see
/// [`var_builder_laid_out`]), by checkpoint name.
pub type LayOut = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Memory-maps the checkpoint and returns a VarBuilder that converts to `dtype` on read.
pub fn var_builder(
    dir: &Path,
    dtype: DType,
    device: &Device,
) -> Result<(VarBuilder<'static>, Vec<TensorInfo>)> {
    var_builder_laid_out(dir, dtype, device, None)
}

/// [`var_builder`], with the 2-D weights whose names pass `lay_out` (on the CPU; position
/// embeddings excepted) stored as the transpose of an (in, out)-contiguous matrix, as
/// [`crate::model::lm::Model::lay_out_for_forward`] would leave them, but converted and
/// transposed straight from the file's bytes in one pass. (Converting first and transposing
/// afterwards allocated every large weight twice; on a 2B-shaped model in f32 the kernel's
/// zeroing of those fresh pages was half of a 28-50 s load.)
pub fn var_builder_laid_out(
    dir: &Path,
    dtype: DType,
    device: &Device,
    lay_out: Option<LayOut>,
) -> Result<(VarBuilder<'static>, Vec<TensorInfo>)> {
    let files = weight_files(dir)?;
    let infos = read_tensor_infos(&files)?;
    for info in &infos {
        match info.dtype {
            safetensors::Dtype::F32 | safetensors::Dtype::BF16 | safetensors::Dtype::F16 => {}
            other => bail!(
                "{}: tensor {} has dtype {other:?}; only f32, bf16 and f16 weights are supported",
                info.file.display(),
                info.name
            ),
        }
    }
    let backend = FileBackend {
        tensors: infos.iter().map(|i| (i.name.clone(), i.clone())).collect(),
        lay_out,
    };
    let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
    Ok((vb, infos))
}

/// Reads each tensor from its file when asked for it. Unlike a memory map kept for the
/// whole load, the file's pages never count towards the process's memory, so loading
/// needs the converted weights' memory only, not twice the checkpoint's size.
struct FileBackend {
    tensors: std::collections::HashMap<String, TensorInfo>,
    lay_out: Option<LayOut>,
}

impl FileBackend {
    fn read(
        &self,
        name: &str,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        use std::os::unix::fs::FileExt;
        let info = self.tensors.get(name).ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }
            .bt()
        })?;
        let mut bytes = vec![0u8; info.len];
        std::fs::File::open(&info.file)
            .and_then(|f| f.read_exact_at(&mut bytes, info.offset as u64))
            .map_err(|e| {
                candle_core::Error::Msg(format!("{}: cannot read {name}: {e}", info.file.display()))
            })?;
        let stored = match info.dtype {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F16 => DType::F16,
            other => candle_core::bail!("{name}: unsupported dtype {other:?}"),
        };
        let lay_out = dev.is_cpu()
            && info.shape.len() == 2
            && !name.ends_with("pos_embed.weight")
            && self.lay_out.as_ref().is_some_and(|f| f(name));
        // A linear weight in f32 on a CPU that runs `sgemm` is stored as its panels (the
        // token embeddings too: as the tied LM head they are a linear weight, and their rows
        // are gathered from the panels).
        if lay_out
            && dtype == DType::F32
            && super::sgemm::available()
            && super::sgemm::packable(info.shape[0])
        {
            if let Some(t) = decode_panels(&bytes, stored, (info.shape[0], info.shape[1]), dev)? {
                return Ok(t);
            }
        }
        if let Some(t) = decode(&bytes, stored, dtype, &info.shape, lay_out, dev)? {
            return Ok(t);
        }
        candle_core::Tensor::from_raw_buffer(&bytes, stored, &info.shape, dev)?.to_dtype(dtype)
    }
}

/// `bytes` as `len` elements of N bytes each, or an error naming both counts.
fn chunks<const N: usize>(bytes: &[u8], len: usize) -> candle_core::Result<&[[u8; N]]> {
    let (src, rest) = bytes.as_chunks::<N>();
    if !rest.is_empty() || src.len() != len {
        candle_core::bail!("stored tensor of {} bytes for {len} elements", bytes.len());
    }
    Ok(src)
}

/// A weight (n, k) in f32 as [`super::sgemm`]'s panels, from its stored bytes: a 3-D tensor
/// (n/32, 32, k) whose values are the weight's rows in order (w.reshape(n/32, 32, k)) and
/// whose storage is the panels (strides (32k, 1, 32)); [`super::ops::linear`] multiplies
/// by it in place. None: a stored type this does not convert exactly.
pub fn decode_panels(
    bytes: &[u8],
    stored: DType,
    (n, k): (usize, usize),
    dev: &Device,
) -> candle_core::Result<Option<candle_core::Tensor>> {
    use super::sgemm::{pack_panels, PANEL};
    use half::{bf16, f16};
    let (v, offset) = match stored {
        DType::F32 => pack_panels(chunks::<4>(bytes, n * k)?, (n, k), f32::from_le_bytes),
        DType::BF16 => pack_panels(chunks::<2>(bytes, n * k)?, (n, k), |b| {
            bf16::from_le_bytes(b).to_f32()
        }),
        DType::F16 => pack_panels(chunks::<2>(bytes, n * k)?, (n, k), |b| {
            f16::from_le_bytes(b).to_f32()
        }),
        _ => return Ok(None),
    };
    // The panels start `offset` floats into the vector (a 64-byte boundary): the tensor is
    // a view from there.
    let len = v.len();
    Ok(Some(
        candle_core::Tensor::from_vec(v, len, dev)?
            .narrow(0, offset, n * k)?
            .reshape((n / PANEL, k, PANEL))?
            .transpose(1, 2)?,
    ))
}

/// The tensor `shape` of `dtype` from its stored little-endian bytes, in one pass and one
/// allocation, when the conversion is exact (to f32 from any stored float type, or to the
/// stored type itself) and the device is the CPU; `lay_out`: 2-D, stored as the transpose of
/// an (in, out)-contiguous matrix. None: the caller converts through candle.
fn decode(
    bytes: &[u8],
    stored: DType,
    dtype: DType,
    shape: &[usize],
    lay_out: bool,
    dev: &Device,
) -> candle_core::Result<Option<candle_core::Tensor>> {
    use half::{bf16, f16};
    fn build<const N: usize, T: candle_core::WithDType + Default>(
        bytes: &[u8],
        shape: &[usize],
        lay_out: bool,
        dev: &Device,
        f: impl Fn([u8; N]) -> T + Sync,
    ) -> candle_core::Result<candle_core::Tensor> {
        let src = chunks::<N>(bytes, shape.iter().product())?;
        if lay_out {
            let (rows, cols) = (shape[0], shape[1]);
            let v = super::fastmath::transpose_map(src, rows, cols, f);
            candle_core::Tensor::from_vec(v, (cols, rows), dev)?.t()
        } else {
            let v: Vec<T> = src.iter().map(|&b| f(b)).collect();
            candle_core::Tensor::from_vec(v, shape, dev)
        }
    }
    if !dev.is_cpu() {
        return Ok(None);
    }
    Ok(Some(match (stored, dtype) {
        (DType::F32, DType::F32) if lay_out => {
            let src = chunks::<4>(bytes, shape.iter().product())?;
            let (rows, cols) = (shape[0], shape[1]);
            let v = super::fastmath::transpose_le_f32(src, rows, cols);
            candle_core::Tensor::from_vec(v, (cols, rows), dev)?.t()?
        }
        (DType::F32, DType::F32) => build(bytes, shape, lay_out, dev, f32::from_le_bytes)?,
        (DType::BF16, DType::F32) => build(bytes, shape, lay_out, dev, |b| {
            bf16::from_le_bytes(b).to_f32()
        })?,
        (DType::F16, DType::F32) => build(bytes, shape, lay_out, dev, |b| {
            f16::from_le_bytes(b).to_f32()
        })?,
        (DType::BF16, DType::BF16) => build(bytes, shape, lay_out, dev, bf16::from_le_bytes)?,
        (DType::F16, DType::F16) => build(bytes, shape, lay_out, dev, f16::from_le_bytes)?,
        _ => return Ok(None),
    }))
}

impl candle_nn::var_builder::SimpleBackend for FileBackend {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        let t = self.read(name, dtype, dev)?;
        // A weight stored as panels has the (n/32, 32, k) shape of the same values.
        let panels = t.rank() == 3 && s.dims() == [t.dim(0)? * t.dim(1)?, t.dim(2)?];
        if t.shape() != &s && !panels {
            Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: t.shape().clone(),
            }
            .bt())?
        }
        Ok(t)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        self.read(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// The dtype most of the stored floating-point parameters use, for display.
pub fn dominant_dtype(infos: &[TensorInfo]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in infos {
        *counts.entry(format!("{:?}", i.dtype)).or_default() += i.numel();
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(d, _)| d.to_lowercase())
        .unwrap_or_else(|| "none".into())
}

/// A tensor to write: straight from a source file's memory map, or new data.
pub enum OutTensor<'a> {
    Mapped(safetensors::tensor::TensorView<'a>),
    Owned {
        dtype: safetensors::Dtype,
        shape: Vec<usize>,
        data: Vec<u8>,
    },
}

impl safetensors::View for &OutTensor<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        match self {
            OutTensor::Mapped(v) => v.dtype(),
            OutTensor::Owned { dtype, .. } => *dtype,
        }
    }
    fn shape(&self) -> &[usize] {
        match self {
            OutTensor::Mapped(v) => v.shape(),
            OutTensor::Owned { shape, .. } => shape,
        }
    }
    fn data(&self) -> Cow<'_, [u8]> {
        match self {
            OutTensor::Mapped(v) => Cow::Borrowed(v.data()),
            OutTensor::Owned { data, .. } => Cow::Borrowed(data),
        }
    }
    fn data_len(&self) -> usize {
        match self {
            OutTensor::Mapped(v) => v.data().len(),
            OutTensor::Owned { data, .. } => data.len(),
        }
    }
}

/// `t` as bytes of the safetensors dtype `dtype` (the dtype the source stored).
pub fn tensor_bytes(t: &candle_core::Tensor, dtype: safetensors::Dtype) -> Result<Vec<u8>> {
    use candle_core::DType;
    let t = t.flatten_all()?;
    Ok(match dtype {
        safetensors::Dtype::F32 => t
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        safetensors::Dtype::BF16 => t
            .to_dtype(DType::BF16)?
            .to_vec1::<half::bf16>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        safetensors::Dtype::F16 => t
            .to_dtype(DType::F16)?
            .to_vec1::<half::f16>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        other => bail!("cannot write a trained tensor as {other:?}"),
    })
}

/// Writes `tensors` (any dtype candle holds, stored as f32 unless bf16/f16) to one
/// safetensors file with `{"format": "pt"}` metadata, names sorted.
pub fn save_tensors(
    path: &Path,
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
) -> Result<()> {
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dtype = match t.dtype() {
            candle_core::DType::BF16 => safetensors::Dtype::BF16,
            candle_core::DType::F16 => safetensors::Dtype::F16,
            _ => safetensors::Dtype::F32,
        };
        owned.push((
            name.clone(),
            OutTensor::Owned {
                dtype,
                shape: t.dims().to_vec(),
                data: tensor_bytes(t, dtype)?,
            },
        ));
    }
    owned.sort_by(|a, b| a.0.cmp(&b.0));
    let refs: Vec<(&String, &OutTensor)> = owned.iter().map(|(n, v)| (n, v)).collect();
    let metadata = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "pt".to_string(),
    )]));
    safetensors::serialize_to_file(refs, metadata, path)
        .map_err(|e| anyhow::anyhow!("{}: cannot write ({e})", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    /// Stored bytes decoded in one pass equal candle's own conversion (exact: every
    /// conversion taken is a widening or the identity), and laid out they are the same
    /// values in the transposed storage; conversions that round are left to candle.
    #[test]
    fn decoding_stored_bytes_equals_candles_conversion() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (rows, cols) = (19, 37);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i as f32) * 0.37 - 100.0) * if i % 3 == 0 { 1e-3 } else { 1.0 })
            .collect();
        let stored: [(DType, Vec<u8>); 3] = [
            (
                DType::F32,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            (
                DType::BF16,
                values
                    .iter()
                    .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
                    .collect(),
            ),
            (
                DType::F16,
                values
                    .iter()
                    .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                    .collect(),
            ),
        ];
        let mut decoded = 0;
        for (from, bytes) in &stored {
            for to in [DType::F32, DType::BF16, DType::F16] {
                let want = candle_core::Tensor::from_raw_buffer(bytes, *from, &[rows, cols], &dev)?
                    .to_dtype(to)?;
                for lay_out in [false, true] {
                    let got = decode(bytes, *from, to, &[rows, cols], lay_out, &dev)?;
                    let exact = to == DType::F32 || to == *from;
                    let Some(got) = got else {
                        assert!(!exact, "{from:?} -> {to:?} should be decoded directly");
                        continue;
                    };
                    assert!(exact, "{from:?} -> {to:?} rounds: candle's to convert");
                    assert_eq!(got.dims(), &[rows, cols]);
                    assert_eq!(got.dtype(), to);
                    // Laid out: the storage is (cols, rows)-contiguous, seen transposed.
                    assert_eq!(got.is_contiguous(), !lay_out);
                    let (g, w) = (got.to_dtype(DType::F32)?, want.to_dtype(DType::F32)?);
                    let g: Vec<u32> = g
                        .flatten_all()?
                        .to_vec1::<f32>()?
                        .iter()
                        .map(|v| v.to_bits())
                        .collect();
                    let w: Vec<u32> = w
                        .flatten_all()?
                        .to_vec1::<f32>()?
                        .iter()
                        .map(|v| v.to_bits())
                        .collect();
                    assert_eq!(g, w, "{from:?} -> {to:?}, laid out {lay_out}");
                    decoded += 1;
                }
            }
        }
        // f32 from each of the three, and bf16 and f16 from themselves, both layouts.
        assert_eq!(decoded, 2 * 5);
        // A byte count that does not fit the shape is an error, not a panic.
        assert!(decode(
            &stored[0].1[1..],
            DType::F32,
            DType::F32,
            &[rows, cols],
            true,
            &dev
        )
        .is_err());
        Ok(())
    }
}
