//! The demo/test lab: network namespaces with a client, a router, the
//! director and three real servers (built by `scripts/lab.sh`, embedded here
//! so `xdpvs demo` works from any directory), plus real servers (python's
//! http.server, a UDP echo) and real clients (python http.client).
//!
//! Addresses only from 198.18.0.0/15 and 2001:db8::/32. Everything the lab
//! starts is stopped, and the namespaces removed, when the [`Lab`] is dropped.
//!
//! A crate of its own (`xdpvs-lab`, beside the `xdpvs` library, not in it):
//! used by the `xdpvs demo` command ([`demo`]) and by the tests.

// As in the library: no unwrap/expect/panic or unchecked indexing outside
// tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod demo;
pub mod ha;

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const LAB_SH: &str = include_str!("../../scripts/lab.sh");
const DEPS_SH: &str = include_str!("../../scripts/deps.sh");
/// `bpf/xdp_pass.o`: written beside the embedded lab.sh, which attaches it
/// to the veth ends facing the director (`LAB_XDP_PASS`).
const XDP_PASS_O: &[u8] = include_bytes!("../../bpf/xdp_pass.o");

/// Python client: reads a JSON list of requests on stdin, prints one JSON
/// result per request. Bounded: every request has a timeout.
pub const CLIENT_PY: &str = r#"
import sys, json, socket, http.client, hashlib, time
reqs = json.load(sys.stdin)
out = []
for r in reqs:
    res = {"ok": False}
    t0 = time.time()
    try:
        if r.get("udp"):
            fam = socket.AF_INET6 if ":" in r["dst"] else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.settimeout(r.get("timeout", 2.0))
            s.bind((r["src"], 0))
            s.sendto(r.get("payload", "ping").encode(), (r["dst"], r["port"]))
            data, peer = s.recvfrom(65535)
            s.close()
            # A reply must come from the address the client sent to (the
            # VIP), or a connected client socket would never see it.
            if socket.inet_pton(fam, peer[0]) != socket.inet_pton(fam, r["dst"]):
                res = {"ok": False, "error": "reply from %s, not %s" % (peer[0], r["dst"])}
            else:
                res = {"ok": True, "body": data.decode(errors="replace")}
        else:
            c = http.client.HTTPConnection(r["dst"], r["port"], timeout=r.get("timeout", 3.0),
                                           source_address=(r["src"], 0))
            c.request("GET", r.get("path", "/"))
            resp = c.getresponse()
            body = resp.read()
            c.close()
            res = {"ok": resp.status == 200, "status": resp.status, "len": len(body),
                   "sha256": hashlib.sha256(body).hexdigest(),
                   "body": body[:64].decode(errors="replace").strip()}
    except Exception as e:
        res = {"ok": False, "error": str(e)}
    res["ms"] = int((time.time() - t0) * 1000)
    out.append(res)
print(json.dumps(out))
"#;

/// UDP echo server that answers with its name (bounded by its lifetime).
/// It binds each address it is given (the VIPs on a DR real server), so a
/// reply leaves from the address the request was sent to, as real UDP
/// services (DNS, ...) do; with no address it binds the wildcard.
pub const UDP_ECHO_PY: &str = r#"
import sys, socket, select
name, port, addrs = sys.argv[1], int(sys.argv[2]), sys.argv[3:] or ["::"]
socks = []
for a in addrs:
    s = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_DGRAM)
    if a == "::":
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a, port))
    socks.append(s)
while True:
    r, _, _ = select.select(socks, [], [])
    for s in r:
        data, peer = s.recvfrom(65535)
        s.sendto((name + " " + data.decode(errors="replace")).encode(), peer)
"#;

/// The lab topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabMode {
    /// One-arm direct routing.
    Dr,
    /// Two-arm masquerading.
    Nat,
}

impl LabMode {
    pub fn name(self) -> &'static str {
        match self {
            LabMode::Dr => "dr",
            LabMode::Nat => "nat",
        }
    }
}

