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
    fail fn sigaction(sig: c_int, act: *const c_void, old: *mut c_void) -> c_int;
    fail fn sigaltstack(ss: *const c_void, old: *mut c_void) -> c_int;
    fail fn mprotect(addr: *mut c_void, len: usize, prot: c_int) -> c_int;
    fail fn munmap(addr: *mut c_void, len: usize) -> c_int;
    fail fn getppid() -> c_int;
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
    // What `io::copy` between files, `fs::copy` and `File::lock` reach.
    fail fn splice(a: c_int, ao: *mut i64, b: c_int, bo: *mut i64, len: usize, flags: u32) -> isize;
    fail fn flock(fd: c_int, op: c_int) -> c_int;
    // Sockets (`std::net`, `UnixStream`).
    fail fn socketpair(domain: c_int, ty: c_int, proto: c_int, fds: *mut c_int) -> c_int;
    fail fn connect(fd: c_int, addr: *const c_void, len: u32) -> c_int;
    fail fn bind(fd: c_int, addr: *const c_void, len: u32) -> c_int;
    fail fn listen(fd: c_int, backlog: c_int) -> c_int;
    fail fn accept4(fd: c_int, addr: *mut c_void, len: *mut u32, flags: c_int) -> c_int;
    fail fn setsockopt(fd: c_int, level: c_int, name: c_int, val: *const c_void, len: u32) -> c_int;
    fail fn getsockopt(fd: c_int, level: c_int, name: c_int, val: *mut c_void, len: *mut u32) -> c_int;
    fail fn getpeername(fd: c_int, addr: *mut c_void, len: *mut u32) -> c_int;
    fail fn getsockname(fd: c_int, addr: *mut c_void, len: *mut u32) -> c_int;
    fail fn send(fd: c_int, buf: *const c_void, len: usize, flags: c_int) -> isize;
    fail fn recv(fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> isize;
    fail fn sendto(fd: c_int, buf: *const c_void, len: usize, flags: c_int, addr: *const c_void, alen: u32) -> isize;
    fail fn recvfrom(fd: c_int, buf: *mut c_void, len: usize, flags: c_int, addr: *mut c_void, alen: *mut u32) -> isize;
    fail fn shutdown(fd: c_int, how: c_int) -> c_int;
    fail fn __res_init() -> c_int;
    // Processes (`process::Command`): std reads each failure as an `Err`.
    fail fn waitid(idtype: c_int, id: u32, info: *mut c_void, options: c_int) -> c_int;
    fail fn pidfd_getpid(fd: c_int) -> c_int;
    fail_code fn posix_spawnattr_init(attr: *mut c_void) -> c_int;
    fail_code fn posix_spawnattr_destroy(attr: *mut c_void) -> c_int;
    fail_code fn posix_spawnattr_setflags(attr: *mut c_void, flags: i16) -> c_int;
    fail_code fn posix_spawnattr_setpgroup(attr: *mut c_void, pgroup: c_int) -> c_int;
    fail_code fn posix_spawnattr_setsigdefault(attr: *mut c_void, set: *const c_void) -> c_int;
    fail_code fn posix_spawnattr_setsigmask(attr: *mut c_void, set: *const c_void) -> c_int;
    fail_code fn posix_spawn_file_actions_init(actions: *mut c_void) -> c_int;
    fail_code fn posix_spawn_file_actions_destroy(actions: *mut c_void) -> c_int;
    fail_code fn posix_spawn_file_actions_adddup2(actions: *mut c_void, fd: c_int, to: c_int) -> c_int;
    fail_code fn posix_spawn_file_actions_addchdir_np(actions: *mut c_void, path: *const c_char) -> c_int;
    fail_code fn posix_spawn_file_actions_addchdir(actions: *mut c_void, path: *const c_char) -> c_int;
    fail_code fn posix_spawnp(
        pid: *mut c_int, file: *const c_char, actions: *const c_void, attr: *const c_void,
        argv: *const *const c_char, envp: *const *const c_char,
    ) -> c_int;
    fail_code fn pidfd_spawnp(
        pidfd: *mut c_int, file: *const c_char, actions: *const c_void, attr: *const c_void,
        argv: *const *const c_char, envp: *const *const c_char,
    ) -> c_int;
}

