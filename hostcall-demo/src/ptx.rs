//! The PTX embedded at build time, and its SHA-256 as the build computed it.
//!
//! `build.rs` runs the PTX pipeline on `culinux/` (or copies the file named by
//! `HOSTCALL_DEMO_PTX`) into `OUT_DIR`; the binary checks the hash again
//! before loading, so a corrupted or swapped image is refused, not run.

use sha2::{Digest, Sha256};

/// The demo kernel's PTX.
pub const PTX: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/culinux.ptx"));

/// Hex SHA-256 of [`PTX`], computed by `build.rs`.
pub const PTX_SHA256: &str = include_str!(concat!(env!("OUT_DIR"), "/culinux.ptx.sha256"));

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Check `bytes` against the expected hex digest.
pub fn verify(bytes: &[u8], expected: &str) -> Result<(), String> {
    let got = sha256_hex(bytes);
    if got == expected.trim() {
        Ok(())
    } else {
        Err(format!("PTX hash mismatch: expected {}, got {got}", expected.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_ptx_matches_its_hash() {
        verify(PTX, PTX_SHA256).unwrap();
    }

    #[test]
    fn a_changed_byte_is_refused() {
        let mut bytes = PTX.to_vec();
        bytes[0] ^= 1;
        assert!(verify(&bytes, PTX_SHA256).is_err());
    }
}
