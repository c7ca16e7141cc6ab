//! The directory the device may touch, and how device paths map into it.
//!
//! Device paths are *virtual*: `/` is the sandbox root, and a relative path
//! starts at the device's cwd (always `/`: there is no `chdir` hostcall) or
//! at a directory fd's own path. Absolute paths are therefore interpreted
//! relative to the root, like a chroot (`/etc/passwd` names
//! `<root>/etc/passwd`, never the host's file), so that what `getcwd`
//! returns can be opened again.
//!
//! Escapes are refused with `EACCES`:
//! * `..` is resolved lexically first; one that climbs above the root fails;
//! * every open then goes through `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_MAGICLINKS)` from the root's fd, so a symlink (anywhere in
//!   the path) that points outside — or is absolute — fails in the kernel
//!   (`EXDEV`, reported as `EACCES`), with no race against renames;
//! * operations on a final name (`unlink`, `mkdir`, `rename`, `statx` with
//!   `AT_SYMLINK_NOFOLLOW`) open the parent that way and use `*at` calls on
//!   a single component, which never follow it.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use hostcall_abi::Errno;

use crate::error::HostError;

/// A normalised path below the root: plain components only (empty: the root).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VPath(Vec<Vec<u8>>);

impl VPath {
    pub fn root() -> Self {
        VPath(Vec::new())
    }

    /// Resolve `path` (device bytes) against `base`.
    pub fn resolve(base: &VPath, path: &[u8]) -> Result<VPath, HostError> {
        if path.contains(&0) {
            return Err(HostError(Errno::EINVAL));
        }
        if path.len() > 4096 {
            return Err(HostError(Errno::ENAMETOOLONG));
        }
        let mut parts = if path.first() == Some(&b'/') { Vec::new() } else { base.0.clone() };
        for c in path.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    if parts.pop().is_none() {
                        return Err(HostError(Errno::EACCES));
                    }
                }
                name => {
                    if name.len() > 255 {
                        return Err(HostError(Errno::ENAMETOOLONG));
                    }
                    parts.push(name.to_vec());
                }
            }
        }
        Ok(VPath(parts))
    }

    /// The path relative to the root, `.` for the root itself.
    fn rel(&self) -> CString {
        if self.0.is_empty() {
            return c".".to_owned();
        }
        // No component holds a NUL: `resolve` refused those.
        CString::new(self.0.join(&b'/')).unwrap_or_else(|_| c".".to_owned())
    }

    /// Parent directory and final name (`None` for the root).
    pub fn split_last(&self) -> Option<(VPath, CString)> {
        let (last, init) = self.0.split_last()?;
        let name = CString::new(last.clone()).ok()?;
        Some((VPath(init.to_vec()), name))
    }

    /// As the device sees it: `/`-rooted.
    pub fn display(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for c in &self.0 {
            out.push(b'/');
            out.extend_from_slice(c);
        }
        if out.is_empty() {
            out.push(b'/');
        }
        out
    }
}

/// Attempts of an `openat2` that a concurrent rename on the host made fail
/// with `EAGAIN` before the error goes to the device.
const OPENAT2_TRIES: u32 = 64;

/// The root directory, held open.
#[derive(Debug)]
pub struct Sandbox {
    root: OwnedFd,
    root_path: PathBuf,
}

fn last_errno() -> HostError {
    HostError::from(io::Error::last_os_error())
}

impl Sandbox {
    pub fn new(root: &Path) -> io::Result<Self> {
        // Miri (the emulation tests in .ci/run) has no `O_PATH`: a plain
        // descriptor of the directory; Miri runs no file handler through it.
        #[cfg(miri)]
        return Ok(Sandbox { root: std::fs::File::open(root)?.into(), root_path: root.to_path_buf() });
        #[cfg_attr(miri, allow(unreachable_code))]
        let c = CString::new(root.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `c` is a valid NUL-terminated string; open has no other
        // preconditions.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Sandbox { root: fd, root_path: root.to_path_buf() })
    }

    pub fn root_path(&self) -> &Path {
        &self.root_path
    }

    /// `openat2(root, path, flags, mode, RESOLVE_BENEATH)`.
    pub fn open(&self, path: &VPath, flags: i32, mode: u32) -> Result<OwnedFd, HostError> {
        let rel = path.rel();
        // SAFETY: `open_how` is plain integers; all-zero is a valid value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (flags | libc::O_CLOEXEC) as u32 as u64;
        // openat2 refuses a mode without O_CREAT/O_TMPFILE (and O_TMPFILE
        // shares its bit with O_DIRECTORY, so test it whole).
        let creates = flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE;
        how.mode = if creates { u64::from(mode & 0o7777) } else { 0 };
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        let mut tries = 0;
        let fd = loop {
            // SAFETY: the root fd is open, `rel` is NUL-terminated, `how` is
            // a valid `open_how` of the size passed.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.root.as_raw_fd(),
                    rel.as_ptr(),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            if fd >= 0 {
                break fd;
            }
            let e = last_errno();
            // EAGAIN: a rename or mount anywhere on the host raced a `..`
            // resolution under RESOLVE_BENEATH (openat2(2) says to retry).
            tries += 1;
            if e.0 == Errno::EAGAIN && tries < OPENAT2_TRIES {
                continue;
            }
            // EXDEV: the path (through `..` or a symlink) left the root.
            return Err(if e.0 == Errno::EXDEV { HostError(Errno::EACCES) } else { e });
        };
        // SAFETY: the kernel returned a new fd that nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// The parent directory of `path` (opened beneath the root) and its
    /// final name; `None` for the root itself.
    pub fn parent(&self, path: &VPath) -> Result<Option<(OwnedFd, CString)>, HostError> {
        let Some((dir, name)) = path.split_last() else {
            return Ok(None);
        };
        let fd = self.open(&dir, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        Ok(Some((fd, name)))
    }

    /// Open and wrap as a `File`.
    pub fn open_file(&self, path: &VPath, flags: i32, mode: u32) -> Result<File, HostError> {
        Ok(File::from(self.open(path, flags, mode)?))
    }

    /// The root's fd, for `*at` calls on the root.
    pub fn root_fd(&self) -> &OwnedFd {
        &self.root
    }
}

/// Bytes of a device path as an `OsStr`.
pub fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_resolution() {
        let r = VPath::root();
        assert_eq!(VPath::resolve(&r, b"a/./b//c/..").unwrap().display(), b"/a/b");
        assert_eq!(VPath::resolve(&r, b"/etc/passwd").unwrap().display(), b"/etc/passwd");
        assert_eq!(VPath::resolve(&r, b"..").unwrap_err(), HostError(Errno::EACCES));
        assert_eq!(VPath::resolve(&r, b"a/../../x").unwrap_err(), HostError(Errno::EACCES));
        assert_eq!(VPath::resolve(&r, b"a\0b").unwrap_err(), HostError(Errno::EINVAL));
        let base = VPath::resolve(&r, b"d").unwrap();
        assert_eq!(VPath::resolve(&base, b"../e").unwrap().display(), b"/e");
        assert_eq!(VPath::resolve(&base, b"/").unwrap().display(), b"/");
    }
}
