//! The record decoder over arbitrary ring contents: what a kernel, buggy or
//! hostile, can leave in the ring. Errors are fine; a panic, an
//! out-of-bounds read or a record that breaks the geometry's limits is not.
//!
//! `cargo +nightly fuzz run records` (from `fuzz/`).
#![no_main]

use std::sync::atomic::AtomicU64;

use hostcall_runtime::hostcall_abi::{limits, record_flag, Consumer, Geometry, LINE_WORDS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let g = Geometry { buff_size: 8192, slot_count: 64, reply_data_size: 64 };
    let mut words: Vec<u64> =
        data.chunks(8).map(|c| c.iter().rev().fold(0u64, |w, &b| w << 8 | u64::from(b))).collect();
    words.resize(g.ring_words(), 0);
    // The first input byte's low bit: flag the first lines as published, so
    // the header and lane checks run on the rest of the input.
    if data.first().is_some_and(|b| b & 1 == 1) {
        for w in &mut words[..4 * LINE_WORDS] {
            *w = (*w & 0xffff_ffff) | u64::from(record_flag(0)) << 32;
        }
    }
    let ring: Vec<AtomicU64> = words.iter().map(|&w| AtomicU64::new(w)).collect();
    let mut c = Consumer::new(g);
    let mut out = vec![0u8; limits::MAX_INLINE];
    for _ in 0..8 {
        match c.poll(&ring) {
            Ok(Some(rec)) => {
                assert!(rec.lines <= g.max_record_lines());
                for call in rec.calls() {
                    assert!(call.payload_len as usize <= limits::MAX_INLINE);
                    assert!(call.slot.is_none_or(|s| u64::from(s) < g.slot_count));
                    c.read_payload(&ring, call, &mut out[..call.payload_len as usize]);
                }
                c.consume(&ring, &rec);
            }
            Ok(None) | Err(_) => break,
        }
    }
});
