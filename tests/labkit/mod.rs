//! Shared pieces of the lab tests: the binary under test, the root check,
//! a TCP echo server for real servers, and a client that holds one session.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use xdpvs_lab::Lab;

/// The lab's namespace names are fixed: one lab test at a time per binary.
pub static LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Hold this while a test uses the lab.
pub fn lab_lock() -> std::sync::MutexGuard<'static, ()> {
    LAB.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xdpvs"))
}

/// True (and says why) when the test cannot run here.
pub fn skip(name: &str) -> bool {
    xdpvs::dataplane::testutil::skip_without_root(name)
}

/// Resident memory of process `pid`, KiB (0 if unreadable).
pub fn rss_kib(pid: impl std::fmt::Display) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The MAC address of the director's data interface (`dr0`).
pub fn director_mac(lab: &Lab) -> String {
    String::from_utf8_lossy(
        &lab.exec(
            &lab.env("LAB_NS_DIR"),
            &["cat", "/sys/class/net/dr0/address"],
        )
        .expect("director mac")
        .stdout,
    )
    .trim()
    .to_string()
}

/// A TCP echo on port 7000 that prefixes each line with the server's name.
pub const ECHO: &str = r#"
import socket, sys, threading
name = sys.argv[1]
l = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
l.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("::", 7000)); l.listen(16)
def serve(c):
    f = c.makefile("rwb")
    for line in f:
        f.write(name.encode() + b" " + line); f.flush()
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Start [`ECHO`] on every real server.
pub fn start_echo(lab: &mut Lab) {
    for (i, ns) in lab.rs_namespaces().iter().enumerate() {
        let name = format!("rs{}", i + 1);
        lab.spawn(&format!("echo-{name}"), ns, &["python3", "-c", ECHO, &name])
            .expect("echo");
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
}

const HOLD: &str = r#"
import socket, sys
s = socket.create_connection(("198.18.0.100", 7000), timeout=float(sys.argv[2]), source_address=(sys.argv[1], 0))
f = s.makefile("rwb")
for line in sys.stdin:
    try:
        f.write(line.encode()); f.flush()
        print(f.readline().decode().strip() or "closed", flush=True)
    except Exception as e:
        print("error " + str(e), flush=True)
"#;

/// One TCP session from the client namespace to VIP:7000, held open; each
/// [`Held::ask`] sends a line and returns the echo ("rsN ping N").
pub struct Held {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Held {
    pub fn open(lab: &Lab, src: &str, timeout_s: u32) -> Held {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.env("LAB_NS_CLIENT"),
                "python3",
                "-c",
                HOLD,
            ])
            .args([src, &timeout_s.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("held client");
        Held {
            stdin: child.stdin.take().expect("stdin"),
            stdout: BufReader::new(child.stdout.take().expect("stdout")),
            child,
        }
    }

    pub fn ask(&mut self, n: u32) -> String {
        let _ = writeln!(self.stdin, "ping {n}");
        let _ = self.stdin.flush();
        let mut line = String::new();
        let _ = self.stdout.read_line(&mut line);
        line.trim().to_string()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `[director]` section of a lab config: the lab director's
/// interfaces, `xdp` mode, a control socket in the lab's directory, no
/// metrics listener, then the `extra` lines.
pub fn director_section(lab: &Lab, xdp: &str, extra: &str) -> String {
    let ifaces: Vec<String> = lab
        .env_list("LAB_DIR_IFS")
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect();
    format!(
        "[director]\ninterfaces = [{}]\nxdp_mode = \"{xdp}\"\ncontrol_socket = \"{}\"\nmetrics = \"off\"\n{extra}\n",
        ifaces.join(", "),
        lab.dir().join("xdpvs.sock").display()
    )
}

/// `[[service.real]]` entries for the lab's real servers listed in `key`
/// (e.g. `LAB_RS_IP4`), forwarding `fwd`, weights in order (1 when
/// missing), and `port` when given.
pub fn reals(lab: &Lab, key: &str, fwd: &str, weights: &[u32], port: Option<u16>) -> String {
    let mut s = String::new();
    for (i, a) in lab.env_list(key).iter().enumerate() {
        s.push_str(&format!(
            "  [[service.real]]\n  addr = \"{a}\"\n  weight = {}\n  forward = \"{fwd}\"\n",
            weights.get(i).copied().unwrap_or(1)
        ));
        if let Some(p) = port {
            s.push_str(&format!("  port = {p}\n"));
        }
    }
    s
}

/// `sha256sum FILE` (the content a download must match).
pub fn sha256_file(p: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(p)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `xdpvs ARGS -s SOCKET` in the director's namespace, against the lab's
/// control socket (`xdpvs.sock` in the lab's directory).
pub fn cli(lab: &Lab, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", &lab.env("LAB_NS_DIR")])
        .arg(exe())
        .args(args)
        .arg("-s")
        .arg(lab.dir().join("xdpvs.sock"))
        .output()
        .expect("cli")
}

/// The running director's state (`xdpvs list --json`).
pub fn status(lab: &Lab) -> xdpvs::control::status::Status {
    let out = cli(lab, &["list", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "xdpvs list --json: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
