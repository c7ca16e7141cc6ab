//! The host side of the protocol: read published records in ticket order,
//! release their lines, post replies.
//!
//! Nothing read from the ring is trusted: a header or lane line whose
//! lengths, lanes or slots are out of range is a [`ProtocolError`], never an
//! out-of-bounds read or a reply written outside the slot area.

use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::layout::{
    extra_block_lines, extra_word, lane_word, limits, pack_bytes, record_flag, reply_word, unpack_bytes, Geometry,
    Header, Lane, Reply, CTRL_RELEASED, LINE_BYTES, LINE_WORDS, REPLY_WORDS, WARP_LANES,
};
use crate::sync::Word;

/// The consumer's position in the ring.
#[derive(Debug)]
pub struct Consumer {
    geometry: Geometry,
    head: u64,
    released: u64,
}

/// One lane's call in a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LaneCall {
    /// The lane's index in its warp.
    pub lane: u32,
    /// Its reply slot; `None` for a posted call.
    pub slot: Option<u32>,
    /// Its call counter: the reply's flag.
    pub seq: u32,
    pub args: [u64; crate::ARG_WORDS],
    /// The declared device region (`dev_len == 0`: none).
    pub dev_addr: u64,
    pub dev_len: u64,
    pub payload_len: u32,
    /// The payload's first word, in ticket space (line * `LINE_WORDS` +
    /// word, before wrapping the ring).
    pub payload_word: u64,
    /// Words from one pair of the payload to the next: the record's extra
    /// block is pair-major (`layout::extra_word`).
    pub payload_stride: u32,
}

/// A published record at the consumer's head: every lane line is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub ticket: u64,
    pub header: Header,
    pub lines: u64,
    lanes: [LaneCall; WARP_LANES as usize],
    count: usize,
}

impl Record {
    /// A record of no calls, to fill with [`Consumer::poll_into`].
    pub fn empty() -> Self {
        Record {
            ticket: 0,
            header: Header::default(),
            lines: 0,
            lanes: [LaneCall::default(); WARP_LANES as usize],
            count: 0,
        }
    }

    /// The calls, in lane order.
    pub fn calls(&self) -> &[LaneCall] {
        &self.lanes[..self.count]
    }
}

/// What polling found.
pub type Poll = Option<Record>;

/// The device broke the protocol; the queue cannot be trusted past this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    PayloadTooLarge {
        ticket: u64,
        len: u32,
    },
    BadSlot {
        ticket: u64,
        slot: u32,
    },
    /// A header whose lanes or length do not add up.
    BadRecord {
        ticket: u64,
    },
    BadBuffer,
}

impl Consumer {
    pub fn new(geometry: Geometry) -> Self {
        Consumer { geometry, head: 0, released: 0 }
    }

    /// A consumer that has read every record before ticket `head` and has
    /// released none of their lines yet (the control line still says 0):
    /// a queue taken over mid-run, as the loom model of a full ring starts.
    pub fn resume(geometry: Geometry, head: u64) -> Self {
        Consumer { geometry, head, released: 0 }
    }

    /// The geometry of the ring it reads.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Ticket of the next record.
    pub fn head(&self) -> u64 {
        self.head
    }

    fn word(&self, line: u64, word: usize) -> usize {
        ((line & (self.geometry.ring_lines() - 1)) as usize) * LINE_WORDS + word
    }

    fn line<W: Word>(&self, ring: &[W], at: impl Fn(usize) -> usize) -> [u64; LINE_WORDS] {
        core::array::from_fn(|i| ring[at(i)].load(Relaxed))
    }

    /// Whether the head's header is there (its lane lines may still be on
    /// their way: [`Consumer::poll`] then says `None`, but the record is a
    /// matter of nanoseconds, not a quiet ring).
    pub fn head_published<W: Word>(&self, ring: &[W]) -> bool {
        ring.len() == self.geometry.ring_words()
            && Header::from_words(&self.line(ring, |i| self.word(self.head, i)), record_flag(self.head)).is_some()
    }

    /// The record at the head, once its header and every lane line are
    /// there.
    pub fn poll<W: Word>(&self, ring: &[W]) -> Result<Poll, ProtocolError> {
        let mut rec = Record::empty();
        Ok(self.poll_into(ring, &mut rec)?.then_some(rec))
    }

