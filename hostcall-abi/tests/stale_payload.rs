//! Regression: a payload word left in the ring from the previous lap must
//! never pass for the tag the consumer expects when it comes round to that
//! line again (payload words are arbitrary data).

use core::sync::atomic::AtomicU64;

use hostcall_abi::client::NO_SLOT;
use hostcall_abi::sync::Platform;
use hostcall_abi::{Call, Consumer, Geometry, Queue, LINE_WORDS};

struct Spin;
impl Platform for Spin {
    fn backoff(_: u32) {
        panic!("single-threaded test must never wait");
    }
    fn thread_hint() -> u32 {
        0
    }
}

fn words(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

#[test]
fn stale_payload_word_is_not_a_tag() {
    let g = Geometry { buff_size: 4096, slot_count: 64, reply_data_size: 0 };
    let cap = g.ring_lines();
    let (ring, ctrl, slots, data, bits) =
        (words(g.ring_words()), words(LINE_WORDS), words(g.slot_words()), words(0), words(g.bitmap_words()));
    let (top, cache) = (AtomicU64::new(0), AtomicU64::new(0));
    let q = Queue {
        geometry: g,
        ring: &ring,
        top: &top,
        released_cache: &cache,
        ctrl: &ctrl,
        slots: &slots,
        reply_data: &data,
        slot_bits: &bits,
    };
    let mut c = Consumer::new(g);
    // Record 0 has a one-line payload at line 1 whose first word is exactly
    // the tag line 1 will carry next lap (ticket cap + 1).
    let evil = (cap + 2).to_le_bytes();
    q.post::<Spin>(&Call::new(7, [0; 3]).payload(&evil)).unwrap();
    // Fill the rest of this lap and line 0 of the next with one-line records.
    // The host keeps up, so the writer never waits.
    let serve = |c: &mut Consumer| {
        while let Some(rec) = c.poll(&ring).unwrap() {
            assert_eq!(rec.header.slot, NO_SLOT);
            c.consume(&ring, &rec);
            c.release(&ctrl);
        }
    };
    serve(&mut c);
    for _ in 2..=cap {
        q.post::<Spin>(&Call::new(7, [0; 3])).unwrap();
        serve(&mut c);
    }
    // The head is at ticket cap + 1 (line 1), which nobody has published.
    assert_eq!(c.head(), cap + 1);
    assert_eq!(c.poll(&ring).unwrap(), None, "a stale payload word was taken for a published record");
}
