//! [`build_ptx`]: kernel graph build, bitcode collection, llvm-link, opt, llc.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cargo::{self, Artifact, CargoBuild};
use crate::error::BuildError;
use crate::sysroot::{ensure_sysroot, Sysroot, RUSTFLAGS};
use crate::toolchain::{ensure_toolchain, hermetic_command, run};
use crate::{archive, build_cubin, cubin_path, progress, ptx_summary, CubinOptions, OptLevel, PtxArtifact, PtxOptions};
use hostcall_image::{sha256_hex, Fingerprint};

/// Crate name of the generated root that depends on kernel + libc.
const ROOT_CRATE: &str = "hostcall_link_root";

/// Sysroot crates a kernel with its own `#[panic_handler]` may link; std
/// would bring a second panic handler.
const NO_STD_SYSROOT: &[&str] =
    &["core", "alloc", "compiler_builtins", "rustc_std_workspace_core", "rustc_std_workspace_alloc"];

fn canonical(path: &Path, what: &str) -> Result<PathBuf, BuildError> {
    path.canonicalize().map_err(|e| BuildError::Invalid(format!("{what} {} is not usable: {e}", path.display())))
}

/// `name` from the `[package]` table of a Cargo.toml. Good enough for
/// manifests people write by hand; anything fancier gets a clear error.
fn package_name(manifest: &Path) -> Result<String, BuildError> {
    let text = std::fs::read_to_string(manifest).map_err(|e| BuildError::io("read", manifest, e))?;
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some(value) = line.strip_prefix("name").map(str::trim_start) {
                if let Some(value) = value.strip_prefix('=') {
                    let name = value.trim().trim_matches(['"', '\'']);
                    if !name.is_empty() {
                        return Ok(name.to_owned());
                    }
                }
            }
        }
    }
    Err(BuildError::Invalid(format!("no [package] name in {}", manifest.display())))
}

/// A TOML literal string for a path (no escapes inside '...').
fn toml_path(path: &Path) -> Result<String, BuildError> {
    let text = path.display().to_string().replace('\\', "/");
    if text.contains('\'') {
        return Err(BuildError::Invalid(format!("paths with a quote are not supported: {text}")));
    }
    Ok(format!("'{text}'"))
}

fn write_if_changed(path: &Path, contents: &str) -> Result<(), BuildError> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(contents) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| BuildError::io("create", dir, e))?;
    }
    std::fs::write(path, contents).map_err(|e| BuildError::io("write", path, e))
}

