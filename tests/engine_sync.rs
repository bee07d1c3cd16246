//! Connection sync in the engine (sans-IO, time passed in): what a shard
//! queues for its peers and when (IPVS `ip_vs_sync_conn` rules, a new
//! template at once), and what a peer's shard does with it: the same
//! connection to the same real server, the same template, the same counts
//! for `wlc`; entries it cannot place are counted by reason.

mod engine_harness;

use std::net::IpAddr;

use engine_harness::wire_builder::*;
use engine_harness::{ip, next_hop_of, Harness, IFINDEX};
use xdpvs::service::model::Proto;
use xdpvs::shard::sync::{IgnoreReason, SyncItem, SyncSettings};
use xdpvs::shard::template::TemplateKey;
use xdpvs::shard::verdict::{DropReason, Verdict};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const VIP: &str = "198.18.0.10";
const C1: &str = "198.18.10.1";
const FORWARD: Verdict = Verdict::Forward { ifindex: IFINDEX };

/// wlc over three reals; `persistent`: /24 templates of 300 s; `fwmark`:
/// the service is fwmark 1 covering ports 80 and 443.
fn cfg(persistent: bool, fwmark: bool) -> String {
    let mut s = String::from("[director]\ninterfaces = [\"eth0\"]\n");
    if fwmark {
        s.push_str(&format!(
            "[[fwmark]]\nmark = 1\nrules = [ {{ vip = \"{VIP}\", proto = \"tcp\", ports = \"80,443\" }} ]\n"
        ));
        s.push_str("[[service]]\nname = \"web\"\nfwmark = 1\nscheduler = \"wlc\"\n");
    } else {
        s.push_str(&format!(
            "[[service]]\nname = \"web\"\nproto = \"tcp\"\nvip = \"{VIP}\"\nport = 80\nscheduler = \"wlc\"\n"
        ));
    }
    if persistent {
        s.push_str("persistence = { timeout = 300, netmask = \"255.255.255.0\" }\n");
    }
    for a in ["198.18.1.1", "198.18.1.2", "198.18.1.3"] {
        s.push_str(&format!("[[service.real]]\naddr = \"{a}\"\n"));
    }
    if !fwmark {
        s.push_str(&format!(
            "[[service]]\nname = \"dns\"\nproto = \"udp\"\nvip = \"{VIP}\"\nport = 53\nscheduler = \"rr\"\n[[service.real]]\naddr = \"198.18.1.1\"\n[[service.real]]\naddr = \"198.18.1.2\"\n"
        ));
    }
    s
}

fn tcp_pkt(src: &str, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let seg = tcp(ip(src), ip(VIP), sport, dport, flags, &[], b"hello");
    eth_in(&[], et_of(ip(src)), &V4::new(src, VIP, 6).build(&seg))
}

fn udp_pkt(src: &str, sport: u16) -> Vec<u8> {
    let dgram = udp(ip(src), ip(VIP), sport, 53, b"q", false);
    eth_in(&[], et_of(ip(src)), &V4::new(src, VIP, 17).build(&dgram))
}

fn send(h: &mut Harness, frame: &[u8]) -> Option<IpAddr> {
    let (v, out) = h.process(frame);
    match v {
        FORWARD => Some(next_hop_of(&out)),
        Verdict::Drop(_) => None,
        other => panic!("unexpected verdict {other:?}"),
    }
}

fn sender(text: &str) -> Harness {
    let mut h = Harness::new(text);
    h.engine.set_sync(SyncSettings {
        send: true,
        period: 50,
    });
    h
}

fn taken(h: &mut Harness) -> Vec<SyncItem> {
    let mut v = Vec::new();
    h.engine.take_sync(&mut v);
    v
}

