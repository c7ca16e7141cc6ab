//! The echo protocol test, one body on two backends.
//!
//! `kernels/echo_stress` (a `no_std` PTX kernel) makes echo hostcalls from
//! many warps and checks every reply on the device, counting into `ECHO_OK` /
//! `ECHO_FAILURES`; `echo_latency` times null calls on `%globaltimer`. The
//! CPU-emulation twin below runs the same per-call scheme (arguments,
//! payload sizes and bytes) on OS threads, and both runs go through the same
//! launch-and-check body.
//!
//! The GPU tests skip, with the reason printed, when there is no CUDA driver
//! or `HOSTCALL_TEST_PTX` (path of the PTX from
//! `hostcall-build ptx kernels/echo_stress --keep ECHO_OK --keep ECHO_FAILURES
//! --keep ECHO_MEDIAN_NS --keep ECHO_MEAN_NS`) is unset.
//! `HOSTCALL_TEST_GRID` / `HOSTCALL_TEST_BLOCK` size the GPU grid.
//!
//! `*_on_every_device`: the same on every device at once
//! (`hostcall_runtime::devices`), each device checked as if alone; the GPU
//! one skips on a machine of fewer than two GPUs.

mod common;

use std::sync::atomic::Ordering::Relaxed;

use hostcall_runtime::backend::emu::{EmuModule, EmuPlatform};
use hostcall_runtime::devices::Devices;
use hostcall_runtime::hostcall_abi::op::echo_stress::{call, fill, CALLS_PER_THREAD, LATENCY_SAMPLES, MAX_PAYLOAD};
use hostcall_runtime::hostcall_abi::op::{Echo, Request};
use hostcall_runtime::hostcall_abi::Call;
use hostcall_runtime::QueueConfig;
use hostcall_runtime::{RunReport, Runtime};

/// Launch `echo_stress` on `grid` x `block` threads and check the run: every
/// call served once, every reply checked right on the device side.
fn echo_stress_body(rt: &mut Runtime, grid: u32, block: u32) -> f64 {
    rt.check_handlers().expect("every declared hostcall has a handler");
    zero_counts(rt);
    let report = rt.launch("echo_stress", grid, block).expect("run");
    echo_stress_check(rt, &report, grid, block, "");
    report.calls as f64 / report.elapsed.as_secs_f64()
}

/// The same launch on every device at once, each checked as if alone; the
/// calls per second of all of them together (host time).
fn echo_stress_devices_body(devices: &mut Devices, grid: u32, block: u32) -> f64 {
    devices.runtimes_mut().iter_mut().for_each(zero_counts);
    let started = std::time::Instant::now();
    let report = devices.launch("echo_stress", grid, block);
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(report.exit_code(), 0);
    let mut calls = 0;
    for (d, (outcome, rt)) in report.devices.iter().zip(devices.runtimes_mut()).enumerate() {
        let report = outcome.as_ref().unwrap_or_else(|e| panic!("device {d}: {e}"));
        echo_stress_check(rt, report, grid, block, &format!("device {d}: "));
        calls += report.calls;
    }
    let rate = calls as f64 / wall;
    eprintln!("{} devices at once: {calls} calls in {wall:.3} s ({rate:.0} calls/s in all)", devices.len());
    rate
}

/// The device's counts start at 0 (a module's globals outlive a launch).
fn zero_counts(rt: &mut Runtime) {
    for name in ["ECHO_OK", "ECHO_FAILURES"] {
        rt.backend_mut().write_global_u64(name, 0).expect(name);
    }
}

/// Check one launch of `echo_stress`: every call served once, every reply
/// checked right on the device side.
fn echo_stress_check(rt: &mut Runtime, report: &RunReport, grid: u32, block: u32, device: &str) {
    let ok = rt.read_global_u64("ECHO_OK").expect("ECHO_OK");
    let failures = rt.read_global_u64("ECHO_FAILURES").expect("ECHO_FAILURES");
    let expected = u64::from(grid) * u64::from(block) * CALLS_PER_THREAD;
    eprintln!(
        "{device}echo_stress<<<{grid}, {block}>>>: {} calls in {:?} ({:.0} calls/s, {:.1} lanes per record, server idle \
         {:.0}%), {ok} checked ok by the callers",
        report.calls,
        report.elapsed,
        report.calls as f64 / report.elapsed.as_secs_f64(),
        report.calls as f64 / report.records.max(1) as f64,
        100.0 * report.server_idle.as_secs_f64() / report.elapsed.as_secs_f64()
    );
    assert_eq!(failures, 0, "replies that did not match their call");
    assert_eq!(ok, expected, "replies checked");
    assert_eq!(report.per_op.get("echo").copied().unwrap_or(0), expected, "calls served");
    assert_eq!(report.calls, expected, "no call served twice");
    assert_eq!(report.errors, 0);
}

