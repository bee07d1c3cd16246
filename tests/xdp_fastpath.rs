//! The fast path against the engine, byte for byte (issue #15): for every
//! forwarding mode the fast path takes (DR, NAT towards the real server, NAT
//! replies, IPIP and GUE with every outer/inner family pair) and both address
//! families, a connection is established through
//! the engine (sans-IO), the entry the engine asks to install is installed
//! into a loaded XDP program's flow cache, and then the same packet goes
//! through both: the engine's frame and the program's frame (under
//! `BPF_PROG_TEST_RUN`) must be identical. A table of cases, then a proptest
//! over random flows, payloads, flags and checksum corner cases.
//!
//! Needs root (bpf()); no network namespace, no traffic.

#[path = "engine_harness/mod.rs"]
mod engine_harness;

use std::net::IpAddr;

use engine_harness::wire_builder::{et_of, eth_in, tcp, udp, V4, V6};
use engine_harness::{ip, Harness, IFINDEX, MTU};
use proptest::prelude::*;
use xdpvs::shard::offload::{FlowAction, OffloadCmd, OffloadEntry};
use xdpvs::shard::verdict::Verdict;
use xdpvs::xdp::{XdpProgram, XDP_PASS, XDP_REDIRECT, XDP_TX};

const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const SYN: u8 = 0x02;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;
/// The loopback device: what `BPF_PROG_TEST_RUN` runs on.
const LO: u32 = 1;
/// Outer source addresses and GUE port of the tunnel cases.
const TUN4: &str = "198.18.0.2";
const TUN6: &str = "2001:db8::2";
const GUE_PORT: u16 = 6080;

fn skip(test: &str) -> bool {
    xdpvs::dataplane::testutil::skip_without_root(test)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Dr,
    Nat,
    Ipip,
    Gue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum L4 {
    Tcp,
    Udp,
}

struct Case {
    mode: Mode,
    l4: L4,
    client: IpAddr,
    vip: IpAddr,
    real: IpAddr,
    cport: u16,
    vport: u16,
    rport: u16,
}

fn config(c: &Case) -> String {
    let fwd = match c.mode {
        Mode::Dr => "dr",
        Mode::Nat => "nat",
        Mode::Ipip => "ipip",
        Mode::Gue => "gue",
    };
    let proto = match c.l4 {
        L4::Tcp => "tcp",
        L4::Udp => "udp",
    };
    let port = if c.mode == Mode::Nat {
        format!("\nport = {}", c.rport)
    } else {
        String::new()
    };
    format!(
        "[director]\ninterfaces = [\"eth0\"]\ntunnel_src4 = \"{TUN4}\"\ntunnel_src6 = \"{TUN6}\"\ngue_port = {GUE_PORT}\n\n[[service]]\nname = \"s\"\nproto = \"{proto}\"\nvip = \"{}\"\nport = {}\nscheduler = \"rr\"\n\n[[service.real]]\naddr = \"{}\"\nforward = \"{fwd}\"{port}\n",
        c.vip, c.vport, c.real
    )
}

/// An IP packet `src -> dst` carrying `l4` (the L4 header and payload).
fn ip_packet(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let p = match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => {
            V4::new(&src.to_string(), &dst.to_string(), proto).build(l4)
        }
        _ => V6::new(&src.to_string(), &dst.to_string(), proto).build(l4),
    };
    eth_in(&[], et_of(src), &p)
}

#[allow(clippy::too_many_arguments)]
fn segment(
    l4: L4,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
    no_udp_csum: bool,
) -> Vec<u8> {
    match l4 {
        L4::Tcp => ip_packet(
            src,
            dst,
            6,
            &tcp(src, dst, sport, dport, flags, &[], payload),
        ),
        L4::Udp => ip_packet(
            src,
            dst,
            17,
            &udp(src, dst, sport, dport, payload, no_udp_csum),
        ),
    }
}

