//! In-place rewrites of a parsed frame for each forwarding method: DR (MAC
//! rewrite), NAT (DNAT in / SNAT out, incl. ICMP errors), IP-in-IP and GUE
//! encapsulation. Checksums are updated incrementally (RFC 1624) except
//! the new outer headers, which are computed. No allocation.
//!
//! Every function takes the [`PacketInfo`] that [`crate::wire::parse`]
//! returned for this very frame; it is stale afterwards (offsets move when
//! VLAN tags are stripped or headers pushed). Output frames are untagged
//! Ethernet II with `nh.src_mac -> nh.dst_mac`. Checks (family, room, MTU)
//! come before any byte is written, so an `Err` leaves the frame unchanged.

use std::net::IpAddr;

use crate::shard::nexthop::NextHop;
use crate::shard::verdict::{DropReason, Frame};
use crate::wire::checksum::{self, CsumDelta};
use crate::wire::ethernet::{EthernetRepr, HEADER_LEN as ETH_LEN};
use crate::wire::ipv4::{Ipv4Repr, MIN_HEADER_LEN as IPV4_LEN};
use crate::wire::ipv6::{Ipv6Repr, HEADER_LEN as IPV6_LEN};
use crate::wire::udp::{UdpRepr, HEADER_LEN as UDP_LEN};
use crate::wire::{ethertype, icmp, proto, tcp, udp, L3Kind, PacketInfo};

/// Hop limit / TTL of pushed outer headers.
pub const OUTER_TTL: u8 = 64;

/// Why a rewrite was refused. The frame is left unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// Not enough headroom in front of the packet for the new headers.
    #[error("not enough headroom")]
    NoRoom,
    /// The result would exceed the next hop's MTU; `mtu` is the largest
    /// original L3 packet that would fit (for ICMP frag-needed / too-big).
    #[error("packet exceeds the next-hop MTU (fits {mtu})")]
    TooBig { mtu: u16 },
    /// A new address is not of the packet's family, or outer source and
    /// destination differ in family.
    #[error("address family mismatch")]
    FamilyMismatch,
    /// The frame is not IPv4/IPv6.
    #[error("not an IP packet")]
    NotIp,
    /// NAT needs TCP/UDP ports (not another protocol, not a later fragment).
    #[error("no transport ports to rewrite")]
    NoPorts,
    /// ICMP NAT on a packet that is not an ICMP error.
    #[error("not an ICMP error")]
    NotIcmpError,
    /// The `PacketInfo` does not describe this frame.
    #[error("packet info does not match the frame")]
    Mismatch,
    /// TTL / hop limit is 0 or 1: it may not be forwarded ([`dec_ttl`]).
    #[error("TTL exceeded")]
    TtlExceeded,
}

impl ForwardError {
    /// The drop counter for this error.
    pub const fn drop_reason(self) -> DropReason {
        match self {
            ForwardError::NoRoom | ForwardError::TooBig { .. } => DropReason::NoRoom,
            ForwardError::TtlExceeded => DropReason::TtlExceeded,
            _ => DropReason::Malformed,
        }
    }
}

type Res = Result<(), ForwardError>;

/// Frame offsets validated against the frame.
#[derive(Clone, Copy)]
struct Checked {
    l3: usize,
    l3_end: usize,
    v6: bool,
}

/// Check that `info` describes `frame`: IP, offsets in range, version nibble.
fn check(frame: &Frame<'_>, info: &PacketInfo) -> Result<Checked, ForwardError> {
    let v6 = match info.l3 {
        L3Kind::Ipv4 => false,
        L3Kind::Ipv6 => true,
        L3Kind::Other(_) => return Err(ForwardError::NotIp),
    };
    let l3 = usize::from(info.l3_off);
    let l3_end = l3
        .checked_add(info.l3_len as usize)
        .ok_or(ForwardError::Mismatch)?;
    let data = frame.data();
    let min = if v6 { IPV6_LEN } else { IPV4_LEN };
    if l3 < ETH_LEN || l3_end > data.len() || (info.l3_len as usize) < min {
        return Err(ForwardError::Mismatch);
    }
    let ver = data.get(l3).map_or(0, |b| b >> 4);
    if ver != if v6 { 6 } else { 4 } {
        return Err(ForwardError::Mismatch);
    }
    Ok(Checked { l3, l3_end, v6 })
}

