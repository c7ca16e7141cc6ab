//! `struct stat` and `struct statx` as the device libc expects them: the
//! Linux x86_64 layouts, written field by field at fixed offsets whatever
//! the host's own layout is.

/// Bytes of x86_64 `struct stat`.
pub const STAT_SIZE: usize = 144;
/// Bytes of `struct statx`.
pub const STATX_SIZE: usize = 256;

fn put<const N: usize>(buf: &mut [u8], at: usize, bytes: [u8; N]) {
    buf[at..at + N].copy_from_slice(&bytes);
}

/// Encode a host `stat` as x86_64 `struct stat`.
#[allow(clippy::unnecessary_cast)] // field types differ between hosts
pub fn encode_stat(st: &libc::stat) -> [u8; STAT_SIZE] {
    let mut b = [0u8; STAT_SIZE];
    put(&mut b, 0, (st.st_dev as u64).to_le_bytes());
    put(&mut b, 8, (st.st_ino as u64).to_le_bytes());
    put(&mut b, 16, (st.st_nlink as u64).to_le_bytes());
    put(&mut b, 24, (st.st_mode as u32).to_le_bytes());
    put(&mut b, 28, (st.st_uid as u32).to_le_bytes());
    put(&mut b, 32, (st.st_gid as u32).to_le_bytes());
    // 36: __pad0
    put(&mut b, 40, (st.st_rdev as u64).to_le_bytes());
    put(&mut b, 48, (st.st_size as i64).to_le_bytes());
    put(&mut b, 56, (st.st_blksize as i64).to_le_bytes());
    put(&mut b, 64, (st.st_blocks as i64).to_le_bytes());
    put(&mut b, 72, (st.st_atime as i64).to_le_bytes());
    put(&mut b, 80, (st.st_atime_nsec as i64).to_le_bytes());
    put(&mut b, 88, (st.st_mtime as i64).to_le_bytes());
    put(&mut b, 96, (st.st_mtime_nsec as i64).to_le_bytes());
    put(&mut b, 104, (st.st_ctime as i64).to_le_bytes());
    put(&mut b, 112, (st.st_ctime_nsec as i64).to_le_bytes());
    // 120..144: __glibc_reserved[3]
    b
}

fn put_ts(b: &mut [u8], at: usize, ts: &libc::statx_timestamp) {
    put(b, at, ts.tv_sec.to_le_bytes());
    put(b, at + 8, ts.tv_nsec.to_le_bytes());
}

/// Encode a host `statx` as `struct statx`.
pub fn encode_statx(st: &libc::statx) -> [u8; STATX_SIZE] {
    let mut b = [0u8; STATX_SIZE];
    put(&mut b, 0, st.stx_mask.to_le_bytes());
    put(&mut b, 4, st.stx_blksize.to_le_bytes());
    put(&mut b, 8, st.stx_attributes.to_le_bytes());
    put(&mut b, 16, st.stx_nlink.to_le_bytes());
    put(&mut b, 20, st.stx_uid.to_le_bytes());
    put(&mut b, 24, st.stx_gid.to_le_bytes());
    put(&mut b, 28, st.stx_mode.to_le_bytes());
    put(&mut b, 32, st.stx_ino.to_le_bytes());
    put(&mut b, 40, st.stx_size.to_le_bytes());
    put(&mut b, 48, st.stx_blocks.to_le_bytes());
    put(&mut b, 56, st.stx_attributes_mask.to_le_bytes());
    put_ts(&mut b, 64, &st.stx_atime);
    put_ts(&mut b, 80, &st.stx_btime);
    put_ts(&mut b, 96, &st.stx_ctime);
    put_ts(&mut b, 112, &st.stx_mtime);
    put(&mut b, 128, st.stx_rdev_major.to_le_bytes());
    put(&mut b, 132, st.stx_rdev_minor.to_le_bytes());
    put(&mut b, 136, st.stx_dev_major.to_le_bytes());
    put(&mut b, 140, st.stx_dev_minor.to_le_bytes());
    put(&mut b, 144, st.stx_mnt_id.to_le_bytes());
    put(&mut b, 152, st.stx_dio_mem_align.to_le_bytes());
    put(&mut b, 156, st.stx_dio_offset_align.to_le_bytes());
    b
}

/// Field readers for tests and tools: decode what [`encode_stat`] wrote.
pub mod decode {
    fn u64_at(b: &[u8], at: usize) -> Option<u64> {
        Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
    }
    fn u32_at(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
    }
    /// `st_size` of an x86_64 `struct stat`.
    pub fn stat_size(b: &[u8]) -> Option<i64> {
        u64_at(b, 48).map(|v| v as i64)
    }
    /// `st_mode` of an x86_64 `struct stat`.
    pub fn stat_mode(b: &[u8]) -> Option<u32> {
        u32_at(b, 24)
    }
    /// `st_ino` of an x86_64 `struct stat`.
    pub fn stat_ino(b: &[u8]) -> Option<u64> {
        u64_at(b, 8)
    }
    /// `stx_size` of a `struct statx`.
    pub fn statx_size(b: &[u8]) -> Option<u64> {
        u64_at(b, 40)
    }
    /// `stx_mode` of a `struct statx`.
    pub fn statx_mode(b: &[u8]) -> Option<u16> {
        Some(u16::from_le_bytes(b.get(28..30)?.try_into().ok()?))
    }
    /// `stx_ino` of a `struct statx`.
    pub fn statx_ino(b: &[u8]) -> Option<u64> {
        u64_at(b, 32)
    }
}

#[cfg(all(test, target_arch = "x86_64", target_os = "linux"))]
mod tests {
    use super::*;

    /// On an x86_64 host the encoding must be the host's own bytes.
    #[test]
    fn stat_encoding_matches_native_layout() {
        assert_eq!(std::mem::size_of::<libc::stat>(), STAT_SIZE);
        assert_eq!(std::mem::size_of::<libc::statx>(), STATX_SIZE);
        // SAFETY: plain integers; zero is valid.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `c"."` is NUL-terminated, `st` is writable.
        assert_eq!(unsafe { libc::stat(c".".as_ptr(), &mut st) }, 0);
        // SAFETY: `st` is a fully initialised plain-old-data struct.
        let native: [u8; STAT_SIZE] = unsafe { std::mem::transmute(st) };
        assert_eq!(encode_stat(&st), native);

        // SAFETY: as above.
        let mut sx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: valid NUL-terminated path, writable buffer.
        let r = unsafe { libc::statx(libc::AT_FDCWD, c".".as_ptr(), 0, libc::STATX_ALL, &mut sx) };
        assert_eq!(r, 0);
        // SAFETY: plain-old-data, fully initialised (zeroed, then filled).
        let native: [u8; STATX_SIZE] = unsafe { std::mem::transmute(sx) };
        // Past byte 160 newer kernels fill fields the device libc does not know.
        assert_eq!(encode_statx(&sx)[..160], native[..160]);
    }
}
