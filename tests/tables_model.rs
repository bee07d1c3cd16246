//! Random operation sequences against a naive reference model: same lookups,
//! same states and expiries, same expired sets, same capacity behaviour.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use xdpvs::service::model::{DestId, FlowKey, FwdMethod, Millis, Proto, Timeouts};
use xdpvs::shard::conn::{ConnHandle, ConnTable, InsertError, NewConn};
use xdpvs::shard::tcp_state::{
    self, flags::*, is_evictable, timeout_ms, transition, udp_timeout_ms, Dir, TcpState,
};
use xdpvs::shard::timer::{fire_tick, now_tick, TICK_MS};

const CAP: usize = 8;

#[derive(Clone, Copy, Debug)]
struct KeyIx {
    udp: bool,
    v6: bool,
    client: u8,
    cport: u8,
    vport: u8,
}

fn addr(v6: bool, net: u16, host: u8) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            net,
            0,
            0,
            0,
            0,
            u16::from(host),
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 18, net as u8, host))
    }
}

fn in_key(k: KeyIx) -> FlowKey {
    FlowKey {
        proto: if k.udp { Proto::Udp } else { Proto::Tcp },
        src: addr(k.v6, 0, k.client),
        dst: addr(k.v6, 1, 1),
        sport: 1000 + u16::from(k.cport),
        dport: if k.vport == 0 { 80 } else { 443 },
    }
}

fn real(v6: bool, r: u8) -> IpAddr {
    addr(v6, 2, r)
}

#[derive(Clone, Debug)]
enum Op {
    Insert(KeyIx, bool, u8),
    LookupIn(KeyIx),
    LookupOut(KeyIx, u8),
    Update(usize, bool, u8),
    Touch(usize),
    Remove(usize),
    Advance(u32),
}

const FLAGS: [u8; 7] = [SYN, SYN | ACK, ACK, FIN | ACK, RST, 0, PSH | ACK];

