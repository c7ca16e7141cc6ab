//! The CUDA backend, on cudarc's driver API (`cudarc::driver::result`, and
//! `sys` for the calls `result` does not wrap: the driver's linker, stream
//! queries, a launch without parameters) loaded at run time: it builds with
//! no CUDA installed, and without a driver [`CudaBackend::new`] returns an
//! error instead of panicking.
//!
//! * the kernel runs on its own non-blocking stream, and device-region
//!   copies go through a second non-blocking stream, so a copy never waits
//!   behind the running kernel (nor does either sync with the legacy default
//!   stream);
//! * [`Backend::query`] is `cuStreamQuery`: the server never blocks on the
//!   kernel;
//! * mapped memory is `cuMemHostAlloc(DEVICEMAP | PORTABLE)` plus
//!   `cuMemHostGetDevicePointer`;
//! * the driver cannot list a module's globals, so they are read from the
//!   image (`hostcall_image`: PTX text, or a cubin's symbol table) and
//!   looked up with `cuModuleGetGlobal`;
//! * loading ([`jit`]): a linked cubin goes straight to `cuModuleLoadData`;
//!   a relocatable one (`ptxas -c`) and PTX go through the driver's linker
//!   with a register limit, and the result of compiling PTX is kept in a
//!   cache on disk, so only the first run of a kernel waits for it.

