//! Image preprocessing exactly as transformers' Qwen2-VL image processor does it, with either
//! of its two backends ([`ImageBackend`]): decoding as Pillow decodes (JPEGs through
//! [`super::jpeg`], bit-exact with libjpeg-turbo), RGB conversion, `smart_resize`, then the
//! backend's bicubic resampling and rescale + normalise ([`super::pil`] for
//! `Qwen2VLImageProcessorPil`, [`super::torchvision`] for `Qwen2VLImageProcessor`, both
//! bit-exact on 8-bit RGB), temporal duplication and patch flattening into `pixel_values` rows
//! of `3 * T * P * P` values.

use std::path::Path;

use anyhow::{bail, Context, Result};
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use serde_json::Value;

pub use super::pil::resize_bicubic;
pub use super::torchvision::resize_bicubic_aa;

/// OpenAI CLIP statistics: transformers' defaults when a config gives no mean/std.
const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];
/// Pillow raises `DecompressionBombError` above twice `Image.MAX_IMAGE_PIXELS`.
const PIL_MAX_PIXELS: u64 = 2 * 89_478_485;
/// `PILImageResampling.BICUBIC`, the only filter Qwen-VL processors use.
const PIL_BICUBIC: i64 = 3;

/// Which of transformers' two Qwen2-VL image processors to reproduce. They decode and convert
/// images alike and differ in resizing (by up to a few 8-bit levels per pixel) and in the
/// float arithmetic of rescale + normalise.
///
/// The default, [`ImageBackend::transformers_default`], is torchvision for every checkpoint:
/// in transformers 5 (checked with 5.25), `AutoProcessor.from_pretrained(dir)` and
/// `AutoImageProcessor.from_pretrained(dir)` pick the torchvision backend whenever torchvision
/// is installed, and Qwen3-VL's processor cannot load without it (its video processor exists
/// only for torchvision). Nothing in `preprocessor_config.json` changes that:
/// `image_processor_type` `Qwen2VLImageProcessor`, the published `Qwen2VLImageProcessorFast`
/// and even `Qwen2VLImageProcessorPil` all load the torchvision class, and a `use_fast: false`
/// key is ignored. Only the caller's `backend="pil"` (or the deprecated `use_fast=False`)
/// argument selects PIL, which is what `--image-backend pil` mirrors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum ImageBackend {
    /// transformers' `Qwen2VLImageProcessor` ("fast"): torchvision's uint8 bicubic resize
    /// with antialiasing, rescale fused into a float32 normalise.
    #[default]
    Torchvision,
    /// transformers' `Qwen2VLImageProcessorPil` ("slow"): Pillow's bicubic resize, rescale
    /// and normalise in numpy.
    Pil,
}

impl ImageBackend {
    /// The backend transformers 5 loads by default for a Qwen-VL checkpoint: torchvision,
    /// whatever its `preprocessor_config.json` says (see [`ImageBackend`]).
    pub fn transformers_default() -> Self {
        Self::Torchvision
    }

    /// `torchvision` or `pil`, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Torchvision => "torchvision",
            Self::Pil => "pil",
        }
    }

    /// transformers' class name for this backend.
    pub fn transformers_class(self) -> &'static str {
        match self {
            Self::Torchvision => "Qwen2VLImageProcessor",
            Self::Pil => "Qwen2VLImageProcessorPil",
        }
    }
}

/// Settings of a Qwen-VL image processor (`preprocessor_config.json`), with transformers'
/// `Qwen2VLImageProcessor` defaults for everything the file leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorConfig {
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub merge_size: usize,
    /// `size.shortest_edge`: the least number of pixels after resizing.
    pub min_pixels: usize,
    /// `size.longest_edge`: the most pixels after resizing.
    pub max_pixels: usize,
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
    pub do_resize: bool,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub do_convert_rgb: bool,
}

impl Default for ImageProcessorConfig {
    fn default() -> Self {
        Self {
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            image_mean: OPENAI_CLIP_MEAN,
            image_std: OPENAI_CLIP_STD,
            do_resize: true,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            do_convert_rgb: true,
        }
    }
}

