//! With the `cuda` feature: compiles our CUDA kernels (src/kernels/*.cu) to PTX with nvcc
//! for the compute capability in CUDA_COMPUTE_CAP (scripts/build-cuda.sh sets both), and
//! records the capability for `interlace --version`. Without it: nothing.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/kernels");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| {
        panic!("the cuda feature needs CUDA_COMPUTE_CAP (e.g. 90 for an H100/H200); scripts/build-cuda.sh sets it")
    });
    let digits: String = cap.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.len() < 2 {
        panic!("CUDA_COMPUTE_CAP={cap} is not a compute capability like 90 or 80");
    }
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".to_string());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let mut sources: Vec<PathBuf> = std::fs::read_dir("src/kernels")
        .expect("src/kernels")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    sources.sort();
    for src in &sources {
        let ptx = out.join(src.file_stem().unwrap()).with_extension("ptx");
        let status = Command::new(&nvcc)
            .arg("--ptx")
            .arg(format!("--gpu-architecture=compute_{digits}"))
            .args(["-O3", "-std=c++17"])
            .arg("-o")
            .arg(&ptx)
            .arg(src)
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run {nvcc}: {e} (set NVCC or use scripts/build-cuda.sh)")
            });
        if !status.success() {
            panic!("{nvcc} failed on {}", src.display());
        }
    }
    println!("cargo:rustc-env=INTERLACE_CUDA_COMPUTE_CAP={cap}");
}
