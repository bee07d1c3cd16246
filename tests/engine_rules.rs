//! The LVS rules of issue #2, each checked at the engine level: frames in,
//! verdict and output frame out, time passed as an argument, no kernel.
//! Every test builds its config as TOML, its frames with the independent
//! builder of `tests/wire_builder`, and fails if the rule it names breaks.

mod engine_harness;

use std::net::IpAddr;

use engine_harness::wire_builder::*;
use engine_harness::{fuzz, next_hop_of, snapshot, Harness, IFINDEX, SRC_MAC};
use proptest::prelude::*;
use xdpvs::config::Config;
use xdpvs::service::model::{FlowKey, Proto};
use xdpvs::shard::conn::Conn;
use xdpvs::shard::engine::{owner_shard, EngineConfig};
use xdpvs::shard::tcp_state::TcpState;
use xdpvs::shard::template::{Template, TemplateKey};
use xdpvs::shard::verdict::{DropReason, Verdict};
use xdpvs::wire::{self, L3Kind};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;

const VIP4: &str = "198.18.0.10";
const VIP6: &str = "2001:db8::10";
const RA: &str = "198.18.1.1";
const RB: &str = "198.18.1.2";
const RC: &str = "198.18.1.3";
const RD: &str = "198.18.1.4";
const RA6: &str = "2001:db8:1::1";
const RB6: &str = "2001:db8:1::2";
const RC6: &str = "2001:db8:1::3";
const C1: &str = "198.18.10.1";
const C2: &str = "198.18.10.2";
const C3: &str = "198.18.11.1";
const C4: &str = "198.18.12.1";
const ROUTER4: &str = "198.18.200.1";
const ROUTER6: &str = "2001:db8:c8::1";
const TUN4: &str = "198.18.0.2";
const TUN6: &str = "2001:db8::2";

const FORWARD: Verdict = Verdict::Forward { ifindex: IFINDEX };

// ---------------------------------------------------------------- configs

const HEAD: &str = r#"[director]
interfaces = ["eth0"]
tunnel_src4 = "198.18.0.2"
tunnel_src6 = "2001:db8::2"
"#;

fn key(proto: &str, vip: &str, port: u16) -> String {
    format!("proto = \"{proto}\"\nvip = \"{vip}\"\nport = {port}")
}

/// `addr` plus optional extra lines (weight, forward, port).
fn real(addr: &str, extra: &str) -> String {
    format!("addr = \"{addr}\"\n{extra}")
}

fn reals(addrs: &[&str], extra: &str) -> Vec<String> {
    addrs.iter().map(|a| real(a, extra)).collect()
}

fn svc(name: &str, key: &str, opts: &str, reals: &[String]) -> String {
    let mut s = format!("\n[[service]]\nname = \"{name}\"\n{key}\n{opts}\n");
    for r in reals {
        s.push_str("[[service.real]]\n");
        s.push_str(r);
        s.push('\n');
    }
    s
}

fn cfg(parts: &[String]) -> String {
    let mut s = HEAD.to_string();
    for p in parts {
        s.push_str(p);
    }
    s
}

const RR: &str = "scheduler = \"rr\"";

fn persist(extra: &str) -> String {
    format!("scheduler = \"rr\"\npersistence = {{ timeout = 300{extra} }}")
}

// ---------------------------------------------------------------- frames

fn l3(src: &str, dst: &str, proto: u8, l4: &[u8]) -> Vec<u8> {
    if ip(src).is_ipv6() {
        V6::new(src, dst, proto).build(l4)
    } else {
        V4::new(src, dst, proto).build(l4)
    }
}

fn frame_of(src: &str, dst: &str, proto: u8, l4: &[u8]) -> Vec<u8> {
    eth_in(&[], et_of(ip(src)), &l3(src, dst, proto, l4))
}

fn tcp_pkt(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Vec<u8> {
    let seg = tcp(ip(src), ip(dst), sport, dport, flags, &[], b"hello");
    frame_of(src, dst, 6, &seg)
}

fn udp_pkt(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    let dgram = udp(ip(src), ip(dst), sport, dport, b"query", false);
    frame_of(src, dst, 17, &dgram)
}

/// An ICMP error from `router` to `to`, quoting `quoted` (an IP packet);
/// ICMPv4 "fragmentation needed" / ICMPv6 "packet too big", MTU 1400.
fn icmp_too_big(router: &str, to: &str, quoted: &[u8]) -> Vec<u8> {
    let msg = if ip(router).is_ipv6() {
        icmp6(ip(router), ip(to), 2, 0, 1400, quoted)
    } else {
        icmp4(3, 4, 1400, quoted)
    };
    frame_of(router, to, if ip(router).is_ipv6() { 58 } else { 1 }, &msg)
}

fn tcp_l3(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Vec<u8> {
    l3(
        src,
        dst,
        6,
        &tcp(ip(src), ip(dst), sport, dport, flags, &[], b"hello"),
    )
}

fn fkey(proto: Proto, src: &str, sport: u16, dst: &str, dport: u16) -> FlowKey {
    FlowKey {
        proto,
        src: ip(src),
        dst: ip(dst),
        sport,
        dport,
    }
}

// ---------------------------------------------------------------- helpers

/// Process `f`, expect it forwarded; returns the next hop and the frame.
fn fwd(h: &mut Harness, f: &[u8]) -> (IpAddr, Vec<u8>) {
    let (v, out) = h.process(f);
    assert_eq!(v, FORWARD, "frame {f:02x?}");
    (next_hop_of(&out), out)
}

/// A new TCP connection (SYN); returns the real server it went to.
fn syn(h: &mut Harness, client: &str, sport: u16, vip: &str, port: u16) -> IpAddr {
    fwd(h, &tcp_pkt(client, sport, vip, port, SYN)).0
}

fn conn(h: &Harness, k: &FlowKey) -> Option<Conn> {
    let c = h.engine.conns();
    c.lookup_in(k).and_then(|x| c.get(x))
}

fn template(h: &Harness, k: &TemplateKey) -> Option<Template> {
    let t = h.engine.templates();
    t.lookup(k).and_then(|x| t.get(x)).copied()
}

/// The address of the real server a template points at, in the current
/// snapshot (`None`: the server is gone).
fn tpl_addr(h: &Harness, k: &TemplateKey) -> Option<IpAddr> {
    let t = template(h, k).expect("template exists");
    h.snap().dest(t.dest).map(|(_, d)| d.addr)
}

fn addr_key(proto: Proto, client: &str, vip: &str, vport: u16) -> TemplateKey {
    TemplateKey::Addr {
        proto,
        client_masked: ip(client),
        vip: ip(vip),
        vport,
    }
}

fn dropped(h: &Harness, r: DropReason) -> u64 {
    h.engine.stats.dropped[r as usize]
}

// ======================================================= classification

fn classify_cfg(with_mark_service: bool, with_8080: bool) -> String {
    let mut parts = vec![format!(
        "\n[[fwmark]]\nmark = 1\nrules = [ {{ vip = \"{VIP4}\", proto = \"tcp\", ports = \"80,443\" }} ]\n"
    )];
    if with_mark_service {
        parts.push(svc("mark", "fwmark = 1", RR, &reals(&[RA], "")));
    }
    parts.push(svc("addr80", &key("tcp", VIP4, 80), RR, &reals(&[RB], "")));
    if with_8080 {
        parts.push(svc(
            "addr8080",
            &key("tcp", VIP4, 8080),
            RR,
            &reals(&[RC], ""),
        ));
    }
    parts.push(svc(
        "all-ports",
        &key("tcp", VIP4, 0),
        &persist(""),
        &reals(&[RD], ""),
    ));
    cfg(&parts)
}

/// IPVS order: firewall marks, then proto+VIP+port, then the port-0 service.
#[test]
fn classification_order_fwmark_then_port_then_port_zero() {
    let mut h = Harness::new(&classify_cfg(true, true));
    assert_eq!(
        syn(&mut h, C1, 1000, VIP4, 80),
        ip(RA),
        "mark before VIP:80"
    );
    assert_eq!(
        syn(&mut h, C1, 1001, VIP4, 443),
        ip(RA),
        "mark rule port 443"
    );
    assert_eq!(
        syn(&mut h, C1, 1002, VIP4, 8080),
        ip(RC),
        "VIP:8080 before port 0"
    );
    assert_eq!(syn(&mut h, C1, 1003, VIP4, 9999), ip(RD), "port-0 service");
    // No UDP service on the VIP: not ours.
    assert_eq!(h.process(&udp_pkt(C1, 1004, VIP4, 80)).0, Verdict::Pass);

    // Without a service for the mark, the address service matches.
    let mut h = Harness::new(&classify_cfg(false, true));
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RB));
    assert_eq!(
        syn(&mut h, C1, 1001, VIP4, 443),
        ip(RD),
        "443 falls to port 0"
    );
    // Without VIP:8080, the port-0 service takes it.
    let mut h = Harness::new(&classify_cfg(true, false));
    assert_eq!(syn(&mut h, C1, 1002, VIP4, 8080), ip(RD));
}

#[test]
fn port_zero_service_must_be_persistent() {
    let text = cfg(&[svc("all", &key("tcp", VIP4, 0), RR, &reals(&[RA], ""))]);
    assert!(xdpvs::config::Config::parse(&text, "t.toml").is_err());
}

// ======================================================= persistence keys

