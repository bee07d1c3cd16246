//! The loop of one shard thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::counters::{ShardCounters, ShardStats};
use super::handoff::{BufPool, HandoffBatch, HandoffFrame, Waker};
use super::hold::{set_macs, Held, HoldQueue, HOLD_MS};
use super::xsk::{RxFrame, ShardXsk, HANDOFF_HEADROOM};
use super::{monotonic_millis, PacketHandler};
use crate::service::model::Millis;
use crate::shard::verdict::{DropReason, Frame, Verdict};

/// How often the kernel XSK statistics are read.
const KERNEL_STATS_EVERY_MS: Millis = 1000;
/// Hand-off buffers kept per shard.
const POOL_BUFS: usize = 4096;
/// Returned batches drained per iteration at most.
const RETURNS_PER_ITER: usize = 64;
/// Frames per prefetch pass (`PacketHandler::warm_batch`).
const WARM: usize = 32;

/// Everything a shard thread needs; moved into the thread.
pub(crate) struct WorkerInit {
    pub id: u16,
    pub n: u16,
    pub cpu: Option<usize>,
    pub xsk: ShardXsk,
    pub inbox: Receiver<HandoffBatch>,
    pub returns: Receiver<HandoffBatch>,
    pub peers: Vec<Sender<HandoffBatch>>,
    pub peer_returns: Vec<Sender<HandoffBatch>>,
    pub wakers: Arc<[Waker]>,
    pub counters: Arc<[ShardCounters]>,
    pub stop: Arc<AtomicBool>,
    pub busy_poll: Duration,
    pub poll_timeout: Duration,
    pub inbox_batches_per_iter: usize,
    pub rt_priority: Option<u8>,
}

struct Worker<E> {
    init: WorkerInit,
    engine: E,
    stats: ShardStats,
    pool: BufPool,
    /// Frames waiting to be sent to each shard this iteration.
    out: Vec<Vec<HandoffFrame>>,
    rx: Vec<RxFrame>,
    pollfds: Vec<libc::pollfd>,
    /// Frames waiting for a next hop's MAC.
    held: HoldQueue,
}

fn pin(cpu: usize) {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    match ids.into_iter().find(|c| c.id == cpu) {
        Some(c) if core_affinity::set_for_current(c) => {}
        _ => tracing::warn!(cpu, "could not pin shard thread"),
    }
}

/// Put the calling thread under `SCHED_FIFO` at `prio` (see
/// `RuntimeConfig::rt_priority`); on failure (no CAP_SYS_NICE, or an
/// RLIMIT_RTPRIO too low) it keeps normal scheduling, with a warning.
fn set_realtime(prio: u8) {
    let param = libc::sched_param {
        sched_priority: i32::from(prio),
    };
    // SAFETY: sched_setscheduler(2) with pid 0 changes the policy of the
    // calling thread only; `param` is a valid sched_param that outlives the
    // call, and the kernel only reads it.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc != 0 {
        tracing::warn!(
            prio,
            err = %std::io::Error::last_os_error(),
            "could not make the shard thread real-time (SCHED_FIFO); it stays a normal task"
        );
    }
}

/// Where the control thread (the calling thread) runs: on a core no shard
/// is pinned to when there is one, so a reload's snapshot build or a stats
/// request never takes a shard's core; otherwise at a lower priority (nice
/// 10), so the scheduler prefers the shard threads when they compete.
/// Call it after the shards started (threads inherit affinity and nice).
/// Returns what was done, for the log.
pub fn place_control_thread(shard_cpus: &[usize]) -> String {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    if let Some(free) = ids.iter().find(|c| !shard_cpus.contains(&c.id)) {
        if core_affinity::set_for_current(*free) {
            return format!("pinned to cpu {} (no shard there)", free.id);
        }
    }
    // SAFETY: setpriority(2) with PRIO_PROCESS and who = 0 changes the nice
    // value of the calling thread only (Linux: per-thread); it reads no
    // memory of ours.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    if rc == 0 {
        "every cpu has a shard: runs at nice 10 so shards go first".to_string()
    } else {
        format!(
            "every cpu has a shard; could not lower its priority: {}",
            std::io::Error::last_os_error()
        )
    }
}

