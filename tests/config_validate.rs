//! Every config validation rule: the error names the file, the right line,
//! the key path and the reason.

use xdpvs::config::schema::Config;

const FILE: &str = "config/t.toml";

const DIRECTOR: &str = r#"[director]
interfaces = ["eth0"]
tunnel_src4 = "198.18.0.2"
tunnel_src6 = "2001:db8::2"
"#;

/// A minimal valid service to append to.
const WEB: &str = r#"
[[service]]
name = "web"
proto = "tcp"
vip = "198.18.0.100"
port = 80
scheduler = "wlc"
  [[service.real]]
  addr = "198.18.1.11"
  weight = 1
  forward = "dr"
"#;

/// 1-based line of the first line containing `marker` (starting with it,
/// if `marker` starts with `^`).
fn line_of(text: &str, marker: &str) -> usize {
    text.lines()
        .position(|l| match marker.strip_prefix('^') {
            Some(m) => l.starts_with(m),
            None => l.contains(marker),
        })
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("marker {marker:?} not in text"))
}

fn parse_err(text: &str) -> String {
    match Config::parse(text, FILE) {
        Ok(_) => panic!("config should be rejected:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// The error names `FILE:line:`, the key path and the reason; `marker`
/// finds the expected line.
#[track_caller]
fn expect_err(text: &str, marker: &str, key: &str, reason: &str) {
    let e = parse_err(text);
    let line = line_of(text, marker);
    let first = e.lines().next().unwrap_or("");
    let want = format!("{FILE}:{line}:");
    assert!(first.starts_with(&want), "want {want}... got:\n{e}");
    let want_key = format!(": {key}: ");
    assert!(first.contains(&want_key), "want key {key} got:\n{e}");
    assert!(first.contains(reason), "want reason {reason:?} got:\n{e}");
}

fn ok(text: &str) -> Config {
    match Config::parse(text, FILE) {
        Ok(c) => c,
        Err(e) => panic!("config should be accepted: {e}\n{text}"),
    }
}

fn cfg(rest: &str) -> String {
    format!("{DIRECTOR}{rest}")
}

#[test]
fn base_is_valid() {
    let c = ok(&cfg(WEB));
    assert_eq!(c.services.len(), 1);
}

// ---- syntax, unknown keys, types -------------------------------------------

#[test]
fn toml_syntax_error_has_line_and_column() {
    let text = cfg("\n[[service]]\nname = \"web\nproto = \"tcp\"\n");
    let e = parse_err(&text);
    assert!(e.starts_with(&format!("{FILE}:")), "{e}");
    assert!(e.contains("TOML syntax error"), "{e}");
    let line: usize = e.split(':').nth(1).unwrap().parse().unwrap();
    assert!(
        line == line_of(&text, "name = \"web") || line == line_of(&text, "proto"),
        "{e}"
    );
}

#[test]
fn duplicate_toml_key() {
    let text = cfg("[timeouts]\ntcp = 900\ntcp = 901\n");
    let e = parse_err(&text);
    assert!(
        e.starts_with(&format!("{FILE}:{}:1:", line_of(&text, "tcp = 901"))),
        "{e}"
    );
    assert!(e.contains("duplicate key"), "{e}");
}

#[test]
fn unknown_keys_everywhere() {
    expect_err(
        &cfg("[bogus]\nx = 1\n"),
        "[bogus]",
        "bogus",
        "unknown key `bogus`",
    );
    expect_err(
        &cfg("[timeouts]\ntcpfin = 5\n"),
        "tcpfin",
        "timeouts.tcpfin",
        "unknown key `tcpfin` (expected one of tcp, tcp_fin, udp)",
    );
    let text = cfg(&WEB.replace("  weight = 1", "  wieght = 1"));
    expect_err(
        &text,
        "wieght",
        "service[0].real[0].wieght",
        "unknown key `wieght`",
    );
    let text = cfg(&WEB.replace(
        "scheduler = \"wlc\"",
        "persistence = { timeout = 9, mask = \"255.0.0.0\" }",
    ));
    expect_err(
        &text,
        "persistence",
        "service[0].persistence.mask",
        "unknown key `mask`",
    );
}

#[test]
fn wrong_types() {
    let text = cfg(&WEB.replace("port = 80", "port = \"80\""));
    expect_err(
        &text,
        "port = \"80\"",
        "service[0].port",
        "expected an integer, found a string",
    );
    let text = cfg(&WEB.replace("  weight = 1", "  weight = 1.5"));
    expect_err(
        &text,
        "weight = 1.5",
        "service[0].real[0].weight",
        "expected an integer, found a float",
    );
    let text = format!("[director]\ninterfaces = \"eth0\"\n{WEB}");
    expect_err(
        &text,
        "interfaces",
        "director.interfaces",
        "expected an array of interface names, found a string",
    );
    let text = cfg("[service]\nname = \"x\"\n");
    expect_err(
        &text,
        "[service]",
        "service",
        "expected an array of tables [[service]], found a table",
    );
    let text = cfg(&WEB.replace("scheduler = \"wlc\"", "expire_nodest_conn = 1"));
    expect_err(
        &text,
        "expire_nodest_conn",
        "service[0].expire_nodest_conn",
        "expected a boolean",
    );
}

// ---- director -------------------------------------------------------------

#[test]
fn director_required_and_interfaces() {
    let e = parse_err(WEB);
    assert!(
        e.starts_with(&format!(
            "{FILE}:1:1: director: missing required table [director]"
        )),
        "{e}"
    );
    let text = format!("[director]\nxdp_mode = \"native\"\n{WEB}");
    expect_err(
        &text,
        "[director]",
        "director.interfaces",
        "missing required key `interfaces`",
    );
    let text = format!("[director]\ninterfaces = []\n{WEB}");
    expect_err(
        &text,
        "interfaces",
        "director.interfaces",
        "at least one data-plane interface is required",
    );
    let text = format!("[director]\ninterfaces = [\"eth0\", \"eth0\"]\n{WEB}");
    expect_err(
        &text,
        "interfaces",
        "director.interfaces[1]",
        "listed twice",
    );
    let text = format!("[director]\ninterfaces = [\"a/b\"]\n{WEB}");
    expect_err(
        &text,
        "interfaces",
        "director.interfaces[0]",
        "bad interface name \"a/b\"",
    );
}

#[test]
fn director_values() {
    let d = |extra: &str| format!("{DIRECTOR}{extra}\n{WEB}");
    expect_err(
        &d("xdp_mode = \"offload\""),
        "xdp_mode",
        "director.xdp_mode",
        "unknown xdp_mode \"offload\" (expected one of native, generic)",
    );
    expect_err(
        &d("fast_path_capacity = 300000000"),
        "fast_path_capacity",
        "director.fast_path_capacity",
        "300000000 is out of range (0-268435456; 0: conn_capacity x shards)",
    );
    expect_err(
        &d("shard_rt_priority = 100"),
        "shard_rt_priority",
        "director.shard_rt_priority",
        "100 is out of range (0-99; 0: normal tasks)",
    );
    expect_err(
        &d("shard_rt_priority = 10\nbusy_poll_us = 20"),
        "shard_rt_priority",
        "director.shard_rt_priority",
        "a real-time shard must not busy-poll",
    );
    expect_err(
        &d("fast_path = \"yes\""),
        "fast_path",
        "director.fast_path",
        "a boolean (true or false)",
    );
    expect_err(
        &d("metrics = \"localhost\""),
        "metrics",
        "director.metrics",
        "bad listen address \"localhost\"",
    );
    expect_err(
        &d("conn_capacity = 0"),
        "conn_capacity",
        "director.conn_capacity",
        "0 is out of range",
    );
    expect_err(
        &d("template_capacity = 300000000"),
        "template_capacity",
        "director.template_capacity",
        "out of range",
    );
    expect_err(
        &d("busy_poll_us = 2000000"),
        "busy_poll_us",
        "director.busy_poll_us",
        "out of range (0-1000000 us)",
    );
    expect_err(
        &d("gue_port = 0"),
        "gue_port",
        "director.gue_port",
        "port 0 is not a valid GUE port",
    );
    expect_err(
        &d("gue_port = 65536"),
        "gue_port",
        "director.gue_port",
        "65536 is too large (at most 65535)",
    );
    expect_err(
        &d("cores = [0, 1, 0]"),
        "cores",
        "director.cores[2]",
        "core 0 is listed twice",
    );
    expect_err(
        &d("cores = []"),
        "cores",
        "director.cores",
        "must not be empty",
    );
    expect_err(
        &d("log_level = \"info,=[\""),
        "log_level",
        "director.log_level",
        "bad log level",
    );
    let text = format!("[director]\ninterfaces = [\"eth0\"]\ntunnel_src4 = \"2001:db8::1\"\n{WEB}");
    expect_err(
        &text,
        "tunnel_src4",
        "director.tunnel_src4",
        "expected an IPv4 address",
    );
    let text = format!("[director]\ninterfaces = [\"eth0\"]\ntunnel_src6 = \"ff02::1\"\n{WEB}");
    expect_err(
        &text,
        "tunnel_src6",
        "director.tunnel_src6",
        "must be a unicast address",
    );
    let c = ok(&d(
        "metrics = \"off\"\nstate_file = \"/var/lib/xdpvs/state\"\ncores = [1, 0]",
    ));
    assert_eq!(c.director.metrics, None);
    assert_eq!(c.director.cores, Some(vec![1, 0]));
}

#[test]
fn director_defaults() {
    let c = ok(&cfg(WEB));
    let d = &c.director;
    assert_eq!(d.control_socket.to_str(), Some("/run/xdpvs.sock"));
    assert_eq!(d.metrics, Some("127.0.0.1:9478".parse().unwrap()));
    assert_eq!(d.conn_capacity, 1 << 20);
    assert_eq!(d.template_capacity, 1 << 18);
    assert!(!d.hugepages, "huge pages are opt-in");
    assert!(!d.prefault, "prefaulting is opt-in");
    assert_eq!(d.conn_reuse_mode, 1, "IPVS's default");
    assert_eq!(d.busy_poll_us, 0);
    assert_eq!(d.gue_port, 6080);
    assert_eq!(d.state_file, None);
    assert_eq!(d.log_level, "info");
    assert!(!d.expire_nodest_conn && !d.expire_quiescent_template);
    assert_eq!(d.cores, None);
    let s = &c.services[0];
    assert_eq!(s.reals[0].port, None);
    assert_eq!(s.reals[0].effective_port(s), Some(80));
}

// ---- timeouts --------------------------------------------------------------

#[test]
fn timeouts_zero_or_absurd() {
    let text = cfg(&format!("[timeouts]\ntcp = 0\n{WEB}"));
    expect_err(
        &text,
        "tcp = 0",
        "timeouts.tcp",
        "timeout 0 is out of range (1-2678400 seconds",
    );
    let text = cfg(&format!("[timeouts]\nudp = 2678401\n{WEB}"));
    expect_err(
        &text,
        "udp =",
        "timeouts.udp",
        "timeout 2678401 is out of range",
    );
    let text = cfg(&format!("[timeouts]\ntcp_fin = -5\n{WEB}"));
    expect_err(
        &text,
        "tcp_fin",
        "timeouts.tcp_fin",
        "must not be negative, got -5",
    );
    let c = ok(&cfg(&format!("[timeouts]\ntcp = 60\n{WEB}")));
    assert_eq!(
        (c.timeouts.tcp, c.timeouts.tcp_fin, c.timeouts.udp),
        (60, 120, 300)
    );
}

// ---- services: scheduler, forward, addresses, persistence ---------------------

#[test]
fn unknown_scheduler() {
    let text = cfg(&WEB.replace("\"wlc\"", "\"wlcx\""));
    expect_err(
        &text,
        "wlcx",
        "service[0].scheduler",
        "unknown scheduler \"wlcx\" (expected one of rr, wrr, lc, wlc",
    );
    let e = parse_err(&text);
    assert!(
        e.starts_with(&format!("{FILE}:{}:13:", line_of(&text, "wlcx"))),
        "column of the value: {e}"
    );
}

#[test]
fn unknown_forward_method() {
    let text = cfg(&WEB.replace("\"dr\"", "\"tun\""));
    expect_err(
        &text,
        "\"tun\"",
        "service[0].real[0].forward",
        "unknown forward method \"tun\" (expected one of dr, nat, ipip, gue)",
    );
}

#[test]
fn bad_ip_addresses() {
    let text = cfg(&WEB.replace("198.18.0.100", "198.18.0.300"));
    expect_err(
        &text,
        "198.18.0.300",
        "service[0].vip",
        "bad IP address \"198.18.0.300\"",
    );
    let text = cfg(&WEB.replace("198.18.1.11", "[2001:db8::1]"));
    expect_err(
        &text,
        "2001:db8::1",
        "service[0].real[0].addr",
        "bad IP address",
    );
    let text = cfg(&WEB.replace("198.18.0.100", "224.0.0.1"));
    expect_err(
        &text,
        "224.0.0.1",
        "service[0].vip",
        "must be a unicast address",
    );
    let text = cfg(&WEB.replace("198.18.1.11", "0.0.0.0"));
    expect_err(
        &text,
        "0.0.0.0",
        "service[0].real[0].addr",
        "must be a unicast address",
    );
}

fn persistent(p: &str) -> String {
    cfg(&WEB.replace("scheduler = \"wlc\"", &format!("persistence = {p}")))
}

#[test]
fn persistence_rules() {
    expect_err(
        &persistent("{ netmask = \"255.0.255.0\" }"),
        "persistence",
        "service[0].persistence.netmask",
        "netmask 255.0.255.0 is not contiguous",
    );
    expect_err(
        &persistent("{ netmask = \"255.255.255\" }"),
        "persistence",
        "service[0].persistence.netmask",
        "bad netmask",
    );
    expect_err(
        &persistent("{ prefix6 = 129 }"),
        "persistence",
        "service[0].persistence.prefix6",
        "prefix6 129 is larger than 128",
    );
    expect_err(
        &persistent("{ timeout = 0 }"),
        "persistence",
        "service[0].persistence.timeout",
        "timeout 0 is out of range",
    );
    expect_err(
        &persistent("{ timeout = 99999999 }"),
        "persistence",
        "service[0].persistence.timeout",
        "out of range",
    );
    let c = ok(&persistent("{}"));
    let p = c.services[0].persistence.unwrap();
    assert_eq!((p.timeout, p.prefix4(), p.prefix6), (300, Some(32), 128));
    let c = ok(&persistent(
        "{ timeout = 60, netmask = \"255.255.255.0\", prefix6 = 64 }",
    ));
    let p = c.services[0].persistence.unwrap();
    assert_eq!((p.timeout, p.prefix4(), p.prefix6), (60, Some(24), 64));
}

#[test]
fn weight_limits() {
    let text = cfg(&WEB.replace("weight = 1", "weight = 65536"));
    expect_err(
        &text,
        "65536",
        "service[0].real[0].weight",
        "weight 65536 exceeds the IPVS maximum 65535",
    );
    let text = cfg(&WEB.replace("weight = 1", "weight = -1"));
    expect_err(
        &text,
        "weight = -1",
        "service[0].real[0].weight",
        "must not be negative, got -1",
    );
    let c = ok(&cfg(&WEB.replace("weight = 1", "weight = 0")));
    assert_eq!(c.services[0].reals[0].weight, 0);
    let c = ok(&cfg(&WEB.replace("weight = 1", "weight = 65535")));
    assert_eq!(c.services[0].reals[0].weight, 65535);
}

#[test]
fn port_range() {
    let text = cfg(&WEB.replace("port = 80", "port = 65536"));
    expect_err(
        &text,
        "65536",
        "service[0].port",
        "65536 is too large (at most 65535)",
    );
    let text = cfg(&WEB.replace("  forward = \"dr\"", "  forward = \"nat\"\n  port = -80"));
    expect_err(
        &text,
        "-80",
        "service[0].real[0].port",
        "must not be negative",
    );
}

// ---- service addressing ------------------------------------------------------

const MARK1: &str = r#"
[[fwmark]]
mark = 1
rules = [ { vip = "198.18.0.100", proto = "tcp", ports = "80,443" } ]
"#;

fn fw_service(mark: u32, extra: &str) -> String {
    format!(
        "\n[[service]]\nname = \"fw{mark}\"\nfwmark = {mark}\n{extra}\n  [[service.real]]\n  addr = \"198.18.1.21\"\n"
    )
}

#[test]
fn fwmark_xor_address() {
    let text = cfg(&format!(
        "{MARK1}{}",
        WEB.replace("scheduler = \"wlc\"", "fwmark = 1")
    ));
    expect_err(
        &text,
        "^proto = \"tcp\"",
        "service[0].proto",
        "either `fwmark` or `proto` + `vip` + `port`, not both",
    );
    let text = cfg("\n[[service]]\nname = \"x\"\n  [[service.real]]\n  addr = \"198.18.1.1\"\n");
    expect_err(
        &text,
        "[[service]]",
        "service[0]",
        "missing the service address",
    );
    let text = cfg(&WEB.replace("port = 80\n", ""));
    expect_err(
        &text,
        "[[service]]",
        "service[0].port",
        "missing required key `port`",
    );
}

#[test]
fn undeclared_and_duplicate_marks() {
    let text = cfg(&format!("{MARK1}{}", fw_service(2, "")));
    expect_err(
        &text,
        "fwmark = 2",
        "service[0].fwmark",
        "mark 2 is not declared by any [[fwmark]] group",
    );
    let text = cfg(&format!("{MARK1}{MARK1}{}", fw_service(1, "")));
    let second = text.match_indices("mark = 1").nth(1).unwrap().0;
    let line = text[..second].matches('\n').count() + 1;
    let e = parse_err(&text);
    assert!(
        e.starts_with(&format!(
            "{FILE}:{line}:8: fwmark[1].mark: mark 1 is already declared by fwmark[0]"
        )),
        "{e}"
    );
    let text = cfg(&format!("\n[[fwmark]]\nmark = 0\nrules = [ {{ vip = \"198.18.0.100\", proto = \"tcp\", ports = \"80\" }} ]\n{WEB}"));
    expect_err(
        &text,
        "mark = 0",
        "fwmark[0].mark",
        "mark 0 is not a valid firewall mark",
    );
}

#[test]
fn unused_mark_is_a_warning() {
    let c = ok(&cfg(&format!("{MARK1}{WEB}")));
    let w = c.validate().unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    let text = cfg(&format!("{MARK1}{WEB}"));
    let unused = w
        .iter()
        .find(|d| d.key == "fwmark[0].mark")
        .unwrap()
        .to_string();
    assert!(
        unused.starts_with(&format!("{FILE}:{}:", line_of(&text, "mark = 1"))),
        "{unused}"
    );
    assert!(
        unused.contains("mark 1 is not used by any service"),
        "{unused}"
    );
    // Used: no warning about it, but the tcp :80 service is shadowed by it.
    let c = ok(&cfg(&format!("{MARK1}{WEB}{}", fw_service(1, ""))));
    let w = c.validate().unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].to_string()
            .contains("service[0].vip: TCP 198.18.0.100:80 is shadowed by fwmark 1"),
        "{w:?}"
    );
}

#[test]
fn port_zero_needs_persistence() {
    let text = cfg(&WEB.replace("port = 80", "port = 0"));
    expect_err(
        &text,
        "port = 0",
        "service[0].port",
        "port 0 (all ports) is allowed only for a persistent service",
    );
    let c = ok(&cfg(
        &WEB.replace("port = 80", "port = 0\npersistence = { timeout = 60 }")
    ));
    assert_eq!(c.services[0].reals[0].effective_port(&c.services[0]), None);
}

#[test]
fn duplicate_service_keys_and_names() {
    let second = WEB.replace("\"web\"", "\"web2\"");
    let text = cfg(&format!("{WEB}{second}"));
    let e = parse_err(&text);
    let line = text
        .match_indices("vip = ")
        .nth(1)
        .map(|(i, _)| text[..i].matches('\n').count() + 1)
        .unwrap();
    assert!(e.starts_with(&format!("{FILE}:{line}:7: service[1].vip: the same virtual service (TCP 198.18.0.100:80) is already defined by service[0] \"web\"")), "{e}");
    let other_port = WEB.replace("port = 80", "port = 81");
    let text = cfg(&format!("{WEB}{other_port}"));
    let e = parse_err(&text);
    assert!(
        e.contains("service[1].name: service name \"web\" is already used by service[0]"),
        "{e}"
    );
    let text = cfg(&format!(
        "{MARK1}{}{}",
        fw_service(1, ""),
        fw_service(1, "").replace("fw1", "fw1b")
    ));
    let e = parse_err(&text);
    assert!(
        e.contains(
            "service[1].fwmark: the same virtual service (FWM 1) is already defined by service[0]"
        ),
        "{e}"
    );
    let text = cfg(&WEB.replace("\"web\"", "\"web server\""));
    expect_err(
        &text,
        "web server",
        "service[0].name",
        "bad service name \"web server\"",
    );
    let text = cfg(&WEB.replace("name = \"web\"\n", ""));
    expect_err(
        &text,
        "[[service]]",
        "service[0].name",
        "missing required key `name`",
    );
}

// ---- firewall-mark rules ----------------------------------------------------

#[test]
fn fwmark_rule_overlap() {
    let two = r#"
[[fwmark]]
mark = 1
rules = [ { vip = "198.18.0.100", proto = "tcp", ports = "80,443" } ]
[[fwmark]]
mark = 2
rules = [ { vip = "198.18.0.100", proto = "udp", ports = "443" },
          { vip = "198.18.0.101", proto = "tcp", ports = "443" },
          { vip = "198.18.0.100", proto = "tcp", ports = "400-500" } ]
"#;
    let text = cfg(&format!("{two}{}{}", fw_service(1, ""), fw_service(2, "")));
    expect_err(
        &text,
        "400-500",
        "fwmark[1].rules[2].ports",
        "overlaps fwmark[0].rules[0] (mark 1) on tcp 198.18.0.100 port 443",
    );
    // Different proto / vip only, and overlaps inside one group, are fine.
    let fine = two
        .replace("400-500", "8000-8100")
        .replace("\"80,443\"", "\"80,443,440-450\"");
    ok(&cfg(&format!(
        "{fine}{}{}",
        fw_service(1, ""),
        fw_service(2, "")
    )));
}

#[test]
fn fwmark_port_lists() {
    for good in ["80,443", "10000-10100", "80,443,8000-8100"] {
        let t = MARK1.replace("80,443", good);
        let c = ok(&cfg(&format!("{t}{}", fw_service(1, ""))));
        assert_eq!(c.fwmarks[0].rules[0].ports.to_string(), good);
    }
    for bad in ["80-", "443-80", "80,,443", "http", "0"] {
        let text = cfg(&format!(
            "{}{}",
            MARK1.replace("80,443", bad),
            fw_service(1, "")
        ));
        expect_err(
            &text,
            "rules",
            "fwmark[0].rules[0].ports",
            "malformed port list",
        );
    }
    let text = cfg(&format!("\n[[fwmark]]\nmark = 1\n{}", fw_service(1, "")));
    expect_err(
        &text,
        "[[fwmark]]",
        "fwmark[0].rules",
        "missing required key `rules`",
    );
    let text = cfg(&format!(
        "\n[[fwmark]]\nmark = 1\nrules = []\n{}",
        fw_service(1, "")
    ));
    expect_err(
        &text,
        "rules = []",
        "fwmark[0].rules",
        "needs at least one rule",
    );
    let text = cfg(&format!(
        "{}{}",
        MARK1.replace("\"tcp\"", "\"sctp\""),
        fw_service(1, "")
    ));
    expect_err(
        &text,
        "sctp",
        "fwmark[0].rules[0].proto",
        "unknown protocol \"sctp\" (expected one of tcp, udp)",
    );
}

// ---- real servers ------------------------------------------------------------

fn with_real(svc: &str, real: &str) -> String {
    cfg(&format!("{svc}  [[service.real]]\n{real}\n"))
}

#[test]
fn duplicate_real_servers() {
    let text = with_real(WEB, "  addr = \"198.18.1.11\"\n  port = 80");
    let line = text
        .match_indices("198.18.1.11")
        .nth(1)
        .map(|(i, _)| text[..i].matches('\n').count() + 1)
        .unwrap();
    let e = parse_err(&text);
    assert!(e.starts_with(&format!("{FILE}:{line}:")), "{e}");
    assert!(e.contains("service[0].real[1].addr: real server 198.18.1.11:80 is listed twice in this service (also real[0])"), "{e}");
    // Same address on another port (nat) is another real server.
    let nat = WEB.replace("\"dr\"", "\"nat\"");
    ok(&with_real(
        &nat,
        "  addr = \"198.18.1.11\"\n  port = 8080\n  forward = \"nat\"",
    ));
}

#[test]
fn address_family_rules() {
    let text = with_real(WEB, "  addr = \"2001:db8:1::11\"\n  forward = \"dr\"");
    expect_err(&text, "2001:db8:1::11", "service[0].real[1].addr", "a dr real server must have the same address family as the service's VIPs (IPv6 real server 2001:db8:1::11)");
    let text = with_real(WEB, "  addr = \"2001:db8:1::11\"\n  forward = \"nat\"");
    expect_err(
        &text,
        "2001:db8:1::11",
        "service[0].real[1].addr",
        "a nat real server must have the same address family",
    );
    ok(&with_real(
        WEB,
        "  addr = \"2001:db8:1::11\"\n  forward = \"ipip\"",
    ));
    ok(&with_real(
        WEB,
        "  addr = \"2001:db8:1::12\"\n  forward = \"gue\"",
    ));
    // A fwmark group with both families: dr reals of either family mismatch one VIP.
    let mixed = "\n[[fwmark]]\nmark = 1\nrules = [ { vip = \"198.18.0.100\", proto = \"tcp\", ports = \"80\" },\n  { vip = \"2001:db8::100\", proto = \"tcp\", ports = \"80\" } ]\n";
    let text = cfg(&format!("{mixed}{}", fw_service(1, "")));
    expect_err(
        &text,
        "198.18.1.21",
        "service[0].real[0].addr",
        "same address family",
    );
}

#[test]
fn tunnels_need_a_source_address() {
    let text = format!(
        "[director]\ninterfaces = [\"eth0\"]\n{}",
        WEB.replace("\"dr\"", "\"ipip\"")
    );
    expect_err(
        &text,
        "ipip",
        "service[0].real[0].forward",
        "ipip to an IPv4 real server needs director.tunnel_src4",
    );
    let text = format!("[director]\ninterfaces = [\"eth0\"]\ntunnel_src4 = \"198.18.0.2\"\n{WEB}  [[service.real]]\n  addr = \"2001:db8:1::1\"\n  forward = \"gue\"\n");
    expect_err(
        &text,
        "gue",
        "service[0].real[1].forward",
        "gue to an IPv6 real server needs director.tunnel_src6",
    );
}

#[test]
fn real_ports() {
    // Non-persistent fwmark service, real without port: keeps the packet port.
    let c = ok(&cfg(&format!("{MARK1}{}", fw_service(1, ""))));
    assert_eq!(c.services[0].reals[0].effective_port(&c.services[0]), None);
    // dr cannot change the port: IPVS ignores it, so do we, with a warning.
    let text = cfg(&WEB.replace("  forward = \"dr\"", "  forward = \"dr\"\n  port = 8080"));
    let w = ok(&text).validate().expect("valid");
    assert!(
        w.iter().any(|d| d.key == "service[0].real[0].port"
            && d.reason.contains(
                "dr cannot change the destination port (service port 80, real port 8080)"
            )),
        "{w:?}"
    );
    // The brief's own example: a dr real with port 80 in a fwmark service.
    let text = cfg(&format!(
        "{MARK1}{}",
        fw_service(1, "").replace("198.18.1.21\"", "198.18.1.21\"\n  port = 80")
    ));
    let w = ok(&text).validate().expect("valid");
    assert!(
        w.iter()
            .any(|d| d.reason.contains("packets keep their own destination port")),
        "{w:?}"
    );
    // The same port as the service is fine for dr, any port for nat; 0 = none.
    ok(&cfg(&WEB.replace(
        "  forward = \"dr\"",
        "  forward = \"dr\"\n  port = 80",
    )));
    let c = ok(&cfg(&WEB.replace(
        "  forward = \"dr\"",
        "  forward = \"nat\"\n  port = 8080",
    )));
    assert_eq!(c.services[0].reals[0].port, Some(8080));
    let c = ok(&cfg(&format!(
        "{MARK1}{}",
        fw_service(1, "").replace("198.18.1.21\"", "198.18.1.21\"\n  port = 0")
    )));
    assert_eq!(c.services[0].reals[0].port, None);
}

#[test]
fn thresholds() {
    let text = cfg(&WEB.replace("weight = 1", "weight = 1\n  l_threshold = 5"));
    expect_err(
        &text,
        "l_threshold",
        "service[0].real[0].l_threshold",
        "l_threshold needs u_threshold",
    );
    let text = cfg(&WEB.replace(
        "weight = 1",
        "weight = 1\n  u_threshold = 5\n  l_threshold = 5",
    ));
    expect_err(
        &text,
        "l_threshold",
        "service[0].real[0].l_threshold",
        "l_threshold (5) must be below u_threshold (5)",
    );
    let c = ok(&cfg(&WEB.replace(
        "weight = 1",
        "weight = 1\n  u_threshold = 5\n  l_threshold = 4",
    )));
    assert_eq!(
        (
            c.services[0].reals[0].u_threshold,
            c.services[0].reals[0].l_threshold
        ),
        (5, 4)
    );
}

// ---- scheduler flags -----------------------------------------------------------

#[test]
fn scheduler_flags_and_mh_table() {
    let sched = |s: &str| cfg(&WEB.replace("scheduler = \"wlc\"", s));
    expect_err(
        &sched("scheduler = \"sh\"\nscheduler_flags = [\"mh-port\"]"),
        "scheduler_flags",
        "service[0].scheduler_flags[0]",
        "flag \"mh-port\" is for scheduler mh, not for \"sh\"",
    );
    expect_err(
        &sched("scheduler = \"sh\"\nscheduler_flags = [\"sh-ports\"]"),
        "scheduler_flags",
        "service[0].scheduler_flags[0]",
        "unknown scheduler flag \"sh-ports\"",
    );
    expect_err(
        &sched("scheduler = \"mh\"\nmh_table_size = 1000"),
        "mh_table_size",
        "service[0].mh_table_size",
        "mh_table_size 1000 must be a prime number",
    );
    expect_err(
        &sched("scheduler = \"rr\"\nmh_table_size = 251"),
        "mh_table_size",
        "service[0].mh_table_size",
        "applies only to scheduler mh",
    );
    let two = format!(
        "{}  [[service.real]]\n  addr = \"198.18.1.12\"\n",
        sched("scheduler = \"mh\"\nmh_table_size = 2")
    );
    expect_err(
        &two,
        "mh_table_size",
        "service[0].mh_table_size",
        "must be larger than the number of real servers (2)",
    );
    let c = ok(&sched(
        "scheduler = \"mh\"\nscheduler_flags = [\"mh-fallback\", \"mh-port\"]\nmh_table_size = 251",
    ));
    let p = c.services[0].sched_params;
    assert!(p.fallback && p.hash_port && p.mh_table_size == 251);
    let c = ok(&sched(
        "scheduler = \"sh\"\nscheduler_flags = [\"sh-port\"]",
    ));
    let p = c.services[0].sched_params;
    assert!(!p.fallback && p.hash_port);
    let c = ok(&cfg(&WEB.replace("scheduler = \"wlc\"\n", "")));
    assert_eq!(c.services[0].scheduler, "wlc");
}

// ---- health --------------------------------------------------------------------

fn health(svc_h: &str, real_h: &str) -> String {
    let mut s = WEB.replace(
        "scheduler = \"wlc\"",
        &format!("scheduler = \"wlc\"\n{svc_h}"),
    );
    s = s.replace(
        "  forward = \"dr\"",
        &format!("  forward = \"dr\"\n{real_h}"),
    );
    cfg(&s)
}

#[test]
fn health_rules() {
    expect_err(
        &health("health = { type = \"icmp\" }", ""),
        "icmp",
        "service[0].health.type",
        "unknown health check type \"icmp\" (expected one of tcp, http, udp, exec, none)",
    );
    expect_err(
        &health("health = { type = \"tcp\", path = \"/x\" }", ""),
        "health",
        "service[0].health.path",
        "`path` applies only to type = \"http\", not \"tcp\"",
    );
    expect_err(
        &health("health = { type = \"http\", send = \"x\" }", ""),
        "health",
        "service[0].health.send",
        "`send` applies only to type = \"udp\"",
    );
    expect_err(
        &health("health = { type = \"http\", expect_status = 99 }", ""),
        "health",
        "service[0].health.expect_status",
        "99 is not an HTTP status",
    );
    expect_err(
        &health("health = { type = \"http\", path = \"healthz\" }", ""),
        "health",
        "service[0].health.path",
        "bad HTTP path",
    );
    expect_err(
        &health("health = { interval = 0 }", ""),
        "health",
        "service[0].health.interval",
        "0 is out of range (1-3600 seconds)",
    );
    expect_err(
        &health("health = { rise = 0 }", ""),
        "health",
        "service[0].health.rise",
        "out of range (1-100)",
    );
    expect_err(
        &health("health = { on_failure = \"drop\" }", ""),
        "health",
        "service[0].health.on_failure",
        "unknown on_failure action \"drop\" (expected one of quiesce, remove)",
    );
    expect_err(
        &health("", "  health = { timeout = 10, interval = 5 }"),
        "timeout = 10",
        "service[0].real[0].health.timeout",
        "health check timeout (10 s) must not exceed its interval (5 s)",
    );
    expect_err(
        &health("", "  health = { kind = \"tcp\" }"),
        "kind",
        "service[0].real[0].health.kind",
        "unknown key `kind`",
    );
    // A fwmark service whose reals have no port needs health.port.
    let text = cfg(&format!(
        "{MARK1}{}",
        fw_service(1, "health = { type = \"tcp\" }")
    ));
    expect_err(
        &text,
        "health =",
        "service[0].health.port",
        "health check needs a `port`",
    );
    let c = ok(&cfg(&format!(
        "{MARK1}{}",
        fw_service(1, "health = { type = \"tcp\", port = 80 }")
    )));
    let h = c.services[0].reals[0]
        .health_check(&c.services[0])
        .unwrap()
        .unwrap();
    assert_eq!(h.port, 80);
    // Real overrides service key by key.
    let c = ok(&health(
        "health = { type = \"http\", path = \"/h\" }",
        "  health = { port = 8080, on_failure = \"remove\" }",
    ));
    let h = c.services[0].reals[0]
        .health_check(&c.services[0])
        .unwrap()
        .unwrap();
    assert_eq!(h.port, 8080);
    assert_eq!(h.on_failure, xdpvs::config::schema::OnFailure::Remove);
    assert_eq!(
        h.probe,
        xdpvs::config::schema::HealthProbe::Http {
            path: "/h".into(),
            expect_status: 200
        }
    );
}

// ---- neighbours -------------------------------------------------------------------

#[test]
fn neighbor_pins() {
    let n = |body: &str| cfg(&format!("{WEB}\n[[neighbor]]\n{body}\n"));
    let c = ok(&n(
        "addr = \"198.18.1.11\"\nmac = \"02:00:c6:12:01:0b\"\ninterface = \"eth0\"",
    ));
    assert_eq!(c.neighbors[0].mac, [2, 0, 0xc6, 0x12, 1, 0x0b]);
    expect_err(
        &n("addr = \"198.18.1.11\"\nmac = \"02:00:c6:12:01\"\ninterface = \"eth0\""),
        "mac =",
        "neighbor[0].mac",
        "bad MAC address \"02:00:c6:12:01\"",
    );
    expect_err(
        &n("addr = \"198.18.1.11\"\nmac = \"01:00:5e:00:00:01\"\ninterface = \"eth0\""),
        "mac =",
        "neighbor[0].mac",
        "is not a unicast MAC address",
    );
    expect_err(
        &n("addr = \"198.18.1.11\"\nmac = \"02:00:c6:12:01:0b\"\ninterface = \"eth1\""),
        "eth1",
        "neighbor[0].interface",
        "interface \"eth1\" is not one of director.interfaces (eth0)",
    );
    expect_err(
        &n("addr = \"198.18.1.11\"\ninterface = \"eth0\""),
        "[[neighbor]]",
        "neighbor[0].mac",
        "missing required key `mac`",
    );
    let twice = format!("{WEB}\n[[neighbor]]\naddr = \"198.18.1.11\"\nmac = \"02:00:c6:12:01:0b\"\ninterface = \"eth0\"\n[[neighbor]]\naddr = \"198.18.1.11\"\nmac = \"02:00:c6:12:01:0c\"\ninterface = \"eth0\"\n");
    let e = parse_err(&cfg(&twice));
    assert!(
        e.contains("neighbor[1].addr: 198.18.1.11 is already pinned by neighbor[0]"),
        "{e}"
    );
}

// ---- reporting ------------------------------------------------------------------

#[test]
fn all_errors_are_reported_in_file_order() {
    let text = cfg(&WEB
        .replace("\"wlc\"", "\"nope\"")
        .replace("weight = 1", "weight = 99999"));
    let e = Config::parse(&text, FILE).unwrap_err();
    let d = e.diagnostics();
    assert_eq!(d.len(), 2, "{e}");
    assert_eq!(d[0].key, "service[0].scheduler");
    assert_eq!(d[1].key, "service[0].real[0].weight");
    assert_eq!(e.to_string().lines().count(), 2);
}

#[test]
fn load_names_the_file() {
    let dir = std::env::temp_dir().join(format!("xdpvs-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    let text = cfg(&WEB.replace("\"wlc\"", "\"wlcx\""));
    std::fs::write(&path, &text).unwrap();
    let e = Config::load(&path).unwrap_err().to_string();
    let want = format!(
        "{}:{}:13: service[0].scheduler: unknown scheduler \"wlcx\"",
        path.display(),
        line_of(&text, "wlcx")
    );
    assert!(e.starts_with(&want), "{e}");
    let missing = dir.join("missing.toml");
    let e = Config::load(&missing).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: cannot read:", missing.display())),
        "{e}"
    );
    let e = xdpvs::config::check(&path).unwrap_err().to_string();
    assert!(e.contains("unknown scheduler \"wlcx\""), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// xdpvs has no FTP helper: a service that carries FTP's port 21 gets a
/// warning for each piece FTP then needs and the service lacks (the passive
/// range in the same service, persistence, the VIP announced by servers
/// behind NAT). The recipe of `config/example.toml` gets none.
#[test]
fn ftp_services_are_warned_about_what_they_lack() {
    let mark = "\n[[fwmark]]\nmark = 2\nrules = [ { vip = \"198.18.0.101\", proto = \"tcp\", ports = \"21,10000-10100\" } ]\n";
    let svc = |key: &str, persist: &str, fwd: &str| {
        format!(
            "\n[[service]]\nname = \"ftp\"\n{key}\nscheduler = \"lc\"\n{persist}\n  [[service.real]]\n  addr = \"198.18.1.21\"\n  forward = \"{fwd}\"\n"
        )
    };
    let warnings = |text: String| -> Vec<String> {
        let c = ok(&cfg(&text));
        let w = c.validate().expect("valid");
        w.iter().map(|d| d.to_string()).collect()
    };
    let persistent = "persistence = { timeout = 600 }";
    let w = warnings(format!("{mark}{}", svc("fwmark = 2", persistent, "dr")));
    assert!(w.is_empty(), "{w:?}");
    let port21 = "proto = \"tcp\"\nvip = \"198.18.0.101\"\nport = 21";
    let w = warnings(svc(port21, "", "dr"));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("service[0]: ") && w[0].contains("port 21 alone"),
        "{w:?}"
    );
    let w = warnings(format!("{mark}{}", svc("fwmark = 2", "", "dr")));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("not persistent"), "{w:?}");
    let w = warnings(format!("{mark}{}", svc("fwmark = 2", persistent, "nat")));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("through NAT") && w[0].contains("pasv_address"),
        "{w:?}"
    );
    // A port-0 service carries port 21 too (and must be persistent).
    let port0 = "proto = \"tcp\"\nvip = \"198.18.0.101\"\nport = 0";
    let w = warnings(svc(port0, persistent, "nat"));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("through NAT"), "{w:?}");
    // Not FTP: UDP port 21, a mark without 21.
    let udp21 = "proto = \"udp\"\nvip = \"198.18.0.101\"\nport = 21";
    assert!(warnings(svc(udp21, "", "nat")).is_empty());
    let web_mark = mark.replace("21,10000-10100", "80,443");
    let w = warnings(format!("{web_mark}{}", svc("fwmark = 2", "", "nat")));
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn sorry_server_rules() {
    let sorry = |line: &str| {
        cfg(&WEB.replace(
            "scheduler = \"wlc\"",
            &format!("scheduler = \"wlc\"\n{line}"),
        ))
    };
    let c = ok(&sorry("sorry_server = { addr = \"198.18.1.99\" }"));
    let z = c.services[0].sorry_server.as_ref().unwrap();
    assert_eq!((z.port, z.effective_port(&c.services[0])), (None, Some(80)));
    ok(&sorry(
        "sorry_server = { addr = \"198.18.1.99\", port = 8080, forward = \"nat\" }",
    ));
    expect_err(
        &sorry("sorry_server = { port = 80 }"),
        "sorry_server",
        "service[0].sorry_server.addr",
        "missing required key `addr`",
    );
    expect_err(
        &sorry("sorry_server = { addr = \"198.18.1.99\", weight = 1 }"),
        "sorry_server",
        "service[0].sorry_server.weight",
        "unknown key `weight` (expected one of addr, port, forward)",
    );
    expect_err(
        &sorry("sorry_server = { addr = \"198.18.1.11\" }"),
        "sorry_server",
        "service[0].sorry_server.addr",
        "the sorry server 198.18.1.11 is also real[0] of this service",
    );
    expect_err(
        &sorry("sorry_server = { addr = \"2001:db8:1::99\" }"),
        "sorry_server",
        "service[0].sorry_server.addr",
        "a dr sorry server must have the same address family",
    );
    expect_err(
        &sorry("sorry_server = { addr = \"224.0.0.1\" }"),
        "sorry_server",
        "service[0].sorry_server.addr",
        "must be a unicast address",
    );
    let w = ok(&sorry(
        "sorry_server = { addr = \"198.18.1.99\", port = 8080 }",
    ))
    .validate()
    .unwrap();
    assert!(
        w.iter().any(|d| d.key == "service[0].sorry_server.port"),
        "{w:?}"
    );
    // A service with only a sorry server does not warn about its reals.
    let only = cfg("\n[[service]]\nname = \"s\"\nproto = \"tcp\"\nvip = \"198.18.0.100\"\nport = 80\nsorry_server = { addr = \"198.18.1.99\" }\n");
    assert_eq!(ok(&only).validate().unwrap(), vec![]);
}

