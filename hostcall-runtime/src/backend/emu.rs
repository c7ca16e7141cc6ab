//! CPU emulation of a device: "device threads" are OS threads that run the
//! device side of `hostcall-abi` (`Queue::call`) against the same memory
//! layout the GPU sees, so the real server and handlers are tested without a
//! GPU.
//!
//! * memory is a table of regions (`Vec<AtomicU64>`) at made-up device
//!   addresses; mapped regions are the same words the host sees;
//! * a module is a set of named `u64` globals plus entry points, each a Rust
//!   closure run once per thread ([`EmuModule`]);
//! * every module declares the queue globals (`globals::ALL`), as a kernel
//!   linked with the device libc does, so the runtime's patching is real;
//! * a trap (or a device thread's panic) ends the whole "kernel": the other
//!   threads unwind at their next back-off, as a trapped GPU kernel stops.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use hostcall_abi::op::{self, Request};
use hostcall_abi::sync::Platform;
use hostcall_abi::{globals, rings, Call, CallError, Completed, Geometry, Queue, LINE_WORDS};

use super::{Backend, BackendError, DeviceAlloc, Dim3, KernelState, MappedRegion};

/// A device thread's program.
pub type Kernel = Arc<dyn Fn(&DeviceCtx) + Send + Sync>;

/// An emulated module: globals and entry points.
#[derive(Clone, Default)]
pub struct EmuModule {
    globals: Vec<String>,
    entries: HashMap<String, Kernel>,
}

impl EmuModule {
    /// A module linked against the device libc: it declares the queue's
    /// configuration globals.
    pub fn new() -> Self {
        EmuModule { globals: globals::ALL.iter().map(|s| s.to_string()).collect(), entries: HashMap::new() }
    }

    /// A module that declares no globals at all.
    pub fn bare() -> Self {
        EmuModule::default()
    }

    /// Declare a `u64` global.
    pub fn global(mut self, name: &str) -> Self {
        if !self.globals.iter().any(|g| g == name) {
            self.globals.push(name.to_string());
        }
        self
    }

    /// Declare the hostcall `name` (the global `__HOSTCALL__<name>`).
    pub fn hostcall(self, name: &str) -> Self {
        let g = format!("{}{name}", globals::ID_PREFIX);
        self.global(&g)
    }

    /// Declare every hostcall of the op table (`op::BUILTIN` and `op::TEST_ONLY`).
    pub fn builtin_hostcalls(mut self) -> Self {
        for name in op::BUILTIN.iter().chain(op::TEST_ONLY) {
            self = self.hostcall(name);
        }
        self
    }

    /// Add an entry point.
    pub fn entry(mut self, name: &str, kernel: impl Fn(&DeviceCtx) + Send + Sync + 'static) -> Self {
        self.entries.insert(name.to_string(), Arc::new(kernel));
        self
    }
}

/// Base of the first emulated address; regions are spaced so that running
/// off one never lands in the next.
const ADDR_BASE: u64 = 0x7_0000_0000;
const ADDR_GAP: u64 = 1 << 20;

/// The emulated address space.
#[derive(Default)]
struct Memory {
    regions: RwLock<BTreeMap<u64, Arc<[AtomicU64]>>>,
    next: AtomicU64,
}

impl Memory {
    fn alloc(&self, words: usize) -> (u64, Arc<[AtomicU64]>) {
        let words = words.max(1);
        let mem: Arc<[AtomicU64]> = (0..words).map(|_| AtomicU64::new(0)).collect();
        let bytes = words as u64 * 8;
        let span = bytes.div_ceil(ADDR_GAP) * ADDR_GAP + ADDR_GAP;
        let addr = ADDR_BASE + self.next.fetch_add(span, Relaxed);
        self.regions.write().unwrap_or_else(|e| e.into_inner()).insert(addr, mem.clone());
        (addr, mem)
    }

    fn free(&self, addr: u64) {
        self.regions.write().unwrap_or_else(|e| e.into_inner()).remove(&addr);
    }

