//! Hand-rolled packet builders for the wire tests. Independent of
//! `xdpvs::wire` (own naive checksum) so that a bug there cannot hide in
//! both the code under test and the expected bytes.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const NH_SRC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x10];
pub const NH_DST: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 0x20];

/// Naive one's-complement sum of 16-bit big-endian words.
pub fn naive_sum(data: &[u8], mut s: u32) -> u32 {
    let mut i = 0;
    while i < data.len() {
        let hi = u32::from(data[i]) << 8;
        let lo = if i + 1 < data.len() {
            u32::from(data[i + 1])
        } else {
            0
        };
        s += hi | lo;
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        i += 2;
    }
    s
}

pub fn naive_csum(data: &[u8], init: u32) -> u16 {
    !(naive_sum(data, init) as u16)
}

pub fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    let mut b = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            b.extend_from_slice(&s.octets());
            b.extend_from_slice(&d.octets());
            b.extend_from_slice(&[0, proto]);
            b.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            b.extend_from_slice(&s.octets());
            b.extend_from_slice(&d.octets());
            b.extend_from_slice(&(len as u32).to_be_bytes());
            b.extend_from_slice(&[0, 0, 0, proto]);
        }
        _ => panic!("mixed families"),
    }
    naive_sum(&b, 0)
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Ethernet header (+ VLAN tags given as (tpid, tci)) + payload.
pub fn eth(dst: [u8; 6], src: [u8; 6], tags: &[(u16, u16)], et: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    for &(tpid, tci) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&et.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Ethernet with the test's client-side MACs.
pub fn eth_in(tags: &[(u16, u16)], et: u16, payload: &[u8]) -> Vec<u8> {
    eth(MAC_B, MAC_A, tags, et, payload)
}

/// Ethernet as the rewrites emit it (next hop MACs, untagged).
pub fn eth_out(et: u16, payload: &[u8]) -> Vec<u8> {
    eth(NH_DST, NH_SRC, &[], et, payload)
}

pub fn et_of(a: IpAddr) -> u16 {
    if a.is_ipv6() {
        0x86dd
    } else {
        0x0800
    }
}

#[derive(Clone, Debug)]
pub struct V4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub tos: u8,
    pub id: u16,
    /// Flags and fragment offset word.
    pub frag: u16,
    pub opts: Vec<u8>,
    /// Override the total length (None: computed).
    pub total_len: Option<u16>,
}

impl V4 {
    pub fn new(src: &str, dst: &str, proto: u8) -> V4 {
        V4 {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            ttl: 61,
            tos: 0x10,
            id: 0x4d2,
            frag: 0x4000,
            opts: Vec::new(),
            total_len: None,
        }
    }

    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        assert_eq!(self.opts.len() % 4, 0);
        let hlen = 20 + self.opts.len();
        let total = self.total_len.unwrap_or((hlen + payload.len()) as u16);
        let mut h = vec![0x40 | (hlen / 4) as u8, self.tos];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&self.id.to_be_bytes());
        h.extend_from_slice(&self.frag.to_be_bytes());
        h.extend_from_slice(&[self.ttl, self.proto, 0, 0]);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        h.extend_from_slice(&self.opts);
        let c = naive_csum(&h, 0);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(payload);
        h
    }
}

#[derive(Clone, Debug)]
pub struct V6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next: u8,
    pub hlim: u8,
    pub tc: u8,
    pub flow: u32,
    /// Raw extension header bytes (already chained; `next` names the first).
    pub ext: Vec<u8>,
}

impl V6 {
    pub fn new(src: &str, dst: &str, next: u8) -> V6 {
        V6 {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            next,
            hlim: 63,
            tc: 0x28,
            flow: 0x12345,
            ext: Vec::new(),
        }
    }

    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let plen = (self.ext.len() + payload.len()) as u16;
        let w = (6u32 << 28) | (u32::from(self.tc) << 20) | self.flow;
        let mut h = w.to_be_bytes().to_vec();
        h.extend_from_slice(&plen.to_be_bytes());
        h.extend_from_slice(&[self.next, self.hlim]);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        h.extend_from_slice(&self.ext);
        h.extend_from_slice(payload);
        h
    }
}

/// A generic extension header (hop-by-hop / routing / dest opts):
/// `(len8 + 1) * 8` bytes.
pub fn ext_hdr(next: u8, len8: u8) -> Vec<u8> {
    let mut v = vec![next, len8];
    // PadN option filling the rest (valid for HBH/DO).
    let rest = (usize::from(len8) + 1) * 8 - 2;
    v.push(1);
    v.push((rest - 2) as u8);
    v.resize(2 + rest, 0);
    v
}

/// An IPv6 fragment header.
pub fn frag_hdr(next: u8, offset: u16, more: bool, ident: u32) -> Vec<u8> {
    let mut v = vec![next, 0];
    v.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
    v.extend_from_slice(&ident.to_be_bytes());
    v
}