fn kinds(items: &[SyncItem]) -> Vec<&'static str> {
    items
        .iter()
        .map(|i| match i {
            SyncItem::Template { .. } => "tpl",
            SyncItem::Conn { conn, .. } if conn.proto == 17 => "udp",
            SyncItem::Conn { conn, .. } => match conn.state {
                1 => "ES",
                4 => "FIN_WAIT",
                5 => "TIME_WAIT",
                6 => "CLOSE",
                7 => "CLOSE_WAIT",
                _ => "other",
            },
        })
        .collect()
}

/// What a shard queues as a TCP connection goes through its states, and
/// when: the new template at the SYN (before anything else), the
/// connection when it is established (with its template first), and at
/// each later state IPVS syncs.
#[test]
fn tcp_connection_and_new_template_are_queued_as_ipvs_sends_them() {
    let mut a = sender(&cfg(true, false));
    let r = send(&mut a, &tcp_pkt(C1, 40000, 80, SYN)).expect("forwarded");
    assert_eq!(kinds(&taken(&mut a)), ["tpl"], "a new template at once");
    send(&mut a, &tcp_pkt(C1, 40000, 80, ACK));
    let items = taken(&mut a);
    assert_eq!(kinds(&items), ["tpl", "ES"]);
    match &items[1] {
        SyncItem::Conn { conn, fwmark, .. } => {
            assert_eq!(
                (conn.caddr, conn.cport, conn.vaddr, conn.vport, conn.raddr, conn.rport),
                (ip(C1), 40000, ip(VIP), 80, r, 80)
            );
            assert_eq!(*fwmark, 0);
            // The established timeout (expiry rounds up to the 64 ms tick).
            assert!(
                (900_000..900_064).contains(&conn.left_ms),
                "{}",
                conn.left_ms
            );
        }
        other => panic!("{other:?}"),
    }
    match &items[0] {
        SyncItem::Template { tpl, .. } => {
            assert_eq!(tpl.client, ip("198.18.10.0"), "client & netmask");
            assert_eq!((tpl.vip, tpl.vport, tpl.raddr), (Some(ip(VIP)), 80, r));
            assert!((300_000..300_064).contains(&tpl.left_ms), "{}", tpl.left_ms);
        }
        other => panic!("{other:?}"),
    }
    // More data: nothing until the period comes round.
    for _ in 0..10 {
        send(&mut a, &tcp_pkt(C1, 40000, 80, ACK));
    }
    assert!(taken(&mut a).is_empty());
    send(&mut a, &tcp_pkt(C1, 40000, 80, FIN | ACK));
    assert_eq!(kinds(&taken(&mut a)), ["tpl", "FIN_WAIT"]);
    // A second connection of the group reuses the template: no template
    // of its own at the SYN.
    send(&mut a, &tcp_pkt(C1, 40001, 80, SYN));
    assert!(taken(&mut a).is_empty(), "an existing template is not new");
}

/// Established traffic re-sends its connection once per `period` packets
/// of the shard; period 0 sends state changes only; sending off queues
/// nothing at all.
#[test]
fn periodic_updates_follow_sync_period() {
    for (period, packets, want) in [(50, 100, 2), (10, 100, 10), (0, 100, 0)] {
        let mut a = Harness::new(&cfg(false, false));
        a.engine.set_sync(SyncSettings { send: true, period });
        send(&mut a, &tcp_pkt(C1, 40000, 80, SYN));
        send(&mut a, &tcp_pkt(C1, 40000, 80, ACK));
        assert_eq!(kinds(&taken(&mut a)), ["ES"]);
        for _ in 0..packets {
            send(&mut a, &tcp_pkt(C1, 40000, 80, ACK));
        }
        assert_eq!(taken(&mut a).len(), want, "period {period}");
    }
    let mut off = Harness::new(&cfg(true, false));
    send(&mut off, &tcp_pkt(C1, 40000, 80, SYN));
    send(&mut off, &tcp_pkt(C1, 40000, 80, ACK));
    assert!(taken(&mut off).is_empty());
    assert_eq!(off.engine.stats.sync.queued, 0);
}

