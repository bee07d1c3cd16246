//! The per-core engine (sans-IO).
pub mod conn;
pub mod engine;
pub mod forward;
mod index;
pub mod nexthop;
pub mod sched;
pub mod state;
pub mod tcp_state;
pub mod template;
pub mod timer;
pub mod verdict;

pub use verdict::{DropReason, Frame, Verdict};

/// The address range of a vector's whole reservation (its capacity): where a
/// table that reserves up front writes as it fills. The data plane advises
/// these ranges to use huge pages (`dataplane::mem`).
pub fn reservation<T>(v: &Vec<T>) -> std::ops::Range<usize> {
    let start = v.as_ptr() as usize;
    start..start + v.capacity() * std::mem::size_of::<T>()
}
