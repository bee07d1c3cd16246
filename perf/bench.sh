#!/usr/bin/env bash
# xdpvs side-by-side benchmark (issue #5).
#
#   perf/bench.sh [--quick] [--out DIR] [--rounds N] [--no-build]
#
# Builds the lab (scripts/lab.sh up dr), then sends the same traffic, in
# alternating rounds, through:
#   xdpvs-generic / xdpvs-native  xdpvs run: DR, one fwmark service (UDP+TCP
#                                 ports 10000-10099 of VIP 198.18.0.100), /24
#                                 persistence, 3 real servers, one shard on CPU 1,
#                                 prefault = true, the shard thread SCHED_FIFO;
#                                 its control thread on CPU 1 too (below the
#                                 shard), CPU 0 being the generator's;
#                                 default fast path (flow offload: established
#                                 flows forwarded by the XDP program itself);
#                                 dr0's NAPI threaded, pinned to CPU 1
#   xdpvs-slowpath                xdpvs-native with fast_path = false: every
#                                 packet through AF_XDP and the shard
#   kernel-fwd                    the director namespace routes the VIP to a real
#                                 server (ip_forward, RPS on CPU 1): the physical
#                                 reference
#   nft-dnat                      nftables DNAT to the 3 real servers, conntrack,
#                                 RPS on CPU 1 (IPVS is not built in this kernel)
#   afxdp-bare                    xdpvs-bare: the same XDP filter, AF_XDP runtime and
#                                 shard loop as xdpvs, generic mode, CPU 1, but no
#                                 load-balancing logic (MAC rewrite only): the
#                                 ceiling of the AF_XDP path, to read xdpvs by
#   xdp-drop                      bpf/xdp_drop.o (XDP_DROP) native on dr0, its
#                                 NAPI threaded on CPU 1: the ceiling of the
#                                 fast path's path (generator, bridge, veth, an
#                                 XDP program); rate = dr0's RX packet counter
#   xdp-drop-afxdp                xdp-drop with the AF_XDP generator (phase 1
#                                 only): that generator's own ceiling, for the
#                                 phases that still use it
#
# Traffic: xdpvs-loadgen in the router namespace on lan0 (the LAN side, as
# the router would), pinned to CPU 0, frames addressed to the director's MAC;
# xdpvs-sink (XDP + AF_XDP RX) on the 3 real servers counts, checks sequence
# numbers and checksums, and records one-way latency. The generator runs in
# live-frames mode (--mode live: bpf/loadgen.c run by BPF_PROG_RUN with
# BPF_F_TEST_XDP_LIVE_FRAMES, XDP_TX out of lan0; about twice the AF_XDP
# mode's rate) for the flat-out UDP runs of phase 1, and in AF_XDP mode for
# the rest: fixed rates (a live BPF_PROG_RUN call has a fixed cost of
# ~20-30 ms, so it cannot pace) and TCP (live mode sends UDP only). Live runs
# need an XDP program on the bridge port rt (bpf/xdp_pass.o, attached for
# them only). The LAN bridge runs without bridge netfilter (a switch does not
# run iptables).
#
# Phases: (1) flat out, 64-byte UDP, 16384 flows -> Mpps, drop %, CPU;
# (2) every config at the same offered rate, half of the slowest config's
# maximum -> latency percentiles (.hgrm files); (3) scale: new connections per
# second (unique client SYNs), throughput with all those connections live,
# idle CPU of the director, `xdpvs check` and reload time of a 10,000-service
# / 100,000-real-server config with traffic running (loss counted).
#
# Everything runs in a private mount namespace with its own /run/netns, so
# the lab's namespaces cannot collide with another lab on the machine. The lab
# is torn down and every process stopped on exit (trap). Addresses only from
# 198.18.0.0/15. Every loop is bounded in count and time.
#
# Knobs (environment): BENCH_PERF=1 records CPU 1 with perf around each
# flat-out run ($OUT/perf-*.data); BENCH_FLOW_CAP=N sets xdpvs's
# fast_path_capacity (default: its connection capacity); BENCH_GEN=afxdp,
# BENCH_LAYOUT=b, XDPVS_CTRL_CPU, SHARD_RT, NAPI_RT: see below.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARGS=("$@")
QUICK=0
OUT=""
ROUNDS=""
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1 ;;
    --out) OUT=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --no-build) BUILD=0 ;;
    -h | --help) sed -n '2,64p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" -eq 0 ] || { echo "bench.sh: must run as root" >&2; exit 1; }

# A private mount namespace: our own /run/netns (the lab's names are fixed).
if [ -z "${XDPVS_BENCH_PRIVATE:-}" ]; then
    exec unshare --mount --propagation private env XDPVS_BENCH_PRIVATE=1 "$0" "${ARGS[@]}"
fi
mkdir -p /run/netns
mount -t tmpfs -o size=1M,mode=0755 xdpvs-bench-netns /run/netns

# ---- parameters -----------------------------------------------------------
if [ "$QUICK" = 1 ]; then
    ROUNDS=${ROUNDS:-1}; T_MAX=2; T_LAT=2; T_IDLE=2; CPS_N=100000; RELOAD_T=4
    BIG_SERVICES=10000; BIG_REALS=10
else
    ROUNDS=${ROUNDS:-3}; T_MAX=5; T_LAT=5; T_IDLE=5; CPS_N=2000000; RELOAD_T=10
    BIG_SERVICES=10000; BIG_REALS=10
fi
FLOWS=16384
PORTS=10000-10099
VIP=198.18.0.100
GEN_CPU=0
DIR_CPU=1
CONFIGS=(xdpvs-generic xdpvs-native xdpvs-slowpath kernel-fwd nft-dnat afxdp-bare xdp-drop)
# Every process of the bench (generator, sink, director) and the softirq
# threads run at this nice level, so that other work on a shared machine
# disturbs the measurement less (restored on exit).
NICE=-19
# The shard threads of xdpvs and xdpvs-bare run under SCHED_FIFO at this
# priority (0: normal tasks). The kernel baselines forward in softirq, which
# preempts any task at once; a shard is a task, and woken by a packet it
# waits for the running task's time slice to end (milliseconds when another
# session compiles on the machine): that wait, not the AF_XDP path, was most
# of xdpvs's p99 at the common rate (issue 15).
SHARD_RT=${SHARD_RT:-10}
# The threaded-NAPI kthreads of dr0 (xdpvs configs, xdp-drop) run under
# SCHED_FIFO at the shard's priority: neither preempts the other, each runs
# until it has no work. As normal tasks the real-time shard starved them
# while it set up the 16384 new flows (veth's 256-entry ring overflowed
# before dr0: 1-1.6 % lost at the common rate, p99 3 ms); one above the shard
# (as softirq would be) starved the shard under floods instead (2.5 % lost
# with fast_path = false, live ACKs 0.09 Mpps instead of 0.19). NAPI_RT=0:
# normal tasks.
NAPI_RT=${NAPI_RT:-$SHARD_RT}

STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-$ROOT/perf/results/$STAMP}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RUNS=$OUT/runs.jsonl
: >"$RUNS"
LOG=$OUT/bench.log
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release

