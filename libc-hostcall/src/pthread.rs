//! `<pthread.h>`: thread-specific data, which is how std keeps its
//! `thread_local!`s on a target without TLS.
//!
//! Keys come from a global table (`MAX_KEYS`, key 0 is never handed out since
//! std treats it as "none"). Each thread's values live in a heap block found
//! through a per-thread pointer indexed by global thread id; the block is
//! stamped with `%gridid`, so a later launch's thread with the same id starts
//! from empty values instead of seeing the last launch's. Destructors are
//! recorded but never run: GPU threads have no exit hook.

use core::ffi::{c_int, c_void};
use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use core::sync::atomic::{AtomicPtr, AtomicU64};

use hostcall_abi::Errno;

use crate::errno::{thread_index, MAX_THREADS};
use crate::{arch, heap};

pub const MAX_KEYS: usize = 64;

/// Bit `i` set: key `i + 1` is in use. One word rather than an array of
/// flags: a byte-wide CAS loop over 64 flags unrolls into thousands of PTX
/// lines (nvptx emulates sub-word CAS).
static KEY_USED: AtomicU64 = AtomicU64::new(0);
const _: () = assert!(MAX_KEYS == 64);

/// One thread's values, in the heap.
struct Values {
    launch: AtomicU64,
    slots: [AtomicPtr<c_void>; MAX_KEYS],
}

static THREAD_VALUES: [AtomicPtr<Values>; MAX_THREADS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_THREADS];

/// How long `pthread_key_create` waits for a key to come free before it
/// reports `EAGAIN`.
const KEY_WAIT_NS: u64 = 50_000_000;

/// Take a free key; keys are `index + 1`.
///
/// std creates its TLS keys lazily, and every thread that finds a key not
/// yet created makes one, races to publish it, and deletes it if it lost: a
/// launch of 16,000 threads makes 16,000 keys at once for a moment. So when
/// all keys are taken this waits (they come back within microseconds)
/// instead of failing at once, which std turns into "out of TLS keys".
pub fn key_create() -> Result<u32, Errno> {
    let mut cur = KEY_USED.load(Acquire);
    let mut waited_since = None;
    let mut round = 0u32;
    loop {
        if cur == u64::MAX {
            let now = arch::global_timer_ns();
            let since = *waited_since.get_or_insert(now);
            if now.saturating_sub(since) > KEY_WAIT_NS {
                return Err(Errno::EAGAIN);
            }
            arch::nanosleep(100u32 << round.min(6));
            round = round.saturating_add(1);
            cur = KEY_USED.load(Acquire);
            continue;
        }
        let i = (!cur).trailing_zeros();
        match KEY_USED.compare_exchange_weak(cur, cur | 1 << i, AcqRel, Acquire) {
            Ok(_) => return Ok(i + 1),
            Err(now) => cur = now,
        }
    }
}

fn key_index(key: u32) -> Option<usize> {
    let i = (key as usize).checked_sub(1).filter(|i| *i < MAX_KEYS)?;
    (KEY_USED.load(Acquire) & 1 << i != 0).then_some(i)
}

pub fn key_delete(key: u32) -> Result<(), Errno> {
    let i = key_index(key).ok_or(Errno::EINVAL)?;
    let mut cur = KEY_USED.load(Relaxed);
    while let Err(now) = KEY_USED.compare_exchange_weak(cur, cur & !(1 << i), AcqRel, Relaxed) {
        cur = now;
    }
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
        // SAFETY: fresh, zeroed (a valid all-null Values), owned by us.
        unsafe { &*p }.launch.store(launch, Relaxed);
    }
    // SAFETY: only this thread (one global id) ever stores to `slot`, and
    // the block is never freed.
    let v = unsafe { &*p };
    if v.launch.load(Relaxed) != launch {
        if !create {
            return None;
        }
        v.slots.iter().for_each(|s| s.store(core::ptr::null_mut(), Relaxed));
        v.launch.store(launch, Relaxed);
    }
    Some(v)
}

pub fn get_specific(key: u32) -> *mut c_void {
    let Some(i) = key_index(key) else {
        return core::ptr::null_mut();
    };
    values(false).and_then(|v| v.slots.get(i)).map_or(core::ptr::null_mut(), |s| s.load(Relaxed))
}

pub fn set_specific(key: u32, value: *const c_void) -> Result<(), Errno> {
    let i = key_index(key).ok_or(Errno::EINVAL)?;
    let v = values(true).ok_or(Errno::ENOMEM)?;
    v.slots.get(i).ok_or(Errno::EINVAL)?.store(value.cast_mut(), Relaxed);
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
        while KEY_USED.load(Acquire) != u64::MAX {
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
}