/// A UDP connection goes at its first packet.
#[test]
fn udp_connection_is_queued_at_its_first_packet() {
    let mut a = sender(&cfg(false, false));
    send(&mut a, &udp_pkt(C1, 5353)).expect("forwarded");
    let items = taken(&mut a);
    assert_eq!(kinds(&items), ["udp"]);
    send(&mut a, &udp_pkt(C1, 5353));
    assert!(taken(&mut a).is_empty());
}

/// The failover: director B, given what A queued, forwards the client's
/// next mid-flow packet to the same real server (without it, B drops it:
/// not a SYN), finds the client group's template for a new connection,
/// and counts the connection as active for wlc.
#[test]
fn a_peer_applies_what_the_owner_queued() {
    for fwmark in [false, true] {
        let text = cfg(true, fwmark);
        let mut a = sender(&text);
        let mut b = Harness::new(&text);
        let r = send(&mut a, &tcp_pkt(C1, 40000, 80, SYN)).expect("forwarded");
        send(&mut a, &tcp_pkt(C1, 40000, 80, ACK));
        let items = taken(&mut a);
        // Without sync, B knows nothing of the flow.
        let mut cold = Harness::new(&text);
        let (v, _) = cold.process(&tcp_pkt(C1, 40000, 80, ACK));
        assert_eq!(v, Verdict::Drop(DropReason::NotSyn));
        for i in &items {
            b.engine.apply_sync(b.now, i).expect("applied");
        }
        // The template at the SYN, again with the connection, then it.
        assert_eq!(kinds(&items), ["tpl", "tpl", "ES"]);
        assert_eq!(b.engine.stats.sync.applied_conns, 1);
        assert_eq!(b.engine.stats.sync.applied_templates, 2);
        assert_eq!(b.engine.templates().len(), 1);
        if fwmark {
            match &items[0] {
                SyncItem::Template { tpl, .. } => assert_eq!(tpl.fwmark, Some(1)),
                other => panic!("{other:?}"),
            }
            let key = TemplateKey::Fwmark {
                client_masked: ip("198.18.10.0"),
                mark: 1,
            };
            assert!(b.engine.templates().lookup(&key).is_some());
        }
        assert_eq!(
            send(&mut b, &tcp_pkt(C1, 40000, 80, ACK)),
            Some(r),
            "mid-flow"
        );
        // A new connection of another client of the /24, to another port
        // of the mark when fwmark: the template's server.
        let port = if fwmark { 443 } else { 80 };
        assert_eq!(
            send(&mut b, &tcp_pkt("198.18.10.77", 41000, port, SYN)),
            Some(r)
        );
        // wlc on B sees the synced connection as active.
        let active: u32 = b.engine.dest_counters().values().map(|c| c.active).sum();
        assert!(active >= 1, "active {active}");
    }
}

/// Without persistence, wlc on B picks the server with fewest active
/// connections: the synced ones count, so B does not pile new
/// connections on a server A already loaded.
#[test]
fn synced_connections_steer_wlc_on_the_peer() {
    let text = cfg(false, false);
    let mut a = sender(&text);
    let mut b = Harness::new(&text);
    let mut used = Vec::new();
    for port in 0..2u16 {
        used.push(send(&mut a, &tcp_pkt(C1, 40000 + port, 80, SYN)).unwrap());
        send(&mut a, &tcp_pkt(C1, 40000 + port, 80, ACK));
    }
    for i in taken(&mut a) {
        b.engine.apply_sync(b.now, &i).unwrap();
    }
    let r = send(&mut b, &tcp_pkt("198.18.11.1", 50000, 80, SYN)).unwrap();
    assert!(!used.contains(&r), "B chose {r}, A had {used:?}");
}

