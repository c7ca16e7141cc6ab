//! The built-in handlers through the real server on the emulation backend:
//! each test is a small device program whose calls go over the queue.

mod common;

use std::sync::{Arc, Mutex};

use hostcall_runtime::backend::emu::{DeviceCtx, EmuModule};
use hostcall_runtime::handlers::stat::decode;
use hostcall_runtime::hostcall_abi::op::HEAP_ALIGN;
use hostcall_runtime::hostcall_abi::op::*;
use hostcall_runtime::hostcall_abi::{Call, CallError, Errno};
use hostcall_runtime::QueueConfig;
use hostcall_runtime::{HostError, RuntimeError};

use common::flags::{AT_FDCWD, O_CREAT, O_DIRECTORY, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY};

/// `(value, errno, reply data)` of one call.
fn call<R: Request>(ctx: &DeviceCtx, req: R, payload: &[u8]) -> (u64, u32, Vec<u8>) {
    let mut buf = vec![0u8; 4096];
    let c = ctx.request(&req, payload, &mut buf).expect("call");
    buf.truncate(c.data_len);
    (c.value, c.errno, buf)
}

fn open(ctx: &DeviceCtx, path: &str, flags: i32) -> Result<i32, u32> {
    match call(ctx, Open { dirfd: AT_FDCWD, flags, mode: 0o644 }, path.as_bytes()) {
        (fd, 0, _) => Ok(fd as i32),
        (_, e, _) => Err(e),
    }
}

#[test]
fn sandbox_escapes_are_refused() {
    let (base, root) = common::root_beside_secret();
    std::os::unix::fs::symlink(base.path().join("secret"), root.join("abs_link")).unwrap();
    std::os::unix::fs::symlink("../secret", root.join("rel_link")).unwrap();
    std::fs::create_dir(root.join("d")).unwrap();
    std::os::unix::fs::symlink("../../secret", root.join("d/deep_link")).unwrap();
    std::fs::write(root.join("inside"), b"ok").unwrap();
    std::os::unix::fs::symlink("inside", root.join("ok_link")).unwrap();
    let (_, rig) = common::run_ok(&root, |ctx| {
        let eacces = Err(Errno::EACCES.0);
        assert_eq!(open(ctx, "../secret", O_RDONLY), eacces, "..");
        assert_eq!(open(ctx, "d/../../secret", O_RDONLY), eacces, "nested ..");
        assert_eq!(open(ctx, "abs_link", O_RDONLY), eacces, "absolute symlink");
        assert_eq!(open(ctx, "rel_link", O_RDONLY), eacces, "relative symlink out");
        assert_eq!(open(ctx, "d/deep_link", O_RDONLY), eacces, "symlink out from a subdir");
        assert_eq!(open(ctx, "rel_link", O_WRONLY | O_CREAT | O_TRUNC), eacces, "create through a symlink");
        // Absolute paths are rooted at the sandbox: never the host's file.
        assert_eq!(open(ctx, "/etc/passwd", O_RDONLY), Err(Errno::ENOENT.0));
        // Inside the root, links and absolute paths work.
        let fd = open(ctx, "/inside", O_RDONLY).unwrap();
        assert_eq!(call(ctx, Read { fd, len: 10 }, &[]).2, b"ok");
        let fd2 = open(ctx, "ok_link", O_RDONLY).unwrap();
        assert_eq!(call(ctx, Read { fd: fd2, len: 10 }, &[]).2, b"ok");
        // The other path-taking calls are confined too.
        assert_eq!(call(ctx, Unlink { dirfd: AT_FDCWD, flags: 0 }, b"../secret").1, Errno::EACCES.0);
        assert_eq!(call(ctx, Mkdir { dirfd: AT_FDCWD, mode: 0o755 }, b"rel_link/x").1, Errno::EACCES.0);
        assert_eq!(call(ctx, Statx { dirfd: AT_FDCWD, flags: 0, mask: 0xfff }, b"abs_link").1, Errno::EACCES.0);
        let old = b"inside";
        let mut both = old.to_vec();
        both.extend_from_slice(b"../stolen");
        assert_eq!(call(ctx, Rename { old_len: old.len() as u32 }, &both).1, Errno::EACCES.0);
        // openat from a directory fd cannot climb out either.
        let dfd = open(ctx, "d", O_RDONLY | O_DIRECTORY).unwrap();
        let r = call(ctx, Open { dirfd: dfd, flags: O_RDONLY, mode: 0 }, b"../../secret");
        assert_eq!(r.1, Errno::EACCES.0);
    });
    assert_eq!(std::fs::read(base.path().join("secret")).unwrap(), b"outside");
    assert!(!base.path().join("stolen").exists());
    drop(rig);
}

