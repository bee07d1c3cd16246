//! Telling a routing daemon when to announce the VIPs and when to withdraw
//! them (`[announce]`), and each service's quorum (`quorum`,
//! `hysteresis`, `quorum_up`, `quorum_down`), as keepalived runs its
//! notify and quorum scripts.
//!
//! Every command is an argument list run without a shell (the exec-check
//! machinery of [`crate::control::health`]: spawned, its pidfd polled on
//! the control loop's ring with the `timeout` linked, killed when it
//! overruns). A command that fails is logged with the tail of its stderr
//! and run again every `retry` until it succeeds or the wanted state
//! changes; only the latest wanted state counts (a `down` wanted while
//! `up` waits for its retry runs at once, and the `up` retry is dropped).
//!
//! **Readiness** is a set of named conditions: `up` (and the services'
//! quorum commands) run only while every condition holds. The director
//! sets [`READY_ATTACHED`] once XDP is attached and the config is loaded;
//! other parts hold the announcement with [`Announcer::set_ready`] (e.g.
//! `set_ready("sync", false)` before the director starts, `true` once the
//! resync is done). A condition that becomes false after the VIPs were
//! announced withdraws them.
//!
//! At stop ([`Announcer::withdraw`]), before XDP is detached: the `down`
//! command and every service's `quorum_down` run (a command still running
//! is waited for first, each bounded by `timeout`), then the director
//! waits `withdraw_delay` for the withdrawal to propagate.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::FromRawFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::schema::{Announce, Config};
use crate::control::health::{finish_program, spawn_program, wait_program, watch_program, Running};
use crate::control::state::RealKey;
use crate::control::uring::Reactor;

/// Tokens of the announcer's ring operations start here (health checks
/// use `1 << 40` and up).
pub const T_ANNOUNCE_BASE: u64 = 1 << 41;
/// The readiness condition the director sets once XDP is attached and the
/// config loaded.
pub const READY_ATTACHED: &str = "attached";
/// How much of a failed command's stderr is logged.
pub const STDERR_TAIL: usize = 512;

/// Announce (`Up`) or withdraw (`Down`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dir {
    Up,
    Down,
}

impl Dir {
    pub const fn word(self) -> &'static str {
        match self {
            Dir::Up => "up",
            Dir::Down => "down",
        }
    }
}

/// The wanted state of one target (the director's VIPs, or one service)
/// and its commands' progress. Pure: time is passed in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Job {
    /// `None`: nothing wanted yet (the director is not ready).
    pub wanted: Option<Dir>,
    /// The direction whose command last succeeded (`None`: unknown, or
    /// the last command failed).
    pub done: Option<Dir>,
    /// The direction of the command in flight.
    pub running: Option<Dir>,
    /// A failed command runs again at this time (if still wanted).
    pub retry_at: Option<Instant>,
    pub runs: u64,
    pub failures: u64,
    pub last_error: String,
}

impl Job {
    /// Want `d`. A new wanted state drops the retry of the old one (it is
    /// due at once).
    pub fn want(&mut self, d: Dir) {
        if self.wanted != Some(d) {
            self.wanted = Some(d);
            self.retry_at = None;
        }
    }

    /// The command to start now, if any: the wanted state when it is not
    /// done, nothing is running and no retry is pending. Marks it running.
    pub fn due(&mut self, now: Instant) -> Option<Dir> {
        if self.running.is_some() {
            return None;
        }
        let w = self.wanted?;
        if self.done == Some(w) || self.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        self.running = Some(w);
        self.retry_at = None;
        Some(w)
    }

    /// The running command ended. A failure is retried after `retry` if its
    /// direction is still wanted; if another one is wanted now, that one is
    /// due at once.
    pub fn finished(&mut self, ok: bool, why: &str, now: Instant, retry: Duration) {
        let Some(d) = self.running.take() else {
            return;
        };
        if ok {
            self.done = Some(d);
            self.retry_at = None;
        } else {
            self.done = None;
            self.failures += 1;
            self.last_error = why.to_string();
            self.retry_at = (self.wanted == Some(d)).then_some(now + retry);
        }
    }

    /// When [`Job::due`] may next return a command (`None`: not by time).
    pub fn next_due(&self) -> Option<Instant> {
        if self.running.is_some() || self.wanted.is_none() || self.done == self.wanted {
            return None;
        }
        self.retry_at
    }

