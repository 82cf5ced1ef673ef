//! The data plane: listeners and the worker threads that serve their connections, the
//! request phases, HTTP forwarding and the WebSocket relay.
//!
//! A request goes through visible phases (see [`pipeline`]): accept → match → policies →
//! connect → relay → log. Routing decisions come from an immutable [`Snapshot`] behind an
//! atomic swap, so the data plane never locks per request or per frame. This module may use
//! `routing` and `upstream`; it never parses configuration text.

mod connect;
mod exchange;
mod forward;
mod gateway;
mod h2_send;
mod head_timer;
mod headers;
mod listener;
mod pipeline;
mod send_timeout;
mod sessions;
mod snapshot;
mod sniff;
mod tls;
pub mod websocket;
mod workers;

pub use gateway::{Gateway, GatewayHandle, GatewayOptions, StartError};
pub use sessions::{Registration, Registry, Session, SessionInfo};
pub use snapshot::{EnvRoutes, Route, Snapshot};

/// `base + d`, saturating far in the future instead of overflowing: durations come from
/// configuration, where `response: 200000000000000d` parses.
fn after(base: tokio::time::Instant, d: std::time::Duration) -> tokio::time::Instant {
    base.checked_add(d)
        .or_else(|| base.checked_add(std::time::Duration::from_secs(86_400 * 365)))
        .unwrap_or(base)
}
