//! Per-shard counters: atomics written only by the owning shard thread
//! (relaxed load + store, no read-modify-write), read by stats/metrics
//! readers through [`ShardCounters::snapshot`].

use std::sync::atomic::{AtomicU64, Ordering};

use crate::shard::verdict::DropReason;

/// Number of drop reasons (length of [`DropReason::ALL`]).
pub const N_DROP_REASONS: usize = DropReason::ALL.len();

/// A plain copy of one shard's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Frames received from AF_XDP sockets.
    pub rx: u64,
    /// Frames whose transmission completed (reaped from completion rings).
    pub tx: u64,
    /// Frames handed to another shard (sent successfully).
    pub handoff_out: u64,
    /// Frames received from other shards.
    pub handoff_in: u64,
    /// Drops by reason, indexed by `DropReason as usize`.
    pub dropped: [u64; N_DROP_REASONS],
    /// `Verdict::Pass` for a frame that came through AF_XDP: it cannot go back
    /// to the kernel, so it is recycled.
    pub passed_unhandled: u64,
    /// Frames dropped because the TX ring of the target socket was full.
    pub tx_full: u64,
    /// `Verdict::Handoff` to this shard itself, to a shard that does not
    /// exist, or for a frame that was already handed over once.
    pub handoff_invalid: u64,
    /// `Verdict::Forward` to an interface this shard has no socket on.
    pub forward_no_socket: u64,
    /// A frame whose `start`/`len` (after the engine) do not fit its buffer.
    pub tx_invalid: u64,
    /// A handed-over frame that could not get a UMEM frame (all in use) or
    /// did not fit in one.
    pub no_frame: u64,
    /// TX wake-ups (`sendto`) issued.
    pub kicks: u64,
    /// Times the shard blocked in `poll()`.
    pub sleeps: u64,
    /// Kernel XSK statistics, summed over the shard's sockets (refreshed
    /// about once a second): frames dropped by the kernel (no room in RX),
    pub xsk_rx_dropped: u64,
    /// ... times the RX ring was full,
    pub xsk_rx_ring_full: u64,
    /// ... times the fill ring was empty,
    pub xsk_fill_empty: u64,
    /// ... and invalid TX descriptors.
    pub xsk_tx_invalid: u64,
    /// Set when the shard exits: UMEM frames found nowhere (leaked). Always 0
    /// while running.
    pub frames_missing: u64,
}

impl ShardStats {
    /// Drops for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped.get(reason as usize).copied().unwrap_or(0)
    }

    /// Frames lost in the I/O layer (and the kernel's XSK events), by name;
    /// only the nonzero ones.
    pub fn io_loss(&self) -> Vec<(String, u64)> {
        [
            ("tx_full", self.tx_full),
            ("no_frame", self.no_frame),
            ("tx_invalid", self.tx_invalid),
            ("forward_no_socket", self.forward_no_socket),
            ("handoff_invalid", self.handoff_invalid),
            ("xsk_rx_dropped", self.xsk_rx_dropped),
            ("xsk_rx_ring_full", self.xsk_rx_ring_full),
            ("xsk_fill_empty", self.xsk_fill_empty),
            ("xsk_tx_invalid", self.xsk_tx_invalid),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_string(), n))
        .collect()
    }

    /// Count one more drop for `reason`.
    pub fn count_drop(&mut self, reason: DropReason) {
        if let Some(c) = self.dropped.get_mut(reason as usize) {
            *c += 1;
        }
    }

    /// All drops, every reason.
    pub fn total_dropped(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// Field-wise sum of several shards' stats.
    pub fn sum(all: &[ShardStats]) -> ShardStats {
        let mut t = ShardStats::default();
        for s in all {
            t.rx += s.rx;
            t.tx += s.tx;
            t.handoff_out += s.handoff_out;
            t.handoff_in += s.handoff_in;
            for (a, b) in t.dropped.iter_mut().zip(s.dropped.iter()) {
                *a += b;
            }
            t.passed_unhandled += s.passed_unhandled;
            t.tx_full += s.tx_full;
            t.handoff_invalid += s.handoff_invalid;
            t.forward_no_socket += s.forward_no_socket;
            t.tx_invalid += s.tx_invalid;
            t.no_frame += s.no_frame;
            t.kicks += s.kicks;
            t.sleeps += s.sleeps;
            t.xsk_rx_dropped += s.xsk_rx_dropped;
            t.xsk_rx_ring_full += s.xsk_rx_ring_full;
            t.xsk_fill_empty += s.xsk_fill_empty;
            t.xsk_tx_invalid += s.xsk_tx_invalid;
            t.frames_missing += s.frames_missing;
        }
        t
    }
}

/// The shared, atomic form of [`ShardStats`]. Aligned to keep shards' counters
/// on separate cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardCounters {
    rx: AtomicU64,
    tx: AtomicU64,
    handoff_out: AtomicU64,
    handoff_in: AtomicU64,
    dropped: [AtomicU64; N_DROP_REASONS],
    passed_unhandled: AtomicU64,
    tx_full: AtomicU64,
    handoff_invalid: AtomicU64,
    forward_no_socket: AtomicU64,
    tx_invalid: AtomicU64,
    no_frame: AtomicU64,
    kicks: AtomicU64,
    sleeps: AtomicU64,
    xsk_rx_dropped: AtomicU64,
    xsk_rx_ring_full: AtomicU64,
    xsk_fill_empty: AtomicU64,
    xsk_tx_invalid: AtomicU64,
    frames_missing: AtomicU64,
}

