//! Fuzz `wire::parse` and every rewrite in `shard::forward`.
//!
//! Input: byte 0 picks the headroom, bytes 1..3 the rewrite parameters,
//! the rest is the frame. Oracles: no panic; a refused rewrite leaves the
//! frame unchanged; an accepted rewrite yields a frame that parses, with
//! the new addresses/ports where the rewrite put them.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use xdpvs::shard::forward;
use xdpvs::shard::nexthop::NextHop;
use xdpvs::shard::verdict::Frame;
use xdpvs::wire::{parse, L3Kind, PacketInfo};

const A4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
const B4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 2));
const A6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
const B6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));

fn run(frame: &[u8], info: &PacketInfo, headroom: usize, op: u8, port: u16, mtu: u16) {
    let mut buf = vec![0u8; headroom + frame.len()];
    buf[headroom..].copy_from_slice(frame);
    let mut fr = Frame::new(&mut buf, headroom, frame.len());
    let nh = NextHop {
        ifindex: 1,
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        mtu,
    };
    let v6 = op & 1 == 1;
    let (a, b) = if v6 { (A6, B6) } else { (A4, B4) };
    let r = match (op >> 1) % 7 {
        0 => forward::dr(&mut fr, info, &nh),
        1 => forward::nat_in(&mut fr, info, b, port, &nh),
        2 => forward::nat_out(&mut fr, info, a, port, &nh),
        3 => forward::nat_icmp_in(&mut fr, info, b, port, &nh),
        4 => forward::nat_icmp_out(&mut fr, info, a, port, &nh),
        5 => forward::ipip(&mut fr, info, a, b, &nh),
        _ => forward::gue(
            &mut fr,
            info,
            a,
            b,
            forward::flow_hash_port(info),
            port,
            &nh,
        ),
    };
    assert!(fr.start + fr.len <= fr.buf.len());
    match r {
        Err(_) => assert_eq!(fr.data(), frame, "error must leave the frame unchanged"),
        Ok(()) => {
            let out = parse(fr.data()).expect("rewritten frame parses");
            assert_eq!(out.vlans, 0);
            assert!(out.is_ip());
            match (op >> 1) % 7 {
                1 => assert_eq!((out.dst, out.dport), (b, port)),
                2 => assert_eq!((out.src, out.sport), (a, port)),
                3 => assert_eq!(out.inner.map(|i| i.src), Some(b)),
                4 => assert_eq!(out.inner.map(|i| i.dst), Some(a)),
                5 | 6 => {
                    assert_eq!((out.src, out.dst), (a, b));
                    assert_eq!(out.l3, if v6 { L3Kind::Ipv6 } else { L3Kind::Ipv4 });
                }
                _ => {}
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        let _ = parse(data);
        return;
    }
    let headroom = usize::from(data[0] % 96);
    let port = u16::from_be_bytes([data[1], data[2]]);
    let mtu = if data[3] & 0x80 != 0 { 1500 } else { 9000 };
    let frame = &data[4..];
    let Ok(info) = parse(frame) else {
        return;
    };
    let _ = forward::flow_hash_port(&info);
    for op in 0..14u8 {
        run(frame, &info, headroom, op, port, mtu);
    }
});
