//! xdpvs: a Linux Virtual Server director on AF_XDP and io_uring.
//!
//! Layers, bottom up:
//! - [`wire`]: zero-copy checked views of packet headers, checksums. No I/O.
//! - [`shard`]: the per-core engine, `process(now, frame) -> Verdict`, sans-IO:
//!   classification, schedulers, connection and persistence tables, rewrites.
//! - [`control`]: config, validation, immutable service snapshots.
//! - [`xdp`]: the XDP program (assembled in Rust) and its maps, via `bpf()`.
//! - [`dataplane`]: AF_XDP sockets, pinned shard threads, hand-off.

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
