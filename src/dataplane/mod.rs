//! AF_XDP data plane: per-shard sockets, pinned shard threads, hand-off.
//!
//! Usage (two phases, so the XDP program's XSKMAP can be filled before any
//! traffic is processed):
//!
//! ```no_run
//! # use std::sync::{Arc, atomic::AtomicBool};
//! # use xdpvs::dataplane::*;
//! # use xdpvs::shard::verdict::{Frame, Verdict};
//! # use xdpvs::service::model::Millis;
//! # struct MyEngine;
//! # impl PacketHandler for MyEngine {
//! #   fn begin_batch(&mut self, _: Millis) {}
//! #   fn process(&mut self, _: Millis, _: u32, _: &mut Frame<'_>) -> Verdict { Verdict::Pass }
//! #   fn tick(&mut self, _: Millis) {}
//! # }
//! # fn main() -> Result<(), DataplaneError> {
//! let cfg = RuntimeConfig::per_queue(&[2, 3], 2); // shard q: queue q of ifindex 2 and 3
//! let rt = ShardRuntime::new(cfg)?; // creates UMEMs, binds sockets
//! for s in rt.sockets() {
//!     // register s.fd at key s.queue in the XSKMAP of interface s.ifindex
//! }
//! let stop = Arc::new(AtomicBool::new(false));
//! let running = rt.start(|shard, n_shards| MyEngine, stop.clone())?;
//! // ... running.stats() for metrics ...
//! running.stop();
//! let final_stats = running.join()?;
//! # Ok(()) }
//! ```
//!
//! Each shard thread owns its sockets (one UMEM shared by all of them, so a
//! frame received on one interface is transmitted on another without a copy),
//! an engine built by the factory inside the thread, and a bounded inbox.
//! Per loop iteration it reaps completions, reads up to `batch` frames per
//! socket, calls [`PacketHandler::process`] on each, drains handed-over
//! frames, pushes TX descriptors and kicks the kernel only when descriptors
//! are pending, sends hand-off batches and refills the fill rings. After
//! traffic it busy-polls for `busy_poll`, then blocks in `poll()` (socket fds
//! plus an eventfd for hand-off and stop) for at most `poll_timeout`, so an
//! idle shard uses no CPU and still calls [`PacketHandler::tick`] and sees the
//! stop flag.

pub mod counters;
pub mod handoff;
pub mod hold;
pub mod mem;
pub mod neigh;
pub mod netlink;
pub mod plan;
pub mod privileges;
#[doc(hidden)]
pub mod testutil;
mod worker;
pub mod xsk;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::service::model::Millis;
use crate::shard::verdict::{Frame, Verdict};

pub use counters::{snapshot_all, ShardCounters, ShardStats};
pub use handoff::{HandoffBatch, HandoffFrame};
pub use worker::place_control_thread;
pub use xsk::{XskConfig, XskSocketInfo};

