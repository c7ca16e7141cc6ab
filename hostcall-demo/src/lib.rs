//! The demo's kernel image (`culinux`), for `hostcalls_bin` and for other
//! tools that load it (`hostcall-bench` times its first load).

pub mod ptx;
