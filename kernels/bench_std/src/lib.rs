//! What `hostcall-bench` measures, written as a user writes it: std where
//! std does the job (`println!`, `std::fs::File`, `Vec`), and
//! `libc_hostcall::echo` (the test hostcall: the host returns `a ^ b`) where
//! a figure is about the call itself.
//!
//! * `null_call`: one thread, `BENCH_N` calls, each timed on `%globaltimer`
//!   into the mapped `BENCH_SAMPLES`.
//! * `null_post`: the same calls posted (no reply awaited): the device's
//!   own cost of sending one.
//! * `calls`: every thread makes `BENCH_N` calls and checks each reply.
//! * `print_line`: every thread prints one line with `println!`.
//! * `file_write` / `file_read`: thread 0 of each block moves its share of
//!   `BENCH_BYTES` to or from the file named by the `BENCH_PATH` variable in
//!   `BENCH_CHUNK`-byte `write_all`/`read_exact` calls (at its own offset,
//!   `write_all_at`/`read_exact_at`, when there is more than one block),
//!   timed from after its buffer is made to its last call's reply.
//! * `alloc_vec`: every thread allocates, fills, sums and frees 64 `Vec<u64>`
//!   of 1..=256 elements (as `bench_floor`'s `cuda_malloc`).
//!
//! The host writes the parameters into the globals before each launch and
//! reads the results after; `BENCH_T0`/`BENCH_T1` are the earliest start and
//! the latest end of any thread in `%globaltimer` nanoseconds, and
//! `BENCH_FAIL` counts what went wrong (a wrong reply, an I/O error).
#![feature(abi_ptx, asm_experimental_arch, stdarch_nvptx)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hostcall_abi::sync::Platform;
use hostcall_abi::Call;
use libc_hostcall::arch;
use libc_hostcall::hostcall::{ids, with_queue, Gpu};

#[no_mangle]
pub static BENCH_BYTES: AtomicU64 = AtomicU64::new(0);
#[no_mangle]
pub static BENCH_CHUNK: AtomicU64 = AtomicU64::new(1 << 20);

use bench_globals::{elements, fail};
pub use bench_globals::{BENCH_FAIL, BENCH_N, BENCH_SAMPLES, BENCH_SUM, BENCH_T0, BENCH_T1};

/// This thread ran from `t0` until now.
fn span(t0: u64) {
    bench_globals::span(t0, arch::global_timer_ns());
}

/// Store `dt` as sample `i` of the mapped array at `samples`.
///
/// # Safety
/// `samples` is `BENCH_SAMPLES`: the host points it at mapped u64s that
/// live until the kernel ends, and `i` is below their number.
#[inline(always)]
unsafe fn record(samples: u64, i: u64, dt: u64) {
    // SAFETY: the caller's contract.
    unsafe { &*((samples + 8 * i) as *const AtomicU64) }.store(dt, Relaxed);
}

#[no_mangle]
pub extern "ptx-kernel" fn null_call() {
    if arch::global_thread_id() != 0 {
        return;
    }
    let n = BENCH_N.load(Relaxed);
    let samples = BENCH_SAMPLES.load(Relaxed);
    let start = arch::global_timer_ns();
    for i in 0..n {
        let t0 = arch::global_timer_ns();
        let ok = libc_hostcall::echo(i, 0, &[], &mut []) == Ok(i);
        let dt = arch::global_timer_ns() - t0;
        // SAFETY: the host allocated `n` samples; `i < n`.
        unsafe { record(samples, i, dt) };
        if !ok {
            fail();
        }
    }
    span(start);
}

/// `null_call` without the wait: each call posted (no reply), so each
/// sample is what the device spends sending one.
#[no_mangle]
pub extern "ptx-kernel" fn null_post() {
    if arch::global_thread_id() != 0 {
        return;
    }
    let n = BENCH_N.load(Relaxed);
    let samples = BENCH_SAMPLES.load(Relaxed);
    let start = arch::global_timer_ns();
    for i in 0..n {
        let t0 = arch::global_timer_ns();
        let req = hostcall_abi::op::Echo { a: i, b: 0 };
        let ok = libc_hostcall::hostcall::post(&libc_hostcall::hostcall::ids::__HOSTCALL__echo, &req, &[]).is_ok();
        let dt = arch::global_timer_ns() - t0;
        // SAFETY: the host allocated `n` samples; `i < n`.
        unsafe { record(samples, i, dt) };
        if !ok {
            fail();
        }
    }
    span(start);
}

