//! `hostcall-build`: the PTX pipeline from the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use hostcall_build::{
    build_cubin, build_ptx, bundle_sha256, cubin_path, link_ptx, ptx_summary, run_ptxas, BuildError, CrateRlib,
    CubinArtifact, CubinOptions, LinkOptions, OptLevel, PtxOptions, PtxasCheck, DEFAULT_MAX_REGISTERS,
};

/// Build a Rust kernel crate (std or no_std) into PTX, and a cubin beside it
/// when a ptxas is found ($PTXAS, PATH, <repo>/.whl).
#[derive(Parser, Debug)]
#[command(name = "hostcall-build", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What `ptx` and `link` share: the target and the code it gets.
#[derive(Args, Debug)]
struct Codegen {
    /// GPU architecture.
    #[arg(long, default_value = "sm_90")]
    arch: String,
    /// 1, 2, 3, s or z: z makes the PTX about half the size of 3's and the
    /// driver's first load of it ~4x faster; use 3 for kernels that compute.
    #[arg(long, default_value = "z", value_parser = parse_opt_level)]
    opt_level: OptLevel,
    /// Keep SYMBOL exported too (besides entry points and __HOSTCALL* globals).
    #[arg(long = "keep", value_name = "SYMBOL")]
    keep: Vec<String>,
}

/// What `ptx` and `cubin` tell ptxas.
#[derive(Args, Debug)]
struct Registers {
    /// Registers per thread the cubin may use, at most (64 lets every entry
    /// point launch 1024-thread blocks).
    #[arg(long, default_value_t = DEFAULT_MAX_REGISTERS, value_parser = clap::value_parser!(u32).range(16..=255))]
    max_registers: u32,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build the kernel crate; print the PTX (and cubin) path, size and SHA-256.
    Ptx {
        /// The kernel crate's directory.
        kernel_dir: PathBuf,
        /// Device libc crate [default: <repo>/libc-hostcall].
        #[arg(long, conflicts_with = "no_libc")]
        libc: Option<PathBuf>,
        /// Link no libc (pure no_std kernels).
        #[arg(long)]
        no_libc: bool,
        /// The binary whose `fn main()` becomes the entry point `hostcall_main`
        /// [default: the crate's lib when it has one, else its only binary].
        #[arg(long)]
        bin: Option<String>,
        /// Output PTX [default: <cache>/<kernel dir name>.ptx]; the cubin goes
        /// beside it as <name>.<arch>.cubin.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Cache directory [default: <repo>/target/hostcall-build-cache].
        #[arg(long)]
        cache: Option<PathBuf>,
        /// PTX only, even when a ptxas is found.
        #[arg(long)]
        no_cubin: bool,
        /// Also run a whole-program ptxas check on the result (skipped without ptxas).
        #[arg(long)]
        check: bool,
        /// No progress lines.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        codegen: Codegen,
        #[command(flatten)]
        registers: Registers,
    },
    /// Build the cubin of a PTX file with ptxas -c (what `ptx` does after linking).
    Cubin {
        /// The PTX file.
        ptx: PathBuf,
        /// Output [default: <ptx stem>.<arch>.cubin beside it].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Cache directory [default: <repo>/target/hostcall-build-cache].
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Fail when no ptxas is found (instead of saying so and writing nothing).
        #[arg(long)]
        require: bool,
        /// GPU architecture.
        #[arg(long, default_value = "sm_90")]
        arch: String,
        #[command(flatten)]
        registers: Registers,
    },
    /// Print the one SHA-256 of a PTX file and its cubin (an empty or absent
    /// cubin: none), as hostcalls_bin checks its embedded image.
    Hash {
        /// The PTX file.
        ptx: PathBuf,
        /// Its cubin.
        cubin: Option<PathBuf>,
    },
    /// List .entry kernels, .extern (undefined) symbols, __HOSTCALL* globals.
    Summary {
        /// The PTX file.
        ptx: PathBuf,
    },
    /// Assemble with a whole-program ptxas if one is found, as a check.
    Ptxas {
        /// The PTX file.
        ptx: PathBuf,
        #[arg(long, default_value = "sm_90")]
        arch: String,
    },
    /// Print the pinned nightly (stage0/channel).
    Channel,
    /// Write rust-src's library/ with the fixups applied as DIR.
    Library { dir: PathBuf },
    /// The last steps of `ptx` on rlibs some other build made (Buck2 uses it):
    /// bitcode out of the rlibs, llvm-link, opt, llc.
    Link {
        /// The PTX to write.
        #[arg(long)]
        out: PathBuf,
        /// Directory holding llvm-link, opt and llc.
        #[arg(long)]
        llvm_bin: PathBuf,
        /// Scratch directory.
        #[arg(long, default_value = "hostcall-link.work")]
        work: PathBuf,
        /// The kernel crate's rlib first, then the crates it builds on.
        #[arg(long = "kernel-rlib", value_name = "RLIB")]
        kernel_rlibs: Vec<PathBuf>,
        /// core, alloc, std, panic_abort and their dependencies.
        #[arg(long = "sysroot-rlib", value_name = "RLIB")]
        sysroot_rlibs: Vec<PathBuf>,
        #[command(flatten)]
        codegen: Codegen,
    },
}

fn parse_opt_level(text: &str) -> Result<OptLevel, String> {
    text.parse().map_err(|e: BuildError| e.to_string())
}

fn print_artifact(path: &Path, size: u64, sha256: &str) {
    println!("{}", path.display());
    println!("size: {size} bytes");
    println!("sha256: {sha256}");
}