say() { echo "== $*" | tee -a "$LOG" >&2; }
die() { echo "bench.sh: $*" | tee -a "$LOG" >&2; exit 1; }

DIR_PID=""
SINK_PID=""
KSOFTIRQD_SAVED=()
AUTOGROUP_SAVED=""
cleanup() {
    set +e
    local e
    [ -n "$AUTOGROUP_SAVED" ] && echo "$AUTOGROUP_SAVED" >/proc/self/autogroup 2>/dev/null
    for e in "${KSOFTIRQD_SAVED[@]}"; do renice -n "${e#*:}" -p "${e%%:*}" >/dev/null 2>&1; done
    [ -n "$SINK_PID" ] && kill -INT "$SINK_PID" 2>/dev/null && sleep 0.3 && kill -KILL "$SINK_PID" 2>/dev/null
    director_stop
    "$ROOT/scripts/lab.sh" down >/dev/null 2>&1
    umount /run/netns 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$ROOT/scripts/deps.sh"
if [ "$BUILD" = 1 ]; then
    say "building (cargo build --release)"
    (cd "$ROOT" && cargo build --release --bin xdpvs --bin xdpvs-loadgen --bin xdpvs-sink --bin xdpvs-bare) >>"$LOG" 2>&1 ||
        die "build failed, see $LOG"
fi
for b in xdpvs xdpvs-loadgen xdpvs-sink xdpvs-bare; do [ -x "$BIN/$b" ] || die "missing $BIN/$b"; done

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# With autogroup scheduling, nice only orders tasks inside one session: raise
# the whole session's group (restored on exit) so other sessions' work on a
# shared machine does not take the director's core away.
if [ -w /proc/self/autogroup ]; then
    AUTOGROUP_SAVED=$(sed 's/.*nice //' /proc/self/autogroup)
    echo "$NICE" >/proc/self/autogroup 2>/dev/null || AUTOGROUP_SAVED=""
fi
for pid in $(pgrep '^ksoftirqd/' || true); do
    KSOFTIRQD_SAVED+=("$pid:$(ps -o ni= -p "$pid" | tr -d ' ')")
    renice -n "$NICE" -p "$pid" >/dev/null 2>&1 || true
done

# ---- lab -------------------------------------------------------------------
say "lab up (dr), results in $OUT"
"$ROOT/scripts/lab.sh" up dr >>"$LOG" 2>&1 || die "lab.sh up dr failed"
DIR_MAC=$(nsx xdpvs-dir cat /sys/class/net/dr0/address)
RS_IPS=(198.18.0.11 198.18.0.12 198.18.0.13)
# Fixed layer 2: permanent neighbours on the director and static bridge
# entries, so nothing floods or re-resolves while the sinks hold the real
# servers' traffic.
RS_MACS=()
for i in 1 2 3; do
    mac=$(nsx "xdpvs-rs$i" cat /sys/class/net/eth0/address)
    RS_MACS+=("$mac")
    ip -n xdpvs-dir neigh replace "198.18.0.1$i" lladdr "$mac" dev dr0 nud permanent
    nsx xdpvs-lan bridge fdb replace "$mac" dev "rs$i" master static
done
nsx xdpvs-lan bridge fdb replace "$DIR_MAC" dev dir master static
nsx xdpvs-lan bridge fdb replace "$(nsx xdpvs-rt cat /sys/class/net/lan0/address)" dev rt master static
# XPS on the bridge port: every frame to the director on queue 0 (xdpvs
# runs one shard, on queue 0). RPS is set per config (use_config).
# CPU layout: veth receive work runs on the sending CPU, so CPU 0 runs the
# generator, the bridge and the director's "NIC" receive (veth, native or
# generic XDP and the copy into the AF_XDP ring for xdpvs; the veth for the
# kernel baselines, whose stack work RPS moves to CPU 1) and the sink; CPU 1
# runs the director's own work (the xdpvs shard and its transmissions; the
# kernel's forwarding / DNAT) and the bridge towards the real servers.
# BENCH_LAYOUT=b moves the bridge (and so all of the director's receive) to
# CPU 1 too (RPS on the bridge port): copy-mode AF_XDP then livelocks, the
# softirq flood running inside the shard's own time slices.
if [ "${BENCH_LAYOUT:-a}" = b ]; then
    nsx xdpvs-lan sh -c "echo $((1 << DIR_CPU)) > /sys/class/net/rt/queues/rx-0/rps_cpus"
fi
nsx xdpvs-lan sh -c 'echo 3 > /sys/class/net/dir/queues/tx-0/xps_cpus; echo 0 > /sys/class/net/dir/queues/tx-1/xps_cpus' 2>>"$LOG" || true
# dr0's GRO as the lab left it (xdpvs-generic turns it on; restored after).
DR0_GRO=$(nsx xdpvs-dir ethtool -k dr0 | awk '/^generic-receive-offload:/ {print $2}')
say "dr0 GRO as built: $DR0_GRO"
nsx xdpvs-dir sysctl -qw net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.dr0.send_redirects=0 >/dev/null
# The LAN switch without bridge netfilter (per namespace): bridged IPv4 went
# through the namespace's (empty) iptables hooks, as no switch does; off, the
# live generator's kernel time per frame fell from 1.4-1.9 to 0.9-1.25 us.
nsx xdpvs-lan sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 \
    net.bridge.bridge-nf-call-arptables=0 >/dev/null 2>>"$LOG" || say "bridge netfilter could not be turned off in xdpvs-lan"

# ---- director configurations ----------------------------------------------
SOCK=$OUT/xdpvs.sock
DIR_CFG=$OUT/director/xdpvs.toml   # its own directory: xdpvs watches it (inotify)
mkdir -p "$OUT/director"

xdpvs_config() { # $1 = generic|native, $2 = extra [director] line (e.g. fast_path = false)
    cat <<EOF
# xdpvs bench config ($1 XDP)
[director]
${2:-# fast_path: the default (on)}
interfaces = ["dr0"]
xdp_mode = "$1"
cores = [$DIR_CPU]
control_socket = "$SOCK"
metrics = "off"
log_level = "info"
conn_capacity = 4194304
${BENCH_FLOW_CAP:+fast_path_capacity = $BENCH_FLOW_CAP}
# Tables faulted in at start: otherwise the first packets of new flows take
# the page faults of a fresh 4M-entry table (~36 % of the shard's time while
# the 16384 flows arrive, a ~100 ms backlog of several ms at 150 kpps).
prefault = true

[[fwmark]]
mark = 1
rules = [ { vip = "$VIP", proto = "udp", ports = "$PORTS" },
          { vip = "$VIP", proto = "tcp", ports = "$PORTS" } ]

[[service]]
name = "bench"
fwmark = 1
scheduler = "rr"
persistence = { timeout = 300, netmask = "255.255.255.0" }
EOF
    local a
    for a in "${RS_IPS[@]}"; do
        printf '  [[service.real]]\n  addr = "%s"\n  forward = "dr"\n' "$a"
    done
}

director_stop() {
    # Threaded NAPI off BEFORE the XDP program goes (set back to 0 after the
    # detach it does not take effect, and the next attach gets unpinned
    # threads).
    napi_unthread
    if [ -n "$DIR_PID" ]; then
        kill -TERM "$DIR_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 100); do
            kill -0 "$DIR_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$DIR_PID" 2>/dev/null || true
        wait "$DIR_PID" 2>/dev/null || true
        DIR_PID=""
    fi
}

# Make the running xdpvs's shard threads SCHED_FIFO ($SHARD_RT): `xdpvs run`
# has no setting for it yet (xdpvs-bare takes --rt-priority).
shard_realtime() {
    [ "$SHARD_RT" -gt 0 ] 2>/dev/null || return 0
    local t
    for t in /proc/"$DIR_PID"/task/*; do
        case "$(cat "$t/comm" 2>/dev/null)" in
        xdpvs-shard-*) chrt -f -p "$SHARD_RT" "${t##*/}" >>"$LOG" 2>&1 || say "chrt failed for ${t##*/}" ;;
        esac
    done
}

# Start a data-path process in the director namespace (its pid in DIR_PID)
# and wait for its "forwarding" line; retry while a just-closed AF_XDP socket
# still holds the queue (EBUSY).
# dir_proc_start NAME LOG COMMAND...
dir_proc_start() {
    local name=$1 log=$2 try i
    shift 2
    for try in 1 2 3; do
        : >"$log"
        rm -f "$OUT/xdpvs.state" # connection state kept across restarts: start empty
        # Not through a shell function: $! must be the process itself
        # (`ip netns exec` execs it).
        ip netns exec xdpvs-dir nice -n "$NICE" "$@" >>"$log" 2>&1 &
        DIR_PID=$!
        for i in $(seq 1 200); do
            grep -q forwarding "$log" && return 0
            kill -0 "$DIR_PID" 2>/dev/null || break
            sleep 0.1
        done
        wait "$DIR_PID" 2>/dev/null || true
        DIR_PID=""
        grep -q "resource busy" "$log" || break
        sleep 1
    done
    die "$name did not start: $(tail -5 "$log")"
}

director_start() { # $1 = generic|native, $2 = log name, $3 = extra [director] line
    xdpvs_config "$1" "${3:-}" >"$DIR_CFG"
    dir_proc_start xdpvs "$OUT/director-$2.log" "$BIN/xdpvs" run --config "$DIR_CFG"
    shard_realtime
    # xdpvs's control thread (the main thread: reloads, stats, the flow
    # cache walk) goes on a core without a shard, which on this 2-core
    # machine is CPU 0: the generator's and the sinks', which stand in for
    # other machines. Everything of the director runs on the director's CPU
    # instead, as the kernel baselines' work does (RPS): the control thread
    # below the real-time shard and NAPI threads, so it takes only what they
    # leave. Otherwise a 10k-service reload (~0.4 s of CPU) starves the
    # generator, whose catch-up bursts overflow veth's 256-frame ring (frames
    # lost before they reach the director). XDPVS_CTRL_CPU=N chooses another
    # CPU; XDPVS_CTRL_CPU= (empty) leaves it where xdpvs put it.
    local ctrl=${XDPVS_CTRL_CPU-$DIR_CPU}
    if [ -n "$ctrl" ]; then
        taskset -pc "$ctrl" "$DIR_PID" >>"$LOG" 2>&1 || say "taskset of the control thread failed"
    fi
}

# Threaded NAPI for dr0, its kthreads (napi/dr0-*) pinned to the director's
# CPU, as the kernel baselines' RPS puts their receive work there: otherwise
# veth's NAPI (native XDP: the program, XDP_TX, the redirect into the AF_XDP
# ring) runs in softirq on the sender's CPU, the generator's. veth has NAPI
# only with a native XDP program (or GRO): in generic mode there is none, and
# generic XDP runs in the sender CPU's backlog (logged).
NAPI_THREADED=0
NAPI_PIDS=()
napi_thread() { # $1 = label for the log
    local t pids=() i before
    # Only the threads this write creates (another lab on the machine may
    # have a dr0 of its own).
    before=" $( (pgrep '^napi/dr0-' || true) | tr '\n' ' ') "
    nsx xdpvs-dir sh -c 'echo 1 > /sys/class/net/dr0/threaded' 2>>"$LOG" || { say "threaded NAPI refused on dr0"; return 0; }
    NAPI_THREADED=1
    for i in $(seq 1 20); do
        mapfile -t pids < <(for t in $(pgrep '^napi/dr0-'); do [[ $before == *" $t "* ]] || echo "$t"; done)
        [ "${#pids[@]}" -gt 0 ] && break
        sleep 0.05
    done
    NAPI_PIDS=("${pids[@]}")
    if [ "${#pids[@]}" = 0 ]; then
        echo "   $1: no napi/dr0-* threads (no veth NAPI in this mode): XDP runs where the sender runs" | tee -a "$LOG" >&2
        return 0
    fi
    for t in "${pids[@]}"; do
        taskset -pc "$DIR_CPU" "$t" >>"$LOG" 2>&1 || say "taskset failed for napi thread $t"
        renice -n "$NICE" -p "$t" >/dev/null 2>&1 || true
        if [ "$NAPI_RT" -gt 0 ] 2>/dev/null; then
            chrt -f -p "$NAPI_RT" "$t" >>"$LOG" 2>&1 || say "chrt failed for napi thread $t"
        fi
    done
    echo "   $1: threaded NAPI on dr0: $(for t in "${pids[@]}"; do printf '%s(pid %s, cpus %s, %s) ' "$(cat /proc/"$t"/comm)" "$t" "$(taskset -pc "$t" | sed 's/.*: //')" "$(chrt -p "$t" | head -1 | sed 's/.*: //')"; done)" | tee -a "$LOG" >&2
}
napi_unthread() {
    [ "$NAPI_THREADED" = 1 ] || return 0
    nsx xdpvs-dir sh -c 'echo 0 > /sys/class/net/dr0/threaded' 2>>"$LOG" || true
    NAPI_THREADED=0
    NAPI_PIDS=()
}
# CPU time (ns) of the napi threads (0 without).
napi_cpu_ns() {
    local t s=0 v
    for t in "${NAPI_PIDS[@]}"; do
        v=$(cut -d' ' -f1 /proc/"$t"/schedstat 2>/dev/null || echo 0)
        s=$((s + v))
    done
    echo "$s"
}
dr0_rx() { nsx xdpvs-dir cat /sys/class/net/dr0/statistics/rx_packets; }

# The bare AF_XDP forwarder (perf/bare): xdpvs's XDP filter, AF_XDP runtime
# and worker loop with no load-balancing logic, in the director's place.
bare_start() {
    local macs
    macs=$(IFS=,; echo "${RS_MACS[*]}")
    local rt=()
    if [ "$SHARD_RT" -gt 0 ] 2>/dev/null; then rt=(--rt-priority "$SHARD_RT"); fi
    dir_proc_start xdpvs-bare "$OUT/bare.log" "$BIN/xdpvs-bare" --iface dr0 --mode generic \
        --cpu "$DIR_CPU" --vip "$VIP" --ports "$PORTS" --to "$macs" "${rt[@]}"
}

# RPS mask of the director's interface (0 = off).
rps() {
    nsx xdpvs-dir sh -c "for q in /sys/class/net/dr0/queues/rx-*; do echo $1 > \$q/rps_cpus; done"
}

# Neutral director namespace: what lab.sh built (VIP on lo, no forwarding).
dir_neutral() {
    director_stop
    nsx xdpvs-dir nft delete table ip xdpvs_bench 2>/dev/null || true
    ip -n xdpvs-dir link set dev dr0 xdpdrv off 2>/dev/null || true
    nsx xdpvs-dir ethtool -K dr0 gro "$DR0_GRO" >/dev/null 2>&1 || true
    ip -n xdpvs-dir route del "$VIP/32" 2>/dev/null || true
    ip -n xdpvs-dir addr replace "$VIP/32" dev lo
    nsx xdpvs-dir sysctl -qw net.ipv4.ip_forward=0 >/dev/null
}

CUR=""
use_config() { # $1 = one of CONFIGS
    [ "$CUR" = "$1" ] && return 0
    dir_neutral
    # RPS puts the kernel baselines' receive work on CPU 1 (without it veth
    # receive runs on the sender's CPU and they use one core). xdpvs brings
    # its own thread on CPU 1: with RPS its generic-XDP softirq would compete
    # with it on that core, so xdpvs runs without (as an AF_XDP application
    # on a NIC whose interrupts are on another core).
    case "$1" in
    xdpvs-generic)
        # veth has NAPI without a native program only with GRO on: then
        # generic XDP (and the copy into the AF_XDP ring, and XDP_TX) runs in
        # that NAPI's poll, which threaded NAPI moves to CPU 1 as well.
        rps 0
        nsx xdpvs-dir ethtool -K dr0 gro on >/dev/null 2>>"$LOG" || say "GRO on dr0 refused"
        director_start generic generic
        napi_thread "$1"
        ;;
    xdpvs-native) rps 0; director_start native native; napi_thread "$1" ;;
    xdpvs-slowpath) rps 0; director_start native slowpath "fast_path = false"; napi_thread "$1" ;;
    xdp-drop)
        rps 0
        ip -n xdpvs-dir link set dev dr0 xdpdrv obj "$ROOT/bpf/xdp_drop.o" sec xdp || die "attaching xdp_drop.o to dr0 failed"
        napi_thread "$1"
        ;;
    afxdp-bare) rps 0; bare_start ;;
    kernel-fwd)
        rps $((1 << DIR_CPU))
        ip -n xdpvs-dir addr del "$VIP/32" dev lo
        ip -n xdpvs-dir route add "$VIP/32" via "${RS_IPS[0]}" dev dr0
        nsx xdpvs-dir sysctl -qw net.ipv4.ip_forward=1 >/dev/null
        ;;
    nft-dnat)
        rps $((1 << DIR_CPU))
        ip -n xdpvs-dir addr del "$VIP/32" dev lo
        nsx xdpvs-dir sysctl -qw net.ipv4.ip_forward=1 >/dev/null
        nsx xdpvs-dir nft -f - <<EOF
