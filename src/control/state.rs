//! The control plane's state and its answers: the running config, how a new
//! one is published (validate + build the whole snapshot, update the XDP
//! maps, one arc-swap store), runtime edits (`ipvsadm -A/-E/-D/-a/-e/-d`),
//! health-check overrides, counters, rates and listings.
//!
//! No I/O of its own: the io_uring loop ([`crate::control::event_loop`])
//! feeds it requests and timer ticks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::config::build::build_snapshot;
use crate::config::schema::{Config, OnFailure, RealConfig};
use crate::control::announce::{live_weights, Announcer, T_ANNOUNCE_BASE};
use crate::control::api::{RealSpec, Request, Response};
use crate::control::health::configured_checks;
use crate::control::status::FastPathStatus;
use crate::control::status::{
    dest_totals, services_status, ConnRow, Counters, DumpRow, Rates, Reports, ShardStatus, Status,
    LATENCY_BUCKETS_NS,
};
use crate::dataplane::counters::ShardCounters;
use crate::service::model::{DestId, FwdMethod, ServiceKey};
use crate::service::snapshot::Snapshot;
use crate::shard::engine::DestCounters;
use crate::shard::verdict::DropReason;

/// Identity of a real server across rebuilds: (service, address, port).
pub type RealKey = (ServiceKey, IpAddr, Option<u16>);

/// Publishes a snapshot's VIP / real-server entries to the XDP maps.
pub type MapUpdater = Box<dyn Fn(&Snapshot) -> Result<(), String>>;

pub struct ControlState {
    pub path: PathBuf,
    /// The configured state (what `save` prints).
    pub cfg: Config,
    pub snaps: Arc<ArcSwap<Snapshot>>,
    maps: MapUpdater,
    /// Run by the control loop every 2 s (the director refreshes its
    /// local-address map there).
    periodic: Option<Box<dyn FnMut()>>,
    pub reports: Reports,
    shard_counters: Option<Arc<[ShardCounters]>>,
    /// Real servers a health check holds down, with what to do about them.
    down: HashMap<RealKey, OnFailure>,
    pub reloads: u64,
    pub refused: u64,
    pub last_reload: String,
    /// Wall-clock seconds of the last reload.
    pub last_reload_secs: f64,
    /// A successor asked for the state: stop (after answering).
    pub handover: bool,
    /// Counter baselines set by `zero`.
    base: HashMap<DestId, Counters>,
    /// Last totals and smoothed rates per real server.
    rates: HashMap<DestId, (Counters, Rates)>,
    last_rate: Option<Instant>,
    dump_gen: u64,
    /// Drop counters per shard at the last rate tick (for burst logs).
    last_drops: Vec<Vec<u64>>,
    /// The snapshot the last reload replaced, kept so that the shards never
    /// hold its last reference: freeing a large snapshot takes a
    /// millisecond or more, which belongs here, not on the data path.
    retired: Option<Arc<Snapshot>>,
    /// Connection sync with peer directors (`[sync]`).
    pub sync: Option<crate::control::sync::SyncDaemon>,
    /// The routing daemon's announce and quorum commands (driven by the
    /// control loop; told of every applied config and health change).
    pub announce: Announcer,
    /// The XDP flow cache (fast path), read for counters.
    pub flows: Option<crate::xdp::FlowCache>,
    /// What the fast path forwarded for real servers since removed from
    /// the config (their counters leave the XDP side's map).
    fast_retired: FastTotals,
}

/// What the fast path forwarded, all real servers together.
#[derive(Clone, Copy, Debug, Default)]
struct FastTotals {
    packets: u64,
    bytes: u64,
}

/// Drops in one rate interval (about 2 s) that make a log line.
pub const DROP_BURST: u64 = 100;

