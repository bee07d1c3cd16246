//! Flow offload as the engine sees it (sans-IO): which established flows it
//! hands to the XDP program's flow cache, and when it takes them back.
//!
//! The engine stays the only authority. It queues an [`OffloadCmd::Install`]
//! when it forwards a packet of a connection that may take the fast path
//! (TCP in ESTABLISHED, or UDP; DR, NAT, IPIP or GUE; untagged frames are the
//! XDP side's concern), one per direction (NAT replies have their own entry), and an
//! [`OffloadCmd::Remove`] whenever the connection leaves the table (closed,
//! expired, evicted, removed), leaves ESTABLISHED, or its real server leaves
//! the snapshot. The runtime carries the commands out in batches (the
//! shard adapter) and tells the engine which installs the cache refused and
//! which removals found an entry. What the fast path forwards is counted
//! per real server by the XDP program (`dest_map`) and added to the
//! engine's counters by the control loop, not folded into the engine.
//!
//! Before a connection with an entry expires, the engine asks a
//! [`FastPathSeen`] when the fast path last forwarded one of its packets and
//! re-arms the timer from there, so IPVS's timeouts hold as if every packet
//! had crossed the engine.

use std::net::IpAddr;

use crate::service::model::{DestId, Millis};
use crate::shard::nexthop::NextHop;
use crate::wire::flow::FlowKey;

/// How the XDP program rewrites a packet of the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowAction {
    /// Direct routing: new MACs only.
    Dr,
    /// NAT towards the real server: destination becomes `addr:port`.
    Dnat { addr: IpAddr, port: u16 },
    /// NAT reply towards the client: source becomes `addr:port`.
    Snat { addr: IpAddr, port: u16 },
    /// IP-in-IP: an outer IPv4/IPv6 header `src -> dst` is pushed
    /// ([`crate::shard::forward::ipip`]).
    Ipip { src: IpAddr, dst: IpAddr },
    /// GUE: outer IP `src -> dst` and UDP `sport -> dport` are pushed
    /// ([`crate::shard::forward::gue`]; `sport` is the flow's
    /// [`crate::shard::forward::flow_hash_port`]).
    Gue {
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
    },
}

/// One flow-cache entry: the flow as it arrives and how to forward it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffloadEntry {
    /// The 5-tuple of arriving packets.
    pub key: FlowKey,
    /// The real server (counters).
    pub dest: DestId,
    /// A NAT reply (real server -> client) rather than client -> service.
    pub reply: bool,
    pub action: FlowAction,
    /// MACs, way out and MTU.
    pub hop: NextHop,
}

/// What the engine asks of the flow cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffloadCmd {
    Install(OffloadEntry),
    /// Remove the entry of `key`; what the fast path counted on it belongs
    /// to `dest` (`reply`: output direction).
    Remove {
        key: FlowKey,
        dest: DestId,
        reply: bool,
    },
}

/// When the fast path last forwarded a packet of a flow, if it did.
pub trait FastPathSeen {
    /// The monotonic time (ms, the engine's clock) of the last packet the
    /// fast path forwarded on the entry of `key`, or `None` (no entry, or
    /// it never forwarded one).
    fn last_seen(&self, key: &FlowKey) -> Option<Millis>;
}

/// No fast path: nothing was ever forwarded outside the engine.
pub struct NoFastPath;

impl FastPathSeen for NoFastPath {
    fn last_seen(&self, _key: &FlowKey) -> Option<Millis> {
        None
    }
}

/// Counters of the engine's side of the offload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffloadStats {
    /// Entries asked to be installed.
    pub installs: u64,
    /// Entries asked to be removed.
    pub removes: u64,
    /// Installs the flow cache refused (full): those flows stay on the
    /// AF_XDP path.
    pub install_failed: u64,
    /// Removals that found an entry in the cache.
    pub removed: u64,
}

impl OffloadStats {
    /// Entries in the cache now: installed, not refused, not removed.
    pub fn live(&self) -> u64 {
        self.installs
            .saturating_sub(self.install_failed)
            .saturating_sub(self.removed)
    }
}

/// The engine's queue of commands, bounded: when the runtime does not take
/// them (no fast path), nothing is queued at all.
#[derive(Debug, Default)]
pub struct Offload {
    pub(crate) on: bool,
    pub(crate) cmds: Vec<OffloadCmd>,
    pub stats: OffloadStats,
}

/// Most commands queued between two [`crate::shard::engine::Engine::take_offload`]
/// calls; beyond, installs are skipped (the flow stays on the AF_XDP path).
pub const MAX_QUEUED: usize = 4_096;

impl Offload {
    pub(crate) fn install(&mut self, e: OffloadEntry) -> bool {
        if !self.on || self.cmds.len() >= MAX_QUEUED {
            return false;
        }
        self.stats.installs += 1;
        self.cmds.push(OffloadCmd::Install(e));
        true
    }

    /// Removals are always queued (an entry must never outlive its
    /// connection), even past [`MAX_QUEUED`].
    pub(crate) fn remove(&mut self, key: FlowKey, dest: DestId, reply: bool) {
        self.stats.removes += 1;
        self.cmds.push(OffloadCmd::Remove { key, dest, reply });
    }
}