#[test]
fn file_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (report, _rig) = common::run_ok(dir.path(), |ctx| {
        assert_eq!(call(ctx, Mkdir { dirfd: AT_FDCWD, mode: 0o755 }, b"sub").1, 0);
        let fd = open(ctx, "sub/f.txt", O_RDWR | O_CREAT | O_TRUNC).unwrap();
        assert!(fd >= 3);
        assert_eq!(call(ctx, Write { fd }, b"hello, world").0, 12);
        assert_eq!(call(ctx, Lseek { fd, offset: 0, whence: 0 }, &[]).0, 0);
        assert_eq!(call(ctx, Read { fd, len: 5 }, &[]).2, b"hello");
        assert_eq!(call(ctx, Pread { fd, offset: 7, len: 100 }, &[]).2, b"world");
        assert_eq!(call(ctx, Pwrite { fd, offset: 7 }, b"WORLD").0, 5);
        assert_eq!(call(ctx, Lseek { fd, offset: 0, whence: 2 }, &[]).0, 12);
        let (v, e, st) = call(ctx, Fstat { fd }, &[]);
        assert_eq!((v, e, st.len()), (0, 0, 144));
        assert_eq!(decode::stat_size(&st), Some(12));
        assert_eq!(decode::stat_mode(&st).unwrap() & 0o170000, 0o100000, "regular file");
        let (_, e, sx) = call(ctx, Statx { dirfd: AT_FDCWD, flags: 0, mask: 0xfff }, b"sub/f.txt");
        assert_eq!((e, sx.len()), (0, 256));
        assert_eq!(decode::statx_size(&sx), Some(12));
        assert_eq!(decode::statx_ino(&sx), decode::stat_ino(&st));
        // AT_EMPTY_PATH with an empty path stats the fd itself.
        let (_, e, sx2) = call(ctx, Statx { dirfd: fd, flags: 0x1000, mask: 0xfff }, b"");
        assert_eq!(e, 0);
        assert_eq!(decode::statx_ino(&sx2), decode::stat_ino(&st));
        assert_eq!(call(ctx, Statx { dirfd: fd, flags: 0, mask: 0xfff }, b"").1, Errno::ENOENT.0);
        assert_eq!(call(ctx, Close { fd }, &[]).1, 0);
        assert_eq!(call(ctx, Close { fd }, &[]).1, Errno::EBADF.0);
        assert_eq!(call(ctx, Read { fd, len: 1 }, &[]).1, Errno::EBADF.0);
        // Reopen, read everything back.
        let fd = open(ctx, "/sub/f.txt", O_RDONLY).unwrap();
        assert_eq!(call(ctx, Read { fd, len: 4096 }, &[]).2, b"hello, WORLD");
        assert_eq!(call(ctx, Read { fd, len: 4096 }, &[]).0, 0, "EOF");
        call(ctx, Close { fd }, &[]);
        // Rename, unlink, rmdir.
        let mut both = b"sub/f.txt".to_vec();
        both.extend_from_slice(b"sub/g.txt");
        assert_eq!(call(ctx, Rename { old_len: 9 }, &both).1, 0);
        assert_eq!(open(ctx, "sub/f.txt", O_RDONLY), Err(Errno::ENOENT.0));
        assert_eq!(call(ctx, Unlink { dirfd: AT_FDCWD, flags: 0x200 }, b"sub").1, Errno::ENOTEMPTY.0);
        assert_eq!(call(ctx, Unlink { dirfd: AT_FDCWD, flags: 0 }, b"sub/g.txt").1, 0);
        assert_eq!(call(ctx, Unlink { dirfd: AT_FDCWD, flags: 0x200 }, b"sub").1, 0);
        assert_eq!(call(ctx, Statx { dirfd: AT_FDCWD, flags: 0, mask: 0xfff }, b"sub").1, Errno::ENOENT.0);
        // getcwd is the sandbox root.
        assert_eq!(call(ctx, Getcwd {}, &[]).2, b"/");
    });
    assert!(!dir.path().join("sub").exists());
    assert!(report.per_op["open"] >= 3);
}

