//! Next hops from the kernel: an immutable [`NeighborTable`] (routes of the
//! main table, neighbour MACs, interface MACs and MTUs, pinned entries)
//! published through `ArcSwap` and rebuilt by a [`NeighborResolver`].
//!
//! Engines read the current table through [`SharedNeighbors`] (implements
//! [`Neighbors`]). A lookup that misses because the next hop's MAC is unknown
//! queues a resolution request (non-blocking); the resolver makes the kernel
//! resolve it (RTM_NEWNEIGH with NTF_USE, or a zero-byte UDP datagram to
//! port 9 as a fallback) and publishes the MAC with a later refresh.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::netlink::{nud, LinkInfo, NeighEntry, Netlink, NetlinkError, RouteEntry};
use crate::shard::nexthop::{Neighbors, NextHop};

/// A configured neighbour: `addr` is reached at `mac`, overriding the
/// kernel's table. With `ifindex`, `addr` is also reached directly on that
/// interface without a route lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pinned {
    pub addr: IpAddr,
    pub mac: [u8; 6],
    pub ifindex: Option<u32>,
}

/// Non-blocking sender of resolution requests (cheap to clone).
#[derive(Clone, Debug)]
pub struct Requester(Sender<IpAddr>);

impl Requester {
    /// Ask for `addr` to be resolved. Returns false when the queue is full.
    pub fn request(&self, addr: IpAddr) -> bool {
        self.0.try_send(addr).is_ok()
    }
}

/// Layer-2 facts about one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LinkL2 {
    mac: [u8; 6],
    mtu: u16,
}

/// An immutable snapshot of routes and neighbours.
///
/// Lookups are per packet, so the table is built for them: the maps use
/// `hashbrown`'s foldhash (keys come from the kernel and the config, not
/// from packets), the answer for every address with a usable neighbour or
/// pinned entry is computed once at build time (`hosts`: a real server on a
/// connected prefix costs one hash lookup), and each gateway route carries
/// its resolved next hop (`via`: an address behind a gateway costs a route
/// scan, no neighbour lookup). Answers are the same as resolving from the
/// routes and neighbours every time.
#[derive(Clone, Debug, Default)]
pub struct NeighborTable {
    links: hashbrown::HashMap<u32, LinkL2>,
    /// Longest prefix first, then lowest metric.
    routes: Vec<RouteEntry>,
    /// `routes`, same order, in the form the lookup matches.
    fast: Vec<FastRoute>,
    neigh: hashbrown::HashMap<(u32, IpAddr), [u8; 6]>,
    pinned: hashbrown::HashMap<IpAddr, Pinned>,
    /// Precomputed answers: every neighbour and pinned address that resolves.
    hosts: hashbrown::HashMap<IpAddr, NextHop>,
    allowed: Option<Vec<u32>>,
    requester: Option<Requester>,
    /// Unique per built table (see [`Neighbors::version`]); the table is
    /// immutable once built.
    version: u64,
}

/// Versions of built tables (0 is the empty default table).
static TABLE_VERSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A route as the lookup matches it: `addr & mask == net` within a family.
#[derive(Clone, Copy, Debug)]
struct FastRoute {
    v4: bool,
    net: u128,
    mask: u128,
    oif: u32,
    /// Gateway routes: the resolved next hop (the gateway's), or why not.
    via: Option<Result<NextHop, Miss>>,
}

fn addr_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The mask of a prefix length, as `mask_addr` applies it.
fn prefix_mask(v4: bool, len: u8) -> u128 {
    if v4 {
        let p = len.min(32);
        u128::from(if p == 0 { 0 } else { u32::MAX << (32 - p) })
    } else {
        let p = len.min(128);
        if p == 0 {
            0
        } else {
            u128::MAX << (128 - p)
        }
    }
}

