//! Every `#[repr(C)]` type that crosses the bus, the names of the globals the
//! host patches, and the sizes that both sides agree on.
//!
//! Types are transferred word by word through [`crate::sync::Word`], never by
//! casting bus memory to a struct, so each type has a `to_words`/`from_words`
//! pair whose word order is pinned by the offset asserts below.

use core::mem::{offset_of, size_of};

/// A command line (and a return slot) is one 64-byte line: one PCIe write
/// burst, no two records share a cache line.
pub const LINE_BYTES: usize = 64;
/// Words per line.
pub const LINE_WORDS: usize = LINE_BYTES / 8;
/// Argument words carried in a command header.
pub const ARG_WORDS: usize = 3;

/// Global names. The host looks these up in the loaded module and writes
/// them before launch (see `docs/symbols.md`). Every one is a `u64`.
pub mod globals {
    /// Device address of the command ring (mapped pinned host memory), two
    /// buffers of `__HOSTCALL_BUFF_SIZE__` bytes each. Written by the host.
    pub const BUFF_PTR: &str = "__HOSTCALL_BUFF_PTR__";
    /// Ticket counter, in lines, bumped by GPU threads with `atom.add`. Lives
    /// in device memory; the host only zeroes it before launch.
    pub const BUFF_TOP: &str = "__HOSTCALL_BUFF_TOP__";
    /// Bytes per command buffer (power of two, at least 4 KiB). Host-written.
    pub const BUFF_SIZE: &str = "__HOSTCALL_BUFF_SIZE__";
    /// GPU-side cache of the host's `released` counter (device memory, GPU
    /// `atom.max` only), so most calls never read host memory for space.
    pub const BUFF_RELEASED: &str = "__HOSTCALL_BUFF_RELEASED__";
    /// Device address of the host control block (mapped; host writes).
    pub const CTRL_PTR: &str = "__HOSTCALL_CTRL_PTR__";
    /// Device address of the return slots (mapped; host writes).
    pub const RETURN_SLOTS: &str = "__HOSTCALL_RETURN_SLOTS__";
    /// Number of return slots (multiple of 64).
    pub const RETURN_SLOT_COUNT: &str = "__HOSTCALL_RETURN_SLOT_COUNT__";
    /// Device address of the reply data area: `RETURN_DATA_SIZE` bytes per
    /// slot (mapped; host writes).
    pub const RETURN_DATA: &str = "__HOSTCALL_RETURN_DATA__";
    /// Reply data bytes per slot (multiple of 8).
    pub const RETURN_DATA_SIZE: &str = "__HOSTCALL_RETURN_DATA_SIZE__";
    /// Device address of the slot bitmap (device memory, zeroed by the host
    /// before launch, then GPU `atom.or`/`atom.and` only).
    pub const SLOT_BITS: &str = "__HOSTCALL_SLOT_BITS__";
    /// Prefix of the per-hostcall ID globals: `__HOSTCALL__open` etc. The
    /// host writes the handler ID (>= 1); 0 means "not served".
    pub const ID_PREFIX: &str = "__HOSTCALL__";
    /// Every configuration global, in the order the host writes them.
    pub const ALL: [&str; 10] = [
        BUFF_PTR,
        BUFF_TOP,
        BUFF_SIZE,
        BUFF_RELEASED,
        CTRL_PTR,
        RETURN_SLOTS,
        RETURN_SLOT_COUNT,
        RETURN_DATA,
        RETURN_DATA_SIZE,
        SLOT_BITS,
    ];
}

/// Limits both sides check.
pub mod limits {
    /// Smallest command buffer: a maximal record must fit in one buffer.
    pub const MIN_BUFF_SIZE: u64 = 4096;
    /// Largest inline payload: a record (header + payload) is at most 64
    /// lines, so it always fits in the smallest buffer.
    pub const MAX_INLINE: usize = 63 * super::LINE_BYTES;
    /// Slots are claimed from a bitmap of 64-bit words.
    pub const SLOTS_PER_WORD: u64 = 64;
    /// Upper bound on slots the host accepts (the slot index is a u32 on the
    /// bus; this keeps the bitmap and the mapped area small).
    pub const MAX_SLOTS: u64 = 1 << 16;
}

/// Header of a command: line 0 of every record. Written by one GPU thread,
/// `tag` last.
///
/// `tag` is `ticket + 1`, where `ticket` is the line index the thread got
/// from `__HOSTCALL_BUFF_TOP__`; the consumer expects exactly that value at
/// its head, so zeroed memory and the previous lap's records never match.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub tag: u64,
    /// Handler ID (from `__HOSTCALL__<name>`).
    pub op: u32,
    /// Return slot index.
    pub slot: u32,
    /// Inline payload bytes, in the lines after the header.
    pub payload_len: u32,
    /// Reserved; written as 0.
    pub flags: u32,
    /// A device-memory region the call declares for the host to read or
    /// write (`dev_len == 0`: none). The host never goes outside it.
    pub dev_addr: u64,
    pub dev_len: u64,
    /// Call-specific arguments (see [`crate::op`]).
    pub args: [u64; ARG_WORDS],
}

