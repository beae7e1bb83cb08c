//! Benchmarks in VLMEvalKit's TSV format: which task a file is, its rows as questions, and
//! the prompt each question gets.
//!
//! # Files
//!
//! Columns (VLMEvalKit's `ImageBaseDataset`): `index`, `question`, `answer`, optional `hint`,
//! option columns `A`..`Z` (a missing or empty cell, or one of the strings pandas reads as
//! NaN such as `nan`, `NA`, `None`, means "no such option"), the image as base64 in `image`
//! (a Python/JSON list of base64 strings for several images; a cell of at most 64 characters
//! is the `index` of another row whose image it shares, as in MMBench) or as a path in
//! `image_path` (relative to the TSV file; also possibly a list), `category`, and optional
//! `l2-category` and `split`. Column names other than the option letters are matched without
//! regard to case. The benchmark name is the file stem (`MMBench_DEV_EN.tsv` →
//! `MMBench_DEV_EN`).
//!
//! A row that cannot be evaluated is *malformed*: no question, no answer, an answer letter
//! that is not one of the row's options, a yes/no answer that is neither, a count answer
//! without a number, no image (VLMEvalKit drops such rows), and, found when the row is run,
//! bad base64 or an image that does not decode. Malformed rows are reported and counted;
//! the rest of the file is evaluated.
//!
//! # Task
//!
//! `--bench FILE:TASK` sets it. Otherwise it follows from the name as VLMEvalKit's dataset
//! classes decide it (`vlmeval/dataset/image_mcq.py`, `image_yorn.py`, `image_vqa.py`):
//!
//! | task | names |
//! |---|---|
//! | `mcq` | MMBench (all versions), CCBench, SEEDBench, ScienceQA, AI2D, MMStar, RealWorldQA, BLINK, HRBench4K/8K, VStarBench, MMT-Bench, A-OKVQA |
//! | `yorn` | POPE, HallusionBench, MME, AMBER |
//! | `vqa` | TextVQA_VAL |
//! | `chartqa` | ChartQA_TEST |
//! | `ocrbench` | OCRBench |
//!
//! then, for renamed files, from words in the name (case ignored): `mmbench`/`ccbench` →
//! mcq, `pope`/`hallusion` → yorn, `ocrbench` → ocrbench, `chartqa` → chartqa, `textvqa` →
//! vqa, `count` → count; and last, like VLMEvalKit's custom datasets, from the columns:
//! `mcq` when columns `A` and `B` exist, else `vqa`. Benchmarks VLMEvalKit scores with an LLM
//! judge or with ANLS (MIA-Bench, MMVet, MathVista, DocVQA, ...) are refused unless a task
//! is given explicitly. Multiple-choice files whose name contains MMBench, CCBench,
//! "circular" or MMCR are scored with VLMEvalKit's *circular* evaluation (rows of one
//! `g_index`, or without that column whose `index` modulo 1 000 000 agree, are one question
//! with rotated options; the question counts as right only if every rotation is right).
//!
//! # Prompts
//!
//! As VLMEvalKit builds them for Qwen3-VL (`Qwen3VLPromptMixin`,
//! `vlmeval/vlm/qwen3_vl/prompt.py`, which Qwen3-VL uses for every MCQ, Y/N and VQA dataset):
//! one user message, all images first, then the text; rendered with the model's chat template
//! and the generation prompt; greedy decoding.
//!
//! - `mcq`: `Hint: {hint}\n` (when there is one) + `Question: {question}\n` + `Options:\n` +
//!   one `{letter}. {text}\n` per option + `Answer with the option letter only.`, trailing
//!   whitespace stripped.
//! - `yorn`: `{question} Please answer yes or no.`
//! - `vqa`, `chartqa`, `ocrbench`, `count`: `{question}\nPlease answer concisely with short
//!   words or phrases when possible.` (VLMEvalKit has no counting dataset class; counting
//!   questions get the VQA prompt.)
//!
//! (Qwen2-VL's mixin, `vlmeval/vlm/qwen2_vl/prompt.py`, ends MCQ prompts with `Please select
//! the correct answer from the options above.` and VQA prompts with `\nPlease try to answer
//! the question with short words or phrases if possible.`; the datasets' own prompts, used by
//! models without a custom prompt, end MCQ with `Please select the correct answer from the
//! options above. \n` and VQA with `\nAnswer the question using a single word or phrase.`.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::eval::metrics::{first_number, YesNo};
use crate::eval::tsv::{decode_base64, parse_list_literal, Cell, Table};
use crate::processor::{load_image, load_image_from_memory, DynamicImage};