/// The emulation twin of `kernels/echo_stress`.
fn emu_echo_module() -> EmuModule {
    EmuModule::new().hostcall(Echo::NAME).global("ECHO_OK").global("ECHO_FAILURES").entry("echo_stress", |ctx| {
        let ok = ctx.global("ECHO_OK").expect("ECHO_OK");
        let failures = ctx.global("ECHO_FAILURES").expect("ECHO_FAILURES");
        let op = ctx.hostcall_id(Echo::NAME);
        let q = ctx.queue().expect("queue configured");
        let tid = u64::from(ctx.thread_id);
        let (mut payload, mut reply) = ([0u8; MAX_PAYLOAD], [0u8; MAX_PAYLOAD]);
        for i in 0..CALLS_PER_THREAD {
            let (a, b, len) = call(tid, i);
            let sent = &mut payload[..len];
            fill(sent, a ^ b);
            let request = Call::new(op, Echo { a, b }.to_args()).payload(sent);
            let good = match q.call::<EmuPlatform>(&request, &mut reply) {
                Ok(c) => c.errno == 0 && c.value == a ^ b && c.data_len == len && reply[..len] == *sent,
                Err(_) => false,
            };
            if good { ok } else { failures }.fetch_add(1, Relaxed);
        }
    })
}

#[test]
fn emu_echo_stress() {
    let dir = tempfile::tempdir().unwrap();
    // The smallest ring, so it wraps constantly.
    let queue =
        QueueConfig { buff_size: hostcall_runtime::hostcall_abi::limits::MIN_BUFF_SIZE, ..QueueConfig::DEFAULT };
    let mut rig = common::rig(dir.path(), queue, emu_echo_module());
    echo_stress_body(&mut rig.rt, 4, 16);
}

#[test]
fn emu_echo_stress_on_every_device() {
    let dir = tempfile::tempdir().unwrap();
    let queue =
        QueueConfig { buff_size: hostcall_runtime::hostcall_abi::limits::MIN_BUFF_SIZE, ..QueueConfig::DEFAULT };
    let (cfg, _, _) = common::config(dir.path(), queue);
    let backends = (0..4).map(|_| hostcall_runtime::backend::emu::EmuBackend::with_module("test", emu_echo_module()));
    let mut devices = Devices::new(backends, cfg).expect("runtimes");
    devices.load(b"test").expect("loaded");
    // Twice, as the GPU twin runs it (a warm-up, then the measured run).
    echo_stress_devices_body(&mut devices, 4, 16);
    echo_stress_devices_body(&mut devices, 4, 16);
}

#[cfg(feature = "cuda")]
mod gpu {
    use super::*;
    use hostcall_runtime::backend::cuda::CudaBackend;
    use hostcall_runtime::RuntimeConfig;

    fn env_u32(name: &str, default: u32) -> u32 {
        std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
    }

