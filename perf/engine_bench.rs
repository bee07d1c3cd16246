//! Whole-packet engine benchmark: ns per packet through `Engine::process`.
//!
//! `cargo bench --bench engine` (connection tables of 10k, 1M and 10M) or
//! `cargo bench --bench engine -- --quick` (10k and 1M, fewer iterations, a
//! few seconds). Figures and how to read them: `perf/README.md`. The table
//! data structures alone are measured by `cargo bench --bench tables`.
//!
//! What is measured, on a 1-shard engine (no hand-off) fed from a config
//! built the way `xdpvs run` builds it (`Config::parse` + `build_snapshot`)
//! and the production next-hop table (`NeighborTable`, a 4-route table with
//! the real servers and gateways resolved):
//!
//! 1. established flow, hot: the same TCP ACK of one existing connection,
//!    again and again (DR IPv4, NAT in, NAT out (reply), DR IPv6);
//! 2. established flow, random: ACKs of connections picked at random among
//!    N established ones (N = 10k, 1M, 10M): the engine-level view of
//!    "lookup time at 10M vs 10k";
//! 3. new connection: SYNs from clients with no connection yet, to a
//!    persistent firewall-mark service, both when the client has no
//!    persistence template yet ("template new": schedule + template insert +
//!    connection insert) and when it has one ("template exists": template
//!    hit + connection insert); and to a non-persistent DR service for
//!    comparison. Measured with N background connections in the table.
//!
//! The engine rewrites frames in place (MACs; for NAT addresses, ports and
//! checksums), so each iteration first restores the frame from a template
//! (a ~66-byte copy) and patches the client address and port (random and
//! new-connection cases). That work is timed alone in an identical loop
//! without `process` and subtracted: "net" = "raw" - "copy". Both are printed.
//! `now` is fixed (no timer work is due) and `tick` is not called, except
//! for the last case ("recycled slots"): the clock then moves 700 s on and
//! `tick` expires every connection but the N established ones, and every
//! template, so new ones reuse freed slots as in a director past its
//! high-water mark.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use xdpvs::config::{build_snapshot, Config};
use xdpvs::dataplane::mem;
use xdpvs::dataplane::neigh::NeighborTable;
use xdpvs::dataplane::netlink::{nud, LinkInfo, NeighEntry, RouteEntry};
use xdpvs::service::model::{FlowKey, Proto};
use xdpvs::shard::engine::{Engine, EngineConfig};
use xdpvs::shard::tcp_state::TcpState;
use xdpvs::shard::verdict::{Frame, Verdict};

// ---- targets (issue #2) ------------------------------------------------------

const TARGET_ESTABLISHED_NS: f64 = 50.0;
const TARGET_NEW_PERSISTENT_NS: f64 = 250.0;
const TARGET_LOOKUP_RATIO: f64 = 2.0;
const TARGET_BYTES_PER_ENTRY: usize = 96;

// ---- addresses (198.18.0.0/15, 2001:db8::/32 only) ---------------------------

/// Persistent fwmark service (mark 1: tcp 80,443).
const VIP_FWMARK: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);
/// Non-persistent DR service, tcp 80.
const VIP_DR: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 2);
/// NAT service, tcp 80 -> real servers' 8080.
const VIP_NAT: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 3);
const VIP_DR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, 1);
/// Background clients: 198.18.0.0 + i / PORTS, port 1024 + i % PORTS.
const BG_BASE: u32 = 0xC612_0000;
/// Clients of the new-connection cases: 198.18.128.0 .. 198.19.127.255.
const NEW_BASE: u32 = 0xC612_8000;
const NEW_CLIENTS: u32 = 65_536;
const PORTS: u64 = 60_000;
/// Fixed engine clock (ms).
const NOW: u64 = 1_000_000;

/// The engine's clock in the bench: [`NOW`] until the recycled-slots case.
static CLOCK: AtomicU64 = AtomicU64::new(NOW);
/// Frame headroom, as the AF_XDP frames have.
const HEADROOM: usize = 256;
const REALS: u8 = 8;

fn config_text() -> String {
    let mut s = String::from(
        r#"[director]
interfaces = ["eth0"]

[[fwmark]]
mark = 1
rules = [ { vip = "198.19.255.1", proto = "tcp", ports = "80,443" } ]

[[service]]
name = "web-fwmark"
fwmark = 1
scheduler = "wlc"
persistence = { timeout = 300 }
"#,
    );
    let real = |s: &mut String, addr: String, port: Option<u16>, fwd: &str| {
        s.push_str(&format!(
            "  [[service.real]]\n  addr = \"{addr}\"\n  forward = \"{fwd}\"\n"
        ));
        if let Some(p) = port {
            s.push_str(&format!("  port = {p}\n"));
        }
    };
    for i in 1..=REALS {
        real(&mut s, format!("198.19.254.{i}"), None, "dr");
    }
    s.push_str(
        "\n[[service]]\nname = \"dr\"\nproto = \"tcp\"\nvip = \"198.19.255.2\"\nport = 80\nscheduler = \"wlc\"\n",
    );
    for i in 1..=REALS {
        real(&mut s, format!("198.19.254.{}", 10 + i), None, "dr");
    }
    s.push_str(
        "\n[[service]]\nname = \"nat\"\nproto = \"tcp\"\nvip = \"198.19.255.3\"\nport = 80\nscheduler = \"wlc\"\n",
    );
    for i in 1..=REALS {
        real(&mut s, format!("198.19.254.{}", 20 + i), Some(8080), "nat");
    }
    s.push_str(
        "\n[[service]]\nname = \"dr6\"\nproto = \"tcp\"\nvip = \"2001:db8::1:1\"\nport = 80\nscheduler = \"wlc\"\n",
    );
    for i in 1..=REALS {
        real(&mut s, format!("2001:db8:1::{}", 10 + i), None, "dr");
    }
    s
}

