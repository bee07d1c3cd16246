//! A minimal NETLINK_ROUTE client (hand-written on libc): link, route and
//! neighbour dumps, single route lookups and neighbour probes. Message
//! parsing is pure and bounds-checked.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// Message types and flags (linux/netlink.h, linux/rtnetlink.h).
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
/// RTM_NEWLINK.
pub const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
/// RTM_NEWROUTE.
pub const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
/// RTM_NEWADDR.
pub const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// RTM_NEWNEIGH.
pub const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;

/// Main routing table id.
pub const RT_TABLE_MAIN: u32 = 254;
/// Unicast route type.
pub const RTN_UNICAST: u8 = 1;
/// `ndm_flags` bit: "use" the entry, i.e. trigger resolution.
pub const NTF_USE: u8 = 0x01;

/// Neighbour states (linux/neighbour.h).
pub mod nud {
    pub const INCOMPLETE: u16 = 0x01;
    pub const REACHABLE: u16 = 0x02;
    pub const STALE: u16 = 0x04;
    pub const DELAY: u16 = 0x08;
    pub const PROBE: u16 = 0x10;
    pub const FAILED: u16 = 0x20;
    pub const NOARP: u16 = 0x40;
    pub const PERMANENT: u16 = 0x80;
    /// States whose link-layer address can be used.
    pub const VALID: u16 = REACHABLE | STALE | DELAY | PROBE | NOARP | PERMANENT;
}

const HDR: usize = 16;

/// Netlink errors.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// Socket I/O failed.
    #[error("netlink I/O: {0}")]
    Io(#[from] io::Error),
    /// The kernel answered with an error (positive errno).
    #[error("netlink request failed: {}", io::Error::from_raw_os_error(*.0))]
    Kernel(i32),
    /// A message did not parse.
    #[error("malformed netlink message: {0}")]
    Malformed(&'static str),
}

/// One parsed netlink message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NlMsg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_ne_bytes)
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_ne_bytes)
}

/// Split a datagram into netlink messages.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Result<NlMsg<'_>, NetlinkError>> + '_ {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        if off >= buf.len() {
            return None;
        }
        let rest = buf.get(off..)?;
        let parsed = (|| {
            let len = u32_at(rest, 0)? as usize;
            if len < HDR || len > rest.len() {
                return None;
            }
            Some(NlMsg {
                ty: u16_at(rest, 4)?,
                flags: u16_at(rest, 6)?,
                seq: u32_at(rest, 8)?,
                payload: rest.get(HDR..len)?,
            })
        })();
        match parsed {
            Some(m) => {
                off += align4(m.payload.len() + HDR);
                Some(Ok(m))
            }
            None => {
                off = buf.len();
                Some(Err(NetlinkError::Malformed("bad nlmsghdr length")))
            }
        }
    })
}

/// Iterate over the (type, value) attributes in `buf`; stops at the first
/// malformed one. The nested/byte-order bits are masked off the type.
pub fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> + '_ {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(buf, off)?);
        let ty = u16_at(buf, off + 2)? & 0x3fff;
        if len < 4 {
            return None;
        }
        let val = buf.get(off + 4..off + len)?;
        off += align4(len);
        Some((ty, val))
    })
}

fn ip_from(family: u8, b: &[u8]) -> Option<IpAddr> {
    match (i32::from(family), b.len()) {
        (libc::AF_INET, 4) => <[u8; 4]>::try_from(b)
            .ok()
            .map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        (libc::AF_INET6, 16) => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

fn mac_from(b: &[u8]) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    if b.len() != 6 {
        return None;
    }
    m.copy_from_slice(b);
    Some(m)
}

/// An interface as RTM_NEWLINK describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub ifindex: u32,
    pub name: String,
    /// Ethernet address (`None` for non-Ethernet links such as `lo` tunnels).
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
}

/// A unicast route of the main table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// Destination prefix (`0.0.0.0`/`::` for a default route).
    pub dst: IpAddr,
    pub prefix_len: u8,
    pub oif: u32,
    /// `None` for on-link (directly connected) prefixes.
    pub gateway: Option<IpAddr>,
    pub metric: u32,
    pub table: u32,
    pub route_type: u8,
}

