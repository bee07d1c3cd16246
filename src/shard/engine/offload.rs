//! The engine's side of flow offload (see [`crate::shard::offload`]): an
//! established connection's entry is installed after one of its packets
//! went out, and taken back whenever the connection may no longer be
//! forwarded without the engine.

use std::net::IpAddr;

use crate::service::model::{FwdMethod, Millis, Proto};
use crate::shard::conn::{Conn, ConnHandle};
use crate::shard::forward;
use crate::shard::nexthop::NextHop;
use crate::shard::offload::{FastPathSeen, FlowAction, Offload, OffloadCmd, OffloadEntry};
use crate::shard::tcp_state::TcpState;
use crate::shard::verdict::Verdict;

use super::accounting::{F_OFF_IN, F_OFF_OUT};
use super::{Ctx, Engine};

/// Both offload bits.
pub(super) const F_OFFLOADED: u8 = F_OFF_IN | F_OFF_OUT;

/// May a connection in this state take the fast path? TCP only while
/// ESTABLISHED (every other transition needs a SYN, FIN or RST, which the
/// fast path never forwards, or a timer); UDP always.
fn offloadable(c: &Conn) -> bool {
    match c.proto {
        Proto::Udp => true,
        Proto::Tcp => c.state == TcpState::Established,
    }
}

/// Queue the removal of the entries `c` has.
pub(super) fn unload(off: &mut Offload, c: &Conn) {
    if c.flags & F_OFF_IN != 0 {
        off.remove(c.in_key(), c.dest, false);
    }
    if c.flags & F_OFF_OUT != 0 {
        off.remove(c.out_key(), c.dest, true);
    }
}

impl Ctx<'_> {
    /// After a packet of connection `h` went out (`v`) towards `hop`:
    /// install the connection's entry for this direction (`reply`: a NAT
    /// reply) if it has none and may take the fast path.
    #[inline]
    pub(super) fn offload_after(
        &mut self,
        v: Verdict,
        h: ConnHandle,
        reply: bool,
        hop: Option<NextHop>,
    ) {
        if !self.off.on {
            return;
        }
        self.offload_slow(v, h, reply, hop);
    }

    #[inline(never)]
    fn offload_slow(&mut self, v: Verdict, h: ConnHandle, reply: bool, hop: Option<NextHop>) {
        // Forward (not Hold): the hop given is the one the frame went to.
        let (Verdict::Forward { .. }, Some(hop)) = (v, hop) else {
            return;
        };
        let Some(c) = self.conns.get(h) else {
            return;
        };
        let bit = if reply { F_OFF_OUT } else { F_OFF_IN };
        if c.flags & bit != 0 || !offloadable(&c) {
            return;
        }
        let action = match (c.fwd, reply) {
            (FwdMethod::Dr, false) => FlowAction::Dr,
            (FwdMethod::Nat, false) => FlowAction::Dnat {
                addr: c.raddr,
                port: c.rport,
            },
            (FwdMethod::Nat, true) => FlowAction::Snat {
                addr: c.vaddr,
                port: c.vport,
            },
            (FwdMethod::Ipip | FwdMethod::Gue, false) => {
                // The outer header exactly as `transmit_hop` pushes it.
                let src = match c.raddr {
                    IpAddr::V4(_) => self.snap.tunnel_src4.map(IpAddr::V4),
                    IpAddr::V6(_) => self.snap.tunnel_src6.map(IpAddr::V6),
                };
                let Some(src) = src else {
                    return;
                };
                if c.fwd == FwdMethod::Ipip {
                    FlowAction::Ipip { src, dst: c.raddr }
                } else {
                    let k = c.in_key();
                    FlowAction::Gue {
                        src,
                        dst: c.raddr,
                        sport: forward::hash_port(k.src, k.dst, k.proto.number(), k.sport, k.dport),
                        dport: self.snap.gue_port,
                    }
                }
            }
            // DR and tunnels have no replies through the director.
            _ => return,
        };
        if self.dests.get(&c.dest).is_none_or(|d| d.at.is_none()) {
            return;
        }
        let entry = OffloadEntry {
            key: if reply { c.out_key() } else { c.in_key() },
            dest: c.dest,
            reply,
            action,
            hop,
        };
        if self.off.install(entry) {
            self.conns.set_flags(h, c.flags | bit);
        }
    }

    /// Take back the entries of connection `h` (it left ESTABLISHED).
    pub(super) fn unload_conn(&mut self, h: ConnHandle, c: &Conn) {
        if c.flags & F_OFFLOADED == 0 {
            return;
        }
        unload(self.off, c);
        self.conns.set_flags(h, c.flags & !F_OFFLOADED);
    }
}

