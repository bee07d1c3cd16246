//! Malformed input: truncation at every byte, corrupted bytes, random
//! bytes and nonsense `PacketInfo`s never panic; truncated packets are
//! errors, not `Ok` with garbage.

mod wire_builder;

use std::net::IpAddr;

use proptest::prelude::*;
use wire_builder::*;
use xdpvs::shard::forward;
use xdpvs::shard::nexthop::NextHop;
use xdpvs::shard::verdict::Frame;
use xdpvs::wire::{parse, L3Kind, PacketInfo};

fn valid_frames() -> Vec<(&'static str, Vec<u8>)> {
    let (c4, v4a, c6, v6a) = (
        ip("198.18.0.1"),
        ip("198.18.1.1"),
        ip("2001:db8::1"),
        ip("2001:db8::2"),
    );
    let mut opt = V4::new("198.18.0.1", "198.18.1.1", 6);
    opt.opts = vec![0x94, 4, 0, 0, 1, 1, 1, 0];
    let tcp_opt = opt.build(&tcp(c4, v4a, 1, 80, 2, &[2, 4, 5, 0xb4], &payload(10, 1)));
    let udp4 =
        V4::new("198.18.0.1", "198.18.1.1", 17).build(&udp(c4, v4a, 1, 53, &payload(9, 2), false));
    let mut x = V6::new("2001:db8::1", "2001:db8::2", 0);
    x.ext = [ext_hdr(43, 0), ext_hdr(60, 1), ext_hdr(6, 0)].concat();
    let tcp6x = x.build(&tcp(c6, v6a, 1, 443, 0x12, &[], &payload(5, 3)));
    let mut fr = V6::new("2001:db8::1", "2001:db8::2", 44);
    fr.ext = frag_hdr(17, 0, true, 1);
    let frag6 = fr.build(&udp(c6, v6a, 9, 53, &payload(40, 0), false)[..32]);
    let q = V4::new("198.18.1.1", "198.18.0.1", 6).build(&tcp(v4a, c4, 80, 1, 0x10, &[], &[]));
    let icmp_err = V4::new("198.18.9.9", "198.18.1.1", 1).build(&icmp4(3, 4, 1400, &q[..28]));
    let q6 = V6::new("2001:db8::2", "2001:db8::1", 17).build(&udp(v6a, c6, 53, 9, &[1, 2], false));
    let ptb = V6::new("2001:db8::9", "2001:db8::2", 58).build(&icmp6(
        ip("2001:db8::9"),
        v6a,
        2,
        0,
        1280,
        &q6,
    ));
    let echo = V4::new("198.18.0.1", "198.18.1.1", 1).build(&icmp4(8, 0, 7, &[1, 2, 3]));
    vec![
        ("v4 tcp with options", eth_in(&[], 0x0800, &tcp_opt)),
        (
            "v4 udp QinQ",
            eth_in(&[(0x88a8, 1), (0x8100, 2)], 0x0800, &udp4),
        ),
        (
            "v6 tcp ext headers, 802.1Q",
            eth_in(&[(0x8100, 3)], 0x86dd, &tcp6x),
        ),
        ("v6 first fragment", eth_in(&[], 0x86dd, &frag6)),
        ("icmp frag needed", eth_in(&[], 0x0800, &icmp_err)),
        ("icmpv6 packet too big", eth_in(&[], 0x86dd, &ptb)),
        ("icmp echo", eth_in(&[], 0x0800, &echo)),
    ]
}

fn nh() -> NextHop {
    NextHop {
        ifindex: 1,
        src_mac: NH_SRC,
        dst_mac: NH_DST,
        mtu: 1500,
    }
}

/// Run every rewrite on copies of `frame` with `info`; none may panic, and
/// the frame window must stay inside the buffer.
fn all_rewrites(frame: &[u8], info: &PacketInfo, headroom: usize) {
    let a4 = ip("198.19.0.1");
    let a6 = ip("2001:db8:9::1");
    for k in 0..14 {
        let mut buf = vec![0u8; headroom + frame.len()];
        buf[headroom..].copy_from_slice(frame);
        let mut fr = Frame::new(&mut buf, headroom, frame.len());
        let a: IpAddr = if k % 2 == 0 { a4 } else { a6 };
        let n = nh();
        let r = match k / 2 {
            0 => forward::dr(&mut fr, info, &n),
            1 => forward::nat_in(&mut fr, info, a, 1, &n),
            2 => forward::nat_out(&mut fr, info, a, 2, &n),
            3 => forward::nat_icmp_in(&mut fr, info, a, 3, &n),
            4 => forward::nat_icmp_out(&mut fr, info, a, 4, &n),
            5 => forward::ipip(&mut fr, info, a, a, &n),
            _ => forward::gue(&mut fr, info, a, a, 5, 6, &n),
        };
        assert!(fr.start + fr.len <= fr.buf.len());
        if r.is_err() {
            assert_eq!(fr.data(), frame, "an error must leave the frame unchanged");
        }
        let _ = forward::flow_hash_port(info);
    }
}

#[test]
fn valid_frames_parse_and_rewrite() {
    for (name, f) in valid_frames() {
        let i = parse(&f).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(i.is_ip(), "{name}");
        all_rewrites(&f, &i, 128);
        all_rewrites(&f, &i, 0);
    }
}

#[test]
fn truncation_at_every_byte_is_an_error() {
    for (name, f) in valid_frames() {
        for n in 0..f.len() {
            let r = parse(&f[..n]);
            assert!(r.is_err(), "{name}: truncated to {n} parsed as {r:?}");
        }
    }
}

