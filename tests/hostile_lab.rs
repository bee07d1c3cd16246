//! Hostile frames against a running `xdpvs run` in the lab, while a real
//! client keeps a persistent session: every frame of `tests/hostile/frames.py`
//! (truncated at each header, lying lengths, bad IHL / data offset, IPv6
//! extension chains, fragments, options, VLAN tags, unknown EtherTypes, ICMP
//! errors with cut quotes) is sent from the LAN straight to the director's
//! MAC, 50 times each. Each must end where the table says: passed to the
//! kernel by the XDP filter (not ours), or counted by the engine under its
//! reason, or forwarded (legal oddities). The director never stops, and the
//! real client never fails nor changes server. Then path MTU discovery: an
//! ICMP "fragmentation needed" about a tracked connection must reach that
//! connection's real server, and no other.
//!
//! Root only (network namespaces, XDP, raw sockets).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use xdpvs::control::status::Status;
use xdpvs_lab::demo::DirectorProcess;
use xdpvs_lab::{Lab, LabMode, Request};

mod labkit;
use labkit::director_mac;

const COPIES: u32 = 50;

/// Where each frame must end up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// The XDP filter leaves it to the kernel: the director never sees it.
    Kernel,
    /// The engine drops it and counts it under this reason.
    Counted(&'static str),
    /// Legal, if odd: forwarded to a real server.
    Forwarded,
    /// Redirected, but not ours (an ICMP error about no connection).
    NotOurs,
}

const TABLE: &[(&str, Fate)] = &[
    ("eth_no_payload", Fate::Kernel),
    ("ipv4_truncated_header", Fate::Kernel),
    ("ipv4_bad_version", Fate::Kernel),
    ("ipv4_ihl_below_5", Fate::Kernel),
    ("ipv4_ihl_beyond_packet", Fate::Kernel),
    ("ipv4_total_len_lies", Fate::Kernel),
    ("ipv4_total_len_short", Fate::Counted("truncated_tcp")),
    ("tcp_truncated", Fate::Counted("truncated_tcp")),
    ("tcp_doff_below_5", Fate::Counted("bad_tcp_offset")),
    ("tcp_doff_past_end", Fate::Counted("bad_tcp_offset")),
    ("ipv4_options_syn", Fate::Forwarded),
    ("first_fragment", Fate::Counted("fragment")),
    ("non_first_fragment", Fate::Counted("fragment")),
    ("udp_zero_length", Fate::Counted("udp_len_mismatch")),
    ("udp_length_too_big", Fate::Counted("udp_len_mismatch")),
    ("udp_truncated", Fate::Counted("truncated_udp")),
    (
        "icmp_error_inner_truncated",
        Fate::Counted("icmp_inner_truncated"),
    ),
    ("icmp_error_no_conn", Fate::NotOurs),
    ("vlan_tagged_syn", Fate::Forwarded),
    ("vlan_truncated", Fate::Kernel),
    ("unknown_ethertype", Fate::Kernel),
    ("ipv6_truncated", Fate::Kernel),
    ("ipv6_payload_len_lies", Fate::Kernel),
    (
        "ipv6_ext_chain_long",
        Fate::Counted("ext_header_chain_too_long"),
    ),
    ("ipv6_ext_hbh_not_first", Fate::Counted("ext_header_order")),
    ("ipv6_ext_truncated", Fate::Counted("truncated_ipv6_ext")),
    ("ipv6_fragment_header", Fate::Counted("fragment")),
    ("tcp_ack_no_conn", Fate::Counted("not_syn")),
];

fn frames_py() -> String {
    format!("{}/tests/hostile/frames.py", env!("CARGO_MANIFEST_DIR"))
}

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xdpvs"))
}

const CONFIG: &str = r#"
[director]
interfaces = ["dr0"]
xdp_mode = "native"
control_socket = "SOCK"
metrics = "off"

[[fwmark]]
mark = 1
rules = [ { vip = "198.18.0.100", proto = "tcp", ports = "80,443" } ]

[[service]]
name = "web"
fwmark = 1
scheduler = "rr"
persistence = { timeout = 300, netmask = "255.255.255.0" }
  [[service.real]]
  addr = "198.18.0.11"
  [[service.real]]
  addr = "198.18.0.12"
  [[service.real]]
  addr = "198.18.0.13"

[[service]]
name = "dns"
proto = "udp"
vip = "198.18.0.100"
port = 5353
  [[service.real]]
  addr = "198.18.0.13"

[[service]]
name = "web6"
proto = "tcp"
vip = "2001:db8::100"
port = 80
  [[service.real]]
  addr = "2001:db8::11"
"#;

/// Engine/shard counters summed over shards: rx, tx, not_ours, drop and
/// malformed reasons.
fn counters(lab: &Lab, sock: &std::path::Path) -> HashMap<String, u64> {
    let out = lab
        .exec(
            &lab.env("LAB_NS_DIR"),
            &[
                exe().to_str().unwrap_or("xdpvs"),
                "stats",
                "--json",
                "-s",
                sock.to_str().unwrap_or_default(),
            ],
        )
        .expect("stats");
    let st: Status = serde_json::from_slice(&out.stdout).expect("stats json");
    let mut m: HashMap<String, u64> = HashMap::new();
    for s in &st.shards {
        *m.entry("rx".into()).or_default() += s.rx;
        *m.entry("tx".into()).or_default() += s.tx;
        *m.entry("not_ours".into()).or_default() += s.passed_unhandled;
        for (k, v) in s.dropped.iter().chain(s.malformed.iter()) {
            *m.entry(k.clone()).or_default() += v;
        }
    }
    m
}

