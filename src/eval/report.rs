//! Scoring a benchmark's predictions and the evaluation report (`report.json` and
//! `report.md`).
//!
//! Scores are percentages (0–100). A benchmark's score is the mean over its scored units
//! (rows; for circular MMBench/CCBench, questions with all their rotations), except POPE,
//! whose headline score is F1 as in VLMEvalKit's `POPE_rating` (accuracy, precision and
//! recall are reported next to it; other yes/no benchmarks report accuracy first). Category
//! means are the mean unit scores per `category` (POPE's comma-separated categories count for
//! each of their parts, as VLMEvalKit explodes them) and per `l2-category`. Malformed rows are
//! counted and listed with their error, never scored.
//!
//! With a baseline report, the relative performance of docs/SPEC.md: per benchmark, score ÷
//! baseline score, and the equal-weight mean of these ratios over the benchmarks both reports
//! scored.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use crate::eval::benchmarks::{BenchRow, BenchSpec, Benchmark, Item, Task};
use crate::eval::metrics::{
    can_infer, count_correct, count_correct_vlmevalkit, first_number, normalize_vqa_answer,
    ocrbench_correct, relaxed_accuracy, vqa_score, yes_no_metrics, yorn_extraction, YesNo,
};

/// Everything one evaluation produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The model directory (as given).
    pub model: String,
    pub benchmarks: Vec<BenchReport>,
    /// Relative performance against a baseline report, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative: Option<Relative>,
    /// Set when the evaluation stopped early (the model itself failed): why. The report then
    /// holds the rows answered before it; the others are marked "not answered".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// The protocol that produced the predictions (`eval --protocol`); none for scored
    /// prediction files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// An evaluation that stopped because the model failed (not a single row's problem), with
/// what was scored before it: callers that do not look for it see an ordinary error.
#[derive(Debug)]
pub struct EvalStopped {
    pub partial: EvalReport,
}

impl std::fmt::Display for EvalStopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            self.partial
                .stopped
                .as_deref()
                .unwrap_or("evaluation stopped"),
        )
    }
}

impl std::error::Error for EvalStopped {}

/// One benchmark's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// File stem of the TSV file.
    pub name: String,
    pub file: String,
    pub task: Task,
    /// Why the task is what it is.
    pub task_from: String,
    /// Name of the headline metric (`accuracy`, `circular accuracy`, `F1`, ...).
    pub metric: String,
    /// The headline score in percent; `None` when no row could be scored.
    pub score: Option<f64>,
    /// Data rows evaluated (after `--limit`).
    pub rows: usize,
    /// Units that entered the score (rows, or questions in circular evaluation).
    pub scored: usize,
    /// Rows that could not be evaluated.
    pub malformed: usize,
    pub max_new_tokens: usize,
    /// Every metric computed, in percent (the headline one included).
    pub metrics: BTreeMap<String, f64>,
    /// Mean unit score per `category`.
    #[serde(default)]
    pub categories: BTreeMap<String, GroupScore>,
    /// Mean unit score per `l2-category`.
    #[serde(default)]
    pub l2_categories: BTreeMap<String, GroupScore>,
    /// One entry per row, in file order.
    #[serde(default)]
    pub results: Vec<RowResult>,
}

/// A mean score (percent) over `count` units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroupScore {
    pub score: f64,
    pub count: usize,
}

/// One row's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowResult {
    pub index: String,
    /// Line of the TSV file where the row starts.
    pub line: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The user text the model saw (after its images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The model's answer (special tokens removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<String>,
    /// What the scorer read from the prediction: the option letter, Yes/No/Unknown, the
    /// normalised answer, the number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extracted: Option<String>,
    /// The row's score in [0, 1] (1 or 0 except for VQA accuracy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Whether the row is right (score 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct: Option<bool>,
    /// Circular evaluation: the index of the question this row is a rotation of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Why the row is malformed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Relative performance against a baseline (docs/SPEC.md): score ÷ baseline score per benchmark
/// and their equal-weight mean, as fractions (1.0 = as good as the baseline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relative {
    /// The baseline report's path.
    pub baseline: String,
    /// The baseline's score per benchmark (percent).
    pub baseline_scores: BTreeMap<String, f64>,
    pub ratios: BTreeMap<String, f64>,
    /// Mean of `ratios`; `None` when no benchmark could be compared.
    pub mean: Option<f64>,
    /// Benchmarks of this report without a usable baseline score (missing, or 0).
    #[serde(default)]
    pub missing: Vec<String>,
}

