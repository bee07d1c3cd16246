//! `xdpvs import-ipvsadm`: `ipvsadm -S` / `ipvsadm -Sn` output (the rules
//! `ipvsadm -R` reads) -> an xdpvs [`Config`], so an LVS director migrates
//! in one step.
//!
//! Firewall-mark services: ipvsadm only knows the mark number; the VIPs,
//! protocols and ports that carry it are iptables MARK rules in the mangle
//! table. Those come from `iptables-save` / `ip6tables-save` output (or
//! `iptables -t mangle -A PREROUTING ...` command lines) and become
//! `[[fwmark]]` groups. A fwmark service whose rules are missing is an error:
//! the import never writes a config that silently loses traffic.
//!
//! Every problem names the input file and line. Options xdpvs cannot honour
//! are errors (with the reason), except the few that change nothing about
//! which real server gets a packet, which are warnings. The result is
//! validated and built like `xdpvs check` does, and the TOML is parsed back
//! and compared, so what is written is what was meant.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::build::build_snapshot;
use crate::config::ports::PortSet;
use crate::config::schema::{
    netmask_prefix, Config, Director, FwmarkGroup, FwmarkRuleConfig, PersistenceConfig, RealConfig,
    ServiceConfig, DEFAULT_GUE_PORT, DEFAULT_PERSISTENCE_TIMEOUT, DEFAULT_SCHEDULER, MAX_TIMEOUT,
    MAX_WEIGHT,
};
use crate::service::model::{FwdMethod, Proto, ServiceKey, Timeouts};
use crate::service::sched::{SchedParams, SCHEDULER_NAMES};

/// One input text and the name problems are reported by.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub name: &'a str,
    pub text: &'a str,
}

/// What the ipvsadm rules cannot say: the `[director]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportOptions {
    /// `director.interfaces`; empty means `["eth0"]`.
    pub interfaces: Vec<String>,
    /// Outer source of IPv4 IPIP/GUE packets (IPVS took the route's source).
    pub tunnel_src4: Option<Ipv4Addr>,
    /// Outer source of IPv6 IPIP/GUE packets.
    pub tunnel_src6: Option<Ipv6Addr>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            interfaces: vec!["eth0".to_string()],
            tunnel_src4: None,
            tunnel_src6: None,
        }
    }
}

/// A problem in an input: `file:line: reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// 1-based; `None` for problems of the whole input or of the options.
    pub line: Option<usize>,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file, l, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

/// Why an import failed: every problem found, in input order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportError(pub Vec<Problem>);

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ImportError {}

/// A successful import.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The validated config (it builds a snapshot).
    pub config: Config,
    /// The config as TOML, with a header naming the sources.
    pub toml: String,
    /// Harmless differences and ignored input, for stderr.
    pub warnings: Vec<Problem>,
}