/// Normal persistent service: template <proto, client, VIP, vport>.
#[test]
fn persistence_template_of_port_service_is_proto_client_vip_vport() {
    let text = cfg(&[
        svc(
            "web",
            &key("tcp", VIP4, 80),
            &persist(""),
            &reals(&[RA, RB, RC], ""),
        ),
        // Same real servers in another order: its first pick differs.
        svc(
            "tls",
            &key("tcp", VIP4, 443),
            &persist(""),
            &reals(&[RC, RA, RB], ""),
        ),
        svc(
            "dns",
            &key("udp", VIP4, 80),
            &persist(""),
            &reals(&[RB, RC], ""),
        ),
    ]);
    let mut h = Harness::new(&text);
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RA));
    // Without the template rr would now pick RB.
    for sport in 1001..1010 {
        assert_eq!(syn(&mut h, C1, sport, VIP4, 80), ip(RA));
    }
    assert_eq!(h.engine.stats.template_hits, 9);
    // Another vport: its own template, its own scheduling.
    assert_eq!(syn(&mut h, C1, 2000, VIP4, 443), ip(RC));
    // Another protocol on the same VIP:port: its own template.
    assert_eq!(fwd(&mut h, &udp_pkt(C1, 3000, VIP4, 80)).0, ip(RB));
    // Another client (no netmask: /32): scheduled, rr moves on.
    assert_eq!(syn(&mut h, C2, 1000, VIP4, 80), ip(RB));

    assert_eq!(
        tpl_addr(&h, &addr_key(Proto::Tcp, C1, VIP4, 80)),
        Some(ip(RA))
    );
    assert_eq!(
        tpl_addr(&h, &addr_key(Proto::Tcp, C1, VIP4, 443)),
        Some(ip(RC))
    );
    assert_eq!(
        tpl_addr(&h, &addr_key(Proto::Udp, C1, VIP4, 80)),
        Some(ip(RB))
    );
    assert_eq!(
        tpl_addr(&h, &addr_key(Proto::Tcp, C2, VIP4, 80)),
        Some(ip(RB))
    );
    assert!(template(&h, &addr_key(Proto::Tcp, C1, VIP4, 0)).is_none());
    assert_eq!(h.engine.templates().len(), 4);
}

/// Port-0 service: template <proto, client, VIP, 0>, shared by every port.
#[test]
fn persistence_template_of_port_zero_service_has_vport_zero() {
    let text = cfg(&[svc(
        "all",
        &key("tcp", VIP4, 0),
        &persist(""),
        &reals(&[RA, RB, RC], ""),
    )]);
    let mut h = Harness::new(&text);
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 5000), ip(RA));
    assert_eq!(syn(&mut h, C1, 1001, VIP4, 6000), ip(RA));
    assert_eq!(syn(&mut h, C1, 1002, VIP4, 22), ip(RA));
    assert_eq!(syn(&mut h, C2, 1000, VIP4, 5000), ip(RB));
    assert_eq!(
        tpl_addr(&h, &addr_key(Proto::Tcp, C1, VIP4, 0)),
        Some(ip(RA))
    );
    assert!(template(&h, &addr_key(Proto::Tcp, C1, VIP4, 5000)).is_none());
    assert_eq!(h.engine.templates().len(), 2);
    // DR to a real server without a port keeps the packet's port.
    let (_, out) = fwd(&mut h, &tcp_pkt(C1, 1003, VIP4, 7777, SYN));
    assert_eq!(&out[36..38], &7777u16.to_be_bytes());
}

fn fwmark_cfg(vip: &str, rs: &[&str], persistence: &str) -> String {
    cfg(&[
        format!(
            "\n[[fwmark]]\nmark = 7\nrules = [ {{ vip = \"{vip}\", proto = \"tcp\", ports = \"80,443\" }} ]\n"
        ),
        svc("site", "fwmark = 7", &persist(persistence), &reals(rs, "")),
    ])
}

/// Firewall-mark service: template <client, mark>: HTTP and HTTPS of one
/// client share it and go to one real server.
#[test]
fn persistence_template_of_fwmark_service_is_client_and_mark() {
    let mut h = Harness::new(&fwmark_cfg(VIP4, &[RA, RB, RC], ""));
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RA));
    assert_eq!(syn(&mut h, C1, 1001, VIP4, 443), ip(RA));
    assert_eq!(syn(&mut h, C1, 1002, VIP4, 443), ip(RA));
    assert_eq!(syn(&mut h, C2, 1000, VIP4, 443), ip(RB));
    assert_eq!(syn(&mut h, C2, 1001, VIP4, 80), ip(RB));
    let k = TemplateKey::Fwmark {
        client_masked: ip(C1),
        mark: 7,
    };
    assert_eq!(tpl_addr(&h, &k), Some(ip(RA)));
    assert_eq!(h.engine.templates().len(), 2);
    assert!(template(&h, &addr_key(Proto::Tcp, C1, VIP4, 80)).is_none());
}

/// Netmask: two clients of one /24 share a template; other /24s are
/// scheduled on their own.
#[test]
fn persistence_netmask_groups_clients_of_one_subnet() {
    let mut h = Harness::new(&cfg(&[svc(
        "web",
        &key("tcp", VIP4, 80),
        &persist(", netmask = \"255.255.255.0\""),
        &reals(&[RA, RB, RC], ""),
    )]));
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RA));
    assert_eq!(syn(&mut h, "198.18.10.200", 1000, VIP4, 80), ip(RA));
    assert_eq!(syn(&mut h, C2, 1000, VIP4, 80), ip(RA));
    assert_eq!(syn(&mut h, C3, 1000, VIP4, 80), ip(RB));
    assert_eq!(syn(&mut h, C4, 1000, VIP4, 80), ip(RC));
    assert_eq!(syn(&mut h, "198.18.11.99", 1000, VIP4, 80), ip(RB));
    assert_eq!(
        tpl_addr(&h, &addr_key(Proto::Tcp, "198.18.10.0", VIP4, 80)),
        Some(ip(RA))
    );
    assert!(template(&h, &addr_key(Proto::Tcp, C1, VIP4, 80)).is_none());
    assert_eq!(h.engine.templates().len(), 3);
}

/// IPv6 prefix length likewise (and fwmark services across families).
#[test]
fn persistence_prefix6_groups_clients_of_one_prefix() {
    let mut h = Harness::new(&cfg(&[svc(
        "web6",
        &key("tcp", VIP6, 80),
        &persist(", prefix6 = 64"),
        &reals(&[RA6, RB6, RC6], ""),
    )]));
    assert_eq!(syn(&mut h, "2001:db8:5:1::1", 1000, VIP6, 80), ip(RA6));
    assert_eq!(syn(&mut h, "2001:db8:5:1:ffff::2", 1000, VIP6, 80), ip(RA6));
    assert_eq!(syn(&mut h, "2001:db8:5:2::1", 1000, VIP6, 80), ip(RB6));
    assert_eq!(syn(&mut h, "2001:db8:5:3::1", 1000, VIP6, 80), ip(RC6));
    assert_eq!(
        tpl_addr(&h, &addr_key(Proto::Tcp, "2001:db8:5:1::", VIP6, 80)),
        Some(ip(RA6))
    );
    assert_eq!(h.engine.templates().len(), 3);

    // A fwmark template masks IPv6 clients with prefix6 too.
    let mut h = Harness::new(&fwmark_cfg(VIP6, &[RA6, RB6], ", prefix6 = 48"));
    assert_eq!(syn(&mut h, "2001:db8:5:1::1", 1000, VIP6, 80), ip(RA6));
    assert_eq!(syn(&mut h, "2001:db8:5:2::1", 1000, VIP6, 443), ip(RA6));
    assert_eq!(syn(&mut h, "2001:db8:6::1", 1000, VIP6, 443), ip(RB6));
    let k = TemplateKey::Fwmark {
        client_masked: ip("2001:db8:5::"),
        mark: 7,
    };
    assert!(template(&h, &k).is_some());
}

// ======================================================= template timing

fn udp_persist_cfg(timeout: u32) -> String {
    let mut s = cfg(&[svc(
        "dns",
        &key("udp", VIP4, 53),
        &format!("scheduler = \"rr\"\npersistence = {{ timeout = {timeout} }}"),
        &reals(&[RA, RB], ""),
    )]);
    s.push_str("\n[timeouts]\nudp = 2\n");
    s
}

/// Each new connection re-arms the template to the full timeout; within it
/// the client returns to its server; after it (no connection left) the
/// scheduler decides again.
#[test]
fn template_rearmed_by_each_new_connection_then_expires() {
    let mut h = Harness::new(&udp_persist_cfg(10));
    let k = addr_key(Proto::Udp, C1, VIP4, 53);
    assert_eq!(fwd(&mut h, &udp_pkt(C1, 1000, VIP4, 53)).0, ip(RA));
    h.advance(8_000);
    assert_eq!(fwd(&mut h, &udp_pkt(C1, 1001, VIP4, 53)).0, ip(RA));
    // 15 s after the first connection, both connections (2 s) are gone;
    // the template lives on because the second connection re-armed it.
    h.advance(7_000);
    assert_eq!(h.engine.conns().len(), 0);
    assert!(template(&h, &k).is_some(), "template re-armed to t+18 s");
    assert_eq!(fwd(&mut h, &udp_pkt(C1, 1002, VIP4, 53)).0, ip(RA));
    // Re-armed to t+25 s; at t+28 s it is gone and rr picks the next server.
    h.advance(13_000);
    assert!(template(&h, &k).is_none(), "template expired");
    assert_eq!(fwd(&mut h, &udp_pkt(C1, 1003, VIP4, 53)).0, ip(RB));
}

