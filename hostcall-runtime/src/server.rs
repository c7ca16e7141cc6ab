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
use std::time::{Duration, Instant};

use hostcall_abi::{limits, post_reply, Consumer, Errno, Geometry, ProtocolError, Record, Reply, LINE_BYTES};

use crate::backend::{Backend, DeviceAlloc, KernelState, MappedRegion};
use crate::handlers::HostState;
use crate::registry::{DeviceSlice, HostCx, HostError, Payload, Registry};

/// The queue's memory for one run.
pub(crate) struct QueueMemory {
    pub ring: MappedRegion,
    pub ctrl: MappedRegion,
    pub slots: MappedRegion,
    pub reply_data: MappedRegion,
    pub slot_bits: DeviceAlloc,
}

/// What serving one run counted.
#[derive(Debug, Default)]
pub(crate) struct Served {
    pub calls: u64,
    /// Indexed by handler ID (0: unknown IDs).
    pub per_op: Vec<u64>,
    pub errors: u64,
    /// Failed calls that had no reply slot (posted): nobody on the device
    /// saw the errno. The first one, by name and errno.
    pub unanswered_errors: u64,
    pub first_unanswered: Option<(String, Errno)>,
    pub handler_panics: u64,
    pub end: Option<KernelState>,
}

/// Release ring lines at least this often (in records) while busy, besides
/// at every half-buffer boundary and whenever the ring is empty.
const RELEASE_EVERY: u32 = 32;

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

/// How an idle server waits, by how long it has been idle. Returns whether
/// it is time to query the kernel's state.
fn idle_wait(idle_for: Duration, round: u32) -> bool {
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

fn panic_text(p: &(dyn Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(|s| s.as_str()))
        .unwrap_or("(non-string panic)")
}

/// A call whose handler deferred it ([`HostCx::defer`]): its record and
/// payload, kept until the handler can finish it.
struct Deferred {
    rec: Record,
    payload: Vec<u8>,
    since: Instant,
}

pub(crate) struct Server<'a> {
    pub backend: &'a mut dyn Backend,
    pub registry: &'a mut Registry,
    pub state: &'a mut HostState,
    pub mem: &'a QueueMemory,
    pub geometry: Geometry,
    pub debug: bool,
    /// The id of `write` (`Registry::id`), whose posted calls to stdout and
    /// stderr are coalesced.
    pub write_op: Option<u32>,
}

