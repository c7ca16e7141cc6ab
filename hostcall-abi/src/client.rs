//! The device side of the protocol: the lanes of a warp that call the same
//! op together take one ticket, each writes its own lane line (and payload),
//! the leader writes the header, and each lane waits for its own reply in
//! its own slot.
//!
//! A call is never refused because the queue is busy: a full ring only
//! makes the caller back off and retry.

use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::layout::{
    extra_block_lines, extra_word, lane_word, limits, next_seq, pack_pairs, record_flag, reply_word, unflag,
    unpack_pairs, Geometry, Header, Lane, Reply, ARG_WORDS, CTRL_RELEASED, LINE_WORDS,
};
use crate::sync::{pair, Platform, Word};

/// One queue as the device sees it: views of the shared words named by the
/// `__HOSTCALL_*` globals.
pub struct Queue<'a, W: Word> {
    pub geometry: Geometry,
    /// The ring: `geometry.ring_words()` words of mapped host memory.
    pub ring: &'a [W],
    /// `__HOSTCALL_BUFF_TOP__` (device memory).
    pub top: &'a W,
    /// `__HOSTCALL_BUFF_RELEASED__` (device memory).
    pub released_cache: &'a W,
    /// The host control line (mapped host memory).
    pub ctrl: &'a [W],
    /// `geometry.slot_words()` words of replies (mapped host memory).
    pub slots: &'a [W],
    /// `geometry.reply_data_words()` words of reply data (mapped host memory).
    pub reply_data: &'a [W],
    /// `geometry.seq_words()` per-slot call counters (device memory).
    pub seq: &'a [W],
}

/// One call to make.
#[derive(Clone, Copy, Debug)]
pub struct Call<'p> {
    /// Handler ID, from `__HOSTCALL__<name>`.
    pub op: u32,
    pub args: [u64; ARG_WORDS],
    /// Bytes sent inline (at most [`limits::MAX_INLINE`]).
    pub payload: &'p [u8],
    /// A device-memory region the host may read or write (0, 0: none).
    pub dev_addr: u64,
    pub dev_len: u64,
}

impl<'p> Call<'p> {
    pub const fn new(op: u32, args: [u64; ARG_WORDS]) -> Self {
        Call { op, args, payload: &[], dev_addr: 0, dev_len: 0 }
    }
    pub const fn payload(mut self, payload: &'p [u8]) -> Self {
        self.payload = payload;
        self
    }
    pub const fn device_region(mut self, addr: u64, len: u64) -> Self {
        self.dev_addr = addr;
        self.dev_len = len;
        self
    }
    fn has_region(&self) -> bool {
        self.dev_len != 0
    }
}

/// What came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completed {
    pub value: u64,
    /// 0 or a positive errno.
    pub errno: u32,
    /// Reply data bytes copied into the caller's buffer.
    pub data_len: usize,
    /// Reply data bytes the host sent (may exceed `data_len` if the caller's
    /// buffer was shorter).
    pub host_data_len: usize,
}

/// Misuse of the queue; never "busy".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallError {
    /// The hostcall's ID global is 0: no handler was registered for it.
    NotServed,
    /// The payload is over [`limits::MAX_INLINE`]; split it.
    PayloadTooLarge,
    /// The globals do not describe a valid queue (the host did not set it
    /// up, or this thread has no reply slot).
    NotConfigured,
}

/// A wait for ring space backs off no further than this round of
/// [`Platform::backoff`].
const SPACE_WAIT_ROUNDS: u32 = 20;

/// Where one lane's call sits in its record.
#[derive(Clone, Copy)]
struct Placement {
    /// The lanes in the record.
    peers: u32,
    /// Lanes in the record, and this lane's rank among them.
    n: u64,
    rank: u64,
    /// Lines of the whole record.
    lines: u64,
}

/// Every method a call runs is `#[inline(always)]`: the device libc makes
/// all its calls through one function, and there the queue's views and the
/// call stay in registers (a call through a `Queue` in local memory was
/// slower on the GPU than the same protocol inlined).
impl<'a, W: Word> Queue<'a, W> {
    /// Check that the views match the geometry; a device built against a
    /// host that never configured the queue gets `NotConfigured`, not a
    /// wild write.
    #[inline(always)]
    pub fn check(&self) -> Result<(), CallError> {
        let g = &self.geometry;
        if g.validate().is_err()
            || self.ring.len() != g.ring_words()
            || self.slots.len() != g.slot_words()
            || self.reply_data.len() != g.reply_data_words()
            || self.seq.len() != g.seq_words()
            || self.ctrl.len() < LINE_WORDS
        {
            return Err(CallError::NotConfigured);
        }
        Ok(())
    }

    #[inline(always)]
    fn precheck<P: Platform>(&self, call: &Call<'_>) -> Result<(), CallError> {
        self.check()?;
        if call.op == 0 || call.op >= 1 << 31 {
            return Err(CallError::NotServed);
        }
        if call.payload.len() > limits::MAX_INLINE {
            return Err(CallError::PayloadTooLarge);
        }
        if u64::from(P::slot()) >= self.geometry.slot_count {
            return Err(CallError::NotConfigured);
        }
        Ok(())
    }

