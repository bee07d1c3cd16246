//! The typed xdpvs config. [`Config::parse`] reads TOML (see
//! `config/example.toml` for every key), checks types and unknown keys, then
//! validates the whole config; every error names `file:line:col`, the key
//! path and a reason. [`Config::to_toml`] writes it back (for `xdpvs save`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::error::{invalid, ConfigError, Diagnostic, Origin};
use crate::config::ports::PortSet;
pub use crate::service::health::{HealthCheck, HealthProbe, OnFailure};
use crate::service::model::{FwdMethod, Proto, ServiceKey, Timeouts};
use crate::service::sched::SchedParams;

/// Default control socket path.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/xdpvs.sock";
/// Default metrics listen address.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9478";
/// Default connection table capacity, per shard (2^20 entries). A limit, not
/// a preallocation: new connections beyond it are refused.
pub const DEFAULT_CONN_CAPACITY: u32 = 1 << 20;
/// Default persistence template capacity, per shard (2^18 entries).
pub const DEFAULT_TEMPLATE_CAPACITY: u32 = 1 << 18;
/// Largest accepted table capacity (2^28 entries per shard).
pub const MAX_CAPACITY: u32 = 1 << 28;
/// Default GUE destination port on the real servers.
pub const DEFAULT_GUE_PORT: u16 = 6080;
/// Longest accepted timeout, in seconds: 31 days, as ipvsadm's `MAX_TIMEOUT`.
pub const MAX_TIMEOUT: u32 = 86_400 * 31;
/// Largest real server weight (ipvsadm accepts 0..=65535).
pub const MAX_WEIGHT: u32 = 65_535;
/// Default persistence timeout (ipvsadm `-p` without a value).
pub const DEFAULT_PERSISTENCE_TIMEOUT: u32 = 300;
/// Default scheduler (ipvsadm's default).
pub const DEFAULT_SCHEDULER: &str = "wlc";

/// The keys of the top-level tables (the reader refuses any other).
pub(crate) const TOP_KEYS: &[&str] = &[
    "director", "timeouts", "announce", "fwmark", "service", "neighbor", "sync",
];

/// The keys of `[timeouts]` (the reader refuses any other).
pub(crate) const TIMEOUT_KEYS: &[&str] = &["tcp", "tcp_fin", "udp"];

/// The whole config.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Config {
    pub director: Director,
    pub timeouts: Timeouts,
    /// `[announce]`: the routing daemon's commands.
    pub announce: Announce,
    pub fwmarks: Vec<FwmarkGroup>,
    pub services: Vec<ServiceConfig>,
    pub neighbors: Vec<NeighborPin>,
    /// `[sync]`: connection sync with peer directors (none: one director).
    pub sync: Option<SyncConfig>,
    /// Where the config came from (for error positions). Not compared.
    pub origin: Origin,
}

/// XDP attach mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum XdpMode {
    #[default]
    Native,
    Generic,
}

