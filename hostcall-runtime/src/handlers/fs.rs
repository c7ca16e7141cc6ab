//! Files: open, read, write, pread, pwrite, close, lseek, fstat, statx,
//! unlink, mkdir, rename, getcwd. Every path goes through the sandbox
//! ([`super::sandbox`]); every fd through the device fd table.

use std::ffi::CStr;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;

use hostcall_abi::op::{
    Close, Fstat, Getcwd, Lseek, Mkdir, Open, Pread, Pwrite, Read as ReadReq, Rename, Statx, Unlink, Write as WriteReq,
};
use hostcall_abi::Errno;

use super::sandbox::VPath;
use super::stat::{encode_stat, encode_statx};
use super::stdin::StdinPoll;
use super::{Fd, HostState, OpenFile, AT_FDCWD};
use crate::error::{Duplicate, HandlerResult, HostError};
use crate::registry::{HostCx, Payload, Registry};

pub fn register(r: &mut Registry<HostState>) -> Result<(), Duplicate> {
    r.register::<Open, _>(open)?;
    r.register::<ReadReq, _>(|cx, req: ReadReq, data| read(cx, req.fd, req.len, None, data))?;
    r.register::<WriteReq, _>(|cx, req: WriteReq, data| write(cx, req.fd, None, data))?;
    r.register::<Pread, _>(|cx, req: Pread, data| read(cx, req.fd, req.len, Some(offset(req.offset)?), data))?;
    r.register::<Pwrite, _>(|cx, req: Pwrite, data| write(cx, req.fd, Some(offset(req.offset)?), data))?;
    r.register::<Close, _>(|cx, req: Close, _| cx.state.close(req.fd).map(|()| 0))?;
    r.register::<Lseek, _>(lseek)?;
    r.register::<Fstat, _>(fstat)?;
    r.register::<Statx, _>(statx)?;
    r.register::<Unlink, _>(unlink)?;
    r.register::<Mkdir, _>(mkdir)?;
    r.register::<Rename, _>(rename)?;
    r.register::<Getcwd, _>(getcwd)?;
    Ok(())
}

/// Linux open flags as the device (x86_64 values) passes them.
mod dev_flags {
    pub const ACCMODE: i32 = 0o3;
    pub const CREAT: i32 = 0o100;
    pub const EXCL: i32 = 0o200;
    pub const NOCTTY: i32 = 0o400;
    pub const TRUNC: i32 = 0o1000;
    pub const APPEND: i32 = 0o2000;
    pub const NONBLOCK: i32 = 0o4000;
    pub const DSYNC: i32 = 0o10000;
    pub const LARGEFILE: i32 = 0o100000;
    pub const DIRECTORY: i32 = 0o200000;
    pub const NOFOLLOW: i32 = 0o400000;
    pub const NOATIME: i32 = 0o1000000;
    pub const CLOEXEC: i32 = 0o2000000;
    pub const SYNC: i32 = 0o4010000;
    pub const PATH: i32 = 0o10000000;
    pub const TMPFILE: i32 = 0o20200000;
}

/// Device open flags to the host's; flags the sandbox does not serve
/// (`O_PATH`, `O_TMPFILE`) are refused, harmless ones dropped.
fn host_open_flags(dev: i32) -> Result<i32, HostError> {
    use dev_flags as d;
    if dev & d::PATH != 0 || dev & d::TMPFILE == d::TMPFILE {
        return Err(HostError(Errno::EINVAL));
    }
    let mut h = match dev & d::ACCMODE {
        0 => libc::O_RDONLY,
        1 => libc::O_WRONLY,
        2 => libc::O_RDWR,
        _ => return Err(HostError(Errno::EINVAL)),
    };
    let map = [
        (d::CREAT, libc::O_CREAT),
        (d::EXCL, libc::O_EXCL),
        (d::TRUNC, libc::O_TRUNC),
        (d::APPEND, libc::O_APPEND),
        (d::NONBLOCK, libc::O_NONBLOCK),
        (d::DSYNC, libc::O_DSYNC),
        (d::DIRECTORY, libc::O_DIRECTORY),
        (d::NOFOLLOW, libc::O_NOFOLLOW),
        (d::NOATIME, libc::O_NOATIME),
    ];
    for (dv, hv) in map {
        if dev & dv != 0 {
            h |= hv;
        }
    }
    if dev & d::SYNC == d::SYNC {
        h |= libc::O_SYNC;
    }
    let _ = (d::NOCTTY, d::LARGEFILE, d::CLOEXEC); // accepted, no effect on the host
    Ok(h)
}

