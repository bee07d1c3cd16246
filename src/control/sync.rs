//! Connection sync between directors, the control loop's side: the IPVS
//! sync protocol v1 on a UDP socket (multicast 224.0.0.81:8848 by default,
//! or unicast peers), the shards' bounded queues in both directions, the
//! full resync a joining director asks for, and the authenticated envelope.
//!
//! - Shards queue what changed ([`crate::shard::sync::SyncItem`]); this
//!   loop drains their queue every 10 ms, packs the items into v1
//!   datagrams and sends them (a new template therefore leaves within
//!   10 ms, where IPVS buffers up to 2 s).
//! - A received datagram is checked (interface: the socket is bound to it;
//!   source, when `peers` is given; envelope and sequence with `auth_key`;
//!   syncid; v1 framing) and each entry goes to the shard that owns its
//!   client (the data path's owner hash) through that shard's bounded
//!   queue. Anything refused is counted by reason, never a panic.
//! - Full resync (xdpvs extension): a director that starts asks its peers
//!   for their tables ([`ResyncRequest`]); a peer exports every shard's
//!   entries and sends them to the asker as ordinary v1 datagrams, then a
//!   [`ResyncDone`]. Until one answer is complete, or `resync_wait` has
//!   passed, [`SyncDaemon::ready`] is false (the announcer waits for it).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::schema::{SyncConfig, SyncMode};
use crate::service::model::FwdMethod;
use crate::service::snapshot::Snapshot;
use crate::shard::engine::owner_shard;
use crate::shard::restart::{SavedConn, SavedTemplate};
use crate::shard::sync::{SyncItem, SyncSettings};
use crate::wire::sync::{
    flags, fwmark_vaddr, ResyncDone, ResyncRequest, SyncEntry, SyncError, SyncMessage, SyncWriter,
    DEFAULT_MAX_LEN_V4,
};
use crate::wire::sync_auth::{self, ReplayGuard};

/// The announcer's readiness condition of a joining director's resync.
pub const READY_SYNC: &str = "sync";

/// Messages from the control loop to a shard.
#[derive(Debug)]
pub enum ToShard {
    Settings(SyncSettings),
    Apply(Vec<SyncItem>),
    /// Export everything for resync request `id`.
    Export(u64),
}

/// Messages from a shard to the control loop.
#[derive(Debug)]
pub enum FromShard {
    Items(Vec<SyncItem>),
    Export { id: u64, items: Vec<SyncItem> },
}

/// A shard's ends of its sync queues.
pub struct ShardSyncLink {
    pub from_control: Receiver<ToShard>,
    pub to_control: Sender<FromShard>,
}

/// The control loop's ends of every shard's queues.
pub struct ControlSyncLinks {
    to_shards: Vec<Sender<ToShard>>,
    from_shards: Receiver<FromShard>,
}

/// Messages a shard's inbox holds (each a batch of entries).
const TO_SHARD_CAPACITY: usize = 1024;
/// Batches all shards' outboxes hold together.
const FROM_SHARDS_CAPACITY: usize = 4096;
/// Datagrams sent per loop turn at most (paces a resync answer).
const SEND_PER_TURN: usize = 64;
/// Datagrams read per readiness at most.
const RECV_PER_TURN: usize = 256;
/// How often a joining director repeats its request.
const RESYNC_REPEAT: Duration = Duration::from_secs(1);
/// How long an export waits for every shard.
const EXPORT_WAIT: Duration = Duration::from_secs(2);

/// The queues between `shards` shards and the control loop.
pub fn links(shards: usize) -> (ControlSyncLinks, Vec<ShardSyncLink>) {
    let (to_control, from_shards) = bounded(FROM_SHARDS_CAPACITY);
    let mut to_shards = Vec::with_capacity(shards);
    let mut sides = Vec::with_capacity(shards);
    for _ in 0..shards {
        let (tx, rx) = bounded(TO_SHARD_CAPACITY);
        to_shards.push(tx);
        sides.push(ShardSyncLink {
            from_control: rx,
            to_control: to_control.clone(),
        });
    }
    (
        ControlSyncLinks {
            to_shards,
            from_shards,
        },
        sides,
    )
}

