//! Connection table rules.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xdpvs::service::model::{DestId, FlowKey, FwdMethod, Proto, Timeouts};
use xdpvs::shard::conn::{ConnTable, InsertError, NewConn};
use xdpvs::shard::tcp_state::{flags::*, Dir, TcpState};
use xdpvs::shard::template::TplHandle;

fn v4(a: u8, b: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, a, b))
}

fn key(proto: Proto, client: u8, cport: u16) -> FlowKey {
    FlowKey {
        proto,
        src: v4(0, client),
        dst: v4(1, 1),
        sport: cport,
        dport: 80,
    }
}

fn tcp(client: u8, cport: u16) -> FlowKey {
    key(Proto::Tcp, client, cport)
}

fn conn(k: &FlowKey, fwd: FwdMethod) -> NewConn {
    NewConn::from_key(k, v4(2, 10), 8080, DestId(3), fwd)
}

fn reply(k: &FlowKey) -> FlowKey {
    FlowKey {
        proto: k.proto,
        src: v4(2, 10),
        sport: 8080,
        dst: k.src,
        dport: k.sport,
    }
}

/// Insert and run the handshake to ESTABLISHED.
fn established(t: &mut ConnTable, now: u64, k: &FlowKey, fwd: FwdMethod) {
    let h = t.insert(now, conn(k, fwd)).unwrap().handle;
    t.update_tcp(h, now, Dir::Input, SYN).unwrap();
    t.update_tcp(h, now, Dir::Input, ACK).unwrap();
    assert_eq!(t.get(h).unwrap().state, TcpState::Established);
}

fn half_open(t: &mut ConnTable, now: u64, k: &FlowKey) {
    let h = t.insert(now, conn(k, FwdMethod::Dr)).unwrap().handle;
    assert_eq!(
        t.update_tcp(h, now, Dir::Input, SYN),
        Some((TcpState::None, TcpState::SynRecv))
    );
}

#[test]
fn insert_lookup_get_remove() {
    let mut t = ConnTable::new(100);
    let k = tcp(1, 1000);
    let mut nc = conn(&k, FwdMethod::Dr);
    nc.flags = 0x5;
    nc.template = Some(TplHandle::from_raw(9));
    let h = t.insert(1_000, nc).unwrap().handle;
    assert_eq!(t.len(), 1);
    assert_eq!(t.lookup_in(&k), Some(h));
    assert_eq!(t.lookup_in(&tcp(1, 1001)), None);
    assert_eq!(t.lookup_in(&key(Proto::Udp, 1, 1000)), None);
    let c = t.get(h).unwrap();
    assert_eq!(c.in_key(), k);
    assert_eq!((c.raddr, c.rport, c.dest), (v4(2, 10), 8080, DestId(3)));
    assert_eq!(c.fwd, FwdMethod::Dr);
    assert_eq!(c.state, TcpState::None);
    assert_eq!(c.flags, 0x5);
    assert_eq!(c.template, Some(TplHandle::from_raw(9)));
    // NONE lasts 2 s (rounded up to the 64 ms tick).
    assert!((3_000..3_064).contains(&c.expires), "{}", c.expires);
    assert!(t.set_flags(h, 0x3));
    assert!(t.set_template(h, None));
    let c = t.get(h).unwrap();
    assert_eq!((c.flags, c.template), (0x3, None));
    assert_eq!(t.remove(h).map(|c| c.in_key()), Some(k));
    assert_eq!(t.lookup_in(&k), None);
    assert_eq!(t.get(h), None);
    assert_eq!(t.remove(h), None);
    assert!(t.is_empty());
}

#[test]
fn duplicate_inbound_key_is_refused() {
    let mut t = ConnTable::new(10);
    let k = tcp(1, 1000);
    let h = t.insert(0, conn(&k, FwdMethod::Dr)).unwrap().handle;
    assert_eq!(
        t.insert(0, conn(&k, FwdMethod::Nat)),
        Err(InsertError::Exists(h))
    );
    assert_eq!(t.len(), 1);
}

