//! What the gateway tells about itself: Prometheus [`metrics`] (with a lock-free
//! [`histogram`]; both add to per-worker [`tally`] slots), the [`access`] log, request ids
//! and trace context ([`trace`]) and, with the `otlp` feature, spans exported over OTLP
//! (`otlp`). The data plane records through handles made when a snapshot compiles; this
//! module never touches routing or connections.

pub mod access;
mod counted;
pub mod histogram;
pub mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod tally;
pub mod trace;

pub use counted::{BodyProgress, BrokenBody, Counted, TooLarge};

/// Where finished spans go: the OTLP exporter (absent without an endpoint).
#[cfg(feature = "otlp")]
pub type Tracer = otlp::Exporter;
/// Built without the `otlp` feature: there is never a tracer.
#[cfg(not(feature = "otlp"))]
#[derive(Debug, Clone)]
pub enum Tracer {}
pub use metrics::{Metrics, RouteMetrics, SessionSource, SessionTotals, Upgrade};
