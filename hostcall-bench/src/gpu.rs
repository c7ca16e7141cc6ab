//! The measurements that need a GPU: each figure and its baseline, in this
//! process on one device (or in a child process of it, where the figure is
//! about a process's stdout or its first load), one after the other.

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::{sys, CudaContext};
use hostcall_runtime::backend::cuda::CudaBackend;
use hostcall_runtime::backend::MappedRegion;
use hostcall_runtime::devices::{Devices, DevicesReport};
use hostcall_runtime::{load_best, Backend, KernelState, Runtime, RuntimeConfig};

use crate::kernels::{self, Image};
use crate::lines::{self, LineCount};
use crate::report::{Curve, Figure, Goal, Machine, Results, Series, SCHEMA};

pub type Res<T> = Result<T, String>;

/// The heap CUDA's device `malloc` gets (the figure's terms: 512 MiB, as the
/// device libc's own heap).
pub const CUDA_HEAP_BYTES: usize = 512 << 20;
/// CUDA's printf FIFO: large enough that 528 x 256 lines fit (the default
/// 1 MiB drops most of them); lines dropped anyway are counted.
pub const PRINTF_FIFO_BYTES: usize = 256 << 20;
/// How long any one kernel may take before the bench gives up on it.
const KERNEL_DEADLINE: Duration = Duration::from_secs(30);

const MIB: u64 = 1 << 20;

/// What one run measures and at what size.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub quick: bool,
    pub device: usize,
    pub null_calls: u64,
    pub warps: Vec<u64>,
    pub print_grids: Vec<u32>,
    pub print_targets: Vec<Target>,
    pub file_bytes: u64,
    pub first_load: bool,
    /// A directory on tmpfs for the file figures.
    pub tmpfs: PathBuf,
    /// The groups of figures to measure (empty: all).
    pub only: Vec<Group>,
}

/// A group of figures `hostcall-bench run --only` can pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Group {
    /// `null_call_us`, `null_call_p99_us`, `null_post_us`, and the
    /// diagnostics of where a call's time goes (`pingpong_push_*`,
    /// `null_call_push_*`, `call_part_*`).
    Null,
    /// `calls_per_s` at each warp count.
    Calls,
    /// `alloc_per_s`.
    Alloc,
    /// `file_write_GB_per_s`, `file_read_GB_per_s`, `d2h_GB_per_s`.
    File,
    /// `println_lines_per_s`.
    Println,
    /// `first_load_s` (full runs only).
    Load,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    DevNull,
    File,
    Pipe,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::DevNull => "devnull",
            Target::File => "file",
            Target::Pipe => "pipe",
        }
    }
}

impl Plan {
    pub fn new(quick: bool, device: usize) -> Self {
        Plan {
            quick,
            device,
            null_calls: 10_000,
            warps: if quick { vec![16, 2112] } else { vec![1, 16, 132, 528, 2112, 8448] },
            print_grids: if quick { vec![132] } else { vec![132, 528] },
            print_targets: if quick {
                vec![Target::DevNull, Target::Pipe]
            } else {
                vec![Target::DevNull, Target::File, Target::Pipe]
            },
            file_bytes: if quick { 64 * MIB } else { 1024 * MIB },
            first_load: !quick,
            tmpfs: PathBuf::from("/dev/shm"),
            only: Vec::new(),
        }
    }

    /// Whether this run measures `group`.
    pub fn measures(&self, group: Group) -> bool {
        self.only.is_empty() || self.only.contains(&group)
    }
}

/// Wait for the launched kernel, without blocking the thread in the driver.
fn wait(backend: &mut dyn Backend, what: &str) -> Res<()> {
    let deadline = Instant::now() + KERNEL_DEADLINE;
    loop {
        match backend.query() {
            KernelState::Done => return Ok(()),
            KernelState::Failed(m) => return Err(format!("{what}: kernel failed: {m}")),
            KernelState::Running if Instant::now() > deadline => {
                return Err(format!("{what}: kernel still running after {KERNEL_DEADLINE:?}"))
            }
            KernelState::Running => std::thread::sleep(Duration::from_micros(20)),
        }
    }
}

/// Spin until `cond` holds, or fail after the kernel deadline.
fn spin_until(what: &str, mut cond: impl FnMut() -> bool) -> Res<()> {
    let deadline = Instant::now() + KERNEL_DEADLINE;
    let mut spins = 0u32;
    while !cond() {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(1 << 16) && Instant::now() > deadline {
            return Err(format!("{what}: no answer from the GPU in {KERNEL_DEADLINE:?}"));
        }
        std::hint::spin_loop();
    }
    Ok(())
}

fn median_and_p99(samples: &mut [u64]) -> (f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize] as f64;
    (at(0.5), at(0.99))
}

