//! A FineVision Parquet file: footer, schema checks, then every row read as a sample.
#![no_main]
mod common;

use interlace::data::finevision::ParquetSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::file("part.parquet", data);
    match ParquetSource::open(&[path]) {
        Ok(source) => {
            // Bounded: a footer may claim any number of rows.
            let rows: Vec<usize> = (0..source.len().min(64)).collect();
            for r in source.read(&rows) {
                if r.is_err() {
                    break;
                }
            }
        }
        Err(e) => {
            let line = interlace::error_line(&e);
            assert!(line.contains("part.parquet"), "{line}");
        }
    }
});