table ip xdpvs_bench {
    chain pre {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr $VIP meta l4proto { tcp, udp } th dport $PORTS dnat to numgen inc mod 3 map { 0 : ${RS_IPS[0]}, 1 : ${RS_IPS[1]}, 2 : ${RS_IPS[2]} }
    }
    chain post {
        type nat hook postrouting priority srcnat; policy accept;
    }
}
EOF
        nsx xdpvs-dir conntrack -F >/dev/null 2>&1 || true
        ;;
    *) die "unknown config $1" ;;
    esac
    CUR=$1
}

# ---- measuring -------------------------------------------------------------
cpu_snap() { grep -E '^cpu[0-9]+ ' /proc/stat; }

# CPU time (ns) of the director process, all threads.
dir_cpu_ns() {
    [ -n "$DIR_PID" ] || { echo 0; return; }
    cat /proc/"$DIR_PID"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%d\n", s}'
}

RUN_ID=0
# The router's bridge port rt must have an XDP program to receive the live
# generator's XDP_TX frames from lan0 (lab.sh attaches none), and should not
# have one for the AF_XDP generator: its frames arrive as skbs without XDP's
# headroom and are copied (~30 % of that generator's rate).
RT_XDP=off
rt_xdp() { # $1 = live | afxdp
    local want=off
    [ "$1" = live ] && want=on
    [ "$want" = "$RT_XDP" ] && return 0
    if [ "$want" = on ]; then
        ip -n xdpvs-lan link set dev rt xdpdrv obj "$ROOT/bpf/xdp_pass.o" sec xdp || die "attaching xdp_pass.o to rt failed"
    else
        ip -n xdpvs-lan link set dev rt xdpdrv off || die "detaching rt's XDP program failed"
    fi
    RT_XDP=$want
}
# The generator's mode for measure(): live (phase 1, UDP flat out) or afxdp.
# BENCH_GEN=afxdp runs phase 1 with the AF_XDP generator too (the figures
# before the live mode, for comparison).
GEN_MODE=afxdp
PHASE1_GEN=${BENCH_GEN:-live}
case $PHASE1_GEN in live | afxdp) ;; *) die "BENCH_GEN must be live or afxdp" ;; esac
# measure CONFIG PHASE RATE SECS COUNT PROTO FLOWS [extra loadgen args...]
# Appends one JSON line to $RUNS.
measure() {
    local cfg=$1 phase=$2 rate=$3 secs=$4 count=$5 proto=$6 flows=$7
    shift 7
    RUN_ID=$((RUN_ID + 1))
    local tag="$phase-$cfg-$RUN_ID"
    local sj=$OUT/$tag.sink.json hg=$OUT/$tag.hgrm so=$OUT/$tag.sink.out
    local fa=$OUT/$tag.stats-a.json fb=$OUT/$tag.stats-b.json
    local i
    if [[ $cfg == xdp-drop* ]]; then
        # Nothing is delivered: no sink; the rate is dr0's RX counter.
        echo '{"unique": 0, "lat_us": null, "reordered": 0, "duplicates": 0, "bad_csum": 0, "xsk_drops": 0, "ports": []}' >"$sj"
        hg=""
    else
        nice -n "$NICE" "$BIN/xdpvs-sink" --cpu "$GEN_CPU" --netns xdpvs-rs1,xdpvs-rs2,xdpvs-rs3 --ports "$PORTS" \
            --run-id "$RUN_ID" --duration "$((secs + 20))" --idle-exit 0.5 \
            --json "$sj" --hgrm "$hg" --timeline "$OUT/$tag.timeline" >"$so" 2>&1 &
        SINK_PID=$!
        for i in $(seq 1 100); do
            grep -q ready "$so" 2>/dev/null && break
            kill -0 "$SINK_PID" 2>/dev/null || die "sink failed: $(cat "$so")"
            sleep 0.1
        done
        grep -q ready "$so" || die "sink not ready after 10 s"
    fi
    rt_xdp "$GEN_MODE"
    echo '{}' >"$fa"
    echo '{}' >"$fb"
    case $cfg in xdpvs-*) nsx xdpvs-dir "$BIN/xdpvs" stats --json -s "$SOCK" >"$fa" 2>>"$LOG" || true ;; esac
    local c0 c1 d0 d1 lj r0 r1 n0 n1
    r0=$(dr0_rx)
    n0=$(napi_cpu_ns)
    c0=$(cpu_snap)
    d0=$(dir_cpu_ns)
    local perf_pid=""
    if [ -n "${BENCH_PERF:-}" ] && [ "$phase" = max ]; then
        # BENCH_PERF=1: where the director's CPU goes during the flat-out run
        # (perf record -g on that CPU while the generator runs, its start-up
        # included: read the samples outside the idle loop; report with
        # perf report -i FILE --no-children).
        perf record -q -C "$DIR_CPU" -g -o "$OUT/perf-$tag.data" >>"$LOG" 2>&1 &
        perf_pid=$!
    fi
    lj=$(timeout $((secs + 15)) ip netns exec xdpvs-rt nice -n "$NICE" "$BIN/xdpvs-loadgen" --iface lan0 \
        --dst-mac "$DIR_MAC" --dst "$VIP" --dst-ports "$PORTS" --src 198.18.100.0/22 \
        --flows "$flows" --proto "$proto" --rate "$rate" --count "$count" --duration "$secs" \
        --run-id "$RUN_ID" --cpu "$GEN_CPU" --mode "$GEN_MODE" "$@" 2>>"$LOG") || die "loadgen failed ($tag)"
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
    fi
    c1=$(cpu_snap)
    d1=$(dir_cpu_ns)
    n1=$(napi_cpu_ns)
    if [ -n "$SINK_PID" ]; then
        for i in $(seq 1 $(((secs + 20) * 10))); do
            kill -0 "$SINK_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -INT "$SINK_PID" 2>/dev/null || true
        wait "$SINK_PID" 2>/dev/null || true
        SINK_PID=""
    else
        sleep 0.5
    fi
    r1=$(dr0_rx)
    case $cfg in xdpvs-*) nsx xdpvs-dir "$BIN/xdpvs" stats --json -s "$SOCK" >"$fb" 2>>"$LOG" || true ;; esac
    [ -s "$sj" ] || die "sink wrote no summary ($tag): $(cat "$so")"
    python3 - "$cfg" "$phase" "$tag" "$hg" "$lj" "$sj" "$d0" "$d1" "$GEN_CPU" "$DIR_CPU" \
        "$c0" "$c1" "$r0" "$r1" "$n0" "$n1" "$fa" "$fb" >>"$RUNS" <<'PY'
