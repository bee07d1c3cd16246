//! Health checks of real servers, run from the control loop's io_uring:
//! `tcp` (connect), `http` (GET, expected status), `udp` (request, expected
//! reply), each bounded by its timeout (linked timeouts), and `exec` (a
//! program, keepalived's MISC_CHECK: spawned, its pidfd polled on the ring
//! with the timeout linked, killed and reaped when it overruns). A server
//! changes state only after `fall` failures or `rise` successes in a row,
//! never on one probe. A state change runs the check's `notify_up` /
//! `notify_down` program (fire and forget, reaped, killed after
//! [`NOTIFY_LIMIT`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::schema::{HealthCheck, HealthProbe, OnFailure};
use crate::control::state::RealKey;
use crate::control::uring::{pidfd_open, probe_socket, Reactor, SockAddr};

/// A notify program still running after this long is killed.
pub const NOTIFY_LIMIT: Duration = Duration::from_secs(30);
/// How long the director waits at stop for `omega` notify programs.
pub const OMEGA_WAIT: Duration = Duration::from_secs(5);

/// Rise/fall counting for one real server (pure; time-free).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdicts {
    pub up: bool,
    ok_run: u32,
    fail_run: u32,
}

impl Default for Verdicts {
    /// Servers start up (as keepalived does): a running service is not
    /// emptied at start while the first probes are out.
    fn default() -> Self {
        Verdicts::starting(false)
    }
}

impl Verdicts {
    /// The state of a newly checked server: up, or (keepalived `alpha`)
    /// down until its first successful probe.
    pub fn starting(alpha: bool) -> Verdicts {
        Verdicts {
            up: !alpha,
            ok_run: 0,
            fail_run: 0,
        }
    }

    /// Record one probe; returns the new state when it changes. `first`: the
    /// server started down (`alpha`) and has not been up since, so a success
    /// brings it up at once.
    pub fn record_first(&mut self, ok: bool, rise: u32, fall: u32, first: bool) -> Option<bool> {
        if first && ok && !self.up {
            self.up = true;
            self.ok_run = 1;
            self.fail_run = 0;
            return Some(true);
        }
        self.record(ok, rise, fall)
    }

    /// Record one probe; returns the new state when it changes.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok {
            self.ok_run += 1;
            self.fail_run = 0;
            if !self.up && self.ok_run >= rise.max(1) {
                self.up = true;
                return Some(true);
            }
        } else {
            self.fail_run += 1;
            self.ok_run = 0;
            if self.up && self.fail_run >= fall.max(1) {
                self.up = false;
                return Some(false);
            }
        }
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connect,
    Send,
    Recv,
}

/// One probe in flight. Its buffers and socket stay put (boxed) until the
/// completion of its current operation has been seen.
struct Probe {
    fd: OwnedFd,
    addr: Box<SockAddr>,
    phase: Phase,
    request: Vec<u8>,
    buf: Vec<u8>,
    got: Vec<u8>,
    deadline: Instant,
}

/// A program in flight (an exec check, an announce command): the child
/// and its pidfd (polled on the ring; kept open until that completion has
/// been seen).
pub(crate) struct Running {
    child: Child,
    pidfd: OwnedFd,
}

struct Checked {
    check: HealthCheck,
    addr: SocketAddr,
    /// The service's name (`XDPVS_SERVICE`).
    service: String,
    verdicts: Verdicts,
    /// Started down (alpha) and not up since: its first success brings it
    /// up, whatever `rise`.
    first: bool,
    next: Instant,
    probe: Option<Box<Probe>>,
    running: Option<Running>,
    /// A probe that failed before it started (an exec check whose program
    /// cannot be run): reported as a failure by the completion of a short
    /// timer, so it counts towards `fall` as any failure.
    failed: Option<String>,
    /// No longer configured: dropped once its probe completes.
    gone: bool,
}

impl Checked {
    fn busy(&self) -> bool {
        self.probe.is_some() || self.running.is_some() || self.failed.is_some()
    }
}

