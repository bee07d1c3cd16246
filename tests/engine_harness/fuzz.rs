//! The logic of the `engine` fuzz target, callable from a proptest too.
//!
//! [`run`] reads its input as a program: engine shape, then a sequence of
//! operations — a packet (mostly well-formed traffic of the configured
//! services, replies, ICMP errors, fragments, other traffic; sometimes
//! mutated or random bytes), a time step (with `Engine::tick`), or a
//! snapshot swap among four configs that remove, add and quiesce real
//! servers and flip `expire_nodest_conn` / `expire_quiescent_template`.
//! After every operation it checks:
//! - no panic (the whole run);
//! - table sizes within their capacities;
//! - the counters move with the verdict (a drop counts its reason, a pass
//!   or hand-off its counter, every frame `packets`);
//! - every `Handoff(o)` names the owner shard `owner_shard` computes for
//!   the packet's client (the source of a request, the destination of a
//!   reply, the client of the connection an ICMP error quotes);
//! - a forwarded request belongs to a connection whose real server is in
//!   the current snapshot and is where the frame goes; a forwarded
//!   well-formed frame has valid checksums (full recomputation);
//! - after a persistence template lookup (a new connection of a persistent
//!   service), the template points at a real server of the current
//!   snapshot (or the packet was dropped and the template still controls
//!   live connections), and a new connection follows its template;
//! - per real server, the active/inactive counts equal the connections in
//!   the table.

use std::collections::HashMap;
use std::net::IpAddr;

use xdpvs::service::model::{mask_addr, DestId, FlowKey, Proto, ServiceKey};
use xdpvs::service::snapshot::Snapshot;
use xdpvs::shard::engine::{owner_shard, EngineConfig};
use xdpvs::shard::tcp_state;
use xdpvs::shard::template::TemplateKey;
use xdpvs::shard::verdict::{DropReason, Verdict};
use xdpvs::wire;

use super::wire_builder::*;
use super::{addr_of_mac, snapshot, Harness};

const VIP4: &str = "198.18.0.10";
const VIP4M: &str = "198.18.0.11";
const VIP6: &str = "2001:db8::10";
const RA: &str = "198.18.1.1";
const RB: &str = "198.18.1.2";
const RC: &str = "198.18.1.3";
const RD: &str = "198.18.1.4";
const RE: &str = "198.18.1.5";
const RA6: &str = "2001:db8:1::1";
const RB6: &str = "2001:db8:1::2";

const CLIENTS4: [&str; 6] = [
    "198.18.10.1",
    "198.18.10.2",
    "198.18.11.1",
    "198.18.12.7",
    "198.19.0.9",
    "198.19.200.3",
];
const CLIENTS6: [&str; 4] = [
    "2001:db8:5:1::1",
    "2001:db8:5:1::2",
    "2001:db8:5:2::1",
    "2001:db8:9::9",
];
const SPORTS: [u16; 4] = [1000, 1001, 1002, 40000];
const TCP_FLAGS: [u8; 10] = [0x02, 0x02, 0x02, 0x10, 0x18, 0x11, 0x04, 0x12, 0x00, 0x14];
/// (VIP, port) of requests: services, the port-0 service, fwmark ports,
/// ports nobody serves.
const TARGETS4: [(&str, u16); 7] = [
    (VIP4, 80),
    (VIP4, 443),
    (VIP4, 9999),
    (VIP4, 8080),
    (VIP4M, 80),
    (VIP4M, 443),
    (VIP4M, 22),
];
const TARGETS6: [(&str, u16); 3] = [(VIP6, 80), (VIP6, 81), (VIP6, 443)];
/// (real, port, proto) that NAT replies come from.
const REPLIES: [(&str, u16, u8); 9] = [
    (RA, 8080, 6),
    (RC, 8081, 6),
    (RD, 80, 6),
    (RD, 443, 6),
    (RA, 5353, 17),
    (RB, 5353, 17),
    (RA6, 8080, 6),
    (RA6, 5353, 17),
    (RB6, 5353, 17),
];

/// A config variant: real servers gone, real servers at weight 0, flags.
struct Variant {
    gone: &'static [&'static str],
    zero: &'static [&'static str],
    nodest: bool,
    quiescent: bool,
    no_dns: bool,
}