impl NeighborTable {
    /// Build a table. `allowed`: interfaces next hops may use (`None`: all).
    /// Neighbour entries in unusable states (incomplete, failed) are ignored.
    pub fn build(
        links: &[LinkInfo],
        routes: &[RouteEntry],
        neighs: &[NeighEntry],
        pinned: &[Pinned],
        allowed: Option<Vec<u32>>,
        requester: Option<Requester>,
    ) -> Self {
        let links = links
            .iter()
            .filter_map(|l| {
                let mac = l.mac?;
                let mtu = u16::try_from(l.mtu).unwrap_or(u16::MAX);
                Some((l.ifindex, LinkL2 { mac, mtu }))
            })
            .collect();
        let mut routes = routes.to_vec();
        routes.sort_by(|a, b| {
            b.prefix_len
                .cmp(&a.prefix_len)
                .then(a.metric.cmp(&b.metric))
        });
        let neigh = neighs
            .iter()
            .filter(|n| n.state & nud::VALID != 0)
            .map(|n| ((n.ifindex, n.addr), n.mac))
            .collect();
        let pinned_map = pinned.iter().map(|p| (p.addr, *p)).collect();
        let mut t = NeighborTable {
            links,
            routes,
            fast: Vec::new(),
            neigh,
            pinned: pinned_map,
            hosts: hashbrown::HashMap::new(),
            allowed,
            requester,
            version: TABLE_VERSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        let fast: Vec<FastRoute> = t
            .routes
            .iter()
            .map(|r| {
                let v4 = r.dst.is_ipv4();
                FastRoute {
                    v4,
                    net: addr_bits(r.dst),
                    mask: prefix_mask(v4, r.prefix_len),
                    oif: r.oif,
                    via: r.gateway.map(|gw| t.hop(r.oif, gw)),
                }
            })
            .collect();
        t.fast = fast;
        let candidates = neighs
            .iter()
            .filter(|n| n.state & nud::VALID != 0)
            .map(|n| n.addr)
            .chain(pinned.iter().map(|p| p.addr));
        let mut hosts = hashbrown::HashMap::new();
        for a in candidates {
            if let Ok(h) = t.resolve(a) {
                hosts.insert(a, h);
            }
        }
        t.hosts = hosts;
        t
    }

    /// The route to `addr`: (outgoing interface, next-hop address), where the
    /// next hop is the gateway or `addr` itself when on-link.
    pub fn route(&self, addr: IpAddr) -> Option<(u32, IpAddr)> {
        if let Some(i) = self.pinned_ifindex(addr) {
            return Some((i, addr));
        }
        let i = self.route_index(addr)?;
        let r = self.routes.get(i)?;
        Some((r.oif, r.gateway.unwrap_or(addr)))
    }

    /// A pinned entry for `addr` that names its interface.
    fn pinned_ifindex(&self, addr: IpAddr) -> Option<u32> {
        if self.pinned.is_empty() {
            return None;
        }
        self.pinned.get(&addr).and_then(|p| p.ifindex)
    }

    /// Position in `routes` of the first (longest) matching route.
    fn route_index(&self, addr: IpAddr) -> Option<usize> {
        let v4 = addr.is_ipv4();
        let a = addr_bits(addr);
        self.fast
            .iter()
            .position(|r| r.v4 == v4 && a & r.mask == r.net)
    }

    fn allowed(&self, ifindex: u32) -> bool {
        self.allowed.as_ref().is_none_or(|a| a.contains(&ifindex))
    }

    /// MAC of next hop `nh` on `oif`: pinned first, then the kernel's table.
    fn mac_of(&self, oif: u32, nh: IpAddr) -> Option<[u8; 6]> {
        match self.pinned.get(&nh) {
            Some(p) if p.ifindex.is_none_or(|i| i == oif) => Some(p.mac),
            _ => self.neigh.get(&(oif, nh)).copied(),
        }
    }

    /// The next hop `nh` (gateway, or the address itself) out of `oif`.
    fn hop(&self, oif: u32, nh: IpAddr) -> Result<NextHop, Miss> {
        if !self.allowed(oif) {
            return Err(Miss::NotAllowed);
        }
        let l2 = self.links.get(&oif).ok_or(Miss::NoLink)?;
        let dst_mac = self.mac_of(oif, nh).ok_or(Miss::NoNeighbor)?;
        Ok(NextHop {
            ifindex: oif,
            src_mac: l2.mac,
            dst_mac,
            mtu: l2.mtu,
        })
    }

    /// Resolve from the routes and neighbours (no precomputed host answer).
    fn resolve(&self, addr: IpAddr) -> Result<NextHop, Miss> {
        if let Some(i) = self.pinned_ifindex(addr) {
            return self.hop(i, addr);
        }
        let r = self
            .route_index(addr)
            .and_then(|i| self.fast.get(i))
            .ok_or(Miss::NoRoute)?;
        match r.via {
            Some(via) => via,
            None => self.hop(r.oif, addr),
        }
    }

    /// The gateways of the routes through the data-plane interfaces: the
    /// next hops every reply towards a routed client goes through, worth
    /// resolving before the first packet needs them.
    pub fn gateways(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .routes
            .iter()
            .filter(|r| self.allowed(r.oif))
            .filter_map(|r| r.gateway)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Like [`Neighbors::lookup`] but never queues a resolution request.
    #[inline]
    pub fn lookup_quiet(&self, addr: IpAddr) -> Result<NextHop, Miss> {
        if let Some(h) = self.hosts.get(&addr) {
            return Ok(*h);
        }
        self.resolve(addr)
    }

    /// MAC and MTU of interface `ifindex` (Ethernet interfaces only).
    pub fn link(&self, ifindex: u32) -> Option<([u8; 6], u16)> {
        self.links.get(&ifindex).map(|l| (l.mac, l.mtu))
    }

    /// Number of (routes, neighbours, interfaces) known.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.routes.len(), self.neigh.len(), self.links.len())
    }
}

/// Why a lookup found no next hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// No route to the address.
    NoRoute,
    /// The route leaves through an interface the data plane does not use.
    NotAllowed,
    /// The outgoing interface has no Ethernet address.
    NoLink,
    /// The next hop's MAC is not known (yet).
    NoNeighbor,
}