/// A configured health check: the real server, its service's name, the
/// check.
pub type Configured = (RealKey, String, HealthCheck);

/// A state change for the control plane to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub real: RealKey,
    /// `Some(on_failure)`: down; `None`: up again.
    pub down: Option<OnFailure>,
    pub reason: String,
}

/// All health checks; tokens of its io_uring operations are `base + slot`.
pub struct Health {
    base: u64,
    slots: Vec<RealKey>,
    checked: HashMap<RealKey, Checked>,
    /// Children to reap: notify programs, and killed exec checks whose
    /// exit was not seen yet; each with the time after which it is killed.
    reap: Vec<(Child, Instant)>,
}

impl Health {
    pub fn new(token_base: u64) -> Health {
        Health {
            base: token_base,
            slots: Vec::new(),
            checked: HashMap::new(),
            reap: Vec::new(),
        }
    }

    /// Children (exec checks and notify programs) not reaped yet.
    pub fn children(&self) -> usize {
        self.reap.len()
            + self
                .checked
                .values()
                .filter(|c| c.running.is_some())
                .count()
    }

    /// Reap the children that exited; kill those past their time (they are
    /// reaped at a later call).
    pub fn reap(&mut self, now: Instant) {
        self.reap
            .retain_mut(|(child, kill_at)| match child.try_wait() {
                Ok(Some(_)) | Err(_) => false,
                Ok(None) => {
                    if now >= *kill_at {
                        let _ = child.kill();
                        // Not again: the next calls only reap.
                        *kill_at = now + Duration::from_secs(3600 * 24 * 365);
                    }
                    true
                }
            });
    }

