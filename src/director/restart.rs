//! Restarts and upgrades: the state file (where it is, reading it and
//! splitting it by owner shard) and the [`RestartState`] the shards take
//! their part from and leave their export in.

use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use crate::config::schema::Config;
use crate::service::snapshot::Snapshot;
use crate::shard::engine::owner_shard;
use crate::shard::state::{self, RestoreStats, ShardState};

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
    match state::read(&path, state::unix_ms()) {
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
