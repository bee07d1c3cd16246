//! A new connection: the persistence template's choice (IPVS
//! `ip_vs_check_template`: valid, rebound or new), else the service's
//! scheduler, then the connection's insertion with its first packet counted.

use std::net::IpAddr;

use crate::service::model::{mask_addr, DestId, FlowKey, FwdMethod, Millis, Proto, ServiceKey};
use crate::service::sched::SchedKey;
use crate::service::snapshot::{Dest, Persistence, Service};
use crate::shard::conn::{ConnHandle, InsertError, NewConn};
use crate::shard::nexthop::{Neighbors, NextHop};
use crate::shard::tcp_state::{self, Dir};
use crate::shard::template::{TemplateKey, TplHandle};
use crate::shard::verdict::{DropReason, Verdict};
use crate::wire::PacketInfo;

use super::accounting::{cached_hop, release_conn, slot_of, sync_slot, F_ACTIVE, F_COUNTED};
use super::{Ctx, Target};

/// What [`Ctx::new_conn`] found.
pub(super) enum NewTarget {
    /// A new connection (its first packet counted), the next hop to its
    /// real server (through the real server's cache), and its handle.
    New(Target, Option<NextHop>, ConnHandle),
    /// The connection exists (nothing counted).
    Existing(Target),
}
impl Ctx<'_> {
    /// Schedule a new connection (through the persistence template when the
    /// service is persistent) and insert it, with the first packet applied
    /// (state, and the real server's counters including the packet: `New`);
    /// or find that it exists (`Existing`: the packet is not counted yet).
    pub(super) fn new_conn(
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
        // A template made or rebound for this connection goes to the peers
        // at once (a UDP connection takes it along itself).
        let mut tpl_new = false;
        let dest_idx = match svc.persistence {
            Some(p) => {
                let tkey = template_key(svc.key, &p, key.src, key.dport);
                // The scheduler sees the client group (the template's
                // masked address), not the one client: a hashing scheduler
                // (sh, mh, dh) then gives a whole group one server, and
                // every director with the same config the same one, even
                // before the group's template reaches it (IPVS hashes the
                // first client of the group, which depends on who came
                // first).
                let group = FlowKey {
                    src: match tkey {
                        TemplateKey::Fwmark { client_masked, .. }
                        | TemplateKey::Addr { client_masked, .. } => client_masked,
                    },
                    ..*key
                };
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
                                let Some(i) = self.schedule(svc_idx, svc, &group) else {
                                    // IPVS unhashes an invalid template in
                                    // any case: forget it now unless live
                                    // connections still refer to it.
                                    if t.controls() == 0 && self.tpls.remove(h).is_some() {
                                        if let Some(d) = self.dests.get_mut(&t.dest) {
                                            d.c.persist = d.c.persist.saturating_sub(1);
                                        }
                                    }
                                    // No real server: the sorry server, if
                                    // any, without a template.
                                    let Some(i) = sorry_idx(svc) else {
                                        return Err(self.drop(DropReason::NoDest));
                                    };
                                    return self.insert_new(now, key, svc, info, nh, i, None, None);
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
                                tpl_new = true;
                            }
                        }
                    }
                }
                let i = match chosen {
                    Some(i) => i,
                    None => {
                        let Some(i) = self.schedule(svc_idx, svc, &group) else {
                            // No real server: the sorry server, if any,
                            // without a template (the client group comes
                            // back to a real server as soon as one can
                            // take it).
                            let Some(i) = sorry_idx(svc) else {
                                return Err(self.drop(DropReason::NoDest));
                            };
                            return self.insert_new(now, key, svc, info, nh, i, None, None);
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
                                tpl_new = true;
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
            None => match self.schedule(svc_idx, svc, key).or_else(|| sorry_idx(svc)) {
                Some(i) => i,
                None => return Err(self.drop(DropReason::NoDest)),
            },
        };
        if tpl_new && key.proto == Proto::Tcp {
            if let Some(h) = tpl {
                self.sync_template(now, h);
            }
        }
        self.insert_new(now, key, svc, info, nh, dest_idx, tpl, persist_for)
    }

    /// Insert the new connection to `svc.dests[dest_idx]` (under template
    /// `tpl`, whose `persist` count goes to `persist_for`) with its first
    /// packet counted.
    #[allow(clippy::too_many_arguments)]
    fn insert_new(
        &mut self,
        now: Millis,
        key: &FlowKey,
        svc: &Service,
        info: &PacketInfo,
        nh: &dyn Neighbors,
        dest_idx: usize,
        tpl: Option<TplHandle>,
        persist_for: Option<DestId>,
    ) -> Result<NewTarget, Verdict> {
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
            release_conn(self.dests, self.tpls, self.off, &ev);
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
                if old != new && crate::shard::sync::state_is_synced(new) {
                    self.sync_conn(now, h);
                }
            }
        } else {
            // UDP: its first packet (IPVS sends at `sync_threshold`
            // packets; a shard keeps no per-connection count).
            self.sync_conn(now, h);
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
            h,
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
        (i < svc.reals().len()).then_some(i)
    }
}

/// The sorry server's position in `svc.dests`, if the service has one.
fn sorry_idx(svc: &Service) -> Option<usize> {
    svc.sorry.then(|| svc.dests.len().checked_sub(1)).flatten()
}

/// The persistence template of a connection from `client` to virtual port
/// `vport` of service `skey`, keyed as IPVS keys templates: firewall-mark
/// services by `<client/mask, mark>` (protocol, VIP and port drop out, so
/// every port of the mark shares one template); address services by
/// `<proto, client/mask, VIP, vport>`, with `vport` 0 for a port-0 service.
/// The one place a template key is built (new connections, restore).
pub(super) fn template_key(
    skey: ServiceKey,
    p: &Persistence,
    client: IpAddr,
    vport: u16,
) -> TemplateKey {
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
/// The real server port for a packet: the configured one, or the packet's own
/// destination port when the real server has none (fwmark / port-0 services).
pub(super) fn dest_port(d: &Dest, packet_dport: u16) -> u16 {
    match d.port {
        Some(p) if p != 0 => p,
        _ => packet_dport,
    }
}
