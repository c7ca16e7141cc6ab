//! Every thread printing and writing files at once, for a while, through the
//! smallest ring the protocol allows (it is full nearly all the time): every
//! line arrives once, whole, in its thread's order, and every file holds
//! exactly the bytes its thread wrote, inline or from a device buffer.
//!
//! `HOSTCALL_LOAD_SECS` sets how long the threads keep going (default 10;
//! `.ci/run` runs it for 60).

mod common;

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostcall_runtime::backend::emu::{DeviceCtx, EmuModule};
use hostcall_runtime::hostcall_abi::op::{Close, Open, Read, Request, Write};
use hostcall_runtime::hostcall_abi::{limits, Call};
use hostcall_runtime::QueueConfig;

use common::flags::{AT_FDCWD, O_CREAT, O_RDONLY, O_TRUNC, O_WRONLY};

const THREADS: u32 = 8;

/// Thread `t`'s line `i`: a number of words that varies, so lines straddle
/// the host's flush boundaries at every offset.
fn line(t: u32, i: u64) -> String {
    let h = common::mix(u64::from(t) << 32 | i);
    let words = (h % 24) as usize;
    let mut s = format!("t{t} i{i}");
    for w in 0..words {
        s.push_str(&format!(" {:x}", common::mix(h ^ w as u64) & 0xffff));
    }
    s.push('\n');
    s
}

/// Bytes that file chunks are windows of (cheap to make on the device side,
/// so that the threads outpace the server).
fn pattern() -> &'static [u8] {
    static PATTERN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| (0..4 * limits::MAX_INLINE as u64).map(|j| (common::mix(j) >> 56) as u8).collect())
}

/// Thread `t`'s file chunk `k`: up to 3 x MAX_INLINE bytes, so that some go
/// inline and some from a device buffer.
fn chunk(t: u32, k: u64) -> &'static [u8] {
    let h = common::mix(u64::from(t) << 40 | k | 1 << 63);
    let len = (h % (3 * limits::MAX_INLINE as u64 + 1)) as usize;
    let off = (h >> 32) as usize % limits::MAX_INLINE;
    &pattern()[off..off + len]
}

fn write_chunk(ctx: &DeviceCtx, fd: i32, bytes: &[u8]) -> bool {
    let mut reply = [0u8; 0];
    let done = if bytes.len() <= limits::MAX_INLINE {
        ctx.request(&Write { fd }, bytes, &mut reply)
    } else {
        let buf = ctx.alloc(bytes.len());
        buf.fill_from(bytes);
        ctx.call(
            Write::NAME,
            Call::new(0, Write { fd }.to_args()).device_region(buf.addr(), buf.len() as u64),
            &mut reply,
        )
    };
    matches!(done, Ok(c) if c.errno == 0 && c.value == bytes.len() as u64)
}

/// `openat(path, flags)`, or `None`.
fn open(ctx: &DeviceCtx, path: &str, flags: i32) -> Option<i32> {
    let done = ctx.request(&Open { dirfd: AT_FDCWD, flags, mode: 0o644 }, path.as_bytes(), &mut []).ok()?;
    (done.errno == 0).then_some(done.value as i32)
}

fn close(ctx: &DeviceCtx, fd: i32) -> bool {
    matches!(ctx.request(&Close { fd }, &[], &mut []), Ok(done) if done.errno == 0)
}

/// Read `fd` to its end into a device buffer: what the host's file holds.
fn read_back(ctx: &DeviceCtx, fd: i32, len: usize) -> Option<Vec<u8>> {
    let buf = ctx.alloc(len + 1);
    let mut got = 0;
    loop {
        let call = Call::new(0, Read { fd, len: (len + 1 - got) as u64 }.to_args())
            .device_region(buf.addr() + got as u64, (len + 1 - got) as u64);
        let done = ctx.call(Read::NAME, call, &mut []).ok().filter(|d| d.errno == 0)?;
        if done.value == 0 {
            return Some(buf.to_vec()[..got].to_vec());
        }
        got += done.value as usize;
        if got > len {
            return None;
        }
    }
}

/// Chunks per file round: a thread writes its file, reads it back and checks
/// it, then starts the next round on a truncated file (so a long run does not
/// fill the disk).
const ROUND: u64 = 32;

