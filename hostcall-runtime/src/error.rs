//! What handlers and the registry report: a handler's errno, and a name
//! registered twice. Neither knows the other's module.

use std::fmt;
use std::io;

use hostcall_abi::Errno;

/// A handler's failure: the errno the caller gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostError(pub Errno);

impl From<Errno> for HostError {
    fn from(e: Errno) -> Self {
        HostError(e)
    }
}

impl From<io::Error> for HostError {
    fn from(e: io::Error) -> Self {
        HostError(errno_of(&e))
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.name() {
            Some(n) => write!(f, "{n} ({})", self.0.message()),
            None => write!(f, "errno {}", self.0 .0),
        }
    }
}

/// The errno for an `io::Error`: the OS's own code when there is one.
pub fn errno_of(e: &io::Error) -> Errno {
    if let Some(code) = e.raw_os_error() {
        if let Ok(c) = u32::try_from(code) {
            if c > 0 {
                return Errno(c);
            }
        }
    }
    use io::ErrorKind as K;
    match e.kind() {
        K::NotFound => Errno::ENOENT,
        K::PermissionDenied => Errno::EACCES,
        K::AlreadyExists => Errno::EEXIST,
        K::InvalidInput | K::InvalidData => Errno::EINVAL,
        K::BrokenPipe => Errno::EPIPE,
        K::WouldBlock => Errno::EAGAIN,
        K::Interrupted => Errno::EINTR,
        K::Unsupported => Errno::ENOSYS,
        K::OutOfMemory => Errno::ENOMEM,
        K::UnexpectedEof | K::WriteZero => Errno::EIO,
        _ => Errno::EIO,
    }
}

/// What a handler returns: the reply value, or the caller's errno.
pub type HandlerResult = Result<u64, HostError>;

/// [`Registry::register`] was given a name that already has a handler;
/// [`Registry::replace`] is the way to swap one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate(pub String);

impl fmt::Display for Duplicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hostcall `{}` is registered already (use `replace` to swap its handler)", self.0)
    }
}

impl std::error::Error for Duplicate {}