/// How one prediction scores on one question.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub extracted: Option<String>,
    /// In [0, 1].
    pub score: f64,
    /// Yes/no questions: (reference, extracted).
    pub yes_no: Option<(YesNo, YesNo)>,
}

/// Scores `prediction` on `item` with the rules of `task` ([`crate::eval::metrics`]).
pub fn judge(task: Task, item: &Item, category: Option<&str>, prediction: &str) -> Verdict {
    let refs = &item.references;
    let bool_score = |b: bool| f64::from(u8::from(b));
    match task {
        Task::Mcq => {
            let answer = refs.first().and_then(|r| r.chars().next());
            let got = can_infer(prediction.trim(), &item.options);
            Verdict {
                extracted: got.map(String::from),
                score: bool_score(got.is_some() && got == answer),
                yes_no: None,
            }
        }
        Task::Yorn => {
            let truth = refs
                .first()
                .and_then(|r| YesNo::parse_reference(r))
                .unwrap_or(YesNo::Unknown);
            let got = yorn_extraction(prediction);
            Verdict {
                extracted: Some(got.as_str().to_string()),
                score: bool_score(got == truth && truth != YesNo::Unknown),
                yes_no: Some((truth, got)),
            }
        }
        Task::Vqa => Verdict {
            extracted: Some(normalize_vqa_answer(prediction)),
            score: vqa_score(prediction, refs),
            yes_no: None,
        },
        Task::Chartqa => Verdict {
            extracted: Some(prediction.trim().to_string()),
            score: relaxed_accuracy(prediction, refs),
            yes_no: None,
        },
        Task::Ocrbench => Verdict {
            extracted: None,
            score: bool_score(ocrbench_correct(prediction, refs, category)),
            yes_no: None,
        },
        Task::Count => Verdict {
            extracted: None,
            score: bool_score(
                refs.first()
                    .is_some_and(|a| count_correct_vlmevalkit(prediction, a)),
            ),
            yes_no: None,
        },
        Task::CountNumber => Verdict {
            extracted: first_number(prediction).map(|v| v.to_string()),
            score: bool_score(refs.first().is_some_and(|a| count_correct(prediction, a))),
            yes_no: None,
        },
    }
}

fn pct(x: f64) -> f64 {
    x * 100.0
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// A scored unit: its score and the row whose categories it counts under.
struct Unit<'a> {
    score: f64,
    row: &'a BenchRow,
}

