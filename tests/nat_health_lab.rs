//! NAT with health checks, as a user runs it: a two-arm NAT director whose
//! real servers route through it, IPv4 and IPv6 services with persistence,
//! a UDP service, and tcp / http / udp health checks on the real servers'
//! service ports. The probes' answers come from the very (address, port)
//! pairs whose packets the XDP filter redirects for NAT, but they are
//! addressed to the director host itself and must stay in the kernel.
//!
//! Root only (network namespaces, XDP); under CI a skip is a failure.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

mod labkit;

use labkit::{director_section, exe, lab_lock, skip};
use xdpvs::control::status::Status;
use xdpvs_lab::demo::DirectorProcess;
use xdpvs_lab::{Lab, LabMode, Request};

const INTERVAL_S: u64 = 1;
const FALL: u64 = 2;
const RISE: u64 = 2;

/// One NAT service on `vip:port` over the lab's real servers (`key`, e.g.
/// `LAB_RS_IP4`) at `rport`, with `persistence` (a TOML line or "") and a
/// health check for every real server.
#[allow(clippy::too_many_arguments)]
fn service(
    lab: &Lab,
    name: &str,
    proto: &str,
    vip: &str,
    port: u16,
    persistence: &str,
    health: &str,
    key: &str,
    rport: u16,
) -> String {
    let mut s = format!(
        "[[service]]\nname = \"{name}\"\nproto = \"{proto}\"\nvip = \"{vip}\"\nport = {port}\nscheduler = \"rr\"\n{persistence}health = {health}\n"
    );
    for a in lab.env_list(key) {
        s.push_str(&format!(
            "  [[service.real]]\n  addr = \"{a}\"\n  port = {rport}\n  forward = \"nat\"\n"
        ));
    }
    s
}

fn config(lab: &Lab) -> String {
    let h = |ty: &str, port: u16, extra: &str| {
        format!("{{ type = \"{ty}\", port = {port}, interval = {INTERVAL_S}, timeout = 1, rise = {RISE}, fall = {FALL}{extra} }}")
    };
    let p4 = "persistence = { timeout = 300, netmask = \"255.255.255.0\" }\n";
    let p6 = "persistence = { timeout = 300, prefix6 = 64 }\n";
    let vip4 = lab.env("LAB_VIP4");
    let vip6 = lab.env("LAB_VIP6");
    [
        director_section(lab, "native", ""),
        service(
            lab,
            "web4",
            "tcp",
            &vip4,
            80,
            p4,
            &h("http", 8080, ", path = \"/\""),
            "LAB_RS_IP4",
            8080,
        ),
        service(
            lab,
            "web6",
            "tcp",
            &vip6,
            80,
            p6,
            &h("tcp", 8080, ""),
            "LAB_RS_IP6",
            8080,
        ),
        service(
            lab,
            "dns4",
            "udp",
            &vip4,
            53,
            "",
            &h("udp", 5353, ", send = \"ping\", expect = \"rs\""),
            "LAB_RS_IP4",
            5353,
        ),
        // The other check types in each family, on the same service ports.
        service(
            lab,
            "web4t",
            "tcp",
            &vip4,
            8080,
            "",
            &h("tcp", 8080, ""),
            "LAB_RS_IP4",
            8080,
        ),
        service(
            lab,
            "web6h",
            "tcp",
            &vip6,
            8080,
            "",
            &h("http", 8080, ", path = \"/\""),
            "LAB_RS_IP6",
            8080,
        ),
        service(
            lab,
            "dns6",
            "udp",
            &vip6,
            53,
            "",
            &h("udp", 5353, ", send = \"ping\", expect = \"rs\""),
            "LAB_RS_IP6",
            5353,
        ),
    ]
    .join("\n")
}

struct Env {
    director: DirectorProcess,
    lab: Lab,
}

impl Env {
    fn status(&self) -> Status {
        labkit::status(&self.lab)
    }

    /// Health of every real server, as "service addr health" lines.
    fn healths(&self) -> Vec<String> {
        let mut v = Vec::new();
        for s in self.status().services {
            for r in s.reals {
                v.push(format!("{} {} {}", s.name, r.addr, r.health));
            }
        }
        v
    }

    /// Wait (bounded by `within`) until `pred` holds for the healths.
    fn wait(&self, what: &str, within: Duration, pred: impl Fn(&[String]) -> bool) -> Duration {
        let t0 = Instant::now();
        loop {
            let h = self.healths();
            if pred(&h) {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < within,
                "{what}: not within {within:?}: {h:#?}\n{}",
                self.director.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The director host's own TCP connection to a real server's service
    /// port (what an operator's curl or a monitoring agent does).
    fn host_curl(&self, url: &str) -> Result<String, String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.lab.env("LAB_NS_DIR")])
            .args(["curl", "-sS", "--max-time", "3", "-g", url])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }
}

