//! `culinux`: the demo kernel. Plain std Rust; every line below that touches
//! the outside world (`println!`, `File`, `stdin`, `env`, `SystemTime`) is a
//! hostcall served by `hostcalls_bin`, and `Instant` reads the GPU's own
//! `%globaltimer`.
//!
//! Entry points:
//! * `culinux_main`: every thread says hello; global thread 0 then walks
//!   through files, clocks, stdin, the environment and collections.
//! * `culinux_panic`: panics on purpose, so the host shows the message and
//!   its `file:line` and exits non-zero.
#![feature(abi_ptx, stdarch_nvptx)]

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The file the demo writes, relative to the host's sandbox root.
const OUT_FILE: &str = "culinux_out.txt";

/// The name of a file of this device's own. On a run of several GPUs
/// (`hostcalls_bin --devices all`) every device tours the one sandbox root
/// at once: each names its files after its index (`HOSTCALL_DEVICE`, which
/// the runtime sets for each device) so that none writes over another's.
fn own(name: &str) -> String {
    match std::env::var("HOSTCALL_DEVICE") {
        Ok(device) => format!("gpu{device}_{name}"),
        Err(_) => name.to_owned(),
    }
}

/// `(global thread id, block id, thread id in block)`, x dimension only: the
/// demo is launched with 1-D grids.
fn ids() -> (u32, u32, u32) {
    use core::arch::nvptx::{_block_dim_x, _block_idx_x, _thread_idx_x};
    // SAFETY: reading special registers has no preconditions on nvptx.
    let (tid, bid, bdim) = unsafe { (_thread_idx_x(), _block_idx_x(), _block_dim_x()) };
    (bid as u32 * bdim as u32 + tid as u32, bid as u32, tid as u32)
}

#[no_mangle]
pub extern "ptx-kernel" fn culinux_main() {
    let (gid, block, thread) = ids();
    println!("hello from thread {thread} of block {block} (global {gid})");
    if gid != 0 {
        return;
    }
    if let Err(e) = tour() {
        eprintln!("culinux: {e}");
        std::process::exit(1);
    }
}

