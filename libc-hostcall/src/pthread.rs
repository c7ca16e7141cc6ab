//! `<pthread.h>`: thread-specific data, which is how std keeps its
//! `thread_local!`s on a target without TLS.
//!
//! Keys come from a bitmap of [`MAX_KEYS`] (key 0 is never handed out: std
//! treats it as "none"). The key space is large on purpose: std creates its
//! keys lazily, and every thread that finds one not yet created makes a key,
//! races to publish it and deletes it if it lost, so a launch of 16,000
//! threads holds 16,000 keys for a moment. Each thread starts its search at
//! its own bitmap word, so the storm does not contend on one word. Every
//! creation bumps the key's generation, so a value a thread stored under a
//! deleted key is never seen under the key's next incarnation.
//!
//! Each thread's values live in small tables in the heap
//! ([`VALUES_PER_THREAD`] entries each, chained when a thread holds more;
//! std itself uses a handful), found through a per-thread pointer indexed by
//! global thread id and stamped with `%gridid`, so a later launch's thread
//! with the same id starts empty.
//! Destructors are recorded but never run: GPU threads have no exit hook.

use core::ffi::{c_int, c_void};
use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64};

use hostcall_abi::Errno;

use crate::errno::{thread_index, MAX_THREADS};
use crate::{arch, heap};

/// Keys that can exist at once.
pub const MAX_KEYS: usize = 1 << 16;
const KEY_WORDS: usize = MAX_KEYS / 64;
/// Entries of one table of a thread's values (more tables are chained).
pub const VALUES_PER_THREAD: usize = 16;

/// Bit `i % 64` of word `i / 64` set: key `i + 1` is in use.
static KEY_USED: [AtomicU64; KEY_WORDS] = [const { AtomicU64::new(0) }; KEY_WORDS];
/// Bumped each time key `i + 1` is created.
static KEY_GEN: [AtomicU32; MAX_KEYS] = [const { AtomicU32::new(0) }; MAX_KEYS];

/// One thread's values, in the heap. An entry is live when its key and
/// generation match a live key; only the owning thread touches its table.
struct Values {
    launch: AtomicU64,
    keys: [AtomicU32; VALUES_PER_THREAD],
    gens: [AtomicU32; VALUES_PER_THREAD],
    values: [AtomicPtr<c_void>; VALUES_PER_THREAD],
    /// The next table, when this one filled up.
    next: AtomicPtr<Values>,
}

impl Values {
    /// This table and the ones chained after it.
    fn chain(&self) -> impl Iterator<Item = &Values> {
        // SAFETY: tables are zeroed when made, linked once, never freed, and
        // only their owning thread touches them.
        core::iter::successors(Some(self), |v| unsafe { v.next.load(Relaxed).as_ref() })
    }
}

fn new_table() -> Option<&'static Values> {
    let p: *mut Values = heap::alloc_zeroed(core::mem::size_of::<Values>(), core::mem::align_of::<Values>()).cast();
    // SAFETY: null or a fresh zeroed block (a valid empty table), never freed.
    unsafe { p.as_ref() }
}

static THREAD_VALUES: [AtomicPtr<Values>; MAX_THREADS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_THREADS];

/// How long `pthread_key_create` waits for a key to come free before it
/// reports `EAGAIN`.
const KEY_WAIT_NS: u64 = 50_000_000;

/// Take a free key; keys are `index + 1`. When every key is taken this waits
/// a while (racing creators give theirs back within microseconds) before it
/// fails.
pub fn key_create() -> Result<u32, Errno> {
    let start = thread_index().wrapping_mul(7) % KEY_WORDS;
    let mut waited_since = None;
    let mut round = 0u32;
    loop {
        for k in 0..KEY_WORDS {
            let w = (start + k) % KEY_WORDS;
            let Some(word) = KEY_USED.get(w) else { continue };
            let mut cur = word.load(Acquire);
            while cur != u64::MAX {
                let bit = (!cur).trailing_zeros();
                match word.compare_exchange_weak(cur, cur | 1 << bit, AcqRel, Acquire) {
                    Ok(_) => {
                        let index = w * 64 + bit as usize;
                        if let Some(g) = KEY_GEN.get(index) {
                            g.fetch_add(1, AcqRel);
                        }
                        return Ok(index as u32 + 1);
                    }
                    Err(now) => cur = now,
                }
            }
        }
        let now = arch::global_timer_ns();
        if now.saturating_sub(*waited_since.get_or_insert(now)) > KEY_WAIT_NS {
            return Err(Errno::EAGAIN);
        }
        arch::nanosleep(100u32 << round.min(6));
        round = round.saturating_add(1);
    }
}

