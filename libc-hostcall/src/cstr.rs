//! C strings coming in from callers, bounded before they go on the bus.

use core::ffi::c_char;

use hostcall_abi::layout::limits::MAX_INLINE;
use hostcall_abi::Errno;

/// The bytes of the NUL-terminated `s` (without the NUL), at most
/// `MAX_INLINE`: a longer string is ENAMETOOLONG, null is EFAULT.
///
/// # Safety
/// `s` is null or points to a NUL-terminated string, or to at least
/// `MAX_INLINE + 1` readable bytes.
pub unsafe fn path<'a>(s: *const c_char) -> Result<&'a [u8], Errno> {
    if s.is_null() {
        return Err(Errno::EFAULT);
    }
    let mut n = 0;
    // SAFETY: the caller's contract; we stop at the NUL or after MAX_INLINE.
    while unsafe { *s.add(n) } != 0 {
        n += 1;
        if n > MAX_INLINE {
            return Err(Errno::ENAMETOOLONG);
        }
    }
    // SAFETY: the `n` bytes before the NUL were just read.
    Ok(unsafe { core::slice::from_raw_parts(s.cast::<u8>(), n) })
}
