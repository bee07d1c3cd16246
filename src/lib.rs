//! xdpvs: a Linux Virtual Server director on AF_XDP and io_uring.
//!
//! Layers, bottom up:
//! - [`wire`]: zero-copy checked views of packet headers, checksums. No I/O.
//! - [`shard`]: the per-core engine, `process(now, frame) -> Verdict`, sans-IO:
//!   classification, schedulers, connection and persistence tables, rewrites.
//! - [`control`]: config, validation, immutable service snapshots.
//! - [`xdp`]: the XDP program (assembled in Rust) and its maps, via `bpf()`.
//! - [`dataplane`]: AF_XDP sockets, pinned shard threads, hand-off.

pub mod cli;
pub mod control;
pub mod dataplane;
pub mod demo;
pub mod director;
pub mod lab;
pub mod model;
pub mod shard;
pub mod wire;
pub mod xdp;