/// One client request for [`Lab::requests`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct Request {
    pub src: String,
    pub dst: String,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub udp: bool,
    pub timeout: f64,
}

impl Request {
    pub fn http(src: &str, dst: &str, port: u16) -> Request {
        Request {
            src: src.to_string(),
            dst: dst.to_string(),
            port,
            path: None,
            udp: false,
            timeout: 3.0,
        }
    }
    pub fn udp(src: &str, dst: &str, port: u16) -> Request {
        Request {
            udp: true,
            timeout: 2.0,
            ..Request::http(src, dst, port)
        }
    }
}

/// The outcome of one request.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub len: u64,
    #[serde(default)]
    pub sha256: String,
    /// The start of the body: the real server's name for the lab's servers.
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub ms: u64,
}

impl Response {
    /// The real server that answered ("rs1".."rs3"), if any.
    pub fn server(&self) -> Option<&str> {
        if !self.ok {
            return None;
        }
        self.body.split_whitespace().next()
    }
}

pub struct Lab {
    pub mode: LabMode,
    dir: PathBuf,
    env: HashMap<String, String>,
    children: Vec<(String, Child)>,
}

/// Is this process root (the lab needs it)?
pub fn is_root() -> bool {
    // SAFETY-free: geteuid has no preconditions; libc marks it unsafe only
    // because it is an FFI call. Use the /proc view instead to stay safe.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn run_checked(cmd: &mut Command, what: &str) -> io::Result<Output> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out)
}

impl Lab {
    /// Build the lab (removing a leftover one first). Installs the tools the
    /// lab needs (ethtool, ...) when missing.
    pub fn up(mode: LabMode) -> io::Result<Lab> {
        Lab::up_with_queues(mode, 2)
    }

    /// [`Lab::up`] with `queues` RX/TX queues (1..=8) on the director's
    /// data interfaces instead of 2.
    pub fn up_with_queues(mode: LabMode, queues: u8) -> io::Result<Lab> {
        if !is_root() {
            return Err(io::Error::other(
                "the lab needs root (network namespaces, XDP)",
            ));
        }
        // One directory per lab, never reused: a director's state file or
        // logs must not leak into the next lab of the same process.
        static LABS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("xdpvs-lab-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("lab.sh"), LAB_SH)?;
        std::fs::write(dir.join("deps.sh"), DEPS_SH)?;
        std::fs::write(dir.join("xdp_pass.o"), XDP_PASS_O)?;
        run_checked(
            Command::new("bash").arg(dir.join("deps.sh")),
            "installing lab tools",
        )?;
        let mut lab = Lab {
            mode,
            dir,
            env: HashMap::new(),
            children: Vec::new(),
        };
        run_checked(
            Command::new("bash")
                .arg(lab.dir.join("lab.sh"))
                .env("LAB_DIR_QUEUES", queues.to_string())
                .env("LAB_XDP_PASS", lab.dir.join("xdp_pass.o"))
                .args(["up", mode.name()]),
            "scripts/lab.sh up",
        )?;
        let out = run_checked(
            Command::new("bash")
                .arg(lab.dir.join("lab.sh"))
                .args(["env", mode.name()]),
            "scripts/lab.sh env",
        )?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = line.split_once('=') {
                lab.env.insert(k.to_string(), v.to_string());
            }
        }
        Ok(lab)
    }

    /// A value printed by `lab.sh env` (e.g. `LAB_VIP4`).
    pub fn env(&self, key: &str) -> String {
        self.env.get(key).cloned().unwrap_or_default()
    }

    /// Real-server namespaces, in order rs1..rs3.
    pub fn rs_namespaces(&self) -> Vec<String> {
        self.env_list("LAB_NS_RS")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Run a command in a namespace and wait for it.
    pub fn exec(&self, ns: &str, args: &[&str]) -> io::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
    }

