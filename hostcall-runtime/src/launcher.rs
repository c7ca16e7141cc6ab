//! Run a kernel image on a CUDA device the way a command-line tool does:
//! load it (cubin when it suits the GPU, else PTX), launch, serve, and turn
//! the outcome into a process exit code and one summary line; on several
//! devices at once ([`crate::devices`]), one line per device. Both
//! `hostcalls_bin` and `hostcall run` are this plus their argument parsing.

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::backend::cuda::{CudaBackend, DEFAULT_STACK_BYTES};
use crate::devices::{DeviceError, DeviceList, Devices};
pub use crate::exit_code::{exit_byte, fault_code, stop_code};
use crate::{exit_code, QueueConfig, RunReport, Runtime, RuntimeConfig, RuntimeError};

/// What to launch, and how.
#[derive(Clone, Debug)]
pub struct Launch {
    /// Names the tool in messages (`hostcalls_bin: ...`).
    pub program: String,
    pub entry: String,
    pub grid: u32,
    pub block: u32,
    /// The sandbox root of the kernel's file calls.
    pub root: PathBuf,
    /// The CUDA devices to run on, each the whole launch (`--devices`;
    /// `--device N` is a list of one). Default: device 0.
    pub devices: DeviceList,
    /// Stack bytes per GPU thread.
    pub stack_size: u64,
    /// The register limit when the driver compiles PTX.
    pub max_registers: u32,
    /// Bytes per command buffer.
    pub buff_size: u64,
    /// No summary line on stderr.
    pub quiet: bool,
    /// `std::env::args()` on the device: `arg0`, then these.
    pub kernel_args: Vec<String>,
    /// The program name the kernel sees first in its arguments (the
    /// entry's name unless set: a binary's name for its `main`).
    pub arg0: String,
    /// The watchdog: stop the run after this long (exit 124).
    pub timeout: Option<Duration>,
}

impl Launch {
    /// One thread of `entry` with the runtime's defaults.
    pub fn new(program: &str, entry: &str) -> Self {
        Launch {
            program: program.to_owned(),
            entry: entry.to_owned(),
            grid: 1,
            block: 1,
            root: PathBuf::from("."),
            devices: DeviceList::default(),
            stack_size: DEFAULT_STACK_BYTES as u64,
            max_registers: hostcall_image::DEFAULT_MAX_REGISTERS,
            buff_size: QueueConfig::DEFAULT.buff_size,
            quiet: false,
            kernel_args: Vec::new(),
            arg0: entry.to_owned(),
            timeout: None,
        }
    }

    fn label(&self) -> String {
        format!("{}<<<{}, {}>>>", self.entry, self.grid, self.block)
    }
}

/// Load `ptx` and/or `cubin` (at least one), run the launch on each of its
/// devices and serve it. `Ok` is the process's exit code
/// ([`crate::exit_code::of`]: the kernel's `exit` code, its low 8 bits;
/// 134 after a panic or `abort`; 0 when it returned; 1 when output it did
/// not wait for could not be written; a fault's and a stop's as shells give
/// them), on several devices the first non-zero one in device order. `Err`
/// is one line saying what went wrong before the kernel ran, or (one device)
/// while it ran.
pub fn run(launch: &Launch, ptx: Option<&[u8]>, cubin: Option<&[u8]>) -> Result<u8, String> {
    let ordinals = match launch.devices.single() {
        Some(device) => vec![device],
        None => launch.devices.resolve(CudaBackend::device_count().map_err(|e| e.to_string())?)?,
    };
    match ordinals.as_slice() {
        [device] => run_one(launch, *device, ptx, cubin),
        several => run_several(launch, several, ptx, cubin),
    }
}

/// The runtime's configuration for `launch`. Ctrl-C or SIGTERM while the
/// kernel runs stores the signal in `stop`, which stops the serving, so
/// that the output already produced is written before the process ends.
/// (While the driver compiles, the default action ends the process at
/// once.)
fn config(launch: &Launch, stop: &Arc<AtomicUsize>) -> RuntimeConfig {
    RuntimeConfig {
        root: launch.root.clone(),
        queue: QueueConfig { buff_size: launch.buff_size, ..QueueConfig::DEFAULT },
        args: std::iter::once(launch.arg0.clone()).chain(launch.kernel_args.iter().cloned()).collect(),
        timeout: launch.timeout,
        stop: Some(stop.clone()),
        ..RuntimeConfig::default()
    }
}

