//! XDP program and BPF maps.
//!
//! The program is written in C (`bpf/xdpvs.c` over small headers per concern:
//! `types.h`, `maps.h`, `csum.h`, `flow.h`), compiled by `bpf/build.sh` with
//! clang, and its object (`bpf/xdpvs.o`) is committed and embedded here
//! ([`XDPVS_OBJECT`]): building and running xdpvs needs no clang, libbpf or
//! C. [`object`] reads it and links its map references; [`sys`] loads it with
//! raw `bpf()` calls. It forwards established flows the shards offloaded
//! ([`flow`]), sends the other packets the director handles to the AF_XDP
//! socket of the arriving queue, and passes everything else to the kernel.
//!
//! Attaching uses `BPF_LINK_CREATE` (works on the target kernel, 6.18; no
//! netlink `IFLA_XDP` fallback is needed). The [`XdpLink`] detaches the
//! program when dropped; it holds its own reference to the program, so it
//! stays attached even if the [`XdpProgram`] is dropped first.
//!
//! The program is loaded without `BPF_F_XDP_HAS_FRAGS`: native mode on veth
//! refuses to attach (ERANGE) when the peer's MTU exceeds 3506.
//!
//! Map contents are replaced, not merged, by [`XdpProgram::set_vips`] and
//! [`XdpProgram::set_reals`]; callers serialise updates (one control thread).

pub mod asm;
pub mod error;
pub mod flow;
pub mod keys;
pub mod livegen;
pub mod object;
pub mod sys;

use std::collections::{BTreeSet, HashSet};
use std::ffi::CStr;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

pub use error::XdpError;
pub use flow::{FlowCache, InstallBatch};
pub use keys::AddrKey;

/// XDP action: error, drop.
pub const XDP_ABORTED: u32 = 0;
/// XDP action: drop.
pub const XDP_DROP: u32 = 1;
/// XDP action: hand to the kernel stack.
pub const XDP_PASS: u32 = 2;
/// XDP action: bounce out of the same interface.
pub const XDP_TX: u32 = 3;
/// XDP action: redirect (to the AF_XDP socket, or another interface).
pub const XDP_REDIRECT: u32 = 4;

/// The director's XDP program, compiled from `bpf/xdpvs.c`.
pub const XDPVS_OBJECT: &[u8] = include_bytes!("../../bpf/xdpvs.o");
/// A program that passes every frame (`bpf/xdp_pass.c`): what a veth peer
/// needs to receive frames sent with `XDP_TX` or redirected (the lab).
pub const XDP_PASS_OBJECT: &[u8] = include_bytes!("../../bpf/xdp_pass.o");

use crate::service::model::Proto;
use keys::{FLAG_PRESENT, KEY_SIZE, VALUE_SIZE};
use sys::{BpfMap, MapType};

/// Slots of the XSKMAP: one per RX queue.
pub const MAX_QUEUES: u32 = 64;
/// Capacity of `vip_map` (services plus address-only entries).
pub const MAX_VIP_ENTRIES: u32 = 16_384;
/// Capacity of `real_map`.
pub const MAX_REAL_ENTRIES: u32 = 16_384;
/// Most addresses of the director host in `local_map`.
pub const MAX_LOCAL_ENTRIES: u32 = 4_096;
/// Default capacity of `flow_map` (offloaded flows; NAT flows take two).
pub const DEFAULT_FLOW_ENTRIES: u32 = 65_536;
/// Largest frame [`XdpProgram::test_run`] accepts (the kernel's limit is a
/// page minus XDP headroom and tailroom).
pub const MAX_TEST_FRAME: usize = 3_500;

const LICENSE: &CStr = c"GPL";
const PROG_NAME: &str = "xdpvs";

/// How the program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// Generic (skb) mode: `XDP_FLAGS_SKB_MODE`.
    Generic,
    /// Native (driver) mode: `XDP_FLAGS_DRV_MODE`.
    Native,
}

impl XdpMode {
    /// The `XDP_FLAGS_*` value.
    pub const fn flags(self) -> u32 {
        match self {
            XdpMode::Generic => sys::XDP_FLAGS_SKB_MODE,
            XdpMode::Native => sys::XDP_FLAGS_DRV_MODE,
        }
    }
}