fn offset(o: i64) -> Result<u64, HostError> {
    u64::try_from(o).map_err(|_| HostError(Errno::EINVAL))
}

fn open(cx: &mut HostCx<'_, HostState>, req: Open, data: &Payload<'_>) -> HandlerResult {
    let flags = host_open_flags(req.flags)?;
    if data.inline().is_empty() {
        return Err(HostError(Errno::ENOENT));
    }
    let base = cx.state.dir_base(req.dirfd)?;
    let path = VPath::resolve(&base, data.inline())?;
    let file = cx.state.sandbox.open_file(&path, flags, req.mode)?;
    let is_dir = file.metadata()?.is_dir();
    let fd = cx.state.insert(OpenFile { file, path, is_dir })?;
    Ok(fd as u64)
}

fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// One `read(2)` (or `pread`) from a device fd; `None` when it is stdin and
/// nothing has arrived yet.
fn read_once(state: &mut HostState, fd: i32, buf: &mut [u8], at: Option<u64>) -> Result<Option<usize>, HostError> {
    match state.fd(fd)? {
        Fd::Stdin if at.is_some() => Err(HostError(Errno::ESPIPE)),
        Fd::Stdin => Ok(match state.stdin.poll_read(buf)? {
            StdinPoll::Ready(n) => Some(n),
            StdinPoll::Pending => None,
        }),
        Fd::Stdout | Fd::Stderr => Err(HostError(Errno::EBADF)),
        Fd::File(f) if f.is_dir => Err(HostError(Errno::EISDIR)),
        Fd::File(f) => Ok(Some(match at {
            Some(o) => retry(|| f.file.read_at(buf, o))?,
            None => retry(|| f.file.read(buf))?,
        })),
    }
}

/// A large read from a file that can seek, split among threads
/// ([`super::readers`]): the bytes read, the file position moved past them
/// unless `at` is given; `None` when the fd is not such a file or the
/// piece is small (the caller reads as usual).
fn read_split(state: &mut HostState, fd: i32, buf: &mut [u8], at: Option<u64>) -> Result<Option<usize>, HostError> {
    if buf.len() < super::readers::MIN_SPLIT {
        return Ok(None);
    }
    let (raw, start) = match state.fd(fd)? {
        Fd::File(f) if !f.is_dir => match at {
            Some(o) => (f.file.as_raw_fd(), o),
            // A pipe or a terminal has no position: read as usual.
            None => match (&f.file).stream_position() {
                Ok(p) => (f.file.as_raw_fd(), p),
                Err(_) => return Ok(None),
            },
        },
        _ => return Ok(None),
    };
    let got = match state.readers.read_at(raw, buf, start) {
        Ok(got) => got,
        // A file that seeks but cannot `pread` (some devices): read as usual.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ESPIPE | libc::EINVAL)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if at.is_none() {
        if let Fd::File(f) = state.fd(fd)? {
            (&f.file).seek(io::SeekFrom::Start(start + got as u64))?;
        }
    }
    Ok(Some(got))
}

/// Write all of `data` to a device fd (or at `at`).
fn write_all(state: &mut HostState, fd: i32, data: &[u8], at: Option<u64>) -> Result<(), HostError> {
    match state.fd(fd)? {
        Fd::Stdin => Err(HostError(Errno::EBADF)),
        Fd::Stdout | Fd::Stderr if at.is_some() => Err(HostError(Errno::ESPIPE)),
        Fd::Stdout => {
            state.flush_output()?;
            state.stdout.write_all(data)?;
            Ok(state.stdout.flush()?)
        }
        Fd::Stderr => {
            state.flush_output()?;
            state.stderr.write_all(data)?;
            Ok(state.stderr.flush()?)
        }
        Fd::File(f) if f.is_dir => Err(HostError(Errno::EISDIR)),
        Fd::File(f) => {
            match at {
                Some(o) => f.file.write_all_at(data, o)?,
                None => f.file.write_all(data)?,
            }
            Ok(())
        }
    }
}