/// Import `ipvsadm` rules (`ipvsadm -S`/`-Sn`) and the iptables MARK rules
/// of its firewall-mark services.
pub fn import(
    ipvsadm: Input<'_>,
    iptables: &[Input<'_>],
    opts: &ImportOptions,
) -> Result<Imported, ImportError> {
    let mut st = State::new(ipvsadm.name);
    for (n, text) in logical_lines(ipvsadm.text) {
        if let Err(reason) = st.line(n, &text) {
            st.errors.push(st.problem(n, reason));
        }
    }
    let mut marks = MarkRules::default();
    for inp in iptables {
        marks.read(*inp);
    }
    let State {
        file,
        services,
        timeouts,
        failed: _,
        mut errors,
        mut warnings,
    } = st;
    warnings.append(&mut marks.warnings);

    let mut b = Builder {
        file: file.to_string(),
        opts,
        iptables,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let out = b.config(&services, timeouts, &marks.rules);
    errors.append(&mut b.errors);
    warnings.append(&mut b.warnings);
    let order: Vec<&str> = std::iter::once(ipvsadm.name)
        .chain(iptables.iter().map(|i| i.name))
        .collect();
    sort_problems(&mut errors, &order);
    sort_problems(&mut warnings, &order);
    if !errors.is_empty() {
        return Err(ImportError(errors));
    }
    let (config, locs) = out;

    // The same checks as `xdpvs check`, reported at the input lines.
    match config.validate() {
        Ok(w) => warnings.extend(w.iter().map(|d| locs.place(&d.key, &d.reason))),
        Err(e) => {
            let diags = e.diagnostics();
            if diags.is_empty() {
                return Err(ImportError(vec![locs.place("", &e.to_string())]));
            }
            return Err(ImportError(
                diags
                    .iter()
                    .map(|d| locs.place(&d.key, &d.reason))
                    .collect(),
            ));
        }
    }
    if let Err(e) = build_snapshot(&config, None) {
        return Err(ImportError(vec![Problem {
            file: file.to_string(),
            line: None,
            reason: format!("the imported config does not build: {e}"),
        }]));
    }

    let toml = format!(
        "{}{}",
        header(ipvsadm.name, iptables, &warnings),
        config.to_toml()
    );
    // What is written must read back as exactly what was meant.
    match Config::parse(&toml, "<imported config>") {
        Ok(back) if back == config => {}
        Ok(_) => {
            return Err(ImportError(vec![Problem {
                file: file.to_string(),
                line: None,
                reason: "internal error: the written config does not read back the same"
                    .to_string(),
            }]))
        }
        Err(e) => {
            return Err(ImportError(vec![Problem {
                file: file.to_string(),
                line: None,
                reason: format!("internal error: the written config does not parse: {e}"),
            }]))
        }
    }
    Ok(Imported {
        config,
        toml,
        warnings,
    })
}

/// In input order: by file (as given), then line; problems without a line
/// last within their file.
pub(crate) fn sort_problems(list: &mut [Problem], order: &[&str]) {
    list.sort_by_key(|p| {
        let file = order
            .iter()
            .position(|f| *f == p.file)
            .unwrap_or(order.len());
        (file, p.line.unwrap_or(usize::MAX))
    });
}

pub(crate) fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn header(ipvsadm: &str, iptables: &[Input<'_>], warnings: &[Problem]) -> String {
    let mut h = String::new();
    h.push_str(&format!(
        "# Imported by `xdpvs import-ipvsadm` from the ipvsadm rules in {}\n",
        one_line(ipvsadm)
    ));
    for i in iptables {
        h.push_str(&format!(
            "# with the firewall-mark rules in {}\n",
            one_line(i.name)
        ));
    }
    for w in warnings {
        h.push_str(&format!("# warning: {}\n", one_line(&w.to_string())));
    }
    h.push('\n');
    h
}

/// Physical lines joined at a trailing backslash; the number is the first
/// line's (1-based).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (n, mut acc) = cur.take().unwrap_or((i + 1, String::new()));
        match raw.trim_end().strip_suffix('\\') {
            Some(part) => {
                acc.push_str(part);
                acc.push(' ');
                cur = Some((n, acc));
            }
            None => {
                acc.push_str(raw);
                out.push((n, acc));
            }
        }
    }
    if let Some(last) = cur {
        out.push(last);
    }
    out
}

/// Split a line into words: whitespace separates, '…' and "…" quote, a
/// backslash escapes the next character, `#` at a word start ends the line.
fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            } else if c == '\\' && q == '"' {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            '"' | '\'' => {
                quote = Some(c);
                in_word = true;
            }
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    in_word = true;
                }
            }
            '#' if !in_word => break,
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".to_string());
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// ipvsadm options

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum O {
    AddSvc,
    EditSvc,
    DelSvc,
    Clear,
    AddDest,
    EditDest,
    DelDest,
    Set,
    Tcp,
    Udp,
    Sctp,
    Fwmark,
    Ipv6,
    Numeric,
    Sched,
    Persist,
    Netmask,
    SchedFlags,
    Pe,
    Ops,
    Real,
    Gate,
    Masq,
    Ipip,
    Weight,
    UThresh,
    LThresh,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
    Daemon,
    DaemonOpt,
    NotRule,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arity {
    No,
    Req,
    /// `-p [timeout]`: the next word if it is a number.
    Opt,
    /// `--set tcp tcpfin udp`.
    Three,
}

/// (short, long, option, arguments), as ipvsadm 1.31 spells them.
const OPTIONS: &[(char, &str, O, Arity)] = &[
    ('A', "add-service", O::AddSvc, Arity::No),
    ('E', "edit-service", O::EditSvc, Arity::No),
    ('D', "delete-service", O::DelSvc, Arity::No),
    ('C', "clear", O::Clear, Arity::No),
    ('a', "add-server", O::AddDest, Arity::No),
    ('e', "edit-server", O::EditDest, Arity::No),
    ('d', "delete-server", O::DelDest, Arity::No),
    ('\0', "set", O::Set, Arity::Three),
    ('t', "tcp-service", O::Tcp, Arity::Req),
    ('u', "udp-service", O::Udp, Arity::Req),
    ('\0', "sctp-service", O::Sctp, Arity::Req),
    ('f', "fwmark-service", O::Fwmark, Arity::Req),
    ('6', "ipv6", O::Ipv6, Arity::No),
    ('n', "numeric", O::Numeric, Arity::No),
    ('s', "scheduler", O::Sched, Arity::Req),
    ('p', "persistent", O::Persist, Arity::Opt),
    ('M', "netmask", O::Netmask, Arity::Req),
    ('b', "sched-flags", O::SchedFlags, Arity::Req),
    ('\0', "pe", O::Pe, Arity::Req),
    ('o', "ops", O::Ops, Arity::No),
    ('r', "real-server", O::Real, Arity::Req),
    ('g', "gatewaying", O::Gate, Arity::No),
    ('m', "masquerading", O::Masq, Arity::No),
    ('i', "ipip", O::Ipip, Arity::No),
    ('w', "weight", O::Weight, Arity::Req),
    ('x', "u-threshold", O::UThresh, Arity::Req),
    ('y', "l-threshold", O::LThresh, Arity::Req),
    ('\0', "tun-type", O::TunType, Arity::Req),
    ('\0', "tun-port", O::TunPort, Arity::Req),
    ('\0', "tun-nocsum", O::TunNocsum, Arity::No),
    ('\0', "tun-csum", O::TunCsum, Arity::No),
    ('\0', "tun-remcsum", O::TunRemcsum, Arity::No),
    ('\0', "start-daemon", O::Daemon, Arity::Req),
    ('\0', "stop-daemon", O::Daemon, Arity::Req),
    ('\0', "mcast-interface", O::DaemonOpt, Arity::Req),
    ('\0', "syncid", O::DaemonOpt, Arity::Req),
    ('\0', "mcast-group", O::DaemonOpt, Arity::Req),
    ('\0', "mcast-port", O::DaemonOpt, Arity::Req),
    ('\0', "mcast-ttl", O::DaemonOpt, Arity::Req),
    ('\0', "sync-maxlen", O::DaemonOpt, Arity::Req),
    ('L', "list", O::NotRule, Arity::No),
    ('l', "list", O::NotRule, Arity::No),
    ('Z', "zero", O::NotRule, Arity::No),
    ('R', "restore", O::NotRule, Arity::No),
    ('S', "save", O::NotRule, Arity::No),
    ('h', "help", O::NotRule, Arity::No),
    ('v', "version", O::NotRule, Arity::No),
    ('c', "connection", O::NotRule, Arity::No),
];

#[derive(Clone, Debug)]
struct Item {
    opt: O,
    /// As written, for messages: `-w` or `--weight`.
    shown: String,
    args: Vec<String>,
}

impl Item {
    fn arg(&self) -> Option<&str> {
        self.args.first().map(String::as_str)
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Words -> options with their arguments (short options may be clustered,
/// `-At`, and take an attached argument, `-w2`; long ones `--weight=2`).
fn parse_items(words: &[String]) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    let mut i = 0;
    while let Some(w) = words.get(i) {
        i += 1;
        if let Some(long) = w.strip_prefix("--") {
            let (name, attached) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let Some(&(_, lname, opt, arity)) = OPTIONS.iter().find(|o| o.1 == name) else {
                return Err(format!("unknown option `--{name}`"));
            };
            let shown = format!("--{lname}");
            let args = take_args(words, &mut i, arity, attached, &shown)?;
            items.push(Item { opt, shown, args });
        } else if let Some(cluster) = w.strip_prefix('-').filter(|c| !c.is_empty()) {
            let mut rest = cluster;
            while let Some(c) = rest.chars().next() {
                rest = rest.get(c.len_utf8()..).unwrap_or("");
                let Some(&(_, _, opt, arity)) = OPTIONS.iter().find(|o| o.0 == c && c != '\0')
                else {
                    return Err(format!("unknown option `-{c}`"));
                };
                let shown = format!("-{c}");
                let attached = match arity {
                    Arity::No | Arity::Three => None,
                    Arity::Req | Arity::Opt if rest.is_empty() => None,
                    Arity::Req | Arity::Opt => Some(std::mem::take(&mut rest).to_string()),
                };
                let args = take_args(words, &mut i, arity, attached, &shown)?;
                items.push(Item { opt, shown, args });
            }
        } else if w == "ops" {
            // Old ipvsadm -S wrote one-packet scheduling as a bare `ops`.
            items.push(Item {
                opt: O::Ops,
                shown: "ops".to_string(),
                args: Vec::new(),
            });
        } else if w == "pe" {
            // ... and a persistence engine as a bare `pe NAME`.
            let args = take_args(words, &mut i, Arity::Req, None, "pe")?;
            items.push(Item {
                opt: O::Pe,
                shown: "pe".to_string(),
                args,
            });
        } else {
            return Err(format!("unexpected word `{w}` (not an option's argument)"));
        }
    }
    Ok(items)
}

fn take_args(
    words: &[String],
    i: &mut usize,
    arity: Arity,
    attached: Option<String>,
    shown: &str,
) -> Result<Vec<String>, String> {
    let mut next = |what: &str| match words.get(*i) {
        Some(w) => {
            *i += 1;
            Ok(w.clone())
        }
        None => Err(format!("`{shown}` needs {what}")),
    };
    match arity {
        Arity::No => match attached {
            Some(v) => Err(format!("`{shown}` takes no argument (got `{v}`)")),
            None => Ok(Vec::new()),
        },
        Arity::Req => match attached {
            Some(v) => Ok(vec![v]),
            None => Ok(vec![next("an argument")?]),
        },
        Arity::Opt => match attached {
            Some(v) => Ok(vec![v]),
            None => match words.get(*i) {
                Some(w) if is_number(w) => {
                    *i += 1;
                    Ok(vec![w.clone()])
                }
                _ => Ok(Vec::new()),
            },
        },
        Arity::Three => {
            let a = next("three timeouts (tcp tcpfin udp)")?;
            let b = next("three timeouts (tcp tcpfin udp)")?;
            let c = next("three timeouts (tcp tcpfin udp)")?;
            Ok(vec![a, b, c])
        }
    }
}

fn is_command(o: O) -> bool {
    matches!(
        o,
        O::AddSvc
            | O::EditSvc
            | O::DelSvc
            | O::Clear
            | O::AddDest
            | O::EditDest
            | O::DelDest
            | O::Set
    )
}

/// Which options a command takes (ipvsadm's table).
fn allowed(cmd: O, o: O) -> bool {
    let svc_sel = matches!(o, O::Tcp | O::Udp | O::Sctp | O::Fwmark | O::Ipv6);
    let svc_opt = matches!(
        o,
        O::Sched | O::Persist | O::Netmask | O::SchedFlags | O::Pe | O::Ops
    );
    let dest_opt = matches!(
        o,
        O::Gate
            | O::Masq
            | O::Ipip
            | O::Weight
            | O::UThresh
            | O::LThresh
            | O::TunType
            | O::TunPort
            | O::TunNocsum
            | O::TunCsum
            | O::TunRemcsum
    );
    if o == cmd || o == O::Numeric {
        return true;
    }
    match cmd {
        O::AddSvc | O::EditSvc => svc_sel || svc_opt,
        O::DelSvc => svc_sel,
        O::AddDest | O::EditDest => svc_sel || o == O::Real || dest_opt,
        O::DelDest => svc_sel || o == O::Real,
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Names, addresses, numbers

/// Well-known service names as `/etc/services` spells them (what ipvsadm
/// prints without `-n`), tcp and udp alike.
const SERVICE_NAMES: &[(&str, u16)] = &[
    ("tcpmux", 1),
    ("echo", 7),
    ("discard", 9),
    ("daytime", 13),
    ("ftp-data", 20),
    ("ftp", 21),
    ("ssh", 22),
    ("telnet", 23),
    ("smtp", 25),
    ("time", 37),
    ("whois", 43),
    ("nicname", 43),
    ("tacacs", 49),
    ("domain", 53),
    ("bootps", 67),
    ("bootpc", 68),
    ("tftp", 69),
    ("gopher", 70),
    ("finger", 79),
    ("http", 80),
    ("www", 80),
    ("kerberos", 88),
    ("pop3", 110),
    ("sunrpc", 111),
    ("auth", 113),
    ("nntp", 119),
    ("ntp", 123),
    ("epmap", 135),
    ("netbios-ns", 137),
    ("netbios-dgm", 138),
    ("netbios-ssn", 139),
    ("imap2", 143),
    ("imap", 143),
    ("snmp", 161),
    ("snmp-trap", 162),
    ("bgp", 179),
    ("irc", 194),
    ("ldap", 389),
    ("https", 443),
    ("microsoft-ds", 445),
    ("submissions", 465),
    ("smtps", 465),
    ("ssmtp", 465),
    ("syslog", 514),
    ("printer", 515),
    ("submission", 587),
    ("ipp", 631),
    ("ldaps", 636),
    ("rsync", 873),
    ("ftps-data", 989),
    ("ftps", 990),
    ("telnets", 992),
    ("imaps", 993),
    ("pop3s", 995),
    ("openvpn", 1194),
    ("ms-sql-s", 1433),
    ("radius", 1812),
    ("radius-acct", 1813),
    ("nfs", 2049),
    ("mysql", 3306),
    ("ms-wbt-server", 3389),
    ("sip", 5060),
    ("sip-tls", 5061),
    ("xmpp-client", 5222),
    ("xmpp-server", 5269),
    ("postgresql", 5432),
    ("amqp", 5672),
    ("x11", 6000),
    ("redis", 6379),
    ("http-alt", 8080),
    ("webcache", 8080),
    ("memcache", 11211),
];

const NUMERIC_HINT: &str = "save the rules with `ipvsadm -Sn` (numeric) instead";

fn parse_port(s: &str) -> Result<u16, String> {
    if is_number(s) {
        return s
            .parse::<u16>()
            .map_err(|_| format!("port {s} is out of range (0-65535)"));
    }
    SERVICE_NAMES
        .iter()
        .find(|(n, _)| *n == s)
        .map(|&(_, p)| p)
        .ok_or_else(|| {
            format!(
                "unknown service name `{s}` (not a port number, nor in xdpvs's table of \
                 well-known names); {NUMERIC_HINT}"
            )
        })
}

fn parse_host(s: &str) -> Result<IpAddr, String> {
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok(a);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("`{s}` is not a valid IPv4 address"));
    }
    let hostname = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    if hostname {
        Err(format!(
            "`{s}` is a host name, not an address: xdpvs does not resolve names; {NUMERIC_HINT}"
        ))
    } else {
        Err(format!("`{s}` is not an IPv4 or IPv6 address"))
    }
}

/// `addr`, `addr:port`, `[v6]`, `[v6]:port` (port: number or name).
fn parse_addr_port(s: &str) -> Result<(IpAddr, Option<u16>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return Err(format!("`{s}`: missing `]` after the IPv6 address"));
        };
        let a = parse_host(addr)?;
        if a.is_ipv4() {
            return Err(format!("`{s}`: only IPv6 addresses go in brackets"));
        }
        return match after {
            "" => Ok((a, None)),
            p => match p.strip_prefix(':') {
                Some(port) => Ok((a, Some(parse_port(port)?))),
                None => Err(format!("`{s}`: expected `:port` after `]`")),
            },
        };
    }
    if s.matches(':').count() > 1 {
        return match s.parse::<Ipv6Addr>() {
            Ok(a) => Ok((IpAddr::V6(a), None)),
            Err(_) => Err(format!(
                "`{s}` is not an address: write an IPv6 address with a port as [addr]:port"
            )),
        };
    }
    match s.split_once(':') {
        Some((h, p)) => Ok((parse_host(h)?, Some(parse_port(p)?))),
        None => Ok((parse_host(s)?, None)),
    }
}

/// Decimal or `0x` hexadecimal.
fn parse_u32(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None if is_number(s) => s.parse().ok(),
        None => None,
    }
}

