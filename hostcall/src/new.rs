//! `hostcall new NAME`: a kernel crate that builds and runs as it is.

use std::path::Path;

/// Why a name cannot be a crate's.
fn check_name(name: &str) -> Result<(), String> {
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let first_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if name.is_empty() || !ok_chars || !first_ok {
        return Err(format!(
            "`{name}` is not a crate name: use letters, digits, `_` and `-`, starting with a letter or `_`"
        ));
    }
    Ok(())
}

/// The kernel's entry point: `<name>_main`, `-` read as `_`.
pub fn entry_name(name: &str) -> String {
    format!("{}_main", name.replace('-', "_"))
}

fn manifest(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"

# `hostcall build` and `hostcall run` build this crate for the GPU (nvptx64,
# with std over the device libc); `cargo test` runs its tests on the CPU.
[lib]
crate-type = ["rlib"]

[dependencies]

# A workspace of its own, so that it builds wherever it was created.
[workspace]
"#
    )
}

fn lib_rs(name: &str) -> String {
    let entry = entry_name(name);
    format!(
        r#"//! `{name}`: a GPU kernel written with std. `hostcall run` builds it and runs
//! `{entry}` on the GPU: one thread by default, `--grid G --block B` for
//! G x B of them; `hostcall run -- ARGS` passes arguments to
//! `std::env::args()`. `cargo test` runs the tests below on the CPU.
#![cfg_attr(target_arch = "nvptx64", feature(abi_ptx, stdarch_nvptx))]

/// What each GPU thread prints: plain Rust, so that `cargo test` can check
/// it on the CPU.
pub fn greeting(thread: u32, threads: u32, args: &[String]) -> String {{
    if args.is_empty() {{
        format!("hello from GPU thread {{thread}} of {{threads}}")
    }} else {{
        format!("hello from GPU thread {{thread}} of {{threads}}, with {{args:?}}")
    }}
}}

/// The entry point: every thread of the launch runs it.
#[cfg(target_arch = "nvptx64")]
#[no_mangle]
pub extern "ptx-kernel" fn {entry}() {{
    use core::arch::nvptx::{{_block_dim_x, _block_idx_x, _grid_dim_x, _thread_idx_x}};
    // SAFETY: reading the special registers that number the threads has no
    // preconditions.
    let (thread, threads) =
        unsafe {{ (_block_idx_x() * _block_dim_x() + _thread_idx_x(), _grid_dim_x() * _block_dim_x()) }};
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("{{}}", greeting(thread as u32, threads as u32, &args));
}}

#[cfg(test)]
mod tests {{
    use super::greeting;

    #[test]
    fn each_thread_says_who_it_is() {{
        assert_eq!(greeting(3, 64, &[]), "hello from GPU thread 3 of 64");
        assert_eq!(greeting(0, 1, &["x".into()]), "hello from GPU thread 0 of 1, with [\"x\"]");
    }}
}}
"#
    )
}

/// Write the crate `name` in `parent/name`; returns its directory.
pub fn create(parent: &Path, name: &str) -> Result<std::path::PathBuf, String> {
    check_name(name)?;
    let dir = parent.join(name);
    if dir.exists() {
        return Err(format!("{}: already exists", dir.display()));
    }
    let write = |rel: &str, text: String| {
        let path = dir.join(rel);
        if let Some(up) = path.parent() {
            std::fs::create_dir_all(up).map_err(|e| format!("{}: {e}", up.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write("Cargo.toml", manifest(name))?;
    write("src/lib.rs", lib_rs(name))?;
    write(".gitignore", "/target\n".into())?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for bad in ["", "1abc", "a b", "a/b", "é"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["demo2", "my-kernel", "_x"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
        assert_eq!(entry_name("my-kernel"), "my_kernel_main");
    }
}
