//! Handlers by name, and the typed edge they are written against.
//!
//! A handler is `FnMut(&mut HostCx, R, &Payload) -> Result<u64, HostError>`
//! for a request type `R` (`hostcall_abi::op::Open`, ...). Decoding the
//! argument words, bounds on the reply data and on declared device regions,
//! and the errno on the bus are handled here once; handlers never see a raw
//! bus word or a raw device pointer.

use std::collections::HashMap;
use std::fmt;
use std::io;

use hostcall_abi::op::Request;
use hostcall_abi::{Errno, ARG_WORDS};

use crate::backend::{Backend, BackendError};
use crate::handlers::HostState;

/// A handler's failure: the errno the caller gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostError(pub Errno);

impl From<Errno> for HostError {
    fn from(e: Errno) -> Self {
        HostError(e)
    }
}

impl From<io::Error> for HostError {
    fn from(e: io::Error) -> Self {
        HostError(errno_of(&e))
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.name() {
            Some(n) => write!(f, "{n} ({})", self.0.message()),
            None => write!(f, "errno {}", self.0 .0),
        }
    }
}

/// The errno for an `io::Error`: the OS's own code when there is one.
pub fn errno_of(e: &io::Error) -> Errno {
    if let Some(code) = e.raw_os_error() {
        if let Ok(c) = u32::try_from(code) {
            if c > 0 {
                return Errno(c);
            }
        }
    }
    use io::ErrorKind as K;
    match e.kind() {
        K::NotFound => Errno::ENOENT,
        K::PermissionDenied => Errno::EACCES,
        K::AlreadyExists => Errno::EEXIST,
        K::InvalidInput | K::InvalidData => Errno::EINVAL,
        K::BrokenPipe => Errno::EPIPE,
        K::WouldBlock => Errno::EAGAIN,
        K::Interrupted => Errno::EINTR,
        K::Unsupported => Errno::ENOSYS,
        K::OutOfMemory => Errno::ENOMEM,
        K::UnexpectedEof | K::WriteZero => Errno::EIO,
        _ => Errno::EIO,
    }
}

/// What a handler returns: the reply value, or the caller's errno.
pub type HandlerResult = Result<u64, HostError>;

/// Takes a piece of a bulk write and its offset ([`DeviceSlice::stream_out`]).
pub type StreamSink<'a> = dyn FnMut(&mut HostState, &[u8], u64) -> Result<(), HostError> + 'a;
/// Fills a piece of a bulk read at an offset ([`DeviceSlice::stream_in`]).
pub type StreamSource<'a> = dyn FnMut(&mut HostState, &mut [u8], u64) -> Result<Option<usize>, HostError> + 'a;

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
    pub fn read(&self, cx: &mut HostCx<'_>, offset: u64, out: &mut [u8]) -> Result<(), HostError> {
        let at = self.range(offset, out.len())?;
        cx.backend.copy_from_device(at, out).map_err(|e| {
            tracing::warn!(target: "hostcall", "device read failed: {e}");
            HostError(Errno::EFAULT)
        })
    }

    /// Hand the whole region to `sink` in order, a piece at a time with its
    /// offset, the backend's staging between (no copy of the handler's
    /// own): bulk writes. Stops at `sink`'s first error, which it returns.
    pub fn stream_out(&self, cx: &mut HostCx<'_>, sink: &mut StreamSink<'_>) -> Result<u64, HostError> {
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
    pub fn stream_in(&self, cx: &mut HostCx<'_>, len: u64, source: &mut StreamSource<'_>) -> Result<u64, HostError> {
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
    pub fn write(&self, cx: &mut HostCx<'_>, offset: u64, data: &[u8]) -> Result<(), HostError> {
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

/// What a handler may touch: host state (files, sinks, env), the reply data
/// area of this call, and device memory through [`DeviceSlice`].
pub struct HostCx<'a> {
    pub state: &'a mut HostState,
    pub(crate) backend: &'a mut dyn Backend,
    reply: &'a mut Vec<u8>,
    reply_capacity: usize,
    pub(crate) trace_args: Option<String>,
    pub(crate) deferred: bool,
}

impl<'a> HostCx<'a> {
    pub(crate) fn new(
        state: &'a mut HostState,
        backend: &'a mut dyn Backend,
        reply: &'a mut Vec<u8>,
        reply_capacity: usize,
        trace: bool,
    ) -> Self {
        reply.clear();
        HostCx { state, backend, reply, reply_capacity, trace_args: trace.then(String::new), deferred: false }
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
        self.reply_capacity
    }

    /// Set the reply data (cut to the capacity); returns the bytes kept.
    pub fn reply_data(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.reply_capacity);
        self.reply.clear();
        self.reply.extend_from_slice(&data[..n]);
        n
    }

    /// A zeroed reply buffer of `min(len, capacity)` bytes to fill in place;
    /// call [`HostCx::truncate_reply`] if fewer bytes were produced.
    pub fn reply_buf(&mut self, len: usize) -> &mut [u8] {
        let n = len.min(self.reply_capacity);
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
}

type Erased = Box<dyn FnMut(&mut HostCx<'_>, [u64; ARG_WORDS], &Payload<'_>) -> HandlerResult + Send>;

struct Entry {
    name: String,
    handler: Erased,
}

/// [`Registry::register`] was given a name that already has a handler;
/// [`Registry::replace`] is the way to swap one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate(pub String);

impl fmt::Display for Duplicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hostcall `{}` is registered already (use `replace` to swap its handler)", self.0)
    }
}

