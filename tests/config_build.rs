//! Snapshot builder: stable DestIds, classifier order, shard prefixes, VIP
//! list, conversions, speed. Schedulers are replaced by a stand-in: these
//! tests are about the snapshot, not about scheduling.

use std::collections::HashSet;
use std::fmt::Write;
use std::net::IpAddr;
use std::time::Instant;

use xdpvs::config::build::build_snapshot_with;
use xdpvs::config::schema::Config;
use xdpvs::service::model::{DestId, Proto, ServiceKey};
use xdpvs::service::sched::{
    DestSpec, DestStat, SchedError, SchedKey, SchedParams, SchedState, Scheduler,
};
use xdpvs::service::snapshot::Snapshot;

#[derive(Debug)]
struct First;
impl Scheduler for First {
    fn name(&self) -> &'static str {
        "first"
    }
    fn schedule(&self, _: &mut SchedState, d: &[DestStat], _: &SchedKey) -> Option<usize> {
        d.iter().position(|s| s.available())
    }
}

fn first(_: &str, _: &[DestSpec], _: &SchedParams) -> Result<Box<dyn Scheduler>, SchedError> {
    Ok(Box::new(First))
}

fn parse(text: &str) -> Config {
    Config::parse(text, "t.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn build(text: &str, prev: Option<&Snapshot>) -> Snapshot {
    build_snapshot_with(&parse(text), prev, &first).unwrap_or_else(|e| panic!("{e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const HEAD: &str = "[director]\ninterfaces = [\"eth0\"]\n";

fn service(name: &str, vip: &str, port: u16, reals: &[(&str, Option<u16>)]) -> String {
    let mut s = format!(
        "\n[[service]]\nname = \"{name}\"\nproto = \"tcp\"\nvip = \"{vip}\"\nport = {port}\nscheduler = \"rr\"\n"
    );
    for (addr, p) in reals {
        let _ = writeln!(
            s,
            "  [[service.real]]\n  addr = \"{addr}\"\n  forward = \"nat\""
        );
        if let Some(p) = p {
            let _ = writeln!(s, "  port = {p}");
        }
    }
    s
}

/// id of the real server `addr:port` of the service named `svc`.
fn id_of(s: &Snapshot, svc: &str, addr: &str, port: Option<u16>) -> Option<DestId> {
    let svc = s.services.iter().find(|x| x.name == svc)?;
    svc.dests
        .iter()
        .find(|d| d.addr == ip(addr) && d.port == port)
        .map(|d| d.id)
}

fn all_ids(s: &Snapshot) -> Vec<DestId> {
    s.services
        .iter()
        .flat_map(|x| x.dests.iter().map(|d| d.id))
        .collect()
}

#[test]
fn dest_ids_are_stable_and_never_reused() {
    let v1 = format!(
        "{HEAD}{}{}",
        service(
            "a",
            "198.18.0.1",
            80,
            &[("198.18.1.1", None), ("198.18.1.2", None)]
        ),
        service("b", "198.18.0.2", 80, &[("198.18.1.1", None)])
    );
    let s1 = build(&v1, None);
    let a1 = id_of(&s1, "a", "198.18.1.1", Some(80)).unwrap();
    let a2 = id_of(&s1, "a", "198.18.1.2", Some(80)).unwrap();
    let b1 = id_of(&s1, "b", "198.18.1.1", Some(80)).unwrap();
    let ids: HashSet<DestId> = all_ids(&s1).into_iter().collect();
    assert_eq!(ids.len(), 3, "ids unique across services");
    for id in &ids {
        assert!(id.0 < s1.next_dest_id);
        let (svc, d) = s1.dest(*id).unwrap();
        assert_eq!(svc.dests.iter().find(|x| x.id == *id), Some(d));
    }

    // Same config, weight changed, services reordered: same ids.
    let v2 = format!(
        "{HEAD}{}{}",
        service("b", "198.18.0.2", 80, &[("198.18.1.1", None)]),
        service(
            "a",
            "198.18.0.1",
            80,
            &[("198.18.1.2", None), ("198.18.1.1", None)]
        )
        .replace(
            "forward = \"nat\"\n  [[service.real]]",
            "forward = \"nat\"\n  weight = 7\n  [[service.real]]"
        )
    );
    let s2 = build(&v2, Some(&s1));
    assert_eq!(id_of(&s2, "a", "198.18.1.1", Some(80)), Some(a1));
    assert_eq!(id_of(&s2, "a", "198.18.1.2", Some(80)), Some(a2));
    assert_eq!(id_of(&s2, "b", "198.18.1.1", Some(80)), Some(b1));
    assert_eq!(s2.generation, s1.generation + 1);
    let (_, d) = s2.dest(a2).unwrap();
    assert_eq!(d.weight, 7);

    // Remove a2.
    let v3 = format!(
        "{HEAD}{}{}",
        service("a", "198.18.0.1", 80, &[("198.18.1.1", None)]),
        service("b", "198.18.0.2", 80, &[("198.18.1.1", None)])
    );
    let s3 = build(&v3, Some(&s2));
    assert_eq!(id_of(&s3, "a", "198.18.1.2", Some(80)), None);
    assert!(s3.dest(a2).is_none());
    assert_eq!(id_of(&s3, "a", "198.18.1.1", Some(80)), Some(a1));

    // Re-add it: a new id, never seen before.
    let s4 = build(&v1, Some(&s3));
    let again = id_of(&s4, "a", "198.18.1.2", Some(80)).unwrap();
    assert_ne!(again, a2);
    assert!(!ids.contains(&again));
    assert!(again.0 >= s1.next_dest_id);
    assert!(s4.next_dest_id > again.0);

    // A changed port is another real server: a new id.
    let v5 = format!(
        "{HEAD}{}",
        service("a", "198.18.0.1", 80, &[("198.18.1.1", Some(8080))])
    );
    let s5 = build(&v5, Some(&s4));
    let moved = id_of(&s5, "a", "198.18.1.1", Some(8080)).unwrap();
    assert!(!all_ids(&s4).contains(&moved));
    // dest_index matches the services.
    assert_eq!(s5.dest_index.len(), 1);
    assert_eq!(s5.dest_index.get(&moved), Some(&(0, 0)));
}

const CLASSIFY: &str = r#"
[[fwmark]]
mark = 7
rules = [ { vip = "198.18.0.1", proto = "tcp", ports = "80,1000-1002" } ]
[[fwmark]]
mark = 9
rules = [ { vip = "198.18.0.1", proto = "tcp", ports = "9000" } ]

[[service]]
name = "all"
proto = "tcp"
vip = "198.18.0.1"
port = 0
persistence = { timeout = 60 }
  [[service.real]]
  addr = "198.18.1.3"

[[service]]
name = "addr80"
proto = "tcp"
vip = "198.18.0.1"
port = 80
  [[service.real]]
  addr = "198.18.1.2"

[[service]]
name = "addr443"
proto = "tcp"
vip = "198.18.0.1"
port = 443
  [[service.real]]
  addr = "198.18.1.2"

[[service]]
name = "marked"
fwmark = 7
  [[service.real]]
  addr = "198.18.1.1"
"#;

#[test]
fn classifier_order_fwmark_then_addr_then_port0() {
    let s = build(&format!("{HEAD}{CLASSIFY}"), None);
    let idx = |name: &str| {
        s.services
            .iter()
            .position(|x| x.name == name)
            .map(|i| i as u32)
    };
    let vip = ip("198.18.0.1");
    let c = &s.classifier;
    assert_eq!(
        c.classify(Proto::Tcp, vip, 80),
        idx("marked"),
        "fwmark beats addr"
    );
    assert_eq!(c.classify(Proto::Tcp, vip, 1001), idx("marked"));
    assert_eq!(
        c.classify(Proto::Tcp, vip, 443),
        idx("addr443"),
        "addr beats port 0"
    );
    assert_eq!(
        c.classify(Proto::Tcp, vip, 8080),
        idx("all"),
        "port 0 catches the rest"
    );
    // Mark 9 has no service: its port falls through to port 0.
    assert_eq!(c.classify(Proto::Tcp, vip, 9000), idx("all"));
    assert_eq!(c.classify(Proto::Udp, vip, 80), None);
    assert_eq!(c.classify(Proto::Tcp, ip("198.18.0.2"), 80), None);
    assert_eq!(
        s.services[idx("marked").unwrap() as usize].key,
        ServiceKey::Fwmark(7)
    );
}

#[test]
fn vips_expand_fwmark_ranges() {
    let s = build(&format!("{HEAD}{CLASSIFY}"), None);
    let vip = ip("198.18.0.1");
    let want: Vec<(Proto, IpAddr, u16)> = [0u16, 80, 443, 1000, 1001, 1002]
        .iter()
        .map(|&p| (Proto::Tcp, vip, p))
        .collect();
    // 80 comes from both mark 7 and addr80: listed once. Unused mark 9: absent.
    assert_eq!(s.vips, want);
}

fn persistent(name: &str, vip: &str, p: &str) -> String {
    format!(
        "\n[[service]]\nname = \"{name}\"\nproto = \"tcp\"\nvip = \"{vip}\"\nport = 80\npersistence = {p}\n  [[service.real]]\n  addr = \"{}\"\n",
        if vip.contains(':') { "2001:db8:1::1" } else { "198.18.1.1" }
    )
}

#[test]
fn shard_prefix_is_the_shortest_persistence_prefix() {
    let none = build(
        &format!(
            "{HEAD}{}",
            service("a", "198.18.0.1", 80, &[("198.18.1.1", None)])
        ),
        None,
    );
    assert_eq!((none.shard_prefix4, none.shard_prefix6), (32, 128));

    let text = format!(
        "{HEAD}{}{}{}{}",
        persistent(
            "p24",
            "198.18.0.1",
            "{ netmask = \"255.255.255.0\", prefix6 = 32 }"
        ),
        persistent("p16", "198.18.0.2", "{ netmask = \"255.255.0.0\" }"),
        persistent(
            "v6",
            "2001:db8::1",
            "{ netmask = \"255.0.0.0\", prefix6 = 56 }"
        ),
        service("plain", "198.18.0.3", 80, &[("198.18.1.1", None)]),
    );
    let s = build(&text, None);
    // IPv4: min(24, 16); the IPv6 service's netmask does not count.
    // IPv6: 56; the IPv4 services' prefix6 does not count.
    assert_eq!((s.shard_prefix4, s.shard_prefix6), (16, 56));
    let p = s
        .services
        .iter()
        .find(|x| x.name == "p24")
        .unwrap()
        .persistence
        .unwrap();
    assert_eq!((p.timeout_ms, p.prefix4, p.prefix6), (300_000, 24, 32));
}

#[test]
fn fwmark_persistence_counts_for_both_families() {
    let text = format!(
        "{HEAD}tunnel_src4 = \"198.18.0.9\"\n{}",
        r#"
[[fwmark]]
mark = 1
rules = [ { vip = "198.18.0.1", proto = "tcp", ports = "80" },
          { vip = "2001:db8::1", proto = "tcp", ports = "80" } ]
[[service]]
name = "m"
fwmark = 1
persistence = { timeout = 30, netmask = "255.255.255.128", prefix6 = 60 }
  [[service.real]]
  addr = "198.18.1.1"
  forward = "ipip"
"#
    );
    let s = build(&text, None);
    assert_eq!((s.shard_prefix4, s.shard_prefix6), (25, 60));
    assert_eq!(s.tunnel_src4, Some("198.18.0.9".parse().unwrap()));
    assert!(s.nat_reals.is_empty());
}

#[test]
fn conversions_and_inheritance() {
    let text = r#"
[director]
interfaces = ["eth0"]
gue_port = 7000
tunnel_src6 = "2001:db8::2"
expire_nodest_conn = true
[timeouts]
tcp = 100
tcp_fin = 10
udp = 20

[[service]]
name = "a"
proto = "udp"
vip = "198.18.0.1"
port = 53
expire_nodest_conn = false
expire_quiescent_template = true
health = { type = "udp", send = "q" }
  [[service.real]]
  addr = "198.18.1.1"
  port = 5353
  forward = "nat"
  weight = 3
  u_threshold = 10
  [[service.real]]
  addr = "198.18.1.2"
  port = 5353
  forward = "nat"
  health = { type = "none" }
[[service]]
name = "b"
proto = "tcp"
vip = "2001:db8::1"
port = 80
  [[service.real]]
  addr = "2001:db8:1::1"
  forward = "gue"
"#;
    let s = build(text, None);
    assert_eq!(
        (s.timeouts.tcp, s.timeouts.tcp_fin, s.timeouts.udp),
        (100, 10, 20)
    );
    assert_eq!(s.gue_port, 7000);
    assert_eq!(s.tunnel_src6, Some("2001:db8::2".parse().unwrap()));
    let a = &s.services[0];
    assert!(!a.expire_nodest_conn && a.expire_quiescent_template);
    let b = &s.services[1];
    assert!(b.expire_nodest_conn && !b.expire_quiescent_template);
    assert_eq!(a.persistence, None);
    let d = &a.dests[0];
    assert_eq!(
        (d.port, d.weight, d.u_threshold, d.l_threshold),
        (Some(5353), 3, 10, 0)
    );
    assert_eq!(b.dests[0].port, Some(80));
    assert_eq!(s.nat_reals, vec![ip("198.18.1.1"), ip("198.18.1.2")]);
    // Health: first real checked (udp to 5353), second has type none.
    let h = s.health.get(&a.dests[0].id).unwrap();
    assert_eq!(h.port, 5353);
    assert!(!s.health.contains_key(&a.dests[1].id));
    assert!(!s.health.contains_key(&b.dests[0].id));
}

#[test]
fn invalid_config_is_not_built() {
    let mut cfg = parse(&format!(
        "{HEAD}{}",
        service("a", "198.18.0.1", 80, &[("198.18.1.1", None)])
    ));
    cfg.services[0].reals[0].weight = 70_000;
    let e = build_snapshot_with(&cfg, None, &first)
        .unwrap_err()
        .to_string();
    // weight is not in the file: the position is the real server table.
    assert!(
        e.contains("t.toml:10:3: service[0].real[0].weight: weight 70000 exceeds"),
        "{e}"
    );
}

/// 10,000 services with 10 real servers each. The budget is 1 s in release
/// builds; unoptimized test builds get 10x.
#[test]
fn builds_100k_real_servers_fast() {
    let mut text = String::from(HEAD);
    text.push_str("tunnel_src4 = \"198.18.0.9\"\n");
    for i in 0..10_000u32 {
        let vip = format!("198.18.{}.{}", 100 + i / 250, 1 + i % 250);
        let _ = write!(
            text,
            "[[service]]\nname = \"s{i}\"\nproto = \"tcp\"\nvip = \"{vip}\"\nport = 80\n"
        );
        if i % 2 == 0 {
            text.push_str("persistence = { netmask = \"255.255.255.0\" }\n");
        }
        for r in 0..10u32 {
            let _ = write!(
                text,
                "[[service.real]]\naddr = \"198.19.{}.{}\"\nforward = \"{}\"\n",
                r,
                1 + i % 250,
                if r % 2 == 0 { "nat" } else { "ipip" }
            );
        }
    }
    let cfg = parse(&text);
    let t0 = Instant::now();
    let s1 = build_snapshot_with(&cfg, None, &first).unwrap();
    let first_build = t0.elapsed();
    let t1 = Instant::now();
    let s2 = build_snapshot_with(&cfg, Some(&s1), &first).unwrap();
    let rebuild = t1.elapsed();
    eprintln!("build: {first_build:?}, rebuild with id carry-over: {rebuild:?}");
    assert_eq!(s2.dest_index.len(), 100_000);
    assert_eq!(s2.services.len(), 10_000);
    assert_eq!(all_ids(&s1), all_ids(&s2));
    assert_eq!(s2.shard_prefix4, 24);
    let budget = if cfg!(debug_assertions) { 10.0 } else { 1.0 };
    assert!(first_build.as_secs_f64() < budget && rebuild.as_secs_f64() < budget);
}