pub(crate) fn number_in(s: &str, what: &str, lo: u32, hi: u32) -> Result<u32, String> {
    match parse_u32(s) {
        Some(n) if (lo..=hi).contains(&n) => Ok(n),
        Some(n) => Err(format!("{what} {n} is out of range ({lo}-{hi})")),
        None => Err(format!("{what} `{s}` is not a number")),
    }
}

// ---------------------------------------------------------------------------
// ipvsadm state

/// A virtual service as IPVS keys it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum SvcId {
    Addr {
        proto: Proto,
        vip: IpAddr,
        port: u16,
    },
    Mark {
        mark: u32,
        v6: bool,
    },
}

impl SvcId {
    fn v6(self) -> bool {
        match self {
            SvcId::Addr { vip, .. } => vip.is_ipv6(),
            SvcId::Mark { v6, .. } => v6,
        }
    }
    fn port(self) -> u16 {
        match self {
            SvcId::Addr { port, .. } => port,
            SvcId::Mark { .. } => 0,
        }
    }
}

impl fmt::Display for SvcId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SvcId::Addr { proto, vip, port } => {
                write!(f, "{}", ServiceKey::Addr { proto, vip, port })
            }
            SvcId::Mark { mark, v6: false } => write!(f, "FWM {mark}"),
            SvcId::Mark { mark, v6: true } => write!(f, "FWM {mark} IPv6"),
        }
    }
}

#[derive(Clone, Debug)]
struct Svc {
    line: usize,
    id: SvcId,
    scheduler: String,
    params: SchedParams,
    persistence: Option<PersistenceConfig>,
    reals: Vec<Real>,
}

#[derive(Clone, Debug)]
struct Real {
    line: usize,
    addr: IpAddr,
    /// As IPVS keeps it: the service port for dr/tunnel reals of an
    /// address service, 0 = the packet's own port.
    port: u16,
    fwd: FwdMethod,
    weight: u32,
    u_threshold: u32,
    l_threshold: u32,
    /// `--tun-port` of a GUE real.
    gue_port: Option<u16>,
}

fn fmt_addr_port(a: IpAddr, p: u16) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}:{p}"),
        IpAddr::V6(a) => format!("[{a}]:{p}"),
    }
}

struct State<'a> {
    file: &'a str,
    services: Vec<Svc>,
    /// Services whose `-A` line failed, and that line.
    failed: Vec<(SvcId, usize)>,
    timeouts: Timeouts,
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
}

fn get(items: &[Item], o: O) -> Option<&Item> {
    items.iter().find(|i| i.opt == o)
}

