//! IPv4 header (RFC 791) with options and fragment fields.

use std::net::Ipv4Addr;

use super::checksum;
use super::field::{array_at, set_bytes, set_u16, set_u8, u16_at, u8_at};
use super::{Layer, WireError};

/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// An IPv4 packet view. After `new_checked`: the header (with options) is
/// present and `total_len` lies within the buffer; bytes past `total_len`
/// (Ethernet padding) are excluded from [`Ipv4Packet::payload`].
#[derive(Clone, Copy, Debug)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wrap without checking; accessors read zeros past the end.
    pub const fn new_unchecked(buf: T) -> Self {
        Ipv4Packet { buf }
    }

    /// Wrap, checking version, IHL and total length against the buffer.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated { layer: Layer::Ipv4 });
        }
        let vihl = u8_at(b, 0);
        if vihl >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        let hlen = usize::from(vihl & 0x0f) * 4;
        if hlen < MIN_HEADER_LEN {
            return Err(WireError::BadIhl);
        }
        if hlen > b.len() {
            return Err(WireError::Truncated { layer: Layer::Ipv4 });
        }
        let total = usize::from(u16_at(b, 2));
        if total < hlen || total > b.len() {
            return Err(WireError::BadTotalLen);
        }
        Ok(Ipv4Packet { buf })
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Version field (4 once checked).
    pub fn version(&self) -> u8 {
        u8_at(self.b(), 0) >> 4
    }

    /// Header length in bytes (IHL * 4).
    pub fn header_len(&self) -> usize {
        usize::from(u8_at(self.b(), 0) & 0x0f) * 4
    }

    /// DSCP and ECN byte.
    pub fn tos(&self) -> u8 {
        u8_at(self.b(), 1)
    }

    /// Total length field.
    pub fn total_len(&self) -> u16 {
        u16_at(self.b(), 2)
    }

    /// Identification field.
    pub fn ident(&self) -> u16 {
        u16_at(self.b(), 4)
    }

    fn flags_frag(&self) -> u16 {
        u16_at(self.b(), 6)
    }

    /// Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }

    /// More Fragments flag.
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (self.flags_frag() & OFFSET_MASK) << 3
    }

    /// Part of a fragmented datagram (MF set or offset non-zero).
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// The first fragment (offset 0, MF set): it carries the L4 header.
    pub fn is_first_fragment(&self) -> bool {
        self.flags_frag() & (FLAG_MF | OFFSET_MASK) == FLAG_MF
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        u8_at(self.b(), 8)
    }

    /// Protocol number of the payload.
    pub fn protocol(&self) -> u8 {
        u8_at(self.b(), 9)
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        u16_at(self.b(), 10)
    }

    /// Source address bytes.
    pub fn src(&self) -> [u8; 4] {
        array_at(self.b(), 12)
    }

    /// Destination address bytes.
    pub fn dst(&self) -> [u8; 4] {
        array_at(self.b(), 16)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src())
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst())
    }

    /// Options bytes (between the fixed header and IHL * 4).
    pub fn options(&self) -> &[u8] {
        self.b()
            .get(MIN_HEADER_LEN..self.header_len())
            .unwrap_or(&[])
    }

    /// Payload: from the end of the header to `total_len`.
    pub fn payload(&self) -> &[u8] {
        self.b()
            .get(self.header_len()..usize::from(self.total_len()))
            .unwrap_or(&[])
    }

    /// Does the header checksum verify?
    pub fn verify_checksum(&self) -> bool {
        match self.b().get(..self.header_len()) {
            Some(h) if !h.is_empty() => checksum::verify(h, 0),
            _ => false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Set version 4 and the header length in bytes (multiple of 4).
    pub fn set_version_header_len(&mut self, hlen: usize) {
        set_u8(self.buf.as_mut(), 0, 0x40 | ((hlen / 4) as u8 & 0x0f));
    }

    /// Set DSCP/ECN.
    pub fn set_tos(&mut self, v: u8) {
        set_u8(self.buf.as_mut(), 1, v);
    }

    /// Set the total length.
    pub fn set_total_len(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), 2, v);
    }

    /// Set the identification.
    pub fn set_ident(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), 4, v);
    }

    /// Set DF, MF and the fragment offset (bytes, multiple of 8).
    pub fn set_frag(&mut self, df: bool, mf: bool, offset: u16) {
        let v = (if df { FLAG_DF } else { 0 })
            | (if mf { FLAG_MF } else { 0 })
            | ((offset >> 3) & OFFSET_MASK);
        set_u16(self.buf.as_mut(), 6, v);
    }

    /// Set the TTL (checksum not updated).
    pub fn set_ttl(&mut self, v: u8) {
        set_u8(self.buf.as_mut(), 8, v);
    }

    /// Set the protocol.
    pub fn set_protocol(&mut self, v: u8) {
        set_u8(self.buf.as_mut(), 9, v);
    }

    /// Set the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), 10, v);
    }

    /// Set the source address (checksum not updated).
    pub fn set_src(&mut self, a: [u8; 4]) {
        set_bytes(self.buf.as_mut(), 12, &a);
    }

    /// Set the destination address (checksum not updated).
    pub fn set_dst(&mut self, a: [u8; 4]) {
        set_bytes(self.buf.as_mut(), 16, &a);
    }

    /// Recompute the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hlen = self.header_len();
        let c = self.buf.as_ref().get(..hlen).map_or(0, checksum::checksum);
        self.set_checksum(c);
    }
}

