# The nvptx sysroot as Buck targets: rust-src's library/ with //fixups applied
# (`rust_src_library`), and one `rust_library` per crate of std's graph
# (`sysroot_crate`), configured for //platforms/nvptx:library.

load("@root//stage0:defs.bzl", "CHANNEL")

# The sysroot's opt-level: hostcall-build's `SYSROOT_OPT_LEVEL` (cargo's
# profile.release.opt-level for `-p std -p panic_abort`).
SYSROOT_OPT_LEVEL = "-Copt-level=z"

# Every crate of sysroot/BUCK: what a kernel's PTX links besides its own.
SYSROOT_CRATES = [
    "root//sysroot:" + name
    for name in [
        "alloc",
        "cfg_if",
        "compiler_builtins",
        "core",
        "hashbrown",
        "libc",
        "panic_abort",
        "rustc_demangle",
        "rustc_std_workspace_alloc",
        "rustc_std_workspace_core",
        "std",
        "std_detect",
        "unwind",
    ]
]

def _rust_src_library_impl(ctx: AnalysisContext) -> list[Provider]:
    library = ctx.actions.declare_output("library", dir = True)
    ctx.actions.run(
        cmd_args(
            ctx.attrs._hostcall_build[RunInfo],
            "library",
            library.as_output(),
            hidden = [ctx.attrs._stage0[DefaultInfo].default_outputs[0]],
        ),
        category = "rust_src_library",
        # hostcall-build reads rust-src from the rustup toolchain, outside
        # Buck's view: local only, never shared through a cache.
        local_only = True,
        allow_cache_upload = False,
    )
    return [DefaultInfo(default_output = library)]

# rust-src's library/ of the pinned nightly with the fixups applied, by
# `hostcall-build library` (the code the cargo door patches its copy with).
rust_src_library = rule(
    impl = _rust_src_library_impl,
    attrs = {
        "_hostcall_build": attrs.exec_dep(default = "root//hostcall-build:hostcall-build-bin"),
        "_stage0": attrs.toolchain_dep(default = "root//stage0:stage0"),
    },
)

def sysroot_crate(
        name,
        path,
        version,
        edition,
        crate_root = "src/lib.rs",
        features = [],
        cfgs = [],
        rustc_flags = [],
        env = {},
        **kwargs):
    """One crate of rust-src's library/, at `path` inside it.

    `version` is its Cargo.toml version (the wrapper makes `<crate>-<version>`
    the crate's disambiguator, as the cargo door does); `features` are the
    features cargo resolves for `-p std -p panic_abort`; `cfgs` and `env` are
    what the crate's build script tells cargo for this target.
    """
    native.rust_library(
        name = name,
        crate = name,
        mapped_srcs = {":library": "library"},
        crate_root = "library/{}/{}".format(path, crate_root),
        edition = edition,
        features = features,
        # Size first, as hostcall-build's SYSROOT_OPT_LEVEL; a crate's own
        # opt-level (library/Cargo.toml's overrides) comes later and wins.
        rustc_flags = [SYSROOT_OPT_LEVEL] + ["--cfg={}".format(cfg) for cfg in cfgs] + rustc_flags,
        env = dict(
            {
                "CARGO_PKG_VERSION": version,
                # The wrapper names these sources as an official toolchain
                # does, and as the cargo door's remapping does.
                "HOSTCALL_SOURCE_PREFIX": "/rustc/{}/".format(CHANNEL),
            },
            **env
        ),
        target_compatible_with = ["root//platforms/nvptx:gpu"],
        visibility = ["PUBLIC"],
        **kwargs
    )
