//! The device side of the protocol: claim a return slot, reserve ring lines,
//! write the command, publish it, wait for the reply.
//!
//! A call is never refused because the queue is busy: a full ring or an
//! exhausted slot pool only makes the caller back off and retry.

use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::layout::{limits, pack_bytes, unpack_bytes, Geometry, Header, Reply, ARG_WORDS, CTRL_RELEASED, LINE_WORDS};
use crate::sync::{Platform, Word};

/// Slot index of a command that wants no reply (`exit`, `abort`).
pub const NO_SLOT: u32 = u32::MAX;

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
    /// `geometry.slot_words()` words of reply slots (mapped host memory).
    pub slots: &'a [W],
    /// `geometry.reply_data_words()` words of reply data (mapped host memory).
    pub reply_data: &'a [W],
    /// `geometry.bitmap_words()` words of slot bitmap (device memory).
    pub slot_bits: &'a [W],
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
    /// The globals do not describe a valid queue (the host did not set it up).
    NotConfigured,
}

impl<'a, W: Word> Queue<'a, W> {
    /// Check that the views match the geometry; a device built against a
    /// host that never configured the queue gets `NotConfigured`, not a
    /// wild write.
    pub fn check(&self) -> Result<(), CallError> {
        let g = &self.geometry;
        if g.validate().is_err()
            || self.ring.len() != g.ring_words()
            || self.slots.len() != g.slot_words()
            || self.reply_data.len() != g.reply_data_words()
            || self.slot_bits.len() != g.bitmap_words()
            || self.ctrl.len() < LINE_WORDS
        {
            return Err(CallError::NotConfigured);
        }
        Ok(())
    }

    /// Make one call and wait for its reply; reply data lands in `reply`.
    pub fn call<P: Platform>(&self, call: &Call<'_>, reply: &mut [u8]) -> Result<Completed, CallError> {
        self.check()?;
        if call.op == 0 {
            return Err(CallError::NotServed);
        }
        if call.payload.len() > limits::MAX_INLINE {
            return Err(CallError::PayloadTooLarge);
        }
        let slot = self.claim_slot::<P>();
        let ticket = self.submit::<P>(call, slot);
        let done = self.wait_reply::<P>(slot, ticket + 1, reply);
        self.release_slot(slot);
        Ok(done)
    }

    /// Post a call that gets no reply (`exit`, `abort`).
    pub fn post<P: Platform>(&self, call: &Call<'_>) -> Result<(), CallError> {
        self.check()?;
        if call.op == 0 {
            return Err(CallError::NotServed);
        }
        if call.payload.len() > limits::MAX_INLINE {
            return Err(CallError::PayloadTooLarge);
        }
        self.submit::<P>(call, NO_SLOT);
        Ok(())
    }

    fn claim_slot<P: Platform>(&self) -> u32 {
        let words = self.slot_bits.len();
        let start = P::thread_hint() as usize % words;
        let mut round = 0;
        loop {
            for k in 0..words {
                let w = (start + k) % words;
                let cur = self.slot_bits[w].load(Relaxed);
                if cur == u64::MAX {
                    continue;
                }
                let mask = 1u64 << (!cur).trailing_zeros();
                // Acquire pairs with the Release in `release_slot`: the last
                // owner's reads of this slot happen before we reuse it.
                if self.slot_bits[w].fetch_or(mask, Acquire) & mask == 0 {
                    return (w as u64 * limits::SLOTS_PER_WORD + u64::from(mask.trailing_zeros())) as u32;
                }
            }
            P::backoff(round);
            round = round.saturating_add(1);
        }
    }

    fn release_slot(&self, slot: u32) {
        let w = (u64::from(slot) / limits::SLOTS_PER_WORD) as usize;
        let mask = 1u64 << (u64::from(slot) % limits::SLOTS_PER_WORD);
        self.slot_bits[w].fetch_and(!mask, Release);
    }

    /// Reserve lines, wait for them to be free, write, publish. Returns the
    /// ticket.
    fn submit<P: Platform>(&self, call: &Call<'_>, slot: u32) -> u64 {
        let lines = Header::lines_for(call.payload.len());
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
                    P::backoff(round);
                    round = round.saturating_add(1);
                }
            }
        }
        let mask = cap - 1;
        let at = |line: u64, word: usize| ((line & mask) as usize) * LINE_WORDS + word;
        pack_bytes(call.payload, |i, w| {
            let line = ticket + 1 + (i / LINE_WORDS) as u64;
            self.ring[at(line, i % LINE_WORDS)].store(w, Relaxed);
        });
        let header = Header {
            tag: ticket + 1,
            op: call.op,
            slot,
            payload_len: call.payload.len() as u32,
            flags: 0,
            dev_addr: call.dev_addr,
            dev_len: call.dev_len,
            args: call.args,
        };
        let words = header.to_words();
        for (i, w) in words.iter().enumerate().skip(1) {
            self.ring[at(ticket, i)].store(*w, Relaxed);
        }
        // Publish: the tag goes last, after everything above (on the GPU a
        // release store is a system-scope fence plus the store).
        self.ring[at(ticket, 0)].store(words[0], Release);
        ticket
    }

    fn wait_reply<P: Platform>(&self, slot: u32, tag: u64, out: &mut [u8]) -> Completed {
        let s = slot as usize * LINE_WORDS;
        let mut round = 0;
        while self.slots[s].load(Acquire) != tag {
            P::backoff(round);
            round = round.saturating_add(1);
        }
        let mut words = [0u64; LINE_WORDS];
        words[0] = tag;
        words[1] = self.slots[s + 1].load(Relaxed);
        words[2] = self.slots[s + 2].load(Relaxed);
        let reply = Reply::from_words(words);
        let host_len = (reply.data_len as usize).min(self.geometry.reply_data_size as usize);
        let n = host_len.min(out.len());
        let base = slot as usize * self.geometry.reply_words_per_slot();
        unpack_bytes(&mut out[..n], |i| self.reply_data[base + i].load(Relaxed));
        Completed { value: reply.value, errno: reply.errno, data_len: n, host_data_len: host_len }
    }
}
