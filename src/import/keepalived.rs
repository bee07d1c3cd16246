//! `xdpvs import-keepalived`: the LVS part of a `keepalived.conf`
//! (`virtual_server`, `virtual_server_group`, their real servers and
//! checkers) -> an xdpvs [`Config`], in one step, as `import-ipvsadm` does
//! for `ipvsadm -S` rules.
//!
//! The grammar is keepalived's (lib/parser.c): `!` and `#` start a comment
//! anywhere outside a quoted string, `{` and `}` open and close blocks
//! wherever they are on a line, `"..."` quotes a word, `include GLOB` splices
//! files in (relative to the including file's directory). Keyword synonyms
//! are those keepalived installs (`lb_algo`/`lvs_sched`,
//! `lb_kind`/`lvs_method`, `nb_get_retry`/`retry`).
//!
//! Mapping, and why:
//! - every `virtual_server` (and every entry of its `virtual_server_group`)
//!   becomes one `[[service]]`, as keepalived makes one IPVS service of each;
//! - firewall-mark services take their VIPs, protocols and ports from the
//!   iptables MARK rules (`--iptables`), as `import-ipvsadm` does;
//! - checkers become the real server's `health`: `interval = delay_loop`,
//!   `timeout = connect_timeout`, `fall = retry + 1` (keepalived retries
//!   `retry` times after the first failure), `rise = 1` (keepalived puts a
//!   server back on its first successful check), `on_failure = "quiesce"`
//!   with `inhibit_on_failure`, else `"remove"` (keepalived's default).
//!
//! What xdpvs cannot honour stops the import with `file:line: reason` and
//! nothing is written; what changes nothing about which real server gets a
//! packet (VRRP, global settings, notification scripts) is a warning, and
//! every warning is a comment in the output.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::build::build_snapshot;
use crate::config::schema::{
    netmask_prefix, Config, Director, FwmarkGroup, FwmarkRuleConfig, HealthKind, HealthSpec,
    OnFailure, PersistenceConfig, RealConfig, ServiceConfig, SorryConfig, DEFAULT_GUE_PORT,
    MAX_TIMEOUT, MAX_WEIGHT,
};
use crate::config::MAX_HEALTH_SECONDS;
use crate::import::ipvsadm::{
    expand_prefix, number_in, one_line, sched_flags, scheduler, sort_problems, ImportError,
    ImportOptions, Imported, Input, MarkRule, MarkRules, Problem, MAX_EXPAND,
};
use crate::service::model::{FwdMethod, Proto, ServiceKey};
use crate::service::sched::SchedParams;

/// keepalived's `IPVS_SVC_PERSISTENT_TIMEOUT`: `persistence_timeout`
/// without a value, and the timeout `persistence_granularity` implies.
pub const KEEPALIVED_PERSISTENCE_TIMEOUT: u32 = 360;
/// keepalived's default `delay_loop` (`KEEPALIVED_DEFAULT_DELAY`), seconds.
pub const KEEPALIVED_DELAY_LOOP: u32 = 60;
/// keepalived's default `connect_timeout`, seconds.
pub const KEEPALIVED_CONNECT_TIMEOUT: u32 = 5;
/// keepalived's default `retry` of a checker (`default_retry`).
pub const KEEPALIVED_RETRY: u32 = 1;
/// keepalived's default `delay_before_retry`, seconds.
pub const KEEPALIVED_DELAY_BEFORE_RETRY: u32 = 1;
/// Deepest `include` nesting followed (a loop stops here).
const MAX_INCLUDE_DEPTH: usize = 16;
/// Deepest `{ }` nesting accepted.
const MAX_BLOCK_DEPTH: usize = 32;
/// Largest xdpvs `fall`.
const MAX_FALL: u32 = 100;

/// Why a source file cannot be read (the first stage of an import).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("`include {pattern}`: no such file ({path})")]
    IncludeMissing { pattern: String, path: String },
    #[error("`include {pattern}`: bad pattern ({reason})")]
    IncludePattern { pattern: String, reason: String },
    #[error("includes nested deeper than {MAX_INCLUDE_DEPTH} (does a file include itself?)")]
    IncludeDepth,
}

// ---------------------------------------------------------------------------
// Reading: comments, quotes, includes, braces

/// A place in an input.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pos {
    file: String,
    line: usize,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Open,
    Close,
    Words(Vec<String>),
}

/// keepalived's `decomment()`: leading blanks go, `!` or `#` outside a
/// quoted string ends the line, `\#` and `\!` are the characters.
fn decomment(line: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut quote = false;
    let mut chars = line.trim_start().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quote = !quote;
                out.push(c);
            }
            '\\' if !quote && matches!(chars.peek(), Some('#' | '!')) => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '!' | '#' if !quote => break,
            c => out.push(c),
        }
    }
    if quote {
        return Err("unterminated quote (\")".to_string());
    }
    Ok(out.trim_end().to_string())
}

