//! lc: least connection (IPVS `ip_vs_lc.c`).
//!
//! Picks the available server with the smallest `active * 256 + inactive`;
//! on ties the first one in order wins.

use super::{DestStat, SchedKey, SchedState, Scheduler};

/// Least-connection scheduler.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lc;

impl Scheduler for Lc {
    fn name(&self) -> &'static str {
        "lc"
    }

    fn schedule(&self, _st: &mut SchedState, dests: &[DestStat], _key: &SchedKey) -> Option<usize> {
        let mut least: Option<(usize, u64)> = None;
        for (i, d) in dests.iter().enumerate() {
            if !d.available() {
                continue;
            }
            let doh = d.conn_overhead();
            if least.is_none_or(|(_, loh)| doh < loh) {
                least = Some((i, doh));
            }
        }
        least.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::sched::tests::{any_key, conns};

    fn pick(d: &[DestStat]) -> Option<usize> {
        Lc.schedule(&mut SchedState::default(), d, &any_key())
    }

    #[test]
    fn active_counts_256_times_inactive() {
        // 1 active (256) is worse than 255 inactive, better than 257 inactive.
        assert_eq!(pick(&[conns(1, 1, 0), conns(1, 0, 255)]), Some(1));
        assert_eq!(pick(&[conns(1, 1, 0), conns(1, 0, 257)]), Some(0));
    }

    #[test]
    fn weight_is_ignored_except_zero() {
        assert_eq!(pick(&[conns(100, 5, 0), conns(1, 4, 0)]), Some(1));
        assert_eq!(pick(&[conns(100, 5, 0), conns(0, 0, 0)]), Some(0));
    }

    #[test]
    fn tie_picks_first() {
        assert_eq!(
            pick(&[conns(1, 3, 1), conns(1, 2, 2), conns(1, 2, 2)]),
            Some(1)
        );
    }

    #[test]
    fn skips_overloaded() {
        let mut d = [conns(1, 0, 0), conns(1, 9, 0)];
        d[0].overloaded = true;
        assert_eq!(pick(&d), Some(1));
    }
}