impl XdpMode {
    pub const fn name(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

/// The keys of `[director]`: one per field of [`Director`] (the reader refuses any other).
pub(crate) const DIRECTOR_KEYS: &[&str] = &[
    "interfaces",
    "xdp_mode",
    "cores",
    "control_socket",
    "metrics",
    "conn_capacity",
    "template_capacity",
    "hugepages",
    "prefault",
    "busy_poll_us",
    "tunnel_src4",
    "tunnel_src6",
    "gue_port",
    "state_file",
    "log_level",
    "expire_nodest_conn",
    "expire_quiescent_template",
    "conn_reuse_mode",
    "sloppy_tcp",
    "sloppy_udp",
    "fast_path",
    "fast_path_capacity",
    "shard_rt_priority",
];

/// `[director]`: process-wide settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Director {
    /// Data-plane interfaces (at least one).
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpMode,
    /// CPU cores to run shards on; `None`: one shard per usable core.
    pub cores: Option<Vec<usize>>,
    pub control_socket: PathBuf,
    /// Metrics listen address; `None` (config `"off"`) disables it.
    pub metrics: Option<SocketAddr>,
    /// Connection table capacity per shard.
    pub conn_capacity: u32,
    /// Persistence template capacity per shard.
    pub template_capacity: u32,
    /// Back the connection and template tables with transparent huge pages
    /// (`madvise(MADV_HUGEPAGE)`); default off.
    pub hugepages: bool,
    /// Fault the tables' whole capacity in at start
    /// (`madvise(MADV_POPULATE_WRITE)`), not as they fill; default off.
    pub prefault: bool,
    /// How long a shard keeps polling its rings after the last packet
    /// before it sleeps in `poll()`, in µs (default 0: sleep at once).
    pub busy_poll_us: u32,
    /// Outer source address of IPv4 IPIP/GUE packets.
    pub tunnel_src4: Option<Ipv4Addr>,
    /// Outer source address of IPv6 IPIP/GUE packets.
    pub tunnel_src6: Option<Ipv6Addr>,
    pub gue_port: u16,
    /// Where connection state is saved across restarts (none by default).
    pub state_file: Option<PathBuf>,
    /// A tracing `EnvFilter` directive, e.g. `"info"` or `"info,xdpvs=debug"`.
    pub log_level: String,
    /// IPVS sysctl `expire_nodest_conn`, default for every service.
    pub expire_nodest_conn: bool,
    /// IPVS sysctl `expire_quiescent_template`, default for every service.
    pub expire_quiescent_template: bool,
    /// IPVS sysctl `conn_reuse_mode` (0-3, default 1): which SYNs on a known
    /// connection start a new one (see `Engine`'s connection reuse).
    pub conn_reuse_mode: u32,
    /// IPVS sysctl `sloppy_tcp`: a mid-flow TCP packet of an unknown
    /// connection may create it (a director taking over without sync).
    pub sloppy_tcp: bool,
    /// `sloppy_udp`: accepted for symmetry with `sloppy_tcp`; any UDP packet
    /// already creates its connection.
    pub sloppy_udp: bool,
    /// Forward established DR/NAT flows inside the XDP program (flow
    /// offload); default on, reloadable.
    pub fast_path: bool,
    /// Most flows in the XDP flow cache (a NAT connection takes two); 0:
    /// `conn_capacity` times the number of shards. Read at start.
    pub fast_path_capacity: u32,
    /// Run the shard threads under SCHED_FIFO at this priority (1-99); 0
    /// (default): normal tasks. A woken real-time shard does not wait for
    /// the time slice of another task on its core (p99 of new flows);
    /// excludes `busy_poll_us`.
    pub shard_rt_priority: u32,
}

impl Default for Director {
    fn default() -> Self {
        Director {
            interfaces: Vec::new(),
            xdp_mode: XdpMode::Native,
            cores: None,
            control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            metrics: DEFAULT_METRICS.parse().ok(),
            conn_capacity: DEFAULT_CONN_CAPACITY,
            template_capacity: DEFAULT_TEMPLATE_CAPACITY,
            hugepages: false,
            prefault: false,
            busy_poll_us: 0,
            tunnel_src4: None,
            tunnel_src6: None,
            gue_port: DEFAULT_GUE_PORT,
            state_file: None,
            log_level: "info".to_string(),
            expire_nodest_conn: false,
            expire_quiescent_template: false,
            conn_reuse_mode: 1,
            sloppy_tcp: false,
            sloppy_udp: false,
            fast_path: true,
            fast_path_capacity: 0,
            shard_rt_priority: 0,
        }
    }
}

/// The IPVS sync multicast group, port and TTL (`ip_vs_sync.c`).
pub const DEFAULT_SYNC_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
pub const DEFAULT_SYNC_PORT: u16 = 8848;
pub const DEFAULT_SYNC_TTL: u8 = 1;
/// IPVS `sync_period`.
pub const DEFAULT_SYNC_PERIOD: u32 = 50;
/// How long a joining director waits for a peer's full resync before it
/// announces itself anyway (seconds).
pub const DEFAULT_RESYNC_WAIT: u32 = 30;

/// The keys of `[sync]` (the reader refuses any other).
pub(crate) const SYNC_KEYS: &[&str] = &[
    "mode",
    "interface",
    "group",
    "peers",
    "port",
    "syncid",
    "auth_key",
    "ttl",
    "sync_period",
    "resync_wait",
];

/// `[sync] mode`: IPVS's two sync daemons, or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Send this director's connections (IPVS `--start-daemon master`).
    Master,
    /// Apply the peers' connections (IPVS `--start-daemon backup`).
    Backup,
    /// Both, for directors behind ECMP.
    ActiveActive,
}