/// What a shard's sync settings are under `cfg` (none: sync off).
pub fn shard_settings(cfg: Option<&SyncConfig>) -> SyncSettings {
    match cfg {
        Some(c) => SyncSettings {
            send: c.mode.sends(),
            period: c.sync_period,
        },
        None => SyncSettings {
            send: false,
            period: 0,
        },
    }
}

/// Sync counters and state, as `xdpvs stats`, `list --sync` and the
/// metrics show them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub mode: String,
    pub interface: String,
    pub destinations: Vec<String>,
    pub syncid: u8,
    pub authenticated: bool,
    /// "waiting", "synced" (from a peer), "alone" (no peer answered in
    /// `resync_wait`), "off" (no resync asked: master, or resync_wait 0).
    pub resync: String,
    pub sent_datagrams: u64,
    pub sent_entries: u64,
    pub send_errors: u64,
    pub received_datagrams: u64,
    pub received_entries: u64,
    /// Entries applied by the shards (connections, templates).
    pub applied_conns: u64,
    pub applied_templates: u64,
    /// Entries or datagrams refused, by reason.
    pub ignored: Vec<(String, u64)>,
    /// Entries shards could not queue (outbox full).
    pub queue_dropped: u64,
    pub resync_requests_sent: u64,
    pub resync_requests_served: u64,
    pub resyncs_completed: u64,
    pub resync_entries_received: u64,
}

impl SyncStatus {
    /// The text `xdpvs list --sync` and `xdpvs stats` print.
    pub fn render(&self) -> String {
        let ignored: Vec<String> = self
            .ignored
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        format!(
            "sync: {} on {} to {} syncid {}{}; resync {}\n\
             sync sent: {} datagrams, {} entries, {} errors; received: {} datagrams, {} entries\n\
             sync applied: {} connections, {} templates; ignored: {}; queue full: {}\n\
             sync resync: {} asked, {} served, {} completed, {} entries received\n",
            self.mode,
            self.interface,
            self.destinations.join(","),
            self.syncid,
            if self.authenticated {
                ", authenticated"
            } else {
                ""
            },
            self.resync,
            self.sent_datagrams,
            self.sent_entries,
            self.send_errors,
            self.received_datagrams,
            self.received_entries,
            self.applied_conns,
            self.applied_templates,
            if ignored.is_empty() {
                "none".to_string()
            } else {
                ignored.join(" ")
            },
            self.queue_dropped,
            self.resync_requests_sent,
            self.resync_requests_served,
            self.resyncs_completed,
            self.resync_entries_received,
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resync {
    Off,
    Waiting {
        nonce: u64,
        since: Instant,
        asked: Instant,
    },
    Synced,
    Alone,
}

struct Export {
    id: u64,
    to: SocketAddr,
    nonce: u64,
    started: Instant,
    waiting: usize,
    items: Vec<SyncItem>,
}

/// The sync daemon of one director (owned by the control state, driven
/// by the control loop).
pub struct SyncDaemon {
    cfg: SyncConfig,
    key: Option<Vec<u8>>,
    sock: UdpSocket,
    dests: Vec<SocketAddr>,
    links: ControlSyncLinks,
    snaps: Arc<ArcSwap<Snapshot>>,
    seq: u64,
    replay: ReplayGuard,
    resync: Resync,
    exports: VecDeque<Export>,
    next_export: u64,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    counters: SyncStatus,
    ignored: std::collections::BTreeMap<&'static str, u64>,
    buf: Vec<u8>,
}

/// Read the shared key of the envelope (at least 16 bytes; a trailing
/// newline is not part of it).
pub fn read_key(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let mut k = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    while k.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        k.pop();
    }
    if k.len() < 16 {
        return Err(format!(
            "{}: the key is {} bytes; at least 16 are needed (e.g. head -c 32 /dev/urandom | base64)",
            path.display(),
            k.len()
        ));
    }
    Ok(k)
}

fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn ifindex(name: &str) -> Result<u32, String> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("sync interface {name}: no such interface"))
}

