//! The memory/atomics facade the protocol is written against.
//!
//! Shared memory is always seen as a slice of 64-bit words. On the GPU a word
//! is a `core::sync::atomic::AtomicU64` over mapped host memory or device
//! memory; on CPU threads the same type over a `Vec`; under loom, loom's own
//! `AtomicU64` (the loom tests implement [`Word`] for it).

use core::sync::atomic::{AtomicU64, Ordering};

/// One 64-bit shared word.
pub trait Word: Sync + Sized {
    fn load(&self, order: Ordering) -> u64;
    fn store(&self, value: u64, order: Ordering);
    fn fetch_add(&self, value: u64, order: Ordering) -> u64;
    fn fetch_max(&self, value: u64, order: Ordering) -> u64;

    /// Two relaxed loads of adjacent words, `pair[0]` 16-byte aligned. Each
    /// word is read atomically, the pair need not be (the GPU issues one
    /// 16-byte load: one bus transaction instead of two).
    #[inline(always)]
    fn load_pair(pair: &[Self; 2]) -> [u64; 2] {
        [pair[0].load(Ordering::Relaxed), pair[1].load(Ordering::Relaxed)]
    }

    /// A fence of the memory the words live in (on the GPU a `.sys` fence:
    /// the other side is the host).
    #[inline(always)]
    fn fence(order: Ordering) {
        core::sync::atomic::fence(order)
    }

    /// Two relaxed stores of adjacent words, as [`Word::load_pair`].
    #[inline(always)]
    fn store_pair(pair: &[Self; 2], value: [u64; 2]) {
        pair[0].store(value[0], Ordering::Relaxed);
        pair[1].store(value[1], Ordering::Relaxed);
    }
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
    fn fetch_max(&self, value: u64, order: Ordering) -> u64 {
        AtomicU64::fetch_max(self, value, order)
    }
}

/// The two adjacent words at `i` and `i + 1` of `words`.
#[inline(always)]
pub fn pair<W: Word>(words: &[W], i: usize) -> &[W; 2] {
    words[i..i + 2].try_into().expect("a two-word slice")
}

/// What the calling side provides besides memory: how to wait, who the
/// calling thread is, its warp, and the fences of its memory model.
///
/// The warp operations default to a warp of one lane (every CPU thread, and
/// loom's); the GPU overrides them with the PTX warp instructions, so the
/// same client code batches the calls of a whole warp into one record.
pub trait Platform {
    /// Back off before retrying; `round` counts the retries of this wait
    /// (0, 1, 2, ...), so implementations can grow the pause.
    fn backoff(round: u32);

    /// This thread's reply slot: its index in the launch (the global thread
    /// id on the GPU), unique among the threads that may call at once.
    fn slot() -> u32;

    /// This thread's lane in its warp.
    #[inline(always)]
    fn lane() -> u32 {
        0
    }
    /// The lanes of this warp executing this call together (this lane's
    /// bit always set).
    #[inline(always)]
    fn active_lanes() -> u32 {
        1 << Self::lane()
    }
    /// The lanes of `mask` whose `key` equals this lane's (all of `mask`
    /// take part).
    #[inline(always)]
    fn match_lanes(_mask: u32, _key: u32) -> u32 {
        1 << Self::lane()
    }
    /// `value` of lane `src` (all of `mask` take part, `src` among them).
    #[inline(always)]
    fn shuffle(_mask: u32, value: u64, _src: u32) -> u64 {
        value
    }
    /// The lanes of `mask` whose `pred` holds.
    #[inline(always)]
    fn ballot(_mask: u32, pred: bool) -> u32 {
        (pred as u32) << Self::lane()
    }
    /// Wait for the lanes of `mask`; their memory accesses before it happen
    /// before every lane's accesses after it.
    #[inline(always)]
    fn sync_lanes(_mask: u32) {}

    /// Runs on every lane of a record once its stores are made (the
    /// header's last): the GPU pushes them out with `fence.sc.sys`, which
    /// gets the reply back sooner than leaving them to drain
    /// (docs/protocol.md; `hostcall-bench` measures the choices through this
    /// hook). Nothing on CPU threads, whose stores are visible as soon as
    /// they are made.
    #[inline(always)]
    fn after_publish() {}
}