fn check_mtu(l3_len: usize, overhead: usize, nh: &NextHop) -> Res {
    if l3_len + overhead > usize::from(nh.mtu) {
        let fits = usize::from(nh.mtu).saturating_sub(overhead);
        return Err(ForwardError::TooBig {
            mtu: u16::try_from(fits).unwrap_or(u16::MAX),
        });
    }
    Ok(())
}

fn same_family(a: IpAddr, v6: bool) -> Res {
    if a.is_ipv6() == v6 {
        Ok(())
    } else {
        Err(ForwardError::FamilyMismatch)
    }
}

/// Replace the L2 header in front of the IP header at data offset `l3`
/// with an untagged one (VLAN tags are dropped by moving the start).
fn write_l2(frame: &mut Frame<'_>, l3: usize, et: u16, nh: &NextHop) -> Res {
    let cut = l3.checked_sub(ETH_LEN).ok_or(ForwardError::Mismatch)?;
    if !frame.pull_front(cut) {
        return Err(ForwardError::Mismatch);
    }
    EthernetRepr {
        dst: nh.dst_mac,
        src: nh.src_mac,
        ethertype: et,
    }
    .emit(frame.data_mut())
    .map_err(|_| ForwardError::Mismatch)
}

fn l3_ethertype(v6: bool) -> u16 {
    if v6 {
        ethertype::IPV6
    } else {
        ethertype::IPV4
    }
}

/// Direct routing: new MACs (and VLAN tags stripped); the IP packet is
/// untouched.
pub fn dr(frame: &mut Frame<'_>, info: &PacketInfo, nh: &NextHop) -> Res {
    let c = check(frame, info)?;
    check_mtu(c.l3_end - c.l3, 0, nh)?;
    write_l2(frame, c.l3, l3_ethertype(c.v6), nh)
}

/// Decrement the IPv4 TTL (header checksum updated incrementally) or the
/// IPv6 hop limit, as a router would. Refuses with `TtlExceeded` when it is
/// 0 or 1. Call before the forwarding rewrite (`info` offsets); `info.ttl`
/// is stale afterwards.
pub fn dec_ttl(frame: &mut Frame<'_>, info: &PacketInfo) -> Res {
    let c = check(frame, info)?;
    let p = frame.data_mut();
    if c.v6 {
        let h = p.get_mut(c.l3 + 7).ok_or(ForwardError::Mismatch)?;
        if *h <= 1 {
            return Err(ForwardError::TtlExceeded);
        }
        *h -= 1;
        return Ok(());
    }
    let word = get_u16(p, c.l3 + 8)?;
    if word >> 8 <= 1 {
        return Err(ForwardError::TtlExceeded);
    }
    let d = put_u16(p, c.l3 + 8, word - 0x0100)?;
    fix_csum(p, c.l3 + 10, d)?;
    Ok(())
}

/// Overwrite `new.len()` bytes at `off`, returning the checksum delta.
fn put_bytes(p: &mut [u8], off: usize, new: &[u8]) -> Result<CsumDelta, ForwardError> {
    let f = p
        .get_mut(off..off + new.len())
        .ok_or(ForwardError::Mismatch)?;
    let d = CsumDelta::new().bytes(f, new);
    f.copy_from_slice(new);
    Ok(d)
}

fn put_addr(p: &mut [u8], off: usize, a: IpAddr) -> Result<CsumDelta, ForwardError> {
    match a {
        IpAddr::V4(a) => put_bytes(p, off, &a.octets()),
        IpAddr::V6(a) => put_bytes(p, off, &a.octets()),
    }
}

fn get_u16(p: &[u8], off: usize) -> Result<u16, ForwardError> {
    match p.get(off..off + 2) {
        Some(&[a, b]) => Ok(u16::from_be_bytes([a, b])),
        _ => Err(ForwardError::Mismatch),
    }
}

fn set_u16(p: &mut [u8], off: usize, v: u16) -> Res {
    let f = p.get_mut(off..off + 2).ok_or(ForwardError::Mismatch)?;
    f.copy_from_slice(&v.to_be_bytes());
    Ok(())
}

fn put_u16(p: &mut [u8], off: usize, v: u16) -> Result<CsumDelta, ForwardError> {
    put_bytes(p, off, &v.to_be_bytes())
}

/// Apply `d` to the checksum at `off`; returns the delta of the checksum
/// field itself (for an enclosing checksum that covers it).
fn fix_csum(p: &mut [u8], off: usize, d: CsumDelta) -> Result<CsumDelta, ForwardError> {
    let old = get_u16(p, off)?;
    put_u16(p, off, d.apply(old))
}

