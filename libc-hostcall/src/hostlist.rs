//! The lists a process gets at start-up, which a kernel has to ask the host
//! for: its arguments (`__hostcall_argv`, what std's `std::env::args()`
//! calls on nvptx64, fixup 0006) and its environment (`__hostcall_environ`,
//! what `std::env::vars()` reads, fixup 0007). The first thread of a launch
//! to ask fetches the list, one entry per hostcall (`arg`, `environ`) until
//! the host says ENOENT, into the device heap; every thread of the launch
//! shares the result. What the device sets or unsets is not here but in
//! [`crate::stdlib::env`], which `__hostcall_environ` lays over the host's
//! list.

use core::ffi::c_char;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use core::sync::atomic::{AtomicPtr, AtomicU64};

use hostcall_abi::op::{Arg, Environ};
use hostcall_abi::Errno;

use crate::hostcall::{ids, reply_capacity, request};
use crate::{arch, heap};

/// More entries than this are not fetched (a runaway host list must not
/// exhaust the device heap).
pub const MAX_ENTRIES: usize = 4096;

/// One list, fetched once per launch.
struct HostList {
    /// The launch whose list is published in `count`/`array` (0: none yet).
    ready: AtomicU64,
    /// The launch whose list some thread has claimed to build.
    builder: AtomicU64,
    count: AtomicU64,
    /// The NULL-terminated array (null when the list is empty).
    array: AtomicPtr<*const c_char>,
}