const VARIANTS: [Variant; 4] = [
    Variant {
        gone: &[],
        zero: &[],
        nodest: false,
        quiescent: false,
        no_dns: false,
    },
    Variant {
        gone: &[RA, RB6],
        zero: &[RB],
        nodest: true,
        quiescent: false,
        no_dns: false,
    },
    Variant {
        gone: &[RC],
        zero: &[RB, RA6],
        nodest: false,
        quiescent: true,
        no_dns: false,
    },
    Variant {
        gone: &[RB, RD, RA6],
        zero: &[],
        nodest: true,
        quiescent: true,
        no_dns: true,
    },
];

/// The config text of variant `i`.
pub fn config_text(i: usize) -> String {
    let v = &VARIANTS[i % VARIANTS.len()];
    let real = |addr: &str, weight: u32, extra: &str| -> String {
        if v.gone.contains(&addr) {
            return String::new();
        }
        let w = if v.zero.contains(&addr) { 0 } else { weight };
        format!("[[service.real]]\naddr = \"{addr}\"\nweight = {w}\n{extra}\n")
    };
    let mut s = format!(
        "[director]\ninterfaces = [\"eth0\"]\ntunnel_src4 = \"198.18.0.2\"\ntunnel_src6 = \"2001:db8::2\"\n\
         expire_nodest_conn = {}\nexpire_quiescent_template = {}\n\n\
         [timeouts]\ntcp = 60\ntcp_fin = 20\nudp = 10\n\n\
         [[fwmark]]\nmark = 1\nrules = [ {{ vip = \"{VIP4M}\", proto = \"tcp\", ports = \"80,443\" }} ]\n",
        v.nodest, v.quiescent
    );
    let nat = |p: u16| format!("forward = \"nat\"\nport = {p}");
    s += &format!(
        "\n[[service]]\nname = \"web\"\nproto = \"tcp\"\nvip = \"{VIP4}\"\nport = 80\nscheduler = \"rr\"\n\
         persistence = {{ timeout = 30, netmask = \"255.255.255.0\" }}\n"
    );
    s += &real(RA, 1, &nat(8080));
    s += &real(RB, 1, "");
    s += &real(RC, 2, &nat(8081));
    s += &format!(
        "\n[[service]]\nname = \"all\"\nproto = \"tcp\"\nvip = \"{VIP4}\"\nport = 0\nscheduler = \"wlc\"\n\
         persistence = {{ timeout = 20 }}\n"
    );
    s += &real(RA, 1, "");
    s += &real(RD, 1, "");
    if !v.no_dns {
        s += &format!(
            "\n[[service]]\nname = \"dns\"\nproto = \"udp\"\nvip = \"{VIP4}\"\nport = 53\nscheduler = \"rr\"\n"
        );
        s += &real(RA, 1, &nat(5353));
        s += &real(RB, 1, &nat(5353));
    }
    s += "\n[[service]]\nname = \"mark\"\nfwmark = 1\nscheduler = \"lc\"\npersistence = { timeout = 30 }\n";
    s += &real(RC, 1, "");
    s += &real(RD, 1, "forward = \"nat\"");
    s += &format!(
        "\n[[service]]\nname = \"web6\"\nproto = \"tcp\"\nvip = \"{VIP6}\"\nport = 80\nscheduler = \"wrr\"\n\
         persistence = {{ timeout = 30, prefix6 = 64 }}\n"
    );
    s += &real(RA6, 2, &nat(8080));
    s += &real(RB6, 1, "forward = \"ipip\"");
    s += &real(RE, 1, "forward = \"gue\"");
    s += &format!(
        "\n[[service]]\nname = \"dns6\"\nproto = \"udp\"\nvip = \"{VIP6}\"\nport = 53\nscheduler = \"rr\"\n"
    );
    s += &real(RA6, 1, &nat(5353));
    s += &real(RB6, 1, &nat(5353));
    s
}

/// Reads the fuzz input; zeros once it is used up.
struct Input<'a> {
    d: &'a [u8],
    i: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.d.get(self.i).copied().unwrap_or(0);
        self.i += 1;
        b
    }
    fn done(&self) -> bool {
        self.i >= self.d.len()
    }
    fn pick<T: Copy>(&mut self, s: &[T]) -> T {
        s[usize::from(self.byte()) % s.len()]
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }
}

