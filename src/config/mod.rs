//! The config language: its sections, keys and defaults ([`schema`]), the
//! TOML reader with file:line:col errors ([`error`]), whole-config
//! validation, rendering back to TOML (`xdpvs save`), and the builder of
//! the immutable [`crate::service::snapshot`] the shards read ([`build`]).
//! Imports only the service layer and wire.

use std::fmt;
use std::path::Path;

pub mod build;
pub mod error;
pub mod ports;
pub(crate) mod reader;
mod render;
pub mod schema;
mod validate;

pub use build::{build_snapshot, build_snapshot_with};
pub use error::{ConfigError, Diagnostic};
pub use schema::Config;
pub use validate::{is_unicast, MAX_HEALTH_SECONDS};

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
