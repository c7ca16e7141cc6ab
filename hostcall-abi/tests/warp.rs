//! The client's warp path on CPU threads: eight threads act as the lanes of
//! one warp (a `Platform` whose match, ballot, shuffle and sync are made of
//! a barrier and shared words), so their calls share one record, as on the
//! GPU. Each lane sends its own payload size, some lanes declare a region,
//! the smallest ring wraps many times, and the host (this test's main
//! thread, with the real consumer) checks every lane's region and payload
//! and echoes the payload back, which each lane checks.

mod common;

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Barrier, OnceLock};

use hostcall_abi::sync::Platform;
use hostcall_abi::{post_reply, Call, Consumer, Geometry, Reply};

/// The warp's lanes: not all of them, and not contiguous.
const MASK: u32 = 0b1011_0110_1001_1001;
const CALLS: u64 = if cfg!(miri) { 3 } else { 300 };

struct Warp {
    barrier: Barrier,
    vals: [AtomicU64; 32],
}

static WARP: OnceLock<Warp> = OnceLock::new();

thread_local! {
    static LANE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn warp() -> &'static Warp {
    WARP.get_or_init(|| Warp {
        barrier: Barrier::new(MASK.count_ones() as usize),
        vals: std::array::from_fn(|_| AtomicU64::new(0)),
    })
}

/// Every lane of `MASK` puts in `v`; each gets every lane's value.
fn exchange(v: u64) -> [u64; 32] {
    let w = warp();
    w.vals[SimWarp::lane() as usize].store(v, SeqCst);
    w.barrier.wait();
    let all = std::array::from_fn(|i| w.vals[i].load(SeqCst));
    w.barrier.wait();
    all
}

struct SimWarp;

impl Platform for SimWarp {
    fn backoff(_: u32) {
        std::thread::yield_now();
    }
    fn slot() -> u32 {
        Self::lane()
    }
    fn lane() -> u32 {
        LANE.with(|l| l.get())
    }
    fn active_lanes() -> u32 {
        MASK
    }
    fn match_lanes(mask: u32, key: u32) -> u32 {
        let all = exchange(u64::from(key));
        (0..32).filter(|&l| mask & 1 << l != 0 && all[l] == u64::from(key)).fold(0, |m, l| m | 1 << l)
    }
    fn shuffle(_mask: u32, value: u64, src: u32) -> u64 {
        exchange(value)[src as usize]
    }
    fn ballot(mask: u32, pred: bool) -> u32 {
        let all = exchange(u64::from(pred));
        (0..32).filter(|&l| mask & 1 << l != 0 && all[l] != 0).fold(0, |m, l| m | 1 << l)
    }
    fn sync_lanes(_mask: u32) {
        warp().barrier.wait();
    }
}

/// Call `i` of lane `lane`: its payload length (0 to 500 bytes, differing
/// between lanes) and whether it declares a region.
fn shape(lane: u32, i: u64) -> (usize, bool) {
    let h = (u64::from(lane) * 0x9e37_79b9 + i * 0x85eb_ca6b) >> 7;
    ((h % 501) as usize, h % 3 == 0)
}

fn payload(lane: u32, i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|k| (k as u64 ^ u64::from(lane) << 5 ^ i) as u8).collect()
}

#[test]
fn the_lanes_of_a_warp_share_records_and_each_gets_its_own_payload_back() {
    let g = Geometry { buff_size: 8192, slot_count: 32, reply_data_size: 512 };
    let mem = Arc::new(common::Mem::new(g));
    let lanes: Vec<u32> = (0..32).filter(|l| MASK & 1 << l != 0).collect();
    let handles: Vec<_> = lanes
        .iter()
        .map(|&lane| {
            let mem = mem.clone();
            std::thread::spawn(move || {
                LANE.with(|l| l.set(lane));
                let q = mem.queue();
                let mut back = vec![0u8; 512];
                for i in 0..CALLS {
                    let (len, region) = shape(lane, i);
                    let data = payload(lane, i, len);
                    let mut call = Call::new(7, [u64::from(lane), i, 0]).payload(&data);
                    if region {
                        call = call.device_region(0x1000 * u64::from(lane + 1), i + 1);
                    }
                    let c = q.call::<SimWarp>(&call, &mut back).expect("a call");
                    assert_eq!((c.value, c.errno, c.data_len), (u64::from(lane) ^ i, 0, len), "lane {lane} call {i}");
                    assert_eq!(&back[..len], &data[..], "lane {lane} call {i}: its own payload");
                }
            })
        })
        .collect();
    let (ring, ctrl) = (&mem.ring, &mem.ctrl);
    let mut c = Consumer::new(g);
    let (mut calls, mut records, mut shared) = (0u64, 0u64, 0u64);
    let mut buf = vec![0u8; 4096];
    while calls < CALLS * lanes.len() as u64 {
        let Some(rec) = c.poll(ring).expect("a well-formed record") else {
            std::thread::yield_now();
            continue;
        };
        records += 1;
        shared += u64::from(rec.calls().len() > 1);
        let mut replies = Vec::new();
        for call in rec.calls() {
            let (lane, i) = (call.args[0] as u32, call.args[1]);
            assert_eq!(call.lane, lane, "lane {lane}'s call sits at its own lane");
            let (len, region) = shape(lane, i);
            assert_eq!(call.payload_len as usize, len);
            let want = if region { (0x1000 * u64::from(lane + 1), i + 1) } else { (0, 0) };
            assert_eq!((call.dev_addr, call.dev_len), want, "lane {lane} call {i}: its region");
            c.read_payload(ring, call, &mut buf[..len]);
            assert_eq!(&buf[..len], &payload(lane, i, len)[..], "lane {lane} call {i}: its payload as sent");
            replies.push((*call, buf[..len].to_vec()));
        }
        c.consume(ring, &rec);
        c.release(ctrl);
        for (call, data) in replies {
            let r = Reply { value: call.args[0] ^ call.args[1], errno: 0, data_len: 0 };
            post_reply(&g, &mem.slots, &mem.reply_data, call.slot.unwrap(), call.seq, r, &data).unwrap();
            calls += 1;
        }
    }
    for h in handles {
        h.join().expect("every lane got its own reply");
    }
    assert_eq!(calls, CALLS * lanes.len() as u64);
    assert!(shared * 2 > records, "most records carry several lanes: {shared} of {records}");
}
