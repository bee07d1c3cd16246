//! Whole-config rules on a typed [`Config`]: cross references, duplicates,
//! overlaps, address families and IPVS's limits. Runs in one pass over the
//! config with hash maps, so 100,000 real servers take milliseconds.

/// Largest `fast_path_capacity` (flows in the XDP flow cache).
pub const MAX_FAST_PATH_CAPACITY: u32 = 1 << 28;

use hashbrown::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use crate::config::error::Diagnostic;
use crate::config::schema::{
    format_mac, Config, HealthKind, HealthSpec, ServiceConfig, MAX_ANNOUNCE_DURATION, MAX_CAPACITY,
    MAX_TIMEOUT, MAX_WEIGHT,
};
use crate::service::model::{FwdMethod, Proto, ServiceKey};
use crate::service::sched::{SchedParams, SCHEDULER_NAMES};

/// Largest accepted mh lookup table.
pub const MAX_MH_TABLE_SIZE: u32 = 1 << 24;
/// Highest CPU number accepted in `cores` (CPU_SETSIZE - 1).
pub const MAX_CORE: usize = 1023;
/// Health check interval and timeout bounds, seconds.
pub const MAX_HEALTH_SECONDS: u32 = 3600;

/// Errors and warnings of a config.
pub(crate) fn validate(cfg: &Config) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
    let mut v = Validator {
        cfg,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    v.director();
    v.timeouts();
    v.announce();
    let marks = v.fwmarks();
    v.services(&marks);
    v.neighbors();
    (v.errors, v.warnings)
}

/// Per declared mark: its group index and whether it has IPv4 / IPv6 VIPs.
struct MarkInfo {
    group: usize,
    v4: bool,
    v6: bool,
}

/// (lo, hi, group index, rule index) of one port range of a fwmark rule.
type RuleRange = (u16, u16, usize, usize);

struct Validator<'c> {
    cfg: &'c Config,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

/// A VIP, real server or tunnel source must be a unicast address.
pub fn is_unicast(a: IpAddr) -> bool {
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || a == IpAddr::V4(Ipv4Addr::BROADCAST))
}

fn family(a: IpAddr) -> &'static str {
    if a.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// Whether `program` can be run: an absolute or relative path (with a
/// `/`) that exists, or a name found in one of the `PATH` directories.
pub fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).exists();
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path).any(|d| d.join(program).is_file())
}

/// Linux `dev_valid_name`.
fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() < 16
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

fn valid_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

const NOT_UNICAST: &str =
    "must be a unicast address (not unspecified, loopback, multicast or broadcast)";