    /// `announced`, `withdrawn`, `pending` (a command is wanted, running
    /// or waiting for its retry) or `idle` (nothing wanted yet).
    pub fn state(&self) -> &'static str {
        match (self.wanted, self.done, self.running) {
            (None, _, None) => "idle",
            (Some(Dir::Up), Some(Dir::Up), None) => "announced",
            (Some(Dir::Down), Some(Dir::Down), None) => "withdrawn",
            _ => "pending",
        }
    }
}

/// keepalived's quorum with hysteresis: with quorum, it is lost when the
/// live weight drops below `quorum - hysteresis`; without, it is gained
/// when the live weight reaches `quorum + hysteresis`.
pub fn quorum_next(has: bool, live_weight: u64, quorum: u32, hysteresis: u32) -> bool {
    let (q, h) = (u64::from(quorum), u64::from(hysteresis));
    if has {
        live_weight >= q.saturating_sub(h)
    } else {
        live_weight >= q + h
    }
}

/// The total configured weight of a service's real servers that no health
/// check holds down (keepalived's sum of the weights of the live servers).
pub fn live_weights(cfg: &Config, down: &dyn Fn(&RealKey) -> bool) -> Vec<(String, u64)> {
    cfg.services
        .iter()
        .map(|s| {
            let w = s
                .reals
                .iter()
                .filter(|r| !down(&(s.key, r.addr, r.effective_port(s))))
                .map(|r| u64::from(r.weight))
                .sum();
            (s.name.clone(), w)
        })
        .collect()
}

/// The announce state, for `xdpvs status`/`stats` and the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceStatus {
    /// Whether `[announce]` has an `up` or `down` command.
    pub configured: bool,
    /// `announced`, `withdrawn`, `pending` or `idle`.
    pub state: String,
    /// The readiness conditions not met yet (empty: ready).
    pub waiting_for: Vec<String>,
    pub runs: u64,
    pub failures: u64,
    pub last_error: String,
    pub services: Vec<QuorumStatus>,
}

/// One service's quorum.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumStatus {
    pub name: String,
    pub quorum: u32,
    pub hysteresis: u32,
    pub live_weight: u64,
    pub has_quorum: bool,
    /// Times quorum was lost.
    pub losses: u64,
    /// The state of its quorum commands (`-` without any).
    pub state: String,
    pub runs: u64,
    pub failures: u64,
}

impl AnnounceStatus {
    /// The lines `xdpvs stats` prints: the announce state, then each
    /// service with a quorum setting or quorum commands, or without quorum.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let waiting = if self.waiting_for.is_empty() {
            String::new()
        } else {
            format!(" (waiting for {})", self.waiting_for.join(", "))
        };
        if self.configured {
            let _ = write!(
                o,
                "announce {}{waiting}: {} command(s) run, {} failed",
                self.state, self.runs, self.failures
            );
            if !self.last_error.is_empty() {
                let _ = write!(o, ", last error: {}", self.last_error);
            }
            o.push('\n');
        } else {
            let _ = writeln!(o, "announce: no [announce] commands{waiting}");
        }
        for q in &self.services {
            if q.quorum == 1 && q.hysteresis == 0 && q.state == "-" && q.has_quorum {
                continue;
            }
            let _ = writeln!(
                o,
                "quorum {}: {} (live weight {}, quorum {}, hysteresis {}), lost {} time(s), commands {} ({} run, {} failed)",
                q.name,
                if q.has_quorum { "up" } else { "DOWN" },
                q.live_weight,
                q.quorum,
                q.hysteresis,
                q.losses,
                q.state,
                q.runs,
                q.failures
            );
        }
        o
    }
}

/// A command target: the director's `[announce]` (slot 0) or a service.
struct Slot {
    /// `None`: `[announce]`.
    service: Option<String>,
    up: Option<Vec<String>>,
    down: Option<Vec<String>>,
    job: Job,
    run: Option<(Running, File)>,
    /// Quorum (services only).
    quorum: u32,
    hysteresis: u32,
    live: u64,
    has_quorum: bool,
    losses: u64,
    /// No longer configured (kept for its token; dropped from the status).
    gone: bool,
    /// Quorum not evaluated yet (a new service): its first verdict is not
    /// a change, and is not logged.
    fresh: bool,
}

impl Slot {
    fn new(service: Option<String>) -> Slot {
        Slot {
            service,
            up: None,
            down: None,
            job: Job::default(),
            run: None,
            quorum: 1,
            hysteresis: 0,
            live: 0,
            has_quorum: false,
            losses: 0,
            gone: false,
            fresh: true,
        }
    }

