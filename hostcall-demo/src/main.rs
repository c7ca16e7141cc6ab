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
use hostcall_runtime::devices::DeviceList;
use hostcall_runtime::launcher::{self, Launch};
use hostcall_runtime::QueueConfig;

/// Run a Rust-with-std GPU kernel and serve its hostcalls (println!, files,
/// stdin, env, clocks, exit).
#[derive(Parser, Debug)]
#[command(
    name = "hostcalls_bin",
    version,
    after_help = "Environment: HOSTCALL_DEBUG=1 traces every hostcall and says how the module \
    loaded; HOSTCALL_JIT_CACHE=DIR (or 0: off) moves the cache of compiled PTX (default \
    ~/.cache/hostcall/jit); HOSTCALL_JIT_OPT_LEVEL=0..4 trades the driver's PTX compile time \
    for code speed (default 4; 1 for PTX over 4 MiB); PTX goes to the driver in pieces \
    (one per whole 720 KiB, at most 16), which it compiles faster than one module; \
    HOSTCALL_JIT_PIECES=N sets N (1: whole)."
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
    /// Run on several CUDA devices at once, each the whole launch: `all`, or
    /// device numbers separated by commas (0,1). Each kernel reads its index
    /// in the list from HOSTCALL_DEVICE (`hostcall_thread::device()`) and
    /// the count from HOSTCALL_DEVICES; they share stdin, stdout and stderr
    /// (lines stay whole) and the root; the exit code is the first non-zero
    /// one in device order.
    #[arg(long, value_name = "LIST", conflicts_with = "device")]
    devices: Option<DeviceList>,
    /// Stack bytes per GPU thread (std needs a few KiB; deep recursion more).
    #[arg(long, default_value_t = hostcall_runtime::backend::cuda::DEFAULT_STACK_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1024..=(1 << 20)))]
    stack_size: u64,
    /// Stop the kernel after SECS seconds (exit 124), writing the output
    /// it produced; Ctrl-C and SIGTERM stop it the same way (exit 130, 143).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    timeout: Option<std::time::Duration>,
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

/// `--timeout`: seconds, fractions allowed, more than 0.
fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    match text.parse::<f64>().map(std::time::Duration::try_from_secs_f64) {
        Ok(Ok(t)) if !t.is_zero() => Ok(t),
        _ => Err(format!("`{text}` is not a usable timeout: give seconds, more than 0")),
    }
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
    let launch = Launch {
        grid: args.grid,
        block: args.block,
        root: args.root.clone(),
        devices: args.devices.clone().unwrap_or(DeviceList::These(vec![args.device])),
        stack_size: args.stack_size,
        max_registers: args.max_registers,
        buff_size: args.buff_size,
        quiet: args.quiet,
        timeout: args.timeout,
        kernel_args: args.kernel_args.clone(),
        ..Launch::new("hostcalls_bin", &args.entry)
    };
    launcher::run(&launch, ptx.as_deref(), cubin.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Args::command().debug_assert();
    }

    #[test]
    fn devices_take_a_list_or_all_and_not_with_device() {
        let parse = |extra: &[&str]| Args::try_parse_from(["hostcalls_bin"].iter().chain(extra));
        assert_eq!(parse(&["--devices", "0,1"]).unwrap().devices, Some(DeviceList::These(vec![0, 1])));
        assert_eq!(parse(&["--devices", "all"]).unwrap().devices, Some(DeviceList::All));
        assert_eq!(parse(&["--device", "1"]).unwrap().devices, None);
        assert!(parse(&["--devices", "0,0"]).unwrap_err().to_string().contains("names device 0 twice"));
        assert!(parse(&["--devices", "one"]).unwrap_err().to_string().contains("is not a list of devices"));
        let both = parse(&["--device", "1", "--devices", "all"]).unwrap_err();
        assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
