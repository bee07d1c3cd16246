//! What a connection listing (`xdpvs list --connections`, 200,000 rows,
//! `MAX_DUMP_ROWS`) costs a shard, the work a listing takes from packet
//! processing:
//! - before: the shard formatted every row (5 strings) while holding its
//!   report lock, and the control thread cloned them under the same lock,
//!   so a shard publishing its counters waited for the clone;
//! - now: the shard copies plain rows ([`DumpRow`]) and moves the vector
//!   in; the control thread takes it with one move and formats it after
//!   releasing the lock.
//!
//! `cargo bench --bench listing`; prints ms per listing (median of 7) for
//! both, and the ratio.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use xdpvs::control::status::{ConnRow, DumpRow, MAX_DUMP_ROWS};
use xdpvs::service::model::Proto;

fn rows() -> Vec<DumpRow> {
    (0..MAX_DUMP_ROWS as u32)
        .map(|i| DumpRow::Conn {
            proto: Proto::Tcp,
            state: Some("ESTABLISHED"),
            client: (
                IpAddr::V4(Ipv4Addr::from(0xc612_0000 | (i & 0xffff))),
                1024 + (i % 60000) as u16,
            ),
            virt: (IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)), 80),
            dest: (
                IpAddr::V4(Ipv4Addr::new(198, 18, 1, 11 + (i % 3) as u8)),
                80,
            ),
            expires_ms: 900_000,
        })
        .collect()
}

fn median_ms(mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[3]
}

fn main() {
    let table = rows();
    // Before: format every row on the shard, then a reader's clone of the
    // formatted rows under the shard's lock.
    let before = median_ms(|| {
        let formatted: Vec<ConnRow> = table.iter().map(DumpRow::render).collect();
        let cloned: Vec<ConnRow> = formatted.to_vec();
        black_box((formatted, cloned));
    });
    // Now: copy plain rows on the shard; the lock is held for a move.
    let now = median_ms(|| {
        let copied: Vec<DumpRow> = table.to_vec();
        black_box(copied);
    });
    println!(
        "listing of {} rows, shard-side: before {before:.1} ms, now {now:.2} ms ({:.0}x less)",
        table.len(),
        before / now.max(1e-9)
    );
}
