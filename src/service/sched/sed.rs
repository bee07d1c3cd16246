//! sed: shortest expected delay (IPVS `ip_vs_sed.c`).
//!
//! Minimises `(active + 1) / weight` by cross multiplication; inactive
//! connections are ignored; on ties the first server in order wins.

use super::wlc::least_weighted;
use super::{DestStat, SchedKey, SchedState, Scheduler};

/// Shortest-expected-delay scheduler.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sed;

/// IPVS sed/nq overhead: active connections + 1.
pub(crate) fn sed_overhead(d: &DestStat) -> u64 {
    u64::from(d.active) + 1
}

impl Scheduler for Sed {
    fn name(&self) -> &'static str {
        "sed"
    }

    fn schedule(&self, _st: &mut SchedState, dests: &[DestStat], _key: &SchedKey) -> Option<usize> {
        least_weighted(dests, sed_overhead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::sched::tests::{any_key, conns};

    fn pick(d: &[DestStat]) -> Option<usize> {
        Sed.schedule(&mut SchedState::default(), d, &any_key())
    }

    #[test]
    fn active_plus_one_over_weight() {
        // (0+1)/1 = 1 > (2+1)/4 = 0.75: the busier, heavier server wins.
        assert_eq!(pick(&[conns(1, 0, 0), conns(4, 2, 0)]), Some(1));
        // (0+1)/1 = 1 < (4+1)/4.
        assert_eq!(pick(&[conns(1, 0, 0), conns(4, 4, 0)]), Some(0));
    }

    #[test]
    fn idle_heavier_wins_over_idle_lighter() {
        // wlc would tie at 0 and keep the first; sed prefers weight 3.
        assert_eq!(pick(&[conns(1, 0, 0), conns(3, 0, 0)]), Some(1));
    }

    #[test]
    fn inactive_ignored() {
        assert_eq!(pick(&[conns(1, 1, 0), conns(1, 0, 1000)]), Some(1));
    }

    #[test]
    fn tie_picks_first() {
        // (1+1)/2 == (0+1)/1.
        assert_eq!(pick(&[conns(2, 1, 0), conns(1, 0, 0)]), Some(0));
    }

    #[test]
    fn skips_zero_weight_and_overloaded() {
        let mut d = [conns(0, 0, 0), conns(9, 0, 0), conns(1, 5, 0)];
        d[1].overloaded = true;
        assert_eq!(pick(&d), Some(2));
    }
}
