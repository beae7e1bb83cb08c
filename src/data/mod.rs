//! Training and calibration data: one [`Sample`] type for every source format.
//!
//! - `llava`: LLaVA-style JSON arrays or JSONL (`image`, `conversations`), detected by
//!   content, image paths relative to the file.
//! - `finevision`: FineVision Parquet files (`images`, `texts`), detected by the `PAR1`
//!   magic bytes, read row group by row group without loading a file's images.
//!
//! `--data` names one file or a directory; [`open_sources`] turns it into [`Source`]s (a
//! FineVision subset is one source) and [`choose_portion`] picks rows per source, so
//! `--portion 0.01` takes 1 % of every subset. Rows are read lazily: a bad row is an error
//! of that row alone, a corrupt file an error naming the file.

pub mod finevision;
pub mod finevision_write;
pub mod labels;
pub mod llava;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

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

/// A fingerprint of what `samples` hold, stable across builds and machines (64-bit FNV-1a,
/// hex): every turn's role and text, and every image: its bytes when they are in memory
/// (Parquet), else its path, size and modification time. `--resume` compares it, so data
/// regenerated in place between a kill and a resume is noticed.
pub fn content_fingerprint(samples: &[Sample]) -> String {
    struct Fnv(u64);
    impl Fnv {
        fn add(&mut self, bytes: &[u8]) {
            for &b in bytes.iter().chain(&(bytes.len() as u64).to_le_bytes()) {
                self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for s in samples {
        for t in &s.turns {
            h.add(t.role.as_bytes());
            h.add(t.text.as_bytes());
        }
        for img in &s.images {
            match img {
                ImageSource::Bytes { bytes, .. } => h.add(bytes),
                ImageSource::Path(p) => {
                    h.add(p.to_string_lossy().as_bytes());
                    if let Ok(m) = std::fs::metadata(p) {
                        h.add(&m.len().to_le_bytes());
                        let mtime = m
                            .modified()
                            .ok()
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map_or(0, |d| d.as_nanos());
                        h.add(&mtime.to_le_bytes());
                    }
                }
            }
        }
    }
    format!("{:016x}", h.0)
}

/// The `<image>` markers of LLaVA-style text.
pub const IMAGE_MARKER: &str = "<image>";

impl Sample {
    /// The calibration prompt of docs/SPEC.md step 1: the first user turn, all of the sample's
    /// images first, then its text with the `<image>\n` markers removed.
    pub fn first_user_turn(&self) -> Result<Message> {
        let Some(turn) = self.turns.iter().find(|t| t.role == "user") else {
            bail!("{}: no user turn", self.origin);
        };
        let text = turn.text.replace("<image>\n", "").replace(IMAGE_MARKER, "");
        Ok(Message::user_with_images(self.images.len(), text))
    }
}

/// One row's outcome from a [`Source`]: the outer error is a file-level problem (a corrupt
/// file, named in the message), the inner one a problem of this row alone (e.g. a
/// malformed conversation), which callers skip and count.
pub type Rows<'a> = Box<dyn Iterator<Item = Result<Result<Sample>>> + 'a>;

/// A sequence of rows sampled as a unit: one LLaVA file, one Parquet file, or the Parquet
/// files of one directory (a FineVision subset) in file-name order.
#[derive(Debug, Clone)]
pub struct Source {
    name: String,
    kind: SourceKind,
}

#[derive(Debug, Clone)]
enum SourceKind {
    Llava(llava::Records),
    Parquet(finevision::ParquetSource),
}

impl Source {
    /// The file or directory, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of rows (from Parquet metadata; nothing is decoded).
    pub fn len(&self) -> usize {
        match &self.kind {
            SourceKind::Llava(r) => r.len(),
            SourceKind::Parquet(p) => p.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the rows come from Parquet (FineVision) files.
    pub fn is_parquet(&self) -> bool {
        matches!(self.kind, SourceKind::Parquet(_))
    }

    /// Streams the rows `rows` (strictly increasing indices below `len()`), one item per
    /// row, in order. Only the Parquet row groups holding a wanted row are decoded.
    pub fn read_rows<'a>(&'a self, rows: &'a [usize]) -> Result<Rows<'a>> {
        if let Some(w) = rows.windows(2).find(|w| w[0] >= w[1]) {
            bail!(
                "{}: rows must be strictly increasing ({} then {})",
                self.name,
                w[0],
                w[1]
            );
        }
        if let Some(&last) = rows.last() {
            if last >= self.len() {
                bail!(
                    "{}: row {last} out of range ({} rows)",
                    self.name,
                    self.len()
                );
            }
        }
        Ok(match &self.kind {
            SourceKind::Llava(r) => Box::new(rows.iter().map(move |&i| Ok(r.sample(i)))),
            SourceKind::Parquet(p) => Box::new(p.read(rows)),
        })
    }
}

/// Deepest directory level searched for Parquet files (guards against symlink loops).
const MAX_DEPTH: usize = 8;

/// The sources of `--data`, detected by content, not by name:
/// - a file starting with `PAR1`: one Parquet source;
/// - any other file: LLaVA JSON or JSONL;
/// - a directory: every directory at or below it that directly holds Parquet files is one
///   source (its files in name order). So the Hugging Face FineVision layout, one
///   subdirectory per subset, gives one source per subset, and a flat directory of Parquet
///   files gives one. Other files and hidden entries (`.git`, `.cache`) are ignored.
pub fn open_sources(path: &Path) -> Result<Vec<Source>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("{}: cannot open", path.display()))?;
    if meta.is_file() {
        let kind = if finevision::is_parquet(path)? {
            SourceKind::Parquet(finevision::ParquetSource::open(&[path.to_path_buf()])?)
        } else {
            SourceKind::Llava(llava::open(path)?)
        };
        return Ok(vec![Source {
            name: path.display().to_string(),
            kind,
        }]);
    }
    if !meta.is_dir() {
        bail!("{}: not a file or directory", path.display());
    }
    let mut groups = Vec::new();
    parquet_dirs(path, 0, &mut groups)?;
    if groups.is_empty() {
        bail!(
            "{}: no Parquet files in this directory or below (a directory must hold FineVision \
             Parquet files, directly or one subdirectory per subset)",
            path.display()
        );
    }
    groups
        .into_iter()
        .map(|(dir, files)| {
            Ok(Source {
                name: dir.display().to_string(),
                kind: SourceKind::Parquet(finevision::ParquetSource::open(&files)?),
            })
        })
        .collect()
}

/// Collects (directory, its Parquet files) for `dir` and below, in path order.
fn parquet_dirs(dir: &Path, depth: usize, out: &mut Vec<(PathBuf, Vec<PathBuf>)>) -> Result<()> {
    let read = |e: std::io::Error| anyhow!("{}: cannot list directory: {e}", dir.display());
    let mut entries = std::fs::read_dir(dir)
        .map_err(read)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(read)?;
    entries.sort();
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for p in entries {
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        // Follows symbolic links (Hugging Face snapshots link files into a blob store).
        let Ok(meta) = std::fs::metadata(&p) else {
            continue; // a dangling link
        };
        if meta.is_dir() {
            dirs.push(p);
        } else if meta.is_file() && finevision::is_parquet(&p)? {
            files.push(p);
        }
    }
    if !files.is_empty() {
        out.push((dir.to_path_buf(), files));
    }
    if depth < MAX_DEPTH {
        for d in dirs {
            parquet_dirs(&d, depth + 1, out)?;
        }
    }
    Ok(())
}

/// Reads every sample of `--data` (all sources); any bad row is an error. Holds every
/// sample, images included, in memory: for small data; use [`choose_portion`] otherwise.
pub fn read_samples(path: &Path) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for source in open_sources(path)? {
        let all: Vec<usize> = (0..source.len()).collect();
        for row in source.read_rows(&all)? {
            out.push(row??);
        }
    }
    Ok(out)
}

/// The rows chosen from each source of a `--data` path; read them with [`Portion::iter`].
#[derive(Debug, Clone)]
pub struct Portion {
    sources: Vec<Source>,
    chosen: Vec<Vec<usize>>,
}

impl Portion {
    /// Number of chosen rows over all sources.
    pub fn len(&self) -> usize {
        self.chosen.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// The chosen row indices of each source (same order as [`Portion::sources`]).
    pub fn chosen(&self) -> &[Vec<usize>] {
        &self.chosen
    }

    /// Total rows over all sources.
    pub fn total(&self) -> usize {
        self.sources.iter().map(Source::len).sum()
    }

    /// Streams the chosen rows, source by source, each in row order (see [`Rows`]).
    pub fn iter(&self) -> impl Iterator<Item = Result<Result<Sample>>> + '_ {
        self.sources
            .iter()
            .zip(&self.chosen)
            .flat_map(|(s, rows)| match s.read_rows(rows) {
                Ok(it) => it,
                Err(e) => Box::new(std::iter::once(Err(e))) as Rows,
            })
    }
}

/// Which rows a portion takes from each source (`--take`).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Take {
    /// Rows drawn at random with the seed (ours; a portion then covers the whole source).
    #[default]
    Random,
    /// The first rows of each source, in file order (the INTERLACE authors' preparation
    /// takes the first 1 % of every FineVision subset).
    First,
}

impl Take {
    pub fn name(self) -> &'static str {
        match self {
            Take::Random => "random",
            Take::First => "first",
        }
    }
}

