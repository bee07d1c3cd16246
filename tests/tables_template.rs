//! Persistence template rules.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xdpvs::service::model::{mask_addr, DestId, Proto};
use xdpvs::shard::template::{TemplateKey, TemplateTable, TplInsertError, TEMPLATE_RECHECK_MS};

fn client(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, i, 77))
}

fn vip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1))
}

fn real() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 200, 1))
}

fn addr_key(i: u8, vport: u16) -> TemplateKey {
    TemplateKey::Addr {
        proto: Proto::Tcp,
        client_masked: mask_addr(client(i), 24, 64),
        vip: vip(),
        vport,
    }
}

const T: u64 = 300_000;

#[test]
fn keys_as_ipvs_and_lookup() {
    let mut t = TemplateTable::new(10);
    let h = t
        .insert(0, addr_key(1, 80), DestId(5), real(), Some(8080), T)
        .unwrap();
    // Same /24 masked client: same key.
    let other_host = TemplateKey::Addr {
        proto: Proto::Tcp,
        client_masked: mask_addr(IpAddr::V4(Ipv4Addr::new(198, 18, 1, 9)), 24, 64),
        vip: vip(),
        vport: 80,
    };
    assert_eq!(t.lookup(&other_host), Some(h));
    // Different port, proto, prefix: different keys.
    assert_eq!(t.lookup(&addr_key(1, 443)), None);
    assert_eq!(t.lookup(&addr_key(2, 80)), None);
    let udp = TemplateKey::Addr {
        proto: Proto::Udp,
        client_masked: mask_addr(client(1), 24, 64),
        vip: vip(),
        vport: 80,
    };
    assert_eq!(t.lookup(&udp), None);
    // Port-0 services use vport 0; fwmark services their mark.
    let h0 = t
        .insert(0, addr_key(1, 0), DestId(6), real(), None, T)
        .unwrap();
    let fw = TemplateKey::Fwmark {
        client_masked: mask_addr(client(1), 24, 64),
        mark: 7,
    };
    let hf = t.insert(0, fw, DestId(7), real(), None, T).unwrap();
    assert_eq!(t.lookup(&addr_key(1, 0)), Some(h0));
    assert_eq!(t.lookup(&fw), Some(hf));
    assert_eq!(
        t.lookup(&TemplateKey::Fwmark {
            client_masked: mask_addr(client(1), 24, 64),
            mark: 8
        }),
        None
    );
    let tpl = t.get(h).unwrap();
    assert_eq!(
        (tpl.dest, tpl.raddr, tpl.rport, tpl.controls()),
        (DestId(5), real(), Some(8080), 0)
    );
    assert_eq!(*tpl.key(), addr_key(1, 80));
    assert_eq!(tpl.expires(), T);
    assert_eq!(t.len(), 3);
    // IPv6 clients.
    let c6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 3, 4, 5, 6));
    let k6 = TemplateKey::Fwmark {
        client_masked: mask_addr(c6, 24, 64),
        mark: 7,
    };
    let h6 = t.insert(0, k6, DestId(8), real(), None, T).unwrap();
    assert_eq!(t.lookup(&k6), Some(h6));
    assert_ne!(h6, hf);
}

#[test]
fn duplicate_and_capacity() {
    let mut t = TemplateTable::new(2);
    assert_eq!(t.capacity(), 2);
    let h = t
        .insert(0, addr_key(1, 80), DestId(1), real(), None, T)
        .unwrap();
    assert_eq!(
        t.insert(0, addr_key(1, 80), DestId(2), real(), None, T),
        Err(TplInsertError::Exists(h))
    );
    t.insert(0, addr_key(2, 80), DestId(1), real(), None, T)
        .unwrap();
    assert_eq!(
        t.insert(0, addr_key(3, 80), DestId(1), real(), None, T),
        Err(TplInsertError::Full)
    );
    assert_eq!(t.len(), 2);
    // Removing frees room, and the slot is reused.
    assert!(t.remove(h).is_some());
    assert_eq!(t.lookup(&addr_key(1, 80)), None);
    assert!(t.get(h).is_none());
    let h3 = t
        .insert(0, addr_key(3, 80), DestId(1), real(), None, T)
        .unwrap();
    assert_eq!(t.lookup(&addr_key(3, 80)), Some(h3));
    assert_eq!(t.len(), 2);
}

