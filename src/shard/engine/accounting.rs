//! Per real server accounting in one shard: connection and packet counters,
//! active/inactive counts as connections change state or leave, overload
//! (thresholds), the scheduler's view of them, and the cached next hop.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::service::model::{DestId, FwdMethod, Millis, Proto};
use crate::service::snapshot::{Dest, Snapshot};
use crate::shard::conn::{Conn, ConnHandle};
use crate::shard::nexthop::{Neighbors, NextHop};
use crate::shard::tcp_state::{self, Dir};
use crate::shard::template::TemplateTable;

use super::{Ctx, Engine, SvcState};

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
/// One real server's state in this shard: its counters, and where it is in
/// the current snapshot (`None`: removed, kept while live state refers to it).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct DestSlot {
    pub(super) c: DestCounters,
    /// (service index, dest index) in the current snapshot: the same as
    /// `snap.dest_index[id]`, kept here so that a packet needs one lookup.
    pub(super) at: Option<(u32, u32)>,
    /// The next hop towards this real server, and the neighbour table
    /// version it came from ([`Neighbors::version`]): an established packet
    /// needs no route or neighbour lookup while the table is unchanged.
    pub(super) hop: Option<(u64, NextHop)>,
}
/// The next hop towards `raddr` (real server `d`'s address), through `d`'s
/// cache when the neighbour table allows caching.
#[inline(always)]
pub(super) fn cached_hop(d: &mut DestSlot, raddr: IpAddr, nh: &dyn Neighbors) -> Option<NextHop> {
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
/// Real server state by id (foldhash: ids come from the config).
pub(super) type DestMap = hashbrown::HashMap<DestId, DestSlot>;
/// [`Engine::dest_counters`] as a `std` map, built on demand; `keys` is the
/// value of `Engine::dest_keys` it was built for.
#[derive(Debug)]
pub(super) struct DestView {
    keys: u64,
    map: HashMap<DestId, DestCounters>,
}
/// Flag bit kept in the connection: it counts as active in the dest counters.
pub(super) const F_ACTIVE: u8 = 0x1;
/// Flag bit: the connection is counted in a dest's counters at all.
pub(super) const F_COUNTED: u8 = 0x2;
/// Flag bit: the connection's client -> service entry is in the flow cache.
pub(super) const F_OFF_IN: u8 = 0x4;
/// Flag bit: the connection's NAT reply entry is in the flow cache.
pub(super) const F_OFF_OUT: u8 = 0x8;

impl Engine {
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
    pub(super) fn stale_view(&mut self) {
        if let Some(v) = self.dest_view.take() {
            if let Ok(s) = self.spare_view.get_mut() {
                *s = Some(v);
            }
        }
    }
    pub(super) fn refresh_stats(&mut self) {
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
    /// The state of real server `id` (see [`slot_of`]).
    pub(super) fn slot(&mut self, id: DestId) -> &mut DestSlot {
        slot_of(self.dests, self.dest_keys, self.snap, id)
    }
    /// Update state/timer of an existing connection and keep the dest's
    /// active/inactive counts in step.
    #[inline]
    pub(super) fn touch_conn(&mut self, h: ConnHandle, c: &Conn, now: Millis, dir: Dir, flags: u8) {
        if c.proto == Proto::Tcp {
            let dir = if dir == Dir::Input && c.fwd != FwdMethod::Nat {
                Dir::InputOnly
            } else {
                dir
            };
            let Some((old, new)) = self.conns.update_tcp(h, now, dir, flags) else {
                return;
            };
            if (old != new && crate::shard::sync::state_is_synced(new))
                || (new == crate::shard::tcp_state::TcpState::Established && self.sync.periodic())
            {
                self.sync_conn(now, h);
            }
            // Out of ESTABLISHED (a FIN or RST crossed the engine): every
            // later packet must cross it too.
            if old != new && c.flags & super::offload::F_OFFLOADED != 0 {
                self.unload_conn(h, c);
            }
            if old != new && c.flags & F_COUNTED != 0 {
                let was = c.flags & F_ACTIVE != 0;
                // IPVS tcp_state_active_table: ESTABLISHED and the
                // handshake states count as active (lc/wlc/sed/nq).
                let is = tcp_state::is_active(new);
                if was != is {
                    // Offload bits as `unload_conn` may just have left them.
                    let base = if old != new {
                        c.flags & !super::offload::F_OFFLOADED
                    } else {
                        c.flags
                    };
                    let f = if is {
                        base | F_ACTIVE
                    } else {
                        base & !F_ACTIVE
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
            if self.sync.periodic() {
                self.sync_conn(now, h);
            }
        }
    }
    pub(super) fn remove_conn(&mut self, h: ConnHandle) {
        if let Some(c) = self.conns.remove(h) {
            release_conn(self.dests, self.tpls, self.off, &c);
            self.sync_stat(c.dest);
        }
    }
    /// Mirror a dest's live counts into the scheduler's view.
    pub(super) fn sync_stat(&mut self, id: DestId) {
        if let Some(d) = self.dests.get_mut(&id) {
            sync_slot(self.snap, self.svc, d);
        }
    }
}

/// The state of real server `id`, created at its first connection in this
/// shard (a server with no slot counts zero).
#[inline]
pub(super) fn slot_of<'d>(
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
/// Mirror a dest's live counts into the scheduler's view (and update its
/// overload state), if it is in the snapshot.
#[inline]
pub(super) fn sync_slot(snap: &Snapshot, svc: &mut [SvcState], d: &mut DestSlot) {
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
/// IPVS overload rule: overloaded at `u_threshold` connections, back below
/// `l_threshold` (default 3/4 of upper).
pub(super) fn update_overload(c: &mut DestCounters, d: &Dest) {
    if d.u_threshold == 0 {
        c.overloaded = false;
        return;
    }
    let n = c.active.saturating_add(c.inactive);
    if n >= d.u_threshold {
        c.overloaded = true;
    } else {
        let low = if d.l_threshold != 0 {
            d.l_threshold
        } else {
            // 3/4 of the upper threshold, computed wide: `u * 3` overflows
            // u32 for thresholds above 1,431,655,765, which are valid.
            (u64::from(d.u_threshold) * 3 / 4) as u32
        };
        if n < low.max(1) || (c.overloaded && n < low) {
            c.overloaded = false;
        }
    }
}
/// Account for a connection leaving the table (expired, evicted or
/// removed), and take its flow-cache entries back.
pub(super) fn release_conn(
    dests: &mut DestMap,
    tpls: &mut TemplateTable,
    off: &mut crate::shard::offload::Offload,
    c: &Conn,
) {
    super::offload::unload(off, c);
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
