//! `interlace synth`: a deterministic procedural generator of images and questions for
//! pretraining and evaluating tiny vision-language models.
//!
//! Eight task families, each written as a FineVision training source
//! (`train/<Family>/part-00000.parquet`) and a VLMEvalKit benchmark (`bench/<Family>.tsv`),
//! plus a manifest `synth.json`. A training row's user text is exactly the prompt
//! `interlace eval` shows the model for that row ([`build_prompt`]), its assistant text
//! exactly the answer form the scorer expects (option letter, `Yes`/`No`, a word, a number),
//! or with [`SynthOptions::worked`] a longer form the scorer reads as the same answer.
//!
//! With [`SynthOptions::captions`], for pretraining from scratch: every training row gets a
//! second turn that asks "Describe the image." and answers with every object, its size,
//! colour, shape and place (or the word spelled out, the bars' values, the counts), about
//! twenty supervised tokens that depend on the image against one or two in the answer; and
//! a ninth, training-only family (SynthBasic: one large object, the easiest grounding, with
//! three times the rows, about a quarter of the training data) joins as a warm-up. With
//! [`SynthOptions::warm_ups`] too, six more training-only warm-ups: easy forms of the
//! benchmarks' questions ([`Family::WARM_UPS`]).
//!
//! Determinism: every row has its own ChaCha8 stream, keyed by (seed, family, split, row),
//! so the same seed gives byte-identical files, and benchmark rows come from other streams
//! than training rows.
//!
//! Output directory: written under a temporary sibling name and renamed when complete. An
//! existing `--out` must be empty, or be a previous synth output (it holds `synth.json`),
//! which is then replaced; anything else is refused.

pub mod draw;
pub mod tasks;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::finevision_write::{part_path, write_finevision, FineVisionRow};
use crate::eval::benchmarks::build_prompt;
use crate::eval::tsv::{encode_base64, tsv_line};
use crate::eval::Task;
pub use tasks::{Example, Family, CAPTION_PROMPT};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthOptions {
    pub seed: u64,
    /// Training rows per task family.
    pub train_rows: usize,
    /// Rows per benchmark.
    pub bench_rows: usize,
    /// Give every training row a second turn ("Describe the image." and the scene in
    /// words) and add the training-only warm-up family SynthBasic: data for pretraining
    /// from scratch. Benchmarks are the same either way.
    pub captions: bool,
    /// With captions, also the six easier training-only warm-up families (SynthBasicPOPE,
    /// SynthBasicMCQ, SynthBasicCount, SynthBasicText, SynthBasicChart, SynthBasicHR): easy
    /// forms of the benchmarks' questions for a curriculum (`pretrain --first`).
    pub warm_ups: bool,
    /// Training answers with the work shown ([`Example::worked_answer`]): the option's text
    /// for multiple choice, what the image shows before Yes/No. Scored the same; for a
    /// model that has not learned to map what it sees to an option letter or a verdict.
    pub worked: bool,
    /// Training rows of the yes/no families (SynthPOPE, SynthBasicPOPE) ask this many more
    /// yes/no questions about the same image, as further turns before the caption
    /// ([`probes`]): the same scene asked about each shape in its own colour and in
    /// another. 0: one question per row, as the benchmark asks.
    pub probes: usize,
    /// Rows of the training-only, text-only source SynthWordsPOPE ([`in_words`]):
    /// SynthPOPE scenes given in words instead of an image, each with its yes/no question
    /// and `probes` more. 0: none.
    pub in_words: usize,
    /// Rows of the training-only source SynthShapesPOPE ([`shapes`]): SynthPOPE scenes,
    /// each with [`SHAPES_QUESTIONS`] yes/no questions that only the shapes decide (a
    /// colour that is there, on its own shape or on another one). 0: none.
    pub shapes: usize,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self {
            seed: 42,
            train_rows: 4000,
            bench_rows: 100,
            captions: false,
            warm_ups: false,
            worked: false,
            probes: 0,
            in_words: 0,
            shapes: 0,
        }
    }
}

