//! `xdpvs import-ipvsadm`: `ipvsadm -S` / `-Sn` output plus iptables MARK
//! rules -> a config that validates, builds a snapshot and means what the
//! IPVS rules meant. Pure logic (no root), plus the CLI end to end.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use xdpvs::config::build_snapshot;
use xdpvs::config::schema::{Config, PersistenceConfig, ServiceConfig};
use xdpvs::import::ipvsadm::{import, ImportError, ImportOptions, Imported, Input};
use xdpvs::service::model::{FwdMethod, Proto, ServiceKey};

const RULES: &str = "rules.ipvsadm";

/// (vip, proto, ports) of a firewall-mark group's rules.
type Rules = Vec<(IpAddr, Proto, String)>;
const IPT: &str = "mangle.rules";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn opts() -> ImportOptions {
    ImportOptions {
        interfaces: vec!["eth0".into()],
        tunnel_src4: Some("198.18.0.2".parse().unwrap()),
        tunnel_src6: Some("2001:db8::2".parse().unwrap()),
    }
}

fn run(rules: &str, iptables: &[&str]) -> Result<Imported, ImportError> {
    let names: Vec<String> = (0..iptables.len())
        .map(|i| {
            if i == 0 {
                IPT.to_string()
            } else {
                format!("ipt{i}.rules")
            }
        })
        .collect();
    let ipt: Vec<Input<'_>> = iptables
        .iter()
        .zip(&names)
        .map(|(text, name)| Input { name, text })
        .collect();
    import(
        Input {
            name: RULES,
            text: rules,
        },
        &ipt,
        &opts(),
    )
}

#[track_caller]
fn ok(rules: &str, iptables: &[&str]) -> Imported {
    match run(rules, iptables) {
        Ok(i) => {
            // What import returns is valid, builds, and its TOML reads back.
            i.config.validate().expect("validates");
            build_snapshot(&i.config, None).expect("builds a snapshot");
            let back = Config::parse(&i.toml, "imported.toml").expect("TOML parses");
            assert_eq!(back, i.config);
            i
        }
        Err(e) => panic!("import should succeed:\n{e}\n--- rules:\n{rules}"),
    }
}

/// The import fails; the first problem is at `file:line` and says `reason`.
#[track_caller]
fn err(rules: &str, iptables: &[&str], at: &str, reason: &str) -> String {
    let e = match run(rules, iptables) {
        Ok(i) => panic!("import should fail:\n{}", i.toml),
        Err(e) => e.to_string(),
    };
    let hit = e
        .lines()
        .any(|l| l.starts_with(&format!("{at}: ")) && l.contains(reason));
    assert!(hit, "want `{at}: ...{reason}...`, got:\n{e}");
    e
}

fn svc<'c>(c: &'c Config, name: &str) -> &'c ServiceConfig {
    c.services
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no service {name}"))
}

/// (addr, port, weight, forward) of every real server.
fn reals(s: &ServiceConfig) -> Vec<(IpAddr, Option<u16>, u32, FwdMethod)> {
    s.reals
        .iter()
        .map(|r| (r.addr, r.port, r.weight, r.forward))
        .collect()
}

fn persist(timeout: u32, netmask: &str, prefix6: u8) -> Option<PersistenceConfig> {
    Some(PersistenceConfig {
        timeout,
        netmask: netmask.parse().unwrap(),
        prefix6,
    })
}

