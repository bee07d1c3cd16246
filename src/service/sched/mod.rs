//! Schedulers, one file each, with IPVS's algorithms and names.
//!
//! A scheduler object is built by the control plane for one snapshot of one
//! service (so it may precompute tables: sh, dh, mh) and is shared read-only by
//! all shards. Everything that changes per decision (rr cursor, wrr current
//! weight, random state) lives in a per-shard [`SchedState`]; live counts
//! (active/inactive connections) come from the shard in [`DestStat`].

use std::net::IpAddr;

mod bucket;
pub mod dh;
pub mod fo;
pub mod hash;
pub mod lc;
pub mod mh;
pub mod nq;
pub mod ovf;
pub mod rr;
pub mod sed;
pub mod sh;
pub mod twos;
pub mod wlc;
pub mod wrr;

#[cfg(test)]
mod tests;

/// What a scheduler sees of one real server at decision time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestStat {
    /// Current weight; 0 means quiesced: never chosen for new connections.
    pub weight: u32,
    /// Established (active) connections counted by this shard.
    pub active: u32,
    /// Other (inactive) connections counted by this shard.
    pub inactive: u32,
    /// Upper connection threshold reached (IPVS `IP_VS_DEST_F_OVERLOAD`).
    pub overloaded: bool,
}

impl DestStat {
    /// IPVS: a destination is usable when its weight is > 0 and it is not overloaded.
    pub fn available(&self) -> bool {
        self.weight > 0 && !self.overloaded
    }

    /// IPVS `ip_vs_dest_conn_overhead`: `active * 256 + inactive`.
    pub fn conn_overhead(&self) -> u64 {
        (u64::from(self.active) << 8) + u64::from(self.inactive)
    }
}

/// The packet fields a scheduler may hash on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

/// Per-shard mutable scheduler state. One per (shard, service).
#[derive(Clone, Debug)]
pub struct SchedState {
    /// rr: index of the last chosen destination (`None` before the first pick).
    pub last: Option<usize>,
    /// wrr: current weight (IPVS `cw`).
    pub cw: i64,
    /// twos / random decisions: xorshift64* state, never 0.
    pub rng: u64,
}

impl SchedState {
    pub fn new(seed: u64) -> Self {
        SchedState {
            last: None,
            cw: 0,
            rng: seed | 1,
        }
    }
    /// xorshift64*: cheap, deterministic for tests.
    pub fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl Default for SchedState {
    fn default() -> Self {
        SchedState::new(0x9E37_79B9_7F4A_7C15)
    }
}

/// A real server as the scheduler builder sees it (for tables and hashing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestSpec {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
}

/// Options that some schedulers take (IPVS sched flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedParams {
    /// mh: lookup table size, a prime (default 65537).
    pub mh_table_size: u32,
    /// sh/mh: fall back to another server when the chosen one is unavailable.
    pub fallback: bool,
    /// sh/mh: include the source port in the hash.
    pub hash_port: bool,
}

impl Default for SchedParams {
    fn default() -> Self {
        SchedParams {
            mh_table_size: 65537,
            fallback: false,
            hash_port: false,
        }
    }
}

/// A scheduling algorithm. `schedule` returns the index into `dests` of the
/// chosen real server, or `None` if no server may take a new connection.
/// `dests` has the same order and length as the `DestSpec`s it was built with.
pub trait Scheduler: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    fn schedule(&self, st: &mut SchedState, dests: &[DestStat], key: &SchedKey) -> Option<usize>;
}

/// Names accepted in the config, as IPVS spells them.
pub const SCHEDULER_NAMES: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "dh", "mh", "fo", "ovf", "twos",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchedError {
    #[error("unknown scheduler \"{0}\" (expected one of rr, wrr, lc, wlc, sed, nq, sh, dh, mh, fo, ovf, twos)")]
    Unknown(String),
    #[error("mh table size {0} must be a prime larger than the number of real servers")]
    BadTableSize(u32),
    #[error("mh table size {size} is larger than the maximum {max}")]
    TableTooLarge { size: u32, max: u32 },
}

/// Build a scheduler by name for the given real servers.
pub fn build(
    name: &str,
    dests: &[DestSpec],
    params: &SchedParams,
) -> Result<Box<dyn Scheduler>, SchedError> {
    Ok(match name {
        "rr" => Box::new(rr::Rr),
        "wrr" => Box::new(wrr::Wrr::new(dests)),
        "lc" => Box::new(lc::Lc),
        "wlc" => Box::new(wlc::Wlc),
        "sed" => Box::new(sed::Sed),
        "nq" => Box::new(nq::Nq),
        "sh" => Box::new(sh::Sh::new(dests, params)),
        "dh" => Box::new(dh::Dh::new(dests)),
        "mh" => Box::new(mh::Mh::new(dests, params)?),
        "fo" => Box::new(fo::Fo),
        "ovf" => Box::new(ovf::Ovf),
        "twos" => Box::new(twos::Twos),
        _ => return Err(SchedError::Unknown(name.to_string())),
    })
}
