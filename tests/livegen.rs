//! The live-frames generator's program (`bpf/loadgen.c`, `xdpvs::xdp::livegen`)
//! run once, not live (`BPF_PROG_TEST_RUN` returns the frame): every field
//! it varies is rewritten over a frame full of garbage (as a recycled frame
//! is), the flows follow the AF_XDP generator's order and both checksums
//! verify. Root only (bpf()); no namespaces, nothing is sent.

use xdpvs::dataplane::testutil::skip_without_root;
use xdpvs::xdp::livegen::{LiveFlows, LiveGen};
use xdpvs::xdp::XDP_TX;

fn sum(mut s: u32, b: &[u8]) -> u32 {
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    s
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Root only: loads the program and runs it (not live) on a template.
#[test]
fn frames_follow_the_flows_with_valid_checksums() {
    if skip_without_root("livegen test run") {
        return;
    }
    let mut t = vec![0u8; 64];
    t[12..14].copy_from_slice(&[0x08, 0x00]);
    t[14] = 0x45;
    t[16..18].copy_from_slice(&48u16.to_be_bytes());
    t[22] = 64;
    t[23] = 17;
    t[30..34].copy_from_slice(&[198, 18, 0, 100]);
    t[38..40].copy_from_slice(&28u16.to_be_bytes());
    t[42..44].copy_from_slice(&0x5856u16.to_le_bytes());
    // Garbage where the program must write (a recycled frame).
    for b in &mut t[18..20] {
        *b = 0xee;
    }
    for b in &mut t[24..30] {
        *b = 0xee;
    }
    for b in &mut t[34..38] {
        *b = 0xee;
    }
    for b in &mut t[40..42] {
        *b = 0xee;
    }
    for b in &mut t[46..62] {
        *b = 0xee;
    }
    let flows = LiveFlows {
        flows: 5,
        src_base: 0xC612_6401,
        n_src: 2,
        sport_lo: 1024,
        n_sport: 2,
        dport_lo: 10000,
        n_dport: 3,
    };
    let g = LiveGen::load(&t, 0, 0, flows, 64).unwrap();
    for seq in 0u64..12 {
        let (act, f) = g.test_frame().unwrap();
        assert_eq!(act, XDP_TX);
        assert_eq!(f.len(), 64);
        assert_eq!(fold(sum(0, &f[14..34])), 0xffff, "ip checksum of {seq}");
        let mut s = sum(0, &f[26..34]) + 17 + 28;
        s = sum(s, &f[34..62]);
        assert_eq!(fold(s), 0xffff, "udp checksum of {seq}");
        let fl = seq % 5;
        let src = u32::from_be_bytes(f[26..30].try_into().unwrap());
        assert_eq!(src, 0xC612_6401 + (fl % 2) as u32);
        let sport = u16::from_be_bytes([f[34], f[35]]);
        assert_eq!(sport, 1024 + ((fl / 2) % 2) as u16);
        let dport = u16::from_be_bytes([f[36], f[37]]);
        assert_eq!(dport, 10000 + ((fl / 4) % 3) as u16);
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), seq as u16);
        assert_eq!(u64::from_le_bytes(f[46..54].try_into().unwrap()), seq);
        assert_ne!(
            u64::from_le_bytes(f[54..62].try_into().unwrap()),
            0xeeee_eeee_eeee_eeee
        );
        assert_eq!(&f[42..44], &0x5856u16.to_le_bytes());
    }
    assert_eq!(g.seq().unwrap(), 12);
}
