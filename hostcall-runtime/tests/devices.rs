//! Several devices from one runtime (`hostcall_runtime::devices`), on four
//! emulated devices at once: every call of every device answered, every
//! line of every device once and whole on the shared stdout and stderr,
//! each kernel told its own index, stdin shared byte by byte, the run's exit
//! code the first non-zero one in device order, and a device that exits,
//! faults or is stopped leaves the others to their end (or stops them all,
//! for the watchdog and the stop flag); PTX loads on device 0 alone first (the
//! others reuse what it compiled), a cubin on every device at once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hostcall_runtime::backend::emu::{DeviceCtx, EmuBackend, EmuModule, EmuPlatform};
use hostcall_runtime::backend::{DeviceAlloc, MappedRegion};
use hostcall_runtime::devices::{Devices, DevicesReport, DEVICES_VAR, DEVICE_VAR};
use hostcall_runtime::hostcall_abi::op::{Echo, Getenv, Read as ReadOp, Request, Write};
use hostcall_runtime::hostcall_abi::sync::Platform;
use hostcall_runtime::hostcall_abi::Call;
use hostcall_runtime::hostcall_image::{cubin::testing::cubin, CubinKind};
use hostcall_runtime::{Backend, BackendError, Dim3, KernelState};
use hostcall_runtime::{QueueConfig, RuntimeConfig, RuntimeError, SharedBuf, StopReason};

const DEVICES: usize = 4;
const THREADS: u32 = 64;
/// Echo calls per thread; every `LINE_EVERY`-th is followed by a line.
const CALLS: u64 = 400;
const LINE_EVERY: u64 = 8;
/// Lines thread 0 of each device writes to stderr in three pieces each.
const PIECED: u64 = 100;

/// Four emulated devices, device `d` running `kernel(d)` as `main`, and
/// what they printed to the shared stdout and stderr.
struct Run {
    devices: Devices,
    stdout: SharedBuf,
    stderr: SharedBuf,
    _dir: tempfile::TempDir,
}

fn devices(
    kernel: impl Fn(usize) -> Box<dyn Fn(&DeviceCtx) + Send + Sync>,
    set: impl FnOnce(&mut RuntimeConfig),
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    // Four rings: the echo calls of a device's threads go to all of them.
    let (mut cfg, stdout, stderr) = common::config(dir.path(), QueueConfig { rings: 4, ..QueueConfig::DEFAULT });
    set(&mut cfg);
    let backends = (0..DEVICES).map(|d| {
        let module = EmuModule::new().builtin_hostcalls().global("FAILURES").entry("main", kernel(d));
        EmuBackend::with_module("test", module)
    });
    let mut devices = Devices::new(backends, cfg).expect("a runtime per device");
    let loaded = devices.load(b"test").expect("loaded on every device");
    assert_eq!(loaded.len(), DEVICES);
    Run { devices, stdout, stderr, _dir: dir }
}

fn fail(ctx: &DeviceCtx) {
    ctx.global("FAILURES").unwrap().fetch_add(1, Relaxed);
}

fn getenv(ctx: &DeviceCtx, name: &str) -> Option<String> {
    let mut reply = [0u8; 64];
    let c = ctx.request(&Getenv {}, name.as_bytes(), &mut reply).ok().filter(|c| c.errno == 0)?;
    String::from_utf8(reply[..c.data_len].to_vec()).ok()
}

fn post(ctx: &DeviceCtx, fd: i32, text: &str) {
    if ctx.post(Write::NAME, Call::new(0, Write { fd }.to_args()).payload(text.as_bytes())).is_err() {
        fail(ctx);
    }
}

/// One checked echo call.
fn echo(ctx: &DeviceCtx, a: u64) {
    let b = common::mix(a);
    let payload = (a ^ b).to_le_bytes();
    let mut reply = [0u8; 8];
    match ctx.call(Echo::NAME, Call::new(0, Echo { a, b }.to_args()).payload(&payload), &mut reply) {
        Ok(c) if c.value == a ^ b && reply[..c.data_len] == payload => {}
        _ => fail(ctx),
    }
}

/// The text after a stdout line's key: its length and bytes follow from the
/// key, so a line cut or joined with another is seen.
fn filler(d: usize, t: u32, i: u64) -> String {
    let n = (common::mix(d as u64 ^ u64::from(t) << 8 ^ i << 20) % 200) as usize;
    (0..n).map(|k| char::from(b'a' + ((k + i as usize) % 26) as u8)).collect()
}