    fn cmd(&self, d: Dir) -> Option<&Vec<String>> {
        match d {
            Dir::Up => self.up.as_ref(),
            Dir::Down => self.down.as_ref(),
        }
    }

    fn what(&self, d: Dir) -> String {
        match &self.service {
            None => format!("announce {}", d.word()),
            Some(s) => format!("service {s}: quorum_{}", d.word()),
        }
    }
}

/// The announce and quorum commands; tokens of its ring operations are
/// `base + slot`.
pub struct Announcer {
    base: u64,
    cfg: Announce,
    /// Readiness conditions not met.
    unmet: BTreeSet<String>,
    stopping: bool,
    slots: Vec<Slot>,
    /// Children killed at their timeout, not reaped yet.
    reap: Vec<std::process::Child>,
}

impl Announcer {
    /// Not ready: waits for [`READY_ATTACHED`].
    pub fn new(token_base: u64) -> Announcer {
        let mut unmet = BTreeSet::new();
        unmet.insert(READY_ATTACHED.to_string());
        Announcer {
            base: token_base,
            cfg: Announce::default(),
            unmet,
            stopping: false,
            slots: vec![Slot::new(None)],
            reap: Vec::new(),
        }
    }

    /// Set one readiness condition. `up` and the quorum commands run only
    /// while every condition is met; a condition unmet after the VIPs were
    /// announced withdraws them (`down`, `quorum_down`).
    pub fn set_ready(&mut self, reason: &str, ready: bool) {
        let changed = if ready {
            self.unmet.remove(reason)
        } else {
            self.unmet.insert(reason.to_string())
        };
        if changed {
            tracing::info!(
                "announce: {reason} {}; {}",
                if ready { "ready" } else { "not ready" },
                if self.unmet.is_empty() {
                    "ready to announce".to_string()
                } else {
                    format!("waiting for {}", self.waiting_for().join(", "))
                }
            );
        }
        self.decide();
    }

    /// Whether every readiness condition is met.
    pub fn is_ready(&self) -> bool {
        self.unmet.is_empty()
    }

    /// The readiness conditions not met.
    pub fn waiting_for(&self) -> Vec<String> {
        self.unmet.iter().cloned().collect()
    }

    pub fn owns(&self, token: u64) -> bool {
        token >= self.base && token < self.base + (1 << 32)
    }

    /// Take a config (at start and at every reload): the commands and
    /// quorum settings, and each service's live weight (see
    /// [`live_weights`]). A changed command does not run by itself: only a
    /// change of the wanted state runs one.
    pub fn configure(&mut self, cfg: &Config, live: &[(String, u64)]) {
        self.cfg = cfg.announce.clone();
        if let Some(g) = self.slots.first_mut() {
            g.up = cfg.announce.up.clone();
            g.down = cfg.announce.down.clone();
        }
        for s in self.slots.iter_mut().skip(1) {
            s.gone = true;
        }
        // By name: a reload of 10,000 services must not search the slots
        // once per service.
        let mut index: HashMap<String, usize> = HashMap::with_capacity(self.slots.len());
        for (i, s) in self.slots.iter().enumerate().skip(1) {
            if let Some(n) = &s.service {
                index.entry(n.clone()).or_insert(i);
            }
        }
        for svc in &cfg.services {
            let i = match index.get(svc.name.as_str()) {
                Some(&i) => i,
                None => {
                    self.slots.push(Slot::new(Some(svc.name.clone())));
                    let i = self.slots.len() - 1;
                    index.insert(svc.name.clone(), i);
                    i
                }
            };
            if let Some(s) = self.slots.get_mut(i) {
                s.gone = false;
                s.up = svc.quorum_up.clone();
                s.down = svc.quorum_down.clone();
                s.quorum = svc.quorum;
                s.hysteresis = svc.hysteresis;
            }
        }
        self.set_live(live);
    }

