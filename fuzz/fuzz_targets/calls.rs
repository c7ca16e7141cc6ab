//! Arbitrary call sequences through the real server and every built-in
//! handler, on the emulation backend: the input picks each call's hostcall
//! (or an ID nobody registered), its argument words, its payload and its
//! device region (none, an address at nothing, or a real buffer between
//! guard bytes). The host must answer every call without a panic, touch no
//! device memory outside the region of the call it serves and the heap
//! blocks it handed out (the backend records every access), change no guard
//! byte, and touch nothing outside the sandbox root.
//!
//! `cargo +nightly fuzz run calls` (from `fuzz/`).
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use hostcall_runtime::backend::emu::{AccessCheck, DeviceCtx, EmuBackend, EmuModule, EmuPlatform, HostAccesses};
use hostcall_runtime::hostcall_abi::layout::{limits, ARG_WORDS};
use hostcall_runtime::hostcall_abi::op::BUILTIN;
use hostcall_runtime::hostcall_abi::Call;
use hostcall_runtime::{QueueConfig, Runtime, RuntimeConfig, SharedBuf};
use libfuzzer_sys::fuzz_target;

/// The input, read front to back; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
    fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }
    fn u64(&mut self) -> u64 {
        self.bytes(8).iter().rev().fold(0, |w, &b| w << 8 | u64::from(b))
    }
}

/// The sandbox root and, beside it, a file no call may reach.
fn dirs() -> &'static (tempfile::TempDir, PathBuf) {
    static DIRS: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    DIRS.get_or_init(|| {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(base.path().join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink("../secret", root.join("a")).unwrap();
        (base, root)
    })
}

/// One call the input describes, made from the device side; panics (the
/// fuzzer's crash) on a host access outside its region (or the heap blocks
/// the host handed out) or a changed guard.
fn one_call(ctx: &DeviceCtx, input: &mut Input<'_>, check: &mut AccessCheck) {
    let pick = input.u8();
    // The built-ins the device libc uses, then `echo` (a test hostcall that
    // copies payload to region and region to reply).
    let op = match pick as usize {
        0xff => ((input.u64() as u32) >> 1).max(1),
        i if i % (BUILTIN.len() + 1) == BUILTIN.len() => ctx.hostcall_id("echo"),
        i => ctx.hostcall_id(BUILTIN[i % (BUILTIN.len() + 1)]),
    };
    let mut args = [0u64; ARG_WORDS];
    let shapes = input.u8();
    for (i, a) in args.iter_mut().enumerate() {
        // Small words (fds, flags, lengths) unless the input asks for a whole one.
        *a = if shapes >> i & 1 == 1 { input.u64() } else { u64::from(input.u8()) };
    }
    let len = usize::from(input.u8()) * limits::MAX_INLINE / 255;
    let payload = input.bytes(len).to_vec();
    let mut call = Call::new(op, args).payload(&payload);
    let mut buffer = None;
    match shapes >> 4 & 3 {
        1 => call = call.device_region(input.u64(), input.u64()),
        2 => {
            let len = usize::from(input.u8()) * 16;
            let buf = ctx.alloc_guarded(&[0x5a; 4080][..len]);
            call = call.device_region(buf.addr(), len as u64);
            buffer = Some(buf);
        }
        _ => {}
    }
    let mut reply = vec![0u8; 4096];
    check.start();
    let done = ctx.queue().expect("queue").call::<EmuPlatform>(&call, &mut reply).expect("the call is answered");
    let (_, outside) = check.finish(&call, &done);
    assert!(outside.is_empty(), "host accesses {outside:x?} outside the call's region and the heap's blocks");
    assert!(buffer.is_none_or(|b| b.guards_intact()), "guard bytes changed");
}

fuzz_target!(|data: &[u8]| {
    let (base, root) = dirs();
    let input = Arc::new(Mutex::new(data.to_vec()));
    let log = HostAccesses::default();
    let (l, i) = (log.clone(), input.clone());
    let module = EmuModule::new().builtin_hostcalls().entry("main", move |ctx| {
        let bytes = i.lock().unwrap().clone();
        let mut input = Input(&bytes);
        let mut check = AccessCheck::new(ctx, l.clone());
        while !input.0.is_empty() {
            one_call(ctx, &mut input, &mut check);
        }
    });
    let mut backend = EmuBackend::with_module("fuzz", module);
    backend.record_accesses(log);
    let cfg = RuntimeConfig {
        root: root.clone(),
        queue: QueueConfig::DEFAULT,
        stdin: Box::new(std::io::empty()),
        stdout: Box::new(SharedBuf::new()),
        stderr: Box::new(SharedBuf::new()),
        env: Default::default(),
        args: vec!["fuzz".into()],
        debug: false,
        timeout: None,
        stop: None,
    };
    let mut rt = Runtime::new(backend, cfg).unwrap();
    rt.load("fuzz").unwrap();
    // `exit`/`abort` calls end the kernel early; that is a normal end.
    let report = rt.launch("main", 1, 1).expect("the run ends without a protocol error");
    assert_eq!(report.handler_panics, 0, "a handler panicked");
    assert_eq!(std::fs::read(base.path().join("secret")).unwrap(), b"outside");
    let mut names: Vec<_> = std::fs::read_dir(base.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["root", "secret"]);
});
