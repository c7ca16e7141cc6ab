//! An ordinary program: nothing in it knows about GPUs. `hostcall run
//! kernels/main_bin -- ARGS` runs `main` on the GPU; `cargo run` on the CPU
//! behaves the same.
//!
//! `exit=N` ends the process with `std::process::exit(N)`; `err` returns an
//! `Err` from `main` (std prints it and the exit code is 1); `vec=MIB` fills
//! a `Vec` of that many MiB, grows another to the same size by doubling,
//! and checks both (on the GPU: beyond the device heap's 512 MiB arena, into
//! memory the host hands over); `whoami` prints this copy's thread index
//! (`hostcall_thread`); `device` prints it with the device of a run on
//! several GPUs (`--devices`); `sweep` spends all the memory it can get,
//! frees its small blocks and asks for 1 MiB blocks (on the GPU: served
//! only by the device heap's sweep of its arena; meant for the GPU, where
//! memory runs out: on the CPU it stops after reserving, untouched, 1 TiB);
//! `unsupported` calls std APIs the GPU cannot honour
//! and prints how each failed (on the GPU: an error, never a panic in std or
//! a module that does not load).

use std::collections::BTreeMap;
use std::process::ExitCode;

fn main() -> Result<ExitCode, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut words = BTreeMap::new();
    for word in "the quick brown fox jumps over the lazy dog the end".split(' ') {
        *words.entry(word).or_insert(0) += 1;
    }
    println!("main: args {args:?}, \"the\" x{}, {} distinct words", words["the"], words.len());
    match args.first().map(String::as_str) {
        Some("err") => Err("asked to fail".to_owned()),
        Some(arg) if arg.starts_with("exit=") => std::process::exit(arg[5..].parse().unwrap_or(2)),
        Some("code=7") => Ok(ExitCode::from(7)),
        Some("unsupported") => {
            unsupported_apis().iter().for_each(|line| println!("{line}"));
            Ok(ExitCode::SUCCESS)
        }
        Some("whoami") => {
            println!("thread {} of {}", hostcall_thread::index(), hostcall_thread::count());
            Ok(ExitCode::SUCCESS)
        }
        Some("sweep") => Ok(sweep()),
        Some("device") => {
            let (me, all) = (hostcall_thread::index(), hostcall_thread::count());
            let (device, devices) = (hostcall_thread::device(), hostcall_thread::device_count());
            println!("thread {me} of {all} on device {device} of {devices}");
            Ok(ExitCode::SUCCESS)
        }
        Some(arg) if arg.starts_with("vec=") => {
            let mib: usize = arg[4..].parse().map_err(|_| format!("bad size {arg}"))?;
            big_vecs(mib << 20)
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// One `Vec` of `bytes` made zeroed at once, one grown to it by doubling
/// (each doubling a `realloc` and a fill with the round's number); checked
/// at every 4 KiB (a GPU thread reading every byte would take minutes).
fn big_vecs(bytes: usize) -> Result<ExitCode, String> {
    let n = bytes / 8;
    let mut whole = vec![0u64; n];
    for i in (0..n).step_by(512) {
        whole[i] = i as u64;
    }
    let mut bad = (0..n).step_by(512).filter(|&i| whole[i] != i as u64 || whole.get(i + 1).is_some_and(|&w| w != 0)).count();
    drop(whole);
    let mut grown: Vec<u64> = vec![0; 512];
    let mut round = 0u64;
    while grown.len() < n {
        round += 1;
        grown.resize((grown.len() * 2).min(n), round);
    }
    // Index i was added in round ceil(log2(i / 512 + 1)).
    let round_of = |i: usize| if i < 512 { 0 } else { u64::from(usize::BITS - (i / 512).leading_zeros()) };
    bad += (0..n).step_by(512).filter(|&i| grown[i] != round_of(i) || grown[n - 1 - i] != round_of(n - 1 - i)).count();
    println!("vec: {} MiB made zeroed, {} MiB grown in {round} doublings, {bad} samples wrong", bytes >> 20, (grown.len() * 8) >> 20);
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Memory freed at one size serving another once none is left: 2 KiB
/// blocks that fill the device heap's arena, then blocks larger than its
/// largest class and 1 MiB blocks until no more come (the GPU's memory
/// spent: the heap says so on stderr), then the 2 KiB blocks freed and 1
/// MiB blocks asked for again. Exit 0 when at least 400 come.
fn sweep() -> ExitCode {
    fn take(size: usize, most: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        while got.len() < most {
            let mut v = Vec::new();
            if v.try_reserve_exact(size).is_err() {
                break;
            }
            got.push(v);
        }
        got
    }
    let small: Vec<Vec<u8>> = (0..(512 << 20) / 2048).map(|_| Vec::with_capacity(2000)).collect();
    let huge = take((256 << 20) + 1, 4096);
    let mib = take(1 << 20, 1 << 20);
    println!("sweep: {} blocks of 2000 B, {} of 256 MiB + 1, {} of 1 MiB, then none", small.len(), huge.len(), mib.len());
    drop(small);
    let again = take(1 << 20, 1 << 20);
    println!("sweep: the 2000 B blocks freed, {} blocks of 1 MiB", again.len());
    if again.len() >= 400 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// What each API that needs an OS the GPU lacks gave back.
fn unsupported_apis() -> Vec<String> {
    use std::fs::File;
    fn kind<T>(r: std::io::Result<T>) -> String {
        r.map_or_else(|e| format!("{:?}", e.kind()), |_| "ok".to_owned())
    }
    let _ = std::fs::write("copy-src", b"x");
    vec![
        format!("Command::status: {}", kind(std::process::Command::new("true").status())),
        format!("TcpStream::connect: {}", kind(std::net::TcpStream::connect("localhost:80"))),
        format!("UnixStream::connect: {}", kind(std::os::unix::net::UnixStream::connect("sock"))),
        format!("fs::copy: {}", kind(std::fs::copy("copy-src", "copy-dst"))),
        format!("File::lock: {}", kind(File::create("lock-file").and_then(|f| f.lock()))),
        format!("thread::Builder::spawn: {}", kind(std::thread::Builder::new().spawn(|| ()))),
        format!("available_parallelism: {}", kind(std::thread::available_parallelism())),
        format!("Backtrace::force_capture: {:?}", std::backtrace::Backtrace::force_capture().status()),
        format!("process::id is positive: {}", std::process::id() > 0),
    ]
}