impl SyncMode {
    pub const fn name(self) -> &'static str {
        match self {
            SyncMode::Master => "master",
            SyncMode::Backup => "backup",
            SyncMode::ActiveActive => "active-active",
        }
    }
    pub const fn sends(self) -> bool {
        matches!(self, SyncMode::Master | SyncMode::ActiveActive)
    }
    pub const fn receives(self) -> bool {
        matches!(self, SyncMode::Backup | SyncMode::ActiveActive)
    }
}

/// `[sync]`: connection and persistence sync in the IPVS sync protocol v1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    pub mode: SyncMode,
    /// The interface datagrams are sent from and accepted on (only).
    pub interface: String,
    /// Multicast group (default 224.0.0.81 unless `peers` is given).
    pub group: Option<IpAddr>,
    /// Unicast peers instead of a group; datagrams from anyone else are refused.
    pub peers: Vec<IpAddr>,
    pub port: u16,
    /// IPVS syncid (0-255): datagrams of another id are ignored (0 accepts
    /// any, as the kernel's backup).
    pub syncid: u8,
    /// A file holding the shared key of the authenticated envelope.
    pub auth_key: Option<PathBuf>,
    /// Multicast TTL (1: the link only).
    pub ttl: u8,
    /// One packet in this many re-sends an established connection.
    pub sync_period: u32,
    /// Seconds a joining director waits for a full resync (0: none).
    pub resync_wait: u32,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            mode: SyncMode::ActiveActive,
            interface: String::new(),
            group: None,
            peers: Vec::new(),
            port: DEFAULT_SYNC_PORT,
            syncid: 0,
            auth_key: None,
            ttl: DEFAULT_SYNC_TTL,
            sync_period: DEFAULT_SYNC_PERIOD,
            resync_wait: DEFAULT_RESYNC_WAIT,
        }
    }
}

/// The keys of `[announce]` (the reader refuses any other).
pub(crate) const ANNOUNCE_KEYS: &[&str] = &["up", "down", "timeout", "retry", "withdraw_delay"];

/// Default `[announce] timeout`: a command still running after it is killed.
pub const DEFAULT_ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `[announce] retry`: how long after a failed command it runs again.
pub const DEFAULT_ANNOUNCE_RETRY: Duration = Duration::from_secs(5);
/// Default `[announce] withdraw_delay`: the wait, at stop, between the
/// `down` command and detaching XDP (for the withdrawal to propagate).
pub const DEFAULT_WITHDRAW_DELAY: Duration = Duration::from_secs(1);
/// Longest accepted `[announce]` duration.
pub const MAX_ANNOUNCE_DURATION: Duration = Duration::from_secs(3600);

/// `[announce]`: tell a routing daemon (BIRD, FRR, ExaBGP...) when to
/// announce the VIPs and when to withdraw them. Commands are argument
/// lists run without a shell, as keepalived runs its notify scripts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    /// Run once the director is ready (attached, config loaded).
    pub up: Option<Vec<String>>,
    /// Run at stop, before XDP is detached.
    pub down: Option<Vec<String>>,
    /// A command running longer is killed (and counts as failed).
    pub timeout: Duration,
    /// A failed command runs again after this long, until it succeeds or
    /// the wanted state changes.
    pub retry: Duration,
    /// At stop, the wait after `down` (and the services' `quorum_down`)
    /// before XDP is detached.
    pub withdraw_delay: Duration,
}

impl Default for Announce {
    fn default() -> Self {
        Announce {
            up: None,
            down: None,
            timeout: DEFAULT_ANNOUNCE_TIMEOUT,
            retry: DEFAULT_ANNOUNCE_RETRY,
            withdraw_delay: DEFAULT_WITHDRAW_DELAY,
        }
    }
}

impl SyncConfig {
    /// Where datagrams go: the group (default 224.0.0.81) or the peers.
    pub fn destinations(&self) -> Vec<IpAddr> {
        if !self.peers.is_empty() {
            return self.peers.clone();
        }
        vec![self.group.unwrap_or(IpAddr::V4(DEFAULT_SYNC_GROUP))]
    }
}

/// Parse a duration as the config writes one: an integer of seconds, or a
/// string with a unit, `"500ms"`, `"10s"`, `"2m"`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, mul_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else {
        (s, 1000)
    };
    let n: u64 = num.trim().parse().ok()?;
    Some(Duration::from_millis(n.checked_mul(mul_ms)?))
}

