//! The XDP program's decisions, checked with BPF_PROG_TEST_RUN, and attaching
//! to a veth in a network namespace of our own. Needs root; skips otherwise.
//!
//! A redirect is made observable by putting an (unbound) AF_XDP socket into
//! the XSKMAP slot of the test queue: `bpf_redirect_map` then returns
//! XDP_REDIRECT (4), while with an empty slot it falls back to XDP_PASS (2).

use std::net::IpAddr;
use std::process::Command;

use xdpvs::service::model::Proto;
use xdpvs::xdp::{AddrKey, XdpError, XdpMode, XdpProgram, XDP_PASS, XDP_REDIRECT};

const PASS: u32 = XDP_PASS;
const REDIR: u32 = XDP_REDIRECT;
const LO: u32 = 1;

const VIP4: [u8; 4] = [198, 18, 0, 10];
const VIP4_ANYPORT: [u8; 4] = [198, 18, 0, 11];
const VIP4_B: [u8; 4] = [198, 18, 0, 12];
const OTHER4: [u8; 4] = [198, 18, 5, 5];
const REAL4: [u8; 4] = [198, 18, 1, 20];
const REAL4_ANYPORT: [u8; 4] = [198, 18, 1, 21];
const CLIENT4: [u8; 4] = [198, 19, 0, 1];
const VIP6: &str = "2001:db8::10";
const OTHER6: &str = "2001:db8::99";
const REAL6: &str = "2001:db8:1::20";
const CLIENT6: &str = "2001:db8:2::1";

const TCP: u8 = 6;
const UDP: u8 = 17;

fn skip_unless_root(test: &str) -> bool {
    xdpvs::dataplane::testutil::skip_without_root(test)
}

fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::from(a)
}

fn ip6(s: &str) -> IpAddr {
    s.parse().unwrap()
}

// ---- frame builders -------------------------------------------------------

fn eth(ethertype: u16, vlan_tpids: &[u16], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    for (i, tpid) in vlan_tpids.iter().enumerate() {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + i as u16).to_be_bytes()); // TCI
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4_hdr(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    frag: u16,
    options: &[u8],
    l4: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let ihl = 5 + options.len() / 4;
    let total = (ihl * 4 + l4.len()) as u16;
    let mut h = vec![0x40 | ihl as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(options);
    h.extend_from_slice(l4);
    h
}

fn ipv6_hdr(src: &str, dst: &str, next: u8, payload: &[u8]) -> Vec<u8> {
    let s: std::net::Ipv6Addr = src.parse().unwrap();
    let d: std::net::Ipv6Addr = dst.parse().unwrap();
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&s.octets());
    h.extend_from_slice(&d.octets());
    h.extend_from_slice(payload);
    h
}

fn tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&[0, 12, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
    u
}

fn icmp(ty: u8, code: u8) -> Vec<u8> {
    vec![ty, code, 0, 0, 0, 0, 0x05, 0xdc]
}

fn v4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    eth(0x0800, &[], &ipv4_hdr(src, dst, proto, 0, &[], l4))
}

fn v6(src: &str, dst: &str, next: u8, payload: &[u8]) -> Vec<u8> {
    eth(0x86dd, &[], &ipv6_hdr(src, dst, next, payload))
}

fn arp_request(target: [u8; 4]) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1, 0x02, 0, 0, 0, 0, 0x02];
    a.extend_from_slice(&CLIENT4);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target);
    eth(0x0806, &[], &a)
}

// ---- fixture --------------------------------------------------------------

/// The program with an AF_XDP socket on loopback queue 0 and the default
/// services.
struct Fx {
    prog: XdpProgram,
    xsk: xdpilone::Socket,
}

fn default_vips() -> Vec<(Proto, IpAddr, u16)> {
    vec![
        (Proto::Tcp, ip(VIP4), 80),
        (Proto::Udp, ip(VIP4), 53),
        (Proto::Udp, ip(VIP4_ANYPORT), 0),
        (Proto::Tcp, ip6(VIP6), 443),
    ]
}

fn default_reals() -> Vec<(Proto, IpAddr, u16)> {
    vec![
        (Proto::Tcp, ip(REAL4), 80),
        (Proto::Udp, ip(REAL4_ANYPORT), 0),
        (Proto::Tcp, ip6(REAL6), 8080),
    ]
}

fn xsk_on(ifname: &std::ffi::CStr) -> xdpilone::Socket {
    let mut info = xdpilone::IfInfo::invalid();
    info.from_name(ifname).unwrap();
    xdpilone::Socket::new(&info).unwrap()
}