    /// The director stops: run `notify_down` of the servers still up whose
    /// check has `omega` (when `omega`), wait for them up to [`OMEGA_WAIT`],
    /// kill every exec check still running, and reap what can be.
    pub fn shutdown(&mut self, omega: bool) {
        if omega {
            let mut downs = Vec::new();
            for c in self.checked.values() {
                if c.check.omega && c.verdicts.up && !c.gone {
                    if let Some(cmd) = &c.check.notify_down {
                        downs.push(spawn(cmd, c.addr, &c.service, Some("down")));
                    }
                }
            }
            let now = Instant::now();
            for d in downs {
                match d {
                    Ok(child) => self.reap.push((child, now + OMEGA_WAIT)),
                    Err(e) => tracing::warn!("omega notify_down: {e}"),
                }
            }
        }
        for c in self.checked.values_mut() {
            if let Some(mut r) = c.running.take() {
                let _ = r.child.kill();
                let _ = r.child.wait();
            }
        }
        let end = Instant::now() + OMEGA_WAIT;
        while !self.reap.is_empty() && Instant::now() < end {
            self.reap(Instant::now());
            std::thread::sleep(Duration::from_millis(10));
        }
        for (mut child, _) in self.reap.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn owns(&self, token: u64) -> bool {
        token >= self.base && token < self.base + (1 << 32)
    }

    /// Take the checks of a new snapshot (keeping the state of servers that
    /// stay). `configured` lists every real server with a check, including
    /// those the checks themselves removed from the snapshot.
    pub fn sync(&mut self, configured: Vec<Configured>, now: Instant) {
        // Entries an earlier sync removed but kept for their running probe:
        // if their check comes back now, it starts afresh (the control
        // state treats the server as newly checked too).
        let was_gone: std::collections::HashSet<_> = self
            .checked
            .iter()
            .filter(|(_, c)| c.gone)
            .map(|(rk, _)| *rk)
            .collect();
        for c in self.checked.values_mut() {
            c.gone = true;
        }
        for (i, (rk, service, check)) in configured.into_iter().enumerate() {
            let addr = SocketAddr::new(rk.1, check.port);
            match self.checked.get_mut(&rk) {
                Some(c) => {
                    c.gone = false;
                    if was_gone.contains(&rk) {
                        c.verdicts = Verdicts::starting(check.alpha);
                        c.first = check.alpha;
                    }
                    c.check = check;
                    c.addr = addr;
                    c.service = service;
                }
                None => {
                    // Spread the first probes a little.
                    let next = now + Duration::from_millis(50 * (i as u64 % 20));
                    let check_alpha = check.alpha;
                    let verdicts = Verdicts::starting(check_alpha);
                    self.checked.insert(
                        rk,
                        Checked {
                            check,
                            addr,
                            service,
                            verdicts,
                            first: check_alpha,
                            next,
                            probe: None,
                            running: None,
                            failed: None,
                            gone: false,
                        },
                    );
                }
            }
            if !self.slots.contains(&rk) {
                self.slots.push(rk);
            }
        }
        self.checked.retain(|_, c| !c.gone || c.busy());
    }

    /// Start the probes that are due. Returns when the next one is due.
    pub fn start_due(&mut self, r: &mut Reactor, now: Instant) -> Option<Instant> {
        self.reap(now);
        let mut next: Option<Instant> = None;
        for (slot, rk) in self.slots.iter().enumerate() {
            let Some(c) = self.checked.get_mut(rk) else {
                continue;
            };
            if c.gone {
                continue;
            }
            if !c.busy() && c.next <= now {
                c.next = now + Duration::from_secs(u64::from(c.check.interval.max(1)));
                let token = self.base + slot as u64;
                if let HealthProbe::Exec { cmd } = &c.check.probe {
                    match start_exec(r, cmd, c.addr, &c.service, c.check.timeout, token) {
                        Ok(run) => c.running = Some(run),
                        Err(e) => {
                            tracing::debug!("exec health check of {}: {e}", c.addr);
                            if r.timeout(Duration::from_millis(1), token).is_ok() {
                                c.failed = Some(format!("cannot run the check: {e}"));
                            }
                        }
                    }
                } else {
                    match start_probe(r, c, token, now) {
                        Ok(p) => c.probe = Some(p),
                        Err(e) => {
                            tracing::debug!("health probe of {}: {e}", c.addr);
                        }
                    }
                }
            }
            next = Some(next.map_or(c.next, |n| n.min(c.next)));
        }
        next
    }

    /// Handle a completion of one of our operations.
    pub fn complete(&mut self, r: &mut Reactor, token: u64, result: i32) -> Option<Change> {
        let slot = (token - self.base) as usize;
        let rk = *self.slots.get(slot)?;
        let c = self.checked.get_mut(&rk)?;
        let outcome = if let Some(why) = c.failed.take() {
            Step::Done(false, why)
        } else if let Some(run) = c.running.take() {
            let (ok, why, unreaped) = finish_exec(run, result, c.check.timeout);
            if let Some(child) = unreaped {
                self.reap.push((child, Instant::now()));
            }
            Step::Done(ok, why)
        } else {
            let mut p = c.probe.take()?;
            let outcome = step(r, &c.check, &mut p, token, result);
            if matches!(outcome, Step::Continue) {
                c.probe = Some(p);
            }
            outcome
        };
        let Step::Done(ok, why) = outcome else {
            return None;
        };
        if c.gone {
            self.checked.remove(&rk);
            return None;
        }
        let (rise, fall) = (c.check.rise, c.check.fall);
        let addr = c.addr;
        let on_failure = c.check.on_failure;
        let first = c.first;
        let up = c.verdicts.record_first(ok, rise, fall, first)?;
        c.first = false;
        let notify = if up {
            &c.check.notify_up
        } else {
            &c.check.notify_down
        };
        if let Some(cmd) = notify {
            let word = if up { "up" } else { "down" };
            match spawn(cmd, addr, &c.service, Some(word)) {
                Ok(child) => self.reap.push((child, Instant::now() + NOTIFY_LIMIT)),
                Err(e) => tracing::warn!("notify_{word} of {addr}: {e}"),
            }
        }
        Some(Change {
            real: rk,
            down: if up { None } else { Some(on_failure) },
            reason: if up && first {
                format!("{addr}: first successful probe ({why}), alpha")
            } else if up {
                format!("{addr}: {rise} probe(s) in a row succeeded")
            } else {
                format!("{addr}: {fall} probe(s) in a row failed, last: {why}")
            },
        })
    }

    pub fn is_up(&self, rk: &RealKey) -> Option<bool> {
        self.checked.get(rk).map(|c| c.verdicts.up)
    }
}

/// Every configured real server that has a health check, from the
/// configured (not the effective) state.
pub fn configured_checks(cfg: &crate::config::schema::Config) -> Vec<Configured> {
    let mut out = Vec::new();
    for s in &cfg.services {
        for r in &s.reals {
            if let Ok(Some(h)) = r.health_check(s) {
                out.push((
                    (s.key, r.addr, r.port.or(s.default_real_port())),
                    s.name.clone(),
                    h,
                ));
            }
        }
    }
    out
}

/// The program `cmd` for real server `addr` of `service`: `{addr}` and
/// `{port}` replaced in its items, `XDPVS_REAL_ADDR`, `XDPVS_REAL_PORT`,
/// `XDPVS_SERVICE` (and `XDPVS_STATE` for a notify program) in its
/// environment, stdin/stdout/stderr on /dev/null. Not waited for.
fn spawn(
    cmd: &[String],
    addr: SocketAddr,
    service: &str,
    state: Option<&str>,
) -> std::io::Result<Child> {
    let ip = addr.ip().to_string();
    let port = addr.port().to_string();
    let filled: Vec<String> = cmd
        .iter()
        .map(|s| s.replace("{addr}", &ip).replace("{port}", &port))
        .collect();
    let mut env = vec![
        ("XDPVS_REAL_ADDR", ip.as_str()),
        ("XDPVS_REAL_PORT", port.as_str()),
        ("XDPVS_SERVICE", service),
    ];
    if let Some(s) = state {
        env.push(("XDPVS_STATE", s));
    }
    spawn_program(&filled, &env, Stdio::null())
}

/// Start the program `cmd` (its first item, looked up in `PATH` when it has
/// no `/`, with the others as arguments: no shell), with `env` added to the
/// director's environment, stdin and stdout on /dev/null, stderr to
/// `stderr`. Not waited for. Shared by exec checks, notify programs and
/// the announce commands ([`crate::control::announce`]).
pub(crate) fn spawn_program(
    cmd: &[String],
    env: &[(&str, &str)],
    stderr: Stdio,
) -> std::io::Result<Child> {
    let Some(program) = cmd.first() else {
        return Err(std::io::Error::other("empty command"));
    };
    let mut c = Command::new(program);
    c.args(cmd.iter().skip(1))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    c.spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("{program}: {e}")))
}