/// A duration as the config writes it: whole seconds as an integer, else
/// a string in milliseconds.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        d.as_secs().to_string()
    } else {
        format!("\"{}ms\"", d.as_millis())
    }
}

/// The keys of `[[fwmark]]` (the reader refuses any other).
pub(crate) const FWMARK_KEYS: &[&str] = &["mark", "rules"];

/// `[[fwmark]]`: packets matching any rule carry `mark`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FwmarkGroup {
    pub mark: u32,
    pub rules: Vec<FwmarkRuleConfig>,
}

/// The keys of a `[[fwmark]]` rule (the reader refuses any other).
pub(crate) const RULE_KEYS: &[&str] = &["vip", "proto", "ports"];

/// One rule of a firewall-mark group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FwmarkRuleConfig {
    pub vip: IpAddr,
    pub proto: Proto,
    pub ports: PortSet,
}

/// The keys of `persistence = { ... }` (the reader refuses any other).
pub(crate) const PERSISTENCE_KEYS: &[&str] = &["timeout", "netmask", "prefix6"];

/// `persistence = { timeout, netmask, prefix6 }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PersistenceConfig {
    /// Seconds.
    pub timeout: u32,
    /// IPv4 client netmask (contiguous), default 255.255.255.255.
    pub netmask: Ipv4Addr,
    /// IPv6 client prefix length, default 128.
    pub prefix6: u8,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        PersistenceConfig {
            timeout: DEFAULT_PERSISTENCE_TIMEOUT,
            netmask: Ipv4Addr::BROADCAST,
            prefix6: 128,
        }
    }
}

impl PersistenceConfig {
    /// The netmask as a prefix length, `None` if it is not contiguous.
    pub fn prefix4(&self) -> Option<u8> {
        netmask_prefix(self.netmask)
    }
}

/// Prefix length of a contiguous netmask (`255.255.255.0` -> 24).
pub fn netmask_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (ones + m.trailing_zeros() == 32).then_some(ones as u8)
}

/// Netmask of a prefix length (24 -> `255.255.255.0`).
pub fn prefix_netmask(prefix: u8) -> Ipv4Addr {
    let p = u32::from(prefix.min(32));
    Ipv4Addr::from(if p == 0 { 0 } else { u32::MAX << (32 - p) })
}

/// The keys of `[[service]]` (the reader refuses any other).
pub(crate) const SERVICE_KEYS: &[&str] = &[
    "name",
    "fwmark",
    "proto",
    "vip",
    "port",
    "scheduler",
    "scheduler_flags",
    "mh_table_size",
    "persistence",
    "expire_nodest_conn",
    "expire_quiescent_template",
    "health",
    "sorry_server",
    "quorum",
    "hysteresis",
    "quorum_up",
    "quorum_down",
    "real",
];

/// Default `quorum` of a service (keepalived's).
pub const DEFAULT_QUORUM: u32 = 1;

/// `[[service]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceConfig {
    /// Unique name (letters, digits, `-`, `_`, `.`), used in logs and metrics.
    pub name: String,
    /// `fwmark = N`, or `proto` + `vip` + `port`.
    pub key: ServiceKey,
    pub scheduler: String,
    /// `scheduler_flags` and `mh_table_size`.
    pub sched_params: SchedParams,
    /// `None`: not persistent.
    pub persistence: Option<PersistenceConfig>,
    /// `None`: inherit `[director]`.
    pub expire_nodest_conn: Option<bool>,
    /// `None`: inherit `[director]`.
    pub expire_quiescent_template: Option<bool>,
    /// Health check defaults for every real server of the service.
    pub health: Option<HealthSpec>,
    /// Where new connections go when no real server can take one.
    pub sorry_server: Option<SorryConfig>,
    /// keepalived `quorum`: the service has quorum while the weights of
    /// its live real servers (not held down by a health check) add up to
    /// at least this (default 1, never 0).
    pub quorum: u32,
    /// keepalived `hysteresis` (default 0): quorum is lost below
    /// `quorum - hysteresis` and regained at `quorum + hysteresis`.
    pub hysteresis: u32,
    /// Run (no shell) when the service gains quorum, or at start with it.
    pub quorum_up: Option<Vec<String>>,
    /// Run (no shell) when the service loses quorum, or at start without
    /// it, and at stop (before XDP is detached).
    pub quorum_down: Option<Vec<String>>,
    pub reals: Vec<RealConfig>,
}

