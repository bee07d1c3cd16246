#!/usr/bin/env bash
# The README's test command: format and lint checks, then every test.
# Unit and property tests run anywhere; the integration tests (AF_XDP on
# veth in network namespaces) need root. Elsewhere they skip loudly; under
# CI (CI=true) a missing privilege fails the run instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -eq 0 ]]; then
    scripts/deps.sh
    # Leftovers of an interrupted earlier run.
    scripts/lab.sh down >/dev/null 2>&1 || true
elif [[ ${CI:-} == true || ${CI:-} == 1 ]]; then
    echo "xdpvs: CI is set but this is not root: the kernel integration tests cannot run" >&2
    exit 1
else
    echo "xdpvs: NOT ROOT: the kernel integration tests will SKIP (run as root to include them)" >&2
fi

rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
if [[ -x scripts/layers.sh ]]; then
    scripts/layers.sh
fi
# The committed XDP objects are what their C sources compile to.
if command -v clang-14 >/dev/null 2>&1; then
    bpf/build.sh --check
elif [[ ${CI:-} == true || ${CI:-} == 1 ]]; then
    echo "xdpvs: CI is set but clang-14 is missing: cannot check bpf/*.o against bpf/*.c" >&2
    exit 1
fi
cargo test --release --lib --bins --tests -- --test-threads=2

# The Debian package (scripts/package.sh): builds it, checks its files, the
# unit with systemd-analyze verify, and that the unit's capabilities let
# `xdpvs run` start and stop. Root only (CI); its first run on a machine
# installs cargo-deb (about 5 minutes on 2 cores).
if [[ $(id -u) -eq 0 ]]; then
    scripts/package.sh
fi
