//! xdpvs: a Linux Virtual Server director on AF_XDP and io_uring.
//!
//! Layers, bottom up: each module uses only its own layer and the layers
//! listed before it (`scripts/layers.sh` checks it).
//! - [`wire`]: zero-copy checked views of packet headers, checksums, the flow
//!   5-tuple. No I/O.
//! - [`service`]: what a virtual service is: the shared vocabulary
//!   ([`service::model`]), the schedulers, resolved health checks and the
//!   immutable [`service::snapshot::Snapshot`] the shards read. No I/O.
//! - [`config`]: the config language: schema, reader, validation,
//!   rendering, and building a snapshot from a config.
//! - [`shard`]: the per-core engine, `process(now, frame) -> Verdict`,
//!   sans-IO: classification, connection and persistence tables, rewrites,
//!   restart state (pure encode/decode).
//! - [`xdp`]: the XDP program (assembled in Rust) and its maps, via `bpf()`.
//! - [`dataplane`]: AF_XDP sockets, pinned shard threads, hand-off, shard
//!   plan, next hops (netlink), privileges.
//! - [`control`]: the runtime control plane: the io_uring loop, signals,
//!   control socket, health checks, metrics, status.
//! - [`import`]: other load balancers' configurations into an xdpvs config.
//! - [`director`]: `xdpvs run`: wires it all together (shard adapter, XDP
//!   map sync, restart state file).
//! - [`cli`]: the control socket's command-line client.
//!
//! The demo and test lab is a crate of its own (`lab/`, `xdpvs-lab`).

// No panics on any input path: outside tests, unwrap/expect/panic and
// unchecked indexing are compile errors (a proven-invariant site says why
// it is allowed).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod cli;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod director;
pub mod import;
pub mod service;
pub mod shard;
pub mod wire;
pub mod xdp;