fn fixture(test: &str) -> Option<Fx> {
    if skip_unless_root(test) {
        return None;
    }
    let prog = match XdpProgram::load() {
        Ok(p) => p,
        Err(e) => panic!("load failed: {e}"),
    };
    let xsk = xsk_on(c"lo");
    prog.register_xsk(0, xsk.as_raw_fd()).unwrap();
    prog.set_vips(&default_vips()).unwrap();
    prog.set_reals(&default_reals()).unwrap();
    Some(Fx { prog, xsk })
}

impl Fx {
    fn run(&self, frame: &[u8]) -> u32 {
        self.prog.test_run(frame, LO, 0).unwrap()
    }

    /// Run every case, report all mismatches at once.
    fn check(&self, cases: &[(&str, Vec<u8>, u32)]) {
        let bad: Vec<String> = cases
            .iter()
            .filter_map(|(name, frame, want)| {
                let got = self.run(frame);
                (got != *want).then(|| format!("{name}: got {got}, want {want}"))
            })
            .collect();
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }
}

// ---- decisions ------------------------------------------------------------

#[test]
fn tcp_and_udp_services() {
    let Some(fx) = fixture("tcp_and_udp_services") else {
        return;
    };
    fx.check(&[
        (
            "TCP SYN to VIP:80",
            v4(CLIENT4, VIP4, TCP, &tcp_syn(40000, 80)),
            REDIR,
        ),
        (
            "TCP to VIP:22 (director SSH)",
            v4(CLIENT4, VIP4, TCP, &tcp_syn(40000, 22)),
            PASS,
        ),
        (
            "UDP to VIP:53",
            v4(CLIENT4, VIP4, UDP, &udp(40000, 53)),
            REDIR,
        ),
        (
            "UDP to VIP:80 (only TCP configured)",
            v4(CLIENT4, VIP4, UDP, &udp(40000, 80)),
            PASS,
        ),
        (
            "TCP to VIP:53 (only UDP configured)",
            v4(CLIENT4, VIP4, TCP, &tcp_syn(40000, 53)),
            PASS,
        ),
        (
            "UDP port-0 service, port 1",
            v4(CLIENT4, VIP4_ANYPORT, UDP, &udp(1, 1)),
            REDIR,
        ),
        (
            "UDP port-0 service, port 65535",
            v4(CLIENT4, VIP4_ANYPORT, UDP, &udp(1, 65535)),
            REDIR,
        ),
        (
            "TCP to UDP port-0 VIP",
            v4(CLIENT4, VIP4_ANYPORT, TCP, &tcp_syn(1, 80)),
            PASS,
        ),
        (
            "TCP to non-VIP:80",
            v4(CLIENT4, OTHER4, TCP, &tcp_syn(40000, 80)),
            PASS,
        ),
        (
            "from VIP:80 (source is not a service)",
            v4(VIP4, CLIENT4, TCP, &tcp_syn(80, 40000)),
            PASS,
        ),
        ("ARP for VIP", arp_request(VIP4), PASS),
        ("GRE to VIP", v4(CLIENT4, VIP4, 47, &[0; 8]), PASS),
    ]);
}

