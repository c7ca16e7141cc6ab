//! The kernel image embedded at build time: the PTX, the cubin built from
//! it (when the build found a ptxas), and the one SHA-256 of both as the
//! build computed it (`hostcall_image::bundle_sha256`).
//!
//! `build.rs` runs the PTX pipeline on `culinux/` (or copies the file named by
//! `HOSTCALL_DEMO_PTX`) into `OUT_DIR`; the binary checks the hash again
//! before loading, so a corrupted or swapped image is refused, not run.

/// The demo kernel's PTX.
pub const PTX: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/culinux.ptx"));

/// Its cubin (`ptxas -c`, relocatable); empty when the build had no ptxas.
const CUBIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/culinux.cubin"));

/// Hex SHA-256 of [`PTX`] and the cubin together, computed by `build.rs`.
pub const SHA256: &str = include_str!(concat!(env!("OUT_DIR"), "/culinux.sha256"));

/// The embedded cubin, if the build made one.
pub fn cubin() -> Option<&'static [u8]> {
    (!CUBIN.is_empty()).then_some(CUBIN)
}

/// Check `ptx` and `cubin` against the expected hex digest of both.
pub fn verify(ptx: &[u8], cubin: Option<&[u8]>, expected: &str) -> Result<(), String> {
    let got = hostcall_image::bundle_sha256(ptx, cubin);
    if got == expected.trim() {
        Ok(())
    } else {
        Err(format!("kernel image hash mismatch: expected {}, got {got}", expected.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_image_matches_its_hash() {
        verify(PTX, cubin(), SHA256).unwrap();
    }

    #[test]
    fn a_changed_byte_is_refused() {
        let mut bytes = PTX.to_vec();
        bytes[0] ^= 1;
        assert!(verify(&bytes, cubin(), SHA256).is_err());
        if let Some(cubin) = cubin() {
            let mut bytes = cubin.to_vec();
            *bytes.last_mut().unwrap() ^= 1;
            assert!(verify(PTX, Some(&bytes), SHA256).is_err());
            assert!(verify(PTX, None, SHA256).is_err(), "a dropped cubin is refused too");
        }
    }
}
