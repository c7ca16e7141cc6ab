//! The hostcall protocol, written once for both sides.
//!
//! GPU threads post *records* into a ring of two command buffers in mapped
//! pinned host memory; one host thread consumes them in order, runs the
//! handlers and writes each caller's reply into the caller's own *reply
//! slot* (also mapped host memory), which the caller polls.
//! `docs/protocol.md` has the diagram; the short version of the rules this
//! crate enforces:
//!
//! * every shared word has one writer: the GPU writes ring lines, the host
//!   writes replies and the `released` counter; the counter GPU threads bump
//!   together (`__HOSTCALL_BUFF_TOP__`) lives in device memory and is only
//!   ever touched by the GPU;
//! * the lanes of a warp that call the same op at once share one record:
//!   one ticket, one header, one lane line each;
//! * a reader never trusts a word without its flag: header, lane lines and
//!   replies carry a 32-bit flag in every 64-bit word (the record's ticket,
//!   the caller's call counter), so a word is either wholly this write's or
//!   recognisably not, with no fence between the writer's stores;
//! * each thread has its own reply slot, and a reply is flagged with the
//!   caller's call counter, so a thread never takes a stale result; the value
//!   is a full `u64` beside a separate errno.
//!
//! Everything here is generic over [`sync::Word`] and [`sync::Platform`], so
//! the same client and consumer code runs on the GPU (`core` atomics on
//! mapped memory, PTX warp instructions), on CPU threads (the runtime's
//! emulation backend) and under `loom`.
#![no_std]

pub mod client;
pub mod consumer;
pub mod errno;
pub mod layout;
pub mod op;
pub mod sync;

pub use client::{Call, CallError, Completed, Queue};
pub use consumer::{post_reply, Consumer, LaneCall, Poll, ProtocolError, Record};
pub use errno::Errno;
pub use layout::*;
