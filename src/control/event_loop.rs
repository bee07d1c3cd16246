//! The io_uring control loop: everything that is not per packet. Signals
//! (signalfd: SIGHUP reloads, SIGTERM/SIGINT stop), config file changes
//! (inotify), the control socket, the metrics endpoint, rate estimation and
//! health-check probes and the announce commands all complete on one ring;
//! nothing here blocks for long, except the stop: the `down` command runs
//! (bounded by its timeout) before the loop returns and XDP is detached.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::control::api::{Request, Response};
use crate::control::health::{configured_checks, Health};
use crate::control::signals::{Signal, Signals};
use crate::control::state::ControlState;
use crate::control::uring::{FileWatch, Reactor};

const T_SIGNAL: u64 = 1;
const T_WATCH: u64 = 2;
const T_CONTROL: u64 = 3;
const T_METRICS: u64 = 4;
const T_TIMER: u64 = 5;
const T_SYNC: u64 = 6;
const T_HEALTH_BASE: u64 = 1 << 40;

/// Why the loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Signal,
    Duration,
    ShardExited,
    /// A successor took over (`xdpvs run --takeover`).
    Handover,
}

pub struct LoopConfig {
    pub control_socket: PathBuf,
    pub metrics: Option<std::net::SocketAddr>,
    pub duration: Option<Duration>,
}

/// Only root and the director's own user may steer it.
fn peer_allowed(s: &UnixStream) -> bool {
    let me = crate::control::uring::euid();
    crate::control::uring::peer_uid(s.as_raw_fd()).is_some_and(|uid| uid == 0 || uid == me)
}

fn serve_control(state: &mut ControlState, mut s: UnixStream) {
    if !peer_allowed(&s) {
        warn!("control socket: peer refused (not root nor the director's user)");
        let _ = s.write_all(b"{\"ok\":false,\"error\":\"permission denied\"}\n");
        return;
    }
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let Ok(reader) = s.try_clone() else { return };
    if BufReader::new(reader)
        .take(1 << 20)
        .read_line(&mut line)
        .is_err()
    {
        return;
    }
    let resp = match serde_json::from_str::<Request>(&line) {
        Ok(req) => state.handle(req),
        Err(e) => Response::err(format!("bad request: {e}")),
    };
    if let Ok(mut out) = serde_json::to_vec(&resp) {
        out.push(b'\n');
        let _ = s.write_all(&out);
    }
}