impl<'a> State<'a> {
    fn new(file: &'a str) -> Self {
        State {
            file,
            services: Vec::new(),
            failed: Vec::new(),
            timeouts: Timeouts::default(),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn problem(&self, line: usize, reason: String) -> Problem {
        Problem {
            file: self.file.to_string(),
            line: Some(line),
            reason,
        }
    }

    fn warn(&mut self, line: usize, reason: String) {
        let p = self.problem(line, reason);
        self.warnings.push(p);
    }

    fn find(&self, id: SvcId) -> Option<usize> {
        self.services.iter().position(|s| s.id == id)
    }

    fn line(&mut self, n: usize, text: &str) -> Result<(), String> {
        let mut words = tokenize(text)?;
        if words
            .first()
            .is_some_and(|w| w == "ipvsadm" || w.ends_with("/ipvsadm"))
        {
            words.remove(0);
        }
        if words.is_empty() {
            return Ok(());
        }
        let items = parse_items(&words)?;
        if let Some(d) = get(&items, O::Daemon) {
            self.warn(
                n,
                format!(
                    "`{}` ignored: xdpvs has no IPVS connection synchronisation daemon",
                    d.shown
                ),
            );
            return Ok(());
        }
        if let Some(i) = get(&items, O::NotRule) {
            return Err(format!(
                "`{}` is not a rule: the input must be what `ipvsadm -S` (or `-Sn`) prints",
                i.shown
            ));
        }
        if let Some(i) = get(&items, O::DaemonOpt) {
            return Err(format!(
                "`{}` is an option of the sync daemon, which xdpvs does not have",
                i.shown
            ));
        }
        let cmds: Vec<&Item> = items.iter().filter(|i| is_command(i.opt)).collect();
        let cmd = match cmds.as_slice() {
            [] => {
                return Err("no command: expected -A, -E, -D, -a, -e, -d, -C or --set".to_string())
            }
            [c] => *c,
            [a, b, ..] => {
                return Err(format!(
                    "two commands on one line (`{}` and `{}`)",
                    a.shown, b.shown
                ))
            }
        };
        for (k, it) in items.iter().enumerate() {
            if let Some(prev) = items.iter().take(k).find(|p| p.opt == it.opt) {
                return Err(format!(
                    "`{}` is given twice (also as `{}`)",
                    it.shown, prev.shown
                ));
            }
            if !allowed(cmd.opt, it.opt) {
                return Err(format!(
                    "`{}` cannot be used with `{}` (ipvsadm refuses it too)",
                    it.shown, cmd.shown
                ));
            }
        }
        let exclusive = |set: &[O], what: &str| -> Result<(), String> {
            let found: Vec<&str> = items
                .iter()
                .filter(|i| set.contains(&i.opt))
                .map(|i| i.shown.as_str())
                .collect();
            if found.len() > 1 {
                Err(format!("more than one {what}: {}", found.join(", ")))
            } else {
                Ok(())
            }
        };
        exclusive(&[O::Tcp, O::Udp, O::Sctp, O::Fwmark], "virtual service")?;
        exclusive(&[O::Gate, O::Masq, O::Ipip], "forwarding method")?;
        exclusive(
            &[O::TunNocsum, O::TunCsum, O::TunRemcsum],
            "tunnel checksum mode",
        )?;

        match cmd.opt {
            O::Clear => {
                self.services.clear();
                Ok(())
            }
            O::Set => self.set_timeouts(cmd),
            O::AddSvc | O::EditSvc => {
                let edit = cmd.opt == O::EditSvc;
                let r = self.add_service(n, edit, &items);
                if let (Err(_), false, Ok(id)) = (&r, edit, svc_id(&items)) {
                    self.failed.push((id, n));
                }
                r
            }
            O::DelSvc => {
                let id = svc_id(&items)?;
                let i = self
                    .find(id)
                    .ok_or_else(|| format!("cannot delete {id}: no such virtual service"))?;
                self.services.remove(i);
                Ok(())
            }
            _ => self.dest(n, cmd.opt, &items),
        }
    }

    fn set_timeouts(&mut self, cmd: &Item) -> Result<(), String> {
        let mut t = self.timeouts;
        let slots = [&mut t.tcp, &mut t.tcp_fin, &mut t.udp];
        for ((slot, arg), what) in
            slots
                .into_iter()
                .zip(&cmd.args)
                .zip(["tcp timeout", "tcpfin timeout", "udp timeout"])
        {
            let v = number_in(arg, what, 0, MAX_TIMEOUT)?;
            // ipvsadm: 0 leaves the value unchanged.
            if v != 0 {
                *slot = v;
            }
        }
        self.timeouts = t;
        Ok(())
    }

    fn add_service(&mut self, n: usize, edit: bool, items: &[Item]) -> Result<(), String> {
        let id = svc_id(items)?;
        if let Some(pe) = get(items, O::Pe) {
            return Err(format!(
                "persistence engine `{}` ({}) is not supported: xdpvs persistence is by \
                 client address only",
                pe.arg().unwrap_or(""),
                pe.shown
            ));
        }
        if let Some(o) = get(items, O::Ops) {
            return Err(format!(
                "one-packet scheduling (`{}`) is not supported: xdpvs schedules UDP per flow \
                 (remove it from the line to accept per-flow scheduling)",
                o.shown
            ));
        }
        let scheduler = match get(items, O::Sched).and_then(Item::arg) {
            Some(s) => scheduler(s)?,
            None => DEFAULT_SCHEDULER.to_string(),
        };
        let mut params = SchedParams::default();
        if let Some(b) = get(items, O::SchedFlags) {
            for w in sched_flags(&scheduler, b.arg().unwrap_or(""), &mut params)? {
                self.warn(n, w);
            }
        }
        let persistence = match get(items, O::Persist) {
            None => None,
            Some(p) => {
                let timeout = match p.arg() {
                    Some(t) => number_in(t, "persistence timeout", 1, MAX_TIMEOUT)?,
                    None => DEFAULT_PERSISTENCE_TIMEOUT,
                };
                Some(PersistenceConfig {
                    timeout,
                    ..PersistenceConfig::default()
                })
            }
        };
        let persistence = match (persistence, get(items, O::Netmask)) {
            (p, None) => p,
            (None, Some(m)) => {
                self.warn(
                    n,
                    format!(
                        "`{} {}` ignored: the service is not persistent (no -p)",
                        m.shown,
                        m.arg().unwrap_or("")
                    ),
                );
                None
            }
            (Some(mut p), Some(m)) => {
                let s = m.arg().unwrap_or("");
                if id.v6() {
                    let s = s.strip_prefix('/').unwrap_or(s);
                    p.prefix6 = number_in(s, "IPv6 persistence prefix length", 1, 128)? as u8;
                } else {
                    let mask: Ipv4Addr = s.parse().map_err(|_| {
                        format!(
                            "netmask `{s}` is not an IPv4 netmask (expected e.g. 255.255.255.0)"
                        )
                    })?;
                    if netmask_prefix(mask).is_none() {
                        return Err(format!(
                            "netmask {mask} is not contiguous: xdpvs persistence groups \
                             clients by prefix (e.g. 255.255.255.0)"
                        ));
                    }
                    p.netmask = mask;
                }
                Some(p)
            }
        };
        if let SvcId::Addr { port: 0, .. } = id {
            if persistence.is_none() {
                return Err(format!(
                    "{id}: port 0 (all ports) needs a persistent service (-p); ipvsadm \
                     refuses it too"
                ));
            }
        }
        match (self.find(id), edit) {
            (Some(i), false) => {
                let first = self.services.get(i).map_or(0, |s| s.line);
                Err(format!(
                    "virtual service {id} is already defined (line {first})"
                ))
            }
            (None, true) => Err(format!(
                "cannot edit {id}: no such virtual service (no `-A` line before this one)"
            )),
            (Some(i), true) => {
                if let Some(s) = self.services.get_mut(i) {
                    s.line = n;
                    s.scheduler = scheduler;
                    s.params = params;
                    s.persistence = persistence;
                }
                Ok(())
            }
            (None, false) => {
                if let SvcId::Mark { mark, v6 } = id {
                    let other = SvcId::Mark { mark, v6: !v6 };
                    if let Some(o) = self.find(other).and_then(|i| self.services.get(i)) {
                        return Err(format!(
                            "mark {mark} already has an {} service (line {}): an xdpvs \
                             firewall-mark service serves one address family; give the {} \
                             MARK rules and this service a mark of their own",
                            if v6 { "IPv4" } else { "IPv6" },
                            o.line,
                            if v6 { "IPv6" } else { "IPv4" },
                        ));
                    }
                }
                self.services.push(Svc {
                    line: n,
                    id,
                    scheduler,
                    params,
                    persistence,
                    reals: Vec::new(),
                });
                Ok(())
            }
        }
    }

    fn dest(&mut self, n: usize, cmd: O, items: &[Item]) -> Result<(), String> {
        let id = svc_id(items)?;
        let Some(si) = self.find(id) else {
            if let Some((_, l)) = self.failed.iter().rev().find(|f| f.0 == id) {
                return Err(format!(
                    "real server for {id}, whose virtual service could not be imported (line {l})"
                ));
            }
            return Err(format!(
                "real server for {id}, but that virtual service is not defined (no `-A` line \
                 before this one)"
            ));
        };
        let Some(r) = get(items, O::Real).and_then(Item::arg) else {
            return Err("no real server (-r addr[:port])".to_string());
        };
        let (addr, port) = parse_addr_port(r)?;
        let mut port = port.unwrap_or(id.port());

        let tunnel = get(items, O::Ipip).is_some();
        let tun_opt = items.iter().find(|i| {
            matches!(
                i.opt,
                O::TunType | O::TunPort | O::TunNocsum | O::TunCsum | O::TunRemcsum
            )
        });
        let fwd = if get(items, O::Masq).is_some() {
            FwdMethod::Nat
        } else if tunnel {
            match get(items, O::TunType).and_then(Item::arg).unwrap_or("ipip") {
                "ipip" => FwdMethod::Ipip,
                "gue" => FwdMethod::Gue,
                "gre" => {
                    return Err(
                        "GRE tunnels (--tun-type gre) are not supported: xdpvs tunnels with \
                         ipip or gue"
                            .to_string(),
                    )
                }
                t => return Err(format!("unknown tunnel type `{t}` (expected ipip or gue)")),
            }
        } else {
            FwdMethod::Dr
        };
        if let (Some(t), false) = (tun_opt, tunnel) {
            return Err(format!(
                "`{}` applies only to tunnelling real servers (-i); ipvsadm refuses it too",
                t.shown
            ));
        }
        let mut gue_port = None;
        if fwd == FwdMethod::Gue {
            let Some(p) = get(items, O::TunPort).and_then(Item::arg) else {
                return Err("--tun-type gue needs --tun-port (the GUE port)".to_string());
            };
            gue_port = Some(number_in(p, "tunnel port", 1, 65535)? as u16);
            if let Some(c) = get(items, O::TunCsum).or_else(|| get(items, O::TunRemcsum)) {
                self.warn(
                    n,
                    format!(
                        "`{}` ignored: xdpvs sends GUE with a zero UDP checksum over IPv4, a \
                         full one over IPv6 and no remote-checksum option, which a GUE receiver \
                         accepts whatever the sender's checksum mode",
                        c.shown
                    ),
                );
            }
        } else if fwd == FwdMethod::Ipip {
            if let Some(t) = items.iter().find(|i| {
                matches!(
                    i.opt,
                    O::TunPort | O::TunCsum | O::TunRemcsum | O::TunNocsum
                )
            }) {
                return Err(format!(
                    "`{}` applies only to --tun-type gue; ipvsadm refuses it too",
                    t.shown
                ));
            }
        }
        if addr.is_ipv6() != id.v6() && matches!(fwd, FwdMethod::Dr | FwdMethod::Nat) {
            return Err(format!(
                "real server {addr} is not of the service's address family: only tunnelling \
                 (-i) real servers may differ (ipvsadm refuses it too)"
            ));
        }
        // ipvsadm gives dr and tunnel reals of an address service its port.
        if cmd != O::DelDest && matches!(id, SvcId::Addr { .. }) && fwd != FwdMethod::Nat {
            port = id.port();
        }
        let weight = match get(items, O::Weight).and_then(Item::arg) {
            Some(w) => number_in(w, "weight", 0, MAX_WEIGHT)?,
            None => 1,
        };
        let thresh = |o: O, what: &str| match get(items, o).and_then(Item::arg) {
            Some(v) => number_in(v, what, 0, i32::MAX as u32),
            None => Ok(0),
        };
        let u_threshold = thresh(O::UThresh, "upper threshold")?;
        let l_threshold = thresh(O::LThresh, "lower threshold")?;

        let Some(svc) = self.services.get_mut(si) else {
            return Ok(());
        };
        let pos = svc
            .reals
            .iter()
            .position(|x| x.addr == addr && x.port == port);
        let shown = fmt_addr_port(addr, port);
        let real = Real {
            line: n,
            addr,
            port,
            fwd,
            weight,
            u_threshold,
            l_threshold,
            gue_port,
        };
        match (cmd, pos) {
            (O::AddDest, None) => svc.reals.push(real),
            (O::AddDest, Some(i)) => {
                let first = svc.reals.get(i).map_or(0, |x| x.line);
                return Err(format!(
                    "real server {shown} is already in {id} (line {first})"
                ));
            }
            (O::EditDest, Some(i)) => {
                if let Some(slot) = svc.reals.get_mut(i) {
                    *slot = real;
                }
            }
            (O::DelDest, Some(i)) => {
                svc.reals.remove(i);
            }
            (_, None) => {
                return Err(format!("real server {shown} is not in {id}"));
            }
            _ => {}
        }
        Ok(())
    }
}

/// `-b` flags into `params`; returns warnings.
pub(crate) fn sched_flags(
    sched: &str,
    list: &str,
    params: &mut SchedParams,
) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    let hashing = sched == "sh" || sched == "mh";
    for flag in list.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (owner, what) = match flag.split_once('-') {
            Some((o @ ("sh" | "mh"), w @ ("fallback" | "port"))) => (Some(o), w),
            Some(("flag", "1")) => (None, "fallback"),
            Some(("flag", "2")) => (None, "port"),
            Some(("flag", "3")) => {
                warnings
                    .push("scheduler flag `flag-3` ignored: no IPVS scheduler uses it".to_string());
                continue;
            }
            _ => {
                return Err(format!(
                    "unknown scheduler flag `{flag}` (expected sh-fallback, sh-port, \
                     mh-fallback, mh-port or flag-1..3)"
                ))
            }
        };
        match owner {
            Some(o) if o != sched => {
                return Err(format!(
                    "scheduler flag `{flag}` belongs to the {o} scheduler, not to {sched}"
                ))
            }
            None if !hashing => {
                warnings.push(format!(
                    "scheduler flag `{flag}` ignored: scheduler {sched} has no flags \
                     (IPVS ignores it too)"
                ));
                continue;
            }
            _ => {}
        }
        if what == "fallback" {
            params.fallback = true;
        } else {
            params.hash_port = true;
        }
    }
    Ok(warnings)
}