impl ControlState {
    pub fn new(
        path: PathBuf,
        cfg: Config,
        snaps: Arc<ArcSwap<Snapshot>>,
        maps: MapUpdater,
        reports: Reports,
    ) -> ControlState {
        let down = alpha_down(&cfg);
        let mut announce = Announcer::new(T_ANNOUNCE_BASE);
        announce.configure(&cfg, &live_weights(&cfg, &|rk| down.contains_key(rk)));
        ControlState {
            announce,
            flows: None,
            fast_retired: FastTotals::default(),
            periodic: None,
            path,
            cfg,
            snaps,
            maps,
            reports,
            shard_counters: None,
            down,
            reloads: 0,
            refused: 0,
            last_reload: "none yet".into(),
            last_reload_secs: 0.0,
            handover: false,
            base: HashMap::new(),
            rates: HashMap::new(),
            last_rate: None,
            dump_gen: 0,
            last_drops: Vec::new(),
            retired: None,
            sync: None,
        }
    }

    pub fn set_shard_counters(&mut self, c: Arc<[ShardCounters]>) {
        self.shard_counters = Some(c);
    }

    /// The config the data plane runs: the configured one with failed real
    /// servers quiesced (weight 0) or removed, as their checks say.
    pub fn effective(&self, cfg: &Config) -> Config {
        effective_with(cfg, &self.down)
    }

    /// The config the director starts with: `cfg` with the real servers
    /// whose check has `alpha` held down until their first successful check.
    pub fn initial(cfg: &Config) -> Config {
        effective_with(cfg, &alpha_down(cfg))
    }

    /// Validate and build `cfg` (with health overrides), update the XDP maps
    /// and publish it in one store. On error nothing changes.
    pub fn apply(&mut self, cfg: Config) -> Result<String, String> {
        // Real servers checked for the first time with `alpha` start down;
        // servers whose check is gone (removed, or `type = "none"`) are no
        // longer held down by it.
        let before: std::collections::HashSet<RealKey> = configured_checks(&self.cfg)
            .into_iter()
            .map(|(rk, _, _)| rk)
            .collect();
        let mut down = self.down.clone();
        let checks = configured_checks(&cfg);
        for (rk, _, h) in &checks {
            if h.alpha && !before.contains(rk) {
                down.insert(*rk, h.on_failure);
            }
        }
        let now: std::collections::HashSet<&RealKey> = checks.iter().map(|(rk, _, _)| rk).collect();
        down.retain(|rk, _| now.contains(rk) || !before.contains(rk));
        let eff = effective_with(&cfg, &down);
        let cur = self.snaps.load_full();
        let next = build_snapshot(&eff, Some(&cur)).map_err(|e| e.to_string())?;
        if cfg.sync != self.cfg.sync {
            match (&cfg.sync, self.sync.as_mut()) {
                (Some(n), Some(d)) => d.reconfigure(n)?,
                (None, Some(d)) => {
                    d.disable();
                    self.sync = None;
                    tracing::info!("sync: off ([sync] removed)");
                }
                (Some(_), None) => {
                    return Err("[sync] added: restart the director to open the sync socket".into())
                }
                (None, None) => {}
            }
        }
        let msg = format!(
            "generation {}, {} service(s), {} real server(s)",
            next.generation,
            next.services.len(),
            next.dest_index.len()
        );
        // New VIPs must reach the XDP filter before shards know them; stale
        // ones are harmless for a moment (the engine passes what it does not
        // serve).
        (self.maps)(&next)?;
        self.snaps.store(Arc::new(next));
        // The one retired before is freed here if a shard still used it.
        self.retired = Some(cur);
        self.cfg = cfg;
        self.down = down;
        let live = live_weights(&self.cfg, &|rk| self.down.contains_key(rk));
        self.announce.configure(&self.cfg, &live);
        Ok(msg)
    }

    /// Re-read the config file and apply it (SIGHUP, file change, `reload`).
    pub fn reload(&mut self, why: &str) -> Result<String, String> {
        let start = Instant::now();
        let r = Config::load(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|cfg| self.apply(cfg));
        let secs = start.elapsed().as_secs_f64();
        self.last_reload_secs = secs;
        match &r {
            Ok(m) => {
                self.reloads += 1;
                self.last_reload = format!("ok ({why}) in {secs:.3} s: {m}");
                tracing::info!("reload ({why}) ok in {secs:.3} s: {m}");
            }
            Err(e) => {
                self.refused += 1;
                self.last_reload = format!("refused ({why}) after {secs:.3} s: {e}");
                tracing::error!("reload ({why}) refused, running config kept: {e}");
            }
        }
        r
    }

