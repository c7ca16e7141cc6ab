//! `json_kernel`: `serde_json`, unchanged from crates.io, on the GPU. Every
//! thread builds a document naming itself, serializes it, parses the text
//! back and checks that it round-trips; thread 0 prints its document, and
//! the last thread to finish prints how many did. `.ci/gpu` compares the
//! output with a golden copy.
#![feature(abi_ptx, stdarch_nvptx)]

use std::sync::atomic::{AtomicU32, Ordering::AcqRel, Ordering::Acquire};

use serde_json::{json, Value};

fn global_id() -> (u32, u32) {
    use core::arch::nvptx::{_block_dim_x, _block_idx_x, _grid_dim_x, _thread_idx_x};
    // SAFETY: reading special registers has no preconditions on nvptx.
    let (tid, bid, bdim, gdim) = unsafe { (_thread_idx_x(), _block_idx_x(), _block_dim_x(), _grid_dim_x()) };
    (bid * bdim + tid, gdim * bdim)
}

#[no_mangle]
pub extern "ptx-kernel" fn json_main() {
    static ROUND_TRIPPED: AtomicU32 = AtomicU32::new(0);
    static FINISHED: AtomicU32 = AtomicU32::new(0);
    let (id, threads) = global_id();
    let doc = json!({
        "thread": id,
        "name": format!("gpu-{id}"),
        "squares": (0..4u64).map(|i| i * i + u64::from(id)).collect::<Vec<_>>(),
        "nested": { "even": id % 2 == 0, "ratio": f64::from(id) / 4.0 },
    });
    let text = serde_json::to_string(&doc).unwrap_or_default();
    match serde_json::from_str::<Value>(&text) {
        Ok(back) if back == doc && back["squares"][3] == 9 + u64::from(id) => {
            ROUND_TRIPPED.fetch_add(1, AcqRel);
        }
        other => eprintln!("json_kernel: thread {id}: {text} came back as {other:?}"),
    }
    if id == 0 {
        println!("json: {text}");
    }
    if FINISHED.fetch_add(1, AcqRel) + 1 == threads {
        println!("json: {} of {threads} threads round-tripped", ROUND_TRIPPED.load(Acquire));
    }
}
