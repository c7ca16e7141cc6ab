//! The host boundary under random input: 10,000 calls with a fixed seed,
//! each to a random built-in handler (or an ID nobody registered) with
//! random argument words, a random payload (often path-like) and now and
//! then a device region, at nothing or at a real buffer with guard bytes on
//! both sides. The host must answer every call, never panic (in a handler or
//! the server), never touch anything outside the sandbox root, and never
//! touch device memory outside a region a call declared: every device access
//! the host makes is recorded by the emulation backend and checked against
//! the region of the call it served (one device thread, one call at a time). (`decode_props.rs` covers the record
//! decoder.)

mod common;

use std::sync::{Arc, Mutex};

use hostcall_runtime::backend::emu::{AccessCheck, DeviceCtx, EmuBackend, EmuModule, EmuPlatform, HostAccesses};
use hostcall_runtime::hostcall_abi::layout::{limits, ARG_WORDS};
use hostcall_runtime::hostcall_abi::op::BUILTIN;
use hostcall_runtime::hostcall_abi::Call;
use hostcall_runtime::{QueueConfig, Runtime};

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

/// What the kernel saw: calls answered, regions declared, host accesses to
/// device memory (and those outside the call's region), guard bytes found
/// changed.
#[derive(Default)]
struct Seen {
    answered: u64,
    regions: u64,
    accesses: u64,
    outside: Vec<(u64, u64)>,
    guards_broken: u64,
}

fn kernel(ctx: &DeviceCtx, seen: &Mutex<Seen>, log: HostAccesses) {
    let mut rng = Rng(seed().max(1));
    let ids: Vec<u32> = BUILTIN.iter().map(|name| ctx.hostcall_id(name)).collect();
    let bulk: Vec<u32> = ["read", "write", "pread", "pwrite"].iter().map(|n| ctx.hostcall_id(n)).collect();
    let mut check = AccessCheck::new(ctx, log);
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
        // A real region: `len` bytes between two guards, the buffer's other
        // bytes random (what a read would send out).
        let mut buffer = None;
        match rng.below(8) {
            0 => call = call.device_region(word(&mut rng), word(&mut rng)),
            1 => {
                // Half of them to an op that moves bulk bytes, on stdin,
                // stdout or stderr (or fd 3, closed), so that most reach
                // the region.
                if rng.below(2) == 0 {
                    args[0] = rng.below(4);
                    call = Call::new(bulk[rng.below(bulk.len() as u64) as usize], args).payload(&bytes);
                }
                let len = rng.below(3 * limits::MAX_INLINE as u64) as usize;
                let init: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                let buf = ctx.alloc_guarded(&init);
                call = call.device_region(buf.addr(), len as u64);
                buffer = Some(buf);
            }
            _ => {}
        }
        let queue = ctx.queue().expect("queue");
        check.start();
        let answered = queue.call::<EmuPlatform>(&call, &mut reply);
        let mut seen = seen.lock().unwrap();
        let done = match answered {
            Ok(done) => done,
            Err(e) => panic!("the device refused a call it should send: {e:?}"),
        };
        seen.answered += 1;
        seen.regions += u64::from(call.dev_len != 0);
        // The host's accesses while it served this call.
        let (accesses, outside) = check.finish(&call, &done);
        seen.accesses += accesses as u64;
        seen.outside.extend(outside);
        if buffer.is_some_and(|b| !b.guards_intact()) {
            seen.guards_broken += 1;
        }
    }
}

#[test]
fn ten_thousand_random_calls_are_answered_without_a_host_panic_or_a_step_outside() {
    let (base, root) = common::root_beside_secret();
    std::os::unix::fs::symlink("../secret", root.join("a")).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = HostAccesses::default();
    let (s, l) = (seen.clone(), log.clone());
    let module = EmuModule::new().builtin_hostcalls().entry("main", move |ctx| kernel(ctx, &s, l.clone()));
    let mut backend = EmuBackend::with_module("test", module);
    backend.record_accesses(log);
    let (cfg, _, _) = common::config(&root, QueueConfig::DEFAULT);
    let mut rt = Runtime::new(backend, cfg).expect("runtime");
    rt.load("test").expect("load");
    let report = rt.launch("main", 1, 1).expect("the run ends without a protocol error");
    drop(rt);
    eprintln!("{} calls, {} errors, by op: {:?}", report.calls, report.errors, report.per_op);
    assert_eq!(report.handler_panics, 0, "a handler panicked");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.answered, cases(), "every call answered");
    assert!(report.errors > cases() / 2, "most random calls fail: {} errors", report.errors);
    assert_eq!(std::fs::read(base.path().join("secret")).unwrap(), b"outside");
    let mut names: Vec<_> = std::fs::read_dir(base.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["root", "secret"]);

    // Device memory: every access inside the region of the call it served,
    // no guard byte changed.
    assert_eq!(seen.guards_broken, 0, "the host wrote outside a declared region");
    let outside = &seen.outside;
    assert!(outside.is_empty(), "device accesses outside the call's region: {:x?}", &outside[..outside.len().min(5)]);
    eprintln!("{} device accesses, each inside its call's region ({} calls declared one)", seen.accesses, seen.regions);
    // (Mostly writes of a region to stdout or stderr: the bulk ops on
    // fds 0-3, whose reads find stdin empty and fd 3 closed.)
    assert!(seen.accesses > cases() / 200, "the regions were used: {} accesses", seen.accesses);
}