impl Validator<'_> {
    fn err(&mut self, path: &str, reason: impl Into<String>) {
        let d = self.cfg.origin.diag(path, reason);
        self.errors.push(d);
    }

    fn warn(&mut self, path: &str, reason: impl Into<String>) {
        let d = self.cfg.origin.diag(path, reason);
        self.warnings.push(d);
    }

    fn sync(&mut self, s: &crate::config::schema::SyncConfig) {
        if !valid_ifname(&s.interface) {
            self.err(
                "sync.interface",
                format!(
                    "bad interface name \"{}\" (1-15 characters, no '/', ':' or spaces)",
                    s.interface
                ),
            );
        }
        if s.group.is_some() && !s.peers.is_empty() {
            self.err(
                "sync.peers",
                "give either `group` (multicast) or `peers` (unicast), not both",
            );
        }
        if let Some(g) = s.group {
            if !g.is_multicast() {
                self.err(
                    "sync.group",
                    format!("{g} is not a multicast address (for unicast, list `peers`)"),
                );
            }
        }
        let mut seen: HashMap<IpAddr, usize> = HashMap::new();
        for (i, &p) in s.peers.iter().enumerate() {
            let path = format!("sync.peers[{i}]");
            if !is_unicast(p) {
                self.err(&path, format!("{p} {NOT_UNICAST}"));
            } else if let Some(first) = seen.insert(p, i) {
                self.err(
                    &path,
                    format!("peer {p} is listed twice (also peers[{first}])"),
                );
            }
        }
        if s.port == 0 {
            self.err("sync.port", "0 is out of range (1-65535; IPVS uses 8848)");
        }
        if s.ttl == 0 {
            self.err(
                "sync.ttl",
                "0 is out of range (1-255; 1 keeps sync on the link)",
            );
        }
        if s.resync_wait > 3600 {
            self.err(
                "sync.resync_wait",
                format!("{} is out of range (0-3600 s)", s.resync_wait),
            );
        }
        if let Some(k) = &s.auth_key {
            if k.as_os_str().is_empty() {
                self.err(
                    "sync.auth_key",
                    "must not be empty (omit it for plain IPVS sync)",
                );
            }
        }
    }

    fn director(&mut self) {
        let d = &self.cfg.director;
        if d.interfaces.is_empty() {
            self.err(
                "director.interfaces",
                "at least one data-plane interface is required",
            );
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, name) in d.interfaces.iter().enumerate() {
            let path = format!("director.interfaces[{i}]");
            if !valid_ifname(name) {
                self.err(
                    &path,
                    format!(
                        "bad interface name \"{name}\" (1-15 characters, no '/', ':' or spaces)"
                    ),
                );
            } else if let Some(first) = seen.insert(name, i) {
                self.err(
                    &path,
                    format!("interface \"{name}\" is listed twice (also interfaces[{first}])"),
                );
            }
        }
        if let Some(cores) = &d.cores {
            if cores.is_empty() {
                self.err(
                    "director.cores",
                    "must not be empty (omit `cores` for one shard per usable core)",
                );
            }
            let mut seen: HashMap<usize, usize> = HashMap::new();
            for (i, &c) in cores.iter().enumerate() {
                let path = format!("director.cores[{i}]");
                if c > MAX_CORE {
                    self.err(&path, format!("core {c} is out of range (0-{MAX_CORE})"));
                } else if let Some(first) = seen.insert(c, i) {
                    self.err(
                        &path,
                        format!("core {c} is listed twice (also cores[{first}])"),
                    );
                }
            }
        }
        if d.control_socket.as_os_str().is_empty() {
            self.err("director.control_socket", "must not be empty");
        }
        for (key, n) in [
            ("conn_capacity", d.conn_capacity),
            ("template_capacity", d.template_capacity),
        ] {
            if n == 0 || n > MAX_CAPACITY {
                self.err(
                    &format!("director.{key}"),
                    format!("{n} is out of range (1-{MAX_CAPACITY} entries per shard)"),
                );
            }
        }
        if d.conn_reuse_mode > 3 {
            self.err(
                "director.conn_reuse_mode",
                format!(
                    "{} is out of range (0-3, as the IPVS sysctl: 0 off, 1 TIME_WAIT/CLOSE, \
                     2 also FIN_WAIT of DR and tunnel connections)",
                    d.conn_reuse_mode
                ),
            );
        }
        let cfg = self.cfg;
        if let Some(s) = &cfg.sync {
            self.sync(s);
        }
        if d.fast_path_capacity > MAX_FAST_PATH_CAPACITY {
            self.err(
                "director.fast_path_capacity",
                format!(
                    "{} is out of range (0-{MAX_FAST_PATH_CAPACITY}; 0: conn_capacity x shards)",
                    d.fast_path_capacity
                ),
            );
        }
        if d.shard_rt_priority > 99 {
            self.err(
                "director.shard_rt_priority",
                format!(
                    "{} is out of range (0-99; 0: normal tasks)",
                    d.shard_rt_priority
                ),
            );
        } else if d.shard_rt_priority > 0 && d.busy_poll_us > 0 {
            self.err(
                "director.shard_rt_priority",
                "a real-time shard must not busy-poll (busy_poll_us = 0): it would starve \
                 the kernel's work on its core"
                    .to_string(),
            );
        }
        if d.busy_poll_us > 1_000_000 {
            self.err(
                "director.busy_poll_us",
                format!("{} is out of range (0-1000000 us)", d.busy_poll_us),
            );
        }
        if let Some(a) = d.tunnel_src4 {
            if !is_unicast(a.into()) {
                self.err("director.tunnel_src4", format!("{a} {NOT_UNICAST}"));
            }
        }
        if let Some(a) = d.tunnel_src6 {
            if !is_unicast(a.into()) {
                self.err("director.tunnel_src6", format!("{a} {NOT_UNICAST}"));
            }
        }
        if d.gue_port == 0 {
            self.err(
                "director.gue_port",
                "port 0 is not a valid GUE port (use 1-65535)",
            );
        }
        if let Some(p) = &d.state_file {
            if p.as_os_str().is_empty() {
                self.err(
                    "director.state_file",
                    "must not be empty (omit it for the default, next to control_socket)",
                );
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&d.log_level) {
            self.err(
                "director.log_level",
                format!(
                    "bad log level \"{}\": {e} (expected e.g. \"info\" or \"info,xdpvs=debug\")",
                    d.log_level
                ),
            );
        }
    }

    fn timeouts(&mut self) {
        let t = self.cfg.timeouts;
        for (key, n) in [("tcp", t.tcp), ("tcp_fin", t.tcp_fin), ("udp", t.udp)] {
            if n == 0 || n > MAX_TIMEOUT {
                self.err(
                    &format!("timeouts.{key}"),
                    format!("timeout {n} is out of range (1-{MAX_TIMEOUT} seconds, 31 days)"),
                );
            }
        }
    }

    fn fwmarks(&mut self) -> HashMap<u32, MarkInfo> {
        let mut marks: HashMap<u32, MarkInfo> = HashMap::new();
        // (proto, vip) -> (lo, hi, group, rule)
        let mut ranges: HashMap<(Proto, IpAddr), Vec<RuleRange>> = HashMap::new();
        for (g, group) in self.cfg.fwmarks.iter().enumerate() {
            if group.mark == 0 {
                self.err(
                    &format!("fwmark[{g}].mark"),
                    "mark 0 is not a valid firewall mark (use 1-4294967295)",
                );
            } else if let Some(first) = marks.get(&group.mark) {
                let first = first.group;
                self.err(
                    &format!("fwmark[{g}].mark"),
                    format!("mark {} is already declared by fwmark[{first}]", group.mark),
                );
                continue;
            }
            if group.rules.is_empty() {
                self.err(
                    &format!("fwmark[{g}].rules"),
                    "a firewall-mark group needs at least one rule",
                );
            }
            let mut info = MarkInfo {
                group: g,
                v4: false,
                v6: false,
            };
            for (r, rule) in group.rules.iter().enumerate() {
                if !is_unicast(rule.vip) {
                    self.err(
                        &format!("fwmark[{g}].rules[{r}].vip"),
                        format!("{} {NOT_UNICAST}", rule.vip),
                    );
                }
                info.v4 |= rule.vip.is_ipv4();
                info.v6 |= rule.vip.is_ipv6();
                let bad = rule.ports.0.is_empty()
                    || rule.ports.0.iter().any(|&(lo, hi)| lo == 0 || lo > hi);
                if bad {
                    self.err(
                        &format!("fwmark[{g}].rules[{r}].ports"),
                        format!(
                            "malformed port list \"{}\" (expected ports 1-65535, e.g. \"80,443,8000-8100\")",
                            rule.ports
                        ),
                    );
                    continue;
                }
                let list = ranges.entry((rule.proto, rule.vip)).or_default();
                list.extend(rule.ports.0.iter().map(|&(lo, hi)| (lo, hi, g, r)));
            }
            marks.insert(group.mark, info);
        }
        // Overlaps between different groups: sweep each (proto, vip) by start
        // port, keeping the range that reaches furthest. Ranges seen so far
        // that contain the current start all overlap each other, so (absent an
        // earlier error) they share one group and the furthest one stands for all.
        let mut keys: Vec<&(Proto, IpAddr)> = ranges.keys().collect();
        keys.sort();
        let mut found = Vec::new();
        for key in keys {
            let Some(list) = ranges.get(key) else {
                continue;
            };
            let mut list = list.clone();
            list.sort_unstable();
            let mut reach: Option<(u16, usize, usize)> = None;
            for &(lo, hi, g, r) in &list {
                if let Some((rhi, rg, rr)) = reach {
                    if lo <= rhi && rg != g {
                        found.push((key.0, key.1, lo, g, r, rg, rr));
                        continue;
                    }
                    if hi > rhi {
                        reach = Some((hi, g, r));
                    }
                } else {
                    reach = Some((hi, g, r));
                }
            }
        }
        for (proto, vip, port, g, r, og, or) in found {
            let (a, b) = if (og, or) > (g, r) {
                ((og, or), (g, r))
            } else {
                ((g, r), (og, or))
            };
            let mark = |i: usize| self.cfg.fwmarks.get(i).map_or(0, |x| x.mark);
            let reason = format!(
                "overlaps fwmark[{}].rules[{}] (mark {}) on {proto} {vip} port {port}: \
                 a packet can carry only one mark",
                b.0,
                b.1,
                mark(b.0)
            );
            self.err(&format!("fwmark[{}].rules[{}].ports", a.0, a.1), reason);
        }
        marks
    }

    fn services(&mut self, marks: &HashMap<u32, MarkInfo>) {
        let mut marks_used: HashMap<u32, bool> = HashMap::new();
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut keys: HashMap<ServiceKey, usize> = HashMap::new();
        for (i, svc) in self.cfg.services.iter().enumerate() {
            let sp = format!("service[{i}]");
            if !valid_service_name(&svc.name) {
                self.err(
                    &format!("{sp}.name"),
                    format!(
                        "bad service name \"{}\" (1-64 letters, digits, '-', '_' or '.')",
                        svc.name
                    ),
                );
            } else if let Some(first) = names.insert(&svc.name, i) {
                self.err(
                    &format!("{sp}.name"),
                    format!(
                        "service name \"{}\" is already used by service[{first}]",
                        svc.name
                    ),
                );
            }
            let key_path = match svc.key {
                ServiceKey::Fwmark(_) => format!("{sp}.fwmark"),
                ServiceKey::Addr { .. } => format!("{sp}.vip"),
            };
            // VIP families, for the real servers' family check.
            let (v4, v6) = match svc.key {
                ServiceKey::Fwmark(m) => match marks.get(&m) {
                    Some(info) => {
                        marks_used.insert(m, true);
                        (info.v4, info.v6)
                    }
                    None => {
                        self.err(
                            &key_path,
                            format!("mark {m} is not declared by any [[fwmark]] group"),
                        );
                        (false, false)
                    }
                },
                ServiceKey::Addr { vip, port, .. } => {
                    if !is_unicast(vip) {
                        self.err(&key_path, format!("{vip} {NOT_UNICAST}"));
                    }
                    if port == 0 && svc.persistence.is_none() {
                        self.err(
                            &format!("{sp}.port"),
                            "port 0 (all ports) is allowed only for a persistent service \
                             (add `persistence`)",
                        );
                    }
                    (vip.is_ipv4(), vip.is_ipv6())
                }
            };
            if let Some(first) = keys.insert(svc.key, i) {
                let other = self.cfg.services.get(first).map_or("", |s| s.name.as_str());
                self.err(
                    &key_path,
                    format!(
                        "the same virtual service ({}) is already defined by service[{first}] \"{other}\"",
                        svc.key
                    ),
                );
            }
            self.scheduler(&sp, svc);
            self.quorum(&sp, svc);
            if let Some(p) = &svc.persistence {
                if p.timeout == 0 || p.timeout > MAX_TIMEOUT {
                    self.err(
                        &format!("{sp}.persistence.timeout"),
                        format!(
                            "timeout {} is out of range (1-{MAX_TIMEOUT} seconds, 31 days)",
                            p.timeout
                        ),
                    );
                }
                if p.prefix4().is_none() {
                    self.err(
                        &format!("{sp}.persistence.netmask"),
                        format!(
                            "netmask {} is not contiguous (expected e.g. 255.255.255.0)",
                            p.netmask
                        ),
                    );
                }
                if p.prefix6 > 128 {
                    self.err(
                        &format!("{sp}.persistence.prefix6"),
                        format!("prefix6 {} is larger than 128", p.prefix6),
                    );
                }
            }
            if let Some(h) = &svc.health {
                self.health_spec(&format!("{sp}.health"), h);
            }
            if svc.reals.is_empty() && svc.sorry_server.is_none() {
                self.warn(&sp, format!("service \"{}\" has no real servers", svc.name));
            }
            self.ftp(&sp, svc);
            self.reals(&sp, svc, v4, v6);
            self.sorry(&sp, svc, v4, v6);
        }
        // Unused marks are allowed, but probably a mistake.
        let mut unused: Vec<(usize, u32)> = marks
            .iter()
            .filter(|(m, _)| !marks_used.contains_key(*m))
            .map(|(&m, info)| (info.group, m))
            .collect();
        unused.sort_unstable();
        for (g, m) in unused {
            self.warn(
                &format!("fwmark[{g}].mark"),
                format!("mark {m} is not used by any service"),
            );
        }
        self.shadowed(&marks_used);
    }

    /// A service that carries FTP control connections (TCP port 21): xdpvs
    /// has no FTP helper (IPVS's `ip_vs_ftp`, which reads the control
    /// connection, rewrites the address of NAT'd PASV replies and expects
    /// the data connection). What makes FTP work without one: the passive
    /// port range in the same service (a fwmark, or port 0), persistence so
    /// the data connection follows the control connection, and, through
    /// NAT, servers that announce the VIP in their passive replies. Warn
    /// about each missing piece.
    fn ftp(&mut self, sp: &str, svc: &ServiceConfig) {
        let carries_21 = match svc.key {
            ServiceKey::Addr { proto, port, .. } => {
                proto == Proto::Tcp && (port == 21 || port == 0)
            }
            ServiceKey::Fwmark(m) => self.cfg.fwmarks.iter().any(|g| {
                g.mark == m
                    && g.rules
                        .iter()
                        .any(|r| r.proto == Proto::Tcp && r.ports.contains(21))
            }),
        };
        if !carries_21 {
            return;
        }
        let name = &svc.name;
        if matches!(svc.key, ServiceKey::Addr { port: 21, .. }) {
            self.warn(
                sp,
                format!(
                    "service \"{name}\" is FTP's port 21 alone: passive data connections \
                     go to other ports and will not follow their control connection (xdpvs \
                     has no FTP helper); group 21 and the servers' passive port range in one \
                     persistent [[fwmark]] service (see config/example.toml)"
                ),
            );
        } else if svc.persistence.is_none() {
            self.warn(
                sp,
                format!(
                    "service \"{name}\" carries FTP (port 21) but is not persistent: a \
                     passive data connection may be scheduled to another real server than \
                     its control connection; add persistence"
                ),
            );
        }
        if svc.reals.iter().any(|r| r.forward == FwdMethod::Nat) {
            self.warn(
                sp,
                format!(
                    "service \"{name}\" carries FTP (port 21) through NAT: xdpvs does not \
                     rewrite PASV replies (no FTP helper), so the FTP servers must announce \
                     the VIP as their passive address (vsftpd pasv_address, ProFTPD \
                     MasqueradeAddress); EPSV replies carry only a port and work as they are"
                ),
            );
        }
    }

    fn scheduler(&mut self, sp: &str, svc: &ServiceConfig) {
        let name = svc.scheduler.as_str();
        if !SCHEDULER_NAMES.contains(&name) {
            self.err(
                &format!("{sp}.scheduler"),
                format!(
                    "unknown scheduler \"{name}\" (expected one of {})",
                    SCHEDULER_NAMES.join(", ")
                ),
            );
            return;
        }
        let p = svc.sched_params;
        if (p.fallback || p.hash_port) && name != "sh" && name != "mh" {
            self.err(
                &format!("{sp}.scheduler_flags"),
                format!("scheduler flags apply only to sh and mh, not to \"{name}\""),
            );
        }
        let default = SchedParams::default().mh_table_size;
        if name != "mh" {
            if p.mh_table_size != default {
                self.err(
                    &format!("{sp}.mh_table_size"),
                    format!("applies only to scheduler mh, not to \"{name}\""),
                );
            }
            return;
        }
        let n = p.mh_table_size;
        let path = format!("{sp}.mh_table_size");
        if n > MAX_MH_TABLE_SIZE || !is_prime(n) {
            self.err(
                &path,
                format!("mh_table_size {n} must be a prime number up to {MAX_MH_TABLE_SIZE}"),
            );
        } else if (n as usize) <= svc.reals.len() {
            self.err(
                &path,
                format!(
                    "mh_table_size {n} must be larger than the number of real servers ({})",
                    svc.reals.len()
                ),
            );
        }
    }

    fn reals(&mut self, sp: &str, svc: &ServiceConfig, vip4: bool, vip6: bool) {
        let d = &self.cfg.director;
        let svc_port = svc.default_real_port();
        let mut seen: HashMap<(IpAddr, Option<u16>), usize> =
            HashMap::with_capacity(svc.reals.len());
        for (j, r) in svc.reals.iter().enumerate() {
            let rp = || format!("{sp}.real[{j}]");
            if !is_unicast(r.addr) {
                self.err(
                    &format!("{}.addr", rp()),
                    format!("{} {NOT_UNICAST}", r.addr),
                );
            }
            if r.weight > MAX_WEIGHT {
                self.err(
                    &format!("{}.weight", rp()),
                    format!("weight {} exceeds the IPVS maximum {MAX_WEIGHT}", r.weight),
                );
            }
            let port = r.effective_port(svc);
            if let Some(first) = seen.insert((r.addr, port), j) {
                let shown = match (r.addr, port) {
                    (IpAddr::V4(a), Some(p)) => format!("{a}:{p}"),
                    (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
                    (a, None) => a.to_string(),
                };
                self.err(
                    &format!("{}.addr", rp()),
                    format!(
                        "real server {shown} is listed twice in this service (also real[{first}])"
                    ),
                );
            }
            let same_family_only = matches!(r.forward, FwdMethod::Dr | FwdMethod::Nat);
            let mismatch = if r.addr.is_ipv4() { vip6 } else { vip4 };
            if same_family_only && mismatch {
                self.err(
                    &format!("{}.addr", rp()),
                    format!(
                        "a {} real server must have the same address family as the service's VIPs \
                         ({} real server {}); only ipip and gue can cross families",
                        r.forward.name(),
                        family(r.addr),
                        r.addr
                    ),
                );
            }
            if r.forward != FwdMethod::Nat {
                if let Some(p) = r.port {
                    if Some(p) != svc_port {
                        let why = match svc_port {
                            Some(sp) => format!("service port {sp}, real port {p}"),
                            None => format!("real port {p}; omit `port` to keep the packet's port"),
                        };
                        // IPVS ignores the real port for dr/ipip/gue (the
                        // packet keeps its own port): accept with a warning.
                        self.warn(
                            &format!("{}.port", rp()),
                            format!(
                                "{} cannot change the destination port ({why}); the port is ignored, \
                                 packets keep their own destination port (only nat rewrites it)",
                                r.forward.name()
                            ),
                        );
                    }
                }
            }
            if r.l_threshold > 0 && r.u_threshold == 0 {
                self.err(
                    &format!("{}.l_threshold", rp()),
                    "l_threshold needs u_threshold (the upper connection limit)",
                );
            } else if r.u_threshold > 0 && r.l_threshold >= r.u_threshold {
                self.err(
                    &format!("{}.l_threshold", rp()),
                    format!(
                        "l_threshold ({}) must be below u_threshold ({})",
                        r.l_threshold, r.u_threshold
                    ),
                );
            }
            if matches!(r.forward, FwdMethod::Ipip | FwdMethod::Gue) {
                let missing = match r.addr {
                    IpAddr::V4(_) if d.tunnel_src4.is_none() => Some("tunnel_src4"),
                    IpAddr::V6(_) if d.tunnel_src6.is_none() => Some("tunnel_src6"),
                    _ => None,
                };
                if let Some(key) = missing {
                    self.err(
                        &format!("{}.forward", rp()),
                        format!(
                            "{} to an {} real server needs director.{key} (the outer source address)",
                            r.forward.name(),
                            family(r.addr)
                        ),
                    );
                }
            }
            if let Some(h) = &r.health {
                self.health_spec(&format!("{}.health", rp()), h);
            }
            let hpath = || {
                if r.health.is_some() {
                    format!("{}.health", rp())
                } else {
                    format!("{sp}.health")
                }
            };
            match r.health_check(svc) {
                Ok(Some(h)) if matches!(&h.probe, crate::service::health::HealthProbe::Exec { cmd } if cmd.is_empty()) => {
                    self.err(
                        &format!("{}.cmd", hpath()),
                        "an exec check needs `cmd` (the program and its arguments)",
                    )
                }
                Ok(Some(h)) if h.interval > 0 && h.timeout > h.interval => self.err(
                    &format!("{}.timeout", hpath()),
                    format!(
                        "health check timeout ({} s) must not exceed its interval ({} s)",
                        h.timeout, h.interval
                    ),
                ),
                Ok(_) => {}
                Err(reason) => self.err(&format!("{}.port", hpath()), reason),
            }
        }
    }

    /// The sorry server: reached as a real server is (same address, family,
    /// tunnel and port rules), and not one of the service's real servers.
    fn sorry(&mut self, sp: &str, svc: &ServiceConfig, vip4: bool, vip6: bool) {
        let Some(z) = &svc.sorry_server else {
            return;
        };
        let zp = format!("{sp}.sorry_server");
        if !is_unicast(z.addr) {
            self.err(&format!("{zp}.addr"), format!("{} {NOT_UNICAST}", z.addr));
        }
        let port = z.effective_port(svc);
        if let Some(j) = svc
            .reals
            .iter()
            .position(|r| r.addr == z.addr && r.effective_port(svc) == port)
        {
            self.err(
                &format!("{zp}.addr"),
                format!(
                    "the sorry server {} is also real[{j}] of this service; a sorry server \
                     takes connections only while no real server can",
                    z.addr
                ),
            );
        }
        let mismatch = if z.addr.is_ipv4() { vip6 } else { vip4 };
        if matches!(z.forward, FwdMethod::Dr | FwdMethod::Nat) && mismatch {
            self.err(
                &format!("{zp}.addr"),
                format!(
                    "a {} sorry server must have the same address family as the service's \
                     VIPs ({} sorry server {}); only ipip and gue can cross families",
                    z.forward.name(),
                    family(z.addr),
                    z.addr
                ),
            );
        }
        if z.forward != FwdMethod::Nat {
            if let Some(p) = z.port.filter(|&p| Some(p) != svc.default_real_port()) {
                self.warn(
                    &format!("{zp}.port"),
                    format!(
                        "{} cannot change the destination port (sorry server port {p}); the \
                         port is ignored, packets keep their own destination port (only nat \
                         rewrites it)",
                        z.forward.name()
                    ),
                );
            }
        }
        if matches!(z.forward, FwdMethod::Ipip | FwdMethod::Gue) {
            let d = &self.cfg.director;
            let missing = match z.addr {
                IpAddr::V4(_) if d.tunnel_src4.is_none() => Some("tunnel_src4"),
                IpAddr::V6(_) if d.tunnel_src6.is_none() => Some("tunnel_src6"),
                _ => None,
            };
            if let Some(key) = missing {
                self.err(
                    &format!("{zp}.forward"),
                    format!(
                        "{} to an {} sorry server needs director.{key} (the outer source address)",
                        z.forward.name(),
                        family(z.addr)
                    ),
                );
            }
        }
    }

    /// A program and its arguments, run without a shell. `find`: warn when
    /// the program is not found (a relative name in `PATH`, an absolute
    /// one on disk): it may be installed after the director starts.
    fn command(&mut self, path: &str, v: &[String], find: bool) {
        match v.first() {
            None => self.err(
                path,
                "must name a program (e.g. [\"/usr/local/bin/check\", \"{addr}\"])",
            ),
            Some(p) if p.is_empty() || p.contains('\0') => {
                self.err(&format!("{path}[0]"), "empty program name")
            }
            Some(p) => {
                if find && !program_exists(p) {
                    self.warn(
                        &format!("{path}[0]"),
                        format!(
                            "program \"{p}\" not found{} (it runs anyway when due, and fails \
                             until it is installed)",
                            if p.contains('/') { "" } else { " in PATH" }
                        ),
                    );
                }
            }
        }
        if v.iter().any(|a| a.contains('\0')) {
            self.err(path, "an argument contains a NUL byte");
        }
        if v.len() > 256 {
            self.err(path, "more than 256 arguments");
        }
    }

    fn announce(&mut self) {
        let a = &self.cfg.announce;
        for (key, v) in [("up", &a.up), ("down", &a.down)] {
            if let Some(v) = v {
                self.command(&format!("announce.{key}"), v, true);
            }
        }
        for (key, d, zero_ok) in [
            ("timeout", a.timeout, false),
            ("retry", a.retry, false),
            ("withdraw_delay", a.withdraw_delay, true),
        ] {
            if (d.is_zero() && !zero_ok) || d > MAX_ANNOUNCE_DURATION {
                let lo = if zero_ok { "0" } else { "1 ms" };
                self.err(
                    &format!("announce.{key}"),
                    format!(
                        "{} ms is out of range ({lo} to {} s)",
                        d.as_millis(),
                        MAX_ANNOUNCE_DURATION.as_secs()
                    ),
                );
            }
        }
    }

    /// `quorum`, `hysteresis`, `quorum_up`, `quorum_down` of a service.
    fn quorum(&mut self, sp: &str, svc: &ServiceConfig) {
        if svc.quorum == 0 {
            self.err(
                &format!("{sp}.quorum"),
                "quorum 0 is never lost (it is the least total weight of the live real \
                 servers, at least 1; default 1)",
            );
        } else if svc.hysteresis >= svc.quorum {
            self.warn(
                &format!("{sp}.hysteresis"),
                format!(
                    "hysteresis {} >= quorum {}: once reached, quorum is never lost",
                    svc.hysteresis, svc.quorum
                ),
            );
        }
        let total: u64 = svc.reals.iter().map(|r| u64::from(r.weight)).sum();
        if svc.quorum > 0
            && !svc.reals.is_empty()
            && total < u64::from(svc.quorum) + u64::from(svc.hysteresis)
        {
            self.warn(
                &format!("{sp}.quorum"),
                format!(
                    "the real servers' weights add up to {total}, less than quorum {} + \
                     hysteresis {}: the service never has quorum",
                    svc.quorum, svc.hysteresis
                ),
            );
        }
        for (key, v) in [
            ("quorum_up", &svc.quorum_up),
            ("quorum_down", &svc.quorum_down),
        ] {
            if let Some(v) = v {
                self.command(&format!("{sp}.{key}"), v, true);
            }
        }
    }

    fn health_spec(&mut self, hp: &str, h: &HealthSpec) {
        if h.port == Some(0) {
            self.err(&format!("{hp}.port"), "port 0 is not a port (use 1-65535)");
        }
        for (key, v) in [("interval", h.interval), ("timeout", h.timeout)] {
            if let Some(n) = v.filter(|&n| n == 0 || n > MAX_HEALTH_SECONDS) {
                self.err(
                    &format!("{hp}.{key}"),
                    format!("{n} is out of range (1-{MAX_HEALTH_SECONDS} seconds)"),
                );
            }
        }
        for (key, v) in [("rise", h.rise), ("fall", h.fall)] {
            if let Some(n) = v.filter(|&n| n == 0 || n > 100) {
                self.err(
                    &format!("{hp}.{key}"),
                    format!("{n} is out of range (1-100)"),
                );
            }
        }
        if let Some(s) = h.expect_status.filter(|s| !(100..=599).contains(s)) {
            self.err(
                &format!("{hp}.expect_status"),
                format!("{s} is not an HTTP status (100-599)"),
            );
        }
        if let Some(p) = &h.path {
            if !p.starts_with('/') || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.err(
                    &format!("{hp}.path"),
                    format!("bad HTTP path \"{p}\" (must start with '/', no spaces)"),
                );
            }
        }
        for (key, v) in [("send", &h.send), ("expect", &h.expect)] {
            if v.as_ref().is_some_and(|s| s.len() > 1024) {
                self.err(&format!("{hp}.{key}"), "payload longer than 1024 bytes");
            }
        }
        for (key, v) in [
            ("cmd", &h.cmd),
            ("notify_up", &h.notify_up),
            ("notify_down", &h.notify_down),
        ] {
            let Some(v) = v else { continue };
            self.command(&format!("{hp}.{key}"), v, false);
        }
        if h.cmd.is_some() && h.kind.is_some_and(|k| k != HealthKind::Exec) {
            let kind = h.kind.map_or("tcp", |k| k.name());
            self.err(
                &format!("{hp}.cmd"),
                format!("`cmd` applies only to type = \"exec\", not \"{kind}\""),
            );
        }
        if h.kind == Some(HealthKind::Exec) && h.port.is_some() {
            self.warn(
                &format!("{hp}.port"),
                "an exec check opens no connection; `port` only sets {port} and XDPVS_REAL_PORT",
            );
        }
        if let Some(kind) = h.kind {
            let http = h.path.is_some() || h.expect_status.is_some();
            let udp = h.send.is_some() || h.expect.is_some();
            let bad = match kind {
                HealthKind::Http if udp => Some(("send/expect", "udp")),
                HealthKind::Udp if http => Some(("path/expect_status", "http")),
                HealthKind::Tcp | HealthKind::None if http => Some(("path/expect_status", "http")),
                HealthKind::Tcp | HealthKind::None if udp => Some(("send/expect", "udp")),
                HealthKind::Exec if http => Some(("path/expect_status", "http")),
                HealthKind::Exec if udp => Some(("send/expect", "udp")),
                _ => None,
            };
            if let Some((keys, only)) = bad {
                let key = keys.split('/').find(|k| match *k {
                    "path" => h.path.is_some(),
                    "expect_status" => h.expect_status.is_some(),
                    "send" => h.send.is_some(),
                    _ => h.expect.is_some(),
                });
                self.err(
                    &format!("{hp}.{}", key.unwrap_or("type")),
                    format!(
                        "`{}` applies only to type = \"{only}\", not \"{}\"",
                        key.unwrap_or(keys),
                        kind.name()
                    ),
                );
            }
        }
    }

    fn neighbors(&mut self) {
        let mut seen: HashMap<IpAddr, usize> = HashMap::new();
        for (i, n) in self.cfg.neighbors.iter().enumerate() {
            let np = format!("neighbor[{i}]");
            if !is_unicast(n.addr) {
                self.err(&format!("{np}.addr"), format!("{} {NOT_UNICAST}", n.addr));
            } else if let Some(first) = seen.insert(n.addr, i) {
                self.err(
                    &format!("{np}.addr"),
                    format!("{} is already pinned by neighbor[{first}]", n.addr),
                );
            }
            if n.mac == [0; 6] || n.mac[0] & 1 == 1 {
                self.err(
                    &format!("{np}.mac"),
                    format!("{} is not a unicast MAC address", format_mac(&n.mac)),
                );
            }
            if !self.cfg.director.interfaces.contains(&n.interface) {
                self.err(
                    &format!("{np}.interface"),
                    format!(
                        "interface \"{}\" is not one of director.interfaces ({})",
                        n.interface,
                        self.cfg.director.interfaces.join(", ")
                    ),
                );
            }
        }
    }

    /// Address services whose port a used firewall-mark rule also covers
    /// never see a packet (marks are matched first): warn.
    fn shadowed(&mut self, marks_used: &HashMap<u32, bool>) {
        let mut rules: HashMap<(Proto, IpAddr), Vec<(u32, &crate::config::ports::PortSet)>> =
            HashMap::new();
        for g in &self.cfg.fwmarks {
            if marks_used.contains_key(&g.mark) {
                for r in &g.rules {
                    rules
                        .entry((r.proto, r.vip))
                        .or_default()
                        .push((g.mark, &r.ports));
                }
            }
        }
        if rules.is_empty() {
            return;
        }
        let mut found = Vec::new();
        for (i, svc) in self.cfg.services.iter().enumerate() {
            if let ServiceKey::Addr { proto, vip, port } = svc.key {
                let hit = rules
                    .get(&(proto, vip))
                    .and_then(|l| l.iter().find(|(_, p)| port != 0 && p.contains(port)));
                if let Some(&(mark, _)) = hit {
                    found.push((i, mark, svc.key));
                }
            }
        }
        for (i, mark, key) in found {
            self.warn(
                &format!("service[{i}].vip"),
                format!("{key} is shadowed by fwmark {mark}, which is matched first"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes() {
        assert!(is_prime(65537) && is_prime(2) && is_prime(251));
        assert!(!is_prime(65536) && !is_prime(1) && !is_prime(0) && !is_prime(255));
    }

    #[test]
    fn unicast() {
        for ok in ["198.18.0.1", "2001:db8::1"] {
            assert!(is_unicast(ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "0.0.0.0",
            "::",
            "127.0.0.1",
            "::1",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
        ] {
            assert!(!is_unicast(bad.parse().unwrap()), "{bad}");
        }
    }

    #[test]
    fn interface_names() {
        assert!(valid_ifname("eth0") && valid_ifname("veth-xdpvs.1"));
        for bad in ["", "a/b", "a b", "eth0:1", "0123456789abcdef", ".", ".."] {
            assert!(!valid_ifname(bad), "{bad}");
        }
    }
}
