#!/usr/bin/env bash
# Installs the system tools the lab, the demo and the tests use (clang-14
# only checks that bpf/xdpvs.o matches its source; never needed
# to *build* xdpvs: that takes only the Rust toolchain). Idempotent.
set -euo pipefail
need=()
for tool in ip:iproute2 ethtool:ethtool curl:curl socat:socat python3:python3 nft:nftables ping:iputils-ping sha256sum:coreutils pgrep:procps kill:procps keepalived:keepalived tshark:tshark bird:bird2 clang-14:clang-14; do
    cmd=${tool%%:*}; pkg=${tool##*:}
    command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
# FRR's daemons are not on PATH: the HA lab (lab.sh ha) runs /usr/lib/frr/zebra
# and bgpd directly, in its router namespace. Debian's frr service only starts
# under systemd, with every daemon but zebra/staticd off (/etc/frr/daemons).
[ -x /usr/lib/frr/bgpd ] || need+=(frr)
if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "xdpvs: missing tools (${need[*]}); run as root or: apt-get install -y ${need[*]}" >&2
        exit 1
    fi
    echo "xdpvs: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # wireshark-common (pulled in by tshark) asks whether non-root users
    # may capture; answer it up front so the install never prompts.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