    /// [`Consumer::poll`] into `rec` (a record kept from call to call, not
    /// built and copied each time): `true` when a record is there. `rec` is
    /// only meaningful after `true`.
    pub fn poll_into<W: Word>(&self, ring: &[W], rec: &mut Record) -> Result<bool, ProtocolError> {
        let g = &self.geometry;
        if ring.len() != g.ring_words() {
            return Err(ProtocolError::BadBuffer);
        }
        let ticket = self.head;
        let flag = record_flag(ticket);
        let hw = self.line(ring, |i| self.word(ticket, i));
        let Some(header) = Header::from_words(&hw, flag) else { return Ok(false) };
        let bad = ProtocolError::BadRecord { ticket };
        let n = header.lanes.count_ones() as usize;
        if n == 0 || u64::from(header.lines) > g.max_record_lines() || (header.lines as usize) < 1 + n {
            return Err(bad);
        }
        let block = self.word(ticket + 1, 0);
        // A power of two (`Geometry::validate`): a mask, not a division.
        let wrap = ring.len() - 1;
        // The lane block's lines were written by another agent: ask for all
        // of them at once rather than miss on each in turn.
        for line in 0..n {
            prefetch(&ring[(block + line * LINE_WORDS) & wrap]);
        }
        (rec.ticket, rec.header, rec.lines, rec.count) = (ticket, header, u64::from(header.lines), n);
        let mut rows = 0;
        let mut lanes = header.lanes;
        for r in 0..n {
            let lane = lanes.trailing_zeros();
            lanes &= lanes - 1;
            let lw = self.line(ring, |i| (block + lane_word(n, r, i)) & wrap);
            let Some(l) = Lane::from_words(&lw, flag) else { return Ok(false) };
            if l.payload_len as usize > limits::MAX_INLINE {
                return Err(ProtocolError::PayloadTooLarge { ticket, len: l.payload_len });
            }
            let slot = if header.posted() {
                None
            } else {
                let s = u64::from(header.base_slot) + u64::from(lane);
                if s >= g.slot_count {
                    return Err(ProtocolError::BadSlot { ticket, slot: s.min(u64::from(u32::MAX)) as u32 });
                }
                Some(s as u32)
            };
            rows = rows.max(Lane::extra_pairs(l.payload_len as usize, l.region));
            rec.lanes[r] = LaneCall {
                lane,
                slot,
                seq: l.seq,
                args: l.args,
                dev_addr: 0,
                dev_len: u64::from(l.region),
                payload_len: l.payload_len,
                payload_word: 0,
                payload_stride: 2 * n as u32,
            };
        }
        if 1 + n as u64 + extra_block_lines(n as u64, rows) != rec.lines {
            return Err(bad);
        }
        // The header is all there: what the lanes wrote before the leader's
        // release (regions, payloads) is visible from here on.
        W::fence(Acquire);
        let extra_block = (ticket + 1 + n as u64) * LINE_WORDS as u64;
        for (r, c) in rec.lanes[..n].iter_mut().enumerate() {
            let region = c.dev_len != 0;
            if region {
                let at = |w| (extra_block as usize + extra_word(n, r, 0, w)) & wrap;
                (c.dev_addr, c.dev_len) = (ring[at(0)].load(Relaxed), ring[at(1)].load(Relaxed));
            }
            c.payload_word = extra_block + extra_word(n, r, usize::from(region), 0) as u64;
        }
        Ok(true)
    }

    /// Copy one call's inline payload into `out` (`payload_len` bytes; a
    /// shorter or longer `out` copies the overlap).
    pub fn read_payload<W: Word>(&self, ring: &[W], call: &LaneCall, out: &mut [u8]) {
        let n = out.len().min(call.payload_len as usize);
        let (first, stride) = (call.payload_word, u64::from(call.payload_stride));
        let wrap = self.geometry.ring_words() as u64 - 1;
        let at = |i: usize| ((first + (i / 2) as u64 * stride + (i % 2) as u64) & wrap) as usize;
        unpack_bytes(&mut out[..n], |i| ring[at(i)].load(Relaxed));
    }

    /// Move past `rec` (after its payloads were copied out). Its lines are
    /// handed back to the device at the next [`Consumer::release`].
    ///
    /// The first word of each region and payload line is zeroed first: those
    /// are arbitrary data, and a line of them left from this lap could pass
    /// for a header or lane line when the ring comes round to it again. A
    /// zero word never carries a flag (flags are odd). Header and lane lines
    /// need no scrubbing: their flags name their own ticket, never a later
    /// one. The zeroing is ordered before the device's next write of the
    /// line by the Release store in [`Consumer::release`].
    pub fn consume<W: Word>(&mut self, ring: &[W], rec: &Record) {
        debug_assert_eq!(rec.ticket, self.head);
        if ring.len() == self.geometry.ring_words() {
            let extra = rec.ticket + 1 + rec.count as u64;
            for line in extra..rec.ticket + rec.lines {
                ring[self.word(line, 0)].store(0, Relaxed);
            }
        }
        self.head += rec.lines;
    }

    /// Tell the device how far the host has read, if that moved.
    pub fn release<W: Word>(&mut self, ctrl: &[W]) {
        if self.head != self.released {
            ctrl[CTRL_RELEASED].store(self.head, Release);
            self.released = self.head;
        }
    }
}

/// Post the reply of the call with counter `seq` into `slot`: data first,
/// then the flagged reply words. `data` is cut to the slot's data size; the
/// length written is returned.
pub fn post_reply<W: Word>(
    geometry: &Geometry,
    slots: &[W],
    reply_data: &[W],
    slot: u32,
    seq: u32,
    reply: Reply,
    data: &[u8],
) -> Result<usize, ProtocolError> {
    if u64::from(slot) >= geometry.slot_count
        || slots.len() != geometry.slot_words()
        || reply_data.len() != geometry.reply_data_words()
    {
        return Err(ProtocolError::BadSlot { ticket: 0, slot });
    }
    let n = data.len().min(geometry.reply_data_size as usize);
    let slot_ = slot as usize;
    pack_bytes(&data[..n], |i, w| reply_data[geometry.reply_data_word(slot_, i)].store(w, Relaxed));
    let words = Reply { data_len: n as u32, ..reply }.to_words(seq);
    // The data before any reply word: a device that sees one word with its
    // flag and then fences reads this data.
    W::fence(Release);
    for (w, &v) in words.iter().enumerate().take(REPLY_WORDS) {
        slots[reply_word(slot as usize, w)].store(v, Relaxed);
    }
    Ok(n)
}

const _: () = assert!(LINE_BYTES == LINE_WORDS * 8);

/// Start loading the line of `w` into the cache (a hint; nothing where the
/// target has no such instruction).
#[inline(always)]
fn prefetch<W>(w: &W) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults; `w` is a live reference.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>((w as *const W).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = w;
}
