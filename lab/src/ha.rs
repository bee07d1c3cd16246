//! The HA lab (issue #16): two directors behind an ECMP router speaking BGP.
//!
//! Built by `scripts/lab.sh ha up` (embedded, like the lab of
//! [`crate::Lab`]); namespaces `xha-*` and subnets of their own, so it runs
//! beside the other lab:
//!
//! | namespace | role | addresses |
//! |---|---|---|
//! | `xha-cl` | clients | eth0 198.18.42.2/24; groups 198.18.52-55.0/24 (hosts .1-.16) |
//! | `xha-rt` | router, FRR (AS 65000), ECMP | cl0 198.18.42.1/24, lan0 198.18.40.1/24 |
//! | `xha-lan` | switch | bridge br0, ports rt, dir0, dir1, rs1..rs3 |
//! | `xha-dirI` | director I (0, 1), BIRD (AS 65001+I) | dr0 198.18.40.(2+I)/24, no VIP (XDP takes its packets) |
//! | `xha-rsN` | real servers (DR), N = 1..3 | eth0 198.18.40.1N/24, VIP on lo |
//!
//! VIP 198.18.41.100/32, announced by each director's BIRD (`protocol
//! static vip`, so `birdc -s SOCK disable|enable vip` withdraws/announces).
//! Path: client -> router -(ECMP, L4 hash)-> director dr0 (XDP, MAC rewrite)
//! -> real server -> router -> client. One L2 segment carries everything, so
//! xdpvs's one-arm DR forward (out of the interface the frame came in on)
//! works as it is.
//!
//! [`HaLab::up`] builds the lab and starts the routing daemons and the real
//! servers' HTTP; directors are started by the caller with a config of its
//! choice ([`HaLab::start_director`], [`ha_config`]). Dropping the lab kills
//! everything it started and removes the namespaces.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::demo::DirectorProcess;
use crate::{is_root, run_checked, Request, Response, CLIENT_PY, DEPS_SH, LAB_SH, XDP_PASS_O};

/// The VIP every director announces.
pub const HA_VIP4: &str = "198.18.41.100";
/// Number of directors.
pub const HA_DIRECTORS: usize = 2;