/// A generated frame and what the checker knows about it.
struct Gen {
    frame: Vec<u8>,
    /// The client address whose shard owns the packet.
    owner: Option<IpAddr>,
    /// A request to a VIP: its flow key.
    request: Option<FlowKey>,
    /// Built by the builder, unmutated: checksums valid.
    well_formed: bool,
    /// The engine must not hand it over (fragments, non-IP, other traffic).
    no_handoff: bool,
}

impl Gen {
    fn new(frame: Vec<u8>) -> Gen {
        Gen {
            frame,
            owner: None,
            request: None,
            well_formed: true,
            no_handoff: false,
        }
    }
}

fn l3(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = V4::new("0.0.0.0", "0.0.0.0", proto);
            h.src = s;
            h.dst = d;
            h.build(l4)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = V6::new("::", "::", proto);
            h.src = s;
            h.dst = d;
            h.build(l4)
        }
        _ => unreachable!("mixed families"),
    }
}

fn l4(proto: u8, src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    if proto == 6 {
        tcp(src, dst, sport, dport, flags, &[], b"data")
    } else {
        udp(src, dst, sport, dport, b"data", false)
    }
}

fn eth_ip(pkt: &[u8], v6: bool) -> Vec<u8> {
    eth_in(&[], if v6 { 0x86dd } else { 0x0800 }, pkt)
}

fn client(inp: &mut Input<'_>, v6: bool) -> IpAddr {
    ip(if v6 {
        inp.pick(&CLIENTS6)
    } else {
        inp.pick(&CLIENTS4)
    })
}

fn gen_packet(inp: &mut Input<'_>) -> Gen {
    let v6 = inp.byte().is_multiple_of(4);
    match inp.byte() % 16 {
        // Requests to the VIPs.
        0..=9 => {
            let c = client(inp, v6);
            let udp_req = inp.byte().is_multiple_of(4);
            let (proto, vip, port) = if udp_req {
                (17, if v6 { VIP6 } else { VIP4 }, inp.pick(&[53u16, 53, 54]))
            } else {
                let (vip, port) = if v6 {
                    inp.pick(&TARGETS6)
                } else {
                    inp.pick(&TARGETS4)
                };
                (6, vip, port)
            };
            let sport = inp.pick(&SPORTS);
            let flags = inp.pick(&TCP_FLAGS);
            let vip = ip(vip);
            let seg = l4(proto, c, vip, sport, port, flags);
            let mut g = Gen::new(eth_ip(&l3(c, vip, proto, &seg), v6));
            g.owner = Some(c);
            g.request = Some(FlowKey {
                proto: if proto == 6 { Proto::Tcp } else { Proto::Udp },
                src: c,
                dst: vip,
                sport,
                dport: port,
            });
            g
        }
        // Replies of NAT real servers.
        10 | 11 => {
            let (r, rport, proto) = inp.pick(&REPLIES);
            let r = ip(r);
            let c = client(inp, r.is_ipv6());
            let cport = inp.pick(&SPORTS);
            let flags = inp.pick(&TCP_FLAGS);
            let seg = l4(proto, r, c, rport, cport, flags);
            let mut g = Gen::new(eth_ip(&l3(r, c, proto, &seg), r.is_ipv6()));
            g.owner = Some(c);
            g
        }
        // ICMP errors quoting a reply (to the VIP) or a request (from a
        // NAT real server's side, to the client).
        12 | 13 => {
            let about_reply = inp.byte().is_multiple_of(2);
            let sport = inp.pick(&SPORTS);
            let (inner_src, inner_dst, sp, dp, proto, outer_src, outer_dst, c) = if about_reply {
                let c = client(inp, v6);
                let (vip, port) = if v6 {
                    inp.pick(&TARGETS6)
                } else {
                    inp.pick(&TARGETS4)
                };
                let router = ip(if v6 { "2001:db8:c8::1" } else { "198.18.200.1" });
                (ip(vip), c, port, sport, 6, router, ip(vip), c)
            } else {
                let (r, rport, proto) = inp.pick(&REPLIES);
                let r = ip(r);
                let c = client(inp, r.is_ipv6());
                (c, r, sport, rport, proto, r, c, c)
            };
            let v6 = inner_src.is_ipv6();
            let quoted = l3(
                inner_src,
                inner_dst,
                proto,
                &l4(proto, inner_src, inner_dst, sp, dp, 0x10),
            );
            let cut = 28 + usize::from(inp.byte() % 3) * 20 + if v6 { 20 } else { 0 };
            let quoted = &quoted[..cut.min(quoted.len())];
            let msg = if v6 {
                icmp6(outer_src, outer_dst, 2, 0, 1280, quoted)
            } else {
                icmp4(3, 4, 1400, quoted)
            };
            let mut g = Gen::new(eth_ip(
                &l3(outer_src, outer_dst, if v6 { 58 } else { 1 }, &msg),
                v6,
            ));
            g.owner = Some(c);
            g
        }
        // Fragments, to a VIP or not.
        14 => {
            let c = client(inp, v6);
            let dst = ip(match (v6, inp.byte() % 2) {
                (false, 0) => VIP4,
                (false, _) => "198.18.0.3",
                (true, 0) => VIP6,
                (true, _) => "2001:db8::3",
            });
            let seg = l4(6, c, dst, 1000, 80, 0x02);
            let frame = if v6 {
                let mut h = V6::new("::", "::", 44);
                if let (IpAddr::V6(s), IpAddr::V6(d)) = (c, dst) {
                    h.src = s;
                    h.dst = d;
                }
                h.ext = frag_hdr(6, 0, true, 7);
                eth_ip(&h.build(&seg), true)
            } else {
                let mut h = V4::new("0.0.0.0", "0.0.0.0", 6);
                if let (IpAddr::V4(s), IpAddr::V4(d)) = (c, dst) {
                    h.src = s;
                    h.dst = d;
                }
                h.frag = if inp.byte().is_multiple_of(2) {
                    0x2000
                } else {
                    185
                };
                eth_ip(&h.build(&seg), false)
            };
            let mut g = Gen::new(frame);
            g.no_handoff = true;
            g
        }
        // Other traffic: ARP, ICMP echo to a VIP, TCP elsewhere.
        _ => {
            let mut g = Gen::new(match inp.byte() % 3 {
                0 => eth(
                    [0xff; 6],
                    MAC_A,
                    &[],
                    0x0806,
                    &[
                        0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 198, 18, 10, 1, 0, 0, 0, 0, 0, 0,
                    ],
                ),
                1 => eth_ip(
                    &l3(ip("198.18.10.1"), ip(VIP4), 1, &icmp4(8, 0, 1, b"ping")),
                    false,
                ),
                _ => {
                    let c = client(inp, v6);
                    let d = ip(if v6 { "2001:db8::3" } else { "198.18.0.3" });
                    eth_ip(&l3(c, d, 6, &l4(6, c, d, 1, 22, 0x02)), v6)
                }
            });
            g.no_handoff = true;
            g
        }
    }
}

