//! x86_64 Linux constants and struct layouts, as std's patched libc crate
//! sees them on nvptx64. Only what this library reads or writes.

#![allow(dead_code)]

use core::ffi::c_int;

pub const AT_FDCWD: c_int = -100;
pub const AT_SYMLINK_NOFOLLOW: c_int = 0x100;
pub const AT_REMOVEDIR: c_int = 0x200;
pub const AT_EMPTY_PATH: c_int = 0x1000;

pub const O_CREAT: c_int = 0o100;
pub const O_TMPFILE: c_int = 0o20200000;

pub const F_GETFD: c_int = 1;
pub const F_SETFD: c_int = 2;
pub const FD_CLOEXEC: c_int = 1;

pub const CLOCK_REALTIME: c_int = 0;
pub const CLOCK_MONOTONIC: c_int = 1;
pub const CLOCK_MONOTONIC_RAW: c_int = 4;
pub const CLOCK_REALTIME_COARSE: c_int = 5;
pub const CLOCK_MONOTONIC_COARSE: c_int = 6;
pub const CLOCK_BOOTTIME: c_int = 7;
pub const TIMER_ABSTIME: c_int = 1;

pub const SYS_FUTEX: i64 = 202;
pub const SYS_GETTID: i64 = 186;
pub const SYS_GETRANDOM: i64 = 318;
pub const SYS_STATX: i64 = 332;

pub const FUTEX_WAIT: c_int = 0;
pub const FUTEX_WAKE: c_int = 1;
pub const FUTEX_WAIT_BITSET: c_int = 9;
pub const FUTEX_WAKE_BITSET: c_int = 10;
pub const FUTEX_PRIVATE_FLAG: c_int = 128;
pub const FUTEX_CLOCK_REALTIME: c_int = 256;

pub const STATX_BASIC_STATS: u32 = 0x7ff;

/// `struct timespec`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timespec {
    pub tv_sec: i64,
    pub tv_nsec: i64,
}

impl Timespec {
    pub const fn from_ns(ns: u64) -> Self {
        Timespec { tv_sec: (ns / 1_000_000_000) as i64, tv_nsec: (ns % 1_000_000_000) as i64 }
    }
    /// Nanoseconds, if the value is valid and not negative; past `u64::MAX`
    /// ns (584 years) it saturates, as a wait that long never ends anyway
    /// (`thread::sleep(Duration::MAX)` must sleep, not fail).
    pub fn to_ns(self) -> Option<u64> {
        if !(0..1_000_000_000).contains(&self.tv_nsec) || self.tv_sec < 0 {
            return None;
        }
        Some((self.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(self.tv_nsec as u64))
    }
}

/// `struct stat` (x86_64): 144 bytes.
pub const STAT_SIZE: usize = 144;
/// `struct statx`: 256 bytes.
pub const STATX_SIZE: usize = 256;

fn le_u16(b: &[u8; STATX_SIZE], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}
fn le_u32(b: &[u8; STATX_SIZE], at: usize) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u64::from(u32::from_le_bytes(w))
}
fn le_u64(b: &[u8; STATX_SIZE], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// glibc's `makedev`.
fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xffff_f000) << 32) | ((major & 0xfff) << 8) | ((minor & 0xffff_ff00) << 12) | (minor & 0xff)
}

/// The `struct stat` that `stat(2)` would give, from a `struct statx` (as
/// glibc does when it implements `stat` over `statx`). Offsets are the
/// kernel's `struct statx` and x86_64's `struct stat`; every index is a
/// constant inside the fixed-size arrays.
pub fn stat_from_statx(x: &[u8; STATX_SIZE]) -> [u8; STAT_SIZE] {
    let mut s = [0u8; STAT_SIZE];
    let mut put = |at: usize, v: &[u8]| s[at..at + v.len()].copy_from_slice(v);
    put(0, &makedev(le_u32(x, 136), le_u32(x, 140)).to_le_bytes()); // st_dev
    put(8, &le_u64(x, 32).to_le_bytes()); // st_ino
    put(16, &le_u32(x, 16).to_le_bytes()); // st_nlink (u64)
    put(24, &(le_u16(x, 28) as u32).to_le_bytes()); // st_mode
    put(28, &(le_u32(x, 20) as u32).to_le_bytes()); // st_uid
    put(32, &(le_u32(x, 24) as u32).to_le_bytes()); // st_gid
    put(40, &makedev(le_u32(x, 128), le_u32(x, 132)).to_le_bytes()); // st_rdev
    put(48, &le_u64(x, 40).to_le_bytes()); // st_size
    put(56, &le_u32(x, 4).to_le_bytes()); // st_blksize (i64)
    put(64, &le_u64(x, 48).to_le_bytes()); // st_blocks
                                           // atime, mtime, ctime: statx_timestamp {i64 sec; u32 nsec; i32 pad}.
    for (stat_at, statx_at) in [(72, 64), (88, 112), (104, 96)] {
        put(stat_at, &le_u64(x, statx_at).to_le_bytes());
        put(stat_at + 8, &le_u32(x, statx_at + 8).to_le_bytes());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statx_converts_to_x86_64_stat() {
        let mut x = [0u8; STATX_SIZE];
        x[28..30].copy_from_slice(&0o100644u16.to_le_bytes());
        x[40..48].copy_from_slice(&1234u64.to_le_bytes());
        x[112..120].copy_from_slice(&99i64.to_le_bytes());
        x[120..124].copy_from_slice(&7u32.to_le_bytes());
        x[136..140].copy_from_slice(&8u32.to_le_bytes());
        x[140..144].copy_from_slice(&1u32.to_le_bytes());
        let s = stat_from_statx(&x);
        assert_eq!(u32::from_le_bytes(s[24..28].try_into().unwrap()), 0o100644);
        assert_eq!(i64::from_le_bytes(s[48..56].try_into().unwrap()), 1234);
        assert_eq!(i64::from_le_bytes(s[88..96].try_into().unwrap()), 99);
        assert_eq!(i64::from_le_bytes(s[96..104].try_into().unwrap()), 7);
        assert_eq!(u64::from_le_bytes(s[0..8].try_into().unwrap()), 0x801);
    }

    #[test]
    fn timespec_round_trips() {
        assert_eq!(Timespec::from_ns(1_500_000_001).to_ns(), Some(1_500_000_001));
        assert_eq!(Timespec { tv_sec: 0, tv_nsec: -1 }.to_ns(), None);
        assert_eq!(Timespec { tv_sec: i64::MAX, tv_nsec: 999_999_999 }.to_ns(), Some(u64::MAX), "saturates");
    }
}