    /// New live weights (a health check changed a verdict, or a reload):
    /// services that cross their quorum log it and want their command.
    pub fn set_live(&mut self, live: &[(String, u64)]) {
        let mut by_name: HashMap<&str, u64> = HashMap::with_capacity(live.len());
        for (n, w) in live {
            by_name.entry(n.as_str()).or_insert(*w);
        }
        for s in self.slots.iter_mut().skip(1).filter(|s| !s.gone) {
            let Some(name) = &s.service else { continue };
            let Some(&w) = by_name.get(name.as_str()) else {
                continue;
            };
            s.live = w;
            let has = quorum_next(s.has_quorum, s.live, s.quorum, s.hysteresis);
            let fresh = std::mem::replace(&mut s.fresh, false);
            if fresh && has {
                // A new service with its quorum: nothing changed to log
                // (a reload of 10,000 services wrote 10,000 lines).
                s.has_quorum = true;
            } else if has != s.has_quorum {
                s.has_quorum = has;
                let (q, h) = (s.quorum, s.hysteresis);
                if has {
                    tracing::info!(
                        "service {name}: quorum reached (live weight {w} >= quorum {q} + hysteresis {h})"
                    );
                } else {
                    s.losses += 1;
                    tracing::warn!(
                        "service {name}: quorum lost (live weight {w} < quorum {q} - hysteresis {h})"
                    );
                }
            }
        }
        self.decide();
    }

    /// Set every target's wanted state from readiness, quorum and stop.
    fn decide(&mut self) {
        let ready = self.unmet.is_empty() && !self.stopping;
        for s in self.slots.iter_mut() {
            let want = if ready && !s.gone {
                if s.service.is_none() || s.has_quorum {
                    Dir::Up
                } else {
                    Dir::Down
                }
            } else {
                // Nothing runs before the director is first ready; after
                // that, not ready, stopping, or a service removed from the
                // config (with the commands it had) withdraws.
                Dir::Down
            };
            if (ready && !s.gone) || s.job.wanted.is_some() {
                s.job.want(want);
            }
        }
    }

    /// Start the commands that are due. Returns when the next retry is due.
    pub fn start_due(&mut self, r: &mut Reactor, now: Instant) -> Option<Instant> {
        self.reap.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        let limit = self.cfg.timeout;
        let retry = self.cfg.retry;
        let mut next: Option<Instant> = None;
        for (i, s) in self.slots.iter_mut().enumerate() {
            if let Some(d) = s.job.due(now) {
                match s.cmd(d).cloned() {
                    // Nothing to run for this direction: done at once.
                    None => s.job.finished(true, "", now, retry),
                    Some(cmd) => {
                        s.job.runs += 1;
                        let token = self.base + i as u64;
                        match start(r, &cmd, s.service.as_deref(), d, limit, token) {
                            Ok(run) => s.run = Some(run),
                            Err(e) => {
                                tracing::warn!(
                                    "{} failed: {e}; again in {}",
                                    s.what(d),
                                    crate::control::health::duration_text(retry)
                                );
                                s.job.finished(false, &e.to_string(), now, retry);
                            }
                        }
                    }
                }
            }
            if let Some(t) = s.job.next_due() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        next
    }

    /// Handle the completion of a command's poll.
    pub fn complete(&mut self, token: u64, result: i32, now: Instant) {
        let limit = self.cfg.timeout;
        let retry = self.cfg.retry;
        let Some(s) = self.slots.get_mut((token - self.base) as usize) else {
            return;
        };
        let Some((run, err)) = s.run.take() else {
            return;
        };
        let Some(d) = s.job.running else { return };
        let (ok, why, unreaped) = finish_program(run, result, limit);
        if let Some(c) = unreaped {
            self.reap.push(c);
        }
        let why = report(s, d, ok, &why, err, retry);
        s.job.finished(ok, &why, now, retry);
    }

    /// The director stops: withdraw before XDP is detached. Waits for the
    /// commands still running, runs `down` and every service's
    /// `quorum_down` (each bounded by `timeout`; a failure is logged, not
    /// retried), then waits `withdraw_delay` if a command ran.
    pub fn withdraw(&mut self) {
        self.stopping = true;
        let limit = self.cfg.timeout;
        let retry = self.cfg.retry;
        let now = Instant::now();
        for s in self.slots.iter_mut() {
            if let Some((run, err)) = s.run.take() {
                if let Some(d) = s.job.running {
                    let (ok, why) = wait_program(run.into_child(), limit);
                    let why = report(s, d, ok, &why, err, retry);
                    s.job.finished(ok, &why, now, retry);
                }
            }
        }
        self.decide();
        let mut ran = false;
        let mut started = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            // At stop the retry wait does not apply: one last attempt.
            s.job.retry_at = None;
            let Some(d) = s.job.due(now) else { continue };
            let Some(cmd) = s.cmd(d).cloned() else {
                s.job.finished(true, "", now, retry);
                continue;
            };
            s.job.runs += 1;
            ran = true;
            match spawn(&cmd, s.service.as_deref(), d) {
                Ok(run) => started.push((i, run)),
                Err(e) => {
                    tracing::error!("{} failed at stop: {e}", s.what(d));
                    s.job.finished(false, &e.to_string(), now, retry);
                }
            }
        }
        for (i, (child, err)) in started {
            let Some(s) = self.slots.get_mut(i) else {
                continue;
            };
            let Some(d) = s.job.running else { continue };
            let (ok, why) = wait_program(child, limit);
            let why = report(s, d, ok, &why, err, retry);
            s.job.finished(ok, &why, now, retry);
        }
        for mut c in self.reap.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        if ran && !self.cfg.withdraw_delay.is_zero() {
            tracing::info!(
                "announce: waiting {} for the withdrawal to propagate",
                crate::control::health::duration_text(self.cfg.withdraw_delay)
            );
            std::thread::sleep(self.cfg.withdraw_delay);
        }
    }