/// What a shard thread runs on its frames, as the runtime drives it (the
/// director implements it around the sans-IO engine: `ShardAdapter`).
pub trait PacketHandler: Send {
    /// Called once per loop iteration before the first `process` of it.
    fn begin_batch(&mut self, now: Millis);
    /// Decide about one frame that arrived on `in_ifindex`. The engine may
    /// rewrite it in place and move `frame.start`/`frame.len` (headroom).
    fn process(&mut self, now: Millis, in_ifindex: u32, frame: &mut Frame<'_>) -> Verdict;
    /// Called with the frames of an RX batch before the batch is processed:
    /// prefetch what `process` will read (see `Engine::warm_batch` and
    /// [`mem::prefetch`]). Default: nothing.
    fn warm_batch(&mut self, _frames: &[&[u8]]) {}
    /// Called at most once per millisecond, and at least every `poll_timeout`.
    fn tick(&mut self, now: Millis);
    /// The next hop towards `dest` if its MAC is known now (for frames
    /// held by [`Verdict::Hold`]). Default: never (held frames expire).
    fn next_hop(&mut self, _dest: std::net::IpAddr) -> Option<crate::shard::nexthop::NextHop> {
        None
    }
}

/// Errors of the data plane runtime.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// Invalid configuration.
    #[error("dataplane config: {0}")]
    Config(String),
    /// UMEM allocation failed.
    #[error("UMEM mmap: {0}")]
    Mmap(#[source] io::Error),
    /// An AF_XDP socket operation failed.
    #[error("AF_XDP {op} on ifindex {ifindex} queue {queue}: {source}")]
    Xsk {
        op: &'static str,
        ifindex: u32,
        queue: u32,
        #[source]
        source: io::Error,
    },
    /// eventfd creation failed.
    #[error("eventfd: {0}")]
    Eventfd(#[source] io::Error),
    /// A shard thread could not be spawned.
    #[error("spawning shard thread: {0}")]
    Spawn(#[source] io::Error),
    /// A shard thread panicked.
    #[error("shard {0} panicked")]
    ShardPanicked(u16),
    /// The `on_socket` callback of [`run_shards`] failed.
    #[error("registering AF_XDP socket: {0}")]
    Register(String),
}

/// One AF_XDP socket to open: queue `queue` of interface `ifindex`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    pub ifindex: u32,
    pub queue: u32,
}

/// One shard: its CPU and its sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    /// CPU (core id) to pin the thread to; `None`: no pinning.
    pub cpu: Option<usize>,
    /// The sockets this shard owns. TX for `Forward{ifindex}` uses the first
    /// socket of the shard on that interface.
    pub queues: Vec<QueueSpec>,
}

/// Configuration of the runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// One entry per shard; shard ids are the indices.
    pub shards: Vec<ShardSpec>,
    /// UMEM/ring geometry (per shard).
    pub xsk: XskConfig,
    /// Hand-off batches a shard's inbox holds before senders drop.
    pub handoff_capacity: usize,
    /// Busy-poll this long after the last work before blocking.
    pub busy_poll: Duration,
    /// Longest block in `poll()`.
    pub poll_timeout: Duration,
    /// Hand-off batches processed per loop iteration at most.
    pub inbox_batches_per_iter: usize,
    /// Run the shard threads under `SCHED_FIFO` at this priority (1-99);
    /// `None`: normal scheduling. A shard is a task: woken by a packet, it
    /// waits until another task on its core ends its time slice (several
    /// milliseconds under a compile, say), while the kernel's own
    /// forwarding runs in softirq, which preempts any task. A real-time
    /// shard preempts normal tasks at once. It sleeps whenever its rings
    /// are empty, so normal tasks keep the rest of the core; under a
    /// sustained overload the kernel's fair server still reserves them 5 %.
    /// Excludes `busy_poll` (a spinning real-time shard starves the kernel
    /// work of its core: frames come back late and the fill ring runs dry).
    pub rt_priority: Option<u8>,
}

impl RuntimeConfig {
    /// Shard `q` owns queue `q` of every interface in `ifindexes` and is
    /// pinned to CPU `q % cpus`.
    pub fn per_queue(ifindexes: &[u32], n_shards: u16) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = (0..n_shards)
            .map(|q| ShardSpec {
                cpu: Some(usize::from(q) % cpus),
                queues: ifindexes
                    .iter()
                    .map(|&ifindex| QueueSpec {
                        ifindex,
                        queue: u32::from(q),
                    })
                    .collect(),
            })
            .collect();
        RuntimeConfig {
            shards,
            ..RuntimeConfig::default()
        }
    }

    /// Check shard count, socket uniqueness and the XSK geometry.
    pub fn validate(&self) -> Result<(), DataplaneError> {
        if self.shards.is_empty() || self.shards.len() > usize::from(u16::MAX) {
            return Err(DataplaneError::Config("need 1..=65535 shards".to_string()));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.shards.iter().enumerate() {
            if s.queues.is_empty() {
                return Err(DataplaneError::Config(format!("shard {i} has no sockets")));
            }
            for q in &s.queues {
                if !seen.insert((q.ifindex, q.queue)) {
                    return Err(DataplaneError::Config(format!(
                        "ifindex {} queue {} assigned twice",
                        q.ifindex, q.queue
                    )));
                }
            }
        }
        if self.handoff_capacity == 0 || self.inbox_batches_per_iter == 0 {
            return Err(DataplaneError::Config(
                "handoff_capacity and inbox_batches_per_iter must be > 0".to_string(),
            ));
        }
        if self.poll_timeout.is_zero() {
            return Err(DataplaneError::Config(
                "poll_timeout must be > 0".to_string(),
            ));
        }
        if self.rt_priority.is_some_and(|p| !(1..=99).contains(&p)) {
            return Err(DataplaneError::Config(
                "rt_priority must be in 1..=99".to_string(),
            ));
        }
        if self.rt_priority.is_some() && !self.busy_poll.is_zero() {
            // Measured: a real-time shard spinning 20 us after each batch at
            // 150 kpps starved its core's kernel work (frames came back too
            // late: fill ring empty, 1.7 % lost, p99 3.8 ms).
            return Err(DataplaneError::Config(
                "rt_priority and busy_poll exclude each other: a real-time shard that \
                 spins starves the kernel work of its core"
                    .to_string(),
            ));
        }
        self.xsk.validate()
    }
}

impl Default for RuntimeConfig {
    /// No shards (fill `shards`), default geometry, 256 hand-off batches,
    /// no busy poll (sleep as soon as the rings are empty), 10 ms poll timeout.
    fn default() -> Self {
        RuntimeConfig {
            shards: Vec::new(),
            xsk: XskConfig::default(),
            handoff_capacity: 256,
            busy_poll: Duration::ZERO,
            poll_timeout: Duration::from_millis(10),
            inbox_batches_per_iter: 8,
            rt_priority: None,
        }
    }
}