impl ServiceConfig {
    /// The port real servers inherit when they have none: the service port,
    /// or `None` (keep the packet's port) for fwmark and port-0 services.
    pub fn default_real_port(&self) -> Option<u16> {
        match self.key {
            ServiceKey::Addr { port, .. } if port != 0 => Some(port),
            _ => None,
        }
    }
}

/// The keys of `sorry_server = { ... }` (the reader refuses any other).
pub(crate) const SORRY_KEYS: &[&str] = &["addr", "port", "forward"];

/// `sorry_server = { addr, port, forward }` of a service (keepalived
/// `sorry_server`): new connections go there while no real server of the
/// service can take one (all down, quiesced, weight 0 or overloaded, or
/// none configured); existing connections to it continue until they end.
/// It is reached as a real server is (same `port` and `forward` rules),
/// has no health check, and never gets a persistence template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SorryConfig {
    pub addr: IpAddr,
    /// `None`: as a real server without a port (the service port, or the
    /// packet's own for fwmark and port-0 services).
    pub port: Option<u16>,
    pub forward: FwdMethod,
}

impl SorryConfig {
    /// The port it is reached on (`None` = the packet's own).
    pub fn effective_port(&self, svc: &ServiceConfig) -> Option<u16> {
        self.port.or(svc.default_real_port())
    }
}

/// The keys of `[[service.real]]` (the reader refuses any other).
pub(crate) const REAL_KEYS: &[&str] = &[
    "addr",
    "port",
    "weight",
    "forward",
    "u_threshold",
    "l_threshold",
    "health",
];

/// `[[service.real]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RealConfig {
    pub addr: IpAddr,
    /// `None` (or 0 in the file): the service port for an address service,
    /// the packet's own port for fwmark and port-0 services (as IPVS does
    /// with a real server port of 0).
    pub port: Option<u16>,
    /// 0..=65535; 0 = quiesced (no new connections).
    pub weight: u32,
    pub forward: FwdMethod,
    /// Upper connection threshold, 0 = none (IPVS `-x`).
    pub u_threshold: u32,
    /// Lower connection threshold, 0 = 3/4 of the upper (IPVS `-y`).
    pub l_threshold: u32,
    /// Per-real health overrides, merged key by key over the service's.
    pub health: Option<HealthSpec>,
}

impl RealConfig {
    /// A real server with default weight 1, DR, no thresholds, no health.
    pub fn new(addr: IpAddr, port: Option<u16>) -> RealConfig {
        RealConfig {
            addr,
            port,
            weight: 1,
            forward: FwdMethod::Dr,
            u_threshold: 0,
            l_threshold: 0,
            health: None,
        }
    }

    /// The port this real server is reached on (`None` = the packet's own).
    pub fn effective_port(&self, svc: &ServiceConfig) -> Option<u16> {
        self.port.or(svc.default_real_port())
    }

    /// The health check of this real server: its own keys over the
    /// service's, over the defaults. `None`: not checked (no `health` table
    /// anywhere, or `type = "none"`). `Err`: no port to probe.
    pub fn health_check(&self, svc: &ServiceConfig) -> Result<Option<HealthCheck>, String> {
        let (own, base) = (self.health.as_ref(), svc.health.as_ref());
        if own.is_none() && base.is_none() {
            return Ok(None);
        }
        macro_rules! pick {
            ($f:ident) => {
                own.and_then(|h| h.$f.clone())
                    .or_else(|| base.and_then(|h| h.$f.clone()))
            };
        }
        let kind = pick!(kind).unwrap_or(HealthKind::Tcp);
        let probe = match kind {
            HealthKind::None => return Ok(None),
            HealthKind::Tcp => HealthProbe::Tcp,
            HealthKind::Http => HealthProbe::Http {
                path: pick!(path).unwrap_or_else(|| "/".to_string()),
                expect_status: pick!(expect_status).unwrap_or(200),
            },
            HealthKind::Udp => HealthProbe::Udp {
                send: pick!(send).unwrap_or_default(),
                expect: pick!(expect),
            },
            HealthKind::Exec => HealthProbe::Exec {
                cmd: pick!(cmd).unwrap_or_default(),
            },
        };
        let port = match pick!(port).or(self.effective_port(svc)) {
            Some(p) => p,
            // A program needs no port (it is told 0).
            None if kind == HealthKind::Exec => 0,
            None => {
                return Err(
                    "health check needs a `port`: the real server has none and the service \
                     keeps the packet's port"
                        .to_string(),
                )
            }
        };
        Ok(Some(HealthCheck {
            probe,
            port,
            interval: pick!(interval).unwrap_or(5),
            timeout: pick!(timeout).unwrap_or(3),
            rise: pick!(rise).unwrap_or(2),
            fall: pick!(fall).unwrap_or(3),
            on_failure: pick!(on_failure).unwrap_or(OnFailure::Quiesce),
            alpha: pick!(alpha).unwrap_or(false),
            omega: pick!(omega).unwrap_or(false),
            notify_up: pick!(notify_up),
            notify_down: pick!(notify_down),
        }))
    }
}