#[test]
fn mixed_client_and_vip_families_are_refused() {
    let mut t = ConnTable::new(10);
    let mut k = tcp(1, 1);
    k.dst = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    assert_eq!(
        t.insert(0, conn(&k, FwdMethod::Dr)),
        Err(InsertError::MixedFamily)
    );
}

#[test]
fn nat_reply_index_is_found_and_removed_with_the_entry() {
    let mut t = ConnTable::new(10);
    let k = tcp(1, 1000);
    let h = t.insert(0, conn(&k, FwdMethod::Nat)).unwrap().handle;
    assert_eq!(t.lookup_out(&reply(&k)), Some(h));
    assert_eq!(t.get(h).unwrap().out_key(), reply(&k));
    // Not a reply key in the inbound direction, nor vice versa.
    assert_eq!(t.lookup_in(&reply(&k)), None);
    assert_eq!(t.lookup_out(&k), None);
    t.remove(h);
    assert_eq!(t.lookup_out(&reply(&k)), None);

    // And when it expires.
    let h = t.insert(0, conn(&k, FwdMethod::Nat)).unwrap().handle;
    assert_eq!(t.lookup_out(&reply(&k)), Some(h));
    let mut gone = vec![];
    t.expire(10_000, usize::MAX, |c| gone.push(c.in_key()));
    assert_eq!(gone, vec![k]);
    assert_eq!(t.lookup_out(&reply(&k)), None);
    assert_eq!(t.lookup_in(&k), None);
}

#[test]
fn non_nat_connections_have_no_reply_index() {
    let mut t = ConnTable::new(10);
    for (i, fwd) in [FwdMethod::Dr, FwdMethod::Ipip, FwdMethod::Gue]
        .into_iter()
        .enumerate()
    {
        let k = tcp(1, 1000 + i as u16);
        let h = t.insert(0, conn(&k, fwd)).unwrap().handle;
        assert_eq!(t.get(h).unwrap().fwd, fwd);
        assert_eq!(t.lookup_out(&reply(&k)), None);
    }
}

#[test]
fn update_tcp_rearms_to_the_state_timeout() {
    let mut t = ConnTable::new(10);
    let k = tcp(1, 1000);
    let h = t.insert(0, conn(&k, FwdMethod::Nat)).unwrap().handle;
    assert_eq!(
        t.update_tcp(h, 0, Dir::Input, SYN),
        Some((TcpState::None, TcpState::SynRecv))
    );
    assert_eq!(t.get(h).unwrap().expires, 60_032); // 60 s, next 64 ms tick
    assert_eq!(
        t.update_tcp(h, 100, Dir::Output, SYN | ACK),
        Some((TcpState::SynRecv, TcpState::SynRecv))
    );
    assert_eq!(
        t.update_tcp(h, 200, Dir::Input, ACK),
        Some((TcpState::SynRecv, TcpState::Established))
    );
    assert_eq!(t.get(h).unwrap().expires, 900_224);
    // ESTABLISHED stays for 900 s from the last packet: lazy re-arm keeps it.
    t.update_tcp(h, 800_000, Dir::Input, ACK);
    let mut gone = 0;
    t.expire(1_000_000, usize::MAX, |_| gone += 1);
    assert_eq!(gone, 0);
    assert_eq!(t.lookup_in(&k), Some(h));
    t.expire(1_700_064, usize::MAX, |_| gone += 1);
    assert_eq!(gone, 1);
    assert_eq!(t.lookup_in(&k), None);
}

#[test]
fn configured_timeouts_apply() {
    let mut t = ConnTable::new(10);
    t.set_timeouts(Timeouts {
        tcp: 30,
        tcp_fin: 5,
        udp: 7,
    });
    let k = tcp(1, 1);
    established(&mut t, 0, &k, FwdMethod::Nat);
    let h = t.lookup_in(&k).unwrap();
    assert_eq!(t.get(h).unwrap().expires, 30_016);
    // Output FIN from ESTABLISHED: FIN_WAIT, tcp_fin timeout.
    assert_eq!(
        t.update_tcp(h, 0, Dir::Output, FIN | ACK),
        Some((TcpState::Established, TcpState::FinWait))
    );
    assert_eq!(t.get(h).unwrap().expires, 5_056);
    let u = key(Proto::Udp, 2, 53);
    let hu = t.insert(0, conn(&u, FwdMethod::Dr)).unwrap().handle;
    assert_eq!(t.get(hu).unwrap().expires, 7_040);
}