/// One decommented line -> words and braces, as keepalived's `read_line()`
/// and `alloc_strvec()` split it: `{` and `}` outside quotes stand alone,
/// `"a b"` is one word without its quotes.
fn segments(line: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    let flush = |words: &mut Vec<String>, out: &mut Vec<Seg>| {
        if !words.is_empty() {
            out.push(Seg::Words(std::mem::take(words)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                // A quote ends the word before it and is a word of its own.
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
                let mut q = String::new();
                for n in chars.by_ref() {
                    if n == '"' {
                        break;
                    }
                    q.push(n);
                }
                words.push(q);
            }
            '{' | '}' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
                flush(&mut words, &mut out);
                out.push(if c == '{' { Seg::Open } else { Seg::Close });
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    flush(&mut words, &mut out);
    out
}

/// `include`, `includer`, `includea`, ... followed by blanks: the pattern.
fn include_pattern(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("include")?;
    let rest = match rest.chars().next() {
        Some(c) if c == ' ' || c == '\t' => rest,
        Some('r' | 'a' | 'w' | 'm' | 'b') => rest.get(1..)?,
        _ => return None,
    };
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    Some(rest.trim())
}

/// fnmatch(3) without flags: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`, `\c`.
fn fnmatch(pat: &[char], name: &[char]) -> bool {
    let (mut p, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let pc = pat.get(p).copied();
        let nc = name.get(n).copied();
        let step = match pc {
            Some('*') => {
                star = Some((p, n));
                p += 1;
                continue;
            }
            Some('?') => Some(1),
            Some('[') => class(pat, p, nc.unwrap_or('\0')),
            Some('\\') => (pat.get(p + 1).copied() == nc).then_some(2),
            Some(c) => (Some(c) == nc).then_some(1),
            None => None,
        };
        match step {
            Some(len) => {
                p += len;
                n += 1;
            }
            None => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pat.iter().skip(p).all(|&c| c == '*')
}

/// A `[...]` class at `pat[p]` against `c`: `Some(length)` if it matches.
fn class(pat: &[char], p: usize, c: char) -> Option<usize> {
    let mut i = p + 1;
    let negate = matches!(pat.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let ch = *pat.get(i)?;
        if ch == ']' && !first {
            break;
        }
        first = false;
        if pat.get(i + 1) == Some(&'-') && pat.get(i + 2).is_some_and(|&e| e != ']') {
            let hi = *pat.get(i + 2)?;
            hit |= ch <= c && c <= hi;
            i += 3;
        } else {
            hit |= ch == c;
            i += 1;
        }
    }
    (hit != negate).then_some(i + 1 - p)
}

fn has_wildcards(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The files a pattern names, sorted as glob(3) sorts them. Only the
/// components with wildcards are listed; hidden files need a leading dot.
fn glob(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let (mut dirs, rest) = if let Some(abs) = pattern.strip_prefix('/') {
        (vec![PathBuf::from("/")], abs)
    } else {
        (vec![base.to_path_buf()], pattern)
    };
    let comps: Vec<&str> = rest.split('/').filter(|c| !c.is_empty()).collect();
    let last = comps.len().saturating_sub(1);
    for (k, comp) in comps.iter().enumerate() {
        let mut next = Vec::new();
        for d in &dirs {
            if !has_wildcards(comp) {
                let p = d.join(comp);
                if p.exists() {
                    next.push(p);
                }
                continue;
            }
            let pat: Vec<char> = comp.chars().collect();
            let Ok(rd) = std::fs::read_dir(d) else {
                continue;
            };
            let mut names: Vec<String> = rd
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') || comp.starts_with('.'))
                .filter(|n| {
                    let chars: Vec<char> = n.chars().collect();
                    fnmatch(&pat, &chars)
                })
                .collect();
            names.sort();
            for n in names {
                let p = d.join(n);
                if k == last || p.is_dir() {
                    next.push(p);
                }
            }
        }
        dirs = next;
    }
    Ok(dirs.into_iter().filter(|p| p.is_file()).collect())
}

/// Reads the main input and everything it includes into one stream of
/// segments, each with its place.
struct Reader {
    segs: Vec<(Pos, Seg)>,
    /// Every file read, in reading order (for sorting problems).
    files: Vec<String>,
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
}

fn problem(pos: &Pos, reason: impl Into<String>) -> Problem {
    Problem {
        file: pos.file.clone(),
        line: Some(pos.line),
        reason: reason.into(),
    }
}

impl Reader {
    fn read(&mut self, name: &str, text: &str, dir: &Path, depth: usize) {
        self.files.push(name.to_string());
        for (i, raw) in text.lines().enumerate() {
            let pos = Pos {
                file: name.to_string(),
                line: i + 1,
            };
            let line = match decomment(raw) {
                Ok(l) => l,
                Err(e) => {
                    self.errors.push(problem(&pos, e));
                    continue;
                }
            };
            if line.is_empty() {
                continue;
            }
            if let Some(pattern) = include_pattern(&line) {
                self.include(&pos, pattern, dir, depth);
                continue;
            }
            if let Some(reason) = unsupported_line(&line) {
                self.errors.push(problem(&pos, reason));
                continue;
            }
            for s in segments(&line) {
                self.segs.push((pos.clone(), s));
            }
        }
    }

    fn include(&mut self, pos: &Pos, pattern: &str, dir: &Path, depth: usize) {
        if depth >= MAX_INCLUDE_DEPTH {
            self.errors
                .push(problem(pos, SourceError::IncludeDepth.to_string()));
            return;
        }
        let files = match glob(dir, pattern) {
            Ok(f) => f,
            Err(reason) => {
                let e = SourceError::IncludePattern {
                    pattern: pattern.to_string(),
                    reason,
                };
                self.errors.push(problem(pos, e.to_string()));
                return;
            }
        };
        if files.is_empty() {
            let path = dir.join(pattern).display().to_string();
            if has_wildcards(pattern) {
                // keepalived too reads on when a wildcard matches nothing.
                self.warnings.push(problem(
                    pos,
                    format!("`include {pattern}` matches no file ({path}): nothing included"),
                ));
            } else {
                let e = SourceError::IncludeMissing {
                    pattern: pattern.to_string(),
                    path,
                };
                self.errors.push(problem(pos, e.to_string()));
            }
            return;
        }
        for f in files {
            let name = f.strip_prefix(".").unwrap_or(&f).display().to_string();
            match std::fs::read_to_string(&f) {
                Ok(text) => {
                    let sub = f
                        .parent()
                        .map_or_else(|| dir.to_path_buf(), Path::to_path_buf);
                    self.read(&name, &text, &sub, depth + 1);
                }
                Err(source) => {
                    let e = SourceError::Read { path: name, source };
                    self.errors.push(problem(pos, e.to_string()));
                }
            }
        }
    }
}

/// keepalived's preprocessor lines, which depend on the machine that runs
/// keepalived (or which the import does not expand).
fn unsupported_line(line: &str) -> Option<String> {
    if line.starts_with('@') {
        return Some(
            "conditional configuration (`@config_id ...`) depends on the keepalived instance \
             that reads it: keep the lines of this director without their `@` prefix"
                .to_string(),
        );
    }
    if line.starts_with("~SEQ") || line.starts_with("~LST") {
        return Some(
            "`~SEQ`/`~LST` generated lines are not expanded by the import: write the lines out"
                .to_string(),
        );
    }
    if line.starts_with('$') {
        return Some(
            "parameter definitions and substitutions (`$NAME`) are not expanded by the import: \
             write the values out"
                .to_string(),
        );
    }
    None
}

/// A keyword line and, if it opened one, its block.
#[derive(Clone, Debug)]
struct Node {
    pos: Pos,
    words: Vec<String>,
    block: Option<Vec<Node>>,
}

impl Node {
    fn key(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }
    fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }
    fn children(&self) -> &[Node] {
        self.block.as_deref().unwrap_or(&[])
    }
}

/// Segments -> a tree of keyword lines and blocks. A `{` opens the block of
/// the keyword line right before it (on the same line or the line before).
fn tree(
    segs: &[(Pos, Seg)],
    i: &mut usize,
    opener: Option<&Pos>,
    depth: usize,
) -> Result<Vec<Node>, Problem> {
    let mut out: Vec<Node> = Vec::new();
    let mut can_open = false;
    while let Some((pos, seg)) = segs.get(*i) {
        *i += 1;
        match seg {
            Seg::Words(w) => {
                out.push(Node {
                    pos: pos.clone(),
                    words: w.clone(),
                    block: None,
                });
                can_open = true;
            }
            Seg::Open => {
                if depth >= MAX_BLOCK_DEPTH {
                    return Err(problem(
                        pos,
                        format!("blocks nested deeper than {MAX_BLOCK_DEPTH}"),
                    ));
                }
                let last = out.last_mut().filter(|_| can_open);
                let Some(last) = last else {
                    return Err(problem(
                        pos,
                        "`{` without a keyword before it (keepalived ignores it and reads the \
                         block's lines one level up, which is not what was meant)",
                    ));
                };
                let opened = last.pos.clone();
                last.block = Some(tree(segs, i, Some(&opened), depth + 1)?);
                can_open = false;
            }
            Seg::Close => {
                if opener.is_some() {
                    return Ok(out);
                }
                return Err(problem(pos, "`}` without a matching `{`"));
            }
        }
    }
    match opener {
        Some(p) => Err(problem(
            p,
            "this block is not closed (`}` missing before the end of the input)",
        )),
        None => Ok(out),
    }
}

// ---------------------------------------------------------------------------
// keepalived's LVS data

/// A value with the line that set it.
#[derive(Clone, Debug)]
struct At<T> {
    v: T,
    pos: Pos,
}

#[derive(Clone, Debug, Default)]
struct Timing {
    delay_loop: Option<At<u32>>,
    retry: Option<At<u32>>,
    delay_before_retry: Option<At<u32>>,
    connect_timeout: Option<At<u32>>,
}

impl Timing {
    /// `self` over `base`, key by key (keepalived's inheritance).
    fn over(&self, base: &Timing) -> Timing {
        Timing {
            delay_loop: self.delay_loop.clone().or_else(|| base.delay_loop.clone()),
            retry: self.retry.clone().or_else(|| base.retry.clone()),
            delay_before_retry: self
                .delay_before_retry
                .clone()
                .or_else(|| base.delay_before_retry.clone()),
            connect_timeout: self
                .connect_timeout
                .clone()
                .or_else(|| base.connect_timeout.clone()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fwd {
    method: FwdMethod,
    gue_port: Option<u16>,
}

#[derive(Clone, Debug)]
enum VsId {
    Addr { vip: IpAddr, port: u16 },
    Fwmark(u32),
    Group(String),
}

#[derive(Clone, Debug)]
enum CheckKind {
    Tcp,
    Http {
        ssl: bool,
    },
    Udp,
    /// MISC_CHECK: an exec check.
    Misc,
}

#[derive(Clone, Debug)]
struct Checker {
    pos: Pos,
    kind: CheckKind,
    keyword: String,
    connect_port: Option<u16>,
    timing: Timing,
    path: Option<String>,
    expect_status: Option<u16>,
    send: Option<String>,
    expect: Option<String>,
    connect_ip: Option<At<IpAddr>>,
    /// MISC_CHECK `misc_path`, split into the program and its arguments.
    cmd: Option<Vec<String>>,
    /// `alpha` in the checker.
    alpha: bool,
}

#[derive(Clone, Debug)]
struct Rs {
    pos: Pos,
    addr: IpAddr,
    port: Option<u16>,
    weight: Option<u32>,
    fwd: Option<At<Fwd>>,
    u_threshold: u32,
    l_threshold: u32,
    inhibit: Option<bool>,
    timing: Timing,
    checkers: Vec<Checker>,
    alpha: bool,
    notify_up: Option<Vec<String>>,
    notify_down: Option<Vec<String>>,
}

#[derive(Clone, Debug)]
struct Vs {
    pos: Pos,
    id: VsId,
    family_v6: Option<bool>,
    proto: Option<At<Proto>>,
    scheduler: Option<At<String>>,
    flags: Vec<At<String>>,
    fwd: Option<At<Fwd>>,
    persistence_timeout: Option<u32>,
    granularity: Option<At<String>>,
    timing: Timing,
    inhibit: bool,
    weight: u32,
    reals: Vec<Rs>,
    alpha: bool,
    omega: bool,
    /// `quorum`, `hysteresis`, `quorum_up`, `quorum_down`.
    quorum: u32,
    hysteresis: u32,
    quorum_up: Option<Vec<String>>,
    quorum_down: Option<Vec<String>>,
    /// `sorry_server IP [PORT]` and its `sorry_server_lvs_method`.
    sorry: Option<At<(IpAddr, Option<u16>)>>,
    sorry_fwd: Option<At<Fwd>>,
    /// Comments for the service in the output.
    notes: Vec<String>,
}

#[derive(Clone, Debug)]
enum GroupEntry {
    Addrs { vips: Vec<IpAddr>, port: u16 },
    Fwmark { mark: u32, v6: Option<bool> },
}

#[derive(Clone, Debug)]
struct Group {
    pos: Pos,
    entries: Vec<At<GroupEntry>>,
}

/// Where each generated service and real server came from.
#[derive(Clone, Debug, Default)]
struct Locs {
    /// Per service: its line, and its real servers' lines.
    services: Vec<(Pos, Vec<Pos>)>,
    /// Per fwmark group: the service line, and each rule's MARK rule line.
    groups: Vec<(Pos, Vec<Pos>)>,
}

/// `prefix[N]` at the start of `s` -> (N, rest).
fn index_after<'s>(s: &'s str, prefix: &str) -> Option<(usize, &'s str)> {
    let rest = s.strip_prefix(prefix)?.strip_prefix('[')?;
    let (num, rest) = rest.split_once(']')?;
    Some((num.parse().ok()?, rest))
}

impl Locs {
    fn place(&self, main: &str, key: &str, reason: &str) -> Problem {
        let reason = if key.is_empty() {
            reason.to_string()
        } else {
            format!("{reason} (in the imported config: {key})")
        };
        if let Some((i, rest)) = index_after(key, "service") {
            if let Some((svc, reals)) = self.services.get(i) {
                let pos = index_after(rest, ".real")
                    .and_then(|(j, _)| reals.get(j))
                    .unwrap_or(svc);
                return problem(pos, reason);
            }
        }
        if let Some((g, rest)) = index_after(key, "fwmark") {
            if let Some((svc, rules)) = self.groups.get(g) {
                let pos = index_after(rest, ".rules")
                    .and_then(|(r, _)| rules.get(r))
                    .unwrap_or(svc);
                return problem(pos, reason);
            }
        }
        if key.starts_with("director.interfaces") {
            return Problem {
                file: "--interface".to_string(),
                line: None,
                reason,
            };
        }
        Problem {
            file: main.to_string(),
            line: None,
            reason,
        }
    }
}

// ---------------------------------------------------------------------------
// Values

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "on" | "yes" => Some(true),
        "false" | "off" | "no" => Some(false),
        _ => None,
    }
}

/// keepalived timers: seconds with up to 6 decimals. xdpvs counts whole
/// seconds: a fraction rounds up (returned `true`).
fn parse_secs(s: &str) -> Option<(u32, bool)> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u32 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let fractional = frac.bytes().any(|b| b != b'0');
    Some((whole.saturating_add(u32::from(fractional)), fractional))
}

fn parse_addr(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>().map_err(|_| {
        if !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && s.bytes().any(|b| b.is_ascii_alphabetic())
        {
            format!("`{s}` is a host name, not an address: xdpvs does not resolve names")
        } else {
            format!("`{s}` is not an IPv4 or IPv6 address")
        }
    })
}

/// A port word; 0 (or none) means "no port" as in keepalived.
fn parse_port(s: &str) -> Result<u16, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u16>()
            .map_err(|_| format!("port {s} is out of range (0-65535)"));
    }
    Err(format!("port `{s}` is not a number"))
}

/// A `virtual_server_group` address: `A`, `A-B` (last byte/group),
/// `A-FULL`, `A/PREFIX`.
fn group_addrs(s: &str) -> Result<Vec<IpAddr>, String> {
    if let Some((a, p)) = s.split_once('/') {
        let addr = parse_addr(a)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p.parse::<u8>() {
            Ok(n) if n >= 1 && n <= max => n,
            _ => return Err(format!("`{s}`: bad prefix length")),
        };
        let all = expand_prefix(addr, prefix)?;
        if all.first() != Some(&addr) {
            return Err(format!(
                "`{s}`: address bits beyond the prefix are set (keepalived skips it too)"
            ));
        }
        return Ok(all);
    }
    let Some((a, end)) = s.split_once('-') else {
        return Ok(vec![parse_addr(s)?]);
    };
    let start = parse_addr(a)?;
    let too_many =
        || format!("range `{s}` has more than {MAX_EXPAND} addresses; split it or use a fwmark");
    match start {
        IpAddr::V4(v4) => {
            let lo = u32::from(v4);
            let hi = if end.contains('.') {
                match end.parse::<Ipv4Addr>() {
                    Ok(e) => u32::from(e),
                    Err(_) => return Err(format!("range `{s}`: bad end address")),
                }
            } else {
                let last = end
                    .parse::<u8>()
                    .map_err(|_| format!("range `{s}`: the end is not a byte (0-255)"))?;
                (lo & !0xff) | u32::from(last)
            };
            if hi <= lo {
                return Err(format!(
                    "range `{s}`: the end is not greater than the start (keepalived skips it too)"
                ));
            }
            if hi - lo >= MAX_EXPAND {
                return Err(too_many());
            }
            Ok((lo..=hi).map(|a| IpAddr::V4(Ipv4Addr::from(a))).collect())
        }
        IpAddr::V6(v6) => {
            let lo = u128::from(v6);
            let hi = if end.contains(':') {
                match end.parse::<Ipv6Addr>() {
                    Ok(e) => u128::from(e),
                    Err(_) => return Err(format!("range `{s}`: bad end address")),
                }
            } else {
                let last = u16::from_str_radix(end, 16)
                    .map_err(|_| format!("range `{s}`: the end is not a hex group (0-ffff)"))?;
                (lo & !0xffff) | u128::from(last)
            };
            if hi <= lo {
                return Err(format!(
                    "range `{s}`: the end is not greater than the start (keepalived skips it too)"
                ));
            }
            if hi - lo >= u128::from(MAX_EXPAND) {
                return Err(too_many());
            }
            Ok((lo..=hi).map(|a| IpAddr::V6(Ipv6Addr::from(a))).collect())
        }
    }
}

/// keepalived hex strings (`payload`, `require_reply`): hex digits, blanks
/// allowed between bytes.
fn hex_text(words: &[String]) -> Result<String, String> {
    let hex: String = words
        .concat()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if !hex.len().is_multiple_of(2) {
        return Err(format!("hex string `{hex}` has an odd number of digits"));
    }
    let mut bytes = Vec::new();
    let chars: Vec<char> = hex.chars().collect();
    for pair in chars.chunks(2) {
        let s: String = pair.iter().collect();
        match u8::from_str_radix(&s, 16) {
            Ok(b) => bytes.push(b),
            Err(_) => {
                return Err(format!(
                    "hex string `{hex}`: `{s}` is not a hex byte (wildcard bytes are not \
                     supported)"
                ))
            }
        }
    }
    String::from_utf8(bytes).map_err(|_| {
        format!("hex string `{hex}` is not text: xdpvs udp checks send and expect text")
    })
}

// ---------------------------------------------------------------------------
// Walking the tree

/// Keywords outside `virtual_server` that do not balance anything.
const HARMLESS_TOP: &[(&str, &str)] = &[
    ("global_defs", "global settings (router id, notification e-mail, scripts security) are not part of an xdpvs config"),
    ("vrrp_instance", "VRRP (failing the VIPs over between directors) is not part of xdpvs; keep keepalived for VRRP with the virtual_server blocks removed"),
    ("vrrp_sync_group", "VRRP is not part of xdpvs; keep keepalived for VRRP"),
    ("vrrp_script", "VRRP is not part of xdpvs; keep keepalived for VRRP"),
    ("vrrp_track_process", "VRRP is not part of xdpvs; keep keepalived for VRRP"),
    ("vrrp_track_file", "VRRP is not part of xdpvs; keep keepalived for VRRP"),
    ("track_process", "VRRP is not part of xdpvs; keep keepalived for VRRP"),
    ("track_file", "tracked files drive VRRP priorities and FILE_CHECK, neither of which xdpvs has"),
    ("garp_group", "gratuitous ARP for VRRP is not part of xdpvs"),
    ("static_ipaddress", "addresses on the director's interfaces are not part of an xdpvs config (xdpvs needs no VIP on its interfaces)"),
    ("static_routes", "routes are not part of an xdpvs config"),
    ("static_rules", "policy routing rules are not part of an xdpvs config"),
    ("bfd_instance", "BFD is not part of xdpvs"),
    ("linkbeat_use_polling", "a VRRP setting"),
    ("net_namespace", "xdpvs runs in the namespace it is started in"),
    ("net_namespace_ipvs", "xdpvs does not use IPVS"),
    ("namespace_with_ipsets", "xdpvs does not use ipsets"),
    ("instance", "an instance name only names keepalived's files"),
    ("use_pid_dir", "a keepalived process setting"),
    ("child_wait_time", "a keepalived process setting"),
    ("SSL", "client certificates of SSL_GET checks; xdpvs makes no TLS checks"),
];

/// Keywords of a `virtual_server` (or `real_server`) that change nothing
/// about where packets go.
fn harmless_vs(key: &str) -> Option<&'static str> {
    Some(match key {
        "ha_suspend" => "xdpvs checks run whether or not the director holds the VIPs",
        "smtp_alert" => "xdpvs sends no e-mail; it logs every health state change",
        "snmp_name" => "xdpvs has no SNMP agent; see its Prometheus metrics",
        "warmup" => "xdpvs starts checking at once",
        "hashed" => "IPVS's `hashed` flag has no effect on scheduling",
        "log_all_failures" => "xdpvs logs state changes",
        _ => return None,
    })
}

struct Walker {
    vss: Vec<Vs>,
    groups: HashMap<String, Group>,
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Walker {
    fn err(&mut self, pos: &Pos, reason: impl Into<String>) {
        self.errors.push(problem(pos, reason));
    }
    fn warn(&mut self, pos: &Pos, reason: impl Into<String>) {
        self.warnings.push(problem(pos, reason));
    }

    fn need_arg<'n>(&mut self, n: &'n Node, what: &str) -> Option<&'n str> {
        let a = n.arg(1);
        if a.is_none() {
            self.err(&n.pos, format!("`{}` needs {what}", n.key()));
        }
        a
    }

    /// A script keyword's command (`misc_path`, `notify_up`, `notify_down`):
    /// its words, a quoted one split at blanks, as keepalived splits a
    /// script line into the program and its arguments (no shell).
    fn script(&mut self, n: &Node) -> Option<Vec<String>> {
        let words: Vec<String> = n
            .words
            .get(1..)
            .unwrap_or(&[])
            .iter()
            .flat_map(|w| w.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect();
        if words.is_empty() {
            self.err(&n.pos, format!("`{}` needs a program", n.key()));
            return None;
        }
        Some(words)
    }

    fn number(&mut self, n: &Node, what: &str, lo: u32, hi: u32) -> Option<u32> {
        let a = self.need_arg(n, what)?;
        match number_in(a, &format!("`{}`", n.key()), lo, hi) {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(&n.pos, e);
                None
            }
        }
    }

    /// A timer keyword in whole seconds (1 or more, unless `zero_ok`).
    fn secs(&mut self, n: &Node, zero_ok: bool) -> Option<At<u32>> {
        let a = self.need_arg(n, "a time in seconds")?;
        let Some((v, rounded)) = parse_secs(a) else {
            self.err(
                &n.pos,
                format!("`{} {a}` is not a time in seconds", n.key()),
            );
            return None;
        };
        if v == 0 && !zero_ok {
            self.err(&n.pos, format!("`{} {a}`: must be at least 1 s", n.key()));
            return None;
        }
        if rounded {
            self.warn(
                &n.pos,
                format!(
                    "`{} {a}` rounded up to {v} s: xdpvs health checks count whole seconds",
                    n.key()
                ),
            );
        }
        Some(At {
            v,
            pos: n.pos.clone(),
        })
    }

    /// The keywords every level (virtual server, real server, checker)
    /// takes for its checks. `true` if `n` was one.
    fn timing(&mut self, n: &Node, t: &mut Timing) -> bool {
        match n.key() {
            "delay_loop" => t.delay_loop = self.secs(n, false),
            "connect_timeout" => t.connect_timeout = self.secs(n, false),
            "delay_before_retry" => t.delay_before_retry = self.secs(n, true),
            "retry" | "nb_get_retry" => {
                t.retry = self.number(n, "a number", 0, u32::MAX).map(|v| At {
                    v,
                    pos: n.pos.clone(),
                })
            }
            _ => return false,
        }
        true
    }

    fn top(&mut self, nodes: &[Node]) {
        for n in nodes {
            match n.key() {
                "virtual_server" => self.virtual_server(n),
                "virtual_server_group" => self.group(n),
                "global_defs" => {
                    if let Some(l) = n
                        .children()
                        .iter()
                        .find(|c| c.key().starts_with("lvs_sync_daemon"))
                    {
                        self.warn(
                            &l.pos,
                            "`lvs_sync_daemon` ignored: xdpvs has no IPVS connection \
                             synchronisation daemon (a director that takes over starts with an \
                             empty connection table)",
                        );
                    }
                    self.harmless_top(n);
                }
                k if k.starts_with("lvs_") => self.warn(
                    &n.pos,
                    format!("`{k}` ignored: an IPVS daemon setting xdpvs does not have"),
                ),
                _ => self.harmless_top(n),
            }
        }
    }

    fn harmless_top(&mut self, n: &Node) {
        let key = n.key();
        if let Some((_, why)) = HARMLESS_TOP.iter().find(|(k, _)| *k == key) {
            self.warn(&n.pos, format!("`{key}` ignored: {why}"));
        } else if key.starts_with("vrrp_") {
            self.warn(
                &n.pos,
                format!("`{key}` ignored: VRRP is not part of xdpvs; keep keepalived for VRRP"),
            );
        } else {
            self.warn(&n.pos, format!("unknown keyword `{key}` ignored"));
        }
    }

    fn group(&mut self, n: &Node) {
        let Some(name) = self.need_arg(n, "a name") else {
            return;
        };
        let name = name.to_string();
        if n.block.is_none() {
            self.err(
                &n.pos,
                format!("virtual_server_group {name} has no `{{ }}` block"),
            );
            return;
        }
        if let Some(g) = self.groups.get(&name) {
            let first = g.pos.clone();
            self.err(
                &n.pos,
                format!("virtual_server_group {name} is already defined at {first}"),
            );
            return;
        }
        let mut entries = Vec::new();
        for e in n.children() {
            if e.block.is_some() {
                self.err(&e.pos, "a virtual_server_group entry has no block");
                continue;
            }
            match self.group_entry(e) {
                Ok(g) => entries.push(At {
                    v: g,
                    pos: e.pos.clone(),
                }),
                Err(r) => self.err(&e.pos, r),
            }
        }
        if entries.is_empty() && n.children().is_empty() {
            self.warn(
                &n.pos,
                format!("virtual_server_group {name} has no entries (keepalived removes it too)"),
            );
        }
        self.groups.insert(
            name,
            Group {
                pos: n.pos.clone(),
                entries,
            },
        );
    }

    fn group_entry(&mut self, e: &Node) -> Result<GroupEntry, String> {
        if e.key() == "fwmark" {
            let m = e.arg(1).ok_or("`fwmark` needs a mark")?;
            let mark = number_in(m, "firewall mark", 1, u32::MAX)?;
            let v6 = match e.arg(2) {
                None => None,
                Some("inet") => Some(false),
                Some("inet6") => Some(true),
                Some(f) => return Err(format!("unknown address family `{f}` (inet or inet6)")),
            };
            if let Some(x) = e.arg(3) {
                return Err(format!("unexpected `{x}` after the fwmark entry"));
            }
            return Ok(GroupEntry::Fwmark { mark, v6 });
        }
        let vips = group_addrs(e.key())?;
        let port = match e.arg(1) {
            Some(p) => parse_port(p)?,
            None => 0,
        };
        if let Some(x) = e.arg(2) {
            return Err(format!("unexpected `{x}` after the address and port"));
        }
        Ok(GroupEntry::Addrs { vips, port })
    }

    fn virtual_server(&mut self, n: &Node) {
        let id = match (n.arg(1), n.arg(2)) {
            (Some("group"), Some(g)) => VsId::Group(g.to_string()),
            (Some("fwmark"), Some(m)) => match number_in(m, "firewall mark", 1, u32::MAX) {
                Ok(mark) => VsId::Fwmark(mark),
                Err(e) => return self.err(&n.pos, e),
            },
            (Some(a), port) => {
                let vip = match parse_addr(a) {
                    Ok(v) => v,
                    Err(e) => return self.err(&n.pos, e),
                };
                let port = match port.map(parse_port).transpose() {
                    Ok(p) => p.unwrap_or(0),
                    Err(e) => return self.err(&n.pos, e),
                };
                VsId::Addr { vip, port }
            }
            (None, _) => {
                return self.err(
                    &n.pos,
                    "`virtual_server` needs an address and port, `fwmark N` or `group NAME`",
                )
            }
        };
        if n.block.is_none() {
            return self.err(&n.pos, "virtual_server has no `{ }` block");
        }
        let mut vs = Vs {
            pos: n.pos.clone(),
            family_v6: match &id {
                VsId::Addr { vip, .. } => Some(vip.is_ipv6()),
                _ => None,
            },
            id,
            proto: None,
            scheduler: None,
            flags: Vec::new(),
            fwd: None,
            persistence_timeout: None,
            granularity: None,
            timing: Timing::default(),
            inhibit: false,
            weight: 1,
            reals: Vec::new(),
            alpha: false,
            omega: false,
            quorum: crate::config::schema::DEFAULT_QUORUM,
            hysteresis: 0,
            quorum_up: None,
            quorum_down: None,
            sorry: None,
            sorry_fwd: None,
            notes: Vec::new(),
        };
        for c in n.children() {
            if self.timing(c, &mut vs.timing) {
                continue;
            }
            match c.key() {
                "real_server" => {
                    if let Some(r) = self.real_server(c) {
                        vs.reals.push(r);
                    }
                }
                "lb_algo" | "lvs_sched" => {
                    if let Some(a) = self.need_arg(c, "a scheduler") {
                        match scheduler(a) {
                            Ok(s) => {
                                vs.scheduler = Some(At {
                                    v: s,
                                    pos: c.pos.clone(),
                                })
                            }
                            Err(e) => self.err(&c.pos, e),
                        }
                    }
                }
                "lb_kind" | "lvs_method" => vs.fwd = self.forwarding(c),
                "protocol" => {
                    if let Some(a) = self.need_arg(c, "TCP, UDP or SCTP") {
                        match a.to_ascii_uppercase().as_str() {
                            "TCP" => {
                                vs.proto = Some(At {
                                    v: Proto::Tcp,
                                    pos: c.pos.clone(),
                                })
                            }
                            "UDP" => {
                                vs.proto = Some(At {
                                    v: Proto::Udp,
                                    pos: c.pos.clone(),
                                })
                            }
                            "SCTP" => self.err(
                                &c.pos,
                                "SCTP services are not supported: xdpvs balances tcp and udp",
                            ),
                            _ => self.err(&c.pos, format!("unknown protocol `{a}`")),
                        }
                    }
                }
                "persistence_timeout" => {
                    vs.persistence_timeout = match c.arg(1) {
                        None => Some(KEEPALIVED_PERSISTENCE_TIMEOUT),
                        Some(_) => self.number(c, "seconds", 1, MAX_TIMEOUT),
                    }
                }
                "persistence_granularity" => {
                    if let Some(a) = self.need_arg(c, "a netmask or an IPv6 prefix length") {
                        vs.granularity = Some(At {
                            v: a.to_string(),
                            pos: c.pos.clone(),
                        });
                    }
                }
                "persistence_engine" => self.err(
                    &c.pos,
                    format!(
                        "persistence engine `{}` is not supported: xdpvs persistence is by \
                         client address only",
                        c.arg(1).unwrap_or("")
                    ),
                ),
                "ops" => self.err(
                    &c.pos,
                    "one-packet scheduling (`ops`) is not supported: xdpvs schedules UDP per \
                     flow (remove `ops` to accept per-flow scheduling)",
                ),
                "flag-1" | "flag-2" | "flag-3" | "sh-port" | "sh-fallback" | "mh-port"
                | "mh-fallback" => vs.flags.push(At {
                    v: c.key().to_string(),
                    pos: c.pos.clone(),
                }),
                "ip_family" => match c.arg(1) {
                    Some("inet") => vs.family_v6 = Some(false),
                    Some("inet6") => vs.family_v6 = Some(true),
                    other => self.err(
                        &c.pos,
                        format!(
                            "unknown address family `{}` (inet or inet6)",
                            other.unwrap_or("")
                        ),
                    ),
                },
                "inhibit_on_failure" => vs.inhibit = true,
                "weight" => {
                    if let Some(w) = self.number(c, "a weight", 1, MAX_WEIGHT) {
                        vs.weight = w;
                    }
                }
                "alpha" => vs.alpha = true,
                "omega" => vs.omega = true,
                "quorum" => {
                    if let Some(n) = self.number(c, "a total weight", 1, u32::MAX) {
                        vs.quorum = n;
                    }
                }
                "hysteresis" => {
                    if let Some(n) = self.number(c, "a weight", 0, u32::MAX) {
                        vs.hysteresis = n;
                    }
                }
                "quorum_up" | "quorum_down" => {
                    let cmd = self.script(c);
                    if c.key() == "quorum_up" {
                        vs.quorum_up = cmd;
                    } else {
                        vs.quorum_down = cmd;
                    }
                }
                "sorry_server" => {
                    let Some(a) = self.need_arg(c, "an address") else {
                        continue;
                    };
                    let addr = match parse_addr(a) {
                        Ok(a) => a,
                        Err(e) => {
                            self.err(&c.pos, e);
                            continue;
                        }
                    };
                    let port = match c.arg(2).map(parse_port) {
                        None | Some(Ok(0)) => None,
                        Some(Ok(p)) => Some(p),
                        Some(Err(e)) => {
                            self.err(&c.pos, e);
                            continue;
                        }
                    };
                    vs.sorry = Some(At {
                        v: (addr, port),
                        pos: c.pos.clone(),
                    });
                }
                "sorry_server_lvs_method" => vs.sorry_fwd = self.forwarding(c),
                "sorry_server_inhibit" => {}
                "virtualhost" => self.warn(
                    &c.pos,
                    "`virtualhost` ignored: xdpvs http checks send the real server's address \
                     as the Host header",
                ),
                k => {
                    if let Some(why) = harmless_vs(k) {
                        self.warn(&c.pos, format!("`{k}` ignored: {why}"));
                    } else {
                        self.warn(
                            &c.pos,
                            format!("unknown keyword `{k}` in virtual_server ignored"),
                        );
                    }
                }
            }
        }
        if vs.reals.is_empty() && vs.sorry.is_none() {
            self.warn(
                &vs.pos,
                "virtual_server has no real servers: not imported (keepalived ignores it too)",
            );
            return;
        }
        self.vss.push(vs);
    }

    /// `lb_kind`/`lvs_method NAT|DR|TUN [type ipip|gue] [port N] [csum...]`.
    fn forwarding(&mut self, n: &Node) -> Option<At<Fwd>> {
        let m = self.need_arg(n, "NAT, DR or TUN")?;
        let method = match m {
            "NAT" => FwdMethod::Nat,
            "DR" => FwdMethod::Dr,
            "TUN" => FwdMethod::Ipip,
            other => {
                self.err(
                    &n.pos,
                    format!("unknown forwarding method `{other}` (NAT, DR or TUN)"),
                );
                return None;
            }
        };
        let mut fwd = Fwd {
            method,
            gue_port: None,
        };
        let mut i = 2;
        while let Some(w) = n.arg(i) {
            i += 1;
            match w {
                "type" => match n.arg(i) {
                    Some("ipip") => fwd.method = FwdMethod::Ipip,
                    Some("gue") => fwd.method = FwdMethod::Gue,
                    Some("gre") => {
                        self.err(
                            &n.pos,
                            "GRE tunnels are not supported: xdpvs tunnels with ipip or gue",
                        );
                        return None;
                    }
                    other => {
                        self.err(
                            &n.pos,
                            format!(
                                "unknown tunnel type `{}` (ipip or gue)",
                                other.unwrap_or("")
                            ),
                        );
                        return None;
                    }
                },
                "port" => match n.arg(i).map(|p| number_in(p, "GUE port", 1, 65535)) {
                    Some(Ok(p)) => fwd.gue_port = u16::try_from(p).ok(),
                    Some(Err(e)) => {
                        self.err(&n.pos, e);
                        return None;
                    }
                    None => {
                        self.err(&n.pos, "`port` needs the GUE port");
                        return None;
                    }
                },
                "nocsum" => continue,
                "csum" | "remcsum" => {
                    self.warn(
                        &n.pos,
                        format!(
                            "`{w}` ignored: xdpvs sends GUE with a zero UDP checksum over IPv4, \
                             a full one over IPv6 and no remote-checksum option, which a GUE \
                             receiver accepts whatever the sender's checksum mode"
                        ),
                    );
                    continue;
                }
                other => {
                    self.err(&n.pos, format!("unknown tunnel option `{other}`"));
                    return None;
                }
            }
            i += 1;
        }
        if method != FwdMethod::Ipip && n.arg(2).is_some() {
            self.err(&n.pos, format!("tunnel options apply only to TUN, not {m}"));
            return None;
        }
        if (fwd.method == FwdMethod::Gue) != fwd.gue_port.is_some() {
            self.err(
                &n.pos,
                "gue tunnels need `port N`, and only gue tunnels take a port (keepalived \
                 refuses it too)",
            );
            return None;
        }
        Some(At {
            v: fwd,
            pos: n.pos.clone(),
        })
    }

    fn real_server(&mut self, n: &Node) -> Option<Rs> {
        let a = self.need_arg(n, "an address")?;
        let addr = match parse_addr(a) {
            Ok(a) => a,
            Err(e) => {
                self.err(&n.pos, e);
                return None;
            }
        };
        let port = match n.arg(2).map(parse_port) {
            None | Some(Ok(0)) => None,
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                self.err(&n.pos, e);
                return None;
            }
        };
        let mut rs = Rs {
            pos: n.pos.clone(),
            addr,
            port,
            weight: None,
            fwd: None,
            u_threshold: 0,
            l_threshold: 0,
            inhibit: None,
            timing: Timing::default(),
            checkers: Vec::new(),
            alpha: false,
            notify_up: None,
            notify_down: None,
        };
        for c in n.children() {
            if self.timing(c, &mut rs.timing) {
                continue;
            }
            match c.key() {
                "weight" => rs.weight = self.number(c, "a weight", 0, MAX_WEIGHT),
                "lvs_method" | "lb_kind" => rs.fwd = self.forwarding(c),
                "uthreshold" => {
                    rs.u_threshold = self
                        .number(c, "a threshold", 0, i32::MAX as u32)
                        .unwrap_or(0)
                }
                "lthreshold" => {
                    rs.l_threshold = self
                        .number(c, "a threshold", 0, i32::MAX as u32)
                        .unwrap_or(0)
                }
                "inhibit_on_failure" => match c.arg(1) {
                    None => rs.inhibit = Some(true),
                    Some(b) => match parse_bool(b) {
                        Some(v) => rs.inhibit = Some(v),
                        None => self.err(
                            &c.pos,
                            format!(
                                "`inhibit_on_failure {b}`: expected on/off, yes/no or true/false"
                            ),
                        ),
                    },
                },
                "notify_up" | "notify_down" => {
                    let cmd = self.script(c);
                    if c.key() == "notify_up" {
                        rs.notify_up = cmd;
                    } else {
                        rs.notify_down = cmd;
                    }
                }
                "alpha" => rs.alpha = true,
                "virtualhost" => self.warn(
                    &c.pos,
                    "`virtualhost` ignored: xdpvs http checks send the real server's address \
                     as the Host header",
                ),
                "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "UDP_CHECK" | "MISC_CHECK" => {
                    if let Some(ch) = self.checker(c) {
                        rs.checkers.push(ch);
                    }
                }
                k @ ("SMTP_CHECK" | "DNS_CHECK" | "PING_CHECK" | "FILE_CHECK" | "BFD_CHECK"
                | "track_file" | "track_bfd") => self.err(
                    &c.pos,
                    format!(
                        "{k} is not supported: xdpvs checks with tcp connect, http GET, udp and \
                         programs (MISC_CHECK) only; replace it by a TCP_CHECK on the service \
                         port to import this config"
                    ),
                ),
                k => {
                    if let Some(why) = harmless_vs(k) {
                        self.warn(&c.pos, format!("`{k}` ignored: {why}"));
                    } else {
                        self.warn(
                            &c.pos,
                            format!("unknown keyword `{k}` in real_server ignored"),
                        );
                    }
                }
            }
        }
        for ch in &rs.checkers {
            if let Some(ip) = ch.connect_ip.as_ref().filter(|ip| ip.v != addr) {
                let pos = ip.pos.clone();
                self.err(
                    &pos,
                    format!(
                        "`connect_ip {}` checks another address than the real server {addr}: \
                         xdpvs checks the real server itself",
                        ip.v
                    ),
                );
            }
        }
        Some(rs)
    }

    fn checker(&mut self, n: &Node) -> Option<Checker> {
        let keyword = n.key().to_string();
        let kind = match n.key() {
            "TCP_CHECK" => CheckKind::Tcp,
            "HTTP_GET" => CheckKind::Http { ssl: false },
            "SSL_GET" => CheckKind::Http { ssl: true },
            "MISC_CHECK" => CheckKind::Misc,
            _ => CheckKind::Udp,
        };
        let mut ch = Checker {
            pos: n.pos.clone(),
            kind,
            keyword,
            connect_port: None,
            timing: Timing::default(),
            path: None,
            expect_status: None,
            send: None,
            expect: None,
            connect_ip: None,
            cmd: None,
            alpha: false,
        };
        let mut urls = 0usize;
        for c in n.children() {
            if self.timing(c, &mut ch.timing) {
                continue;
            }
            let http = matches!(ch.kind, CheckKind::Http { .. });
            let udp = matches!(ch.kind, CheckKind::Udp);
            let misc = matches!(ch.kind, CheckKind::Misc);
            match c.key() {
                "misc_path" if misc => ch.cmd = self.script(c),
                "misc_timeout" if misc => ch.timing.connect_timeout = self.secs(c, false),
                "misc_dynamic" if misc => self.warn(
                    &c.pos,
                    "`misc_dynamic` not supported: xdpvs takes exit status 0 as up and any \
                     other as down; keepalived set the weight from statuses 2-255 (up with \
                     weight status-2), which here take the server down",
                ),
                "user" if misc => self.warn(
                    &c.pos,
                    "`user` ignored: xdpvs runs the check as the director's own user",
                ),
                "alpha" => ch.alpha = true,
                "connect_port" => {
                    ch.connect_port = self
                        .number(c, "a port", 1, 65535)
                        .and_then(|p| u16::try_from(p).ok())
                }
                "connect_ip" => {
                    // Compared with the real server's address by the caller.
                    if let Some(a) = self.need_arg(c, "an address") {
                        match parse_addr(a) {
                            Ok(ip) => {
                                ch.connect_ip = Some(At {
                                    v: ip,
                                    pos: c.pos.clone(),
                                })
                            }
                            Err(e) => self.err(&c.pos, e),
                        }
                    }
                }
                "bindto" | "bind_port" | "bind_if" | "fwmark" => self.warn(
                    &c.pos,
                    format!(
                        "`{}` ignored: xdpvs probes from the director's own address chosen by \
                         the routing table",
                        c.key()
                    ),
                ),
                "warmup" | "log_all_failures" => self.warn(
                    &c.pos,
                    format!(
                        "`{}` ignored: {}",
                        c.key(),
                        harmless_vs(c.key()).unwrap_or("xdpvs starts every real server up")
                    ),
                ),
                "url" if http => {
                    urls += 1;
                    if matches!(ch.kind, CheckKind::Http { ssl: true }) {
                        // Not checked at all; the SSL_GET warning says so.
                    } else if urls == 1 {
                        self.url(c, &mut ch);
                    } else {
                        self.warn(
                            &c.pos,
                            "url not checked: an xdpvs http check requests one path (the first \
                             url); keepalived required every url to pass",
                        );
                    }
                }
                k @ ("virtualhost" | "http_protocol" | "enable_sni" | "sni_name"
                | "fast_recovery" | "tls_compliant")
                    if http =>
                {
                    self.warn(
                        &c.pos,
                        format!(
                            "`{k}` ignored: xdpvs http checks send `GET path HTTP/1.0` with the \
                             real server's address as Host"
                        ),
                    )
                }
                "payload" if udp => match hex_text(c.words.get(1..).unwrap_or(&[])) {
                    Ok(t) => ch.send = Some(t),
                    Err(e) => self.err(&c.pos, e),
                },
                "require_reply" if udp => {
                    if c.arg(1).is_none() {
                        self.warn(
                            &c.pos,
                            "`require_reply` without data: an xdpvs udp check with no \
                             expected reply succeeds unless an ICMP error comes back (keepalived \
                             required some reply)",
                        );
                    } else {
                        match hex_text(c.words.get(1..).unwrap_or(&[])) {
                            Ok(t) => ch.expect = Some(t),
                            Err(e) => self.err(&c.pos, e),
                        }
                    }
                }
                k @ ("min_reply_length" | "max_reply_length") if udp => self.warn(
                    &c.pos,
                    format!("`{k}` ignored: xdpvs udp checks look at the reply's content only"),
                ),
                k => self.warn(
                    &c.pos,
                    format!("unknown keyword `{k}` in {} ignored", ch.keyword),
                ),
            }
        }
        if matches!(ch.kind, CheckKind::Misc) && ch.cmd.is_none() {
            self.err(
                &n.pos,
                "MISC_CHECK without `misc_path` (keepalived refuses it too)",
            );
            return None;
        }
        if let CheckKind::Http { ssl } = ch.kind {
            if urls == 0 {
                self.err(
                    &n.pos,
                    format!(
                        "{} without a `url` block (keepalived refuses it too)",
                        ch.keyword
                    ),
                );
                return None;
            }
            if ssl {
                self.warn(
                    &n.pos,
                    "SSL_GET imported as a tcp (connect) check on the same port: xdpvs has no \
                     TLS health check, so the TLS handshake and the url's status are not \
                     checked",
                );
                ch.kind = CheckKind::Tcp;
                ch.path = None;
                ch.expect_status = None;
            }
        }
        Some(ch)
    }

    fn url(&mut self, n: &Node, ch: &mut Checker) {
        let mut status_seen = false;
        for c in n.children() {
            match c.key() {
                "path" => match c.arg(1) {
                    Some(p) => {
                        if let Some(x) = c.arg(2) {
                            self.warn(
                                &c.pos,
                                format!(
                                    "`{x}` and what follows on the line ignored: keepalived reads \
                                     one keyword per line (quote a path with blanks)"
                                ),
                            );
                        }
                        ch.path = Some(p.to_string());
                    }
                    None => self.err(&c.pos, "`path` needs a path"),
                },
                "digest" => self.warn(
                    &c.pos,
                    "`digest` not checked: xdpvs http checks look at the status code only \
                     (keepalived also compared the body's MD5)",
                ),
                "status_code" => {
                    status_seen = true;
                    let words = c.words.get(1..).unwrap_or(&[]);
                    match status_codes(words) {
                        Ok((code, exact)) => {
                            ch.expect_status = Some(code);
                            if !exact {
                                self.warn(
                                    &c.pos,
                                    format!(
                                        "`status_code {}`: an xdpvs http check expects one \
                                         status; {code} is expected, the other codes fail the \
                                         check",
                                        words.join(" ")
                                    ),
                                );
                            }
                        }
                        Err(e) => self.err(&c.pos, e),
                    }
                }
                k @ ("regex" | "regex_no_match" | "regex_options" | "regex_min_offset"
                | "regex_max_offset" | "regex_stack") => self.warn(
                    &c.pos,
                    format!("`{k}` not checked: xdpvs http checks look at the status code only"),
                ),
                "virtualhost" => self.warn(
                    &c.pos,
                    "`virtualhost` ignored: xdpvs http checks send the real server's address \
                     as the Host header",
                ),
                k => self.warn(&c.pos, format!("unknown keyword `{k}` in url ignored")),
            }
        }
        if ch.path.is_none() {
            self.err(&n.pos, "url without a `path`");
        }
        if !status_seen {
            ch.expect_status = Some(200);
            self.warn(
                &n.pos,
                "url without `status_code`: keepalived accepted any 2xx status, the xdpvs http \
                 check expects 200",
            );
        }
    }
}

