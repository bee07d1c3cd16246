//! The per-core engine (sans-IO).
pub mod sched;
pub mod verdict;

pub use verdict::{DropReason, Frame, Verdict};
pub mod conn;
pub mod nexthop;
pub mod tcp_state;
pub mod template;
pub mod timer;