    /// The region holding `[addr, addr + len)` and the byte offset of `addr`.
    fn find(&self, addr: u64, len: u64) -> Option<(Arc<[AtomicU64]>, usize)> {
        let map = self.regions.read().unwrap_or_else(|e| e.into_inner());
        let (&base, mem) = map.range(..=addr).next_back()?;
        let off = addr - base;
        let end = off.checked_add(len)?;
        (end <= mem.len() as u64 * 8).then(|| (mem.clone(), off as usize))
    }

    /// Whole words at a word-aligned address, for building queues.
    fn words(&self, addr: u64, words: usize) -> Option<(Arc<[AtomicU64]>, usize)> {
        if !addr.is_multiple_of(8) {
            return None;
        }
        let (mem, off) = self.find(addr, words as u64 * 8)?;
        Some((mem, off / 8))
    }

    fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), BackendError> {
        let (mem, off) = self.find(addr, out.len() as u64).ok_or_else(|| {
            BackendError(format!("emu: read of {} bytes at {addr:#x} is outside device memory", out.len()))
        })?;
        for (i, b) in out.iter_mut().enumerate() {
            let at = off + i;
            *b = mem[at / 8].load(Acquire).to_le_bytes()[at % 8];
        }
        Ok(())
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), BackendError> {
        let (mem, off) = self.find(addr, data.len() as u64).ok_or_else(|| {
            BackendError(format!("emu: write of {} bytes at {addr:#x} is outside device memory", data.len()))
        })?;
        // The region belongs to the waiting caller, so a load-modify-store of
        // each word races with nobody.
        let mut i = 0;
        while i < data.len() {
            let at = off + i;
            let w = at / 8;
            let mut bytes = mem[w].load(Relaxed).to_le_bytes();
            while i < data.len() && (off + i) / 8 == w {
                bytes[(off + i) % 8] = data[i];
                i += 1;
            }
            mem[w].store(u64::from_le_bytes(bytes), Release);
        }
        Ok(())
    }
}

/// Frees an emulated allocation when the last handle goes.
struct Freer {
    mem: Arc<Memory>,
    addr: u64,
    _keep: Arc<[AtomicU64]>,
}

impl Drop for Freer {
    fn drop(&mut self) {
        self.mem.free(self.addr);
    }
}

/// The payload a trap unwinds with.
struct Trap;

/// State shared by one launch's threads.
struct Launch {
    trapped: AtomicBool,
    finished: AtomicUsize,
    threads: usize,
    failure: Mutex<Option<String>>,
}

impl Launch {
    fn fail(&self, msg: String) {
        let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(msg);
        }
        self.trapped.store(true, Release);
    }
}

thread_local! {
    static CURRENT: std::cell::RefCell<Option<(Arc<Launch>, u32)>> = const { std::cell::RefCell::new(None) };
}

/// The emulation's [`Platform`]: spin, then yield, then sleep; a trapped
/// kernel unwinds the waiting thread.
pub struct EmuPlatform;

impl Platform for EmuPlatform {
    fn backoff(round: u32) {
        let trapped = CURRENT.with(|c| c.borrow().as_ref().is_some_and(|(l, _)| l.trapped.load(Relaxed)));
        if trapped {
            resume_unwind(Box::new(Trap));
        }
        if round < 4 {
            for _ in 0..(1u32 << round) {
                std::hint::spin_loop();
            }
        } else if round < 64 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(20));
        }
    }

    /// The emulated thread's global id (each is a warp of one lane).
    fn slot() -> u32 {
        CURRENT.with(|c| c.borrow().as_ref().map_or(0, |(_, id)| *id))
    }
}

/// The queue as one device thread sees it: the words named by the globals.
struct QueueViews {
    /// Ring 0's geometry, the buffer size of the rings past it, how many
    /// rings there are.
    geometry: Geometry,
    ring_buff_size: u64,
    rings: u64,
    /// Every ring's words, every ring's control line, and the counters of
    /// the rings past the first (`None` with one ring).
    ring: (Arc<[AtomicU64]>, usize),
    ctrl: (Arc<[AtomicU64]>, usize),
    counters: Option<(Arc<[AtomicU64]>, usize)>,
    slots: (Arc<[AtomicU64]>, usize),
    reply_data: (Arc<[AtomicU64]>, usize),
    seq: (Arc<[AtomicU64]>, usize),
}

