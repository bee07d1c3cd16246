//! The runtime control plane: one io_uring loop ([`event_loop`] over
//! [`uring`]) serving signals, the control socket ([`proto`] requests
//! applied to the [`server`] state), health checks, metrics and status.

pub mod event_loop;
pub mod health;
pub mod metrics;
pub mod proto;
pub mod server;
pub mod signals;
pub mod status;
pub mod uring;
