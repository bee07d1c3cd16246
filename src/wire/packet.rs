//! The per-packet parse: one pass over Ethernet, VLAN tags, IP (with
//! options / extension headers), and the L4 header, into a small `Copy`
//! summary the engine classifies on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ethernet::{walk_l2, L2Info};
use super::icmp::{self, IcmpInner};
use super::ipv4::Ipv4Packet;
use super::ipv6::{walk_ext, Ipv6Packet, HEADER_LEN as IPV6_HEADER_LEN};
use super::tcp::TcpPacket;
use super::udp::{UdpPacket, HEADER_LEN as UDP_HEADER_LEN};
use super::{ethertype, proto, WireError};
use crate::wire::flow::{FlowKey, Proto};

/// What the frame carries at layer 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L3Kind {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
    /// Anything else (ARP, LLDP, a third VLAN tag...): the EtherType. The
    /// engine hands these to the kernel. Only `vlans` and `l3_off` are set.
    Other(u16),
}

/// The packet quoted by an ICMP error, with frame offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InnerInfo {
    /// Protocol of the quoted packet.
    pub proto: u8,
    /// Quoted source address.
    pub src: IpAddr,
    /// Quoted destination address.
    pub dst: IpAddr,
    /// Quoted TCP/UDP source port (0 if none).
    pub sport: u16,
    /// Quoted TCP/UDP destination port (0 if none).
    pub dport: u16,
    /// Frame offset of the quoted IP header.
    pub ip_off: u16,
    /// Frame offset of the quoted TCP/UDP header, 0 when not present.
    pub l4_off: u16,
    /// Next-hop MTU of an ICMPv4 "fragmentation needed" or ICMPv6 "packet
    /// too big", else 0.
    pub mtu: u32,
    /// The quoted packet is a fragment.
    pub is_fragment: bool,
}

impl InnerInfo {
    /// The quoted packet's 5-tuple (TCP/UDP with ports only).
    pub fn flow_key(&self) -> Option<FlowKey> {
        let p = Proto::from_number(self.proto)?;
        (self.l4_off != 0).then_some(FlowKey {
            proto: p,
            src: self.src,
            dst: self.dst,
            sport: self.sport,
            dport: self.dport,
        })
    }
}

/// Summary of one frame. Offsets are from the start of the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    /// L3 protocol.
    pub l3: L3Kind,
    /// VLAN tags skipped (0..=2).
    pub vlans: u8,
    /// Offset of the IP header (or of the payload for `Other`).
    pub l3_off: u16,
    /// Offset of the L4 header (after IPv4 options / IPv6 extension
    /// headers; for a later fragment, of the fragment data).
    pub l4_off: u16,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// L4 protocol number (after IPv6 extension headers).
    pub proto: u8,
    /// Part of a fragmented datagram.
    pub is_fragment: bool,
    /// First fragment (offset 0, more fragments): the L4 header is parsed.
    pub first_fragment: bool,
    /// TCP/UDP source port, 0 when none (other protocols, later fragments).
    pub sport: u16,
    /// TCP/UDP destination port, 0 when none.
    pub dport: u16,
    /// TCP flag byte (see [`super::tcp::flags`]), 0 for non-TCP.
    pub tcp_flags: u8,
    /// ICMP / ICMPv6 type, 0 for non-ICMP.
    pub icmp_type: u8,
    /// ICMP / ICMPv6 code, 0 for non-ICMP.
    pub icmp_code: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// Total L3 length: IPv4 total length, or 40 + IPv6 payload length.
    /// Ethernet padding after it is not part of the packet.
    pub l3_len: u32,
    /// L4 payload bytes in this packet (after the TCP/UDP/ICMP header; for
    /// other protocols and later fragments, everything after `l4_off`).
    pub payload_len: u32,
    /// For ICMP errors: the quoted packet.
    pub inner: Option<InnerInfo>,
}

impl PacketInfo {
    fn other(et: u16, l2: L2Info) -> Self {
        PacketInfo {
            l3: L3Kind::Other(et),
            vlans: l2.vlans,
            l3_off: off16(l2.l3_off),
            l4_off: off16(l2.l3_off),
            src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            proto: 0,
            is_fragment: false,
            first_fragment: false,
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            icmp_type: 0,
            icmp_code: 0,
            ttl: 0,
            l3_len: 0,
            payload_len: 0,
            inner: None,
        }
    }

