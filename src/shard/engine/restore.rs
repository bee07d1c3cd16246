//! A shard's connections and templates across a restart or an upgrade:
//! [`Engine::export`] when the director stops, [`Engine::restore`] (checked
//! against the current snapshot) when it starts. The same per-entry checks
//! apply what a peer director syncs (`sync.rs`).

use std::sync::Arc;

use crate::service::model::{FlowKey, Millis, Proto, ServiceKey};
use crate::shard::conn::NewConn;
use crate::shard::restart::{RestoreStats, SavedConn, SavedTemplate, ShardState};
use crate::shard::sync::IgnoreReason;
use crate::shard::tcp_state::{self, TcpState};
use crate::shard::template::TemplateKey;

use super::accounting::{release_conn, slot_of, F_ACTIVE, F_COUNTED};
use super::offload::{unload, F_OFFLOADED};
use super::schedule::{dest_port, template_key};
use super::sync::{saved_conn, saved_template};
use super::Engine;

/// Saving and restoring state across a restart (see [`crate::shard::restart`]).
impl Engine {
    /// This shard's connections and templates with the time they have left.
    pub fn export(&self, now: Millis) -> ShardState {
        let mut out = ShardState::default();
        self.conns
            .for_each(|_, c| out.conns.push(saved_conn(c, now)));
        self.tpls
            .for_each(|t| out.templates.push(saved_template(t, now)));
        out
    }
    /// Restore saved entries that still make sense under the current
    /// snapshot: the service must exist, the real server must still be one
    /// of its real servers, and time must be left. Templates first, so
    /// restored connections attach to them (and keep them alive).
    pub fn restore(&mut self, now: Millis, st: &ShardState) -> RestoreStats {
        self.stale_view();
        let mut r = RestoreStats::default();
        for t in &st.templates {
            match self.put_template(now, t, false) {
                Ok(()) => r.templates += 1,
                Err(IgnoreReason::Expired) => r.expired += 1,
                Err(_) => r.stale += 1,
            }
        }
        for c in &st.conns {
            match self.put_conn(now, c, false) {
                Ok(()) => r.conns += 1,
                Err(IgnoreReason::Expired) => r.expired += 1,
                Err(_) => r.stale += 1,
            }
        }
        self.refresh_stats();
        r
    }

    /// Create (or with `update`, also update) the template `t` describes.
    pub(super) fn put_template(
        &mut self,
        now: Millis,
        t: &SavedTemplate,
        update: bool,
    ) -> Result<(), IgnoreReason> {
        if t.left_ms == 0 {
            return Err(IgnoreReason::Expired);
        }
        let snap = Arc::clone(&self.snap);
        let key = match (t.fwmark, Proto::from_number(t.proto), t.vip) {
            (Some(mark), _, _) => (
                ServiceKey::Fwmark(mark),
                TemplateKey::Fwmark {
                    client_masked: t.client,
                    mark,
                },
            ),
            (None, Some(proto), Some(vip)) => {
                let skey = |port| ServiceKey::Addr { proto, vip, port };
                let svc_port = if snap.services.iter().any(|s| s.key == skey(t.vport)) {
                    t.vport
                } else {
                    0
                };
                (
                    skey(svc_port),
                    TemplateKey::Addr {
                        proto,
                        client_masked: t.client,
                        vip,
                        vport: t.vport,
                    },
                )
            }
            _ => return Err(IgnoreReason::Unsupported),
        };
        let (skey, tkey) = key;
        let svc = snap
            .services
            .iter()
            .find(|s| s.key == skey)
            .ok_or(IgnoreReason::NoService)?;
        if svc.persistence.is_none() {
            return Err(IgnoreReason::NoDest);
        }
        let d = svc
            .reals()
            .iter()
            .find(|d| d.addr == t.raddr && d.port == t.rport)
            .ok_or(IgnoreReason::NoDest)?;
        if update {
            if let Some(h) = self.tpls.lookup(&tkey) {
                let old = self.tpls.get(h).map(|x| x.dest);
                if old != Some(d.id) {
                    if let Some(o) = old.and_then(|o| self.dests.get_mut(&o)) {
                        o.c.persist = o.c.persist.saturating_sub(1);
                    }
                    if let Some(x) = self.tpls.get_mut(h) {
                        x.dest = d.id;
                        x.raddr = d.addr;
                        x.rport = d.port;
                    }
                    slot_of(&mut self.dests, &mut self.dest_keys, &snap, d.id)
                        .c
                        .persist += 1;
                }
                self.tpls.rearm(h, now, t.left_ms);
                return Ok(());
            }
        }
        self.tpls
            .insert(now, tkey, d.id, d.addr, d.port, t.left_ms)
            .map_err(|_| IgnoreReason::TableFull)?;
        slot_of(&mut self.dests, &mut self.dest_keys, &snap, d.id)
            .c
            .persist += 1;
        Ok(())
    }

