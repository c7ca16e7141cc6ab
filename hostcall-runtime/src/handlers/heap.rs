//! The host side of the device heap: device memory for the blocks the
//! device's arena cannot serve (larger than it, or once it is spent).
//!
//! Blocks come from segments of device memory the driver allocates (at
//! least [`SEGMENT_MIN`] each), first fit, aligned to [`HEAP_ALIGN`] or
//! more. Freed blocks coalesce with free neighbours in their segment, so
//! memory freed at one size serves any other. Segments go back to the driver
//! when the run ends, not before: `cuMemFree` may wait for the running
//! kernel, which waits for this server.
//!
//! The only device addresses these handlers touch outside a declared region
//! ([`crate::DeviceSlice`]) are blocks of this heap's own segments, found in
//! its table: an address the device names that is not one of them is read
//! through the region the call declared, or refused.

use std::collections::BTreeMap;
use std::io::Write;

use hostcall_abi::op::{HeapAlloc, HeapFree, HeapOom, HeapRealloc, HEAP_ALIGN};
use hostcall_abi::Errno;

use super::HostState;
use crate::backend::{Backend, DeviceAlloc};
use crate::error::{Duplicate, HandlerResult, HostError};
use crate::registry::{HostCx, Payload, Registry};

/// The smallest segment asked of the driver.
pub const SEGMENT_MIN: u64 = 256 << 20;
/// Segments are whole multiples of this (the driver's large-page size).
const SEGMENT_ROUND: u64 = 2 << 20;
/// The largest alignment a block can ask for.
pub const MAX_ALIGN: u64 = SEGMENT_ROUND;

struct Segment {
    _mem: DeviceAlloc,
    /// Free extents: address -> bytes.
    free: BTreeMap<u64, u64>,
}

/// Device memory handed to the device heap.
pub struct DeviceHeap {
    /// The smallest segment to ask the driver for.
    segment_min: u64,
    segments: Vec<Segment>,
    /// Blocks the device holds: address -> (bytes, segment).
    live: BTreeMap<u64, (u64, usize)>,
    /// Bytes of all segments.
    reserved: u64,
    /// Out-of-memory reports the device sent ([`out_of_memory`]).
    oom_reports: u64,
}

impl std::fmt::Debug for DeviceHeap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceHeap {{ {} segments, {} bytes, {} live blocks }}",
            self.segments.len(),
            self.reserved,
            self.live.len()
        )
    }
}

impl Default for DeviceHeap {
    fn default() -> Self {
        Self::with_segment_min(SEGMENT_MIN)
    }
}

impl DeviceHeap {
    /// A heap that asks the driver for at least `bytes` at a time.
    pub fn with_segment_min(bytes: u64) -> Self {
        DeviceHeap { segment_min: bytes, segments: Vec::new(), live: BTreeMap::new(), reserved: 0, oom_reports: 0 }
    }

    /// Bytes of device memory the heap has from the driver.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Bytes in blocks the device holds.
    pub fn in_use(&self) -> u64 {
        self.live.values().map(|(len, _)| len).sum()
    }

    /// A block of `size` bytes aligned to `align`: from a free extent, else
    /// from a new segment.
    pub fn alloc(&mut self, backend: &mut dyn Backend, size: u64, align: u64) -> Result<u64, HostError> {
        if !align.is_power_of_two() || align > MAX_ALIGN {
            return Err(HostError(Errno::EINVAL));
        }
        let align = align.max(HEAP_ALIGN);
        let size = size.max(1).checked_next_multiple_of(HEAP_ALIGN).ok_or(HostError(Errno::ENOMEM))?;
        if let Some(addr) = self.fit(size, align) {
            return Ok(addr);
        }
        let bytes = size
            .checked_add(align)
            .and_then(|b| {
                b.max(self.segment_min.min(backend.heap_segment_min())).checked_next_multiple_of(SEGMENT_ROUND)
            })
            .and_then(|b| usize::try_from(b).ok())
            .ok_or(HostError(Errno::ENOMEM))?;
        let mem = backend.alloc_device(bytes).map_err(|e| {
            tracing::debug!(target: "hostcall", "device heap: cannot grow by {bytes} bytes: {e}");
            HostError(Errno::ENOMEM)
        })?;
        let base = mem.device_addr();
        self.reserved += bytes as u64;
        self.segments.push(Segment { _mem: mem, free: BTreeMap::from([(base, bytes as u64)]) });
        self.fit(size, align).ok_or(HostError(Errno::ENOMEM))
    }