#[test]
fn earlier_expiry_is_not_delayed_by_the_old_timer() {
    let mut t = ConnTable::new(10);
    let k = tcp(1, 1000);
    established(&mut t, 0, &k, FwdMethod::Dr);
    let h = t.lookup_in(&k).unwrap();
    // RST: CLOSE, 10 s, although the wheel had it at 900 s.
    assert_eq!(
        t.update_tcp(h, 1_000, Dir::Input, RST),
        Some((TcpState::Established, TcpState::Close))
    );
    let mut gone = vec![];
    t.expire(10_999, usize::MAX, |c| gone.push(c.state));
    assert!(gone.is_empty());
    t.expire(11_100, usize::MAX, |c| gone.push(c.state));
    assert_eq!(gone, vec![TcpState::Close]);
}

#[test]
fn non_nat_input_uses_the_input_only_table() {
    let mut t = ConnTable::new(10);
    let (kd, kn) = (tcp(1, 1), tcp(1, 2));
    established(&mut t, 0, &kd, FwdMethod::Dr);
    established(&mut t, 0, &kn, FwdMethod::Nat);
    let (hd, hn) = (t.lookup_in(&kd).unwrap(), t.lookup_in(&kn).unwrap());
    // FIN from the client: INPUT_ONLY says FIN_WAIT, INPUT says CLOSE_WAIT.
    assert_eq!(
        t.update_tcp(hd, 0, Dir::Input, FIN).map(|s| s.1),
        Some(TcpState::FinWait)
    );
    assert_eq!(
        t.update_tcp(hn, 0, Dir::Input, FIN).map(|s| s.1),
        Some(TcpState::CloseWait)
    );
    // Once an OUTPUT packet is seen, INPUT applies (IPVS clears NOOUTPUT).
    let k2 = tcp(1, 3);
    established(&mut t, 0, &k2, FwdMethod::Dr);
    let h2 = t.lookup_in(&k2).unwrap();
    t.update_tcp(h2, 0, Dir::Output, ACK);
    assert_eq!(
        t.update_tcp(h2, 0, Dir::Input, FIN).map(|s| s.1),
        Some(TcpState::CloseWait)
    );
}

#[test]
fn secure_tcp_uses_the_dos_table() {
    let mut t = ConnTable::new(10);
    t.set_secure_tcp(true);
    let k = tcp(1, 1);
    let h = t.insert(0, conn(&k, FwdMethod::Dr)).unwrap().handle;
    // INPUT_ONLY SYN from NONE: SYNACK in tcp_states_dos (SYN_RECV normally).
    assert_eq!(
        t.update_tcp(h, 0, Dir::Input, SYN),
        Some((TcpState::None, TcpState::SynAck))
    );
}

#[test]
fn udp_touch_rearms_and_update_tcp_ignores_udp() {
    let mut t = ConnTable::new(10);
    let k = key(Proto::Udp, 1, 5353);
    let h = t.insert(0, conn(&k, FwdMethod::Dr)).unwrap().handle;
    assert_eq!(t.get(h).unwrap().expires, 300_032);
    assert_eq!(t.update_tcp(h, 0, Dir::Input, SYN), None);
    assert!(!t.get(h).unwrap().is_active());
    assert!(t.touch(h, 200_000));
    let mut gone = 0;
    t.expire(400_000, usize::MAX, |_| gone += 1);
    assert_eq!(gone, 0);
    assert_eq!(t.get(h).unwrap().expires, 500_032);
    t.expire(500_032, usize::MAX, |_| gone += 1);
    assert_eq!(gone, 1);
}