/// `status_code 200`, `200-299 404`: the status an xdpvs check expects
/// (200 if listed, else the lowest), and whether that is all that was listed.
fn status_codes(words: &[String]) -> Result<(u16, bool), String> {
    let mut codes: Vec<(u16, u16)> = Vec::new();
    for w in words {
        let (lo, hi) = match w.split_once('-') {
            Some((a, b)) => (a, b),
            None => (w.as_str(), w.as_str()),
        };
        let num = |s: &str| -> Result<u16, String> {
            match s.parse::<u16>() {
                Ok(n) if (100..=599).contains(&n) => Ok(n),
                _ => Err(format!("`{w}` is not an HTTP status (100-599)")),
            }
        };
        let (lo, hi) = (num(lo)?, num(hi)?);
        if lo > hi {
            return Err(format!("status range `{w}` is reversed"));
        }
        codes.push((lo, hi));
    }
    let Some(&(first, _)) = codes.first() else {
        return Err("`status_code` needs a status".to_string());
    };
    let exact = matches!(codes.as_slice(), [(a, b)] if a == b);
    let code = if codes.iter().any(|&(lo, hi)| lo <= 200 && 200 <= hi) {
        200
    } else {
        codes.iter().map(|&(lo, _)| lo).min().unwrap_or(first)
    };
    Ok((code, exact))
}