/// How a benchmark's answers are scored (see [`crate::eval::metrics`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Multiple choice: option letter, else option text; accuracy.
    Mcq,
    /// Yes/no: accuracy, precision, recall, F1 ("yes" positive).
    Yorn,
    /// Open VQA: VQA accuracy over several human answers.
    Vqa,
    /// ChartQA relaxed accuracy (numbers within 5 %).
    Chartqa,
    /// OCRBench: the answer is contained in the prediction.
    Ocrbench,
    /// Counting as VLMEvalKit's `CountBenchQA` scores it: the answer occurs in the
    /// prediction (so "There are 12 stars" counts as 2, and "three" is not 3).
    Count,
    /// Counting, our stricter rule: the first number of the prediction (digits or an English
    /// number word) equals the answer. `interlace synth`'s SynthCount uses it.
    #[serde(rename = "count-number")]
    CountNumber,
}

impl Task {
    pub const ALL: [Task; 7] = [
        Task::Mcq,
        Task::Yorn,
        Task::Vqa,
        Task::Chartqa,
        Task::Ocrbench,
        Task::Count,
        Task::CountNumber,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Task::Mcq => "mcq",
            Task::Yorn => "yorn",
            Task::Vqa => "vqa",
            Task::Chartqa => "chartqa",
            Task::Ocrbench => "ocrbench",
            Task::Count => "count",
            Task::CountNumber => "count-number",
        }
    }

    /// A task name as given on the command line (`y/n` and `yn` are `yorn`).
    pub fn parse(s: &str) -> Option<Task> {
        let s = s.trim().to_lowercase();
        match s.as_str() {
            "y/n" | "yn" | "yesno" => Some(Task::Yorn),
            _ => Task::ALL.into_iter().find(|t| t.name() == s),
        }
    }

    /// New tokens generated per question unless `--max-new-tokens` says otherwise: the
    /// prompts ask for a letter, yes/no or a short phrase; OCRBench answers can be whole
    /// lines of text or formulas.
    pub fn default_max_new_tokens(self) -> usize {
        match self {
            Task::Ocrbench => 128,
            _ => 32,
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn task_list() -> String {
    Task::ALL.map(Task::name).join(", ")
}

/// One `--bench` argument: `FILE.tsv` or `FILE.tsv:TASK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchSpec {
    pub path: PathBuf,
    pub task: Option<Task>,
}

impl BenchSpec {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            task: None,
        }
    }

    pub fn with_task(path: impl Into<PathBuf>, task: Task) -> Self {
        Self {
            path: path.into(),
            task: Some(task),
        }
    }
}

impl FromStr for BenchSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Some((path, suffix)) = s.rsplit_once(':') {
            // A suffix with a dot or a slash is part of the path ("data:v2/x.tsv").
            if !path.is_empty() && !suffix.contains(['.', '/', '\\']) {
                return match Task::parse(suffix) {
                    Some(task) => Ok(BenchSpec::with_task(path, task)),
                    None => Err(format!(
                        "{s}: unknown task '{suffix}' after ':' (one of {})",
                        task_list()
                    )),
                };
            }
        }
        if s.is_empty() {
            return Err("empty benchmark path".to_string());
        }
        Ok(BenchSpec::new(s))
    }
}

/// VLMEvalKit dataset names and their task.
const KNOWN: &[(&str, Task)] = &[
    ("MMBench_DEV_EN", Task::Mcq),
    ("MMBench_TEST_EN", Task::Mcq),
    ("MMBench_DEV_CN", Task::Mcq),
    ("MMBench_TEST_CN", Task::Mcq),
    ("MMBench", Task::Mcq),
    ("MMBench_CN", Task::Mcq),
    ("MMBench_DEV_EN_V11", Task::Mcq),
    ("MMBench_TEST_EN_V11", Task::Mcq),
    ("MMBench_DEV_CN_V11", Task::Mcq),
    ("MMBench_TEST_CN_V11", Task::Mcq),
    ("MMBench_V11", Task::Mcq),
    ("MMBench_CN_V11", Task::Mcq),
    ("CCBench", Task::Mcq),
    ("SEEDBench_IMG", Task::Mcq),
    ("SEEDBench2", Task::Mcq),
    ("SEEDBench2_Plus", Task::Mcq),
    ("ScienceQA_VAL", Task::Mcq),
    ("ScienceQA_TEST", Task::Mcq),
    ("AI2D_TEST", Task::Mcq),
    ("AI2D_TEST_NO_MASK", Task::Mcq),
    ("MMStar", Task::Mcq),
    ("RealWorldQA", Task::Mcq),
    ("BLINK", Task::Mcq),
    ("HRBench4K", Task::Mcq),
    ("HRBench8K", Task::Mcq),
    ("VStarBench", Task::Mcq),
    ("MMT-Bench_ALL", Task::Mcq),
    ("MMT-Bench_VAL", Task::Mcq),
    ("A-OKVQA", Task::Mcq),
    ("POPE", Task::Yorn),
    ("HallusionBench", Task::Yorn),
    ("MME", Task::Yorn),
    ("AMBER", Task::Yorn),
    ("TextVQA_VAL", Task::Vqa),
    ("ChartQA_TEST", Task::Chartqa),
    ("OCRBench", Task::Ocrbench),
    ("OCRBench_MINI", Task::Ocrbench),
    // `interlace synth`'s benchmarks (src/synth).
    ("SynthText", Task::Ocrbench),
    ("SynthChart", Task::Chartqa),
    ("SynthVQA", Task::Vqa),
    ("SynthMMB", Task::Mcq),
    ("SynthPOPE", Task::Yorn),
    ("SynthHR", Task::Mcq),
    ("SynthCount", Task::CountNumber),
    ("SynthSci", Task::Mcq),
];