impl ImageProcessorConfig {
    /// Reads `<dir>/preprocessor_config.json`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_file(dir.as_ref().join("preprocessor_config.json"))
    }

    /// Reads a `preprocessor_config.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read image processor config", path.display()))?;
        let json: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid JSON", path.display()))?;
        Self::from_json(&json).with_context(|| format!("{}", path.display()))
    }

    /// Parses the JSON object of a `preprocessor_config.json`. As in transformers, top-level
    /// `min_pixels` / `max_pixels` (the older spelling) override `size`'s entries.
    pub fn from_json(json: &Value) -> Result<Self> {
        let obj = json
            .as_object()
            .context("preprocessor config is not a JSON object")?;
        let mut cfg = Self::default();
        let get_usize = |key: &str| -> Result<Option<usize>> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v.as_u64().map(|n| Some(n as usize)).with_context(|| {
                    format!("field {key} must be a non-negative integer, got {v}")
                }),
            }
        };
        let get_bool = |key: &str| -> Result<Option<bool>> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_bool()
                    .map(Some)
                    .with_context(|| format!("field {key} must be true or false, got {v}")),
            }
        };
        if let Some(v) = get_usize("patch_size")? {
            cfg.patch_size = v;
        }
        if let Some(v) = get_usize("temporal_patch_size")? {
            cfg.temporal_patch_size = v;
        }
        if let Some(v) = get_usize("merge_size")? {
            cfg.merge_size = v;
        }
        match obj.get("size") {
            None | Some(Value::Null) => {}
            Some(Value::Object(size)) => {
                let edge = |key: &str| -> Result<Option<usize>> {
                    match size.get(key) {
                        None | Some(Value::Null) => Ok(None),
                        Some(v) => v.as_u64().map(|n| Some(n as usize)).with_context(|| {
                            format!("field size.{key} must be a non-negative integer, got {v}")
                        }),
                    }
                };
                // transformers replaces the whole default dict by the file's `size`.
                let shortest = edge("shortest_edge")?.or(edge("min_pixels")?);
                let longest = edge("longest_edge")?.or(edge("max_pixels")?);
                cfg.min_pixels = shortest.unwrap_or(0);
                cfg.max_pixels = longest.unwrap_or(0);
            }
            Some(v) => {
                bail!("field size must be an object with shortest_edge and longest_edge, got {v}")
            }
        }
        if let Some(v) = get_usize("min_pixels")? {
            cfg.min_pixels = v;
        }
        if let Some(v) = get_usize("max_pixels")? {
            cfg.max_pixels = v;
        }
        if let Some(v) = obj.get("image_mean").filter(|v| !v.is_null()) {
            cfg.image_mean = parse_channel_stats(v).context("field image_mean")?;
        }
        if let Some(v) = obj.get("image_std").filter(|v| !v.is_null()) {
            cfg.image_std = parse_channel_stats(v).context("field image_std")?;
        }
        if let Some(v) = get_bool("do_resize")? {
            cfg.do_resize = v;
        }
        if let Some(v) = get_bool("do_rescale")? {
            cfg.do_rescale = v;
        }
        if let Some(v) = obj.get("rescale_factor").filter(|v| !v.is_null()) {
            cfg.rescale_factor = v
                .as_f64()
                .with_context(|| format!("field rescale_factor must be a number, got {v}"))?;
        }
        if let Some(v) = get_bool("do_normalize")? {
            cfg.do_normalize = v;
        }
        if let Some(v) = get_bool("do_convert_rgb")? {
            cfg.do_convert_rgb = v;
        }
        if let Some(v) = obj.get("resample").filter(|v| !v.is_null()) {
            if v.as_i64() != Some(PIL_BICUBIC) {
                bail!("field resample is {v}; only bicubic (3) is supported");
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Replaces the pixel bounds (e.g. from `--min-pixels` / `--max-pixels`).
    pub fn with_pixel_bounds(
        mut self,
        min_pixels: Option<usize>,
        max_pixels: Option<usize>,
    ) -> Self {
        if let Some(v) = min_pixels {
            self.min_pixels = v;
        }
        if let Some(v) = max_pixels {
            self.max_pixels = v;
        }
        self
    }

    /// Checks the settings transformers would reject (or crash on) before any image is seen.
    pub fn validate(&self) -> Result<()> {
        if self.patch_size == 0 || self.temporal_patch_size == 0 || self.merge_size == 0 {
            bail!("patch_size, temporal_patch_size and merge_size must all be positive");
        }
        // transformers tests these for truthiness, so 0 is as bad as missing.
        if self.do_resize && (self.min_pixels == 0 || self.max_pixels == 0) {
            bail!(
                "size must contain positive shortest_edge (min_pixels) and longest_edge (max_pixels), got {} and {}",
                self.min_pixels,
                self.max_pixels
            );
        }
        if self.image_std.contains(&0.0) && self.do_normalize {
            bail!("image_std must not contain 0");
        }
        Ok(())
    }

    /// `patch_size * merge_size`: resized sides are multiples of this.
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Length of one `pixel_values` row: `3 * temporal_patch_size * patch_size^2`.
    pub fn patch_dim(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

fn parse_channel_stats(v: &Value) -> Result<[f64; 3]> {
    if let Some(x) = v.as_f64() {
        return Ok([x; 3]);
    }
    let arr = v
        .as_array()
        .with_context(|| format!("expected a number or a list of 3 numbers, got {v}"))?;
    if arr.len() != 3 {
        bail!("expected 3 values (one per RGB channel), got {}", arr.len());
    }
    let mut out = [0.0; 3];
    for (o, x) in out.iter_mut().zip(arr) {
        *o = x
            .as_f64()
            .with_context(|| format!("expected a number, got {x}"))?;
    }
    Ok(out)
}

/// transformers' `smart_resize`: the size closest to `height x width` (same aspect ratio as far as
/// possible) whose sides are multiples of `factor` and whose area lies in
/// `[min_pixels, max_pixels]`. Python's `round` (half to even), `floor` and `ceil` included.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize)> {
    if height == 0 || width == 0 {
        bail!("image of {width}x{height} pixels is empty");
    }
    if factor == 0 || max_pixels == 0 {
        bail!("smart_resize needs a positive factor and max_pixels");
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    let ratio = h.max(w) / h.min(w);
    if ratio > 200.0 {
        bail!(
            "image of {width}x{height} pixels: absolute aspect ratio must be smaller than 200, got {}",
            super::chat::py_float(ratio, false)
        );
    }
    let mut h_bar = (h / f).round_ties_even() as usize * factor;
    let mut w_bar = (w / f).round_ties_even() as usize * factor;
    if h_bar * w_bar > max_pixels {
        let beta = ((height * width) as f64 / max_pixels as f64).sqrt();
        h_bar = factor.max((h / beta / f).floor() as usize * factor);
        w_bar = factor.max((w / beta / f).floor() as usize * factor);
    } else if h_bar * w_bar < min_pixels {
        let beta = (min_pixels as f64 / (height * width) as f64).sqrt();
        h_bar = (h * beta / f).ceil() as usize * factor;
        w_bar = (w * beta / f).ceil() as usize * factor;
    }
    Ok((h_bar, w_bar))
}

/// Reads an image file the way transformers' `load_image` does: decode, apply the EXIF
/// orientation (`ImageOps.exif_transpose`) and convert to 8-bit RGB (`convert("RGB")`, which
/// drops alpha rather than compositing it).
pub fn load_image(path: impl AsRef<Path>) -> Result<DynamicImage> {
    let img = decode_image_file(path.as_ref())?;
    Ok(DynamicImage::ImageRgb8(pil_convert_rgb(&img)))
}

/// Decodes an image held in memory (e.g. bytes from a Parquet cell or base64 in a TSV), with
/// the same conversion as [`load_image`]. `name` is used in error messages.
pub fn load_image_from_memory(bytes: &[u8], name: &str) -> Result<DynamicImage> {
    let img = decode_image_bytes(bytes, name)?;
    Ok(DynamicImage::ImageRgb8(pil_convert_rgb(&img)))
}

/// Decodes an image file and applies its EXIF orientation, keeping its pixel format (what
/// `ImageOps.exif_transpose(PIL.Image.open(path))` holds).
pub fn decode_image_file(path: &Path) -> Result<DynamicImage> {
    let bytes =
        std::fs::read(path).with_context(|| format!("{}: cannot read image", path.display()))?;
    decode_image_bytes(&bytes, &path.display().to_string())
}

/// Decodes image bytes and applies the EXIF orientation. JPEGs go through [`super::jpeg`],
/// which matches libjpeg-turbo (Pillow's decoder) exactly; other formats, and JPEG flavours it
/// does not cover, through the `image` crate.
pub fn decode_image_bytes(bytes: &[u8], name: &str) -> Result<DynamicImage> {
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .with_context(|| format!("{name}: cannot read image"))?;
    let format = reader.format();
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| anyhow::anyhow!("{name}: unreadable image: {e}"))?;
    let (w, h) = decoder.dimensions();
    if u64::from(w) * u64::from(h) > PIL_MAX_PIXELS {
        bail!(
            "{name}: image of {w}x{h} pixels is larger than Pillow accepts ({PIL_MAX_PIXELS} pixels, a decompression bomb)"
        );
    }
    // A broken EXIF block is ignored, as Pillow's exif_transpose does.
    let orientation = decoder.orientation().ok();
    let exact_jpeg = if format == Some(image::ImageFormat::Jpeg) {
        match super::jpeg::decode(bytes) {
            Ok(img) => Some(img),
            // Another decoder would fill in the missing part; Pillow refuses the file.
            Err(e @ super::jpeg::JpegError::Truncated) => bail!("{name}: {e}"),
            // Outside our decoder's scope, or damaged in a way libjpeg may only warn about.
            Err(_) => None,
        }
    } else {
        None
    };
    let mut img = match exact_jpeg {
        Some(img) => img,
        None => DynamicImage::from_decoder(decoder)
            .map_err(|e| anyhow::anyhow!("{name}: unreadable image: {e}"))?,
    };
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(img)
}

/// Converts 16-bit and float images to the 8-bit image Pillow would have opened: 16-bit RGB(A)
/// and gray+alpha PNGs keep the high byte, 16-bit grayscale (Pillow's `I;16`) is clipped to
/// 255 when converted to 8 bits.
fn to_pil_8bit(img: &DynamicImage) -> DynamicImage {
    use image::{ImageBuffer, LumaA, Rgb, Rgba};
    match img {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_) => img.clone(),
        DynamicImage::ImageLuma16(g) => {
            DynamicImage::ImageLuma8(ImageBuffer::from_fn(g.width(), g.height(), |x, y| {
                image::Luma([g.get_pixel(x, y)[0].min(255) as u8])
            }))
        }
        DynamicImage::ImageLumaA16(g) => {
            DynamicImage::ImageLumaA8(ImageBuffer::from_fn(g.width(), g.height(), |x, y| {
                let p = g.get_pixel(x, y);
                LumaA([(p[0] >> 8) as u8, (p[1] >> 8) as u8])
            }))
        }
        DynamicImage::ImageRgb16(g) => {
            DynamicImage::ImageRgb8(ImageBuffer::from_fn(g.width(), g.height(), |x, y| {
                let p = g.get_pixel(x, y);
                Rgb([(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
            }))
        }
        DynamicImage::ImageRgba16(g) => {
            DynamicImage::ImageRgba8(ImageBuffer::from_fn(g.width(), g.height(), |x, y| {
                let p = g.get_pixel(x, y);
                Rgba([
                    (p[0] >> 8) as u8,
                    (p[1] >> 8) as u8,
                    (p[2] >> 8) as u8,
                    (p[3] >> 8) as u8,
                ])
            }))
        }
        // Pillow cannot hold these; the image crate's conversion is the best we can do.
        other => {
            if other.color().has_alpha() {
                DynamicImage::ImageRgba8(other.to_rgba8())
            } else {
                DynamicImage::ImageRgb8(other.to_rgb8())
            }
        }
    }
}

/// Pillow's `convert("RGB")`: gray is replicated, alpha is dropped.
pub fn pil_convert_rgb(img: &DynamicImage) -> RgbImage {
    match to_pil_8bit(img) {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    }
}

/// transformers' `convert_to_rgb`: images with an alpha channel are composited onto an opaque
/// white background (Pillow's `alpha_composite`), others go through `convert("RGB")`.
pub fn convert_to_rgb(img: &DynamicImage) -> RgbImage {
    let img8 = to_pil_8bit(img);
    if !img8.color().has_alpha() {
        return pil_convert_rgb(&img8);
    }
    let rgba = img8.to_rgba8();
    let mut out = RgbImage::new(rgba.width(), rgba.height());
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = p[3] as u32;
        for c in 0..3 {
            o[c] = composite_on_white(p[c] as u32, a);
        }
    }
    out
}

/// One channel of Pillow's `ImagingAlphaComposite` (7 fractional bits, rounded division by 255)
/// with an opaque white destination, where `coef1 = 128 * a` exactly.
fn composite_on_white(src: u32, a: u32) -> u8 {
    const PRECISION_BITS: u32 = 7;
    let coef1 = a << PRECISION_BITS;
    let coef2 = (255 << PRECISION_BITS) - coef1;
    let tmp = src * coef1 + 255 * coef2 + (0x80 << PRECISION_BITS);
    let div255 = ((tmp >> 8) + tmp) >> 8;
    (div255 >> PRECISION_BITS) as u8
}

/// One image turned into vision-tower input.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedImage {
    /// `[grid_t * grid_h * grid_w, patch_dim]`, row-major.
    pub pixel_values: Vec<f32>,
    /// `3 * temporal_patch_size * patch_size^2`.
    pub patch_dim: usize,
    /// `[grid_t, grid_h, grid_w]` in patches (grid_t is 1 for an image).
    pub grid_thw: [usize; 3],
}

impl ProcessedImage {
    /// Number of rows of `pixel_values`.
    pub fn num_patches(&self) -> usize {
        self.grid_thw.iter().product()
    }

    /// Number of `<|image_pad|>` tokens the image takes in the prompt.
    pub fn num_tokens(&self, merge_size: usize) -> usize {
        self.num_patches() / (merge_size * merge_size)
    }
}

/// transformers' Qwen2-VL image processor, with the resizing and normalisation of one backend.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    pub config: ImageProcessorConfig,
    pub backend: ImageBackend,
}

impl ImageProcessor {
    /// The processor with transformers' default backend ([`ImageBackend::transformers_default`]).
    pub fn new(config: ImageProcessorConfig) -> Self {
        Self::with_backend(config, ImageBackend::transformers_default())
    }

    pub fn with_backend(config: ImageProcessorConfig, backend: ImageBackend) -> Self {
        Self { config, backend }
    }

    /// Reads `<dir>/preprocessor_config.json`; the backend is transformers' default.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::new(ImageProcessorConfig::from_dir(dir)?))
    }

    /// The `(height, width)` an image of the given size is resized to.
    pub fn target_size(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        let c = &self.config;
        if !c.do_resize {
            return Ok((height, width));
        }
        smart_resize(height, width, c.factor(), c.min_pixels, c.max_pixels)
    }

    /// Number of `<|image_pad|>` tokens an image of the given size takes.
    pub fn num_image_tokens(&self, height: usize, width: usize) -> Result<usize> {
        let (h, w) = self.target_size(height, width)?;
        let p = self.config.patch_size;
        Ok((h / p) * (w / p) / (self.config.merge_size * self.config.merge_size))
    }

    /// Resizes, rescales, normalises and patchifies one image.
    pub fn preprocess(&self, img: &DynamicImage) -> Result<ProcessedImage> {
        let c = &self.config;
        let rgb = if c.do_convert_rgb {
            convert_to_rgb(img)
        } else {
            pil_convert_rgb(img)
        };
        let (in_h, in_w) = (rgb.height() as usize, rgb.width() as usize);
        let (h, w) = self.target_size(in_h, in_w)?;
        let resized = if (h, w) == (in_h, in_w) {
            rgb
        } else {
            match self.backend {
                ImageBackend::Torchvision => resize_bicubic_aa(&rgb, w, h)?,
                ImageBackend::Pil => resize_bicubic(&rgb, w, h)?,
            }
        };
        let chw = match self.backend {
            ImageBackend::Torchvision => super::torchvision::rescale_normalize(c, &resized),
            ImageBackend::Pil => super::pil::rescale_normalize(c, &resized),
        };
        self.patchify(&chw, h, w)
    }

    /// Cuts a `[3, h, w]` image into `patch_size` squares ordered by merge window (the
    /// `merge_size x merge_size` patches one LLM token covers are adjacent rows), each row
    /// holding channel, then `temporal_patch_size` identical frames, then the patch pixels.
    fn patchify(&self, chw: &[f32], h: usize, w: usize) -> Result<ProcessedImage> {
        let c = &self.config;
        let (p, m, t) = (c.patch_size, c.merge_size, c.temporal_patch_size);
        if !h.is_multiple_of(p)
            || !w.is_multiple_of(p)
            || !(h / p).is_multiple_of(m)
            || !(w / p).is_multiple_of(m)
        {
            bail!(
                "image of {w}x{h} pixels cannot be cut into {p}-pixel patches merged {m}x{m} (set do_resize)"
            );
        }
        let (gh, gw) = (h / p, w / p);
        let patch_dim = c.patch_dim();
        let mut out = Vec::with_capacity(gh * gw * patch_dim);
        for bh in 0..gh / m {
            for bw in 0..gw / m {
                for mh in 0..m {
                    for mw in 0..m {
                        let y0 = (bh * m + mh) * p;
                        let x0 = (bw * m + mw) * p;
                        for ch in 0..3 {
                            let plane = &chw[ch * h * w..(ch + 1) * h * w];
                            for _ in 0..t {
                                for py in 0..p {
                                    let row = (y0 + py) * w + x0;
                                    out.extend_from_slice(&plane[row..row + p]);
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(ProcessedImage {
            pixel_values: out,
            patch_dim,
            grid_thw: [1, gh, gw],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_rounds_half_to_even() {
        // 48 / 32 = 1.5 rounds to 2, 80 / 32 = 2.5 rounds to 2 (Python's round).
        assert_eq!(smart_resize(48, 80, 32, 1, 1 << 30).unwrap(), (64, 64));
        assert_eq!(smart_resize(16, 16, 32, 1, 1 << 30).unwrap(), (32, 32));
    }

    #[test]
    fn smart_resize_limits() {
        // Over max_pixels: floor after scaling by sqrt(hw / max).
        assert_eq!(
            smart_resize(1000, 2000, 32, 784, 50176).unwrap(),
            (128, 288)
        );
        // Tiny images grow to min_pixels.
        assert_eq!(smart_resize(10, 10, 32, 784, 50176).unwrap(), (32, 32));
        assert!(smart_resize(1, 201, 32, 784, 50176).is_err());
        assert!(smart_resize(1, 200, 32, 784, 50176).is_ok());
        assert!(smart_resize(0, 5, 32, 784, 50176).is_err());
    }

    #[test]
    fn composite_matches_pillow_extremes() {
        assert_eq!(composite_on_white(10, 0), 255);
        assert_eq!(composite_on_white(10, 255), 10);
        assert_eq!(composite_on_white(0, 128), 127);
    }

    #[test]
    fn config_overrides() {
        let json = serde_json::json!({
            "size": {"shortest_edge": 1000, "longest_edge": 200000},
            "min_pixels": 2000,
            "patch_size": 16,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": 0.5
        });
        let cfg = ImageProcessorConfig::from_json(&json).unwrap();
        assert_eq!((cfg.min_pixels, cfg.max_pixels), (2000, 200000));
        assert_eq!(cfg.patch_size, 16);
        assert_eq!(cfg.image_std, [0.5; 3]);
        assert_eq!(cfg.patch_dim(), 3 * 2 * 16 * 16);
        let json = serde_json::json!({"size": {"height": 10, "width": 10}});
        assert!(ImageProcessorConfig::from_json(&json).is_err());
    }
}
