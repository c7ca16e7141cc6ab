#!/usr/bin/env bash
# rustc-wrapper.sh RUSTC ARGS...: how both doors run rustc for the nvptx
# target, so that the same sources give the same PTX bytes whichever build
# system drove the compile. Cargo calls it as RUSTC_WRAPPER (hostcall-build
# sets that up); Buck2's nvptx toolchain names it as the compiler.
#
# For an nvptx compile (`--target` names nvptx64-vectorware-linux) it
# changes two things a build system chooses and the PTX would otherwise show:
#
#  * The crate disambiguator. Cargo passes `-C metadata=<its own hash>`, Buck
#    `-Cmetadata=<target label>#<configuration>`; rustc folds it into the hash
#    in every mangled symbol name. Both are replaced by `<crate>-<version>`
#    (CARGO_PKG_VERSION, which cargo sets and the Buck targets set too), so a
#    crate is told apart from other crates by name and version, as on
#    crates.io.
#  * Buck's source path. The prelude compiles a per-target copy of the sources
#    and remaps it to `<package>/` (`--remap-path-prefix=<copy>/=<package>/`);
#    when HOSTCALL_SOURCE_PREFIX is set, the copy is remapped to that instead
#    (`/rustc/<channel>/` for rust-src, matching what hostcall-build passes
#    for the sysroot cargo builds).
#
# A binary crate (`--crate-type bin`, which hostcall-build builds for a
# `[[bin]]` kernel) is compiled to LLVM bitcode in one codegen unit instead
# of linked, and the bitcode is put where cargo looks for the executable
# (`<out-dir>/<crate><extra-filename>.ptx`): the PTX pipeline links it with
# the device libc and std and adds the entry point that calls its `main`.
#
# Anything else (build scripts, `rustc -vV`, host crates) runs unchanged.
set -euo pipefail
rustc=$1
shift

# rustc reads `@file` arguments as one argument per line; Buck passes all of
# its arguments that way.
args=()
for arg in "$@"; do
  if [[ $arg == @* && -f ${arg#@} ]]; then
    mapfile -t lines < "${arg#@}"
    args+=("${lines[@]}")
  else
    args+=("$arg")
  fi
done

nvptx=0
prev=
for arg in "${args[@]}"; do
  case $arg in
    --target=*nvptx64-vectorware-linux*) nvptx=1 ;;
    *nvptx64-vectorware-linux*) [[ $prev == --target ]] && nvptx=1 ;;
  esac
  prev=$arg
done
if [[ $nvptx == 0 ]]; then
  exec "$rustc" "$@"
fi

out=()
crate=
bin=0
emit=0
out_dir=
extra=
i=0
n=${#args[@]}
while ((i < n)); do
  arg=${args[i]}
  i=$((i + 1))
  case $arg in
    -C)
      next=${args[i]:-}
      i=$((i + 1))
      [[ $next == extra-filename=* ]] && extra=${next#extra-filename=}
      [[ $next == metadata=* ]] || out+=(-C "$next")
      continue
      ;;
    -Cmetadata=*) continue ;;
    --crate-name)
      crate=${args[i]:-}
      ;;
    --crate-name=*) crate=${arg#--crate-name=} ;;
    --crate-type)
      [[ ${args[i]:-} == bin ]] && bin=$((bin + 1)) || bin=$((bin + 100))
      ;;
    --emit=*link*) emit=1 ;;
    --out-dir)
      out_dir=${args[i]:-}
      ;;
    -Cextra-filename=*) extra=${arg#-Cextra-filename=} ;;
    --remap-path-prefix=*/__srcs/=*)
      if [[ -n ${HOSTCALL_SOURCE_PREFIX:-} ]]; then
        from=${arg#--remap-path-prefix=}
        arg="--remap-path-prefix=${from%%/__srcs/=*}/__srcs/=$HOSTCALL_SOURCE_PREFIX"
      fi
      ;;
  esac
  out+=("$arg")
done
if [[ -z $crate ]]; then
  echo "rustc-wrapper: no --crate-name in an nvptx compile" >&2
  exit 2
fi
# Only a compile of a binary alone (cargo also asks rustc about every crate
# type at once, with --print).
if [[ $bin != 1 || $emit == 0 || -z $out_dir ]]; then
  exec "$rustc" "${out[@]}" "-Cmetadata=$crate-${CARGO_PKG_VERSION:-}"
fi
bc_args=()
for arg in "${out[@]}"; do
  case $arg in
    --emit=*) bc_args+=("$(echo "$arg" | sed 's/link/llvm-bc/')") ;;
    *) bc_args+=("$arg") ;;
  esac
done
"$rustc" "${bc_args[@]}" "-Cmetadata=$crate-${CARGO_PKG_VERSION:-}" -Ccodegen-units=1
mv -f "$out_dir/$crate$extra.bc" "$out_dir/$crate$extra.ptx"