/// The globals both bench kernels share, reset before each launch.
fn reset(backend: &mut dyn Backend) -> Res<()> {
    for (name, v) in [("BENCH_T0", u64::MAX), ("BENCH_T1", 0), ("BENCH_SUM", 0), ("BENCH_FAIL", 0)] {
        backend.write_global_u64(name, v).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn global(backend: &mut dyn Backend, name: &str) -> Res<u64> {
    backend.read_global_u64(name).map_err(|e| e.to_string())
}

pub(crate) fn set(backend: &mut dyn Backend, name: &str, v: u64) -> Res<()> {
    backend.write_global_u64(name, v).map_err(|e| e.to_string())
}

/// Seconds between the first thread's start and the last one's end.
fn span_s(backend: &mut dyn Backend) -> Res<f64> {
    let (t0, t1) = (global(backend, "BENCH_T0")?, global(backend, "BENCH_T1")?);
    if t0 == u64::MAX || t1 < t0 {
        return Err("the kernel recorded no time span".into());
    }
    Ok((t1 - t0).max(1) as f64 / 1e9)
}

fn no_failures(backend: &mut dyn Backend, what: &str) -> Res<()> {
    match global(backend, "BENCH_FAIL")? {
        0 => Ok(()),
        n => Err(format!("{what}: {n} failures on the device")),
    }
}

/// Expected `BENCH_SUM` of `alloc_vec` / `cuda_malloc` over `threads`.
pub fn alloc_sum(threads: u64) -> u64 {
    let mut sum = 0u64;
    for tid in 0..threads {
        for i in 0..64u64 {
            let n = 1 + (tid * 31 + i * 17) % 256;
            sum = sum.wrapping_add(n * i + n * (n - 1) / 2);
        }
    }
    sum
}

/// The baselines: `kernels/bench_floor` on its own backend, CUDA's heap
/// and printf FIFO sized first.
pub struct Floor {
    ctx: Arc<CudaContext>,
    backend: CudaBackend,
}

impl Floor {
    pub fn new(device: usize) -> Res<Self> {
        let mut backend = CudaBackend::new(device).map_err(|e| e.to_string())?;
        let ctx = CudaContext::new(device).map_err(|e| format!("cuda: {e:?}"))?;
        ctx.set_limit(sys::CUlimit::CU_LIMIT_MALLOC_HEAP_SIZE, CUDA_HEAP_BYTES)
            .map_err(|e| format!("cuCtxSetLimit(MALLOC_HEAP_SIZE): {e:?}"))?;
        ctx.set_limit(sys::CUlimit::CU_LIMIT_PRINTF_FIFO_SIZE, PRINTF_FIFO_BYTES)
            .map_err(|e| format!("cuCtxSetLimit(PRINTF_FIFO_SIZE): {e:?}"))?;
        let image = kernels::BENCH_FLOOR;
        load_best(&mut backend, image.ptx, image.cubin()).map_err(|e| format!("{}: {e}", image.name))?;
        Ok(Floor { ctx, backend })
    }

    fn mapped(&mut self, words: usize) -> Res<MappedRegion> {
        self.backend.alloc_mapped(words).map_err(|e| e.to_string())
    }

    /// Round trips of one word each way, each timed on the GPU (ns).
    pub fn pingpong(&mut self, n: u64) -> Res<Vec<u64>> {
        self.pingpong_entry("pingpong", n)
    }

    /// `pingpong` with its store pushed out the way `mode` says
    /// (`bench_floor::BENCH_MODE`).
    pub fn pingpong_push(&mut self, mode: u64, n: u64) -> Res<Vec<u64>> {
        set(&mut self.backend, "BENCH_MODE", mode)?;
        self.pingpong_entry("pingpong_push", n)
    }

    fn pingpong_entry(&mut self, entry: &str, n: u64) -> Res<Vec<u64>> {
        let (req, resp, samples) = (self.mapped(8)?, self.mapped(8)?, self.mapped(n as usize)?);
        let b = &mut self.backend;
        reset(b)?;
        set(b, "BENCH_N", n)?;
        set(b, "BENCH_REQ", req.device_addr())?;
        set(b, "BENCH_RESP", resp.device_addr())?;
        set(b, "BENCH_SAMPLES", samples.device_addr())?;
        b.launch(entry, 1.into(), 1.into()).map_err(|e| e.to_string())?;
        let (r, w) = (&req.words()[0], &resp.words()[0]);
        for i in 1..=n {
            spin_until(entry, || r.load(std::sync::atomic::Ordering::Acquire) == i)?;
            w.store(i, std::sync::atomic::Ordering::Release);
        }
        wait(b, entry)?;
        Ok(samples.words().iter().map(|s| s.load(std::sync::atomic::Ordering::Relaxed)).collect())
    }

    /// Calls per second through one mailbox per warp, one host thread.
    pub fn mailbox(&mut self, warps: u64, calls: u64) -> Res<f64> {
        use std::sync::atomic::Ordering::{Acquire, Release};
        let boxes = self.mapped(16 * warps as usize)?;
        let b = &mut self.backend;
        reset(b)?;
        set(b, "BENCH_N", calls)?;
        set(b, "BENCH_REQ", boxes.device_addr())?;
        let (grid, block) = geometry(warps);
        b.launch("mailbox", grid.into(), block.into()).map_err(|e| e.to_string())?;
        let words = boxes.words();
        let mut seen = vec![0u64; warps as usize];
        let (mut done, total) = (0u64, warps * calls);
        let deadline = Instant::now() + KERNEL_DEADLINE;
        while done < total {
            for (w, last) in seen.iter_mut().enumerate() {
                let r = words[16 * w].load(Acquire);
                if r != *last {
                    *last = r;
                    words[16 * w + 8].store(r, Release);
                    done += 1;
                }
            }
            if Instant::now() > deadline {
                return Err(format!("mailbox: {done} of {total} calls answered in {KERNEL_DEADLINE:?}"));
            }
        }
        wait(b, "mailbox")?;
        Ok(total as f64 / span_s(b)?)
    }

    /// Allocations per second with CUDA's device malloc, 64 per thread.
    pub fn malloc(&mut self, grid: u32, block: u32) -> Res<f64> {
        let b = &mut self.backend;
        reset(b)?;
        b.launch("cuda_malloc", grid.into(), block.into()).map_err(|e| e.to_string())?;
        wait(b, "cuda_malloc")?;
        let threads = u64::from(grid) * u64::from(block);
        let failed = global(b, "BENCH_FAIL")?;
        if failed == 0 && global(b, "BENCH_SUM")? != alloc_sum(threads) {
            return Err("cuda_malloc: wrong sum".into());
        }
        Ok((threads * 64 - failed) as f64 / span_s(b)?)
    }

    /// Seconds for every thread to `printf` one line, output flushed.
    pub fn printf(&mut self, grid: u32, block: u32) -> Res<f64> {
        let t = Instant::now();
        self.backend.launch("cuda_printf", grid.into(), block.into()).map_err(|e| e.to_string())?;
        wait(&mut self.backend, "cuda_printf")?;
        // The driver prints the FIFO at a synchronisation.
        self.ctx.synchronize().map_err(|e| format!("cuCtxSynchronize: {e:?}"))?;
        // SAFETY: flushes every C stdio stream; no stream is being closed.
        unsafe { libc::fflush(std::ptr::null_mut()) };
        Ok(t.elapsed().as_secs_f64())
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
}

/// `warps` warps as (grid, block), exactly: blocks of the most warps, up to
/// 8 (256 threads), that divide `warps`.
pub fn geometry(warps: u64) -> (u32, u32) {
    let per_block = (1..=8).rev().find(|w| warps.is_multiple_of(*w)).unwrap_or(1);
    ((warps / per_block) as u32, (per_block * 32) as u32)
}

/// How the server saw a run.
pub struct Served {
    /// Calls per record: how well the warps' lanes called together.
    pub per_record: f64,
    /// The fraction of the run the server found the ring empty.
    pub idle: f64,
    /// Rings the queue had (each its own server thread).
    pub rings: usize,
}

/// What is measured: `kernels/bench_std` under the runtime, files confined
/// to `/` (the bench's own kernels write only where it tells them).
pub struct Ours {
    rt: Runtime,
}

/// A runtime on `device` with `kernels/bench_std` loaded.
fn bench_std_runtime(device: usize, config: RuntimeConfig) -> Res<Runtime> {
    let backend = CudaBackend::new(device).map_err(|e| e.to_string())?;
    let mut rt = Runtime::new(backend, config).map_err(|e| e.to_string())?;
    let image = kernels::BENCH_STD;
    rt.load_best(image.ptx, image.cubin()).map_err(|e| e.to_string())?;
    Ok(rt)
}

impl Ours {
    pub fn new(device: usize) -> Res<Self> {
        let config = RuntimeConfig { root: "/".into(), args: vec!["bench_std".into()], ..RuntimeConfig::default() };
        Ok(Ours { rt: bench_std_runtime(device, config)? })
    }

    fn backend(&mut self) -> &mut dyn Backend {
        self.rt.backend_mut()
    }

    /// Run `entry`: the seconds it took, and how the server saw it.
    fn launch(&mut self, entry: &str, grid: u32, block: u32) -> Res<(f64, Served)> {
        let t = Instant::now();
        let report = self.rt.launch(entry, grid, block).map_err(|e| format!("{entry}: {e}"))?;
        if report.errors > 0 {
            return Err(format!("{entry}: {} hostcalls failed on the host", report.errors));
        }
        let served = Served {
            per_record: report.calls as f64 / report.records.max(1) as f64,
            idle: report.server_idle.as_secs_f64() / report.elapsed.as_secs_f64().max(1e-9),
            rings: report.calls_per_ring.len(),
        };
        Ok((t.elapsed().as_secs_f64(), served))
    }

    /// Null hostcalls from one thread, each timed on the GPU (ns).
    pub fn null_calls(&mut self, n: u64) -> Res<Vec<u64>> {
        self.timed_calls("null_call", n)
    }

    /// The same calls posted, each timed on the GPU (ns): the device side.
    pub fn null_posts(&mut self, n: u64) -> Res<Vec<u64>> {
        self.timed_calls("null_post", n)
    }

    /// `null_call_push` with `BENCH_MODE` = `mode`, each call timed (ns).
    pub fn null_call_push(&mut self, mode: u64, n: u64) -> Res<Vec<u64>> {
        set(self.backend(), "BENCH_MODE", mode)?;
        self.timed_calls("null_call_push", n)
    }

    /// `call_parts`: each step of a call timed alone, `n` times (ns), in
    /// the order of [`CALL_PARTS`].
    pub fn call_parts(&mut self, n: u64) -> Res<Vec<Vec<u64>>> {
        let n = n.next_multiple_of(2);
        let parts = CALL_PARTS.len();
        let samples = self.backend().alloc_mapped(parts * n as usize + 16).map_err(|e| e.to_string())?;
        let b = self.backend();
        reset(b)?;
        set(b, "BENCH_N", n)?;
        set(b, "BENCH_SAMPLES", samples.device_addr())?;
        self.launch("call_parts", 1, 1)?;
        let words: Vec<u64> = samples.words().iter().map(|s| s.load(std::sync::atomic::Ordering::Relaxed)).collect();
        Ok(words[..parts * n as usize].chunks(n as usize).map(<[u64]>::to_vec).collect())
    }

    fn timed_calls(&mut self, entry: &str, n: u64) -> Res<Vec<u64>> {
        let samples = self.backend().alloc_mapped(n as usize).map_err(|e| e.to_string())?;
        let b = self.backend();
        reset(b)?;
        set(b, "BENCH_N", n)?;
        set(b, "BENCH_SAMPLES", samples.device_addr())?;
        self.launch(entry, 1, 1)?;
        no_failures(self.backend(), entry)?;
        Ok(samples.words().iter().map(|s| s.load(std::sync::atomic::Ordering::Relaxed)).collect())
    }

    /// Calls per second with every lane of `warps` warps calling `entry`
    /// (`calls`: null echo calls; `calls_payload`: echo calls of 0-511
    /// bytes), on `rings` rings (0: as the runtime picks), and how the server
    /// saw them.
    pub fn calls(&mut self, entry: &str, warps: u64, per_thread: u64, rings: u64) -> Res<(f64, Served)> {
        self.rt.queue_config_mut().rings = rings;
        let b = self.backend();
        reset(b)?;
        set(b, "BENCH_N", per_thread)?;
        let (grid, block) = geometry(warps);
        let launched = self.launch(entry, grid, block);
        self.rt.queue_config_mut().rings = 0;
        let (_, served) = launched?;
        no_failures(self.backend(), entry)?;
        Ok(((warps * 32 * per_thread) as f64 / span_s(self.backend())?, served))
    }

    pub fn alloc(&mut self, grid: u32, block: u32) -> Res<f64> {
        reset(self.backend())?;
        self.launch("alloc_vec", grid, block)?;
        let threads = u64::from(grid) * u64::from(block);
        no_failures(self.backend(), "alloc_vec")?;
        if global(self.backend(), "BENCH_SUM")? != alloc_sum(threads) {
            return Err("alloc_vec: wrong sum".into());
        }
        Ok((threads * 64) as f64 / span_s(self.backend())?)
    }

    /// Bytes per second moving `bytes` between `path` and `blocks` blocks
    /// (thread 0 of each), `chunk` bytes a call; `expect_sum` checks a read.
    pub fn file(
        &mut self,
        write: bool,
        path: &Path,
        blocks: u32,
        bytes: u64,
        chunk: u64,
        expect_sum: Option<u64>,
    ) -> Res<f64> {
        let entry = if write { "file_write" } else { "file_read" };
        self.rt.state_mut().env.insert("BENCH_PATH".into(), path.display().to_string());
        let b = self.backend();
        reset(b)?;
        set(b, "BENCH_BYTES", bytes)?;
        set(b, "BENCH_CHUNK", chunk)?;
        if write && path.is_file() {
            // Empty, so that what is checked afterwards is this run's.
            std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        // The kernel's own span (from after its buffers are made to its last
        // reply), not the launch's: the figure is the I/O, as the baselines'.
        self.launch(entry, blocks, 1)?;
        no_failures(self.backend(), entry)?;
        let secs = span_s(self.backend())?;
        if let Some(sum) = expect_sum {
            if global(self.backend(), "BENCH_SUM")? != sum {
                return Err(format!("{entry}: the bytes read are not the file's"));
            }
        }
        if write && path.is_file() {
            check_written(path, bytes, blocks)?;
        }
        Ok(moved(bytes, blocks) as f64 / secs)
    }
}

/// `file_write` left each block's share filled with its first offset's low
/// byte ^ 0x5a: the bytes landed where they were written.
fn check_written(path: &Path, bytes: u64, blocks: u32) -> Res<()> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let per_block = bytes / u64::from(blocks);
    let whole = data.len() as u64 == moved(bytes, blocks);
    let ok = whole
        && data.chunks(per_block as usize).enumerate().all(|(b, share)| {
            let want = (b as u64 * per_block) as u8 ^ 0x5a;
            share.iter().all(|&x| x == want)
        });
    if ok {
        Ok(())
    } else {
        Err(format!("file_write: {} does not hold the bytes the kernel wrote", path.display()))
    }
}

/// Bytes `blocks` blocks move when each takes `bytes / blocks`.
pub fn moved(bytes: u64, blocks: u32) -> u64 {
    bytes / u64::from(blocks) * u64::from(blocks)
}

/// Byte `p` of the file the read figures read.
fn pattern(p: u64) -> u8 {
    (p % 251) as u8
}

/// The `BENCH_SUM` `file_read` computes over a file of [`pattern`] bytes:
/// the last byte of every 1 MiB chunk of every block's share.
pub fn read_sum(bytes: u64, blocks: u32, zero: bool) -> u64 {
    if zero {
        return 0;
    }
    let per_block = bytes / u64::from(blocks);
    let chunk = MIB.clamp(1, per_block.max(1));
    let mut sum = 0;
    for b in 0..u64::from(blocks) {
        let mut done = 0;
        while done < per_block {
            let len = chunk.min(per_block - done);
            sum += u64::from(pattern(b * per_block + done + len - 1));
            done += len;
        }
    }
    sum
}

/// The best a CUDA program does with the same bytes: copy engine and one
/// pinned buffer, `write(2)`/`read(2)` of all of it.
struct CopyBaseline {
    ctx: Arc<CudaContext>,
}

impl CopyBaseline {
    /// (copy + syscall, bare copy) bytes per second, D2H then write (or read
    /// then H2D), into (from) `path`.
    fn run(&self, write: bool, path: &Path, bytes: u64) -> Res<(f64, f64)> {
        let cuda = |e: cudarc::driver::DriverError| format!("cuda: {e:?}");
        let stream = self.ctx.default_stream();
        let mut dev = stream.alloc_zeros::<u8>(bytes as usize).map_err(cuda)?;
        // SAFETY: plain pinned memory (not write-combined: the host reads
        // it); every byte is written by a copy or a read before it is read.
        let mut host = unsafe { self.ctx.alloc_pinned_with_flags::<u8>(bytes as usize, 0) }.map_err(cuda)?;
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        let mut best = (0f64, 0f64);
        for _ in 0..2 {
            let t = Instant::now();
            if write {
                stream.memcpy_dtoh(&dev, &mut host).map_err(cuda)?;
                stream.synchronize().map_err(cuda)?;
                let copied = t.elapsed();
                let mut f = std::fs::File::create(path).map_err(io)?;
                f.write_all(host.as_slice().map_err(cuda)?).map_err(io)?;
                best = (
                    best.0.max(bytes as f64 / t.elapsed().as_secs_f64()),
                    best.1.max(bytes as f64 / copied.as_secs_f64()),
                );
            } else {
                let mut f = std::fs::File::open(path).map_err(io)?;
                std::io::Read::read_exact(&mut f, host.as_mut_slice().map_err(cuda)?).map_err(io)?;
                let syscall = t.elapsed();
                let t2 = Instant::now();
                stream.memcpy_htod(&host, &mut dev).map_err(cuda)?;
                stream.synchronize().map_err(cuda)?;
                let copied = t2.elapsed();
                best = (
                    best.0.max(bytes as f64 / (syscall + copied).as_secs_f64()),
                    best.1.max(bytes as f64 / copied.as_secs_f64()),
                );
            }
        }
        Ok(best)
    }

    /// Device-to-host copies of `bytes` in `piece`-byte steps, each step
    /// split over `streams` streams and waited for before the next (as a
    /// handler moves one call's region): bytes per second, best of two.
    fn pieces(&self, bytes: u64, piece: u64, streams: usize) -> Res<f64> {
        let cuda = |e: cudarc::driver::DriverError| format!("cuda: {e:?}");
        let all: Vec<_> = (0..streams).map(|_| self.ctx.new_stream()).collect::<Result<_, _>>().map_err(cuda)?;
        let dev = all[0].alloc_zeros::<u8>(bytes as usize).map_err(cuda)?;
        // SAFETY: plain pinned memory, only written by the copies.
        let mut host = unsafe { self.ctx.alloc_pinned_with_flags::<u8>(bytes as usize, 0) }.map_err(cuda)?;
        let host = host.as_mut_slice().map_err(cuda)?;
        let mut best = 0f64;
        for _ in 0..2 {
            let t = Instant::now();
            let mut at = 0usize;
            while at < bytes as usize {
                let end = (at + piece as usize).min(bytes as usize);
                let share = (end - at).div_ceil(streams);
                for (k, stream) in all.iter().enumerate() {
                    let (a, b) = ((at + k * share).min(end), (at + (k + 1) * share).min(end));
                    if a < b {
                        stream.memcpy_dtoh(&dev.slice(a..b), &mut host[a..b]).map_err(cuda)?;
                    }
                }
                for stream in &all {
                    stream.synchronize().map_err(cuda)?;
                }
                at = end;
            }
            best = best.max(bytes as f64 / t.elapsed().as_secs_f64());
        }
        Ok(best)
    }
}

/// One line of progress on stderr.
pub(crate) fn say(what: &str) {
    eprintln!("hostcall-bench: {what}");
}

/// Run the plan: every figure it asks for, in this order, on one device.
pub fn run(plan: &Plan) -> Res<Results> {
    let mut figures = Vec::new();
    let mut curves = Vec::new();
    let mut ours = Ours::new(plan.device)?;
    let mut floor = Floor::new(plan.device)?;
    if plan.measures(Group::Null) {
        null_figures(plan, &mut ours, &mut floor, &mut figures)?;
    }
    if plan.measures(Group::Calls) {
        curves.push(calls_figures(plan, &mut ours, &mut floor, &mut figures)?);
    }
    if plan.measures(Group::Alloc) {
        figures.push(alloc_figure(&mut ours, &mut floor)?);
    }
    if plan.measures(Group::File) {
        file_figures(plan, &mut ours, &floor, &mut figures)?;
    }
    drop(ours);
    drop(floor);
    if plan.measures(Group::Println) {
        print_figures(plan, &mut figures)?;
    }
    if plan.first_load && plan.measures(Group::Load) {
        load_figures(plan, &mut figures)?;
    }

    let demo = kernels::demo();
    Ok(Results {
        schema: SCHEMA,
        date: crate::report::today(),
        quick: plan.quick,
        machine: machine(plan.device, &[kernels::BENCH_STD, kernels::BENCH_FLOOR, demo]),
        figures,
        curves,
    })
}

/// The steps `bench_std::call_parts` times, in its order, and what each is.
const CALL_PARTS: [(&str, &str); 8] = [
    ("fence", "fence.sc.sys, nothing outstanding"),
    ("store_fence", "one 16-byte store to mapped host memory, then fence.sc.sys"),
    ("record_fence", "two lines of 16-byte stores (a null call's record), then fence.sc.sys"),
    ("atom", "atom.add on a device global, result used (the ticket)"),
    ("config", "the queue's configuration globals, read after a fence"),
    ("poll", "one 16-byte load from mapped host memory (a poll)"),
    ("config_warm", "the configuration again at once, no fence between"),
    ("id", "an op's ID global, read after a fence"),
];

fn null_figures(plan: &Plan, ours: &mut Ours, floor: &mut Floor, figures: &mut Vec<Figure>) -> Res<()> {
    say("null_call_us: 10,000 null hostcalls from one thread, against pingpong_us");
    ours.null_calls(1000)?; // warm-up: first touch of the queue pages
    let (med, p99) = median_and_p99(&mut ours.null_calls(plan.null_calls)?);
    floor.pingpong(1000)?;
    let (pmed, pp99) = median_and_p99(&mut floor.pingpong(plan.null_calls)?);
    figures.push(
        Figure::new("null_call_us", med / 1e3, "us")
            .against("pingpong_us", pmed / 1e3)
            .goal(Goal::AtMost(1.25))
            .notes(format!("median of {}; pingpong p99 {:.2} us", plan.null_calls, pp99 / 1e3)),
    );
    figures.push(
        Figure::new("null_call_p99_us", p99 / 1e3, "us")
            .against("pingpong_us", pmed / 1e3)
            .goal(Goal::AtMost(3.0))
            .notes("p99 against the floor's median"),
    );
    let (post, _) = median_and_p99(&mut ours.null_posts(plan.null_calls)?);
    figures.push(
        Figure::new("null_post_us", post / 1e3, "us")
            .against("pingpong_us", pmed / 1e3)
            .notes("the same calls posted: the device's part of a call, no reply awaited"),
    );
    for (mode, name, what) in [
        (1, "none", "no fence: the store leaves when the GPU gets to it"),
        (2, "acq_rel", "fence.acq_rel.sys after the store"),
        (3, "release", "the store st.release.sys, no fence after"),
        (4, "reload", "a load of the same word after the store"),
    ] {
        floor.pingpong_push(mode, 1000)?;
        let mut times = floor.pingpong_push(mode, plan.null_calls)?;
        figures.push(diagnostic(
            &format!("pingpong_push_{name}_us"),
            &mut times,
            pmed,
            &format!("the ping-pong with {what}"),
        ));
    }
    for (mode, name, what) in [
        (0, "none", "nothing after the record's stores"),
        (1, "sc", "fence.sc.sys after the record's stores, as the device libc"),
        (2, "acq_rel", "fence.acq_rel.sys after the record's stores"),
        (3, "sc_reread", "fence.sc.sys after the record's stores, configuration and op ID read every call"),
    ] {
        ours.null_call_push(mode, 1000)?;
        let mut times = ours.null_call_push(mode, plan.null_calls)?;
        let what = format!("null calls through the queue directly, {what}");
        figures.push(diagnostic(&format!("null_call_push_{name}_us"), &mut times, pmed, &what));
    }
    for ((name, what), mut times) in CALL_PARTS.iter().zip(ours.call_parts(plan.null_calls)?) {
        let (med, _) = median_and_p99(&mut times);
        figures.push(
            Figure::new(&format!("call_part_{name}_us"), med / 1e3, "us")
                .against("pingpong_us", pmed / 1e3)
                .notes(*what),
        );
    }
    Ok(())
}

/// A diagnostic figure: the median of `times` (ns) against the ping-pong's
/// median `pingpong_ns`, with `what` and the p99 as its notes.
fn diagnostic(name: &str, times: &mut [u64], pingpong_ns: f64, what: &str) -> Figure {
    let (med, p99) = median_and_p99(times);
    Figure::new(name, med / 1e3, "us")
        .against("pingpong_us", pingpong_ns / 1e3)
        .notes(format!("{what} (p99 {:.2} us)", p99 / 1e3))
}

/// Calls a `calls_per_s` figure times (less for the smallest grids, at most
/// 256 a lane).
pub(crate) const CALLS_PER_FIGURE: u64 = 1 << 20;

fn calls_figures(plan: &Plan, ours: &mut Ours, floor: &mut Floor, figures: &mut Vec<Figure>) -> Res<Curve> {
    say(&format!("calls_per_s at {:?} warps, every lane calling, against one-word mailboxes", plan.warps));
    let (mut ours_pts, mut floor_pts) = (Vec::new(), Vec::new());
    for &w in &plan.warps {
        // About a million calls, so that the figure is the steady rate (the
        // mailbox makes 200 calls a warp), not the first round's ramp.
        let per_thread = (CALLS_PER_FIGURE / (w * 32)).clamp(2, 256);
        let (rate, served) = ours.calls("calls", w, per_thread, 0)?;
        let mail = floor.mailbox(w, if plan.quick { 50 } else { 200 })?;
        ours_pts.push((w as f64, rate));
        floor_pts.push((w as f64, mail));
        let mut f = Figure::new(&format!("calls_per_s@{w}warps"), rate, "calls/s")
            .against(&format!("mailbox_calls_per_s@{w}warps"), mail)
            .notes(format!(
                "{per_thread} calls per lane, {:.1} per record, {} ring(s), server idle {:.0}%",
                served.per_record,
                served.rings,
                100.0 * served.idle
            ));
        if w == 2112 {
            f = f.goal(Goal::AtLeast(1.0));
        }
        figures.push(f);
        if served.rings > 1 {
            // The same calls on one ring: what the rings past the first add.
            let (one, _) = ours.calls("calls", w, per_thread, 1)?;
            figures.push(
                Figure::new(&format!("calls_per_s_one_ring@{w}warps"), one, "calls/s")
                    .against(&format!("mailbox_calls_per_s@{w}warps"), mail)
                    .notes(format!("as calls_per_s@{w}warps, on one ring and one server thread")),
            );
        }
    }
    if let Some(&w) = plan.warps.iter().max() {
        // Echo calls carrying 0-511 bytes each way, every lane of the
        // largest grid; the goal is 30 M/s (the mailbox moves no payload).
        let per_thread = (CALLS_PER_FIGURE / (w * 32)).clamp(2, 64);
        let mail = floor.mailbox(w, if plan.quick { 50 } else { 200 })?;
        for (entry, name, how) in [
            ("calls_payload", "echo_0_511B_calls_per_s", ""),
            ("calls_payload_synced", "echo_0_511B_synced_calls_per_s", ", the warp synced before each call"),
        ] {
            let (rate, served) = ours.calls(entry, w, per_thread, 0)?;
            figures.push(
                Figure::new(&format!("{name}@{w}warps"), rate, "calls/s")
                    .against(&format!("mailbox_calls_per_s@{w}warps"), mail)
                    .notes(format!(
                        "{per_thread} calls per lane{how}, payload and reply checked, {:.1} per record, {} ring(s); goal 30 M/s",
                        served.per_record, served.rings
                    )),
            );
        }
    }
    Ok(Curve {
        name: "calls_per_s".into(),
        x_label: "warps (every lane calls)".into(),
        y_label: "calls per second".into(),
        series: vec![
            Series { label: "hostcall echo (every lane)".into(), points: ours_pts },
            Series { label: "one-word mailbox per warp (floor)".into(), points: floor_pts },
        ],
    })
}

fn alloc_figure(ours: &mut Ours, floor: &mut Floor) -> Res<Figure> {
    say("alloc_per_s: 132 x 256 threads x 64 Vec<u64>, against CUDA's device malloc");
    ours.alloc(132, 256)?;
    floor.malloc(132, 256)?;
    let (mine, theirs) = (ours.alloc(132, 256)?, floor.malloc(132, 256)?);
    Ok(Figure::new("alloc_per_s", mine, "allocs/s")
        .against("cuda_malloc_per_s", theirs)
        .goal(Goal::AtLeast(10.0))
        .notes(format!("CUDA heap {} MiB", CUDA_HEAP_BYTES >> 20)))
}

fn print_figures(plan: &Plan, figures: &mut Vec<Figure>) -> Res<()> {
    for &grid in &plan.print_grids {
        for &target in &plan.print_targets {
            say(&format!("println_lines_per_s: {grid} x 256 threads to {}, against CUDA printf", target.name()));
            let mine = print_child(plan, Impl::Hostcall, grid, 256, target, false)?;
            let theirs = print_child(plan, Impl::Cuda, grid, 256, target, false)?;
            let lines = f64::from(grid * 256);
            figures.push(
                Figure::new(&format!("println_lines_per_s@{grid}x256>{}", target.name()), lines / mine.secs, "lines/s")
                    .against("cuda_printf_lines_per_s", lines / theirs.secs)
                    .goal(Goal::AtLeast(5.0))
                    .notes(format!(
                        "println {}; printf {}; after a same-size launch set up the queue",
                        mine.summary(),
                        theirs.summary()
                    )),
            );
        }
    }
    if let (Some(&grid), Some(&target)) = (plan.print_grids.last(), plan.print_targets.first()) {
        // What one process that prints once pays: the queue's set-up too.
        say(&format!("println_lines_per_s, first launch: {grid} x 256 threads to {}", target.name()));
        let mine = print_child(plan, Impl::Hostcall, grid, 256, target, true)?;
        let theirs = print_child(plan, Impl::Cuda, grid, 256, target, false)?;
        let lines = f64::from(grid * 256);
        figures.push(
            Figure::new(
                &format!("println_first_launch_lines_per_s@{grid}x256>{}", target.name()),
                lines / mine.secs,
                "lines/s",
            )
            .against("cuda_printf_lines_per_s", lines / theirs.secs)
            .notes(format!(
                "the process's first launch: pinning and mapping the queue for {} threads included; println {}",
                grid * 256,
                mine.summary()
            )),
        );
    }
    Ok(())
}

fn load_figures(plan: &Plan, figures: &mut Vec<Figure>) -> Res<()> {
    say("first_load_s: the demo's PTX through cuModuleLoadData (CUDA_CACHE_DISABLE=1; tens of seconds)");
    let driver = load_child(plan, LoadHow::Driver)?;
    let runtime = load_child(plan, LoadHow::Runtime)?;
    let runtime_ptx = load_child(plan, LoadHow::RuntimePtx)?;
    figures.push(
        Figure::new("first_load_s", runtime, "s")
            .against("driver_ptx_load_s", driver)
            .notes("the demo as hostcalls_bin loads it (cubin), CUDA_CACHE_DISABLE=1"),
    );
    figures.push(
        Figure::new("first_load_ptx_s", runtime_ptx, "s")
            .against("driver_ptx_load_s", driver)
            .notes("the demo's PTX alone through the runtime's JIT path, its cache off"),
    );
    Ok(())
}

fn file_figures(plan: &Plan, ours: &mut Ours, floor: &Floor, figures: &mut Vec<Figure>) -> Res<()> {
    let bytes = plan.file_bytes;
    let dir = tempfile::Builder::new()
        .prefix("hostcall-bench-")
        .tempdir_in(&plan.tmpfs)
        .map_err(|e| format!("a directory in {}: {e}", plan.tmpfs.display()))?;
    let tmp = dir.path().join("data");
    let base = CopyBaseline { ctx: floor.context().clone() };
    let gb = |r: f64| r / 1e9;
    say(&format!("file_write_bytes_per_s / file_read_bytes_per_s: {} MiB, 1 MiB calls", bytes >> 20));
    for write in [true, false] {
        let (verb, copy) = if write { ("write", "d2h") } else { ("read", "h2d") };
        // A read needs the bytes there first: the pattern the kernel checks.
        if !write {
            let data: Vec<u8> = (0..bytes).map(pattern).collect();
            std::fs::write(&tmp, data).map_err(|e| format!("{}: {e}", tmp.display()))?;
        }
        let null: &Path = Path::new(if write { "/dev/null" } else { "/dev/zero" });
        for (label, path) in [("tmpfs", tmp.as_path()), (null.to_str().unwrap_or("null"), null)] {
            let (copy_syscall, bare) = base.run(write, path, bytes)?;
            if write && path == null {
                // What the copy engine gives a handler that moves one
                // call's region at a time, by piece size and stream count.
                for (piece, streams) in [(MIB, 1), (MIB, 4), (4 * MIB, 1), (4 * MIB, 4), (16 * MIB, 1)] {
                    let rate = base.pieces(bytes, piece, streams)?;
                    figures.push(
                        Figure::new(&format!("d2h_GB_per_s@{}MiBx{streams}", piece / MIB), gb(rate), "GB/s")
                            .against("bare_d2h", gb(bare))
                            .notes(format!(
                                "{} MiB in {} MiB steps over {streams} stream(s), no kernel running",
                                bytes / MIB,
                                piece / MIB
                            )),
                    );
                }
            }
            if write && label == "tmpfs" {
                // The baseline left a file of `bytes`; the kernel rewrites it.
                std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            for blocks in [1u32, 132] {
                let warm = bytes.min(16 * MIB);
                let sum = (!write).then(|| read_sum(warm, blocks, path == null));
                ours.file(write, path, blocks, warm, MIB, sum)?; // warm-up
                let sum = (!write).then(|| read_sum(bytes, blocks, path == null));
                let rate = ours.file(write, path, blocks, bytes, MIB, sum)?;
                let name = format!("file_{verb}_GB_per_s@{blocks}blk>{label}");
                let who = if blocks == 1 { "one thread" } else { "132 blocks" };
                figures.push(
                    Figure::new(&name, gb(rate), "GB/s")
                        .against(&format!("{copy}+{verb}(2)"), gb(copy_syscall))
                        .goal(Goal::AtLeast(0.8))
                        .notes(format!("{who}, {} MiB", bytes >> 20)),
                );
                if path == null {
                    figures.push(
                        Figure::new(&format!("{name}/bare"), gb(rate), "GB/s")
                            .against(&format!("bare_{copy}"), gb(bare))
                            .goal(Goal::AtLeast(0.5))
                            .notes(who),
                    );
                }
            }
            if path == null {
                // What `std::fs::write` of one big buffer does: one call.
                let one = bytes.min(64 * MIB);
                let sum = (!write).then_some(0);
                let rate = ours.file(write, path, 1, one, one, sum)?;
                figures.push(
                    Figure::new(&format!("file_{verb}_GB_per_s@1call>{label}"), gb(rate), "GB/s")
                        .against(&format!("bare_{copy}"), gb(bare))
                        .notes(format!("one thread, one {} MiB call", one >> 20)),
                );
            }
        }
    }
    Ok(())
}

/// Which printer a child runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Impl {
    /// `println!` under the hostcall runtime.
    Hostcall,
    /// CUDA's device printf.
    Cuda,
}

/// What a printing child reported, and what its output delivered.
pub(crate) struct Printed {
    pub secs: f64,
    pub count: Option<LineCount>,
    /// On several devices: each one's seconds, launch to end of serving.
    pub per_device: Vec<f64>,
}

impl Printed {
    pub fn summary(&self) -> String {
        self.count.map_or_else(|| "lost=? torn=? (/dev/null)".into(), |c| c.summary())
    }
}

/// A child on the plan's device, or on every one of `devices` when given.
fn child(plan: &Plan, devices: &[usize], args: &[String]) -> Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| "hostcall-bench".into());
    let mut cmd = Command::new(exe);
    cmd.arg("child");
    match devices {
        [] => cmd.arg("--device").arg(plan.device.to_string()),
        several => cmd.arg("--devices").arg(several.iter().map(usize::to_string).collect::<Vec<_>>().join(",")),
    };
    cmd.args(args);
    cmd
}

/// The number a child printed on its last `BENCH_CHILD <secs>` line.
fn child_secs(stderr: &[u8], what: &str) -> Res<f64> {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("BENCH_CHILD ")?.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("{what}: the child reported nothing: {}", text.trim()))
}

