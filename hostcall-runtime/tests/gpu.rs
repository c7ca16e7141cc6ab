//! On a real GPU: the `echo_stress` kernel (a no_std PTX kernel built
//! elsewhere) makes many echo hostcalls from many warps, checks each reply
//! on the device and counts mismatches into its `FAILURES` global.
//!
//! Skips, with the reason printed, when there is no CUDA driver or
//! `HOSTCALL_TEST_PTX` (path of the PTX file) is unset. Optional:
//! `HOSTCALL_TEST_GRID`, `HOSTCALL_TEST_BLOCK`, `HOSTCALL_TEST_CALLS` (calls
//! per thread the kernel makes; the expected total is grid * block * calls).

#![cfg(feature = "cuda")]

use hostcall_runtime::backend::cuda::CudaBackend;
use hostcall_runtime::{Runtime, RuntimeConfig};

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn gpu_echo_stress() {
    let backend = match CudaBackend::new(0) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skipping: no CUDA driver: {e}");
            return;
        }
    };
    let Some(path) = std::env::var_os("HOSTCALL_TEST_PTX") else {
        eprintln!("skipping: HOSTCALL_TEST_PTX is not set (path of the echo_stress PTX)");
        return;
    };
    let ptx = std::fs::read_to_string(&path).expect("read HOSTCALL_TEST_PTX");
    let (grid, block, calls) = (env_u32("HOSTCALL_TEST_GRID", 132), env_u32("HOSTCALL_TEST_BLOCK", 256), env_u32("HOSTCALL_TEST_CALLS", 100));
    eprintln!("device: {}", backend.device_name());
    let mut rt = Runtime::new(backend, RuntimeConfig { args: vec!["echo_stress".into()], ..RuntimeConfig::default() }).expect("runtime");
    rt.load(&ptx).expect("load PTX");
    rt.check_handlers().expect("every declared hostcall has a handler");
    let report = rt.launch("echo_stress", grid, block).expect("run");
    let failures = rt.read_global_u64("FAILURES").expect("FAILURES global");
    eprintln!("{report:?}");
    let expected = u64::from(grid) * u64::from(block) * u64::from(calls);
    eprintln!("{} calls in {:?} ({:.0} calls/s)", report.calls, report.elapsed, report.calls as f64 / report.elapsed.as_secs_f64());
    assert_eq!(failures, 0, "device-side mismatches");
    assert_eq!(report.per_op.get("echo").copied().unwrap_or(0), expected);
}

#[test]
fn no_driver_is_an_error_not_a_panic() {
    // With a driver this opens the device; without one it must be the
    // documented error. Either way: no panic.
    match CudaBackend::new(0) {
        Ok(_) => eprintln!("CUDA driver present"),
        Err(e) => assert!(
            e.to_string().starts_with("no CUDA driver found (libcuda.so)") || e.to_string().starts_with("cuda:"),
            "{e}"
        ),
    }
}
