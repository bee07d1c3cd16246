//! Next-hop resolution as the engine sees it: a read-only view that the
//! runtime fills from the kernel's routing and neighbour tables (netlink).

use std::net::IpAddr;

/// Where to send a frame so that it reaches `addr`'s next hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub ifindex: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub mtu: u16,
}

/// Route + neighbour lookup. `lookup(addr)` gives the L2 next hop towards
/// `addr` (the address itself when on-link, else the gateway's MAC).
pub trait Neighbors {
    fn lookup(&self, addr: IpAddr) -> Option<NextHop>;

    /// A number that identifies this table's contents: two calls that return
    /// the same `Some(v)` promise the same answer from [`Neighbors::lookup`]
    /// for any address that resolved, so the engine may cache next hops per
    /// real server under it. `None` (the default): do not cache.
    fn version(&self) -> Option<u64> {
        None
    }

    /// When [`Neighbors::lookup`] found a route but not yet the next hop's
    /// MAC: the hop with a zero `dst_mac`, so the frame can be rewritten
    /// now and held until the MAC is known. `None` (the default): no route
    /// either, or holding is not supported.
    fn pending(&self, _addr: IpAddr) -> Option<NextHop> {
        None
    }
}

/// A fixed table, for tests and pinned config entries.
#[derive(Clone, Debug, Default)]
pub struct StaticNeighbors {
    pub entries: Vec<(IpAddr, NextHop)>,
    /// Used for any address not in `entries` (a default gateway).
    pub default: Option<NextHop>,
}

impl Neighbors for StaticNeighbors {
    fn lookup(&self, addr: IpAddr) -> Option<NextHop> {
        self.entries
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, n)| *n)
            .or(self.default)
    }
}
