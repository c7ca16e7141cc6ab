//! The host side of hostcall: load a kernel, patch its `__HOSTCALL*`
//! globals, launch it, and serve its hostcalls while it runs.
//!
//! * [`backend`]: the one seam to a device ([`Backend`]): CUDA through
//!   cudarc ([`backend::cuda`], feature `cuda`) or CPU threads
//!   ([`backend::emu`]), on which every test runs the real server;
//! * [`registry`]: typed handlers by name, and the IDs written into the
//!   kernel;
//! * [`handlers`]: the built-in hostcalls of `hostcall_abi::op`, one module
//!   per concern, confined to a sandbox directory;
//! * [`devices`]: one runtime per device, launched and served at once,
//!   sharing stdio, sandbox and environment (`--devices`);
//! * `server`: the loop that drains the queue while the kernel runs;
//!   `rings`: the servers of the rings past the first (concurrent
//!   hostcalls from large grids, `hostcall_abi::rings`).
//!
//! `HOSTCALL_DEBUG=1` logs every call (name, decoded arguments, result,
//! latency) to stderr through `tracing`.
//!
//! ```no_run
//! use hostcall_runtime::{backend::cuda::CudaBackend, Runtime, RuntimeConfig};
//! let backend = CudaBackend::new(0)?;
//! let mut rt = Runtime::new(backend, RuntimeConfig::default())?;
//! rt.load(std::fs::read("kernel.ptx")?)?; // or a cubin
//! let report = rt.launch("main", 1, 32)?;
//! std::process::exit(report.exit_code.unwrap_or(0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostcall_abi::{globals, limits, rings as ring_abi, Errno, Geometry, ProtocolError, LINE_BYTES, LINE_WORDS};

pub mod backend;
pub mod devices;
pub mod error;
pub mod exit_code;
pub mod handlers;
#[cfg(feature = "cuda")]
pub mod launcher;
pub mod registry;
mod rings;
mod server;

pub use backend::{Backend, BackendError, Dim3, KernelState};
pub use error::{Duplicate, HandlerResult, HostError};
pub use handlers::{ExitStatus, HostState, SharedBuf};
pub use hostcall_abi;
pub use hostcall_image;
pub use registry::{DeviceSlice, HostCx, Payload, Registry, ReplyCx};

/// How a [`Runtime`] is set up.
pub struct RuntimeConfig {
    /// The directory the device's file calls are confined to (`/` on the
    /// device). Default: the current directory.
    pub root: PathBuf,
    /// Ring and reply sizes; the reply slots follow each launch's grid.
    pub queue: QueueConfig,
    /// What device fd 0 reads. Default: the process's stdin.
    pub stdin: Box<dyn Read + Send>,
    /// Where device fd 1 writes. Default: the process's stdout.
    pub stdout: Box<dyn Write + Send>,
    /// Where device fd 2 writes. Default: the process's stderr.
    pub stderr: Box<dyn Write + Send>,
    /// What `getenv` sees. Default: the process's environment.
    pub env: HashMap<String, String>,
    /// What `arg` returns (`args[0]` is the program name by convention).
    pub args: Vec<String>,
    /// Log every call. Default: `HOSTCALL_DEBUG` is set and not `0`.
    pub debug: bool,
    /// The watchdog: a launch still running after this long is stopped
    /// ([`RuntimeError::Stopped`]). Default: none.
    pub timeout: Option<Duration>,
    /// Stops the launch when it holds a non-zero number (a signal handler
    /// stores the signal's number: [`StopReason::Signal`]). Default: none.
    pub stop: Option<Arc<AtomicUsize>>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            root: PathBuf::from("."),
            queue: QueueConfig::DEFAULT,
            stdin: Box::new(io::stdin()),
            stdout: Box::new(io::stdout()),
            stderr: Box::new(io::stderr()),
            env: std::env::vars().collect(),
            args: Vec::new(),
            debug: debug_from_env(),
            timeout: None,
            stop: None,
        }
    }
}

