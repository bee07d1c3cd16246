//! Golden engine table: rows of (name, input frame, expected verdict,
//! expected output frame), run through a fresh `Engine` each (after the
//! row's setup frames). Expected frames are built independently, field by
//! field, with the naive builder of `tests/wire_builder` (own checksums),
//! never with the engine's rewrite functions; the comparison is byte for
//! byte, and every forwarded frame's checksums are also verified by full
//! recomputation.

mod engine_harness;

use std::net::IpAddr;

use engine_harness::wire_builder::*;
use engine_harness::{mac_of, Harness, IFINDEX, SRC_MAC};
use xdpvs::shard::engine::owner_shard;
use xdpvs::shard::verdict::{DropReason, Verdict};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

const C4: &str = "198.18.10.1";
const C6: &str = "2001:db8:5:1::1";
const VIP4: &str = "198.18.0.10";
const VIP6: &str = "2001:db8::10";
const RA: &str = "198.18.1.1";
const RB: &str = "198.18.1.2";
const RC: &str = "198.18.1.3";
const RD: &str = "198.18.1.4";
const RE: &str = "198.18.1.5";
const RA6: &str = "2001:db8:1::1";
const RB6: &str = "2001:db8:1::2";
const RC6: &str = "2001:db8:1::3";
const RD6: &str = "2001:db8:1::4";
const TUN4: &str = "198.18.0.2";
const TUN6: &str = "2001:db8::2";
const ROUTER4: &str = "198.18.200.1";
const ROUTER6: &str = "2001:db8:c8::1";
const GUE: u16 = 6080;

const CONFIG: &str = r#"
[director]
interfaces = ["eth0"]
tunnel_src4 = "198.18.0.2"
tunnel_src6 = "2001:db8::2"
gue_port = 6080

[[service]]
name = "dr4"
proto = "tcp"
vip = "198.18.0.10"
port = 80
scheduler = "rr"
  [[service.real]]
  addr = "198.18.1.1"

[[service]]
name = "dr6"
proto = "tcp"
vip = "2001:db8::10"
port = 80
scheduler = "rr"
  [[service.real]]
  addr = "2001:db8:1::1"

[[service]]
name = "nat4"
proto = "tcp"
vip = "198.18.0.10"
port = 81
scheduler = "rr"
  [[service.real]]
  addr = "198.18.1.2"
  port = 8081
  forward = "nat"

[[service]]
name = "nat4-udp"
proto = "udp"
vip = "198.18.0.10"
port = 53
scheduler = "rr"
  [[service.real]]
  addr = "198.18.1.2"
  port = 5353
  forward = "nat"

[[service]]
name = "nat6"
proto = "tcp"
vip = "2001:db8::10"
port = 81
scheduler = "rr"
  [[service.real]]
  addr = "2001:db8:1::2"
  port = 8081
  forward = "nat"

[[service]]
name = "ipip4"
proto = "tcp"
vip = "198.18.0.10"
port = 82
scheduler = "rr"
  [[service.real]]
  addr = "198.18.1.3"
  forward = "ipip"

[[service]]
name = "gue4"
proto = "tcp"
vip = "198.18.0.10"
port = 83
scheduler = "rr"
  [[service.real]]
  addr = "198.18.1.4"
  forward = "gue"

[[service]]
name = "ipip6"
proto = "tcp"
vip = "2001:db8::10"
port = 82
scheduler = "rr"
  [[service.real]]
  addr = "2001:db8:1::3"
  forward = "ipip"

[[service]]
name = "gue6"
proto = "tcp"
vip = "2001:db8::10"
port = 83
scheduler = "rr"
  [[service.real]]
  addr = "2001:db8:1::4"
  forward = "gue"

[[service]]
name = "gue6-over-v4"
proto = "udp"
vip = "2001:db8::10"
port = 84
scheduler = "rr"
  [[service.real]]
  addr = "198.18.1.5"
  forward = "gue"
"#;

// ------------------------------------------------- independent builders

fn v4(src: &str, dst: &str, proto: u8) -> V4 {
    V4::new(src, dst, proto)
}

