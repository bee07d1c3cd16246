//! Connection and persistence state across a restart or an upgrade: what a
//! shard exports when the director stops, the state file's text that holds
//! every shard's part ([`encode`]), and its checks when read back
//! ([`decode`]). Pure: the director reads and writes the file
//! (`director::restart`). A file that is corrupt (bad magic, version,
//! checksum or syntax), from the future, or older than the longest timeout
//! is reported and ignored; entries are then checked one by one against the
//! new config by the engine ([`crate::shard::engine::Engine::restore`]),
//! never trusted blindly.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::service::model::Millis;

pub const MAGIC: &str = "xdpvs-state";
pub const VERSION: u32 = 1;
/// A file older than this (31 days, the longest timeout) holds nothing valid.
pub const MAX_AGE_MS: u64 = 31 * 86_400 * 1000;

/// One saved connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedConn {
    /// IP protocol number (6, 17).
    pub proto: u8,
    pub caddr: IpAddr,
    pub cport: u16,
    pub vaddr: IpAddr,
    pub vport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    /// IPVS TCP state number (0 for UDP).
    pub state: u8,
    /// Milliseconds it had left when saved.
    pub left_ms: u64,
}

/// One saved persistence template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedTemplate {
    /// Firewall-mark template: the mark (then proto/vip/vport are unused).
    pub fwmark: Option<u32>,
    pub proto: u8,
    pub client: IpAddr,
    pub vip: Option<IpAddr>,
    pub vport: u16,
    pub raddr: IpAddr,
    pub rport: Option<u16>,
    pub left_ms: u64,
}

/// What one shard exports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardState {
    pub conns: Vec<SavedConn>,
    pub templates: Vec<SavedTemplate>,
}

/// What [`crate::shard::engine::Engine::restore`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreStats {
    pub conns: usize,
    pub templates: usize,
    /// Entries that no longer match the config (service or real server gone).
    pub stale: usize,
    /// Entries that had expired by the time of the restore.
    pub expired: usize,
}

impl RestoreStats {
    pub fn add(&mut self, o: &RestoreStats) {
        self.conns += o.conns;
        self.templates += o.templates;
        self.stale += o.stale;
        self.expired += o.expired;
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    magic: String,
    version: u32,
    /// Wall clock when written (ms since the Unix epoch).
    saved_unix_ms: u64,
    /// FNV-1a 64 of the body (the second line).
    checksum: String,
    conns: usize,
    templates: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: not a state file, or damaged: {reason}")]
    Corrupt { file: String, reason: String },
    #[error("{file}: stale: written {age_s} s ago (more than the longest timeout)")]
    Stale { file: String, age_s: u64 },
    #[error("{file}: written in the future ({ahead_s} s ahead of this clock)")]
    Future { file: String, ahead_s: u64 },
}

fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The state file's text for every shard's state: a header line (magic,
/// version, time, checksum, counts), then the body. `file` names it in errors.
pub fn encode(file: &str, shards: &[ShardState], now_unix_ms: u64) -> Result<String, StateError> {
    let file = file.to_string();
    let all = ShardState {
        conns: shards
            .iter()
            .flat_map(|s| s.conns.iter().cloned())
            .collect(),
        templates: shards
            .iter()
            .flat_map(|s| s.templates.iter().cloned())
            .collect(),
    };
    let body = serde_json::to_string(&all).map_err(|e| StateError::Corrupt {
        file: file.clone(),
        reason: e.to_string(),
    })?;
    let header = Header {
        magic: MAGIC.into(),
        version: VERSION,
        saved_unix_ms: now_unix_ms,
        checksum: format!("{:016x}", fnv1a(body.as_bytes())),
        conns: all.conns.len(),
        templates: all.templates.len(),
    };
    let head = serde_json::to_string(&header).map_err(|e| StateError::Corrupt {
        file: file.clone(),
        reason: e.to_string(),
    })?;
    Ok(format!("{head}\n{body}\n"))
}

/// Check and parse a state file's text (`file` names it in errors);
/// entries' `left_ms` are reduced by the time elapsed since it was written
/// (those at 0 are kept, for the engine to count as expired).
pub fn decode(file: &str, text: &str, now_unix_ms: u64) -> Result<ShardState, StateError> {
    let file = file.to_string();
    let corrupt = |reason: String| StateError::Corrupt {
        file: file.clone(),
        reason,
    };
    let (head, body) = text
        .split_once('\n')
        .ok_or_else(|| corrupt("no header line".into()))?;
    let body = body.strip_suffix('\n').unwrap_or(body);
    let h: Header = serde_json::from_str(head).map_err(|e| corrupt(format!("header: {e}")))?;
    if h.magic != MAGIC {
        return Err(corrupt(format!("magic {:?}", h.magic)));
    }
    if h.version != VERSION {
        return Err(corrupt(format!(
            "version {} (this xdpvs reads {VERSION})",
            h.version
        )));
    }
    let sum = format!("{:016x}", fnv1a(body.as_bytes()));
    if sum != h.checksum {
        return Err(corrupt(format!(
            "checksum {sum} does not match the header's {} (truncated or edited)",
            h.checksum
        )));
    }
    if h.saved_unix_ms > now_unix_ms + 60_000 {
        return Err(StateError::Future {
            file,
            ahead_s: (h.saved_unix_ms - now_unix_ms) / 1000,
        });
    }
    let age = now_unix_ms.saturating_sub(h.saved_unix_ms);
    if age > MAX_AGE_MS {
        return Err(StateError::Stale {
            file,
            age_s: age / 1000,
        });
    }
    let mut st: ShardState =
        serde_json::from_str(body).map_err(|e| corrupt(format!("body: {e}")))?;
    if st.conns.len() != h.conns || st.templates.len() != h.templates {
        return Err(corrupt("entry counts differ from the header".into()));
    }
    for c in &mut st.conns {
        c.left_ms = c.left_ms.saturating_sub(age);
    }
    for t in &mut st.templates {
        t.left_ms = t.left_ms.saturating_sub(age);
    }
    Ok(st)
}

/// Time left of an entry expiring at `expires` (monotonic ms) at `now`.
pub fn left(expires: Millis, now: Millis) -> u64 {
    expires.saturating_sub(now)
}