impl HostList {
    const fn new() -> Self {
        HostList {
            ready: AtomicU64::new(0),
            builder: AtomicU64::new(0),
            count: AtomicU64::new(0),
            array: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// This launch's list, built by the first caller with `fetch`; the
    /// others wait for it.
    fn get(&self, fetch: fn(u32, &mut [u8]) -> Result<usize, Errno>) -> (usize, *mut *const c_char) {
        let launch = arch::launch_id();
        let mut round = 0u32;
        loop {
            if self.ready.load(Acquire) == launch {
                return (self.count.load(Relaxed) as usize, self.array.load(Relaxed));
            }
            let builder = self.builder.load(Relaxed);
            if builder != launch && self.builder.compare_exchange(builder, launch, Acquire, Relaxed).is_ok() {
                let (count, array) = build_argv(reply_capacity(), fetch);
                self.count.store(count as u64, Relaxed);
                self.array.store(array, Relaxed);
                self.ready.store(launch, Release);
                continue;
            }
            arch::nanosleep(if round < 16 { 64 } else { 1024 });
            round = round.saturating_add(1);
        }
    }
}

static ARGS: HostList = HostList::new();
static ENVIRON: HostList = HostList::new();

/// Builds a NULL-terminated argv-style array of C strings on the device heap
/// from `fetch(i, buf)`, which writes entry `i` into `buf` and returns its
/// length, or ENOENT past the last one. An entry that does not fit `buf`
/// (the host refuses such arguments before launch and leaves such
/// environment entries out) or a full heap ends the list early.
pub fn build_argv(
    capacity: usize,
    mut fetch: impl FnMut(u32, &mut [u8]) -> Result<usize, Errno>,
) -> (usize, *mut *const c_char) {
    let mut argv: *mut *const c_char = core::ptr::null_mut();
    let mut argc = 0usize;
    let mut slots = 0usize;
    let scratch = heap::alloc(capacity.max(1), 1);
    if scratch.is_null() {
        return (0, core::ptr::null_mut());
    }
    while argc < MAX_ENTRIES {
        // SAFETY: `scratch` is our block of `capacity.max(1)` bytes.
        let buf = unsafe { core::slice::from_raw_parts_mut(scratch, capacity) };
        let Ok(len) = fetch(argc as u32, buf) else { break };
        if len > capacity {
            break;
        }
        if argc + 1 >= slots {
            let grown = (slots * 2).max(8);
            let bytes = grown * core::mem::size_of::<*const c_char>();
            // SAFETY: `argv` is null or our block from an earlier round.
            let new = unsafe { heap::realloc(argv.cast(), bytes, core::mem::align_of::<*const c_char>()) };
            if new.is_null() {
                break;
            }
            argv = new.cast();
            slots = grown;
        }
        let text = heap::alloc(len + 1, 1);
        if text.is_null() {
            break;
        }
        // SAFETY: `text` is a fresh block of `len + 1` bytes, `scratch` holds
        // `len <= capacity` fetched bytes, and `argv` has room for `argc + 1`
        // pointers (checked above).
        unsafe {
            core::ptr::copy_nonoverlapping(scratch, text, len);
            *text.add(len) = 0;
            *argv.add(argc) = text.cast();
        }
        argc += 1;
    }
    // SAFETY: `scratch` is ours and no longer used.
    unsafe { heap::free(scratch) };
    if argv.is_null() {
        return (0, core::ptr::null_mut());
    }
    // SAFETY: the growth check keeps a free slot after the last argument.
    unsafe { *argv.add(argc) = core::ptr::null() };
    (argc, argv)
}

/// What a hostcall answered, or E2BIG when it did not fit `buf` (the
/// host leaves such entries out; this is the check that they did).
fn fetched(done: Result<hostcall_abi::Completed, Errno>) -> Result<usize, Errno> {
    let done = done?;
    if done.host_data_len > done.data_len {
        return Err(Errno::E2BIG);
    }
    Ok(done.data_len)
}

fn fetch_arg(index: u32, buf: &mut [u8]) -> Result<usize, Errno> {
    fetched(request(&ids::__HOSTCALL__arg, &Arg { index }, &[], None, buf))
}

fn fetch_environ(index: u32, buf: &mut [u8]) -> Result<usize, Errno> {
    fetched(request(&ids::__HOSTCALL__environ, &Environ { index }, &[], None, buf))
}

/// The arguments of this launch. Returns the argv (NULL-terminated, valid
/// for the rest of the launch; null when there are none) and stores the
/// count in `*argc`.
///
/// # Safety
/// `argc` is valid for a write.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn __hostcall_argv(argc: *mut isize) -> *const *const c_char {
    let (count, argv) = ARGS.get(fetch_arg);
    // SAFETY: the caller passes a writable `argc`.
    unsafe { *argc = count as isize };
    argv
}

/// The environment of this launch as the address of an `environ`-style
/// variable (the C `environ` itself): a pointer to the NULL-terminated array
/// of `NAME=value` entries, the host's in name order with the device's
/// `setenv`/`unsetenv` applied (see [`crate::stdlib::env`]). The host's list
/// is fetched once per launch, by the first call that needs it.
#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn __hostcall_environ() -> *mut *const *const c_char {
    crate::stdlib::env::environ_view(|| {
        let (count, array) = ENVIRON.get(fetch_environ);
        if array.is_null() {
            return &[];
        }
        // SAFETY: `HostList::get` returns `count` entries, in a heap block
        // that is never freed or written again.
        unsafe { core::slice::from_raw_parts(array, count) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(argc: usize, argv: *mut *const c_char) -> Vec<String> {
        (0..argc)
            .map(|i| {
                // SAFETY: build_argv returned an array of `argc` pointers...
                let p = unsafe { *argv.add(i) };
                // SAFETY: ...each to a NUL-terminated string it wrote.
                unsafe { core::ffi::CStr::from_ptr(p) }.to_str().expect("utf-8").to_owned()
            })
            .collect()
    }

    fn fake(list: &'static [&'static str]) -> impl FnMut(u32, &mut [u8]) -> Result<usize, Errno> {
        move |i, buf| {
            let arg = list.get(i as usize).ok_or(Errno::ENOENT)?;
            if arg.len() > buf.len() {
                return Err(Errno::E2BIG);
            }
            buf[..arg.len()].copy_from_slice(arg.as_bytes());
            Ok(arg.len())
        }
    }

    #[test]
    fn argv_holds_every_argument_in_order_and_ends_in_null() {
        let list: &'static [&'static str] =
            &["kernel", "", "two words", "a", "b", "c", "d", "e", "f", "g", "after the first growth"];
        let (argc, argv) = build_argv(64, fake(list));
        assert_eq!(strings(argc, argv), list);
        // SAFETY: NULL-terminated, as promised.
        assert!(unsafe { *argv.add(argc) }.is_null());
    }

    #[test]
    fn no_arguments_is_an_empty_list() {
        let (argc, argv) = build_argv(64, fake(&[]));
        assert_eq!((argc, argv.is_null()), (0, true));
    }

    #[test]
    fn an_argument_longer_than_a_reply_ends_the_list() {
        let (argc, argv) = build_argv(4, fake(&["ok", "far too long", "never"]));
        assert_eq!(strings(argc, argv), ["ok"]);
    }
}