/// `HOSTCALL_DEBUG` is set to something other than `0` or empty.
pub fn debug_from_env() -> bool {
    std::env::var_os("HOSTCALL_DEBUG").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether `cubin` was built for a device that takes `device_arch` cubins
/// (`sm_90`); else why not.
pub fn cubin_suits(cubin: &[u8], device_arch: Option<&str>) -> Result<(), String> {
    let built_for = hostcall_image::Cubin::parse(cubin).map_err(|e| e.to_string())?.arch();
    match (built_for.as_deref(), device_arch) {
        (Some(built), Some(device)) if built == device => Ok(()),
        (built, device) => Err(format!(
            "the cubin is for {}, this device takes {}",
            built.unwrap_or("an unknown architecture"),
            device.map_or_else(|| "no cubins".to_owned(), |d| format!("{d} cubins"))
        )),
    }
}

/// Load `cubin` into `backend` when it was built for the backend's
/// architecture, else `ptx` (also when the driver refuses the cubin); which
/// one, and why, under `HOSTCALL_DEBUG`. For a bare backend (no runtime);
/// [`Runtime::load_best`] is this plus the module's globals.
pub fn load_best(backend: &mut dyn Backend, ptx: &[u8], cubin: Option<&[u8]>) -> Result<(), BackendError> {
    if let Some(cubin) = cubin {
        match cubin_suits(cubin, backend.cubin_arch().as_deref()) {
            Ok(()) => match backend.load_module(cubin) {
                Ok(()) => return Ok(()),
                Err(e) => tracing::debug!(target: "hostcall", "the cubin did not load ({e}); loading the PTX"),
            },
            Err(why) => tracing::debug!(target: "hostcall", "{why}: loading the PTX"),
        }
    }
    backend.load_module(ptx)
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// The code the device passed to `exit` (134 for `abort`); `None` when
    /// the kernel returned without calling either.
    pub exit_code: Option<i32>,
    pub aborted: bool,
    /// Calls served.
    pub calls: u64,
    /// Records those calls came in: the lanes of a warp that call together
    /// share one, so `calls / records` says how well the warps stayed
    /// together.
    pub records: u64,
    /// Of `elapsed`, the time the server found the ring empty: near all of
    /// it, the device side set the pace; near none, the host did.
    pub server_idle: Duration,
    /// Calls served, by hostcall name.
    pub per_op: BTreeMap<String, u64>,
    /// Calls served by each ring's server, ring 0 first
    /// (`hostcall_abi::rings`; one entry when the queue had one ring).
    pub calls_per_ring: Vec<u64>,
    /// Calls answered with an errno.
    pub errors: u64,
    /// Posted calls that failed on the host (writes to stdout/stderr, which
    /// the device does not wait for): counted in `errors` too, but no device
    /// code saw them. With the first one's hostcall name and errno.
    pub unanswered_errors: u64,
    pub first_unanswered: Option<(String, Errno)>,
    /// Handlers that panicked (each answered with EIO).
    pub handler_panics: u64,
    /// How the kernel ended when it ended abnormally after `exit`/`abort`
    /// (the trap that follows them).
    pub kernel_error: Option<String>,
    pub elapsed: Duration,
}

/// Why a run could not be set up or did not end well.
#[derive(Debug)]
pub enum RuntimeError {
    Backend(BackendError),
    /// The configuration is unusable (bad geometry, unreadable root).
    Config(String),
    /// `launch` or `check_handlers` before `load`.
    NoModule,
    /// Hostcalls the kernel declares that have no handler, by name.
    MissingHandlers(Vec<String>),
    /// The kernel declares hostcalls but not this queue global.
    MissingGlobal(String),
    /// The device broke the protocol; the run was stopped.
    Protocol(ProtocolError),
    /// The kernel failed without calling `exit`/`abort`.
    KernelFailed {
        message: String,
        report: Box<RunReport>,
    },
    /// The watchdog or a signal stopped the run; the output the kernel
    /// produced before was written. The kernel may still be running on the
    /// device (CUDA cannot stop one): ending the process tears it down.
    Stopped {
        reason: StopReason,
        report: Box<RunReport>,
    },
}

/// Why a run was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// [`RuntimeConfig::timeout`] passed.
    Timeout(Duration),
    /// [`RuntimeConfig::stop`] held this signal number.
    Signal(usize),
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Timeout(t) => write!(f, "timed out after {:.1} s", t.as_secs_f64()),
            StopReason::Signal(2) => write!(f, "interrupted (SIGINT)"),
            StopReason::Signal(15) => write!(f, "terminated (SIGTERM)"),
            StopReason::Signal(n) => write!(f, "stopped by signal {n}"),
        }
    }
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::Backend(e) => write!(f, "{e}"),
            RuntimeError::Config(e) => write!(f, "bad runtime configuration: {e}"),
            RuntimeError::NoModule => write!(f, "no module loaded"),
            RuntimeError::MissingHandlers(names) => {
                write!(f, "the kernel uses hostcalls with no handler: {}", names.join(", "))
            }
            RuntimeError::MissingGlobal(g) => {
                write!(f, "the kernel declares hostcalls but not the queue global `{g}` (not linked against the device libc?)")
            }
            RuntimeError::Protocol(e) => write!(f, "hostcall protocol error, run stopped: {e:?}"),
            RuntimeError::KernelFailed { message, .. } => write!(f, "kernel failed: {message}"),
            RuntimeError::Stopped { reason, .. } => write!(f, "run stopped: {reason}"),
        }
    }
}