#[test]
fn icmp_errors_to_vip_are_redirected_echo_is_not() {
    let Some(fx) = fixture("icmp_errors_to_vip_are_redirected_echo_is_not") else {
        return;
    };
    fx.check(&[
        (
            "echo request to VIP",
            v4(CLIENT4, VIP4, 1, &icmp(8, 0)),
            PASS,
        ),
        ("echo reply to VIP", v4(CLIENT4, VIP4, 1, &icmp(0, 0)), PASS),
        (
            "frag needed to VIP",
            v4(CLIENT4, VIP4, 1, &icmp(3, 4)),
            REDIR,
        ),
        (
            "port unreachable to VIP",
            v4(CLIENT4, VIP4, 1, &icmp(3, 3)),
            REDIR,
        ),
        (
            "time exceeded to VIP",
            v4(CLIENT4, VIP4, 1, &icmp(11, 0)),
            REDIR,
        ),
        (
            "parameter problem to VIP",
            v4(CLIENT4, VIP4, 1, &icmp(12, 0)),
            REDIR,
        ),
        (
            "redirect (5) to VIP",
            v4(CLIENT4, VIP4, 1, &icmp(5, 0)),
            PASS,
        ),
        (
            "source quench (4) to VIP",
            v4(CLIENT4, VIP4, 1, &icmp(4, 0)),
            PASS,
        ),
        (
            "timestamp (13) to VIP",
            v4(CLIENT4, VIP4, 1, &icmp(13, 0)),
            PASS,
        ),
        (
            "frag needed to port-0 VIP",
            v4(CLIENT4, VIP4_ANYPORT, 1, &icmp(3, 4)),
            REDIR,
        ),
        (
            "frag needed to non-VIP",
            v4(CLIENT4, OTHER4, 1, &icmp(3, 4)),
            PASS,
        ),
        (
            "frag needed to real server",
            v4(CLIENT4, REAL4, 1, &icmp(3, 4)),
            PASS,
        ),
        (
            "ICMPv6 packet too big to VIP",
            v6(CLIENT6, VIP6, 58, &icmp(2, 0)),
            REDIR,
        ),
        (
            "ICMPv6 dest unreachable to VIP",
            v6(CLIENT6, VIP6, 58, &icmp(1, 4)),
            REDIR,
        ),
        (
            "ICMPv6 time exceeded to VIP",
            v6(CLIENT6, VIP6, 58, &icmp(3, 0)),
            REDIR,
        ),
        (
            "ICMPv6 parameter problem to VIP",
            v6(CLIENT6, VIP6, 58, &icmp(4, 0)),
            REDIR,
        ),
        (
            "ICMPv6 type 0 to VIP",
            v6(CLIENT6, VIP6, 58, &icmp(0, 0)),
            PASS,
        ),
        (
            "ICMPv6 type 5 to VIP",
            v6(CLIENT6, VIP6, 58, &icmp(5, 0)),
            PASS,
        ),
        (
            "ICMPv6 echo request to VIP",
            v6(CLIENT6, VIP6, 58, &icmp(128, 0)),
            PASS,
        ),
        (
            "ICMPv6 neighbour solicitation to VIP",
            v6(CLIENT6, VIP6, 58, &icmp(135, 0)),
            PASS,
        ),
        (
            "ICMPv6 packet too big to non-VIP",
            v6(CLIENT6, OTHER6, 58, &icmp(2, 0)),
            PASS,
        ),
    ]);
}

#[test]
fn nat_replies_from_real_servers() {
    let Some(fx) = fixture("nat_replies_from_real_servers") else {
        return;
    };
    fx.check(&[
        (
            "reply from real:80",
            v4(REAL4, CLIENT4, TCP, &tcp_syn(80, 40000)),
            REDIR,
        ),
        (
            "real's own SSH",
            v4(REAL4, CLIENT4, TCP, &tcp_syn(22, 40000)),
            PASS,
        ),
        (
            "UDP from real:80 (only TCP)",
            v4(REAL4, CLIENT4, UDP, &udp(80, 40000)),
            PASS,
        ),
        (
            "to real:80 (destination is not a real key)",
            v4(CLIENT4, REAL4, TCP, &tcp_syn(40000, 80)),
            PASS,
        ),
        (
            "UDP from port-0 real, any port",
            v4(REAL4_ANYPORT, CLIENT4, UDP, &udp(5353, 9)),
            REDIR,
        ),
        (
            "TCP from port-0 UDP real",
            v4(REAL4_ANYPORT, CLIENT4, TCP, &tcp_syn(5353, 9)),
            PASS,
        ),
        (
            "IPv6 reply from real:8080",
            v6(REAL6, CLIENT6, TCP, &tcp_syn(8080, 40000)),
            REDIR,
        ),
        (
            "IPv6 from real:22",
            v6(REAL6, CLIENT6, TCP, &tcp_syn(22, 40000)),
            PASS,
        ),
    ]);
}

