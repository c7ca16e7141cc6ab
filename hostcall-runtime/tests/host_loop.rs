//! What the server costs per call, with no GPU and no bus: one emulated
//! thread writes whole-warp records of 32 `echo` lanes straight into the
//! ring (as a warp of the GPU would), then publishes their headers all at
//! once, and the real server serves them. Prints nanoseconds per call from
//! the first header to the last reply; run it with
//! `cargo test --release -p hostcall-runtime --test host_loop -- --ignored --nocapture`.
//! (Not a timed test: it checks only that every call was served.)

mod common;

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hostcall_runtime::backend::emu::EmuModule;
use hostcall_runtime::hostcall_abi::op::{Echo, Request};
use hostcall_runtime::hostcall_abi::{
    extra_block_lines, extra_word, lane_word, record_flag, reply_word, Header, Lane, Reply, LINE_WORDS, WARP_LANES,
};
use hostcall_runtime::QueueConfig;

static SERVED_IN: Mutex<Option<Duration>> = Mutex::new(None);

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn host_loop_cost_per_call() {
    // Records of 33 lines: 60,000 fit in the ring of a 64 MiB buffer pair.
    measure(60_000, WARP_LANES as usize, 0);
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn host_loop_cost_per_call_256_byte_echo() {
    measure(12_000, WARP_LANES as usize, 256);
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn host_loop_cost_per_call_256_byte_echo_lanes_alone() {
    // Each lane a record of its own, as warps whose lanes diverged send.
    measure(300_000, 1, 256);
}

/// `records` records of `n` lanes' echo calls, each lane sending `payload`
/// bytes (and getting them back as reply data).
fn measure(records: u64, n: usize, payload: usize) {
    let dir = tempfile::tempdir().unwrap();
    let module = EmuModule::new().hostcall(Echo::NAME).entry("warp", move |ctx| {
        if ctx.thread_id != 0 {
            return;
        }
        let op = ctx.hostcall_id(Echo::NAME);
        let q = ctx.queue().expect("queue configured");
        let rows = Lane::extra_pairs(payload, false);
        let lines = 1 + n as u64 + extra_block_lines(n as u64, rows);
        assert!(records * lines <= q.geometry.ring_lines());
        q.top.store(records * lines, Relaxed);
        for k in 0..records {
            let ticket = k * lines;
            let block = (ticket as usize + 1) * LINE_WORDS;
            for r in 0..n {
                let l = Lane {
                    args: Echo { a: k, b: r as u64 }.to_args(),
                    payload_len: payload as u32,
                    region: false,
                    seq: 1,
                };
                for (w, &v) in l.to_words(record_flag(ticket)).iter().enumerate() {
                    q.ring[block + lane_word(n, r, w)].store(v, Relaxed);
                }
                // The extra block, pair-major: pair j of every lane, then j + 1.
                let extra_block = block + n * LINE_WORDS;
                for w in 0..payload.div_ceil(8) {
                    q.ring[extra_block + extra_word(n, r, w / 2, w % 2)].store(k ^ w as u64, Relaxed);
                }
            }
        }
        let t0 = Instant::now();
        for k in 0..records {
            let ticket = k * lines;
            let lanes = ((1u64 << n) - 1) as u32;
            let h = Header { op, lanes, base_slot: 0, lines: lines as u32, flags: 0 };
            for (w, &v) in h.to_words(record_flag(ticket)).iter().enumerate() {
                q.ring[ticket as usize * LINE_WORDS + w].store(v, Release);
            }
        }
        // Lane 31 of the last record answered: every record was served (in
        // ticket order; each record's reply overwrites the last, same seq).
        let a = records - 1;
        loop {
            let w: [u64; 4] = std::array::from_fn(|i| q.slots[reply_word(n - 1, i)].load(Acquire));
            if Reply::from_words(&w, 1).is_some_and(|r| r.value == a ^ (n as u64 - 1)) {
                break;
            }
            // Sleep, not spin: this core is the server's competition.
            std::thread::sleep(Duration::from_micros(200));
        }
        *SERVED_IN.lock().unwrap() = Some(t0.elapsed());
    });
    let queue = QueueConfig { buff_size: 64 << 20, reply_data_size: 512, rings: 1 };
    let mut rig = common::rig(dir.path(), queue, module);
    let report = rig.rt.launch("warp", 1, 32).expect("run");
    let calls = records * n as u64;
    assert_eq!(report.calls, calls);
    assert_eq!(report.errors, 0);
    let secs = SERVED_IN.lock().unwrap().take().expect("timed").as_secs_f64();
    eprintln!(
        "{calls} echo calls of {payload} bytes in {records} records of {n}: {:.1} ns per call",
        secs * 1e9 / calls as f64
    );
}
