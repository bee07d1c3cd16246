//! `xdpvs run` end to end in the lab: the real binary on real veths (AF_XDP,
//! XDP native and generic), python's http.server and a UDP echo as real
//! servers, python's http.client and UDP sockets as real clients.
//!
//! Root only (network namespaces, XDP); each test says why it skips
//! otherwise. The lab's namespace names are fixed, so the tests take a lock
//! and run one at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

mod labkit;

use labkit::{reals, sha256_file};
use xdpvs_lab::demo::DirectorProcess;
use xdpvs_lab::{Lab, LabMode, Request, Response};

static LAB: Mutex<()> = Mutex::new(());

const BIG: usize = 4 << 20;

fn skip(name: &str) -> bool {
    xdpvs::dataplane::testutil::skip_without_root(name)
}

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xdpvs"))
}

/// The lab's director config: a fwmark group (80 + 443, /24 persistence),
/// a wrr service with per-host persistence and weights 3/1/0, a persistent
/// UDP service with a short timeout, and an IPv6 service.
fn config(lab: &Lab, xdp: &str, fwd: &str) -> String {
    let vip4 = lab.env("LAB_VIP4");
    let vip6 = lab.env("LAB_VIP6");
    let nat_port = |p: u16| if fwd == "nat" { Some(p) } else { None };
    // The generic-mode run also runs the opt-in tuning: tables on huge
    // pages, faulted in at start, and a short busy poll before a shard
    // sleeps; and it runs without the fast path (every packet through the
    // AF_XDP sockets and the shards).
    let tuning = if xdp == "generic" {
        "hugepages = true\nprefault = true\nbusy_poll_us = 20\nfast_path = false"
    } else {
        ""
    };
    format!(
        r#"{director}
[timeouts]
tcp = 900
tcp_fin = 120
udp = 1

[[fwmark]]
mark = 1
rules = [ {{ vip = "{vip4}", proto = "tcp", ports = "80,443" }} ]

[[service]]
name = "web"
fwmark = 1
scheduler = "rr"
persistence = {{ timeout = 300, netmask = "255.255.255.0", prefix6 = 64 }}
{web}
[[service]]
name = "weighted"
proto = "tcp"
vip = "{vip4}"
port = 8080
scheduler = "wrr"
persistence = {{ timeout = 300, netmask = "255.255.255.255" }}
{weighted}
[[service]]
name = "echo"
proto = "udp"
vip = "{vip4}"
port = 5353
scheduler = "rr"
persistence = {{ timeout = 2, netmask = "255.255.255.0" }}
{echo}
[[service]]
name = "web6"
proto = "tcp"
vip = "{vip6}"
port = 80
scheduler = "rr"
{web6}
[[service]]
name = "echo6"
proto = "udp"
vip = "{vip6}"
port = 5353
scheduler = "rr"
{echo6}"#,
        director = labkit::director_section(lab, xdp, tuning),
        web = reals(lab, "LAB_RS_IP4", fwd, &[1, 1, 1], None),
        weighted = reals(lab, "LAB_RS_IP4", fwd, &[3, 1, 0], nat_port(8080)),
        echo = reals(lab, "LAB_RS_IP4", fwd, &[1, 1, 1], nat_port(5353)),
        web6 = reals(lab, "LAB_RS_IP6", fwd, &[1, 1, 1], nat_port(80)),
        echo6 = reals(lab, "LAB_RS_IP6", fwd, &[1, 1, 1], nat_port(5353)),
    )
}

/// Fields drop in order: the director stops before the lab goes away.
struct Running {
    director: DirectorProcess,
    lab: Lab,
}

