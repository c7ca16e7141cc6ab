//! The servers of rings 1 and up (`hostcall_abi::rings`): one thread a
//! ring, each taking its ring's records in ticket order and running their
//! concurrent handlers, while ring 0's server (`server.rs`) serves every
//! ordered call with the host state.
//!
//! Nothing on this path panics on bus data: a corrupt record stops this
//! ring and, through [`Shared::fail`], the whole run; a handler's panic is
//! the caller's `EIO`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::atomic::{AtomicU64, AtomicU8};
use std::sync::Mutex;
use std::time::Instant;

use hostcall_abi::{limits, Consumer, Geometry, ProtocolError, Record};

use crate::registry::{ConcurrentTable, ReplyCx};
use crate::server::{idle_wait, take_record, Answer, Served, PARTIAL_SPINS};

/// What ring 0's server tells the others, and what they tell it.
#[derive(Default)]
pub(crate) struct Shared {
    /// [`RUNNING`], [`DRAIN`] or [`ABANDON`].
    phase: AtomicU8,
    failure: Mutex<Option<ProtocolError>>,
}

/// The kernel runs: serve.
const RUNNING: u8 = 0;
/// The kernel has ended: serve what is left on the ring, then stop.
const DRAIN: u8 = 1;
/// The run is over (stopped, or the queue broken): stop now.
const ABANDON: u8 = 2;

impl Shared {
    /// The kernel has ended: every record it published is in memory now.
    pub fn drain(&self) {
        self.phase.store(DRAIN, Release);
    }

    /// Stop at once, whatever is left.
    pub fn abandon(&self) {
        self.phase.store(ABANDON, Release);
    }

    /// A ring's server found a corrupt record: the run must end.
    fn fail(&self, e: ProtocolError) {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
        self.abandon();
    }

    /// The first protocol error a ring's server found.
    pub fn failure(&self) -> Option<ProtocolError> {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The server of one ring past the first.
pub(crate) struct RingServer<'a> {
    /// This ring's geometry (its buffers' size; the slots are everyone's).
    pub geometry: Geometry,
    /// This ring's words and its control line.
    pub ring: &'a [AtomicU64],
    pub ctrl: &'a [AtomicU64],
    pub answer: Answer<'a>,
    pub table: &'a ConcurrentTable,
    pub debug: bool,
    pub shared: &'a Shared,
}

impl RingServer<'_> {
    /// Serve until told to stop ([`Shared::drain`] once the ring is empty,
    /// or [`Shared::abandon`]); what was served.
    pub fn run(&self) -> Served {
        let g = self.geometry;
        let mut served = Served { per_op: vec![0; self.table.len() + 1], ..Served::default() };
        let mut consumer = Consumer::new(g);
        let mut rec = Record::empty();
        let mut payload = vec![0u8; limits::MAX_INLINE];
        let mut reply = Vec::with_capacity(g.reply_data_size as usize);
        let (mut idle, mut idle_since, mut since_release, mut partial) = (0u32, Instant::now(), 0u32, 0u32);
        loop {
            // Read the phase before polling: a DRAIN seen here means every
            // record the kernel published is visible to the poll below.
            let phase = self.shared.phase.load(Acquire);
            if phase == ABANDON {
                return served;
            }
            let found = match consumer.poll_into(self.ring, &mut rec) {
                Ok(found) => found,
                Err(e) => {
                    self.shared.fail(e);
                    return served;
                }
            };
            if !found {
                partial = partial.wrapping_add(1);
                // A record whose lanes are still writing: retry at once,
                // unless the kernel ended (a lane that trapped mid-record
                // never finishes it).
                if phase == RUNNING && !partial.is_multiple_of(PARTIAL_SPINS) && consumer.head_published(self.ring) {
                    std::hint::spin_loop();
                    continue;
                }
                consumer.release(self.ctrl);
                since_release = 0;
                if phase == DRAIN {
                    return served;
                }
                if idle == 0 {
                    idle_since = Instant::now();
                }
                idle = idle.saturating_add(1);
                idle_wait(idle_since.elapsed(), idle);
                continue;
            }
            if idle > 0 {
                served.idle += idle_since.elapsed();
                idle = 0;
            }
            served.records += 1;
            let op = rec.header.op;
            let calls = rec.calls();
            take_record(&mut consumer, self.ring, self.ctrl, &rec, &mut payload, &mut since_release);
            let handler = (op as usize).checked_sub(1).and_then(|i| self.table.get(i)).and_then(Option::as_ref);
            let since = self.debug.then(Instant::now);
            let mut at = 0;
            for &call in calls {
                let len = call.payload_len as usize;
                let data = &payload[at..at + len];
                at += len;
                let mut rcx = ReplyCx::new(&mut reply, g.reply_data_size as usize, self.debug);
                // An ordered hostcall never comes this way from the device
                // libc (its ID global does not say "any ring"): ENOSYS.
                let outcome = catch_unwind(AssertUnwindSafe(|| handler.map(|(_, f)| f(&mut rcx, call.args, data))));
                let name = |id: u32| match handler {
                    Some((name, _)) => name.clone(),
                    None => format!("<op {id}: not a concurrent hostcall>"),
                };
                if let Err(e) = self.answer.finish(op, call, data, since, outcome, rcx, &mut served, name) {
                    self.shared.fail(e);
                    return served;
                }
            }
        }
    }
}

impl Served {
    /// Add what another ring's server served.
    pub(crate) fn merge(&mut self, other: Served) {
        self.calls += other.calls;
        self.records += other.records;
        self.errors += other.errors;
        self.unanswered_errors += other.unanswered_errors;
        self.handler_panics += other.handler_panics;
        if self.first_unanswered.is_none() {
            self.first_unanswered = other.first_unanswered;
        }
        if self.per_op.len() < other.per_op.len() {
            self.per_op.resize(other.per_op.len(), 0);
        }
        for (n, m) in self.per_op.iter_mut().zip(other.per_op) {
            *n += m;
        }
    }
}
