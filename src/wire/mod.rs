//! Packet header views: zero-copy, checked constructors, no I/O.
//!
//! Each header has a view `Xxx<T: AsRef<[u8]>>` built with
//! `Xxx::new_checked(buf)` (validates lengths and fields once; then the
//! accessors cannot panic) or `Xxx::new_unchecked(buf)` (for buffers whose
//! length the caller already knows; accessors still never panic, they read
//! zero / write nothing out of range). Views over `T: AsMut<[u8]>` have
//! setters for the fields the director rewrites. `XxxRepr` structs describe a
//! header as plain values and `emit` it into a buffer.
//!
//! [`packet::parse`] is the single per-packet pass the engine runs.

pub mod checksum;
pub mod ethernet;
pub mod flow;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod packet;
pub mod sync;
pub mod sync_auth;
pub mod tcp;
pub mod udp;

pub use ethernet::{EthernetFrame, EthernetRepr, VlanTag};
pub use flow::{FlowKey, Proto};
pub use icmp::{IcmpInner, Icmpv4Packet, Icmpv6Packet};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{ExtChain, Ipv6Packet, Ipv6Repr};
pub use packet::{parse, InnerInfo, L3Kind, PacketInfo};
pub use tcp::{TcpPacket, TcpRepr};
pub use udp::{UdpPacket, UdpRepr};

/// IP protocol numbers used here.
pub mod proto {
    /// Internet Control Message Protocol (v4).
    pub const ICMP: u8 = 1;
    /// IPv4 encapsulation (IP-in-IP).
    pub const IPIP: u8 = 4;
    /// Transmission Control Protocol.
    pub const TCP: u8 = 6;
    /// User Datagram Protocol.
    pub const UDP: u8 = 17;
    /// IPv6 encapsulation.
    pub const IPV6: u8 = 41;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;
}

/// EtherType values used here.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service VLAN tag (QinQ outer).
    pub const QINQ: u16 = 0x88a8;
    /// Pre-standard QinQ outer tag.
    pub const QINQ_OLD: u16 = 0x9100;
}

/// Which header a truncation was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    Ethernet,
    Vlan,
    Ipv4,
    Ipv6,
    Ipv6Ext,
    Tcp,
    Udp,
    Icmp,
}

impl Layer {
    /// Short lowercase name.
    pub const fn name(self) -> &'static str {
        match self {
            Layer::Ethernet => "ethernet",
            Layer::Vlan => "vlan",
            Layer::Ipv4 => "ipv4",
            Layer::Ipv6 => "ipv6",
            Layer::Ipv6Ext => "ipv6_ext",
            Layer::Tcp => "tcp",
            Layer::Udp => "udp",
            Layer::Icmp => "icmp",
        }
    }
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a packet could not be parsed. One variant per reason; every reason
/// has a counter name ([`WireError::reason`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WireError {
    /// The buffer ends inside the header of `layer`.
    #[error("truncated {layer} header")]
    Truncated { layer: Layer },
    /// IP version field does not match the EtherType (or the inner header).
    #[error("bad IP version")]
    BadVersion,
    /// IPv4 IHL below 5.
    #[error("bad IPv4 header length")]
    BadIhl,
    /// IPv4 total length / IPv6 payload length inconsistent with the header
    /// or longer than the buffer.
    #[error("bad IP total length")]
    BadTotalLen,
    /// TCP data offset below 5 or past the segment.
    #[error("bad TCP data offset")]
    BadTcpOffset,
    /// UDP length field below 8 or past the datagram.
    #[error("UDP length mismatch")]
    UdpLenMismatch,
    /// More IPv6 extension headers than we walk.
    #[error("IPv6 extension header chain too long")]
    ExtHeaderChainTooLong,
    /// IPv6 extension headers out of order or repeated (hop-by-hop not
    /// first, a second fragment header: a loop or a crafted chain).
    #[error("IPv6 extension header chain out of order")]
    ExtHeaderOrder,
    /// The packet embedded in an ICMP error is cut inside its IP header or
    /// inside the first 8 bytes of its TCP/UDP header.
    #[error("ICMP error's embedded packet truncated")]
    IcmpInnerTruncated,
    /// The packet embedded in an ICMP error has a bad IP header (version,
    /// IHL, extension header chain).
    #[error("ICMP error's embedded packet malformed")]
    IcmpInnerMalformed,
}

