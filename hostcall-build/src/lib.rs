//! Builds a Rust kernel crate (std or `no_std`) into one PTX module.
//!
//! The pipeline, each step cached under [`PtxOptions::cache_dir`]:
//!
//! 1. the pinned nightly from `stage0/channel`, installed through rustup
//!    if missing ([`toolchain`]);
//! 2. an nvptx sysroot: rust-src's `library/` with `fixups/` applied,
//!    core/alloc/std/panic_abort built for `target_specs/` ([`sysroot`]);
//! 3. the kernel crate and `libc-hostcall` built against that sysroot in one
//!    cargo graph, so a kernel that itself depends on `libc-hostcall` gets
//!    one copy of it;
//! 4. the bitcode of every crate of that graph plus the sysroot crates
//!    `llvm-link`ed together, `opt` internalizing everything but the
//!    `ptx-kernel` entries and `__HOSTCALL*` globals, and `llc` lowering
//!    the result to PTX ([`link_ptx`], which Buck2 runs on its own rlibs as
//!    `hostcall-build link`);
//! 5. where a `ptxas` is found, a cubin beside the PTX ([`build_cubin`],
//!    `ptxas -c`, cached by PTX, arch, ptxas version and flags), so the
//!    runtime starts the kernel without waiting for the driver's compiler.
//!
//! Every nvptx rustc runs through `stage0/rustc-wrapper.sh`
//! ([`sysroot::RUSTC_WRAPPER`]), which gives each crate a disambiguator
//! that does not depend on the build system, so cargo and Buck2 produce the
//! same bytes (docs/buck2.md).
//!
//! Safe to call from a `build.rs`: children never see the outer cargo's
//! environment and use their own target directory. What it does not do:
//! run or load the PTX (that is `hostcall-runtime`).

mod archive;
mod cargo;
mod error;
mod local_atomics;
mod patch;
mod pipeline;
mod ptx;
pub mod sysroot;
pub mod toolchain;

use std::path::PathBuf;

pub use error::BuildError;
pub use hostcall_image::{bundle_sha256, ptx_summary, PtxSummary, DEFAULT_MAX_REGISTERS};
pub use pipeline::{build_ptx, link_ptx, CrateRlib, LinkOptions};
pub use ptx::{build_cubin, cubin_path, find_ptxas, repo_root, run_ptxas, CubinArtifact, CubinOptions, PtxasCheck};
pub use sysroot::TARGET;
pub use toolchain::channel;

/// Where builds keep sysroots, target dirs and cubins unless told otherwise:
/// `<repo>/target/hostcall-build-cache`.
pub fn default_cache_dir() -> PathBuf {
    repo_root().join("target/hostcall-build-cache")
}

/// What to build and where. [`PtxOptions::new`] fills in this repository's
/// defaults; every field may be changed afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtxOptions {
    /// The kernel crate (a lib crate with `#[no_mangle] extern "ptx-kernel"`
    /// entry points). It need not depend on `libc-hostcall`.
    pub kernel_dir: PathBuf,
    /// The device libc linked into every kernel (`<repo>/libc-hostcall`),
    /// or `None` for kernels that need no libc (pure `no_std`).
    pub libc_dir: Option<PathBuf>,
    /// GPU architecture, `sm_90` by default.
    pub arch: String,
    /// Where the PTX is written.
    pub out: PathBuf,
    /// Sysroots, target dirs and intermediate bitcode live here.
    pub cache_dir: PathBuf,
    /// How `opt` optimises the linked module (and `llc` the code).
    pub opt_level: OptLevel,
    /// Symbols kept besides the defaults (every `ptx-kernel` entry and every
    /// global whose name starts with `__HOSTCALL`).
    pub keep: Vec<String>,
    /// Build a cubin beside the PTX when a `ptxas` is found
    /// ([`build_cubin`]).
    pub cubin: bool,
    /// Registers per thread the cubin may use, at most
    /// ([`DEFAULT_MAX_REGISTERS`] lets every entry launch 1024 threads a block).
    pub max_registers: u32,
    /// Print progress lines on stderr.
    pub verbose: bool,
    /// The `[[bin]]` target whose `main` becomes the entry point
    /// [`MAIN_ENTRY`]. `None`: the crate's lib when it has one, else its
    /// only binary.
    pub bin: Option<String>,
}

/// The entry point a binary crate's `main` runs behind: every thread of the
/// launch calls `main`; the first non-zero exit code ends the process.
pub const MAIN_ENTRY: &str = "hostcall_main";

