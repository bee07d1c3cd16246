//! The XDP programs' maps follow the snapshot: every VIP port, and the
//! ports of NAT real servers (their replies come back through the director),
//! and the host's own addresses.

use std::net::IpAddr;

use crate::service::model::Proto;
use crate::service::snapshot::Snapshot;
use crate::xdp::{XdpLink, XdpProgram};

/// XDP map entries for a snapshot: VIP ports, and NAT real servers' ports.
type PortEntries = Vec<(Proto, IpAddr, u16)>;

fn xdp_entries(snap: &Snapshot) -> (PortEntries, PortEntries) {
    let vips = snap.vips.clone();
    let mut reals = Vec::new();
    for s in &snap.services {
        for d in &s.dests {
            if d.fwd != crate::service::model::FwdMethod::Nat {
                continue;
            }
            match (s.key, d.port) {
                (crate::service::model::ServiceKey::Addr { proto, port, .. }, p) => {
                    reals.push((proto, d.addr, p.unwrap_or(port)));
                }
                (crate::service::model::ServiceKey::Fwmark(m), port) => {
                    // A fixed real port, or (none) every port of the mark.
                    for (&(proto, _), rules) in &snap.classifier.fwmark_rules {
                        for &(lo, hi, mark) in rules {
                            if mark != m {
                                continue;
                            }
                            match port {
                                Some(p) if p != 0 => reals.push((proto, d.addr, p)),
                                _ => {
                                    for p in lo..=hi {
                                        reals.push((proto, d.addr, p));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    reals.sort_by_key(|(p, a, port)| (p.number(), *a, *port));
    reals.dedup();
    (vips, reals)
}

pub(super) type Progs = std::rc::Rc<Vec<(String, u32, XdpProgram)>>;

pub struct Attached {
    pub(super) progs: Progs,
    pub(super) links: Vec<XdpLink>,
}

impl Attached {
    pub(super) fn update_maps(&self, snap: &Snapshot) -> Result<(), String> {
        update_maps(&self.progs, snap)
    }
}

/// Publish a snapshot's VIPs and NAT real servers, and the host's own
/// addresses, to every XDP program.
pub(super) fn update_maps(
    progs: &[(String, u32, XdpProgram)],
    snap: &Snapshot,
) -> Result<(), String> {
    let (vips, reals) = xdp_entries(snap);
    for (name, _, p) in progs {
        p.set_fast_path(snap.fast_path)
            .map_err(|e| format!("{name}: fast path switch: {e}"))?;
        p.set_vips(&vips)
            .map_err(|e| format!("{name}: VIP map: {e}"))?;
        p.set_reals(&reals)
            .map_err(|e| format!("{name}: real-server map: {e}"))?;
    }
    // The host's addresses are refreshed every 2 s as well: a failure here
    // (netlink, or more addresses than the map holds) must not refuse a
    // start, a reload or a health change whose VIP and real-server maps are
    // already written.
    if let Err(e) = update_locals(progs) {
        tracing::warn!("{e}");
    }
    Ok(())
}

/// The host's own addresses (every interface of the namespace), so that a
/// NAT real server's packets to the host itself stay in the kernel.
pub(super) fn update_locals(progs: &[(String, u32, XdpProgram)]) -> Result<(), String> {
    let addrs = host_addresses()?;
    for (name, _, p) in progs {
        p.set_locals(&addrs)
            .map_err(|e| format!("{name}: local-address map: {e}"))?;
    }
    Ok(())
}

/// Every address of this network namespace, deduplicated.
fn host_addresses() -> Result<Vec<IpAddr>, String> {
    let mut nl = crate::dataplane::netlink::Netlink::open().map_err(|e| format!("netlink: {e}"))?;
    let mut v: Vec<IpAddr> = nl
        .addresses()
        .map_err(|e| format!("netlink addresses: {e}"))?
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    v.sort_unstable();
    v.dedup();
    Ok(v)
}
