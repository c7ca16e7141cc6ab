//! The environment part of `<stdlib.h>`: `getenv`, `setenv`, `unsetenv` and
//! the `environ` array, as one process-wide view per launch.
//!
//! The host's environment is never changed. What a kernel sets or unsets
//! lives in an overlay in device memory, shared by every thread of the
//! launch and dropped when the next launch begins (a launch is the process):
//!
//! * `getenv` looks in the overlay first (no lock, no hostcall), then asks
//!   the host (the `getenv` hostcall);
//! * `setenv`/`unsetenv` change only the overlay; `unsetenv` leaves a
//!   tombstone that hides the host's variable;
//! * `environ` is the host's list (fetched once per launch, see
//!   [`hostlist`](crate::hostlist)) with the overlay applied: a host variable
//!   set on the device keeps its place with the new value, an unset one is
//!   left out, new ones follow in the order they were first set. It is
//!   rebuilt lazily, by the first `__hostcall_environ` (`std::env::vars()`)
//!   after a change; the C `environ` symbol is the same variable, so C code
//!   reading it directly sees the view as of the last such rebuild.
//!
//! Concurrency: writers (`setenv`, `unsetenv`, a rebuild of `environ`) take
//! a device spinlock and hold it only for memory work, never across a
//! hostcall (heap blocks are allocated before it is taken and freed after it
//! is let go, since beyond the arena `malloc`/`free` are hostcalls). Readers
//! (`getenv`) take no lock: the overlay is a list that only grows within a
//! launch, each node's name is immutable and its value is one atomic pointer
//! to an immutable `NAME=value` block.
//!
//! Memory: a value block is never freed, because a pointer `getenv` handed
//! out may still be read (glibc leaks replaced `setenv` values for the same
//! reason), so each `setenv` costs its `NAME=value` bytes for the rest of
//! the launch; so do the overlay's nodes (one per name) and, as for the
//! host's list, the overlay of a launch that has ended. A replaced `environ`
//! array *is* freed: as with glibc, iterating `environ` while another thread
//! calls `setenv` is a race for the C caller to avoid, and std avoids it
//! with its `ENV_LOCK` (`vars()` holds it for reading from the call that
//! returns the array until it has copied the entries out). One exception:
//! a call that could not allocate a new view hands out the old one, which
//! another `vars()` (also holding `ENV_LOCK` only for reading) may then
//! replace; such an array is left allocated, not freed.
//!
//! Names: `setenv`/`unsetenv` reject an empty name or one containing `=`
//! with EINVAL, as POSIX says (and a null name or value too, as glibc does);
//! out of device memory is ENOMEM.

use core::ffi::{c_char, c_int, CStr};
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize};

use hostcall_abi::op::Getenv;
use hostcall_abi::Errno;

use crate::errno::c_ret;
use crate::hostcall::{ids, reply_capacity, request};
use crate::{arch, heap};

/// The value of `name` in the host's environment, in a fresh heap block
/// (NUL-terminated) that stays valid for the rest of the launch: nothing on
/// the device changes the host's environment, so nothing invalidates it.
/// Each call allocates; std copies the value out at once.
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
        let nul = out.get_mut(done.data_len).ok_or(Errno::E2BIG)?;
        *nul = 0;
        Ok(buf.cast::<c_char>())
    });
    if result.is_err() {
        // SAFETY: `buf` is ours and not handed out.
        unsafe { heap::free(buf) };
    }
    result
}

/// Whether the host has `name` as the device sees it: what `getenv` would
/// return (a value too long for one reply reads as unset there too), except
/// that running out of memory to ask is an error, not "unset".
fn host_has(name: &[u8]) -> Result<bool, Errno> {
    match getenv_bytes(name) {
        Ok(value) => {
            // SAFETY: a fresh block from `getenv_bytes`, never handed out.
            unsafe { heap::free(value.cast()) };
            Ok(true)
        }
        Err(Errno::ENOMEM) => Err(Errno::ENOMEM),
        Err(_) => Ok(false),
    }
}

/// One overlaid name. Allocated with its name bytes right after it; never
/// freed once linked (lock-free readers may be on it).
#[repr(C)]
struct Var {
    /// The next name, in the order first set; written once, under the lock.
    next: AtomicPtr<Var>,
    /// `NAME=value\0`, or null: unset (hides the host's `NAME`).
    entry: AtomicPtr<c_char>,
    /// The name bytes after the header (a pointer from the allocation, so
    /// that it covers them; a `&Var` covers the header alone).
    name: *const u8,
    name_len: usize,
}