    /// The director hands over to a successor (`--takeover`): nothing is
    /// withdrawn; commands still running are killed.
    pub fn abandon(&mut self) {
        for s in self.slots.iter_mut() {
            if let Some((run, _)) = s.run.take() {
                let _ = wait_program(run.into_child(), Duration::ZERO);
            }
        }
    }

    pub fn status(&self) -> AnnounceStatus {
        let g = self.slots.first().map(|s| &s.job);
        AnnounceStatus {
            configured: self.cfg.up.is_some() || self.cfg.down.is_some(),
            state: g.map_or("idle", Job::state).to_string(),
            waiting_for: self.waiting_for(),
            runs: g.map_or(0, |j| j.runs),
            failures: g.map_or(0, |j| j.failures),
            last_error: g.map(|j| j.last_error.clone()).unwrap_or_default(),
            services: self
                .slots
                .iter()
                .skip(1)
                .filter(|s| !s.gone)
                .map(|s| QuorumStatus {
                    name: s.service.clone().unwrap_or_default(),
                    quorum: s.quorum,
                    hysteresis: s.hysteresis,
                    live_weight: s.live,
                    has_quorum: s.has_quorum,
                    losses: s.losses,
                    state: if s.up.is_some() || s.down.is_some() {
                        s.job.state().to_string()
                    } else {
                        "-".to_string()
                    },
                    runs: s.job.runs,
                    failures: s.job.failures,
                })
                .collect(),
        }
    }
}

/// Log how a command ended (a failure with its stderr's tail).
/// Log how a command ended (a failure with its stderr's tail); returns
/// the reason with that tail (the status's `last_error`).
fn report(s: &Slot, d: Dir, ok: bool, why: &str, mut err: File, retry: Duration) -> String {
    if ok {
        tracing::info!("{} ran ({why})", s.what(d));
        return why.to_string();
    }
    let tail = stderr_tail(&mut err);
    let why = if tail.is_empty() {
        why.to_string()
    } else {
        format!("{why}; stderr: {tail}")
    };
    let again = if s.job.wanted == Some(d) {
        format!(
            "; again in {}",
            crate::control::health::duration_text(retry)
        )
    } else {
        String::new()
    };
    tracing::warn!("{} failed: {why}{again}", s.what(d));
    why
}

/// The last [`STDERR_TAIL`] bytes of a command's stderr, on one line.
fn stderr_tail(f: &mut File) -> String {
    let len = f.seek(SeekFrom::End(0)).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(STDERR_TAIL as u64)));
    let mut buf = Vec::new();
    let _ = f.take(STDERR_TAIL as u64).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A memory file for a command's stderr.
