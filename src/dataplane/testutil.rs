//! Test support for the data plane (used by `tests/dataplane_*.rs`; not part
//! of the product): network namespace guards, running code inside a
//! namespace, and a minimal XDP program that redirects every frame of queue
//! `q` to the XSKMAP entry `q` (loaded with raw `bpf()` calls).
#![allow(clippy::indexing_slicing)] // test support: fixed local buffers

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;

/// Whether we run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// True when a root-only test cannot run here, and says so loudly. Under
/// CI (`CI` set to `true` or `1`) a missing privilege is a failure, never a
/// silent pass: the kernel tests are what CI is for.
#[allow(clippy::panic)] // test support: failing the test is the point
pub fn skip_without_root(what: &str) -> bool {
    if is_root() {
        return false;
    }
    if ci() {
        panic!("{what}: needs root, and CI is set: CI runs as root, a skip here would hide the kernel tests");
    }
    eprintln!(
        "SKIP {what}: needs root (network namespaces, XDP, AF_XDP, bpf()); NOT RUN, not passed"
    );
    true
}

/// Are we under CI (`CI=true` or `CI=1`)?
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Run a command; Ok(stdout) on success, Err(description) otherwise.
pub fn run(args: &[&str]) -> Result<String, String> {
    let (prog, rest) = args.split_first().ok_or("empty command")?;
    let out = Command::new(prog)
        .args(rest)
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run a command given as one string, split on whitespace (no quoting).
pub fn sh(cmd: &str) -> Result<String, String> {
    run(&cmd.split_whitespace().collect::<Vec<_>>())
}

/// Named network namespaces, deleted on drop (and before creation, so a
/// crashed earlier run does not get in the way).
pub struct Netns {
    names: Vec<String>,
}

impl Netns {
    /// Create the namespaces (each with `lo` up).
    pub fn create(names: &[&str]) -> Result<Self, String> {
        for n in names {
            let _ = run(&["ip", "netns", "del", n]);
        }
        let this = Netns {
            names: names.iter().map(|s| s.to_string()).collect(),
        };
        for n in names {
            run(&["ip", "netns", "add", n])?;
            run(&["ip", "-n", n, "link", "set", "lo", "up"])?;
        }
        Ok(this)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = run(&["ip", "netns", "del", n]);
        }
    }
}

/// Run `f` on a new thread that first enters network namespace `ns`
/// (threads it spawns inherit the namespace).
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    let h = std::thread::spawn(move || {
        // SAFETY: setns on a valid namespace fd for this thread only.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if r != 0 {
            return Err(format!("setns {path}: {}", io::Error::last_os_error()));
        }
        Ok(f())
    });
    h.join().map_err(|_| "netns thread panicked".to_string())?
}

/// Interface index of `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// MAC address of `ifname` inside namespace `ns`.
pub fn mac_of(ns: &str, ifname: &str) -> Result<[u8; 6], String> {
    let s = run(&[
        "ip",
        "netns",
        "exec",
        ns,
        "cat",
        &format!("/sys/class/net/{ifname}/address"),
    ])?;
    parse_mac(s.trim()).ok_or_else(|| format!("bad mac {s:?}"))
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut it = s.split(':');
    for b in m.iter_mut() {
        *b = u8::from_str_radix(it.next()?, 16).ok()?;
    }
    it.next().is_none().then_some(m)
}

/// Format a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Three namespaces `{prefix}-c` (client), `{prefix}-d` (director),
/// `{prefix}-s` (server): client `eth0` 198.18.60.1/24 <-> director `d0`,
/// director `d1` <-> server `eth0` 198.18.60.2/24. Director veths have two
/// queues on both ends; IPv6 is disabled (no stray frames); offloads are off
/// on every veth; client and server have static neighbours pointing at the
/// director's MACs, so everything between them crosses the director.
pub struct Triangle {
    pub ns: Netns,
    pub client: String,
    pub dir: String,
    pub server: String,
    pub client_mac: [u8; 6],
    pub server_mac: [u8; 6],
    pub d0_mac: [u8; 6],
    pub d1_mac: [u8; 6],
}

