//! The built-in hostcalls (`hostcall_abi::op`), one module per concern, and
//! the host state they share: the sandbox, the device's fd table, stdio
//! sinks, environment and arguments, and the exit status.
//!
//! Device fds are virtual: 0, 1, 2 are the configured stdin/stdout/stderr;
//! 3 and up index a table of host `File`s opened beneath the sandbox root.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};

use hostcall_abi::Errno;

use crate::error::{Duplicate, HostError};
use crate::registry::Registry;

pub mod fs;
pub mod heap;
pub mod output;
pub mod process;
pub mod readers;
pub mod sandbox;
pub mod stat;
pub mod stdin;
pub mod time;

use sandbox::{Sandbox, VPath};

/// How the run ended, as the device told the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: i32,
    /// `abort()` rather than `exit()`.
    pub aborted: bool,
}

/// One open device fd (3 and up).
#[derive(Debug)]
pub struct OpenFile {
    pub file: File,
    /// Where it was opened, for `*at` calls relative to a directory fd.
    pub path: VPath,
    pub is_dir: bool,
}

/// What a device fd names.
pub enum Fd<'a> {
    Stdin,
    Stdout,
    Stderr,
    File(&'a mut OpenFile),
}

/// The first fd the table hands out.
pub const FIRST_FILE_FD: i32 = 3;
/// Upper bound on open device files.
pub const MAX_OPEN_FILES: usize = 1024;

/// State the built-in handlers share. User handlers may use it too.
pub struct HostState {
    pub sandbox: Sandbox,
    files: Vec<Option<OpenFile>>,
    pub stdin: stdin::Stdin,
    pub stdout: Box<dyn Write + Send>,
    pub stderr: Box<dyn Write + Send>,
    pub env: HashMap<String, String>,
    pub args: Vec<String>,
    pub exit: Option<ExitStatus>,
    /// `HOSTCALL_DEBUG` is on.
    pub debug: bool,
    /// Names the device reported through `unsupported`.
    pub unsupported: Vec<String>,
    /// Posted stdout/stderr bytes not yet written ([`output`]).
    pub output: output::Pending,
    /// Device memory the device heap grew into ([`heap`]).
    pub heap: heap::DeviceHeap,
    /// Threads that share large file reads ([`readers`]).
    pub(crate) readers: readers::Pool,
}

impl HostState {
    pub fn new(
        sandbox: Sandbox,
        stdin: Box<dyn Read + Send>,
        stdout: Box<dyn Write + Send>,
        stderr: Box<dyn Write + Send>,
        env: HashMap<String, String>,
        args: Vec<String>,
    ) -> Self {
        HostState {
            sandbox,
            files: Vec::new(),
            stdin: stdin::Stdin::new(stdin),
            stdout,
            stderr,
            env,
            args,
            exit: None,
            debug: false,
            unsupported: Vec::new(),
            output: output::Pending::default(),
            heap: heap::DeviceHeap::default(),
            readers: readers::Pool::default(),
        }
    }

    /// Hold a posted write of `data` to the device's stdout or stderr
    /// ([`output`] says when it is written).
    pub fn write_output(&mut self, stream: output::Stream, data: &[u8]) {
        if self.output.stream != stream && !self.output.buf.is_empty() {
            // A failure is counted in `output`; the new bytes still go.
            let _ = self.flush_output();
        }
        self.output.stream = stream;
        self.output.buf.extend_from_slice(data);
        self.output.records += 1;
        if self.output.buf.len() >= output::FLUSH_AT {
            let _ = self.flush_output();
        }
    }

    /// Write the held output; on failure its records are counted as lost
    /// ([`output::Pending::take_failures`]) and the error returned.
    pub fn flush_output(&mut self) -> Result<(), HostError> {
        if self.output.buf.is_empty() {
            return Ok(());
        }
        let sink = match self.output.stream {
            output::Stream::Stdout => &mut self.stdout,
            output::Stream::Stderr => &mut self.stderr,
        };
        let result = sink.write_all(&self.output.buf).and_then(|()| sink.flush());
        self.output.buf.clear();
        let records = std::mem::take(&mut self.output.records);
        result.map_err(|e| {
            let e = HostError::from(e);
            self.output.failed += records;
            self.output.first_error.get_or_insert(e.0);
            e
        })
    }