/// The socket: bound to `port` on the interface only (SO_BINDTODEVICE),
/// in the group when multicast, TTL and no loop-back of our own.
fn open_socket(cfg: &SyncConfig) -> Result<UdpSocket, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let v6 = cfg.destinations().first().is_some_and(IpAddr::is_ipv6);
    let ctx = |what: &str, e: std::io::Error| format!("sync socket ({what}): {e}");
    let s = Socket::new(
        if v6 { Domain::IPV6 } else { Domain::IPV4 },
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .map_err(|e| ctx("socket", e))?;
    s.set_reuse_address(true)
        .map_err(|e| ctx("SO_REUSEADDR", e))?;
    s.bind_device(Some(cfg.interface.as_bytes()))
        .map_err(|e| ctx(&format!("bind to device {}", cfg.interface), e))?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    let idx = ifindex(&cfg.interface)?;
    let any: SocketAddr = if v6 {
        (Ipv6Addr::UNSPECIFIED, cfg.port).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, cfg.port).into()
    };
    s.bind(&any.into())
        .map_err(|e| ctx(&format!("bind {any}"), e))?;
    if cfg.peers.is_empty() {
        match cfg.destinations().first() {
            Some(IpAddr::V4(g)) => {
                s.join_multicast_v4_n(g, &socket2::InterfaceIndexOrAddress::Index(idx))
                    .map_err(|e| ctx(&format!("join {g}"), e))?;
                // Sent from the bound device (SO_BINDTODEVICE picks the
                // multicast output interface).
                s.set_multicast_ttl_v4(u32::from(cfg.ttl))
                    .map_err(|e| ctx("IP_MULTICAST_TTL", e))?;
                s.set_multicast_loop_v4(false)
                    .map_err(|e| ctx("IP_MULTICAST_LOOP", e))?;
            }
            Some(IpAddr::V6(g)) => {
                s.join_multicast_v6(g, idx)
                    .map_err(|e| ctx(&format!("join {g}"), e))?;
                s.set_multicast_if_v6(idx)
                    .map_err(|e| ctx("IPV6_MULTICAST_IF", e))?;
                s.set_multicast_hops_v6(u32::from(cfg.ttl))
                    .map_err(|e| ctx("IPV6_MULTICAST_HOPS", e))?;
                s.set_multicast_loop_v6(false)
                    .map_err(|e| ctx("IPV6_MULTICAST_LOOP", e))?;
            }
            None => {}
        }
    }
    s.set_nonblocking(true).map_err(|e| ctx("nonblocking", e))?;
    Ok(s.into())
}

/// A shard item as an IPVS v1 entry (`None`: not expressible, e.g. a
/// tunnel connection whose real server is of the other family).
pub fn to_entry(item: &SyncItem) -> Option<SyncEntry> {
    let fwd_flag = |f: FwdMethod| match f {
        FwdMethod::Dr => flags::DROUTE,
        FwdMethod::Nat => flags::MASQ,
        FwdMethod::Ipip | FwdMethod::Gue => flags::TUNNEL,
    };
    let secs = |ms: u64| u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX);
    let e = match item {
        SyncItem::Conn { conn, fwd, fwmark } => {
            let active = conn.proto == 6 && (conn.state == 1 || (2..=3).contains(&conn.state));
            SyncEntry {
                flags: fwd_flag(*fwd) | if active { 0 } else { flags::INACTIVE },
                proto: conn.proto,
                state: u16::from(conn.state),
                cport: conn.cport,
                vport: conn.vport,
                dport: conn.rport,
                fwmark: *fwmark,
                timeout_s: secs(conn.left_ms),
                caddr: conn.caddr,
                vaddr: conn.vaddr,
                daddr: conn.raddr,
            }
        }
        SyncItem::Template { tpl, fwd } => {
            let (proto, vaddr, fwmark) = match (tpl.fwmark, tpl.vip) {
                (Some(m), _) => (0, fwmark_vaddr(m, tpl.client.is_ipv6()), m),
                (None, Some(v)) => (tpl.proto, v, 0),
                (None, None) => return None,
            };
            SyncEntry {
                flags: flags::TEMPLATE | fwd_flag(*fwd),
                proto,
                state: 0,
                cport: 0,
                vport: tpl.vport,
                dport: tpl.rport.unwrap_or(0),
                fwmark,
                timeout_s: secs(tpl.left_ms),
                caddr: tpl.client,
                vaddr,
                daddr: tpl.raddr,
            }
        }
    };
    let fam = e.caddr.is_ipv6();
    (e.vaddr.is_ipv6() == fam && e.daddr.is_ipv6() == fam).then_some(e)
}

