//! The engine's side of the fast path (issue #15), sans-IO with time passed
//! in: when a connection's entry is installed and removed, how the fast
//! path's last-seen time keeps a connection (and its persistence template)
//! alive exactly as packets through the engine would, and how its counts
//! come back into the real server's counters.

mod engine_harness;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;

use engine_harness::wire_builder::{et_of, eth_in, tcp, udp, V4};
use engine_harness::{ip, Harness};
use xdpvs::service::model::{DestId, FwdMethod, Millis};
use xdpvs::shard::offload::{FastPathSeen, FlowAction, OffloadCmd};
use xdpvs::shard::restart::SavedConn;
use xdpvs::shard::sync::{SyncItem, SyncSettings};
use xdpvs::shard::tcp_state::TcpState;
use xdpvs::shard::verdict::Verdict;
use xdpvs::wire::flow::FlowKey;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;
const VIP: &str = "198.18.0.100";
const CLIENT: &str = "198.18.100.7";

fn config(fwd: &str, persistence: &str) -> String {
    format!(
        "[director]\ninterfaces = [\"eth0\"]\n\n[timeouts]\ntcp = 60\ntcp_fin = 10\nudp = 5\n\n\
         [[service]]\nname = \"web\"\nproto = \"tcp\"\nvip = \"{VIP}\"\nport = 80\nscheduler = \"rr\"\n{persistence}\n\
         [[service.real]]\naddr = \"198.18.3.11\"\nforward = \"{fwd}\"\n\
         [[service.real]]\naddr = \"198.18.3.12\"\nforward = \"{fwd}\"\n\n\
         [[service]]\nname = \"dns\"\nproto = \"udp\"\nvip = \"{VIP}\"\nport = 53\nscheduler = \"rr\"\n\
         [[service.real]]\naddr = \"198.18.3.11\"\nforward = \"{fwd}\"\n",
    )
}

fn seg(sport: u16, flags: u8) -> Vec<u8> {
    let (c, v) = (ip(CLIENT), ip(VIP));
    eth_in(
        &[],
        et_of(c),
        &V4::new(CLIENT, VIP, 6).build(&tcp(c, v, sport, 80, flags, &[], b"")),
    )
}

fn dgram(sport: u16) -> Vec<u8> {
    let (c, v) = (ip(CLIENT), ip(VIP));
    eth_in(
        &[],
        et_of(c),
        &V4::new(CLIENT, VIP, 17).build(&udp(c, v, sport, 53, b"q", false)),
    )
}

fn forwarded(h: &mut Harness, f: &[u8]) {
    let v = h.process(f).0;
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
}

fn cmds(h: &mut Harness) -> Vec<OffloadCmd> {
    let mut v = Vec::new();
    h.engine.take_offload(&mut v);
    v
}

fn engine(fwd: &str, persistence: &str) -> Harness {
    let mut h = Harness::new(&config(fwd, persistence));
    h.engine.set_offload(true);
    h
}

/// A fast path whose entries were last used at the times a test sets.
#[derive(Default)]
struct Seen(RefCell<HashMap<(IpAddr, u16), Millis>>);

impl Seen {
    fn at(&self, sport: u16, t: Millis) {
        self.0.borrow_mut().insert((ip(CLIENT), sport), t);
    }
}

impl FastPathSeen for Seen {
    fn last_seen(&self, key: &FlowKey) -> Option<Millis> {
        self.0.borrow().get(&(key.src, key.sport)).copied()
    }
}

fn advance(h: &mut Harness, ms: u64, seen: &Seen) {
    let end = h.now + ms;
    while h.now < end {
        h.now = (h.now + 100).min(end);
        h.engine.tick_seen(h.now, seen);
    }
}

