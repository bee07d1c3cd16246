//! `xdpvs run`: wires the config, the XDP program, the AF_XDP shards, the
//! engines and the neighbour resolver together, then serves signals: SIGHUP
//! reloads (the whole file is validated and built first, then published in
//! one arc-swap store), SIGTERM/SIGINT stop cleanly (detach, drain, final
//! counters).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tracing::{error, info, warn};

use crate::config::build::build_snapshot;
use crate::config::schema::{Config, XdpMode as CfgXdpMode};
use crate::control::event_loop::{self, LoopConfig};
use crate::control::signals::Signals;
use crate::control::state::ControlState;
use crate::control::status::{dest_totals, new_reports, Reports};
use crate::control::sync::READY_SYNC;
use crate::dataplane::neigh::{NeighborResolver, Pinned, ResolverConfig, SharedNeighbors};
use crate::dataplane::plan::{PlanIface, ShardPlan};
use crate::dataplane::{RuntimeConfig, ShardRuntime, ShardStats};
use crate::director::maps::{update_locals, update_maps, Attached};
use crate::director::restart::{self, load_state, state_path, RestartState};
use crate::director::shard_adapter::{ShardAdapter, TableMemory};
use crate::service::model::DestId;
use crate::service::snapshot::Snapshot;
use crate::shard::engine::{Engine, EngineConfig};
use crate::shard::restart::{RestoreStats, ShardState};
use crate::shard::verdict::DropReason;
use crate::xdp::{FlowCache, XdpMode, XdpProgram};

/// The bytes one shard's tables reserve with this config's capacities (an
/// engine is built and dropped: its reservations are virtual until used).
fn table_bytes(cfg: &Config, snap: &Arc<Snapshot>) -> usize {
    let e = Engine::new(
        EngineConfig {
            shard: 0,
            shards: 1,
            conn_capacity: cfg.director.conn_capacity as usize,
            template_capacity: cfg.director.template_capacity as usize,
        },
        snap.clone(),
    );
    e.memory_regions().iter().map(|r| r.end - r.start).sum()
}

/// `prefault = true` claims `per_shard` bytes for each of `shards` shards
/// at start: refuse when that is more than 90 % of the memory available
/// (`MemAvailable` of `meminfo`, /proc/meminfo's text). Without the figure,
/// nothing is refused.
pub fn prefault_fits(per_shard: usize, shards: u16, meminfo: &str) -> Result<(), String> {
    let avail_kib: Option<u64> = meminfo.lines().find_map(|l| {
        l.strip_prefix("MemAvailable:")?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    });
    let Some(avail_kib) = avail_kib else {
        return Ok(());
    };
    let need = per_shard as u64 * u64::from(shards);
    let avail = avail_kib * 1024;
    if need > avail / 10 * 9 {
        return Err(format!(
            "prefault = true needs {} MiB for the tables ({} shards x {} MiB with these \
             conn_capacity and template_capacity), but only {} MiB is available: \
             lower the capacities or set prefault = false",
            need >> 20,
            shards,
            per_shard >> 20,
            avail >> 20
        ));
    }
    Ok(())
}

/// `xdpvs run --takeover`: ask the running director (same control socket)
/// to save its state and exit, and wait until it has (bounded), so this
/// one starts from that state with the same clients on the same servers.
fn take_over(cfg: &Config) {
    let sock = &cfg.director.control_socket;
    match crate::control::api::call(sock, &crate::control::api::Request::Handover) {
        Ok(r) if r.ok => info!("takeover: the running director is handing over"),
        Ok(r) => {
            warn!("takeover refused: {}", r.error);
            return;
        }
        Err(e) => {
            info!("takeover: no running director ({e}); starting fresh");
            return;
        }
    }
    let t0 = std::time::Instant::now();
    while sock.exists() && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if sock.exists() {
        warn!("takeover: the old director has not exited after 30 s; starting anyway");
    } else {
        info!(
            "takeover: old director gone after {} ms",
            t0.elapsed().as_millis()
        );
    }
}

fn ifindex_of(name: &str) -> Result<u32, String> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .map_err(|e| format!("interface {name}: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("interface {name}: {e}"))
}

pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}

/// `xdpvs run --config FILE`.
pub fn run_main(config: &Path, duration: Option<u64>, takeover: bool) -> ExitCode {
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    init_logging(&cfg.director.log_level);
    if takeover {
        take_over(&cfg);
    }
    match run(config, cfg, duration) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::from(1)
        }
    }
}

