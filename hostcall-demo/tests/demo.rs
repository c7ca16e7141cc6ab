//! The demo, end to end.
//!
//! Without a GPU: the embedded PTX is complete (both entry points, every
//! queue global, nothing undefined) and `ptxas` accepts it when one is found.
//! With a GPU (skipped, with the reason printed, when `hostcalls_bin` reports
//! no CUDA driver): golden stdout, files on disk, the panic's message and
//! location, `HOSTCALL_DEBUG` tracing.
//!
//! `HOSTCALLS_BIN` overrides the binary under test (to run these tests on a
//! machine without cargo, next to a copied `hostcalls_bin`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/culinux.ptx"));
/// Empty when the build found no ptxas.
const CUBIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/culinux.cubin"));
const GOLDEN: &str = include_str!("golden/culinux_main.stdout");
const KERNEL_SOURCE: &str = include_str!("../../culinux/src/lib.rs");

fn bin() -> PathBuf {
    std::env::var_os("HOSTCALLS_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hostcalls_bin")), PathBuf::from)
}

/// Run `hostcalls_bin args` in `dir` with `stdin`, or `None` (after printing
/// why) when there is no GPU to run on.
fn run(dir: &std::path::Path, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Option<Output> {
    run_to(Stdio::piped(), dir, args, stdin, env)
}

/// [`run`] with its stdout going to `stdout` (captured only when piped).
fn run_to(stdout: Stdio, dir: &std::path::Path, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Option<Output> {
    let mut cmd = Command::new(bin());
    cmd.args(args).current_dir(dir).stdin(Stdio::piped()).stdout(stdout).stderr(Stdio::piped());
    cmd.env_remove("HOSTCALL_DEBUG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start hostcalls_bin");
    child.stdin.take().expect("stdin").write_all(stdin).expect("write stdin");
    let out = child.wait_with_output().expect("wait for hostcalls_bin");
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("no CUDA driver found") || err.contains("CUDA_ERROR_NO_DEVICE") {
        eprintln!("skipping: {}", err.trim());
        return None;
    }
    Some(out)
}

/// Lines whose numbers change run to run, with each number replaced by `#`.
fn mask(line: &str) -> String {
    if line.starts_with("time: ") {
        let mut out = String::new();
        let mut in_number = false;
        for c in line.chars() {
            if c.is_ascii_digit() {
                if !in_number {
                    out.push('#');
                }
                in_number = true;
            } else {
                out.push(c);
                in_number = false;
            }
        }
        out
    } else {
        line.to_string()
    }
}

#[test]
fn embedded_ptx_is_complete_and_assembles() {
    let summary = hostcall_build::ptx_summary(PTX);
    for entry in ["culinux_main", "culinux_panic"] {
        assert!(summary.entries.iter().any(|e| e == entry), "entry {entry} missing: {:?}", summary.entries);
    }
    assert!(summary.externs.is_empty(), "undefined symbols: {:?}", summary.externs);
    let hostcall_globals: Vec<&str> = summary.hostcall_globals().collect();
    for g in hostcall_runtime::hostcall_abi::globals::ALL {
        assert!(hostcall_globals.contains(&g), "queue global {g} missing");
    }
    for op in ["write", "read", "open", "close", "statx", "clock_gettime", "getrandom", "getenv", "abort", "exit"] {
        let name = format!("__HOSTCALL__{op}");
        assert!(hostcall_globals.contains(&name.as_str()), "{name} missing");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("culinux.ptx");
    std::fs::write(&path, PTX).unwrap();
    match hostcall_build::run_ptxas(&path, "sm_90").expect("ptxas ran") {
        hostcall_build::PtxasCheck::Accepted { cubin_bytes, .. } => {
            eprintln!("ptxas accepted culinux.ptx ({cubin_bytes} bytes of cubin)")
        }
        hostcall_build::PtxasCheck::Skipped(why) => eprintln!("skipping ptxas check: {why}"),
    }
}

/// The build made a cubin wherever it found a ptxas (CI installs one), the
/// cubin declares what the PTX declares, and `--print-hash` names both with
/// the hash the binary checks before loading.
#[test]
fn embedded_cubin_is_built_and_matches_the_image_hash() {
    use hostcall_runtime::hostcall_image::{bundle_sha256, sha256_hex, Cubin, CubinKind};
    let cubin = (!CUBIN.is_empty()).then_some(CUBIN);
    match (cubin, hostcall_build::find_ptxas()) {
        (None, Some(ptxas)) => panic!("{} is here, but the build embedded no cubin", ptxas.display()),
        (None, None) => eprintln!("no ptxas: checking the PTX-only image"),
        (Some(bytes), _) => {
            let parsed = Cubin::parse(bytes).expect("the embedded cubin is a CUDA ELF file");
            assert_eq!(parsed.kind, CubinKind::Relocatable);
            assert_eq!(parsed.arch().as_deref(), Some("sm_90"));
            let summary = hostcall_build::ptx_summary(PTX);
            assert_eq!(parsed.entries.len(), summary.entries.len(), "{:?}", parsed.entries);
            for global in summary.hostcall_globals() {
                assert!(parsed.globals.iter().any(|g| g == global), "{global} missing from the cubin");
            }
        }
    }
    let out = Command::new(bin()).arg("--print-hash").output().expect("run hostcalls_bin --print-hash");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    let expected_cubin = match cubin {
        Some(bytes) => format!("cubin {}  {} bytes", sha256_hex(bytes), bytes.len()),
        None => "cubin none".to_owned(),
    };
    let expected = format!(
        "image {}\nptx {}  {} bytes\n{expected_cubin}\n",
        bundle_sha256(PTX.as_bytes(), cubin),
        sha256_hex(PTX.as_bytes()),
        PTX.len()
    );
    assert_eq!(printed, expected);
}

/// The lines of a `HOSTCALL_DEBUG` run's stderr that say how the module loaded.
fn load_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("module loaded on")).collect()
}

#[test]
fn gpu_demo_loads_its_cubin_and_runs_1024_thread_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--grid", "2", "--block", "1024"];
    let Some(out) = run(dir.path(), &args, b"", &[("HOSTCALL_DEBUG", "1")]) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    if !CUBIN.is_empty() {
        let loads = load_lines(&stderr);
        assert!(loads.iter().any(|l| l.contains("relocatable cubin, linked by the driver")), "{loads:?}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let hellos: std::collections::BTreeSet<&str> = stdout.lines().filter(|l| l.starts_with("hello from")).collect();
    assert_eq!(hellos.len(), 2048, "every thread of 2 x 1024 says hello once");
}

/// PTX alone: the first run compiles it (through the driver's linker, with
/// the register limit that allows 1024-thread blocks) and stores the result;
/// the second loads it from the cache. A cubin alone loads without the PTX,
/// its globals read from its symbol table.
#[test]
fn gpu_ptx_alone_is_compiled_once_then_cached_and_a_cubin_alone_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("jit-cache");
    let cache_env = cache.to_str().expect("UTF-8 temp path");
    let env = [("HOSTCALL_DEBUG", "1"), ("HOSTCALL_JIT_CACHE", cache_env), ("CUDA_CACHE_DISABLE", "1")];
    let args = ["--ptx-only", "--grid", "1", "--block", "1024"];
    for expected in ["PTX, compiled by the driver now", "PTX, compiled code from the JIT cache"] {
        let Some(out) = run(dir.path(), &args, b"", &env) else {
            return;
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
        let loads = load_lines(&stderr);
        assert!(loads.iter().any(|l| l.contains(expected)), "expected `{expected}`: {loads:?}");
    }
    assert_eq!(std::fs::read_dir(&cache).expect("the cache directory was made").count(), 1);
    if CUBIN.is_empty() {
        eprintln!("skipping the cubin-alone run: the build had no ptxas");
        return;
    }
    let cubin = dir.path().join("culinux.cubin");
    std::fs::write(&cubin, CUBIN).unwrap();
    let args = ["--cubin", cubin.to_str().unwrap(), "--grid", "1", "--block", "1"];
    let Some(out) = run(dir.path(), &args, b"", &[]) else {
        return;
    };
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from thread 0 of block 0 (global 0)"));
}

#[test]
fn gpu_demo_golden_output_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let greeting = [("CULINUX_GREETING", "hello from the golden test")];
    let Some(out) = run(dir.path(), &["--", "first", "two words"], b"a line for stdin\n", &greeting) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let mut lines: Vec<String> = stdout.lines().map(mask).collect();
    lines.sort();
    let golden: Vec<&str> = GOLDEN.lines().collect();
    assert_eq!(lines, golden, "stdout (sorted, masked) differs from tests/golden/culinux_main.stdout");
    // The host clock seen by the GPU is the host's.
    let secs: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("time: SystemTime is ")?.split(' ').next()?.parse().ok())
        .expect("SystemTime line");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(secs.abs_diff(now) < 3600, "device SystemTime {secs}, host {now}");
    assert!(stderr.contains("culinux: this line goes to stderr"), "stderr: {stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("culinux_out.txt")).unwrap(),
        "written on the GPU\nsecond line\n"
    );
    assert!(!dir.path().join("culinux_scratch.txt").exists());
    assert!(!dir.path().join("culinux_big.bin").exists());
}

