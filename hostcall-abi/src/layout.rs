//! Every word that crosses the bus, the names of the globals the host
//! patches, and the sizes that both sides agree on.
//!
//! Lines that a reader polls are written in *flagged* form: each 64-bit word
//! carries 32 bits of data and, in its high half, a 32-bit flag that names
//! the write (the record's ticket, the reply's sequence number). A 64-bit
//! aligned access is single-copy atomic in the PTX memory model and in Rust,
//! so a reader that sees the expected flag in a word has that word's data,
//! with no fence between the writer's stores and no second round trip for
//! the reader. Types are moved word by word through [`crate::sync::Word`],
//! never by casting bus memory to a struct.

use core::mem::size_of;

/// A command line is one 64-byte line: one PCIe write burst, no two records
/// share a cache line.
pub const LINE_BYTES: usize = 64;
/// Words per line.
pub const LINE_WORDS: usize = LINE_BYTES / 8;
/// Argument words each call carries.
pub const ARG_WORDS: usize = 3;
/// Lanes of a warp: one record carries the calls of up to this many threads.
pub const WARP_LANES: u32 = 32;
/// Words of one reply (value, errno, data length, flagged).
pub const REPLY_WORDS: usize = 4;

/// Global names. The host looks these up in the loaded module and writes
/// them before launch (see `docs/symbols.md`). Every one is a `u64`.
pub mod globals {
    /// Device address of the command ring (mapped pinned host memory), two
    /// buffers of `__HOSTCALL_BUFF_SIZE__` bytes each. Written by the host.
    pub const BUFF_PTR: &str = "__HOSTCALL_BUFF_PTR__";
    /// Ticket counter, in lines, bumped by GPU threads with `atom.add`. Lives
    /// in device memory; the host only zeroes it before launch.
    pub const BUFF_TOP: &str = "__HOSTCALL_BUFF_TOP__";
    /// Bytes per command buffer (power of two, at least 8 KiB). Host-written.
    pub const BUFF_SIZE: &str = "__HOSTCALL_BUFF_SIZE__";
    /// GPU-side cache of the host's `released` counter (device memory, GPU
    /// `atom.max` only), so most calls never read host memory for space.
    pub const BUFF_RELEASED: &str = "__HOSTCALL_BUFF_RELEASED__";
    /// Device address of the host control block (mapped; host writes).
    pub const CTRL_PTR: &str = "__HOSTCALL_CTRL_PTR__";
    /// Device address of the replies (mapped; host writes): one per thread
    /// of the launch, grouped by warp (see [`super::reply_word`]).
    pub const RETURN_SLOTS: &str = "__HOSTCALL_RETURN_SLOTS__";
    /// Number of reply slots: the launch's threads, rounded up to a warp.
    pub const RETURN_SLOT_COUNT: &str = "__HOSTCALL_RETURN_SLOT_COUNT__";
    /// Device address of the reply data area: `RETURN_DATA_SIZE` bytes per
    /// slot (mapped; host writes).
    pub const RETURN_DATA: &str = "__HOSTCALL_RETURN_DATA__";
    /// Reply data bytes per slot (multiple of 8).
    pub const RETURN_DATA_SIZE: &str = "__HOSTCALL_RETURN_DATA_SIZE__";
    /// Device address of the per-slot call counters (device memory, one
    /// `u64` per slot, zeroed by the host before launch, then read and
    /// written only by the slot's own thread).
    pub const SLOT_SEQ: &str = "__HOSTCALL_SLOT_SEQ__";
    /// Number of rings (see [`super::rings`]): a power of two from 1 to
    /// [`super::rings::MAX`]. Host-written; 0 reads as 1.
    pub const RINGS: &str = "__HOSTCALL_RINGS__";
    /// Device address of the ticket counters and `released` caches of rings
    /// 1 and up (device memory, [`super::rings::COUNTER_WORDS`] words a ring,
    /// zeroed by the host before launch, then GPU atomics only). Ring 0 uses
    /// `BUFF_TOP` and `BUFF_RELEASED`. Host-written; 0 when there is one ring.
    pub const RING_COUNTERS: &str = "__HOSTCALL_RING_COUNTERS__";
    /// Bytes per command buffer of rings 1 and up (each carries only its
    /// share of the warps' concurrent calls, so it is sized for them).
    /// Host-written; 0 when there is one ring.
    pub const RING_BUFF_SIZE: &str = "__HOSTCALL_RING_BUFF_SIZE__";
    /// Prefix of the per-hostcall ID globals: `__HOSTCALL__open` etc. The
    /// host writes the handler ID (>= 1); 0 means "not served".
    pub const ID_PREFIX: &str = "__HOSTCALL__";
    /// Every configuration global, in the order the host writes them.
    pub const ALL: [&str; 13] = [
        BUFF_PTR,
        BUFF_TOP,
        BUFF_SIZE,
        BUFF_RELEASED,
        CTRL_PTR,
        RETURN_SLOTS,
        RETURN_SLOT_COUNT,
        RETURN_DATA,
        RETURN_DATA_SIZE,
        SLOT_SEQ,
        RINGS,
        RING_COUNTERS,
        RING_BUFF_SIZE,
    ];
}

