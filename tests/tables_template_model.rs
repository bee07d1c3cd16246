//! The persistence template table against a naive reference model (a Vec):
//! random sequences of insert, lookup, re-arm, attach/detach (connections
//! controlled), remove and time steps. After every step the table must hold
//! exactly the model's templates, with the same real server, expiry and
//! controlled count; the expired set of each time step must be the model's;
//! a template that controls connections never expires (it is checked again
//! `TEMPLATE_RECHECK_MS` later, as IPVS does); the capacity is a hard limit.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use xdpvs::service::model::{DestId, Millis, Proto};
use xdpvs::shard::template::{
    TemplateKey, TemplateTable, TplHandle, TplInsertError, TEMPLATE_RECHECK_MS,
};
use xdpvs::shard::timer::{fire_tick, now_tick};

const CAP: usize = 6;

/// Timeouts: short, around the wheel's tick, and beyond its 17.5 min span
/// (parked at the horizon and re-armed).
const TIMEOUTS: [Millis; 5] = [1_000, 63, 300_000, 1_200_000, 3_600_000];

#[derive(Clone, Copy, Debug)]
struct KeyIx {
    kind: u8,
    v6: bool,
    client: u8,
}

fn client(v6: bool, c: u8) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, u16::from(c), 0, 0, 0, 0, 0))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 18, c, 0))
    }
}

fn vip(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 19, 255, 1))
    }
}

/// Kinds: tcp VIP:80, tcp VIP:0 (port-0 service), udp VIP:80, fwmark 1,
/// fwmark 2. The same client gets a distinct template in each.
fn key(k: KeyIx) -> TemplateKey {
    let client_masked = client(k.v6, k.client);
    match k.kind {
        0..=2 => TemplateKey::Addr {
            proto: if k.kind == 2 { Proto::Udp } else { Proto::Tcp },
            client_masked,
            vip: vip(k.v6),
            vport: if k.kind == 1 { 0 } else { 80 },
        },
        m => TemplateKey::Fwmark {
            client_masked,
            mark: u32::from(m) - 2,
        },
    }
}

#[derive(Clone, Debug)]
enum Op {
    Insert(KeyIx, u8, usize),
    Lookup(KeyIx),
    Rearm(usize, usize),
    Attach(usize),
    Detach(usize),
    Remove(usize),
    Advance(u32),
}

