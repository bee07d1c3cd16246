//! ovf: overflow connection (IPVS `ip_vs_ovf.c`).
//!
//! Picks the highest-weight available server whose active connections do not
//! exceed its weight (`active <= weight`); the first of equal weights wins.
//! When it fills up, new connections overflow to the next-heaviest server.

use super::{DestStat, SchedKey, SchedState, Scheduler};

/// Overflow scheduler.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ovf;

impl Scheduler for Ovf {
    fn name(&self) -> &'static str {
        "ovf"
    }

    fn schedule(&self, _st: &mut SchedState, dests: &[DestStat], _key: &SchedKey) -> Option<usize> {
        let mut best: Option<(usize, u32)> = None;
        for (i, d) in dests.iter().enumerate() {
            if !d.available() || d.active > d.weight {
                continue;
            }
            if best.is_none_or(|(_, hw)| d.weight > hw) {
                best = Some((i, d.weight));
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::sched::tests::{any_key, conns};

    fn pick(d: &[DestStat]) -> Option<usize> {
        Ovf.schedule(&mut SchedState::default(), d, &any_key())
    }

    #[test]
    fn heaviest_until_active_exceeds_weight() {
        // Weight 3 server takes connections while active <= 3 (IPVS skips
        // only when active > weight), then overflow goes to weight 2.
        assert_eq!(pick(&[conns(2, 0, 0), conns(3, 0, 0)]), Some(1));
        assert_eq!(pick(&[conns(2, 0, 0), conns(3, 3, 0)]), Some(1));
        assert_eq!(pick(&[conns(2, 0, 0), conns(3, 4, 0)]), Some(0));
        assert_eq!(pick(&[conns(2, 3, 0), conns(3, 4, 0)]), None);
    }

    #[test]
    fn inactive_connections_do_not_count() {
        assert_eq!(pick(&[conns(1, 0, 0), conns(3, 0, 99)]), Some(1));
    }

    #[test]
    fn tie_picks_first_and_skips_unavailable() {
        assert_eq!(
            pick(&[conns(1, 0, 0), conns(4, 1, 0), conns(4, 0, 0)]),
            Some(1)
        );
        let mut d = [conns(1, 0, 0), conns(4, 1, 0), conns(4, 0, 0)];
        d[1].overloaded = true;
        assert_eq!(pick(&d), Some(2));
    }
}
