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

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use crate::service::model::{mask_addr, DestId, FlowKey, FwdMethod, Millis, Proto, ServiceKey};
use crate::service::sched::{DestStat, SchedKey, SchedState};
use crate::service::snapshot::{Dest, Persistence, Service, Snapshot};
use crate::shard::conn::{Conn, ConnHandle, ConnTable, InsertError, NewConn, WarmKey};
use crate::shard::forward;
use crate::shard::nexthop::{Neighbors, NextHop};
use crate::shard::restart::{self, RestoreStats, SavedConn, SavedTemplate, ShardState};
use crate::shard::tcp_state::{self, Dir, TcpState};
use crate::shard::template::{TemplateKey, TemplateTable, TplHandle};
use crate::shard::verdict::{DropReason, Frame, Verdict};
use crate::wire::packet::FlowPeek;
use crate::wire::{self, L3Kind, PacketInfo};

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

/// Traffic and state counters of one real server, in one shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestCounters {
    /// Connections scheduled to it (ipvsadm "Conns").
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
    /// Live connections: active (ESTABLISHED and the handshake states
    /// SYN_SENT / SYN_RECV / SYNACK, as IPVS's ActiveConn) / other.
    pub active: u32,
    pub inactive: u32,
    /// Live persistence templates pointing at it.
    pub persist: u32,
    /// Overload state (thresholds).
    pub overloaded: bool,
}

/// Counters of the engine itself.
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    pub packets: u64,
    pub dropped: [u64; DropReason::ALL.len()],
    /// Malformed frames by wire error reason.
    pub malformed: HashMap<&'static str, u64>,
    pub passed: u64,
    pub handoff: u64,
    pub new_conns: u64,
    pub expired_conns: u64,
    pub evicted_conns: u64,
    pub expired_templates: u64,
    pub template_hits: u64,
    pub neighbor_misses: u64,
}

/// Per service, per shard state aligned with one snapshot.
#[derive(Debug, Default)]
struct SvcState {
    sched: SchedState,
    stat: Vec<DestStat>,
}

/// One real server's state in this shard: its counters, and where it is in
/// the current snapshot (`None`: removed, kept while live state refers to it).
#[derive(Clone, Copy, Debug, Default)]
struct DestSlot {
    c: DestCounters,
    /// (service index, dest index) in the current snapshot: the same as
    /// `snap.dest_index[id]`, kept here so that a packet needs one lookup.
    at: Option<(u32, u32)>,
    /// The next hop towards this real server, and the neighbour table
    /// version it came from ([`Neighbors::version`]): an established packet
    /// needs no route or neighbour lookup while the table is unchanged.
    hop: Option<(u64, NextHop)>,
}

