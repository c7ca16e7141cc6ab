//! Round-trip latency and throughput of the emulation backend against a
//! baseline measured in the same run: a `std::sync::mpsc` ping-pong between
//! two threads. Only ratios taken in one run mean anything.
//!
//! `cargo bench -p hostcall-runtime --bench emu_latency`

use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::time::Instant;

use hostcall_runtime::backend::emu::{EmuBackend, EmuModule, EmuPlatform};
use hostcall_runtime::hostcall_abi::op::{Echo, Request};
use hostcall_runtime::hostcall_abi::Call;
use hostcall_runtime::{Runtime, RuntimeConfig};

const N: u64 = 50_000;

fn mpsc_round_trip_ns() -> f64 {
    let (to, from_main) = mpsc::channel::<u64>();
    let (back, from_peer) = mpsc::channel::<u64>();
    let peer = std::thread::spawn(move || {
        while let Ok(v) = from_main.recv() {
            if back.send(v ^ 1).is_err() {
                break;
            }
        }
    });
    let t = Instant::now();
    for i in 0..N {
        to.send(i).unwrap();
        assert_eq!(from_peer.recv().unwrap(), i ^ 1);
    }
    let ns = t.elapsed().as_nanos() as f64 / N as f64;
    drop(to);
    peer.join().unwrap();
    ns
}

/// ns per call seen by one device thread, and calls/s over all threads.
fn emu(threads: u32, payload: usize) -> (f64, f64) {
    let module = EmuModule::new().hostcall(Echo::NAME).global("NS").entry("bench", move |ctx| {
        let q = ctx.queue().unwrap();
        let op = ctx.hostcall_id(Echo::NAME);
        let data = vec![7u8; payload];
        let mut reply = vec![0u8; payload];
        let t = Instant::now();
        for i in 0..N / u64::from(threads) {
            let c = q
                .call::<EmuPlatform>(&Call::new(op, Echo { a: i, b: 1 }.to_args()).payload(&data), &mut reply)
                .unwrap();
            assert_eq!(c.value, i ^ 1);
        }
        if ctx.thread_id == 0 {
            ctx.global("NS").unwrap().store(t.elapsed().as_nanos() as u64, Relaxed);
        }
    });
    let cfg = RuntimeConfig { debug: false, ..RuntimeConfig::default() };
    let mut rt = Runtime::new(EmuBackend::with_module("b", module), cfg).unwrap();
    rt.load("b").unwrap();
    let report = rt.launch("bench", 1, threads).unwrap();
    let per_thread = N / u64::from(threads);
    let ns = rt.read_global_u64("NS").unwrap() as f64 / per_thread as f64;
    (ns, report.calls as f64 / report.elapsed.as_secs_f64())
}

fn main() {
    let base = mpsc_round_trip_ns();
    println!("baseline mpsc ping-pong: {base:.0} ns/round trip");
    for (threads, payload) in [(1, 0), (1, 256), (1, 4000), (4, 0), (32, 0)] {
        let (ns, rate) = emu(threads, payload);
        println!(
            "emu echo, {threads:>2} thread(s), {payload:>4} B payload: {ns:>7.0} ns/call ({:.2}x baseline), {rate:>9.0} calls/s ({:.2}x baseline rate)",
            ns / base,
            rate * base / 1e9
        );
    }
}
