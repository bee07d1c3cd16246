//! Connection and persistence state across a restart or an upgrade: what a
//! shard exports when the director stops, the state file that holds every
//! shard's part, and its checks when read back. A file that is corrupt
//! (bad magic, version, checksum or syntax), from the future, or older
//! than the longest timeout is reported and ignored; entries are then
//! checked one by one against the new config by the engine
//! ([`crate::shard::engine::Engine::restore`]), never trusted blindly.

use std::net::IpAddr;
use std::path::Path;

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

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Write every shard's state to `path` (atomically: temp file + rename).
pub fn write(path: &Path, shards: &[ShardState], now_unix_ms: u64) -> Result<(), StateError> {
    let file = path.display().to_string();
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
    let tmp = path.with_extension("tmp");
    let io = |source| StateError::Io {
        file: file.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
    }
    std::fs::write(&tmp, format!("{head}\n{body}\n")).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// Read a state file; entries' `left_ms` are reduced by the time elapsed
/// since it was written (those at 0 are kept, for the engine to count as
/// expired). `Ok(None)`: there is no file.
pub fn read(path: &Path, now_unix_ms: u64) -> Result<Option<ShardState>, StateError> {
    let file = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Io { file, source }),
    };
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
    Ok(Some(st))
}

/// Time left of an entry expiring at `expires` (monotonic ms) at `now`.
pub fn left(expires: Millis, now: Millis) -> u64 {
    expires.saturating_sub(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ShardState {
        ShardState {
            conns: vec![SavedConn {
                proto: 6,
                caddr: "198.18.100.1".parse().unwrap(),
                cport: 40000,
                vaddr: "198.18.0.100".parse().unwrap(),
                vport: 443,
                raddr: "198.18.0.12".parse().unwrap(),
                rport: 443,
                state: 1,
                left_ms: 900_000,
            }],
            templates: vec![SavedTemplate {
                fwmark: Some(1),
                proto: 0,
                client: "198.18.100.0".parse().unwrap(),
                vip: None,
                vport: 0,
                raddr: "198.18.0.12".parse().unwrap(),
                rport: None,
                left_ms: 300_000,
            }],
        }
    }

    fn path(n: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("xdpvs-state-{}-{n}", std::process::id()))
    }

    #[test]
    fn round_trip_ages_entries() {
        let p = path("rt");
        write(&p, &[sample(), ShardState::default()], 1_000_000).unwrap();
        let back = read(&p, 1_010_000).unwrap().unwrap();
        assert_eq!(back.conns[0].left_ms, 890_000);
        assert_eq!(back.templates[0].left_ms, 290_000);
        assert_eq!(back.conns[0].caddr, sample().conns[0].caddr);
        assert!(read(&path("missing"), 0).unwrap().is_none());
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn corrupt_stale_and_future_files_are_refused() {
        let p = path("bad");
        write(&p, &[sample()], 1_000_000).unwrap();
        let good = std::fs::read_to_string(&p).unwrap();
        // Truncated.
        std::fs::write(&p, &good[..good.len() - 20]).unwrap();
        assert!(matches!(
            read(&p, 1_000_000),
            Err(StateError::Corrupt { .. })
        ));
        // Edited (same length).
        std::fs::write(&p, good.replace("40000", "40001")).unwrap();
        let e = read(&p, 1_000_000).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
        // Garbage.
        std::fs::write(&p, "hello\nworld\n").unwrap();
        assert!(matches!(
            read(&p, 1_000_000),
            Err(StateError::Corrupt { .. })
        ));
        // Stale, future.
        std::fs::write(&p, &good).unwrap();
        assert!(matches!(
            read(&p, 1_000_000 + MAX_AGE_MS + 1),
            Err(StateError::Stale { .. })
        ));
        assert!(matches!(read(&p, 0), Err(StateError::Future { .. })));
        let _ = std::fs::remove_file(p);
    }
}