/// The director host's own traffic with a NAT real server stays in the
/// kernel: the answer to a health probe (or to an operator's `curl`) comes
/// from the real server's service port but is addressed to one of the
/// host's addresses. The same reply to a client is redirected.
#[test]
fn nat_real_server_replies_to_the_host_itself_pass() {
    let Some(fx) = fixture("nat_real_server_replies_to_the_host_itself_pass") else {
        return;
    };
    const HOST4: [u8; 4] = [198, 18, 1, 1];
    const HOST6: &str = "2001:db8:1::1";
    fx.prog
        .set_locals(&[ip(HOST4), ip6(HOST6), ip(VIP4)])
        .unwrap();
    let cases = [
        // (name, frame, want)
        (
            "v4 TCP reply to a client",
            v4(REAL4, CLIENT4, TCP, &tcp_syn(80, 40000)),
            REDIR,
        ),
        (
            "v4 TCP SYN-ACK to the host's health probe",
            v4(REAL4, HOST4, TCP, &tcp_syn(80, 40000)),
            PASS,
        ),
        (
            "v4 UDP reply to a client",
            v4(REAL4_ANYPORT, CLIENT4, UDP, &udp(5353, 9)),
            REDIR,
        ),
        (
            "v4 UDP answer to the host's probe",
            v4(REAL4_ANYPORT, HOST4, UDP, &udp(5353, 9)),
            PASS,
        ),
        (
            "v6 TCP reply to a client",
            v6(REAL6, CLIENT6, TCP, &tcp_syn(8080, 40000)),
            REDIR,
        ),
        (
            "v6 TCP SYN-ACK to the host's health probe",
            v6(REAL6, HOST6, TCP, &tcp_syn(8080, 40000)),
            PASS,
        ),
        // A VIP that is also a host address (NAT) is still a VIP.
        (
            "client to a VIP that is a host address",
            v4(CLIENT4, VIP4, TCP, &tcp_syn(40000, 80)),
            REDIR,
        ),
    ];
    fx.check(&cases);
    assert_eq!(fx.prog.locals().unwrap().len(), 3);
    // Without the host's addresses, the probe's answer was taken.
    fx.prog.set_locals(&[]).unwrap();
    assert_eq!(fx.run(&v4(REAL4, HOST4, TCP, &tcp_syn(80, 40000))), REDIR);
    assert_eq!(fx.run(&v6(REAL6, HOST6, TCP, &tcp_syn(8080, 40000))), REDIR);
}

#[test]
fn vlan_tagged_traffic() {
    let Some(fx) = fixture("vlan_tagged_traffic") else {
        return;
    };
    let ip4 = ipv4_hdr(CLIENT4, VIP4, TCP, 0, &[], &tcp_syn(40000, 80));
    let ip4_ssh = ipv4_hdr(CLIENT4, VIP4, TCP, 0, &[], &tcp_syn(40000, 22));
    let ip6 = ipv6_hdr(CLIENT6, VIP6, TCP, &tcp_syn(40000, 443));
    fx.check(&[
        ("802.1Q VIP:80", eth(0x0800, &[0x8100], &ip4), REDIR),
        ("802.1ad VIP:80", eth(0x0800, &[0x88a8], &ip4), REDIR),
        ("QinQ VIP:80", eth(0x0800, &[0x88a8, 0x8100], &ip4), REDIR),
        (
            "QinQ (8100, 8100) VIP:80",
            eth(0x0800, &[0x8100, 0x8100], &ip4),
            REDIR,
        ),
        ("802.1Q VIP:22", eth(0x0800, &[0x8100], &ip4_ssh), PASS),
        ("802.1Q IPv6 VIP:443", eth(0x86dd, &[0x8100], &ip6), REDIR),
        (
            "three tags",
            eth(0x0800, &[0x88a8, 0x8100, 0x8100], &ip4),
            PASS,
        ),
        (
            "802.1Q ARP",
            eth(0x0806, &[0x8100], &arp_request(VIP4)[14..]),
            PASS,
        ),
    ]);
}

#[test]
fn ipv6_services_and_extension_headers() {
    let Some(fx) = fixture("ipv6_services_and_extension_headers") else {
        return;
    };
    // Fragment header in front of the TCP header.
    let mut frag = vec![TCP, 0, 0, 1, 0, 0, 0, 7];
    frag.extend_from_slice(&tcp_syn(40000, 22));
    fx.check(&[
        (
            "TCP to VIP6:443",
            v6(CLIENT6, VIP6, TCP, &tcp_syn(40000, 443)),
            REDIR,
        ),
        (
            "TCP to VIP6:22",
            v6(CLIENT6, VIP6, TCP, &tcp_syn(40000, 22)),
            PASS,
        ),
        (
            "TCP to non-VIP6:443",
            v6(CLIENT6, OTHER6, TCP, &tcp_syn(40000, 443)),
            PASS,
        ),
        (
            "UDP to VIP6:443 (only TCP)",
            v6(CLIENT6, VIP6, UDP, &udp(40000, 443)),
            PASS,
        ),
        (
            "fragment header to VIP6",
            v6(CLIENT6, VIP6, 44, &frag),
            REDIR,
        ),
        (
            "hop-by-hop to VIP6",
            v6(CLIENT6, VIP6, 0, &[TCP, 0, 1, 4, 0, 0, 0, 0]),
            REDIR,
        ),
        (
            "routing header to VIP6",
            v6(CLIENT6, VIP6, 43, &[TCP, 0, 0, 0, 0, 0, 0, 0]),
            REDIR,
        ),
        (
            "destination options to VIP6",
            v6(CLIENT6, VIP6, 60, &[TCP, 0, 1, 4, 0, 0, 0, 0]),
            REDIR,
        ),
        (
            "fragment header to non-VIP6",
            v6(CLIENT6, OTHER6, 44, &frag),
            PASS,
        ),
        ("no next header to VIP6", v6(CLIENT6, VIP6, 59, &[]), PASS),
        (
            "version 4 in an IPv6 EtherType",
            {
                let mut f = v6(CLIENT6, VIP6, TCP, &tcp_syn(40000, 443));
                f[14] = 0x40;
                f
            },
            PASS,
        ),
    ]);
}