fn start(mode: LabMode, xdp: &str) -> Running {
    let mut lab = Lab::up(mode).expect("lab up");
    lab.start_http(&[80, 443, 8080], BIG).expect("http servers");
    lab.start_udp_echo(5353).expect("udp echo");
    let fwd = match mode {
        LabMode::Dr => "dr",
        LabMode::Nat => "nat",
    };
    let cfg = lab.dir().join("director.toml");
    std::fs::write(&cfg, config(&lab, xdp, fwd)).expect("write config");
    let check = Command::new(exe())
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .expect("xdpvs check");
    assert!(
        check.status.success(),
        "config refused: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let ns = lab.env("LAB_NS_DIR");
    let director = DirectorProcess::start(&exe(), &ns, &cfg, &lab.dir().join("director.log"))
        .expect("director start");
    Running { lab, director }
}

fn servers(res: &[Response]) -> Vec<String> {
    res.iter()
        .map(|r| r.server().unwrap_or("FAILED").to_string())
        .collect()
}

fn all_ok(what: &str, reqs: &[Request], res: &[Response], log: &str) {
    for (q, r) in reqs.iter().zip(res) {
        assert!(
            r.ok,
            "{what}: {} -> {}:{} failed: {} (status {})\n--- director log ---\n{log}",
            q.src, q.dst, q.port, r.error, r.status
        );
    }
}

/// Sum of `key N` fields over the "shard i:" lines of the final counters.
fn shard_counter(log: &str, key: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.trim_start().starts_with("shard "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.windows(2)
                .find(|w| w[0] == key)
                .and_then(|w| w[1].parse().ok())
                .unwrap_or(0)
        })
        .collect()
}

/// Firewall mark, netmask persistence and spread: 4 client /24s x 4 hosts,
/// each host to port 80 then 443, twice. Returns group -> servers reached.
fn fwmark_groups(r: &Running) -> BTreeMap<u8, BTreeSet<String>> {
    let vip = r.lab.env("LAB_VIP4");
    let mut reqs = Vec::new();
    let mut groups = Vec::new();
    for round in 0..2 {
        for g in 0..4u8 {
            for h in 1..=4u8 {
                for port in [80u16, 443] {
                    let _ = round;
                    reqs.push(Request::http(&r.lab.client4(g, h), &vip, port));
                    groups.push(g);
                }
            }
        }
    }
    let res = r.lab.requests(&reqs).expect("requests");
    all_ok("fwmark", &reqs, &res, &r.director.log_text());
    let mut by_group: BTreeMap<u8, BTreeSet<String>> = BTreeMap::new();
    for (g, s) in groups.iter().zip(servers(&res)) {
        by_group.entry(*g).or_default().insert(s);
    }
    by_group
}

fn download(r: &Running, src: &str, dst: &str, port: u16, expect: &str) {
    let mut q = Request::http(src, dst, port);
    q.path = Some("/big".into());
    q.timeout = 30.0;
    let res = r.lab.requests(std::slice::from_ref(&q)).expect("download");
    let got = &res[0];
    assert!(
        got.ok,
        "download {dst}:{port} from {src} failed: {}\n{}",
        got.error,
        r.director.log_text()
    );
    assert_eq!(got.len, BIG as u64, "download {dst}:{port}: length");
    assert_eq!(got.sha256, expect, "download {dst}:{port}: content differs");
}

fn udp_echo(r: &Running, src: &str, dst: &str, n: usize) -> Vec<String> {
    let reqs: Vec<Request> = (0..n).map(|_| Request::udp(src, dst, 5353)).collect();
    let res = r.lab.requests(&reqs).expect("udp");
    all_ok("udp", &reqs, &res, &r.director.log_text());
    servers(&res)
}

fn xdp_attached(lab: &Lab) -> Vec<String> {
    let ns = lab.env("LAB_NS_DIR");
    lab.env_list("LAB_DIR_IFS")
        .into_iter()
        .filter(|i| {
            let out = lab
                .exec(&ns, &["ip", "-d", "link", "show", "dev", i])
                .expect("ip link");
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.contains("prog/xdp")
        })
        .collect()
}