fn run(path: &Path, cfg: Config, duration: Option<u64>) -> Result<(), String> {
    // Real servers whose check has `alpha` start down (the control state
    // holds them down until their first successful check).
    let snap = build_snapshot(&ControlState::initial(&cfg), None).map_err(|e| e.to_string())?;
    let snaps = Arc::new(ArcSwap::from_pointee(snap));
    // Block signals before any thread starts, so all inherit the mask.
    let signals = Signals::new().map_err(|e| format!("signalfd: {e}"))?;

    let mut ifaces = Vec::new();
    let mut plan_ifaces = Vec::new();
    for name in &cfg.director.interfaces {
        let ifindex = ifindex_of(name)?;
        let rx = crate::dataplane::plan::rx_queues(name);
        ifaces.push((name.clone(), ifindex, rx));
        plan_ifaces.push(PlanIface {
            name: name.clone(),
            ifindex,
            rx_queues: rx,
            queue0_only: cfg.director.xdp_mode == CfgXdpMode::Generic
                && crate::dataplane::plan::is_virtual(name),
        });
    }
    let plan = ShardPlan::new(
        &plan_ifaces,
        cfg.director.cores.as_deref(),
        &crate::dataplane::plan::usable_cpus(),
    )
    .map_err(|e| e.to_string())?;
    info!("{}", plan.describe(&plan_ifaces));
    let cpus = plan.cpus();
    let n_shards = plan.shards.len() as u16;
    if cfg.director.prefault {
        // Refuse now, with the figures, rather than let the shards' page
        // faults at start wake the OOM killer.
        let per_shard = table_bytes(&cfg, &snaps.load_full());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        prefault_fits(per_shard, n_shards, &meminfo)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let pinned: Vec<Pinned> = cfg
        .neighbors
        .iter()
        .map(|n| Pinned {
            addr: n.addr,
            mac: n.mac,
            ifindex: Some(n.interface.as_str())
                .filter(|i| !i.is_empty())
                .and_then(|i| ifindex_of(i).ok()),
        })
        .collect();
    let resolver = NeighborResolver::new(ResolverConfig {
        pinned,
        interfaces: Some(ifaces.iter().map(|(_, i, _)| *i).collect()),
        ..ResolverConfig::default()
    })
    .map_err(|e| format!("netlink: {e}"))?;
    let neigh = resolver.shared();
    let requester = resolver.requester();
    let mut resolver = resolver;
    // Routes, links and neighbours read once now, so the gateways are known.
    if let Err(e) = resolver.refresh() {
        warn!("neighbour table: {e}");
    }
    let resolver_thread = resolver
        .spawn(stop.clone())
        .map_err(|e| format!("resolver: {e}"))?;
    // Resolve every real server and every gateway of the data-plane
    // routes before attaching (the filter would otherwise fill RX rings no
    // shard reads yet), so the first packets of the first clients find
    // their next hop (bounded: an absent neighbour does not keep the
    // director from starting; a late one is covered by held frames).
    resolve_next_hops(&neigh, &requester, &snaps.load(), Duration::from_secs(3));

    let shards = plan.shards;
    let rcfg = RuntimeConfig {
        shards,
        busy_poll: Duration::from_micros(u64::from(cfg.director.busy_poll_us)),
        rt_priority: u8::try_from(cfg.director.shard_rt_priority)
            .ok()
            .filter(|p| *p > 0),
        ..RuntimeConfig::default()
    };
    let runtime = ShardRuntime::new(rcfg).map_err(|e| format!("AF_XDP sockets: {e}"))?;

    // One XDP program (and XSKMAP) per interface; VIP maps filled before attach.
    let mode = match cfg.director.xdp_mode {
        CfgXdpMode::Native => XdpMode::Native,
        CfgXdpMode::Generic => XdpMode::Generic,
    };
    // One flow cache shared by every interface's program (a NAT flow's
    // replies arrive on another interface than its requests).
    let flow_capacity = match cfg.director.fast_path_capacity {
        0 => cfg
            .director
            .conn_capacity
            .saturating_mul(u32::from(n_shards).max(1)),
        n => n,
    };
    let flows = FlowCache::create(flow_capacity)
        .map_err(|e| format!("creating the XDP flow cache ({flow_capacity} flows): {e}"))?;
    let mut progs = Vec::new();
    for (name, ifindex, _) in &ifaces {
        let p = XdpProgram::load_with(flows.clone())
            .map_err(|e| format!("loading XDP program: {e}"))?;
        progs.push((name.clone(), *ifindex, p));
    }
    let mut att = Attached {
        progs: std::rc::Rc::new(progs),
        links: Vec::new(),
    };
    att.update_maps(&snaps.load())?;
    for sock in runtime.sockets() {
        if let Some((_, _, p)) = att.progs.iter().find(|(_, i, _)| *i == sock.ifindex) {
            p.register_xsk(sock.queue, sock.fd)
                .map_err(|e| format!("registering AF_XDP socket: {e}"))?;
        }
    }
    for (name, ifindex, p) in att.progs.iter() {
        let link = p
            .attach(*ifindex, mode)
            .map_err(|e| format!("attaching XDP ({}) to {name}: {e}", mode_name(mode)))?;
        info!(
            "attached XDP ({}) to {name} (ifindex {ifindex})",
            mode_name(mode)
        );
        att.links.push(link);
    }

    let reports: Reports = new_reports(n_shards as usize);
    let conn_capacity = cfg.director.conn_capacity as usize;
    let mem = TableMemory {
        hugepages: cfg.director.hugepages,
        prefault: cfg.director.prefault,
    };
    if mem.hugepages {
        if let Some(w) = crate::dataplane::mem::thp_warning_here() {
            tracing::warn!("hugepages = true: {w}");
        }
    }
    let template_capacity = cfg.director.template_capacity as usize;
    let persist = RestartState {
        restore: Arc::new(Mutex::new(load_state(&cfg, &snaps.load(), n_shards))),
        restored: Arc::new(Mutex::new(RestoreStats::default())),
        saved: Arc::new(Mutex::new(vec![None; n_shards as usize])),
    };
    // Connection sync: the daemon (socket opened now, while privileged)
    // and each shard's queues.
    let (sync_ctl, sync_sides) = crate::control::sync::links(n_shards as usize);
    let sync_daemon = match &cfg.sync {
        Some(sc) => Some(crate::control::sync::SyncDaemon::new(
            sc,
            sync_ctl,
            snaps.clone(),
        )?),
        None => None,
    };
    let sync_sides: Arc<Mutex<Vec<Option<crate::control::sync::ShardSyncLink>>>> =
        Arc::new(Mutex::new(if sync_daemon.is_some() {
            sync_sides.into_iter().map(Some).collect()
        } else {
            Vec::new()
        }));
    let factory = {
        let sync_sides = sync_sides.clone();
        let persist = persist.clone();
        let snaps = snaps.clone();
        let neigh = neigh.clone();
        let reports = reports.clone();
        let flows = flows.clone();
        move |shard: u16, shards: u16| {
            // Runs in the shard's own thread (capabilities are per thread).
            if let Err(e) = crate::dataplane::privileges::drop_to_minimum() {
                tracing::warn!("shard {shard}: could not drop capabilities: {e}");
            }
            ShardAdapter::new(
                EngineConfig {
                    shard,
                    shards,
                    conn_capacity,
                    template_capacity,
                },
                snaps.clone(),
                neigh.clone(),
                reports.clone(),
                Some(persist.clone()),
                mem,
            )
            .with_sync(
                sync_sides
                    .lock()
                    .ok()
                    .and_then(|mut v| v.get_mut(shard as usize).and_then(Option::take)),
            )
            .with_flows(Some(flows.clone()))
        }
    };
    let running = runtime
        .start(factory, stop.clone())
        .map_err(|e| format!("starting shards: {e}"))?;
    // Shards restore their part of the state file as they start.
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(5)
        && persist
            .restore
            .lock()
            .map(|v| v.iter().any(Option::is_some))
            .unwrap_or(false)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Ok(r) = persist.restored.lock() {
        if r.conns + r.templates + r.stale + r.expired > 0 {
            info!(
                "state restored: {} connection(s), {} template(s); {} no longer match the config, {} expired",
                r.conns, r.templates, r.stale, r.expired
            );
        }
    }

    info!(
        "forwarding: {} shard(s), interfaces {}, {} service(s), config {}",
        n_shards,
        cfg.director.interfaces.join(","),
        snaps.load().services.len(),
        path.display()
    );

    info!(
        "control thread: {}",
        crate::dataplane::place_control_thread(cpus.get(..n_shards as usize).unwrap_or(&cpus))
    );

    let maps_progs = att.progs.clone();
    let reload_requester = requester.clone();
    let mut state = ControlState::new(
        path.to_path_buf(),
        cfg.clone(),
        snaps.clone(),
        Box::new(move |snap: &Snapshot| {
            // A reload's new real servers are resolved before their first
            // packet (the request is queued; the neighbour thread sends it).
            for d in snap.services.iter().flat_map(|s| s.dests.iter()) {
                reload_requester.request(d.addr);
            }
            update_maps(&maps_progs, snap)
        }),
        reports.clone(),
    );
    state.set_shard_counters(running.counters());
    state.flows = Some(flows.clone());
    // Addresses come and go (DHCP, an operator's `ip addr add`): the
    // local-address map follows them every 2 s.
    let locals_progs = att.progs.clone();
    let mut locals_failed = false;
    state.set_periodic(Box::new(move || match update_locals(&locals_progs) {
        Ok(()) => locals_failed = false,
        Err(e) if !locals_failed => {
            locals_failed = true;
            warn!("{e}");
        }
        Err(_) => {}
    }));
    let loop_cfg = LoopConfig {
        control_socket: cfg.director.control_socket.clone(),
        metrics: cfg.director.metrics,
        duration: duration.map(Duration::from_secs),
    };
    if let Some(d) = sync_daemon {
        // Announced only once the peers' tables are here (or nobody
        // answered within resync_wait).
        state.announce.set_ready(READY_SYNC, d.ready());
        state.sync = Some(d);
    }
    // Attached, config loaded, shards running: the VIPs may be announced
    // (other readiness conditions, set before, may still hold them).
    state
        .announce
        .set_ready(crate::control::announce::READY_ATTACHED, true);
    let finished = || running.any_finished();
    let exit = event_loop::run(&mut state, &signals, &loop_cfg, &finished);
    if let Err(e) = &exit {
        error!("control loop: {e}");
    }
    stop.store(true, Ordering::SeqCst);
    // Detach first so the kernel stops redirecting, then drain the shards.
    let links = std::mem::take(&mut att.links);
    drop(links);
    info!("detached XDP from {}", cfg.director.interfaces.join(","));
    let stats = running.join().map_err(|e| format!("joining shards: {e}"))?;
    let _ = resolver_thread.join();
    // Every shard left its export on the way out: write the state file.
    let parts: Vec<ShardState> = persist
        .saved
        .lock()
        .map(|v| v.iter().flatten().cloned().collect())
        .unwrap_or_default();
    let (nc, nt) = parts.iter().fold((0, 0), |(c, t), p| {
        (c + p.conns.len(), t + p.templates.len())
    });
    let spath = state_path(&cfg);
    match restart::write(&spath, &parts, restart::unix_ms()) {
        Ok(()) => info!(
            "state saved: {nc} connection(s), {nt} template(s) to {}",
            spath.display()
        ),
        Err(e) => error!("state not saved: {e}"),
    }
    println!(
        "{}",
        final_counters(&stats, &reports, &snaps.load(), Some(&flows))
    );
    // Last: a successor waiting for a takeover starts when this is gone.
    let _ = std::fs::remove_file(&cfg.director.control_socket);
    let _ = exit;
    Ok(())
}

fn mode_name(m: XdpMode) -> &'static str {
    match m {
        XdpMode::Native => "native",
        XdpMode::Generic => "generic",
    }
}