/// Device `d`'s kernel: reads its index, then echo calls on every ring with
/// whole lines to stdout among them; thread 0 also writes lines to stderr
/// in three pieces each, a call between pieces (so each piece is flushed
/// alone, and the pieces of different devices would meet mid-line without
/// the joiner). Thread 0 counts its device in `started`, and before it ends
/// waits (up to 10 s) until every device has: they run at once.
fn mixed(d: usize, started: Arc<AtomicUsize>) -> Box<dyn Fn(&DeviceCtx) + Send + Sync> {
    Box::new(move |ctx| {
        if getenv(ctx, DEVICE_VAR) != Some(d.to_string()) || getenv(ctx, DEVICES_VAR) != Some(DEVICES.to_string()) {
            fail(ctx);
        }
        let t = ctx.thread_id;
        if t == 0 {
            started.fetch_add(1, Relaxed);
        }
        for i in 0..CALLS {
            echo(ctx, u64::from(t) << 32 | i);
            if i % LINE_EVERY == 0 {
                post(ctx, 1, &format!("device {d} thread {t} line {i} {}\n", filler(d, t, i)));
            }
        }
        if t == 0 {
            for i in 0..PIECED {
                post(ctx, 2, &format!("device {d} pieced {i}: "));
                echo(ctx, i);
                post(ctx, 2, "middle, ");
                echo(ctx, i);
                post(ctx, 2, "end\n");
            }
            let waiting = Instant::now();
            while started.load(Relaxed) < DEVICES {
                if waiting.elapsed() > Duration::from_secs(10) {
                    return fail(ctx);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    })
}

/// Every device's report, which must all be `Ok`.
fn all_ok(report: &DevicesReport) -> Vec<&hostcall_runtime::RunReport> {
    report.devices.iter().enumerate().map(|(d, r)| r.as_ref().unwrap_or_else(|e| panic!("device {d}: {e}"))).collect()
}

#[test]
fn four_devices_at_once_every_call_answered_every_line_once_and_whole() {
    let started = Arc::new(AtomicUsize::new(0));
    let mut run = devices(|d| mixed(d, started.clone()), |_| {});
    let report = run.devices.launch("main", 2, THREADS / 2);
    assert_eq!(report.exit_code(), 0);
    let lines_per_thread = CALLS.div_ceil(LINE_EVERY);
    let per_device = u64::from(THREADS) * (2 + CALLS + lines_per_thread) + PIECED * 5;
    for (d, r) in all_ok(&report).into_iter().enumerate() {
        assert_eq!((r.calls, r.errors), (per_device, 0), "device {d}: every call served once, none failed");
        assert_eq!(r.calls_per_ring.len(), 4, "device {d}");
    }
    for (d, rt) in run.devices.runtimes_mut().iter_mut().enumerate() {
        let failures = rt.read_global_u64("FAILURES").unwrap();
        assert_eq!(failures, 0, "device {d}: a reply or its index was wrong, or the devices did not run at once");
    }

    // stdout: each (device, thread, line) once, whole, each thread's in order.
    let out = run.stdout.to_string_lossy();
    assert!(out.ends_with('\n'));
    let mut next: BTreeMap<(usize, u32), u64> = BTreeMap::new();
    for line in out.lines() {
        let mut words = line.splitn(7, ' ');
        let mut word = || words.next().unwrap_or_else(|| panic!("torn line {line:?}"));
        let (_, d, _, t, _, i, rest) = (word(), word(), word(), word(), word(), word(), words.next());
        let (d, t, i): (usize, u32, u64) = (d.parse().unwrap(), t.parse().unwrap(), i.parse().unwrap());
        assert_eq!(rest.unwrap_or(""), filler(d, t, i), "line {line:?} whole");
        let expected = next.entry((d, t)).or_insert(0);
        assert_eq!(i, *expected, "device {d} thread {t}: its lines once each, in order");
        *expected += LINE_EVERY;
    }
    assert_eq!(next.len(), DEVICES * THREADS as usize, "every thread of every device printed");
    assert!(next.values().all(|&n| n == lines_per_thread * LINE_EVERY), "every line arrived");

    // stderr: the lines written in pieces came out whole, each device's in order.
    let err = run.stderr.to_string_lossy();
    let mut pieced = vec![0u64; DEVICES];
    for line in err.lines() {
        let d: usize = line.strip_prefix("device ").and_then(|l| l.split(' ').next()?.parse().ok()).expect(line);
        assert_eq!(line, format!("device {d} pieced {}: middle, end", pieced[d]), "whole and in order");
        pieced[d] += 1;
    }
    assert_eq!(pieced, vec![PIECED; DEVICES]);
}

#[test]
fn the_first_nonzero_code_in_device_order_is_the_runs_and_no_device_waits_on_another() {
    // 0 works and returns; 1 prints, works a while and then faults; 2 exits
    // 3 after a while; 3 exits 5 at once (ending first).
    let kernel = |d: usize| -> Box<dyn Fn(&DeviceCtx) + Send + Sync> {
        Box::new(move |ctx| match d {
            0 => {
                for i in 0..CALLS {
                    echo(ctx, i);
                    post(ctx, 1, &format!("device 0 thread {} line {i}\n", ctx.thread_id));
                }
            }
            1 => {
                if ctx.thread_id == 0 {
                    post(ctx, 1, "device 1 before its fault\n");
                    let start = Instant::now();
                    while start.elapsed() < Duration::from_millis(300) {
                        echo(ctx, 1);
                    }
                    ctx.trap();
                }
                loop {
                    echo(ctx, 2);
                }
            }
            2 => {
                std::thread::sleep(Duration::from_millis(100));
                ctx.exit(3)
            }
            _ => ctx.exit(5),
        })
    };
    let mut run = devices(kernel, |_| {});
    let report = run.devices.launch("main", 1, 8);
    match &report.devices[..] {
        [Ok(zero), Err(RuntimeError::KernelFailed { message, .. }), Ok(two), Ok(three)] => {
            assert_eq!((zero.exit_code, zero.calls, zero.errors), (None, 8 * CALLS * 2, 0), "device 0 ran to its end");
            assert!(message.contains("trap"), "{message}");
            assert_eq!((two.exit_code, three.exit_code), (Some(3), Some(5)));
        }
        other => panic!("{other:?}"),
    }
    // The fault's code (1 for the emulation's trap) is device 1's, ahead of
    // device 3's 5 that came first in time and device 2's 3.
    assert_eq!(report.exit_code(), 1);
    let out = run.stdout.to_string_lossy();
    assert_eq!(out.lines().filter(|l| l.starts_with("device 0 ")).count(), 8 * CALLS as usize);
    assert!(out.contains("device 1 before its fault\n"), "a faulted device's output is kept");
    assert_eq!(run.devices.runtimes_mut()[0].read_global_u64("FAILURES").unwrap(), 0);
}

#[test]
fn a_device_exiting_nonzero_gives_its_code_and_its_unfinished_line() {
    let kernel = |d: usize| -> Box<dyn Fn(&DeviceCtx) + Send + Sync> {
        Box::new(move |ctx| match d {
            // Its other threads return: an `exit` of theirs could end the
            // kernel before thread 0 printed.
            2 if ctx.thread_id == 0 => {
                post(ctx, 1, "device 2 ends mid-line");
                ctx.exit(7)
            }
            2 => {}
            3 => ctx.exit(9),
            _ => post(ctx, 1, &format!("device {d} thread {}\n", ctx.thread_id)),
        })
    };
    let mut run = devices(kernel, |_| {});
    let report = run.devices.launch("main", 1, 4);
    assert_eq!(report.exit_code(), 7);
    assert!(!report.any_stopped());
    // Its last line, unfinished, goes out whole when its run ends (another
    // device's line may follow it on the same line, as on a terminal).
    let out = run.stdout.to_string_lossy();
    assert_eq!(out.matches("device 2 ends mid-line").count(), 1, "{out}");
    let rest = out.replace("device 2 ends mid-line", "");
    let mut lines: Vec<&str> = rest.lines().collect();
    lines.sort_unstable();
    let want: Vec<String> = (0..2).flat_map(|d| (0..4).map(move |t| format!("device {d} thread {t}"))).collect();
    assert_eq!(lines, want, "{out}");
}

/// Prints a line, then calls without end (so that the emulation can unwind
/// it once the run is given up, as a GPU kernel is torn down).
fn endless(d: usize) -> Box<dyn Fn(&DeviceCtx) + Send + Sync> {
    Box::new(move |ctx| {
        if ctx.thread_id == 0 {
            post(ctx, 1, &format!("device {d} started\n"));
        }
        loop {
            echo(ctx, 3);
            EmuPlatform::backoff(8);
        }
    })
}

fn stopped_everywhere(report: &DevicesReport, reason: StopReason) {
    for (d, r) in report.devices.iter().enumerate() {
        match r {
            Err(RuntimeError::Stopped { reason: why, .. }) => assert_eq!(*why, reason, "device {d}"),
            other => panic!("device {d}: {other:?}"),
        }
    }
    assert!(report.any_stopped());
}

#[test]
fn the_watchdog_stops_every_device() {
    let timeout = Duration::from_millis(300);
    let mut run = devices(endless, |c| c.timeout = Some(timeout));
    let started = Instant::now();
    let report = run.devices.launch("main", 1, 4);
    assert!(started.elapsed() < timeout + Duration::from_secs(5), "{:?}", started.elapsed());
    stopped_everywhere(&report, StopReason::Timeout(timeout));
    assert_eq!(report.exit_code(), 124);
}

#[test]
fn the_stop_flag_stops_every_device_and_keeps_their_output() {
    let stop = Arc::new(AtomicUsize::new(0));
    let mut run = devices(endless, |c| c.stop = Some(stop.clone()));
    let (flag, out) = (stop.clone(), run.stdout.clone());
    let signaller = std::thread::spawn(move || {
        // Once every device has printed (10 s at most), as Ctrl-C would.
        let waiting = Instant::now();
        while out.to_string_lossy().lines().count() < DEVICES && waiting.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        flag.store(15, Ordering::Relaxed);
    });
    let report = run.devices.launch("main", 1, 4);
    signaller.join().unwrap();
    stopped_everywhere(&report, StopReason::Signal(15));
    assert_eq!(report.exit_code(), 143);
    let out: BTreeSet<String> = run.stdout.to_string_lossy().lines().map(str::to_owned).collect();
    assert_eq!(out, (0..DEVICES).map(|d| format!("device {d} started")).collect());
}

#[test]
fn the_devices_share_stdin_each_record_read_once() {
    const RECORDS: usize = 20_000;
    // 8-byte records, read 8 bytes a call: a read never splits one (the
    // reader takes 64 KiB chunks, a multiple of 8).
    let input: String = (0..RECORDS).map(|r| format!("{r:07}\n")).collect();
    let kernel = |d: usize| -> Box<dyn Fn(&DeviceCtx) + Send + Sync> {
        Box::new(move |ctx| {
            let mut record = [0u8; 8];
            loop {
                match ctx.request(&ReadOp { fd: 0, len: 8 }, &[], &mut record) {
                    Ok(c) if c.errno == 0 && c.data_len == 0 => return,
                    Ok(c) if c.errno == 0 && c.data_len == 8 => {
                        post(ctx, 1, &format!("device {d} read {}", String::from_utf8_lossy(&record)))
                    }
                    _ => return fail(ctx),
                }
            }
        })
    };
    let mut run = devices(kernel, |c| c.stdin = Box::new(std::io::Cursor::new(input.clone().into_bytes())));
    let report = run.devices.launch("main", 1, 2);
    assert_eq!(report.exit_code(), 0);
    all_ok(&report);
    for rt in run.devices.runtimes_mut() {
        assert_eq!(rt.read_global_u64("FAILURES").unwrap(), 0);
    }
    let out = run.stdout.to_string_lossy();
    let mut read: Vec<usize> = out.lines().map(|l| l.rsplit(' ').next().unwrap().parse().expect(l)).collect();
    read.sort_unstable();
    assert_eq!(read, (0..RECORDS).collect::<Vec<_>>(), "every record once, by one device");
}

#[test]
fn a_run_on_no_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _, _) = common::config(dir.path(), QueueConfig::DEFAULT);
    match Devices::new(Vec::<EmuBackend>::new(), cfg) {
        Err(RuntimeError::Config(m)) => assert!(m.contains("no device"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("an empty run was accepted"),
    }
}

#[test]
fn a_device_that_cannot_load_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _, _) = common::config(dir.path(), QueueConfig::DEFAULT);
    let backends = (0..3).map(|d| {
        let mut b = EmuBackend::new();
        if d != 2 {
            b.add_module("test", EmuModule::new().entry("main", |_| {}));
        }
        b
    });
    let mut devices = Devices::new(backends, cfg).unwrap();
    let e = devices.load(b"test").unwrap_err();
    assert_eq!(e.device, 2);
    assert_eq!(e.to_string(), "device 2: emu: no module named `test` was added");
}

/// When each device's load began and ended.
type Loads = Arc<Mutex<Vec<(usize, Instant, Instant)>>>;

/// An emulated device that takes cubins for sm_90 and whose every load
/// takes 100 ms (as a driver's compile would) and is logged; whatever the
/// image, it loads the module "test".
struct SlowLoad {
    emu: EmuBackend,
    device: usize,
    loads: Loads,
}

impl Backend for SlowLoad {
    fn name(&self) -> &str {
        "slow-load emu"
    }
    fn load_module(&mut self, _: &[u8]) -> Result<(), BackendError> {
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(100));
        self.emu.load_module(b"test")?;
        self.loads.lock().unwrap().push((self.device, start, Instant::now()));
        Ok(())
    }
    fn cubin_arch(&self) -> Option<String> {
        Some("sm_90".into())
    }
    fn globals(&self) -> Result<Vec<String>, BackendError> {
        self.emu.globals()
    }
    fn write_global_u64(&mut self, name: &str, value: u64) -> Result<(), BackendError> {
        self.emu.write_global_u64(name, value)
    }
    fn read_global_u64(&mut self, name: &str) -> Result<u64, BackendError> {
        self.emu.read_global_u64(name)
    }
    fn alloc_mapped(&mut self, words: usize) -> Result<MappedRegion, BackendError> {
        self.emu.alloc_mapped(words)
    }
    fn alloc_device(&mut self, bytes: usize) -> Result<DeviceAlloc, BackendError> {
        self.emu.alloc_device(bytes)
    }
    fn launch(&mut self, entry: &str, grid: Dim3, block: Dim3) -> Result<(), BackendError> {
        self.emu.launch(entry, grid, block)
    }
    fn query(&mut self) -> KernelState {
        self.emu.query()
    }
    fn copy_from_device(&mut self, addr: u64, out: &mut [u8]) -> Result<(), BackendError> {
        self.emu.copy_from_device(addr, out)
    }
    fn copy_to_device(&mut self, addr: u64, data: &[u8]) -> Result<(), BackendError> {
        self.emu.copy_to_device(addr, data)
    }
}