#[test]
fn ipv4_fragments_go_by_address() {
    let Some(fx) = fixture("ipv4_fragments_go_by_address") else {
        return;
    };
    let frag = |dst, flags_off: u16, l4: &[u8]| {
        eth(
            0x0800,
            &[],
            &ipv4_hdr(CLIENT4, dst, TCP, flags_off, &[], l4),
        )
    };
    fx.check(&[
        (
            "first fragment (MF) to VIP:22",
            frag(VIP4, 0x2000, &tcp_syn(40000, 22)),
            REDIR,
        ),
        (
            "first fragment (MF) to VIP:80",
            frag(VIP4, 0x2000, &tcp_syn(40000, 80)),
            REDIR,
        ),
        (
            "middle fragment to VIP",
            frag(VIP4, 0x2000 | 185, &[0; 24]),
            REDIR,
        ),
        ("last fragment to VIP", frag(VIP4, 185, &[0; 24]), REDIR),
        ("offset high bit only", frag(VIP4, 0x1000, &[0; 24]), REDIR),
        (
            "last fragment to port-0 VIP",
            frag(VIP4_ANYPORT, 185, &[0; 24]),
            REDIR,
        ),
        (
            "fragment to non-VIP",
            frag(OTHER4, 0x2000, &tcp_syn(40000, 80)),
            PASS,
        ),
        (
            "fragment from real server",
            eth(
                0x0800,
                &[],
                &ipv4_hdr(REAL4, CLIENT4, TCP, 185, &[], &[0; 24]),
            ),
            PASS,
        ),
        (
            "DF set, not a fragment, VIP:22",
            frag(VIP4, 0x4000, &tcp_syn(40000, 22)),
            PASS,
        ),
        (
            "DF set, not a fragment, VIP:80",
            frag(VIP4, 0x4000, &tcp_syn(40000, 80)),
            REDIR,
        ),
    ]);
}

#[test]
fn ipv4_options_are_skipped_by_ihl() {
    let Some(fx) = fixture("ipv4_options_are_skipped_by_ihl") else {
        return;
    };
    // Options whose bytes look like ports: a program ignoring IHL would read
    // dport 22 (first case) or dport 80 (second case) from them.
    let opts_22 = [0x9c, 0x40, 0x00, 0x16];
    let opts_80 = [0x9c, 0x40, 0x00, 0x50];
    let max_opts = [1u8; 40]; // IHL 15, NOPs
    let f = |o: &[u8], dport| {
        eth(
            0x0800,
            &[],
            &ipv4_hdr(CLIENT4, VIP4, TCP, 0, o, &tcp_syn(40000, dport)),
        )
    };
    fx.check(&[
        ("IHL 6, dport 80", f(&opts_22, 80), REDIR),
        ("IHL 6, dport 22", f(&opts_80, 22), PASS),
        ("IHL 15, dport 80", f(&max_opts, 80), REDIR),
        ("IHL 15, dport 22", f(&max_opts, 22), PASS),
        (
            "IHL 4 (invalid)",
            {
                let mut x = v4(CLIENT4, VIP4, TCP, &tcp_syn(40000, 80));
                x[14] = 0x44;
                x
            },
            PASS,
        ),
        (
            "version 6 in an IPv4 EtherType",
            {
                let mut x = v4(CLIENT4, VIP4, TCP, &tcp_syn(40000, 80));
                x[14] = 0x65;
                x
            },
            PASS,
        ),
    ]);
}

