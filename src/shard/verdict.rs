//! What the engine decides about one frame, and the frame buffer it works on.

/// A packet buffer with headroom: the packet is `buf[start..start + len]`.
/// Encapsulation grows the packet to the front by lowering `start`, so the
/// AF_XDP layer gives frames with headroom (256 bytes) and nothing is copied.
#[derive(Debug)]
pub struct Frame<'a> {
    pub buf: &'a mut [u8],
    pub start: usize,
    pub len: usize,
}

impl<'a> Frame<'a> {
    /// A frame whose packet starts at `start` and is `len` bytes long.
    /// Out-of-range values are clamped so that accessors never panic.
    pub fn new(buf: &'a mut [u8], start: usize, len: usize) -> Self {
        let start = start.min(buf.len());
        let len = len.min(buf.len() - start);
        Frame { buf, start, len }
    }
    pub fn data(&self) -> &[u8] {
        self.buf
            .get(self.start..self.start + self.len)
            .unwrap_or_default()
    }
    pub fn data_mut(&mut self) -> &mut [u8] {
        self.buf
            .get_mut(self.start..self.start + self.len)
            .unwrap_or_default()
    }
    pub fn headroom(&self) -> usize {
        self.start
    }
    /// Grow the packet by `n` bytes at the front. Returns false (and changes
    /// nothing) when the headroom is too small.
    pub fn push_front(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        self.len += n;
        true
    }
    /// Remove `n` bytes from the front. Returns false when the packet is shorter.
    pub fn pull_front(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.start += n;
        self.len -= n;
        true
    }
}

/// Why a frame was dropped. Every reason is a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DropReason {
    /// Header truncated or inconsistent (see the wire error counters).
    Malformed = 0,
    /// An IP fragment of a virtual service (policy: not reassembled).
    Fragment,
    /// The service has no real server that may take a new connection.
    NoDest,
    /// The connection table is full and nothing could be evicted.
    TableFull,
    /// No MAC address known yet for the next hop (resolution was requested).
    NoNeighbor,
    /// The frame has no headroom for encapsulation, or would exceed the MTU.
    NoRoom,
    /// A TCP packet other than a SYN for an unknown connection.
    NotSyn,
    /// A packet of a connection to a removed real server (dropped, or
    /// expired with `expire_nodest_conn`): without `expire_nodest_conn` the
    /// connection is left to time out; with it, the connection is expired
    /// and only a packet that cannot open a new one (TCP other than SYN)
    /// is dropped.
    DestRemoved,
    /// Hand-off channel to the owner shard was full.
    HandoffFull,
    /// TTL/hop limit would reach zero.
    TtlExceeded,
    /// ICMP error that matches no connection.
    IcmpNoConn,
}

impl DropReason {
    pub const ALL: [DropReason; 11] = [
        DropReason::Malformed,
        DropReason::Fragment,
        DropReason::NoDest,
        DropReason::TableFull,
        DropReason::NoNeighbor,
        DropReason::NoRoom,
        DropReason::NotSyn,
        DropReason::DestRemoved,
        DropReason::HandoffFull,
        DropReason::TtlExceeded,
        DropReason::IcmpNoConn,
    ];
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Fragment => "fragment",
            DropReason::NoDest => "no_dest",
            DropReason::TableFull => "table_full",
            DropReason::NoNeighbor => "no_neighbor",
            DropReason::NoRoom => "no_room",
            DropReason::NotSyn => "not_syn",
            DropReason::DestRemoved => "dest_removed",
            DropReason::HandoffFull => "handoff_full",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::IcmpNoConn => "icmp_no_conn",
        }
    }
}

/// The engine's decision about one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The frame was rewritten in place; send it out of interface `ifindex`.
    Forward { ifindex: u32 },
    /// Rewritten for interface `ifindex`, but the MAC of the next hop
    /// towards `dest` is not known yet (the kernel is resolving it): hold
    /// the frame briefly, fill in the destination MAC once the neighbour
    /// is known and send it (as the kernel's `arp_queue` does), or drop it
    /// and count `no_neighbor` when the hold expires.
    Hold {
        ifindex: u32,
        dest: std::net::IpAddr,
    },
    /// Not virtual-service traffic. The XDP filter sends the data path
    /// only frames it must translate, so a frame from an AF_XDP socket
    /// never gets this verdict in practice; if one does, it cannot go back
    /// to the kernel and is dropped and counted (`passed_unhandled`).
    Pass,
    /// Drop it and count `reason`.
    Drop(DropReason),
    /// Another shard owns this client group: hand the frame over.
    Handoff(u16),
}