/// A neighbour table entry with a link-layer address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighEntry {
    pub ifindex: u32,
    pub addr: IpAddr,
    pub mac: [u8; 6],
    /// NUD state bits (see [`nud`]).
    pub state: u16,
}

/// Parse an RTM_NEWLINK payload.
pub fn parse_link(p: &[u8]) -> Option<LinkInfo> {
    let ifindex = u32_at(p, 4)?;
    let mut l = LinkInfo {
        ifindex,
        name: String::new(),
        mac: None,
        mtu: 0,
    };
    for (ty, v) in attrs(p.get(16..)?) {
        match ty {
            IFLA_ADDRESS => l.mac = mac_from(v),
            IFLA_IFNAME => {
                let v = v.split(|&c| c == 0).next().unwrap_or(v);
                l.name = String::from_utf8_lossy(v).into_owned();
            }
            IFLA_MTU => l.mtu = u32_at(v, 0).unwrap_or(0),
            _ => {}
        }
    }
    Some(l)
}

/// Parse an RTM_NEWROUTE payload (first hop of a multipath route).
pub fn parse_route(p: &[u8]) -> Option<RouteEntry> {
    let family = *p.first()?;
    let dst_len = *p.get(1)?;
    let table = *p.get(4)?;
    let route_type = *p.get(7)?;
    let unspec = match i32::from(family) {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut r = RouteEntry {
        dst: unspec,
        prefix_len: dst_len,
        oif: 0,
        gateway: None,
        metric: 0,
        table: u32::from(table),
        route_type,
    };
    for (ty, v) in attrs(p.get(12..)?) {
        match ty {
            RTA_DST => r.dst = ip_from(family, v)?,
            RTA_OIF => r.oif = u32_at(v, 0)?,
            RTA_GATEWAY => r.gateway = ip_from(family, v),
            RTA_PRIORITY => r.metric = u32_at(v, 0).unwrap_or(0),
            RTA_TABLE => r.table = u32_at(v, 0).unwrap_or(r.table),
            RTA_MULTIPATH if r.oif == 0 => {
                // struct rtnexthop { u16 len; u8 flags; u8 hops; i32 ifindex; } + attrs
                let nh_len = usize::from(u16_at(v, 0)?);
                r.oif = u32_at(v, 4)?;
                if let Some(nh_attrs) = v.get(8..nh_len.max(8)) {
                    for (t, a) in attrs(nh_attrs) {
                        if t == RTA_GATEWAY {
                            r.gateway = ip_from(family, a);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Some(r)
}

/// Parse an RTM_NEWADDR payload: `(ifindex, local address)`. IPv4 names
/// the local end in IFA_LOCAL (IFA_ADDRESS is the peer on a point-to-point
/// link); IPv6 has only IFA_ADDRESS.
pub fn parse_addr(p: &[u8]) -> Option<(u32, IpAddr)> {
    let family = *p.first()?;
    let ifindex = u32_at(p, 4)?;
    let mut address = None;
    let mut local = None;
    for (ty, v) in attrs(p.get(8..)?) {
        match ty {
            IFA_ADDRESS => address = ip_from(family, v),
            IFA_LOCAL => local = ip_from(family, v),
            _ => {}
        }
    }
    Some((ifindex, local.or(address)?))
}

/// Parse an RTM_NEWNEIGH payload; `None` without a 6-byte link-layer address.
pub fn parse_neigh(p: &[u8]) -> Option<NeighEntry> {
    let family = *p.first()?;
    let ifindex = u32_at(p, 4)?;
    let state = u16_at(p, 8)?;
    let mut addr = None;
    let mut mac = None;
    for (ty, v) in attrs(p.get(12..)?) {
        match ty {
            NDA_DST => addr = ip_from(family, v),
            NDA_LLADDR => mac = mac_from(v),
            _ => {}
        }
    }
    Some(NeighEntry {
        ifindex,
        addr: addr?,
        mac: mac?,
        state,
    })
}

/// Build one request: header, fixed family header, attributes.
pub fn build(ty: u16, flags: u16, seq: u32, fixed: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; HDR];
    m.extend_from_slice(fixed);
    m.resize(align4(m.len()), 0);
    for (t, v) in attrs {
        let len = (4 + v.len()) as u16;
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&t.to_ne_bytes());
        m.extend_from_slice(v);
        m.resize(align4(m.len()), 0);
    }
    let total = m.len() as u32;
    let mut head = Vec::with_capacity(12);
    head.extend_from_slice(&total.to_ne_bytes());
    head.extend_from_slice(&ty.to_ne_bytes());
    head.extend_from_slice(&flags.to_ne_bytes());
    head.extend_from_slice(&seq.to_ne_bytes());
    if let Some(h) = m.get_mut(0..12) {
        h.copy_from_slice(&head);
    }
    m
}

fn ip_bytes(a: IpAddr) -> (u8, Vec<u8>) {
    match a {
        IpAddr::V4(v) => (libc::AF_INET as u8, v.octets().to_vec()),
        IpAddr::V6(v) => (libc::AF_INET6 as u8, v.octets().to_vec()),
    }
}

/// A NETLINK_ROUTE socket in the caller's network namespace.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Open and bind the socket (1 s receive timeout).
    pub fn open() -> Result<Self, NetlinkError> {
        // SAFETY: plain socket creation; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: `fd` is fresh and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: zeroed sockaddr_nl is a valid value (pid 0: kernel assigns).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: binding our socket to a correctly sized sockaddr_nl.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error().into());
        }
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: setting SO_RCVTIMEO with a timeval of the right size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Ok(Netlink {
            fd,
            seq: 1,
            buf: vec![0u8; 64 * 1024],
        })
    }

    fn send(&mut self, msg: &[u8]) -> Result<(), NetlinkError> {
        // SAFETY: zeroed sockaddr_nl addresses the kernel (pid 0).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: `msg` is a valid buffer; `sa` is a correctly sized address.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(())
    }

    fn recv(&mut self) -> Result<usize, NetlinkError> {
        loop {
            // SAFETY: receiving into our own buffer of `len` bytes.
            let r = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            return Ok(r as usize);
        }
    }

    /// Send a request and collect the payloads of replies of type `want`
    /// until the dump ends (or, without `NLM_F_DUMP`, until the reply/ACK).
    fn transact(
        &mut self,
        ty: u16,
        flags: u16,
        fixed: &[u8],
        attrs: &[(u16, &[u8])],
        want: u16,
    ) -> Result<Vec<Vec<u8>>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = build(ty, flags | NLM_F_REQUEST, seq, fixed, attrs);
        self.send(&msg)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        // Bounded: a dump of a huge table still ends with NLMSG_DONE.
        for _ in 0..100_000 {
            let n = self.recv()?;
            let data = self.buf.get(..n).unwrap_or(&[]);
            let mut finished = false;
            for m in messages(data) {
                let m = m?;
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => finished = true,
                    NLMSG_ERROR => {
                        let code = u32_at(m.payload, 0)
                            .ok_or(NetlinkError::Malformed("short nlmsgerr"))?
                            as i32;
                        if code != 0 {
                            return Err(NetlinkError::Kernel(-code));
                        }
                        finished = true;
                    }
                    t if t == want => {
                        out.push(m.payload.to_vec());
                        if !dump && m.flags & NLM_F_MULTI == 0 && flags & NLM_F_ACK == 0 {
                            finished = true;
                        }
                    }
                    _ => {}
                }
            }
            if finished {
                return Ok(out);
            }
        }
        Err(NetlinkError::Malformed("netlink reply never ended"))
    }

    /// All interfaces.
    pub fn links(&mut self) -> Result<Vec<LinkInfo>, NetlinkError> {
        let fixed = [0u8; 16];
        let r = self.transact(RTM_GETLINK, NLM_F_DUMP, &fixed, &[], RTM_NEWLINK)?;
        Ok(r.iter().filter_map(|p| parse_link(p)).collect())
    }

    /// Unicast routes of the main table, IPv4 and IPv6.
    pub fn routes(&mut self) -> Result<Vec<RouteEntry>, NetlinkError> {
        let fixed = [0u8; 12];
        let r = self.transact(RTM_GETROUTE, NLM_F_DUMP, &fixed, &[], RTM_NEWROUTE)?;
        Ok(r.iter()
            .filter_map(|p| parse_route(p))
            .filter(|r| r.table == RT_TABLE_MAIN && r.route_type == RTN_UNICAST)
            .collect())
    }

    /// Every address of every interface of this namespace, IPv4 and IPv6.
    pub fn addresses(&mut self) -> Result<Vec<(u32, IpAddr)>, NetlinkError> {
        let fixed = [0u8; 8];
        let r = self.transact(RTM_GETADDR, NLM_F_DUMP, &fixed, &[], RTM_NEWADDR)?;
        Ok(r.iter().filter_map(|p| parse_addr(p)).collect())
    }

    /// Neighbour entries that carry a link-layer address (any state).
    pub fn neighbours(&mut self) -> Result<Vec<NeighEntry>, NetlinkError> {
        let fixed = [0u8; 12];
        let r = self.transact(RTM_GETNEIGH, NLM_F_DUMP, &fixed, &[], RTM_NEWNEIGH)?;
        Ok(r.iter().filter_map(|p| parse_neigh(p)).collect())
    }

    /// Ask the kernel for the route to `addr` (`ip route get`).
    pub fn route_get(&mut self, addr: IpAddr) -> Result<Option<RouteEntry>, NetlinkError> {
        let (family, bytes) = ip_bytes(addr);
        let mut fixed = [0u8; 12];
        fixed[0] = family;
        fixed[1] = (bytes.len() * 8) as u8;
        let r = match self.transact(RTM_GETROUTE, 0, &fixed, &[(RTA_DST, &bytes)], RTM_NEWROUTE) {
            Ok(r) => r,
            Err(NetlinkError::Kernel(e)) if e == libc::ENETUNREACH || e == libc::EHOSTUNREACH => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        Ok(r.first().and_then(|p| parse_route(p)))
    }

    /// Make the kernel resolve `addr` on `ifindex` (RTM_NEWNEIGH with
    /// NTF_USE: creates the entry if needed and sends a solicitation).
    pub fn probe_neighbour(&mut self, ifindex: u32, addr: IpAddr) -> Result<(), NetlinkError> {
        let (family, bytes) = ip_bytes(addr);
        let mut fixed = [0u8; 12];
        fixed[0] = family;
        fixed[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        fixed[10] = NTF_USE;
        self.transact(
            RTM_NEWNEIGH,
            NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK,
            &fixed,
            &[(NDA_DST, &bytes)],
            RTM_NEWNEIGH,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(t: u16, v: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&t.to_ne_bytes());
        a.extend_from_slice(v);
        a.resize(align4(a.len()), 0);
        a
    }

    #[test]
    fn build_then_parse_round_trips() {
        let m = build(
            RTM_GETROUTE,
            NLM_F_REQUEST,
            42,
            &[2, 32, 0, 0],
            &[(RTA_DST, &[1, 2, 3])],
        );
        assert_eq!(m.len() % 4, 0);
        let parsed: Vec<_> = messages(&m).collect::<Result<_, _>>().expect("parse");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].ty, RTM_GETROUTE);
        assert_eq!(parsed[0].seq, 42);
        let a: Vec<_> = attrs(&parsed[0].payload[4..]).collect();
        assert_eq!(a, vec![(RTA_DST, &[1u8, 2, 3][..])]);
    }

    #[test]
    fn messages_rejects_bad_lengths() {
        let mut m = build(RTM_GETLINK, 0, 1, &[0; 16], &[]);
        m[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(messages(&m).next().is_some_and(|r| r.is_err()));
        m[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(messages(&m).next().is_some_and(|r| r.is_err()));
        assert!(messages(&m[..10]).next().is_some_and(|r| r.is_err()));
    }

    #[test]
    fn attrs_stop_at_truncation() {
        let mut b = attr(1, &[9; 4]);
        b.extend(attr(2, &[8; 8]));
        b.truncate(b.len() - 2);
        let a: Vec<_> = attrs(&b).collect();
        assert_eq!(a.len(), 1);
        let zero_len = [0u8, 0, 1, 0];
        assert_eq!(attrs(&zero_len).count(), 0);
    }

    #[test]
    fn parses_link() {
        let mut p = vec![0u8; 16];
        p[4..8].copy_from_slice(&7u32.to_ne_bytes());
        p.extend(attr(IFLA_IFNAME, b"dr0\0"));
        p.extend(attr(IFLA_MTU, &1500u32.to_ne_bytes()));
        p.extend(attr(IFLA_ADDRESS, &[2, 0, 0, 0, 0, 1]));
        let l = parse_link(&p).expect("link");
        assert_eq!(
            l,
            LinkInfo {
                ifindex: 7,
                name: "dr0".into(),
                mac: Some([2, 0, 0, 0, 0, 1]),
                mtu: 1500
            }
        );
    }

    #[test]
    fn parses_route_with_gateway_and_multipath() {
        let mut p = vec![
            libc::AF_INET as u8,
            24,
            0,
            0,
            254,
            4,
            0,
            RTN_UNICAST,
            0,
            0,
            0,
            0,
        ];
        p.extend(attr(RTA_DST, &[198, 18, 5, 0]));
        p.extend(attr(RTA_OIF, &3u32.to_ne_bytes()));
        p.extend(attr(RTA_GATEWAY, &[198, 18, 0, 1]));
        let r = parse_route(&p).expect("route");
        assert_eq!(r.dst, IpAddr::from([198, 18, 5, 0]));
        assert_eq!(r.prefix_len, 24);
        assert_eq!(r.oif, 3);
        assert_eq!(r.gateway, Some(IpAddr::from([198, 18, 0, 1])));
        assert_eq!(r.table, RT_TABLE_MAIN);

        let mut p = vec![
            libc::AF_INET as u8,
            0,
            0,
            0,
            254,
            4,
            0,
            RTN_UNICAST,
            0,
            0,
            0,
            0,
        ];
        let mut nh = vec![0u8; 8];
        nh[4..8].copy_from_slice(&9u32.to_ne_bytes());
        nh.extend(attr(RTA_GATEWAY, &[198, 18, 0, 9]));
        let l = nh.len() as u16;
        nh[0..2].copy_from_slice(&l.to_ne_bytes());
        p.extend(attr(RTA_MULTIPATH, &nh));
        let r = parse_route(&p).expect("route");
        assert_eq!(r.oif, 9);
        assert_eq!(r.gateway, Some(IpAddr::from([198, 18, 0, 9])));
        assert_eq!(r.dst, IpAddr::from([0, 0, 0, 0]));
    }

    #[test]
    fn parses_neigh_and_requires_lladdr() {
        let mut p = vec![libc::AF_INET6 as u8, 0, 0, 0];
        p.extend_from_slice(&4u32.to_ne_bytes());
        p.extend_from_slice(&nud::REACHABLE.to_ne_bytes());
        p.extend_from_slice(&[0, 0]);
        let a6: Ipv6Addr = "2001:db8::11".parse().expect("addr");
        p.extend(attr(NDA_DST, &a6.octets()));
        let without = p.clone();
        p.extend(attr(NDA_LLADDR, &[2, 1, 2, 3, 4, 5]));
        let n = parse_neigh(&p).expect("neigh");
        assert_eq!(n.addr, IpAddr::V6(a6));
        assert_eq!(n.ifindex, 4);
        assert_eq!(n.mac, [2, 1, 2, 3, 4, 5]);
        assert_eq!(n.state, nud::REACHABLE);
        assert_eq!(parse_neigh(&without), None);
    }

    #[test]
    fn truncated_payloads_do_not_parse() {
        assert_eq!(parse_route(&[2, 24, 0]), None);
        assert_eq!(parse_neigh(&[2, 0, 0, 0, 1]), None);
        assert_eq!(parse_link(&[0; 5]), None);
        // Wrong address length for the family.
        let mut p = vec![
            libc::AF_INET as u8,
            24,
            0,
            0,
            254,
            4,
            0,
            RTN_UNICAST,
            0,
            0,
            0,
            0,
        ];
        p.extend(attr(RTA_DST, &[198, 18, 5]));
        assert_eq!(parse_route(&p), None);
    }
}
