//! wrr: weighted round robin (IPVS `ip_vs_wrr.c`).
//!
//! `di` is the gcd of the positive weights, `mw = max_weight - (di - 1)`;
//! passes over the servers start with `cw = mw` and lower `cw` by `di` each
//! pass, choosing servers whose weight is `>= cw`, so that over one full
//! cycle each server is chosen `weight / di` times. `di` and `mw` come from
//! the build-time weights (the scheduler is rebuilt when weights change); the
//! cursor (`SchedState::last`) and `cw` (`SchedState::cw`) are per shard.

use super::hash::gcd;
use super::{DestSpec, DestStat, SchedKey, SchedState, Scheduler};

/// Weighted round-robin scheduler.
#[derive(Clone, Copy, Debug)]
pub struct Wrr {
    /// Decreasing interval: gcd of the positive weights (1 if none).
    di: i64,
    /// Maximum weight minus `di - 1` (0 when no weight is positive).
    mw: i64,
}

impl Wrr {
    /// Compute `di` and `mw` from the build-time weights.
    pub fn new(dests: &[DestSpec]) -> Self {
        let g = dests
            .iter()
            .filter(|d| d.weight > 0)
            .fold(0u64, |g, d| gcd(g, u64::from(d.weight)));
        let di = i64::try_from(g).unwrap_or(1).max(1);
        let maxw = dests.iter().map(|d| i64::from(d.weight)).max().unwrap_or(0);
        let mw = if maxw > 0 { maxw - (di - 1) } else { 0 };
        Wrr { di, mw }
    }
}

fn eligible(d: &DestStat, cw: i64) -> bool {
    !d.overloaded && i64::from(d.weight) >= cw
}

