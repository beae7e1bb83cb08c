//! Our libjpeg-exact JPEG decoder on its own (frames of at most 4 M pixels).
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if !common::small_image(data, 1 << 22) {
        return;
    }
    if let Ok(img) = interlace::processor::jpeg::decode(data) {
        assert!(img.width() > 0 && img.height() > 0);
    }
});
