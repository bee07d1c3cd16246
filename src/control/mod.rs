//! The runtime control plane: one io_uring loop ([`event_loop`] over
//! [`uring`]) serving signals, the control socket ([`api`]: its requests
//! and responses, applied to the control plane's [`state`]), health
//! checks, the routing daemon's announce and quorum commands
//! ([`announce`]), metrics and status.

pub mod announce;
pub mod api;
pub mod event_loop;
pub mod health;
pub mod metrics;
pub mod signals;
pub mod state;
pub mod status;
pub mod sync;
pub mod uring;
