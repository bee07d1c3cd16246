//! Sync with `auth_key`, against a hostile peer link: a real director (a
//! `backup` with a unicast peer list) and a Python sender in a namespace
//! pair of their own (names `xsy*`). Only a datagram sealed with the key,
//! from the listed peer, with the configured syncid and a fresh sequence
//! changes the director's table; a plain, forged, altered, replayed,
//! foreign or malformed one changes nothing and is counted by reason. A
//! reload switches the role (a master ignores what it receives, counted)
//! while the director runs.
//!
//! Root only (namespaces, XDP); under CI a skip is a failure.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use xdpvs::dataplane::testutil::{sh, skip_without_root, Netns};
use xdpvs_lab::demo::DirectorProcess;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xdpvs"))
}

const KEY: &str = "0123456789abcdef0123456789abcdef";

/// The sender: one datagram per line of stdin, `kind` then arguments.
const SENDER_PY: &str = r#"
import hmac, hashlib, socket, struct, sys, os
key = sys.argv[1].encode()
def entry(caddr, cport, syncid):
    e = struct.pack("!BBHIHHHHII", 0, 6, 36, 3, 1, cport, 80, 80, 0, 900)
    e += socket.inet_aton(caddr) + socket.inet_aton("198.18.213.10") + socket.inet_aton("198.18.212.5")
    return struct.pack("!BBHBBH", 0, syncid, 8 + len(e), 1, 1, 0) + e
def seal(k, seq, p):
    b = b"XA\0\0SYN1" + struct.pack("!Q", seq) + p
    return b + hmac.new(k, b, hashlib.sha256).digest()[:16]
seq = 1 << 60
for line in sys.stdin:
    kind, src, *rest = line.split()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    good = entry("198.18.213.5", 40000, 9)
    if kind == "plain":   d = good
    elif kind == "forged":  d = seal(b"not-the-key-not-the-key", seq + 1, good)
    elif kind == "altered":
        d = bytearray(seal(key, seq + 2, good)); d[40] ^= 1; d = bytes(d)
    elif kind == "good":    d = seal(key, seq + 10, good)
    elif kind == "replay":  d = seal(key, seq + 10, good)
    elif kind == "older":   d = seal(key, seq + 5, entry("198.18.213.6", 40001, 9))
    elif kind == "syncid":  d = seal(key, seq + 20, entry("198.18.213.7", 40002, 8))
    elif kind == "foreign": d = seal(key, seq + 30, entry("198.18.213.8", 40003, 9))
    elif kind == "truncated": d = seal(key, seq + 40, good[:6])
    elif kind == "version": d = seal(key, seq + 41, good[:4] + b"\x01\x07" + good[6:])
    elif kind == "size":    d = seal(key, seq + 42, good + b"\0\0\0\0")
    elif kind == "random":  d = seal(key, seq + 43, os.urandom(300))
    elif kind == "short":   d = b"XA\0\0SYN1"
    elif kind == "late":    d = seal(key, seq + 50, entry("198.18.213.9", 40004, 9))
    s.sendto(d, ("198.18.212.1", 8848))
    s.close()
"#;

fn status(ns: &str, sock: &str) -> serde_json::Value {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe())
        .args(["list", "--sync", "--json", "-s", sock])
        .output()
        .expect("list --sync");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn conns(ns: &str, sock: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe())
        .args(["list", "-C", "-s", sock])
        .output()
        .expect("list -C");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn ignored(st: &serde_json::Value, reason: &str) -> u64 {
    st["ignored"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|x| x[0] == reason)
                .and_then(|x| x[1].as_u64())
        })
        .unwrap_or(0)
}

