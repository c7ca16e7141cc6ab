//! The server loop: while the kernel runs, take published commands off the
//! ring in ticket order, run their handlers, post the replies, and hand ring
//! lines back to the device. After the kernel completes, drain what is left.
//!
//! Nothing on this path panics on bus data: a corrupt record is a
//! [`ProtocolError`] that ends the run; a handler's error or panic becomes
//! the caller's errno.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

use hostcall_abi::{limits, post_reply, Consumer, Errno, Geometry, LaneCall, ProtocolError, Record, Reply, LINE_BYTES};

use crate::backend::{Backend, DeviceAlloc, KernelState, MappedRegion};
use crate::error::HostError;
use crate::handlers::HostState;
use crate::registry::{DeviceSlice, HostCx, Payload, Registry, ReplyCx};

/// The queue's memory for one run.
pub(crate) struct QueueMemory {
    /// Every ring's buffers, ring 0 first.
    pub ring: MappedRegion,
    /// A control line per ring.
    pub ctrl: MappedRegion,
    pub slots: MappedRegion,
    pub reply_data: MappedRegion,
    pub seq: DeviceAlloc,
    /// The ticket counters and `released` caches of rings past the first.
    pub counters: DeviceAlloc,
    pub rings: u64,
    /// Bytes per command buffer of the rings past the first (0: one ring).
    pub ring_buff_size: u64,
}

/// What serving one run counted.
#[derive(Debug, Default)]
pub(crate) struct Served {
    pub calls: u64,
    pub records: u64,
    /// Time the server found nothing to do (the ring empty).
    pub idle: Duration,
    /// Indexed by handler ID (0: unknown IDs).
    pub per_op: Vec<u64>,
    pub errors: u64,
    /// Failed calls that had no reply slot (posted): nobody on the device
    /// saw the errno. The first one, by name and errno.
    pub unanswered_errors: u64,
    pub first_unanswered: Option<(String, Errno)>,
    pub handler_panics: u64,
    pub end: Option<KernelState>,
    /// The watchdog or a signal ended the serving.
    pub stopped: Option<crate::StopReason>,
}

/// Release ring lines at least this often (in records) while busy, besides
/// at every half-buffer boundary and whenever the ring is empty.
pub(crate) const RELEASE_EVERY: u32 = 32;

/// After the last record, poll flat out this long: the next call from a GPU
/// thread is typically a few microseconds away, and a sleeping server adds
/// its wake-up latency (50-100 us on Linux) to every call.
const SPIN_FOR: Duration = Duration::from_micros(500);
/// Then yield the core between polls this long, then sleep between polls.
const YIELD_FOR: Duration = Duration::from_millis(20);
const IDLE_SLEEP: Duration = Duration::from_micros(50);
/// While spinning, ask the backend whether the kernel ended only every this
/// many empty polls: `cuStreamQuery` costs microseconds, a poll nanoseconds.
const QUERY_EVERY: u32 = 256;

/// Polls of a half-written record at the head between two passes through
/// the idle path.
pub(crate) const PARTIAL_SPINS: u32 = 4096;

/// How an idle server waits, by how long it has been idle. Returns whether
/// it is time to query the kernel's state.
pub(crate) fn idle_wait(idle_for: Duration, round: u32) -> bool {
    if idle_for < SPIN_FOR {
        // Yield now and then even while spinning: on an oversubscribed host
        // (the CPU emulation, where "device threads" share the cores) the
        // producers need the core; with a core to spare it returns at once.
        if round.is_multiple_of(64) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
        round.is_multiple_of(QUERY_EVERY)
    } else if idle_for < YIELD_FOR {
        std::thread::yield_now();
        round.is_multiple_of(16)
    } else {
        std::thread::sleep(IDLE_SLEEP);
        true
    }
}

pub(crate) fn panic_text(p: &(dyn Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(|s| s.as_str()))
        .unwrap_or("(non-string panic)")
}

/// One call as the server runs it: the op of its record and its lane.
#[derive(Clone, Copy)]
struct Job {
    op: u32,
    call: LaneCall,
}

/// A call whose handler deferred it ([`HostCx::defer`]): the call and its
/// payload, kept until the handler can finish it.
struct Deferred {
    job: Job,
    payload: Vec<u8>,
    since: Option<Instant>,
}

