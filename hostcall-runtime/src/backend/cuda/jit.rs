//! How an image becomes a loaded module, the fastest way the driver offers
//! for what it is (measured on an H200, driver 580, a 2 MB std PTX; see
//! docs/architecture.md):
//!
//! * a linked cubin: `cuModuleLoadData`, about 10 ms;
//! * a relocatable cubin (`ptxas -c`, what `hostcall-build` writes): the
//!   driver's linker (`cuLinkAddData(CU_JIT_INPUT_CUBIN)`, `cuLinkComplete`),
//!   about 20 ms;
//! * PTX: the same linker with `CU_JIT_INPUT_PTX`, which compiles each
//!   function once, with a register limit so that every entry point can
//!   launch 1024-thread blocks: 1.5 s for the demo's 1.7 MB, where
//!   `cuModuleLoadData` of a 2 MB demo PTX compiled the whole program for
//!   36-41 s. `HOSTCALL_JIT_OPT_LEVEL=0..4` sets `CU_JIT_OPTIMIZATION_LEVEL`;
//!   unset, PTX up to [`LARGE_PTX`] bytes gets the driver's default (4) and
//!   larger PTX level 1: the 11.9 MB regex kernel took 64-69 s at 4 and
//!   50-64 s at 1 on the H200.
//! * PTX of at least twice [`PIECE_BYTES`] is cut into pieces (one per
//!   whole `PIECE_BYTES`) by `hostcall_image::split`, one link input per
//!   piece: the driver's compiler takes time that grows faster than the
//!   module. On the H200 the regex kernel (11.9 MB) loaded from 16 pieces
//!   in 8.9-10.6 s at level 1 (module load; 25 s at level 4), where the
//!   whole module took 50-64 s; the demo (1.7 MB, 2 pieces) in 1.8-2.0 s,
//!   as whole. `HOSTCALL_JIT_PIECES=N` sets the count (1: whole).
//!
//! The linked result is kept in a cache on disk keyed by the PTX's SHA-256,
//! the architecture, the driver version, the register limit, the level and
//! the piece count, so later runs load it like a cubin even when the
//! driver's own cache is off or full.

use std::ffi::c_void;
use std::fmt;
use std::path::{Path, PathBuf};
use std::ptr;

use cudarc::driver::sys::{self, CUresult};
use hostcall_image::{ptx_summary, AlignedBytes, Cubin, CubinKind, Fingerprint, Kind};

use super::{ck, describe, CudaBackend};
use crate::backend::BackendError;

/// Which way a module was loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadPath {
    /// A linked cubin, as it was.
    Cubin,
    /// A relocatable cubin, linked by the driver.
    LinkedCubin,
    /// PTX whose compiled form was in the JIT cache.
    JitCached,
    /// PTX compiled by the driver now (and stored in the cache, if one is set).
    Jit,
}

impl fmt::Display for LoadPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoadPath::Cubin => "cubin, loaded as it is",
            LoadPath::LinkedCubin => "relocatable cubin, linked by the driver",
            LoadPath::JitCached => "PTX, compiled code from the JIT cache",
            LoadPath::Jit => "PTX, compiled by the driver now",
        })
    }
}

pub(super) struct Loaded {
    pub module: sys::CUmodule,
    pub globals: Vec<String>,
    pub path: LoadPath,
}

/// The JIT cache's directory: `$HOSTCALL_JIT_CACHE` (empty or `0` turns
/// it off), else `$XDG_CACHE_HOME/hostcall/jit`, else
/// `~/.cache/hostcall/jit`.
pub fn default_jit_cache() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = std::env::var_os("HOSTCALL_JIT_CACHE") {
        return (!dir.is_empty() && dir != "0").then(|| PathBuf::from(dir));
    }
    var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| Path::new(&home).join(".cache")))
        .map(|cache| cache.join("hostcall/jit"))
}

fn bad_image(what: impl fmt::Display) -> BackendError {
    BackendError(format!("cuda: {what}"))
}

/// PTX above this many bytes is compiled at `CU_JIT_OPTIMIZATION_LEVEL` 1
/// unless `HOSTCALL_JIT_OPT_LEVEL` says otherwise: the first start of a
/// very large kernel from PTX is bounded by the driver's compile time (a
/// shipped cubin skips it, and the JIT cache skips it the second time).
pub const LARGE_PTX: usize = 4 << 20;