/// What a device thread gets: its ids, the module's globals, the queue, and
/// emulated device memory.
pub struct DeviceCtx {
    /// Global thread id (x-major over the grid), like `blockIdx * blockDim + threadIdx`.
    pub thread_id: u32,
    pub threads: u32,
    pub block_idx: u32,
    pub thread_idx: u32,
    globals: Arc<HashMap<String, Arc<AtomicU64>>>,
    mem: Arc<Memory>,
    queue: OnceLock<Result<QueueViews, CallError>>,
}

/// Emulated device memory owned by a device thread.
pub struct DeviceBuffer {
    addr: u64,
    words: Arc<[AtomicU64]>,
    len: usize,
    _freer: Freer,
}

impl DeviceBuffer {
    pub fn addr(&self) -> u64 {
        self.addr
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len];
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.words[i / 8].load(Acquire).to_le_bytes()[i % 8];
        }
        out
    }
    pub fn fill_from(&self, data: &[u8]) {
        for (i, chunk) in data[..data.len().min(self.len)].chunks(8).enumerate() {
            let mut b = self.words[i].load(Relaxed).to_le_bytes();
            b[..chunk.len()].copy_from_slice(chunk);
            self.words[i].store(u64::from_le_bytes(b), Release);
        }
    }
}

impl DeviceCtx {
    /// A module global (`None` if the module does not declare it).
    pub fn global(&self, name: &str) -> Option<&AtomicU64> {
        self.globals.get(name).map(|g| &**g)
    }

    /// The handler ID the host patched into `__HOSTCALL__<name>` (0: not
    /// served).
    pub fn hostcall_id(&self, name: &str) -> u32 {
        self.decoded_id(name).map_or(0, |(id, _)| id)
    }

    /// `__HOSTCALL__<name>` decoded: the handler ID and whether the host
    /// serves it on any ring; `None` when not served.
    fn decoded_id(&self, name: &str) -> Option<(u32, bool)> {
        let g = format!("{}{name}", globals::ID_PREFIX);
        self.global(&g).and_then(|w| rings::decode_id(w.load(Relaxed)))
    }

    fn views(&self) -> Result<&QueueViews, CallError> {
        self.queue.get_or_init(|| self.resolve()).as_ref().map_err(|e| *e)
    }

    fn resolve(&self) -> Result<QueueViews, CallError> {
        let g = |name: &str| self.global(name).map(|w| w.load(Acquire)).ok_or(CallError::NotConfigured);
        let geometry = Geometry {
            buff_size: g(globals::BUFF_SIZE)?,
            slot_count: g(globals::RETURN_SLOT_COUNT)?,
            reply_data_size: g(globals::RETURN_DATA_SIZE)?,
        };
        geometry.validate().map_err(|_| CallError::NotConfigured)?;
        let at = |name: &str, words: usize| {
            let addr = g(name)?;
            self.mem.words(addr, words).ok_or(CallError::NotConfigured)
        };
        let count = g(globals::RINGS)?.max(1);
        let ring_buff_size = g(globals::RING_BUFF_SIZE)?;
        if !rings::valid(count) || (count > 1 && rings::ring_geometry(geometry, 1, ring_buff_size).validate().is_err())
        {
            return Err(CallError::NotConfigured);
        }
        let n = count as usize;
        Ok(QueueViews {
            geometry,
            ring_buff_size,
            rings: count,
            ring: at(globals::BUFF_PTR, rings::all_ring_words(geometry, count, ring_buff_size))?,
            ctrl: at(globals::CTRL_PTR, LINE_WORDS * n)?,
            counters: if n > 1 { Some(at(globals::RING_COUNTERS, (n - 1) * rings::COUNTER_WORDS)?) } else { None },
            slots: at(globals::RETURN_SLOTS, geometry.slot_words())?,
            reply_data: at(globals::RETURN_DATA, geometry.reply_data_words())?,
            seq: at(globals::SLOT_SEQ, geometry.seq_words())?,
        })
    }