/// Apply `d` to a UDP checksum: 0 ("none") stays 0, a result of 0 is sent
/// as 0xffff.
fn fix_udp_csum(p: &mut [u8], off: usize, d: CsumDelta) -> Result<CsumDelta, ForwardError> {
    let old = get_u16(p, off)?;
    if old == 0 {
        return Ok(CsumDelta::new());
    }
    let new = match d.apply(old) {
        0 => 0xffff,
        v => v,
    };
    put_u16(p, off, new)
}

/// Offset of an address within the IP header.
fn addr_off(v6: bool, src: bool) -> usize {
    match (v6, src) {
        (false, true) => 12,
        (false, false) => 16,
        (true, true) => 8,
        (true, false) => 24,
    }
}

/// Offset of the L4 checksum for TCP/UDP, and whether it is UDP.
fn l4_csum_off(proto: u8) -> Option<(usize, bool)> {
    match proto {
        proto::TCP => Some((tcp::CHECKSUM_OFF, false)),
        proto::UDP => Some((udp::CHECKSUM_OFF, true)),
        _ => None,
    }
}

/// DNAT/SNAT core: replace the source (`src`) or destination address and
/// port, fix IPv4 header and TCP/UDP checksums.
fn nat(
    frame: &mut Frame<'_>,
    info: &PacketInfo,
    src: bool,
    addr: IpAddr,
    port: u16,
    nh: &NextHop,
) -> Res {
    let c = check(frame, info)?;
    same_family(addr, c.v6)?;
    if !info.has_ports() {
        return Err(ForwardError::NoPorts);
    }
    let (csum_off, is_udp) = l4_csum_off(info.proto).ok_or(ForwardError::NoPorts)?;
    let l4 = usize::from(info.l4_off);
    let l4_min = if is_udp { UDP_LEN } else { tcp::MIN_HEADER_LEN };
    if l4 < c.l3 || l4 + l4_min > c.l3_end {
        return Err(ForwardError::Mismatch);
    }
    check_mtu(c.l3_end - c.l3, 0, nh)?;

    let p = frame.data_mut();
    let da = put_addr(p, c.l3 + addr_off(c.v6, src), addr)?;
    if !c.v6 {
        fix_csum(p, c.l3 + 10, da)?;
    }
    let dp = put_u16(p, l4 + if src { 0 } else { 2 }, port)?;
    let d = da.combine(dp);
    if is_udp {
        fix_udp_csum(p, l4 + csum_off, d)?;
    } else {
        fix_csum(p, l4 + csum_off, d)?;
    }
    write_l2(frame, c.l3, l3_ethertype(c.v6), nh)
}

/// NAT towards a real server: destination becomes `new_daddr:new_dport`.
/// IPv4 header and TCP/UDP checksums are updated incrementally; a UDP
/// checksum of 0 stays 0.
pub fn nat_in(
    frame: &mut Frame<'_>,
    info: &PacketInfo,
    new_daddr: IpAddr,
    new_dport: u16,
    nh: &NextHop,
) -> Res {
    nat(frame, info, false, new_daddr, new_dport, nh)
}

/// NAT of a reply towards the client: source becomes
/// `new_saddr:new_sport` (the virtual address and port).
pub fn nat_out(
    frame: &mut Frame<'_>,
    info: &PacketInfo,
    new_saddr: IpAddr,
    new_sport: u16,
    nh: &NextHop,
) -> Res {
    nat(frame, info, true, new_saddr, new_sport, nh)
}

