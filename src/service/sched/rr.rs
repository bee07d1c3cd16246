//! rr: round robin (IPVS `ip_vs_rr.c`).
//!
//! Starting after the last chosen server, take the next available one,
//! wrapping around once (the last chosen server itself is tried last).

use super::{DestStat, SchedKey, SchedState, Scheduler};

/// Round-robin scheduler; its cursor is `SchedState::last`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rr;

impl Scheduler for Rr {
    fn name(&self) -> &'static str {
        "rr"
    }

    fn schedule(&self, st: &mut SchedState, dests: &[DestStat], _key: &SchedKey) -> Option<usize> {
        let n = dests.len();
        if n == 0 {
            return None;
        }
        let start = match st.last {
            Some(l) if l < n => l + 1,
            _ => 0,
        };
        let found = (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| dests.get(i).is_some_and(DestStat::available))?;
        st.last = Some(found);
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::sched::tests::{any_key, stat};

    #[test]
    fn cycles_in_order() {
        let d = [stat(1), stat(5), stat(2)];
        let mut st = SchedState::default();
        let picks: Vec<_> = (0..7)
            .map(|_| Rr.schedule(&mut st, &d, &any_key()))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0].map(Some).to_vec());
    }

    #[test]
    fn skips_weight_zero_and_overloaded() {
        let mut d = [stat(1), stat(0), stat(1), stat(1)];
        d[2].overloaded = true;
        let mut st = SchedState::default();
        let picks: Vec<_> = (0..4)
            .map(|_| Rr.schedule(&mut st, &d, &any_key()))
            .collect();
        assert_eq!(picks, [0, 3, 0, 3].map(Some).to_vec());
    }

    #[test]
    fn only_last_available_is_chosen_again() {
        let d = [stat(0), stat(3), stat(0)];
        let mut st = SchedState::default();
        for _ in 0..3 {
            assert_eq!(Rr.schedule(&mut st, &d, &any_key()), Some(1));
        }
    }

    #[test]
    fn cursor_beyond_list_restarts_at_head() {
        let d = [stat(1), stat(1)];
        let mut st = SchedState {
            last: Some(9),
            ..SchedState::default()
        };
        assert_eq!(Rr.schedule(&mut st, &d, &any_key()), Some(0));
    }
}
