//! The CLI commands that talk to a running director over its control
//! socket: `list` (ipvsadm -L), `stats`, `reload`, `save` (ipvsadm -S),
//! `zero` (ipvsadm -Z), `service add|edit|del` (ipvsadm -A/-E/-D) and
//! `real add|edit|del` (ipvsadm -a/-e/-d).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::config::schema::{Config, DEFAULT_CONTROL_SOCKET};
use crate::control::api::{call, RealSpec, Request, Response};
use crate::control::status::{render_conns, render_list, ListMode};

/// Standard output for the commands' results. A reader that goes away
/// (`xdpvs list --json | head`) ends the output quietly instead of a panic
/// (`println!` panics on EPIPE; Rust ignores SIGPIPE).
pub fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(args).and_then(|()| out.flush());
}

macro_rules! out {
    ($($t:tt)*) => { write_out(format_args!($($t)*)) };
}

macro_rules! outln {
    () => { write_out(format_args!("\n")) };
    ($($t:tt)*) => {{
        write_out(format_args!($($t)*));
        write_out(format_args!("\n"));
    }};
}

/// The config file of an installed package (`packaging/`).
pub const PACKAGE_CONFIG: &str = "/etc/xdpvs/xdpvs.toml";
/// The config file of a hand-made installation.
pub const PLAIN_CONFIG: &str = "/etc/xdpvs.toml";

/// The config file a command uses when given none: the package's
/// /etc/xdpvs/xdpvs.toml where it exists, else /etc/xdpvs.toml.
pub fn default_config() -> PathBuf {
    let package = Path::new(PACKAGE_CONFIG);
    if package.exists() {
        package.to_path_buf()
    } else {
        PathBuf::from(PLAIN_CONFIG)
    }
}

/// Where the director listens.
#[derive(Args, Clone, Debug)]
pub struct Target {
    /// The control socket (default: `control_socket` of --config, else of
    /// /etc/xdpvs/xdpvs.toml or /etc/xdpvs.toml, else /run/xdpvs.sock).
    #[arg(short, long, global = true)]
    pub socket: Option<PathBuf>,
    /// Read the control socket path from this config file.
    #[arg(short, long, global = true)]
    pub config: Option<PathBuf>,
}

impl Target {
    fn path(&self) -> Result<PathBuf, String> {
        if let Some(s) = &self.socket {
            return Ok(s.clone());
        }
        if let Some(c) = &self.config {
            return Config::load(c)
                .map(|c| c.director.control_socket)
                .map_err(|e| e.to_string());
        }
        let default = default_config();
        if default.exists() {
            if let Ok(c) = Config::load(&default) {
                return Ok(c.director.control_socket);
            }
        }
        Ok(PathBuf::from(DEFAULT_CONTROL_SOCKET))
    }
}

#[derive(Args, Clone, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub target: Target,
    /// Counters: Conns, InPkts, OutPkts, InBytes, OutBytes (ipvsadm --stats).
    #[arg(long)]
    pub stats: bool,
    /// Rates: CPS, InPPS, OutPPS, InBPS, OutBPS (ipvsadm --rate).
    #[arg(long)]
    pub rate: bool,
    /// Persistence templates per real server (ipvsadm --persistent-conn).
    #[arg(long)]
    pub persistent_conn: bool,
    /// Connections and persistence templates (ipvsadm -L -c).
    #[arg(long, short = 'C')]
    pub connections: bool,
    /// Connection sync with the peer directors: mode, resync, counters
    /// (ipvsadm -L --daemon, with the counters IPVS lacks).
    #[arg(long)]
    pub sync: bool,
    /// JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Clone, Debug)]
pub enum ServiceCmd {
    /// Add a virtual service (ipvsadm -A).
    Add(ServiceArgs),
    /// Change a service's scheduler or persistence (ipvsadm -E).
    Edit(ServiceArgs),
    /// Delete a service (ipvsadm -D).
    Del {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        name: String,
    },
}