impl Neighbors for NeighborTable {
    /// The next hop towards `addr`; on an unknown MAC, queues a resolution
    /// request and returns `None`.
    fn lookup(&self, addr: IpAddr) -> Option<NextHop> {
        match self.lookup_quiet(addr) {
            Ok(n) => Some(n),
            Err(Miss::NoNeighbor) => {
                if let Some(r) = &self.requester {
                    r.request(addr);
                }
                None
            }
            Err(_) => None,
        }
    }

    fn version(&self) -> Option<u64> {
        Some(self.version)
    }

    fn pending(&self, addr: IpAddr) -> Option<NextHop> {
        if self.lookup_quiet(addr) != Err(Miss::NoNeighbor) {
            return None;
        }
        let oif = match self.pinned_ifindex(addr) {
            Some(i) => i,
            None => self.fast.get(self.route_index(addr)?)?.oif,
        };
        let l2 = self.links.get(&oif)?;
        Some(NextHop {
            ifindex: oif,
            src_mac: l2.mac,
            dst_mac: [0; 6],
            mtu: l2.mtu,
        })
    }
}

/// The current table, shared by all shards (cheap to clone).
#[derive(Clone, Debug)]
pub struct SharedNeighbors(Arc<ArcSwap<NeighborTable>>);

impl SharedNeighbors {
    /// A handle on a fixed table (tests).
    pub fn fixed(t: NeighborTable) -> Self {
        SharedNeighbors(Arc::new(ArcSwap::from_pointee(t)))
    }

    /// The current table (hold it for a batch to avoid repeated loads).
    pub fn current(&self) -> Arc<NeighborTable> {
        self.0.load_full()
    }

    /// A reader for one shard: [`NeighborCache::load`] returns the current
    /// table without touching its reference count unless it changed (a
    /// shared counter written by every shard on every batch is a cache
    /// line bouncing between their cores).
    pub fn cache(&self) -> NeighborCache {
        NeighborCache(arc_swap::Cache::new(Arc::clone(&self.0)))
    }

    /// Replace the table.
    pub fn publish(&self, t: NeighborTable) {
        self.0.store(Arc::new(t));
    }
}

/// One shard's cached view of [`SharedNeighbors`].
pub struct NeighborCache(arc_swap::Cache<Arc<ArcSwap<NeighborTable>>, Arc<NeighborTable>>);

impl NeighborCache {
    /// The current table: one atomic load when it did not change.
    #[inline]
    pub fn load(&mut self) -> &NeighborTable {
        self.0.load()
    }
}

impl Neighbors for SharedNeighbors {
    fn lookup(&self, addr: IpAddr) -> Option<NextHop> {
        self.0.load().lookup(addr)
    }
}

