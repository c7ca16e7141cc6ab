//! Buck-only glue: `//hostcall-demo:culinux_ptx_rs_lib`, the culinux PTX and
//! cubin that Buck built and their one SHA-256, as a Rust library.

/// The demo kernel's PTX.
pub const PTX: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/culinux.ptx"));

/// Its cubin; empty when the build found no ptxas.
pub const CUBIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/culinux.cubin"));

/// `hostcall_image::bundle_sha256` of [`PTX`] and [`CUBIN`].
pub const SHA256: &str = include_str!(concat!(env!("OUT_DIR"), "/culinux.sha256"));