/// Ask the kernel to resolve the real servers of `snap` and the gateways
/// of the data-plane routes, and wait (up to `wait`) until the neighbour
/// table knows them; log what is still missing.
fn resolve_next_hops(
    neigh: &SharedNeighbors,
    requester: &crate::dataplane::neigh::Requester,
    snap: &Snapshot,
    wait: Duration,
) {
    let t0 = std::time::Instant::now();
    let mut want: Vec<IpAddr> = snap
        .services
        .iter()
        .flat_map(|s| s.dests.iter().map(|d| d.addr))
        .collect();
    want.extend(neigh.current().gateways());
    want.sort_unstable();
    want.dedup();
    // Only what is reachable through the data-plane interfaces counts.
    let unresolved = |t: &crate::dataplane::neigh::NeighborTable, want: &[IpAddr]| -> Vec<IpAddr> {
        want.iter()
            .copied()
            .filter(|a| t.lookup_quiet(*a) == Err(crate::dataplane::neigh::Miss::NoNeighbor))
            .collect()
    };
    let mut missing = unresolved(&neigh.current(), &want);
    for a in &missing {
        requester.request(*a);
    }
    while !missing.is_empty() && t0.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(10));
        missing = unresolved(&neigh.current(), &want);
        // The gateways are known only once the routes are read.
        for g in neigh.current().gateways() {
            if !want.contains(&g) {
                want.push(g);
                requester.request(g);
            }
        }
    }
    if missing.is_empty() {
        info!(
            "next hops: {} address(es) resolved in {} ms",
            want.len(),
            t0.elapsed().as_millis()
        );
    } else {
        let m: Vec<String> = missing.iter().map(ToString::to_string).collect();
        warn!(
            "next hops: {} of {} unresolved after {} ms (their first packets wait for the kernel): {}",
            missing.len(),
            want.len(),
            t0.elapsed().as_millis(),
            m.join(", ")
        );
    }
}