fn print_child(plan: &Plan, how: Impl, grid: u32, block: u32, target: Target, cold: bool) -> Res<Printed> {
    print_child_on(plan, &[], how, grid, block, target, cold)
}

/// A printing child on the plan's device, or on every one of `devices` at
/// once (each thread's line then comes once from each).
pub(crate) fn print_child_on(
    plan: &Plan,
    devices: &[usize],
    how: Impl,
    grid: u32,
    block: u32,
    target: Target,
    cold: bool,
) -> Res<Printed> {
    let what = format!("{how:?} print to {}", target.name());
    let mut args = vec![
        "print".into(),
        "--impl".into(),
        format!("{how:?}").to_lowercase(),
        "--grid".into(),
        grid.to_string(),
        "--block".into(),
        block.to_string(),
    ];
    if cold {
        args.push("--cold".into());
    }
    let mut cmd = child(plan, devices, &args);
    cmd.stdin(Stdio::null()).stderr(Stdio::piped());
    let (expected, copies) = (u64::from(grid) * u64::from(block), devices.len().max(1) as u64);
    let file = tempfile::NamedTempFile::new_in(&plan.tmpfs).map_err(|e| e.to_string())?;
    match target {
        Target::DevNull => cmd.stdout(Stdio::null()),
        Target::File => cmd.stdout(file.reopen().map_err(|e| e.to_string())?),
        Target::Pipe => cmd.stdout(Stdio::piped()),
    };
    let mut proc = cmd.spawn().map_err(|e| format!("{what}: {e}"))?;
    let reader = proc
        .stdout
        .take()
        .map(|out| std::thread::spawn(move || lines::count_copies(BufReader::new(out), expected, copies)));
    let out = proc.wait_with_output().map_err(|e| format!("{what}: {e}"))?;
    let mut count = match reader {
        Some(r) => Some(r.join().map_err(|_| "the pipe reader panicked".to_string())?.map_err(|e| e.to_string())?),
        None => None,
    };
    if !out.status.success() {
        return Err(format!("{what}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    if target == Target::File {
        let f = std::fs::File::open(file.path()).map_err(|e| e.to_string())?;
        count = Some(lines::count_copies(BufReader::new(f), expected, copies).map_err(|e| e.to_string())?);
    }
    let per_device = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("BENCH_CHILD_DEVICE ")?.split(' ').nth(1)?.trim().parse::<f64>().ok())
        .collect();
    Ok(Printed { secs: child_secs(&out.stderr, &what)?, count, per_device })
}

/// How a load child loads the demo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadHow {
    /// `cuModuleLoadData` of the PTX: what the driver does alone.
    Driver,
    /// What `hostcalls_bin` does (`Runtime::load_best`: the cubin).
    Runtime,
    /// The runtime's PTX path, its JIT cache off.
    RuntimePtx,
}