/// Name prefixes of benchmarks VLMEvalKit scores in ways we do not implement.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("MIA-Bench", "an LLM judge"),
    ("MMVet", "an LLM judge"),
    ("MathVista", "an LLM judge"),
    ("MathVerse", "an LLM judge"),
    ("MathVision", "an LLM judge"),
    ("LLaVABench", "an LLM judge"),
    ("DocVQA", "ANLS"),
    ("InfoVQA", "ANLS"),
    ("OCRVQA", "exact-match accuracy"),
    ("GQA", "exact-match accuracy"),
];

/// Where a benchmark's task came from (for the report).
fn task_for(name: &str, header: &[String]) -> Result<(Task, String), String> {
    if let Some((_, task)) = KNOWN.iter().find(|(n, _)| *n == name) {
        return Ok((*task, format!("the name (VLMEvalKit dataset {name})")));
    }
    if let Some((prefix, how)) = UNSUPPORTED.iter().find(|(p, _)| name.starts_with(p)) {
        return Err(format!(
            "VLMEvalKit scores {prefix} with {how}, which interlace does not implement; \
             append :TASK to the path to score it as one of {} anyway",
            task_list()
        ));
    }
    let lower = name.to_lowercase();
    let by_word: &[(&[&str], Task)] = &[
        (&["mmbench", "ccbench"], Task::Mcq),
        (&["pope", "hallusion"], Task::Yorn),
        (&["ocrbench"], Task::Ocrbench),
        (&["chartqa"], Task::Chartqa),
        (&["textvqa"], Task::Vqa),
        (&["count"], Task::Count),
    ];
    for (words, task) in by_word {
        if let Some(w) = words.iter().find(|w| lower.contains(*w)) {
            return Ok((*task, format!("the name (contains '{w}')")));
        }
    }
    let has = |c: &str| header.iter().any(|h| h == c);
    if has("A") && has("B") {
        Ok((
            Task::Mcq,
            "the columns (option columns A and B)".to_string(),
        ))
    } else {
        Ok((Task::Vqa, "the columns (no option columns)".to_string()))
    }
}

/// Where a row's images are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// The `image` cell of this record of the table (its own, or the one it refers to).
    Cell { record: usize },
    /// Files named by `image_path`, resolved against the TSV's directory.
    Paths(Vec<PathBuf>),
    /// None: a predictions file (VLMEvalKit drops the `image` column when it writes one).
    Absent,
}

/// A well-formed question.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub question: String,
    pub hint: Option<String>,
    /// Options in letter order (only those present).
    pub options: Vec<(char, String)>,
    /// The `answer` cell as written.
    pub answer: String,
    /// Reference answers: the letter (mcq), "Yes"/"No" (yorn), the answers of a list cell or
    /// the cell itself (vqa, chartqa, ocrbench), the cell (count).
    pub references: Vec<String>,
    pub images: ImageSource,
    /// The text of the user message (after the images).
    pub prompt: String,
}

/// One data row of a benchmark file.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    /// The `index` cell (the 1-based row number when the file has no `index` column).
    pub index: String,
    /// Line of the TSV file where the row starts.
    pub line: usize,
    pub category: Option<String>,
    pub l2_category: Option<String>,
    pub split: Option<String>,
    /// The `g_index` cell, when the file has that column: the main row's index of this
    /// row's circular group (without it, VLMEvalKit groups by `index` modulo 1 000 000).
    pub g_index: Option<u64>,
    /// The question, or why the row cannot be evaluated.
    pub item: std::result::Result<Item, String>,
}

/// A benchmark file, read and checked; images are decoded only when a row is run.
#[derive(Debug, Clone)]
pub struct Benchmark {
    pub name: String,
    pub path: PathBuf,
    pub task: Task,
    /// Why the task is what it is ("--bench FILE:TASK", "the name (...)", "the columns (...)").
    pub task_from: String,
    /// MMBench-style circular evaluation.
    pub circular: bool,
    pub rows: Vec<BenchRow>,
    table: Table,
    image_col: Option<usize>,
}

/// The strings pandas' `read_csv` reads as NaN (its default `na_values`), which VLMEvalKit
/// then treats as a missing hint or option.
const PANDAS_NA: &[&str] = &[
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
];

/// A prediction as VLMEvalKit scores it: its predictions go through an xlsx file (written by
/// xlsxwriter, read back by `pd.read_excel`), where a cell that is exactly one of pandas'
/// NA strings ("None", "NA", "", ...) becomes NaN, which every evaluator then turns into the
/// text "nan" with `str(x)`. Anything else is unchanged.
pub fn vlmevalkit_prediction(prediction: &str) -> &str {
    if PANDAS_NA.contains(&prediction) {
        "nan"
    } else {
        prediction
    }
}