/// CUDA device `ordinal` set up for `launch`.
fn backend(launch: &Launch, ordinal: usize) -> Result<CudaBackend, String> {
    let mut backend = CudaBackend::new(ordinal).map_err(|e| e.to_string())?;
    if launch.stack_size != DEFAULT_STACK_BYTES as u64 {
        backend.set_stack_size(launch.stack_size as usize).map_err(|e| e.to_string())?;
    }
    backend.set_max_registers(launch.max_registers);
    Ok(backend)
}

/// `load` with the notice of a slow first load of PTX.
fn load_noticed<T>(launch: &Launch, ptx: Option<&[u8]>, load: impl FnOnce() -> T) -> T {
    let notice = ptx.filter(|_| !launch.quiet).map(|ptx| slow_load_notice(&launch.program, ptx.len()));
    let loaded = load();
    drop(notice);
    loaded
}

/// `run` with SIGINT and SIGTERM storing their number in `stop`.
fn with_signals<T>(stop: &Arc<AtomicUsize>, run: impl FnOnce() -> T) -> Result<T, String> {
    let unregister = |handlers: Vec<_>| {
        for handler in handlers {
            signal_hook::low_level::unregister(handler);
        }
    };
    let mut handlers = Vec::new();
    for signal in [SIGINT, SIGTERM] {
        match signal_hook::flag::register_usize(signal, stop.clone(), signal as usize) {
            Ok(handler) => handlers.push(handler),
            Err(e) => {
                unregister(handlers);
                return Err(format!("cannot handle signal {signal}: {e}"));
            }
        }
    }
    let ran = run();
    unregister(handlers);
    Ok(ran)
}

fn run_one(launch: &Launch, device: usize, ptx: Option<&[u8]>, cubin: Option<&[u8]>) -> Result<u8, String> {
    let stop = Arc::new(AtomicUsize::new(0));
    let mut runtime = Runtime::new(backend(launch, device)?, config(launch, &stop)).map_err(|e| e.to_string())?;
    let started = Instant::now();
    load_noticed(launch, ptx, || match (ptx, cubin) {
        (Some(ptx), cubin) => runtime.load_best(ptx, cubin),
        (None, Some(cubin)) => runtime.load(cubin),
        (None, None) => Err(RuntimeError::NoModule),
    })
    .map_err(|e| e.to_string())?;
    let load = started.elapsed();
    let outcome = with_signals(&stop, || runtime.launch(&launch.entry, launch.grid, launch.block))?;
    tell(launch, None, &outcome, load)?;
    if let Err(RuntimeError::Stopped { .. }) = outcome {
        // Dropping the runtime would free device memory, which waits
        // for the kernel to finish: the process's exit tears it down.
        std::mem::forget(runtime);
    }
    Ok(exit_code::of(&outcome))
}

/// The launch on each device of `ordinals` at once ([`Devices`]): one line
/// each on stderr, prefixed with the device, and a setup error names its
/// device.
fn run_several(launch: &Launch, ordinals: &[usize], ptx: Option<&[u8]>, cubin: Option<&[u8]>) -> Result<u8, String> {
    let backends: Result<Vec<_>, String> =
        ordinals.iter().map(|&d| backend(launch, d).map_err(|e| format!("device {d}: {e}"))).collect();
    let stop = Arc::new(AtomicUsize::new(0));
    let mut devices = Devices::new(backends?, config(launch, &stop)).map_err(|e| e.to_string())?;
    let loads = load_noticed(launch, ptx, || match (ptx, cubin) {
        (Some(ptx), cubin) => devices.load_best(ptx, cubin),
        (None, Some(cubin)) => devices.load(cubin),
        (None, None) => Err(DeviceError { device: 0, error: RuntimeError::NoModule }),
    })
    .map_err(|e| format!("device {}: {}", ordinals.get(e.device).copied().unwrap_or(e.device), e.error))?;
    let report = with_signals(&stop, || devices.launch(&launch.entry, launch.grid, launch.block))?;
    for ((outcome, &device), &load) in report.devices.iter().zip(ordinals).zip(&loads) {
        if let Err(message) = tell(launch, Some(device), outcome, load) {
            eprintln!("{}: {message}", launch.program);
        }
    }
    if report.any_stopped() {
        // As for one device: the process's exit tears the kernels down.
        std::mem::forget(devices);
    }
    Ok(report.exit_code())
}

