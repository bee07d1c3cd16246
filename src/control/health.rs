//! Health checks of real servers, run from the control loop's io_uring:
//! `tcp` (connect), `http` (GET, expected status), `udp` (request, expected
//! reply), each bounded by its timeout (linked timeouts). A server changes
//! state only after `fall` failures or `rise` successes in a row, never on
//! one probe.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::config::schema::{HealthCheck, HealthProbe, OnFailure};
use crate::control::state::RealKey;
use crate::control::uring::{probe_socket, Reactor, SockAddr};

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
        Verdicts {
            up: true,
            ok_run: 0,
            fail_run: 0,
        }
    }
}

impl Verdicts {
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

struct Checked {
    check: HealthCheck,
    addr: SocketAddr,
    verdicts: Verdicts,
    next: Instant,
    probe: Option<Box<Probe>>,
    /// No longer configured: dropped once its probe completes.
    gone: bool,
}

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
}

impl Health {
    pub fn new(token_base: u64) -> Health {
        Health {
            base: token_base,
            slots: Vec::new(),
            checked: HashMap::new(),
        }
    }

    pub fn owns(&self, token: u64) -> bool {
        token >= self.base && token < self.base + (1 << 32)
    }

    /// Take the checks of a new snapshot (keeping the state of servers that
    /// stay). `configured` lists every real server with a check, including
    /// those the checks themselves removed from the snapshot.
    pub fn sync(&mut self, configured: Vec<(RealKey, HealthCheck)>, now: Instant) {
        for c in self.checked.values_mut() {
            c.gone = true;
        }
        for (i, (rk, check)) in configured.into_iter().enumerate() {
            let addr = SocketAddr::new(rk.1, check.port);
            match self.checked.get_mut(&rk) {
                Some(c) => {
                    c.gone = false;
                    c.check = check;
                    c.addr = addr;
                }
                None => {
                    // Spread the first probes a little.
                    let next = now + Duration::from_millis(50 * (i as u64 % 20));
                    self.checked.insert(
                        rk,
                        Checked {
                            check,
                            addr,
                            verdicts: Verdicts::default(),
                            next,
                            probe: None,
                            gone: false,
                        },
                    );
                }
            }
            if !self.slots.contains(&rk) {
                self.slots.push(rk);
            }
        }
        self.checked.retain(|_, c| !c.gone || c.probe.is_some());
    }

    /// Start the probes that are due. Returns when the next one is due.
    pub fn start_due(&mut self, r: &mut Reactor, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for (slot, rk) in self.slots.iter().enumerate() {
            let Some(c) = self.checked.get_mut(rk) else {
                continue;
            };
            if c.gone {
                continue;
            }
            if c.probe.is_none() && c.next <= now {
                c.next = now + Duration::from_secs(u64::from(c.check.interval.max(1)));
                match start_probe(r, c, self.base + slot as u64, now) {
                    Ok(p) => c.probe = Some(p),
                    Err(e) => {
                        tracing::debug!("health probe of {}: {e}", c.addr);
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
        let mut p = c.probe.take()?;
        let outcome = step(r, &c.check, &mut p, token, result);
        match outcome {
            Step::Continue => {
                c.probe = Some(p);
                None
            }
            Step::Done(ok, why) => {
                drop(p);
                if c.gone {
                    self.checked.remove(&rk);
                    return None;
                }
                let (rise, fall) = (c.check.rise, c.check.fall);
                let addr = c.addr;
                let on_failure = c.check.on_failure;
                c.verdicts.record(ok, rise, fall).map(|up| Change {
                    real: rk,
                    down: if up { None } else { Some(on_failure) },
                    reason: if up {
                        format!("{addr}: {rise} probe(s) in a row succeeded")
                    } else {
                        format!("{addr}: {fall} probe(s) in a row failed, last: {why}")
                    },
                })
            }
        }
    }

    pub fn is_up(&self, rk: &RealKey) -> Option<bool> {
        self.checked.get(rk).map(|c| c.verdicts.up)
    }
}

/// Every configured real server that has a health check, from the
/// configured (not the effective) state.
pub fn configured_checks(cfg: &crate::config::schema::Config) -> Vec<(RealKey, HealthCheck)> {
    let mut out = Vec::new();
    for s in &cfg.services {
        for r in &s.reals {
            if let Ok(Some(h)) = r.health_check(s) {
                out.push(((s.key, r.addr, r.port.or(s.default_real_port())), h));
            }
        }
    }
    out
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

    fn rk2(a: &str, tag: u16) -> RealKey {
        (
            ServiceKey::Fwmark(u32::from(tag)),
            a.parse().unwrap(),
            Some(tag),
        )
    }
}
