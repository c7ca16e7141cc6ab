//! The kernel images the bench loads, embedded at build time (`build.rs`),
//! and the demo's (from `hostcall-demo`), each as PTX plus the cubin built
//! from it when the build found a ptxas.

/// A kernel image: PTX and, when the build made one, its cubin.
#[derive(Clone, Copy, Debug)]
pub struct Image {
    pub name: &'static str,
    pub ptx: &'static [u8],
    cubin: &'static [u8],
}

impl Image {
    pub fn cubin(&self) -> Option<&'static [u8]> {
        (!self.cubin.is_empty()).then_some(self.cubin)
    }

    /// `hostcall_image::bundle_sha256` of the PTX and cubin.
    pub fn sha256(&self) -> String {
        hostcall_image::bundle_sha256(self.ptx, self.cubin())
    }
}

/// `kernels/bench_std`: what is measured (std, libc-hostcall).
pub const BENCH_STD: Image = Image {
    name: "bench_std",
    ptx: include_bytes!(concat!(env!("OUT_DIR"), "/bench_std.ptx")),
    cubin: include_bytes!(concat!(env!("OUT_DIR"), "/bench_std.cubin")),
};

/// `kernels/bench_floor`: the baselines (`no_std`, CUDA's printf and malloc).
pub const BENCH_FLOOR: Image = Image {
    name: "bench_floor",
    ptx: include_bytes!(concat!(env!("OUT_DIR"), "/bench_floor.ptx")),
    cubin: include_bytes!(concat!(env!("OUT_DIR"), "/bench_floor.cubin")),
};

/// The demo kernel (`culinux`), whose first load is a figure.
pub fn demo() -> Image {
    Image { name: "culinux", ptx: hostcall_demo::ptx::PTX, cubin: hostcall_demo::ptx::cubin().unwrap_or(&[]) }
}

/// `git describe` of the source the bench was built from.
pub const COMMIT: &str = include_str!(concat!(env!("OUT_DIR"), "/commit"));