/// Resolver settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Pinned neighbours (override the kernel).
    pub pinned: Vec<Pinned>,
    /// Interfaces next hops may use (`None`: all).
    pub interfaces: Option<Vec<u32>>,
    /// Full refresh period.
    pub refresh_interval: Duration,
    /// Refresh period while a resolution is in progress.
    pub fast_refresh_interval: Duration,
    /// How long to keep refreshing fast after a probe.
    pub fast_refresh_for: Duration,
    /// Queued requests at most.
    pub request_capacity: usize,
    /// An address is probed again at most this often.
    pub reprobe_interval: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            pinned: Vec::new(),
            interfaces: None,
            refresh_interval: Duration::from_secs(1),
            fast_refresh_interval: Duration::from_millis(20),
            fast_refresh_for: Duration::from_secs(1),
            request_capacity: 1024,
            reprobe_interval: Duration::from_secs(1),
        }
    }
}

/// Keeps the shared table fresh and performs resolution requests. Call
/// [`step`](Self::step) periodically, or run it with [`spawn`](Self::spawn).
pub struct NeighborResolver {
    nl: Netlink,
    cfg: ResolverConfig,
    shared: SharedNeighbors,
    req_tx: Sender<IpAddr>,
    req_rx: Receiver<IpAddr>,
    probed: HashMap<IpAddr, Instant>,
    last_refresh: Option<Instant>,
    fast_until: Option<Instant>,
    probes: u64,
}

impl NeighborResolver {
    /// Open netlink in the caller's network namespace and build the first table.
    pub fn new(cfg: ResolverConfig) -> Result<Self, NetlinkError> {
        let (req_tx, req_rx) = crossbeam_channel::bounded(cfg.request_capacity.max(1));
        let mut r = NeighborResolver {
            nl: Netlink::open()?,
            cfg,
            shared: SharedNeighbors::fixed(NeighborTable::default()),
            req_tx,
            req_rx,
            probed: HashMap::new(),
            last_refresh: None,
            fast_until: None,
            probes: 0,
        };
        r.refresh()?;
        Ok(r)
    }

    /// The shared table handle for engines.
    pub fn shared(&self) -> SharedNeighbors {
        self.shared.clone()
    }

    /// A request handle.
    pub fn requester(&self) -> Requester {
        Requester(self.req_tx.clone())
    }

    /// Probes sent so far.
    pub fn probes(&self) -> u64 {
        self.probes
    }

    /// Dump links, routes and neighbours and publish a new table.
    pub fn refresh(&mut self) -> Result<(), NetlinkError> {
        let links = self.nl.links()?;
        let routes = self.nl.routes()?;
        let neighs = self.nl.neighbours()?;
        let t = NeighborTable::build(
            &links,
            &routes,
            &neighs,
            &self.cfg.pinned,
            self.cfg.interfaces.clone(),
            Some(self.requester()),
        );
        self.shared.publish(t);
        self.last_refresh = Some(Instant::now());
        Ok(())
    }

    /// Handle one request: probe unless probed recently or already known.
    /// Returns whether a probe was sent.
    pub fn handle_request(&mut self, addr: IpAddr) -> bool {
        let now = Instant::now();
        if let Some(t) = self.probed.get(&addr) {
            if now.duration_since(*t) < self.cfg.reprobe_interval {
                return false;
            }
        }
        let table = self.shared.current();
        let Some((oif, nh)) = table.route(addr) else {
            return false;
        };
        if table.lookup_quiet(addr).is_ok() {
            return false;
        }
        self.probed.insert(addr, now);
        if self.probed.len() > 65_536 {
            let keep = self.cfg.reprobe_interval;
            self.probed.retain(|_, t| now.duration_since(*t) < keep);
        }
        if self.nl.probe_neighbour(oif, nh).is_err() {
            udp_probe(addr);
        }
        self.probes += 1;
        self.fast_until = Some(now + self.cfg.fast_refresh_for);
        true
    }

    /// Drain queued requests (non-blocking). Returns probes sent.
    pub fn process_requests(&mut self) -> usize {
        let mut n = 0;
        for _ in 0..self.cfg.request_capacity.max(1) {
            let Ok(a) = self.req_rx.try_recv() else {
                break;
            };
            n += usize::from(self.handle_request(a));
        }
        n
    }

    /// How long until the next refresh is due.
    pub fn next_refresh_in(&self) -> Duration {
        let now = Instant::now();
        let period = match self.fast_until {
            Some(t) if t > now => self.cfg.fast_refresh_interval,
            _ => self.cfg.refresh_interval,
        };
        match self.last_refresh {
            Some(t) => period.saturating_sub(now.duration_since(t)),
            None => Duration::ZERO,
        }
    }

