//! Protocol test kernels, `no_std`: they talk to the host only through
//! `libc_hostcall::echo` (the test op: value = `a ^ b`, payload echoed back
//! into the reply data) and report through globals the host reads after the
//! run.
//!
//! * `echo_stress`: every thread makes [`CALLS_PER_THREAD`] calls with
//!   arguments and payloads unique to (thread, call), as
//!   `hostcall_abi::op::echo_stress` lays them out, and checks each reply.
//!   `ECHO_OK` / `ECHO_FAILURES` count checked and wrong replies.
//! * `echo_latency`: one thread makes [`LATENCY_SAMPLES`] null calls back to
//!   back, timing each on `%globaltimer`; the median and mean land in
//!   `ECHO_MEDIAN_NS` / `ECHO_MEAN_NS`.
#![no_std]
#![feature(abi_ptx)]

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hostcall_abi::op::echo_stress::{call, fill, CALLS_PER_THREAD, LATENCY_SAMPLES, MAX_PAYLOAD};
use libc_hostcall::arch;

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

#[no_mangle]
pub extern "ptx-kernel" fn echo_stress() {
    let tid = arch::global_thread_id();
    let mut payload = [0u8; MAX_PAYLOAD];
    let mut reply = [0u8; MAX_PAYLOAD];
    for i in 0..CALLS_PER_THREAD {
        let (a, b, len) = call(tid, i);
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

/// Like `echo_stress`, but the lanes of a warp diverge: in each round a
/// quarter of them sit out, a quarter make another call (`unsupported`, a
/// different op in the same warp at the same time), and the rest echo.
/// Only the echoes count in `ECHO_OK` / `ECHO_FAILURES`; the other call must
/// come back `ENOSYS`.
#[no_mangle]
pub extern "ptx-kernel" fn echo_divergent() {
    let tid = arch::global_thread_id();
    let mut payload = [0u8; MAX_PAYLOAD];
    let mut reply = [0u8; MAX_PAYLOAD];
    for i in 0..CALLS_PER_THREAD {
        let ok = match (tid + i) % 4 {
            0 => continue,
            1 => libc_hostcall::report_unsupported("echo_divergent") == libc_hostcall::Errno::ENOSYS,
            _ => {
                let (a, b, len) = call(tid, i);
                let sent = &mut payload[..len];
                fill(sent, a ^ b);
                match libc_hostcall::echo(a, b, sent, &mut reply) {
                    Ok(v) => v == a ^ b && reply[..len] == *sent,
                    Err(_) => false,
                }
            }
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