#[test]
fn gpu_demo_with_empty_stdin_and_no_env() {
    let dir = tempfile::tempdir().unwrap();
    let Some(out) = run(dir.path(), &["--grid", "1", "--block", "1"], b"", &[("CULINUX_GREETING", "")]) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("stdin: (empty)\n"), "{stdout}");
    assert!(stdout.contains("env: CULINUX_GREETING=\n"), "{stdout}");
    assert!(stdout.contains("args: [\"culinux_main\"]\n"), "{stdout}");
    assert!(stdout.contains("env: vars_os() lists CULINUX_GREETING: true\n"), "{stdout}");
}

#[test]
fn gpu_panic_reports_message_and_location() {
    let dir = tempfile::tempdir().unwrap();
    let Some(out) = run(dir.path(), &["--entry", "culinux_panic"], b"", &[]) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(134), "stderr: {stderr}");
    let line =
        KERNEL_SOURCE.lines().position(|l| l.contains("panic!(\"culinux_panic on purpose")).expect("panic! in culinux")
            + 1;
    let location = format!("panicked at culinux/src/lib.rs:{line}:");
    assert!(stderr.contains(&location), "no `{location}` in: {stderr}");
    assert!(stderr.contains("culinux_panic on purpose: the vector has 0 elements"), "{stderr}");
}