    /// Ring 0 of the queue, built from the globals the host wrote.
    pub fn queue(&self) -> Result<Queue<'_, AtomicU64>, CallError> {
        self.queue_on(0)
    }

    /// Ring `k` of the queue (`hostcall_abi::rings`).
    pub fn queue_on(&self, k: u64) -> Result<Queue<'_, AtomicU64>, CallError> {
        let v = self.views()?;
        if k >= v.rings {
            return Err(CallError::NotConfigured);
        }
        let (top, released_cache) = match (k, &v.counters) {
            (0, _) => (
                self.global(globals::BUFF_TOP).ok_or(CallError::NotConfigured)?,
                self.global(globals::BUFF_RELEASED).ok_or(CallError::NotConfigured)?,
            ),
            (k, Some((mem, off))) => {
                let at = off + (k as usize - 1) * rings::COUNTER_WORDS;
                (&mem[at], &mem[at + rings::RELEASED_WORD])
            }
            (_, None) => return Err(CallError::NotConfigured),
        };
        fn part((mem, off): &(Arc<[AtomicU64]>, usize), from: usize, n: usize) -> &[AtomicU64] {
            &mem[*off + from..*off + from + n]
        }
        let g = rings::ring_geometry(v.geometry, k, v.ring_buff_size);
        let k = k as usize;
        Ok(Queue {
            geometry: g,
            ring: part(&v.ring, rings::ring_offset(v.geometry, k as u64, v.ring_buff_size), g.ring_words()),
            top,
            released_cache,
            ctrl: part(&v.ctrl, k * LINE_WORDS, LINE_WORDS),
            slots: part(&v.slots, 0, g.slot_words()),
            reply_data: part(&v.reply_data, 0, g.reply_data_words()),
            seq: part(&v.seq, 0, g.seq_words()),
        })
    }

    /// The ring a call of hostcall `name` from this thread goes to, and its
    /// handler ID, as the device libc picks them (each emulated thread is a
    /// warp of its own).
    fn route(&self, name: &str) -> Result<(Queue<'_, AtomicU64>, u32), CallError> {
        let rings = self.views()?.rings;
        let (id, any_ring) = self.decoded_id(name).ok_or(CallError::NotServed)?;
        Ok((self.queue_on(rings::of(u64::from(self.thread_id), rings, any_ring))?, id))
    }

    /// Make a call to hostcall `name`; reply data lands in `reply`.
    pub fn call(&self, name: &str, call: Call<'_>, reply: &mut [u8]) -> Result<Completed, CallError> {
        let (q, op) = self.route(name)?;
        q.call::<EmuPlatform>(&Call { op, ..call }, reply)
    }

    /// Post a call to hostcall `name` without waiting for it (what the
    /// device libc does for writes to stdout/stderr).
    pub fn post(&self, name: &str, call: Call<'_>) -> Result<(), CallError> {
        let (q, op) = self.route(name)?;
        q.post::<EmuPlatform>(&Call { op, ..call })
    }

    /// Make a typed built-in call.
    pub fn request<R: Request>(&self, req: &R, payload: &[u8], reply: &mut [u8]) -> Result<Completed, CallError> {
        self.call(R::NAME, Call::new(0, req.to_args()).payload(payload), reply)
    }

    /// Emulated device memory holding `bytes` between guards.
    pub fn alloc_guarded(&self, bytes: &[u8]) -> GuardedBuffer {
        let buf = self.alloc(bytes.len() + 2 * GUARD);
        let mut init = vec![POISON; bytes.len() + 2 * GUARD];
        init[GUARD..GUARD + bytes.len()].copy_from_slice(bytes);
        buf.fill_from(&init);
        GuardedBuffer { buf, len: bytes.len() }
    }

    /// Read emulated device memory at `addr`, as a GPU thread may
    /// dereference any address of global memory.
    pub fn load(&self, addr: u64, out: &mut [u8]) -> Result<(), BackendError> {
        self.mem.read(addr, out)
    }

    /// Write emulated device memory at `addr`.
    pub fn store(&self, addr: u64, data: &[u8]) -> Result<(), BackendError> {
        self.mem.write(addr, data)
    }

    /// Allocate emulated device memory (zeroed), for declared regions.
    pub fn alloc(&self, bytes: usize) -> DeviceBuffer {
        let (addr, words) = self.mem.alloc(bytes.div_ceil(8));
        DeviceBuffer {
            addr,
            words: words.clone(),
            len: bytes,
            _freer: Freer { mem: self.mem.clone(), addr, _keep: words },
        }
    }

    /// `exit(code)` as the device libc does it: the call, then a trap.
    pub fn exit(&self, code: i32) -> ! {
        let _ = self.request(&op::Exit { code }, &[], &mut []);
        self.trap()
    }

    /// End the whole kernel, as `trap` does on the GPU.
    pub fn trap(&self) -> ! {
        resume_unwind(Box::new(Trap))
    }
}

