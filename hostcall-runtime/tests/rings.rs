//! A queue of several rings on the emulation backend: concurrent hostcalls
//! (`echo`, a user's own) spread over every ring and are answered by the
//! rings' own server threads, while ordered calls (output) stay on ring 0 in
//! order; a corrupt record on a ring past the first ends the run.

mod common;

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::Arc;

use hostcall_runtime::backend::emu::EmuModule;
use hostcall_runtime::hostcall_abi::op::{Echo, Request, Write};
use hostcall_runtime::hostcall_abi::{limits, record_flag, rings, Call, Header};
use hostcall_runtime::{QueueConfig, RuntimeError};

const THREADS: u32 = if cfg!(miri) { 4 } else { 128 };
const CALLS: u64 = if cfg!(miri) { 3 } else { 1_000 };
const RINGS: u64 = 4;

/// The smallest buffers the grid allows: ring 0 (sized for every warp) and
/// the rings past it (sized for their share) then differ.
fn queue(rings: u64) -> QueueConfig {
    QueueConfig { rings, buff_size: limits::MIN_BUFF_SIZE, ..QueueConfig::DEFAULT }
}

#[test]
fn concurrent_calls_use_every_ring_and_ordered_ones_stay_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let module = EmuModule::new().hostcall(Echo::NAME).hostcall(Write::NAME).hostcall("tally").global("FAILURES");
    let module = module.entry("mixed", |ctx| {
        let fails = ctx.global("FAILURES").unwrap();
        let t = u64::from(ctx.thread_id);
        let mut reply = [0u8; 64];
        for i in 0..CALLS {
            let (a, b) = (t << 32 | i, common::mix(i));
            let payload = (a ^ b).to_le_bytes();
            let call = Call::new(0, Echo { a, b }.to_args()).payload(&payload);
            match ctx.call(Echo::NAME, call, &mut reply) {
                Ok(c) if c.value == a ^ b && reply[..c.data_len] == payload => {}
                _ => {
                    fails.fetch_add(1, Relaxed);
                }
            }
            if i % 50 == 0 {
                // Ordered: a posted line, in ring 0's order.
                let line = format!("thread {t} line {i}\n");
                let _ = ctx.post(Write::NAME, Call::new(0, Write { fd: 1 }.to_args()).payload(line.as_bytes()));
                // A concurrent hostcall of the user's, with its own state.
                let _ = ctx.call("tally", Call::new(0, [1, 0, 0]), &mut []);
            }
        }
    });
    let q = queue(RINGS);
    let g = q.geometry(u64::from(THREADS)).unwrap();
    if !cfg!(miri) {
        assert!(q.ring_buff_size(&g, RINGS) < g.buff_size, "rings past the first are smaller");
    }
    let mut rig = common::rig(dir.path(), q, module);
    let tally = Arc::new(AtomicU64::new(0));
    let seen = tally.clone();
    rig.rt
        .registry_mut()
        .register_concurrent_raw("tally", move |_, args, _| Ok(seen.fetch_add(args[0], Relaxed) + args[0]))
        .unwrap();
    let report = rig.rt.launch("mixed", 2, THREADS / 2).expect("run");
    assert_eq!(rig.rt.read_global_u64("FAILURES").unwrap(), 0);
    let lines = u64::from(THREADS) * CALLS.div_ceil(50);
    let total = u64::from(THREADS) * CALLS + 2 * lines;
    assert_eq!(report.calls, total, "every call served once");
    assert_eq!(report.errors, 0);
    assert_eq!(tally.load(Relaxed), lines);
    // Thread t is a warp of its own: its concurrent calls go to ring t % 4,
    // and ring 0 has every write besides its own share.
    assert_eq!(report.calls_per_ring.len(), RINGS as usize);
    let per_ring = u64::from(THREADS) / RINGS * (CALLS + lines / u64::from(THREADS));
    assert_eq!(report.calls_per_ring[0], per_ring + lines, "{:?}", report.calls_per_ring);
    assert!(report.calls_per_ring[1..].iter().all(|&n| n == per_ring), "{:?}", report.calls_per_ring);
    // Each thread's lines, whole and in order.
    let out = rig.stdout.to_string_lossy();
    for t in 0..THREADS {
        let mine: Vec<&str> = out.lines().filter(|l| l.starts_with(&format!("thread {t} "))).collect();
        let want: Vec<String> = (0..CALLS).step_by(50).map(|i| format!("thread {t} line {i}")).collect();
        assert_eq!(mine, want);
    }
}

#[test]
fn one_ring_serves_everything_and_concurrent_handlers_run_there_too() {
    let dir = tempfile::tempdir().unwrap();
    let module = EmuModule::new().hostcall(Echo::NAME).entry("echo", |ctx| {
        let c = ctx.call(Echo::NAME, Call::new(0, Echo { a: 6, b: 3 }.to_args()), &mut []).unwrap();
        assert_eq!(c.value, 5);
    });
    let mut rig = common::rig(dir.path(), queue(1), module);
    let report = rig.rt.launch("echo", 1, 8).expect("run");
    assert_eq!((report.calls, report.calls_per_ring.clone()), (8, vec![8]));
}

#[test]
fn a_ring_count_the_queue_cannot_take_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let module = EmuModule::new().hostcall(Echo::NAME).entry("nothing", |_| {});
    let mut rig = common::rig(dir.path(), queue(3), module);
    match rig.rt.launch("nothing", 1, 1) {
        Err(RuntimeError::Config(m)) => assert!(m.contains("power of two"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_corrupt_record_on_another_ring_ends_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let module = EmuModule::new().hostcall(Echo::NAME).entry("corrupt", |ctx| {
        if ctx.thread_id != 1 {
            return;
        }
        // Thread 1 is warp 1: its concurrent calls go to ring 1. A header
        // with no lanes is no record at all.
        let q = ctx.queue_on(1).expect("ring 1");
        q.top.store(1, Relaxed);
        let h = Header { op: 1, lanes: 0, base_slot: 0, lines: 1, flags: 0 };
        for (w, &v) in h.to_words(record_flag(0)).iter().enumerate() {
            q.ring[w].store(v, Release);
        }
        // Then wait as a caller would, until the run is torn down.
        let _ = ctx.call(Echo::NAME, Call::new(0, Echo { a: 1, b: 1 }.to_args()), &mut []);
    });
    let mut rig = common::rig(dir.path(), queue(2), module);
    match rig.rt.launch("corrupt", 1, 2) {
        Err(RuntimeError::Protocol(e)) => assert_eq!(format!("{e:?}"), "BadRecord { ticket: 0 }"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rings_chosen_per_launch_follow_the_grid() {
    let q = QueueConfig::DEFAULT;
    if std::env::var_os("HOSTCALL_RINGS").is_some() {
        return;
    }
    assert_eq!(q.rings_for(1).unwrap(), 1, "one thread: one ring");
    let n = q.rings_for(1 << 20).unwrap();
    assert!(rings::valid(n), "{n}");
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get() as u64);
    assert!(n <= cores, "{n} rings on {cores} cores");
    assert_eq!(q.rings_for(64).unwrap(), 2.min(1 << cores.ilog2()), "two warps: two rings at most");
}