fn serve_metrics(state: &ControlState, mut s: std::net::TcpStream) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let Ok(reader) = s.try_clone() else { return };
    let mut r = BufReader::new(reader).take(16 << 10);
    if r.read_line(&mut line).is_err() {
        return;
    }
    // Drain the headers (bounded by `take`).
    let mut h = String::new();
    while r.read_line(&mut h).map(|n| n > 2).unwrap_or(false) {
        h.clear();
    }
    let (code, body) = if line.starts_with("GET /metrics") || line.starts_with("GET / ") {
        (
            "200 OK",
            crate::control::metrics::render(&state.status_raw()),
        )
    } else {
        ("404 Not Found", "try /metrics\n".to_string())
    };
    let _ = write!(
        s,
        "HTTP/1.0 {code}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

use std::io::Read as _;

/// Run the control loop until a stop signal, the duration, or a shard exits.
pub fn run(
    state: &mut ControlState,
    signals: &Signals,
    cfg: &LoopConfig,
    shard_finished: &dyn Fn() -> bool,
) -> std::io::Result<Exit> {
    let mut ring = Reactor::new(256)?;
    let _ = std::fs::remove_file(&cfg.control_socket);
    if let Some(dir) = cfg.control_socket.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let control = UnixListener::bind(&cfg.control_socket).map_err(|e| {
        std::io::Error::other(format!(
            "control socket {}: {e}",
            cfg.control_socket.display()
        ))
    })?;
    std::fs::set_permissions(&cfg.control_socket, std::fs::Permissions::from_mode(0o600))?;
    control.set_nonblocking(true)?;
    info!("control socket {}", cfg.control_socket.display());
    let metrics = match cfg.metrics {
        Some(a) => match TcpListener::bind(a) {
            Ok(l) => {
                l.set_nonblocking(true)?;
                info!("metrics on http://{a}/metrics");
                Some(l)
            }
            Err(e) => {
                error!("metrics listener {a}: {e}; metrics disabled");
                None
            }
        },
        None => None,
    };
    let watch = match FileWatch::new(&state.path) {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(
                "cannot watch {} for changes ({e}); reload with SIGHUP or `xdpvs reload`",
                state.path.display()
            );
            None
        }
    };
    // Everything that needed privileges is open now (XDP attached, sockets
    // bound, listeners open): keep only what reloads and probes need.
    match crate::dataplane::privileges::drop_to_minimum() {
        Ok(kept) => info!("capabilities dropped; kept {}", kept.join(", ")),
        Err(e) => warn!("could not drop capabilities: {e}"),
    }
    let mut health = Health::new(T_HEALTH_BASE);
    health.sync(configured_checks(&state.cfg), Instant::now());
    let mut health_gen = state.snaps.load().generation;

    // The loop, then (whatever ended it) the health checks' children: exec
    // checks killed and reaped, and with `omega` the `notify_down` of the
    // servers still up, unless a successor takes over.
    let exit = (|| -> std::io::Result<Exit> {
        ring.poll_readable(signals.fd(), T_SIGNAL)?;
        if let Some(w) = &watch {
            ring.poll_readable(w.fd(), T_WATCH)?;
        }
        ring.poll_readable(control.as_raw_fd(), T_CONTROL)?;
        if let Some(m) = &metrics {
            ring.poll_readable(m.as_raw_fd(), T_METRICS)?;
        }
        if let Some(s) = &state.sync {
            ring.poll_readable(s.fd(), T_SYNC)?;
        }
        // With sync on, the loop turns every 10 ms: the shards' new
        // entries (a new template above all) leave within that.
        let tick = |state: &ControlState| {
            Duration::from_millis(if state.sync.is_some() { 10 } else { 100 })
        };
        ring.timeout(tick(state), T_TIMER)?;

        let started = Instant::now();
        let mut last_rates = Instant::now();
        state.tick_rates(last_rates);
        let mut reload_at: Option<Instant> = None;
        loop {
            let now = Instant::now();
            health.start_due(&mut ring, now);
            state.announce.start_due(&mut ring, now);
            for c in ring.wait()? {
                match c.token {
                    T_SIGNAL => {
                        loop {
                            match signals.read() {
                                Ok(Some(Signal::Stop)) => {
                                    info!("stop requested (signal)");
                                    return Ok(Exit::Signal);
                                }
                                Ok(Some(Signal::Reload)) => {
                                    let _ = state.reload("SIGHUP");
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    error!("signalfd: {e}");
                                    break;
                                }
                            }
                        }
                        ring.poll_readable(signals.fd(), T_SIGNAL)?;
                    }
                    T_WATCH => {
                        if let Some(w) = &watch {
                            if w.changed() {
                                // Debounce: editors write in several steps.
                                reload_at = Some(Instant::now() + Duration::from_millis(200));
                            }
                            ring.poll_readable(w.fd(), T_WATCH)?;
                        }
                    }
                    T_CONTROL => {
                        while let Ok((s, _)) = control.accept() {
                            serve_control(state, s);
                        }
                        if state.handover {
                            return Ok(Exit::Handover);
                        }
                        ring.poll_readable(control.as_raw_fd(), T_CONTROL)?;
                    }
                    T_METRICS => {
                        if let Some(m) = &metrics {
                            while let Ok((s, _)) = m.accept() {
                                serve_metrics(state, s);
                            }
                            ring.poll_readable(m.as_raw_fd(), T_METRICS)?;
                        }
                    }
                    T_TIMER => {
                        ring.timeout(tick(state), T_TIMER)?;
                    }
                    T_SYNC => {
                        if let Some(s) = state.sync.as_mut() {
                            s.on_readable();
                            ring.poll_readable(s.fd(), T_SYNC)?;
                        }
                    }
                    t if state.announce.owns(t) => {
                        state.announce.complete(t, c.result, Instant::now());
                    }
                    t if health.owns(t) => {
                        if let Some(ch) = health.complete(&mut ring, t, c.result) {
                            let state_word = if ch.down.is_some() { "DOWN" } else { "UP" };
                            info!("health: real server {state_word}: {}", ch.reason);
                            if let Err(e) = state.set_health(ch.real, ch.down) {
                                error!("health change not applied: {e}");
                            }
                        }
                    }
                    _ => {}
                }
            }
            let now = Instant::now();
            if let Some(s) = state.sync.as_mut() {
                s.turn(now);
                let ready = s.ready();
                state
                    .announce
                    .set_ready(crate::control::sync::READY_SYNC, ready);
            }
            if reload_at.is_some_and(|t| now >= t) {
                reload_at = None;
                let _ = state.reload("file changed");
            }
            if now.duration_since(last_rates) >= Duration::from_secs(2) {
                last_rates = now;
                state.tick_rates(now);
                state.periodic();
            }
            let gen = state.snaps.load().generation;
            if gen != health_gen {
                health_gen = gen;
                health.sync(configured_checks(&state.cfg), now);
            }
            if let Some(d) = cfg.duration {
                if started.elapsed() >= d {
                    info!("duration reached, stopping");
                    return Ok(Exit::Duration);
                }
            }
            if shard_finished() {
                warn!("a shard thread exited; stopping");
                return Ok(Exit::ShardExited);
            }
        }
    })();
    // Withdraw (`down`, `quorum_down`, then `withdraw_delay`) before the
    // director detaches XDP, unless a successor takes over the VIPs.
    if matches!(exit, Ok(Exit::Handover)) {
        state.announce.abandon();
    } else {
        state.announce.withdraw();
    }
    health.shutdown(!matches!(exit, Ok(Exit::Handover)));
    exit
}