fn slow_devices(loads: &Loads) -> (Devices, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _, _) = common::config(dir.path(), QueueConfig::DEFAULT);
    let backends = (0..DEVICES).map(|device| SlowLoad {
        emu: EmuBackend::with_module("test", EmuModule::new().entry("main", |_| {})),
        device,
        loads: loads.clone(),
    });
    (Devices::new(backends, cfg).unwrap(), dir)
}

#[test]
fn ptx_loads_on_the_first_device_alone_then_on_the_others_at_once() {
    let loads = Loads::default();
    let (mut devices, _root) = slow_devices(&loads);
    let times = devices.load_best(b"PTX text", None).unwrap();
    assert_eq!(times.len(), DEVICES);
    let loads = loads.lock().unwrap().clone();
    let first = loads.iter().find(|l| l.0 == 0).expect("device 0 loaded");
    let others: Vec<_> = loads.iter().filter(|l| l.0 != 0).collect();
    assert_eq!(others.len(), DEVICES - 1, "each device loads once");
    assert!(others.iter().all(|o| o.1 >= first.2), "device 0 first, alone (what it compiles, the others reuse)");
    let (last_start, first_end) = (others.iter().map(|o| o.1).max(), others.iter().map(|o| o.2).min());
    assert!(last_start < first_end, "the others at once");
    assert!(devices.launch("main", 1, 1).exit_code() == 0);
}

#[test]
fn a_cubin_that_suits_loads_on_every_device_at_once() {
    let loads = Loads::default();
    let (mut devices, _root) = slow_devices(&loads);
    let sm90 = cubin(CubinKind::Relocatable, 90, &["main"], &[]);
    devices.load_best(b"PTX text", Some(&sm90)).unwrap();
    let loads = loads.lock().unwrap().clone();
    assert_eq!(loads.len(), DEVICES, "each device loads once");
    let (last_start, first_end) = (loads.iter().map(|l| l.1).max(), loads.iter().map(|l| l.2).min());
    assert!(last_start < first_end, "all at once");
}
