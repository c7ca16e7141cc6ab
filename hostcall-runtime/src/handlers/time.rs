//! Clocks the device cannot read itself, and randomness.

use hostcall_abi::op::{ClockGettime, Getrandom};
use hostcall_abi::Errno;

use super::HostState;
use crate::error::{Duplicate, HandlerResult, HostError};
use crate::registry::{Registry, ReplyCx};

pub fn register(r: &mut Registry<HostState>) -> Result<(), Duplicate> {
    // Neither touches state: any ring's server may run them.
    r.register_concurrent::<ClockGettime, _>(clock_gettime)?;
    r.register_concurrent::<Getrandom, _>(getrandom)?;
    Ok(())
}

/// Linux clock ids the host serves (same values on every Linux target).
const SERVED_CLOCKS: [i32; 4] = [
    0, // CLOCK_REALTIME
    1, // CLOCK_MONOTONIC
    4, // CLOCK_MONOTONIC_RAW
    7, // CLOCK_BOOTTIME
];

/// -> nanoseconds of `clock` (REALTIME: since the epoch).
fn clock_gettime(_: &mut ReplyCx<'_>, req: ClockGettime, _: &[u8]) -> HandlerResult {
    if !SERVED_CLOCKS.contains(&req.clock) {
        return Err(HostError(Errno::EINVAL));
    }
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is writable; the clock id was checked above.
    if unsafe { libc::clock_gettime(req.clock as libc::clockid_t, &mut ts) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let ns = (ts.tv_sec as i128) * 1_000_000_000 + ts.tv_nsec as i128;
    u64::try_from(ns).map_err(|_| HostError(Errno::EOVERFLOW))
}

/// -> bytes, reply data = `min(len, reply_data_size)` random bytes.
fn getrandom(cx: &mut ReplyCx<'_>, req: Getrandom, _: &[u8]) -> HandlerResult {
    let buf = cx.reply_buf(req.len as usize);
    getrandom::fill(buf).map_err(|_| HostError(Errno::EIO))?;
    Ok(buf.len() as u64)
}