    /// Look up a device fd.
    pub fn fd(&mut self, fd: i32) -> Result<Fd<'_>, HostError> {
        match fd {
            0 => Ok(Fd::Stdin),
            1 => Ok(Fd::Stdout),
            2 => Ok(Fd::Stderr),
            _ => {
                let i = usize::try_from(fd - FIRST_FILE_FD).map_err(|_| HostError(Errno::EBADF))?;
                match self.files.get_mut(i) {
                    Some(Some(f)) => Ok(Fd::File(f)),
                    _ => Err(HostError(Errno::EBADF)),
                }
            }
        }
    }

    /// The open file behind `fd` (3+), EBADF otherwise.
    pub fn file(&mut self, fd: i32) -> Result<&mut OpenFile, HostError> {
        match self.fd(fd)? {
            Fd::File(f) => Ok(f),
            _ => Err(HostError(Errno::EBADF)),
        }
    }

    /// Install `file` at the lowest free fd.
    pub fn insert(&mut self, file: OpenFile) -> Result<i32, HostError> {
        let i = match self.files.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.files.len() < MAX_OPEN_FILES => {
                self.files.push(None);
                self.files.len() - 1
            }
            None => return Err(HostError(Errno::EMFILE)),
        };
        self.files[i] = Some(file);
        Ok(i as i32 + FIRST_FILE_FD)
    }

    /// Close `fd`. Closing 0, 1 or 2 succeeds and keeps them (the host's
    /// stdio is not the device's to close).
    pub fn close(&mut self, fd: i32) -> Result<(), HostError> {
        if (0..FIRST_FILE_FD).contains(&fd) {
            return Ok(());
        }
        let i = usize::try_from(fd - FIRST_FILE_FD).map_err(|_| HostError(Errno::EBADF))?;
        match self.files.get_mut(i).and_then(Option::take) {
            Some(_) => Ok(()),
            None => Err(HostError(Errno::EBADF)),
        }
    }

    /// Open device files.
    pub fn open_files(&self) -> usize {
        self.files.iter().filter(|f| f.is_some()).count()
    }

    /// The directory a `*at` call starts from: the cwd (`AT_FDCWD`, always
    /// the root) or a directory fd's path.
    pub fn dir_base(&mut self, dirfd: i32) -> Result<VPath, HostError> {
        if dirfd == AT_FDCWD {
            return Ok(VPath::root());
        }
        let f = self.file(dirfd)?;
        if !f.is_dir {
            return Err(HostError(Errno::ENOTDIR));
        }
        Ok(f.path.clone())
    }
}

/// `AT_FDCWD` as the device passes it.
pub const AT_FDCWD: i32 = -100;

/// Register every built-in handler; an error names a hostcall registered
/// twice.
pub fn register_builtins(r: &mut Registry<HostState>) -> Result<(), Duplicate> {
    fs::register(r)?;
    heap::register(r)?;
    process::register(r)?;
    time::register(r)
}

impl Registry<HostState> {
    /// The built-in handlers (`hostcall_abi::op::BUILTIN` and `TEST_ONLY`).
    pub fn with_builtins() -> Self {
        let mut r = Registry::new();
        // The built-in names are distinct (`builtin_names_are_distinct`).
        register_builtins(&mut r).expect("built-in hostcall names are distinct");
        r
    }
}

/// A `Write` + `Read` sink that tests (and embedders) can share and inspect.
#[derive(Clone, Default, Debug)]
pub struct SharedBuf(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl SharedBuf {
    pub fn new() -> Self {
        Self::default()
    }
    /// Everything written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.contents()).into_owned()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_names_are_distinct() {
        let mut r = Registry::new();
        assert_eq!(register_builtins(&mut r), Ok(()));
        assert!(r.len() > 20);
        assert_eq!(Registry::with_builtins().names().collect::<Vec<_>>(), r.names().collect::<Vec<_>>());
    }
}