/// The next hop towards `raddr` (real server `d`'s address), through `d`'s
/// cache when the neighbour table allows caching.
#[inline(always)]
fn cached_hop(d: &mut DestSlot, raddr: IpAddr, nh: &dyn Neighbors) -> Option<NextHop> {
    let v = nh.version();
    if let (Some(v), Some((cv, hop))) = (v, d.hop) {
        if v == cv {
            return Some(hop);
        }
    }
    let hop = nh.lookup(raddr)?;
    if let Some(v) = v {
        d.hop = Some((v, hop));
    }
    Some(hop)
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

/// What [`Ctx::new_conn`] found.
enum NewTarget {
    /// A new connection (its first packet counted), and the next hop to
    /// its real server (through the real server's cache).
    New(Target, Option<NextHop>),
    /// The connection exists (nothing counted).
    Existing(Target),
}

/// What [`Ctx::established_in`] did.
enum Fast {
    /// Forwarded or dropped.
    Done(Verdict),
    /// Not for the fast path; the connection lookup's result.
    Slow(Option<ConnHandle>),
    /// Not for the fast path, nothing looked up (a TCP SYN).
    NoLookup,
}

/// A TCP SYN without ACK (a connection attempt).
#[inline]
fn is_syn(tcp_flags: u8) -> bool {
    tcp_flags & wire::tcp::flags::SYN != 0 && tcp_flags & wire::tcp::flags::ACK == 0
}

/// The protocol of a packet that can open a connection (a TCP SYN, or
/// UDP); `None` for any other.
#[inline]
fn opening_proto(p: &FlowPeek) -> Option<Proto> {
    match Proto::from_number(p.proto)? {
        Proto::Tcp => is_syn(p.tcp_flags).then_some(Proto::Tcp),
        Proto::Udp => Some(Proto::Udp),
    }
}

/// Real server state by id (foldhash: ids come from the config).
type DestMap = hashbrown::HashMap<DestId, DestSlot>;

/// [`Engine::dest_counters`] as a `std` map, built on demand; `keys` is the
/// value of `Engine::dest_keys` it was built for.
#[derive(Debug)]
struct DestView {
    keys: u64,
    map: HashMap<DestId, DestCounters>,
}

/// Flag bit kept in the connection: it counts as active in the dest counters.
const F_ACTIVE: u8 = 0x1;
/// Flag bit: the connection is counted in a dest's counters at all.
const F_COUNTED: u8 = 0x2;

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
        };
        e.set_snapshot(snap);
        e
    }

    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snap
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

    /// Per real server counters of this shard: the real servers of the
    /// current snapshot this shard has had connections to (a missing one
    /// counts zero), and removed ones that live connections or templates
    /// still refer to.
    ///
    /// The engine keeps its counters in a map made for the packet path; this
    /// `std` map view is built by the first call after a change (the values
    /// are refreshed in place while the set of real servers is unchanged),
    /// so call it per report, not per packet.
    pub fn dest_counters(&self) -> &HashMap<DestId, DestCounters> {
        &self
            .dest_view
            .get_or_init(|| {
                let spare = self.spare_view.lock().ok().and_then(|mut s| s.take());
                match spare {
                    Some(mut v) if v.keys == self.dest_keys => {
                        for (id, c) in v.map.iter_mut() {
                            if let Some(d) = self.dests.get(id) {
                                *c = d.c;
                            }
                        }
                        v
                    }
                    _ => DestView {
                        keys: self.dest_keys,
                        map: self.dests.iter().map(|(id, d)| (*id, d.c)).collect(),
                    },
                }
            })
            .map
    }

    /// The counters are about to change: retire the view (kept for reuse).
    #[inline]
    fn stale_view(&mut self) {
        if let Some(v) = self.dest_view.take() {
            if let Ok(s) = self.spare_view.get_mut() {
                *s = Some(v);
            }
        }
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
                    if self.cfg.shard > 0 && !s.dests.is_empty() {
                        st.last = Some((self.cfg.shard as usize - 1) % s.dests.len());
                    }
                    st
                }
            };
            // A server this shard has no state for counts zero; its slot is
            // made by its first connection (`slot_of`), so a reload that
            // adds many servers costs the shard no map insertions.
            let stat = s
                .dests
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
        if !same_layout {
            self.dests.retain(|id, d| {
                d.at = snap.dest_index.get(id).copied();
                d.at.is_some() || d.c.active + d.c.inactive + d.c.persist > 0
            });
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

    /// Prefetch the cache lines `process` will read for each frame of an RX
    /// batch (its connection's index bucket, then the entry the bucket
    /// points at; for a reply of a NAT real server, the reply key's), in two
    /// passes over the batch so that its cache misses overlap. A frame whose
    /// bucket holds no candidate and that can open a connection (a TCP SYN,
    /// or UDP) is likely a new connection: the second pass names its
    /// persistence template's index bucket instead (persistent services),
    /// and then the slab slots the chunk's new connections and templates
    /// will fill.
    /// `prefetch` is the data plane's (`dataplane::mem::prefetch`): the
    /// engine only names addresses and reads nothing but index buckets.
    /// Changes nothing.
    pub fn warm_batch(&self, frames: &[&[u8]], prefetch: impl Fn(usize)) {
        const W: usize = 32;
        for chunk in frames.chunks(W) {
            let mut keys = [None; W];
            for (f, w) in chunk.iter().zip(keys.iter_mut()) {
                *w = self.warm_key(f);
                if let Some((w, _)) = *w {
                    prefetch(self.conns.bucket_addr(w));
                }
            }
            // New connections per family, and new templates, likely in
            // this chunk: their slots are prefetched too.
            let (mut new, mut tpl) = ([0usize; 2], 0usize);
            for (f, k) in chunk.iter().zip(keys.iter()) {
                let Some((w, reply)) = *k else {
                    continue;
                };
                match self.conns.entry_addr(w) {
                    Some(r) => {
                        prefetch(r.start);
                        prefetch(r.end - 1);
                    }
                    None => {
                        if !reply {
                            self.warm_new(f, &mut new, &mut tpl, &prefetch);
                        }
                    }
                }
            }
            let lines = |r: std::ops::Range<usize>| (r.start & !63..r.end).step_by(64);
            for (v6, n) in [(false, new[0]), (true, new[1])] {
                if n > 0 {
                    lines(self.conns.next_slots(v6, n)).for_each(&prefetch);
                }
            }
            if tpl > 0 {
                lines(self.tpls.next_slots(tpl)).for_each(&prefetch);
            }
        }
    }

    /// [`Engine::warm_batch`] for a client frame without a connection
    /// candidate: when it can open a connection to a virtual service, count
    /// it (per family) and, for a persistent service, prefetch its
    /// template's index bucket and count it. Out of line: it keeps the
    /// established path's pass small.
    #[inline(never)]
    fn warm_new(&self, f: &[u8], new: &mut [usize; 2], tpl: &mut usize, prefetch: &impl Fn(usize)) {
        // Read the (cached) frame's tuple again.
        let Some((p, proto)) =
            wire::packet::peek_flow(f).and_then(|p| Some((p, opening_proto(&p)?)))
        else {
            return;
        };
        let snap = &self.snap;
        let Some(svc) = snap
            .classifier
            .classify(proto, p.dst, p.dport)
            .and_then(|s| snap.services.get(s as usize))
        else {
            return;
        };
        if let Some(n) = new.get_mut(usize::from(p.src.is_ipv6())) {
            *n += 1;
        }
        if let Some(per) = svc.persistence.as_ref() {
            let tkey = template_key(svc.key, per, p.src, p.dport);
            prefetch(self.tpls.bucket_addr(self.tpls.hash(&tkey)));
            *tpl += 1;
        }
    }

    /// The connection table's warm key of a frame, and whether it is a reply
    /// of a NAT real server.
    #[inline]
    fn warm_key(&self, frame: &[u8]) -> Option<(WarmKey, bool)> {
        let p = wire::packet::peek_flow(frame)?;
        let k = FlowKey {
            proto: Proto::from_number(p.proto)?,
            src: p.src,
            dst: p.dst,
            sport: p.sport,
            dport: p.dport,
        };
        let reply = is_nat_real(&self.snap, p.src);
        let w = self.conns.warm_key(&k, reply)?;
        Some((w, reply))
    }

    /// Expire connections and templates whose time has come (bounded work).
    pub fn tick(&mut self, now: Millis) {
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
        self.conns.expire(now, 65_536, |c| {
            stats.expired_conns += 1;
            release_conn(dests, tpls, c);
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

    fn refresh_stats(&mut self) {
        for (si, s) in self.snap.services.iter().enumerate() {
            if let Some(st) = self.svc.get_mut(si) {
                for (di, d) in s.dests.iter().enumerate() {
                    if let (Some(e), Some(ds)) = (self.dests.get_mut(&d.id), st.stat.get_mut(di)) {
                        let c = &mut e.c;
                        update_overload(c, d);
                        ds.active = c.active;
                        ds.inactive = c.inactive;
                        ds.overloaded = c.overloaded;
                    }
                }
            }
        }
    }
}

impl Ctx<'_> {
    /// [`Engine::process`].
    #[inline(always)]
    fn process(&mut self, now: Millis, frame: &mut Frame<'_>, nh: &dyn Neighbors) -> Verdict {
        self.stats.packets += 1;
        // Borrowed in place: moving the parsed headers out costs a copy.
        let parsed = wire::parse(frame.data());
        let info = match &parsed {
            Ok(i) => i,
            Err(e) => {
                *self.stats.malformed.entry(e.reason()).or_default() += 1;
                return self.drop(DropReason::Malformed);
            }
        };
        if !info.is_ip() {
            self.stats.passed += 1;
            return Verdict::Pass;
        }
        if info.inner.is_some() {
            return self.process_icmp_error(now, frame, info, nh);
        }
        let proto = match Proto::from_number(info.proto) {
            Some(p) => p,
            None => {
                self.stats.passed += 1;
                return Verdict::Pass;
            }
        };
        if info.is_fragment {
            // Fragment policy: fragments of virtual-service traffic are not
            // reassembled (as IPVS without defrag); they are counted and dropped.
            if self.is_vip(info.dst) {
                return self.drop(DropReason::Fragment);
            }
            self.stats.passed += 1;
            return Verdict::Pass;
        }
        let key = FlowKey {
            proto,
            src: info.src,
            dst: info.dst,
            sport: info.sport,
            dport: info.dport,
        };
        let snap = self.snap;
        // IPVS order (ip_vs_in_hook): an existing connection is found by its
        // 5-tuple first. Replies of NAT real servers are looked up by their
        // reply key below instead.
        let mut looked_up = None;
        let from_nat_real = is_nat_real(snap, info.src);
        if !from_nat_real {
            match self.established_in(now, frame, info, &key, nh) {
                Fast::Done(v) => return v,
                Fast::Slow(h) => looked_up = Some(h),
                Fast::NoLookup => {}
            }
        }
        match snap.classifier.classify(proto, info.dst, info.dport) {
            Some(svc_idx) => {
                let owner = owner_shard(info.src, snap, self.cfg.shards);
                if owner != self.cfg.shard {
                    self.stats.handoff += 1;
                    return Verdict::Handoff(owner);
                }
                self.inbound(now, frame, info, &key, svc_idx as usize, looked_up, nh)
            }
            None => {
                // Not for a virtual service: only a reply of a NAT real
                // server (to a client) can be ours. Anything else is passed
                // here, by any shard, as the XDP filter would.
                if !from_nat_real {
                    self.stats.passed += 1;
                    return Verdict::Pass;
                }
                let owner = owner_shard(info.dst, snap, self.cfg.shards);
                if owner != self.cfg.shard {
                    self.stats.handoff += 1;
                    return Verdict::Handoff(owner);
                }
                self.outbound(now, frame, info, &key, nh)
            }
        }
    }

    /// The established-connection fast path: a packet (not a TCP SYN) of a
    /// connection whose real server is in the snapshot is forwarded without
    /// classifying it. That is what the classify-first path would do: the
    /// connection's service is in the snapshot (its real server's id is
    /// bound to the service key), so an address service still classifies
    /// the packet; a firewall-mark service is asked (its fwmark rules may
    /// have changed). Anything else (SYNs, which may reopen or reschedule a
    /// connection; removed real servers; another owner shard) takes the
    /// full path, with the lookup's result when there was one.
    #[inline(always)]
    fn established_in(
        &mut self,
        now: Millis,
        frame: &mut Frame<'_>,
        info: &PacketInfo,
        key: &FlowKey,
        nh: &dyn Neighbors,
    ) -> Fast {
        if key.proto == Proto::Tcp && is_syn(info.tcp_flags) {
            return Fast::NoLookup;
        }
        let Some(h) = self.conns.lookup_in(key) else {
            return Fast::Slow(None);
        };
        let Some(c) = self.conns.get(h) else {
            return Fast::Slow(Some(h));
        };
        let snap = self.snap;
        let Some(d) = self.dests.get_mut(&c.dest) else {
            return Fast::Slow(Some(h));
        };
        let classified = match d.at.and_then(|(s, _)| snap.services.get(s as usize)) {
            Some(svc) => match svc.key {
                ServiceKey::Addr { .. } => true,
                ServiceKey::Fwmark(_) => snap
                    .classifier
                    .classify(key.proto, key.dst, key.dport)
                    .is_some(),
            },
            None => false,
        };
        if !classified || owner_shard(key.src, snap, self.cfg.shards) != self.cfg.shard {
            return Fast::Slow(Some(h));
        }
        d.c.inpkts += 1;
        d.c.inbytes += u64::from(info.l3_len);
        let hop = cached_hop(d, c.raddr, nh);
        self.touch_conn(h, &c, now, Dir::Input, info.tcp_flags);
        Fast::Done(self.transmit_hop(frame, info, &Target::of(&c), hop))
    }

    fn drop(&mut self, r: DropReason) -> Verdict {
        if let Some(c) = self.stats.dropped.get_mut(r as usize) {
            *c += 1;
        }
        Verdict::Drop(r)
    }

    /// Is `a` a virtual address (any protocol, any port)? `vips` is sorted
    /// by (proto, address, port) (see `build_snapshot`).
    fn is_vip(&self, a: IpAddr) -> bool {
        let v = &self.snap.vips;
        [Proto::Tcp, Proto::Udp].into_iter().any(|p| {
            let i = v.partition_point(|&(q, b, _)| (q, b) < (p, a));
            v.get(i).is_some_and(|&(q, b, _)| q == p && b == a)
        })
    }

    /// The state of real server `id` (see [`slot_of`]).
    fn slot(&mut self, id: DestId) -> &mut DestSlot {
        slot_of(self.dests, self.dest_keys, self.snap, id)
    }

    /// A packet to a virtual service, from a client.
    ///
    /// Connection reuse and unavailable real servers follow IPVS
    /// (`ip_vs_in_hook`, `net/netfilter/ipvs/ip_vs_core.c`):
    /// - a SYN on a connection in a closing state is a new connection,
    ///   scheduled afresh (`conn_reuse_mode`); with `expire_nodest_conn`, so
    ///   is a SYN on a connection whose real server is quiesced (weight 0);
    /// - a packet of a connection whose real server is no longer in the
    ///   snapshot (removed from the service) is dropped and counted as
    ///   [`DropReason::DestRemoved`]; the connection's timer is not
    ///   restarted, so it times out as it would have. With
    ///   `expire_nodest_conn` the connection is expired at once instead, and
    ///   the packet is scheduled afresh when it can open a connection (UDP,
    ///   TCP SYN) — otherwise it is dropped as `DestRemoved` too.
    #[allow(clippy::too_many_arguments)]
    fn inbound(
        &mut self,
        now: Millis,
        frame: &mut Frame<'_>,
        info: &PacketInfo,
        key: &FlowKey,
        svc_idx: usize,
        looked_up: Option<Option<ConnHandle>>,
        nh: &dyn Neighbors,
    ) -> Verdict {
        let snap = self.snap;
        let Some(svc) = snap.services.get(svc_idx) else {
            return self.drop(DropReason::NoDest);
        };
        let syn = key.proto == Proto::Tcp && is_syn(info.tcp_flags);
        let mut hit: Option<(ConnHandle, Conn)> = None;
        let handle = match looked_up {
            Some(h) => h,
            None => self.conns.lookup_in(key),
        };
        if let Some(h) = handle {
            let Some(c) = self.conns.get(h) else {
                return self.drop(DropReason::NoDest);
            };
            hit = Some((h, c));
        }
        if let (Some((h, c)), true) = (hit, syn) {
            // A new SYN on a connection that has closed: IPVS
            // conn_reuse_mode reschedules it as a new connection; with
            // expire_nodest_conn, so does one to a quiesced server.
            // conn_reuse_mode 0 turns both off, as in IPVS.
            let mode = snap.conn_reuse_mode;
            let quiesced =
                svc.expire_nodest_conn && snap.dest(c.dest).is_some_and(|(_, d)| d.weight == 0);
            if mode != 0 && (is_new_conn_expected(&c, mode) || quiesced) {
                self.remove_conn(h);
                hit = None;
            }
        }
        if let Some((h, c)) = hit {
            // One lookup: is the real server still in the snapshot, and its
            // counters.
            if let Some(d) = self.dests.get_mut(&c.dest).filter(|d| d.at.is_some()) {
                d.c.inpkts += 1;
                d.c.inbytes += u64::from(info.l3_len);
                self.touch_conn(h, &c, now, Dir::Input, info.tcp_flags);
                return self.transmit_in(frame, info, &Target::of(&c), nh);
            }
            // The real server is gone (ip_vs_in_hook: "the destination
            // server is not available").
            if !svc.expire_nodest_conn {
                return self.drop(DropReason::DestRemoved);
            }
            self.remove_conn(h);
            self.stats.expired_conns += 1;
            if key.proto == Proto::Tcp && !syn {
                return self.drop(DropReason::DestRemoved);
            }
        }
        if key.proto == Proto::Tcp && !syn {
            return self.drop(DropReason::NotSyn);
        }
        let t = match self.new_conn(now, key, svc_idx, svc, info, nh) {
            Ok(NewTarget::New(t, hop)) => return self.transmit_hop(frame, info, &t, hop),
            Ok(NewTarget::Existing(t)) => {
                if let Some(d) = self.dests.get_mut(&t.dest) {
                    d.c.inpkts += 1;
                    d.c.inbytes += u64::from(info.l3_len);
                }
                t
            }
            Err(v) => return v,
        };
        self.transmit_in(frame, info, &t, nh)
    }

    fn outbound(
        &mut self,
        now: Millis,
        frame: &mut Frame<'_>,
        info: &PacketInfo,
        key: &FlowKey,
        nh: &dyn Neighbors,
    ) -> Verdict {
        let Some(h) = self.conns.lookup_out(key) else {
            self.stats.passed += 1;
            return Verdict::Pass;
        };
        let Some(c) = self.conns.get(h) else {
            self.stats.passed += 1;
            return Verdict::Pass;
        };
        self.touch_conn(h, &c, now, Dir::Output, info.tcp_flags);
        if let Some(d) = self.dests.get_mut(&c.dest) {
            d.c.outpkts += 1;
            d.c.outbytes += u64::from(info.l3_len);
        }
        let Some(hop) = nh.lookup(c.caddr) else {
            return self.no_neighbor(c.caddr);
        };
        match forward::nat_out(frame, info, c.vaddr, c.vport, &hop) {
            Ok(()) => Verdict::Forward {
                ifindex: hop.ifindex,
            },
            Err(_) => self.drop(DropReason::NoRoom),
        }
    }

    /// ICMP errors about a tracked connection go where the connection goes
    /// (path MTU discovery through the director), as IPVS `ip_vs_in_icmp` /
    /// `ip_vs_out_icmp`:
    /// - quoting a packet from a virtual service to a client (a reply, sent
    ///   by us for NAT or by the real server for DR/tunnels), the error goes
    ///   to the connection's real server (NAT: outer destination and quoted
    ///   source become the real server's); no such connection: dropped as
    ///   [`DropReason::IcmpNoConn`];
    /// - quoting a packet from a client to a NAT real server (an error from
    ///   the real server's side), it goes to the client with the virtual
    ///   address and port in place of the real server's;
    /// - anything else is not ours: passed to the kernel.
    ///
    /// Either way the owner shard is the client's.
    fn process_icmp_error(
        &mut self,
        _now: Millis,
        frame: &mut Frame<'_>,
        info: &PacketInfo,
        nh: &dyn Neighbors,
    ) -> Verdict {
        let Some(inner) = info.inner.and_then(|i| i.flow_key()) else {
            self.stats.passed += 1;
            return Verdict::Pass;
        };
        let snap = self.snap;
        let about_reply = snap
            .classifier
            .classify(inner.proto, inner.src, inner.sport)
            .is_some();
        let about_request = !about_reply && is_nat_real(snap, inner.dst);
        if !about_reply && !about_request {
            self.stats.passed += 1;
            return Verdict::Pass;
        }
        let client = if about_reply { inner.dst } else { inner.src };
        let owner = owner_shard(client, snap, self.cfg.shards);
        if owner != self.cfg.shard {
            self.stats.handoff += 1;
            return Verdict::Handoff(owner);
        }
        if about_request {
            // Quoted client -> RIP:rport: the reply key of a NAT connection.
            let c = self
                .conns
                .lookup_out(&inner.reversed())
                .and_then(|h| self.conns.get(h));
            let Some(c) = c.filter(|c| c.fwd == FwdMethod::Nat) else {
                self.stats.passed += 1;
                return Verdict::Pass;
            };
            let Some(hop) = nh.lookup(c.caddr) else {
                return self.no_neighbor(c.caddr);
            };
            return match forward::nat_icmp_out(frame, info, c.vaddr, c.vport, &hop) {
                Ok(()) => Verdict::Forward {
                    ifindex: hop.ifindex,
                },
                Err(e) => self.drop(e.drop_reason()),
            };
        }
        // The quoted packet is one we (or a real server, DR) sent towards the
        // client: VIP -> client. Its connection's inbound key is the reverse.
        let in_key = inner.reversed();
        let Some(h) = self.conns.lookup_in(&in_key) else {
            return self.drop(DropReason::IcmpNoConn);
        };
        let Some(c) = self.conns.get(h) else {
            return self.drop(DropReason::IcmpNoConn);
        };
        match c.fwd {
            FwdMethod::Dr => {
                let Some(hop) = nh.lookup(c.raddr) else {
                    return self.no_neighbor(c.raddr);
                };
                match forward::dr(frame, info, &hop) {
                    Ok(()) => Verdict::Forward {
                        ifindex: hop.ifindex,
                    },
                    Err(_) => self.drop(DropReason::NoRoom),
                }
            }
            FwdMethod::Ipip | FwdMethod::Gue => self.transmit_in(frame, info, &Target::of(&c), nh),
            FwdMethod::Nat => {
                let Some(hop) = nh.lookup(c.raddr) else {
                    return self.no_neighbor(c.raddr);
                };
                match forward::nat_icmp_in(frame, info, c.raddr, c.rport, &hop) {
                    Ok(()) => Verdict::Forward {
                        ifindex: hop.ifindex,
                    },
                    Err(e) => self.drop(e.drop_reason()),
                }
            }
        }
    }

    fn no_neighbor(&mut self, a: IpAddr) -> Verdict {
        self.stats.neighbor_misses += 1;
        if self.want_neighbors.len() < 64 && !self.want_neighbors.contains(&a) {
            self.want_neighbors.push(a);
        }
        self.drop(DropReason::NoNeighbor)
    }

    #[inline]
    fn transmit_in(
        &mut self,
        frame: &mut Frame<'_>,
        info: &PacketInfo,
        c: &Target,
        nh: &dyn Neighbors,
    ) -> Verdict {
        let hop = nh.lookup(c.raddr);
        self.transmit_hop(frame, info, c, hop)
    }

    /// [`Ctx::transmit_in`] with the next hop already looked up.
    #[inline(always)]
    fn transmit_hop(
        &mut self,
        frame: &mut Frame<'_>,
        info: &PacketInfo,
        c: &Target,
        hop: Option<NextHop>,
    ) -> Verdict {
        let Some(hop) = hop else {
            return self.no_neighbor(c.raddr);
        };
        let r = match c.fwd {
            FwdMethod::Dr => forward::dr(frame, info, &hop),
            FwdMethod::Nat => forward::nat_in(frame, info, c.raddr, c.rport, &hop),
            FwdMethod::Ipip | FwdMethod::Gue => {
                let snap = self.snap;
                let src = match c.raddr {
                    IpAddr::V4(_) => snap.tunnel_src4.map(IpAddr::V4),
                    IpAddr::V6(_) => snap.tunnel_src6.map(IpAddr::V6),
                };
                let Some(src) = src else {
                    return self.drop(DropReason::NoRoom);
                };
                if c.fwd == FwdMethod::Ipip {
                    forward::ipip(frame, info, src, c.raddr, &hop)
                } else {
                    let sport = forward::flow_hash_port(info);
                    forward::gue(frame, info, src, c.raddr, sport, snap.gue_port, &hop)
                }
            }
        };
        match r {
            Ok(()) => Verdict::Forward {
                ifindex: hop.ifindex,
            },
            Err(_) => self.drop(DropReason::NoRoom),
        }
    }

    /// Update state/timer of an existing connection and keep the dest's
    /// active/inactive counts in step.
    #[inline]
    fn touch_conn(&mut self, h: ConnHandle, c: &Conn, now: Millis, dir: Dir, flags: u8) {
        if c.proto == Proto::Tcp {
            let dir = if dir == Dir::Input && c.fwd != FwdMethod::Nat {
                Dir::InputOnly
            } else {
                dir
            };
            let Some((old, new)) = self.conns.update_tcp(h, now, dir, flags) else {
                return;
            };
            if old != new && c.flags & F_COUNTED != 0 {
                let was = c.flags & F_ACTIVE != 0;
                // IPVS tcp_state_active_table: ESTABLISHED and the
                // handshake states count as active (lc/wlc/sed/nq).
                let is = tcp_state::is_active(new);
                if was != is {
                    let f = if is {
                        c.flags | F_ACTIVE
                    } else {
                        c.flags & !F_ACTIVE
                    };
                    self.conns.set_flags(h, f);
                    if let Some(d) = self.dests.get_mut(&c.dest) {
                        if is {
                            d.c.active += 1;
                            d.c.inactive = d.c.inactive.saturating_sub(1);
                        } else {
                            d.c.inactive += 1;
                            d.c.active = d.c.active.saturating_sub(1);
                        }
                        sync_slot(self.snap, self.svc, d);
                    }
                }
            }
        } else {
            self.conns.touch(h, now);
        }
    }

    fn remove_conn(&mut self, h: ConnHandle) {
        if let Some(c) = self.conns.remove(h) {
            release_conn(self.dests, self.tpls, &c);
            self.sync_stat(c.dest);
        }
    }

    /// Mirror a dest's live counts into the scheduler's view.
    fn sync_stat(&mut self, id: DestId) {
        if let Some(d) = self.dests.get_mut(&id) {
            sync_slot(self.snap, self.svc, d);
        }
    }

    /// Schedule a new connection (through the persistence template when the
    /// service is persistent) and insert it, with the first packet applied
    /// (state, and the real server's counters including the packet: `New`);
    /// or find that it exists (`Existing`: the packet is not counted yet).
    fn new_conn(
        &mut self,
        now: Millis,
        key: &FlowKey,
        svc_idx: usize,
        svc: &Service,
        info: &PacketInfo,
        nh: &dyn Neighbors,
    ) -> Result<NewTarget, Verdict> {
        let mut tpl: Option<TplHandle> = None;
        // A template now points at this server: its `persist` count goes
        // up with the connection's counters below (one update), or before
        // any return in between.
        let mut persist_for: Option<DestId> = None;
        let dest_idx = match svc.persistence {
            Some(p) => {
                let tkey = template_key(svc.key, &p, key.src, key.dport);
                let mut chosen: Option<usize> = None;
                let mut fresh = None;
                let thash = self.tpls.hash(&tkey);
                if let Some(h) = self.tpls.lookup_hashed(thash, &tkey) {
                    if let Some(&t) = self.tpls.get(h) {
                        // IPVS ip_vs_check_template: a template is valid while
                        // its server exists in this service and is not
                        // quiesced with expire_quiescent_template set.
                        let valid = svc
                            .dest_by_id(t.dest)
                            .filter(|(_, d)| !(d.weight == 0 && svc.expire_quiescent_template));
                        match valid {
                            Some((i, _)) => {
                                self.stats.template_hits += 1;
                                chosen = Some(i);
                                tpl = Some(h);
                            }
                            None => {
                                // Invalid: reschedule and rebind the template.
                                let Some(i) = self.schedule(svc_idx, svc, key) else {
                                    // IPVS unhashes an invalid template in
                                    // any case: forget it now unless live
                                    // connections still refer to it.
                                    if t.controls() == 0 && self.tpls.remove(h).is_some() {
                                        if let Some(d) = self.dests.get_mut(&t.dest) {
                                            d.c.persist = d.c.persist.saturating_sub(1);
                                        }
                                    }
                                    return Err(self.drop(DropReason::NoDest));
                                };
                                let Some(d) = svc.dests.get(i) else {
                                    return Err(self.drop(DropReason::NoDest));
                                };
                                if let Some(o) = self.dests.get_mut(&t.dest) {
                                    o.c.persist = o.c.persist.saturating_sub(1);
                                }
                                if let Some(t) = self.tpls.get_mut(h) {
                                    t.dest = d.id;
                                    t.raddr = d.addr;
                                    t.rport = d.port;
                                }
                                persist_for = Some(d.id);
                                chosen = Some(i);
                                tpl = Some(h);
                            }
                        }
                    }
                }
                let i = match chosen {
                    Some(i) => i,
                    None => {
                        let Some(i) = self.schedule(svc_idx, svc, key) else {
                            return Err(self.drop(DropReason::NoDest));
                        };
                        let Some(d) = svc.dests.get(i) else {
                            return Err(self.drop(DropReason::NoDest));
                        };
                        match self.tpls.insert_hashed(
                            thash,
                            now,
                            tkey,
                            d.id,
                            d.addr,
                            d.port,
                            p.timeout_ms,
                        ) {
                            Ok(h) => {
                                persist_for = Some(d.id);
                                fresh = Some(h);
                            }
                            Err(_) => return Err(self.drop(DropReason::TableFull)),
                        }
                        i
                    }
                };
                match fresh {
                    // New: armed to the full timeout already.
                    Some(h) => tpl = Some(h),
                    None => {
                        if let Some(h) = tpl {
                            // Each new connection re-arms the template to the
                            // full timeout.
                            self.tpls.rearm(h, now, p.timeout_ms);
                        }
                    }
                }
                i
            }
            None => {
                let Some(i) = self.schedule(svc_idx, svc, key) else {
                    return Err(self.drop(DropReason::NoDest));
                };
                i
            }
        };
        let Some(d) = svc.dests.get(dest_idx) else {
            if let Some(id) = persist_for {
                self.slot(id).c.persist += 1;
            }
            return Err(self.drop(DropReason::NoDest));
        };
        let rport = dest_port(d, key.dport);
        let mut nc = NewConn::from_key(key, d.addr, rport, d.id, d.fwd);
        nc.template = tpl;
        nc.flags = F_COUNTED;
        let ins = self.conns.insert(now, nc);
        if ins.is_err() {
            if let Some(id) = persist_for {
                self.slot(id).c.persist += 1;
            }
        }
        let ins = match ins {
            Ok(i) => i,
            Err(InsertError::Exists(h)) => {
                return match self.conns.get(h) {
                    Some(c) => Ok(NewTarget::Existing(Target::of(&c))),
                    None => Err(self.drop(DropReason::TableFull)),
                };
            }
            Err(_) => return Err(self.drop(DropReason::TableFull)),
        };
        if let Some(ev) = ins.evicted {
            self.stats.evicted_conns += 1;
            release_conn(self.dests, self.tpls, &ev);
            self.sync_stat(ev.dest);
        }
        if let Some(h) = tpl {
            self.tpls.attach(h);
        }
        self.stats.new_conns += 1;
        // The first packet (TCP): the state moves from NONE, as
        // `touch_conn` would move it, and the connection counts as active
        // from the start when its new state is (one counters update instead
        // of inactive + 1, then active + 1 and inactive - 1).
        let h = ins.handle;
        let mut active = false;
        if key.proto == Proto::Tcp {
            let dir = if d.fwd == FwdMethod::Nat {
                Dir::Input
            } else {
                Dir::InputOnly
            };
            if let Some((old, new)) = self.conns.update_tcp(h, now, dir, info.tcp_flags) {
                if old != new && tcp_state::is_active(new) {
                    active = true;
                    self.conns.set_flags(h, F_COUNTED | F_ACTIVE);
                }
            }
        }
        if let Some(id) = persist_for.filter(|&id| id != d.id) {
            self.slot(id).c.persist += 1;
        }
        let s = slot_of(self.dests, self.dest_keys, self.snap, d.id);
        if persist_for == Some(d.id) {
            s.c.persist += 1;
        }
        s.c.conns += 1;
        if active {
            s.c.active += 1;
        } else {
            s.c.inactive += 1;
        }
        s.c.inpkts += 1;
        s.c.inbytes += u64::from(info.l3_len);
        sync_slot(self.snap, self.svc, s);
        let hop = cached_hop(s, d.addr, nh);
        Ok(NewTarget::New(
            Target {
                dest: d.id,
                raddr: d.addr,
                rport,
                fwd: d.fwd,
            },
            hop,
        ))
    }

    fn schedule(&mut self, svc_idx: usize, svc: &Service, key: &FlowKey) -> Option<usize> {
        let st = self.svc.get_mut(svc_idx)?;
        let k = SchedKey {
            src: key.src,
            dst: key.dst,
            sport: key.sport,
            dport: key.dport,
        };
        let i = svc.scheduler.schedule(&mut st.sched, &st.stat, &k)?;
        (i < svc.dests.len()).then_some(i)
    }
}

/// The state of real server `id`, created at its first connection in this
/// shard (a server with no slot counts zero).
#[inline]
fn slot_of<'d>(
    dests: &'d mut DestMap,
    keys: &mut u64,
    snap: &Snapshot,
    id: DestId,
) -> &'d mut DestSlot {
    dests.entry(id).or_insert_with(|| {
        *keys = keys.wrapping_add(1);
        DestSlot {
            c: DestCounters::default(),
            at: snap.dest_index.get(&id).copied(),
            hop: None,
        }
    })
}

