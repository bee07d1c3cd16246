//! config/example.toml parses cleanly and `to_toml` round-trips.

use std::path::Path;

use xdpvs::config::schema::{Config, HealthKind, HealthProbe, OnFailure, XdpMode};
use xdpvs::service::model::{FwdMethod, Proto, ServiceKey};

fn example() -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
    Config::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn example_parses_without_warnings() {
    let c = example();
    assert_eq!(
        c.validate().unwrap(),
        vec![],
        "example.toml should not warn"
    );
    assert_eq!(c.director.interfaces, vec!["eth0".to_string()]);
    assert_eq!(c.director.xdp_mode, XdpMode::Native);
    assert_eq!(c.fwmarks.len(), 2);
    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web", "ftp", "dns", "web6"]);

    let web = &c.services[0];
    assert_eq!(web.key, ServiceKey::Fwmark(1));
    let p = web.persistence.unwrap();
    assert_eq!((p.prefix4(), p.prefix6), (Some(24), 64));
    assert_eq!(c.fwmarks[0].rules[0].ports.to_string(), "80,443");
    let h = web.reals[2].health_check(web).unwrap().unwrap();
    assert_eq!(h.port, 8080);
    assert_eq!(
        h.probe,
        HealthProbe::Http {
            path: "/healthz".into(),
            expect_status: 200
        }
    );

    let z = web.sorry_server.as_ref().unwrap();
    assert_eq!(
        (z.addr.to_string(), z.forward),
        ("198.18.1.99".into(), FwdMethod::Dr)
    );

    let ftp = &c.services[1];
    assert_eq!(ftp.key, ServiceKey::Fwmark(2));
    let h = ftp.reals[0].health_check(ftp).unwrap().unwrap();
    assert_eq!(
        h.probe,
        HealthProbe::Exec {
            cmd: vec!["/usr/local/bin/check-ftp".into(), "{addr}".into()]
        }
    );
    assert!(h.alpha && !h.omega);
    assert_eq!(h.notify_down.as_ref().map(|v| v.len()), Some(3));
    assert_eq!(h.notify_up, None);
    assert_eq!(c.fwmarks[1].rules[1].ports.0, vec![(10000, 10100)]);
    assert!(ftp.persistence.is_some());

    let dns = &c.services[2];
    assert!(matches!(
        dns.key,
        ServiceKey::Addr {
            proto: Proto::Udp,
            port: 53,
            ..
        }
    ));
    assert_eq!(dns.reals[1].weight, 0);
    assert_eq!(
        dns.reals[1].health.as_ref().unwrap().kind,
        Some(HealthKind::None)
    );
    assert!(dns.sched_params.fallback && dns.sched_params.hash_port);

    let web6 = &c.services[3];
    assert!(matches!(web6.key, ServiceKey::Addr { vip, .. } if vip.is_ipv6()));
    let fwd: Vec<FwdMethod> = web6.reals.iter().map(|r| r.forward).collect();
    assert_eq!(fwd, [FwdMethod::Dr, FwdMethod::Ipip, FwdMethod::Gue]);
    let h = web6.reals[0].health_check(web6).unwrap().unwrap();
    assert_eq!((h.port, h.on_failure), (80, OnFailure::Quiesce));
    assert_eq!(c.neighbors.len(), 1);
}

#[test]
fn to_toml_round_trips() {
    let c = example();
    let text = c.to_toml();
    let again = Config::parse(&text, "saved.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(again, c);
    assert_eq!(again.to_toml(), text, "to_toml is a fixed point");
}

#[test]
fn to_toml_round_trips_non_default_values() {
    let text = r#"
[director]
interfaces = ["eth0", "eth1"]
xdp_mode = "generic"
cores = [3, 1]
control_socket = "/tmp/x.sock"
metrics = "off"
conn_capacity = 5
template_capacity = 6
hugepages = true
prefault = true
busy_poll_us = 20
conn_reuse_mode = 2
gue_port = 1
state_file = "/var/lib/x"
log_level = "debug,xdpvs=trace"
expire_nodest_conn = true
expire_quiescent_template = true
[timeouts]
tcp = 1
tcp_fin = 2
udp = 3
[[service]]
name = "p0"
proto = "tcp"
vip = "2001:db8::1"
port = 0
scheduler = "mh"
scheduler_flags = ["mh-port"]
mh_table_size = 251
persistence = { timeout = 5, netmask = "0.0.0.0", prefix6 = 0 }
expire_nodest_conn = false
sorry_server = { addr = "2001:db8:1::99", port = 8080, forward = "nat" }
health = { type = "udp", port = 53, send = "a \"quoted\"\n payload", interval = 9, timeout = 9, rise = 1, fall = 100, on_failure = "remove" }
  [[service.real]]
  addr = "2001:db8:1::1"
  port = 0
  weight = 65535
  forward = "nat"
  u_threshold = 9
  l_threshold = 1
  health = { type = "http", path = "/", expect_status = 204 }
  [[service.real]]
  addr = "2001:db8:1::2"
  forward = "nat"
  health = { type = "exec", cmd = ["/bin/x", "{addr}", "a \"b\""], alpha = false, omega = true, notify_up = ["/bin/up"], notify_down = ["/bin/down", "x y"] }
[[neighbor]]
addr = "2001:db8:1::1"
mac = "02:00:00:00:00:01"
interface = "eth1"
"#;
    let c = Config::parse(text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let out = c.to_toml();
    let again = Config::parse(&out, "saved.toml").unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(again, c);
    assert_eq!(again.director.metrics, None);
    assert!(again.director.hugepages);
    assert!(again.director.prefault);
    assert_eq!(again.director.conn_reuse_mode, 2);
    assert_eq!(again.director.busy_poll_us, 20);
    assert_eq!(again.services[0].reals[0].port, None);
    let h = again.services[0].health.as_ref().unwrap();
    assert_eq!(h.send.as_deref(), Some("a \"quoted\"\n payload"));
    let z = again.services[0].sorry_server.as_ref().unwrap();
    assert_eq!((z.port, z.forward), (Some(8080), FwdMethod::Nat));
    let h = again.services[0].reals[1].health.as_ref().unwrap();
    assert_eq!(h.kind, Some(HealthKind::Exec));
    assert_eq!(
        h.cmd.as_deref(),
        Some(&["/bin/x".to_string(), "{addr}".into(), "a \"b\"".into()][..])
    );
    assert_eq!((h.alpha, h.omega), (Some(false), Some(true)));
    assert_eq!(h.notify_down.as_ref().map(|v| v.len()), Some(2));
}
