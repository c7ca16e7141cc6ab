//! Escape attempts against the file handlers, one table: each row is a call
//! a hostile kernel could make, and the errno Linux gives for it under a
//! root it may not leave (`openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`,
//! `docs/architecture.md`). Afterwards nothing outside the root has changed.

mod common;

use std::os::unix::fs::symlink;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hostcall_runtime::backend::emu::DeviceCtx;
use hostcall_runtime::hostcall_abi::op::*;
use hostcall_runtime::hostcall_abi::Errno;

use common::flags::{
    AT_FDCWD, AT_REMOVEDIR, AT_SYMLINK_NOFOLLOW, O_CREAT, O_DIRECTORY, O_RDONLY, O_RDWR, O_TMPFILE, O_TRUNC, O_WRONLY,
};

/// `Ok(value)` or `Err(errno)` of one call.
fn call<R: Request>(ctx: &DeviceCtx, req: R, payload: &[u8]) -> Result<u64, u32> {
    let mut buf = vec![0u8; 4096];
    let c = ctx.request(&req, payload, &mut buf).expect("call");
    if c.errno == 0 {
        Ok(c.value)
    } else {
        Err(c.errno)
    }
}

fn open(ctx: &DeviceCtx, path: &[u8], flags: i32) -> Result<u64, u32> {
    call(ctx, Open { dirfd: AT_FDCWD, flags, mode: 0o644 }, path)
}

fn rename(ctx: &DeviceCtx, old: &[u8], new: &[u8]) -> Result<u64, u32> {
    call(ctx, Rename { old_len: old.len() as u32 }, &[old, new].concat())
}