fn svc_id(items: &[Item]) -> Result<SvcId, String> {
    let v6 = get(items, O::Ipv6).is_some();
    if get(items, O::Sctp).is_some() {
        return Err("SCTP services are not supported: xdpvs balances tcp and udp".to_string());
    }
    if let Some(f) = get(items, O::Fwmark) {
        let s = f.arg().unwrap_or("");
        let mark = number_in(s, "firewall mark", 1, u32::MAX)?;
        return Ok(SvcId::Mark { mark, v6 });
    }
    let (proto, it) = match (get(items, O::Tcp), get(items, O::Udp)) {
        (Some(t), _) => (Proto::Tcp, t),
        (_, Some(u)) => (Proto::Udp, u),
        _ => return Err("no virtual service (-t, -u or -f)".to_string()),
    };
    let (vip, port) = parse_addr_port(it.arg().unwrap_or(""))?;
    if v6 && vip.is_ipv4() {
        return Err(format!("-6 with the IPv4 virtual service {vip}"));
    }
    Ok(SvcId::Addr {
        proto,
        vip,
        port: port.unwrap_or(0),
    })
}

pub(crate) fn scheduler(s: &str) -> Result<String, String> {
    if SCHEDULER_NAMES.contains(&s) {
        return Ok(s.to_string());
    }
    match s {
        "lblc" | "lblcr" => Err(format!(
            "scheduler {s} (locality-based least-connection) is not supported; dh (destination \
             hashing) is the nearest: expected one of {}",
            SCHEDULER_NAMES.join(", ")
        )),
        _ => Err(format!(
            "unknown scheduler `{s}` (expected one of {})",
            SCHEDULER_NAMES.join(", ")
        )),
    }
}

// ---------------------------------------------------------------------------
// iptables MARK rules

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) file: String,
    pub(crate) line: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct MarkRule {
    pub(crate) loc: Loc,
    pub(crate) chain: String,
    pub(crate) mark: u32,
    /// The rules it stands for, or why it cannot be imported.
    pub(crate) rules: Result<Vec<FwmarkRuleConfig>, String>,
}

#[derive(Default)]
pub(crate) struct MarkRules {
    pub(crate) rules: Vec<MarkRule>,
    pub(crate) warnings: Vec<Problem>,
}

/// Largest address range a `-d` prefix may expand into.
pub(crate) const MAX_EXPAND: u32 = 256;

impl MarkRules {
    pub(crate) fn read(&mut self, inp: Input<'_>) {
        let mut table: Option<String> = None;
        for (n, text) in logical_lines(inp.text) {
            let loc = Loc {
                file: inp.name.to_string(),
                line: n,
            };
            let t = text.trim();
            if t.is_empty() || t.starts_with('#') || t.starts_with(':') {
                continue;
            }
            if let Some(name) = t.strip_prefix('*') {
                table = Some(name.trim().to_string());
                continue;
            }
            if t == "COMMIT" {
                table = None;
                continue;
            }
            let mut words = match tokenize(t) {
                Ok(w) => w,
                Err(e) => {
                    self.warn(&loc, format!("line ignored: {e}"));
                    continue;
                }
            };
            let command = words.first().is_some_and(|w| {
                let base = w.rsplit('/').next().unwrap_or(w);
                base.starts_with("iptables") || base.starts_with("ip6tables")
            });
            if command {
                words.remove(0);
            }
            // `iptables-save -c` counters.
            if words
                .first()
                .is_some_and(|w| w.starts_with('[') && w.ends_with(']'))
            {
                words.remove(0);
            }
            if words.is_empty() {
                continue;
            }
            let default_table = if command { Some("filter") } else { None };
            self.rule(&loc, &words, table.as_deref().or(default_table));
        }
    }

    fn warn(&mut self, loc: &Loc, reason: String) {
        self.warnings.push(Problem {
            file: loc.file.clone(),
            line: Some(loc.line),
            reason,
        });
    }

    fn rule(&mut self, loc: &Loc, words: &[String], table: Option<&str>) {
        let r = match parse_ipt_rule(words) {
            Ok(r) => r,
            Err(e) => {
                self.warn(loc, format!("line ignored: {e}"));
                return;
            }
        };
        let table = r.table.as_deref().or(table);
        let Some(chain) = r.chain.clone() else {
            self.warn(
                loc,
                "line ignored: not a rule append (-A) or insert (-I)".to_string(),
            );
            return;
        };
        if r.target.as_deref() != Some("MARK") {
            if table == Some("mangle") && matches!(chain.as_str(), "PREROUTING" | "INPUT") {
                let t = r.target.as_deref().unwrap_or("no target");
                self.warn(
                    loc,
                    format!("rule ignored: only MARK rules are imported (this one is {t})"),
                );
            }
            return;
        }
        if !matches!(table, None | Some("mangle")) {
            self.warn(
                loc,
                format!(
                    "MARK rule ignored: it is in the {} table, not mangle",
                    table.unwrap_or("filter")
                ),
            );
            return;
        }
        let mark = match &r.mark {
            Some(Ok(m)) => *m,
            Some(Err(e)) => {
                self.warn(loc, format!("MARK rule ignored: {e}"));
                return;
            }
            None => {
                self.warn(
                    loc,
                    "MARK rule ignored: no --set-mark / --set-xmark".to_string(),
                );
                return;
            }
        };
        if mark == 0 {
            self.warn(
                loc,
                "MARK rule ignored: it clears the mark (0), which no service uses".to_string(),
            );
            return;
        }
        self.rules.push(MarkRule {
            loc: loc.clone(),
            chain,
            mark,
            rules: r.expand(),
        });
    }
}

