//! `<string.h>`: `strerror_r` (XSI flavour, which std calls), `strlen`, and
//! the `mem*` functions core's codegen calls (NVPTX has no libc to take them
//! from). Plain loops: NVPTX expands `llvm.memcpy` & co. inline, so a loop
//! recognised as a copy never turns back into a call to itself.

use core::ffi::{c_char, c_int, c_void};

use hostcall_abi::Errno;

/// XSI `strerror_r`: glibc's message for `errnum` into `buf`; ERANGE (with
/// the message cut short) when it does not fit.
///
/// # Safety
/// `buf` points to `len` writable bytes.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn __xpg_strerror_r(errnum: c_int, buf: *mut c_char, len: usize) -> c_int {
    if buf.is_null() || len == 0 {
        return Errno::ERANGE.0 as c_int;
    }
    let msg = Errno(errnum as u32).message().as_bytes();
    // SAFETY: C contract.
    let out = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    let n = msg.len().min(len - 1);
    out[..n].copy_from_slice(&msg[..n]);
    out[n] = 0;
    if n < msg.len() {
        Errno::ERANGE.0 as c_int
    } else {
        0
    }
}

/// # Safety
/// `s` is a NUL-terminated string.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn strlen(s: *const c_char) -> usize {
    let mut n = 0;
    // SAFETY: C contract: readable up to the NUL.
    while unsafe { *s.add(n) } != 0 {
        n += 1;
    }
    n
}

/// # Safety
/// C contract of `memcpy(3)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut c_void, src: *const c_void, n: usize) -> *mut c_void {
    let (d, s) = (dst.cast::<u8>(), src.cast::<u8>());
    for i in 0..n {
        // SAFETY: C contract: both hold `n` bytes and do not overlap.
        unsafe { *d.add(i) = *s.add(i) };
    }
    dst
}

/// # Safety
/// C contract of `memmove(3)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut c_void, src: *const c_void, n: usize) -> *mut c_void {
    let (d, s) = (dst.cast::<u8>(), src.cast::<u8>());
    if (d as usize) < (s as usize) {
        for i in 0..n {
            // SAFETY: C contract; forward copy is safe when dst is below src.
            unsafe { *d.add(i) = *s.add(i) };
        }
    } else {
        for i in (0..n).rev() {
            // SAFETY: C contract; backward copy is safe when dst is above src.
            unsafe { *d.add(i) = *s.add(i) };
        }
    }
    dst
}

/// # Safety
/// C contract of `memset(3)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut c_void, c: c_int, n: usize) -> *mut c_void {
    let d = dst.cast::<u8>();
    for i in 0..n {
        // SAFETY: C contract: `dst` holds `n` bytes.
        unsafe { *d.add(i) = c as u8 };
    }
    dst
}

/// # Safety
/// C contract of `memcmp(3)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const c_void, b: *const c_void, n: usize) -> c_int {
    let (a, b) = (a.cast::<u8>(), b.cast::<u8>());
    for i in 0..n {
        // SAFETY: C contract: both hold `n` bytes.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return c_int::from(x) - c_int::from(y);
        }
    }
    0
}

/// # Safety
/// C contract of `bcmp(3)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const c_void, b: *const c_void, n: usize) -> c_int {
    // SAFETY: C contract.
    unsafe { memcmp(a, b, n) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strerror_fits_or_says_erange() {
        let mut buf = [0 as c_char; 64];
        // SAFETY: buf is 64 writable bytes.
        assert_eq!(unsafe { __xpg_strerror_r(2, buf.as_mut_ptr(), 64) }, 0);
        // SAFETY: NUL-terminated by the call.
        assert_eq!(unsafe { strlen(buf.as_ptr()) }, "No such file or directory".len());
        // SAFETY: as above, 4 bytes.
        assert_eq!(unsafe { __xpg_strerror_r(2, buf.as_mut_ptr(), 4) }, 34);
        assert_eq!(buf[3], 0);
    }
}
