//! The flow cache (`flow_map`): the layout the XDP program reads
//! (`bpf/flow.h`), and the handle the shards install and remove entries
//! through.
//!
//! ```text
//! key (40 bytes)                        value (120 bytes)
//!  0 16 src    (IPv4: first 4 bytes)     0  6 dst_mac      40  4 dest id
//! 16 16 dst                              6  6 src_mac      48  8 installed_ns
//! 32  2 sport (BE)                      12  4 ifindex      56  8 last_seen_ns
//! 34  2 dport (BE)                      16  2 mtu          64  8 (packets: 0)
//! 36  1 proto                           18  1 action       72  8 (bytes: 0)
//! 37  1 family (4 | 6)                  20 16 NAT addr     80 16 outer src
//!                                       36  2 NAT port(BE) 96 16 outer dst
//!                                      112  2 GUE sport (BE)
//!                                      114  2 GUE dport (BE)
//!                                      116  1 outer family (4 | 6; 0: none)
//! ```
//! Native-endian fields are the host's (the program runs on it).
//!
//! What the program forwards is counted per real server and direction in
//! `dest_map`, a per-CPU hash (key: dest id u32, reply u32; value per CPU:
//! packets u64, bytes u64), made by the program at a real server's first
//! fast packet. Reading it costs a walk proportional to the real servers;
//! per-flow counters cost a walk of the flow map's every bucket (4M for the
//! default capacity: ~1 % of a core every 2 s, idle, and a stall of the
//! director's CPU while the kernel walks).
//!
//! A plain `HASH` map, never LRU: an entry disappears only when its shard
//! removes it. One handle per shard ([`FlowCache`] is a cheap clone of the
//! map's fd); each shard writes only the entries of connections it owns.

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;

use crate::service::model::{Millis, Proto};
use crate::shard::offload::{FastPathSeen, FlowAction, OffloadEntry};
use crate::wire::flow::FlowKey;

use super::sys::{self, BpfMap, MapType};
use super::XdpError;

/// Key size in bytes.
pub const FLOW_KEY_SIZE: usize = 40;
/// Value size in bytes.
pub const FLOW_VALUE_SIZE: usize = 120;
/// `dest_map` key size (`struct dest_key`).
pub const DEST_KEY_SIZE: usize = 8;
/// `dest_map` value size, one CPU's (`struct dest_ctr`).
pub const DEST_VALUE_SIZE: usize = 16;
/// Capacity of `dest_map`: real servers x directions with fast-path
/// traffic (entries of real servers no longer configured are removed by
/// the control loop). Full, a real server's fast packets take the AF_XDP
/// path, where the engine counts them.
pub const DEST_ENTRIES: u32 = 131_072;

/// `enum flow_action` of `bpf/flow.h`.
const ACTION_DR: u8 = 1;
const ACTION_DNAT: u8 = 2;
const ACTION_SNAT: u8 = 3;
const ACTION_IPIP: u8 = 4;
const ACTION_GUE: u8 = 5;

const OFF_LAST_SEEN: usize = 56;
const OFF_DEST: usize = 40;
const OFF_TUN_SRC: usize = 80;
const OFF_TUN_DST: usize = 96;
const OFF_TUN_SPORT: usize = 112;
const OFF_TUN_DPORT: usize = 114;
const OFF_TUN_FAMILY: usize = 116;

/// The key of a flow as it arrives.
pub fn encode_key(k: &FlowKey) -> [u8; FLOW_KEY_SIZE] {
    let mut b = [0u8; FLOW_KEY_SIZE];
    let family = put_addr(&mut b[0..16], k.src);
    put_addr(&mut b[16..32], k.dst);
    b[32..34].copy_from_slice(&k.sport.to_be_bytes());
    b[34..36].copy_from_slice(&k.dport.to_be_bytes());
    b[36] = k.proto.number();
    b[37] = family;
    b
}

/// Copy `bytes` into `out` at `off` (a layout constant: always in range).
fn put(out: &mut [u8], off: usize, bytes: &[u8]) {
    if let Some(d) = out.get_mut(off..off + bytes.len()) {
        d.copy_from_slice(bytes);
    }
}

/// Write `a` at the start of `out` (16 bytes); returns the family (4 | 6).
fn put_addr(out: &mut [u8], a: IpAddr) -> u8 {
    match a {
        IpAddr::V4(v) => {
            put(out, 0, &v.octets());
            4
        }
        IpAddr::V6(v) => {
            put(out, 0, &v.octets());
            6
        }
    }
}

