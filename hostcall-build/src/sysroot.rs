//! The nvptx sysroot: rust-src's `library/` copied into the cache, the
//! `fixups/` applied, and core/alloc/std/panic_abort built for the target
//! spec. One directory per hash of everything that shapes the rlibs, built
//! under a `.partial` name and renamed into place, so a killed build never
//! leaves a half sysroot that a later build would trust.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cargo::{self, CargoBuild};
use crate::error::BuildError;
use crate::toolchain::Toolchain;
use hostcall_image::Fingerprint;

/// Target name; the spec file must be called `<TARGET>.json`.
pub const TARGET: &str = "nvptx64-vectorware-linux";

/// The committed spec (for `sm_90`); other arches are derived from it.
pub const BASE_SPEC: &str = include_str!("../../target_specs/nvptx64-vectorware-linux.json");

/// The fixups, in the order they are applied: (file name, unified diff).
pub const FIXUPS: &[(&str, &str)] = &[
    (
        "0001-libc-nvptx64-follows-x86_64-linux.patch",
        include_str!("../../fixups/0001-libc-nvptx64-follows-x86_64-linux.patch"),
    ),
    ("0002-std-alloc-min-align.patch", include_str!("../../fixups/0002-std-alloc-min-align.patch")),
    ("0003-std-linux-raw-stat.patch", include_str!("../../fixups/0003-std-linux-raw-stat.patch")),
    ("0004-unwind-private-data-size.patch", include_str!("../../fixups/0004-unwind-private-data-size.patch")),
    (
        "0005-std-personality-unwind-data-reg.patch",
        include_str!("../../fixups/0005-std-personality-unwind-data-reg.patch"),
    ),
    ("0006-std-args-from-the-host.patch", include_str!("../../fixups/0006-std-args-from-the-host.patch")),
    ("0007-std-environ-from-the-host.patch", include_str!("../../fixups/0007-std-environ-from-the-host.patch")),
    (
        "0008-std-print-without-a-global-lock.patch",
        include_str!("../../fixups/0008-std-print-without-a-global-lock.patch"),
    ),
    ("0009-std-main-on-every-gpu-thread.patch", include_str!("../../fixups/0009-std-main-on-every-gpu-thread.patch")),
];

/// The script both doors run rustc through for nvptx compiles: it gives
/// each crate a build-system-independent disambiguator (see the script).
pub const RUSTC_WRAPPER: &str = include_str!("../../stage0/rustc-wrapper.sh");

/// The sysroot's `opt-level` (cargo profile; library/Cargo.toml's own
/// per-crate overrides still apply). Size, because the driver's compile time
/// and ptxas's follow the PTX's size, and a std kernel spends its time in
/// hostcalls: the demo's PTX is 1.93 MB with std at 3 and 1.54 MB at "z"
/// (2026-12-02). Buck2's sysroot targets say the same (`sysroot/BUCK`).
pub const SYSROOT_OPT_LEVEL: &str = "\"z\"";

/// Flags every nvptx crate is compiled with, sysroot and kernels alike.
pub const RUSTFLAGS: &[&str] = &["-Zforce-unstable-if-unmarked", "-Cpanic=abort"];

/// Bumped when the way a sysroot is laid out or built changes.
const LAYOUT_VERSION: &str = "hostcall-sysroot-v2";

/// The PTX ISA version LLVM should target for `arch`.
pub fn ptx_features(arch: &str) -> &'static str {
    let number: u32 = arch.trim_start_matches("sm_").trim_end_matches(['a', 'f']).parse().unwrap_or(90);
    if number >= 100 {
        "+ptx86"
    } else {
        "+ptx80"
    }
}