    /// IPv4 or IPv6.
    pub fn is_ip(&self) -> bool {
        !matches!(self.l3, L3Kind::Other(_))
    }

    /// The L4 header was parsed and carries ports (TCP/UDP, not a later
    /// fragment).
    pub fn has_ports(&self) -> bool {
        self.is_ip()
            && (self.proto == proto::TCP || self.proto == proto::UDP)
            && (!self.is_fragment || self.first_fragment)
    }

    /// The 5-tuple of a TCP/UDP packet with ports.
    pub fn flow_key(&self) -> Option<FlowKey> {
        let p = Proto::from_number(self.proto)?;
        self.has_ports().then_some(FlowKey {
            proto: p,
            src: self.src,
            dst: self.dst,
            sport: self.sport,
            dport: self.dport,
        })
    }
}

/// Offsets are bounded well below 65536 by construction (L2 <= 22 bytes,
/// IPv4 header <= 60, at most 8 IPv6 extension headers of <= 2048 bytes,
/// one level of ICMP quoting); saturate rather than wrap regardless.
#[inline(always)]
fn off16(x: usize) -> u16 {
    u16::try_from(x).unwrap_or(u16::MAX)
}

#[inline(always)]
fn len32(x: usize) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

/// The 5-tuple [`peek_flow`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowPeek {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// TCP flags (0 for UDP, or when the TCP header is cut short).
    pub tcp_flags: u8,
}

/// The 5-tuple of an untagged Ethernet IPv4 or IPv6 TCP/UDP packet that is
/// not a fragment (IPv6: no extension header), in a few loads and without
/// validating lengths: a hint for an RX batch's pre-pass that warms the
/// connection table's cache lines before [`parse`] and the engine decide.
/// `None` for anything else. Never panics, whatever the bytes.
#[inline]
pub fn peek_flow(frame: &[u8]) -> Option<FlowPeek> {
    let be16 = |b: &[u8], o: usize| -> Option<u16> {
        let x: [u8; 2] = b.get(o..o + 2)?.try_into().ok()?;
        Some(u16::from_be_bytes(x))
    };
    let ip = frame.get(14..)?;
    let (proto, src, dst, l4) = match be16(frame, 12)? {
        ethertype::IPV4 => {
            let vihl = *ip.first()?;
            let hl = usize::from(vihl & 0x0f) * 4;
            if vihl >> 4 != 4 || hl < 20 || be16(ip, 6)? & 0x3fff != 0 {
                return None;
            }
            let s: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (*ip.get(9)?, IpAddr::from(s), IpAddr::from(d), ip.get(hl..)?)
        }
        ethertype::IPV6 => {
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (*ip.get(6)?, IpAddr::from(s), IpAddr::from(d), ip.get(40..)?)
        }
        _ => return None,
    };
    if proto != super::proto::TCP && proto != super::proto::UDP {
        return None;
    }
    Some(FlowPeek {
        proto,
        src,
        dst,
        sport: be16(l4, 0)?,
        dport: be16(l4, 2)?,
        tcp_flags: if proto == super::proto::TCP {
            l4.get(13).copied().unwrap_or(0)
        } else {
            0
        },
    })
}

/// Parse one Ethernet frame. Non-IP EtherTypes are `Ok` with
/// [`L3Kind::Other`]; malformed IP packets are errors. Checksums are not
/// verified (the rewrites update them incrementally, which keeps a bad
/// checksum bad). No allocation.
#[inline]
pub fn parse(frame: &[u8]) -> Result<PacketInfo, WireError> {
    let l2 = walk_l2(frame)?;
    let l3 = frame.get(l2.l3_off..).unwrap_or(&[]);
    match l2.ethertype {
        ethertype::IPV4 => parse_v4(l2, l3),
        ethertype::IPV6 => parse_v6(l2, l3),
        et => Ok(PacketInfo::other(et, l2)),
    }
}