#[test]
fn device_regions_carry_bulk_reads_and_writes() {
    let dir = tempfile::tempdir().unwrap();
    // Several of the backend's staging pieces, the last one short.
    let big: Vec<u8> = (0..9_449_000u32).map(|i| (i ^ (i >> 9) ^ (i >> 17)) as u8).collect();
    let mut expected = big[..5].to_vec();
    expected.extend_from_slice(&big);
    let (_, _rig) = common::run_ok(dir.path(), move |ctx| {
        let buf = ctx.alloc(big.len());
        buf.fill_from(&big);
        let fd = open(ctx, "bulk", O_RDWR | O_CREAT | O_TRUNC).unwrap();
        let w = Call::new(0, Write { fd }.to_args()).device_region(buf.addr(), buf.len() as u64);
        let c = ctx.call(Write::NAME, w, &mut []).unwrap();
        assert_eq!((c.value, c.errno), (big.len() as u64, 0));
        let back = ctx.alloc(big.len() + 10);
        let r = Call::new(0, Pread { fd, offset: 0, len: u64::MAX }.to_args())
            .device_region(back.addr(), back.len() as u64);
        let c = ctx.call(Pread::NAME, r, &mut []).unwrap();
        assert_eq!((c.value, c.errno, c.data_len), (big.len() as u64, 0, 0));
        assert_eq!(&back.to_vec()[..big.len()], &big[..]);
        // pwrite at an offset: every piece lands at its own place.
        let pw = Call::new(0, Pwrite { fd, offset: 5 }.to_args()).device_region(buf.addr(), buf.len() as u64);
        assert_eq!(ctx.call(Pwrite::NAME, pw, &mut []).unwrap().value, big.len() as u64);
        // read at the file's position: large pieces are read by several
        // threads (`handlers::readers`), and the position moves past them.
        let mut file = big[..5].to_vec();
        file.extend_from_slice(&big);
        assert_eq!(call(ctx, Lseek { fd, offset: 7, whence: 0 }, &[]), (7, 0, vec![]));
        let len = 6 << 20;
        let r = Call::new(0, Read { fd, len }.to_args()).device_region(back.addr(), back.len() as u64);
        assert_eq!(ctx.call(Read::NAME, r, &mut []).unwrap().value, len);
        assert!(back.to_vec()[..len as usize] == file[7..7 + len as usize], "the bytes of a split read");
        let next = 7 + len as usize;
        assert_eq!(call(ctx, Read { fd, len: 10 }, &[]), (10, 0, file[next..next + 10].to_vec()), "where it left off");
        // A region the device never had: the host's copy fails, EFAULT.
        let bad = Call::new(0, Write { fd }.to_args()).device_region(0x10, 64);
        assert_eq!(ctx.call(Write::NAME, bad, &mut []).unwrap().errno, Errno::EFAULT.0);
        // read's len bounds the region use.
        let small =
            Call::new(0, Pread { fd, offset: 0, len: 3 }.to_args()).device_region(back.addr(), back.len() as u64);
        assert_eq!(ctx.call(Pread::NAME, small, &mut []).unwrap().value, 3);
        // Echo is concurrent: it never sees a region, only its payload.
        let e = Call::new(0, Echo { a: 1, b: 2 }.to_args()).payload(b"inline").device_region(buf.addr(), 16);
        let mut out = [0u8; 32];
        let c = ctx.call(Echo::NAME, e, &mut out).unwrap();
        assert_eq!((c.value, c.data_len), (3, 6));
        assert_eq!(&out[..6], b"inline");
    });
    assert_eq!(std::fs::read(dir.path().join("bulk")).unwrap(), expected);
}

