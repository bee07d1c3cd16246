//! The shard adapter: what runs in each shard thread around the sans-IO
//! engine (see [`ShardAdapter`]).

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::control::status::{latency_bucket, DumpRow, Reports, LATENCY_BUCKETS_NS, MAX_DUMP_ROWS};
use crate::control::sync::{FromShard, ShardSyncLink, ToShard};
use crate::dataplane::neigh::{NeighborCache, SharedNeighbors};
use crate::dataplane::PacketHandler;
use crate::director::restart::RestartState;
use crate::service::model::{Millis, Proto};
use crate::service::snapshot::Snapshot;
use crate::shard::engine::{Engine, EngineConfig};
use crate::shard::offload::OffloadCmd;
use crate::shard::sync::SyncItem;
use crate::shard::verdict::{Frame, Verdict};
use crate::xdp::{FlowCache, InstallBatch};

/// A shard's engine as the AF_XDP runtime drives it: the sans-IO
/// [`Engine`] plus what the runtime adds around it (the published
/// snapshot and neighbour table, status reports and latency samples, the
/// restart state it restores from and exports to).
pub struct ShardAdapter {
    engine: Engine,
    snaps: Arc<ArcSwap<Snapshot>>,
    table: NeighborCache,
    reports: Reports,
    shard: usize,
    last_report: Millis,
    pub_seen: u64,
    dump_seen: u64,
    sampled: u64,
    latency: [u64; LATENCY_BUCKETS_NS.len() + 1],
    latency_sum_ns: u64,
    restart: Option<RestartState>,
    sync: Option<ShardSyncLink>,
    sync_buf: Vec<SyncItem>,
    /// The XDP flow cache when the fast path exists (it is switched on
    /// and off by the snapshot's `fast_path`).
    flows: Option<FlowCache>,
    off_buf: Vec<OffloadCmd>,
    /// Installs gathered for one `BPF_MAP_UPDATE_BATCH`.
    off_batch: InstallBatch,
}

/// How a shard's tables get their memory (`[director] hugepages`,
/// `prefault`).
#[derive(Clone, Copy, Debug, Default)]
pub struct TableMemory {
    pub hugepages: bool,
    pub prefault: bool,
}

impl ShardAdapter {
    pub fn new(
        cfg: EngineConfig,
        snaps: Arc<ArcSwap<Snapshot>>,
        neigh: SharedNeighbors,
        reports: Reports,
        restart: Option<RestartState>,
        mem: TableMemory,
    ) -> ShardAdapter {
        let mut engine = Engine::new(cfg, snaps.load_full());
        if mem.hugepages {
            // Before the first write (and before a restore fills the tables).
            let huge = crate::dataplane::mem::advise_hugepages(&engine.memory_regions());
            tracing::info!(
                shard = cfg.shard,
                mib = huge >> 20,
                "tables advised to use transparent huge pages"
            );
        }
        if mem.prefault {
            // After the huge-page advice (so that they are assembled now),
            // before the restore and the first packet.
            let t = std::time::Instant::now();
            match crate::dataplane::mem::populate(&engine.memory_regions()) {
                Ok(n) => tracing::info!(
                    shard = cfg.shard,
                    mib = n >> 20,
                    ms = t.elapsed().as_millis() as u64,
                    "table memory prefaulted"
                ),
                Err(e) => tracing::warn!(
                    shard = cfg.shard,
                    "prefault = true: could not fault the tables in ({e}); they fill page by page"
                ),
            }
        }
        if let Some(p) = &restart {
            let part = p
                .restore
                .lock()
                .ok()
                .and_then(|mut v| v.get_mut(cfg.shard as usize).and_then(Option::take));
            if let Some(part) = part {
                let r = engine.restore(crate::dataplane::monotonic_millis(), &part);
                if let Ok(mut total) = p.restored.lock() {
                    total.add(&r);
                }
            }
        }
        let table = neigh.cache();
        ShardAdapter {
            engine,
            snaps,
            table,
            reports,
            shard: cfg.shard as usize,
            last_report: 0,
            pub_seen: 0,
            dump_seen: 0,
            sampled: 0,
            latency: [0; LATENCY_BUCKETS_NS.len() + 1],
            latency_sum_ns: 0,
            restart,
            sync: None,
            sync_buf: Vec::new(),
            flows: None,
            off_buf: Vec::new(),
            off_batch: InstallBatch::default(),
        }
    }

