//! The device end of the queue: the `__HOSTCALL_*` globals this library
//! defines for the host to patch, the GPU [`Platform`], and [`call`], the one
//! way every other module (and a `no_std` kernel) reaches the host.
//!
//! | symbol | type | written by |
//! |---|---|---|
//! | `__HOSTCALL_BUFF_PTR__`, `_BUFF_SIZE__`, `_CTRL_PTR__`, `_RETURN_SLOTS__`, `_RETURN_SLOT_COUNT__`, `_RETURN_DATA__`, `_RETURN_DATA_SIZE__`, `_SLOT_SEQ__` | `u64` | host, before launch |
//! | `__HOSTCALL_RINGS__`, `__HOSTCALL_RING_COUNTERS__`, `__HOSTCALL_RING_BUFF_SIZE__` | `u64` | host, before launch (several rings: `hostcall_abi::rings`) |
//! | `__HOSTCALL_BUFF_TOP__`, `__HOSTCALL_BUFF_RELEASED__` | `u64` | host zeroes before launch; then GPU atomics only |
//! | `__HOSTCALL__<name>` for each of `hostcall_abi::op::BUILTIN` and `echo` | `u64` | host: handler ID, 0 = not served |
//!
//! All are zero-initialised `#[no_mangle]` statics; the pipeline must keep
//! them externally visible so the host can find them by name.

use core::sync::atomic::{AtomicU64, Ordering};

use hostcall_abi::layout::{limits, rings, Geometry, LINE_BYTES, LINE_WORDS};
use hostcall_abi::sync::{Platform, Word};
use hostcall_abi::{Call, CallError, Completed, Errno, Queue};

use crate::arch;

/// A shared 64-bit word with system-scope ordering on every operation.
///
/// NVPTX lowers ordered loads and stores to `ld.acquire.sys`/`st.release.sys`
/// and compare-exchange to `atom.acq_rel.sys.cas`, but emits every other
/// read-modify-write (`atom.add`, `atom.or`, `atom.max`, ...) relaxed whatever
/// the ordering asked for (checked on the pinned nightly, sm_90). So those get
/// explicit fences on the side(s) the ordering names (see `rmw`).
#[repr(transparent)]
pub struct SysWord(AtomicU64);

impl SysWord {
    pub const fn new() -> Self {
        SysWord(AtomicU64::new(0))
    }

    /// The value the host patched in before launch. Read by an asm load
    /// (the read-only cache on the GPU, volatile on the host) so that an
    /// optimiser which sees no device store never folds it to the
    /// initialiser.
    #[inline]
    pub fn patched(&self) -> u64 {
        // SAFETY: the pointer is to a live, aligned u64 inside this static, a
        // global; the host writes it only before launch and the device never
        // (the globals read this way are never the target of `Word` ops).
        unsafe { arch::load_readonly(self.0.as_ptr()) }
    }

    /// A read-modify-write with `order`. The words these run on (the ticket
    /// counter and the `released` cache) live in device memory
    /// and are shared by GPU threads only, so GPU-scope fences order them;
    /// the host-facing orderings (publishing a command, reading a reply or
    /// `released`) are the `.sys` loads and stores above.
    #[inline(always)]
    fn rmw(&self, order: Ordering, op: impl FnOnce(&AtomicU64) -> u64) -> u64 {
        if matches!(order, Ordering::Release | Ordering::AcqRel | Ordering::SeqCst) {
            arch::fence_gpu();
        }
        let v = op(&self.0);
        if matches!(order, Ordering::Acquire | Ordering::AcqRel | Ordering::SeqCst) {
            arch::fence_gpu();
        }
        v
    }
}

impl Default for SysWord {
    fn default() -> Self {
        Self::new()
    }
}

