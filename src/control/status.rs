//! What the control plane knows about the running director, as plain data:
//! per-shard reports published by the shards (never from the packet path),
//! the aggregated [`Status`] the CLI and metrics read, and its rendering in
//! the layout of `ipvsadm -L -n` (`--stats`, `--rate`, `--persistent-conn`,
//! `-c`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::service::model::{DestId, FwdMethod, Millis, ServiceKey};
use crate::service::snapshot::{Dest, Snapshot};
use crate::shard::engine::{DestCounters, EngineStats};
use crate::shard::template::TemplateKey;

/// Longest connection listing a shard produces on request.
pub const MAX_DUMP_ROWS: usize = 200_000;

/// What a shard publishes for readers, a few times a second from its tick.
#[derive(Clone, Debug, Default)]
pub struct ShardReport {
    pub dests: HashMap<DestId, DestCounters>,
    pub engine: EngineStats,
    pub conns: usize,
    pub templates: usize,
    /// The answer to the last connection-listing request (taken by the
    /// control thread, which renders it outside the lock).
    pub dump: Vec<DumpRow>,
    pub dump_gen: u64,
    /// The last publish request this report answers.
    pub pub_gen: u64,
    /// Engine time per packet, sampled: counts per [`LATENCY_BUCKETS_NS`]
    /// bucket (the last one is +Inf), and the sum in ns.
    pub latency: [u64; LATENCY_BUCKETS_NS.len() + 1],
    pub latency_sum_ns: u64,
}

/// Upper bounds (ns) of the data-path latency histogram buckets.
pub const LATENCY_BUCKETS_NS: [u64; 10] = [
    50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 50_000, 100_000,
];

/// The bucket of a latency sample.
pub fn latency_bucket(ns: u64) -> usize {
    LATENCY_BUCKETS_NS
        .iter()
        .position(|&b| ns <= b)
        .unwrap_or(LATENCY_BUCKETS_NS.len())
}

/// One shard's report slot: the report, and a request counter the control
/// plane bumps to ask for a connection listing.
#[derive(Debug, Default)]
pub struct ReportSlot {
    pub dump_req: AtomicU64,
    /// Bumped by the control plane to have the shard publish at once.
    pub pub_req: AtomicU64,
    pub report: Mutex<ShardReport>,
}

impl ReportSlot {
    /// The generation of the publish asked for.
    pub fn publish_requested(&self) -> u64 {
        self.pub_req.load(Ordering::Acquire)
    }

    /// The generation of the listing asked for (0: none yet).
    pub fn requested(&self) -> u64 {
        self.dump_req.load(Ordering::Acquire)
    }
}

pub type Reports = Arc<Vec<ReportSlot>>;

pub fn new_reports(n: usize) -> Reports {
    Arc::new((0..n).map(|_| ReportSlot::default()).collect())
}

/// ipvsadm's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
}

impl Counters {
    pub fn from_dest(c: &DestCounters) -> Counters {
        Counters {
            conns: c.conns,
            inpkts: c.inpkts,
            outpkts: c.outpkts,
            inbytes: c.inbytes,
            outbytes: c.outbytes,
        }
    }
    pub fn add(&mut self, o: &Counters) {
        self.conns += o.conns;
        self.inpkts += o.inpkts;
        self.outpkts += o.outpkts;
        self.inbytes += o.inbytes;
        self.outbytes += o.outbytes;
    }
    /// `self - base`, never below zero (a counter reset by a restart).
    pub fn since(&self, base: &Counters) -> Counters {
        Counters {
            conns: self.conns.saturating_sub(base.conns),
            inpkts: self.inpkts.saturating_sub(base.inpkts),
            outpkts: self.outpkts.saturating_sub(base.outpkts),
            inbytes: self.inbytes.saturating_sub(base.inbytes),
            outbytes: self.outbytes.saturating_sub(base.outbytes),
        }
    }
}

/// ipvsadm's rates, per second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub cps: f64,
    pub inpps: f64,
    pub outpps: f64,
    pub inbps: f64,
    pub outbps: f64,
}

