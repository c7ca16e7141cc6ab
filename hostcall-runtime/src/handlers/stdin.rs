//! Device fd 0. The host's stdin is read on a thread of its own, so a GPU
//! thread waiting for a line (stdin a terminal nobody has typed into yet)
//! never holds up the server: the read is deferred ([`HostCx::defer`]) and
//! every other thread's calls go on being served.
//!
//! A [`Stdin`] is a handle: its clones read one stream through one reader
//! thread, each read taking the next bytes, whichever handle asks (how the
//! devices of one run share the process's stdin, [`crate::devices`]).
//!
//! [`HostCx::defer`]: crate::HostCx::defer

use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Mutex};

use hostcall_abi::Errno;

use crate::error::{errno_of, HostError};

/// Bytes the reader thread takes from the source at once.
const CHUNK: usize = 64 * 1024;

enum Chunk {
    Data(Vec<u8>),
    Eof,
    Failed(Errno),
}

/// What [`Stdin::poll_read`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StdinPoll {
    /// This many bytes were copied; 0 means end of input.
    Ready(usize),
    /// Nothing yet: ask again later.
    Pending,
}

/// The device's stdin; clones share it (see the module's docs).
#[derive(Clone)]
pub struct Stdin(Arc<Mutex<Stream>>);

/// What the handles of one stdin share.
struct Stream {
    /// The source, until the first read starts the reader thread with it.
    source: Option<Box<dyn Read + Send>>,
    chunks: Option<Receiver<Chunk>>,
    /// Bytes received and not yet handed to the device.
    held: Vec<u8>,
    at: usize,
    /// End of input or a read error, once seen: every later read says so.
    end: Option<Result<(), Errno>>,
}

impl Stdin {
    pub fn new(source: Box<dyn Read + Send>) -> Self {
        Stdin(Arc::new(Mutex::new(Stream { source: Some(source), chunks: None, held: Vec::new(), at: 0, end: None })))
    }

    /// Copy what has arrived into `buf` without waiting.
    pub fn poll_read(&mut self, buf: &mut [u8]) -> Result<StdinPoll, HostError> {
        if buf.is_empty() {
            return Ok(StdinPoll::Ready(0));
        }
        // A poisoned lock still guards a usable stream: no step of
        // `poll_read` leaves it half-changed.
        self.0.lock().unwrap_or_else(|e| e.into_inner()).poll_read(buf)
    }
}

impl Stream {
    fn poll_read(&mut self, buf: &mut [u8]) -> Result<StdinPoll, HostError> {
        loop {
            if self.at < self.held.len() {
                let n = buf.len().min(self.held.len() - self.at);
                buf[..n].copy_from_slice(&self.held[self.at..self.at + n]);
                self.at += n;
                return Ok(StdinPoll::Ready(n));
            }
            match self.end {
                Some(Ok(())) => return Ok(StdinPoll::Ready(0)),
                Some(Err(e)) => return Err(HostError(e)),
                None => {}
            }
            let chunks = match &mut self.chunks {
                Some(rx) => rx,
                none => none.insert(start(&mut self.source)?),
            };
            match chunks.try_recv() {
                Ok(Chunk::Data(data)) => {
                    self.held = data;
                    self.at = 0;
                }
                Ok(Chunk::Eof) | Err(TryRecvError::Disconnected) => self.end = Some(Ok(())),
                Ok(Chunk::Failed(e)) => self.end = Some(Err(e)),
                Err(TryRecvError::Empty) => return Ok(StdinPoll::Pending),
            }
        }
    }
}

/// Start the reader thread on `source` (taken: there is one reader). It
/// holds at most one chunk ahead of the device (a rendezvous-sized channel),
/// and ends at end of input, on an error, or when the receiver is dropped.
fn start(source: &mut Option<Box<dyn Read + Send>>) -> Result<Receiver<Chunk>, HostError> {
    let mut source = source.take().ok_or(HostError(Errno::EBADF))?;
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("hostcall-stdin".into())
        .spawn(move || loop {
            let mut buf = vec![0u8; CHUNK];
            let chunk = match source.read(&mut buf) {
                Ok(0) => Chunk::Eof,
                Ok(n) => {
                    buf.truncate(n);
                    Chunk::Data(buf)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Chunk::Failed(errno_of(&e)),
            };
            let last = !matches!(chunk, Chunk::Data(_));
            if tx.send(chunk).is_err() || last {
                return;
            }
        })
        .map_err(|e| HostError(errno_of(&e)))?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(stdin: &mut Stdin) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 3];
        loop {
            match stdin.poll_read(&mut buf).unwrap() {
                StdinPoll::Ready(0) => return out,
                StdinPoll::Ready(n) => out.extend_from_slice(&buf[..n]),
                StdinPoll::Pending => std::thread::yield_now(),
            }
        }
    }

    #[test]
    fn reads_everything_then_end_of_input_for_good() {
        let mut stdin = Stdin::new(Box::new(&b"first line\nsecond\n"[..]));
        assert_eq!(read_all(&mut stdin), b"first line\nsecond\n");
        assert_eq!(stdin.poll_read(&mut [0u8; 8]).unwrap(), StdinPoll::Ready(0));
    }

    #[test]
    fn empty_input_is_end_of_input() {
        let mut stdin = Stdin::new(Box::new(io::empty()));
        assert_eq!(read_all(&mut stdin), b"");
    }

    #[test]
    fn a_read_error_becomes_an_errno() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
        }
        let mut stdin = Stdin::new(Box::new(Broken));
        let mut buf = [0u8; 4];
        let err = loop {
            match stdin.poll_read(&mut buf) {
                Ok(StdinPoll::Pending) => std::thread::yield_now(),
                other => break other,
            }
        };
        assert_eq!(err, Err(HostError(Errno(libc::EIO as u32))));
    }

    #[test]
    fn clones_read_one_stream_each_byte_once() {
        let text: Vec<u8> = (0..20_000u32).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        let a = Stdin::new(Box::new(io::Cursor::new(text.clone())));
        let mut handles = [a.clone(), a];
        // What each read took, in the order taken, and by which handle.
        let mut taken: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut buf = [0u8; 7];
        let mut ended = [false; 2];
        while !ended.iter().all(|&e| e) {
            for (i, stdin) in handles.iter_mut().enumerate() {
                match stdin.poll_read(&mut buf).unwrap() {
                    StdinPoll::Ready(0) => ended[i] = true,
                    StdinPoll::Ready(n) => taken.push((i, buf[..n].to_vec())),
                    StdinPoll::Pending => std::thread::yield_now(),
                }
            }
        }
        assert!((0..2).all(|i| taken.iter().any(|(h, _)| *h == i)), "both handles read");
        let joined: Vec<u8> = taken.into_iter().flat_map(|(_, bytes)| bytes).collect();
        assert!(joined == text, "each byte once, in the stream's order");
    }
}
