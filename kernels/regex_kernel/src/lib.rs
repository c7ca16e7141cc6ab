//! `regex_kernel`: the `regex` crate, unchanged from crates.io, on the GPU.
//! Every thread matches a pattern against a line naming itself; thread 0
//! prints what it found. Used to measure how a large std dependency loads
//! (PTX size, JIT time, cubin) and that it runs.
#![feature(abi_ptx, stdarch_nvptx)]

use regex::Regex;

fn global_id() -> u32 {
    use core::arch::nvptx::{_block_dim_x, _block_idx_x, _thread_idx_x};
    // SAFETY: reading special registers has no preconditions on nvptx.
    let (tid, bid, bdim) = unsafe { (_thread_idx_x(), _block_idx_x(), _block_dim_x()) };
    bid as u32 * bdim as u32 + tid as u32
}

#[no_mangle]
pub extern "ptx-kernel" fn regex_main() {
    let gid = global_id();
    let re = match Regex::new(r"thread (?<id>\d+) of (?<word>[a-z]+)") {
        Ok(re) => re,
        Err(e) => {
            eprintln!("regex_kernel: {e}");
            std::process::exit(2);
        }
    };
    let line = format!("hello from thread {gid} of gpu");
    let Some(caps) = re.captures(&line) else {
        eprintln!("regex_kernel: thread {gid}: no match in {line:?}");
        std::process::exit(1);
    };
    if caps["id"] != gid.to_string() {
        eprintln!("regex_kernel: thread {gid}: captured {:?}", &caps["id"]);
        std::process::exit(1);
    }
    if gid == 0 {
        println!("regex: matched {:?}, id={} word={}", &caps[0], &caps["id"], &caps["word"]);
    }
}