impl Rates {
    /// Exponentially smoothed rates from a counter delta over `secs`
    /// (IPVS's estimator smooths over about 8 s; weight 1/4 per 2 s sample).
    pub fn update(&mut self, delta: &Counters, secs: f64, first: bool) {
        if secs <= 0.0 {
            return;
        }
        let sample = [
            delta.conns as f64 / secs,
            delta.inpkts as f64 / secs,
            delta.outpkts as f64 / secs,
            delta.inbytes as f64 / secs,
            delta.outbytes as f64 / secs,
        ];
        let cur = [
            &mut self.cps,
            &mut self.inpps,
            &mut self.outpps,
            &mut self.inbps,
            &mut self.outbps,
        ];
        for (c, s) in cur.into_iter().zip(sample) {
            *c = if first { s } else { *c + (s - *c) / 4.0 };
        }
    }
    pub fn add(&mut self, o: &Rates) {
        self.cps += o.cps;
        self.inpps += o.inpps;
        self.outpps += o.outpps;
        self.inbps += o.inbps;
        self.outbps += o.outbps;
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RealStatus {
    pub id: u32,
    pub addr: IpAddr,
    /// `None`: the packet's own port.
    pub port: Option<u16>,
    /// ipvsadm's column: Route, Masq, Tunnel, GUE.
    pub forward: String,
    /// Weight in effect (0 when quiesced by a failed health check).
    pub weight: u32,
    /// Weight in the config.
    pub config_weight: u32,
    pub active: u64,
    pub inactive: u64,
    pub persist: u64,
    /// "up", "down", "-" (no health check), or "sorry" (the service's
    /// sorry server).
    pub health: String,
    pub stats: Counters,
    pub rates: Rates,
}

impl Default for RealStatus {
    fn default() -> Self {
        RealStatus {
            id: 0,
            addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            port: None,
            forward: String::new(),
            weight: 0,
            config_weight: 0,
            active: 0,
            inactive: 0,
            persist: 0,
            health: String::new(),
            stats: Counters::default(),
            rates: Rates::default(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    /// `TCP  198.18.0.100:80`, `FWM  1`.
    pub key: String,
    pub scheduler: String,
    /// `persistent 300 mask 255.255.255.0`, or empty.
    pub flags: String,
    pub reals: Vec<RealStatus>,
    pub stats: Counters,
    pub rates: Rates,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardStatus {
    pub rx: u64,
    pub tx: u64,
    pub handoff_out: u64,
    pub handoff_in: u64,
    /// Frames the engine would hand to the kernel but that came through
    /// AF_XDP (not ours after all, e.g. an ICMP error about no connection):
    /// recycled and counted here.
    pub passed_unhandled: u64,
    pub dropped: Vec<(String, u64)>,
    /// Malformed frames by what was wrong (a breakdown of drop "malformed").
    pub malformed: Vec<(String, u64)>,
    pub conns: u64,
    pub templates: u64,
    /// Connections created, expired by their timer, and evicted because
    /// the table was full (half-open and closing ones first).
    #[serde(default)]
    pub new_conns: u64,
    #[serde(default)]
    pub expired_conns: u64,
    #[serde(default)]
    pub evicted_conns: u64,
    #[serde(default)]
    pub expired_templates: u64,
    /// Frames lost in the I/O layer, not by a decision of the engine:
    /// `tx_full` (TX ring full), `no_frame` (no UMEM frame for a hand-off),
    /// `tx_invalid`, `forward_no_socket`, `handoff_invalid`, and the kernel's
    /// XSK statistics `xsk_rx_dropped` (frames), `xsk_rx_ring_full` and
    /// `xsk_fill_empty` (events), `xsk_tx_invalid`. Only nonzero entries.
    #[serde(default)]
    pub io_loss: Vec<(String, u64)>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Data-path engine time per packet (sampled 1 in 64), all shards:
    /// cumulative-ready bucket counts for [`LATENCY_BUCKETS_NS`] + Inf.
    pub latency_buckets: Vec<u64>,
    pub latency_sum_ns: u64,
    pub config: String,
    pub generation: u64,
    pub reloads: u64,
    pub reloads_refused: u64,
    pub last_reload: String,
    /// Wall-clock seconds the last reload took (read, validate, build,
    /// publish), applied or refused; 0 before the first.
    #[serde(default)]
    pub last_reload_seconds: f64,
    pub services: Vec<ServiceStatus>,
    pub shards: Vec<ShardStatus>,
    /// Connection sync (`[sync]`), when on.
    #[serde(default)]
    pub sync: Option<crate::control::sync::SyncStatus>,
    /// The routing daemon's announce state and the services' quorum.
    #[serde(default)]
    pub announce: crate::control::announce::AnnounceStatus,
    /// Flow offload into the XDP program (`[director] fast_path`), when
    /// the director has one.
    #[serde(default)]
    pub fast_path: Option<FastPathStatus>,
}

/// The fast path (flow offload) as `xdpvs stats` and the metrics show it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FastPathStatus {
    /// `[director] fast_path`.
    pub on: bool,
    /// Flows in the XDP flow cache now, and its capacity.
    pub flows: u64,
    pub capacity: u64,
    /// Packets and bytes the XDP program forwarded (live entries plus
    /// removed ones).
    pub packets: u64,
    pub bytes: u64,
    /// Packets that took the AF_XDP path (the shards' RX).
    pub slow_packets: u64,
    /// Entries the shards installed and removed, and installs the cache
    /// refused (full: those flows stay on the AF_XDP path).
    pub installs: u64,
    pub removes: u64,
    pub install_failed: u64,
}

impl FastPathStatus {
    /// The `xdpvs stats` line.
    pub fn render(&self) -> String {
        let total = self.packets + self.slow_packets;
        let pct = if total == 0 {
            0.0
        } else {
            self.packets as f64 * 100.0 / total as f64
        };
        format!(
            "fast path: {} flows {}/{} packets fast {} ({pct:.1}%) slow {} bytes fast {} installs {} removes {} install_failed {}\n",
            if self.on { "on" } else { "off" },
            self.flows,
            self.capacity,
            self.packets,
            self.slow_packets,
            self.bytes,
            self.installs,
            self.removes,
            self.install_failed
        )
    }
}

/// One line of `xdpvs list --connections` (`ipvsadm -L -c`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRow {
    pub proto: String,
    /// Milliseconds left (monotonic clock of the director).
    pub expires_ms: u64,
    pub state: String,
    pub source: String,
    pub virt: String,
    pub dest: String,
    /// A persistence template, not a connection.
    pub template: bool,
    /// Connections a template controls.
    pub controls: u32,
}

/// A listing row as a shard records it: plain values, no allocation, so a
/// shard copies its tables out quickly and the control thread does the
/// formatting ([`DumpRow::render`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpRow {
    Conn {
        proto: crate::service::model::Proto,
        /// TCP state name (`None` for UDP).
        state: Option<&'static str>,
        client: (IpAddr, u16),
        virt: (IpAddr, u16),
        dest: (IpAddr, u16),
        expires_ms: Millis,
    },
    Template {
        key: TemplateKey,
        raddr: IpAddr,
        rport: Option<u16>,
        expires_ms: Millis,
        controls: u32,
    },
}

impl DumpRow {
    /// The row as `xdpvs list --connections` shows it.
    pub fn render(&self) -> ConnRow {
        match *self {
            DumpRow::Conn {
                proto,
                state,
                client,
                virt,
                dest,
                expires_ms,
            } => ConnRow {
                proto: proto.name().to_uppercase(),
                expires_ms,
                state: state.unwrap_or("UDP").to_string(),
                source: sock(client.0, client.1),
                virt: sock(virt.0, virt.1),
                dest: sock(dest.0, dest.1),
                template: false,
                controls: 0,
            },
            DumpRow::Template {
                key,
                raddr,
                rport,
                expires_ms,
                controls,
            } => template_row(&key, raddr, rport, expires_ms, controls),
        }
    }
}

pub fn sock(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// The listing row of a persistence template, as `ipvsadm -L -c` shows one:
/// client port 0, a fwmark template's virtual address is the mark.
pub fn template_row(
    k: &TemplateKey,
    raddr: IpAddr,
    rport: Option<u16>,
    left: Millis,
    controls: u32,
) -> ConnRow {
    let (proto, source, virt) = match *k {
        TemplateKey::Addr {
            proto,
            client_masked,
            vip,
            vport,
        } => (
            proto.name().to_uppercase(),
            sock(client_masked, 0),
            sock(vip, vport),
        ),
        TemplateKey::Fwmark {
            client_masked,
            mark,
        } => (
            "IP".to_string(),
            sock(client_masked, 0),
            format!("FWM {mark}"),
        ),
    };
    ConnRow {
        proto,
        expires_ms: left,
        state: "NONE".into(),
        source,
        virt,
        dest: sock(raddr, rport.unwrap_or(0)),
        template: true,
        controls,
    }
}

pub fn forward_column(f: FwdMethod) -> &'static str {
    match f {
        FwdMethod::Dr => "Route",
        FwdMethod::Nat => "Masq",
        FwdMethod::Ipip => "Tunnel",
        FwdMethod::Gue => "GUE",
    }
}

pub fn service_key_column(k: &ServiceKey) -> String {
    match k {
        ServiceKey::Addr { proto, vip, port } => {
            format!("{:<4} {}", proto.name().to_uppercase(), sock(*vip, *port))
        }
        ServiceKey::Fwmark(m) => format!("FWM  {m}"),
    }
}

pub fn dest_column(d: &Dest) -> String {
    sock(d.addr, d.port.unwrap_or(0))
}

/// Which `ipvsadm -L` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ListMode {
    #[default]
    Plain,
    Stats,
    Rate,
    Persistent,
}

fn flags_part(s: &ServiceStatus) -> String {
    if s.flags.is_empty() {
        String::new()
    } else {
        format!(" {}", s.flags)
    }
}

/// Render the service table like `ipvsadm -L -n [--stats|--rate|--persistent-conn]`.
pub fn render_list(st: &Status, mode: ListMode) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "xdpvs: {} service(s), config {} (generation {})",
        st.services.len(),
        st.config,
        st.generation
    );
    match mode {
        ListMode::Plain => {
            o.push_str("Prot LocalAddress:Port Scheduler Flags\n");
            o.push_str("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n");
            for s in &st.services {
                let _ = writeln!(o, "{} {}{}", s.key, s.scheduler, flags_part(s));
                for r in &s.reals {
                    let mark = match r.health.as_str() {
                        "down" => " (down)",
                        "sorry" => " (sorry server)",
                        _ => "",
                    };
                    let _ = writeln!(
                        o,
                        "  -> {:<28} {:<7} {:<6} {:<10} {}{mark}",
                        sock(r.addr, r.port.unwrap_or(0)),
                        r.forward,
                        r.weight,
                        r.active,
                        r.inactive
                    );
                }
            }
        }
        ListMode::Stats => {
            o.push_str(
                "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n",
            );
            o.push_str("  -> RemoteAddress:Port\n");
            for s in &st.services {
                let _ = writeln!(o, "{:<33}{}", s.key, stats_cols(&s.stats));
                for r in &s.reals {
                    let _ = writeln!(
                        o,
                        "  -> {:<29}{}",
                        sock(r.addr, r.port.unwrap_or(0)),
                        stats_cols(&r.stats)
                    );
                }
            }
        }
        ListMode::Rate => {
            o.push_str(
                "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n",
            );
            o.push_str("  -> RemoteAddress:Port\n");
            for s in &st.services {
                let _ = writeln!(o, "{:<33}{}", s.key, rate_cols(&s.rates));
                for r in &s.reals {
                    let _ = writeln!(
                        o,
                        "  -> {:<29}{}",
                        sock(r.addr, r.port.unwrap_or(0)),
                        rate_cols(&r.rates)
                    );
                }
            }
        }
        ListMode::Persistent => {
            o.push_str(
                "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn\n",
            );
            o.push_str("  -> RemoteAddress:Port\n");
            for s in &st.services {
                let _ = writeln!(o, "{} {}{}", s.key, s.scheduler, flags_part(s));
                for r in &s.reals {
                    let _ = writeln!(
                        o,
                        "  -> {:<29} {:<9} {:<11} {:<10} {}",
                        sock(r.addr, r.port.unwrap_or(0)),
                        r.weight,
                        r.persist,
                        r.active,
                        r.inactive
                    );
                }
            }
        }
    }
    o
}