// ---------------------------------------------------------------------------
// keepalived data -> xdpvs config

/// One IPVS service keepalived would make: a `virtual_server`, or one entry
/// (one address) of its group.
#[derive(Clone, Debug)]
struct Key {
    pos: Pos,
    key: ServiceKey,
    v6: bool,
    name: String,
}

/// Letters, digits, `-`, `_`, `.`: what an xdpvs service name may hold.
fn name_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn addr_name(proto: Proto, vip: IpAddr, port: u16) -> String {
    format!(
        "{}-{}-{port}",
        proto.name(),
        vip.to_string().replace(':', "_")
    )
}

struct Builder<'a> {
    opts: &'a ImportOptions,
    iptables: &'a [Input<'a>],
    marks: &'a [MarkRule],
    groups: &'a HashMap<String, Group>,
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
    /// Services made so far: key -> where.
    seen: HashMap<ServiceKey, Pos>,
    /// The director's one GUE port and where it was set.
    gue: Option<At<u16>>,
    /// Tunnelling real servers by family (for the tunnel sources).
    tunnels: [Vec<Pos>; 2],
    locs: Locs,
    services: Vec<ServiceConfig>,
    fwmarks: Vec<FwmarkGroup>,
    /// Comments for services, by name.
    notes: Vec<(String, Vec<String>)>,
    used_marks: Vec<u32>,
}