fn example(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

// ---- a realistic director ---------------------------------------------------

#[test]
fn realistic_director_means_the_same() {
    let rules = example("ipvsadm-example.rules");
    let ipt = example("iptables-example.rules");
    let imp = ok(&rules, &[&ipt]);
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
    let c = &imp.config;

    assert_eq!(c.director.interfaces, vec!["eth0".to_string()]);
    assert_eq!(c.director.tunnel_src4, Some(Ipv4Addr::new(198, 18, 0, 2)));
    assert_eq!(
        c.director.tunnel_src6,
        Some("2001:db8::2".parse::<Ipv6Addr>().unwrap())
    );
    assert_eq!(c.director.gue_port, 6080);
    assert_eq!(c.timeouts, Default::default());

    // Firewall-mark groups from the MARK rules.
    assert_eq!(c.fwmarks.len(), 2);
    let g1 = &c.fwmarks[0];
    assert_eq!(g1.mark, 1);
    let r: Vec<(IpAddr, Proto, String)> = g1
        .rules
        .iter()
        .map(|r| (r.vip, r.proto, r.ports.to_string()))
        .collect();
    assert_eq!(r, vec![(ip("198.18.0.100"), Proto::Tcp, "80,443".into())]);
    let g2 = &c.fwmarks[1];
    assert_eq!(g2.mark, 2);
    let r: Vec<(IpAddr, Proto, String)> = g2
        .rules
        .iter()
        .map(|r| (r.vip, r.proto, r.ports.to_string()))
        .collect();
    assert_eq!(
        r,
        vec![
            (ip("198.18.0.101"), Proto::Tcp, "21".into()),
            (ip("198.18.0.101"), Proto::Tcp, "10000-10100".into()),
        ]
    );

    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "fwmark-1",
            "fwmark-2",
            "tcp-198.18.0.102-8080",
            "udp-198.18.0.53-53",
            "tcp-2001_db8__100-443",
            "udp-2001_db8__100-53",
        ]
    );

    // HTTP + HTTPS: one persistent fwmark service, /24 granularity.
    let web = svc(c, "fwmark-1");
    assert_eq!(web.key, ServiceKey::Fwmark(1));
    assert_eq!(web.scheduler, "wlc");
    assert_eq!(web.persistence, persist(300, "255.255.255.0", 128));
    assert_eq!(
        reals(web),
        vec![
            (ip("198.18.1.11"), None, 1, FwdMethod::Dr),
            (ip("198.18.1.12"), None, 2, FwdMethod::Dr),
            (ip("198.18.1.13"), None, 0, FwdMethod::Dr),
        ]
    );

    // FTP: control + passive range, persistent, default netmask.
    let ftp = svc(c, "fwmark-2");
    assert_eq!(ftp.key, ServiceKey::Fwmark(2));
    assert_eq!(ftp.scheduler, "lc");
    assert_eq!(ftp.persistence, persist(600, "255.255.255.255", 128));
    assert_eq!(ftp.reals.len(), 2);

    // TCP with -p and -M; NAT to another port keeps it, NAT to the same
    // port and IPIP inherit the service port.
    let t = svc(c, "tcp-198.18.0.102-8080");
    assert_eq!(
        t.key,
        ServiceKey::Addr {
            proto: Proto::Tcp,
            vip: ip("198.18.0.102"),
            port: 8080
        }
    );
    assert_eq!(t.scheduler, "wrr");
    assert_eq!(t.persistence, persist(120, "255.255.0.0", 128));
    assert_eq!(
        reals(t),
        vec![
            (ip("198.18.1.31"), None, 3, FwdMethod::Nat),
            (ip("198.18.1.32"), Some(8000), 1, FwdMethod::Nat),
            (ip("198.18.1.33"), None, 1, FwdMethod::Ipip),
        ]
    );

    // UDP, sh with its flags, not persistent.
    let dns = svc(c, "udp-198.18.0.53-53");
    assert_eq!(dns.scheduler, "sh");
    assert!(dns.sched_params.fallback && dns.sched_params.hash_port);
    assert_eq!(dns.persistence, None);
    assert_eq!(
        reals(dns),
        vec![
            (ip("198.18.1.41"), Some(5353), 1, FwdMethod::Nat),
            (ip("198.18.1.42"), Some(5353), 0, FwdMethod::Nat),
        ]
    );

    // IPv6 with a prefix netmask, DR + GUE + IPIP across families.
    let v6 = svc(c, "tcp-2001_db8__100-443");
    assert_eq!(v6.scheduler, "mh");
    assert_eq!(v6.persistence, persist(1800, "255.255.255.255", 64));
    assert_eq!(
        reals(v6),
        vec![
            (ip("2001:db8:1::11"), None, 1, FwdMethod::Dr),
            (ip("2001:db8:1::12"), None, 1, FwdMethod::Gue),
            (ip("198.18.1.51"), None, 2, FwdMethod::Ipip),
        ]
    );
    let u6 = svc(c, "udp-2001_db8__100-53");
    assert_eq!(u6.scheduler, "rr");
    assert_eq!(
        reals(u6),
        vec![(ip("2001:db8:1::21"), None, 2, FwdMethod::Nat)]
    );

    // The snapshot classifies packets as IPVS would.
    let snap = build_snapshot(c, None).unwrap();
    let class = |p: Proto, a: &str, port: u16| {
        snap.classifier
            .classify(p, ip(a), port)
            .and_then(|i| snap.services.get(i as usize))
            .map(|s| s.name.clone())
    };
    for port in [80, 443] {
        assert_eq!(
            class(Proto::Tcp, "198.18.0.100", port).as_deref(),
            Some("fwmark-1")
        );
    }
    assert_eq!(class(Proto::Tcp, "198.18.0.100", 8080), None);
    assert_eq!(class(Proto::Udp, "198.18.0.100", 443), None);
    for port in [21, 10000, 10050, 10100] {
        assert_eq!(
            class(Proto::Tcp, "198.18.0.101", port).as_deref(),
            Some("fwmark-2")
        );
    }
    assert_eq!(class(Proto::Tcp, "198.18.0.101", 10101), None);
    assert_eq!(
        class(Proto::Tcp, "198.18.0.102", 8080).as_deref(),
        Some("tcp-198.18.0.102-8080")
    );
    assert_eq!(
        class(Proto::Udp, "198.18.0.53", 53).as_deref(),
        Some("udp-198.18.0.53-53")
    );
    assert_eq!(
        class(Proto::Tcp, "2001:db8::100", 443).as_deref(),
        Some("tcp-2001_db8__100-443")
    );

    // The header names the sources.
    assert!(imp.toml.starts_with(
        "# Imported by `xdpvs import-ipvsadm` from the ipvsadm rules in rules.ipvsadm\n\
         # with the firewall-mark rules in mangle.rules\n"
    ));
}