/// The production next-hop table: one interface, on-link prefixes for the
/// real servers, default routes via gateways, every MAC resolved.
fn neighbors() -> NeighborTable {
    const IF: u32 = 2;
    let link = LinkInfo {
        ifindex: IF,
        name: "eth0".to_string(),
        mac: Some([0x02, 0, 0, 0, 0, 0xaa]),
        mtu: 1500,
    };
    let route = |dst: IpAddr, prefix_len: u8, gateway: Option<IpAddr>| RouteEntry {
        dst,
        prefix_len,
        oif: IF,
        gateway,
        metric: 0,
        table: 254,
        route_type: 1,
    };
    let gw4 = IpAddr::V4(Ipv4Addr::new(198, 19, 255, 254));
    let gw6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfffe));
    let routes = [
        route(IpAddr::V4(Ipv4Addr::new(198, 19, 254, 0)), 24, None),
        route(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0)),
            64,
            None,
        ),
        route(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0, Some(gw4)),
        route(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0, Some(gw6)),
    ];
    let mut addrs = vec![gw4, gw6];
    for i in 1..=30u8 {
        addrs.push(IpAddr::V4(Ipv4Addr::new(198, 19, 254, i)));
        addrs.push(IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            1,
            0,
            0,
            0,
            0,
            u16::from(i),
        )));
    }
    let neighs: Vec<NeighEntry> = addrs
        .iter()
        .enumerate()
        .map(|(i, &addr)| NeighEntry {
            ifindex: IF,
            addr,
            mac: [0x02, 0xbb, 0, 0, (i >> 8) as u8, i as u8],
            state: nud::REACHABLE,
        })
        .collect();
    NeighborTable::build(&[link], &routes, &neighs, &[], None, None)
}

fn engine(conn_capacity: usize, template_capacity: usize) -> Engine {
    let cfg = small_config();
    let snap = match build_snapshot(&cfg, None) {
        Ok(s) => s,
        Err(e) => panic!("bench snapshot: {e}"),
    };
    let e = Engine::new(
        EngineConfig {
            shard: 0,
            shards: 1,
            conn_capacity,
            template_capacity,
        },
        Arc::new(snap),
    );
    // As the director does with `hugepages = true` (`ShardEngine::new`).
    if hugepages() {
        mem::advise_hugepages(&e.memory_regions());
    }
    // As the director does with `prefault = true`.
    if prefault() {
        let t = Instant::now();
        match mem::populate(&e.memory_regions()) {
            Ok(n) => eprintln!(
                "  prefaulted {} MiB of table memory in {:.0} ms",
                n >> 20,
                t.elapsed().as_secs_f64() * 1e3
            ),
            Err(err) => panic!("--prefault: {err}"),
        }
    }
    e
}

/// `--hugepages`: advise the tables to use transparent huge pages, as the
/// director does with `[director] hugepages = true` (default: 4 KiB pages,
/// as the director's default).
fn hugepages() -> bool {
    std::env::args().any(|a| a == "--hugepages")
}

/// `--prefault`: fault the tables' whole capacity in before measuring, as
/// the director does with `[director] prefault = true` (default: pages are
/// faulted in as the tables fill, as the director's default).
fn prefault() -> bool {
    std::env::args().any(|a| a == "--prefault")
}

// ---- frames ------------------------------------------------------------------

mod tcpf {
    pub const SYN: u8 = 0x02;
    pub const ACK: u8 = 0x10;
}

fn csum_add(data: &[u8], mut s: u32) -> u32 {
    for c in data.chunks(2) {
        let w = (u32::from(c[0]) << 8) | u32::from(*c.get(1).unwrap_or(&0));
        s += w;
    }
    s
}

fn csum_fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Ethernet + IPv4/IPv6 + TCP with a timestamp option (66 / 86 bytes), with
/// correct checksums.
fn tcp_frame(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(32);
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&0x1122_3344u32.to_be_bytes());
    tcp.extend_from_slice(&0x5566_7788u32.to_be_bytes());
    tcp.push(8 << 4); // 32-byte header
    tcp.push(flags);
    tcp.extend_from_slice(&64_240u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    tcp.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    let mut f = vec![0x02, 0, 0, 0, 0, 0xaa, 0x02, 0xcc, 0, 0, 0, 1];
    let mut pseudo = 0u32;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0x12, 0x34, 0x40, 0, 61, 6, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = csum_fold(csum_add(&ip, 0));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
            pseudo = csum_add(&s.octets(), pseudo);
            pseudo = csum_add(&d.octets(), pseudo);
            pseudo += 6 + tcp.len() as u32;
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            f.extend_from_slice(&[6, 63]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            pseudo = csum_add(&s.octets(), pseudo);
            pseudo = csum_add(&d.octets(), pseudo);
            pseudo += 6 + tcp.len() as u32;
        }
        _ => panic!("mixed address families"),
    }
    let c = csum_fold(csum_add(&tcp, pseudo));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&tcp);
    f
}

/// IPv4 source address and TCP source port offsets in `tcp_frame` output.
const V4_SRC: usize = 14 + 12;
const V4_SPORT: usize = 14 + 20;

/// Write client `addr:port` into a restored IPv4 frame. Checksums are left
/// stale: the engine does not verify them (`wire::parse`), and the rewrites
/// update them incrementally, so the cost is the same.
#[inline(always)]
fn patch_v4(b: &mut [u8], addr: u32, port: u16) {
    b[HEADROOM + V4_SRC..HEADROOM + V4_SRC + 4].copy_from_slice(&addr.to_be_bytes());
    b[HEADROOM + V4_SPORT..HEADROOM + V4_SPORT + 2].copy_from_slice(&port.to_be_bytes());
}

