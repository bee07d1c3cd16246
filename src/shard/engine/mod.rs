//! The shard engine: everything the director decides about one packet.
//!
//! `Engine::process(now, frame, neighbors) -> Verdict` is sans-IO: it reads no
//! clock and touches no socket, so every LVS rule is unit-tested without the
//! kernel. One engine per core owns a shard of the connection and persistence
//! tables; the owner of a packet is a hash of its client address masked by the
//! snapshot's shard prefix, so both directions of a flow and every flow of a
//! persistence group meet in one engine.
//!
//! Per-packet cost: every map read per packet uses a fast hasher (the
//! connection table its own, the snapshot and the per real server state
//! `hashbrown`'s foldhash); the snapshot is borrowed, not reference-counted,
//! per packet; an established packet does one connection lookup, one
//! classification, one lookup of its real server's state (still in the
//! snapshot? counters) and one next-hop lookup.
//!
//! Here: the [`Engine`] (its tables, a snapshot switch, `process` and `tick`
//! as the runtime calls them) and the owner shard. Its jobs, one file each:
//! - `process.rs`: the packet path (parse, fast path, classify, inbound,
//!   outbound, ICMP errors, transmit);
//! - `schedule.rs`: a new connection (persistence template or scheduler);
//! - `accounting.rs`: per real server counters, overload, scheduler view;
//! - `prefetch.rs`: the RX batch pre-pass (`warm_batch`);
//! - `restore.rs`: export and restore across a restart;
//! - `sync.rs`: what a shard sends to its peer directors, and applies from them.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use crate::service::model::{mask_addr, DestId, FwdMethod, Millis, ServiceKey};
use crate::service::sched::{DestStat, SchedState};
use crate::service::snapshot::{Dest, Snapshot};
use crate::shard::conn::{Conn, ConnTable};
use crate::shard::nexthop::Neighbors;
use crate::shard::template::TemplateTable;
use crate::shard::verdict::{DropReason, Frame, Verdict};
use crate::wire::L3Kind;

mod accounting;
mod offload;
mod prefetch;
mod process;
mod restore;
mod schedule;
mod sync;

pub use accounting::DestCounters;
use accounting::{release_conn, sync_slot, update_overload, DestMap, DestView};
pub use sync::OUTBOX_CAPACITY;
/// Sizes of one shard's tables.
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    pub shard: u16,
    pub shards: u16,
    pub conn_capacity: usize,
    pub template_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shard: 0,
            shards: 1,
            conn_capacity: 1 << 20,
            template_capacity: 1 << 18,
        }
    }
}

/// Malformed frames by wire error, a counter per reason (no hashing or
/// allocation on the path of a malformed frame).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MalformedCounts([u64; crate::wire::WireError::ALL.len()]);

impl MalformedCounts {
    #[inline]
    pub fn count(&mut self, e: &crate::wire::WireError) {
        if let Some(n) = self.0.get_mut(e.index()) {
            *n += 1;
        }
    }

    /// The count for `reason` ([`crate::wire::WireError::reason`]), if any
    /// frame had it.
    pub fn get(&self, reason: &str) -> Option<&u64> {
        crate::wire::WireError::ALL
            .iter()
            .zip(self.0.iter())
            .find(|(e, n)| e.reason() == reason && **n > 0)
            .map(|(_, n)| n)
    }

    /// `(reason, count)` for every reason seen, in [`crate::wire::WireError::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        crate::wire::WireError::ALL
            .iter()
            .zip(self.0.iter())
            .filter(|(_, n)| **n > 0)
            .map(|(e, n)| (e.reason(), *n))
    }
}

