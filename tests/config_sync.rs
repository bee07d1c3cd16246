//! `[sync]` and `[director] sloppy_tcp`: the issue's contract as written,
//! defaults (IPVS's), round trip, and errors with file:line, key, reason.

use std::net::IpAddr;

use xdpvs::config::schema::{Config, SyncMode};

const FILE: &str = "config/s.toml";

const BASE: &str = "[director]\ninterfaces = [\"eth0\"]\n";

fn line_of(text: &str, marker: &str) -> usize {
    text.lines()
        .position(|l| l.contains(marker))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("marker {marker:?} not in text"))
}

#[track_caller]
fn expect_err(text: &str, marker: &str, key: &str, reason: &str) {
    let e = match Config::parse(text, FILE) {
        Ok(_) => panic!("config should be rejected:\n{text}"),
        Err(e) => e.to_string(),
    };
    let first = e.lines().next().unwrap_or("");
    let want = format!("{FILE}:{}:", line_of(text, marker));
    assert!(first.starts_with(&want), "want {want}... got:\n{e}");
    assert!(first.contains(key), "want key {key} got:\n{e}");
    assert!(first.contains(reason), "want reason {reason:?} got:\n{e}");
}

/// The contract of issue #16, verbatim.
#[test]
fn the_issue_contract_parses() {
    let text = format!(
        r#"{BASE}
[sync]
mode      = "active-active"      # "master" | "backup" | "active-active"
interface = "eth0"
group     = "224.0.0.81"         # or: peers = ["198.18.0.3", "198.18.0.4"]
port      = 8848
syncid    = 1
# auth_key = "/etc/xdpvs/sync.key"

[announce]
up   = ["birdc", "-s", "/run/bird/bird.ctl", "enable", "vip"]
down = ["birdc", "-s", "/run/bird/bird.ctl", "disable", "vip"]
"#
    );
    let c = Config::parse(&text, FILE).unwrap();
    let s = c.sync.as_ref().unwrap();
    assert_eq!(s.mode, SyncMode::ActiveActive);
    assert_eq!(s.interface, "eth0");
    assert_eq!(s.group, Some("224.0.0.81".parse().unwrap()));
    assert_eq!((s.port, s.syncid, s.ttl), (8848, 1, 1));
    let again = Config::parse(&c.to_toml(), FILE).unwrap();
    assert_eq!(again.sync, c.sync, "round trip");
}

#[test]
fn defaults_are_ipvs_defaults() {
    let c = Config::parse(&format!("{BASE}[sync]\ninterface = \"eth1\"\n"), FILE).unwrap();
    let s = c.sync.unwrap();
    assert_eq!(s.mode, SyncMode::ActiveActive);
    let g: IpAddr = "224.0.0.81".parse().unwrap();
    assert_eq!(s.destinations(), vec![g]);
    assert_eq!(
        (s.port, s.ttl, s.syncid, s.sync_period, s.resync_wait),
        (8848, 1, 0, 50, 30)
    );
    assert!(!c.director.sloppy_tcp);
    let none = Config::parse(BASE, FILE).unwrap();
    assert!(none.sync.is_none());
    assert!(!none.to_toml().contains("[sync]"));
}

#[test]
fn peers_mode_key_and_sloppy_round_trip() {
    let text = "[director]\ninterfaces = [\"eth0\"]\nsloppy_tcp = true\n[sync]\nmode = \"backup\"\ninterface = \"eth1\"\npeers = [\"198.18.0.3\", \"2001:db8::4\"]\nauth_key = \"/etc/xdpvs/sync.key\"\nsync_period = 0\nresync_wait = 0\n";
    let c = Config::parse(text, FILE).unwrap();
    let s = c.sync.as_ref().unwrap();
    assert_eq!(s.mode, SyncMode::Backup);
    assert_eq!(s.peers.len(), 2);
    assert!(c.director.sloppy_tcp);
    let again = Config::parse(&c.to_toml(), FILE).unwrap();
    assert_eq!(again.sync, c.sync);
    assert!(again.director.sloppy_tcp);
}

#[test]
fn errors_name_file_line_key_and_reason() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "mode = \"primary\"",
            "mode",
            "sync.mode",
            "unknown sync mode \"primary\"",
        ),
        (
            "group = \"198.18.0.9\"",
            "group",
            "sync.group",
            "not a multicast address",
        ),
        ("port = 0", "port", "sync.port", "out of range"),
        ("ttl = 0", "ttl", "sync.ttl", "out of range"),
        ("syncid = 256", "syncid", "sync.syncid", ""),
        (
            "peers = [\"224.0.0.81\"]",
            "peers",
            "sync.peers[0]",
            "unicast",
        ),
        (
            "resync_wait = 99999",
            "resync_wait",
            "sync.resync_wait",
            "out of range",
        ),
        (
            "frequency = 3",
            "frequency",
            "sync",
            "unknown key `frequency`",
        ),
    ];
    for (line, marker, key, reason) in cases {
        let text = format!("{BASE}[sync]\ninterface = \"eth1\"\n{line}\n");
        expect_err(&text, marker, key, reason);
    }
    let both = format!(
        "{BASE}[sync]\ninterface = \"eth1\"\ngroup = \"224.0.0.81\"\npeers = [\"198.18.0.3\"]\n"
    );
    expect_err(&both, "peers", "sync.peers", "either `group`");
    let missing = format!("{BASE}[sync]\nmode = \"master\"\n");
    expect_err(
        &missing,
        "[sync]",
        "sync.interface",
        "missing required key `interface`",
    );
}