fn is_na(s: &str) -> bool {
    PANDAS_NA.contains(&s.trim())
}

impl Benchmark {
    /// Reads and checks a benchmark file; `limit` keeps only its first rows. Errors are about
    /// the file as a whole (unreadable, no `question` or `answer` column, a name we cannot
    /// score); bad rows are kept as malformed. A file without an `image` or `image_path`
    /// column is a text-only benchmark (for a text-only model).
    pub fn open(spec: &BenchSpec, limit: Option<usize>) -> Result<Self> {
        Self::open_with(spec, limit, false)
    }

    /// A benchmark file whose questions are to be scored against answers given elsewhere
    /// (an earlier report): as [`Benchmark::open`], but images are not needed.
    pub fn open_questions(spec: &BenchSpec, limit: Option<usize>) -> Result<Self> {
        Self::open_with(spec, limit, false)
    }

    /// A file of predictions in VLMEvalKit's layout (the benchmark's columns without
    /// `image`, plus `prediction`), to be scored without a model: as [`Benchmark::open`],
    /// but images are not needed. [`Benchmark::predictions`] reads the answers.
    pub fn open_predictions(spec: &BenchSpec, limit: Option<usize>) -> Result<Self> {
        let bench = Self::open_with(spec, limit, true)?;
        if bench.column("prediction").is_none() {
            bail!(
                "{}: no 'prediction' column: not a predictions file (VLMEvalKit's layout: the benchmark's columns plus 'prediction')",
                spec.path.display()
            );
        }
        Ok(bench)
    }

