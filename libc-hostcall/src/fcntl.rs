//! `<fcntl.h>`: opening files (the `open` hostcall) and `fcntl`.

use core::ffi::{c_char, c_int, VaList};

use hostcall_abi::op::Open;
use hostcall_abi::Errno;

use crate::errno::c_ret;
use crate::hostcall::{ids, request};
use crate::linux::{AT_FDCWD, FD_CLOEXEC, F_GETFD, F_SETFD, O_CREAT, O_TMPFILE};
use crate::{cstr, hostcall};

/// `openat(dirfd, path, flags, mode)`: path inline, `Open { dirfd, flags, mode }`.
pub fn openat_bytes(dirfd: c_int, path: &[u8], flags: c_int, mode: u32) -> Result<c_int, Errno> {
    let req = Open { dirfd, flags, mode };
    let done = request(&ids::__HOSTCALL__open, &req, path, None, &mut [])?;
    c_int::try_from(done.value).map_err(|_| Errno::EIO)
}

/// The mode argument exists only with O_CREAT or O_TMPFILE.
///
/// # Safety
/// With those flags the caller passed a `mode_t` (an unsigned int).
unsafe fn mode_arg(flags: c_int, args: &mut VaList<'_>) -> u32 {
    if flags & O_CREAT != 0 || flags & O_TMPFILE == O_TMPFILE {
        // SAFETY: per the C contract of `open`, the mode was passed.
        unsafe { args.next_arg::<u32>() }
    } else {
        0
    }
}

unsafe fn openat_c(dirfd: c_int, path: *const c_char, flags: c_int, mode: u32) -> c_int {
    // SAFETY: `path` is a C string per the caller's contract.
    c_ret(unsafe { cstr::path(path) }.and_then(|p| openat_bytes(dirfd, p, flags, mode)))
}

/// # Safety
/// C contract of `open(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mut args: ...) -> c_int {
    // SAFETY: C contract.
    unsafe { openat_c(AT_FDCWD, path, flags, mode_arg(flags, &mut args)) }
}

/// # Safety
/// C contract of `open64(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mut args: ...) -> c_int {
    // SAFETY: C contract.
    unsafe { openat_c(AT_FDCWD, path, flags, mode_arg(flags, &mut args)) }
}

/// # Safety
/// C contract of `openat(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mut args: ...) -> c_int {
    // SAFETY: C contract.
    unsafe { openat_c(dirfd, path, flags, mode_arg(flags, &mut args)) }
}

/// # Safety
/// C contract of `openat64(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn openat64(dirfd: c_int, path: *const c_char, flags: c_int, mut args: ...) -> c_int {
    // SAFETY: C contract.
    unsafe { openat_c(dirfd, path, flags, mode_arg(flags, &mut args)) }
}

/// `fcntl`: close-on-exec is meaningless without `exec`, so `F_GETFD` says it
/// is set and `F_SETFD` accepts anything; every other command is unsupported.
///
/// # Safety
/// C contract of `fcntl(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, _args: ...) -> c_int {
    c_ret(match cmd {
        _ if fd < 0 => Err(Errno::EBADF),
        F_GETFD => Ok(FD_CLOEXEC),
        F_SETFD => Ok(0),
        _ => Err(hostcall::unsupported("fcntl")),
    })
}

/// # Safety
/// C contract of `fcntl(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, _args: ...) -> c_int {
    c_ret(match cmd {
        _ if fd < 0 => Err(Errno::EBADF),
        F_GETFD => Ok(FD_CLOEXEC),
        F_SETFD => Ok(0),
        _ => Err(hostcall::unsupported("fcntl64")),
    })
}
