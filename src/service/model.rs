//! Shared vocabulary of the director: protocols, forwarding methods, service
//! keys, destination ids, flow keys and timeouts. Every other module speaks
//! in these types, so they stay small, `Copy` and free of I/O. The flow
//! ones (`Proto`, `FlowKey`) belong to the packet parser ([`crate::wire::flow`])
//! and are re-exported here.

use std::fmt;
use std::net::IpAddr;

pub use crate::wire::flow::{FlowKey, Proto};

/// Time as the engine sees it: milliseconds on a monotonic clock chosen by the
/// caller. The engine never reads a clock itself (sans-IO).
pub type Millis = u64;

/// How a packet reaches the real server (IPVS "packet forwarding method").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FwdMethod {
    /// Direct routing: only the destination MAC changes (`-g`).
    Dr,
    /// Masquerading: DNAT towards the real server, SNAT on replies (`-m`).
    Nat,
    /// IP-in-IP (IPv4 outer: proto 4/41; IPv6 outer: next header 4/41) (`-i`).
    Ipip,
    /// Generic UDP Encapsulation (RFC-draft GUE variant 1, direct IP in UDP).
    Gue,
}

impl FwdMethod {
    pub const fn name(self) -> &'static str {
        match self {
            FwdMethod::Dr => "dr",
            FwdMethod::Nat => "nat",
            FwdMethod::Ipip => "ipip",
            FwdMethod::Gue => "gue",
        }
    }
    /// ipvsadm's column name.
    pub const fn ipvsadm_name(self) -> &'static str {
        match self {
            FwdMethod::Dr => "Route",
            FwdMethod::Nat => "Masq",
            FwdMethod::Ipip => "Tunnel",
            FwdMethod::Gue => "GUE",
        }
    }
}

/// What identifies a virtual service, as IPVS keys it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKey {
    /// `proto VIP:port`; port 0 means "all ports" (persistent services only).
    Addr {
        proto: Proto,
        vip: IpAddr,
        port: u16,
    },
    /// A firewall-mark group declared in the config.
    Fwmark(u32),
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Addr {
                proto,
                vip: IpAddr::V4(a),
                port,
            } => {
                write!(f, "{} {}:{}", proto.name().to_uppercase(), a, port)
            }
            ServiceKey::Addr {
                proto,
                vip: IpAddr::V6(a),
                port,
            } => {
                write!(f, "{} [{}]:{}", proto.name().to_uppercase(), a, port)
            }
            ServiceKey::Fwmark(m) => write!(f, "FWM {}", m),
        }
    }
}

/// Stable identity of a real server inside a service. The control plane keeps
/// the id of a real server that survives a reload, so connections and
/// templates that refer to it stay valid; a removed server's id is never
/// reused for another server in the same process lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestId(pub u32);

/// Index of a service in the current snapshot (valid for one snapshot only).
pub type ServiceIdx = u32;

/// Connection timeouts, in seconds, as `ipvsadm --set tcp tcpfin udp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300,
        }
    }
}

/// Mask an address with an IPv4 prefix length or an IPv6 prefix length.
pub fn mask_addr(addr: IpAddr, prefix4: u8, prefix6: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let p = prefix4.min(32);
            let m: u32 = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let p = prefix6.min(128);
            let m: u128 = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        let a: IpAddr = "198.18.5.77".parse().unwrap();
        assert_eq!(
            mask_addr(a, 24, 64),
            "198.18.5.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(mask_addr(a, 0, 64), "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(mask_addr(a, 32, 64), a);
        let b: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(
            mask_addr(b, 24, 64),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(mask_addr(b, 24, 128), b);
    }
}
