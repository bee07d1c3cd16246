//! Golden packet tests: hand-built frames are parsed and rewritten, and the
//! result must equal a hand-built expected frame byte for byte; every
//! checksum of the output is also verified by full recomputation.

mod wire_builder;

use std::net::IpAddr;

use wire_builder::*;
use xdpvs::shard::forward::{self, ForwardError};
use xdpvs::shard::nexthop::NextHop;
use xdpvs::shard::verdict::Frame;
use xdpvs::wire::{parse, L3Kind, PacketInfo, WireError};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

const C4: &str = "198.18.0.10";
const VIP4: &str = "198.18.1.1";
const RIP4: &str = "198.19.0.20";
const DIR4: &str = "198.18.255.1";
const RTR4: &str = "198.18.200.1";
const C6: &str = "2001:db8::10";
const VIP6: &str = "2001:db8:1::1";
const RIP6: &str = "2001:db8:2::20";
const DIR6: &str = "2001:db8:ff::1";
const RTR6: &str = "2001:db8:c8::1";

#[derive(Clone, Copy, Debug)]
enum Op {
    Dr,
    NatIn(IpAddr, u16),
    NatOut(IpAddr, u16),
    IcmpIn(IpAddr, u16),
    IcmpOut(IpAddr, u16),
    Ipip(IpAddr, IpAddr),
    Gue(IpAddr, IpAddr, u16, u16),
}

struct Case {
    name: &'static str,
    input: Vec<u8>,
    op: Op,
    want: Result<Vec<u8>, ForwardError>,
    headroom: usize,
    mtu: u16,
}

fn case(name: &'static str, input: Vec<u8>, op: Op, want: Result<Vec<u8>, ForwardError>) -> Case {
    Case {
        name,
        input,
        op,
        want,
        headroom: 128,
        mtu: 1500,
    }
}

fn nh(mtu: u16) -> NextHop {
    NextHop {
        ifindex: 7,
        src_mac: NH_SRC,
        dst_mac: NH_DST,
        mtu,
    }
}

fn apply(fr: &mut Frame<'_>, info: &PacketInfo, op: Op, nh: &NextHop) -> Result<(), ForwardError> {
    match op {
        Op::Dr => forward::dr(fr, info, nh),
        Op::NatIn(a, p) => forward::nat_in(fr, info, a, p, nh),
        Op::NatOut(a, p) => forward::nat_out(fr, info, a, p, nh),
        Op::IcmpIn(a, p) => forward::nat_icmp_in(fr, info, a, p, nh),
        Op::IcmpOut(a, p) => forward::nat_icmp_out(fr, info, a, p, nh),
        Op::Ipip(s, d) => forward::ipip(fr, info, s, d, nh),
        Op::Gue(s, d, sp, dp) => forward::gue(fr, info, s, d, sp, dp, nh),
    }
}

/// Run one rewrite on a copy of `input` placed after `headroom` bytes.
fn run(input: &[u8], op: Op, headroom: usize, mtu: u16) -> Result<Vec<u8>, ForwardError> {
    let info = parse(input).expect("input parses");
    let mut buf = vec![0x5a; headroom + input.len()];
    buf[headroom..].copy_from_slice(input);
    let mut fr = Frame::new(&mut buf, headroom, input.len());
    match apply(&mut fr, &info, op, &nh(mtu)) {
        Ok(()) => Ok(fr.data().to_vec()),
        Err(e) => {
            assert_eq!(
                (fr.start, fr.len),
                (headroom, input.len()),
                "moved on error"
            );
            assert_eq!(fr.data(), input, "changed on error");
            Err(e)
        }
    }
}