#[test]
fn exec_checks_and_notify_rules() {
    let c = ok(&health(
        "health = { type = \"exec\", cmd = [\"/bin/check\", \"{addr}\"], alpha = true, omega = true, notify_up = [\"/bin/up\"], notify_down = [\"/bin/down\", \"{addr}\"] }",
        "",
    ));
    let h = c.services[0].reals[0]
        .health_check(&c.services[0])
        .unwrap()
        .unwrap();
    assert!(h.alpha && h.omega);
    expect_err(
        &health("health = { type = \"exec\" }", ""),
        "health",
        "service[0].health.cmd",
        "an exec check needs `cmd`",
    );
    expect_err(
        &health("health = { type = \"exec\", cmd = [] }", ""),
        "health",
        "service[0].health.cmd",
        "must name a program",
    );
    expect_err(
        &health("health = { type = \"exec\", cmd = \"/bin/check\" }", ""),
        "health",
        "service[0].health.cmd",
        "expected an array of strings",
    );
    expect_err(
        &health("health = { type = \"tcp\", cmd = [\"/bin/check\"] }", ""),
        "health",
        "service[0].health.cmd",
        "`cmd` applies only to type = \"exec\", not \"tcp\"",
    );
    expect_err(
        &health(
            "health = { type = \"exec\", cmd = [\"/bin/c\"], path = \"/\" }",
            "",
        ),
        "health",
        "service[0].health.path",
        "`path` applies only to type = \"http\", not \"exec\"",
    );
    expect_err(
        &health("health = { notify_up = [\"\"] }", ""),
        "health",
        "service[0].health.notify_up[0]",
        "empty program name",
    );
    expect_err(
        &health("health = { alpha = 1 }", ""),
        "health",
        "service[0].health.alpha",
        "expected a boolean",
    );
    // An exec check on a fwmark service needs no port.
    let text = cfg(&format!(
        "{MARK1}{}",
        fw_service(1, "health = { type = \"exec\", cmd = [\"/bin/c\"] }")
    ));
    let c = ok(&text);
    let h = c.services[0].reals[0]
        .health_check(&c.services[0])
        .unwrap()
        .unwrap();
    assert_eq!(h.port, 0);
}

#[test]
fn fast_path_default_off_switch_and_round_trip() {
    let c = ok(&cfg(WEB));
    assert!(c.director.fast_path, "on by default");
    assert_eq!(c.director.fast_path_capacity, 0);
    let snap = xdpvs::config::build_snapshot(&c, None).unwrap();
    assert!(snap.fast_path);
    let text = format!("{DIRECTOR}fast_path = false\nfast_path_capacity = 4096\n{WEB}");
    let c = ok(&text);
    assert!(!c.director.fast_path);
    assert_eq!(c.director.fast_path_capacity, 4096);
    assert!(!xdpvs::config::build_snapshot(&c, None).unwrap().fast_path);
    let again = ok(&c.to_toml());
    assert_eq!(again.director, c.director);
}
