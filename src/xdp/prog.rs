//! The XDP program: decides which packets go to the AF_XDP socket of the
//! arriving queue. Everything else goes to the kernel (`XDP_PASS`)
//! untouched.
//!
//! Redirected (via `bpf_redirect_map(xsk_map, rx_queue_index, XDP_PASS)`, so
//! a queue without a socket falls back to `XDP_PASS`):
//! - a) TCP/UDP whose `(daddr, proto, dport)` or `(daddr, proto, 0)` is in
//!   `vip_map`;
//! - b) TCP/UDP whose `(saddr, proto, sport)` or `(saddr, proto, 0)` is in
//!   `real_map` (NAT replies from real servers), unless `(daddr, 0, 0)` is
//!   in `local_map`: a real server's packet to one of the director host's
//!   own addresses (the answer to a health probe, an operator's `curl`, a
//!   monitoring agent) is the host's traffic and stays in the kernel;
//! - c) IPv4 fragments (MF set or offset != 0) and IPv6 packets whose next
//!   header is an extension header, when `(daddr, 0, 0)` is in `vip_map`;
//! - d) ICMP errors (types 3, 11, 12) and ICMPv6 errors (types 1-4) when
//!   `(daddr, 0, 0)` is in `vip_map`.
//!
//! Parsing: Ethernet, up to two VLAN tags (0x8100 / 0x88a8), IPv4 with
//! options (IHL-aware) or the fixed IPv6 header. Anything truncated or
//! malformed passes. Key layout: [`super::keys`].

use std::os::fd::RawFd;

use super::asm::{
    AluOp, Asm, AsmError, Insn, JmpOp, Reg, Size, HELPER_MAP_LOOKUP_ELEM, HELPER_REDIRECT_MAP,
};
use super::keys::{OFF_ADDR, OFF_ADDR_V4, OFF_PORT, OFF_PROTO};

/// XDP action: error, drop.
pub const XDP_ABORTED: u32 = 0;
/// XDP action: drop.
pub const XDP_DROP: u32 = 1;
/// XDP action: hand to the kernel stack.
pub const XDP_PASS: u32 = 2;
/// XDP action: bounce out of the same interface.
pub const XDP_TX: u32 = 3;
/// XDP action: redirect (here: to the AF_XDP socket).
pub const XDP_REDIRECT: u32 = 4;

/// `struct xdp_md` field offsets.
const MD_DATA: i16 = 0;
const MD_DATA_END: i16 = 4;
const MD_RX_QUEUE_INDEX: i16 = 16;

/// Stack slots of the two keys (24 bytes each, 8-aligned; keys use 20).
const DKEY: i16 = -24;
const SKEY: i16 = -48;

/// EtherTypes as a little-endian `u16` load of the network-order field.
const fn le16(be: u16) -> i32 {
    be.swap_bytes() as i32
}
const ETH_P_IP: i32 = le16(0x0800);
const ETH_P_IPV6: i32 = le16(0x86dd);
const ETH_P_8021Q: i32 = le16(0x8100);
const ETH_P_8021AD: i32 = le16(0x88a8);
/// IPv4 `frag_off` bits MF | offset (0x3fff) as a little-endian `u16` load.
const IP_MF_OFFSET: i32 = le16(0x3fff);

const IPPROTO_ICMP: i32 = 1;
const IPPROTO_TCP: i32 = 6;
const IPPROTO_UDP: i32 = 17;
const IPPROTO_ICMPV6: i32 = 58;

/// IPv6 extension headers (IANA "IPv6 Extension Header Types").
pub const IPV6_EXT_HEADERS: [u8; 11] = [0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254];
/// ICMPv4 error types redirected for address-only VIPs.
pub const ICMP4_ERRORS: [u8; 3] = [3, 11, 12];

/// File descriptors of the maps the program refers to.
#[derive(Clone, Copy, Debug)]
pub struct MapFds {
    /// `vip_map` (HASH, [`super::keys`] key, u8 value).
    pub vip: RawFd,
    /// `real_map` (HASH, same key shape).
    pub real: RawFd,
    /// `local_map` (HASH, same key shape, address-only keys): the director
    /// host's own addresses.
    pub local: RawFd,
    /// `xsk_map` (XSKMAP, u32 queue -> socket).
    pub xsk: RawFd,
}

