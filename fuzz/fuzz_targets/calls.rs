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

use hostcall_runtime::backend::emu::{DeviceCtx, EmuBackend, EmuModule, EmuPlatform, HostAccesses};
use hostcall_runtime::hostcall_abi::layout::{limits, ARG_WORDS};
use hostcall_runtime::hostcall_abi::op::{BUILTIN, HEAP_ALIGN};
use hostcall_runtime::hostcall_abi::Call;
use hostcall_runtime::{QueueConfig, Runtime, RuntimeConfig, SharedBuf};
use libfuzzer_sys::fuzz_target;

const GUARD: usize = 64;
const POISON: u8 = 0xa5;

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
/// the host handed out, `heap`) or a changed guard.
fn one_call(ctx: &DeviceCtx, input: &mut Input<'_>, log: &HostAccesses, heap: &mut Vec<(u64, u64)>) {
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
    let (mut buffer, mut region) = (None, None);
    match shapes >> 4 & 3 {
        1 => {
            let (addr, len) = (input.u64(), input.u64());
            call = call.device_region(addr, len);
            region = Some((addr, len));
        }
        2 => {
            let len = usize::from(input.u8()) * 16;
            let buf = ctx.alloc(len + 2 * GUARD);
            let mut init = vec![POISON; len + 2 * GUARD];
            init[GUARD..GUARD + len].copy_from_slice(&[0x5a; 4080][..len]);
            buf.fill_from(&init);
            let addr = buf.addr() + GUARD as u64;
            call = call.device_region(addr, len as u64);
            region = Some((addr, len as u64));
            buffer = Some((buf, len));
        }
        _ => {}
    }
    let before = log.lock().unwrap().len();
    let mut reply = vec![0u8; 4096];
    let done = ctx.queue().expect("queue").call::<EmuPlatform>(&call, &mut reply).expect("the call is answered");
    if done.errno == 0 && (op == ctx.hostcall_id("heap_alloc") || op == ctx.hostcall_id("heap_realloc")) {
        let size = if op == ctx.hostcall_id("heap_alloc") { args[0] } else { args[1] };
        heap.push((done.value, size.next_multiple_of(HEAP_ALIGN)));
    }
    let within =
        |(d, l): (u64, u64), a: u64, n: u64| a >= d && a.checked_add(n).is_some_and(|e| e <= d.saturating_add(l));
    for &(a, n) in &log.lock().unwrap()[before..] {
        let inside = region.is_some_and(|r| within(r, a, n)) || heap.iter().any(|&b| within(b, a, n));
        assert!(inside, "host access {a:#x}+{n} outside the call's region {region:x?} and the heap's blocks");
    }
    if let Some((buf, len)) = buffer {
        let after = buf.to_vec();
        assert!(after[..GUARD].iter().chain(&after[GUARD + len..]).all(|&b| b == POISON), "guard bytes changed");
    }
}

fuzz_target!(|data: &[u8]| {
    let (base, root) = dirs();
    let input = Arc::new(Mutex::new(data.to_vec()));
    let log = HostAccesses::default();
    let (l, i) = (log.clone(), input.clone());
    let module = EmuModule::new().builtin_hostcalls().entry("main", move |ctx| {
        let bytes = i.lock().unwrap().clone();
        let mut input = Input(&bytes);
        let mut heap = Vec::new();
        while !input.0.is_empty() {
            one_call(ctx, &mut input, &l, &mut heap);
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
