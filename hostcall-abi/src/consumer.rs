//! The host side of the protocol: read published commands in ticket order,
//! release their lines, post replies.
//!
//! Nothing read from the ring is trusted: a header whose payload length, slot
//! or tag is out of range is a [`ProtocolError`], never an out-of-bounds read.

use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::client::NO_SLOT;
use crate::layout::{limits, pack_bytes, unpack_bytes, Geometry, Header, Reply, CTRL_RELEASED, LINE_BYTES, LINE_WORDS};
use crate::sync::Word;

/// The consumer's position in the ring.
#[derive(Debug)]
pub struct Consumer {
    geometry: Geometry,
    head: u64,
    released: u64,
}

/// A published command at the consumer's head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub ticket: u64,
    pub header: Header,
    pub lines: u64,
}

impl Record {
    /// `None` for a command that wants no reply.
    pub fn slot(&self) -> Option<u32> {
        (self.header.slot != NO_SLOT).then_some(self.header.slot)
    }
}

/// What polling found.
pub type Poll = Option<Record>;

/// The device broke the protocol; the queue cannot be trusted past this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    PayloadTooLarge { ticket: u64, len: u32 },
    BadSlot { ticket: u64, slot: u32 },
    BadBuffer,
}

impl Consumer {
    pub fn new(geometry: Geometry) -> Self {
        Consumer { geometry, head: 0, released: 0 }
    }

    /// Ticket of the next command.
    pub fn head(&self) -> u64 {
        self.head
    }

    fn word(&self, line: u64, word: usize) -> usize {
        ((line & (self.geometry.ring_lines() - 1)) as usize) * LINE_WORDS + word
    }

    /// The command at the head, if it is published.
    pub fn poll<W: Word>(&self, ring: &[W]) -> Result<Poll, ProtocolError> {
        if ring.len() != self.geometry.ring_words() {
            return Err(ProtocolError::BadBuffer);
        }
        let tag = ring[self.word(self.head, 0)].load(Acquire);
        if tag != self.head + 1 {
            return Ok(None);
        }
        let mut w = [0u64; LINE_WORDS];
        w[0] = tag;
        for (i, slot) in w.iter_mut().enumerate().skip(1) {
            *slot = ring[self.word(self.head, i)].load(Relaxed);
        }
        let header = Header::from_words(w);
        if header.payload_len as usize > limits::MAX_INLINE {
            return Err(ProtocolError::PayloadTooLarge { ticket: self.head, len: header.payload_len });
        }
        if header.slot != NO_SLOT && u64::from(header.slot) >= self.geometry.slot_count {
            return Err(ProtocolError::BadSlot { ticket: self.head, slot: header.slot });
        }
        let lines = Header::lines_for(header.payload_len as usize);
        Ok(Some(Record { ticket: self.head, header, lines }))
    }

    /// Copy the record's inline payload into `out` (which must be exactly
    /// `payload_len` bytes; a shorter or longer `out` copies the overlap).
    pub fn read_payload<W: Word>(&self, ring: &[W], rec: &Record, out: &mut [u8]) {
        let n = out.len().min(rec.header.payload_len as usize);
        let first = rec.ticket + 1;
        unpack_bytes(&mut out[..n], |i| ring[self.word(first + (i / LINE_WORDS) as u64, i % LINE_WORDS)].load(Relaxed));
    }

    /// Move past `rec` (after its payload was copied out). Its lines are
    /// handed back to the device at the next [`Consumer::release`].
    ///
    /// The first word of each payload line is zeroed first: a payload word
    /// is arbitrary data, and one left over from this lap could equal the
    /// tag the head expects when the ring comes round to that line again,
    /// making an unpublished line look published. Header lines need no
    /// scrubbing: an old tag is `head + 1 - k * capacity`, never `head + 1`.
    /// The zeroing is ordered before the device's next write of the line by
    /// the Release store in [`Consumer::release`].
    pub fn consume<W: Word>(&mut self, ring: &[W], rec: &Record) {
        debug_assert_eq!(rec.ticket, self.head);
        if ring.len() == self.geometry.ring_words() {
            for line in rec.ticket + 1..rec.ticket + rec.lines {
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

/// Post a reply into `slot`: data and value first, the tag last. `data` is
/// cut to the slot's data size; the length written is returned.
pub fn post_reply<W: Word>(
    geometry: &Geometry,
    slots: &[W],
    reply_data: &[W],
    slot: u32,
    reply: Reply,
    data: &[u8],
) -> Result<usize, ProtocolError> {
    if u64::from(slot) >= geometry.slot_count
        || slots.len() != geometry.slot_words()
        || reply_data.len() != geometry.reply_data_words()
    {
        return Err(ProtocolError::BadSlot { ticket: reply.tag.wrapping_sub(1), slot });
    }
    let n = data.len().min(geometry.reply_data_size as usize);
    let base = slot as usize * geometry.reply_words_per_slot();
    pack_bytes(&data[..n], |i, w| reply_data[base + i].store(w, Relaxed));
    let words = Reply { data_len: n as u32, ..reply }.to_words();
    let s = slot as usize * LINE_WORDS;
    slots[s + 1].store(words[1], Relaxed);
    slots[s + 2].store(words[2], Relaxed);
    slots[s].store(words[0], Release);
    Ok(n)
}

const _: () = assert!(LINE_BYTES == LINE_WORDS * 8);