/// Say how one device's launch ended: one line on stderr (none for a
/// clean end under `--quiet`), a second when output was lost. `Err`: the
/// run failed before or outside the kernel (the message, for the caller to
/// print).
fn tell(
    launch: &Launch,
    device: Option<usize>,
    outcome: &Result<RunReport, RuntimeError>,
    load: Duration,
) -> Result<(), String> {
    let program = &launch.program;
    let label = match device {
        Some(d) => format!("device {d}: {}", launch.label()),
        None => launch.label(),
    };
    match outcome {
        Ok(report) => {
            if !launch.quiet {
                let load_ms = load.as_secs_f64() * 1e3;
                eprintln!("{program}: {label}: {}; module loaded in {load_ms:.1} ms", summary(report));
            }
            if let Some((op, errno)) = &report.first_unanswered {
                // Output the kernel did not wait for (stdout/stderr writes)
                // was lost on the host: say so (and the code is not 0).
                eprintln!(
                    "{program}: {label}: {} {} the kernel did not wait for failed on the host (first: {op}: {})",
                    report.unanswered_errors,
                    if report.unanswered_errors == 1 { "call" } else { "calls" },
                    errno.name().unwrap_or("unknown errno"),
                );
            }
        }
        Err(RuntimeError::KernelFailed { message, report }) => {
            // One line: which kernel, which grid, what the driver said, and
            // what may have caused it; the output before it is written.
            let hint = stack_hint(message, launch.stack_size);
            eprintln!("{program}: {label}: kernel failed: {message}; {}{hint}", calls_summary(report));
        }
        Err(RuntimeError::Stopped { reason, report }) => {
            eprintln!("{program}: {label}: {reason}; {}; the kernel was still running", calls_summary(report));
        }
        Err(e) => {
            return Err(match device {
                Some(d) => format!("device {d}: {e}"),
                None => e.to_string(),
            })
        }
    }
    Ok(())
}

/// Say why the start is slow if loading takes more than a moment: the
/// driver compiles PTX it has not seen before (seconds to a minute for a std
/// kernel) and the runtime caches the result, so later runs start at once.
/// Dropping the guard cancels the notice.
fn slow_load_notice(program: &str, bytes: usize) -> std::sync::mpsc::Sender<()> {
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let program = program.to_owned();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(Duration::from_secs(2)) {
            eprintln!(
                "{program}: the CUDA driver is compiling {:.1} MB of PTX for this GPU; the first run of a \
                 new kernel takes a while (seconds for culinux, 10-15 s for a kernel using regex, on an \
                 H200), later runs load the compiled code from the JIT cache (a cubin from \
                 `hostcall-build` needs no wait at all)",
                bytes as f64 / 1e6
            );
        }
    });
    done
}

/// A thread that runs off its stack ends the kernel with an illegal address,
/// like a wild pointer: say which limit may be the cause. Seen with `regex`,
/// whose `Regex::new` needs 20-24 KiB of the default 16 KiB.
pub fn stack_hint(message: &str, stack_bytes: u64) -> String {
    if !["CUDA_ERROR_ILLEGAL_ADDRESS", "CUDA_ERROR_HARDWARE_STACK_ERROR"].iter().any(|e| message.contains(e)) {
        return String::new();
    }
    let bigger = (stack_bytes * 2).min(1 << 19);
    format!(
        " (a stack overflow ends a kernel this way too: each GPU thread has {stack_bytes} bytes of stack; \
         try --stack-size {bigger})"
    )
}

/// One line: calls, time, calls by op, errors, how the kernel ended.
pub fn summary(report: &RunReport) -> String {
    let end = match (report.exit_code, report.aborted) {
        (_, true) => "aborted (exit code 134)".to_string(),
        (Some(code), false) => format!("exit code {code}"),
        (None, false) => "returned".to_string(),
    };
    format!("{}; {end}", calls_summary(report))
}

/// Calls, time, calls by op, errors.
fn calls_summary(report: &RunReport) -> String {
    let ops: Vec<String> = report.per_op.iter().map(|(name, n)| format!("{name} {n}")).collect();
    format!(
        "{} hostcalls in {:.1} ms ({}), {} errors",
        report.calls,
        report.elapsed.as_secs_f64() * 1e3,
        if ops.is_empty() { "none".to_string() } else { ops.join(", ") },
        report.errors,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_illegal_address_names_the_stack_limit() {
        let hint = stack_hint("CUDA_ERROR_ILLEGAL_ADDRESS (an illegal memory access was encountered)", 16384);
        assert!(hint.contains("16384 bytes of stack") && hint.ends_with("try --stack-size 32768)"), "{hint}");
        assert!(!hint.contains('\n'), "one line: {hint}");
        assert_eq!(stack_hint("CUDA_ERROR_LAUNCH_FAILED (unspecified launch failure)", 16384), "");
        assert!(stack_hint("CUDA_ERROR_ILLEGAL_ADDRESS", 1 << 19).ends_with("try --stack-size 524288)"));
    }
}
