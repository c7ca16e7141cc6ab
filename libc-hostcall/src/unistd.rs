//! `<unistd.h>` (and `rename` from `<stdio.h>`, `readv`/`writev` from
//! `<sys/uio.h>`): file I/O and paths, by hostcall.
//!
//! Data: writes go inline in chunks of `MAX_INLINE`, or, when the buffer is
//! in global memory and larger than that, as one declared device region.
//! Reads come back in the reply data (at most the geometry's
//! `reply_data_size` per call: a short read), or straight into a global
//! buffer declared as a region when the buffer is larger. Partial counts are
//! returned like POSIX: an error after some bytes moved is not reported.

use core::ffi::{c_char, c_int, c_void};

use hostcall_abi::layout::limits::MAX_INLINE;
use hostcall_abi::op::{Close, Getcwd, Lseek, Pread, Pwrite, Read, Rename, Unlink, Write};
use hostcall_abi::Errno;

use crate::errno::{c_ret, set_errno};
use crate::hostcall::{ids, post, reply_capacity, request, Region};
use crate::linux::{AT_FDCWD, AT_REMOVEDIR};
use crate::{cstr, heap};

/// Descriptors whose inline writes are posted (see the module docs).
const POSTED_FDS: [c_int; 2] = [1, 2];

/// One write call: `payload` inline or `region`, at `offset` if given.
fn write_once(fd: c_int, payload: &[u8], region: Option<Region>, offset: Option<i64>) -> Result<usize, Errno> {
    if region.is_none() && offset.is_none() && POSTED_FDS.contains(&fd) {
        post(&ids::__HOSTCALL__write, &Write { fd }, payload)?;
        return Ok(payload.len());
    }
    let len = region.map_or(payload.len() as u64, |r| r.len);
    let done = match offset {
        None => request(&ids::__HOSTCALL__write, &Write { fd }, payload, region, &mut [])?,
        Some(offset) => request(&ids::__HOSTCALL__pwrite, &Pwrite { fd, offset }, payload, region, &mut [])?,
    };
    Ok(done.value.min(len) as usize)
}

/// `write`/`pwrite` of all of `buf` (or as much as the host takes).
pub fn write_bytes(fd: c_int, buf: &[u8], offset: Option<i64>) -> Result<usize, Errno> {
    if buf.len() > MAX_INLINE {
        if let Some(region) = Region::global(buf.as_ptr(), buf.len()) {
            return write_once(fd, &[], Some(region), offset);
        }
    }
    let mut done = 0usize;
    for chunk in buf.chunks(MAX_INLINE) {
        let at = offset.map(|o| o.saturating_add(done as i64));
        match write_once(fd, chunk, None, at) {
            Ok(n) => {
                done += n;
                if n < chunk.len() {
                    break;
                }
            }
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(done)
}

/// `read`/`pread` into `buf`; may be short.
pub fn read_bytes(fd: c_int, buf: &mut [u8], offset: Option<i64>) -> Result<usize, Errno> {
    let cap = reply_capacity();
    let (region, reply_len) = match Region::global(buf.as_ptr(), buf.len()) {
        Some(r) if buf.len() > cap => (Some(r), 0),
        _ => (None, buf.len().min(cap)),
    };
    let len = region.map_or(reply_len as u64, |r| r.len);
    let reply = buf.get_mut(..reply_len).unwrap_or(&mut []);
    let done = match offset {
        None => request(&ids::__HOSTCALL__read, &Read { fd, len }, &[], region, reply)?,
        Some(offset) => request(&ids::__HOSTCALL__pread, &Pread { fd, offset, len }, &[], region, reply)?,
    };
    let got = if region.is_some() { len } else { done.data_len as u64 };
    Ok(done.value.min(got) as usize)
}

/// # Safety
/// `buf` is null with `len == 0` or points to `len` bytes of the given
/// mutability.
unsafe fn bytes<'a>(buf: *const c_void, len: usize) -> Result<&'a [u8], Errno> {
    match (buf.is_null(), len) {
        (_, 0) => Ok(&[]),
        (true, _) => Err(Errno::EFAULT),
        // SAFETY: caller's contract.
        (false, _) => Ok(unsafe { core::slice::from_raw_parts(buf.cast(), len) }),
    }
}

/// # Safety
/// As for [`bytes`], writable.
unsafe fn bytes_mut<'a>(buf: *mut c_void, len: usize) -> Result<&'a mut [u8], Errno> {
    match (buf.is_null(), len) {
        (_, 0) => Ok(&mut []),
        (true, _) => Err(Errno::EFAULT),
        // SAFETY: caller's contract; the bytes are only written.
        (false, _) => Ok(unsafe { core::slice::from_raw_parts_mut(buf.cast(), len) }),
    }
}

fn count(n: usize) -> isize {
    n as isize
}

/// # Safety
/// C contract of `write(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, len: usize) -> isize {
    // SAFETY: C contract.
    c_ret(unsafe { bytes(buf, len) }.and_then(|b| write_bytes(fd, b, None)).map(count))
}

/// # Safety
/// C contract of `pwrite(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn pwrite64(fd: c_int, buf: *const c_void, len: usize, offset: i64) -> isize {
    // SAFETY: C contract.
    c_ret(unsafe { bytes(buf, len) }.and_then(|b| write_bytes(fd, b, Some(offset))).map(count))
}

