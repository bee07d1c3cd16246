//! Cross-check of the sync codec against an independent decoder:
//! Wireshark's IPVS sync dissector ("ipvs", packet-ipvs-syncd.c, on UDP
//! port 8848). The test writes a classic pcap file of Ethernet/IPv4/UDP
//! frames carrying messages built by `wire::sync::SyncWriter` and checks
//! the fields `tshark` decodes. Nothing is sent on any network.
//!
//! Without tshark the test fails under CI (`CI` = `true` or `1`) and
//! prints a loud SKIP otherwise. `scripts/deps.sh` installs it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::Command;

use xdpvs::dataplane::testutil::ci;
use xdpvs::wire::sync::{
    flags, fwmark_vaddr, tcp_state, tpl_state, udp_state, SyncEntry, SyncWriter,
    DEFAULT_MAX_LEN_V4, SYNC_GROUP_V4, SYNC_PORT,
};

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
}

fn conn_v4_dr() -> SyncEntry {
    SyncEntry {
        flags: flags::DROUTE,
        proto: 6,
        state: tcp_state::ESTABLISHED,
        cport: 40000,
        vport: 80,
        dport: 80,
        fwmark: 0,
        timeout_s: 900,
        caddr: v4([198, 18, 0, 10]),
        vaddr: v4([198, 19, 0, 1]),
        daddr: v4([198, 18, 1, 2]),
    }
}

fn conn_v6_nat() -> SyncEntry {
    SyncEntry {
        flags: flags::MASQ | flags::INACTIVE,
        proto: 17,
        state: udp_state::NORMAL,
        cport: 5353,
        vport: 53,
        dport: 5300,
        fwmark: 0,
        timeout_s: 300,
        caddr: v6("2001:db8::10"),
        vaddr: v6("2001:db8:1::1"),
        daddr: v6("2001:db8:2::2"),
    }
}

fn template_v4() -> SyncEntry {
    SyncEntry {
        flags: flags::TEMPLATE | flags::DROUTE,
        proto: 6,
        state: tpl_state::NONE,
        cport: 0,
        vport: 443,
        dport: 443,
        fwmark: 0,
        timeout_s: 360,
        caddr: v4([198, 18, 0, 0]),
        vaddr: v4([198, 19, 0, 1]),
        daddr: v4([198, 18, 1, 2]),
    }
}

fn fwmark_template_v4() -> SyncEntry {
    SyncEntry {
        flags: flags::TEMPLATE | flags::TUNNEL,
        proto: 0,
        state: 0,
        cport: 0,
        vport: 0,
        dport: 0,
        fwmark: 7,
        timeout_s: 300,
        caddr: v4([198, 18, 0, 10]),
        vaddr: fwmark_vaddr(7, false),
        daddr: v4([198, 18, 1, 3]),
    }
}

fn message(syncid: u8, es: &[SyncEntry]) -> Vec<u8> {
    let mut w = SyncWriter::new(DEFAULT_MAX_LEN_V4);
    for e in es {
        w.push(e).unwrap();
    }
    let mut ms = w.finish(syncid);
    assert_eq!(ms.len(), 1);
    ms.remove(0)
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Ethernet/IPv4/UDP frame from 198.18.0.1 to the sync group, port 8848.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0x51]); // group MAC
    f.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0]); // id 0, DF
    ip.extend_from_slice(&[1, 17, 0, 0]); // TTL 1 (the kernel's default), UDP
    ip.extend_from_slice(&[198, 18, 0, 1]);
    ip.extend_from_slice(&SYNC_GROUP_V4.octets());
    let c = ip_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    assert_eq!(ip_checksum(&ip), 0);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&SYNC_PORT.to_be_bytes());
    f.extend_from_slice(&SYNC_PORT.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum
    f.extend_from_slice(payload);
    f
}