    /// Make one call and wait for its reply; reply data lands in `reply`.
    #[inline(always)]
    pub fn call<P: Platform>(&self, call: &Call<'_>, reply: &mut [u8]) -> Result<Completed, CallError> {
        self.precheck::<P>(call)?;
        let slot = P::slot() as usize;
        // The counter's load is not waited for until the lane line needs it
        // (after the ticket's atomic, in flight at the same time).
        let seq = next_seq(self.seq[slot].load(Relaxed));
        let peers = self.submit::<P>(call, seq, false);
        self.seq[slot].store(u64::from(seq), Relaxed);
        // The host answers a record's lanes in lane order, so the last
        // lane's reply comes last: every lane of a record of several watches
        // that one pair (one load for the whole warp) rather than each
        // polling its own. A lane alone polls its whole reply (a round trip
        // less; its polls are few).
        let last = 31 - peers.leading_zeros();
        let last_seq = P::shuffle(peers, u64::from(seq), last) as u32;
        let several = peers.count_ones() > 1;
        let watch = several.then(|| (slot - P::lane() as usize + last as usize, last_seq));
        Ok(self.wait_reply::<P>(slot, seq, watch, reply))
    }

    /// Post a call that gets no reply (writes to stdout and stderr).
    #[inline(always)]
    pub fn post<P: Platform>(&self, call: &Call<'_>) -> Result<(), CallError> {
        self.precheck::<P>(call)?;
        self.submit::<P>(call, 0, true);
        Ok(())
    }

    /// Where this lane goes: in one record with the lanes of its warp that
    /// make the same kind of call now, or alone when theirs would not fit in
    /// one buffer.
    #[inline(always)]
    fn place<P: Platform>(&self, call: &Call<'_>, posted: bool) -> Placement {
        let lane = P::lane();
        let key = call.op | (posted as u32) << 31;
        let peers = P::match_lanes(P::active_lanes(), key);
        let extra = Lane::extra_pairs(call.payload.len(), call.has_region());
        // The extra block has as many rows of pairs as the largest lane's.
        let mut rows = 0;
        if P::ballot(peers, extra != 0) != 0 {
            let mut rest = peers;
            while rest != 0 {
                let src = rest.trailing_zeros();
                rows = rows.max(P::shuffle(peers, extra, src));
                rest &= rest - 1;
            }
        }
        let below = peers & ((1u64 << lane) - 1) as u32;
        let n = u64::from(peers.count_ones());
        let lines = 1 + n + extra_block_lines(n, rows);
        if lines <= self.geometry.max_record_lines() {
            Placement { peers, n, rank: u64::from(below.count_ones()), lines }
        } else {
            Placement { peers: 1 << lane, n: 1, rank: 0, lines: 2 + extra_block_lines(1, extra) }
        }
    }

    /// Reserve `lines` lines and wait until they are free. Returns the ticket.
    #[inline(always)]
    fn reserve<P: Platform>(&self, lines: u64) -> u64 {
        let cap = self.geometry.ring_lines();
        let ticket = self.top.fetch_add(lines, Relaxed);
        // Our lines held the record `cap` lines earlier; wait until the host
        // has consumed it. The host's `released` store is Release and our
        // load Acquire, so its reads of those lines finish before our writes.
        if ticket + lines > cap {
            let need = ticket + lines - cap;
            if self.released_cache.load(Acquire) < need {
                let mut round = 0;
                loop {
                    let released = self.ctrl[CTRL_RELEASED].load(Acquire);
                    if released >= need {
                        self.released_cache.fetch_max(released, AcqRel);
                        break;
                    }
                    // The host frees lines at its own pace, microseconds
                    // apart: keep the pause short (the record at the head
                    // may be this one, and everyone queues behind it).
                    P::backoff(round);
                    round = (round + 1).min(SPACE_WAIT_ROUNDS);
                }
            }
        }
        ticket
    }

    #[inline(always)]
    fn word(&self, line: u64, word: usize) -> usize {
        ((line & (self.geometry.ring_lines() - 1)) as usize) * LINE_WORDS + word
    }

