//! `ptxas`, where a machine has one: finding it ([`find_ptxas`]), checking
//! that it accepts a module ([`run_ptxas`]) and building the cubin the
//! runtime loads without waiting for the driver's compiler ([`build_cubin`]).
//! Reading PTX back is `hostcall_image::ptx`, shared with the runtime.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use hostcall_image::{sha256_hex, Fingerprint};

use crate::error::BuildError;
use crate::progress;
use crate::toolchain::{hermetic_command, run};

/// The repository checkout the device libc and the build cache live in.
///
/// `$HOSTCALL_REPO` when set; else where this crate was compiled from, if
/// that is a checkout (it holds `libc-hostcall/` and `stage0/channel`); else
/// the nearest checkout at or above the current directory (a Buck2-built
/// binary was compiled from a copy of the sources in `buck-out`); else the
/// compiled-in path.
pub fn repo_root() -> PathBuf {
    let is_checkout =
        |dir: &Path| dir.join("libc-hostcall/Cargo.toml").is_file() && dir.join("stage0/channel").is_file();
    if let Some(dir) = std::env::var_os("HOSTCALL_REPO").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default();
    if is_checkout(&built) {
        return built;
    }
    std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.ancestors().find(|d| is_checkout(d)).map(Path::to_path_buf))
        .unwrap_or(built)
}

/// Finds `ptxas`: `$PTXAS`, then `PATH`, then the wheel unpacked at
/// `<repo>/.whl/nvidia/cuda_nvcc/bin/ptxas` (`pip install --target .whl
/// nvidia-cuda-nvcc-cu12`).
pub fn find_ptxas() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("PTXAS").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(explicit)).filter(|p| p.is_file());
    }
    let exe = format!("ptxas{}", std::env::consts::EXE_SUFFIX);
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(&exe))
        .chain([repo_root().join(".whl/nvidia/cuda_nvcc/bin").join(&exe)])
        .find(|p| p.is_file())
}

/// The result of [`run_ptxas`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtxasCheck {
    /// ptxas assembled the module for the arch.
    Accepted { ptxas: PathBuf, cubin_bytes: u64 },
    /// No ptxas here; the string says why (print it, do not fail).
    Skipped(String),
}

/// Assembles `ptx` for `arch` with ptxas when one is available. A rejected
/// module is an error carrying ptxas's diagnostics.
pub fn run_ptxas(ptx: &Path, arch: &str) -> Result<PtxasCheck, BuildError> {
    let Some(ptxas) = find_ptxas() else {
        return Ok(PtxasCheck::Skipped(NO_PTXAS.into()));
    };
    // Not `cubin_path`: the check must not replace the cubin a build left there.
    let cubin = ptx.with_extension(format!("{arch}.check.cubin"));
    let mut cmd = hermetic_command(&ptxas);
    cmd.arg(format!("-arch={arch}")).arg("-o").arg(&cubin).arg(ptx);
    run("ptxas", &mut cmd)?;
    let cubin_bytes = std::fs::metadata(&cubin).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&cubin);
    Ok(PtxasCheck::Accepted { ptxas, cubin_bytes })
}

/// The cubin [`build_cubin`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CubinArtifact {
    pub path: PathBuf,
    pub size: u64,
    /// SHA-256 of the cubin bytes, lowercase hex.
    pub sha256: String,
    /// Taken from the cache rather than built.
    pub cached: bool,
}

/// How ptxas is asked to build a cubin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CubinOptions {
    pub arch: String,
    /// `--maxrregcount`: registers per thread, at most. 64 lets every entry
    /// point launch 1024-thread blocks (65,536 registers per SM).
    pub max_registers: u32,
    /// Finished cubins are kept here by (PTX, arch, ptxas, flags).
    pub cache_dir: PathBuf,
}

/// Says once per process that no ptxas was found, and why that matters.
fn note_no_ptxas(reason: &str) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        progress(&format!(
            "{reason}: building PTX only (no cubin), so the first run of each kernel waits for the \
             CUDA driver to compile it"
        ));
    }
}

const NO_PTXAS: &str = "no ptxas (set PTXAS, put it on PATH, or `pip install --target .whl nvidia-cuda-nvcc-cu12`)";

/// ptxas's version line (`Cuda compilation tools, release 12.9, V12.9.86`).
fn ptxas_version(ptxas: &Path) -> Result<String, BuildError> {
    let out = run("ptxas --version", hermetic_command(ptxas).arg("--version"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .to_owned())
}

/// Builds the cubin of `ptx` at `out` with `ptxas -c` (separate
/// compilation: each function compiled once, not inlined into every entry
/// point, which on the 2-core build machine is 5-9x faster than a
/// whole-program compile and needs fewer registers). The result is a
/// relocatable cubin; the runtime links it with the driver's linker
/// (`cuLinkAddData`, `CU_JIT_INPUT_CUBIN`) in tens of milliseconds.
/// `Ok(None)` when there is no ptxas: the build says so once and goes on.
pub fn build_cubin(ptx: &Path, out: &Path, options: &CubinOptions) -> Result<Option<CubinArtifact>, BuildError> {
    let Some(ptxas) = find_ptxas() else {
        note_no_ptxas(NO_PTXAS);
        return Ok(None);
    };
    let text = std::fs::read(ptx).map_err(|e| BuildError::io("read", ptx, e))?;
    let version = ptxas_version(&ptxas)?;
    let regs = format!("--maxrregcount={}", options.max_registers);
    let arch = format!("-arch={}", options.arch);
    let flags = ["-c", arch.as_str(), regs.as_str()];
    let mut key = Fingerprint::new();
    key.field(&text).field(version.as_bytes());
    flags.iter().for_each(|f| {
        key.field(f.as_bytes());
    });
    let cache = options.cache_dir.join("cubins");
    std::fs::create_dir_all(&cache).map_err(|e| BuildError::io("create", &cache, e))?;
    let cached = cache.join(format!("{}.cubin", &key.hex()[..32]));
    let hit = cached.is_file();
    if !hit {
        let started = Instant::now();
        progress(&format!("ptxas -c: {} bytes of PTX to an {} cubin ({version})...", text.len(), options.arch));
        let partial = cached.with_extension("partial");
        run("ptxas", hermetic_command(&ptxas).args(flags).arg("-o").arg(&partial).arg(ptx))?;
        std::fs::rename(&partial, &cached).map_err(|e| BuildError::io("rename", &partial, e))?;
        progress(&format!("cubin built in {:.1?}", started.elapsed()));
    }
    let bytes = std::fs::read(&cached).map_err(|e| BuildError::io("read", &cached, e))?;
    hostcall_image::Cubin::parse(&bytes)
        .map_err(|e| BuildError::Invalid(format!("ptxas wrote {}: {e}", cached.display())))?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| BuildError::io("create", dir, e))?;
    }
    let partial = out.with_extension("cubin.partial");
    std::fs::write(&partial, &bytes).map_err(|e| BuildError::io("write", &partial, e))?;
    std::fs::rename(&partial, out).map_err(|e| BuildError::io("rename", &partial, e))?;
    Ok(Some(CubinArtifact {
        path: out.to_path_buf(),
        size: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
        cached: hit,
    }))
}

/// Where [`build_ptx`](crate::build_ptx) puts the cubin of `ptx`:
/// `kernel.ptx` -> `kernel.sm_90.cubin`.
pub fn cubin_path(ptx: &Path, arch: &str) -> PathBuf {
    ptx.with_extension(format!("{arch}.cubin"))
}
