//! The device libc: every C symbol that std (built for the linux-flavoured
//! nvptx64 spec) links, implemented on the GPU or forwarded to the host as a
//! hostcall, plus the Rust allocator shim. One module per C header:
//!
//! | module | what lives there |
//! |---|---|
//! | [`hostcall`] | the `__HOSTCALL_*` globals, the GPU `Platform`, [`hostcall::call`] |
//! | [`errno`] | per-thread `errno`, the `Result` -> `-1` + `errno` edge |
//! | [`fcntl`], [`unistd`], [`sys_stat`] | files and directories, by hostcall |
//! | [`stdlib`] | `malloc` & co. over [`heap`], `exit`, `abort`; in [`stdlib::env`] `getenv` (device overlay, else the host), `setenv`/`unsetenv` (device overlay), `environ` |
//! | [`hostlist`] | the host's argument and environment lists, fetched once per launch (`__hostcall_argv`, `__hostcall_environ`) |
//! | [`string`] | `strerror_r`, `strlen`, the `mem*` functions |
//! | [`time`] | `clock_gettime` (`%globaltimer`, or the host for REALTIME), `nanosleep` |
//! | [`pthread`] | thread-specific data keyed by global thread id |
//! | [`syscall`] | `syscall(2)`: futex, statx, getrandom |
//! | [`unsupported`] | what the GPU cannot honour: ENOSYS, reported to the host |
//! | `alloc_shim` | `__rust_alloc` & co. (feature `alloc-shim`) |
//!
//! Layouts and constants are x86_64 Linux: std's libc crate is patched to
//! use them for nvptx64, and the host handlers reply with those structs.
//!
//! Nothing here panics: C callers get `-1`/`errno`, Rust callers `Result`.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(target_arch = "nvptx64", feature(asm_experimental_arch, stdarch_nvptx))]
#![feature(c_variadic, linkage, rustc_attrs)]
#![allow(internal_features)]

pub mod arch;
pub mod dlfcn;
pub mod errno;
pub mod fcntl;
pub mod heap;
pub mod hostcall;
pub mod hostlist;
pub mod pthread;
pub mod stdlib;
pub mod string;
pub mod sys_stat;
pub mod syscall;
pub mod time;
pub mod unistd;
pub mod unsupported;

mod cstr;
mod linux;

#[cfg(all(feature = "alloc-shim", not(test)))]
mod alloc_shim;

pub use hostcall::{call, echo, request, unsupported as report_unsupported, HostcallId, Region};
pub use hostcall_abi::{Completed, Errno};
