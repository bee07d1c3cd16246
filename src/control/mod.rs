//! Configuration and service snapshots: TOML config parsing and whole-config
//! validation ([`config`]), and the builder of the immutable [`snapshot`]
//! the shards read ([`build`]).

use std::fmt;
use std::path::Path;

pub mod build;
pub mod config;
pub mod error;
pub mod ipvsadm;
pub mod ports;
mod reader;
mod render;
mod validate;

pub use build::{build_snapshot, build_snapshot_with};
pub use config::Config;
pub use error::{ConfigError, Diagnostic};
pub use validate::is_unicast;

/// What `xdpvs check` reports about a valid config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub file: String,
    pub services: usize,
    pub reals: usize,
    pub fwmarks: usize,
    /// (proto, VIP, port) entries the data plane will match.
    pub vip_ports: usize,
    /// Allowed but suspicious things (unused mark, shadowed service, ...).
    pub warnings: Vec<Diagnostic>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        write!(
            f,
            "{}: OK: {} services, {} real servers, {} firewall-mark groups, {} VIP ports",
            self.file, self.services, self.reals, self.fwmarks, self.vip_ports
        )
    }
}

/// Load, validate and build the snapshot of a config file without
/// publishing anything (`xdpvs check`).
pub fn check(path: &Path) -> Result<Summary, ConfigError> {
    let cfg = Config::load(path)?;
    let warnings = cfg.validate()?;
    let snap = build_snapshot(&cfg, None)?;
    Ok(Summary {
        file: cfg.file_name().to_string(),
        services: snap.services.len(),
        reals: snap.dest_index.len(),
        fwmarks: cfg.fwmarks.len(),
        vip_ports: snap.vips.len(),
        warnings,
    })
}
pub mod event_loop;
pub mod health;
pub mod metrics;
pub mod privileges;
pub mod proto;
pub mod server;
pub mod signals;
pub mod status;
pub mod uring;