#[test]
fn expiry_reports_template_and_dest_for_release() {
    let mut t = ConnTable::new(10);
    let k = tcp(1, 1);
    let mut nc = conn(&k, FwdMethod::Dr);
    nc.template = Some(TplHandle::from_raw(42));
    t.insert(0, nc).unwrap();
    let mut seen = vec![];
    let st = t.expire(5_000, usize::MAX, |c| seen.push((c.dest, c.template)));
    assert_eq!(seen, vec![(DestId(3), Some(TplHandle::from_raw(42)))]);
    assert_eq!((st.visited, st.expired), (1, 1));
}

#[test]
fn expire_cost_is_proportional_to_expired() {
    let mut t = ConnTable::new(20_000);
    for i in 0..10_000u16 {
        let k = key(Proto::Udp, (i % 200) as u8, i);
        t.insert(0, conn(&k, FwdMethod::Dr)).unwrap();
    }
    for i in 0..5u16 {
        established(&mut t, 0, &tcp(250, i), FwdMethod::Dr);
        let h = t.lookup_in(&tcp(250, i)).unwrap();
        t.update_tcp(h, 0, Dir::Input, RST); // CLOSE: 10 s
    }
    let st = t.expire(11_000, usize::MAX, |_| {});
    assert_eq!((st.visited, st.expired), (5, 5));
    assert_eq!(t.len(), 10_000);
}

#[test]
fn expire_budget_is_respected() {
    let mut t = ConnTable::new(100);
    for i in 0..50u16 {
        t.insert(0, conn(&tcp(1, i), FwdMethod::Dr)).unwrap();
    }
    let st = t.expire(3_000, 20, |_| {});
    assert_eq!((st.visited, st.expired), (20, 20));
    assert_eq!(t.len(), 30);
    let st = t.expire(3_000, usize::MAX, |_| {});
    assert_eq!(st.expired, 30);
}

#[test]
fn eviction_prefers_half_open_and_never_takes_established() {
    let mut t = ConnTable::new(4);
    for i in 0..3 {
        established(&mut t, 0, &tcp(1, i), FwdMethod::Dr);
    }
    half_open(&mut t, 0, &tcp(2, 1));
    assert_eq!(t.len(), 4);
    let ins = t.insert(10, conn(&tcp(3, 1), FwdMethod::Dr)).unwrap();
    let ev = ins.evicted.expect("evicted one");
    assert_eq!(ev.in_key(), tcp(2, 1));
    assert_eq!(ev.state, TcpState::SynRecv);
    assert_eq!(t.len(), 4);
    assert_eq!(t.lookup_in(&tcp(2, 1)), None);
    for i in 0..3 {
        assert!(t.lookup_in(&tcp(1, i)).is_some());
    }
    // Make the newcomer established too: now nothing may go.
    let h = ins.handle;
    t.update_tcp(h, 10, Dir::Input, SYN);
    t.update_tcp(h, 10, Dir::Input, ACK);
    assert_eq!(
        t.insert(20, conn(&tcp(4, 1), FwdMethod::Dr)),
        Err(InsertError::Full)
    );
    assert_eq!(t.len(), 4);
    for i in 0..3 {
        assert!(t.lookup_in(&tcp(1, i)).is_some());
    }
}

#[test]
fn eviction_takes_closing_entries_and_the_oldest_first() {
    let mut t = ConnTable::new(4);
    established(&mut t, 0, &tcp(1, 1), FwdMethod::Dr);
    half_open(&mut t, 1, &tcp(1, 2)); // oldest evictable
    established(&mut t, 2, &tcp(1, 3), FwdMethod::Dr);
    half_open(&mut t, 3, &tcp(1, 4));
    let ev = t
        .insert(4, conn(&tcp(2, 1), FwdMethod::Dr))
        .unwrap()
        .evicted;
    assert_eq!(ev.map(|c| c.in_key()), Some(tcp(1, 2)));
    // Close an established one: it becomes a candidate.
    let h = t.lookup_in(&tcp(1, 1)).unwrap();
    assert_eq!(
        t.update_tcp(h, 5, Dir::Input, FIN).map(|s| s.1),
        Some(TcpState::FinWait)
    );
    let ev = t
        .insert(6, conn(&tcp(2, 2), FwdMethod::Dr))
        .unwrap()
        .evicted;
    assert_eq!(ev.map(|c| c.in_key()), Some(tcp(1, 4)));
    let ev = t
        .insert(7, conn(&tcp(2, 3), FwdMethod::Dr))
        .unwrap()
        .evicted;
    // (2,1) was inserted before (1,1) closed.
    assert_eq!(ev.map(|c| c.in_key()), Some(tcp(2, 1)));
    let ev = t
        .insert(8, conn(&tcp(2, 4), FwdMethod::Dr))
        .unwrap()
        .evicted;
    assert_eq!(
        ev.map(|c| (c.in_key(), c.state)),
        Some((tcp(1, 1), TcpState::FinWait))
    );
}

