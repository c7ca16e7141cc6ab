//! Handlers by name, and the typed edge they are written against.
//!
//! A handler is `FnMut(&mut HostCx<S>, R, &Payload) -> Result<u64, HostError>`
//! for a request type `R` (`hostcall_abi::op::Open`, ...) and the state `S`
//! its registry serves (the runtime's is `HostState`; this module does not
//! know it). Decoding the
//! argument words, bounds on the reply data and on declared device regions,
//! and the errno on the bus are handled here once; handlers never see a raw
//! bus word or a raw device pointer.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use hostcall_abi::op::Request;
use hostcall_abi::{Errno, ARG_WORDS};

use crate::backend::{Backend, BackendError};
pub use crate::error::{errno_of, Duplicate, HandlerResult, HostError};

/// Takes a piece of a bulk write and its offset ([`DeviceSlice::stream_out`]).
pub type StreamSink<'a, S> = dyn FnMut(&mut S, &[u8], u64) -> Result<(), HostError> + 'a;
/// Fills a piece of a bulk read at an offset ([`DeviceSlice::stream_in`]).
pub type StreamSource<'a, S> = dyn FnMut(&mut S, &mut [u8], u64) -> Result<Option<usize>, HostError> + 'a;

/// A device-memory region a call declared, checked against its bounds on
/// every access. The only way handlers touch device memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceSlice {
    addr: u64,
    len: u64,
}

impl DeviceSlice {
    pub(crate) fn new(addr: u64, len: u64) -> Option<Self> {
        (len > 0).then_some(DeviceSlice { addr, len })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of bytes `offset..offset + n` of the region, if they are
    /// in it and do not wrap past the end of the address space.
    fn range(&self, offset: u64, n: usize) -> Result<u64, HostError> {
        let end = offset.checked_add(n as u64).ok_or(HostError(Errno::EFAULT))?;
        if end > self.len || self.addr.checked_add(end).is_none() {
            return Err(HostError(Errno::EFAULT));
        }
        Ok(self.addr + offset)
    }

    /// The region's start, once its end is known not to wrap.
    pub(crate) fn whole(&self) -> Result<u64, HostError> {
        self.addr.checked_add(self.len).map(|_| self.addr).ok_or(HostError(Errno::EFAULT))
    }

    /// Copy `out.len()` bytes from `offset` in the region.
    pub fn read<S>(&self, cx: &mut HostCx<'_, S>, offset: u64, out: &mut [u8]) -> Result<(), HostError> {
        let at = self.range(offset, out.len())?;
        cx.backend.copy_from_device(at, out).map_err(|e| {
            tracing::warn!(target: "hostcall", "device read failed: {e}");
            HostError(Errno::EFAULT)
        })
    }

    /// Hand the whole region to `sink` in order, a piece at a time with its
    /// offset, the backend's staging between (no copy of the handler's
    /// own): bulk writes. Stops at `sink`'s first error, which it returns.
    pub fn stream_out<S>(&self, cx: &mut HostCx<'_, S>, sink: &mut StreamSink<'_, S>) -> Result<u64, HostError> {
        let at = self.whole()?;
        let (state, mut failed) = (&mut *cx.state, None);
        let r = cx.backend.stream_from_device(at, self.len, &mut |bytes, offset| match sink(state, bytes, offset) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        });
        device_result(r, failed)
    }

    /// Fill the region's first `len` bytes (at most its length) from
    /// `source`, a piece at a time: `source(state, buf, offset)` returns
    /// `Some(n)` for `n` bytes written at the front of `buf` (fewer than
    /// `buf.len()` ends the transfer), `None` to end it at once. Returns the
    /// bytes that reached the device: bulk reads.
    pub fn stream_in<S>(
        &self,
        cx: &mut HostCx<'_, S>,
        len: u64,
        source: &mut StreamSource<'_, S>,
    ) -> Result<u64, HostError> {
        let at = self.whole()?;
        let (state, mut failed) = (&mut *cx.state, None);
        let r =
            cx.backend.stream_to_device(at, len.min(self.len), &mut |buf, offset| match source(state, buf, offset) {
                Ok(n) => n,
                Err(e) => {
                    failed = Some(e);
                    None
                }
            });
        device_result(r, failed)
    }

    /// Copy `data` to `offset` in the region.
    pub fn write<S>(&self, cx: &mut HostCx<'_, S>, offset: u64, data: &[u8]) -> Result<(), HostError> {
        let at = self.range(offset, data.len())?;
        cx.backend.copy_to_device(at, data).map_err(|e| {
            tracing::warn!(target: "hostcall", "device write failed: {e}");
            HostError(Errno::EFAULT)
        })
    }
}

