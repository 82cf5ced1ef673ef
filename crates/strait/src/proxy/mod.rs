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
mod h2_idle;
mod h2_send;
mod headers;
mod lag_timer;
mod listener;
mod pipeline;
mod send_timeout;
mod sessions;
mod snapshot;
mod sniff;
mod tls;
pub mod websocket;
mod when_woken;
mod workers;

pub use gateway::{Gateway, GatewayHandle, GatewayOptions, StartError};
pub(crate) use headers::lists_token;
pub use sessions::{Registration, Registry, Session, SessionInfo};
pub use snapshot::{EnvRoutes, Route, Snapshot};

/// A year: the farthest the data plane sets a timer. Durations come from configuration,
/// where `response: 200000000000000d` parses, and an `Instant` ends before that.
const LONGEST: std::time::Duration = std::time::Duration::from_secs(86_400 * 365);

/// `base + d`, saturating [`LONGEST`] in the future instead of overflowing.
fn after(base: tokio::time::Instant, d: std::time::Duration) -> tokio::time::Instant {
    base.checked_add(d)
        .or_else(|| base.checked_add(LONGEST))
        .unwrap_or(base)
}

/// The timer of a wait that must not last longer than a limit (a client taking nothing, a
/// backend sending nothing): set when a wait starts, dropped from consideration when it
/// ends, and kept between waits (reset, not reallocated), so only waits pay for it.
#[derive(Debug, Default)]
struct WaitTimer {
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl WaitTimer {
    /// A wait is under way (and had started by the last [`WaitTimer::poll_expired`]).
    fn waiting(&self) -> bool {
        self.armed
    }

    /// The wait is over.
    fn end(&mut self) {
        self.armed = false;
    }

    /// A wait goes on: its timer starts if it has not, and is ready once `limit` has passed
    /// since then (a waker is registered until it is).
    fn poll_expired(
        &mut self,
        cx: &mut std::task::Context<'_>,
        limit: std::time::Duration,
    ) -> std::task::Poll<()> {
        if !self.armed {
            self.armed = true;
            let deadline = after(tokio::time::Instant::now(), limit);
            match self.timer.as_mut() {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match self.timer.as_mut() {
            Some(timer) => timer.as_mut().poll(cx),
            None => std::task::Poll::Pending,
        }
    }
}
