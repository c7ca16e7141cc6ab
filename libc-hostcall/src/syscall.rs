//! `syscall(2)`, for the calls std makes by number: `futex` (device atomics
//! and `nanosleep`, no hostcall), `statx` and `getrandom` (hostcalls),
//! `gettid`. Anything else is -1/ENOSYS and reported to the host.
//!
//! Arguments are read with the types std passes them (C variadic arguments
//! keep their own size on nvptx), never as six `long`s.

use core::ffi::{c_char, c_int, c_long, c_void, VaList};
use core::sync::atomic::{AtomicU32, Ordering};

use hostcall_abi::op::Getrandom;
use hostcall_abi::Errno;

use crate::errno::c_ret;
use crate::hostcall::{self, ids, reply_capacity, request};
use crate::linux::{
    Timespec, FUTEX_CLOCK_REALTIME, FUTEX_PRIVATE_FLAG, FUTEX_WAIT, FUTEX_WAIT_BITSET, FUTEX_WAKE, FUTEX_WAKE_BITSET,
    SYS_FUTEX, SYS_GETRANDOM, SYS_GETTID, SYS_STATX,
};
use crate::{arch, sys_stat, time};

/// How long one `FUTEX_WAIT` polls before returning as a spurious wake-up
/// (callers re-check and wait again).
const FUTEX_POLL_NS: u64 = 1_000_000;

/// `FUTEX_WAIT`: while `*word == expected`, poll with growing sleeps until
/// the value changes (a wake), the deadline passes (ETIMEDOUT) or the poll
/// period ends (a spurious wake-up, which futex callers must handle anyway).
pub fn futex_wait(word: &AtomicU32, expected: u32, deadline: Option<u64>) -> Result<c_long, Errno> {
    let start = arch::global_timer_ns();
    let mut round = 0u32;
    loop {
        if word.load(Ordering::Acquire) != expected {
            return if round == 0 { Err(Errno::EAGAIN) } else { Ok(0) };
        }
        let now = arch::global_timer_ns();
        if deadline.is_some_and(|d| now >= d) {
            return Err(Errno::ETIMEDOUT);
        }
        if now.saturating_sub(start) >= FUTEX_POLL_NS {
            return Ok(0);
        }
        // Short sleeps only (64 ns to 2 us): the waiters of a lock are often
        // in the same warp as its holder, and a long sleep on one path of a
        // diverged warp may hold up the other path. (Printing from 132 x 256
        // threads took the same time on the H100 with 65 us sleeps.)
        arch::nanosleep(64u32 << round.min(5));
        round = round.saturating_add(1);
    }
}

/// # Safety
/// `args` holds the arguments of `futex(2)` for this `op`, as std passes
/// them.
unsafe fn futex(args: &mut VaList<'_>) -> Result<c_long, Errno> {
    // SAFETY: the caller's contract, argument by argument.
    let (word, op) = unsafe { (args.next_arg::<*const AtomicU32>(), args.next_arg::<c_int>()) };
    match op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME) {
        cmd @ (FUTEX_WAIT | FUTEX_WAIT_BITSET) => {
            // SAFETY: as above.
            let (expected, timeout) = unsafe { (args.next_arg::<u32>(), args.next_arg::<*const Timespec>()) };
            // SAFETY: C contract: the futex word is a live, aligned u32.
            let word = unsafe { word.as_ref() }.ok_or(Errno::EFAULT)?;
            // SAFETY: C contract: null or a readable timespec.
            let deadline = match unsafe { timeout.as_ref() } {
                None => None,
                Some(t) => {
                    let ns = t.to_ns().ok_or(Errno::EINVAL)?;
                    if op & FUTEX_CLOCK_REALTIME != 0 {
                        // An absolute wall-clock deadline, as a monotonic one.
                        let now_real = time::clock_ns(crate::linux::CLOCK_REALTIME)?;
                        Some(arch::global_timer_ns().saturating_add(ns.saturating_sub(now_real)))
                    } else if cmd == FUTEX_WAIT_BITSET {
                        Some(ns)
                    } else {
                        Some(arch::global_timer_ns().saturating_add(ns))
                    }
                }
            };
            futex_wait(word, expected, deadline)
        }
        // Waiters poll the word, so there is nobody to wake and nobody was
        // woken: std treats 0 as "no waiter woken", which is only slower.
        FUTEX_WAKE | FUTEX_WAKE_BITSET => Ok(0),
        _ => Err(hostcall::unsupported("futex op")),
    }
}

/// `getrandom`: up to one reply's worth of bytes per call (a short count,
/// which callers loop on).
pub fn getrandom_into(buf: &mut [u8], flags: u32) -> Result<usize, Errno> {
    let n = buf.len().min(reply_capacity()).min(u32::MAX as usize);
    let out = buf.get_mut(..n).unwrap_or(&mut []);
    let done = request(&ids::__HOSTCALL__getrandom, &Getrandom { len: n as u32, flags }, &[], None, out)?;
    Ok((done.value as usize).min(done.data_len))
}

/// # Safety
/// `buf` points to `len` writable bytes.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn getrandom(buf: *mut c_void, len: usize, flags: u32) -> isize {
    if len == 0 {
        return 0;
    }
    if buf.is_null() {
        return c_ret(Err(Errno::EFAULT));
    }
    // SAFETY: C contract; the bytes are only written.
    let out = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    c_ret(getrandom_into(out, flags).map(|n| n as isize))
}

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn gettid() -> c_int {
    (arch::global_thread_id() as c_int).wrapping_add(1)
}

/// # Safety
/// `args` holds the arguments of system call `num` with the types its C
/// prototype gives them.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn syscall(num: c_long, mut args: ...) -> c_long {
    let r = match num {
        // SAFETY: C contract.
        SYS_FUTEX => unsafe { futex(&mut args) },
        SYS_STATX => {
            // SAFETY: C contract: statx(int, const char *, int, unsigned, struct statx *).
            let r = unsafe {
                let (fd, path, flags) =
                    (args.next_arg::<c_int>(), args.next_arg::<*const c_char>(), args.next_arg::<c_int>());
                let (mask, buf) = (args.next_arg::<u32>(), args.next_arg::<*mut u8>());
                sys_stat::statx(fd, path, flags, mask, buf)
            };
            return c_long::from(r);
        }
        SYS_GETRANDOM => {
            // SAFETY: C contract: getrandom(void *, size_t, unsigned).
            let r = unsafe {
                let (buf, len, flags) =
                    (args.next_arg::<*mut c_void>(), args.next_arg::<usize>(), args.next_arg::<u32>());
                getrandom(buf, len, flags)
            };
            return r as c_long;
        }
        SYS_GETTID => Ok(c_long::from(gettid())),
        _ => Err(hostcall::unsupported("syscall")),
    };
    c_ret(r)
}
