#!/usr/bin/env bash
# xdpvs lab: network namespaces for director tests.
#
#   scripts/lab.sh up [dr|nat]   build the lab (tears down an existing one first)
#   scripts/lab.sh down          remove everything (idempotent)
#   scripts/lab.sh env [dr|nat]  print KEY=VALUE lines describing the lab
#   scripts/lab.sh status        list the lab's namespaces
#
# Addresses only from 198.18.0.0/15 and 2001:db8::/32. Namespaces: xdpvs-*.
#
# Common part:
#   xdpvs-cl  (client)  eth0 198.18.10.2/24 2001:db8:10::2/64, default via the router,
#             source pools 198.18.100-103.1-16/32 and 2001:db8:100::1-16/128
#   xdpvs-rt  (router)  cl0 198.18.10.1/24 2001:db8:10::1/64, forwarding on
#   xdpvs-lan (switch)  bridge br0 (no addresses)
#
# dr (one-arm, direct routing): LAN 198.18.0.0/24 2001:db8::/64 on br0
#   router lan0 198.18.0.1 2001:db8::1; routes VIP 198.18.0.100 / 2001:db8::100
#   via the director 198.18.0.2 / 2001:db8::2
#   xdpvs-dir dr0 198.18.0.2 2001:db8::2 (2 queues), VIP on lo, forwarding off
#   xdpvs-rsN eth0 198.18.0.1N 2001:db8::1N (N=1..3), VIP on lo (arp_ignore=1,
#             arp_announce=2, v6 nodad), default via the router
#
# nat (two-arm, masquerading):
#   outside: router dir0 198.18.2.1 2001:db8:2::1 <-> director dr0 198.18.2.2
#            2001:db8:2::2 (+ VIP 198.18.0.100/32, 2001:db8::100/128 on dr0);
#            router routes the VIP via 198.18.2.2 / 2001:db8:2::2
#   inside:  director dr1 198.18.3.1 2001:db8:3::1 on br0; real servers eth0
#            198.18.3.1N 2001:db8:3::1N, default via the director
#   The director forwards non-VIP traffic in the kernel (ip_forward=1), like
#   an IPVS NAT director.
#
# Director data interfaces are veths with 2 RX/TX queues (both ends; LAB_DIR_QUEUES=N for N), for
# two-shard tests in native XDP mode. Every veth gets
# `ethtool -K IF tx off tso off gso off` (frames forwarded through AF_XDP
# must carry full checksums and no GSO).

set -euo pipefail

NS_CL=xdpvs-cl
NS_RT=xdpvs-rt
NS_LAN=xdpvs-lan
NS_DIR=xdpvs-dir
NS_RS=(xdpvs-rs1 xdpvs-rs2 xdpvs-rs3)
ALL_NS=("$NS_CL" "$NS_RT" "$NS_LAN" "$NS_DIR" "${NS_RS[@]}")
STATE_DIR=/run/xdpvs-lab
VIP4=198.18.0.100
VIP6=2001:db8::100
# RX/TX queues of the director's data interfaces (LAB_DIR_QUEUES, default 2).
DIR_Q=${LAB_DIR_QUEUES:-2}

die() { echo "lab.sh: $*" >&2; exit 1; }
[[ $DIR_Q =~ ^[1-8]$ ]] || die "LAB_DIR_QUEUES must be 1..8"

need_tools() {
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    command -v ip >/dev/null || die "iproute2 (ip) is required"
    command -v ethtool >/dev/null ||
        die "ethtool is required (apt-get install -y ethtool): test senders need 'ethtool -K IF tx off tso off gso off'"
}

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

sysctl_set() { nsx "$1" sysctl -qw "$2=$3" >/dev/null; }

offload_off() { nsx "$1" ethtool -K "$2" tx off tso off gso off >/dev/null 2>&1 ||
    die "ethtool -K $2 in $1 failed"; }

# veth NS1 IF1 NS2 IF2 [queues]: a veth pair between two namespaces, up, offloads off.
veth() {
    local ns1=$1 if1=$2 ns2=$3 if2=$4 q=${5:-1}
    ip -n "$ns1" link add "$if1" numtxqueues "$q" numrxqueues "$q" type veth \
        peer name "$if2" numtxqueues "$q" numrxqueues "$q" netns "$ns2"
    ip -n "$ns1" link set "$if1" mtu 1500 up
    ip -n "$ns2" link set "$if2" mtu 1500 up
    offload_off "$ns1" "$if1"
    offload_off "$ns2" "$if2"
}

# lan_port NS IF PORT [queues]: connect NS/IF to the bridge as port PORT.
lan_port() {
    local ns=$1 ifn=$2 port=$3 q=${4:-1}
    veth "$ns" "$ifn" "$NS_LAN" "$port" "$q"
    ip -n "$NS_LAN" link set "$port" master br0
}

addr4() { ip -n "$1" addr add "$3" dev "$2"; }
addr6() { ip -n "$1" -6 addr add "$3" dev "$2" nodad; }

down() {
    local ns
    for ns in "${ALL_NS[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$STATE_DIR"
}

