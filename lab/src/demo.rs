//! `xdpvs demo`: build the lab, run the director on it with an embedded
//! config (HTTP 80 + HTTPS-like 443 under one firewall mark, /24
//! persistence, three real servers, plus a UDP service), drive real requests
//! through it, show which real server each client group reached and the
//! counters, and tear everything down (also on Ctrl-C or failure).
//!
//! `xdpvs demo --ha` ([`run_ha`]): the HA lab ([`crate::ha`]): two directors
//! behind an ECMP router (BGP), both carrying traffic; one is killed and
//! the clients still reach their servers through the other.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ha::{HaConfig, HaLab, HA_DIRECTORS};
use crate::{Lab, LabMode, Request};

/// The demo's director config for a lab mode and XDP mode.
pub fn demo_config(mode: LabMode, xdp: &str, sock: &Path) -> String {
    let (ifaces, rs, fwd) = match mode {
        LabMode::Dr => (
            "\"dr0\"",
            ["198.18.0.11", "198.18.0.12", "198.18.0.13"],
            "dr",
        ),
        LabMode::Nat => (
            "\"dr0\", \"dr1\"",
            ["198.18.3.11", "198.18.3.12", "198.18.3.13"],
            "nat",
        ),
    };
    let mut s = format!(
        r#"# xdpvs demo ({mode} mode)
[director]
interfaces = [{ifaces}]
xdp_mode = "{xdp}"
control_socket = "{sock}"
metrics = "off"

[timeouts]
tcp = 900
tcp_fin = 120
udp = 300

# HTTP and HTTPS-like ports behave as ONE service: one persistence template
# per client /24 covers both.
[[fwmark]]
mark = 1
rules = [ {{ vip = "198.18.0.100", proto = "tcp", ports = "80,443" }} ]

[[service]]
name = "web"
fwmark = 1
scheduler = "rr"
persistence = {{ timeout = 300, netmask = "255.255.255.0", prefix6 = 64 }}
"#,
        mode = mode.name(),
        sock = sock.display()
    );
    for a in rs {
        s.push_str(&format!(
            "  [[service.real]]\n  addr = \"{a}\"\n  weight = 1\n  forward = \"{fwd}\"\n"
        ));
    }
    s.push_str(
        "\n[[service]]\nname = \"echo\"\nproto = \"udp\"\nvip = \"198.18.0.100\"\nport = 5353\nscheduler = \"rr\"\n",
    );
    for a in rs {
        s.push_str(&format!(
            "  [[service.real]]\n  addr = \"{a}\"\n  port = 5353\n  forward = \"{fwd}\"\n"
        ));
    }
    s
}

/// A running `xdpvs run` inside the director namespace.
pub struct DirectorProcess {
    child: Option<Child>,
    pub log: PathBuf,
}