/// A streamed transfer's outcome: the handler's own error first, then the
/// device's (as `EFAULT`, logged).
fn device_result(r: Result<u64, BackendError>, failed: Option<HostError>) -> Result<u64, HostError> {
    if let Some(e) = failed {
        return Err(e);
    }
    r.map_err(|e| {
        tracing::warn!(target: "hostcall", "device transfer failed: {e}");
        HostError(Errno::EFAULT)
    })
}

/// The data a call brought: its inline payload and its declared region.
#[derive(Clone, Copy, Debug)]
pub struct Payload<'a> {
    inline: &'a [u8],
    device: Option<DeviceSlice>,
}

impl<'a> Payload<'a> {
    pub(crate) fn new(inline: &'a [u8], device: Option<DeviceSlice>) -> Self {
        Payload { inline, device }
    }
    /// The inline payload bytes.
    pub fn inline(&self) -> &'a [u8] {
        self.inline
    }
    /// The declared device region, if any.
    pub fn device(&self) -> Option<DeviceSlice> {
        self.device
    }
    /// The inline payload as UTF-8 (paths, names); EINVAL otherwise.
    pub fn str(&self) -> Result<&'a str, HostError> {
        std::str::from_utf8(self.inline).map_err(|_| HostError(Errno::EINVAL))
    }
}

/// What every handler may touch: the reply data of its call. A concurrent
/// handler ([`Registry::register_concurrent`]) is given only this; an
/// ordered one reaches it through [`HostCx::reply`].
pub struct ReplyCx<'a> {
    reply: &'a mut Vec<u8>,
    capacity: usize,
    pub(crate) trace_args: Option<String>,
}

impl<'a> ReplyCx<'a> {
    pub(crate) fn new(reply: &'a mut Vec<u8>, capacity: usize, trace: bool) -> Self {
        reply.clear();
        ReplyCx { reply, capacity, trace_args: trace.then(String::new) }
    }

    /// Bytes of reply data this call can return.
    pub fn reply_capacity(&self) -> usize {
        self.capacity
    }

    /// Set the reply data (cut to the capacity); returns the bytes kept.
    pub fn reply_data(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.capacity);
        self.reply.clear();
        self.reply.extend_from_slice(&data[..n]);
        n
    }

    /// A zeroed reply buffer of `min(len, capacity)` bytes to fill in place;
    /// call [`ReplyCx::truncate_reply`] if fewer bytes were produced.
    pub fn reply_buf(&mut self, len: usize) -> &mut [u8] {
        let n = len.min(self.capacity);
        self.reply.clear();
        self.reply.resize(n, 0);
        self.reply
    }

    /// Keep only the first `len` bytes of the reply data.
    pub fn truncate_reply(&mut self, len: usize) {
        self.reply.truncate(len);
    }

    pub(crate) fn clear_reply(&mut self) {
        self.reply.clear();
    }

    /// The reply data set so far.
    pub(crate) fn data(&self) -> &[u8] {
        self.reply
    }

    /// The request `R` in `args` (`EINVAL` if they are not one), kept for
    /// the trace when tracing.
    fn decode<R: Request + fmt::Debug>(&mut self, args: [u64; ARG_WORDS]) -> Result<R, HostError> {
        let req = R::from_args(args).map_err(|_| HostError(Errno::EINVAL))?;
        if let Some(t) = self.trace_args.as_mut() {
            *t = fields(&format!("{req:?}"));
        }
        Ok(req)
    }

    /// Keep the raw argument words for the trace when tracing.
    fn trace_raw(&mut self, args: [u64; ARG_WORDS]) {
        if let Some(t) = self.trace_args.as_mut() {
            *t = format!("{:#x}, {:#x}, {:#x}", args[0], args[1], args[2]);
        }
    }
}

/// What an ordered handler may touch: its registry's state (the runtime's
/// `HostState`: files, sinks, env), the reply data area of this call, and
/// device memory through [`DeviceSlice`]. Handlers on a `Runtime` take
/// `HostCx<'_, HostState>`; state of their own lives in their closures.
pub struct HostCx<'a, S> {
    pub state: &'a mut S,
    pub(crate) backend: &'a mut dyn Backend,
    /// The reply data of this call.
    pub reply: ReplyCx<'a>,
    pub(crate) deferred: bool,
}

