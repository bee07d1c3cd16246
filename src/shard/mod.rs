//! The per-core engine (sans-IO).
pub mod conn;
pub mod engine;
pub mod forward;
pub mod nexthop;
pub mod sched;
pub mod state;
pub mod tcp_state;
pub mod template;
pub mod timer;
pub mod verdict;

pub use verdict::{DropReason, Frame, Verdict};
