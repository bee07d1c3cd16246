//! nq: never queue (IPVS `ip_vs_nq.c`).
//!
//! The first available server with no active connection wins at once;
//! otherwise as sed: minimise `(active + 1) / weight`, first of equals.

use super::sed::sed_overhead;
use super::{DestStat, SchedKey, SchedState, Scheduler};

/// Never-queue scheduler.
#[derive(Clone, Copy, Debug, Default)]
pub struct Nq;

impl Scheduler for Nq {
    fn name(&self) -> &'static str {
        "nq"
    }

    fn schedule(&self, _st: &mut SchedState, dests: &[DestStat], _key: &SchedKey) -> Option<usize> {
        let mut least: Option<(usize, u64, u32)> = None;
        for (i, d) in dests.iter().enumerate() {
            if !d.available() {
                continue;
            }
            if d.active == 0 {
                return Some(i);
            }
            let doh = sed_overhead(d);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::sched::tests::{any_key, conns};

    fn pick(d: &[DestStat]) -> Option<usize> {
        Nq.schedule(&mut SchedState::default(), d, &any_key())
    }

    #[test]
    fn idle_server_first_even_if_lighter() {
        // sed would pick index 1 ((2+1)/100); nq takes the idle one.
        assert_eq!(pick(&[conns(1, 0, 50), conns(100, 2, 0)]), Some(0));
        assert_eq!(pick(&[conns(100, 2, 0), conns(1, 0, 50)]), Some(1));
    }

    #[test]
    fn first_idle_wins() {
        assert_eq!(
            pick(&[conns(1, 1, 0), conns(1, 0, 0), conns(50, 0, 0)]),
            Some(1)
        );
    }

    #[test]
    fn no_idle_falls_back_to_sed() {
        // (1+1)/1 = 2 vs (3+1)/4 = 1.
        assert_eq!(pick(&[conns(1, 1, 0), conns(4, 3, 0)]), Some(1));
        // tie (1+1)/1 == (3+1)/2: first.
        assert_eq!(pick(&[conns(1, 1, 0), conns(2, 3, 0)]), Some(0));
    }

    #[test]
    fn idle_but_unavailable_is_skipped() {
        let mut d = [conns(1, 0, 0), conns(0, 0, 0), conns(1, 4, 0)];
        d[0].overloaded = true;
        assert_eq!(pick(&d), Some(2));
    }
}