/// The `CU_JIT_OPTIMIZATION_LEVEL` for `ptx_len` bytes of PTX: the one
/// asked for, else 1 for [`LARGE_PTX`], else the driver's default (`None`).
pub(super) fn opt_level_for(asked: Option<u32>, ptx_len: usize) -> Option<u32> {
    asked.or((ptx_len > LARGE_PTX).then_some(1))
}

/// At most this many pieces: more gained nothing on the regex kernel (16
/// pieces: 10.6-13.1 s, 32: 12.4-16.1 s at level 1); its largest function
/// sets the floor.
pub const MAX_PIECES: usize = 32;

/// PTX is cut into one piece per whole this many bytes (so PTX under twice
/// this stays whole), at most [`DEFAULT_MAX_PIECES`] unless
/// `HOSTCALL_JIT_PIECES` asks otherwise.
pub const PIECE_BYTES: usize = 720 << 10;
/// The most pieces chosen by size alone (regex: 16 loaded fastest).
pub const DEFAULT_MAX_PIECES: usize = 16;

/// How many pieces `ptx_len` bytes of PTX are cut into: `HOSTCALL_JIT_PIECES`
/// (at most [`MAX_PIECES`]) when set, else one per [`PIECE_BYTES`].
fn piece_count(asked: Option<usize>, ptx_len: usize) -> usize {
    asked.map_or_else(|| (ptx_len / PIECE_BYTES).clamp(1, DEFAULT_MAX_PIECES), |n| n.clamp(1, MAX_PIECES))
}

/// `HOSTCALL_JIT_PIECES`, when set.
fn pieces_from_env() -> Option<usize> {
    std::env::var("HOSTCALL_JIT_PIECES").ok()?.trim().parse().ok()
}

/// `HOSTCALL_JIT_OPT_LEVEL`, `0..=4`, when set.
pub(super) fn opt_level_from_env() -> Option<u32> {
    std::env::var("HOSTCALL_JIT_OPT_LEVEL").ok()?.trim().parse().ok().map(|l: u32| l.min(4))
}

pub(super) fn load(backend: &CudaBackend, image: &[u8]) -> Result<Loaded, BackendError> {
    let regs = backend.max_registers;
    match Kind::of(image) {
        Kind::Cubin => {
            let cubin = Cubin::parse(image).map_err(bad_image)?;
            let (module, path) = match cubin.kind {
                CubinKind::Executable => (load_data(image)?, LoadPath::Cubin),
                CubinKind::Relocatable => {
                    (load_data(&link(Input::Cubin, &[image], regs, backend.jit_opt_level)?)?, LoadPath::LinkedCubin)
                }
            };
            Ok(Loaded { module, globals: cubin.globals, path })
        }
        Kind::Ptx => {
            let text =
                std::str::from_utf8(image).map_err(|_| bad_image("the image is neither a cubin nor PTX text"))?;
            if text.contains('\0') {
                return Err(bad_image("the PTX text contains a NUL byte"));
            }
            let globals = ptx_summary(text).globals;
            let level = opt_level_for(backend.jit_opt_level, image.len());
            let count = piece_count(pieces_from_env(), image.len());
            let cached = backend.jit_cache.as_deref().map(|dir| cache_file(dir, backend, image, level, count));
            if let Some(file) = &cached {
                // Only a cubin: anything else the driver would take for PTX.
                if let Some(bytes) = std::fs::read(file).ok().filter(|b| Kind::of(b) == Kind::Cubin) {
                    match load_data(&bytes) {
                        Ok(module) => return Ok(Loaded { module, globals, path: LoadPath::JitCached }),
                        Err(e) => {
                            tracing::debug!(target: "hostcall", "JIT cache entry {} unusable: {e}", file.display())
                        }
                    }
                }
            }
            let pieces = hostcall_image::split::split(text, count);
            tracing::debug!(
                target: "hostcall",
                "JIT: {} bytes of PTX in {} piece(s) at optimization level {}",
                image.len(),
                pieces.len(),
                level.map_or("4 (the driver's default)".to_owned(), |l| l.to_string())
            );
            let pieces: Vec<&[u8]> = pieces.iter().map(|p| p.as_bytes()).collect();
            let linked = link(Input::Ptx, &pieces, regs, level)?;
            if let Some(file) = &cached {
                if let Err(e) = store(file, &linked) {
                    tracing::debug!(target: "hostcall", "JIT cache: cannot write {}: {e}", file.display());
                }
            }
            Ok(Loaded { module: load_data(&linked)?, globals, path: LoadPath::Jit })
        }
    }
}

