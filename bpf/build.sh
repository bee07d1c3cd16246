#!/usr/bin/env bash
# Rebuild the committed XDP objects from their sources:
#   bpf/build.sh           write bpf/xdpvs.o, bpf/xdp_pass.o, bpf/xdp_drop.o and
#                          bpf/loadgen.o (xdpvs-loadgen --mode live)
#   bpf/build.sh --check   rebuild into a temporary directory and fail if the
#                          committed objects differ from their sources
# Needs clang with the BPF target (Debian: apt-get install clang-14).
# `cargo build` does not run this: the objects are committed and embedded.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
CLANG=${CLANG:-$(command -v clang-14 || command -v clang || true)}
[ -n "$CLANG" ] || { echo "bpf/build.sh: clang not found (apt-get install clang-14)" >&2; exit 1; }
out=.
if [ "${1:-}" = --check ]; then
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi
for p in xdpvs xdp_pass xdp_drop loadgen; do
    # No debug info: the object depends only on the source and clang.
    "$CLANG" -O2 -target bpfel -mcpu=v3 -Wall -Werror -nostdinc -c "$p.c" -o "$out/$p.o"
done
if [ "$out" != . ]; then
    for p in xdpvs xdp_pass xdp_drop loadgen; do
        cmp -s "$out/$p.o" "$p.o" || { echo "bpf/build.sh: bpf/$p.o does not match bpf/$p.c (run bpf/build.sh and commit)" >&2; exit 1; }
    done
    echo "bpf/build.sh: committed objects match their sources"
fi
