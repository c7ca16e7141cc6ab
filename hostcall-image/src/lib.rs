//! A kernel image as both sides of hostcall read it.
//!
//! The pipeline (`hostcall-build`) writes PTX text and, when it finds a
//! `ptxas`, a cubin (an ELF file of machine code for one GPU architecture);
//! the runtime loads one of them. Both need the same facts about an image:
//! its entry points, the globals it declares (the `__HOSTCALL*` ones are
//! patched before launch), what it leaves undefined, which architecture a
//! cubin is for, and the SHA-256 that names it. They live here, once:
//!
//! * [`ptx`]: reading a PTX module's module-scope declarations;
//! * [`cubin`]: reading a cubin's ELF header and symbol table;
//! * [`split`]: cutting a PTX module into pieces that compile apart;
//! * [`Kind`], [`sha256_hex`], [`bundle_sha256`]: telling the two apart and
//!   naming them.
//!
//! What it does not do: build, load or run anything.

pub mod cubin;
pub mod ptx;
pub mod split;

use sha2::{Digest, Sha256};

pub use cubin::{AlignedBytes, Cubin, CubinError, CubinKind};
pub use ptx::{ptx_summary, PtxSummary};

/// Registers per thread that kernels are built and JIT-compiled with unless
/// told otherwise: an SM has 65,536, so 64 lets every entry point launch
/// 1024-thread blocks. Without a limit, std kernels take 255 and are capped
/// at 256 threads a block.
pub const DEFAULT_MAX_REGISTERS: u32 = 64;

/// What an image's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An ELF file: a cubin from `ptxas` (relocatable with `-c`, or linked).
    Cubin,
    /// Anything else is taken for PTX text (the driver says so if it is not).
    Ptx,
}

/// The first bytes of every ELF file.
pub const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

impl Kind {
    pub fn of(bytes: &[u8]) -> Kind {
        if bytes.starts_with(ELF_MAGIC) {
            Kind::Cubin
        } else {
            Kind::Ptx
        }
    }
}

/// A SHA-256 over length-prefixed fields, so that ("ab", "c") and
/// ("a", "bc") differ: how cache entries are named on both sides.
#[derive(Clone, Default)]
pub struct Fingerprint(Sha256);

impl Fingerprint {
    pub fn new() -> Self {
        Fingerprint(Sha256::new())
    }

    pub fn field(&mut self, data: &[u8]) -> &mut Self {
        self.0.update((data.len() as u64).to_le_bytes());
        self.0.update(data);
        self
    }

    /// Lowercase hex of the digest.
    pub fn hex(&self) -> String {
        hex(&self.0.clone().finalize())
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The one SHA-256 that names a PTX module together with the cubin built
/// from it: SHA-256 over the PTX's length (8 bytes, little-endian), the PTX,
/// then the cubin (none: nothing). A changed byte in either, or bytes moved
/// from one to the other, changes it.
pub fn bundle_sha256(ptx: &[u8], cubin: Option<&[u8]>) -> String {
    let mut hasher = Sha256::new();
    hasher.update((ptx.len() as u64).to_le_bytes());
    hasher.update(ptx);
    hasher.update(cubin.unwrap_or_default());
    hex(&hasher.finalize())
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_abc_is_the_fips_vector() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn fingerprint_fields_are_length_prefixed() {
        let key = |fields: &[&[u8]]| {
            let mut f = Fingerprint::new();
            fields.iter().for_each(|x| {
                f.field(x);
            });
            f.hex()
        };
        assert_ne!(key(&[b"ab", b"c"]), key(&[b"a", b"bc"]));
        // The encoding the build cache has always used: u64 LE length, bytes.
        assert_eq!(key(&[b"abc"]), sha256_hex(b"\x03\0\0\0\0\0\0\0abc"));
    }

    #[test]
    fn bundle_hash_sees_every_byte_and_the_boundary() {
        let base = bundle_sha256(b"ptx", Some(b"elf"));
        assert_ne!(base, bundle_sha256(b"ptx", None));
        assert_ne!(base, bundle_sha256(b"ptxe", Some(b"lf")));
        assert_ne!(base, bundle_sha256(b"pTx", Some(b"elf")));
        assert_eq!(base, bundle_sha256(b"ptx", Some(b"elf")));
    }

    #[test]
    fn elf_bytes_are_cubins_and_the_rest_ptx() {
        assert_eq!(Kind::of(b"\x7fELF\x02\x01"), Kind::Cubin);
        assert_eq!(Kind::of(b"//\n.version 8.0\n"), Kind::Ptx);
        assert_eq!(Kind::of(b""), Kind::Ptx);
    }
}
