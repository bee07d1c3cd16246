//! `xdpvs run`: the director process. [`run`] wires the config, the XDP
//! programs ([`maps`]), the AF_XDP shards (each a [`shard_adapter`] around
//! the sans-IO engine), the neighbour resolver and the control loop
//! together; [`restart`] carries connections and templates across a
//! restart or an upgrade.

pub mod maps;
pub mod restart;
pub mod run;
pub mod shard_adapter;

pub use run::run_main;