#[test]
fn service_names_without_n_and_long_options() {
    // `ipvsadm -S` without -n prints service names for ports.
    let rules = "\
-A -t 198.18.0.100:http -s rr
-a -t 198.18.0.100:http -r 198.18.1.11:http -g -w 1
-A -u 198.18.0.53:domain -s wrr
-a -u 198.18.0.53:domain -r 198.18.1.41:domain -m -w 4
--add-service --tcp-service [2001:db8::100]:https --scheduler sed --persistent 60 --netmask 48
--add-server --tcp-service [2001:db8::100]:https --real-server [2001:db8:1::11]:8443 --masquerading --weight=5 -x 100 -y 50
-A -t 198.18.0.103:0 -s rr -p
-a -t 198.18.0.103:0 -r 198.18.1.71 -g
";
    let c = ok(rules, &[]).config;
    let key = |p: Proto, a: &str, port: u16| ServiceKey::Addr {
        proto: p,
        vip: ip(a),
        port,
    };
    assert_eq!(c.services[0].key, key(Proto::Tcp, "198.18.0.100", 80));
    assert_eq!(
        reals(&c.services[0]),
        vec![(ip("198.18.1.11"), None, 1, FwdMethod::Dr)]
    );
    assert_eq!(c.services[1].key, key(Proto::Udp, "198.18.0.53", 53));
    assert_eq!(
        reals(&c.services[1]),
        vec![(ip("198.18.1.41"), None, 4, FwdMethod::Nat)]
    );
    let s = &c.services[2];
    assert_eq!(s.key, key(Proto::Tcp, "2001:db8::100", 443));
    assert_eq!(s.scheduler, "sed");
    assert_eq!(s.persistence, persist(60, "255.255.255.255", 48));
    let r = &s.reals[0];
    assert_eq!(
        (r.port, r.weight, r.forward, r.u_threshold, r.l_threshold),
        (Some(8443), 5, FwdMethod::Nat, 100, 50)
    );
    // `-p` without a value: ipvsadm's default 300 s; port 0 = all ports.
    let all = &c.services[3];
    assert_eq!(all.key, key(Proto::Tcp, "198.18.0.103", 0));
    assert_eq!(all.persistence, persist(300, "255.255.255.255", 128));
    assert_eq!(all.scheduler, "rr");
}