/// A queue has one ring or several, each served by a host thread of its
/// own, so that calls from a full grid are answered by as many cores as the
/// rate needs.
///
/// Every ring is two command buffers with its own ticket counter,
/// `released` cache and control line; the reply slots are shared (a thread
/// waits for one call at a time). Ring 0 has the launch's [`Geometry`]; the
/// rings past it the same but for their buffers, of
/// `__HOSTCALL_RING_BUFF_SIZE__` bytes each ([`rings::ring_geometry`]). The
/// rings lie one after another from `__HOSTCALL_BUFF_PTR__`
/// ([`rings::ring_offset`]), their control lines one a line from
/// `__HOSTCALL_CTRL_PTR__`.
///
/// Ring 0 carries every call whose order with other calls matters: files,
/// output, the heap, exit, and every hostcall the host did not mark. A
/// hostcall the host registered as *concurrent* (stateless: a clock, random
/// bytes, a user's pure function) carries [`rings::ANY_RING`] in its ID
/// global, and a warp sends it to ring `warp % rings`: one thread's calls
/// still go to one ring, in order, and one fd's writes all go to ring 0.
pub mod rings {
    use super::Geometry;

    /// Most rings a queue has.
    pub const MAX: u64 = 16;
    /// Words of counters per ring past ring 0: the ticket counter at word 0,
    /// the `released` cache at word [`RELEASED_WORD`], each on a 64-byte
    /// line of its own (the GPU's atomics on them do not share a line).
    pub const COUNTER_WORDS: usize = 16;
    /// Where a ring's `released` cache is among its counter words.
    pub const RELEASED_WORD: usize = 8;
    /// The bit of an ID global's value (`__HOSTCALL__<name>`) that says the
    /// host serves this hostcall on any ring; the handler ID is the low 32
    /// bits.
    pub const ANY_RING: u64 = 1 << 32;

    /// Whether `count` rings is a queue the host may configure.
    pub const fn valid(count: u64) -> bool {
        count.is_power_of_two() && count <= MAX
    }

    /// The ring a call goes to: 0 unless its hostcall may go to any ring,
    /// then the calling warp's (`warp` is its index in the launch; every
    /// lane of a warp picks the same ring).
    pub const fn of(warp: u64, count: u64, any_ring: bool) -> u64 {
        if any_ring && valid(count) {
            warp & (count - 1)
        } else {
            0
        }
    }

    /// The geometry of ring `k`: ring 0's, `g`, but for rings past it
    /// buffers of `ring_buff_size` bytes.
    pub const fn ring_geometry(g: Geometry, k: u64, ring_buff_size: u64) -> Geometry {
        if k == 0 {
            g
        } else {
            Geometry { buff_size: ring_buff_size, ..g }
        }
    }