/// The real servers' HTTP server: `GET /` answers the server's name,
/// `GET /big[?rate=BYTES_PER_S]` sends `BIG` bytes (the same content on every
/// server) at that rate (default 4 MB/s). Lives as long as the lab.
pub const HA_HTTP_PY: &str = r#"
import sys, threading, time, hashlib
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from urllib.parse import urlparse, parse_qs
name, ports, BIG = sys.argv[1], [int(p) for p in sys.argv[2].split(",")], int(sys.argv[3])
seed, i = b"", 0
while len(seed) < 65536:
    seed += hashlib.sha256(i.to_bytes(4, "big")).digest(); i += 1
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def log_message(self, *a): pass
    def do_GET(self):
        u = urlparse(self.path)
        if u.path == "/big":
            rate = max(1000.0, float(parse_qs(u.query).get("rate", ["4000000"])[0]))
            self.send_response(200)
            self.send_header("Content-Length", str(BIG))
            self.send_header("X-Server", name)
            self.end_headers()
            sent, t0 = 0, time.time()
            while sent < BIG:
                n = min(65536, BIG - sent)
                self.wfile.write(seed[:n]); sent += n
                ahead = sent / rate - (time.time() - t0)
                if ahead > 0: time.sleep(ahead)
        else:
            body = (name + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
class S(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
srv = [S(("0.0.0.0", p), H) for p in ports]
for s in srv[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
srv[0].serve_forever()
"#;

/// Size of the real servers' `/big` file.
pub const HA_BIG_BYTES: usize = 20 * 1024 * 1024;

/// What differs between the directors' configs.
#[derive(Clone, Debug)]
pub struct HaConfig {
    /// Scheduler of the persistent web service. `mh` gives every director
    /// the same choice for a client address, so no sync is needed; `wlc`
    /// (the production choice) needs connection/persistence sync between
    /// the directors.
    pub scheduler: String,
    /// XDP attach mode: "native" or "generic".
    pub xdp_mode: String,
    /// SYNC: the `[sync]` section (connection/persistence sync between the
    /// directors, being built separately), appended verbatim when set. The
    /// template gets `{me}` (this director's LAN address) and `{peer}` (the
    /// other director's) replaced.
    pub sync: Option<String>,
    /// ANNOUNCE: an `[announce]` section (`up`/`down` commands run by the
    /// director, e.g. `birdc -s SOCK enable vip`), appended verbatim when
    /// set; `{bird_sock}` is replaced by this director's BIRD socket.
    pub announce: Option<String>,
    /// `[director] sloppy_tcp`: a director may take over flows it never
    /// saw (a failover without sync).
    pub sloppy_tcp: bool,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            scheduler: "mh".into(),
            xdp_mode: "native".into(),
            sync: None,
            announce: None,
            sloppy_tcp: false,
        }
    }
}

impl HaConfig {
    /// The production shape: `wlc`, connection and persistence sync
    /// (active-active, multicast 224.0.0.81 on the directors' LAN, syncid 7,
    /// a 3 s resync wait), and BIRD told by `[announce]` when to announce.
    pub fn synced() -> HaConfig {
        HaConfig {
            scheduler: "wlc".into(),
            sync: Some(
                "[sync]\nmode = \"active-active\"\ninterface = \"dr0\"\nsyncid = 7\nresync_wait = 3\n"
                    .into(),
            ),
            announce: Some(
                "[announce]\nup = [\"birdc\", \"-s\", \"{bird_sock}\", \"enable\", \"vip\"]\n\
                 down = [\"birdc\", \"-s\", \"{bird_sock}\", \"disable\", \"vip\"]\n\
                 withdraw_delay = 1\n"
                    .into(),
            ),
            ..HaConfig::default()
        }
    }
}

/// The config of director `i` in an HA lab whose state directory is `dir`:
/// DR, a firewall-mark service for ports 80 and 443 of the VIP, persistent
/// per client /24, three real servers.
pub fn ha_config(dir: &Path, i: usize, c: &HaConfig) -> String {
    let mut s = format!(
        r#"# xdpvs HA lab, director {i}
[director]
interfaces = ["dr0"]
xdp_mode = "{xdp}"
control_socket = "{sock}"
metrics = "off"
sloppy_tcp = {sloppy}

# HTTP and HTTPS-like ports behave as ONE service: one persistence template
# per client /24 covers both.
[[fwmark]]
mark = 1
rules = [ {{ vip = "{HA_VIP4}", proto = "tcp", ports = "80,443" }} ]

[[service]]
name = "web"
fwmark = 1
scheduler = "{sched}"
persistence = {{ timeout = 300, netmask = "255.255.255.0" }}
"#,
        xdp = c.xdp_mode,
        sock = control_socket(dir, i).display(),
        sched = c.scheduler,
        sloppy = c.sloppy_tcp,
    );
    for a in rs_ip4() {
        s.push_str(&format!(
            "  [[service.real]]\n  addr = \"{a}\"\n  weight = 1\n  forward = \"dr\"\n"
        ));
    }
    // SYNC: connection/persistence sync goes here once xdpvs has it.
    if let Some(sync) = &c.sync {
        s.push('\n');
        s.push_str(
            &sync
                .replace("{me}", &dir_ip4(i))
                .replace("{peer}", &dir_ip4(1 - i.min(1))),
        );
        s.push('\n');
    }
    if let Some(a) = &c.announce {
        s.push('\n');
        s.push_str(&a.replace("{bird_sock}", &bird_socket(dir, i).display().to_string()));
        s.push('\n');
    }
    s
}

/// Director `i`'s LAN address (the router's BGP next hop).
pub fn dir_ip4(i: usize) -> String {
    format!("198.18.40.{}", 2 + i)
}

/// The real servers' addresses, rs1..rs3.
pub fn rs_ip4() -> [&'static str; 3] {
    ["198.18.40.11", "198.18.40.12", "198.18.40.13"]
}

fn control_socket(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("xdpvs{i}.sock"))
}

fn bird_socket(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("bird{i}.ctl"))
}

/// The running HA lab. Drop order: directors, then children, then the lab.
pub struct HaLab {
    dir: PathBuf,
    exe: PathBuf,
    env: HashMap<String, String>,
    directors: Vec<Option<DirectorProcess>>,
    children: Vec<(String, Child)>,
}