impl SynthOptions {
    /// Rows generated in all: every training family's and every benchmark's.
    pub fn total_rows(&self) -> usize {
        self.training_families()
            .iter()
            .map(|f| f.train_rows(self.train_rows))
            .sum::<usize>()
            + self.in_words
            + self.shapes
            + Family::ALL.len() * self.bench_rows
    }

    /// The training families written: the eight benchmarks'; with captions, SynthBasic;
    /// with warm-ups, the other warm-up families too.
    pub fn training_families(&self) -> &'static [Family] {
        if self.captions && self.warm_ups {
            &Family::TRAINING
        } else if self.captions {
            &Family::TRAINING[..Family::ALL.len() + 1]
        } else {
            &Family::ALL
        }
    }
}

/// One written benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthBench {
    pub name: String,
    /// Absolute path of the TSV file.
    pub file: PathBuf,
    pub task: Task,
    /// One of the paper's four categories: `text/chart`, `general`, `perception`,
    /// `instruction/science`.
    pub category: String,
    pub rows: usize,
    /// Expected score (0..1, not percent) of uniform random guessing under our scorer,
    /// averaged over the rows: 1/4 for the four-option questions, 1/k for an answer drawn
    /// from k classes (1/6 counts, 1/100 words, 1/9 bar values, 1/#bars tallest bar), 0.5
    /// for SynthPOPE (half the answers are yes, so guessing yes or no at random has
    /// expected accuracy and F1 of about 0.5; always answering yes gets F1 0.67).
    pub chance: f64,
}

/// What `write_synth` wrote (also `synth.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct SynthManifest {
    pub seed: u64,
    /// Absolute path of the training directory (one subdirectory per family).
    pub train: PathBuf,
    pub families: Vec<String>,
    pub benchmarks: Vec<SynthBench>,
}

/// The manifest file's name inside the output directory.
pub const MANIFEST: &str = "synth.json";

#[derive(Serialize, Deserialize)]
struct ManifestFile {
    seed: u64,
    train: String,
    families: Vec<String>,
    benchmarks: Vec<BenchFile>,
}

#[derive(Serialize, Deserialize)]
struct BenchFile {
    name: String,
    file: String,
    task: Task,
    category: String,
    rows: usize,
    chance: f64,
}

impl SynthManifest {
    /// Reads `dir/synth.json`; paths in it are relative to `dir` and come back absolute.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let m: ManifestFile = serde_json::from_str(&text)
            .map_err(|e| anyhow!("{}: not a synth manifest: {e}", path.display()))?;
        let base = std::path::absolute(dir)
            .with_context(|| format!("{}: cannot resolve", dir.display()))?;
        Ok(Self {
            seed: m.seed,
            train: base.join(&m.train),
            families: m.families,
            benchmarks: m
                .benchmarks
                .into_iter()
                .map(|b| SynthBench {
                    name: b.name,
                    file: base.join(&b.file),
                    task: b.task,
                    category: b.category,
                    rows: b.rows,
                    chance: b.chance,
                })
                .collect(),
        })
    }
}

/// Which split a row belongs to: its own random streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Bench,
}

