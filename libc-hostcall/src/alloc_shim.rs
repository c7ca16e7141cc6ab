//! The Rust allocator shim: the symbols `alloc` calls for the global
//! allocator, which rustc would otherwise generate when it links a final
//! artifact. The PTX pipeline links bitcode itself, so they come from here,
//! straight to the device heap.
//!
//! `#[rustc_std_internal_symbol]` gives them the mangled names `alloc`'s
//! declarations resolve to on this toolchain
//! (`_RNvCs<hash>_7___rustc12___rust_alloc`, ...). The `align` arguments are
//! `core::mem::Alignment` in `alloc`'s declarations: a `usize` newtype with
//! the same ABI, taken here as `usize`.
//!
//! `__rust_alloc_error_handler_should_panic` is not referenced by the pinned
//! nightly's std, so it is not defined.

use core::ffi::c_int;

use crate::{heap, stdlib, unistd};

#[rustc_std_internal_symbol]
pub unsafe fn __rust_alloc(size: usize, align: usize) -> *mut u8 {
    heap::alloc(size, align)
}

#[rustc_std_internal_symbol]
pub unsafe fn __rust_alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    heap::alloc_zeroed(size, align)
}

#[rustc_std_internal_symbol]
pub unsafe fn __rust_dealloc(ptr: *mut u8, _size: usize, _align: usize) {
    // SAFETY: `alloc`'s contract: a live block from `__rust_alloc`.
    unsafe { heap::free(ptr) }
}

#[rustc_std_internal_symbol]
pub unsafe fn __rust_realloc(ptr: *mut u8, _old_size: usize, align: usize, new_size: usize) -> *mut u8 {
    // SAFETY: `alloc`'s contract: a live block from `__rust_alloc`.
    unsafe { heap::realloc(ptr, new_size, align) }
}

/// `alloc` calls this on every allocation so that stable code cannot skip
/// the shim; it does nothing.
#[rustc_std_internal_symbol]
pub fn __rust_no_alloc_shim_is_unstable_v2() {}

/// Out of memory: say so on stderr, as std's default hook does, and abort.
///
/// Weak: a kernel built with std gets std's own handler (std defines this
/// symbol in the pinned nightly); a `no_std` + `alloc` kernel gets this one.
#[rustc_std_internal_symbol]
#[linkage = "weak"]
pub fn __rust_alloc_error_handler(size: usize, _align: usize) -> ! {
    let mut msg = [0u8; 64];
    let head = b"memory allocation of ";
    let tail = b" bytes failed\n";
    let mut digits = [0u8; 20];
    let mut n = size;
    let mut d = digits.len();
    loop {
        d -= 1;
        digits[d] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || d == 0 {
            break;
        }
    }
    let parts: [&[u8]; 3] = [head, &digits[d..], tail];
    let mut len = 0;
    for p in parts {
        msg[len..len + p.len()].copy_from_slice(p);
        len += p.len();
    }
    let _ = unistd::write_bytes(2 as c_int, &msg[..len], None);
    stdlib::abort()
}
