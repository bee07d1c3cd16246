//! ICMPv4 (RFC 792) and ICMPv6 (RFC 4443), with a view of the packet
//! embedded in error messages.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::field::{array_at, set_u16, u16_at, u32_at, u8_at};
use super::ipv6::{walk_ext, HEADER_LEN as IPV6_HEADER_LEN};
use super::{proto, Layer, WireError};

/// ICMP header length (type, code, checksum, 4 bytes of rest-of-header).
pub const HEADER_LEN: usize = 8;
/// Offset of the checksum field.
pub const CHECKSUM_OFF: usize = 2;
/// Bytes of the embedded transport header an error must carry for TCP/UDP.
pub const INNER_L4_LEN: usize = 8;

/// ICMPv4 types used here.
pub mod v4 {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACH: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAM_PROBLEM: u8 = 12;
    /// Destination unreachable code: fragmentation needed and DF set.
    pub const CODE_FRAG_NEEDED: u8 = 4;
}

/// ICMPv6 types used here.
pub mod v6 {
    pub const DEST_UNREACH: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAM_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
}

/// What an ICMP error says about the packet it quotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpInner {
    /// Protocol of the embedded packet (after v6 extension headers).
    pub proto: u8,
    /// Embedded source address (the sender of the quoted packet).
    pub src: IpAddr,
    /// Embedded destination address.
    pub dst: IpAddr,
    /// Embedded TCP/UDP source port, 0 for other protocols / later fragments.
    pub sport: u16,
    /// Embedded TCP/UDP destination port, 0 otherwise.
    pub dport: u16,
    /// Offset of the embedded IP header within the ICMP message (8).
    pub ip_off: usize,
    /// Offset of the embedded TCP/UDP header within the ICMP message, when
    /// the ports were read.
    pub l4_off: Option<usize>,
    /// The embedded packet is a fragment.
    pub is_fragment: bool,
}

fn inner_trunc(e: WireError) -> WireError {
    match e {
        WireError::Truncated { .. } | WireError::BadTotalLen => WireError::IcmpInnerTruncated,
        _ => WireError::IcmpInnerMalformed,
    }
}

/// Ports of an embedded TCP/UDP header at `off` of `emb` (8 bytes needed).
fn inner_ports(emb: &[u8], off: usize, p: u8) -> Result<(u16, u16, Option<usize>), WireError> {
    if p != proto::TCP && p != proto::UDP {
        return Ok((0, 0, None));
    }
    if off + INNER_L4_LEN > emb.len() {
        return Err(WireError::IcmpInnerTruncated);
    }
    Ok((u16_at(emb, off), u16_at(emb, off + 2), Some(off)))
}

/// Parse an IPv4 packet quoted in an ICMPv4 error (`emb` = ICMP payload).
pub fn parse_inner_v4(emb: &[u8]) -> Result<IcmpInner, WireError> {
    if emb.len() < 20 {
        return Err(WireError::IcmpInnerTruncated);
    }
    let vihl = u8_at(emb, 0);
    if vihl >> 4 != 4 {
        return Err(WireError::IcmpInnerMalformed);
    }
    let hlen = usize::from(vihl & 0x0f) * 4;
    if hlen < 20 {
        return Err(WireError::IcmpInnerMalformed);
    }
    if hlen > emb.len() {
        return Err(WireError::IcmpInnerTruncated);
    }
    let p = u8_at(emb, 9);
    let ff = u16_at(emb, 6);
    let later = ff & 0x1fff != 0;
    let (sport, dport, l4) = if later {
        (0, 0, None)
    } else {
        inner_ports(emb, hlen, p)?
    };
    Ok(IcmpInner {
        proto: p,
        src: IpAddr::V4(Ipv4Addr::from(array_at::<4>(emb, 12))),
        dst: IpAddr::V4(Ipv4Addr::from(array_at::<4>(emb, 16))),
        sport,
        dport,
        ip_off: HEADER_LEN,
        l4_off: l4.map(|o| o + HEADER_LEN),
        is_fragment: ff & 0x3fff != 0,
    })
}