/// The random stream of one row: ChaCha8 keyed by (seed, family, split, row).
pub fn row_rng(seed: u64, family: Family, split: Split, row: usize) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let f = Family::TRAINING
        .iter()
        .position(|&x| x == family)
        .expect("a family") as u64;
    key[8..16].copy_from_slice(&f.to_le_bytes());
    key[16..24].copy_from_slice(&u64::from(split == Split::Bench).to_le_bytes());
    key[24..].copy_from_slice(&(row as u64).to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// Row `row` of `family` in `split`.
pub fn example(seed: u64, family: Family, split: Split, row: usize) -> Example {
    family.generate(&mut row_rng(seed, family, split, row), row)
}

/// Training only: `n` more yes/no questions about the image of row `row` of `family`
/// (a yes/no family; empty otherwise), from their own random stream, so the row itself is
/// the same with or without them.
pub fn probes(seed: u64, family: Family, row: usize, n: usize) -> Vec<Example> {
    if n == 0 {
        return Vec::new();
    }
    let mut row_rng = row_rng(seed, family, Split::Train, row);
    let mut rng = row_rng.clone();
    rng.set_stream(1);
    family.probes(&mut row_rng, row, &mut rng, n)
}

/// The name of `--in-words`' training-only source.
pub const IN_WORDS: &str = "SynthWordsPOPE";

/// Row `row` of SynthWordsPOPE, as (user, assistant) turns: a SynthPOPE scene in words
/// ("The image: a large red circle at the top left; ...") before its yes/no question (the
/// eval prompt), then `probes` more questions, answered with `worked` answers or not. No
/// image: for learning the verdict's last step (the colour seen against the one asked)
/// from text, where a row costs a few dozen tokens. Its own random streams: no SynthPOPE
/// training or benchmark row is repeated.
pub fn in_words(seed: u64, row: usize, probes: usize, worked: bool) -> Vec<(String, String)> {
    let family = Family::Pope;
    let mut rng = row_rng(seed, family, Split::Train, row);
    rng.set_stream(2);
    let mut scene = rng.clone();
    let ex = family.generate(&mut rng, row);
    let mut probe_rng = scene.clone();
    probe_rng.set_stream(3);
    let more = family.probes(&mut scene, row, &mut probe_rng, probes);
    let mut turns = vec![(
        format!("The image: {}.\n{}", ex.caption, prompt(family, &ex)),
        ex.training_answer(worked),
    )];
    turns.extend(
        more.iter()
            .map(|e| (prompt(family, e), e.training_answer(worked))),
    );
    turns
}

/// The name of `--shapes`' training-only source.
pub const SHAPES: &str = "SynthShapesPOPE";

/// Yes/no questions per SynthShapesPOPE row.
pub const SHAPES_QUESTIONS: usize = 4;

/// Row `row` of SynthShapesPOPE: [`SHAPES_QUESTIONS`] yes/no questions about one
/// SynthPOPE scene (1–3 objects of distinct shapes and colours), each naming a colour
/// that is there with its own shape (yes) or with another one (no; the first question's
/// answer is yes for even rows, then they alternate). SynthPOPE's "same colour" negatives,
/// which a model that finds colours but not shapes gets wrong. Every example holds the
/// same image and caption. Its own random stream: no SynthPOPE row is repeated.
pub fn shapes(seed: u64, row: usize) -> Vec<Example> {
    let mut rng = row_rng(seed, Family::Pope, Split::Train, row);
    rng.set_stream(4);
    Family::shape_questions(&mut rng, row, SHAPES_QUESTIONS)
}

/// The user text of an example: exactly `interlace eval`'s prompt for it.
pub fn prompt(family: Family, ex: &Example) -> String {
    build_prompt(family.task(), &ex.question, ex.hint.as_deref(), &ex.options)
}

/// Rows per Parquet row group.
const GROUP_ROWS: usize = 500;

/// Generates everything into `out` (see the module documentation for the layout and the
/// rules for an existing `out`). `progress` is called with (rows done, rows in all).
pub fn write_synth_with(
    out: &Path,
    opts: &SynthOptions,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<SynthManifest> {
    if opts.train_rows == 0 && opts.bench_rows == 0 {
        bail!("nothing to generate: --train-rows and --bench-rows are both 0");
    }
    if opts.warm_ups && !opts.captions {
        bail!("--warm-ups needs --captions: the warm-up families are for pretraining from scratch");
    }
    check_out(out)?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a directory name", out.display()))?
        .to_string_lossy()
        .into_owned();
    if !parent.is_dir() {
        bail!(
            "{}: the parent directory {} does not exist",
            out.display(),
            parent.display()
        );
    }
    let tmp = parent.join(format!(".{name}.synth-tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .with_context(|| format!("{}: cannot remove", tmp.display()))?;
    }
    let result = write_all(&tmp, opts, progress);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if out.exists() {
        let old = parent.join(format!(".{name}.synth-old-{}", std::process::id()));
        std::fs::rename(out, &old)
            .with_context(|| format!("{}: cannot move the previous output away", out.display()))?;
        std::fs::rename(&tmp, out)
            .with_context(|| format!("{}: cannot rename {} to it", out.display(), tmp.display()))?;
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("{}: cannot remove", old.display()))?;
    } else {
        std::fs::rename(&tmp, out)
            .with_context(|| format!("{}: cannot rename {} to it", out.display(), tmp.display()))?;
    }
    SynthManifest::read(out)
}

/// [`write_synth_with`] without progress reports.
pub fn write_synth(out: &Path, opts: &SynthOptions) -> Result<SynthManifest> {
    write_synth_with(out, opts, &mut |_, _, _| {})
}

/// An existing `out` must be an empty directory or a previous synth output.
fn check_out(out: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(out) else {
        return Ok(());
    };
    if !meta.is_dir() {
        bail!("{}: exists and is not a directory", out.display());
    }
    let mut entries =
        std::fs::read_dir(out).with_context(|| format!("{}: cannot list", out.display()))?;
    if entries.next().is_none() || out.join(MANIFEST).is_file() {
        return Ok(());
    }
    bail!(
        "{}: exists and is neither empty nor a previous synth output (no {MANIFEST}); \
         choose another --out or remove it",
        out.display()
    )
}

fn write_all(
    dir: &Path,
    opts: &SynthOptions,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<()> {
    let mk = |p: &Path| {
        std::fs::create_dir_all(p).with_context(|| format!("{}: cannot create", p.display()))
    };
    mk(dir)?;
    mk(&dir.join("train"))?;
    mk(&dir.join("bench"))?;
    let total = opts.total_rows();
    let mut done = 0;
    let mut benches = Vec::new();
    for &family in opts.training_families() {
        let n_train = family.train_rows(opts.train_rows);
        if n_train > 0 {
            let mut rows = Vec::with_capacity(n_train);
            for start in (0..n_train).step_by(GROUP_ROWS) {
                let end = (start + GROUP_ROWS).min(n_train);
                let chunk = (start..end)
                    .into_par_iter()
                    .map(|i| {
                        let turn =
                            |e: &Example| (prompt(family, e), e.training_answer(opts.worked));
                        let ex = example(opts.seed, family, Split::Train, i);
                        let mut texts = vec![turn(&ex)];
                        for p in probes(opts.seed, family, i, opts.probes) {
                            texts.push(turn(&p));
                        }
                        if opts.captions {
                            texts.push((CAPTION_PROMPT.to_string(), ex.caption.clone()));
                        }
                        Ok(FineVisionRow {
                            images: vec![ex.image.to_png()?],
                            texts,
                            source: family.name().to_string(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                rows.extend(chunk);
                done += end - start;
                progress(done, total, family.name());
            }
            let fdir = dir.join("train").join(family.name());
            mk(&fdir)?;
            write_finevision(&part_path(&fdir, 0), &rows, GROUP_ROWS)?;
        }
        if !Family::ALL.contains(&family) {
            continue; // training only
        }
        let (text, chance) = bench_tsv(opts.seed, family, opts.bench_rows)?;
        let file = format!("bench/{}.tsv", family.name());
        let path = dir.join(&file);
        std::fs::write(&path, text).with_context(|| format!("{}: cannot write", path.display()))?;
        done += opts.bench_rows;
        progress(done, total, family.name());
        benches.push(BenchFile {
            name: family.name().to_string(),
            file,
            task: family.task(),
            category: family.category().to_string(),
            rows: opts.bench_rows,
            chance,
        });
    }
    let mut families: Vec<String> = opts
        .training_families()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    // The training-only extra sources, after the families.
    let mut write_extra = |name: &str, rows: &[FineVisionRow]| -> Result<()> {
        let fdir = dir.join("train").join(name);
        mk(&fdir)?;
        write_finevision(&part_path(&fdir, 0), rows, GROUP_ROWS)?;
        done += rows.len();
        progress(done, total, name);
        families.push(name.to_string());
        Ok(())
    };
    if opts.in_words > 0 {
        let rows = (0..opts.in_words)
            .into_par_iter()
            .map(|i| FineVisionRow {
                images: Vec::new(),
                texts: in_words(opts.seed, i, opts.probes, opts.worked),
                source: IN_WORDS.to_string(),
            })
            .collect::<Vec<_>>();
        write_extra(IN_WORDS, &rows)?;
    }
    if opts.shapes > 0 {
        let rows = (0..opts.shapes)
            .into_par_iter()
            .map(|i| {
                let exs = shapes(opts.seed, i);
                let mut texts: Vec<(String, String)> = exs
                    .iter()
                    .map(|e| (prompt(Family::Pope, e), e.training_answer(opts.worked)))
                    .collect();
                if opts.captions {
                    texts.push((CAPTION_PROMPT.to_string(), exs[0].caption.clone()));
                }
                Ok(FineVisionRow {
                    images: vec![exs[0].image.to_png()?],
                    texts,
                    source: SHAPES.to_string(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        write_extra(SHAPES, &rows)?;
    }
    let manifest = ManifestFile {
        seed: opts.seed,
        train: "train".to_string(),
        families,
        benchmarks: benches,
    };
    let path = dir.join(MANIFEST);
    let mut json = serde_json::to_string_pretty(&manifest)?;
    json.push('\n');
    std::fs::write(&path, json).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

/// The benchmark file of `family` and its chance score (mean over rows; 0 for no rows).
pub fn bench_tsv(seed: u64, family: Family, rows: usize) -> Result<(String, f64)> {
    let examples: Vec<(Example, String)> = (0..rows)
        .into_par_iter()
        .map(|i| {
            let ex = example(seed, family, Split::Bench, i);
            let png = ex.image.to_png()?;
            Ok((ex, encode_base64(&png)))
        })
        .collect::<Result<_>>()?;
    let mcq = family.task() == Task::Mcq;
    let hint = examples.iter().any(|(e, _)| e.hint.is_some());
    let mut header = vec!["index", "image", "question"];
    if hint {
        header.push("hint");
    }
    if mcq {
        header.extend(["A", "B", "C", "D"]);
    }
    header.extend(["answer", "category", "l2-category"]);
    let mut out = tsv_line(&header);
    for (i, (ex, b64)) in examples.iter().enumerate() {
        let mut f: Vec<String> = vec![i.to_string(), b64.clone(), ex.question.clone()];
        if hint {
            f.push(ex.hint.clone().unwrap_or_default());
        }
        if mcq {
            for letter in ['A', 'B', 'C', 'D'] {
                f.push(
                    ex.options
                        .iter()
                        .find(|(c, _)| *c == letter)
                        .map(|(_, t)| t.clone())
                        .unwrap_or_default(),
                );
            }
        }
        f.push(ex.answer.clone());
        f.push(ex.kind.to_string());
        f.push(family.category().to_string());
        out.push_str(&tsv_line(&f));
    }
    let chance = if rows == 0 {
        0.0
    } else {
        examples.iter().map(|(e, _)| e.chance).sum::<f64>() / rows as f64
    };
    Ok((out, chance))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_base64_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode_base64(plain.as_bytes()), enc);
        }
    }

    #[test]
    fn synthetic_tsv_quoting_as_pandas() {
        assert_eq!(tsv_line(&["a", "b c"]), "a\tb c\n");
        assert_eq!(
            tsv_line(&["say \"hi\"", "x\ty"]),
            "\"say \"\"hi\"\"\"\t\"x\ty\"\n"
        );
    }

    #[test]
    fn synthetic_rows_follow_the_scorers_forms() {
        for family in Family::TRAINING {
            for row in 0..200 {
                let ex = example(7, family, Split::Train, row);
                let (w, h) = (ex.image.width, ex.image.height);
                assert!(w % 32 == 0 && h % 32 == 0 && w * h <= 50176, "{w}x{h}");
                match family.task() {
                    Task::Mcq => {
                        assert_eq!(ex.options.len(), 4, "{family:?}");
                        let texts: std::collections::HashSet<_> =
                            ex.options.iter().map(|(_, t)| t).collect();
                        assert_eq!(texts.len(), 4, "distinct options: {:?}", ex.options);
                        assert!(["A", "B", "C", "D"].contains(&ex.answer.as_str()));
                    }
                    Task::Yorn => {
                        let want = if row % 2 == 0 { "Yes" } else { "No" };
                        assert_eq!(ex.answer, want);
                    }
                    Task::CountNumber => {
                        let n: u32 = ex.answer.parse().unwrap();
                        assert!((1..=6).contains(&n));
                    }
                    _ => assert!(!ex.answer.is_empty() && ex.options.is_empty()),
                }
                assert!(ex.chance > 0.0 && ex.chance <= 0.5);
            }
        }
    }

    #[test]
    fn synthetic_worked_answers_score_as_the_reference_and_agree_with_the_question() {
        use crate::eval::metrics::{
            can_infer, can_infer_option, ocrbench_correct, yorn_extraction, YesNo,
        };
        for family in Family::TRAINING {
            for row in 0..200 {
                let ex = example(11, family, Split::Train, row);
                let worked = ex.worked_answer();
                match family.task() {
                    Task::Mcq => {
                        // The option's text, read by can_infer_text, not a letter.
                        assert_eq!(can_infer_option(&worked, &ex.options), None, "{worked}");
                        let letter = can_infer(&worked, &ex.options).map(String::from);
                        assert_eq!(letter.as_deref(), Some(ex.answer.as_str()), "{worked}");
                    }
                    Task::Yorn => {
                        let verdict = YesNo::parse_reference(&ex.answer).unwrap();
                        assert_eq!(yorn_extraction(&worked), verdict, "{worked}");
                        // The stated observation decides the question on its own: "Is there
                        // a C S in the image?" is Yes exactly when "The S is C".
                        let asked: Vec<&str> =
                            ex.question.trim_end_matches('?').split(' ').collect();
                        let (colour, shape) = (asked[3], asked[4]);
                        let seen = worked.rsplit_once(". ").unwrap().0;
                        if let Some(s) = seen.strip_prefix("There is no ") {
                            assert_eq!((s, verdict), (shape, YesNo::No), "{worked}");
                        } else {
                            let said = format!("The {shape} is {colour}");
                            assert_eq!(
                                seen == said,
                                verdict == YesNo::Yes,
                                "{}: {worked}",
                                ex.question
                            );
                        }
                    }
                    Task::Ocrbench => {
                        // "The letters C A T. CAT": the word's letters, then the word, which
                        // OCRBench's containment rule reads as the answer.
                        let want = ex.answer.chars().map(String::from).collect::<Vec<_>>();
                        let want = format!("The letters {}. {}", want.join(" "), ex.answer);
                        assert_eq!(worked, want);
                        assert!(ocrbench_correct(
                            &worked,
                            std::slice::from_ref(&ex.answer),
                            None
                        ));
                    }
                    _ => assert_eq!(worked, ex.answer),
                }
            }
        }
    }

    #[test]
    fn synthetic_streams_differ_between_splits() {
        let a = example(1, Family::Vqa, Split::Train, 3);
        let b = example(1, Family::Vqa, Split::Bench, 3);
        let c = example(1, Family::Vqa, Split::Train, 3);
        assert_ne!(a.image, b.image);
        assert_eq!(a.image, c.image);
    }
}