/// An attachment of the program to one interface; detaches on drop.
#[derive(Debug)]
pub struct XdpLink {
    fd: OwnedFd,
    ifindex: u32,
    mode: XdpMode,
}

impl XdpLink {
    /// Interface index the program is attached to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Attach mode.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// Kernel id of the link.
    pub fn id(&self) -> Result<u32, XdpError> {
        sys::obj_id(self.fd.as_fd())
    }

    /// Detach now (same as dropping).
    pub fn detach(self) {}
}

/// The loaded program and its maps.
#[derive(Debug)]
pub struct XdpProgram {
    prog: OwnedFd,
    vip_map: BpfMap,
    real_map: BpfMap,
    local_map: BpfMap,
    xsk_map: BpfMap,
    cfg_map: BpfMap,
    flows: FlowCache,
    insn_count: usize,
}

impl XdpProgram {
    /// [`XdpProgram::load_with`] a flow cache of its own, of
    /// [`DEFAULT_FLOW_ENTRIES`].
    pub fn load() -> Result<Self, XdpError> {
        Self::load_with(FlowCache::create(DEFAULT_FLOW_ENTRIES)?)
    }

    /// Create the maps (`xdpvs_vips`, `xdpvs_reals`, `xdpvs_locals`,
    /// `xdpvs_xsks`, `xdpvs_cfg`) and load the program over the flow cache
    /// `flows` (one cache for every interface's program: a NAT flow's
    /// replies arrive on another interface than its requests). The fast path
    /// starts off ([`XdpProgram::set_fast_path`]). Needs CAP_BPF (root).
    pub fn load_with(flows: FlowCache) -> Result<Self, XdpError> {
        let vip_map = BpfMap::create(
            MapType::Hash,
            "xdpvs_vips",
            KEY_SIZE as u32,
            VALUE_SIZE as u32,
            MAX_VIP_ENTRIES,
        )?;
        let real_map = BpfMap::create(
            MapType::Hash,
            "xdpvs_reals",
            KEY_SIZE as u32,
            VALUE_SIZE as u32,
            MAX_REAL_ENTRIES,
        )?;
        let local_map = BpfMap::create(
            MapType::Hash,
            "xdpvs_locals",
            KEY_SIZE as u32,
            VALUE_SIZE as u32,
            MAX_LOCAL_ENTRIES,
        )?;
        let xsk_map = BpfMap::create(MapType::XskMap, "xdpvs_xsks", 4, 4, MAX_QUEUES)?;
        let cfg_map = BpfMap::create(MapType::Array, "xdpvs_cfg", 4, 4, 1)?;
        let obj = object::BpfObject::parse(XDPVS_OBJECT, "xdp")?;
        let fds: std::collections::HashMap<&str, RawFd> = [
            ("vip_map", vip_map.as_fd().as_raw_fd()),
            ("real_map", real_map.as_fd().as_raw_fd()),
            ("local_map", local_map.as_fd().as_raw_fd()),
            ("xsk_map", xsk_map.as_fd().as_raw_fd()),
            ("cfg_map", cfg_map.as_fd().as_raw_fd()),
            ("flow_map", flows.raw_fd()),
            ("dest_map", flows.dests_raw_fd()),
        ]
        .into_iter()
        .collect();
        let insns = obj.link(&fds)?;
        let prog = sys::prog_load(
            sys::BPF_PROG_TYPE_XDP,
            &insns,
            LICENSE,
            PROG_NAME,
            sys::BPF_XDP,
        )?;
        Ok(XdpProgram {
            prog,
            vip_map,
            real_map,
            local_map,
            xsk_map,
            cfg_map,
            flows,
            insn_count: insns.len(),
        })
    }

    /// Turn forwarding from the flow cache on or off (`[director]
    /// fast_path`). Off, every packet takes the AF_XDP path; entries stay.
    pub fn set_fast_path(&self, on: bool) -> Result<(), XdpError> {
        self.cfg_map.update(
            &0u32.to_ne_bytes(),
            &u32::from(on).to_ne_bytes(),
            sys::BPF_ANY,
        )
    }

    /// Whether the fast path is on.
    pub fn fast_path(&self) -> Result<bool, XdpError> {
        let mut v = [0u8; 4];
        self.cfg_map.lookup(&0u32.to_ne_bytes(), &mut v)?;
        Ok(u32::from_ne_bytes(v) != 0)
    }

