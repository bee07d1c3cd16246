//! TCP header (RFC 9293).

use super::checksum;
use super::field::{set_u16, set_u32, set_u8, u16_at, u32_at, u8_at};
use super::{Layer, WireError};

/// Length of a TCP header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Offset of the checksum field.
pub const CHECKSUM_OFF: usize = 16;

/// TCP flag bits (byte 13).
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// A TCP segment view. After `new_checked`: 20 bytes present, data offset
/// at least 5 and within the buffer.
#[derive(Clone, Copy, Debug)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wrap without checking; accessors read zeros past the end.
    pub const fn new_unchecked(buf: T) -> Self {
        TcpPacket { buf }
    }

    /// Wrap, checking the fixed header and the data offset.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated { layer: Layer::Tcp });
        }
        let hlen = usize::from(u8_at(b, 12) >> 4) * 4;
        if hlen < MIN_HEADER_LEN || hlen > b.len() {
            return Err(WireError::BadTcpOffset);
        }
        Ok(TcpPacket { buf })
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

    /// Sequence number.
    pub fn seq(&self) -> u32 {
        u32_at(self.b(), 4)
    }

    /// Acknowledgment number.
    pub fn ack_num(&self) -> u32 {
        u32_at(self.b(), 8)
    }

    /// Header length in bytes (data offset * 4).
    pub fn header_len(&self) -> usize {
        usize::from(u8_at(self.b(), 12) >> 4) * 4
    }

    /// The flag byte (CWR ECE URG ACK PSH RST SYN FIN), see [`flags`].
    pub fn flags(&self) -> u8 {
        u8_at(self.b(), 13)
    }

    /// SYN set.
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }

    /// ACK set.
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }

    /// FIN set.
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }

    /// RST set.
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }

    /// Window.
    pub fn window(&self) -> u16 {
        u16_at(self.b(), 14)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        u16_at(self.b(), CHECKSUM_OFF)
    }

    /// Urgent pointer.
    pub fn urgent(&self) -> u16 {
        u16_at(self.b(), 18)
    }

    /// Options bytes.
    pub fn options(&self) -> &[u8] {
        self.b()
            .get(MIN_HEADER_LEN..self.header_len())
            .unwrap_or(&[])
    }

    /// Payload after the header (to the end of the buffer).
    pub fn payload(&self) -> &[u8] {
        self.b().get(self.header_len()..).unwrap_or(&[])
    }

    /// Does the checksum verify with this pseudo-header sum
    /// (see [`checksum::pseudo_v4`] / [`checksum::pseudo_v6`])?
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        checksum::verify(self.b(), pseudo)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Set the source port (checksum not updated).
    pub fn set_src_port(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), 0, v);
    }

    /// Set the destination port (checksum not updated).
    pub fn set_dst_port(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), 2, v);
    }

    /// Set the sequence number.
    pub fn set_seq(&mut self, v: u32) {
        set_u32(self.buf.as_mut(), 4, v);
    }

    /// Set the acknowledgment number.
    pub fn set_ack_num(&mut self, v: u32) {
        set_u32(self.buf.as_mut(), 8, v);
    }

    /// Set the header length in bytes (multiple of 4), keeping reserved bits 0.
    pub fn set_header_len(&mut self, hlen: usize) {
        set_u8(self.buf.as_mut(), 12, ((hlen / 4) as u8) << 4);
    }

    /// Set the flag byte.
    pub fn set_flags(&mut self, v: u8) {
        set_u8(self.buf.as_mut(), 13, v);
    }

    /// Set the window.
    pub fn set_window(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), 14, v);
    }

    /// Set the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), CHECKSUM_OFF, v);
    }

    /// Set the urgent pointer.
    pub fn set_urgent(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), 18, v);
    }

    /// Recompute the checksum over the whole buffer with a pseudo-header sum.
    pub fn fill_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::sum(self.buf.as_ref(), pseudo));
        self.set_checksum(c);
    }
}

/// A TCP header without options, as values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub urgent: u16,
}

impl TcpRepr {
    /// Read a checked segment's fixed fields.
    pub fn parse<T: AsRef<[u8]>>(p: &TcpPacket<T>) -> Self {
        TcpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq: p.seq(),
            ack: p.ack_num(),
            flags: p.flags(),
            window: p.window(),
            urgent: p.urgent(),
        }
    }

    /// Write a 20-byte header (checksum 0) at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let h = buf
            .get_mut(..MIN_HEADER_LEN)
            .ok_or(WireError::Truncated { layer: Layer::Tcp })?;
        let mut p = TcpPacket::new_unchecked(h);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq(self.seq);
        p.set_ack_num(self.ack);
        p.set_header_len(MIN_HEADER_LEN);
        p.set_flags(self.flags);
        p.set_window(self.window);
        p.set_checksum(0);
        p.set_urgent(self.urgent);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_offset() {
        let mut b = [0u8; 24];
        b[12] = 5 << 4;
        assert!(TcpPacket::new_checked(&b[..]).is_ok());
        assert_eq!(
            TcpPacket::new_checked(&b[..19]).err(),
            Some(WireError::Truncated { layer: Layer::Tcp })
        );
        b[12] = 4 << 4;
        assert_eq!(
            TcpPacket::new_checked(&b[..]).err(),
            Some(WireError::BadTcpOffset)
        );
        b[12] = 6 << 4;
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((p.options().len(), p.payload().len()), (4, 0));
        b[12] = 7 << 4;
        assert_eq!(
            TcpPacket::new_checked(&b[..]).err(),
            Some(WireError::BadTcpOffset)
        );
    }

    #[test]
    fn flags_and_repr() {
        let r = TcpRepr {
            src_port: 40000,
            dst_port: 80,
            seq: 0x01020304,
            ack: 0xa0b0c0d0,
            flags: flags::SYN | flags::ACK,
            window: 0xfaf0,
            urgent: 7,
        };
        let mut b = [0u8; 20];
        r.emit(&mut b).unwrap();
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(TcpRepr::parse(&p), r);
        assert!(p.syn() && p.ack() && !p.fin() && !p.rst());
        assert!(r.emit(&mut [0u8; 19]).is_err());
    }

    #[test]
    fn fill_and_verify() {
        let mut b = [0u8; 25];
        b[12] = 5 << 4;
        b[20..].copy_from_slice(b"hello");
        let ph = checksum::pseudo_v4([198, 18, 0, 1], [198, 18, 0, 2], 6, 25);
        let mut p = TcpPacket::new_unchecked(&mut b[..]);
        p.fill_checksum(ph);
        assert!(p.verify_checksum(ph));
        assert!(!p.verify_checksum(ph + 1));
    }
}