/// Parse an IPv6 packet quoted in an ICMPv6 error (`emb` = ICMP payload).
pub fn parse_inner_v6(emb: &[u8]) -> Result<IcmpInner, WireError> {
    if emb.len() < IPV6_HEADER_LEN {
        return Err(WireError::IcmpInnerTruncated);
    }
    if u8_at(emb, 0) >> 4 != 6 {
        return Err(WireError::IcmpInnerMalformed);
    }
    let rest = emb.get(IPV6_HEADER_LEN..).unwrap_or(&[]);
    let chain = walk_ext(u8_at(emb, 6), rest).map_err(inner_trunc)?;
    let l4 = IPV6_HEADER_LEN + chain.l4_off;
    let (sport, dport, l4) = if chain.is_later_fragment() {
        (0, 0, None)
    } else {
        inner_ports(emb, l4, chain.proto)?
    };
    Ok(IcmpInner {
        proto: chain.proto,
        src: IpAddr::V6(Ipv6Addr::from(array_at::<16>(emb, 8))),
        dst: IpAddr::V6(Ipv6Addr::from(array_at::<16>(emb, 24))),
        sport,
        dport,
        ip_off: HEADER_LEN,
        l4_off: l4.map(|o| o + HEADER_LEN),
        is_fragment: chain.is_fragment(),
    })
}

macro_rules! icmp_common {
    ($name:ident) => {
        impl<T: AsRef<[u8]>> $name<T> {
            /// Wrap without checking; accessors read zeros past the end.
            pub const fn new_unchecked(buf: T) -> Self {
                $name { buf }
            }

            /// Wrap, checking that the 8-byte header is present.
            pub fn new_checked(buf: T) -> Result<Self, WireError> {
                if buf.as_ref().len() < HEADER_LEN {
                    return Err(WireError::Truncated { layer: Layer::Icmp });
                }
                Ok($name { buf })
            }

            /// The wrapped buffer.
            pub fn into_inner(self) -> T {
                self.buf
            }

            /// Message type.
            pub fn msg_type(&self) -> u8 {
                u8_at(self.buf.as_ref(), 0)
            }

            /// Message code.
            pub fn code(&self) -> u8 {
                u8_at(self.buf.as_ref(), 1)
            }

            /// Checksum field.
            pub fn checksum(&self) -> u16 {
                u16_at(self.buf.as_ref(), CHECKSUM_OFF)
            }

            /// The 4 bytes after the checksum, as a number.
            pub fn rest_of_header(&self) -> u32 {
                u32_at(self.buf.as_ref(), 4)
            }

            /// Echo identifier (bytes 4..6).
            pub fn echo_ident(&self) -> u16 {
                u16_at(self.buf.as_ref(), 4)
            }

            /// Bytes after the 8-byte header.
            pub fn payload(&self) -> &[u8] {
                self.buf.as_ref().get(HEADER_LEN..).unwrap_or(&[])
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            /// Set type and code.
            pub fn set_type_code(&mut self, t: u8, c: u8) {
                set_u16(self.buf.as_mut(), 0, u16::from_be_bytes([t, c]));
            }

            /// Set the checksum field.
            pub fn set_checksum(&mut self, v: u16) {
                set_u16(self.buf.as_mut(), CHECKSUM_OFF, v);
            }

            /// Set the 4 bytes after the checksum.
            pub fn set_rest_of_header(&mut self, v: u32) {
                super::field::set_u32(self.buf.as_mut(), 4, v);
            }
        }
    };
}

/// An ICMPv4 message view (`new_checked`: 8 bytes present).
#[derive(Clone, Copy, Debug)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buf: T,
}

icmp_common!(Icmpv4Packet);

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Destination unreachable, time exceeded or parameter problem.
    pub fn is_error(&self) -> bool {
        matches!(
            self.msg_type(),
            v4::DEST_UNREACH | v4::TIME_EXCEEDED | v4::PARAM_PROBLEM
        )
    }

    /// Next-hop MTU of a "fragmentation needed" message (RFC 1191), else 0.
    pub fn mtu(&self) -> u16 {
        if self.msg_type() == v4::DEST_UNREACH && self.code() == v4::CODE_FRAG_NEEDED {
            u16_at(self.buf.as_ref(), 6)
        } else {
            0
        }
    }

    /// The quoted packet of an error message. `None` for other types.
    pub fn inner(&self) -> Option<Result<IcmpInner, WireError>> {
        self.is_error().then(|| parse_inner_v4(self.payload()))
    }

    /// Does the checksum verify over the whole message?
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(self.buf.as_ref(), 0)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Recompute the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buf.as_ref());
        self.set_checksum(c);
    }
}