/// Counters of the engine itself.
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    pub packets: u64,
    pub dropped: [u64; DropReason::ALL.len()],
    /// Malformed frames by wire error reason.
    pub malformed: MalformedCounts,
    pub passed: u64,
    pub handoff: u64,
    pub new_conns: u64,
    pub expired_conns: u64,
    pub evicted_conns: u64,
    pub expired_templates: u64,
    pub template_hits: u64,
    pub neighbor_misses: u64,
    /// Connection sync (sent and received entries).
    pub sync: crate::shard::sync::SyncCounters,
    /// Flow offload (filled in by [`Engine::stats_now`]).
    pub offload: crate::shard::offload::OffloadStats,
}

/// Per service, per shard state aligned with one snapshot.
#[derive(Debug, Default)]
struct SvcState {
    sched: SchedState,
    stat: Vec<DestStat>,
}

/// Frames that grow by encapsulation get at most this much.
pub const MAX_ENCAP: usize = 40 + 8;

pub struct Engine {
    cfg: EngineConfig,
    snap: Arc<Snapshot>,
    svc: Vec<SvcState>,
    dests: DestMap,
    /// Changes whenever ids may have been added to or removed from `dests`.
    dest_keys: u64,
    /// `dests` as [`Engine::dest_counters`] returns it: built on the first
    /// call after a change, dropped (into `spare_view`) by the next change.
    dest_view: OnceLock<DestView>,
    /// The last view, reused (values refreshed in place) while the set of
    /// ids is unchanged.
    spare_view: Mutex<Option<DestView>>,
    conns: ConnTable,
    tpls: TemplateTable,
    pub stats: EngineStats,
    /// Next hops that were missing; the runtime asks the kernel to resolve them.
    pub want_neighbors: Vec<IpAddr>,
    last_expire: Millis,
    sync: sync::Outbox,
    off: crate::shard::offload::Offload,
}

/// The next hop towards `addr` when known (`false`), else the pending hop
/// whose MAC the kernel is resolving (`true`: rewrite now, hold the frame).
#[inline(always)]
pub(super) fn hop_or_pending(
    hop: Option<crate::shard::nexthop::NextHop>,
    addr: IpAddr,
    nh: &dyn Neighbors,
) -> Option<(crate::shard::nexthop::NextHop, bool)> {
    match hop {
        Some(h) => Some((h, false)),
        None => nh.pending(addr).map(|h| (h, true)),
    }
}

/// Where a connection's inbound packets go.
#[derive(Clone, Copy, Debug)]
struct Target {
    dest: DestId,
    raddr: IpAddr,
    rport: u16,
    fwd: FwdMethod,
}
impl Target {
    fn of(c: &Conn) -> Target {
        Target {
            dest: c.dest,
            raddr: c.raddr,
            rport: c.rport,
            fwd: c.fwd,
        }
    }
}
/// What one packet works with: the snapshot borrowed (no reference count
/// per packet) next to the mutable state.
struct Ctx<'a> {
    cfg: &'a EngineConfig,
    snap: &'a Snapshot,
    svc: &'a mut [SvcState],
    dests: &'a mut DestMap,
    dest_keys: &'a mut u64,
    conns: &'a mut ConnTable,
    tpls: &'a mut TemplateTable,
    stats: &'a mut EngineStats,
    want_neighbors: &'a mut Vec<IpAddr>,
    sync: &'a mut sync::Outbox,
    off: &'a mut crate::shard::offload::Offload,
}

