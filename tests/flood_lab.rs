//! A SYN flood against a running director, in the lab: 2 million TCP SYNs
//! from random spoofed sources (198.18.0.0/15 only; the AF_XDP generator
//! `xdpvs-loadgen --syn-flood`, bounded in count and time) at the VIP while
//! real persistent clients keep working. The connection table stays within
//! its configured capacity (half-open entries are evicted first), resident
//! memory stays bounded, and every legitimate request succeeds on its
//! client group's real server.
//!
//! Root only (network namespaces, XDP).

mod labkit;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use labkit::{director_mac, exe, lab_lock, rss_kib, skip, start_echo, Held};
use xdpvs::control::status::Status;
use xdpvs_lab::demo::DirectorProcess;
use xdpvs_lab::{Lab, LabMode, Request};

const FLOOD: u64 = 2_000_000;
const CAPACITY: u64 = 100_000;

#[test]
fn syn_flood_keeps_memory_bounded_and_legitimate_clients_served() {
    if skip("syn_flood_keeps_memory_bounded_and_legitimate_clients_served") {
        return;
    }
    let _l = lab_lock();
    let loadgen = std::path::PathBuf::from(env!("CARGO_BIN_EXE_xdpvs-loadgen"));
    let mut lab = Lab::up(LabMode::Dr).expect("lab");
    lab.start_http(&[80], 0).expect("http");
    start_echo(&mut lab);
    let sock = lab.dir().join("xdpvs.sock");
    let cfg = lab.dir().join("xdpvs.toml");
    let mut reals = String::new();
    let mut echo_reals = String::new();
    for a in lab.env_list("LAB_RS_IP4") {
        reals.push_str(&format!("  [[service.real]]\n  addr = \"{a}\"\n"));
        echo_reals.push_str(&format!(
            "  [[service.real]]\n  addr = \"{a}\"\n  port = 7000\n"
        ));
    }
    std::fs::write(
        &cfg,
        format!(
            "[director]\ninterfaces = [\"dr0\"]\nxdp_mode = \"native\"\ncontrol_socket = \"{}\"\nmetrics = \"off\"\nconn_capacity = {CAPACITY}\n\n[[service]]\nname = \"web\"\nproto = \"tcp\"\nvip = \"198.18.0.100\"\nport = 80\nscheduler = \"rr\"\npersistence = {{ timeout = 600, netmask = \"255.255.255.0\" }}\n{reals}\n[[service]]\nname = \"echo\"\nproto = \"tcp\"\nvip = \"198.18.0.100\"\nport = 7000\nscheduler = \"rr\"\n{echo_reals}",
            sock.display()
        ),
    )
    .expect("cfg");
    let ns_dir = lab.env("LAB_NS_DIR");
    let mut director =
        DirectorProcess::start(&exe(), &ns_dir, &cfg, &lab.dir().join("director.log"))
            .expect("director");
    let pid = director.pid().expect("pid");
    let vip = lab.env("LAB_VIP4");
    let ask = |lab: &Lab| -> BTreeMap<u8, String> {
        let reqs: Vec<Request> = (0..4u8)
            .map(|g| {
                // A SYN may be lost while the director is saturated: room
                // for the client's SYN retransmits (1 s, 3 s).
                let mut r = Request::http(&lab.client4(g, 3), &vip, 80);
                r.timeout = 10.0;
                r
            })
            .collect();
        let res = lab.requests(&reqs).expect("requests");
        (0..4u8)
            .zip(res)
            .map(|(g, r)| {
                assert!(
                    r.ok,
                    "a legitimate request failed under the flood: {}",
                    r.error
                );
                (g, r.server().unwrap_or_default().to_string())
            })
            .collect()
    };
    let before = ask(&lab);
    // Established sessions held open across the flood (a plain service, no
    // persistence): if the full table evicted them instead of the flood's
    // half-open entries, their next segment would be dropped (not a SYN).
    let mut held: Vec<(Held, String)> = (0..4u8)
        .map(|g| {
            let mut h = Held::open(&lab, &lab.client4(g, 9), 10);
            let first = h.ask(0);
            assert!(first.ends_with(" ping 0"), "echo before the flood: {first}");
            let rs = first.split(' ').next().unwrap_or_default().to_string();
            (h, rs)
        })
        .collect();
    let rss0 = rss_kib(pid);
    let mac = director_mac(&lab);
    let ns_rt = lab.env("LAB_NS_ROUTER");
    let mut flood = Command::new("ip")
        .args(["netns", "exec", &ns_rt])
        .arg(&loadgen)
        .args(["--iface", "lan0", "--dst-mac", &mac, "--syn-flood"])
        .args(["--dst", "198.18.0.100", "--dst-ports", "80"])
        .args(["--count", &FLOOD.to_string(), "--duration", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loadgen");
    // Legitimate clients during the flood.
    let mut rounds = 0;
    while flood.try_wait().ok().flatten().is_none() && rounds < 40 {
        assert_eq!(
            ask(&lab),
            before,
            "a client group changed server under the flood"
        );
        rounds += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = flood.wait_with_output().expect("loadgen wait");
    assert!(
        out.status.success(),
        "loadgen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ask(&lab), before, "after the flood");
    for (i, (h, rs)) in held.iter_mut().enumerate() {
        assert_eq!(
            h.ask(1),
            format!("{rs} ping 1"),
            "established session {i} did not survive the flood"
        );
    }
    let st: Status = serde_json::from_slice(
        &lab.exec(
            &ns_dir,
            &[
                exe().to_str().unwrap_or("xdpvs"),
                "stats",
                "--json",
                "-s",
                sock.to_str().unwrap_or_default(),
            ],
        )
        .expect("stats")
        .stdout,
    )
    .expect("stats json");
    let rx: u64 = st.shards.iter().map(|s| s.rx).sum();
    assert!(
        rx >= FLOOD / 2,
        "the flood did not reach the director: rx {rx}"
    );
    let evicted: u64 = st.shards.iter().map(|s| s.evicted_conns).sum();
    assert!(
        evicted > 0,
        "the flood never filled the table (nothing evicted): the test proves nothing"
    );
    for (i, s) in st.shards.iter().enumerate() {
        assert!(
            s.conns <= CAPACITY,
            "shard {i} holds {} connections, capacity {CAPACITY}",
            s.conns
        );
    }
    let rss1 = rss_kib(pid);
    // Two shards' tables at capacity are a few MiB; allow slack for the
    // allocator, never the flood's size (2M entries would be >100 MiB).
    assert!(
        rss1 <= rss0 + 48 * 1024,
        "memory grew from {rss0} KiB to {rss1} KiB under the flood"
    );
    let log = director.stop();
    assert!(!log.contains("panicked"), "{log}");
    eprintln!(
        "flood: {FLOOD} SYNs, director rx {rx}, evicted {evicted}, rss {rss0} -> {rss1} KiB, {rounds} legit rounds ok\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