    /// A health check changed its verdict about a real server.
    pub fn set_health(&mut self, rk: RealKey, down: Option<OnFailure>) -> Result<String, String> {
        match down {
            Some(f) => self.down.insert(rk, f),
            None => self.down.remove(&rk),
        };
        let cfg = self.cfg.clone();
        self.apply(cfg)
    }

    pub fn is_down(&self, rk: &RealKey) -> bool {
        self.down.contains_key(rk)
    }

    /// Log a line when a shard dropped more than [`DROP_BURST`] frames
    /// since the last call, with the reasons.
    fn log_drop_bursts(&mut self) {
        let Some(sc) = &self.shard_counters else {
            return;
        };
        let now: Vec<Vec<u64>> = sc
            .iter()
            .map(|c| {
                let st = c.snapshot();
                DropReason::ALL.iter().map(|r| st.dropped(*r)).collect()
            })
            .collect();
        for (shard, cur) in now.iter().enumerate() {
            let prev = self.last_drops.get(shard);
            let deltas: Vec<(DropReason, u64)> = DropReason::ALL
                .iter()
                .zip(cur.iter())
                .enumerate()
                .map(|(i, (r, n))| {
                    let p = prev.and_then(|p| p.get(i)).copied().unwrap_or(0);
                    (*r, n.saturating_sub(p))
                })
                .filter(|(_, d)| *d > 0)
                .collect();
            let total: u64 = deltas.iter().map(|(_, d)| d).sum();
            if prev.is_some() && total >= DROP_BURST {
                let why: Vec<String> = deltas
                    .iter()
                    .map(|(r, d)| format!("{}={d}", r.name()))
                    .collect();
                tracing::warn!(
                    "shard {shard}: {total} frames dropped in the last interval ({})",
                    why.join(" ")
                );
            }
        }
        self.last_drops = now;
    }

    /// Free the retired snapshot once no shard uses it any more.
    fn release_retired(&mut self) {
        if self
            .retired
            .as_ref()
            .is_some_and(|r| Arc::strong_count(r) == 1)
        {
            self.retired = None;
        }
    }

    /// Whether the snapshot replaced by the last reload is still held.
    pub fn holds_retired(&self) -> bool {
        self.retired.is_some()
    }

    /// Refresh the smoothed rates (called every couple of seconds).
    pub fn tick_rates(&mut self, now: Instant) {
        self.log_drop_bursts();
        self.release_retired();
        self.forget_removed_dests();
        let secs = self
            .last_rate
            .map(|t| now.duration_since(t).as_secs_f64())
            .unwrap_or(0.0);
        let first = self.last_rate.is_none();
        self.last_rate = Some(now);
        let (totals, _) = self.totals();
        for (id, c) in totals {
            let cur = Counters::from_dest(&c);
            let e = self.rates.entry(id).or_insert((cur, Rates::default()));
            let delta = cur.since(&e.0);
            if !first {
                e.1.update(&delta, secs, false);
            }
            e.0 = cur;
        }
    }

    /// Drop the fast path's counters of real servers no longer in the
    /// snapshot (keeping their sum for the fast path's totals), so its map
    /// holds the configured real servers only.
    fn forget_removed_dests(&mut self) {
        let Some(f) = &self.flows else {
            return;
        };
        let snap = self.snaps.load();
        match f.forget_dests(|id| snap.dest_index.contains_key(&DestId(id))) {
            Ok(gone) => {
                for u in gone {
                    self.fast_retired.packets += u.packets;
                    self.fast_retired.bytes += u.bytes;
                }
            }
            Err(e) => tracing::warn!("reading the XDP fast path's counters: {e}"),
        }
    }

    /// The shards' counters per real server plus what the fast path
    /// forwarded for each (the XDP side's per-real server counters), and the
    /// fast path's totals.
    fn totals(&self) -> (HashMap<DestId, DestCounters>, FastTotals) {
        let mut totals = dest_totals(&self.reports);
        let mut fast = self.fast_retired;
        if let Some(f) = &self.flows {
            match f.dest_counters() {
                Ok(all) => {
                    for u in all {
                        fast.packets += u.packets;
                        fast.bytes += u.bytes;
                        let t = totals.entry(DestId(u.dest)).or_default();
                        if u.reply {
                            t.outpkts += u.packets;
                            t.outbytes += u.bytes;
                        } else {
                            t.inpkts += u.packets;
                            t.inbytes += u.bytes;
                        }
                    }
                }
                Err(e) => tracing::warn!("reading the XDP fast path's counters: {e}"),
            }
        }
        (totals, fast)
    }

