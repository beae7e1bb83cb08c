//! Conversation + images -> model inputs, as transformers' Qwen3-VL processor does it:
//! render the chat template, preprocess the images, expand each `<|image_pad|>` into one token
//! per merged patch, tokenise, and mark the image tokens.

pub mod chat;
pub mod image;
pub mod jpeg;
pub mod pil;
mod resample;
pub mod tokenizer;
pub mod torchvision;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value as Json;

pub use self::chat::{ChatTemplate, Content, Message};
pub use self::image::{
    load_image, load_image_from_memory, smart_resize, ImageBackend, ImageProcessor,
    ImageProcessorConfig, ProcessedImage,
};
pub use self::tokenizer::{SpecialTokenIds, Tokenizer};
pub use ::image::DynamicImage;

/// Values of `mm_token_type_ids` (transformers' `ProcessorMixin.create_mm_token_type_ids`).
pub const MM_TEXT: u8 = 0;
pub const MM_IMAGE: u8 = 1;
pub const MM_VIDEO: u8 = 2;

/// Model inputs for one conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub input_ids: Vec<u32>,
    /// All images' patches, concatenated: `[sum of patches, patch_dim]` row-major.
    pub pixel_values: Vec<f32>,
    pub patch_dim: usize,
    /// `[t, h, w]` in patches, one per image, in prompt order.
    pub image_grid_thw: Vec<[usize; 3]>,
    /// 1 at `<|image_pad|>` tokens, 2 at `<|video_pad|>` tokens, 0 elsewhere (vision
    /// start/end markers are 0).
    pub mm_token_type_ids: Vec<u8>,
    /// The rendered template before placeholder expansion (one `<|image_pad|>` per image).
    pub prompt: String,
    /// Byte range of each token in the *expanded* text (the prompt with each placeholder
    /// repeated once per image token; see [`expand_image_placeholders`]).
    pub offsets: Vec<(usize, usize)>,
}

/// The prompt with its `i`-th `<|image_pad|>` repeated `counts[i]` times, as the processor
/// expands it before tokenising. A prefix of the prompt expands to a prefix of the result,
/// so positions in the prompt map to positions in the expanded text by expanding prefixes.
pub fn expand_image_placeholders(prompt: &str, counts: &[usize]) -> Result<String> {
    let pad = tokenizer::IMAGE_PAD;
    let extra: usize = counts.iter().map(|c| c.saturating_sub(1) * pad.len()).sum();
    let mut text = String::with_capacity(prompt.len() + extra);
    let mut rest = prompt;
    for &n in counts {
        let Some(pos) = rest.find(pad) else {
            bail!(
                "the prompt has fewer image placeholders than the {} image(s) given",
                counts.len()
            );
        };
        text.push_str(&rest[..pos]);
        for _ in 0..n {
            text.push_str(pad);
        }
        rest = &rest[pos + pad.len()..];
    }
    text.push_str(rest);
    Ok(text)
}

/// Whether `dir/config.json` describes a model without a vision tower (no `vision_config`:
/// Qwen3, Llama). Read leniently: a missing or unreadable config counts as multimodal, and
/// the model loader reports it.
fn text_only_model(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Json>(&t).ok())
        .is_some_and(|raw| raw.is_object() && raw.get("vision_config").is_none())
}

/// Tokenizer, chat template and image processor of one model directory.
#[derive(Debug)]
pub struct Processor {
    pub tokenizer: Tokenizer,
    pub chat_template: ChatTemplate,
    pub image_processor: ImageProcessor,
    /// False for a text-only model (its config.json has no `vision_config`): its prompts
    /// take no images and it needs no `preprocessor_config.json`.
    pub takes_images: bool,
    /// Extra template variables (e.g. `add_vision_id`), passed like keyword arguments of
    /// transformers' `apply_chat_template`.
    pub template_kwargs: BTreeMap<String, Json>,
}