    /// Offload this shard's established flows into `flows` (the XDP
    /// program's flow cache) while the snapshot says `fast_path`.
    pub fn with_flows(mut self, flows: Option<FlowCache>) -> Self {
        self.flows = flows;
        let on = self.flows.is_some() && self.engine.snapshot().fast_path;
        self.engine.set_offload(on);
        self
    }

    /// Switch to the published snapshot if it changed. Called per batch
    /// and per tick: with the fast path a shard may see no packet for a
    /// long time, and a reload must still reach its offloaded flows.
    fn follow_snapshot(&mut self) {
        let s = self.snaps.load();
        if !Arc::ptr_eq(&s, self.engine.snapshot()) {
            self.engine.set_snapshot(Arc::clone(&s));
            self.engine.set_offload(self.flows.is_some() && s.fast_path);
        }
    }

    /// Carry out the engine's install and remove commands (the commands
    /// of the frames processed since the last call), in their order: the
    /// installs one `BPF_MAP_UPDATE_BATCH` call between two removals.
    fn offload_turn(&mut self) {
        let Some(flows) = &self.flows else {
            return;
        };
        self.engine.take_offload(&mut self.off_buf);
        if self.off_buf.is_empty() {
            return;
        }
        let now_ns = crate::dataplane::monotonic_millis().saturating_mul(1_000_000);
        for cmd in self.off_buf.drain(..) {
            match cmd {
                OffloadCmd::Install(e) => self.off_batch.push(&e, now_ns),
                OffloadCmd::Remove { key, .. } => {
                    for _ in 0..flows.install_batch(&mut self.off_batch) {
                        self.engine.offload_refused();
                    }
                    if let Ok(Some(_)) = flows.remove(&key) {
                        self.engine.offload_removed();
                    }
                }
            }
        }
        for _ in 0..flows.install_batch(&mut self.off_batch) {
            self.engine.offload_refused();
        }
    }

    /// Connect the shard to the sync daemon's queues.
    pub fn with_sync(mut self, link: Option<ShardSyncLink>) -> Self {
        self.sync = link;
        self
    }

    /// Apply what peers sent, answer an export, and hand the control loop
    /// what changed here (all non-blocking: full queues are counted).
    fn sync_turn(&mut self, now: Millis) {
        let Some(link) = &self.sync else {
            return;
        };
        for _ in 0..64 {
            let Ok(m) = link.from_control.try_recv() else {
                break;
            };
            match m {
                ToShard::Settings(s) => self.engine.set_sync(s),
                ToShard::Apply(items) => {
                    for i in &items {
                        let _ = self.engine.apply_sync(now, i);
                    }
                }
                ToShard::Export(id) => {
                    let items = self.engine.export_sync(now);
                    let _ = link.to_control.try_send(FromShard::Export { id, items });
                }
            }
        }
        self.engine.take_sync(&mut self.sync_buf);
        if !self.sync_buf.is_empty() {
            let v = std::mem::take(&mut self.sync_buf);
            let n = v.len() as u64;
            if link.to_control.try_send(FromShard::Items(v)).is_err() {
                self.engine.stats.sync.dropped += n;
            }
        }
    }