#[test]
fn edit_delete_clear_and_set_replay_in_order() {
    let rules = "\
-A -t 198.18.0.1:80 -s rr
-a -t 198.18.0.1:80 -r 198.18.1.1:80 -g -w 1
-a -t 198.18.0.1:80 -r 198.18.1.2:80 -g -w 1
-A -t 198.18.0.2:80 -s rr
-E -t 198.18.0.1:80 -s wlc -p 60
-e -t 198.18.0.1:80 -r 198.18.1.1:80 -g -w 7
-d -t 198.18.0.1:80 -r 198.18.1.2:80
-D -t 198.18.0.2:80
--set 1000 0 60
";
    let c = ok(rules, &[]).config;
    assert_eq!(c.services.len(), 1);
    assert_eq!(c.services[0].scheduler, "wlc");
    assert_eq!(c.services[0].persistence.map(|p| p.timeout), Some(60));
    assert_eq!(
        reals(&c.services[0]),
        vec![(ip("198.18.1.1"), None, 7, FwdMethod::Dr)]
    );
    assert_eq!(
        (c.timeouts.tcp, c.timeouts.tcp_fin, c.timeouts.udp),
        (1000, 120, 60)
    );

    let c = ok("-A -t 198.18.0.1:80\n-C\n-A -u 198.18.0.9:53 -s rr\n", &[]).config;
    assert_eq!(c.services.len(), 1);
    assert_eq!(c.services[0].scheduler, "rr");
}

// ---- iptables variants ------------------------------------------------------

#[test]
fn iptables_command_lines_hex_marks_ranges_and_prefixes() {
    let rules = "\
-A -f 16 -s rr -p 60
-a -f 16 -r 198.18.1.11:0 -g -w 1
-A -f 17 -s rr
-a -f 17 -r 198.18.1.12:0 -g -w 1
";
    let ipt = "\
iptables -t mangle -A PREROUTING -d 198.18.0.100 -p tcp --dport 80 -j MARK --set-mark 0x10
iptables -t mangle -I PREROUTING 1 -d 198.18.0.100/32 -p udp -m multiport --dports 5000:5010,6000 -j MARK --set-mark 16/0xffffffff
# No -p, a /31: both protocols, all ports, both addresses.
/usr/sbin/iptables -t mangle -A INPUT -d 198.18.0.110/31 -j MARK --set-xmark 0x11/0xffffffff
iptables -t filter -A INPUT -p tcp --dport 22 -j ACCEPT
";
    let imp = ok(rules, &[ipt]);
    let c = &imp.config;
    let g: Vec<(u32, Rules)> = c
        .fwmarks
        .iter()
        .map(|g| {
            (
                g.mark,
                g.rules
                    .iter()
                    .map(|r| (r.vip, r.proto, r.ports.to_string()))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        g,
        vec![
            (
                16,
                vec![
                    (ip("198.18.0.100"), Proto::Tcp, "80".into()),
                    (ip("198.18.0.100"), Proto::Udp, "5000-5010,6000".into()),
                ]
            ),
            (
                17,
                vec![
                    (ip("198.18.0.110"), Proto::Tcp, "1-65535".into()),
                    (ip("198.18.0.110"), Proto::Udp, "1-65535".into()),
                    (ip("198.18.0.111"), Proto::Tcp, "1-65535".into()),
                    (ip("198.18.0.111"), Proto::Udp, "1-65535".into()),
                ]
            ),
        ]
    );
}

#[test]
fn ipv6_fwmark_service_takes_ip6tables_rules() {
    let rules = "\
-A -f 3 -6 -s wlc -p 300 -M 64
-a -f 3 -6 -r [2001:db8:1::11]:0 -g -w 1
-a -f 3 -6 -r [2001:db8:1::12]:0 -g -w 3
";
    let ip4 = "*mangle\n-A PREROUTING -d 198.18.0.100/32 -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x3/0xffffffff\nCOMMIT\n";
    let ip6 = "*mangle\n-A PREROUTING -d 2001:db8::100/128 -p tcp -m multiport --dports 80,443 -j MARK --set-xmark 0x3/0xffffffff\nCOMMIT\n";
    let imp = ok(rules, &[ip4, ip6]);
    let c = &imp.config;
    assert_eq!(c.services[0].name, "fwmark-3-v6");
    assert_eq!(
        c.services[0].persistence,
        persist(300, "255.255.255.255", 64)
    );
    assert_eq!(c.fwmarks.len(), 1);
    assert_eq!(c.fwmarks[0].rules.len(), 1);
    assert_eq!(c.fwmarks[0].rules[0].vip, ip("2001:db8::100"));
    assert_eq!(c.fwmarks[0].rules[0].ports.to_string(), "80,443");
    // The IPv4 rule with the same mark has no IPv4 service in IPVS: ignored, said so.
    let w: Vec<String> = imp.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        w.iter()
            .any(|w| w.starts_with("mangle.rules:2: ") && w.contains("IPv4 destinations ignored")),
        "{w:?}"
    );
}

#[test]
fn harmless_differences_are_warnings() {
    let rules = "\
-A -t 198.18.0.1:80 -s rr -M 255.255.255.0
-a -t 198.18.0.1:80 -r 198.18.1.1:80 -i -w 1 --tun-type gue --tun-port 5555 --tun-csum
-A -t 198.18.0.2:80 -s wlc -b flag-3
--start-daemon master --mcast-interface eth1 --syncid 7
";
    let imp = ok(rules, &[]);
    assert_eq!(imp.config.director.gue_port, 5555);
    assert_eq!(imp.config.services[0].persistence, None);
    let w: Vec<String> = imp.warnings.iter().map(|w| w.to_string()).collect();
    let has = |at: &str, what: &str| {
        assert!(
            w.iter().any(|x| x.starts_with(at) && x.contains(what)),
            "want {at} {what} in {w:?}"
        )
    };
    has("rules.ipvsadm:1: ", "not persistent");
    has("rules.ipvsadm:2: ", "--tun-csum");
    has("rules.ipvsadm:3: ", "flag-3");
    has("rules.ipvsadm:4: ", "synchronisation");
    // Warnings are in the written file too, as comments.
    assert!(imp.toml.contains("# warning: rules.ipvsadm:2: "));
}

#[test]
fn unused_marks_and_their_bad_rules_are_only_warnings() {
    let rules = "-A -f 1 -s rr\n-a -f 1 -r 198.18.1.1:0 -g\n";
    let ipt = "\
*mangle
-A PREROUTING -d 198.18.0.100/32 -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x1/0xffffffff
-A PREROUTING -s 10.0.0.0/8 -p tcp -m tcp --dport 25 -j MARK --set-xmark 0x9/0xffffffff
COMMIT
";
    let imp = ok(rules, &[ipt]);
    assert_eq!(imp.config.fwmarks.len(), 1);
    let w: Vec<String> = imp.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        w.iter()
            .any(|x| x.starts_with("mangle.rules:3: ") && x.contains("mark 9 is not used")),
        "{w:?}"
    );
}