/// Classic pcap (microsecond timestamps, LINKTYPE_ETHERNET).
fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    b.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    b.extend_from_slice(&65535u32.to_le_bytes()); // snaplen
    b.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    for (i, f) in frames.iter().enumerate() {
        b.extend_from_slice(&(1_700_000_000u32 + i as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(f);
    }
    std::fs::write(path, b).unwrap();
}

const FIELDS: &[&str] = &[
    "ipvs.syncid",
    "ipvs.size",
    "ipvs.conncount",
    "ipvs.version",
    "ipvs.type",
    "ipvs.proto",
    "ipvs.ver",
    "ipvs.size.v1",
    "ipvs.flags.v1",
    "ipvs.state",
    "ipvs.cport",
    "ipvs.vport",
    "ipvs.dport",
    "ipvs.fwmark",
    "ipvs.timeout",
    "ipvs.caddr",
    "ipvs.vaddr",
    "ipvs.daddr",
    "ipvs.caddr6",
    "ipvs.vaddr6",
    "ipvs.daddr6",
];

/// Per packet: field name -> all its occurrences (in order).
fn tshark_fields(path: &Path) -> Vec<Vec<(String, Vec<String>)>> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(path).args([
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]);
    for f in FIELDS {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    eprintln!("tshark fields ({}):\n{text}", FIELDS.join("|"));
    text.lines()
        .map(|l| {
            FIELDS
                .iter()
                .zip(l.split('|'))
                .map(|(f, v)| {
                    let vs = if v.is_empty() {
                        Vec::new()
                    } else {
                        v.split(',').map(str::to_owned).collect()
                    };
                    (f.to_string(), vs)
                })
                .collect()
        })
        .collect()
}

fn tshark_present() -> bool {
    Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Parse a number tshark printed in decimal or 0x-hex.
fn num(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap(),
        None => s.parse().unwrap(),
    }
}

/// The values tshark should show for these entries, field by field.
fn expected(syncid: u8, msg: &[u8], es: &[SyncEntry]) -> Vec<(&'static str, Vec<String>)> {
    let col =
        |f: fn(&SyncEntry) -> Option<String>| -> Vec<String> { es.iter().filter_map(f).collect() };
    vec![
        ("ipvs.syncid", vec![syncid.to_string()]),
        ("ipvs.size", vec![msg.len().to_string()]),
        ("ipvs.conncount", vec![es.len().to_string()]),
        ("ipvs.version", vec!["1".into()]),
        (
            "ipvs.type",
            col(|e| Some(u8::from(e.caddr.is_ipv6()).to_string())),
        ),
        ("ipvs.proto", col(|e| Some(e.proto.to_string()))),
        ("ipvs.ver", col(|_| Some("0".into()))),
        (
            "ipvs.size.v1",
            col(|e| Some(if e.caddr.is_ipv6() { "72" } else { "36" }.into())),
        ),
        ("ipvs.flags.v1", col(|e| Some(e.flags.to_string()))),
        ("ipvs.state", col(|e| Some(e.state.to_string()))),
        ("ipvs.cport", col(|e| Some(e.cport.to_string()))),
        ("ipvs.vport", col(|e| Some(e.vport.to_string()))),
        ("ipvs.dport", col(|e| Some(e.dport.to_string()))),
        ("ipvs.fwmark", col(|e| Some(e.fwmark.to_string()))),
        ("ipvs.timeout", col(|e| Some(e.timeout_s.to_string()))),
        (
            "ipvs.caddr",
            col(|e| match e.caddr {
                IpAddr::V4(a) => Some(a.to_string()),
                _ => None,
            }),
        ),
        (
            "ipvs.vaddr",
            col(|e| match e.vaddr {
                IpAddr::V4(a) => Some(a.to_string()),
                _ => None,
            }),
        ),
        (
            "ipvs.daddr",
            col(|e| match e.daddr {
                IpAddr::V4(a) => Some(a.to_string()),
                _ => None,
            }),
        ),
        (
            "ipvs.caddr6",
            col(|e| match e.caddr {
                IpAddr::V6(a) => Some(a.to_string()),
                _ => None,
            }),
        ),
        (
            "ipvs.vaddr6",
            col(|e| match e.vaddr {
                IpAddr::V6(a) => Some(a.to_string()),
                _ => None,
            }),
        ),
        (
            "ipvs.daddr6",
            col(|e| match e.daddr {
                IpAddr::V6(a) => Some(a.to_string()),
                _ => None,
            }),
        ),
    ]
}

#[test]
fn wireshark_decodes_writer_output() {
    if !tshark_present() {
        if ci() {
            panic!("tshark is missing and CI is set: install it (scripts/deps.sh)");
        }
        eprintln!(
            "SKIP wireshark_decodes_writer_output: tshark not installed; NOT RUN, not passed"
        );
        return;
    }
    let cases: Vec<(u8, Vec<SyncEntry>)> = vec![
        (5, vec![conn_v4_dr()]),
        (6, vec![conn_v6_nat()]),
        (7, vec![template_v4()]),
        (8, vec![fwmark_template_v4()]),
        (
            9,
            vec![
                conn_v4_dr(),
                conn_v6_nat(),
                template_v4(),
                fwmark_template_v4(),
            ],
        ),
    ];
    let msgs: Vec<Vec<u8>> = cases.iter().map(|(id, es)| message(*id, es)).collect();
    let dir = std::env::temp_dir().join(format!("xdpvs-sync-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sync.pcap");
    write_pcap(&path, &msgs.iter().map(|m| frame(m)).collect::<Vec<_>>());
    let got = tshark_fields(&path);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(got.len(), cases.len(), "one line per packet");
    for (((id, es), msg), pkt) in cases.iter().zip(&msgs).zip(&got) {
        for (field, want) in expected(*id, msg, es) {
            let have = &pkt.iter().find(|(f, _)| f == field).unwrap().1;
            let norm: Vec<String> = if field.contains("addr") {
                have.clone()
            } else {
                have.iter().map(|v| num(v).to_string()).collect()
            };
            assert_eq!(norm, want, "syncid {id}: field {field}");
        }
    }
}