/// Poll a started program's exit on the ring (its pidfd, with `limit`
/// linked), completing with `token`. On error the child is killed and
/// reaped.
pub(crate) fn watch_program(
    r: &mut Reactor,
    mut child: Child,
    limit: Duration,
    token: u64,
) -> std::io::Result<Running> {
    let pidfd = match pidfd_open(child.id()) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(e.kind(), format!("pidfd_open: {e}")));
        }
    };
    if let Err(e) = r.poll_readable_for(pidfd.as_raw_fd(), limit, token) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok(Running { child, pidfd })
}

/// Start an exec check: spawn it and poll its pidfd, bounded by `timeout`
/// seconds.
fn start_exec(
    r: &mut Reactor,
    cmd: &[String],
    addr: SocketAddr,
    service: &str,
    timeout: u32,
    token: u64,
) -> std::io::Result<Running> {
    let child = spawn(cmd, addr, service, None)?;
    let limit = Duration::from_secs(u64::from(timeout.max(1)));
    watch_program(r, child, limit, token)
}

/// "3 s", "500 ms".
pub(crate) fn duration_text(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// How a program ended, in words.
fn exit_text(st: std::process::ExitStatus) -> String {
    match (
        st.code(),
        std::os::unix::process::ExitStatusExt::signal(&st),
    ) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => "ended".to_string(),
    }
}