/// Truncate, extend or flip bytes of a generated frame.
fn mutate(inp: &mut Input<'_>, mut g: Gen) -> Gen {
    for _ in 0..1 + inp.byte() % 3 {
        let len = g.frame.len();
        match inp.byte() % 4 {
            0 => g.frame.truncate(usize::from(inp.u16()) % (len + 1)),
            1 => g.frame.extend(std::iter::repeat_n(
                inp.byte(),
                usize::from(inp.byte() % 16),
            )),
            _ if len > 0 => {
                let i = usize::from(inp.u16()) % len;
                g.frame[i] ^= inp.byte() | 1;
            }
            _ => {}
        }
    }
    g.well_formed = false;
    g.owner = None;
    g.request = None;
    g.no_handoff = false;
    g
}

/// The persistence template key of a request, if its service is
/// persistent (the engine's key, derived here from the snapshot).
fn template_key(snap: &Snapshot, k: &FlowKey) -> Option<(usize, TemplateKey)> {
    let si = snap.classifier.classify(k.proto, k.dst, k.dport)? as usize;
    let svc = snap.services.get(si)?;
    let p = svc.persistence?;
    let client_masked = mask_addr(k.src, p.prefix4, p.prefix6);
    let key = match svc.key {
        ServiceKey::Fwmark(mark) => TemplateKey::Fwmark {
            client_masked,
            mark,
        },
        ServiceKey::Addr { proto, vip, port } => TemplateKey::Addr {
            proto,
            client_masked,
            vip,
            vport: port,
        },
    };
    Some((si, key))
}

/// What one run went through (to check that the program reaches every
/// path, not only that it holds its invariants).
#[derive(Clone, Debug, Default)]
pub struct Coverage {
    pub verdicts: HashMap<String, u64>,
    pub new_conns: u64,
    pub template_hits: u64,
    pub expired_conns: u64,
    pub expired_templates: u64,
    pub evicted_conns: u64,
    pub swaps: u64,
}

