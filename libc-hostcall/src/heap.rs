//! The device heap: power-of-two size classes over one static arena, with
//! lock-free free lists. No hostcall per `malloc`.
//!
//! * The arena (`ARENA_BYTES`) is cut into 64 KiB chunks by one atomic bump
//!   pointer; chunks never go back to it.
//! * Classes 16 B .. 64 KiB: a chunk belongs to one class and is carved into
//!   blocks of that size, so every block is aligned to its size. Each class
//!   has `SHARDS` free lists (Treiber stacks with a 32-bit ABA tag), picked by
//!   global thread id so the lanes of a warp do not fight over one head.
//!   When a shard is empty one thread carves a fresh chunk into it while the
//!   others on that shard back off (a refill gate, so 100k threads missing at
//!   once take 64 chunks, not 100k).
//! * Classes above 64 KiB: whole runs of chunks from the bump pointer,
//!   64 KiB-aligned, one free list per class.
//! * A byte per chunk records its class, so `free` needs no header and
//!   `realloc` knows the old block's size.
//!
//! * Beyond the arena: a block larger than the arena's largest class, or any
//!   block once the arena cannot serve it, is device memory the host hands
//!   over (`heap_alloc`, `heap_realloc`, posted `heap_free`; the host's side
//!   is `hostcall_runtime::handlers::heap`): up to the GPU's free memory,
//!   first fit and coalescing there, so memory freed at one size serves any
//!   other. `realloc` of such a block is one hostcall; the copy runs on the
//!   GPU's copy engine, not in this thread.
//!
//! * Once the bump pointer is spent, a freed block of whole chunks (64 KiB
//!   or more) serves any class up to 64 KiB: it is split, the chunk asked
//!   for re-classed and the rest given back (`reuse_run`). Larger blocks
//!   then come from the host (see `take_chunks`).
//!
//! * When the host has no GPU memory left either, a sweep (`sweep`) takes
//!   every free block off the arena's lists, gives back the chunks whose
//!   small blocks are all free, merges free chunks into the largest aligned
//!   runs they make and lists those, so memory freed at any size serves any
//!   other before an allocation fails. It is slow (one thread walks every
//!   free block), so it runs only then; out of memory after it, the device
//!   posts `heap_oom` and the host prints what was asked and what it holds.
//!
//! Limits: alignment up to 64 KiB in the arena, 2 MiB beyond it; an arena
//! block wastes up to half its size; until the GPU's memory is spent, a
//! chunk carved into blocks below 64 KiB serves only that class and split
//! pieces stay apart (new sizes come from the host meanwhile); the chunks
//! left at the arena's end when a request of several chunks finds the
//! bump pointer too near it are never handed out (up to half the arena,
//! when that request is for its largest class); `malloc_usable_size` of a
//! block beyond the arena is 0.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize};

use crate::arch;
use crate::errno::Errno;
use crate::hostcall::{self, ids, Region};
use hostcall_abi::op::{HeapAlloc, HeapFree, HeapOom, HeapRealloc, HEAP_ALIGN};

/// Device heap size. A zero-initialised `.global` array: it costs device
/// memory at module load, not bytes in the PTX.
pub const ARENA_BYTES: usize = if cfg!(test) { 64 << 20 } else { 512 << 20 };
const CHUNK_SHIFT: u32 = 16;
const CHUNK: usize = 1 << CHUNK_SHIFT;
/// Smallest block: 16 bytes, the alignment `malloc` promises.
const MIN_SHIFT: u32 = 4;
const UNIT: usize = 1 << MIN_SHIFT;
/// Usable bytes: the arena less the slack for aligning its start to a chunk.
const USABLE: usize = ARENA_BYTES - CHUNK;
const CHUNKS: usize = USABLE / CHUNK;
/// Largest class: the biggest power of two the usable arena holds.
const MAX_SHIFT: u32 = usize::BITS - 1 - USABLE.leading_zeros();
const CLASSES: usize = MAX_SHIFT as usize + 1;
/// Free lists per small class. 33,792 threads on 64 lists lost most of
/// their time to failed compare-exchanges on the heads (about 528 threads a
/// head); more lists and a back-off after each lost exchange spread them.
const SHARDS: usize = 128;

const _: () = assert!(USABLE / UNIT < u32::MAX as usize, "free-list links are 32-bit units");
const _: () = assert!(MAX_SHIFT > CHUNK_SHIFT);

#[repr(C, align(16))]
struct Arena(UnsafeCell<MaybeUninit<[u8; ARENA_BYTES]>>);

