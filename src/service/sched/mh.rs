//! mh: Maglev hashing (IPVS `ip_vs_mh.c`).
//!
//! Every server gets a permutation of the table slots from two hashes of its
//! address and port (`offset`, `skip`); servers take turns claiming their next
//! free preferred slot, each `turns` slots in a row (weight divided by the
//! gcd of weights, shifted right so the largest fits in 6 bits), until the
//! whole prime-sized table is filled. Servers with weight 0 get no slot.
//! Lookups hash the source address (and source port with `hash_port`) into
//! the table; an unavailable server gives `None`, or with `fallback` the IPVS
//! walk over rehashed slots. Hashes are the kernel's (hsiphash with IPVS's
//! fixed keys), so tables match IPVS for the same servers and table size.

use super::bucket::usable;
use super::hash::{addr_fold, gcd, hsiphash_u32, is_prime, SipKey};
use super::{DestSpec, DestStat, SchedError, SchedKey, SchedParams, SchedState, Scheduler};

/// Default lookup table size (a prime).
pub const MH_DEFAULT_TABLE_SIZE: u32 = 65537;
/// Largest accepted table size (bounds memory: one byte to four per slot).
pub const MH_MAX_TABLE_SIZE: u32 = 1 << 24;
/// IPVS `IP_VS_MH_TAB_BITS`: bits kept of `max_weight / gcd`.
const TAB_BITS: u32 = 6;
/// IPVS `generate_hash_secret` keys.
const HASH1: SipKey = SipKey(2_654_435_761, 2_654_435_761);
const HASH2: SipKey = SipKey(2_654_446_892, 2_654_446_892);

/// Slot storage, as narrow as the number of servers allows.
#[derive(Clone)]
enum Slots {
    /// No server with a positive weight: every lookup misses.
    Empty,
    U8(Box<[u8]>),
    U16(Box<[u16]>),
    U32(Box<[u32]>),
}

/// Maglev-hashing scheduler.
#[derive(Clone)]
pub struct Mh {
    size: u32,
    slots: Slots,
    /// Indexes of servers that own slots (build weight > 0).
    members: Vec<usize>,
    fallback: bool,
    hash_port: bool,
}

impl std::fmt::Debug for Mh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mh")
            .field("size", &self.size)
            .field("members", &self.members)
            .field("fallback", &self.fallback)
            .field("hash_port", &self.hash_port)
            .finish()
    }
}

/// IPVS `ip_vs_mh_hashkey`: hsiphash of `offset + port + fold(addr)`.
fn hashkey(fold: u32, port: u16, key: SipKey, offset: u32) -> u32 {
    hsiphash_u32(offset.wrapping_add(u32::from(port)).wrapping_add(fold), key)
}

/// Linux `fls`: 1-based index of the highest set bit (0 for 0).
fn fls(x: u64) -> u32 {
    64 - x.leading_zeros()
}

/// Per-server permutation state (IPVS `ip_vs_mh_dest_setup`).
struct Setup {
    index: u32,
    perm: u32,
    skip: u32,
    turns: u64,
}

impl Mh {
    /// Validate the table size and populate the table from build-time weights.
    pub fn new(dests: &[DestSpec], params: &SchedParams) -> Result<Self, SchedError> {
        let size = params.mh_table_size;
        if size > MH_MAX_TABLE_SIZE {
            return Err(SchedError::TableTooLarge {
                size,
                max: MH_MAX_TABLE_SIZE,
            });
        }
        if !is_prime(size) || size as usize <= dests.len() {
            return Err(SchedError::BadTableSize(size));
        }
        let g = dests
            .iter()
            .filter(|d| d.weight > 0)
            .fold(0u64, |g, d| gcd(g, u64::from(d.weight)));
        let mut mh = Mh {
            size,
            slots: Slots::Empty,
            members: Vec::new(),
            fallback: params.fallback,
            hash_port: params.hash_port,
        };
        if g == 0 {
            return Ok(mh);
        }
        let maxw = dests.iter().map(|d| u64::from(d.weight)).max().unwrap_or(0);
        let rshift = fls(maxw / g).saturating_sub(TAB_BITS);
        let mut setup = Vec::with_capacity(dests.len());
        for (i, d) in dests.iter().enumerate() {
            let w = u64::from(d.weight);
            let turns = match (w / g) >> rshift {
                0 => u64::from(w != 0),
                t => t,
            };
            if turns == 0 {
                continue;
            }
            let fold = addr_fold(&d.addr);
            let offset = hashkey(fold, d.port, HASH1, 0) % size;
            let skip = hashkey(fold, d.port, HASH2, 0) % (size - 1) + 1;
            let index = u32::try_from(i).map_err(|_| SchedError::BadTableSize(size))?;
            setup.push(Setup {
                index,
                perm: offset,
                skip,
                turns,
            });
            mh.members.push(i);
        }
        let table = populate(size, &mut setup);
        mh.slots = if dests.len() < usize::from(u8::MAX) {
            Slots::U8(table.iter().map(|&d| d as u8).collect())
        } else if dests.len() < usize::from(u16::MAX) {
            Slots::U16(table.iter().map(|&d| d as u16).collect())
        } else {
            Slots::U32(table.into_boxed_slice())
        };
        Ok(mh)
    }

