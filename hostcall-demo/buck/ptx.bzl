# hostcall_ptx: a kernel crate, the crates it builds on and the nvptx sysroot,
# all Buck `rust_library` targets, linked into PTX.
#
# The rule runs `hostcall-build link` (built by Buck from source as a host
# binary): bitcode out of the rlibs, llvm-link, opt (internalize, globaldce,
# Oz by default, mergefunc), llc, with the pinned nightly's LLVM tools (//stage0). That is the code
# the cargo door ends in (`link_ptx` in hostcall-build), so the same rlibs
# give the same PTX; and the rlibs are the same because both doors compile
# the same sources with the same rustc and flags (toolchains//:rust_nvptx,
# stage0/rustc-wrapper.sh).
#
# The rule only builds in //platforms/nvptx:library (wrap it in a
# configured_alias, as //hostcall-demo:culinux_ptx does): its crate deps are
# nvptx libraries.

load("@root//stage0:defs.bzl", "Stage0Info")
load("@root//sysroot:defs.bzl", "SYSROOT_CRATES")

def _rlib(dep: Dependency) -> Artifact:
    return dep[DefaultInfo].sub_targets["static_pic"][DefaultInfo].default_outputs[0]

def _hostcall_ptx_impl(ctx: AnalysisContext) -> list[Provider]:
    ptx = ctx.actions.declare_output(ctx.attrs.out)
    work = ctx.actions.declare_output("work", dir = True)
    cmd = cmd_args(
        "sh",
        "-c",
        '. "$1"; shift; exec "$@" --llvm-bin "$STAGE0_LLVM_BIN"',
        "sh",
        ctx.attrs._stage0[Stage0Info].env,
        ctx.attrs._hostcall_build[RunInfo],
        "link",
        "--out",
        ptx.as_output(),
        "--work",
        work.as_output(),
        "--opt-level",
        ctx.attrs.opt_level,
        [cmd_args("--keep", symbol) for symbol in ctx.attrs.keep],
        [cmd_args("--kernel-rlib", _rlib(dep)) for dep in [ctx.attrs.kernel] + ctx.attrs.crates],
        [cmd_args("--sysroot-rlib", _rlib(dep)) for dep in ctx.attrs.sysroot],
    )
    ctx.actions.run(
        cmd,
        category = "hostcall_ptx",
        # The LLVM tools live in the rustup toolchain, outside buck-out.
        local_only = True,
        allow_cache_upload = False,
    )

    # The cubin, as the cargo door builds it (`hostcall-build cubin`: ptxas
    # -c with a register limit). The ptxas is `hostcall.ptxas` in the
    # buckconfig (default: the wheel .ci/run installs, relative to the
    # project root); without one the cubin is empty and the image PTX only.
    stem = ctx.attrs.out.removesuffix(".ptx")
    cubin = ctx.actions.declare_output(stem + ".cubin")
    cubin_cache = ctx.actions.declare_output("cubin-cache", dir = True)
    ctx.actions.run(
        cmd_args(
            "sh",
            "-c",
            'p="$1" cache="$2" out="$3"; shift 3; mkdir -p "$cache"; ' +
            'if [ -x "$p" ]; then PTXAS="$p" "$@" --cache "$cache" --out "$out" > /dev/null; fi; ' +
            '[ -f "$out" ] || : > "$out"',
            "sh",
            read_config("hostcall", "ptxas", ".whl/nvidia/cuda_nvcc/bin/ptxas"),
            cubin_cache.as_output(),
            cubin.as_output(),
            ctx.attrs._hostcall_build[RunInfo],
            "cubin",
            ptx,
            "--arch",
            ctx.attrs.arch,
            "--max-registers",
            str(ctx.attrs.max_registers),
        ),
        category = "hostcall_cubin",
        # ptxas lives outside buck-out.
        local_only = True,
        allow_cache_upload = False,
    )

    # The one SHA-256 of PTX and cubin that hostcalls_bin checks.
    sha = ctx.actions.declare_output(stem + ".sha256")
    ctx.actions.run(
        cmd_args(
            "sh",
            "-c",
            'out="$1"; shift; "$@" > "$out"',
            "sh",
            sha.as_output(),
            ctx.attrs._hostcall_build[RunInfo],
            "hash",
            ptx,
            cubin,
        ),
        category = "sha256",
    )

    # An OUT_DIR as hostcall-demo's build.rs leaves it.
    out_dir = ctx.actions.symlinked_dir("out_dir", {
        ctx.attrs.out: ptx,
        stem + ".cubin": cubin,
        stem + ".sha256": sha,
    })
    return [
        DefaultInfo(
            default_output = ptx,
            sub_targets = {
                "cubin": [DefaultInfo(default_output = cubin)],
                "out_dir": [DefaultInfo(default_output = out_dir)],
                "sha256": [DefaultInfo(default_output = sha)],
            },
        ),
    ]

hostcall_ptx = rule(
    impl = _hostcall_ptx_impl,
    attrs = {
        # GPU architecture of the cubin (the PTX is sm_90, as the target spec).
        "arch": attrs.string(default = "sm_90"),
        # The crates the kernel builds on besides the sysroot: the device
        # libc and its dependencies, the kernel's own dependencies.
        "crates": attrs.list(attrs.dep(), default = []),
        # Symbols to keep besides the entry points and __HOSTCALL* globals.
        "keep": attrs.list(attrs.string(), default = []),
        # The kernel crate (a rust_library with `extern "ptx-kernel"` entries).
        "kernel": attrs.dep(),
        # `hostcall-build --max-registers`: 64 lets every entry launch 1024 threads.
        "max_registers": attrs.int(default = 64),
        # `hostcall-build --opt-level`: 1, 2, 3, s or z (the default, as in
        # the cargo door).
        "opt_level": attrs.string(default = "z"),
        "out": attrs.string(),
        "sysroot": attrs.list(attrs.dep(), default = SYSROOT_CRATES),
        "_hostcall_build": attrs.exec_dep(default = "root//hostcall-build:hostcall-build-bin"),
        "_stage0": attrs.toolchain_dep(default = "root//stage0:stage0", providers = [Stage0Info]),
    },
)