/// Every prefix of a frame shorter than what the decision needs passes;
/// longer ones get the full frame's verdict.
#[test]
fn truncated_frames_pass() {
    let Some(fx) = fixture("truncated_frames_pass") else {
        return;
    };
    let cases: Vec<(&str, Vec<u8>, usize)> = vec![
        (
            "IPv4 TCP",
            v4(CLIENT4, VIP4, TCP, &tcp_syn(40000, 80)),
            14 + 20 + 4,
        ),
        (
            "IPv4 UDP",
            v4(CLIENT4, VIP4, UDP, &udp(40000, 53)),
            14 + 20 + 4,
        ),
        (
            "IPv4 IHL 6",
            eth(
                0x0800,
                &[],
                &ipv4_hdr(CLIENT4, VIP4, TCP, 0, &[1, 1, 1, 1], &tcp_syn(1, 80)),
            ),
            14 + 24 + 4,
        ),
        (
            "IPv4 fragment",
            eth(
                0x0800,
                &[],
                &ipv4_hdr(CLIENT4, VIP4, TCP, 185, &[], &[0; 8]),
            ),
            14 + 20,
        ),
        (
            "ICMP frag needed",
            v4(CLIENT4, VIP4, 1, &icmp(3, 4)),
            14 + 20 + 1,
        ),
        (
            "IPv6 TCP",
            v6(CLIENT6, VIP6, TCP, &tcp_syn(40000, 443)),
            14 + 40 + 4,
        ),
        (
            "ICMPv6 PTB",
            v6(CLIENT6, VIP6, 58, &icmp(2, 0)),
            14 + 40 + 1,
        ),
        (
            "QinQ IPv4 TCP",
            eth(
                0x0800,
                &[0x88a8, 0x8100],
                &ipv4_hdr(CLIENT4, VIP4, TCP, 0, &[], &tcp_syn(1, 80)),
            ),
            22 + 20 + 4,
        ),
        (
            "NAT reply",
            v4(REAL4, CLIENT4, TCP, &tcp_syn(80, 40000)),
            14 + 20 + 4,
        ),
    ];
    let mut bad = Vec::new();
    for (name, frame, needed) in &cases {
        assert_eq!(fx.run(frame), REDIR, "{name}: full frame");
        for len in 14..frame.len() {
            let want = if len < *needed { PASS } else { REDIR };
            let got = fx.run(&frame[..len]);
            if got != want {
                bad.push(format!("{name} cut to {len}: got {got}, want {want}"));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn frames_shorter_than_ethernet_are_refused_by_test_run() {
    let Some(fx) = fixture("frames_shorter_than_ethernet_are_refused_by_test_run") else {
        return;
    };
    assert!(matches!(
        fx.prog.test_run(&[0; 13], LO, 0),
        Err(XdpError::FrameSize { len: 13, .. })
    ));
    assert!(matches!(
        fx.prog.test_run(&[0; 4000], LO, 0),
        Err(XdpError::FrameSize { .. })
    ));
    // A 14-byte frame runs (and passes).
    assert_eq!(fx.run(&v4(CLIENT4, VIP4, TCP, &tcp_syn(1, 80))[..14]), PASS);
}

// ---- maps -----------------------------------------------------------------

#[test]
fn set_vips_replaces_contents() {
    let Some(fx) = fixture("set_vips_replaces_contents") else {
        return;
    };
    let a80 = v4(CLIENT4, VIP4, TCP, &tcp_syn(40000, 80));
    let b80 = v4(CLIENT4, VIP4_B, TCP, &tcp_syn(40000, 80));
    let a_icmp = v4(CLIENT4, VIP4, 1, &icmp(3, 4));
    let b_icmp = v4(CLIENT4, VIP4_B, 1, &icmp(3, 4));
    let v6_443 = v6(CLIENT6, VIP6, TCP, &tcp_syn(40000, 443));
    assert_eq!((fx.run(&a80), fx.run(&b80)), (REDIR, PASS));

    fx.prog.set_vips(&[(Proto::Tcp, ip(VIP4_B), 80)]).unwrap();
    assert_eq!(fx.run(&a80), PASS, "stale service removed");
    assert_eq!(fx.run(&a_icmp), PASS, "stale address-only entry removed");
    assert_eq!(fx.run(&v6_443), PASS, "stale IPv6 service removed");
    assert_eq!(fx.run(&b80), REDIR, "new service added");
    assert_eq!(
        fx.run(&b_icmp),
        REDIR,
        "address-only entry added for the new VIP"
    );
    assert_eq!(
        fx.prog.vips().unwrap(),
        vec![
            AddrKey::addr_only(ip(VIP4_B)),
            AddrKey::service(Proto::Tcp, ip(VIP4_B), 80)
        ]
    );

    // Reload with an overlapping set: kept entries keep working.
    fx.prog
        .set_vips(&[(Proto::Tcp, ip(VIP4_B), 80), (Proto::Tcp, ip(VIP4), 8080)])
        .unwrap();
    assert_eq!(fx.run(&b80), REDIR);
    assert_eq!(fx.run(&v4(CLIENT4, VIP4, TCP, &tcp_syn(1, 8080))), REDIR);
    assert_eq!(fx.prog.vips().unwrap().len(), 4);

    fx.prog.set_vips(&[]).unwrap();
    assert_eq!(fx.run(&b80), PASS);
    assert!(fx.prog.vips().unwrap().is_empty());
}

#[test]
fn set_reals_replaces_contents() {
    let Some(fx) = fixture("set_reals_replaces_contents") else {
        return;
    };
    let from_real = v4(REAL4, CLIENT4, TCP, &tcp_syn(80, 40000));
    let from_other = v4(OTHER4, CLIENT4, TCP, &tcp_syn(80, 40000));
    assert_eq!((fx.run(&from_real), fx.run(&from_other)), (REDIR, PASS));
    fx.prog.set_reals(&[(Proto::Tcp, ip(OTHER4), 80)]).unwrap();
    assert_eq!((fx.run(&from_real), fx.run(&from_other)), (PASS, REDIR));
    assert_eq!(
        fx.prog.reals().unwrap(),
        vec![AddrKey::service(Proto::Tcp, ip(OTHER4), 80)]
    );
}

#[test]
fn capacity_is_checked_before_touching_the_map() {
    let Some(fx) = fixture("capacity_is_checked_before_touching_the_map") else {
        return;
    };
    let too_many: Vec<(Proto, IpAddr, u16)> = (0..=xdpvs::xdp::MAX_REAL_ENTRIES)
        .map(|i| (Proto::Udp, ip(REAL4), i as u16))
        .chain(std::iter::once((Proto::Tcp, ip(REAL4_ANYPORT), 1)))
        .collect();
    assert!(matches!(
        fx.prog.set_reals(&too_many),
        Err(XdpError::Capacity { .. })
    ));
    assert_eq!(fx.prog.reals().unwrap().len(), default_reals().len());
}

#[test]
fn address_only_entries_can_be_added_and_removed() {
    let Some(fx) = fixture("address_only_entries_can_be_added_and_removed") else {
        return;
    };
    let icmp_err = v4(CLIENT4, OTHER4, 1, &icmp(3, 4));
    let frag = eth(
        0x0800,
        &[],
        &ipv4_hdr(CLIENT4, OTHER4, UDP, 185, &[], &[0; 8]),
    );
    let tcp = v4(CLIENT4, OTHER4, TCP, &tcp_syn(1, 80));
    assert_eq!(fx.run(&icmp_err), PASS);
    fx.prog.add_vip_addr(ip(OTHER4)).unwrap();
    assert_eq!(fx.run(&icmp_err), REDIR);
    assert_eq!(fx.run(&frag), REDIR);
    assert_eq!(
        fx.run(&tcp),
        PASS,
        "address-only entries do not match TCP/UDP"
    );
    assert!(fx.prog.remove_vip_addr(ip(OTHER4)).unwrap());
    assert!(!fx.prog.remove_vip_addr(ip(OTHER4)).unwrap());
    assert_eq!(fx.run(&icmp_err), PASS);
}

#[test]
fn without_a_socket_redirects_fall_back_to_pass() {
    let Some(fx) = fixture("without_a_socket_redirects_fall_back_to_pass") else {
        return;
    };
    let f = v4(CLIENT4, VIP4, TCP, &tcp_syn(40000, 80));
    assert_eq!(fx.run(&f), REDIR);
    fx.prog.unregister_xsk(0).unwrap();
    assert_eq!(fx.run(&f), PASS);
    fx.prog.unregister_xsk(0).unwrap(); // idempotent
    assert!(matches!(
        fx.prog
            .register_xsk(xdpvs::xdp::MAX_QUEUES, fx.xsk.as_raw_fd()),
        Err(XdpError::Queue { .. })
    ));
    // A non-XDP fd is refused by the kernel.
    let file = std::fs::File::open("/proc/self/status").unwrap();
    let err = fx
        .prog
        .register_xsk(1, std::os::fd::AsRawFd::as_raw_fd(&file))
        .unwrap_err();
    assert!(err.errno().is_some(), "{err}");
}

#[test]
fn verifier_rejection_carries_the_log() {
    if skip_unless_root("verifier_rejection_carries_the_log") {
        return;
    }
    let mut a = xdpvs::xdp::asm::Asm::new();
    a.exit(); // R0 never written
    let insns = a.finish().unwrap();
    let err =
        xdpvs::xdp::sys::prog_load(xdpvs::xdp::sys::BPF_PROG_TYPE_XDP, &insns, c"GPL", "bad", 0)
            .unwrap_err();
    match &err {
        XdpError::Verifier { log, .. } => assert!(log.contains("R0"), "log: {log}"),
        other => panic!("expected a verifier error, got {other}"),
    }
    assert!(err.errno().is_some());
}

// ---- network namespaces -----------------------------------------------------

/// A network namespace deleted on drop (also when the test panics).
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("xdpvs-xdp-{}-{tag}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        Netns { name }
    }

    /// veth pair v0/v1 with 4 queues each, both up.
    fn with_veth(tag: &str) -> Netns {
        let ns = Netns::new(tag);
        run(&[
            "ip",
            "-n",
            &ns.name,
            "link",
            "add",
            "v0",
            "numrxqueues",
            "4",
            "numtxqueues",
            "4",
            "type",
            "veth",
            "peer",
            "name",
            "v1",
            "numrxqueues",
            "4",
            "numtxqueues",
            "4",
        ]);
        run(&["ip", "-n", &ns.name, "link", "set", "v0", "up"]);
        run(&["ip", "-n", &ns.name, "link", "set", "v1", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const CHILD_ENV: &str = "XDPVS_XDP_TEST_IN_NETNS";

/// Run `test` again inside `ns` (BPF_LINK_CREATE and BPF_PROG_TEST_RUN look
/// interfaces up in the caller's namespace). Returns true in the child.
fn in_netns_child(test: &str, ns: impl FnOnce() -> Netns) -> bool {
    if std::env::var(CHILD_ENV).as_deref() == Ok(test) {
        return true;
    }
    let ns = ns();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("timeout")
        .args(["60", "ip", "netns", "exec", &ns.name])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("child stdout:\n{stdout}\nchild stderr:\n{stderr}");
    assert!(out.status.success(), "child failed");
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "child did not run the test"
    );
    false
}

fn ifindex(name: &str) -> u32 {
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn attach_to_veth_and_detach_on_drop() {
    const T: &str = "attach_to_veth_and_detach_on_drop";
    if skip_unless_root(T) || !in_netns_child(T, || Netns::with_veth("attach")) {
        return;
    }
    let prog = XdpProgram::load().unwrap();
    let id = prog.prog_id().unwrap();
    let idx = ifindex("v0");
    for (mode, word) in [
        (XdpMode::Generic, " xdpgeneric "),
        (XdpMode::Native, " xdp "),
    ] {
        let link = prog.attach(idx, mode).unwrap();
        assert_eq!((link.ifindex(), link.mode()), (idx, mode));
        assert!(link.id().unwrap() > 0);
        let shown = run(&["ip", "-d", "link", "show", "dev", "v0"]);
        assert!(shown.contains(word), "{mode:?}: {shown}");
        assert!(
            shown.contains(&format!("prog/xdp id {id} name xdpvs")),
            "{shown}"
        );
        // Only one program per interface and mode.
        let again = prog.attach(idx, mode);
        assert!(
            again.is_err(),
            "second attach must fail while the link is held"
        );
        drop(link);
        let shown = run(&["ip", "-d", "link", "show", "dev", "v0"]);
        assert!(
            !shown.contains("prog/xdp"),
            "{mode:?} still attached: {shown}"
        );
        assert!(!shown.contains(word), "{shown}");
    }
}

#[test]
fn rx_queue_index_selects_the_socket() {
    const T: &str = "rx_queue_index_selects_the_socket";
    if skip_unless_root(T) || !in_netns_child(T, || Netns::with_veth("queues")) {
        return;
    }
    let prog = XdpProgram::load().unwrap();
    prog.set_vips(&default_vips()).unwrap();
    let idx = ifindex("v0");
    let xsk = xsk_on(c"v0");
    prog.register_xsk(2, xsk.as_raw_fd()).unwrap();
    let vip = v4(CLIENT4, VIP4, TCP, &tcp_syn(40000, 80));
    let other = v4(CLIENT4, OTHER4, TCP, &tcp_syn(40000, 80));
    let got: Vec<u32> = (0..4)
        .map(|q| prog.test_run(&vip, idx, q).unwrap())
        .collect();
    assert_eq!(got, [PASS, PASS, REDIR, PASS]);
    assert_eq!(prog.test_run(&other, idx, 2).unwrap(), PASS);
    // Queue beyond the device's queues: the kernel refuses the context.
    assert!(prog.test_run(&vip, idx, 4).is_err());
    prog.unregister_xsk(2).unwrap();
    assert_eq!(prog.test_run(&vip, idx, 2).unwrap(), PASS);
}
