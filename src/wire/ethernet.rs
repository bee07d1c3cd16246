//! Ethernet II frames and 802.1Q / 802.1ad VLAN tags.

use super::field::{array_at, set_bytes, set_u16, u16_at};
use super::{ethertype, Layer, WireError};

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = 14;
/// Length of one VLAN tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// At most this many stacked VLAN tags are walked (single or QinQ).
pub const MAX_VLANS: u8 = 2;

/// Is `t` a VLAN tag protocol identifier (802.1Q, 802.1ad, old QinQ)?
#[inline]
pub const fn is_vlan_tpid(t: u16) -> bool {
    matches!(t, ethertype::VLAN | ethertype::QINQ | ethertype::QINQ_OLD)
}

/// The L2 part of a frame once VLAN tags are skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2Info {
    /// EtherType of the payload (after the tags). A third stacked tag shows
    /// up here as its TPID: not walked, the frame is "other".
    pub ethertype: u16,
    /// Number of VLAN tags skipped (0..=2).
    pub vlans: u8,
    /// Offset of the L3 header.
    pub l3_off: usize,
}

/// Skip the Ethernet header and up to [`MAX_VLANS`] tags.
#[inline]
pub fn walk_l2(frame: &[u8]) -> Result<L2Info, WireError> {
    if frame.len() < HEADER_LEN {
        return Err(WireError::Truncated {
            layer: Layer::Ethernet,
        });
    }
    let mut et = u16_at(frame, 12);
    let mut off = HEADER_LEN;
    let mut vlans = 0u8;
    while is_vlan_tpid(et) && vlans < MAX_VLANS {
        if frame.len() < off + VLAN_TAG_LEN {
            return Err(WireError::Truncated { layer: Layer::Vlan });
        }
        et = u16_at(frame, off + 2);
        off += VLAN_TAG_LEN;
        vlans += 1;
    }
    Ok(L2Info {
        ethertype: et,
        vlans,
        l3_off: off,
    })
}

/// An Ethernet II header view (the first 14 bytes; tags follow as payload).
#[derive(Clone, Copy, Debug)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wrap without checking; accessors read zeros past the end.
    pub const fn new_unchecked(buf: T) -> Self {
        EthernetFrame { buf }
    }

    /// Wrap, checking that the 14-byte header is present.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated {
                layer: Layer::Ethernet,
            });
        }
        Ok(EthernetFrame { buf })
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }

    /// Destination MAC.
    pub fn dst(&self) -> [u8; 6] {
        array_at(self.buf.as_ref(), 0)
    }

    /// Source MAC.
    pub fn src(&self) -> [u8; 6] {
        array_at(self.buf.as_ref(), 6)
    }

    /// The EtherType (or a VLAN TPID when tagged).
    pub fn ethertype(&self) -> u16 {
        u16_at(self.buf.as_ref(), 12)
    }

    /// Everything after the 14-byte header.
    pub fn payload(&self) -> &[u8] {
        self.buf.as_ref().get(HEADER_LEN..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Set the destination MAC.
    pub fn set_dst(&mut self, mac: [u8; 6]) {
        set_bytes(self.buf.as_mut(), 0, &mac);
    }

    /// Set the source MAC.
    pub fn set_src(&mut self, mac: [u8; 6]) {
        set_bytes(self.buf.as_mut(), 6, &mac);
    }

    /// Set the EtherType.
    pub fn set_ethertype(&mut self, t: u16) {
        set_u16(self.buf.as_mut(), 12, t);
    }
}

/// A VLAN tag as it sits after the MACs: TPID, then TCI.
#[derive(Clone, Copy, Debug)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Wrap 4 bytes starting at a TPID (frame offset 12 for the outer tag).
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < VLAN_TAG_LEN {
            return Err(WireError::Truncated { layer: Layer::Vlan });
        }
        Ok(VlanTag { buf })
    }

    /// Tag protocol identifier.
    pub fn tpid(&self) -> u16 {
        u16_at(self.buf.as_ref(), 0)
    }

    /// Tag control information (PCP, DEI, VID).
    pub fn tci(&self) -> u16 {
        u16_at(self.buf.as_ref(), 2)
    }

    /// VLAN id (12 bits).
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// Priority code point.
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }
}