fn bg_client(i: u64) -> (u32, u16) {
    (BG_BASE + (i / PORTS) as u32, 1024 + (i % PORTS) as u16)
}

struct Rng(u64);

impl Rng {
    #[inline(always)]
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    #[inline(always)]
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// A working frame buffer with AF_XDP-like headroom.
struct Buf(Vec<u8>);

impl Buf {
    fn new() -> Buf {
        Buf(vec![0u8; 2048])
    }
    #[inline(always)]
    fn load(&mut self, tpl: &[u8]) {
        self.0[HEADROOM..HEADROOM + tpl.len()].copy_from_slice(tpl);
    }
    /// Process the loaded frame.
    #[inline(always)]
    fn run(&mut self, e: &mut Engine, nt: &NeighborTable, len: usize) -> Verdict {
        let mut f = Frame::new(&mut self.0, HEADROOM, len);
        e.process(CLOCK.load(Ordering::Relaxed), &mut f, nt)
    }
}

/// Send one frame and require a forward verdict (setup, untimed).
fn send(e: &mut Engine, nt: &NeighborTable, frame: &[u8], what: &str) {
    let mut b = Buf::new();
    b.load(frame);
    let v = b.run(e, nt, frame.len());
    if !matches!(v, Verdict::Forward { .. }) {
        panic!("setup {what}: verdict {v:?}, stats {:?}", e.stats);
    }
}

fn fwd(v: Verdict) -> usize {
    usize::from(matches!(v, Verdict::Forward { .. }))
}

fn check_forwarded(what: &str, forwarded: usize, n: usize) {
    if forwarded != n {
        panic!("{what}: only {forwarded} of {n} frames forwarded: the bench would not measure the forwarding path");
    }
}

fn state_of(e: &Engine, key: &FlowKey) -> Option<TcpState> {
    let h = e.conns().lookup_in(key)?;
    Some(e.conns().get(h)?.state)
}

// ---- statistics -----------------------------------------------------------------

/// Median, min and max of repeated measurements (ns per packet).
#[derive(Clone, Copy, Debug)]
struct Stat {
    med: f64,
    min: f64,
    max: f64,
}

impl Stat {
    fn of(mut v: Vec<f64>) -> Stat {
        v.sort_by(f64::total_cmp);
        Stat {
            med: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        }
    }
}

fn ns_per(start: Instant, n: usize) -> f64 {
    start.elapsed().as_nanos() as f64 / n.max(1) as f64
}

fn minflt() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()?
                .split_whitespace()
                .nth(7)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

// ---- 1. established, hot -------------------------------------------------------------

struct Row {
    case: String,
    raw: Stat,
    copy: Stat,
    net: f64,
    target: Option<f64>,
}

/// The same frame through the engine `iters` times, `reps` times; and the
/// restore-only loop for the copy cost.
fn hot(
    e: &mut Engine,
    nt: &NeighborTable,
    frame: &[u8],
    iters: usize,
    reps: usize,
) -> (Stat, Stat) {
    let mut b = Buf::new();
    let len = frame.len();
    let mut raw = Vec::new();
    let mut copy = Vec::new();
    for _ in 0..reps {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(&mut b.0);
            b.load(black_box(frame));
            black_box(&mut b.0);
        }
        copy.push(ns_per(start, iters));

        let mut ok = 0usize;
        let start = Instant::now();
        for _ in 0..iters {
            black_box(&mut b.0);
            b.load(black_box(frame));
            ok += fwd(black_box(b.run(e, nt, len)));
        }
        raw.push(ns_per(start, iters));
        check_forwarded("hot flow", ok, iters);
    }
    (Stat::of(raw), Stat::of(copy))
}