    /// The lookup table size (a prime).
    pub fn table_size(&self) -> u32 {
        self.size
    }

    /// The server index in slot `i`, if any.
    pub fn slot(&self, i: u32) -> Option<usize> {
        let i = i as usize;
        match &self.slots {
            Slots::Empty => None,
            Slots::U8(t) => t.get(i).map(|&d| usize::from(d)),
            Slots::U16(t) => t.get(i).map(|&d| usize::from(d)),
            Slots::U32(t) => t.get(i).map(|&d| d as usize),
        }
    }

    /// Slots held by each server index, and the number of empty slots.
    pub fn slot_counts(&self, n: usize) -> (Vec<usize>, usize) {
        let mut c = vec![0; n];
        let mut empty = 0;
        for i in 0..self.size {
            match self.slot(i).and_then(|d| c.get_mut(d)) {
                Some(x) => *x += 1,
                None => empty += 1,
            }
        }
        (c, empty)
    }
}

/// IPVS `ip_vs_mh_populate`: round after round, each server claims `turns`
/// free slots, each time its next preferred one. `setup` is non-empty.
fn populate(size: u32, setup: &mut [Setup]) -> Vec<u32> {
    let n = size as usize;
    if let [only] = setup {
        // One server fills everything; the permutation walk is moot.
        return vec![only.index; n];
    }
    let mut table = vec![0u32; n];
    let mut used = vec![0u64; n.div_ceil(64)];
    let mut filled = 0usize;
    loop {
        for ds in setup.iter_mut() {
            for _ in 0..ds.turns {
                let mut c = ds.perm as usize;
                while used.get(c / 64).is_some_and(|w| w & (1 << (c % 64)) != 0) {
                    ds.perm += ds.skip;
                    if ds.perm >= size {
                        ds.perm -= size;
                    }
                    c = ds.perm as usize;
                }
                if let Some(w) = used.get_mut(c / 64) {
                    *w |= 1 << (c % 64);
                }
                if let Some(t) = table.get_mut(c) {
                    *t = ds.index;
                }
                filled += 1;
                if filled == n {
                    return table;
                }
            }
        }
    }
}