struct Running {
    launch: Arc<Launch>,
    handles: Vec<JoinHandle<()>>,
}

/// A loaded module's globals, shared with its device threads.
type Globals = Arc<HashMap<String, Arc<AtomicU64>>>;

/// The emulation backend.
pub struct EmuBackend {
    modules: HashMap<String, EmuModule>,
    loaded: Option<(EmuModule, Globals)>,
    mem: Arc<Memory>,
    running: Option<Running>,
    /// Upper bound on device threads per launch (each is an OS thread).
    pub max_threads: u64,
    /// Bytes of device memory `alloc_device` hands out in all (it is host
    /// memory here): 2 GiB unless set.
    pub device_memory: u64,
    device_bytes: u64,
    accesses: Option<HostAccesses>,
}

/// Every copy to or from device memory the host made, as `(address,
/// bytes)`, in order: what boundary tests check against the regions the
/// device declared.
pub type HostAccesses = Arc<std::sync::Mutex<Vec<(u64, u64)>>>;

/// Checks, call by call, that the host touched only what it may: the
/// region the call declared, and the heap blocks the host itself handed
/// out (zeroing one, moving one into another). For one device thread making
/// one call at a time, with the backend's [`EmuBackend::record_accesses`]
/// log.
pub struct AccessCheck {
    log: HostAccesses,
    /// `heap_alloc`, `heap_realloc`.
    heap_ops: [u32; 2],
    /// Whole blocks the host's heap handed out, sizes rounded as it rounds.
    heap: Vec<(u64, u64)>,
    before: usize,
}

impl AccessCheck {
    pub fn new(ctx: &DeviceCtx, log: HostAccesses) -> Self {
        let heap_ops = [ctx.hostcall_id(op::HeapAlloc::NAME), ctx.hostcall_id(op::HeapRealloc::NAME)];
        AccessCheck { log, heap_ops, heap: Vec::new(), before: 0 }
    }

    /// Call just before making a call.
    pub fn start(&mut self) {
        self.before = self.log.lock().unwrap_or_else(|e| e.into_inner()).len();
    }

    /// After `call` was answered with `done`: the host's accesses while it
    /// served it, and those of them outside what it may touch.
    pub fn finish(&mut self, call: &Call<'_>, done: &Completed) -> (usize, Vec<(u64, u64)>) {
        if done.errno == 0 {
            let size = match call.op {
                op if op == self.heap_ops[0] => Some(call.args[0]),
                op if op == self.heap_ops[1] => Some(call.args[1]),
                _ => None,
            };
            if let Some(size) = size {
                self.heap.push((done.value, size.next_multiple_of(op::HEAP_ALIGN)));
            }
        }
        let region = (call.dev_len != 0).then_some((call.dev_addr, call.dev_len));
        let within =
            |(d, l): (u64, u64), a: u64, n: u64| a >= d && a.checked_add(n).is_some_and(|e| e <= d.saturating_add(l));
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let seen = log.get(self.before..).unwrap_or_default();
        let outside = seen
            .iter()
            .copied()
            .filter(|&(a, n)| !(region.is_some_and(|r| within(r, a, n)) || self.heap.iter().any(|&b| within(b, a, n))))
            .collect();
        (seen.len(), outside)
    }
}

/// Bytes on each side of a [`GuardedBuffer`], and their value.
pub const GUARD: usize = 64;
pub const POISON: u8 = 0xa5;

/// Emulated device memory holding some bytes between [`GUARD`] bytes of
/// [`POISON`] on each side: a region to declare, and a check that nobody
/// wrote past it.
pub struct GuardedBuffer {
    buf: DeviceBuffer,
    len: usize,
}