/// Client address of [`Triangle`].
pub const TRI_CLIENT_IP: &str = "198.18.60.1";
/// Server address of [`Triangle`].
pub const TRI_SERVER_IP: &str = "198.18.60.2";

impl Triangle {
    /// Build it (see the type's docs).
    pub fn create(prefix: &str) -> Result<Self, String> {
        let (c, d, s) = (
            format!("{prefix}-c"),
            format!("{prefix}-d"),
            format!("{prefix}-s"),
        );
        let ns = Netns::create(&[&c, &d, &s])?;
        for n in [&c, &d, &s] {
            sh(&format!(
                "ip netns exec {n} sysctl -qw net.ipv6.conf.all.disable_ipv6=1"
            ))?;
            sh(&format!(
                "ip netns exec {n} sysctl -qw net.ipv6.conf.default.disable_ipv6=1"
            ))?;
        }
        for (dif, peer) in [("d0", &c), ("d1", &s)] {
            sh(&format!(
                "ip -n {d} link add {dif} numtxqueues 2 numrxqueues 2 type veth \
                 peer name eth0 numtxqueues 2 numrxqueues 2 netns {peer}"
            ))?;
            sh(&format!("ip -n {d} link set {dif} up"))?;
            sh(&format!("ip -n {peer} link set eth0 up"))?;
            for (n, i) in [(&d, dif), (peer, "eth0")] {
                sh(&format!(
                    "ip netns exec {n} ethtool -K {i} tx off tso off gso off"
                ))?;
            }
        }
        sh(&format!("ip -n {c} addr add {TRI_CLIENT_IP}/24 dev eth0"))?;
        sh(&format!("ip -n {s} addr add {TRI_SERVER_IP}/24 dev eth0"))?;
        let t = Triangle {
            client_mac: mac_of(&c, "eth0")?,
            server_mac: mac_of(&s, "eth0")?,
            d0_mac: mac_of(&d, "d0")?,
            d1_mac: mac_of(&d, "d1")?,
            ns,
            client: c,
            dir: d,
            server: s,
        };
        sh(&format!(
            "ip -n {} neigh replace {TRI_SERVER_IP} lladdr {} dev eth0 nud permanent",
            t.client,
            fmt_mac(t.d0_mac)
        ))?;
        sh(&format!(
            "ip -n {} neigh replace {TRI_CLIENT_IP} lladdr {} dev eth0 nud permanent",
            t.server,
            fmt_mac(t.d1_mac)
        ))?;
        Ok(t)
    }
}

/// Python: receive UDP on `addr:port` until `want` datagrams or `secs`
/// seconds; prints "ready" once bound, then the count.
pub const PY_UDP_COUNT: &str = r#"
import socket, sys, time
addr, port, want, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, port)); s.settimeout(0.1)
print("ready", flush=True)
n = 0; end = time.time() + secs
while n < want and time.time() < end:
    try:
        s.recv(4096); n += 1
    except socket.timeout:
        pass
print(n, flush=True)
"#;

/// Python: send `n` UDP datagrams of `size` bytes to `addr:port` from
/// `flows` sockets (distinct source ports), pausing briefly every 32.
pub const PY_UDP_SEND: &str = r#"
import socket, sys, time
addr, port, n, flows, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(flows)]
for i in range(n):
    socks[i % flows].sendto(b"x" * size, (addr, port))
    if i % 32 == 31:
        time.sleep(0.002)
"#;

