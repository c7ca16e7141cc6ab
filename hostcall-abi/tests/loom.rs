//! Loom model of the queue: two device threads and the host consumer on a
//! real (smallest valid) geometry. Checks publish/consume ordering, that the
//! ring's back-pressure keeps a writer off lines the host has not read, and
//! a thread's calls in its own slot (each gets its own reply, never a stale
//! one).
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p hostcall-abi --test loom --release`
//! (about 40 s on two cores; `LOOM_MAX_PREEMPTIONS=n` overrides each model's
//! preemption bound for a deeper run).
//!
//! Spin loops. Every wait in the protocol (the device's slot claim, ring
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
use hostcall_abi::{
    lane_word, post_reply, record_flag, Call, Consumer, Geometry, Header, Lane, Queue, Reply, LINE_WORDS,
};
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

const FILLER_OP: u32 = 9;
const CALL_OP: u32 = 1;
/// A filler record: two posted lanes of 62 payload lines each.
const FILLER_LINES: u64 = 1 + 2 + 2 * 62;

/// Two device threads make three calls (A two, reusing its slot; B one)
/// while the host serves. With `wrap`, two unread filler records first take
/// all but two lines of the ring, so the second call record wraps onto
/// lines 0-1 and must wait for the host to read and release the first
/// filler.
fn model(wrap: bool, calls_a: u64, calls_b: u64, preemptions: usize) {
    let mut b = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        b.preemption_bound = Some(preemptions);
    }
    // The host scrubs the fillers' 248 payload lines: more branch points
    // than the default allows, but no more interleavings.
    b.max_branches = 40_000;
    b.check(move || {
        let g = Geometry { buff_size: 8192, slot_count: 32, reply_data_size: 8 };
        let cap = g.ring_lines();
        // Before the threads start: two posted records that fill all but
        // two lines of the ring, still unread by the host. Written as the
        // memory's initial values, not by modelled stores, so they cost the
        // model nothing.
        let mut init = vec![0xabab_abab_abab_abab_u64; g.ring_words()];
        let mut put = |ticket: u64, arg: u64| {
            let flag = record_flag(ticket);
            let h =
                Header { op: FILLER_OP, lanes: 0b11, base_slot: 0, lines: FILLER_LINES as u32, flags: Header::POSTED };
            let at = ticket as usize * LINE_WORDS;
            init[at..at + LINE_WORDS].copy_from_slice(&h.to_words(flag));
            for r in 0..2 {
                let lane =
                    Lane { args: [arg, r as u64, 0], payload_len: 62 * 64, region: false, seq: 0 }.to_words(flag);
                for (w, &v) in lane.iter().enumerate() {
                    init[at + LINE_WORDS + lane_word(2, r, w)] = v;
                }
            }
        };
        let nfill = if wrap {
            put(0, 1);
            put(FILLER_LINES, 2);
            2
        } else {
            0
        };
        assert!(!wrap || 2 * FILLER_LINES == cap - 2);
        let start = if wrap { cap - 2 } else { 0 };
        let mem = Arc::new(Mem::new(g, &init, start));

        // Device A: two calls (the second reuses A's slot). Device B: one.
        // B's or A's second record wraps onto lines 0-1: it must wait until
        // the host has read and released the first filler record.
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

        // The host: serve until both fillers and all three calls are done.
        let mut c = Consumer::new(g);
        let mut fillers = 0;
        let mut calls = 0;
        let mut idle = 0;
        while fillers + calls < nfill + calls_a + calls_b {
            let Some(rec) = c.poll(&mem.ring).unwrap() else {
                // Nothing published at the head. A header of the next lap on
                // the head's line means a writer took that line before the
                // host had read (and released) it.
                let head = c.head();
                let word = mem.ring[((head % cap) as usize) * LINE_WORDS].load(Ordering::Relaxed);
                assert_ne!(
                    (word >> 32) as u32,
                    record_flag(head + cap),
                    "ticket {} overwrote line {} before the host read ticket {head}",
                    head + cap,
                    head % cap
                );
                c.release(&mem.ctrl);
                spin(idle);
                idle += 1;
                continue;
            };
            idle = 0;
            let h = rec.header;
            c.consume(&mem.ring, &rec);
            c.release(&mem.ctrl);
            if h.op == FILLER_OP {
                fillers += 1;
                assert!(h.posted());
                let args: Vec<u64> = rec.calls().iter().map(|l| l.args[0] * 10 + l.args[1]).collect();
                assert_eq!(args, [fillers * 10, fillers * 10 + 1], "filler read intact and in order");
                continue;
            }
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
    model(false, 1, 1, 2);
}

#[test]
fn slot_reuse() {
    model(false, 2, 0, 2);
}

#[test]
fn ring_wrap_waits_for_release() {
    // Two preemptions: the overwrite needs the host held off its first poll
    // and both devices past their tickets. With one, a writer that skipped
    // the wait for `released` went unnoticed.
    model(true, 1, 1, 2);
}
