//! The model's tokenizer (`tokenizer.json`, run by the `tokenizers` crate) plus what
//! `tokenizer_config.json` says about special tokens, and the multimodal token ids Qwen-VL
//! models use.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value as Json;

pub const IMAGE_PAD: &str = "<|image_pad|>";
pub const VIDEO_PAD: &str = "<|video_pad|>";
pub const VISION_START: &str = "<|vision_start|>";
pub const VISION_END: &str = "<|vision_end|>";
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";
pub const ENDOFTEXT: &str = "<|endoftext|>";

/// Ids of the tokens the processor and the model treat specially (`None` where the vocabulary
/// has no such token, e.g. a text-only model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpecialTokenIds {
    pub image_pad: Option<u32>,
    pub video_pad: Option<u32>,
    pub vision_start: Option<u32>,
    pub vision_end: Option<u32>,
    pub im_start: Option<u32>,
    pub im_end: Option<u32>,
    pub endoftext: Option<u32>,
}

/// A token's byte range in the encoded text.
pub type Offset = (usize, usize);

/// A Hugging Face tokenizer with the special-token settings of `tokenizer_config.json`.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// `bos_token`, `eos_token`, `unk_token`, `pad_token` when set: transformers passes these
    /// (its `special_tokens_map`) to the chat template.
    pub special_tokens_map: BTreeMap<String, String>,
    pub ids: SpecialTokenIds,
}

impl Tokenizer {
    /// Reads `<dir>/tokenizer.json` and, when present, `<dir>/tokenizer_config.json`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        crate::hub::check_model_dir(dir)?;
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            bail!("{}: tokenizer file not found", path.display());
        }
        // tokenizers panics on some malformed files (found by fuzzing): an error too.
        let inner = crate::catch_panic(|| tokenizers::Tokenizer::from_file(&path))
            .map_err(|p| anyhow::anyhow!("{}: cannot load tokenizer: {p}", path.display()))?
            .map_err(|e| anyhow::anyhow!("{}: cannot load tokenizer: {e}", path.display()))?;
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            let text = std::fs::read_to_string(&config_path)
                .with_context(|| format!("{}: cannot read", config_path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{}: invalid JSON", config_path.display()))?
        } else {
            Json::Null
        };
        let mut special_tokens_map = BTreeMap::new();
        for key in ["bos_token", "eos_token", "unk_token", "pad_token"] {
            match config.get(key) {
                None | Some(Json::Null) => {}
                Some(Json::String(s)) => {
                    special_tokens_map.insert(key.to_string(), s.clone());
                }
                // A serialised AddedToken: {"content": "...", ...}.
                Some(v) => {
                    let s = v.get("content").and_then(Json::as_str).with_context(|| {
                        format!(
                            "{}: field {key} is neither a string nor a token object",
                            config_path.display()
                        )
                    })?;
                    special_tokens_map.insert(key.to_string(), s.to_string());
                }
            }
        }
        let mut tok = Self {
            inner,
            special_tokens_map,
            ids: SpecialTokenIds::default(),
        };
        tok.ids = SpecialTokenIds {
            image_pad: tok.token_to_id(IMAGE_PAD),
            video_pad: tok.token_to_id(VIDEO_PAD),
            vision_start: tok.token_to_id(VISION_START),
            vision_end: tok.token_to_id(VISION_END),
            im_start: tok.token_to_id(IM_START),
            im_end: tok.token_to_id(IM_END),
            endoftext: tok.token_to_id(ENDOFTEXT),
        };
        Ok(tok)
    }

    /// The underlying `tokenizers` object.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.special_tokens_map.get("bos_token").map(String::as_str)
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.special_tokens_map.get("eos_token").map(String::as_str)
    }

    /// Token ids of `text`; `add_special_tokens` runs the tokenizer's post-processor (BOS/EOS
    /// templates), as transformers' `tokenizer(text, add_special_tokens=...)`. Added tokens
    /// such as `<|image_pad|>` are matched before normalisation, each occurrence one id.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| anyhow::anyhow!("tokenization failed: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Like [`Tokenizer::encode`], with each token's byte range in `text`.
    pub fn encode_with_offsets(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<(Vec<u32>, Vec<Offset>)> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| anyhow::anyhow!("tokenization failed: {e}"))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// Text of `ids` as transformers' `decode(ids, skip_special_tokens=...)` gives it (Qwen's
    /// tokenizer_config sets `clean_up_tokenization_spaces` false, so no clean-up is done).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| anyhow::anyhow!("decoding failed: {e}"))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Checks the token ids a model's `config.json` declares (`image_token_id`,
    /// `video_token_id`, `vision_start_token_id`, `vision_end_token_id`) against the tokenizer,
    /// and that every token id the tokenizer can produce has a row in the embedding table
    /// (`text_config.vocab_size`, or a top-level `vocab_size`).
    pub fn check_model_config(&self, dir: &Path) -> Result<()> {
        let path = dir.join("config.json");
        if !path.is_file() {
            return Ok(());
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let config: Json = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid JSON", path.display()))?;
        let vocab = config
            .get("text_config")
            .and_then(|t| t.get("vocab_size"))
            .or_else(|| config.get("vocab_size"))
            .and_then(Json::as_u64);
        if let Some(vocab) = vocab {
            let vocab_map = self.inner.get_vocab(true);
            if let Some((token, &id)) = vocab_map.iter().max_by_key(|(_, &id)| id) {
                if u64::from(id) >= vocab {
                    bail!(
                        "{}: token {token:?} has id {id}, outside the model's vocabulary of {vocab} ({} vocab_size)",
                        dir.join("tokenizer.json").display(),
                        path.display()
                    );
                }
            }
        }
        let pairs = [
            ("image_token_id", IMAGE_PAD, self.ids.image_pad),
            ("video_token_id", VIDEO_PAD, self.ids.video_pad),
            ("vision_start_token_id", VISION_START, self.ids.vision_start),
            ("vision_end_token_id", VISION_END, self.ids.vision_end),
        ];
        for (key, token, ours) in pairs {
            let Some(v) = config.get(key).filter(|v| !v.is_null()) else {
                continue;
            };
            let declared = v.as_u64().with_context(|| {
                format!(
                    "{}: field {key} must be an integer, got {v}",
                    path.display()
                )
            })?;
            match ours {
                Some(id) if u64::from(id) == declared => {}
                Some(id) => bail!(
                    "{}: {key} is {declared} but the tokenizer maps {token} to {id}",
                    path.display()
                ),
                None => bail!(
                    "{}: {key} is {declared} but the tokenizer has no {token} token",
                    path.display()
                ),
            }
        }
        Ok(())
    }
}