    /// Words from the start of ring 0 to the start of ring `k`.
    pub const fn ring_offset(g: Geometry, k: u64, ring_buff_size: u64) -> usize {
        if k == 0 {
            0
        } else {
            g.ring_words() + (k as usize - 1) * ring_geometry(g, 1, ring_buff_size).ring_words()
        }
    }

    /// Words of all `count` rings.
    pub const fn all_ring_words(g: Geometry, count: u64, ring_buff_size: u64) -> usize {
        ring_offset(g, count, ring_buff_size)
    }

    /// The handler ID and whether it may go to any ring, from the value
    /// of an ID global; `None` for a value no host writes (0: not served).
    pub const fn decode_id(word: u64) -> Option<(u32, bool)> {
        let id = word as u32;
        if id == 0 || word & !(ANY_RING | u32::MAX as u64) != 0 {
            None
        } else {
            Some((id, word & ANY_RING != 0))
        }
    }
}

/// Limits both sides check.
pub mod limits {
    /// Smallest command buffer: 128 lines, so one thread's largest record
    /// (header, lane line, region line, 63 payload lines) fits in a buffer.
    pub const MIN_BUFF_SIZE: u64 = 8192;
    /// Largest inline payload of one call: 63 lines.
    pub const MAX_INLINE: usize = 63 * super::LINE_BYTES;
    /// Reply slots come in whole warps.
    pub const SLOT_ALIGN: u64 = super::WARP_LANES as u64;
    /// Most reply slots (threads of one launch) the host sets up: also the
    /// size of the device libc's per-thread tables (`errno`, thread-local
    /// values), which a larger launch would share between threads.
    pub const MAX_SLOTS: u64 = 1 << 20;
}

/// The flag a record starting at `ticket` carries in every flagged word:
/// odd, so never 0 (zeroed memory, scrubbed lines), and different from the
/// flag of any record within 2^31 lines of it (the ring is at most 2^25).
pub const fn record_flag(ticket: u64) -> u32 {
    ((ticket.wrapping_add(1) << 1) | 1) as u32
}

/// The call counter after `seq`: never 0, so a zeroed reply never matches.
pub const fn next_seq(seq: u64) -> u32 {
    match (seq as u32).wrapping_add(1) {
        0 => 1,
        s => s,
    }
}

/// One flagged word: `data` in the low half, `flag` in the high half.
pub const fn flagged(data: u32, flag: u32) -> u64 {
    data as u64 | (flag as u64) << 32
}

/// The data of a flagged word, if it carries `flag`.
pub const fn unflag(word: u64, flag: u32) -> Option<u32> {
    if (word >> 32) as u32 == flag {
        Some(word as u32)
    } else {
        None
    }
}

/// Decode `N` flagged words; `None` unless every one carries `flag`.
fn unflag_all<const N: usize>(w: &[u64; N], flag: u32) -> Option<[u32; N]> {
    let mut d = [0u32; N];
    for (out, &word) in d.iter_mut().zip(w) {
        *out = unflag(word, flag)?;
    }
    Some(d)
}

fn encode<const N: usize>(d: [u32; N], flag: u32) -> [u64; N] {
    d.map(|x| flagged(x, flag))
}

const fn lo(v: u64) -> u32 {
    v as u32
}
const fn hi(v: u64) -> u32 {
    (v >> 32) as u32
}
const fn join(lo: u32, hi: u32) -> u64 {
    lo as u64 | (hi as u64) << 32
}

/// Header of a record: its first line, flagged with [`record_flag`], written
/// by the warp's leader.
///
/// A record carries the calls of `lanes.count_ones()` threads of one warp
/// that call the same op at the same time. After the header come one lane
/// line per calling lane (the *lane block*), then the *extra block*: each
/// lane's extra data (a region pair if it declared a device region, then
/// its inline payload) as 16-byte pairs, stored pair-major
/// ([`extra_word`]), as many rows of pairs as the largest lane's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// Handler ID (from `__HOSTCALL__<name>`).
    pub op: u32,
    /// Bit `i`: lane `i` of the warp is in this record.
    pub lanes: u32,
    /// Reply slot of lane 0 of the warp; lane `i`'s slot is `base_slot + i`.
    pub base_slot: u32,
    /// Lines of the whole record, header included.
    pub lines: u32,
    /// [`Header::POSTED`] or 0.
    pub flags: u32,
}

