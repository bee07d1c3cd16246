//! Timer wheel: firing time, cost proportional to expired entries, lazy
//! re-arming, long timeouts, catching up after a long pause.

use xdpvs::shard::timer::{TimerWheel, TICK_MS, WHEEL_SLOTS};

fn fire_all(w: &mut TimerWheel, now: u64) -> Vec<u32> {
    let mut v = vec![];
    w.advance(now, usize::MAX, |h| {
        v.push(h);
        None
    });
    v.sort();
    v
}

#[test]
fn fires_at_the_right_tick_never_early() {
    let mut w = TimerWheel::with_capacity(8);
    w.schedule(0, 0, 640); // exactly on a tick boundary
    w.schedule(1, 0, 641); // just after: next boundary 704
    assert!(fire_all(&mut w, 639).is_empty());
    assert_eq!(fire_all(&mut w, 640), vec![0]);
    assert!(fire_all(&mut w, 703).is_empty());
    assert_eq!(fire_all(&mut w, 704), vec![1]);
    assert_eq!(TICK_MS, 64);
}

#[test]
fn past_times_fire_on_next_advance() {
    let mut w = TimerWheel::with_capacity(8);
    assert!(fire_all(&mut w, 10_000).is_empty());
    w.schedule(3, 10_000, 5);
    // Tick 156 (10 000 ms) is processed already: the next tick takes it.
    assert!(fire_all(&mut w, 10_000).is_empty());
    assert_eq!(fire_all(&mut w, 10_048), vec![3]);
}

#[test]
fn cost_is_proportional_to_expired_entries() {
    let n = 100_000u32;
    let mut w = TimerWheel::with_capacity(n as usize + 10);
    for h in 0..n {
        w.schedule(h, 0, 3_600_000); // 1 h
    }
    for h in n..n + 10 {
        w.schedule(h, 0, 1_000);
    }
    let mut seen = 0;
    let visited = w.advance(2_000, usize::MAX, |_| {
        seen += 1;
        None
    });
    assert_eq!(visited, 10);
    assert_eq!(seen, 10);
    assert_eq!(w.len(), n as usize);
    // Many ticks later, still nothing but the due ones is visited.
    let visited = w.advance(600_000, usize::MAX, |_| None);
    assert_eq!(visited, 0);
}

#[test]
fn lazy_rearm_keeps_the_handle() {
    let mut w = TimerWheel::with_capacity(4);
    w.schedule(7, 0, 1_000);
    // True expiry moved to 5 s: the owner re-arms when the slot fires.
    let mut calls = 0;
    w.advance(1_024, usize::MAX, |h| {
        assert_eq!(h, 7);
        calls += 1;
        Some(5_000)
    });
    assert_eq!(calls, 1);
    assert!(w.is_scheduled(7));
    assert!(fire_all(&mut w, 4_999).is_empty());
    assert_eq!(fire_all(&mut w, 5_056), vec![7]);
    assert!(!w.is_scheduled(7));
}

#[test]
fn budget_limits_work_and_the_rest_stays_due() {
    let mut w = TimerWheel::with_capacity(100);
    for h in 0..100 {
        w.schedule(h, 0, 500);
    }
    let mut got = 0;
    assert_eq!(
        w.advance(1_000, 30, |_| {
            got += 1;
            None
        }),
        30
    );
    assert_eq!(w.len(), 70);
    assert_eq!(w.advance(1_000, usize::MAX, |_| None), 70);
    assert_eq!(got, 30);
    assert!(w.is_empty());
}

#[test]
fn a_day_long_timer_fires_after_a_day_with_few_visits() {
    let day = 24 * 3_600_000u64;
    let mut w = TimerWheel::with_capacity(2);
    w.schedule(1, 0, day);
    let mut visits = 0;
    let mut fired_at = None;
    let mut now = 0;
    while now <= day + 120_000 && fired_at.is_none() {
        now += 60_000;
        w.advance(now, usize::MAX, |_| {
            visits += 1;
            if now >= day {
                fired_at = Some(now);
                None
            } else {
                Some(day)
            }
        });
    }
    let at = fired_at.expect("fired");
    assert!((day..day + 60_000).contains(&at), "fired at {at}");
    // One visit per wheel turn (~17.5 min) plus the final one.
    let span = WHEEL_SLOTS as u64 * TICK_MS;
    assert!(visits <= day / span + 2, "visits {visits}");
}

#[test]
fn catching_up_after_a_long_pause_visits_each_entry_about_once() {
    let mut w = TimerWheel::with_capacity(1_000);
    for h in 0..1_000u32 {
        w.schedule(h, 0, 1_000 + u64::from(h) * 3_600);
    }
    let ten_days = 10 * 24 * 3_600_000u64;
    let mut visits = 0;
    w.advance(ten_days, usize::MAX, |_| {
        visits += 1;
        None
    });
    assert_eq!(visits, 1_000);
    assert!(w.is_empty());
    // Entries whose true expiry is far beyond: at most two visits each.
    for h in 0..100u32 {
        w.schedule(h, ten_days, ten_days + 1_000);
    }
    let mut visits = 0;
    let twenty_days = 2 * ten_days;
    w.advance(twenty_days, usize::MAX, |_| {
        visits += 1;
        Some(3 * ten_days)
    });
    assert!(visits <= 200, "visits {visits}");
    assert_eq!(w.len(), 100);
}