/// Builds a benchmark's report from its rows' outcomes: `outcomes[i]` is row i's prediction,
/// or the reason it could not be run (a malformed row, a bad image). `outcomes` must be as
/// long as `bench.rows`.
pub fn score_benchmark(
    bench: &Benchmark,
    outcomes: &[std::result::Result<String, String>],
    max_new_tokens: usize,
) -> BenchReport {
    assert_eq!(outcomes.len(), bench.rows.len(), "one outcome per row");
    let pope = bench.name.contains("POPE");
    let mut results = Vec::with_capacity(bench.rows.len());
    let mut verdicts: Vec<Option<Verdict>> = Vec::with_capacity(bench.rows.len());
    for (row, outcome) in bench.rows.iter().zip(outcomes) {
        let mut r = RowResult {
            index: row.index.clone(),
            line: row.line,
            category: row.category.clone(),
            prompt: row.item.as_ref().ok().map(|i| i.prompt.clone()),
            prediction: None,
            extracted: None,
            score: None,
            correct: None,
            group: None,
            error: None,
        };
        let verdict = match (&row.item, outcome) {
            (Err(e), _) | (Ok(_), Err(e)) => {
                r.error = Some(e.clone());
                None
            }
            (Ok(item), Ok(prediction)) => {
                // Scored as VLMEvalKit scores it (NA-like answers become "nan"); the report
                // keeps what the model said.
                let scored = crate::eval::benchmarks::vlmevalkit_prediction(prediction);
                let v = judge(bench.task, item, row.category.as_deref(), scored);
                r.prediction = Some(prediction.clone());
                r.extracted = v.extracted.clone();
                r.score = Some(v.score);
                if bench.task != Task::Vqa {
                    r.correct = Some(v.score >= 1.0);
                }
                Some(v)
            }
        };
        if bench.circular {
            r.group = circular_group(row).map(|g| g.to_string());
        }
        results.push(r);
        verdicts.push(verdict);
    }

    let mut metrics = BTreeMap::new();
    let units: Vec<Unit> = if bench.circular {
        circular_units(bench, &verdicts, &mut metrics)
    } else {
        bench
            .rows
            .iter()
            .zip(&verdicts)
            .filter_map(|(row, v)| {
                v.as_ref().map(|v| Unit {
                    score: v.score,
                    row,
                })
            })
            .collect()
    };
    let unit_scores: Vec<f64> = units.iter().map(|u| u.score).collect();
    let overall = mean(&unit_scores).map(pct);
    let metric = match bench.task {
        Task::Mcq if bench.circular => "circular accuracy",
        Task::Mcq => "accuracy",
        Task::Yorn if pope => "F1",
        Task::Yorn => "accuracy",
        Task::Vqa => "VQA accuracy",
        Task::Chartqa => "relaxed accuracy",
        Task::Ocrbench => "accuracy",
        Task::Count | Task::CountNumber => "accuracy",
    };
    let mut score = overall;
    if let Some(s) = overall {
        metrics.insert(
            if bench.task == Task::Yorn {
                "accuracy"
            } else {
                metric
            }
            .to_string(),
            s,
        );
    }
    if bench.task == Task::Yorn && pope {
        score = pope_rating(bench, &verdicts, &mut metrics);
    } else if bench.task == Task::Yorn {
        let pairs: Vec<(YesNo, YesNo)> =
            verdicts.iter().flatten().filter_map(|v| v.yes_no).collect();
        if let Some(m) = yes_no_metrics(&pairs) {
            metrics.insert("precision".into(), pct(m.precision));
            metrics.insert("recall".into(), pct(m.recall));
            metrics.insert("F1".into(), pct(m.f1));
        }
    }
    if bench.task == Task::Ocrbench {
        // VLMEvalKit's "Final Score": the number of right answers (of 1000 in OCRBench).
        metrics.insert("final_score".into(), unit_scores.iter().sum());
    }

    let mut categories: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut l2: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for u in &units {
        if let Some(c) = &u.row.category {
            let parts: Vec<&str> = if pope {
                c.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()
            } else {
                vec![c.as_str()]
            };
            for p in parts {
                categories.entry(p.to_string()).or_default().push(u.score);
            }
        }
        if let Some(c) = &u.row.l2_category {
            l2.entry(c.clone()).or_default().push(u.score);
        }
    }
    let summarize = |m: BTreeMap<String, Vec<f64>>| {
        m.into_iter()
            .map(|(k, v)| {
                let g = GroupScore {
                    score: pct(mean(&v).unwrap_or(0.0)),
                    count: v.len(),
                };
                (k, g)
            })
            .collect()
    };

    BenchReport {
        name: bench.name.clone(),
        file: bench.path.display().to_string(),
        task: bench.task,
        task_from: bench.task_from.clone(),
        metric: metric.to_string(),
        score,
        rows: bench.rows.len(),
        scored: units.len(),
        malformed: results.iter().filter(|r| r.error.is_some()).count(),
        max_new_tokens,
        metrics,
        categories: summarize(categories),
        l2_categories: summarize(l2),
        results,
    }
}