pub(crate) struct Server<'a> {
    pub backend: &'a mut dyn Backend,
    pub registry: &'a mut Registry<HostState>,
    pub state: &'a mut HostState,
    pub mem: &'a QueueMemory,
    pub geometry: Geometry,
    pub debug: bool,
    /// The id of `write` (`Registry::id`), whose posted calls to stdout and
    /// stderr are coalesced.
    pub write_op: Option<u32>,
    /// When the watchdog stops the run, and its timeout.
    pub deadline: Option<(Instant, Duration)>,
    /// A non-zero value stops the run (a signal's number).
    pub stop: Option<&'a AtomicUsize>,
    /// Shared with the servers of the other rings: a protocol error one of
    /// them found ends the run.
    pub rings: &'a crate::rings::Shared,
}

/// Records between two looks at the watchdog while the ring is busy.
const STOP_CHECK_EVERY: u64 = 1024;

impl Server<'_> {
    /// Whether the watchdog or a signal asks the run to end.
    fn stop_reason(&self) -> Option<crate::StopReason> {
        match self.stop.map(|s| s.load(std::sync::atomic::Ordering::Relaxed)) {
            Some(signal) if signal != 0 => Some(crate::StopReason::Signal(signal)),
            _ => self.deadline.filter(|(at, _)| Instant::now() >= *at).map(|(_, t)| crate::StopReason::Timeout(t)),
        }
    }

    /// Ends the serving: the kernel is told to stop where the backend can
    /// (the emulation traps its threads; CUDA leaves it to the process's
    /// exit), held output goes out, deferred calls are dropped.
    fn stopped(&mut self, reason: crate::StopReason, mut served: Served) -> Served {
        self.backend.cancel();
        let _ = self.state.flush_output();
        self.count_output_failures(&mut served);
        served.stopped = Some(reason);
        served
    }

    /// Serve until the kernel has completed and the ring is empty.
    pub fn run(&mut self) -> Result<Served, ProtocolError> {
        let g = self.geometry;
        let ring = self.mem.ring.words();
        let ring = &ring[..g.ring_words().min(ring.len())];
        let ctrl = self.mem.ctrl.words();
        let mut consumer = Consumer::new(g);
        let mut served = Served { per_op: vec![0; self.registry.len() + 1], ..Served::default() };
        let mut payload = vec![0u8; limits::MAX_INLINE];
        let mut reply = Vec::with_capacity(g.reply_data_size as usize);
        let mut idle = 0u32;
        let mut idle_since = Instant::now();
        let mut since_release = 0u32;
        let mut deferred: VecDeque<Deferred> = VecDeque::new();
        let mut partial = 0u32;
        let mut rec = Record::empty();
        loop {
            // Calls waiting for input go first, in the order they came; the
            // first one still not ready ends the round.
            while let Some(d) = deferred.pop_front() {
                if self.dispatch(d.job, &d.payload, d.since, &mut reply, &mut served)? {
                    deferred.push_front(d);
                    break;
                }
            }
            let found = match consumer.poll_into(ring, &mut rec) {
                Ok(found) => found,
                Err(e) => {
                    self.backend.cancel();
                    return Err(e);
                }
            };
            if !found {
                // A warp's record whose lanes are still writing is not a
                // quiet ring: retry at once (no flush, no release, no idle
                // wait), but now and then take the idle path, which asks
                // whether the kernel ended (a lane that trapped mid-record
                // never finishes it).
                partial = partial.wrapping_add(1);
                if !partial.is_multiple_of(PARTIAL_SPINS) && consumer.head_published(ring) {
                    std::hint::spin_loop();
                    continue;
                }
                consumer.release(ctrl);
                since_release = 0;
                // Nothing to coalesce with: the output goes now (it streams
                // while the kernel computes). A failure is counted below.
                let _ = self.state.flush_output();
                if served.end.is_some() {
                    // Deferred calls left now belong to threads that are gone.
                    self.count_output_failures(&mut served);
                    return Ok(served);
                }
                if let Some(reason) = self.stop_reason() {
                    return Ok(self.stopped(reason, served));
                }
                if let Some(e) = self.rings.failure() {
                    self.backend.cancel();
                    return Err(e);
                }
                if idle == 0 {
                    idle_since = Instant::now();
                }
                idle = idle.saturating_add(1);
                if !idle_wait(idle_since.elapsed(), idle) {
                    continue;
                }
                match self.backend.query() {
                    KernelState::Running => {}
                    // Poll once more: a record published just before the end
                    // may have landed after the last poll.
                    end => served.end = Some(end),
                }
                continue;
            }
            if idle > 0 {
                served.idle += idle_since.elapsed();
                idle = 0;
            }
            served.records += 1;
            if served.records.is_multiple_of(STOP_CHECK_EVERY) {
                if let Some(reason) = self.stop_reason() {
                    return Ok(self.stopped(reason, served));
                }
                if let Some(e) = self.rings.failure() {
                    self.backend.cancel();
                    return Err(e);
                }
            }
            let op = rec.header.op;
            let calls = rec.calls();
            take_record(&mut consumer, ring, ctrl, &rec, &mut payload, &mut since_release);
            // A new call does not queue behind deferred ones: those were
            // retried at the top of this round and still wait for input;
            // concurrent reads of one stream have no order on Linux either.
            let since = self.debug.then(Instant::now);
            if self.write_op != Some(op) {
                // Held output goes before any other call's effect (once for
                // the record: `dispatch` finds nothing held after this).
                let _ = self.state.flush_output();
            }
            let mut at = 0;
            for &call in calls {
                let len = call.payload_len as usize;
                let data = &payload[at..at + len];
                at += len;
                let job = Job { op, call };
                if self.dispatch(job, data, since, &mut reply, &mut served)? {
                    // Only a deferred call keeps a copy of its payload.
                    deferred.push_back(Deferred { job, payload: data.to_vec(), since });
                }
            }
        }
    }

    /// Posted output lost to failed flushes, counted as failed posted writes.
    fn count_output_failures(&mut self, served: &mut Served) {
        let (lost, errno) = self.state.output.take_failures();
        if lost > 0 {
            served.errors += lost;
            served.unanswered_errors += lost;
            let errno = errno.unwrap_or(Errno::EIO);
            served.first_unanswered.get_or_insert_with(|| ("write".to_string(), errno));
        }
    }

    /// Whether `job` is a posted write to the device's stdout or stderr (the
    /// calls that are coalesced, `handlers::output`).
    fn is_output_write(&self, job: &Job) -> bool {
        use hostcall_abi::op::{Request, Write};
        job.call.dev_len == 0
            && job.call.slot.is_none()
            && self.write_op == Some(job.op)
            && Write::from_args(job.call.args).is_ok_and(|w| w.fd == 1 || w.fd == 2)
    }

    /// Run the handler of `job` and post its reply; `true` when the handler
    /// deferred it (nothing is posted or counted then).
    fn dispatch(
        &mut self,
        job: Job,
        data: &[u8],
        since: Option<Instant>,
        reply: &mut Vec<u8>,
        served: &mut Served,
    ) -> Result<bool, ProtocolError> {
        let Job { op, call } = job;
        if !self.state.output.is_empty() && !self.is_output_write(&job) {
            // Held output goes before any other call's effect.
            let _ = self.state.flush_output();
        }
        let payload = Payload::new(data, DeviceSlice::new(call.dev_addr, call.dev_len));
        let capacity = self.geometry.reply_data_size as usize;
        let mut cx = HostCx::new(self.state, &mut *self.backend, reply, capacity, self.debug);
        let registry = &mut *self.registry;
        let outcome = catch_unwind(AssertUnwindSafe(|| registry.dispatch(op, &mut cx, call.args, &payload)));
        let registry = &*registry;
        if cx.deferred && matches!(outcome, Ok(Some(_))) {
            return Ok(true);
        }
        let HostCx { reply: rcx, .. } = cx;
        let answer =
            Answer { geometry: &self.geometry, slots: self.mem.slots.words(), data: self.mem.reply_data.words() };
        answer.finish(op, call, data, since, outcome, rcx, served, |id| op_name(registry, id))?;
        Ok(false)
    }
}

