//! A shard's connections and templates across a restart or an upgrade:
//! [`Engine::export`] when the director stops, [`Engine::restore`] (checked
//! against the current snapshot) when it starts.

use std::sync::Arc;

use crate::service::model::{FlowKey, Millis, Proto, ServiceKey};
use crate::shard::conn::NewConn;
use crate::shard::restart::{self, RestoreStats, SavedConn, SavedTemplate, ShardState};
use crate::shard::tcp_state::{self, TcpState};
use crate::shard::template::TemplateKey;

use super::accounting::{release_conn, slot_of, F_ACTIVE, F_COUNTED};
use super::schedule::{dest_port, template_key};
use super::Engine;

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