fn bench_hot(quick: bool) -> Vec<Row> {
    let (iters, reps) = if quick { (300_000, 3) } else { (3_000_000, 5) };
    let nt = neighbors();
    let mut e = engine(1 << 16, 1 << 12);
    let client = IpAddr::V4(Ipv4Addr::new(198, 18, 7, 7));
    let mut rows = Vec::new();

    // DR IPv4: SYN then ACK (input-only state table) -> ESTABLISHED.
    let dr = IpAddr::V4(VIP_DR);
    send(
        &mut e,
        &nt,
        &tcp_frame(client, dr, 40_000, 80, tcpf::SYN),
        "dr syn",
    );
    let ack = tcp_frame(client, dr, 40_000, 80, tcpf::ACK);
    send(&mut e, &nt, &ack, "dr ack");
    let key = FlowKey {
        proto: Proto::Tcp,
        src: client,
        dst: dr,
        sport: 40_000,
        dport: 80,
    };
    assert_eq!(
        state_of(&e, &key),
        Some(TcpState::Established),
        "dr flow state"
    );
    let (raw, copy) = hot(&mut e, &nt, &ack, iters, reps);
    rows.push(Row {
        case: "established DR IPv4 (ACK, one flow)".into(),
        raw,
        copy,
        net: raw.med - copy.med,
        target: Some(TARGET_ESTABLISHED_NS),
    });

    // NAT: SYN in, SYN-ACK out, ACK in -> ESTABLISHED; then ACKs both ways.
    let nat = IpAddr::V4(VIP_NAT);
    send(
        &mut e,
        &nt,
        &tcp_frame(client, nat, 40_001, 80, tcpf::SYN),
        "nat syn",
    );
    let key = FlowKey {
        proto: Proto::Tcp,
        src: client,
        dst: nat,
        sport: 40_001,
        dport: 80,
    };
    let (raddr, rport) = {
        let h = e.conns().lookup_in(&key).expect("nat conn");
        let c = e.conns().get(h).expect("nat conn");
        (c.raddr, c.rport)
    };
    send(
        &mut e,
        &nt,
        &tcp_frame(raddr, client, rport, 40_001, tcpf::SYN | tcpf::ACK),
        "nat syn-ack",
    );
    let ack_in = tcp_frame(client, nat, 40_001, 80, tcpf::ACK);
    send(&mut e, &nt, &ack_in, "nat ack");
    assert_eq!(
        state_of(&e, &key),
        Some(TcpState::Established),
        "nat flow state"
    );
    let (raw, copy) = hot(&mut e, &nt, &ack_in, iters, reps);
    rows.push(Row {
        case: "established NAT IPv4 in (DNAT)".into(),
        raw,
        copy,
        net: raw.med - copy.med,
        target: Some(TARGET_ESTABLISHED_NS),
    });
    let ack_out = tcp_frame(raddr, client, rport, 40_001, tcpf::ACK);
    let (raw, copy) = hot(&mut e, &nt, &ack_out, iters, reps);
    rows.push(Row {
        case: "established NAT IPv4 out (SNAT reply)".into(),
        raw,
        copy,
        net: raw.med - copy.med,
        target: Some(TARGET_ESTABLISHED_NS),
    });

    // DR IPv6.
    let c6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 7));
    let v6 = IpAddr::V6(VIP_DR6);
    send(
        &mut e,
        &nt,
        &tcp_frame(c6, v6, 40_002, 80, tcpf::SYN),
        "dr6 syn",
    );
    let ack6 = tcp_frame(c6, v6, 40_002, 80, tcpf::ACK);
    send(&mut e, &nt, &ack6, "dr6 ack");
    let (raw, copy) = hot(&mut e, &nt, &ack6, iters, reps);
    rows.push(Row {
        case: "established DR IPv6 (ACK, one flow)".into(),
        raw,
        copy,
        net: raw.med - copy.med,
        target: Some(TARGET_ESTABLISHED_NS),
    });

    // A non-VIP packet: the pass-to-kernel path, for reference.
    let other = tcp_frame(
        client,
        IpAddr::V4(Ipv4Addr::new(198, 19, 200, 1)),
        40_003,
        22,
        tcpf::ACK,
    );
    let mut b = Buf::new();
    let mut raws = Vec::new();
    for _ in 0..reps {
        let mut passed = 0usize;
        let start = Instant::now();
        for _ in 0..iters {
            black_box(&mut b.0);
            b.load(black_box(&other));
            passed += usize::from(black_box(b.run(&mut e, &nt, other.len())) == Verdict::Pass);
        }
        raws.push(ns_per(start, iters));
        check_forwarded("pass", passed, iters);
    }
    let raw = Stat::of(raws);
    let copy = rows[0].copy;
    rows.push(Row {
        case: "not for a VIP (Pass to kernel)".into(),
        raw,
        copy,
        net: raw.med - copy.med,
        target: None,
    });
    rows
}

// ---- 2 and 3. at table size N ----------------------------------------------------------

struct Scale {
    n: usize,
    populate_ns: f64,
    est: Row,
    est_batch: Row,
    tpl_new: Row,
    tpl_hit: Row,
    tpl_new_batch: Row,
    tpl_hit_batch: Row,
    new_dr: Row,
    tpl_new_recycled: Row,
    bpe: usize,
    rss_bpe: f64,
    tpl_bpe: usize,
}

/// Copy + patch only: the part of a random/new-connection iteration that is
/// not the engine.
fn patch_cost(frame: &[u8], iters: usize, mut client: impl FnMut(usize) -> (u32, u16)) -> f64 {
    let mut b = Buf::new();
    let start = Instant::now();
    for i in 0..iters {
        black_box(&mut b.0);
        b.load(black_box(frame));
        let (a, p) = client(i);
        patch_v4(&mut b.0, a, p);
        black_box(&mut b.0);
    }
    ns_per(start, iters)
}

/// Frames per RX batch in the batched cases (the data plane's `WARM`).
const BATCH: usize = 32;

/// One RX batch as the data plane runs it: prefetch pass
/// (`Engine::warm_batch` with the data plane's prefetch), then `process`
/// for each frame. Returns the number forwarded.
fn warm_and_run(e: &mut Engine, nt: &NeighborTable, bufs: &mut [Buf], len: usize) -> usize {
    let frames: Vec<&[u8]> = bufs
        .iter()
        .map(|b| &b.0[HEADROOM..HEADROOM + len])
        .collect();
    e.warm_batch(black_box(&frames), mem::prefetch);
    drop(frames);
    bufs.iter_mut()
        .map(|b| fwd(black_box(b.run(e, nt, len))))
        .sum()
}

/// SYNs to `frame`'s VIP from `clients` (index -> client), timed: one frame
/// at a time, or in RX batches of [`BATCH`] through [`warm_and_run`] (`n`
/// rounded down to whole batches).
fn syns(
    e: &mut Engine,
    nt: &NeighborTable,
    frame: &[u8],
    n: usize,
    client: impl Fn(usize) -> (u32, u16),
    what: &str,
    batched: bool,
) -> f64 {
    let size = if batched { BATCH } else { 1 };
    let mut bufs: Vec<Buf> = (0..size).map(|_| Buf::new()).collect();
    let len = frame.len();
    let n = n / size * size;
    let mut ok = 0usize;
    let start = Instant::now();
    for first in (0..n).step_by(size) {
        for (j, b) in bufs.iter_mut().enumerate() {
            b.load(frame);
            let (a, p) = client(first + j);
            patch_v4(&mut b.0, a, p);
        }
        ok += if batched {
            warm_and_run(e, nt, &mut bufs, len)
        } else {
            bufs.iter_mut()
                .map(|b| fwd(black_box(b.run(e, nt, len))))
                .sum()
        };
    }
    let t = ns_per(start, n);
    check_forwarded(what, ok, n);
    t
}