fn key_ix() -> impl Strategy<Value = KeyIx> {
    (
        any::<bool>(),
        prop::bool::weighted(0.25),
        0u8..3,
        0u8..3,
        0u8..2,
    )
        .prop_map(|(udp, v6, client, cport, vport)| KeyIx {
            udp,
            v6,
            client,
            cport,
            vport,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (key_ix(), any::<bool>(), 0u8..2).prop_map(|(k, n, r)| Op::Insert(k, n, r)),
        2 => key_ix().prop_map(Op::LookupIn),
        2 => (key_ix(), 0u8..2).prop_map(|(k, r)| Op::LookupOut(k, r)),
        5 => (any::<usize>(), any::<bool>(), 0u8..7).prop_map(|(p, o, f)| Op::Update(p, o, f)),
        1 => any::<usize>().prop_map(Op::Touch),
        1 => any::<usize>().prop_map(Op::Remove),
        2 => prop_oneof![0u32..5_000, 0u32..400_000].prop_map(Op::Advance),
    ]
}

#[derive(Clone, Debug)]
struct M {
    key: FlowKey,
    out: FlowKey,
    nat: bool,
    state: TcpState,
    exp_tick: u64,
    nooutput: bool,
    h: ConnHandle,
}

fn timeout_of(m: &M, t: &Timeouts) -> Millis {
    if m.key.proto == Proto::Udp {
        udp_timeout_ms(t)
    } else {
        timeout_ms(m.state, t)
    }
}

fn check(t: &ConnTable, model: &[M]) -> Result<(), TestCaseError> {
    prop_assert_eq!(t.len(), model.len());
    for m in model {
        prop_assert_eq!(t.lookup_in(&m.key), Some(m.h));
        let c = t
            .get(m.h)
            .ok_or_else(|| TestCaseError::fail("dead handle"))?;
        prop_assert_eq!(c.in_key(), m.key);
        prop_assert_eq!(c.state, m.state);
        prop_assert_eq!(c.expires, m.exp_tick * TICK_MS);
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut t = ConnTable::new(CAP);
    let tos = Timeouts::default();
    let mut model: Vec<M> = vec![];
    let mut now: Millis = 5_000_000;
    for op in ops {
        match op {
            Op::Insert(k, nat, r) => {
                let key = in_key(k);
                let raddr = real(k.v6, r);
                let fwd = if nat { FwdMethod::Nat } else { FwdMethod::Dr };
                let res = t.insert(now, NewConn::from_key(&key, raddr, 8080, DestId(1), fwd));
                if let Some(m) = model.iter().find(|m| m.key == key) {
                    prop_assert_eq!(res, Err(InsertError::Exists(m.h)));
                    continue;
                }
                let full = model.len() == CAP;
                let can_evict = model
                    .iter()
                    .any(|m| m.key.proto == Proto::Tcp && is_evictable(m.state));
                if full && !can_evict {
                    prop_assert_eq!(res, Err(InsertError::Full));
                    continue;
                }
                let ins = res.map_err(|e| TestCaseError::fail(format!("{e}")))?;
                match ins.evicted {
                    Some(c) => {
                        prop_assert!(full);
                        let i = model
                            .iter()
                            .position(|m| m.key == c.in_key())
                            .ok_or_else(|| TestCaseError::fail("evicted unknown"))?;
                        prop_assert_eq!(model[i].key.proto, Proto::Tcp);
                        prop_assert!(is_evictable(model[i].state));
                        model.remove(i);
                    }
                    None => prop_assert!(!full),
                }
                let state = TcpState::None;
                let to = if k.udp {
                    udp_timeout_ms(&tos)
                } else {
                    tcp_state::timeout_ms(state, &tos)
                };
                model.push(M {
                    key,
                    out: FlowKey {
                        proto: key.proto,
                        src: raddr,
                        sport: 8080,
                        dst: key.src,
                        dport: key.sport,
                    },
                    nat,
                    state,
                    exp_tick: fire_tick(now + to),
                    nooutput: !nat,
                    h: ins.handle,
                });
            }
            Op::LookupIn(k) => {
                let key = in_key(k);
                let want = model.iter().find(|m| m.key == key).map(|m| m.h);
                prop_assert_eq!(t.lookup_in(&key), want);
            }
            Op::LookupOut(k, r) => {
                let key = in_key(k);
                let out = FlowKey {
                    proto: key.proto,
                    src: real(k.v6, r),
                    sport: 8080,
                    dst: key.src,
                    dport: key.sport,
                };
                let cands: Vec<ConnHandle> = model
                    .iter()
                    .filter(|m| m.nat && m.out == out)
                    .map(|m| m.h)
                    .collect();
                match t.lookup_out(&out) {
                    Some(h) => prop_assert!(cands.contains(&h)),
                    None => prop_assert!(cands.is_empty()),
                }
            }
            Op::Update(p, output, f) => {
                if model.is_empty() {
                    continue;
                }
                let i = p % model.len();
                let flags = FLAGS[f as usize];
                let dir = if output { Dir::Output } else { Dir::Input };
                let got = t.update_tcp(model[i].h, now, dir, flags);
                let m = &mut model[i];
                if m.key.proto == Proto::Udp {
                    prop_assert_eq!(got, None);
                    continue;
                }
                let mut d = dir;
                if m.nooutput {
                    if dir == Dir::Output {
                        m.nooutput = false;
                    } else {
                        d = Dir::InputOnly;
                    }
                }
                let new = transition(false, d, m.state, flags);
                prop_assert_eq!(got, Some((m.state, new)));
                m.state = new;
                m.exp_tick = fire_tick(now + timeout_ms(new, &tos));
            }
            Op::Touch(p) => {
                if model.is_empty() {
                    continue;
                }
                let i = p % model.len();
                prop_assert!(t.touch(model[i].h, now));
                let to = timeout_of(&model[i], &tos);
                model[i].exp_tick = fire_tick(now + to);
            }
            Op::Remove(p) => {
                if model.is_empty() {
                    continue;
                }
                let m = model.remove(p % model.len());
                let got = t.remove(m.h).map(|c| c.in_key());
                prop_assert_eq!(got, Some(m.key));
                prop_assert_eq!(t.lookup_in(&m.key), None);
            }
            Op::Advance(d) => {
                now += Millis::from(d);
                let mut got = BTreeSet::new();
                t.expire(now, usize::MAX, |c| {
                    got.insert(format!("{:?}", c.in_key()));
                });
                let tick = now_tick(now);
                let want: BTreeSet<String> = model
                    .iter()
                    .filter(|m| m.exp_tick <= tick)
                    .map(|m| format!("{:?}", m.key))
                    .collect();
                model.retain(|m| m.exp_tick > tick);
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
    fn table_matches_reference_model(ops in prop::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}
