//! A benchmark in VLMEvalKit's TSV layout: table, columns, task detection, rows, and the
//! base64 images of every row.
#![no_main]
mod common;

use interlace::eval::{BenchSpec, Benchmark};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::file("bench.tsv", data);
    match Benchmark::open(&BenchSpec::new(&path), Some(64)) {
        Ok(bench) => {
            for row in &bench.rows {
                let _ = bench.load_images(row);
            }
        }
        Err(e) => {
            let line = interlace::error_line(&e);
            assert!(line.contains("bench.tsv"), "{line}");
        }
    }
});
