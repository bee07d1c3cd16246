//! sh: source hashing (IPVS `ip_vs_sh.c`).
//!
//! A 256-bucket table maps `hash_32(sport + fold(src))` (the port only with
//! `hash_port`) to a server; weights give consecutive buckets. The chosen
//! server must be available, else `None`, or with `fallback` the IPVS walk
//! over the other buckets.

use super::bucket::BucketTable;
use super::hash::addr_fold;
use super::{DestSpec, DestStat, SchedKey, SchedParams, SchedState, Scheduler};

/// Source hashing scheduler.
#[derive(Clone, Debug)]
pub struct Sh {
    table: BucketTable,
    fallback: bool,
    hash_port: bool,
}

impl Sh {
    /// Build the bucket table from the build-time weights.
    pub fn new(dests: &[DestSpec], params: &SchedParams) -> Self {
        Sh {
            table: BucketTable::build(dests),
            fallback: params.fallback,
            hash_port: params.hash_port,
        }
    }

    /// Buckets held by each destination index.
    pub fn bucket_counts(&self, n: usize) -> Vec<usize> {
        self.table.counts(n)
    }
}

impl Scheduler for Sh {
    fn name(&self) -> &'static str {
        "sh"
    }

    fn schedule(&self, _st: &mut SchedState, dests: &[DestStat], key: &SchedKey) -> Option<usize> {
        let port = if self.hash_port { key.sport } else { 0 };
        let v = u32::from(port).wrapping_add(addr_fold(&key.src));
        self.table.lookup(dests, v, self.fallback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn spec(i: u8, w: u32) -> DestSpec {
        DestSpec {
            addr: IpAddr::V4(Ipv4Addr::new(198, 18, 1, i)),
            port: 80,
            weight: w,
        }
    }
    fn stat(w: u32) -> DestStat {
        DestStat {
            weight: w,
            ..Default::default()
        }
    }
    fn key(src: u32, sport: u16) -> SchedKey {
        SchedKey {
            src: IpAddr::V4(Ipv4Addr::from(src)),
            dst: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
            sport,
            dport: 80,
        }
    }

    #[test]
    fn same_source_same_server_regardless_of_port_and_dest() {
        let specs = [spec(1, 1), spec(2, 1), spec(3, 1)];
        let s = Sh::new(&specs, &SchedParams::default());
        let d = [stat(1), stat(1), stat(1)];
        let mut st = SchedState::default();
        for src in 0xC612_0000u32..0xC612_0100 {
            let a = s.schedule(&mut st, &d, &key(src, 1000));
            assert!(a.is_some());
            let mut k = key(src, 2000);
            k.dst = IpAddr::V4(Ipv4Addr::new(198, 19, 9, 9));
            assert_eq!(s.schedule(&mut st, &d, &k), a);
        }
    }

    #[test]
    fn all_servers_reached_over_many_sources() {
        let specs = [spec(1, 1), spec(2, 1), spec(3, 1)];
        let s = Sh::new(&specs, &SchedParams::default());
        let d = [stat(1), stat(1), stat(1)];
        let mut st = SchedState::default();
        let mut hit = [0usize; 3];
        for src in 0xC612_0000u32..0xC612_0400 {
            if let Some(i) = s.schedule(&mut st, &d, &key(src, 0)) {
                hit[i] += 1;
            }
        }
        assert!(hit.iter().all(|&h| h > 200), "{hit:?}");
    }

    #[test]
    fn hash_port_spreads_one_source_over_servers() {
        let specs = [spec(1, 1), spec(2, 1), spec(3, 1), spec(4, 1)];
        let d = [stat(1); 4];
        let mut st = SchedState::default();
        let with = Sh::new(
            &specs,
            &SchedParams {
                hash_port: true,
                ..Default::default()
            },
        );
        let without = Sh::new(&specs, &SchedParams::default());
        let mut a = std::collections::HashSet::new();
        let mut b = std::collections::HashSet::new();
        for p in 1000..1100 {
            a.insert(with.schedule(&mut st, &d, &key(0xC612_0001, p)));
            b.insert(without.schedule(&mut st, &d, &key(0xC612_0001, p)));
        }
        assert_eq!(a.len(), 4);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn bucket_counts_proportional_to_weight() {
        // 4+3+1 = 8 divides 256: exactly 128/96/32 buckets.
        let s = Sh::new(
            &[spec(1, 4), spec(2, 3), spec(3, 1), spec(4, 0)],
            &SchedParams::default(),
        );
        assert_eq!(s.bucket_counts(4), vec![128, 96, 32, 0]);
    }

    #[test]
    fn unavailable_gives_none_and_fallback_gives_other() {
        let specs = [spec(1, 1), spec(2, 1), spec(3, 1)];
        let plain = Sh::new(&specs, &SchedParams::default());
        let fb = Sh::new(
            &specs,
            &SchedParams {
                fallback: true,
                ..Default::default()
            },
        );
        let mut st = SchedState::default();
        let up = [stat(1), stat(1), stat(1)];
        let mut checked = 0;
        for src in 0xC612_0000u32..0xC612_0100 {
            let k = key(src, 0);
            let Some(orig) = plain.schedule(&mut st, &up, &k) else {
                panic!("all up")
            };
            let mut down = up;
            if orig == 0 {
                down[0].overloaded = true;
            } else {
                down[orig].weight = 0;
            }
            assert_eq!(plain.schedule(&mut st, &down, &k), None);
            let alt = fb.schedule(&mut st, &down, &k);
            assert!(matches!(alt, Some(i) if i != orig), "{alt:?} orig {orig}");
            // The fallback choice is deterministic.
            assert_eq!(fb.schedule(&mut st, &down, &k), alt);
            checked += 1;
        }
        assert_eq!(checked, 256);
        // Everything down: None even with fallback.
        let none = [DestStat::default(); 3];
        assert_eq!(fb.schedule(&mut st, &none, &key(1, 0)), None);
    }

    #[test]
    fn empty_and_zero_weights_none() {
        let mut st = SchedState::default();
        let s = Sh::new(&[], &SchedParams::default());
        assert_eq!(s.schedule(&mut st, &[], &key(1, 1)), None);
        let s = Sh::new(&[spec(1, 0), spec(2, 0)], &SchedParams::default());
        assert_eq!(s.schedule(&mut st, &[stat(0), stat(0)], &key(1, 1)), None);
    }
}