/// An IPVS v1 entry as a shard item.
pub fn from_entry(e: &SyncEntry) -> SyncItem {
    let fwd = match e.flags & flags::FWD_MASK {
        flags::MASQ => FwdMethod::Nat,
        flags::TUNNEL => FwdMethod::Ipip,
        _ => FwdMethod::Dr,
    };
    let left_ms = u64::from(e.timeout_s) * 1000;
    if e.flags & flags::TEMPLATE != 0 {
        let rport = (e.dport != 0).then_some(e.dport);
        let tpl = if e.proto == 0 {
            SavedTemplate {
                fwmark: Some(e.fwmark),
                proto: 0,
                client: e.caddr,
                vip: None,
                vport: 0,
                raddr: e.daddr,
                rport,
                left_ms,
            }
        } else {
            SavedTemplate {
                fwmark: None,
                proto: e.proto,
                client: e.caddr,
                vip: Some(e.vaddr),
                vport: e.vport,
                raddr: e.daddr,
                rport,
                left_ms,
            }
        };
        return SyncItem::Template { tpl, fwd };
    }
    SyncItem::Conn {
        conn: SavedConn {
            proto: e.proto,
            caddr: e.caddr,
            cport: e.cport,
            vaddr: e.vaddr,
            vport: e.vport,
            raddr: e.daddr,
            rport: e.dport,
            state: if e.proto == 6 {
                u8::try_from(e.state).unwrap_or(0)
            } else {
                0
            },
            left_ms,
        },
        fwd,
        fwmark: e.fwmark,
    }
}

/// The client an item belongs to (its owner shard's key).
fn client_of(item: &SyncItem) -> IpAddr {
    match item {
        SyncItem::Conn { conn, .. } => conn.caddr,
        SyncItem::Template { tpl, .. } => tpl.client,
    }
}

impl SyncDaemon {
    /// Open the socket and read the key; ask the peers for a full resync
    /// when this director applies their entries.
    pub fn new(
        cfg: &SyncConfig,
        links: ControlSyncLinks,
        snaps: Arc<ArcSwap<Snapshot>>,
    ) -> Result<SyncDaemon, String> {
        let key = match &cfg.auth_key {
            Some(p) => Some(read_key(p).map_err(|e| format!("sync.auth_key: {e}"))?),
            None => None,
        };
        let sock = open_socket(cfg)?;
        let mut d = SyncDaemon {
            cfg: cfg.clone(),
            key,
            sock,
            dests: Vec::new(),
            links,
            snaps,
            seq: sync_auth::initial_seq(unix_micros()),
            replay: ReplayGuard::default(),
            resync: Resync::Off,
            exports: VecDeque::new(),
            next_export: 1,
            out: VecDeque::new(),
            counters: SyncStatus::default(),
            ignored: Default::default(),
            buf: vec![0u8; 65_536],
        };
        d.configure(cfg);
        if cfg.mode.receives() && cfg.resync_wait > 0 {
            let now = Instant::now();
            let nonce = unix_micros() ^ (u64::from(std::process::id()) << 40);
            d.resync = Resync::Waiting {
                nonce,
                since: now,
                asked: now - RESYNC_REPEAT,
            };
            info!(
                "sync: asking peers for their tables (announced after their answer, or in {} s)",
                cfg.resync_wait
            );
        }
        info!(
            "sync: {} on {}, {} port {}, syncid {}{}",
            cfg.mode.name(),
            cfg.interface,
            d.dests
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(","),
            cfg.port,
            cfg.syncid,
            if d.key.is_some() {
                ", authenticated"
            } else {
                " (plain IPVS v1: keep it on a dedicated link)"
            }
        );
        Ok(d)
    }

    fn configure(&mut self, cfg: &SyncConfig) {
        self.dests = cfg
            .destinations()
            .into_iter()
            .map(|a| SocketAddr::new(a, cfg.port))
            .collect();
        let s = shard_settings(Some(cfg));
        for tx in &self.links.to_shards {
            let _ = tx.try_send(ToShard::Settings(s));
        }
    }

