//! Loom model of the queue: two device threads and the host consumer on a
//! real (smallest valid) geometry. Checks publish/consume ordering, that the
//! ring's back-pressure keeps a writer off lines the host has not read, and
//! a thread's calls in its own slot (each gets its own reply, never a stale
//! one).
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p hostcall-abi --test loom --release`
//! (about 10 s on two cores). Each model runs with one preemption: that
//! catches, each on its own, a writer that skips the wait for ring space,
//! replies without the Release fence before their words, a reader without
//! the Acquire fence before reply data, a call counter that does not move
//! and a decoder that checks one word's flag instead of all (tried by
//! breaking the code). `LOOM_MAX_PREEMPTIONS=2` runs them deeper (minutes to
//! tens of minutes each on two cores).
//!
//! Spin loops. Every wait in the protocol (the device's ring
//! space and reply waits, the host's idle poll) yields to loom, but with two
//! waiting devices and a waiting host that is not enough: a switch at a yield
//! costs no preemption, so loom also explores the unfair schedules where two
//! waiters hand the CPU to each other forever and the thread they wait for
//! never runs again, until the path exceeds `max_branches`. That is what
//! stopped the two-device models; it is not a livelock of the protocol (in
//! those runs the host was simply never scheduled again). A failed round of a
//! wait only reads, so a schedule in which a waiter spins more than
//! [`SPIN_BOUND`] times in a row is the same, state for state, as one where
//! it spun less; past that bound the waiter calls `loom::skip_branch()`, so
//! the run finishes on loom's default (fair) schedule and no new branches
//! are explored from there.
//!
//! Each device thread is a warp of one lane here (the warp path's record
//! layout with several lanes is covered by `hostcall-runtime`'s tests and
//! the GPU tests). Not covered, because loom never lets a load read a value
//! stored later in the run (no load buffering): the Release on `released`
//! (host reads of a line before the device's next-lap write of it).
#![cfg(loom)]

use core::sync::atomic::Ordering;

use hostcall_abi::sync::{Platform, Word};
use hostcall_abi::{post_reply, Call, Consumer, Geometry, Queue, Reply, LINE_WORDS};
use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;

/// loom's atomic as a protocol word.
struct LWord(AtomicU64);

impl Word for LWord {
    fn load(&self, o: Ordering) -> u64 {
        self.0.load(o)
    }
    fn store(&self, v: u64, o: Ordering) {
        self.0.store(v, o)
    }
    fn fetch_add(&self, v: u64, o: Ordering) -> u64 {
        self.0.fetch_add(v, o)
    }
    fn fetch_max(&self, v: u64, o: Ordering) -> u64 {
        self.0.fetch_max(v, o)
    }
    fn fence(o: Ordering) {
        loom::sync::atomic::fence(o)
    }
}

/// Failed rounds of one wait that loom explores; see the module comment.
const SPIN_BOUND: u32 = 2;

/// One failed round of a wait: tell loom we spin, and stop exploring new
/// branches once the wait has gone on longer than [`SPIN_BOUND`] rounds.
fn spin(round: u32) {
    if round >= SPIN_BOUND {
        loom::skip_branch();
    }
    loom::hint::spin_loop();
}

loom::thread_local! {
    static SLOT: core::cell::Cell<u32> = core::cell::Cell::new(0);
}

struct LoomPlatform;
impl Platform for LoomPlatform {
    fn backoff(round: u32) {
        spin(round);
    }
    fn slot() -> u32 {
        SLOT.with(|s| s.get())
    }
}

struct Mem {
    g: Geometry,
    ring: Vec<LWord>,
    top: LWord,
    cache: LWord,
    ctrl: Vec<LWord>,
    slots: Vec<LWord>,
    data: Vec<LWord>,
    seq: Vec<LWord>,
}

fn words(n: usize) -> Vec<LWord> {
    (0..n).map(|_| LWord(AtomicU64::new(0))).collect()
}

impl Mem {
    fn new(g: Geometry, ring: &[u64], top: u64) -> Self {
        Mem {
            g,
            ring: ring.iter().map(|&w| LWord(AtomicU64::new(w))).collect(),
            top: LWord(AtomicU64::new(top)),
            cache: LWord(AtomicU64::new(0)),
            ctrl: words(LINE_WORDS),
            slots: words(g.slot_words()),
            data: words(g.reply_data_words()),
            seq: words(g.seq_words()),
        }
    }
    fn queue(&self) -> Queue<'_, LWord> {
        Queue {
            geometry: self.g,
            ring: &self.ring,
            top: &self.top,
            released_cache: &self.cache,
            ctrl: &self.ctrl,
            slots: &self.slots,
            reply_data: &self.data,
            seq: &self.seq,
        }
    }
}

const CALL_OP: u32 = 1;
/// What lines 0-2 hold before a wrapping model starts (the data of tickets
/// long consumed).
const OLD_LAP: u64 = 0xabab_abab_abab_abab;
const OLD_LINES: usize = 3;

/// Two device threads make `calls_a` and `calls_b` calls (a thread's
/// second call reuses its slot) while the host serves. With `wrap`, the
/// host has already read the ring up to its last line but released none of
/// it: the first record takes that line and line 0, the next lines 1-2, and
/// each must wait until the host has released lines 0-2.
fn model(wrap: bool, calls_a: u64, calls_b: u64, preemptions: usize) {
    let mut b = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        b.preemption_bound = Some(preemptions);
    }
    b.check(move || {
        let g = Geometry { buff_size: 8192, slot_count: 32, reply_data_size: 16 };
        let cap = g.ring_lines();
        let start = if wrap { cap - 1 } else { 0 };
        let mut init = vec![0; g.ring_words()];
        if wrap {
            init[..OLD_LINES * LINE_WORDS].fill(OLD_LAP);
        }
        let mem = Arc::new(Mem::new(g, &init, start));

        // Device threads 1 and 2, in reply slots 1 and 2.
        let spawn = |id: u64, calls: u64| {
            let mem = mem.clone();
            loom::thread::spawn(move || {
                SLOT.with(|s| s.set(id as u32));
                let q = mem.queue();
                for k in 0..calls {
                    let a = id * 10 + k;
                    let mut out = [0u8; 8];
                    let c = q.call::<LoomPlatform>(&Call::new(CALL_OP, [a, 0, 0]), &mut out).unwrap();
                    assert_eq!(c.errno, 0);
                    assert_eq!(c.value, a * 2, "thread {id} got someone else's reply, or a stale one");
                    assert_eq!((c.data_len, u64::from_le_bytes(out)), (8, a));
                }
            })
        };
        let ta = spawn(1, calls_a);
        let tb = spawn(2, calls_b);

        // The host: serve until all calls are done.
        let mut c = if wrap { Consumer::resume(g, start) } else { Consumer::new(g) };
        let mut released = false;
        let mut release = |c: &mut Consumer| {
            if wrap && !released {
                // Lines 0-2 are the host's until this first release.
                let old = mem.ring[..OLD_LINES * LINE_WORDS].iter().all(|w| w.load(Ordering::Relaxed) == OLD_LAP);
                assert!(old, "a record was written onto lines 0-2 before the host released them");
                released = true;
            }
            c.release(&mem.ctrl);
        };
        let mut calls = 0;
        let mut idle = 0;
        while calls < calls_a + calls_b {
            let Some(rec) = c.poll(&mem.ring).unwrap() else {
                release(&mut c);
                spin(idle);
                idle += 1;
                continue;
            };
            idle = 0;
            let h = rec.header;
            c.consume(&mem.ring, &rec);
            release(&mut c);
            assert_eq!(h.op, CALL_OP, "a half-written or overwritten record was read");
            for l in rec.calls() {
                calls += 1;
                let a = l.args[0];
                let r = Reply { value: a * 2, errno: 0, data_len: 0 };
                post_reply(&g, &mem.slots, &mem.data, l.slot.unwrap(), l.seq, r, &a.to_le_bytes()).unwrap();
            }
        }
        ta.join().unwrap();
        tb.join().unwrap();
        assert_eq!(c.head(), start + 2 * (calls_a + calls_b));
    });
}

#[test]
fn two_threads_publish_and_consume() {
    model(false, 1, 1, 1);
}

#[test]
fn slot_reuse() {
    model(false, 2, 0, 1);
}

#[test]
fn ring_wrap_waits_for_release() {
    // One preemption is enough to catch a writer that skips the wait for
    // `released`: the host held off its first poll while the first record,
    // straddling the ring's end, goes in.
    model(true, 1, 1, 1);
}
