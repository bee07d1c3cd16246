//! Connection and template table benchmark.
//!
//! `cargo bench --bench tables` (10k, 1M, 10M IPv4 connections) or
//! `cargo bench --bench tables -- --quick` (10k, 1M). Prints ns per insert,
//! per lookup (random hits, misses, batched hits), per established-packet
//! table work (lookup + update_tcp + get), per expired entry, and bytes per
//! entry, computed and measured as resident memory. `--hugepages`: the
//! tables are advised to use huge pages, as the director does with
//! `[director] hugepages = true`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use xdpvs::dataplane::mem;
use xdpvs::service::model::{mask_addr, DestId, FlowKey, FwdMethod, Proto};
use xdpvs::shard::conn::{ConnHandle, ConnTable, NewConn};
use xdpvs::shard::tcp_state::{flags, Dir};
use xdpvs::shard::template::{TemplateKey, TemplateTable};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

const PORTS: u64 = 60_000;

fn key(i: u64) -> FlowKey {
    let host = 0xC612_0000u32 + (i / PORTS) as u32; // 198.18.0.0/15
    FlowKey {
        proto: Proto::Tcp,
        src: IpAddr::V4(Ipv4Addr::from(host)),
        dst: IpAddr::V4(Ipv4Addr::new(198, 19, 255, 1)),
        sport: 1024 + (i % PORTS) as u16,
        dport: 443,
    }
}

fn real(i: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 19, 0, (i % 250) as u8 + 1))
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn ns_per(start: Instant, n: usize) -> f64 {
    start.elapsed().as_nanos() as f64 / n.max(1) as f64
}

struct Row {
    n: usize,
    insert: f64,
    hit: f64,
    batch: f64,
    miss: f64,
    packet: f64,
    expire: f64,
    bpe: usize,
    rss_bpe: f64,
}

fn bench_conns(n: usize, rng: &mut Rng) -> Row {
    let rss0 = rss_bytes();
    let mut t = ConnTable::new(n);
    advise(&t.memory_regions());
    let now = 1_000_000;
    // Every connection NAT: two index keys each (the worst case for memory).
    let start = Instant::now();
    for i in 0..n as u64 {
        let k = key(i);
        let c = NewConn::from_key(&k, real(i), 8443, DestId((i % 250) as u32), FwdMethod::Nat);
        if t.insert(now, c).is_err() {
            eprintln!("insert {i} failed");
            break;
        }
    }
    let insert = ns_per(start, n);
    let rss_bpe = rss_bytes().saturating_sub(rss0) as f64 / n as f64;

    let samples = n.min(1 << 20);
    let hits: Vec<FlowKey> = (0..samples).map(|_| key(rng.below(n as u64))).collect();
    let misses: Vec<FlowKey> = (0..samples)
        .map(|_| key(n as u64 + rng.below(n as u64)))
        .collect();
    let rounds = (4_000_000 / samples).max(1);

    let start = Instant::now();
    let mut found = 0usize;
    for _ in 0..rounds {
        for k in &hits {
            found += usize::from(t.lookup_in(black_box(k)).is_some());
        }
    }
    let hit = ns_per(start, rounds * samples);
    assert_eq!(found, rounds * samples, "all hits found");

    let mut out = vec![None::<ConnHandle>; 32];
    let start = Instant::now();
    let mut found = 0usize;
    for _ in 0..rounds {
        for ks in hits.chunks(32) {
            t.lookup_in_batch(black_box(ks), &mut out, mem::prefetch);
            found += out[..ks.len()].iter().filter(|o| o.is_some()).count();
        }
    }
    let batch = ns_per(start, rounds * samples);
    assert_eq!(found, rounds * samples);

    let start = Instant::now();
    let mut found = 0usize;
    for _ in 0..rounds {
        for k in &misses {
            found += usize::from(t.lookup_in(black_box(k)).is_some());
        }
    }
    let miss = ns_per(start, rounds * samples);
    assert_eq!(found, 0);

    // Established-packet table work: lookup, state update + re-arm, read.
    let start = Instant::now();
    let mut sum = 0u64;
    for _ in 0..rounds {
        for k in &hits {
            if let Some(h) = t.lookup_in(black_box(k)) {
                t.update_tcp(h, now + 10, Dir::Input, flags::ACK);
                if let Some(c) = t.get(h) {
                    sum = sum.wrapping_add(u64::from(c.rport));
                }
            }
        }
    }
    let packet = ns_per(start, rounds * samples);
    black_box(sum);
    let bpe = t.bytes_per_entry();
    drop(hits);
    drop(misses);

    // Expire everything: established entries re-armed lazily at first, so
    // go past the ESTABLISHED timeout.
    let start = Instant::now();
    let mut expired = 0usize;
    let mut visited = 0usize;
    let mut at = now;
    while !t.is_empty() {
        at += 1_000_000;
        let st = t.expire(at, usize::MAX, |c| {
            black_box(c.dest);
        });
        expired += st.expired;
        visited += st.visited;
    }
    let expire = ns_per(start, expired);
    assert_eq!(expired, n);
    eprintln!("  expire: {visited} timer visits for {expired} expired entries");
    Row {
        n,
        insert,
        hit,
        batch,
        miss,
        packet,
        expire,
        bpe,
        rss_bpe,
    }
}