    /// Position of a column, by name (case ignored).
    fn column(&self, name: &str) -> Option<usize> {
        self.table
            .header
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name))
    }

    /// The `prediction` cell of every row (of a file opened with
    /// [`Benchmark::open_predictions`]), as the outcomes [`crate::eval::report::score_benchmark`]
    /// takes.
    pub fn predictions(&self) -> Result<Vec<std::result::Result<String, String>>> {
        let col = self
            .column("prediction")
            .with_context(|| format!("{}: no 'prediction' column", self.path.display()))?;
        let records = &self.table.records;
        // Rows are the first records of the table (`limit`), in order, blank lines skipped.
        Ok(records
            .iter()
            .take(self.rows.len())
            .map(|record| match record.cells.get(col) {
                Some(cell) => self
                    .table
                    .cell_text(cell)
                    .map(|t| t.into_owned())
                    .map_err(|e| crate::error_line(&e)),
                None => Err("no prediction cell".to_string()),
            })
            .collect())
    }

    /// Writes the evaluated rows in VLMEvalKit's predictions layout, as its `inference.py`
    /// does: every column of the benchmark but `image` (a `prediction` column replaced),
    /// plus `prediction`, one line per answered row in order; `predictions[i]` is row i's
    /// answer, and rows without one (malformed) are left out, as VLMEvalKit accepts a subset
    /// of a benchmark. Tab-separated as pandas writes TSV.
    pub fn write_predictions(&self, predictions: &[Option<String>], path: &Path) -> Result<()> {
        let keep: Vec<usize> = (0..self.table.header.len())
            .filter(|&i| {
                let h = &self.table.header[i];
                !h.eq_ignore_ascii_case("image") && !h.eq_ignore_ascii_case("prediction")
            })
            .collect();
        let mut header: Vec<&str> = keep
            .iter()
            .map(|&i| self.table.header[i].as_str())
            .collect();
        header.push("prediction");
        let mut out = crate::eval::tsv::tsv_line(&header);
        for (record, prediction) in self.table.records.iter().zip(predictions) {
            let Some(prediction) = prediction else {
                continue;
            };
            let mut fields: Vec<String> = keep
                .iter()
                .map(|&i| match record.cells.get(i) {
                    Some(cell) => self
                        .table
                        .cell_text(cell)
                        .map(|t| t.into_owned())
                        .unwrap_or_default(),
                    None => String::new(),
                })
                .collect();
            fields.push(prediction.clone());
            out.push_str(&crate::eval::tsv::tsv_line(&fields));
        }
        crate::fsio::write_atomic(path, out.as_bytes())
    }

    /// `dataset_name`: a `MODEL_DATASET` file stem names the benchmark DATASET (predictions
    /// files).
    fn open_with(spec: &BenchSpec, limit: Option<usize>, dataset_name: bool) -> Result<Self> {
        let path = &spec.path;
        let table = Table::read(path)?;
        let mut name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| anyhow!("{}: no file name", path.display()))?;
        if dataset_name {
            // VLMEvalKit names its predictions `{model}_{dataset}`: the dataset is the
            // longest known name the stem ends with after an underscore.
            if let Some(known) = name
                .match_indices('_')
                .map(|(i, _)| &name[i + 1..])
                .find(|s| KNOWN.iter().any(|(k, _)| k == s))
            {
                name = known.to_string();
            }
        }
        let col = |n: &str| table.header.iter().position(|h| h.eq_ignore_ascii_case(n));
        let missing = |what: &str| {
            anyhow!(
                "{}: no '{what}' column (columns: {})",
                path.display(),
                table.header.join(", ")
            )
        };
        let question_col = col("question").ok_or_else(|| missing("question"))?;
        let answer_col = col("answer").ok_or_else(|| missing("answer"))?;
        let image_col = col("image");
        let image_path_col = col("image_path");
        let (task, task_from) = match spec.task {
            Some(t) => (t, format!("--bench {}:{t}", path.display())),
            None => task_for(&name, &table.header)
                .map_err(|e| anyhow!("{}: benchmark {name}: {e}", path.display()))?,
        };
        let index_col = col("index");
        let hint_col = col("hint");
        let category_col = col("category");
        let l2_col = col("l2-category");
        let split_col = col("split");
        let g_index_col = col("g_index");
        let option_cols: Vec<(char, usize)> = ('A'..='Z')
            .filter_map(|c| table.column(&c.to_string()).map(|i| (c, i)))
            .collect();

        let n = limit.unwrap_or(usize::MAX).min(table.records.len());
        let mut bench = Benchmark {
            circular: false,
            name,
            path: path.clone(),
            task,
            task_from,
            rows: Vec::with_capacity(n),
            table,
            image_col,
        };
        // An image cell of at most 64 characters names the row whose image it shares
        // (VLMEvalKit `ImageBaseDataset.__init__`).
        let by_index: HashMap<String, usize> = match image_col {
            Some(ic) => bench
                .table
                .records
                .iter()
                .enumerate()
                .filter(|(_, r)| r.cells[ic].len() > 64)
                .filter_map(|(i, r)| {
                    let idx = index_col.map(|c| short_text(&r.cells[c]))?;
                    Some((idx.trim().to_string(), i))
                })
                .collect(),
            None => HashMap::new(),
        };
        let tsv_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        for ri in 0..n {
            let record = &bench.table.records[ri];
            let text = |c: Option<usize>| -> Option<String> {
                c.map(|c| bench.table.cell_text(&record.cells[c]))
                    .and_then(|r| r.ok())
                    .map(|s| s.into_owned())
            };
            let label =
                |c: Option<usize>| text(c).filter(|s| !is_na(s)).map(|s| s.trim().to_string());
            let index = text(index_col)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| (ri + 1).to_string());
            let item = (|| -> std::result::Result<Item, String> {
                if let Some(p) = &record.problem {
                    return Err(p.clone());
                }
                let question = text(Some(question_col)).unwrap_or_default();
                if question.trim().is_empty() {
                    return Err("no question".to_string());
                }
                let answer = text(Some(answer_col)).unwrap_or_default();
                if answer.trim().is_empty() {
                    return Err("no answer".to_string());
                }
                let hint = text(hint_col).filter(|h| !is_na(h));
                let options: Vec<(char, String)> = option_cols
                    .iter()
                    .filter_map(|&(c, i)| {
                        let t = bench.table.cell_text(&record.cells[i]).ok()?;
                        (!is_na(&t)).then(|| (c, t.into_owned()))
                    })
                    .collect();
                let references = references(task, &answer, &options)?;
                let images = match image_col {
                    Some(ic) => {
                        let cell = &record.cells[ic];
                        if cell.is_empty() || (cell.len() <= 64 && is_na(&short_text(cell))) {
                            return Err("no image".to_string());
                        }
                        if cell.len() <= 64 {
                            let target = short_text(cell).trim().to_string();
                            match by_index.get(&target) {
                                Some(&r) => ImageSource::Cell { record: r },
                                None => {
                                    return Err(format!(
                                        "the image cell '{target}' is neither base64 nor the index of a row with an image"
                                    ))
                                }
                            }
                        } else {
                            ImageSource::Cell { record: ri }
                        }
                    }
                    None if image_path_col.is_none() => ImageSource::Absent,
                    None => {
                        let cell = text(image_path_col).unwrap_or_default();
                        if is_na(&cell) {
                            return Err("no image".to_string());
                        }
                        let paths = parse_list_literal(&cell).unwrap_or_else(|| vec![cell.clone()]);
                        if paths.is_empty() {
                            return Err("no image".to_string());
                        }
                        ImageSource::Paths(paths.iter().map(|p| tsv_dir.join(p.trim())).collect())
                    }
                };
                let prompt = build_prompt(task, &question, hint.as_deref(), &options);
                Ok(Item {
                    question,
                    hint,
                    options,
                    answer,
                    references,
                    images,
                    prompt,
                })
            })();
            bench.rows.push(BenchRow {
                index,
                line: record.line,
                category: label(category_col),
                l2_category: label(l2_col),
                split: label(split_col),
                // pandas may have written the column as floats ("3.0").
                g_index: label(g_index_col).and_then(|s| {
                    s.parse::<u64>().ok().or_else(|| {
                        s.parse::<f64>()
                            .ok()
                            .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                            .map(|f| f as u64)
                    })
                }),
                item,
            });
        }
        // VLMEvalKit evaluates circularly the multiple-choice datasets whose name contains
        // mmbench, ccbench, circular or mmcr (`ImageMCQDataset.evaluate_heuristic`); their
        // indexes must be integers.
        let lower = bench.name.to_lowercase();
        bench.circular = task == Task::Mcq
            && ["mmbench", "ccbench", "circular", "mmcr"]
                .iter()
                .any(|w| lower.contains(w))
            && bench.rows.iter().all(|r| r.index.parse::<u64>().is_ok());
        Ok(bench)
    }

    /// Rebuilds every row's prompt for `protocol` (files open with the mixin's prompts).
    pub fn set_protocol(&mut self, protocol: Protocol) {
        let task = self.task;
        // ImageYORNDataset.build_prompt: AMBER alone gets an instruction.
        let amber = protocol == Protocol::Vlmevalkit && task == Task::Yorn && self.name == "AMBER";
        for row in &mut self.rows {
            if let Ok(item) = &mut row.item {
                item.prompt = build_prompt_for(
                    protocol,
                    task,
                    &item.question,
                    item.hint.as_deref(),
                    &item.options,
                );
                if amber {
                    item.prompt.push_str("\nPlease answer yes or no.");
                }
            }
        }
    }

    /// Number of rows that could not be evaluated before running anything.
    pub fn malformed(&self) -> usize {
        self.rows.iter().filter(|r| r.item.is_err()).count()
    }

    /// The images of a row, decoded as transformers' `load_image` does (EXIF orientation,
    /// RGB). Errors are problems of this row (bad base64, undecodable image, missing file).
    pub fn load_images(&self, row: &BenchRow) -> Result<Vec<DynamicImage>> {
        let item = row.item.as_ref().map_err(|e| anyhow!("{e}"))?;
        let name = format!("{}#{}", self.name, row.index);
        match &item.images {
            ImageSource::Paths(paths) => paths.iter().map(load_image).collect(),
            // A benchmark without an image column asks text-only questions (what a
            // text-only model is evaluated on).
            ImageSource::Absent => Ok(Vec::new()),
            ImageSource::Cell { record } => {
                let col = self.image_col.context("no image column")?;
                let cell = &self.table.records[*record].cells[col];
                let bytes = self.table.cell_bytes(cell)?;
                let text = std::str::from_utf8(&bytes)
                    .map_err(|_| anyhow!("{name}: the image cell is not text"))?
                    .trim();
                let parts: Vec<String> = if text.starts_with('[') && text.ends_with(']') {
                    parse_list_literal(text).ok_or_else(|| {
                        anyhow!("{name}: the image cell starts with '[' but is not a list of base64 strings")
                    })?
                } else {
                    vec![text.to_string()]
                };
                if parts.is_empty() {
                    bail!("{name}: the image list is empty");
                }
                let many = parts.len() > 1;
                parts
                    .iter()
                    .enumerate()
                    .map(|(i, b64)| {
                        let what = if many {
                            format!("{name} image {}", i + 1)
                        } else {
                            name.clone()
                        };
                        let bytes = decode_base64(b64.as_bytes())
                            .map_err(|e| anyhow!("{what}: bad base64: {e}"))?;
                        load_image_from_memory(&bytes, &what)
                    })
                    .collect()
            }
        }
    }
}

