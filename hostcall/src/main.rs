//! `hostcall`: a GPU kernel crate from nothing to running, one command each.
//!
//! * `hostcall new NAME`: a kernel crate that builds and runs as it is;
//! * `hostcall build [PATH]`: PTX, and a cubin when a `ptxas` is found, with
//!   their paths and SHA-256;
//! * `hostcall run [PATH] [-- ARGS]`: build (incrementally), load, run on
//!   the GPU and serve its hostcalls; stdin, stdout, stderr, arguments, the
//!   environment and the exit code pass through as if it ran on the CPU.
//!
//! Builds go to `PATH/target/hostcall/`; the pipeline (the pinned nightly,
//! the nvptx sysroot) is `hostcall-build`'s, and loading and serving are
//! `hostcall_runtime::launcher`'s, as for `hostcalls_bin`.

mod new;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use hostcall_build::{build_ptx, cubin_path, ptx_summary, BuildError, OptLevel, PtxOptions, DEFAULT_MAX_REGISTERS};
use hostcall_runtime::backend::cuda::DEFAULT_STACK_BYTES;
use hostcall_runtime::devices::DeviceList;
use hostcall_runtime::launcher::{self, Launch};

/// Make, build and run GPU kernels written in Rust with std.
#[derive(Parser, Debug)]
#[command(
    name = "hostcall",
    version,
    after_help = "Environment: HOSTCALL_DEBUG=1 traces every hostcall and says how the module \
    loaded; HOSTCALL_JIT_CACHE=DIR (or 0: off) moves the cache of compiled PTX (default \
    ~/.cache/hostcall/jit); PTXAS=PATH picks the ptxas that builds cubins."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write NAME/, a kernel crate that builds and runs as it is (std, one
    /// entry point, a test that `cargo test` runs on the CPU).
    New {
        /// The crate's name (and directory).
        name: String,
    },
    /// Build a kernel crate: PTX, and a cubin when a ptxas is found; print
    /// their paths and SHA-256.
    Build {
        #[command(flatten)]
        krate: CrateArgs,
    },
    /// Build a kernel crate (incrementally), run it on the GPU and serve it.
    Run {
        #[command(flatten)]
        krate: CrateArgs,
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Args, Debug)]
struct CrateArgs {
    /// The kernel crate's directory.
    #[arg(default_value = ".")]
    path: PathBuf,
    /// The binary whose `fn main()` runs on the GPU, on every thread
    /// [default: the crate's lib when it has one, else its only binary].
    #[arg(long)]
    bin: Option<String>,
    /// 1, 2, 3, s or z: z makes the smallest PTX and the fastest first load;
    /// 3 suits kernels that compute more than they call the host.
    #[arg(long, default_value = "z", value_parser = parse_opt_level)]
    opt_level: OptLevel,
    /// Registers per thread the cubin may use, at most (64 lets every entry
    /// point launch 1024-thread blocks).
    #[arg(long, default_value_t = DEFAULT_MAX_REGISTERS, value_parser = clap::value_parser!(u32).range(16..=255))]
    max_registers: u32,
    /// GPU architecture the code is built for.
    #[arg(long, default_value = "sm_90")]
    arch: String,
    /// No build progress or summary lines on stderr.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The entry point to launch; needed only when the crate has several.
    #[arg(long)]
    entry: Option<String>,
    /// Blocks in the (1-D) grid.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65535))]
    grid: u32,
    /// Threads per block.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    block: u32,
    /// Directory the kernel's file calls are confined to (its `/`).
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
    #[arg(long, default_value_t = DEFAULT_STACK_BYTES as u64, value_parser = clap::value_parser!(u64).range(1024..=(1 << 20)))]
    stack_size: u64,
    /// Stop the kernel after SECS seconds (exit 124), writing the output
    /// it produced; Ctrl-C and SIGTERM stop it the same way (exit 130, 143).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    timeout: Option<std::time::Duration>,
    /// Run what the last `hostcall build` of the crate wrote, without
    /// building (a machine with the GPU but no Rust toolchain).
    #[arg(long)]
    no_build: bool,
    /// Arguments for the kernel: `std::env::args()` on the GPU sees the
    /// entry point's name (a binary's own name), then these.
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

fn parse_opt_level(text: &str) -> Result<OptLevel, String> {
    text.parse().map_err(|e: BuildError| e.to_string())
}

/// A built kernel: its PTX and, when there is one, its cubin.
struct Built {
    ptx: PathBuf,
    cubin: Option<PathBuf>,
    entries: Vec<String>,
}

/// The crate's directory, checked, and where its builds go
/// (`target/hostcall/<directory name or --bin>.ptx`).
fn crate_dir(krate: &CrateArgs) -> Result<(PathBuf, PathBuf), String> {
    let path = &krate.path;
    let dir = path.canonicalize().map_err(|e| format!("{}: {e}", path.display()))?;
    if !dir.join("Cargo.toml").is_file() {
        return Err(format!(
            "{}: no Cargo.toml here (give a kernel crate's directory; `hostcall new NAME` makes one)",
            path.display()
        ));
    }
    let stem = match &krate.bin {
        Some(bin) => bin.clone(),
        None => dir.file_name().and_then(|n| n.to_str()).unwrap_or("kernel").to_owned(),
    };
    let ptx = dir.join("target/hostcall").join(format!("{stem}.ptx"));
    Ok((dir, ptx))
}

fn build(krate: &CrateArgs) -> Result<Built, String> {
    let (dir, ptx) = crate_dir(krate)?;
    let mut options = PtxOptions::new(&dir);
    options.out = ptx;
    options.bin = krate.bin.clone();
    (options.arch, options.opt_level, options.max_registers) =
        (krate.arch.clone(), krate.opt_level, krate.max_registers);
    options.verbose = !krate.quiet;
    let artifact = build_ptx(&options).map_err(|e| e.to_string())?;
    Ok(Built { ptx: artifact.path, cubin: artifact.cubin.map(|c| c.path), entries: artifact.summary.entries })
}

/// What an earlier `hostcall build` left (`--no-build`).
fn prebuilt(krate: &CrateArgs) -> Result<Built, String> {
    let (_, ptx) = crate_dir(krate)?;
    let text = std::fs::read_to_string(&ptx)
        .map_err(|e| format!("{}: {e} (run `hostcall build` on a machine with Rust first)", ptx.display()))?;
    let cubin = Some(cubin_path(&ptx, &krate.arch)).filter(|c| c.is_file());
    Ok(Built { entries: ptx_summary(&text).entries, ptx, cubin })
}

/// `--entry`, or the crate's only entry point.
fn pick_entry(asked: Option<&str>, entries: &[String]) -> Result<String, String> {
    match (asked, entries) {
        (Some(e), _) if entries.iter().any(|x| x == e) => Ok(e.to_owned()),
        (Some(e), _) => Err(format!("no entry point `{e}` in the kernel (it has: {})", list(entries))),
        (None, [only]) => Ok(only.clone()),
        (None, []) => Err("the kernel has no entry point (a `#[no_mangle] pub extern \"ptx-kernel\" fn`)".into()),
        (None, _) => Err(format!("the kernel has several entry points; pick one with --entry: {}", list(entries))),
    }
}

fn list(entries: &[String]) -> String {
    if entries.is_empty() {
        "none".into()
    } else {
        entries.join(", ")
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn run(command: Command) -> Result<u8, String> {
    match command {
        Command::New { name } => {
            let dir = new::create(Path::new("."), &name)?;
            println!("created {} (entry point `{}`)", dir.display(), new::entry_name(&name));
            println!("run it on the GPU:  hostcall run {name}");
            println!("test it on the CPU: (cd {name} && cargo test)");
            Ok(0)
        }
        Command::Build { krate } => {
            let built = build(&krate)?;
            let ptx = read(&built.ptx)?;
            let cubin = built.cubin.as_deref().map(read).transpose()?;
            println!("{}", built.ptx.display());
            println!("sha256: {}", hostcall_build::bundle_sha256(&ptx, cubin.as_deref()));
            match &built.cubin {
                Some(c) => println!("cubin: {}", c.display()),
                None => println!("cubin: none (no ptxas found: the driver compiles the PTX on first load)"),
            }
            println!("entries: {}", list(&built.entries));
            Ok(0)
        }
        Command::Run { krate, run } => {
            let built = if run.no_build { prebuilt(&krate)? } else { build(&krate)? };
            let entry = pick_entry(run.entry.as_deref(), &built.entries)?;
            let ptx = read(&built.ptx)?;
            let cubin = built.cubin.as_deref().map(read).transpose()?;
            let launch = Launch {
                grid: run.grid,
                block: run.block,
                root: run.root,
                devices: run.devices.unwrap_or(DeviceList::These(vec![run.device])),
                stack_size: run.stack_size,
                max_registers: krate.max_registers,
                quiet: krate.quiet,
                timeout: run.timeout,
                kernel_args: run.kernel_args,
                // A binary's `main` sees its own name first, as on the CPU.
                arg0: match entry.as_str() {
                    hostcall_build::MAIN_ENTRY => {
                        built.ptx.file_stem().map_or(entry.clone(), |s| s.to_string_lossy().into_owned())
                    }
                    _ => entry.clone(),
                },
                ..Launch::new("hostcall", &entry)
            };
            launcher::run(&launch, Some(&ptx), cubin.as_deref())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("hostcall: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn one_entry_needs_no_flag_and_several_do() {
        let one = ["k_main".to_owned()];
        let two = ["a".to_owned(), "b".to_owned()];
        assert_eq!(pick_entry(None, &one).unwrap(), "k_main");
        assert!(pick_entry(None, &two).unwrap_err().contains("--entry: a, b"));
        assert_eq!(pick_entry(Some("b"), &two).unwrap(), "b");
        assert!(pick_entry(Some("c"), &two).unwrap_err().contains("no entry point `c`"));
        assert!(pick_entry(None, &[]).unwrap_err().contains("no entry point"));
    }

    #[test]
    fn run_takes_devices_as_a_list_or_all_and_not_with_device() {
        let run = |extra: &[&str]| {
            let cli = Cli::try_parse_from(["hostcall", "run", "k"].iter().chain(extra))?;
            let Command::Run { run, .. } = cli.command else { panic!("not run") };
            Ok::<_, clap::Error>(run)
        };
        assert_eq!(run(&["--devices", "1,0"]).unwrap().devices, Some(DeviceList::These(vec![1, 0])));
        assert_eq!(run(&["--devices", "all"]).unwrap().devices, Some(DeviceList::All));
        assert_eq!(run(&[]).unwrap().devices, None);
        assert!(run(&["--devices", ""]).unwrap_err().to_string().contains("is not a list of devices"));
        assert!(run(&["--devices", "2,2"]).unwrap_err().to_string().contains("names device 2 twice"));
        let both = run(&["--devices", "0,1", "--device", "1"]).unwrap_err();
        assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn run_takes_kernel_args_after_the_separator() {
        let cli = Cli::try_parse_from(["hostcall", "run", "k", "--grid", "2", "--", "--grid", "x"]).unwrap();
        let Command::Run { krate, run } = cli.command else { panic!("not run") };
        assert_eq!((krate.path, run.grid, run.kernel_args), (PathBuf::from("k"), 2, vec!["--grid".into(), "x".into()]));
    }
}