/// Health check type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthKind {
    Tcp,
    Http,
    Udp,
    Exec,
    None,
}

impl HealthKind {
    pub const fn name(self) -> &'static str {
        match self {
            HealthKind::Tcp => "tcp",
            HealthKind::Http => "http",
            HealthKind::Udp => "udp",
            HealthKind::Exec => "exec",
            HealthKind::None => "none",
        }
    }
}

/// The keys of `health = { ... }` (the reader refuses any other).
pub(crate) const HEALTH_KEYS: &[&str] = &[
    "type",
    "port",
    "interval",
    "timeout",
    "rise",
    "fall",
    "path",
    "expect_status",
    "send",
    "expect",
    "cmd",
    "on_failure",
    "alpha",
    "omega",
    "notify_up",
    "notify_down",
];

/// A `health = { ... }` table as written: every key optional. A real
/// server's table overrides its service's key by key.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HealthSpec {
    /// `type`; default `tcp` when a health table exists.
    pub kind: Option<HealthKind>,
    /// Default: the real server's port, else the service port.
    pub port: Option<u16>,
    /// Seconds between probes, default 5.
    pub interval: Option<u32>,
    /// Seconds before a probe fails, default 3.
    pub timeout: Option<u32>,
    /// Successes before a down server is up again, default 2.
    pub rise: Option<u32>,
    /// Failures before an up server is down, default 3.
    pub fall: Option<u32>,
    /// http: request path, default `/`.
    pub path: Option<String>,
    /// http: expected status, default 200.
    pub expect_status: Option<u16>,
    /// udp: payload sent, default empty.
    pub send: Option<String>,
    /// udp: the reply must start with this; unset: success unless an ICMP
    /// port-unreachable comes back within `timeout`.
    pub expect: Option<String>,
    /// exec: the program and its arguments (`{addr}`, `{port}` replaced);
    /// it also gets `XDPVS_REAL_ADDR`, `XDPVS_REAL_PORT`, `XDPVS_SERVICE`.
    pub cmd: Option<Vec<String>>,
    /// Default `quiesce`.
    pub on_failure: Option<OnFailure>,
    /// Start down until the first successful check (keepalived `alpha`),
    /// default false (start up).
    pub alpha: Option<bool>,
    /// Run `notify_down` for servers still up when the director stops
    /// (keepalived `omega`), default false.
    pub omega: Option<bool>,
    /// Program run when the check brings the server up (same environment
    /// as `cmd`).
    pub notify_up: Option<Vec<String>>,
    /// Program run when the check takes the server down.
    pub notify_down: Option<Vec<String>>,
}

/// The keys of `[[neighbor]]` (the reader refuses any other).
pub(crate) const NEIGHBOR_KEYS: &[&str] = &["addr", "mac", "interface"];

/// `[[neighbor]]`: a pinned next-hop MAC for an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighborPin {
    pub addr: IpAddr,
    pub mac: [u8; 6],
    /// Must be one of `director.interfaces`.
    pub interface: String,
}

/// Parse `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut n = 0;
    for part in s.split([':', '-']) {
        let slot = mac.get_mut(n)?;
        if part.len() != 2 {
            return None;
        }
        *slot = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6).then_some(mac)
}