/// The cache entry of `ptx` compiled on this device and driver.
fn cache_file(dir: &Path, backend: &CudaBackend, ptx: &[u8], opt_level: Option<u32>, pieces: usize) -> PathBuf {
    let mut key = Fingerprint::new();
    // The tag changes whenever what a key names would compile differently
    // (3: pieces rename PTX system-call names; links made by 2 may be bad).
    key.field(b"hostcall-jit-3")
        .field(ptx)
        .field(&backend.capability.0.to_le_bytes())
        .field(&backend.capability.1.to_le_bytes())
        .field(&backend.driver_version.to_le_bytes())
        .field(&backend.max_registers.to_le_bytes())
        .field(&opt_level.unwrap_or(u32::MAX).to_le_bytes())
        .field(&(pieces as u64).to_le_bytes());
    dir.join(format!("{}.cubin", &key.hex()[..32]))
}

/// Written beside and renamed into place, so a concurrent reader sees a
/// whole entry or none.
fn store(file: &Path, cubin: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let partial = file.with_extension(format!("{}.partial", std::process::id()));
    std::fs::write(&partial, cubin)?;
    std::fs::rename(&partial, file)
}

fn load_data(image: &[u8]) -> Result<sys::CUmodule, BackendError> {
    // ELF headers are read in place: give the driver an aligned copy of an
    // image that is not (`include_bytes!` data).
    let aligned;
    let image = if image.as_ptr().align_offset(8) == 0 {
        image
    } else {
        aligned = AlignedBytes::copy_of(image);
        aligned.as_bytes()
    };
    let mut module = ptr::null_mut();
    // SAFETY: `image` is a whole ELF image (cubin) that outlives the call;
    // the driver reads its size from its headers. `module` is writable.
    ck(unsafe { sys::cuModuleLoadData(&mut module, image.as_ptr().cast()) }, "cuModuleLoadData")?;
    Ok(module)
}

/// `CU_JIT_SPLIT_COMPILE` (CUDA 12.8+ drivers): threads the compiler may
/// use. cudarc declares it only in its CUDA 13 bindings, so by number.
const CU_JIT_SPLIT_COMPILE: u32 = 34;

#[derive(Clone, Copy)]
enum Input {
    Ptx,
    Cubin,
}

/// Ends a link state, with the cubin it owns.
struct LinkState(sys::CUlinkState);

impl Drop for LinkState {
    fn drop(&mut self) {
        // SAFETY: created by `cuLinkCreate_v2` and destroyed once, here.
        let _ = unsafe { sys::cuLinkDestroy(self.0) };
    }
}

