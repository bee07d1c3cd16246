//! UDP header (RFC 768).

use super::checksum;
use super::field::{set_u16, u16_at};
use super::{Layer, WireError};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;
/// Offset of the checksum field.
pub const CHECKSUM_OFF: usize = 6;

/// A UDP datagram view. After `new_checked`: 8 bytes present and the
/// length field between 8 and the buffer length (bytes past it, if any,
/// are ignored as Linux does).
#[derive(Clone, Copy, Debug)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wrap without checking; accessors read zeros past the end.
    pub const fn new_unchecked(buf: T) -> Self {
        UdpPacket { buf }
    }

    /// Wrap, checking the header and the length field.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated { layer: Layer::Udp });
        }
        let len = usize::from(u16_at(b, 4));
        if len < HEADER_LEN || len > b.len() {
            return Err(WireError::UdpLenMismatch);
        }
        Ok(UdpPacket { buf })
    }

    /// Wrap the header of a first fragment: 8 bytes present and the length
    /// field at least 8 (the datagram continues in later fragments).
    pub fn new_checked_header(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated { layer: Layer::Udp });
        }
        if usize::from(u16_at(b, 4)) < HEADER_LEN {
            return Err(WireError::UdpLenMismatch);
        }
        Ok(UdpPacket { buf })
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        u16_at(self.b(), 0)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        u16_at(self.b(), 2)
    }

    /// Length field (header + payload).
    pub fn len(&self) -> u16 {
        u16_at(self.b(), 4)
    }

    /// True when the length field says there is no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum field (0 = none, IPv4 only).
    pub fn checksum(&self) -> u16 {
        u16_at(self.b(), CHECKSUM_OFF)
    }

    /// Payload, up to the length field.
    pub fn payload(&self) -> &[u8] {
        self.b()
            .get(HEADER_LEN..usize::from(self.len()))
            .unwrap_or(&[])
    }

    /// Does the checksum verify over `len` bytes with this pseudo-header
    /// sum? A zero checksum field is "no checksum" and verifies.
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        self.b()
            .get(..usize::from(self.len()))
            .is_some_and(|d| checksum::verify(d, pseudo))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Set the source port (checksum not updated).
    pub fn set_src_port(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), 0, v);
    }

    /// Set the destination port (checksum not updated).
    pub fn set_dst_port(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), 2, v);
    }

    /// Set the length field.
    pub fn set_len(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), 4, v);
    }

    /// Set the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), CHECKSUM_OFF, v);
    }

    /// Compute the checksum over `len` bytes with a pseudo-header sum; a
    /// computed 0 is sent as 0xffff.
    pub fn fill_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let n = usize::from(self.len());
        let c = self
            .buf
            .as_ref()
            .get(..n)
            .map_or(0, |d| checksum::finish(checksum::sum(d, pseudo)));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }
}

/// A UDP header as values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    /// Bytes after the header.
    pub payload_len: u16,
}

impl UdpRepr {
    /// Read a checked datagram's header.
    pub fn parse<T: AsRef<[u8]>>(p: &UdpPacket<T>) -> Self {
        UdpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload_len: p.len().saturating_sub(HEADER_LEN as u16),
        }
    }

    /// Write the 8-byte header (checksum 0) at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let len = self
            .payload_len
            .checked_add(HEADER_LEN as u16)
            .ok_or(WireError::UdpLenMismatch)?;
        let h = buf
            .get_mut(..HEADER_LEN)
            .ok_or(WireError::Truncated { layer: Layer::Udp })?;
        let mut p = UdpPacket::new_unchecked(h);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len(len);
        p.set_checksum(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dgram(len_field: u16, buf_len: usize) -> Vec<u8> {
        let mut b = vec![0u8; buf_len];
        b[0..2].copy_from_slice(&53u16.to_be_bytes());
        b[2..4].copy_from_slice(&5353u16.to_be_bytes());
        if buf_len >= 6 {
            b[4..6].copy_from_slice(&len_field.to_be_bytes());
        }
        b
    }

    #[test]
    fn length_checks() {
        assert!(UdpPacket::new_checked(&dgram(12, 12)[..]).is_ok());
        // Trailing bytes past the length field are tolerated and ignored.
        let b = dgram(10, 12);
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload().len(), 2);
        assert_eq!(
            UdpPacket::new_checked(&dgram(13, 12)[..]).err(),
            Some(WireError::UdpLenMismatch)
        );
        assert_eq!(
            UdpPacket::new_checked(&dgram(7, 12)[..]).err(),
            Some(WireError::UdpLenMismatch)
        );
        assert_eq!(
            UdpPacket::new_checked(&dgram(8, 7)[..]).err(),
            Some(WireError::Truncated { layer: Layer::Udp })
        );
        // First-fragment header: length may exceed the buffer, not go below 8.
        assert!(UdpPacket::new_checked_header(&dgram(1000, 8)[..]).is_ok());
        assert_eq!(
            UdpPacket::new_checked_header(&dgram(7, 8)[..]).err(),
            Some(WireError::UdpLenMismatch)
        );
        assert!(UdpPacket::new_checked_header(&dgram(8, 7)[..]).is_err());
    }

    #[test]
    fn checksum_zero_result_is_ffff() {
        let ph = checksum::pseudo_v4([198, 18, 0, 1], [198, 18, 0, 2], 17, 10);
        let mut b = dgram(10, 10);
        // Choose the payload word so that the whole sum is 0xffff: the
        // computed checksum is then 0 and must be sent as 0xffff.
        let fix = !checksum::fold(checksum::sum(&b[..6], ph));
        b[8..10].copy_from_slice(&fix.to_be_bytes());
        let mut p = UdpPacket::new_unchecked(&mut b[..]);
        p.fill_checksum(ph);
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum(ph));
        p.set_checksum(0x1234);
        assert!(!p.verify_checksum(ph));
        p.set_checksum(0);
        assert!(p.verify_checksum(ph), "zero means no checksum");
    }

    #[test]
    fn repr_round_trip() {
        let r = UdpRepr {
            src_port: 1,
            dst_port: 65535,
            payload_len: 100,
        };
        let mut b = vec![0u8; 108];
        r.emit(&mut b).unwrap();
        assert_eq!(UdpRepr::parse(&UdpPacket::new_checked(&b[..]).unwrap()), r);
        assert!(r.emit(&mut [0u8; 7]).is_err());
        let big = UdpRepr {
            payload_len: 65530,
            ..r
        };
        assert_eq!(big.emit(&mut b), Err(WireError::UdpLenMismatch));
    }
}
