//! Run a kernel image on a CUDA device the way a command-line tool does:
//! load it (cubin when it suits the GPU, else PTX), launch, serve, and turn
//! the outcome into a process exit code and one summary line. Both
//! `hostcalls_bin` and `hostcall run` are this plus their argument parsing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::backend::cuda::{CudaBackend, DEFAULT_STACK_BYTES};
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
    /// `std::env::args()` on the device after the entry's name.
    pub kernel_args: Vec<String>,
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
    let args = std::iter::once(launch.entry.clone()).chain(launch.kernel_args.iter().cloned()).collect();
    let config = RuntimeConfig { root: launch.root.clone(), queue, args, ..RuntimeConfig::default() };
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
    match runtime.launch(&launch.entry, launch.grid, launch.block) {
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
            eprintln!("{program}: {label}: {}", summary(&report));
            Err(format!("kernel failed: {message}{}", stack_hint(&message, launch.stack_size)))
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
                 new kernel takes a while (seconds for culinux, a minute for a kernel using regex, on an \
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
    if !message.contains("CUDA_ERROR_ILLEGAL_ADDRESS") {
        return String::new();
    }
    let bigger = (stack_bytes * 2).min(1 << 19);
    format!(
        "\n  (a stack overflow ends a kernel this way too: each GPU thread has {stack_bytes} bytes of stack; \
         try --stack-size {bigger})"
    )
}

/// `exit(code)` on the device becomes the process's status, as on Linux: the
/// low 8 bits.
pub fn exit_byte(code: i32) -> u8 {
    (code & 0xff) as u8
}

/// One line: calls, time, calls by op, errors, how the kernel ended.
pub fn summary(report: &RunReport) -> String {
    let ops: Vec<String> = report.per_op.iter().map(|(name, n)| format!("{name} {n}")).collect();
    let end = match (report.exit_code, report.aborted) {
        (_, true) => "aborted (exit code 134)".to_string(),
        (Some(code), false) => format!("exit code {code}"),
        (None, false) => "returned".to_string(),
    };
    format!(
        "{} hostcalls in {:.1} ms ({}), {} errors; {end}",
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
        assert_eq!(stack_hint("CUDA_ERROR_LAUNCH_FAILED (unspecified launch failure)", 16384), "");
        assert!(stack_hint("CUDA_ERROR_ILLEGAL_ADDRESS", 1 << 19).ends_with("try --stack-size 524288)"));
    }

    #[test]
    fn exit_codes_keep_their_low_byte() {
        assert_eq!((exit_byte(0), exit_byte(3), exit_byte(256 + 7), exit_byte(-1)), (0, 3, 7, 255));
    }
}
