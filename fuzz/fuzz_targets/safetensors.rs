//! A checkpoint's `model.safetensors` (header, offsets, dtypes, shapes) loaded as a model next
//! to the tiny test model's config.json.
//!
//! Inputs are usually a header alone: when the header's JSON parses, the data section is
//! padded with zeros up to the largest offset it names (at most 64 MiB), so the fuzzer
//! explores names, dtypes, shapes and offsets without carrying megabytes of weights.
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;

/// `data` with its data section zero-padded to the end its header declares.
fn padded(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let Some(n) = data
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    else {
        return out;
    };
    let Some(header) = usize::try_from(n)
        .ok()
        .and_then(|n| data.get(8..8usize.checked_add(n)?))
    else {
        return out;
    };
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(header) else {
        return out;
    };
    let end = map
        .values()
        .filter_map(|v| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let want = 8 + n as usize + end.min(64 << 20) as usize;
    if want > out.len() {
        out.resize(want, 0);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let dir = common::scratch().join("model");
    if !dir.join("config.json").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let src = common::fixtures().join("models/tiny-a/config.json");
        std::fs::copy(src, dir.join("config.json")).unwrap();
    }
    std::fs::write(dir.join("model.safetensors"), padded(data)).unwrap();
    let device = candle_core::Device::Cpu;
    if let Err(e) = interlace::model::Model::load(&dir, candle_core::DType::F32, &device) {
        let line = interlace::error_line(&e);
        assert!(line.contains(dir.to_str().unwrap()), "{line}");
    }
});