impl Scheduler for Mh {
    fn name(&self) -> &'static str {
        "mh"
    }

    fn schedule(&self, _st: &mut SchedState, dests: &[DestStat], key: &SchedKey) -> Option<usize> {
        let port = if self.hash_port { key.sport } else { 0 };
        let fold = addr_fold(&key.src);
        let ihash = hashkey(fold, port, HASH1, 0) % self.size;
        let first = self.slot(ihash)?;
        if usable(dests, first) {
            return Some(first);
        }
        // Without a usable slot owner the walk below can only fail: skip it.
        if !self.fallback || !self.members.iter().any(|&m| usable(dests, m)) {
            return None;
        }
        for offset in 0..self.size {
            let roffset = ((u64::from(offset) + u64::from(ihash)) % u64::from(self.size)) as u32;
            let d = self.slot(hashkey(fold, port, HASH1, roffset) % self.size)?;
            if usable(dests, d) {
                return Some(d);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn spec(i: u32, w: u32) -> DestSpec {
        DestSpec {
            addr: IpAddr::V4(Ipv4Addr::from(0xC612_0100 + i)),
            port: 8080,
            weight: w,
        }
    }
    fn stat(w: u32) -> DestStat {
        DestStat {
            weight: w,
            ..Default::default()
        }
    }
    fn key(n: u32) -> SchedKey {
        // Spread test clients over 198.18.0.0/15 with a cheap mixer.
        let src = 0xC612_0000 | (n.wrapping_mul(0x9E37_79B9) >> 15);
        SchedKey {
            src: IpAddr::V4(Ipv4Addr::from(src)),
            dst: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
            sport: (n % 50_000) as u16 + 1024,
            dport: 80,
        }
    }
    fn key_port(n: u32) -> SchedKey {
        let mut k = key(n);
        k.src = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        k.sport = (n % 60_000) as u16 + 1024;
        k
    }
    fn build(specs: &[DestSpec], params: &SchedParams) -> Mh {
        match Mh::new(specs, params) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        }
    }
    fn params_port() -> SchedParams {
        SchedParams {
            hash_port: true,
            ..Default::default()
        }
    }

    #[test]
    fn deterministic_across_builds() {
        let specs: Vec<_> = (0..7).map(|i| spec(i, 1 + i % 3)).collect();
        let a = build(&specs, &SchedParams::default());
        let b = build(&specs, &SchedParams::default());
        assert!((0..a.table_size()).all(|i| a.slot(i) == b.slot(i)));
        let d: Vec<_> = specs.iter().map(|s| stat(s.weight)).collect();
        let mut st = SchedState::default();
        for n in 0..1000 {
            assert_eq!(
                a.schedule(&mut st, &d, &key(n)),
                b.schedule(&mut st, &d, &key(n))
            );
        }
    }

    #[test]
    fn every_slot_filled() {
        for (n, size) in [(1u32, 251u32), (3, 251), (10, 65537), (250, 251)] {
            let specs: Vec<_> = (0..n).map(|i| spec(i, 1 + i % 4)).collect();
            let m = build(
                &specs,
                &SchedParams {
                    mh_table_size: size,
                    ..Default::default()
                },
            );
            let (counts, empty) = m.slot_counts(n as usize);
            assert_eq!(empty, 0, "n {n} size {size}");
            assert_eq!(counts.iter().sum::<usize>(), size as usize);
        }
    }

    #[test]
    fn wide_slot_storage_for_many_servers() {
        let specs: Vec<_> = (0..300).map(|i| spec(i, 1)).collect();
        let m = build(
            &specs,
            &SchedParams {
                mh_table_size: 1021,
                ..Default::default()
            },
        );
        let (counts, empty) = m.slot_counts(300);
        assert_eq!(empty, 0);
        assert!(
            counts[299] > 0 && counts.iter().all(|&c| c >= 1),
            "{counts:?}"
        );
    }

    #[test]
    fn distribution_proportional_to_weight() {
        let weights = [1u32, 2, 3, 4];
        let specs: Vec<_> = (0..4).map(|i| spec(i, weights[i as usize])).collect();
        let m = build(&specs, &SchedParams::default());
        let (counts, _) = m.slot_counts(4);
        for (i, &c) in counts.iter().enumerate() {
            let want = 65537.0 * f64::from(weights[i]) / 10.0;
            let ratio = c as f64 / want;
            assert!((0.9..1.1).contains(&ratio), "{counts:?}");
        }
        // And so are the keys.
        let d: Vec<_> = weights.iter().map(|&w| stat(w)).collect();
        let mut st = SchedState::default();
        let mut hits = [0usize; 4];
        for n in 0..40_000 {
            if let Some(i) = m.schedule(&mut st, &d, &key(n)) {
                hits[i] += 1;
            }
        }
        for (i, &h) in hits.iter().enumerate() {
            let ratio = h as f64 / (4000.0 * f64::from(weights[i]));
            assert!((0.85..1.15).contains(&ratio), "{hits:?}");
        }
    }

    #[test]
    fn large_weights_are_shifted_but_stay_proportional() {
        // max/gcd = 1000 > 6 bits: IPVS shifts turns right by 4.
        let specs = [spec(0, 1000), spec(1, 500), spec(2, 1)];
        let m = build(&specs, &SchedParams::default());
        let (counts, empty) = m.slot_counts(3);
        assert_eq!(empty, 0);
        // turns 62, 31, 1 (the weight-1 server keeps one turn).
        let r = counts[0] as f64 / counts[1] as f64;
        assert!((1.8..2.2).contains(&r), "{counts:?}");
        assert!(counts[2] > 0 && counts[2] < counts[1] / 10, "{counts:?}");
    }

    #[test]
    fn removing_one_of_ten_moves_about_a_tenth() {
        let specs: Vec<_> = (0..10).map(|i| spec(i, 1)).collect();
        let full = build(&specs, &SchedParams::default());
        let removed = 4usize;
        let rest: Vec<_> = specs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != removed)
            .map(|(_, s)| *s)
            .collect();
        let less = build(&rest, &SchedParams::default());
        let d10 = vec![stat(1); 10];
        let d9 = vec![stat(1); 9];
        let mut st = SchedState::default();
        let (mut moved, mut survivors, mut survivors_moved) = (0usize, 0usize, 0usize);
        let total = 100_000u32;
        for n in 0..total {
            let k = key(n);
            let before = full.schedule(&mut st, &d10, &k);
            let after = less
                .schedule(&mut st, &d9, &k)
                .map(|i| if i >= removed { i + 1 } else { i });
            assert!(after.is_some() && after != Some(removed));
            if before != after {
                moved += 1;
            }
            if before != Some(removed) {
                survivors += 1;
                if before != after {
                    survivors_moved += 1;
                }
            }
        }
        let frac = moved as f64 / f64::from(total);
        assert!((0.05..0.2).contains(&frac), "moved {frac}");
        let surv = survivors_moved as f64 / survivors as f64;
        assert!(surv < 0.02, "survivors moved {surv}");
    }

    #[test]
    fn zero_weight_gets_no_keys() {
        let specs = [spec(0, 1), spec(1, 0), spec(2, 3)];
        let m = build(&specs, &params_port());
        let (counts, empty) = m.slot_counts(3);
        assert_eq!((counts[1], empty), (0, 0));
        let d = [stat(1), stat(0), stat(3)];
        let mut st = SchedState::default();
        for n in 0..5000 {
            assert_ne!(m.schedule(&mut st, &d, &key_port(n)), Some(1));
        }
    }

    #[test]
    fn table_size_validation() {
        let specs: Vec<_> = (0..5).map(|i| spec(i, 1)).collect();
        let p = |s| SchedParams {
            mh_table_size: s,
            ..Default::default()
        };
        for bad in [0u32, 1, 4, 65535, 65536, 3, 5] {
            assert_eq!(
                Mh::new(&specs, &p(bad)).err(),
                Some(SchedError::BadTableSize(bad)),
                "{bad}"
            );
        }
        assert!(Mh::new(&specs, &p(7)).is_ok());
        assert!(Mh::new(&specs, &p(MH_DEFAULT_TABLE_SIZE)).is_ok());
        assert!(matches!(
            Mh::new(&specs, &p(4_294_967_291)),
            Err(SchedError::TableTooLarge { .. })
        ));
    }

    #[test]
    fn unavailable_none_or_fallback() {
        let specs: Vec<_> = (0..4).map(|i| spec(i, 1)).collect();
        let plain = build(&specs, &SchedParams::default());
        let fb = build(
            &specs,
            &SchedParams {
                fallback: true,
                ..Default::default()
            },
        );
        let up = vec![stat(1); 4];
        let mut st = SchedState::default();
        for n in 0..200 {
            let k = key(n);
            let Some(orig) = plain.schedule(&mut st, &up, &k) else {
                panic!("all up")
            };
            let mut down = up.clone();
            down[orig].overloaded = true;
            assert_eq!(plain.schedule(&mut st, &down, &k), None);
            let alt = fb.schedule(&mut st, &down, &k);
            assert!(matches!(alt, Some(i) if i != orig), "{alt:?}");
            assert_eq!(fb.schedule(&mut st, &down, &k), alt);
        }
        let none = vec![stat(0); 4];
        assert_eq!(fb.schedule(&mut st, &none, &key(1)), None);
    }

    #[test]
    fn source_address_only_unless_hash_port() {
        let specs: Vec<_> = (0..8).map(|i| spec(i, 1)).collect();
        let d = vec![stat(1); 8];
        let mut st = SchedState::default();
        let a = build(&specs, &SchedParams::default());
        let b = build(&specs, &params_port());
        let mut sa = std::collections::HashSet::new();
        let mut sb = std::collections::HashSet::new();
        for n in 0..200 {
            sa.insert(a.schedule(&mut st, &d, &key_port(n)));
            sb.insert(b.schedule(&mut st, &d, &key_port(n)));
        }
        assert_eq!(sa.len(), 1);
        assert_eq!(sb.len(), 8);
    }

    #[test]
    fn ipv6_servers_and_clients() {
        let specs: Vec<_> = (0..3u16)
            .map(|i| DestSpec {
                addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 10 + i)),
                port: 80,
                weight: 1,
            })
            .collect();
        let m = build(&specs, &SchedParams::default());
        assert_eq!(m.slot_counts(3).1, 0);
        let d = vec![stat(1); 3];
        let mut st = SchedState::default();
        let mut seen = std::collections::HashSet::new();
        for n in 0..300u16 {
            let k = SchedKey {
                src: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, n, 1)),
                dst: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                sport: 1234,
                dport: 80,
            };
            seen.insert(m.schedule(&mut st, &d, &k));
        }
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn empty_and_zero_weights_none() {
        let mut st = SchedState::default();
        let m = build(&[], &SchedParams::default());
        assert_eq!(m.schedule(&mut st, &[], &key(1)), None);
        let m = build(&[spec(0, 0), spec(1, 0)], &SchedParams::default());
        assert_eq!(m.slot_counts(2), (vec![0, 0], 65537));
        assert_eq!(m.schedule(&mut st, &[stat(1), stat(1)], &key(1)), None);
    }
}