import json, sys
cfg, phase, tag, hg, lj, sj, d0, d1, gcpu, dcpu, c0, c1, r0, r1, n0, n1, fa, fb = sys.argv[1:19]
gen = json.loads(lj)
sink = json.load(open(sj))
def fp(p):
    try:
        return json.load(open(p)).get("fast_path") or {}
    except Exception:
        return {}
fpa, fpb = fp(fa), fp(fb)
def cpus(s):
    out = {}
    for line in s.splitlines():
        f = line.split()
        v = list(map(int, f[1:9]))
        out[f[0]] = (sum(v), v[3] + v[4], v[5] + v[6])
    return out
a, b = cpus(c0), cpus(c1)
def busy(c):
    c = "cpu%s" % c
    t = b[c][0] - a[c][0]
    i = b[c][1] - a[c][1]
    return 100.0 * (t - i) / t if t > 0 else 0.0
def soft(c):
    c = "cpu%s" % c
    t = b[c][0] - a[c][0]
    return 100.0 * (b[c][2] - a[c][2]) / t if t > 0 else 0.0
secs = gen["secs"] or 1e-9
dr0_rx = int(r1) - int(r0)
# xdp-drop delivers nothing: its rate is what reached dr0 (its RX counter;
# with native XDP on veth that counts every frame the program saw).
got = dr0_rx if cfg.startswith("xdp-drop") else sink["unique"]
rec = {
    "config": cfg, "phase": phase, "tag": tag, "hgrm": hg,
    "sent": gen["sent"], "received": got, "secs": secs, "gen_mode": gen.get("mode", "afxdp"),
    "offered_pps": gen["sent"] / secs, "pps": got / secs,
    "drop_pct": 100.0 * (1 - got / gen["sent"]) if gen["sent"] else 0.0,
    "dr0_rx": dr0_rx,
    "lat_us": sink["lat_us"], "reordered": sink["reordered"], "duplicates": sink["duplicates"],
    "bad_csum": sink["bad_csum"], "sink_xsk_drops": sink["xsk_drops"],
    "gen_cpu_pct": busy(gcpu), "gen_softirq_pct": soft(gcpu),
    "dir_cpu_pct": busy(dcpu), "dir_softirq_pct": soft(dcpu),
    "xdpvs_cpu_pct": (int(d1) - int(d0)) / 1e7 / secs if int(d1) > 0 else None,
    # the napi/dr0-* kthreads (threaded NAPI, pinned to the director's CPU)
    "napi_cpu_pct": (int(n1) - int(n0)) / 1e7 / secs if int(n1) > 0 else None,
    "per_rs": [p["received"] for p in sink["ports"]],
}
# The timeline (per 10 ms of send time: packets, p50, max): when the tail
# happened. warm_ms = end of the last 10 ms with a p50 above 200 us (0: none);
# max_after_us = the largest latency from 500 ms on (every flow long
# established by then at the bench's rates).
try:
    tl = [list(map(int, l.split())) for l in open(sj.replace(".sink.json", ".timeline")) if l[0] != "#"]
    hot = [b[0] + 10 for b in tl if b[1] and b[2] > 200]
    rec["warm_ms"] = max(hot) if hot else 0
    rec["max_after_us"] = max([b[3] for b in tl if b[0] >= 500 and b[1]] or [0])