type Attempt = (&'static str, Box<dyn Fn(&DeviceCtx) -> Result<u64, u32> + Send + Sync>, Errno);

fn attempts() -> Vec<Attempt> {
    let long_name = vec![b'a'; 300];
    let eacces = Errno::EACCES;
    vec![
        ("`..` first", Box::new(|c| open(c, b"../secret", O_RDONLY)), eacces),
        ("`..` in the middle", Box::new(|c| open(c, b"d/../../secret", O_RDONLY)), eacces),
        ("`..` last", Box::new(|c| open(c, b"d/../..", O_RDONLY | O_DIRECTORY)), eacces),
        ("`..` after the root", Box::new(|c| open(c, b"/../secret", O_RDONLY)), eacces),
        ("`..` deep after the root", Box::new(|c| open(c, b"/d/e/../../../secret", O_RDONLY)), eacces),
        ("an absolute path is rooted", Box::new(|c| open(c, b"/etc/passwd", O_RDONLY)), Errno::ENOENT),
        ("/proc/self/root is rooted", Box::new(|c| open(c, b"/proc/self/root/etc/passwd", O_RDONLY)), Errno::ENOENT),
        ("an absolute symlink", Box::new(|c| open(c, b"abs_link", O_RDONLY)), eacces),
        ("a relative symlink out", Box::new(|c| open(c, b"rel_link", O_RDONLY)), eacces),
        ("a symlink out from a subdirectory", Box::new(|c| open(c, b"d/deep_link", O_RDONLY)), eacces),
        ("a chain of symlinks out", Box::new(|c| open(c, b"chain_a", O_RDONLY)), eacces),
        ("a symlink to a directory outside", Box::new(|c| open(c, b"outdir_link/file", O_RDONLY)), eacces),
        ("a symlink to /", Box::new(|c| open(c, b"slash_link/etc/passwd", O_RDONLY)), eacces),
        ("a symlink to /proc/self/root", Box::new(|c| open(c, b"proc_root_link/etc/passwd", O_RDONLY)), eacces),
        ("a symlink to /proc/self/fd/0", Box::new(|c| open(c, b"proc_fd_link", O_RDONLY)), eacces),
        ("creating through a symlink out", Box::new(|c| open(c, b"rel_link", O_WRONLY | O_CREAT | O_TRUNC)), eacces),
        ("creating below a symlink out", Box::new(|c| open(c, b"outdir_link/new", O_WRONLY | O_CREAT)), eacces),
        // The handlers take no O_TMPFILE (nor O_PATH) anywhere: EINVAL, as
        // from a file system without it.
        ("O_TMPFILE outside", Box::new(|c| open(c, b"..", O_TMPFILE | O_RDWR)), Errno::EINVAL),
        ("O_TMPFILE through a symlink out", Box::new(|c| open(c, b"outdir_link", O_TMPFILE | O_RDWR)), Errno::EINVAL),
        ("a directory opened for writing", Box::new(|c| open(c, b"d", O_WRONLY)), Errno::EISDIR),
        ("a component of 300 bytes", Box::new(move |c| open(c, &long_name, O_RDONLY)), Errno::ENAMETOOLONG),
        ("a NUL byte inside the path", Box::new(|c| open(c, b"inside\0/../../secret", O_RDONLY)), Errno::EINVAL),
        (
            "openat from a directory fd, climbing",
            Box::new(|c| {
                let d = open(c, b"d", O_RDONLY | O_DIRECTORY)?;
                call(c, Open { dirfd: d as i32, flags: O_RDONLY, mode: 0 }, b"../../secret")
            }),
            eacces,
        ),
        (
            "statx of a file outside",
            Box::new(|c| call(c, Statx { dirfd: AT_FDCWD, flags: 0, mask: 0xfff }, b"../secret")),
            eacces,
        ),
        (
            "statx through a symlink out",
            Box::new(|c| call(c, Statx { dirfd: AT_FDCWD, flags: 0, mask: 0xfff }, b"abs_link")),
            eacces,
        ),
        ("unlink outside", Box::new(|c| call(c, Unlink { dirfd: AT_FDCWD, flags: 0 }, b"../secret")), eacces),
        (
            "unlink below a symlink out",
            Box::new(|c| call(c, Unlink { dirfd: AT_FDCWD, flags: 0 }, b"outdir_link/file")),
            eacces,
        ),
        (
            "rmdir of the root's parent",
            Box::new(|c| call(c, Unlink { dirfd: AT_FDCWD, flags: AT_REMOVEDIR }, b"d/../..")),
            eacces,
        ),
        ("mkdir outside", Box::new(|c| call(c, Mkdir { dirfd: AT_FDCWD, mode: 0o755 }, b"../newdir")), eacces),
        (
            "mkdir below a symlink out",
            Box::new(|c| call(c, Mkdir { dirfd: AT_FDCWD, mode: 0o755 }, b"outdir_link/newdir")),
            eacces,
        ),
        ("rename a file out", Box::new(|c| rename(c, b"inside", b"../stolen")), eacces),
        ("rename a file in", Box::new(|c| rename(c, b"../secret", b"mine")), eacces),
        ("rename below a symlink out", Box::new(|c| rename(c, b"inside", b"outdir_link/stolen")), eacces),
    ]
}

#[test]
fn every_escape_is_refused_as_linux_refuses_it_and_nothing_outside_changes() {
    let (base, root) = common::root_beside_secret();
    let out = base.path();
    std::fs::create_dir_all(root.join("d/e")).unwrap();
    std::fs::create_dir(out.join("outdir")).unwrap();
    std::fs::write(out.join("outdir/file"), b"outside too").unwrap();
    std::fs::write(root.join("inside"), b"ok").unwrap();
    symlink(out.join("secret"), root.join("abs_link")).unwrap();
    symlink("../secret", root.join("rel_link")).unwrap();
    symlink("../../secret", root.join("d/deep_link")).unwrap();
    symlink("chain_b", root.join("chain_a")).unwrap();
    symlink("d/chain_c", root.join("chain_b")).unwrap();
    symlink("../../secret", root.join("d/chain_c")).unwrap();
    symlink("../outdir", root.join("outdir_link")).unwrap();
    symlink("/", root.join("slash_link")).unwrap();
    symlink("/proc/self/root", root.join("proc_root_link")).unwrap();
    symlink("/proc/self/fd/0", root.join("proc_fd_link")).unwrap();
    let table = attempts();
    assert!(table.len() >= 25);
    let results = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = results.clone();
    let (_, rig) = common::run_ok(&root, move |ctx| {
        for (name, attempt, _) in &table {
            seen.lock().unwrap().push((*name, attempt(ctx)));
        }
    });
    drop(rig);
    let results = results.lock().unwrap();
    let wrong: Vec<String> = results
        .iter()
        .zip(attempts())
        .filter(|((_, got), (_, _, want))| *got != Err(want.0))
        .map(|((name, got), (_, _, want))| format!("{name}: got {got:?}, want {}", want.name().unwrap_or("?")))
        .collect();
    assert!(wrong.is_empty(), "{} of {} wrong:\n{}", wrong.len(), results.len(), wrong.join("\n"));
    // Outside: untouched, nothing new.
    assert_eq!(std::fs::read(out.join("secret")).unwrap(), b"outside");
    assert_eq!(std::fs::read(out.join("outdir/file")).unwrap(), b"outside too");
    let mut names: Vec<_> = std::fs::read_dir(out).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["outdir", "root", "secret"]);
    assert_eq!(std::fs::read_dir(out.join("outdir")).unwrap().count(), 1);
}