/// Copy every payload of `rec` (the record at the consumer's head) into
/// `payload`, one after another in lane order, then move past the record:
/// its lines go back to the device at every half-buffer boundary and every
/// [`RELEASE_EVERY`] records (`since_release` counts them), and whenever
/// the server finds its ring empty.
pub(crate) fn take_record(
    consumer: &mut Consumer,
    ring: &[AtomicU64],
    ctrl: &[AtomicU64],
    rec: &Record,
    payload: &mut Vec<u8>,
    since_release: &mut u32,
) {
    let calls = rec.calls();
    let total: usize = calls.iter().map(|c| c.payload_len as usize).sum();
    if payload.len() < total {
        payload.resize(total, 0);
    }
    let mut at = 0;
    for c in calls {
        let len = c.payload_len as usize;
        consumer.read_payload(ring, c, &mut payload[at..at + len]);
        at += len;
    }
    let half = consumer.geometry().buff_size / LINE_BYTES as u64;
    let before = consumer.head();
    consumer.consume(ring, rec);
    *since_release += 1;
    if before / half != consumer.head() / half || *since_release >= RELEASE_EVERY {
        consumer.release(ctrl);
        *since_release = 0;
    }
}

/// What every server does with a call once its handler ran: count it,
/// trace it under `HOSTCALL_DEBUG`, and post its reply (if it has a slot).
pub(crate) struct Answer<'a> {
    pub geometry: &'a Geometry,
    /// Every reply slot's words, and every slot's reply data.
    pub slots: &'a [AtomicU64],
    pub data: &'a [AtomicU64],
}