/// Set the IP length field so the L3 packet ends exactly at `n`.
fn fix_len(f: &mut [u8], info: &PacketInfo, n: usize) {
    let l3 = usize::from(info.l3_off);
    match info.l3 {
        L3Kind::Ipv4 => {
            let v = (n - l3) as u16;
            f[l3 + 2..l3 + 4].copy_from_slice(&v.to_be_bytes());
        }
        L3Kind::Ipv6 => {
            let v = (n - l3 - 40) as u16;
            f[l3 + 4..l3 + 6].copy_from_slice(&v.to_be_bytes());
        }
        L3Kind::Other(_) => unreachable!(),
    }
}

#[test]
fn truncation_with_consistent_ip_length_cuts_inner_layers() {
    // The IP length is made to agree with the cut, so the error must come
    // from the extension headers, the L4 header or the ICMP quote; cuts
    // after all required headers parse fine (shorter payload).
    for (name, f) in valid_frames() {
        let full = parse(&f).unwrap();
        let required = match (full.proto, full.inner) {
            (17, _) if !full.is_fragment => f.len(), // UDP length field no longer fits
            (_, Some(i)) => usize::from(i.l4_off) + 8,
            (1 | 58, None) => usize::from(full.l4_off) + 8,
            _ => f.len() - full.payload_len as usize,
        };
        let ip_min = usize::from(full.l3_off) + if full.l3 == L3Kind::Ipv4 { 20 } else { 40 };
        for n in ip_min..=f.len() {
            let mut g = f[..n].to_vec();
            fix_len(&mut g, &full, n);
            let r = parse(&g);
            if n < required {
                assert!(
                    r.is_err(),
                    "{name}: cut at {n} < {required} parsed as {r:?}"
                );
            } else {
                let i = r.unwrap_or_else(|e| panic!("{name}: cut at {n} >= {required}: {e}"));
                assert_eq!(
                    (i.sport, i.dport, i.proto),
                    (full.sport, full.dport, full.proto)
                );
                all_rewrites(&g, &i, 64);
            }
        }
    }
}

fn arb_info() -> impl Strategy<Value = PacketInfo> {
    let addr = prop_oneof![
        any::<[u8; 4]>().prop_map(|a| IpAddr::V4(a.into())),
        any::<[u8; 16]>().prop_map(|a| IpAddr::V6(a.into())),
    ];
    let l3 = prop_oneof![
        Just(L3Kind::Ipv4),
        Just(L3Kind::Ipv6),
        any::<u16>().prop_map(L3Kind::Other)
    ];
    let inner = prop::option::of(
        (
            addr.clone(),
            addr.clone(),
            any::<(u8, u16, u16, u16, u16, u32, bool)>(),
        )
            .prop_map(
                |(src, dst, (proto, sport, dport, ip_off, l4_off, mtu, is_fragment))| {
                    xdpvs::wire::InnerInfo {
                        proto,
                        src,
                        dst,
                        sport,
                        dport,
                        ip_off: ip_off % 200,
                        l4_off: l4_off % 200,
                        mtu,
                        is_fragment,
                    }
                },
            ),
    );
    (
        l3,
        (any::<u8>(), any::<u16>(), any::<u16>()),
        (addr.clone(), addr),
        any::<(u8, bool, bool, u16, u16, u8, u8)>(),
        (any::<u32>(), any::<u32>()),
        inner,
    )
        .prop_map(
            |(
                l3,
                (vlans, l3_off, l4_off),
                (src, dst),
                (proto, is_fragment, first_fragment, sport, dport, tcp_flags, ttl),
                (l3_len, payload_len),
                inner,
            )| {
                PacketInfo {
                    l3,
                    vlans: vlans % 4,
                    l3_off: l3_off % 100,
                    l4_off: l4_off % 200,
                    src,
                    dst,
                    proto: [6, 17, 1, 58, proto][usize::from(proto % 5)],
                    is_fragment,
                    first_fragment,
                    sport,
                    dport,
                    tcp_flags,
                    icmp_type: 3,
                    icmp_code: 4,
                    ttl,
                    l3_len: l3_len % 300,
                    payload_len,
                    inner,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), et in prop::sample::select(vec![0x0800u16, 0x86dd, 0x8100, 0x0806])) {
        let _ = parse(&bytes);
        // Steer towards the IP paths with a plausible Ethernet header.
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&et.to_be_bytes());
        f.extend_from_slice(&bytes);
        if let Ok(i) = parse(&f) {
            all_rewrites(&f, &i, 64);
        }
    }

    #[test]
    fn corrupted_frames_never_panic(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let frames = valid_frames();
        let mut f = frames[which.index(frames.len())].1.clone();
        for (ix, v) in edits {
            let i = ix.index(f.len());
            f[i] = v;
        }
        let n = f.len() - cut.index(f.len() / 4 + 1);
        f.truncate(n);
        if let Ok(i) = parse(&f) {
            all_rewrites(&f, &i, 64);
            all_rewrites(&f, &i, 3);
        }
    }

    #[test]
    fn nonsense_info_never_panics(info in arb_info(), which in any::<prop::sample::Index>(), headroom in 0usize..80) {
        let frames = valid_frames();
        let f = &frames[which.index(frames.len())].1;
        all_rewrites(f, &info, headroom);
        all_rewrites(&f[..f.len() / 2], &info, headroom);
    }
}