/// The counters printed when the director stops: the shards' plus what the
/// fast path forwarded (`flows`' per-real server counters).
pub fn final_counters(
    stats: &[ShardStats],
    reports: &Reports,
    snap: &Snapshot,
    flows: Option<&FlowCache>,
) -> String {
    let mut s = String::from("final counters\n");
    for (i, st) in stats.iter().enumerate() {
        let _ = write!(
            s,
            "shard {i}: rx {} tx {} handoff_out {} handoff_in {} passed_unhandled {}",
            st.rx, st.tx, st.handoff_out, st.handoff_in, st.passed_unhandled
        );
        for r in DropReason::ALL {
            let n = st.dropped(r);
            if n > 0 {
                let _ = write!(s, " drop_{} {n}", r.name());
            }
        }
        s.push('\n');
    }
    let mut totals = dest_totals(reports);
    for u in flows
        .and_then(|f| f.dest_counters().ok())
        .unwrap_or_default()
    {
        let t = totals.entry(DestId(u.dest)).or_default();
        if u.reply {
            t.outpkts += u.packets;
        } else {
            t.inpkts += u.packets;
        }
    }
    for svc in &snap.services {
        let _ = writeln!(s, "{} ({})", svc.key, svc.name);
        for d in &svc.dests {
            let c = totals.get(&d.id).copied().unwrap_or_default();
            let _ = writeln!(
                s,
                "  -> {:<24} conns {:>6} inpkts {:>8} outpkts {:>8} templates {:>4}",
                d.addr, c.conns, c.inpkts, c.outpkts, c.persist
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str =
        "MemTotal:       24684132 kB\nMemFree:        20885604 kB\nMemAvailable:    1048576 kB\n";

    /// `prefault = true` is refused at start, with the figures, when the
    /// shards' tables would take more than 90 % of the available memory.
    #[test]
    fn prefault_is_refused_when_the_tables_do_not_fit() {
        let mib = 1 << 20;
        assert_eq!(prefault_fits(400 * mib, 2, MEMINFO), Ok(()));
        let e = prefault_fits(500 * mib, 2, MEMINFO).unwrap_err();
        assert!(
            e.contains("1000 MiB") && e.contains("2 shards x 500 MiB") && e.contains("1024 MiB"),
            "{e}"
        );
        assert!(e.contains("prefault = false"), "{e}");
        // Without the figure, nothing is refused.
        assert_eq!(prefault_fits(usize::MAX / 2, 64, ""), Ok(()));
    }

    /// The estimate is what a shard's engine reserves: it grows with both
    /// capacities.
    #[test]
    fn table_bytes_follow_the_capacities() {
        let text = "[director]\ninterfaces = [\"eth0\"]\n";
        let mut cfg = Config::parse(text, "t.toml").unwrap();
        let snap = Arc::new(build_snapshot(&cfg, None).unwrap());
        cfg.director.conn_capacity = 1 << 16;
        cfg.director.template_capacity = 1 << 12;
        let small = table_bytes(&cfg, &snap);
        cfg.director.conn_capacity = 1 << 20;
        let more_conns = table_bytes(&cfg, &snap);
        cfg.director.template_capacity = 1 << 18;
        let more_tpls = table_bytes(&cfg, &snap);
        // 66 bytes per IPv4 connection at least; ~100 per template.
        assert!(
            more_conns - small >= 66 * ((1 << 20) - (1 << 16)),
            "{small} {more_conns}"
        );
        assert!(
            more_tpls - more_conns >= 96 * ((1 << 18) - (1 << 12)),
            "{more_tpls}"
        );
    }
}
