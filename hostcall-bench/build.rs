//! Builds the bench's kernels with the PTX pipeline and leaves in `OUT_DIR`
//! what `src/kernels.rs` embeds: `<kernel>.ptx` and `<kernel>.cubin` (empty
//! when no ptxas was found) for `kernels/bench_std` (std, libc-hostcall) and
//! `kernels/bench_floor` (`no_std`, no libc: CUDA's own `vprintf` and
//! `malloc`), and `commit` (what `git describe` says of the source tree, or
//! `unknown`), recorded in every result.

use std::path::{Path, PathBuf};
use std::{env, fs, process};

/// The globals the host sets and reads; the pipeline keeps them exported.
const GLOBALS: &[&str] = &[
    "BENCH_N",
    "BENCH_REQ",
    "BENCH_RESP",
    "BENCH_SAMPLES",
    "BENCH_BYTES",
    "BENCH_CHUNK",
    "BENCH_MODE",
    "BENCH_T0",
    "BENCH_T1",
    "BENCH_SUM",
    "BENCH_FAIL",
];

fn main() {
    if let Err(e) = run() {
        eprintln!("hostcall-bench build: {e}");
        process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR not set")?);
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR not set")?);
    let repo = manifest.parent().ok_or("hostcall-bench has no parent directory")?;
    println!("cargo:rerun-if-env-changed=PTXAS");
    for (name, libc) in [("bench_std", true), ("bench_floor", false)] {
        let mut options = hostcall_build::PtxOptions::new(repo.join("kernels").join(name));
        if !libc {
            options.libc_dir = None;
        }
        options.out = out_dir.join(format!("{name}.ptx"));
        options.keep = GLOBALS.iter().map(|g| g.to_string()).collect();
        let artifact = hostcall_build::build_ptx(&options).map_err(|e| format!("{name}: {e}"))?;
        for input in &artifact.inputs {
            println!("cargo:rerun-if-changed={}", input.display());
        }
        let allowed: &[&str] = if libc { &[] } else { &["vprintf", "malloc", "free"] };
        let unknown: Vec<_> = artifact.summary.externs.iter().filter(|e| !allowed.contains(&e.as_str())).collect();
        if !unknown.is_empty() {
            return Err(format!("{name}.ptx leaves symbols undefined: {unknown:?}"));
        }
        let cubin = out_dir.join(format!("{name}.cubin"));
        match &artifact.cubin {
            Some(c) => fs::copy(&c.path, &cubin).map(drop).map_err(|e| format!("{}: {e}", c.path.display()))?,
            None => write(&cubin, b"")?,
        }
    }
    let commit = process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .current_dir(repo)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    write(&out_dir.join("commit"), commit.as_bytes())?;
    println!("cargo:rerun-if-changed={}", repo.join(".git/HEAD").display());
    println!("cargo:rerun-if-changed={}", repo.join(".git/index").display());
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}