#[derive(Args, Clone, Debug)]
pub struct ServiceArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long)]
    pub name: String,
    /// tcp | udp (with --vip and --port).
    #[arg(long)]
    pub proto: Option<String>,
    #[arg(long)]
    pub vip: Option<String>,
    #[arg(long)]
    pub port: Option<u16>,
    /// A firewall-mark group declared in the config.
    #[arg(long)]
    pub fwmark: Option<u32>,
    #[arg(long, default_value = "wlc")]
    pub scheduler: String,
    /// Persistence timeout in seconds (ipvsadm -p).
    #[arg(long)]
    pub persistent: Option<u32>,
    /// Persistence netmask (ipvsadm -M), e.g. 255.255.255.0.
    #[arg(long)]
    pub netmask: Option<String>,
    /// IPv6 persistence prefix length.
    #[arg(long)]
    pub prefix6: Option<u8>,
}

impl ServiceArgs {
    fn toml(&self) -> Result<String, String> {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mut t = format!(
            "[[service]]\nname = {}\nscheduler = {}\n",
            q(&self.name),
            q(&self.scheduler)
        );
        match (self.fwmark, &self.proto, &self.vip, self.port) {
            (Some(m), None, None, None) => t.push_str(&format!("fwmark = {m}\n")),
            (None, Some(p), Some(v), Some(port)) => t.push_str(&format!(
                "proto = {}\nvip = {}\nport = {port}\n",
                q(p),
                q(v.trim_matches(|c| c == '[' || c == ']'))
            )),
            _ => return Err("give either --fwmark N, or --proto, --vip and --port".to_string()),
        }
        if self.persistent.is_some() || self.netmask.is_some() || self.prefix6.is_some() {
            let mut p = vec![format!(
                "timeout = {}",
                self.persistent
                    .unwrap_or(crate::config::schema::DEFAULT_PERSISTENCE_TIMEOUT)
            )];
            if let Some(m) = &self.netmask {
                p.push(format!("netmask = {}", q(m)));
            }
            if let Some(n) = self.prefix6 {
                p.push(format!("prefix6 = {n}"));
            }
            t.push_str(&format!("persistence = {{ {} }}\n", p.join(", ")));
        }
        Ok(t)
    }
}

#[derive(Subcommand, Clone, Debug)]
pub enum RealCmd {
    /// Add a real server to a service (ipvsadm -a).
    Add(RealArgs),
    /// Change a real server: weight, forwarding, thresholds (ipvsadm -e).
    Edit(RealArgs),
    /// Remove a real server (ipvsadm -d).
    Del {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        service: String,
        #[arg(long)]
        addr: String,
        #[arg(long)]
        port: Option<u16>,
    },
}

#[derive(Args, Clone, Debug)]
pub struct RealArgs {
    #[command(flatten)]
    pub target: Target,
    /// The service's name.
    #[arg(long)]
    pub service: String,
    #[arg(long)]
    pub addr: String,
    #[arg(long)]
    pub port: Option<u16>,
    /// 0 quiesces: no new clients, existing ones stay.
    #[arg(long)]
    pub weight: Option<u32>,
    /// dr | nat | ipip | gue.
    #[arg(long)]
    pub forward: Option<String>,
    /// Upper connection threshold (ipvsadm -x).
    #[arg(long)]
    pub u_threshold: Option<u32>,
    /// Lower connection threshold (ipvsadm -y).
    #[arg(long)]
    pub l_threshold: Option<u32>,
}

impl RealArgs {
    fn spec(&self) -> RealSpec {
        RealSpec {
            addr: self.addr.clone(),
            port: self.port,
            weight: self.weight,
            forward: self.forward.clone(),
            u_threshold: self.u_threshold,
            l_threshold: self.l_threshold,
        }
    }
}

