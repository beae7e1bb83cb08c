//! Using a model: greedy generation with a KV cache, latency, and benchmark evaluation in VLMEvalKit's
//! TSV format (`tsv` reads the files, `xlsx` spreadsheets of predictions, `benchmarks` turns rows into questions and prompts,
//! `metrics` scores answers, `report` aggregates and writes the report, `stats` gives comparisons their intervals
//! and tests, `evaluate` runs it all).

pub mod bars;
pub mod benchmarks;
pub mod evaluate;
pub mod generate;
pub mod latency;
pub mod metrics;
pub mod report;
pub mod stats;
pub mod tsv;
pub mod xlsx;

pub use benchmarks::{BenchSpec, Benchmark, Task};
pub use evaluate::{evaluate, evaluate_dir, evaluate_model_dir, open_benchmarks, EvalOptions};
pub use report::{read_baseline_scores, relative_performance, BenchReport, EvalReport, Relative};
