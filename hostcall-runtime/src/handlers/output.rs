//! Posted writes to the device's stdout and stderr, coalesced: the server
//! appends each record's bytes here and writes them with few `write(2)`s.
//!
//! Flushed (`HostState::flush_output`) when the ring runs empty (so output
//! streams while a kernel computes), at [`FLUSH_AT`] bytes, when output
//! switches between stdout and stderr (so the two keep the order the kernel
//! issued them in, on one terminal or two), before any call that is not such
//! a write (so output never moves past another side effect: a file write,
//! `exit`), and when the run ends. A record's bytes are never split between
//! two flushes of different streams, so a line stays whole.
//!
//! A failed flush loses the records in it; they are counted, with the first
//! errno, and reported with the run like any failed posted call.

use hostcall_abi::Errno;

/// Bytes held before they are written.
pub const FLUSH_AT: usize = 64 * 1024;

/// Which stream the held bytes are for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stream {
    #[default]
    Stdout,
    Stderr,
}

/// Held output and the failures of earlier flushes.
#[derive(Debug, Default)]
pub struct Pending {
    pub(crate) stream: Stream,
    pub(crate) buf: Vec<u8>,
    /// Records whose bytes are in `buf`.
    pub(crate) records: u64,
    /// Records lost to failed flushes, and the first flush's errno.
    pub(crate) failed: u64,
    pub(crate) first_error: Option<Errno>,
}

impl Pending {
    /// No bytes held.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Records lost to failed flushes since the last call, and the first errno.
    pub fn take_failures(&mut self) -> (u64, Option<Errno>) {
        (std::mem::take(&mut self.failed), self.first_error.take())
    }
}
