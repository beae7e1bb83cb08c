//! Training and calibration data: one [`Sample`] type for every source format.
//!
//! - `llava`: LLaVA-style JSON arrays or JSONL (`image`, `conversations`), detected by
//!   content, image paths relative to the file.

pub mod llava;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::processor::{load_image, load_image_from_memory, DynamicImage, Message};

/// Where a sample's image comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    Path(PathBuf),
    /// Encoded bytes (e.g. from Parquet) and a name for messages.
    Bytes {
        bytes: Vec<u8>,
        name: String,
    },
}

impl ImageSource {
    pub fn load(&self) -> Result<DynamicImage> {
        match self {
            ImageSource::Path(p) => load_image(p),
            ImageSource::Bytes { bytes, name } => load_image_from_memory(bytes, name),
        }
    }
}

/// One conversation turn: role is "system", "user" or "assistant".
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub role: String,
    pub text: String,
}

/// One conversation with its images.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub images: Vec<ImageSource>,
    pub turns: Vec<Turn>,
    /// Where it came from, for messages ("file.json#12").
    pub origin: String,
}

/// The `<image>` markers of LLaVA-style text.
pub const IMAGE_MARKER: &str = "<image>";

impl Sample {
    /// The calibration prompt of SPEC.md step 1: the first user turn, all of the sample's
    /// images first, then its text with the `<image>\n` markers removed.
    pub fn first_user_turn(&self) -> Result<Message> {
        let Some(turn) = self.turns.iter().find(|t| t.role == "user") else {
            bail!("{}: no user turn", self.origin);
        };
        let text = turn.text.replace("<image>\n", "").replace(IMAGE_MARKER, "");
        Ok(Message::user_with_images(self.images.len(), text))
    }
}

/// Reads every sample of a data file, choosing the reader by content.
pub fn read_samples(path: &Path) -> Result<Vec<Sample>> {
    llava::read(path)
}

/// Chooses which samples to use: `samples` of them, or else `portion` of them (at least
/// one), at random with `seed`, returned in file order.
pub fn choose(n: usize, portion: f64, samples: Option<usize>, seed: u64) -> Result<Vec<usize>> {
    if !(portion > 0.0 && portion <= 1.0) {
        bail!("--portion must be in (0, 1], got {portion}");
    }
    let want = match samples {
        Some(k) => k.min(n),
        None => ((n as f64 * portion) as usize).max(1).min(n),
    };
    let mut idx: Vec<usize> = (0..n).collect();
    crate::prune::SplitMix64::new(seed).shuffle(&mut idx);
    let mut chosen = idx[..want].to_vec();
    chosen.sort_unstable();
    Ok(chosen)
}