/// The persistence template of a connection from `client` to virtual port
/// `vport` of service `skey`, keyed as IPVS keys templates: firewall-mark
/// services by `<client/mask, mark>` (protocol, VIP and port drop out, so
/// every port of the mark shares one template); address services by
/// `<proto, client/mask, VIP, vport>`, with `vport` 0 for a port-0 service.
/// The one place a template key is built (new connections, restore).
fn template_key(skey: ServiceKey, p: &Persistence, client: IpAddr, vport: u16) -> TemplateKey {
    let client_masked = mask_addr(client, p.prefix4, p.prefix6);
    match skey {
        ServiceKey::Fwmark(mark) => TemplateKey::Fwmark {
            client_masked,
            mark,
        },
        ServiceKey::Addr { proto, vip, port } => TemplateKey::Addr {
            proto,
            client_masked,
            vip,
            vport: if port == 0 { 0 } else { vport },
        },
    }
}

/// Mirror a dest's live counts into the scheduler's view (and update its
/// overload state), if it is in the snapshot.
#[inline]
fn sync_slot(snap: &Snapshot, svc: &mut [SvcState], d: &mut DestSlot) {
    let Some((s, i)) = d.at else {
        return;
    };
    let c = &mut d.c;
    if let Some(dest) = snap
        .services
        .get(s as usize)
        .and_then(|x| x.dests.get(i as usize))
    {
        update_overload(c, dest);
    }
    if let Some(st) = svc
        .get_mut(s as usize)
        .and_then(|x| x.stat.get_mut(i as usize))
    {
        st.active = c.active;
        st.inactive = c.inactive;
        st.overloaded = c.overloaded;
    }
}

