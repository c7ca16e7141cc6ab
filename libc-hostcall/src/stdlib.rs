//! `<stdlib.h>`: `malloc` & co. over the device [`heap`](crate::heap),
//! `getenv` (by hostcall), `exit`/`abort` (acknowledged by the host, then
//! `trap`), and an empty `environ`.

use core::ffi::{c_char, c_int, c_void};

use hostcall_abi::op::{Abort, Exit, Getenv};
use hostcall_abi::Errno;

use crate::errno::set_errno;
use crate::hostcall::{ids, reply_capacity, request};
use crate::{arch, cstr, heap};

/// `malloc` promises alignment for any fundamental type.
const MALLOC_ALIGN: usize = 16;

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    let p = heap::alloc(size, MALLOC_ALIGN);
    if p.is_null() {
        set_errno(Errno::ENOMEM);
    }
    p.cast()
}

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(size) else {
        set_errno(Errno::ENOMEM);
        return core::ptr::null_mut();
    };
    let p = heap::alloc_zeroed(total, MALLOC_ALIGN);
    if p.is_null() {
        set_errno(Errno::ENOMEM);
    }
    p.cast()
}

/// # Safety
/// `ptr` is null or a live block from `malloc` & co.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    // SAFETY: C contract.
    unsafe { heap::free(ptr.cast()) }
}

/// # Safety
/// `ptr` is null or a live block from `malloc` & co.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: C contract.
    let p = unsafe { heap::realloc(ptr.cast(), size, MALLOC_ALIGN) };
    if p.is_null() {
        set_errno(Errno::ENOMEM);
    }
    p.cast()
}

/// # Safety
/// `out` points to a writable pointer.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || align % core::mem::size_of::<usize>() != 0 {
        return Errno::EINVAL.0 as c_int;
    }
    let p = heap::alloc(size, align);
    if p.is_null() {
        return Errno::ENOMEM.0 as c_int;
    }
    // SAFETY: C contract.
    unsafe { *out = p.cast() };
    0
}

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    let p = heap::alloc(size, align);
    if p.is_null() {
        set_errno(if align.is_power_of_two() { Errno::ENOMEM } else { Errno::EINVAL });
    }
    p.cast()
}

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    aligned_alloc(align, size)
}

/// # Safety
/// `ptr` is null or a live block from `malloc` & co.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    heap::usable_size(ptr.cast())
}

/// The value of `name` in the host's environment, in a fresh heap block
/// (NUL-terminated) that stays valid for the rest of the launch: the device
/// cannot change the environment, so nothing ever invalidates it. Each call
/// allocates; std copies the value out at once.
pub fn getenv_bytes(name: &[u8]) -> Result<*mut c_char, Errno> {
    let cap = reply_capacity();
    let buf = heap::alloc(cap + 1, 1);
    if buf.is_null() {
        return Err(Errno::ENOMEM);
    }
    // SAFETY: `buf` is a fresh block of `cap + 1` bytes.
    let out = unsafe { core::slice::from_raw_parts_mut(buf, cap + 1) };
    let result = request(&ids::__HOSTCALL__getenv, &Getenv {}, name, None, &mut out[..cap]).and_then(|done| {
        // A value longer than one reply cannot be returned whole.
        if done.host_data_len > done.data_len || done.value as usize != done.data_len {
            return Err(Errno::E2BIG);
        }
        out[done.data_len] = 0;
        Ok(buf.cast::<c_char>())
    });
    if result.is_err() {
        // SAFETY: `buf` is ours and not handed out.
        unsafe { heap::free(buf) };
    }
    result
}

/// # Safety
/// `name` is a C string.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn getenv(name: *const c_char) -> *mut c_char {
    // SAFETY: C contract.
    match unsafe { cstr::path(name) }.and_then(getenv_bytes) {
        Ok(p) => p,
        // Unset (ENOENT), unreachable or too long: all read as "not set",
        // the only failure `getenv` has.
        Err(_) => core::ptr::null_mut(),
    }
}

/// `environ`: empty. The environment lives on the host and is read one
/// name at a time with `getenv`; `std::env::vars()` therefore sees nothing.
#[repr(transparent)]
pub struct Environ(*const *const c_char);

// SAFETY: the pointer is to an immutable static array.
unsafe impl Sync for Environ {}

#[repr(transparent)]
struct EmptyEnv([*const c_char; 1]);

// SAFETY: immutable, holds only a null pointer.
unsafe impl Sync for EmptyEnv {}

static EMPTY_ENV: EmptyEnv = EmptyEnv([core::ptr::null()]);

#[cfg_attr(not(test), no_mangle)]
#[allow(non_upper_case_globals)]
pub static environ: Environ = Environ(&EMPTY_ENV as *const EmptyEnv as *const *const c_char);

/// Ask the host to end the process with `code`, then end the kernel.
pub fn exit_with(code: c_int) -> ! {
    let _ = request(&ids::__HOSTCALL__exit, &Exit { code }, &[], None, &mut []);
    arch::trap()
}

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn exit(code: c_int) -> ! {
    exit_with(code)
}

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn _exit(code: c_int) -> ! {
    exit_with(code)
}

#[cfg_attr(not(test), no_mangle)]
#[allow(non_snake_case)]
pub extern "C" fn _Exit(code: c_int) -> ! {
    exit_with(code)
}

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn abort() -> ! {
    let _ = request(&ids::__HOSTCALL__abort, &Abort {}, &[], None, &mut []);
    arch::trap()
}