    /// The flow cache (a handle the shards share).
    pub fn flows(&self) -> &FlowCache {
        &self.flows
    }

    /// Number of instructions loaded.
    pub fn insn_count(&self) -> usize {
        self.insn_count
    }

    /// Kernel id of the program (as `ip link` and `bpftool` show it).
    pub fn prog_id(&self) -> Result<u32, XdpError> {
        sys::obj_id(self.prog.as_fd())
    }

    /// The program fd.
    pub fn prog_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// Attach to `ifindex` with `BPF_LINK_CREATE`.
    pub fn attach(&self, ifindex: u32, mode: XdpMode) -> Result<XdpLink, XdpError> {
        let fd = sys::link_create(self.prog.as_fd(), ifindex, sys::BPF_XDP, mode.flags())?;
        Ok(XdpLink { fd, ifindex, mode })
    }

    fn queue_key(queue: u32) -> Result<[u8; 4], XdpError> {
        if queue >= MAX_QUEUES {
            return Err(XdpError::Queue {
                queue,
                max: MAX_QUEUES,
            });
        }
        Ok(queue.to_ne_bytes())
    }

    /// Send redirected packets of RX queue `queue` to the AF_XDP socket
    /// `xsk_fd` (the map takes its own reference to the socket).
    pub fn register_xsk(&self, queue: u32, xsk_fd: RawFd) -> Result<(), XdpError> {
        let key = Self::queue_key(queue)?;
        self.xsk_map
            .update(&key, &xsk_fd.to_ne_bytes(), sys::BPF_ANY)
    }

    /// Remove the socket of `queue`; its packets then pass to the kernel.
    /// Removing an empty slot is not an error.
    pub fn unregister_xsk(&self, queue: u32) -> Result<(), XdpError> {
        let key = Self::queue_key(queue)?;
        self.xsk_map.delete(&key).map(drop)
    }

    /// Replace `vip_map` with these services (port in host order, 0 for a
    /// port-0 service) plus one address-only entry per distinct address.
    /// Entries added with [`Self::add_vip_addr`] that are not among these
    /// addresses are removed too.
    pub fn set_vips(&self, entries: &[(Proto, IpAddr, u16)]) -> Result<(), XdpError> {
        let mut want: HashSet<[u8; KEY_SIZE]> = HashSet::new();
        for &(proto, addr, port) in entries {
            want.insert(AddrKey::service(proto, addr, port).to_bytes());
            want.insert(AddrKey::addr_only(addr).to_bytes());
        }
        replace(&self.vip_map, &want)
    }

    /// Replace `real_map` with these real servers (NAT replies from
    /// `(addr, proto, port)` are redirected; port 0 matches any port).
    pub fn set_reals(&self, entries: &[(Proto, IpAddr, u16)]) -> Result<(), XdpError> {
        let want: HashSet<[u8; KEY_SIZE]> = entries
            .iter()
            .map(|&(proto, addr, port)| AddrKey::service(proto, addr, port).to_bytes())
            .collect();
        replace(&self.real_map, &want)
    }

    /// Add the address-only entry `(addr, 0, 0)` to `vip_map` (fragments,
    /// extension headers and ICMP errors to `addr` are redirected).
    /// The director host's own addresses: a NAT real server's packet to one
    /// of them (a health probe's answer, the operator's own connection) is
    /// the host's traffic and stays in the kernel.
    pub fn set_locals(&self, addrs: &[IpAddr]) -> Result<(), XdpError> {
        let want: HashSet<[u8; KEY_SIZE]> = addrs
            .iter()
            .map(|&a| AddrKey::addr_only(a).to_bytes())
            .collect();
        replace(&self.local_map, &want)
    }

    pub fn locals(&self) -> Result<Vec<AddrKey>, XdpError> {
        read_keys(&self.local_map)
    }

    pub fn add_vip_addr(&self, addr: IpAddr) -> Result<(), XdpError> {
        self.vip_map.update(
            &AddrKey::addr_only(addr).to_bytes(),
            &[FLAG_PRESENT],
            sys::BPF_ANY,
        )
    }

    /// Remove the address-only entry of `addr`; returns whether it existed.
    pub fn remove_vip_addr(&self, addr: IpAddr) -> Result<bool, XdpError> {
        self.vip_map.delete(&AddrKey::addr_only(addr).to_bytes())
    }