#[test]
fn rearm_extends_the_template() {
    let mut t = TemplateTable::new(4);
    let h = t
        .insert(0, addr_key(1, 80), DestId(1), real(), None, T)
        .unwrap();
    assert!(t.rearm(h, 200_000, T));
    assert_eq!(t.get(h).unwrap().expires(), 500_000);
    let mut gone = 0;
    t.expire(400_000, usize::MAX, |_| gone += 1);
    assert_eq!(gone, 0);
    assert!(t.lookup(&addr_key(1, 80)).is_some());
    t.expire(500_064, usize::MAX, |_| gone += 1);
    assert_eq!(gone, 1);
    assert_eq!(t.lookup(&addr_key(1, 80)), None);
    // Re-arming to a shorter timeout takes effect at once.
    let h = t
        .insert(500_000, addr_key(2, 80), DestId(1), real(), None, T)
        .unwrap();
    t.rearm(h, 500_000, 1_000);
    let st = t.expire(501_064, usize::MAX, |_| gone += 1);
    assert_eq!((st.visited, st.expired, gone), (1, 1, 2));
}

#[test]
fn kept_while_controlling_connections_then_expires_after_detach() {
    let mut t = TemplateTable::new(4);
    let h = t
        .insert(0, addr_key(1, 80), DestId(1), real(), None, T)
        .unwrap();
    assert!(t.attach(h));
    assert!(t.attach(h));
    assert_eq!(t.get(h).unwrap().controls(), 2);
    let mut gone = vec![];
    let now = T + 64; // timers fire on 64 ms ticks
    t.expire(now, usize::MAX, |tp| gone.push(tp.dest));
    assert!(gone.is_empty(), "kept while controls > 0");
    assert_eq!(t.get(h).unwrap().expires(), now + TEMPLATE_RECHECK_MS);
    t.detach(h);
    t.expire(now + TEMPLATE_RECHECK_MS, usize::MAX, |tp| {
        gone.push(tp.dest)
    });
    assert!(gone.is_empty(), "still one connection");
    t.detach(h);
    t.detach(h); // saturates at 0
    assert_eq!(t.get(h).unwrap().controls(), 0);
    t.expire(now + 2 * TEMPLATE_RECHECK_MS + 64, usize::MAX, |tp| {
        gone.push(tp.dest)
    });
    assert_eq!(gone, vec![DestId(1)]);
    assert!(t.is_empty());
}

#[test]
fn long_persistence_timeouts() {
    let day = 24 * 3_600_000u64;
    let mut t = TemplateTable::new(4);
    t.insert(0, addr_key(1, 80), DestId(1), real(), None, day)
        .unwrap();
    let mut gone = 0;
    let mut now = 0;
    while now < day - 600_000 {
        now += 600_000;
        t.expire(now, usize::MAX, |_| gone += 1);
    }
    assert_eq!(gone, 0);
    t.expire(day + 64, usize::MAX, |_| gone += 1);
    assert_eq!(gone, 1);
}

#[test]
fn get_mut_changes_the_destination() {
    let mut t = TemplateTable::new(4);
    let h = t
        .insert(0, addr_key(1, 80), DestId(1), real(), None, T)
        .unwrap();
    let m = t.get_mut(h).unwrap();
    m.dest = DestId(9);
    m.rport = Some(81);
    assert_eq!(t.get(h).unwrap().dest, DestId(9));
    assert_eq!(t.lookup(&addr_key(1, 80)), Some(h));
    assert!(t.bytes_per_entry() > 0);
}

/// `next_slots` names where the next inserts land: the slab's next unused
/// entries, then (after a removal) the slot the free list hands out next.
#[test]
fn next_slots_names_the_entries_the_next_inserts_fill() {
    let mut t = TemplateTable::new(10);
    let next = t.next_slots(2);
    let size = next.len() / 2;
    let inside = |r: &std::ops::Range<usize>, t: &TemplateTable, h| {
        let a = t.get(h).unwrap() as *const _ as usize;
        r.contains(&a)
    };
    let h0 = t
        .insert(0, addr_key(1, 80), DestId(1), real(), None, T)
        .unwrap();
    let h1 = t
        .insert(0, addr_key(2, 80), DestId(1), real(), None, T)
        .unwrap();
    assert!(inside(&(next.start..next.start + size), &t, h0));
    assert!(inside(&(next.start + size..next.end), &t, h1));
    assert_eq!(t.next_slots(100).len(), 8 * size, "never past the capacity");
    t.remove(h0).unwrap();
    let freed = t.next_slots(3);
    assert_eq!(freed, next.start..next.start + size);
    let h = t
        .insert(0, addr_key(3, 80), DestId(1), real(), None, T)
        .unwrap();
    assert!(inside(&freed, &t, h));
}