/// TCP segment with a correct checksum for `src -> dst`.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    flags: u8,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0);
    let hlen = 20 + opts.len();
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&0x1122_3344u32.to_be_bytes());
    t.extend_from_slice(&0x5566_7788u32.to_be_bytes());
    t.push(((hlen / 4) as u8) << 4);
    t.push(flags);
    t.extend_from_slice(&64240u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(opts);
    t.extend_from_slice(payload);
    let c = naive_csum(&t, pseudo(src, dst, 6, t.len()));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// UDP datagram; checksum computed (0 -> 0xffff) unless `no_csum`.
pub fn udp(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    payload: &[u8],
    no_csum: bool,
) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&(len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    if !no_csum {
        let mut c = naive_csum(&u, pseudo(src, dst, 17, len));
        if c == 0 {
            c = 0xffff;
        }
        u[6..8].copy_from_slice(&c.to_be_bytes());
    }
    u
}

/// ICMPv4 message with checksum.
pub fn icmp4(t: u8, code: u8, rest: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![t, code, 0, 0];
    m.extend_from_slice(&rest.to_be_bytes());
    m.extend_from_slice(payload);
    let c = naive_csum(&m, 0);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// ICMPv6 message with checksum for `src -> dst`.
pub fn icmp6(src: IpAddr, dst: IpAddr, t: u8, code: u8, rest: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![t, code, 0, 0];
    m.extend_from_slice(&rest.to_be_bytes());
    m.extend_from_slice(payload);
    let c = naive_csum(&m, pseudo(src, dst, 58, m.len()));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

pub fn payload(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed))
        .collect()
}

/// Full-recomputation check of every checksum in an untagged or tagged
/// Ethernet frame: IPv4 header, TCP, UDP (0 allowed on IPv4), ICMPv4,
/// ICMPv6, the quoted IPv4 header of an ICMP error, and for IP-in-IP/GUE
/// the inner packet too. Fragments are skipped for L4. Panics with a
/// message on the first failure.
pub fn verify_frame(f: &[u8]) {
    let mut off = 12;
    let mut et = u16::from_be_bytes([f[off], f[off + 1]]);
    off += 2;
    while et == 0x8100 || et == 0x88a8 || et == 0x9100 {
        et = u16::from_be_bytes([f[off + 2], f[off + 3]]);
        off += 4;
    }
    verify_ip(&f[off..], et == 0x86dd);
}

pub fn verify_ip(p: &[u8], v6: bool) {
    let (src, dst, proto, l4, frag) = if v6 {
        assert_eq!(p[0] >> 4, 6, "v6 version");
        let plen = usize::from(u16::from_be_bytes([p[4], p[5]]));
        let src = IpAddr::V6(<[u8; 16]>::try_from(&p[8..24]).unwrap().into());
        let dst = IpAddr::V6(<[u8; 16]>::try_from(&p[24..40]).unwrap().into());
        let mut nh = p[6];
        let mut o = 40;
        let mut frag = false;
        loop {
            match nh {
                0 | 43 | 60 => {
                    let l = (usize::from(p[o + 1]) + 1) * 8;
                    nh = p[o];
                    o += l;
                }
                44 => {
                    let w = u16::from_be_bytes([p[o + 2], p[o + 3]]);
                    frag = w != 0;
                    nh = p[o];
                    o += 8;
                }
                _ => break,
            }
        }
        (src, dst, nh, &p[o..40 + plen], frag)
    } else {
        assert_eq!(p[0] >> 4, 4, "v4 version");
        let hlen = usize::from(p[0] & 0xf) * 4;
        assert_eq!(naive_sum(&p[..hlen], 0), 0xffff, "IPv4 header checksum");
        let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
        let src = IpAddr::V4(<[u8; 4]>::try_from(&p[12..16]).unwrap().into());
        let dst = IpAddr::V4(<[u8; 4]>::try_from(&p[16..20]).unwrap().into());
        let frag = u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0;
        (src, dst, p[9], &p[hlen..total], frag)
    };
    if frag {
        return;
    }
    match proto {
        6 => assert_eq!(
            naive_sum(l4, pseudo(src, dst, 6, l4.len())),
            0xffff,
            "TCP checksum"
        ),
        17 => {
            let c = u16::from_be_bytes([l4[6], l4[7]]);
            if c != 0 || v6 {
                assert_ne!(c, 0, "UDP over IPv6 needs a checksum");
                assert_eq!(
                    naive_sum(l4, pseudo(src, dst, 17, l4.len())),
                    0xffff,
                    "UDP checksum"
                );
            }
            // GUE: the UDP payload is an IP packet.
            if l4.len() > 8 + 20 && (l4[8] >> 4 == 4 || l4[8] >> 4 == 6) && is_gue_port(l4) {
                verify_ip(&l4[8..], l4[8] >> 4 == 6);
            }
        }
        1 if !v6 => {
            assert_eq!(naive_sum(l4, 0), 0xffff, "ICMPv4 checksum");
            if matches!(l4[0], 3 | 11 | 12) {
                let q = &l4[8..];
                let qh = usize::from(q[0] & 0xf) * 4;
                assert_eq!(naive_sum(&q[..qh], 0), 0xffff, "quoted IPv4 checksum");
            }
        }
        58 if v6 => assert_eq!(
            naive_sum(l4, pseudo(src, dst, 58, l4.len())),
            0xffff,
            "ICMPv6 checksum"
        ),
        4 => verify_ip(l4, false),
        41 => verify_ip(l4, true),
        _ => {}
    }
}

pub const GUE_PORT: u16 = 6080;

fn is_gue_port(l4: &[u8]) -> bool {
    u16::from_be_bytes([l4[2], l4[3]]) == GUE_PORT
}