impl HaLab {
    /// Build the HA lab: namespaces, router with FRR, directors with BIRD
    /// (announcing the VIP), real servers with HTTP on 80 and 443, clients.
    /// Waits (bounded) until the router has both directors as ECMP next
    /// hops. `exe` is the xdpvs binary the directors will run.
    pub fn up(exe: &Path) -> io::Result<HaLab> {
        if !is_root() {
            return Err(io::Error::other(
                "the HA lab needs root (network namespaces, XDP)",
            ));
        }
        static LABS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("xha-lab-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        // FRR's daemons run as user frr and need to reach their directory.
        let _ = Command::new("chmod").arg("755").arg(&dir).status();
        std::fs::write(dir.join("lab.sh"), LAB_SH)?;
        std::fs::write(dir.join("deps.sh"), DEPS_SH)?;
        std::fs::write(dir.join("xdp_pass.o"), XDP_PASS_O)?;
        run_checked(
            Command::new("bash").arg(dir.join("deps.sh")),
            "installing lab tools",
        )?;
        let mut lab = HaLab {
            dir,
            exe: exe.to_path_buf(),
            env: HashMap::new(),
            directors: (0..HA_DIRECTORS).map(|_| None).collect(),
            children: Vec::new(),
        };
        lab.lab_sh(&["ha", "up"], "scripts/lab.sh ha up")?;
        let out = lab.lab_sh(&["ha", "env"], "scripts/lab.sh ha env")?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = line.split_once('=') {
                lab.env.insert(k.to_string(), v.to_string());
            }
        }
        lab.start_http(&[80, 443], HA_BIG_BYTES)?;
        lab.wait_paths(HA_DIRECTORS, Duration::from_secs(15))?;
        Ok(lab)
    }

    fn lab_sh(&self, args: &[&str], what: &str) -> io::Result<Output> {
        run_checked(
            Command::new("bash")
                .arg(self.dir.join("lab.sh"))
                .args(args)
                .env("LAB_HA_DIR", &self.dir)
                .env("LAB_XDP_PASS", self.dir.join("xdp_pass.o")),
            what,
        )
    }

    /// A value printed by `lab.sh ha env` (e.g. `HA_VIP4`).
    pub fn env(&self, key: &str) -> String {
        self.env.get(key).cloned().unwrap_or_default()
    }

