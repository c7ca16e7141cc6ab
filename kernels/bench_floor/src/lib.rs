//! The baselines `hostcall-bench` puts beside each hostcall figure, written
//! the way a CUDA programmer would write them, with no hostcall and no device
//! libc: what the hardware and CUDA's own device runtime do for the same job.
//!
//! * `pingpong`: one thread writes a word to mapped pinned host memory and
//!   spins until the host writes it back, `BENCH_N` times, each round trip
//!   timed on `%globaltimer` into the mapped `BENCH_SAMPLES`: the floor of
//!   any call from the GPU to the host.
//! * `mailbox`: lane 0 of every warp does the same through its own 128-byte
//!   mailbox (request word at +0, reply word at +64), `BENCH_N` times; one
//!   host thread serves all of them: the floor of a call rate.
//! * `cuda_printf`: every thread prints one line with CUDA's `vprintf`.
//! * `cuda_malloc`: every thread allocates, fills, sums and frees 64 arrays
//!   with CUDA's device `malloc`/`free` (the same pattern as `bench_std`'s
//!   `alloc_vec`).
//!
//! The host writes the parameters into the globals before each launch and
//! reads the results after; `BENCH_T0`/`BENCH_T1` are the earliest start and
//! the latest end of any thread, in `%globaltimer` nanoseconds.
#![no_std]
#![feature(abi_ptx, asm_experimental_arch, stdarch_nvptx)]