fn v6(src: &str, dst: &str, next: u8) -> V6 {
    V6::new(src, dst, next)
}

fn seg(src: &str, dst: &str, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    tcp(
        ip(src),
        ip(dst),
        sport,
        dport,
        flags,
        &[],
        b"GET / HTTP/1.0\r\n\r\n",
    )
}

fn dgram(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    udp(
        ip(src),
        ip(dst),
        sport,
        dport,
        b"\x12\x34\x01\x00query",
        false,
    )
}

/// An IPv4 TCP packet (the builder's header defaults: TTL 61, TOS 0x10,
/// id 0x04d2, DF).
fn tcp4(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Vec<u8> {
    v4(src, dst, 6).build(&seg(src, dst, sport, dport, flags))
}

/// An IPv6 TCP packet (hop limit 63, traffic class 0x28, flow 0x12345).
fn tcp6(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Vec<u8> {
    v6(src, dst, 6).build(&seg(src, dst, sport, dport, flags))
}

fn udp4(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    v4(src, dst, 17).build(&dgram(src, dst, sport, dport))
}

fn udp6(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    v6(src, dst, 17).build(&dgram(src, dst, sport, dport))
}

/// A frame as a client's router sends it to the director.
fn input(pkt: &[u8]) -> Vec<u8> {
    eth_in(&[], if pkt[0] >> 4 == 6 { 0x86dd } else { 0x0800 }, pkt)
}

/// A frame as the director sends it to the next hop `to`.
fn output(to: &str, pkt: &[u8]) -> Vec<u8> {
    eth(
        mac_of(ip(to)),
        SRC_MAC,
        &[],
        if pkt[0] >> 4 == 6 { 0x86dd } else { 0x0800 },
        pkt,
    )
}

/// Outer IPv4 of a tunnel: TOS copied from the inner packet, id 0, DF
/// (copied from an IPv4 inner, always for an IPv6 inner), TTL 64.
fn outer4(dst: &str, proto: u8, tos: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = v4(TUN4, dst, proto);
    h.ttl = 64;
    h.tos = tos;
    h.id = 0;
    h.frag = 0x4000;
    h.build(payload)
}

/// Outer IPv6 of a tunnel: traffic class copied, flow label 0, hop limit 64.
fn outer6(dst: &str, next: u8, tc: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = v6(TUN6, dst, next);
    h.hlim = 64;
    h.tc = tc;
    h.flow = 0;
    h.build(payload)
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

/// The GUE source port the engine chose (a per-flow hash: not part of the
/// golden bytes, but it must be in the dynamic range).
fn gue_sport(out: &[u8], outer_len: usize) -> u16 {
    let p = be16(out, 14 + outer_len);
    assert!(p >= 49152, "GUE source port {p}");
    p
}

// ------------------------------------------------- the table

type Expect = Box<dyn Fn(&[u8]) -> Vec<u8>>;

struct Row {
    name: &'static str,
    /// Shard and shard count of the engine.
    shard: (u16, u16),
    /// Frames processed first (each must be forwarded).
    setup: Vec<Vec<u8>>,
    input: Vec<u8>,
    verdict: Verdict,
    /// The expected output frame; gets the actual one (for the GUE port).
    expected: Expect,
}

const FWD: Verdict = Verdict::Forward { ifindex: IFINDEX };

fn exact(b: Vec<u8>) -> Expect {
    Box::new(move |_| b.clone())
}

fn same(input: &[u8]) -> Expect {
    exact(input.to_vec())
}

fn row(
    name: &'static str,
    setup: Vec<Vec<u8>>,
    input: Vec<u8>,
    verdict: Verdict,
    expected: Expect,
) -> Row {
    Row {
        name,
        shard: (0, 1),
        setup,
        input,
        verdict,
        expected,
    }
}

fn rows() -> Vec<Row> {
    let mut rows = Vec::new();

    // DR: the IP packet is untouched, the MACs are the next hop's.
    let p = tcp4(C4, 40000, VIP4, 80, SYN);
    rows.push(row("dr v4", vec![], input(&p), FWD, exact(output(RA, &p))));
    let p = tcp6(C6, 40000, VIP6, 80, SYN);
    rows.push(row("dr v6", vec![], input(&p), FWD, exact(output(RA6, &p))));
    // DR of a VLAN-tagged frame: sent untagged.
    let p = tcp4(C4, 40001, VIP4, 80, SYN);
    rows.push(row(
        "dr v4 vlan",
        vec![],
        eth_in(&[(0x8100, 0x0064)], 0x0800, &p),
        FWD,
        exact(output(RA, &p)),
    ));

    // NAT in: destination VIP:vport -> RIP:rport.
    rows.push(row(
        "nat in v4 tcp",
        vec![],
        input(&tcp4(C4, 40000, VIP4, 81, SYN)),
        FWD,
        exact(output(RB, &tcp4(C4, 40000, RB, 8081, SYN))),
    ));
    rows.push(row(
        "nat in v4 udp",
        vec![],
        input(&udp4(C4, 5000, VIP4, 53)),
        FWD,
        exact(output(RB, &udp4(C4, 5000, RB, 5353))),
    ));
    rows.push(row(
        "nat in v6 tcp",
        vec![],
        input(&tcp6(C6, 40000, VIP6, 81, SYN)),
        FWD,
        exact(output(RB6, &tcp6(C6, 40000, RB6, 8081, SYN))),
    ));
    // NAT in, established: a data segment.
    rows.push(row(
        "nat in v4 data",
        vec![input(&tcp4(C4, 40000, VIP4, 81, SYN))],
        input(&tcp4(C4, 40000, VIP4, 81, PSH | ACK)),
        FWD,
        exact(output(RB, &tcp4(C4, 40000, RB, 8081, PSH | ACK))),
    ));

    // NAT out: source RIP:rport -> VIP:vport, to the client.
    rows.push(row(
        "nat out v4 tcp",
        vec![input(&tcp4(C4, 40000, VIP4, 81, SYN))],
        input(&tcp4(RB, 8081, C4, 40000, SYN | ACK)),
        FWD,
        exact(output(C4, &tcp4(VIP4, 81, C4, 40000, SYN | ACK))),
    ));
    rows.push(row(
        "nat out v4 udp",
        vec![input(&udp4(C4, 5000, VIP4, 53))],
        input(&udp4(RB, 5353, C4, 5000)),
        FWD,
        exact(output(C4, &udp4(VIP4, 53, C4, 5000))),
    ));
    rows.push(row(
        "nat out v6 tcp",
        vec![input(&tcp6(C6, 40000, VIP6, 81, SYN))],
        input(&tcp6(RB6, 8081, C6, 40000, SYN | ACK)),
        FWD,
        exact(output(C6, &tcp6(VIP6, 81, C6, 40000, SYN | ACK))),
    ));

    // IPIP: outer header from the tunnel source, inner packet unchanged.
    let p = tcp4(C4, 40000, VIP4, 82, SYN);
    rows.push(row(
        "ipip v4 in v4",
        vec![],
        input(&p),
        FWD,
        exact(output(RC, &outer4(RC, 4, 0x10, &p))),
    ));
    let p = tcp6(C6, 40000, VIP6, 82, SYN);
    rows.push(row(
        "ipip v6 in v6",
        vec![],
        input(&p),
        FWD,
        exact(output(RC6, &outer6(RC6, 41, 0x28, &p))),
    ));

    // GUE: outer IP + UDP (flow-hash source port, gue_port) + inner packet;
    // UDP checksum 0 over IPv4, computed over IPv6.
    let p = tcp4(C4, 40000, VIP4, 83, SYN);
    let inner = p.clone();
    rows.push(row(
        "gue v4 in v4",
        vec![],
        input(&p),
        FWD,
        Box::new(move |out| {
            let sport = gue_sport(out, 20);
            let u = udp(ip(TUN4), ip(RD), sport, GUE, &inner, true);
            output(RD, &outer4(RD, 17, 0x10, &u))
        }),
    ));
    let p = tcp6(C6, 40000, VIP6, 83, SYN);
    let inner = p.clone();
    rows.push(row(
        "gue v6 in v6",
        vec![],
        input(&p),
        FWD,
        Box::new(move |out| {
            let sport = gue_sport(out, 40);
            let u = udp(ip(TUN6), ip(RD6), sport, GUE, &inner, false);
            output(RD6, &outer6(RD6, 17, 0x28, &u))
        }),
    ));
    let p = udp6(C6, 5000, VIP6, 84);
    let inner = p.clone();
    rows.push(row(
        "gue v6 in v4",
        vec![],
        input(&p),
        FWD,
        Box::new(move |out| {
            let sport = gue_sport(out, 20);
            let u = udp(ip(TUN4), ip(RE), sport, GUE, &inner, true);
            output(RE, &outer4(RE, 17, 0x28, &u))
        }),
    ));

    // ICMP errors about a connection's reply (quoted VIP -> client).
    let quoted = tcp4(VIP4, 80, C4, 40000, ACK);
    let e = v4(ROUTER4, VIP4, 1).build(&icmp4(3, 4, 1400, &quoted));
    rows.push(row(
        "icmp frag needed dr v4",
        vec![input(&tcp4(C4, 40000, VIP4, 80, SYN))],
        input(&e),
        FWD,
        exact(output(RA, &e)),
    ));
    let quoted = tcp4(VIP4, 81, C4, 40000, ACK);
    let e = v4(ROUTER4, VIP4, 1).build(&icmp4(3, 4, 1400, &quoted));
    let want_quoted = tcp4(RB, 8081, C4, 40000, ACK);
    let want = v4(ROUTER4, RB, 1).build(&icmp4(3, 4, 1400, &want_quoted));
    rows.push(row(
        "icmp frag needed nat v4",
        vec![input(&tcp4(C4, 40000, VIP4, 81, SYN))],
        input(&e),
        FWD,
        exact(output(RB, &want)),
    ));
    let quoted = tcp6(VIP6, 81, C6, 40000, ACK);
    let e = v6(ROUTER6, VIP6, 58).build(&icmp6(ip(ROUTER6), ip(VIP6), 2, 0, 1280, &quoted));
    let want_quoted = tcp6(RB6, 8081, C6, 40000, ACK);
    let want = v6(ROUTER6, RB6, 58).build(&icmp6(ip(ROUTER6), ip(RB6), 2, 0, 1280, &want_quoted));
    rows.push(row(
        "icmp6 too big nat v6",
        vec![input(&tcp6(C6, 40000, VIP6, 81, SYN))],
        input(&e),
        FWD,
        exact(output(RB6, &want)),
    ));
    // From the NAT real server's side (quoted client -> RIP) to the client.
    let quoted = udp4(C4, 5000, RB, 5353);
    let e = v4(RB, C4, 1).build(&icmp4(3, 3, 0, &quoted));
    let want_quoted = udp4(C4, 5000, VIP4, 53);
    let want = v4(VIP4, C4, 1).build(&icmp4(3, 3, 0, &want_quoted));
    rows.push(row(
        "icmp port unreachable nat out v4",
        vec![input(&udp4(C4, 5000, VIP4, 53))],
        input(&e),
        FWD,
        exact(output(C4, &want)),
    ));

    // Hand-off: a client of the other shard; the frame is unchanged.
    let snap = engine_harness::snapshot(CONFIG, None);
    let other = (1..=255u8)
        .map(|h| IpAddr::from([198, 18, 20, h]))
        .find(|a| owner_shard(*a, &snap, 2) == 1)
        .unwrap()
        .to_string();
    let f = input(&tcp4(&other, 40000, VIP4, 80, SYN));
    rows.push(Row {
        shard: (0, 2),
        ..row(
            "handoff request",
            vec![],
            f.clone(),
            Verdict::Handoff(1),
            same(&f),
        )
    });
    let f = input(&tcp4(RB, 8081, &other, 40000, ACK));
    rows.push(Row {
        shard: (0, 2),
        ..row(
            "handoff nat reply",
            vec![],
            f.clone(),
            Verdict::Handoff(1),
            same(&f),
        )
    });

    // Not ours.
    let arp = eth(
        [0xff; 6],
        MAC_A,
        &[],
        0x0806,
        &[
            0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 198, 18, 10, 1, 0, 0, 0, 0, 0, 0, 198, 18, 0,
            10,
        ],
    );
    rows.push(row(
        "pass arp",
        vec![],
        arp.clone(),
        Verdict::Pass,
        same(&arp),
    ));
    let f = input(&tcp4(C4, 40000, "198.18.0.3", 22, SYN));
    rows.push(row(
        "pass other host",
        vec![],
        f.clone(),
        Verdict::Pass,
        same(&f),
    ));
    let f = input(&tcp6(C6, 40000, VIP6, 22, SYN));
    rows.push(row(
        "pass vip other port",
        vec![],
        f.clone(),
        Verdict::Pass,
        same(&f),
    ));

    // Drops leave the frame as it was.
    let mut f = input(&tcp4(C4, 40000, VIP4, 80, SYN));
    f.truncate(14 + 19);
    rows.push(row(
        "malformed truncated ipv4",
        vec![],
        f.clone(),
        Verdict::Drop(DropReason::Malformed),
        same(&f),
    ));
    let mut f = input(&tcp4(C4, 40000, VIP4, 80, SYN));
    f[14] = 0x43;
    rows.push(row(
        "malformed ihl",
        vec![],
        f.clone(),
        Verdict::Drop(DropReason::Malformed),
        same(&f),
    ));
    let f = input(&tcp4(C4, 40000, VIP4, 80, ACK));
    rows.push(row(
        "drop not syn",
        vec![],
        f.clone(),
        Verdict::Drop(DropReason::NotSyn),
        same(&f),
    ));
    let mut h = v4(C4, VIP4, 6);
    h.frag = 0x2000;
    let f = input(&h.build(&seg(C4, VIP4, 40000, 80, SYN)));
    rows.push(row(
        "drop fragment",
        vec![],
        f.clone(),
        Verdict::Drop(DropReason::Fragment),
        same(&f),
    ));
    rows
}

#[test]
fn golden_engine_table() {
    let mut failures = Vec::new();
    let rows = rows();
    let mut names = std::collections::HashSet::new();
    for r in &rows {
        assert!(names.insert(r.name), "duplicate row {}", r.name);
        let mut h = Harness::sharded(CONFIG, r.shard.0, r.shard.1);
        for s in &r.setup {
            assert_eq!(h.process(s).0, FWD, "{}: setup frame", r.name);
        }
        let (v, out) = h.process(&r.input);
        if v != r.verdict {
            failures.push(format!(
                "{}: verdict {v:?}, expected {:?}",
                r.name, r.verdict
            ));
            continue;
        }
        let want = (r.expected)(&out);
        if out != want {
            failures.push(format!(
                "{}: output differs\n  got  {out:02x?}\n  want {want:02x?}",
                r.name
            ));
            continue;
        }
        if v == FWD {
            verify_frame(&out);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(rows.len() >= 25);
}

/// The GUE source port is a per-flow constant: every packet of a flow
/// takes the same one, and ICMP errors about the flow take it too.
#[test]
fn gue_source_port_is_stable_per_flow() {
    let mut h = Harness::new(CONFIG);
    let (_, a) = h.process(&input(&tcp4(C4, 40000, VIP4, 83, SYN)));
    let (_, b) = h.process(&input(&tcp4(C4, 40000, VIP4, 83, ACK)));
    assert_eq!(gue_sport(&a, 20), gue_sport(&b, 20));
    let quoted = tcp4(VIP4, 83, C4, 40000, ACK);
    let e = v4(ROUTER4, VIP4, 1).build(&icmp4(3, 4, 1400, &quoted));
    let (v, c) = h.process(&input(&e));
    assert_eq!(v, FWD);
    assert_eq!(gue_sport(&c, 20), gue_sport(&a, 20));
    assert_eq!(&c[14 + 20 + 8..], &e[..]);
}
