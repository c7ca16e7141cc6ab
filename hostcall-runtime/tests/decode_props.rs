//! Decoders on random bus data: errors, never panics or out-of-bounds reads.

use std::sync::atomic::AtomicU64;

use hostcall_runtime::hostcall_abi::op::*;
use hostcall_runtime::hostcall_abi::{Consumer, Geometry, Header, Reply, LINE_WORDS};
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
    fn header_and_reply_round_trip(w in prop::array::uniform8(any::<u64>())) {
        prop_assert_eq!(Header::from_words(w).to_words(), w);
        prop_assert_eq!(Reply::from_words(w).to_words(), w);
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
        let g = Geometry { buff_size: 4096, slot_count: 64, reply_data_size: 64 };
        let ring: Vec<AtomicU64> = words.iter().map(|&w| AtomicU64::new(w)).collect();
        if head_tag {
            // Make line 0 look published so the header checks run.
            ring[0].store(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut c = Consumer::new(g);
        for _ in 0..4 {
            match c.poll(&ring) {
                Ok(Some(rec)) => {
                    prop_assert!(rec.header.payload_len as usize <= hostcall_runtime::hostcall_abi::limits::MAX_INLINE);
                    prop_assert!(rec.slot().is_none_or(|s| u64::from(s) < g.slot_count));
                    let mut out = vec![0u8; rec.header.payload_len as usize];
                    c.read_payload(&ring, &rec, &mut out);
                    c.consume(&ring, &rec);
                }
                Ok(None) | Err(_) => break,
            }
        }
        // A ring of the wrong size is an error, not a panic.
        prop_assert!(c.poll(&ring[..ring.len() - 1]).is_err());
    }
}