#[derive(Default)]
struct IptRule {
    table: Option<String>,
    chain: Option<String>,
    dests: Vec<(IpAddr, u8)>,
    /// `None`: any protocol.
    proto: Option<String>,
    ports: Option<Vec<(u16, u16)>>,
    target: Option<String>,
    mark: Option<Result<u32, String>>,
    /// Matches xdpvs cannot express, reported when the mark matters.
    unsupported: Vec<String>,
}

fn parse_ipt_rule(words: &[String]) -> Result<IptRule, String> {
    let mut r = IptRule::default();
    let mut i = 0;
    let next = |i: &mut usize, opt: &str| -> Result<String, String> {
        let v = words
            .get(*i)
            .cloned()
            .ok_or_else(|| format!("`{opt}` needs an argument"))?;
        *i += 1;
        Ok(v)
    };
    let mut negate = false;
    while let Some(w) = words.get(i) {
        i += 1;
        let w = w.as_str();
        if w == "!" {
            negate = true;
            continue;
        }
        if negate {
            r.unsupported
                .push(format!("negated match `! {w}` is not supported"));
            negate = false;
        }
        match w {
            "-t" | "--table" => r.table = Some(next(&mut i, w)?),
            "-A" | "--append" => r.chain = Some(next(&mut i, w)?),
            "-I" | "--insert" => {
                r.chain = Some(next(&mut i, w)?);
                if words.get(i).is_some_and(|n| is_number(n)) {
                    i += 1;
                }
            }
            "-d" | "--destination" | "--dst" => {
                for a in next(&mut i, w)?.split(',') {
                    match parse_cidr(a) {
                        Ok(d) => r.dests.push(d),
                        Err(e) => r.unsupported.push(e),
                    }
                }
            }
            "-s" | "--source" | "--src" => {
                let s = next(&mut i, w)?;
                if !matches!(s.as_str(), "0.0.0.0/0" | "::/0") {
                    r.unsupported.push(format!(
                        "source match `-s {s}` is not supported (xdpvs fwmark rules match \
                         destination address, protocol and port)"
                    ));
                }
            }
            "-p" | "--protocol" => {
                let p = next(&mut i, w)?.to_ascii_lowercase();
                r.proto = match p.as_str() {
                    "tcp" | "6" => Some("tcp".to_string()),
                    "udp" | "17" => Some("udp".to_string()),
                    "all" | "0" => None,
                    other => {
                        r.unsupported.push(format!(
                            "protocol `{other}` is not supported (xdpvs balances tcp and udp)"
                        ));
                        None
                    }
                };
            }
            "-m" | "--match" => {
                let m = next(&mut i, w)?;
                if !matches!(m.as_str(), "tcp" | "udp" | "multiport" | "comment") {
                    r.unsupported
                        .push(format!("match `-m {m}` is not supported"));
                }
            }
            "--comment" => {
                next(&mut i, w)?;
            }
            "--dport" | "--destination-port" => {
                let v = next(&mut i, w)?;
                match port_range(&v) {
                    Ok(p) => r.ports = Some(vec![p]),
                    Err(e) => r.unsupported.push(e),
                }
            }
            "--dports" | "--destination-ports" => {
                let v = next(&mut i, w)?;
                let list: Result<Vec<_>, _> = v.split(',').map(port_range).collect();
                match list {
                    Ok(l) => r.ports = Some(l),
                    Err(e) => r.unsupported.push(e),
                }
            }
            "--sport" | "--source-port" | "--sports" | "--source-ports" | "--ports" => {
                let v = next(&mut i, w)?;
                r.unsupported.push(format!(
                    "`{w} {v}` is not supported (xdpvs fwmark rules match destination ports)"
                ));
            }
            "--syn" => r
                .unsupported
                .push("`--syn` is not supported (it marks only the first packet)".to_string()),
            "--tcp-flags" => {
                next(&mut i, w)?;
                next(&mut i, w)?;
                r.unsupported
                    .push("`--tcp-flags` is not supported".to_string());
            }
            "-i" | "--in-interface" => {
                let v = next(&mut i, w)?;
                r.unsupported.push(format!(
                    "`-i {v}` is not supported: xdpvs matches on the director's data-plane \
                     interfaces ([director] interfaces)"
                ));
            }
            "-j" | "--jump" | "-g" | "--goto" => r.target = Some(next(&mut i, w)?),
            "--set-mark" | "--set-xmark" => {
                let v = next(&mut i, w)?;
                r.mark = Some(mark_value(&v));
            }
            "--and-mark" | "--or-mark" | "--xor-mark" => {
                let v = next(&mut i, w)?;
                r.mark = Some(Err(format!(
                    "`{w} {v}` changes some bits of the mark; only --set-mark / --set-xmark \
                     with the full mask can be imported"
                )));
            }
            "-c" | "--set-counters" => {
                next(&mut i, w)?;
                next(&mut i, w)?;
            }
            "-4" | "-6" | "--ipv4" | "--ipv6" => {}
            other => r
                .unsupported
                .push(format!("option `{other}` is not supported")),
        }
    }
    Ok(r)
}

/// `0x1`, `1`, `0x1/0xffffffff`: only a full mask sets the whole mark.
fn mark_value(v: &str) -> Result<u32, String> {
    let (val, mask) = match v.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (v, None),
    };
    let mark = parse_u32(val).ok_or_else(|| format!("mark `{val}` is not a number"))?;
    if let Some(m) = mask {
        let m = parse_u32(m).ok_or_else(|| format!("mask `{m}` is not a number"))?;
        if m != u32::MAX {
            return Err(format!(
                "mark {v} sets only some bits (mask {m:#x}); only the full mask 0xffffffff \
                 can be imported"
            ));
        }
    }
    Ok(mark)
}

/// `80`, `10000:10100`, `:1023`, `1024:`, `http` -> an inclusive range 1-65535.
fn port_range(s: &str) -> Result<(u16, u16), String> {
    let one = |p: &str, dflt: u16| -> Result<u16, String> {
        if p.is_empty() {
            Ok(dflt)
        } else {
            parse_port(p)
        }
    };
    let (lo, hi) = match s.split_once(':') {
        Some((a, b)) => (one(a, 0)?, one(b, 65535)?),
        None => {
            let p = parse_port(s)?;
            (p, p)
        }
    };
    let lo = lo.max(1);
    if lo > hi {
        return Err(format!("port range `{s}` is empty or reversed"));
    }
    Ok((lo, hi))
}

/// `198.18.0.100`, `198.18.0.100/32`, `198.18.0.100/255.255.255.254`,
/// `2001:db8::100/128`.
fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("destination `{s}` is not an address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match p {
        None => max,
        Some(p) if is_number(p) => match p.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => return Err(format!("destination `{s}`: bad prefix length")),
        },
        Some(m) => match m.parse::<Ipv4Addr>().ok().and_then(netmask_prefix) {
            Some(n) if addr.is_ipv4() => n,
            _ => return Err(format!("destination `{s}`: bad netmask")),
        },
    };
    Ok((addr, prefix))
}

impl IptRule {
    fn expand(&self) -> Result<Vec<FwmarkRuleConfig>, String> {
        if let Some(u) = self.unsupported.first() {
            return Err(u.clone());
        }
        if self.dests.is_empty() {
            return Err(
                "no destination (-d): an xdpvs fwmark rule needs the VIP it matches".to_string(),
            );
        }
        let protos: Vec<Proto> = match self.proto.as_deref() {
            Some("tcp") => vec![Proto::Tcp],
            Some("udp") => vec![Proto::Udp],
            _ if self.ports.is_some() => {
                return Err("a port match needs -p tcp or -p udp".to_string())
            }
            _ => vec![Proto::Tcp, Proto::Udp],
        };
        let ports = PortSet(self.ports.clone().unwrap_or_else(|| vec![(1, 65535)]));
        let mut out = Vec::new();
        for &(addr, prefix) in &self.dests {
            for vip in expand_prefix(addr, prefix)? {
                for &proto in &protos {
                    out.push(FwmarkRuleConfig {
                        vip,
                        proto,
                        ports: ports.clone(),
                    });
                }
            }
        }
        Ok(out)
    }
}

