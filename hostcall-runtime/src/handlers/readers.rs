//! Large reads from files split among threads: one thread's `read(2)` from
//! the page cache or `/dev/zero` fills host memory at about 9 GB/s (the
//! H100 hosts of 2026-12-07), a sixth of what PCIe carries to the GPU, so a
//! bulk read into device memory is bound by it. A piece of at least
//! [`MIN_SPLIT`] bytes is read by [`THREADS`] threads at once, each a
//! `pread` loop over its own part; the threads are started on the first
//! such read and wait on a channel between reads.

use std::io;
use std::os::fd::RawFd;
use std::sync::mpsc::{channel, Receiver, Sender};

/// Pieces smaller than this are read by the calling thread alone.
pub const MIN_SPLIT: usize = 1 << 20;
/// Threads per split read, the caller's included.
pub const THREADS: usize = 4;

/// One thread's part of a read.
struct Part {
    index: usize,
    fd: RawFd,
    ptr: *mut u8,
    len: usize,
    at: u64,
}

// SAFETY: a `Part` is a disjoint piece of a buffer that `Pool::read_at`
// borrows mutably and does not give back until every part's result has
// come back; the worker is the only one to touch those bytes meanwhile.
unsafe impl Send for Part {}

impl Part {
    /// `pread` until the part is full, end of file or an error: the bytes
    /// read.
    fn fill(&self) -> io::Result<usize> {
        let mut done = 0;
        while done < self.len {
            // SAFETY: `ptr..ptr + len` is writable memory this part alone
            // uses until its result is sent (see `Send` above), and
            // `done < len`.
            let n = unsafe {
                libc::pread(self.fd, self.ptr.add(done).cast(), self.len - done, (self.at + done as u64) as libc::off_t)
            };
            match n {
                0 => break,
                n if n > 0 => done += n as usize,
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return if done > 0 { Ok(done) } else { Err(e) };
                }
            }
        }
        Ok(done)
    }
}

/// The reading threads (none until the first split read).
#[derive(Default)]
pub struct Pool {
    workers: Vec<Sender<Part>>,
    results: Option<Receiver<(usize, io::Result<usize>)>>,
}

// Soundness of the parts sent to workers: `read_at` returns only after it
// has received a result for every part it sent (or learnt that every
// worker is gone, so no part is still being read), and neither `fill` nor
// the code between the sends and the last receive can panic (no indexing
// outside `got`, which has a slot per part, and no unwrap).

impl Pool {
    /// Read into `buf` from `fd` at `at` as `pread` would, in parts on
    /// several threads; the bytes read (fewer at end of file), the file
    /// position untouched. Each part is filled, so a short count means end
    /// of file or an error after it.
    pub fn read_at(&mut self, fd: RawFd, buf: &mut [u8], at: u64) -> io::Result<usize> {
        if buf.len() < MIN_SPLIT {
            let part = Part { index: 0, fd, ptr: buf.as_mut_ptr(), len: buf.len(), at };
            return part.fill();
        }
        self.start();
        let size = buf.len().div_ceil(THREADS).next_multiple_of(4096);
        let parts: Vec<Part> = buf
            .chunks_mut(size)
            .enumerate()
            .map(|(index, c)| Part { index, fd, ptr: c.as_mut_ptr(), len: c.len(), at: at + (index * size) as u64 })
            .collect();
        let lens: Vec<usize> = parts.iter().map(|p| p.len).collect();
        let mut got: Vec<Option<io::Result<usize>>> = (0..parts.len()).map(|_| None).collect();
        let mut sent = 0;
        let mut workers = self.workers.iter();
        let mut mine = Vec::new();
        for part in parts {
            // Part 0, and any part without a worker (fewer threads started,
            // or one gone), is read by this thread.
            let worker = if part.index > 0 { workers.next() } else { None };
            match worker {
                Some(worker) => match worker.send(part) {
                    Ok(()) => sent += 1,
                    Err(back) => mine.push(back.0),
                },
                None => mine.push(part),
            }
        }
        for part in mine {
            if let Some(slot) = got.get_mut(part.index) {
                *slot = Some(part.fill());
            }
        }
        if let Some(results) = &self.results {
            for _ in 0..sent {
                // Every worker answers each part it took (`work`), so this
                // returns once per part sent.
                match results.recv() {
                    Ok((index, r)) => {
                        if let Some(slot) = got.get_mut(index) {
                            *slot = Some(r);
                        }
                    }
                    // Every worker is gone: none is reading a part now.
                    Err(_) => return Err(io::Error::other("a reading thread ended")),
                }
            }
        }
        // The bytes up to the first part that came back short.
        let mut total = 0;
        for (r, len) in got.into_iter().zip(lens) {
            match r {
                Some(Ok(n)) => {
                    total += n;
                    if n < len {
                        break;
                    }
                }
                Some(Err(e)) if total == 0 => return Err(e),
                _ => break,
            }
        }
        Ok(total)
    }

    /// Start the threads, once (those that cannot be started are left
    /// out: their parts are read by the caller).
    fn start(&mut self) {
        if self.results.is_some() {
            return;
        }
        let (done, results) = channel();
        for i in 1..THREADS {
            let (tx, rx) = channel::<Part>();
            let done = done.clone();
            let spawned = std::thread::Builder::new().name(format!("hostcall-read-{i}")).spawn(move || work(rx, done));
            if spawned.is_ok() {
                self.workers.push(tx);
            }
        }
        self.results = Some(results);
    }
}

fn work(parts: Receiver<Part>, done: Sender<(usize, io::Result<usize>)>) {
    while let Ok(part) = parts.recv() {
        let r = part.fill();
        if done.send((part.index, r)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn split_reads_match_one_read_and_stop_at_end_of_file() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..5 * MIN_SPLIT + 12345).map(|i| (i * 7 + i / 4099) as u8).collect();
        f.write_all(&data).unwrap();
        let mut pool = Pool::default();
        for (at, len) in [(0, 4 * MIN_SPLIT), (3, 2 * MIN_SPLIT + 5), (MIN_SPLIT as u64 + 1, 8 * MIN_SPLIT), (7, 100)] {
            let mut buf = vec![0u8; len];
            let n = pool.read_at(f.as_raw_fd(), &mut buf, at).unwrap();
            let want = &data[at as usize..(at as usize + len).min(data.len())];
            assert_eq!(n, want.len(), "read of {len} at {at}");
            assert!(buf[..n] == *want, "bytes of the read of {len} at {at}");
        }
        let mut buf = vec![0u8; 2 * MIN_SPLIT];
        assert_eq!(pool.read_at(f.as_raw_fd(), &mut buf, data.len() as u64 + 10).unwrap(), 0);
        assert_eq!(pool.workers.len(), THREADS - 1, "threads started once and kept");
        assert!(pool.read_at(-1, &mut buf, 0).is_err(), "a bad fd is an error");

        // Fewer threads than parts (some could not be started): the caller
        // reads the parts left over, and every byte is still there.
        let (done, results) = channel();
        let (tx, rx) = channel::<Part>();
        std::thread::spawn(move || work(rx, done));
        let mut few = Pool { workers: vec![tx], results: Some(results) };
        let mut buf = vec![0u8; 4 * MIN_SPLIT];
        assert_eq!(few.read_at(f.as_raw_fd(), &mut buf, 9).unwrap(), buf.len());
        assert!(buf[..] == data[9..9 + buf.len()], "the bytes of a read with one worker for three parts");
    }
}
