# hostcall_ptx: a Rust kernel crate -> PTX, by the same pipeline as the cargo
# door (hostcall-build, itself built by Buck from source as a host binary).
#
# The action runs `hostcall-build ptx <kernel_dir> --libc <libc_dir> --cache
# <fresh dir> --out <ptx>` from the project root, so the kernel crates keep the
# paths they have in the cargo door: cargo derives each crate's `-C metadata`
# (and so the symbol names left in the PTX) from the path of a path
# dependency, and the same paths give byte-identical PTX. The `srcs` are the
# action's declared inputs (what makes Buck rebuild); the pipeline reads the
# same files in place. It runs locally, never cached remotely: it calls the
# pinned nightly's cargo (//stage0) outside Buck's sandbox.

def _hostcall_ptx_impl(ctx: AnalysisContext) -> list[Provider]:
    ptx = ctx.actions.declare_output(ctx.attrs.out)
    cache = ctx.actions.declare_output("hostcall-build-cache", dir = True)
    cmd = cmd_args(
        ctx.attrs._hostcall_build[RunInfo],
        "ptx",
        ctx.attrs.kernel_dir,
        "--libc",
        ctx.attrs.libc_dir,
        "--arch",
        ctx.attrs.arch,
        "--cache",
        cache.as_output(),
        "--out",
        ptx.as_output(),
        hidden = ctx.attrs.srcs + [ctx.attrs._stage0[DefaultInfo].default_outputs[0]],
    )
    ctx.actions.run(
        cmd,
        category = "hostcall_ptx",
        local_only = True,
        allow_cache_upload = False,
    )

    sha = ctx.actions.declare_output(ctx.attrs.out + ".sha256")
    ctx.actions.run(
        cmd_args(
            "sh",
            "-c",
            'sha256sum "$1" | cut -c1-64 | tr -d "\\n" > "$2"',
            "--",
            ptx,
            sha.as_output(),
        ),
        category = "sha256",
    )

    # An OUT_DIR as hostcall-demo's build.rs leaves it: <out> and <out>.sha256.
    out_dir = ctx.actions.symlinked_dir("out_dir", {
        ctx.attrs.out: ptx,
        ctx.attrs.out + ".sha256": sha,
    })
    return [
        DefaultInfo(
            default_output = ptx,
            sub_targets = {
                "out_dir": [DefaultInfo(default_output = out_dir)],
                "sha256": [DefaultInfo(default_output = sha)],
            },
        ),
    ]

hostcall_ptx = rule(
    impl = _hostcall_ptx_impl,
    attrs = {
        "arch": attrs.string(default = "sm_90"),
        "kernel_dir": attrs.string(),
        "libc_dir": attrs.string(),
        "out": attrs.string(),
        "srcs": attrs.list(attrs.source(), default = []),
        "_hostcall_build": attrs.exec_dep(default = "//hostcall-build:hostcall-build-bin"),
        "_stage0": attrs.toolchain_dep(default = "//stage0:stage0"),
    },
)