/// The host's own traffic while the director runs: ping the director's
/// address (with ARP resolved anew) and TCP to a port of its own.
fn non_vip_traffic(r: &mut Running) {
    let ns_dir = r.lab.env("LAB_NS_DIR");
    let ns_rt = r.lab.env("LAB_NS_ROUTER");
    let dir_ip = r.lab.env("LAB_DIR_IP4");
    let _ = r.lab.exec(&ns_rt, &["ip", "neigh", "flush", "to", &dir_ip]);
    let ping = r
        .lab
        .exec(
            &ns_rt,
            &["ping", "-c", "2", "-i", "0.2", "-W", "2", &dir_ip],
        )
        .expect("ping");
    assert!(
        ping.status.success(),
        "ping to the director failed while it runs: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let neigh = r
        .lab
        .exec(&ns_rt, &["ip", "neigh", "show", "to", &dir_ip])
        .expect("ip neigh");
    assert!(
        String::from_utf8_lossy(&neigh.stdout).contains("lladdr"),
        "ARP for the director did not resolve: {}",
        String::from_utf8_lossy(&neigh.stdout)
    );
    // A TCP service of the director host itself (think SSH) on its own address.
    r.lab
        .spawn(
            "director-own-http",
            &ns_dir,
            &["python3", "-m", "http.server", "8022", "--bind", &dir_ip],
        )
        .expect("own server");
    std::thread::sleep(Duration::from_millis(700));
    let q = Request::http(&r.lab.client4(0, 1), &dir_ip, 8022);
    let res = r.lab.requests(std::slice::from_ref(&q)).expect("own tcp");
    assert!(
        res[0].ok,
        "TCP to the director's own address failed: {}",
        res[0].error
    );
    r.lab.kill("director-own-http");
}

/// After attaching, every thread of the director holds only CAP_NET_ADMIN,
/// CAP_NET_RAW, CAP_IPC_LOCK and CAP_BPF (effective, permitted, bounding).
fn least_privilege(r: &Running) {
    let want: u64 = (1 << 12) | (1 << 13) | (1 << 14) | (1 << 39);
    let pid = r.director.pid().expect("director pid");
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    let mut n = 0;
    for t in tasks.flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        for key in ["CapEff:", "CapPrm:", "CapBnd:"] {
            let v = status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .unwrap_or(u64::MAX);
            assert_eq!(
                v,
                want,
                "thread {} ({}) {key} {v:#x}, want {want:#x}",
                t.file_name().to_string_lossy(),
                comm.trim()
            );
        }
        n += 1;
    }
    assert!(
        n >= 4,
        "expected the control, shard and neighbour threads, saw {n}"
    );
}

/// The control thread (the main thread) gives way to the shards: with a
/// shard on every CPU (no `cores` in this config) it runs at nice 10, while
/// every other thread keeps nice 0.
fn control_thread_yields(r: &Running) {
    let pid = r.director.pid().expect("director pid");
    let nice = |tid: &str| -> i64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap_or_default();
        // Fields after the ")" of comm: state is field 3, nice is field 19.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(16))
            .and_then(|v| v.parse().ok())
            .unwrap_or(i64::MIN)
    };
    assert_eq!(nice(&pid.to_string()), 10, "control thread nice");
    let mut others = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
    {
        let tid = t.file_name().to_string_lossy().to_string();
        if tid != pid.to_string() {
            assert_eq!(nice(&tid), 0, "thread {tid} must keep nice 0");
            others += 1;
        }
    }
    assert!(others >= 2, "expected shard threads, saw {others}");
}

/// Per-host persistence (/32) on a wrr service, weights 3/1/0: 64 hosts.
fn weighted_spread(r: &Running) -> BTreeMap<String, usize> {
    let vip = r.lab.env("LAB_VIP4");
    let mut reqs = Vec::new();
    for g in 0..4u8 {
        for h in 1..=16u8 {
            reqs.push(Request::http(&r.lab.client4(g, h), &vip, 8080));
        }
    }
    let res = r.lab.requests(&reqs).expect("requests");
    all_ok("wrr", &reqs, &res, &r.director.log_text());
    let mut count = BTreeMap::new();
    for s in servers(&res) {
        *count.entry(s).or_default() += 1;
    }
    count
}