/// Holds the cache lock until dropped (the OS releases it on exit).
struct CacheLock(#[allow(dead_code)] File);

fn lock_cache(cache: &Path) -> Result<CacheLock, BuildError> {
    let path = cache.join(".hostcall-build.lock");
    let file = File::create(&path).map_err(|e| BuildError::io("create", &path, e))?;
    if file.try_lock().is_err() {
        progress(&format!("waiting for another hostcall-build using {}", cache.display()));
        file.lock().map_err(|e| BuildError::io("lock", &path, e))?;
    }
    Ok(CacheLock(file))
}

/// Where the link root sees the kernel's sources: a symlink `src` to the
/// nearest directory holding both the kernel and the libc crate (the
/// repository, for this repository's kernels). Cargo hashes a path crate
/// into its symbol names (`-C metadata`) by its path relative to the
/// workspace root when it lies below it, and by its absolute path when not;
/// seen through the symlink, the same sources give the same PTX whichever
/// directory the checkout is in.
const SRC_LINK: &str = "src";

fn common_ancestor(a: &Path, b: &Path) -> PathBuf {
    a.components().zip(b.components()).take_while(|(x, y)| x == y).map(|(x, _)| x).collect()
}

fn link_sources(root: &Path, anchor: &Path) -> Result<PathBuf, BuildError> {
    std::fs::create_dir_all(root).map_err(|e| BuildError::io("create", root, e))?;
    let link = root.join(SRC_LINK);
    if std::fs::read_link(&link).ok().as_deref() != Some(anchor) {
        if std::fs::symlink_metadata(&link).is_ok() {
            std::fs::remove_file(&link).map_err(|e| BuildError::io("remove", &link, e))?;
        }
        std::os::unix::fs::symlink(anchor, &link).map_err(|e| BuildError::io("symlink", &link, e))?;
    }
    Ok(link)
}

/// `path` (below `anchor`) as the link root names it: `src/<relative>`.
fn through_link(anchor: &Path, path: &Path) -> Result<PathBuf, BuildError> {
    let rel = path
        .strip_prefix(anchor)
        .map_err(|_| BuildError::Invalid(format!("{} is not below {}", path.display(), anchor.display())))?;
    Ok(Path::new(SRC_LINK).join(rel))
}

/// The generated crate whose dependency graph is "kernel + libc-hostcall":
/// building it builds both with one resolution, so a kernel that depends on
/// libc-hostcall itself shares that single copy. `kernel` and `libc` are
/// paths relative to the link root (through [`SRC_LINK`]). The link is
/// excluded from the link root's workspace, so crates behind it still find
/// (and inherit from) their own workspace.
///
/// The crates compile at the module's [`OptLevel`] (rustc's inlining before
/// the link decides most of the PTX's size: the `regex` kernel is 20.1 MB of
/// PTX with its crates at `opt-level = 3`, 12.8 MB at `"z"`), except the
/// device libc and the protocol, which every hostcall runs through and which
/// stay at 3.
fn write_link_root(
    root: &Path,
    kernel: Option<(&Path, &str)>,
    libc: Option<(&Path, &str)>,
    sysroot: &Sysroot,
    opt_level: OptLevel,
) -> Result<(), BuildError> {
    let mut manifest = String::from(
        "# Generated by hostcall-build; rewritten on every build.\n\
         [package]\nname = \"hostcall-link-root\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [workspace]\nexclude = [\"src\"]\n\n[lib]\npath = \"lib.rs\"\n\n[dependencies]\n",
    );
    if let Some((kernel, package)) = kernel {
        manifest.push_str(&format!("kernel = {{ path = {}, package = \"{package}\" }}\n", toml_path(kernel)?));
    }
    if let Some((libc, package)) = libc {
        manifest.push_str(&format!("libc-hostcall = {{ path = {}, package = \"{package}\" }}\n", toml_path(libc)?));
    }
    // Kernels and their dependencies that use the `libc` crate get the copy
    // with the nvptx64 fixup, the same one std was built with.
    manifest.push_str(&format!(
        "\n[patch.crates-io]\nlibc = {{ path = {} }}\n\n[profile.release]\n",
        toml_path(&sysroot.libc_src()?)?
    ));
    for (key, value) in release_profile(opt_level) {
        manifest.push_str(&format!("{key} = {value}\n"));
    }
    manifest.push_str(
        "\n[profile.release.package.libc-hostcall]\nopt-level = 3\n\n\
         [profile.release.package.hostcall-abi]\nopt-level = 3\n",
    );
    write_if_changed(&root.join("Cargo.toml"), &manifest)?;
    write_if_changed(
        &root.join("lib.rs"),
        "//! Generated by hostcall-build: only its dependencies matter.\n#![no_std]\n",
    )
}

/// The release profile every kernel crate builds with.
fn release_profile(opt_level: OptLevel) -> [(&'static str, &'static str); 7] {
    [
        ("opt-level", opt_level.cargo_profile()),
        ("debug", "false"),
        ("debug-assertions", "false"),
        ("overflow-checks", "false"),
        ("panic", "\"abort\""),
        ("incremental", "false"),
        ("lto", "false"),
    ]
}

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// Writes every bitcode member of `rlib` into `dir` as `<prefix>-<member>`
/// (a bitcode file, a binary's, as `<prefix>.bc`).
fn extract_bitcode(rlib: &Path, dir: &Path, prefix: &str) -> Result<Vec<PathBuf>, BuildError> {
    let bytes = std::fs::read(rlib).map_err(|e| BuildError::io("read", rlib, e))?;
    if archive::is_bitcode(&bytes) {
        let path = dir.join(format!("{prefix}.bc"));
        std::fs::write(&path, &bytes).map_err(|e| BuildError::io("write", &path, e))?;
        return Ok(vec![path]);
    }
    let members = archive::members(&bytes).map_err(|e| BuildError::Invalid(format!("{}: {e}", rlib.display())))?;
    let mut out = Vec::new();
    for member in members.iter().filter(|m| archive::is_bitcode(m.data)) {
        let path = dir.join(format!("{prefix}-{}", member.name.replace(['/', '\\'], "_")));
        std::fs::write(&path, member.data).map_err(|e| BuildError::io("write", &path, e))?;
        out.push(path);
    }
    Ok(out)
}

/// `libfoo-0123abcd.rlib` / `libfoo.rlib` -> `foo`.
fn rlib_crate_name(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    let stem = stem.strip_prefix("lib").unwrap_or(stem);
    stem.rsplit_once('-').map(|(name, _)| name).unwrap_or(stem).to_owned()
}

/// What the user crates' IR says the module must keep and needs.
struct UserSymbols {
    entries: Vec<String>,
    hostcall_globals: Vec<String>,
    /// A user crate defines the panic handler, so it is `no_std` at the top.
    own_panic_handler: bool,
}

fn ir_symbol(rest: &str) -> String {
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next().unwrap_or_default().to_owned(),
        None => rest.split(['(', ' ']).next().unwrap_or_default().to_owned(),
    }
}