use std::ffi::{c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use cudarc::driver::result::{self, DriverError};
use cudarc::driver::sys::{self, CUresult};

use super::{Backend, BackendError, DeviceAlloc, Dim3, KernelState, MappedRegion, STREAM_PIECE};

mod jit;

pub use jit::default_jit_cache;

/// A driver error as text: `NAME (description)`.
fn describe(r: CUresult) -> String {
    let e = DriverError(r);
    match (e.error_name(), e.error_string()) {
        (Ok(n), Ok(t)) => format!("{} ({})", n.to_string_lossy(), t.to_string_lossy()),
        _ => format!("{r:?}"),
    }
}

/// A driver call's result, its error named after `what`.
fn cu<T>(r: Result<T, DriverError>, what: &str) -> Result<T, BackendError> {
    r.map_err(|e| BackendError(format!("cuda: {what}: {}", describe(e.0))))
}

/// A raw `sys` call's status, as [`cu`].
fn ck(r: CUresult, what: &str) -> Result<(), BackendError> {
    cu(r.result(), what)
}

/// The device's primary context, released when the last user goes.
struct Context {
    ctx: sys::CUcontext,
    dev: sys::CUdevice,
}

// SAFETY: a CUDA context handle may be used from any thread; every user makes
// it current on its own thread first (`Context::bind`).
unsafe impl Send for Context {}
// SAFETY: as above; the handle is never mutated after creation.
unsafe impl Sync for Context {}

impl Context {
    fn bind(&self) -> Result<(), BackendError> {
        // SAFETY: `ctx` is a retained primary context, valid until `drop`.
        cu(unsafe { result::ctx::set_current(self.ctx) }, "cuCtxSetCurrent")
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: pairs with the `cuDevicePrimaryCtxRetain` in `new`.
        let _ = unsafe { result::primary_ctx::release(self.dev) };
    }
}

/// Pinned mapped host memory; freed on drop.
struct PinnedHost {
    ptr: *mut c_void,
    ctx: Arc<Context>,
}

// SAFETY: the pointer is to process memory owned by this value alone.
unsafe impl Send for PinnedHost {}
// SAFETY: this value hands out no access itself; `MappedRegion` does.
unsafe impl Sync for PinnedHost {}

impl Drop for PinnedHost {
    fn drop(&mut self) {
        if self.ctx.bind().is_ok() {
            // SAFETY: `ptr` came from `cuMemHostAlloc` and is freed once.
            let _ = unsafe { result::free_host(self.ptr) };
        }
    }
}

/// Device memory; freed on drop.
struct DeviceMem {
    ptr: sys::CUdeviceptr,
    ctx: Arc<Context>,
}

impl Drop for DeviceMem {
    fn drop(&mut self) {
        if self.ctx.bind().is_ok() {
            // SAFETY: `ptr` came from `cuMemAlloc` and is freed once.
            let _ = unsafe { result::free_sync(self.ptr) };
        }
    }
}

/// Pinned staging for bulk transfers: two buffers of [`STREAM_PIECE`]
/// bytes, so that one is copied while the host reads or fills the other,
/// each with an event that marks the end of its last copy.
struct Staging {
    bufs: [PinnedHost; 2],
    events: [sys::CUevent; 2],
    /// Whether a copy into or out of each buffer may still be in flight.
    busy: [bool; 2],
}

impl Staging {
    fn new(ctx: &Arc<Context>) -> Result<Self, BackendError> {
        let alloc = || -> Result<PinnedHost, BackendError> {
            // SAFETY: the context is current. Plain pinned memory (not
            // write-combined: the host reads it back), never read before a
            // copy or the host fills it.
            let ptr = cu(unsafe { result::malloc_host(STREAM_PIECE as usize, 0) }, "cuMemHostAlloc (staging)")?;
            Ok(PinnedHost { ptr, ctx: ctx.clone() })
        };
        let bufs = [alloc()?, alloc()?];
        let mut events = [ptr::null_mut(); 2];
        for e in &mut events {
            *e = cu(result::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING), "cuEventCreate")?;
        }
        Ok(Staging { bufs, events, busy: [false; 2] })
    }

    /// Buffer `i`, once its last copy is done.
    fn buf(&mut self, i: usize) -> Result<&mut [u8], BackendError> {
        self.wait(i)?;
        // SAFETY: the buffer holds `STREAM_PIECE` bytes of pinned memory
        // owned by this value, and no copy touches it now (waited above);
        // the borrow of `self` keeps it exclusive.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.bufs[i].ptr.cast::<u8>(), STREAM_PIECE as usize) })
    }

    /// Wait for buffer `i`'s copy, if one is in flight.
    fn wait(&mut self, i: usize) -> Result<(), BackendError> {
        if self.busy[i] {
            self.busy[i] = false;
            // SAFETY: the event was created on this context and recorded.
            cu(unsafe { result::event::synchronize(self.events[i]) }, "staging copy")?;
        }
        Ok(())
    }

    /// Mark buffer `i` busy until what `stream` holds now is done.
    fn record(&mut self, i: usize, stream: sys::CUstream) -> Result<(), BackendError> {
        // SAFETY: event and stream belong to the current context.
        cu(unsafe { result::event::record(self.events[i], stream) }, "cuEventRecord")?;
        self.busy[i] = true;
        Ok(())
    }

    /// Wait for every copy in flight (also after an error, so that no copy
    /// outlives the call whose memory it touches).
    fn drain(&mut self) -> Result<(), BackendError> {
        let (a, b) = (self.wait(0), self.wait(1));
        a.and(b)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.bufs[0].ctx.bind().is_ok() {
            let _ = self.drain();
            for e in self.events {
                // SAFETY: created in `new`, destroyed once.
                let _ = unsafe { result::event::destroy(e) };
            }
        }
    }
}

struct Module {
    module: sys::CUmodule,
    globals: Vec<String>,
}

/// Per-thread stack set when a backend is created: std's formatting and I/O
/// paths need a few KiB (ptxas reports ~5 KiB for the demo kernel before
/// recursion). The driver reserves it for every resident thread: 16 KiB x
/// 2048 threads x 132 SMs is about 4.4 GB on an H100.
pub const DEFAULT_STACK_BYTES: usize = 16 * 1024;