/// Packets of an existing connection do not re-arm the template; only new
/// connections do.
#[test]
fn template_not_rearmed_by_packets_of_existing_connection() {
    let mut h = Harness::new(&udp_persist_cfg(10));
    let k = addr_key(Proto::Udp, C1, VIP4, 53);
    assert_eq!(fwd(&mut h, &udp_pkt(C1, 1000, VIP4, 53)).0, ip(RA));
    let exp = template(&h, &k).unwrap().expires();
    h.advance(1_000);
    assert_eq!(fwd(&mut h, &udp_pkt(C1, 1000, VIP4, 53)).0, ip(RA));
    assert_eq!(template(&h, &k).unwrap().expires(), exp);
    assert_eq!(template(&h, &k).unwrap().controls(), 1);
}

/// A template never expires while it controls live connections.
#[test]
fn template_kept_while_it_controls_connections() {
    let mut h = Harness::new(&cfg(&[svc(
        "web",
        &key("tcp", VIP4, 80),
        "scheduler = \"rr\"\npersistence = { timeout = 10 }",
        &reals(&[RA, RB], ""),
    )]));
    let k = addr_key(Proto::Tcp, C1, VIP4, 80);
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RA));
    assert_eq!(fwd(&mut h, &tcp_pkt(C1, 1000, VIP4, 80, ACK)).0, ip(RA));
    h.advance(120_000);
    let t = template(&h, &k).expect("template controls a live connection");
    assert_eq!(t.controls(), 1);
    assert!(conn(&h, &fkey(Proto::Tcp, C1, 1000, VIP4, 80)).is_some());
    // Still honoured: rr would pick RB.
    assert_eq!(syn(&mut h, C1, 1001, VIP4, 80), ip(RA));
    fwd(&mut h, &tcp_pkt(C1, 1001, VIP4, 80, ACK));
    assert_eq!(template(&h, &k).unwrap().controls(), 2);
    // Close both (RST: CLOSE, 10 s); once they are gone the template goes.
    fwd(&mut h, &tcp_pkt(C1, 1000, VIP4, 80, RST));
    fwd(&mut h, &tcp_pkt(C1, 1001, VIP4, 80, RST));
    h.advance(11_000);
    assert_eq!(h.engine.conns().len(), 0);
    h.advance(120_000);
    assert!(template(&h, &k).is_none());
    assert_eq!(syn(&mut h, C1, 1002, VIP4, 80), ip(RB));
}

// ======================================================= weight 0, removal

fn quiesce_cfg(weight_a: u32, expire_quiescent: bool) -> String {
    let opts = format!(
        "{}\nexpire_quiescent_template = {expire_quiescent}",
        persist("")
    );
    cfg(&[
        svc(
            "web",
            &key("tcp", VIP4, 80),
            &opts,
            &[real(RA, &format!("weight = {weight_a}")), real(RB, "")],
        ),
        svc(
            "plain",
            &key("tcp", VIP4, 81),
            RR,
            &[real(RA, &format!("weight = {weight_a}")), real(RB, "")],
        ),
    ])
}

/// Weight 0: no new clients, existing templates and connections honoured.
#[test]
fn quiesced_server_keeps_its_templates_and_connections() {
    let mut h = Harness::new(&quiesce_cfg(1, false));
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RA));
    assert_eq!(syn(&mut h, C1, 2000, VIP4, 81), ip(RA));
    h.reload(&quiesce_cfg(0, false));
    // The template still sends C1 to RA.
    assert_eq!(syn(&mut h, C1, 1001, VIP4, 80), ip(RA));
    // Existing connections go on.
    assert_eq!(fwd(&mut h, &tcp_pkt(C1, 1000, VIP4, 80, ACK)).0, ip(RA));
    assert_eq!(fwd(&mut h, &tcp_pkt(C1, 2000, VIP4, 81, ACK)).0, ip(RA));
    // No new client, no new connection goes to RA.
    for (i, c) in ["198.18.10.2", "198.18.10.3", "198.18.10.4"]
        .iter()
        .enumerate()
    {
        assert_eq!(syn(&mut h, c, 1000, VIP4, 80), ip(RB));
        assert_eq!(syn(&mut h, C1, 3000 + i as u16, VIP4, 81), ip(RB));
    }
    assert_eq!(
        tpl_addr(&h, &addr_key(Proto::Tcp, C1, VIP4, 80)),
        Some(ip(RA))
    );
}

/// With expire_quiescent_template, a template to a weight-0 server is
/// invalid: the scheduler picks again and the template follows.
#[test]
fn expire_quiescent_template_reschedules() {
    let mut h = Harness::new(&quiesce_cfg(1, true));
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RA));
    h.reload(&quiesce_cfg(0, true));
    assert_eq!(syn(&mut h, C1, 1001, VIP4, 80), ip(RB));
    assert_eq!(
        tpl_addr(&h, &addr_key(Proto::Tcp, C1, VIP4, 80)),
        Some(ip(RB))
    );
    assert_eq!(syn(&mut h, C1, 1002, VIP4, 80), ip(RB));
    // The old connection still goes to RA (quiesced, not removed).
    assert_eq!(fwd(&mut h, &tcp_pkt(C1, 1000, VIP4, 80, ACK)).0, ip(RA));
}

fn removal_cfg(with_a: bool, expire_nodest: bool) -> String {
    let rs: &[&str] = if with_a { &[RA, RB, RC] } else { &[RB, RC] };
    let opts = |p: String| format!("{p}\nexpire_nodest_conn = {expire_nodest}");
    cfg(&[
        svc(
            "web",
            &key("tcp", VIP4, 80),
            &opts(persist("")),
            &reals(rs, ""),
        ),
        svc(
            "plain",
            &key("tcp", VIP4, 81),
            &opts(RR.into()),
            &reals(rs, ""),
        ),
        svc(
            "dns",
            &key("udp", VIP4, 53),
            &opts(RR.into()),
            &reals(rs, ""),
        ),
    ])
}

/// A removed real server invalidates its templates at the next lookup.
#[test]
fn removed_server_invalidates_its_templates() {
    let mut h = Harness::new(&removal_cfg(true, false));
    let k = addr_key(Proto::Tcp, C1, VIP4, 80);
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RA));
    h.reload(&removal_cfg(false, false));
    assert_eq!(tpl_addr(&h, &k), None, "template points at a gone server");
    let b = syn(&mut h, C1, 1001, VIP4, 80);
    assert_ne!(b, ip(RA));
    assert_eq!(tpl_addr(&h, &k), Some(b), "template rebound at lookup");
    assert_eq!(syn(&mut h, C1, 1002, VIP4, 80), b);
}

/// IPVS `ip_vs_in`: packets of a connection whose real server is gone are
/// dropped (timer not restarted) while `expire_nodest_conn` is off.
#[test]
fn connection_to_removed_server_is_dropped() {
    let mut h = Harness::new(&removal_cfg(true, false));
    let k = fkey(Proto::Tcp, C1, 2000, VIP4, 81);
    assert_eq!(syn(&mut h, C1, 2000, VIP4, 81), ip(RA));
    assert_eq!(fwd(&mut h, &tcp_pkt(C1, 2000, VIP4, 81, ACK)).0, ip(RA));
    assert_eq!(fwd(&mut h, &udp_pkt(C1, 3000, VIP4, 53)).0, ip(RA));
    assert_eq!(fwd(&mut h, &udp_pkt(C1, 3001, VIP4, 53)).0, ip(RB));
    h.reload(&removal_cfg(false, false));
    // A UDP flow to a server that is still there goes on; one to the
    // removed server is dropped.
    assert_eq!(fwd(&mut h, &udp_pkt(C1, 3001, VIP4, 53)).0, ip(RB));
    assert_eq!(
        h.process(&udp_pkt(C1, 3000, VIP4, 53)).0,
        Verdict::Drop(DropReason::DestRemoved)
    );
    let before = h.engine.stats.clone();
    for flags in [ACK, PSH | ACK, SYN, FIN | ACK] {
        let f = tcp_pkt(C1, 2000, VIP4, 81, flags);
        let (v, out) = h.process(&f);
        assert_eq!(
            v,
            Verdict::Drop(DropReason::DestRemoved),
            "flags {flags:#x}"
        );
        assert_eq!(out, f);
    }
    assert_eq!(
        dropped(&h, DropReason::DestRemoved),
        before.dropped[DropReason::DestRemoved as usize] + 4
    );
    // The connection stays until its own timeout (ESTABLISHED, 900 s)...
    assert!(conn(&h, &k).is_some());
    // ...which the dropped packets do not restart.
    h.advance(500_000);
    assert_eq!(
        h.process(&tcp_pkt(C1, 2000, VIP4, 81, ACK)).0,
        Verdict::Drop(DropReason::DestRemoved)
    );
    h.advance(450_000);
    assert!(conn(&h, &k).is_none(), "expired at 900 s");
    // Then the tuple is a new connection, scheduled among the servers left.
    let r = syn(&mut h, C1, 2000, VIP4, 81);
    assert!(r == ip(RB) || r == ip(RC));
}

