//! Helpers shared by the emulation tests: a runtime over the CPU backend with
//! a temporary sandbox and captured stdio.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use hostcall_runtime::backend::emu::{DeviceCtx, EmuBackend, EmuModule};
use hostcall_runtime::{QueueConfig, RunReport, Runtime, RuntimeConfig, RuntimeError, SharedBuf};

pub struct Rig {
    pub rt: Runtime,
    pub stdout: SharedBuf,
    pub stderr: SharedBuf,
}

pub fn config(root: &Path, queue: QueueConfig) -> (RuntimeConfig, SharedBuf, SharedBuf) {
    let (stdout, stderr) = (SharedBuf::new(), SharedBuf::new());
    let cfg = RuntimeConfig {
        root: root.to_path_buf(),
        queue,
        stdin: Box::new(std::io::empty()),
        stdout: Box::new(stdout.clone()),
        stderr: Box::new(stderr.clone()),
        env: [("HOSTCALL_TEST".to_string(), "yes".to_string())].into_iter().collect(),
        args: vec!["prog".into(), "--flag".into()],
        debug: hostcall_runtime::debug_from_env(),
        timeout: None,
        stop: None,
    };
    (cfg, stdout, stderr)
}

/// A runtime with `module` loaded under the name "test".
pub fn rig(root: &Path, queue: QueueConfig, module: EmuModule) -> Rig {
    let (cfg, stdout, stderr) = config(root, queue);
    let mut rt = Runtime::new(EmuBackend::with_module("test", module), cfg).expect("runtime");
    rt.load("test").expect("load");
    Rig { rt, stdout, stderr }
}

/// Run `kernel` on `threads` device threads with every built-in declared.
pub fn run_kernel(
    root: &Path,
    threads: u32,
    kernel: impl Fn(&DeviceCtx) + Send + Sync + 'static,
) -> (Result<RunReport, RuntimeError>, Rig) {
    let module = EmuModule::new().builtin_hostcalls().entry("main", kernel);
    let mut r = rig(root, QueueConfig::DEFAULT, module);
    let report = r.rt.launch("main", 1, threads);
    (report, r)
}

/// As `run_kernel`, and the run must succeed.
pub fn run_ok(root: &Path, kernel: impl Fn(&DeviceCtx) + Send + Sync + 'static) -> (RunReport, Rig) {
    let (r, rig) = run_kernel(root, 1, kernel);
    match r {
        Ok(report) => (report, rig),
        Err(e) => panic!("run failed: {e}"),
    }
}

/// Linux's `open`/`*at` flag values, as the device libc passes them.
pub mod flags {
    pub const AT_FDCWD: i32 = -100;
    pub const AT_REMOVEDIR: i32 = 0x200;
    pub const AT_SYMLINK_NOFOLLOW: i32 = 0x100;
    pub const O_RDONLY: i32 = 0;
    pub const O_WRONLY: i32 = 1;
    pub const O_RDWR: i32 = 2;
    pub const O_CREAT: i32 = 0o100;
    pub const O_TRUNC: i32 = 0o1000;
    pub const O_DIRECTORY: i32 = 0o200000;
    pub const O_TMPFILE: i32 = 0o20000000 | O_DIRECTORY;
}

/// A temporary directory holding the sandbox root `root/` and, beside it,
/// `secret` (`outside`): what escape tests try to reach.
pub fn root_beside_secret() -> (tempfile::TempDir, PathBuf) {
    let base = tempfile::tempdir().expect("tempdir");
    let root = base.path().join("root");
    std::fs::create_dir(&root).expect("create the root");
    std::fs::write(base.path().join("secret"), b"outside").expect("write the secret");
    (base, root)
}

/// splitmix64: a cheap, well-mixed value per (thread, call).
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
