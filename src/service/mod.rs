//! What a virtual service is, as every layer above reads it: the shared
//! vocabulary ([`model`]), the schedulers ([`sched`]: built once per
//! service, picked from by every shard), the resolved health checks
//! ([`health`]) and the immutable [`snapshot`] the control plane publishes
//! and the shards read. No I/O; imports only [`crate::wire`].

pub mod health;
pub mod model;
pub mod sched;
pub mod snapshot;
