//! Loom model of the queue: two device threads and the host consumer on a
//! real (smallest valid) geometry. Checks publish/consume ordering, that the
//! ring's back-pressure keeps a writer off lines the host has not read, and
//! slot reuse (each thread gets its own reply, never a stale one).
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
//! Not covered here, because loom never lets a load read a value stored
//! later in the run (no load buffering): the Release on `released`
//! (host reads of a line before the device's next-lap write of it) and the
//! Release on the slot free (the last owner's reply reads before the next
//! owner's reply is written).
#![cfg(loom)]

use core::sync::atomic::Ordering;

use hostcall_abi::client::NO_SLOT;
use hostcall_abi::sync::{Platform, Word};
use hostcall_abi::{post_reply, Call, Consumer, Geometry, Header, Queue, Reply, LINE_WORDS};
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
    fn fetch_or(&self, v: u64, o: Ordering) -> u64 {
        self.0.fetch_or(v, o)
    }
    fn fetch_and(&self, v: u64, o: Ordering) -> u64 {
        self.0.fetch_and(v, o)
    }
    fn fetch_max(&self, v: u64, o: Ordering) -> u64 {
        self.0.fetch_max(v, o)
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

struct LoomPlatform;
impl Platform for LoomPlatform {
    fn backoff(round: u32) {
        spin(round);
    }
    fn thread_hint() -> u32 {
        0 // both threads start at the same bitmap word: maximal contention
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
    bits: Vec<LWord>,
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
            bits: words(g.bitmap_words()),
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
            slot_bits: &self.bits,
        }
    }
}

const FILLER_OP: u32 = 9;
const CALL_OP: u32 = 1;

/// Two device threads make three calls (A two, reusing its slot; B one)
/// while the host serves. With `wrap`, two unread filler records first take
/// all but one line of the ring, so the second ticket wraps onto line 0 and
/// must wait for the host to read and release the first filler.
fn model(wrap: bool, calls_a: u64, calls_b: u64, preemptions: usize) {
    let mut b = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        b.preemption_bound = Some(preemptions);
    }
    // The host scrubs 125 payload lines of the fillers: more branch points
    // than the default allows, but no more interleavings.
    b.max_branches = 20_000;
    b.check(move || {
        let g = Geometry { buff_size: 4096, slot_count: 64, reply_data_size: 8 };
        let cap = g.ring_lines();
        // Before the threads start: two unreplied records that fill all but
        // one line of the ring (64 + 63 lines), still unread by the host.
        // Written as the memory's initial values, not by modelled stores, so
        // they cost the model nothing.
        let mut init = vec![0xabab_abab_abab_abab_u64; g.ring_words()];
        let mut put = |ticket: u64, arg: u64, payload_lines: u32| {
            let h = Header {
                tag: ticket + 1,
                op: FILLER_OP,
                slot: NO_SLOT,
                payload_len: payload_lines * 64,
                flags: 0,
                dev_addr: 0,
                dev_len: 0,
                args: [arg, 0, 0],
            };
            let at = ticket as usize * LINE_WORDS;
            init[at..at + LINE_WORDS].copy_from_slice(&h.to_words());
        };
        let nfill = if wrap {
            put(0, 1, 63);
            put(64, 2, 62);
            2
        } else {
            0
        };
        let start = if wrap { cap - 1 } else { 0 };
        let mem = Arc::new(Mem::new(g, &init, start));

        // Device A: two calls (the second reuses A's slot). Device B: one.
        // B's or A's second ticket wraps onto line 0: it must wait until the
        // host has read and released the first filler record.
        let spawn = |id: u64, calls: u64| {
            let mem = mem.clone();
            loom::thread::spawn(move || {
                let q = mem.queue();
                for k in 0..calls {
                    let a = id * 10 + k;
                    let mut out = [0u8; 8];
                    let c = q.call::<LoomPlatform>(&Call::new(CALL_OP, [a, 0, 0]), &mut out).unwrap();
                    assert_eq!(c.errno, 0);
                    assert_eq!(c.value, a * 2, "thread {id} got someone else's reply");
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
                // Nothing published at the head. A tag from a later lap on
                // the head's line means a writer took that line before the
                // host had read (and released) it.
                let head = c.head();
                let tag = mem.ring[((head % cap) as usize) * LINE_WORDS].load(Ordering::Relaxed);
                assert!(
                    tag <= head + 1 || (tag - head - 1) % cap != 0,
                    "ticket {} overwrote line {} before the host read ticket {head}",
                    tag - 1,
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
                assert_eq!((h.slot, h.args[0]), (NO_SLOT, fillers), "filler read intact and in order");
                continue;
            }
            assert_eq!(h.op, CALL_OP, "a half-written or overwritten record was read");
            calls += 1;
            let slot = rec.slot().unwrap();
            let a = h.args[0];
            let r = Reply { tag: h.tag, value: a * 2, errno: 0, data_len: 0, reserved: [0; 5] };
            post_reply(&g, &mem.slots, &mem.data, slot, r, &a.to_le_bytes()).unwrap();
        }
        ta.join().unwrap();
        tb.join().unwrap();
        assert_eq!(c.head(), start + calls_a + calls_b);
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