#[test]
fn tcp_is_installed_once_established_and_removed_when_it_leaves() {
    let mut h = engine("dr", "");
    forwarded(&mut h, &seg(1000, SYN));
    assert!(cmds(&mut h).is_empty(), "not at the SYN");
    forwarded(&mut h, &seg(1000, ACK));
    let c = cmds(&mut h);
    assert!(
        matches!(c.as_slice(), [OffloadCmd::Install(e)] if e.action == FlowAction::Dr && e.key.sport == 1000 && !e.reply),
        "at ESTABLISHED: {c:?}"
    );
    forwarded(&mut h, &seg(1000, ACK));
    assert!(cmds(&mut h).is_empty(), "once");
    // The FIN takes it out of ESTABLISHED: the entry goes.
    forwarded(&mut h, &seg(1000, FIN | ACK));
    let c = cmds(&mut h);
    assert!(
        matches!(c.as_slice(), [OffloadCmd::Remove { key, reply: false, .. }] if key.sport == 1000),
        "{c:?}"
    );
    // A RST on another established connection: removed too.
    forwarded(&mut h, &seg(2000, SYN));
    forwarded(&mut h, &seg(2000, ACK));
    assert_eq!(cmds(&mut h).len(), 1);
    forwarded(&mut h, &seg(2000, RST));
    assert!(matches!(
        cmds(&mut h).as_slice(),
        [OffloadCmd::Remove { .. }]
    ));
}

#[test]
fn udp_is_installed_at_its_first_packet_and_removed_when_it_expires() {
    let mut h = engine("dr", "");
    forwarded(&mut h, &dgram(5000));
    assert!(matches!(cmds(&mut h).as_slice(), [OffloadCmd::Install(_)]));
    advance(&mut h, 6_000, &Seen::default());
    assert!(
        matches!(cmds(&mut h).as_slice(), [OffloadCmd::Remove { key, .. }] if key.sport == 5000),
        "expired: its entry goes"
    );
    assert_eq!(h.engine.conns().len(), 0);
}

fn tunnel_config(fwd: &str) -> String {
    config(fwd, "").replace(
        "interfaces = [\"eth0\"]",
        "interfaces = [\"eth0\"]\ntunnel_src4 = \"198.18.0.2\"\ngue_port = 6080",
    )
}

#[test]
fn tunnels_are_installed_as_dr_is_with_their_outer_header() {
    for fwd in ["ipip", "gue"] {
        let mut h = Harness::new(&tunnel_config(fwd));
        h.engine.set_offload(true);
        // UDP: at the first packet.
        forwarded(&mut h, &dgram(5000));
        let c = cmds(&mut h);
        let [OffloadCmd::Install(e)] = c.as_slice() else {
            panic!("{fwd}: {c:?}");
        };
        assert!(!e.reply && e.key.sport == 5000, "{fwd}: {e:?}");
        let (src, dst) = (ip("198.18.0.2"), ip("198.18.3.11"));
        match e.action {
            FlowAction::Ipip { src: s, dst: d } => {
                assert_eq!((fwd, s, d), ("ipip", src, dst));
            }
            FlowAction::Gue {
                src: s,
                dst: d,
                sport,
                dport,
            } => {
                assert_eq!((fwd, s, d, dport), ("gue", src, dst, 6080));
                // The port the engine's own GUE frames carry.
                let k = e.key;
                let p = xdpvs::shard::forward::hash_port(k.src, k.dst, 17, k.sport, k.dport);
                assert_eq!(sport, p);
            }
            other => panic!("{fwd}: {other:?}"),
        }
        // TCP: at ESTABLISHED, not at the SYN; removed by the FIN.
        forwarded(&mut h, &seg(1000, SYN));
        assert!(cmds(&mut h).is_empty(), "{fwd}: not at the SYN");
        forwarded(&mut h, &seg(1000, ACK));
        assert!(
            matches!(cmds(&mut h).as_slice(), [OffloadCmd::Install(e)] if e.key.sport == 1000),
            "{fwd}: at ESTABLISHED"
        );
        forwarded(&mut h, &seg(1000, FIN | ACK));
        assert!(
            matches!(cmds(&mut h).as_slice(), [OffloadCmd::Remove { key, reply: false, .. }] if key.sport == 1000),
            "{fwd}: the FIN takes it back"
        );
    }
}

#[test]
fn a_new_outer_header_takes_the_tunnel_entries_back() {
    let mut h = Harness::new(&tunnel_config("gue"));
    h.engine.set_offload(true);
    forwarded(&mut h, &dgram(5000));
    assert_eq!(cmds(&mut h).len(), 1);
    // Same config: nothing moves.
    h.reload(&tunnel_config("gue"));
    assert!(cmds(&mut h).is_empty());
    // Another GUE port: the entry goes, the next packet installs it anew.
    h.reload(&tunnel_config("gue").replace("gue_port = 6080", "gue_port = 6081"));
    assert!(matches!(
        cmds(&mut h).as_slice(),
        [OffloadCmd::Remove { key, .. }] if key.sport == 5000
    ));
    forwarded(&mut h, &dgram(5000));
    assert!(matches!(
        cmds(&mut h).as_slice(),
        [OffloadCmd::Install(e)] if matches!(e.action, FlowAction::Gue { dport: 6081, .. })
    ));
}