/// The target spec text for `arch` (`sm_80`, `sm_90`, ...).
pub fn spec_for_arch(arch: &str) -> Result<String, BuildError> {
    let valid = arch
        .strip_prefix("sm_")
        .is_some_and(|n| !n.is_empty() && n.trim_end_matches(['a', 'f']).chars().all(|c| c.is_ascii_digit()));
    if !valid {
        return Err(BuildError::Invalid(format!("arch must look like sm_90, got {arch:?}")));
    }
    let mut out = String::new();
    for line in BASE_SPEC.lines() {
        let key = line.trim_start();
        let indent = &line[..line.len() - key.len()];
        if key.starts_with("\"cpu\":") {
            out.push_str(&format!("{indent}\"cpu\": \"{arch}\",\n"));
        } else if key.starts_with("\"features\":") {
            out.push_str(&format!("{indent}\"features\": \"{}\",\n", ptx_features(arch)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

/// A ready sysroot.
#[derive(Debug, Clone)]
pub struct Sysroot {
    /// What to pass as `--sysroot`.
    pub dir: PathBuf,
    /// Short hash naming this sysroot; kernel target dirs are keyed by it.
    pub hash: String,
    /// The generated target spec (`<cache>/spec-<hash>/<TARGET>.json`).
    pub spec: PathBuf,
    /// The patched `library/` inside the sysroot.
    pub library: PathBuf,
}

impl Sysroot {
    /// Directory holding the target's rlibs.
    pub fn lib_dir(&self) -> PathBuf {
        self.dir.join("lib/rustlib").join(TARGET).join("lib")
    }

    /// The patched vendored libc, for `[patch.crates-io]` of kernel builds.
    pub fn libc_src(&self) -> Result<PathBuf, BuildError> {
        vendored_libc(&self.library)
    }
}

fn vendored_libc(library: &Path) -> Result<PathBuf, BuildError> {
    let vendor = library.join("vendor");
    let entries = std::fs::read_dir(&vendor).map_err(|e| BuildError::io("read", &vendor, e))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libc-0.")))
        .collect();
    found.sort();
    found.pop().ok_or_else(|| BuildError::Toolchain(format!("no vendored libc under {}", vendor.display())))
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), BuildError> {
    std::fs::create_dir_all(to).map_err(|e| BuildError::io("create", to, e))?;
    let entries = std::fs::read_dir(from).map_err(|e| BuildError::io("read", from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| BuildError::io("read", from, e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().map_err(|e| BuildError::io("stat", &src, e))?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            // `copy` follows symlinks, so the copy is self-contained.
            std::fs::copy(&src, &dst).map_err(|e| BuildError::io("copy", &src, e))?;
        }
    }
    Ok(())
}

fn sysroot_hash(toolchain: &Toolchain, spec: &str) -> String {
    let mut h = Fingerprint::new();
    h.field(LAYOUT_VERSION.as_bytes());
    h.field(SYSROOT_OPT_LEVEL.as_bytes());
    h.field(toolchain.channel.as_bytes());
    h.field(toolchain.version.as_bytes());
    h.field(spec.as_bytes());
    for flag in RUSTFLAGS {
        h.field(flag.as_bytes());
    }
    h.field(RUSTC_WRAPPER.as_bytes());
    for (name, diff) in FIXUPS {
        h.field(name.as_bytes());
        h.field(diff.as_bytes());
    }
    h.hex()[..16].to_owned()
}

/// Copies the toolchain's rust-src `library/` to `<src_root>/library` and
/// applies [`FIXUPS`]: the sources the nvptx sysroot is built from, by
/// either door (`hostcall-build library` hands them to Buck2).
pub fn patched_library(toolchain: &Toolchain, src_root: &Path) -> Result<PathBuf, BuildError> {
    let library = src_root.join("library");
    copy_tree(&toolchain.library_src(), &library)?;
    for (name, diff) in FIXUPS {
        crate::patch::apply(src_root, diff)
            .map_err(|reason| BuildError::Fixup { patch: (*name).to_owned(), reason })?;
    }
    Ok(library)
}

/// rust-src's `library/` with the fixups applied, as the directory `dir`
/// (built next to it and renamed into place): `hostcall-build library`,
/// how Buck2 gets the sources it builds the sysroot crates from.
pub fn write_library(dir: &Path) -> Result<(), BuildError> {
    if dir.exists() {
        return Err(BuildError::Invalid(format!("{} already exists", dir.display())));
    }
    let scratch = dir.with_extension("partial");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).map_err(|e| BuildError::io("remove", &scratch, e))?;
    }
    let toolchain = crate::toolchain::ensure_toolchain()?;
    let patched = patched_library(&toolchain, &scratch)?;
    std::fs::rename(&patched, dir).map_err(|e| BuildError::io("rename", &patched, e))?;
    std::fs::remove_dir_all(&scratch).map_err(|e| BuildError::io("remove", &scratch, e))
}

/// Writes [`RUSTC_WRAPPER`] into `cache` (once per content) and returns its
/// path, executable.
pub fn write_wrapper(cache: &Path) -> Result<PathBuf, BuildError> {
    use std::os::unix::fs::PermissionsExt;
    let mut h = Fingerprint::new();
    h.field(RUSTC_WRAPPER.as_bytes());
    let path = cache.join(format!("rustc-wrapper-{}.sh", &h.hex()[..16]));
    if std::fs::read_to_string(&path).ok().as_deref() != Some(RUSTC_WRAPPER) {
        let partial = path.with_extension("partial");
        std::fs::write(&partial, RUSTC_WRAPPER).map_err(|e| BuildError::io("write", &partial, e))?;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| BuildError::io("chmod", &partial, e))?;
        std::fs::rename(&partial, &path).map_err(|e| BuildError::io("rename", &partial, e))?;
    }
    Ok(path)
}

/// `--remap-path-prefix` flags that name rust-src's files as an official
/// toolchain does, `/rustc/<channel>/library/...`: cargo hands rustc the
/// paths of the library workspace's own crates relative to `library/`
/// (`core/src/lib.rs`), and the vendored ones absolute.
fn library_remaps(src_root: &Path, library: &Path, channel: &str) -> Result<Vec<String>, BuildError> {
    let mut flags = vec![format!("--remap-path-prefix={}=/rustc/{channel}", src_root.display())];
    let entries = std::fs::read_dir(library).map_err(|e| BuildError::io("read", library, e))?;
    let mut names: Vec<String> =
        entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().to_str().map(str::to_owned)).collect();
    names.sort();
    for name in names {
        flags.push(format!("--remap-path-prefix={name}=/rustc/{channel}/library/{name}"));
    }
    Ok(flags)
}

/// Returns the sysroot for `arch`, building it first when absent. The caller
/// holds the cache lock.
pub fn ensure_sysroot(toolchain: &Toolchain, arch: &str, cache: &Path) -> Result<Sysroot, BuildError> {
    let spec_text = spec_for_arch(arch)?;
    let hash = sysroot_hash(toolchain, &spec_text);

    let spec_dir = cache.join(format!("spec-{hash}"));
    let spec = spec_dir.join(format!("{TARGET}.json"));
    if std::fs::read_to_string(&spec).ok().as_deref() != Some(spec_text.as_str()) {
        std::fs::create_dir_all(&spec_dir).map_err(|e| BuildError::io("create", &spec_dir, e))?;
        std::fs::write(&spec, &spec_text).map_err(|e| BuildError::io("write", &spec, e))?;
    }

    let dir = cache.join(format!("sysroot-{hash}"));
    let sysroot = Sysroot {
        library: dir.join("lib/rustlib/src/rust/library"),
        dir: dir.clone(),
        hash: hash.clone(),
        spec: spec.clone(),
    };
    if dir.join(STAMP).is_file() {
        return Ok(sysroot);
    }

    let started = Instant::now();
    crate::progress(&format!(
        "building the {arch} sysroot (core, alloc, std, panic_abort) into {} (first time, ~1 min)...",
        dir.display()
    ));
    let partial = cache.join(format!("sysroot-{hash}.partial"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| BuildError::io("remove", &partial, e))?;
    }
    let src_root = partial.join("lib/rustlib/src/rust");
    let library = src_root.join("library");
    patched_library(toolchain, &src_root)?;

    let libc = vendored_libc(&library)?;
    let build_dir = partial.join("build");
    let mut rustflags: Vec<String> = RUSTFLAGS.iter().map(|f| f.to_string()).collect();
    // The sysroot is built under `.partial` and used from its final name:
    // neither belongs in panic messages or the PTX.
    rustflags.extend(library_remaps(&src_root, &library, &toolchain.channel)?);
    let build = CargoBuild {
        step: "building the nvptx sysroot",
        manifest: library.join("Cargo.toml"),
        packages: vec!["std".into(), "panic_abort".into()],
        bins: Vec::new(),
        target_spec: spec.clone(),
        target_dir: build_dir.clone(),
        rustflags,
        config: vec![
            format!("patch.crates-io.libc.path=\"{}\"", libc.display().to_string().replace('\\', "/")),
            format!("profile.release.opt-level={SYSROOT_OPT_LEVEL}"),
        ],
        offline: true,
        wrapper: write_wrapper(cache)?,
    };
    let artifacts = cargo::build(toolchain, &build)?;

    let lib_dir = partial.join("lib/rustlib").join(TARGET).join("lib");
    std::fs::create_dir_all(&lib_dir).map_err(|e| BuildError::io("create", &lib_dir, e))?;
    for artifact in &artifacts {
        let dst = lib_dir.join(artifact.rlib.file_name().unwrap_or_default());
        std::fs::copy(&artifact.rlib, &dst).map_err(|e| BuildError::io("copy", &artifact.rlib, e))?;
    }
    std::fs::remove_dir_all(&build_dir).map_err(|e| BuildError::io("remove", &build_dir, e))?;
    let stamp = format!(
        "{LAYOUT_VERSION}\nchannel: {}\narch: {arch}\nfixups: {}\n{}",
        toolchain.channel,
        FIXUPS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
        toolchain.version
    );
    std::fs::write(partial.join(STAMP), stamp).map_err(|e| BuildError::io("write", &partial, e))?;
    if dir.exists() {
        // A stamp-less directory is an interrupted build from an older layout.
        std::fs::remove_dir_all(&dir).map_err(|e| BuildError::io("remove", &dir, e))?;
    }
    std::fs::rename(&partial, &dir).map_err(|e| BuildError::io("rename", &partial, e))?;
    crate::progress(&format!("sysroot ready in {:.1?}", started.elapsed()));
    Ok(sysroot)
}

const STAMP: &str = "hostcall-sysroot.stamp";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_rewrites_cpu_and_features_only() {
        let sm80 = spec_for_arch("sm_80").expect("valid arch");
        assert!(sm80.contains("\"cpu\": \"sm_80\","));
        assert!(sm80.contains("\"features\": \"+ptx80\","));
        assert_eq!(sm80.lines().count(), BASE_SPEC.lines().count());
        assert_eq!(spec_for_arch("sm_90").expect("valid arch"), BASE_SPEC);
        assert!(spec_for_arch("compute_90").is_err());
        assert!(spec_for_arch("sm_").is_err());
    }
}
