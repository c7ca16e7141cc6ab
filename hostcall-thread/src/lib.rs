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
//!
//! A run on several GPUs (`hostcall run --devices all`) launches the kernel
//! on each: [`device`] and [`device_count`] say which one of how many, from
//! the `HOSTCALL_DEVICE` and `HOSTCALL_DEVICES` variables the runtime sets
//! for each (device 0 of 1 when unset, as on the CPU).
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

/// This kernel's device in the run, `0..device_count()`: the
/// `HOSTCALL_DEVICE` variable (its index in the order the run's devices were
/// given); 0 when unset or not a number.
///
/// Read once per loaded module (a device's, on the GPU; the process's, on
/// the CPU): the first call asks (`getenv`, a hostcall on the GPU), every
/// later call of any thread gets the same answer without one.
pub fn device() -> u64 {
    devices().0
}

/// Devices in the run: the `HOSTCALL_DEVICES` variable; 1 when unset or not
/// a number. Read once, as [`device`].
pub fn device_count() -> u64 {
    devices().1
}

extern "C" {
    /// C's `getenv`: on the GPU libc-hostcall's (which the pipeline links
    /// into every kernel: the device's overlay, else a hostcall to the
    /// environment the runtime gave this device), on the CPU the C library's.
    fn getenv(name: *const core::ffi::c_char) -> *mut core::ffi::c_char;
}

/// `(device, count)`, read once into [`DEVICES`].
fn devices() -> (u64, u64) {
    use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
    loop {
        match DEVICES.load(Acquire) {
            UNREAD => {
                if DEVICES.compare_exchange(UNREAD, READING, Relaxed, Relaxed).is_ok() {
                    let (device, count) = parse(var(c"HOSTCALL_DEVICE"), var(c"HOSTCALL_DEVICES"));
                    DEVICES.store(KNOWN | device << 32 | count, Release);
                    return (device, count);
                }
            }
            // Another thread asks the host: wait for its answer rather than
            // ask again (on the GPU each `getenv` of the host's environment
            // costs a hostcall and a heap block that is never freed).
            READING => core::hint::spin_loop(),
            known => return ((known & !KNOWN) >> 32, known & u64::from(u32::MAX)),
        }
    }
}

/// [`devices`]' answer: [`UNREAD`], [`READING`], or [`KNOWN`] with the device
/// in bits 32..63 and the count in bits 0..32.
static DEVICES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(UNREAD);
const UNREAD: u64 = 0;
const READING: u64 = 1;
const KNOWN: u64 = 1 << 63;

/// The bytes of environment variable `name`, if set.
fn var(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is a C string; `getenv` returns null or a C string that
    // stays valid: on the GPU for the rest of the launch, on the CPU until
    // the environment changes, and it is read here at once.
    unsafe {
        let value = getenv(name.as_ptr());
        (!value.is_null()).then(|| core::ffi::CStr::from_ptr(value).to_bytes())
    }
}

/// `(device, count)` from the two variables' values: 0 and 1 for one that
/// is unset or not a number below 2^31.
fn parse(device: Option<&[u8]>, count: Option<&[u8]>) -> (u64, u64) {
    let number = |value: Option<&[u8]>| {
        let n = core::str::from_utf8(value?).ok()?.trim().parse::<u32>().ok()?;
        (n < 1 << 31).then_some(u64::from(n))
    };
    (number(device).unwrap_or(0), number(count).filter(|&n| n > 0).unwrap_or(1))
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
    extern crate std;

    #[test]
    fn on_the_cpu_it_is_thread_0_of_1() {
        assert_eq!((super::index(), super::count(), super::block()), (0, 1, (0, 0)));
    }

    #[test]
    fn the_device_and_count_come_from_the_environment_else_0_of_1() {
        let var = |name| std::env::var(name).ok();
        let (device, count) = (var("HOSTCALL_DEVICE"), var("HOSTCALL_DEVICES"));
        let expected = super::parse(device.as_deref().map(str::as_bytes), count.as_deref().map(str::as_bytes));
        assert_eq!((super::device(), super::device_count()), expected);
        assert_eq!((super::device(), super::device_count()), expected, "the same when read again");
    }

    #[test]
    fn unset_or_not_a_number_is_device_0_of_1() {
        use super::parse;
        assert_eq!(parse(Some(b"2"), Some(b"4")), (2, 4));
        assert_eq!(parse(Some(b" 3\n"), Some(b"8")), (3, 8));
        assert_eq!(parse(None, None), (0, 1));
        assert_eq!(parse(Some(b"x"), Some(b"")), (0, 1));
        assert_eq!(parse(Some(b"-1"), Some(b"0")), (0, 1));
        assert_eq!(parse(Some(b"2147483648"), Some(b"4294967296")), (0, 1));
        assert_eq!(parse(Some(b"2147483647"), Some(b"2147483647")), ((1 << 31) - 1, (1 << 31) - 1));
    }
}