impl Word for SysWord {
    #[inline(always)]
    fn load(&self, order: Ordering) -> u64 {
        self.0.load(order)
    }
    #[inline(always)]
    fn store(&self, value: u64, order: Ordering) {
        self.0.store(value, order)
    }
    #[inline(always)]
    fn fetch_add(&self, value: u64, order: Ordering) -> u64 {
        self.rmw(order, |a| a.fetch_add(value, Ordering::Relaxed))
    }
    #[inline(always)]
    fn fetch_max(&self, value: u64, order: Ordering) -> u64 {
        self.rmw(order, |a| a.fetch_max(value, Ordering::Relaxed))
    }
    /// The other side of every fence in the protocol is the host.
    #[inline(always)]
    fn fence(_order: Ordering) {
        arch::fence_sys();
    }
    #[cfg(target_arch = "nvptx64")]
    #[inline(always)]
    fn load_pair(pair: &[Self; 2]) -> [u64; 2] {
        debug_assert!(pair.as_ptr() as usize % 16 == 0);
        // SAFETY: two live words; the protocol only pairs words at even
        // indices of 16-byte aligned areas (layout.rs).
        unsafe { arch::load_pair(pair.as_ptr().cast()) }
    }
    #[cfg(target_arch = "nvptx64")]
    #[inline(always)]
    fn store_pair(pair: &[Self; 2], value: [u64; 2]) {
        debug_assert!(pair.as_ptr() as usize % 16 == 0);
        // SAFETY: as in `load_pair`; the words are atomics, so a store
        // through a shared reference is what they are for.
        unsafe { arch::store_pair(pair.as_ptr().cast_mut().cast(), value) }
    }
}

/// The ID global of one hostcall (`__HOSTCALL__<name>`): the host writes the
/// handler ID before launch, 0 means not served. A kernel that brings its own
/// host handler defines one with the same naming:
///
/// ```ignore
/// #[no_mangle]
/// static __HOSTCALL__my_op: HostcallId = HostcallId::new();
/// ```
#[repr(transparent)]
pub struct HostcallId(SysWord);

impl HostcallId {
    pub const fn new() -> Self {
        HostcallId(SysWord::new())
    }

    /// The handler ID; 0 when no handler is registered (or the global holds
    /// a value no host writes).
    pub fn get(&self) -> u32 {
        self.decode().map_or(0, |(id, _)| id)
    }

    /// The handler ID and whether the host serves it on any ring
    /// (`hostcall_abi::rings`); `None` when it is not served.
    #[inline(always)]
    pub fn decode(&self) -> Option<(u32, bool)> {
        rings::decode_id(self.0.patched())
    }
}

impl Default for HostcallId {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! config_globals {
    ($($name:ident),* $(,)?) => {
        $(
            #[no_mangle]
            #[allow(non_upper_case_globals)]
            pub static $name: SysWord = SysWord::new();
        )*
    };
}

config_globals!(
    __HOSTCALL_BUFF_PTR__,
    __HOSTCALL_BUFF_TOP__,
    __HOSTCALL_BUFF_SIZE__,
    __HOSTCALL_BUFF_RELEASED__,
    __HOSTCALL_CTRL_PTR__,
    __HOSTCALL_RETURN_SLOTS__,
    __HOSTCALL_RETURN_SLOT_COUNT__,
    __HOSTCALL_RETURN_DATA__,
    __HOSTCALL_RETURN_DATA_SIZE__,
    __HOSTCALL_SLOT_SEQ__,
    __HOSTCALL_RINGS__,
    __HOSTCALL_RING_COUNTERS__,
    __HOSTCALL_RING_BUFF_SIZE__,
);

/// The per-op ID globals, `__HOSTCALL__<name>`, one for each row of
/// `hostcall_abi::op_table!` (the same table makes the request types).
pub mod ids {
    use super::HostcallId;