impl<'a, S> HostCx<'a, S> {
    pub(crate) fn new(
        state: &'a mut S,
        backend: &'a mut dyn Backend,
        reply: &'a mut Vec<u8>,
        reply_capacity: usize,
        trace: bool,
    ) -> Self {
        HostCx { state, backend, reply: ReplyCx::new(reply, reply_capacity, trace), deferred: false }
    }

    /// This call cannot complete yet (it waits for input that has not
    /// arrived). The server keeps the call and runs the handler again later,
    /// serving every other call meanwhile; what the handler returns this
    /// time is ignored. The calling GPU thread simply waits longer.
    pub fn defer(&mut self) {
        self.deferred = true;
    }

    /// Bytes of reply data this call can return.
    pub fn reply_capacity(&self) -> usize {
        self.reply.reply_capacity()
    }

    /// Set the reply data (cut to the capacity); returns the bytes kept.
    pub fn reply_data(&mut self, data: &[u8]) -> usize {
        self.reply.reply_data(data)
    }

    /// A zeroed reply buffer of `min(len, capacity)` bytes to fill in place;
    /// call [`HostCx::truncate_reply`] if fewer bytes were produced.
    pub fn reply_buf(&mut self, len: usize) -> &mut [u8] {
        self.reply.reply_buf(len)
    }

    /// Keep only the first `len` bytes of the reply data.
    pub fn truncate_reply(&mut self, len: usize) {
        self.reply.truncate_reply(len);
    }
}

type Erased<S> = Box<dyn FnMut(&mut HostCx<'_, S>, [u64; ARG_WORDS], &Payload<'_>) -> HandlerResult + Send>;

/// A concurrent handler: it sees the call's arguments, its inline payload
/// and its reply data, nothing else, so any server thread may run it.
pub type ConcurrentFn = Arc<dyn Fn(&mut ReplyCx<'_>, [u64; ARG_WORDS], &[u8]) -> HandlerResult + Send + Sync>;

enum Handler<S> {
    /// Run on the server of ring 0, in ring order, with the state.
    Ordered(Erased<S>),
    /// Run on whichever ring the call came by.
    Concurrent(ConcurrentFn),
}

struct Entry<S> {
    name: String,
    handler: Handler<S>,
}

/// The concurrent handlers of a registry by ID (index = ID - 1), with their
/// names: what the servers of rings past the first run.
pub(crate) type ConcurrentTable = Vec<Option<(String, ConcurrentFn)>>;

/// Handlers by name; each gets an ID (>= 1) that the runtime writes into the
/// kernel's `__HOSTCALL__<name>` global. `S` is the state every handler is
/// given ([`HostCx::state`]): the runtime's registry is a
/// `Registry<HostState>` (`Registry::with_builtins`, in `handlers`); a
/// handler's own state can also live in its closure.
///
/// A handler is *ordered* (`register`, `register_raw`: it runs on one
/// server thread, in the order the calls were queued, with `&mut S`) or
/// *concurrent* (`register_concurrent`, `register_concurrent_raw`: no
/// state but its own `Sync` captures, so the calls of different warps are
/// served by several threads at once, each warp's in order; see
/// `hostcall_abi::rings`). A hostcall whose effects another call may observe
/// (files, output, the heap) must be ordered.
pub struct Registry<S> {
    entries: Vec<Entry<S>>,
    by_name: HashMap<String, u32>,
}

impl<S> Default for Registry<S> {
    fn default() -> Self {
        Registry { entries: Vec::new(), by_name: HashMap::new() }
    }
}

impl<S> fmt::Debug for Registry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|e| &e.name)).finish()
    }
}

impl<S> Registry<S> {
    /// No handlers.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Register a typed handler for request `R` (its `NAME`); its ID. A name
    /// that has a handler already is an error: [`Registry::replace`] swaps one.
    pub fn register<R, F>(&mut self, f: F) -> Result<u32, Duplicate>
    where
        R: Request + fmt::Debug + 'static,
        F: FnMut(&mut HostCx<'_, S>, R, &Payload<'_>) -> HandlerResult + Send + 'static,
    {
        self.insert(R::NAME, Handler::Ordered(typed(f)), false)
    }