fn load_child(plan: &Plan, how: LoadHow) -> Res<f64> {
    let what = format!("{how:?} load");
    let name = match how {
        LoadHow::Driver => "driver",
        LoadHow::Runtime => "runtime",
        LoadHow::RuntimePtx => "runtime-ptx",
    };
    let out = child(plan, &[], &["load".into(), "--how".into(), name.into()])
        .env("CUDA_CACHE_DISABLE", "1")
        .env("HOSTCALL_JIT_CACHE", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{what}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    child_secs(&out.stderr, &what)
}

/// `hostcall-bench child print`: print from every thread, report the time.
pub fn child_print(device: usize, how: Impl, grid: u32, block: u32, cold: bool) -> Res<f64> {
    match how {
        Impl::Hostcall => {
            let mut rt = bench_std_runtime(device, RuntimeConfig::default())?;
            if !cold {
                // A launch of the same size that makes no call first: the
                // runtime sets up (pins, maps) the queue memory for a grid
                // once and reuses it, as CUDA sets up its printf FIFO with
                // the context.
                set(rt.backend_mut(), "BENCH_N", 0)?;
                rt.launch("calls", grid, block).map_err(|e| e.to_string())?;
            }
            let t = Instant::now();
            // The run ends with its output written and flushed.
            let report = rt.launch("print_line", grid, block).map_err(|e| e.to_string())?;
            std::io::stdout().flush().map_err(|e| e.to_string())?;
            let secs = t.elapsed().as_secs_f64();
            drop(rt);
            if report.errors > 0 {
                return Err(format!("{} writes failed on the host", report.errors));
            }
            Ok(secs)
        }
        Impl::Cuda => Floor::new(device)?.printf(grid, block),
    }
}

/// `hostcall-bench child --devices LIST print --impl hostcall`: print from
/// every thread of every device at once, through one stdout
/// (`hostcall_runtime::devices`), report the time, and each device's on a
/// `BENCH_CHILD_DEVICE <ordinal> <secs>` line.
pub fn child_print_devices(ordinals: &[usize], how: Impl, grid: u32, block: u32, cold: bool) -> Res<f64> {
    if how != Impl::Hostcall {
        return Err("CUDA's printf is measured on one device only".into());
    }
    let backends: Res<Vec<_>> =
        ordinals.iter().map(|&d| CudaBackend::new(d).map_err(|e| format!("device {d}: {e}"))).collect();
    let mut devices = Devices::new(backends?, RuntimeConfig::default()).map_err(|e| e.to_string())?;
    let image = kernels::BENCH_STD;
    devices.load_best(image.ptx, image.cubin()).map_err(|e| e.to_string())?;
    let every_ok = |report: DevicesReport| -> Res<Vec<f64>> {
        let ended = report.devices.into_iter().zip(ordinals).map(|(r, d)| match r {
            Ok(r) if r.errors == 0 => Ok(r.elapsed.as_secs_f64()),
            Ok(r) => Err(format!("device {d}: {} writes failed on the host", r.errors)),
            Err(e) => Err(format!("device {d}: {e}")),
        });
        ended.collect()
    };
    if !cold {
        // As on one device: a launch of the same size that makes no call
        // sets up each device's queue first.
        for rt in devices.runtimes_mut() {
            set(rt.backend_mut(), "BENCH_N", 0)?;
        }
        every_ok(devices.launch("calls", grid, block))?;
    }
    let t = Instant::now();
    let report = devices.launch("print_line", grid, block);
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    for (d, secs) in ordinals.iter().zip(every_ok(report)?) {
        eprintln!("BENCH_CHILD_DEVICE {d} {secs:.6}");
    }
    Ok(secs)
}

/// `hostcall-bench child load`: load the demo's image, report the time.
pub fn child_load(device: usize, how: LoadHow) -> Res<f64> {
    let demo = kernels::demo();
    match how {
        LoadHow::Driver => {
            let ctx = CudaContext::new(device).map_err(|e| format!("cuda: {e:?}"))?;
            ctx.bind_to_thread().map_err(|e| format!("cuda: {e:?}"))?;
            let mut ptx = demo.ptx.to_vec();
            ptx.push(0);
            let t = Instant::now();
            // SAFETY: `ptx` is NUL-terminated PTX text that outlives the call;
            // the context is current on this thread.
            let module = unsafe { cudarc::driver::result::module::load_data(ptx.as_ptr().cast()) }
                .map_err(|e| format!("cuModuleLoadData: {e:?}"))?;
            let secs = t.elapsed().as_secs_f64();
            // SAFETY: loaded above, unloaded once, nothing uses it.
            let _ = unsafe { cudarc::driver::result::module::unload(module) };
            Ok(secs)
        }
        LoadHow::Runtime | LoadHow::RuntimePtx => {
            let mut backend = CudaBackend::new(device).map_err(|e| e.to_string())?;
            backend.set_jit_cache(None);
            let mut rt = Runtime::new(backend, RuntimeConfig::default()).map_err(|e| e.to_string())?;
            let t = Instant::now();
            if how == LoadHow::Runtime { rt.load_best(demo.ptx, demo.cubin()) } else { rt.load(demo.ptx) }
                .map_err(|e| e.to_string())?;
            Ok(t.elapsed().as_secs_f64())
        }
    }
}

/// The GPU, its driver and link, this host's CPU, and what was built.
pub(crate) fn machine(device: usize, images: &[Image]) -> Machine {
    let query = |field: &str| {
        Command::new("nvidia-smi")
            .args([&format!("--query-gpu={field}"), "--format=csv,noheader", "-i", &device.to_string()])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".into())
    };
    let gpu = match query("name") {
        n if n == "unknown" => CudaBackend::new(device).map(|b| b.device_name().to_owned()).unwrap_or(n),
        n => n,
    };
    Machine {
        gpu,
        driver: query("driver_version"),
        pcie: format!("gen{} x{}", query("pcie.link.gen.current"), query("pcie.link.width.current")),
        cpu: cpu_model(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        commit: kernels::COMMIT.trim().to_owned(),
        images: images.iter().map(|i| (i.name.to_owned(), i.sha256())).collect(),
    }
}

/// This host's CPU, as `/proc/cpuinfo` names it.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix("model name")?.split(':').nth(1).map(|s| s.trim().to_owned()))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Is there a GPU to measure? `Err` with the reason when not.
pub fn probe(device: usize) -> Res<String> {
    CudaBackend::new(device).map(|b| b.device_name().to_owned()).map_err(|e| e.to_string())
}
