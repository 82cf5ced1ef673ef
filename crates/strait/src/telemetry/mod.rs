//! What the gateway tells about itself: Prometheus [`metrics`] (with a lock-free
//! [`histogram`]), the [`access`] log, and request ids and trace context ([`trace`]). The
//! data plane records through handles made when a snapshot compiles; this module never
//! touches routing or connections.

pub mod access;
mod counted;
pub mod histogram;
pub mod metrics;
pub mod trace;

pub use counted::Counted;
pub use metrics::{Metrics, RouteMetrics, SessionSource, SessionTotals, Upgrade};