fn assert_persistent_groups(by_group: &BTreeMap<u8, BTreeSet<String>>) {
    for (g, s) in by_group {
        assert_eq!(
            s.len(),
            1,
            "client group 198.18.{}.0/24 reached {s:?} on ports 80/443: persistence across the mark broken",
            100 + *g as u16
        );
    }
    let used: BTreeSet<&String> = by_group.values().flatten().collect();
    assert!(
        used.len() >= 2,
        "4 client groups all went to {used:?}: the scheduler does not spread groups"
    );
}

#[test]
fn dr_native_two_shards_persistence_fwmark_weights_udp_ipv6() {
    if skip("dr_native_two_shards_persistence_fwmark_weights_udp_ipv6") {
        return;
    }
    let _l = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let mut r = start(LabMode::Dr, "native");
    let big_sha = sha256_file(&r.lab.dir().join("rs1/big"));

    // Firewall mark 80 + 443, /24 netmask: each group keeps one server.
    let by_group = fwmark_groups(&r);
    assert_persistent_groups(&by_group);

    // wrr 3/1/0 with per-host persistence: 64 hosts spread by weight.
    let count = weighted_spread(&r);
    assert_eq!(count.get("rs3"), None, "weight 0 got clients: {count:?}");
    let rs1 = count.get("rs1").copied().unwrap_or(0);
    let rs2 = count.get("rs2").copied().unwrap_or(0);
    assert!(
        (40..=56).contains(&rs1) && (8..=24).contains(&rs2),
        "wrr 3:1:0 over 64 hosts gave {count:?}"
    );

    // Multi-megabyte download, byte-exact, IPv4 and IPv6.
    download(
        &r,
        &r.lab.client4(1, 5),
        &r.lab.env("LAB_VIP4"),
        80,
        &big_sha,
    );
    download(&r, &r.lab.client6(3), &r.lab.env("LAB_VIP6"), 80, &big_sha);

    // UDP persistence: one client keeps its server while the template lives
    // (each request is a new connection that re-arms it) ...
    let vip4 = r.lab.env("LAB_VIP4");
    let client = r.lab.client4(2, 7);
    let first = udp_echo(&r, &client, &vip4, 5);
    assert!(
        first.iter().all(|s| s == &first[0]),
        "UDP persistence broken: {first:?}"
    );
    // ... and once it has expired (udp 1 s, template 2 s, re-armed while its
    // connection lived), the scheduler decides again: rr moves on.
    std::thread::sleep(Duration::from_millis(4500));
    let after = udp_echo(&r, &client, &vip4, 2);
    assert_ne!(
        after[0], first[0],
        "after the persistence timeout the scheduler should decide again (rr moves on)"
    );
    assert_eq!(after[0], after[1], "new template not honoured: {after:?}");

    // IPv6 UDP through the director.
    let v6 = udp_echo(&r, &r.lab.client6(5), &r.lab.env("LAB_VIP6"), 2);
    assert_eq!(v6.len(), 2);

    non_vip_traffic(&mut r);
    assert_eq!(
        xdp_attached(&r.lab).len(),
        1,
        "XDP should be attached while running"
    );
    least_privilege(&r);
    control_thread_yields(&r);

    let log = r.director.stop();
    let rx = shard_counter(&log, "rx");
    let handoff = shard_counter(&log, "handoff_out");
    assert_eq!(rx.len(), 2, "two shards expected:\n{log}");
    assert!(
        rx.iter().all(|&n| n > 0),
        "both queues should receive flows (native veth spreads by flow hash): {rx:?}\n{log}"
    );
    assert!(
        handoff.iter().sum::<u64>() > 0,
        "the hand-off path was not used:\n{log}"
    );
    assert!(
        xdp_attached(&r.lab).is_empty(),
        "an XDP program is left attached after xdpvs exited"
    );
}