/// ipvsadm prints large numbers with K/M/G suffixes in `--stats`; we print
/// exact numbers, which scripts (and tests) can compare.
fn stats_cols(c: &Counters) -> String {
    format!(
        "{:>8} {:>8} {:>8} {:>8} {:>8}",
        c.conns, c.inpkts, c.outpkts, c.inbytes, c.outbytes
    )
}

fn rate_cols(r: &Rates) -> String {
    format!(
        "{:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0}",
        r.cps, r.inpps, r.outpps, r.inbps, r.outbps
    )
}

/// Render connections like `ipvsadm -L -c -n`.
pub fn render_conns(rows: &[ConnRow]) -> String {
    let mut o = String::from("IPVS connection entries\n");
    o.push_str(
        "pro expire state       source                    virtual                   destination\n",
    );
    for r in rows {
        let secs = r.expires_ms / 1000;
        let _ = writeln!(
            o,
            "{:<3} {:02}:{:02}  {:<11} {:<25} {:<25} {}",
            r.proto,
            secs / 60,
            secs % 60,
            r.state,
            r.source,
            r.virt,
            r.dest
        );
    }
    o
}

/// The persistence flags column of a service.
pub fn persistence_flags(s: &crate::service::snapshot::Service) -> String {
    match s.persistence {
        None => String::new(),
        Some(p) => {
            let mut f = format!("persistent {}", p.timeout_ms / 1000);
            if p.prefix4 != 32 {
                let _ = write!(
                    f,
                    " mask {}",
                    crate::config::schema::prefix_netmask(p.prefix4)
                );
            }
            if p.prefix6 != 128 {
                let _ = write!(f, " prefix6 {}", p.prefix6);
            }
            f
        }
    }
}