/// Inputs of one kind through the driver's linker; the linked cubin.
fn link(input: Input, inputs: &[&[u8]], max_registers: u32, opt_level: Option<u32>) -> Result<Vec<u8>, BackendError> {
    // The driver writes errors here while the link state lives; declared
    // first, it outlives `state`.
    let mut log = vec![0u8; 64 * 1024];
    // Option values are passed as pointer-sized words, numbers included.
    let mut options = vec![
        (sys::CUjit_option::CU_JIT_MAX_REGISTERS as u32, max_registers as usize as *mut c_void),
        (sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER as u32, log.as_mut_ptr().cast()),
        (sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES as u32, log.len() as *mut c_void),
    ];
    if let Some(level) = opt_level {
        options.push((sys::CUjit_option::CU_JIT_OPTIMIZATION_LEVEL as u32, level as usize as *mut c_void));
    }
    let required = options.len();
    if matches!(input, Input::Ptx) {
        // Compile on every core (0: as many threads as CPUs). Drivers that
        // predate the option refuse it; the link is then made without.
        options.push((CU_JIT_SPLIT_COMPILE, ptr::null_mut()));
    }
    // The driver may keep reading an input after `cuLinkAddData` returns:
    // given several PTX inputs it compiles them together in
    // `cuLinkComplete`. Each copy therefore lives until the link state is
    // destroyed (declared before it, it drops after it).
    // (Dropping each one after its `cuLinkAddData` had the driver compile
    // freed memory: linked programs that faulted, and heap corruption.)
    let kind = match input {
        Input::Ptx => sys::CUjitInputType::CU_JIT_INPUT_PTX,
        Input::Cubin => sys::CUjitInputType::CU_JIT_INPUT_CUBIN,
    };
    let mut copies: Vec<Vec<u8>> = inputs
        .iter()
        .map(|data| match input {
            // PTX goes in NUL-terminated.
            Input::Ptx => [data, &b"\0"[..]].concat(),
            Input::Cubin => data.to_vec(),
        })
        .collect();
    // The driver keeps the option arrays too, and writes into `values` (the
    // log's filled size) as late as `cuLinkComplete`: they live as long as
    // the link state (NVIDIA's cuda-python hit the same: its PR #1911).
    let (mut keys, mut values): (Vec<u32>, Vec<*mut c_void>);
    let raw = loop {
        (keys, values) = options.iter().copied().unzip();
        let mut raw = ptr::null_mut();
        // SAFETY: `keys` and `values` are parallel arrays of `keys.len()`
        // options as the driver reads them (`CUjit_option` is a C enum: a
        // u32; Rust never reads these back as the enum). They, and the log
        // buffer, are not touched or freed while the link state lives
        // (declared before `state`, they drop after it); `raw` is writable.
        let r =
            unsafe { sys::cuLinkCreate_v2(keys.len() as u32, keys.as_mut_ptr().cast(), values.as_mut_ptr(), &mut raw) };
        match r {
            CUresult::CUDA_SUCCESS => break raw,
            CUresult::CUDA_ERROR_INVALID_VALUE if options.len() > required => {
                options.truncate(required);
            }
            r => return Err(BackendError(format!("cuda: cuLinkCreate: {}", describe(r)))),
        }
    };
    let state = LinkState(raw);
    let failed = |r: CUresult, what: &str, log: &[u8]| {
        let text = String::from_utf8_lossy(log.split(|&b| b == 0).next().unwrap_or_default()).trim().to_owned();
        let tail: Vec<&str> = text.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
        BackendError(format!(
            "cuda: {what}: {}{}",
            describe(r),
            if tail.is_empty() { String::new() } else { format!("\n{}", tail.join("\n")) }
        ))
    };
    for bytes in &mut copies {
        // SAFETY: `bytes` is a whole input of the declared kind; it is not
        // touched or freed while the link state lives (`copies` drops after
        // `state`).
        // The name is a NUL-terminated static string; no per-input options.
        let r = unsafe {
            sys::cuLinkAddData_v2(
                state.0,
                kind,
                bytes.as_mut_ptr().cast(),
                bytes.len(),
                c"kernel".as_ptr(),
                0,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        if r != CUresult::CUDA_SUCCESS {
            return Err(failed(r, "cuLinkAddData", &log));
        }
    }
    let (mut out, mut size) = (ptr::null_mut(), 0usize);
    // SAFETY: the state holds every input, each still alive in `copies`;
    // outputs are writable.
    let r = unsafe { sys::cuLinkComplete(state.0, &mut out, &mut size) };
    if r != CUresult::CUDA_SUCCESS || out.is_null() {
        return Err(failed(r, "cuLinkComplete", &log));
    }
    // SAFETY: `out` points at `size` bytes owned by `state`, alive until it
    // drops at the end of this function; they are copied out first.
    Ok(unsafe { std::slice::from_raw_parts(out.cast::<u8>(), size) }.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptx_is_cut_by_size_unless_asked() {
        assert_eq!(piece_count(None, 100 << 10), 1);
        assert_eq!(piece_count(None, 2 * PIECE_BYTES - 1), 1);
        assert_eq!(piece_count(None, 2 * PIECE_BYTES), 2);
        assert_eq!(piece_count(None, 1_743_436), 2, "the demo");
        assert_eq!(piece_count(None, 11_963_150), 16, "the regex kernel");
        assert_eq!(piece_count(None, 1 << 30), DEFAULT_MAX_PIECES);
        assert_eq!(piece_count(Some(1), 1 << 30), 1);
        assert_eq!(piece_count(Some(0), 10), 1);
        assert_eq!(piece_count(Some(1000), 10), MAX_PIECES);
    }

    #[test]
    fn large_ptx_defaults_to_level_1_unless_asked() {
        assert_eq!(opt_level_for(None, 1 << 20), None);
        assert_eq!(opt_level_for(None, LARGE_PTX), None);
        assert_eq!(opt_level_for(None, LARGE_PTX + 1), Some(1));
        assert_eq!(opt_level_for(Some(4), LARGE_PTX + 1), Some(4));
        assert_eq!(opt_level_for(Some(0), 10), Some(0));
    }
}
