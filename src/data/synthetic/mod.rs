//! TEMPORARY stub of the synthetic data API (replaced by the real generator on merge).
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::eval::benchmarks::Task;

#[derive(Debug, Clone, Default)]
pub struct SynthOptions {
    pub seed: u64,
    pub train_rows: usize,
    pub bench_rows: usize,
}

pub struct SynthBench {
    pub name: String,
    pub file: PathBuf,
    pub task: Task,
    pub category: String,
    pub rows: usize,
    pub chance: f64,
}

pub struct SynthManifest {
    pub seed: u64,
    pub train: PathBuf,
    pub benchmarks: Vec<SynthBench>,
}

impl SynthManifest {
    pub fn read(dir: &Path) -> Result<Self> {
        bail!("{}: synthetic data not available yet", dir.display())
    }
}

pub fn write_synth(out: &Path, _opts: &SynthOptions) -> Result<SynthManifest> {
    bail!("{}: synthetic data not available yet", out.display())
}
