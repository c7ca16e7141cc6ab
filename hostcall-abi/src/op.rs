//! The built-in hostcalls: their names (the `<name>` of `__HOSTCALL__<name>`)
//! and how each packs its arguments. Both the device libc and the host
//! handlers use these, so an argument's position is written down once.
//!
//! Conventions: paths and other strings travel as the inline payload, without
//! a NUL; bulk data goes inline when it fits, else by a declared device
//! region; small results (a `struct stat`, a random block, a cwd) come back in
//! the reply data area.

/// Decoding failed: the command's words do not form a valid request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadArgs;

/// A typed request: `NAME` is the hostcall's name, the fields map onto the
/// header's argument words.
pub trait Request: Sized {
    const NAME: &'static str;
    fn to_args(&self) -> [u64; crate::ARG_WORDS];
    fn from_args(args: [u64; crate::ARG_WORDS]) -> Result<Self, BadArgs>;
}

#[doc(hidden)]
pub fn __int(v: u64) -> Result<i32, BadArgs> {
    i32::try_from(v as i64).map_err(|_| BadArgs)
}
#[doc(hidden)]
pub fn __uint(v: u64) -> Result<u32, BadArgs> {
    u32::try_from(v).map_err(|_| BadArgs)
}

/// Declare a typed request: a struct of up to three fields, each carried in
/// one argument word with its coding (`int`: an i32, `uint`: a u32, `word`:
/// 64 bits as they are), and its [`Request`] impl. The built-ins are made
/// with it (`op_table!`); a kernel crate and its host share a user-defined
/// hostcall the same way:
///
/// ```
/// hostcall_abi::request! {
///     /// `a + b`, on the host.
///     Add = "add" { a: u64 => word, b: i32 => int }
/// }
/// use hostcall_abi::op::Request;
/// let args = Add { a: 2, b: -3 }.to_args();
/// assert_eq!(Add::from_args(args), Ok(Add { a: 2, b: -3 }));
/// assert_eq!(Add::NAME, "add");
/// ```
///
/// A fourth field does not fit the header's argument words:
///
/// ```compile_fail
/// hostcall_abi::request! {
///     Four = "four" { a: u64 => word, b: u64 => word, c: u64 => word, d: u64 => word }
/// }
/// ```
///
/// The host registers it with `Registry::register::<Add, _>` and gets an
/// `Add`; the kernel calls it with `libc_hostcall::request(&__HOSTCALL__add,
/// &Add { .. }, ..)` (docs/symbols.md).
#[macro_export]
macro_rules! request {
    ($(#[$m:meta])* $ty:ident = $name:literal { $($field:ident : $fty:ty => $conv:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $ty { $(pub $field: $fty),* }
        const _: () = {
            let fields: usize = 0 $(+ $crate::request!(@one $field))*;
            assert!(fields <= $crate::ARG_WORDS, "a request carries at most ARG_WORDS fields");
        };
        impl $crate::op::Request for $ty {
            const NAME: &'static str = $name;
            #[allow(unused_mut, unused_assignments, unused_variables)]
            fn to_args(&self) -> [u64; $crate::ARG_WORDS] {
                let mut a = [0u64; $crate::ARG_WORDS];
                let mut i = 0;
                $( a[i] = $crate::request!(@enc $conv self.$field); i += 1; )*
                a
            }
            #[allow(unused_mut, unused_assignments, unused_variables)]
            fn from_args(args: [u64; $crate::ARG_WORDS]) -> Result<Self, $crate::op::BadArgs> {
                let mut i = 0;
                $( let $field = $crate::request!(@dec $conv args[i])?; i += 1; )*
                Ok($ty { $($field),* })
            }
        }
    };
    (@one $field:ident) => { 1usize };
    (@enc int $v:expr) => { $v as i64 as u64 };
    (@enc uint $v:expr) => { $v as u64 };
    (@enc word $v:expr) => { $v as u64 };
    (@dec int $v:expr) => { $crate::op::__int($v) };
    (@dec uint $v:expr) => { $crate::op::__uint($v) };
    (@dec word $v:expr) => { Ok::<_, $crate::op::BadArgs>($v as _) };
}

/// The op table: every hostcall of the protocol, once. It hands the table
/// to the macro named `$callback`, and each side generates what it needs
/// from it: this module each op's request type and [`BUILTIN`]
/// (`define_requests`), the device libc each op's `__HOSTCALL__<name>` ID
/// global. Rows are `Type = "name", id_global { field: type => coding }`,
/// the codings `int` (i32 in a word), `uint` (u32), `word` (u64 as is);
/// `test` holds what only tests call.
#[macro_export]
macro_rules! op_table {
    ($callback:ident) => {
        $callback! {
            builtin {
                /// `openat(dirfd, payload=path, flags, mode)` -> fd.
                Open = "open", __HOSTCALL__open { dirfd: i32 => int, flags: i32 => int, mode: u32 => uint }
                /// `read(fd, len)` into the device region when one is declared (at most
                /// `min(len, dev_len)` bytes), else into the reply data area (at most
                /// `min(len, reply_data_size)`) -> bytes read.
                Read = "read", __HOSTCALL__read { fd: i32 => int, len: u64 => word }
                /// `write(fd, payload or device region)` -> bytes written.
                Write = "write", __HOSTCALL__write { fd: i32 => int }
                /// `pread(fd, offset, len)`; data as for [`Read`].
                Pread = "pread", __HOSTCALL__pread { fd: i32 => int, offset: i64 => word, len: u64 => word }
                /// `pwrite(fd, offset)`; data as for [`Write`].
                Pwrite = "pwrite", __HOSTCALL__pwrite { fd: i32 => int, offset: i64 => word }
                /// `close(fd)` -> 0.
                Close = "close", __HOSTCALL__close { fd: i32 => int }
                /// `lseek(fd, offset, whence)` -> new offset.
                Lseek = "lseek", __HOSTCALL__lseek { fd: i32 => int, offset: i64 => word, whence: i32 => int }
                /// `fstat(fd)` -> 0, reply data = x86_64 `struct stat` (144 bytes).
                Fstat = "fstat", __HOSTCALL__fstat { fd: i32 => int }
                /// `statx(dirfd, payload=path, flags, mask)` -> 0, reply data = `struct
                /// statx` (256 bytes). An empty path with `AT_EMPTY_PATH` stats `dirfd`.
                Statx = "statx", __HOSTCALL__statx { dirfd: i32 => int, flags: i32 => int, mask: u32 => uint }
                /// `unlinkat(dirfd, payload=path, flags)` -> 0 (`AT_REMOVEDIR`: rmdir).
                Unlink = "unlink", __HOSTCALL__unlink { dirfd: i32 => int, flags: i32 => int }
                /// `mkdirat(dirfd, payload=path, mode)` -> 0.
                Mkdir = "mkdir", __HOSTCALL__mkdir { dirfd: i32 => int, mode: u32 => uint }
                /// `rename(payload=old ++ new)`, `old_len` bytes of old path first -> 0.
                Rename = "rename", __HOSTCALL__rename { old_len: u32 => uint }
                /// `getcwd()` -> length, reply data = the path (relative to the sandbox
                /// root, shown as `/`-rooted).
                Getcwd = "getcwd", __HOSTCALL__getcwd {}
                /// `getenv(payload=name)` -> value length, reply data = the value; ENOENT
                /// when unset.
                Getenv = "getenv", __HOSTCALL__getenv {}
                /// The host's argument `index` -> its length, reply data = its bytes;
                /// ENOENT past the end.
                Arg = "arg", __HOSTCALL__arg { index: u32 => uint }
                /// The host's environment entry `index`, `NAME=value`, in name order
                /// (entries longer than one reply are left out) -> its length, reply
                /// data = its bytes; ENOENT past the end.
                Environ = "environ", __HOSTCALL__environ { index: u32 => uint }
                /// `clock_gettime(clock)` for clocks the device cannot read itself
                /// (REALTIME) -> nanoseconds since the epoch.
                ClockGettime = "clock_gettime", __HOSTCALL__clock_gettime { clock: i32 => int }
                /// `getrandom(len, flags)` -> bytes, reply data = the random bytes.
                Getrandom = "getrandom", __HOSTCALL__getrandom { len: u32 => uint, flags: u32 => uint }
                /// `exit(code)`: the host records `code` and replies 0; the device then
                /// ends the kernel (`trap`) and the host process exits with `code`.
                Exit = "exit", __HOSTCALL__exit { code: i32 => int }
                /// `abort()`: as `exit(134)`, marked as an abnormal end (replied to
                /// first, like [`Exit`], so the host has seen it before the trap).
                Abort = "abort", __HOSTCALL__abort {}
                /// A device-side call the GPU cannot honour: payload = its name. The host
                /// logs it under `HOSTCALL_DEBUG` and replies ENOSYS.
                Unsupported = "unsupported", __HOSTCALL__unsupported {}
                /// Device memory for the device heap when its arena cannot serve:
                /// `size` bytes aligned to `align` (a power of two), zero-filled when
                /// `zeroed` is 1 -> the block's device address; ENOMEM when the GPU has
                /// no more (the device may still find room in its arena: it says when
                /// it gives up, [`HeapOom`]).
                HeapAlloc = "heap_alloc", __HOSTCALL__heap_alloc { size: u64 => word, align: u64 => word, zeroed: u32 => uint }
                /// Move a heap block into one of `new_size` bytes (alignment
                /// [`HEAP_ALIGN`]), the bytes copied on the GPU -> the new block's
                /// address. `ptr` a block the host handed out: it is freed (or kept,
                /// and returned, when it already holds `new_size`). Else the old block
                /// is the declared device region (an arena block), which the device
                /// frees itself.
                HeapRealloc = "heap_realloc", __HOSTCALL__heap_realloc { ptr: u64 => word, new_size: u64 => word }
                /// Posted: give back a block from [`HeapAlloc`] or [`HeapRealloc`]
                /// (anything else is ignored).
                HeapFree = "heap_free", __HOSTCALL__heap_free { ptr: u64 => word }
                /// Posted: the device heap could not find `size` bytes anywhere (the
                /// allocation returns null); the host says so on stderr with what its
                /// heap holds.
                HeapOom = "heap_oom", __HOSTCALL__heap_oom { size: u64 => word }
            }
            test {
                /// Test-only: returns `args[0] ^ args[1]`, echoes the payload or device
                /// region back into the reply data (or the region). Exercises the
                /// protocol without real handlers.
                Echo = "echo", __HOSTCALL__echo { a: u64 => word, b: u64 => word }
            }
        }
    };
}

/// `op_table!`'s callback here: the request types, [`BUILTIN`] and
/// [`TEST_ONLY`].
macro_rules! define_requests {
    ($(builtin { $($(#[$m:meta])* $ty:ident = $name:literal, $global:ident { $($body:tt)* })* })?
     $(test { $($(#[$tm:meta])* $tty:ident = $tname:literal, $tglobal:ident { $($tbody:tt)* })* })?) => {
        $($( request! { $(#[$m])* $ty = $name { $($body)* } } )*)?
        $($( request! { $(#[$tm])* $tty = $tname { $($tbody)* } } )*)?
        /// Every built-in name, for registries and docs.
        pub const BUILTIN: &[&str] = &[$($($ty::NAME),*)?];
        /// Ops only tests call ([`Echo`]); registries add them too.
        pub const TEST_ONLY: &[&str] = &[$($($tty::NAME),*)?];
        /// `(name, ID global)` of every op, for the check that each global is
        /// `__HOSTCALL__` + its name.
        #[cfg(test)]
        const GLOBALS: &[(&str, &str)] =
            &[$($(($name, stringify!($global)),)*)? $($(($tname, stringify!($tglobal)),)*)?];
    };
}

op_table!(define_requests);

/// The alignment of every block the host hands the device heap.
pub const HEAP_ALIGN: u64 = 256;

/// The call pattern of the echo stress test, written once for the GPU kernel
/// (`kernels/echo_stress`) and its CPU-emulation twin
/// (`hostcall-runtime/tests/gpu.rs`), so both really make the same calls.
pub mod echo_stress {
    /// Calls each thread makes.
    pub const CALLS_PER_THREAD: u64 = 100;
    /// Null calls the latency kernel times.
    pub const LATENCY_SAMPLES: usize = 2000;
    /// Largest payload a call sends, plus one.
    pub const MAX_PAYLOAD: usize = 512;

    /// Call `i` of thread `tid`: `(a, b, payload length)`. Lengths run over
    /// 0..MAX_PAYLOAD, so records take 1 to 9 ring lines.
    pub const fn call(tid: u64, i: u64) -> (u64, u64, usize) {
        let a = (tid << 32) | i;
        let b = tid.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i.rotate_left(17);
        (a, b, ((tid * 31 + i * 17) % MAX_PAYLOAD as u64) as usize)
    }

    /// The payload bytes of a call (xorshift seeded by `a ^ b`): unique to
    /// (thread, call), so a crossed reply shows.
    pub fn fill(buf: &mut [u8], seed: u64) {
        let mut x = seed | 1;
        for b in buf {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;

    #[test]
    fn every_id_global_is_its_ops_name_after_the_prefix() {
        assert_eq!(GLOBALS.len(), BUILTIN.len() + TEST_ONLY.len());
        for (name, global) in GLOBALS {
            assert_eq!(global.strip_prefix("__HOSTCALL__"), Some(*name), "{global}");
        }
    }

    #[test]
    fn names_are_distinct() {
        let all = || BUILTIN.iter().chain(TEST_ONLY);
        for (i, a) in all().enumerate() {
            assert!(!all().skip(i + 1).any(|b| b == a), "{a} twice");
        }
        assert_eq!(TEST_ONLY, [Echo::NAME]);
    }
}