/// `(index, generation)` of a live key.
fn key_index(key: u32) -> Option<(usize, u32)> {
    let i = (key as usize).checked_sub(1).filter(|i| *i < MAX_KEYS)?;
    let live = KEY_USED.get(i / 64)?.load(Acquire) & 1 << (i % 64) != 0;
    live.then(|| (i, KEY_GEN.get(i).map_or(0, |g| g.load(Acquire))))
}

pub fn key_delete(key: u32) -> Result<(), Errno> {
    let (i, _) = key_index(key).ok_or(Errno::EINVAL)?;
    let word = KEY_USED.get(i / 64).ok_or(Errno::EINVAL)?;
    word.fetch_and(!(1 << (i % 64)), AcqRel);
    Ok(())
}

/// This thread's values for this launch, created on first use when `create`.
fn values(create: bool) -> Option<&'static Values> {
    let slot = THREAD_VALUES.get(thread_index())?;
    let launch = arch::launch_id();
    let mut p = slot.load(Acquire);
    if p.is_null() {
        if !create {
            return None;
        }
        p = heap::alloc_zeroed(core::mem::size_of::<Values>(), core::mem::align_of::<Values>()).cast();
        if p.is_null() {
            return None;
        }
        slot.store(p, Release);
        // SAFETY: fresh, zeroed (a valid empty Values), owned by us.
        unsafe { &*p }.launch.store(launch, Relaxed);
    }
    // SAFETY: only this thread (one global id) ever stores to `slot`, and
    // the block is never freed.
    let v = unsafe { &*p };
    if v.launch.load(Relaxed) != launch {
        if !create {
            return None;
        }
        v.chain().for_each(|t| t.keys.iter().for_each(|k| k.store(0, Relaxed)));
        v.launch.store(launch, Relaxed);
    }
    Some(v)
}

/// The table and entry of `v`'s chain that holds `key` at generation `gen`.
fn entry(v: &Values, key: u32, gen: u32) -> Option<(&Values, usize)> {
    v.chain().find_map(|t| {
        (0..VALUES_PER_THREAD)
            .find(|&e| t.keys[e].load(Relaxed) == key && t.gens[e].load(Relaxed) == gen)
            .map(|e| (t, e))
    })
}

pub fn get_specific(key: u32) -> *mut c_void {
    let Some((_, gen)) = key_index(key) else {
        return core::ptr::null_mut();
    };
    values(false).and_then(|v| entry(v, key, gen).map(|(t, e)| t.values[e].load(Relaxed))).unwrap_or(core::ptr::null_mut())
}

pub fn set_specific(key: u32, value: *const c_void) -> Result<(), Errno> {
    let (_, gen) = key_index(key).ok_or(Errno::EINVAL)?;
    let v = values(true).ok_or(Errno::ENOMEM)?;
    let (t, e) = match entry(v, key, gen) {
        Some(found) => found,
        None => {
            if value.is_null() {
                return Ok(());
            }
            // A free entry, or one left by a key that is gone or recreated;
            // else a new table at the end of the chain.
            let free = v.chain().find_map(|t| {
                (0..VALUES_PER_THREAD)
                    .find(|&e| {
                        let k = t.keys[e].load(Relaxed);
                        k == 0 || key_index(k).is_none_or(|(_, g)| g != t.gens[e].load(Relaxed))
                    })
                    .map(|e| (t, e))
            });
            let (t, e) = match free {
                Some(found) => found,
                None => {
                    let last = v.chain().last().ok_or(Errno::ENOMEM)?;
                    let table = new_table().ok_or(Errno::ENOMEM)?;
                    last.next.store((table as *const Values).cast_mut(), Relaxed);
                    (table, 0)
                }
            };
            t.keys[e].store(key, Relaxed);
            t.gens[e].store(gen, Relaxed);
            (t, e)
        }
    };
    t.values[e].store(value.cast_mut(), Relaxed);
    Ok(())
}

fn code(r: Result<(), Errno>) -> c_int {
    r.map_or_else(|e| e.0 as c_int, |()| 0)
}