/// "template new" then "template exists" for clients `base..`: each rep
/// first a fresh set of clients (one new template each), then all of them
/// again from new ports (template hits); single frames or warmed batches.
#[allow(clippy::too_many_arguments)]
fn persistent_rows(
    e: &mut Engine,
    nt: &NeighborTable,
    fw_syn: &[u8],
    base: u32,
    reps: usize,
    new_per_rep: usize,
    copy: Stat,
    batched: bool,
) -> (Row, Row) {
    let (per, how) = if batched {
        (new_per_rep / BATCH * BATCH, ", warmed batch of 32")
    } else {
        (new_per_rep, "")
    };
    let client = |i: usize| base + i as u32;
    let send = |e: &mut Engine, n: usize, port: &dyn Fn(usize) -> (u32, u16), what: &str| {
        syns(e, nt, fw_syn, n, port, what, batched)
    };
    let tpl0 = e.templates().len();
    let raws: Vec<f64> = (0..reps)
        .map(|r| {
            let first = r * per;
            send(e, per, &|i| (client(first + i), 30_000), "template new")
        })
        .collect();
    assert_eq!(
        e.templates().len() - tpl0,
        reps * per,
        "one template per new client"
    );
    let raw = Stat::of(raws);
    let new = Row {
        case: format!("new conn, persistent fwmark, template new{how}"),
        raw,
        copy,
        net: raw.med - copy.med,
        target: Some(TARGET_NEW_PERSISTENT_NS),
    };
    let hits0 = e.stats.template_hits;
    let conns0 = e.conns().len();
    let raws: Vec<f64> = (0..reps)
        .map(|r| {
            let port = 31_000 + r as u16;
            send(e, reps * per, &|i| (client(i), port), "template exists")
        })
        .collect();
    let hits = (e.stats.template_hits - hits0) as usize;
    assert_eq!(hits, reps * reps * per, "template hits");
    assert_eq!(e.conns().len() - conns0, hits, "one new connection per SYN");
    let raw = Stat::of(raws);
    let hit = Row {
        case: format!("new conn, persistent fwmark, template exists{how}"),
        raw,
        copy,
        net: raw.med - copy.med,
        target: Some(TARGET_NEW_PERSISTENT_NS),
    };
    (new, hit)
}

