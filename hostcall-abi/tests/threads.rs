//! The client and the consumer on real threads: device threads making calls
//! and posting writes through a small ring while one host thread serves
//! them. Every reply is checked against its own call. Small enough for Miri
//! (`.ci/run` runs it there, with its data-race detector), which is the
//! point: loom (tests/loom.rs) explores every interleaving of tiny models,
//! Miri checks the real code's memory accesses on a larger one.

mod common;

use std::cell::Cell;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use hostcall_abi::sync::Platform;
use hostcall_abi::{limits, post_reply, Call, Consumer, Geometry, Reply};

const THREADS: u32 = if cfg!(miri) { 3 } else { 16 };
const CALLS: u64 = if cfg!(miri) { 12 } else { 2000 };
const OP_CALL: u32 = 1;
const OP_POST: u32 = 2;

thread_local! {
    static SLOT: Cell<u32> = const { Cell::new(0) };
}

struct Threads;
impl Platform for Threads {
    fn backoff(round: u32) {
        if round < 8 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    fn slot() -> u32 {
        SLOT.with(Cell::get)
    }
}

struct Done<'a>(&'a AtomicU64);
impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Release);
    }
}

#[test]
fn calls_and_posts_from_threads_are_each_answered_once() {
    // The smallest ring that holds a record with a whole inline payload.
    let g = Geometry { buff_size: 8192, slot_count: limits::SLOT_ALIGN, reply_data_size: 64 };
    let mem = common::Mem::new(g);
    let q = mem.queue();
    let (ring, ctrl, slots, data) = (&mem.ring, &mem.ctrl, &mem.slots, &mem.reply_data);
    let posted_sum = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (q, done) = (&q, &done);
            s.spawn(move || {
                // Counted done however the thread ends, so that a failed
                // assertion ends the test rather than leaving the host
                // serving forever.
                let _done = Done(done);
                SLOT.with(|c| c.set(t));
                let mut reply = [0u8; 64];
                for i in 0..CALLS {
                    let a = u64::from(t) << 32 | i;
                    let payload: Vec<u8> = (0..(i as usize * 7) % 200).map(|j| (j as u64 ^ a) as u8).collect();
                    if i % 3 == 0 {
                        q.post::<Threads>(&Call::new(OP_POST, [a, 0, 0]).payload(&payload)).unwrap();
                        continue;
                    }
                    let c = q.call::<Threads>(&Call::new(OP_CALL, [a, !a, 0]).payload(&payload), &mut reply).unwrap();
                    assert_eq!((c.value, c.errno), (a.wrapping_add(payload.len() as u64), 0), "thread {t} call {i}");
                    // The reply data: the payload's first bytes, echoed.
                    let n = payload.len().min(64);
                    assert_eq!((c.data_len, &reply[..n]), (n, &payload[..n]), "thread {t} call {i}");
                }
            });
        }
        // The host: serve until every thread is done and the ring is empty.
        let mut c = Consumer::new(g);
        let mut buf = vec![0u8; 4096];
        loop {
            match c.poll(ring).unwrap() {
                Some(rec) => {
                    for call in rec.calls() {
                        let len = call.payload_len as usize;
                        c.read_payload(ring, call, &mut buf[..len]);
                        let sum = buf[..len].iter().map(|&b| u64::from(b)).sum::<u64>();
                        match rec.header.op {
                            OP_POST => {
                                assert!(rec.header.posted() && call.slot.is_none());
                                posted_sum.fetch_add(call.args[0] ^ sum, Relaxed);
                            }
                            OP_CALL => {
                                let slot = call.slot.expect("a call waits in a slot");
                                assert_eq!(call.args[1], !call.args[0]);
                                let value = call.args[0].wrapping_add(len as u64);
                                let reply = Reply { value, errno: 0, data_len: 0 };
                                post_reply(&g, slots, data, slot, call.seq, reply, &buf[..len]).unwrap();
                            }
                            op => panic!("op {op}"),
                        }
                    }
                    c.consume(ring, &rec);
                    c.release(ctrl);
                }
                None if done.load(Acquire) == u64::from(THREADS) && !c.head_published(ring) => break,
                None => std::thread::yield_now(),
            }
        }
    });
    // Every posted write arrived once, with its own bytes.
    let want: u64 = (0..THREADS)
        .flat_map(|t| (0..CALLS).filter(|i| i % 3 == 0).map(move |i| (t, i)))
        .map(|(t, i)| {
            let a = u64::from(t) << 32 | i;
            let sum: u64 = (0..(i as usize * 7) % 200).map(|j| u64::from((j as u64 ^ a) as u8)).sum();
            a ^ sum
        })
        .fold(0, u64::wrapping_add);
    assert_eq!(posted_sum.load(Relaxed), want);
}