impl WireError {
    /// Stable counter name for this reason.
    pub const fn reason(&self) -> &'static str {
        match self {
            WireError::Truncated { layer } => match layer {
                Layer::Ethernet => "truncated_ethernet",
                Layer::Vlan => "truncated_vlan",
                Layer::Ipv4 => "truncated_ipv4",
                Layer::Ipv6 => "truncated_ipv6",
                Layer::Ipv6Ext => "truncated_ipv6_ext",
                Layer::Tcp => "truncated_tcp",
                Layer::Udp => "truncated_udp",
                Layer::Icmp => "truncated_icmp",
            },
            WireError::BadVersion => "bad_version",
            WireError::BadIhl => "bad_ihl",
            WireError::BadTotalLen => "bad_total_len",
            WireError::BadTcpOffset => "bad_tcp_offset",
            WireError::UdpLenMismatch => "udp_len_mismatch",
            WireError::ExtHeaderChainTooLong => "ext_header_chain_too_long",
            WireError::ExtHeaderOrder => "ext_header_order",
            WireError::IcmpInnerTruncated => "icmp_inner_truncated",
            WireError::IcmpInnerMalformed => "icmp_inner_malformed",
        }
    }

    /// Position of this reason in [`WireError::ALL`] (for counter arrays).
    pub const fn index(&self) -> usize {
        match self {
            WireError::Truncated { layer } => match layer {
                Layer::Ethernet => 0,
                Layer::Vlan => 1,
                Layer::Ipv4 => 2,
                Layer::Ipv6 => 3,
                Layer::Ipv6Ext => 4,
                Layer::Tcp => 5,
                Layer::Udp => 6,
                Layer::Icmp => 7,
            },
            WireError::BadVersion => 8,
            WireError::BadIhl => 9,
            WireError::BadTotalLen => 10,
            WireError::BadTcpOffset => 11,
            WireError::UdpLenMismatch => 12,
            WireError::ExtHeaderChainTooLong => 13,
            WireError::ExtHeaderOrder => 14,
            WireError::IcmpInnerTruncated => 15,
            WireError::IcmpInnerMalformed => 16,
        }
    }

    /// Every reason, for registering counters.
    pub const ALL: [WireError; 17] = [
        WireError::Truncated {
            layer: Layer::Ethernet,
        },
        WireError::Truncated { layer: Layer::Vlan },
        WireError::Truncated { layer: Layer::Ipv4 },
        WireError::Truncated { layer: Layer::Ipv6 },
        WireError::Truncated {
            layer: Layer::Ipv6Ext,
        },
        WireError::Truncated { layer: Layer::Tcp },
        WireError::Truncated { layer: Layer::Udp },
        WireError::Truncated { layer: Layer::Icmp },
        WireError::BadVersion,
        WireError::BadIhl,
        WireError::BadTotalLen,
        WireError::BadTcpOffset,
        WireError::UdpLenMismatch,
        WireError::ExtHeaderChainTooLong,
        WireError::ExtHeaderOrder,
        WireError::IcmpInnerTruncated,
        WireError::IcmpInnerMalformed,
    ];
}

/// Non-panicking big-endian field access shared by the views.
pub(crate) mod field {
    /// Byte at `i`, or 0 out of range.
    #[inline(always)]
    pub fn u8_at(b: &[u8], i: usize) -> u8 {
        b.get(i).copied().unwrap_or(0)
    }

    /// Big-endian u16 at `i`, or 0 out of range.
    #[inline(always)]
    pub fn u16_at(b: &[u8], i: usize) -> u16 {
        match b.get(i..i.wrapping_add(2)) {
            Some(&[x, y]) => u16::from_be_bytes([x, y]),
            _ => 0,
        }
    }

    /// Big-endian u32 at `i`, or 0 out of range.
    #[inline(always)]
    pub fn u32_at(b: &[u8], i: usize) -> u32 {
        match b.get(i..i.wrapping_add(4)) {
            Some(&[w, x, y, z]) => u32::from_be_bytes([w, x, y, z]),
            _ => 0,
        }
    }

    /// `N` bytes at `i`, or zeros out of range.
    #[inline(always)]
    pub fn array_at<const N: usize>(b: &[u8], i: usize) -> [u8; N] {
        b.get(i..)
            .and_then(|s| s.first_chunk::<N>())
            .copied()
            .unwrap_or([0; N])
    }

    /// Write a byte at `i`; nothing out of range.
    #[inline(always)]
    pub fn set_u8(b: &mut [u8], i: usize, v: u8) {
        if let Some(x) = b.get_mut(i) {
            *x = v;
        }
    }

    /// Write a big-endian u16 at `i`; nothing out of range.
    #[inline(always)]
    pub fn set_u16(b: &mut [u8], i: usize, v: u16) {
        set_bytes(b, i, &v.to_be_bytes());
    }

    /// Write a big-endian u32 at `i`; nothing out of range.
    #[inline(always)]
    pub fn set_u32(b: &mut [u8], i: usize, v: u32) {
        set_bytes(b, i, &v.to_be_bytes());
    }

    /// Copy `v` to `i..`; nothing when it does not fit.
    #[inline(always)]
    pub fn set_bytes(b: &mut [u8], i: usize, v: &[u8]) {
        if let Some(s) = b.get_mut(i..i.wrapping_add(v.len())) {
            s.copy_from_slice(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn reasons_are_distinct_and_snake_case() {
        let mut seen = HashSet::new();
        for e in WireError::ALL {
            let r = e.reason();
            assert!(seen.insert(r), "duplicate reason {r}");
            assert!(r
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        }
        assert_eq!(seen.len(), WireError::ALL.len());
        for (i, e) in WireError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i, "{e:?}");
        }
    }

    #[test]
    fn field_access_out_of_range_is_zero_and_no_write() {
        let mut b = [1u8, 2, 3];
        assert_eq!(field::u16_at(&b, 1), 0x0203);
        assert_eq!(field::u16_at(&b, 2), 0);
        assert_eq!(field::u16_at(&b, usize::MAX), 0);
        assert_eq!(field::u32_at(&b, 0), 0);
        assert_eq!(field::array_at::<2>(&b, 2), [0, 0]);
        field::set_u16(&mut b, 2, 0xffff);
        field::set_u32(&mut b, usize::MAX - 1, 0xffff_ffff);
        assert_eq!(b, [1, 2, 3]);
        field::set_u16(&mut b, 0, 0xaabb);
        assert_eq!(b, [0xaa, 0xbb, 3]);
    }

    #[test]
    fn display_names_layer() {
        let e = WireError::Truncated { layer: Layer::Tcp };
        assert_eq!(e.to_string(), "truncated tcp header");
    }
}