fn bench_scale(n: usize, quick: bool) -> Scale {
    let nt = neighbors();
    let reps = if quick { 3 } else { 5 };
    let new_per_rep = (NEW_CLIENTS as usize) / reps;
    let extra = NEW_CLIENTS as usize * (2 + 3 * reps) + 1024;
    let rss0 = rss_bytes();
    let mut e = engine(n + extra, 1 << 18);
    let any = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    let dr = IpAddr::V4(VIP_DR);
    let syn = tcp_frame(any, dr, 1, 80, tcpf::SYN);
    let ack = tcp_frame(any, dr, 1, 80, tcpf::ACK);
    let len = syn.len();

    // N established DR connections: SYN, then ACK, per client.
    eprintln!("  populating {n} established connections");
    let mut b = Buf::new();
    let start = Instant::now();
    let mut ok = 0usize;
    for i in 0..n as u64 {
        let (a, p) = bg_client(i);
        b.load(&syn);
        patch_v4(&mut b.0, a, p);
        ok += fwd(b.run(&mut e, &nt, len));
        b.load(&ack);
        patch_v4(&mut b.0, a, p);
        ok += fwd(b.run(&mut e, &nt, len));
    }
    let populate_ns = ns_per(start, 2 * n);
    check_forwarded("populate", ok, 2 * n);
    assert_eq!(e.conns().len(), n, "populated connections");
    let rss_bpe = rss_bytes().saturating_sub(rss0) as f64 / n as f64;
    let (a, p) = bg_client(n as u64 / 2);
    let key = FlowKey {
        proto: Proto::Tcp,
        src: IpAddr::V4(Ipv4Addr::from(a)),
        dst: dr,
        sport: p,
        dport: 80,
    };
    assert_eq!(
        state_of(&e, &key),
        Some(TcpState::Established),
        "background state"
    );

    // 2. Established, random flow among N.
    let iters = if quick { 500_000 } else { 2_000_000 };
    let mut raws = Vec::new();
    let mut copies = Vec::new();
    for r in 0..reps {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ r as u64);
        copies.push(patch_cost(&ack, iters, |_| bg_client(rng.below(n as u64))));
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ r as u64);
        let mut ok = 0usize;
        let start = Instant::now();
        for _ in 0..iters {
            black_box(&mut b.0);
            b.load(black_box(&ack));
            let (a, p) = bg_client(rng.below(n as u64));
            patch_v4(&mut b.0, a, p);
            ok += fwd(black_box(b.run(&mut e, &nt, len)));
        }
        raws.push(ns_per(start, iters));
        check_forwarded("established random", ok, iters);
    }
    let (raw, copy) = (Stat::of(raws), Stat::of(copies));
    let est = Row {
        case: "established DR, random flow".into(),
        raw,
        copy,
        net: raw.med - copy.med,
        target: Some(TARGET_ESTABLISHED_NS),
    };

    // 2b. The same, as the data plane runs it: RX batches of 32 frames,
    // each batch first warmed (`Engine::warm_batch` with the data plane's
    // prefetch), then processed.
    let mut bufs: Vec<Buf> = (0..BATCH).map(|_| Buf::new()).collect();
    let mut raws = Vec::new();
    for r in 0..reps {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ r as u64);
        let mut ok = 0usize;
        let start = Instant::now();
        for _ in 0..iters / BATCH {
            for bb in bufs.iter_mut() {
                bb.load(black_box(&ack));
                let (a, p) = bg_client(rng.below(n as u64));
                patch_v4(&mut bb.0, a, p);
            }
            ok += warm_and_run(&mut e, &nt, &mut bufs, len);
        }
        raws.push(ns_per(start, iters / BATCH * BATCH));
        check_forwarded("established random, batch", ok, iters / BATCH * BATCH);
    }
    let raw = Stat::of(raws);
    let est_batch = Row {
        case: "established DR, random flow, warmed batch of 32".into(),
        raw,
        copy,
        net: raw.med - copy.med,
        target: Some(TARGET_ESTABLISHED_NS),
    };

    // 3. New connections to the persistent fwmark service.
    let fw = IpAddr::V4(VIP_FWMARK);
    let fw_syn = tcp_frame(any, fw, 1, 443, tcpf::SYN);
    let new_client = |i: usize| NEW_BASE + i as u32;
    let copy = Stat::of(
        (0..reps)
            .map(|_| patch_cost(&fw_syn, new_per_rep, |i| (new_client(i), 30_000)))
            .collect(),
    );
    let (tpl_new, tpl_hit) = persistent_rows(
        &mut e,
        &nt,
        &fw_syn,
        NEW_BASE,
        reps,
        new_per_rep,
        copy,
        false,
    );
    let (tpl_new_batch, tpl_hit_batch) = persistent_rows(
        &mut e,
        &nt,
        &fw_syn,
        NEW_BASE + NEW_CLIENTS,
        reps,
        new_per_rep,
        copy,
        true,
    );
    // Non-persistent DR service.
    let raws: Vec<f64> = (0..reps)
        .map(|r| {
            syns(
                &mut e,
                &nt,
                &syn,
                reps * new_per_rep,
                |i| (new_client(i), 32_000 + r as u16),
                "dr new",
                false,
            )
        })
        .collect();
    let raw = Stat::of(raws);
    let new_dr = Row {
        case: "new conn, non-persistent DR (wlc)".into(),
        raw,
        copy,
        net: raw.med - copy.med,
        target: None,
    };
    // 4. Past the high-water mark: every connection but the N established
    // ones, and every template, expire; new clients reuse the freed slots.
    let later = NOW + 700_000;
    let mut t = later;
    for _ in 0..100_000 {
        e.tick(t);
        if e.templates().is_empty() && e.conns().len() == n {
            break;
        }
        t += 64;
    }
    assert!(
        e.templates().is_empty() && e.conns().len() == n,
        "drained: {} templates, {} conns",
        e.templates().len(),
        e.conns().len()
    );
    CLOCK.store(t, Ordering::Relaxed);
    let per = new_per_rep / BATCH * BATCH;
    let raws: Vec<f64> = (0..reps)
        .map(|r| {
            let first = NEW_BASE as usize + 2 * NEW_CLIENTS as usize + r * per;
            syns(
                &mut e,
                &nt,
                &fw_syn,
                per,
                |i| ((first + i) as u32, 30_000),
                "template new, recycled",
                true,
            )
        })
        .collect();
    CLOCK.store(NOW, Ordering::Relaxed);
    assert_eq!(
        e.templates().len(),
        reps * per,
        "one template per new client"
    );
    let raw = Stat::of(raws);
    let tpl_new_recycled = Row {
        case: "new conn, persistent fwmark, template new, warmed batch of 32, recycled slots"
            .into(),
        raw,
        copy,
        net: raw.med - copy.med,
        target: Some(TARGET_NEW_PERSISTENT_NS),
    };
    Scale {
        n,
        populate_ns,
        est,
        est_batch,
        tpl_new,
        tpl_hit,
        tpl_new_batch,
        tpl_hit_batch,
        new_dr,
        tpl_new_recycled,
        bpe: e.conns().bytes_per_entry(),
        rss_bpe,
        tpl_bpe: e.templates().bytes_per_entry(),
    }
}

// ---- reload ---------------------------------------------------------------------------------

/// The bench config plus `n` services of `k` DR real servers each (the
/// shape of `perf/bench.sh`'s reload config).
fn big_config_text(n: usize, k: usize) -> String {
    let mut s = config_text();
    for i in 0..n {
        let vip = Ipv4Addr::new(198, 18, 32 + ((i / 3) / 256) as u8, ((i / 3) % 256) as u8);
        s.push_str(&format!(
            "\n[[service]]\nname = \"s{i}\"\nproto = \"tcp\"\nvip = \"{vip}\"\nport = {}\nscheduler = \"wrr\"\n",
            80 + i % 3
        ));
        for j in 0..k {
            let r = (i * k + j) % 65536;
            s.push_str(&format!(
                "  [[service.real]]\n  addr = \"198.19.{}.{}\"\n  weight = {}\n  forward = \"dr\"\n",
                r / 256,
                r % 256,
                1 + j % 3
            ));
        }
    }
    s
}

/// What a reload costs a shard, in ms (medians of `reps`):
/// `Engine::set_snapshot` from the small bench snapshot to one of `n`
/// services / `n * 10` real servers (all new), from that one to the next
/// (rebuilt from the same config, as a reload does), and back to the small
/// one; and dropping the last reference to a big snapshot (which the
/// director's control thread does, not the shard).
struct Reload {
    to_big: f64,
    same: f64,
    back: f64,
    drop_ms: f64,
}

