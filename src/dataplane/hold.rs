//! Frames waiting for a next hop's MAC, as the kernel's `arp_queue` keeps
//! them: the engine rewrote a frame but the neighbour towards its
//! destination is still being resolved ([`Verdict::Hold`]). A shard keeps a
//! few such frames per destination for a short time and sends them when
//! the MAC is known, instead of dropping the first packets of every new
//! neighbour (a TCP client then waits a 1 s retransmission; a UDP reply is
//! lost). Bounded per destination and in total; what expires or does not
//! fit is dropped by the caller and counted (`no_neighbor`).
//!
//! [`Verdict::Hold`]: crate::shard::verdict::Verdict::Hold

use std::collections::VecDeque;
use std::net::IpAddr;

use crate::service::model::Millis;
use crate::shard::nexthop::NextHop;

/// How long a frame waits for its next hop (the kernel probes for 3 s; a
/// TCP sender retransmits after 1 s, so holding longer helps nobody).
pub const HOLD_MS: Millis = 1_000;
/// Frames held per destination (the kernel's default `unres_qlen` is in
/// bytes; a few frames cover a handshake and a first request).
pub const HOLD_PER_DEST: usize = 8;
/// Frames held per shard at most (out of 8192 UMEM frames).
pub const HOLD_TOTAL: usize = 256;

/// One held frame: where it is in the UMEM, where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub base: u64,
    pub start: usize,
    pub len: usize,
    pub ifindex: u32,
    pub dest: IpAddr,
    pub until: Millis,
}

/// A bounded FIFO of held frames.
#[derive(Debug)]
pub struct HoldQueue {
    q: VecDeque<Held>,
    per_dest: usize,
    total: usize,
}

impl Default for HoldQueue {
    fn default() -> Self {
        HoldQueue::new(HOLD_PER_DEST, HOLD_TOTAL)
    }
}

impl HoldQueue {
    pub fn new(per_dest: usize, total: usize) -> HoldQueue {
        HoldQueue {
            q: VecDeque::with_capacity(total),
            per_dest,
            total,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Keep `h`; gives it back when the queue, or its destination's share,
    /// is full.
    pub fn push(&mut self, h: Held) -> Result<(), Held> {
        if self.q.len() >= self.total
            || self.q.iter().filter(|o| o.dest == h.dest).count() >= self.per_dest
        {
            return Err(h);
        }
        self.q.push_back(h);
        Ok(())
    }

    /// Hand every frame whose next hop `resolve` now knows to `ready` (in
    /// arrival order), every expired one to `expired`; keep the rest.
    pub fn service(
        &mut self,
        now: Millis,
        mut resolve: impl FnMut(IpAddr) -> Option<NextHop>,
        mut ready: impl FnMut(Held, NextHop),
        mut expired: impl FnMut(Held),
    ) {
        let mut keep = VecDeque::with_capacity(self.q.len());
        for h in self.q.drain(..) {
            if let Some(hop) = resolve(h.dest) {
                ready(h, hop);
            } else if now >= h.until {
                expired(h);
            } else {
                keep.push_back(h);
            }
        }
        self.q = keep;
    }

    /// Everything held (at shutdown).
    pub fn take_all(&mut self) -> Vec<Held> {
        self.q.drain(..).collect()
    }
}

/// Write a resolved next hop's addresses into the held frame's Ethernet
/// header (`frame` is the packet, Ethernet first). False when too short.
pub fn set_macs(frame: &mut [u8], hop: &NextHop) -> bool {
    match frame.get_mut(..12) {
        Some(eth) => {
            let (dst, src) = eth.split_at_mut(6);
            dst.copy_from_slice(&hop.dst_mac);
            src.copy_from_slice(&hop.src_mac);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(n: u64, dest: &str, until: Millis) -> Held {
        Held {
            base: n * 4096,
            start: 256,
            len: 60,
            ifindex: 3,
            dest: dest.parse().unwrap(),
            until,
        }
    }

    const HOP: NextHop = NextHop {
        ifindex: 3,
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        mtu: 1500,
    };

    #[test]
    fn bounded_per_destination_and_in_total() {
        let mut q = HoldQueue::new(2, 3);
        assert!(q.push(held(1, "198.18.0.1", 10)).is_ok());
        assert!(q.push(held(2, "198.18.0.1", 10)).is_ok());
        assert_eq!(
            q.push(held(3, "198.18.0.1", 10)),
            Err(held(3, "198.18.0.1", 10))
        );
        assert!(q.push(held(4, "2001:db8::1", 10)).is_ok());
        assert!(q.push(held(5, "2001:db8::2", 10)).is_err());
        assert_eq!(q.len(), 3);
    }

    /// Resolved frames leave in arrival order, expired ones are reported,
    /// the rest stay until their time.
    #[test]
    fn service_sends_resolved_expires_late_keeps_the_rest() {
        let mut q = HoldQueue::new(8, 16);
        for (n, d, until) in [
            (1, "198.18.0.1", 100),
            (2, "198.18.0.2", 50),
            (3, "198.18.0.1", 100),
            (4, "198.18.0.3", 200),
        ] {
            q.push(held(n, d, until)).unwrap();
        }
        let known: IpAddr = "198.18.0.1".parse().unwrap();
        let (mut sent, mut gone) = (Vec::new(), Vec::new());
        q.service(
            60,
            |d| (d == known).then_some(HOP),
            |h, _| sent.push(h.base / 4096),
            |h| gone.push(h.base / 4096),
        );
        assert_eq!(sent, vec![1, 3]);
        assert_eq!(gone, vec![2]);
        assert_eq!(q.len(), 1);
        q.service(200, |_| None, |_, _| {}, |h| gone.push(h.base / 4096));
        assert_eq!(gone, vec![2, 4]);
        assert!(q.is_empty());
    }

    #[test]
    fn macs_are_written_into_the_ethernet_header() {
        let mut f = [0u8; 14];
        assert!(set_macs(&mut f, &HOP));
        assert_eq!(f[..6], HOP.dst_mac);
        assert_eq!(f[6..12], HOP.src_mac);
        assert!(!set_macs(&mut [0u8; 11], &HOP));
    }
}