// SAFETY: the arena is only reached through blocks handed out once each (by
// the atomics below) and through the atomic link word of free blocks.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new(MaybeUninit::uninit()));
/// Bytes of the usable arena handed out as chunks.
static BUMP: AtomicUsize = AtomicUsize::new(0);
/// Class shift of each chunk (of the first chunk of a large block); 0: none.
static CHUNK_CLASS: [AtomicU8; CHUNKS] = [const { AtomicU8::new(0) }; CHUNKS];
/// Free-list heads: `tag << 32 | (unit index + 1)`, 0 = empty.
static FREE: [[AtomicU64; SHARDS]; CLASSES] = [const { [const { AtomicU64::new(0) }; SHARDS] }; CLASSES];
/// Refill gates of the small classes' shards.
static REFILLING: [[AtomicU32; SHARDS]; CLASSES] = [const { [const { AtomicU32::new(0) }; SHARDS] }; CLASSES];

fn base() -> usize {
    (ARENA.0.get() as usize).next_multiple_of(CHUNK)
}

/// The class (log2 of the block size) serving `size` bytes at `align`.
pub fn class_of(size: usize, align: usize) -> Option<u32> {
    if !align.is_power_of_two() || align > CHUNK {
        return None;
    }
    let want = size.max(align).max(UNIT).checked_next_power_of_two()?;
    let shift = want.trailing_zeros();
    (shift <= MAX_SHIFT).then_some(shift)
}

/// The link word of the block at arena offset `off`.
fn link(off: usize) -> &'static AtomicU64 {
    // SAFETY: callers pass offsets of blocks inside the usable arena, which
    // are 16-aligned; the first word of a free block is only accessed
    // atomically, through this function.
    unsafe { &*((base() + off) as *const AtomicU64) }
}

fn unit(off: usize) -> u64 {
    (off / UNIT) as u64 + 1
}

/// After a lost compare-exchange on a list head: wait a little, longer each
/// round, so that the threads of one head do not retry in lockstep.
fn back_off(round: &mut u32) {
    arch::nanosleep(8u32 << (*round).min(7));
    *round = round.saturating_add(1);
}

fn push_list(head: &AtomicU64, first: usize, last: usize) {
    let mut h = head.load(Relaxed);
    let mut round = 0;
    loop {
        link(last).store(h & 0xffff_ffff, Relaxed);
        let new = ((h >> 32).wrapping_add(1) << 32) | unit(first);
        // Release: the links written above are seen by whoever pops.
        match head.compare_exchange_weak(h, new, Release, Relaxed) {
            Ok(_) => return,
            Err(_) => {
                back_off(&mut round);
                h = head.load(Relaxed);
            }
        }
    }
}

fn pop(head: &AtomicU64) -> Option<usize> {
    let mut h = head.load(Acquire);
    let mut round = 0;
    loop {
        let idx = (h & 0xffff_ffff) as usize;
        if idx == 0 {
            return None;
        }
        let off = (idx - 1) * UNIT;
        if off >= USABLE {
            // Only a corrupted list (a write after free) gets here.
            return None;
        }
        // The block may be popped and reused under us; then the tag has moved
        // on and the exchange below fails, whatever this read returned.
        // (The read can then overlap the new owner's plain writes to the
        // block: a data race in Rust's memory model, which Miri reports when
        // two host threads allocate at once, though the hardware gives a
        // word either way and the value is thrown away. Every tagged
        // Treiber-stack allocator has it; a fix would keep links outside
        // the blocks.)
        let next = link(off).load(Relaxed) & 0xffff_ffff;
        let new = ((h >> 32).wrapping_add(1) << 32) | next;
        match head.compare_exchange_weak(h, new, Acquire, Acquire) {
            Ok(_) => return Some(off),
            Err(_) => {
                back_off(&mut round);
                h = head.load(Acquire);
            }
        }
    }
}

/// `chunks` (a power of two) chunks for class `shift`: fresh ones from the
/// bump pointer, or once it is spent, for a small class, a chunk that a
/// freed block gave back ([`reuse_run`]); `None` when neither has them.
///
/// A block larger than a chunk goes to the host once the bump pointer is
/// spent rather than reuse freed chunks: it is the size `realloc` grows
/// to, and the host moves it on the copy engine, where an arena block is
/// copied by the calling thread. (A heap that served every class from
/// freed chunks, and swept the small classes for free chunks, ran the regex
/// kernel in 2.9 s on the H200 instead of 0.8 s.) Once the GPU's memory has
/// run out (a [`sweep`] ran), any class reuses freed runs.
fn take_chunks(shift: u32, chunks: usize) -> Option<usize> {
    let bytes = chunks.checked_mul(CHUNK)?;
    let off = BUMP.fetch_add(bytes, Relaxed);
    if off.checked_add(bytes)? > USABLE {
        let any = SWEEPS.load(Relaxed) > 0;
        return if chunks == 1 || any { reuse_run(shift, chunks) } else { None };
    }
    CHUNK_CLASS.get(off / CHUNK)?.store(shift as u8, Release);
    Some(off)
}