/// A CUDA device driven through the driver API.
pub struct CudaBackend {
    ctx: Arc<Context>,
    kernel_stream: sys::CUstream,
    copy_stream: sys::CUstream,
    module: Option<Module>,
    launched: bool,
    device_name: String,
    /// `(major, minor)` compute capability.
    capability: (i32, i32),
    /// `cuDriverGetVersion`: part of the JIT cache's key.
    driver_version: i32,
    max_registers: u32,
    /// `CU_JIT_OPTIMIZATION_LEVEL` for PTX; `None`: the driver's default (4).
    jit_opt_level: Option<u32>,
    jit_cache: Option<std::path::PathBuf>,
    /// Made on the first bulk transfer.
    staging: Option<Staging>,
}

// SAFETY: the raw handles (streams, module) belong to `ctx`, which every
// method makes current on the calling thread before use; the value is used
// by one thread at a time (`&mut self`).
unsafe impl Send for CudaBackend {}

/// Is the driver library loadable at all? cudarc panics on first use when it
/// is not, so ask first (and catch a panic anyway).
fn driver_present() -> bool {
    // SAFETY: `is_culib_present` only tries to open the library.
    catch_unwind(|| unsafe { sys::is_culib_present() }).unwrap_or(false)
}

/// `f`, which calls the driver, or the reason there is no driver to call:
/// its library is absent, or cudarc's loader panicked (caught here).
fn with_driver<T>(f: impl FnOnce() -> Result<T, BackendError>) -> Result<T, BackendError> {
    if !driver_present() {
        return Err(BackendError::new(
            "no CUDA driver found (libcuda.so): the NVIDIA driver library could not be loaded \
             (install the driver, or add its directory to LD_LIBRARY_PATH)",
        ));
    }
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            Err(BackendError(format!(
                "no CUDA driver found (libcuda.so): loading it failed: {}",
                msg.unwrap_or_else(|| "unknown panic in the driver loader".into())
            )))
        }
    }
}

impl CudaBackend {
    /// Open device `ordinal`. Without a driver: `Err("no CUDA driver found
    /// (libcuda.so): ...")`; never a panic.
    pub fn new(ordinal: usize) -> Result<Self, BackendError> {
        with_driver(|| Self::open(ordinal))
    }

    /// The CUDA devices of this machine (`cuDeviceGetCount`); 0 where the
    /// driver finds none. Without a driver: the error [`CudaBackend::new`]
    /// gives.
    pub fn device_count() -> Result<usize, BackendError> {
        with_driver(|| match result::init() {
            Err(DriverError(CUresult::CUDA_ERROR_NO_DEVICE)) => Ok(0),
            other => {
                cu(other, "cuInit")?;
                let count = cu(result::device::get_count(), "cuDeviceGetCount")?;
                Ok(usize::try_from(count).unwrap_or(0))
            }
        })
    }