impl GuardedBuffer {
    /// The address of the guarded bytes.
    pub fn addr(&self) -> u64 {
        self.buf.addr() + GUARD as u64
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Are the guards as they were made?
    pub fn guards_intact(&self) -> bool {
        let all = self.buf.to_vec();
        all[..GUARD].iter().chain(&all[GUARD + self.len..]).all(|&b| b == POISON)
    }
}

impl Default for EmuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl EmuBackend {
    pub fn new() -> Self {
        EmuBackend {
            modules: HashMap::new(),
            loaded: None,
            mem: Arc::default(),
            running: None,
            max_threads: 4096,
            device_memory: 2 << 30,
            device_bytes: 0,
            accesses: None,
        }
    }

    /// Append every host copy to or from device memory to `log` (streamed
    /// transfers appear as their pieces).
    pub fn record_accesses(&mut self, log: HostAccesses) -> &mut Self {
        self.accesses = Some(log);
        self
    }

    fn saw(&self, addr: u64, len: usize) {
        if let Some(log) = &self.accesses {
            log.lock().unwrap_or_else(|e| e.into_inner()).push((addr, len as u64));
        }
    }

    /// Make `module` loadable under `name` (what [`Backend::load_module`] takes).
    pub fn add_module(&mut self, name: &str, module: EmuModule) -> &mut Self {
        self.modules.insert(name.to_string(), module);
        self
    }

    /// A backend with one module already added under `name`.
    pub fn with_module(name: &str, module: EmuModule) -> Self {
        let mut b = Self::new();
        b.add_module(name, module);
        b
    }

    fn reap(&mut self) {
        if let Some(r) = self.running.take() {
            r.launch.trapped.store(true, Release);
            for h in r.handles {
                let _ = h.join();
            }
        }
    }

    fn global(&self, name: &str) -> Result<&Arc<AtomicU64>, BackendError> {
        let (_, globals) = self.loaded.as_ref().ok_or_else(|| BackendError::new("emu: no module loaded"))?;
        globals.get(name).ok_or_else(|| BackendError(format!("emu: the module has no global `{name}`")))
    }
}

impl Drop for EmuBackend {
    fn drop(&mut self) {
        self.reap();
    }
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

impl Backend for EmuBackend {
    fn name(&self) -> &str {
        "emu"
    }

    fn load_module(&mut self, image: &[u8]) -> Result<(), BackendError> {
        self.reap();
        let image = String::from_utf8_lossy(image);
        let module = self
            .modules
            .get(image.as_ref())
            .cloned()
            .ok_or_else(|| BackendError(format!("emu: no module named `{image}` was added")))?;
        let globals = module.globals.iter().map(|g| (g.clone(), Arc::new(AtomicU64::new(0)))).collect();
        self.loaded = Some((module, Arc::new(globals)));
        Ok(())
    }

    fn globals(&self) -> Result<Vec<String>, BackendError> {
        let (m, _) = self.loaded.as_ref().ok_or_else(|| BackendError::new("emu: no module loaded"))?;
        Ok(m.globals.clone())
    }

    fn write_global_u64(&mut self, name: &str, value: u64) -> Result<(), BackendError> {
        self.global(name)?.store(value, Release);
        Ok(())
    }

    fn read_global_u64(&mut self, name: &str) -> Result<u64, BackendError> {
        Ok(self.global(name)?.load(Acquire))
    }

    fn alloc_mapped(&mut self, words: usize) -> Result<MappedRegion, BackendError> {
        let (addr, mem) = self.mem.alloc(words);
        let ptr = NonNull::new(mem.as_ptr().cast_mut()).ok_or_else(|| BackendError::new("emu: null allocation"))?;
        let owner = Freer { mem: self.mem.clone(), addr, _keep: mem };
        // SAFETY: `ptr` points at `words` (or more) zeroed `AtomicU64`s owned
        // by the `Arc` inside `owner`, which keeps them alive.
        Ok(unsafe { MappedRegion::from_raw_parts(ptr, words, addr, Box::new(owner)) })
    }