/// ICMP error NAT core (as IPVS `ip_vs_nat_icmp`): replace the outer
/// source (`out`) or destination address, and the quoted packet's
/// destination (`out`) or source address and port.
fn nat_icmp(
    frame: &mut Frame<'_>,
    info: &PacketInfo,
    out: bool,
    addr: IpAddr,
    port: u16,
    nh: &NextHop,
) -> Res {
    let c = check(frame, info)?;
    same_family(addr, c.v6)?;
    let inner = info.inner.ok_or(ForwardError::NotIcmpError)?;
    let icmp_off = usize::from(info.l4_off);
    let ip_off = usize::from(inner.ip_off);
    let inner_min = if c.v6 { IPV6_LEN } else { IPV4_LEN };
    if icmp_off < c.l3
        || ip_off < icmp_off + icmp::HEADER_LEN
        || ip_off + inner_min > c.l3_end
        || inner.src.is_ipv6() != c.v6
    {
        return Err(ForwardError::Mismatch);
    }
    let inner_l4 = usize::from(inner.l4_off);
    let ports = inner_l4 != 0 && l4_csum_off(inner.proto).is_some();
    if ports && (inner_l4 < ip_off || inner_l4 + icmp::INNER_L4_LEN > c.l3_end) {
        return Err(ForwardError::Mismatch);
    }
    check_mtu(c.l3_end - c.l3, 0, nh)?;

    let p = frame.data_mut();
    // Outer header.
    let d_outer = put_addr(p, c.l3 + addr_off(c.v6, out), addr)?;
    if !c.v6 {
        fix_csum(p, c.l3 + 10, d_outer)?;
    }
    // Quoted IP header: its destination on the way out, source on the way in.
    let d_inner_addr = put_addr(p, ip_off + addr_off(c.v6, !out), addr)?;
    let mut d_icmp = d_inner_addr;
    if c.v6 {
        // ICMPv6 covers the outer addresses through its pseudo header.
        d_icmp = d_icmp.combine(d_outer);
    } else {
        d_icmp = d_icmp.combine(fix_csum(p, ip_off + 10, d_inner_addr)?);
    }
    // Quoted ports and, when quoted, the transport checksum.
    if ports {
        let dp = put_u16(p, inner_l4 + if out { 2 } else { 0 }, port)?;
        d_icmp = d_icmp.combine(dp);
        let d_l4 = d_inner_addr.combine(dp);
        match l4_csum_off(inner.proto) {
            Some((off, true)) => {
                d_icmp = d_icmp.combine(fix_udp_csum(p, inner_l4 + off, d_l4)?);
            }
            Some((off, false)) if inner_l4 + off + 2 <= c.l3_end => {
                d_icmp = d_icmp.combine(fix_csum(p, inner_l4 + off, d_l4)?);
            }
            _ => {}
        }
    }
    fix_csum(p, icmp_off + icmp::CHECKSUM_OFF, d_icmp)?;
    write_l2(frame, c.l3, l3_ethertype(c.v6), nh)
}

/// NAT of an ICMP error travelling towards the client about a packet the
/// client sent (quoted `client -> RIP:rport`): the outer source and the
/// quoted destination become `vaddr`, the quoted destination port `vport`.
pub fn nat_icmp_out(
    frame: &mut Frame<'_>,
    info: &PacketInfo,
    vaddr: IpAddr,
    vport: u16,
    nh: &NextHop,
) -> Res {
    nat_icmp(frame, info, true, vaddr, vport, nh)
}

/// NAT of an ICMP error travelling towards a real server about a reply
/// (quoted `VIP:vport -> client`): the outer destination and the quoted
/// source become `daddr`, the quoted source port `dport`.
pub fn nat_icmp_in(
    frame: &mut Frame<'_>,
    info: &PacketInfo,
    daddr: IpAddr,
    dport: u16,
    nh: &NextHop,
) -> Res {
    nat_icmp(frame, info, false, daddr, dport, nh)
}

/// Inner packet facts needed for an outer header.
struct InnerL3 {
    tos: u8,
    df: bool,
    proto: u8,
}

fn inner_l3(p: &[u8], c: &Checked) -> InnerL3 {
    let b0 = p.get(c.l3).copied().unwrap_or(0);
    let b1 = p.get(c.l3 + 1).copied().unwrap_or(0);
    if c.v6 {
        // IPv6 is never fragmented on the path: set DF on an IPv4 outer.
        InnerL3 {
            tos: (b0 << 4) | (b1 >> 4),
            df: true,
            proto: proto::IPV6,
        }
    } else {
        let flags = p.get(c.l3 + 6).copied().unwrap_or(0);
        InnerL3 {
            tos: b1,
            df: flags & 0x40 != 0,
            proto: proto::IPIP,
        }
    }
}

