//! Builds `culinux/` into PTX with the hostcall pipeline and leaves
//! `culinux.ptx` and its SHA-256 in `OUT_DIR` for `src/ptx.rs` to embed.
//!
//! `HOSTCALL_DEMO_PTX=<file>` embeds that file instead (a PTX built
//! elsewhere, e.g. by Buck2), skipping the pipeline.
//! `HOSTCALL_PTX_OPT_LEVEL=z` (or 1, 2, 3, s) builds it at that level
//! (default z; see `hostcall-build --help`).

use std::path::{Path, PathBuf};
use std::{env, fs, process};

use sha2::{Digest, Sha256};

fn main() {
    if let Err(e) = run() {
        // A build script's error output is shown by cargo; one clear line.
        eprintln!("hostcall-demo build: {e}");
        process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR not set")?);
    let out = out_dir.join("culinux.ptx");
    println!("cargo:rerun-if-env-changed=HOSTCALL_DEMO_PTX");
    let bytes = match env::var_os("HOSTCALL_DEMO_PTX") {
        Some(path) => {
            let path = PathBuf::from(path);
            println!("cargo:rerun-if-changed={}", path.display());
            fs::read(&path).map_err(|e| format!("HOSTCALL_DEMO_PTX={}: {e}", path.display()))?
        }
        None => build_culinux(&out)?,
    };
    let digest: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    write(&out, &bytes)?;
    write(&out_dir.join("culinux.ptx.sha256"), digest.as_bytes())?;
    Ok(())
}

fn build_culinux(out: &Path) -> Result<Vec<u8>, String> {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR not set")?);
    let repo = manifest.parent().ok_or("hostcall-demo has no parent directory")?;
    let mut options = hostcall_build::PtxOptions::new(repo.join("culinux"));
    options.out = out.to_path_buf();
    println!("cargo:rerun-if-env-changed=HOSTCALL_PTX_OPT_LEVEL");
    if let Some(level) = env::var_os("HOSTCALL_PTX_OPT_LEVEL") {
        let level = level.to_str().ok_or("HOSTCALL_PTX_OPT_LEVEL is not UTF-8")?;
        options.opt_level = level.parse().map_err(|e| format!("HOSTCALL_PTX_OPT_LEVEL: {e}"))?;
    }
    let artifact = hostcall_build::build_ptx(&options).map_err(|e| e.to_string())?;
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
