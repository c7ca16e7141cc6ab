//! The host boundary under random input: 10,000 calls with a fixed seed,
//! each to a random built-in handler (or an ID nobody registered) with
//! random argument words, a random payload (often path-like) and now and
//! then a device region that points at nothing. The host must answer every
//! call, never panic (in a handler or the server), and never touch anything
//! outside the sandbox root. (`decode_props.rs` covers the record decoder.)

mod common;

use std::sync::{Arc, Mutex};

use hostcall_runtime::backend::emu::{DeviceCtx, EmuPlatform};
use hostcall_runtime::hostcall_abi::layout::{limits, ARG_WORDS};
use hostcall_runtime::hostcall_abi::op::BUILTIN;
use hostcall_runtime::hostcall_abi::Call;

/// Calls per run; `HOSTCALL_BOUNDARY_CASES` and `HOSTCALL_BOUNDARY_SEED`
/// change them for a long run.
fn cases() -> u64 {
    std::env::var("HOSTCALL_BOUNDARY_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}

fn seed() -> u64 {
    std::env::var("HOSTCALL_BOUNDARY_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_0fb0_0da2_7e57)
}

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A word as a hostile kernel would pick it: small numbers (fds, flags,
/// lengths), flag-like bits, negative values, or anything.
fn word(rng: &mut Rng) -> u64 {
    match rng.below(5) {
        0 => rng.below(8),
        1 => 1 << rng.below(64),
        2 => (-(rng.below(200) as i64)) as u64,
        3 => rng.below(1 << 20),
        _ => rng.next(),
    }
}

fn payload(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(limits::MAX_INLINE.min(600) as u64) as usize;
    const PATHY: &[u8] = b"./a.b/..\0/\xff";
    (0..len)
        .map(|_| if rng.below(2) == 0 { PATHY[rng.below(PATHY.len() as u64) as usize] } else { rng.next() as u8 })
        .collect()
}

fn kernel(ctx: &DeviceCtx, answered: &Mutex<u64>) {
    let mut rng = Rng(seed().max(1));
    let ids: Vec<u32> = BUILTIN.iter().map(|name| ctx.hostcall_id(name)).collect();
    let mut reply = vec![0u8; 8192];
    for _ in 0..cases() {
        let op = match rng.below(20) {
            // Any ID the device libc would send (it refuses 0 and the top
            // bit itself): mostly ones nobody registered.
            0 => ((rng.next() as u32) >> 1).max(1),
            _ => ids[rng.below(ids.len() as u64) as usize],
        };
        let mut args = [0u64; ARG_WORDS];
        args.iter_mut().for_each(|a| *a = word(&mut rng));
        let bytes = payload(&mut rng);
        let mut call = Call::new(op, args).payload(&bytes);
        if rng.below(8) == 0 {
            call = call.device_region(word(&mut rng), word(&mut rng));
        }
        let queue = ctx.queue().expect("queue");
        match queue.call::<EmuPlatform>(&call, &mut reply) {
            Ok(_) => *answered.lock().unwrap() += 1,
            Err(e) => panic!("the device refused a call it should send: {e:?}"),
        }
    }
}

#[test]
fn ten_thousand_random_calls_are_answered_without_a_host_panic_or_a_step_outside() {
    let (base, root) = common::root_beside_secret();
    std::os::unix::fs::symlink("../secret", root.join("a")).unwrap();
    let answered = Arc::new(Mutex::new(0u64));
    let count = answered.clone();
    let (result, rig) = common::run_kernel(&root, 1, move |ctx| kernel(ctx, &count));
    let report = result.expect("the run ends without a protocol error");
    drop(rig);
    eprintln!("{} calls, {} errors, by op: {:?}", report.calls, report.errors, report.per_op);
    assert_eq!(report.handler_panics, 0, "a handler panicked");
    assert_eq!(*answered.lock().unwrap(), cases(), "every call answered");
    assert!(report.errors > cases() / 2, "most random calls fail: {} errors", report.errors);
    assert_eq!(std::fs::read(base.path().join("secret")).unwrap(), b"outside");
    let mut names: Vec<_> = std::fs::read_dir(base.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["root", "secret"]);
}
