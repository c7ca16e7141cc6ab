//! `hostcall new`, `build` and `run`, as a new user types them.
//!
//! Without a GPU `run` builds, then stops with the driver's absence named
//! (the test prints that it skipped the GPU part); with one, the new crate's
//! hello comes back from the GPU. `.ci/gpu` runs the same on the H200 with
//! `--no-build` (the device machine has no Rust toolchain).

use std::path::Path;
use std::process::{Command, Output};

fn hostcall(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hostcall"))
        .args(args)
        .current_dir(dir)
        .env_remove("HOSTCALL_DEBUG")
        .output()
        .expect("start hostcall")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn no_gpu(out: &Output) -> bool {
    let err = text(&out.stderr);
    err.contains("no CUDA driver found") || err.contains("CUDA_ERROR_NO_DEVICE")
}

#[test]
fn new_then_build_then_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = hostcall(tmp.path(), &["new", "demo2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("entry point `demo2_main`"));
    let krate = tmp.path().join("demo2");
    for file in ["Cargo.toml", "src/lib.rs", ".gitignore"] {
        assert!(krate.join(file).is_file(), "{file} missing");
    }
    // A second `new` of the same name refuses, and touches nothing.
    let again = hostcall(tmp.path(), &["new", "demo2"]);
    assert!(!again.status.success() && text(&again.stderr).contains("already exists"));
    assert!(!hostcall(tmp.path(), &["new", "2bad"]).status.success());

    // Build: the PTX's path, one SHA-256 over PTX and cubin, the entry.
    let out = hostcall(tmp.path(), &["build", "demo2", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let ptx_path = Path::new(lines[0]);
    assert!(ptx_path.ends_with("demo2/target/hostcall/demo2.ptx"), "{stdout}");
    let ptx = std::fs::read(ptx_path).expect("the PTX is where build said");
    let cubin = lines
        .iter()
        .find_map(|l| l.strip_prefix("cubin: "))
        .filter(|c| !c.starts_with("none"))
        .map(|c| std::fs::read(c).expect("the cubin is where build said"));
    let sha = hostcall_build::bundle_sha256(&ptx, cubin.as_deref());
    assert!(lines.contains(&format!("sha256: {sha}").as_str()), "{stdout}");
    assert!(lines.contains(&"entries: demo2_main"), "{stdout}");

    // Run: one thread by default, arguments after `--`.
    let out = hostcall(tmp.path(), &["run", "demo2", "-q", "--", "x"]);
    if no_gpu(&out) {
        assert_eq!(out.status.code(), Some(1));
        eprintln!("skipping the GPU part: {}", text(&out.stderr).trim());
        return;
    }
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello from GPU thread 0 of 1, with [\"x\"]\n");
    let out = hostcall(tmp.path(), &["run", "demo2", "-q", "--grid", "2", "--block", "32"]);
    assert_eq!(text(&out.stdout).lines().count(), 64, "{}", text(&out.stderr));
}

#[test]
fn the_new_crate_tests_pass_on_the_cpu() {
    let tmp = tempfile::tempdir().expect("tempdir");
    assert!(hostcall(tmp.path(), &["new", "cpu-check"]).status.success());
    let out = Command::new(env!("CARGO"))
        .args(["test", "--quiet"])
        .current_dir(tmp.path().join("cpu-check"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .expect("run cargo test");
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
}

#[test]
fn bad_paths_and_entries_are_one_line_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = hostcall(tmp.path(), &["run", "missing"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("hostcall: missing: "), "{}", text(&out.stderr));
    let out = hostcall(tmp.path(), &["build", "."]);
    assert!(text(&out.stderr).contains("no Cargo.toml here"), "{}", text(&out.stderr));
    // --no-build before any build says what to do.
    assert!(hostcall(tmp.path(), &["new", "k"]).status.success());
    let out = hostcall(tmp.path(), &["run", "k", "--no-build"]);
    assert!(text(&out.stderr).contains("run `hostcall build`"), "{}", text(&out.stderr));
}

/// A plain binary crate, as `cargo new` makes it: `fn main()` becomes the
/// entry point `hostcall_main`; two binaries need `--bin`.
#[test]
fn a_binary_crate_runs_its_main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let krate = tmp.path().join("plain");
    std::fs::create_dir_all(krate.join("src/bin")).expect("mkdir");
    std::fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"plain\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .expect("write");
    std::fs::write(
        krate.join("src/main.rs"),
        "fn main() {\n    println!(\"plain main, args {:?}\", std::env::args().collect::<Vec<_>>());\n}\n",
    )
    .expect("write");
    let out = hostcall(tmp.path(), &["build", "plain", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).lines().any(|l| l == "entries: hostcall_main"), "{}", text(&out.stdout));

    let out = hostcall(tmp.path(), &["run", "plain", "-q", "--", "x"]);
    if no_gpu(&out) {
        eprintln!("skipping the GPU part: {}", text(&out.stderr).trim());
    } else {
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "plain main, args [\"plain\", \"x\"]\n");
    }

    // A second binary: which one is no longer a guess.
    std::fs::write(krate.join("src/bin/other.rs"), "fn main() {}\n").expect("write");
    let out = hostcall(tmp.path(), &["build", "plain", "-q"]);
    assert!(text(&out.stderr).contains("several binaries; pick one with --bin: "), "{}", text(&out.stderr));
    let out = hostcall(tmp.path(), &["build", "plain", "-q", "--bin", "other"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(&krate.join("target/hostcall/other.ptx").display().to_string()));
    let out = hostcall(tmp.path(), &["build", "plain", "-q", "--bin", "nope"]);
    assert!(text(&out.stderr).contains("no binary `nope`"), "{}", text(&out.stderr));
}