/// Establish the case's connection through the engine; returns the harness
/// and the entries it asked to install (client side, and for NAT the reply
/// side).
fn establish(c: &Case) -> (Harness, Vec<OffloadEntry>) {
    let mut h = Harness::new(&config(c));
    h.engine.set_offload(true);
    let to_vip = |flags| segment(c.l4, c.client, c.vip, c.cport, c.vport, flags, b"", false);
    let from_real = |flags| segment(c.l4, c.real, c.client, c.rport, c.cport, flags, b"x", false);
    match c.l4 {
        L4::Tcp => {
            assert!(matches!(h.process(&to_vip(SYN)).0, Verdict::Forward { .. }));
            if c.mode == Mode::Nat {
                let v = h.process(&from_real(SYN | ACK)).0;
                assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
            }
            assert!(matches!(h.process(&to_vip(ACK)).0, Verdict::Forward { .. }));
        }
        L4::Udp => {
            assert!(matches!(h.process(&to_vip(0)).0, Verdict::Forward { .. }));
        }
    }
    if c.mode == Mode::Nat {
        let v = h.process(&from_real(ACK)).0;
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    }
    let mut cmds = Vec::new();
    h.engine.take_offload(&mut cmds);
    let entries: Vec<OffloadEntry> = cmds
        .into_iter()
        .map(|c| match c {
            OffloadCmd::Install(e) => e,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let want = if c.mode == Mode::Nat { 2 } else { 1 };
    assert_eq!(entries.len(), want, "{entries:?}");
    (h, entries)
}

fn load(entries: &[OffloadEntry]) -> XdpProgram {
    let prog = XdpProgram::load().unwrap();
    prog.set_fast_path(true).unwrap();
    for e in entries {
        prog.flows().install(e, 1).unwrap();
    }
    prog
}

/// The same frame through the engine and the program: both forward it,
/// byte for byte the same.
fn same(h: &mut Harness, prog: &XdpProgram, frame: &[u8], what: &str) {
    let (v, engine_out) = h.process(frame);
    assert!(
        matches!(v, Verdict::Forward { ifindex } if ifindex == IFINDEX),
        "{what}: engine {v:?}"
    );
    let (action, xdp_out) = prog.test_run_frame(frame, LO, 0).unwrap();
    assert_eq!(action, XDP_REDIRECT, "{what}: XDP action");
    assert_eq!(
        hex(&xdp_out),
        hex(&engine_out),
        "{what}: XDP fast path (left) and engine (right) differ"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn cases() -> Vec<(&'static str, Case)> {
    let v4 = |mode, l4| Case {
        mode,
        l4,
        client: ip("198.18.100.7"),
        vip: ip("198.18.0.100"),
        real: ip("198.18.3.11"),
        cport: 40_001,
        vport: 80,
        rport: 8080,
    };
    let v6 = |mode, l4| Case {
        mode,
        l4,
        client: ip("2001:db8:100::7"),
        vip: ip("2001:db8::100"),
        real: ip("2001:db8:1::11"),
        cport: 40_001,
        vport: 80,
        rport: 8080,
    };
    let real4 = ip("198.18.3.11");
    let real6 = ip("2001:db8:1::11");
    let tun = |c: Case, real| Case { real, ..c };
    vec![
        ("dr tcp v4", v4(Mode::Dr, L4::Tcp)),
        ("dr udp v4", v4(Mode::Dr, L4::Udp)),
        ("dr tcp v6", v6(Mode::Dr, L4::Tcp)),
        ("dr udp v6", v6(Mode::Dr, L4::Udp)),
        ("nat tcp v4", v4(Mode::Nat, L4::Tcp)),
        ("nat udp v4", v4(Mode::Nat, L4::Udp)),
        ("nat tcp v6", v6(Mode::Nat, L4::Tcp)),
        ("nat udp v6", v6(Mode::Nat, L4::Udp)),
        ("ipip tcp v4 in v4", tun(v4(Mode::Ipip, L4::Tcp), real4)),
        ("ipip udp v4 in v4", tun(v4(Mode::Ipip, L4::Udp), real4)),
        ("ipip tcp v6 in v6", tun(v6(Mode::Ipip, L4::Tcp), real6)),
        ("ipip udp v6 in v6", tun(v6(Mode::Ipip, L4::Udp), real6)),
        ("ipip tcp v4 in v6", tun(v4(Mode::Ipip, L4::Tcp), real6)),
        ("ipip udp v4 in v6", tun(v4(Mode::Ipip, L4::Udp), real6)),
        ("ipip tcp v6 in v4", tun(v6(Mode::Ipip, L4::Tcp), real4)),
        ("ipip udp v6 in v4", tun(v6(Mode::Ipip, L4::Udp), real4)),
        ("gue tcp v4 in v4", tun(v4(Mode::Gue, L4::Tcp), real4)),
        ("gue udp v4 in v4", tun(v4(Mode::Gue, L4::Udp), real4)),
        ("gue tcp v6 in v6", tun(v6(Mode::Gue, L4::Tcp), real6)),
        ("gue udp v6 in v6", tun(v6(Mode::Gue, L4::Udp), real6)),
        ("gue tcp v4 in v6", tun(v4(Mode::Gue, L4::Tcp), real6)),
        ("gue udp v4 in v6", tun(v4(Mode::Gue, L4::Udp), real6)),
        ("gue tcp v6 in v4", tun(v6(Mode::Gue, L4::Tcp), real4)),
        ("gue udp v6 in v4", tun(v6(Mode::Gue, L4::Udp), real4)),
    ]
}

#[test]
fn every_mode_and_family_matches_the_engine() {
    if skip("every_mode_and_family_matches_the_engine") {
        return;
    }
    for (name, c) in cases() {
        let (mut h, entries) = establish(&c);
        let prog = load(&entries);
        let flags = if c.l4 == L4::Tcp { ACK | PSH } else { 0 };
        // 511 and 1200: the GUE/IPv6 checksum's 512-byte chunks and parts.
        for (i, len) in [0usize, 1, 17, 511, 1200].into_iter().enumerate() {
            let body: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
            let f = segment(c.l4, c.client, c.vip, c.cport, c.vport, flags, &body, false);
            same(
                &mut h,
                &prog,
                &f,
                &format!("{name}: request of {len} bytes"),
            );
            if c.mode == Mode::Nat {
                let f = segment(
                    c.l4, c.real, c.client, c.rport, c.cport, flags, &body, false,
                );
                same(&mut h, &prog, &f, &format!("{name}: reply of {len} bytes"));
            }
        }
        // Ethernet padding after a short packet (a tunnel drops it, DR and
        // NAT keep it).
        let mut f = segment(c.l4, c.client, c.vip, c.cport, c.vport, flags, b"", false);
        f.resize(60.max(f.len() + 3), 0xee);
        same(&mut h, &prog, &f, &format!("{name}: padded"));
        if c.l4 == L4::Udp {
            // No checksum: stays none on both paths.
            let f = segment(c.l4, c.client, c.vip, c.cport, c.vport, 0, b"q", true);
            if c.client.is_ipv4() {
                same(&mut h, &prog, &f, &format!("{name}: no UDP checksum"));
            }
        }
    }
}

#[test]
fn the_entries_are_what_the_mode_needs() {
    if skip("the_entries_are_what_the_mode_needs") {
        return;
    }
    for (name, c) in cases() {
        let (_, entries) = establish(&c);
        let first = entries[0];
        assert_eq!(first.key.src, c.client, "{name}");
        assert!(!first.reply, "{name}");
        let tun_src = if c.real.is_ipv4() { ip(TUN4) } else { ip(TUN6) };
        match c.mode {
            Mode::Dr => assert_eq!(first.action, FlowAction::Dr, "{name}"),
            Mode::Ipip => assert_eq!(
                first.action,
                FlowAction::Ipip {
                    src: tun_src,
                    dst: c.real
                },
                "{name}"
            ),
            Mode::Gue => assert!(
                matches!(first.action, FlowAction::Gue { src, dst, sport, dport }
                    if src == tun_src && dst == c.real && sport >= 49152 && dport == GUE_PORT),
                "{name}: {:?}",
                first.action
            ),
            Mode::Nat => {
                assert_eq!(
                    first.action,
                    FlowAction::Dnat {
                        addr: c.real,
                        port: c.rport
                    },
                    "{name}"
                );
                let r = entries[1];
                assert!(r.reply, "{name}");
                assert_eq!((r.key.src, r.key.sport), (c.real, c.rport), "{name}");
                assert_eq!(
                    r.action,
                    FlowAction::Snat {
                        addr: c.vip,
                        port: c.vport
                    },
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn syn_fin_rst_and_other_flows_leave_the_fast_path() {
    if skip("syn_fin_rst_and_other_flows_leave_the_fast_path") {
        return;
    }
    let (_, c) = cases().swap_remove(0);
    let (_, entries) = establish(&c);
    let prog = load(&entries);
    prog.set_vips(&[(xdpvs::service::model::Proto::Tcp, c.vip, c.vport)])
        .unwrap();
    for (what, flags) in [
        ("SYN", SYN),
        ("FIN", FIN | ACK),
        ("RST", RST),
        ("RST+ACK", RST | ACK),
    ] {
        let f = segment(c.l4, c.client, c.vip, c.cport, c.vport, flags, b"", false);
        let (action, out) = prog.test_run_frame(&f, LO, 0).unwrap();
        // Towards the AF_XDP socket; none is registered, so: pass.
        assert_eq!(action, XDP_PASS, "{what}");
        assert_eq!(out, f, "{what}: untouched");
    }
    // Another client port: no entry.
    let f = segment(c.l4, c.client, c.vip, c.cport + 1, c.vport, ACK, b"", false);
    assert_eq!(prog.test_run_frame(&f, LO, 0).unwrap().0, XDP_PASS);
    // Fast path switched off: the entry stays, the packet goes the slow way.
    let f = segment(c.l4, c.client, c.vip, c.cport, c.vport, ACK, b"", false);
    assert_eq!(prog.test_run_frame(&f, LO, 0).unwrap().0, XDP_REDIRECT);
    prog.set_fast_path(false).unwrap();
    assert_eq!(prog.test_run_frame(&f, LO, 0).unwrap().0, XDP_PASS);
    // Bigger than the way out's MTU: the slow path (which knows what to do).
    prog.set_fast_path(true).unwrap();
    let mut e = entries[0];
    e.hop.mtu = 100;
    prog.flows().install(&e, 1).unwrap();
    let big = segment(
        c.l4,
        c.client,
        c.vip,
        c.cport,
        c.vport,
        ACK,
        &[0u8; 200],
        false,
    );
    assert_eq!(prog.test_run_frame(&big, LO, 0).unwrap().0, XDP_PASS);
    // Out of the interface it came in on: XDP_TX.
    let mut e = entries[0];
    e.hop.ifindex = LO;
    prog.flows().install(&e, 1).unwrap();
    assert_eq!(prog.test_run_frame(&f, LO, 0).unwrap().0, XDP_TX);
}

fn case(name: &str) -> Case {
    cases()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no case {name}"))
        .1
}

#[test]
fn a_tunnel_packet_above_the_mtu_takes_the_slow_path_untouched() {
    if skip("a_tunnel_packet_above_the_mtu_takes_the_slow_path_untouched") {
        return;
    }
    for name in [
        "ipip tcp v4 in v4",
        "ipip udp v6 in v4",
        "gue tcp v4 in v6",
        "gue udp v6 in v6",
    ] {
        let c = case(name);
        let (mut h, entries) = establish(&c);
        let prog = load(&entries);
        let outer = usize::from(c.mode == Mode::Gue) * 8 + if c.real.is_ipv4() { 20 } else { 40 };
        let inner = if c.client.is_ipv4() { 20 } else { 40 } + if c.l4 == L4::Tcp { 20 } else { 8 };
        let flags = if c.l4 == L4::Tcp { ACK } else { 0 };
        // The largest inner packet that fits with the outer header: both
        // forward it, the same.
        let fits = usize::from(MTU) - outer - inner;
        let body = vec![0x5a; fits];
        let f = segment(c.l4, c.client, c.vip, c.cport, c.vport, flags, &body, false);
        same(&mut h, &prog, &f, &format!("{name}: at the MTU"));
        // One byte more: within the MTU as it arrives, not once encapsulated.
        let body = vec![0x5a; fits + 1];
        let f = segment(c.l4, c.client, c.vip, c.cport, c.vport, flags, &body, false);
        let before = counted(&prog);
        let (action, out) = prog.test_run_frame(&f, LO, 0).unwrap();
        // Towards the AF_XDP socket; none is registered, so: pass.
        assert_eq!(action, XDP_PASS, "{name}");
        assert_eq!(hex(&out), hex(&f), "{name}: untouched");
        assert_eq!(counted(&prog), before, "{name}: not counted");
        // The engine refuses it as today (too big for the way out).
        let (v, _) = h.process(&f);
        assert!(
            !matches!(v, Verdict::Forward { .. }),
            "{name}: engine {v:?}"
        );
    }
}

/// What the program counted, per (real server id, reply), over every CPU.
fn counted(prog: &XdpProgram) -> Vec<(u32, bool, u64, u64)> {
    let mut v: Vec<_> = prog
        .flows()
        .dest_counters()
        .unwrap()
        .into_iter()
        .map(|u| (u.dest, u.reply, u.packets, u.bytes))
        .collect();
    v.sort();
    v
}

#[test]
fn the_program_counts_per_real_server_and_stamps_what_it_forwards() {
    if skip("the_program_counts_per_real_server_and_stamps_what_it_forwards") {
        return;
    }
    let (_, c) = cases().swap_remove(0);
    let (_, entries) = establish(&c);
    let prog = load(&entries);
    let key = entries[0].key;
    let dest = entries[0].dest.0;
    let before = prog.flows().get(&key).unwrap().unwrap();
    assert_eq!(before.last_seen_ns, 0);
    assert_eq!(counted(&prog), vec![], "nothing before the first packet");
    for n in [10usize, 20, 30] {
        let f = segment(
            c.l4,
            c.client,
            c.vip,
            c.cport,
            c.vport,
            ACK,
            &vec![1u8; n],
            false,
        );
        assert_eq!(prog.test_run_frame(&f, LO, 0).unwrap().0, XDP_REDIRECT);
    }
    // IP bytes, as the engine counts: 3 x (20 IP + 20 TCP) + payloads.
    assert_eq!(counted(&prog), vec![(dest, false, 3, 3 * 40 + 60)]);
    let after = prog.flows().get(&key).unwrap().unwrap();
    assert!(after.last_seen_ns > 0);
    // A SYN is the engine's: not counted here.
    let syn = segment(c.l4, c.client, c.vip, c.cport, c.vport, SYN, &[], false);
    assert_ne!(prog.test_run_frame(&syn, LO, 0).unwrap().0, XDP_REDIRECT);
    assert_eq!(counted(&prog), vec![(dest, false, 3, 3 * 40 + 60)]);
    // The counters outlive the entry; a removed real server's are dropped
    // by the control loop.
    prog.flows().remove(&key).unwrap().unwrap();
    assert!(prog.flows().get(&key).unwrap().is_none());
    assert_eq!(counted(&prog), vec![(dest, false, 3, 3 * 40 + 60)]);
    assert_eq!(prog.flows().forget_dests(|d| d == dest).unwrap(), vec![]);
    let gone = prog.flows().forget_dests(|_| false).unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!((gone[0].packets, gone[0].bytes), (3, 180));
    assert_eq!(counted(&prog), vec![]);
}

#[test]
fn nat_replies_count_as_the_real_servers_out_direction() {
    if skip("nat_replies_count_as_the_real_servers_out_direction") {
        return;
    }
    let c = case("nat udp v4");
    let (_, entries) = establish(&c);
    let prog = load(&entries);
    let reply = entries.iter().find(|e| e.reply).expect("a reply entry");
    let f = segment(
        c.l4,
        reply.key.src,
        reply.key.dst,
        reply.key.sport,
        reply.key.dport,
        0,
        &[7u8; 12],
        false,
    );
    assert_eq!(prog.test_run_frame(&f, LO, 0).unwrap().0, XDP_REDIRECT);
    assert_eq!(counted(&prog), vec![(reply.dest.0, true, 1, 20 + 8 + 12)]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn random_established_flows_match_the_engine(
        which in 0usize..cases().len(),
        cport in 1024u16..65535,
        vport in 1u16..65535,
        rport in 1u16..65535,
        host in 1u8..250,
        flags in prop::sample::select(vec![ACK, ACK | PSH, PSH, 0u8, ACK | 0x20, ACK | 0x40 | 0x80]),
        body in prop::collection::vec(any::<u8>(), 0..600),
        no_csum in any::<bool>(),
        pad in prop::sample::select(vec![0usize, 0, 1, 6, 13]),
    ) {
        if skip("random_established_flows_match_the_engine") {
            return Ok(());
        }
        let (_, mut c) = cases().swap_remove(which);
        c.cport = cport;
        c.vport = vport;
        c.rport = rport;
        c.client = match c.client {
            IpAddr::V4(_) => IpAddr::from([198, 18, 100, host]),
            IpAddr::V6(_) => ip(&format!("2001:db8:100::{host:x}")),
        };
        let (mut h, entries) = establish(&c);
        let prog = load(&entries);
        let flags = if c.l4 == L4::Tcp { flags } else { 0 };
        let no_csum = no_csum && c.l4 == L4::Udp && c.client.is_ipv4();
        let mut f = segment(c.l4, c.client, c.vip, c.cport, c.vport, flags, &body, no_csum);
        f.resize(f.len() + pad, 0xee);
        same(&mut h, &prog, &f, "request");
        if c.mode == Mode::Nat {
            let f = segment(c.l4, c.real, c.client, c.rport, c.cport, flags, &body, no_csum);
            same(&mut h, &prog, &f, "reply");
        }
    }
}

#[test]
fn the_whole_cache_is_read_in_batches() {
    if skip("the_whole_cache_is_read_in_batches") {
        return;
    }
    let (_, c) = cases().swap_remove(0);
    let (_, entries) = establish(&c);
    let prog = XdpProgram::load().unwrap();
    let mut e = entries[0];
    // More than one batch (1024 a call), across many buckets.
    for i in 0..2500u16 {
        e.key.sport = 1000 + i;
        e.dest = xdpvs::service::model::DestId(u32::from(i % 7));
        prog.flows().install(&e, 1).unwrap();
    }
    let all = prog.flows().all().unwrap();
    assert_eq!(all.len(), 2500);
    let mut by_dest = [0usize; 7];
    for (_, u) in &all {
        by_dest[u.dest as usize] += 1;
    }
    assert_eq!(by_dest.iter().sum::<usize>(), 2500);
    assert!(by_dest.iter().all(|&n| n >= 357), "{by_dest:?}");
}

#[test]
fn installs_go_in_one_batch_and_a_full_cache_refuses_only_what_does_not_fit() {
    if skip("installs_go_in_one_batch_and_a_full_cache_refuses_only_what_does_not_fit") {
        return;
    }
    let (_, c) = cases().swap_remove(0);
    let (_, entries) = establish(&c);
    let flows = xdpvs::xdp::FlowCache::create(3).unwrap();
    let mut batch = xdpvs::xdp::InstallBatch::default();
    let mut e = entries[0];
    let mut keys = Vec::new();
    for i in 0..5u16 {
        e.key.sport = 2000 + i;
        keys.push(e.key);
        batch.push(&e, 1);
    }
    assert_eq!(batch.len(), 5);
    // Room for 3: the 4th and the 5th are refused, each counted.
    assert_eq!(flows.install_batch(&mut batch), 2);
    assert!(batch.is_empty());
    let present: Vec<bool> = keys
        .iter()
        .map(|k| flows.get(k).unwrap().is_some())
        .collect();
    assert_eq!(present, [true, true, true, false, false]);
    // Replacing entries that exist fits; a refusal in the middle does not
    // stop the ones after it.
    e.key = keys[0];
    batch.push(&e, 2);
    e.key = keys[3];
    batch.push(&e, 2);
    e.key = keys[1];
    batch.push(&e, 2);
    assert_eq!(flows.install_batch(&mut batch), 1);
    assert!(flows.get(&keys[3]).unwrap().is_none());
    assert_eq!(flows.all().unwrap().len(), 3);
}