/// An ICMPv6 message view (`new_checked`: 8 bytes present).
#[derive(Clone, Copy, Debug)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buf: T,
}

icmp_common!(Icmpv6Packet);

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Destination unreachable, packet too big, time exceeded or parameter
    /// problem.
    pub fn is_error(&self) -> bool {
        matches!(
            self.msg_type(),
            v6::DEST_UNREACH | v6::PACKET_TOO_BIG | v6::TIME_EXCEEDED | v6::PARAM_PROBLEM
        )
    }

    /// MTU of a "packet too big" message, else 0.
    pub fn mtu(&self) -> u32 {
        if self.msg_type() == v6::PACKET_TOO_BIG {
            self.rest_of_header()
        } else {
            0
        }
    }

    /// The quoted packet of an error message. `None` for other types.
    pub fn inner(&self) -> Option<Result<IcmpInner, WireError>> {
        self.is_error().then(|| parse_inner_v6(self.payload()))
    }

    /// Does the checksum verify with the IPv6 pseudo-header sum
    /// (`checksum::pseudo_v6(src, dst, 58, len)`)?
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        checksum::verify(self.buf.as_ref(), pseudo)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Recompute the checksum with a pseudo-header sum.
    pub fn fill_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::sum(self.buf.as_ref(), pseudo));
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner_v4(proto: u8, ihl: u8, l4: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; usize::from(ihl) * 4];
        b[0] = 0x40 | ihl;
        b[9] = proto;
        b[12..16].copy_from_slice(&[198, 18, 0, 10]);
        b[16..20].copy_from_slice(&[198, 19, 0, 20]);
        b.extend_from_slice(l4);
        b
    }

    fn icmp4(t: u8, c: u8, rest: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![t, c, 0, 0];
        b.extend_from_slice(&rest.to_be_bytes());
        b.extend_from_slice(payload);
        b
    }

    const PORTS: [u8; 8] = [0x1f, 0x90, 0x9c, 0x40, 0, 0, 0, 0]; // 8080 -> 40000

    #[test]
    fn v4_frag_needed_with_inner_tcp() {
        let m = icmp4(3, 4, 1400, &inner_v4(6, 5, &PORTS));
        let p = Icmpv4Packet::new_checked(&m[..]).unwrap();
        assert!(p.is_error());
        assert_eq!(p.mtu(), 1400);
        let i = p.inner().unwrap().unwrap();
        assert_eq!(i.proto, 6);
        assert_eq!(i.src, "198.18.0.10".parse::<IpAddr>().unwrap());
        assert_eq!(i.dst, "198.19.0.20".parse::<IpAddr>().unwrap());
        assert_eq!((i.sport, i.dport), (8080, 40000));
        assert_eq!((i.ip_off, i.l4_off), (8, Some(28)));
        assert!(!i.is_fragment);
    }

    #[test]
    fn v4_error_types_and_non_errors() {
        for (t, err) in [
            (3, true),
            (11, true),
            (12, true),
            (0, false),
            (8, false),
            (5, false),
        ] {
            let m = icmp4(t, 0, 0, &inner_v4(17, 5, &PORTS));
            let p = Icmpv4Packet::new_checked(&m[..]).unwrap();
            assert_eq!(p.is_error(), err, "type {t}");
            assert_eq!(p.inner().is_some(), err);
            assert_eq!(p.mtu(), 0);
        }
    }

    #[test]
    fn v4_inner_options_and_truncation() {
        let emb = inner_v4(17, 6, &PORTS);
        let i = parse_inner_v4(&emb).unwrap();
        assert_eq!(i.l4_off, Some(8 + 24));
        for n in 0..emb.len() {
            assert_eq!(
                parse_inner_v4(&emb[..n]),
                Err(WireError::IcmpInnerTruncated),
                "len {n}"
            );
        }
        // Non-TCP/UDP inner needs only the IP header.
        let emb = inner_v4(1, 5, &[]);
        let i = parse_inner_v4(&emb).unwrap();
        assert_eq!((i.sport, i.dport, i.l4_off), (0, 0, None));
        let mut bad = inner_v4(6, 5, &PORTS);
        bad[0] = 0x65;
        assert_eq!(parse_inner_v4(&bad), Err(WireError::IcmpInnerMalformed));
        bad[0] = 0x44;
        assert_eq!(parse_inner_v4(&bad), Err(WireError::IcmpInnerMalformed));
    }

    #[test]
    fn v4_inner_later_fragment_has_no_ports() {
        let mut emb = inner_v4(6, 5, &[]);
        emb[6] = 0x00;
        emb[7] = 0x10;
        let i = parse_inner_v4(&emb).unwrap();
        assert!(i.is_fragment);
        assert_eq!((i.sport, i.dport, i.l4_off), (0, 0, None));
    }

    fn inner_v6(next: u8, ext: &[u8], l4: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 40];
        b[0] = 0x60;
        b[6] = next;
        b[8..24].copy_from_slice(&"2001:db8::a".parse::<Ipv6Addr>().unwrap().octets());
        b[24..40].copy_from_slice(&"2001:db8::b".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(ext);
        b.extend_from_slice(l4);
        b
    }

    #[test]
    fn v6_packet_too_big_and_inner_with_ext() {
        let mut dest = vec![17u8, 0];
        dest.resize(8, 0);
        let emb = inner_v6(60, &dest, &PORTS);
        let mut m = vec![2, 0, 0, 0];
        m.extend_from_slice(&1280u32.to_be_bytes());
        m.extend_from_slice(&emb);
        let p = Icmpv6Packet::new_checked(&m[..]).unwrap();
        assert!(p.is_error());
        assert_eq!(p.mtu(), 1280);
        let i = p.inner().unwrap().unwrap();
        assert_eq!((i.proto, i.sport, i.dport), (17, 8080, 40000));
        assert_eq!(i.l4_off, Some(8 + 48));
        assert_eq!(i.src, "2001:db8::a".parse::<IpAddr>().unwrap());
        for n in 0..emb.len() {
            assert_eq!(
                parse_inner_v6(&emb[..n]),
                Err(WireError::IcmpInnerTruncated),
                "len {n}"
            );
        }
        let mut bad = emb.clone();
        bad[0] = 0x40;
        assert_eq!(parse_inner_v6(&bad), Err(WireError::IcmpInnerMalformed));
        // hop-by-hop after dest opts: malformed chain.
        let mut hbh = vec![0u8, 0];
        hbh.resize(8, 0);
        let mut dest2 = vec![0u8, 0];
        dest2.resize(8, 0);
        dest2.extend(hbh);
        let emb = inner_v6(60, &dest2, &PORTS);
        assert_eq!(parse_inner_v6(&emb), Err(WireError::IcmpInnerMalformed));
    }

    #[test]
    fn v6_types() {
        for (t, err) in [
            (1, true),
            (2, true),
            (3, true),
            (4, true),
            (128, false),
            (135, false),
        ] {
            let mut m = vec![t, 0, 0, 0, 0, 0, 5, 0xdc];
            m.extend(inner_v6(6, &[], &PORTS));
            let p = Icmpv6Packet::new_checked(&m[..]).unwrap();
            assert_eq!(p.is_error(), err, "type {t}");
            assert_eq!(p.mtu(), if t == 2 { 1500 } else { 0 });
        }
        assert!(Icmpv6Packet::new_checked(&[1u8, 0, 0, 0, 0, 0, 0][..]).is_err());
    }

    #[test]
    fn checksums() {
        let mut m = icmp4(8, 0, 0x00010002, b"ping");
        let mut p = Icmpv4Packet::new_unchecked(&mut m[..]);
        p.fill_checksum();
        assert!(p.verify_checksum());
        p.set_rest_of_header(0x00010003);
        assert!(!p.verify_checksum());

        let ph = checksum::pseudo_v6(&[1; 16], &[2; 16], 58, 12);
        let mut m = vec![128u8, 0, 0, 0, 0, 1, 0, 1, 1, 2, 3, 4];
        let mut p = Icmpv6Packet::new_unchecked(&mut m[..]);
        p.fill_checksum(ph);
        assert!(p.verify_checksum(ph));
        assert!(!p.verify_checksum(ph + 1));
        assert_eq!(p.echo_ident(), 1);
    }
}