/// A synced connection lives as long as it had left, then expires on the
/// peer as it would have on the owner; a later update re-arms it.
#[test]
fn a_synced_connection_keeps_the_owners_timer() {
    let text = cfg(false, false);
    let mut a = sender(&text);
    let mut b = Harness::new(&text);
    send(&mut a, &tcp_pkt(C1, 40000, 80, SYN));
    send(&mut a, &tcp_pkt(C1, 40000, 80, ACK));
    send(&mut a, &tcp_pkt(C1, 40000, 80, FIN | ACK));
    let items = taken(&mut a);
    let fin = items.last().unwrap().clone();
    match &fin {
        SyncItem::Conn { conn, .. } => {
            assert!((120_000..120_064).contains(&conn.left_ms), "tcp_fin")
        }
        other => panic!("{other:?}"),
    }
    b.engine.apply_sync(b.now, &fin).unwrap();
    b.advance(119_900);
    assert_eq!(b.engine.conns().len(), 1);
    b.advance(300);
    assert_eq!(b.engine.conns().len(), 0, "expired with the owner's timer");
}

/// An update for a connection the peer has on another real server moves
/// it there (the owner's decision is the newer one), counts included.
#[test]
fn an_update_moves_a_connection_to_the_owners_server() {
    let text = cfg(false, false);
    let mut b = Harness::new(&text);
    let mut a = sender(&text);
    send(&mut a, &tcp_pkt(C1, 40000, 80, SYN));
    send(&mut a, &tcp_pkt(C1, 40000, 80, ACK));
    let mut item = taken(&mut a).pop().unwrap();
    b.engine.apply_sync(b.now, &item).unwrap();
    let SyncItem::Conn { conn, .. } = &mut item else {
        panic!()
    };
    let other = ["198.18.1.1", "198.18.1.2", "198.18.1.3"]
        .into_iter()
        .map(ip)
        .find(|&x| x != conn.raddr)
        .unwrap();
    conn.raddr = other;
    b.engine.apply_sync(b.now, &item).unwrap();
    assert_eq!(b.engine.conns().len(), 1);
    assert_eq!(send(&mut b, &tcp_pkt(C1, 40000, 80, ACK)), Some(other));
    let active: u32 = b.engine.dest_counters().values().map(|c| c.active).sum();
    assert_eq!(active, 1, "counted once");
}

/// Entries this director cannot place change nothing and are counted by
/// reason.
#[test]
fn entries_that_do_not_match_the_config_are_counted_and_ignored() {
    let text = cfg(true, false);
    let mut a = sender(&text);
    send(&mut a, &tcp_pkt(C1, 40000, 80, SYN));
    send(&mut a, &tcp_pkt(C1, 40000, 80, ACK));
    let items = taken(&mut a);
    let mut b = Harness::new(&text);
    type Change = Box<dyn Fn(&mut SyncItem)>;
    let cases: Vec<(Change, IgnoreReason)> = vec![
        (
            Box::new(|i| match i {
                SyncItem::Conn { conn, .. } => conn.vaddr = ip("198.18.0.99"),
                SyncItem::Template { tpl, .. } => tpl.vip = Some(ip("198.18.0.99")),
            }),
            IgnoreReason::NoService,
        ),
        (
            Box::new(|i| match i {
                SyncItem::Conn { conn, .. } => conn.raddr = ip("198.18.1.200"),
                SyncItem::Template { tpl, .. } => tpl.raddr = ip("198.18.1.200"),
            }),
            IgnoreReason::NoDest,
        ),
        (
            Box::new(|i| match i {
                SyncItem::Conn { conn, .. } => conn.left_ms = 0,
                SyncItem::Template { tpl, .. } => tpl.left_ms = 0,
            }),
            IgnoreReason::Expired,
        ),
        (
            Box::new(|i| match i {
                SyncItem::Conn { conn, .. } => conn.proto = 132,
                SyncItem::Template { tpl, .. } => {
                    tpl.proto = 132;
                    tpl.fwmark = None
                }
            }),
            IgnoreReason::Unsupported,
        ),
    ];
    for (change, reason) in cases {
        for item in &items {
            let mut bad = item.clone();
            change(&mut bad);
            assert_eq!(b.engine.apply_sync(b.now, &bad), Err(reason), "{bad:?}");
        }
        assert_eq!(
            b.engine.stats.sync.ignored[reason as usize],
            items.len() as u64,
            "{reason:?} counted"
        );
    }
    assert_eq!(b.engine.conns().len() + b.engine.templates().len(), 0);
    assert_eq!(Proto::Tcp.number(), 6);
}