/// Inside the root, the same kinds of call work: names of any bytes, links
/// that stay in, unlinking a link (not its target).
#[test]
fn the_same_calls_inside_the_root_work() {
    let (base, root) = common::root_beside_secret();
    std::fs::create_dir(root.join("d")).unwrap();
    std::fs::write(root.join("inside"), b"ok").unwrap();
    symlink("inside", root.join("ok_link")).unwrap();
    symlink("../secret", root.join("rel_link")).unwrap();
    let (_, rig) = common::run_ok(&root, |ctx| {
        assert!(open(ctx, b"d/../ok_link", O_RDONLY).is_ok());
        assert!(open(ctx, b"/d/../inside", O_RDONLY).is_ok());
        assert!(open(ctx, b"\xff\xfe-not-utf8", O_WRONLY | O_CREAT).is_ok());
        assert_eq!(open(ctx, b"d", O_TMPFILE | O_RDWR), Err(Errno::EINVAL.0), "no O_TMPFILE inside either");
        assert!(call(ctx, Statx { dirfd: AT_FDCWD, flags: AT_SYMLINK_NOFOLLOW, mask: 0xfff }, b"rel_link").is_ok());
        assert_eq!(call(ctx, Unlink { dirfd: AT_FDCWD, flags: 0 }, b"rel_link"), Ok(0));
    });
    drop(rig);
    let odd: &std::ffi::OsStr = std::os::unix::ffi::OsStrExt::from_bytes(b"\xff\xfe-not-utf8");
    assert!(root.join(odd).is_file());
    assert!(!root.join("rel_link").exists() && std::fs::read(base.path().join("secret")).unwrap() == b"outside");
}

/// A symlink out swapped in for a file between any check and the open: the
/// open resolves in the kernel in one step, so it reads the file or fails,
/// and never reads what lies outside.
#[test]
fn a_symlink_swapped_in_during_opens_never_leads_out() {
    let (_base, root) = common::root_beside_secret();
    std::fs::write(root.join("target"), b"ok").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (root, stop) = (root.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::remove_file(root.join("tmp"));
                let _ = symlink("../secret", root.join("tmp"));
                let _ = std::fs::rename(root.join("tmp"), root.join("target"));
                let _ = std::fs::write(root.join("tmp2"), b"ok");
                let _ = std::fs::rename(root.join("tmp2"), root.join("target"));
                swaps += 1;
            }
            swaps
        })
    };
    let opened = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = opened.clone();
    let (_, rig) = common::run_ok(&root, move |ctx| {
        // 2000 opens, more while none has found the file (a starved swapper
        // can leave the link in place for a while on a loaded host).
        for i in 0..20_000 {
            if i >= 2000 && count.load(Ordering::Relaxed) > 0 {
                break;
            }
            if let Ok(fd) = open(ctx, b"target", O_RDONLY) {
                let mut buf = vec![0u8; 16];
                let c = ctx.request(&Read { fd: fd as i32, len: 16 }, &[], &mut buf).expect("read");
                assert_eq!(&buf[..c.data_len], b"ok", "read through a swapped-in link");
                count.fetch_add(1, Ordering::Relaxed);
                let _ = call(ctx, Close { fd: fd as i32 }, &[]);
            }
        }
    });
    drop(rig);
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 0 && opened.load(Ordering::Relaxed) > 0, "{swaps} swaps, {opened:?} opens");
}