    /// The listing: counters since the last `zero`.
    pub fn status(&self) -> Status {
        self.status_with(&self.base)
    }

    /// For metrics: monotonic counters, which `zero` does not touch
    /// (Prometheus computes its own rates and resets).
    pub fn status_raw(&self) -> Status {
        self.status_with(&HashMap::new())
    }

    fn status_with(&self, base: &HashMap<DestId, Counters>) -> Status {
        let snap = self.snaps.load();
        let (totals, fast) = self.totals();
        let mut services = services_status(&snap, &totals, base);
        for (s, svc) in services.iter_mut().zip(snap.services.iter()) {
            let cfg_svc = self.cfg.services.iter().find(|c| c.key == svc.key);
            let mut rates = Rates::default();
            for (r, d) in s.reals.iter_mut().zip(svc.dests.iter()) {
                if let Some((_, rt)) = self.rates.get(&d.id) {
                    r.rates = *rt;
                    rates.add(rt);
                }
                let rk = (svc.key, d.addr, d.port);
                r.health = if svc.is_sorry(d.id) {
                    "sorry".into()
                } else if self.down.contains_key(&rk) {
                    "down".into()
                } else if snap.health.contains_key(&d.id) {
                    "up".into()
                } else {
                    "-".into()
                };
                if svc.is_sorry(d.id) {
                    r.config_weight = d.weight;
                } else if let Some(cr) = cfg_svc.and_then(|c| {
                    c.reals
                        .iter()
                        .find(|x| x.addr == d.addr && x.port.or(c.default_real_port()) == d.port)
                }) {
                    r.config_weight = cr.weight;
                }
            }
            s.rates = rates;
        }
        let mut shards = Vec::new();
        if let Some(sc) = &self.shard_counters {
            for (i, c) in sc.iter().enumerate() {
                let st = c.snapshot();
                let (conns, templates, mut malformed, eng) = self
                    .reports
                    .get(i)
                    .and_then(|s| {
                        s.report.lock().ok().map(|r| {
                            let m: Vec<(String, u64)> = r
                                .engine
                                .malformed
                                .iter()
                                .map(|(k, v)| (k.to_string(), v))
                                .collect();
                            let e = &r.engine;
                            let eng = [
                                e.new_conns,
                                e.expired_conns,
                                e.evicted_conns,
                                e.expired_templates,
                            ];
                            (r.conns, r.templates, m, eng)
                        })
                    })
                    .unwrap_or((0, 0, Vec::new(), [0; 4]));
                malformed.sort();
                shards.push(ShardStatus {
                    rx: st.rx,
                    tx: st.tx,
                    handoff_out: st.handoff_out,
                    handoff_in: st.handoff_in,
                    passed_unhandled: st.passed_unhandled,
                    dropped: DropReason::ALL
                        .iter()
                        .map(|r| (r.name().to_string(), st.dropped(*r)))
                        .filter(|(_, n)| *n > 0)
                        .collect(),
                    malformed,
                    conns: conns as u64,
                    templates: templates as u64,
                    new_conns: eng[0],
                    expired_conns: eng[1],
                    evicted_conns: eng[2],
                    expired_templates: eng[3],
                    io_loss: st.io_loss(),
                });
            }
        }
        let slow_packets: u64 = shards.iter().map(|s| s.rx).sum();
        let mut latency_buckets = vec![0u64; LATENCY_BUCKETS_NS.len() + 1];
        let mut latency_sum_ns = 0;
        for slot in self.reports.iter() {
            if let Ok(r) = slot.report.lock() {
                for (t, v) in latency_buckets.iter_mut().zip(r.latency.iter()) {
                    *t += v;
                }
                latency_sum_ns += r.latency_sum_ns;
            }
        }
        Status {
            latency_buckets,
            latency_sum_ns,
            config: self.path.display().to_string(),
            generation: snap.generation,
            reloads: self.reloads,
            reloads_refused: self.refused,
            last_reload: self.last_reload.clone(),
            last_reload_seconds: self.last_reload_secs,
            services,
            shards,
            sync: self.sync.as_ref().map(|d| {
                let mut s = d.status();
                let mut c = crate::shard::sync::SyncCounters::default();
                for slot in self.reports.iter() {
                    if let Ok(r) = slot.report.lock() {
                        c.add(&r.engine.sync);
                    }
                }
                s.applied_conns = c.applied_conns;
                s.applied_templates = c.applied_templates;
                s.queue_dropped = c.dropped;
                for (r, n) in crate::shard::sync::IgnoreReason::ALL.iter().zip(c.ignored) {
                    if n > 0 {
                        s.ignored.push((r.reason().to_string(), n));
                    }
                }
                s
            }),
            announce: self.announce.status(),
            fast_path: self.flows.as_ref().map(|f| {
                let mut fp = FastPathStatus {
                    on: snap.fast_path,
                    flows: 0,
                    capacity: u64::from(f.capacity()),
                    packets: fast.packets,
                    bytes: fast.bytes,
                    ..FastPathStatus::default()
                };
                for slot in self.reports.iter() {
                    if let Ok(r) = slot.report.lock() {
                        let o = &r.engine.offload;
                        fp.flows += o.live();
                        fp.installs += o.installs;
                        fp.removes += o.removes;
                        fp.install_failed += o.install_failed;
                    }
                }
                fp.slow_packets = slow_packets;
                fp
            }),
        }
    }