/// # Safety
/// `key` points to a writable `pthread_key_t`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn pthread_key_create(key: *mut u32, _dtor: Option<unsafe extern "C" fn(*mut c_void)>) -> c_int {
    code(key_create().and_then(|k| {
        // SAFETY: C contract.
        let out = unsafe { key.as_mut() }.ok_or(Errno::EINVAL)?;
        *out = k;
        Ok(())
    }))
}

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn pthread_key_delete(key: u32) -> c_int {
    code(key_delete(key))
}

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn pthread_getspecific(key: u32) -> *mut c_void {
    get_specific(key)
}

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn pthread_setspecific(key: u32, value: *const c_void) -> c_int {
    code(set_specific(key, value))
}

/// Thread attributes are accepted and ignored, so that std's
/// `thread::Builder::spawn` gets as far as `pthread_create`, which fails
/// with `ENOSYS` (`crate::unsupported`): `spawn` then returns an `Err` of
/// kind `Unsupported`, and `std::thread::spawn` panics with that error, as
/// std documents for a thread the system cannot start. (std asserts that
/// these three succeed.)
#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn pthread_attr_init(_attr: *mut c_void) -> c_int {
    0
}

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn pthread_attr_destroy(_attr: *mut c_void) -> c_int {
    0
}

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn pthread_attr_setstacksize(_attr: *mut c_void, _size: usize) -> c_int {
    0
}

/// The global thread id + 1 (never 0, which std may read as "no thread").
#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn pthread_self() -> usize {
    arch::global_thread_id() as usize + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys are global: tests that take them run one at a time.
    static KEYS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn keys_hold_values_and_are_reused() {
        let _serial = KEYS.lock().unwrap_or_else(|e| e.into_inner());
        let k = key_create().unwrap();
        assert_ne!(k, 0);
        assert!(get_specific(k).is_null());
        set_specific(k, 0x1234 as *const c_void).unwrap();
        assert_eq!(get_specific(k) as usize, 0x1234);
        key_delete(k).unwrap();
        assert_eq!(set_specific(k, core::ptr::null()), Err(Errno::EINVAL));
        assert_eq!(key_delete(k), Err(Errno::EINVAL));
        assert_eq!(set_specific(0, core::ptr::null()), Err(Errno::EINVAL));
    }

    #[test]
    fn exhausted_keys_wait_then_say_eagain() {
        let _serial = KEYS.lock().unwrap_or_else(|e| e.into_inner());
        // Take whatever is left, then one more.
        let mut taken = Vec::new();
        while KEY_USED.iter().any(|w| w.load(Acquire) != u64::MAX) {
            taken.push(key_create().unwrap());
        }
        assert_eq!(key_create(), Err(Errno::EAGAIN));
        let k = taken.pop().unwrap();
        key_delete(k).unwrap();
        assert_eq!(key_create(), Ok(k));
        taken.push(k);
        for k in taken {
            key_delete(k).unwrap();
        }
    }

    #[test]
    fn a_recreated_key_does_not_show_the_old_value() {
        let _serial = KEYS.lock().unwrap_or_else(|e| e.into_inner());
        let k = key_create().unwrap();
        set_specific(k, 0x10 as *const c_void).unwrap();
        key_delete(k).unwrap();
        let k2 = key_create().unwrap();
        assert_eq!(k2, k, "the freed key is handed out again");
        assert!(get_specific(k2).is_null());
        set_specific(k2, 0x20 as *const c_void).unwrap();
        assert_eq!(get_specific(k2) as usize, 0x20);
        key_delete(k2).unwrap();
    }

    #[test]
    fn a_thread_holds_values_past_one_table() {
        let _serial = KEYS.lock().unwrap_or_else(|e| e.into_inner());
        let n = 3 * VALUES_PER_THREAD + 1;
        let keys: Vec<u32> = (0..n).map(|_| key_create().unwrap()).collect();
        for (i, &k) in keys.iter().enumerate() {
            set_specific(k, (i + 1) as *const c_void).unwrap();
        }
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(get_specific(k) as usize, i + 1, "key {i} of {n}");
        }
        // Null needs no entry; deleting a key frees its entry for reuse.
        let extra = key_create().unwrap();
        set_specific(extra, core::ptr::null()).unwrap();
        key_delete(keys[0]).unwrap();
        set_specific(extra, 0x99 as *const c_void).unwrap();
        assert_eq!(get_specific(extra) as usize, 0x99);
        assert!(get_specific(keys[0]).is_null(), "a deleted key has no value");
        for k in keys.into_iter().skip(1).chain([extra]) {
            key_delete(k).unwrap();
        }
    }
}
