//! scripts/lab.sh: both topologies come up, route as documented, export
//! their variables and go down idempotently (root only; needs ethtool).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xdpvs::dataplane::neigh::{NeighborResolver, ResolverConfig, SharedNeighbors};
use xdpvs::dataplane::testutil::{
    fmt_mac, ifindex, in_netns, mac_of, run, sh, udp_transfer, XskRedirect, XDP_FLAGS_SKB_MODE,
};
use xdpvs::dataplane::{PacketHandler, RuntimeConfig, ShardRuntime};
use xdpvs::service::model::Millis;
use xdpvs::shard::nexthop::Neighbors;
use xdpvs::shard::verdict::{DropReason, Frame, Verdict};

/// The lab's namespace names are fixed: one test at a time.
static LAB: Mutex<()> = Mutex::new(());

fn lab() -> String {
    format!("{}/scripts/lab.sh", env!("CARGO_MANIFEST_DIR"))
}

struct LabGuard;

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = run(&[&lab(), "down"]);
    }
}

fn env_map() -> HashMap<String, String> {
    run(&[&lab(), "env"])
        .expect("lab env")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const ECHO: &str = r#"
import socket, sys
a = sys.argv[1]
s = socket.socket(socket.AF_INET6 if ':' in a else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((a, 7)); s.settimeout(5)
print("ready", flush=True)
try:
    d, peer = s.recvfrom(2048); s.sendto(d, peer)
except socket.timeout:
    pass
"#;

const SEND: &str = r#"
import socket, sys
dst, src = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET6 if ':' in dst else socket.AF_INET, socket.SOCK_DGRAM)
if src != "-":
    s.bind((src, 0))
s.settimeout(3)
s.sendto(b"lab", (dst, 7))
try:
    print(s.recvfrom(100)[0].decode())
except socket.timeout:
    print("timeout")
"#;

/// UDP echo from `from_ns` (source `src`, "-" for any) to `dst` served in `to_ns`.
fn echo(from_ns: &str, src: &str, to_ns: &str, dst: &str) -> bool {
    let mut srv = Command::new("ip")
        .args(["netns", "exec", to_ns, "python3", "-c", ECHO, dst])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn echo");
    let out = srv.stdout.take().expect("stdout");
    let ready = BufReader::new(out).lines().next();
    assert!(
        matches!(ready, Some(Ok(ref l)) if l == "ready"),
        "echo server in {to_ns} on {dst}: {ready:?}"
    );
    let reply = run(&[
        "ip", "netns", "exec", from_ns, "python3", "-c", SEND, dst, src,
    ]);
    let _ = srv.wait();
    reply.map(|r| r.trim() == "lab").unwrap_or(false)
}

fn queues(ns: &str, ifname: &str) -> String {
    run(&[
        "ip",
        "netns",
        "exec",
        ns,
        "ls",
        &format!("/sys/class/net/{ifname}/queues"),
    ])
    .unwrap_or_default()
}

#[test]
fn lab_dr_and_nat_come_up_route_and_go_down() {
    if xdpvs::dataplane::testutil::skip_without_root("lab test needs root") {
        return;
    }
    let _lock = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let _guard = LabGuard;

    run(&[&lab(), "up", "dr"]).expect("lab up dr");
    let e = env_map();
    assert_eq!(e.get("LAB_MODE").map(String::as_str), Some("dr"));
    assert_eq!(e.get("LAB_VIP4").map(String::as_str), Some("198.18.0.100"));
    assert_eq!(e.get("LAB_DIR_IF").map(String::as_str), None);
    assert_eq!(e.get("LAB_DIR_IN_IF").map(String::as_str), Some("dr0"));
    assert_eq!(
        e.get("LAB_CLIENT_SRC4").map(|v| v.split(',').count()),
        Some(64)
    );
    // Client reaches real servers (v4 from a pool address, v6) through the router.
    assert!(echo(
        "xdpvs-cl",
        "198.18.103.16",
        "xdpvs-rs1",
        "198.18.0.11"
    ));
    assert!(echo(
        "xdpvs-cl",
        "2001:db8:100::10",
        "xdpvs-rs2",
        "2001:db8::12"
    ));
    // The VIP is routed to the director (its kernel has it on lo).
    assert!(echo("xdpvs-cl", "-", "xdpvs-dir", "198.18.0.100"));
    assert!(echo("xdpvs-cl", "-", "xdpvs-dir", "2001:db8::100"));
    // Real servers hold the VIP on lo (DR).
    let rs_addrs = run(&["ip", "-n", "xdpvs-rs3", "addr", "show", "dev", "lo"]).expect("addr");
    assert!(rs_addrs.contains("198.18.0.100/32") && rs_addrs.contains("2001:db8::100/128"));
    assert!(queues("xdpvs-dir", "dr0").contains("rx-1"));

    // `up` again replaces the lab.
    run(&[&lab(), "up", "nat"]).expect("lab up nat");
    let e = env_map();
    assert_eq!(e.get("LAB_MODE").map(String::as_str), Some("nat"));
    assert_eq!(e.get("LAB_DIR_IN_IF").map(String::as_str), Some("dr1"));
    assert!(echo(
        "xdpvs-cl",
        "198.18.101.3",
        "xdpvs-dir",
        "198.18.0.100"
    ));
    assert!(echo("xdpvs-cl", "-", "xdpvs-dir", "2001:db8::100"));
    assert!(echo("xdpvs-dir", "-", "xdpvs-rs3", "198.18.3.13"));
    assert!(echo("xdpvs-dir", "-", "xdpvs-rs1", "2001:db8:3::11"));
    assert!(queues("xdpvs-dir", "dr1").contains("rx-1"));
    let fwd = run(&[
        "ip",
        "netns",
        "exec",
        "xdpvs-dir",
        "sysctl",
        "-n",
        "net.ipv4.ip_forward",
    ])
    .expect("sysctl");
    assert_eq!(fwd.trim(), "1");

    run(&[&lab(), "down"]).expect("down");
    run(&[&lab(), "down"]).expect("down twice");
    let left = run(&["ip", "netns", "list"]).expect("list");
    for ns in [
        "xdpvs-cl",
        "xdpvs-rt",
        "xdpvs-lan",
        "xdpvs-dir",
        "xdpvs-rs1",
    ] {
        assert!(
            !left
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "{ns} left behind"
        );
    }
}

/// Minimal DR: frames for the VIP get the real server's MAC (from the
/// kernel-backed neighbour table) and go back out; anything else is passed.
struct Dr {
    vip: IpAddr,
    rs: IpAddr,
    nb: SharedNeighbors,
}

impl PacketHandler for Dr {
    fn begin_batch(&mut self, _now: Millis) {}
    fn process(&mut self, _now: Millis, _in: u32, frame: &mut Frame<'_>) -> Verdict {
        let d = frame.data_mut();
        if d.len() < 34 || d[12] != 0x08 || d[13] != 0 {
            return Verdict::Pass;
        }
        if IpAddr::from([d[30], d[31], d[32], d[33]]) != self.vip {
            return Verdict::Pass;
        }
        match self.nb.lookup(self.rs) {
            Some(nh) => {
                d[0..6].copy_from_slice(&nh.dst_mac);
                d[6..12].copy_from_slice(&nh.src_mac);
                Verdict::Forward {
                    ifindex: nh.ifindex,
                }
            }
            None => Verdict::Drop(DropReason::NoNeighbor),
        }
    }
    fn tick(&mut self, _now: Millis) {}
}

#[test]
fn direct_routing_through_af_xdp_in_the_dr_lab() {
    if xdpvs::dataplane::testutil::skip_without_root("lab test needs root") {
        return;
    }
    let _lock = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let _guard = LabGuard;
    run(&[&lab(), "up", "dr"]).expect("lab up dr");
    // The minimal XDP program takes ARP too: pin the director on the router.
    let dr0_mac = mac_of("xdpvs-dir", "dr0").expect("mac");
    sh(&format!(
        "ip -n xdpvs-rt neigh replace 198.18.0.2 lladdr {} dev lan0 nud permanent",
        fmt_mac(dr0_mac)
    ))
    .expect("pin director");
    let rs1_mac = mac_of("xdpvs-rs1", "eth0").expect("mac");

    const N: u32 = 200;
    let stats = in_netns("xdpvs-dir", move || -> Result<_, String> {
        let vip: IpAddr = "198.18.0.100".parse().map_err(|_| "ip")?;
        let rs: IpAddr = "198.18.0.11".parse().map_err(|_| "ip")?;
        // Resolve the real server while the kernel still sees ARP.
        let mut r = NeighborResolver::new(ResolverConfig::default()).map_err(|e| e.to_string())?;
        let nb = r.shared();
        let t0 = Instant::now();
        while nb.lookup(rs).is_none() && t0.elapsed() < Duration::from_secs(5) {
            r.step().map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_millis(20));
        }
        let hop = nb.lookup(rs).ok_or("real server not resolved")?;
        if hop.dst_mac != rs1_mac {
            return Err(format!("resolved {:?}, want {rs1_mac:?}", hop.dst_mac));
        }
        let dr0 = ifindex("dr0").ok_or("no dr0")?;
        let rt =
            ShardRuntime::new(RuntimeConfig::per_queue(&[dr0], 1)).map_err(|e| e.to_string())?;
        let mut p = XskRedirect::new(4).map_err(|e| e.to_string())?;
        for s in rt.sockets() {
            p.insert(s.queue, s.fd).map_err(|e| e.to_string())?;
        }
        p.attach(dr0, XDP_FLAGS_SKB_MODE)
            .map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let running = rt
            .start(
                move |_, _| Dr {
                    vip,
                    rs,
                    nb: nb.clone(),
                },
                stop,
            )
            .map_err(|e| e.to_string())?;
        // Request/reply: the reply goes rs1 -> router -> client directly.
        let replied = echo("xdpvs-cl", "198.18.100.1", "xdpvs-rs1", "198.18.0.100");
        let got = udp_transfer("xdpvs-cl", "xdpvs-rs1", "198.18.0.100", 5000, N, 16, 10.0);
        running.stop();
        let stats = running.join().map_err(|e| e.to_string())?;
        drop(p);
        Ok((replied, got?, stats))
    })
    .expect("netns")
    .expect("run");
    let (replied, got, stats) = stats;
    eprintln!("{:?}", stats[0]);
    assert!(replied, "DR echo through the director");
    assert_eq!(got, N);
    assert!(stats[0].tx > u64::from(N));
}