/// With the bump pointer spent: the smallest free block of whole chunks
/// (class 64 KiB or larger) that holds `chunks` chunks, taken off its free
/// list, its first `chunks` chunks handed to class `shift` and the rest
/// given back as blocks of the classes that fit (halving down: a 1 MiB
/// block serving one chunk gives back 512, 256, 128 and 64 KiB). Pieces
/// are merged again only by a [`sweep`], and small blocks freed inside a
/// chunk stay with their class until one. After a look that finds no
/// run of `need` chunks or more, the next looks for as many or more wait
/// (`REUSE_AGAIN_AT`).
fn reuse_run(shift: u32, chunks: usize) -> Option<usize> {
    let started = arch::global_timer_ns();
    let need = chunks.trailing_zeros() + CHUNK_SHIFT;
    // A look that found no run of `k` chunks or more says the same of `need`.
    if REUSE_AGAIN_AT.get(CHUNK_SHIFT as usize..=need as usize)?.iter().any(|at| started < at.load(Relaxed)) {
        return None;
    }
    let Some((off, have)) = free_run(need) else {
        REUSE_AGAIN_AT.get(need as usize)?.store(pause_after(started), Relaxed);
        return None;
    };
    // The block is this thread's alone now: re-class its pieces, then
    // publish each (the push is a release).
    for k in need..have {
        list_run(off + (CHUNK << (k - CHUNK_SHIFT)), k, shard());
    }
    CHUNK_CLASS.get(off / CHUNK)?.store(shift as u8, Release);
    Some(off)
}

/// List the free block of whole chunks at `off` in class `shift` (64 KiB or
/// more), its first chunk re-classed: on shard `s` of a 64 KiB class, on
/// the one list of a larger class.
fn list_run(off: usize, shift: u32, s: usize) {
    let s = if shift > CHUNK_SHIFT { 0 } else { s };
    if let (Some(class), Some(head)) = (CHUNK_CLASS.get(off / CHUNK), FREE.get(shift as usize).and_then(|h| h.get(s))) {
        class.store(shift as u8, Release);
        push_list(head, off, off);
    }
}

/// The smallest free block of class `need` (at least 64 KiB) or larger,
/// taken off its list: `(offset, class)`.
fn free_run(need: u32) -> Option<(usize, u32)> {
    (need..=MAX_SHIFT).find_map(|k| {
        let heads = FREE.get(k as usize)?;
        // One list for large classes, a list per shard for 64 KiB blocks.
        let got = if k > CHUNK_SHIFT { pop(heads.first()?) } else { heads.iter().find_map(pop) };
        got.map(|off| (off, k))
    })
}

/// Per class of 64 KiB or more: the `%globaltimer` before which an
/// allocation of that class or larger that the bump pointer cannot serve
/// goes straight to the host, set when a look for a freed run that large
/// found none (`reuse_run`), so that the looks (a load per free list of 64
/// KiB or more) cost a tenth of the time at most; 0: any time.
static REUSE_AGAIN_AT: [AtomicU64; CLASSES] = [const { AtomicU64::new(0) }; CLASSES];
/// The time to wait after work that began at `started`: ten times as long
/// as it took, at least 1 ms.
fn pause_after(started: u64) -> u64 {
    let now = arch::global_timer_ns();
    now.saturating_add(now.saturating_sub(started).saturating_mul(10).max(1_000_000))
}

/// One thread at a time sweeps ([`sweep`]); the others wait for it.
static SWEEPING: AtomicU32 = AtomicU32::new(0);
/// Sweeps ended: a thread whose allocation failed before one ended (it
/// read this before asking the host) retries rather than sweeping again.
static SWEEPS: AtomicU32 = AtomicU32::new(0);
/// Per chunk, during a sweep: its free small blocks found, or [`WHOLE`].
static SWEEP_COUNT: [AtomicU32; CHUNKS] = [const { AtomicU32::new(0) }; CHUNKS];
/// A chunk all free: a free block of whole chunks covers it, or every
/// small block carved from it is free.
const WHOLE: u32 = u32::MAX;
/// Free blocks a sweep walks at most: more means a list with a cycle (a
/// write after free), and the walk stops.
const MAX_BLOCKS: usize = USABLE / UNIT;