except Exception:
    pass
if fpa or fpb:
    rec["fast_pkts"] = fpb.get("packets", 0) - fpa.get("packets", 0)
    rec["slow_pkts"] = fpb.get("slow_packets", 0) - fpa.get("slow_packets", 0)
    rec["fast_installs"] = fpb.get("installs", 0) - fpa.get("installs", 0)
    rec["fast_install_failed"] = fpb.get("install_failed", 0) - fpa.get("install_failed", 0)
    rec["fast_path_on"] = fpb.get("on")
print(json.dumps(rec))
PY
    tail -1 "$RUNS" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
l = r["lat_us"] or {"p50": float("nan"), "p99": float("nan")}
x = r["xdpvs_cpu_pct"]
n = r["napi_cpu_pct"]
fp = ""
if "fast_pkts" in r:
    t = r["fast_pkts"] + r["slow_pkts"]
    fp = "  fast %d slow %d (%.1f%% fast)" % (r["fast_pkts"], r["slow_pkts"], 100.0 * r["fast_pkts"] / t if t else 0.0)
print("   %-14s %-6s offered %6.3f Mpps  %s %6.3f Mpps  drop %5.2f%%  p50 %7.1f us  p99 %8.1f us  cpu0 %3.0f%% (softirq %3.0f%%)  cpu1 %3.0f%% (softirq %3.0f%%, xdpvs %s, napi %s)  per-rs %s%s" % (
    r["config"], r["phase"], r["offered_pps"] / 1e6, "dr0 rx   " if r["config"].startswith("xdp-drop") else "delivered", r["pps"] / 1e6,
    r["drop_pct"], l["p50"], l["p99"], r["gen_cpu_pct"], r["gen_softirq_pct"], r["dir_cpu_pct"],
    r["dir_softirq_pct"], "-" if x is None else "%.0f%%" % x, "-" if n is None else "%.0f%%" % n, r["per_rs"], fp)
    + ("  [p50 > 200 us until %d ms; max after 500 ms %d us]" % (r["warm_ms"], r["max_after_us"]) if "warm_ms" in r else ""))' | tee -a "$LOG" >&2
}