#[test]
fn the_switched_off_fast_path_installs_nothing() {
    for fwd in ["dr", "nat", "ipip", "gue"] {
        let mut h = Harness::new(&tunnel_config(fwd));
        forwarded(&mut h, &dgram(5000));
        assert!(
            cmds(&mut h).is_empty(),
            "{fwd}: off by default in the engine"
        );
    }
}

#[test]
fn the_fast_paths_last_packet_rearms_the_timer_as_the_engine_would() {
    let mut h = engine("dr", "");
    let seen = Seen::default();
    forwarded(&mut h, &dgram(5000));
    cmds(&mut h);
    // Packets only on the fast path, every 2 s, for 20 s (udp = 5 s).
    for _ in 0..10 {
        advance(&mut h, 2_000, &seen);
        seen.at(5000, h.now);
    }
    assert_eq!(h.engine.conns().len(), 1, "kept: the fast path saw it");
    assert!(cmds(&mut h).is_empty());
    // Silent: it expires one timeout after its last packet, not before.
    let last = h.now;
    advance(&mut h, 4_500, &seen);
    assert_eq!(
        h.engine.conns().len(),
        1,
        "{} ms after its last packet",
        h.now - last
    );
    advance(&mut h, 1_000, &seen);
    assert_eq!(
        h.engine.conns().len(),
        0,
        "expired 5 s after its last packet"
    );
    assert!(matches!(
        cmds(&mut h).as_slice(),
        [OffloadCmd::Remove { .. }]
    ));
}

#[test]
fn a_template_lives_while_its_offloaded_connection_does() {
    // Persistence 2 s, the TCP connection established for much longer,
    // active only on the fast path: IPVS keeps a template that still
    // controls a connection, so the client's next connection goes to the
    // same server.
    let mut h = engine("dr", "persistence = { timeout = 2 }");
    let seen = Seen::default();
    forwarded(&mut h, &seg(1000, SYN));
    forwarded(&mut h, &seg(1000, ACK));
    let server = match cmds(&mut h).as_slice() {
        [OffloadCmd::Install(e)] => e.hop.dst_mac,
        c => panic!("{c:?}"),
    };
    for _ in 0..40 {
        advance(&mut h, 2_000, &seen);
        seen.at(1000, h.now);
    }
    assert_eq!(h.engine.conns().len(), 1);
    assert_eq!(
        h.engine.templates().len(),
        1,
        "the template controls a live connection"
    );
    let (v, out) = h.process(&seg(1001, SYN));
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_eq!(out[..6], server, "the same server for the group");
}

#[test]
fn a_removed_real_server_takes_its_entries_back_at_the_reload() {
    let mut h = engine("nat", "");
    // Two connections, one per server (rr); NAT: the reply entry too.
    for sport in [1000, 1001] {
        forwarded(&mut h, &seg(sport, SYN));
        forwarded(&mut h, &seg(sport, ACK));
    }
    let installed = cmds(&mut h);
    assert_eq!(installed.len(), 2);
    let gone = match installed[1] {
        OffloadCmd::Install(e) => e.dest,
        c => panic!("{c:?}"),
    };
    let text = config("nat", "");
    let keep = if gone == DestId(2) {
        "198.18.3.12"
    } else {
        "198.18.3.11"
    };
    let cut = text.replace(
        &format!("[[service.real]]\naddr = \"{keep}\"\nforward = \"nat\"\n\n"),
        "",
    );
    assert_ne!(cut, text);
    h.reload(&cut);
    let c = cmds(&mut h);
    assert!(
        matches!(c.as_slice(), [OffloadCmd::Remove { dest, .. }] if *dest == gone),
        "only the removed server's entry: {c:?}"
    );
}

#[test]
fn live_entries_are_installs_less_refusals_and_removals() {
    let mut h = engine("dr", "");
    for sport in [5000, 5001, 5002] {
        forwarded(&mut h, &dgram(sport));
    }
    assert_eq!(cmds(&mut h).len(), 3);
    // The runtime: the cache refused one, and a removal found one entry.
    h.engine.offload_refused();
    h.engine.offload_removed();
    let s = h.engine.offload_stats();
    assert_eq!((s.installs, s.install_failed, s.removed), (3, 1, 1));
    assert_eq!(s.live(), 1);
}