/// Send `n` datagrams from namespace `from_ns` to `to_ns`'s `addr:port`
/// and return how many arrived (waits at most `secs`).
pub fn udp_transfer(
    from_ns: &str,
    to_ns: &str,
    addr: &str,
    port: u16,
    n: u32,
    flows: u32,
    secs: f32,
) -> Result<u32, String> {
    use std::io::{BufRead, BufReader};
    let mut rx = Command::new("ip")
        .args(["netns", "exec", to_ns, "python3", "-c", PY_UDP_COUNT, addr])
        .args([port.to_string(), n.to_string(), secs.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn receiver: {e}"))?;
    let out = rx.stdout.take().ok_or("no receiver stdout")?;
    let mut lines = BufReader::new(out).lines();
    match lines.next() {
        Some(Ok(l)) if l.trim() == "ready" => {}
        other => {
            let _ = rx.kill();
            let _ = rx.wait();
            return Err(format!("receiver did not start: {other:?}"));
        }
    }
    let sent = run(&[
        "ip",
        "netns",
        "exec",
        from_ns,
        "python3",
        "-c",
        PY_UDP_SEND,
        addr,
        &port.to_string(),
        &n.to_string(),
        &flows.to_string(),
        "200",
    ]);
    let count = lines.next();
    let _ = rx.wait();
    sent?;
    match count {
        Some(Ok(l)) => l
            .trim()
            .parse()
            .map_err(|e| format!("receiver said {l:?}: {e}")),
        other => Err(format!("receiver gave no count: {other:?}")),
    }
}

/// CPU time (user + system, in clock ticks) of this process's threads whose
/// name starts with `prefix`.
pub fn thread_cpu_ticks(prefix: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut total = 0;
    for e in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat
            .get(open + 1..close)
            .is_some_and(|c| c.starts_with(prefix))
        {
            continue;
        }
        // Fields after ") ": state(3) ... utime(14) stime(15).
        let rest: Vec<&str> = stat.get(close + 2..).unwrap_or("").split(' ').collect();
        let f = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        total += f(11) + f(12);
    }
    total
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
/// Generic (skb) XDP attach mode.
pub const XDP_FLAGS_SKB_MODE: u32 = 2;
/// Native (driver) XDP attach mode.
pub const XDP_FLAGS_DRV_MODE: u32 = 4;

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> io::Result<RawFd> {
    // SAFETY: `attr` is a 128-byte zero-padded bpf_attr for `cmd`; pointers
    // inside it refer to buffers that outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as RawFd)
}

fn put32(a: &mut [u8; 128], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put64(a: &mut [u8; 128], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut i = [0u8; 8];
    i[0] = code;
    i[1] = (src << 4) | (dst & 0xf);
    i[2..4].copy_from_slice(&off.to_ne_bytes());
    i[4..8].copy_from_slice(&imm.to_ne_bytes());
    i
}

/// An XSKMAP and an XDP program `bpf_redirect_map(xskmap, rx_queue_index,
/// XDP_PASS)`, attachable to one interface through a BPF link (detached when
/// dropped).
pub struct XskRedirect {
    map: OwnedFd,
    prog: OwnedFd,
    links: Vec<OwnedFd>,
}

fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by bpf() and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

impl XskRedirect {
    /// Create the map (`max_queues` entries) and load the program.
    pub fn new(max_queues: u32) -> io::Result<Self> {
        let mut a = [0u8; 128];
        put32(&mut a, 0, BPF_MAP_TYPE_XSKMAP);
        put32(&mut a, 4, 4);
        put32(&mut a, 8, 4);
        put32(&mut a, 12, max_queues);
        let map = owned(bpf(BPF_MAP_CREATE, &mut a)?);

        let mut code = Vec::new();
        // r2 = *(u32 *)(r1 + 16)   ; xdp_md->rx_queue_index
        code.extend(insn(0x61, 2, 1, 16, 0));
        // r1 = map (ld_imm64, BPF_PSEUDO_MAP_FD)
        code.extend(insn(0x18, 1, 1, 0, map.as_raw_fd()));
        code.extend(insn(0, 0, 0, 0, 0));
        // r3 = XDP_PASS (returned when the map has no socket for the queue)
        code.extend(insn(0xb7, 3, 0, 0, 2));
        // call bpf_redirect_map
        code.extend(insn(0x85, 0, 0, 0, 51));
        // exit
        code.extend(insn(0x95, 0, 0, 0, 0));
        let license = b"GPL\0";
        let mut log = vec![0u8; 4096];
        let mut a = [0u8; 128];
        put32(&mut a, 0, BPF_PROG_TYPE_XDP);
        put32(&mut a, 4, (code.len() / 8) as u32);
        put64(&mut a, 8, code.as_ptr() as u64);
        put64(&mut a, 16, license.as_ptr() as u64);
        put32(&mut a, 24, 1);
        put32(&mut a, 28, log.len() as u32);
        put64(&mut a, 32, log.as_mut_ptr() as u64);
        put32(&mut a, 68, BPF_XDP);
        let prog = match bpf(BPF_PROG_LOAD, &mut a) {
            Ok(fd) => owned(fd),
            Err(e) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let msg = String::from_utf8_lossy(log.get(..end).unwrap_or(&[])).into_owned();
                return Err(io::Error::new(e.kind(), format!("{e}: {msg}")));
            }
        };
        Ok(XskRedirect {
            map,
            prog,
            links: Vec::new(),
        })
    }

    /// Put socket `fd` at key `queue`.
    pub fn insert(&self, queue: u32, fd: RawFd) -> io::Result<()> {
        let key = queue;
        let val = fd as u32;
        let mut a = [0u8; 128];
        put32(&mut a, 0, self.map.as_raw_fd() as u32);
        put64(&mut a, 8, &key as *const u32 as u64);
        put64(&mut a, 16, &val as *const u32 as u64);
        bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(|_| ())
    }

    /// Attach to `ifindex` (in the calling thread's namespace) with `flags`
    /// ([`XDP_FLAGS_SKB_MODE`] or [`XDP_FLAGS_DRV_MODE`]).
    pub fn attach(&mut self, ifindex: u32, flags: u32) -> io::Result<()> {
        let mut a = [0u8; 128];
        put32(&mut a, 0, self.prog.as_raw_fd() as u32);
        put32(&mut a, 4, ifindex);
        put32(&mut a, 8, BPF_XDP);
        put32(&mut a, 12, flags);
        let link = owned(bpf(BPF_LINK_CREATE, &mut a)?);
        self.links.push(link);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_format_round_trip() {
        let m = parse_mac("02:ab:00:10:ff:01").expect("mac");
        assert_eq!(m, [2, 0xab, 0, 0x10, 0xff, 1]);
        assert_eq!(fmt_mac(m), "02:ab:00:10:ff:01");
        assert_eq!(parse_mac("02:ab:00:10:ff"), None);
        assert_eq!(parse_mac("02:ab:00:10:ff:01:02"), None);
        assert_eq!(parse_mac("zz:ab:00:10:ff:01"), None);
    }

    #[test]
    fn insn_encoding_matches_the_bpf_abi() {
        // ldxw r2, [r1 + 16]
        assert_eq!(insn(0x61, 2, 1, 16, 0), [0x61, 0x12, 16, 0, 0, 0, 0, 0]);
        // call 51
        assert_eq!(insn(0x85, 0, 0, 0, 51), [0x85, 0, 0, 0, 51, 0, 0, 0]);
    }

    #[test]
    fn own_thread_cpu_is_counted() {
        let h = std::thread::Builder::new()
            .name("cputest-burn".into())
            .spawn(|| {
                let t = std::time::Instant::now();
                let mut x = 0u64;
                while t.elapsed() < std::time::Duration::from_millis(150) {
                    x = x.wrapping_add(1);
                    std::hint::black_box(x);
                }
                thread_cpu_ticks("cputest-burn")
            })
            .expect("spawn");
        let ticks = h.join().expect("join");
        assert!(ticks >= 5, "ticks {ticks}");
    }
}