fn stderr_file() -> std::io::Result<File> {
    // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns
    // a new descriptor or -1 (checked).
    let fd = unsafe { libc::memfd_create(c"xdpvs-announce".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Spawn an announce or quorum command: `XDPVS_ANNOUNCE` (`up`/`down`) and,
/// for a service, `XDPVS_SERVICE` in its environment; stderr kept.
fn spawn(
    cmd: &[String],
    service: Option<&str>,
    d: Dir,
) -> std::io::Result<(std::process::Child, File)> {
    let err = stderr_file()?;
    let mut env = vec![("XDPVS_ANNOUNCE", d.word())];
    if let Some(s) = service {
        env.push(("XDPVS_SERVICE", s));
    }
    let child = spawn_program(cmd, &env, Stdio::from(err.try_clone()?))?;
    Ok((child, err))
}

fn start(
    r: &mut Reactor,
    cmd: &[String],
    service: Option<&str>,
    d: Dir,
    limit: Duration,
    token: u64,
) -> std::io::Result<(Running, File)> {
    let (child, err) = spawn(cmd, service, d)?;
    Ok((watch_program(r, child, limit, token)?, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    /// Wanted-state transitions, retry timing and latest-state-wins, table
    /// driven: each step is an action at a time (ms) and the expected
    /// command (if any) `due` returns at that time.
    #[test]
    fn job_transitions_retries_and_latest_state_wins() {
        #[derive(Clone, Copy, Debug)]
        enum A {
            Want(Dir),
            Due(Option<Dir>),
            Ok,
            Fail,
        }
        use Dir::*;
        use A::*;
        let retry = Duration::from_millis(100);
        #[rustfmt::skip]
        type Case<'a> = (&'a str, &'a [(u64, A)], &'a str);
        let table: &[Case] = &[
            ("nothing wanted, nothing runs", &[(0, Due(None))], "idle"),
            (
                "up runs once",
                &[(0, Want(Up)), (0, Due(Some(Up))), (1, Ok), (500, Due(None))],
                "announced",
            ),
            (
                "failure retried after retry, not before",
                &[
                    (0, Want(Up)),
                    (0, Due(Some(Up))),
                    (5, Fail),
                    (6, Due(None)),
                    (104, Due(None)),
                    (105, Due(Some(Up))),
                    (110, Ok),
                ],
                "announced",
            ),
            (
                "down wanted while up waits for its retry: down at once, up dropped",
                &[
                    (0, Want(Up)),
                    (0, Due(Some(Up))),
                    (5, Fail),
                    (10, Want(Down)),
                    (10, Due(Some(Down))),
                    (12, Ok),
                    (500, Due(None)),
                ],
                "withdrawn",
            ),
            (
                "down wanted while up runs: down right after up ends, even if up failed",
                &[
                    (0, Want(Up)),
                    (0, Due(Some(Up))),
                    (1, Want(Down)),
                    (2, Due(None)),
                    (3, Fail),
                    (3, Due(Some(Down))),
                    (4, Ok),
                ],
                "withdrawn",
            ),
            (
                "up, down, up again: each runs",
                &[
                    (0, Want(Up)),
                    (0, Due(Some(Up))),
                    (1, Ok),
                    (2, Want(Down)),
                    (2, Due(Some(Down))),
                    (3, Ok),
                    (4, Want(Up)),
                    (4, Due(Some(Up))),
                    (5, Ok),
                ],
                "announced",
            ),
            (
                "the same state wanted again runs nothing",
                &[
                    (0, Want(Up)),
                    (0, Due(Some(Up))),
                    (1, Ok),
                    (2, Want(Up)),
                    (2, Due(None)),
                ],
                "announced",
            ),
            (
                "a failed down leaves the state unknown: up runs again when wanted",
                &[
                    (0, Want(Up)),
                    (0, Due(Some(Up))),
                    (1, Ok),
                    (2, Want(Down)),
                    (2, Due(Some(Down))),
                    (3, Fail),
                    (4, Want(Up)),
                    (4, Due(Some(Up))),
                ],
                "pending",
            ),
        ];
        for (name, steps, end) in table {
            let base = t0();
            let mut j = Job::default();
            for (i, (ms, a)) in steps.iter().enumerate() {
                let now = base + Duration::from_millis(*ms);
                match a {
                    Want(d) => j.want(*d),
                    Due(want) => assert_eq!(j.due(now), *want, "{name}: step {i}"),
                    Ok => j.finished(true, "", now, retry),
                    Fail => j.finished(false, "exit status 1", now, retry),
                }
            }
            assert_eq!(j.state(), *end, "{name}: {j:?}");
        }
    }

    #[test]
    fn next_due_is_the_retry_time() {
        let base = t0();
        let retry = Duration::from_secs(5);
        let mut j = Job::default();
        j.want(Dir::Up);
        assert_eq!(j.due(base), Some(Dir::Up));
        assert_eq!(j.next_due(), None, "running");
        j.finished(false, "boom", base, retry);
        assert_eq!(j.next_due(), Some(base + retry));
        assert_eq!((j.failures, j.last_error.as_str()), (1, "boom"));
        j.want(Dir::Down);
        assert_eq!(j.next_due(), None, "the retry of up is dropped");
        assert_eq!(j.due(base), Some(Dir::Down));
    }

    /// keepalived's quorum: a sum of the live servers' weights, with
    /// hysteresis on both sides (the quorum sample: quorum 7, hysteresis 2,
    /// ten servers of weight 1, all down at start).
    #[test]
    fn quorum_with_weights_and_hysteresis() {
        // (live weights in order, expected has-quorum after each)
        #[rustfmt::skip]
        type Case<'a> = (u32, u32, &'a [(u64, bool)]);
        let table: &[Case] = &[
            (1, 0, &[(0, false), (1, true), (0, false), (5, true)]),
            (
                7,
                2,
                &[
                    (0, false),
                    (7, false),
                    (8, false),
                    (9, true),
                    (7, true),
                    (6, true),
                    (5, true),
                    (4, false),
                    (8, false),
                    (9, true),
                ],
            ),
            // Weights, not server counts: one server of weight 10.
            (10, 0, &[(10, true), (9, false), (10, true)]),
            // hysteresis >= quorum: never lost once reached.
            (2, 2, &[(3, false), (4, true), (0, true)]),
        ];
        for (q, h, steps) in table {
            let mut has = false;
            for (i, (w, want)) in steps.iter().enumerate() {
                has = quorum_next(has, *w, *q, *h);
                assert_eq!(
                    has, *want,
                    "quorum {q} hysteresis {h}: step {i} (weight {w})"
                );
            }
        }
    }

    fn cfg(text: &str) -> Config {
        Config::parse(text, "t.toml").unwrap()
    }

    const TWO: &str = r#"
[director]
interfaces = ["eth0"]
[announce]
up = ["/bin/true"]
down = ["/bin/true"]
[[service]]
name = "web"
proto = "tcp"
vip = "198.18.0.1"
port = 80
quorum = 3
hysteresis = 1
quorum_down = ["/bin/true"]
  [[service.real]]
  addr = "198.18.1.1"
  weight = 2
  [[service.real]]
  addr = "198.18.1.2"
  weight = 2
  [[service.real]]
  addr = "198.18.1.3"
  weight = 0
[[service]]
name = "dns"
proto = "udp"
vip = "198.18.0.1"
port = 53
  [[service.real]]
  addr = "198.18.1.1"
"#;

    #[test]
    fn live_weight_sums_configured_weights_of_servers_not_down() {
        let c = cfg(TWO);
        let down_one = |rk: &RealKey| rk.1 == "198.18.1.2".parse::<std::net::IpAddr>().unwrap();
        let w = live_weights(&c, &|_| false);
        assert_eq!(w, vec![("web".to_string(), 4), ("dns".to_string(), 1)]);
        let w = live_weights(&c, &down_one);
        assert_eq!(w, vec![("web".to_string(), 2), ("dns".to_string(), 1)]);
    }

    /// Nothing is wanted before ready; ready wants up, the services their
    /// quorum state; a readiness condition added later (the sync resync)
    /// holds up until it is met, and withdraws once announced.
    #[test]
    fn readiness_conditions_and_quorum_decide_the_wanted_states() {
        let c = cfg(TWO);
        let mut a = Announcer::new(1 << 44);
        a.set_ready("sync", false);
        a.configure(&c, &live_weights(&c, &|_| false));
        let wanted =
            |a: &Announcer| -> Vec<Option<Dir>> { a.slots.iter().map(|s| s.job.wanted).collect() };
        assert_eq!(wanted(&a), vec![None, None, None]);
        a.set_ready(READY_ATTACHED, true);
        assert_eq!(wanted(&a), vec![None, None, None], "still waiting for sync");
        assert_eq!(a.waiting_for(), vec!["sync".to_string()]);
        a.set_ready("sync", true);
        assert!(a.is_ready());
        // web: live 4 >= 3 + 1: quorum.
        assert_eq!(
            wanted(&a),
            vec![Some(Dir::Up), Some(Dir::Up), Some(Dir::Up)]
        );
        a.set_live(&[("web".into(), 2), ("dns".into(), 1)]);
        assert_eq!(wanted(&a)[1], Some(Dir::Up), "2 >= 3 - 1: kept");
        a.set_live(&[("web".into(), 1), ("dns".into(), 1)]);
        assert_eq!(wanted(&a)[1], Some(Dir::Down), "1 < 3 - 1: lost");
        let st = a.status();
        assert_eq!(st.services[0].losses, 1);
        assert!(!st.services[0].has_quorum);
        assert_eq!(st.services[1].state, "-", "dns has no quorum commands");
        a.set_ready("sync", false);
        assert_eq!(wanted(&a)[0], Some(Dir::Down), "not ready: withdrawn");
    }

    /// Drive the announcer's commands on a ring until `until` (bounded).
    fn drive(
        a: &mut Announcer,
        r: &mut Reactor,
        limit: Duration,
        until: impl Fn(&Announcer) -> bool,
    ) {
        let t0 = Instant::now();
        while t0.elapsed() < limit && !until(a) {
            a.start_due(r, Instant::now());
            r.timeout(Duration::from_millis(20), 1).unwrap();
            for c in r.wait().unwrap() {
                if a.owns(c.token) {
                    a.complete(c.token, c.result, Instant::now());
                }
            }
        }
    }

    /// The commands really run (no shell of ours: the program is /bin/sh
    /// because the test asks for it), a failing `up` is retried every
    /// `retry` with its stderr kept, one overrunning `timeout` is killed,
    /// and the stop runs `down` then waits `withdraw_delay`.
    #[test]
    fn commands_run_fail_retry_and_withdraw() {
        let dir = std::env::temp_dir().join(format!("xdpvs-announce-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        let flag = dir.join("flag");
        let text = format!(
            r#"
[director]
interfaces = ["eth0"]
[announce]
up = ["/bin/sh", "-c", "echo \"up $XDPVS_ANNOUNCE\" >> {log}; test -e {flag} || {{ echo 'bird: no such protocol' >&2; exit 3; }}"]
down = ["/bin/sh", "-c", "echo \"down $XDPVS_ANNOUNCE\" >> {log}"]
timeout = "300ms"
retry = "200ms"
withdraw_delay = "400ms"
"#,
            log = log.display(),
            flag = flag.display()
        );
        let c = cfg(&text);
        let mut r = Reactor::new(32).unwrap();
        let mut a = Announcer::new(1 << 44);
        a.configure(&c, &[]);
        drive(&mut a, &mut r, Duration::from_millis(300), |_| false);
        assert_eq!(a.status().runs, 0, "not ready: nothing runs");
        a.set_ready(READY_ATTACHED, true);
        drive(&mut a, &mut r, Duration::from_secs(3), |a| {
            a.status().failures >= 2
        });
        let st = a.status();
        assert_eq!(st.state, "pending");
        assert!(st.failures >= 2 && st.runs >= 2, "{st:?}");
        assert!(
            st.last_error
                .contains("exit status 3; stderr: bird: no such protocol"),
            "{st:?}"
        );
        std::fs::write(&flag, "").unwrap();
        drive(&mut a, &mut r, Duration::from_secs(3), |a| {
            a.status().state == "announced"
        });
        let st = a.status();
        assert_eq!(st.state, "announced", "{st:?}");
        let runs = st.runs;
        drive(&mut a, &mut r, Duration::from_millis(500), |_| false);
        assert_eq!(a.status().runs, runs, "announced: up does not run again");
        let t0 = Instant::now();
        a.withdraw();
        assert!(
            t0.elapsed() >= Duration::from_millis(400),
            "withdraw_delay waited"
        );
        assert_eq!(a.status().state, "withdrawn");
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() >= 4, "{text}");
        assert!(lines.iter().rev().skip(1).all(|l| *l == "up up"), "{text}");
        assert_eq!(lines.last(), Some(&"down down"), "{text}");

        // A command that overruns its timeout is killed and retried.
        let text = r#"
[director]
interfaces = ["eth0"]
[announce]
up = ["/bin/sleep", "5"]
timeout = "200ms"
retry = "100ms"
withdraw_delay = 0
"#;
        let c = cfg(text);
        let mut a = Announcer::new(1 << 44);
        a.configure(&c, &[]);
        a.set_ready(READY_ATTACHED, true);
        let t0 = Instant::now();
        drive(&mut a, &mut r, Duration::from_secs(3), |a| {
            a.status().failures >= 2
        });
        let st = a.status();
        assert!(st.failures >= 2, "{st:?}");
        assert!(st.last_error.contains("timed out"), "{st:?}");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "killed at the timeout"
        );
        let t0 = Instant::now();
        a.withdraw();
        assert!(
            t0.elapsed() < Duration::from_millis(400),
            "no down, no delay"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