/// An untagged Ethernet II header as values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetRepr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: u16,
}

impl EthernetRepr {
    /// Read the header of a checked frame.
    pub fn parse<T: AsRef<[u8]>>(f: &EthernetFrame<T>) -> Self {
        EthernetRepr {
            dst: f.dst(),
            src: f.src(),
            ethertype: f.ethertype(),
        }
    }

    /// Write the 14 bytes at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let h = buf.get_mut(..HEADER_LEN).ok_or(WireError::Truncated {
            layer: Layer::Ethernet,
        })?;
        let mut f = EthernetFrame::new_unchecked(h);
        f.set_dst(self.dst);
        f.set_src(self.src);
        f.set_ethertype(self.ethertype);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tags: &[(u16, u16)], et: u16, extra: usize) -> Vec<u8> {
        let mut f = vec![1, 2, 3, 4, 5, 6, 0xa, 0xb, 0xc, 0xd, 0xe, 0xf];
        for &(tpid, tci) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&et.to_be_bytes());
        f.resize(f.len() + extra, 0);
        f
    }

    #[test]
    fn untagged() {
        let f = frame(&[], ethertype::IPV4, 20);
        let l2 = walk_l2(&f).unwrap();
        assert_eq!(
            l2,
            L2Info {
                ethertype: 0x0800,
                vlans: 0,
                l3_off: 14
            }
        );
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(e.dst(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(e.src(), [0xa, 0xb, 0xc, 0xd, 0xe, 0xf]);
        assert_eq!(e.payload().len(), 20);
    }

    #[test]
    fn single_and_double_tags() {
        let f = frame(&[(0x8100, 0x2064)], ethertype::IPV6, 0);
        let l2 = walk_l2(&f).unwrap();
        assert_eq!((l2.ethertype, l2.vlans, l2.l3_off), (0x86dd, 1, 18));
        let t = VlanTag::new_checked(&f[12..]).unwrap();
        assert_eq!((t.tpid(), t.vid(), t.pcp()), (0x8100, 100, 1));

        for outer in [0x88a8, 0x9100, 0x8100] {
            let f = frame(&[(outer, 10), (0x8100, 20)], ethertype::IPV4, 0);
            let l2 = walk_l2(&f).unwrap();
            assert_eq!((l2.ethertype, l2.vlans, l2.l3_off), (0x0800, 2, 22));
        }
    }

    #[test]
    fn third_tag_is_not_walked() {
        let f = frame(&[(0x88a8, 1), (0x8100, 2), (0x8100, 3)], 0x0800, 0);
        let l2 = walk_l2(&f).unwrap();
        assert_eq!((l2.ethertype, l2.vlans, l2.l3_off), (0x8100, 2, 22));
    }

    #[test]
    fn truncation() {
        let f = frame(&[(0x8100, 1)], 0x0800, 0);
        assert_eq!(
            walk_l2(&f[..13]),
            Err(WireError::Truncated {
                layer: Layer::Ethernet
            })
        );
        for n in 14..18 {
            assert_eq!(
                walk_l2(&f[..n]),
                Err(WireError::Truncated { layer: Layer::Vlan })
            );
        }
        assert!(walk_l2(&f[..18]).is_ok());
        assert!(EthernetFrame::new_checked(&f[..13]).is_err());
        assert!(VlanTag::new_checked(&f[..3]).is_err());
    }

    #[test]
    fn repr_round_trip() {
        let r = EthernetRepr {
            dst: [2, 0, 0, 0, 0, 1],
            src: [2, 0, 0, 0, 0, 2],
            ethertype: ethertype::ARP,
        };
        let mut b = [0u8; 14];
        r.emit(&mut b).unwrap();
        assert_eq!(
            EthernetRepr::parse(&EthernetFrame::new_checked(&b[..]).unwrap()),
            r
        );
        assert!(r.emit(&mut [0u8; 13]).is_err());
    }
}