/// Everything thread 0 shows off, in order. Each step prints one line.
fn tour() -> io::Result<()> {
    let started = Instant::now();
    eprintln!("culinux: this line goes to stderr");
    if let (Ok(device), Ok(devices)) = (std::env::var("HOSTCALL_DEVICE"), std::env::var("HOSTCALL_DEVICES")) {
        println!("device: {device} of {devices}");
    }

    // Files: create, write, seek, read back, metadata, remove.
    let text = "written on the GPU\nsecond line\n";
    let out_file = own(OUT_FILE);
    let mut f = File::create(&out_file)?;
    f.write_all(text.as_bytes())?;
    drop(f);
    let back = fs::read_to_string(&out_file)?;
    println!("file: wrote {} bytes, read back {} bytes, equal: {}", text.len(), back.len(), back == text);
    let mut f = File::open(&out_file)?;
    f.seek(SeekFrom::Start(11))?;
    let mut tail = String::new();
    f.read_to_string(&mut tail)?;
    println!("file: after seek(11): {:?}", tail.trim_end());
    let meta = fs::metadata(&out_file)?;
    println!("file: metadata len {} is_file {}", meta.len(), meta.is_file());
    let scratch = own("culinux_scratch.txt");
    fs::write(&scratch, b"temporary")?;
    fs::remove_file(&scratch)?;
    println!("file: removed {scratch}: exists now: {}", fs::metadata(&scratch).is_ok());

    // A bigger write goes through a device region rather than inline lines,
    // and the host moves it with the copy engine, several pieces for this
    // one (a pattern that does not repeat at any piece boundary).
    let mut big = vec![0u8; 2_500_000];
    for (i, word) in big.chunks_mut(8).enumerate() {
        let bytes = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes();
        word.copy_from_slice(&bytes[..word.len()]);
    }
    let big_file = own("culinux_big.bin");
    fs::write(&big_file, &big)?;
    let big_back = fs::read(&big_file)?;
    println!("file: {}-byte round trip equal: {}", big.len(), big_back == big);
    fs::remove_file(&big_file)?;

    // Clocks: SystemTime from the host, Instant from %globaltimer.
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).map_err(io::Error::other)?;
    println!("time: SystemTime is {} s after the epoch (host clock)", since_epoch.as_secs());

    // Command line (`hostcalls_bin -- ARGS`), environment and stdin.
    println!("args: {:?}", std::env::args().collect::<Vec<_>>());
    let listed = std::env::vars_os().any(|(name, _)| name == "CULINUX_GREETING");
    println!("env: vars_os() lists CULINUX_GREETING: {listed}");
    match std::env::var("CULINUX_GREETING") {
        Ok(v) => println!("env: CULINUX_GREETING={v}"),
        Err(e) => println!("env: CULINUX_GREETING: {e}"),
    }
    // `set_var`/`remove_var` change the launch's own view (device memory),
    // never the host's environment. Only this thread touches it here.
    std::env::set_var("CULINUX_SET_ON_GPU", "set on the GPU");
    let listed = std::env::vars().any(|(k, v)| k == "CULINUX_SET_ON_GPU" && v == "set on the GPU");
    println!("env: after set_var: {:?}, vars() lists it: {listed}", std::env::var("CULINUX_SET_ON_GPU"));
    std::env::remove_var("CULINUX_SET_ON_GPU");
    std::env::remove_var("CULINUX_GREETING");
    let listed = std::env::vars_os().any(|(k, _)| k == "CULINUX_SET_ON_GPU" || k == "CULINUX_GREETING");
    println!(
        "env: after remove_var: {:?}, {:?}, vars() lists either: {listed}",
        std::env::var("CULINUX_SET_ON_GPU"),
        std::env::var("CULINUX_GREETING")
    );
    let mut line = String::new();
    let n = io::stdin().lock().read_line(&mut line)?;
    if n == 0 {
        println!("stdin: (empty)");
    } else {
        println!("stdin: {:?}", line.trim_end());
    }

    // Collections: HashMap's RandomState asks getrandom for its keys.
    let mut words: HashMap<&str, usize> = HashMap::new();
    for w in "the gpu reads the file and the gpu writes the file".split(' ') {
        *words.entry(w).or_default() += 1;
    }
    let mut counts: Vec<_> = words.into_iter().collect();
    counts.sort();
    println!("collections: {counts:?}");

    // Locks in local variables: their atomics are on this thread's stack,
    // which the build turns into plain loads and stores (ptxas refuses
    // atomics on local memory).
    let total = std::sync::Mutex::new(0);
    let table = std::sync::RwLock::new(counts.len());
    for (_, n) in &counts {
        *total.lock().unwrap_or_else(|e| e.into_inner()) += *n;
    }
    let read = *table.read().unwrap_or_else(|e| e.into_inner());
    let leader = std::sync::Barrier::new(1).wait().is_leader();
    println!(
        "sync: a Mutex on the stack summed {}, a RwLock read {read}, a Barrier of one made its caller leader: {leader}",
        total.into_inner().unwrap_or_else(|e| e.into_inner())
    );

    // Threads: the GPU cannot start one; std says so with an error.
    match std::thread::Builder::new().spawn(|| ()) {
        Ok(_) => println!("thread: spawn started a thread"),
        Err(e) => println!("thread: spawn failed: {:?}", e.kind()),
    }

    println!("time: the tour took {} us on the device clock", started.elapsed().as_micros());
    Ok(())
}

#[no_mangle]
pub extern "ptx-kernel" fn culinux_panic() {
    let (gid, _, _) = ids();
    if gid == 0 {
        let v: Vec<u32> = Vec::new();
        panic!("culinux_panic on purpose: the vector has {} elements", v.len());
    }
}
