//! Which GPU thread is this? `hostcall run` runs a binary's `fn main()` on
//! every thread of the launch (`--grid G --block B`); this is how each copy
//! tells itself apart. Off the GPU (the same program under `cargo run`) it
//! is thread 0 of 1, so code written against it runs on both.
//!
//! ```
//! let (me, all) = (hostcall_thread::index(), hostcall_thread::count());
//! assert!(me < all);
//! ```
//!
//! Indices are global and dense: block-major, then x, y, z within a block
//! (as CUDA's `blockIdx`/`threadIdx` flatten). No hostcall: it reads the
//! GPU's special registers.
#![no_std]
#![cfg_attr(target_arch = "nvptx64", feature(stdarch_nvptx))]

/// This thread's index in the launch, `0..count()`.
pub fn index() -> u64 {
    let ((tx, ty, tz), (bx, by, bz), (cx, cy, cz), (gx, gy, _)) = registers();
    let block = cx + cy * gx + cz * gx * gy;
    block * bx * by * bz + tx + ty * bx + tz * bx * by
}

/// Threads in the launch: grid size times block size.
pub fn count() -> u64 {
    let (_, (bx, by, bz), _, (gx, gy, gz)) = registers();
    bx * by * bz * gx * gy * gz
}

/// This thread's block, `0..blocks()`, and its index within the block.
pub fn block() -> (u64, u64) {
    let ((tx, ty, tz), (bx, by, _), (cx, cy, cz), (gx, gy, _)) = registers();
    (cx + cy * gx + cz * gx * gy, tx + ty * bx + tz * bx * by)
}

type Xyz = (u64, u64, u64);

/// `(threadIdx, blockDim, blockIdx, gridDim)`.
#[cfg(target_arch = "nvptx64")]
fn registers() -> (Xyz, Xyz, Xyz, Xyz) {
    use core::arch::nvptx::*;
    let u = u64::from;
    // SAFETY: reads of special registers: no side effects, no preconditions.
    unsafe {
        (
            (u(_thread_idx_x()), u(_thread_idx_y()), u(_thread_idx_z())),
            (u(_block_dim_x()), u(_block_dim_y()), u(_block_dim_z())),
            (u(_block_idx_x()), u(_block_idx_y()), u(_block_idx_z())),
            (u(_grid_dim_x()), u(_grid_dim_y()), u(_grid_dim_z())),
        )
    }
}

/// Off the GPU: one thread in one block.
#[cfg(not(target_arch = "nvptx64"))]
fn registers() -> (Xyz, Xyz, Xyz, Xyz) {
    ((0, 0, 0), (1, 1, 1), (0, 0, 0), (1, 1, 1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn on_the_cpu_it_is_thread_0_of_1() {
        assert_eq!((super::index(), super::count(), super::block()), (0, 1, (0, 0)));
    }
}