    fn open(ordinal: usize) -> Result<Self, BackendError> {
        cu(result::init(), "cuInit")?;
        let count = cu(result::device::get_count(), "cuDeviceGetCount")?;
        let ord = i32::try_from(ordinal).map_err(|_| BackendError::new("cuda: device ordinal out of range"))?;
        if ord >= count {
            return Err(BackendError(format!("cuda: no device {ordinal} ({count} present)")));
        }
        let dev = cu(result::device::get(ord), "cuDeviceGet")?;
        // SAFETY: `dev` is a device of this driver; released in `Context::drop`.
        let ctx = cu(unsafe { result::primary_ctx::retain(dev) }, "cuDevicePrimaryCtxRetain")?;
        let ctx = Arc::new(Context { ctx, dev });
        ctx.bind()?;
        let device_name = result::device::get_name(dev).unwrap_or_else(|_| "an unnamed CUDA device".into());
        let mut streams = [ptr::null_mut(); 2];
        for s in &mut streams {
            *s = cu(result::stream::create(result::stream::StreamKind::NonBlocking), "cuStreamCreate")?;
        }
        let mut capability = (0, 0);
        for (out, attr) in [
            (&mut capability.0, sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
            (&mut capability.1, sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
        ] {
            // SAFETY: `dev` is a valid device.
            *out = cu(unsafe { result::device::get_attribute(dev, attr) }, "cuDeviceGetAttribute")?;
        }
        let mut driver_version = 0;
        // SAFETY: `driver_version` is writable.
        ck(unsafe { sys::cuDriverGetVersion(&mut driver_version) }, "cuDriverGetVersion")?;
        let mut backend = CudaBackend {
            ctx,
            kernel_stream: streams[0],
            copy_stream: streams[1],
            module: None,
            launched: false,
            device_name,
            capability,
            driver_version,
            max_registers: hostcall_image::DEFAULT_MAX_REGISTERS,
            jit_opt_level: jit::opt_level_from_env(),
            jit_cache: default_jit_cache(),
            staging: None,
        };
        backend.set_stack_size(DEFAULT_STACK_BYTES)?;
        Ok(backend)
    }

    /// Set the per-thread stack size for later launches. std code needs
    /// more than CUDA's 1 KiB default (formatting recurses, so ptxas cannot
    /// size it statically); [`DEFAULT_STACK_BYTES`] is set on creation.
    pub fn set_stack_size(&mut self, bytes: usize) -> Result<(), BackendError> {
        self.ctx.bind()?;
        cu(result::ctx::set_limit(sys::CUlimit::CU_LIMIT_STACK_SIZE, bytes), "cuCtxSetLimit(STACK_SIZE)")
    }

    /// The device's name as the driver reports it.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// Registers per thread, at most, when the driver compiles PTX for a
    /// later [`Backend::load_module`] (a cubin keeps what ptxas gave it).
    /// The default, [`hostcall_image::DEFAULT_MAX_REGISTERS`], lets every
    /// entry point launch 1024-thread blocks.
    pub fn set_max_registers(&mut self, registers: u32) {
        self.max_registers = registers;
    }

    /// Where compiled PTX is cached; `None` turns the cache off. The
    /// default is [`default_jit_cache`].
    pub fn set_jit_cache(&mut self, dir: Option<std::path::PathBuf>) {
        self.jit_cache = dir;
    }

    fn module(&self) -> Result<&Module, BackendError> {
        self.module.as_ref().ok_or_else(|| BackendError::new("cuda: no module loaded"))
    }

    /// Device address and size of global `name`.
    fn staging(&mut self) -> Result<&mut Staging, BackendError> {
        if self.staging.is_none() {
            self.staging = Some(Staging::new(&self.ctx)?);
        }
        Ok(self.staging.as_mut().expect("made above"))
    }

    fn global(&self, name: &str) -> Result<(sys::CUdeviceptr, usize), BackendError> {
        let m = self.module()?;
        let c = CString::new(name).map_err(|_| BackendError(format!("cuda: bad global name `{name}`")))?;
        // SAFETY: the module is loaded (and stays so while `self` holds it).
        cu(unsafe { result::module::get_global(m.module, c) }, &format!("global `{name}`"))
    }

    fn global_u64(&self, name: &str) -> Result<sys::CUdeviceptr, BackendError> {
        let (addr, bytes) = self.global(name)?;
        if bytes != 8 {
            return Err(BackendError(format!("cuda: global `{name}` is {bytes} bytes, not a u64")));
        }
        Ok(addr)
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        if self.ctx.bind().is_err() {
            return;
        }
        // SAFETY: the handles were created on this context and are destroyed
        // once; failures (e.g. after a trap) leave nothing to clean.
        unsafe {
            if let Some(m) = self.module.take() {
                let _ = result::module::unload(m.module);
            }
            drop(self.staging.take());
            let _ = result::stream::destroy(self.kernel_stream);
            let _ = result::stream::destroy(self.copy_stream);
        }
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &str {
        "cuda"
    }

    fn load_module(&mut self, image: &[u8]) -> Result<(), BackendError> {
        self.ctx.bind()?;
        let started = std::time::Instant::now();
        let loaded = jit::load(self, image)?;
        let elapsed = started.elapsed();
        tracing::debug!(target: "hostcall", "module loaded on {} ({}) in {elapsed:.2?}", self.device_name, loaded.path);
        if let Some(old) = self.module.replace(Module { module: loaded.module, globals: loaded.globals }) {
            // SAFETY: the previous module is not used by a running kernel
            // (`launch` sets up one run at a time) and is unloaded once.
            let _ = unsafe { result::module::unload(old.module) };
        }
        Ok(())
    }

    fn cubin_arch(&self) -> Option<String> {
        Some(format!("sm_{}{}", self.capability.0, self.capability.1))
    }

    fn globals(&self) -> Result<Vec<String>, BackendError> {
        Ok(self.module()?.globals.clone())
    }

    fn write_global_u64(&mut self, name: &str, value: u64) -> Result<(), BackendError> {
        self.ctx.bind()?;
        let addr = self.global_u64(name)?;
        self.copy_to_device(addr, &value.to_le_bytes())
    }

    fn read_global_u64(&mut self, name: &str) -> Result<u64, BackendError> {
        self.ctx.bind()?;
        let addr = self.global_u64(name)?;
        let mut b = [0u8; 8];
        self.copy_from_device(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn alloc_mapped(&mut self, words: usize) -> Result<MappedRegion, BackendError> {
        self.ctx.bind()?;
        let bytes = words.max(1).checked_mul(8).ok_or_else(|| BackendError::new("cuda: mapped size overflows"))?;
        let flags = sys::CU_MEMHOSTALLOC_DEVICEMAP | sys::CU_MEMHOSTALLOC_PORTABLE;
        // SAFETY: the context is current; the memory is zeroed below before
        // anything reads it.
        let p = cu(unsafe { result::malloc_host(bytes, flags) }, "cuMemHostAlloc")?;
        let owner = PinnedHost { ptr: p, ctx: self.ctx.clone() };
        // SAFETY: `p` points at `bytes` bytes we own (page aligned).
        unsafe { ptr::write_bytes(p.cast::<u8>(), 0, bytes) };
        let mut dev = 0;
        // SAFETY: `p` is a mapped allocation of this context.
        ck(unsafe { sys::cuMemHostGetDevicePointer_v2(&mut dev, p, 0) }, "cuMemHostGetDevicePointer")?;
        let nn = NonNull::new(p.cast::<AtomicU64>())
            .ok_or_else(|| BackendError::new("cuda: cuMemHostAlloc returned null"))?;
        // SAFETY: `words` zeroed, page-aligned u64s, alive until `owner`
        // drops; the host reaches them only through the atomics view.
        Ok(unsafe { MappedRegion::from_raw_parts(nn, words, dev, Box::new(owner)) })
    }

    fn alloc_device(&mut self, bytes: usize) -> Result<DeviceAlloc, BackendError> {
        self.ctx.bind()?;
        // SAFETY: the context is current; the memory is zeroed below before
        // anything reads it.
        let d = cu(unsafe { result::malloc_sync(bytes.max(8)) }, "cuMemAlloc")?;
        let owner = DeviceMem { ptr: d, ctx: self.ctx.clone() };
        // SAFETY: `d` is a fresh allocation of at least this many bytes; no
        // kernel uses it yet.
        cu(unsafe { result::memset_d8_sync(d, 0, bytes.max(8)) }, "cuMemsetD8")?;
        Ok(DeviceAlloc::new(d, bytes, Box::new(owner)))
    }

    fn launch(&mut self, entry: &str, grid: Dim3, block: Dim3) -> Result<(), BackendError> {
        self.ctx.bind()?;
        let m = self.module()?.module;
        let c = CString::new(entry).map_err(|_| BackendError(format!("cuda: bad entry name `{entry}`")))?;
        // SAFETY: the module is loaded.
        let f = cu(unsafe { result::module::get_function(m, c) }, &format!("entry `{entry}`"))?;
        // A block larger than the kernel's registers allow fails with a bare
        // "too many resources requested"; say which limit and why.
        let threads = u64::from(block.x) * u64::from(block.y) * u64::from(block.z);
        use sys::CUfunction_attribute::{CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, CU_FUNC_ATTRIBUTE_NUM_REGS};
        // SAFETY: `f` is a live function of the loaded module.
        let attr = |a| unsafe { result::function::get_function_attribute(f, a) };
        let (max_threads, regs, known) =
            match (attr(CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK), attr(CU_FUNC_ATTRIBUTE_NUM_REGS)) {
                (Ok(t), Ok(r)) => (t, r, true),
                _ => (0, 0, false),
            };
        tracing::debug!(target: "hostcall", "`{entry}`: {regs} registers a thread, at most {max_threads} threads a block");
        if known && max_threads > 0 && threads > max_threads as u64 {
            return Err(BackendError(format!(
                "cuda: `{entry}` allows at most {max_threads} threads per block ({regs} registers per thread); \
                 {threads} requested (a build with fewer registers per thread, `--max-registers 64`, \
                 allows 1024)"
            )));
        }
        // SAFETY: `f` takes no parameters (null params and extra); the
        // stream belongs to the current context.
        let r = unsafe {
            sys::cuLaunchKernel(
                f,
                grid.x,
                grid.y,
                grid.z,
                block.x,
                block.y,
                block.z,
                0,
                self.kernel_stream,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        ck(r, &format!("launch `{entry}`"))?;
        self.launched = true;
        Ok(())
    }

    fn query(&mut self) -> KernelState {
        if !self.launched {
            return KernelState::Done;
        }
        if let Err(e) = self.ctx.bind() {
            return KernelState::Failed(e.0);
        }
        // SAFETY: the stream belongs to the current context (`result` has no
        // stream query).
        match unsafe { sys::cuStreamQuery(self.kernel_stream) } {
            CUresult::CUDA_SUCCESS => KernelState::Done,
            CUresult::CUDA_ERROR_NOT_READY => KernelState::Running,
            r => KernelState::Failed(describe(r)),
        }
    }

    fn copy_from_device(&mut self, addr: u64, out: &mut [u8]) -> Result<(), BackendError> {
        if out.is_empty() {
            return Ok(());
        }
        self.ctx.bind()?;
        // SAFETY: `out` is writable for its length until the stream sync
        // below returns; the driver checks `addr`.
        cu(unsafe { result::memcpy_dtoh_async(out, addr, self.copy_stream) }, "copy from device")?;
        // SAFETY: the copy stream belongs to the current context; it carries
        // only our copies, never the kernel.
        cu(unsafe { result::stream::synchronize(self.copy_stream) }, "copy stream sync")
    }

    fn copy_to_device(&mut self, addr: u64, data: &[u8]) -> Result<(), BackendError> {
        if data.is_empty() {
            return Ok(());
        }
        self.ctx.bind()?;
        // SAFETY: `data` stays borrowed until the sync below returns.
        cu(unsafe { result::memcpy_htod_async(addr, data, self.copy_stream) }, "copy to device")?;
        // SAFETY: as in `copy_from_device`.
        cu(unsafe { result::stream::synchronize(self.copy_stream) }, "copy stream sync")
    }

    fn copy_device(&mut self, dst: u64, src: u64, len: u64) -> Result<(), BackendError> {
        if len == 0 {
            return Ok(());
        }
        self.ctx.bind()?;
        // SAFETY: both ranges are device memory the caller vouches for (heap
        // blocks the device handed over, which no thread uses meanwhile); the
        // copy ends before the sync returns.
        cu(unsafe { result::memcpy_dtod_async(dst, src, len as usize, self.copy_stream) }, "device to device copy")?;
        // SAFETY: the stream belongs to this context.
        cu(unsafe { result::stream::synchronize(self.copy_stream) }, "copy stream sync")
    }

    fn zero_device(&mut self, addr: u64, len: u64) -> Result<(), BackendError> {
        if len == 0 {
            return Ok(());
        }
        self.ctx.bind()?;
        // SAFETY: as in `copy_device`: a heap block no thread uses meanwhile.
        cu(unsafe { result::memset_d8_async(addr, 0, len as usize, self.copy_stream) }, "device memset")?;
        // SAFETY: the stream belongs to this context.
        cu(unsafe { result::stream::synchronize(self.copy_stream) }, "copy stream sync")
    }

    fn stream_from_device(
        &mut self,
        addr: u64,
        len: u64,
        sink: &mut dyn FnMut(&[u8], u64) -> bool,
    ) -> Result<u64, BackendError> {
        if len == 0 {
            return Ok(0);
        }
        self.ctx.bind()?;
        let stream = self.copy_stream;
        let st = self.staging()?;
        // Copy piece `k` into buffer `k % 2`.
        let piece = |k: u64| (k * STREAM_PIECE, (len - k * STREAM_PIECE).min(STREAM_PIECE) as usize);
        let pieces = len.div_ceil(STREAM_PIECE);
        let issue = |st: &mut Staging, k: u64| -> Result<(), BackendError> {
            let (at, n) = piece(k);
            let i = (k % 2) as usize;
            let dst = &mut st.buf(i)?[..n];
            // SAFETY: `dst` is `n` bytes of staging buffer `i`, not touched
            // by the host until its event is waited for (the borrow ends
            // here, the memory lives as long as `st`); the driver checks the
            // device range.
            cu(unsafe { result::memcpy_dtoh_async(dst, addr + at, stream) }, "copy from device")?;
            st.record(i, stream)
        };
        let mut run = |st: &mut Staging| -> Result<u64, BackendError> {
            issue(st, 0)?;
            let mut done = 0;
            for k in 0..pieces {
                if k + 1 < pieces {
                    issue(st, k + 1)?;
                }
                let (at, n) = piece(k);
                let buf = st.buf((k % 2) as usize)?;
                if !sink(&buf[..n], at) {
                    break;
                }
                done += n as u64;
            }
            Ok(done)
        };
        let r = run(st);
        let drained = st.drain();
        let done = r?;
        drained.map(|()| done)
    }

    fn stream_to_device(
        &mut self,
        addr: u64,
        len: u64,
        source: &mut dyn FnMut(&mut [u8], u64) -> Option<usize>,
    ) -> Result<u64, BackendError> {
        if len == 0 {
            return Ok(0);
        }
        self.ctx.bind()?;
        let stream = self.copy_stream;
        let st = self.staging()?;
        let mut run = |st: &mut Staging| -> Result<u64, BackendError> {
            let mut done = 0;
            let mut k = 0;
            while done < len {
                let i = k % 2;
                k += 1;
                let want = (len - done).min(STREAM_PIECE) as usize;
                let buf = st.buf(i)?;
                let Some(got) = source(&mut buf[..want], done) else { break };
                let got = got.min(want);
                if got > 0 {
                    // SAFETY: `got` bytes of staging buffer `i`, which the
                    // host wrote and leaves alone until its event is waited
                    // for (the memory lives as long as `st`); the driver
                    // checks the device range.
                    cu(unsafe { result::memcpy_htod_async(addr + done, &buf[..got], stream) }, "copy to device")?;
                    st.record(i, stream)?;
                }
                done += got as u64;
                if got < want {
                    break;
                }
            }
            Ok(done)
        };
        let r = run(st);
        let drained = st.drain();
        let done = r?;
        drained.map(|()| done)
    }
}