impl WorkerInit {
    /// Pin, build the engine, run until stopped; returns the final counters.
    pub(crate) fn run<E: PacketHandler>(self, factory: impl FnOnce(u16, u16) -> E) -> ShardStats {
        if let Some(cpu) = self.cpu {
            pin(cpu);
        }
        if let Some(p) = self.rt_priority {
            set_realtime(p);
        }
        let engine = factory(self.id, self.n);
        let batch = self.xsk.batch() as usize;
        let mut pollfds: Vec<libc::pollfd> = self
            .xsk
            .fds()
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if let Some(w) = self.wakers.get(usize::from(self.id)) {
            pollfds.push(libc::pollfd {
                fd: w.fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let n = usize::from(self.n);
        let mut w = Worker {
            out: (0..n).map(|_| Vec::with_capacity(batch)).collect(),
            pool: BufPool::new(POOL_BUFS, 2048, 2 * n + 16, batch),
            rx: Vec::with_capacity(batch),
            init: self,
            engine,
            stats: ShardStats::default(),
            pollfds,
            held: HoldQueue::default(),
        };
        w.run_loop();
        w.stats
    }
}

impl<E: PacketHandler> Worker<E> {
    fn counters(&self) -> Option<&ShardCounters> {
        self.init.counters.get(usize::from(self.init.id))
    }

    fn publish(&self) {
        if let Some(c) = self.counters() {
            c.publish(&self.stats);
        }
    }

    fn run_loop(&mut self) {
        let mut last_work = Instant::now();
        let mut last_tick: Millis = 0;
        let mut last_kstats: Millis = 0;
        loop {
            if self.init.stop.load(Ordering::Relaxed) {
                break;
            }
            let now = monotonic_millis();
            if now != last_tick {
                self.engine.tick(now);
                last_tick = now;
            }
            if now.saturating_sub(last_kstats) >= KERNEL_STATS_EVERY_MS {
                self.kernel_stats();
                last_kstats = now;
            }
            let work = self.iteration(now);
            if work {
                self.publish();
                last_work = Instant::now();
                continue;
            }
            if last_work.elapsed() < self.init.busy_poll {
                std::hint::spin_loop();
                continue;
            }
            self.sleep();
            self.publish();
        }
        for h in self.held.take_all() {
            self.stats.count_drop(DropReason::NoNeighbor);
            self.init.xsk.recycle(h.base);
        }
        self.drain_tx();
        self.kernel_stats();
        self.stats.frames_missing = self.init.xsk.frames_missing();
        self.publish();
    }

    fn kernel_stats(&mut self) {
        let (d, f, e, t) = self.init.xsk.kernel_stats();
        self.stats.xsk_rx_dropped = d;
        self.stats.xsk_rx_ring_full = f;
        self.stats.xsk_fill_empty = e;
        self.stats.xsk_tx_invalid = t;
    }

    /// One pass over completions, RX, inbox, TX, hand-off and fill.
    /// Returns whether anything happened.
    fn iteration(&mut self, now: Millis) -> bool {
        let mut work = false;
        let done = self.init.xsk.reap_completions();
        self.stats.tx += done;
        work |= done > 0;
        // Held frames first: once their neighbour is known they leave
        // before newer packets to the same destination (as arp_queue).
        if !self.held.is_empty() {
            self.service_held(now);
        }

        let mut began = false;
        for qi in 0..self.init.xsk.n_queues() {
            self.rx.clear();
            let got = self.init.xsk.receive(qi, &mut self.rx);
            if got == 0 {
                continue;
            }
            if !began {
                self.engine.begin_batch(now);
                began = true;
            }
            self.stats.rx += got as u64;
            let in_if = self.init.xsk.ifindex_of(qi).unwrap_or(0);
            // Pre-pass: prefetch what every frame's connection lookup will
            // read, so the batch's cache misses overlap.
            for chunk in self.rx.chunks(WARM) {
                let mut frames: [&[u8]; WARM] = [&[]; WARM];
                for (f, slot) in chunk.iter().zip(frames.iter_mut()) {
                    *slot = self
                        .init
                        .xsk
                        .frame(f.base)
                        .and_then(|b| b.get(f.start..f.start.saturating_add(f.len)))
                        .unwrap_or(&[]);
                }
                self.engine
                    .warm_batch(frames.get(..chunk.len()).unwrap_or(&[]));
            }
            for i in 0..self.rx.len() {
                if let Some(f) = self.rx.get(i).copied() {
                    self.handle_rx(now, in_if, f);
                }
            }
        }
        work |= began;

        for _ in 0..self.init.inbox_batches_per_iter {
            let Ok(b) = self.init.inbox.try_recv() else {
                break;
            };
            if !began {
                self.engine.begin_batch(now);
                began = true;
            }
            work = true;
            for f in b.frames.iter() {
                self.handle_handed(now, f);
            }
            // Give the buffers back to their origin for reuse.
            let from = usize::from(b.from);
            match self.init.peer_returns.get(from).map(|t| t.try_send(b)) {
                Some(Ok(())) => {}
                Some(Err(TrySendError::Full(back) | TrySendError::Disconnected(back))) => {
                    self.pool.put_batch(back.frames)
                }
                None => {}
            }
        }
        for _ in 0..RETURNS_PER_ITER {
            let Ok(b) = self.init.returns.try_recv() else {
                break;
            };
            self.pool.put_batch(b.frames);
        }

        let fr = self.init.xsk.flush_tx();
        self.stats.tx_full += fr.rejected;
        self.stats.kicks += fr.kicks;
        self.flush_handoff();
        self.init.xsk.refill();
        work
    }

    fn handle_rx(&mut self, now: Millis, in_if: u32, f: RxFrame) {
        let xsk = &mut self.init.xsk;
        let Some(buf) = xsk.frame_mut(f.base) else {
            return;
        };
        let mut frame = Frame::new(buf, f.start, f.len);
        let v = self.engine.process(now, in_if, &mut frame);
        match v {
            Verdict::Forward { ifindex } => {
                let (start, len) = (frame.start, frame.len);
                self.forward(f.base, start, len, ifindex);
            }
            Verdict::Hold { ifindex, dest } => {
                let (start, len) = (frame.start, frame.len);
                self.hold(now, f.base, start, len, ifindex, dest);
            }
            Verdict::Handoff(s) => {
                let s = usize::from(s);
                if s == usize::from(self.init.id) || s >= self.out.len() {
                    self.stats.handoff_invalid += 1;
                } else {
                    let hf = self.pool.frame(in_if, frame.data());
                    if let Some(o) = self.out.get_mut(s) {
                        o.push(hf);
                    }
                }
                self.init.xsk.recycle(f.base);
            }
            Verdict::Pass => {
                self.stats.passed_unhandled += 1;
                self.init.xsk.recycle(f.base);
            }
            Verdict::Drop(r) => {
                self.stats.count_drop(r);
                self.init.xsk.recycle(f.base);
            }
        }
    }

    fn handle_handed(&mut self, now: Millis, hf: &HandoffFrame) {
        self.stats.handoff_in += 1;
        let Some(base) = self.init.xsk.alloc() else {
            self.stats.no_frame += 1;
            return;
        };
        let len = hf.data.len();
        let fits = self
            .init
            .xsk
            .frame_mut(base)
            .and_then(|buf| buf.get_mut(HANDOFF_HEADROOM..HANDOFF_HEADROOM + len))
            .map(|dst| dst.copy_from_slice(&hf.data))
            .is_some();
        if !fits {
            self.stats.no_frame += 1;
            self.init.xsk.recycle(base);
            return;
        }
        let Some(buf) = self.init.xsk.frame_mut(base) else {
            return;
        };
        let mut frame = Frame::new(buf, HANDOFF_HEADROOM, len);
        let v = self.engine.process(now, hf.in_ifindex, &mut frame);
        match v {
            Verdict::Forward { ifindex } => {
                let (start, len) = (frame.start, frame.len);
                self.forward(base, start, len, ifindex);
            }
            Verdict::Hold { ifindex, dest } => {
                let (start, len) = (frame.start, frame.len);
                self.hold(now, base, start, len, ifindex, dest);
            }
            Verdict::Handoff(_) => {
                // A frame is handed over at most once.
                self.stats.handoff_invalid += 1;
                self.init.xsk.recycle(base);
            }
            Verdict::Pass => {
                self.stats.passed_unhandled += 1;
                self.init.xsk.recycle(base);
            }
            Verdict::Drop(r) => {
                self.stats.count_drop(r);
                self.init.xsk.recycle(base);
            }
        }
    }

    /// Keep a frame until the MAC of its next hop is known (or drop it and
    /// count `no_neighbor` when the shard already holds its share).
    fn hold(
        &mut self,
        now: Millis,
        base: u64,
        start: usize,
        len: usize,
        ifindex: u32,
        dest: std::net::IpAddr,
    ) {
        let h = Held {
            base,
            start,
            len,
            ifindex,
            dest,
            until: now + HOLD_MS,
        };
        if self.held.push(h).is_err() {
            self.stats.count_drop(DropReason::NoNeighbor);
            self.init.xsk.recycle(base);
        }
    }

    /// Send the held frames whose next hop is now known; drop and count
    /// the expired ones.
    fn service_held(&mut self, now: Millis) {
        let mut ready = Vec::new();
        let mut expired = Vec::new();
        let engine = &mut self.engine;
        self.held.service(
            now,
            |d| engine.next_hop(d),
            |h, hop| ready.push((h, hop)),
            |h| expired.push(h),
        );
        for h in expired {
            self.stats.count_drop(DropReason::NoNeighbor);
            self.init.xsk.recycle(h.base);
        }
        for (h, hop) in ready {
            let ok = self
                .init
                .xsk
                .frame_mut(h.base)
                .and_then(|b| b.get_mut(h.start..h.start.saturating_add(h.len)))
                .is_some_and(|f| set_macs(f, &hop));
            if ok {
                self.forward(h.base, h.start, h.len, hop.ifindex);
            } else {
                self.stats.count_drop(DropReason::NoNeighbor);
                self.init.xsk.recycle(h.base);
            }
        }
    }

    fn forward(&mut self, base: u64, start: usize, len: usize, ifindex: u32) {
        let xsk = &mut self.init.xsk;
        let Some(qi) = xsk.queue_for_ifindex(ifindex) else {
            self.stats.forward_no_socket += 1;
            xsk.recycle(base);
            return;
        };
        if !super::xsk::tx_fits(start, len, xsk.frame_size()) {
            self.stats.tx_invalid += 1;
            xsk.recycle(base);
            return;
        }
        xsk.stage_tx(qi, base, start, len);
    }

    fn flush_handoff(&mut self) {
        for s in 0..self.out.len() {
            let Some(o) = self.out.get_mut(s) else {
                continue;
            };
            if o.is_empty() {
                continue;
            }
            let frames = std::mem::replace(o, self.pool.batch());
            let cnt = frames.len() as u64;
            let b = HandoffBatch {
                from: self.init.id,
                frames,
            };
            match self.init.peers.get(s).map(|t| t.try_send(b)) {
                Some(Ok(())) => {
                    self.stats.handoff_out += cnt;
                    if let Some(w) = self.init.wakers.get(s) {
                        w.wake_if_sleeping();
                    }
                }
                Some(Err(TrySendError::Full(b) | TrySendError::Disconnected(b))) => {
                    for _ in 0..cnt {
                        self.stats.count_drop(DropReason::HandoffFull);
                    }
                    self.pool.put_batch(b.frames);
                }
                None => {}
            }
        }
    }

    /// Block in poll() on the sockets and the eventfd.
    fn sleep(&mut self) {
        let Some(waker) = self.init.wakers.get(usize::from(self.init.id)) else {
            std::thread::sleep(self.init.poll_timeout);
            return;
        };
        waker.prepare_sleep();
        if !self.init.inbox.is_empty()
            || self.init.xsk.rx_available()
            || self.init.stop.load(Ordering::SeqCst)
        {
            waker.woke();
            return;
        }
        let timeout = if self.init.xsk.tx_pending() || !self.held.is_empty() {
            1
        } else {
            self.init.poll_timeout.as_millis().clamp(1, 60_000) as i32
        };
        for p in self.pollfds.iter_mut() {
            p.revents = 0;
        }
        // SAFETY: `pollfds` is a valid array of `len` pollfd structs whose fds
        // (our sockets and eventfd) stay open for the duration of the call.
        unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                timeout,
            );
        }
        waker.woke();
        self.stats.sleeps += 1;
    }

    /// On stop: push what is staged and reap completions for a short while.
    fn drain_tx(&mut self) {
        let fr = self.init.xsk.flush_tx();
        self.stats.tx_full += fr.rejected;
        self.stats.kicks += fr.kicks;
        let deadline = Instant::now() + Duration::from_millis(20);
        while Instant::now() < deadline {
            self.stats.tx += self.init.xsk.reap_completions();
            if !self.init.xsk.tx_pending() {
                break;
            }
            let fr = self.init.xsk.flush_tx();
            self.stats.tx_full += fr.rejected;
            self.stats.kicks += fr.kicks;
            std::thread::sleep(Duration::from_millis(1));
        }
        self.stats.tx += self.init.xsk.reap_completions();
        // Whatever never made it into a TX ring is lost with the shard.
        self.stats.tx_full += self.init.xsk.drop_staged();
    }
}
