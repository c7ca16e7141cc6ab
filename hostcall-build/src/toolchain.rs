//! The pinned nightly (`stage0/channel`), making sure rustup has it, and
//! child processes that do not inherit the environment of an outer cargo.
//!
//! Everything that runs a tool goes through [`hermetic_command`] and
//! [`run`], so that a `build.rs` caller's `RUSTFLAGS`, `CARGO_TARGET_DIR`,
//! `RUSTC_WRAPPER`, jobserver, ... never leak into the nvptx build.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::error::{tail, BuildError};

const CHANNEL_FILE: &str = include_str!("../../stage0/channel");

/// The pinned nightly, e.g. `nightly-2026-05-22`.
pub fn channel() -> &'static str {
    CHANNEL_FILE.trim()
}

/// The pinned toolchain, with the paths the pipeline needs.
#[derive(Debug, Clone)]
pub struct Toolchain {
    pub channel: String,
    /// `rustc -vV` of the toolchain: part of every cache key.
    pub version: String,
    pub sysroot: PathBuf,
    pub rustc: PathBuf,
    pub cargo: PathBuf,
    /// Directory with `llvm-link`, `opt` and `llc` (the llvm-tools component).
    pub llvm_bin: PathBuf,
}

impl Toolchain {
    /// rust-src's `library/` directory.
    pub fn library_src(&self) -> PathBuf {
        self.sysroot.join("lib/rustlib/src/rust/library")
    }
}

/// Is `key` part of the environment a parent cargo/rustup sets up for its
/// children? Those must not reach the nested nvptx build.
fn inherited_build_var(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "CARGO",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_LINKER",
        "RUSTC_BOOTSTRAP",
        "RUSTDOC",
        "RUSTDOCFLAGS",
        "RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
        "OUT_DIR",
        "TARGET",
        "HOST",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "NUM_JOBS",
        "MAKEFLAGS",
        "MFLAGS",
    ];
    // CARGO_HOME and network/registry settings describe the machine, not the
    // outer build: keep them so offline mirrors and proxies still work.
    const KEPT_CARGO: &[&str] =
        &["CARGO_HOME", "CARGO_NET_", "CARGO_HTTP_", "CARGO_REGISTRIES_", "CARGO_REGISTRY_", "CARGO_TERM_"];
    EXACT.contains(&key)
        || key.starts_with("__CARGO")
        || key.starts_with("DEP_")
        || (key.starts_with("CARGO_") && !KEPT_CARGO.iter().any(|k| key.starts_with(k)))
}

/// A command for `program` with the outer build's environment removed.
pub fn hermetic_command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(inherited_build_var) {
            cmd.env_remove(&key);
        }
    }
    cmd
}

pub(crate) fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    if text.len() > 600 {
        text.truncate(600);
        text.push_str(" ...");
    }
    text
}

/// Runs `cmd` to completion, capturing its output; a non-zero exit becomes
/// [`BuildError::Tool`] with the tail of stderr (and stdout when that is
/// where the tool wrote its complaint).
pub fn run(step: &str, cmd: &mut Command) -> Result<Output, BuildError> {
    let output = cmd.stdin(Stdio::null()).output().map_err(|e| BuildError::Tool {
        step: step.to_owned(),
        command: describe(cmd),
        status: format!("could not start: {e}"),
        stderr_tail: String::new(),
    })?;
    if output.status.success() {
        return Ok(output);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    Err(BuildError::Tool {
        step: step.to_owned(),
        command: describe(cmd),
        status: output.status.to_string(),
        stderr_tail: tail(if stderr.trim().is_empty() { &stdout } else { &stderr }, 40),
    })
}

fn rustup() -> Command {
    hermetic_command("rustup")
}

fn query_sysroot(channel: &str) -> Option<PathBuf> {
    let output = rustup().args(["run", channel, "rustc", "--print", "sysroot"]).output().ok()?;
    output.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
}

fn has_components(sysroot: &Path) -> bool {
    sysroot.join("lib/rustlib/src/rust/library/std/Cargo.toml").is_file()
        && host_llvm_bin(sysroot).join(format!("llvm-link{}", std::env::consts::EXE_SUFFIX)).is_file()
}

fn host_llvm_bin(sysroot: &Path) -> PathBuf {
    // llvm-tools installs its binaries under the host triple.
    sysroot.join("lib/rustlib").join(HOST_TRIPLE).join("bin")
}

/// The host triple this crate was compiled for, which is the triple the
/// toolchain's llvm-tools are installed under.
const HOST_TRIPLE: &str = env!("HOSTCALL_BUILD_HOST_TRIPLE");

/// Makes sure the pinned toolchain with rust-src and llvm-tools is installed
/// (installing it through rustup if not) and returns its paths.
pub fn ensure_toolchain() -> Result<Toolchain, BuildError> {
    let channel = channel().to_owned();
    let mut sysroot = query_sysroot(&channel);
    if !sysroot.as_deref().is_some_and(has_components) {
        crate::progress(&format!("installing toolchain {channel} (rust-src, llvm-tools)..."));
        let mut install = rustup();
        install.args(["toolchain", "install", &channel, "--profile", "minimal"]);
        install.args(["-c", "rust-src", "-c", "llvm-tools"]);
        run("rustup toolchain install", &mut install)
            .map_err(|e| BuildError::Toolchain(format!("could not install {channel} with rustup: {e}")))?;
        sysroot = query_sysroot(&channel);
    }
    let sysroot = sysroot
        .ok_or_else(|| BuildError::Toolchain(format!("`rustup run {channel} rustc` does not work after install")))?;
    if !has_components(&sysroot) {
        return Err(BuildError::Toolchain(format!(
            "{channel} lacks rust-src or llvm-tools under {}; run \
             `rustup component add --toolchain {channel} rust-src llvm-tools`",
            sysroot.display()
        )));
    }
    let exe = |name: &str| sysroot.join("bin").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let (rustc, cargo) = (exe("rustc"), exe("cargo"));
    let version_out = run("rustc -vV", hermetic_command(&rustc).arg("-vV"))?;
    Ok(Toolchain {
        channel,
        version: String::from_utf8_lossy(&version_out.stdout).into_owned(),
        llvm_bin: host_llvm_bin(&sysroot),
        rustc,
        cargo,
        sysroot,
    })
}

#[cfg(test)]
mod tests {
    use super::inherited_build_var;

    #[test]
    fn outer_cargo_settings_are_dropped_machine_settings_kept() {
        for dropped in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "RUSTC_WRAPPER",
            "CARGO_BUILD_TARGET",
            "CARGO_PROFILE_RELEASE_LTO",
            "RUSTUP_TOOLCHAIN",
            "CARGO_MAKEFLAGS",
            "CARGO_PKG_NAME",
            "__CARGO_FIX_PLZ",
            "CARGO",
        ] {
            assert!(inherited_build_var(dropped), "{dropped}");
        }
        for kept in ["CARGO_HOME", "CARGO_NET_OFFLINE", "CARGO_HTTP_PROXY", "PATH", "HOME", "RUSTUP_HOME"] {
            assert!(!inherited_build_var(kept), "{kept}");
        }
    }
}
