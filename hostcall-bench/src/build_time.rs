//! `build_s`: how long the demo's PTX takes to build from nothing (sysroot
//! included, the toolchain already installed) and to rebuild after an edit
//! of the kernel alone, on this machine (no GPU). `--cores N` pins the
//! process (and so every compiler it starts) to N CPUs, as on the 2-core CI
//! machine.

use std::path::Path;
use std::time::Instant;

use crate::gpu::Res;
use crate::report::{Figure, Machine, Results, SCHEMA};

/// Keep this process and its children on the first `n` CPUs it may use.
fn pin(n: usize) -> Res<()> {
    // SAFETY: `set` is a plain bitmask, zeroed then filled by the CPU_*
    // macros' equivalents on it; the calls only read or write it.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) != 0 {
            return Err(format!("sched_getaffinity: {}", std::io::Error::last_os_error()));
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let mut taken = 0;
        for cpu in 0..libc::CPU_SETSIZE as usize {
            if taken < n && libc::CPU_ISSET(cpu, &allowed) {
                libc::CPU_SET(cpu, &mut set);
                taken += 1;
            }
        }
        if taken < n {
            return Err(format!("--cores {n}: only {taken} CPUs are available"));
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!("sched_setaffinity: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Res<()> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| format!("{}: {e}", src.display()))?;
        }
    }
    Ok(())
}

pub fn measure(cores: Option<usize>) -> Res<Results> {
    if let Some(n) = cores {
        pin(n)?;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let repo = hostcall_build::repo_root();
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let kernel = scratch.path().join("culinux");
    copy_dir(&repo.join("culinux/src"), &kernel.join("src"))?;
    std::fs::copy(repo.join("culinux/Cargo.toml"), kernel.join("Cargo.toml")).map_err(|e| e.to_string())?;
    let mut options = hostcall_build::PtxOptions::new(&kernel);
    options.cache_dir = scratch.path().join("cache");
    options.out = scratch.path().join("culinux.ptx");
    eprintln!("hostcall-bench: cold build of the demo's PTX and cubin on {cores} cores (a few minutes)");
    let t = Instant::now();
    let cold = hostcall_build::build_ptx(&options).map_err(|e| e.to_string())?;
    let cold_s = t.elapsed().as_secs_f64();
    let lib = kernel.join("src/lib.rs");
    let mut source = std::fs::read_to_string(&lib).map_err(|e| e.to_string())?;
    // A change that reaches the PTX (a comment would leave it, and so the
    // cached cubin, as they were).
    source.push_str(
        "\n#[no_mangle]\npub extern \"ptx-kernel\" fn hostcall_bench_edit() {\n    println!(\"edited\");\n}\n",
    );
    std::fs::write(&lib, source).map_err(|e| e.to_string())?;
    eprintln!("hostcall-bench: rebuild after an edit of the kernel");
    let t = Instant::now();
    let warm = hostcall_build::build_ptx(&options).map_err(|e| e.to_string())?;
    let warm_s = t.elapsed().as_secs_f64();
    if warm.sha256 == cold.sha256 {
        return Err("the edit of the kernel did not change its PTX; the rebuild figure would be a cache hit".into());
    }
    let cubin = |a: &hostcall_build::PtxArtifact| if a.cubin.is_some() { "with cubin" } else { "PTX only (no ptxas)" };
    Ok(Results {
        schema: SCHEMA,
        date: crate::report::today(),
        quick: false,
        machine: Machine {
            gpu: "none (build machine)".into(),
            driver: "-".into(),
            pcie: "-".into(),
            cpu: crate::gpu::cpu_model(),
            cores,
            commit: crate::kernels::COMMIT.trim().to_owned(),
            images: vec![("culinux".into(), cold.sha256.clone())],
        },
        figures: vec![
            Figure::new("build_cold_s", cold_s, "s").notes(format!(
                "sysroot + libc + kernel + link, {}, {} bytes of PTX",
                cubin(&cold),
                cold.size
            )),
            Figure::new("build_kernel_s", warm_s, "s").notes(format!("after an edit of the kernel, {}", cubin(&warm))),
        ],
        curves: Vec::new(),
    })
}