const _: () = assert!(size_of::<Header>() == LINE_BYTES);
const _: () = assert!(offset_of!(Header, tag) == 0);
const _: () = assert!(offset_of!(Header, op) == 8);
const _: () = assert!(offset_of!(Header, slot) == 12);
const _: () = assert!(offset_of!(Header, payload_len) == 16);
const _: () = assert!(offset_of!(Header, flags) == 20);
const _: () = assert!(offset_of!(Header, dev_addr) == 24);
const _: () = assert!(offset_of!(Header, dev_len) == 32);
const _: () = assert!(offset_of!(Header, args) == 40);

impl Header {
    /// Lines the whole record occupies: the header plus the payload.
    pub const fn lines_for(payload_len: usize) -> u64 {
        1 + payload_len.div_ceil(LINE_BYTES) as u64
    }

    /// Words in memory order (little-endian packing of the 32-bit pairs, as
    /// `#[repr(C)]` lays them out on both x86_64 and nvptx64).
    pub const fn to_words(&self) -> [u64; LINE_WORDS] {
        [
            self.tag,
            self.op as u64 | (self.slot as u64) << 32,
            self.payload_len as u64 | (self.flags as u64) << 32,
            self.dev_addr,
            self.dev_len,
            self.args[0],
            self.args[1],
            self.args[2],
        ]
    }

    pub const fn from_words(w: [u64; LINE_WORDS]) -> Header {
        Header {
            tag: w[0],
            op: w[1] as u32,
            slot: (w[1] >> 32) as u32,
            payload_len: w[2] as u32,
            flags: (w[2] >> 32) as u32,
            dev_addr: w[3],
            dev_len: w[4],
            args: [w[5], w[6], w[7]],
        }
    }
}

/// A return slot: one line, written by the host, `tag` last.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Reply {
    /// The command's tag: the reply is for the caller whose ticket matches.
    pub tag: u64,
    /// The handler's value: any `u64` (a byte count, a file descriptor, a
    /// time in nanoseconds).
    pub value: u64,
    /// 0 on success, else a positive errno. Separate from `value`, so no
    /// value is ambiguous.
    pub errno: u32,
    /// Bytes of reply data the host wrote into the slot's data area.
    pub data_len: u32,
    pub reserved: [u64; 5],
}

const _: () = assert!(size_of::<Reply>() == LINE_BYTES);
const _: () = assert!(offset_of!(Reply, tag) == 0);
const _: () = assert!(offset_of!(Reply, value) == 8);
const _: () = assert!(offset_of!(Reply, errno) == 16);
const _: () = assert!(offset_of!(Reply, data_len) == 20);

impl Reply {
    pub const fn to_words(&self) -> [u64; LINE_WORDS] {
        [
            self.tag,
            self.value,
            self.errno as u64 | (self.data_len as u64) << 32,
            self.reserved[0],
            self.reserved[1],
            self.reserved[2],
            self.reserved[3],
            self.reserved[4],
        ]
    }

    pub const fn from_words(w: [u64; LINE_WORDS]) -> Reply {
        Reply {
            tag: w[0],
            value: w[1],
            errno: w[2] as u32,
            data_len: (w[2] >> 32) as u32,
            reserved: [w[3], w[4], w[5], w[6], w[7]],
        }
    }
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
const _: () = assert!(offset_of!(Ctrl, released) == 0);

/// Word index of `Ctrl::released` in the control line.
pub const CTRL_RELEASED: usize = 0;

/// The shape of one queue, as the host configured it and the globals say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes per command buffer; the ring is two of them.
    pub buff_size: u64,
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
    /// 2 x 1 MiB of ring for 1024 slots: room for every slot's record at
    /// once (up to 16 lines each) plus the lines the host has consumed but
    /// not yet released, so a thread rarely waits for ring space after
    /// taking its ticket. A ring much smaller than that makes threads queue
    /// behind each other's waits: on the H100, 132x256 threads making echo
    /// calls ran 3.2 M calls/s with this default and 0.17 M/s with 64 KiB
    /// buffers (see docs/protocol.md).
    pub const DEFAULT: Geometry = Geometry { buff_size: 1024 * 1024, slot_count: 1024, reply_data_size: 4096 };

    pub const fn validate(&self) -> Result<(), GeometryError> {
        if self.buff_size < limits::MIN_BUFF_SIZE || !self.buff_size.is_power_of_two() || self.buff_size > (1 << 30) {
            return Err(GeometryError::BuffSize);
        }
        if self.slot_count == 0
            || !self.slot_count.is_multiple_of(limits::SLOTS_PER_WORD)
            || self.slot_count > limits::MAX_SLOTS
        {
            return Err(GeometryError::SlotCount);
        }
        if !self.reply_data_size.is_multiple_of(8) || self.reply_data_size > (1 << 20) {
            return Err(GeometryError::ReplyDataSize);
        }
        Ok(())
    }

    /// Ring capacity in lines (both buffers).
    pub const fn ring_lines(&self) -> u64 {
        2 * self.buff_size / LINE_BYTES as u64
    }
    pub const fn ring_words(&self) -> usize {
        (self.ring_lines() as usize) * LINE_WORDS
    }
    pub const fn slot_words(&self) -> usize {
        self.slot_count as usize * LINE_WORDS
    }
    pub const fn reply_words_per_slot(&self) -> usize {
        (self.reply_data_size / 8) as usize
    }
    pub const fn reply_data_words(&self) -> usize {
        self.slot_count as usize * self.reply_words_per_slot()
    }
    pub const fn bitmap_words(&self) -> usize {
        (self.slot_count / limits::SLOTS_PER_WORD) as usize
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
