//! Our libjpeg-exact JPEG decoder on its own.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = interlace::processor::jpeg::decode(data) {
        assert!(img.width() > 0 && img.height() > 0);
    }
});