    /// Create (or with `update`, also update) the connection `c` describes,
    /// under its template when this shard has one.
    pub(super) fn put_conn(
        &mut self,
        now: Millis,
        c: &SavedConn,
        update: bool,
    ) -> Result<(), IgnoreReason> {
        if c.left_ms == 0 {
            return Err(IgnoreReason::Expired);
        }
        let proto = Proto::from_number(c.proto).ok_or(IgnoreReason::Unsupported)?;
        let snap = Arc::clone(&self.snap);
        let svc = snap
            .classifier
            .classify(proto, c.vaddr, c.vport)
            .and_then(|i| snap.services.get(i as usize))
            .ok_or(IgnoreReason::NoService)?;
        let d = svc
            .dests
            .iter()
            .find(|d| d.addr == c.raddr && dest_port(d, c.vport) == c.rport)
            .ok_or(IgnoreReason::NoDest)?;
        let key = FlowKey {
            proto,
            src: c.caddr,
            dst: c.vaddr,
            sport: c.cport,
            dport: c.vport,
        };
        let state = TcpState::from_index(c.state).unwrap_or(TcpState::Established);
        let active = proto == Proto::Tcp && tcp_state::is_active(state);
        if update {
            if let Some(h) = self.conns.lookup_in(&key) {
                match self.conns.get(h) {
                    Some(old) if old.dest == d.id => {
                        self.conns.restore(h, now, state, c.left_ms);
                        let mut f = old.flags;
                        // A TCP connection the peer saw leave ESTABLISHED
                        // (its FIN or RST crossed the other director) no
                        // longer takes this director's fast path.
                        if proto == Proto::Tcp
                            && state != TcpState::Established
                            && f & F_OFFLOADED != 0
                        {
                            unload(&mut self.off, &old);
                            f &= !F_OFFLOADED;
                        }
                        let was = old.flags & F_ACTIVE != 0;
                        if was != active && old.flags & F_COUNTED != 0 {
                            f = if active { f | F_ACTIVE } else { f & !F_ACTIVE };
                            let dc =
                                &mut slot_of(&mut self.dests, &mut self.dest_keys, &snap, d.id).c;
                            if active {
                                dc.active += 1;
                                dc.inactive = dc.inactive.saturating_sub(1);
                            } else {
                                dc.inactive += 1;
                                dc.active = dc.active.saturating_sub(1);
                            }
                        }
                        if f != old.flags {
                            self.conns.set_flags(h, f);
                        }
                        return Ok(());
                    }
                    _ => {
                        // Another real server here: the peer's decision
                        // replaces it.
                        if let Some(old) = self.conns.remove(h) {
                            release_conn(&mut self.dests, &mut self.tpls, &mut self.off, &old);
                        }
                    }
                }
            }
        }
        let tpl = svc.persistence.and_then(|p| {
            self.tpls
                .lookup(&template_key(svc.key, &p, c.caddr, c.vport))
        });
        let mut nc = NewConn::from_key(&key, d.addr, c.rport, d.id, d.fwd);
        nc.template = tpl;
        nc.flags = F_COUNTED | if active { F_ACTIVE } else { 0 };
        let ins = self
            .conns
            .insert(now, nc)
            .map_err(|_| IgnoreReason::TableFull)?;
        if let Some(ev) = ins.evicted {
            release_conn(&mut self.dests, &mut self.tpls, &mut self.off, &ev);
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
        Ok(())
    }
}