impl Engine {
    /// Turn the offload on or off (`[director] fast_path`). Turning it off
    /// takes every entry back.
    pub fn set_offload(&mut self, on: bool) {
        if self.off.on == on {
            return;
        }
        self.off.on = on;
        if !on {
            self.unload_where(|_| true);
        }
    }

    /// Whether the engine offloads established connections.
    pub fn offload_on(&self) -> bool {
        self.off.on
    }

    /// Move the queued install and remove commands into `out` (which keeps
    /// its capacity between calls).
    pub fn take_offload(&mut self, out: &mut Vec<OffloadCmd>) {
        out.append(&mut self.off.cmds);
    }

    /// A removal found its entry in the cache (what the fast path counted
    /// stays in the per-real server counters of the XDP side).
    pub fn offload_removed(&mut self) {
        self.off.stats.removed += 1;
    }

    /// The offload's counters.
    pub fn offload_stats(&self) -> crate::shard::offload::OffloadStats {
        self.off.stats
    }

    /// The runtime could not install an entry (the flow cache is full):
    /// the connection stays on the AF_XDP path, counted. Its flag stays
    /// set, which costs one failed removal later and nothing else (the
    /// expiry asks the cache, finds nothing, and expires as usual).
    pub fn offload_refused(&mut self) {
        self.off.stats.install_failed += 1;
    }

    /// Remove the entries of every offloaded connection `pred` selects.
    pub(super) fn unload_where(&mut self, mut pred: impl FnMut(&Conn) -> bool) {
        let mut hit: Vec<(ConnHandle, Conn)> = Vec::new();
        self.conns.for_each(|h, c| {
            if c.flags & F_OFFLOADED != 0 && pred(c) {
                hit.push((h, *c));
            }
        });
        for (h, c) in hit {
            unload(&mut self.off, &c);
            self.conns.set_flags(h, c.flags & !F_OFFLOADED);
        }
    }

    /// [`Engine::tick`], asking `seen` before a connection with an entry
    /// expires when the fast path last forwarded one of its packets.
    ///
    /// A connection re-armed that way is sent to the sync peers again: its
    /// packets no longer cross the engine, so neither its state changes nor
    /// the periodic re-sends ([`crate::shard::sync::SyncSettings::period`])
    /// would tell a backup it is alive, and the backup's copy would expire
    /// while the flow goes on (IPVS re-sends a connection whose timer was
    /// refreshed, `sync_refresh_period`).
    pub fn tick_seen(&mut self, now: Millis, seen: &dyn FastPathSeen) {
        let mut rearmed: Vec<crate::service::model::FlowKey> = Vec::new();
        let syncing = self.sync.settings.send;
        self.tick_with(now, &mut |c: &Conn| {
            if c.flags & F_OFF_IN == 0 && c.flags & F_OFF_OUT == 0 {
                return None;
            }
            let a = (c.flags & F_OFF_IN != 0)
                .then(|| seen.last_seen(&c.in_key()))
                .flatten();
            let b = (c.flags & F_OFF_OUT != 0)
                .then(|| seen.last_seen(&c.out_key()))
                .flatten();
            let last = a.max(b);
            if syncing && last.is_some() {
                rearmed.push(c.in_key());
            }
            last
        });
        if rearmed.is_empty() {
            return;
        }
        let mut ctx = self.ctx();
        for key in rearmed {
            // Still there and still running: it was re-armed.
            let Some(h) = ctx.conns.lookup_in(&key) else {
                continue;
            };
            if ctx.conns.get(h).is_some_and(|c| c.expires > now) {
                ctx.sync_conn(now, h);
            }
        }
    }
}