/// With `expire_nodest_conn`, the connection is expired at its next packet
/// (IPVS: `ip_vs_conn_expire_now`); a packet that can open a connection
/// (UDP, TCP SYN) is then scheduled afresh, others are dropped.
#[test]
fn expire_nodest_conn_expires_and_reschedules() {
    let mut h = Harness::new(&removal_cfg(true, true));
    let k = fkey(Proto::Tcp, C1, 2000, VIP4, 81);
    assert_eq!(syn(&mut h, C1, 2000, VIP4, 81), ip(RA));
    assert_eq!(fwd(&mut h, &tcp_pkt(C1, 2000, VIP4, 81, ACK)).0, ip(RA));
    assert_eq!(syn(&mut h, C1, 2001, VIP4, 81), ip(RB));
    assert_eq!(syn(&mut h, C1, 2002, VIP4, 81), ip(RC));
    assert_eq!(syn(&mut h, C1, 2003, VIP4, 81), ip(RA));
    assert_eq!(fwd(&mut h, &udp_pkt(C1, 3000, VIP4, 53)).0, ip(RA));
    h.reload(&removal_cfg(false, true));

    assert_eq!(
        h.process(&tcp_pkt(C1, 2000, VIP4, 81, ACK)).0,
        Verdict::Drop(DropReason::DestRemoved)
    );
    assert!(conn(&h, &k).is_none(), "expired immediately");
    // The next ACK has no connection at all.
    assert_eq!(
        h.process(&tcp_pkt(C1, 2000, VIP4, 81, ACK)).0,
        Verdict::Drop(DropReason::NotSyn)
    );
    // A new SYN on the same tuple is a new connection.
    let r = syn(&mut h, C1, 2000, VIP4, 81);
    assert!(r == ip(RB) || r == ip(RC), "{r}");
    assert_eq!(conn(&h, &k).map(|c| c.raddr), Some(r));
    // A SYN on a connection to the removed server: rescheduled at once.
    let r = syn(&mut h, C1, 2003, VIP4, 81);
    assert!(r == ip(RB) || r == ip(RC), "{r}");
    // UDP: the datagram itself is rescheduled.
    let r = fwd(&mut h, &udp_pkt(C1, 3000, VIP4, 53)).0;
    assert!(r == ip(RB) || r == ip(RC), "{r}");
    // Servers that stay keep their connections.
    assert_eq!(fwd(&mut h, &tcp_pkt(C1, 2001, VIP4, 81, ACK)).0, ip(RB));
    assert_eq!(fwd(&mut h, &tcp_pkt(C1, 2002, VIP4, 81, ACK)).0, ip(RC));
}

/// IPVS: with `expire_nodest_conn`, a SYN reusing the tuple of a connection
/// to a quiesced (weight 0) server is rescheduled; other packets go on.
#[test]
fn expire_nodest_conn_reschedules_syn_to_quiesced_server() {
    let text = |w: u32| {
        cfg(&[svc(
            "plain",
            &key("tcp", VIP4, 81),
            "scheduler = \"rr\"\nexpire_nodest_conn = true",
            &[real(RA, &format!("weight = {w}")), real(RB, "")],
        )])
    };
    let mut h = Harness::new(&text(1));
    assert_eq!(syn(&mut h, C1, 2000, VIP4, 81), ip(RA));
    assert_eq!(fwd(&mut h, &tcp_pkt(C1, 2000, VIP4, 81, ACK)).0, ip(RA));
    h.reload(&text(0));
    assert_eq!(fwd(&mut h, &tcp_pkt(C1, 2000, VIP4, 81, ACK)).0, ip(RA));
    assert_eq!(syn(&mut h, C1, 2000, VIP4, 81), ip(RB));
}

// ======================================================= TCP

#[test]
fn tcp_non_syn_without_connection_is_dropped_and_counted() {
    let mut h = Harness::new(&cfg(&[svc(
        "web",
        &key("tcp", VIP4, 80),
        RR,
        &reals(&[RA], ""),
    )]));
    let flags = [ACK, PSH | ACK, FIN | ACK, RST, SYN | ACK, 0];
    for (i, &f) in flags.iter().enumerate() {
        let frame = tcp_pkt(C1, 1000 + i as u16, VIP4, 80, f);
        let (v, out) = h.process(&frame);
        assert_eq!(v, Verdict::Drop(DropReason::NotSyn), "flags {f:#x}");
        assert_eq!(out, frame);
    }
    assert_eq!(dropped(&h, DropReason::NotSyn), flags.len() as u64);
    assert_eq!(h.engine.conns().len(), 0);
    assert_eq!(h.engine.stats.new_conns, 0);
}

/// A SYN on a connection in TIME_WAIT or CLOSE is a new connection,
/// scheduled afresh (IPVS conn_reuse_mode); a SYN on a live one is not.
#[test]
fn syn_on_closing_connection_is_rescheduled() {
    let mut h = Harness::new(&cfg(&[svc(
        "web",
        &key("tcp", VIP4, 80),
        RR,
        &reals(&[RA, RB], ""),
    )]));
    let k = fkey(Proto::Tcp, C1, 1000, VIP4, 80);
    // CLOSE (client RST).
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RA));
    fwd(&mut h, &tcp_pkt(C1, 1000, VIP4, 80, ACK));
    fwd(&mut h, &tcp_pkt(C1, 1000, VIP4, 80, RST));
    assert_eq!(conn(&h, &k).unwrap().state, TcpState::Close);
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RB));
    assert_eq!(conn(&h, &k).unwrap().state, TcpState::SynRecv);
    // TIME_WAIT (FIN after SYN, replies bypassing the director).
    assert_eq!(syn(&mut h, C1, 1001, VIP4, 80), ip(RA));
    fwd(&mut h, &tcp_pkt(C1, 1001, VIP4, 80, FIN));
    let k1 = fkey(Proto::Tcp, C1, 1001, VIP4, 80);
    assert_eq!(conn(&h, &k1).unwrap().state, TcpState::TimeWait);
    assert_eq!(syn(&mut h, C1, 1001, VIP4, 80), ip(RB));
    assert_eq!(h.engine.stats.new_conns, 4);
    // A retransmitted SYN of a live connection stays on it.
    assert_eq!(syn(&mut h, C1, 1002, VIP4, 80), ip(RA));
    fwd(&mut h, &tcp_pkt(C1, 1002, VIP4, 80, ACK));
    assert_eq!(syn(&mut h, C1, 1002, VIP4, 80), ip(RA));
    assert_eq!(h.engine.stats.new_conns, 5);
    let total: u64 = h.engine.dest_counters().values().map(|c| c.conns).sum();
    assert_eq!(total, 5);
}

/// Only what IPVS's `conn_reuse_mode = 1` reschedules: a SYN on a
/// connection still shutting down (FIN_WAIT) stays on it, and so does a SYN
/// on a closed connection that a persistence template controls; neither is
/// counted as a new connection.
#[test]
fn syn_on_a_shutting_down_or_controlled_connection_stays_on_it() {
    let web = |opts: &str| {
        cfg(&[svc(
            "web",
            &key("tcp", VIP4, 80),
            opts,
            &reals(&[RA, RB], ""),
        )])
    };
    let k = fkey(Proto::Tcp, C1, 1000, VIP4, 80);
    let mut h = Harness::new(&web(RR));
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RA));
    fwd(&mut h, &tcp_pkt(C1, 1000, VIP4, 80, ACK));
    fwd(&mut h, &tcp_pkt(C1, 1000, VIP4, 80, FIN));
    assert_eq!(conn(&h, &k).unwrap().state, TcpState::FinWait);
    // rr would give a new connection to RB.
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RA));
    assert_eq!(conn(&h, &k).unwrap().state, TcpState::SynRecv);
    assert_eq!(h.engine.stats.new_conns, 1);

    let mut h = Harness::new(&web(&persist("")));
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RA));
    fwd(&mut h, &tcp_pkt(C1, 1000, VIP4, 80, ACK));
    fwd(&mut h, &tcp_pkt(C1, 1000, VIP4, 80, RST));
    assert_eq!(conn(&h, &k).unwrap().state, TcpState::Close);
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RA));
    assert_eq!(conn(&h, &k).unwrap().state, TcpState::SynRecv);
    assert_eq!(
        h.engine.stats.new_conns, 1,
        "went on with the controlled connection"
    );
    let t = template(&h, &addr_key(Proto::Tcp, C1, VIP4, 80)).unwrap();
    assert_eq!(t.controls(), 1);
}