common_up() {
    local ns
    for ns in "${ALL_NS[@]}"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # No duplicate address detection anywhere (link-local addresses
        # included): the lab is usable as soon as `up` returns.
        sysctl_set "$ns" net.ipv6.conf.all.accept_dad 0
        sysctl_set "$ns" net.ipv6.conf.default.accept_dad 0
        sysctl_set "$ns" net.ipv6.conf.default.dad_transmits 0
    done
    ip -n "$NS_LAN" link add br0 type bridge
    ip -n "$NS_LAN" link set br0 up
    sysctl_set "$NS_LAN" net.ipv6.conf.all.disable_ipv6 1

    # client <-> router
    veth "$NS_CL" eth0 "$NS_RT" cl0
    addr4 "$NS_CL" eth0 198.18.10.2/24
    addr6 "$NS_CL" eth0 2001:db8:10::2/64
    addr4 "$NS_RT" cl0 198.18.10.1/24
    addr6 "$NS_RT" cl0 2001:db8:10::1/64
    local net i
    for net in 100 101 102 103; do
        for i in $(seq 1 16); do
            addr4 "$NS_CL" eth0 "198.18.$net.$i/32"
        done
    done
    for i in $(seq 1 16); do
        addr6 "$NS_CL" eth0 "2001:db8:100::$(printf %x "$i")/128"
    done
    ip -n "$NS_CL" route add default via 198.18.10.1
    ip -n "$NS_CL" -6 route add default via 2001:db8:10::1
    ip -n "$NS_RT" route add 198.18.100.0/22 via 198.18.10.2
    ip -n "$NS_RT" -6 route add 2001:db8:100::/64 via 2001:db8:10::2
    sysctl_set "$NS_RT" net.ipv4.ip_forward 1
    sysctl_set "$NS_RT" net.ipv6.conf.all.forwarding 1
    sysctl_set "$NS_RT" net.ipv4.conf.all.rp_filter 0
    sysctl_set "$NS_RT" net.ipv4.conf.default.rp_filter 0
}

real_servers_up() { # $1 prefix4 (e.g. 198.18.0), $2 prefix6 (e.g. 2001:db8:), $3 gw4, $4 gw6
    local n ns
    for n in 1 2 3; do
        ns=${NS_RS[$((n - 1))]}
        lan_port "$ns" eth0 "rs$n"
        addr4 "$ns" eth0 "$1.1$n/24"
        addr6 "$ns" eth0 "$2:1$n/64"
        ip -n "$ns" route add default via "$3"
        ip -n "$ns" -6 route add default via "$4"
    done
}

vip_on_lo_dr() { # real servers (DR): VIP on lo, do not answer ARP for it
    local ns
    for ns in "${NS_RS[@]}"; do
        sysctl_set "$ns" net.ipv4.conf.all.arp_ignore 1
        sysctl_set "$ns" net.ipv4.conf.all.arp_announce 2
        sysctl_set "$ns" net.ipv4.conf.eth0.arp_ignore 1
        sysctl_set "$ns" net.ipv4.conf.eth0.arp_announce 2
        addr4 "$ns" lo "$VIP4/32"
        addr6 "$ns" lo "$VIP6/128"
    done
}

up_dr() {
    common_up
    # router on the LAN
    lan_port "$NS_RT" lan0 rt
    addr4 "$NS_RT" lan0 198.18.0.1/24
    addr6 "$NS_RT" lan0 2001:db8::1/64
    # director, one arm
    lan_port "$NS_DIR" dr0 dir "$DIR_Q"
    addr4 "$NS_DIR" dr0 198.18.0.2/24
    addr6 "$NS_DIR" dr0 2001:db8::2/64
    ip -n "$NS_DIR" route add default via 198.18.0.1
    ip -n "$NS_DIR" -6 route add default via 2001:db8::1
    sysctl_set "$NS_DIR" net.ipv4.conf.all.arp_ignore 1
    sysctl_set "$NS_DIR" net.ipv4.conf.all.arp_announce 2
    addr4 "$NS_DIR" lo "$VIP4/32"
    addr6 "$NS_DIR" lo "$VIP6/128"
    real_servers_up 198.18.0 2001:db8: 198.18.0.1 2001:db8::1
    vip_on_lo_dr
    ip -n "$NS_RT" route add "$VIP4/32" via 198.18.0.2
    ip -n "$NS_RT" -6 route add "$VIP6/128" via 2001:db8::2
}