/// `sched_getaffinity`: `-1` + `errno = ENOSYS` (glibc's convention, which
/// std's `available_parallelism` reads), then `sysconf` fails too: `Err`.
#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn sched_getaffinity(_: c_int, _: usize, _: *mut c_void) -> c_int {
    fail("sched_getaffinity")
}

/// The kernel is one process, the host's: a constant, never `-1`
/// (`process::id()` casts it).
#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn getpid() -> c_int {
    1
}

/// No signal ever reaches a kernel: `pause` never returns (std's exit path
/// parks every thread but the first here until the kernel ends).
#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn pause() -> c_int {
    loop {
        crate::arch::nanosleep(1_000_000);
    }
}

/// std checks the C library's version before spawning a process; any
/// version will do, it must not be null.
#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn gnu_get_libc_version() -> *const c_char {
    c"2.39".as_ptr()
}

/// The 128-byte `sigset_t`, emptied.
///
/// # Safety
/// `set` points at a writable `sigset_t`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn sigemptyset(set: *mut u64) -> c_int {
    // SAFETY: the caller's `sigset_t` is 16 words.
    unsafe { core::ptr::write_bytes(set, 0, 16) };
    0
}

/// Signal `sig` added to `set` (1..=1024), else `EINVAL`.
///
/// # Safety
/// `set` points at a writable `sigset_t`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn sigaddset(set: *mut u64, sig: c_int) -> c_int {
    let Some(bit) = usize::try_from(sig).ok().and_then(|s| s.checked_sub(1)).filter(|&b| b < 1024) else {
        return c_ret(Err::<c_int, _>(crate::Errno::EINVAL));
    };
    // SAFETY: the caller's `sigset_t` is 16 words and `bit / 64 < 16`.
    unsafe { *set.add(bit / 64) |= 1 << (bit % 64) };
    0
}

/// No name service: `EAI_SYSTEM` with `errno = ENOSYS` (std: `Err`).
///
/// # Safety
/// `res` is null or writable.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn getaddrinfo(
    _: *const c_char,
    _: *const c_char,
    _: *const c_void,
    res: *mut *mut c_void,
) -> c_int {
    if !res.is_null() {
        // SAFETY: checked non-null; the caller's out-pointer.
        unsafe { *res = core::ptr::null_mut() };
    }
    let _: c_int = fail("getaddrinfo");
    const EAI_SYSTEM: c_int = -11;
    EAI_SYSTEM
}

/// Nothing to free: `getaddrinfo` never allocates.
#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn freeaddrinfo(_: *mut c_void) {}

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn gai_strerror(_: c_int) -> *const c_char {
    c"name resolution is not available on the GPU".as_ptr()
}

/// Root, as far as anything on the device can tell.
#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn getuid() -> u32 {
    0
}

/// No password database: not found (`*result = NULL`, 0), so
/// `env::home_dir` is `$HOME` or `None`.
///
/// # Safety
/// `result` is null or writable.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn getpwuid_r(
    _: u32,
    _: *mut c_void,
    _: *mut c_char,
    _: usize,
    result: *mut *mut c_void,
) -> c_int {
    if !result.is_null() {
        // SAFETY: checked non-null; the caller's out-pointer.
        unsafe { *result = core::ptr::null_mut() };
    }
    0
}

/// No unwinder on the GPU: `Backtrace::capture` sees an empty stack and
/// reports itself unsupported (`_URC_END_OF_STACK`, the callback never runs).
#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn _Unwind_Backtrace(_: *const c_void, _: *mut c_void) -> c_int {
    5
}

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn _Unwind_GetIP(_: *mut c_void) -> usize {
    0
}

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn _Unwind_GetCFA(_: *mut c_void) -> usize {
    0
}

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn _Unwind_FindEnclosingFunction(_: *mut c_void) -> *mut c_void {
    core::ptr::null_mut()
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
