//! `<dlfcn.h>`: there is no dynamic linking on the GPU. `dlsym` finds
//! nothing, which std reads as "this optional symbol is absent" (it looks up
//! glibc extras such as `__pthread_get_minstack` this way and falls back).

use core::ffi::{c_char, c_void};

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn dlsym(_handle: *mut c_void, _name: *const c_char) -> *mut c_void {
    core::ptr::null_mut()
}
