# The nvptx Rust toolchain: what `toolchains//:rust` resolves to for targets
# configured in //platforms/nvptx:library (see toolchains/BUCK).
#
# The compiler is the pinned nightly's rustc (//stage0) run through
# stage0/rustc-wrapper.sh, the same wrapper hostcall-build gives cargo, and
# the flags are the ones cargo passes for the release profile of the nvptx
# builds (hostcall-build's sysroot and kernel builds): the same rustc, sources
# and flags give the same bitcode, and so the same PTX, from both doors.

load("@prelude//rust:rust_toolchain.bzl", "PanicRuntime", "RustToolchainInfo")
load("@root//stage0:defs.bzl", "Stage0Info")

def _nvptx_rust_toolchain_impl(ctx: AnalysisContext) -> list[Provider]:
    stage0 = ctx.attrs.stage0[Stage0Info]
    spec = ctx.attrs.target_spec
    compiler = RunInfo(args = cmd_args(
        ctx.attrs._tool[RunInfo],
        stage0.env,
        "rustc-wrapped",
        ctx.attrs.wrapper,
        spec,
    ))
    return [
        DefaultInfo(),
        RustToolchainInfo(
            compiler = compiler,
            rustdoc = RunInfo(args = ["false"]),
            clippy_driver = RunInfo(args = ["false"]),
            default_edition = "2021",
            # -Cpanic=abort comes with rustc_flags, as cargo gets it from
            # RUSTFLAGS ("abort" would add -Zpanic-abort-tests too).
            panic_runtime = PanicRuntime("none"),
            nightly_features = True,
            # Found as <triple>.json in RUST_TARGET_PATH (stage0/tool.sh).
            rustc_target_triple = "nvptx64-vectorware-linux",
            rustc_flags = ctx.attrs.rustc_flags,
        ),
    ]

nvptx_rust_toolchain = rule(
    impl = _nvptx_rust_toolchain_impl,
    attrs = {
        "rustc_flags": attrs.list(attrs.arg(), default = []),
        "stage0": attrs.toolchain_dep(default = "root//stage0:stage0", providers = [Stage0Info]),
        "target_spec": attrs.source(),
        "wrapper": attrs.source(),
        "_tool": attrs.exec_dep(default = "root//stage0:tool"),
    },
    is_toolchain_rule = True,
)