/// A handler's outcome: `None` when there is no handler of that ID; a
/// panic's payload when it panicked.
pub(crate) type Outcome = std::thread::Result<Option<crate::registry::HandlerResult>>;

impl Answer<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn finish(
        &self,
        op: u32,
        call: LaneCall,
        data: &[u8],
        since: Option<Instant>,
        outcome: Outcome,
        mut rcx: ReplyCx<'_>,
        served: &mut Served,
        name: impl Fn(u32) -> String,
    ) -> Result<(), ProtocolError> {
        served.calls += 1;
        let counted = served.per_op.get_mut(op as usize).map_or(0, |_| op as usize);
        if let Some(c) = served.per_op.get_mut(counted) {
            *c += 1;
        }
        let result = match outcome {
            Ok(Some(r)) => r,
            Ok(None) => Err(HostError(Errno::ENOSYS)),
            Err(p) => {
                served.handler_panics += 1;
                tracing::error!(target: "hostcall", "handler `{}` panicked: {}", name(op), panic_text(&*p));
                Err(HostError(Errno::EIO))
            }
        };
        let (value, errno) = match result {
            Ok(v) => (v, 0),
            Err(HostError(e)) => {
                served.errors += 1;
                if call.slot.is_none() {
                    served.unanswered_errors += 1;
                    served.first_unanswered.get_or_insert_with(|| (name(op), e));
                }
                rcx.clear_reply();
                (0, e.0)
            }
        };
        if let Some(since) = since {
            let args = rcx.trace_args.take().unwrap_or_default();
            let outcome = if errno == 0 {
                format!("{value}")
            } else {
                let e = Errno(errno);
                format!("-1 {}", e.name().unwrap_or("?"))
            };
            let who = call.slot.map_or_else(|| format!("lane {} posted", call.lane), |s| format!("thread {s}"));
            tracing::debug!(
                target: "hostcall",
                "{}({args}){} dev={}B -> {outcome} reply={}B in {:?} ({who})",
                name(op),
                payload_text(data),
                call.dev_len,
                rcx.data().len(),
                since.elapsed()
            );
        }
        if let Some(slot) = call.slot {
            let r = Reply { value, errno, data_len: 0 };
            let g = self.geometry;
            let slots = self.slots.get(..g.slot_words()).ok_or(ProtocolError::BadBuffer)?;
            let data = self.data.get(..g.reply_data_words()).ok_or(ProtocolError::BadBuffer)?;
            post_reply(g, slots, data, slot, call.seq, r, rcx.data())?;
        }
        Ok(())
    }
}

/// The payload as a trace shows it: short printable text (a path, a name, a
/// line of output) quoted, anything else by size.
fn payload_text(data: &[u8]) -> String {
    const SHOWN: usize = 48;
    match std::str::from_utf8(data) {
        Ok("") => String::new(),
        Ok(s) if !s.chars().any(|c| c.is_control() && c != '\n') => {
            let cut: String = s.chars().take(SHOWN).collect();
            let more = if cut.len() < s.len() { "..." } else { "" };
            format!(" {cut:?}{more}")
        }
        _ => format!(" <{} bytes>", data.len()),
    }
}

fn op_name(registry: &Registry<HostState>, id: u32) -> String {
    registry.name(id).map_or_else(|| format!("<unknown op {id}>"), str::to_string)
}