/// The text of a short cell (empty for cells left in the file).
fn short_text(cell: &Cell) -> String {
    match cell {
        Cell::Text(s) => s.clone(),
        Cell::InFile { .. } => String::new(),
    }
}

/// The reference answers of a row, or why the answer cannot be scored.
fn references(
    task: Task,
    answer: &str,
    options: &[(char, String)],
) -> std::result::Result<Vec<String>, String> {
    let trimmed = answer.trim();
    match task {
        Task::Mcq => {
            let letters: String = options.iter().map(|(c, _)| *c).collect();
            let mut chars = trimmed.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if options.iter().any(|(o, _)| *o == c) => Ok(vec![c.to_string()]),
                _ if options.is_empty() => {
                    Err(format!("answer '{trimmed}' but the row has no options"))
                }
                _ => Err(format!(
                    "answer '{trimmed}' is not one of the row's options ({})",
                    letters
                        .chars()
                        .map(String::from)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
        Task::Yorn => YesNo::parse_reference(trimmed)
            .map(|a| vec![a.as_str().to_string()])
            .ok_or_else(|| format!("answer '{trimmed}' is neither yes nor no")),
        Task::Count | Task::CountNumber => match first_number(trimmed) {
            Some(_) => Ok(vec![trimmed.to_string()]),
            None => Err(format!("answer '{trimmed}' has no number")),
        },
        Task::Vqa | Task::Chartqa | Task::Ocrbench => {
            let refs = if trimmed.starts_with('[') && trimmed.ends_with(']') {
                parse_list_literal(trimmed).unwrap_or_else(|| vec![answer.to_string()])
            } else {
                vec![answer.to_string()]
            };
            if refs.is_empty() {
                Err("the answer list is empty".to_string())
            } else {
                Ok(refs)
            }
        }
    }
}

/// Qwen3-VL's multiple-choice instruction (`Qwen3VLPromptMixin._build_mcq_prompt`).
pub const MCQ_INSTRUCTION: &str = "Answer with the option letter only.";
/// Appended to yes/no questions (`Qwen3VLPromptMixin._build_yorn_prompt`).
pub const YORN_SUFFIX: &str = " Please answer yes or no.";
/// Appended to open questions (`Qwen3VLPromptMixin._build_vqa_prompt`).
pub const VQA_SUFFIX: &str = "\nPlease answer concisely with short words or phrases when possible.";

/// The text of the user message for one question (see the module documentation).
/// How questions are asked and answered (`eval --protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// The prompts of VLMEvalKit's Qwen3-VL prompt mixin, greedy decoding, short answers
    /// (32 new tokens, 128 for OCRBench): deterministic.
    #[default]
    GreedyMixin,
    /// VLMEvalKit's shipped config for Qwen3-VL (`vlmeval/config.py`): the datasets' own
    /// prompts (`use_custom_prompt=False`), sampling at temperature 0.7 with top-p 0.8,
    /// top-k 20 and presence penalty 1.5, up to 16 384 new tokens; seeded by `--seed`.
    Vlmevalkit,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::GreedyMixin => "greedy-mixin",
            Protocol::Vlmevalkit => "vlmevalkit",
        }
    }
}