    /// The echo kernels' PTX and the cubin `hostcall-build` leaves beside
    /// it when there is one, or the reason to skip.
    fn image() -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
        let path = std::env::var_os("HOSTCALL_TEST_PTX")
            .ok_or("HOSTCALL_TEST_PTX is not set (path of the echo_stress PTX)")?;
        let ptx = std::fs::read(&path).map_err(|e| format!("HOSTCALL_TEST_PTX: {e}"))?;
        let cubin = std::fs::read(std::path::Path::new(&path).with_extension("sm_90.cubin")).ok();
        Ok((ptx, cubin))
    }

    /// A runtime with the echo kernels loaded ([`image`]), or the reason to
    /// skip.
    fn setup() -> Result<Runtime, String> {
        let backend = CudaBackend::new(0).map_err(|e| format!("no CUDA driver: {e}"))?;
        let (ptx, cubin) = image()?;
        eprintln!("device: {}", backend.device_name());
        let mut rt = Runtime::new(backend, RuntimeConfig::default()).map_err(|e| e.to_string())?;
        rt.load_best(&ptx, cubin.as_deref()).map_err(|e| format!("load: {e}"))?;
        Ok(rt)
    }

    #[test]
    fn gpu_echo_stress() {
        let mut rt = match setup() {
            Ok(rt) => rt,
            Err(why) => return eprintln!("skipping gpu_echo_stress: {why}"),
        };
        echo_stress_body(&mut rt, env_u32("HOSTCALL_TEST_GRID", 132), env_u32("HOSTCALL_TEST_BLOCK", 256));
    }

    /// Every lane of a full H200 (132 SMs x 2048 threads = 8448 warps) calls
    /// at once, with mixed payload sizes, lanes sitting out and lanes making
    /// another call in the same warp; every reply is checked on the device.
    #[test]
    fn gpu_echo_divergent_full_grid() {
        use hostcall_runtime::hostcall_abi::op::echo_stress::CALLS_PER_THREAD;
        let mut rt = match setup() {
            Ok(rt) => rt,
            Err(why) => return eprintln!("skipping gpu_echo_divergent_full_grid: {why}"),
        };
        let (grid, block) = (env_u32("HOSTCALL_TEST_FULL_GRID", 264), 1024);
        let t = std::time::Instant::now();
        let report = rt.launch("echo_divergent", grid, block).expect("run");
        let secs = t.elapsed().as_secs_f64();
        let threads = u64::from(grid * block);
        let calls =
            (0..threads).flat_map(|tid| (0..CALLS_PER_THREAD).map(move |i| (tid + i) % 4)).filter(|r| *r != 0).count();
        let ok = rt.read_global_u64("ECHO_OK").expect("ECHO_OK");
        let failures = rt.read_global_u64("ECHO_FAILURES").expect("ECHO_FAILURES");
        eprintln!(
            "{threads} threads, {} calls ({:.1} M/s, divergent warps, mixed ops): {ok} checked, {failures} wrong",
            report.calls,
            report.calls as f64 / secs / 1e6
        );
        assert_eq!(failures, 0);
        assert_eq!(ok, calls as u64);
        assert_eq!(report.calls, calls as u64, "every call served exactly once");
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
        assert_eq!(ok, LATENCY_SAMPLES as u64);
        assert_eq!(report.calls, LATENCY_SAMPLES as u64);
        assert!(median > 0 && median <= mean * 10, "median {median} ns, mean {mean} ns");
    }

    /// `echo_stress` on every GPU of the machine at once, each checked, and
    /// the total rate beside one GPU's alone (printed with issue 15's goal,
    /// at least 0.9 x n of one GPU's: a measurement, not asserted here).
    #[test]
    fn gpu_echo_stress_on_every_device() {
        let n = match CudaBackend::device_count() {
            Ok(n) if n >= 2 => n,
            Ok(n) => return eprintln!("skipping gpu_echo_stress_on_every_device: {n} GPU(s), it needs 2"),
            Err(e) => return eprintln!("skipping gpu_echo_stress_on_every_device: no CUDA driver: {e}"),
        };
        let (grid, block) = (env_u32("HOSTCALL_TEST_GRID", 132), env_u32("HOSTCALL_TEST_BLOCK", 256));
        let mut alone = match setup() {
            Ok(rt) => rt,
            Err(why) => return eprintln!("skipping gpu_echo_stress_on_every_device: {why}"),
        };
        echo_stress_body(&mut alone, grid, block); // warm-up
        let one = echo_stress_body(&mut alone, grid, block);
        drop(alone);
        let (ptx, cubin) = image().expect("read by setup() above");
        let backends: Vec<CudaBackend> = (0..n).map(|d| CudaBackend::new(d).expect("a device counted")).collect();
        let mut devices = Devices::new(backends, RuntimeConfig::default()).expect("runtimes");
        devices.load_best(&ptx, cubin.as_deref()).expect("loaded on every device");
        echo_stress_devices_body(&mut devices, grid, block); // warm-up
        let all = echo_stress_devices_body(&mut devices, grid, block);
        let ratio = all / one;
        eprintln!(
            "{n} GPUs at once: {all:.0} calls/s, one alone {one:.0}: {ratio:.2}x ({} the goal of {:.1}x)",
            if ratio >= 0.9 * n as f64 { "meets" } else { "MISSES" },
            0.9 * n as f64
        );
    }

    /// The several-device path (`Devices` over CUDA backends: loading in
    /// turn, launching and serving at once) on a machine of one GPU: two
    /// runtimes on device 0, each with its own module (its own queue
    /// globals), their kernels running side by side, each checked.
    #[test]
    fn gpu_two_runtimes_on_one_device() {
        let backends: Vec<CudaBackend> = match (0..2).map(|_| CudaBackend::new(0)).collect() {
            Ok(b) => b,
            Err(e) => return eprintln!("skipping gpu_two_runtimes_on_one_device: no CUDA driver: {e}"),
        };
        let (ptx, cubin) = match image() {
            Ok(image) => image,
            Err(why) => return eprintln!("skipping gpu_two_runtimes_on_one_device: {why}"),
        };
        let mut devices = Devices::new(backends, RuntimeConfig::default()).expect("runtimes");
        devices.load_best(&ptx, cubin.as_deref()).expect("loaded twice");
        // Half a full grid each, so that both kernels are resident at once.
        echo_stress_devices_body(&mut devices, 66, 256);
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
}
