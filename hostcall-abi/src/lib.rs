//! The hostcall protocol, written once for both sides.
//!
//! GPU threads post *commands* into a ring of two command buffers in mapped
//! pinned host memory; one host thread consumes them in order, runs a handler
//! and posts the result into a *return slot* (also mapped host memory) that
//! the calling thread polls. `docs/protocol.md` has the diagram; the short
//! version of the rules this crate enforces:
//!
//! * every shared word has one writer: the GPU writes command lines, the host
//!   writes reply slots and the `released` counter; counters that GPU threads
//!   bump together (`__HOSTCALL_BUFF_TOP__`, the slot bitmap) live in device
//!   memory and are only ever touched by the GPU;
//! * a command is published by its tag word, written last with release
//!   ordering (a system-scope fence on the GPU); the tag names the command's
//!   ticket, so the host can tell a fresh command from the previous lap's;
//! * a reply carries the same tag, so a thread never takes a stale result, and
//!   the value is a full `u64` beside a separate errno word.
//!
//! Everything here is generic over [`sync::Word`], so the same client and
//! consumer code runs on the GPU (`core` atomics on mapped memory), on CPU
//! threads (the runtime's emulation backend) and under `loom`.
#![no_std]

pub mod client;
pub mod consumer;
pub mod errno;
pub mod layout;
pub mod op;
pub mod sync;

pub use client::{Call, CallError, Completed, Queue};
pub use consumer::{post_reply, Consumer, Poll, ProtocolError, Record};
pub use errno::Errno;
pub use layout::*;
