#!/bin/sh
# tool.sh <stage0.env> <tool> [args...]: runs a tool of the pinned nightly
# (rustc, cargo, rustdoc from its bin/, llvm-link, opt, llc from llvm-tools).
set -eu
. "$1"
tool=$2
shift 2
case "$tool" in
  rustc|cargo|rustdoc) exec "$STAGE0_SYSROOT/bin/$tool" "$@" ;;
  *) exec "$STAGE0_LLVM_BIN/$tool" "$@" ;;
esac