/// Out of memory everywhere: an arena block of class `shift` after a sweep
/// (one thread sweeps; one that finds a sweep under way waits for it, and
/// one whose allocation failed before a sweep ended, `seen` being
/// [`SWEEPS`] before it asked the host, only retries).
fn alloc_after_sweep(shift: u32, seen: u32) -> Option<*mut u8> {
    if SWEEPING.compare_exchange(0, 1, Acquire, Relaxed).is_ok() {
        if SWEEPS.load(Relaxed) == seen {
            sweep();
            // What it listed is there to reuse: no pause from a look before.
            REUSE_AGAIN_AT.iter().for_each(|at| at.store(0, Relaxed));
            SWEEPS.fetch_add(1, Release);
        }
        SWEEPING.store(0, Release);
    } else {
        let mut round = 0u32;
        while SWEEPING.load(Acquire) != 0 {
            arch::nanosleep(256u32 << round.min(8));
            round = round.saturating_add(1);
        }
    }
    arena_alloc(shift)
}

/// Take an entire free list: its first block's unit, 0 when empty. The
/// blocks are this thread's then (their link words too).
fn detach(head: &AtomicU64) -> u64 {
    let mut h = head.load(Acquire);
    loop {
        if h & 0xffff_ffff == 0 {
            return 0;
        }
        let empty = (h >> 32).wrapping_add(1) << 32;
        match head.compare_exchange_weak(h, empty, Acquire, Acquire) {
            Ok(_) => return h & 0xffff_ffff,
            Err(now) => h = now,
        }
    }
}

/// Walk a detached list from `first`: `visit(offset)` per block, at most
/// `*budget` blocks in all. The budget only makes a corrupted list (a
/// cycle, from a write after free) end the walk; what such a list holds is
/// not trusted to be listed right afterwards.
fn walk(first: u64, budget: &mut usize, mut visit: impl FnMut(usize)) {
    let mut at = first;
    while at != 0 && *budget > 0 {
        let off = (at as usize - 1) * UNIT;
        if off >= USABLE {
            return;
        }
        *budget -= 1;
        // Read before `visit`, which may relink the block.
        at = link(off).load(Relaxed) & 0xffff_ffff;
        visit(off);
    }
}

/// Give every free block in the arena's lists back as the largest blocks
/// it makes: small blocks of chunks not all free go back to their class;
/// chunks that are all free (small blocks all freed, or inside a free
/// block of chunks) are merged into aligned power-of-two runs, listed in
/// their classes. Blocks freed while it runs go to their lists as usual
/// and are left out.
fn sweep() {
    let mut budget = MAX_BLOCKS;
    // 1. Every list taken. Small blocks: counted per chunk and kept on a
    //    list of this thread's per class; blocks of whole chunks: their
    //    chunks marked.
    let mut small = [0u64; CHUNK_SHIFT as usize];
    for shift in MIN_SHIFT..=MAX_SHIFT {
        for head in FREE.get(shift as usize).into_iter().flatten() {
            let first = detach(head);
            walk(first, &mut budget, |off| {
                let chunk = off / CHUNK;
                if let Some(mine) = small.get_mut(shift as usize) {
                    link(off).store(*mine, Relaxed);
                    *mine = unit(off);
                    if let Some(c) = SWEEP_COUNT.get(chunk) {
                        c.store(c.load(Relaxed).saturating_add(1), Relaxed);
                    }
                } else {
                    let end = (chunk + (1 << (shift - CHUNK_SHIFT))).min(CHUNKS);
                    SWEEP_COUNT.get(chunk..end).into_iter().flatten().for_each(|c| c.store(WHOLE, Relaxed));
                }
            });
        }
    }
    // 2. Small blocks of chunks not all free go back, in runs of up to 256,
    //    each to the shard its first block's chunk picks (runs spread over
    //    the shards); a chunk whose blocks were all found is WHOLE.
    let mut budget = MAX_BLOCKS;
    for (shift, first) in small.iter().enumerate() {
        let per_chunk = (CHUNK >> shift) as u32;
        let (mut run, mut run_last, mut len) = (0u64, 0usize, 0usize);
        let give_back = |run: u64, last: usize| {
            let shard = (last / CHUNK) % SHARDS;
            if let (true, Some(head)) = (run != 0, FREE.get(shift).and_then(|h| h.get(shard))) {
                push_list(head, (run as usize - 1) * UNIT, last);
            }
        };
        walk(*first, &mut budget, |off| {
            let Some(count) = SWEEP_COUNT.get(off / CHUNK) else { return };
            match count.load(Relaxed) {
                WHOLE => {}
                n if n == per_chunk => count.store(WHOLE, Relaxed),
                _ => {
                    link(off).store(run, Relaxed);
                    if run == 0 {
                        run_last = off;
                    }
                    run = unit(off);
                    len += 1;
                    if len == 256 {
                        give_back(run, run_last);
                        (run, len) = (0, 0);
                    }
                }
            }
        });
        give_back(run, run_last);
    }
    // 3. WHOLE chunks merged: at each, the largest aligned run of WHOLE
    //    chunks starting there becomes one free block.
    let whole = |c: usize| SWEEP_COUNT.get(c).is_some_and(|n| n.load(Relaxed) == WHOLE);
    let mut chunk = 0;
    while chunk < CHUNKS {
        if !whole(chunk) {
            if let Some(c) = SWEEP_COUNT.get(chunk) {
                c.store(0, Relaxed);
            }
            chunk += 1;
            continue;
        }
        let mut k = 0u32;
        while k + CHUNK_SHIFT < MAX_SHIFT && chunk % (2 << k) == 0 && (chunk + (1 << k)..chunk + (2 << k)).all(whole) {
            k += 1;
        }
        for c in SWEEP_COUNT.get(chunk..chunk + (1 << k)).into_iter().flatten() {
            c.store(0, Relaxed);
        }
        list_run(chunk * CHUNK, k + CHUNK_SHIFT, chunk % SHARDS);
        chunk += 1 << k;
    }
}

