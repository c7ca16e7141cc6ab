//! On a real GPU: the `echo_stress` kernels (`kernels/echo_stress`, a
//! `no_std` PTX kernel) make echo hostcalls from many warps and check every
//! reply on the device, counting into `ECHO_OK` / `ECHO_FAILURES`.
//!
//! Skips, with the reason printed, when there is no CUDA driver or
//! `HOSTCALL_TEST_PTX` (path of the PTX, from
//! `hostcall-build ptx kernels/echo_stress --keep ECHO_OK ...`; see
//! `.ci/gpu`) is unset. `HOSTCALL_TEST_GRID` / `HOSTCALL_TEST_BLOCK` size the
//! stress grid. The CPU-emulation twin of this test is `stress_emu.rs`.

#![cfg(feature = "cuda")]

use hostcall_runtime::backend::cuda::CudaBackend;
use hostcall_runtime::{Runtime, RuntimeConfig};

/// Must match `kernels/echo_stress`.
const CALLS_PER_THREAD: u64 = 100;
const LATENCY_SAMPLES: u64 = 2000;

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A runtime with the echo kernels loaded, or the reason to skip.
fn setup() -> Result<Runtime, String> {
    let backend = CudaBackend::new(0).map_err(|e| format!("no CUDA driver: {e}"))?;
    let path =
        std::env::var_os("HOSTCALL_TEST_PTX").ok_or("HOSTCALL_TEST_PTX is not set (path of the echo_stress PTX)")?;
    let ptx = std::fs::read_to_string(&path).map_err(|e| format!("HOSTCALL_TEST_PTX: {e}"))?;
    eprintln!("device: {}", backend.device_name());
    let mut rt = Runtime::new(backend, RuntimeConfig::default()).map_err(|e| e.to_string())?;
    rt.load(&ptx).map_err(|e| format!("load: {e}"))?;
    Ok(rt)
}

#[test]
fn gpu_echo_stress() {
    let mut rt = match setup() {
        Ok(rt) => rt,
        Err(why) => return eprintln!("skipping gpu_echo_stress: {why}"),
    };
    let (grid, block) = (env_u32("HOSTCALL_TEST_GRID", 132), env_u32("HOSTCALL_TEST_BLOCK", 256));
    rt.check_handlers().expect("every declared hostcall has a handler");
    let report = rt.launch("echo_stress", grid, block).expect("run");
    let ok = rt.read_global_u64("ECHO_OK").expect("ECHO_OK");
    let failures = rt.read_global_u64("ECHO_FAILURES").expect("ECHO_FAILURES");
    let expected = u64::from(grid) * u64::from(block) * CALLS_PER_THREAD;
    eprintln!(
        "echo_stress<<<{grid}, {block}>>>: {} calls in {:?} ({:.0} calls/s), {ok} checked ok on the device",
        report.calls,
        report.elapsed,
        report.calls as f64 / report.elapsed.as_secs_f64()
    );
    assert_eq!(failures, 0, "device-side mismatches");
    assert_eq!(ok, expected, "replies checked on the device");
    assert_eq!(report.per_op.get("echo").copied().unwrap_or(0), expected, "calls served");
}

#[test]
fn gpu_null_call_latency() {
    let mut rt = match setup() {
        Ok(rt) => rt,
        Err(why) => return eprintln!("skipping gpu_null_call_latency: {why}"),
    };
    let report = rt.launch("echo_latency", 1, 1).expect("run");
    let ok = rt.read_global_u64("ECHO_OK").expect("ECHO_OK");
    let median = rt.read_global_u64("ECHO_MEDIAN_NS").expect("ECHO_MEDIAN_NS");
    let mean = rt.read_global_u64("ECHO_MEAN_NS").expect("ECHO_MEAN_NS");
    eprintln!(
        "null hostcall round trip, one GPU thread, {LATENCY_SAMPLES} calls: median {:.2} us, mean {:.2} us (%globaltimer)",
        median as f64 / 1e3,
        mean as f64 / 1e3
    );
    assert_eq!(rt.read_global_u64("ECHO_FAILURES").expect("ECHO_FAILURES"), 0);
    assert_eq!(ok, LATENCY_SAMPLES);
    assert_eq!(report.calls, LATENCY_SAMPLES);
    assert!(median > 0 && median <= mean * 10, "median {median} ns, mean {mean} ns");
}

#[test]
fn no_driver_is_an_error_not_a_panic() {
    // With a driver this opens the device; without one it must be the
    // documented error. Either way: no panic.
    match CudaBackend::new(0) {
        Ok(_) => eprintln!("CUDA driver present"),
        Err(e) => assert!(e.to_string().starts_with("no CUDA driver found (libcuda.so)"), "{e}"),
    }
}
