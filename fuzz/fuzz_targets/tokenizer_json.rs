//! A model's tokenizer.json, loaded as a model directory's tokenizer, then used.
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = common::scratch().join("tok");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), data).unwrap();
    match interlace::processor::Tokenizer::from_dir(&dir) {
        Ok(tok) => {
            if let Ok(ids) = tok.encode("Hello <|image_pad|> wörld 12", true) {
                let _ = tok.decode(&ids, false);
            }
        }
        Err(e) => {
            let line = interlace::error_line(&e);
            assert!(line.contains("tokenizer.json"), "{line}");
        }
    }
});