    /// Emulated device memory is host memory, zeroed when made: small
    /// segments.
    fn heap_segment_min(&self) -> u64 {
        4 << 20
    }

    fn alloc_device(&mut self, bytes: usize) -> Result<DeviceAlloc, BackendError> {
        // Emulated device memory is host memory: refuse what a GPU would,
        // rather than abort on the host's allocation failure.
        let total = self.device_bytes.saturating_add(bytes as u64);
        if total > self.device_memory {
            return Err(BackendError(format!(
                "emu: out of memory ({bytes} bytes asked, {} of {} emulated in use)",
                self.device_bytes, self.device_memory
            )));
        }
        self.device_bytes = total;
        let (addr, mem) = self.mem.alloc(bytes.div_ceil(8));
        Ok(DeviceAlloc::new(addr, bytes, Box::new(Freer { mem: self.mem.clone(), addr, _keep: mem })))
    }

    fn launch(&mut self, entry: &str, grid: Dim3, block: Dim3) -> Result<(), BackendError> {
        self.reap();
        let (module, globals) = self.loaded.as_ref().ok_or_else(|| BackendError::new("emu: no module loaded"))?;
        let kernel = module
            .entries
            .get(entry)
            .cloned()
            .ok_or_else(|| BackendError(format!("emu: the module has no entry `{entry}`")))?;
        let (blocks, per_block) = match (grid.count(), block.count()) {
            (Some(g), Some(b)) => (g, b),
            _ => return Err(BackendError::new("emu: launch dimensions overflow")),
        };
        let threads = blocks.saturating_mul(per_block);
        if threads == 0 || threads > self.max_threads {
            return Err(BackendError(format!("emu: {threads} threads (allowed 1..={})", self.max_threads)));
        }
        let launch = Arc::new(Launch {
            trapped: AtomicBool::new(false),
            finished: AtomicUsize::new(0),
            threads: threads as usize,
            failure: Mutex::new(None),
        });
        let mut handles = Vec::with_capacity(threads as usize);
        for id in 0..threads as u32 {
            let ctx = DeviceCtx {
                thread_id: id,
                threads: threads as u32,
                block_idx: id / per_block as u32,
                thread_idx: id % per_block as u32,
                globals: globals.clone(),
                mem: self.mem.clone(),
                queue: OnceLock::new(),
            };
            let (kernel, launch2) = (kernel.clone(), launch.clone());
            let spawned =
                std::thread::Builder::new().name(format!("emu-dev-{id}")).stack_size(256 * 1024).spawn(move || {
                    CURRENT.with(|c| *c.borrow_mut() = Some((launch2.clone(), id)));
                    let r = catch_unwind(AssertUnwindSafe(|| kernel(&ctx)));
                    if let Err(p) = r {
                        if p.downcast_ref::<Trap>().is_some() {
                            launch2.fail(format!("device thread {id}: trap"));
                        } else {
                            launch2.fail(format!("device thread {id} panicked: {}", panic_message(&*p)));
                        }
                    }
                    launch2.finished.fetch_add(1, Release);
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    launch.fail(format!("emu: could not start thread {id}: {e}"));
                    // The threads already started see the trap and stop.
                    launch.finished.fetch_add(threads as usize - id as usize, Release);
                    break;
                }
            }
        }
        self.running = Some(Running { launch, handles });
        Ok(())
    }

    fn query(&mut self) -> KernelState {
        let Some(r) = &self.running else {
            return KernelState::Done;
        };
        if r.launch.finished.load(Acquire) < r.launch.threads {
            return KernelState::Running;
        }
        let failure = r.launch.failure.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match failure {
            Some(msg) => KernelState::Failed(msg),
            None => KernelState::Done,
        }
    }

    fn copy_from_device(&mut self, addr: u64, out: &mut [u8]) -> Result<(), BackendError> {
        self.saw(addr, out.len());
        self.mem.read(addr, out)
    }

    fn copy_to_device(&mut self, addr: u64, data: &[u8]) -> Result<(), BackendError> {
        self.saw(addr, data.len());
        self.mem.write(addr, data)
    }

    fn cancel(&mut self) {
        if let Some(r) = &self.running {
            r.launch.trapped.store(true, Release);
        }
    }
}