/// An IPv4 header without options, as values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub tos: u8,
    pub ident: u16,
    pub dont_frag: bool,
    /// Bytes after the header (total length - 20).
    pub payload_len: u16,
}

impl Ipv4Repr {
    /// Read the fixed fields of a checked packet (options are ignored).
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Self {
        Ipv4Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            protocol: p.protocol(),
            ttl: p.ttl(),
            tos: p.tos(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            payload_len: p.total_len().saturating_sub(p.header_len() as u16),
        }
    }

    /// Write a 20-byte header with its checksum at the start of `buf`.
    /// Fails when `buf` is shorter than 20 bytes or the total length
    /// would exceed 65535.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let total = self
            .payload_len
            .checked_add(MIN_HEADER_LEN as u16)
            .ok_or(WireError::BadTotalLen)?;
        let h = buf
            .get_mut(..MIN_HEADER_LEN)
            .ok_or(WireError::Truncated { layer: Layer::Ipv4 })?;
        let mut p = Ipv4Packet::new_unchecked(h);
        p.set_version_header_len(MIN_HEADER_LEN);
        p.set_tos(self.tos);
        p.set_total_len(total);
        p.set_ident(self.ident);
        p.set_frag(self.dont_frag, false, 0);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src(self.src.octets());
        p.set_dst(self.dst.octets());
        p.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(ihl: u8, total: u16, frag: u16, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        b[0] = 0x40 | ihl;
        b[2..4].copy_from_slice(&total.to_be_bytes());
        b[6..8].copy_from_slice(&frag.to_be_bytes());
        b[8] = 64;
        b[9] = 6;
        b[12..16].copy_from_slice(&[198, 18, 0, 1]);
        b[16..20].copy_from_slice(&[198, 18, 0, 2]);
        b
    }

    #[test]
    fn checks() {
        assert!(Ipv4Packet::new_checked(&hdr(5, 20, 0, 20)[..]).is_ok());
        assert_eq!(
            Ipv4Packet::new_checked(&hdr(5, 20, 0, 20)[..19]).err(),
            Some(WireError::Truncated { layer: Layer::Ipv4 })
        );
        let mut v6 = hdr(5, 20, 0, 20);
        v6[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&v6[..]).err(),
            Some(WireError::BadVersion)
        );
        assert_eq!(
            Ipv4Packet::new_checked(&hdr(4, 20, 0, 20)[..]).err(),
            Some(WireError::BadIhl)
        );
        assert_eq!(
            Ipv4Packet::new_checked(&hdr(6, 24, 0, 20)[..]).err(),
            Some(WireError::Truncated { layer: Layer::Ipv4 })
        );
        assert_eq!(
            Ipv4Packet::new_checked(&hdr(6, 23, 0, 30)[..]).err(),
            Some(WireError::BadTotalLen)
        );
        assert_eq!(
            Ipv4Packet::new_checked(&hdr(5, 31, 0, 30)[..]).err(),
            Some(WireError::BadTotalLen)
        );
    }

    #[test]
    fn options_and_padding() {
        let mut b = hdr(6, 28, 0, 40);
        b[20..24].copy_from_slice(&[1, 1, 1, 0]);
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload().len(), 4); // padding past total_len excluded
    }

    #[test]
    fn fragments() {
        let cases = [
            // (flags/offset word, is_fragment, first, mf, offset bytes, df)
            (0x0000u16, false, false, false, 0u16, false),
            (0x4000, false, false, false, 0, true),
            (0x2000, true, true, true, 0, false),
            (0x2001, true, false, true, 8, false),
            (0x0001, true, false, false, 8, false),
            (0x1fff, true, false, false, 0xfff8, false),
        ];
        for (w, frag, first, mf, off, df) in cases {
            let b = hdr(5, 20, w, 20);
            let p = Ipv4Packet::new_checked(&b[..]).unwrap();
            assert_eq!(p.is_fragment(), frag, "{w:#x}");
            assert_eq!(p.is_first_fragment(), first, "{w:#x}");
            assert_eq!(p.more_frags(), mf, "{w:#x}");
            assert_eq!(p.frag_offset(), off, "{w:#x}");
            assert_eq!(p.dont_frag(), df, "{w:#x}");
        }
    }

    #[test]
    fn checksum_fill_and_verify() {
        let mut b = hdr(5, 20, 0, 20);
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        p.set_ttl(63);
        assert!(!p.verify_checksum());
    }

    #[test]
    fn repr_round_trip() {
        let r = Ipv4Repr {
            src: Ipv4Addr::new(198, 18, 1, 2),
            dst: Ipv4Addr::new(198, 19, 3, 4),
            protocol: 17,
            ttl: 5,
            tos: 0xb8,
            ident: 0x1234,
            dont_frag: true,
            payload_len: 8,
        };
        let mut b = [0u8; 28];
        r.emit(&mut b).unwrap();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&p), r);
        assert!(r.emit(&mut [0u8; 19]).is_err());
        let big = Ipv4Repr {
            payload_len: 65530,
            ..r
        };
        assert_eq!(big.emit(&mut b), Err(WireError::BadTotalLen));
    }
}
