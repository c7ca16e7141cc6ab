//! `errno`: one `int` per GPU thread, and the one helper that turns the
//! `Result`s used inside this library into C's `-1` + `errno`.
//!
//! nvptx has no thread-local storage, so each thread's `errno` is an entry of
//! a global table indexed by its global thread id. Grids larger than the
//! table share entries modulo its size (threads that far apart are rarely
//! resident together).

use core::ffi::c_int;
use core::sync::atomic::AtomicI32;

pub use hostcall_abi::Errno;

use crate::arch;

/// Threads with a private `errno` (4 MiB of device memory).
pub const MAX_THREADS: usize = hostcall_abi::limits::MAX_SLOTS as usize;

static ERRNO: [AtomicI32; MAX_THREADS] = [const { AtomicI32::new(0) }; MAX_THREADS];

/// This thread's slot in the per-thread tables.
pub fn thread_index() -> usize {
    (arch::global_thread_id() % MAX_THREADS as u64) as usize
}

/// Where this thread's `errno` lives.
#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn __errno_location() -> *mut c_int {
    ERRNO.get(thread_index()).map_or(core::ptr::null_mut(), AtomicI32::as_ptr)
}

pub fn set_errno(e: Errno) {
    if let Some(slot) = ERRNO.get(thread_index()) {
        slot.store(e.0 as i32, core::sync::atomic::Ordering::Relaxed);
    }
}

/// What a C function returns when it fails.
pub trait CFailure: Sized {
    const FAILURE: Self;
}

impl CFailure for c_int {
    const FAILURE: Self = -1;
}
impl CFailure for i64 {
    const FAILURE: Self = -1;
}
impl CFailure for isize {
    const FAILURE: Self = -1;
}
impl<T> CFailure for *mut T {
    const FAILURE: Self = core::ptr::null_mut();
}
impl<T> CFailure for *const T {
    const FAILURE: Self = core::ptr::null();
}

/// The C edge (relibc's `or_minus_one_errno`): `Ok(v)` is `v`, `Err(e)` sets
/// `errno` and returns the failure value (`-1`, or null for pointers).
pub fn c_ret<T: CFailure>(r: Result<T, Errno>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            set_errno(e);
            T::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_passes_through_and_err_sets_errno() {
        assert_eq!(c_ret::<c_int>(Ok(7)), 7);
        assert_eq!(c_ret::<c_int>(Err(Errno::ENOENT)), -1);
        // SAFETY: the location is this thread's live table entry.
        assert_eq!(unsafe { *__errno_location() }, 2);
        assert!(c_ret::<*mut u8>(Err(Errno::ENOMEM)).is_null());
        // SAFETY: as above.
        assert_eq!(unsafe { *__errno_location() }, 12);
    }
}
