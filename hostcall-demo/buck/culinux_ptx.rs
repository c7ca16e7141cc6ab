//! Buck-only glue: `//hostcall-demo:culinux_ptx_rs_lib`, the culinux PTX that
//! Buck built and its SHA-256, as a Rust library.

/// The demo kernel's PTX.
pub const PTX: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/culinux.ptx"));

/// Hex SHA-256 of [`PTX`].
pub const PTX_SHA256: &str = include_str!(concat!(env!("OUT_DIR"), "/culinux.ptx.sha256"));
