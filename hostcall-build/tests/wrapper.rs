//! stage0/rustc-wrapper.sh, the one place both doors (cargo, Buck2) agree on
//! what a crate is called inside the PTX. A fake rustc prints the arguments
//! the wrapper hands it, one per line.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use hostcall_build::repo_root;

/// Written once, before any test runs it: a test writing it while another
/// executes it would fail with ETXTBSY.
fn fake_rustc() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wrapper-test");
        std::fs::create_dir_all(&dir).expect("create test dir");
        let path = dir.join("fake-rustc");
        let partial = dir.join("fake-rustc.partial");
        std::fs::write(&partial, "#!/bin/sh\nfor arg; do echo \"$arg\"; done\n").expect("write fake rustc");
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755)).expect("chmod fake rustc");
        std::fs::rename(&partial, &path).expect("rename fake rustc");
        path
    })
}

/// Runs the wrapper on `args` with `env`; returns what rustc got.
fn wrap(args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("stage0/rustc-wrapper.sh")).arg(fake_rustc()).args(args);
    cmd.env_remove("CARGO_PKG_VERSION").env_remove("HOSTCALL_SOURCE_PREFIX");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().expect("run the wrapper");
    assert!(out.status.success(), "wrapper failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").lines().map(str::to_owned).collect()
}

#[test]
fn cargo_metadata_becomes_crate_name_and_version() {
    let got = wrap(
        &[
            "--crate-name",
            "hashbrown",
            "-C",
            "metadata=5c1e7f77",
            "-C",
            "opt-level=3",
            "--target",
            "/x/nvptx64-vectorware-linux.json",
        ],
        &[("CARGO_PKG_VERSION", "0.17.1")],
    );
    assert_eq!(
        got,
        [
            "--crate-name",
            "hashbrown",
            "-C",
            "opt-level=3",
            "--target",
            "/x/nvptx64-vectorware-linux.json",
            "-Cmetadata=hashbrown-0.17.1"
        ]
    );
}

#[test]
fn buck_argument_file_metadata_and_source_tree_are_rewritten() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wrapper-test");
    std::fs::create_dir_all(&dir).expect("create test dir");
    let args = dir.join("args.txt");
    std::fs::write(
        &args,
        "buck-out/v2/art/root/sysroot/__core__/1/__srcs/library/core/src/lib.rs\n\
         --crate-name=core\n\
         -Cmetadata=root//sysroot:core#d3855d4f\n\
         --target=nvptx64-vectorware-linux\n\
         --remap-path-prefix=buck-out/v2/art/root/sysroot/__core__/1/__srcs/=sysroot/\n",
    )
    .expect("write args");
    let at = format!("@{}", args.display());
    let got = wrap(&[&at], &[("CARGO_PKG_VERSION", "0.0.0"), ("HOSTCALL_SOURCE_PREFIX", "/rustc/nightly/")]);
    assert_eq!(
        got,
        [
            "buck-out/v2/art/root/sysroot/__core__/1/__srcs/library/core/src/lib.rs",
            "--crate-name=core",
            "--target=nvptx64-vectorware-linux",
            "--remap-path-prefix=buck-out/v2/art/root/sysroot/__core__/1/__srcs/=/rustc/nightly/",
            "-Cmetadata=core-0.0.0",
        ]
    );
    // Without a prefix, Buck's `<package>/` stays: kernel-side crates.
    let got = wrap(&[&at], &[("CARGO_PKG_VERSION", "0.0.0")]);
    assert!(got.contains(&"--remap-path-prefix=buck-out/v2/art/root/sysroot/__core__/1/__srcs/=sysroot/".to_owned()));
}

#[test]
fn host_compiles_pass_through_untouched() {
    let args = ["--crate-name", "build_script_build", "-C", "metadata=abc", "build.rs"];
    assert_eq!(wrap(&args, &[("CARGO_PKG_VERSION", "1.0.0")]), args);
    // Only `--target` decides: a host compile may name nvptx directories.
    let args =
        ["--crate-name", "proc_macro_x", "-L", "dependency=/t/nvptx64-vectorware-linux/deps", "-C", "metadata=1"];
    assert_eq!(wrap(&args, &[]), args);
}

#[test]
fn buck_knows_the_pinned_channel() {
    let channel = std::fs::read_to_string(repo_root().join("stage0/channel")).expect("read stage0/channel");
    let defs = std::fs::read_to_string(repo_root().join("stage0/defs.bzl")).expect("read stage0/defs.bzl");
    let line = format!("CHANNEL = \"{}\"", channel.trim());
    assert!(defs.lines().any(|l| l == line), "stage0/defs.bzl must say {line} (it says what BUCK files use)");
}