/// A full resync exports every template and connection; a fresh peer that
/// applies the export has the same tables.
#[test]
fn export_for_a_resync_rebuilds_the_same_tables() {
    let text = cfg(true, false);
    let mut a = sender(&text);
    for (i, c) in ["198.18.10.1", "198.18.11.1", "198.18.12.1"]
        .iter()
        .enumerate()
    {
        send(&mut a, &tcp_pkt(c, 40000 + i as u16, 80, SYN));
        send(&mut a, &tcp_pkt(c, 40000 + i as u16, 80, ACK));
    }
    send(&mut a, &udp_pkt(C1, 5353));
    let all = a.engine.export_sync(a.now);
    assert_eq!(all.len(), 3 + 4);
    assert!(
        matches!(all[0], SyncItem::Template { .. }),
        "templates first"
    );
    let mut b = Harness::new(&text);
    for i in &all {
        b.engine.apply_sync(b.now, i).unwrap();
    }
    let mut ea = a.engine.export(a.now);
    let mut eb = b.engine.export(b.now);
    for e in [&mut ea, &mut eb] {
        e.conns.sort_by_key(|c| (c.caddr, c.cport));
        e.templates.sort_by_key(|t| t.client);
    }
    assert_eq!(ea, eb);
}

/// mh on a persistent service: the scheduler sees the client group, so a
/// director that never saw a group (no sync) gives every client of it the
/// server another director chose; with `sloppy_tcp` it also takes over
/// the group's open connections mid-flow (without it: dropped, not a SYN).
#[test]
fn sloppy_tcp_and_mh_keep_groups_on_their_server_without_sync() {
    let text = |sloppy: bool| {
        cfg(true, false)
            .replace("scheduler = \"wlc\"", "scheduler = \"mh\"")
            .replace(
                "interfaces = [\"eth0\"]\n",
                &format!("interfaces = [\"eth0\"]\nsloppy_tcp = {sloppy}\n"),
            )
    };
    for group in 10..20u8 {
        let first = format!("198.18.{group}.1");
        let mut a = Harness::new(&text(false));
        let r = send(&mut a, &tcp_pkt(&first, 40000, 80, SYN)).unwrap();
        send(&mut a, &tcp_pkt(&first, 40000, 80, ACK));
        let mut b = Harness::new(&text(true));
        assert_eq!(
            send(&mut b, &tcp_pkt(&first, 40000, 80, ACK)),
            Some(r),
            "mid-flow"
        );
        let listed = b.engine.export(b.now);
        assert_eq!(listed.conns[0].state, 1, "taken over as ESTABLISHED");
        for host in 2..18u8 {
            let c = format!("198.18.{group}.{host}");
            let mut fresh = Harness::new(&text(false));
            assert_eq!(
                send(&mut fresh, &tcp_pkt(&c, 40000, 80, SYN)),
                Some(r),
                "{c}: the group's server"
            );
        }
        let mut strict = Harness::new(&text(false));
        let (v, _) = strict.process(&tcp_pkt(&first, 40000, 80, ACK));
        assert_eq!(v, Verdict::Drop(DropReason::NotSyn));
        // A RST never opens a connection, sloppy or not.
        let (v, _) = b.process(&tcp_pkt(&first, 40999, 80, 0x04));
        assert_eq!(v, Verdict::Drop(DropReason::NotSyn));
    }
}
