//! The immutable service table that shards read. The control plane builds a
//! whole new [`Snapshot`] from a validated config and publishes it with one
//! `ArcSwap::store`; shards load it once per batch.
//!
//! The maps read per packet ([`Classifier`], [`Snapshot::dest_index`]) are
//! `hashbrown` maps with its default hasher (foldhash): their keys come from
//! the config, not from packets, so they need no DoS-resistant SipHash, and
//! foldhash costs a fraction of it.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::control::config::HealthCheck;
use crate::model::{DestId, FwdMethod, Millis, Proto, ServiceIdx, ServiceKey, Timeouts};
use crate::shard::sched::Scheduler;

/// Persistence settings of a service (IPVS `-p timeout -M netmask`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persistence {
    pub timeout_ms: Millis,
    /// IPv4 netmask as a prefix length (255.255.255.0 -> 24).
    pub prefix4: u8,
    /// IPv6 prefix length (IPVS default 128).
    pub prefix6: u8,
}

/// One real server of one service, in one snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct Dest {
    pub id: DestId,
    pub addr: IpAddr,
    /// `None`: keep the packet's own destination port (persistent fwmark and
    /// port-0 services), as IPVS does with port 0.
    pub port: Option<u16>,
    pub weight: u32,
    pub fwd: FwdMethod,
    /// Upper connection threshold (0 = none), IPVS `-x`.
    pub u_threshold: u32,
    /// Lower threshold to leave overload (0 = 3/4 of upper), IPVS `-y`.
    pub l_threshold: u32,
}

/// One virtual service in one snapshot.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub key: ServiceKey,
    pub scheduler: Box<dyn Scheduler>,
    pub persistence: Option<Persistence>,
    pub dests: Vec<Dest>,
    /// IPVS sysctl `expire_nodest_conn`, per service here.
    pub expire_nodest_conn: bool,
    /// IPVS sysctl `expire_quiescent_template`, per service here.
    pub expire_quiescent_template: bool,
}

impl Service {
    /// The position and entry of a real server by id.
    pub fn dest_by_id(&self, id: DestId) -> Option<(usize, &Dest)> {
        self.dests.iter().enumerate().find(|(_, d)| d.id == id)
    }
}

/// A firewall-mark rule: traffic to `vip`, `proto` and a port in `ports`
/// carries `mark`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FwmarkRule {
    pub mark: u32,
    pub vip: IpAddr,
    pub proto: Proto,
    /// Inclusive port ranges.
    pub ports: Vec<(u16, u16)>,
}

/// An inclusive port range `(lo, hi)` of a firewall-mark rule and its mark.
pub type PortRangeMark = (u16, u16, u32);

/// Maps a packet's (proto, daddr, dport) to a service, in IPVS's order:
/// firewall marks first, then proto+VIP+port, then the proto+VIP port-0 service.
#[derive(Debug, Default)]
pub struct Classifier {
    /// (proto, vip) -> list of (lo, hi, mark); checked before anything else.
    pub fwmark_rules: hashbrown::HashMap<(Proto, IpAddr), Vec<PortRangeMark>>,
    pub by_mark: hashbrown::HashMap<u32, ServiceIdx>,
    pub by_addr: hashbrown::HashMap<(Proto, IpAddr, u16), ServiceIdx>,
}

impl Classifier {
    /// Returns the service index and the firewall mark the packet carries (if any).
    pub fn classify(&self, proto: Proto, daddr: IpAddr, dport: u16) -> Option<ServiceIdx> {
        if let Some(rules) = self.fwmark_rules.get(&(proto, daddr)) {
            for &(lo, hi, mark) in rules {
                if dport >= lo && dport <= hi {
                    if let Some(&s) = self.by_mark.get(&mark) {
                        return Some(s);
                    }
                }
            }
        }
        if let Some(&s) = self.by_addr.get(&(proto, daddr, dport)) {
            return Some(s);
        }
        self.by_addr.get(&(proto, daddr, 0)).copied()
    }
}

/// Everything a shard needs to decide about a packet, immutable.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one on every publish; shards rebuild their per-service
    /// state when it changes.
    pub generation: u64,
    pub services: Vec<Service>,
    pub classifier: Classifier,
    pub timeouts: Timeouts,
    /// Shard ownership mask: the shortest persistence prefix among services
    /// (IPv4 / IPv6), so a persistence group always maps to one shard.
    pub shard_prefix4: u8,
    pub shard_prefix6: u8,
    /// Every VIP (for the XDP filter) as (proto, address, port), fwmark
    /// port ranges expanded: sorted and deduplicated, binary-searched by the
    /// engine.
    pub vips: Vec<(Proto, IpAddr, u16)>,
    /// Every NAT real server address (its replies must come back through the
    /// director): sorted and deduplicated, binary-searched by the engine.
    pub nat_reals: Vec<IpAddr>,
    /// Source address for IPIP/GUE outer headers.
    pub tunnel_src4: Option<std::net::Ipv4Addr>,
    pub tunnel_src6: Option<std::net::Ipv6Addr>,
    /// GUE destination port on the real servers.
    pub gue_port: u16,
    /// DestId -> (service index, dest index) for this snapshot.
    pub dest_index: hashbrown::HashMap<DestId, (ServiceIdx, u32)>,
    /// The next never-used [`DestId`]; the builder takes new ids from here,
    /// so an id is never reused while snapshots are built from their
    /// predecessor.
    pub next_dest_id: u32,
    /// Resolved health checks of the real servers that have one (for the
    /// prober); real servers absent here are not checked.
    pub health: HashMap<DestId, HealthCheck>,
}

impl Snapshot {
    /// An empty snapshot (no services): everything passes to the kernel.
    pub fn empty() -> Snapshot {
        Snapshot {
            generation: 0,
            services: Vec::new(),
            classifier: Classifier::default(),
            timeouts: Timeouts::default(),
            shard_prefix4: 32,
            shard_prefix6: 128,
            vips: Vec::new(),
            nat_reals: Vec::new(),
            tunnel_src4: None,
            tunnel_src6: None,
            gue_port: 6080,
            dest_index: hashbrown::HashMap::new(),
            next_dest_id: 1,
            health: HashMap::new(),
        }
    }

    /// A real server and its service by id.
    pub fn dest(&self, id: DestId) -> Option<(&Service, &Dest)> {
        let &(s, d) = self.dest_index.get(&id)?;
        let svc = self.services.get(s as usize)?;
        Some((svc, svc.dests.get(d as usize)?))
    }
}