/// `[director] conn_reuse_mode` as the IPVS sysctl: 0 never reschedules a
/// known connection on a SYN (not even with `expire_nodest_conn` to a
/// quiesced server); 2 also reschedules FIN_WAIT when the director sees no
/// output (DR), not through NAT.
#[test]
fn conn_reuse_mode_0_and_2_as_the_ipvs_sysctl() {
    let text = |mode: u32, extra: &str| {
        cfg(&[
            svc(
                "web",
                &key("tcp", VIP4, 80),
                &format!("{RR}\n{extra}"),
                &reals(&[RA, RB], ""),
            ),
            svc(
                "nat",
                &key("tcp", VIP4, 81),
                RR,
                &reals(&[RA, RB], "forward = \"nat\"\nport = 8080"),
            ),
        ])
        .replace(
            "[director]\n",
            &format!("[director]\nconn_reuse_mode = {mode}\n"),
        )
    };
    let closed = |h: &mut Harness, port: u16| {
        assert_eq!(syn(h, C1, port, VIP4, 80), ip(RA));
        fwd(h, &tcp_pkt(C1, port, VIP4, 80, ACK));
        fwd(h, &tcp_pkt(C1, port, VIP4, 80, RST));
    };
    // 0: CLOSE stays.
    let mut h = Harness::new(&text(0, ""));
    closed(&mut h, 1000);
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RA));
    assert_eq!(h.engine.stats.new_conns, 1);
    // 0 with expire_nodest_conn: a SYN to a quiesced server stays too.
    let mut h = Harness::new(&text(0, "expire_nodest_conn = true"));
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RA));
    h.reload(&text(0, "expire_nodest_conn = true").replacen(
        "addr = \"198.18.1.1\"\n",
        "addr = \"198.18.1.1\"\nweight = 0\n",
        1,
    ));
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RA));
    assert_eq!(h.engine.stats.new_conns, 1);
    // 2: FIN_WAIT of a DR connection is rescheduled; of a NAT one, not.
    let mut h = Harness::new(&text(2, ""));
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RA));
    fwd(&mut h, &tcp_pkt(C1, 1000, VIP4, 80, ACK));
    fwd(&mut h, &tcp_pkt(C1, 1000, VIP4, 80, FIN));
    let k = fkey(Proto::Tcp, C1, 1000, VIP4, 80);
    assert_eq!(conn(&h, &k).unwrap().state, TcpState::FinWait);
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RB));
    assert_eq!(h.engine.stats.new_conns, 2);
    let (to_a, _) = fwd(&mut h, &tcp_pkt(C1, 2000, VIP4, 81, SYN));
    fwd(&mut h, &tcp_pkt(C1, 2000, VIP4, 81, ACK));
    // The server closes first (its FIN comes back through the director).
    let server = to_a.to_string();
    fwd(&mut h, &tcp_pkt(&server, 8080, C1, 2000, FIN | ACK));
    let kn = fkey(Proto::Tcp, C1, 2000, VIP4, 81);
    assert_eq!(conn(&h, &kn).unwrap().state, TcpState::FinWait);
    let (again, _) = fwd(&mut h, &tcp_pkt(C1, 2000, VIP4, 81, SYN));
    assert_eq!(again, to_a, "NAT: the director sees output, FIN_WAIT stays");
    assert_eq!(h.engine.stats.new_conns, 3);
    // Out of range: refused with the key.
    let e = Config::parse(&text(4, ""), "t.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("director.conn_reuse_mode") && e.contains("0-3"),
        "{e}"
    );
}

// ======================================================= forwarding

fn nat_cfg() -> String {
    cfg(&[
        svc(
            "web",
            &key("tcp", VIP4, 80),
            RR,
            &[real(RA, "forward = \"nat\"\nport = 8080")],
        ),
        svc(
            "dns",
            &key("udp", VIP4, 53),
            RR,
            &[real(RA, "forward = \"nat\"\nport = 5353")],
        ),
        svc(
            "web6",
            &key("tcp", VIP6, 80),
            RR,
            &[real(RA6, "forward = \"nat\"\nport = 8080")],
        ),
        svc(
            "dns6",
            &key("udp", VIP6, 53),
            RR,
            &[real(RA6, "forward = \"nat\"\nport = 5353")],
        ),
    ])
}

/// Check an output frame: next hop, untagged Ethernet from the director,
/// every checksum valid (full recomputation), and the addresses/ports.
fn check_out(out: &[u8], hop: &str, src: (&str, u16), dst: (&str, u16)) {
    assert_eq!(&out[..6], &engine_harness::mac_of(ip(hop)));
    assert_eq!(&out[6..12], &SRC_MAC);
    verify_frame(out);
    let i = wire::parse(out).expect("output parses");
    assert_eq!((i.src, i.sport), (ip(src.0), src.1));
    assert_eq!((i.dst, i.dport), (ip(dst.0), dst.1));
}

/// NAT: DNAT inbound, SNAT on the reply, checksums valid; IPv4 and IPv6,
/// TCP and UDP.
#[test]
fn nat_rewrites_both_directions_with_valid_checksums() {
    let mut h = Harness::new(&nat_cfg());
    for (c, vip, rip) in [(C1, VIP4, RA), ("2001:db8:5:1::1", VIP6, RA6)] {
        let (_, out) = fwd(&mut h, &tcp_pkt(c, 40000, vip, 80, SYN));
        check_out(&out, rip, (c, 40000), (rip, 8080));
        let (_, out) = fwd(&mut h, &tcp_pkt(rip, 8080, c, 40000, SYN | ACK));
        check_out(&out, c, (vip, 80), (c, 40000));
        let (_, out) = fwd(&mut h, &tcp_pkt(c, 40000, vip, 80, ACK));
        check_out(&out, rip, (c, 40000), (rip, 8080));
        let k = fkey(Proto::Tcp, c, 40000, vip, 80);
        assert_eq!(conn(&h, &k).unwrap().state, TcpState::Established);

        let (_, out) = fwd(&mut h, &udp_pkt(c, 5000, vip, 53));
        check_out(&out, rip, (c, 5000), (rip, 5353));
        let (_, out) = fwd(&mut h, &udp_pkt(rip, 5353, c, 5000));
        check_out(&out, c, (vip, 53), (c, 5000));
    }
    // IPv4 UDP without checksum stays without.
    let dgram = udp(ip(C2), ip(VIP4), 5001, 53, b"q", true);
    let (_, out) = fwd(&mut h, &frame_of(C2, VIP4, 17, &dgram));
    check_out(&out, RA, (C2, 5001), (RA, 5353));
    assert_eq!(&out[40..42], &[0, 0]);
    // A reply from the real server to a client it has no connection with
    // is not ours.
    let f = tcp_pkt(RA, 8080, C3, 1, ACK);
    assert_eq!(h.process(&f), (Verdict::Pass, f));
}

/// DR: only the MACs change (VLAN tags are dropped), IPv4 and IPv6.
#[test]
fn dr_changes_only_the_macs() {
    let mut h = Harness::new(&cfg(&[
        svc("web", &key("tcp", VIP4, 80), RR, &reals(&[RA], "")),
        svc("web6", &key("tcp", VIP6, 80), RR, &reals(&[RA6], "")),
    ]));
    for (c, vip, rip) in [(C1, VIP4, RA), ("2001:db8:5:1::1", VIP6, RA6)] {
        let f = tcp_pkt(c, 40000, vip, 80, SYN);
        let (_, out) = fwd(&mut h, &f);
        assert_eq!(&out[..6], &engine_harness::mac_of(ip(rip)));
        assert_eq!(&out[6..12], &SRC_MAC);
        assert_eq!(&out[12..], &f[12..], "IP packet untouched");
        // Tagged input: same packet, untagged.
        let ipkt = l3(c, vip, 6, &tcp(ip(c), ip(vip), 40000, 80, ACK, &[], b"x"));
        let tagged = eth_in(&[(0x8100, 5)], et_of(ip(c)), &ipkt);
        let (_, out) = fwd(&mut h, &tagged);
        assert_eq!(out.len(), tagged.len() - 4);
        assert_eq!(&out[14..], &ipkt[..]);
        assert_eq!(&out[12..14], &et_of(ip(c)).to_be_bytes());
    }
}

fn tunnel_cfg() -> String {
    cfg(&[
        svc(
            "v4-ipip",
            &key("tcp", VIP4, 80),
            RR,
            &[real(RA, "forward = \"ipip\"")],
        ),
        svc(
            "v4-gue",
            &key("tcp", VIP4, 81),
            RR,
            &[real(RB, "forward = \"gue\"")],
        ),
        svc(
            "v6-ipip",
            &key("tcp", VIP6, 80),
            RR,
            &[real(RA6, "forward = \"ipip\"")],
        ),
        svc(
            "v6-gue-v4",
            &key("tcp", VIP6, 81),
            RR,
            &[real(RC, "forward = \"gue\"")],
        ),
        svc(
            "v4-ipip-v6",
            &key("tcp", VIP4, 82),
            RR,
            &[real(RB6, "forward = \"ipip\"")],
        ),
    ])
}

/// IPIP/GUE: an outer header from the snapshot's tunnel source to the real
/// server, the inner packet unchanged; both families, also crossed.
#[test]
fn tunnels_push_outer_header_from_tunnel_source() {
    let mut h = Harness::new(&tunnel_cfg());
    let c6 = "2001:db8:5:1::1";
    // (client, vip, port, real, outer src, outer proto / next header, gue)
    let cases = [
        (C1, VIP4, 80, RA, TUN4, 4u8, false),
        (C1, VIP4, 81, RB, TUN4, 17, true),
        (c6, VIP6, 80, RA6, TUN6, 41, false),
        (c6, VIP6, 81, RC, TUN4, 17, true),
        (C1, VIP4, 82, RB6, TUN6, 4, false),
    ];
    for (c, vip, port, rip, src, proto, gue) in cases {
        let f = tcp_pkt(c, 40000, vip, port, SYN);
        let inner = &f[14..];
        let (hop, out) = fwd(&mut h, &f);
        assert_eq!(hop, ip(rip));
        verify_frame(&out);
        let o = wire::parse(&out).unwrap();
        assert_eq!(
            (o.src, o.dst, o.proto),
            (ip(src), ip(rip), proto),
            "{vip}:{port}"
        );
        let outer_len = if ip(rip).is_ipv6() { 40 } else { 20 };
        assert_eq!(o.ttl, 64);
        let mut off = 14 + outer_len;
        if gue {
            assert_eq!(o.dport, 6080);
            assert!(o.sport >= 49152);
            off += 8;
        }
        assert_eq!(&out[off..], inner, "inner packet unchanged");
        assert_eq!(
            o.l3,
            if ip(rip).is_ipv6() {
                L3Kind::Ipv6
            } else {
                L3Kind::Ipv4
            }
        );
    }
}

// ======================================================= sharding