impl std::error::Error for RuntimeError {}

impl From<BackendError> for RuntimeError {
    fn from(e: BackendError) -> Self {
        RuntimeError::Backend(e)
    }
}

/// The queue's sizes the host chooses. Each launch gets one reply slot per
/// thread; the reply data per slot is `reply_data_size`, cut for large
/// grids so the reply area stays within [`QueueConfig::REPLY_BUDGET`] (but
/// never below [`QueueConfig::MIN_REPLY`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// Bytes per command buffer (the ring is two): a power of two >= 8 KiB.
    pub buff_size: u64,
    /// Most reply data one call brings back (a multiple of 8).
    pub reply_data_size: u64,
    /// Rings, each served by a host thread of its own (a power of two up
    /// to `hostcall_abi::rings::MAX`); 0: chosen per launch
    /// ([`QueueConfig::rings_for`]).
    pub rings: u64,
}

impl QueueConfig {
    /// 2 x 1 MiB of ring for small grids; larger grids get more
    /// ([`QueueConfig::RING_LINES_PER_WARP`]).
    pub const DEFAULT: QueueConfig = QueueConfig { buff_size: 1 << 20, reply_data_size: 4096, rings: 0 };
    /// Bytes of reply data area a launch is given at most (mapped pinned
    /// host memory), unless [`QueueConfig::MIN_REPLY`] per thread needs more.
    pub const REPLY_BUDGET: u64 = 64 << 20;
    /// Reply data per thread, however large the grid: a `struct statx`, a
    /// path of a few hundred bytes.
    pub const MIN_REPLY: u64 = 512;