/// Milliseconds on CLOCK_MONOTONIC: the `now` the runtime gives engines.
pub fn monotonic_millis() -> Millis {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own; CLOCK_MONOTONIC
    // always exists on Linux.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64)
        .saturating_mul(1000)
        .saturating_add(ts.tv_nsec as u64 / 1_000_000)
}

/// Phase one: sockets created and bound, no thread running yet.
pub struct ShardRuntime {
    cfg: RuntimeConfig,
    shards: Vec<xsk::ShardXsk>,
    wakers: Arc<[handoff::Waker]>,
    counters: Arc<[ShardCounters]>,
}

impl ShardRuntime {
    /// Create every shard's UMEM and bind its sockets (in the caller's
    /// network namespace). Needs root (CAP_NET_RAW, CAP_IPC_LOCK).
    pub fn new(cfg: RuntimeConfig) -> Result<Self, DataplaneError> {
        cfg.validate()?;
        let mut shards = Vec::with_capacity(cfg.shards.len());
        for s in &cfg.shards {
            let qs: Vec<(u32, u32)> = s.queues.iter().map(|q| (q.ifindex, q.queue)).collect();
            shards.push(xsk::ShardXsk::new(&cfg.xsk, &qs)?);
        }
        let wakers = (0..cfg.shards.len())
            .map(|_| handoff::Waker::new())
            .collect::<Result<Vec<_>, _>>()?;
        let counters = ShardCounters::new_shared(cfg.shards.len());
        Ok(ShardRuntime {
            cfg,
            shards,
            wakers: wakers.into(),
            counters,
        })
    }

    /// Number of shards.
    pub fn n_shards(&self) -> u16 {
        self.shards.len() as u16
    }

    /// Every socket, to register in the XDP program's XSKMAP (key: queue, in
    /// the map of `ifindex`). The fds stay valid until the shards stop.
    pub fn sockets(&self) -> Vec<XskSocketInfo> {
        self.shards
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.sockets(i as u16))
            .collect()
    }

    /// The shared counters (one block per shard).
    pub fn counters(&self) -> Arc<[ShardCounters]> {
        self.counters.clone()
    }

    /// Phase two: spawn one pinned thread per shard. `factory(shard, n_shards)`
    /// builds each shard's engine inside its thread. Threads run until `stop`
    /// is set (or [`RunningShards::stop`] is called).
    pub fn start<E, F>(
        self,
        factory: F,
        stop: Arc<AtomicBool>,
    ) -> Result<RunningShards, DataplaneError>
    where
        E: PacketHandler + 'static,
        F: Fn(u16, u16) -> E + Send + Sync + 'static,
    {
        let n = self.shards.len();
        let factory = Arc::new(factory);
        let mut inbox_tx = Vec::with_capacity(n);
        let mut inbox_rx = Vec::with_capacity(n);
        let mut ret_tx = Vec::with_capacity(n);
        let mut ret_rx = Vec::with_capacity(n);
        for _ in 0..n {
            let (t, r) = crossbeam_channel::bounded(self.cfg.handoff_capacity);
            inbox_tx.push(t);
            inbox_rx.push(r);
            let (t, r) = crossbeam_channel::bounded(self.cfg.handoff_capacity);
            ret_tx.push(t);
            ret_rx.push(r);
        }
        let mut handles: Vec<JoinHandle<ShardStats>> = Vec::with_capacity(n);
        let shards = self.shards.into_iter().zip(inbox_rx).zip(ret_rx);
        for (id, ((xsk, inbox), returns)) in shards.enumerate() {
            let w = worker::WorkerInit {
                id: id as u16,
                n: n as u16,
                cpu: self.cfg.shards.get(id).and_then(|s| s.cpu),
                xsk,
                inbox,
                returns,
                peers: inbox_tx.clone(),
                peer_returns: ret_tx.clone(),
                wakers: self.wakers.clone(),
                counters: self.counters.clone(),
                stop: stop.clone(),
                busy_poll: self.cfg.busy_poll,
                poll_timeout: self.cfg.poll_timeout,
                inbox_batches_per_iter: self.cfg.inbox_batches_per_iter,
                rt_priority: self.cfg.rt_priority,
            };
            let f = factory.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("xdpvs-shard-{id}"))
                .spawn(move || w.run(move |s, n| f(s, n)));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    stop.store(true, Ordering::SeqCst);
                    for w in self.wakers.iter() {
                        w.wake();
                    }
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(DataplaneError::Spawn(e));
                }
            }
        }
        Ok(RunningShards {
            handles,
            stop,
            wakers: self.wakers,
            counters: self.counters,
        })
    }
}