/// The prompt of a question under `protocol`: [`build_prompt`] for the mixin; for
/// VLMEvalKit's config the datasets' `build_prompt` (`ImageMCQDataset`: hint, question,
/// options and "Please select the correct answer from the options above. \n";
/// `ImageYORNDataset` and `OCRBench`: the question alone; `ImageVQADataset` (TextVQA,
/// ChartQA): the question and "\nAnswer the question using a single word or phrase.";
/// `CountBenchQA`: the question and " Note that: answer with a number directly e.g. 3. Do
/// not include any additional text.").
pub fn build_prompt_for(
    protocol: Protocol,
    task: Task,
    question: &str,
    hint: Option<&str>,
    options: &[(char, String)],
) -> String {
    if protocol == Protocol::GreedyMixin {
        return build_prompt(task, question, hint, options);
    }
    match task {
        Task::Mcq => mcq_prompt(
            question,
            hint,
            options,
            "Please select the correct answer from the options above. \n",
        ),
        Task::Yorn | Task::Ocrbench => question.to_string(),
        Task::Vqa | Task::Chartqa => {
            format!("{question}\nAnswer the question using a single word or phrase.")
        }
        Task::Count | Task::CountNumber => format!(
            "{question} Note that: answer with a number directly e.g. 3. Do not include any additional text."
        ),
    }
}

/// `Hint: {hint}\n` (if any), `Question: {question}\n`, then, when there are options,
/// `Options:\n`, one `{letter}. {text}\n` each and `instruction`: the multiple-choice
/// prompt of both VLMEvalKit's Qwen3-VL mixin and its `ImageMCQDataset`.
fn mcq_prompt(
    question: &str,
    hint: Option<&str>,
    options: &[(char, String)],
    instruction: &str,
) -> String {
    let mut p = String::new();
    if let Some(h) = hint {
        p.push_str(&format!("Hint: {h}\n"));
    }
    p.push_str(&format!("Question: {question}\n"));
    if !options.is_empty() {
        p.push_str("Options:\n");
        for (c, text) in options {
            p.push_str(&format!("{c}. {text}\n"));
        }
        p.push_str(instruction);
    }
    p
}