fn scan_user_ir(ll: &str) -> UserSymbols {
    let mut symbols = UserSymbols { entries: Vec::new(), hostcall_globals: Vec::new(), own_panic_handler: false };
    for line in ll.lines() {
        if let Some(define) = line.strip_prefix("define ") {
            let Some(at) = define.find('@') else { continue };
            let name = ir_symbol(&define[at + 1..]);
            if define[..at].contains("ptx_kernel") {
                symbols.entries.push(name);
            } else if name.ends_with("rust_begin_unwind") {
                symbols.own_panic_handler = true;
            }
        } else if let Some(global) = line.strip_prefix('@') {
            let name = ir_symbol(global);
            if name.starts_with("__HOSTCALL") && !global.contains(" external ") {
                symbols.hostcall_globals.push(name);
            }
        }
    }
    symbols.entries.sort();
    symbols.entries.dedup();
    symbols.hostcall_globals.sort();
    symbols.hostcall_globals.dedup();
    symbols
}

/// The binary whose `main` is the kernel: the one asked for, else none when
/// the package has a lib, else its only binary.
fn pick_bin(kernel: &Path, asked: Option<&str>, targets: &cargo::PackageTargets) -> Result<Option<String>, BuildError> {
    let list = || targets.bins.join(", ");
    match (asked, targets.has_lib, targets.bins.as_slice()) {
        (Some(bin), _, bins) if bins.iter().any(|b| b == bin) => Ok(Some(bin.to_owned())),
        (Some(bin), _, []) => {
            Err(BuildError::Invalid(format!("{} has no binary `{bin}` (it has none)", kernel.display())))
        }
        (Some(bin), _, _) => {
            Err(BuildError::Invalid(format!("{} has no binary `{bin}` (it has: {})", kernel.display(), list())))
        }
        (None, true, _) => Ok(None),
        (None, false, [one]) => Ok(Some(one.clone())),
        (None, false, []) => {
            Err(BuildError::Invalid(format!("{} has neither a lib nor a binary target", kernel.display())))
        }
        (None, false, _) => Err(BuildError::Invalid(format!(
            "{} has several binaries; pick one with --bin: {}",
            kernel.display(),
            list()
        ))),
    }
}