impl PtxOptions {
    /// Options for `kernel_dir` with this repository's defaults: the repo's
    /// `libc-hostcall`, `sm_90`, [`OptLevel::Oz`], cache in `<repo>/target/hostcall-build-cache`,
    /// output `<cache>/<kernel dir name>.ptx`.
    pub fn new(kernel_dir: impl Into<PathBuf>) -> Self {
        let kernel_dir = kernel_dir.into();
        let cache_dir = default_cache_dir();
        let stem = kernel_dir.file_name().and_then(|n| n.to_str()).unwrap_or("kernel").to_owned();
        PtxOptions {
            libc_dir: Some(repo_root().join("libc-hostcall")),
            arch: "sm_90".into(),
            out: cache_dir.join(format!("{stem}.ptx")),
            cache_dir,
            opt_level: OptLevel::Oz,
            keep: Vec::new(),
            cubin: true,
            max_registers: DEFAULT_MAX_REGISTERS,
            verbose: true,
            bin: None,
            kernel_dir,
        }
    }
}

/// The optimisation of the linked module: `opt -passes=default<O..>` and
/// `llc -O..`. The default is `Oz`: the size of the PTX is what the CUDA
/// driver's first load of a module pays for (it compiles the PTX), and a std
/// kernel spends its time in hostcalls, not in code the optimiser speeds up.
/// Measured on an H100 (2026-11-25), the demo kernel at Oz against O3: PTX
/// 2.0 MB against 4.6 MB, first load 30 s against 120 s, the same demo and
/// `println!` times, null hostcall 2% slower. Use `O3` for kernels that
/// compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptLevel {
    O1,
    O2,
    O3,
    Os,
    Oz,
}

impl OptLevel {
    /// The `opt` pipeline name: `O3` for `default<O3>`.
    pub fn pipeline(self) -> &'static str {
        match self {
            OptLevel::O1 => "O1",
            OptLevel::O2 => "O2",
            OptLevel::O3 => "O3",
            OptLevel::Os => "Os",
            OptLevel::Oz => "Oz",
        }
    }

    /// The `opt-level` of the kernel crates' cargo profile (TOML).
    pub fn cargo_profile(self) -> &'static str {
        match self {
            OptLevel::O1 => "1",
            OptLevel::O2 => "2",
            OptLevel::O3 => "3",
            OptLevel::Os => "\"s\"",
            OptLevel::Oz => "\"z\"",
        }
    }

    /// The `llc` flag: size levels generate code at `-O2`, as clang does.
    pub fn codegen_flag(self) -> &'static str {
        match self {
            OptLevel::O1 => "-O1",
            OptLevel::O3 => "-O3",
            OptLevel::O2 | OptLevel::Os | OptLevel::Oz => "-O2",
        }
    }
}

impl std::str::FromStr for OptLevel {
    type Err = BuildError;
    /// `1`, `2`, `3`, `s`, `z` (as rustc's `-C opt-level`).
    fn from_str(text: &str) -> Result<Self, BuildError> {
        match text {
            "1" => Ok(OptLevel::O1),
            "2" => Ok(OptLevel::O2),
            "3" => Ok(OptLevel::O3),
            "s" => Ok(OptLevel::Os),
            "z" => Ok(OptLevel::Oz),
            other => Err(BuildError::Invalid(format!("opt level must be 1, 2, 3, s or z, got {other:?}"))),
        }
    }
}

/// The PTX a build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtxArtifact {
    /// Where the PTX was written ([`PtxOptions::out`]).
    pub path: PathBuf,
    pub size: u64,
    /// SHA-256 of the PTX bytes, lowercase hex.
    pub sha256: String,
    pub summary: PtxSummary,
    /// The cubin beside the PTX, when one was asked for and a ptxas found.
    pub cubin: Option<CubinArtifact>,
    /// Sources the PTX depends on beyond the toolchain: a `build.rs` prints
    /// `cargo:rerun-if-changed=` for each.
    pub inputs: Vec<PathBuf>,
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// One progress line on stderr (cargo shows a build script's stderr only on
/// failure or with `-vv`, which is where a slow first build gets explained).
pub(crate) fn progress(message: &str) {
    if !QUIET.with(|q| q.get()) {
        eprintln!("hostcall-build: {message}");
    }
}

pub(crate) fn set_quiet(quiet: bool) {
    QUIET.with(|q| q.set(quiet));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opt_levels_parse_like_rustc_and_size_levels_generate_at_o2() {
        let levels: Vec<OptLevel> = ["1", "2", "3", "s", "z"].iter().map(|t| t.parse().expect("valid")).collect();
        assert_eq!(levels, [OptLevel::O1, OptLevel::O2, OptLevel::O3, OptLevel::Os, OptLevel::Oz]);
        assert_eq!(OptLevel::Oz.pipeline(), "Oz");
        assert_eq!(OptLevel::Oz.codegen_flag(), "-O2");
        assert_eq!(OptLevel::O3.codegen_flag(), "-O3");
        assert_eq!(OptLevel::Oz.cargo_profile(), "\"z\"");
        assert_eq!(OptLevel::O2.cargo_profile(), "2");
        assert!("0".parse::<OptLevel>().is_err());
        assert!("O3".parse::<OptLevel>().is_err());
        assert_eq!(PtxOptions::new("k").opt_level, OptLevel::Oz);
    }
}