/// Phase two: the running shard threads. Dropping it stops and joins them.
pub struct RunningShards {
    handles: Vec<JoinHandle<ShardStats>>,
    stop: Arc<AtomicBool>,
    wakers: Arc<[handoff::Waker]>,
    counters: Arc<[ShardCounters]>,
}

impl RunningShards {
    /// The shared counters (one block per shard).
    pub fn counters(&self) -> Arc<[ShardCounters]> {
        self.counters.clone()
    }

    /// Current counters of every shard.
    pub fn stats(&self) -> Vec<ShardStats> {
        snapshot_all(&self.counters)
    }

    /// Whether some shard thread has exited (stopped or panicked).
    pub fn any_finished(&self) -> bool {
        self.handles.iter().any(|h| h.is_finished())
    }

    /// Set the stop flag and wake every shard.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.wakers.iter() {
            w.wake();
        }
    }

    /// Wait for every shard thread (call [`stop`](Self::stop) first, or set
    /// the flag) and return their final counters.
    pub fn join(mut self) -> Result<Vec<ShardStats>, DataplaneError> {
        let handles = std::mem::take(&mut self.handles);
        let mut out = Vec::with_capacity(handles.len());
        let mut err = None;
        for (i, h) in handles.into_iter().enumerate() {
            match h.join() {
                Ok(s) => out.push(s),
                Err(_) => {
                    err.get_or_insert(DataplaneError::ShardPanicked(i as u16));
                    out.push(
                        self.counters
                            .get(i)
                            .map(|c| c.snapshot())
                            .unwrap_or_default(),
                    );
                }
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

impl Drop for RunningShards {
    fn drop(&mut self) {
        if self.handles.is_empty() {
            return;
        }
        self.stop();
        for h in std::mem::take(&mut self.handles) {
            let _ = h.join();
        }
    }
}

/// All phases in one call: create sockets, call `on_socket` for each (to
/// fill the XSKMAP), start the shards, block until `stop` is set, and return
/// the final counters. `counters_out` receives the shared counters before
/// the threads start (for a metrics reader).
pub fn run_shards<E, F, R>(
    config: RuntimeConfig,
    factory: F,
    mut on_socket: R,
    stop: Arc<AtomicBool>,
    counters_out: impl FnOnce(Arc<[ShardCounters]>),
) -> Result<Vec<ShardStats>, DataplaneError>
where
    E: PacketHandler + 'static,
    F: Fn(u16, u16) -> E + Send + Sync + 'static,
    R: FnMut(&XskSocketInfo) -> Result<(), String>,
{
    let rt = ShardRuntime::new(config)?;
    for s in rt.sockets() {
        on_socket(&s).map_err(DataplaneError::Register)?;
    }
    counters_out(rt.counters());
    let running = rt.start(factory, stop.clone())?;
    while !stop.load(Ordering::Relaxed) && !running.any_finished() {
        std::thread::sleep(Duration::from_millis(20));
    }
    running.stop();
    running.join()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_queue_assigns_queue_q_of_every_interface_to_shard_q() {
        let c = RuntimeConfig::per_queue(&[5, 9], 2);
        assert_eq!(c.shards.len(), 2);
        assert_eq!(
            c.shards[1].queues,
            vec![
                QueueSpec {
                    ifindex: 5,
                    queue: 1
                },
                QueueSpec {
                    ifindex: 9,
                    queue: 1
                }
            ]
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn validate_rejects_shared_sockets_and_empty_configs() {
        let mut c = RuntimeConfig::per_queue(&[5], 2);
        c.shards[1].queues[0].queue = 0;
        assert!(c.validate().is_err());
        assert!(RuntimeConfig::default().validate().is_err());
        let mut c = RuntimeConfig::per_queue(&[5], 1);
        c.shards[0].queues.clear();
        assert!(c.validate().is_err());
        let mut c = RuntimeConfig::per_queue(&[5], 1);
        c.poll_timeout = Duration::ZERO;
        assert!(c.validate().is_err());
    }

    #[test]
    fn validate_checks_the_realtime_priority() {
        let mut c = RuntimeConfig::per_queue(&[5], 1);
        assert_eq!(c.rt_priority, None, "normal scheduling by default");
        for (p, ok) in [(0, false), (1, true), (99, true), (100, false)] {
            c.rt_priority = Some(p);
            assert_eq!(c.validate().is_ok(), ok, "{p}");
        }
        c.rt_priority = Some(10);
        c.busy_poll = Duration::from_micros(20);
        assert!(c.validate().is_err(), "real-time and busy-poll together");
    }

    #[test]
    fn monotonic_millis_advances() {
        let a = monotonic_millis();
        std::thread::sleep(Duration::from_millis(5));
        let b = monotonic_millis();
        assert!(b >= a + 4, "{a} {b}");
    }
}
