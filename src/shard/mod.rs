//! The per-core engine (sans-IO).
pub mod conn;
pub mod engine;
pub mod forward;
mod index;
pub mod nexthop;
pub mod offload;
pub mod restart;
pub mod sync;
pub mod tcp_state;
pub mod template;
pub mod timer;
pub mod verdict;

pub use verdict::{DropReason, Frame, Verdict};

/// The address range of the slots of `slab` the next `n` inserts will
/// write: the head of the free list (`free`; its successors are known only
/// once it is read) if there is one, else the next unused entries of the
/// reservation (never past its capacity). Arithmetic only: reads nothing.
pub(crate) fn next_slots<T>(slab: &Vec<T>, free: Option<u32>, n: usize) -> std::ops::Range<usize> {
    let size = std::mem::size_of::<T>();
    let (first, n) = match free {
        Some(i) => (i as usize, 1),
        None => (slab.len(), n.min(slab.capacity() - slab.len())),
    };
    let start = slab.as_ptr() as usize + first * size;
    start..start + n * size
}

/// The address range of a vector's whole reservation (its capacity): where a
/// table that reserves up front writes as it fills. The data plane advises
/// these ranges to use huge pages (`dataplane::mem`).
pub fn reservation<T>(v: &Vec<T>) -> std::ops::Range<usize> {
    let start = v.as_ptr() as usize;
    start..start + v.capacity() * std::mem::size_of::<T>()
}
