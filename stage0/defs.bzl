# stage0: the pinned nightly (stage0/channel) as Buck toolchain rules.
#
# `stage0_toolchain` makes sure rustup has the channel with rust-src and
# llvm-tools (installing it when absent, as hostcall-build does) and records
# its sysroot; `stage0_tool` runs one tool of it (rustc, cargo, llvm-link, opt,
# llc). The install touches ~/.rustup, outside buck-out, so these actions run
# locally and are keyed on stage0/channel only.

Stage0Info = provider(fields = {
    "channel": provider_field(typing.Any),
    "env": provider_field(typing.Any),  # artifact: shell file setting STAGE0_SYSROOT etc.
})

def _stage0_toolchain_impl(ctx: AnalysisContext) -> list[Provider]:
    env = ctx.actions.declare_output("stage0.env")
    ctx.actions.run(
        cmd_args(ctx.attrs._ensure[RunInfo], ctx.attrs.channel, env.as_output()),
        category = "stage0_ensure",
        local_only = True,
        allow_cache_upload = False,
    )
    return [
        DefaultInfo(default_output = env),
        Stage0Info(channel = ctx.attrs.channel, env = env),
    ]

stage0_toolchain = rule(
    impl = _stage0_toolchain_impl,
    attrs = {
        "channel": attrs.source(),
        "_ensure": attrs.exec_dep(default = "//stage0:ensure"),
    },
    is_toolchain_rule = True,
)

def _stage0_tool_impl(ctx: AnalysisContext) -> list[Provider]:
    info = ctx.attrs.toolchain[Stage0Info]
    run = cmd_args(ctx.attrs._tool[RunInfo], info.env, ctx.attrs.tool)
    return [DefaultInfo(default_output = info.env), RunInfo(args = run)]

stage0_tool = rule(
    impl = _stage0_tool_impl,
    attrs = {
        "tool": attrs.string(),
        "toolchain": attrs.toolchain_dep(default = "//stage0:stage0", providers = [Stage0Info]),
        "_tool": attrs.exec_dep(default = "//stage0:tool"),
    },
)

# stage0/channel, for rules that need it at analysis time (BUCK files cannot
# read files); hostcall-build's tests check that the two agree.
CHANNEL = "nightly-2026-05-22"