/// The value of an entry as installed (counters and times zero but
/// `installed_ns`).
pub fn encode_entry(e: &OffloadEntry, installed_ns: u64) -> [u8; FLOW_VALUE_SIZE] {
    let mut b = [0u8; FLOW_VALUE_SIZE];
    b[0..6].copy_from_slice(&e.hop.dst_mac);
    b[6..12].copy_from_slice(&e.hop.src_mac);
    b[12..16].copy_from_slice(&e.hop.ifindex.to_ne_bytes());
    b[16..18].copy_from_slice(&e.hop.mtu.to_ne_bytes());
    let (action, nat, tun) = match e.action {
        FlowAction::Dr => (ACTION_DR, None, None),
        FlowAction::Dnat { addr, port } => (ACTION_DNAT, Some((addr, port)), None),
        FlowAction::Snat { addr, port } => (ACTION_SNAT, Some((addr, port)), None),
        FlowAction::Ipip { src, dst } => (ACTION_IPIP, None, Some((src, dst, 0, 0))),
        FlowAction::Gue {
            src,
            dst,
            sport,
            dport,
        } => (ACTION_GUE, None, Some((src, dst, sport, dport))),
    };
    b[18] = action;
    if let Some((addr, port)) = nat {
        put_addr(&mut b[20..36], addr);
        b[36..38].copy_from_slice(&port.to_be_bytes());
    }
    if let Some((src, dst, sport, dport)) = tun {
        let family = put_addr(&mut b[OFF_TUN_SRC..OFF_TUN_SRC + 16], src);
        put_addr(&mut b[OFF_TUN_DST..OFF_TUN_DST + 16], dst);
        put(&mut b, OFF_TUN_SPORT, &sport.to_be_bytes());
        put(&mut b, OFF_TUN_DPORT, &dport.to_be_bytes());
        b[OFF_TUN_FAMILY] = family;
    }
    b[OFF_DEST..OFF_DEST + 4].copy_from_slice(&e.dest.0.to_ne_bytes());
    b[48..56].copy_from_slice(&installed_ns.to_ne_bytes());
    b
}

fn u64_at(b: &[u8; FLOW_VALUE_SIZE], off: usize) -> u64 {
    b.get(off..off + 8)
        .and_then(|w| <[u8; 8]>::try_from(w).ok())
        .map_or(0, u64::from_ne_bytes)
}

/// What the program recorded on one entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowUse {
    /// `bpf_ktime_get_ns` of the last packet forwarded (0: none yet), to
    /// the millisecond: the program writes it when it moves by 1 ms or more.
    pub last_seen_ns: u64,
    /// The real server's id.
    pub dest: u32,
    /// A NAT reply entry (real server -> client).
    pub reply: bool,
}

impl FlowUse {
    fn of(b: &[u8; FLOW_VALUE_SIZE]) -> FlowUse {
        let mut d = [0u8; 4];
        d.copy_from_slice(&b[OFF_DEST..OFF_DEST + 4]);
        FlowUse {
            last_seen_ns: u64_at(b, OFF_LAST_SEEN),
            dest: u32::from_ne_bytes(d),
            reply: b[18] == ACTION_SNAT,
        }
    }

    /// The last packet's time on the engine's clock (monotonic ms).
    pub fn last_seen_ms(&self) -> Option<Millis> {
        (self.last_seen_ns != 0).then_some(self.last_seen_ns / 1_000_000)
    }
}

/// What the fast path forwarded for one real server in one direction,
/// summed over the CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestUse {
    /// The real server's id.
    pub dest: u32,
    /// NAT replies (the engine's out counters).
    pub reply: bool,
    pub packets: u64,
    /// IP bytes, as the engine counts.
    pub bytes: u64,
}

impl DestUse {
    fn of(key: &[u8], values: &[u8]) -> Option<DestUse> {
        let w = |b: &[u8], at: usize| -> Option<u64> {
            Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
        };
        let dest = u32::from_ne_bytes(key.get(0..4)?.try_into().ok()?);
        let reply = u32::from_ne_bytes(key.get(4..8)?.try_into().ok()?) != 0;
        let mut u = DestUse {
            dest,
            reply,
            ..DestUse::default()
        };
        // One 16-byte value per possible CPU.
        for cpu in values.chunks_exact(DEST_VALUE_SIZE) {
            u.packets = u.packets.wrapping_add(w(cpu, 0)?);
            u.bytes = u.bytes.wrapping_add(w(cpu, 8)?);
        }
        Some(u)
    }
}

/// Entries to install with one call ([`FlowCache::install_batch`]); its
/// buffers keep their capacity between batches.
#[derive(Debug, Default)]
pub struct InstallBatch {
    keys: Vec<u8>,
    values: Vec<u8>,
}