/// The poll of a program completed (`result` >= 0: it exited; else the
/// timeout `limit`): whether it succeeded, why, and the child if it still
/// has to be reaped (killed, not yet gone).
pub(crate) fn finish_program(
    mut run: Running,
    result: i32,
    limit: Duration,
) -> (bool, String, Option<Child>) {
    drop(run.pidfd);
    if result >= 0 {
        match run.child.try_wait() {
            Ok(Some(st)) => return (st.success(), exit_text(st), None),
            Ok(None) => {}
            Err(e) => return (false, format!("wait: {e}"), None),
        }
    }
    let _ = run.child.kill();
    let why = if result == -libc::ECANCELED || result >= 0 {
        format!("timed out after {} (killed)", duration_text(limit))
    } else {
        format!("poll: {}", std::io::Error::from_raw_os_error(-result))
    };
    let child = match run.child.try_wait() {
        Ok(Some(_)) | Err(_) => None,
        Ok(None) => Some(run.child),
    };
    (false, why, child)
}

/// Wait for a program without the ring (the director is stopping), up to
/// `limit` from now; killed and reaped when it overruns.
pub(crate) fn wait_program(mut child: Child, limit: Duration) -> (bool, String) {
    let end = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return (st.success(), exit_text(st)),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return (
                    false,
                    format!("timed out after {} (killed)", duration_text(limit)),
                );
            }
            Err(e) => return (false, format!("wait: {e}")),
        }
    }
}

impl Running {
    /// The child, its poll abandoned.
    pub(crate) fn into_child(self) -> Child {
        self.child
    }
}

/// The poll of an exec check completed (`result` >= 0: it exited; else the
/// timeout): its verdict and reason, and the child if it still has to be
/// reaped (killed, not yet gone).
fn finish_exec(run: Running, result: i32, timeout: u32) -> (bool, String, Option<Child>) {
    finish_program(run, result, Duration::from_secs(u64::from(timeout.max(1))))
}

enum Step {
    Continue,
    Done(bool, String),
}

fn start_probe(
    r: &mut Reactor,
    c: &Checked,
    token: u64,
    now: Instant,
) -> std::io::Result<Box<Probe>> {
    let udp = matches!(c.check.probe, HealthProbe::Udp { .. });
    let fd = probe_socket(c.addr, udp)?;
    let request = match &c.check.probe {
        HealthProbe::Tcp => Vec::new(),
        HealthProbe::Http { path, .. } => format!(
            "GET {path} HTTP/1.0\r\nHost: {}\r\nUser-Agent: xdpvs-health\r\nConnection: close\r\n\r\n",
            c.addr.ip()
        )
        .into_bytes(),
        HealthProbe::Udp { send, .. } => send.clone().into_bytes(),
        HealthProbe::Exec { .. } => return Err(std::io::Error::other("not a network probe")),
    };
    let timeout = Duration::from_secs(u64::from(c.check.timeout.max(1)));
    let p = Box::new(Probe {
        fd,
        addr: SockAddr::new(c.addr),
        phase: Phase::Connect,
        request,
        buf: vec![0u8; 2048],
        got: Vec::new(),
        deadline: now + timeout,
    });
    r.connect(p.fd.as_raw_fd(), &p.addr, timeout, token)?;
    Ok(p)
}

fn errno_text(result: i32) -> String {
    if result == -libc::ECANCELED {
        "timed out".into()
    } else {
        std::io::Error::from_raw_os_error(-result).to_string()
    }
}