fn check_cases(cases: Vec<Case>) {
    for c in cases {
        let got = run(&c.input, c.op, c.headroom, c.mtu);
        match (&got, &c.want) {
            (Ok(g), Ok(w)) => {
                assert_eq!(hex(g), hex(w), "case {}", c.name);
                let info = parse(g).unwrap_or_else(|e| panic!("case {}: output {e}", c.name));
                assert_eq!(info.vlans, 0, "case {}: output untagged", c.name);
                if !info.is_fragment {
                    verify_frame(g);
                }
            }
            _ => assert_eq!(got, c.want, "case {}", c.name),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.chunks(16)
        .map(|l| {
            l.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn v4(src: &str, dst: &str, proto: u8) -> V4 {
    V4::new(src, dst, proto)
}

fn v6(src: &str, dst: &str, next: u8) -> V6 {
    V6::new(src, dst, next)
}

fn tcp4(src: &str, dst: &str, sp: u16, dp: u16, flags: u8, opts: &[u8], pl: &[u8]) -> Vec<u8> {
    v4(src, dst, 6).build(&tcp(ip(src), ip(dst), sp, dp, flags, opts, pl))
}

fn udp4(src: &str, dst: &str, sp: u16, dp: u16, pl: &[u8]) -> Vec<u8> {
    v4(src, dst, 17).build(&udp(ip(src), ip(dst), sp, dp, pl, false))
}

fn tcp6(src: &str, dst: &str, sp: u16, dp: u16, flags: u8, pl: &[u8]) -> Vec<u8> {
    v6(src, dst, 6).build(&tcp(ip(src), ip(dst), sp, dp, flags, &[], pl))
}

fn udp6(src: &str, dst: &str, sp: u16, dp: u16, pl: &[u8]) -> Vec<u8> {
    v6(src, dst, 17).build(&udp(ip(src), ip(dst), sp, dp, pl, false))
}

#[test]
fn builder_matches_known_vectors() {
    // Wikipedia's IPv4 header example: checksum b861.
    let mut h = V4::new("192.168.0.1", "192.168.0.199", 17);
    h.tos = 0;
    h.id = 0;
    h.ttl = 64;
    h.total_len = Some(0x73);
    let b = h.build(&[]);
    assert_eq!(&b[10..12], &[0xb8, 0x61]);
    // RFC 1071 example.
    assert_eq!(
        naive_sum(&[0, 1, 0xf2, 3, 0xf4, 0xf5, 0xf6, 0xf7], 0),
        0xddf2
    );
}

#[test]
fn golden_dr() {
    let t4 = tcp4(C4, VIP4, 40000, 80, SYN, &[2, 4, 5, 0xb4], &[]);
    let u6 = udp6(C6, VIP6, 5000, 53, &payload(30, 1));
    let mut padded = eth_in(
        &[(0x88a8, 10), (0x8100, 20)],
        0x0800,
        &udp4(C4, VIP4, 1, 2, &[]),
    );
    padded.resize(68, 0);
    let mut padded_out = eth_out(0x0800, &udp4(C4, VIP4, 1, 2, &[]));
    padded_out.resize(60, 0);
    check_cases(vec![
        case(
            "dr v4 tcp",
            eth_in(&[], 0x0800, &t4),
            Op::Dr,
            Ok(eth_out(0x0800, &t4)),
        ),
        case(
            "dr v6 udp, 802.1Q tag stripped",
            eth_in(&[(0x8100, 100)], 0x86dd, &u6),
            Op::Dr,
            Ok(eth_out(0x86dd, &u6)),
        ),
        case(
            "dr v4 QinQ with Ethernet padding kept",
            padded,
            Op::Dr,
            Ok(padded_out),
        ),
        Case {
            mtu: (t4.len() - 1) as u16,
            ..case(
                "dr too big",
                eth_in(&[], 0x0800, &t4),
                Op::Dr,
                Err(ForwardError::TooBig {
                    mtu: (t4.len() - 1) as u16,
                }),
            )
        },
        Case {
            mtu: t4.len() as u16,
            ..case(
                "dr exactly mtu",
                eth_in(&[], 0x0800, &t4),
                Op::Dr,
                Ok(eth_out(0x0800, &t4)),
            )
        },
    ]);
}

#[test]
fn golden_nat_in() {
    let rip4 = ip(RIP4);
    let rip6 = ip(RIP6);
    let pl = payload(100, 7);

    // IPv4 with options (router alert) and TCP with MSS + SACK-permitted.
    let mut opt_in = v4(C4, VIP4, 6);
    opt_in.opts = vec![0x94, 0x04, 0x00, 0x00];
    let mut opt_out = opt_in.clone();
    opt_out.dst = RIP4.parse().unwrap();
    let topts = [2, 4, 5, 0xb4, 4, 2, 1, 1];
    let t_in = opt_in.build(&tcp(ip(C4), ip(VIP4), 40000, 80, PSH | ACK, &topts, &pl));
    let t_out = opt_out.build(&tcp(ip(C4), rip4, 40000, 8080, PSH | ACK, &topts, &pl));

    // UDP without checksum stays without.
    let u0_in = v4(C4, VIP4, 17).build(&udp(ip(C4), ip(VIP4), 1234, 53, &pl, true));
    let u0_out = v4(C4, RIP4, 17).build(&udp(ip(C4), rip4, 1234, 5353, &pl, true));

    // IPv6 with hop-by-hop and destination options.
    let mut x_in = v6(C6, VIP6, 0);
    x_in.ext = [ext_hdr(60, 0), ext_hdr(6, 1)].concat();
    let mut x_out = x_in.clone();
    x_out.dst = RIP6.parse().unwrap();
    let x6_in = x_in.build(&tcp(ip(C6), ip(VIP6), 50000, 443, SYN, &[], &[]));
    let x6_out = x_out.build(&tcp(ip(C6), rip6, 50000, 8443, SYN, &[], &[]));

    // First fragment of a UDP datagram: the checksum covers the whole
    // datagram, the incremental update still gives the right one.
    let big = payload(200, 3);
    let mut f_in = v4(C4, VIP4, 17);
    f_in.frag = 0x2000;
    let mut f_out = f_in.clone();
    f_out.dst = RIP4.parse().unwrap();
    let frag_in = f_in.build(&udp(ip(C4), ip(VIP4), 999, 53, &big, false)[..64]);
    let frag_out = f_out.build(&udp(ip(C4), rip4, 999, 5353, &big, false)[..64]);

    // IPv6 first fragment.
    let mut g_in = v6(C6, VIP6, 44);
    g_in.ext = frag_hdr(17, 0, true, 77);
    let mut g_out = g_in.clone();
    g_out.dst = RIP6.parse().unwrap();
    let frag6_in = g_in.build(&udp(ip(C6), ip(VIP6), 999, 53, &big, false)[..64]);
    let frag6_out = g_out.build(&udp(ip(C6), rip6, 999, 5353, &big, false)[..64]);

    check_cases(vec![
        case(
            "nat_in v4 tcp with IP and TCP options",
            eth_in(&[], 0x0800, &t_in),
            Op::NatIn(rip4, 8080),
            Ok(eth_out(0x0800, &t_out)),
        ),
        case(
            "nat_in v4 udp",
            eth_in(&[], 0x0800, &udp4(C4, VIP4, 1234, 53, &pl)),
            Op::NatIn(rip4, 5353),
            Ok(eth_out(0x0800, &udp4(C4, RIP4, 1234, 5353, &pl))),
        ),
        case(
            "nat_in v4 udp checksum 0",
            eth_in(&[], 0x0800, &u0_in),
            Op::NatIn(rip4, 5353),
            Ok(eth_out(0x0800, &u0_out)),
        ),
        case(
            "nat_in v6 tcp with extension headers",
            eth_in(&[], 0x86dd, &x6_in),
            Op::NatIn(rip6, 8443),
            Ok(eth_out(0x86dd, &x6_out)),
        ),
        case(
            "nat_in v6 udp, QinQ stripped",
            eth_in(
                &[(0x88a8, 5), (0x8100, 6)],
                0x86dd,
                &udp6(C6, VIP6, 7, 53, &pl),
            ),
            Op::NatIn(rip6, 5353),
            Ok(eth_out(0x86dd, &udp6(C6, RIP6, 7, 5353, &pl))),
        ),
        case(
            "nat_in v4 first fragment",
            eth_in(&[], 0x0800, &frag_in),
            Op::NatIn(rip4, 5353),
            Ok(eth_out(0x0800, &frag_out)),
        ),
        case(
            "nat_in v6 first fragment",
            eth_in(&[], 0x86dd, &frag6_in),
            Op::NatIn(rip6, 5353),
            Ok(eth_out(0x86dd, &frag6_out)),
        ),
        case(
            "nat_in same port",
            eth_in(&[], 0x0800, &tcp4(C4, VIP4, 1, 80, SYN, &[], &[])),
            Op::NatIn(rip4, 80),
            Ok(eth_out(0x0800, &tcp4(C4, RIP4, 1, 80, SYN, &[], &[]))),
        ),
        Case {
            mtu: (t_in.len() - 1) as u16,
            ..case(
                "nat_in too big",
                eth_in(&[], 0x0800, &t_in),
                Op::NatIn(rip4, 8080),
                Err(ForwardError::TooBig {
                    mtu: (t_in.len() - 1) as u16,
                }),
            )
        },
    ]);
}

#[test]
fn golden_nat_out() {
    let vip4 = ip(VIP4);
    let vip6 = ip(VIP6);
    let pl = payload(33, 9);
    check_cases(vec![
        case(
            "nat_out v4 tcp syn-ack",
            eth_in(
                &[],
                0x0800,
                &tcp4(RIP4, C4, 8080, 40000, SYN | ACK, &[], &[]),
            ),
            Op::NatOut(vip4, 80),
            Ok(eth_out(
                0x0800,
                &tcp4(VIP4, C4, 80, 40000, SYN | ACK, &[], &[]),
            )),
        ),
        case(
            "nat_out v4 udp, 802.1Q stripped",
            eth_in(&[(0x8100, 3)], 0x0800, &udp4(RIP4, C4, 5353, 1234, &pl)),
            Op::NatOut(vip4, 53),
            Ok(eth_out(0x0800, &udp4(VIP4, C4, 53, 1234, &pl))),
        ),
        case(
            "nat_out v6 tcp",
            eth_in(&[], 0x86dd, &tcp6(RIP6, C6, 8443, 50000, ACK, &pl)),
            Op::NatOut(vip6, 443),
            Ok(eth_out(0x86dd, &tcp6(VIP6, C6, 443, 50000, ACK, &pl))),
        ),
        case(
            "nat_out v6 udp",
            eth_in(&[], 0x86dd, &udp6(RIP6, C6, 5353, 7, &pl)),
            Op::NatOut(vip6, 53),
            Ok(eth_out(0x86dd, &udp6(VIP6, C6, 53, 7, &pl))),
        ),
    ]);
}

#[test]
fn golden_nat_icmp() {
    let (vip4, rip4, vip6, rip6) = (ip(VIP4), ip(RIP4), ip(VIP6), ip(RIP6));
    let pl = payload(20, 5);

    // Real server says "port unreachable" about client -> RIP:5353 (full quote).
    let q_in = udp4(C4, RIP4, 40000, 5353, &pl);
    let q_out = udp4(C4, VIP4, 40000, 53, &pl);
    let un_in = v4(RIP4, C4, 1).build(&icmp4(3, 3, 0, &q_in));
    let un_out = v4(VIP4, C4, 1).build(&icmp4(3, 3, 0, &q_out));

    // Router says "fragmentation needed" about VIP:80 -> client, 28-byte quote.
    let big = payload(1400, 1);
    let rq_in = tcp4(VIP4, C4, 80, 40000, ACK, &[], &big);
    let rq_out = tcp4(RIP4, C4, 8080, 40000, ACK, &[], &big);
    let fn_in = v4(RTR4, VIP4, 1).build(&icmp4(3, 4, 1400, &rq_in[..28]));
    let fn_out = v4(RTR4, RIP4, 1).build(&icmp4(3, 4, 1400, &rq_out[..28]));
    // Same with a quote long enough to hold the TCP checksum.
    let fl_in = v4(RTR4, VIP4, 1).build(&icmp4(11, 0, 0, &rq_in[..60]));
    let fl_out = v4(RTR4, RIP4, 1).build(&icmp4(11, 0, 0, &rq_out[..60]));

    // A quote that ends inside the TCP checksum: that half checksum is
    // left as it was (its new high byte depends on the missing low byte).
    let half_in = v4(RTR4, VIP4, 1).build(&icmp4(11, 0, 0, &rq_in[..37]));
    let mut half_q = rq_out[..37].to_vec();
    half_q[36] = rq_in[36];
    let half_out = v4(RTR4, RIP4, 1).build(&icmp4(11, 0, 0, &half_q));

    // ICMPv6 packet too big about VIP:443 -> client.
    let q6_in = tcp6(VIP6, C6, 443, 50000, ACK, &big);
    let q6_out = tcp6(RIP6, C6, 8443, 50000, ACK, &big);
    let ptb_in = v6(RTR6, VIP6, 58).build(&icmp6(ip(RTR6), vip6, 2, 0, 1280, &q6_in[..80]));
    let ptb_out = v6(RTR6, RIP6, 58).build(&icmp6(ip(RTR6), rip6, 2, 0, 1280, &q6_out[..80]));

    // ICMPv6 unreachable from the real server about client -> RIP (UDP).
    let u6_in = udp6(C6, RIP6, 7, 5353, &pl);
    let u6_out = udp6(C6, VIP6, 7, 53, &pl);
    let du_in = v6(RIP6, C6, 58).build(&icmp6(rip6, ip(C6), 1, 4, 0, &u6_in));
    let du_out = v6(VIP6, C6, 58).build(&icmp6(vip6, ip(C6), 1, 4, 0, &u6_out));

    // Quoted ICMP echo (no ports): only addresses change.
    let echo_q_in = v4(C4, RIP4, 1).build(&icmp4(8, 0, 0x0001_0001, &pl));
    let echo_q_out = v4(C4, VIP4, 1).build(&icmp4(8, 0, 0x0001_0001, &pl));
    let te_in = v4(RIP4, C4, 1).build(&icmp4(11, 0, 0, &echo_q_in));
    let te_out = v4(VIP4, C4, 1).build(&icmp4(11, 0, 0, &echo_q_out));

    check_cases(vec![
        case(
            "icmp_out v4 port unreachable, full quote",
            eth_in(&[], 0x0800, &un_in),
            Op::IcmpOut(vip4, 53),
            Ok(eth_out(0x0800, &un_out)),
        ),
        case(
            "icmp_in v4 frag needed, 28-byte quote",
            eth_in(&[(0x8100, 9)], 0x0800, &fn_in),
            Op::IcmpIn(rip4, 8080),
            Ok(eth_out(0x0800, &fn_out)),
        ),
        case(
            "icmp_in v4 time exceeded, quote with TCP checksum",
            eth_in(&[], 0x0800, &fl_in),
            Op::IcmpIn(rip4, 8080),
            Ok(eth_out(0x0800, &fl_out)),
        ),
        case(
            "icmp_in v4, quote ends inside the TCP checksum",
            eth_in(&[], 0x0800, &half_in),
            Op::IcmpIn(rip4, 8080),
            Ok(eth_out(0x0800, &half_out)),
        ),
        case(
            "icmp_in v6 packet too big",
            eth_in(&[], 0x86dd, &ptb_in),
            Op::IcmpIn(rip6, 8443),
            Ok(eth_out(0x86dd, &ptb_out)),
        ),
        case(
            "icmp_out v6 unreachable, UDP quote",
            eth_in(&[], 0x86dd, &du_in),
            Op::IcmpOut(vip6, 53),
            Ok(eth_out(0x86dd, &du_out)),
        ),
        case(
            "icmp_out v4 quoting an echo",
            eth_in(&[], 0x0800, &te_in),
            Op::IcmpOut(vip4, 53),
            Ok(eth_out(0x0800, &te_out)),
        ),
        case(
            "icmp nat on a TCP packet",
            eth_in(&[], 0x0800, &tcp4(C4, VIP4, 1, 2, SYN, &[], &[])),
            Op::IcmpIn(rip4, 1),
            Err(ForwardError::NotIcmpError),
        ),
        case(
            "icmp nat on an echo request",
            eth_in(&[], 0x0800, &v4(C4, VIP4, 1).build(&icmp4(8, 0, 1, &pl))),
            Op::IcmpOut(vip4, 1),
            Err(ForwardError::NotIcmpError),
        ),
        case(
            "icmp nat family mismatch",
            eth_in(&[], 0x0800, &un_in),
            Op::IcmpOut(vip6, 53),
            Err(ForwardError::FamilyMismatch),
        ),
    ]);
}

/// The expected outer IPv4 of an encapsulation.
fn outer4(src: &str, dst: &str, proto: u8, tos: u8, df: bool) -> V4 {
    let mut o = V4::new(src, dst, proto);
    o.ttl = 64;
    o.tos = tos;
    o.id = 0;
    o.frag = if df { 0x4000 } else { 0 };
    o
}

fn outer6(src: &str, dst: &str, next: u8, tc: u8) -> V6 {
    let mut o = V6::new(src, dst, next);
    o.hlim = 64;
    o.tc = tc;
    o.flow = 0;
    o
}

#[test]
fn golden_ipip() {
    let (dir4, rip4, dir6, rip6) = (ip(DIR4), ip(RIP4), ip(DIR6), ip(RIP6));
    let in4 = tcp4(C4, VIP4, 40000, 80, SYN, &[2, 4, 5, 0xb4], &[]);
    let mut nodf = v4(C4, VIP4, 17);
    nodf.frag = 0;
    let in4_nodf = nodf.build(&udp(ip(C4), ip(VIP4), 1, 53, &payload(10, 0), false));
    let in6 = udp6(C6, VIP6, 7, 53, &payload(10, 2));
    let mut padded = eth_in(&[(0x8100, 44)], 0x0800, &in4_nodf);
    padded.resize(padded.len() + 9, 0);

    check_cases(vec![
        case(
            "ipip v4 in v4, DF and TOS copied",
            eth_in(&[], 0x0800, &in4),
            Op::Ipip(dir4, rip4),
            Ok(eth_out(
                0x0800,
                &outer4(DIR4, RIP4, 4, 0x10, true).build(&in4),
            )),
        ),
        case(
            "ipip v4 in v4 without DF, tagged and padded input",
            padded,
            Op::Ipip(dir4, rip4),
            Ok(eth_out(
                0x0800,
                &outer4(DIR4, RIP4, 4, 0x10, false).build(&in4_nodf),
            )),
        ),
        case(
            "ipip v6 in v4 (proto 41, DF)",
            eth_in(&[], 0x86dd, &in6),
            Op::Ipip(dir4, rip4),
            Ok(eth_out(
                0x0800,
                &outer4(DIR4, RIP4, 41, 0x28, true).build(&in6),
            )),
        ),
        case(
            "ipip v4 in v6 (next header 4)",
            eth_in(&[], 0x0800, &in4),
            Op::Ipip(dir6, rip6),
            Ok(eth_out(0x86dd, &outer6(DIR6, RIP6, 4, 0x10).build(&in4))),
        ),
        case(
            "ipip v6 in v6 (next header 41)",
            eth_in(&[(0x8100, 1)], 0x86dd, &in6),
            Op::Ipip(dir6, rip6),
            Ok(eth_out(0x86dd, &outer6(DIR6, RIP6, 41, 0x28).build(&in6))),
        ),
        case(
            "ipip mixed outer families",
            eth_in(&[], 0x0800, &in4),
            Op::Ipip(dir4, rip6),
            Err(ForwardError::FamilyMismatch),
        ),
        Case {
            headroom: 20,
            ..case(
                "ipip exactly enough headroom",
                eth_in(&[], 0x0800, &in4),
                Op::Ipip(dir4, rip4),
                Ok(eth_out(
                    0x0800,
                    &outer4(DIR4, RIP4, 4, 0x10, true).build(&in4),
                )),
            )
        },
        Case {
            headroom: 19,
            ..case(
                "ipip one byte short of headroom",
                eth_in(&[], 0x0800, &in4),
                Op::Ipip(dir4, rip4),
                Err(ForwardError::NoRoom),
            )
        },
        Case {
            headroom: 16,
            ..case(
                "ipip headroom from stripped VLAN tags",
                eth_in(&[(0x8100, 1)], 0x0800, &in4),
                Op::Ipip(dir4, rip4),
                Ok(eth_out(
                    0x0800,
                    &outer4(DIR4, RIP4, 4, 0x10, true).build(&in4),
                )),
            )
        },
        Case {
            mtu: (in4.len() + 20) as u16,
            ..case(
                "ipip exactly mtu",
                eth_in(&[], 0x0800, &in4),
                Op::Ipip(dir4, rip4),
                Ok(eth_out(
                    0x0800,
                    &outer4(DIR4, RIP4, 4, 0x10, true).build(&in4),
                )),
            )
        },
        Case {
            mtu: (in4.len() + 39) as u16,
            ..case(
                "ipip v6 outer too big",
                eth_in(&[], 0x0800, &in4),
                Op::Ipip(dir6, rip6),
                Err(ForwardError::TooBig {
                    mtu: (in4.len() - 1) as u16,
                }),
            )
        },
    ]);
}

#[test]
fn golden_gue() {
    let (dir4, rip4, dir6, rip6) = (ip(DIR4), ip(RIP4), ip(DIR6), ip(RIP6));
    let in4 = tcp4(C4, VIP4, 40000, 80, ACK, &[], &payload(64, 4));
    let in6 = tcp6(C6, VIP6, 50000, 443, ACK, &payload(65, 4));
    let sp = 50123;
    let gue4 = |inner: &[u8], tos: u8, df: bool| {
        let u = udp(dir4, rip4, sp, GUE_PORT, inner, true);
        outer4(DIR4, RIP4, 17, tos, df).build(&u)
    };
    let gue6 = |inner: &[u8], tc: u8| {
        let u = udp(dir6, rip6, sp, GUE_PORT, inner, false);
        outer6(DIR6, RIP6, 17, tc).build(&u)
    };
    let mut padded = eth_in(&[], 0x0800, &tcp4(C4, VIP4, 1, 80, SYN, &[], &[]));
    padded.resize(64, 0);
    let small4 = tcp4(C4, VIP4, 1, 80, SYN, &[], &[]);

    check_cases(vec![
        case(
            "gue v4 in v4, checksum 0",
            eth_in(&[], 0x0800, &in4),
            Op::Gue(dir4, rip4, sp, GUE_PORT),
            Ok(eth_out(0x0800, &gue4(&in4, 0x10, true))),
        ),
        case(
            "gue v6 in v4",
            eth_in(&[], 0x86dd, &in6),
            Op::Gue(dir4, rip4, sp, GUE_PORT),
            Ok(eth_out(0x0800, &gue4(&in6, 0x28, true))),
        ),
        case(
            "gue v4 in v6, checksum computed",
            eth_in(&[(0x8100, 2)], 0x0800, &in4),
            Op::Gue(dir6, rip6, sp, GUE_PORT),
            Ok(eth_out(0x86dd, &gue6(&in4, 0x10))),
        ),
        case(
            "gue v6 in v6",
            eth_in(&[], 0x86dd, &in6),
            Op::Gue(dir6, rip6, sp, GUE_PORT),
            Ok(eth_out(0x86dd, &gue6(&in6, 0x28))),
        ),
        case(
            "gue drops Ethernet padding",
            padded,
            Op::Gue(dir6, rip6, sp, GUE_PORT),
            Ok(eth_out(0x86dd, &gue6(&small4, 0x10))),
        ),
        Case {
            headroom: 47,
            ..case(
                "gue v6 headroom short",
                eth_in(&[], 0x0800, &in4),
                Op::Gue(dir6, rip6, sp, GUE_PORT),
                Err(ForwardError::NoRoom),
            )
        },
        Case {
            headroom: 48,
            ..case(
                "gue v6 headroom exact",
                eth_in(&[], 0x0800, &in4),
                Op::Gue(dir6, rip6, sp, GUE_PORT),
                Ok(eth_out(0x86dd, &gue6(&in4, 0x10))),
            )
        },
        Case {
            mtu: (in4.len() + 47) as u16,
            ..case(
                "gue v6 too big",
                eth_in(&[], 0x0800, &in4),
                Op::Gue(dir6, rip6, sp, GUE_PORT),
                Err(ForwardError::TooBig {
                    mtu: (in4.len() - 1) as u16,
                }),
            )
        },
        Case {
            mtu: (in4.len() + 28) as u16,
            ..case(
                "gue v4 exactly mtu",
                eth_in(&[], 0x0800, &in4),
                Op::Gue(dir4, rip4, sp, GUE_PORT),
                Ok(eth_out(0x0800, &gue4(&in4, 0x10, true))),
            )
        },
        case(
            "gue mixed outer families",
            eth_in(&[], 0x0800, &in4),
            Op::Gue(dir6, rip4, sp, GUE_PORT),
            Err(ForwardError::FamilyMismatch),
        ),
    ]);
}

#[test]
fn forward_errors() {
    let arp = {
        let mut f = eth_in(&[], 0x0806, &[0u8; 28]);
        f.resize(60, 0);
        f
    };
    let echo = v4(C4, VIP4, 1).build(&icmp4(8, 0, 1, &[1, 2, 3, 4]));
    let mut later = v4(C4, VIP4, 17);
    later.frag = 0x0010; // offset 128, last fragment
    let later = later.build(&payload(40, 0));
    let mut later6 = v6(C6, VIP6, 44);
    later6.ext = frag_hdr(6, 1448, true, 9);
    let later6 = later6.build(&payload(40, 0));
    let gre = v4(C4, VIP4, 47).build(&payload(8, 0));
    let t4 = tcp4(C4, VIP4, 1, 80, SYN, &[], &[]);
    let rip4 = ip(RIP4);
    let rip6 = ip(RIP6);

    check_cases(vec![
        case("dr on ARP", arp.clone(), Op::Dr, Err(ForwardError::NotIp)),
        case(
            "ipip on ARP",
            arp.clone(),
            Op::Ipip(rip4, rip4),
            Err(ForwardError::NotIp),
        ),
        case(
            "nat on ARP",
            arp,
            Op::NatIn(rip4, 1),
            Err(ForwardError::NotIp),
        ),
        case(
            "nat_in family mismatch",
            eth_in(&[], 0x0800, &t4),
            Op::NatIn(rip6, 80),
            Err(ForwardError::FamilyMismatch),
        ),
        case(
            "nat_out family mismatch",
            eth_in(&[], 0x86dd, &tcp6(RIP6, C6, 1, 2, ACK, &[])),
            Op::NatOut(rip4, 80),
            Err(ForwardError::FamilyMismatch),
        ),
        case(
            "nat on icmp echo",
            eth_in(&[], 0x0800, &echo),
            Op::NatIn(rip4, 80),
            Err(ForwardError::NoPorts),
        ),
        case(
            "nat on a later v4 fragment",
            eth_in(&[], 0x0800, &later),
            Op::NatIn(rip4, 80),
            Err(ForwardError::NoPorts),
        ),
        case(
            "nat on a later v6 fragment",
            eth_in(&[], 0x86dd, &later6),
            Op::NatOut(rip6, 80),
            Err(ForwardError::NoPorts),
        ),
        case(
            "nat on GRE",
            eth_in(&[], 0x0800, &gre),
            Op::NatIn(rip4, 80),
            Err(ForwardError::NoPorts),
        ),
        case(
            "dr on a later fragment is fine",
            eth_in(&[], 0x0800, &later),
            Op::Dr,
            Ok(eth_out(0x0800, &later)),
        ),
    ]);
}

#[test]
fn dec_ttl_golden() {
    let pl = payload(11, 0);
    let mut h = v4(C4, VIP4, 17);
    for ttl in [61u8, 2, 255] {
        h.ttl = ttl;
        let f = eth_in(
            &[],
            0x0800,
            &h.build(&udp(ip(C4), ip(VIP4), 1, 2, &pl, false)),
        );
        let info = parse(&f).unwrap();
        let mut g = f.clone();
        let mut fr = Frame::new(&mut g, 0, f.len());
        forward::dec_ttl(&mut fr, &info).unwrap();
        h.ttl = ttl - 1;
        let want = eth_in(
            &[],
            0x0800,
            &h.build(&udp(ip(C4), ip(VIP4), 1, 2, &pl, false)),
        );
        assert_eq!(fr.data(), &want[..], "ttl {ttl}");
        verify_frame(&want);
    }
    let mut x = v6(C6, VIP6, 6);
    x.hlim = 9;
    let f6 = eth_in(
        &[(0x8100, 1)],
        0x86dd,
        &x.build(&tcp(ip(C6), ip(VIP6), 1, 2, SYN, &[], &[])),
    );
    let info = parse(&f6).unwrap();
    let mut g = f6.clone();
    let mut fr = Frame::new(&mut g, 0, f6.len());
    forward::dec_ttl(&mut fr, &info).unwrap();
    x.hlim = 8;
    let want = eth_in(
        &[(0x8100, 1)],
        0x86dd,
        &x.build(&tcp(ip(C6), ip(VIP6), 1, 2, SYN, &[], &[])),
    );
    assert_eq!(fr.data(), &want[..]);

    for hops in [0u8, 1] {
        h.ttl = hops;
        let f = eth_in(
            &[],
            0x0800,
            &h.build(&udp(ip(C4), ip(VIP4), 1, 2, &pl, false)),
        );
        x.hlim = hops;
        let f6 = eth_in(
            &[],
            0x86dd,
            &x.build(&tcp(ip(C6), ip(VIP6), 1, 2, SYN, &[], &[])),
        );
        for frame in [&f, &f6] {
            let info = parse(frame).unwrap();
            let mut g = frame.clone();
            let mut fr = Frame::new(&mut g, 0, frame.len());
            assert_eq!(
                forward::dec_ttl(&mut fr, &info),
                Err(ForwardError::TtlExceeded)
            );
            assert_eq!(fr.data(), &frame[..]);
        }
    }
}

#[test]
fn mismatched_info_is_refused_not_panicking() {
    let f4 = eth_in(&[], 0x0800, &tcp4(C4, VIP4, 1, 80, SYN, &[], &[]));
    let f6 = eth_in(&[], 0x86dd, &tcp6(C6, VIP6, 1, 80, SYN, &[]));
    let i4 = parse(&f4).unwrap();
    let i6 = parse(&f6).unwrap();
    let n = nh(1500);
    let all = |frame: &[u8], info: &PacketInfo| {
        let ops = [
            Op::Dr,
            Op::NatIn(info.dst, 1),
            Op::NatOut(info.src, 1),
            Op::Ipip(ip(DIR4), ip(RIP4)),
            Op::Gue(ip(DIR4), ip(RIP4), 1, 2),
        ];
        for op in ops {
            let mut buf = vec![0u8; 64 + frame.len()];
            buf[64..].copy_from_slice(frame);
            let mut fr = Frame::new(&mut buf, 64, frame.len());
            assert_eq!(
                apply(&mut fr, info, op, &n),
                Err(ForwardError::Mismatch),
                "{op:?}"
            );
            assert_eq!(fr.data(), frame);
        }
    };
    // v6 info on a v4 frame (version nibble / lengths disagree).
    all(&f4, &i6);
    // v4 info on a truncated copy of its frame.
    all(&f4[..f4.len() - 1], &i4);
    // Info claiming an L3 offset inside the Ethernet header.
    let mut bad = i4;
    bad.l3_off = 4;
    all(&f4, &bad);
    let mut bad = i4;
    bad.l4_off = (f4.len() - 4) as u16;
    let mut buf = f4.clone();
    let mut fr = Frame::new(&mut buf, 0, f4.len());
    assert_eq!(
        forward::nat_in(&mut fr, &bad, ip(RIP4), 1, &n),
        Err(ForwardError::Mismatch)
    );
}

#[test]
fn parse_golden_fields() {
    // VLAN-tagged IPv6 with hop-by-hop, routing, fragment (first) and TCP.
    let mut h = v6(C6, VIP6, 0);
    h.ext = [ext_hdr(43, 0), ext_hdr(44, 1), frag_hdr(6, 0, true, 5)].concat();
    let seg = tcp(
        ip(C6),
        ip(VIP6),
        1111,
        443,
        SYN | ACK,
        &[1, 1, 1, 0],
        &payload(50, 0),
    );
    let pkt = h.build(&seg);
    let f = eth_in(&[(0x8100, 7)], 0x86dd, &pkt);
    let i = parse(&f).unwrap();
    assert_eq!(i.l3, L3Kind::Ipv6);
    assert_eq!((i.vlans, i.l3_off), (1, 18));
    assert_eq!(i.l4_off, 18 + 40 + 8 + 16 + 8);
    assert_eq!(
        (i.proto, i.sport, i.dport, i.tcp_flags),
        (6, 1111, 443, SYN | ACK)
    );
    assert!(i.is_fragment && i.first_fragment);
    assert_eq!(i.ttl, 63);
    assert_eq!(i.l3_len as usize, pkt.len());
    assert_eq!(i.payload_len, 50);
    assert_eq!(i.src, ip(C6));

    // IPv4 later fragment: no ports.
    let mut l = v4(C4, VIP4, 6);
    l.frag = 0x2003;
    let f = eth_in(&[], 0x0800, &l.build(&payload(24, 0)));
    let i = parse(&f).unwrap();
    assert!(i.is_fragment && !i.first_fragment);
    assert_eq!((i.sport, i.dport, i.payload_len), (0, 0, 24));
    assert!(!i.has_ports() && i.flow_key().is_none());

    // ICMP frag-needed with inner.
    let q = tcp4(VIP4, C4, 80, 40000, ACK, &[], &[]);
    let m = v4(RTR4, VIP4, 1).build(&icmp4(3, 4, 1400, &q[..28]));
    let f = eth_in(&[(0x88a8, 1), (0x8100, 2)], 0x0800, &m);
    let i = parse(&f).unwrap();
    assert_eq!((i.icmp_type, i.icmp_code, i.sport, i.dport), (3, 4, 0, 0));
    let inner = i.inner.unwrap();
    assert_eq!(
        (inner.proto, inner.sport, inner.dport, inner.mtu),
        (6, 80, 40000, 1400)
    );
    assert_eq!((inner.src, inner.dst), (ip(VIP4), ip(C4)));
    assert_eq!(inner.ip_off, 22 + 20 + 8);
    assert_eq!(inner.l4_off, 22 + 20 + 8 + 20);
    let k = inner.flow_key().unwrap();
    assert_eq!(k.reversed().dst, ip(VIP4));

    // ICMPv6 packet too big with MTU.
    let q6 = tcp6(VIP6, C6, 443, 1, ACK, &[]);
    let m = v6(RTR6, VIP6, 58).build(&icmp6(ip(RTR6), ip(VIP6), 2, 0, 1280, &q6));
    let i = parse(&eth_in(&[], 0x86dd, &m)).unwrap();
    assert_eq!(i.inner.unwrap().mtu, 1280);
    assert_eq!(i.inner.unwrap().sport, 443);

    // A third VLAN tag is "other".
    let f = eth_in(&[(0x88a8, 1), (0x8100, 2), (0x8100, 3)], 0x0800, &q);
    assert_eq!(parse(&f).unwrap().l3, L3Kind::Other(0x8100));
}

#[test]
fn parse_errors_golden() {
    let t4 = tcp4(C4, VIP4, 1, 80, SYN, &[], &[]);
    let mut bad_ihl = t4.clone();
    bad_ihl[0] = 0x44;
    let mut bad_total = t4.clone();
    bad_total[2..4].copy_from_slice(&19u16.to_be_bytes());
    let mut bad_doff = t4.clone();
    bad_doff[20 + 12] = 0x40;
    let mut u = udp4(C4, VIP4, 1, 2, &[1, 2, 3]);
    u[20 + 4..20 + 6].copy_from_slice(&12u16.to_be_bytes());
    let mut chain = v6(C6, VIP6, 60);
    chain.ext = (0..9).flat_map(|_| ext_hdr(60, 0)).collect();
    let mut hbh_late = v6(C6, VIP6, 60);
    hbh_late.ext = [ext_hdr(0, 0), ext_hdr(6, 0)].concat();
    let q = tcp4(VIP4, C4, 80, 1, ACK, &[], &[]);
    let cases: Vec<(&str, Vec<u8>, WireError)> = vec![
        ("bad ihl", eth_in(&[], 0x0800, &bad_ihl), WireError::BadIhl),
        (
            "bad total",
            eth_in(&[], 0x0800, &bad_total),
            WireError::BadTotalLen,
        ),
        (
            "bad data offset",
            eth_in(&[], 0x0800, &bad_doff),
            WireError::BadTcpOffset,
        ),
        (
            "udp len",
            eth_in(&[], 0x0800, &u),
            WireError::UdpLenMismatch,
        ),
        (
            "v4 ethertype, v6 packet",
            eth_in(&[], 0x0800, &udp6(C6, VIP6, 1, 2, &[])),
            WireError::BadVersion,
        ),
        (
            "chain too long",
            eth_in(&[], 0x86dd, &chain.build(&[])),
            WireError::ExtHeaderChainTooLong,
        ),
        (
            "hop-by-hop not first",
            eth_in(&[], 0x86dd, &hbh_late.build(&[0u8; 20])),
            WireError::ExtHeaderOrder,
        ),
        (
            "icmp quote truncated",
            eth_in(
                &[],
                0x0800,
                &v4(RTR4, VIP4, 1).build(&icmp4(3, 4, 1400, &q[..27])),
            ),
            WireError::IcmpInnerTruncated,
        ),
        (
            "icmp quote not v4",
            eth_in(
                &[],
                0x0800,
                &v4(RTR4, VIP4, 1).build(&icmp4(3, 4, 1400, &udp6(C6, VIP6, 1, 2, &[]))),
            ),
            WireError::IcmpInnerMalformed,
        ),
    ];
    for (name, f, want) in cases {
        assert_eq!(parse(&f), Err(want), "{name}");
    }
}