/// The steps a call is made of, each timed alone on one thread, `BENCH_N`
/// times: where `null_post`'s time goes. `BENCH_SAMPLES` holds
/// `PARTS.len() * BENCH_N` samples (part-major) and then 16 words of mapped
/// scratch. The parts, in order:
/// * `fence`: `fence.sc.sys` with no store outstanding;
/// * `store_fence`: one 16-byte store to mapped host memory, then the fence
///   (what a posted call that writes one pair pays);
/// * `record_fence`: two lines (eight 16-byte stores, a null call's record),
///   then the fence;
/// * `atom`: `atom.add` on a device global whose result is used (the ticket);
/// * `config`: the queue's configuration globals read after a fence (what
///   every call reads before it can write);
/// * `poll`: one 16-byte load from mapped host memory (one poll of a reply);
/// * `config_warm`: `config` again at once, no fence between;
/// * `id`: an op's ID global, read after a fence.
#[no_mangle]
pub extern "ptx-kernel" fn call_parts() {
    if arch::global_thread_id() != 0 {
        return;
    }
    let n = BENCH_N.load(Relaxed);
    let samples = BENCH_SAMPLES.load(Relaxed);
    let scratch = (samples + 8 * PARTS * n) as *mut u64;
    let start = arch::global_timer_ns();
    let mut sink = 0u64;
    for i in 0..n {
        let mut t = [0u64; PARTS as usize];
        let t0 = arch::global_timer_ns();
        arch::fence_sc_sys();
        t[0] = arch::global_timer_ns() - t0;
        // SAFETY: `scratch` is 16 mapped words, 16-byte aligned (the host
        // allocates the samples page-aligned and `n` even).
        unsafe {
            let t0 = arch::global_timer_ns();
            arch::store_pair(scratch, [i, sink]);
            arch::fence_sc_sys();
            t[1] = arch::global_timer_ns() - t0;
            let t0 = arch::global_timer_ns();
            for k in 0..8 {
                arch::store_pair(scratch.add(2 * k), [i, k as u64]);
            }
            arch::fence_sc_sys();
            t[2] = arch::global_timer_ns() - t0;
        }
        let t0 = arch::global_timer_ns();
        sink = sink.wrapping_add(PARTS_TICKET.fetch_add(2, Relaxed));
        t[3] = timer_after(sink) - t0;
        arch::fence_sc_sys();
        let t0 = arch::global_timer_ns();
        sink = sink.wrapping_add(libc_hostcall::hostcall::geometry().map_or(1, |g| g.slot_count));
        t[4] = timer_after(sink) - t0;
        let t0 = arch::global_timer_ns();
        // SAFETY: as above.
        let w = unsafe { arch::load_pair(scratch) };
        sink = sink.wrapping_add(w[0]);
        t[5] = timer_after(sink) - t0;
        let t0 = arch::global_timer_ns();
        sink = sink.wrapping_add(libc_hostcall::hostcall::geometry().map_or(1, |g| g.slot_count));
        t[6] = timer_after(sink) - t0;
        arch::fence_sc_sys();
        let t0 = arch::global_timer_ns();
        sink = sink.wrapping_add(u64::from(ids::__HOSTCALL__echo.get()));
        t[7] = timer_after(sink) - t0;
        for (k, dt) in t.iter().enumerate() {
            // SAFETY: the host allocated `PARTS * n` samples; `k < PARTS`, `i < n`.
            unsafe { record(samples, k as u64 * n + i, *dt) };
        }
    }
    BENCH_SUM.store(sink, Relaxed);
    span(start);
}

/// How many parts `call_parts` times.
pub const PARTS: u64 = 8;

static PARTS_TICKET: AtomicU64 = AtomicU64::new(0);

/// `%globaltimer`, read only once `dep` has arrived: the read sits behind a
/// branch on `dep`, so neither the compiler nor the GPU can take the time
/// while a load or atomic that produced `dep` is still in flight.
fn timer_after(dep: u64) -> u64 {
    let t: u64;
    // SAFETY: reads a special register; the trap is never taken (no value
    // of `dep` in these loops is u64::MAX, and if one were the kernel
    // would stop with an error rather than misreport).
    unsafe {
        core::arch::asm!(
            "{{ .reg .pred %p; setp.eq.u64 %p, {d}, -1; @%p trap; mov.u64 {t}, %globaltimer; }}",
            d = in(reg64) dep,
            t = out(reg64) t,
            options(nostack)
        )
    };
    t
}

