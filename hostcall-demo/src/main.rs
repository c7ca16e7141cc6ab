//! `hostcalls_bin`: run a GPU kernel built with std and serve its hostcalls.
//!
//! By default it runs the `culinux` demo, whose PTX and cubin are embedded at
//! build time (checked against their SHA-256 before loading; the cubin is
//! loaded when it matches the GPU, else the PTX). `--ptx` and `--cubin` run
//! any other kernel built by `hostcall-build`. The process exits with the
//! code the kernel passed to `exit` (134 after a panic or `abort`, 0 when it
//! simply returned); setup errors print one line and exit 1.

use hostcall_demo::ptx;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hostcall_runtime::backend::cuda::CudaBackend;
use hostcall_runtime::{QueueConfig, RunReport, Runtime, RuntimeConfig, RuntimeError};

/// Run a Rust-with-std GPU kernel and serve its hostcalls (println!, files,
/// stdin, env, clocks, exit).
#[derive(Parser, Debug)]
#[command(
    name = "hostcalls_bin",
    version,
    after_help = "Environment: HOSTCALL_DEBUG=1 traces every hostcall and says how the module \
    loaded; HOSTCALL_JIT_CACHE=DIR (or 0: off) moves the cache of compiled PTX (default \
    ~/.cache/hostcall/jit); HOSTCALL_JIT_OPT_LEVEL=0..4 trades the driver's PTX compile time \
    for code speed (default 4)."
)]
struct Args {
    /// Kernel entry point to launch.
    #[arg(long, default_value = "culinux_main")]
    entry: String,
    /// Blocks in the (1-D) grid.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=65535))]
    grid: u32,
    /// Threads per block.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    block: u32,
    /// Run this PTX file instead of the embedded culinux demo (the driver
    /// compiles it on first use; the result is cached, see HOSTCALL_JIT_CACHE).
    #[arg(long)]
    ptx: Option<PathBuf>,
    /// Run this cubin (from `hostcall-build`, or any ptxas); with --ptx, the
    /// PTX is the fallback when the cubin does not suit the GPU.
    #[arg(long)]
    cubin: Option<PathBuf>,
    /// Load the PTX even when a cubin is there (to measure or compare the JIT).
    #[arg(long)]
    ptx_only: bool,
    /// Registers per thread, at most, when the driver compiles PTX (64 allows
    /// 1024-thread blocks; a cubin keeps what its build gave it).
    #[arg(long, default_value_t = hostcall_runtime::hostcall_image::DEFAULT_MAX_REGISTERS,
          value_parser = clap::value_parser!(u32).range(16..=255))]
    max_registers: u32,
    /// Directory the kernel's file calls are confined to.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    device: usize,
    /// Stack bytes per GPU thread (std needs a few KiB; deep recursion more).
    #[arg(long, default_value_t = hostcall_runtime::backend::cuda::DEFAULT_STACK_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1024..=(1 << 20)))]
    stack_size: u64,
    /// Bytes per command buffer (power of two, >= 8192).
    #[arg(long, default_value_t = QueueConfig::DEFAULT.buff_size)]
    buff_size: u64,
    /// Print the SHA-256 of the image (PTX and cubin together), then of each, and exit.
    #[arg(long)]
    print_hash: bool,
    /// No summary line on stderr.
    #[arg(short, long)]
    quiet: bool,
    /// Arguments for the kernel: `std::env::args()` on the GPU sees the entry
    /// point's name, then these.
    #[arg(last = true, value_name = "KERNEL_ARGS")]
    kernel_args: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("hostcalls_bin: {message}");
            ExitCode::FAILURE
        }
    }
}

/// What to run: the PTX, its cubin, or both (at least one).
struct Image {
    ptx: Option<Vec<u8>>,
    cubin: Option<Vec<u8>>,
}

/// The files named by `--ptx`/`--cubin`, else the embedded demo (verified).
fn image(args: &Args) -> Result<Image, String> {
    let read = |path: &PathBuf| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    if args.ptx.is_some() || args.cubin.is_some() {
        let ptx = args.ptx.as_ref().map(read).transpose()?;
        let cubin = args.cubin.as_ref().map(read).transpose()?;
        return Ok(Image { ptx, cubin });
    }
    let cubin = ptx::cubin();
    ptx::verify(ptx::PTX, cubin, ptx::SHA256)?;
    Ok(Image { ptx: Some(ptx::PTX.to_vec()), cubin: cubin.map(<[u8]>::to_vec) })
}