/// Format a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = *mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: file.clone(),
            source,
        })?;
        Config::parse(&text, &file)
    }

    /// Parse and validate config text; `file_name` appears in errors.
    pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigError> {
        let cfg = crate::config::reader::read(text, file_name)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check the whole config. `Ok` carries warnings (e.g. an unused mark).
    pub fn validate(&self) -> Result<Vec<Diagnostic>, ConfigError> {
        let (errors, warnings) = crate::config::validate::validate(self);
        if errors.is_empty() {
            Ok(warnings)
        } else {
            Err(invalid(errors))
        }
    }

    /// The config as TOML, every key explicit; parses back to an equal config.
    pub fn to_toml(&self) -> String {
        crate::config::render::render(self)
    }

    /// The file name errors will carry.
    pub fn file_name(&self) -> &str {
        self.origin.file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmask_prefixes() {
        let p = |s: &str| netmask_prefix(s.parse().unwrap());
        assert_eq!(p("255.255.255.0"), Some(24));
        assert_eq!(p("255.255.255.255"), Some(32));
        assert_eq!(p("0.0.0.0"), Some(0));
        assert_eq!(p("255.0.255.0"), None);
        assert_eq!(p("0.0.0.255"), None);
        for n in 0..=32u8 {
            assert_eq!(netmask_prefix(prefix_netmask(n)), Some(n));
        }
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:0a:0B:ff:01"), Some([2, 0, 10, 11, 255, 1]));
        assert_eq!(parse_mac("02-00-0a-0b-ff-01"), Some([2, 0, 10, 11, 255, 1]));
        for bad in [
            "02:00:0a:0b:ff",
            "02:00:0a:0b:ff:01:02",
            "2:00:0a:0b:ff:01",
            "zz:00:0a:0b:ff:01",
            "",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert_eq!(format_mac(&[2, 0, 10, 11, 255, 1]), "02:00:0a:0b:ff:01");
    }

    fn svc(key: ServiceKey) -> ServiceConfig {
        ServiceConfig {
            name: "s".into(),
            key,
            scheduler: "rr".into(),
            sched_params: SchedParams::default(),
            persistence: None,
            expire_nodest_conn: None,
            expire_quiescent_template: None,
            health: None,
            sorry_server: None,
            quorum: DEFAULT_QUORUM,
            hysteresis: 0,
            quorum_up: None,
            quorum_down: None,
            reals: vec![],
        }
    }

    #[test]
    fn health_merges_real_over_service_over_defaults() {
        let mut s = svc(ServiceKey::Addr {
            proto: Proto::Tcp,
            vip: "198.18.0.1".parse().unwrap(),
            port: 80,
        });
        s.health = Some(HealthSpec {
            kind: Some(HealthKind::Http),
            path: Some("/health".into()),
            fall: Some(5),
            ..HealthSpec::default()
        });
        let mut r = RealConfig::new("198.18.1.1".parse().unwrap(), None);
        r.health = Some(HealthSpec {
            port: Some(8080),
            fall: Some(7),
            ..HealthSpec::default()
        });
        let h = r.health_check(&s).unwrap().unwrap();
        assert_eq!(
            h,
            HealthCheck {
                probe: HealthProbe::Http {
                    path: "/health".into(),
                    expect_status: 200
                },
                port: 8080,
                interval: 5,
                timeout: 3,
                rise: 2,
                fall: 7,
                on_failure: OnFailure::Quiesce,
                alpha: false,
                omega: false,
                notify_up: None,
                notify_down: None,
            }
        );
        r.health = None;
        assert_eq!(r.health_check(&s).unwrap().unwrap().port, 80);
        r.health = Some(HealthSpec {
            kind: Some(HealthKind::None),
            ..HealthSpec::default()
        });
        assert_eq!(r.health_check(&s).unwrap(), None);
        s.health = None;
        r.health = None;
        assert_eq!(r.health_check(&s).unwrap(), None);
    }

    #[test]
    fn health_without_port_on_fwmark_service_is_an_error() {
        let mut s = svc(ServiceKey::Fwmark(1));
        s.health = Some(HealthSpec::default());
        let r = RealConfig::new("198.18.1.1".parse().unwrap(), None);
        assert!(r.health_check(&s).unwrap_err().contains("port"));
        let r = RealConfig::new("198.18.1.1".parse().unwrap(), Some(443));
        assert_eq!(r.health_check(&s).unwrap().unwrap().port, 443);
    }
}