# ---- phase 1: maximum throughput ---------------------------------------------
say "machine: $(uname -r), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
IDLE_JSON=$OUT/idle.json
echo '{}' >"$IDLE_JSON"
idle_measure() { # the running xdpvs's own CPU use with no traffic
    local mode=$1 n0 n1 t0 t1
    sleep 1
    n0=$(dir_cpu_ns); t0=$(date +%s%N)
    sleep "$T_IDLE"
    n1=$(dir_cpu_ns); t1=$(date +%s%N)
    python3 - "$IDLE_JSON" "$mode" "$n0" "$n1" "$t0" "$t1" <<'PY'
import json, sys
p, mode, n0, n1, t0, t1 = sys.argv[1:7]
d = json.load(open(p))
d[mode] = 100.0 * (int(n1) - int(n0)) / (int(t1) - int(t0))
json.dump(d, open(p, "w"))
print("   idle CPU of xdpvs (%s): %.3f%% of a core" % (mode, d[mode]))
PY
}

say "phase 1: flat out, 64-byte UDP, $FLOWS flows, ${T_MAX}s per run, $ROUNDS round(s)"
for r in $(seq 1 "$ROUNDS"); do
    for cfg in "${CONFIGS[@]}"; do
        use_config "$cfg"
        if [ "$r" = 1 ] && [[ $cfg == xdpvs-* ]]; then
            idle_measure "${cfg#xdpvs-}" 2>&1 | tee -a "$LOG" >&2
        fi
        GEN_MODE=$PHASE1_GEN measure "$cfg" max 0 "$T_MAX" $((T_MAX * 5000000)) udp "$FLOWS"
        if [ "$cfg" = xdp-drop ]; then
            # The AF_XDP generator's own ceiling (the mode of the other phases).
            measure xdp-drop-afxdp max 0 "$T_MAX" $((T_MAX * 5000000)) udp "$FLOWS"
        fi
    done
done

LAT_RATE=$(python3 - "$RUNS" <<'PY'
import json, sys, statistics
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in runs:
    if r["phase"] == "max" and not r["config"].startswith("xdp-drop"):
        by.setdefault(r["config"], []).append(r["pps"])
slowest = min(statistics.median(v) for v in by.values())
print(max(10000, int(slowest / 2 / 1000) * 1000))
PY
)

# ---- phase 2: latency at the same offered rate --------------------------------
say "phase 2: every config at $LAT_RATE pps (half of the slowest maximum), ${T_LAT}s per run"
# Where xdpvs loses frames at this rate: its own counters (drops by reason,
# and the I/O losses below the engine) around each run.
xdpvs_losses() { # $1 = stats before, $2 = stats after, $3 = label
    python3 - "$1" "$2" "$3" <<'PY' | tee -a "$LOG" >&2
import json, sys
def load(p):
    try:
        s = json.load(open(p))
    except Exception:
        return {}
    t = {}
    for sh in s.get("shards", []):
        for k in ("rx", "tx", "handoff_out", "passed_unhandled"):
            t[k] = t.get(k, 0) + sh.get(k, 0)
        for k, v in sh.get("dropped", []) + sh.get("io_loss", []):
            t[k] = t.get(k, 0) + v
    return t
a, b = load(sys.argv[1]), load(sys.argv[2])
d = {k: b.get(k, 0) - a.get(k, 0) for k in b if b.get(k, 0) != a.get(k, 0)}
print("   xdpvs counters during %s: %s" % (sys.argv[3], " ".join("%s=%d" % kv for kv in sorted(d.items())) or "none"))
PY
}
for r in $(seq 1 "$ROUNDS"); do
    for cfg in "${CONFIGS[@]}"; do
        [ "$cfg" = xdp-drop ] && continue # delivers nothing: no latency
        use_config "$cfg"
        case $cfg in xdpvs-*)
            nsx xdpvs-dir "$BIN/xdpvs" stats --json -s "$SOCK" >"$OUT/stats-lat-a.json" 2>>"$LOG" || true ;;
        esac
        measure "$cfg" lat "$LAT_RATE" "$T_LAT" $((LAT_RATE * T_LAT + 1)) udp "$FLOWS"
        case $cfg in xdpvs-*)
            nsx xdpvs-dir "$BIN/xdpvs" stats --json -s "$SOCK" >"$OUT/stats-lat-b.json" 2>>"$LOG" || true
            xdpvs_losses "$OUT/stats-lat-a.json" "$OUT/stats-lat-b.json" "$cfg lat round $r" ;;
        esac
    done
done

# ---- phase 3: scale ----------------------------------------------------------
conn_count() { # $1 = label: the running xdpvs's connection table size -> $OUT/conns-$1.json
    nsx xdpvs-dir "$BIN/xdpvs" stats --json -s "$SOCK" >"$OUT/stats-$1.json" 2>>"$LOG" || true
    python3 - "$OUT/stats-$1.json" "$1" "$OUT/conns-$1.json" <<'PY' | tee -a "$LOG" >&2
import json, sys
try:
    s = json.load(open(sys.argv[1]))
    c = sum(x.get("conns", 0) for x in s.get("shards", []))
    t = sum(x.get("templates", 0) for x in s.get("shards", []))
    json.dump({"conns": c, "templates": t}, open(sys.argv[3], "w"))
    print("   xdpvs connection table after %s: %d connections, %d templates" % (sys.argv[2], c, t))
except Exception as e:
    print("   (no stats: %s)" % e)
PY
}

say "phase 3: $CPS_N new connections (unique client SYNs), then ACKs over all of them"
for cfg in xdpvs-native nft-dnat kernel-fwd; do
    CUR="" # a fresh director / empty conntrack for each
    use_config "$cfg"
    measure "$cfg" cps 0 30 "$CPS_N" syn "$CPS_N"
    if [ "$cfg" = xdpvs-native ]; then
        conn_count cps
        # The same SYNs again at a rate it carries, so that every flow has
        # its connection; then ACKs flat out over all of them.
        measure "$cfg" fill "$LAT_RATE" $((CPS_N / LAT_RATE + 3)) "$CPS_N" syn "$CPS_N"
        conn_count fill
        measure "$cfg" live 0 30 "$((CPS_N * 2))" ack "$CPS_N"
    fi
done