impl Header {
    /// The calls want no reply (posted writes, `exit`, `abort` use
    /// acknowledged calls instead).
    pub const POSTED: u32 = 1;

    pub fn posted(&self) -> bool {
        self.flags & Self::POSTED != 0
    }

    pub fn to_words(&self, flag: u32) -> [u64; LINE_WORDS] {
        encode([self.op, self.lanes, self.base_slot, self.lines, self.flags, 0, 0, 0], flag)
    }

    /// `None` until every word carries `flag` (the header is not all there).
    pub fn from_words(w: &[u64; LINE_WORDS], flag: u32) -> Option<Header> {
        let d = unflag_all(w, flag)?;
        Some(Header { op: d[0], lanes: d[1], base_slot: d[2], lines: d[3], flags: d[4] })
    }
}

/// One lane's call: its line of the lane block, flagged like the header and
/// written by the lane itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Lane {
    pub args: [u64; ARG_WORDS],
    /// Inline payload bytes (at most [`limits::MAX_INLINE`]).
    pub payload_len: u32,
    /// A region pair (device address and length) precedes the payload.
    pub region: bool,
    /// The lane's call counter: its reply carries it as the flag.
    pub seq: u32,
}

impl Lane {
    const REGION: u32 = 1 << 31;

    /// Pairs (16 bytes) of extra data this lane's call carries in its
    /// record's extra block: its region (one pair) and its inline payload.
    pub const fn extra_pairs(payload_len: usize, region: bool) -> u64 {
        region as u64 + payload_len.div_ceil(16) as u64
    }

    pub fn to_words(&self, flag: u32) -> [u64; LINE_WORDS] {
        let a = self.args;
        let len = self.payload_len | if self.region { Self::REGION } else { 0 };
        encode([lo(a[0]), hi(a[0]), lo(a[1]), hi(a[1]), lo(a[2]), hi(a[2]), len, self.seq], flag)
    }

    pub fn from_words(w: &[u64; LINE_WORDS], flag: u32) -> Option<Lane> {
        let d = unflag_all(w, flag)?;
        Some(Lane {
            args: [join(d[0], d[1]), join(d[2], d[3]), join(d[4], d[5])],
            payload_len: d[6] & !Self::REGION,
            region: d[6] & Self::REGION != 0,
            seq: d[7],
        })
    }
}

/// Lines of the extra block of a record of `n` lanes whose largest extra
/// data is `rows` pairs ([`Lane::extra_pairs`]).
pub const fn extra_block_lines(n: u64, rows: u64) -> u64 {
    (n * rows).div_ceil((LINE_WORDS / 2) as u64)
}

/// Word `w` (0 or 1) of pair `j` of rank `r`'s extra data, counted from the
/// start of the extra block of a record of `n` lanes. The block is stored
/// pair-major like the lane block: pair `j` of every lane, then pair
/// `j + 1`, so one 16-byte store by each lane of a warp (its pair `j`)
/// fills `16 * n` contiguous bytes of the bus, not `n` scattered pieces.
pub const fn extra_word(n: usize, r: usize, j: usize, w: usize) -> usize {
    2 * (j * n + r) + w
}

/// Word `w` (0..8) of rank `r`'s line in a lane block of `n` lanes: the
/// block is stored pair-major (pair `k` of every lane, then pair `k + 1`), so
/// one 16-byte store by each lane of a warp fills `16 * n` contiguous bytes.
pub const fn lane_word(n: usize, r: usize, w: usize) -> usize {
    (w / 2) * 2 * n + 2 * r + w % 2
}