fn print_cubin(cubin: &Option<CubinArtifact>) {
    match cubin {
        Some(c) => println!("cubin: {} ({} bytes, sha256 {})", c.path.display(), c.size, c.sha256),
        None => println!("cubin: none"),
    }
}

fn ptxas_check(path: &Path, arch: &str) -> Result<(), BuildError> {
    match run_ptxas(path, arch)? {
        PtxasCheck::Accepted { ptxas, cubin_bytes } => {
            println!("ptxas {} accepted it for {arch} ({cubin_bytes} bytes of cubin)", ptxas.display())
        }
        PtxasCheck::Skipped(reason) => println!("ptxas check skipped: {reason}"),
    }
    Ok(())
}

fn run(command: Command) -> Result<(), BuildError> {
    match command {
        Command::Ptx { kernel_dir, libc, no_libc, bin, out, cache, no_cubin, check, quiet, codegen, registers } => {
            let mut options = PtxOptions::new(&kernel_dir);
            if let Some(libc) = libc {
                options.libc_dir = Some(libc);
            }
            if no_libc {
                options.libc_dir = None;
            }
            if let Some(cache) = cache {
                options.cache_dir = cache;
            }
            options.out = out.unwrap_or_else(|| {
                let stem = kernel_dir.file_name().and_then(|n| n.to_str()).unwrap_or("kernel");
                options.cache_dir.join(format!("{stem}.ptx"))
            });
            (options.arch, options.opt_level, options.max_registers) =
                (codegen.arch, codegen.opt_level, registers.max_registers);
            options.keep = codegen.keep;
            options.cubin = !no_cubin;
            options.verbose = !quiet;
            options.bin = bin;
            let artifact = build_ptx(&options)?;
            print_artifact(&artifact.path, artifact.size, &artifact.sha256);
            print_cubin(&artifact.cubin);
            println!("entries: {}", artifact.summary.entries.join(" "));
            println!("externs: {}", artifact.summary.externs.join(" "));
            println!("hostcall globals: {}", artifact.summary.hostcall_globals().collect::<Vec<_>>().join(" "));
            if check {
                ptxas_check(&artifact.path, &options.arch)?;
            }
        }
        Command::Cubin { ptx, out, cache, require, arch, registers } => {
            let out = out.unwrap_or_else(|| cubin_path(&ptx, &arch));
            let options = CubinOptions {
                arch,
                max_registers: registers.max_registers,
                cache_dir: cache.unwrap_or_else(hostcall_build::default_cache_dir),
            };
            let cubin = build_cubin(&ptx, &out, &options)?;
            if require && cubin.is_none() {
                return Err(BuildError::Invalid("no ptxas found, and --require was given".into()));
            }
            print_cubin(&cubin);
        }
        Command::Hash { ptx, cubin } => {
            let read = |p: &Path| {
                std::fs::read(p).map_err(|e| BuildError::Invalid(format!("cannot read {}: {e}", p.display())))
            };
            let ptx = read(&ptx)?;
            let cubin = cubin.as_deref().map(read).transpose()?.filter(|c| !c.is_empty());
            println!("{}", bundle_sha256(&ptx, cubin.as_deref()));
        }
        Command::Summary { ptx } => {
            let text = std::fs::read_to_string(&ptx)
                .map_err(|e| BuildError::Invalid(format!("cannot read {}: {e}", ptx.display())))?;
            let s = ptx_summary(&text);
            println!("entries: {}", s.entries.join(" "));
            println!("externs: {}", s.externs.join(" "));
            println!("hostcall globals: {}", s.hostcall_globals().collect::<Vec<_>>().join(" "));
        }
        Command::Ptxas { ptx, arch } => ptxas_check(&ptx, &arch)?,
        Command::Channel => println!("{}", hostcall_build::channel()),
        Command::Library { dir } => {
            hostcall_build::sysroot::write_library(&dir)?;
            println!("{}", dir.display());
        }
        Command::Link { out, llvm_bin, work, kernel_rlibs, sysroot_rlibs, codegen } => {
            let user: Vec<CrateRlib> = kernel_rlibs.into_iter().map(CrateRlib::from_path).collect();
            let options = LinkOptions {
                kernel: user.first().map_or_else(|| "the kernel".to_owned(), |k| k.crate_name.clone()),
                user,
                sysroot: sysroot_rlibs.into_iter().map(CrateRlib::from_path).collect(),
                llvm_bin,
                work_dir: work,
                out,
                arch: codegen.arch,
                opt_level: codegen.opt_level,
                keep: codegen.keep,
                main_crate: None,
            };
            let artifact = link_ptx(&options)?;
            print_artifact(&artifact.path, artifact.size, &artifact.sha256);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostcall-build: error: {e}");
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
    fn ptx_takes_codegen_and_register_flags() {
        let cli = Cli::try_parse_from(["hostcall-build", "ptx", "k", "--opt-level", "3", "--max-registers", "128"])
            .expect("parses");
        let Command::Ptx { codegen, registers, .. } = cli.command else { panic!("not ptx") };
        assert_eq!((codegen.opt_level, registers.max_registers), (OptLevel::O3, 128));
        assert!(Cli::try_parse_from(["hostcall-build", "ptx", "k", "--max-registers", "8"]).is_err());
        assert!(Cli::try_parse_from([
            "hostcall-build",
            "link",
            "--out",
            "o",
            "--llvm-bin",
            "b",
            "--max-registers",
            "64"
        ])
        .is_err());
    }
}