/// Push Ethernet + outer IP (+ UDP when `udp` is set) in front of the IP
/// packet. Trailing Ethernet padding is dropped.
fn encap(
    frame: &mut Frame<'_>,
    info: &PacketInfo,
    outer_src: IpAddr,
    outer_dst: IpAddr,
    udp: Option<(u16, u16)>,
    nh: &NextHop,
) -> Res {
    let c = check(frame, info)?;
    let outer_v6 = outer_src.is_ipv6();
    if outer_dst.is_ipv6() != outer_v6 {
        return Err(ForwardError::FamilyMismatch);
    }
    let ip_len = if outer_v6 { IPV6_LEN } else { IPV4_LEN };
    let udp_len = if udp.is_some() { UDP_LEN } else { 0 };
    let inner_len = c.l3_end - c.l3;
    check_mtu(inner_len, ip_len + udp_len, nh)?;
    let push = ETH_LEN + ip_len + udp_len;
    let new_start = (frame.start + c.l3)
        .checked_sub(push)
        .ok_or(ForwardError::NoRoom)?;
    let new_len = push + inner_len;
    let inner = inner_l3(frame.data(), &c);
    // All checks done: move the window onto [outer headers | inner packet].
    frame.start = new_start;
    frame.len = new_len;
    let p = frame.data_mut();
    let (hdrs, inner_pkt) = p.split_at_mut(push);
    let next = if udp.is_some() {
        proto::UDP
    } else {
        inner.proto
    };
    let l3_payload = (udp_len + inner_len) as u16; // <= mtu - ip_len
    let e = match (outer_src, outer_dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Ipv4Repr {
            src: s,
            dst: d,
            protocol: next,
            ttl: OUTER_TTL,
            tos: inner.tos,
            ident: 0,
            dont_frag: inner.df,
            payload_len: l3_payload,
        }
        .emit(hdrs.get_mut(ETH_LEN..).unwrap_or(&mut [])),
        (IpAddr::V6(s), IpAddr::V6(d)) => Ipv6Repr {
            src: s,
            dst: d,
            next_header: next,
            hop_limit: OUTER_TTL,
            traffic_class: inner.tos,
            flow_label: 0,
            payload_len: l3_payload,
        }
        .emit(hdrs.get_mut(ETH_LEN..).unwrap_or(&mut [])),
        _ => return Err(ForwardError::FamilyMismatch),
    };
    e.map_err(|_| ForwardError::Mismatch)?;
    if let Some((sport, dport)) = udp {
        let u_off = ETH_LEN + ip_len;
        let uh = hdrs.get_mut(u_off..).unwrap_or(&mut []);
        UdpRepr {
            src_port: sport,
            dst_port: dport,
            payload_len: inner_len as u16,
        }
        .emit(uh)
        .map_err(|_| ForwardError::Mismatch)?;
        if let (IpAddr::V6(s), IpAddr::V6(d)) = (outer_src, outer_dst) {
            let ph = checksum::pseudo_v6(&s.octets(), &d.octets(), proto::UDP, l3_payload.into());
            let acc = checksum::sum(uh, ph);
            let acc = checksum::sum(inner_pkt, acc);
            let cs = match checksum::finish(acc) {
                0 => 0xffff,
                v => v,
            };
            set_u16(uh, udp::CHECKSUM_OFF, cs)?;
        }
    }
    EthernetRepr {
        dst: nh.dst_mac,
        src: nh.src_mac,
        ethertype: l3_ethertype(outer_v6),
    }
    .emit(hdrs)
    .map_err(|_| ForwardError::Mismatch)
}

/// IP-in-IP: push an outer IPv4 (protocol 4 / 41; TTL 64, DF copied from an
/// IPv4 inner and set for an IPv6 inner, id 0, TOS copied) or IPv6 (next
/// header 4 / 41, hop limit 64, traffic class copied, flow label 0) header
/// and a fresh Ethernet header. The outer family may differ from the inner.
pub fn ipip(
    frame: &mut Frame<'_>,
    info: &PacketInfo,
    outer_src: IpAddr,
    outer_dst: IpAddr,
    nh: &NextHop,
) -> Res {
    encap(frame, info, outer_src, outer_dst, None, nh)
}

/// GUE variant 1 (as Katran): outer IP + UDP(`sport`, `dport`) + the inner
/// IP packet. UDP checksum 0 with an IPv4 outer, computed with IPv6.
pub fn gue(
    frame: &mut Frame<'_>,
    info: &PacketInfo,
    outer_src: IpAddr,
    outer_dst: IpAddr,
    sport: u16,
    dport: u16,
    nh: &NextHop,
) -> Res {
    encap(frame, info, outer_src, outer_dst, Some((sport, dport)), nh)
}

/// A GUE source port in 49152..=65535, stable per flow. ICMP errors hash
/// the flow they quote (reversed), so they take the flow's port.
pub fn flow_hash_port(info: &PacketInfo) -> u16 {
    let (src, dst, p, sport, dport) = match info.inner {
        Some(i) => (i.dst, i.src, i.proto, i.dport, i.sport),
        None => (info.src, info.dst, info.proto, info.sport, info.dport),
    };
    hash_port(src, dst, p, sport, dport)
}

