//! Property tests: header emit/parse round trips, incremental checksum
//! updates equal full recomputation, and random packets rewritten by NAT
//! equal the same packets built from scratch with the new addresses.

mod wire_builder;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use wire_builder::*;
use xdpvs::shard::forward;
use xdpvs::shard::nexthop::NextHop;
use xdpvs::shard::verdict::Frame;
use xdpvs::wire::checksum::{checksum, csum_replace16, csum_replace2, csum_replace4, CsumDelta};
use xdpvs::wire::*;

fn nh() -> NextHop {
    NextHop {
        ifindex: 1,
        src_mac: NH_SRC,
        dst_mac: NH_DST,
        mtu: 9000,
    }
}

/// 256 cases, or `PROPTEST_CASES` for a longer run.
fn cfg() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

// ---------- header round trips ----------

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn ethernet_round_trip(dst in any::<[u8; 6]>(), src in any::<[u8; 6]>(), et in any::<u16>()) {
        let r = EthernetRepr { dst, src, ethertype: et };
        let mut b = [0u8; 14];
        r.emit(&mut b).unwrap();
        prop_assert_eq!(EthernetRepr::parse(&EthernetFrame::new_checked(&b[..]).unwrap()), r);
    }

    #[test]
    fn ipv4_round_trip(
        src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), protocol in any::<u8>(),
        ttl in any::<u8>(), tos in any::<u8>(), ident in any::<u16>(), df in any::<bool>(),
        payload_len in 0u16..200,
    ) {
        let r = Ipv4Repr {
            src: src.into(), dst: dst.into(), protocol, ttl, tos, ident, dont_frag: df, payload_len,
        };
        let mut b = vec![0u8; 20 + usize::from(payload_len)];
        r.emit(&mut b).unwrap();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        prop_assert!(p.verify_checksum());
        prop_assert_eq!(p.checksum(), naive_csum(&{ let mut h = b[..20].to_vec(); h[10] = 0; h[11] = 0; h }, 0));
        prop_assert_eq!(Ipv4Repr::parse(&p), r);
        prop_assert!(!p.is_fragment());
    }

    #[test]
    fn ipv6_round_trip(
        src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), next_header in any::<u8>(),
        hop_limit in any::<u8>(), traffic_class in any::<u8>(), flow_label in 0u32..(1 << 20),
        payload_len in 0u16..200,
    ) {
        let r = Ipv6Repr {
            src: src.into(), dst: dst.into(), next_header, hop_limit, traffic_class, flow_label,
            payload_len,
        };
        let mut b = vec![0u8; 40 + usize::from(payload_len)];
        r.emit(&mut b).unwrap();
        prop_assert_eq!(Ipv6Repr::parse(&Ipv6Packet::new_checked(&b[..]).unwrap()), r);
    }

    #[test]
    fn tcp_round_trip(
        src_port in any::<u16>(), dst_port in any::<u16>(), seq in any::<u32>(), ack in any::<u32>(),
        flags in any::<u8>(), window in any::<u16>(), urgent in any::<u16>(), opt_words in 0usize..=10,
    ) {
        let r = TcpRepr { src_port, dst_port, seq, ack, flags, window, urgent };
        let mut b = vec![0u8; 20 + opt_words * 4];
        r.emit(&mut b).unwrap();
        let mut p = TcpPacket::new_unchecked(&mut b[..]);
        p.set_header_len(20 + opt_words * 4);
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        prop_assert_eq!(p.header_len(), 20 + opt_words * 4);
        prop_assert_eq!(TcpRepr::parse(&p), r);
    }

    #[test]
    fn udp_round_trip(src_port in any::<u16>(), dst_port in any::<u16>(), payload_len in 0u16..300) {
        let r = UdpRepr { src_port, dst_port, payload_len };
        let mut b = vec![0u8; 8 + usize::from(payload_len)];
        r.emit(&mut b).unwrap();
        prop_assert_eq!(UdpRepr::parse(&UdpPacket::new_checked(&b[..]).unwrap()), r);
    }

    // ---------- incremental == full ----------

    #[test]
    fn csum_replace_equals_full(
        data in prop::collection::vec(any::<u8>(), 2..300),
        pos in any::<prop::sample::Index>(),
        new2 in any::<u16>(), new4 in any::<[u8; 4]>(), new16 in any::<[u8; 16]>(),
    ) {
        let mut d = data.clone();
        if d.len() % 2 == 1 { d.push(0); }
        prop_assume!(d.iter().any(|&b| b != 0));
        let hc = checksum(&d);

        let words = d.len() / 2;
        let i = pos.index(words) * 2;
        let old = u16::from_be_bytes([d[i], d[i + 1]]);
        let mut e = d.clone();
        e[i..i + 2].copy_from_slice(&new2.to_be_bytes());
        prop_assume!(e.iter().any(|&b| b != 0));
        prop_assert_eq!(csum_replace2(hc, old, new2), checksum(&e));

        if d.len() >= 4 {
            let i = pos.index(d.len() / 2 - 1) * 2;
            let old: [u8; 4] = d[i..i + 4].try_into().unwrap();
            let mut e = d.clone();
            e[i..i + 4].copy_from_slice(&new4);
            if e.iter().any(|&b| b != 0) {
                prop_assert_eq!(csum_replace4(hc, old, new4), checksum(&e));
            }
        }
        if d.len() >= 16 {
            let i = pos.index(d.len() / 2 - 7) * 2;
            let old: [u8; 16] = d[i..i + 16].try_into().unwrap();
            let mut e = d.clone();
            e[i..i + 16].copy_from_slice(&new16);
            if e.iter().any(|&b| b != 0) {
                prop_assert_eq!(csum_replace16(hc, &old, &new16), checksum(&e));
            }
        }
    }

    #[test]
    fn delta_chain_equals_full(
        data in prop::collection::vec(any::<u8>(), 8..200),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u16>()), 1..8),
    ) {
        let mut d = data;
        if d.len() % 2 == 1 { d.push(1); }
        prop_assume!(d.iter().any(|&b| b != 0));
        let hc = checksum(&d);
        let mut delta = CsumDelta::new();
        for (ix, v) in edits {
            let i = ix.index(d.len() / 2) * 2;
            let old = u16::from_be_bytes([d[i], d[i + 1]]);
            delta = delta.word(old, v);
            d[i..i + 2].copy_from_slice(&v.to_be_bytes());
        }
        prop_assume!(d.iter().any(|&b| b != 0));
        prop_assert_eq!(delta.apply(hc), checksum(&d));
    }
}