impl InstallBatch {
    pub fn push(&mut self, e: &OffloadEntry, now_ns: u64) {
        self.keys.extend_from_slice(&encode_key(&e.key));
        self.values.extend_from_slice(&encode_entry(e, now_ns));
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len() / FLOW_KEY_SIZE
    }
}

/// A shared handle to `flow_map` and `dest_map`.
#[derive(Clone, Debug)]
pub struct FlowCache {
    map: Arc<BpfMap>,
    dests: Arc<BpfMap>,
}

impl FlowCache {
    /// Create the flow map with room for `entries` flows, and the per-real
    /// server counters ([`DEST_ENTRIES`]). Memory is taken as entries are
    /// made (`BPF_F_NO_PREALLOC`), not for the whole capacity up front.
    pub fn create(entries: u32) -> Result<FlowCache, XdpError> {
        let map = BpfMap::create_with_flags(
            MapType::Hash,
            "xdpvs_flows",
            FLOW_KEY_SIZE as u32,
            FLOW_VALUE_SIZE as u32,
            entries.max(1),
            sys::BPF_F_NO_PREALLOC,
        )?;
        let dests = BpfMap::create_with_flags(
            MapType::PercpuHash,
            "xdpvs_dests",
            DEST_KEY_SIZE as u32,
            DEST_VALUE_SIZE as u32,
            DEST_ENTRIES,
            sys::BPF_F_NO_PREALLOC,
        )?;
        Ok(FlowCache {
            map: Arc::new(map),
            dests: Arc::new(dests),
        })
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        self.map.as_fd().as_raw_fd()
    }

    pub(super) fn dests_raw_fd(&self) -> RawFd {
        self.dests.as_fd().as_raw_fd()
    }

    /// What the fast path forwarded, per real server and direction, since
    /// the map was made (entries [`FlowCache::forget_dests`] removed aside).
    pub fn dest_counters(&self) -> Result<Vec<DestUse>, XdpError> {
        let mut out = Vec::new();
        self.dests.for_each_batch(|k, v| {
            if let Some(u) = DestUse::of(k, v) {
                out.push(u);
            }
        })?;
        Ok(out)
    }

    /// Remove the counters of the real servers `keep` refuses (no longer
    /// configured), returning what they held. A packet counted on another
    /// CPU between the read and the removal is lost to the totals; one
    /// counted after makes the entry again.
    pub fn forget_dests(&self, keep: impl Fn(u32) -> bool) -> Result<Vec<DestUse>, XdpError> {
        let mut gone = Vec::new();
        for u in self.dest_counters()? {
            if keep(u.dest) {
                continue;
            }
            let mut key = [0u8; DEST_KEY_SIZE];
            key[0..4].copy_from_slice(&u.dest.to_ne_bytes());
            key[4..8].copy_from_slice(&u32::from(u.reply).to_ne_bytes());
            let mut v = vec![0u8; self.dests.value_buf_size()];
            if self.dests.lookup_and_delete(&key, &mut v)? {
                gone.extend(DestUse::of(&key, &v));
            }
        }
        Ok(gone)
    }

    /// Capacity in flows.
    pub fn capacity(&self) -> u32 {
        self.map.max_entries()
    }

    /// Install (or replace) an entry. `Err` when the map is full (E2BIG)
    /// or the kernel refuses: the flow stays on the AF_XDP path.
    pub fn install(&self, e: &OffloadEntry, now_ns: u64) -> Result<(), XdpError> {
        self.map
            .update(&encode_key(&e.key), &encode_entry(e, now_ns), sys::BPF_ANY)
    }

    /// Install every entry of `batch` in order (`BPF_MAP_UPDATE_BATCH`: one
    /// call for the lot), then empty it. Returns how many the kernel
    /// refused (the map full): those flows stay on the AF_XDP path.
    pub fn install_batch(&self, batch: &mut InstallBatch) -> u64 {
        let mut refused = 0;
        let (mut k, mut v) = (&batch.keys[..], &batch.values[..]);
        while !k.is_empty() {
            let n = k.len() / FLOW_KEY_SIZE;
            match self.map.update_batch(k, v, sys::BPF_ANY) {
                (_, Ok(())) => break,
                (done, Err(_)) if done >= n => {
                    // Refused before any element (the count not written
                    // back): one call per entry says which.
                    for (key, value) in k
                        .chunks_exact(FLOW_KEY_SIZE)
                        .zip(v.chunks_exact(FLOW_VALUE_SIZE))
                    {
                        if self.map.update(key, value, sys::BPF_ANY).is_err() {
                            refused += 1;
                        }
                    }
                    break;
                }
                (done, Err(_)) => {
                    // Element `done` was refused: skip it, go on.
                    refused += 1;
                    let (kd, vd) = ((done + 1) * FLOW_KEY_SIZE, (done + 1) * FLOW_VALUE_SIZE);
                    k = k.get(kd..).unwrap_or_default();
                    v = v.get(vd..).unwrap_or_default();
                }
            }
        }
        batch.keys.clear();
        batch.values.clear();
        refused
    }