#[test]
fn stdio_env_args_clock_random() {
    let dir = tempfile::tempdir().unwrap();
    let (_, rig) = common::run_ok(dir.path(), |ctx| {
        assert_eq!(call(ctx, Write { fd: 1 }, b"to stdout\n").0, 10);
        assert_eq!(call(ctx, Write { fd: 2 }, b"to stderr\n").0, 10);
        assert_eq!(call(ctx, Read { fd: 0, len: 10 }, &[]).0, 0, "empty stdin is EOF");
        assert_eq!(call(ctx, Read { fd: 1, len: 10 }, &[]).1, Errno::EBADF.0);
        assert_eq!(call(ctx, Lseek { fd: 1, offset: 0, whence: 0 }, &[]).1, Errno::ESPIPE.0);
        assert_eq!(call(ctx, Fstat { fd: 1 }, &[]).2.len(), 144);
        assert_eq!(call(ctx, Getenv {}, b"HOSTCALL_TEST"), (3, 0, b"yes".to_vec()));
        assert_eq!(call(ctx, Getenv {}, b"NOT_SET_ANYWHERE").1, Errno::ENOENT.0);
        assert_eq!(call(ctx, Arg { index: 1 }, &[]).2, b"--flag");
        assert_eq!(call(ctx, Arg { index: 2 }, &[]).1, Errno::ENOENT.0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let (t, e, _) = call(ctx, ClockGettime { clock: 0 }, &[]);
        assert_eq!(e, 0);
        assert!(t.abs_diff(now) < 60_000_000_000, "REALTIME within a minute of the host's");
        assert_eq!(call(ctx, ClockGettime { clock: 99 }, &[]).1, Errno::EINVAL.0);
        let (n, e, r1) = call(ctx, Getrandom { len: 64, flags: 0 }, &[]);
        let (_, _, r2) = call(ctx, Getrandom { len: 64, flags: 0 }, &[]);
        assert_eq!((n, e, r1.len()), (64, 0, 64));
        assert_ne!(r1, r2);
        assert_eq!(call(ctx, Unsupported {}, b"pthread_create").1, Errno::ENOSYS.0);
        // Arguments that do not decode are EINVAL, not a crash.
        let bad = Call::new(ctx.hostcall_id("close"), [1 << 40, 0, 0]);
        assert_eq!(
            ctx.queue().unwrap().call::<hostcall_runtime::backend::emu::EmuPlatform>(&bad, &mut []).unwrap().errno,
            Errno::EINVAL.0
        );
    });
    assert_eq!(rig.stdout.to_string_lossy(), "to stdout\n");
    assert_eq!(rig.stderr.to_string_lossy(), "to stderr\n");
    assert_eq!(rig.rt.state().unsupported, ["pthread_create"]);
}

#[test]
fn missing_handlers_are_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let module = EmuModule::new().hostcall("open").hostcall("frobnicate").hostcall("teleport").entry("main", |_| {});
    let mut rig = common::rig(dir.path(), QueueConfig::DEFAULT, module);
    match rig.rt.check_handlers() {
        Err(RuntimeError::MissingHandlers(names)) => assert_eq!(names, ["frobnicate", "teleport"]),
        other => panic!("expected missing handlers, got {other:?}"),
    }
    let err = rig.rt.launch("main", 1, 1).unwrap_err();
    assert!(err.to_string().contains("frobnicate, teleport"), "{err}");
}

hostcall_runtime::hostcall_abi::request! {
    /// A user's own typed hostcall: `base + scale * payload length`.
    Scaled = "scaled" { base: u64 => word, scale: i32 => int }
}