/// How `null_call_push` publishes a record: `BENCH_MODE` 0: nothing after
/// the stores; 1: `fence.sc.sys` after them (as the device libc); 2:
/// `fence.acq_rel.sys` after them; 3: as 1, the configuration and the op's
/// ID read for every call.
#[no_mangle]
pub static BENCH_MODE: AtomicU64 = AtomicU64::new(0);

/// `null_call` through the queue directly (its configuration read once),
/// publishing as `BENCH_MODE` says: which way gets the reply back first.
#[no_mangle]
pub extern "ptx-kernel" fn null_call_push() {
    match BENCH_MODE.load(Relaxed) {
        1 => push_calls::<Push<1>>(),
        2 => push_calls::<Push<2>>(),
        3 => reread_calls(),
        _ => push_calls::<Push<0>>(),
    }
}

/// Mode 3: as mode 1, with the queue's configuration and the op's ID read
/// again for every call (as the device libc does).
fn reread_calls() {
    if arch::global_thread_id() != 0 {
        return;
    }
    let n = BENCH_N.load(Relaxed);
    let samples = BENCH_SAMPLES.load(Relaxed);
    for i in 0..n {
        let t0 = arch::global_timer_ns();
        let done = with_queue(&ids::__HOSTCALL__echo, |q, id| q.call::<Push<1>>(&Call::new(id, [i, 0, 0]), &mut []));
        let value = done.map_or(u64::MAX - 1, |d| d.value);
        let dt = timer_after(value) - t0;
        // SAFETY: the host allocated `n` samples; `i < n`.
        unsafe { record(samples, i, dt) };
        if value != i {
            fail();
        }
    }
}

fn push_calls<P: Platform>() {
    if arch::global_thread_id() != 0 {
        return;
    }
    let n = BENCH_N.load(Relaxed);
    let samples = BENCH_SAMPLES.load(Relaxed);
    let r = with_queue(&ids::__HOSTCALL__echo, |q, id| {
        for i in 0..n {
            let t0 = arch::global_timer_ns();
            let done = q.call::<P>(&Call::new(id, [i, 0, 0]), &mut [])?;
            let dt = timer_after(done.value) - t0;
            // SAFETY: the host allocated `n` samples; `i < n`.
            unsafe { record(samples, i, dt) };
            if done.value != i {
                fail();
            }
        }
        Ok(())
    });
    if r.is_err() {
        fail();
    }
}

/// The GPU platform with `after_publish` chosen by `MODE` (see `BENCH_MODE`).
enum Push<const MODE: u8> {}

impl<const MODE: u8> Platform for Push<MODE> {
    fn backoff(round: u32) {
        Gpu::backoff(round)
    }
    fn slot() -> u32 {
        Gpu::slot()
    }
    fn lane() -> u32 {
        Gpu::lane()
    }
    fn active_lanes() -> u32 {
        Gpu::active_lanes()
    }
    fn match_lanes(mask: u32, key: u32) -> u32 {
        Gpu::match_lanes(mask, key)
    }
    fn shuffle(mask: u32, value: u64, src: u32) -> u64 {
        Gpu::shuffle(mask, value, src)
    }
    fn ballot(mask: u32, pred: bool) -> u32 {
        Gpu::ballot(mask, pred)
    }
    fn sync_lanes(mask: u32) {
        Gpu::sync_lanes(mask)
    }
    fn after_publish() {
        match MODE {
            1 => arch::fence_sc_sys(),
            2 => arch::fence_sys(),
            _ => {}
        }
    }
}

#[no_mangle]
pub extern "ptx-kernel" fn calls() {
    let tid = arch::global_thread_id();
    let n = BENCH_N.load(Relaxed);
    let start = arch::global_timer_ns();
    let mut failures = 0;
    for i in 0..n {
        let a = tid << 20 | i;
        failures += u64::from(libc_hostcall::echo(a, 0, &[], &mut []) != Ok(a));
    }
    if failures > 0 {
        BENCH_FAIL.fetch_add(failures, Relaxed);
    }
    span(start);
}

/// As `calls`, each call echoing a payload of 0 to 511 bytes (chosen by
/// thread and call), its reply data checked byte for byte.
#[no_mangle]
pub extern "ptx-kernel" fn calls_payload() {
    payload_calls(false);
}

/// As `calls_payload`, the warp brought together (`bar.warp.sync`) before
/// each call, as a CUDA programmer would with `__syncwarp()`: filling
/// payloads of different lengths leaves the lanes apart, and lanes that
/// call apart send records of their own.
#[no_mangle]
pub extern "ptx-kernel" fn calls_payload_synced() {
    payload_calls(true);
}