pub(crate) fn expand_prefix(addr: IpAddr, prefix: u8) -> Result<Vec<IpAddr>, String> {
    let too_wide = || {
        format!(
            "destination {addr}/{prefix} covers more than {MAX_EXPAND} addresses; list the \
             VIPs one by one"
        )
    };
    match addr {
        IpAddr::V4(a) => {
            let host = 32 - u32::from(prefix.min(32));
            if host > MAX_EXPAND.trailing_zeros() {
                return Err(too_wide());
            }
            let mask = if host == 32 { 0 } else { u32::MAX << host };
            let base = u32::from(a) & mask;
            Ok((0..(1u32 << host))
                .map(|k| IpAddr::V4(Ipv4Addr::from(base | k)))
                .collect())
        }
        IpAddr::V6(a) => {
            let host = 128 - u32::from(prefix.min(128));
            if host > MAX_EXPAND.trailing_zeros() {
                return Err(too_wide());
            }
            let mask = if host == 128 { 0 } else { u128::MAX << host };
            let base = u128::from(a) & mask;
            Ok((0..(1u128 << host))
                .map(|k| IpAddr::V6(Ipv6Addr::from(base | k)))
                .collect())
        }
    }
}

// ---------------------------------------------------------------------------
// The config

/// Where each part of the generated config came from, to place
/// validation errors at input lines.
#[derive(Default)]
struct Locs {
    file: String,
    services: Vec<(usize, Vec<usize>)>,
    groups: Vec<(usize, Vec<Loc>)>,
}

/// `prefix[N]` at the start of `s` -> (N, rest).
fn index_after<'s>(s: &'s str, prefix: &str) -> Option<(usize, &'s str)> {
    let rest = s.strip_prefix(prefix)?.strip_prefix('[')?;
    let (num, rest) = rest.split_once(']')?;
    Some((num.parse().ok()?, rest))
}

impl Locs {
    fn place(&self, key: &str, reason: &str) -> Problem {
        let at = |file: &str, line: Option<usize>| Problem {
            file: file.to_string(),
            line,
            reason: if key.is_empty() {
                reason.to_string()
            } else {
                format!("{reason} (in the imported config: {key})")
            },
        };
        if let Some((i, rest)) = index_after(key, "service") {
            if let Some((svc_line, reals)) = self.services.get(i) {
                let line = index_after(rest, ".real")
                    .and_then(|(j, _)| reals.get(j).copied())
                    .unwrap_or(*svc_line);
                return at(&self.file, Some(line));
            }
        }
        if let Some((g, rest)) = index_after(key, "fwmark") {
            if let Some((svc_line, rules)) = self.groups.get(g) {
                if let Some(l) = index_after(rest, ".rules").and_then(|(r, _)| rules.get(r)) {
                    return at(&l.file, Some(l.line));
                }
                return at(&self.file, Some(*svc_line));
            }
        }
        if key.starts_with("director.interfaces") {
            return at("--interface", None);
        }
        at(&self.file, None)
    }
}

struct Builder<'o, 'i> {
    file: String,
    opts: &'o ImportOptions,
    iptables: &'o [Input<'i>],
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Builder<'_, '_> {
    fn err(&mut self, file: &str, line: Option<usize>, reason: String) {
        self.errors.push(Problem {
            file: file.to_string(),
            line,
            reason,
        });
    }

    fn warn(&mut self, file: &str, line: Option<usize>, reason: String) {
        self.warnings.push(Problem {
            file: file.to_string(),
            line,
            reason,
        });
    }

    fn config(
        &mut self,
        services: &[Svc],
        timeouts: Timeouts,
        marks: &[MarkRule],
    ) -> (Config, Locs) {
        let file = self.file.clone();
        let mut locs = Locs {
            file: file.clone(),
            ..Locs::default()
        };

        // One GUE port for the whole director.
        let mut gue: Option<(u16, usize)> = None;
        for r in services.iter().flat_map(|s| &s.reals) {
            let Some(p) = r.gue_port else { continue };
            match gue {
                None => gue = Some((p, r.line)),
                Some((q, first)) if q != p => self.err(
                    &file,
                    Some(r.line),
                    format!(
                        "--tun-port {p} differs from --tun-port {q} (line {first}): xdpvs sends \
                         GUE to one port for all real servers (director.gue_port)"
                    ),
                ),
                _ => {}
            }
        }

        // Tunnel sources, which IPVS took from the routing table.
        let tunnels = |v6: bool| -> Vec<usize> {
            services
                .iter()
                .flat_map(|s| &s.reals)
                .filter(|r| matches!(r.fwd, FwdMethod::Ipip | FwdMethod::Gue))
                .filter(|r| r.addr.is_ipv6() == v6)
                .map(|r| r.line)
                .collect()
        };
        for (v6, missing, flag) in [
            (false, self.opts.tunnel_src4.is_none(), "--tunnel-src4"),
            (true, self.opts.tunnel_src6.is_none(), "--tunnel-src6"),
        ] {
            let lines = tunnels(v6);
            if let (true, Some(&first)) = (missing, lines.first()) {
                let more = match lines.len() {
                    1 => String::new(),
                    n => format!(" (and {} more real servers)", n - 1),
                };
                self.err(
                    &file,
                    Some(first),
                    format!(
                        "tunnelling to an {} real server needs the outer source address, which \
                         IPVS took from the routing table: pass {flag} ADDR{more}",
                        if v6 { "IPv6" } else { "IPv4" }
                    ),
                );
            }
        }

        let fwmarks = self.groups(services, marks, &mut locs);

        let mut out_services = Vec::new();
        for s in services {
            let key = match s.id {
                SvcId::Addr { proto, vip, port } => ServiceKey::Addr { proto, vip, port },
                SvcId::Mark { mark, .. } => ServiceKey::Fwmark(mark),
            };
            let reals = s
                .reals
                .iter()
                .map(|r| RealConfig {
                    addr: r.addr,
                    port: real_port(s.id, r),
                    weight: r.weight,
                    forward: r.fwd,
                    u_threshold: r.u_threshold,
                    l_threshold: r.l_threshold,
                    health: None,
                })
                .collect();
            locs.services
                .push((s.line, s.reals.iter().map(|r| r.line).collect()));
            out_services.push(ServiceConfig {
                name: service_name(s.id),
                key,
                scheduler: s.scheduler.clone(),
                sched_params: s.params,
                persistence: s.persistence,
                expire_nodest_conn: None,
                expire_quiescent_template: None,
                health: None,
                sorry_server: None,
                quorum: crate::config::schema::DEFAULT_QUORUM,
                hysteresis: 0,
                quorum_up: None,
                quorum_down: None,
                reals,
            });
        }

        let interfaces = if self.opts.interfaces.is_empty() {
            vec!["eth0".to_string()]
        } else {
            self.opts.interfaces.clone()
        };
        let config = Config {
            director: Director {
                interfaces,
                tunnel_src4: self.opts.tunnel_src4,
                tunnel_src6: self.opts.tunnel_src6,
                gue_port: gue.map_or(DEFAULT_GUE_PORT, |(p, _)| p),
                ..Director::default()
            },
            timeouts,
            fwmarks,
            services: out_services,
            ..Config::default()
        };
        (config, locs)
    }

    /// One `[[fwmark]]` group per mark a service uses, from the MARK rules.
    fn groups(
        &mut self,
        services: &[Svc],
        marks: &[MarkRule],
        locs: &mut Locs,
    ) -> Vec<FwmarkGroup> {
        let file = self.file.clone();
        let mut groups = Vec::new();
        let mut used: HashMap<u32, ()> = HashMap::new();
        for s in services {
            let SvcId::Mark { mark, v6 } = s.id else {
                continue;
            };
            used.insert(mark, ());
            let family = if v6 { "IPv6" } else { "IPv4" };
            let mut rules = Vec::new();
            let mut rule_locs = Vec::new();
            let mut failed = false;
            for mr in marks.iter().filter(|m| m.mark == mark) {
                let (f, l) = (mr.loc.file.clone(), Some(mr.loc.line));
                match mr.chain.as_str() {
                    "PREROUTING" | "INPUT" => {}
                    "OUTPUT" | "FORWARD" | "POSTROUTING" => {
                        self.warn(
                            &f,
                            l,
                            format!(
                                "MARK rule for mark {mark} in {} ignored: IPVS sees marks set \
                                 in PREROUTING or INPUT only",
                                mr.chain
                            ),
                        );
                        continue;
                    }
                    other => {
                        self.err(
                            &f,
                            l,
                            format!(
                                "MARK rule for mark {mark} (the {} service at {file}:{}) is in \
                                 the user-defined chain {other}, which the import does not \
                                 follow: move it to PREROUTING",
                                s.id, s.line
                            ),
                        );
                        failed = true;
                        continue;
                    }
                }
                match &mr.rules {
                    Err(e) => {
                        self.err(
                            &f,
                            l,
                            format!(
                                "MARK rule for mark {mark} (the {} service at {file}:{}) cannot \
                                 be imported: {e}",
                                s.id, s.line
                            ),
                        );
                        failed = true;
                    }
                    Ok(list) => {
                        let mut other = 0;
                        for r in list {
                            if r.vip.is_ipv6() == v6 {
                                rules.push(r.clone());
                                rule_locs.push(mr.loc.clone());
                            } else {
                                other += 1;
                            }
                        }
                        if other > 0 {
                            self.warn(
                                &f,
                                l,
                                format!(
                                    "{} destinations ignored: mark {mark} is used by an {family} \
                                     service only ({file}:{}), as in IPVS",
                                    if v6 { "IPv4" } else { "IPv6" },
                                    s.line
                                ),
                            );
                        }
                    }
                }
            }
            if rules.is_empty() && !failed {
                let reason = if self.iptables.is_empty() {
                    format!(
                        "firewall-mark service {} needs the rules that set mark {mark} (VIPs, \
                         protocols, ports), which ipvsadm does not know: pass the mangle table \
                         with --iptables FILE (the output of `iptables-save -t mangle`{})",
                        s.id,
                        if v6 {
                            "; `ip6tables-save -t mangle` for IPv6"
                        } else {
                            ""
                        }
                    )
                } else {
                    let names: Vec<&str> = self.iptables.iter().map(|i| i.name).collect();
                    format!(
                        "firewall-mark service {}: no MARK rule in {} sets mark {mark} for an \
                         {family} destination (mangle table, PREROUTING or INPUT)",
                        s.id,
                        names.join(", ")
                    )
                };
                self.err(&file, Some(s.line), reason);
            }
            locs.groups.push((s.line, rule_locs));
            groups.push(FwmarkGroup { mark, rules });
        }
        let mut reported: HashMap<u32, ()> = HashMap::new();
        for mr in marks {
            if !used.contains_key(&mr.mark) && reported.insert(mr.mark, ()).is_none() {
                let f = mr.loc.file.clone();
                self.warn(
                    &f,
                    Some(mr.loc.line),
                    format!(
                        "mark {} is not used by any ipvsadm service: its rules are not imported",
                        mr.mark
                    ),
                );
            }
        }
        groups
    }
}