use core::arch::{asm, nvptx};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Device address of the request word(s) (`pingpong`: one word; `mailbox`:
/// one 128-byte mailbox per warp).
#[no_mangle]
pub static BENCH_REQ: AtomicU64 = AtomicU64::new(0);
/// `pingpong`: device address of the reply word.
#[no_mangle]
pub static BENCH_RESP: AtomicU64 = AtomicU64::new(0);

pub use bench_globals::{BENCH_FAIL, BENCH_N, BENCH_SAMPLES, BENCH_SUM, BENCH_T0, BENCH_T1};
use bench_globals::{elements, span};

extern "C" {
    /// CUDA's device printf: the format and a buffer of its arguments.
    fn vprintf(format: *const u8, args: *const u8) -> i32;
    /// CUDA's device heap (`cuCtxSetLimit(CU_LIMIT_MALLOC_HEAP_SIZE)`).
    fn malloc(size: usize) -> *mut u8;
    fn free(ptr: *mut u8);
}

fn global_thread_id() -> u64 {
    // SAFETY: reads of special registers.
    unsafe {
        u64::from(nvptx::_block_idx_x()) * u64::from(nvptx::_block_dim_x()) + u64::from(nvptx::_thread_idx_x())
    }
}

fn timer_ns() -> u64 {
    let t: u64;
    // SAFETY: reads a special register; not `pure`, so each read stays put.
    unsafe { asm!("mov.u64 {}, %globaltimer;", out(reg64) t, options(nomem, nostack, preserves_flags)) };
    t
}

/// Make this thread's earlier writes visible to the host before later ones.
fn fence_sys() {
    // SAFETY: a fence has no operands.
    unsafe { asm!("fence.sc.sys;", options(nostack, preserves_flags)) };
}

fn nanosleep(ns: u32) {
    // SAFETY: only suspends this thread.
    unsafe { asm!("nanosleep.u32 {};", in(reg32) ns, options(nomem, nostack, preserves_flags)) };
}

/// The word at device address `addr`, seen atomically.
///
/// # Safety
/// `addr` is an 8-byte aligned address the host set up for this launch and
/// keeps alive until the kernel ends.
unsafe fn word<'a>(addr: u64) -> &'a AtomicU64 {
    // SAFETY: the caller's contract.
    unsafe { &*(addr as *const AtomicU64) }
}

#[no_mangle]
pub extern "ptx-kernel" fn pingpong() {
    pingpong_with(0);
}

/// How `pingpong_push` makes its store reach the host: `BENCH_MODE`
/// 0: `fence.sc.sys` after it (as `pingpong`); 1: nothing; 2:
/// `fence.acq_rel.sys` after it; 3: the store itself `st.release.sys`; 4: a
/// load of the same word after it.
#[no_mangle]
pub static BENCH_MODE: AtomicU64 = AtomicU64::new(0);

/// `pingpong` with the store pushed out as `BENCH_MODE` says: which way
/// reaches the host first.
#[no_mangle]
pub extern "ptx-kernel" fn pingpong_push() {
    pingpong_with(BENCH_MODE.load(Relaxed));
}

fn pingpong_with(mode: u64) {
    if global_thread_id() != 0 {
        return;
    }
    let n = BENCH_N.load(Relaxed);
    // SAFETY: the host points these at mapped words (and `n` samples) that
    // live until the kernel ends.
    let (req, resp, samples) = unsafe {
        (word(BENCH_REQ.load(Relaxed)), word(BENCH_RESP.load(Relaxed)), BENCH_SAMPLES.load(Relaxed))
    };
    let start = timer_ns();
    for i in 1..=n {
        let t0 = timer_ns();
        match mode {
            0 => {
                req.store(i, Relaxed);
                fence_sys();
            }
            1 => req.store(i, Relaxed),
            2 => {
                req.store(i, Relaxed);
                // SAFETY: a fence has no operands.
                unsafe { asm!("fence.acq_rel.sys;", options(nostack, preserves_flags)) };
            }
            3 => req.store(i, core::sync::atomic::Ordering::Release),
            _ => {
                req.store(i, Relaxed);
                let _ = req.load(Relaxed);
            }
        }
        while resp.load(Relaxed) != i {}
        let dt = timer_ns() - t0;
        // SAFETY: sample `i - 1` of the `n` the host allocated.
        unsafe { word(samples + 8 * (i - 1)) }.store(dt, Relaxed);
    }
    span(start, timer_ns());
}

#[no_mangle]
pub extern "ptx-kernel" fn mailbox() {
    let tid = global_thread_id();
    if tid % 32 != 0 {
        return;
    }
    let n = BENCH_N.load(Relaxed);
    let mailbox = BENCH_REQ.load(Relaxed) + 128 * (tid / 32);
    // SAFETY: the host allocated one 128-byte mailbox per warp of the launch.
    let (req, resp) = unsafe { (word(mailbox), word(mailbox + 64)) };
    let start = timer_ns();
    for i in 1..=n {
        req.store(i, Relaxed);
        fence_sys();
        while resp.load(Relaxed) != i {
            nanosleep(64);
        }
    }
    span(start, timer_ns());
}

#[no_mangle]
pub extern "ptx-kernel" fn cuda_printf() {
    let args = [global_thread_id() as u32];
    // SAFETY: a NUL-terminated format with one `%u`, and its argument laid
    // out as vprintf reads it (a 4-byte unsigned at offset 0).
    unsafe { vprintf(c"hello from thread %u\n".as_ptr().cast(), args.as_ptr().cast()) };
}

#[no_mangle]
pub extern "ptx-kernel" fn cuda_malloc() {
    let tid = global_thread_id();
    let start = timer_ns();
    let mut sum = 0u64;
    for i in 0..64 {
        let n = elements(tid, i);
        // SAFETY: CUDA's device malloc; null when the heap is exhausted.
        let p = unsafe { malloc(n * 8) }.cast::<u64>();
        if p.is_null() {
            BENCH_FAIL.fetch_add(1, Relaxed);
            continue;
        }
        for j in 0..n {
            // SAFETY: `p` holds `n` u64s.
            unsafe { p.add(j).write(i + j as u64) };
        }
        // SAFETY: the `n` u64s were all written above. `black_box` keeps the
        // writes and reads (as `bench_std` keeps its `Vec`'s).
        let v = core::hint::black_box(unsafe { core::slice::from_raw_parts(p, n) });
        sum += v.iter().sum::<u64>();
        // SAFETY: allocated above by `malloc`, freed once.
        unsafe { free(p.cast()) };
    }
    BENCH_SUM.fetch_add(sum, Relaxed);
    span(start, timer_ns());
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: `trap` ends the kernel.
    unsafe { asm!("trap;", options(noreturn, nostack)) }
}
