#!/bin/sh
# tool.sh <stage0.env> <tool> [args...]: runs a tool of the pinned nightly
# (rustc, cargo, rustdoc from its bin/, llvm-link, opt, llc from llvm-tools;
# rustc-wrapped for rustc through stage0/rustc-wrapper.sh).
set -eu
. "$1"
tool=$2
shift 2
case "$tool" in
  # rustc-wrapped <wrapper> <target spec> [args...]: rustc through
  # stage0/rustc-wrapper.sh, finding the spec through RUST_TARGET_PATH.
  rustc-wrapped)
    wrapper=$1
    RUST_TARGET_PATH=$(cd "$(dirname "$2")" && pwd)
    export RUST_TARGET_PATH
    shift 2
    exec "$wrapper" "$STAGE0_SYSROOT/bin/rustc" "$@"
    ;;
  rustc|cargo|rustdoc) exec "$STAGE0_SYSROOT/bin/$tool" "$@" ;;
  *) exec "$STAGE0_LLVM_BIN/$tool" "$@" ;;
esac