impl std::error::Error for Duplicate {}

/// Handlers by name; each gets an ID (>= 1) that the runtime writes into the
/// kernel's `__HOSTCALL__<name>` global.
#[derive(Default)]
pub struct Registry {
    entries: Vec<Entry>,
    by_name: HashMap<String, u32>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|e| &e.name)).finish()
    }
}

impl Registry {
    /// No handlers.
    pub fn new() -> Self {
        Registry::default()
    }

    /// The built-in handlers (`hostcall_abi::op::BUILTIN` and `echo`).
    pub fn with_builtins() -> Self {
        let mut r = Registry::new();
        // The built-in names are distinct (`builtin_names_are_distinct`).
        crate::handlers::register_builtins(&mut r).expect("built-in hostcall names are distinct");
        r
    }

    /// Register a typed handler for request `R` (its `NAME`); its ID. A name
    /// that has a handler already is an error: [`Registry::replace`] swaps one.
    pub fn register<R, F>(&mut self, f: F) -> Result<u32, Duplicate>
    where
        R: Request + fmt::Debug + 'static,
        F: FnMut(&mut HostCx<'_>, R, &Payload<'_>) -> HandlerResult + Send + 'static,
    {
        self.insert(R::NAME, typed(f), false)
    }

    /// Register or replace the handler of request `R`; a replaced handler
    /// keeps its ID.
    pub fn replace<R, F>(&mut self, f: F) -> u32
    where
        R: Request + fmt::Debug + 'static,
        F: FnMut(&mut HostCx<'_>, R, &Payload<'_>) -> HandlerResult + Send + 'static,
    {
        // `insert` refuses only when not replacing: never here.
        self.insert(R::NAME, typed(f), true).unwrap_or_default()
    }

    /// Register a handler for a user-defined hostcall by name (the kernel
    /// declares `__HOSTCALL__<name>`), taking the three raw argument words.
    /// A name that has a handler already is an error.
    pub fn register_raw<F>(&mut self, name: &str, f: F) -> Result<u32, Duplicate>
    where
        F: FnMut(&mut HostCx<'_>, [u64; ARG_WORDS], &Payload<'_>) -> HandlerResult + Send + 'static,
    {
        self.insert(name, raw(f), false)
    }

    /// Register or replace the raw handler of `name`.
    pub fn replace_raw<F>(&mut self, name: &str, f: F) -> u32
    where
        F: FnMut(&mut HostCx<'_>, [u64; ARG_WORDS], &Payload<'_>) -> HandlerResult + Send + 'static,
    {
        // As in `replace`: never refused.
        self.insert(name, raw(f), true).unwrap_or_default()
    }

    fn insert(&mut self, name: &str, handler: Erased, replace: bool) -> Result<u32, Duplicate> {
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

    /// Run handler `id`. `None` when there is none.
    pub(crate) fn dispatch(
        &mut self,
        id: u32,
        cx: &mut HostCx<'_>,
        args: [u64; ARG_WORDS],
        data: &Payload<'_>,
    ) -> Option<HandlerResult> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        let e = self.entries.get_mut(i)?;
        Some((e.handler)(cx, args, data))
    }
}

/// A typed handler behind the registry's one calling convention: decode the
/// request (`EINVAL` if the words are not one), trace it, run it.
fn typed<R, F>(mut f: F) -> Erased
where
    R: Request + fmt::Debug + 'static,
    F: FnMut(&mut HostCx<'_>, R, &Payload<'_>) -> HandlerResult + Send + 'static,
{
    Box::new(move |cx, args, data| {
        let req = R::from_args(args).map_err(|_| HostError(Errno::EINVAL))?;
        if let Some(t) = cx.trace_args.as_mut() {
            *t = fields(&format!("{req:?}"));
        }
        f(cx, req, data)
    })
}

fn raw<F>(mut f: F) -> Erased
where
    F: FnMut(&mut HostCx<'_>, [u64; ARG_WORDS], &Payload<'_>) -> HandlerResult + Send + 'static,
{
    Box::new(move |cx, args, data| {
        if let Some(t) = cx.trace_args.as_mut() {
            *t = format!("{:#x}, {:#x}, {:#x}", args[0], args[1], args[2]);
        }
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
    fn builtin_names_are_distinct() {
        let mut r = Registry::new();
        assert_eq!(crate::handlers::register_builtins(&mut r), Ok(()));
        assert!(r.len() > 20);
    }

    #[test]
    fn registering_a_name_twice_is_an_error_unless_replacing() {
        let mut r = Registry::with_builtins();
        let write = r.id("write").expect("write is built in");
        assert_eq!(r.register::<hostcall_abi::op::Write, _>(|_, _, _| Ok(0)), Err(Duplicate("write".into())));
        assert_eq!(r.replace::<hostcall_abi::op::Write, _>(|_, _, _| Ok(0)), write);
        let mine = r.register_raw("mine", |_, _, _| Ok(1)).expect("a new name");
        assert_eq!(r.register_raw("mine", |_, _, _| Ok(2)), Err(Duplicate("mine".into())));
        assert_eq!(r.replace_raw("mine", |_, _, _| Ok(3)), mine);
        assert_eq!(r.replace_raw("other", |_, _, _| Ok(4)), mine + 1);
        assert_eq!(r.names().filter(|&n| n == "mine").count(), 1);
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