fn send(target: &Target, req: &Request) -> Result<Response, ExitCode> {
    let path = target.path().map_err(|e| {
        eprintln!("xdpvs: {e}");
        ExitCode::from(1)
    })?;
    match call(&path, req) {
        Ok(r) if r.ok => Ok(r),
        Ok(r) => {
            eprintln!("xdpvs: {}", r.error);
            Err(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("xdpvs: {e}");
            Err(ExitCode::from(2))
        }
    }
}

fn done(r: Result<Response, ExitCode>) -> ExitCode {
    match r {
        Ok(r) => {
            if !r.message.is_empty() {
                outln!("{}", r.message);
            }
            ExitCode::SUCCESS
        }
        Err(c) => c,
    }
}

pub fn list(a: &ListArgs) -> ExitCode {
    if a.connections {
        let r = match send(&a.target, &Request::Connections) {
            Ok(r) => r,
            Err(c) => return c,
        };
        let rows = r.conns.unwrap_or_default();
        if a.json {
            outln!(
                "{}",
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            );
        } else {
            out!("{}", render_conns(&rows));
        }
        return ExitCode::SUCCESS;
    }
    let r = match send(&a.target, &Request::Status) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let st = r.status.unwrap_or_default();
    if a.sync {
        if a.json {
            outln!(
                "{}",
                serde_json::to_string_pretty(&st.sync).unwrap_or_default()
            );
        } else {
            match &st.sync {
                Some(s) => out!("{}", s.render()),
                None => outln!("sync: off (no [sync] section)"),
            }
        }
        return ExitCode::SUCCESS;
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let mode = if a.stats {
        ListMode::Stats
    } else if a.rate {
        ListMode::Rate
    } else if a.persistent_conn {
        ListMode::Persistent
    } else {
        ListMode::Plain
    };
    out!("{}", render_list(&st, mode));
    ExitCode::SUCCESS
}

/// `xdpvs stats`: counters per service and real server, then per shard.
pub fn stats(target: &Target, json: bool) -> ExitCode {
    let r = match send(target, &Request::Status) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let st = r.status.unwrap_or_default();
    if json {
        outln!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    out!("{}", render_list(&st, ListMode::Stats));
    outln!(
        "reloads {} (refused {}), last: {}",
        st.reloads,
        st.reloads_refused,
        st.last_reload
    );
    out!("{}", st.announce.render());
    if let Some(s) = &st.sync {
        out!("{}", s.render());
    }
    if let Some(f) = &st.fast_path {
        out!("{}", f.render());
    }
    for (i, s) in st.shards.iter().enumerate() {
        let drops: Vec<String> = s
            .dropped
            .iter()
            .chain(s.malformed.iter())
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        let io: Vec<String> = s.io_loss.iter().map(|(r, n)| format!("{r}={n}")).collect();
        outln!(
            "shard {i}: rx {} tx {} handoff_out {} handoff_in {} not_ours {} conns {} (new {} expired {} evicted {}) templates {} (expired {}) drops [{}] io_loss [{}]",
            s.rx,
            s.tx,
            s.handoff_out,
            s.handoff_in,
            s.passed_unhandled,
            s.conns,
            s.new_conns,
            s.expired_conns,
            s.evicted_conns,
            s.templates,
            s.expired_templates,
            drops.join(" "),
            io.join(" ")
        );
    }
    ExitCode::SUCCESS
}

pub fn reload(target: &Target) -> ExitCode {
    done(send(target, &Request::Reload))
}

pub fn zero(target: &Target) -> ExitCode {
    done(send(target, &Request::Zero))
}

pub fn save(target: &Target) -> ExitCode {
    match send(target, &Request::Save) {
        Ok(r) => {
            out!("{}", r.toml.unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(c) => c,
    }
}

pub fn service(cmd: &ServiceCmd) -> ExitCode {
    match cmd {
        ServiceCmd::Add(a) | ServiceCmd::Edit(a) => {
            let toml = match a.toml() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("xdpvs: {e}");
                    return ExitCode::from(1);
                }
            };
            let req = if matches!(cmd, ServiceCmd::Add(_)) {
                Request::AddService { toml }
            } else {
                Request::EditService { toml }
            };
            done(send(&a.target, &req))
        }
        ServiceCmd::Del { target, name } => {
            done(send(target, &Request::DelService { name: name.clone() }))
        }
    }
}

pub fn real(cmd: &RealCmd) -> ExitCode {
    match cmd {
        RealCmd::Add(a) => done(send(
            &a.target,
            &Request::AddReal {
                service: a.service.clone(),
                real: a.spec(),
            },
        )),
        RealCmd::Edit(a) => done(send(
            &a.target,
            &Request::EditReal {
                service: a.service.clone(),
                real: a.spec(),
            },
        )),
        RealCmd::Del {
            target,
            service,
            addr,
            port,
        } => done(send(
            target,
            &Request::DelReal {
                service: service.clone(),
                addr: addr.clone(),
                port: *port,
            },
        )),
    }
}