    /// Register a concurrent handler for request `R`: it gets the call's
    /// inline payload and reply data only, and calls from different warps
    /// may run on several threads at once. A name that has a handler
    /// already is an error.
    pub fn register_concurrent<R, F>(&mut self, f: F) -> Result<u32, Duplicate>
    where
        R: Request + fmt::Debug + 'static,
        F: Fn(&mut ReplyCx<'_>, R, &[u8]) -> HandlerResult + Send + Sync + 'static,
    {
        self.insert(R::NAME, Handler::Concurrent(concurrent_typed(f)), false)
    }

    /// Register a concurrent handler for a user-defined hostcall by name,
    /// taking the three raw argument words.
    pub fn register_concurrent_raw<F>(&mut self, name: &str, f: F) -> Result<u32, Duplicate>
    where
        F: Fn(&mut ReplyCx<'_>, [u64; ARG_WORDS], &[u8]) -> HandlerResult + Send + Sync + 'static,
    {
        self.insert(name, Handler::Concurrent(concurrent_raw(f)), false)
    }

    /// Register or replace the handler of request `R`; a replaced handler
    /// keeps its ID.
    pub fn replace<R, F>(&mut self, f: F) -> u32
    where
        R: Request + fmt::Debug + 'static,
        F: FnMut(&mut HostCx<'_, S>, R, &Payload<'_>) -> HandlerResult + Send + 'static,
    {
        // `insert` refuses only when not replacing: never here.
        self.insert(R::NAME, Handler::Ordered(typed(f)), true).unwrap_or_default()
    }

    /// Register a handler for a user-defined hostcall by name (the kernel
    /// declares `__HOSTCALL__<name>`), taking the three raw argument words.
    /// A name that has a handler already is an error.
    pub fn register_raw<F>(&mut self, name: &str, f: F) -> Result<u32, Duplicate>
    where
        F: FnMut(&mut HostCx<'_, S>, [u64; ARG_WORDS], &Payload<'_>) -> HandlerResult + Send + 'static,
    {
        self.insert(name, Handler::Ordered(raw(f)), false)
    }

    /// Register or replace the raw handler of `name`.
    pub fn replace_raw<F>(&mut self, name: &str, f: F) -> u32
    where
        F: FnMut(&mut HostCx<'_, S>, [u64; ARG_WORDS], &Payload<'_>) -> HandlerResult + Send + 'static,
    {
        // As in `replace`: never refused.
        self.insert(name, Handler::Ordered(raw(f)), true).unwrap_or_default()
    }

    fn insert(&mut self, name: &str, handler: Handler<S>, replace: bool) -> Result<u32, Duplicate> {
        if let Some(&id) = self.by_name.get(name) {
            if !replace {
                return Err(Duplicate(name.to_owned()));
            }
            if let Some(e) = self.entries.get_mut(id as usize - 1) {
                e.handler = handler;
            }
            return Ok(id);
        }
        self.entries.push(Entry { name: name.to_string(), handler });
        let id = self.entries.len() as u32;
        self.by_name.insert(name.to_string(), id);
        Ok(id)
    }

    /// The ID of `name`'s handler.
    pub fn id(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The name of handler `id`.
    pub fn name(&self, id: u32) -> Option<&str> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        self.entries.get(i).map(|e| e.name.as_str())
    }

    /// Registered names, in ID order (ID = position + 1).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether handler `id` is concurrent (served on any ring).
    pub fn is_concurrent(&self, id: u32) -> bool {
        let i = (id as usize).wrapping_sub(1);
        self.entries.get(i).is_some_and(|e| matches!(e.handler, Handler::Concurrent(_)))
    }

    /// The concurrent handlers, for the servers of rings past the first.
    pub(crate) fn concurrent_table(&self) -> ConcurrentTable {
        let entry = |e: &Entry<S>| match &e.handler {
            Handler::Concurrent(f) => Some((e.name.clone(), f.clone())),
            Handler::Ordered(_) => None,
        };
        self.entries.iter().map(entry).collect()
    }

    /// Run handler `id`. `None` when there is none.
    pub(crate) fn dispatch(
        &mut self,
        id: u32,
        cx: &mut HostCx<'_, S>,
        args: [u64; ARG_WORDS],
        data: &Payload<'_>,
    ) -> Option<HandlerResult> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        let e = self.entries.get_mut(i)?;
        Some(match &mut e.handler {
            Handler::Ordered(f) => f(cx, args, data),
            Handler::Concurrent(f) => f(&mut cx.reply, args, data.inline()),
        })
    }
}

/// A typed handler behind the registry's one calling convention: decode the
/// request (`EINVAL` if the words are not one), trace it, run it.
fn typed<S, R, F>(mut f: F) -> Erased<S>
where
    R: Request + fmt::Debug + 'static,
    F: FnMut(&mut HostCx<'_, S>, R, &Payload<'_>) -> HandlerResult + Send + 'static,
{
    Box::new(move |cx, args, data| {
        let req = cx.reply.decode(args)?;
        f(cx, req, data)
    })
}

fn concurrent_typed<R, F>(f: F) -> ConcurrentFn
where
    R: Request + fmt::Debug + 'static,
    F: Fn(&mut ReplyCx<'_>, R, &[u8]) -> HandlerResult + Send + Sync + 'static,
{
    Arc::new(move |cx: &mut ReplyCx<'_>, args: [u64; ARG_WORDS], data: &[u8]| {
        let req = cx.decode(args)?;
        f(cx, req, data)
    })
}

fn concurrent_raw<F>(f: F) -> ConcurrentFn
where
    F: Fn(&mut ReplyCx<'_>, [u64; ARG_WORDS], &[u8]) -> HandlerResult + Send + Sync + 'static,
{
    Arc::new(move |cx: &mut ReplyCx<'_>, args: [u64; ARG_WORDS], data: &[u8]| {
        cx.trace_raw(args);
        f(cx, args, data)
    })
}

fn raw<S, F>(mut f: F) -> Erased<S>
where
    F: FnMut(&mut HostCx<'_, S>, [u64; ARG_WORDS], &Payload<'_>) -> HandlerResult + Send + 'static,
{
    Box::new(move |cx, args, data| {
        cx.reply.trace_raw(args);
        f(cx, args, data)
    })
}

/// `Open { dirfd: -100, flags: 0 }` -> `dirfd: -100, flags: 0`, for traces
/// that read `open(dirfd: -100, flags: 0)`.
fn fields(debug: &str) -> String {
    match (debug.find('{'), debug.rfind('}')) {
        (Some(a), Some(b)) if a < b => debug[a + 1..b].trim().to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registering_a_name_twice_is_an_error_unless_replacing() {
        let mut r: Registry<()> = Registry::new();
        let write = r.register::<hostcall_abi::op::Write, _>(|_, _, _| Ok(0)).expect("a new name");
        assert_eq!(r.register::<hostcall_abi::op::Write, _>(|_, _, _| Ok(0)), Err(Duplicate("write".into())));
        assert_eq!(r.replace::<hostcall_abi::op::Write, _>(|_, _, _| Ok(0)), write);
        let mine = r.register_raw("mine", |_, _, _| Ok(1)).expect("a new name");
        assert_eq!(r.register_raw("mine", |_, _, _| Ok(2)), Err(Duplicate("mine".into())));
        assert_eq!(r.replace_raw("mine", |_, _, _| Ok(3)), mine);
        assert_eq!(r.replace_raw("other", |_, _, _| Ok(4)), mine + 1);
        assert_eq!(r.names().filter(|&n| n == "mine").count(), 1);
    }

    #[test]
    fn handlers_get_the_state_of_their_registry() {
        // A registry over a state of the user's own: a call counter.
        #[derive(Default)]
        struct Counter {
            calls: u64,
        }
        let mut r: Registry<Counter> = Registry::new();
        let id = r
            .register_raw("count", |cx, args, _| {
                cx.state.calls += args[0];
                Ok(cx.state.calls)
            })
            .expect("a new name");
        let (mut state, mut backend, mut reply) =
            (Counter::default(), crate::backend::emu::EmuBackend::new(), Vec::new());
        let data = Payload::new(&[], None);
        for (add, total) in [(2, 2), (5, 7)] {
            let mut cx = HostCx::new(&mut state, &mut backend, &mut reply, 0, false);
            assert_eq!(r.dispatch(id, &mut cx, [add, 0, 0], &data), Some(Ok(total)));
        }
        assert_eq!(state.calls, 7);
        let mut cx = HostCx::new(&mut state, &mut backend, &mut reply, 0, false);
        assert!(r.dispatch(id + 1, &mut cx, [0; ARG_WORDS], &data).is_none(), "no such handler");
    }

    #[test]
    fn a_region_whose_end_wraps_the_address_space_is_refused() {
        // Found by the fuzzer (fuzz/seeds/calls/regress-region-end-wraps-*).
        let r = DeviceSlice::new(u64::MAX - 8, u64::MAX).unwrap();
        assert_eq!(r.range(0, 8), Ok(u64::MAX - 8));
        assert_eq!(r.range(0, 9), Err(HostError(Errno::EFAULT)));
        assert_eq!(r.range(u64::MAX, 1), Err(HostError(Errno::EFAULT)));
        assert_eq!(r.whole(), Err(HostError(Errno::EFAULT)));
        let ok = DeviceSlice::new(0x1000, 16).unwrap();
        assert_eq!((ok.range(8, 8), ok.range(8, 9)), (Ok(0x1008), Err(HostError(Errno::EFAULT))));
    }
}