/// Is `a` the address of a NAT real server of `snap` (whose replies come
/// back through the director)? `nat_reals` is sorted (see `build_snapshot`).
#[inline]
fn is_nat_real(snap: &Snapshot, a: IpAddr) -> bool {
    snap.is_nat_real(a)
}

/// Saving and restoring state across a restart (see [`crate::shard::restart`]).
impl Engine {
    /// This shard's connections and templates with the time they have left.
    pub fn export(&self, now: Millis) -> ShardState {
        let mut out = ShardState::default();
        self.conns.for_each(|_, c| {
            out.conns.push(SavedConn {
                proto: c.proto.number(),
                caddr: c.caddr,
                cport: c.cport,
                vaddr: c.vaddr,
                vport: c.vport,
                raddr: c.raddr,
                rport: c.rport,
                state: if c.proto == Proto::Tcp {
                    c.state as u8
                } else {
                    0
                },
                left_ms: restart::left(c.expires, now),
            });
        });
        self.tpls.for_each(|t| {
            let (fwmark, proto, client, vip, vport) = match *t.key() {
                TemplateKey::Fwmark {
                    client_masked,
                    mark,
                } => (Some(mark), 0, client_masked, None, 0),
                TemplateKey::Addr {
                    proto,
                    client_masked,
                    vip,
                    vport,
                } => (None, proto.number(), client_masked, Some(vip), vport),
            };
            out.templates.push(SavedTemplate {
                fwmark,
                proto,
                client,
                vip,
                vport,
                raddr: t.raddr,
                rport: t.rport,
                left_ms: restart::left(t.expires(), now),
            });
        });
        out
    }