up_nat() {
    common_up
    # outside: router <-> director
    veth "$NS_RT" dir0 "$NS_DIR" dr0 "$DIR_Q"
    addr4 "$NS_RT" dir0 198.18.2.1/24
    addr6 "$NS_RT" dir0 2001:db8:2::1/64
    addr4 "$NS_DIR" dr0 198.18.2.2/24
    addr6 "$NS_DIR" dr0 2001:db8:2::2/64
    addr4 "$NS_DIR" dr0 "$VIP4/32"
    addr6 "$NS_DIR" dr0 "$VIP6/128"
    ip -n "$NS_DIR" route add default via 198.18.2.1
    ip -n "$NS_DIR" -6 route add default via 2001:db8:2::1
    ip -n "$NS_RT" route add "$VIP4/32" via 198.18.2.2
    ip -n "$NS_RT" -6 route add "$VIP6/128" via 2001:db8:2::2
    # inside: director <-> real servers
    lan_port "$NS_DIR" dr1 dir "$DIR_Q"
    addr4 "$NS_DIR" dr1 198.18.3.1/24
    addr6 "$NS_DIR" dr1 2001:db8:3::1/64
    sysctl_set "$NS_DIR" net.ipv4.ip_forward 1
    sysctl_set "$NS_DIR" net.ipv6.conf.all.forwarding 1
    real_servers_up 198.18.3 2001:db8:3: 198.18.3.1 2001:db8:3::1
}

csv() { local IFS=,; echo "$*"; }

client_src4() {
    local net i out=()
    for net in 100 101 102 103; do
        for i in $(seq 1 16); do out+=("198.18.$net.$i"); done
    done
    csv "${out[@]}"
}

client_src6() {
    local i out=()
    for i in $(seq 1 16); do out+=("2001:db8:100::$(printf %x "$i")"); done
    csv "${out[@]}"
}

current_mode() {
    if [ -f "$STATE_DIR/mode" ]; then cat "$STATE_DIR/mode"; else echo dr; fi
}

env_lines() {
    local mode=$1
    echo "LAB_MODE=$mode"
    echo "LAB_NS_CLIENT=$NS_CL"
    echo "LAB_NS_ROUTER=$NS_RT"
    echo "LAB_NS_LAN=$NS_LAN"
    echo "LAB_NS_DIR=$NS_DIR"
    echo "LAB_NS_RS=$(csv "${NS_RS[@]}")"
    echo "LAB_VIP4=$VIP4"
    echo "LAB_VIP6=$VIP6"
    echo "LAB_CLIENT_IF=eth0"
    echo "LAB_CLIENT_IP4=198.18.10.2"
    echo "LAB_CLIENT_IP6=2001:db8:10::2"
    echo "LAB_CLIENT_SRC4=$(client_src4)"
    echo "LAB_CLIENT_SRC6=$(client_src6)"
    echo "LAB_RS_IF=eth0"
    if [ "$mode" = nat ]; then
        echo "LAB_DIR_IFS=dr0,dr1"
        echo "LAB_DIR_OUT_IF=dr0"
        echo "LAB_DIR_IN_IF=dr1"
        echo "LAB_DIR_IP4=198.18.2.2"
        echo "LAB_DIR_IP6=2001:db8:2::2"
        echo "LAB_DIR_IN_IP4=198.18.3.1"
        echo "LAB_DIR_IN_IP6=2001:db8:3::1"
        echo "LAB_ROUTER_IP4=198.18.2.1"
        echo "LAB_ROUTER_IP6=2001:db8:2::1"
        echo "LAB_RS_IP4=198.18.3.11,198.18.3.12,198.18.3.13"
        echo "LAB_RS_IP6=2001:db8:3::11,2001:db8:3::12,2001:db8:3::13"
    else
        echo "LAB_DIR_IFS=dr0"
        echo "LAB_DIR_OUT_IF=dr0"
        echo "LAB_DIR_IN_IF=dr0"
        echo "LAB_DIR_IP4=198.18.0.2"
        echo "LAB_DIR_IP6=2001:db8::2"
        echo "LAB_DIR_IN_IP4=198.18.0.2"
        echo "LAB_DIR_IN_IP6=2001:db8::2"
        echo "LAB_ROUTER_IP4=198.18.0.1"
        echo "LAB_ROUTER_IP6=2001:db8::1"
        echo "LAB_RS_IP4=198.18.0.11,198.18.0.12,198.18.0.13"
        echo "LAB_RS_IP6=2001:db8::11,2001:db8::12,2001:db8::13"
    fi
}

summary() {
    local mode=$1
    echo "xdpvs lab up (mode $mode)"
    env_lines "$mode" | grep -v '^LAB_CLIENT_SRC' | sed 's/^/  /'
    echo "  client sources: 198.18.100-103.1-16, 2001:db8:100::1-10"
}

usage() { echo "usage: $0 up [dr|nat] | down | env [dr|nat] | status" >&2; exit 2; }

cmd=${1:-}
case "$cmd" in
up)
    mode=${2:-dr}
    case "$mode" in dr | nat) ;; *) usage ;; esac
    need_tools
    down
    trap 'echo "lab.sh: setup failed, tearing down" >&2; down' ERR
    "up_$mode"
    trap - ERR
    mkdir -p "$STATE_DIR"
    echo "$mode" >"$STATE_DIR/mode"
    summary "$mode"
    ;;
down)
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    down
    ;;
env)
    mode=${2:-$(current_mode)}
    case "$mode" in dr | nat) ;; *) usage ;; esac
    env_lines "$mode"
    ;;
status)
    ip netns list | grep -E '^xdpvs-(cl|rt|lan|dir|rs[0-9])( |$)' || echo "lab is down"
    ;;
*) usage ;;
esac