/// The entry point of a binary: every thread calls std's `lang_start` for
/// the crate's `main` (which the fixup `0009` makes call `main` and return
/// its exit code), then `exit(code)` when the code is not 0.
fn main_entry_ir(ll: &str, main_crate: &str) -> Result<String, BuildError> {
    // The crate root's `main` is `_RNvCs<hash>_<len><crate>4main`; its
    // `lang_start::<T>` is `_RINvNtCs<hash>_3std2rt10lang_start<T>Cs<hash>_<len><crate>`.
    let ident = format!("{}{main_crate}", main_crate.len());
    let mut main = None;
    let mut lang_start = None;
    for line in ll.lines() {
        let Some(define) = line.strip_prefix("define ") else { continue };
        let Some(at) = define.find('@') else { continue };
        let name = ir_symbol(&define[at + 1..]);
        let root_fn = name.strip_prefix("_RNvCs").and_then(|r| r.split_once('_')).map(|(_, r)| r);
        if root_fn == Some(&format!("{ident}4main")) {
            main = Some(name);
        } else if name.starts_with("_RINvNtCs") && name.contains("_3std2rt10lang_start") && name.ends_with(&ident) {
            lang_start = Some(name);
        }
    }
    let (Some(main), Some(lang_start)) = (main, lang_start) else {
        return Err(BuildError::Invalid(format!(
            "the binary {main_crate} has no `fn main` that std starts (found no `main` and `lang_start` for it)"
        )));
    };
    Ok(format!(
        "; Generated by hostcall-build: the entry point of the binary {main_crate}.\n\
         {layout}\n\
         target triple = \"nvptx64-nvidia-cuda\"\n\n\
         declare void @\"{main}\"()\n\
         declare i64 @\"{lang_start}\"(ptr, i64, ptr, i8)\n\
         declare void @exit(i32)\n\n\
         define ptx_kernel void @{entry}() {{\n\
         \x20 %code = call i64 @\"{lang_start}\"(ptr @\"{main}\", i64 0, ptr null, i8 0)\n\
         \x20 %code32 = trunc i64 %code to i32\n\
         \x20 %ok = icmp eq i32 %code32, 0\n\
         \x20 br i1 %ok, label %done, label %fail\n\
         fail:\n\
         \x20 call void @exit(i32 %code32)\n\
         \x20 unreachable\n\
         done:\n\
         \x20 ret void\n\
         }}\n",
        entry = crate::MAIN_ENTRY,
        layout = ll.lines().find(|l| l.starts_with("target datalayout")).unwrap_or_default(),
    ))
}

