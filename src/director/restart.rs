//! Restarts and upgrades: the state file (where it is, reading and writing
//! it, splitting it by owner shard; its format is `shard::restart`'s) and
//! the [`RestartState`] the shards take their part from and leave their
//! export in.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use crate::config::schema::Config;
use crate::service::snapshot::Snapshot;
use crate::shard::engine::owner_shard;
use crate::shard::restart::{decode, encode, RestoreStats, ShardState, StateError};

/// State handed across a restart: each shard takes its part of what was
/// read at start, and leaves its export when it stops.
#[derive(Clone)]
pub struct RestartState {
    pub restore: Arc<Mutex<Vec<Option<ShardState>>>>,
    pub restored: Arc<Mutex<RestoreStats>>,
    pub saved: Arc<Mutex<Vec<Option<ShardState>>>>,
}

/// Where connection state is kept across restarts: `state_file`, or next to
/// the control socket (`/run/xdpvs.state` by default: survives a restart,
/// not a reboot).
pub fn state_path(cfg: &Config) -> std::path::PathBuf {
    cfg.director
        .state_file
        .clone()
        .unwrap_or_else(|| cfg.director.control_socket.with_extension("state"))
}

/// Read the state file and split it by owner shard. A bad file is logged
/// and ignored.
pub(super) fn load_state(cfg: &Config, snap: &Snapshot, shards: u16) -> Vec<Option<ShardState>> {
    let path = state_path(cfg);
    let mut parts: Vec<Option<ShardState>> = vec![None; shards as usize];
    match read(&path, unix_ms()) {
        Ok(None) => {}
        Ok(Some(st)) => {
            info!(
                "state file {}: {} connection(s), {} template(s) to check against the config",
                path.display(),
                st.conns.len(),
                st.templates.len()
            );
            for c in st.conns {
                let o = owner_shard(c.caddr, snap, shards) as usize;
                if let Some(p) = parts.get_mut(o) {
                    p.get_or_insert_with(ShardState::default).conns.push(c);
                }
            }
            for t in st.templates {
                let o = owner_shard(t.client, snap, shards) as usize;
                if let Some(p) = parts.get_mut(o) {
                    p.get_or_insert_with(ShardState::default).templates.push(t);
                }
            }
        }
        Err(e) => warn!("state file ignored: {e}"),
    }
    parts
}

/// The wall clock in ms since the Unix epoch (the state file's time).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Write every shard's state to `path` (atomically: temp file + rename).
pub fn write(path: &Path, shards: &[ShardState], now_unix_ms: u64) -> Result<(), StateError> {
    let file = path.display().to_string();
    let text = encode(&file, shards, now_unix_ms)?;
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
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// Read a state file (see [`decode`]). `Ok(None)`: there is no file.
pub fn read(path: &Path, now_unix_ms: u64) -> Result<Option<ShardState>, StateError> {
    let file = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Io { file, source }),
    };
    decode(&file, &text, now_unix_ms).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::restart::{SavedConn, SavedTemplate, MAX_AGE_MS};

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