/// Sum the shards' per-destination counters.
pub fn dest_totals(reports: &Reports) -> HashMap<DestId, DestCounters> {
    let mut totals: HashMap<DestId, DestCounters> = HashMap::new();
    for slot in reports.iter() {
        if let Ok(r) = slot.report.lock() {
            for (id, c) in &r.dests {
                let t = totals.entry(*id).or_default();
                t.conns += c.conns;
                t.inpkts += c.inpkts;
                t.outpkts += c.outpkts;
                t.inbytes += c.inbytes;
                t.outbytes += c.outbytes;
                t.active += c.active;
                t.inactive += c.inactive;
                t.persist += c.persist;
            }
        }
    }
    totals
}

/// The services of a snapshot with their counters (no rates, no health).
pub fn services_status(
    snap: &Snapshot,
    totals: &HashMap<DestId, DestCounters>,
    base: &HashMap<DestId, Counters>,
) -> Vec<ServiceStatus> {
    snap.services
        .iter()
        .map(|s| {
            let mut svc = ServiceStatus {
                name: s.name.clone(),
                key: service_key_column(&s.key),
                scheduler: s.scheduler.name().to_string(),
                flags: persistence_flags(s),
                ..ServiceStatus::default()
            };
            for d in &s.dests {
                let c = totals.get(&d.id).copied().unwrap_or_default();
                let stats =
                    Counters::from_dest(&c).since(&base.get(&d.id).copied().unwrap_or_default());
                svc.stats.add(&stats);
                svc.reals.push(RealStatus {
                    id: d.id.0,
                    addr: d.addr,
                    port: d.port,
                    forward: forward_column(d.fwd).to_string(),
                    weight: d.weight,
                    config_weight: d.weight,
                    active: u64::from(c.active),
                    inactive: u64::from(c.inactive),
                    persist: u64::from(c.persist),
                    health: "-".into(),
                    stats,
                    rates: Rates::default(),
                });
            }
            svc
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_smooth_towards_the_sample() {
        let mut r = Rates::default();
        let d = Counters {
            conns: 20,
            inpkts: 200,
            ..Counters::default()
        };
        r.update(&d, 2.0, true);
        assert_eq!(r.cps, 10.0);
        assert_eq!(r.inpps, 100.0);
        r.update(&Counters::default(), 2.0, false);
        assert_eq!(r.cps, 7.5);
    }

    #[test]
    fn counters_since_a_baseline_never_go_negative() {
        let a = Counters {
            conns: 5,
            inpkts: 10,
            ..Counters::default()
        };
        let b = Counters {
            conns: 7,
            inpkts: 4,
            ..Counters::default()
        };
        let d = a.since(&b);
        assert_eq!(d.conns, 0);
        assert_eq!(d.inpkts, 6);
    }

    #[test]
    fn listing_has_ipvsadm_columns() {
        let st = Status {
            config: "x.toml".into(),
            services: vec![ServiceStatus {
                name: "web".into(),
                key: "FWM  1".into(),
                scheduler: "rr".into(),
                flags: "persistent 300 mask 255.255.255.0".into(),
                reals: vec![RealStatus {
                    addr: "198.18.0.11".parse().unwrap(),
                    port: None,
                    forward: "Route".into(),
                    weight: 1,
                    active: 2,
                    inactive: 3,
                    stats: Counters {
                        conns: 5,
                        inpkts: 50,
                        ..Counters::default()
                    },
                    ..RealStatus::default()
                }],
                ..ServiceStatus::default()
            }],
            ..Status::default()
        };
        let plain = render_list(&st, ListMode::Plain);
        assert!(
            plain.contains("FWM  1 rr persistent 300 mask 255.255.255.0"),
            "{plain}"
        );
        assert!(plain.contains("-> 198.18.0.11:0"), "{plain}");
        assert!(plain.contains("Route   1      2          3"), "{plain}");
        let stats = render_list(&st, ListMode::Stats);
        assert!(stats.contains("       5       50"), "{stats}");
    }
}