#[inline(always)]
fn parse_v4(l2: L2Info, l3: &[u8]) -> Result<PacketInfo, WireError> {
    let ip = Ipv4Packet::new_checked(l3)?;
    let hlen = ip.header_len();
    let total = usize::from(ip.total_len());
    let l4 = l3.get(hlen..total).unwrap_or(&[]);
    let mut info = PacketInfo {
        l3: L3Kind::Ipv4,
        vlans: l2.vlans,
        l3_off: off16(l2.l3_off),
        l4_off: off16(l2.l3_off + hlen),
        src: IpAddr::V4(ip.src_addr()),
        dst: IpAddr::V4(ip.dst_addr()),
        proto: ip.protocol(),
        is_fragment: ip.is_fragment(),
        first_fragment: ip.is_first_fragment(),
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp_type: 0,
        icmp_code: 0,
        ttl: ip.ttl(),
        l3_len: len32(total),
        payload_len: len32(l4.len()),
        inner: None,
    };
    if ip.frag_offset() == 0 {
        parse_l4(&mut info, l4, l2.l3_off + hlen)?;
    }
    Ok(info)
}

fn parse_v6(l2: L2Info, l3: &[u8]) -> Result<PacketInfo, WireError> {
    let ip = Ipv6Packet::new_checked(l3)?;
    let payload = ip.payload();
    let chain = walk_ext(ip.next_header(), payload)?;
    let l4 = payload.get(chain.l4_off..).unwrap_or(&[]);
    let l4_abs = l2.l3_off + IPV6_HEADER_LEN + chain.l4_off;
    let mut info = PacketInfo {
        l3: L3Kind::Ipv6,
        vlans: l2.vlans,
        l3_off: off16(l2.l3_off),
        l4_off: off16(l4_abs),
        src: IpAddr::V6(Ipv6Addr::from(ip.src())),
        dst: IpAddr::V6(Ipv6Addr::from(ip.dst())),
        proto: chain.proto,
        is_fragment: chain.is_fragment(),
        first_fragment: chain.is_first_fragment(),
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp_type: 0,
        icmp_code: 0,
        ttl: ip.hop_limit(),
        l3_len: len32(IPV6_HEADER_LEN + payload.len()),
        payload_len: len32(l4.len()),
        inner: None,
    };
    if !chain.is_later_fragment() {
        parse_l4(&mut info, l4, l4_abs)?;
    }
    Ok(info)
}

/// Parse the L4 header `l4` (bytes to the end of the L3 packet) found at
/// frame offset `l4_abs`.
#[inline(always)]
fn parse_l4(info: &mut PacketInfo, l4: &[u8], l4_abs: usize) -> Result<(), WireError> {
    match (info.proto, info.l3) {
        (proto::TCP, _) => {
            let t = TcpPacket::new_checked(l4)?;
            info.sport = t.src_port();
            info.dport = t.dst_port();
            info.tcp_flags = t.flags();
            info.payload_len = len32(l4.len().saturating_sub(t.header_len()));
        }
        (proto::UDP, _) => {
            let u = if info.first_fragment {
                UdpPacket::new_checked_header(l4)?
            } else {
                UdpPacket::new_checked(l4)?
            };
            info.sport = u.src_port();
            info.dport = u.dst_port();
            let carried = if info.first_fragment {
                l4.len()
            } else {
                usize::from(u.len())
            };
            info.payload_len = len32(carried.saturating_sub(UDP_HEADER_LEN));
        }
        (proto::ICMP, L3Kind::Ipv4) => {
            let m = icmp::Icmpv4Packet::new_checked(l4)?;
            set_icmp(info, m.msg_type(), m.code(), l4.len());
            if let Some(inner) = m.inner() {
                info.inner = Some(inner_info(inner?, l4_abs, u32::from(m.mtu())));
            }
        }
        (proto::ICMPV6, L3Kind::Ipv6) => {
            let m = icmp::Icmpv6Packet::new_checked(l4)?;
            set_icmp(info, m.msg_type(), m.code(), l4.len());
            if let Some(inner) = m.inner() {
                info.inner = Some(inner_info(inner?, l4_abs, m.mtu()));
            }
        }
        _ => {}
    }
    Ok(())
}

#[inline]
fn set_icmp(info: &mut PacketInfo, t: u8, c: u8, len: usize) {
    info.icmp_type = t;
    info.icmp_code = c;
    info.payload_len = len32(len.saturating_sub(icmp::HEADER_LEN));
}

