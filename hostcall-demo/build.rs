//! Builds `culinux/` into PTX with the hostcall pipeline, and a cubin from
//! the PTX when a `ptxas` is found, and leaves in `OUT_DIR` what `src/ptx.rs`
//! embeds: `culinux.ptx`, `culinux.cubin` (empty: none) and `culinux.sha256`,
//! the one SHA-256 of both (`hostcall_image::bundle_sha256`).
//!
//! `HOSTCALL_DEMO_PTX=<file>` embeds that PTX instead (one built elsewhere,
//! e.g. by Buck2), skipping the Rust build; the cubin is still built from it.
//! `HOSTCALL_PTX_OPT_LEVEL=z` (or 1, 2, 3, s) builds at that level (default
//! z; see `hostcall-build --help`). `PTXAS` names the ptxas to use.

use std::path::{Path, PathBuf};
use std::{env, fs, process};

fn main() {
    if let Err(e) = run() {
        // A build script's error output is shown by cargo; one clear line.
        eprintln!("hostcall-demo build: {e}");
        process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR not set")?);
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR not set")?);
    let repo = manifest.parent().ok_or("hostcall-demo has no parent directory")?;
    let mut options = hostcall_build::PtxOptions::new(repo.join("culinux"));
    options.out = out_dir.join("culinux.ptx");
    options.cubin = false; // built below, from whichever PTX is embedded
    println!("cargo:rerun-if-env-changed=HOSTCALL_DEMO_PTX");
    println!("cargo:rerun-if-env-changed=PTXAS");
    let ptx = match env::var_os("HOSTCALL_DEMO_PTX") {
        Some(path) => {
            let path = PathBuf::from(path);
            println!("cargo:rerun-if-changed={}", path.display());
            fs::read(&path).map_err(|e| format!("HOSTCALL_DEMO_PTX={}: {e}", path.display()))?
        }
        None => build_culinux(&mut options)?,
    };
    write(&options.out, &ptx)?;
    let cubin_options = hostcall_build::CubinOptions {
        arch: options.arch.clone(),
        max_registers: options.max_registers,
        cache_dir: options.cache_dir.clone(),
    };
    let cubin_path = out_dir.join("culinux.cubin");
    let cubin =
        match hostcall_build::build_cubin(&options.out, &cubin_path, &cubin_options).map_err(|e| e.to_string())? {
            Some(artifact) => {
                println!("cargo:rerun-if-changed={}", hostcall_build::find_ptxas().unwrap_or_default().display());
                Some(fs::read(&artifact.path).map_err(|e| format!("{}: {e}", artifact.path.display()))?)
            }
            None => {
                println!(
                    "cargo:warning=no ptxas found: hostcalls_bin embeds PTX only, and its first run waits for the \
                 CUDA driver to compile it (set PTXAS, or `pip install --target .whl nvidia-cuda-nvcc-cu12`)"
                );
                write(&cubin_path, b"")?;
                None
            }
        };
    let digest = hostcall_image::bundle_sha256(&ptx, cubin.as_deref());
    write(&out_dir.join("culinux.sha256"), digest.as_bytes())
}

fn build_culinux(options: &mut hostcall_build::PtxOptions) -> Result<Vec<u8>, String> {
    println!("cargo:rerun-if-env-changed=HOSTCALL_PTX_OPT_LEVEL");
    if let Some(level) = env::var_os("HOSTCALL_PTX_OPT_LEVEL") {
        let level = level.to_str().ok_or("HOSTCALL_PTX_OPT_LEVEL is not UTF-8")?;
        options.opt_level = level.parse().map_err(|e| format!("HOSTCALL_PTX_OPT_LEVEL: {e}"))?;
    }
    let artifact = hostcall_build::build_ptx(options).map_err(|e| e.to_string())?;
    for input in &artifact.inputs {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    if !artifact.summary.externs.is_empty() {
        return Err(format!("culinux.ptx leaves symbols undefined: {}", artifact.summary.externs.join(", ")));
    }
    fs::read(&artifact.path).map_err(|e| format!("{}: {e}", artifact.path.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}