fn shard_cfg() -> String {
    cfg(&[
        svc(
            "web",
            &key("tcp", VIP4, 80),
            &persist(", netmask = \"255.255.255.0\", prefix6 = 64"),
            &[real(RA, "forward = \"nat\"\nport = 8080")],
        ),
        svc(
            "wide",
            &key("tcp", VIP4, 81),
            &persist(", netmask = \"255.255.254.0\""),
            &reals(&[RB], ""),
        ),
        svc(
            "web6",
            &key("tcp", VIP6, 80),
            &persist(", prefix6 = 64"),
            &[real(RA6, "forward = \"nat\"\nport = 8080")],
        ),
    ])
}

/// The first client address `base + i * step` owned by shard `want`.
fn client_owned_by(
    want: u16,
    base: u32,
    step: u32,
    snap: &xdpvs::service::snapshot::Snapshot,
) -> IpAddr {
    (0..1000)
        .map(|i| v4(base + i * step))
        .find(|a| owner_shard(*a, snap, 2) == want)
        .expect("some client is owned by each shard")
}

/// shards = 2: a packet of a client group owned by the other shard is
/// handed to it, unchanged; NAT replies go to the owner of the client.
#[test]
fn sharding_hands_off_to_the_owner_and_replies_follow() {
    let text = shard_cfg();
    let mut e = [Harness::sharded(&text, 0, 2), Harness::sharded(&text, 1, 2)];
    let snap = e[0].snap();
    let base = u32::from_be_bytes([198, 18, 20, 7]);
    for want in [1usize, 0] {
        let c = client_owned_by(want as u16, base, 512, &snap).to_string();
        let other = 1 - want;
        let handoffs = e[other].engine.stats.handoff;
        let f = tcp_pkt(&c, 40000, VIP4, 80, SYN);
        assert_eq!(
            e[other].process(&f),
            (Verdict::Handoff(want as u16), f.clone())
        );
        assert_eq!(e[other].engine.stats.handoff, handoffs + 1);
        let (_, out) = fwd(&mut e[want], &f);
        check_out(&out, RA, (&c, 40000), (RA, 8080));
        // The reply, RA -> client, is owned by the client's shard too.
        let r = tcp_pkt(RA, 8080, &c, 40000, SYN | ACK);
        assert_eq!(
            e[other].process(&r),
            (Verdict::Handoff(want as u16), r.clone())
        );
        let (_, out) = fwd(&mut e[want], &r);
        check_out(&out, &c, (VIP4, 80), (&c, 40000));
        // IPv6 likewise.
        let c6 = (0..1000u32)
            .map(|i| ip(&format!("2001:db8:6:{i:x}::5")))
            .find(|a| owner_shard(*a, &snap, 2) == want as u16)
            .unwrap()
            .to_string();
        let f = tcp_pkt(&c6, 40000, VIP6, 80, SYN);
        assert_eq!(e[other].process(&f).0, Verdict::Handoff(want as u16));
        fwd(&mut e[want], &f);
        let r = tcp_pkt(RA6, 8080, &c6, 40000, SYN | ACK);
        assert_eq!(e[other].process(&r).0, Verdict::Handoff(want as u16));
        let (_, out) = fwd(&mut e[want], &r);
        check_out(&out, &c6, (VIP6, 80), (&c6, 40000));
    }
}

fn v4(a: u32) -> IpAddr {
    IpAddr::from(a.to_be_bytes())
}

/// Every client of one persistence group (the shortest netmask / prefix of
/// the snapshot's services) maps to one shard.
#[test]
fn sharding_keeps_each_persistence_group_on_one_shard() {
    let text = shard_cfg();
    let snap = snapshot(&text, None);
    assert_eq!(snap.shard_prefix4, 23, "shortest IPv4 netmask");
    assert_eq!(snap.shard_prefix6, 64);
    let mut owners = [0usize; 2];
    for g in 0..256u32 {
        let base = u32::from_be_bytes([198, 18, 0, 0]) + (g << 9);
        let o = owner_shard(v4(base), &snap, 2);
        owners[o as usize] += 1;
        for host in [1u32, 77, 255, 256, 300, 511] {
            assert_eq!(
                owner_shard(v4(base + host), &snap, 2),
                o,
                "{}",
                v4(base + host)
            );
        }
        let o6 = owner_shard(ip(&format!("2001:db8:7:{g:x}::")), &snap, 2);
        for host in "::1 :ffff::1 :abcd:1234:5678:9abc".split(' ') {
            let a = ip(&format!("2001:db8:7:{g:x}{host}"));
            assert_eq!(owner_shard(a, &snap, 2), o6, "{a}");
        }
    }
    assert!(owners[0] > 50 && owners[1] > 50, "{owners:?}");

    // Through the engines: a /23 of clients (two /24 template groups of
    // "web", one of "wide") all go to one shard, which takes them; the
    // other hands every one of them over.
    let mut e = [Harness::sharded(&text, 0, 2), Harness::sharded(&text, 1, 2)];
    let owner = owner_shard(ip("198.18.30.0"), &snap, 2) as usize;
    for c in [
        "198.18.30.1",
        "198.18.30.254",
        "198.18.31.1",
        "198.18.31.77",
    ] {
        for port in [80, 81] {
            let f = tcp_pkt(c, 1000, VIP4, port, SYN);
            assert_eq!(e[owner].process(&f).0, FORWARD);
            assert_eq!(e[1 - owner].process(&f).0, Verdict::Handoff(owner as u16));
        }
    }
    assert_eq!(e[owner].engine.templates().len(), 3);
    assert_eq!(e[1 - owner].engine.templates().len(), 0);
}

// ======================================================= ICMP errors

fn icmp_cfg() -> String {
    cfg(&[
        svc("dr", &key("tcp", VIP4, 80), RR, &reals(&[RA], "")),
        svc(
            "nat",
            &key("tcp", VIP4, 81),
            RR,
            &[real(RB, "forward = \"nat\"\nport = 8081")],
        ),
        svc("dr6", &key("tcp", VIP6, 80), RR, &reals(&[RA6], "")),
        svc(
            "nat6",
            &key("tcp", VIP6, 81),
            RR,
            &[real(RB6, "forward = \"nat\"\nport = 8081")],
        ),
        svc(
            "ipip",
            &key("tcp", VIP4, 82),
            RR,
            &[real(RC, "forward = \"ipip\"")],
        ),
        svc(
            "udp-nat",
            &key("udp", VIP4, 53),
            RR,
            &[real(RB, "forward = \"nat\"\nport = 5353")],
        ),
    ])
}

/// ICMP "fragmentation needed" / "packet too big" about a tracked
/// connection's reply (quoted VIP -> client) reaches its real server.
#[test]
fn icmp_too_big_goes_to_the_connections_real_server() {
    let mut h = Harness::new(&icmp_cfg());
    let c6 = "2001:db8:5:1::1";
    for (c, vip, router, dr, nat) in [(C1, VIP4, ROUTER4, RA, RB), (c6, VIP6, ROUTER6, RA6, RB6)] {
        // DR: only the MACs change.
        syn(&mut h, c, 40000, vip, 80);
        let quoted = tcp_l3(vip, 80, c, 40000, ACK);
        let e = icmp_too_big(router, vip, &quoted);
        let (hop, out) = fwd(&mut h, &e);
        assert_eq!(hop, ip(dr));
        assert_eq!(&out[12..], &e[12..]);

        // NAT: outer destination and quoted source become the real server.
        syn(&mut h, c, 40001, vip, 81);
        let quoted = tcp_l3(vip, 81, c, 40001, ACK);
        let e = icmp_too_big(router, vip, &quoted);
        let (hop, out) = fwd(&mut h, &e);
        assert_eq!(hop, ip(nat));
        verify_frame(&out);
        let o = wire::parse(&out).unwrap();
        assert_eq!((o.src, o.dst), (ip(router), ip(nat)));
        let inner = o.inner.unwrap();
        assert_eq!((inner.src, inner.sport), (ip(nat), 8081));
        assert_eq!((inner.dst, inner.dport), (ip(c), 40001));
    }
    // IPIP: the error is tunnelled to the real server.
    syn(&mut h, C1, 40002, VIP4, 82);
    let e = icmp_too_big(ROUTER4, VIP4, &tcp_l3(VIP4, 82, C1, 40002, ACK));
    let (hop, out) = fwd(&mut h, &e);
    assert_eq!(hop, ip(RC));
    assert_eq!(&out[34..], &e[14..]);
}

/// NAT, the other way: an ICMP error from the real server's side about a
/// packet the client sent (quoted client -> RIP) goes to the client with
/// the VIP in place of the real server (IPVS `ip_vs_out_icmp`).
#[test]
fn icmp_error_from_nat_real_server_side_is_translated_to_the_client() {
    let mut h = Harness::new(&icmp_cfg());
    fwd(&mut h, &udp_pkt(C1, 5000, VIP4, 53));
    let quoted = l3(
        C1,
        RB,
        17,
        &udp(ip(C1), ip(RB), 5000, 5353, b"query", false),
    );
    // Port unreachable from the real server itself.
    let e = frame_of(RB, C1, 1, &icmp4(3, 3, 0, &quoted));
    let (hop, out) = fwd(&mut h, &e);
    assert_eq!(hop, ip(C1));
    verify_frame(&out);
    let o = wire::parse(&out).unwrap();
    assert_eq!((o.src, o.dst), (ip(VIP4), ip(C1)));
    let inner = o.inner.unwrap();
    assert_eq!((inner.src, inner.sport), (ip(C1), 5000));
    assert_eq!((inner.dst, inner.dport), (ip(VIP4), 53));
}

