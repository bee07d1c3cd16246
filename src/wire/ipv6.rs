//! IPv6 header (RFC 8200) and a bounded walk over extension headers.

use std::net::Ipv6Addr;

use super::field::{array_at, set_bytes, set_u16, set_u32, set_u8, u16_at, u32_at, u8_at};
use super::{Layer, WireError};

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;
/// At most this many extension headers are walked.
pub const MAX_EXT_HEADERS: u8 = 8;

/// Extension header / next header numbers.
pub mod nh {
    /// Hop-by-hop options (must come first).
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing header.
    pub const ROUTING: u8 = 43;
    /// Fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Encapsulating Security Payload: the walk stops there.
    pub const ESP: u8 = 50;
    /// Authentication header.
    pub const AH: u8 = 51;
    /// No next header: the walk stops there.
    pub const NO_NEXT: u8 = 59;
    /// Destination options.
    pub const DEST_OPTS: u8 = 60;
}

/// An IPv6 packet view. After `new_checked`: the fixed header is present
/// and `40 + payload_len` lies within the buffer.
#[derive(Clone, Copy, Debug)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wrap without checking; accessors read zeros past the end.
    pub const fn new_unchecked(buf: T) -> Self {
        Ipv6Packet { buf }
    }

    /// Wrap, checking version and payload length against the buffer.
    /// (Jumbograms, payload length 0 with a jumbo option, are not supported:
    /// their payload reads as empty.)
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated { layer: Layer::Ipv6 });
        }
        if u8_at(b, 0) >> 4 != 6 {
            return Err(WireError::BadVersion);
        }
        if HEADER_LEN + usize::from(u16_at(b, 4)) > b.len() {
            return Err(WireError::BadTotalLen);
        }
        Ok(Ipv6Packet { buf })
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Version field (6 once checked).
    pub fn version(&self) -> u8 {
        u8_at(self.b(), 0) >> 4
    }

    /// Traffic class (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        ((u32_at(self.b(), 0) >> 20) & 0xff) as u8
    }

    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        u32_at(self.b(), 0) & 0x000f_ffff
    }

    /// Payload length field (bytes after the fixed header).
    pub fn payload_len(&self) -> u16 {
        u16_at(self.b(), 4)
    }

    /// Next header of the fixed header.
    pub fn next_header(&self) -> u8 {
        u8_at(self.b(), 6)
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        u8_at(self.b(), 7)
    }

    /// Source address bytes.
    pub fn src(&self) -> [u8; 16] {
        array_at(self.b(), 8)
    }

    /// Destination address bytes.
    pub fn dst(&self) -> [u8; 16] {
        array_at(self.b(), 24)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src())
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst())
    }

    /// Everything after the fixed header, up to `payload_len`.
    pub fn payload(&self) -> &[u8] {
        self.b()
            .get(HEADER_LEN..HEADER_LEN + usize::from(self.payload_len()))
            .unwrap_or(&[])
    }

    /// Walk the extension headers of the payload.
    pub fn ext_chain(&self) -> Result<ExtChain, WireError> {
        walk_ext(self.next_header(), self.payload())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Set version 6, traffic class and flow label.
    pub fn set_version_tc_flow(&mut self, tc: u8, flow: u32) {
        let w = (6u32 << 28) | (u32::from(tc) << 20) | (flow & 0x000f_ffff);
        set_u32(self.buf.as_mut(), 0, w);
    }

    /// Set the payload length.
    pub fn set_payload_len(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), 4, v);
    }

    /// Set the next header.
    pub fn set_next_header(&mut self, v: u8) {
        set_u8(self.buf.as_mut(), 6, v);
    }

    /// Set the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        set_u8(self.buf.as_mut(), 7, v);
    }

    /// Set the source address.
    pub fn set_src(&mut self, a: [u8; 16]) {
        set_bytes(self.buf.as_mut(), 8, &a);
    }

    /// Set the destination address.
    pub fn set_dst(&mut self, a: [u8; 16]) {
        set_bytes(self.buf.as_mut(), 24, &a);
    }
}

/// A fragment header's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragInfo {
    /// Fragment offset in bytes.
    pub offset: u16,
    /// M flag.
    pub more: bool,
    /// Identification.
    pub ident: u32,
}

/// Result of walking the extension headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtChain {
    /// The protocol after the last extension header: an upper layer
    /// protocol, ESP (50), no-next (59), or, for a non-first fragment, the
    /// fragment header's next header.
    pub proto: u8,
    /// Offset of that protocol's header, from the start of the payload
    /// (after the fixed 40 bytes).
    pub l4_off: usize,
    /// A fragment header, if one was found. An atomic fragment (offset 0,
    /// M clear) is reported here too, but [`ExtChain::is_fragment`] is false.
    pub frag: Option<FragInfo>,
    /// Number of extension headers walked.
    pub count: u8,
}