// ---- errors, with their lines -----------------------------------------------

#[test]
fn unknown_option() {
    let rules = "-A -t 198.18.0.1:80 -s rr\n-a -t 198.18.0.1:80 -r 198.18.1.1:80 -g -q\n";
    err(rules, &[], "rules.ipvsadm:2", "unknown option `-q`");
    err(
        "-A -t 198.18.0.1:80 --frobnicate\n",
        &[],
        "rules.ipvsadm:1",
        "unknown option `--frobnicate`",
    );
    err("-L -n\n", &[], "rules.ipvsadm:1", "is not a rule");
    err(
        "-A -t 198.18.0.1:80 -w 3\n",
        &[],
        "rules.ipvsadm:1",
        "`-w` cannot be used with `-A`",
    );
}

#[test]
fn real_server_before_its_service() {
    let rules = "\
-A -t 198.18.0.1:80 -s rr
-a -t 198.18.0.2:80 -r 198.18.1.1:80 -g -w 1
-A -t 198.18.0.2:80 -s rr
";
    err(
        rules,
        &[],
        "rules.ipvsadm:2",
        "real server for TCP 198.18.0.2:80, but that virtual service is not defined",
    );
}

#[test]
fn bad_addresses_and_host_names() {
    err(
        "-A -t 198.18.0.300:80 -s rr\n",
        &[],
        "rules.ipvsadm:1",
        "`198.18.0.300` is not a valid IPv4 address",
    );
    let e = err(
        "# saved without -n\n-A -t www.example.com:http -s rr\n",
        &[],
        "rules.ipvsadm:2",
        "`www.example.com` is a host name",
    );
    assert!(e.contains("ipvsadm -Sn"), "{e}");
    err(
        "-A -t 198.18.0.1:gopher-plus -s rr\n",
        &[],
        "rules.ipvsadm:1",
        "unknown service name `gopher-plus`",
    );
    err(
        "-A -t [2001:db8::1]80 -s rr\n",
        &[],
        "rules.ipvsadm:1",
        "expected `:port` after `]`",
    );
    err(
        "-A -t 198.18.0.1:80\n-a -t 198.18.0.1:80 -r [2001:db8::1]:80 -g\n",
        &[],
        "rules.ipvsadm:2",
        "address family",
    );
}

