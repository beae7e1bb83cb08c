//! A predictions spreadsheet (.xlsx, as VLMEvalKit writes them) scored by
//! `eval --predictions`: the workbook, its first sheet, the table, the rows and the scores.
#![no_main]
mod common;

use interlace::eval::{BenchSpec, Benchmark};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::file("m_AI2D_TEST.xlsx", data);
    match Benchmark::open_predictions(&BenchSpec::new(&path), Some(256)) {
        Ok(bench) => {
            if let Ok(outcomes) = bench.predictions() {
                let _ = interlace::eval::report::score_benchmark(&bench, &outcomes, 32);
            }
        }
        Err(e) => {
            let line = interlace::error_line(&e);
            assert!(line.contains("m_AI2D_TEST.xlsx"), "{line}");
        }
    }
});
