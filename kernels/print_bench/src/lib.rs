//! Where does a contended `println!` spend its time? One entry per suspect,
//! each run with every thread doing it once. `.ci/gpu` runs them on
//! 132 x 256 threads and prints each time against `bench_raw_write`'s, the
//! bare hostcall, measured in the same run.
#![feature(abi_ptx, stdarch_nvptx)]
use std::io::Write;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::sync::Mutex;

fn gid() -> u32 {
    use core::arch::nvptx::{_block_dim_x, _block_idx_x, _thread_idx_x};
    // SAFETY: reads of special registers.
    unsafe { (_block_idx_x() * _block_dim_x() + _thread_idx_x()) as u32 }
}

/// fd 1 as a `File` that is never closed.
fn raw_stdout() -> ManuallyDrop<std::fs::File> {
    // SAFETY: fd 1 is open for the whole launch, and ManuallyDrop never
    // closes it.
    ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) })
}

static COUNT: Mutex<u64> = Mutex::new(0);

/// println!, as the demo does.
#[no_mangle]
pub extern "ptx-kernel" fn bench_println() {
    println!("hello from thread {}", gid());
}

/// One write hostcall per thread, no lock.
#[no_mangle]
pub extern "ptx-kernel" fn bench_raw_write() {
    let line = format!("hello from thread {}\n", gid());
    let _ = raw_stdout().write_all(line.as_bytes());
}

/// A std Mutex taken by every thread, no hostcall inside.
#[no_mangle]
pub extern "ptx-kernel" fn bench_lock() {
    *COUNT.lock().unwrap() += 1;
}

/// The Mutex with one write hostcall inside: println! without std's stdout.
#[no_mangle]
pub extern "ptx-kernel" fn bench_lock_write() {
    let line = format!("hello from thread {}\n", gid());
    let _guard = COUNT.lock().unwrap();
    let _ = raw_stdout().write_all(line.as_bytes());
}

/// The stdout lock alone, nothing written.
#[no_mangle]
pub extern "ptx-kernel" fn bench_stdout_lock() {
    let _lock = std::io::stdout().lock();
}

/// Thread 0 writes 10 lines under `stdout().lock()` while every other thread
/// prints one with `println!`: the 10 must come out contiguous (`.ci/gpu`
/// checks it).
#[no_mangle]
pub extern "ptx-kernel" fn bench_lock_block() {
    let id = gid();
    if id == 0 {
        let mut out = std::io::stdout().lock();
        for i in 0..10 {
            let _ = writeln!(out, "locked {i}");
        }
    } else {
        println!("hello from thread {id}");
    }
}

/// Thread 0 prints one line, then computes for 2 s: the line must reach the
/// host's stdout while the kernel still runs (`.ci/gpu` checks it).
#[no_mangle]
pub extern "ptx-kernel" fn bench_print_then_compute() {
    if gid() != 0 {
        return;
    }
    println!("early");
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(2) {
        std::hint::spin_loop();
    }
}

/// The load test (`.ci/gpu`): every thread of the grid, for
/// `HOSTCALL_LOAD_SECS` (default 60), prints a line per round and rewrites,
/// reads back and checks a file of its own, through whatever command buffer
/// the run was given (`.ci/gpu` gives the smallest). `EMFILE` (the host
/// holds at most 1024 of the device's files open) is waited out, as a
/// program on Linux would. The last thread to finish prints the totals:
/// `.ci/gpu` checks every thread's lines against them.
#[no_mangle]
pub extern "ptx-kernel" fn load_full_grid() {
    use std::sync::atomic::{AtomicU64, Ordering::AcqRel, Ordering::Relaxed};
    use std::time::{Duration, Instant};
    static LINES: AtomicU64 = AtomicU64::new(0);
    static BYTES: AtomicU64 = AtomicU64::new(0);
    static BAD: AtomicU64 = AtomicU64::new(0);
    static FINISHED: AtomicU64 = AtomicU64::new(0);
    let id = gid();
    let secs = std::env::var("HOSTCALL_LOAD_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60.0);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let path = format!("load-{id}.bin");
    let mut data = Vec::new();
    let mut round = 0u64;
    while Instant::now() < deadline {
        let h = u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ round.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        println!("load {id} {round} {h:016x}");
        // Up to 6 KiB: inline payloads and device regions both.
        data.clear();
        data.extend((0..(h >> 40) % 6144).map(|i| (h >> (i % 8 * 8)) as u8 ^ i as u8));
        let wrote = retry_emfile(|| std::fs::write(&path, &data));
        let read = retry_emfile(|| std::fs::read(&path));
        match (wrote, read) {
            (Ok(_), Ok(back)) if back == data => {
                BYTES.fetch_add(data.len() as u64, Relaxed);
            }
            _ => {
                BAD.fetch_add(1, Relaxed);
            }
        }
        round += 1;
    }
    let _ = std::fs::remove_file(&path);
    LINES.fetch_add(round, Relaxed);
    // SAFETY: reads of special registers.
    let threads = unsafe { u64::from(core::arch::nvptx::_grid_dim_x() * core::arch::nvptx::_block_dim_x()) };
    // AcqRel: the last thread sees every other thread's totals.
    if FINISHED.fetch_add(1, AcqRel) + 1 == threads {
        println!(
            "load done: {threads} threads, {} lines, {} file bytes checked, {} rounds bad",
            LINES.load(Relaxed),
            BYTES.load(Relaxed),
            BAD.load(Relaxed)
        );
    }
}

/// `op`, again after a pause for as long as it fails with `EMFILE`.
fn retry_emfile<T>(mut op: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    loop {
        match op() {
            Err(e) if e.raw_os_error() == Some(24) => std::thread::sleep(std::time::Duration::from_micros(100)),
            other => return other,
        }
    }
}
