//! The watchdog and signals stop a run that would not end: serving stops,
//! the output the kernel produced before is written, and the launch says
//! why (`RuntimeError::Stopped`). `hostcalls_bin` and `hostcall run` turn
//! that into exit 124 (timeout) or 128 + the signal; `.ci/gpu` checks it on
//! the GPU.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostcall_runtime::backend::emu::{DeviceCtx, EmuBackend, EmuModule, EmuPlatform};
use hostcall_runtime::hostcall_abi::op::{Request, Write as WriteOp};
use hostcall_runtime::hostcall_abi::sync::Platform;
use hostcall_runtime::hostcall_abi::Call;
use hostcall_runtime::{QueueConfig, Runtime, RuntimeConfig, RuntimeError, StopReason};

fn post(ctx: &DeviceCtx, text: &[u8]) {
    ctx.post("write", Call::new(0, WriteOp { fd: 1 }.to_args()).payload(text)).unwrap();
}

/// A kernel that prints a line, then never ends (it spins as a GPU thread
/// does, so that the emulation can trap it once the run is given up).
fn hang(ctx: &DeviceCtx) {
    if ctx.thread_id == 0 {
        post(ctx, b"before the hang\n");
    }
    loop {
        EmuPlatform::backoff(64);
    }
}

/// A kernel that prints without end: the ring is never quiet.
fn chatter(ctx: &DeviceCtx) {
    for i in 0u64.. {
        post(ctx, format!("line {i}\n").as_bytes());
    }
}

fn launch(
    kernel: fn(&DeviceCtx),
    threads: u32,
    set: impl FnOnce(&mut RuntimeConfig),
) -> (Result<hostcall_runtime::RunReport, RuntimeError>, String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, out, _) = common::config(dir.path(), QueueConfig::DEFAULT);
    set(&mut cfg);
    let module = EmuModule::new().builtin_hostcalls().entry("main", kernel);
    let mut rt = Runtime::new(EmuBackend::with_module("test", module), cfg).unwrap();
    rt.load("test").unwrap();
    let started = Instant::now();
    let result = rt.launch("main", 1, threads);
    let took = started.elapsed();
    (result, out.to_string_lossy(), took)
}

#[test]
fn a_hung_kernel_is_stopped_by_the_timeout_and_its_output_is_kept() {
    let timeout = Duration::from_millis(300);
    let (result, out, took) = launch(hang, 8, |c| c.timeout = Some(timeout));
    match result {
        Err(RuntimeError::Stopped { reason, report }) => {
            assert_eq!(reason, StopReason::Timeout(timeout));
            assert_eq!(report.calls, 1, "the one line");
        }
        other => panic!("expected a stop, got {:?}", other.map(|r| r.calls).map_err(|e| e.to_string())),
    }
    assert_eq!(out, "before the hang\n");
    assert!(took >= timeout && took < timeout + Duration::from_secs(5), "{took:?}");
}

#[test]
fn a_busy_kernel_is_stopped_too_with_every_line_it_printed_whole() {
    let timeout = Duration::from_millis(300);
    let (result, out, took) = launch(chatter, 4, |c| c.timeout = Some(timeout));
    assert!(matches!(result, Err(RuntimeError::Stopped { reason: StopReason::Timeout(_), .. })));
    assert!(took < timeout + Duration::from_secs(5), "{took:?}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() > 100, "{} lines", lines.len());
    assert!(out.ends_with('\n') && lines.iter().all(|l| l.starts_with("line ")), "no torn line");
}

#[test]
fn a_signal_number_in_the_stop_flag_stops_the_run() {
    let stop = Arc::new(AtomicUsize::new(0));
    let flag = stop.clone();
    let signaller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        flag.store(2, Ordering::Relaxed);
    });
    let (result, out, _) = launch(hang, 2, |c| c.stop = Some(stop));
    signaller.join().unwrap();
    match result {
        Err(e @ RuntimeError::Stopped { reason: StopReason::Signal(2), .. }) => {
            assert_eq!(e.to_string(), "run stopped: interrupted (SIGINT)");
        }
        other => panic!("expected SIGINT, got {:?}", other.map(|r| r.calls).map_err(|e| e.to_string())),
    }
    assert_eq!(out, "before the hang\n");
}

#[test]
fn without_a_timeout_a_run_that_ends_is_untouched() {
    let (result, out, _) = launch(|ctx| post(ctx, b"done\n"), 4, |c| c.timeout = Some(Duration::from_secs(60)));
    assert_eq!(result.expect("ends by itself").calls, 4);
    assert_eq!(out, "done\n".repeat(4));
}