/// The additive pieces of a benchmark report's headline score, one per scoring unit (rows;
/// the main rows of a circular benchmark's questions), in the benchmark's row order, for
/// [`crate::eval::stats`]: the benchmark's rows are judged again from the report's answers
/// with the rules of [`score_benchmark`], so the summed counts give the report's score.
pub fn score_units(
    bench: &Benchmark,
    report: &BenchReport,
) -> Result<(
    crate::eval::stats::Aggregate,
    Vec<crate::eval::stats::Counts>,
)> {
    use crate::eval::stats::Aggregate;
    if report.results.len() != bench.rows.len()
        || report
            .results
            .iter()
            .zip(&bench.rows)
            .any(|(r, row)| r.index != row.index)
    {
        anyhow::bail!(
            "{}: the report of {} holds other rows than the benchmark file",
            bench.path.display(),
            report.name
        );
    }
    let verdicts: Vec<Option<Verdict>> = bench
        .rows
        .iter()
        .zip(&report.results)
        .map(|(row, r)| match (&row.item, &r.prediction) {
            (Ok(item), Some(p)) if r.error.is_none() => Some(judge(
                bench.task,
                item,
                row.category.as_deref(),
                crate::eval::benchmarks::vlmevalkit_prediction(p),
            )),
            _ => None,
        })
        .collect();
    let mean = |score: Option<f64>| score.map_or([0.0; 4], |s| [s, 1.0, 0.0, 0.0]);
    if bench.circular {
        let mut unused = BTreeMap::new();
        let units = circular_units(bench, &verdicts, &mut unused);
        // Every main row is a unit; the questions circular_units scored have their score.
        let scored: BTreeMap<&str, f64> = units
            .iter()
            .map(|u| (u.row.index.as_str(), u.score))
            .collect();
        let counts = bench
            .rows
            .iter()
            .filter(|row| {
                matches!(
                    (row.index.parse::<u64>(), circular_group(row)),
                    (Ok(i), Some(g)) if i == g
                )
            })
            .map(|row| mean(scored.get(row.index.as_str()).copied()))
            .collect();
        return Ok((Aggregate::Mean, counts));
    }
    if bench.task == Task::Yorn && bench.name.contains("POPE") {
        let counts = bench
            .rows
            .iter()
            .zip(&verdicts)
            .map(|(row, v)| {
                let Some((truth, pred)) = v.as_ref().and_then(|v| v.yes_no) else {
                    return [0.0; 4];
                };
                // As in pope_rating: once per comma-separated split.
                let k = row.category.as_ref().map_or(1, |c| c.split(',').count()) as f64;
                let (t, p) = (truth == YesNo::Yes, pred == YesNo::Yes);
                [
                    k * f64::from(u8::from(t && p)),
                    k * f64::from(u8::from(!t && p)),
                    k * f64::from(u8::from(t && !p)),
                    k,
                ]
            })
            .collect();
        return Ok((Aggregate::F1, counts));
    }
    Ok((
        Aggregate::Mean,
        verdicts
            .iter()
            .map(|v| mean(v.as_ref().map(|v| v.score)))
            .collect(),
    ))
}

/// VLMEvalKit's `POPE_rating`: a row whose `category` names several splits joined by commas
/// ("adversarial,popular,random") is one row per split, in the overall numbers too; overall
/// accuracy, precision, recall and F1, then the same per split ("F1 (random)", ...).
/// Returns the overall F1 (POPE's score).
fn pope_rating(
    bench: &Benchmark,
    verdicts: &[Option<Verdict>],
    metrics: &mut BTreeMap<String, f64>,
) -> Option<f64> {
    let mut overall: Vec<(YesNo, YesNo)> = Vec::new();
    let mut splits: BTreeMap<&str, Vec<(YesNo, YesNo)>> = BTreeMap::new();
    for (row, v) in bench.rows.iter().zip(verdicts) {
        let Some(pair) = v.as_ref().and_then(|v| v.yes_no) else {
            continue;
        };
        match &row.category {
            // pandas' str.split(','): no trimming, empty parts kept.
            Some(c) => {
                for part in c.split(',') {
                    overall.push(pair);
                    splits.entry(part).or_default().push(pair);
                }
            }
            None => overall.push(pair),
        }
    }
    let m = yes_no_metrics(&overall)?;
    metrics.insert("accuracy".into(), pct(m.accuracy));
    metrics.insert("precision".into(), pct(m.precision));
    metrics.insert("recall".into(), pct(m.recall));
    metrics.insert("F1".into(), pct(m.f1));
    for (split, pairs) in &splits {
        if let Some(s) = yes_no_metrics(pairs) {
            metrics.insert(format!("accuracy ({split})"), pct(s.accuracy));
            metrics.insert(format!("precision ({split})"), pct(s.precision));
            metrics.insert(format!("recall ({split})"), pct(s.recall));
            metrics.insert(format!("F1 ({split})"), pct(s.f1));
        }
    }
    Some(pct(m.f1))
}

