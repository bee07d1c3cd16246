//! Drives one `xdpvs::shard::engine::Engine` without a kernel: configs as
//! TOML text, frames as byte vectors, time as a number the test moves.
//!
//! Shared by `tests/engine_rules.rs`, `tests/engine_golden.rs` and the
//! `engine` fuzz target (`fuzz/fuzz_targets/engine.rs`, which includes
//! this file by path), so it only uses the public API.
#![allow(dead_code)]

#[path = "../wire_builder/mod.rs"]
pub mod wire_builder;

pub mod fuzz;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use xdpvs::config::{build_snapshot, Config};
use xdpvs::service::snapshot::Snapshot;
use xdpvs::shard::engine::{Engine, EngineConfig};
use xdpvs::shard::nexthop::{Neighbors, NextHop};
use xdpvs::shard::verdict::{Frame, Verdict};

/// Headroom in front of every test frame (encapsulation grows into it).
pub const HEADROOM: usize = 128;
/// Interface every next hop is on.
pub const IFINDEX: u32 = 7;
/// The director's MAC on that interface.
pub const SRC_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x10];
/// The MTU of every next hop.
pub const MTU: u16 = 1500;

/// The next hop MAC of an address: it names the address, so a test can
/// tell from the output frame alone which real server (or client) it goes
/// to. IPv4 `a.b.c.d` -> `04:04:a:b:c:d`; IPv6 -> `06:06:` + last 4 bytes.
pub fn mac_of(a: IpAddr) -> [u8; 6] {
    match a {
        IpAddr::V4(v) => {
            let o = v.octets();
            [0x04, 0x04, o[0], o[1], o[2], o[3]]
        }
        IpAddr::V6(v) => {
            let o = v.octets();
            [0x06, 0x06, o[12], o[13], o[14], o[15]]
        }
    }
}

/// Inverse of [`mac_of`]; IPv6 addresses are taken to be in
/// `2001:db8:1::/96` (where every IPv6 real server of these tests lives).
pub fn addr_of_mac(m: &[u8]) -> Option<IpAddr> {
    match m {
        [0x04, 0x04, a, b, c, d] => Some(IpAddr::from([*a, *b, *c, *d])),
        [0x06, 0x06, a, b, c, d] => {
            let mut o = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0).octets();
            o[12..].copy_from_slice(&[*a, *b, *c, *d]);
            Some(IpAddr::from(o))
        }
        _ => None,
    }
}

/// A neighbour table that knows every address (see [`mac_of`]) except the
/// ones listed in `missing`.
#[derive(Clone, Debug, Default)]
pub struct Nb {
    pub missing: Vec<IpAddr>,
    /// [`Neighbors::version`] (`None`: the engine must not cache).
    pub version: Option<u64>,
    /// Added to [`IFINDEX`] in every answer (a route change).
    pub ifindex_shift: u32,
}

impl Neighbors for Nb {
    fn lookup(&self, addr: IpAddr) -> Option<NextHop> {
        if self.missing.contains(&addr) {
            return None;
        }
        Some(NextHop {
            ifindex: IFINDEX + self.ifindex_shift,
            src_mac: SRC_MAC,
            dst_mac: mac_of(addr),
            mtu: MTU,
        })
    }

    fn version(&self) -> Option<u64> {
        self.version
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

pub fn config(text: &str) -> Config {
    Config::parse(text, "test.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Build a snapshot from config text; `prev` keeps real server ids stable.
pub fn snapshot(text: &str, prev: Option<&Snapshot>) -> Arc<Snapshot> {
    Arc::new(build_snapshot(&config(text), prev).unwrap_or_else(|e| panic!("{e}\n{text}")))
}

/// One engine, its clock and its neighbours.
pub struct Harness {
    pub engine: Engine,
    pub now: u64,
    pub nb: Nb,
}

impl Harness {
    /// A single-shard engine with default table sizes.
    pub fn new(text: &str) -> Harness {
        Harness::with(text, EngineConfig::default())
    }

    /// Shard `shard` of `shards`.
    pub fn sharded(text: &str, shard: u16, shards: u16) -> Harness {
        Harness::with(
            text,
            EngineConfig {
                shard,
                shards,
                ..EngineConfig::default()
            },
        )
    }

    pub fn with(text: &str, cfg: EngineConfig) -> Harness {
        Harness {
            engine: Engine::new(cfg, snapshot(text, None)),
            now: 1_000,
            nb: Nb::default(),
        }
    }

    /// Run one frame through the engine at the current time; returns the
    /// verdict and the frame as it is afterwards.
    pub fn process(&mut self, frame: &[u8]) -> (Verdict, Vec<u8>) {
        let mut buf = vec![0u8; HEADROOM + frame.len()];
        buf[HEADROOM..].copy_from_slice(frame);
        let mut f = Frame::new(&mut buf, HEADROOM, frame.len());
        let v = self.engine.process(self.now, &mut f, &self.nb);
        (v, f.data().to_vec())
    }

    /// Publish a new config, built from the current snapshot (ids stay).
    pub fn reload(&mut self, text: &str) {
        let s = snapshot(text, Some(self.engine.snapshot()));
        self.engine.set_snapshot(s);
    }

    /// Move the clock `ms` forward, ticking the engine every 100 ms as the
    /// runtime does.
    pub fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now = (self.now + 100).min(end);
            self.engine.tick(self.now);
        }
    }

    pub fn snap(&self) -> Arc<Snapshot> {
        Arc::clone(self.engine.snapshot())
    }
}

/// The address a forwarded frame goes to, read from its destination MAC.
pub fn next_hop_of(out: &[u8]) -> IpAddr {
    addr_of_mac(&out[..6]).unwrap_or_else(|| panic!("unknown next hop MAC {:02x?}", &out[..6]))
}
