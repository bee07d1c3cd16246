//! `xdpvs import-keepalived`: keepalived's own sample configurations
//! (tests/fixtures/keepalived/samples, from acassen/keepalived doc/samples)
//! and hand-written ones -> a config that validates, builds a snapshot,
//! reads back the same and means what keepalived meant; or a refusal at
//! the right file:line. Pure logic (no root), plus the CLI end to end.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use xdpvs::config::build_snapshot;
use xdpvs::config::schema::{Config, HealthKind, OnFailure, ServiceConfig};
use xdpvs::import::ipvsadm::{ImportError, ImportOptions, Imported, Input};
use xdpvs::import::keepalived::{import, import_file};
use xdpvs::service::model::{FwdMethod, Proto, ServiceKey};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keepalived")
}

fn opts() -> ImportOptions {
    ImportOptions {
        interfaces: vec!["eth0".into()],
        tunnel_src4: Some("198.18.0.2".parse().unwrap()),
        tunnel_src6: Some("2001:db8::2".parse().unwrap()),
    }
}

fn mangle() -> String {
    std::fs::read_to_string(fixtures().join("mangle.rules")).unwrap()
}

/// What `import` returns is valid, builds, and its TOML reads back equal
/// (the code path of `xdpvs check`).
#[track_caller]
fn checked(i: Imported) -> Imported {
    i.config.validate().expect("validates");
    build_snapshot(&i.config, None).expect("builds a snapshot");
    let back = Config::parse(&i.toml, "imported.toml").expect("TOML parses");
    assert_eq!(back, i.config);
    i
}

fn sample(name: &str, with_marks: bool) -> Result<Imported, ImportError> {
    let ipt = mangle();
    let ipt = [Input {
        name: "mangle.rules",
        text: &ipt,
    }];
    let marks: &[Input<'_>] = if with_marks { &ipt } else { &[] };
    import_file(&fixtures().join("samples").join(name), marks, &opts())
}

/// Import `text` as `keepalived.conf` in a fresh directory holding `files`.
fn run_in(name: &str, text: &str, files: &[(&str, &str)]) -> Result<Imported, ImportError> {
    let dir = tmpdir(name);
    for (p, t) in files {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, t).unwrap();
    }
    let main = dir.join("keepalived.conf");
    std::fs::write(&main, text).unwrap();
    let r = import_file(&main, &[], &opts());
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn ok(name: &str, text: &str) -> Imported {
    match run_in(name, text, &[]) {
        Ok(i) => checked(i),
        Err(e) => panic!("import should succeed:\n{e}\n--- input:\n{text}"),
    }
}

/// The import fails; some problem is at `at` (a file name suffix and line)
/// and says `reason`.
#[track_caller]
fn refused(r: Result<Imported, ImportError>, at: &str, reason: &str) -> String {
    let e = match r {
        Ok(i) => panic!("import should fail:\n{}", i.toml),
        Err(e) => e.to_string(),
    };
    let hit = e.lines().any(|l| {
        l.split_once(": ")
            .is_some_and(|(loc, why)| loc.ends_with(at) && why.contains(reason))
    });
    assert!(hit, "want `...{at}: ...{reason}...`, got:\n{e}");
    e
}

fn svc<'c>(c: &'c Config, name: &str) -> &'c ServiceConfig {
    c.services
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no service {name}: {:?}", names(c)))
}