/// The owner shard of a (masked) client address: a fixed hash, the same in
/// every shard and every process.
pub fn owner_shard(client: IpAddr, snap: &Snapshot, shards: u16) -> u16 {
    if shards <= 1 {
        return 0;
    }
    let masked = mask_addr(client, snap.shard_prefix4, snap.shard_prefix6);
    let h = match masked {
        IpAddr::V4(a) => (u32::from(a) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            ((v as u64) ^ ((v >> 64) as u64).rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        }
    };
    ((h >> 32) % shards as u64) as u16
}

impl Engine {
    pub fn new(cfg: EngineConfig, snap: Arc<Snapshot>) -> Engine {
        let mut conns = ConnTable::new(cfg.conn_capacity);
        conns.set_timeouts(snap.timeouts);
        let mut e = Engine {
            cfg,
            snap: Arc::new(Snapshot::empty()),
            svc: Vec::new(),
            dests: DestMap::new(),
            dest_keys: 0,
            dest_view: OnceLock::new(),
            spare_view: Mutex::new(None),
            conns,
            tpls: TemplateTable::new(cfg.template_capacity),
            stats: EngineStats::default(),
            want_neighbors: Vec::new(),
            last_expire: 0,
            sync: sync::Outbox::default(),
            off: crate::shard::offload::Offload::default(),
        };
        e.set_snapshot(snap);
        e
    }

    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snap
    }

    /// The engine's counters, the offload's included.
    pub fn stats_now(&self) -> EngineStats {
        let mut s = self.stats.clone();
        s.offload = self.off.stats;
        s
    }

    pub fn conns(&self) -> &ConnTable {
        &self.conns
    }

    pub fn templates(&self) -> &TemplateTable {
        &self.tpls
    }

    /// The tables' large reservations (address ranges), which the data
    /// plane advises to use huge pages before the first packet.
    pub fn memory_regions(&self) -> Vec<std::ops::Range<usize>> {
        let mut r = self.conns.memory_regions();
        r.extend(self.tpls.memory_regions());
        r
    }

    fn ctx(&mut self) -> Ctx<'_> {
        Ctx {
            cfg: &self.cfg,
            snap: &self.snap,
            svc: &mut self.svc,
            dests: &mut self.dests,
            dest_keys: &mut self.dest_keys,
            conns: &mut self.conns,
            tpls: &mut self.tpls,
            stats: &mut self.stats,
            want_neighbors: &mut self.want_neighbors,
            sync: &mut self.sync,
            off: &mut self.off,
        }
    }

    /// Switch to a new snapshot (called once per batch when the published
    /// one changed). Connection counts carry over by `DestId`.
    pub fn set_snapshot(&mut self, snap: Arc<Snapshot>) {
        if Arc::ptr_eq(&snap, &self.snap) {
            return;
        }
        self.stale_view();
        self.dest_keys = self.dest_keys.wrapping_add(1);
        // A reload usually changes few services: a service at the same
        // position with the same real servers (ids, weights, thresholds, in
        // order) keeps its per-shard state as it is, so that a shard pays
        // for what changed, not for the size of the config.
        let old_services = &self.snap.services;
        let mut old_svc: Vec<Option<SvcState>> = std::mem::take(&mut self.svc)
            .into_iter()
            .map(Some)
            .collect();
        // Old services by key (the first one of a key, as a scan would
        // find), built only when some service moved.
        let mut old_pos: Option<hashbrown::HashMap<ServiceKey, usize>> = None;
        let mut same_layout = old_services.len() == snap.services.len();
        let mut svc = Vec::with_capacity(snap.services.len());
        for (i, s) in snap.services.iter().enumerate() {
            let j = if old_services.get(i).is_some_and(|o| o.key == s.key) {
                Some(i)
            } else {
                let pos = old_pos.get_or_insert_with(|| {
                    let mut m = hashbrown::HashMap::with_capacity(old_services.len());
                    for (j, o) in old_services.iter().enumerate() {
                        m.entry(o.key).or_insert(j);
                    }
                    m
                });
                pos.get(&s.key).copied()
            };
            let same_dests = j
                .and_then(|j| old_services.get(j))
                .is_some_and(|o| same_dest_layout(&o.dests, &s.dests));
            let same_dests = same_dests
                && j.and_then(|j| old_services.get(j))
                    .is_some_and(|o| o.sorry == s.sorry);
            same_layout &= j == Some(i) && same_dests;
            if same_dests {
                if let Some(st) = j.and_then(|j| old_svc.get_mut(j)).and_then(Option::take) {
                    svc.push(st);
                    continue;
                }
            }
            let old = j.and_then(|j| old_svc.get(j)).and_then(Option::as_ref);
            let sched = match old {
                Some(o) => o.sched.clone(),
                None => {
                    let mut st = SchedState::new(
                        0x9E37_79B9_7F4A_7C15 ^ ((self.cfg.shard as u64) << 48) ^ i as u64,
                    );
                    // Shards start their round robin at different servers, so
                    // the first client groups of each shard do not all land
                    // on the first server.
                    if self.cfg.shard > 0 && !s.reals().is_empty() {
                        st.last = Some((self.cfg.shard as usize - 1) % s.reals().len());
                    }
                    st
                }
            };
            // A server this shard has no state for counts zero; its slot is
            // made by its first connection (`slot_of`), so a reload that
            // adds many servers costs the shard no map insertions.
            // The scheduler's view: the real servers, not the sorry server.
            let stat = s
                .reals()
                .iter()
                .map(|d| {
                    let c = match self.dests.get_mut(&d.id) {
                        Some(slot) => {
                            update_overload(&mut slot.c, d);
                            slot.c
                        }
                        None => DestCounters::default(),
                    };
                    DestStat {
                        weight: d.weight,
                        active: c.active,
                        inactive: c.inactive,
                        overloaded: c.overloaded,
                    }
                })
                .collect();
            svc.push(SvcState { sched, stat });
        }
        // Where each server is in the new snapshot; forget counters of
        // servers that are gone and have no live state. Nothing moved when
        // every service kept its position and its servers.
        let mut gone: Vec<DestId> = Vec::new();
        if !same_layout {
            self.dests.retain(|id, d| {
                let was = d.at.is_some();
                d.at = snap.dest_index.get(id).copied();
                if was && d.at.is_none() {
                    gone.push(*id);
                }
                d.at.is_some() || d.c.active + d.c.inactive + d.c.persist > 0
            });
        }
        // A removed real server's offloaded connections go back through the
        // engine, which drops or expires their packets (expire_nodest_conn).
        if !gone.is_empty() {
            self.unload_where(|c| gone.contains(&c.dest));
        }
        // Offloaded tunnel entries carry the outer source and GUE port:
        // when those change, the connections go back through the engine
        // (which installs them again, with the new outer header).
        if (
            self.snap.tunnel_src4,
            self.snap.tunnel_src6,
            self.snap.gue_port,
        ) != (snap.tunnel_src4, snap.tunnel_src6, snap.gue_port)
        {
            self.unload_where(|c| matches!(c.fwd, FwdMethod::Ipip | FwdMethod::Gue));
        }
        self.conns.set_timeouts(snap.timeouts);
        self.svc = svc;
        self.snap = snap;
    }

    /// Decide about one frame. `now` is the caller's monotonic clock in ms.
    pub fn process(&mut self, now: Millis, frame: &mut Frame<'_>, nh: &dyn Neighbors) -> Verdict {
        self.stale_view();
        self.ctx().process(now, frame, nh)
    }

    /// Expire connections and templates whose time has come (bounded work).
    pub fn tick(&mut self, now: Millis) {
        self.tick_with(now, &mut |_: &Conn| None);
    }

    /// [`Engine::tick`]; `seen` may keep a connection past its timer (see
    /// [`crate::shard::conn::ConnTable::expire_seen`]).
    fn tick_with(&mut self, now: Millis, seen: &mut dyn FnMut(&Conn) -> Option<Millis>) {
        if now < self.last_expire + 50 && now >= self.last_expire {
            return;
        }
        self.stale_view();
        self.last_expire = now;
        let dests = &mut self.dests;
        let tpls = &mut self.tpls;
        let stats = &mut self.stats;
        let (snap, svc) = (&self.snap, &mut self.svc);
        // Each expired connection updates its server's counts and the
        // scheduler's view of them at once: the cost follows the number
        // expired, not the number of real servers.
        let off = &mut self.off;
        self.conns.expire_seen(now, 65_536, seen, |c| {
            stats.expired_conns += 1;
            release_conn(dests, tpls, off, c);
            if let Some(d) = dests.get_mut(&c.dest) {
                sync_slot(snap, svc, d);
            }
        });
        self.tpls.expire(now, 65_536, |t| {
            stats.expired_templates += 1;
            if let Some(d) = dests.get_mut(&t.dest) {
                d.c.persist = d.c.persist.saturating_sub(1);
            }
        });
    }
}

