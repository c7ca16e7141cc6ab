//! `<sys/stat.h>`: `fstat` (reply: x86_64 `struct stat`, 144 bytes),
//! `statx` (reply: `struct statx`, 256 bytes), the path `stat`s (statx,
//! converted on the device) and `mkdir`.

use core::ffi::{c_char, c_int};

use hostcall_abi::op::{Fstat, Mkdir, Statx};
use hostcall_abi::Errno;

use crate::cstr;
use crate::errno::c_ret;
use crate::hostcall::{ids, request};
use crate::linux::{stat_from_statx, AT_FDCWD, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, STATX_SIZE, STAT_SIZE};

pub fn fstat_into(fd: c_int, out: &mut [u8; STAT_SIZE]) -> Result<c_int, Errno> {
    let done = request(&ids::__HOSTCALL__fstat, &Fstat { fd }, &[], None, out)?;
    if done.data_len < STAT_SIZE {
        return Err(Errno::EIO);
    }
    Ok(0)
}

pub fn statx_into(
    dirfd: c_int,
    path: &[u8],
    flags: c_int,
    mask: u32,
    out: &mut [u8; STATX_SIZE],
) -> Result<c_int, Errno> {
    let done = request(&ids::__HOSTCALL__statx, &Statx { dirfd, flags, mask }, path, None, out)?;
    if done.data_len < STATX_SIZE {
        return Err(Errno::EIO);
    }
    Ok(0)
}

/// # Safety
/// `out` is null or points to a writable struct of `N` bytes.
unsafe fn out_struct<'a, const N: usize>(out: *mut u8) -> Result<&'a mut [u8; N], Errno> {
    // SAFETY: caller's contract; the bytes are only written.
    unsafe { out.cast::<[u8; N]>().as_mut() }.ok_or(Errno::EFAULT)
}

/// `fstatat` over `statx`, converted to `struct stat`.
///
/// # Safety
/// `path` is a C string, `buf` a writable `struct stat`.
unsafe fn fstatat_c(dirfd: c_int, path: *const c_char, buf: *mut u8, flags: c_int) -> c_int {
    let go = || -> Result<c_int, Errno> {
        // SAFETY: caller's contract.
        let (path, out) = unsafe { (cstr::path(path)?, out_struct::<STAT_SIZE>(buf)?) };
        let mut x = [0u8; STATX_SIZE];
        statx_into(dirfd, path, flags, STATX_BASIC_STATS, &mut x)?;
        *out = stat_from_statx(&x);
        Ok(0)
    };
    c_ret(go())
}

/// # Safety
/// C contract of `fstat(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn fstat64(fd: c_int, buf: *mut u8) -> c_int {
    // SAFETY: C contract.
    c_ret(unsafe { out_struct::<STAT_SIZE>(buf) }.and_then(|out| fstat_into(fd, out)))
}

/// # Safety
/// C contract of `fstat(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn fstat(fd: c_int, buf: *mut u8) -> c_int {
    // SAFETY: C contract.
    unsafe { fstat64(fd, buf) }
}

/// # Safety
/// C contract of `stat(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn stat64(path: *const c_char, buf: *mut u8) -> c_int {
    // SAFETY: C contract.
    unsafe { fstatat_c(AT_FDCWD, path, buf, 0) }
}

/// # Safety
/// C contract of `stat(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn stat(path: *const c_char, buf: *mut u8) -> c_int {
    // SAFETY: C contract.
    unsafe { fstatat_c(AT_FDCWD, path, buf, 0) }
}

/// # Safety
/// C contract of `lstat(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn lstat64(path: *const c_char, buf: *mut u8) -> c_int {
    // SAFETY: C contract.
    unsafe { fstatat_c(AT_FDCWD, path, buf, AT_SYMLINK_NOFOLLOW) }
}

/// # Safety
/// C contract of `lstat(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn lstat(path: *const c_char, buf: *mut u8) -> c_int {
    // SAFETY: C contract.
    unsafe { fstatat_c(AT_FDCWD, path, buf, AT_SYMLINK_NOFOLLOW) }
}

/// # Safety
/// C contract of `fstatat(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn fstatat64(dirfd: c_int, path: *const c_char, buf: *mut u8, flags: c_int) -> c_int {
    // SAFETY: C contract.
    unsafe { fstatat_c(dirfd, path, buf, flags) }
}

/// `statx(2)`; std finds it through a weak reference (and otherwise through
/// `syscall(SYS_statx)`, which lands here too).
///
/// # Safety
/// C contract of `statx(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn statx(dirfd: c_int, path: *const c_char, flags: c_int, mask: u32, buf: *mut u8) -> c_int {
    let go = || -> Result<c_int, Errno> {
        // SAFETY: C contract.
        let (path, out) = unsafe { (cstr::path(path)?, out_struct::<STATX_SIZE>(buf)?) };
        statx_into(dirfd, path, flags, mask, out)
    };
    c_ret(go())
}

pub fn mkdirat_bytes(dirfd: c_int, path: &[u8], mode: u32) -> Result<c_int, Errno> {
    request(&ids::__HOSTCALL__mkdir, &Mkdir { dirfd, mode }, path, None, &mut []).map(|_| 0)
}

/// # Safety
/// C contract of `mkdir(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn mkdir(path: *const c_char, mode: u32) -> c_int {
    // SAFETY: C contract.
    c_ret(unsafe { cstr::path(path) }.and_then(|p| mkdirat_bytes(AT_FDCWD, p, mode)))
}

/// # Safety
/// C contract of `mkdirat(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn mkdirat(dirfd: c_int, path: *const c_char, mode: u32) -> c_int {
    // SAFETY: C contract.
    c_ret(unsafe { cstr::path(path) }.and_then(|p| mkdirat_bytes(dirfd, p, mode)))
}