    /// Ring lines the runtime provides per warp of a launch (a warp's echo
    /// of 32 x 0-511 bytes is about 180 lines, a `println!` of 32 lanes 65).
    pub const RING_LINES_PER_WARP: u64 = 128;
    /// The ring grows with the grid up to buffers of this size.
    pub const MAX_AUTO_BUFF: u64 = 32 << 20;
    /// The rings of a launch of `threads` threads: `rings` when set, else
    /// `HOSTCALL_RINGS` from the environment when set, else one per warp of
    /// the launch, at most one per core of this machine and
    /// `hostcall_abi::rings::MAX`, a power of two. Only concurrent hostcalls
    /// use rings past the first; a launch of one warp has one ring. (On an
    /// H100 host of 16 cores, null calls from 2112 warps: 18.8 M/s on one
    /// ring, 87.2 M/s on 8, 195 M/s on 16; `bench/results/h100-2026-12-07-*`.)
    pub fn rings_for(&self, threads: u64) -> Result<u64, RuntimeError> {
        let bad = |what: String| {
            RuntimeError::Config(format!("{what} rings: the queue takes a power of two from 1 to {}", ring_abi::MAX))
        };
        let asked = match (self.rings, std::env::var("HOSTCALL_RINGS")) {
            (0, Ok(v)) => Some(v.trim().parse::<u64>().map_err(|_| bad(format!("HOSTCALL_RINGS={v:?}")))?),
            (0, Err(_)) => None,
            (n, _) => Some(n),
        };
        if let Some(n) = asked {
            return if ring_abi::valid(n) { Ok(n) } else { Err(bad(n.to_string())) };
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let warps = threads.div_ceil(u64::from(hostcall_abi::WARP_LANES));
        let n = warps.min(cores).clamp(1, ring_abi::MAX);
        Ok(1 << n.ilog2())
    }

    /// The geometry of a launch of `threads` threads: `buff_size` at least,
    /// more for large grids.
    pub fn geometry(&self, threads: u64) -> Result<Geometry, RuntimeError> {
        let slot_count = threads.max(1).next_multiple_of(limits::SLOT_ALIGN);
        if slot_count > limits::MAX_SLOTS {
            return Err(RuntimeError::Config(format!(
                "a launch of {threads} threads: the hostcall queue serves at most {} threads per launch",
                limits::MAX_SLOTS
            )));
        }
        let fair = (Self::REPLY_BUDGET / slot_count) / 64 * 64;
        let reply_data_size = self.reply_data_size.min(fair.max(Self::MIN_REPLY));
        // Room for every warp to have a record of up to RING_LINES_PER_WARP
        // lines in flight: a ring much smaller than what is in flight makes
        // warps take tickets for lines still held and queue behind each
        // other's wake-ups (on the H200, 132 x 256 threads echoing 0-511 B
        // ran at 0.13 M calls/s on 2 x 1 MiB, see docs/protocol.md).
        let buff_size = self.buff_for(slot_count / limits::SLOT_ALIGN);
        let g = Geometry { buff_size, slot_count, reply_data_size };
        g.validate().map_err(|e| RuntimeError::Config(format!("queue {self:?}: {e:?}")))?;
        Ok(g)
    }

    /// Bytes per command buffer for a ring that `warps` warps send to:
    /// `buff_size` at least, [`QueueConfig::RING_LINES_PER_WARP`] lines a
    /// warp up to [`QueueConfig::MAX_AUTO_BUFF`].
    fn buff_for(&self, warps: u64) -> u64 {
        self.buff_size.max(Self::wanted_buff(warps))
    }

    /// [`QueueConfig::RING_LINES_PER_WARP`] lines for each of `warps` warps,
    /// in two buffers of a power of two bytes, at most
    /// [`QueueConfig::MAX_AUTO_BUFF`] each.
    fn wanted_buff(warps: u64) -> u64 {
        (warps * Self::RING_LINES_PER_WARP * LINE_BYTES as u64 / 2).next_power_of_two().min(Self::MAX_AUTO_BUFF)
    }

    /// Bytes per command buffer of the rings past the first, for a launch
    /// of geometry `g` on `rings` rings: each carries the concurrent calls
    /// of its share of the warps only, `buff_size` at least (so that a whole
    /// warp's record of large payloads fits one buffer, and does not fall
    /// apart into records of one lane).
    pub fn ring_buff_size(&self, g: &Geometry, rings: u64) -> u64 {
        self.buff_for((g.slot_count / limits::SLOT_ALIGN).div_ceil(rings.max(1)))
    }
}

/// The `arg` hostcall returns an argument in one reply.
fn check_args(args: &[String], reply: u64) -> Result<(), RuntimeError> {
    match args.iter().enumerate().find(|(_, a)| a.len() as u64 > reply) {
        Some((i, arg)) => Err(RuntimeError::Config(format!(
            "kernel argument {i} is {} bytes; the GPU can be handed at most {reply} (the reply data size of this launch)",
            arg.len()
        ))),
        None => Ok(()),
    }
}

/// A device, its handlers and the host state they serve.
pub struct Runtime {
    backend: Box<dyn Backend>,
    registry: Registry<HostState>,
    state: HostState,
    queue: QueueConfig,
    /// The last launch's queue memory, reused by the next launch it fits.
    memory: Option<(Geometry, server::QueueMemory)>,
    debug: bool,
    module_globals: Option<Vec<String>>,
    timeout: Option<Duration>,
    stop: Option<Arc<AtomicUsize>>,
}

impl Runtime {
    /// A runtime with the built-in handlers registered.
    pub fn new(backend: impl Backend + 'static, config: RuntimeConfig) -> Result<Self, RuntimeError> {
        config.queue.geometry(1)?;
        check_args(&config.args, config.queue.reply_data_size)?;
        let sandbox = handlers::sandbox::Sandbox::new(&config.root)
            .map_err(|e| RuntimeError::Config(format!("sandbox root {}: {e}", config.root.display())))?;
        if config.debug {
            // Another subscriber may already be installed; that one wins.
            let _ = tracing_subscriber::fmt()
                .with_writer(io::stderr)
                .with_max_level(tracing::Level::DEBUG)
                .with_target(false)
                .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
                .try_init();
        }
        let mut state = HostState::new(sandbox, config.stdin, config.stdout, config.stderr, config.env, config.args);
        state.debug = config.debug;
        Ok(Runtime {
            backend: Box::new(backend),
            registry: Registry::with_builtins(),
            state,
            queue: config.queue,
            memory: None,
            debug: config.debug,
            module_globals: None,
            timeout: config.timeout,
            stop: config.stop,
        })
    }

