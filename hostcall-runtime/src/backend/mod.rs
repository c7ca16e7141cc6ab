//! The one seam between the runtime and a device: load a module, patch its
//! globals, allocate the queue's memory, launch, ask whether it finished, and
//! copy declared device regions. The server loop, the registry and the
//! handlers only see [`Backend`]; CUDA lives in [`cuda`], CPU threads in
//! [`emu`].

use std::any::Any;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod emu;

/// Grid or block dimensions of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dim3 {
    pub x: u32,
    pub y: u32,
    pub z: u32,
}

impl Dim3 {
    pub const fn new(x: u32, y: u32, z: u32) -> Self {
        Dim3 { x, y, z }
    }
    /// Threads (or blocks) in total, `None` on overflow.
    pub fn count(&self) -> Option<u64> {
        u64::from(self.x).checked_mul(u64::from(self.y))?.checked_mul(u64::from(self.z))
    }
}

impl From<u32> for Dim3 {
    fn from(x: u32) -> Self {
        Dim3 { x, y: 1, z: 1 }
    }
}

impl From<(u32, u32, u32)> for Dim3 {
    fn from((x, y, z): (u32, u32, u32)) -> Self {
        Dim3 { x, y, z }
    }
}

/// Where a launched kernel is, asked without blocking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelState {
    Running,
    Done,
    /// The kernel ended with an error (a trap, an illegal address, a device
    /// thread's panic in the emulation). A trap after `exit` lands here too.
    Failed(String),
}

/// A backend's failure, with the backend's own words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendError(pub String);

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BackendError {}

impl BackendError {
    pub fn new(msg: impl Into<String>) -> Self {
        BackendError(msg.into())
    }
}

/// Host memory the device can address (CUDA: mapped pinned memory), seen by
/// the host as atomic words. Freed when dropped.
pub struct MappedRegion {
    ptr: NonNull<AtomicU64>,
    words: usize,
    device_addr: u64,
    // Dropping the owner frees the memory; it outlives `ptr` by construction.
    _owner: Box<dyn Any + Send + Sync>,
}

// SAFETY: the region is a slice of `AtomicU64` (which is `Sync`) kept alive
// by `_owner`, which is itself `Send + Sync`; no other state.
unsafe impl Send for MappedRegion {}
// SAFETY: as above; all access goes through `&[AtomicU64]`.
unsafe impl Sync for MappedRegion {}

impl MappedRegion {
    /// # Safety
    /// `ptr` must point to `words` initialised, 8-byte aligned `u64`s that
    /// stay valid (and are only accessed atomically by the host) for as long
    /// as `owner` lives; dropping `owner` may free them. `device_addr` is the
    /// address the device uses for the same bytes.
    pub unsafe fn from_raw_parts(
        ptr: NonNull<AtomicU64>,
        words: usize,
        device_addr: u64,
        owner: Box<dyn Any + Send + Sync>,
    ) -> Self {
        MappedRegion { ptr, words, device_addr, _owner: owner }
    }

    /// The host's view.
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: `from_raw_parts`'s contract: `words` valid, aligned atomics
        // for as long as `_owner`, which lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.words) }
    }

    /// The address the device uses.
    pub fn device_addr(&self) -> u64 {
        self.device_addr
    }

    /// Zero every word at memset speed. The caller must know that no kernel
    /// is using the region (between launches).
    pub fn zero(&mut self) {
        // SAFETY: `&mut self` excludes every host view (they borrow `self`),
        // no kernel uses it (the caller's promise), the words are valid for
        // writes (`from_raw_parts`), and all-zero bytes are a valid AtomicU64.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr(), 0, self.words) }
    }

    pub fn len_words(&self) -> usize {
        self.words
    }
}

impl fmt::Debug for MappedRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedRegion")
            .field("words", &self.words)
            .field("device_addr", &format_args!("{:#x}", self.device_addr))
            .finish()
    }
}

/// Device memory: only an address for the host. Freed when dropped.
pub struct DeviceAlloc {
    addr: u64,
    bytes: usize,
    _owner: Box<dyn Any + Send + Sync>,
}

impl DeviceAlloc {
    pub fn new(addr: u64, bytes: usize, owner: Box<dyn Any + Send + Sync>) -> Self {
        DeviceAlloc { addr, bytes, _owner: owner }
    }
    pub fn device_addr(&self) -> u64 {
        self.addr
    }
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }
}

impl fmt::Debug for DeviceAlloc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceAlloc")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// The most a bulk transfer moves in one piece (and the size of each of
/// CUDA's two pinned staging buffers). On the H200, device-to-host copies
/// in 1 MiB steps ran at 0.67x of one whole copy, in 4 MiB steps at 0.90x
/// (`hostcall-bench`'s `d2h_GB_per_s` figures).
pub const STREAM_PIECE: u64 = 4 << 20;

/// A device the runtime can drive. One module is loaded at a time; one
/// kernel runs at a time.
///
/// Nothing here blocks on the kernel: [`Backend::query`] only looks, and the
/// copies run beside a running kernel (CUDA: a separate non-blocking stream).
pub trait Backend: Send {
    /// A short name for messages (`"cuda"`, `"emu"`).
    fn name(&self) -> &str;