/// # Safety
/// C contract of `pwrite(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn pwrite(fd: c_int, buf: *const c_void, len: usize, offset: i64) -> isize {
    // SAFETY: C contract.
    unsafe { pwrite64(fd, buf, len, offset) }
}

/// # Safety
/// C contract of `read(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, len: usize) -> isize {
    // SAFETY: C contract.
    c_ret(unsafe { bytes_mut(buf, len) }.and_then(|b| read_bytes(fd, b, None)).map(count))
}

/// # Safety
/// C contract of `pread(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn pread64(fd: c_int, buf: *mut c_void, len: usize, offset: i64) -> isize {
    // SAFETY: C contract.
    c_ret(unsafe { bytes_mut(buf, len) }.and_then(|b| read_bytes(fd, b, Some(offset))).map(count))
}

/// # Safety
/// C contract of `pread(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn pread(fd: c_int, buf: *mut c_void, len: usize, offset: i64) -> isize {
    // SAFETY: C contract.
    unsafe { pread64(fd, buf, len, offset) }
}

/// `struct iovec`.
#[repr(C)]
pub struct Iovec {
    pub base: *mut c_void,
    pub len: usize,
}

/// # Safety
/// `iov` points to `n` iovecs, each valid as for `write`/`read`.
unsafe fn iovecs<'a>(iov: *const Iovec, n: c_int) -> Result<&'a [Iovec], Errno> {
    match usize::try_from(n) {
        Ok(0) => Ok(&[]),
        Ok(_) if iov.is_null() => Err(Errno::EFAULT),
        // SAFETY: caller's contract.
        Ok(n) if n <= 1024 => Ok(unsafe { core::slice::from_raw_parts(iov, n) }),
        _ => Err(Errno::EINVAL),
    }
}

/// `writev`: one write per buffer, stopping at the first short one.
///
/// # Safety
/// C contract of `writev(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const Iovec, n: c_int) -> isize {
    let go = || -> Result<usize, Errno> {
        let mut total = 0usize;
        // SAFETY: C contract.
        for v in unsafe { iovecs(iov, n) }? {
            // SAFETY: C contract: each iovec is a readable buffer.
            let b = unsafe { bytes(v.base, v.len) }?;
            match write_bytes(fd, b, None) {
                Ok(k) => {
                    total += k;
                    if k < b.len() {
                        break;
                    }
                }
                Err(e) if total == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(total)
    };
    c_ret(go().map(count))
}

/// `readv`: reads into the buffers in turn, stopping at the first short read.
///
/// # Safety
/// C contract of `readv(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const Iovec, n: c_int) -> isize {
    let go = || -> Result<usize, Errno> {
        let mut total = 0usize;
        // SAFETY: C contract.
        for v in unsafe { iovecs(iov, n) }? {
            // SAFETY: C contract: each iovec is a writable buffer.
            let b = unsafe { bytes_mut(v.base, v.len) }?;
            let want = b.len();
            match read_bytes(fd, b, None) {
                Ok(k) => {
                    total += k;
                    if k < want {
                        break;
                    }
                }
                Err(e) if total == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(total)
    };
    c_ret(go().map(count))
}

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn close(fd: c_int) -> c_int {
    c_ret(request(&ids::__HOSTCALL__close, &Close { fd }, &[], None, &mut []).map(|_| 0))
}

pub fn lseek_to(fd: c_int, offset: i64, whence: c_int) -> Result<i64, Errno> {
    let done = request(&ids::__HOSTCALL__lseek, &Lseek { fd, offset, whence }, &[], None, &mut [])?;
    i64::try_from(done.value).map_err(|_| Errno::EOVERFLOW)
}

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn lseek64(fd: c_int, offset: i64, whence: c_int) -> i64 {
    c_ret(lseek_to(fd, offset, whence))
}

#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn lseek(fd: c_int, offset: i64, whence: c_int) -> i64 {
    c_ret(lseek_to(fd, offset, whence))
}

/// The kernel's files are the host's; none is a terminal as far as the
/// device can tell (no hostcall: `isatty` is asked often, and a wrong "no"
/// only turns off colours and line buffering).
#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn isatty(_fd: c_int) -> c_int {
    set_errno(Errno::ENOTTY);
    0
}