impl Var {
    /// A fresh, unlinked node for `name` with no value.
    fn new(name: &[u8]) -> Result<*mut Var, Errno> {
        let bytes = core::mem::size_of::<Var>().checked_add(name.len()).ok_or(Errno::ENOMEM)?;
        let p = heap::alloc(bytes, core::mem::align_of::<Var>()).cast::<Var>();
        if p.is_null() {
            return Err(Errno::ENOMEM);
        }
        // SAFETY: `p` is a fresh block of `size_of::<Var>() + name.len()`
        // bytes aligned for `Var`: the header, then the name.
        unsafe {
            let name_at = p.add(1).cast::<u8>();
            core::ptr::copy_nonoverlapping(name.as_ptr(), name_at, name.len());
            p.write(Var {
                next: AtomicPtr::new(core::ptr::null_mut()),
                entry: AtomicPtr::new(core::ptr::null_mut()),
                name: name_at,
                name_len: name.len(),
            });
        }
        Ok(p)
    }

    fn name(&self) -> &[u8] {
        // SAFETY: `Var::new` wrote `name_len` bytes at `name`, in the
        // node's block, and nothing writes them again.
        unsafe { core::slice::from_raw_parts(self.name, self.name_len) }
    }
}

/// A fresh `NAME=value\0` block.
fn new_entry(name: &[u8], value: &[u8]) -> Result<*mut c_char, Errno> {
    let len = name.len().checked_add(value.len()).and_then(|n| n.checked_add(2)).ok_or(Errno::ENOMEM)?;
    let p = heap::alloc(len, 1);
    if p.is_null() {
        return Err(Errno::ENOMEM);
    }
    // SAFETY: `p` is a fresh block of `name.len() + 1 + value.len() + 1`
    // bytes; the four writes fill it exactly, in order.
    unsafe {
        core::ptr::copy_nonoverlapping(name.as_ptr(), p, name.len());
        *p.add(name.len()) = b'=';
        core::ptr::copy_nonoverlapping(value.as_ptr(), p.add(name.len() + 1), value.len());
        *p.add(len - 1) = 0;
    }
    Ok(p.cast())
}

/// The name of a host `environ` entry: the bytes before its first `=`.
fn entry_name(entry: *const c_char) -> &'static [u8] {
    // SAFETY: host entries are NUL-terminated strings in heap blocks that
    // are never freed (`hostlist::build_argv`), and so are ours.
    let text = unsafe { CStr::from_ptr(entry) }.to_bytes();
    text.split(|&b| b == b'=').next().unwrap_or(text)
}

/// What the overlay says about a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlaid {
    /// Set on the device: the NUL-terminated value, valid for the launch.
    Value(*mut c_char),
    /// Unset on the device: hidden even if the host has it.
    Unset,
    /// Not touched on the device: the host's value, if any, stands.
    NotHere,
}

/// A device spinlock, for writers only. Held for memory work alone.
struct SpinLock(AtomicU32);

struct Held<'a>(&'a AtomicU32);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.store(0, Release);
    }
}

impl SpinLock {
    fn lock(&self) -> Held<'_> {
        let mut round = 0u32;
        while self.0.compare_exchange_weak(0, 1, Acquire, Relaxed).is_err() {
            arch::nanosleep(32u32 << round.min(5));
            round = round.saturating_add(1);
        }
        Held(&self.0)
    }
}

/// The `environ` array that nothing has built yet, or an empty environment:
/// one null pointer, so C code may walk it without checking for null.
#[repr(transparent)]
struct EmptyEnv([*const c_char; 1]);

// SAFETY: immutable, holds only a null pointer.
unsafe impl Sync for EmptyEnv {}

static EMPTY_ENV: EmptyEnv = EmptyEnv([core::ptr::null()]);

const EMPTY: *mut *const c_char = &EMPTY_ENV as *const EmptyEnv as *mut *const c_char;

/// `environ`: the NULL-terminated `NAME=value` array of this launch, the
/// host's list with the overlay applied (see the module docs for when it is
/// brought up to date). `__hostcall_environ` returns its address. An
/// `AtomicPtr<T>` has the layout of a `*mut T`.
#[cfg_attr(not(test), no_mangle)]
#[allow(non_upper_case_globals)]
pub static environ: AtomicPtr<*const c_char> = AtomicPtr::new(EMPTY);