    /// One step: process requests, refresh when due. Returns how long the
    /// caller may wait before the next step.
    pub fn step(&mut self) -> Result<Duration, NetlinkError> {
        self.process_requests();
        if self.next_refresh_in().is_zero() {
            self.refresh()?;
        }
        Ok(self.next_refresh_in())
    }

    /// Run in a background thread (same network namespace as the caller)
    /// until `stop` is set. Refresh errors are logged and retried.
    pub fn spawn(mut self, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("xdpvs-neigh".into())
            .spawn(move || {
                // Capabilities are per thread: this one keeps only the
                // director's minimum too.
                if let Err(e) = crate::dataplane::privileges::drop_to_minimum() {
                    tracing::warn!("neighbour thread: could not drop capabilities: {e}");
                }
                let rx = self.req_rx.clone();
                while !stop.load(Ordering::Relaxed) {
                    let wait = match self.step() {
                        Ok(w) => w,
                        Err(e) => {
                            tracing::warn!(error = %e, "neighbour refresh failed");
                            Duration::from_millis(500)
                        }
                    };
                    let wait = wait.clamp(Duration::from_millis(1), Duration::from_millis(100));
                    match rx.recv_timeout(wait) {
                        Ok(a) => {
                            self.handle_request(a);
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            })
    }
}

/// Fallback trigger: a zero-byte UDP datagram to port 9 (discard) makes the
/// kernel resolve the next hop towards `addr`.
fn udp_probe(addr: IpAddr) {
    let bind: SocketAddr = match addr {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    if let Ok(s) = UdpSocket::bind(bind) {
        if s.connect((addr, 9)).is_ok() {
            let _ = s.send(&[]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard's cached reader sees every published table, and reading an
    /// unchanged table leaves its reference count alone (no shared write
    /// per batch).
    #[test]
    fn cache_follows_publish_without_touching_the_count() {
        let shared = SharedNeighbors::fixed(NeighborTable::default());
        let mut c = shared.cache();
        let first = shared.current();
        let before = Arc::strong_count(&first);
        for _ in 0..1000 {
            assert!(std::ptr::eq(c.load(), &*first));
        }
        assert_eq!(Arc::strong_count(&first), before);
        shared.publish(NeighborTable::default());
        assert!(!std::ptr::eq(c.load(), &*first));
        assert!(std::ptr::eq(c.load(), &*shared.current()));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn link(i: u32, last: u8) -> LinkInfo {
        LinkInfo {
            ifindex: i,
            name: format!("if{i}"),
            mac: Some([2, 0, 0, 0, 0, last]),
            mtu: 1500,
        }
    }

    fn route(dst: &str, len: u8, oif: u32, gw: Option<&str>) -> RouteEntry {
        RouteEntry {
            dst: ip(dst),
            prefix_len: len,
            oif,
            gateway: gw.map(ip),
            metric: 0,
            table: 254,
            route_type: 1,
        }
    }

    fn neigh(i: u32, a: &str, last: u8, state: u16) -> NeighEntry {
        NeighEntry {
            ifindex: i,
            addr: ip(a),
            mac: [2, 0, 0, 0, 1, last],
            state,
        }
    }

    fn table(pinned: &[Pinned], allowed: Option<Vec<u32>>) -> NeighborTable {
        NeighborTable::build(
            &[
                link(2, 2),
                link(3, 3),
                LinkInfo {
                    ifindex: 1,
                    name: "lo".into(),
                    mac: None,
                    mtu: 65536,
                },
            ],
            &[
                route("0.0.0.0", 0, 2, Some("198.18.0.1")),
                route("198.18.0.0", 24, 2, None),
                route("198.18.3.0", 24, 3, None),
                route("198.18.3.128", 25, 3, Some("198.18.3.1")),
                route("198.18.9.0", 24, 1, None),
                route("2001:db8::", 64, 2, None),
                route("::", 0, 2, Some("2001:db8::1")),
            ],
            &[
                neigh(2, "198.18.0.1", 1, nud::REACHABLE),
                neigh(2, "198.18.0.11", 11, nud::STALE),
                neigh(3, "198.18.3.11", 12, nud::PERMANENT),
                neigh(3, "198.18.3.1", 13, nud::REACHABLE),
                neigh(2, "198.18.0.12", 14, nud::FAILED),
                neigh(2, "2001:db8::1", 15, nud::REACHABLE),
            ],
            pinned,
            allowed,
            None,
        )
    }

    #[test]
    fn every_built_table_has_its_own_version() {
        let a = table(&[], None);
        let b = table(&[], None);
        assert!(a.version().is_some());
        assert_ne!(
            a.version(),
            b.version(),
            "a rebuilt table must not reuse a version"
        );
        assert_eq!(a.clone().version(), a.version());
    }

    #[test]
    fn on_link_addresses_use_their_own_mac() {
        let t = table(&[], None);
        let n = t.lookup(ip("198.18.0.11")).expect("hop");
        assert_eq!(t.link(2), Some(([2, 0, 0, 0, 0, 2], 1500)));
        assert_eq!(t.link(1), None, "no Ethernet address");
        assert_eq!(n.ifindex, 2);
        assert_eq!(n.dst_mac, [2, 0, 0, 0, 1, 11]);
        assert_eq!(n.src_mac, [2, 0, 0, 0, 0, 2]);
        assert_eq!(n.mtu, 1500);
    }

    #[test]
    fn off_link_addresses_use_the_gateway_mac_longest_prefix_wins() {
        let t = table(&[], None);
        let n = t.lookup(ip("203.0.113.5")).expect("default route");
        assert_eq!((n.ifindex, n.dst_mac), (2, [2, 0, 0, 0, 1, 1]));
        // 198.18.3.200 is in the /24 (on-link) and in the /25 (via .1): /25 wins.
        let n = t.lookup(ip("198.18.3.200")).expect("hop");
        assert_eq!((n.ifindex, n.dst_mac), (3, [2, 0, 0, 0, 1, 13]));
        let n = t.lookup(ip("198.18.3.11")).expect("hop");
        assert_eq!((n.ifindex, n.dst_mac), (3, [2, 0, 0, 0, 1, 12]));
        let n = t.lookup(ip("2001:db8:ffff::1")).expect("v6 default");
        assert_eq!(n.dst_mac, [2, 0, 0, 0, 1, 15]);
    }

    #[test]
    fn unusable_states_and_missing_links_miss() {
        let t = table(&[], None);
        assert_eq!(t.lookup_quiet(ip("198.18.0.12")), Err(Miss::NoNeighbor));
        assert_eq!(t.lookup_quiet(ip("198.18.9.1")), Err(Miss::NoLink));
        assert_eq!(t.lookup_quiet(ip("2001:db8::77")), Err(Miss::NoNeighbor));
        let empty = NeighborTable::default();
        assert_eq!(empty.lookup_quiet(ip("198.18.0.11")), Err(Miss::NoRoute));
    }

    #[test]
    fn interface_filter_applies() {
        let t = table(&[], Some(vec![3]));
        assert_eq!(t.lookup_quiet(ip("198.18.0.11")), Err(Miss::NotAllowed));
        assert!(t.lookup(ip("198.18.3.11")).is_some());
    }

    #[test]
    fn pinned_entries_override_the_kernel() {
        let p = [
            Pinned {
                addr: ip("198.18.0.11"),
                mac: [2, 9, 9, 9, 9, 9],
                ifindex: None,
            },
            Pinned {
                addr: ip("198.18.0.12"),
                mac: [2, 8, 8, 8, 8, 8],
                ifindex: None,
            },
            Pinned {
                addr: ip("198.18.77.1"),
                mac: [2, 7, 7, 7, 7, 7],
                ifindex: Some(3),
            },
        ];
        let t = table(&p, None);
        assert_eq!(
            t.lookup(ip("198.18.0.11")).map(|n| n.dst_mac),
            Some([2, 9, 9, 9, 9, 9])
        );
        assert_eq!(
            t.lookup(ip("198.18.0.12")).map(|n| n.dst_mac),
            Some([2, 8, 8, 8, 8, 8])
        );
        let n = t.lookup(ip("198.18.77.1")).expect("pinned with ifindex");
        assert_eq!((n.ifindex, n.src_mac), (3, [2, 0, 0, 0, 0, 3]));
    }

    #[test]
    fn a_miss_queues_a_request_and_a_hit_does_not() {
        let (tx, rx) = crossbeam_channel::bounded(4);
        let mut t = table(&[], None);
        t.requester = Some(Requester(tx));
        assert!(t.lookup(ip("198.18.0.99")).is_none());
        assert_eq!(rx.try_recv().ok(), Some(ip("198.18.0.99")));
        assert!(t.lookup(ip("198.18.0.11")).is_some());
        assert!(rx.try_recv().is_err());
        // No route: nothing to resolve.
        let e = NeighborTable {
            requester: t.requester.clone(),
            ..NeighborTable::default()
        };
        assert!(e.lookup(ip("198.18.0.99")).is_none());
        assert!(rx.try_recv().is_err());
    }

    /// The lookup as it was before the precomputed answers: route scan with
    /// `mask_addr`, then link and neighbour (or pinned) lookups.
    fn reference(t: &NeighborTable, addr: IpAddr) -> Result<NextHop, Miss> {
        let (oif, nh) = match t.pinned.get(&addr) {
            Some(Pinned {
                ifindex: Some(i), ..
            }) => (*i, addr),
            _ => t
                .routes
                .iter()
                .find(|r| {
                    r.dst.is_ipv4() == addr.is_ipv4()
                        && crate::service::model::mask_addr(addr, r.prefix_len, r.prefix_len)
                            == r.dst
                })
                .map(|r| (r.oif, r.gateway.unwrap_or(addr)))
                .ok_or(Miss::NoRoute)?,
        };
        if !t.allowed.as_ref().is_none_or(|a| a.contains(&oif)) {
            return Err(Miss::NotAllowed);
        }
        let l2 = t.links.get(&oif).ok_or(Miss::NoLink)?;
        let dst_mac = match t.pinned.get(&nh) {
            Some(p) if p.ifindex.is_none_or(|i| i == oif) => Some(p.mac),
            _ => t.neigh.get(&(oif, nh)).copied(),
        }
        .ok_or(Miss::NoNeighbor)?;
        Ok(NextHop {
            ifindex: oif,
            src_mac: l2.mac,
            dst_mac,
            mtu: l2.mtu,
        })
    }

    #[test]
    fn precomputed_answers_match_resolving_every_time() {
        let pins = [
            Pinned {
                addr: ip("198.18.0.11"),
                mac: [2, 9, 9, 9, 9, 9],
                ifindex: None,
            },
            Pinned {
                addr: ip("198.18.0.1"),
                mac: [2, 9, 9, 9, 9, 1],
                ifindex: Some(3),
            },
            Pinned {
                addr: ip("198.18.77.1"),
                mac: [2, 7, 7, 7, 7, 7],
                ifindex: Some(3),
            },
            Pinned {
                addr: ip("198.18.9.5"),
                mac: [2, 7, 7, 7, 7, 5],
                ifindex: Some(1),
            },
        ];
        let mut addrs: Vec<IpAddr> = [
            "198.18.0.1",
            "198.18.0.11",
            "198.18.0.12",
            "198.18.0.99",
            "198.18.3.1",
            "198.18.3.11",
            "198.18.3.200",
            "198.18.9.1",
            "198.18.9.5",
            "198.18.77.1",
            "203.0.113.5",
            "0.0.0.0",
            "255.255.255.255",
            "2001:db8::1",
            "2001:db8::77",
            "2001:db8:ffff::1",
            "::",
        ]
        .iter()
        .map(|a| ip(a))
        .collect();
        addrs.extend((0..=255u8).map(|i| IpAddr::from([198, 18, 3, i])));
        for pinned in [&pins[..0], &pins[..1], &pins[..]] {
            for allowed in [None, Some(vec![3]), Some(vec![2]), Some(vec![])] {
                let t = table(pinned, allowed.clone());
                for &a in &addrs {
                    assert_eq!(
                        t.lookup_quiet(a),
                        reference(&t, a),
                        "{a} pinned {} allowed {allowed:?}",
                        pinned.len()
                    );
                    let want = reference(&t, a).ok().map(|h| {
                        let (oif, nh) = t.route(a).expect("a hop has a route");
                        assert_eq!(oif, h.ifindex);
                        nh
                    });
                    if let Some(nh) = want {
                        assert!(nh == a || t.routes.iter().any(|r| r.gateway == Some(nh)));
                    }
                }
            }
        }
    }

    #[test]
    fn shared_handle_sees_published_tables() {
        let s = SharedNeighbors::fixed(NeighborTable::default());
        assert!(s.lookup(ip("198.18.0.11")).is_none());
        s.publish(table(&[], None));
        assert!(s.lookup(ip("198.18.0.11")).is_some());
    }
}