fn bench_reload(n: usize, reps: usize) -> Reload {
    let cfg = match Config::parse(&big_config_text(n, 10), "big.toml") {
        Ok(c) => c,
        Err(e) => panic!("big config: {e}"),
    };
    let mut e = engine(1 << 16, 1 << 12);
    let small = Arc::clone(e.snapshot());
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let (mut to_big, mut back) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let big = Arc::new(build_snapshot(&cfg, Some(e.snapshot())).expect("big snapshot"));
        let t = Instant::now();
        e.set_snapshot(big);
        to_big.push(ms(t));
        let again = Arc::new(build_snapshot(&small_config(), Some(e.snapshot())).expect("small"));
        let t = Instant::now();
        e.set_snapshot(again);
        back.push(ms(t));
    }
    drop(small);
    let mut cur = Arc::new(build_snapshot(&cfg, Some(e.snapshot())).expect("big snapshot"));
    e.set_snapshot(Arc::clone(&cur));
    let (mut swap, mut drop_ms) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let next = Arc::new(build_snapshot(&cfg, Some(&cur)).expect("big snapshot"));
        let start = Instant::now();
        e.set_snapshot(Arc::clone(&next));
        swap.push(start.elapsed().as_secs_f64() * 1e3);
        let old = std::mem::replace(&mut cur, next);
        let start = Instant::now();
        drop(black_box(old));
        drop_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Reload {
        to_big: Stat::of(to_big).med,
        same: Stat::of(swap).med,
        back: Stat::of(back).med,
        drop_ms: Stat::of(drop_ms).med,
    }
}

/// The bench config (what `engine` starts with).
fn small_config() -> Config {
    match Config::parse(&config_text(), "engine_bench.toml") {
        Ok(c) => c,
        Err(e) => panic!("bench config: {e}"),
    }
}

// ---- machine context ----------------------------------------------------------------------

/// ns per dependent load over a random single cycle through `bytes` of
/// memory (one hop per 64-byte line, on 4 KiB pages or advised to use 2 MiB
/// ones): what a cache or DRAM miss costs on this machine, to read the table
/// sizes by.
fn mem_latency(bytes: usize, loads: usize, huge: bool) -> f64 {
    let lines = bytes / 64;
    let mut order: Vec<u32> = (0..lines as u32).collect();
    let mut rng = Rng(0x0123_4567_89AB_CDEF);
    for i in (1..lines).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    let mut next: Vec<u64> = Vec::with_capacity(lines * 8);
    if huge {
        mem::advise_hugepages(&[xdpvs::shard::reservation(&next)]);
    }
    next.resize(lines * 8, 0);
    for k in 0..lines {
        next[order[k] as usize * 8] = u64::from(order[(k + 1) % lines]);
    }
    drop(order);
    let mut p = 0usize;
    for _ in 0..lines.min(loads) {
        p = next[p * 8] as usize;
    }
    let start = Instant::now();
    for _ in 0..loads {
        p = next[p * 8] as usize;
    }
    let t = ns_per(start, loads);
    black_box(p);
    t
}

// ---- output -------------------------------------------------------------------------------

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

fn print_header() {
    println!(
        "{:<46} {:>24} {:>7} {:>7} {:>7}  vs target",
        "case", "raw ns/pkt med (min-max)", "copy", "net", "target"
    );
}