    /// Write this lane's part of a record and, on the leader, its header.
    /// Returns the lanes in the record.
    #[inline(always)]
    fn submit<P: Platform>(&self, call: &Call<'_>, seq: u32, posted: bool) -> u32 {
        let p = self.place::<P>(call, posted);
        let leader = p.peers.trailing_zeros();
        let lane = P::lane();
        let ticket = if lane == leader { self.reserve::<P>(p.lines) } else { 0 };
        let ticket = P::shuffle(p.peers, ticket, leader);
        let flag = record_flag(ticket);
        let extra = Lane::extra_pairs(call.payload.len(), call.has_region());
        let (n, r) = (p.n as usize, p.rank as usize);
        let wrap = self.ring.len() - 1;

        // Region pair and payload: plain words in the extra block, ordered
        // before the header by the leader's release fence below. Pair `j`
        // of every lane is stored by one instruction of the warp, to one
        // stretch of the bus. The block may wrap the ring's end, but a pair
        // never straddles it (the block starts on a line, pairs are 16-byte
        // aligned).
        let extra_block = self.word(ticket + 1 + p.n, 0);
        let at = |j: usize| (extra_block + extra_word(n, r, j, 0)) & wrap;
        let first = usize::from(call.has_region());
        if call.has_region() {
            W::store_pair(pair(self.ring, at(0)), [call.dev_addr, call.dev_len]);
        }
        pack_pairs(call.payload, |k, w| W::store_pair(pair(self.ring, at(first + k)), w));

        // The lane line: flagged words, so it needs no fence of its own.
        let lane_line =
            Lane { args: call.args, payload_len: call.payload.len() as u32, region: call.has_region(), seq };
        let words = lane_line.to_words(flag);
        let block = self.word(ticket + 1, 0);
        for k in 0..LINE_WORDS / 2 {
            // The block may wrap the ring's end, but a pair never straddles
            // it (the block starts on a line, pairs are 16-byte aligned).
            let at = (block + lane_word(n, r, 2 * k)) & wrap;
            W::store_pair(pair(self.ring, at), [words[2 * k], words[2 * k + 1]]);
        }

        let any_extra = P::ballot(p.peers, extra != 0) != 0;
        if any_extra {
            // Every lane's payload before the leader's release.
            P::sync_lanes(p.peers);
        }
        if lane == leader {
            if any_extra {
                W::fence(Release);
            }
            let h = Header {
                op: call.op,
                lanes: p.peers,
                base_slot: P::slot() - lane,
                lines: p.lines as u32,
                flags: if posted { Header::POSTED } else { 0 },
            };
            let words = h.to_words(flag);
            let at = self.word(ticket, 0);
            for k in 0..LINE_WORDS / 2 {
                W::store_pair(pair(self.ring, at + 2 * k), [words[2 * k], words[2 * k + 1]]);
            }
        }
        P::after_publish();
        p.peers
    }

    /// Wait for this lane's reply. With `watch` (the slot and call counter
    /// of the record's last lane, maybe this one), watch the first pair of
    /// that reply, looking at our own only now and then, until it is there;
    /// then read our own.
    #[inline(always)]
    fn wait_reply<P: Platform>(&self, slot: usize, seq: u32, watch: Option<(usize, u32)>, out: &mut [u8]) -> Completed {
        let mut round = 0;
        if let Some((other, other_seq)) = watch {
            loop {
                // Our own every OWN_EVERY rounds: the watched lane may be
                // deferred (waiting for input) or already on its next call.
                let (s, q) = if round % OWN_EVERY == OWN_EVERY - 1 { (slot, seq) } else { (other, other_seq) };
                let w = W::load_pair(pair(self.slots, reply_word(s, 0)));
                if unflag(w[0], q).is_some() && unflag(w[1], q).is_some() {
                    break;
                }
                P::backoff(round);
                round = round.saturating_add(1);
            }
        }
        let reply = loop {
            // Both pairs at once: one bus round trip, not two.
            let a = W::load_pair(pair(self.slots, reply_word(slot, 0)));
            let b = W::load_pair(pair(self.slots, reply_word(slot, 2)));
            if let Some(r) = Reply::from_words(&[a[0], a[1], b[0], b[1]], seq) {
                break r;
            }
            P::backoff(round);
            round = round.saturating_add(1);
        };
        let host_len = (reply.data_len as usize).min(self.geometry.reply_data_size as usize);
        let n = host_len.min(out.len());
        if n > 0 {
            // The data was written before the reply words: read it after.
            W::fence(Acquire);
            self.read_reply_data(slot, &mut out[..n]);
        }
        Completed { value: reply.value, errno: reply.errno, data_len: n, host_data_len: host_len }
    }
}

impl<W: Word> Queue<'_, W> {
    /// Copy slot `slot`'s reply data into `out`, a line (four pairs) of
    /// loads in flight at a time: each load crosses the bus, and a copy out
    /// after each would wait for it before the next could start.
    fn read_reply_data(&self, slot: usize, out: &mut [u8]) {
        const PAIRS: usize = LINE_WORDS / 2;
        let g = &self.geometry;
        let load = |k: usize| W::load_pair(pair(self.reply_data, g.reply_data_word(slot, 2 * k)));
        for (i, chunk) in out.chunks_mut(PAIRS * 16).enumerate() {
            let pairs = chunk.len().div_ceil(16);
            let mut batch = [[0u64; 2]; PAIRS];
            for (j, p) in batch.iter_mut().enumerate().take(pairs) {
                *p = load(i * PAIRS + j);
            }
            unpack_pairs(chunk, |j| batch[j]);
        }
    }
}

/// A lane watching another's reply looks at its own every this many rounds.
const OWN_EVERY: u32 = 8;
