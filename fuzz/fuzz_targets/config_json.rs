//! A model's config.json.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(config) = interlace::model::ModelConfig::from_value(value) {
        let _ = config.check_length(100, 10, 8192);
    }
});