    /// Restore saved entries that still make sense under the current
    /// snapshot: the service must exist, the real server must still be one
    /// of its real servers, and time must be left. Templates first, so
    /// restored connections attach to them (and keep them alive).
    pub fn restore(&mut self, now: Millis, st: &ShardState) -> RestoreStats {
        self.stale_view();
        let mut r = RestoreStats::default();
        let snap = Arc::clone(&self.snap);
        for t in &st.templates {
            if t.left_ms == 0 {
                r.expired += 1;
                continue;
            }
            let key = match (t.fwmark, Proto::from_number(t.proto), t.vip) {
                (Some(mark), _, _) => Some((
                    ServiceKey::Fwmark(mark),
                    TemplateKey::Fwmark {
                        client_masked: t.client,
                        mark,
                    },
                )),
                (None, Some(proto), Some(vip)) => {
                    let skey = |port| ServiceKey::Addr { proto, vip, port };
                    let svc_port = if snap.services.iter().any(|s| s.key == skey(t.vport)) {
                        t.vport
                    } else {
                        0
                    };
                    Some((
                        skey(svc_port),
                        TemplateKey::Addr {
                            proto,
                            client_masked: t.client,
                            vip,
                            vport: t.vport,
                        },
                    ))
                }
                _ => None,
            };
            let dest = key.and_then(|(skey, tkey)| {
                let svc = snap.services.iter().find(|s| s.key == skey)?;
                svc.persistence?;
                let d = svc
                    .dests
                    .iter()
                    .find(|d| d.addr == t.raddr && d.port == t.rport)?;
                Some((tkey, d.id, d.addr, d.port))
            });
            let Some((tkey, id, addr, port)) = dest else {
                r.stale += 1;
                continue;
            };
            if self
                .tpls
                .insert(now, tkey, id, addr, port, t.left_ms)
                .is_ok()
            {
                slot_of(&mut self.dests, &mut self.dest_keys, &snap, id)
                    .c
                    .persist += 1;
                r.templates += 1;
            }
        }
        for c in &st.conns {
            if c.left_ms == 0 {
                r.expired += 1;
                continue;
            }
            let Some(proto) = Proto::from_number(c.proto) else {
                r.stale += 1;
                continue;
            };
            let found = snap
                .classifier
                .classify(proto, c.vaddr, c.vport)
                .and_then(|i| snap.services.get(i as usize))
                .and_then(|svc| {
                    let d = svc
                        .dests
                        .iter()
                        .find(|d| d.addr == c.raddr && dest_port(d, c.vport) == c.rport)?;
                    Some((svc, d))
                });
            let Some((svc, d)) = found else {
                r.stale += 1;
                continue;
            };
            let key = FlowKey {
                proto,
                src: c.caddr,
                dst: c.vaddr,
                sport: c.cport,
                dport: c.vport,
            };
            let tpl = svc.persistence.and_then(|p| {
                self.tpls
                    .lookup(&template_key(svc.key, &p, c.caddr, c.vport))
            });
            let state = TcpState::from_index(c.state).unwrap_or(TcpState::Established);
            let active = proto == Proto::Tcp && tcp_state::is_active(state);
            let mut nc = NewConn::from_key(&key, d.addr, c.rport, d.id, d.fwd);
            nc.template = tpl;
            nc.flags = F_COUNTED | if active { F_ACTIVE } else { 0 };
            let Ok(ins) = self.conns.insert(now, nc) else {
                r.stale += 1;
                continue;
            };
            if let Some(ev) = ins.evicted {
                release_conn(&mut self.dests, &mut self.tpls, &ev);
            }
            self.conns.restore(ins.handle, now, state, c.left_ms);
            if let Some(h) = tpl {
                self.tpls.attach(h);
            }
            let dc = &mut slot_of(&mut self.dests, &mut self.dest_keys, &snap, d.id).c;
            if active {
                dc.active += 1;
            } else {
                dc.inactive += 1;
            }
            r.conns += 1;
        }
        self.refresh_stats();
        r
    }
}

