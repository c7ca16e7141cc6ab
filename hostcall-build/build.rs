// Records the host triple: the pinned toolchain installs llvm-tools under
// `lib/rustlib/<host>/bin`, and only cargo knows the triple for certain.
fn main() {
    let host = std::env::var("TARGET").unwrap_or_else(|_| "x86_64-unknown-linux-gnu".into());
    println!("cargo:rustc-env=HOSTCALL_BUILD_HOST_TRIPLE={host}");
    println!("cargo:rerun-if-changed=build.rs");
}