say "phase 3: reload of $BIG_SERVICES services / $((BIG_SERVICES * BIG_REALS)) real servers under traffic"
use_config xdpvs-native
BIG=$OUT/big.toml
python3 - "$DIR_CFG" "$BIG_SERVICES" "$BIG_REALS" >"$BIG" <<'PY'
import sys
base, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = [open(base).read()]
# VIPs 198.18.32.0 - 198.18.63.255 (ports 80..), reals 198.19.0.0/16: all in 198.18.0.0/15.
for i in range(n):
    vip = "198.18.%d.%d" % (32 + (i // 3) // 256, (i // 3) % 256)
    port = 80 + i % 3
    out.append('[[service]]\nname = "s%d"\nproto = "tcp"\nvip = "%s"\nport = %d\nscheduler = "wrr"\n' % (i, vip, port))
    for j in range(k):
        r = (i * k + j) % 65536
        out.append('  [[service.real]]\n  addr = "198.19.%d.%d"\n  weight = %d\n  forward = "dr"\n' % (r // 256, r % 256, 1 + j % 3))
print("\n".join(out))
PY
RELOAD_JSON=$OUT/reload.json
t0=$(date +%s%N)
nsx xdpvs-dir "$BIN/xdpvs" check --config "$BIG" >"$OUT/big-check.out" 2>&1 || die "xdpvs check of the big config failed: $(tail -3 "$OUT/big-check.out")"
t1=$(date +%s%N)
CHECK_S=$(python3 -c "print(($t1 - $t0) / 1e9)")
echo "   xdpvs check (big config): ${CHECK_S}s" | tee -a "$LOG" >&2
# Traffic at the latency rate for RELOAD_T seconds; reloads in the middle.
(
    sleep 1
    cp "$DIR_CFG" "$OUT/small.toml"
    a=$(date +%s%N)
    nsx xdpvs-dir "$BIN/xdpvs" reload -s "$SOCK" >"$OUT/reload0.out" 2>&1 # same config
    b=$(date +%s%N)
    cp "$BIG" "$DIR_CFG.tmp" && mv "$DIR_CFG.tmp" "$DIR_CFG" # inotify: reload after 200 ms
    for i in $(seq 1 300); do
        grep -q "10001 service" "$OUT/director-native.log" && break
        sleep 0.05
    done
    c=$(date +%s%N)
    nsx xdpvs-dir "$BIN/xdpvs" reload -s "$SOCK" >"$OUT/reload1.out" 2>&1 # big again, explicit
    d=$(date +%s%N)
    cp "$OUT/small.toml" "$DIR_CFG.tmp" && mv "$DIR_CFG.tmp" "$DIR_CFG"
    sleep 0.5
    e=$(date +%s%N)
    nsx xdpvs-dir "$BIN/xdpvs" reload -s "$SOCK" >"$OUT/reload2.out" 2>&1 # back to small
    f=$(date +%s%N)
    python3 -c "import json; print(json.dumps({'small_s': ($b-$a)/1e9, 'big_s': ($d-$c)/1e9, 'big_to_small_s': ($f-$e)/1e9}))" >"$RELOAD_JSON"
) &
RELOADER=$!
measure xdpvs-native reload "$LAT_RATE" "$RELOAD_T" $((LAT_RATE * RELOAD_T + 1)) udp "$FLOWS"
wait "$RELOADER" || true
grep -E "reload \(" "$OUT/director-native.log" | tail -6 >>"$LOG" || true
python3 - "$RELOAD_JSON" "$CHECK_S" <<'PY' | tee -a "$LOG" >&2
import json, sys
try:
    r = json.load(open(sys.argv[1]))
    print("   reload: small %.3fs, 10k/100k config %.3fs, back to small %.3fs (check %.2fs)" % (
        r["small_s"], r["big_s"], r["big_to_small_s"], float(sys.argv[2])))
except Exception as e:
    print("   reload timing missing: %s" % e)
PY
dir_neutral

# ---- report ------------------------------------------------------------------
python3 - "$RUNS" "$IDLE_JSON" "$RELOAD_JSON" "$CHECK_S" "$LAT_RATE" "$OUT" <<'PY' | tee "$OUT/report.txt"
import json, sys, statistics as st
runs_p, idle_p, reload_p, check_s, lat_rate, out = sys.argv[1:7]
runs = [json.loads(l) for l in open(runs_p) if l.strip()]
idle = json.load(open(idle_p))
try:
    rel = json.load(open(reload_p))
except Exception:
    rel = {}
configs = ["xdpvs-generic", "xdpvs-native", "xdpvs-slowpath", "kernel-fwd", "nft-dnat", "afxdp-bare", "xdp-drop", "xdp-drop-afxdp"]
lat_configs = [c for c in configs if not c.startswith("xdp-drop")]
def med(xs):
    return st.median(xs) if xs else float("nan")
def pick(phase, cfg):
    return [r for r in runs if r["phase"] == phase and r["config"] == cfg]
print()
print("Phase 1: flat out (64-byte UDP, 16384 flows), median of %d round(s)" % len(pick("max", "kernel-fwd")))
print("(xdp-drop delivers nothing: its Mpps is what reached dr0, dr0's RX packet counter; phase 1's generator: %s, xdp-drop-afxdp: AF_XDP)" % (
    ",".join(sorted({r.get("gen_mode", "afxdp") for r in runs if r["phase"] == "max" and r["config"] != "xdp-drop-afxdp"})) or "?"))
print("%-14s %8s %8s %7s %8s %8s %8s %8s %8s %8s" % ("config", "offered", "Mpps", "drop%", "cpu1%", "softirq1%", "xdpvs%", "napi%", "cpu0%", "softirq0%"))
mx = {}
def medo(rs, k):
    xs = [r.get(k) for r in rs if r.get(k) is not None]
    return "%.0f" % med(xs) if xs else "-"
for c in configs:
    rs = pick("max", c)
    mx[c] = med([r["pps"] for r in rs]) / 1e6
    print("%-14s %8.3f %8.3f %7.2f %8.0f %8.0f %8s %8s %8.0f %8.0f" % (c, med([r["offered_pps"] for r in rs]) / 1e6, mx[c],
          med([r["drop_pct"] for r in rs]), med([r["dir_cpu_pct"] for r in rs]), med([r["dir_softirq_pct"] for r in rs]),
          medo(rs, "xdpvs_cpu_pct"), medo(rs, "napi_cpu_pct"), med([r["gen_cpu_pct"] for r in rs]),
          med([r["gen_softirq_pct"] for r in rs])))
print()
print("Fast path (xdpvs stats, packets during each run: fast = forwarded by the XDP program, slow = through AF_XDP and the shard)")
fast_share = {}
for c in ["xdpvs-generic", "xdpvs-native", "xdpvs-slowpath"]:
    for ph in ["max", "lat"]:
        rs = [r for r in pick(ph, c) if "fast_pkts" in r]
        if not rs:
            continue
        f = sum(r["fast_pkts"] for r in rs)
        sl = sum(r["slow_pkts"] for r in rs)
        fast_share[(c, ph)] = 100.0 * f / (f + sl) if f + sl else 0.0
        print("  %-14s %-4s fast %10d  slow %10d  (%5.1f%% fast; installs %d, install_failed %d; per run: %s)" % (
            c, ph, f, sl, fast_share[(c, ph)], sum(r["fast_installs"] for r in rs), sum(r["fast_install_failed"] for r in rs),
            " ".join("%d/%d" % (r["fast_pkts"], r["slow_pkts"]) for r in rs)))
print()
print("Phase 2: latency at the same offered rate, %s pps (half of the slowest maximum); one-way, us" % lat_rate)
print("%-14s %8s %7s %8s %8s %8s %8s %9s %8s %8s" % ("config", "Mpps", "drop%", "p50", "p90", "p99", "p99.9", "max", "cpu1%", "xdpvs%"))
p99 = {}
for c in lat_configs:
    rs = pick("lat", c)
    L = lambda k: med([r["lat_us"][k] for r in rs])
    p99[c] = L("p99")
    xc = [r["xdpvs_cpu_pct"] for r in rs if r["xdpvs_cpu_pct"] is not None]
    print("%-14s %8.3f %7.2f %8.1f %8.1f %8.1f %8.1f %9.1f %8.0f %8s" % (c, med([r["pps"] for r in rs]) / 1e6,
          med([r["drop_pct"] for r in rs]), L("p50"), L("p90"), L("p99"), L("p999"), L("max"), med([r["dir_cpu_pct"] for r in rs]),
          "%.0f" % med(xc) if xc else "-"))
    for r in rs:
        print("%-14s   histogram: %s; p50 above 200 us until %s ms of the run, max after 500 ms %s us" % (
            "", r["hgrm"], r.get("warm_ms", "?"), r.get("max_after_us", "?")))
print()
print("Phase 3: scale")
for c in ["xdpvs-native", "nft-dnat", "kernel-fwd"]:
    for r in pick("cps", c):
        print("  %-14s new connections/s (unique SYNs): %8.0f  (%d sent, drop %.2f%%)" % (c, r["pps"], r["sent"], r["drop_pct"]))
def conns(label):
    try:
        return json.load(open("%s/conns-%s.json" % (out, label)))["conns"]
    except Exception:
        return -1
print("  %-14s connections in the table after the flood: %d; after the same SYNs again at %s pps: %d" % (
    "xdpvs-native", conns("cps"), lat_rate, conns("fill")))
for r in pick("live", "xdpvs-native"):
    print("  %-14s ACKs over %d live connections, flat out: %.3f Mpps, drop %.2f%%" % ("xdpvs-native", conns("fill"), r["pps"] / 1e6, r["drop_pct"]))
for mode, v in sorted(idle.items()):
    print("  xdpvs-%-8s idle CPU: %.3f%% of a core" % (mode, v))
for r in pick("reload", "xdpvs-native"):
    print("  reload under %d pps: sent %d, received %d, lost %d (%.3f%%), p99 %.1f us, max %.1f us" % (
        int(lat_rate), r["sent"], r["received"], r["sent"] - r["received"], r["drop_pct"], r["lat_us"]["p99"], r["lat_us"]["max"]))
if rel:
    print("  xdpvs check 10k services/100k reals: %.2fs; reload: same small config %.3fs, 10k/100k %.3fs, back %.3fs" % (
        float(check_s), rel["small_s"], rel["big_s"], rel["big_to_small_s"]))
xd = max(mx["xdpvs-generic"], mx["xdpvs-native"])
best = "native" if mx["xdpvs-native"] >= mx["xdpvs-generic"] else "generic"
kf, nf = mx["kernel-fwd"], mx["nft-dnat"]
idle_pct = max([v for k, v in idle.items() if k in ("generic", "native")] or [float("nan")])
p99x = p99["xdpvs-" + best]
p99_vs_kernel = p99x / p99["kernel-fwd"] if p99["kernel-fwd"] > 0 else float("nan")
lat_drop = med([r["drop_pct"] for r in pick("lat", "xdpvs-" + best)])
def pf(ok):
    return "PASS" if ok else "MISS"
print()
print("Targets (issue 15): xdpvs (%s) %.2fx kernel forwarding (>= 1.1: %s), %.2fx nft DNAT (>= 1.6: %s); p99 %.1f us = %.2fx kernel forwarding's %.1f us at the same rate (<= 1.5: %s); loss at the common rate %.3f%% (none: %s); idle %.3f%% of a core (< 1%%: %s)" % (
    best, xd / kf, pf(xd / kf >= 1.1), xd / nf, pf(xd / nf >= 1.6), p99x, p99_vs_kernel, p99["kernel-fwd"], pf(p99_vs_kernel <= 1.5),
    lat_drop, pf(lat_drop <= 0.0), idle_pct, pf(idle_pct < 1.0)))
slow = mx.get("xdpvs-slowpath", float("nan"))
print("Fast path: xdpvs-native %.3f Mpps vs the same with fast_path = false %.3f Mpps: %.2fx" % (mx["xdpvs-native"], slow, mx["xdpvs-native"] / slow if slow else float("nan")))
bare = mx.get("afxdp-bare", float("nan"))
print("Ceiling: a bare AF_XDP forwarder (same XDP filter, runtime and loop, MAC rewrite only) %.3f Mpps = %.2fx kernel forwarding; xdpvs-slowpath is %.2fx of it" % (
    bare, bare / kf, slow / bare))
drop = mx.get("xdp-drop", float("nan"))
drop_af = mx.get("xdp-drop-afxdp", float("nan"))
gen1 = ",".join(sorted({r.get("gen_mode", "afxdp") for r in pick("max", "xdp-drop")})) or "?"
print("Generator ceiling (into XDP_DROP on dr0): phase 1's generator (%s) %.3f Mpps, AF_XDP (phases 2-3) %.3f Mpps: %.2fx" % (
    gen1, drop, drop_af, drop / drop_af if drop_af else float("nan")))
print("Ceiling: XDP_DROP on dr0 (threaded NAPI on CPU 1; rate = dr0 RX) %.3f Mpps = %.2fx kernel forwarding; xdpvs (%s) is %.2fx of it" % (
    drop, drop / kf, best, xd / drop))
# Who limits whom: a config that takes (nearly) all the generator offers is
# limited by the generator (CPU 0), one that leaves frames at dr0's door by
# the director (CPU 1).
def limit(c):
    rs = pick("max", c)
    d = med([r["drop_pct"] for r in rs])
    return "%s %.3f of %.3f offered (%s)" % (c, mx[c], med([r["offered_pps"] for r in rs]) / 1e6,
        "generator-limited" if d < 3.0 else "director-limited, %.0f%% left at dr0" % d)
print("Limits: " + "; ".join(limit(c) for c in ["xdp-drop", "xdpvs-generic", "xdpvs-native", "kernel-fwd"]))
print("SUMMARY xdpvs_mpps=%.3f kernel_fwd_mpps=%.3f nft_dnat_mpps=%.3f vs_kernel=%.2f vs_nft=%.2f p99_us=%.1f idle_cpu_pct=%.3f p99_vs_kernel=%.2f" % (
    xd, kf, nf, xd / kf, xd / nf, p99x, idle_pct, p99_vs_kernel))
PY
say "results: $OUT (runs.jsonl, report.txt, *.hgrm)"
