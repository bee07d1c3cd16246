//! The per-core engine (sans-IO).
pub mod sched;
pub mod verdict;

pub use verdict::{DropReason, Frame, Verdict};
pub mod forward;
pub mod engine;
pub mod nexthop;