    /// Set the hook the control loop runs every 2 s.
    pub fn set_periodic(&mut self, f: Box<dyn FnMut()>) {
        self.periodic = Some(f);
    }

    /// Run the periodic hook, if any.
    pub fn periodic(&mut self) {
        if let Some(f) = self.periodic.as_mut() {
            f();
        }
    }

    /// Ask every shard for its connections and templates; wait (bounded).
    pub fn connections(&mut self, wait: Duration) -> Vec<ConnRow> {
        self.dump_gen += 1;
        let gen = self.dump_gen;
        for slot in self.reports.iter() {
            slot.dump_req.store(gen, Ordering::Release);
        }
        let deadline = Instant::now() + wait;
        let mut rows = Vec::new();
        for slot in self.reports.iter() {
            loop {
                // Only the hand-over happens under the lock (a move); the
                // rows are formatted after it is released, so a listing of
                // 200,000 rows never holds a lock a shard needs.
                let taken = slot
                    .report
                    .lock()
                    .map(|mut r| (r.dump_gen >= gen).then(|| std::mem::take(&mut r.dump)))
                    .unwrap_or(Some(Vec::new()));
                if let Some(d) = &taken {
                    rows.extend(d.iter().map(DumpRow::render));
                }
                if taken.is_some() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        rows.sort_by(|a, b| (a.template, &a.source).cmp(&(b.template, &b.source)));
        rows
    }

    /// Have every shard publish its counters now; wait (bounded), so a
    /// listing or `zero` right after traffic sees all of it.
    pub fn sync_reports(&mut self, wait: Duration) {
        self.dump_gen += 1;
        let gen = self.dump_gen;
        for slot in self.reports.iter() {
            slot.pub_req.store(gen, Ordering::Release);
        }
        let deadline = Instant::now() + wait;
        for slot in self.reports.iter() {
            while slot.report.lock().map(|r| r.pub_gen < gen).unwrap_or(false)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    pub fn zero(&mut self) {
        self.sync_reports(Duration::from_millis(500));
        let totals = dest_totals(&self.reports);
        self.base = totals
            .iter()
            .map(|(id, c)| (*id, Counters::from_dest(c)))
            .collect();
    }

    pub fn handle(&mut self, req: Request) -> Response {
        match req {
            Request::Status => {
                self.sync_reports(Duration::from_millis(500));
                Response {
                    ok: true,
                    status: Some(self.status()),
                    ..Response::default()
                }
            }
            Request::Connections => Response {
                ok: true,
                conns: Some(self.connections(Duration::from_secs(2))),
                ..Response::default()
            },
            Request::Save => Response {
                ok: true,
                toml: Some(self.cfg.to_toml()),
                ..Response::default()
            },
            Request::Reload => match self.reload("control socket") {
                Ok(m) => Response::ok(format!("reloaded: {m}")),
                Err(e) => Response::err(format!("reload refused, running config kept: {e}")),
            },
            Request::Handover => {
                self.handover = true;
                tracing::info!("takeover requested: saving state and exiting");
                Response::ok("handing over: saving state and exiting")
            }
            Request::Zero => {
                self.zero();
                Response::ok("counters zeroed")
            }
            Request::AddService { toml } => self.edit("service add", |cfg| {
                let add = parse_service_block(cfg, &toml, "service add")?;
                for s in &add.services {
                    if cfg
                        .services
                        .iter()
                        .any(|c| c.name == s.name || c.key == s.key)
                    {
                        return Err(format!(
                            "service \"{}\" ({}) exists already; use `service edit`",
                            s.name, s.key
                        ));
                    }
                }
                cfg.services.extend(add.services);
                cfg.fwmarks.extend(add.fwmarks);
                Ok(())
            }),
            Request::EditService { toml } => self.edit("service edit", |cfg| {
                let edit = parse_service_block(cfg, &toml, "service edit")?;
                for mut s in edit.services {
                    let Some(cur) = cfg.services.iter_mut().find(|c| c.name == s.name) else {
                        return Err(format!("no service named \"{}\"", s.name));
                    };
                    if s.reals.is_empty() {
                        s.reals = std::mem::take(&mut cur.reals);
                    }
                    *cur = s;
                }
                Ok(())
            }),
            Request::DelService { name } => self.edit("service del", |cfg| {
                let n = cfg.services.len();
                cfg.services.retain(|s| s.name != name);
                if cfg.services.len() == n {
                    return Err(format!("no service named \"{name}\""));
                }
                Ok(())
            }),
            Request::AddReal { service, real } => self.edit("real add", |cfg| {
                let svc = find_service(cfg, &service)?;
                let addr: IpAddr = parse_addr(&real.addr)?;
                let port = real.port.or(svc.default_real_port());
                if svc
                    .reals
                    .iter()
                    .any(|r| r.addr == addr && r.port.or(svc.default_real_port()) == port)
                {
                    return Err(format!(
                        "real server {} exists in \"{service}\"; use `real edit`",
                        real.addr
                    ));
                }
                let mut r = RealConfig::new(addr, real.port);
                apply_real(&mut r, &real)?;
                svc.reals.push(r);
                Ok(())
            }),
            Request::EditReal { service, real } => {
                self.edit("real edit", |cfg| {
                    let svc = find_service(cfg, &service)?;
                    let addr: IpAddr = parse_addr(&real.addr)?;
                    let def = svc.default_real_port();
                    let want = real.port.or(def);
                    let Some(r) = svc.reals.iter_mut().find(|r| {
                        r.addr == addr && (real.port.is_none() || r.port.or(def) == want)
                    }) else {
                        return Err(format!("no real server {} in \"{service}\"", real.addr));
                    };
                    apply_real(r, &real)?;
                    Ok(())
                })
            }
            Request::DelReal {
                service,
                addr,
                port,
            } => self.edit("real del", |cfg| {
                let svc = find_service(cfg, &service)?;
                let a: IpAddr = parse_addr(&addr)?;
                let def = svc.default_real_port();
                let n = svc.reals.len();
                svc.reals
                    .retain(|r| !(r.addr == a && (port.is_none() || r.port.or(def) == port)));
                if svc.reals.len() == n {
                    return Err(format!("no real server {addr} in \"{service}\""));
                }
                Ok(())
            }),
        }
    }

    /// Apply a runtime edit to a copy of the running config; publish it if
    /// it validates, else change nothing.
    fn edit(&mut self, what: &str, f: impl FnOnce(&mut Config) -> Result<(), String>) -> Response {
        let mut cfg = self.cfg.clone();
        if let Err(e) = f(&mut cfg) {
            return Response::err(format!("{what}: {e}"));
        }
        match self.apply(cfg) {
            Ok(m) => {
                tracing::info!("{what} applied: {m}");
                Response::ok(format!("{what}: ok, {m}"))
            }
            Err(e) => {
                tracing::warn!("{what} refused: {e}");
                Response::err(format!("{what} refused, running config kept: {e}"))
            }
        }
    }
}

/// `cfg` with the real servers in `down` quiesced (weight 0) or removed.
fn effective_with(cfg: &Config, down: &HashMap<RealKey, OnFailure>) -> Config {
    let mut eff = cfg.clone();
    for s in &mut eff.services {
        let key = s.key;
        let default_port = s.default_real_port();
        s.reals.retain_mut(|r| {
            let rk = (key, r.addr, r.port.or(default_port));
            match down.get(&rk) {
                Some(OnFailure::Quiesce) => {
                    r.weight = 0;
                    true
                }
                Some(OnFailure::Remove) => false,
                None => true,
            }
        });
    }
    eff
}

/// The real servers whose check has `alpha`: down until their first
/// successful check.
fn alpha_down(cfg: &Config) -> HashMap<RealKey, OnFailure> {
    configured_checks(cfg)
        .into_iter()
        .filter(|(_, _, h)| h.alpha)
        .map(|(rk, _, h)| (rk, h.on_failure))
        .collect()
}

fn parse_addr(s: &str) -> Result<IpAddr, String> {
    s.trim_matches(|c| c == '[' || c == ']')
        .parse()
        .map_err(|_| format!("\"{s}\" is not an IP address"))
}

fn find_service<'a>(
    cfg: &'a mut Config,
    name: &str,
) -> Result<&'a mut crate::config::schema::ServiceConfig, String> {
    cfg.services
        .iter_mut()
        .find(|s| s.name == name)
        .ok_or_else(|| format!("no service named \"{name}\""))
}

fn apply_real(r: &mut RealConfig, spec: &RealSpec) -> Result<(), String> {
    if let Some(w) = spec.weight {
        r.weight = w;
    }
    if let Some(f) = &spec.forward {
        r.forward = match f.as_str() {
            "dr" | "route" | "g" => FwdMethod::Dr,
            "nat" | "masq" | "m" => FwdMethod::Nat,
            "ipip" | "tunnel" | "i" => FwdMethod::Ipip,
            "gue" => FwdMethod::Gue,
            o => {
                return Err(format!(
                    "unknown forwarding method \"{o}\" (dr, nat, ipip, gue)"
                ))
            }
        };
    }
    if let Some(u) = spec.u_threshold {
        r.u_threshold = u;
    }
    if let Some(l) = spec.l_threshold {
        r.l_threshold = l;
    }
    Ok(())
}

/// Parse `[[service]]` (and optional `[[fwmark]]`) blocks against the running
/// config's `[director]`, so they validate in context.
fn parse_service_block(cur: &Config, block: &str, what: &str) -> Result<Config, String> {
    let mut head = String::from("[director]\ninterfaces = [");
    let ifs: Vec<String> = cur
        .director
        .interfaces
        .iter()
        .map(|i| toml::Value::String(i.clone()).to_string())
        .collect();
    head.push_str(&ifs.join(", "));
    head.push_str("]\n");
    // Marks the block refers to must exist: carry the running groups along
    // so validation sees them, then drop them from the result.
    let mut text = head;
    for g in &cur.fwmarks {
        text.push_str(&format!("[[fwmark]]\nmark = {}\nrules = [", g.mark));
        let rules: Vec<String> = g
            .rules
            .iter()
            .map(|r| {
                format!(
                    "{{ vip = \"{}\", proto = \"{}\", ports = \"{}\" }}",
                    r.vip,
                    r.proto.name(),
                    r.ports
                )
            })
            .collect();
        text.push_str(&rules.join(", "));
        text.push_str("]\n");
    }
    let n_marks = cur.fwmarks.len();
    text.push_str(block);
    let reader_cfg =
        crate::config::reader::read(&text, &format!("<{what}>")).map_err(|e| e.to_string())?;
    let mut out = reader_cfg;
    out.fwmarks.drain(..n_marks.min(out.fwmarks.len()));
    Ok(out)
}