    /// Whether `new` can be applied without a new socket (mode, period,
    /// resync wait, key); otherwise the caller must restart the director.
    pub fn reconfigure(&mut self, new: &SyncConfig) -> Result<(), String> {
        let same_socket = new.interface == self.cfg.interface
            && new.port == self.cfg.port
            && new.destinations() == self.cfg.destinations()
            && new.ttl == self.cfg.ttl;
        if !same_socket {
            return Err(
                "sync interface, group, peers, port or ttl changed: restart the director to apply"
                    .into(),
            );
        }
        self.key = match &new.auth_key {
            Some(p) => Some(read_key(p).map_err(|e| format!("sync.auth_key: {e}"))?),
            None => None,
        };
        if new.mode != self.cfg.mode {
            info!("sync: mode {} -> {}", self.cfg.mode.name(), new.mode.name());
        }
        self.cfg = new.clone();
        self.configure(new);
        Ok(())
    }

    /// Stop sending (the shards stop queueing).
    pub fn disable(&mut self) {
        for tx in &self.links.to_shards {
            let _ = tx.try_send(ToShard::Settings(shard_settings(None)));
        }
    }

    pub fn fd(&self) -> i32 {
        self.sock.as_raw_fd()
    }

    pub fn mode(&self) -> SyncMode {
        self.cfg.mode
    }

    /// May the director be announced (resync done, given up, or not asked)?
    pub fn ready(&self) -> bool {
        !matches!(self.resync, Resync::Waiting { .. })
    }

    fn ignore(&mut self, reason: &'static str) {
        *self.ignored.entry(reason).or_insert(0) += 1;
    }

    /// Read what arrived (call when the socket is readable).
    pub fn on_readable(&mut self) {
        for _ in 0..RECV_PER_TURN {
            let mut buf = std::mem::take(&mut self.buf);
            let r = self.sock.recv_from(&mut buf);
            match r {
                Ok((n, from)) => {
                    if let Some(d) = buf.get(..n) {
                        self.datagram(d, from);
                    }
                    self.buf = buf;
                }
                Err(_) => {
                    self.buf = buf;
                    break;
                }
            }
        }
    }