impl Builder<'_> {
    fn err(&mut self, pos: &Pos, reason: impl Into<String>) {
        self.errors.push(problem(pos, reason));
    }
    fn warn(&mut self, pos: &Pos, reason: impl Into<String>) {
        self.warnings.push(problem(pos, reason));
    }

    /// The address family of a fwmark service keepalived would pick: the
    /// one given, else the first real server that is not tunnelled.
    fn fwmark_family(vs: &Vs, given: Option<bool>) -> bool {
        given.or(vs.family_v6).unwrap_or_else(|| {
            vs.reals
                .iter()
                .find(|r| {
                    !matches!(
                        r.fwd.as_ref().or(vs.fwd.as_ref()).map(|f| f.v.method),
                        Some(FwdMethod::Ipip | FwdMethod::Gue)
                    )
                })
                .or(vs.reals.first())
                .is_some_and(|r| r.addr.is_ipv6())
        })
    }

    fn keys(&mut self, vs: &Vs, proto: Proto) -> Vec<Key> {
        match &vs.id {
            VsId::Addr { vip, port } => vec![Key {
                pos: vs.pos.clone(),
                key: ServiceKey::Addr {
                    proto,
                    vip: *vip,
                    port: *port,
                },
                v6: vip.is_ipv6(),
                name: addr_name(proto, *vip, *port),
            }],
            VsId::Fwmark(m) => {
                let v6 = Self::fwmark_family(vs, None);
                vec![Key {
                    pos: vs.pos.clone(),
                    key: ServiceKey::Fwmark(*m),
                    v6,
                    name: if v6 {
                        format!("fwmark-{m}-v6")
                    } else {
                        format!("fwmark-{m}")
                    },
                }]
            }
            VsId::Group(g) => {
                let Some(group) = self.groups.get(g) else {
                    self.err(
                        &vs.pos,
                        format!("virtual_server group {g}: no virtual_server_group {g} is defined"),
                    );
                    return Vec::new();
                };
                let gname = name_part(g);
                let mut out = Vec::new();
                for e in &group.entries {
                    match &e.v {
                        GroupEntry::Addrs { vips, port } => {
                            for &vip in vips {
                                out.push(Key {
                                    pos: e.pos.clone(),
                                    key: ServiceKey::Addr {
                                        proto,
                                        vip,
                                        port: *port,
                                    },
                                    v6: vip.is_ipv6(),
                                    name: format!("{gname}-{}", addr_name(proto, vip, *port)),
                                });
                            }
                        }
                        GroupEntry::Fwmark { mark, v6 } => {
                            let v6 = Self::fwmark_family(vs, *v6);
                            out.push(Key {
                                pos: e.pos.clone(),
                                key: ServiceKey::Fwmark(*mark),
                                v6,
                                name: format!(
                                    "{gname}-fwmark-{mark}{}",
                                    if v6 { "-v6" } else { "" }
                                ),
                            });
                        }
                    }
                }
                out
            }
        }
    }

    fn virtual_server(&mut self, vs: &Vs) {
        let has_addrs = match &vs.id {
            VsId::Addr { .. } => true,
            VsId::Fwmark(_) => false,
            VsId::Group(g) => self.groups.get(g).is_some_and(|g| {
                g.entries
                    .iter()
                    .any(|e| matches!(e.v, GroupEntry::Addrs { .. }))
            }),
        };
        let only_marks = !has_addrs && !matches!(vs.id, VsId::Group(_))
            || matches!(&vs.id, VsId::Group(g) if self.groups.get(g).is_some_and(|g| !g.entries.is_empty()) && !has_addrs);
        let proto = match (&vs.proto, has_addrs) {
            (Some(p), _) => p.v,
            (None, true) => {
                self.warn(
                    &vs.pos,
                    "no `protocol`: imported as udp, keepalived's default (it says so too); \
                     add `protocol TCP` if that was meant",
                );
                Proto::Udp
            }
            (None, false) => Proto::Tcp,
        };
        if let (Some(p), true) = (&vs.proto, only_marks) {
            let pos = p.pos.clone();
            self.warn(
                &pos,
                "`protocol` ignored for a firewall-mark service: the MARK rules say which \
                 protocols it takes (keepalived ignores it too)",
            );
        }
        let sched = vs.scheduler.as_ref().map_or_else(
            || crate::config::schema::DEFAULT_SCHEDULER.to_string(),
            |s| s.v.clone(),
        );
        let mut params = SchedParams::default();
        if let Some(first) = vs.flags.first() {
            let list: Vec<&str> = vs.flags.iter().map(|f| f.v.as_str()).collect();
            match sched_flags(&sched, &list.join(","), &mut params) {
                Ok(ws) => {
                    for w in ws {
                        self.warn(&first.pos, w);
                    }
                }
                Err(e) => self.err(&first.pos, e),
            }
        }

        // Persistence: a timeout, or a granularity alone (keepalived then
        // takes its default timeout).
        let mut persistence = vs
            .persistence_timeout
            .or(vs
                .granularity
                .as_ref()
                .map(|_| KEEPALIVED_PERSISTENCE_TIMEOUT))
            .map(|timeout| PersistenceConfig {
                timeout,
                ..PersistenceConfig::default()
            });
        if let (Some(p), Some(g)) = (persistence.as_mut(), &vs.granularity) {
            if g.v.contains('.') {
                match g.v.parse::<Ipv4Addr>() {
                    Ok(m) if netmask_prefix(m).is_some() => p.netmask = m,
                    Ok(m) => self.err(
                        &g.pos,
                        format!(
                            "netmask {m} is not contiguous: xdpvs persistence groups clients by \
                             prefix (e.g. 255.255.255.0)"
                        ),
                    ),
                    Err(_) => self.err(&g.pos, format!("`{}` is not an IPv4 netmask", g.v)),
                }
            } else {
                match number_in(&g.v, "IPv6 persistence prefix length", 1, 128) {
                    Ok(n) => p.prefix6 = u8::try_from(n).unwrap_or(128),
                    Err(e) => self.err(&g.pos, e),
                }
            }
        }

        let keys = self.keys(vs, proto);
        if persistence.is_none()
            && keys
                .iter()
                .any(|k| matches!(k.key, ServiceKey::Addr { port: 0, .. }))
        {
            self.warn(
                &vs.pos,
                format!(
                    "port 0 (all ports) without persistence_timeout: made persistent for \
                     {KEEPALIVED_PERSISTENCE_TIMEOUT} s, as keepalived does"
                ),
            );
            persistence = Some(PersistenceConfig {
                timeout: KEEPALIVED_PERSISTENCE_TIMEOUT,
                ..PersistenceConfig::default()
            });
        }

        if vs.fwd.is_none() && vs.reals.iter().any(|r| r.fwd.is_none()) {
            self.warn(
                &vs.pos,
                "no `lb_kind`: NAT, keepalived's default (it says so too)",
            );
        }
        let nat = At {
            v: Fwd {
                method: FwdMethod::Nat,
                gue_port: None,
            },
            pos: vs.pos.clone(),
        };
        let mut retry_warned = false;
        for k in keys {
            if let Some(first) = self.seen.get(&k.key) {
                let first = first.clone();
                self.err(
                    &k.pos,
                    format!("virtual service {} is already defined at {first}", k.key),
                );
                continue;
            }
            self.seen.insert(k.key, k.pos.clone());
            if let ServiceKey::Fwmark(m) = k.key {
                self.fwmark_group(m, k.v6, &k.pos);
            }
            let mut reals: Vec<RealConfig> = Vec::new();
            let mut real_pos: Vec<Pos> = Vec::new();
            for rs in &vs.reals {
                let fwd = rs.fwd.as_ref().or(vs.fwd.as_ref()).unwrap_or(&nat).clone();
                let tunnel = matches!(fwd.v.method, FwdMethod::Ipip | FwdMethod::Gue);
                if !tunnel && rs.addr.is_ipv6() != k.v6 {
                    self.err(
                        &rs.pos,
                        format!(
                            "real server {} is not of the address family of {}: only tunnelled \
                             (TUN) real servers may differ",
                            rs.addr, k.key
                        ),
                    );
                    continue;
                }
                let svc_port = match k.key {
                    ServiceKey::Addr { port, .. } => port,
                    ServiceKey::Fwmark(_) => 0,
                };
                let port = match (fwd.v.method, rs.port) {
                    (FwdMethod::Nat, Some(p)) if p != svc_port => Some(p),
                    (_, Some(p)) if p != svc_port && svc_port != 0 => {
                        self.warn(
                            &rs.pos,
                            format!(
                                "port {p} of a {} real server ignored: it keeps the service's \
                                 port {svc_port} (keepalived resets it too)",
                                fwd.v.method.name()
                            ),
                        );
                        None
                    }
                    (_, Some(p)) if svc_port == 0 && fwd.v.method != FwdMethod::Nat => {
                        self.warn(
                            &rs.pos,
                            format!(
                                "port {p} of a {} real server ignored: the packet keeps its own \
                                 port (keepalived ignores it too)",
                                fwd.v.method.name()
                            ),
                        );
                        None
                    }
                    _ => None,
                };
                if let Some(dup) = reals
                    .iter()
                    .position(|r| r.addr == rs.addr && r.port == port)
                {
                    let first = real_pos.get(dup).cloned().unwrap_or_else(|| rs.pos.clone());
                    self.warn(
                        &rs.pos,
                        format!(
                            "real server {} is duplicated (first at {first}): the second one is \
                             dropped, as keepalived does",
                            rs.addr
                        ),
                    );
                    continue;
                }
                if tunnel {
                    if let Some(tv) = self.tunnels.get_mut(usize::from(rs.addr.is_ipv6())) {
                        tv.push(rs.pos.clone());
                    }
                }
                if let Some(p) = fwd.v.gue_port {
                    match &self.gue {
                        None => {
                            self.gue = Some(At {
                                v: p,
                                pos: fwd.pos.clone(),
                            })
                        }
                        Some(g) if g.v != p => {
                            let (q, first) = (g.v, g.pos.clone());
                            self.err(
                                &fwd.pos,
                                format!(
                                    "gue port {p} differs from gue port {q} ({first}): xdpvs \
                                     sends GUE to one port for all real servers \
                                     (director.gue_port)"
                                ),
                            );
                        }
                        _ => {}
                    }
                }
                let health = self.health(vs, rs, &mut retry_warned);
                reals.push(RealConfig {
                    addr: rs.addr,
                    port,
                    weight: rs.weight.unwrap_or(vs.weight),
                    forward: fwd.v.method,
                    u_threshold: rs.u_threshold,
                    l_threshold: rs.l_threshold,
                    health,
                });
                real_pos.push(rs.pos.clone());
            }
            self.locs.services.push((k.pos.clone(), real_pos));
            if !vs.notes.is_empty() {
                self.notes.push((k.name.clone(), vs.notes.clone()));
            }
            // keepalived's sorry server: reached with sorry_server_lvs_method,
            // else the service's lb_kind.
            let sorry_server = vs.sorry.as_ref().map(|z| {
                let fwd = vs.sorry_fwd.as_ref().or(vs.fwd.as_ref()).unwrap_or(&nat);
                let (addr, port) = z.v;
                let svc_port = match k.key {
                    ServiceKey::Addr { port, .. } => port,
                    ServiceKey::Fwmark(_) => 0,
                };
                if matches!(fwd.v.method, FwdMethod::Ipip | FwdMethod::Gue) {
                    if let Some(tv) = self.tunnels.get_mut(usize::from(addr.is_ipv6())) {
                        tv.push(z.pos.clone());
                    }
                }
                SorryConfig {
                    addr,
                    port: port.filter(|&p| fwd.v.method == FwdMethod::Nat && p != svc_port),
                    forward: fwd.v.method,
                }
            });
            self.services.push(ServiceConfig {
                name: k.name,
                key: k.key,
                scheduler: sched.clone(),
                sched_params: params,
                persistence,
                expire_nodest_conn: None,
                expire_quiescent_template: None,
                health: None,
                sorry_server,
                quorum: vs.quorum,
                hysteresis: vs.hysteresis,
                quorum_up: vs.quorum_up.clone(),
                quorum_down: vs.quorum_down.clone(),
                reals,
            });
        }
    }

    /// The real server's first checker as an xdpvs health check.
    fn health(&mut self, vs: &Vs, rs: &Rs, retry_warned: &mut bool) -> Option<HealthSpec> {
        let Some(ch) = rs.checkers.first() else {
            if rs.notify_up.is_some() || rs.notify_down.is_some() {
                self.warn(
                    &rs.pos,
                    "notify_up/notify_down not imported: the real server has no checker, so its \
                     state never changes (as in keepalived)",
                );
            }
            return None;
        };
        for extra in rs.checkers.iter().skip(1) {
            self.warn(
                &extra.pos,
                format!(
                    "{} not imported: xdpvs runs one health check per real server (the first, \
                     {} at {}); keepalived required every checker to pass",
                    extra.keyword, ch.keyword, ch.pos
                ),
            );
        }
        let t = ch.timing.over(&rs.timing.over(&vs.timing));
        let mut interval = t.delay_loop.as_ref().map_or(KEEPALIVED_DELAY_LOOP, |d| d.v);
        if interval > MAX_HEALTH_SECONDS {
            if let Some(d) = &t.delay_loop {
                let pos = d.pos.clone();
                self.warn(
                    &pos,
                    format!(
                        "delay_loop {interval} s shortened to {MAX_HEALTH_SECONDS} s, the \
                         longest xdpvs check interval"
                    ),
                );
            }
            interval = MAX_HEALTH_SECONDS;
        }
        // A MISC_CHECK's timeout is its misc_timeout, else the delay_loop
        // (connect_timeout does not apply to it).
        let misc_timeout = matches!(ch.kind, CheckKind::Misc)
            .then(|| ch.timing.connect_timeout.as_ref().map_or(interval, |d| d.v));
        let mut timeout = misc_timeout.unwrap_or_else(|| {
            t.connect_timeout
                .as_ref()
                .map_or(KEEPALIVED_CONNECT_TIMEOUT, |d| d.v)
        });
        if timeout > interval {
            let pos = t
                .connect_timeout
                .as_ref()
                .map_or_else(|| ch.pos.clone(), |d| d.pos.clone());
            self.warn(
                &pos,
                format!(
                    "check timeout {timeout} s shortened to the interval (delay_loop) {interval} \
                     s: an xdpvs probe ends before the next one starts"
                ),
            );
            timeout = interval;
        }
        let retry = t.retry.as_ref().map_or(KEEPALIVED_RETRY, |r| r.v);
        let mut fall = retry.saturating_add(1);
        if fall > MAX_FALL {
            let pos = t
                .retry
                .as_ref()
                .map_or_else(|| ch.pos.clone(), |r| r.pos.clone());
            self.warn(
                &pos,
                format!(
                    "retry {retry} lowered to {}: xdpvs's fall is at most {MAX_FALL}",
                    MAX_FALL - 1
                ),
            );
            fall = MAX_FALL;
        }
        let dbr = t
            .delay_before_retry
            .as_ref()
            .map_or(KEEPALIVED_DELAY_BEFORE_RETRY, |d| d.v);
        if retry > 0 && dbr != interval && !*retry_warned {
            *retry_warned = true;
            let pos = t
                .delay_before_retry
                .as_ref()
                .map_or_else(|| ch.pos.clone(), |d| d.pos.clone());
            self.warn(
                &pos,
                format!(
                    "xdpvs probes every interval (delay_loop {interval} s), retries included; \
                     keepalived retried a failed check after delay_before_retry ({dbr} s): a \
                     dead server is taken out after about {} s instead of {} s",
                    u64::from(fall) * u64::from(interval),
                    u64::from(interval) + u64::from(retry) * u64::from(dbr)
                ),
            );
        }
        let inhibit = rs.inhibit.unwrap_or(vs.inhibit);
        let (kind, path, expect_status, send, expect) = match ch.kind {
            CheckKind::Tcp => (HealthKind::Tcp, None, None, None, None),
            CheckKind::Misc => (HealthKind::Exec, None, None, None, None),
            CheckKind::Http { .. } => (
                HealthKind::Http,
                ch.path.clone(),
                ch.expect_status,
                None,
                None,
            ),
            CheckKind::Udp => (
                HealthKind::Udp,
                None,
                None,
                ch.send.clone(),
                ch.expect.clone(),
            ),
        };
        Some(HealthSpec {
            kind: Some(kind),
            port: ch.connect_port,
            interval: Some(interval),
            timeout: Some(timeout),
            rise: Some(1),
            fall: Some(fall),
            path,
            expect_status,
            send,
            expect,
            cmd: ch.cmd.clone(),
            on_failure: Some(if inhibit {
                OnFailure::Quiesce
            } else {
                OnFailure::Remove
            }),
            alpha: (vs.alpha || rs.alpha || ch.alpha).then_some(true),
            omega: vs.omega.then_some(true),
            notify_up: rs.notify_up.clone(),
            notify_down: rs.notify_down.clone(),
        })
    }

    /// The `[[fwmark]]` group of a firewall-mark service, from the MARK rules.
    fn fwmark_group(&mut self, mark: u32, v6: bool, at: &Pos) {
        self.used_marks.push(mark);
        let family = if v6 { "IPv6" } else { "IPv4" };
        let mut rules: Vec<FwmarkRuleConfig> = Vec::new();
        let mut rule_pos = Vec::new();
        let mut failed = false;
        for mr in self.marks.iter().filter(|m| m.mark == mark) {
            let pos = Pos {
                file: mr.loc.file.clone(),
                line: mr.loc.line,
            };
            match mr.chain.as_str() {
                "PREROUTING" | "INPUT" => {}
                "OUTPUT" | "FORWARD" | "POSTROUTING" => {
                    self.warn(
                        &pos,
                        format!(
                            "MARK rule for mark {mark} in {} ignored: IPVS sees marks set in \
                             PREROUTING or INPUT only",
                            mr.chain
                        ),
                    );
                    continue;
                }
                other => {
                    self.err(
                        &pos,
                        format!(
                            "MARK rule for mark {mark} (the service at {at}) is in the \
                             user-defined chain {other}, which the import does not follow: move \
                             it to PREROUTING"
                        ),
                    );
                    failed = true;
                    continue;
                }
            }
            match &mr.rules {
                Err(e) => {
                    self.err(
                        &pos,
                        format!(
                            "MARK rule for mark {mark} (the service at {at}) cannot be imported: \
                             {e}"
                        ),
                    );
                    failed = true;
                }
                Ok(list) => {
                    let mut other = 0;
                    for r in list {
                        if r.vip.is_ipv6() == v6 {
                            rules.push(r.clone());
                            rule_pos.push(pos.clone());
                        } else {
                            other += 1;
                        }
                    }
                    if other > 0 {
                        self.warn(
                            &pos,
                            format!(
                                "{} destinations ignored: mark {mark} is used by an {family} \
                                 service only ({at})",
                                if v6 { "IPv4" } else { "IPv6" }
                            ),
                        );
                    }
                }
            }
        }
        if rules.is_empty() && !failed {
            let reason = if self.iptables.is_empty() {
                format!(
                    "firewall-mark service {mark} needs the rules that set mark {mark} (VIPs, \
                     protocols, ports), which keepalived.conf does not hold: pass the mangle \
                     table with --iptables FILE (the output of `iptables-save -t mangle`{})",
                    if v6 {
                        "; `ip6tables-save -t mangle` for IPv6"
                    } else {
                        ""
                    }
                )
            } else {
                let names: Vec<&str> = self.iptables.iter().map(|i| i.name).collect();
                format!(
                    "firewall-mark service {mark}: no MARK rule in {} sets mark {mark} for an \
                     {family} destination (mangle table, PREROUTING or INPUT)",
                    names.join(", ")
                )
            };
            self.err(at, reason);
        }
        self.locs.groups.push((at.clone(), rule_pos));
        self.fwmarks.push(FwmarkGroup { mark, rules });
    }

    fn finish(&mut self) -> Config {
        for (v6, missing, flag) in [
            (false, self.opts.tunnel_src4.is_none(), "--tunnel-src4"),
            (true, self.opts.tunnel_src6.is_none(), "--tunnel-src6"),
        ] {
            let lines = self
                .tunnels
                .get(usize::from(v6))
                .cloned()
                .unwrap_or_default();
            if let (true, Some(first)) = (missing, lines.first()) {
                let more = match lines.len() {
                    1 => String::new(),
                    n => format!(" (and {} more real servers)", n - 1),
                };
                self.err(
                    first,
                    format!(
                        "tunnelling to an {} real server needs the outer source address, which \
                         IPVS took from the routing table: pass {flag} ADDR{more}",
                        if v6 { "IPv6" } else { "IPv4" }
                    ),
                );
            }
        }
        let mut reported: Vec<u32> = Vec::new();
        for mr in self.marks {
            if !self.used_marks.contains(&mr.mark) && !reported.contains(&mr.mark) {
                reported.push(mr.mark);
                let pos = Pos {
                    file: mr.loc.file.clone(),
                    line: mr.loc.line,
                };
                self.warnings.push(problem(
                    &pos,
                    format!(
                        "mark {} is not used by any keepalived virtual_server: its rules are \
                         not imported",
                        mr.mark
                    ),
                ));
            }
        }
        let interfaces = if self.opts.interfaces.is_empty() {
            vec!["eth0".to_string()]
        } else {
            self.opts.interfaces.clone()
        };
        Config {
            director: Director {
                interfaces,
                tunnel_src4: self.opts.tunnel_src4,
                tunnel_src6: self.opts.tunnel_src6,
                gue_port: self.gue.as_ref().map_or(DEFAULT_GUE_PORT, |g| g.v),
                ..Director::default()
            },
            fwmarks: std::mem::take(&mut self.fwmarks),
            services: std::mem::take(&mut self.services),
            ..Config::default()
        }
    }
}