/// The overlay of one launch and the `environ` view built from it.
pub struct Overlay {
    lock: SpinLock,
    /// The launch whose names `first` lists (0: none yet). Written under the
    /// lock, after the list was emptied for it.
    launch: AtomicU64,
    first: AtomicPtr<Var>,
    /// Only read and written under the lock.
    last: AtomicPtr<Var>,
    /// Nodes in the list: a bound on the entries it adds to `environ`.
    len: AtomicUsize,
    /// Bumped on every change and every new launch; never goes back.
    changes: AtomicU64,
    /// The array `environ` points to, and the value of `changes` it shows.
    view: &'static AtomicPtr<*const c_char>,
    view_of: AtomicU64,
    /// Whether `*view` is an array this overlay allocated (else the host's
    /// list or the empty one, which are not ours to free).
    view_owned: AtomicBool,
    /// A call since the view was last built handed out the old array
    /// because it could not allocate a new one. Readers of that array hold
    /// only std's `ENV_LOCK` for reading, as a rebuilding caller may, so the
    /// next rebuild must not free it: it is left allocated. Under the lock.
    stale_handed_out: AtomicBool,
}

impl Overlay {
    /// An empty overlay that publishes its `environ` view in `view`.
    pub const fn new(view: &'static AtomicPtr<*const c_char>) -> Self {
        Overlay {
            lock: SpinLock(AtomicU32::new(0)),
            launch: AtomicU64::new(0),
            first: AtomicPtr::new(core::ptr::null_mut()),
            last: AtomicPtr::new(core::ptr::null_mut()),
            len: AtomicUsize::new(0),
            changes: AtomicU64::new(0),
            view,
            // No value of `changes` yet: the first call builds the view.
            view_of: AtomicU64::new(u64::MAX),
            view_owned: AtomicBool::new(false),
            stale_handed_out: AtomicBool::new(false),
        }
    }

    /// The node for `name` in `launch`'s overlay. Lock-free: nodes are only
    /// ever appended within a launch and never freed.
    fn find(&self, launch: u64, name: &[u8]) -> Option<&Var> {
        if self.launch.load(Acquire) != launch {
            return None;
        }
        let mut p = self.first.load(Acquire);
        // SAFETY: every pointer in the list is a node from `Var::new`,
        // published with Release after it was written and never freed.
        while let Some(var) = unsafe { p.as_ref() } {
            if var.name() == name {
                return Some(var);
            }
            p = var.next.load(Acquire);
        }
        None
    }

    /// Under the lock: start `launch`'s overlay empty if the list is an
    /// earlier launch's (its nodes are left behind, like its host list).
    fn enter(&self, held: &Held<'_>, launch: u64) {
        if self.launch.load(Relaxed) != launch {
            self.first.store(core::ptr::null_mut(), Relaxed);
            self.last.store(core::ptr::null_mut(), Relaxed);
            self.len.store(0, Relaxed);
            self.changed(held);
            self.launch.store(launch, Release);
        }
    }

    /// Under the lock. A plain store, not `fetch_add`: NVPTX emits atomic
    /// adds relaxed whatever the ordering (see `hostcall::SysWord`).
    fn changed(&self, _held: &Held<'_>) {
        self.changes.store(self.changes.load(Relaxed).wrapping_add(1), Release);
    }

    /// What the overlay of `launch` holds for `name`.
    pub fn get(&self, launch: u64, name: &[u8]) -> Overlaid {
        match self.find(launch, name) {
            None => Overlaid::NotHere,
            Some(var) => {
                let entry = var.entry.load(Acquire);
                if entry.is_null() {
                    Overlaid::Unset
                } else {
                    // SAFETY: `entry` is `NAME=value\0` with `NAME` this
                    // node's name, so the value starts `name_len + 1` in.
                    Overlaid::Value(unsafe { entry.add(var.name_len + 1) })
                }
            }
        }
    }

    /// `setenv(name, value, overwrite)` in `launch`. `host_has` says whether
    /// the host has `name` (asked only when `overwrite` is false and the
    /// overlay does not know the name).
    pub fn set(
        &self,
        launch: u64,
        name: &[u8],
        value: &[u8],
        overwrite: bool,
        host_has: impl Fn(&[u8]) -> Result<bool, Errno>,
    ) -> Result<(), Errno> {
        check_name(name)?;
        let entry = new_entry(name, value)?;
        let result = self.change(launch, name, entry, overwrite, host_has);
        if !matches!(result, Ok(true)) {
            // SAFETY: `entry` is ours and was not published.
            unsafe { heap::free(entry.cast()) };
        }
        result.map(drop)
    }