/// `read`/`pread`: into the declared device region (at most
/// `min(len, dev_len)`, in chunks, stopping at a short read), else into the
/// reply data (one read of at most `min(len, reply_data_size)`).
fn read(cx: &mut HostCx<'_, HostState>, fd: i32, len: u64, at: Option<u64>, data: &Payload<'_>) -> HandlerResult {
    let Some(region) = data.device() else {
        let n = usize::try_from(len).unwrap_or(usize::MAX).min(cx.reply_capacity());
        let mut buf = vec![0u8; n];
        let Some(got) = read_once(cx.state, fd, &mut buf, at)? else {
            cx.defer();
            return Ok(0);
        };
        cx.reply_data(&buf[..got]);
        return Ok(got as u64);
    };
    let mut pending = false;
    let done = region.stream_in(cx, len, &mut |state, buf, offset| {
        let at = at.map(|o| o + offset);
        if let Some(got) = read_split(state, fd, buf, at)? {
            return Ok(Some(got));
        }
        Ok(match read_once(state, fd, buf, at)? {
            Some(got) => Some(got),
            // Stdin with nothing more yet: a short read if we have some,
            // else wait for input.
            None => {
                pending = offset == 0;
                None
            }
        })
    })?;
    if pending {
        cx.defer();
        return Ok(0);
    }
    Ok(done)
}

/// `write`/`pwrite`: the inline payload, or the declared device region when
/// there is no inline payload.
fn write(cx: &mut HostCx<'_, HostState>, fd: i32, at: Option<u64>, data: &Payload<'_>) -> HandlerResult {
    let region = match data.device() {
        Some(r) if data.inline().is_empty() => r,
        // Inline writes to stdout/stderr are posted (the device does not
        // wait): held and coalesced (`super::output`).
        _ if at.is_none() && (fd == 1 || fd == 2) => {
            let stream = if fd == 1 { super::output::Stream::Stdout } else { super::output::Stream::Stderr };
            cx.state.write_output(stream, data.inline());
            return Ok(data.inline().len() as u64);
        }
        _ => {
            write_all(cx.state, fd, data.inline(), at)?;
            return Ok(data.inline().len() as u64);
        }
    };
    region.stream_out(cx, &mut |state, bytes, offset| write_all(state, fd, bytes, at.map(|o| o + offset)))
}

/// The host fd behind a device fd (0..2: the host's own stdio).
fn host_fd(state: &mut HostState, fd: i32) -> Result<RawFd, HostError> {
    Ok(match state.fd(fd)? {
        Fd::Stdin => 0,
        Fd::Stdout => 1,
        Fd::Stderr => 2,
        Fd::File(f) => f.file.as_raw_fd(),
    })
}

fn check(r: libc::c_int) -> Result<(), HostError> {
    if r < 0 {
        Err(io::Error::last_os_error().into())
    } else {
        Ok(())
    }
}

fn lseek(cx: &mut HostCx<'_, HostState>, req: Lseek, _: &Payload<'_>) -> HandlerResult {
    if !(0..=4).contains(&req.whence) {
        return Err(HostError(Errno::EINVAL));
    }
    let f = match cx.state.fd(req.fd)? {
        Fd::File(f) => f,
        _ => return Err(HostError(Errno::ESPIPE)),
    };
    // SAFETY: the fd is open (owned by `f`); lseek has no memory arguments.
    let r = unsafe { libc::lseek(f.file.as_raw_fd(), req.offset as libc::off_t, req.whence) };
    if r < 0 {
        return Err(io::Error::last_os_error().into());
    }
    Ok(r as u64)
}

fn fstat(cx: &mut HostCx<'_, HostState>, req: Fstat, _: &Payload<'_>) -> HandlerResult {
    let fd = host_fd(cx.state, req.fd)?;
    // SAFETY: plain integers; all-zero is a valid `stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for the duration of the call, `st` is writable.
    check(unsafe { libc::fstat(fd, &mut st) })?;
    cx.reply_data(&encode_stat(&st));
    Ok(0)
}

const AT_SYMLINK_NOFOLLOW: i32 = 0x100;
const AT_REMOVEDIR: i32 = 0x200;
const AT_NO_AUTOMOUNT: i32 = 0x800;
const AT_EMPTY_PATH: i32 = 0x1000;
const AT_STATX_SYNC_TYPE: i32 = 0x6000;

fn statx_at(fd: RawFd, name: &CStr, flags: i32, mask: u32) -> Result<libc::statx, HostError> {
    // SAFETY: plain integers; all-zero is a valid `statx`.
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open, `name` NUL-terminated, `sx` writable.
    check(unsafe { libc::statx(fd, name.as_ptr(), flags, mask, &mut sx) })?;
    Ok(sx)
}