    /// First fit over every segment's free extents.
    fn fit(&mut self, size: u64, align: u64) -> Option<u64> {
        for (index, seg) in self.segments.iter_mut().enumerate() {
            let found = seg.free.iter().find_map(|(&at, &len)| {
                let start = at.checked_next_multiple_of(align)?;
                (start.checked_add(size)? <= at + len).then_some((at, len, start))
            });
            if let Some((at, len, start)) = found {
                seg.free.remove(&at);
                if start > at {
                    seg.free.insert(at, start - at);
                }
                let end = start + size;
                if end < at + len {
                    seg.free.insert(end, at + len - end);
                }
                self.live.insert(start, (size, index));
                return Some(start);
            }
        }
        None
    }

    /// The bytes of the block at `addr`, if the device holds one there.
    pub fn block_len(&self, addr: u64) -> Option<u64> {
        self.live.get(&addr).map(|&(len, _)| len)
    }

    /// Give back the block at `addr`; `false` when there is none.
    pub fn free(&mut self, addr: u64) -> bool {
        let Some((len, index)) = self.live.remove(&addr) else {
            return false;
        };
        let Some(seg) = self.segments.get_mut(index) else {
            return false;
        };
        let (mut at, mut len) = (addr, len);
        if let Some((&next, &next_len)) = seg.free.range(at + len..).next() {
            if next == at + len {
                seg.free.remove(&next);
                len += next_len;
            }
        }
        if let Some((&prev, &prev_len)) = seg.free.range(..at).next_back() {
            if prev + prev_len == at {
                seg.free.remove(&prev);
                at = prev;
                len += prev_len;
            }
        }
        seg.free.insert(at, len);
        true
    }
}

pub fn register(r: &mut Registry<HostState>) -> Result<(), Duplicate> {
    r.register::<HeapAlloc, _>(heap_alloc)?;
    r.register::<HeapRealloc, _>(heap_realloc)?;
    r.register::<HeapFree, _>(|cx, req: HeapFree, _| {
        cx.state.heap.free(req.ptr);
        Ok(0)
    })?;
    r.register::<HeapOom, _>(|cx, req: HeapOom, _| out_of_memory(cx, req.size))?;
    Ok(())
}

/// Out-of-memory lines printed per runtime at most (a command-line run is
/// one runtime): thousands of threads may fail at once, and their lines
/// would bury the output.
const OOM_LINES: u64 = 8;

/// Out of memory (the device gave up on an allocation): say so on stderr,
/// after the output the kernel already posted (whether or not that could
/// be written), with what was asked and what the heap holds; after
/// [`OOM_LINES`] lines, one saying that more are not printed.
fn out_of_memory(cx: &mut HostCx<'_, HostState>, asked: u64) -> HandlerResult {
    let heap = &mut cx.state.heap;
    heap.oom_reports += 1;
    let line = match heap.oom_reports {
        n if n <= OOM_LINES => format!(
            "hostcall: device heap: no GPU memory for {asked} bytes (the heap holds {} MiB from the driver, {} MiB of it in use, beside its arena)\n",
            heap.reserved() >> 20,
            heap.in_use() >> 20
        ),
        n if n == OOM_LINES + 1 => "hostcall: device heap: more allocations failed; not printed\n".to_owned(),
        _ => return Ok(0),
    };
    // A failure is counted in `output`; this line goes to stderr anyway.
    let _ = cx.state.flush_output();
    cx.state.stderr.write_all(line.as_bytes())?;
    Ok(0)
}

