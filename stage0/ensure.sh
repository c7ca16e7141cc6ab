#!/bin/sh
# ensure.sh <channel file> <out env file>: makes sure rustup has the pinned
# nightly with rust-src and llvm-tools (installs it when absent) and writes a
# shell file naming its sysroot and llvm bin dir. Used by //stage0:stage0.
set -eu
channel=$(head -n 1 "$1" | tr -d '[:space:]')
sysroot=$(rustup run "$channel" rustc --print sysroot 2>/dev/null || true)
host=$(rustup run "$channel" rustc -vV 2>/dev/null | sed -n 's/^host: //p' || true)
if [ -z "$sysroot" ] || [ ! -f "$sysroot/lib/rustlib/src/rust/library/std/Cargo.toml" ] \
   || [ ! -x "$sysroot/lib/rustlib/$host/bin/llvm-link" ]; then
  echo "stage0: installing $channel (rust-src, llvm-tools)" >&2
  rustup toolchain install "$channel" --profile minimal -c rust-src -c llvm-tools >&2
  sysroot=$(rustup run "$channel" rustc --print sysroot)
  host=$(rustup run "$channel" rustc -vV | sed -n 's/^host: //p')
fi
{
  echo "STAGE0_CHANNEL='$channel'"
  echo "STAGE0_SYSROOT='$sysroot'"
  echo "STAGE0_LLVM_BIN='$sysroot/lib/rustlib/$host/bin'"
  rustup run "$channel" rustc -vV | sed 's/^/# /'
} > "$2"