    /// `unsetenv(name)` in `launch`: a tombstone, so that the host's value
    /// is hidden too.
    pub fn unset(&self, launch: u64, name: &[u8]) -> Result<(), Errno> {
        check_name(name)?;
        self.change(launch, name, core::ptr::null_mut(), true, |_| Ok(false)).map(drop)
    }

    /// Point `name` at `entry` (null: unset) unless `overwrite` is false and
    /// it is set. Returns whether `entry` was published. Nodes are
    /// allocated before the lock is taken, the host asked before it too.
    fn change(
        &self,
        launch: u64,
        name: &[u8],
        entry: *mut c_char,
        overwrite: bool,
        host_has: impl Fn(&[u8]) -> Result<bool, Errno>,
    ) -> Result<bool, Errno> {
        let mut spare: *mut Var = core::ptr::null_mut();
        let mut on_host = None;
        let result = loop {
            if self.find(launch, name).is_none() {
                if spare.is_null() {
                    match Var::new(name) {
                        Ok(p) => spare = p,
                        Err(e) => break Err(e),
                    }
                }
                if !overwrite && on_host.is_none() {
                    match host_has(name) {
                        Ok(has) => on_host = Some(has),
                        Err(e) => break Err(e),
                    }
                }
            }
            let held = self.lock.lock();
            self.enter(&held, launch);
            if let Some(var) = self.find(launch, name) {
                if !overwrite && !var.entry.load(Relaxed).is_null() {
                    break Ok(false);
                }
                // The old value block is left as it is: see the module docs.
                var.entry.store(entry, Release);
                self.changed(&held);
                break Ok(true);
            }
            let (Some(node), Some(on_host)) = (
                // SAFETY: `spare` is null or our unlinked node from `Var::new`.
                unsafe { spare.as_ref() },
                if overwrite { Some(false) } else { on_host },
            ) else {
                // A new launch emptied the list since the look-up above.
                continue;
            };
            if on_host {
                break Ok(false);
            }
            node.entry.store(entry, Relaxed);
            // SAFETY: `last` is null or a linked node, never freed.
            match unsafe { self.last.load(Relaxed).as_ref() } {
                Some(last) => last.next.store(spare, Release),
                None => self.first.store(spare, Release),
            }
            self.last.store(spare, Relaxed);
            self.len.store(self.len.load(Relaxed).saturating_add(1), Release);
            spare = core::ptr::null_mut();
            self.changed(&held);
            break Ok(true);
        };
        // SAFETY: `spare` is null or our node, never linked.
        unsafe { heap::free(spare.cast()) };
        result
    }

    /// The address of `launch`'s `environ` variable, first bringing the
    /// view up to date if the overlay changed since it was built. `host`
    /// gives the host's list (it may fetch it by hostcalls, so it is called
    /// outside the lock). Out of memory keeps the previous view; the next
    /// call tries again.
    pub fn environ(&self, launch: u64, host: impl FnOnce() -> &'static [*const c_char]) -> *mut *const *const c_char {
        let address = self.view.as_ptr().cast::<*const *const c_char>();
        if self.launch.load(Acquire) == launch && self.view_of.load(Acquire) == self.changes.load(Acquire) {
            return address;
        }
        let host = host();
        let slot = core::mem::size_of::<*const c_char>();
        loop {
            let len = self.len.load(Acquire);
            // Room for every host entry, every overlaid name, and the NULL.
            let slots = host.len().saturating_add(len).saturating_add(1);
            let array = match len {
                0 => core::ptr::null_mut(),
                _ => heap::alloc(slots.saturating_mul(slot), core::mem::align_of::<*const c_char>()),
            };
            let held = self.lock.lock();
            self.enter(&held, launch);
            let changes = self.changes.load(Relaxed);
            let now_len = self.len.load(Relaxed);
            let (view, owned, unused) = if self.view_of.load(Relaxed) == changes {
                // Another thread built it meanwhile.
                (None, false, array)
            } else if now_len > len {
                // Names were added meanwhile: size the array again.
                drop(held);
                // SAFETY: `array` is null or ours, never published.
                unsafe { heap::free(array.cast()) };
                continue;
            } else if now_len == 0 {
                let hosts = if host.is_empty() { EMPTY } else { host.as_ptr().cast_mut() };
                (Some(hosts), false, array)
            } else if array.is_null() {
                // Out of memory: the old view again (see `stale_handed_out`).
                self.stale_handed_out.store(true, Relaxed);
                (None, false, array)
            } else {
                // SAFETY: `array` is a fresh block of `slots` pointers.
                let out = unsafe { core::slice::from_raw_parts_mut(array.cast::<*const c_char>(), slots) };
                self.fill(launch, out, host);
                (Some(out.as_mut_ptr()), true, core::ptr::null_mut())
            };
            let old = view.map(|view| {
                let old = self.view.swap(view, Relaxed);
                let old_owned = self.view_owned.swap(owned, Relaxed);
                // An array handed out stale may still be read: keep it.
                let still_read = self.stale_handed_out.swap(false, Relaxed);
                self.view_of.store(changes, Release);
                (old, old_owned && !still_read)
            });
            drop(held);
            // SAFETY: `unused` is null or ours, never published.
            unsafe { heap::free(unused.cast()) };
            if let Some((old, true)) = old {
                // SAFETY: a block we allocated for an earlier view and just
                // unpublished; see the module docs for who may still read it.
                unsafe { heap::free(old.cast()) };
            }
            return address;
        }
    }