// ---------- random packets through NAT ----------

#[derive(Clone, Debug)]
struct Spec {
    v6: bool,
    tcp: bool,
    tags: Vec<(u16, u16)>,
    src4: [u8; 4],
    dst4: [u8; 4],
    src6: [u8; 16],
    dst6: [u8; 16],
    sport: u16,
    dport: u16,
    flags: u8,
    tcp_opt_words: usize,
    ip_opt_words: usize,
    /// IPv6 extension headers as (next-header kind, len8).
    ext: Vec<(u8, u8)>,
    payload: Vec<u8>,
    udp_nocsum: bool,
    tos: u8,
}

impl Spec {
    fn src(&self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.src6))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.src4))
        }
    }
    fn dst(&self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.dst6))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.dst4))
        }
    }
    fn set_src(&mut self, a: IpAddr) {
        match a {
            IpAddr::V4(a) => self.src4 = a.octets(),
            IpAddr::V6(a) => self.src6 = a.octets(),
        }
    }
    fn set_dst(&mut self, a: IpAddr) {
        match a {
            IpAddr::V4(a) => self.dst4 = a.octets(),
            IpAddr::V6(a) => self.dst6 = a.octets(),
        }
    }

    fn l4(&self) -> Vec<u8> {
        let (s, d) = (self.src(), self.dst());
        if self.tcp {
            let opts: Vec<u8> = (0..self.tcp_opt_words * 4).map(|i| (i as u8) | 1).collect();
            tcp(
                s,
                d,
                self.sport,
                self.dport,
                self.flags,
                &opts,
                &self.payload,
            )
        } else {
            udp(
                s,
                d,
                self.sport,
                self.dport,
                &self.payload,
                self.udp_nocsum && !self.v6,
            )
        }
    }

    /// The IP packet (no L2).
    fn ip_packet(&self) -> Vec<u8> {
        let proto = if self.tcp { 6 } else { 17 };
        if self.v6 {
            let mut h = V6::new("::1", "::2", proto);
            h.src = self.src6.into();
            h.dst = self.dst6.into();
            h.tc = self.tos;
            // Chain the extension headers.
            let mut ext = Vec::new();
            let kinds: Vec<u8> = self.ext.iter().map(|e| e.0).collect();
            for (i, &(_, len8)) in self.ext.iter().enumerate() {
                let next = kinds.get(i + 1).copied().unwrap_or(proto);
                ext.extend(ext_hdr(next, len8));
            }
            h.next = kinds.first().copied().unwrap_or(proto);
            h.ext = ext;
            h.build(&self.l4())
        } else {
            let mut h = V4::new("0.0.0.1", "0.0.0.2", proto);
            h.src = self.src4.into();
            h.dst = self.dst4.into();
            h.tos = self.tos;
            // NOP options ending with EOL.
            h.opts = vec![1; self.ip_opt_words * 4];
            if let Some(l) = h.opts.last_mut() {
                *l = 0;
            }
            h.build(&self.l4())
        }
    }

    fn et(&self) -> u16 {
        if self.v6 {
            0x86dd
        } else {
            0x0800
        }
    }

    fn frame_in(&self) -> Vec<u8> {
        eth_in(&self.tags, self.et(), &self.ip_packet())
    }

    fn frame_out(&self) -> Vec<u8> {
        eth_out(self.et(), &self.ip_packet())
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    let tag = (
        prop::sample::select(vec![0x8100u16, 0x88a8, 0x9100]),
        any::<u16>(),
    );
    // Extension headers: optional hop-by-hop first, then routing / dest opts.
    let ext = (
        any::<bool>(),
        prop::collection::vec((prop::sample::select(vec![43u8, 60]), 0u8..3), 0..4),
        0u8..3,
    )
        .prop_map(|(hbh, rest, hlen)| {
            let mut v = Vec::new();
            if hbh {
                v.push((0u8, hlen));
            }
            v.extend(rest);
            v
        });
    (
        (
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec(tag, 0..=2),
        ),
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
        ),
        (
            any::<u16>(),
            any::<u16>(),
            any::<u8>(),
            0usize..=10,
            0usize..=10,
        ),
        (
            ext,
            prop::collection::vec(any::<u8>(), 0..400),
            any::<bool>(),
            any::<u8>(),
        ),
    )
        .prop_map(
            |(
                (v6, tcp, tags),
                (src4, dst4, src6, dst6),
                (sport, dport, flags, tcp_opt_words, ip_opt_words),
                (ext, payload, udp_nocsum, tos),
            )| Spec {
                v6,
                tcp,
                tags,
                src4,
                dst4,
                src6,
                dst6,
                sport,
                dport,
                flags,
                tcp_opt_words,
                ip_opt_words,
                ext,
                payload,
                udp_nocsum,
                tos,
            },
        )
}