/// A reply: four flagged words, written by the host, flagged with the
/// lane's call counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Reply {
    /// The handler's value: any `u64`.
    pub value: u64,
    /// 0 on success, else a positive errno.
    pub errno: u32,
    /// Bytes of reply data the host wrote into the slot's data area.
    pub data_len: u32,
}

impl Reply {
    pub fn to_words(&self, seq: u32) -> [u64; REPLY_WORDS] {
        encode([lo(self.value), hi(self.value), self.errno, self.data_len], seq)
    }

    pub fn from_words(w: &[u64; REPLY_WORDS], seq: u32) -> Option<Reply> {
        let d = unflag_all(w, seq)?;
        Some(Reply { value: join(d[0], d[1]), errno: d[2], data_len: d[3] })
    }
}

/// Word `w` (0..4) of slot `slot`'s reply. Replies are grouped by warp and
/// stored pair-major within the group, so the 32 lanes of a warp polling
/// their replies read 512 contiguous bytes per 16-byte load.
pub const fn reply_word(slot: usize, w: usize) -> usize {
    let lanes = WARP_LANES as usize;
    let (warp, lane) = (slot / lanes, slot % lanes);
    warp * lanes * REPLY_WORDS + (w / 2) * 2 * lanes + 2 * lane + w % 2
}

/// The host control block: one line of mapped memory, written by the host.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Ctrl {
    /// Lines of the ring the host has consumed. A GPU thread holding ticket
    /// `t` for `n` lines may write once `t + n <= released + capacity`.
    pub released: u64,
    pub reserved: [u64; 7],
}

const _: () = assert!(size_of::<Ctrl>() == LINE_BYTES);

/// Word index of `Ctrl::released` in the control line.
pub const CTRL_RELEASED: usize = 0;

/// The shape of one queue, as the host configured it and the globals say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes per command buffer; the ring is two of them.
    pub buff_size: u64,
    /// Reply slots: one per thread of the launch, a multiple of a warp.
    pub slot_count: u64,
    /// Reply data bytes per slot.
    pub reply_data_size: u64,
}

/// Why a geometry is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeometryError {
    BuffSize,
    SlotCount,
    ReplyDataSize,
}

impl Geometry {
    pub const fn validate(&self) -> Result<(), GeometryError> {
        if self.buff_size < limits::MIN_BUFF_SIZE || !self.buff_size.is_power_of_two() || self.buff_size > (1 << 30) {
            return Err(GeometryError::BuffSize);
        }
        if self.slot_count == 0
            || !self.slot_count.is_multiple_of(limits::SLOT_ALIGN)
            || self.slot_count > limits::MAX_SLOTS
        {
            return Err(GeometryError::SlotCount);
        }
        if !self.reply_data_size.is_multiple_of(16) || self.reply_data_size > (1 << 20) {
            return Err(GeometryError::ReplyDataSize);
        }
        Ok(())
    }

    /// Ring capacity in lines (both buffers).
    pub const fn ring_lines(&self) -> u64 {
        2 * self.buff_size / LINE_BYTES as u64
    }
    /// The longest record: one buffer.
    pub const fn max_record_lines(&self) -> u64 {
        self.buff_size / LINE_BYTES as u64
    }
    pub const fn ring_words(&self) -> usize {
        (self.ring_lines() as usize) * LINE_WORDS
    }
    pub const fn slot_words(&self) -> usize {
        self.slot_count as usize * REPLY_WORDS
    }
    pub const fn reply_words_per_slot(&self) -> usize {
        (self.reply_data_size / 8) as usize
    }
    /// Word `i` of slot `slot`'s reply data. Grouped by warp and pair-major
    /// within the group, as replies are ([`reply_word`]): the lanes of a warp
    /// reading pair `k` of their data together read 512 contiguous bytes,
    /// four bus transactions instead of 32.
    pub const fn reply_data_word(&self, slot: usize, i: usize) -> usize {
        let lanes = WARP_LANES as usize;
        let (warp, lane) = (slot / lanes, slot % lanes);
        warp * lanes * self.reply_words_per_slot() + (i / 2) * 2 * lanes + 2 * lane + i % 2
    }
    pub const fn reply_data_words(&self) -> usize {
        self.slot_count as usize * self.reply_words_per_slot()
    }
    /// Words of per-slot call counters (device memory).
    pub const fn seq_words(&self) -> usize {
        self.slot_count as usize
    }
}