fn put(a: &AtomicU64, v: u64) {
    a.store(v, Ordering::Relaxed);
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl ShardCounters {
    /// `n` zeroed counter blocks, one per shard.
    pub fn new_shared(n: usize) -> std::sync::Arc<[ShardCounters]> {
        (0..n).map(|_| ShardCounters::default()).collect()
    }

    /// Publish `s` (the owner's running totals). Only the owning thread calls this.
    pub fn publish(&self, s: &ShardStats) {
        put(&self.rx, s.rx);
        put(&self.tx, s.tx);
        put(&self.handoff_out, s.handoff_out);
        put(&self.handoff_in, s.handoff_in);
        for (a, v) in self.dropped.iter().zip(s.dropped.iter()) {
            put(a, *v);
        }
        put(&self.passed_unhandled, s.passed_unhandled);
        put(&self.tx_full, s.tx_full);
        put(&self.handoff_invalid, s.handoff_invalid);
        put(&self.forward_no_socket, s.forward_no_socket);
        put(&self.tx_invalid, s.tx_invalid);
        put(&self.no_frame, s.no_frame);
        put(&self.kicks, s.kicks);
        put(&self.sleeps, s.sleeps);
        put(&self.xsk_rx_dropped, s.xsk_rx_dropped);
        put(&self.xsk_rx_ring_full, s.xsk_rx_ring_full);
        put(&self.xsk_fill_empty, s.xsk_fill_empty);
        put(&self.xsk_tx_invalid, s.xsk_tx_invalid);
        put(&self.frames_missing, s.frames_missing);
    }

    /// A consistent-enough copy (each field read relaxed) for readers.
    pub fn snapshot(&self) -> ShardStats {
        let mut dropped = [0u64; N_DROP_REASONS];
        for (d, a) in dropped.iter_mut().zip(self.dropped.iter()) {
            *d = get(a);
        }
        ShardStats {
            rx: get(&self.rx),
            tx: get(&self.tx),
            handoff_out: get(&self.handoff_out),
            handoff_in: get(&self.handoff_in),
            dropped,
            passed_unhandled: get(&self.passed_unhandled),
            tx_full: get(&self.tx_full),
            handoff_invalid: get(&self.handoff_invalid),
            forward_no_socket: get(&self.forward_no_socket),
            tx_invalid: get(&self.tx_invalid),
            no_frame: get(&self.no_frame),
            kicks: get(&self.kicks),
            sleeps: get(&self.sleeps),
            xsk_rx_dropped: get(&self.xsk_rx_dropped),
            xsk_rx_ring_full: get(&self.xsk_rx_ring_full),
            xsk_fill_empty: get(&self.xsk_fill_empty),
            xsk_tx_invalid: get(&self.xsk_tx_invalid),
            frames_missing: get(&self.frames_missing),
        }
    }
}

/// Snapshots of all shards, in shard order.
pub fn snapshot_all(counters: &[ShardCounters]) -> Vec<ShardStats> {
    counters.iter().map(ShardCounters::snapshot).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reason_discriminants_index_the_array() {
        // The counters index `dropped` by `reason as usize`: every reason must
        // land on its own slot.
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn publish_then_snapshot_round_trips_every_field() {
        let mut s = ShardStats {
            rx: 1,
            tx: 2,
            handoff_out: 3,
            handoff_in: 4,
            passed_unhandled: 5,
            tx_full: 6,
            handoff_invalid: 7,
            forward_no_socket: 8,
            tx_invalid: 9,
            no_frame: 10,
            kicks: 11,
            sleeps: 12,
            xsk_rx_dropped: 13,
            xsk_rx_ring_full: 14,
            xsk_fill_empty: 15,
            xsk_tx_invalid: 16,
            frames_missing: 17,
            ..ShardStats::default()
        };
        for (i, r) in DropReason::ALL.iter().enumerate() {
            for _ in 0..=i {
                s.count_drop(*r);
            }
        }
        let c = ShardCounters::new_shared(2);
        c[1].publish(&s);
        assert_eq!(c[1].snapshot(), s);
        assert_eq!(c[0].snapshot(), ShardStats::default());
        assert_eq!(s.dropped(DropReason::IcmpNoConn), 11);
        assert_eq!(s.total_dropped(), (1..=11).sum::<u64>());
    }

    #[test]
    fn sum_adds_every_field() {
        let mut a = ShardStats {
            rx: 1,
            tx: 1,
            handoff_out: 1,
            handoff_in: 1,
            passed_unhandled: 1,
            tx_full: 1,
            handoff_invalid: 1,
            forward_no_socket: 1,
            tx_invalid: 1,
            no_frame: 1,
            kicks: 1,
            sleeps: 1,
            xsk_rx_dropped: 1,
            xsk_rx_ring_full: 1,
            xsk_fill_empty: 1,
            xsk_tx_invalid: 1,
            frames_missing: 1,
            ..ShardStats::default()
        };
        a.count_drop(DropReason::NoDest);
        let t = ShardStats::sum(&[a, a, a]);
        let mut want = ShardStats {
            rx: 3,
            tx: 3,
            handoff_out: 3,
            handoff_in: 3,
            passed_unhandled: 3,
            tx_full: 3,
            handoff_invalid: 3,
            forward_no_socket: 3,
            tx_invalid: 3,
            no_frame: 3,
            kicks: 3,
            sleeps: 3,
            xsk_rx_dropped: 3,
            xsk_rx_ring_full: 3,
            xsk_fill_empty: 3,
            xsk_tx_invalid: 3,
            frames_missing: 3,
            ..ShardStats::default()
        };
        for _ in 0..3 {
            want.count_drop(DropReason::NoDest);
        }
        assert_eq!(t, want);
    }
}
