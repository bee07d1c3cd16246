//! The control plane of a running `xdpvs run`, end to end in the lab: reloads
//! under traffic (file change, SIGHUP, `xdpvs reload`), refused configs,
//! health checks quiescing and restoring a real server, and the CLI's
//! listings and the metrics endpoint agreeing with the traffic sent.
//!
//! Root only (network namespaces, XDP); each test says why it skips
//! otherwise. One lab at a time (fixed namespace names).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use xdpvs::control::status::{ConnRow, Status};
use xdpvs_lab::demo::DirectorProcess;
use xdpvs_lab::{Lab, LabMode, Request};

mod labkit;
use labkit::{rss_kib, sha256_file};

static LAB: Mutex<()> = Mutex::new(());

fn skip(name: &str) -> bool {
    xdpvs::dataplane::testutil::skip_without_root(name)
}

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xdpvs"))
}

/// Fields drop in order: the director stops before the lab goes away.
struct Env {
    director: Option<DirectorProcess>,
    lab: Lab,
    cfg: PathBuf,
    sock: PathBuf,
}

impl Env {
    fn ns_dir(&self) -> String {
        self.lab.env("LAB_NS_DIR")
    }

    /// `xdpvs ARGS -s SOCK` inside the director's namespace.
    fn cli(&self, args: &[&str]) -> Output {
        let ns = self.ns_dir();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns]).arg(exe()).args(args);
        c.arg("-s").arg(&self.sock);
        c.output().expect("xdpvs cli")
    }

    fn status(&self) -> Status {
        let out = self.cli(&["list", "--json"]);
        assert!(out.status.success(), "list: {}", text(&out));
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    fn log(&self) -> String {
        self.director
            .as_ref()
            .map(|d| d.log_text())
            .unwrap_or_default()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const BASE: &str = r#"
[[fwmark]]
mark = 1
rules = [ { vip = "198.18.0.100", proto = "tcp", ports = "80,443" } ]
"#;

fn director_head(sock: &Path, metrics: &str) -> String {
    format!(
        "[director]\ninterfaces = [\"dr0\"]\nxdp_mode = \"native\"\ncontrol_socket = \"{}\"\nmetrics = \"{metrics}\"\n",
        sock.display(),
    )
}

fn reals(weights: &[u32], health: &str) -> String {
    let mut s = String::new();
    for (i, w) in weights.iter().enumerate() {
        s.push_str(&format!(
            "  [[service.real]]\n  addr = \"198.18.0.1{}\"\n  weight = {w}\n{health}",
            i + 1
        ));
    }
    s
}

fn web(netmask: &str, weights: &[u32], health: &str) -> String {
    format!(
        "[[service]]\nname = \"web\"\nfwmark = 1\nscheduler = \"rr\"\npersistence = {{ timeout = 300, netmask = \"{netmask}\" }}\n{}",
        reals(weights, health)
    )
}

fn start(config: &str, metrics: &str) -> Env {
    let mut lab = Lab::up(LabMode::Dr).expect("lab up");
    lab.start_http(&[80, 443], 16 << 20).expect("http servers");
    let cfg = lab.dir().join("xdpvs.toml");
    let sock = lab.dir().join("xdpvs.sock");
    let text = format!("{}{BASE}{config}", director_head(&sock, metrics));
    std::fs::write(&cfg, text).expect("config");
    let ns = lab.env("LAB_NS_DIR");
    let director = DirectorProcess::start(&exe(), &ns, &cfg, &lab.dir().join("director.log"))
        .expect("director start");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    Env {
        lab,
        director: Some(director),
        cfg,
        sock,
    }
}

fn write_config(e: &Env, config: &str) {
    let text = format!("{}{BASE}{config}", director_head(&e.sock, "off"));
    // Write then rename, as config managers do.
    let tmp = e.cfg.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, &e.cfg).expect("rename");
}

fn server_of(e: &Env, src: &str, port: u16) -> String {
    let r = e
        .lab
        .requests(&[Request::http(src, &e.lab.env("LAB_VIP4"), port)])
        .expect("request");
    assert!(
        r[0].ok,
        "request from {src} failed: {}\n{}",
        r[0].error,
        e.log()
    );
    r[0].server().unwrap_or_default().to_string()
}

#[test]
fn reload_storm_under_traffic_keeps_the_stream_and_the_client_server() {
    if skip("reload_storm_under_traffic_keeps_the_stream_and_the_client_server") {
        return;
    }
    let _l = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let mut e = start(&web("255.255.255.0", &[1, 1, 1], ""), "off");
    let (curl, dl, expect) = start_stream(&e, "1M");
    let client = e.lab.client4(1, 3);
    let first = server_of(&e, &client, 80);
    let dir_pid = director_pid(&e);
    let mut reloads = 0;
    for i in 0..50u32 {
        // Unrelated services come and go, weights change (also of the
        // client's own service: it must keep its server anyway).
        let mut cfg = web("255.255.255.0", &[1, 1 + i % 3, 1 + (i + 1) % 2], "");
        if i % 2 == 0 {
            cfg.push_str(&format!(
                "[[service]]\nname = \"extra\"\nproto = \"udp\"\nvip = \"198.18.0.100\"\nport = {}\nscheduler = \"wrr\"\n{}",
                5000 + i,
                reals(&[i % 4, 1, 2], "")
            ));
        }
        write_config(&e, &cfg);
        match i % 3 {
            0 => {
                let out = e.cli(&["reload"]);
                assert!(out.status.success(), "reload #{i}: {}", text(&out));
            }
            1 => {
                let st = Command::new("kill")
                    .args(["-HUP", &dir_pid])
                    .status()
                    .expect("kill");
                assert!(st.success());
            }
            _ => {} // the file change alone (inotify)
        }
        reloads += 1;
        // Longer than the file watch's debounce (200 ms), so every change
        // is applied on its own.
        std::thread::sleep(Duration::from_millis(280));
        if i % 10 == 9 {
            assert_eq!(
                server_of(&e, &client, if i % 20 == 9 { 443 } else { 80 }),
                first,
                "the persistent client changed real server during reloads"
            );
        }
    }
    finish_stream(&e, curl, &dl, &expect, "50 reloads");
    std::thread::sleep(Duration::from_millis(400));
    let st = e.status();
    assert!(
        st.reloads >= 50,
        "reloads applied: {} (of {reloads})",
        st.reloads
    );
    assert_eq!(st.reloads_refused, 0, "{}", st.last_reload);
    let log = e.director.take().map(|mut d| d.stop()).unwrap_or_default();
    assert!(log.contains("reload (SIGHUP) ok"), "{log}");
    assert!(log.contains("reload (file changed) ok"), "{log}");
    assert!(log.contains("reload (control socket) ok"), "{log}");
}

/// A long TCP stream through the director: curl downloads the 16 MiB file
/// at `rate`. Returns the process, the output path and the expected sha256.
fn start_stream(e: &Env, rate: &str) -> (std::process::Child, PathBuf, String) {
    let expect = sha256_file(&e.lab.dir().join("rs1/big"));
    let dl = e.lab.dir().join("stream.out");
    let ns_cl = e.lab.env("LAB_NS_CLIENT");
    let curl = Command::new("ip")
        .args(["netns", "exec", &ns_cl, "curl", "-sS", "--max-time", "90"])
        .args(["--limit-rate", rate, "--interface", "198.18.102.9", "-o"])
        .arg(&dl)
        .arg(format!("http://{}/big", e.lab.env("LAB_VIP4")))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl");
    (curl, dl, expect)
}

fn finish_stream(e: &Env, curl: std::process::Child, dl: &Path, expect: &str, what: &str) {
    let out = curl.wait_with_output().expect("curl wait");
    assert!(
        out.status.success(),
        "the long stream failed during {what}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        e.log()
    );
    let got = Command::new("sha256sum").arg(dl).output().expect("sha");
    assert!(
        String::from_utf8_lossy(&got.stdout).starts_with(expect),
        "the stream's content differs after {what}"
    );
}

fn director_pid(e: &Env) -> String {
    let out = Command::new("pgrep")
        .args(["-f", &format!("xdpvs run --config {}", e.cfg.display())])
        .output()
        .expect("pgrep");
    let pid = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(!pid.is_empty(), "director pid not found");
    pid
}

#[test]
fn reload_storm_of_200_valid_and_invalid_loses_nothing_and_memory_stays_flat() {
    if skip("reload_storm_of_200_valid_and_invalid_loses_nothing_and_memory_stays_flat") {
        return;
    }
    let _l = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let e = start(&web("255.255.255.0", &[1, 1, 1], ""), "off");
    let (curl, dl, expect) = start_stream(&e, "512K");
    let clients: Vec<String> = (0..4).map(|g| e.lab.client4(g, 6)).collect();
    let servers: Vec<String> = clients.iter().map(|c| server_of(&e, c, 80)).collect();
    let pid = director_pid(&e);
    let templates =
        |e: &Env| -> u64 { e.status().services[0].reals.iter().map(|r| r.persist).sum() };
    let tpl0 = templates(&e);
    let mut rss_warm = 0;
    let mut invalid = 0;
    for i in 0..200u32 {
        let mut cfg = web("255.255.255.0", &[1 + i % 2, 1, 1 + (i / 2) % 3], "");
        cfg.push_str(&format!(
            "[[service]]\nname = \"extra{i}\"\nproto = \"tcp\"\nvip = \"198.18.0.100\"\nport = {}\nscheduler = \"wlc\"\n{}",
            6000 + i % 50,
            reals(&[i % 3, 1, 1], "")
        ));
        let broken = i % 4 == 3;
        if broken {
            invalid += 1;
            cfg = match i % 3 {
                0 => cfg.replace("scheduler = \"wlc\"", "scheduler = \"nope\""),
                1 => cfg.replace("fwmark = 1", "fwmark = 8"),
                _ => format!("{cfg}[[service]\n"),
            };
        }
        write_config(&e, &cfg);
        let out = e.cli(&["reload"]);
        assert_eq!(
            out.status.success(),
            !broken,
            "reload #{i} (broken: {broken}): {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(40));
        if i == 20 {
            rss_warm = rss_kib(&pid);
        }
        if i % 25 == 24 {
            for (c, s) in clients.iter().zip(&servers) {
                assert_eq!(
                    &server_of(&e, c, 443),
                    s,
                    "a client changed server at reload #{i}"
                );
            }
        }
    }
    finish_stream(&e, curl, &dl, &expect, "200 reloads");
    let st = e.status();
    assert!(st.reloads >= 150, "valid reloads applied: {}", st.reloads);
    assert!(
        st.reloads_refused >= invalid,
        "refused: {}",
        st.reloads_refused
    );
    assert_eq!(
        templates(&e),
        tpl0,
        "templates lost or leaked during the storm"
    );
    let rss_end = rss_kib(&pid);
    assert!(
        rss_end <= rss_warm + 16 * 1024,
        "memory grew from {rss_warm} KiB to {rss_end} KiB over 180 reloads"
    );
}

#[test]
fn broken_configs_are_refused_with_file_line_and_reason_and_traffic_goes_on() {
    if skip("broken_configs_are_refused_with_file_line_and_reason_and_traffic_goes_on") {
        return;
    }
    let _l = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let good = web("255.255.255.0", &[1, 1, 1], "");
    let e = start(&good, "off");
    let client = e.lab.client4(0, 2);
    let first = server_of(&e, &client, 80);
    let gen0 = e.status().generation;
    let dup = format!(
        "{good}[[service]]\nname = \"again\"\nfwmark = 1\nscheduler = \"rr\"\n{}",
        reals(&[1], "")
    );
    let broken: [(&str, String, &str); 4] = [
        (
            "syntax error",
            format!("{good}[[service]\nname = \"x\"\n"),
            "syntax",
        ),
        (
            "unknown scheduler",
            good.replace("scheduler = \"rr\"", "scheduler = \"roundrobin\""),
            "unknown scheduler",
        ),
        (
            "fwmark service without its mark",
            good.replace("fwmark = 1", "fwmark = 7"),
            "mark 7 is not declared",
        ),
        ("a virtual service defined twice", dup, "already defined"),
    ];
    for (what, cfg, reason) in broken {
        write_config(&e, &cfg);
        let out = e.cli(&["reload"]);
        let msg = text(&out);
        assert!(!out.status.success(), "{what}: reload accepted: {msg}");
        assert!(
            msg.contains("xdpvs.toml:") && msg.contains(reason),
            "{what}: expected file:line and \"{reason}\" in: {msg}"
        );
        let check = Command::new(exe())
            .args(["check", "--config"])
            .arg(&e.cfg)
            .output()
            .expect("check");
        assert!(!check.status.success(), "{what}: check accepted it");
        assert_eq!(
            server_of(&e, &client, 443),
            first,
            "{what}: traffic or persistence affected"
        );
        assert_eq!(
            e.status().generation,
            gen0,
            "{what}: something was published"
        );
    }
    assert!(e.log().contains("refused, running config kept"));
}

#[test]
fn health_checks_quiesce_a_dead_server_and_restore_it() {
    if skip("health_checks_quiesce_a_dead_server_and_restore_it") {
        return;
    }
    let _l = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let health = "  health = { type = \"http\", port = 80, path = \"/\", interval = 1, timeout = 1, rise = 2, fall = 2 }\n";
    // Per-host persistence: every client host is a new group.
    let mut e = start(&web("255.255.255.255", &[1, 1, 1], health), "off");
    let reached = |e: &Env, hosts: std::ops::RangeInclusive<u8>, group: u8| -> Vec<String> {
        hosts
            .map(|h| server_of(e, &e.lab.client4(group, h), 80))
            .collect()
    };
    let before = reached(&e, 1..=6, 0);
    assert!(
        before.iter().any(|s| s == "rs1"),
        "rs1 unused before: {before:?}"
    );

    // rs1's web server dies (both ports: the check probes 80).
    e.lab.kill("http-rs1-80");
    e.lab.kill("http-rs1-443");
    let t0 = Instant::now();
    loop {
        let st = e.status();
        let rs1 = &st.services[0].reals[0];
        if rs1.health == "down" {
            assert_eq!(rs1.weight, 0, "a down server is quiesced (weight 0)");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "rs1 not marked down within fall x interval (+ slack)\n{}",
            e.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let during = reached(&e, 1..=9, 1);
    assert!(
        !during.iter().any(|s| s == "rs1"),
        "new clients still sent to the dead server: {during:?}"
    );

    // It comes back.
    let root = e.lab.dir().join("rs1");
    let ns = e.lab.rs_namespaces()[0].clone();
    let root_s = root.to_string_lossy().to_string();
    e.lab
        .spawn(
            "http-rs1-80",
            &ns,
            &[
                "python3",
                "-m",
                "http.server",
                "80",
                "--bind",
                "::",
                "--directory",
                &root_s,
            ],
        )
        .expect("restart");
    let t0 = Instant::now();
    loop {
        let st = e.status();
        if st.services[0].reals[0].health == "up" {
            assert_eq!(st.services[0].reals[0].weight, 1);
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "rs1 not restored within rise x interval (+ slack)\n{}",
            e.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = reached(&e, 1..=6, 2);
    assert!(
        after.iter().any(|s| s == "rs1"),
        "rs1 gets no new clients after recovery: {after:?}"
    );
    let log = e.director.take().map(|mut d| d.stop()).unwrap_or_default();
    assert!(log.contains("health: real server DOWN"), "{log}");
    assert!(log.contains("health: real server UP"), "{log}");
}

#[test]
fn list_stats_connections_and_metrics_match_the_traffic() {
    if skip("list_stats_connections_and_metrics_match_the_traffic") {
        return;
    }
    let _l = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let e = start(&web("255.255.255.0", &[1, 1, 1], ""), "127.0.0.1:9478");
    // Warm-up traffic, then zero the counters: only what follows counts.
    server_of(&e, &e.lab.client4(3, 1), 80);
    let z = e.cli(&["zero"]);
    assert!(z.status.success(), "{}", text(&z));
    let vip = e.lab.env("LAB_VIP4");
    let mut reqs = Vec::new();
    for g in 0..3u8 {
        for h in 1..=4u8 {
            reqs.push(Request::http(&e.lab.client4(g, h), &vip, 80));
        }
    }
    let res = e.lab.requests(&reqs).expect("requests");
    assert!(res.iter().all(|r| r.ok));
    std::thread::sleep(Duration::from_millis(600)); // shards publish every 250 ms

    let st = e.status();
    let web = &st.services[0];
    assert_eq!(web.stats.conns, 12, "{web:?}");
    let sum: u64 = web.reals.iter().map(|r| r.stats.conns).sum();
    assert_eq!(sum, 12);
    // Per HTTP/1.0 request the client sends at least SYN, ACK, request, FIN.
    assert!(web.stats.inpkts >= 12 * 4, "inpkts {}", web.stats.inpkts);
    assert!(web.stats.inbytes >= web.stats.inpkts * 40);
    let persist: u64 = web.reals.iter().map(|r| r.persist).sum();
    assert_eq!(
        persist, 4,
        "one template per client /24 (3 groups + the warm-up group)"
    );

    // The table view says the same.
    let out = e.cli(&["list", "--stats"]);
    let table = text(&out);
    assert!(table.contains("FWM  1"), "{table}");
    let line = table
        .lines()
        .find(|l| l.starts_with("FWM  1"))
        .unwrap_or_default();
    assert_eq!(line.split_whitespace().nth(2), Some("12"), "{table}");

    // Connections: 12 from this round (+1 warm-up), templates per /24.
    let out = e.cli(&["list", "--connections", "--json"]);
    let rows: Vec<ConnRow> = serde_json::from_slice(&out.stdout).expect("conns json");
    let conns = rows.iter().filter(|r| !r.template).count();
    let tpls: Vec<&ConnRow> = rows.iter().filter(|r| r.template).collect();
    assert_eq!(conns, 13, "{rows:?}");
    assert_eq!(tpls.len(), 4, "{rows:?}");
    assert!(tpls
        .iter()
        .all(|t| t.virt == "FWM 1" && t.source.ends_with(".0:0")));
    let plain = text(&e.cli(&["list", "--connections"]));
    assert!(
        plain.contains("IPVS connection entries") && plain.contains("NONE"),
        "{plain}"
    );

    // Metrics (loopback of the director's namespace).
    let m = e
        .lab
        .exec(
            &e.ns_dir(),
            &[
                "curl",
                "-s",
                "--max-time",
                "3",
                "http://127.0.0.1:9478/metrics",
            ],
        )
        .expect("curl metrics");
    let m = String::from_utf8_lossy(&m.stdout);
    assert!(
        m.contains("xdpvs_service_conns_total{service=\"web\"} 13"),
        "metrics are not zeroed by `zero` (ipvsadm -Z zeroes the listing only), so they count the warm-up too:\n{m}"
    );
    assert!(m.contains("xdpvs_shard_rx_total{shard=\"0\"}"), "{m}");
    assert!(m.contains("xdpvs_reloads_total 0"), "{m}");
    let new_conns: u64 = m
        .lines()
        .filter(|l| l.starts_with("xdpvs_shard_conns_new_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(new_conns, 13, "connections created, all shards:\n{m}");
    assert!(
        m.contains("# TYPE xdpvs_shard_io_loss_total counter"),
        "{m}"
    );
}