    /// Current `vip_map` keys, sorted.
    pub fn vips(&self) -> Result<Vec<AddrKey>, XdpError> {
        read_keys(&self.vip_map)
    }

    /// Current `real_map` keys, sorted.
    pub fn reals(&self) -> Result<Vec<AddrKey>, XdpError> {
        read_keys(&self.real_map)
    }

    /// Run the program once on `frame` with `BPF_PROG_TEST_RUN` and return
    /// the XDP action. `ifindex` 0 means the kernel's default (loopback,
    /// queue 0, so `rx_queue` must then be 0); otherwise `ifindex` must be a
    /// device in the caller's network namespace with more than `rx_queue`
    /// RX queues (the kernel checks).
    pub fn test_run(&self, frame: &[u8], ifindex: u32, rx_queue: u32) -> Result<u32, XdpError> {
        let ctx = test_ctx(frame, ifindex, rx_queue)?;
        let run = sys::prog_test_run(self.prog.as_fd(), frame, Some(&ctx), 1, None)?;
        Ok(run.retval)
    }

    /// [`XdpProgram::test_run`] that also returns the frame as the program
    /// left it (rewritten, for a forwarded packet).
    pub fn test_run_frame(
        &self,
        frame: &[u8],
        ifindex: u32,
        rx_queue: u32,
    ) -> Result<(u32, Vec<u8>), XdpError> {
        let ctx = test_ctx(frame, ifindex, rx_queue)?;
        let mut out = vec![0u8; MAX_TEST_FRAME + 256];
        let run = sys::prog_test_run(self.prog.as_fd(), frame, Some(&ctx), 1, Some(&mut out))?;
        out.truncate(run.data_out);
        Ok((run.retval, out))
    }
}

/// The `struct xdp_md` of a test run of `frame` (size checked): data,
/// data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
fn test_ctx(frame: &[u8], ifindex: u32, rx_queue: u32) -> Result<[u8; 24], XdpError> {
    if !(14..=MAX_TEST_FRAME).contains(&frame.len()) {
        return Err(XdpError::FrameSize {
            len: frame.len(),
            min: 14,
            max: MAX_TEST_FRAME,
        });
    }
    let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, rx_queue, 0];
    let mut ctx = [0u8; 24];
    for (dst, v) in ctx.chunks_exact_mut(4).zip(md) {
        dst.copy_from_slice(&v.to_ne_bytes());
    }
    Ok(ctx)
}

fn read_keys(map: &BpfMap) -> Result<Vec<AddrKey>, XdpError> {
    let mut out: BTreeSet<AddrKey> = BTreeSet::new();
    for k in map.keys()? {
        if let Ok(b) = <[u8; KEY_SIZE]>::try_from(k.as_slice()) {
            out.insert(AddrKey::from_bytes(&b));
        }
    }
    Ok(out.into_iter().collect())
}

/// Make `map` hold exactly `want`: add missing keys, delete stale ones. New
/// keys go in before stale ones go out, unless that would overflow the map.
fn replace(map: &BpfMap, want: &HashSet<[u8; KEY_SIZE]>) -> Result<(), XdpError> {
    if want.len() > map.max_entries() as usize {
        return Err(XdpError::Capacity {
            map: map.name().to_owned(),
            max: map.max_entries(),
            wanted: want.len(),
        });
    }
    let have: HashSet<[u8; KEY_SIZE]> = map
        .keys()?
        .iter()
        .filter_map(|k| <[u8; KEY_SIZE]>::try_from(k.as_slice()).ok())
        .collect();
    let stale: Vec<&[u8; KEY_SIZE]> = have.difference(want).collect();
    let fresh: Vec<&[u8; KEY_SIZE]> = want.difference(&have).collect();
    let delete_first = have.len() + fresh.len() > map.max_entries() as usize;
    let delete = |keys: &[&[u8; KEY_SIZE]]| -> Result<(), XdpError> {
        for k in keys {
            map.delete(k.as_slice())?;
        }
        Ok(())
    };
    if delete_first {
        delete(&stale)?;
    }
    for k in &fresh {
        map.update(k.as_slice(), &[FLAG_PRESENT], sys::BPF_ANY)?;
    }
    if !delete_first {
        delete(&stale)?;
    }
    Ok(())
}