/// Builds the kernel crate at [`PtxOptions::kernel_dir`] into PTX at
/// [`PtxOptions::out`]. See the crate docs for the steps.
pub fn build_ptx(options: &PtxOptions) -> Result<PtxArtifact, BuildError> {
    crate::set_quiet(!options.verbose);
    let kernel = canonical(&options.kernel_dir, "kernel crate")?;
    if !kernel.join("Cargo.toml").is_file() {
        return Err(BuildError::Invalid(format!("{} has no Cargo.toml", kernel.display())));
    }
    let libc = match &options.libc_dir {
        Some(dir) if dir.join("Cargo.toml").is_file() => Some(canonical(dir, "libc crate")?),
        Some(dir) => {
            return Err(BuildError::Invalid(format!(
                "libc crate {} has no Cargo.toml (set libc_dir to None for kernels without libc)",
                dir.display()
            )))
        }
        None => None,
    };
    std::fs::create_dir_all(&options.cache_dir).map_err(|e| BuildError::io("create", &options.cache_dir, e))?;
    let cache = canonical(&options.cache_dir, "cache dir")?;
    let _lock = lock_cache(&cache)?;

    let toolchain = ensure_toolchain()?;
    let sysroot = ensure_sysroot(&toolchain, &options.arch, &cache)?;
    let manifest = kernel.join("Cargo.toml");
    let targets = cargo::package_targets(&toolchain, &manifest)?;
    let main_bin = pick_bin(&kernel, options.bin.as_deref(), &targets)?;

    // 1. The kernel + libc graph, in a target dir of its own (never the
    //    caller's: an outer cargo holds that lock while running build.rs).
    //    A binary cannot be a dependency: its graph builds by itself (2.),
    //    and the link root then holds only the device libc.
    let started = Instant::now();
    let mut key = Fingerprint::new();
    key.field(kernel.as_os_str().as_encoded_bytes());
    key.field(libc.as_deref().map(|l| l.as_os_str().as_encoded_bytes()).unwrap_or_default());
    key.field(main_bin.as_deref().unwrap_or_default().as_bytes());
    let root = cache.join("roots").join(&key.hex()[..16]);
    let anchor = match &libc {
        Some(libc) => common_ancestor(&kernel, libc),
        None => kernel.parent().map_or_else(|| kernel.clone(), Path::to_path_buf),
    };
    let src = link_sources(&root, &anchor)?;
    let kernel_package = targets.name.clone();
    let libc_package = libc.as_ref().map(|l| package_name(&l.join("Cargo.toml"))).transpose()?;
    let kernel_rel = through_link(&anchor, &kernel)?;
    let libc_rel = libc.as_ref().map(|l| through_link(&anchor, l)).transpose()?;
    let libc_entry = libc_rel.as_deref().zip(libc_package.as_deref());
    let kernel_entry = Some((kernel_rel.as_path(), kernel_package.as_str())).filter(|_| main_bin.is_none());
    write_link_root(&root, kernel_entry, libc_entry, &sysroot, options.opt_level)?;
    let kernel_name = kernel.file_name().and_then(|n| n.to_str()).unwrap_or("kernel");
    match &main_bin {
        Some(bin) => progress(&format!("building kernel {kernel_name} (binary {bin}) for {}...", options.arch)),
        None => progress(&format!("building kernel {kernel_name} for {}...", options.arch)),
    }

    let mut base_flags: Vec<String> = RUSTFLAGS.iter().map(|f| f.to_string()).collect();
    base_flags.push("--sysroot".into());
    base_flags.push(sysroot.dir.display().to_string());
    // Remap only what ends up in the PTX (panic locations, debug info):
    // compiler errors keep the real paths a person can open.
    base_flags.push("--remap-path-scope=object".into());
    // Later prefixes win, so the general ones come first. Sources below the
    // anchor read as their path relative to it (`hostcall-abi/src/lib.rs`),
    // the kernel and the libc crate as `<their directory name>/src/...`:
    // what a panic message from a program built in their workspace says,
    // and what Buck2 names them.
    let mut general: Vec<(PathBuf, String)> = vec![(cache.clone(), "/hostcall/cache".into())];
    if let Some(home) = cargo_home() {
        general.push((home, "/cargo".into()));
    }
    let mut remaps = general.clone();
    // Cargo names the files of crates below the link root relative to it
    // (`src/<crate>/src/lib.rs`), others absolute; each source gets both.
    remaps.push((anchor.clone(), String::new()));
    remaps.push((src.clone(), String::new()));
    remaps.push((PathBuf::from(SRC_LINK), String::new()));
    let dir_name = |p: &Path| p.file_name().and_then(|n| n.to_str()).unwrap_or("crate").to_owned();
    if let (Some(libc), Some(rel)) = (&libc, &libc_rel) {
        for from in [libc.clone(), root.join(rel), rel.clone()] {
            remaps.push((from, dir_name(libc)));
        }
    }
    for from in [kernel.clone(), root.join(&kernel_rel), kernel_rel.clone()] {
        remaps.push((from, kernel_name.to_string()));
    }
    let with_remaps = |remaps: &[(PathBuf, String)]| {
        let mut flags = base_flags.clone();
        flags.extend(remaps.iter().map(|(from, to)| format!("--remap-path-prefix={}={to}", from.display())));
        flags
    };
    let wrapper = crate::sysroot::write_wrapper(&cache)?;
    let target_dir = cache.join(format!("target-{}", sysroot.hash));
    let build = CargoBuild {
        step: "building the kernel crate",
        manifest: root.join("Cargo.toml"),
        packages: Vec::new(),
        bins: Vec::new(),
        target_spec: sysroot.spec.clone(),
        target_dir: target_dir.clone(),
        rustflags: with_remaps(&remaps),
        config: Vec::new(),
        offline: false,
        wrapper: wrapper.clone(),
    };
    let mut user: Vec<Artifact> =
        cargo::build(&toolchain, &build)?.into_iter().filter(|a| a.crate_name != ROOT_CRATE).collect();

    // 2. A binary: its own package, built where it is (its workspace, its
    //    features, its lock file) with the link root's profile and libc.
    //    Cargo names its sources relative to its workspace root.
    if let Some(bin) = &main_bin {
        let mut remaps = general;
        remaps.push((targets.workspace_root.clone(), String::new()));
        remaps.push((kernel.clone(), kernel_name.to_string()));
        match kernel.strip_prefix(&targets.workspace_root) {
            Ok(rel) if rel.as_os_str().is_empty() => remaps.push(("src".into(), format!("{kernel_name}/src"))),
            Ok(rel) => remaps.push((rel.to_path_buf(), kernel_name.to_string())),
            Err(_) => {}
        }
        let mut config = vec![format!("patch.crates-io.libc.path={}", toml_path(&sysroot.libc_src()?)?)];
        config.extend(release_profile(options.opt_level).iter().map(|(k, v)| format!("profile.release.{k}={v}")));
        let build = CargoBuild {
            step: "building the kernel binary",
            manifest: manifest.clone(),
            packages: Vec::new(),
            bins: vec![bin.clone()],
            target_spec: sysroot.spec.clone(),
            target_dir,
            rustflags: with_remaps(&remaps),
            config,
            offline: false,
            wrapper,
        };
        user.extend(cargo::build(&toolchain, &build)?);
    }
    progress(&format!("kernel crates built in {:.1?}", started.elapsed()));

    // 2.-4. Bitcode, one module, PTX: the part Buck2 runs too (`link`).
    let user: Vec<CrateRlib> = user.into_iter().map(|a| CrateRlib { crate_name: a.crate_name, rlib: a.rlib }).collect();
    let mut sysroot_rlibs = Vec::new();
    for entry in std::fs::read_dir(sysroot.lib_dir()).map_err(|e| BuildError::io("read", &sysroot.lib_dir(), e))? {
        let path = entry.map_err(|e| BuildError::io("read", &sysroot.lib_dir(), e))?.path();
        if path.extension().is_some_and(|x| x == "rlib") {
            sysroot_rlibs.push(CrateRlib { crate_name: rlib_crate_name(&path), rlib: path });
        }
    }
    let link = LinkOptions {
        kernel: kernel.display().to_string(),
        user,
        sysroot: sysroot_rlibs,
        llvm_bin: toolchain.llvm_bin.clone(),
        work_dir: root.clone(),
        out: options.out.clone(),
        arch: options.arch.clone(),
        opt_level: options.opt_level,
        keep: options.keep.clone(),
        main_crate: main_bin.map(|b| b.replace('-', "_")),
    };
    let mut artifact = link_ptx(&link)?;
    artifact.inputs = std::iter::once(kernel).chain(libc).collect();
    if options.cubin {
        let cubin = CubinOptions { arch: options.arch.clone(), max_registers: options.max_registers, cache_dir: cache };
        artifact.cubin = build_cubin(&artifact.path, &cubin_path(&artifact.path, &options.arch), &cubin)?;
    }
    Ok(artifact)
}

