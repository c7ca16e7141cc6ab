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
