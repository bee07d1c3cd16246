//! Layout of the `vip_map` / `real_map` key shared by the XDP program and
//! user space.
//!
//! ```text
//! offset  size  field
//!      0    16  addr   IPv6 address; IPv4 as v4-mapped ::ffff:a.b.c.d
//!     16     1  proto  IP protocol (6 TCP, 17 UDP), 0 for address-only
//!     17     1  pad    always 0
//!     18     2  port   network byte order; 0 = port-0 service / address-only
//! ```
//! The value is one `u8` of flags ([`FLAG_PRESENT`]); the program only tests
//! presence.

use std::net::{IpAddr, Ipv6Addr};

use crate::service::model::Proto;

/// Key size in bytes.
pub const KEY_SIZE: usize = 20;
/// Value size in bytes.
pub const VALUE_SIZE: usize = 1;
/// Offset of `addr` in the key.
pub const OFF_ADDR: i16 = 0;
/// Offset of `proto` in the key.
pub const OFF_PROTO: i16 = 16;
/// Offset of `port` in the key.
pub const OFF_PORT: i16 = 18;
/// Offset of the IPv4 address inside `addr` (after `::ffff:`).
pub const OFF_ADDR_V4: i16 = 12;
/// Value written for every entry.
pub const FLAG_PRESENT: u8 = 1;

/// One key of `vip_map` or `real_map`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrKey {
    /// Address (an IPv4-mapped IPv6 address reads back as IPv4).
    pub addr: IpAddr,
    /// IP protocol number; 0 for address-only entries.
    pub proto: u8,
    /// Port in host byte order; 0 for port-0 services and address-only.
    pub port: u16,
}

impl AddrKey {
    /// A service (or real server) key.
    pub fn service(proto: Proto, addr: IpAddr, port: u16) -> Self {
        AddrKey {
            addr,
            proto: proto.number(),
            port,
        }
    }

    /// The address-only key `(addr, 0, 0)`.
    pub fn addr_only(addr: IpAddr) -> Self {
        AddrKey {
            addr,
            proto: 0,
            port: 0,
        }
    }

    /// The key bytes as the program builds them.
    pub fn to_bytes(&self) -> [u8; KEY_SIZE] {
        let v6 = match self.addr {
            IpAddr::V4(a) => a.to_ipv6_mapped(),
            IpAddr::V6(a) => a,
        };
        let mut out = [0u8; KEY_SIZE];
        let (addr, rest) = out.split_at_mut(16);
        addr.copy_from_slice(&v6.octets());
        let port = self.port.to_be_bytes();
        rest.copy_from_slice(&[self.proto, 0, port[0], port[1]]);
        out
    }

    /// Parse key bytes; v4-mapped addresses come back as IPv4.
    pub fn from_bytes(b: &[u8; KEY_SIZE]) -> Self {
        let (addr, rest) = b.split_at(16);
        let mut a = [0u8; 16];
        a.copy_from_slice(addr);
        let v6 = Ipv6Addr::from(a);
        let addr = match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        };
        let (proto, port) = match rest {
            [p, _, hi, lo] => (*p, u16::from_be_bytes([*hi, *lo])),
            _ => (0, 0),
        };
        AddrKey { addr, proto, port }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_key_layout() {
        let k = AddrKey::service(Proto::Tcp, "198.18.0.10".parse().unwrap(), 80);
        let b = k.to_bytes();
        assert_eq!(
            b,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 10, 6, 0, 0, 80]
        );
        assert_eq!(AddrKey::from_bytes(&b), k);
    }

    #[test]
    fn ipv6_key_layout() {
        let k = AddrKey::service(Proto::Udp, "2001:db8::1".parse().unwrap(), 0x1234);
        let b = k.to_bytes();
        assert_eq!(&b[..4], &[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(b[15], 1);
        assert_eq!(&b[16..], &[17, 0, 0x12, 0x34]);
        assert_eq!(AddrKey::from_bytes(&b), k);
    }

    #[test]
    fn address_only_key_has_zero_proto_and_port() {
        let b = AddrKey::addr_only("2001:db8::2".parse().unwrap()).to_bytes();
        assert_eq!(&b[16..], &[0, 0, 0, 0]);
    }
}