// ---------------------------------------------------------------------------
// The import

fn header(files: &[String], iptables: &[Input<'_>], warnings: &[Problem], checks: bool) -> String {
    let mut h = String::new();
    let mut files = files.iter();
    if let Some(main) = files.next() {
        let _ = writeln!(
            h,
            "# Imported by `xdpvs import-keepalived` from the keepalived configuration {}",
            one_line(main)
        );
    }
    for f in files {
        let _ = writeln!(h, "# and the file it includes {}", one_line(f));
    }
    for i in iptables {
        let _ = writeln!(h, "# with the firewall-mark rules in {}", one_line(i.name));
    }
    if checks {
        h.push_str(
            "# Health checks: interval = delay_loop, timeout = connect_timeout,\n\
             # fall = retry + 1 (the first failure and its retries), rise = 1 (keepalived\n\
             # puts a server back after one successful check), on_failure = \"quiesce\"\n\
             # with inhibit_on_failure (weight 0), else \"remove\" (keepalived's default).\n",
        );
    }
    for w in warnings {
        let _ = writeln!(h, "# warning: {}", one_line(&w.to_string()));
    }
    h.push('\n');
    h
}

/// `notes` as comments above the `[[service]]` of each named service.
fn annotate(toml: &str, notes: &[(String, Vec<String>)]) -> String {
    if notes.is_empty() {
        return toml.to_string();
    }
    let lines: Vec<&str> = toml.lines().collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        if *line == "[[service]]" {
            let next = lines.get(i + 1).copied().unwrap_or("");
            for (name, ns) in notes {
                if next == format!("name = {}", toml::Value::String(name.clone())) {
                    for n in ns {
                        let _ = writeln!(out, "# {}", one_line(n));
                    }
                }
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Import a keepalived configuration read from `main` (includes are found
/// relative to `dir`, the directory of the main file) and the iptables MARK
/// rules of its firewall-mark services.
pub fn import(
    main: Input<'_>,
    dir: &Path,
    iptables: &[Input<'_>],
    opts: &ImportOptions,
) -> Result<Imported, ImportError> {
    let mut rd = Reader {
        segs: Vec::new(),
        files: Vec::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    rd.read(main.name, main.text, dir, 0);
    let mut errors = std::mem::take(&mut rd.errors);
    let mut warnings = std::mem::take(&mut rd.warnings);
    let nodes = match tree(&rd.segs, &mut 0, None, 0) {
        Ok(n) => n,
        Err(p) => {
            errors.push(p);
            Vec::new()
        }
    };
    let mut w = Walker {
        vss: Vec::new(),
        groups: HashMap::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    w.top(&nodes);
    errors.append(&mut w.errors);
    warnings.append(&mut w.warnings);

    let mut marks = MarkRules::default();
    for inp in iptables {
        marks.read(*inp);
    }
    warnings.append(&mut marks.warnings);

    let mut b = Builder {
        opts,
        iptables,
        marks: &marks.rules,
        groups: &w.groups,
        errors: Vec::new(),
        warnings: Vec::new(),
        seen: HashMap::new(),
        gue: None,
        tunnels: [Vec::new(), Vec::new()],
        locs: Locs::default(),
        services: Vec::new(),
        fwmarks: Vec::new(),
        notes: Vec::new(),
        used_marks: Vec::new(),
    };
    for vs in &w.vss {
        b.virtual_server(vs);
    }
    let config = b.finish();
    errors.append(&mut b.errors);
    warnings.append(&mut b.warnings);
    let locs = std::mem::take(&mut b.locs);
    let notes = std::mem::take(&mut b.notes);

    let order: Vec<&str> = rd
        .files
        .iter()
        .map(String::as_str)
        .chain(iptables.iter().map(|i| i.name))
        .collect();
    sort_problems(&mut errors, &order);
    sort_problems(&mut warnings, &order);
    if !errors.is_empty() {
        return Err(ImportError(errors));
    }
    if config.services.is_empty() {
        return Err(ImportError(vec![Problem {
            file: main.name.to_string(),
            line: None,
            reason: "no virtual_server with real servers: nothing to import".to_string(),
        }]));
    }

    // The same checks as `xdpvs check`, reported at the input lines.
    match config.validate() {
        Ok(ds) => {
            warnings.extend(ds.iter().map(|d| locs.place(main.name, &d.key, &d.reason)));
            sort_problems(&mut warnings, &order);
        }
        Err(e) => {
            let diags = e.diagnostics();
            if diags.is_empty() {
                return Err(ImportError(vec![locs.place(main.name, "", &e.to_string())]));
            }
            // One problem per input line and reason, not one per service a
            // group entry or range made of it.
            let mut out: Vec<Problem> = Vec::new();
            for d in diags {
                let p = locs.place(main.name, &d.key, &d.reason);
                let dup = out.iter().any(|q| {
                    q.file == p.file && q.line == p.line && q.reason.starts_with(&d.reason)
                });
                if !dup {
                    out.push(p);
                }
            }
            return Err(ImportError(out));
        }
    }
    let internal = |reason: String| {
        ImportError(vec![Problem {
            file: main.name.to_string(),
            line: None,
            reason,
        }])
    };
    if let Err(e) = build_snapshot(&config, None) {
        return Err(internal(format!("the imported config does not build: {e}")));
    }
    let checks = config
        .services
        .iter()
        .any(|s| s.reals.iter().any(|r| r.health.is_some()));
    let toml = format!(
        "{}{}",
        header(&rd.files, iptables, &warnings, checks),
        annotate(&config.to_toml(), &notes)
    );
    // What is written must read back as exactly what was meant.
    match Config::parse(&toml, "<imported config>") {
        Ok(back) if back == config => {}
        Ok(_) => {
            return Err(internal(
                "internal error: the written config does not read back the same".to_string(),
            ))
        }
        Err(e) => {
            return Err(internal(format!(
                "internal error: the written config does not parse: {e}"
            )))
        }
    }
    Ok(Imported {
        config,
        toml,
        warnings,
    })
}

/// [`import`] of a file on disk (its includes relative to its directory).
pub fn import_file(
    path: &Path,
    iptables: &[Input<'_>],
    opts: &ImportOptions,
) -> Result<Imported, ImportError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| {
        ImportError(vec![Problem {
            file: name.clone(),
            line: None,
            reason: SourceError::Read {
                path: name.clone(),
                source,
            }
            .to_string(),
        }])
    })?;
    let dir = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    import(
        Input {
            name: &name,
            text: &text,
        },
        &dir,
        iptables,
        opts,
    )
}

// ---------------------------------------------------------------------------
// Command line

/// `xdpvs import-keepalived`: convert a keepalived.conf into an xdpvs config.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// The keepalived configuration ("-" = standard input; includes are
    /// then relative to the current directory).
    pub file: PathBuf,
    /// `iptables-save` / `ip6tables-save` output (mangle table) holding the
    /// MARK rules of the firewall-mark virtual servers. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub iptables: Vec<PathBuf>,
    /// A data-plane interface for [director] interfaces. Repeatable.
    #[arg(long = "interface", value_name = "NAME", default_value = "eth0")]
    pub interfaces: Vec<String>,
    /// Outer source address of IPv4 IPIP/GUE packets (needed with TUN reals).
    #[arg(long, value_name = "ADDR")]
    pub tunnel_src4: Option<Ipv4Addr>,
    /// Outer source address of IPv6 IPIP/GUE packets.
    #[arg(long, value_name = "ADDR")]
    pub tunnel_src6: Option<Ipv6Addr>,
    /// Write the config here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Run `xdpvs import-keepalived`: exit 0 with the config written, or 1
/// with every problem on stderr (nothing written).
pub fn run(args: &ImportArgs) -> ExitCode {
    let mut texts = Vec::new();
    for p in &args.iptables {
        match crate::import::ipvsadm::read_input(p) {
            Ok(t) => texts.push(t),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        }
    }
    let ipt: Vec<Input<'_>> = texts
        .iter()
        .map(|(name, text)| Input { name, text })
        .collect();
    let opts = ImportOptions {
        interfaces: args.interfaces.clone(),
        tunnel_src4: args.tunnel_src4,
        tunnel_src6: args.tunnel_src6,
    };
    let result = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut s) {
            eprintln!("<stdin>: cannot read: {e}");
            return ExitCode::from(1);
        }
        import(
            Input {
                name: "<stdin>",
                text: &s,
            },
            Path::new("."),
            &ipt,
            &opts,
        )
    } else {
        import_file(&args.file, &ipt, &opts)
    };
    match result {
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
                "import-keepalived: {} problem(s); no config written",
                e.0.len()
            );
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &[&str]) -> Seg {
        Seg::Words(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn import_keepalived_comments_quotes_braces() {
        assert_eq!(decomment("  a b ! c").unwrap(), "a b");
        assert_eq!(decomment("a # b").unwrap(), "a");
        assert_eq!(decomment("path \"/a#b!\" # c").unwrap(), "path \"/a#b!\"");
        assert_eq!(decomment("x \\#y").unwrap(), "x #y");
        assert!(decomment("x \"y").is_err());
        assert_eq!(
            segments("url { path \"/a b\" }"),
            vec![
                words(&["url"]),
                Seg::Open,
                words(&["path", "/a b"]),
                Seg::Close
            ]
        );
        assert_eq!(segments("}}"), vec![Seg::Close, Seg::Close]);
        assert_eq!(segments("a\"b c\"d"), vec![words(&["a", "b c", "d"])]);
        assert_eq!(
            include_pattern("include  conf.d/*.conf"),
            Some("conf.d/*.conf")
        );
        assert_eq!(include_pattern("includer x"), Some("x"));
        assert_eq!(include_pattern("includes x"), None);
        assert_eq!(include_pattern("include"), None);
    }

    #[test]
    fn import_keepalived_fnmatch() {
        let m = |p: &str, n: &str| {
            let p: Vec<char> = p.chars().collect();
            let n: Vec<char> = n.chars().collect();
            fnmatch(&p, &n)
        };
        assert!(m("*.conf", "a.conf"));
        assert!(!m("*.conf", "a.conf.bak"));
        assert!(m("a?c", "abc"));
        assert!(m("[0-9][!a]*", "1b"));
        assert!(!m("[0-9][!a]*", "1a"));
        assert!(m("*", ""));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "axxbyy"));
    }

    #[test]
    fn import_keepalived_values() {
        assert_eq!(parse_secs("6"), Some((6, false)));
        assert_eq!(parse_secs("0.5"), Some((1, true)));
        assert_eq!(parse_secs("2.000"), Some((2, false)));
        assert_eq!(parse_secs("x"), None);
        assert_eq!(status_codes(&["204".into()]), Ok((204, true)));
        assert_eq!(
            status_codes(&["200-299".into(), "404".into()]),
            Ok((200, false))
        );
        assert_eq!(status_codes(&["301-302".into()]), Ok((301, false)));
        assert!(status_codes(&["99".into()]).is_err());
        assert_eq!(group_addrs("198.18.0.1-3").map(|v| v.len()), Ok(3));
        assert_eq!(group_addrs("2001:db8::fe-ff").map(|v| v.len()), Ok(2));
        assert_eq!(group_addrs("198.18.0.0/30").map(|v| v.len()), Ok(4));
        assert!(group_addrs("198.18.0.1/30").is_err());
        assert!(group_addrs("198.18.0.5-1").is_err());
        assert_eq!(hex_text(&["48 49".into()]), Ok("HI".to_string()));
        assert!(hex_text(&["ff".into()]).is_err());
    }
}