#[test]
fn switching_it_off_takes_every_entry_back() {
    let mut h = engine("dr", "");
    for sport in [5000, 5001, 5002] {
        forwarded(&mut h, &dgram(sport));
    }
    assert_eq!(cmds(&mut h).len(), 3);
    h.engine.set_offload(false);
    let c = cmds(&mut h);
    assert_eq!(c.len(), 3);
    assert!(c.iter().all(|c| matches!(c, OffloadCmd::Remove { .. })));
    forwarded(&mut h, &dgram(5003));
    assert!(cmds(&mut h).is_empty());
}

fn sync_of(h: &mut Harness) -> Vec<SyncItem> {
    let mut v = Vec::new();
    h.engine.take_sync(&mut v);
    v
}

#[test]
fn a_connection_kept_alive_by_the_fast_path_is_sent_to_the_peers_again() {
    let mut h = engine("dr", "");
    h.engine.set_sync(SyncSettings {
        send: true,
        period: 50,
    });
    let seen = Seen::default();
    forwarded(&mut h, &seg(3000, SYN));
    forwarded(&mut h, &seg(3000, ACK));
    assert_eq!(cmds(&mut h).len(), 1, "offloaded");
    let first = sync_of(&mut h);
    assert!(
        first
            .iter()
            .any(|i| matches!(i, SyncItem::Conn { conn, .. } if conn.cport == 3000 && (59_000..=61_000).contains(&conn.left_ms))),
        "sent at ESTABLISHED: {first:?}"
    );
    // Only the fast path sees it now, every 10 s, for 3 minutes (tcp = 60 s):
    // the engine sees no packet, so only its re-arming can tell the peers.
    let mut resent = Vec::new();
    for _ in 0..18 {
        seen.at(3000, h.now);
        advance(&mut h, 10_000, &seen);
        for i in sync_of(&mut h) {
            if let SyncItem::Conn { conn, .. } = i {
                resent.push((h.now, conn));
            }
        }
    }
    assert_eq!(h.engine.conns().len(), 1, "alive on the engine's side");
    assert!(resent.len() >= 2, "re-sent as it was re-armed: {resent:?}");
    for (_, c) in &resent {
        assert_eq!((c.cport, c.state), (3000, TcpState::Established as u8));
        // What it has left is what its re-armed timer has: at most the
        // timeout, and more than the time until the next re-arm.
        assert!(c.left_ms > 40_000 && c.left_ms <= 61_000, "{c:?}");
    }
    // With sync off, nothing is queued.
    h.engine.set_sync(SyncSettings::default());
    seen.at(3000, h.now);
    advance(&mut h, 70_000, &seen);
    assert!(sync_of(&mut h).is_empty());
}

#[test]
fn a_peers_update_that_leaves_established_takes_the_entry_back() {
    let mut h = engine("dr", "");
    forwarded(&mut h, &seg(4000, SYN));
    forwarded(&mut h, &seg(4000, ACK));
    assert_eq!(cmds(&mut h).len(), 1, "offloaded");
    let mut one = None;
    h.engine.conns().for_each(|_, c| one = Some(*c));
    let c = one.expect("one connection");
    let saved = |state: TcpState, left_ms: u64| SyncItem::Conn {
        conn: SavedConn {
            proto: 6,
            caddr: c.caddr,
            cport: c.cport,
            vaddr: c.vaddr,
            vport: c.vport,
            raddr: c.raddr,
            rport: c.rport,
            state: state as u8,
            left_ms,
        },
        fwd: FwdMethod::Dr,
        fwmark: 0,
    };
    // The peer says it is still established: the entry stays.
    let now = h.now;
    h.engine
        .apply_sync(now, &saved(TcpState::Established, 60_000))
        .expect("applied");
    assert!(cmds(&mut h).is_empty(), "kept while established");
    // The client's FIN went through the other director.
    h.engine
        .apply_sync(now, &saved(TcpState::FinWait, 10_000))
        .expect("applied");
    let cm = cmds(&mut h);
    assert!(
        matches!(cm.as_slice(), [OffloadCmd::Remove { key, reply: false, .. }] if key.sport == 4000),
        "{cm:?}"
    );
    // Its next packet is the engine's again, and is not offloaded again.
    forwarded(&mut h, &seg(4000, ACK));
    assert!(cmds(&mut h).is_empty());
}