/// Opens `--data` and chooses rows per source with [`choose_per_source`].
pub fn choose_portion(
    path: &Path,
    portion: f64,
    samples: Option<usize>,
    seed: u64,
    take: Take,
) -> Result<Portion> {
    let sources = open_sources(path)?;
    let sizes: Vec<usize> = sources.iter().map(Source::len).collect();
    if sizes.iter().sum::<usize>() == 0 {
        bail!("{}: no samples", path.display());
    }
    let chosen = choose_per_source(&sizes, portion, samples, seed, take)?;
    Ok(Portion { sources, chosen })
}

/// [`choose_portion`], then every chosen row read into memory (fine for small portions;
/// [`Portion::iter`] streams). The outer error is the first file-level one.
pub fn load_portion(
    path: &Path,
    portion: f64,
    samples: Option<usize>,
    seed: u64,
    take: Take,
) -> Result<Vec<Result<Sample>>> {
    choose_portion(path, portion, samples, seed, take)?
        .iter()
        .collect()
}

/// The readable ones of the samples `load_portion` chooses; the problem of each unreadable
/// one is added to `unreadable` (as one line). None readable at all is an error naming
/// `path` and the first problem.
pub fn readable_portion(
    path: &Path,
    portion: f64,
    samples: Option<usize>,
    seed: u64,
    take: Take,
    unreadable: &mut Vec<String>,
) -> Result<Vec<Sample>> {
    let before = unreadable.len();
    let chosen: Vec<Sample> = load_portion(path, portion, samples, seed, take)?
        .into_iter()
        .filter_map(|r| r.map_err(|e| unreadable.push(crate::error_line(&e))).ok())
        .collect();
    if chosen.is_empty() {
        bail!(
            "{}: none of the chosen samples can be read (first problem: {})",
            path.display(),
            unreadable
                .get(before)
                .map(String::as_str)
                .unwrap_or("no samples")
        );
    }
    Ok(chosen)
}

