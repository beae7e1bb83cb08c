//! Shared by the fuzz targets: a scratch directory per process, for parsers that read files.

#![allow(dead_code)]

use std::path::PathBuf;

/// A directory of this process under the system's temporary directory, created once.
pub fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("interlace-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Writes `data` to `name` in the scratch directory and returns its path.
pub fn file(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, data).expect("scratch file");
    path
}

/// Whether the image's header declares at most `max` pixels (unknown formats count as small,
/// so their parsers still run). Large images are legitimately slow to decode; the targets
/// skip them to keep the executions per second up.
pub fn small_image(data: &[u8], max: u64) -> bool {
    let Ok(reader) = image::ImageReader::new(std::io::Cursor::new(data)).with_guessed_format()
    else {
        return true;
    };
    match reader.into_dimensions() {
        Ok((w, h)) => u64::from(w) * u64::from(h) <= max,
        Err(_) => true,
    }
}

/// The repository's test fixtures.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}