/// The same real servers in the same order, with the same weights and
/// thresholds: a service whose per-shard state carries over unchanged.
fn same_dest_layout(old: &[Dest], new: &[Dest]) -> bool {
    old.len() == new.len()
        && old.iter().zip(new).all(|(a, b)| {
            a.id == b.id
                && a.weight == b.weight
                && a.u_threshold == b.u_threshold
                && a.l_threshold == b.l_threshold
        })
}
#[allow(dead_code)]
fn _kinds(_: L3Kind) {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{build_snapshot, Config};
    use crate::service::model::{FlowKey, Proto};
    use crate::shard::nexthop::{NextHop, StaticNeighbors};
    use crate::shard::tcp_state::TcpState;

    const CLIENT: [u8; 4] = [198, 18, 7, 7];

    fn snap(text: &str, prev: Option<&Snapshot>) -> Arc<Snapshot> {
        let cfg = Config::parse(text, "t.toml").unwrap();
        Arc::new(build_snapshot(&cfg, prev).unwrap())
    }

    fn nb() -> StaticNeighbors {
        StaticNeighbors {
            entries: Vec::new(),
            default: Some(NextHop {
                ifindex: 3,
                src_mac: [2, 0, 0, 0, 0, 1],
                dst_mac: [2, 0, 0, 0, 0, 2],
                mtu: 1500,
            }),
        }
    }

    /// Ethernet + IPv4 + TCP, checksums left zero (not verified).
    fn tcp(dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 9, 0x08, 0x00];
        f.extend([0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0]);
        f.extend(CLIENT);
        f.extend(dst);
        f.extend(40_000u16.to_be_bytes());
        f.extend(dport.to_be_bytes());
        f.extend([0, 0, 0, 1, 0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        f
    }

    fn send(e: &mut Engine, frame: &[u8]) -> Verdict {
        let mut buf = vec![0u8; 128 + frame.len()];
        buf[128..].copy_from_slice(frame);
        let mut f = Frame::new(&mut buf, 128, frame.len());
        e.process(1_000, &mut f, &nb())
    }

    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const FWD: Verdict = Verdict::Forward { ifindex: 3 };

    /// The default lower threshold is 3/4 of the upper one for every upper
    /// threshold the validator accepts, up to u32::MAX (`u * 3` in u32
    /// overflowed: a panic in debug, a wrong threshold in release).
    #[test]
    fn overload_low_mark_is_three_quarters_without_overflow() {
        let dest = |u: u32| Dest {
            id: DestId(1),
            addr: IpAddr::from([198, 18, 1, 1]),
            port: None,
            weight: 1,
            fwd: crate::service::model::FwdMethod::Dr,
            u_threshold: u,
            l_threshold: 0,
        };
        // (upper, live connections, overloaded before) -> overloaded after
        let cases = [
            (u32::MAX, 2_000_000_000, true, false),
            (u32::MAX, 3_300_000_000, true, true),
            (u32::MAX, u32::MAX, false, true),
            (2_000_000_000, 1_499_999_999, true, false),
            (2_000_000_000, 1_500_000_000, true, true),
            (100, 74, true, false),
            (100, 75, true, true),
            (100, 100, false, true),
        ];
        for (u, n, before, after) in cases {
            let mut c = DestCounters {
                active: n,
                overloaded: before,
                ..DestCounters::default()
            };
            update_overload(&mut c, &dest(u));
            assert_eq!(c.overloaded, after, "u_threshold {u}, {n} connections");
        }
    }

    const HEAD: &str = "[director]\ninterfaces = [\"eth0\"]\n";
    const FWMARK_SVC: &str = r#"
[[service]]
name = "marked"
fwmark = 1
  [[service.real]]
  addr = "198.19.254.1"
  forward = "dr"
"#;

    fn fwmark_rule(vip: &str) -> String {
        format!(
            "[[fwmark]]\nmark = 1\nrules = [ {{ vip = \"{vip}\", proto = \"tcp\", ports = \"80\" }} ]\n"
        )
    }

    /// Neighbours whose MAC is never known; `route` decides whether a
    /// pending hop exists (a route through a data-plane interface).
    struct Unresolved {
        route: bool,
    }

    impl Neighbors for Unresolved {
        fn lookup(&self, _: IpAddr) -> Option<NextHop> {
            None
        }
        fn pending(&self, _: IpAddr) -> Option<NextHop> {
            self.route.then_some(NextHop {
                ifindex: 4,
                src_mac: [2, 0, 0, 0, 0, 7],
                dst_mac: [0; 6],
                mtu: 1500,
            })
        }
    }

    /// A frame whose next hop is routed but not yet resolved is rewritten
    /// and held (the data path sends it once the MAC is known), first
    /// packet and established ones alike; with no route at all it is
    /// dropped as before.
    #[test]
    fn unresolved_next_hop_holds_the_rewritten_frame() {
        let svc = r#"
[[service]]
name = "web"
proto = "tcp"
vip = "198.19.255.1"
port = 80
  [[service.real]]
  addr = "198.19.254.7"
  forward = "dr"
"#;
        let mut e = Engine::new(EngineConfig::default(), snap(&format!("{HEAD}{svc}"), None));
        let vip = [198, 19, 255, 1];
        let hold = Verdict::Hold {
            ifindex: 4,
            dest: IpAddr::from([198, 19, 254, 7]),
        };
        for flags in [SYN, ACK] {
            let frame = tcp(vip, 80, flags);
            let mut buf = vec![0u8; 128 + frame.len()];
            buf[128..].copy_from_slice(&frame);
            let mut f = Frame::new(&mut buf, 128, frame.len());
            assert_eq!(e.process(1_000, &mut f, &Unresolved { route: true }), hold);
            assert_eq!(f.data()[6..12], [2, 0, 0, 0, 0, 7], "source MAC rewritten");
        }
        assert_eq!(e.conns().len(), 1);
        assert_eq!(e.stats.neighbor_misses, 2);
        let frame = tcp(vip, 80, ACK);
        let mut buf = vec![0u8; 128 + frame.len()];
        buf[128..].copy_from_slice(&frame);
        let mut f = Frame::new(&mut buf, 128, frame.len());
        assert_eq!(
            e.process(1_000, &mut f, &Unresolved { route: false }),
            Verdict::Drop(DropReason::NoNeighbor)
        );
    }

    /// The established fast path skips classification only where the
    /// classify-first path would classify too: a connection of a fwmark
    /// service whose rule no longer covers its address is not ours.
    #[test]
    fn fast_path_follows_fwmark_rule_changes() {
        let s1 = snap(
            &format!("{HEAD}{}{FWMARK_SVC}", fwmark_rule("198.19.255.1")),
            None,
        );
        let mut e = Engine::new(EngineConfig::default(), Arc::clone(&s1));
        let vip = [198, 19, 255, 1];
        assert_eq!(send(&mut e, &tcp(vip, 80, SYN)), FWD);
        assert_eq!(send(&mut e, &tcp(vip, 80, ACK)), FWD);
        // Same service and real server (same id), the rule moved elsewhere.
        let s2 = snap(
            &format!("{HEAD}{}{FWMARK_SVC}", fwmark_rule("198.19.255.9")),
            Some(&s1),
        );
        assert!(s2.dest_index.keys().eq(s1.dest_index.keys()));
        e.set_snapshot(s2);
        assert_eq!(e.conns().len(), 1);
        assert_eq!(send(&mut e, &tcp(vip, 80, ACK)), Verdict::Pass);
        assert_eq!(e.dest_counters().values().map(|c| c.inpkts).sum::<u64>(), 2);
    }

    /// A connection of an address service is still forwarded to its real
    /// server when a fwmark service now classifies its address, as with
    /// classification first.
    #[test]
    fn fast_path_keeps_connections_of_address_services() {
        let addr_svc = r#"
[[service]]
name = "web"
proto = "tcp"
vip = "198.19.255.1"
port = 80
  [[service.real]]
  addr = "198.19.254.7"
  forward = "dr"
"#;
        let s1 = snap(&format!("{HEAD}{addr_svc}"), None);
        let mut e = Engine::new(EngineConfig::default(), Arc::clone(&s1));
        let vip = [198, 19, 255, 1];
        assert_eq!(send(&mut e, &tcp(vip, 80, SYN)), FWD);
        let s2 = snap(
            &format!(
                "{HEAD}{}{FWMARK_SVC}{addr_svc}",
                fwmark_rule("198.19.255.1")
            ),
            Some(&s1),
        );
        e.set_snapshot(s2);
        assert_eq!(send(&mut e, &tcp(vip, 80, ACK)), FWD);
        let h = e
            .conns()
            .lookup_in(&FlowKey {
                proto: Proto::Tcp,
                src: IpAddr::from(CLIENT),
                dst: IpAddr::from(vip),
                sport: 40_000,
                dport: 80,
            })
            .unwrap();
        let c = e.conns().get(h).unwrap();
        assert_eq!(c.raddr, IpAddr::from([198, 19, 254, 7]));
        assert_eq!(c.state, TcpState::Established);
        // A new connection goes to the fwmark service.
        let mut syn = tcp(vip, 80, SYN);
        syn[35] = 0x41; // another client port
        assert_eq!(send(&mut e, &syn), FWD);
        let by_raddr = |a: [u8; 4]| {
            let mut n = 0;
            e.conns()
                .for_each(|_, c| n += usize::from(c.raddr == IpAddr::from(a)));
            n
        };
        assert_eq!(
            (by_raddr([198, 19, 254, 7]), by_raddr([198, 19, 254, 1])),
            (1, 1)
        );
    }

    /// The counters view follows every change and is reused.
    #[test]
    fn dest_counters_view_is_current() {
        let s1 = snap(
            &format!("{HEAD}{}{FWMARK_SVC}", fwmark_rule("198.19.255.1")),
            None,
        );
        let mut e = Engine::new(EngineConfig::default(), s1);
        let vip = [198, 19, 255, 1];
        let inpkts = |e: &Engine| e.dest_counters().values().map(|c| c.inpkts).sum::<u64>();
        assert_eq!(inpkts(&e), 0);
        assert_eq!(send(&mut e, &tcp(vip, 80, SYN)), FWD);
        assert_eq!(inpkts(&e), 1);
        assert_eq!(inpkts(&e), 1);
        assert_eq!(send(&mut e, &tcp(vip, 80, ACK)), FWD);
        assert_eq!(inpkts(&e), 2);
        let c = *e.dest_counters().values().next().unwrap();
        assert_eq!((c.conns, c.active, c.inactive, c.persist), (1, 1, 0, 0));
        e.tick(2_000);
        assert_eq!(e.dest_counters().values().next().map(|c| c.active), Some(1));
        e.tick(10_000_000);
        assert_eq!(e.dest_counters().values().next().map(|c| c.active), Some(0));
    }
}
