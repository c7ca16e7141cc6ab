//! Kernels that fail on purpose, each after thread 0 printed a line that
//! must still reach the host (every thread faults only after that line). `.ci/gpu` runs each and checks the exit code
//! and the one line the launcher prints about the fault.
#![feature(abi_ptx, stdarch_nvptx)]

use std::sync::atomic::{AtomicBool, Ordering};

fn gid() -> u32 {
    use core::arch::nvptx::{_block_dim_x, _block_idx_x, _thread_idx_x};
    // SAFETY: reads of special registers.
    unsafe { (_block_idx_x() * _block_dim_x() + _thread_idx_x()) as u32 }
}

/// Set once thread 0 has printed: the others fault only after it, so that
/// the line is output produced before the fault (a thread still formatting
/// when another faults never printed anything).
static PRINTED: AtomicBool = AtomicBool::new(false);

fn say(what: &str) {
    if gid() == 0 {
        println!("before the {what}");
        PRINTED.store(true, Ordering::Release);
    }
    while !PRINTED.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
}

/// Every thread writes through a pointer into nothing the kernel owns.
#[no_mangle]
pub extern "ptx-kernel" fn fault_wild_write() {
    say("wild write");
    let wild = core::hint::black_box(0x10usize) as *mut u64;
    // SAFETY: not safe at all: the point is the fault it causes.
    unsafe { wild.write_volatile(u64::from(gid())) };
}

/// Every thread loads a `u64` from an address that is not 8-byte aligned.
#[no_mangle]
pub extern "ptx-kernel" fn fault_misaligned() {
    static WORDS: [u64; 2] = [1, 2];
    say("misaligned load");
    let odd = core::hint::black_box(WORDS.as_ptr() as usize + 1) as *const u64;
    // SAFETY: not safe at all: the point is the fault it causes.
    let v = unsafe { odd.read_volatile() };
    core::hint::black_box(v);
}

/// Every thread executes `trap`.
#[no_mangle]
pub extern "ptx-kernel" fn fault_trap() {
    say("trap");
    // SAFETY: `trap` ends the kernel, which is what this entry is for.
    unsafe { core::arch::nvptx::trap() }
}

/// Thread 0 recurses with a large frame until it runs off its stack.
#[no_mangle]
pub extern "ptx-kernel" fn fault_stack_overflow() {
    say("stack overflow");
    if gid() == 0 {
        println!("{}", deep(core::hint::black_box(1 << 20)));
    }
}

#[inline(never)]
fn deep(n: u32) -> u64 {
    let mut frame = [0u64; 512];
    frame[(n % 512) as usize] = u64::from(n);
    let frame = core::hint::black_box(frame);
    if n == 0 {
        return frame[0];
    }
    deep(n - 1).wrapping_add(frame[(n % 511) as usize])
}