#[test]
fn a_user_declared_typed_hostcall_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let results = Arc::new(Mutex::new(Vec::new()));
    let r2 = results.clone();
    let module = EmuModule::new().hostcall(Scaled::NAME).entry("main", move |ctx| {
        let mut out = Vec::new();
        for (base, scale, payload) in [(10, 2, &b"abc"[..]), (0, -1, &b""[..]), (7, 3, &b"xy"[..])] {
            let mut reply = [0u8; 8];
            let c = ctx.request(&Scaled { base, scale }, payload, &mut reply).unwrap();
            out.push((c.value, c.errno));
        }
        // Words that are not a `Scaled` (scale beyond i32) are refused, not misread.
        let c = ctx.call(Scaled::NAME, Call::new(0, [1, 1 << 40, 0]), &mut []).unwrap();
        out.push((c.value, c.errno));
        r2.lock().unwrap().extend(out);
    });
    let mut rig = common::rig(dir.path(), QueueConfig::DEFAULT, module);
    rig.rt
        .registry_mut()
        .register::<Scaled, _>(|_, req, data| {
            let n = i64::from(req.scale) * data.inline().len() as i64;
            u64::try_from(req.base as i64 + n).map_err(|_| HostError(Errno::ERANGE))
        })
        .expect("a new name");
    let report = rig.rt.launch("main", 1, 1).expect("runs");
    assert_eq!(*results.lock().unwrap(), [(16, 0), (0, 0), (13, 0), (0, Errno::EINVAL.0)]);
    assert_eq!(report.per_op["scaled"], 4);
}

#[test]
fn user_hostcalls_by_name_and_handler_panics() {
    let dir = tempfile::tempdir().unwrap();
    let results = Arc::new(Mutex::new(Vec::new()));
    let r2 = results.clone();
    let module = EmuModule::new().hostcall("add3").hostcall("boom").hostcall("fail").entry("main", move |ctx| {
        let mut out = Vec::new();
        for name in ["add3", "boom", "add3", "fail"] {
            let c = ctx.call(name, Call::new(0, [1, 2, 3]).payload(b"hi"), &mut []).unwrap();
            out.push((c.value, c.errno));
        }
        // A hostcall the module never declared has ID 0: refused on the device.
        assert_eq!(ctx.call("nope", Call::new(0, [0; 3]), &mut []), Err(CallError::NotServed));
        r2.lock().unwrap().extend(out);
    });
    let mut rig = common::rig(dir.path(), QueueConfig::DEFAULT, module);
    let mut seen = 0u64;
    rig.rt
        .registry_mut()
        .register_raw("add3", move |_, a, data| {
            seen += 1;
            Ok(a[0] + a[1] + a[2] + data.inline().len() as u64 + 100 * (seen - 1))
        })
        .expect("a new name");
    rig.rt.registry_mut().register_raw("boom", |_, _, _| panic!("handler bug")).expect("a new name");
    rig.rt.registry_mut().register_raw("fail", |_, _, _| Err(HostError(Errno::EXDEV))).expect("a new name");
    let report = rig.rt.launch("main", 1, 1).expect("server survives a handler panic");
    assert_eq!(*results.lock().unwrap(), [(8, 0), (0, Errno::EIO.0), (108, 0), (0, Errno::EXDEV.0)]);
    assert_eq!(report.handler_panics, 1);
    assert_eq!(report.errors, 2);
    assert_eq!(report.per_op["add3"], 2);
}

#[test]
fn exit_code_is_propagated() {
    let dir = tempfile::tempdir().unwrap();
    let (r, rig) = common::run_kernel(dir.path(), 4, |ctx| {
        if ctx.thread_id == 2 {
            call(ctx, Write { fd: 1 }, b"bye\n");
            ctx.exit(7);
        }
        // The others keep calling until the trap stops them.
        loop {
            call(ctx, Echo { a: 1, b: 1 }, &[]);
        }
    });
    let report = r.expect("exit is a normal end");
    assert_eq!(report.exit_code, Some(7));
    assert!(!report.aborted);
    assert!(report.kernel_error.is_some(), "the trap after exit is recorded");
    assert_eq!(rig.stdout.to_string_lossy(), "bye\n");
}

#[test]
fn abort_is_exit_134() {
    let dir = tempfile::tempdir().unwrap();
    let (r, _rig) = common::run_kernel(dir.path(), 1, |ctx| {
        call(ctx, Abort {}, &[]);
        ctx.trap();
    });
    let report = r.unwrap();
    assert_eq!((report.exit_code, report.aborted), (Some(134), true));
}

