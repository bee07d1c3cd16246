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

use crate::service::health::HealthCheck;
use crate::service::model::{DestId, FwdMethod, Millis, Proto, ServiceIdx, ServiceKey, Timeouts};
use crate::service::sched::Scheduler;

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
    /// The real servers, then the sorry server when `sorry` is set. Only
    /// the real servers ([`Service::reals`]) are scheduled; listings,
    /// counters, the XDP maps and next-hop resolution see them all.
    pub dests: Vec<Dest>,
    /// The last entry of `dests` is the sorry server: new connections go
    /// there when the scheduler finds no real server that can take one
    /// (keepalived `sorry_server`). It never gets a persistence template.
    pub sorry: bool,
    /// IPVS sysctl `expire_nodest_conn`, per service here.
    pub expire_nodest_conn: bool,
    /// IPVS sysctl `expire_quiescent_template`, per service here.
    pub expire_quiescent_template: bool,
}

impl Service {
    /// The position and entry of a real server by id (the sorry server
    /// is not a real server: not found here).
    pub fn dest_by_id(&self, id: DestId) -> Option<(usize, &Dest)> {
        self.reals().iter().enumerate().find(|(_, d)| d.id == id)
    }

    /// The real servers the scheduler chooses from (`dests` without the
    /// sorry server).
    pub fn reals(&self) -> &[Dest] {
        let n = self.dests.len() - usize::from(self.sorry && !self.dests.is_empty());
        self.dests.get(..n).unwrap_or(&[])
    }

    /// The sorry server, if the service has one.
    pub fn sorry_server(&self) -> Option<&Dest> {
        if self.sorry {
            self.dests.last()
        } else {
            None
        }
    }

    /// Is `id` this service's sorry server?
    pub fn is_sorry(&self, id: DestId) -> bool {
        self.sorry_server().is_some_and(|d| d.id == id)
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
///
/// The three maps are the classifier's definition; [`Classifier::classify`]
/// reads an index of them built by [`Classifier::finish`] (one hash lookup
/// per packet instead of two or three). Call `finish` after changing the
/// maps (`build_snapshot` does); until the first call, `classify` reads the
/// maps themselves.
#[derive(Debug, Default)]
pub struct Classifier {
    /// (proto, vip) -> list of (lo, hi, mark); checked before anything else.
    pub fwmark_rules: hashbrown::HashMap<(Proto, IpAddr), Vec<PortRangeMark>>,
    pub by_mark: hashbrown::HashMap<u32, ServiceIdx>,
    pub by_addr: hashbrown::HashMap<(Proto, IpAddr, u16), ServiceIdx>,
    /// The maps by (proto, vip), as `finish` last saw them.
    index: Option<hashbrown::HashMap<(Proto, IpAddr), VipClass>>,
}

/// Everything the classifier knows about one (proto, vip).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct VipClass {
    /// Firewall-mark ranges whose mark has a service, in rule order:
    /// (lo, hi, service).
    marks: Vec<(u16, u16, ServiceIdx)>,
    /// Services with a port (not 0), sorted by port.
    ports: Vec<(u16, ServiceIdx)>,
    /// The port-0 service.
    any: Option<ServiceIdx>,
}

impl Classifier {
    /// Returns the index of the service of a packet to `daddr:dport`.
    #[inline]
    pub fn classify(&self, proto: Proto, daddr: IpAddr, dport: u16) -> Option<ServiceIdx> {
        let Some(index) = &self.index else {
            return self.classify_maps(proto, daddr, dport);
        };
        let v = index.get(&(proto, daddr))?;
        for &(lo, hi, s) in &v.marks {
            if dport >= lo && dport <= hi {
                return Some(s);
            }
        }
        if let Ok(i) = v.ports.binary_search_by_key(&dport, |&(p, _)| p) {
            return v.ports.get(i).map(|&(_, s)| s);
        }
        v.any
    }