/// Carve a fresh chunk into `head`'s list, keeping its first block.
fn carve(shift: u32, head: &AtomicU64) -> Option<usize> {
    let off = take_chunks(shift, 1)?;
    let size = 1usize << shift;
    let n = CHUNK / size;
    if n > 1 {
        for i in 1..n - 1 {
            link(off + i * size).store(unit(off + (i + 1) * size), Relaxed);
        }
        push_list(head, off + size, off + (n - 1) * size);
    }
    Some(off)
}

fn shard() -> usize {
    (arch::global_thread_id() % SHARDS as u64) as usize
}

fn alloc_offset(shift: u32) -> Option<usize> {
    let heads = FREE.get(shift as usize)?;
    if shift > CHUNK_SHIFT {
        let head = heads.first()?;
        return pop(head).or_else(|| take_chunks(shift, 1 << (shift - CHUNK_SHIFT)));
    }
    let s = shard();
    let head = heads.get(s)?;
    let gate = REFILLING.get(shift as usize)?.get(s)?;
    let mut round = 0u32;
    loop {
        if let Some(off) = pop(head) {
            return Some(off);
        }
        if gate.compare_exchange(0, 1, Acquire, Relaxed).is_ok() {
            let got = pop(head).or_else(|| carve(shift, head));
            gate.store(0, Release);
            return got;
        }
        arch::nanosleep(32u32 << round.min(8));
        round = round.saturating_add(1);
    }
}

/// An arena block of class `shift`, if the arena has one.
fn arena_alloc(shift: u32) -> Option<*mut u8> {
    let off = alloc_offset(shift).or_else(|| {
        // The arena is spent: take from any shard before giving up on it.
        FREE.get(shift as usize)?.iter().find_map(pop)
    });
    off.map(|off| (base() + off) as *mut u8)
}

/// A block from the host (see the module docs).
fn host_alloc(size: usize, align: usize, zeroed: bool) -> Result<*mut u8, Errno> {
    let req = HeapAlloc { size: size as u64, align: align as u64, zeroed: zeroed as u32 };
    hostcall::request(&ids::__HOSTCALL__heap_alloc, &req, &[], None, &mut []).map(|done| done.value as *mut u8)
}

/// The end of an allocation that found no memory: the host says so (the
/// caller returns null).
fn out_of_memory(size: usize) -> *mut u8 {
    let _ = hostcall::post(&ids::__HOSTCALL__heap_oom, &HeapOom { size: size as u64 }, &[]);
    core::ptr::null_mut()
}

/// `p`, an arena block for `size` bytes, zeroed if asked.
fn arena_block(p: *mut u8, size: usize, zeroed: bool) -> *mut u8 {
    if zeroed {
        // SAFETY: `p` is a fresh block of at least `size` bytes.
        unsafe { core::ptr::write_bytes(p, 0, size) };
    }
    p
}

fn alloc_with(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    if !align.is_power_of_two() {
        return core::ptr::null_mut();
    }
    let class = class_of(size, align);
    if let Some(p) = class.and_then(arena_alloc) {
        return arena_block(p, size, zeroed);
    }
    let seen = SWEEPS.load(Acquire);
    match host_alloc(size, align, zeroed) {
        Ok(p) => p,
        // Out of GPU memory (or no host to ask, ENOSYS): the arena's freed
        // blocks, merged, are the last place to look.
        Err(Errno::ENOMEM | Errno::ENOSYS) => match class.and_then(|c| alloc_after_sweep(c, seen)) {
            Some(p) => arena_block(p, size, zeroed),
            None => out_of_memory(size),
        },
        Err(_) => core::ptr::null_mut(),
    }
}

/// A block of at least `size` bytes aligned to `align`, or null.
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    alloc_with(size, align, false)
}

/// A zeroed block (beyond the arena the host zeroes it, on the GPU).
pub fn alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    alloc_with(size, align, true)
}

