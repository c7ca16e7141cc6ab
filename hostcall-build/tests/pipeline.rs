//! End to end: fixture kernels under `tests/fixtures/` built to PTX with the
//! pinned nightly. The first run builds the nvptx sysroot (about half a
//! minute on two cores); all tests share one cache, and the pipeline's cache
//! lock serializes them.
//!
//! The std fixture links the real `libc-hostcall` when it builds, else the
//! test-only `stub-libc` (the choice and its reason are printed).
//! `HOSTCALL_TEST_LIBC=stub|real` forces one.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hostcall_build::{build_ptx, repo_root, run_ptxas, PtxArtifact, PtxOptions, PtxasCheck};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hostcall-build-tests");
    std::fs::create_dir_all(&dir).expect("create test output dir");
    dir
}

fn options(kernel: &str, libc: Option<PathBuf>, out: &str) -> PtxOptions {
    let mut options = PtxOptions::new(fixture(kernel));
    options.libc_dir = libc;
    options.cache_dir = hostcall_build::default_cache_dir();
    options.out = out_dir().join(out);
    options
}

fn build(options: &PtxOptions) -> PtxArtifact {
    build_ptx(options).unwrap_or_else(|e| panic!("build_ptx({}) failed:\n{e}", options.kernel_dir.display()))
}

/// The libc the std fixture links: the real one if it builds, else the stub.
fn std_kernel_libc() -> &'static PathBuf {
    static CHOICE: OnceLock<PathBuf> = OnceLock::new();
    CHOICE.get_or_init(|| {
        let real = repo_root().join("libc-hostcall");
        let stub = fixture("stub-libc");
        match std::env::var("HOSTCALL_TEST_LIBC").as_deref() {
            Ok("stub") => return stub,
            Ok("real") => return real,
            _ => {}
        }
        if !real.join("Cargo.toml").is_file() {
            eprintln!("using stub-libc: {} does not exist", real.display());
            return stub;
        }
        match build_ptx(&options("std-kernel", Some(real.clone()), "probe-real-libc.ptx")) {
            Ok(_) => {
                eprintln!("using the real libc-hostcall");
                real
            }
            Err(e) => {
                eprintln!("using stub-libc: the real libc-hostcall does not build yet:\n{e}");
                stub
            }
        }
    })
}

