//! The memory/atomics facade the protocol is written against.
//!
//! Shared memory is always seen as a slice of 64-bit words. On the GPU a word
//! is a `core::sync::atomic::AtomicU64` over mapped host memory or device
//! memory; on CPU threads the same type over a `Vec`; under loom, loom's own
//! `AtomicU64` (the loom tests implement [`Word`] for it).

use core::sync::atomic::{AtomicU64, Ordering};

/// One 64-bit shared word.
pub trait Word: Sync {
    fn load(&self, order: Ordering) -> u64;
    fn store(&self, value: u64, order: Ordering);
    fn fetch_add(&self, value: u64, order: Ordering) -> u64;
    fn fetch_or(&self, value: u64, order: Ordering) -> u64;
    fn fetch_and(&self, value: u64, order: Ordering) -> u64;
    fn fetch_max(&self, value: u64, order: Ordering) -> u64;
}

impl Word for AtomicU64 {
    #[inline(always)]
    fn load(&self, order: Ordering) -> u64 {
        AtomicU64::load(self, order)
    }
    #[inline(always)]
    fn store(&self, value: u64, order: Ordering) {
        AtomicU64::store(self, value, order)
    }
    #[inline(always)]
    fn fetch_add(&self, value: u64, order: Ordering) -> u64 {
        AtomicU64::fetch_add(self, value, order)
    }
    #[inline(always)]
    fn fetch_or(&self, value: u64, order: Ordering) -> u64 {
        AtomicU64::fetch_or(self, value, order)
    }
    #[inline(always)]
    fn fetch_and(&self, value: u64, order: Ordering) -> u64 {
        AtomicU64::fetch_and(self, value, order)
    }
    #[inline(always)]
    fn fetch_max(&self, value: u64, order: Ordering) -> u64 {
        AtomicU64::fetch_max(self, value, order)
    }
}

/// What the calling side provides besides memory: how to wait, and a hint
/// for spreading threads over the slot bitmap.
pub trait Platform {
    /// Back off before retrying; `round` counts the retries of this wait
    /// (0, 1, 2, ...), so implementations can grow the pause.
    fn backoff(round: u32);
    /// A number that differs between concurrently calling threads (the
    /// global thread id on the GPU). Only used to spread contention.
    fn thread_hint() -> u32;
}