impl Scheduler for Wrr {
    fn name(&self) -> &'static str {
        "wrr"
    }

    fn schedule(&self, st: &mut SchedState, dests: &[DestStat], _key: &SchedKey) -> Option<usize> {
        let n = dests.len();
        if self.mw <= 0 || n == 0 {
            return None;
        }
        if st.cw > self.mw || st.cw <= 0 {
            st.cw = self.mw;
        }
        // `None` is IPVS's list head: the next pass starts at index 0.
        let last = st.last.filter(|&l| l < n);
        let mut pos = last;
        let mut stop: Option<usize> = None;
        let mut last_pass = false;
        let mut restarted = false;
        // Largest weight a pass can still match (computed on demand).
        let mut max_eligible: Option<i64> = None;
        loop {
            let start = pos.map_or(0, |p| p + 1);
            for (j, d) in dests.iter().enumerate().skip(start) {
                if eligible(d, st.cw) {
                    st.last = Some(j);
                    return Some(j);
                }
                if stop == Some(j) {
                    st.last = Some(j);
                    return None;
                }
            }
            pos = None;
            st.cw -= self.di;
            if st.cw > self.di {
                // Passes with cw above every non-overloaded weight find
                // nothing and (cw > di) change no other state: skip them.
                // Same result as IPVS, but bounded work per decision.
                let m = *max_eligible.get_or_insert_with(|| {
                    dests
                        .iter()
                        .filter(|d| !d.overloaded)
                        .map(|d| i64::from(d.weight))
                        .max()
                        .unwrap_or(0)
                });
                if st.cw > m {
                    // Largest cw - k*di <= m, but not below the last
                    // positive value of the sequence.
                    let k = (st.cw - m + self.di - 1) / self.di;
                    let lowest = (st.cw - 1) % self.di + 1;
                    st.cw = (st.cw - k * self.di).max(lowest);
                }
            }
            if st.cw <= 0 {
                st.cw = self.mw;
                if last_pass || last.is_none() {
                    st.last = None;
                    return None;
                }
                restarted = true;
            }
            last_pass = st.cw <= self.di;
            if last_pass && restarted && last.is_some() {
                stop = last;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::sched::tests::{any_key, spec, stat};

    fn wrr(weights: &[u32]) -> (Wrr, Vec<DestStat>) {
        let specs: Vec<DestSpec> = weights.iter().map(|&w| spec(1, w)).collect();
        (Wrr::new(&specs), weights.iter().map(|&w| stat(w)).collect())
    }

    #[test]
    fn exact_proportions_over_one_cycle() {
        let (s, d) = wrr(&[4, 3, 2]);
        let mut st = SchedState::default();
        let picks: Vec<_> = (0..9)
            .map(|_| s.schedule(&mut st, &d, &any_key()).unwrap_or(99))
            .collect();
        // IPVS order: cw=4: a; cw=3: a b; cw=2: a b c; cw=1: a b c.
        assert_eq!(picks, vec![0, 0, 1, 0, 1, 2, 0, 1, 2]);
        let mut st = SchedState::default();
        let mut hits = [0usize; 3];
        for _ in 0..9 * 50 {
            if let Some(i) = s.schedule(&mut st, &d, &any_key()) {
                hits[i] += 1;
            }
        }
        assert_eq!(hits, [200, 150, 100]);
    }

    #[test]
    fn gcd_steps() {
        // gcd 2: weights 4,2 -> 2:1 over 3 picks.
        let (s, d) = wrr(&[4, 2]);
        let mut st = SchedState::default();
        let picks: Vec<_> = (0..6)
            .map(|_| s.schedule(&mut st, &d, &any_key()))
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 0, 1].map(Some).to_vec());
    }

    #[test]
    fn never_picks_weight_zero_or_overloaded() {
        let (s, mut d) = wrr(&[3, 0, 2, 5]);
        d[3].overloaded = true;
        let mut st = SchedState::default();
        let mut hits = [0usize; 4];
        for _ in 0..100 {
            if let Some(i) = s.schedule(&mut st, &d, &any_key()) {
                hits[i] += 1;
            }
        }
        assert_eq!((hits[1], hits[3]), (0, 0));
        assert_eq!(hits[0] + hits[2], 100);
    }

    #[test]
    fn all_overloaded_none_and_recovers() {
        let (s, mut d) = wrr(&[2, 1]);
        for x in d.iter_mut() {
            x.overloaded = true;
        }
        let mut st = SchedState::default();
        assert_eq!(s.schedule(&mut st, &d, &any_key()), None);
        st.last = Some(1);
        assert_eq!(s.schedule(&mut st, &d, &any_key()), None);
        d[1].overloaded = false;
        assert_eq!(s.schedule(&mut st, &d, &any_key()), Some(1));
    }

    #[test]
    fn zero_weights_none() {
        let (s, d) = wrr(&[0, 0]);
        assert_eq!(s.schedule(&mut SchedState::default(), &d, &any_key()), None);
        let (s, d) = wrr(&[]);
        assert_eq!(s.schedule(&mut SchedState::default(), &d, &any_key()), None);
    }

    #[test]
    fn huge_weight_ratio_with_overload_is_bounded_and_correct() {
        let (s, mut d) = wrr(&[2_000_000_000, 1]);
        d[0].overloaded = true;
        let mut st = SchedState::default();
        for _ in 0..10 {
            assert_eq!(s.schedule(&mut st, &d, &any_key()), Some(1));
        }
        d[1].overloaded = true;
        for _ in 0..3 {
            assert_eq!(s.schedule(&mut st, &d, &any_key()), None);
        }
        d[1].overloaded = false;
        assert_eq!(s.schedule(&mut st, &d, &any_key()), Some(1));
    }

    /// IPVS's loop without the pass-skipping shortcut.
    fn reference(w: &Wrr, st: &mut SchedState, dests: &[DestStat]) -> Option<usize> {
        let n = dests.len();
        if w.mw <= 0 || n == 0 {
            return None;
        }
        if st.cw > w.mw || st.cw <= 0 {
            st.cw = w.mw;
        }
        let last = st.last.filter(|&l| l < n);
        let mut pos = last;
        let (mut stop, mut last_pass, mut restarted) = (None, false, false);
        loop {
            for (j, d) in dests.iter().enumerate().skip(pos.map_or(0, |p| p + 1)) {
                if eligible(d, st.cw) {
                    st.last = Some(j);
                    return Some(j);
                }
                if stop == Some(j) {
                    st.last = Some(j);
                    return None;
                }
            }
            pos = None;
            st.cw -= w.di;
            if st.cw <= 0 {
                st.cw = w.mw;
                if last_pass || last.is_none() {
                    st.last = None;
                    return None;
                }
                restarted = true;
            }
            last_pass = st.cw <= w.di;
            if last_pass && restarted && last.is_some() {
                stop = last;
            }
        }
    }

    #[test]
    fn shortcut_matches_ipvs_loop() {
        // Deterministic pseudo-random configurations, including runtime
        // weights that differ from the build-time ones.
        let mut rng = SchedState::new(1234);
        for _ in 0..300 {
            let n = 1 + (rng.next_random() % 6) as usize;
            let weights: Vec<u32> = (0..n)
                .map(|_| [0, 1, 2, 3, 4, 6, 8, 12, 50][(rng.next_random() % 9) as usize])
                .collect();
            let (s, mut d) = wrr(&weights);
            let mut a = SchedState::default();
            let mut b = SchedState::default();
            for _ in 0..60 {
                for x in d.iter_mut() {
                    x.overloaded = rng.next_random().is_multiple_of(4);
                    if rng.next_random().is_multiple_of(10) {
                        x.weight = (rng.next_random() % 60) as u32;
                    }
                }
                let got = s.schedule(&mut a, &d, &any_key());
                let want = reference(&s, &mut b, &d);
                assert_eq!(got, want, "weights {weights:?} stats {d:?}");
                assert_eq!((a.last, a.cw), (b.last, b.cw));
            }
        }
    }
}