/// The bytes of every `.b8 name[N] = {...}` initializer in `ptx`, one after
/// another: where string constants (panic messages, file names) live.
fn initializer_bytes(ptx: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in ptx.lines().filter(|l| l.contains(".b8 ") && l.contains("= {")) {
        let Some(list) = line.split_once("= {").and_then(|(_, rest)| rest.split_once('}')).map(|(list, _)| list) else {
            continue;
        };
        out.extend(list.split(',').filter_map(|n| n.trim().parse::<u8>().ok()));
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn std_kernel_becomes_self_contained_ptx_that_ptxas_accepts() {
    let artifact = build(&options("std-kernel", Some(std_kernel_libc().clone()), "std-kernel.ptx"));
    let summary = &artifact.summary;
    assert_eq!(summary.entries, ["kernel_main"]);
    assert!(
        summary.externs.is_empty(),
        "undefined symbols left in the PTX (libc {}): {:?}",
        std_kernel_libc().display(),
        summary.externs
    );
    let hostcall_globals: Vec<&str> = summary.hostcall_globals().collect();
    assert!(
        hostcall_globals.contains(&"__HOSTCALL__fixture_probe"),
        "__HOSTCALL globals were not kept: {hostcall_globals:?}"
    );
    eprintln!("std-kernel: {} bytes of PTX, sha256 {}", artifact.size, artifact.sha256);
    // Panic locations name the kernel's files as `<crate dir>/src/...`,
    // never as the tail of a longer path (through the link root's `src/`
    // symlink, or absolute).
    let data = initializer_bytes(&std::fs::read_to_string(&artifact.path).expect("read PTX"));
    assert!(contains(&data, b"std-kernel/src/lib.rs"), "no `std-kernel/src/lib.rs` panic location in the PTX");
    assert!(!contains(&data, b"/std-kernel/src/lib.rs"), "a panic location names the kernel by a longer path");
    match run_ptxas(&artifact.path, "sm_90").unwrap_or_else(|e| panic!("ptxas rejected the PTX:\n{e}")) {
        PtxasCheck::Accepted { ptxas, cubin_bytes } => {
            eprintln!("ptxas {} accepted it ({cubin_bytes} bytes of cubin)", ptxas.display())
        }
        PtxasCheck::Skipped(reason) => eprintln!("skipping the ptxas check: {reason}"),
    }
}

/// With a ptxas, the build leaves a relocatable sm_90 cubin beside the PTX
/// that declares what the PTX declares, and names it by its SHA-256; a second
/// build takes it from the cache, byte for byte.
#[test]
fn the_cubin_is_built_beside_the_ptx_and_cached() {
    if hostcall_build::find_ptxas().is_none() {
        eprintln!("skipping: no ptxas (set PTXAS or install .whl/ as .ci/run does)");
        return;
    }
    let libc = Some(std_kernel_libc().clone());
    let first = build(&options("std-kernel", libc.clone(), "cubin-1.ptx"));
    let cubin = first.cubin.clone().expect("a cubin when ptxas is found");
    assert_eq!(cubin.path, out_dir().join("cubin-1.sm_90.cubin"));
    let bytes = std::fs::read(&cubin.path).expect("read the cubin");
    assert_eq!(hostcall_image::sha256_hex(&bytes), cubin.sha256);
    let parsed = hostcall_image::Cubin::parse(&bytes).expect("ptxas wrote a CUDA ELF file");
    assert_eq!(parsed.kind, hostcall_image::CubinKind::Relocatable, "ptxas -c makes relocatable cubins");
    assert_eq!(parsed.arch().as_deref(), Some("sm_90"));
    assert_eq!(parsed.entries, first.summary.entries);
    for global in first.summary.hostcall_globals() {
        assert!(parsed.globals.iter().any(|g| g == global), "{global} missing from the cubin's symbols");
    }
    let second = build(&options("std-kernel", libc, "cubin-2.ptx"));
    let again = second.cubin.expect("a cubin the second time");
    assert!(again.cached, "the second build of the same PTX takes the cubin from the cache");
    assert_eq!(again.sha256, cubin.sha256);
    // `ptx --check` runs a whole-program ptxas on the PTX: it must leave the
    // build's cubin where it was (it once wrote its own there and removed it).
    run_ptxas(&second.path, "sm_90").expect("ptxas accepts the PTX");
    let kept = std::fs::read(&again.path).expect("the cubin survives the check");
    assert_eq!(hostcall_image::sha256_hex(&kept), cubin.sha256);
}

#[test]
fn same_inputs_give_the_same_ptx_bytes_even_after_a_recompile() {
    let libc = Some(std_kernel_libc().clone());
    let first = build(&options("std-kernel", libc.clone(), "determinism-1.ptx"));
    // Recompile the kernel crate from scratch: a changed mtime makes cargo
    // rebuild it, and the bytes must not notice.
    let source = fixture("std-kernel/src/lib.rs");
    let text = std::fs::read(&source).expect("read fixture");
    std::fs::write(&source, text).expect("rewrite fixture");
    let second = build(&options("std-kernel", libc, "determinism-2.ptx"));
    assert_eq!(first.sha256, second.sha256, "PTX differs between identical builds");
    assert_eq!(std::fs::read(&first.path).expect("read first"), std::fs::read(&second.path).expect("read second"));
}

#[test]
fn no_std_kernel_with_its_own_panic_handler_links_without_std_or_libc() {
    let artifact = build(&options("nostd-kernel", None, "nostd-kernel.ptx"));
    assert_eq!(artifact.summary.entries, ["add_one"]);
    assert!(artifact.summary.externs.is_empty(), "{:?}", artifact.summary.externs);
    assert_eq!(artifact.summary.hostcall_globals().collect::<Vec<_>>(), ["__HOSTCALL__nostd_probe"]);
    assert!(artifact.size < 20_000, "a no_std kernel should stay tiny, got {} bytes", artifact.size);
}

#[test]
fn kernel_that_depends_on_its_libc_gets_one_copy_of_it() {
    let artifact = build(&options("libc-user-kernel", Some(fixture("stub-libc")), "libc-user-kernel.ptx"));
    assert_eq!(artifact.summary.entries, ["report_arena"]);
    assert!(artifact.summary.externs.is_empty(), "{:?}", artifact.summary.externs);
}

#[test]
fn a_crate_without_entry_points_is_an_error_that_says_so() {
    // stub-libc is a fine crate with no `ptx-kernel` functions.
    let error = build_ptx(&options("stub-libc", None, "no-entries.ptx")).expect_err("must fail");
    let message = error.to_string();
    assert!(message.contains("no entry points"), "{message}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy dir");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("dir entry");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().expect("file type").is_dir() {
            if entry.file_name() != "target" {
                copy_dir(&src, &dst);
            }
        } else {
            std::fs::copy(&src, &dst).expect("copy fixture file");
        }
    }
}

#[test]
fn the_same_sources_in_another_directory_give_the_same_ptx() {
    // Cargo hashes a path crate's location into its symbol names; the
    // pipeline must not let a checkout's directory leak into the PTX.
    let mut shas = Vec::new();
    for place in ["moved-a", "moved-b/one/level/deeper"] {
        let base = out_dir().join(place);
        let _ = std::fs::remove_dir_all(&base);
        for crate_dir in ["libc-user-kernel", "stub-libc"] {
            copy_dir(&fixture(crate_dir), &base.join(crate_dir));
        }
        let mut o = PtxOptions::new(base.join("libc-user-kernel"));
        o.libc_dir = Some(base.join("stub-libc"));
        o.cache_dir = hostcall_build::default_cache_dir();
        o.out = base.join("kernel.ptx");
        let artifact = build(&o);
        let text = std::fs::read_to_string(&artifact.path).expect("read PTX");
        assert!(!text.contains(place), "the PTX names its source directory {place}");
        shas.push(artifact.sha256);
    }
    assert_eq!(shas[0], shas[1], "PTX depends on where the sources are");
}

/// The runtime gives the driver large PTX in pieces
/// (`hostcall_image::split`): each piece of a std kernel must assemble on
/// its own as a relocatable object, entries and `__HOSTCALL` globals kept.
#[test]
fn std_kernel_cut_into_pieces_assembles_piece_by_piece() {
    let Some(ptxas) = hostcall_build::find_ptxas() else {
        eprintln!("skipping: no ptxas (set PTXAS or install .whl/ as .ci/run does)");
        return;
    };
    let artifact = build(&options("std-kernel", Some(std_kernel_libc().clone()), "pieces.ptx"));
    let text = std::fs::read_to_string(&artifact.path).expect("read PTX");
    let pieces = hostcall_image::split::split(&text, 4);
    assert_eq!(pieces.len(), 4, "a std kernel has more than 4 functions");
    let dir = out_dir().join("pieces");
    std::fs::create_dir_all(&dir).expect("create the pieces' directory");
    let mut entries = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let summary = hostcall_image::ptx_summary(piece);
        entries.extend(summary.entries.clone());
        if i == 0 {
            for global in artifact.summary.hostcall_globals() {
                assert!(summary.globals.iter().any(|g| g == global), "{global} not defined in piece 0");
            }
        } else {
            assert!(summary.globals.is_empty(), "piece {i} defines {:?}", summary.globals);
        }
        let path = dir.join(format!("piece{i}.ptx"));
        std::fs::write(&path, piece).expect("write a piece");
        let out = std::process::Command::new(&ptxas)
            .args(["-c", "-arch=sm_90", "-O1", "-o"])
            .arg(path.with_extension("o"))
            .arg(&path)
            .output()
            .expect("run ptxas");
        assert!(out.status.success(), "ptxas -c rejected piece {i}:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(entries, artifact.summary.entries);
}
