//! TOML text -> typed [`Config`]: syntax, unknown keys, missing keys, types
//! and representable ranges. Whole-config rules live in `validate.rs`.
//!
//! Works on toml's spanned document tree, so every error knows its key path
//! and byte span, and the span of every key read is kept in the config's
//! [`Origin`] for the validator.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::config::error::{invalid, ConfigError, Diagnostic, Origin};
use crate::config::ports::PortSet;
use crate::config::schema::{
    parse_duration, parse_mac, Announce, Config, Director, FwmarkGroup, FwmarkRuleConfig,
    HealthKind, HealthSpec, NeighborPin, OnFailure, PersistenceConfig, RealConfig, ServiceConfig,
    SorryConfig, SyncConfig, SyncMode, XdpMode, ANNOUNCE_KEYS, DEFAULT_QUORUM, DEFAULT_SCHEDULER,
    DIRECTOR_KEYS, FWMARK_KEYS, HEALTH_KEYS, NEIGHBOR_KEYS, PERSISTENCE_KEYS, REAL_KEYS, RULE_KEYS,
    SERVICE_KEYS, SORRY_KEYS, SYNC_KEYS, TIMEOUT_KEYS, TOP_KEYS,
};
use crate::service::model::{FwdMethod, Proto, ServiceKey, Timeouts};
use crate::service::sched::SchedParams;

type Val<'i> = Spanned<DeValue<'i>>;

/// Scheduler flags as ipvsadm spells them (`-b`).
pub const SCHEDULER_FLAGS: &[&str] = &["sh-fallback", "sh-port", "mh-fallback", "mh-port"];

/// Parse `text` into a config, or every syntax/type problem found.
pub(crate) fn read(text: &str, file: &str) -> Result<Config, ConfigError> {
    let mut r = Reader {
        origin: Origin::new(file, text),
        diags: Vec::new(),
    };
    let doc = match DeTable::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let at = e.span().map_or(0, |s| s.start);
            let d = r
                .origin
                .diag_at(at, "", format!("TOML syntax error: {}", e.message()));
            return Err(invalid(vec![d]));
        }
    };
    let span = doc.span();
    let root = Spanned::new(span, DeValue::Table(doc.into_inner()));
    let mut cfg = r.config(&root);
    if r.diags.is_empty() {
        cfg.origin = r.origin;
        Ok(cfg)
    } else {
        Err(invalid(r.diags))
    }
}

/// A table being read: its key path and entries.
struct Tbl<'a, 'i> {
    path: String,
    span: Range<usize>,
    map: &'a DeTable<'i>,
}

impl Tbl<'_, '_> {
    fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }
}

fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Unsigned integer types a key may hold.
trait Unsigned: Sized {
    const MAX: i64;
    fn from_i64(n: i64) -> Option<Self>;
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl Unsigned for $t {
            const MAX: i64 = <$t>::MAX as i64;
            fn from_i64(n: i64) -> Option<Self> {
                <$t>::try_from(n).ok()
            }
        }
    )*};
}
unsigned!(u8, u16, u32);

impl Unsigned for usize {
    const MAX: i64 = u32::MAX as i64;
    fn from_i64(n: i64) -> Option<Self> {
        u32::try_from(n).ok().map(|v| v as usize)
    }
}

struct Reader {
    origin: Origin,
    diags: Vec<Diagnostic>,
}

impl Reader {
    fn err(&mut self, path: &str, span: Range<usize>, reason: impl Into<String>) {
        let d = self.origin.diag_at(span.start, path, reason);
        self.diags.push(d);
    }

    fn wrong_type(&mut self, path: &str, v: &Val<'_>, expected: &str) {
        let reason = format!("expected {expected}, found {}", type_name(v.get_ref()));
        self.err(path, v.span(), reason);
    }

    /// Open `v` as a table, reporting keys not in `allowed`.
    fn table<'a, 'i>(
        &mut self,
        path: String,
        v: &'a Val<'i>,
        allowed: &[&str],
    ) -> Option<Tbl<'a, 'i>> {
        self.origin.record(&path, v.span());
        let DeValue::Table(map) = v.get_ref() else {
            self.wrong_type(&path, v, "a table");
            return None;
        };
        for (k, _) in map.iter() {
            let name: &str = k.get_ref();
            if !allowed.contains(&name) {
                let reason = format!(
                    "unknown key `{name}` (expected one of {})",
                    allowed.join(", ")
                );
                self.err(&child(&path, name), k.span(), reason);
            }
        }
        Some(Tbl {
            path,
            span: v.span(),
            map,
        })
    }