#[test]
fn icmp_errors_without_connection() {
    let mut h = Harness::new(&icmp_cfg());
    // About a virtual service, but no such connection: dropped, counted.
    let e = icmp_too_big(ROUTER4, VIP4, &tcp_l3(VIP4, 80, C1, 1, ACK));
    assert_eq!(
        h.process(&e),
        (Verdict::Drop(DropReason::IcmpNoConn), e.clone())
    );
    assert_eq!(dropped(&h, DropReason::IcmpNoConn), 1);
    // About something else (the director's own traffic): not ours.
    let e = icmp_too_big(ROUTER4, "198.18.0.3", &tcp_l3("198.18.0.3", 22, C1, 1, ACK));
    assert_eq!(h.process(&e), (Verdict::Pass, e.clone()));
    let e = icmp_too_big(ROUTER4, VIP4, &tcp_l3(VIP4, 22, C1, 1, ACK));
    assert_eq!(h.process(&e), (Verdict::Pass, e.clone()));
}

// ======================================================= malformed & co

fn plain_cfg() -> String {
    cfg(&[
        svc("web", &key("tcp", VIP4, 80), RR, &reals(&[RA], "")),
        svc("web6", &key("tcp", VIP6, 80), RR, &reals(&[RA6], "")),
    ])
}

#[test]
fn malformed_frames_are_dropped_and_counted() {
    let mut h = Harness::new(&plain_cfg());
    let good = tcp_pkt(C1, 1000, VIP4, 80, SYN);
    let mut cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![0x02; 10], "truncated_ethernet"),
        (good[..14 + 12].to_vec(), "truncated_ipv4"),
        (frame_of(C1, VIP4, 6, &good[34..44]), "truncated_tcp"),
        (
            tcp_pkt("2001:db8:5::1", 1, VIP6, 80, SYN)[..14 + 30].to_vec(),
            "truncated_ipv6",
        ),
    ];
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44;
    cases.push((bad_ihl, "bad_ihl"));
    let mut bad_version = good.clone();
    bad_version[14] = 0x65;
    cases.push((bad_version, "bad_version"));
    let mut long = good.clone();
    long[16..18].copy_from_slice(&1400u16.to_be_bytes());
    cases.push((long, "bad_total_len"));
    let mut bad_off = good.clone();
    bad_off[14 + 20 + 12] = 0x20;
    cases.push((bad_off, "bad_tcp_offset"));
    let mut bad_udp = udp_pkt(C1, 1, VIP4, 53);
    bad_udp[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&3u16.to_be_bytes());
    cases.push((bad_udp, "udp_len_mismatch"));
    for (f, reason) in &cases {
        let (v, out) = h.process(f);
        assert_eq!(v, Verdict::Drop(DropReason::Malformed), "{reason}");
        assert_eq!(&out, f);
        assert_eq!(h.engine.stats.malformed.get(reason), Some(&1), "{reason}");
    }
    assert_eq!(dropped(&h, DropReason::Malformed), cases.len() as u64);
    assert_eq!(h.engine.stats.packets, cases.len() as u64);
    assert_eq!(h.engine.conns().len(), 0);
}

#[test]
fn fragments_to_a_vip_are_dropped_and_counted() {
    let mut h = Harness::new(&plain_cfg());
    let seg = tcp(ip(C1), ip(VIP4), 1000, 80, SYN, &[], b"hello");
    let mut first = V4::new(C1, VIP4, 6);
    first.frag = 0x2000; // MF
    let mut later = V4::new(C1, VIP4, 6);
    later.frag = 100; // offset 800
    let f6 = {
        let mut v = V6::new("2001:db8:5::1", VIP6, 44);
        v.ext = frag_hdr(6, 0, true, 0x1234);
        let seg = tcp(ip("2001:db8:5::1"), ip(VIP6), 1000, 80, SYN, &[], b"x");
        eth_in(&[], 0x86dd, &v.build(&seg))
    };
    for f in [
        eth_in(&[], 0x0800, &first.build(&seg)),
        eth_in(&[], 0x0800, &later.build(b"later fragment data")),
        f6,
    ] {
        assert_eq!(
            h.process(&f),
            (Verdict::Drop(DropReason::Fragment), f.clone())
        );
    }
    assert_eq!(dropped(&h, DropReason::Fragment), 3);
    // Fragments of other traffic are not ours.
    let mut other = V4::new(C1, "198.18.0.3", 6);
    other.frag = 0x2000;
    let f = eth_in(&[], 0x0800, &other.build(&seg));
    assert_eq!(h.process(&f), (Verdict::Pass, f.clone()));
    assert_eq!(h.engine.conns().len(), 0);
}

#[test]
fn non_ip_and_non_vip_traffic_passes() {
    for (shard, shards) in [(0, 1), (0, 2), (1, 2)] {
        let mut h = Harness::sharded(&plain_cfg(), shard, shards);
        let arp = eth(
            [0xff; 6],
            MAC_A,
            &[],
            0x0806,
            &[
                0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 198, 18, 10, 1, 0, 0, 0, 0, 0, 0, 198,
                18, 0, 10,
            ],
        );
        let cases = [
            arp,
            tcp_pkt(C1, 1000, "198.18.0.3", 80, SYN),
            udp_pkt(C1, 1000, "198.18.0.3", 53),
            tcp_pkt(C1, 1000, VIP4, 22, SYN),
            tcp_pkt("2001:db8:5::1", 1000, "2001:db8::3", 80, SYN),
            frame_of(C1, VIP4, 1, &icmp4(8, 0, 0x1234_0001, b"ping")),
            frame_of(C1, VIP4, 47, b"gre payload"),
        ];
        for f in &cases {
            assert_eq!(h.process(f), (Verdict::Pass, f.clone()), "{f:02x?}");
        }
        assert_eq!(h.engine.stats.passed, cases.len() as u64);
        assert_eq!(h.engine.stats.handoff, 0);
    }
}

// ======================================================= schedulers

/// `n` new connections from distinct clients; the real server of each
/// (`None`: dropped, no server available).
fn sched_run(scheduler: &str, reals: &[String], n: u32) -> Vec<Option<IpAddr>> {
    let mut h = Harness::new(&cfg(&[svc(
        "s",
        &key("tcp", VIP4, 80),
        &format!("scheduler = \"{scheduler}\""),
        reals,
    )]));
    (0..n)
        .map(|i| {
            let c = v4(u32::from_be_bytes([198, 18, 40, 0]) + i).to_string();
            match h.process(&tcp_pkt(&c, 1000, VIP4, 80, SYN)) {
                (Verdict::Drop(DropReason::NoDest), _) => None,
                (v, out) => {
                    assert_eq!(v, FORWARD);
                    Some(next_hop_of(&out))
                }
            }
        })
        .collect()
}

fn count(v: &[Option<IpAddr>], a: &str) -> usize {
    v.iter().filter(|x| **x == Some(ip(a))).count()
}

#[test]
fn rr_spreads_in_order() {
    let v = sched_run("rr", &reals(&[RA, RB, RC], ""), 30);
    for (i, a) in v.iter().enumerate() {
        assert_eq!(*a, Some(ip([RA, RB, RC][i % 3])));
    }
}

#[test]
fn wrr_respects_weights() {
    let v = sched_run(
        "wrr",
        &[
            real(RA, "weight = 3"),
            real(RB, "weight = 1"),
            real(RC, "weight = 2"),
        ],
        60,
    );
    assert_eq!((count(&v, RA), count(&v, RB), count(&v, RC)), (30, 10, 20));
}

#[test]
fn weight_zero_is_skipped_by_every_scheduler() {
    for s in [
        "rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "mh", "fo", "ovf", "twos",
    ] {
        let v = sched_run(s, &[real(RA, "weight = 0"), real(RB, ""), real(RC, "")], 20);
        assert_eq!(count(&v, RA), 0, "{s}");
        assert!(count(&v, RB) + count(&v, RC) > 0, "{s}");
    }
    let v = sched_run(
        "rr",
        &[real(RA, ""), real(RB, "weight = 0"), real(RC, "")],
        20,
    );
    assert_eq!((count(&v, RA), count(&v, RB), count(&v, RC)), (10, 0, 10));
}

/// Connections in SYN_RECV count as active (IPVS `tcp_state_active_table`
/// since Linux 4.14), so wlc sees a half-open connection as 256.
#[test]
fn wlc_counts_half_open_connections_as_active() {
    let mut h = Harness::new(&cfg(&[svc(
        "s",
        &key("tcp", VIP4, 80),
        "scheduler = \"wlc\"",
        &reals(&[RA, RB], ""),
    )]));
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RA));
    let snap = h.snap();
    let id = |a: &str| {
        snap.services[0]
            .dests
            .iter()
            .find(|d| d.addr == ip(a))
            .unwrap()
            .id
    };
    let ca = h.engine.dest_counters()[&id(RA)];
    assert_eq!((ca.active, ca.inactive), (1, 0), "SYN_RECV is active");
    // RB: two closed (inactive) connections.
    for sport in [2000, 2001] {
        assert_eq!(syn(&mut h, C2, sport, VIP4, 80), ip(RB));
        fwd(&mut h, &tcp_pkt(C2, sport, VIP4, 80, ACK));
        fwd(&mut h, &tcp_pkt(C2, sport, VIP4, 80, RST));
    }
    let cb = h.engine.dest_counters()[&id(RB)];
    assert_eq!((cb.active, cb.inactive), (0, 2));
    // 256 * 1 > 2: RB.
    assert_eq!(syn(&mut h, C3, 3000, VIP4, 80), ip(RB));
}

