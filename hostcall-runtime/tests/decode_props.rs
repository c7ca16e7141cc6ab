//! Decoders on random bus data: errors, never panics or out-of-bounds reads.

use std::sync::atomic::AtomicU64;

use hostcall_runtime::hostcall_abi::op::*;
use hostcall_runtime::hostcall_abi::{
    pack_bytes, pack_pairs, record_flag, unpack_bytes, unpack_pairs, Consumer, Geometry, Header, Lane, Reply,
    LINE_WORDS,
};
use proptest::prelude::*;

fn all_from_args(a: [u64; 3]) {
    let _ = Open::from_args(a);
    let _ = Read::from_args(a);
    let _ = Write::from_args(a);
    let _ = Pread::from_args(a);
    let _ = Pwrite::from_args(a);
    let _ = Close::from_args(a);
    let _ = Lseek::from_args(a);
    let _ = Fstat::from_args(a);
    let _ = Statx::from_args(a);
    let _ = Unlink::from_args(a);
    let _ = Mkdir::from_args(a);
    let _ = Rename::from_args(a);
    let _ = Getcwd::from_args(a);
    let _ = Getenv::from_args(a);
    let _ = Arg::from_args(a);
    let _ = ClockGettime::from_args(a);
    let _ = Getrandom::from_args(a);
    let _ = Exit::from_args(a);
    let _ = Abort::from_args(a);
    let _ = Unsupported::from_args(a);
    let _ = Echo::from_args(a);
}

proptest! {
    #[test]
    fn header_lane_and_reply_round_trip(
        d in prop::array::uniform5(any::<u32>()),
        args in prop::array::uniform3(any::<u64>()),
        flag in any::<u32>(),
        other in any::<u32>(),
        len in 0u32..(1 << 31),
        region in any::<bool>(),
    ) {
        let h = Header { op: d[0], lanes: d[1], base_slot: d[2], lines: d[3], flags: d[4] };
        prop_assert_eq!(Header::from_words(&h.to_words(flag), flag), Some(h));
        let l = Lane { args, payload_len: len, region, seq: d[0] };
        prop_assert_eq!(Lane::from_words(&l.to_words(flag), flag), Some(l));
        let r = Reply { value: args[0], errno: d[1], data_len: d[2] };
        prop_assert_eq!(Reply::from_words(&r.to_words(flag), flag), Some(r));
        if other != flag {
            // One word of another write and the whole is refused.
            let mut w = r.to_words(flag);
            w[(d[3] % 4) as usize] = r.to_words(other)[(d[3] % 4) as usize];
            prop_assert_eq!(Reply::from_words(&w, flag), None);
        }
    }

    #[test]
    fn op_decoders_never_panic(a in prop::array::uniform3(any::<u64>())) {
        all_from_args(a);
        // What decodes re-encodes to the same words (for the used fields).
        if let Ok(o) = Open::from_args(a) {
            prop_assert_eq!(Open::from_args(o.to_args()), Ok(o));
        }
    }

    #[test]
    fn consumer_on_random_ring(
        words in prop::collection::vec(any::<u64>(), 64 * LINE_WORDS * 2),
        head_tag in any::<bool>(),
    ) {
        let g = Geometry { buff_size: 8192, slot_count: 64, reply_data_size: 64 };
        let mut words = words;
        words.resize(g.ring_words(), 0);
        if head_tag {
            // Flag the first lines as published so the header and lane
            // checks run on random data.
            for w in &mut words[..4 * LINE_WORDS] {
                *w = (*w & 0xffff_ffff) | u64::from(record_flag(0)) << 32;
            }
        }
        let ring: Vec<AtomicU64> = words.iter().map(|&w| AtomicU64::new(w)).collect();
        let mut c = Consumer::new(g);
        for _ in 0..4 {
            match c.poll(&ring) {
                Ok(Some(rec)) => {
                    prop_assert!(rec.lines <= g.max_record_lines());
                    for call in rec.calls() {
                        prop_assert!(call.payload_len as usize <= hostcall_runtime::hostcall_abi::limits::MAX_INLINE);
                        prop_assert!(call.slot.is_none_or(|s| u64::from(s) < g.slot_count));
                        let mut out = vec![0u8; call.payload_len as usize];
                        c.read_payload(&ring, call, &mut out);
                    }
                    c.consume(&ring, &rec);
                }
                Ok(None) | Err(_) => break,
            }
        }
        // A ring of the wrong size is an error, not a panic.
        prop_assert!(c.poll(&ring[..ring.len() - 1]).is_err());
    }

    #[test]
    fn pairs_and_words_pack_alike(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        // The device writes payloads and reads reply data by pairs, the host
        // by words: the same bytes either way.
        let mut words = vec![0u64; bytes.len().div_ceil(16) * 2];
        let pairs = pack_pairs(&bytes, |k, p| words[2 * k..2 * k + 2].copy_from_slice(&p));
        prop_assert_eq!(pairs, bytes.len().div_ceil(16));
        let mut by_word = vec![0u64; words.len()];
        let n = pack_bytes(&bytes, |i, w| by_word[i] = w);
        prop_assert_eq!(&words[..n], &by_word[..n]);
        let mut out = vec![0u8; bytes.len()];
        unpack_pairs(&mut out, |k| [words[2 * k], words[2 * k + 1]]);
        prop_assert_eq!(&out, &bytes);
        let mut out = vec![0u8; bytes.len()];
        unpack_bytes(&mut out, |i| words[i]);
        prop_assert_eq!(&out, &bytes);
    }
}

#[test]
fn reply_data_words_tile_the_area() {
    // Every (slot, word) has its own word of the reply data area, and the
    // lanes of a warp reading pair k read contiguous words.
    let g = Geometry { buff_size: 8192, slot_count: 96, reply_data_size: 48 };
    let per = (g.reply_data_size / 8) as usize;
    let mut seen = vec![false; g.reply_data_words()];
    for slot in 0..g.slot_count as usize {
        for i in 0..per {
            let at = g.reply_data_word(slot, i);
            assert!(!std::mem::replace(&mut seen[at], true), "slot {slot} word {i} shares word {at}");
        }
    }
    assert!(seen.iter().all(|&s| s));
    for k in 0..per / 2 {
        let first = g.reply_data_word(32, 2 * k);
        for lane in 0..32 {
            assert_eq!(g.reply_data_word(32 + lane, 2 * k), first + 2 * lane);
        }
    }
}