fn heap_alloc(cx: &mut HostCx<'_, HostState>, req: HeapAlloc, _: &Payload<'_>) -> HandlerResult {
    let addr = cx.state.heap.alloc(cx.backend, req.size, req.align)?;
    if req.zeroed == 1 {
        if let Err(e) = cx.backend.zero_device(addr, req.size) {
            cx.state.heap.free(addr);
            tracing::debug!(target: "hostcall", "device heap: zeroing {} bytes: {e}", req.size);
            return Err(HostError(Errno::EIO));
        }
    }
    Ok(addr)
}

fn heap_realloc(cx: &mut HostCx<'_, HostState>, req: HeapRealloc, data: &Payload<'_>) -> HandlerResult {
    // The old block: one of ours, or the region the device declared.
    let ours = cx.state.heap.block_len(req.ptr);
    if ours.is_some_and(|len| len >= req.new_size) {
        return Ok(req.ptr);
    }
    let (src, old) = match (ours, data.device()) {
        (Some(len), _) => (req.ptr, len),
        (None, Some(region)) => (region.whole()?, region.len()),
        (None, None) => return Err(HostError(Errno::EINVAL)),
    };
    let new = cx.state.heap.alloc(cx.backend, req.new_size, HEAP_ALIGN)?;
    if let Err(e) = cx.backend.copy_device(new, src, old.min(req.new_size)) {
        cx.state.heap.free(new);
        tracing::debug!(target: "hostcall", "device heap: moving a block of {old} bytes: {e}");
        return Err(HostError(Errno::EFAULT));
    }
    if ours.is_some() {
        cx.state.heap.free(req.ptr);
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::emu::EmuBackend;

    /// Segments of 2 MiB: emulated device memory is host memory.
    const SMALL: u64 = 2 << 20;

    #[test]
    fn blocks_are_aligned_disjoint_and_coalesce_when_freed() {
        let mut backend = EmuBackend::new();
        let mut heap = DeviceHeap::with_segment_min(SMALL);
        let a = heap.alloc(&mut backend, 100, 16).unwrap();
        let b = heap.alloc(&mut backend, 1 << 20, 1 << 16).unwrap();
        let c = heap.alloc(&mut backend, 300, 256).unwrap();
        assert_eq!((a % HEAP_ALIGN, b % (1 << 16), c % HEAP_ALIGN), (0, 0, 0));
        assert!(a + 256 <= b || b + (1 << 20) <= a);
        assert_eq!(heap.segments.len(), 1, "one segment serves all three");
        assert_eq!(heap.block_len(a), Some(256));
        // Freed at one size, the memory serves another: three small blocks
        // freed make room for one the size of all of them.
        assert!(heap.free(a) && heap.free(b) && heap.free(c));
        assert!(!heap.free(b), "a second free is ignored");
        let seg = &heap.segments[0];
        assert_eq!(seg.free.len(), 1, "freed blocks coalesce: {:x?}", seg.free);
        let whole = heap.alloc(&mut backend, SMALL, 256).unwrap();
        assert_eq!(heap.segments.len(), 1, "the coalesced segment holds a block its own size");
        assert_eq!(heap.in_use(), SMALL);
        heap.free(whole);
        assert_eq!(heap.in_use(), 0);
    }

    #[test]
    fn a_block_larger_than_a_segment_gets_its_own_and_bad_requests_fail() {
        let mut backend = EmuBackend::new();
        let mut heap = DeviceHeap::with_segment_min(SMALL);
        let big = heap.alloc(&mut backend, SMALL + 1, 1 << 21).unwrap();
        assert_eq!(big % (1 << 21), 0);
        assert!(heap.reserved() > SMALL);
        assert_eq!(heap.alloc(&mut backend, 8, 3), Err(HostError(Errno::EINVAL)));
        assert_eq!(heap.alloc(&mut backend, 8, MAX_ALIGN * 2), Err(HostError(Errno::EINVAL)));
        assert_eq!(heap.alloc(&mut backend, u64::MAX - 10, 16), Err(HostError(Errno::ENOMEM)));
    }
}