/// The circular group of a row: its `g_index` cell, else its index modulo 1 000 000.
fn circular_group(row: &crate::eval::benchmarks::BenchRow) -> Option<u64> {
    row.g_index
        .or_else(|| row.index.parse::<u64>().ok().map(|i| i % 1_000_000))
}

/// VLMEvalKit's circular evaluation (`mcq_circular_eval` in exact-matching mode): the rows
/// whose index modulo 1 000 000 equals a main row's index are that question with rotated
/// options; the question is right only if every rotation's inferred option is its answer.
/// A question any of whose rotations is malformed is not scored.
fn circular_units<'a>(
    bench: &'a Benchmark,
    verdicts: &[Option<Verdict>],
    metrics: &mut BTreeMap<String, f64>,
) -> Vec<Unit<'a>> {
    let mut groups: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, row) in bench.rows.iter().enumerate() {
        if let Some(g) = circular_group(row) {
            groups.entry(g).or_default().push(i);
        }
    }
    let mut units = Vec::new();
    for (i, row) in bench.rows.iter().enumerate() {
        let (Ok(idx), Some(g)) = (row.index.parse::<u64>(), circular_group(row)) else {
            continue;
        };
        // The group's main row is the one whose index is the group's.
        if idx != g {
            continue;
        }
        let members = &groups[&g];
        let scores: Option<Vec<f64>> = members
            .iter()
            .map(|&m| verdicts[m].as_ref().map(|v| v.score))
            .collect();
        if let (Some(scores), Some(_)) = (scores, &verdicts[i]) {
            let all = scores.iter().all(|&s| s >= 1.0);
            units.push(Unit {
                score: f64::from(u8::from(all)),
                row,
            });
        }
    }
    let row_scores: Vec<f64> = verdicts.iter().flatten().map(|v| v.score).collect();
    if let Some(m) = mean(&row_scores) {
        // Every rotation counted on its own (VLMEvalKit's vanilla evaluation of the same file).
        metrics.insert("row accuracy".into(), pct(m));
    }
    units
}

impl EvalReport {
    /// The headline score of a benchmark, by name.
    pub fn score(&self, benchmark: &str) -> Option<f64> {
        self.benchmarks
            .iter()
            .find(|b| b.name == benchmark)
            .and_then(|b| b.score)
    }