/// `r1 = map; r2 = fp + key; call bpf_map_lookup_elem; if r0 != 0 goto hit`.
fn lookup(a: &mut Asm, map: RawFd, key: i16, hit: super::asm::Label) {
    a.ld_map_fd(Reg::R1, map)
        .mov64_reg(Reg::R2, Reg::R10)
        .alu64_imm(AluOp::Add, Reg::R2, i32::from(key))
        .call(HELPER_MAP_LOOKUP_ELEM)
        .jmp_imm(JmpOp::Ne, Reg::R0, 0, hit);
}

/// `tmp = ptr + len; if tmp > data_end goto pass` (R3 holds data_end).
fn need(a: &mut Asm, ptr: Reg, len: i32, pass: super::asm::Label) {
    a.mov64_reg(Reg::R4, ptr)
        .alu64_imm(AluOp::Add, Reg::R4, len)
        .jmp_reg(JmpOp::Gt, Reg::R4, Reg::R3, pass);
}

/// Assemble the program for the given maps.
///
/// Registers: R6 ctx, R7 cursor (L3 then L4 header), R8 L4 protocol,
/// R9 the first 4 bytes of the L4 header (ports), R3 data_end.
pub fn build(maps: MapFds) -> Result<Vec<Insn>, AsmError> {
    let mut a = Asm::new();
    let pass = a.new_label();
    let redirect = a.new_label();
    let addr_only = a.new_label();
    let ports = a.new_label();
    let l3 = a.new_label();
    let ipv4 = a.new_label();
    let ipv6 = a.new_label();
    let icmp6 = a.new_label();

    a.mov64_reg(Reg::R6, Reg::R1)
        .ldx(Size::W, Reg::R2, Reg::R6, MD_DATA)
        .ldx(Size::W, Reg::R3, Reg::R6, MD_DATA_END)
        .mov64_imm(Reg::R0, 0);
    for slot in [DKEY, DKEY + 8, DKEY + 16, SKEY, SKEY + 8, SKEY + 16] {
        a.stx(Size::DW, Reg::R10, slot, Reg::R0);
    }

    // Ethernet.
    a.mov64_reg(Reg::R7, Reg::R2)
        .alu64_imm(AluOp::Add, Reg::R7, 14)
        .jmp_reg(JmpOp::Gt, Reg::R7, Reg::R3, pass)
        .ldx(Size::H, Reg::R5, Reg::R2, 12);
    // Up to two VLAN tags: R5 = EtherType, R7 = after the tag.
    for _ in 0..2 {
        let tag = a.new_label();
        a.jmp_imm(JmpOp::Eq, Reg::R5, ETH_P_8021Q, tag)
            .jmp_imm(JmpOp::Ne, Reg::R5, ETH_P_8021AD, l3)
            .bind(tag);
        need(&mut a, Reg::R7, 4, pass);
        a.ldx(Size::H, Reg::R5, Reg::R7, 2)
            .alu64_imm(AluOp::Add, Reg::R7, 4);
    }
    a.bind(l3)
        .jmp_imm(JmpOp::Eq, Reg::R5, ETH_P_IP, ipv4)
        .jmp_imm(JmpOp::Eq, Reg::R5, ETH_P_IPV6, ipv6)
        .ja(pass);

    // IPv4.
    a.bind(ipv4);
    need(&mut a, Reg::R7, 20, pass);
    a.ldx(Size::B, Reg::R0, Reg::R7, 0)
        .mov64_reg(Reg::R1, Reg::R0)
        .alu64_imm(AluOp::And, Reg::R1, 0xf0)
        .jmp_imm(JmpOp::Ne, Reg::R1, 0x40, pass)
        .alu64_imm(AluOp::And, Reg::R0, 0x0f)
        .alu64_imm(AluOp::Lsh, Reg::R0, 2)
        .jmp_imm(JmpOp::Lt, Reg::R0, 20, pass)
        // v4-mapped addresses: ::ffff:daddr / ::ffff:saddr.
        .mov64_imm(Reg::R1, 0xffff)
        .stx(Size::H, Reg::R10, DKEY + OFF_ADDR + 10, Reg::R1)
        .stx(Size::H, Reg::R10, SKEY + OFF_ADDR + 10, Reg::R1)
        .ldx(Size::W, Reg::R1, Reg::R7, 16)
        .stx(Size::W, Reg::R10, DKEY + OFF_ADDR + OFF_ADDR_V4, Reg::R1)
        .ldx(Size::W, Reg::R1, Reg::R7, 12)
        .stx(Size::W, Reg::R10, SKEY + OFF_ADDR + OFF_ADDR_V4, Reg::R1)
        // Any fragment: address-only.
        .ldx(Size::H, Reg::R1, Reg::R7, 6)
        .alu64_imm(AluOp::And, Reg::R1, IP_MF_OFFSET)
        .jmp_imm(JmpOp::Ne, Reg::R1, 0, addr_only)
        .ldx(Size::B, Reg::R8, Reg::R7, 9)
        .alu64_reg(AluOp::Add, Reg::R7, Reg::R0)
        .jmp_imm(JmpOp::Eq, Reg::R8, IPPROTO_TCP, ports)
        .jmp_imm(JmpOp::Eq, Reg::R8, IPPROTO_UDP, ports)
        .jmp_imm(JmpOp::Ne, Reg::R8, IPPROTO_ICMP, pass);
    need(&mut a, Reg::R7, 1, pass);
    a.ldx(Size::B, Reg::R1, Reg::R7, 0);
    for t in ICMP4_ERRORS {
        a.jmp_imm(JmpOp::Eq, Reg::R1, i32::from(t), addr_only);
    }
    a.ja(pass);

    // IPv6.
    a.bind(ipv6);
    need(&mut a, Reg::R7, 40, pass);
    a.ldx(Size::B, Reg::R0, Reg::R7, 0)
        .alu64_imm(AluOp::And, Reg::R0, 0xf0)
        .jmp_imm(JmpOp::Ne, Reg::R0, 0x60, pass);
    for half in [0, 8] {
        a.ldx(Size::DW, Reg::R1, Reg::R7, 24 + half)
            .stx(Size::DW, Reg::R10, DKEY + OFF_ADDR + half, Reg::R1)
            .ldx(Size::DW, Reg::R1, Reg::R7, 8 + half)
            .stx(Size::DW, Reg::R10, SKEY + OFF_ADDR + half, Reg::R1);
    }
    a.ldx(Size::B, Reg::R8, Reg::R7, 6)
        .alu64_imm(AluOp::Add, Reg::R7, 40)
        .jmp_imm(JmpOp::Eq, Reg::R8, IPPROTO_TCP, ports)
        .jmp_imm(JmpOp::Eq, Reg::R8, IPPROTO_UDP, ports)
        .jmp_imm(JmpOp::Eq, Reg::R8, IPPROTO_ICMPV6, icmp6);
    for nh in IPV6_EXT_HEADERS {
        a.jmp_imm(JmpOp::Eq, Reg::R8, i32::from(nh), addr_only);
    }
    a.ja(pass);
    a.bind(icmp6);
    need(&mut a, Reg::R7, 1, pass);
    a.ldx(Size::B, Reg::R1, Reg::R7, 0)
        .jmp_imm(JmpOp::Eq, Reg::R1, 0, pass)
        .jmp_imm(JmpOp::Le, Reg::R1, 4, addr_only)
        .ja(pass);

    // TCP/UDP: R7 = L4 header, R8 = protocol.
    a.bind(ports);
    need(&mut a, Reg::R7, 4, pass);
    a.ldx(Size::W, Reg::R9, Reg::R7, 0)
        .stx(Size::B, Reg::R10, DKEY + OFF_PROTO, Reg::R8)
        .stx(Size::B, Reg::R10, SKEY + OFF_PROTO, Reg::R8)
        // Low half of the little-endian load = sport bytes, high = dport.
        .stx(Size::H, Reg::R10, SKEY + OFF_PORT, Reg::R9)
        .mov64_reg(Reg::R1, Reg::R9)
        .alu64_imm(AluOp::Rsh, Reg::R1, 16)
        .stx(Size::H, Reg::R10, DKEY + OFF_PORT, Reg::R1);
    lookup(&mut a, maps.vip, DKEY, redirect);
    a.st_imm(Size::H, Reg::R10, DKEY + OFF_PORT, 0);
    lookup(&mut a, maps.vip, DKEY, redirect);
    // Not to a VIP: addressed to the host itself? Then it is the host's.
    a.st_imm(Size::W, Reg::R10, DKEY + OFF_PROTO, 0);
    lookup(&mut a, maps.local, DKEY, pass);
    lookup(&mut a, maps.real, SKEY, redirect);
    a.st_imm(Size::H, Reg::R10, SKEY + OFF_PORT, 0);
    lookup(&mut a, maps.real, SKEY, redirect);
    a.ja(pass);

    // Address-only entry (daddr, 0, 0).
    a.bind(addr_only)
        .st_imm(Size::W, Reg::R10, DKEY + OFF_PROTO, 0);
    lookup(&mut a, maps.vip, DKEY, redirect);
    a.ja(pass);

    a.bind(redirect)
        .ld_map_fd(Reg::R1, maps.xsk)
        .ldx(Size::W, Reg::R2, Reg::R6, MD_RX_QUEUE_INDEX)
        .mov64_imm(Reg::R3, XDP_PASS as i32)
        .call(HELPER_REDIRECT_MAP)
        .exit();

    a.bind(pass).mov64_imm(Reg::R0, XDP_PASS as i32).exit();
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdp::asm::class;

    fn prog() -> Vec<Insn> {
        build(MapFds {
            vip: 10,
            real: 11,
            local: 13,
            xsk: 12,
        })
        .unwrap()
    }

    #[test]
    fn length_is_reasonable() {
        let n = prog().len();
        assert!((80..=250).contains(&n), "{n} instructions");
    }

    #[test]
    fn every_path_ends_in_exit_and_jumps_stay_inside() {
        let insns = prog();
        let n = insns.len() as i64;
        assert_eq!(insns.last().map(|i| i.code), Some(0x95));
        for (pc, i) in insns.iter().enumerate() {
            let is_jmp = i.code & 0x07 == class::JMP && i.code != 0x85 && i.code != 0x95;
            if is_jmp {
                let to = pc as i64 + 1 + i64::from(i.off);
                assert!((0..n).contains(&to), "jump at {pc} to {to}");
                assert!(
                    to > pc as i64,
                    "backward jump at {pc}: programs must be loop-free"
                );
            }
        }
    }

    #[test]
    fn maps_are_referenced_by_fd() {
        let insns = prog();
        let fds: Vec<i32> = insns
            .iter()
            .filter(|i| i.code == 0x18 && i.src == 1)
            .map(|i| i.imm)
            .collect();
        // 4 TCP/UDP lookups + 1 address-only on vip/real, 1 redirect.
        assert_eq!(fds.iter().filter(|&&f| f == 10).count(), 3);
        assert_eq!(fds.iter().filter(|&&f| f == 11).count(), 2);
        assert_eq!(fds.iter().filter(|&&f| f == 12).count(), 1);
        assert_eq!(fds.iter().filter(|&&f| f == 13).count(), 1);
    }

    #[test]
    fn redirect_falls_back_to_pass() {
        let insns = prog();
        let call = insns
            .iter()
            .position(|i| i.code == 0x85 && i.imm == HELPER_REDIRECT_MAP)
            .unwrap();
        // r3 = XDP_PASS right before the call.
        assert_eq!(insns[call - 1].code, 0xb7);
        assert_eq!(insns[call - 1].dst, 3);
        assert_eq!(insns[call - 1].imm, XDP_PASS as i32);
    }

    #[test]
    fn ethertype_constants_are_byte_swapped() {
        assert_eq!(ETH_P_IP, 0x0008);
        assert_eq!(ETH_P_IPV6, 0xdd86);
        assert_eq!(ETH_P_8021Q, 0x0081);
        assert_eq!(ETH_P_8021AD, 0xa888);
        assert_eq!(IP_MF_OFFSET, 0xff3f);
    }
}