    fn publish(&mut self, now: Millis) {
        let Some(slot) = self.reports.get(self.shard) else {
            return;
        };
        let want = slot.requested();
        let want_pub = slot.publish_requested();
        self.pub_seen = want_pub;
        // A listing is copied out before the report lock is taken (plain
        // rows, no strings), so the control thread never waits on a shard
        // building it and a shard never waits on a reader formatting it.
        let dump = (want > self.dump_seen).then(|| self.dump(now));
        self.dump_seen = want;
        let old = {
            let Ok(mut r) = slot.report.lock() else {
                return;
            };
            r.pub_gen = want_pub;
            r.latency = self.latency;
            r.latency_sum_ns = self.latency_sum_ns;
            r.dests.clone_from(self.engine.dest_counters());
            r.engine = self.engine.stats_now();
            r.conns = self.engine.conns().len();
            r.templates = self.engine.templates().len();
            match dump {
                Some(d) => {
                    r.dump_gen = want;
                    Some(std::mem::replace(&mut r.dump, d))
                }
                None => None,
            }
        };
        // An unread earlier listing is freed outside the lock.
        drop(old);
    }

    /// This shard's connections and templates, as `ipvsadm -L -c` rows.
    fn dump(&self, now: Millis) -> Vec<DumpRow> {
        let n = (self.engine.conns().len() + self.engine.templates().len()).min(MAX_DUMP_ROWS);
        let mut rows = Vec::with_capacity(n);
        self.engine.conns().for_each(|_, c| {
            if rows.len() < MAX_DUMP_ROWS {
                rows.push(DumpRow::Conn {
                    proto: c.proto,
                    state: (c.proto == Proto::Tcp).then(|| c.state.name()),
                    client: (c.caddr, c.cport),
                    virt: (c.vaddr, c.vport),
                    dest: (c.raddr, c.rport),
                    expires_ms: c.expires.saturating_sub(now),
                });
            }
        });
        self.engine.templates().for_each(|t| {
            if rows.len() < MAX_DUMP_ROWS {
                rows.push(DumpRow::Template {
                    key: *t.key(),
                    raddr: t.raddr,
                    rport: t.rport,
                    expires_ms: t.expires().saturating_sub(now),
                    controls: t.controls(),
                });
            }
        });
        rows
    }
}

impl PacketHandler for ShardAdapter {
    fn begin_batch(&mut self, _now: Millis) {
        self.follow_snapshot();
        self.offload_turn();
    }

    fn process(&mut self, now: Millis, _in_ifindex: u32, frame: &mut Frame<'_>) -> Verdict {
        self.sampled = self.sampled.wrapping_add(1);
        if self.sampled % 64 != 1 {
            return self.engine.process(now, frame, self.table.load());
        }
        // One packet in 64 is timed (the clock read costs about as much as
        // an established-flow decision).
        let t = std::time::Instant::now();
        let v = self.engine.process(now, frame, self.table.load());
        let ns = t.elapsed().as_nanos() as u64;
        if let Some(b) = self.latency.get_mut(latency_bucket(ns)) {
            *b += 1;
        }
        self.latency_sum_ns += ns;
        v
    }

    fn next_hop(&mut self, dest: std::net::IpAddr) -> Option<crate::shard::nexthop::NextHop> {
        self.table.load().lookup_quiet(dest).ok()
    }

    fn warm_batch(&mut self, frames: &[&[u8]]) {
        self.engine
            .warm_batch(frames, crate::dataplane::mem::prefetch)
    }

    fn tick(&mut self, now: Millis) {
        self.follow_snapshot();
        match &self.flows {
            Some(f) => self.engine.tick_seen(now, f),
            None => self.engine.tick(now),
        }
        self.offload_turn();
        self.sync_turn(now);
        let asked = self.reports.get(self.shard).is_some_and(|s| {
            s.publish_requested() > self.pub_seen || s.requested() > self.dump_seen
        });
        if asked || now >= self.last_report + 250 || now < self.last_report {
            self.last_report = now;
            self.publish(now);
        }
    }
}

impl Drop for ShardAdapter {
    fn drop(&mut self) {
        let now = self.last_report;
        self.publish(now);
        if let Some(p) = &self.restart {
            let st = self.engine.export(crate::dataplane::monotonic_millis());
            if let Ok(mut v) = p.saved.lock() {
                if let Some(slot) = v.get_mut(self.shard) {
                    *slot = Some(st);
                }
            }
        }
    }
}