    /// Remove the entry of `key`, returning what the program counted on it.
    pub fn remove(&self, key: &FlowKey) -> Result<Option<FlowUse>, XdpError> {
        let mut v = [0u8; FLOW_VALUE_SIZE];
        if self.map.lookup_and_delete(&encode_key(key), &mut v)? {
            Ok(Some(FlowUse::of(&v)))
        } else {
            Ok(None)
        }
    }

    /// What the program recorded on the entry of `key`.
    pub fn get(&self, key: &FlowKey) -> Result<Option<FlowUse>, XdpError> {
        let mut v = [0u8; FLOW_VALUE_SIZE];
        if self.map.lookup(&encode_key(key), &mut v)? {
            Ok(Some(FlowUse::of(&v)))
        } else {
            Ok(None)
        }
    }

    /// Every entry's use (for statistics): `BPF_MAP_LOOKUP_BATCH`, a
    /// thousand entries a call.
    pub fn all(&self) -> Result<Vec<(Proto, FlowUse)>, XdpError> {
        let mut out = Vec::new();
        self.map.for_each_batch(|k, v| {
            let proto = k
                .get(36)
                .and_then(|p| Proto::from_number(*p))
                .unwrap_or(Proto::Tcp);
            if let Ok(v) = <&[u8; FLOW_VALUE_SIZE]>::try_from(v) {
                out.push((proto, FlowUse::of(v)));
            }
        })?;
        Ok(out)
    }
}

impl FastPathSeen for FlowCache {
    fn last_seen(&self, key: &FlowKey) -> Option<Millis> {
        self.get(key).ok().flatten().and_then(|u| u.last_seen_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::model::DestId;
    use crate::shard::nexthop::NextHop;

    #[test]
    fn key_and_entry_layout() {
        let k = FlowKey {
            proto: Proto::Udp,
            src: "198.18.1.2".parse().unwrap(),
            dst: "198.18.0.100".parse().unwrap(),
            sport: 0x1234,
            dport: 53,
        };
        let b = encode_key(&k);
        assert_eq!(&b[0..4], &[198, 18, 1, 2]);
        assert!(b[4..16].iter().all(|&x| x == 0));
        assert_eq!(&b[16..20], &[198, 18, 0, 100]);
        assert_eq!(&b[32..38], &[0x12, 0x34, 0, 53, 17, 4]);
        let e = OffloadEntry {
            key: k,
            dest: DestId(7),
            reply: false,
            action: FlowAction::Dnat {
                addr: "2001:db8::10".parse().unwrap(),
                port: 8080,
            },
            hop: NextHop {
                ifindex: 3,
                src_mac: [2, 0, 0, 0, 0, 1],
                dst_mac: [2, 0, 0, 0, 0, 2],
                mtu: 1500,
            },
        };
        let v = encode_entry(&e, 99);
        assert_eq!(&v[0..12], &[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        assert_eq!(v[18], ACTION_DNAT);
        assert_eq!(&v[20..22], &[0x20, 0x01]);
        assert_eq!(&v[36..38], &8080u16.to_be_bytes());
        assert_eq!(FlowUse::of(&v).dest, 7);
        assert_eq!(u64_at(&v, 48), 99);
        assert!(v[80..120].iter().all(|&x| x == 0), "no tunnel");
        let g = OffloadEntry {
            action: FlowAction::Gue {
                src: "198.18.0.2".parse().unwrap(),
                dst: "2001:db8::11".parse().unwrap(),
                sport: 0xc123,
                dport: 6080,
            },
            ..e
        };
        let v = encode_entry(&g, 1);
        assert_eq!(v[18], ACTION_GUE);
        assert!(v[20..38].iter().all(|&x| x == 0), "no NAT");
        assert_eq!(&v[80..84], &[198, 18, 0, 2]);
        assert!(v[84..96].iter().all(|&x| x == 0));
        assert_eq!(&v[96..98], &[0x20, 0x01]);
        assert_eq!(&v[112..117], &[0xc1, 0x23, 0x17, 0xc0, 4]);
        let i = OffloadEntry {
            action: FlowAction::Ipip {
                src: "2001:db8::2".parse().unwrap(),
                dst: "2001:db8::11".parse().unwrap(),
            },
            ..e
        };
        let v = encode_entry(&i, 1);
        assert_eq!(v[18], ACTION_IPIP);
        assert_eq!(&v[112..120], &[0, 0, 0, 0, 6, 0, 0, 0]);
    }
}