fn key_ix() -> impl Strategy<Value = KeyIx> {
    (0u8..5, prop::bool::weighted(0.3), 0u8..3).prop_map(|(kind, v6, client)| KeyIx {
        kind,
        v6,
        client,
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (key_ix(), 0u8..3, 0..TIMEOUTS.len()).prop_map(|(k, d, t)| Op::Insert(k, d, t)),
        2 => key_ix().prop_map(Op::Lookup),
        2 => (any::<usize>(), 0..TIMEOUTS.len()).prop_map(|(p, t)| Op::Rearm(p, t)),
        3 => any::<usize>().prop_map(Op::Attach),
        3 => any::<usize>().prop_map(Op::Detach),
        1 => any::<usize>().prop_map(Op::Remove),
        3 => prop_oneof![0u32..200, 0u32..5_000, 0u32..400_000, 0u32..4_000_000]
            .prop_map(Op::Advance),
    ]
}

#[derive(Clone, Debug)]
struct M {
    key: TemplateKey,
    dest: DestId,
    raddr: IpAddr,
    expires: Millis,
    controls: u32,
    h: TplHandle,
}

fn check(t: &TemplateTable, model: &[M]) -> Result<(), TestCaseError> {
    prop_assert_eq!(t.len(), model.len());
    prop_assert!(t.len() <= CAP);
    let mut seen = 0;
    t.for_each(|_| seen += 1);
    prop_assert_eq!(seen, model.len());
    for m in model {
        prop_assert_eq!(t.lookup(&m.key), Some(m.h));
        let got = t
            .get(m.h)
            .ok_or_else(|| TestCaseError::fail("dead handle"))?;
        prop_assert_eq!(*got.key(), m.key);
        prop_assert_eq!(got.dest, m.dest);
        prop_assert_eq!(got.raddr, m.raddr);
        prop_assert_eq!(got.expires(), m.expires);
        prop_assert_eq!(got.controls(), m.controls);
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut t = TemplateTable::new(CAP);
    let mut model: Vec<M> = vec![];
    let mut now: Millis = 7_000_013;
    for op in ops {
        match op {
            Op::Insert(k, d, ti) => {
                let key = key(k);
                let raddr = IpAddr::V4(Ipv4Addr::new(198, 19, 254, d));
                let res = t.insert(now, key, DestId(u32::from(d)), raddr, None, TIMEOUTS[ti]);
                if let Some(m) = model.iter().find(|m| m.key == key) {
                    prop_assert_eq!(res, Err(TplInsertError::Exists(m.h)));
                } else if model.len() == CAP {
                    prop_assert_eq!(res, Err(TplInsertError::Full));
                } else {
                    let h = res.map_err(|e| TestCaseError::fail(format!("{e}")))?;
                    prop_assert!(model.iter().all(|m| m.h != h), "handle reused while live");
                    model.push(M {
                        key,
                        dest: DestId(u32::from(d)),
                        raddr,
                        expires: now + TIMEOUTS[ti],
                        controls: 0,
                        h,
                    });
                }
            }
            Op::Lookup(k) => {
                let key = key(k);
                let want = model.iter().find(|m| m.key == key).map(|m| m.h);
                prop_assert_eq!(t.lookup(&key), want);
            }
            Op::Rearm(p, ti) => {
                if model.is_empty() {
                    continue;
                }
                let n = model.len();
                let m = &mut model[p % n];
                prop_assert!(t.rearm(m.h, now, TIMEOUTS[ti]));
                m.expires = now + TIMEOUTS[ti];
            }
            Op::Attach(p) => {
                if model.is_empty() {
                    continue;
                }
                let n = model.len();
                let m = &mut model[p % n];
                prop_assert!(t.attach(m.h));
                m.controls += 1;
            }
            Op::Detach(p) => {
                if model.is_empty() {
                    continue;
                }
                let n = model.len();
                let m = &mut model[p % n];
                prop_assert!(t.detach(m.h));
                m.controls = m.controls.saturating_sub(1);
            }
            Op::Remove(p) => {
                if model.is_empty() {
                    continue;
                }
                let m = model.remove(p % model.len());
                let got = t.remove(m.h).map(|x| *x.key());
                prop_assert_eq!(got, Some(m.key));
                prop_assert_eq!(t.lookup(&m.key), None);
                prop_assert!(t.get(m.h).is_none());
            }
            Op::Advance(d) => {
                now += Millis::from(d);
                let mut got = BTreeSet::new();
                t.expire(now, usize::MAX, |x| {
                    got.insert(format!("{:?}", x.key()));
                });
                // A timer fires at the first wheel tick at or after its time.
                let tick = now_tick(now);
                let mut want = BTreeSet::new();
                model.retain_mut(|m| {
                    if fire_tick(m.expires) > tick {
                        return true;
                    }
                    if m.controls > 0 {
                        // Still controls connections: kept, checked again later.
                        m.expires = now + TEMPLATE_RECHECK_MS;
                        return true;
                    }
                    want.insert(format!("{:?}", m.key));
                    false
                });
                prop_assert_eq!(got, want);
            }
        }
        check(&t, &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn template_table_matches_reference_model(ops in prop::collection::vec(op(), 1..150)) {
        run(ops)?;
    }
}

/// The model test must be able to fail: a table that forgot the
/// "controls connections" rule would expire this template.
#[test]
fn controlled_template_survives_its_timeout_then_expires_after_detach() {
    let mut t = TemplateTable::new(4);
    let k = key(KeyIx {
        kind: 3,
        v6: false,
        client: 1,
    });
    let raddr = IpAddr::V4(Ipv4Addr::new(198, 19, 254, 1));
    let h = t
        .insert(0, k, DestId(1), raddr, None, 1_000)
        .expect("insert");
    assert!(t.attach(h));
    let mut n = 0;
    t.expire(10_000, usize::MAX, |_| n += 1);
    assert_eq!((n, t.lookup(&k)), (0, Some(h)));
    assert_eq!(
        t.get(h).map(|x| x.expires()),
        Some(10_000 + TEMPLATE_RECHECK_MS)
    );
    assert!(t.detach(h));
    t.expire(10_000 + TEMPLATE_RECHECK_MS + 64, usize::MAX, |_| n += 1);
    assert_eq!((n, t.lookup(&k)), (1, None));
}
