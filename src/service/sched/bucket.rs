//! The 256-bucket server table shared by sh and dh (IPVS `ip_vs_sh_reassign`).

use super::hash::hash_32;
use super::{DestSpec, DestStat};

/// Table bits (IPVS `CONFIG_IP_VS_SH_TAB_BITS` default).
pub const TAB_BITS: u32 = 8;
/// Number of buckets.
pub const TAB_SIZE: usize = 1 << TAB_BITS;
const TAB_MASK: u32 = (TAB_SIZE as u32) - 1;
const EMPTY: u32 = u32::MAX;

/// 256 buckets, each naming a destination index (or empty).
#[derive(Clone)]
pub struct BucketTable {
    buckets: [u32; TAB_SIZE],
}

impl std::fmt::Debug for BucketTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketTable")
            .field("filled", &self.buckets.iter().any(|&b| b != EMPTY))
            .finish()
    }
}

impl BucketTable {
    /// Fill the buckets as IPVS does: walk the destinations in order, giving
    /// each `weight` consecutive buckets, wrapping around until all 256 are
    /// assigned. Destinations with weight 0 at build time get no bucket (IPVS
    /// would give them one, which only ever answers "unavailable").
    pub fn build(dests: &[DestSpec]) -> Self {
        let mut buckets = [EMPTY; TAB_SIZE];
        let usable: Vec<(u32, u32)> = dests
            .iter()
            .enumerate()
            .filter(|(_, d)| d.weight > 0)
            .filter_map(|(i, d)| u32::try_from(i).ok().map(|i| (i, d.weight)))
            .collect();
        if usable.is_empty() {
            return BucketTable { buckets };
        }
        // Cycle over the servers, each repeated `weight` times (lazily, so
        // huge weights cost nothing), and take the first 256.
        let runs = usable
            .iter()
            .cycle()
            .flat_map(|&(idx, weight)| std::iter::repeat_n(idx, weight as usize));
        for (b, idx) in buckets.iter_mut().zip(runs) {
            *b = idx;
        }
        BucketTable { buckets }
    }

    /// The destination index in bucket `i` (masked to the table).
    pub fn bucket(&self, i: u32) -> Option<usize> {
        match self.buckets.get((i & TAB_MASK) as usize) {
            None | Some(&EMPTY) => None,
            Some(&d) => Some(d as usize),
        }
    }

    /// IPVS sh hash key: `(offset + hash_32(v, 8)) & mask`.
    pub fn hashkey(v: u32, offset: u32) -> u32 {
        offset.wrapping_add(hash_32(v, TAB_BITS)) & TAB_MASK
    }

    /// Look up hash input `v`; the chosen destination must be available.
    /// With `fallback`, walk the table as IPVS `ip_vs_sh_get_fallback` does.
    pub fn lookup(&self, dests: &[DestStat], v: u32, fallback: bool) -> Option<usize> {
        let ihash = Self::hashkey(v, 0);
        let first = self.bucket(ihash)?;
        if usable(dests, first) {
            return Some(first);
        }
        if !fallback {
            return None;
        }
        for offset in 0..TAB_SIZE as u32 {
            let roffset = (offset + ihash) % TAB_SIZE as u32;
            let d = self.bucket(Self::hashkey(v, roffset))?;
            if usable(dests, d) {
                return Some(d);
            }
        }
        None
    }

    /// How many buckets each destination index holds (for tests and stats).
    pub fn counts(&self, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &b in &self.buckets {
            if let Some(x) = c.get_mut(b as usize) {
                *x += 1;
            }
        }
        c
    }
}

/// `dests[i]` exists and may take a new connection.
pub fn usable(dests: &[DestStat], i: usize) -> bool {
    dests.get(i).is_some_and(DestStat::available)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn spec(w: u32) -> DestSpec {
        DestSpec {
            addr: IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1)),
            port: 80,
            weight: w,
        }
    }

    #[test]
    fn consecutive_weight_runs_wrap_around() {
        let t = BucketTable::build(&[spec(2), spec(1), spec(0), spec(3)]);
        let first: Vec<Option<usize>> = (0..8).map(|i| t.bucket(i)).collect();
        let expect = [0, 0, 1, 3, 3, 3, 0, 0];
        assert_eq!(first, expect.map(Some).to_vec());
        assert_eq!(t.counts(4)[2], 0);
    }

    #[test]
    fn heavy_first_dest_takes_everything_as_ipvs() {
        // IPVS hands out `weight` consecutive buckets: weight >= 256 fills all.
        let t = BucketTable::build(&[spec(300), spec(1)]);
        assert_eq!(t.counts(2), vec![256, 0]);
    }

    #[test]
    fn empty_or_zero_weights_give_empty_table() {
        let d = [DestStat {
            weight: 1,
            ..Default::default()
        }];
        assert_eq!(BucketTable::build(&[]).lookup(&d, 1, true), None);
        assert_eq!(BucketTable::build(&[spec(0)]).lookup(&d, 1, true), None);
    }

    #[test]
    fn fallback_walk_starts_at_double_ihash() {
        // hashkey(v, roffset) with roffset = offset + ihash visits
        // (2 * ihash + offset) & mask: every bucket exactly once.
        let v = 0x1234_5678;
        let ihash = BucketTable::hashkey(v, 0);
        let mut seen = [false; TAB_SIZE];
        for off in 0..TAB_SIZE as u32 {
            let h = BucketTable::hashkey(v, (off + ihash) % TAB_SIZE as u32);
            assert_eq!(h, (2 * ihash + off) & TAB_MASK);
            seen[h as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
