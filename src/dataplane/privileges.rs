//! Capabilities belong to threads: every long-lived thread (control loop,
//! shards, neighbour resolver) calls [`drop_to_minimum`] when it starts
//! (after attach) or, for the control loop, once its listeners are open.
//!
//! Least privilege: once the XDP program is attached, the AF_XDP sockets
//! bound and the listeners open, the director keeps only the capabilities
//! it still needs (BPF map updates on reload, netlink neighbour requests,
//! raw sockets, locked UMEM memory) and drops every other one, from the
//! bounding set too, so nothing it runs later can regain them.

use caps::{CapSet, Capability, CapsHashSet};

/// What the running director keeps.
pub const KEEP: [Capability; 4] = [
    Capability::CAP_NET_ADMIN,
    Capability::CAP_NET_RAW,
    Capability::CAP_BPF,
    Capability::CAP_IPC_LOCK,
];

/// What `xdpvs run` needs until it has attached: [`KEEP`] and CAP_PERFMON,
/// without which the verifier refuses the XDP program's packet-pointer
/// arithmetic ("pointer arithmetic with it prohibited for !root"); dropped
/// with the rest once the program is loaded. The systemd unit
/// (`packaging/xdpvs.service`) grants exactly these to an unprivileged user
/// (`tests/package.rs` holds the two together).
pub const START: [Capability; 5] = [
    Capability::CAP_NET_ADMIN,
    Capability::CAP_NET_RAW,
    Capability::CAP_BPF,
    Capability::CAP_IPC_LOCK,
    Capability::CAP_PERFMON,
];

/// Drop every capability but [`KEEP`]. Returns what is kept (those the
/// process had), or why dropping failed.
pub fn drop_to_minimum() -> Result<Vec<String>, String> {
    let keep: CapsHashSet = KEEP.iter().copied().collect();
    let had = caps::read(None, CapSet::Permitted).map_err(|e| e.to_string())?;
    // The bounding set first: dropping from it needs CAP_SETPCAP, which the
    // next step removes.
    if had.contains(&Capability::CAP_SETPCAP) {
        for c in caps::all() {
            if !keep.contains(&c) {
                caps::drop(None, CapSet::Bounding, c).map_err(|e| e.to_string())?;
            }
        }
    }
    let kept: CapsHashSet = had.intersection(&keep).copied().collect();
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).map_err(|e| e.to_string())?;
    caps::set(None, CapSet::Effective, &kept).map_err(|e| e.to_string())?;
    caps::set(None, CapSet::Permitted, &kept).map_err(|e| e.to_string())?;
    let mut names: Vec<String> = kept.iter().map(|c| c.to_string()).collect();
    names.sort();
    Ok(names)
}
