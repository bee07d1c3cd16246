//! Cross-scheduler tests and shared test helpers.

use super::*;
use std::net::Ipv4Addr;

/// A key for schedulers that ignore it.
pub fn any_key() -> SchedKey {
    SchedKey {
        src: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
        dst: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
        sport: 40000,
        dport: 80,
    }
}

/// An idle destination with weight `w`.
pub fn stat(w: u32) -> DestStat {
    DestStat {
        weight: w,
        ..Default::default()
    }
}

/// A destination with weight, active and inactive connection counts.
pub fn conns(weight: u32, active: u32, inactive: u32) -> DestStat {
    DestStat {
        weight,
        active,
        inactive,
        overloaded: false,
    }
}

/// A real server 198.18.1.i:80 with weight `w`.
pub fn spec(i: u32, w: u32) -> DestSpec {
    DestSpec {
        addr: IpAddr::V4(Ipv4Addr::from(0xC612_0100 + i)),
        port: 80,
        weight: w,
    }
}

fn build_ok(name: &str, specs: &[DestSpec]) -> Box<dyn Scheduler> {
    match build(name, specs, &SchedParams::default()) {
        Ok(s) => s,
        Err(e) => panic!("{name}: {e}"),
    }
}

#[test]
fn build_knows_every_name() {
    let specs = [spec(1, 1), spec(2, 2)];
    for name in SCHEDULER_NAMES {
        assert_eq!(build_ok(name, &specs).name(), *name);
    }
    assert_eq!(
        build("lblc", &specs, &SchedParams::default()).err(),
        Some(SchedError::Unknown("lblc".into()))
    );
}

#[test]
fn build_rejects_bad_mh_table() {
    let p = SchedParams {
        mh_table_size: 100,
        ..Default::default()
    };
    assert_eq!(
        build("mh", &[spec(1, 1)], &p).err(),
        Some(SchedError::BadTableSize(100))
    );
    // Other schedulers ignore the mh table size.
    assert!(build("sh", &[spec(1, 1)], &p).is_ok());
}

#[test]
fn every_scheduler_none_on_empty_list() {
    for name in SCHEDULER_NAMES {
        let s = build_ok(name, &[]);
        let mut st = SchedState::default();
        assert_eq!(s.schedule(&mut st, &[], &any_key()), None, "{name}");
    }
}

#[test]
fn every_scheduler_none_when_all_weights_zero() {
    let specs = [spec(1, 0), spec(2, 0), spec(3, 0)];
    let d = [stat(0), conns(0, 0, 0), conns(0, 5, 1)];
    for name in SCHEDULER_NAMES {
        let s = build_ok(name, &specs);
        let mut st = SchedState::default();
        for _ in 0..5 {
            assert_eq!(s.schedule(&mut st, &d, &any_key()), None, "{name}");
        }
    }
}

#[test]
fn every_scheduler_none_when_all_overloaded() {
    let specs = [spec(1, 1), spec(2, 2)];
    let mut d = [stat(1), stat(2)];
    for x in d.iter_mut() {
        x.overloaded = true;
    }
    for name in SCHEDULER_NAMES {
        let s = build_ok(name, &specs);
        let mut st = SchedState::default();
        assert_eq!(s.schedule(&mut st, &d, &any_key()), None, "{name}");
    }
}

#[test]
fn every_scheduler_only_picks_available() {
    // Index 1 is quiesced (weight 0), index 3 overloaded: never chosen by
    // anyone, and all schedulers find one of the others (sh/dh/mh with
    // fallback for the hashing ones).
    let specs = [spec(1, 2), spec(2, 5), spec(3, 1), spec(4, 9)];
    let mut d = [
        conns(2, 1, 0),
        conns(0, 0, 0),
        conns(1, 0, 3),
        conns(9, 0, 0),
    ];
    d[3].overloaded = true;
    let p = SchedParams {
        fallback: true,
        ..Default::default()
    };
    for name in SCHEDULER_NAMES {
        let s = match build(name, &specs, &p) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let mut st = SchedState::new(5);
        for n in 0..300u32 {
            let mut k = any_key();
            k.src = IpAddr::V4(Ipv4Addr::from(0xC612_0000 + n * 7));
            k.dst = IpAddr::V4(Ipv4Addr::from(0xC613_0000 + n * 13));
            let got = s.schedule(&mut st, &d, &k);
            if *name == "dh" {
                // dh has no fallback: None is allowed, bad picks are not.
                assert!(matches!(got, None | Some(0) | Some(2)), "{name}: {got:?}");
            } else {
                assert!(matches!(got, Some(0) | Some(2)), "{name}: {got:?}");
            }
        }
    }
}

#[test]
fn conn_overhead_is_ipvs() {
    assert_eq!(conns(1, 3, 7).conn_overhead(), 3 * 256 + 7);
    assert_eq!(
        conns(1, u32::MAX, u32::MAX).conn_overhead(),
        (u64::from(u32::MAX) << 8) + u64::from(u32::MAX)
    );
}