/// The real server port for a packet: the configured one, or the packet's own
/// destination port when the real server has none (fwmark / port-0 services).
fn dest_port(d: &Dest, packet_dport: u16) -> u16 {
    match d.port {
        Some(p) if p != 0 => p,
        _ => packet_dport,
    }
}

/// IPVS `is_new_conn_expected` for `conn_reuse_mode` `mode` (not 0): a SYN
/// on a TCP connection in TIME_WAIT or CLOSE starts a new connection, and
/// with bit 2 of the mode so does one in FIN_WAIT when the director sees
/// no output (not NAT), unless a persistence template controls the old
/// connection (then the SYN goes on with it, to the template's server). A
/// SYN on a connection still shutting down otherwise stays on it, and the
/// state table takes it from there.
fn is_new_conn_expected(c: &Conn, mode: u8) -> bool {
    c.template.is_none()
        && match c.state {
            TcpState::TimeWait | TcpState::Close => true,
            TcpState::FinWait => mode & 2 != 0 && c.fwd != FwdMethod::Nat,
            _ => false,
        }
}

/// IPVS overload rule: overloaded at `u_threshold` connections, back below
/// `l_threshold` (default 3/4 of upper).
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

fn update_overload(c: &mut DestCounters, d: &Dest) {
    if d.u_threshold == 0 {
        c.overloaded = false;
        return;
    }
    let n = c.active + c.inactive;
    if n >= d.u_threshold {
        c.overloaded = true;
    } else {
        let low = if d.l_threshold != 0 {
            d.l_threshold
        } else {
            d.u_threshold * 3 / 4
        };
        if n < low.max(1) || (c.overloaded && n < low) {
            c.overloaded = false;
        }
    }
}

/// Account for a connection leaving the table (expired, evicted or removed).
fn release_conn(dests: &mut DestMap, tpls: &mut TemplateTable, c: &Conn) {
    if c.flags & F_COUNTED != 0 {
        if let Some(d) = dests.get_mut(&c.dest).map(|d| &mut d.c) {
            if c.flags & F_ACTIVE != 0 {
                d.active = d.active.saturating_sub(1);
            } else {
                d.inactive = d.inactive.saturating_sub(1);
            }
        }
    }
    if let Some(t) = c.template {
        tpls.detach(t);
    }
}

#[allow(dead_code)]
fn _kinds(_: L3Kind) {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{build_snapshot, Config};
    use crate::shard::nexthop::{NextHop, StaticNeighbors};

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