    /// The lab's state directory (daemon configs, logs, sockets).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn vip(&self) -> &'static str {
        HA_VIP4
    }

    /// Director `i`'s namespace.
    pub fn director_ns(&self, i: usize) -> String {
        format!("xha-dir{i}")
    }

    /// Director `i`'s control socket (as in [`ha_config`]).
    pub fn control_socket(&self, i: usize) -> PathBuf {
        control_socket(&self.dir, i)
    }

    /// Director `i`'s BIRD control socket.
    pub fn bird_socket(&self, i: usize) -> PathBuf {
        bird_socket(&self.dir, i)
    }

    /// The config of director `i` for this lab.
    pub fn config(&self, i: usize, c: &HaConfig) -> String {
        ha_config(&self.dir, i, c)
    }

    /// Run a command in a namespace and wait for it.
    pub fn exec(&self, ns: &str, args: &[&str]) -> io::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
    }

    fn spawn(&mut self, name: &str, ns: &str, args: &[&str]) -> io::Result<()> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    fn start_http(&mut self, ports: &[u16], big: usize) -> io::Result<()> {
        let plist = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        for n in 1..=3 {
            let name = format!("rs{n}");
            let ns = format!("xha-rs{n}");
            let big = big.to_string();
            self.spawn(
                &format!("http-{name}"),
                &ns,
                &["python3", "-c", HA_HTTP_PY, &name, &plist, &big],
            )?;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for n in 1..=3 {
            for &p in ports {
                loop {
                    let out = self.exec(
                        &format!("xha-rs{n}"),
                        &["ss", "-Htln", &format!("sport = :{p}")],
                    )?;
                    if !out.stdout.is_empty() {
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err(io::Error::other(format!("HTTP on rs{n}:{p} did not start")));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        Ok(())
    }

    /// Start xdpvs in director `i`'s namespace with `config_toml` (see
    /// [`HaLab::config`]); waits until it forwards. A running director `i`
    /// is stopped first.
    pub fn start_director(&mut self, i: usize, config_toml: &str) -> io::Result<&DirectorProcess> {
        if i >= HA_DIRECTORS {
            return Err(io::Error::other(format!("no director {i}")));
        }
        self.stop_director(i);
        let cfg = self.dir.join(format!("xdpvs{i}.toml"));
        std::fs::write(&cfg, config_toml)?;
        let d = DirectorProcess::start(
            &self.exe,
            &self.director_ns(i),
            &cfg,
            &self.dir.join(format!("xdpvs{i}.log")),
        )?;
        let slot = self
            .directors
            .get_mut(i)
            .ok_or_else(|| io::Error::other("no slot"))?;
        Ok(slot.insert(d))
    }

    /// Director `i`'s process, if started.
    pub fn director(&self, i: usize) -> Option<&DirectorProcess> {
        self.directors.get(i).and_then(Option::as_ref)
    }

    /// Stop xdpvs of director `i` gracefully (SIGTERM); returns its log.
    pub fn stop_director(&mut self, i: usize) -> String {
        match self.directors.get_mut(i).and_then(Option::take) {
            Some(mut d) => d.stop(),
            None => String::new(),
        }
    }

    /// Director `i` dies: SIGKILL to its xdpvs and its BIRD (the kernel
    /// closes the BGP session, so the router withdraws the path at once).
    /// Returns the director's log.
    pub fn kill_director(&mut self, i: usize) -> String {
        // BIRD first, then xdpvs at once: a host that dies loses both.
        self.kill_bird(i);
        match self.directors.get_mut(i).and_then(Option::take) {
            Some(mut d) => {
                if let Some(pid) = d.pid() {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
                d.stop()
            }
            None => String::new(),
        }
    }

    fn kill_bird(&self, i: usize) {
        let pidfile = self.dir.join(format!("bird{i}.pid"));
        if let Ok(pid) = std::fs::read_to_string(&pidfile) {
            let pid = pid.trim();
            if !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()) {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = std::fs::remove_file(pidfile);
    }

    /// Start director `i`'s BIRD again (after [`HaLab::kill_director`]).
    pub fn restart_bird(&self, i: usize) -> io::Result<()> {
        self.kill_bird(i);
        let conf = self.dir.join(format!("bird{i}.conf"));
        run_checked(
            Command::new("ip")
                .args(["netns", "exec", &self.director_ns(i), "bird", "-c"])
                .arg(conf)
                .arg("-s")
                .arg(self.bird_socket(i))
                .arg("-P")
                .arg(self.dir.join(format!("bird{i}.pid"))),
            "starting bird",
        )
        .map(|_| ())
    }

    /// `birdc -s SOCK ARGS...` for director `i` (e.g. `["disable", "vip"]`).
    pub fn birdc(&self, i: usize, args: &[&str]) -> io::Result<String> {
        let sock = self.bird_socket(i).display().to_string();
        let mut argv = vec!["birdc", "-s", &sock];
        argv.extend_from_slice(args);
        let out = run_checked(
            Command::new("ip")
                .args(["netns", "exec", &self.director_ns(i)])
                .args(&argv),
            "birdc",
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Cut director `i` off the segment: its switch port (the side facing
    /// the router and the real servers) goes down. The router notices only
    /// when the BGP hold time (3 s) runs out.
    pub fn link_down(&self, i: usize) -> io::Result<()> {
        self.set_port(i, "down")
    }

    /// Undo [`HaLab::link_down`].
    pub fn link_up(&self, i: usize) -> io::Result<()> {
        self.set_port(i, "up")
    }

    fn set_port(&self, i: usize, state: &str) -> io::Result<()> {
        run_checked(
            Command::new("ip").args(["-n", "xha-lan", "link", "set", &format!("dir{i}"), state]),
            "ip link set",
        )
        .map(|_| ())
    }

    /// The router's next hops for the VIP (`ip route show VIP`), sorted.
    pub fn bgp_paths(&self) -> io::Result<Vec<String>> {
        let out = self.exec("xha-rt", &["ip", "route", "show", HA_VIP4])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut hops: Vec<String> = Vec::new();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            while let Some(x) = w.next() {
                if x == "via" {
                    if let Some(h) = w.next() {
                        hops.push(h.to_string());
                    }
                }
            }
        }
        hops.sort();
        hops.dedup();
        Ok(hops)
    }

    /// Wait (bounded) until the router has `n` next hops for the VIP;
    /// returns how long it took.
    pub fn wait_paths(&self, n: usize, timeout: Duration) -> io::Result<Duration> {
        let t0 = Instant::now();
        loop {
            let p = self.bgp_paths()?;
            if p.len() == n {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > timeout {
                return Err(io::Error::other(format!(
                    "router has next hops {p:?} for {HA_VIP4} after {timeout:?}, want {n}\n{}",
                    self.daemon_logs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The tails of the routing daemons' logs (for failure messages).
    pub fn daemon_logs(&self) -> String {
        let mut s = String::new();
        for f in ["frr/bgpd.log", "frr/zebra.log", "bird0.log", "bird1.log"] {
            let text = std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines.get(lines.len().saturating_sub(10)..).unwrap_or(&[]);
            s.push_str(&format!("--- {f}\n{}\n", tail.join("\n")));
        }
        s
    }

    /// Client source address `host` (1..=16) of client group `group` (0..=3):
    /// 198.18.(52+group).host.
    pub fn client4(&self, group: u8, host: u8) -> String {
        format!("198.18.{}.{}", 52 + u16::from(group), host)
    }

    /// Run requests from the client namespace (each from a fresh source
    /// port), in order.
    pub fn requests(&self, reqs: &[Request]) -> io::Result<Vec<Response>> {
        client_requests(reqs)
    }
}

/// [`HaLab::requests`] without the lab (for a client thread while the
/// test changes the lab).
pub fn client_requests(reqs: &[Request]) -> io::Result<Vec<Response>> {
    {
        let mut child = Command::new("ip")
            .args(["netns", "exec", "xha-cl", "python3", "-c", CLIENT_PY])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let input = serde_json::to_vec(reqs).map_err(io::Error::other)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&input)?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "client failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        serde_json::from_slice(&out.stdout).map_err(io::Error::other)
    }
}

impl HaLab {
    /// One HTTP request to the VIP from `src`: the real server that answered.
    pub fn which_server(&self, src: &str, port: u16) -> io::Result<Option<String>> {
        let r = self.requests(&[Request::http(src, HA_VIP4, port)])?;
        Ok(r.first().and_then(|r| r.server()).map(str::to_string))
    }

    /// `xdpvs list --stats --json` of director `i`.
    pub fn director_status(&self, i: usize) -> io::Result<serde_json::Value> {
        let sock = self.control_socket(i);
        let out = run_checked(
            Command::new("ip")
                .args(["netns", "exec", &self.director_ns(i)])
                .arg(&self.exe)
                .args(["list", "--stats", "--json", "-s"])
                .arg(sock),
            "xdpvs list",
        )?;
        serde_json::from_slice(&out.stdout).map_err(io::Error::other)
    }

    /// Connections director `i` has scheduled so far, per real server
    /// address (its counters through the control socket).
    pub fn director_conns(&self, i: usize) -> io::Result<Vec<(String, u64)>> {
        let v = self.director_status(i)?;
        let mut out: Vec<(String, u64)> = Vec::new();
        for svc in v
            .get("services")
            .and_then(|s| s.as_array())
            .into_iter()
            .flatten()
        {
            for r in svc
                .get("reals")
                .and_then(|r| r.as_array())
                .into_iter()
                .flatten()
            {
                let addr = r
                    .get("addr")
                    .and_then(|a| a.as_str())
                    .unwrap_or_default()
                    .to_string();
                let n = r
                    .pointer("/stats/conns")
                    .and_then(|n| n.as_u64())
                    .unwrap_or(0);
                match out.iter_mut().find(|(a, _)| *a == addr) {
                    Some(e) => e.1 += n,
                    None => out.push((addr, n)),
                }
            }
        }
        Ok(out)
    }

    /// Total connections director `i` has scheduled so far.
    pub fn director_total(&self, i: usize) -> io::Result<u64> {
        Ok(self.director_conns(i)?.iter().map(|(_, n)| n).sum())
    }
}

impl Drop for HaLab {
    fn drop(&mut self) {
        for d in &mut self.directors {
            if let Some(mut d) = d.take() {
                d.stop();
            }
        }
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("bash")
            .arg(self.dir.join("lab.sh"))
            .args(["ha", "down"])
            .env("LAB_HA_DIR", &self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