#[inline]
fn inner_info(i: IcmpInner, l4_abs: usize, mtu: u32) -> InnerInfo {
    InnerInfo {
        proto: i.proto,
        src: i.src,
        dst: i.dst,
        sport: i.sport,
        dport: i.dport,
        ip_off: off16(l4_abs + i.ip_off),
        l4_off: i.l4_off.map_or(0, |o| off16(l4_abs + o)),
        mtu,
        is_fragment: i.is_fragment,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(et: u16) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&et.to_be_bytes());
        f
    }

    /// Whenever the full parse sees an untagged, unfragmented TCP/UDP packet,
    /// the peek reads the same 5-tuple; on anything else it may say `None`
    /// (or a tuple, for a packet `parse` refuses), and it never panics.
    #[test]
    fn peek_flow_agrees_with_parse() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut agreed = 0;
        for i in 0..20_000u32 {
            // Ethernet + IPv4/IPv6 + TCP/UDP headers with random fields.
            let v6 = i % 3 == 0;
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&(if v6 { 0x86dd_u16 } else { 0x0800 }).to_be_bytes());
            let proto = [6u8, 17, 1, 58][(rnd() % 4) as usize];
            if v6 {
                let mut h = [0u8; 40];
                h[0] = 0x60;
                h[4..6].copy_from_slice(&20u16.to_be_bytes());
                h[6] = proto;
                h[7] = 64;
                for b in &mut h[8..40] {
                    *b = rnd() as u8;
                }
                f.extend_from_slice(&h);
            } else {
                let mut h = [0u8; 20];
                h[0] = 0x45;
                h[2..4].copy_from_slice(&40u16.to_be_bytes());
                if rnd() % 4 == 0 {
                    h[6] = 0x20; // more fragments
                }
                h[8] = 64;
                h[9] = proto;
                for b in &mut h[12..20] {
                    *b = rnd() as u8;
                }
                f.extend_from_slice(&h);
            }
            let mut l4 = [0u8; 20];
            for b in &mut l4[..4] {
                *b = rnd() as u8;
            }
            l4[13] = rnd() as u8; // TCP flags
            l4[4..6].copy_from_slice(&20u16.to_be_bytes()); // UDP length
            l4[12] = 0x50; // TCP data offset
            f.extend_from_slice(&l4);
            // Sometimes truncate anywhere.
            if rnd() % 5 == 0 {
                let n = (rnd() as usize) % f.len();
                f.truncate(n);
            }
            let peek = peek_flow(&f);
            if let Ok(info) = parse(&f) {
                let l4 = info.proto == 6 || info.proto == 17;
                if l4 && !info.is_fragment && info.vlans == 0 {
                    assert_eq!(
                        peek,
                        Some(FlowPeek {
                            proto: info.proto,
                            src: info.src,
                            dst: info.dst,
                            sport: info.sport,
                            dport: info.dport,
                            tcp_flags: info.tcp_flags,
                        }),
                        "{f:02x?}"
                    );
                    agreed += 1;
                } else {
                    assert_eq!(peek, None, "{f:02x?}");
                }
            }
        }
        assert!(agreed > 5_000, "too few comparable frames: {agreed}");
    }

    #[test]
    fn arp_is_other() {
        let mut f = eth(ethertype::ARP);
        f.resize(42, 0);
        let i = parse(&f).unwrap();
        assert_eq!(i.l3, L3Kind::Other(0x0806));
        assert!(!i.is_ip() && !i.has_ports());
        assert_eq!((i.l3_off, i.vlans), (14, 0));
        assert_eq!(i.flow_key(), None);
    }

    #[test]
    fn tcp_v4_minimal() {
        let mut f = eth(ethertype::IPV4);
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 2]);
        f.extend(ip);
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&1234u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = 0x02;
        f.extend(tcp);
        f.extend([0u8; 6]); // Ethernet padding
        let i = parse(&f).unwrap();
        assert_eq!(i.l3, L3Kind::Ipv4);
        assert_eq!(
            (i.l3_off, i.l4_off, i.l3_len, i.payload_len),
            (14, 34, 40, 0)
        );
        assert_eq!((i.sport, i.dport, i.tcp_flags, i.ttl), (1234, 80, 2, 64));
        let k = i.flow_key().unwrap();
        assert_eq!(k.proto, Proto::Tcp);
        assert_eq!(k.src, "198.18.0.1".parse::<IpAddr>().unwrap());
        assert!(!i.is_fragment && i.inner.is_none());
    }

    #[test]
    fn version_mismatch_with_ethertype() {
        let mut f = eth(ethertype::IPV6);
        let mut ip = vec![0u8; 40];
        ip[0] = 0x45;
        f.extend(ip);
        assert_eq!(parse(&f), Err(WireError::BadVersion));
    }
}