/// Arena offset and class of a block this heap handed out.
fn block_of(ptr: *mut u8) -> Option<(usize, u32)> {
    let off = (ptr as usize).checked_sub(base())?;
    if off >= USABLE || off % UNIT != 0 {
        return None;
    }
    let shift = u32::from(CHUNK_CLASS.get(off / CHUNK)?.load(Acquire));
    (shift >= MIN_SHIFT && off % (1usize << shift).min(CHUNK) == 0).then_some((off, shift))
}

/// Bytes usable in the block at `ptr` (0 for null or a foreign pointer).
pub fn usable_size(ptr: *mut u8) -> usize {
    block_of(ptr).map_or(0, |(_, shift)| 1 << shift)
}

/// Return a block. Null and pointers this heap did not hand out are ignored.
///
/// # Safety
/// `ptr` is null or a live block from this heap, not used afterwards.
pub unsafe fn free(ptr: *mut u8) {
    let Some((off, shift)) = block_of(ptr) else {
        if !ptr.is_null() {
            // Not the arena's: the host's (which ignores what is not).
            let _ = hostcall::post(&ids::__HOSTCALL__heap_free, &HeapFree { ptr: ptr as u64 }, &[]);
        }
        return;
    };
    let s = if shift > CHUNK_SHIFT { 0 } else { shard() };
    if let Some(head) = FREE.get(shift as usize).and_then(|h| h.get(s)) {
        push_list(head, off, off);
    }
}