#[test]
fn gpu_debug_traces_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let Some(out) = run(dir.path(), &["--grid", "1", "--block", "1"], b"", &[("HOSTCALL_DEBUG", "1")]) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let calls = ["write", "open", "read", "close", "statx", "lseek", "unlink", "getenv", "environ", "arg", "getrandom"];
    for call in calls.into_iter().chain(["clock_gettime"]) {
        assert!(
            stderr.lines().any(|l| l.contains("DEBUG") && l.contains(&format!(" {call}("))),
            "no trace of `{call}` in: {stderr}"
        );
    }
}

#[test]
fn gpu_output_the_host_could_not_write_is_reported() {
    // The device does not wait for its writes to stdout; when the host cannot
    // write them (here: /dev/full, ENOSPC), the run says so and exits 1.
    let dir = tempfile::tempdir().unwrap();
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("skipping: no /dev/full");
        return;
    };
    let Some(out) = run_to(Stdio::from(full), dir.path(), &["--grid", "1", "--block", "1"], b"", &[]) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("the kernel did not wait for failed on the host (first: write: ENOSPC)"), "{stderr}");
    // The kernel itself ran to the end (its files are written).
    assert!(dir.path().join("culinux_out.txt").exists());
}

#[test]
fn missing_ptx_file_is_a_clear_error() {
    let out = Command::new(bin()).args(["--ptx", "/nonexistent/k.ptx"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("hostcalls_bin: /nonexistent/k.ptx:"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