#[test]
fn nat_native_full_sessions_udp_ipv6() {
    if skip("nat_native_full_sessions_udp_ipv6") {
        return;
    }
    let _l = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let mut r = start(LabMode::Nat, "native");
    let big_sha = sha256_file(&r.lab.dir().join("rs2/big"));

    let by_group = fwmark_groups(&r);
    assert_persistent_groups(&by_group);
    let count = weighted_spread(&r);
    assert_eq!(count.get("rs3"), None, "weight 0 got clients: {count:?}");

    download(
        &r,
        &r.lab.client4(0, 3),
        &r.lab.env("LAB_VIP4"),
        443,
        &big_sha,
    );
    download(&r, &r.lab.client6(2), &r.lab.env("LAB_VIP6"), 80, &big_sha);

    let s4 = udp_echo(&r, &r.lab.client4(3, 2), &r.lab.env("LAB_VIP4"), 3);
    assert!(s4.iter().all(|s| s == &s4[0]), "UDP persistence: {s4:?}");
    udp_echo(&r, &r.lab.client6(7), &r.lab.env("LAB_VIP6"), 2);

    non_vip_traffic(&mut r);
    let log = r.director.stop();
    assert!(
        shard_counter(&log, "tx").iter().sum::<u64>() > 0,
        "no frames sent:\n{log}"
    );
    assert!(xdp_attached(&r.lab).is_empty(), "XDP left attached");
}

#[test]
fn dr_generic_mode_forwards_with_persistence() {
    if skip("dr_generic_mode_forwards_with_persistence") {
        return;
    }
    let _l = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let r = start(LabMode::Dr, "generic");
    let big_sha = sha256_file(&r.lab.dir().join("rs3/big"));
    let by_group = fwmark_groups(&r);
    assert_persistent_groups(&by_group);
    download(
        &r,
        &r.lab.client4(2, 9),
        &r.lab.env("LAB_VIP4"),
        443,
        &big_sha,
    );
    // `fast_path = false`: nothing forwarded by the XDP program, every
    // packet through the shard.
    let st = Command::new("ip")
        .args(["netns", "exec", &r.lab.env("LAB_NS_DIR")])
        .arg(exe())
        .args(["list", "--json", "-s"])
        .arg(r.lab.dir().join("xdpvs.sock"))
        .output()
        .expect("xdpvs list");
    let st: xdpvs::control::status::Status =
        serde_json::from_slice(&st.stdout).expect("status json");
    let fp = st.fast_path.expect("fast path status");
    assert!(!fp.on, "fast_path = false: {fp:?}");
    assert_eq!((fp.packets, fp.flows, fp.installs), (0, 0, 0), "{fp:?}");
    assert!(fp.slow_packets > 300, "{fp:?}");
    let mut r = r;
    let log = r.director.stop();
    assert!(xdp_attached(&r.lab).is_empty(), "XDP left attached:\n{log}");
    // Generic XDP on a 2-queue veth: only queue 0 receives, so the default
    // plan runs one shard on it (a second would never see a packet).
    assert!(
        log.contains("dr0: 2 RX queue(s) (generic XDP on a virtual device: only queue 0 receives); shard 0: cpu "),
        "shard plan:\n{log}"
    );
    assert_eq!(shard_counter(&log, "rx").len(), 1, "one shard:\n{log}");
    // `hugepages = true` (config above): every shard advised its tables.
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if thp.contains("[madvise]") || thp.contains("[always]") {
        let advised = log
            .lines()
            .filter(|l| l.contains("tables advised to use transparent huge pages"))
            .count();
        assert!(advised >= 1, "no shard advised huge pages:\n{log}");
    }
    // `prefault = true`: every shard faulted its tables in before serving.
    let prefaulted = log
        .lines()
        .filter(|l| l.contains("table memory prefaulted"))
        .count();
    assert!(prefaulted >= 1, "no shard prefaulted its tables:\n{log}");
}