fn print_row(r: &Row) {
    let range = format!("{:.1} ({:.1}-{:.1})", r.raw.med, r.raw.min, r.raw.max);
    let (t, v) = match r.target {
        Some(t) => (format!("<={t:.0}"), verdict(r.net <= t)),
        None => (String::from("-"), "-"),
    };
    println!(
        "{:<46} {:>24} {:>7.1} {:>7.1} {:>7}  {}",
        r.case, range, r.copy.med, r.net, t, v
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // For profiling: `--hot` runs only the hot-flow cases, `--size=N` only
    // the cases at table size N.
    let hot_only = args.iter().any(|a| a == "--hot");
    if args.iter().any(|a| a == "--reload") {
        // For profiling the reload case alone.
        let r = bench_reload(10_000, 20);
        println!(
            "set_snapshot small -> big {:.1} ms, big -> same big {:.1} ms, big -> small {:.1} ms; drop a big one {:.1} ms",
            r.to_big, r.same, r.back, r.drop_ms
        );
        let text = big_config_text(10_000, 10);
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let cfg = Config::parse(&text, "big.toml").expect("big config");
        let parse = ms(t);
        let t = Instant::now();
        cfg.validate().expect("valid");
        let validate = ms(t);
        let t = Instant::now();
        let s1 = build_snapshot(&cfg, None).expect("snapshot");
        let build = ms(t);
        let t = Instant::now();
        let s2 = build_snapshot(&cfg, Some(&s1)).expect("snapshot");
        let rebuild = ms(t);
        let t = Instant::now();
        let c2 = cfg.clone();
        let clone = ms(t);
        let t = Instant::now();
        drop((s1, s2, c2));
        let free = ms(t);
        println!("parse+validate {parse:.0} ms (validate alone {validate:.0} ms), build {build:.0} ms, rebuild {rebuild:.0} ms, clone {clone:.0} ms, free 2 snapshots + config {free:.0} ms");
        return;
    }
    if let Some(batched) = args.iter().find_map(|a| match a.as_str() {
        "--tpl-new" => Some(false),
        "--tpl-new-batch" => Some(true),
        _ => None,
    }) {
        // For profiling the new-template case alone (perf record / stat).
        let nt = neighbors();
        let mut e = engine(1 << 20, 1 << 18);
        let fw_syn = tcp_frame(
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            IpAddr::V4(VIP_FWMARK),
            1,
            443,
            tcpf::SYN,
        );
        for r in 0..4 {
            let n = 50_000;
            let t = syns(
                &mut e,
                &nt,
                &fw_syn,
                n,
                |i| (NEW_BASE + (r * n + i) as u32, 30_000),
                "template new",
                batched,
            );
            println!(
                "template new, rep {r}: {t:.1} ns, faults so far {}",
                minflt()
            );
        }
        return;
    }
    let one_size: Option<usize> = args
        .iter()
        .find_map(|a| a.strip_prefix("--size=")?.parse().ok());
    let sizes: Vec<usize> = match one_size {
        _ if hot_only => Vec::new(),
        Some(n) => vec![n.max(1)],
        None if quick => vec![10_000, 1_000_000],
        None => vec![10_000, 1_000_000, 10_000_000],
    };
    println!(
        "engine benchmark ({}): Engine::process, 1 shard, 8 real servers per service (wlc)",
        if quick { "quick" } else { "full" }
    );
    println!(
        "raw = restore frame + process; copy = restore (+ patch) alone; net = raw - copy (medians)"
    );
    println!();
    if one_size.is_none() && !hot_only {
        let sizes: &[(usize, &str)] = if quick {
            &[(1 << 20, "1 MiB"), (64 << 20, "64 MiB")]
        } else {
            &[(1 << 20, "1 MiB"), (64 << 20, "64 MiB"), (1 << 30, "1 GiB")]
        };
        for (huge, pages) in [(false, "4 KiB pages"), (true, "2 MiB pages advised")] {
            let lat: Vec<String> = sizes
                .iter()
                .map(|&(b, name)| format!("{name} {:.1} ns", mem_latency(b, 2_000_000, huge)))
                .collect();
            println!(
                "machine: dependent random load latency ({pages}): {}",
                lat.join(", ")
            );
        }
        println!(
            "tables: {}",
            if hugepages() {
                "advised to use 2 MiB pages (--hugepages; director: hugepages = true)"
            } else {
                "4 KiB pages (the director's default; --hugepages for 2 MiB)"
            }
        );
        println!();
    }
    if one_size.is_none() {
        println!("hot flow: the same frame again and again (everything in L1/L2 cache)");
        print_header();
        for r in bench_hot(quick) {
            print_row(&r);
        }
        println!();
        let (n, reps) = if quick { (1_000, 3) } else { (10_000, 5) };
        let r = bench_reload(n, reps);
        println!(
            "reload, what one shard pays (its packets wait): Engine::set_snapshot from the bench config to {n} services / {} reals (all new) {:.1} ms, to the same again (rebuilt, as a reload does) {:.1} ms, back {:.1} ms; freeing the big snapshot {:.1} ms (done by the control thread)",
            n * 10,
            r.to_big,
            r.same,
            r.back,
            r.drop_ms
        );
        println!();
    }
    let mut scales = Vec::new();
    for &n in &sizes {
        eprintln!("table size {n}");
        let s = bench_scale(n, quick);
        println!();
        println!(
            "{} established connections in the table (populated at {:.0} ns/packet, SYN+ACK)",
            s.n, s.populate_ns
        );
        print_header();
        print_row(&s.est);
        print_row(&s.est_batch);
        print_row(&s.tpl_new);
        print_row(&s.tpl_hit);
        print_row(&s.tpl_new_batch);
        print_row(&s.tpl_hit_batch);
        print_row(&s.new_dr);
        print_row(&s.tpl_new_recycled);
        scales.push(s);
    }
    println!();
    println!(
        "{:>10} {:>14} {:>14} {:>16} {:>16} {:>16}",
        "conns", "est. random", "warmed batch", "conn B/entry", "RSS B/conn", "template B/entry"
    );
    for s in &scales {
        println!(
            "{:>10} {:>12.1}ns {:>12.1}ns {:>16} {:>16.1} {:>16}",
            s.n, s.est.net, s.est_batch.net, s.bpe, s.rss_bpe, s.tpl_bpe
        );
    }
    println!("  (RSS B/conn: resident growth while populating / N; the index is sized for the");
    println!("   capacity N + 0.72M, so it is meaningful at 10M only; conn B/entry: computed,");
    println!("   IPv4 entry + index share + timer + FIFO with the table full)");
    println!();
    println!("targets (informational; the process never fails on them):");
    if let (Some(first), Some(last)) = (scales.first(), scales.last()) {
        let ratio = last.est.net / first.est.net.max(0.1);
        println!(
            "  established random flow at {} vs {}: {:.2}x (target <= {:.0}x): {}",
            last.n,
            first.n,
            ratio,
            TARGET_LOOKUP_RATIO,
            verdict(ratio <= TARGET_LOOKUP_RATIO)
        );
        let ratio = last.est_batch.net / first.est_batch.net.max(0.1);
        println!(
            "  established random flow, warmed RX batches, at {} vs {}: {:.2}x (target <= {:.0}x): {}",
            last.n,
            first.n,
            ratio,
            TARGET_LOOKUP_RATIO,
            verdict(ratio <= TARGET_LOOKUP_RATIO)
        );
    }
    for s in &scales {
        println!(
            "  bytes per connection entry (computed, table full) at capacity for {}: {} (target <= {}): {}",
            s.n,
            s.bpe,
            TARGET_BYTES_PER_ENTRY,
            verdict(s.bpe <= TARGET_BYTES_PER_ENTRY)
        );
    }
    println!("  per-case PASS/MISS above compares net ns with the target");
}