    /// Start a long-running command in a namespace; it is killed with the lab.
    pub fn spawn(&mut self, name: &str, ns: &str, args: &[&str]) -> io::Result<()> {
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

    /// Stop a command started with [`Lab::spawn`].
    pub fn kill(&mut self, name: &str) {
        self.children.retain_mut(|(n, c)| {
            if n == name {
                let _ = c.kill();
                let _ = c.wait();
                false
            } else {
                true
            }
        });
    }

    /// Start python http.server on `ports` in every real server; each serves
    /// an index naming the server ("rs1", ...) and a `big` file of `big_bytes`.
    pub fn start_http(&mut self, ports: &[u16], big_bytes: usize) -> io::Result<()> {
        for (i, ns) in self.rs_namespaces().iter().enumerate() {
            let name = format!("rs{}", i + 1);
            let root = self.dir.join(&name);
            std::fs::create_dir_all(&root)?;
            std::fs::write(root.join("index.html"), format!("{name}\n"))?;
            if big_bytes > 0 {
                let mut f = std::fs::File::create(root.join("big"))?;
                // Deterministic content: the same in every server.
                let mut x: u32 = 0x1234_5678;
                let mut buf = Vec::with_capacity(big_bytes);
                for _ in 0..big_bytes {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    buf.push((x >> 24) as u8);
                }
                f.write_all(&buf)?;
            }
            for &p in ports {
                let root_s = root.to_string_lossy().to_string();
                let port = p.to_string();
                self.spawn(
                    &format!("http-{name}-{p}"),
                    ns,
                    &[
                        "python3",
                        "-m",
                        "http.server",
                        &port,
                        // "::" makes http.server dual-stack (IPv4 and IPv6).
                        "--bind",
                        "::",
                        "--directory",
                        &root_s,
                    ],
                )?;
            }
        }
        // Wait until every server listens (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        for ns in self.rs_namespaces() {
            for &p in ports {
                loop {
                    let out = self.exec(&ns, &["ss", "-Htln", &format!("sport = :{p}")])?;
                    if !out.stdout.is_empty() {
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err(io::Error::other(format!(
                            "http.server on {ns}:{p} did not start"
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        Ok(())
    }

    /// Start a UDP echo (answers "rsN <payload>") on `port` in every real
    /// server, bound to each real server's own addresses and, in DR mode, to
    /// the VIPs on its loopback, so replies leave from the address asked.
    pub fn start_udp_echo(&mut self, port: u16) -> io::Result<()> {
        let rip4: Vec<String> = self.env_list("LAB_RS_IP4");
        let rip6: Vec<String> = self.env_list("LAB_RS_IP6");
        for (i, ns) in self.rs_namespaces().iter().enumerate() {
            let name = format!("rs{}", i + 1);
            let p = port.to_string();
            let mut args: Vec<String> = vec!["python3".into(), "-c".into(), UDP_ECHO_PY.into()];
            args.push(name.clone());
            args.push(p);
            args.extend(rip4.get(i).cloned());
            args.extend(rip6.get(i).cloned());
            if self.mode == LabMode::Dr {
                args.push(self.env("LAB_VIP4"));
                args.push(self.env("LAB_VIP6"));
            }
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            self.spawn(&format!("udp-{name}-{port}"), ns, &argv)?;
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    /// A comma-separated value printed by `lab.sh env`.
    pub fn env_list(&self, key: &str) -> Vec<String> {
        self.env(key)
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Run requests from the client namespace, in order, and return the results.
    pub fn requests(&self, reqs: &[Request]) -> io::Result<Vec<Response>> {
        let ns = self.env("LAB_NS_CLIENT");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c", CLIENT_PY])
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

    /// Client source address `host` (1..=16) of client group `group` (0..=3):
    /// groups are different /24s, hosts of one group share a /24.
    pub fn client4(&self, group: u8, host: u8) -> String {
        format!("198.18.{}.{}", 100 + group as u16, host)
    }

    /// IPv6 client source address `host` (1..=16).
    pub fn client6(&self, host: u8) -> String {
        format!("2001:db8:100::{host:x}")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("bash")
            .arg(self.dir.join("lab.sh"))
            .arg("down")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