#[test]
fn full_grid_prints_and_writes_files_through_a_full_ring() {
    let secs: f64 = std::env::var("HOSTCALL_LOAD_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let dir = tempfile::tempdir().unwrap();
    // What each thread did: lines printed, file chunks written.
    let lines: Arc<Vec<AtomicU64>> = Arc::new((0..THREADS).map(|_| AtomicU64::new(0)).collect());
    let chunks: Arc<Vec<AtomicU64>> = Arc::new((0..THREADS).map(|_| AtomicU64::new(0)).collect());
    let (checked, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let (l, c, checked_bytes, f) = (lines.clone(), chunks.clone(), checked.clone(), failures.clone());
    let module = EmuModule::new().builtin_hostcalls().entry("load", move |ctx| {
        let t = ctx.thread_id;
        let fail = |what: &str| {
            if f.fetch_add(1, Relaxed) < 5 {
                eprintln!("thread {t}: {what}");
            }
        };
        let path = format!("t{t}.bin");
        let (mut i, mut k) = (0u64, 0u64);
        let mut fd = open(ctx, &path, O_CREAT | O_WRONLY | O_TRUNC);
        let mut written = 0usize;
        while Instant::now() < deadline {
            let text = line(t, i);
            if ctx.post(Write::NAME, Call::new(0, Write { fd: 1 }.to_args()).payload(text.as_bytes())).is_err() {
                fail("posted write");
            }
            i += 1;
            if i % 4 != 0 {
                continue;
            }
            let Some(w) = fd else { return fail("open") };
            let bytes = chunk(t, k);
            if !write_chunk(ctx, w, bytes) {
                fail("file write");
            }
            written += bytes.len();
            k += 1;
            if k % ROUND == 0 {
                // The round's file, read back through the host.
                let first = k - ROUND;
                let want: Vec<u8> = (first..k).flat_map(|k| chunk(t, k).iter().copied()).collect();
                let ok = close(ctx, w)
                    && open(ctx, &path, O_RDONLY).is_some_and(|r| {
                        let same = read_back(ctx, r, written).is_some_and(|got| got == want);
                        close(ctx, r) && same
                    });
                if !ok {
                    fail("round read back differs");
                }
                checked_bytes.fetch_add(written as u64, Relaxed);
                written = 0;
                fd = open(ctx, &path, O_CREAT | O_WRONLY | O_TRUNC);
            }
        }
        if !fd.is_some_and(|w| close(ctx, w)) {
            fail("close");
        }
        l[t as usize].store(i, Relaxed);
        c[t as usize].store(k, Relaxed);
    });
    let queue = QueueConfig { buff_size: limits::MIN_BUFF_SIZE, ..QueueConfig::DEFAULT };
    let mut rig = common::rig(dir.path(), queue, module);
    let report = rig.rt.launch("load", 4, THREADS / 4).expect("run");
    assert_eq!(failures.load(Relaxed), 0, "calls failed on the device side");
    assert_eq!((report.errors, report.handler_panics), (0, 0));

    // stdout: each thread's lines, in order, each once and whole.
    let out = rig.stdout.contents();
    let text = std::str::from_utf8(&out).expect("stdout is the UTF-8 the threads wrote");
    let mut next = vec![0u64; THREADS as usize];
    for got in text.split_inclusive('\n') {
        let t: u32 = got
            .strip_prefix('t')
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .filter(|&t| t < THREADS)
            .unwrap_or_else(|| panic!("torn or foreign line {got:?}"));
        let want = line(t, next[t as usize]);
        assert_eq!(got, want, "thread {t}'s line {} torn, lost or out of order", next[t as usize]);
        next[t as usize] += 1;
    }
    let printed: Vec<u64> = lines.iter().map(|n| n.load(Relaxed)).collect();
    assert_eq!(next, printed, "lines printed vs lines on stdout, per thread");

    // Files: each holds its last round's chunks, in order (the device read
    // back and checked every round before).
    let mut bytes = checked.load(Relaxed) as usize;
    for t in 0..THREADS {
        let k = chunks[t as usize].load(Relaxed);
        let want: Vec<u8> = (k - k % ROUND..k).flat_map(|k| chunk(t, k).iter().copied()).collect();
        let got = std::fs::read(dir.path().join(format!("t{t}.bin"))).unwrap();
        assert!(got == want, "thread {t}'s file: {} bytes, {} expected", got.len(), want.len());
        bytes += got.len();
    }
    let total_lines: u64 = printed.iter().sum();
    assert!(total_lines >= u64::from(THREADS), "every thread printed");
    let idle = report.server_idle.as_secs_f64() / report.elapsed.as_secs_f64();
    eprintln!(
        "{secs} s: {total_lines} lines ({} bytes) and {bytes} file bytes from {THREADS} threads through a {}-byte ring; \
         {} calls in {} records; the server found the ring empty {:.1}% of the time",
        out.len(),
        limits::MIN_BUFF_SIZE,
        report.calls,
        report.records,
        100.0 * idle
    );
}
