//! dh: destination hashing (IPVS `ip_vs_dh.c`).
//!
//! The same 256-bucket table as sh, indexed by `hash_32(fold(dst))`. An
//! unavailable server gives `None` (IPVS dh has no fallback and no port flag).
//! Unlike IPVS dh, which gives every server one bucket in turn, buckets are
//! weight-proportional as in sh.

use super::bucket::BucketTable;
use super::hash::addr_fold;
use super::{DestSpec, DestStat, SchedKey, SchedState, Scheduler};

/// Destination hashing scheduler.
#[derive(Clone, Debug)]
pub struct Dh {
    table: BucketTable,
}

impl Dh {
    /// Build the bucket table from the build-time weights.
    pub fn new(dests: &[DestSpec]) -> Self {
        Dh {
            table: BucketTable::build(dests),
        }
    }

    /// Buckets held by each destination index.
    pub fn bucket_counts(&self, n: usize) -> Vec<usize> {
        self.table.counts(n)
    }
}

impl Scheduler for Dh {
    fn name(&self) -> &'static str {
        "dh"
    }

    fn schedule(&self, _st: &mut SchedState, dests: &[DestStat], key: &SchedKey) -> Option<usize> {
        self.table.lookup(dests, addr_fold(&key.dst), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn spec(i: u8, w: u32) -> DestSpec {
        DestSpec {
            addr: IpAddr::V4(Ipv4Addr::new(198, 18, 1, i)),
            port: 3128,
            weight: w,
        }
    }
    fn stat(w: u32) -> DestStat {
        DestStat {
            weight: w,
            ..Default::default()
        }
    }
    fn key(src: u32, dst: u32) -> SchedKey {
        SchedKey {
            src: IpAddr::V4(Ipv4Addr::from(src)),
            dst: IpAddr::V4(Ipv4Addr::from(dst)),
            sport: 40000,
            dport: 80,
        }
    }

    #[test]
    fn same_destination_same_server_for_any_source() {
        let d = Dh::new(&[spec(1, 1), spec(2, 1), spec(3, 1)]);
        let up = [stat(1); 3];
        let mut st = SchedState::default();
        let mut seen = std::collections::HashSet::new();
        for dst in 0xC613_0000u32..0xC613_0200 {
            let a = d.schedule(&mut st, &up, &key(0xC612_0001, dst));
            assert!(a.is_some());
            for src in [0xC612_0002u32, 0xC612_7777] {
                assert_eq!(d.schedule(&mut st, &up, &key(src, dst)), a);
            }
            seen.insert(a);
        }
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn bucket_counts_proportional_to_weight() {
        let d = Dh::new(&[spec(1, 2), spec(2, 0), spec(3, 6)]);
        assert_eq!(d.bucket_counts(3), vec![64, 0, 192]);
    }

    #[test]
    fn unavailable_gives_none() {
        let d = Dh::new(&[spec(1, 1), spec(2, 1)]);
        let mut st = SchedState::default();
        let k = key(1, 0xC613_0005);
        let Some(i) = d.schedule(&mut st, &[stat(1), stat(1)], &k) else {
            panic!("up")
        };
        let mut down = [stat(1), stat(1)];
        down[i].overloaded = true;
        assert_eq!(d.schedule(&mut st, &down, &k), None);
        down[i] = stat(0);
        assert_eq!(d.schedule(&mut st, &down, &k), None);
    }

    #[test]
    fn empty_and_zero_weights_none() {
        let mut st = SchedState::default();
        assert_eq!(Dh::new(&[]).schedule(&mut st, &[], &key(1, 2)), None);
        let d = Dh::new(&[spec(1, 0)]);
        assert_eq!(d.schedule(&mut st, &[stat(0)], &key(1, 2)), None);
    }
}