    /// Load a module, replacing the previous one. CUDA: PTX text or a cubin
    /// (ELF). Emulation: the name of a module added with
    /// [`emu::EmuBackend::add_module`].
    fn load_module(&mut self, image: &[u8]) -> Result<(), BackendError>;

    /// The architecture a cubin must be built for to load here (`sm_90`);
    /// `None` when the backend takes no cubins.
    fn cubin_arch(&self) -> Option<String> {
        None
    }

    /// Names of the module's global variables (all of them; the runtime picks
    /// the `__HOSTCALL*` ones).
    fn globals(&self) -> Result<Vec<String>, BackendError>;

    /// Write a `u64` global (before launch).
    fn write_global_u64(&mut self, name: &str, value: u64) -> Result<(), BackendError>;

    /// Read a `u64` global (after a run, e.g. a failure counter).
    fn read_global_u64(&mut self, name: &str) -> Result<u64, BackendError>;

    /// Host memory the device can address, zeroed.
    fn alloc_mapped(&mut self, words: usize) -> Result<MappedRegion, BackendError>;

    /// Device memory, zeroed.
    fn alloc_device(&mut self, bytes: usize) -> Result<DeviceAlloc, BackendError>;

    /// Start `entry` (no parameters) on a non-default stream; returns at once.
    fn launch(&mut self, entry: &str, grid: Dim3, block: Dim3) -> Result<(), BackendError>;

    /// Has the launched kernel finished? Never blocks.
    fn query(&mut self) -> KernelState;

    /// Copy `out.len()` bytes from device address `addr` (while the kernel
    /// runs).
    fn copy_from_device(&mut self, addr: u64, out: &mut [u8]) -> Result<(), BackendError>;

    /// Copy `data` to device address `addr` (while the kernel runs).
    fn copy_to_device(&mut self, addr: u64, data: &[u8]) -> Result<(), BackendError>;

    /// Hand the `len` bytes at device address `addr` to `sink` in order, a
    /// piece at a time, with the piece's offset; stop early when `sink`
    /// returns `false`. Returns the bytes `sink` accepted. Bulk writes go
    /// this way: CUDA copies the next piece into pinned staging while `sink`
    /// has this one, so copy and syscall overlap.
    fn stream_from_device(
        &mut self,
        addr: u64,
        len: u64,
        sink: &mut dyn FnMut(&[u8], u64) -> bool,
    ) -> Result<u64, BackendError> {
        let mut buf = vec![0u8; len.min(STREAM_PIECE) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(STREAM_PIECE) as usize;
            self.copy_from_device(addr + done, &mut buf[..n])?;
            if !sink(&buf[..n], done) {
                break;
            }
            done += n as u64;
        }
        Ok(done)
    }

    /// Fill up to `len` bytes at device address `addr` from `source`, a
    /// piece at a time: `source(buf, offset)` fills the front of `buf` and
    /// returns how much (`Some(n < buf.len())` ends the transfer after those
    /// bytes, `None` ends it at once). Returns the bytes that reached the
    /// device; every copy is complete when it returns. Bulk reads go this
    /// way, the syscall for one piece overlapping the copy of the last.
    fn stream_to_device(
        &mut self,
        addr: u64,
        len: u64,
        source: &mut dyn FnMut(&mut [u8], u64) -> Option<usize>,
    ) -> Result<u64, BackendError> {
        let mut buf = vec![0u8; len.min(STREAM_PIECE) as usize];
        let mut done = 0;
        while done < len {
            let want = (len - done).min(STREAM_PIECE) as usize;
            let Some(got) = source(&mut buf[..want], done) else { break };
            let got = got.min(want);
            self.copy_to_device(addr + done, &buf[..got])?;
            done += got as u64;
            if got < want {
                break;
            }
        }
        Ok(done)
    }

    /// Copy `len` bytes from device address `src` to `dst` (while the kernel
    /// runs; the ranges do not overlap). CUDA copies on the GPU; the default
    /// goes through host memory a piece at a time.
    fn copy_device(&mut self, dst: u64, src: u64, len: u64) -> Result<(), BackendError> {
        let mut buf = vec![0u8; len.min(STREAM_PIECE) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(STREAM_PIECE) as usize;
            self.copy_from_device(src + done, &mut buf[..n])?;
            self.copy_to_device(dst + done, &buf[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    /// The smallest piece of device memory the device heap asks for at a
    /// time (`handlers::heap`).
    fn heap_segment_min(&self) -> u64 {
        crate::handlers::heap::SEGMENT_MIN
    }

    /// Zero `len` bytes at device address `addr` (while the kernel runs).
    fn zero_device(&mut self, addr: u64, len: u64) -> Result<(), BackendError> {
        let zeros = vec![0u8; len.min(STREAM_PIECE) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(STREAM_PIECE) as usize;
            self.copy_to_device(addr + done, &zeros[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    /// The server gave up on the run (a protocol error): stop the kernel if
    /// the backend can. The emulation traps its threads; CUDA cannot stop a
    /// running kernel and leaves it to the process's exit.
    fn cancel(&mut self) {}
}
