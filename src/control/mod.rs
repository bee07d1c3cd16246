//! Configuration and service snapshots.
pub mod snapshot;
