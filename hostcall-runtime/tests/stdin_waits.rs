//! A GPU thread waiting on stdin must not hold up anyone else: while thread 0
//! reads a line that has not been typed yet, the other threads' calls are
//! served. Here the "line" only arrives once the other threads have finished
//! 300 echo calls each; if the server blocked in `read`, they never would,
//! and the input source gives up after 20 s so the test fails instead of
//! hanging.

mod common;

use std::io::{self, Read};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostcall_runtime::backend::emu::{EmuBackend, EmuModule};
use hostcall_runtime::hostcall_abi::op::{Echo, Read as ReadOp};
use hostcall_runtime::QueueConfig;
use hostcall_runtime::Runtime;

const ECHO_THREADS: u64 = 3;
const CALLS: u64 = 300;

/// Stdin that has nothing until `go` is set (or 20 s pass), then one line.
struct LateLine {
    go: Arc<AtomicBool>,
    released_by_go: Arc<AtomicBool>,
    sent: bool,
}

impl Read for LateLine {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.sent {
            return Ok(0);
        }
        let start = Instant::now();
        while !self.go.load(SeqCst) && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.released_by_go.store(self.go.load(SeqCst), SeqCst);
        self.sent = true;
        let line = b"late line\n";
        let n = line.len().min(buf.len());
        buf[..n].copy_from_slice(&line[..n]);
        Ok(n)
    }
}

#[test]
fn a_thread_waiting_on_stdin_does_not_stall_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let go = Arc::new(AtomicBool::new(false));
    let released_by_go = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicU64::new(0));
    let (go_k, finished_k) = (go.clone(), finished.clone());
    let module = EmuModule::new().builtin_hostcalls().global("LINE_LEN").global("BAD").entry("main", move |ctx| {
        let bad = ctx.global("BAD").unwrap();
        if ctx.thread_id == 0 {
            let mut line = [0u8; 64];
            match ctx.request(&ReadOp { fd: 0, len: 64 }, &[], &mut line) {
                Ok(c) if c.errno == 0 && line[..c.data_len] == *b"late line\n" => {
                    ctx.global("LINE_LEN").unwrap().store(c.value, Relaxed);
                }
                other => {
                    eprintln!("stdin read: {other:?}");
                    bad.fetch_add(1, Relaxed);
                }
            }
            return;
        }
        let mut reply = [0u8; 8];
        for i in 0..CALLS {
            let a = u64::from(ctx.thread_id) << 32 | i;
            match ctx.request(&Echo { a, b: 7 }, &[], &mut reply) {
                Ok(c) if c.value == a ^ 7 => {}
                _ => {
                    bad.fetch_add(1, Relaxed);
                }
            }
        }
        if finished_k.fetch_add(1, SeqCst) + 1 == ECHO_THREADS {
            go_k.store(true, SeqCst);
        }
    });
    let (mut cfg, _, _) = common::config(dir.path(), QueueConfig::DEFAULT);
    cfg.stdin = Box::new(LateLine { go, released_by_go: released_by_go.clone(), sent: false });
    let mut rt = Runtime::new(EmuBackend::with_module("test", module), cfg).unwrap();
    rt.load("test").unwrap();
    let report = rt.launch("main", 1, 1 + ECHO_THREADS as u32).expect("run");
    assert_eq!(rt.read_global_u64("BAD").unwrap(), 0);
    assert!(released_by_go.load(SeqCst), "the echo calls only finished after stdin gave up waiting");
    assert_eq!(finished.load(SeqCst), ECHO_THREADS);
    assert_eq!(rt.read_global_u64("LINE_LEN").unwrap(), 10);
    assert_eq!(report.per_op.get("read"), Some(&1), "the deferred read is served (and counted) once");
    assert_eq!(report.per_op.get("echo"), Some(&(ECHO_THREADS * CALLS)));
}