/// `--print-hash`. A closed stdout (`| head -1`) ends the listing quietly.
fn print_hash(image: &Image) {
    use hostcall_runtime::hostcall_image::{bundle_sha256, sha256_hex};
    use std::io::Write;
    let (ptx, cubin) = (image.ptx.as_deref(), image.cubin.as_deref());
    let mut lines: Vec<String> = ptx.map(|p| format!("image {}", bundle_sha256(p, cubin))).into_iter().collect();
    for (name, bytes) in [("ptx", ptx), ("cubin", cubin)] {
        lines.push(match bytes {
            Some(b) => format!("{name} {}  {} bytes", sha256_hex(b), b.len()),
            None => format!("{name} none"),
        });
    }
    let _ = writeln!(std::io::stdout().lock(), "{}", lines.join("\n"));
}

fn run(args: &Args) -> Result<u8, String> {
    let image = image(args)?;
    if args.print_hash {
        print_hash(&image);
        return Ok(0);
    }
    let Image { ptx, cubin } = image;
    let cubin = cubin.filter(|_| !args.ptx_only || ptx.is_none());
    let queue = QueueConfig { buff_size: args.buff_size, ..QueueConfig::DEFAULT };

    let mut backend = CudaBackend::new(args.device).map_err(|e| e.to_string())?;
    if args.stack_size != hostcall_runtime::backend::cuda::DEFAULT_STACK_BYTES as u64 {
        backend.set_stack_size(args.stack_size as usize).map_err(|e| e.to_string())?;
    }
    backend.set_max_registers(args.max_registers);
    let kernel_args = std::iter::once(args.entry.clone()).chain(args.kernel_args.iter().cloned()).collect();
    let config = RuntimeConfig { root: args.root.clone(), queue, args: kernel_args, ..RuntimeConfig::default() };
    let mut runtime = Runtime::new(backend, config).map_err(|e| e.to_string())?;
    let loading = ptx.as_ref().filter(|_| !args.quiet).map(|ptx| slow_load_notice(ptx.len()));
    let started = std::time::Instant::now();
    let loaded = match (&ptx, &cubin) {
        (Some(ptx), cubin) => runtime.load_best(ptx, cubin.as_deref()),
        (None, Some(cubin)) => runtime.load(cubin),
        (None, None) => Err(hostcall_runtime::RuntimeError::NoModule),
    };
    drop(loading);
    loaded.map_err(|e| e.to_string())?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let label = format!("{}<<<{}, {}>>>", args.entry, args.grid, args.block);
    match runtime.launch(&args.entry, args.grid, args.block) {
        Ok(report) => {
            if !args.quiet {
                eprintln!("hostcalls_bin: {label}: {}; module loaded in {load_ms:.1} ms", summary(&report));
            }
            let code = exit_byte(report.exit_code.unwrap_or(0));
            if let Some((op, errno)) = &report.first_unanswered {
                // Output the kernel did not wait for (stdout/stderr writes) was
                // lost on the host: say so, and do not exit 0.
                eprintln!(
                    "hostcalls_bin: {label}: {} {} the kernel did not wait for failed on the host (first: {op}: {})",
                    report.unanswered_errors,
                    if report.unanswered_errors == 1 { "call" } else { "calls" },
                    errno.name().unwrap_or("unknown errno"),
                );
                return Ok(if code == 0 { 1 } else { code });
            }
            Ok(code)
        }
        Err(RuntimeError::KernelFailed { message, report }) => {
            eprintln!("hostcalls_bin: {label}: {}", summary(&report));
            Err(format!("kernel failed: {message}{}", stack_hint(&message, args.stack_size)))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Say why the start is slow if loading takes more than a moment: the
/// driver compiles PTX it has not seen before (seconds to a minute for a std
/// kernel) and the runtime caches the result, so later runs start at once.
/// Dropping the guard cancels the notice.
fn slow_load_notice(bytes: usize) -> std::sync::mpsc::Sender<()> {
    let (done, wait) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(std::time::Duration::from_secs(2)) {
            eprintln!(
                "hostcalls_bin: the CUDA driver is compiling {:.1} MB of PTX for this GPU; the first run of a \
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
fn stack_hint(message: &str, stack_bytes: u64) -> String {
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
fn exit_byte(code: i32) -> u8 {
    (code & 0xff) as u8
}

fn summary(report: &RunReport) -> String {
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
}
