//! Queue memory, zeroed, for tests that drive the client and the consumer
//! by hand (the host runtime lays out the same views over mapped memory).

use std::sync::atomic::AtomicU64;

use hostcall_abi::{Geometry, Queue, LINE_WORDS};

pub struct Mem {
    pub geometry: Geometry,
    pub ring: Vec<AtomicU64>,
    pub ctrl: Vec<AtomicU64>,
    pub slots: Vec<AtomicU64>,
    pub reply_data: Vec<AtomicU64>,
    pub seq: Vec<AtomicU64>,
    top: AtomicU64,
    released_cache: AtomicU64,
}

fn words(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl Mem {
    pub fn new(g: Geometry) -> Self {
        Mem {
            geometry: g,
            ring: words(g.ring_words()),
            ctrl: words(LINE_WORDS),
            slots: words(g.slot_words()),
            reply_data: words(g.reply_data_words()),
            seq: words(g.seq_words()),
            top: AtomicU64::new(0),
            released_cache: AtomicU64::new(0),
        }
    }

    /// The device's view.
    pub fn queue(&self) -> Queue<'_, AtomicU64> {
        Queue {
            geometry: self.geometry,
            ring: &self.ring,
            top: &self.top,
            released_cache: &self.released_cache,
            ctrl: &self.ctrl,
            slots: &self.slots,
            reply_data: &self.reply_data,
            seq: &self.seq,
        }
    }
}