    macro_rules! id_globals {
        ($($group:ident { $($(#[$m:meta])* $ty:ident = $op:literal, $name:ident { $($body:tt)* })* })*) => {
            $($(
                #[no_mangle]
                #[allow(non_upper_case_globals)]
                pub static $name: HostcallId = HostcallId::new();
            )*)*
            /// `(op name, its ID global)`, for the consistency test.
            #[cfg(test)]
            pub(crate) const ALL: &[(&str, &HostcallId)] = &[$($(($op, &$name),)*)*];
        };
    }

    hostcall_abi::op_table!(id_globals);
}

/// Waiting and thread identity on the GPU.
pub enum Gpu {}

impl Platform for Gpu {
    /// A poll of mapped host memory is itself a PCIe round trip (~1 us), so
    /// the first rounds barely sleep; long waits (a full ring, a host
    /// blocked on stdin) grow to ~25 us, which costs little issue bandwidth.
    #[inline]
    fn backoff(round: u32) {
        let ns = if round < 16 { 32 } else { 100u32 << ((round - 16) / 4).min(8) };
        arch::nanosleep(ns);
    }
    #[inline(always)]
    fn slot() -> u32 {
        // The host sizes the slots to the launch (at most 2^20 threads).
        arch::global_thread_id() as u32
    }
    #[inline(always)]
    fn lane() -> u32 {
        arch::lane_id()
    }
    #[inline(always)]
    fn active_lanes() -> u32 {
        arch::active_mask()
    }
    #[inline(always)]
    fn match_lanes(mask: u32, key: u32) -> u32 {
        arch::match_any(mask, key)
    }
    #[inline(always)]
    fn shuffle(mask: u32, value: u64, src: u32) -> u64 {
        arch::shuffle(mask, value, src)
    }
    #[inline(always)]
    fn ballot(mask: u32, pred: bool) -> u32 {
        arch::ballot(mask, pred)
    }
    #[inline(always)]
    fn sync_lanes(mask: u32) {
        arch::warp_sync(mask)
    }
    /// Push the record's stores out now: left to drain they reach the
    /// host later (docs/protocol.md).
    #[inline(always)]
    fn after_publish() {
        arch::fence_sc_sys()
    }
}

/// A region of global device memory the host may read or write for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub addr: u64,
    pub len: u64,
}

impl Region {
    /// `bytes` as a region, if they live in global memory (the host cannot
    /// reach a thread's local memory, where its stack is).
    pub fn global(ptr: *const u8, len: usize) -> Option<Region> {
        arch::is_global(ptr).then_some(Region { addr: ptr as u64, len: len as u64 })
    }
}

/// What the host configured: ring 0's geometry, the five addresses
/// (`[ring, ctrl, slots, reply data, call counters]`), the number of rings,
/// the address of the counters of rings past the first and their buffers'
/// size.
struct Config {
    geometry: Geometry,
    ptrs: [u64; 5],
    rings: u64,
    ring_counters: u64,
    ring_buff_size: u64,
}

/// The configuration the host wrote, or `None` before it did. All eleven
/// words are loaded before any is looked at: a check between them would
/// make each group wait for the last (after a call's fence every one of
/// them is a trip to L2, 0.83 us for the whole read on the H200 when they
/// came in three groups).
#[inline(always)]
fn config() -> Option<Config> {
    let g = Geometry {
        buff_size: __HOSTCALL_BUFF_SIZE__.patched(),
        slot_count: __HOSTCALL_RETURN_SLOT_COUNT__.patched(),
        reply_data_size: __HOSTCALL_RETURN_DATA_SIZE__.patched(),
    };
    let ptrs = [
        __HOSTCALL_BUFF_PTR__.patched(),
        __HOSTCALL_CTRL_PTR__.patched(),
        __HOSTCALL_RETURN_SLOTS__.patched(),
        __HOSTCALL_RETURN_DATA__.patched(),
        __HOSTCALL_SLOT_SEQ__.patched(),
    ];
    let rings = __HOSTCALL_RINGS__.patched().max(1);
    let (ring_counters, ring_buff_size) = (__HOSTCALL_RING_COUNTERS__.patched(), __HOSTCALL_RING_BUFF_SIZE__.patched());
    // 16-byte aligned: the protocol moves word pairs (`Word::load_pair`).
    let aligned = ptrs.iter().fold(true, |ok, p| ok & (*p != 0) & (*p % 16 == 0));
    let others_ok = rings == 1
        || (ring_counters != 0
            && ring_counters % 64 == 0
            && rings::ring_geometry(g, 1, ring_buff_size).validate().is_ok());
    (g.validate().is_ok() & aligned & rings::valid(rings) & others_ok).then_some(Config {
        geometry: g,
        ptrs,
        rings,
        ring_counters,
        ring_buff_size,
    })
}

/// The geometry the host configured, or `None` before it did.
#[inline(always)]
pub fn geometry() -> Option<Geometry> {
    config().map(|c| c.geometry)
}

/// Reply data bytes one call can bring back (0 when not configured).
pub fn reply_capacity() -> usize {
    geometry().map_or(0, |g| g.reply_data_size as usize)
}

/// `words` words starting at the device address `addr`.
///
/// # Safety
/// `addr` must point to `words` live, 8-aligned words for the whole launch.
unsafe fn words<'a>(addr: u64, words: usize) -> &'a [SysWord] {
    // SAFETY: forwarded to the caller.
    unsafe { core::slice::from_raw_parts(addr as *const SysWord, words) }
}

/// Run `f` with the ring that a call of `op` from this thread goes to (ring
/// 0 unless the host serves `op` on any ring, `hostcall_abi::rings`) and
/// `op`'s handler ID: what every call does. `NotConfigured` before the host
/// set the queue up, `NotServed` when `op` has no handler. A `no_std` kernel
/// can make calls through `Queue::call` with a `Platform` of its own this
/// way (`hostcall-bench` does, to measure other ways of publishing a record).
#[inline(always)]
pub fn with_queue<T>(
    op: &HostcallId,
    f: impl FnOnce(&Queue<'_, SysWord>, u32) -> Result<T, CallError>,
) -> Result<T, CallError> {
    let decoded = op.decode();
    let Config { geometry: g0, ptrs: [ring, ctrl, slots, reply_data, seq], rings, ring_counters, ring_buff_size } =
        config().ok_or(CallError::NotConfigured)?;
    let (id, any_ring) = decoded.ok_or(CallError::NotServed)?;
    // Lane 0's index over 32 names the warp the same way in every lane,
    // whatever the block's shape.
    let warp = (arch::global_thread_id() - u64::from(arch::lane_id())) / 32;
    let k = rings::of(warp, rings, any_ring);
    let g = rings::ring_geometry(g0, k, ring_buff_size);
    let offset = rings::ring_offset(g0, k, ring_buff_size) as u64 * 8;
    // SAFETY: the host wrote these addresses and both geometries before
    // launch; each points to the number of words they say (layout.rs),
    // for each of `rings` rings, in memory that stays mapped while the
    // kernel runs. `config` checked them non-null and aligned, the
    // geometries valid and `rings` a count the host configures, and
    // `k < rings`, which bounds every length.
    let q = unsafe {
        let (top, released_cache) = if k == 0 {
            (&__HOSTCALL_BUFF_TOP__, &__HOSTCALL_BUFF_RELEASED__)
        } else {
            let c = words(ring_counters + (k - 1) * (rings::COUNTER_WORDS as u64 * 8), rings::COUNTER_WORDS);
            (&c[0], &c[rings::RELEASED_WORD])
        };
        Queue {
            geometry: g,
            ring: words(ring + offset, g.ring_words()),
            top,
            released_cache,
            ctrl: words(ctrl + k * LINE_BYTES as u64, LINE_WORDS),
            slots: words(slots, g.slot_words()),
            reply_data: words(reply_data, g.reply_data_words()),
            seq: words(seq, g.seq_words()),
        }
    };
    f(&q, id)
}

/// How a queue error reads at the C edge.
pub fn call_errno(e: CallError) -> Errno {
    match e {
        // No host handler, or no host at all: the function is not available.
        CallError::NotServed | CallError::NotConfigured => Errno::ENOSYS,
        CallError::PayloadTooLarge => Errno::E2BIG,
    }
}

/// Make one hostcall and wait for its reply.
///
/// `payload` goes inline (at most `limits::MAX_INLINE` bytes, else `E2BIG`);
/// `region` declares global device memory the handler may read or write;
/// reply data lands in `reply` (`Completed::data_len` bytes of it). A reply
/// with a nonzero errno is `Err`; an ID global of 0 is `ENOSYS`.
///
/// Never inlined: every libc function funnels through here, and one copy of
/// the queue code keeps the PTX (and the driver's JIT time) small.
#[inline(never)]
pub fn call(
    op: &HostcallId,
    args: [u64; 3],
    payload: &[u8],
    region: Option<Region>,
    reply: &mut [u8],
) -> Result<Completed, Errno> {
    let region = region.unwrap_or(Region { addr: 0, len: 0 });
    let c = Call::new(0, args).payload(payload).device_region(region.addr, region.len);
    let done = with_queue(op, |q, id| q.call::<Gpu>(&Call { op: id, ..c }, reply)).map_err(call_errno)?;
    match done.errno {
        0 => Ok(done),
        e => Err(Errno(e)),
    }
}

/// Post a hostcall without waiting for it: it is queued (`payload` copied
/// inline, at most `limits::MAX_INLINE` bytes) and served in queue order
/// with every other call, but nobody learns its result (the host counts
/// failures, see `RunReport::unanswered_errors`).
#[inline(never)]
pub fn post<R: hostcall_abi::op::Request>(op: &HostcallId, req: &R, payload: &[u8]) -> Result<(), Errno> {
    let c = Call::new(0, req.to_args()).payload(payload);
    with_queue(op, |q, id| q.post::<Gpu>(&Call { op: id, ..c })).map_err(call_errno)
}

/// [`call`] with a typed request from `hostcall_abi::op`.
pub fn request<R: hostcall_abi::op::Request>(
    op: &HostcallId,
    req: &R,
    payload: &[u8],
    region: Option<Region>,
    reply: &mut [u8],
) -> Result<Completed, Errno> {
    call(op, req.to_args(), payload, region, reply)
}

/// The test op: `a ^ b` from the host, `payload` echoed into `reply`.
pub fn echo(a: u64, b: u64, payload: &[u8], reply: &mut [u8]) -> Result<u64, Errno> {
    let req = hostcall_abi::op::Echo { a, b };
    request(&ids::__HOSTCALL__echo, &req, payload, None, reply).map(|c| c.value)
}

/// Tell the host that `name` was called but cannot be honoured here (it logs
/// it under `HOSTCALL_DEBUG`); returns the errno to report, always ENOSYS.
pub fn unsupported(name: &str) -> Errno {
    let bytes = name.as_bytes();
    let bytes = bytes.get(..limits::MAX_INLINE).unwrap_or(bytes);
    let _ = call(&ids::__HOSTCALL__unsupported, [0; 3], bytes, None, &mut []);
    Errno::ENOSYS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_op_has_an_id_global() {
        use hostcall_abi::op::{BUILTIN, TEST_ONLY};
        for name in BUILTIN.iter().chain(TEST_ONLY) {
            assert!(ids::ALL.iter().any(|(n, _)| n == name), "no __HOSTCALL__{name}");
        }
        assert_eq!(ids::ALL.len(), BUILTIN.len() + TEST_ONLY.len());
    }

    #[test]
    fn unconfigured_queue_is_enosys() {
        assert_eq!(echo(1, 2, &[], &mut []), Err(Errno::ENOSYS));
    }
}