fn bench_templates(n: usize, rng: &mut Rng) -> (usize, f64, f64, f64, usize) {
    let vip = IpAddr::V4(Ipv4Addr::new(198, 19, 255, 1));
    let tkey = |i: u64| {
        let c = IpAddr::V4(Ipv4Addr::from(0xC612_0000u32.wrapping_add((i as u32) << 8)));
        TemplateKey::Addr {
            proto: Proto::Tcp,
            client_masked: mask_addr(c, 24, 64),
            vip,
            vport: 443,
        }
    };
    let mut t = TemplateTable::new(n);
    advise(&t.memory_regions());
    let start = Instant::now();
    for i in 0..n as u64 {
        if t.insert(0, tkey(i), DestId(1), real(i), None, 300_000)
            .is_err()
        {
            eprintln!("template insert {i} failed");
            break;
        }
    }
    let insert = ns_per(start, n);
    let samples = n.min(1 << 20);
    let keys: Vec<TemplateKey> = (0..samples).map(|_| tkey(rng.below(n as u64))).collect();
    let rounds = (4_000_000 / samples).max(1);
    let start = Instant::now();
    let mut found = 0usize;
    for _ in 0..rounds {
        for k in &keys {
            found += usize::from(t.lookup(black_box(k)).is_some());
        }
    }
    let lookup = ns_per(start, rounds * samples);
    assert_eq!(found, rounds * samples);
    let start = Instant::now();
    let st = t.expire(1_000_000, usize::MAX, |x| {
        black_box(x.dest);
    });
    let expire = ns_per(start, st.expired);
    (n, insert, lookup, expire, t.bytes_per_entry())
}

/// Huge pages for a table's reservations with `--hugepages`, as the director
/// advises them with `hugepages = true`.
fn advise(regions: &[std::ops::Range<usize>]) {
    if std::env::args().any(|a| a == "--hugepages") {
        mem::advise_hugepages(regions);
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes: &[usize] = if quick {
        &[10_000, 1_000_000]
    } else {
        &[10_000, 1_000_000, 10_000_000]
    };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    println!("connection table (IPv4, all NAT: inbound + reply key per entry)");
    println!(
        "{:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>8} {:>9}",
        "entries",
        "insert",
        "hit",
        "hit/batch",
        "miss",
        "packet",
        "expire/ent",
        "B/entry",
        "RSS B/e",
        ""
    );
    for &n in sizes {
        eprintln!("building {n} connections");
        let r = bench_conns(n, &mut rng);
        println!(
            "{:>10} {:>7.1}ns {:>7.1}ns {:>7.1}ns {:>7.1}ns {:>7.1}ns {:>8.1}ns {:>10} {:>8.1}",
            r.n, r.insert, r.hit, r.batch, r.miss, r.packet, r.expire, r.bpe, r.rss_bpe
        );
    }
    println!();
    println!("template table (IPv4 /24 Addr keys)");
    println!(
        "{:>10} {:>9} {:>9} {:>10} {:>8}",
        "entries", "insert", "lookup", "expire/ent", "B/entry"
    );
    let tsizes: &[usize] = if quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 1_000_000, 10_000_000]
    };
    for &n in tsizes {
        let (n, ins, look, exp, bpe) = bench_templates(n, &mut rng);
        println!(
            "{:>10} {:>7.1}ns {:>7.1}ns {:>8.1}ns {:>8}",
            n, ins, look, exp, bpe
        );
    }
}
