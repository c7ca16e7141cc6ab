//! `hostcall-build`: the PTX pipeline from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use hostcall_build::{
    build_ptx, link_ptx, ptx_summary, run_ptxas, BuildError, CrateRlib, LinkOptions, OptLevel, PtxOptions, PtxasCheck,
};

const HELP: &str = "\
hostcall-build: build a Rust kernel crate (std or no_std) into PTX

USAGE:
    hostcall-build ptx <KERNEL_DIR> [OPTIONS]
    hostcall-build summary <FILE.ptx>
    hostcall-build ptxas <FILE.ptx> [--arch sm_90]
    hostcall-build channel
    hostcall-build library <DIR>
    hostcall-build link --out <FILE.ptx> --llvm-bin <DIR> --kernel-rlib <RLIB>... --sysroot-rlib <RLIB>...

COMMANDS:
    ptx       build the kernel crate, print the PTX path, size and SHA-256
    summary   list .entry kernels, .extern (undefined) symbols, __HOSTCALL* globals
    ptxas     assemble with ptxas if one is found ($PTXAS, PATH, <repo>/.whl)
    channel   print the pinned nightly (stage0/channel)
    library   write rust-src's library/ with the fixups applied as <DIR>
    link      the last steps of `ptx` on rlibs some other build made (Buck2 uses it):
              bitcode out of the rlibs, llvm-link, opt, llc; --kernel-rlib for the
              kernel and its crates, --sysroot-rlib for core/alloc/std/...;
              --arch, --opt-level, --keep as for ptx; --work <DIR> for scratch files

OPTIONS (ptx):
    --libc <DIR>       device libc crate [default: <repo>/libc-hostcall]
    --no-libc          link no libc (pure no_std kernels)
    --arch <SM>        GPU architecture [default: sm_90]
    --out <FILE>       output PTX [default: <cache>/<kernel dir name>.ptx]
    --cache <DIR>      cache dir [default: <repo>/target/hostcall-build-cache]
    --opt-level <N>    1, 2, 3, s or z [default: z]: z makes the PTX about half
                       the size of 3's and the driver's first load of it ~4x
                       faster; use 3 for kernels that compute
    --keep <SYMBOL>    keep SYMBOL exported too (repeatable)
    --check            run ptxas on the result (skipped if none is found)
    -q, --quiet        no progress lines
    -h, --help         this text
";

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("hostcall-build: error: {message}");
    ExitCode::FAILURE
}