/// Copy `bytes` into `words` little-endian, zero-padding the last word.
/// Returns the number of words written. `words` must be long enough.
#[inline]
pub fn pack_bytes(bytes: &[u8], mut put: impl FnMut(usize, u64)) -> usize {
    let mut i = 0;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        put(i, u64::from_le_bytes(b));
        i += 1;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        put(i, u64::from_le_bytes(b));
        i += 1;
    }
    i
}

/// The inverse of [`pack_bytes`]: fill `out` from words read by `get`.
#[inline]
pub fn unpack_bytes(out: &mut [u8], mut get: impl FnMut(usize) -> u64) {
    let mut chunks = out.chunks_exact_mut(8);
    let mut i = 0;
    for c in &mut chunks {
        c.copy_from_slice(&get(i).to_le_bytes());
        i += 1;
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let w = get(i).to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&w[..n]);
    }
}

/// [`pack_bytes`] two words at a time: `put(k, pair)` for words `2k` and
/// `2k + 1`. Returns the number of pairs written.
#[inline]
pub fn pack_pairs(bytes: &[u8], mut put: impl FnMut(usize, [u64; 2])) -> usize {
    let mut k = 0;
    let mut chunks = bytes.chunks_exact(16);
    for c in &mut chunks {
        let (a, b) = c.split_at(8);
        put(k, [word_of(a), word_of(b)]);
        k += 1;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 16];
        b[..rest.len()].copy_from_slice(rest);
        put(k, [word_of(&b[..8]), word_of(&b[8..])]);
        k += 1;
    }
    k
}

/// The inverse of [`pack_pairs`]: fill `out` from pairs read by `get`.
#[inline]
pub fn unpack_pairs(out: &mut [u8], mut get: impl FnMut(usize) -> [u64; 2]) {
    let mut chunks = out.chunks_exact_mut(16);
    let mut k = 0;
    for c in &mut chunks {
        let [a, b] = get(k);
        c[..8].copy_from_slice(&a.to_le_bytes());
        c[8..].copy_from_slice(&b.to_le_bytes());
        k += 1;
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let [a, b] = get(k);
        let mut w = [0u8; 16];
        w[..8].copy_from_slice(&a.to_le_bytes());
        w[8..].copy_from_slice(&b.to_le_bytes());
        let n = rest.len();
        rest.copy_from_slice(&w[..n]);
    }
}

/// Eight little-endian bytes (or fewer, zero-padded) as a word.
#[inline]
fn word_of(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::rings;

    #[test]
    fn a_call_goes_to_its_warps_ring_only_when_its_hostcall_may() {
        assert_eq!(rings::of(13, 4, true), 1);
        assert_eq!(rings::of(13, 4, false), 0, "ordered calls stay on ring 0");
        assert_eq!(rings::of(13, 1, true), 0);
        assert_eq!(rings::of(13, 3, true), 0, "a count the host never writes is one ring");
        assert_eq!(rings::of(13, 0, true), 0);
    }

    #[test]
    fn id_globals_decode_to_the_handler_and_its_ring_freedom() {
        assert_eq!(rings::decode_id(7), Some((7, false)));
        assert_eq!(rings::decode_id(7 | rings::ANY_RING), Some((7, true)));
        assert_eq!(rings::decode_id(0), None);
        assert_eq!(rings::decode_id(rings::ANY_RING), None, "no handler");
        assert_eq!(rings::decode_id(1 << 40 | 7), None, "bits no host writes");
    }
}