#[test]
fn fwmark_without_iptables_rules() {
    let rules = "\
-A -t 198.18.0.1:80 -s rr
-A -f 7 -s wlc -p 300
-a -f 7 -r 198.18.1.11:0 -g -w 1
";
    let e = err(
        rules,
        &[],
        "rules.ipvsadm:2",
        "needs the rules that set mark 7",
    );
    assert!(e.contains("--iptables FILE"), "{e}");
    // With rules for other marks only.
    let ipt = "*mangle\n-A PREROUTING -d 198.18.0.100/32 -p tcp -j MARK --set-mark 8\nCOMMIT\n";
    err(
        rules,
        &[ipt],
        "rules.ipvsadm:2",
        "no MARK rule in mangle.rules sets mark 7",
    );
    // With a rule for the mark that xdpvs cannot express.
    let ipt = "*mangle\n\n-A PREROUTING -d 198.18.0.100/32 -p tcp -m state --state NEW -j MARK --set-mark 7\nCOMMIT\n";
    err(
        rules,
        &[ipt],
        "mangle.rules:3",
        "`-m state` is not supported",
    );
    let ipt = "*mangle\n-A PREROUTING -p tcp --dport 80 -j MARK --set-mark 7\nCOMMIT\n";
    err(rules, &[ipt], "mangle.rules:2", "no destination (-d)");
    let ipt = "*mangle\n-A WEB -d 198.18.0.100/32 -p tcp --dport 80 -j MARK --set-mark 7\nCOMMIT\n";
    err(rules, &[ipt], "mangle.rules:2", "user-defined chain WEB");
}

#[test]
fn unsupported_options_fail_with_their_reason() {
    let cases = [
        ("-A -t 198.18.0.1:80 -s lblc\n", "1", "scheduler lblc"),
        (
            "-A -u 198.18.0.1:5060 -s rr -p 60 --pe sip\n",
            "1",
            "persistence engine `sip`",
        ),
        (
            "-A -u 198.18.0.1:53 -s rr -o\n",
            "1",
            "one-packet scheduling",
        ),
        (
            "-A -u 198.18.0.1:53 -s rr ops\n",
            "1",
            "one-packet scheduling",
        ),
        ("--add-service --sctp-service 198.18.0.1:80\n", "1", "SCTP"),
        (
            "-A -t 198.18.0.1:80\n-a -t 198.18.0.1:80 -r 198.18.1.1:80 -i --tun-type gre\n",
            "2",
            "GRE tunnels",
        ),
        (
            "-A -t 198.18.0.1:80 -s rr -p 60 -M 255.0.255.0\n",
            "1",
            "not contiguous",
        ),
        (
            "-A -t 198.18.0.1:0 -s rr\n",
            "1",
            "port 0 (all ports) needs a persistent service",
        ),
        (
            "-A -t 198.18.0.1:80\n-A -t 198.18.0.1:80\n",
            "2",
            "already defined (line 1)",
        ),
        (
            "-A -t 198.18.0.1:80\n-a -t 198.18.0.1:80 -r 198.18.1.1 -w 70000\n",
            "2",
            "weight 70000 is out of range",
        ),
        (
            "-A -t 198.18.0.1:80 -s rr -b mh-port\n",
            "1",
            "belongs to the mh scheduler",
        ),
        (
            "-A -f 1 -s rr\n-A -f 1 -6 -s rr\n",
            "2",
            "mark 1 already has an IPv4 service (line 1)",
        ),
        (
            "-A -t 198.18.0.1:80\n-a -t 198.18.0.1:80 -r 198.18.1.1 -m --tun-port 6080\n",
            "2",
            "applies only to tunnelling real servers",
        ),
    ];
    for (rules, line, reason) in cases {
        err(rules, &[], &format!("rules.ipvsadm:{line}"), reason);
    }
}

#[test]
fn tunnels_need_a_source_address_and_one_gue_port() {
    let rules = "\
-A -t 198.18.0.1:80 -s rr
-a -t 198.18.0.1:80 -r 198.18.1.1:80 -i -w 1 --tun-type ipip
-a -t 198.18.0.1:80 -r 198.18.1.2:80 -i -w 1
";
    let e = import(
        Input {
            name: RULES,
            text: rules,
        },
        &[],
        &ImportOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("rules.ipvsadm:2: ") && e.contains("--tunnel-src4 ADDR (and 1 more"),
        "{e}"
    );
    let rules = "\
-A -t 198.18.0.1:80 -s rr
-a -t 198.18.0.1:80 -r 198.18.1.1:80 -i --tun-type gue --tun-port 6080
-a -t 198.18.0.1:80 -r 198.18.1.2:80 -i --tun-type gue --tun-port 7070
";
    err(
        rules,
        &[],
        "rules.ipvsadm:3",
        "--tun-port 7070 differs from --tun-port 6080 (line 2)",
    );
}