/// Grow or shrink a block, keeping its contents; on failure the old block is
/// untouched and null is returned.
///
/// # Safety
/// `ptr` is null or a live block from this heap; on success it is freed.
pub unsafe fn realloc(ptr: *mut u8, new_size: usize, align: usize) -> *mut u8 {
    if ptr.is_null() {
        return alloc(new_size, align);
    }
    let arena = block_of(ptr);
    let new = class_of(new_size, align);
    if let (Some((_, old)), Some(new)) = (arena, new) {
        if new == old {
            return ptr;
        }
        if let Some(p) = arena_alloc(new) {
            // SAFETY: both blocks are live and distinct, `p` holds
            // `new_size` bytes and `ptr` holds `1 << old`.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, p, new_size.min(1 << old));
                free(ptr);
            }
            return p;
        }
    }
    let (seen, mut host_oom) = (SWEEPS.load(Acquire), false);
    if align as u64 <= HEAP_ALIGN {
        // The host moves it (on the GPU's copy engine) into a block of its
        // own, and frees the old one if it was its.
        // An arena block goes as the declared region: the host copies from
        // nowhere else.
        let region = arena.map(|(_, old)| Region { addr: ptr as u64, len: 1 << old });
        let req = HeapRealloc { ptr: ptr as u64, new_size: new_size as u64 };
        match hostcall::request(&ids::__HOSTCALL__heap_realloc, &req, &[], region, &mut []) {
            Ok(done) => {
                if arena.is_some() {
                    // SAFETY: the arena block is live and its bytes are copied.
                    unsafe { free(ptr) };
                }
                return done.value as *mut u8;
            }
            // Out of GPU memory: an arena block after a sweep, the bytes
            // moved by this thread (below), or nothing.
            Err(Errno::ENOMEM | Errno::ENOSYS) => host_oom = true,
            Err(_) => return core::ptr::null_mut(),
        }
    }
    // Over-aligned and beyond the arena, or out of GPU memory: moved by this
    // thread. The old block's size is only known for an arena block; a host
    // block cannot be moved here.
    let Some((_, old)) = arena else {
        return if host_oom { out_of_memory(new_size) } else { core::ptr::null_mut() };
    };
    let p = if host_oom {
        // The host has just said no: straight to the sweep.
        match new.and_then(|c| alloc_after_sweep(c, seen)) {
            Some(p) => p,
            None => return out_of_memory(new_size),
        }
    } else {
        alloc(new_size, align)
    };
    if !p.is_null() {
        // SAFETY: both blocks are live and distinct, `p` holds `new_size`
        // bytes and `ptr` holds `1 << old`.
        unsafe {
            core::ptr::copy_nonoverlapping(ptr, p, new_size.min(1 << old));
            free(ptr);
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_and_honour_alignment() {
        assert_eq!(class_of(0, 1), Some(4));
        assert_eq!(class_of(17, 8), Some(5));
        assert_eq!(class_of(8, 256), Some(8));
        assert_eq!(class_of(1 << 20, 16), Some(20));
        assert_eq!(class_of(8, 3), None);
        assert_eq!(class_of(8, 1 << 17), None);
        assert_eq!(class_of(usize::MAX, 16), None);
    }

    #[test]
    fn blocks_are_aligned_reused_and_sized() {
        for align in [1, 16, 64, 4096, CHUNK] {
            let p = alloc(100, align);
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0);
            assert!(usable_size(p) >= 100);
            // SAFETY: p is a live block.
            unsafe { free(p) };
        }
        let a = alloc(40, 8);
        // SAFETY: a is a live block.
        unsafe { free(a) };
        assert_eq!(alloc(33, 8), a, "a freed block of the class is reused first");
        let big = alloc(300_000, 8);
        assert_eq!(big as usize % CHUNK, 0);
        assert_eq!(usable_size(big), 1 << 19);
    }

    #[test]
    fn realloc_keeps_contents() {
        let p = alloc(10, 1);
        // SAFETY: p holds at least 10 bytes.
        unsafe { core::ptr::copy_nonoverlapping(b"0123456789".as_ptr(), p, 10) };
        // SAFETY: p is live.
        let q = unsafe { realloc(p, 5000, 1) };
        // SAFETY: q holds at least 5000 bytes.
        assert_eq!(unsafe { core::slice::from_raw_parts(q, 10) }, b"0123456789");
        // SAFETY: q is live; same class keeps the block.
        assert_eq!(unsafe { realloc(q, 4097, 1) }, q);
    }

    #[test]
    fn exhaustion_is_null_not_a_wild_pointer() {
        assert!(alloc(USABLE, 16).is_null());
    }

    /// Fill `p`'s `len` bytes with `tag`, or check that they still hold it.
    fn stamp(p: *mut u8, len: usize, tag: u8, check: bool) -> bool {
        // SAFETY: `p` is a live block of at least `len` bytes, only this test's.
        let bytes = unsafe { core::slice::from_raw_parts_mut(p, len) };
        if check {
            bytes.iter().all(|b| *b == tag)
        } else {
            bytes.fill(tag);
            true
        }
    }

    /// It spends the arena every test shares, so it runs alone: `.ci/run`
    /// gives it a process of its own (`-- --ignored`).
    #[test]
    #[ignore = "spends the shared arena; run alone with -- --ignored"]
    fn freed_blocks_serve_other_sizes_once_the_arena_is_spent() {
        extern crate std;
        use std::vec::Vec;
        const MIB: usize = 1 << 20;
        let mut big = Vec::new();
        loop {
            let p = alloc(MIB, 16);
            if p.is_null() {
                break;
            }
            big.push(p);
        }
        assert!(big.len() > 30, "the test arena holds dozens of 1 MiB blocks, got {}", big.len());
        assert!(alloc(24, 8).is_null(), "nothing is free yet: a small block has nowhere to come from");
        for p in big.drain(..) {
            // SAFETY: live blocks, freed once.
            unsafe { free(p) };
        }
        // The request that found nothing holds further looks for memory to
        // reuse off for a while (the host test clock moves 1 ms a reading);
        // meanwhile on a GPU the host serves.
        for _ in 0..100 {
            let _ = arch::global_timer_ns();
        }
        // Four threads at once, each 5,000 small blocks and then sizes from
        // 100 B to 64 KiB, all from the freed 1 MiB blocks (there is no host
        // here to fall back on).
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                std::thread::spawn(move || {
                    let sizes = [24usize; 5000].into_iter().chain([100, 4000, 40_000, 65_536].repeat(40));
                    let mut live = Vec::new();
                    for (i, size) in sizes.enumerate() {
                        let p = alloc(size, 8);
                        assert!(
                            !p.is_null(),
                            "thread {t}: allocation {i} of {size} bytes failed with freed memory in the arena"
                        );
                        assert!(usable_size(p) >= size, "an arena block of its class");
                        let tag = (i % 251) as u8 ^ t;
                        stamp(p, size, tag, false);
                        live.push((p as usize, size, tag));
                    }
                    live
                })
            })
            .collect();
        let live: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        for &(p, size, tag) in &live {
            assert!(stamp(p as *mut u8, size, tag, true), "a block of {size} bytes was overwritten by another");
        }
        for (p, _, _) in live {
            // SAFETY: live blocks, freed once.
            unsafe { free(p as *mut u8) };
        }

        // Then the whole arena in 24-byte blocks, freed: every chunk now
        // belongs to the 32-byte class, and with no host to ask the sweep
        // gives them back, so 2000-byte blocks fill nearly all of it again.
        let fill = |size: usize| {
            let mut got = Vec::new();
            loop {
                let p = alloc(size, 8);
                if p.is_null() {
                    return got;
                }
                stamp(p, size.min(64), 0x5a, false);
                got.push(p);
            }
        };
        let free_all = |ps: Vec<*mut u8>| {
            for p in ps {
                // SAFETY: live blocks, freed once.
                unsafe { free(p) };
            }
        };
        let small = fill(24);
        assert!(small.len() * 32 > USABLE * 9 / 10, "24-byte blocks took only {} bytes", small.len() * 32);
        free_all(small);
        let mid = fill(2000);
        assert!(
            mid.len() * 2048 > USABLE * 9 / 10,
            "{} blocks of 2000 bytes after the small ones were freed",
            mid.len()
        );
        // Half of them freed, every other one: no chunk is all free, so
        // nothing larger than 2 KiB fits; the other half freed too, the
        // chunks merge into runs again and a quarter of the arena is one block.
        let (odd, even): (Vec<_>, Vec<_>) = mid.into_iter().enumerate().partition(|(i, _)| i % 2 == 1);
        free_all(odd.into_iter().map(|(_, p)| p).collect());
        assert!(alloc(4096, 8).is_null(), "no chunk is all free");
        free_all(even.into_iter().map(|(_, p)| p).collect());
        let big = alloc(USABLE / 4, 16);
        assert!(!big.is_null(), "the freed chunks merge into a run of a quarter of the arena");
        assert!(stamp(big, USABLE / 4, 7, false));
        // SAFETY: a live block, freed once.
        unsafe { free(big) };
        let again = fill(1 << 20);
        assert!(again.len() * (1 << 20) > USABLE * 9 / 10, "{} blocks of 1 MiB at the end", again.len());
        free_all(again);

        // Four threads fill the arena at once, each with a size of its own,
        // and free it all; then again with four other sizes, so that every
        // block of the second round comes from blocks of other classes,
        // swept while the other threads wait or allocate. No block is
        // handed out twice (the stamps hold) and most of the arena is used
        // both times.
        const SIZES: [[usize; 4]; 2] = [[24, 300, 5000, 200_000], [1500, 100, 1 << 20, 20_000]];
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let threads: Vec<_> = (0..4usize)
            .map(|t| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut used = [0usize; 2];
                    for (round, used) in used.iter_mut().enumerate() {
                        let size = SIZES[round][t];
                        let tag = (t * 2 + round + 1) as u8;
                        let mut mine = Vec::new();
                        loop {
                            let p = alloc(size, 8);
                            if p.is_null() {
                                break;
                            }
                            stamp(p, size, tag, false);
                            mine.push(p as usize);
                        }
                        barrier.wait();
                        for &p in &mine {
                            assert!(
                                stamp(p as *mut u8, size, tag, true),
                                "a block of {size} bytes was handed out twice"
                            );
                        }
                        *used = mine.len() * size.next_power_of_two();
                        barrier.wait();
                        for p in mine {
                            // SAFETY: live blocks, freed once.
                            unsafe { free(p as *mut u8) };
                        }
                        barrier.wait();
                    }
                    used
                })
            })
            .collect();
        let used = threads.into_iter().map(|t| t.join().unwrap()).fold([0, 0], |a, u| [a[0] + u[0], a[1] + u[1]]);
        for (round, bytes) in used.into_iter().enumerate() {
            assert!(bytes > USABLE * 3 / 4, "round {round}: four threads got {bytes} bytes of a {USABLE}-byte arena");
        }

        // Every other 1 MiB block free: no run of 32 MiB exists. A thread
        // that keeps asking for one (each time a sweep, then null) must not
        // keep three others from their 60,000-byte blocks, which the free
        // runs hold (a look that found no 32 MiB run says nothing of 64 KiB).
        let mib = fill(1 << 20);
        let (kept, freed): (Vec<_>, Vec<_>) = mib.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
        free_all(freed.into_iter().map(|(_, p)| p).collect());
        let asker = std::thread::spawn(|| (0..300).filter(|_| alloc(32 << 20, 16).is_null()).count());
        let users: Vec<_> = (0..3u8)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..3000 {
                        let p = alloc(60_000, 8);
                        assert!(
                            !p.is_null(),
                            "thread {t}: allocation {i} of 60,000 bytes failed with free runs listed"
                        );
                        stamp(p, 64, t, false);
                        // SAFETY: a live block, freed once.
                        unsafe { free(p) };
                    }
                })
            })
            .collect();
        users.into_iter().for_each(|u| u.join().unwrap());
        assert_eq!(asker.join().unwrap(), 300, "no 32 MiB run exists");
        free_all(kept.into_iter().map(|(_, p)| p).collect());
    }

    #[test]
    fn concurrent_threads_never_share_a_block() {
        extern crate std;
        use std::vec::Vec;
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        let ps: Vec<*mut u8> = (0..8).map(|_| alloc(24, 8)).collect();
                        // SAFETY: each block is live and 32 bytes.
                        ps.iter().for_each(|p| unsafe { core::ptr::write_bytes(*p, t, 24) });
                        for p in &ps {
                            // SAFETY: as above; no other thread holds the block.
                            assert!(unsafe { core::slice::from_raw_parts(*p, 24) }.iter().all(|b| *b == t));
                            // SAFETY: live block, freed once.
                            unsafe { free(*p) };
                        }
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
    }
}
