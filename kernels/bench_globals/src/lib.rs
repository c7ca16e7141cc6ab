//! The contract between `hostcall-bench` and its kernels (`bench_std`,
//! `bench_floor`): the globals the host writes before a launch and reads
//! after it, and the allocation pattern both allocation figures use.
#![no_std]

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Iterations per thread (or per warp).
#[no_mangle]
pub static BENCH_N: AtomicU64 = AtomicU64::new(0);
/// Device address of `BENCH_N` u64 samples (ns per call or round trip).
#[no_mangle]
pub static BENCH_SAMPLES: AtomicU64 = AtomicU64::new(0);
/// Earliest start and latest end of any thread, `%globaltimer` ns.
#[no_mangle]
pub static BENCH_T0: AtomicU64 = AtomicU64::new(u64::MAX);
#[no_mangle]
pub static BENCH_T1: AtomicU64 = AtomicU64::new(0);
/// A checksum the host recomputes.
#[no_mangle]
pub static BENCH_SUM: AtomicU64 = AtomicU64::new(0);
/// What went wrong on the device (a wrong reply, an I/O error, no memory).
#[no_mangle]
pub static BENCH_FAIL: AtomicU64 = AtomicU64::new(0);

/// Record that this thread ran from `t0` to `t1`.
pub fn span(t0: u64, t1: u64) {
    BENCH_T0.fetch_min(t0, Relaxed);
    BENCH_T1.fetch_max(t1, Relaxed);
}

pub fn fail() {
    BENCH_FAIL.fetch_add(1, Relaxed);
}

/// Elements of allocation `i` of thread `tid`: 1..=256, varied
/// (`hostcall_bench::gpu::alloc_sum` is the host's copy of this rule).
pub fn elements(tid: u64, i: u64) -> usize {
    (1 + (tid * 31 + i * 17) % 256) as usize
}
