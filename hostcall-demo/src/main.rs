//! `hostcalls_bin`: run a GPU kernel built with std and serve its hostcalls.
//!
//! By default it runs the `culinux` demo, whose PTX is embedded at build time
//! (checked against its SHA-256 before loading). `--ptx` runs any other
//! kernel built by `hostcall-build`. The process exits with the code the
//! kernel passed to `exit` (134 after a panic or `abort`, 0 when it simply
//! returned); setup errors print one line and exit 1.

mod ptx;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hostcall_runtime::backend::cuda::CudaBackend;
use hostcall_runtime::hostcall_abi::Geometry;
use hostcall_runtime::{RunReport, Runtime, RuntimeConfig, RuntimeError};

/// Run a Rust-with-std GPU kernel and serve its hostcalls (println!, files,
/// stdin, env, clocks, exit).
#[derive(Parser, Debug)]
#[command(name = "hostcalls_bin", version, after_help = "Set HOSTCALL_DEBUG=1 to trace every hostcall.")]
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
    /// Run this PTX file instead of the embedded culinux demo.
    #[arg(long)]
    ptx: Option<PathBuf>,
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
    /// Bytes per command buffer (power of two, >= 4096).
    #[arg(long, default_value_t = Geometry::DEFAULT.buff_size)]
    buff_size: u64,
    /// Return slots (multiple of 64).
    #[arg(long, default_value_t = Geometry::DEFAULT.slot_count)]
    slots: u64,
    /// Print the embedded PTX's SHA-256 and size, then exit.
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

fn run(args: &Args) -> Result<u8, String> {
    let image = match &args.ptx {
        Some(path) => std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => {
            ptx::verify(ptx::PTX, ptx::PTX_SHA256)?;
            ptx::PTX.to_vec()
        }
    };
    if args.print_hash {
        println!("{}  {} bytes", ptx::sha256_hex(&image), image.len());
        return Ok(0);
    }
    let text = String::from_utf8(image).map_err(|_| "the PTX is not UTF-8 text".to_string())?;
    let geometry = Geometry { buff_size: args.buff_size, slot_count: args.slots, ..Geometry::DEFAULT };
    geometry.validate().map_err(|e| format!("bad queue geometry {geometry:?}: {e:?}"))?;

    let mut backend = CudaBackend::new(args.device).map_err(|e| e.to_string())?;
    if args.stack_size != hostcall_runtime::backend::cuda::DEFAULT_STACK_BYTES as u64 {
        backend.set_stack_size(args.stack_size as usize).map_err(|e| e.to_string())?;
    }
    let kernel_args = std::iter::once(args.entry.clone()).chain(args.kernel_args.iter().cloned()).collect();
    let config = RuntimeConfig { root: args.root.clone(), geometry, args: kernel_args, ..RuntimeConfig::default() };
    let mut runtime = Runtime::new(backend, config).map_err(|e| e.to_string())?;
    let loading = (!args.quiet).then(|| slow_load_notice(text.len()));
    let loaded = runtime.load(&text);
    drop(loading);
    loaded.map_err(|e| e.to_string())?;
    let label = format!("{}<<<{}, {}>>>", args.entry, args.grid, args.block);
    match runtime.launch(&args.entry, args.grid, args.block) {
        Ok(report) => {
            if !args.quiet {
                eprintln!("hostcalls_bin: {label}: {}", summary(&report));
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
            Err(format!("kernel failed: {message}"))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Say why the start is slow if loading takes more than a moment: the
/// driver compiles PTX it has not seen before (minutes for a std kernel) and
/// caches the result, so later runs start at once. Dropping the guard
/// cancels the notice.
fn slow_load_notice(bytes: usize) -> std::sync::mpsc::Sender<()> {
    let (done, wait) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(std::time::Duration::from_secs(2)) {
            eprintln!(
                "hostcalls_bin: the CUDA driver is compiling {:.1} MB of PTX for this GPU; the first run of a \
                 new kernel takes a while (about 30 s for culinux on an H100 host), later runs reuse \
                 the driver's cache",
                bytes as f64 / 1e6
            );
        }
    });
    done
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