impl Server<'_> {
    /// Serve until the kernel has completed and the ring is empty.
    pub fn run(&mut self) -> Result<Served, ProtocolError> {
        let g = self.geometry;
        let ring = self.mem.ring.words();
        let ctrl = self.mem.ctrl.words();
        let mut consumer = Consumer::new(g);
        let half = g.buff_size / LINE_BYTES as u64;
        let mut served = Served { per_op: vec![0; self.registry.len() + 1], ..Served::default() };
        let mut payload = vec![0u8; limits::MAX_INLINE];
        let mut reply = Vec::with_capacity(g.reply_data_size as usize);
        let mut idle = 0u32;
        let mut idle_since = Instant::now();
        let mut since_release = 0u32;
        let mut deferred: VecDeque<Deferred> = VecDeque::new();
        loop {
            // Calls waiting for input go first, in the order they came; the
            // first one still not ready ends the round.
            while let Some(d) = deferred.pop_front() {
                if self.dispatch(&d.rec, &d.payload, d.since, &mut reply, &mut served)? {
                    deferred.push_front(d);
                    break;
                }
            }
            let rec = match consumer.poll(ring) {
                Ok(r) => r,
                Err(e) => {
                    self.backend.cancel();
                    return Err(e);
                }
            };
            let Some(rec) = rec else {
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
            };
            idle = 0;
            let len = rec.header.payload_len as usize;
            let data = payload
                .get_mut(..len)
                .ok_or(ProtocolError::PayloadTooLarge { ticket: rec.ticket, len: rec.header.payload_len })?;
            consumer.read_payload(ring, &rec, data);
            let before = consumer.head();
            consumer.consume(ring, &rec);
            since_release += 1;
            if before / half != consumer.head() / half || since_release >= RELEASE_EVERY {
                consumer.release(ctrl);
                since_release = 0;
            }
            // A new call does not queue behind deferred ones: those were
            // retried at the top of this round and still wait for input;
            // concurrent reads of one stream have no order on Linux either.
            let data = payload.get(..len).unwrap_or_default();
            let since = Instant::now();
            if self.dispatch(&rec, data, since, &mut reply, &mut served)? {
                // Only a deferred call keeps a copy of its payload.
                deferred.push_back(Deferred { rec, payload: data.to_vec(), since });
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

    /// Whether `h` is a posted write to the device's stdout or stderr (the
    /// calls that are coalesced, `handlers::output`).
    fn is_output_write(&self, h: &hostcall_abi::layout::Header) -> bool {
        use hostcall_abi::op::{Request, Write};
        h.dev_len == 0
            && self.write_op == Some(h.op)
            && Write::from_args(h.args).is_ok_and(|w| w.fd == 1 || w.fd == 2)
    }

    /// Run the handler of `rec` and post its reply; `true` when the handler
    /// deferred it (nothing is posted or counted then).
    fn dispatch(
        &mut self,
        rec: &Record,
        data: &[u8],
        since: Instant,
        reply: &mut Vec<u8>,
        served: &mut Served,
    ) -> Result<bool, ProtocolError> {
        let h = &rec.header;
        if !self.is_output_write(h) {
            // Held output goes before any other call's effect.
            let _ = self.state.flush_output();
        }
        let payload = Payload::new(data, DeviceSlice::new(h.dev_addr, h.dev_len));
        let capacity = self.geometry.reply_data_size as usize;
        let mut cx = HostCx::new(self.state, &mut *self.backend, reply, capacity, self.debug);
        let registry = &mut *self.registry;
        let outcome = catch_unwind(AssertUnwindSafe(|| registry.dispatch(h.op, &mut cx, h.args, &payload)));
        let registry = &*registry;
        if cx.deferred && matches!(outcome, Ok(Some(_))) {
            return Ok(true);
        }
        served.calls += 1;
        let counted = served.per_op.get_mut(h.op as usize).map_or(0, |_| h.op as usize);
        if let Some(c) = served.per_op.get_mut(counted) {
            *c += 1;
        }
        let result = match outcome {
            Ok(Some(r)) => r,
            Ok(None) => Err(HostError(Errno::ENOSYS)),
            Err(p) => {
                served.handler_panics += 1;
                tracing::error!(target: "hostcall", "handler `{}` panicked: {}", op_name(registry, h.op), panic_text(&*p));
                Err(HostError(Errno::EIO))
            }
        };
        let (value, errno) = match result {
            Ok(v) => (v, 0),
            Err(HostError(e)) => {
                served.errors += 1;
                if rec.slot().is_none() {
                    served.unanswered_errors += 1;
                    served.first_unanswered.get_or_insert_with(|| (op_name(registry, h.op), e));
                }
                cx.clear_reply();
                (0, e.0)
            }
        };
        let trace_args = cx.trace_args.take();
        drop(cx);
        if self.debug {
            let name = op_name(self.registry, h.op);
            let args = trace_args.unwrap_or_default();
            let outcome = if errno == 0 {
                format!("{value}")
            } else {
                let e = Errno(errno);
                format!("-1 {}", e.name().unwrap_or("?"))
            };
            tracing::debug!(
                target: "hostcall",
                "{name}({args}){} dev={}B -> {outcome} reply={}B in {:?}",
                payload_text(data),
                h.dev_len,
                reply.len(),
                since.elapsed()
            );
        }
        if let Some(slot) = rec.slot() {
            let r = Reply { tag: h.tag, value, errno, data_len: 0, reserved: [0; 5] };
            post_reply(&self.geometry, self.mem.slots.words(), self.mem.reply_data.words(), slot, r, reply)?;
        }
        Ok(false)
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

fn op_name(registry: &Registry, id: u32) -> String {
    registry.name(id).map_or_else(|| format!("<unknown op {id}>"), str::to_string)
}