impl ExtChain {
    /// Part of a fragmented datagram (excludes atomic fragments).
    pub fn is_fragment(&self) -> bool {
        matches!(self.frag, Some(f) if f.more || f.offset != 0)
    }

    /// The first fragment (offset 0, M set).
    pub fn is_first_fragment(&self) -> bool {
        matches!(self.frag, Some(f) if f.more && f.offset == 0)
    }

    /// A fragment other than the first: no upper-layer header here.
    pub fn is_later_fragment(&self) -> bool {
        matches!(self.frag, Some(f) if f.offset != 0)
    }
}

/// Walk extension headers starting with next header `first` over
/// `payload` (the bytes after the fixed header). Stops at the first
/// non-extension protocol, at ESP/no-next, or after a non-first fragment
/// header. Errors: truncation, more than [`MAX_EXT_HEADERS`] headers,
/// hop-by-hop not first, or a second fragment header.
pub fn walk_ext(first: u8, payload: &[u8]) -> Result<ExtChain, WireError> {
    let mut proto = first;
    let mut off = 0usize;
    let mut count = 0u8;
    let mut frag: Option<FragInfo> = None;
    loop {
        let len = match proto {
            nh::HOP_BY_HOP | nh::ROUTING | nh::DEST_OPTS => {
                if proto == nh::HOP_BY_HOP && count != 0 {
                    return Err(WireError::ExtHeaderOrder);
                }
                (usize::from(ext_byte(payload, off, 1)?) + 1) * 8
            }
            nh::FRAGMENT => {
                if frag.is_some() {
                    return Err(WireError::ExtHeaderOrder);
                }
                8
            }
            nh::AH => (usize::from(ext_byte(payload, off, 1)?) + 2) * 4,
            _ => break,
        };
        if count >= MAX_EXT_HEADERS {
            return Err(WireError::ExtHeaderChainTooLong);
        }
        if off + len > payload.len() {
            return Err(WireError::Truncated {
                layer: Layer::Ipv6Ext,
            });
        }
        let next = u8_at(payload, off);
        if proto == nh::FRAGMENT {
            let w = u16_at(payload, off + 2);
            let f = FragInfo {
                offset: w & 0xfff8,
                more: w & 1 != 0,
                ident: u32_at(payload, off + 4),
            };
            frag = Some(f);
            count += 1;
            off += len;
            proto = next;
            if f.offset != 0 {
                break;
            }
            continue;
        }
        count += 1;
        off += len;
        proto = next;
    }
    Ok(ExtChain {
        proto,
        l4_off: off,
        frag,
        count,
    })
}

#[inline]
fn ext_byte(p: &[u8], off: usize, i: usize) -> Result<u8, WireError> {
    p.get(off + i).copied().ok_or(WireError::Truncated {
        layer: Layer::Ipv6Ext,
    })
}

/// A fixed IPv6 header as values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
    pub payload_len: u16,
}