// ======================================================= fuzz logic

/// The fuzz program is not vacuous: over some pseudo-random inputs it
/// reaches every verdict the engine has for its traffic.
#[test]
fn fuzz_logic_reaches_every_path() {
    fuzz::run(&[]);
    fuzz::run(&[0; 64]);
    fuzz::run(&[0xff; 512]);
    let mut total = fuzz::Coverage::default();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..64 {
        let data: Vec<u8> = (0..4000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        total.add(&fuzz::run(&data));
    }
    for v in [
        "forward",
        "pass",
        "handoff",
        "drop:malformed",
        "drop:fragment",
        "drop:no_dest",
        "drop:table_full",
        "drop:not_syn",
        "drop:dest_removed",
        "drop:icmp_no_conn",
    ] {
        assert!(
            total.verdicts.get(v).is_some_and(|&n| n > 0),
            "{v}: {total:?}"
        );
    }
    assert!(total.template_hits > 0, "{total:?}");
    assert!(
        total.expired_conns > 0 && total.expired_templates > 0,
        "{total:?}"
    );
    assert!(total.evicted_conns > 0 && total.swaps > 0, "{total:?}");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    /// The `engine` fuzz target's invariants over random frame sequences,
    /// time steps and snapshot swaps (see `tests/engine_harness/fuzz.rs`).
    #[test]
    fn fuzz_logic_proptest(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let _ = fuzz::run(&data);
    }
}

#[test]
fn engine_config_default_is_single_shard() {
    let c = EngineConfig::default();
    assert_eq!((c.shard, c.shards), (0, 1));
}

// ======================================================= next-hop cache

/// An established packet takes its real server's next hop from a per-real
/// cache while the neighbour table's version is unchanged, and looks it up
/// again as soon as the table changes (a route or MAC change is followed);
/// a table that does not allow caching is asked every time.
#[test]
fn next_hop_cache_follows_the_neighbour_table_version() {
    let text = cfg(&[svc("web", &key("tcp", VIP4, 80), RR, &reals(&[RA], ""))]);
    let moved = Verdict::Forward {
        ifindex: IFINDEX + 1,
    };
    for cacheable in [true, false] {
        let mut h = Harness::new(&text);
        h.nb.version = cacheable.then_some(1);
        assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RA));
        let ack = tcp_pkt(C1, 1000, VIP4, 80, ACK);
        assert_eq!(h.process(&ack).0, FORWARD);
        // The answer changes without a new version: a cached hop is kept
        // (the version promises the same answers), an uncached one is not.
        h.nb.ifindex_shift = 1;
        let want = if cacheable { FORWARD } else { moved };
        assert_eq!(h.process(&ack).0, want, "cacheable {cacheable}");
        // A new table version: looked up again.
        h.nb.version = cacheable.then_some(2);
        assert_eq!(h.process(&ack).0, moved, "cacheable {cacheable}");
        // A neighbour that disappears with a new version is not served
        // from the cache either.
        h.nb.missing = vec![ip(RA)];
        h.nb.version = cacheable.then_some(3);
        assert_eq!(
            h.process(&ack).0,
            Verdict::Drop(DropReason::NoNeighbor),
            "cacheable {cacheable}"
        );
    }
}

/// `Engine::warm_batch` (the RX batch pre-pass) prefetches each frame's
/// index bucket and the entry its lookup will use, for a client packet and
/// for a NAT real server's reply, and changes nothing.
#[test]
fn warm_batch_prefetches_the_connection_a_packet_will_use_and_changes_nothing() {
    let text = cfg(&[
        svc("dr", &key("tcp", VIP4, 80), RR, &reals(&[RA], "")),
        svc(
            "nat",
            &key("tcp", VIP4, 81),
            RR,
            &reals(&[RB], "port = 8080\nforward = \"nat\""),
        ),
    ]);
    let mut h = Harness::new(&text);
    let ack = tcp_pkt(C1, 1000, VIP4, 80, ACK);
    let reply = tcp_pkt(RB, 8080, C1, 1001, SYN | ACK);
    let prefetched = |h: &Harness, frames: &[&[u8]]| {
        let v = std::cell::RefCell::new(Vec::new());
        h.engine.warm_batch(frames, |a| v.borrow_mut().push(a));
        v.into_inner()
    };
    // No connection yet: the two home buckets only.
    assert_eq!(prefetched(&h, &[&ack, &reply]).len(), 2);
    syn(&mut h, C1, 1000, VIP4, 80);
    syn(&mut h, C1, 1001, VIP4, 81);
    let (conns, packets) = (h.engine.conns().len(), h.engine.stats.packets);
    // Two buckets, then both ends of each frame's entry (inbound, reply).
    let got = prefetched(&h, &[&ack, &reply]);
    assert_eq!(got.len(), 6, "{got:x?}");
    assert_ne!(got[2], got[4], "the two frames belong to two connections");
    assert!(prefetched(&h, &[&[0u8; 10]]).is_empty(), "runt frame");
    assert_eq!(
        (h.engine.conns().len(), h.engine.stats.packets),
        (conns, packets)
    );
    assert_eq!(h.process(&ack).0, FORWARD);
}

/// For a frame that may open a connection (a TCP SYN, or UDP) and has no
/// connection yet, the batch pre-pass prefetches, after the connection's
/// bucket, the persistence template's index bucket (persistent services:
/// the one line the template lookup and, for a new client, the insert
/// read), then the slab slots the new connection and template will fill.
/// Not for other packets without a connection.
#[test]
fn warm_batch_prefetches_the_persistence_template_of_a_new_connection() {
    let text = format!(
        "{}{}",
        fwmark_cfg(VIP4, &[RA, RB], ", netmask = \"255.255.255.0\""),
        svc("plain", &key("tcp", VIP4, 81), RR, &reals(&[RA], ""))
    );
    let mut h = Harness::new(&text);
    let prefetched = |h: &Harness, frames: &[&[u8]]| {
        let v = std::cell::RefCell::new(Vec::new());
        h.engine.warm_batch(frames, |a| v.borrow_mut().push(a));
        v.into_inner()
    };
    let lines =
        |r: std::ops::Range<usize>| (r.start & !63..r.end).step_by(64).collect::<Vec<usize>>();
    let t = h.engine.templates();
    // C1 and C2 share a /24: one template key.
    let k = TemplateKey::Fwmark {
        client_masked: ip("198.18.10.0"),
        mark: 7,
    };
    let bucket = t.bucket_addr(t.hash(&k));
    let conn_slot = lines(h.engine.conns().next_slots(false, 1));
    let tpl_slot = lines(t.next_slots(1));
    assert!(!conn_slot.is_empty() && !tpl_slot.is_empty());
    let syn443 = tcp_pkt(C2, 2000, VIP4, 443, SYN);
    let got = prefetched(&h, &[&syn443]);
    assert_eq!(
        got.get(1),
        Some(&bucket),
        "connection bucket, then template bucket"
    );
    assert_eq!(got[2..], [conn_slot.clone(), tpl_slot].concat(), "{got:x?}");
    // Not a packet that can open a connection: its bucket only. Not a
    // persistent service: no template.
    let ack = tcp_pkt(C2, 2000, VIP4, 443, ACK);
    assert_eq!(prefetched(&h, &[&ack]).len(), 1);
    let plain = prefetched(&h, &[&tcp_pkt(C2, 2000, VIP4, 81, SYN)]);
    assert_eq!(plain[1..], conn_slot[..]);
    // Not for a virtual service: nothing will be inserted for it.
    let other = prefetched(&h, &[&tcp_pkt(C2, 2000, VIP4, 82, SYN)]);
    assert_eq!(other.len(), 1, "{other:x?}");
    // The same bucket once the template exists (a template hit reads it).
    assert_eq!(syn(&mut h, C1, 1000, VIP4, 80), ip(RA));
    let t = h.engine.templates();
    assert_eq!(t.bucket_addr(t.hash(&k)), bucket);
    assert_eq!(prefetched(&h, &[&syn443])[..2], got[..2]);
    let n = h.engine.templates().len();
    assert_eq!(n, 1, "the pre-pass changes nothing");
}

/// An expired connection no longer counts for the least-connection
/// schedulers: the scheduler's view of a server's connections follows each
/// expiry (not only new connections and removals by packets).
#[test]
fn expiry_updates_the_least_connection_view() {
    let text = cfg(&[svc(
        "dns",
        &key("udp", VIP4, 53),
        "scheduler = \"lc\"",
        &reals(&[RA, RB], ""),
    )]);
    let mut h = Harness::new(&text);
    let ra: IpAddr = RA.parse().unwrap();
    let rb: IpAddr = RB.parse().unwrap();
    assert_eq!(fwd(&mut h, &udp_pkt(C1, 1000, VIP4, 53)).0, ra);
    h.advance(10_000);
    assert_eq!(fwd(&mut h, &udp_pkt(C2, 1000, VIP4, 53)).0, rb);
    assert_eq!(
        fwd(&mut h, &udp_pkt(C3, 1000, VIP4, 53)).0,
        ra,
        "tie: first server"
    );
    // C1's connection expires (udp 300 s); C2's and C3's have 9 s left.
    h.advance(291_000);
    assert_eq!(h.engine.conns().len(), 2);
    // One each now: the tie goes to the first server. A view still
    // counting C1 (two on RA) would send it to RB.
    assert_eq!(fwd(&mut h, &udp_pkt(C4, 1000, VIP4, 53)).0, ra);
}