    /// The handlers, to add some (`register`, `register_raw`: a name twice is
    /// an error) or swap one (`replace`, `replace_raw`).
    pub fn registry_mut(&mut self) -> &mut Registry<HostState> {
        &mut self.registry
    }

    pub fn registry(&self) -> &Registry<HostState> {
        &self.registry
    }

    /// The queue's sizes and rings for the launches to come.
    pub fn queue_config_mut(&mut self) -> &mut QueueConfig {
        &mut self.queue
    }

    /// Host state the handlers share (open files, env, exit status).
    pub fn state(&self) -> &HostState {
        &self.state
    }

    pub fn state_mut(&mut self) -> &mut HostState {
        &mut self.state
    }

    pub fn backend_mut(&mut self) -> &mut dyn Backend {
        &mut *self.backend
    }

    /// Load a module: PTX text or a cubin for CUDA (the backend says which
    /// way it loaded under `HOSTCALL_DEBUG`); a module name for the emulation.
    pub fn load(&mut self, image: impl AsRef<[u8]>) -> Result<(), RuntimeError> {
        self.module_globals = None;
        self.backend.load_module(image.as_ref())?;
        self.module_globals = Some(self.backend.globals()?);
        Ok(())
    }

    /// Load the cubin when it was built for this device's architecture, else
    /// the PTX it was built from (also when the driver refuses the cubin).
    pub fn load_best(&mut self, ptx: &[u8], cubin: Option<&[u8]>) -> Result<(), RuntimeError> {
        self.module_globals = None;
        load_best(&mut *self.backend, ptx, cubin)?;
        self.module_globals = Some(self.backend.globals()?);
        Ok(())
    }