#[test]
fn udp_flows_are_not_evicted() {
    let mut t = ConnTable::new(2);
    t.insert(0, conn(&key(Proto::Udp, 1, 1), FwdMethod::Dr))
        .unwrap();
    t.insert(0, conn(&key(Proto::Udp, 1, 2), FwdMethod::Dr))
        .unwrap();
    assert_eq!(
        t.insert(0, conn(&tcp(1, 3), FwdMethod::Dr)),
        Err(InsertError::Full)
    );
}

#[test]
fn capacity_is_a_hard_bound() {
    let mut t = ConnTable::new(64);
    assert_eq!(t.capacity(), 64);
    let mut full = 0;
    for i in 0..100u16 {
        match t.insert(0, conn(&key(Proto::Udp, 1, i), FwdMethod::Dr)) {
            Ok(_) => {}
            Err(InsertError::Full) => full += 1,
            Err(e) => panic!("{e}"),
        }
        assert!(t.len() <= 64);
    }
    assert_eq!(full, 36);
    // Freed slots are reused.
    t.expire(1_000_000, usize::MAX, |_| {});
    assert!(t.is_empty());
    for i in 0..64u16 {
        t.insert(1_000_000, conn(&key(Proto::Udp, 2, i), FwdMethod::Dr))
            .unwrap();
    }
    assert_eq!(t.len(), 64);
    let zero = ConnTable::new(0);
    assert_eq!(zero.capacity(), 0);
}

#[test]
fn ipv6_and_mixed_family_connections() {
    let mut t = ConnTable::new(10);
    let c6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 5));
    let vip6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1));
    let r6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 9));
    let k6 = FlowKey {
        proto: Proto::Tcp,
        src: c6,
        dst: vip6,
        sport: 40000,
        dport: 443,
    };
    let h = t
        .insert(
            0,
            NewConn::from_key(&k6, r6, 443, DestId(1), FwdMethod::Nat),
        )
        .unwrap()
        .handle;
    assert_eq!(t.lookup_in(&k6), Some(h));
    let c = t.get(h).unwrap();
    assert_eq!(t.lookup_out(&c.out_key()), Some(h));
    // IPv6 VIP, IPv4 real server (tunnel).
    let mut k6b = k6;
    k6b.sport = 40001;
    let h2 = t
        .insert(
            0,
            NewConn::from_key(&k6b, v4(2, 10), 0, DestId(2), FwdMethod::Ipip),
        )
        .unwrap()
        .handle;
    assert_eq!(t.get(h2).unwrap().raddr, v4(2, 10));
    // IPv4 VIP, IPv6 real server (tunnel).
    let k4 = tcp(9, 9);
    let h3 = t
        .insert(0, NewConn::from_key(&k4, r6, 0, DestId(4), FwdMethod::Gue))
        .unwrap()
        .handle;
    assert_eq!(t.lookup_in(&k4), Some(h3));
    let c3 = t.get(h3).unwrap();
    assert_eq!((c3.caddr, c3.vaddr, c3.raddr), (k4.src, k4.dst, r6));
    // The v4-mapped form of the key is not the same connection.
    let mapped = FlowKey {
        src: IpAddr::V6(Ipv4Addr::new(198, 18, 0, 9).to_ipv6_mapped()),
        dst: IpAddr::V6(Ipv4Addr::new(198, 18, 1, 1).to_ipv6_mapped()),
        ..k4
    };
    assert_eq!(t.lookup_in(&mapped), None);
    assert_eq!(
        t.insert(0, NewConn::from_key(&k4, r6, 0, DestId(4), FwdMethod::Gue)),
        Err(InsertError::Exists(h3))
    );
    t.remove(h3);
    assert_eq!(t.lookup_in(&k4), None);
    assert_eq!(t.len(), 2);
    let mut n = 0;
    t.for_each(|h, c| {
        assert_eq!(t.get(h), Some(*c));
        n += 1;
    });
    assert_eq!(n, 2);
}

