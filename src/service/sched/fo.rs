//! fo: weighted fail over (IPVS `ip_vs_fo.c`).
//!
//! Picks the available server with the highest weight; the first of equals.

use super::{DestStat, SchedKey, SchedState, Scheduler};

/// Weighted fail-over scheduler.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fo;

impl Scheduler for Fo {
    fn name(&self) -> &'static str {
        "fo"
    }

    fn schedule(&self, _st: &mut SchedState, dests: &[DestStat], _key: &SchedKey) -> Option<usize> {
        let mut best: Option<(usize, u32)> = None;
        for (i, d) in dests.iter().enumerate() {
            if d.available() && best.is_none_or(|(_, hw)| d.weight > hw) {
                best = Some((i, d.weight));
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::sched::tests::{any_key, conns, stat};

    fn pick(d: &[DestStat]) -> Option<usize> {
        Fo.schedule(&mut SchedState::default(), d, &any_key())
    }

    #[test]
    fn highest_weight_regardless_of_load() {
        assert_eq!(
            pick(&[conns(2, 0, 0), conns(9, 1000, 0), conns(5, 0, 0)]),
            Some(1)
        );
    }

    #[test]
    fn tie_picks_first() {
        assert_eq!(pick(&[stat(1), stat(7), stat(7)]), Some(1));
    }

    #[test]
    fn fails_over_when_overloaded() {
        let mut d = [stat(2), stat(9), stat(5)];
        d[1].overloaded = true;
        assert_eq!(pick(&d), Some(2));
        d[2].weight = 0;
        assert_eq!(pick(&d), Some(0));
    }
}