fn delta(a: &HashMap<String, u64>, b: &HashMap<String, u64>) -> HashMap<String, u64> {
    b.iter()
        .filter_map(|(k, v)| {
            let d = v - a.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

fn icmp_dest_unreachs(lab: &Lab, ns: &str) -> u64 {
    let out = lab.exec(ns, &["cat", "/proc/net/snmp"]).expect("snmp");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines().filter(|l| l.starts_with("Icmp:"));
    let names: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let vals: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    names
        .iter()
        .position(|n| *n == "InDestUnreachs")
        .and_then(|i| vals.get(i))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn hostile_frames_are_counted_and_the_real_client_never_notices() {
    if xdpvs::dataplane::testutil::skip_without_root("hostile frames") {
        return;
    }
    let mut lab = Lab::up(LabMode::Dr).expect("lab");
    lab.start_http(&[80, 443], 0).expect("http");
    let sock = lab.dir().join("xdpvs.sock");
    let cfg = lab.dir().join("xdpvs.toml");
    std::fs::write(&cfg, CONFIG.replace("SOCK", &sock.to_string_lossy())).expect("cfg");
    let ns_dir = lab.env("LAB_NS_DIR");
    let ns_rt = lab.env("LAB_NS_ROUTER");
    let mut director =
        DirectorProcess::start(&exe(), &ns_dir, &cfg, &lab.dir().join("director.log"))
            .expect("director");
    std::thread::sleep(Duration::from_millis(300));
    let mac = director_mac(&lab);
    let vip = lab.env("LAB_VIP4");
    let client = lab.client4(2, 4);
    let ask = |lab: &Lab| -> String {
        let r = lab
            .requests(&[Request::http(&client, &vip, 443)])
            .expect("request");
        assert!(r[0].ok, "the real client failed: {}", r[0].error);
        r[0].server().unwrap_or_default().to_string()
    };
    let server = ask(&lab);

    let mut failures = Vec::new();
    for (i, (name, fate)) in TABLE.iter().enumerate() {
        let before = counters(&lab, &sock);
        let st = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns_rt,
                "python3",
                &frames_py(),
                "send",
                "lan0",
            ])
            .args([&mac, *name, &COPIES.to_string()])
            .stderr(Stdio::piped())
            .output()
            .expect("send");
        assert!(
            st.status.success(),
            "sending {name}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
        let d = delta(&before, &counters(&lab, &sock));
        let n = u64::from(COPIES);
        let rx = d.get("rx").copied().unwrap_or(0);
        let ok = match fate {
            Fate::Kernel => rx == 0,
            Fate::Counted(reason) => rx == n && d.get(*reason).copied() == Some(n),
            Fate::Forwarded => rx == n && d.get("tx").copied().unwrap_or(0) >= n,
            Fate::NotOurs => rx == n && d.get("not_ours").copied() == Some(n),
        };
        if !ok {
            failures.push(format!("{name}: expected {fate:?}, counters moved {d:?}"));
        }
        if i % 5 == 4 {
            assert_eq!(ask(&lab), server, "the client changed server after {name}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(ask(&lab), server);

    // Path MTU discovery through the director: hold a connection open, then
    // a router on the path says "fragmentation needed" about the packets
    // the real server sends to the client.
    let ns_cl = lab.env("LAB_NS_CLIENT");
    let mut holder = Command::new("ip")
        .args(["netns", "exec", &ns_cl, "python3", "-c"])
        .arg(
            "import socket,time,sys\n\
             s=socket.socket(); s.bind(('198.18.101.5',0)); s.connect(('198.18.0.100',80))\n\
             s.send(b'GET / HTTP/1.1\\r\\n'); print(s.getsockname()[1], flush=True); time.sleep(8)",
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("holder");
    let mut port = String::new();
    {
        use std::io::BufRead;
        let out = holder.stdout.take().expect("stdout");
        let _ = std::io::BufReader::new(out).read_line(&mut port);
    }
    let port = port.trim().to_string();
    assert!(!port.is_empty(), "the held connection did not open");
    let conns = lab
        .exec(
            &ns_dir,
            &[
                exe().to_str().unwrap_or("xdpvs"),
                "list",
                "--connections",
                "-s",
                sock.to_str().unwrap_or_default(),
            ],
        )
        .expect("list");
    let conns = String::from_utf8_lossy(&conns.stdout).to_string();
    let line = conns
        .lines()
        .find(|l| l.contains(&format!("198.18.101.5:{port} ")))
        .unwrap_or_else(|| panic!("connection not listed:\n{conns}"))
        .to_string();
    let rs_addr = line
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string();
    let idx: usize = match rs_addr.split(':').next() {
        Some("198.18.0.11") => 0,
        Some("198.18.0.12") => 1,
        _ => 2,
    };
    let rs_ns = lab.rs_namespaces();
    let before: Vec<u64> = rs_ns.iter().map(|n| icmp_dest_unreachs(&lab, n)).collect();
    let st = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns_rt,
            "python3",
            &frames_py(),
            "pmtu",
            "lan0",
        ])
        .args([&mac, "198.18.101.5", &port, "1300"])
        .output()
        .expect("pmtu");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
    let after: Vec<u64> = rs_ns.iter().map(|n| icmp_dest_unreachs(&lab, n)).collect();
    for (i, (a, b)) in before.iter().zip(after.iter()).enumerate() {
        let want = u64::from(i == idx);
        assert_eq!(
            b - a,
            want,
            "ICMP frag-needed for a connection of rs{} reached rs{} {} time(s)",
            idx + 1,
            i + 1,
            b - a
        );
    }
    let _ = holder.kill();
    let _ = holder.wait();
    let log = director.stop();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("final counters"),
        "the director did not exit cleanly:\n{log}"
    );
}