fn ptxas(path: &std::path::Path, arch: &str) -> ExitCode {
    match run_ptxas(path, arch) {
        Ok(PtxasCheck::Accepted { ptxas, cubin_bytes }) => {
            println!("ptxas {} accepted it for {arch} ({cubin_bytes} bytes of cubin)", ptxas.display());
            ExitCode::SUCCESS
        }
        Ok(PtxasCheck::Skipped(reason)) => {
            println!("ptxas check skipped: {reason}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn link(args: Vec<String>) -> ExitCode {
    let mut options = LinkOptions {
        kernel: String::from("the kernel"),
        user: Vec::new(),
        sysroot: Vec::new(),
        llvm_bin: PathBuf::new(),
        work_dir: PathBuf::from("hostcall-link.work"),
        out: PathBuf::new(),
        arch: "sm_90".into(),
        opt_level: OptLevel::Oz,
        keep: Vec::new(),
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else { return fail(format!("{flag} needs a value")) };
        match flag.as_str() {
            "--out" => options.out = value.into(),
            "--llvm-bin" => options.llvm_bin = value.into(),
            "--work" => options.work_dir = value.into(),
            "--kernel-rlib" => options.user.push(CrateRlib::from_path(value)),
            "--sysroot-rlib" => options.sysroot.push(CrateRlib::from_path(value)),
            "--arch" => options.arch = value,
            "--opt-level" => match value.parse() {
                Ok(level) => options.opt_level = level,
                Err(e) => return fail(e),
            },
            "--keep" => options.keep.push(value),
            other => return fail(format!("unexpected argument {other} (see --help)")),
        }
    }
    if options.out.as_os_str().is_empty() || options.llvm_bin.as_os_str().is_empty() {
        return fail("link needs --out and --llvm-bin");
    }
    if let Some(kernel) = options.user.first() {
        options.kernel = kernel.crate_name.clone();
    }
    match link_ptx(&options) {
        Ok(artifact) => {
            println!("{}", artifact.path.display());
            println!("size: {} bytes", artifact.size);
            println!("sha256: {}", artifact.sha256);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next();
    let rest: Vec<String> = args.collect();
    if command.is_none() || rest.iter().chain(command.iter()).any(|a| a == "-h" || a == "--help") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let mut rest = rest.into_iter();
    match command.as_deref() {
        Some("channel") => {
            println!("{}", hostcall_build::channel());
            ExitCode::SUCCESS
        }
        Some("library") => {
            let Some(dir) = rest.next() else { return fail("library needs an output directory") };
            match hostcall_build::sysroot::write_library(dir.as_ref()) {
                Ok(()) => {
                    println!("{dir}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Some("link") => link(rest.collect()),
        Some("summary") => {
            let Some(path) = rest.next() else { return fail("summary needs a PTX file") };
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let s = ptx_summary(&text);
                    println!("entries: {}", s.entries.join(" "));
                    println!("externs: {}", s.externs.join(" "));
                    println!("hostcall globals: {}", s.hostcall_globals.join(" "));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("cannot read {path}: {e}")),
            }
        }
        Some("ptxas") => {
            let Some(path) = rest.next() else { return fail("ptxas needs a PTX file") };
            let mut arch = "sm_90".to_owned();
            while let Some(flag) = rest.next() {
                match (flag.as_str(), rest.next()) {
                    ("--arch", Some(value)) => arch = value,
                    _ => return fail(format!("unexpected argument {flag}")),
                }
            }
            ptxas(path.as_ref(), &arch)
        }
        Some("ptx") => {
            let Some(kernel) = rest.next() else { return fail("ptx needs a kernel crate directory") };
            let mut options = PtxOptions::new(&kernel);
            let (mut out, mut check) = (None, false);
            while let Some(flag) = rest.next() {
                let mut value = |name: &str| rest.next().ok_or(format!("{name} needs a value"));
                let parsed: Result<(), String> = (|| {
                    match flag.as_str() {
                        "--libc" => options.libc_dir = Some(value("--libc")?.into()),
                        "--no-libc" => options.libc_dir = None,
                        "--arch" => options.arch = value("--arch")?,
                        "--out" => out = Some(PathBuf::from(value("--out")?)),
                        "--cache" => options.cache_dir = value("--cache")?.into(),
                        "--opt-level" => {
                            options.opt_level = value("--opt-level")?.parse().map_err(|e: BuildError| e.to_string())?
                        }
                        "--keep" => options.keep.push(value("--keep")?),
                        "--check" => check = true,
                        "-q" | "--quiet" => options.verbose = false,
                        other => return Err(format!("unexpected argument {other} (see --help)")),
                    }
                    Ok(())
                })();
                if let Err(e) = parsed {
                    return fail(e);
                }
            }
            options.out = out.unwrap_or_else(|| {
                let stem = options.kernel_dir.file_name().and_then(|n| n.to_str()).unwrap_or("kernel");
                options.cache_dir.join(format!("{stem}.ptx"))
            });
            match build_ptx(&options) {
                Ok(artifact) => {
                    println!("{}", artifact.path.display());
                    println!("size: {} bytes", artifact.size);
                    println!("sha256: {}", artifact.sha256);
                    println!("entries: {}", artifact.summary.entries.join(" "));
                    println!("externs: {}", artifact.summary.externs.join(" "));
                    println!("hostcall globals: {}", artifact.summary.hostcall_globals.join(" "));
                    if check {
                        return ptxas(&artifact.path, &options.arch);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Some(other) => fail(format!("unknown command {other} (see --help)")),
        None => fail("no command (see --help)"),
    }
}