/// [`flow_hash_port`] of a flow's 5-tuple (`p`: IP protocol number), as the
/// fast path's GUE entry carries it.
pub fn hash_port(src: IpAddr, dst: IpAddr, p: u8, sport: u16, dport: u16) -> u16 {
    let mut h: u64 = 0x243f_6a88_85a3_08d3;
    h = mix(h, addr_bits(src));
    h = mix(h, addr_bits(dst));
    h = mix(
        h,
        u64::from(p) << 32 | u64::from(sport) << 16 | u64::from(dport),
    );
    // murmur3 fmix64 so the top bits depend on every input bit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    0xc000 | (h >> 50) as u16
}

#[inline]
fn addr_bits(a: IpAddr) -> u64 {
    match a {
        IpAddr::V4(a) => u64::from(u32::from(a)),
        IpAddr::V6(a) => {
            let x = u128::from(a);
            (x as u64) ^ ((x >> 64) as u64).rotate_left(29)
        }
    }
}

#[inline]
fn mix(h: u64, w: u64) -> u64 {
    (h.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse;

    const NH: NextHop = NextHop {
        ifindex: 3,
        src_mac: [2, 0, 0, 0, 0, 0xaa],
        dst_mac: [2, 0, 0, 0, 0, 0xbb],
        mtu: 1500,
    };

    fn udp4(pad: usize) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        let ip = Ipv4Repr {
            src: [198, 18, 0, 1].into(),
            dst: [198, 18, 0, 2].into(),
            protocol: 17,
            ttl: 9,
            tos: 0,
            ident: 1,
            dont_frag: false,
            payload_len: 12,
        };
        let mut b = [0u8; 20];
        ip.emit(&mut b).unwrap();
        f.extend(b);
        f.extend([0x30, 0x39, 0x00, 0x35, 0, 12, 0, 0, 1, 2, 3, 4]);
        f.resize(f.len() + pad, 0xee);
        f
    }

    #[test]
    fn nat_in_leaves_zero_udp_checksum() {
        let mut f = udp4(0);
        let info = parse(&f).unwrap();
        let mut fr = Frame::new(&mut f, 0, 46);
        nat_in(&mut fr, &info, "198.18.9.9".parse().unwrap(), 5353, &NH).unwrap();
        let out = fr.data().to_vec();
        assert_eq!(&out[40..42], &[0, 0]);
        assert_eq!(&out[36..38], &5353u16.to_be_bytes());
        assert_eq!(&out[0..6], &NH.dst_mac);
    }

    #[test]
    fn errors_leave_frame_unchanged() {
        let mut f = udp4(0);
        let orig = f.clone();
        let info = parse(&f).unwrap();
        let mut fr = Frame::new(&mut f, 0, 46);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            nat_in(&mut fr, &info, v6, 1, &NH),
            Err(ForwardError::FamilyMismatch)
        );
        assert_eq!(ipip(&mut fr, &info, v6, v6, &NH), Err(ForwardError::NoRoom));
        let small = NextHop { mtu: 31, ..NH };
        assert_eq!(
            dr(&mut fr, &info, &small),
            Err(ForwardError::TooBig { mtu: 31 })
        );
        assert_eq!(fr.data(), &orig[..]);
        assert_eq!((fr.start, fr.len), (0, 46));
    }

    #[test]
    fn hash_port_range_and_stability() {
        let f = udp4(0);
        let info = parse(&f).unwrap();
        let a = flow_hash_port(&info);
        assert!(a >= 49152);
        assert_eq!(a, flow_hash_port(&info));
        let mut other = info;
        other.sport ^= 1;
        let mut seen = std::collections::HashSet::new();
        for s in 0..2000u16 {
            other.sport = s;
            let p = flow_hash_port(&other);
            assert!(p >= 49152);
            seen.insert(p);
        }
        // Spread: 2000 flows over 16384 ports should mostly differ.
        assert!(seen.len() > 1800, "{}", seen.len());
    }

    #[test]
    fn drop_reasons() {
        assert_eq!(ForwardError::NoRoom.drop_reason(), DropReason::NoRoom);
        assert_eq!(
            ForwardError::TooBig { mtu: 1 }.drop_reason(),
            DropReason::NoRoom
        );
        assert_eq!(ForwardError::NoPorts.drop_reason(), DropReason::Malformed);
        assert_eq!(
            ForwardError::TtlExceeded.drop_reason(),
            DropReason::TtlExceeded
        );
    }
}