#[test]
fn authenticated_sync_refuses_forged_altered_replayed_and_malformed_datagrams() {
    if skip_without_root("sync hostile lab") {
        return;
    }
    let id = std::process::id();
    let (nd, np) = (format!("xsy{id}d"), format!("xsy{id}p"));
    let _ns = Netns::create(&[&nd, &np]).expect("namespaces");
    for c in [
        format!("ip -n {nd} link add xsy0 type veth peer name xsy1 netns {np}"),
        format!("ip -n {nd} addr add 198.18.212.1/24 dev xsy0"),
        format!("ip -n {nd} link set xsy0 up"),
        format!("ip -n {np} addr add 198.18.212.2/24 dev xsy1"),
        format!("ip -n {np} addr add 198.18.212.3/24 dev xsy1"),
        format!("ip -n {np} addr add 198.18.212.5/24 dev xsy1"),
        format!("ip -n {np} link set xsy1 up"),
    ] {
        sh(&c).expect("veth");
    }
    let dir = std::env::temp_dir().join(format!("xsy-{id}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let key = dir.join("sync.key");
    std::fs::write(&key, format!("{KEY}\n")).expect("key");
    let sock = dir.join("xdpvs.sock").display().to_string();
    let cfg = dir.join("xdpvs.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[director]
interfaces = ["xsy0"]
xdp_mode = "generic"
control_socket = "{sock}"
metrics = "off"

[sync]
mode = "backup"
interface = "xsy0"
peers = ["198.18.212.2"]
syncid = 9
auth_key = "{key}"
resync_wait = 0

[[service]]
name = "web"
proto = "tcp"
vip = "198.18.213.10"
port = 80
scheduler = "wlc"
  [[service.real]]
  addr = "198.18.212.5"
  forward = "dr"
"#,
            key = key.display()
        ),
    )
    .expect("cfg");
    let mut d =
        DirectorProcess::start(&exe(), &nd, &cfg, &dir.join("director.log")).expect("director");

    let send = |lines: &[&str]| {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &np, "python3", "-c", SENDER_PY, KEY])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sender");
        use std::io::Write;
        let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        std::thread::sleep(Duration::from_millis(300));
    };
    let wait = |what: &str, f: &dyn Fn(&serde_json::Value) -> bool| {
        let t0 = Instant::now();
        loop {
            let st = status(&nd, &sock);
            if f(&st) {
                return st;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "{what}: {st}\n{}",
                conns(&nd, &sock)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // Before the real one: nothing gets in.
    send(&[
        "plain 198.18.212.2",
        "forged 198.18.212.2",
        "altered 198.18.212.2",
        "short 198.18.212.2",
    ]);
    let st = wait("refused", &|st| st["received_datagrams"] == 4);
    assert_eq!(ignored(&st, "auth_bad_magic"), 1, "plain: {st}");
    assert_eq!(ignored(&st, "auth_bad_tag"), 2, "forged and altered: {st}");
    assert_eq!(ignored(&st, "auth_truncated"), 1, "short: {st}");
    assert_eq!(st["applied_conns"], 0, "{st}");
    assert!(!conns(&nd, &sock).contains("198.18.213.5"));

    // The real one is applied.
    send(&["good 198.18.212.2"]);
    wait("applied", &|st| st["applied_conns"] == 1);
    let listed = conns(&nd, &sock);
    assert!(listed.contains("198.18.213.5:40000"), "{listed}");
    assert!(listed.contains("ESTABLISHED"), "{listed}");

    // Replayed, older, foreign syncid, foreign sender, malformed inside a
    // valid envelope: counted, nothing applied.
    send(&[
        "replay 198.18.212.2",
        "older 198.18.212.2",
        "syncid 198.18.212.2",
        "foreign 198.18.212.3",
        "truncated 198.18.212.2",
        "version 198.18.212.2",
        "size 198.18.212.2",
        "random 198.18.212.2",
    ]);
    let st = wait("all received", &|st| st["received_datagrams"] == 13);
    println!("{st}");
    assert_eq!(ignored(&st, "replay"), 2, "replay and older: {st}");
    assert_eq!(ignored(&st, "foreign_syncid"), 1, "{st}");
    assert_eq!(ignored(&st, "foreign_peer"), 1, "{st}");
    let malformed: u64 = [
        "truncated",
        "bad_version",
        "size_mismatch",
        "version0",
        "bad_spare",
    ]
    .iter()
    .map(|r| ignored(&st, r))
    .sum();
    assert!(malformed >= 3, "malformed counted by reason: {st}");
    assert_eq!(st["applied_conns"], 1, "nothing more applied: {st}");
    let listed = conns(&nd, &sock);
    for c in ["198.18.213.6", "198.18.213.7", "198.18.213.8"] {
        assert!(!listed.contains(c), "{c} got in: {listed}");
    }

    // Reload under sync: the role switches to master, which applies
    // nothing it receives (counted), and back to backup, which does.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("mode = \"backup\"", "mode = \"master\"")).unwrap();
    wait("reloaded as master", &|st| st["mode"] == "master");
    send(&["late 198.18.212.2"]);
    let st = wait("counted", &|st| st["received_datagrams"] == 14);
    assert_eq!(ignored(&st, "not_backup"), 1, "{st}");
    assert_eq!(st["applied_conns"], 1, "{st}");
    std::fs::write(&cfg, text).unwrap();
    wait("reloaded as backup", &|st| st["mode"] == "backup");
    assert!(!conns(&nd, &sock).contains("198.18.213.9"));
    let log = d.stop();
    assert!(!log.contains("panicked"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