/// One crate's rlib, as a build system produced it.
#[derive(Debug, Clone)]
pub struct CrateRlib {
    pub crate_name: String,
    pub rlib: PathBuf,
}

impl CrateRlib {
    /// `path` with the crate name read from its file name (`libcore-1a2b.rlib`).
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        let rlib = path.into();
        CrateRlib { crate_name: rlib_crate_name(&rlib), rlib }
    }
}

/// What [`link_ptx`] turns into PTX.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// Names the kernel in messages.
    pub kernel: String,
    /// The kernel crate and every crate it builds on except the sysroot's
    /// (the device libc among them): their IR decides the entry points and
    /// the `__HOSTCALL*` globals that survive.
    pub user: Vec<CrateRlib>,
    /// core, alloc, std, panic_abort and their dependencies.
    pub sysroot: Vec<CrateRlib>,
    /// Directory holding `llvm-link`, `opt`, `llc`.
    pub llvm_bin: PathBuf,
    /// Scratch space (bitcode, linked modules); reused between runs.
    pub work_dir: PathBuf,
    pub out: PathBuf,
    pub arch: String,
    pub opt_level: OptLevel,
    pub keep: Vec<String>,
    /// The binary crate (among `user`) whose `main` gets the entry point
    /// [`crate::MAIN_ENTRY`].
    pub main_crate: Option<String>,
}

