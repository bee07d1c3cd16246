#!/usr/bin/env bash
# xdpvs lab: network namespaces for director tests.
#
#   scripts/lab.sh up [dr|nat]   build the lab (tears down an existing one first)
#   scripts/lab.sh down          remove everything (idempotent)
#   scripts/lab.sh env [dr|nat]  print KEY=VALUE lines describing the lab
#   scripts/lab.sh status        list the lab's namespaces
#   scripts/lab.sh ha up|down|env|status
#                                the HA lab (several directors behind an ECMP
#                                router speaking BGP, issue #16): see "HA lab" below
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

# The veth ends facing the director's data interfaces get a program that
# passes every frame (bpf/xdp_pass.o; LAB_XDP_PASS names another copy): on
# veth a frame the director sends with XDP_TX or a redirect (its fast path)
# reaches the other end only when that end has an XDP program. A physical
# NIC needs nothing of the kind.
XDP_PASS_OBJ=${LAB_XDP_PASS:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../bpf/xdp_pass.o}

# xdp_pass NS IF: attach it (native mode).
xdp_pass() {
    [ -f "$XDP_PASS_OBJ" ] || die "$XDP_PASS_OBJ not found (set LAB_XDP_PASS)"
    ip -n "$1" link set dev "$2" xdpdrv obj "$XDP_PASS_OBJ" sec xdp ||
        die "attaching $XDP_PASS_OBJ to $2 in $1 failed"
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
    # No XDP program on rt: a generator sending from lan0 with XDP_TX
    # (xdpvs-loadgen --mode live) needs one there to be received, but it
    # costs every ordinary frame from lan0 a copy (their skbs lack XDP's
    # headroom: the AF_XDP generator lost ~30 %). perf/bench.sh attaches
    # bpf/xdp_pass.o to rt for its live-mode runs only.
    addr4 "$NS_RT" lan0 198.18.0.1/24
    addr6 "$NS_RT" lan0 2001:db8::1/64
    # director, one arm
    lan_port "$NS_DIR" dr0 dir "$DIR_Q"
    xdp_pass "$NS_LAN" dir
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
    xdp_pass "$NS_RT" dir0
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
    xdp_pass "$NS_LAN" dir
    addr4 "$NS_DIR" dr1 198.18.3.1/24
    addr6 "$NS_DIR" dr1 2001:db8:3::1/64
    sysctl_set "$NS_DIR" net.ipv4.ip_forward 1
    sysctl_set "$NS_DIR" net.ipv6.conf.all.forwarding 1
    real_servers_up 198.18.3 2001:db8:3: 198.18.3.1 2001:db8:3::1
}

csv() { local IFS=,; echo "$*"; }

# ---------------------------------------------------------------------------
# HA lab (issue #16): two directors behind an ECMP router, BGP.
# Namespaces xha-* and subnets of their own: runs beside the lab above.
#
#   xha-cl   (clients) eth0 198.18.42.2/24, default via the router;
#            client groups 198.18.52-55.0/24: hosts .1-.16 as /32 on eth0
#   xha-rt   (router)  cl0 198.18.42.1/24, lan0 198.18.40.1/24; FRR (zebra +
#            bgpd, AS 65000) with maximum-paths 8, multipath-relax,
#            timers 1/3; fib_multipath_hash_policy=1 (L4 hash), forwarding on
#   xha-lan  (switch)  bridge br0, ports rt, dir0, dir1, rs1..rs3 (no addresses)
#   xha-dirI (director I = 0, 1) dr0 198.18.40.(2+I)/24, 1 queue, no VIP
#            (arp_ignore=1, arp_announce=2), forwarding off, default via the
#            router; BIRD 2 (AS 65001+I) announces the VIP 198.18.41.100/32
#            from `protocol static vip` (blackhole) to the router, next hop
#            self; `birdc -s DIR/birdI.ctl disable|enable vip` withdraws /
#            announces. xdpvs (not started here) attaches to dr0.
#   xha-rsN  (real servers, N = 1..3) eth0 198.18.40.1N/24, VIP on lo
#            (arp_ignore=1, arp_announce=2), default via the router (DR:
#            replies go straight back through the router)
#
# One L2 segment holds router, directors and real servers: the router's BGP
# next hops (the directors) and the real servers are all on br0, and xdpvs's
# DR forward (a MAC rewrite sent out of the interface it came in on) needs no
# second arm. Path: client -> router -(ECMP over the BGP next hops)->
# director dr0 (XDP -> AF_XDP, MAC rewrite) -> real server -> router -> client.
#
# State (daemon configs, pid files, sockets, logs) lives in $LAB_HA_DIR
# (default /run/xha-lab). `ha down` kills the daemons by their pid files and
# removes the namespaces.