pub fn build_prompt(
    task: Task,
    question: &str,
    hint: Option<&str>,
    options: &[(char, String)],
) -> String {
    match task {
        Task::Mcq => mcq_prompt(question, hint, options, MCQ_INSTRUCTION)
            .trim_end()
            .to_string(),
        Task::Yorn => format!("{question}{YORN_SUFFIX}"),
        Task::Vqa | Task::Chartqa | Task::Ocrbench | Task::Count | Task::CountNumber => {
            format!("{question}{VQA_SUFFIX}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VLMEvalKit's dataset prompts (use_custom_prompt=False), as its sources build them:
    /// `ImageMCQDataset.build_prompt`, `ImageBaseDataset.build_prompt` (Y/N, OCRBench),
    /// `ImageVQADataset.build_prompt`, `CountBenchQA.build_prompt` (vlmeval/dataset, e8e78f05).
    #[test]
    fn vlmevalkit_protocol_prompts() {
        let opts = vec![('A', "cat".to_string()), ('B', "dog".to_string())];
        let p =
            |task, hint| build_prompt_for(Protocol::Vlmevalkit, task, "What is it?", hint, &opts);
        assert_eq!(
            p(Task::Mcq, Some("Look.")),
            "Hint: Look.\nQuestion: What is it?\nOptions:\nA. cat\nB. dog\nPlease select the correct answer from the options above. \n"
        );
        assert_eq!(p(Task::Yorn, None), "What is it?");
        assert_eq!(p(Task::Ocrbench, None), "What is it?");
        assert_eq!(
            p(Task::Chartqa, None),
            "What is it?\nAnswer the question using a single word or phrase."
        );
        assert_eq!(
            p(Task::Count, None),
            "What is it? Note that: answer with a number directly e.g. 3. Do not include any additional text."
        );
        assert_eq!(
            build_prompt_for(Protocol::GreedyMixin, Task::Yorn, "Q?", None, &[]),
            build_prompt(Task::Yorn, "Q?", None, &[])
        );
    }

    #[test]
    fn bench_specs() {
        assert_eq!(
            "a/b.tsv".parse::<BenchSpec>().unwrap(),
            BenchSpec::new("a/b.tsv")
        );
        assert_eq!(
            "a/b.tsv:MCQ".parse::<BenchSpec>().unwrap(),
            BenchSpec::with_task("a/b.tsv", Task::Mcq)
        );
        assert_eq!(
            "x.tsv:y/n".parse::<BenchSpec>().unwrap(),
            BenchSpec::new("x.tsv:y/n"),
            "a slash makes the suffix part of the path"
        );
        assert_eq!(
            "x.tsv:yn".parse::<BenchSpec>().unwrap(),
            BenchSpec::with_task("x.tsv", Task::Yorn)
        );
        let e = "x.tsv:quiz".parse::<BenchSpec>().unwrap_err();
        assert!(
            e.contains("unknown task 'quiz'") && e.contains("chartqa"),
            "{e}"
        );
        assert_eq!(
            "data:v2/x.tsv".parse::<BenchSpec>().unwrap(),
            BenchSpec::new("data:v2/x.tsv")
        );
    }

    #[test]
    fn task_from_name_then_columns() {
        let ab = vec!["A".to_string(), "B".to_string()];
        let none: Vec<String> = vec![];
        let t = |n: &str, h: &[String]| task_for(n, h).map(|(t, _)| t);
        assert_eq!(t("MMBench_DEV_EN", &none), Ok(Task::Mcq));
        assert_eq!(t("POPE", &none), Ok(Task::Yorn));
        assert_eq!(t("ChartQA_TEST", &none), Ok(Task::Chartqa));
        assert_eq!(t("OCRBench", &none), Ok(Task::Ocrbench));
        assert_eq!(t("TextVQA_VAL", &none), Ok(Task::Vqa));
        assert_eq!(t("HRBench8K", &none), Ok(Task::Mcq));
        assert_eq!(t("my_pope_subset", &none), Ok(Task::Yorn));
        assert_eq!(t("CountBenchQA", &none), Ok(Task::Count));
        assert_eq!(t("custom", &ab), Ok(Task::Mcq));
        assert_eq!(t("custom", &none), Ok(Task::Vqa));
        assert!(t("MIA-Bench", &none).unwrap_err().contains("LLM judge"));
        assert!(t("DocVQA_VAL", &none).unwrap_err().contains("ANLS"));
    }

    /// The exact texts of `vlmeval/vlm/qwen3_vl/prompt.py`.
    #[test]
    fn qwen3_vl_prompts() {
        let opts = vec![('A', "cat".to_string()), ('B', "dog".to_string())];
        assert_eq!(
            build_prompt(Task::Mcq, "What is it?", Some("Look closely."), &opts),
            "Hint: Look closely.\nQuestion: What is it?\nOptions:\nA. cat\nB. dog\nAnswer with the option letter only."
        );
        assert_eq!(
            build_prompt(Task::Mcq, "What is it? ", None, &[]),
            "Question: What is it?"
        );
        assert_eq!(
            build_prompt(Task::Yorn, "Is there a dog?", None, &[]),
            "Is there a dog? Please answer yes or no."
        );
        assert_eq!(
            build_prompt(Task::Chartqa, "How many?", None, &[]),
            "How many?\nPlease answer concisely with short words or phrases when possible."
        );
    }

    #[test]
    fn references_and_malformed_answers() {
        let opts = vec![('A', "x".to_string()), ('B', "y".to_string())];
        assert_eq!(references(Task::Mcq, " B ", &opts).unwrap(), ["B"]);
        assert!(references(Task::Mcq, "C", &opts)
            .unwrap_err()
            .contains("not one of the row's options (A, B)"));
        assert!(references(Task::Mcq, "A", &[]).is_err());
        assert_eq!(references(Task::Yorn, "yes", &[]).unwrap(), ["Yes"]);
        assert!(references(Task::Yorn, "maybe", &[]).is_err());
        assert_eq!(
            references(Task::Vqa, "['a', 'b']", &[]).unwrap(),
            ["a", "b"]
        );
        assert_eq!(references(Task::Vqa, "plain", &[]).unwrap(), ["plain"]);
        assert!(references(Task::Vqa, "[]", &[]).is_err());
        assert!(references(Task::Count, "many", &[]).is_err());
    }
}