#[test]
fn validation_errors_point_at_input_lines() {
    // xdpvs wants the lower threshold below the upper one.
    let rules = "\
-A -t 198.18.0.1:80 -s rr

-a -t 198.18.0.1:80 -r 198.18.1.1:80 -g -w 1 -x 10 -y 10
";
    err(
        rules,
        &[],
        "rules.ipvsadm:3",
        "l_threshold (10) must be below u_threshold (10)",
    );
    // Overlapping rules of two marks: both iptables lines are known.
    let rules = "-A -f 1 -s rr\n-a -f 1 -r 198.18.1.1:0\n-A -f 2 -s rr\n-a -f 2 -r 198.18.1.2:0\n";
    let ipt = "\
*mangle
-A PREROUTING -d 198.18.0.100/32 -p tcp -m multiport --dports 80,443 -j MARK --set-xmark 0x1/0xffffffff
-A PREROUTING -d 198.18.0.100/32 -p tcp -m tcp --dport 443 -j MARK --set-xmark 0x2/0xffffffff
COMMIT
";
    err(
        rules,
        &[ipt],
        "mangle.rules:3",
        "a packet can carry only one mark",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let rules = "\
-A -t 198.18.0.1:80 -s nope
-a -t 198.18.0.9:80 -r 198.18.1.1:80
-A -t host.example:80
-a -t 198.18.0.1:80 -r 198.18.1.1:80
-A -f 5 -s rr
";
    let e = run(rules, &[]).unwrap_err();
    let lines: Vec<Option<usize>> = e.0.iter().map(|p| p.line).collect();
    // In line order, though the fwmark check runs last.
    assert_eq!(
        lines,
        vec![Some(1), Some(2), Some(3), Some(4), Some(5)],
        "{e}"
    );
    let four = e.0[3].to_string();
    assert!(
        four.contains("whose virtual service could not be imported (line 1)"),
        "{four}"
    );
}

// ---- the command line -------------------------------------------------------

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xdpvs"))
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xdpvs-ipvsadm-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn cli_import_then_check() {
    let dir = tmpdir("cli");
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let out = dir.join("imported.toml");
    let o = Command::new(exe())
        .arg("import-ipvsadm")
        .arg(cfg.join("ipvsadm-example.rules"))
        .arg("--iptables")
        .arg(cfg.join("iptables-example.rules"))
        .args(["--interface", "eth1", "--interface", "eth2"])
        .args([
            "--tunnel-src4",
            "198.18.0.2",
            "--tunnel-src6",
            "2001:db8::2",
        ])
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.stdout.is_empty());
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.starts_with("# Imported by `xdpvs import-ipvsadm`"),
        "{text}"
    );
    assert!(text.contains("interfaces = [\"eth1\", \"eth2\"]"), "{text}");

    let o = Command::new(exe())
        .args(["check", "--config"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "check failed: {}{}",
        stdout,
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("OK: 6 services, 14 real servers, 2 firewall-mark groups"),
        "{stdout}"
    );

    // To stdout, reading the rules from stdin.
    let mut child = Command::new(exe())
        .args(["import-ipvsadm", "-", "--interface", "eth0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(
                b"-A -u 198.18.0.53:53 -s rr\n-a -u 198.18.0.53:53 -r 198.18.1.41:53 -g -w 1\n",
            )
            .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    let c = Config::parse(&text, "stdout.toml").unwrap();
    assert_eq!(c.services.len(), 1);
    assert_eq!(c.director.interfaces, vec!["eth0".to_string()]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_fails_on_a_fwmark_service_without_rules() {
    let dir = tmpdir("fail");
    let rules = dir.join("rules");
    std::fs::write(
        &rules,
        "-A -f 1 -s rr -p 60\n-a -f 1 -r 198.18.1.1:0 -g -w 1\n",
    )
    .unwrap();
    let out = dir.join("never.toml");
    let o = Command::new(exe())
        .arg("import-ipvsadm")
        .arg(&rules)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!("{}:1: ", rules.display())) && stderr.contains("--iptables"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing is written on failure");
    let _ = std::fs::remove_dir_all(&dir);
}