HA_NS_CL=xha-cl
HA_NS_RT=xha-rt
HA_NS_LAN=xha-lan
HA_NS_DIR=(xha-dir0 xha-dir1)
HA_NS_RS=(xha-rs1 xha-rs2 xha-rs3)
HA_ALL_NS=("$HA_NS_CL" "$HA_NS_RT" "$HA_NS_LAN" "${HA_NS_DIR[@]}" "${HA_NS_RS[@]}")
HA_DIR=${LAB_HA_DIR:-/run/xha-lab}
HA_VIP4=198.18.41.100
HA_RT_AS=65000
HA_RT_IP4=198.18.40.1

ha_dir_ip4() { echo "198.18.40.$((2 + $1))"; }

ha_kill_pidfile() { # kill the daemon named by a pid file (bounded wait)
    local f=$1 pid i
    [ -f "$f" ] || return 0
    pid=$(cat "$f" 2>/dev/null || true)
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for i in $(seq 1 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

ha_down() {
    local ns f
    for f in "$HA_DIR"/*.pid "$HA_DIR"/frr/*.pid; do
        [ -e "$f" ] && ha_kill_pidfile "$f"
    done
    for ns in "${HA_ALL_NS[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
}

ha_lan_port() { # NS IF PORT
    veth "$1" "$2" "$HA_NS_LAN" "$3"
    ip -n "$HA_NS_LAN" link set "$3" master br0
}

ha_frr_up() {
    # FRR's daemons run as user frr (Debian's package creates it; the vty
    # group frrvty must hold the user), in a directory that user owns.
    local i d=$HA_DIR/frr
    mkdir -p "$d"
    cat >"$d/zebra.conf" <<CONF
hostname xha-rt
CONF
    {
        echo "frr defaults datacenter"
        echo "hostname xha-rt"
        echo "router bgp $HA_RT_AS"
        echo " bgp router-id $HA_RT_IP4"
        echo " no bgp ebgp-requires-policy"
        echo " bgp bestpath as-path multipath-relax"
        echo " timers bgp 1 3"
        for i in 0 1; do
            echo " neighbor $(ha_dir_ip4 "$i") remote-as $((65001 + i))"
            echo " neighbor $(ha_dir_ip4 "$i") timers connect 1"
            echo " neighbor $(ha_dir_ip4 "$i") advertisement-interval 0"
        done
        echo " address-family ipv4 unicast"
        echo "  maximum-paths 8"
        echo " exit-address-family"
    } >"$d/bgpd.conf"
    chown -R frr:frr "$d"
    nsx "$HA_NS_RT" /usr/lib/frr/zebra -d -u frr -g frr -P 0 -i "$d/zebra.pid" \
        -z "$d/zserv.api" --vty_socket "$d" -f "$d/zebra.conf" \
        --log "file:$d/zebra.log" ||
        die "zebra did not start (see $d/zebra.log)"
    for i in $(seq 1 50); do [ -S "$d/zserv.api" ] && break; sleep 0.1; done
    nsx "$HA_NS_RT" /usr/lib/frr/bgpd -d -u frr -g frr -P 0 -i "$d/bgpd.pid" \
        -z "$d/zserv.api" --vty_socket "$d" -f "$d/bgpd.conf" \
        -l "$HA_RT_IP4" --log "file:$d/bgpd.log" ||
        die "bgpd did not start (see $d/bgpd.log)"
}

ha_bird_up() { # director index
    local i=$1 ip
    ip=$(ha_dir_ip4 "$i")
    cat >"$HA_DIR/bird$i.conf" <<CONF
# Director $i: announce the VIP to the router; \`birdc -s $HA_DIR/bird$i.ctl
# disable vip\` withdraws it, \`enable vip\` announces it again.
log "$HA_DIR/bird$i.log" all;
router id $ip;
protocol device { }
protocol static vip {
    ipv4;
    route $HA_VIP4/32 blackhole;
}
protocol bgp uplink {
    local $ip as $((65001 + i));
    neighbor $HA_RT_IP4 as $HA_RT_AS;
    hold time 3;
    keepalive time 1;
    connect retry time 1;
    error wait time 1, 2;
    ipv4 {
        import none;
        export where proto = "vip";
    };
}
CONF
    nsx "${HA_NS_DIR[$i]}" bird -c "$HA_DIR/bird$i.conf" -s "$HA_DIR/bird$i.ctl" \
        -P "$HA_DIR/bird$i.pid" || die "bird $i did not start"
}

ha_up() {
    local ns i n
    command -v bird >/dev/null || die "bird (Debian package bird2) is required"
    [ -x /usr/lib/frr/bgpd ] || die "FRR (Debian package frr) is required: /usr/lib/frr/bgpd"
    ha_down
    mkdir -p "$HA_DIR"
    for ns in "${HA_ALL_NS[@]}"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        sysctl_set "$ns" net.ipv6.conf.all.disable_ipv6 1
    done
    ip -n "$HA_NS_LAN" link add br0 type bridge
    ip -n "$HA_NS_LAN" link set br0 up

    # clients <-> router
    veth "$HA_NS_CL" eth0 "$HA_NS_RT" cl0
    addr4 "$HA_NS_CL" eth0 198.18.42.2/24
    addr4 "$HA_NS_RT" cl0 198.18.42.1/24
    for n in 52 53 54 55; do
        for i in $(seq 1 16); do addr4 "$HA_NS_CL" eth0 "198.18.$n.$i/32"; done
    done
    ip -n "$HA_NS_CL" route add default via 198.18.42.1
    ip -n "$HA_NS_RT" route add 198.18.52.0/22 via 198.18.42.2

    # router on the LAN
    ha_lan_port "$HA_NS_RT" lan0 rt
    addr4 "$HA_NS_RT" lan0 "$HA_RT_IP4/24"
    sysctl_set "$HA_NS_RT" net.ipv4.ip_forward 1
    sysctl_set "$HA_NS_RT" net.ipv4.conf.all.rp_filter 0
    sysctl_set "$HA_NS_RT" net.ipv4.conf.default.rp_filter 0
    sysctl_set "$HA_NS_RT" net.ipv4.fib_multipath_hash_policy 1

    # directors
    for i in 0 1; do
        ns=${HA_NS_DIR[$i]}
        ha_lan_port "$ns" dr0 "dir$i"
        xdp_pass "$HA_NS_LAN" "dir$i"
        addr4 "$ns" dr0 "$(ha_dir_ip4 "$i")/24"
        ip -n "$ns" route add default via "$HA_RT_IP4"
        sysctl_set "$ns" net.ipv4.conf.all.arp_ignore 1
        sysctl_set "$ns" net.ipv4.conf.all.arp_announce 2
        # No VIP on the director: XDP takes its packets; without xdpvs they
        # are dropped (forwarding off), as a dead host drops them, instead
        # of reset by a kernel that holds the VIP and no listener.
    done

    # real servers (DR)
    for n in 1 2 3; do
        ns=${HA_NS_RS[$((n - 1))]}
        ha_lan_port "$ns" eth0 "rs$n"
        addr4 "$ns" eth0 "198.18.40.1$n/24"
        ip -n "$ns" route add default via "$HA_RT_IP4"
        sysctl_set "$ns" net.ipv4.conf.all.arp_ignore 1
        sysctl_set "$ns" net.ipv4.conf.all.arp_announce 2
        sysctl_set "$ns" net.ipv4.conf.eth0.arp_ignore 1
        sysctl_set "$ns" net.ipv4.conf.eth0.arp_announce 2
        addr4 "$ns" lo "$HA_VIP4/32"
    done

    ha_frr_up
    for i in 0 1; do ha_bird_up "$i"; done
}

ha_env() {
    echo "HA_DIR=$HA_DIR"
    echo "HA_NS_CLIENT=$HA_NS_CL"
    echo "HA_NS_ROUTER=$HA_NS_RT"
    echo "HA_NS_LAN=$HA_NS_LAN"
    echo "HA_NS_DIRS=$(csv "${HA_NS_DIR[@]}")"
    echo "HA_NS_RS=$(csv "${HA_NS_RS[@]}")"
    echo "HA_VIP4=$HA_VIP4"
    echo "HA_ROUTER_IP4=$HA_RT_IP4"
    echo "HA_DIR_IP4=$(ha_dir_ip4 0),$(ha_dir_ip4 1)"
    echo "HA_DIR_IF=dr0"
    echo "HA_DIR_LAN_PORTS=dir0,dir1"
    echo "HA_BIRD_SOCKS=$HA_DIR/bird0.ctl,$HA_DIR/bird1.ctl"
    echo "HA_RS_IP4=198.18.40.11,198.18.40.12,198.18.40.13"
    echo "HA_CLIENT_NETS=198.18.52.0/24,198.18.53.0/24,198.18.54.0/24,198.18.55.0/24"
}

ha_main() {
    case "${1:-}" in
    up)
        need_tools
        # Any failure (a command or `die`) tears the half-built lab down.
        trap 'echo "lab.sh: HA setup failed, tearing down" >&2; ha_down' EXIT
        ha_up
        trap - EXIT
        echo "xdpvs HA lab up"
        ha_env | sed 's/^/  /'
        ;;
    down)
        [ "$(id -u)" -eq 0 ] || die "must run as root"
        ha_down
        # The default state directory is the script's own; a caller's
        # LAB_HA_DIR is the caller's to remove.
        [ "$HA_DIR" != /run/xha-lab ] || rm -rf "$HA_DIR"
        ;;
    env) ha_env ;;
    status)
        ip netns list | grep -E '^xha-' || echo "HA lab is down"
        ;;
    *) usage ;;
    esac
}

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

usage() { echo "usage: $0 up [dr|nat] | down | env [dr|nat] | status | ha up|down|env|status" >&2; exit 2; }

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
ha)
    ha_main "${2:-}"
    ;;
status)
    ip netns list | grep -E '^xdpvs-(cl|rt|lan|dir|rs[0-9])( |$)' || echo "lab is down"
    ;;
*) usage ;;
esac