#[test]
fn batch_lookup_matches_single_lookups() {
    let mut t = ConnTable::new(1000);
    let keys: Vec<FlowKey> = (0..100u16).map(|i| tcp((i % 7) as u8, i)).collect();
    for k in keys.iter().step_by(2) {
        t.insert(0, conn(k, FwdMethod::Nat)).unwrap();
    }
    let mut out = vec![None; keys.len()];
    let prefetched = std::cell::RefCell::new(Vec::new());
    t.lookup_in_batch(&keys, &mut out, |a| prefetched.borrow_mut().push(a));
    for (k, o) in keys.iter().zip(out.iter()) {
        assert_eq!(*o, t.lookup_in(k));
    }
    assert_eq!(out.iter().filter(|o| o.is_some()).count(), 50);
    // Every key's bucket line, and both ends of every present key's entry.
    let prefetched = prefetched.into_inner();
    assert_eq!(prefetched.len(), 100 + 2 * 50);
    for k in &keys {
        let w = t.warm_key(k, false).unwrap();
        let bucket = t.bucket_addr(w);
        assert_eq!(bucket % 64, 0, "a bucket is one aligned cache line");
        assert!(prefetched.contains(&bucket));
        match t.entry_addr(w) {
            Some(r) => {
                assert!(t.lookup_in(k).is_some(), "entry named for a missing key");
                assert!(prefetched.contains(&r.start) && prefetched.contains(&(r.end - 1)));
            }
            None => assert!(t.lookup_in(k).is_none(), "present key without an entry"),
        }
    }
}

#[test]
fn memory_per_ipv4_entry_is_within_budget() {
    let t = ConnTable::new(1_000_000);
    let b = t.bytes_per_entry();
    assert!(b <= 96, "{b} bytes per entry");
    assert!(t.bytes_per_entry_v6() > b);
}

/// `next_slots` names where the next inserts of a family land: the slab's
/// next unused entries, then (after a removal) the slot the free list
/// hands out next. `entry_addr` names where an entry lives.
#[test]
fn next_slots_names_the_entries_the_next_inserts_fill() {
    let mut t = ConnTable::new(100);
    let at = |t: &ConnTable, k: &FlowKey| t.entry_addr(t.warm_key(k, false).unwrap()).unwrap();
    let next = t.next_slots(false, 3);
    let size = next.len() / 3;
    assert!(size > 0);
    for i in 0..3u8 {
        let k = tcp(i, 1000);
        t.insert(0, conn(&k, FwdMethod::Dr)).unwrap();
        let e = at(&t, &k);
        assert_eq!(e.start, next.start + usize::from(i) * size, "entry {i}");
    }
    // Never past the capacity.
    assert_eq!(t.next_slots(false, 1_000).len(), 97 * size);
    // A removed entry's slot is the next one used.
    let k1 = tcp(1, 1000);
    let freed = at(&t, &k1);
    t.remove(t.lookup_in(&k1).unwrap()).unwrap();
    assert_eq!(t.next_slots(false, 5), freed);
    let k = tcp(9, 1000);
    t.insert(0, conn(&k, FwdMethod::Dr)).unwrap();
    assert_eq!(at(&t, &k), freed);
    // The IPv6 store has its own slots.
    assert_ne!(t.next_slots(true, 1).start, t.next_slots(false, 1).start);
}
