//! The sorry server (keepalived `sorry_server`) in the engine: new
//! connections go to it while no real server of the service can take one,
//! back to the real servers as soon as one can; its connections continue
//! until they end; it never gets a persistence template. Time is passed in
//! (`Harness::advance`), no kernel.

mod engine_harness;

use std::net::IpAddr;

use engine_harness::wire_builder::*;
use engine_harness::{ip, next_hop_of, Harness, IFINDEX};
use xdpvs::service::model::{FlowKey, Proto};
use xdpvs::shard::template::TemplateKey;
use xdpvs::shard::verdict::{DropReason, Verdict};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const VIP: &str = "198.18.0.10";
const RA: &str = "198.18.1.1";
const RB: &str = "198.18.1.2";
const SORRY: &str = "198.18.1.99";
const C1: &str = "198.18.10.1";
const C2: &str = "198.18.10.2";
const FORWARD: Verdict = Verdict::Forward { ifindex: IFINDEX };

/// Reals RA and RB with weights `wa`, `wb` (`None`: not configured), a
/// sorry server when `sorry`, persistence when `persistent`.
fn cfg(wa: Option<u32>, wb: Option<u32>, sorry: bool, persistent: bool) -> String {
    let mut s = String::from("[director]\ninterfaces = [\"eth0\"]\n");
    s.push_str(&format!(
        "[[service]]\nname = \"web\"\nproto = \"tcp\"\nvip = \"{VIP}\"\nport = 80\nscheduler = \"rr\"\n"
    ));
    if persistent {
        s.push_str("persistence = { timeout = 300 }\n");
    }
    if sorry {
        s.push_str(&format!(
            "sorry_server = {{ addr = \"{SORRY}\", forward = \"dr\" }}\n"
        ));
    }
    for (a, w) in [(RA, wa), (RB, wb)] {
        if let Some(w) = w {
            s.push_str(&format!("[[service.real]]\naddr = \"{a}\"\nweight = {w}\n"));
        }
    }
    s
}

fn tcp_pkt(src: &str, sport: u16, flags: u8) -> Vec<u8> {
    let seg = tcp(ip(src), ip(VIP), sport, 80, flags, &[], b"hello");
    eth_in(&[], et_of(ip(src)), &V4::new(src, VIP, 6).build(&seg))
}

/// Where a packet goes: `Some(next hop)` when forwarded, `None` when dropped.
fn send(h: &mut Harness, client: &str, sport: u16, flags: u8) -> Option<IpAddr> {
    let (v, out) = h.process(&tcp_pkt(client, sport, flags));
    match v {
        FORWARD => Some(next_hop_of(&out)),
        Verdict::Drop(_) => None,
        other => panic!("unexpected verdict {other:?}"),
    }
}

fn tkey(client: &str) -> TemplateKey {
    TemplateKey::Addr {
        proto: Proto::Tcp,
        client_masked: ip(client),
        vip: ip(VIP),
        vport: 80,
    }
}

fn has_template(h: &Harness, client: &str) -> bool {
    h.engine.templates().lookup(&tkey(client)).is_some()
}

/// When does a new connection go to the sorry server? Table: (RA weight,
/// RB weight, sorry server configured) -> where a new SYN goes.
#[test]
fn new_connections_go_to_the_sorry_server_only_when_no_real_server_can_take_them() {
    let a = Some(ip(RA));
    let s = Some(ip(SORRY));
    type Case = (Option<u32>, Option<u32>, bool, Option<IpAddr>);
    let cases: &[Case] = &[
        (Some(1), None, true, a),     // a real server is available
        (Some(0), None, true, s),     // all quiesced / down
        (Some(0), Some(0), true, s),  // all quiesced / down
        (None, None, true, s),        // none configured
        (Some(0), None, false, None), // no sorry server: dropped
        (None, None, false, None),    // nothing at all: dropped
        (Some(1), Some(0), true, a),  // one available is enough
    ];
    for (persistent, sport) in [(false, 1000u16), (true, 2000)] {
        for (i, &(wa, wb, sorry, want)) in cases.iter().enumerate() {
            let mut h = Harness::new(&cfg(wa, wb, sorry, persistent));
            let got = send(&mut h, C1, sport, SYN);
            assert_eq!(got, want, "case {i} persistent {persistent}");
            if want.is_none() {
                assert_eq!(h.engine.stats.dropped[DropReason::NoDest as usize], 1);
            }
        }
    }
}