impl DirectorProcess {
    /// Start `xdpvs run --config CONFIG` in namespace `ns` with the binary
    /// `exe`; wait (bounded) until it reports that it is forwarding.
    pub fn start(exe: &Path, ns: &str, config: &Path, log: &Path) -> io::Result<DirectorProcess> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(exe)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()?;
        let mut d = DirectorProcess {
            child: Some(child),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("forwarding") {
                return Ok(d);
            }
            if let Some(c) = d.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    return Err(io::Error::other(format!(
                        "director exited ({st}) during start:\n{text}"
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!("director did not start:\n{text}")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Send SIGTERM and wait (bounded); returns the director's output.
    pub fn stop(&mut self) -> String {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            // `ip netns exec` execs the director, so the pid is the director's.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The director's process id (`ip netns exec` execs it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DirectorProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("xdpvs demo: {msg}");
    ExitCode::from(1)
}

/// Entry point of `xdpvs demo`.
pub fn run(mode: &str, xdp: &str) -> ExitCode {
    let mode = match mode {
        "dr" => LabMode::Dr,
        "nat" => LabMode::Nat,
        m => return fail(format!("unknown mode {m:?} (dr or nat)")),
    };
    if xdp != "native" && xdp != "generic" {
        return fail(format!("unknown XDP mode {xdp:?} (native or generic)"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // Ctrl-C: the steps below notice the flag, and the guards (Lab,
        // DirectorProcess) tear everything down on the way out.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    match demo(mode, xdp, &stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn demo(mode: LabMode, xdp: &str, stop: &AtomicBool) -> io::Result<()> {
    let exe = std::env::current_exe()?;
    println!(
        "== building the lab ({} mode) in network namespaces xdpvs-*",
        mode.name()
    );
    let mut lab = Lab::up(mode)?;
    check_stop(stop)?;
    lab.start_http(&[80, 443], 0)?;
    lab.start_udp_echo(5353)?;
    println!("   3 real servers run python http.server on ports 80 and 443 and a UDP echo on 5353");
    let cfg_path = lab.dir().join("demo.toml");
    let sock = lab.dir().join("xdpvs.sock");
    std::fs::write(&cfg_path, demo_config(mode, xdp, &sock))?;
    println!(
        "== starting the director (xdp {xdp}), config {}",
        cfg_path.display()
    );
    let ns_dir = lab.env("LAB_NS_DIR");
    let mut director =
        DirectorProcess::start(&exe, &ns_dir, &cfg_path, &lab.dir().join("director.log"))?;
    check_stop(stop)?;

    // Four client groups (four /24s), four hosts each, HTTP 80 then 443.
    let vip = lab.env("LAB_VIP4");
    let vip = if vip.is_empty() {
        "198.18.0.100".to_string()
    } else {
        vip
    };
    let mut reqs = Vec::new();
    for g in 0..4u8 {
        for h in 1..=4u8 {
            for port in [80u16, 443] {
                reqs.push(Request::http(&lab.client4(g, h), &vip, port));
            }
        }
    }
    println!(
        "== {} HTTP requests from 16 clients in 4 /24 groups to {vip}:80 and :443",
        reqs.len()
    );
    let res = lab.requests(&reqs)?;
    check_stop(stop)?;
    let mut table: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut failed = 0;
    for (r, out) in reqs.iter().zip(&res) {
        let group = r
            .src
            .rsplit_once('.')
            .map(|(n, _)| format!("{n}.0/24"))
            .unwrap_or_default();
        match out.server() {
            Some(s) => {
                *table
                    .entry(group)
                    .or_default()
                    .entry(format!("{s}:{}", r.port))
                    .or_default() += 1
            }
            None => {
                failed += 1;
                eprintln!(
                    "   request {}:{} from {} failed: {}",
                    r.dst, r.port, r.src, out.error
                );
            }
        }
    }
    println!("\n   client group        real server reached (requests)   persistent?");
    let mut all_persistent = true;
    let mut servers_used = std::collections::BTreeSet::new();
    for (g, m) in &table {
        let rs: std::collections::BTreeSet<&str> =
            m.keys().filter_map(|k| k.split(':').next()).collect();
        servers_used.extend(rs.iter().map(|s| s.to_string()));
        let cells: Vec<String> = m.iter().map(|(k, n)| format!("{k} x{n}")).collect();
        let ok = rs.len() == 1;
        all_persistent &= ok;
        println!(
            "   {g:<19} {:<33} {}",
            cells.join("  "),
            if ok {
                "yes: one server for 80 and 443"
            } else {
                "NO"
            }
        );
    }

    // UDP through the director.
    let udp: Vec<Request> = (0..4u8)
        .map(|g| Request::udp(&lab.client4(g, 9), &vip, 5353))
        .collect();
    let ures = lab.requests(&udp)?;
    let uok = ures.iter().filter(|r| r.ok).count();
    println!(
        "\n   UDP echo {vip}:5353: {uok}/{} answered ({})",
        udp.len(),
        ures.iter()
            .filter_map(|r| r.server())
            .collect::<Vec<_>>()
            .join(", ")
    );

    println!("\n== stopping the director");
    let log = director.stop();
    println!("{}", summarize_log(&log));
    drop(lab);
    println!("== lab removed");
    if failed > 0 || !all_persistent || uok != udp.len() {
        return Err(io::Error::other(format!(
            "{failed} requests failed, persistence held: {all_persistent}, udp {uok}/{}\n--- director log ---\n{log}",
            udp.len()
        )));
    }
    println!(
        "OK: every client group kept one real server across ports 80 and 443; {} real servers used",
        servers_used.len()
    );
    Ok(())
}

/// The director's final counters (its last lines).
fn summarize_log(log: &str) -> String {
    let mut out = String::new();
    let mut on = false;
    for line in log.lines() {
        if line.contains("final counters") {
            on = true;
        }
        if on {
            out.push_str("   ");
            out.push_str(line);
            out.push('\n');
        }
    }
    if out.is_empty() {
        log.lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        out
    }
}

fn check_stop(stop: &AtomicBool) -> io::Result<()> {
    if stop.load(Ordering::SeqCst) {
        return Err(io::Error::other("interrupted; tearing down"));
    }
    Ok(())
}

/// Entry point of `xdpvs demo --ha`: the HA lab (issue #16).
pub fn run_ha(xdp: &str) -> ExitCode {
    if xdp != "native" && xdp != "generic" {
        return fail(format!("unknown XDP mode {xdp:?} (native or generic)"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    match demo_ha(xdp, &stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// One round for the HA demo: `per_group` requests from host .7 of each
/// client group; returns group -> servers reached, and failures.
fn ha_round(
    lab: &HaLab,
    per_group: usize,
) -> io::Result<(BTreeMap<String, BTreeSet<String>>, usize)> {
    let mut reqs = Vec::new();
    for g in 0..4u8 {
        for k in 0..per_group {
            let mut r = Request::http(
                &lab.client4(g, 7),
                lab.vip(),
                if k % 2 == 0 { 80 } else { 443 },
            );
            r.timeout = 2.0;
            reqs.push(r);
        }
    }
    let res = lab.requests(&reqs)?;
    let mut table: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut failed = 0;
    for (r, out) in reqs.iter().zip(&res) {
        let group = r
            .src
            .rsplit_once('.')
            .map(|(n, _)| format!("{n}.0/24"))
            .unwrap_or_default();
        match out.server() {
            Some(s) => {
                table.entry(group).or_default().insert(s.to_string());
            }
            None => failed += 1,
        }
    }
    Ok((table, failed))
}

fn ha_show(lab: &HaLab, table: &BTreeMap<String, BTreeSet<String>>) -> io::Result<()> {
    println!("   client group        real server(s) reached");
    for (g, s) in table {
        println!(
            "   {g:<19} {}",
            s.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    for i in 0..HA_DIRECTORS {
        match lab.director_conns(i) {
            Ok(c) => println!(
                "   director {i} ({}): connections {}",
                crate::ha::dir_ip4(i),
                c.iter()
                    .map(|(a, n)| format!("{a}={n}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Err(_) => println!("   director {i}: not running"),
        }
    }
    println!(
        "   router's next hops for {}: {:?}",
        lab.vip(),
        lab.bgp_paths()?
    );
    Ok(())
}

fn demo_ha(xdp: &str, stop: &AtomicBool) -> io::Result<()> {
    let exe = std::env::current_exe()?;
    println!("== building the HA lab in network namespaces xha-*: FRR router (ECMP), 2 directors with BIRD, 3 DR real servers");
    let mut lab = HaLab::up(&exe)?;
    check_stop(stop)?;
    println!(
        "   router's next hops for {}: {:?} (both directors announce it)",
        lab.vip(),
        lab.bgp_paths()?
    );
    let cfg = HaConfig {
        xdp_mode: xdp.to_string(),
        ..HaConfig::synced()
    };
    for i in 0..HA_DIRECTORS {
        let toml = lab.config(i, &cfg);
        lab.start_director(i, &toml)?;
        // The first director finds no peer (resync_wait), the second gets
        // the first one's table.
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            let s = lab.director_status(i).ok().and_then(|v| {
                v.get("sync")
                    .and_then(|s| s.get("resync"))
                    .and_then(|r| r.as_str().map(str::to_string))
            });
            if let Some(r) = s.filter(|r| r == "synced" || r == "alone") {
                println!("   director {i} sync: resync {r}");
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        println!(
            "== director {i} started (scheduler {} on the persistent web service), config {}",
            cfg.scheduler,
            lab.dir().join(format!("xdpvs{i}.toml")).display()
        );
    }
    check_stop(stop)?;
    println!(
        "\n== 4 client groups x 16 requests (fresh source ports) to {}:80 and :443",
        lab.vip()
    );
    // A group's first connection makes its template, which reaches the
    // other director within a few ms; then many source ports.
    let _ = ha_round(&lab, 1)?;
    std::thread::sleep(Duration::from_millis(300));
    let (before, failed) = ha_round(&lab, 16)?;
    ha_show(&lab, &before)?;
    let both = (0..HA_DIRECTORS).all(|i| lab.director_total(i).map(|n| n > 0).unwrap_or(false));
    println!(
        "   both directors carried traffic: {}",
        if both { "yes" } else { "NO" }
    );
    check_stop(stop)?;

    println!("\n== killing director 1 (xdpvs and BIRD, SIGKILL)");
    let t0 = Instant::now();
    lab.kill_director(1);
    let d = lab.wait_paths(1, Duration::from_secs(10))?;
    println!("   router withdrew director 1's path after {d:?}");
    let (after, failed2) = ha_round(&lab, 16)?;
    println!("   traffic again after {:?}", t0.elapsed());
    ha_show(&lab, &after)?;
    let same = before == after;
    drop(lab);
    println!("== lab removed");
    if failed + failed2 > 0 || !both || !same {
        return Err(io::Error::other(format!(
            "{} requests failed, both directors used: {both}, groups kept their servers: {same}",
            failed + failed2
        )));
    }
    println!("OK: both directors carried traffic; with director 1 gone every client group still reached its server (wlc, persistence and connections synced in the IPVS sync protocol)");
    Ok(())
}