fn payload_calls(synced: bool) {
    let tid = arch::global_thread_id();
    let n = BENCH_N.load(Relaxed);
    let mut out = [0u8; 512];
    let mut back = [0u8; 512];
    let start = arch::global_timer_ns();
    let mut failures = 0;
    for i in 0..n {
        let a = tid << 20 | i;
        let h = a.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let len = (h >> 40) as usize % 512;
        for (k, b) in out[..len].iter_mut().enumerate() {
            *b = (h >> (k % 8 * 8)) as u8 ^ k as u8;
        }
        if synced {
            // Every lane of the warp runs this loop the same number of times.
            arch::warp_sync(u32::MAX);
        }
        let ok = libc_hostcall::echo(a, 0, &out[..len], &mut back) == Ok(a) && back[..len] == out[..len];
        failures += u64::from(!ok);
    }
    if failures > 0 {
        BENCH_FAIL.fetch_add(failures, Relaxed);
    }
    span(start);
}

#[no_mangle]
pub extern "ptx-kernel" fn print_line() {
    println!("hello from thread {}", arch::global_thread_id());
}

/// This block's share of the file: `(offset, bytes, chunk)`, when this
/// thread is the block's first.
fn share() -> Option<(u64, u64, usize)> {
    use core::arch::nvptx::{_block_idx_x, _grid_dim_x, _thread_idx_x};
    // SAFETY: reads of special registers.
    let (thread, block, blocks) = unsafe { (_thread_idx_x(), _block_idx_x(), _grid_dim_x()) };
    if thread != 0 {
        return None;
    }
    let per_block = BENCH_BYTES.load(Relaxed) / u64::from(blocks);
    let chunk = BENCH_CHUNK.load(Relaxed).clamp(1, per_block.max(1)) as usize;
    Some((u64::from(block) * per_block, per_block, chunk))
}

fn bench_path() -> Option<String> {
    std::env::var("BENCH_PATH").ok()
}

#[no_mangle]
pub extern "ptx-kernel" fn file_write() {
    let Some((offset, bytes, chunk)) = share() else { return };
    // Filled before the clock starts: one GPU thread sets bytes at ~0.2
    // GB/s (LLVM's NVPTX backend turns memset into a byte loop), which is
    // not what this figure measures.
    let buf = vec![offset as u8 ^ 0x5a; chunk];
    let start = arch::global_timer_ns();
    let Some(mut file) = bench_path().and_then(|p| OpenOptions::new().write(true).open(p).ok()) else {
        return fail();
    };
    let sequential = offset == 0 && bytes == BENCH_BYTES.load(Relaxed);
    let mut done = 0;
    while done < bytes {
        let len = chunk.min((bytes - done) as usize);
        let r = if sequential { file.write_all(&buf[..len]) } else { file.write_all_at(&buf[..len], offset + done) };
        if r.is_err() {
            return fail();
        }
        done += len as u64;
    }
    span(start);
}

#[no_mangle]
pub extern "ptx-kernel" fn file_read() {
    let Some((offset, bytes, chunk)) = share() else { return };
    // Allocated (and zeroed) before the clock starts, as in `file_write`.
    let mut buf = vec![0u8; chunk];
    let start = arch::global_timer_ns();
    let Some(mut file) = bench_path().and_then(|p| File::open(p).ok()) else { return fail() };
    let sequential = offset == 0 && bytes == BENCH_BYTES.load(Relaxed);
    let (mut done, mut sum) = (0, 0u64);
    while done < bytes {
        let len = chunk.min((bytes - done) as usize);
        let r = if sequential {
            file.read_exact(&mut buf[..len])
        } else {
            file.read_exact_at(&mut buf[..len], offset + done)
        };
        if r.is_err() {
            return fail();
        }
        // One byte of each chunk: the bytes landed (the host checks the sum).
        sum += u64::from(buf[len - 1]);
        done += len as u64;
    }
    BENCH_SUM.fetch_add(sum, Relaxed);
    span(start);
}

#[no_mangle]
pub extern "ptx-kernel" fn alloc_vec() {
    let tid = arch::global_thread_id();
    let start = arch::global_timer_ns();
    let mut sum = 0u64;
    for i in 0..64 {
        let n = elements(tid, i);
        let mut v: Vec<u64> = Vec::new();
        if v.try_reserve_exact(n).is_err() {
            fail();
            continue;
        }
        v.extend((0..n as u64).map(|j| i + j));
        sum += std::hint::black_box(&v).iter().sum::<u64>();
    }
    BENCH_SUM.fetch_add(sum, Relaxed);
    span(start);
}
