//! The real server under load on the emulation backend: 64 device threads,
//! 10,000 echo calls each, payloads of every size up to MAX_INLINE, a 4 KiB
//! buffer pair (the ring fills and wraps constantly) and 64 slots (reused
//! constantly). Every reply is checked against its own call.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use hostcall_runtime::backend::emu::EmuModule;
use hostcall_runtime::hostcall_abi::op::{Echo, Request};
use hostcall_runtime::hostcall_abi::{limits, Call};
use hostcall_runtime::QueueConfig;

/// Under Miri (`.ci/run`): 4 threads of 6 calls, every interleaving Miri
/// picks checked for data races and undefined behaviour.
const THREADS: u32 = if cfg!(miri) { 4 } else { 64 };
const CALLS: u64 = if cfg!(miri) { 6 } else { 10_000 };

#[test]
fn echo_stress_64_threads_small_ring_few_slots() {
    let dir = tempfile::tempdir().unwrap();
    // One pattern buffer; each call sends a window of it chosen by its hash,
    // so payloads differ per call without generating bytes per call.
    let pattern: Arc<Vec<u8>> = Arc::new((0..2 * limits::MAX_INLINE as u64).map(|i| common::mix(i) as u8).collect());
    let module = EmuModule::new().hostcall(Echo::NAME).global("FAILURES").global("DONE").entry("stress", move |ctx| {
        let fails = ctx.global("FAILURES").unwrap();
        let done = ctx.global("DONE").unwrap();
        let op = ctx.hostcall_id(Echo::NAME);
        let q = ctx.queue().expect("queue configured");
        let mut reply = vec![0u8; limits::MAX_INLINE];
        for i in 0..CALLS {
            let h = common::mix(u64::from(ctx.thread_id) << 32 | i);
            let a = u64::from(ctx.thread_id) << 40 | i;
            let b = h;
            // Every size from 0 to MAX_INLINE, biased to small ones.
            let len = match h % 4 {
                0 => 0,
                1 => (h >> 8) as usize % 64,
                _ => (h >> 8) as usize % (limits::MAX_INLINE + 1),
            };
            let off = (h >> 32) as usize % limits::MAX_INLINE;
            let payload = &pattern[off..off + len];
            let call = Call::new(op, Echo { a, b }.to_args()).payload(payload);
            match q.call::<hostcall_runtime::backend::emu::EmuPlatform>(&call, &mut reply) {
                Ok(c) if c.errno == 0 && c.value == a ^ b && c.data_len == len && &reply[..len] == payload => {}
                other => {
                    if fails.fetch_add(1, Relaxed) < 5 {
                        eprintln!("thread {} call {i}: {other:?} (len {len})", ctx.thread_id);
                    }
                }
            }
            done.fetch_add(1, Relaxed);
        }
    });
    // The smallest ring: it fills and wraps constantly.
    let queue = QueueConfig {
        buff_size: limits::MIN_BUFF_SIZE,
        reply_data_size: limits::MAX_INLINE.next_multiple_of(8) as u64,
        rings: 1,
    };
    let mut rig = common::rig(dir.path(), queue, module);
    let t = Instant::now();
    let report = rig.rt.launch("stress", 4, THREADS / 4).expect("run");
    let secs = t.elapsed().as_secs_f64();
    let total = u64::from(THREADS) * CALLS;
    eprintln!("{total} calls in {secs:.2} s ({:.0} calls/s)", total as f64 / secs);
    assert_eq!(rig.rt.read_global_u64("FAILURES").unwrap(), 0);
    assert_eq!(rig.rt.read_global_u64("DONE").unwrap(), total);
    assert_eq!(report.calls, total, "every call served exactly once");
    // CPU threads are warps of one lane: a record per call.
    assert_eq!(report.records, total);
    assert_eq!(report.per_op.get("echo"), Some(&total));
    assert_eq!(report.errors, 0);
    assert_eq!(report.exit_code, None);
}