#[test]
fn kernel_without_exit_returns_none_and_a_panic_is_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (r, _rig) = common::run_kernel(dir.path(), 2, |ctx| {
        call(ctx, Echo { a: 5, b: 6 }, &[]);
    });
    let report = r.unwrap();
    assert_eq!((report.exit_code, report.calls), (None, 2));
    let (r, _rig) = common::run_kernel(dir.path(), 2, |ctx| {
        if ctx.thread_id == 1 {
            panic!("device bug");
        }
        loop {
            call(ctx, Echo { a: 5, b: 6 }, &[]);
        }
    });
    match r {
        Err(RuntimeError::KernelFailed { message, .. }) => assert!(message.contains("device bug"), "{message}"),
        other => panic!("expected a kernel failure, got {other:?}"),
    }
}

#[test]
fn corrupt_record_stops_the_run_with_an_error() {
    use hostcall_runtime::backend::emu::EmuPlatform;
    use hostcall_runtime::hostcall_abi::sync::Platform;
    use hostcall_runtime::hostcall_abi::{lane_word, record_flag, Header, Lane, ProtocolError};
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let (r, _rig) = common::run_kernel(dir.path(), 1, |ctx| {
        // Hand-write a record whose slot is out of range, as a broken device
        // would, then wait like a caller (the cancel traps us out).
        let q = ctx.queue().unwrap();
        let t = q.top.fetch_add(2, Relaxed);
        let flag = record_flag(t);
        let lane = Lane { seq: 1, ..Lane::default() }.to_words(flag);
        for (i, x) in lane.iter().enumerate() {
            q.ring[8 + lane_word(1, 0, i)].store(*x, Relaxed);
        }
        let h = Header { op: 1, lanes: 1, base_slot: 1 << 30, lines: 2, flags: 0 };
        for (i, x) in h.to_words(flag).iter().enumerate() {
            q.ring[i].store(*x, Relaxed);
        }
        loop {
            EmuPlatform::backoff(100);
        }
    });
    match r {
        Err(RuntimeError::Protocol(ProtocolError::BadSlot { ticket: 0, slot })) => assert_eq!(slot, 1 << 30),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn a_kernel_argument_longer_than_a_reply_is_refused_before_launch() {
    use hostcall_runtime::backend::emu::EmuBackend;
    use hostcall_runtime::{Runtime, RuntimeConfig};
    let geometry = QueueConfig::DEFAULT;
    let fits = "x".repeat(geometry.reply_data_size as usize);
    let config = RuntimeConfig { args: vec!["kernel".into(), fits.clone()], ..RuntimeConfig::default() };
    assert!(Runtime::new(EmuBackend::new(), config).is_ok());
    let config = RuntimeConfig { args: vec!["kernel".into(), fits + "y"], ..RuntimeConfig::default() };
    match Runtime::new(EmuBackend::new(), config) {
        Err(RuntimeError::Config(message)) => assert!(message.contains("kernel argument 1"), "{message}"),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a too-long argument was accepted"),
    }
}

#[test]
fn environ_lists_name_value_entries_in_name_order_leaving_out_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let module = EmuModule::new().builtin_hostcalls().entry("main", move |ctx| {
        for index in 0.. {
            let (len, errno, data) = call(ctx, Environ { index }, &[]);
            if errno != 0 {
                s2.lock().unwrap().push(format!("errno {errno}"));
                break;
            }
            assert_eq!(len as usize, data.len());
            s2.lock().unwrap().push(String::from_utf8(data).unwrap());
        }
    });
    let mut rig = common::rig(dir.path(), QueueConfig::DEFAULT, module);
    let env = &mut rig.rt.state_mut().env;
    env.clear();
    env.insert("ZED".into(), "last".into());
    env.insert("ALPHA".into(), "first".into());
    env.insert("EMPTY".into(), String::new());
    env.insert("HUGE".into(), "x".repeat(QueueConfig::DEFAULT.reply_data_size as usize));
    rig.rt.launch("main", 1, 1).expect("run");
    assert_eq!(*seen.lock().unwrap(), ["ALPHA=first", "EMPTY=", "ZED=last", &format!("errno {}", Errno::ENOENT.0)]);
}

#[test]
fn posted_writes_keep_their_order_and_their_failures_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (report, rig) = common::run_kernel(dir.path(), 1, |ctx| {
        let post =
            |fd: i32, text: &[u8]| ctx.post("write", Call::new(0, Write { fd }.to_args()).payload(text)).unwrap();
        post(1, b"posted, ");
        assert_eq!(call(ctx, Write { fd: 1 }, b"waited for, ").0, 12);
        post(1, b"posted again\n");
        post(42, b"to a closed fd");
        post(2, b"on stderr\n");
    });
    let report = report.expect("run");
    assert_eq!(rig.stdout.to_string_lossy(), "posted, waited for, posted again\n");
    assert_eq!(rig.stderr.to_string_lossy(), "on stderr\n");
    assert_eq!(report.unanswered_errors, 1);
    assert_eq!(report.first_unanswered, Some(("write".to_string(), Errno::EBADF)));
    assert_eq!(report.per_op.get("write"), Some(&5));
}

