//! Posted stdout/stderr writes are coalesced on the host
//! (`handlers::output`): every line whole and in its thread's order, stdout
//! and stderr in the order they were issued, few large writes, output that
//! streams while the kernel computes, and failed flushes counted.

mod common;

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hostcall_runtime::backend::emu::{DeviceCtx, EmuBackend, EmuModule};
use hostcall_runtime::handlers::output::FLUSH_AT;
use hostcall_runtime::hostcall_abi::op::{Request, Write as WriteOp};
use hostcall_runtime::hostcall_abi::{Call, Errno};
use hostcall_runtime::QueueConfig;
use hostcall_runtime::{RunReport, Runtime};

/// When each `write` call came, and its bytes.
type Writes = Vec<(Instant, Vec<u8>)>;

/// A sink that records every `write` call (both streams may share one).
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Writes>>);

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().push((Instant::now(), buf.to_vec()));
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Recorder {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().iter().flat_map(|(_, b)| b.clone()).collect()
    }
    fn writes(&self) -> Vec<usize> {
        self.0.lock().unwrap().iter().map(|(_, b)| b.len()).collect()
    }
}

struct Broken;

impl Write for Broken {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(Errno::EPIPE.0 as i32))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn post(ctx: &DeviceCtx, fd: i32, text: &[u8]) {
    ctx.post("write", Call::new(0, WriteOp { fd }.to_args()).payload(text)).unwrap();
}

fn run(
    threads: u32,
    stdout: impl Write + Send + 'static,
    stderr: impl Write + Send + 'static,
    kernel: impl Fn(&DeviceCtx) + Send + Sync + 'static,
) -> RunReport {
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, _, _) = common::config(dir.path(), QueueConfig::DEFAULT);
    cfg.stdout = Box::new(stdout);
    cfg.stderr = Box::new(stderr);
    let module = EmuModule::new().builtin_hostcalls().entry("main", kernel);
    let mut rt = Runtime::new(EmuBackend::with_module("test", module), cfg).unwrap();
    rt.load("test").unwrap();
    rt.launch("main", 1, threads).expect("run")
}

#[test]
fn every_line_arrives_whole_in_its_threads_order_in_few_writes() {
    let out = Recorder::default();
    let (threads, lines) = (64u32, 200usize);
    run(threads, out.clone(), io::sink(), move |ctx| {
        for i in 0..lines {
            post(ctx, 1, format!("thread {} line {i}\n", ctx.thread_id).as_bytes());
        }
    });
    let text = String::from_utf8(out.bytes()).unwrap();
    let mut next = vec![0usize; threads as usize];
    for line in text.lines() {
        let (t, i) = line.strip_prefix("thread ").and_then(|l| l.split_once(" line ")).expect(line);
        let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next[t], "thread {t}'s lines in order");
        next[t] += 1;
    }
    assert!(next.iter().all(|&n| n == lines), "every line once");
    let writes = out.writes();
    assert!(
        writes.len() < threads as usize * lines / 4,
        "{} writes for {} lines",
        writes.len(),
        threads as usize * lines
    );
    let biggest = writes.iter().max().copied().unwrap_or(0);
    assert!(biggest < FLUSH_AT + 4096, "a flush is bounded: {biggest}");
}

#[test]
fn stdout_and_stderr_keep_the_order_they_were_issued_in() {
    let terminal = Recorder::default();
    run(1, terminal.clone(), terminal.clone(), |ctx| {
        for i in 0..50 {
            post(ctx, 1, format!("out {i}\n").as_bytes());
            post(ctx, 1, format!("out {i}b\n").as_bytes());
            post(ctx, 2, format!("err {i}\n").as_bytes());
        }
    });
    let expected: String = (0..50).map(|i| format!("out {i}\nout {i}b\nerr {i}\n")).collect();
    assert_eq!(String::from_utf8(terminal.bytes()).unwrap(), expected);
}

#[test]
fn output_goes_out_before_the_next_call_that_is_not_output() {
    let out = Recorder::default();
    let seen = Arc::new(Mutex::new(None));
    let (o, s) = (out.clone(), seen.clone());
    run(1, out.clone(), io::sink(), move |ctx| {
        post(ctx, 1, b"before the clock\n");
        // Any other call: the line must be written by the time it is served.
        let _ = ctx.call("clock_gettime", Call::new(0, [0; hostcall_runtime::hostcall_abi::ARG_WORDS]), &mut [0u8; 64]);
        *s.lock().unwrap() = Some(o.bytes());
    });
    assert_eq!(seen.lock().unwrap().as_deref(), Some(&b"before the clock\n"[..]));
}

#[test]
fn a_line_streams_while_the_kernel_computes() {
    let out = Recorder::default();
    let posted = Arc::new(Mutex::new(None));
    let p = posted.clone();
    run(1, out.clone(), io::sink(), move |ctx| {
        *p.lock().unwrap() = Some(Instant::now());
        post(ctx, 1, b"early\n");
        std::thread::sleep(Duration::from_millis(600)); // "computes"
    });
    let posted = posted.lock().unwrap().expect("posted");
    let written = out.0.lock().unwrap().first().map(|(t, _)| *t).expect("written");
    assert!(written - posted < Duration::from_millis(50), "took {:?}", written - posted);
}

#[test]
fn a_failed_flush_counts_every_line_in_it() {
    let report = run(4, Broken, io::sink(), |ctx| {
        for _ in 0..25 {
            post(ctx, 1, b"lost\n");
        }
    });
    assert_eq!(report.unanswered_errors, 100);
    assert_eq!(report.first_unanswered, Some(("write".to_string(), Errno::EPIPE)));
}
