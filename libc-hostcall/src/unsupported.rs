//! Symbols std links that the GPU cannot honour. Each fails with ENOSYS
//! (as `-1`+`errno`, as the returned error number for `pthread_*`, or as
//! null/`MAP_FAILED`) and posts an `unsupported` hostcall naming itself, so
//! the host logs it under `HOSTCALL_DEBUG`. None traps.

use core::ffi::{c_char, c_int, c_long, c_void};

use crate::errno::{c_ret, CFailure};
use crate::hostcall;

/// `-1` + `errno = ENOSYS`, or null for pointer returns.
fn fail<T: CFailure>(name: &str) -> T {
    c_ret(Err(hostcall::unsupported(name)))
}

/// The error number itself, for functions that return it (`pthread_*`).
fn fail_code(name: &str) -> c_int {
    hostcall::unsupported(name).0 as c_int
}

macro_rules! unsupported {
    ($($how:ident fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;)*) => {
        $(
            /// Unsupported on the GPU: see the module docs.
            #[cfg_attr(not(test), no_mangle)]
            pub extern "C" fn $name($(_: $ty),*) -> $ret {
                $how(stringify!($name))
            }
        )*
    };
}

unsupported! {
    fail fn ioctl(fd: c_int, req: c_long) -> c_int;
    fail fn sysconf(name: c_int) -> c_long;
    fail fn chdir(path: *const c_char) -> c_int;
    fail fn fchdir(fd: c_int) -> c_int;
    fail fn fsync(fd: c_int) -> c_int;
    fail fn fdatasync(fd: c_int) -> c_int;
    fail fn ftruncate64(fd: c_int, len: i64) -> c_int;
    fail fn ftruncate(fd: c_int, len: i64) -> c_int;
    fail fn fchmod(fd: c_int, mode: u32) -> c_int;
    fail fn chmod(path: *const c_char, mode: u32) -> c_int;
    fail fn fchown(fd: c_int, uid: u32, gid: u32) -> c_int;
    fail fn chown(path: *const c_char, uid: u32, gid: u32) -> c_int;
    fail fn lchown(path: *const c_char, uid: u32, gid: u32) -> c_int;
    fail fn link(old: *const c_char, new: *const c_char) -> c_int;
    fail fn linkat(olddir: c_int, old: *const c_char, newdir: c_int, new: *const c_char, flags: c_int) -> c_int;
    fail fn symlink(target: *const c_char, path: *const c_char) -> c_int;
    fail fn readlink(path: *const c_char, buf: *mut c_char, len: usize) -> isize;
    fail fn realpath(path: *const c_char, out: *mut c_char) -> *mut c_char;
    fail fn opendir(path: *const c_char) -> *mut c_void;
    fail fn fdopendir(fd: c_int) -> *mut c_void;
    fail fn readdir64(dir: *mut c_void) -> *mut c_void;
    fail fn closedir(dir: *mut c_void) -> c_int;
    fail fn dirfd(dir: *mut c_void) -> c_int;
    fail fn dup(fd: c_int) -> c_int;
    fail fn dup2(fd: c_int, to: c_int) -> c_int;
    fail fn pipe2(fds: *mut c_int, flags: c_int) -> c_int;
    fail fn poll(fds: *mut c_void, n: u64, timeout: c_int) -> c_int;
    fail fn futimens(fd: c_int, times: *const c_void) -> c_int;
    fail fn utimensat(dirfd: c_int, path: *const c_char, times: *const c_void, flags: c_int) -> c_int;
    fail fn copy_file_range(a: c_int, ao: *mut i64, b: c_int, bo: *mut i64, len: usize, flags: u32) -> isize;
    fail fn sendfile64(out: c_int, inp: c_int, off: *mut i64, len: usize) -> isize;
    fail fn setenv(name: *const c_char, value: *const c_char, overwrite: c_int) -> c_int;
    fail fn unsetenv(name: *const c_char) -> c_int;
    fail fn sigaction(sig: c_int, act: *const c_void, old: *mut c_void) -> c_int;
    fail fn sigaltstack(ss: *const c_void, old: *mut c_void) -> c_int;
    fail fn mprotect(addr: *mut c_void, len: usize, prot: c_int) -> c_int;
    fail fn munmap(addr: *mut c_void, len: usize) -> c_int;
    fail fn getpid() -> c_int;
    fail fn getppid() -> c_int;
    fail fn pause() -> c_int;
    fail fn kill(pid: c_int, sig: c_int) -> c_int;
    fail fn fork() -> c_int;
    fail fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fail fn socket(domain: c_int, ty: c_int, proto: c_int) -> c_int;
    fail_code fn pthread_create(t: *mut usize, attr: *const c_void, f: *const c_void, arg: *mut c_void) -> c_int;
    fail_code fn pthread_join(t: usize, ret: *mut *mut c_void) -> c_int;
    fail_code fn pthread_detach(t: usize) -> c_int;
    fail_code fn pthread_attr_getstack(attr: *const c_void, addr: *mut *mut c_void, size: *mut usize) -> c_int;
    fail_code fn pthread_getattr_np(t: usize, attr: *mut c_void) -> c_int;
    fail_code fn pthread_setname_np(t: usize, name: *const c_char) -> c_int;
    fail_code fn sched_getaffinity(pid: c_int, size: usize, set: *mut c_void) -> c_int;
}

/// `mmap` fails with `MAP_FAILED` (-1), not null.
#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn mmap64(_: *mut c_void, _: usize, _: c_int, _: c_int, _: c_int, _: i64) -> *mut c_void {
    let _: c_int = fail("mmap64");
    usize::MAX as *mut c_void
}

/// `signal` fails with `SIG_ERR` (-1).
#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn signal(_: c_int, _: usize) -> usize {
    let _: c_int = fail("signal");
    usize::MAX
}
