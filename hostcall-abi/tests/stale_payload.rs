//! Regression: payload lines left in the ring from the previous lap must
//! never pass for a header and lane line when the consumer comes round to
//! them again (payload words are arbitrary data, and a kernel may print
//! anything).

mod common;

use hostcall_abi::sync::Platform;
use hostcall_abi::{lane_word, record_flag, Call, Consumer, Geometry, Header, Lane, LINE_WORDS};

struct Spin;
impl Platform for Spin {
    fn backoff(_: u32) {
        panic!("single-threaded test must never wait");
    }
    fn slot() -> u32 {
        0
    }
}

#[test]
fn stale_payload_lines_are_not_a_record() {
    let g = Geometry { buff_size: 8192, slot_count: 32, reply_data_size: 0 };
    let cap = g.ring_lines();
    let mem = common::Mem::new(g);
    let (q, ring, ctrl) = (mem.queue(), &mem.ring, &mem.ctrl);
    let mut c = Consumer::new(g);
    // Record 0: header (line 0), lane line (1), a two-line payload (2, 3)
    // that is exactly the header and lane line a posted record at ticket
    // `cap + 2` would carry next lap.
    let flag = record_flag(cap + 2);
    let fake_header = Header { op: 7, lanes: 1, base_slot: 0, lines: 2, flags: Header::POSTED }.to_words(flag);
    let lane = Lane::default().to_words(flag);
    let fake_lane: Vec<u64> =
        (0..LINE_WORDS).map(|i| lane[(0..LINE_WORDS).find(|&w| lane_word(1, 0, w) == i).unwrap()]).collect();
    let evil: Vec<u8> = fake_header.iter().chain(&fake_lane).flat_map(|w| w.to_le_bytes()).collect();
    q.post::<Spin>(&Call::new(7, [0; 3]).payload(&evil)).unwrap();
    // Fill the rest of this lap and lines 0-1 of the next with two-line
    // records. The host keeps up, so the writer never waits.
    let serve = |c: &mut Consumer| {
        while let Some(rec) = c.poll(ring).unwrap() {
            assert!(rec.header.posted());
            c.consume(ring, &rec);
            c.release(ctrl);
        }
    };
    serve(&mut c);
    assert_eq!(c.head(), 4);
    while c.head() < cap + 2 {
        q.post::<Spin>(&Call::new(7, [0; 3])).unwrap();
        serve(&mut c);
    }
    // The head is at ticket cap + 2 (line 2), which nobody has published.
    assert_eq!(c.head(), cap + 2);
    assert_eq!(c.poll(ring).unwrap(), None, "stale payload lines were taken for a published record");
}
