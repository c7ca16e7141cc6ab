//! An ordinary program: nothing in it knows about GPUs. `hostcall run
//! kernels/main_bin -- ARGS` runs `main` on the GPU; `cargo run` on the CPU
//! behaves the same.
//!
//! `exit=N` ends the process with `std::process::exit(N)`; `err` returns an
//! `Err` from `main` (std prints it and the exit code is 1).

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
        _ => Ok(ExitCode::SUCCESS),
    }
}
