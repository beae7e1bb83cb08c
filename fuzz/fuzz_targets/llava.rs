//! LLaVA-style conversation data (a JSON array or JSONL), every record turned into a sample.
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::file("data.jsonl", data);
    match interlace::data::llava::open(&path) {
        Ok(records) => {
            for i in 0..records.len() {
                let _ = records.sample(i);
            }
        }
        Err(e) => {
            let line = interlace::error_line(&e);
            assert!(line.contains("data.jsonl"), "{line}");
        }
    }
});
