//! wlc: weighted least connection (IPVS `ip_vs_wlc.c`).
//!
//! Minimises `overhead / weight` with `overhead = active * 256 + inactive`,
//! compared by cross multiplication (`loh * w_d > doh * w_least`); on ties
//! the first server in order wins.

use super::{DestStat, SchedKey, SchedState, Scheduler};

/// Weighted least-connection scheduler.
#[derive(Clone, Copy, Debug, Default)]
pub struct Wlc;

/// Index of the available server minimising `overhead(d) / weight(d)`, by
/// IPVS's cross multiplication; the first of equals wins. Shared by wlc/sed.
pub(crate) fn least_weighted(
    dests: &[DestStat],
    overhead: impl Fn(&DestStat) -> u64,
) -> Option<usize> {
    let mut least: Option<(usize, u64, u32)> = None;
    for (i, d) in dests.iter().enumerate() {
        if !d.available() {
            continue;
        }
        let doh = overhead(d);
        let better = match least {
            None => true,
            Some((_, loh, lw)) => {
                u128::from(loh) * u128::from(d.weight) > u128::from(doh) * u128::from(lw)
            }
        };
        if better {
            least = Some((i, doh, d.weight));
        }
    }
    least.map(|(i, _, _)| i)
}

impl Scheduler for Wlc {
    fn name(&self) -> &'static str {
        "wlc"
    }

    fn schedule(&self, _st: &mut SchedState, dests: &[DestStat], _key: &SchedKey) -> Option<usize> {
        least_weighted(dests, DestStat::conn_overhead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::sched::tests::{any_key, conns};

    fn pick(d: &[DestStat]) -> Option<usize> {
        Wlc.schedule(&mut SchedState::default(), d, &any_key())
    }

    #[test]
    fn overhead_divided_by_weight() {
        // 512/2 = 256 < 300/1.
        assert_eq!(pick(&[conns(1, 0, 300), conns(2, 2, 0)]), Some(1));
        // 512/2 = 256 > 200/1.
        assert_eq!(pick(&[conns(1, 0, 200), conns(2, 2, 0)]), Some(0));
    }

    #[test]
    fn tie_picks_first() {
        // 256/1 == 512/2: the first stays.
        assert_eq!(pick(&[conns(1, 1, 0), conns(2, 2, 0)]), Some(0));
        assert_eq!(pick(&[conns(2, 2, 0), conns(1, 1, 0)]), Some(0));
    }

    #[test]
    fn idle_servers_tie_at_zero_first_wins() {
        assert_eq!(pick(&[conns(1, 0, 0), conns(100, 0, 0)]), Some(0));
    }

    #[test]
    fn skips_zero_weight_and_overloaded() {
        let mut d = [conns(0, 0, 0), conns(5, 0, 0), conns(1, 9, 9)];
        d[1].overloaded = true;
        assert_eq!(pick(&d), Some(2));
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let d = [
            conns(u32::MAX, u32::MAX, u32::MAX),
            conns(u32::MAX - 1, u32::MAX, 0),
        ];
        assert_eq!(pick(&d), Some(1));
    }
}
