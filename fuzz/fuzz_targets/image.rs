//! Any image file (format sniffing, every decoder the `image` crate is built with, EXIF
//! orientation, the pixel-count limit), then the Qwen3-VL preprocessing of what decoded.
#![no_main]
mod common;

use std::sync::OnceLock;

use interlace::processor::image::{decode_image_bytes, ImageProcessor};
use libfuzzer_sys::fuzz_target;

fn processor() -> &'static ImageProcessor {
    static P: OnceLock<ImageProcessor> = OnceLock::new();
    P.get_or_init(|| ImageProcessor::from_dir(common::fixtures().join("models/tiny-a")).unwrap())
}

fuzz_target!(|data: &[u8]| {
    // At most 4 M pixels declared (decoding larger ones is slow, not interesting).
    if !common::small_image(data, 1 << 22) {
        return;
    }
    match decode_image_bytes(data, "fuzz.img") {
        Ok(img) => {
            // Small images only: the preprocessing of a large one is slow, not interesting.
            if u64::from(img.width()) * u64::from(img.height()) <= 1 << 20 {
                let _ = processor().preprocess(&img);
            }
        }
        Err(e) => {
            let line = interlace::error_line(&e);
            assert!(line.starts_with("fuzz.img"), "{line}");
        }
    }
});