fn llvm_tool(options: &LinkOptions, step: &str, tool: &str, args: &[&std::ffi::OsStr]) -> Result<(), BuildError> {
    let program = options.llvm_bin.join(format!("{tool}{}", std::env::consts::EXE_SUFFIX));
    run(step, hermetic_command(program).args(args)).map(|_| ())
}

/// Bitcode out of the rlibs, `llvm-link` into one module, `opt`
/// (internalize everything but the entry points, the `__HOSTCALL*` globals
/// and `keep`; global DCE; `opt_level`; mergefunc; global DCE), `llc` to PTX. Both doors end here:
/// inputs are ordered by crate name, never by how a build system named the
/// files, so the same crates give the same bytes.
pub fn link_ptx(options: &LinkOptions) -> Result<PtxArtifact, BuildError> {
    let started = Instant::now();
    let by_name = |a: &CrateRlib, b: &CrateRlib| (&a.crate_name, &a.rlib).cmp(&(&b.crate_name, &b.rlib));
    let mut user = options.user.clone();
    // Cargo reports in completion order, which varies run to run.
    user.sort_by(by_name);
    user.dedup_by(|a, b| a.rlib == b.rlib);
    let bc_dir = options.work_dir.join("bc");
    if bc_dir.exists() {
        std::fs::remove_dir_all(&bc_dir).map_err(|e| BuildError::io("remove", &bc_dir, e))?;
    }
    std::fs::create_dir_all(&bc_dir).map_err(|e| BuildError::io("create", &bc_dir, e))?;
    let mut user_bitcode = Vec::new();
    for (i, artifact) in user.iter().enumerate() {
        user_bitcode.extend(extract_bitcode(&artifact.rlib, &bc_dir, &format!("u{i:03}-{}", artifact.crate_name))?);
    }
    if user_bitcode.is_empty() {
        return Err(BuildError::Invalid(format!("the build of {} produced no bitcode", options.kernel)));
    }

    let user_ll = options.work_dir.join("user.ll");
    let mut args: Vec<&std::ffi::OsStr> = vec!["-S".as_ref(), "-o".as_ref(), user_ll.as_os_str()];
    args.extend(user_bitcode.iter().map(|p| p.as_os_str()));
    llvm_tool(options, "llvm-link (kernel crates)", "llvm-link", &args)?;
    let ll = std::fs::read_to_string(&user_ll).map_err(|e| BuildError::io("read", &user_ll, e))?;
    let mut symbols = scan_user_ir(&ll);
    let mut entry_ll = None;
    if let Some(main_crate) = &options.main_crate {
        let path = options.work_dir.join("main-entry.ll");
        std::fs::write(&path, main_entry_ir(&ll, main_crate)?).map_err(|e| BuildError::io("write", &path, e))?;
        symbols.entries.push(crate::MAIN_ENTRY.to_owned());
        entry_ll = Some(path);
    }
    if symbols.entries.is_empty() {
        return Err(BuildError::Invalid(format!(
            "no entry points in {}: declare `#[no_mangle] pub extern \"ptx-kernel\" fn name()` \
             (with #![feature(abi_ptx)])",
            options.kernel
        )));
    }

    let mut sysroot: Vec<CrateRlib> = options
        .sysroot
        .iter()
        .filter(|c| !symbols.own_panic_handler || NO_STD_SYSROOT.contains(&c.crate_name.as_str()))
        .cloned()
        .collect();
    sysroot.sort_by(by_name);
    let mut all_bitcode = user_bitcode.clone();
    all_bitcode.extend(entry_ll);
    for (i, rlib) in sysroot.iter().enumerate() {
        all_bitcode.extend(extract_bitcode(&rlib.rlib, &bc_dir, &format!("s{i:03}-{}", rlib.crate_name))?);
    }

    // One module; everything not kept becomes internal and dies in DCE.
    let linked = options.work_dir.join("linked.bc");
    let optimized = options.work_dir.join("optimized.bc");
    let mut args: Vec<&std::ffi::OsStr> = vec!["-o".as_ref(), linked.as_os_str()];
    args.extend(all_bitcode.iter().map(|p| p.as_os_str()));
    llvm_tool(options, "llvm-link", "llvm-link", &args)?;

    let mut keep: Vec<String> = symbols.entries.clone();
    keep.extend(symbols.hostcall_globals.iter().cloned());
    keep.extend(options.keep.iter().cloned());
    let passes = format!("-passes=internalize,globaldce,default<{}>,mergefunc,globaldce", options.opt_level.pipeline());
    let keep_arg = format!("-internalize-public-api-list={}", keep.join(","));
    let args: Vec<&std::ffi::OsStr> =
        vec![passes.as_ref(), keep_arg.as_ref(), linked.as_os_str(), "-o".as_ref(), optimized.as_os_str()];
    llvm_tool(options, "opt", "opt", &args)?;

    if let Some(dir) = options.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| BuildError::io("create", dir, e))?;
    }
    let partial = options.out.with_extension("ptx.partial");
    let cpu = format!("-mcpu={}", options.arch);
    let attrs = format!("-mattr={}", crate::sysroot::ptx_features(&options.arch));
    let level = options.opt_level.codegen_flag();
    let args: Vec<&std::ffi::OsStr> =
        vec![cpu.as_ref(), attrs.as_ref(), level.as_ref(), optimized.as_os_str(), "-o".as_ref(), partial.as_os_str()];
    llvm_tool(options, "llc", "llc", &args)?;
    let text = std::fs::read_to_string(&partial).map_err(|e| BuildError::io("read", &partial, e))?;
    let (text, lowered) = crate::local_atomics::lower(&text);
    if lowered > 0 {
        std::fs::write(&partial, &text).map_err(|e| BuildError::io("write", &partial, e))?;
        progress(&format!(
            "{lowered} atomic(s) on a thread's own stack (a lock in a local variable) made plain loads and stores"
        ));
    }
    std::fs::rename(&partial, &options.out).map_err(|e| BuildError::io("rename", &partial, e))?;

    let bytes = text.into_bytes();
    let summary = ptx_summary(&String::from_utf8_lossy(&bytes));
    if !summary.externs.is_empty() {
        progress(&format!(
            "warning: the PTX still needs {} (the module will not load until something defines them)",
            summary.externs.join(", ")
        ));
    }
    progress(&format!(
        "linked {} bitcode modules from {} crates; {} bytes of PTX at {} in {:.1?}",
        all_bitcode.len(),
        user.len() + sysroot.len(),
        bytes.len(),
        options.out.display(),
        started.elapsed()
    ));
    Ok(PtxArtifact {
        path: options.out.clone(),
        size: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
        summary,
        cubin: None,
        inputs: user.iter().chain(sysroot.iter()).map(|c| c.rlib.clone()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ir_scan_finds_entries_hostcall_globals_and_panic_handlers() {
        let ll = r#"
@__HOSTCALL__open = local_unnamed_addr global [4 x i8] zeroinitializer, align 4
@__HOSTCALL_BUFF_TOP__ = external global i64
@other = global i32 0
define ptx_kernel void @kernel_main() unnamed_addr #2 {
define ptx_kernel void @"weird name"(ptr %0) {
define internal void @helper() {
define hidden void @_RNvCs1234_7___rustc17rust_begin_unwind(ptr %0) {
"#;
        let symbols = scan_user_ir(ll);
        assert_eq!(symbols.entries, ["kernel_main", "weird name"]);
        assert_eq!(symbols.hostcall_globals, ["__HOSTCALL__open"]);
        assert!(symbols.own_panic_handler);
    }

    #[test]
    fn crate_names_come_from_rlib_file_names() {
        assert_eq!(rlib_crate_name(Path::new("/x/libcore-3da3416a798b56cc.rlib")), "core");
        assert_eq!(rlib_crate_name(Path::new("libstd.rlib")), "std");
        assert_eq!(rlib_crate_name(Path::new("librustc_std_workspace_core-1.rlib")), "rustc_std_workspace_core");
    }
}