fn step(r: &mut Reactor, check: &HealthCheck, p: &mut Probe, token: u64, result: i32) -> Step {
    let left = p.deadline.saturating_duration_since(Instant::now());
    if result < 0 {
        return Step::Done(false, errno_text(result));
    }
    if left.is_zero() {
        return Step::Done(false, "timed out".into());
    }
    match (p.phase, &check.probe) {
        (Phase::Connect, HealthProbe::Tcp) => Step::Done(true, "connected".into()),
        (Phase::Connect, _) => {
            p.phase = Phase::Send;
            if p.request.is_empty() {
                // A UDP probe with nothing to send: an empty datagram.
                p.request.push(b'\n');
            }
            match r.send(p.fd.as_raw_fd(), &p.request, left, token) {
                Ok(()) => Step::Continue,
                Err(e) => Step::Done(false, e.to_string()),
            }
        }
        (Phase::Send, _) => {
            p.phase = Phase::Recv;
            match r.recv(p.fd.as_raw_fd(), &mut p.buf, left, token) {
                Ok(()) => Step::Continue,
                Err(e) => Step::Done(false, e.to_string()),
            }
        }
        (Phase::Recv, probe) => {
            let n = (result as usize).min(p.buf.len());
            p.got.extend_from_slice(p.buf.get(..n).unwrap_or(&[]));
            match probe {
                HealthProbe::Http { expect_status, .. } => {
                    if let Some(line_end) = p.got.windows(2).position(|w| w == b"\r\n") {
                        let line = String::from_utf8_lossy(p.got.get(..line_end).unwrap_or(&[]));
                        let code = line
                            .split_whitespace()
                            .nth(1)
                            .and_then(|c| c.parse::<u16>().ok());
                        return match code {
                            Some(c) if c == *expect_status => Step::Done(true, line.to_string()),
                            _ => Step::Done(
                                false,
                                format!("answered \"{line}\", expected status {expect_status}"),
                            ),
                        };
                    }
                    if n == 0 || p.got.len() > 8192 {
                        return Step::Done(false, "no HTTP status line".into());
                    }
                    match r.recv(p.fd.as_raw_fd(), &mut p.buf, left, token) {
                        Ok(()) => Step::Continue,
                        Err(e) => Step::Done(false, e.to_string()),
                    }
                }
                HealthProbe::Udp { expect, .. } => {
                    let text = String::from_utf8_lossy(&p.got);
                    match expect {
                        Some(e) if !text.contains(e.as_str()) => {
                            Step::Done(false, format!("reply did not contain \"{e}\""))
                        }
                        _ => Step::Done(true, "replied".into()),
                    }
                }
                HealthProbe::Tcp => Step::Done(true, "connected".into()),
                HealthProbe::Exec { .. } => Step::Done(false, "not a network probe".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::{HealthProbe, OnFailure};
    use crate::service::model::ServiceKey;

    #[test]
    fn never_flips_on_one_probe() {
        let mut v = Verdicts::default();
        assert!(v.up);
        assert_eq!(v.record(false, 2, 3), None);
        assert_eq!(v.record(false, 2, 3), None);
        assert_eq!(
            v.record(true, 2, 3),
            None,
            "a success resets the failure run"
        );
        assert_eq!(v.record(false, 2, 3), None);
        assert_eq!(v.record(false, 2, 3), None);
        assert_eq!(v.record(false, 2, 3), Some(false));
        assert_eq!(v.record(false, 2, 3), None);
        assert_eq!(v.record(true, 2, 3), None);
        assert_eq!(v.record(true, 2, 3), Some(true));
        assert_eq!(v.record(true, 2, 3), None);
    }

    fn check(probe: HealthProbe, port: u16) -> HealthCheck {
        HealthCheck {
            probe,
            port,
            interval: 1,
            timeout: 1,
            rise: 1,
            fall: 1,
            on_failure: OnFailure::Quiesce,
            alpha: false,
            omega: false,
            notify_up: None,
            notify_down: None,
        }
    }

    /// Drive probes until each real server has a verdict (bounded).
    fn run(h: &mut Health, r: &mut Reactor, rounds: usize) -> Vec<Change> {
        let mut changes = Vec::new();
        let t0 = Instant::now();
        for _ in 0..rounds {
            h.start_due(r, Instant::now());
            r.timeout(Duration::from_millis(50), 1).unwrap();
            for c in r.wait().unwrap() {
                if h.owns(c.token) {
                    changes.extend(h.complete(r, c.token, c.result));
                }
            }
            if t0.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
        changes
    }

    #[test]
    fn tcp_http_udp_probes_on_loopback() {
        use std::io::{Read, Write};
        // An HTTP server answering 200 on /ok and 503 elsewhere.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let http_port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in l.incoming().take(8) {
                let Ok(mut s) = s else { continue };
                let mut b = [0u8; 512];
                let n = s.read(&mut b).unwrap_or(0);
                let req = String::from_utf8_lossy(&b[..n]).to_string();
                let status = if req.starts_with("GET /ok ") {
                    "200 OK"
                } else {
                    "503 Busy"
                };
                let _ = s.write_all(format!("HTTP/1.0 {status}\r\n\r\n").as_bytes());
            }
        });
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_port = u.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut b = [0u8; 64];
            for _ in 0..4 {
                if let Ok((n, peer)) = u.recv_from(&mut b) {
                    let mut reply = b"pong ".to_vec();
                    reply.extend_from_slice(&b[..n]);
                    let _ = u.send_to(&reply, peer);
                }
            }
        });
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut r = Reactor::new(64).unwrap();
        let mut h = Health::new(1 << 40);
        let http = |path: &str| HealthProbe::Http {
            path: path.into(),
            expect_status: 200,
        };
        let udp = |expect: &str| HealthProbe::Udp {
            send: "ping".into(),
            expect: Some(expect.into()),
        };
        let cfg = vec![
            (rk2("127.0.0.1", 1), check(HealthProbe::Tcp, closed)),
            (rk2("127.0.0.1", 2), check(HealthProbe::Tcp, http_port)),
            (rk2("127.0.0.1", 3), check(http("/ok"), http_port)),
            (rk2("127.0.0.1", 4), check(http("/bad"), http_port)),
            (rk2("127.0.0.1", 5), check(udp("pong"), udp_port)),
            (rk2("127.0.0.1", 6), check(udp("nope"), udp_port)),
        ];
        let cfg = cfg
            .into_iter()
            .map(|(rk, c)| (rk, "t".to_string(), c))
            .collect();
        h.sync(cfg, Instant::now());
        let changes = run(&mut h, &mut r, 40);
        let down: Vec<u16> = changes
            .iter()
            .filter(|c| c.down.is_some())
            .filter_map(|c| c.real.2)
            .collect();
        let mut down = down;
        down.sort();
        assert_eq!(down, vec![1, 4, 6], "{changes:?}");
        for i in [2, 3, 5] {
            assert_eq!(h.is_up(&rk2("127.0.0.1", i)), Some(true));
        }
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    fn exec(script: &str) -> HealthCheck {
        let mut c = check(HealthProbe::Exec { cmd: sh(script) }, 7);
        c.interval = 2;
        c
    }

    /// Drive checks until `until` holds or `limit` passes (bounded).
    fn drive(
        h: &mut Health,
        r: &mut Reactor,
        limit: Duration,
        until: impl Fn(&Health, &[Change]) -> bool,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            h.start_due(r, Instant::now());
            r.timeout(Duration::from_millis(20), 1).unwrap();
            for c in r.wait().unwrap() {
                if h.owns(c.token) {
                    changes.extend(h.complete(r, c.token, c.result));
                }
            }
            if until(h, &changes) {
                break;
            }
        }
        changes
    }

    fn down_tags(changes: &[Change]) -> Vec<u16> {
        let mut v: Vec<u16> = changes
            .iter()
            .filter(|c| c.down.is_some())
            .filter_map(|c| c.real.2)
            .collect();
        v.sort();
        v
    }

    /// Exit status 0 is up, anything else (or a timeout) down; a check
    /// that overruns its timeout is killed and reaped, and the control
    /// loop is not blocked while it runs.
    #[test]
    fn exec_checks_exit_status_and_timeout() {
        let mut r = Reactor::new(64).unwrap();
        let mut h = Health::new(1 << 40);
        let env = "test \"$XDPVS_REAL_ADDR\" = 127.0.0.1 && test \"$XDPVS_REAL_PORT\" = 7 \
                   && test \"$XDPVS_SERVICE\" = web";
        let mut placeholders = exec("");
        placeholders.probe = HealthProbe::Exec {
            cmd: vec![
                "/bin/sh".into(),
                "-c".into(),
                "test \"$1\" = 127.0.0.1:7".into(),
                "sh".into(),
                "{addr}:{port}".into(),
            ],
        };
        let cfg = vec![
            (rk2("127.0.0.1", 1), "web".to_string(), exec("exit 0")),
            (rk2("127.0.0.1", 2), "web".to_string(), exec("exit 1")),
            (rk2("127.0.0.1", 3), "web".to_string(), exec("sleep 5")),
            (rk2("127.0.0.1", 4), "web".to_string(), exec(env)),
            (rk2("127.0.0.1", 5), "other".to_string(), exec(env)),
            (rk2("127.0.0.1", 6), "web".to_string(), placeholders),
            (rk2("127.0.0.1", 8), "web".to_string(), {
                let mut c = exec("exit 0");
                c.probe = HealthProbe::Exec {
                    cmd: vec!["/nonexistent/xdpvs-check".into()],
                };
                c
            }),
        ];
        let t0 = Instant::now();
        h.sync(cfg, t0);
        let changes = drive(&mut h, &mut r, Duration::from_secs(6), |h, ch| {
            down_tags(ch).contains(&3) && h.children() == 0
        });
        assert_eq!(down_tags(&changes), vec![2, 3, 5, 8], "{changes:?}");
        let slow = changes.iter().find(|c| c.real.2 == Some(3)).unwrap();
        assert!(slow.reason.contains("timed out"), "{}", slow.reason);
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "the sleep was killed"
        );
        for i in [1, 4, 6] {
            assert_eq!(h.is_up(&rk2("127.0.0.1", i)), Some(true), "{i}");
        }
        // A program that cannot start is a failed check.
        assert_eq!(h.is_up(&rk2("127.0.0.1", 8)), Some(false));
        let missing = changes.iter().find(|c| c.real.2 == Some(8)).unwrap();
        assert!(missing.reason.contains("cannot run"), "{}", missing.reason);
        assert_eq!(h.children(), 0, "every child reaped");
        h.shutdown(false);
    }

    /// alpha: down until the first success (then up at once, whatever
    /// `rise`); without alpha, up from the start. notify_up / notify_down
    /// run on each change with the state in XDPVS_STATE; omega runs
    /// notify_down at shutdown for the servers still up.
    #[test]
    fn alpha_notify_and_omega() {
        let dir = std::env::temp_dir().join(format!("xdpvs-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        let note = sh(&format!(
            "echo \"$XDPVS_STATE $XDPVS_REAL_ADDR $XDPVS_SERVICE\" >> {}",
            log.display()
        ));
        let flag = dir.join("ok");
        let mut a = exec(&format!("test -e {}", flag.display()));
        a.alpha = true;
        a.rise = 3;
        a.interval = 1;
        a.notify_up = Some(note.clone());
        a.notify_down = Some(note.clone());
        a.omega = true;
        let mut r = Reactor::new(64).unwrap();
        let mut h = Health::new(1 << 40);
        h.sync(vec![(rk2("127.0.0.2", 1), "web".into(), a)], Instant::now());
        assert_eq!(
            h.is_up(&rk2("127.0.0.2", 1)),
            Some(false),
            "alpha starts down"
        );
        // Failing: stays down, no change, no notify.
        let changes = drive(&mut h, &mut r, Duration::from_millis(300), |_, _| false);
        assert!(changes.is_empty(), "{changes:?}");
        std::fs::write(&flag, "").unwrap();
        let changes = drive(&mut h, &mut r, Duration::from_secs(3), |_, ch| {
            !ch.is_empty()
        });
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].down, None, "up at the first success");
        drive(&mut h, &mut r, Duration::from_secs(2), |h, _| {
            h.children() == 0
        });
        h.shutdown(true);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(text, "up 127.0.0.2 web\ndown 127.0.0.2 web\n", "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn rk2(a: &str, tag: u16) -> RealKey {
        (
            ServiceKey::Fwmark(u32::from(tag)),
            a.parse().unwrap(),
            Some(tag),
        )
    }
}
