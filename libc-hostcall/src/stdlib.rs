//! `<stdlib.h>`: `malloc` & co. over the device [`heap`](crate::heap),
//! `exit`/`abort` (acknowledged by the host, then `trap`), and, in
//! [`env`], the environment: `getenv` (the device overlay, else the host),
//! `setenv`/`unsetenv` (the device overlay only) and `environ`.

use core::ffi::{c_int, c_void};

use hostcall_abi::op::{Abort, Exit};
use hostcall_abi::Errno;

use crate::errno::set_errno;
use crate::hostcall::{ids, request};
use crate::{arch, heap};

pub mod env;

pub use env::{environ, getenv, getenv_bytes, setenv, unsetenv};

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
    if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<usize>()) {
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