    /// Under the lock: write the host's entries with the overlay applied,
    /// then the overlay's own names, then NULL, into `out`, which has a
    /// slot for every host entry and every node plus one.
    fn fill(&self, launch: u64, out: &mut [*const c_char], host: &[*const c_char]) {
        let mut n = 0;
        let mut push = |entry: *const c_char| {
            // The last slot is kept for the NULL.
            if n + 1 < out.len() {
                if let Some(slot) = out.get_mut(n) {
                    *slot = entry;
                    n += 1;
                }
            }
        };
        for &entry in host {
            match self.find(launch, entry_name(entry)) {
                None => push(entry),
                Some(var) => {
                    let overlaid = var.entry.load(Acquire);
                    if !overlaid.is_null() {
                        push(overlaid);
                    }
                }
            }
        }
        let mut p = self.first.load(Acquire);
        // SAFETY: as in `find`.
        while let Some(var) = unsafe { p.as_ref() } {
            let entry = var.entry.load(Acquire);
            if !entry.is_null() && !host.iter().any(|&h| entry_name(h) == var.name()) {
                push(entry);
            }
            p = var.next.load(Acquire);
        }
        if let Some(slot) = out.get_mut(n) {
            *slot = core::ptr::null();
        }
    }
}

/// POSIX: a name is not empty and has no `=`.
fn check_name(name: &[u8]) -> Result<(), Errno> {
    if name.is_empty() || name.contains(&b'=') {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// The process-wide overlay, publishing into `environ`.
static ENV: Overlay = Overlay::new(&environ);

/// The address of this launch's `environ`, up to date; `host` gives the
/// host's list. What `hostlist::__hostcall_environ` returns.
pub fn environ_view(host: impl FnOnce() -> &'static [*const c_char]) -> *mut *const *const c_char {
    ENV.environ(arch::launch_id(), host)
}

/// The bytes of the C string `s`; null is EINVAL (glibc's `setenv` answer).
///
/// # Safety
/// `s` is null or a NUL-terminated string.
unsafe fn c_bytes<'a>(s: *const c_char) -> Result<&'a [u8], Errno> {
    if s.is_null() {
        return Err(Errno::EINVAL);
    }
    // SAFETY: the caller's contract.
    Ok(unsafe { CStr::from_ptr(s) }.to_bytes())
}

/// The value of `name`: the overlay's, else the host's. A value from the
/// overlay stays valid for the rest of the launch (see the module docs); so
/// does the host's, a fresh block each call.
///
/// # Safety
/// `name` is null or a C string.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn getenv(name: *const c_char) -> *mut c_char {
    // SAFETY: C contract.
    let Ok(name) = (unsafe { c_bytes(name) }) else { return core::ptr::null_mut() };
    match ENV.get(arch::launch_id(), name) {
        Overlaid::Value(value) => value,
        Overlaid::Unset => core::ptr::null_mut(),
        // Unset (ENOENT), unreachable, too long or out of memory: all read
        // as "not set", the only failure `getenv` has.
        Overlaid::NotHere => getenv_bytes(name).unwrap_or(core::ptr::null_mut()),
    }
}

/// `setenv`: in the device overlay; the host's environment is not changed.
///
/// # Safety
/// `name` and `value` are null or C strings.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn setenv(name: *const c_char, value: *const c_char, overwrite: c_int) -> c_int {
    let set = || {
        // SAFETY: C contract.
        let name = unsafe { c_bytes(name) }?;
        // SAFETY: C contract.
        let value = unsafe { c_bytes(value) }?;
        ENV.set(arch::launch_id(), name, value, overwrite != 0, host_has).map(|()| 0)
    };
    c_ret(set())
}