impl Processor {
    /// Loads `tokenizer.json` (+ `tokenizer_config.json`), the chat template and
    /// `preprocessor_config.json` from a model directory (the image backend is transformers'
    /// default, see [`ImageBackend`]), and checks the multimodal token ids of
    /// `config.json` (when present) against the tokenizer.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let tokenizer = Tokenizer::from_dir(dir)?;
        tokenizer.check_model_config(dir)?;
        let chat_template = ChatTemplate::from_dir(dir)?;
        // A text-only family's directory has no image processor; every other directory
        // (a multimodal family, or no config.json at all) must have one.
        let takes_images = !text_only_model(dir);
        let image_processor = if takes_images {
            ImageProcessor::from_dir(dir)?
        } else {
            ImageProcessor::new(Default::default())
        };
        Ok(Self {
            tokenizer,
            chat_template,
            image_processor,
            takes_images,
            template_kwargs: BTreeMap::new(),
        })
    }

    /// Uses the given image backend instead of transformers' default (`None` keeps the
    /// default, [`ImageBackend::transformers_default`]); the `--image-backend` option.
    pub fn with_image_backend(mut self, backend: Option<ImageBackend>) -> Self {
        if let Some(b) = backend {
            self.image_processor.backend = b;
        }
        self
    }

    /// Replaces the image pixel bounds (the fine-tuning CLI's `--min-pixels` / `--max-pixels`).
    pub fn with_pixel_bounds(
        mut self,
        min_pixels: Option<usize>,
        max_pixels: Option<usize>,
    ) -> Result<Self> {
        self.image_processor.config = self
            .image_processor
            .config
            .clone()
            .with_pixel_bounds(min_pixels, max_pixels);
        self.image_processor.config.validate()?;
        Ok(self)
    }

    pub fn special_token_ids(&self) -> &SpecialTokenIds {
        &self.tokenizer.ids
    }

    /// Renders the chat template (no tokenisation, no placeholder expansion).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.chat_template.render(
            messages,
            add_generation_prompt,
            &self.tokenizer.special_tokens_map,
            &self.template_kwargs,
        )
    }

    /// transformers' `processor(text=apply_chat_template(messages), images=images)`:
    /// `images` are matched, in order, to the image placeholders of the rendered prompt.
    pub fn encode(
        &self,
        messages: &[Message],
        images: &[DynamicImage],
        add_generation_prompt: bool,
    ) -> Result<Encoded> {
        let prompt = self.render(messages, add_generation_prompt)?;
        self.encode_prompt(prompt, images)
    }

    /// The images given on a command line (`--image PATH`, in order), decoded as transformers'
    /// `load_image` does and checked against this processor's resizing rules, so that an
    /// image it cannot take (an extreme aspect ratio) is named by its path.
    pub fn load_images<P: AsRef<Path>>(&self, paths: &[P]) -> Result<Vec<DynamicImage>> {
        paths
            .iter()
            .map(|p| {
                let p = p.as_ref();
                let img = load_image(p)?;
                self.image_processor
                    .target_size(img.height() as usize, img.width() as usize)
                    .with_context(|| p.display().to_string())?;
                Ok(img)
            })
            .collect()
    }

    /// Like [`Processor::encode`] for an already rendered prompt.
    pub fn encode_prompt(&self, prompt: String, images: &[DynamicImage]) -> Result<Encoded> {
        let processed = images
            .iter()
            .enumerate()
            .map(|(i, img)| {
                self.image_processor
                    .preprocess(img)
                    .with_context(|| format!("image {}", i + 1))
            })
            .collect::<Result<Vec<_>>>()?;
        self.encode_processed(prompt, processed)
    }

    /// Like [`Processor::encode_prompt`] with images already preprocessed (e.g. cached).
    pub fn encode_processed(&self, prompt: String, images: Vec<ProcessedImage>) -> Result<Encoded> {
        if !self.takes_images && !images.is_empty() {
            bail!(
                "{} image(s) given, but this model takes text only",
                images.len()
            );
        }
        let n_placeholders = prompt.matches(tokenizer::IMAGE_PAD).count();
        if n_placeholders != images.len() {
            bail!(
                "the prompt has {n_placeholders} image placeholder(s) ({}) but {} image(s) were given",
                tokenizer::IMAGE_PAD,
                images.len()
            );
        }
        if prompt.contains(tokenizer::VIDEO_PAD) {
            bail!(
                "the prompt contains {}; videos are not supported",
                tokenizer::VIDEO_PAD
            );
        }
        let merge = self.image_processor.config.merge_size;
        let counts: Vec<usize> = images.iter().map(|i| i.num_tokens(merge)).collect();
        let text = expand_image_placeholders(&prompt, &counts)?;

        // The processor calls the tokenizer with its default add_special_tokens=True, except
        // that apply_chat_template turns it off when the prompt already starts with BOS.
        let starts_with_bos = self
            .tokenizer
            .bos_token()
            .is_some_and(|bos| text.starts_with(bos));
        let (input_ids, offsets) = self
            .tokenizer
            .encode_with_offsets(&text, !starts_with_bos)?;
        let ids = self.tokenizer.ids;
        let mm_token_type_ids = input_ids
            .iter()
            .map(|&id| {
                if Some(id) == ids.image_pad {
                    MM_IMAGE
                } else if Some(id) == ids.video_pad {
                    MM_VIDEO
                } else {
                    MM_TEXT
                }
            })
            .collect();
        let expected: usize = images.iter().map(|i| i.num_tokens(merge)).sum();
        let found = input_ids
            .iter()
            .filter(|&&id| Some(id) == ids.image_pad)
            .count();
        if found != expected {
            bail!("tokenizer produced {found} image tokens for {expected} image placeholders");
        }

        let patch_dim = self.image_processor.config.patch_dim();
        let mut pixel_values =
            Vec::with_capacity(images.iter().map(|i| i.pixel_values.len()).sum());
        let mut image_grid_thw = Vec::with_capacity(images.len());
        for img in images {
            pixel_values.extend_from_slice(&img.pixel_values);
            image_grid_thw.push(img.grid_thw);
        }
        Ok(Encoded {
            input_ids,
            pixel_values,
            patch_dim,
            image_grid_thw,
            mm_token_type_ids,
            prompt,
            offsets,
        })
    }

    /// Token ids of a piece of text, without special tokens.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text, false)
    }

    /// Text of token ids, special tokens included (transformers' `decode` default).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, false)
    }
}