/// `getcwd`: the host's working directory, relative to its sandbox root.
///
/// # Safety
/// C contract of `getcwd(3)` (a null `buf` is allocated with `malloc`).
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn getcwd(buf: *mut c_char, size: usize) -> *mut c_char {
    let go = || -> Result<*mut c_char, Errno> {
        let (buf, size, owned) = match (buf.is_null(), size) {
            (false, 0) => return Err(Errno::EINVAL),
            (false, _) => (buf, size, false),
            (true, 0) => (heap::alloc(4096, 1).cast::<c_char>(), 4096, true),
            (true, _) => (heap::alloc(size, 1).cast::<c_char>(), size, true),
        };
        if buf.is_null() {
            return Err(Errno::ENOMEM);
        }
        // SAFETY: `buf` holds `size` writable bytes (caller's, or ours).
        let out = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), size) };
        let result = (|| {
            let room = out.len() - 1;
            let done = request(&ids::__HOSTCALL__getcwd, &Getcwd {}, &[], None, &mut out[..room])?;
            let len = usize::try_from(done.value).map_err(|_| Errno::ERANGE)?;
            if len > done.data_len {
                return Err(Errno::ERANGE);
            }
            let nul = out.get_mut(len).ok_or(Errno::ERANGE)?;
            *nul = 0;
            Ok(buf)
        })();
        if result.is_err() && owned {
            // SAFETY: `buf` is our block, not handed out.
            unsafe { heap::free(buf.cast()) };
        }
        result
    };
    c_ret(go())
}

pub fn unlinkat_bytes(dirfd: c_int, path: &[u8], flags: c_int) -> Result<c_int, Errno> {
    request(&ids::__HOSTCALL__unlink, &Unlink { dirfd, flags }, path, None, &mut []).map(|_| 0)
}

/// # Safety
/// C contract of `unlink(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn unlink(path: *const c_char) -> c_int {
    // SAFETY: C contract.
    c_ret(unsafe { cstr::path(path) }.and_then(|p| unlinkat_bytes(AT_FDCWD, p, 0)))
}

/// # Safety
/// C contract of `unlinkat(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: C contract.
    c_ret(unsafe { cstr::path(path) }.and_then(|p| unlinkat_bytes(dirfd, p, flags)))
}

/// # Safety
/// C contract of `rmdir(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn rmdir(path: *const c_char) -> c_int {
    // SAFETY: C contract.
    c_ret(unsafe { cstr::path(path) }.and_then(|p| unlinkat_bytes(AT_FDCWD, p, AT_REMOVEDIR)))
}

/// `rename(old, new)`: payload `old ++ new`, `Rename { old_len }`.
pub fn rename_bytes(old: &[u8], new: &[u8]) -> Result<c_int, Errno> {
    let mut payload = [0u8; MAX_INLINE];
    let total = old.len().checked_add(new.len()).filter(|n| *n <= MAX_INLINE).ok_or(Errno::ENAMETOOLONG)?;
    payload[..old.len()].copy_from_slice(old);
    payload[old.len()..total].copy_from_slice(new);
    let req = Rename { old_len: old.len() as u32 };
    request(&ids::__HOSTCALL__rename, &req, &payload[..total], None, &mut []).map(|_| 0)
}

/// # Safety
/// C contract of `rename(2)`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn rename(old: *const c_char, new: *const c_char) -> c_int {
    // SAFETY: C contract.
    let paths = unsafe { cstr::path(old).and_then(|o| Ok((o, cstr::path(new)?))) };
    c_ret(paths.and_then(|(o, n)| rename_bytes(o, n)))
}