/// Chooses rows in each of several sources of `sizes` rows, with [`choose`] per source and
/// the same `seed` for each: `portion` of every source (at least one row of each non-empty
/// source), or, with `samples`, that many rows in all, split over the sources in
/// proportion to their sizes by [`split_samples`]. For a single source this is exactly
/// `choose(n, portion, samples, seed, take)`.
pub fn choose_per_source(
    sizes: &[usize],
    portion: f64,
    samples: Option<usize>,
    seed: u64,
    take: Take,
) -> Result<Vec<Vec<usize>>> {
    let shares: Vec<Option<usize>> = match samples {
        None => vec![None; sizes.len()],
        Some(k) => split_samples(k, sizes).into_iter().map(Some).collect(),
    };
    sizes
        .iter()
        .zip(shares)
        .map(|(&n, k)| choose(n, portion, k, seed, take))
        .collect()
}

/// Splits `total` samples over sources of `sizes` rows in proportion to their sizes, by
/// largest remainder (Hamilton): each source gets floor(total × size / Σ sizes), and the
/// rows left over go one each to the largest fractional parts, ties to the earlier source.
/// With `total` ≥ Σ sizes every source is taken whole. The shares sum to min(total, Σ sizes)
/// and no share exceeds its source.
pub fn split_samples(total: usize, sizes: &[usize]) -> Vec<usize> {
    let n: u128 = sizes.iter().map(|&s| s as u128).sum();
    if total as u128 >= n {
        return sizes.to_vec();
    }
    let t = total as u128;
    let mut shares: Vec<usize> = sizes
        .iter()
        .map(|&s| (t * s as u128 / n) as usize)
        .collect();
    let rem: Vec<u128> = sizes.iter().map(|&s| t * s as u128 % n).collect();
    let left = total - shares.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| rem[b].cmp(&rem[a]).then(a.cmp(&b)));
    for &i in order.iter().take(left) {
        shares[i] += 1;
    }
    shares
}

/// Chooses which samples to use: `samples` of them, or else `portion` of them (at least
/// one; the count rounded down), at random with `seed` or the first ones (`take`),
/// returned in file order.
pub fn choose(
    n: usize,
    portion: f64,
    samples: Option<usize>,
    seed: u64,
    take: Take,
) -> Result<Vec<usize>> {
    if !(portion > 0.0 && portion <= 1.0) {
        bail!("--portion must be in (0, 1], got {portion}");
    }
    let want = match samples {
        Some(k) => k.min(n),
        None => ((n as f64 * portion) as usize).max(1).min(n),
    };
    if take == Take::First {
        return Ok((0..want).collect());
    }
    let mut idx: Vec<usize> = (0..n).collect();
    crate::rng::SplitMix64::new(seed).shuffle(&mut idx);
    let mut chosen = idx[..want].to_vec();
    chosen.sort_unstable();
    Ok(chosen)
}