/// All down -> sorry; one back -> new connections to it, while the sorry
/// server's connection continues.
#[test]
fn a_real_server_coming_back_takes_new_connections_and_sorry_connections_finish() {
    for persistent in [false, true] {
        let mut h = Harness::new(&cfg(Some(1), Some(1), true, persistent));
        // Health checks took both down (quiesced).
        h.reload(&cfg(Some(0), Some(0), true, persistent));
        assert_eq!(send(&mut h, C1, 1000, SYN), Some(ip(SORRY)));
        assert_eq!(send(&mut h, C1, 1000, ACK), Some(ip(SORRY)));
        assert_eq!(send(&mut h, C2, 1000, SYN), Some(ip(SORRY)));
        h.advance(1_000);
        // RB comes back.
        h.reload(&cfg(Some(0), Some(1), true, persistent));
        for (client, sport) in [(C1, 1001), (C2, 1001), (C1, 1002)] {
            assert_eq!(
                send(&mut h, client, sport, SYN),
                Some(ip(RB)),
                "{client}:{sport} persistent {persistent}"
            );
        }
        // The sorry server's connections go on until they end.
        assert_eq!(send(&mut h, C1, 1000, ACK), Some(ip(SORRY)));
        assert_eq!(send(&mut h, C2, 1000, ACK), Some(ip(SORRY)));
        let k = FlowKey {
            proto: Proto::Tcp,
            src: ip(C1),
            dst: ip(VIP),
            sport: 1000,
            dport: 80,
        };
        let c = h.engine.conns();
        let conn = c.lookup_in(&k).and_then(|x| c.get(x)).expect("sorry conn");
        assert_eq!(conn.raddr, ip(SORRY));
        // Counted like a real server.
        let sorry_id = h
            .snap()
            .services
            .first()
            .and_then(|s| s.sorry_server())
            .map(|d| d.id)
            .expect("sorry server in the snapshot");
        let counters = h.engine.dest_counters().get(&sorry_id).copied();
        let counters = counters.expect("sorry server counters");
        assert_eq!((counters.conns, counters.inpkts), (2, 5));
    }
}

/// No persistence template points at the sorry server: a client group
/// comes back to a real server at its first new connection after one is
/// back, and then sticks to it.
#[test]
fn no_template_to_the_sorry_server() {
    let mut h = Harness::new(&cfg(Some(0), Some(0), true, true));
    assert_eq!(send(&mut h, C1, 1000, SYN), Some(ip(SORRY)));
    assert!(!has_template(&h, C1), "no template to the sorry server");
    let sorry_persist: u32 = h.engine.dest_counters().values().map(|c| c.persist).sum();
    assert_eq!(sorry_persist, 0);
    h.reload(&cfg(Some(1), Some(0), true, true));
    assert_eq!(send(&mut h, C1, 1001, SYN), Some(ip(RA)));
    assert!(has_template(&h, C1));
    h.reload(&cfg(Some(1), Some(1), true, true));
    for sport in 1002..1006 {
        assert_eq!(send(&mut h, C1, sport, SYN), Some(ip(RA)), "persistence");
    }
}

/// A template to a server that is removed (health check `remove`) with
/// nothing else left: the sorry server takes the connection, the template
/// is not rebound to it.
#[test]
fn invalid_template_with_no_real_server_goes_to_sorry_without_rebinding() {
    let mut h = Harness::new(&cfg(Some(1), None, true, true));
    assert_eq!(send(&mut h, C1, 1000, SYN), Some(ip(RA)));
    assert_eq!(send(&mut h, C1, 1000, 0x01 | ACK), Some(ip(RA)));
    h.reload(&cfg(None, None, true, true));
    assert_eq!(send(&mut h, C1, 1001, SYN), Some(ip(SORRY)));
    if let Some(t) = h
        .engine
        .templates()
        .lookup(&tkey(C1))
        .and_then(|x| h.engine.templates().get(x))
    {
        assert_ne!(
            h.snap().dest(t.dest).map(|(_, d)| d.addr),
            Some(ip(SORRY)),
            "template rebound to the sorry server"
        );
    }
    h.reload(&cfg(None, Some(1), true, true));
    assert_eq!(send(&mut h, C1, 1002, SYN), Some(ip(RB)));
}

/// The sorry server keeps its id (and so its connections and counters)
/// across a reload; a NAT sorry server is a NAT real address.
#[test]
fn sorry_server_survives_reload_and_nat_is_listed() {
    let mut h = Harness::new(&cfg(Some(0), None, true, false));
    let id = |h: &Harness| {
        h.snap()
            .services
            .first()
            .and_then(|s| s.sorry_server())
            .map(|d| d.id)
    };
    let before = id(&h);
    assert_eq!(send(&mut h, C1, 1000, SYN), Some(ip(SORRY)));
    h.reload(&cfg(Some(0), Some(0), true, false));
    assert_eq!(id(&h), before);
    assert_eq!(send(&mut h, C1, 1000, ACK), Some(ip(SORRY)));
    let nat = cfg(Some(1), None, true, false).replace("forward = \"dr\"", "forward = \"nat\"");
    let s = engine_harness::snapshot(&nat, None);
    assert!(s.nat_reals.contains(&ip(SORRY)));
    assert!(!s.nat_reals.contains(&ip(RA)));
    let svc = s.services.first().expect("service");
    assert_eq!(svc.reals().len(), 1);
    assert!(svc
        .dest_by_id(svc.sorry_server().expect("sorry").id)
        .is_none());
}
