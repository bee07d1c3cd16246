//! Connection sync, the engine's side (sans-IO): the items a shard queues
//! for its peers as its connections change ([`Outbox`]), and the entries it
//! receives from them ([`Engine::apply_sync`]).
//!
//! What is sent, and when (IPVS `ip_vs_sync_conn`, protocol v1):
//! - a TCP connection when it enters ESTABLISHED, FIN_WAIT, CLOSE,
//!   CLOSE_WAIT or TIME_WAIT; a UDP connection at its first packet;
//! - an established connection again every [`SyncSettings::period`]
//!   packets (counted per shard, see there);
//! - a connection's persistence template with it, before it; and a new
//!   (or rebound) template at once, when it is made, so that the client's
//!   next connection through another director finds it (IPVS buffers it
//!   with the rest, up to 2 s);
//! - nothing when a connection ends: peers let their copies time out, as
//!   IPVS backups do.
//!
//! Times travel as what is left: a peer expires its copy when this shard
//! would (IPVS sends the state's full timeout, which is the same thing at
//! the moment a packet re-arms it).

use std::sync::Arc;

use crate::service::model::{Millis, Proto, ServiceKey};
use crate::shard::conn::{Conn, ConnHandle};
use crate::shard::restart::{self, SavedConn, SavedTemplate};
use crate::shard::sync::{IgnoreReason, SyncCounters, SyncItem, SyncSettings};
use crate::shard::template::{TemplateKey, TplHandle};

use super::{Ctx, Engine};

/// A shard's queue towards its peers: bounded; what does not fit is counted
/// and lost (the peer keeps its older copy, the next update repairs it).
#[derive(Debug, Default)]
pub(super) struct Outbox {
    pub(super) settings: SyncSettings,
    count: u32,
    pub(super) items: Vec<SyncItem>,
}

/// At most this many items wait in a shard between two drains (the
/// runtime drains every millisecond while packets flow).
pub const OUTBOX_CAPACITY: usize = 16_384;

impl Outbox {
    /// One more established packet: is it this one's turn to re-send its
    /// connection?
    #[inline]
    pub(super) fn periodic(&mut self) -> bool {
        if !self.settings.send || self.settings.period == 0 {
            return false;
        }
        self.count += 1;
        if self.count >= self.settings.period {
            self.count = 0;
            return true;
        }
        false
    }
    fn push(&mut self, item: SyncItem, c: &mut SyncCounters) {
        if self.items.len() >= OUTBOX_CAPACITY {
            c.dropped += 1;
            return;
        }
        c.queued += 1;
        self.items.push(item);
    }
}

impl Ctx<'_> {
    /// Queue connection `h` (and its template first) for the peers.
    pub(super) fn sync_conn(&mut self, now: Millis, h: ConnHandle) {
        if !self.sync.settings.send {
            return;
        }
        let Some(c) = self.conns.get(h) else {
            return;
        };
        if let Some(t) = c.template {
            self.sync_template(now, t);
        }
        let fwmark = self
            .dests
            .get(&c.dest)
            .and_then(|d| d.at)
            .and_then(|(s, _)| self.snap.services.get(s as usize))
            .map_or(0, |svc| match svc.key {
                ServiceKey::Fwmark(m) => m,
                ServiceKey::Addr { .. } => 0,
            });
        let item = SyncItem::Conn {
            conn: saved_conn(&c, now),
            fwd: c.fwd,
            fwmark,
        };
        self.sync.push(item, &mut self.stats.sync);
    }

    /// Queue template `h` for the peers.
    pub(super) fn sync_template(&mut self, now: Millis, h: TplHandle) {
        if !self.sync.settings.send {
            return;
        }
        let Some(t) = self.tpls.get(h) else {
            return;
        };
        let fwd = self
            .snap
            .dest(t.dest)
            .map_or(crate::service::model::FwdMethod::Dr, |(_, d)| d.fwd);
        let item = SyncItem::Template {
            tpl: saved_template(t, now),
            fwd,
        };
        self.sync.push(item, &mut self.stats.sync);
    }
}

/// A connection as saved and synced.
pub(super) fn saved_conn(c: &Conn, now: Millis) -> SavedConn {
    SavedConn {
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
    }
}

/// A template as saved and synced.
pub(super) fn saved_template(t: &crate::shard::template::Template, now: Millis) -> SavedTemplate {
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
    SavedTemplate {
        fwmark,
        proto,
        client,
        vip,
        vport,
        raddr: t.raddr,
        rport: t.rport,
        left_ms: restart::left(t.expires(), now),
    }
}

impl Engine {
    /// What this shard sends: on, and how often established traffic is
    /// re-sent (from `[sync]`; applied by the runtime at start and reload).
    pub fn set_sync(&mut self, s: SyncSettings) {
        self.sync.settings = s;
        if !s.send {
            self.sync.items.clear();
        }
    }

    pub fn sync_settings(&self) -> SyncSettings {
        self.sync.settings
    }

    /// The items queued since the last call, oldest first.
    pub fn take_sync(&mut self, out: &mut Vec<SyncItem>) {
        out.append(&mut self.sync.items);
    }

    /// Apply one entry from a peer: create or update the connection or
    /// template it describes, checked against this director's services as
    /// a restored entry is. A connection to another real server than the
    /// one this shard has is moved to the peer's (the peer's is the newer
    /// decision). Nothing is sent back.
    pub fn apply_sync(&mut self, now: Millis, item: &SyncItem) -> Result<(), IgnoreReason> {
        self.stale_view();
        let r = match item {
            SyncItem::Template { tpl, .. } => self.put_template(now, tpl, true),
            SyncItem::Conn { conn, .. } => self.put_conn(now, conn, true),
        };
        match (&r, item) {
            (Ok(()), SyncItem::Template { .. }) => self.stats.sync.applied_templates += 1,
            (Ok(()), SyncItem::Conn { .. }) => self.stats.sync.applied_conns += 1,
            (Err(e), _) => {
                if let Some(n) = self.stats.sync.ignored.get_mut(*e as usize) {
                    *n += 1;
                }
            }
        }
        self.refresh_stats();
        r
    }

    /// Everything this shard holds, as items for a peer that asks for a
    /// full resync: templates first (connections attach to them).
    pub fn export_sync(&self, now: Millis) -> Vec<SyncItem> {
        let snap = Arc::clone(&self.snap);
        let mut out = Vec::with_capacity(self.tpls.len() + self.conns.len());
        self.tpls.for_each(|t| {
            let fwd = snap
                .dest(t.dest)
                .map_or(crate::service::model::FwdMethod::Dr, |(_, d)| d.fwd);
            out.push(SyncItem::Template {
                tpl: saved_template(t, now),
                fwd,
            });
        });
        self.conns.for_each(|_, c| {
            let fwmark = snap
                .dest(c.dest)
                .and_then(|_| self.dests.get(&c.dest))
                .and_then(|d| d.at)
                .and_then(|(s, _)| snap.services.get(s as usize))
                .map_or(0, |svc| match svc.key {
                    ServiceKey::Fwmark(m) => m,
                    ServiceKey::Addr { .. } => 0,
                });
            out.push(SyncItem::Conn {
                conn: saved_conn(c, now),
                fwd: c.fwd,
                fwmark,
            });
        });
        out
    }
}