impl Coverage {
    pub fn add(&mut self, o: &Coverage) {
        for (k, v) in &o.verdicts {
            *self.verdicts.entry(k.clone()).or_default() += v;
        }
        self.new_conns += o.new_conns;
        self.template_hits += o.template_hits;
        self.expired_conns += o.expired_conns;
        self.expired_templates += o.expired_templates;
        self.evicted_conns += o.evicted_conns;
        self.swaps += o.swaps;
    }
}

/// Run one fuzz input. Panics when an invariant breaks.
pub fn run(data: &[u8]) -> Coverage {
    let mut cov = Coverage::default();
    let mut inp = Input { d: data, i: 0 };
    let shards = 1 + u16::from(inp.byte() % 2);
    let shard = u16::from(inp.byte()) % shards;
    let cfg = EngineConfig {
        shard,
        shards,
        conn_capacity: 8 + usize::from(inp.byte() % 64),
        template_capacity: 2 + usize::from(inp.byte() % 16),
    };
    let mut variant = usize::from(inp.byte()) % VARIANTS.len();
    let mut h = Harness::with(&config_text(variant), cfg);
    let mut ops = 0;
    while !inp.done() && ops < 4000 {
        ops += 1;
        let g = match inp.byte() % 32 {
            0..=2 => {
                h.now += u64::from(inp.byte()) * 10;
                h.engine.tick(h.now);
                check_tables(&h, &cfg);
                continue;
            }
            3 => {
                h.now += u64::from(inp.byte()) * 2_000;
                h.engine.tick(h.now);
                check_tables(&h, &cfg);
                continue;
            }
            4 => {
                variant = usize::from(inp.byte()) % VARIANTS.len();
                let s = snapshot(&config_text(variant), Some(h.engine.snapshot()));
                h.engine.set_snapshot(s);
                cov.swaps += 1;
                check_tables(&h, &cfg);
                continue;
            }
            5 => {
                let n = usize::from(inp.byte() % 96);
                let mut g = Gen::new((0..n).map(|_| inp.byte()).collect());
                g.well_formed = false;
                g
            }
            6 | 7 => {
                let g = gen_packet(&mut inp);
                mutate(&mut inp, g)
            }
            _ => gen_packet(&mut inp),
        };
        let v = step(&mut h, &cfg, &g);
        let name = match v {
            Verdict::Drop(r) => format!("drop:{}", r.name()),
            Verdict::Forward { .. } => "forward".to_string(),
            Verdict::Hold { .. } => "hold".to_string(),
            Verdict::Pass => "pass".to_string(),
            Verdict::Handoff(_) => "handoff".to_string(),
        };
        *cov.verdicts.entry(name).or_default() += 1;
    }
    let st = &h.engine.stats;
    cov.new_conns = st.new_conns;
    cov.template_hits = st.template_hits;
    cov.expired_conns = st.expired_conns;
    cov.expired_templates = st.expired_templates;
    cov.evicted_conns = st.evicted_conns;
    cov
}