fn addr_like(v6: bool, a4: [u8; 4], a6: [u8; 16]) -> IpAddr {
    if v6 {
        IpAddr::V6(a6.into())
    } else {
        IpAddr::V4(a4.into())
    }
}

fn rewrite(
    input: &[u8],
    f: impl FnOnce(&mut Frame<'_>, &PacketInfo) -> Result<(), forward::ForwardError>,
) -> Vec<u8> {
    let info = parse(input).expect("valid input parses");
    let mut buf = vec![0u8; 128 + input.len()];
    buf[128..].copy_from_slice(input);
    let mut fr = Frame::new(&mut buf, 128, input.len());
    f(&mut fr, &info).expect("rewrite succeeds");
    fr.data().to_vec()
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn parse_reports_what_was_built(s in spec()) {
        let f = s.frame_in();
        let i = parse(&f).unwrap();
        prop_assert_eq!(i.l3, if s.v6 { L3Kind::Ipv6 } else { L3Kind::Ipv4 });
        prop_assert_eq!(usize::from(i.vlans), s.tags.len());
        prop_assert_eq!(usize::from(i.l3_off), 14 + 4 * s.tags.len());
        prop_assert_eq!((i.src, i.dst), (s.src(), s.dst()));
        prop_assert_eq!((i.sport, i.dport), (s.sport, s.dport));
        prop_assert_eq!(i.proto, if s.tcp { 6 } else { 17 });
        prop_assert_eq!(i.tcp_flags, if s.tcp { s.flags } else { 0 });
        prop_assert_eq!(i.payload_len as usize, s.payload.len());
        prop_assert_eq!(i.l3_len as usize, f.len() - usize::from(i.l3_off));
        let hdr = if s.tcp { 20 + 4 * s.tcp_opt_words } else { 8 };
        prop_assert_eq!(usize::from(i.l4_off) + hdr + s.payload.len(), f.len());
        prop_assert!(!i.is_fragment && i.inner.is_none());
    }

    #[test]
    fn nat_in_equals_rebuilt(s in spec(), a4 in any::<[u8; 4]>(), a6 in any::<[u8; 16]>(), port in any::<u16>()) {
        let new = addr_like(s.v6, a4, a6);
        let got = rewrite(&s.frame_in(), |fr, i| forward::nat_in(fr, i, new, port, &nh()));
        let mut e = s.clone();
        e.set_dst(new);
        e.dport = port;
        prop_assert_eq!(&got, &e.frame_out());
        verify_frame(&got);
    }

    #[test]
    fn nat_out_equals_rebuilt(s in spec(), a4 in any::<[u8; 4]>(), a6 in any::<[u8; 16]>(), port in any::<u16>()) {
        let new = addr_like(s.v6, a4, a6);
        let got = rewrite(&s.frame_in(), |fr, i| forward::nat_out(fr, i, new, port, &nh()));
        let mut e = s.clone();
        e.set_src(new);
        e.sport = port;
        prop_assert_eq!(&got, &e.frame_out());
        verify_frame(&got);
    }

    #[test]
    fn nat_round_trip_restores(s in spec(), a4 in any::<[u8; 4]>(), a6 in any::<[u8; 16]>(), port in any::<u16>()) {
        // DNAT then the reverse DNAT gives the original packet back.
        let new = addr_like(s.v6, a4, a6);
        let once = rewrite(&s.frame_in(), |fr, i| forward::nat_in(fr, i, new, port, &nh()));
        let back = rewrite(&once, |fr, i| forward::nat_in(fr, i, s.dst(), s.dport, &nh()));
        prop_assert_eq!(back, s.frame_out());
    }

    #[test]
    fn encap_keeps_inner_and_checksums(
        s in spec(), outer_v6 in any::<bool>(), gue in any::<bool>(),
        o4 in any::<([u8; 4], [u8; 4])>(), o6 in any::<([u8; 16], [u8; 16])>(), sport in any::<u16>(),
    ) {
        let (os, od) = if outer_v6 {
            (IpAddr::V6(o6.0.into()), IpAddr::V6(o6.1.into()))
        } else {
            (IpAddr::V4(o4.0.into()), IpAddr::V4(o4.1.into()))
        };
        let inner = s.ip_packet();
        let got = rewrite(&s.frame_in(), |fr, i| {
            if gue {
                forward::gue(fr, i, os, od, sport, GUE_PORT, &nh())
            } else {
                forward::ipip(fr, i, os, od, &nh())
            }
        });
        let hdr = 14 + if outer_v6 { 40 } else { 20 } + if gue { 8 } else { 0 };
        prop_assert_eq!(&got[hdr..], &inner[..]);
        prop_assert_eq!(&got[..6], &NH_DST);
        verify_frame(&got);
        let o = parse(&got).unwrap();
        prop_assert_eq!((o.src, o.dst), (os, od));
        prop_assert_eq!(o.ttl, 64);
        if gue {
            prop_assert_eq!((o.proto, o.sport, o.dport), (17, sport, GUE_PORT));
        } else {
            prop_assert_eq!(o.proto, if s.v6 { 41 } else { 4 });
        }
    }
}

// ---------- random ICMP errors through NAT ----------

#[derive(Clone, Debug)]
struct IcmpSpec {
    quoted: Spec,
    /// Extra quoted bytes beyond the minimum (IP header + 8).
    extra: usize,
    outer_src4: [u8; 4],
    outer_src6: [u8; 16],
    kind: u8,
}

fn icmp_spec() -> impl Strategy<Value = IcmpSpec> {
    (
        spec(),
        0usize..600,
        any::<[u8; 4]>(),
        any::<[u8; 16]>(),
        0u8..3,
    )
        .prop_map(|(mut quoted, extra, outer_src4, outer_src6, kind)| {
            quoted.tags.clear();
            IcmpSpec {
                quoted,
                extra,
                outer_src4,
                outer_src6,
                kind,
            }
        })
}

impl IcmpSpec {
    /// The ICMP error frame: outer `from -> to` quoting `quoted`.
    fn frame(&self, from: IpAddr, to: IpAddr, quoted: &Spec) -> Vec<u8> {
        let q = quoted.ip_packet();
        let ip_hdr = if quoted.v6 {
            40 + quoted
                .ext
                .iter()
                .map(|e| (usize::from(e.1) + 1) * 8)
                .sum::<usize>()
        } else {
            20 + 4 * quoted.ip_opt_words
        };
        let mut n = (ip_hdr + 8 + self.extra).min(q.len());
        if quoted.tcp && n == ip_hdr + 17 {
            // Half a TCP checksum quoted: it cannot be updated (its high
            // byte depends on the missing low byte) and is left as is, so a
            // rebuilt packet would differ. Covered by a golden test.
            n -= 1;
        }
        let q = &q[..n];
        if quoted.v6 {
            let (t, rest) = [(1u8, 0u32), (2, 1280), (3, 0)][usize::from(self.kind)];
            let mut h = V6::new("::1", "::2", 58);
            h.src = match from {
                IpAddr::V6(a) => a,
                _ => unreachable!(),
            };
            h.dst = match to {
                IpAddr::V6(a) => a,
                _ => unreachable!(),
            };
            eth_out(0x86dd, &h.build(&icmp6(from, to, t, 0, rest, q)))
        } else {
            let (t, c, rest) = [(3u8, 3u8, 0u32), (3, 4, 1400), (11, 0, 0)][usize::from(self.kind)];
            let mut h = V4::new("0.0.0.1", "0.0.0.2", 1);
            h.src = match from {
                IpAddr::V4(a) => a,
                _ => unreachable!(),
            };
            h.dst = match to {
                IpAddr::V4(a) => a,
                _ => unreachable!(),
            };
            eth_out(0x0800, &h.build(&icmp4(t, c, rest, q)))
        }
    }
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn icmp_out_equals_rebuilt(s in icmp_spec(), a4 in any::<[u8; 4]>(), a6 in any::<[u8; 16]>(), port in any::<u16>()) {
        // Error from the real-server side about client -> RIP: the outer
        // source and quoted destination become the VIP.
        let q = &s.quoted;
        let vip = addr_like(q.v6, a4, a6);
        let router = addr_like(q.v6, s.outer_src4, s.outer_src6);
        let input = s.frame(router, q.src(), q);
        let got = rewrite(&input, |fr, i| forward::nat_icmp_out(fr, i, vip, port, &nh()));
        let mut eq = q.clone();
        eq.set_dst(vip);
        eq.dport = port;
        prop_assert_eq!(&got, &s.frame(vip, q.src(), &eq));
        verify_frame(&got);
    }

    #[test]
    fn icmp_in_equals_rebuilt(s in icmp_spec(), a4 in any::<[u8; 4]>(), a6 in any::<[u8; 16]>(), port in any::<u16>()) {
        // Error from a router about VIP -> client: the outer destination
        // and the quoted source become the real server.
        let q = &s.quoted;
        let rip = addr_like(q.v6, a4, a6);
        let router = addr_like(q.v6, s.outer_src4, s.outer_src6);
        let input = s.frame(router, q.src(), q);
        let got = rewrite(&input, |fr, i| forward::nat_icmp_in(fr, i, rip, port, &nh()));
        let mut eq = q.clone();
        eq.set_src(rip);
        eq.sport = port;
        prop_assert_eq!(&got, &s.frame(router, rip, &eq));
        verify_frame(&got);
    }
}