    /// [`Classifier::classify`] from the maps (the definition).
    fn classify_maps(&self, proto: Proto, daddr: IpAddr, dport: u16) -> Option<ServiceIdx> {
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

    /// (Re)build the index `classify` reads from the maps.
    pub fn finish(&mut self) {
        let mut index: hashbrown::HashMap<(Proto, IpAddr), VipClass> = hashbrown::HashMap::new();
        for (&(proto, vip), rules) in &self.fwmark_rules {
            let marks = rules
                .iter()
                .filter_map(|&(lo, hi, mark)| Some((lo, hi, *self.by_mark.get(&mark)?)))
                .collect::<Vec<_>>();
            if !marks.is_empty() {
                index.entry((proto, vip)).or_default().marks = marks;
            }
        }
        for (&(proto, vip, port), &s) in &self.by_addr {
            let v = index.entry((proto, vip)).or_default();
            if port == 0 {
                v.any = Some(s);
            } else {
                v.ports.push((port, s));
            }
        }
        for v in index.values_mut() {
            v.ports.sort_unstable();
        }
        self.index = Some(index);
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
    /// IPVS `conn_reuse_mode` (0-3).
    pub conn_reuse_mode: u8,
    /// IPVS `sloppy_tcp`: a TCP packet other than a SYN (and not a RST) may
    /// open a connection.
    pub sloppy_tcp: bool,
    /// `[director] fast_path`: established DR/NAT flows are offloaded to
    /// the XDP program's flow cache.
    pub fast_path: bool,
    /// Shard ownership mask: the shortest persistence prefix among services
    /// (IPv4 / IPv6), so a persistence group always maps to one shard.
    pub shard_prefix4: u8,
    pub shard_prefix6: u8,
    /// Every VIP (for the XDP filter) as (proto, address, port), fwmark
    /// port ranges expanded: sorted and deduplicated, binary-searched by the
    /// engine.
    pub vips: Vec<(Proto, IpAddr, u16)>,
    /// Every NAT real server address (its replies must come back through the
    /// director): sorted and deduplicated, binary-searched by the engine
    /// (through [`Snapshot::is_nat_real`]).
    pub nat_reals: Vec<IpAddr>,
    /// `nat_reals` as [`Snapshot::finish`] last saw them, for a search per
    /// packet much cheaper than comparing `IpAddr`s.
    nat_index: Option<NatIndex>,
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

/// The NAT real server addresses as integers per family (sorted), and a
/// 64-bit Bloom filter of them that answers "no" for most addresses (the
/// clients) in a few instructions.
#[derive(Debug, Default)]
struct NatIndex {
    bloom: u64,
    v4: Vec<u32>,
    v6: Vec<u128>,
}

/// The Bloom filter bit of an address.
#[inline]
fn nat_bloom_bit(a: IpAddr) -> u64 {
    let x = match a {
        IpAddr::V4(v) => u64::from(u32::from(v)),
        IpAddr::V6(v) => {
            let b = u128::from(v);
            (b as u64) ^ ((b >> 64) as u64).rotate_left(29)
        }
    };
    1 << (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58)
}

impl Snapshot {
    /// An empty snapshot (no services): everything passes to the kernel.
    pub fn empty() -> Snapshot {
        Snapshot {
            generation: 0,
            services: Vec::new(),
            classifier: Classifier::default(),
            timeouts: Timeouts::default(),
            conn_reuse_mode: 1,
            sloppy_tcp: false,
            fast_path: false,
            shard_prefix4: 32,
            shard_prefix6: 128,
            vips: Vec::new(),
            nat_reals: Vec::new(),
            nat_index: None,
            tunnel_src4: None,
            tunnel_src6: None,
            gue_port: 6080,
            dest_index: hashbrown::HashMap::new(),
            next_dest_id: 1,
            health: HashMap::new(),
        }
    }

    /// Build the per-packet indexes of the public tables ([`Classifier::finish`],
    /// and the one [`Snapshot::is_nat_real`] reads). `build_snapshot` calls
    /// it; call it again after changing `classifier` or `nat_reals`.
    pub fn finish(&mut self) {
        self.classifier.finish();
        let mut ix = NatIndex::default();
        for &a in &self.nat_reals {
            ix.bloom |= nat_bloom_bit(a);
            match a {
                IpAddr::V4(v) => ix.v4.push(u32::from(v)),
                IpAddr::V6(v) => ix.v6.push(u128::from(v)),
            }
        }
        ix.v4.sort_unstable();
        ix.v6.sort_unstable();
        self.nat_index = Some(ix);
    }

    /// Is `a` the address of a NAT real server (in `nat_reals`)?
    #[inline]
    pub fn is_nat_real(&self, a: IpAddr) -> bool {
        let Some(ix) = &self.nat_index else {
            return self.nat_reals.binary_search(&a).is_ok();
        };
        if ix.bloom & nat_bloom_bit(a) == 0 {
            return false;
        }
        // Short lists are scanned (cheaper than a binary search's setup).
        match a {
            IpAddr::V4(x) if ix.v4.len() <= 16 => ix.v4.contains(&u32::from(x)),
            IpAddr::V4(x) => ix.v4.binary_search(&u32::from(x)).is_ok(),
            IpAddr::V6(x) if ix.v6.len() <= 16 => ix.v6.contains(&u128::from(x)),
            IpAddr::V6(x) => ix.v6.binary_search(&u128::from(x)).is_ok(),
        }
    }

    /// A real server and its service by id.
    pub fn dest(&self, id: DestId) -> Option<(&Service, &Dest)> {
        let &(s, d) = self.dest_index.get(&id)?;
        let svc = self.services.get(s as usize)?;
        Some((svc, svc.dests.get(d as usize)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn is_nat_real_finds_the_same_before_and_after_finish() {
        let all: Vec<IpAddr> = [
            "0.0.0.0",
            "10.0.0.1",
            "198.18.1.1",
            "198.18.1.2",
            "255.255.255.255",
            "::",
            "::ffff:198.18.1.1",
            "2001:db8::1",
            "2001:db8::2",
            "ffff::1",
        ]
        .iter()
        .map(|a| ip(a))
        .collect();
        for keep in 0u32..(1 << all.len()) {
            let mut s = Snapshot::empty();
            s.nat_reals = (0..all.len())
                .filter(|i| keep & (1 << i) != 0)
                .map(|i| all[i])
                .collect();
            s.nat_reals.sort_unstable();
            let before: Vec<bool> = all.iter().map(|a| s.is_nat_real(*a)).collect();
            s.finish();
            for (a, b) in all.iter().zip(before) {
                assert_eq!(s.is_nat_real(*a), b, "{a}");
                assert_eq!(b, s.nat_reals.contains(a));
            }
        }
    }

    #[test]
    fn is_nat_real_searches_long_lists() {
        let mut s = Snapshot::empty();
        s.nat_reals = (0..40u8)
            .flat_map(|i| {
                [
                    IpAddr::from([198, 18, 1, i * 3]),
                    IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 1, u16::from(i) * 3]),
                ]
            })
            .collect();
        s.nat_reals.sort_unstable();
        s.finish();
        for i in 0..=130u8 {
            let a = IpAddr::from([198, 18, 1, i]);
            let b = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 1, u16::from(i)]);
            assert_eq!(s.is_nat_real(a), i % 3 == 0 && i < 120, "{a}");
            assert_eq!(s.is_nat_real(b), i % 3 == 0 && i < 120, "{b}");
        }
    }

    #[test]
    fn the_index_classifies_as_the_maps() {
        let mut c = Classifier::default();
        let (a, b, v6) = (ip("198.18.0.1"), ip("198.18.0.2"), ip("2001:db8::1"));
        // Overlapping ranges, a mark without a service first.
        c.fwmark_rules.insert(
            (Proto::Tcp, a),
            vec![(70, 90, 9), (80, 80, 1), (1000, 1002, 2), (85, 2000, 1)],
        );
        c.fwmark_rules
            .insert((Proto::Udp, b), vec![(53, 53, 9), (0, 10, 2)]);
        c.fwmark_rules.insert((Proto::Tcp, v6), vec![(443, 443, 1)]);
        c.by_mark.insert(1, 10);
        c.by_mark.insert(2, 11);
        c.by_addr.insert((Proto::Tcp, a, 0), 20);
        c.by_addr.insert((Proto::Tcp, a, 443), 21);
        c.by_addr.insert((Proto::Tcp, a, 75), 22);
        c.by_addr.insert((Proto::Udp, a, 53), 23);
        c.by_addr.insert((Proto::Tcp, b, 80), 24);
        c.by_addr.insert((Proto::Udp, b, 0), 25);
        c.by_addr.insert((Proto::Tcp, v6, 80), 26);
        let ports: Vec<u16> = (0..2100).chain([8080, 65535]).collect();
        let unfinished: Vec<_> = [a, b, v6, ip("198.18.0.3")]
            .iter()
            .flat_map(|&d| [Proto::Tcp, Proto::Udp].map(|p| (p, d)))
            .flat_map(|(p, d)| ports.iter().map(move |&port| (p, d, port)))
            .map(|(p, d, port)| ((p, d, port), c.classify(p, d, port)))
            .collect();
        c.finish();
        assert!(c.index.is_some());
        for ((p, d, port), want) in unfinished {
            assert_eq!(c.classify(p, d, port), want, "{p:?} {d} {port}");
            assert_eq!(c.classify_maps(p, d, port), want);
        }
        assert_eq!(c.classify(Proto::Tcp, a, 80), Some(10));
        assert_eq!(c.classify(Proto::Tcp, a, 75), Some(22));
        assert_eq!(c.classify(Proto::Tcp, a, 3000), Some(20));
        assert_eq!(c.classify(Proto::Udp, b, 53), Some(25));
        assert_eq!(c.classify(Proto::Udp, b, 5), Some(11));
        assert_eq!(c.classify(Proto::Tcp, v6, 81), None);
    }
}