    /// The hostcalls (names without the prefix) the loaded module declares.
    pub fn declared_hostcalls(&self) -> Result<Vec<String>, RuntimeError> {
        let g = self.module_globals.as_ref().ok_or(RuntimeError::NoModule)?;
        Ok(g.iter()
            .filter_map(|n| n.strip_prefix(globals::ID_PREFIX))
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// Every hostcall the module declares has a handler; else the missing
    /// ones, by name.
    pub fn check_handlers(&self) -> Result<(), RuntimeError> {
        let missing: Vec<String> =
            self.declared_hostcalls()?.into_iter().filter(|n| self.registry.id(n).is_none()).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(RuntimeError::MissingHandlers(missing))
        }
    }

    /// Read a `u64` global of the loaded module (e.g. a failure counter).
    pub fn read_global_u64(&mut self, name: &str) -> Result<u64, RuntimeError> {
        Ok(self.backend.read_global_u64(name)?)
    }

    /// Queue memory for geometry `g` and `rings` rings: the last launch's
    /// when it fits, else new. Either way cleared of every flag an earlier
    /// launch left.
    fn queue_memory(&mut self, g: Geometry, rings: u64) -> Result<server::QueueMemory, RuntimeError> {
        let ring_buff_size = if rings > 1 { self.queue.ring_buff_size(&g, rings) } else { 0 };
        let b = &mut *self.backend;
        let reuse = self.memory.take().filter(|(old, mem)| {
            old.buff_size == g.buff_size
                && old.reply_data_size == g.reply_data_size
                && old.slot_count >= g.slot_count
                && (mem.rings, mem.ring_buff_size) == (rings, ring_buff_size)
        });
        let mem = match reuse {
            Some((_, mut mem)) => {
                // The call counters restart at 0 (device memory: by copy),
                // and no reply, header or lane flag may survive from the
                // earlier launch (reply data is only read after its reply's
                // flags: it can stay).
                b.copy_to_device(mem.seq.device_addr(), &vec![0u8; g.seq_words() * 8])?;
                mem.ring.zero();
                mem.ctrl.zero();
                mem.slots.zero();
                mem
            }
            // Fresh memory comes zeroed from the backend.
            None => server::QueueMemory {
                ring: b.alloc_mapped(ring_abi::all_ring_words(g, rings, ring_buff_size))?,
                ctrl: b.alloc_mapped(LINE_WORDS * rings as usize)?,
                slots: b.alloc_mapped(g.slot_words())?,
                reply_data: b.alloc_mapped(g.reply_data_words().max(1))?,
                seq: b.alloc_device(g.seq_words() * 8)?,
                counters: b.alloc_device(Self::counter_bytes(rings))?,
                rings,
                ring_buff_size,
            },
        };
        // The ticket counters of rings past the first start at 0 each launch
        // (with one ring there are none: the device never reads them).
        if rings > 1 {
            b.copy_to_device(mem.counters.device_addr(), &vec![0u8; Self::counter_bytes(rings)])?;
        }
        Ok(mem)
    }

    /// Bytes of device memory for the counters of rings past the first.
    fn counter_bytes(rings: u64) -> usize {
        (rings.max(2) as usize - 1) * ring_abi::COUNTER_WORDS * 8
    }

    /// Set up the queue, patch the globals, launch `entry` and serve it
    /// until it completes.
    pub fn launch(
        &mut self,
        entry: &str,
        grid: impl Into<Dim3>,
        block: impl Into<Dim3>,
    ) -> Result<RunReport, RuntimeError> {
        let start = Instant::now();
        self.check_handlers()?;
        let declared = self.module_globals.clone().ok_or(RuntimeError::NoModule)?;
        let (grid, block) = (grid.into(), block.into());
        let threads = grid.count().zip(block.count()).and_then(|(g, b)| g.checked_mul(b));
        let threads = threads.ok_or_else(|| RuntimeError::Config(format!("a grid of {grid:?} x {block:?} threads")))?;
        let g = self.queue.geometry(threads)?;
        let rings = self.queue.rings_for(threads)?;
        check_args(&self.state.args, g.reply_data_size)?;
        let mem = self.queue_memory(g, rings)?;
        let b = &mut *self.backend;
        let uses_queue =
            declared.iter().any(|n| n.starts_with(globals::ID_PREFIX) && n.len() > globals::ID_PREFIX.len());
        let values = [
            (globals::BUFF_PTR, mem.ring.device_addr()),
            (globals::BUFF_TOP, 0),
            (globals::BUFF_SIZE, g.buff_size),
            (globals::BUFF_RELEASED, 0),
            (globals::CTRL_PTR, mem.ctrl.device_addr()),
            (globals::RETURN_SLOTS, mem.slots.device_addr()),
            (globals::RETURN_SLOT_COUNT, g.slot_count),
            (globals::RETURN_DATA, mem.reply_data.device_addr()),
            (globals::RETURN_DATA_SIZE, g.reply_data_size),
            (globals::SLOT_SEQ, mem.seq.device_addr()),
            (globals::RINGS, rings),
            (globals::RING_COUNTERS, if rings > 1 { mem.counters.device_addr() } else { 0 }),
            (globals::RING_BUFF_SIZE, mem.ring_buff_size),
        ];
        debug_assert!(values.iter().map(|v| v.0).eq(globals::ALL));
        for (name, value) in values {
            if declared.iter().any(|d| d == name) {
                b.write_global_u64(name, value)?;
            } else if uses_queue {
                return Err(RuntimeError::MissingGlobal(name.to_string()));
            }
        }
        for name in &declared {
            if let Some(call) = name.strip_prefix(globals::ID_PREFIX).filter(|n| !n.is_empty()) {
                let id = self.registry.id(call).ok_or_else(|| RuntimeError::MissingHandlers(vec![call.to_string()]))?;
                let any_ring = if self.registry.is_concurrent(id) { ring_abi::ANY_RING } else { 0 };
                b.write_global_u64(name, u64::from(id) | any_ring)?;
            }
        }
        self.state.exit = None;
        tracing::debug!(
            target: "hostcall",
            "launching `{entry}` on {} with {g:?}, {rings} ring(s) ({} bytes a buffer past the first)",
            b.name(),
            mem.ring_buff_size
        );
        let write_op = self.registry.id(<hostcall_abi::op::Write as hostcall_abi::op::Request>::NAME);
        let table = self.registry.concurrent_table();
        let shared = rings::Shared::default();
        let (debug, deadline, stop) = (self.debug, self.timeout.map(|t| (start + t, t)), self.stop.as_deref());
        let (registry, state) = (&mut self.registry, &mut self.state);
        let mut per_ring = Vec::with_capacity(rings as usize);
        let served = std::thread::scope(|scope| {
            // Every ring has its server before the kernel can call.
            let mut helpers = Vec::new();
            for k in 1..rings as usize {
                let gk = ring_abi::ring_geometry(g, k as u64, mem.ring_buff_size);
                let at = ring_abi::ring_offset(g, k as u64, mem.ring_buff_size);
                let (ring, ctrl) = match (
                    mem.ring.words().get(at..at + gk.ring_words()),
                    mem.ctrl.words().get(k * LINE_WORDS..(k + 1) * LINE_WORDS),
                ) {
                    (Some(ring), Some(ctrl)) => (ring, ctrl),
                    _ => {
                        shared.abandon();
                        return Err(RuntimeError::Protocol(ProtocolError::BadBuffer));
                    }
                };
                let server = rings::RingServer {
                    geometry: gk,
                    ring,
                    ctrl,
                    answer: server::Answer { geometry: &g, slots: mem.slots.words(), data: mem.reply_data.words() },
                    table: &table,
                    debug,
                    shared: &shared,
                };
                let spawned = std::thread::Builder::new()
                    .name(format!("hostcall-ring-{k}"))
                    .spawn_scoped(scope, move || server.run());
                match spawned {
                    Ok(h) => helpers.push(h),
                    Err(e) => {
                        shared.abandon();
                        return Err(RuntimeError::Config(format!("a server thread for ring {k} of {rings}: {e}")));
                    }
                }
            }
            if let Err(e) = b.launch(entry, grid, block) {
                shared.abandon();
                return Err(e.into());
            }
            let mut served = server::Server {
                backend: b,
                registry,
                state,
                mem: &mem,
                geometry: g,
                debug,
                write_op,
                deadline,
                stop,
                rings: &shared,
            }
            .run();
            match &served {
                Ok(s) if s.stopped.is_none() => shared.drain(),
                _ => shared.abandon(),
            }
            per_ring.push(served.as_ref().map_or(0, |s| s.calls));
            for h in helpers {
                // A ring's server catches its handlers' panics, and its own
                // code returns errors rather than panicking.
                match (&mut served, h.join()) {
                    (Ok(all), Ok(ring)) => {
                        per_ring.push(ring.calls);
                        all.merge(ring);
                    }
                    (_, Err(p)) => {
                        tracing::error!(target: "hostcall", "a ring's server panicked: {}", server::panic_text(&*p))
                    }
                    (Err(_), Ok(_)) => {}
                }
            }
            // A corrupt record on another ring after ring 0's server ended.
            if let (Ok(_), Some(e)) = (&served, shared.failure()) {
                served = Err(e);
            }
            Ok(served)
        })?;
        // Output held for coalescing goes out however the run ended (a
        // protocol error too: what the kernel printed before it matters).
        let _ = self.state.flush_output();
        let served = match served {
            Ok(s) => s,
            Err(e) => {
                // The kernel may still be running (a CUDA kernel cannot be
                // stopped from here) and still writing the queue: leak its
                // memory rather than free it under the kernel (or reuse it).
                std::mem::forget(mem);
                return Err(RuntimeError::Protocol(e));
            }
        };
        let mut report = RunReport {
            exit_code: self.state.exit.map(|e| e.code),
            aborted: self.state.exit.is_some_and(|e| e.aborted),
            calls: served.calls,
            records: served.records,
            server_idle: served.idle,
            per_op: BTreeMap::new(),
            calls_per_ring: per_ring,
            errors: served.errors,
            unanswered_errors: served.unanswered_errors,
            first_unanswered: served.first_unanswered.clone(),
            handler_panics: served.handler_panics,
            kernel_error: None,
            elapsed: start.elapsed(),
        };
        for (id, &n) in served.per_op.iter().enumerate() {
            if n > 0 {
                let name = self.registry.name(id as u32).unwrap_or("<unknown>").to_string();
                *report.per_op.entry(name).or_default() += n;
            }
        }
        if let Some(reason) = served.stopped {
            // The kernel was told to stop but may still run and write the
            // queue: leak its memory rather than free or reuse it.
            std::mem::forget(mem);
            return Err(RuntimeError::Stopped { reason, report: Box::new(report) });
        }
        self.memory = Some((g, mem));
        match served.end {
            Some(KernelState::Failed(message)) if self.state.exit.is_none() => {
                Err(RuntimeError::KernelFailed { message, report: Box::new(report) })
            }
            Some(KernelState::Failed(message)) => {
                report.kernel_error = Some(message);
                Ok(report)
            }
            _ => Ok(report),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostcall_image::cubin::testing::cubin;
    use hostcall_image::CubinKind;

    #[test]
    fn a_cubin_is_taken_only_by_a_device_of_its_architecture() {
        let sm90 = cubin(CubinKind::Relocatable, 90, &["main"], &[]);
        assert_eq!(cubin_suits(&sm90, Some("sm_90")), Ok(()));
        let other = cubin_suits(&sm90, Some("sm_80")).unwrap_err();
        assert_eq!(other, "the cubin is for sm_90, this device takes sm_80 cubins");
        assert!(cubin_suits(&sm90, None).unwrap_err().ends_with("takes no cubins"), "the emulation takes none");
        assert!(cubin_suits(b"not an ELF file", Some("sm_90")).is_err());
    }

    #[test]
    fn load_best_falls_back_to_the_ptx_when_the_cubin_does_not_suit() {
        let module = backend::emu::EmuModule::new().entry("main", |_| {});
        let backend = backend::emu::EmuBackend::with_module("ptx-twin", module);
        let mut rt = Runtime::new(backend, RuntimeConfig::default()).expect("runtime");
        let sm90 = cubin(CubinKind::Relocatable, 90, &["main"], &[]);
        rt.load_best(b"ptx-twin", Some(&sm90)).expect("the PTX (here: the emulated module) loads");
        assert!(rt.launch("main", 1, 1).is_ok());
    }
}
