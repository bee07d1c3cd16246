#!/usr/bin/env bash
# The README's test command. Unit and property tests run anywhere; the
# integration tests (AF_XDP on veth in network namespaces) need root and say
# so when they skip. CI runs this as root, so there everything runs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -eq 0 ]]; then
    scripts/deps.sh
    # Leftovers of an interrupted earlier run.
    scripts/lab.sh down >/dev/null 2>&1 || true
else
    echo "xdpvs: not root: kernel integration tests will skip (run as root to include them)" >&2
fi

cargo test --release --lib --bins --tests -- --test-threads=2
