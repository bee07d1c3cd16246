//! `[announce]` and the services' quorum keys: defaults, round trip,
//! errors (file:line, key, reason) and warnings.

use std::time::Duration;

use xdpvs::config::schema::{Config, DEFAULT_QUORUM};

const FILE: &str = "config/a.toml";

const BASE: &str = r#"[director]
interfaces = ["eth0"]
"#;

const WEB: &str = r#"
[[service]]
name = "web"
proto = "tcp"
vip = "198.18.0.100"
port = 80
  [[service.real]]
  addr = "198.18.1.11"
  weight = 3
  [[service.real]]
  addr = "198.18.1.12"
  weight = 2
"#;

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
    assert!(
        first.contains(&format!(": {key}: ")),
        "want key {key} got:\n{e}"
    );
    assert!(first.contains(reason), "want reason {reason:?} got:\n{e}");
}

#[test]
fn defaults() {
    let c = Config::parse(&format!("{BASE}{WEB}"), FILE).unwrap();
    let a = &c.announce;
    assert_eq!((a.up.as_ref(), a.down.as_ref()), (None, None));
    assert_eq!(a.timeout, Duration::from_secs(10));
    assert_eq!(a.retry, Duration::from_secs(5));
    assert_eq!(a.withdraw_delay, Duration::from_secs(1));
    let s = &c.services[0];
    assert_eq!((s.quorum, s.hysteresis), (DEFAULT_QUORUM, 0));
    assert_eq!((s.quorum_up.as_ref(), s.quorum_down.as_ref()), (None, None));
    assert!(
        !c.to_toml().contains("[announce]"),
        "defaults are not written"
    );
}

#[test]
fn keys_read_and_round_trip() {
    let svc = WEB.replace(
        "port = 80\n",
        "port = 80\nquorum = 4\nhysteresis = 1\n\
         quorum_up = [\"/bin/true\", \"enable\", \"vip_web\"]\n\
         quorum_down = [\"/bin/true\", \"disable\", \"vip_web\"]\n",
    );
    let text = format!(
        r#"{BASE}
[announce]
up   = ["/bin/true", "-s", "/run/bird/bird.ctl", "enable", "vip"]
down = ["/bin/true", "-s", "/run/bird/bird.ctl", "disable", "vip"]
timeout = "1500ms"
retry = 3
withdraw_delay = "2s"
{svc}"#
    );
    let c = Config::parse(&text, FILE).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(c.validate().unwrap().is_empty(), "no warnings");
    let a = &c.announce;
    assert_eq!(a.up.as_ref().unwrap()[3], "enable");
    assert_eq!(a.down.as_ref().unwrap()[3], "disable");
    assert_eq!(a.timeout, Duration::from_millis(1500));
    assert_eq!(a.retry, Duration::from_secs(3));
    assert_eq!(a.withdraw_delay, Duration::from_secs(2));
    let s = &c.services[0];
    assert_eq!((s.quorum, s.hysteresis), (4, 1));
    assert_eq!(s.quorum_up.as_ref().unwrap()[2], "vip_web");
    assert_eq!(s.quorum_down.as_ref().unwrap()[1], "disable");
    let out = c.to_toml();
    let again = Config::parse(&out, "saved.toml").unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(again, c, "{out}");
    assert_eq!(again.to_toml(), out, "a fixed point");
    assert!(out.contains("timeout = \"1500ms\""), "{out}");
    assert!(out.contains("withdraw_delay = 2\n"), "{out}");
}

#[test]
fn errors_name_file_line_key_and_reason() {
    let t = format!("{BASE}[announce]\nup = []\n");
    expect_err(&t, "up = []", "announce.up", "must name a program");
    let t = format!("{BASE}[announce]\ndown = [\"\"]\n");
    expect_err(&t, "down = ", "announce.down[0]", "empty program name");
    let t = format!("{BASE}[announce]\nup = \"birdc enable vip\"\n");
    expect_err(&t, "up = ", "announce.up", "expected an array of strings");
    let t = format!("{BASE}[announce]\ntimeout = \"10 parsecs\"\n");
    expect_err(&t, "timeout", "announce.timeout", "bad duration");
    let t = format!("{BASE}[announce]\ntimeout = 0\n");
    expect_err(&t, "timeout", "announce.timeout", "out of range");
    let t = format!("{BASE}[announce]\nretry = \"0ms\"\n");
    expect_err(&t, "retry", "announce.retry", "out of range");
    let t = format!("{BASE}[announce]\nwithdraw_delay = \"2h\"\n");
    expect_err(
        &t,
        "withdraw_delay",
        "announce.withdraw_delay",
        "bad duration",
    );
    let t = format!("{BASE}[announce]\nwithdraw_delay = 7200\n");
    expect_err(
        &t,
        "withdraw_delay",
        "announce.withdraw_delay",
        "out of range",
    );
    let t = format!("{BASE}[announce]\nupp = [\"/bin/true\"]\n");
    expect_err(&t, "upp", "announce.upp", "unknown key");
    let t = format!(
        "{BASE}{}",
        WEB.replace("port = 80\n", "port = 80\nquorum = 0\n")
    );
    expect_err(&t, "quorum = 0", "service[0].quorum", "quorum 0");
    let t = format!(
        "{BASE}{}",
        WEB.replace("port = 80\n", "port = 80\nquorum_down = []\n")
    );
    expect_err(
        &t,
        "quorum_down",
        "service[0].quorum_down",
        "must name a program",
    );
    // withdraw_delay 0 is allowed.
    let t = format!("{BASE}[announce]\nwithdraw_delay = 0\n");
    assert!(Config::parse(&t, FILE).is_ok());
}

/// A program not installed (yet) is a warning, not an error: the routing
/// daemon may be installed after the director. So is a quorum that the
/// weights can never reach, and a hysteresis that keeps it forever.
#[test]
fn warnings() {
    let t = format!(
        "{BASE}[announce]\nup = [\"xdpvs-no-such-birdc\", \"enable\"]\ndown = [\"/nonexistent/birdc\"]\n{}",
        WEB.replace("port = 80\n", "port = 80\nquorum = 5\nhysteresis = 1\n")
    );
    let c = Config::parse(&t, FILE).unwrap();
    let w: Vec<String> = c
        .validate()
        .unwrap()
        .iter()
        .map(|d| d.to_string())
        .collect();
    let all = w.join("\n");
    assert!(
        all.contains("announce.up[0]") && all.contains("not found in PATH"),
        "{all}"
    );
    assert!(
        all.contains("announce.down[0]") && all.contains("\"/nonexistent/birdc\" not found"),
        "{all}"
    );
    assert!(
        all.contains("service[0].quorum") && all.contains("never has quorum"),
        "{all}"
    );
    let t = format!(
        "{BASE}{}",
        WEB.replace("port = 80\n", "port = 80\nquorum = 2\nhysteresis = 2\n")
    );
    let w = Config::parse(&t, FILE).unwrap().validate().unwrap();
    assert!(
        w.iter().any(|d| d.to_string().contains("never lost")),
        "{w:?}"
    );
}