    /// One received datagram.
    pub fn datagram(&mut self, d: &[u8], from: SocketAddr) {
        self.counters.received_datagrams += 1;
        if !self.cfg.peers.is_empty() && !self.cfg.peers.contains(&from.ip()) {
            self.ignore("foreign_peer");
            return;
        }
        let payload: Vec<u8> = match &self.key {
            Some(k) => match sync_auth::open(k, d) {
                Ok((seq, p)) => {
                    if let Err(e) = self.replay.check(from.ip(), seq) {
                        self.ignore(e.reason());
                        return;
                    }
                    p.to_vec()
                }
                Err(e) => {
                    self.ignore(e.reason());
                    return;
                }
            },
            None => {
                if sync_auth::is_envelope(d) {
                    self.ignore("unexpected_envelope");
                    return;
                }
                d.to_vec()
            }
        };
        if let Ok(r) = ResyncRequest::parse(&payload) {
            if !self.syncid_ok(r.syncid) {
                self.ignore("foreign_syncid");
                return;
            }
            self.start_export(SocketAddr::new(from.ip(), self.cfg.port), r.nonce);
            return;
        }
        if let Ok(done) = ResyncDone::parse(&payload) {
            if let Resync::Waiting { nonce, since, .. } = self.resync {
                if done.nonce == nonce && self.syncid_ok(done.syncid) {
                    self.resync = Resync::Synced;
                    self.counters.resyncs_completed += 1;
                    info!(
                        "sync: resync from {} complete in {} ms ({} entries)",
                        from.ip(),
                        since.elapsed().as_millis(),
                        self.counters.resync_entries_received
                    );
                }
            }
            return;
        }
        let msg = match SyncMessage::new_checked(&payload[..]) {
            Ok(m) => m,
            Err(e) => {
                self.ignore(e.reason());
                return;
            }
        };
        if !self.syncid_ok(msg.syncid()) {
            self.ignore("foreign_syncid");
            return;
        }
        if !self.cfg.mode.receives() {
            self.ignore("not_backup");
            return;
        }
        let snap = self.snaps.load();
        let shards = self.links.to_shards.len().max(1) as u16;
        let mut per: Vec<Vec<SyncItem>> = vec![Vec::new(); shards as usize];
        for e in msg.entries() {
            match e {
                Ok(e) => {
                    self.counters.received_entries += 1;
                    if matches!(self.resync, Resync::Waiting { .. }) {
                        self.counters.resync_entries_received += 1;
                    }
                    let item = from_entry(&e);
                    let s = owner_shard(client_of(&item), &snap, shards);
                    if let Some(v) = per.get_mut(usize::from(s)) {
                        v.push(item);
                    }
                }
                Err(e) => {
                    let r: &'static str = SyncError::reason(&e);
                    self.ignore(r);
                    break;
                }
            }
        }
        for (i, items) in per.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            let n = items.len() as u64;
            if let Some(tx) = self.links.to_shards.get(i) {
                if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                    tx.try_send(ToShard::Apply(items))
                {
                    *self.ignored.entry("shard_queue_full").or_insert(0) += n;
                }
            }
        }
    }

    fn syncid_ok(&self, id: u8) -> bool {
        self.cfg.syncid == 0 || id == self.cfg.syncid
    }

    fn start_export(&mut self, to: SocketAddr, nonce: u64) {
        if self.exports.iter().any(|x| x.to == to && x.nonce == nonce) {
            return;
        }
        let id = self.next_export;
        self.next_export += 1;
        let mut waiting = 0;
        for tx in &self.links.to_shards {
            if tx.try_send(ToShard::Export(id)).is_ok() {
                waiting += 1;
            }
        }
        info!("sync: {} asks for a full resync", to.ip());
        self.counters.resync_requests_served += 1;
        self.exports.push_back(Export {
            id,
            to,
            nonce,
            started: Instant::now(),
            waiting,
            items: Vec::new(),
        });
    }

    fn seal(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        match &self.key {
            Some(k) => {
                self.seq = sync_auth::next_seq(self.seq, unix_micros());
                let mut out = Vec::with_capacity(payload.len() + 48);
                sync_auth::seal(k, self.seq, payload, &mut out).ok()?;
                Some(out)
            }
            None => Some(payload.to_vec()),
        }
    }

    fn pack(&mut self, items: &[SyncItem], to: &[SocketAddr]) {
        let mut w = SyncWriter::new(DEFAULT_MAX_LEN_V4);
        for it in items {
            match to_entry(it) {
                Some(e) => {
                    if w.push(&e).is_ok() {
                        self.counters.sent_entries += to.len() as u64;
                    } else {
                        self.ignore("unsendable");
                    }
                }
                None => self.ignore("unsendable"),
            }
        }
        if w.is_empty() {
            return;
        }
        for m in w.finish(self.cfg.syncid) {
            if let Some(d) = self.seal(&m) {
                for &a in to {
                    self.out.push_back((a, d.clone()));
                }
            }
        }
    }

    /// Every loop turn (10 ms): collect the shards' items and exports, send
    /// (paced), repeat or give up a resync request.
    pub fn turn(&mut self, now: Instant) {
        let mut items = Vec::new();
        let mut done_exports = Vec::new();
        while let Ok(m) = self.links.from_shards.try_recv() {
            match m {
                FromShard::Items(mut v) => items.append(&mut v),
                FromShard::Export { id, items: mut v } => {
                    if let Some(x) = self.exports.iter_mut().find(|x| x.id == id) {
                        x.items.append(&mut v);
                        x.waiting = x.waiting.saturating_sub(1);
                    }
                }
            }
        }
        if !items.is_empty() && self.cfg.mode.sends() {
            let to = self.dests.clone();
            self.pack(&items, &to);
        }
        while let Some(x) = self.exports.front() {
            if x.waiting > 0 && now.duration_since(x.started) < EXPORT_WAIT {
                break;
            }
            if let Some(x) = self.exports.pop_front() {
                done_exports.push(x);
            }
        }
        for x in done_exports {
            // Templates first, so connections attach to them.
            let mut v = x.items;
            v.sort_by_key(|i| matches!(i, SyncItem::Conn { .. }));
            info!("sync: sending {} entries to {}", v.len(), x.to.ip());
            self.pack(&v, &[x.to]);
            let done = ResyncDone {
                syncid: self.cfg.syncid,
                nonce: x.nonce,
            }
            .emit();
            if let Some(d) = self.seal(&done) {
                self.out.push_back((x.to, d));
            }
        }
        if let Resync::Waiting {
            nonce,
            since,
            asked,
        } = self.resync
        {
            if now.duration_since(since) >= Duration::from_secs(u64::from(self.cfg.resync_wait)) {
                self.resync = Resync::Alone;
                warn!(
                    "sync: no peer answered the resync request in {} s; going on with an empty table",
                    self.cfg.resync_wait
                );
            } else if now.duration_since(asked) >= RESYNC_REPEAT {
                self.resync = Resync::Waiting {
                    nonce,
                    since,
                    asked: now,
                };
                let req = ResyncRequest {
                    syncid: self.cfg.syncid,
                    nonce,
                }
                .emit();
                if let Some(d) = self.seal(&req) {
                    for a in self.dests.clone() {
                        self.out.push_back((a, d.clone()));
                    }
                    self.counters.resync_requests_sent += 1;
                }
            }
        }
        for _ in 0..SEND_PER_TURN {
            let Some((a, d)) = self.out.pop_front() else {
                break;
            };
            match self.sock.send_to(&d, a) {
                Ok(_) => self.counters.sent_datagrams += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.out.push_front((a, d));
                    break;
                }
                Err(_) => self.counters.send_errors += 1,
            }
        }
    }

    /// The daemon's part of the status (the shards' counters are added by
    /// the caller).
    pub fn status(&self) -> SyncStatus {
        let mut s = self.counters.clone();
        s.mode = self.cfg.mode.name().to_string();
        s.interface = self.cfg.interface.clone();
        s.destinations = self.dests.iter().map(|a| a.to_string()).collect();
        s.syncid = self.cfg.syncid;
        s.authenticated = self.key.is_some();
        s.resync = match self.resync {
            Resync::Off => "off",
            Resync::Waiting { .. } => "waiting",
            Resync::Synced => "synced",
            Resync::Alone => "alone",
        }
        .to_string();
        s.ignored = self
            .ignored
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Items survive the trip through IPVS v1 entries: connections of
    /// every kind, address and fwmark templates, both families.
    #[test]
    fn items_round_trip_through_ipvs_entries() {
        let conn = |c: &str, v: &str, r: &str, proto, state, fwd| SyncItem::Conn {
            conn: SavedConn {
                proto,
                caddr: ip(c),
                cport: 40000,
                vaddr: ip(v),
                vport: 80,
                raddr: ip(r),
                rport: 8080,
                state,
                left_ms: 900_000,
            },
            fwd,
            fwmark: 0,
        };
        let items = vec![
            conn(
                "198.18.10.1",
                "198.18.0.10",
                "198.18.1.1",
                6,
                1,
                FwdMethod::Dr,
            ),
            conn(
                "198.18.10.1",
                "198.18.0.10",
                "198.18.1.1",
                17,
                0,
                FwdMethod::Nat,
            ),
            conn(
                "2001:db8::1",
                "2001:db8::10",
                "2001:db8:1::1",
                6,
                4,
                FwdMethod::Ipip,
            ),
            SyncItem::Template {
                tpl: SavedTemplate {
                    fwmark: None,
                    proto: 6,
                    client: ip("198.18.10.0"),
                    vip: Some(ip("198.18.0.10")),
                    vport: 80,
                    raddr: ip("198.18.1.2"),
                    rport: Some(80),
                    left_ms: 300_000,
                },
                fwd: FwdMethod::Dr,
            },
            SyncItem::Template {
                tpl: SavedTemplate {
                    fwmark: Some(7),
                    proto: 0,
                    client: ip("2001:db8:5::"),
                    vip: None,
                    vport: 0,
                    raddr: ip("2001:db8:1::2"),
                    rport: None,
                    left_ms: 300_000,
                },
                fwd: FwdMethod::Dr,
            },
        ];
        for it in &items {
            let e = to_entry(it).expect("expressible");
            assert_eq!(&from_entry(&e), it, "{e:?}");
        }
        let t = to_entry(&items[4]).unwrap();
        assert_eq!((t.proto, t.fwmark, t.cport), (0, 7, 0));
        assert!(t.flags & flags::TEMPLATE != 0);
        // A tunnel across families cannot be one v1 entry.
        let mixed = conn(
            "198.18.10.1",
            "198.18.0.10",
            "2001:db8:1::1",
            6,
            1,
            FwdMethod::Ipip,
        );
        assert_eq!(to_entry(&mixed), None);
    }
}