impl Ipv6Repr {
    /// Read a checked packet's fixed header.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Self {
        Ipv6Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            next_header: p.next_header(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
            payload_len: p.payload_len(),
        }
    }

    /// Write the 40-byte header at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let h = buf
            .get_mut(..HEADER_LEN)
            .ok_or(WireError::Truncated { layer: Layer::Ipv6 })?;
        let mut p = Ipv6Packet::new_unchecked(h);
        p.set_version_tc_flow(self.traffic_class, self.flow_label);
        p.set_payload_len(self.payload_len);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src(self.src.octets());
        p.set_dst(self.dst.octets());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(next: u8, len8: u8) -> Vec<u8> {
        let mut v = vec![0u8; (usize::from(len8) + 1) * 8];
        v[0] = next;
        v[1] = len8;
        v
    }

    fn frag(next: u8, offset: u16, more: bool) -> Vec<u8> {
        let mut v = vec![next, 0];
        v.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
        v.extend_from_slice(&0xdead_beefu32.to_be_bytes());
        v
    }

    #[test]
    fn no_ext_headers() {
        let c = walk_ext(6, &[0u8; 20]).unwrap();
        assert_eq!((c.proto, c.l4_off, c.count, c.frag), (6, 0, 0, None));
    }

    #[test]
    fn hop_routing_ah_dest() {
        let mut p = ext(nh::ROUTING, 0); // hop-by-hop, 8 bytes
        p.extend(ext(nh::AH, 0)); // routing, 8 bytes
        let mut ah = vec![nh::DEST_OPTS, 4]; // (4+2)*4 = 24 bytes
        ah.resize(24, 0);
        p.extend(ah);
        p.extend(ext(17, 1)); // dest opts, 16 bytes
        p.extend([0u8; 8]);
        let c = walk_ext(nh::HOP_BY_HOP, &p).unwrap();
        assert_eq!((c.proto, c.l4_off, c.count), (17, 56, 4));
        assert!(!c.is_fragment());
    }

    #[test]
    fn hop_by_hop_must_be_first() {
        let mut p = ext(nh::HOP_BY_HOP, 0);
        p.extend(ext(6, 0));
        assert_eq!(walk_ext(nh::DEST_OPTS, &p), Err(WireError::ExtHeaderOrder));
        // Also rejected as a repeat of the first one.
        let mut q = ext(nh::HOP_BY_HOP, 0);
        q.extend(ext(6, 0));
        assert_eq!(walk_ext(nh::HOP_BY_HOP, &q), Err(WireError::ExtHeaderOrder));
    }

    #[test]
    fn chain_bounded() {
        let mut p = Vec::new();
        for _ in 0..MAX_EXT_HEADERS {
            p.extend(ext(nh::DEST_OPTS, 0));
        }
        // Last one points to TCP: exactly MAX headers are fine.
        let last = p.len() - 8;
        p[last] = 6;
        assert_eq!(walk_ext(nh::DEST_OPTS, &p).unwrap().count, MAX_EXT_HEADERS);
        p[last] = nh::DEST_OPTS;
        p.extend(ext(6, 0));
        assert_eq!(
            walk_ext(nh::DEST_OPTS, &p),
            Err(WireError::ExtHeaderChainTooLong)
        );
    }

    #[test]
    fn fragments() {
        let mut p = frag(6, 0, true);
        p.extend([0u8; 20]);
        let c = walk_ext(nh::FRAGMENT, &p).unwrap();
        assert!(c.is_fragment() && c.is_first_fragment() && !c.is_later_fragment());
        assert_eq!((c.proto, c.l4_off), (6, 8));
        assert_eq!(c.frag.unwrap().ident, 0xdead_beef);

        // Later fragment: the walk stops even if the data looks like a header.
        let mut p = frag(nh::DEST_OPTS, 1448, false);
        p.extend([0u8; 3]);
        let c = walk_ext(nh::FRAGMENT, &p).unwrap();
        assert!(c.is_fragment() && !c.is_first_fragment() && c.is_later_fragment());
        assert_eq!((c.proto, c.l4_off, c.frag.unwrap().offset), (60, 8, 1448));

        // Atomic fragment: not a fragment.
        let mut p = frag(17, 0, false);
        p.extend([0u8; 8]);
        let c = walk_ext(nh::FRAGMENT, &p).unwrap();
        assert!(!c.is_fragment() && c.frag.is_some());

        // Two fragment headers.
        let mut p = frag(nh::FRAGMENT, 0, true);
        p.extend(frag(6, 0, true));
        assert_eq!(walk_ext(nh::FRAGMENT, &p), Err(WireError::ExtHeaderOrder));
    }

    #[test]
    fn esp_and_no_next_stop() {
        let c = walk_ext(nh::ESP, &[1, 2, 3]).unwrap();
        assert_eq!((c.proto, c.l4_off), (50, 0));
        let mut p = ext(nh::NO_NEXT, 0);
        p.extend([0xffu8; 4]);
        let c = walk_ext(nh::DEST_OPTS, &p).unwrap();
        assert_eq!((c.proto, c.l4_off, c.count), (59, 8, 1));
    }

    #[test]
    fn truncated_ext() {
        let mut p = ext(nh::ROUTING, 1);
        p.extend(ext(6, 0));
        for n in 0..p.len() {
            if n == 16 {
                continue; // ends exactly after the first header: its next is truncated
            }
            assert_eq!(
                walk_ext(nh::DEST_OPTS, &p[..n]),
                Err(WireError::Truncated {
                    layer: Layer::Ipv6Ext
                }),
                "len {n}"
            );
        }
        assert!(walk_ext(nh::DEST_OPTS, &p[..16]).is_err());
        assert!(walk_ext(nh::DEST_OPTS, &p).is_ok());
        assert!(walk_ext(nh::FRAGMENT, &[6, 0, 0]).is_err());
        assert!(walk_ext(nh::AH, &[6]).is_err());
    }

    #[test]
    fn packet_checks_and_repr() {
        let r = Ipv6Repr {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
            next_header: 6,
            hop_limit: 3,
            traffic_class: 0xb9,
            flow_label: 0xabcde,
            payload_len: 4,
        };
        let mut b = [0u8; 44];
        r.emit(&mut b).unwrap();
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&p), r);
        assert_eq!(p.payload().len(), 4);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..43]).err(),
            Some(WireError::BadTotalLen)
        );
        assert_eq!(
            Ipv6Packet::new_checked(&b[..39]).err(),
            Some(WireError::Truncated { layer: Layer::Ipv6 })
        );
        b[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).err(),
            Some(WireError::BadVersion)
        );
        assert!(r.emit(&mut [0u8; 39]).is_err());
    }
}