fn step(h: &mut Harness, cfg: &EngineConfig, g: &Gen) -> Verdict {
    let snap = h.snap();
    let before = h.engine.stats.clone();
    let existed = g.request.map(|k| h.engine.conns().lookup_in(&k).is_some());
    // The RX batch pre-pass sees every frame first, as in the data plane;
    // it reads and names addresses only.
    let (conns, tpls) = (h.engine.conns().len(), h.engine.templates().len());
    h.engine.warm_batch(&[&g.frame, &g.frame], |a| {
        std::hint::black_box(a);
    });
    assert_eq!(
        format!("{:?}", h.engine.stats),
        format!("{before:?}"),
        "the pre-pass changes nothing"
    );
    assert_eq!(
        (h.engine.conns().len(), h.engine.templates().len()),
        (conns, tpls)
    );
    let (v, out) = h.process(&g.frame);
    let st = &h.engine.stats;

    // Counters follow the verdict.
    assert_eq!(st.packets, before.packets + 1);
    let d = |r: DropReason| st.dropped[r as usize] - before.dropped[r as usize];
    let drops: u64 = DropReason::ALL.iter().map(|&r| d(r)).sum();
    match v {
        Verdict::Drop(r) => {
            assert_eq!(d(r), 1, "{r:?}");
            assert_eq!(drops, 1);
        }
        _ => assert_eq!(drops, 0, "{v:?}"),
    }
    assert_eq!(
        st.passed - before.passed,
        u64::from(v == Verdict::Pass),
        "{v:?}"
    );
    assert_eq!(
        st.handoff - before.handoff,
        u64::from(matches!(v, Verdict::Handoff(_))),
        "{v:?}"
    );
    if !matches!(v, Verdict::Forward { .. }) {
        assert_eq!(out, g.frame, "{v:?} leaves the frame unchanged");
    }

    // Hand-offs go to the owner of the client.
    if let Verdict::Handoff(o) = v {
        assert!(o < cfg.shards && o != cfg.shard, "{o}");
        assert!(!g.no_handoff, "hand-off of {:02x?}", g.frame);
        match g.owner {
            Some(c) => assert_eq!(o, owner_shard(c, &snap, cfg.shards), "client {c}"),
            None => {
                let i = wire::parse(&g.frame).expect("a handed-off frame parses");
                let mut cands = vec![i.src, i.dst];
                if let Some(inner) = i.inner {
                    cands.extend([inner.src, inner.dst]);
                }
                assert!(
                    cands
                        .iter()
                        .any(|a| owner_shard(*a, &snap, cfg.shards) == o),
                    "{o}"
                );
            }
        }
    }

    if let Verdict::Forward { .. } = v {
        let o = wire::parse(&out).expect("a forwarded frame parses");
        assert_eq!(o.vlans, 0);
        if g.well_formed {
            verify_frame(&out);
        }
        assert!(addr_of_mac(&out[..6]).is_some(), "next hop MAC");
    }

    // Requests: where they went, and their persistence template.
    if let (Some(k), Some(_existed)) = (g.request, existed) {
        let conns = h.engine.conns();
        let conn = conns.lookup_in(&k).and_then(|x| conns.get(x));
        if let Verdict::Forward { .. } = v {
            let c = conn.expect("a forwarded request has a connection");
            assert!(
                snap.dest(c.dest).is_some(),
                "forwarded to real server {:?} absent from the snapshot",
                c.dest
            );
            assert_eq!(
                addr_of_mac(&out[..6]),
                Some(c.raddr),
                "goes to its real server"
            );
        }
        // The engine looked its template up: it made a connection, or found
        // no server for one.
        let new_conn = h.engine.stats.new_conns > before.new_conns;
        let looked_up = new_conn || v == Verdict::Drop(DropReason::NoDest);
        if let (true, Some((si, tk))) = (looked_up, template_key(&snap, &k)) {
            let tpls = h.engine.templates();
            let t = tpls.lookup(&tk).and_then(|x| tpls.get(x));
            let svc = &snap.services[si];
            if let Some(t) = t {
                let present = svc.dest_by_id(t.dest).is_some();
                assert!(
                    present || (!matches!(v, Verdict::Forward { .. }) && t.controls() > 0),
                    "template of {tk:?} points at {:?}, absent (verdict {v:?})",
                    t.dest
                );
            }
            if new_conn {
                let c = conn.expect("new connection");
                let t = t.expect("a new persistent connection has a template");
                assert_eq!(t.dest, c.dest, "the new connection follows its template");
            }
        }
    }
    check_tables(h, cfg);
    v
}

fn check_tables(h: &Harness, cfg: &EngineConfig) {
    let conns = h.engine.conns();
    assert!(conns.len() <= cfg.conn_capacity);
    assert!(h.engine.templates().len() <= cfg.template_capacity);
    // Dest counters match the connection table.
    let mut live: HashMap<DestId, (u32, u32)> = HashMap::new();
    let mut n = 0;
    conns.for_each(|_, c| {
        n += 1;
        let e = live.entry(c.dest).or_default();
        if c.proto == Proto::Tcp && tcp_state::is_active(c.state) {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    });
    assert_eq!(n, conns.len());
    let counters = h.engine.dest_counters();
    for (id, &(a, i)) in &live {
        let c = counters
            .get(id)
            .unwrap_or_else(|| panic!("no counters for {id:?} with live connections"));
        assert_eq!((c.active, c.inactive), (a, i), "{id:?}");
    }
    for (id, c) in counters {
        if !live.contains_key(id) {
            assert_eq!((c.active, c.inactive), (0, 0), "{id:?}");
        }
    }
}
