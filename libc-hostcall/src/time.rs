//! `<time.h>`: clocks and sleeping. The monotonic clocks are `%globaltimer`
//! on the device (no hostcall); the wall clock (REALTIME) asks the host.

use core::ffi::c_int;

use hostcall_abi::op::ClockGettime;
use hostcall_abi::Errno;

use crate::arch;
use crate::errno::c_ret;
use crate::hostcall::{ids, request};
use crate::linux::{
    Timespec, CLOCK_BOOTTIME, CLOCK_MONOTONIC, CLOCK_MONOTONIC_COARSE, CLOCK_MONOTONIC_RAW, CLOCK_REALTIME,
    CLOCK_REALTIME_COARSE, TIMER_ABSTIME,
};

/// Nanoseconds on `clock`.
pub fn clock_ns(clock: c_int) -> Result<u64, Errno> {
    match clock {
        CLOCK_MONOTONIC | CLOCK_MONOTONIC_RAW | CLOCK_MONOTONIC_COARSE | CLOCK_BOOTTIME => Ok(arch::global_timer_ns()),
        CLOCK_REALTIME | CLOCK_REALTIME_COARSE => {
            let req = ClockGettime { clock };
            Ok(request(&ids::__HOSTCALL__clock_gettime, &req, &[], None, &mut [])?.value)
        }
        _ => Err(Errno::EINVAL),
    }
}

/// # Safety
/// `tp` points to a writable `struct timespec`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn clock_gettime(clock: c_int, tp: *mut Timespec) -> c_int {
    // SAFETY: C contract.
    let Some(out) = (unsafe { tp.as_mut() }) else {
        return c_ret(Err(Errno::EFAULT));
    };
    c_ret(clock_ns(clock).map(|ns| {
        *out = Timespec::from_ns(ns);
        0
    }))
}

/// Sleep on the device until `%globaltimer` reaches `deadline`.
pub fn sleep_until(deadline: u64) {
    loop {
        let now = arch::global_timer_ns();
        if now >= deadline {
            return;
        }
        // `nanosleep.u32` sleeps at most about 1 ms per instruction.
        arch::nanosleep((deadline - now).min(1_000_000) as u32);
    }
}

/// # Safety
/// `req` points to a readable timespec; `rem` is null or writable.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn nanosleep(req: *const Timespec, rem: *mut Timespec) -> c_int {
    // SAFETY: C contract.
    let Some(ns) = (unsafe { req.as_ref() }).and_then(|t| t.to_ns()) else {
        return c_ret(Err(Errno::EINVAL));
    };
    sleep_until(arch::global_timer_ns().saturating_add(ns));
    // SAFETY: C contract.
    if let Some(rem) = unsafe { rem.as_mut() } {
        *rem = Timespec::default();
    }
    0
}

/// Monotonic clocks only: a REALTIME deadline would need the host each
/// round. Returns the error number, as `clock_nanosleep` does.
///
/// # Safety
/// As for `nanosleep`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn clock_nanosleep(
    clock: c_int,
    flags: c_int,
    req: *const Timespec,
    rem: *mut Timespec,
) -> c_int {
    if !matches!(clock, CLOCK_MONOTONIC | CLOCK_MONOTONIC_RAW | CLOCK_BOOTTIME) {
        return Errno::ENOTSUP.0 as c_int;
    }
    // SAFETY: C contract.
    let Some(ns) = (unsafe { req.as_ref() }).and_then(|t| t.to_ns()) else {
        return Errno::EINVAL.0 as c_int;
    };
    if flags & TIMER_ABSTIME != 0 {
        sleep_until(ns);
    } else {
        sleep_until(arch::global_timer_ns().saturating_add(ns));
    }
    // SAFETY: C contract.
    if let Some(rem) = unsafe { rem.as_mut() } {
        *rem = Timespec::default();
    }
    0
}

/// Yielding is a short sleep: it lets the other warps on the SM issue.
#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn sched_yield() -> c_int {
    arch::nanosleep(100);
    0
}