/// `unsetenv`: hides `name` in the device overlay, the host's too.
///
/// # Safety
/// `name` is null or a C string.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn unsetenv(name: *const c_char) -> c_int {
    // SAFETY: C contract.
    c_ret(unsafe { c_bytes(name) }.and_then(|name| ENV.unset(arch::launch_id(), name)).map(|()| 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostlist::build_argv;

    const LAUNCH: u64 = 1;

    /// A fresh overlay with its own `environ` variable.
    fn overlay() -> Overlay {
        Overlay::new(Box::leak(Box::new(AtomicPtr::new(EMPTY))))
    }

    /// A host environment: a lookup and the `environ` list.
    struct Host(&'static [&'static str]);

    impl Host {
        fn has(&self) -> impl Fn(&[u8]) -> Result<bool, Errno> + '_ {
            |name| Ok(self.0.iter().any(|e| e.as_bytes().split(|&b| b == b'=').next() == Some(name)))
        }

        fn list(&self) -> &'static [*const c_char] {
            let list = self.0;
            let (count, array) = build_argv(256, move |i, buf| {
                let entry = list.get(i as usize).ok_or(Errno::ENOENT)?;
                buf[..entry.len()].copy_from_slice(entry.as_bytes());
                Ok(entry.len())
            });
            if array.is_null() {
                return &[];
            }
            // SAFETY: build_argv returned `count` entries, never freed.
            unsafe { core::slice::from_raw_parts(array, count) }
        }
    }

    fn value(o: &Overlay, name: &str) -> Option<String> {
        match o.get(LAUNCH, name.as_bytes()) {
            // SAFETY: overlay values are NUL-terminated and never freed.
            Overlaid::Value(p) => Some(unsafe { CStr::from_ptr(p) }.to_str().expect("utf-8").to_owned()),
            _ => None,
        }
    }

    /// `environ` as strings, checking that it ends in NULL.
    fn listed(o: &Overlay, host: &Host) -> Vec<String> {
        let address = o.environ(LAUNCH, || host.list());
        // SAFETY: `environ` returns the address of its view variable...
        let mut p = unsafe { *address };
        let mut out = Vec::new();
        // SAFETY: ...which points at a NULL-terminated array of C strings.
        while let Some(&entry) = unsafe { p.as_ref() } {
            if entry.is_null() {
                break;
            }
            // SAFETY: as above.
            out.push(unsafe { CStr::from_ptr(entry) }.to_str().expect("utf-8").to_owned());
            // SAFETY: not past the NULL yet.
            p = unsafe { p.add(1) };
        }
        out
    }

    #[test]
    fn a_set_variable_is_read_back_and_replaces_the_hosts() {
        let o = overlay();
        let host = Host(&["HOME=/host"]);
        assert_eq!(o.get(LAUNCH, b"HOME"), Overlaid::NotHere);
        o.set(LAUNCH, b"HOME", b"/gpu", true, host.has()).unwrap();
        o.set(LAUNCH, b"NEW", b"", true, host.has()).unwrap();
        assert_eq!(value(&o, "HOME").as_deref(), Some("/gpu"));
        assert_eq!(value(&o, "NEW").as_deref(), Some(""));
    }

    #[test]
    fn a_value_getenv_returned_stays_readable_after_it_is_replaced() {
        let o = overlay();
        let host = Host(&[]);
        o.set(LAUNCH, b"V", b"first", true, host.has()).unwrap();
        let Overlaid::Value(first) = o.get(LAUNCH, b"V") else { panic!("V is set") };
        o.set(LAUNCH, b"V", b"second", true, host.has()).unwrap();
        o.unset(LAUNCH, b"V").unwrap();
        // SAFETY: old values are never freed.
        assert_eq!(unsafe { CStr::from_ptr(first) }, c"first");
    }

    #[test]
    fn overwrite_zero_keeps_an_existing_value_and_sets_a_missing_one() {
        let o = overlay();
        let host = Host(&["HOSTVAR=host"]);
        o.set(LAUNCH, b"HOSTVAR", b"gpu", false, host.has()).unwrap();
        assert_eq!(o.get(LAUNCH, b"HOSTVAR"), Overlaid::NotHere, "the host's value stands");
        o.set(LAUNCH, b"MINE", b"one", false, host.has()).unwrap();
        o.set(LAUNCH, b"MINE", b"two", false, host.has()).unwrap();
        assert_eq!(value(&o, "MINE").as_deref(), Some("one"));
        o.unset(LAUNCH, b"HOSTVAR").unwrap();
        o.set(LAUNCH, b"HOSTVAR", b"after unset", false, host.has()).unwrap();
        assert_eq!(value(&o, "HOSTVAR").as_deref(), Some("after unset"));
        assert_eq!(listed(&o, &host), ["HOSTVAR=after unset", "MINE=one"]);
    }

    #[test]
    fn unsetenv_hides_a_host_variable_and_a_set_one() {
        let o = overlay();
        let host = Host(&["A=1", "B=2"]);
        o.unset(LAUNCH, b"A").unwrap();
        o.set(LAUNCH, b"C", b"3", true, host.has()).unwrap();
        o.unset(LAUNCH, b"C").unwrap();
        o.unset(LAUNCH, b"NEVER_SET").unwrap();
        assert_eq!(o.get(LAUNCH, b"A"), Overlaid::Unset);
        assert_eq!(o.get(LAUNCH, b"C"), Overlaid::Unset);
        assert_eq!(o.get(LAUNCH, b"B"), Overlaid::NotHere);
        assert_eq!(listed(&o, &host), ["B=2"]);
    }

    #[test]
    fn environ_lists_each_name_once_with_the_overlay_applied() {
        let o = overlay();
        let host = Host(&["A=1", "B=2", "C=3", "EMPTY="]);
        assert_eq!(listed(&o, &host), ["A=1", "B=2", "C=3", "EMPTY="], "untouched: the host's list");
        o.set(LAUNCH, b"B", b"20", true, host.has()).unwrap();
        o.unset(LAUNCH, b"C").unwrap();
        o.set(LAUNCH, b"D", b"4", true, host.has()).unwrap();
        o.set(LAUNCH, b"B", b"21", true, host.has()).unwrap();
        o.set(LAUNCH, b"E", b"5=five", true, host.has()).unwrap();
        assert_eq!(listed(&o, &host), ["A=1", "B=21", "EMPTY=", "D=4", "E=5=five"]);
        // No change: the same array, not a rebuilt one.
        let before = o.view.load(Relaxed);
        assert_eq!(listed(&o, &host).len(), 5);
        assert_eq!(o.view.load(Relaxed), before);
        o.set(LAUNCH, b"D", b"40", true, host.has()).unwrap();
        o.unset(LAUNCH, b"E").unwrap();
        assert_eq!(listed(&o, &host), ["A=1", "B=21", "EMPTY=", "D=40"]);
    }

    #[test]
    fn an_empty_environment_is_an_empty_list_not_null() {
        let o = overlay();
        let host = Host(&[]);
        assert_eq!(listed(&o, &host), Vec::<String>::new());
        // SAFETY: the address of the view variable.
        assert!(!unsafe { *o.environ(LAUNCH, || host.list()) }.is_null());
        o.set(LAUNCH, b"ONLY", b"me", true, host.has()).unwrap();
        assert_eq!(listed(&o, &host), ["ONLY=me"]);
    }

    #[test]
    fn a_new_launch_starts_from_the_hosts_environment() {
        let o = overlay();
        let host = Host(&["A=1"]);
        o.set(LAUNCH, b"A", b"changed", true, host.has()).unwrap();
        o.set(LAUNCH, b"B", b"2", true, host.has()).unwrap();
        assert_eq!(listed(&o, &host), ["A=changed", "B=2"]);
        assert_eq!(o.get(LAUNCH + 1, b"A"), Overlaid::NotHere);
        // SAFETY: as in `listed`: the view is NULL-terminated.
        let first = unsafe { **o.environ(LAUNCH + 1, || host.list()) };
        // SAFETY: the host's entry, a C string.
        assert_eq!(unsafe { CStr::from_ptr(first) }, c"A=1");
        o.set(LAUNCH + 1, b"C", b"3", true, host.has()).unwrap();
        assert_eq!(o.get(LAUNCH + 1, b"B"), Overlaid::NotHere);
        assert!(matches!(o.get(LAUNCH + 1, b"C"), Overlaid::Value(_)));
    }

    #[test]
    fn an_empty_name_or_one_with_an_equals_sign_is_einval() {
        let o = overlay();
        let host = Host(&[]);
        for name in [&b""[..], b"A=B", b"="] {
            assert_eq!(o.set(LAUNCH, name, b"v", true, host.has()), Err(Errno::EINVAL));
            assert_eq!(o.unset(LAUNCH, name), Err(Errno::EINVAL));
        }
        assert_eq!(listed(&o, &host), Vec::<String>::new());
        // The C edge: -1 (errno is EINVAL, but the host stand-in gives
        // every test thread the same errno slot, so it is not checked here).
        // SAFETY: C strings or null, as the functions take.
        unsafe {
            assert_eq!(setenv(c"".as_ptr(), c"v".as_ptr(), 1), -1);
            assert_eq!(setenv(c"A=B".as_ptr(), c"v".as_ptr(), 1), -1);
            assert_eq!(setenv(core::ptr::null(), c"v".as_ptr(), 1), -1);
            assert_eq!(setenv(c"NAME".as_ptr(), core::ptr::null(), 1), -1);
            assert_eq!(unsetenv(c"".as_ptr()), -1);
            assert_eq!(unsetenv(c"A=B".as_ptr()), -1);
            assert_eq!(unsetenv(core::ptr::null()), -1);
            assert!(getenv(core::ptr::null()).is_null());
        }
    }

    #[test]
    fn a_failed_host_look_up_fails_setenv_without_a_change() {
        let o = overlay();
        assert_eq!(o.set(LAUNCH, b"X", b"v", false, |_| Err(Errno::ENOMEM)), Err(Errno::ENOMEM));
        assert_eq!(o.get(LAUNCH, b"X"), Overlaid::NotHere);
    }

    #[test]
    fn concurrent_setenv_and_getenv_see_whole_values() {
        static HOST: Host = Host(&["SHARED=host"]);
        let o: &'static Overlay = Box::leak(Box::new(overlay()));
        let values: Vec<String> =
            (0..4).map(|w| char::from(b'a' + w).to_string().repeat(40 + 10 * w as usize)).collect();
        let values: &'static [String] = values.leak();
        // Few rounds under Miri, which checks them for data races. There
        // the writers also take turns: two threads in `heap::alloc` at once
        // trip Miri's race detector inside the heap's free lists (an atomic
        // read of a popped block's link against its new owner's write),
        // which is the heap's to answer, not this test's; the readers still
        // race the writers.
        let rounds = if cfg!(miri) { 40 } else { 2000 };
        static TURNS: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let turn = || cfg!(miri).then(|| TURNS.lock().unwrap());
        std::thread::scope(|s| {
            for (w, v) in values.iter().enumerate() {
                s.spawn(move || {
                    for i in 0..rounds {
                        let name = format!("W{w}_{}", i % 16);
                        let held = turn();
                        o.set(LAUNCH, b"SHARED", v.as_bytes(), true, HOST.has()).unwrap();
                        o.set(LAUNCH, name.as_bytes(), v.as_bytes(), i % 2 == 0, HOST.has()).unwrap();
                        if i % 7 == 0 {
                            o.unset(LAUNCH, b"SHARED").unwrap();
                        }
                        drop(held);
                    }
                });
            }
            for _ in 0..4 {
                s.spawn(move || {
                    for _ in 0..2 * rounds {
                        match o.get(LAUNCH, b"SHARED") {
                            Overlaid::Value(p) => {
                                // SAFETY: overlay values are never freed.
                                let seen = unsafe { CStr::from_ptr(p) }.to_str().unwrap();
                                assert!(values.iter().any(|v| v == seen), "torn value {seen:?}");
                            }
                            Overlaid::Unset | Overlaid::NotHere => {}
                        }
                    }
                });
            }
        });
        let list = listed(o, &HOST);
        let mut names: Vec<&str> = list.iter().map(|e| e.split('=').next().unwrap()).collect();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count, "a name listed twice: {list:?}");
        assert_eq!(count, 4 * 16 + 1, "{list:?}");
        for (w, v) in values.iter().enumerate() {
            for k in 0..16 {
                assert_eq!(value(o, &format!("W{w}_{k}")).as_deref(), Some(v.as_str()));
            }
        }
    }
}