fn names(c: &Config) -> Vec<&str> {
    c.services.iter().map(|s| s.name.as_str()).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xdpvs-keepalived-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ---- keepalived's own samples -----------------------------------------------

/// Every sample either imports (and passes check) or is refused at the
/// named line for the named reason.
#[test]
fn every_keepalived_sample_imports_or_is_refused_with_the_reason() {
    enum Want {
        Ok { services: usize, reals: usize },
        Refused(&'static str, &'static str),
    }
    use Want::*;
    #[rustfmt::skip]
    let table: &[(&str, bool, Want)] = &[
        ("keepalived.conf.sample", false, Ok { services: 1, reals: 1 }),
        ("keepalived.conf.HTTP_GET.port", false, Ok { services: 1, reals: 1 }),
        ("keepalived.conf.SSL_GET", false, Ok { services: 2, reals: 2 }),
        ("keepalived.conf.status_code", false, Ok { services: 1, reals: 1 }),
        ("keepalived.conf.virtualhost", false, Ok { services: 1, reals: 1 }),
        ("keepalived.conf.inhibit", false, Ok { services: 1, reals: 1 }),
        ("keepalived.conf.UDP_CHECK", false, Ok { services: 1, reals: 1 }),
        ("keepalived.conf.quorum", false, Ok { services: 1, reals: 10 }),
        ("keepalived.conf.vrrp.lvs_syncd", false, Ok { services: 1, reals: 1 }),
        ("keepalived.conf.fwmark", true, Ok { services: 1, reals: 2 }),
        // 192.168.200.3-10 is 8 services; 10.0.0.1, 10.0.0.2,
        // 192.168.200.1 three more; fwmark 1 and 2 two more.
        ("keepalived.conf.virtual_server_group", true, Ok { services: 13, reals: 26 }),
        ("keepalived.conf.fwmark", false, Refused("keepalived.conf.fwmark:7", "--iptables")),
        ("keepalived.conf.virtual_server_group", false, Refused("keepalived.conf.virtual_server_group:18", "needs the rules that set mark 1")),
        ("keepalived.conf.misc_check", false, Ok { services: 1, reals: 1 }),
        ("keepalived.conf.misc_check_arg", false, Ok { services: 1, reals: 1 }),
        ("keepalived.conf.SMTP_CHECK", false, Refused("keepalived.conf.SMTP_CHECK:39", "SMTP_CHECK is not supported")),
        ("keepalived.conf.IPv6", false, Refused("keepalived.conf.IPv6:24", "SMTP_CHECK is not supported")),
        ("keepalived.conf.PING_CHECK", false, Refused("keepalived.conf.PING_CHECK:23", "PING_CHECK is not supported")),
        ("keepalived.conf.conditional_conf", false, Refused("keepalived.conf.conditional_conf:3", "conditional configuration")),
        ("keepalived.conf.vrrp", false, Refused("keepalived.conf.vrrp", "nothing to import")),
        ("keepalived.conf.vrrp.sync", false, Refused("keepalived.conf.vrrp.sync", "nothing to import")),
        ("keepalived.conf.vrrp.static_ipaddress", false, Refused("keepalived.conf.vrrp.static_ipaddress", "nothing to import")),
    ];
    for (name, marks, want) in table {
        let r = sample(name, *marks);
        match want {
            Ok { services, reals } => {
                let i = match r {
                    Result::Ok(i) => checked(i),
                    Err(e) => panic!("{name} should import:\n{e}"),
                };
                let c = &i.config;
                assert_eq!(c.services.len(), *services, "{name}: {:?}", names(c));
                let n: usize = c.services.iter().map(|s| s.reals.len()).sum();
                assert_eq!(n, *reals, "{name}");
                assert!(i
                    .toml
                    .starts_with("# Imported by `xdpvs import-keepalived`"));
            }
            Refused(at, reason) => {
                refused(r, at, reason);
            }
        }
    }
    // Every sample in the directory is in the table (or is VRRP-only).
    for e in std::fs::read_dir(fixtures().join("samples")).unwrap() {
        let f = e.unwrap().file_name().to_string_lossy().into_owned();
        let listed = table.iter().any(|(n, _, _)| *n == f);
        let vrrp_only = !std::fs::read_to_string(fixtures().join("samples").join(&f))
            .unwrap()
            .contains("virtual_server");
        assert!(listed || vrrp_only, "sample {f} is not in the table");
    }
}

/// (type, port, interval, timeout, fall, rise, on_failure) of a check.
type Check = (HealthKind, Option<u16>, u32, u32, u32, u32, OnFailure);

/// What the imported samples mean.
#[test]
fn imported_samples_mean_what_keepalived_meant() {
    struct Row {
        sample: &'static str,
        marks: bool,
        service: &'static str,
        key: ServiceKey,
        scheduler: &'static str,
        /// (timeout, netmask)
        persistence: Option<(u32, &'static str)>,
        /// (addr, port, weight, forward)
        real: (&'static str, Option<u16>, u32, FwdMethod),
        /// (type, port, interval, timeout, fall, rise, on_failure)
        health: Option<Check>,
    }
    let tcp = |vip: &str, port: u16| ServiceKey::Addr {
        proto: Proto::Tcp,
        vip: ip(vip),
        port,
    };
    let udp = |vip: &str, port: u16| ServiceKey::Addr {
        proto: Proto::Udp,
        vip: ip(vip),
        port,
    };
    use FwdMethod::*;
    use HealthKind as H;
    #[rustfmt::skip]
    let rows = [
        // delay_loop 6, connect_timeout 3, retry 3 -> fall 4; keepalived's
        // default is to remove a failed server.
        Row { sample: "keepalived.conf.sample", marks: false, service: "tcp-10.10.10.2-1358",
              key: tcp("10.10.10.2", 1358), scheduler: "rr", persistence: Some((50, "255.255.255.255")),
              real: ("192.168.200.2", None, 1, Nat),
              health: Some((H::Http, None, 6, 3, 4, 1, OnFailure::Remove)) },
        // inhibit_on_failure: quiesce (weight 0) instead of removing.
        Row { sample: "keepalived.conf.inhibit", marks: false, service: "tcp-10.10.10.2-1358",
              key: tcp("10.10.10.2", 1358), scheduler: "rr", persistence: Some((50, "255.255.255.255")),
              real: ("192.168.200.2", None, 1, Nat),
              health: Some((H::Http, None, 6, 3, 4, 1, OnFailure::Quiesce)) },
        // SSL_GET with connect_port 444: a tcp check on 444.
        Row { sample: "keepalived.conf.HTTP_GET.port", marks: false, service: "tcp-192.168.200.100-443",
              key: tcp("192.168.200.100", 443), scheduler: "rr", persistence: Some((50, "255.255.255.255")),
              real: ("192.168.201.100", None, 1, Nat),
              health: Some((H::Tcp, Some(444), 6, 3, 4, 1, OnFailure::Remove)) },
        Row { sample: "keepalived.conf.UDP_CHECK", marks: false, service: "udp-10.10.10.2-1358",
              key: udp("10.10.10.2", 1358), scheduler: "rr", persistence: Some((50, "255.255.255.255")),
              real: ("192.168.200.6", None, 1, Nat),
              health: Some((H::Udp, None, 6, 3, 4, 1, OnFailure::Remove)) },
        // wrr, NAT to another port (kept), retry default 1 -> fall 2.
        Row { sample: "keepalived.conf.quorum", marks: false, service: "tcp-10.0.1.1-80",
              key: tcp("10.0.1.1", 80), scheduler: "wrr", persistence: Some((900, "255.255.255.255")),
              real: ("10.0.0.1", Some(8080), 1, Nat),
              health: Some((H::Tcp, Some(80), 6, 3, 2, 1, OnFailure::Remove)) },
        Row { sample: "keepalived.conf.fwmark", marks: true, service: "fwmark-1",
              key: ServiceKey::Fwmark(1), scheduler: "rr", persistence: Some((900, "255.255.255.255")),
              real: ("192.168.201.100", None, 1, Nat),
              health: Some((H::Tcp, Some(80), 6, 3, 2, 1, OnFailure::Remove)) },
        // A range entry of a group: one service per address.
        Row { sample: "keepalived.conf.virtual_server_group", marks: true, service: "VSG_1-tcp-192.168.200.7-80",
              key: tcp("192.168.200.7", 80), scheduler: "rr", persistence: Some((50, "255.255.255.255")),
              real: ("192.168.200.1", Some(1358), 1, Nat),
              health: Some((H::Http, None, 6, 3, 4, 1, OnFailure::Remove)) },
        Row { sample: "keepalived.conf.virtual_server_group", marks: true, service: "VSG_1-fwmark-2",
              key: ServiceKey::Fwmark(2), scheduler: "rr", persistence: Some((50, "255.255.255.255")),
              real: ("192.168.200.2", Some(1358), 1, Nat),
              health: Some((H::Http, None, 6, 3, 4, 1, OnFailure::Remove)) },
    ];
    for row in rows {
        let i = checked(sample(row.sample, row.marks).unwrap());
        let s = svc(&i.config, row.service);
        let ctx = format!("{} {}", row.sample, row.service);
        assert_eq!(s.key, row.key, "{ctx}");
        assert_eq!(s.scheduler, row.scheduler, "{ctx}");
        assert_eq!(
            s.persistence.map(|p| (p.timeout, p.netmask.to_string())),
            row.persistence.map(|(t, m)| (t, m.to_string())),
            "{ctx}"
        );
        let (addr, port, weight, fwd) = row.real;
        let r = s
            .reals
            .iter()
            .find(|r| r.addr == ip(addr))
            .unwrap_or_else(|| panic!("{ctx}: no real {addr}"));
        assert_eq!((r.port, r.weight, r.forward), (port, weight, fwd), "{ctx}");
        let h = r.health_check(s).unwrap();
        match (h, row.health) {
            (None, None) => {}
            (Some(h), Some((kind, hport, interval, timeout, fall, rise, on_failure))) => {
                let got_kind = match h.probe {
                    xdpvs::config::schema::HealthProbe::Tcp => H::Tcp,
                    xdpvs::config::schema::HealthProbe::Http { .. } => H::Http,
                    xdpvs::config::schema::HealthProbe::Udp { .. } => H::Udp,
                    xdpvs::config::schema::HealthProbe::Exec { .. } => H::Exec,
                };
                assert_eq!(got_kind, kind, "{ctx}");
                let want_port = hport.or(r.effective_port(s)).unwrap();
                assert_eq!(
                    (h.port, h.interval, h.timeout, h.fall, h.rise, h.on_failure),
                    (want_port, interval, timeout, fall, rise, on_failure),
                    "{ctx}"
                );
            }
            (h, want) => panic!("{ctx}: health {h:?}, want {want:?}"),
        }
    }

    // The marks' rules come from the mangle table.
    let i = checked(sample("keepalived.conf.virtual_server_group", true).unwrap());
    let g: Vec<(u32, Vec<String>)> = i
        .config
        .fwmarks
        .iter()
        .map(|g| {
            (
                g.mark,
                g.rules
                    .iter()
                    .map(|r| format!("{} {} {}", r.vip, r.proto.name(), r.ports))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        g,
        vec![
            (1, vec!["192.168.200.50 tcp 80,443".to_string()]),
            (
                2,
                vec![
                    "192.168.200.51 tcp 21".to_string(),
                    "192.168.200.51 tcp 10000-10100".to_string()
                ]
            ),
        ]
    );
}

#[test]
fn harmless_keywords_are_warnings_and_comments() {
    let i = checked(sample("keepalived.conf.sample", false).unwrap());
    let w: Vec<String> = i.warnings.iter().map(|w| w.to_string()).collect();
    for (at, what) in [
        ("keepalived.conf.sample:3:", "`global_defs` ignored"),
        ("keepalived.conf.sample:13:", "`vrrp_instance` ignored"),
        ("keepalived.conf.sample:40:", "`digest` not checked"),
    ] {
        assert!(
            w.iter().any(|l| l.contains(at) && l.contains(what)),
            "{at} {what}: {w:#?}"
        );
        assert!(
            i.toml
                .lines()
                .any(|l| l.starts_with("# warning: ") && l.contains(at) && l.contains(what)),
            "{}",
            i.toml
        );
    }
    // The sorry server is imported (NAT, the service's lb_kind; its port
    // kept), not a warning.
    assert!(!w.iter().any(|l| l.contains("sorry_server")), "{w:#?}");
    let s = svc(&i.config, "tcp-10.10.10.2-1358");
    let z = s.sorry_server.as_ref().expect("sorry server imported");
    assert_eq!(
        (z.addr, z.effective_port(s), z.forward),
        (ip("192.168.200.200"), Some(1358), FwdMethod::Nat)
    );
    assert!(i
        .toml
        .contains("sorry_server = { addr = \"192.168.200.200\""));
    assert!(i.toml.contains("rise = 1 (keepalived"));

    let i = checked(sample("keepalived.conf.quorum", false).unwrap());
    let w: String = i.warnings.iter().map(|w| format!("{w}\n")).collect();
    assert!(!w.contains("`alpha` ignored"), "{w}");
    // alpha: every real server starts down until its first good check.
    let s = &i.config.services[0];
    assert!(s
        .reals
        .iter()
        .all(|r| r.health_check(s).unwrap().is_some_and(|h| h.alpha)));
    // quorum, hysteresis, quorum_up, quorum_down: imported as they are.
    for k in ["not imported", "ignored", "hysteresis"] {
        assert!(!w.contains(k), "{k}: {w}");
    }
    // The scripts are not installed here: a warning, not an error.
    assert!(
        w.contains("\"/usr/local/sbin/quorum-up.sh\" not found"),
        "{w}"
    );
    assert_eq!((s.quorum, s.hysteresis), (7, 2));
    assert_eq!(
        s.quorum_up.as_deref(),
        Some(&["/usr/local/sbin/quorum-up.sh".to_string()][..])
    );
    assert_eq!(
        s.quorum_down.as_deref(),
        Some(&["/usr/local/sbin/quorum-down.sh".to_string()][..])
    );
    assert!(
        i.toml.contains("quorum = 7\nhysteresis = 2\n"),
        "{}",
        i.toml
    );
    let i = checked(sample("keepalived.conf.vrrp.lvs_syncd", false).unwrap());
    assert!(i
        .warnings
        .iter()
        .any(|w| w.reason.contains("`vrrp_sync_group` ignored")));
}

// ---- grammar -------------------------------------------------------------------

/// The hand-written director: includes by glob relative to the including
/// file, `!` and `#` comments, quoted strings, blocks opened on the next
/// line, groups with ranges, GUE, thresholds, scheduler flags.
#[test]
fn handwritten_director_with_includes() {
    let main = fixtures().join("handwritten/director.conf");
    let i = checked(import_file(&main, &[], &opts()).unwrap());
    let c = &i.config;
    assert_eq!(
        names(c),
        vec![
            "web-tcp-198.18.0.100-80",
            "web-tcp-198.18.0.101-80",
            "web-tcp-198.18.0.102-80",
            "web-tcp-198.18.0.110-80",
            "web6-tcp-2001_db8__100-80",
            "web6-tcp-2001_db8__101-80",
            "udp-198.18.0.53-53",
            "tcp-198.18.0.120-443",
        ]
    );
    // Included files are named in the header and in problems.
    assert!(i.toml.contains("# and the file it includes "), "{}", i.toml);
    assert!(!i.warnings.iter().any(|w| w.reason.contains("notify_down")));

    let web = svc(c, "web-tcp-198.18.0.101-80");
    assert_eq!(web.scheduler, "wrr"); // lvs_sched
    let p = web.persistence.unwrap();
    // persistence_timeout without a value: 360 s, as keepalived.
    assert_eq!(
        (p.timeout, p.netmask.to_string()),
        (360, "255.255.255.0".into())
    );
    let r = &web.reals[0];
    assert_eq!((r.weight, r.forward), (3, FwdMethod::Dr)); // lvs_method
    let h = r.health_check(web).unwrap().unwrap();
    assert_eq!(
        h.probe,
        xdpvs::config::schema::HealthProbe::Http {
            path: "/health?deep=1".into(), // quoted
            expect_status: 204
        }
    );
    assert_eq!((h.interval, h.timeout, h.fall, h.rise), (10, 2, 3, 1));
    assert_eq!(h.on_failure, OnFailure::Quiesce);
    assert_eq!(
        web.reals[1].health_check(web).unwrap().unwrap().on_failure,
        OnFailure::Remove
    );

    let dns = svc(c, "udp-198.18.0.53-53");
    assert_eq!(dns.scheduler, "mh");
    assert!(dns.sched_params.hash_port);
    let r = &dns.reals[0];
    assert_eq!(
        (r.port, r.weight, r.forward, r.u_threshold, r.l_threshold),
        (Some(5353), 2, FwdMethod::Nat, 1000, 800)
    );
    // retry 0: down on the first failure.
    assert_eq!(r.health_check(dns).unwrap().unwrap().fall, 1);
    assert_eq!(dns.reals[1].weight, 1);

    let tls = svc(c, "tcp-198.18.0.120-443");
    assert!(tls.sched_params.fallback);
    assert_eq!(tls.reals[0].forward, FwdMethod::Gue);
    assert_eq!(c.director.gue_port, 6081);
    // The sorry server, tunnelled as the service (lb_kind TUN type gue).
    let z = tls.sorry_server.as_ref().expect("sorry server");
    assert_eq!((z.addr, z.forward), (ip("198.18.1.99"), FwdMethod::Gue));
    // notify_down: the script and its argument.
    let h = tls.reals[1].health_check(tls).unwrap().unwrap();
    assert_eq!(
        h.notify_down,
        Some(vec![
            "/usr/local/bin/page-oncall".to_string(),
            "198.18.1.32".to_string()
        ])
    );
    assert_eq!(h.notify_up, None);
}

/// MISC_CHECK: an exec check with the script's words as the command, its
/// timeout misc_timeout (else the delay_loop); misc_dynamic is a warning.
#[test]
fn misc_check_is_an_exec_check() {
    let i = checked(sample("keepalived.conf.misc_check_arg", false).unwrap());
    let s = &i.config.services[0];
    let h = s.reals[0].health_check(s).unwrap().unwrap();
    assert_eq!(
        h.probe,
        xdpvs::config::schema::HealthProbe::Exec {
            cmd: vec![
                "/usr/local/bin/script.sh".into(),
                "arg1".into(),
                "arg2".into()
            ]
        }
    );
    assert_eq!(h.timeout, h.interval);
    let conf = "virtual_server 198.18.0.1 80 {\n delay_loop 10\n lb_kind DR\n protocol TCP\n \
                real_server 198.18.1.1 80 {\n  MISC_CHECK {\n   misc_path \"/bin/check {addr}\"\n   \
                misc_timeout 4\n   misc_dynamic\n  }\n }\n}\n";
    let i = ok("misc", conf);
    let s = &i.config.services[0];
    let h = s.reals[0].health_check(s).unwrap().unwrap();
    assert_eq!((h.interval, h.timeout), (10, 4));
    assert!(i
        .warnings
        .iter()
        .any(|w| w.line == Some(9) && w.reason.contains("misc_dynamic")));
    let bad = "virtual_server 198.18.0.1 80 {\n lb_kind DR\n protocol TCP\n real_server 198.18.1.1 80 {\n  MISC_CHECK {\n  }\n }\n}\n";
    refused(
        run_in("misc-bad", bad, &[]),
        "keepalived.conf:5",
        "misc_path",
    );
}

#[test]
fn error_inside_an_included_file_names_that_file() {
    let main = fixtures().join("handwritten/broken.conf");
    let e = import_file(&main, &[], &opts()).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    let p = &e.0[0];
    assert!(p.file.ends_with("broken.d/misc.conf"), "{e}");
    assert_eq!(p.line, Some(6));
    assert!(p.reason.contains("PING_CHECK"), "{e}");
}

#[test]
fn include_glob_is_relative_to_the_including_file() {
    let svc_a = "virtual_server 198.18.0.1 80 {\n lb_kind DR\n protocol TCP\n real_server 198.18.1.1 80 {\n }\n}\n";
    let svc_b =
        "virtual_server 198.18.0.2 80 {\n lb_kind DR\n protocol TCP\n include ../reals/*.conf\n}\n";
    let real = "real_server 198.18.1.2 80 {\n weight 7\n}\n";
    let i = checked(
        run_in(
            "glob",
            "include sub/*.conf\ninclude sub/nothing-*.conf\n",
            &[
                ("sub/a.conf", svc_a),
                ("sub/b.conf", svc_b),
                ("sub/.hidden.conf", "garbage {"),
                ("reals/r.conf", real),
            ],
        )
        .unwrap(),
    );
    assert_eq!(
        names(&i.config),
        vec!["tcp-198.18.0.1-80", "tcp-198.18.0.2-80"]
    );
    assert_eq!(i.config.services[1].reals[0].weight, 7);
    // A wildcard that matches nothing is a warning, as in keepalived.
    assert!(i
        .warnings
        .iter()
        .any(|w| w.line == Some(2) && w.reason.contains("matches no file")));
    // A missing file without wildcards is an error.
    refused(
        run_in(
            "missing",
            "\n\ninclude /nonexistent/keepalived-xdpvs.conf\n",
            &[],
        ),
        "keepalived.conf:3",
        "no such file",
    );
    // An include loop stops.
    refused(
        run_in("loop", "include keepalived.conf\n", &[]),
        "keepalived.conf:1",
        "nested deeper",
    );
}

#[test]
fn comments_quotes_and_synonyms() {
    let i = ok(
        "syntax",
        r#"! comment
# comment
virtual_server 198.18.0.1 80 {   ! trailing comment
    lvs_sched sed                 # = lb_algo
    lvs_method DR
    protocol tcp
    real_server 198.18.1.1 80 {
        HTTP_GET {
            url {
                path "/a#b!c"
                status_code 200
            }
            nb_get_retry 4
        }
    }
    real_server 198.18.1.2 80
    {
        lvs_method NAT
        TCP_CHECK {
            retry 2
        }
    }
}
"#,
    );
    let s = &i.config.services[0];
    assert_eq!(s.scheduler, "sed");
    let h = s.reals[0].health_check(s).unwrap().unwrap();
    assert_eq!(
        h.probe,
        xdpvs::config::schema::HealthProbe::Http {
            path: "/a#b!c".into(),
            expect_status: 200
        }
    );
    assert_eq!(h.fall, 5); // nb_get_retry 4
    assert_eq!(s.reals[0].forward, FwdMethod::Dr);
    assert_eq!(s.reals[1].forward, FwdMethod::Nat); // real_server's own lvs_method
    assert_eq!(s.reals[1].health_check(s).unwrap().unwrap().fall, 3);
    // The defaults: delay_loop 60, connect_timeout 5.
    assert_eq!((h.interval, h.timeout), (60, 5));
}

#[test]
fn group_ranges_and_families() {
    let i = ok(
        "ranges",
        "virtual_server_group g {\n  198.18.0.10-12 443\n  198.18.0.20-198.18.0.21 443\n  \
         198.18.0.32/31 443\n  2001:db8::a-c 443\n}\n\
         virtual_server group g {\n lb_kind TUN\n protocol TCP\n \
         real_server 198.18.1.1 443 {\n }\n}\n",
    );
    let vips: Vec<String> = i
        .config
        .services
        .iter()
        .map(|s| match s.key {
            ServiceKey::Addr { vip, .. } => vip.to_string(),
            ServiceKey::Fwmark(m) => m.to_string(),
        })
        .collect();
    assert_eq!(
        vips,
        [
            "198.18.0.10",
            "198.18.0.11",
            "198.18.0.12",
            "198.18.0.20",
            "198.18.0.21",
            "198.18.0.32",
            "198.18.0.33",
            "2001:db8::a",
            "2001:db8::b",
            "2001:db8::c"
        ]
    );
    // TUN reals may be of the other family; tunnel type ipip by default.
    assert!(i
        .config
        .services
        .iter()
        .all(|s| s.reals[0].forward == FwdMethod::Ipip));
    refused(
        run_in(
            "bad-range",
            "virtual_server_group g {\n  198.18.0.10-5 80\n}\n",
            &[],
        ),
        "keepalived.conf:2",
        "not greater than the start",
    );
    refused(
        run_in(
            "big-range",
            "virtual_server_group g {\n  198.18.0.0-198.18.4.0 80\n}\n",
            &[],
        ),
        "keepalived.conf:2",
        "more than 256 addresses",
    );
}

#[test]
fn refusals_name_file_line_and_reason() {
    let vs = |body: &str| {
        format!("virtual_server 198.18.0.1 80 {{\n protocol TCP\n{body}\n real_server 198.18.1.1 80 {{\n }}\n}}\n")
    };
    let cases: &[(&str, String, &str, &str)] = &[
        ("lblc", vs(" lb_algo lblc"), "keepalived.conf:3", "locality-based"),
        ("lblcr", vs(" lb_algo lblcr"), "keepalived.conf:3", "not supported"),
        ("ops", vs(" ops"), "keepalived.conf:3", "one-packet scheduling"),
        ("pe", vs(" persistence_engine sip"), "keepalived.conf:3", "persistence engine"),
        ("gre", vs(" lb_kind TUN type gre"), "keepalived.conf:3", "GRE"),
        ("gue-no-port", vs(" lb_kind TUN type gue"), "keepalived.conf:3", "need `port N`"),
        ("sctp", vs(" protocol SCTP"), "keepalived.conf:3", "SCTP"),
        ("netmask", vs(" persistence_granularity 255.0.255.0"), "keepalived.conf:3", "not contiguous"),
        ("host", "virtual_server www.example.com 80 {\n}\n".to_string(), "keepalived.conf:1", "host name"),
        ("brace", "virtual_server 198.18.0.1 80 {\n".to_string(), "keepalived.conf:1", "not closed"),
        ("close", "}\n".to_string(), "keepalived.conf:1", "without a matching"),
        ("quote", "virtual_server \"198.18.0.1 80 {\n".to_string(), "keepalived.conf:1", "unterminated quote"),
        ("group", "virtual_server group nope {\n real_server 198.18.1.1 80 {\n }\n}\n".to_string(), "keepalived.conf:1", "no virtual_server_group nope"),
        ("dup", format!("{}{}", vs(""), vs("")), "keepalived.conf:7", "already defined at"),
        ("connect_ip", "virtual_server 198.18.0.1 80 {\n protocol TCP\n real_server 198.18.1.1 80 {\n  TCP_CHECK {\n   connect_ip 198.18.1.9\n  }\n }\n}\n".to_string(), "keepalived.conf:5", "connect_ip"),
        ("tunnel-src", vs(" lb_kind TUN"), "keepalived.conf:4", "--tunnel-src4"),
    ];
    for (name, text, at, reason) in cases {
        let r = if *name == "tunnel-src" {
            let dir = tmpdir(name);
            let f = dir.join("keepalived.conf");
            std::fs::write(&f, text).unwrap();
            let o = ImportOptions {
                tunnel_src4: None,
                ..opts()
            };
            import_file(&f, &[], &o)
        } else {
            run_in(name, text, &[])
        };
        refused(r, at, reason);
    }
}

#[test]
fn unknown_keywords_are_warnings_with_the_line() {
    let i = ok(
        "unknown",
        "frobnicate 1\nvirtual_server 198.18.0.1 80 {\n lb_kind DR\n frob 2\n \
         real_server 198.18.1.1 80 {\n  wobble\n }\n protocol TCP\n}\n",
    );
    let at: Vec<Option<usize>> = i.warnings.iter().map(|w| w.line).collect();
    assert_eq!(at, vec![Some(1), Some(4), Some(6)], "{:?}", i.warnings);
    assert!(i
        .warnings
        .iter()
        .all(|w| w.reason.contains("unknown keyword")));
}

#[test]
fn keepalived_defaults() {
    // No protocol: UDP (keepalived says so too); no lb_kind: NAT; no
    // lb_algo: wlc; port 0 without persistence: 360 s.
    let i = ok(
        "defaults",
        "virtual_server 198.18.0.1 0 {\n real_server 198.18.1.1 {\n }\n}\n",
    );
    let s = &i.config.services[0];
    assert_eq!(
        s.key,
        ServiceKey::Addr {
            proto: Proto::Udp,
            vip: ip("198.18.0.1"),
            port: 0
        }
    );
    assert_eq!(s.scheduler, "wlc");
    assert_eq!(s.reals[0].forward, FwdMethod::Nat);
    assert_eq!(s.persistence.unwrap().timeout, 360);
    assert_eq!(s.reals[0].health, None);
    let w: String = i.warnings.iter().map(|w| format!("{w}\n")).collect();
    assert!(
        w.contains("imported as udp") && w.contains("NAT, keepalived's default"),
        "{w}"
    );
}

// ---- keepalived itself -----------------------------------------------------

/// keepalived accepts the hand-written fixtures and the README's example
/// (when it is installed; in CI it must be).
#[test]
fn keepalived_accepts_the_handwritten_configs() {
    let found = Command::new("keepalived").arg("--version").output().is_ok();
    if !found {
        assert!(
            !xdpvs::dataplane::testutil::ci(),
            "keepalived is not installed (scripts/deps.sh installs it)"
        );
        eprintln!("SKIP keepalived_accepts_the_handwritten_configs: keepalived is not installed; NOT RUN, not passed");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in [
        fixtures().join("handwritten/director.conf"),
        fixtures().join("handwritten/broken.conf"),
        root.join("config/keepalived-example.conf"),
    ] {
        let o = Command::new("keepalived")
            .args(["--config-test", "-f"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "keepalived --config-test -f {}: {}{}",
            f.display(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

// ---- the command line -------------------------------------------------------

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xdpvs"))
}

#[test]
fn cli_import_then_check() {
    let dir = tmpdir("cli");
    let out = dir.join("imported.toml");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new(exe())
        .arg("import-keepalived")
        .arg(root.join("config/keepalived-example.conf"))
        .arg("--iptables")
        .arg(root.join("config/iptables-example.rules"))
        .args(["--interface", "eth1", "--tunnel-src4", "198.18.0.2"])
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty());
    let o = Command::new(exe())
        .args(["check", "--config"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("OK: "), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_writes_nothing_on_error() {
    let dir = tmpdir("fail");
    let out = dir.join("never.toml");
    let o = Command::new(exe())
        .arg("import-keepalived")
        .arg(fixtures().join("handwritten/broken.conf"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("broken.d/misc.conf:6: PING_CHECK") && stderr.contains("no config written"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing is written on failure");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn import_from_text_resolves_includes_against_the_given_dir() {
    let dir = tmpdir("text");
    std::fs::write(
        dir.join("vs.conf"),
        "virtual_server 198.18.0.1 80 {\n protocol TCP\n real_server 198.18.1.1 80 {\n }\n}\n",
    )
    .unwrap();
    let i = checked(
        import(
            Input {
                name: "<stdin>",
                text: "include vs.conf\n",
            },
            &dir,
            &[],
            &opts(),
        )
        .unwrap(),
    );
    assert_eq!(i.config.services.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reader that goes away before the output (`xdpvs import-keepalived
/// ... | head -0`, `xdpvs check | true`): the commands end quietly, with no
/// panic on EPIPE (`print!` panics there; Rust ignores SIGPIPE).
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let runs: [Vec<std::ffi::OsString>; 2] = [
        vec![
            "import-keepalived".into(),
            root.join("config/keepalived-example.conf").into(),
            "--iptables".into(),
            root.join("config/iptables-example.rules").into(),
            "--tunnel-src4".into(),
            "198.18.0.2".into(),
        ],
        vec![
            "check".into(),
            "--config".into(),
            root.join("config/example.toml").into(),
        ],
    ];
    for args in runs {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = Command::new(exe())
            .args(&args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_ne!(o.status.code(), Some(101), "{args:?}: {err}");
    }
}