fn all_up(h: &[String]) -> bool {
    h.len() == 18 && h.iter().all(|l| l.ends_with(" up"))
}

#[test]
fn nat_health_checks_keep_healthy_servers_up_and_follow_a_stopped_server() {
    if skip("nat_health_checks_keep_healthy_servers_up_and_follow_a_stopped_server") {
        return;
    }
    let _l = lab_lock();
    let mut lab = Lab::up(LabMode::Nat).expect("lab");
    lab.start_http(&[8080], 0).expect("http");
    lab.start_udp_echo(5353).expect("udp echo");
    let cfg: PathBuf = lab.dir().join("xdpvs.toml");
    std::fs::write(&cfg, config(&lab)).expect("cfg");
    let check = Command::new(exe())
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .expect("check");
    assert!(
        check.status.success(),
        "config refused: {}\n{}",
        String::from_utf8_lossy(&check.stderr),
        config(&lab)
    );
    let director = DirectorProcess::start(
        &exe(),
        &lab.env("LAB_NS_DIR"),
        &cfg,
        &lab.dir().join("director.log"),
    )
    .expect("director");
    let e = Env { director, lab };
    let rs4 = e.lab.env_list("LAB_RS_IP4");
    let rs6 = e.lab.env_list("LAB_RS_IP6");

    // 20 intervals and more: every healthy server stays up, while clients
    // are served through the VIPs and the host talks to the servers itself.
    let t0 = Instant::now();
    let vip4 = e.lab.env("LAB_VIP4");
    let vip6 = e.lab.env("LAB_VIP6");
    let mut rounds = 0;
    while t0.elapsed() < Duration::from_secs(20 * INTERVAL_S + 2) {
        let h = e.healths();
        assert!(
            all_up(&h),
            "a healthy NAT real server went down after {:?}: {h:#?}\n{}",
            t0.elapsed(),
            e.director.log_text()
        );
        let reqs = [
            Request::http(&e.lab.client4(0, 1), &vip4, 80),
            Request::http(&e.lab.client6(1), &vip6, 80),
            Request::udp(&e.lab.client4(1, 1), &vip4, 53),
            Request::udp(&e.lab.client6(2), &vip6, 53),
            Request::http(&e.lab.client6(3), &vip6, 8080),
        ];
        let res = e.lab.requests(&reqs).expect("requests");
        for (q, r) in reqs.iter().zip(&res) {
            assert!(r.ok, "{} -> {}: {}", q.src, q.dst, r.error);
        }
        for url in [
            format!("http://{}:8080/", rs4[rounds % 3]),
            format!("http://[{}]:8080/", rs6[rounds % 3]),
        ] {
            let got = e.host_curl(&url);
            assert!(
                got.as_deref().is_ok_and(|b| b.starts_with("rs")),
                "the host's own curl {url} while xdpvs runs: {got:?}"
            );
        }
        rounds += 1;
        std::thread::sleep(Duration::from_millis(700));
    }
    assert!(rounds >= 10, "{rounds} rounds");

    // Stop rs1's web server: down within fall x interval (plus one
    // timeout and the listing's delay), in both families; UDP stays up.
    let mut e = e;
    e.lab.kill("http-rs1-8080");
    let down_within = Duration::from_secs(FALL * INTERVAL_S + 1 + 2);
    // rs1's four web services (http and tcp checks, IPv4 and IPv6) go
    // down; its UDP services and the other servers stay up.
    let rs1_web: Vec<String> = [
        ("web4", &rs4[0]),
        ("web4t", &rs4[0]),
        ("web6", &rs6[0]),
        ("web6h", &rs6[0]),
    ]
    .iter()
    .map(|(s, a)| format!("{s} {a} "))
    .collect();
    let took = e.wait("rs1 down", down_within, |h| {
        let rs1: Vec<&String> = h
            .iter()
            .filter(|l| rs1_web.iter().any(|p| l.starts_with(p.as_str())))
            .collect();
        rs1.len() == 4
            && rs1.iter().all(|l| l.ends_with(" down"))
            && h.iter().filter(|l| l.ends_with(" up")).count() == 14
    });
    eprintln!("rs1 down after {took:?}");

    // Start it again: back within rise x interval.
    let root = e.lab.dir().join("rs1").to_string_lossy().to_string();
    let ns = e.lab.rs_namespaces()[0].clone();
    e.lab
        .spawn(
            "http-rs1-8080-again",
            &ns,
            &[
                "python3",
                "-m",
                "http.server",
                "8080",
                "--bind",
                "::",
                "--directory",
                &root,
            ],
        )
        .expect("restart");
    let t_listen = Instant::now();
    while t_listen.elapsed() < Duration::from_secs(5) {
        let out = e
            .lab
            .exec(&ns, &["ss", "-Htln", "sport = :8080"])
            .expect("ss");
        if !out.stdout.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = e.wait(
        "rs1 back up",
        Duration::from_secs(RISE * INTERVAL_S + 1 + 2),
        all_up,
    );
    eprintln!("rs1 up again after {took:?}");
    let log = e.director.stop();
    assert!(log.contains("health: real server DOWN"), "{log}");
    assert!(log.contains("health: real server UP"), "{log}");
}

/// After a director start with empty neighbour tables, the first packets
/// of the first clients find their next hops: the real servers and the
/// outside router (the gateway of every routed client) are resolved before
/// the director says it is forwarding. A UDP reply lost to an unresolved
/// neighbour is not retransmitted, so one try with a short timeout must do;
/// a TCP request must not wait for a SYN retransmission (1 s).
#[test]
fn first_packets_after_a_start_find_their_next_hops() {
    if skip("first_packets_after_a_start_find_their_next_hops") {
        return;
    }
    let _l = lab_lock();
    let mut lab = Lab::up(LabMode::Nat).expect("lab");
    lab.start_http(&[8080], 0).expect("http");
    lab.start_udp_echo(5353).expect("udp echo");
    let cfg: PathBuf = lab.dir().join("xdpvs.toml");
    std::fs::write(&cfg, config(&lab)).expect("cfg");
    let ns = lab.env("LAB_NS_DIR");
    for fam in ["-4", "-6"] {
        let out = Command::new("ip")
            .args(["-n", &ns, fam, "neigh", "flush", "all"])
            .output()
            .expect("ip neigh flush");
        assert!(out.status.success(), "{out:?}");
    }
    let mut director = DirectorProcess::start(&exe(), &ns, &cfg, &lab.dir().join("director.log"))
        .expect("director");
    let vip4 = lab.env("LAB_VIP4");
    let vip6 = lab.env("LAB_VIP6");
    let mut udp = Request::udp(&lab.client4(2, 7), &vip4, 53);
    udp.timeout = 0.8;
    let mut web = Request::http(&lab.client4(3, 7), &vip4, 80);
    web.timeout = 0.9;
    let mut web6 = Request::http(&lab.client6(7), &vip6, 80);
    web6.timeout = 0.9;
    for q in [udp, web, web6] {
        let t0 = Instant::now();
        let r = lab.requests(std::slice::from_ref(&q)).expect("request");
        assert!(
            r[0].ok,
            "first {} request {} -> {} failed on its only try ({:?}): {}\n{}",
            if q.udp { "UDP" } else { "TCP" },
            q.src,
            q.dst,
            t0.elapsed(),
            r[0].error,
            director.log_text()
        );
    }
    // A neighbour forgotten while the director runs (flushed, as the
    // kernel's garbage collection does): the next client's packets wait
    // for the kernel to resolve it again instead of being dropped. The
    // router is the gateway of every client reply and nothing else of the
    // host talks to it, so the replies find its MAC unknown.
    for fam in ["-4", "-6"] {
        let out = Command::new("ip")
            .args(["-n", &ns, fam, "neigh", "flush", "all"])
            .output()
            .expect("ip neigh flush");
        assert!(out.status.success(), "{out:?}");
    }
    // The shards' copy of the neighbour table is refreshed every second.
    std::thread::sleep(Duration::from_millis(1_500));
    let mut udp = Request::udp(&lab.client4(2, 9), &vip4, 53);
    udp.timeout = 0.8;
    let mut web6 = Request::http(&lab.client6(9), &vip6, 80);
    web6.timeout = 0.9;
    for q in [udp, web6] {
        let r = lab.requests(std::slice::from_ref(&q)).expect("request");
        assert!(
            r[0].ok,
            "{} -> {} after the neighbours were flushed, on its only try: {}\n{}",
            q.src,
            q.dst,
            r[0].error,
            director.log_text()
        );
    }
    let log = director.stop();
    assert!(log.contains("next hops: "), "{log}");
    assert!(!log.contains("unresolved after"), "{log}");
    assert!(!log.contains("drop_no_neighbor"), "{log}");
}