/// The real server's port in the config: `None` keeps the service's (or
/// the packet's) port; only NAT rewrites it, as in IPVS.
fn real_port(svc: SvcId, r: &Real) -> Option<u16> {
    match r.fwd {
        FwdMethod::Nat if r.port != 0 && r.port != svc.port() => Some(r.port),
        _ => None,
    }
}

/// `tcp-198.18.0.100-80`, `udp-2001_db8__100-53`, `fwmark-1`.
fn service_name(id: SvcId) -> String {
    match id {
        SvcId::Addr { proto, vip, port } => {
            format!(
                "{}-{}-{port}",
                proto.name(),
                vip.to_string().replace(':', "_")
            )
        }
        SvcId::Mark { mark, v6: false } => format!("fwmark-{mark}"),
        SvcId::Mark { mark, v6: true } => format!("fwmark-{mark}-v6"),
    }
}

// ---------------------------------------------------------------------------
// Command line

/// `xdpvs import-ipvsadm`: convert `ipvsadm -S` output into an xdpvs config.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// The output of `ipvsadm -S` or `ipvsadm -Sn` ("-" = standard input).
    pub file: PathBuf,
    /// `iptables-save` / `ip6tables-save` output (mangle table) holding the
    /// MARK rules of the firewall-mark services. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub iptables: Vec<PathBuf>,
    /// A data-plane interface for [director] interfaces. Repeatable.
    #[arg(long = "interface", value_name = "NAME", default_value = "eth0")]
    pub interfaces: Vec<String>,
    /// Outer source address of IPv4 IPIP/GUE packets (needed with -i reals).
    #[arg(long, value_name = "ADDR")]
    pub tunnel_src4: Option<Ipv4Addr>,
    /// Outer source address of IPv6 IPIP/GUE packets.
    #[arg(long, value_name = "ADDR")]
    pub tunnel_src6: Option<Ipv6Addr>,
    /// Write the config here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub(crate) fn read_input(p: &Path) -> Result<(String, String), String> {
    if p.as_os_str() == "-" {
        let mut s = String::new();
        return match std::io::stdin().read_to_string(&mut s) {
            Ok(_) => Ok(("<stdin>".to_string(), s)),
            Err(e) => Err(format!("<stdin>: cannot read: {e}")),
        };
    }
    let name = p.display().to_string();
    match std::fs::read_to_string(p) {
        Ok(s) => Ok((name, s)),
        Err(e) => Err(format!("{name}: cannot read: {e}")),
    }
}

/// Run `xdpvs import-ipvsadm`: exit 0 with the config written, or 1 with
/// every problem on stderr (nothing written).
pub fn run(args: &ImportArgs) -> ExitCode {
    let mut texts = Vec::new();
    for p in std::iter::once(&args.file).chain(&args.iptables) {
        match read_input(p) {
            Ok(t) => texts.push(t),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        }
    }
    let mut inputs = texts.iter().map(|(name, text)| Input { name, text });
    let Some(main) = inputs.next() else {
        return ExitCode::from(1);
    };
    let rest: Vec<Input<'_>> = inputs.collect();
    let opts = ImportOptions {
        interfaces: args.interfaces.clone(),
        tunnel_src4: args.tunnel_src4,
        tunnel_src6: args.tunnel_src6,
    };
    match import(main, &rest, &opts) {
        Ok(imp) => {
            for w in &imp.warnings {
                eprintln!("warning: {w}");
            }
            match &args.output {
                Some(path) => {
                    if let Err(e) = std::fs::write(path, &imp.toml) {
                        eprintln!("{}: cannot write: {e}", path.display());
                        return ExitCode::from(1);
                    }
                    let c = &imp.config;
                    eprintln!(
                        "{}: {} services, {} real servers, {} firewall-mark groups",
                        path.display(),
                        c.services.len(),
                        c.services.iter().map(|s| s.reals.len()).sum::<usize>(),
                        c.fwmarks.len()
                    );
                }
                // Not print!: a reader that goes away (`| head`) must not
                // make it panic on EPIPE.
                None => {
                    use std::io::Write as _;
                    let _ = std::io::stdout().lock().write_all(imp.toml.as_bytes());
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "import-ipvsadm: {} problem(s); no config written",
                e.0.len()
            );
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(
            tokenize(r#"-A -t 1.2.3.4:80 --comment "a b" 'c d' # x"#).unwrap(),
            vec!["-A", "-t", "1.2.3.4:80", "--comment", "a b", "c d"]
        );
        assert!(tokenize("a \"b").is_err());
        let l = logical_lines("a \\\n b\nc\n");
        assert_eq!(l, vec![(1, "a   b".to_string()), (3, "c".to_string())]);
    }

    #[test]
    fn clusters_and_attached_arguments() {
        let w: Vec<String> = [
            "-At",
            "1.2.3.4:80",
            "-p",
            "-M",
            "255.0.0.0",
            "-w2",
            "--weight=3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let items = parse_items(&w).unwrap();
        let got: Vec<(O, Vec<String>)> = items.into_iter().map(|i| (i.opt, i.args)).collect();
        assert_eq!(
            got,
            vec![
                (O::AddSvc, vec![]),
                (O::Tcp, vec!["1.2.3.4:80".to_string()]),
                (O::Persist, vec![]),
                (O::Netmask, vec!["255.0.0.0".to_string()]),
                (O::Weight, vec!["2".to_string()]),
                (O::Weight, vec!["3".to_string()]),
            ]
        );
    }

    #[test]
    fn addresses_ports_marks() {
        assert_eq!(
            parse_addr_port("[2001:db8::1]:https").unwrap(),
            ("2001:db8::1".parse().unwrap(), Some(443))
        );
        assert_eq!(
            parse_addr_port("198.18.0.1").unwrap(),
            ("198.18.0.1".parse().unwrap(), None)
        );
        assert!(parse_addr_port("www.example.com:http")
            .unwrap_err()
            .contains("host name"));
        assert!(parse_addr_port("198.18.0.300:80")
            .unwrap_err()
            .contains("not a valid IPv4"));
        assert_eq!(mark_value("0x1/0xffffffff"), Ok(1));
        assert_eq!(mark_value("17"), Ok(17));
        assert!(mark_value("0x1/0xff").is_err());
        assert_eq!(port_range("10000:10100"), Ok((10000, 10100)));
        assert_eq!(port_range(":1023"), Ok((1, 1023)));
        assert_eq!(
            parse_cidr("198.18.0.100/31"),
            Ok(("198.18.0.100".parse().unwrap(), 31))
        );
        assert_eq!(
            expand_prefix("198.18.0.101".parse().unwrap(), 31)
                .unwrap()
                .len(),
            2
        );
        assert!(expand_prefix("198.18.0.0".parse().unwrap(), 16).is_err());
    }
}