/// Write device memory at `addr`, as the kernel would.
fn poke(ctx: &DeviceCtx, addr: u64, bytes: &[u8]) {
    ctx.store(addr, bytes).expect("device memory");
}

/// Read device memory at `addr`, as the kernel would.
fn peek(ctx: &DeviceCtx, addr: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    ctx.load(addr, &mut out).expect("device memory");
    out
}

#[test]
fn the_heap_grows_moves_blocks_and_reuses_what_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let (_, rig) = common::run_ok(dir.path(), |ctx| {
        let alloc = |size: u64, zeroed: u32| call(ctx, HeapAlloc { size, align: 64, zeroed }, &[]);
        let (a, errno, _) = alloc(1 << 20, 1);
        assert_eq!((errno, a % HEAP_ALIGN), (0, 0));
        assert_eq!(peek(ctx, a, 64), [0u8; 64], "zeroed");
        poke(ctx, a, b"kept across the move");
        // Grown: a new block, the bytes copied, the old one freed.
        let (b, errno, _) = call(ctx, HeapRealloc { ptr: a, new_size: 2 << 20 }, &[]);
        assert_eq!(errno, 0);
        assert_ne!(b, a);
        assert_eq!(peek(ctx, b, 20), b"kept across the move");
        // Shrunk: stays where it is.
        assert_eq!(call(ctx, HeapRealloc { ptr: b, new_size: 100 }, &[]).0, b);
        // An arena block (the host never saw it) moves from the region the
        // device declares; without one, EINVAL.
        let arena = ctx.alloc(64);
        arena.fill_from(b"arena");
        let r =
            Call::new(0, HeapRealloc { ptr: arena.addr(), new_size: 1 << 10 }.to_args()).device_region(arena.addr(), 5);
        let c = ctx.call(HeapRealloc::NAME, r, &mut []).unwrap();
        assert_eq!((c.errno, peek(ctx, c.value, 5)), (0, b"arena".to_vec()));
        assert_eq!(call(ctx, HeapRealloc { ptr: arena.addr(), new_size: 1 << 10 }, &[]).1, Errno::EINVAL.0);
        let c = c.value;
        ctx.post(HeapFree::NAME, Call::new(0, HeapFree { ptr: b }.to_args())).unwrap();
        ctx.post(HeapFree::NAME, Call::new(0, HeapFree { ptr: c }.to_args())).unwrap();
        ctx.post(HeapFree::NAME, Call::new(0, HeapFree { ptr: 12345 }.to_args())).unwrap();
        // Freed at 1 and 2 MiB, the memory serves 3 MiB from the start of
        // the segment.
        assert_eq!(alloc(3 << 20, 0), (a, 0, vec![]));
        // More than any GPU has: ENOMEM, and nothing said (the device may
        // still find room in its arena) until it gives up (`heap_oom`).
        assert_eq!(alloc(1 << 60, 0).1, Errno::ENOMEM.0);
        assert_eq!(call(ctx, HeapOom { size: 1 << 60 }, &[]).1, 0);
        // Many threads giving up at once: eight lines, then one that says so.
        for _ in 0..20 {
            ctx.post(HeapOom::NAME, Call::new(0, HeapOom { size: 1 << 60 }.to_args())).unwrap();
        }
    });
    let err = rig.stderr.to_string_lossy();
    assert_eq!(err.matches("device heap: no GPU memory for 1152921504606846976 bytes").count(), 8, "{err}");
    assert_eq!(err.matches("device heap: more allocations failed; not printed").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 9, "{err}");
}