    /// The value of `key`, recording its span.
    fn get<'a, 'i>(&mut self, t: &Tbl<'a, 'i>, key: &str) -> Option<(String, &'a Val<'i>)> {
        let v = t.map.get(key)?;
        let path = child(&t.path, key);
        self.origin.record(&path, v.span());
        Some((path, v))
    }

    fn missing(&mut self, t: &Tbl<'_, '_>, key: &str, why: &str) {
        let reason = format!("missing required key `{key}`{why}");
        self.err(&child(&t.path, key), t.span.clone(), reason);
    }

    fn str_val(&mut self, path: &str, v: &Val<'_>) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.wrong_type(path, v, "a string");
                None
            }
        }
    }

    fn uint_val<T: Unsigned>(&mut self, path: &str, v: &Val<'_>) -> Option<T> {
        let DeValue::Integer(i) = v.get_ref() else {
            self.wrong_type(path, v, "an integer");
            return None;
        };
        let Ok(n) = i64::from_str_radix(i.as_str(), i.radix()) else {
            self.err(path, v.span(), format!("integer {i} is too large"));
            return None;
        };
        if n < 0 {
            self.err(path, v.span(), format!("must not be negative, got {n}"));
            return None;
        }
        let out = T::from_i64(n);
        if out.is_none() {
            let reason = format!("{n} is too large (at most {})", T::MAX);
            self.err(path, v.span(), reason);
        }
        out
    }

    fn ip_val(&mut self, path: &str, v: &Val<'_>) -> Option<IpAddr> {
        let s = self.str_val(path, v)?;
        match s.parse::<IpAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(path, v.span(), format!("bad IP address \"{s}\""));
                None
            }
        }
    }

    fn str_opt(&mut self, t: &Tbl<'_, '_>, key: &str) -> Option<String> {
        let (path, v) = self.get(t, key)?;
        self.str_val(&path, v)
    }

    fn str_req(&mut self, t: &Tbl<'_, '_>, key: &str) -> Option<String> {
        if !t.has(key) {
            self.missing(t, key, "");
            return None;
        }
        self.str_opt(t, key)
    }

    fn uint_opt<T: Unsigned>(&mut self, t: &Tbl<'_, '_>, key: &str) -> Option<T> {
        let (path, v) = self.get(t, key)?;
        self.uint_val(&path, v)
    }

    fn bool_opt(&mut self, t: &Tbl<'_, '_>, key: &str) -> Option<bool> {
        let (path, v) = self.get(t, key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(&path, v, "a boolean (true or false)");
                None
            }
        }
    }

    fn ip_opt(&mut self, t: &Tbl<'_, '_>, key: &str) -> Option<IpAddr> {
        let (path, v) = self.get(t, key)?;
        self.ip_val(&path, v)
    }

    fn ip_req(&mut self, t: &Tbl<'_, '_>, key: &str) -> Option<IpAddr> {
        if !t.has(key) {
            self.missing(t, key, "");
            return None;
        }
        self.ip_opt(t, key)
    }

    /// A string key that must be one of `choices`; `what` names it in errors.
    fn choice<T: Copy>(
        &mut self,
        t: &Tbl<'_, '_>,
        key: &str,
        what: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let (path, v) = self.get(t, key)?;
        let s = self.str_val(&path, v)?;
        if let Some(&(_, c)) = choices.iter().find(|(n, _)| *n == s) {
            return Some(c);
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let reason = format!(
            "unknown {what} \"{s}\" (expected one of {})",
            names.join(", ")
        );
        self.err(&path, v.span(), reason);
        None
    }

    fn proto(&mut self, t: &Tbl<'_, '_>) -> Option<Proto> {
        self.choice(
            t,
            "proto",
            "protocol",
            &[("tcp", Proto::Tcp), ("udp", Proto::Udp)],
        )
    }

    /// An array of tables (`[[key]]` or `key = [{...}]`), with its elements' paths.
    fn array<'a, 'i>(
        &mut self,
        t: &Tbl<'a, 'i>,
        key: &str,
        what: &str,
    ) -> Vec<(String, &'a Val<'i>)> {
        let Some((path, v)) = self.get(t, key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(&path, v, what);
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let p = format!("{path}[{i}]");
                self.origin.record(&p, item.span());
                (p, item)
            })
            .collect()
    }

    fn config(&mut self, root: &Val<'_>) -> Config {
        let mut cfg = Config::default();
        let Some(top) = self.table(String::new(), root, TOP_KEYS) else {
            return cfg;
        };
        match self.get(&top, "director") {
            Some((path, v)) => {
                if let Some(t) = self.table(path, v, DIRECTOR_KEYS) {
                    cfg.director = self.director(&t);
                }
            }
            None => self.err(
                "director",
                0..0,
                "missing required table [director] (with `interfaces`)",
            ),
        }
        if let Some((path, v)) = self.get(&top, "timeouts") {
            if let Some(t) = self.table(path, v, TIMEOUT_KEYS) {
                cfg.timeouts = self.timeouts(&t);
            }
        }
        if let Some((path, v)) = self.get(&top, "announce") {
            if let Some(t) = self.table(path, v, ANNOUNCE_KEYS) {
                cfg.announce = self.announce(&t);
            }
        }
        for (path, v) in self.array(&top, "fwmark", "an array of tables [[fwmark]]") {
            if let Some(t) = self.table(path, v, FWMARK_KEYS) {
                if let Some(g) = self.fwmark(&t) {
                    cfg.fwmarks.push(g);
                }
            }
        }
        for (path, v) in self.array(&top, "service", "an array of tables [[service]]") {
            if let Some(t) = self.table(path, v, SERVICE_KEYS) {
                if let Some(s) = self.service(&t) {
                    cfg.services.push(s);
                }
            }
        }
        if let Some((path, v)) = self.get(&top, "sync") {
            if let Some(t) = self.table(path, v, SYNC_KEYS) {
                cfg.sync = Some(self.sync(&t));
            }
        }
        for (path, v) in self.array(&top, "neighbor", "an array of tables [[neighbor]]") {
            if let Some(t) = self.table(path, v, NEIGHBOR_KEYS) {
                if let Some(n) = self.neighbor(&t) {
                    cfg.neighbors.push(n);
                }
            }
        }
        cfg
    }

    fn director(&mut self, t: &Tbl<'_, '_>) -> Director {
        let mut d = Director::default();
        match self.get(t, "interfaces") {
            Some((path, v)) => match v.get_ref() {
                DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let p = format!("{path}[{i}]");
                        self.origin.record(&p, item.span());
                        if let Some(s) = self.str_val(&p, item) {
                            d.interfaces.push(s);
                        }
                    }
                }
                _ => self.wrong_type(&path, v, "an array of interface names"),
            },
            None => self.missing(t, "interfaces", " (the data-plane interfaces)"),
        }
        if let Some(m) = self.choice(
            t,
            "xdp_mode",
            "xdp_mode",
            &[("native", XdpMode::Native), ("generic", XdpMode::Generic)],
        ) {
            d.xdp_mode = m;
        }
        if let Some((path, v)) = self.get(t, "cores") {
            match v.get_ref() {
                DeValue::Array(items) => {
                    let mut cores = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        let p = format!("{path}[{i}]");
                        self.origin.record(&p, item.span());
                        if let Some(c) = self.uint_val::<usize>(&p, item) {
                            cores.push(c);
                        }
                    }
                    d.cores = Some(cores);
                }
                _ => self.wrong_type(&path, v, "an array of core numbers"),
            }
        }
        if let Some(s) = self.str_opt(t, "control_socket") {
            d.control_socket = PathBuf::from(s);
        }
        if let Some((path, v)) = self.get(t, "metrics") {
            if let Some(s) = self.str_val(&path, v) {
                if s == "off" {
                    d.metrics = None;
                } else {
                    match s.parse::<SocketAddr>() {
                        Ok(a) => d.metrics = Some(a),
                        Err(_) => self.err(
                            &path,
                            v.span(),
                            format!(
                                "bad listen address \"{s}\" (expected \"ip:port\", \
                                 \"[ipv6]:port\" or \"off\")"
                            ),
                        ),
                    }
                }
            }
        }
        if let Some(n) = self.uint_opt(t, "conn_capacity") {
            d.conn_capacity = n;
        }
        if let Some(n) = self.uint_opt(t, "template_capacity") {
            d.template_capacity = n;
        }
        if let Some(b) = self.bool_opt(t, "hugepages") {
            d.hugepages = b;
        }
        if let Some(b) = self.bool_opt(t, "prefault") {
            d.prefault = b;
        }
        if let Some(n) = self.uint_opt(t, "busy_poll_us") {
            d.busy_poll_us = n;
        }
        if let Some((path, v)) = self.get(t, "tunnel_src4") {
            if let Some(a) = self.ip_val(&path, v) {
                match a {
                    IpAddr::V4(a) => d.tunnel_src4 = Some(a),
                    IpAddr::V6(_) => self.err(
                        &path,
                        v.span(),
                        format!("expected an IPv4 address, got {a}"),
                    ),
                }
            }
        }
        if let Some((path, v)) = self.get(t, "tunnel_src6") {
            if let Some(a) = self.ip_val(&path, v) {
                match a {
                    IpAddr::V6(a) => d.tunnel_src6 = Some(a),
                    IpAddr::V4(_) => self.err(
                        &path,
                        v.span(),
                        format!("expected an IPv6 address, got {a}"),
                    ),
                }
            }
        }
        if let Some(p) = self.uint_opt(t, "gue_port") {
            d.gue_port = p;
        }
        if let Some(s) = self.str_opt(t, "state_file") {
            d.state_file = Some(PathBuf::from(s));
        }
        if let Some(s) = self.str_opt(t, "log_level") {
            d.log_level = s;
        }
        if let Some(b) = self.bool_opt(t, "expire_nodest_conn") {
            d.expire_nodest_conn = b;
        }
        if let Some(b) = self.bool_opt(t, "expire_quiescent_template") {
            d.expire_quiescent_template = b;
        }
        if let Some(n) = self.uint_opt(t, "conn_reuse_mode") {
            d.conn_reuse_mode = n;
        }
        if let Some(b) = self.bool_opt(t, "sloppy_tcp") {
            d.sloppy_tcp = b;
        }
        if let Some(b) = self.bool_opt(t, "sloppy_udp") {
            d.sloppy_udp = b;
        }
        if let Some(b) = self.bool_opt(t, "fast_path") {
            d.fast_path = b;
        }
        if let Some(n) = self.uint_opt(t, "fast_path_capacity") {
            d.fast_path_capacity = n;
        }
        if let Some(n) = self.uint_opt(t, "shard_rt_priority") {
            d.shard_rt_priority = n;
        }
        d
    }

    fn sync(&mut self, t: &Tbl<'_, '_>) -> SyncConfig {
        let mut s = SyncConfig::default();
        if let Some(m) = self.choice(
            t,
            "mode",
            "sync mode",
            &[
                ("master", SyncMode::Master),
                ("backup", SyncMode::Backup),
                ("active-active", SyncMode::ActiveActive),
            ],
        ) {
            s.mode = m;
        }
        match self.str_opt(t, "interface") {
            Some(i) => s.interface = i,
            None => self.missing(t, "interface", " (the link sync datagrams use)"),
        }
        if let Some((path, v)) = self.get(t, "group") {
            s.group = self.ip_val(&path, v);
        }
        if let Some((path, v)) = self.get(t, "peers") {
            match v.get_ref() {
                DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let p = format!("{path}[{i}]");
                        self.origin.record(&p, item.span());
                        if let Some(a) = self.ip_val(&p, item) {
                            s.peers.push(a);
                        }
                    }
                }
                _ => self.wrong_type(&path, v, "an array of peer addresses"),
            }
        }
        if let Some(n) = self.uint_opt(t, "port") {
            s.port = n;
        }
        if let Some(n) = self.uint_opt(t, "syncid") {
            s.syncid = n;
        }
        if let Some(p) = self.str_opt(t, "auth_key") {
            s.auth_key = Some(PathBuf::from(p));
        }
        if let Some(n) = self.uint_opt(t, "ttl") {
            s.ttl = n;
        }
        if let Some(n) = self.uint_opt(t, "sync_period") {
            s.sync_period = n;
        }
        if let Some(n) = self.uint_opt(t, "resync_wait") {
            s.resync_wait = n;
        }
        s
    }

    fn announce(&mut self, t: &Tbl<'_, '_>) -> Announce {
        let mut a = Announce {
            up: self.str_list_opt(t, "up"),
            down: self.str_list_opt(t, "down"),
            ..Announce::default()
        };
        if let Some(d) = self.duration_opt(t, "timeout") {
            a.timeout = d;
        }
        if let Some(d) = self.duration_opt(t, "retry") {
            a.retry = d;
        }
        if let Some(d) = self.duration_opt(t, "withdraw_delay") {
            a.withdraw_delay = d;
        }
        a
    }

    /// A duration: an integer of seconds, or a string `"500ms"`, `"10s"`,
    /// `"2m"`.
    fn duration_opt(&mut self, t: &Tbl<'_, '_>, key: &str) -> Option<Duration> {
        let (path, v) = self.get(t, key)?;
        match v.get_ref() {
            DeValue::Integer(_) => self
                .uint_val::<u32>(&path, v)
                .map(|n| Duration::from_secs(u64::from(n))),
            DeValue::String(s) => {
                let d = parse_duration(s);
                if d.is_none() {
                    let reason = format!(
                        "bad duration \"{s}\" (expected seconds, or a string such as \"500ms\", \"10s\", \"2m\")"
                    );
                    self.err(&path, v.span(), reason);
                }
                d
            }
            _ => {
                self.wrong_type(&path, v, "a duration (seconds, or e.g. \"500ms\")");
                None
            }
        }
    }

    fn timeouts(&mut self, t: &Tbl<'_, '_>) -> Timeouts {
        let mut out = Timeouts::default();
        if let Some(n) = self.uint_opt(t, "tcp") {
            out.tcp = n;
        }
        if let Some(n) = self.uint_opt(t, "tcp_fin") {
            out.tcp_fin = n;
        }
        if let Some(n) = self.uint_opt(t, "udp") {
            out.udp = n;
        }
        out
    }

    fn fwmark(&mut self, t: &Tbl<'_, '_>) -> Option<FwmarkGroup> {
        let mark = if t.has("mark") {
            self.uint_opt::<u32>(t, "mark")
        } else {
            self.missing(t, "mark", "");
            None
        };
        if !t.has("rules") {
            self.missing(t, "rules", " (a list of { vip, proto, ports })");
        }
        let mut rules = Vec::new();
        for (path, v) in self.array(t, "rules", "an array of { vip, proto, ports } tables") {
            let Some(rt) = self.table(path, v, RULE_KEYS) else {
                continue;
            };
            let vip = self.ip_req(&rt, "vip");
            let proto = if rt.has("proto") {
                self.proto(&rt)
            } else {
                self.missing(&rt, "proto", "");
                None
            };
            let ports = match self.get(&rt, "ports") {
                Some((p, v)) => self.port_set(&p, v),
                None => {
                    self.missing(&rt, "ports", " (e.g. \"80,443,8000-8100\")");
                    None
                }
            };
            if let (Some(vip), Some(proto), Some(ports)) = (vip, proto, ports) {
                rules.push(FwmarkRuleConfig { vip, proto, ports });
            }
        }
        Some(FwmarkGroup { mark: mark?, rules })
    }

    fn port_set(&mut self, path: &str, v: &Val<'_>) -> Option<PortSet> {
        match v.get_ref() {
            DeValue::String(s) => match PortSet::parse(s) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.err(path, v.span(), e);
                    None
                }
            },
            DeValue::Integer(_) => {
                let p: u16 = self.uint_val(path, v)?;
                if p == 0 {
                    self.err(path, v.span(), "port 0 is not a port (use 1-65535)");
                    return None;
                }
                Some(PortSet(vec![(p, p)]))
            }
            _ => {
                self.wrong_type(path, v, "a port list string such as \"80,443,8000-8100\"");
                None
            }
        }
    }

    fn service(&mut self, t: &Tbl<'_, '_>) -> Option<ServiceConfig> {
        let name = self.str_req(t, "name");
        let addr_keys: Vec<&str> = ["proto", "vip", "port"]
            .into_iter()
            .filter(|k| t.has(k))
            .collect();
        let key = if t.has("fwmark") {
            if let Some(first) = addr_keys.first() {
                let (path, v) = self.get(t, first)?;
                self.err(
                    &path,
                    v.span(),
                    "a service has either `fwmark` or `proto` + `vip` + `port`, not both",
                );
                None
            } else {
                self.uint_opt::<u32>(t, "fwmark").map(ServiceKey::Fwmark)
            }
        } else if addr_keys.is_empty() {
            let reason = "missing the service address: `fwmark`, or `proto` + `vip` + `port`";
            self.err(&t.path, t.span.clone(), reason);
            None
        } else {
            for k in ["proto", "vip", "port"] {
                if !t.has(k) {
                    self.missing(
                        t,
                        k,
                        " (an address service needs `proto`, `vip` and `port`; \
                         port 0 = all ports)",
                    );
                }
            }
            let proto = self.proto(t);
            let vip = self.ip_opt(t, "vip");
            let port = self.uint_opt::<u16>(t, "port");
            match (proto, vip, port) {
                (Some(proto), Some(vip), Some(port)) => Some(ServiceKey::Addr { proto, vip, port }),
                _ => None,
            }
        };
        let scheduler = self
            .str_opt(t, "scheduler")
            .unwrap_or_else(|| DEFAULT_SCHEDULER.to_string());
        let mut sched_params = SchedParams::default();
        if let Some((path, v)) = self.get(t, "scheduler_flags") {
            match v.get_ref() {
                DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let p = format!("{path}[{i}]");
                        self.origin.record(&p, item.span());
                        let Some(flag) = self.str_val(&p, item) else {
                            continue;
                        };
                        self.sched_flag(&p, item.span(), &flag, &scheduler, &mut sched_params);
                    }
                }
                _ => self.wrong_type(&path, v, "an array of flags such as [\"sh-port\"]"),
            }
        }
        if let Some(n) = self.uint_opt(t, "mh_table_size") {
            sched_params.mh_table_size = n;
        }
        let persistence = match self.get(t, "persistence") {
            Some((path, v)) => self
                .table(path, v, PERSISTENCE_KEYS)
                .map(|pt| self.persistence(&pt)),
            None => None,
        };
        let expire_nodest_conn = self.bool_opt(t, "expire_nodest_conn");
        let expire_quiescent_template = self.bool_opt(t, "expire_quiescent_template");
        let health = match self.get(t, "health") {
            Some((path, v)) => self.health(path, v),
            None => None,
        };
        let sorry_server = match self.get(t, "sorry_server") {
            Some((path, v)) => self
                .table(path, v, SORRY_KEYS)
                .and_then(|st| self.sorry(&st)),
            None => None,
        };
        let quorum = self.uint_opt(t, "quorum").unwrap_or(DEFAULT_QUORUM);
        let hysteresis = self.uint_opt(t, "hysteresis").unwrap_or(0);
        let quorum_up = self.str_list_opt(t, "quorum_up");
        let quorum_down = self.str_list_opt(t, "quorum_down");
        let mut reals = Vec::new();
        for (path, v) in self.array(t, "real", "an array of tables [[service.real]]") {
            if let Some(rt) = self.table(path, v, REAL_KEYS) {
                if let Some(r) = self.real(&rt) {
                    reals.push(r);
                }
            }
        }
        Some(ServiceConfig {
            name: name?,
            key: key?,
            scheduler,
            sched_params,
            persistence,
            expire_nodest_conn,
            expire_quiescent_template,
            health,
            sorry_server,
            quorum,
            hysteresis,
            quorum_up,
            quorum_down,
            reals,
        })
    }

    fn forward(&mut self, t: &Tbl<'_, '_>) -> Option<FwdMethod> {
        self.choice(
            t,
            "forward",
            "forward method",
            &[
                ("dr", FwdMethod::Dr),
                ("nat", FwdMethod::Nat),
                ("ipip", FwdMethod::Ipip),
                ("gue", FwdMethod::Gue),
            ],
        )
    }

    fn sorry(&mut self, t: &Tbl<'_, '_>) -> Option<SorryConfig> {
        let addr = self.ip_req(t, "addr");
        let port = self.uint_opt::<u16>(t, "port").filter(|&p| p != 0);
        let forward = self.forward(t).unwrap_or(FwdMethod::Dr);
        Some(SorryConfig {
            addr: addr?,
            port,
            forward,
        })
    }

    fn sched_flag(
        &mut self,
        path: &str,
        span: Range<usize>,
        flag: &str,
        scheduler: &str,
        params: &mut SchedParams,
    ) {
        let Some((sched, what)) = flag
            .split_once('-')
            .filter(|_| SCHEDULER_FLAGS.contains(&flag))
        else {
            let reason = format!(
                "unknown scheduler flag \"{flag}\" (expected one of {})",
                SCHEDULER_FLAGS.join(", ")
            );
            self.err(path, span, reason);
            return;
        };
        if sched != scheduler {
            let reason =
                format!("flag \"{flag}\" is for scheduler {sched}, not for \"{scheduler}\"");
            self.err(path, span, reason);
            return;
        }
        match what {
            "fallback" => params.fallback = true,
            _ => params.hash_port = true,
        }
    }

    fn persistence(&mut self, t: &Tbl<'_, '_>) -> PersistenceConfig {
        let mut p = PersistenceConfig::default();
        if let Some(n) = self.uint_opt(t, "timeout") {
            p.timeout = n;
        }
        if let Some((path, v)) = self.get(t, "netmask") {
            if let Some(s) = self.str_val(&path, v) {
                match s.parse::<Ipv4Addr>() {
                    Ok(m) => p.netmask = m,
                    Err(_) => self.err(
                        &path,
                        v.span(),
                        format!("bad netmask \"{s}\" (expected e.g. \"255.255.255.0\")"),
                    ),
                }
            }
        }
        if let Some(n) = self.uint_opt(t, "prefix6") {
            p.prefix6 = n;
        }
        p
    }

    /// An array of strings (a command and its arguments).
    fn str_list_opt(&mut self, t: &Tbl<'_, '_>, key: &str) -> Option<Vec<String>> {
        let (path, v) = self.get(t, key)?;
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(
                &path,
                v,
                "an array of strings, e.g. [\"/path/to/program\", \"arg\"]",
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            self.origin.record(&p, item.span());
            out.push(self.str_val(&p, item)?);
        }
        Some(out)
    }

    fn health(&mut self, path: String, v: &Val<'_>) -> Option<HealthSpec> {
        let t = self.table(path, v, HEALTH_KEYS)?;
        Some(HealthSpec {
            kind: self.choice(
                &t,
                "type",
                "health check type",
                &[
                    ("tcp", HealthKind::Tcp),
                    ("http", HealthKind::Http),
                    ("udp", HealthKind::Udp),
                    ("exec", HealthKind::Exec),
                    ("none", HealthKind::None),
                ],
            ),
            port: self.uint_opt(&t, "port"),
            interval: self.uint_opt(&t, "interval"),
            timeout: self.uint_opt(&t, "timeout"),
            rise: self.uint_opt(&t, "rise"),
            fall: self.uint_opt(&t, "fall"),
            path: self.str_opt(&t, "path"),
            expect_status: self.uint_opt(&t, "expect_status"),
            send: self.str_opt(&t, "send"),
            expect: self.str_opt(&t, "expect"),
            cmd: self.str_list_opt(&t, "cmd"),
            alpha: self.bool_opt(&t, "alpha"),
            omega: self.bool_opt(&t, "omega"),
            notify_up: self.str_list_opt(&t, "notify_up"),
            notify_down: self.str_list_opt(&t, "notify_down"),
            on_failure: self.choice(
                &t,
                "on_failure",
                "on_failure action",
                &[
                    ("quiesce", OnFailure::Quiesce),
                    ("remove", OnFailure::Remove),
                ],
            ),
        })
    }

    fn real(&mut self, t: &Tbl<'_, '_>) -> Option<RealConfig> {
        let addr = self.ip_req(t, "addr");
        let mut r = RealConfig::new(addr.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), None);
        r.port = self.uint_opt::<u16>(t, "port").filter(|&p| p != 0);
        if let Some(w) = self.uint_opt(t, "weight") {
            r.weight = w;
        }
        if let Some(f) = self.forward(t) {
            r.forward = f;
        }
        if let Some(n) = self.uint_opt(t, "u_threshold") {
            r.u_threshold = n;
        }
        if let Some(n) = self.uint_opt(t, "l_threshold") {
            r.l_threshold = n;
        }
        if let Some((path, v)) = self.get(t, "health") {
            r.health = self.health(path, v);
        }
        addr.map(|_| r)
    }

    fn neighbor(&mut self, t: &Tbl<'_, '_>) -> Option<NeighborPin> {
        let addr = self.ip_req(t, "addr");
        let mac = if t.has("mac") {
            let (path, v) = self.get(t, "mac")?;
            let s = self.str_val(&path, v)?;
            let m = parse_mac(&s);
            if m.is_none() {
                let reason =
                    format!("bad MAC address \"{s}\" (expected e.g. \"02:00:c6:12:01:0b\")");
                self.err(&path, v.span(), reason);
            }
            m
        } else {
            self.missing(t, "mac", "");
            None
        };
        let interface = self.str_req(t, "interface");
        Some(NeighborPin {
            addr: addr?,
            mac: mac?,
            interface: interface?,
        })
    }
}