fn statx(cx: &mut HostCx<'_, HostState>, req: Statx, data: &Payload<'_>) -> HandlerResult {
    if req.flags & !(AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_EMPTY_PATH | AT_STATX_SYNC_TYPE) != 0 {
        return Err(HostError(Errno::EINVAL));
    }
    let pass = req.flags & (AT_NO_AUTOMOUNT | AT_STATX_SYNC_TYPE);
    let sx = if data.inline().is_empty() {
        if req.flags & AT_EMPTY_PATH == 0 {
            return Err(HostError(Errno::ENOENT));
        }
        let fd =
            if req.dirfd == AT_FDCWD { cx.state.sandbox.root_fd().as_raw_fd() } else { host_fd(cx.state, req.dirfd)? };
        statx_at(fd, c"", pass | libc::AT_EMPTY_PATH, req.mask)?
    } else {
        let base = cx.state.dir_base(req.dirfd)?;
        let path = VPath::resolve(&base, data.inline())?;
        match cx.state.sandbox.parent(&path)? {
            Some((dir, name)) if req.flags & AT_SYMLINK_NOFOLLOW != 0 => {
                statx_at(dir.as_raw_fd(), &name, pass | libc::AT_SYMLINK_NOFOLLOW, req.mask)?
            }
            _ => {
                let fd = cx.state.sandbox.open(&path, libc::O_PATH, 0)?;
                statx_at(fd.as_raw_fd(), c"", pass | libc::AT_EMPTY_PATH, req.mask)?
            }
        }
    };
    cx.reply_data(&encode_statx(&sx));
    Ok(0)
}

fn unlink(cx: &mut HostCx<'_, HostState>, req: Unlink, data: &Payload<'_>) -> HandlerResult {
    if req.flags & !AT_REMOVEDIR != 0 {
        return Err(HostError(Errno::EINVAL));
    }
    let base = cx.state.dir_base(req.dirfd)?;
    let path = VPath::resolve(&base, data.inline())?;
    let (dir, name) = cx.state.sandbox.parent(&path)?.ok_or(HostError(Errno::EBUSY))?;
    let flags = if req.flags & AT_REMOVEDIR != 0 { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `dir` is an open directory fd, `name` a NUL-terminated single
    // component.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })?;
    Ok(0)
}

fn mkdir(cx: &mut HostCx<'_, HostState>, req: Mkdir, data: &Payload<'_>) -> HandlerResult {
    let base = cx.state.dir_base(req.dirfd)?;
    let path = VPath::resolve(&base, data.inline())?;
    let (dir, name) = cx.state.sandbox.parent(&path)?.ok_or(HostError(Errno::EEXIST))?;
    // SAFETY: as for `unlinkat`.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), (req.mode & 0o7777) as libc::mode_t) })?;
    Ok(0)
}

fn rename(cx: &mut HostCx<'_, HostState>, req: Rename, data: &Payload<'_>) -> HandlerResult {
    let bytes = data.inline();
    let split = usize::try_from(req.old_len).map_err(|_| HostError(Errno::EINVAL))?;
    if split > bytes.len() {
        return Err(HostError(Errno::EINVAL));
    }
    let (old, new) = bytes.split_at(split);
    let root = VPath::root();
    let old = VPath::resolve(&root, old)?;
    let new = VPath::resolve(&root, new)?;
    let (od, on) = cx.state.sandbox.parent(&old)?.ok_or(HostError(Errno::EBUSY))?;
    let (nd, nn) = cx.state.sandbox.parent(&new)?.ok_or(HostError(Errno::EBUSY))?;
    // SAFETY: both fds are open directories, both names NUL-terminated
    // single components.
    check(unsafe { libc::renameat(od.as_raw_fd(), on.as_ptr(), nd.as_raw_fd(), nn.as_ptr()) })?;
    Ok(0)
}

fn getcwd(cx: &mut HostCx<'_, HostState>, _: Getcwd, _: &Payload<'_>) -> HandlerResult {
    // There is no chdir hostcall: the device's cwd is the sandbox root.
    let cwd = VPath::root().display();
    if cwd.len() > cx.reply_capacity() {
        return Err(HostError(Errno::ERANGE));
    }
    cx.reply_data(&cwd);
    Ok(cwd.len() as u64)
}
