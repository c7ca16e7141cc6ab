//! Run a kernel image on a CUDA device the way a command-line tool does:
//! load it (cubin when it suits the GPU, else PTX), launch, serve, and turn
//! the outcome into a process exit code and one summary line. Both
//! `hostcalls_bin` and `hostcall run` are this plus their argument parsing.

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::backend::cuda::{CudaBackend, DEFAULT_STACK_BYTES};
pub use crate::exit_code::{exit_byte, fault_code, stop_code};
use crate::{QueueConfig, RunReport, Runtime, RuntimeConfig, RuntimeError};

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
    pub device: usize,
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
            device: 0,
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

/// Load `ptx` and/or `cubin` (at least one), run the launch and serve it.
/// `Ok` is the process's exit code: the kernel's `exit` code (its low 8
/// bits; 134 after a panic or `abort`), 0 when it returned, and 1 when
/// output it did not wait for could not be written. `Err` is one line
/// saying what went wrong before or while the kernel ran.
pub fn run(launch: &Launch, ptx: Option<&[u8]>, cubin: Option<&[u8]>) -> Result<u8, String> {
    let mut backend = CudaBackend::new(launch.device).map_err(|e| e.to_string())?;
    if launch.stack_size != DEFAULT_STACK_BYTES as u64 {
        backend.set_stack_size(launch.stack_size as usize).map_err(|e| e.to_string())?;
    }
    backend.set_max_registers(launch.max_registers);
    let queue = QueueConfig { buff_size: launch.buff_size, ..QueueConfig::DEFAULT };
    let args = std::iter::once(launch.arg0.clone()).chain(launch.kernel_args.iter().cloned()).collect();
    // Ctrl-C or SIGTERM while the kernel runs stops the serving, so that the
    // output already produced is written before the process ends. (While
    // the driver compiles, the default action ends the process at once.)
    let stop = Arc::new(AtomicUsize::new(0));
    let config = RuntimeConfig {
        root: launch.root.clone(),
        queue,
        args,
        timeout: launch.timeout,
        stop: Some(stop.clone()),
        ..RuntimeConfig::default()
    };
    let mut runtime = Runtime::new(backend, config).map_err(|e| e.to_string())?;
    let notice = ptx.filter(|_| !launch.quiet).map(|ptx| slow_load_notice(&launch.program, ptx.len()));
    let started = Instant::now();
    let loaded = match (ptx, cubin) {
        (Some(ptx), cubin) => runtime.load_best(ptx, cubin),
        (None, Some(cubin)) => runtime.load(cubin),
        (None, None) => Err(RuntimeError::NoModule),
    };
    drop(notice);
    loaded.map_err(|e| e.to_string())?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let (program, label) = (&launch.program, launch.label());
    let mut handlers = Vec::new();
    for signal in [SIGINT, SIGTERM] {
        handlers.push(
            signal_hook::flag::register_usize(signal, stop.clone(), signal as usize)
                .map_err(|e| format!("cannot handle signal {signal}: {e}"))?,
        );
    }
    let launched = runtime.launch(&launch.entry, launch.grid, launch.block);
    for handler in handlers {
        signal_hook::low_level::unregister(handler);
    }
    match launched {
        Ok(report) => {
            if !launch.quiet {
                eprintln!("{program}: {label}: {}; module loaded in {load_ms:.1} ms", summary(&report));
            }
            let code = exit_byte(report.exit_code.unwrap_or(0));
            if let Some((op, errno)) = &report.first_unanswered {
                // Output the kernel did not wait for (stdout/stderr writes)
                // was lost on the host: say so, and do not exit 0.
                eprintln!(
                    "{program}: {label}: {} {} the kernel did not wait for failed on the host (first: {op}: {})",
                    report.unanswered_errors,
                    if report.unanswered_errors == 1 { "call" } else { "calls" },
                    errno.name().unwrap_or("unknown errno"),
                );
                return Ok(if code == 0 { 1 } else { code });
            }
            Ok(code)
        }
        Err(RuntimeError::KernelFailed { message, report }) => {
            // One line: which kernel, which grid, what the driver said, and
            // what may have caused it; the output before it is written.
            let hint = stack_hint(&message, launch.stack_size);
            eprintln!("{program}: {label}: kernel failed: {message}; {}{hint}", calls_summary(&report));
            Ok(fault_code(&message))
        }
        Err(RuntimeError::Stopped { reason, report }) => {
            eprintln!("{program}: {label}: {reason}; {}; the kernel was still running", calls_summary(&report));
            // Dropping the runtime would free device memory, which waits
            // for the kernel to finish: the process's exit tears it down.
            std::mem::forget(runtime);
            Ok(stop_code(reason))
        }
        Err(e) => Err(e.to_string()),
    }
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