    /// Reads a report written by [`EvalReport::write`].
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| anyhow!("{}: not an interlace eval report: {e}", path.display()))
    }

    /// Writes the report as JSON to `path` and as Markdown next to it (`.md`), each
    /// atomically.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let json = serde_json::to_string_pretty(self)?;
        crate::fsio::write_atomic(path, json.as_bytes())?;
        crate::fsio::write_atomic(&markdown_path(path), self.to_markdown().as_bytes())
    }

    /// Fills [`EvalReport::relative`] from baseline scores (benchmark name → percent).
    pub fn set_baseline(&mut self, baseline: &str, scores: &BTreeMap<String, f64>) {
        self.relative = Some(relative_performance(self, baseline, scores));
    }

    /// The Markdown summary: one table row per benchmark, the relative performance, and each
    /// benchmark's category means.
    pub fn to_markdown(&self) -> String {
        let rel = self.relative.as_ref();
        let mut s = format!("# Evaluation of `{}`\n\n", self.model);
        if let Some(p) = &self.protocol {
            s.push_str(&format!("Protocol: {}.\n\n", md(p)));
        }
        if let Some(why) = &self.stopped {
            s.push_str(&format!(
                "**Incomplete**: the evaluation stopped ({}). Rows not answered before it count as malformed below.\n\n",
                md(why)
            ));
        }
        s.push_str("| benchmark | task | metric | score | scored | rows | malformed |");
        if rel.is_some() {
            s.push_str(" baseline | relative |");
        }
        s.push_str("\n|---|---|---|---:|---:|---:|---:|");
        if rel.is_some() {
            s.push_str("---:|---:|");
        }
        s.push('\n');
        for b in &self.benchmarks {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                md(&b.name),
                b.task,
                b.metric,
                fmt_score(b.score),
                b.scored,
                b.rows,
                b.malformed
            ));
            if let Some(r) = rel {
                s.push_str(&format!(
                    " {} | {} |",
                    fmt_score(r.baseline_scores.get(&b.name).copied()),
                    r.ratios
                        .get(&b.name)
                        .map(|x| format!("{:.1} %", x * 100.0))
                        .unwrap_or_else(|| "–".into())
                ));
            }
            s.push('\n');
        }
        if let Some(r) = rel {
            s.push_str(&format!(
                "\nRelative performance against `{}` (mean of score ÷ baseline over {} benchmarks, equal weight): **{}**\n",
                r.baseline,
                r.ratios.len(),
                r.mean
                    .map(|m| format!("{:.1} %", m * 100.0))
                    .unwrap_or_else(|| "–".into())
            ));
            if !r.missing.is_empty() {
                s.push_str(&format!(
                    "\nNot compared (no usable baseline score): {}\n",
                    r.missing
                        .iter()
                        .map(|m| md(m))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        for b in &self.benchmarks {
            let extra: Vec<String> = b
                .metrics
                .iter()
                .filter(|(k, _)| **k != b.metric)
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect();
            s.push_str(&format!("\n## {}\n\n", md(&b.name)));
            s.push_str(&format!(
                "{} ({}), task `{}` from {}; at most {} new tokens per answer.",
                b.metric,
                fmt_score(b.score),
                b.task,
                md(&b.task_from),
                b.max_new_tokens
            ));
            if !extra.is_empty() {
                s.push_str(&format!(" Also: {}.", extra.join(", ")));
            }
            s.push('\n');
            for (title, table) in [
                ("category", &b.categories),
                ("l2-category", &b.l2_categories),
            ] {
                if table.is_empty() {
                    continue;
                }
                s.push_str(&format!("\n| {title} | score | n |\n|---|---:|---:|\n"));
                for (k, g) in table {
                    s.push_str(&format!("| {} | {:.2} | {} |\n", md(k), g.score, g.count));
                }
            }
            let bad: Vec<&RowResult> = b.results.iter().filter(|r| r.error.is_some()).collect();
            if !bad.is_empty() {
                s.push_str(&format!("\nMalformed rows ({}):\n\n", bad.len()));
                for r in bad.iter().take(20) {
                    s.push_str(&format!(
                        "- index {} (line {}): {}\n",
                        md(&r.index),
                        r.line,
                        md(r.error.as_deref().unwrap_or(""))
                    ));
                }
                if bad.len() > 20 {
                    s.push_str(&format!("- … {} more in the JSON report\n", bad.len() - 20));
                }
            }
        }
        s
    }
}

/// `report.json` → `report.md`.
pub fn markdown_path(json_path: &Path) -> std::path::PathBuf {
    json_path.with_extension("md")
}

fn fmt_score(s: Option<f64>) -> String {
    s.map(|x| format!("{x:.2}")).unwrap_or_else(|| "–".into())
}

/// Text safe inside a Markdown table cell.
fn md(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// Relative performance of `report` against baseline scores (docs/SPEC.md: per-benchmark score ÷
/// baseline score, averaged with equal weight). Benchmarks without a score on either side, or
/// with a baseline score of 0, are listed in `missing` and left out of the mean.
pub fn relative_performance(
    report: &EvalReport,
    baseline: &str,
    scores: &BTreeMap<String, f64>,
) -> Relative {
    let mut ratios = BTreeMap::new();
    let mut missing = Vec::new();
    for b in &report.benchmarks {
        match (b.score, scores.get(&b.name)) {
            (Some(s), Some(&base)) if base > 0.0 => {
                ratios.insert(b.name.clone(), s / base);
            }
            _ => missing.push(b.name.clone()),
        }
    }
    let values: Vec<f64> = ratios.values().copied().collect();
    Relative {
        baseline: baseline.to_string(),
        baseline_scores: scores.clone(),
        mean: mean(&values),
        ratios,
        missing,
    }
}

/// The per-benchmark headline scores of a report file (`benchmarks[].name` and `.score`);
/// only these fields are read, so reports of older or newer versions work as baselines.
pub fn read_baseline_scores(path: &Path) -> Result<BTreeMap<String, f64>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow!("{}: not valid JSON: {e}", path.display()))?;
    let benches = json
        .get("benchmarks")
        .and_then(|b| b.as_array())
        .ok_or_else(|| {
            anyhow!(
                "{}: not an interlace eval report (no 'benchmarks' list)",
                path.display()
            )
        })?;
    let mut out = BTreeMap::new();
    for b in benches {
        let name = b
            .get("name")
            .and_then(|n| n.as_str())
            .ok_or_else(|| anyhow!("{}: a benchmark entry has no 'name'", path.display()))?;
        if let Some(score) = b.get("score").and_then(|s| s.as_f64()) {
            out.insert(name.to_string(), score);
        }
    }
    Ok(out)
}

/// Re-scores the predictions of an earlier `report.json` with today's rules, without a
/// model: each benchmark's questions and answers come from the file the report names (as
/// written there, else relative to the report's directory), its answers from the report.
/// `task` replaces the task the report used; otherwise it is kept (so a file is scored as it
/// was run). `limit` keeps the first rows. Carried over: model, protocol, and why the run
/// stopped, if it did.
pub fn rescore_report(path: &Path, task: Option<Task>, limit: Option<usize>) -> Result<EvalReport> {
    let old = EvalReport::read(path)?;
    if old.benchmarks.is_empty() {
        return Err(anyhow!("{}: the report has no benchmark", path.display()));
    }
    let mut benchmarks = Vec::with_capacity(old.benchmarks.len());
    for b in &old.benchmarks {
        let written = Path::new(&b.file);
        let beside = path.parent().map(|d| d.join(written));
        let file = if written.is_file() {
            written.to_path_buf()
        } else if let Some(p) = beside.filter(|p| written.is_relative() && p.is_file()) {
            p
        } else {
            return Err(anyhow!(
                "{}: benchmark {}: its file {} is not found (also looked next to the report); re-scoring needs the benchmark's questions and answers",
                path.display(),
                b.name,
                b.file
            ));
        };
        let rows = limit.map_or(b.results.len(), |l| l.min(b.results.len()));
        let spec = BenchSpec {
            path: file.clone(),
            task: Some(task.unwrap_or(b.task)),
        };
        let mut bench = Benchmark::open_questions(&spec, Some(rows))?;
        bench.name = b.name.clone();
        if task.is_none() {
            bench.task_from = b.task_from.clone();
        }
        if bench.rows.len() != rows {
            return Err(anyhow!(
                "{}: benchmark {}: {} has {} rows, the report {}: the file changed since the report",
                path.display(),
                b.name,
                file.display(),
                bench.rows.len(),
                rows
            ));
        }
        let mut outcomes = Vec::with_capacity(rows);
        for (row, result) in bench.rows.iter().zip(&b.results) {
            if row.index != result.index {
                return Err(anyhow!(
                    "{}: benchmark {}: row {} of {} has index {}, the report's {}: the file changed since the report",
                    path.display(),
                    b.name,
                    row.line,
                    file.display(),
                    row.index,
                    result.index
                ));
            }
            outcomes.push(match &result.prediction {
                Some(p) => Ok(p.clone()),
                None => Err(result
                    .error
                    .clone()
                    .unwrap_or_else(|| "no prediction in the report".to_string())),
            });
        }
        benchmarks.push(score_benchmark(&bench, &outcomes, b.max_new_tokens));
    }
    Ok(EvalReport {
        model: old.model,
        benchmarks,
        relative: None,
        stopped: old.stopped,
        protocol: old.protocol,
    })
}
