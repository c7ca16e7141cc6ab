//! Protocol test kernels, `no_std`: they talk to the host only through
//! `libc_hostcall::echo` (the test op: value = `a ^ b`, payload echoed back
//! into the reply data) and report through globals the host reads after the
//! run.
//!
//! * `echo_stress`: every thread makes [`CALLS_PER_THREAD`] calls with
//!   arguments and payloads unique to (thread, call) and checks each reply.
//!   `ECHO_OK` / `ECHO_FAILURES` count checked and wrong replies.
//! * `echo_latency`: one thread makes [`LATENCY_SAMPLES`] null calls back to
//!   back, timing each on `%globaltimer`; the median and mean land in
//!   `ECHO_MEDIAN_NS` / `ECHO_MEAN_NS`.
#![no_std]
#![feature(abi_ptx)]

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use libc_hostcall::arch;

/// Calls each thread of `echo_stress` makes.
pub const CALLS_PER_THREAD: u64 = 100;
/// Null calls `echo_latency` times.
pub const LATENCY_SAMPLES: usize = 2000;

#[no_mangle]
pub static ECHO_OK: AtomicU64 = AtomicU64::new(0);
#[no_mangle]
pub static ECHO_FAILURES: AtomicU64 = AtomicU64::new(0);
#[no_mangle]
pub static ECHO_MEDIAN_NS: AtomicU64 = AtomicU64::new(0);
#[no_mangle]
pub static ECHO_MEAN_NS: AtomicU64 = AtomicU64::new(0);

/// `echo_latency`'s samples: global memory, not a 16 KB stack frame.
static SAMPLES: [AtomicU64; LATENCY_SAMPLES] = [const { AtomicU64::new(0) }; LATENCY_SAMPLES];

/// A byte pattern unique to (thread, call) so a crossed reply shows.
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for b in buf {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

#[no_mangle]
pub extern "ptx-kernel" fn echo_stress() {
    let tid = arch::global_thread_id();
    let mut payload = [0u8; 512];
    let mut reply = [0u8; 512];
    for i in 0..CALLS_PER_THREAD {
        let a = (tid << 32) | i;
        let b = tid.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i.rotate_left(17);
        // Sizes 0..=511 bytes: 1 to 9 ring lines per record.
        let len = ((tid * 31 + i * 17) % 512) as usize;
        let sent = &mut payload[..len];
        fill(sent, a ^ b);
        let ok = match libc_hostcall::echo(a, b, sent, &mut reply) {
            Ok(v) => v == a ^ b && reply[..len] == *sent,
            Err(_) => false,
        };
        if ok {
            ECHO_OK.fetch_add(1, Relaxed);
        } else {
            ECHO_FAILURES.fetch_add(1, Relaxed);
        }
    }
}

#[no_mangle]
pub extern "ptx-kernel" fn echo_latency() {
    if arch::global_thread_id() != 0 {
        return;
    }
    let mut reply = [0u8; 8];
    let mut failures = 0;
    let mut total = 0;
    for (i, s) in SAMPLES.iter().enumerate() {
        let t0 = arch::global_timer_ns();
        let ok = libc_hostcall::echo(i as u64, 1, &[], &mut reply) == Ok(i as u64 ^ 1);
        let dt = arch::global_timer_ns() - t0;
        s.store(dt, Relaxed);
        total += dt;
        failures += u64::from(!ok);
    }
    ECHO_FAILURES.fetch_add(failures, Relaxed);
    ECHO_OK.fetch_add(LATENCY_SAMPLES as u64 - failures, Relaxed);
    ECHO_MEAN_NS.store(total / LATENCY_SAMPLES as u64, Relaxed);
    // Median by counting: O(n^2) on one thread, but n is small and this
    // runs once, after the timed loop.
    let median = SAMPLES.iter().map(|s| s.load(Relaxed)).find(|&x| {
        let below = SAMPLES.iter().filter(|s| s.load(Relaxed) < x).count();
        let at_or_below = SAMPLES.iter().filter(|s| s.load(Relaxed) <= x).count();
        below <= LATENCY_SAMPLES / 2 && LATENCY_SAMPLES / 2 < at_or_below
    });
    ECHO_MEDIAN_NS.store(median.unwrap_or(0), Relaxed);
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    arch::trap()
}
