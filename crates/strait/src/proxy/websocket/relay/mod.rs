//! The WebSocket relay: after the handshake, frames flow both ways unaltered.
//!
//! This module owns the relay loop and the closing rules; frame parsing lives in
//! [`super::frame`]. Design:
//! - One future drives both directions by hand-written polling (no `split`, no spawned tasks,
//!   no locks): each stream is polled for reading by one direction and for writing by the
//!   other, in turn, from the same `poll`. Each direction registers its own waker, so a
//!   side whose last read found nothing is not read again until its direction is woken.
//! - Each direction owns one buffer, held only while bytes are in flight: a small message gets
//!   one of its size, a stream starts at 16 KiB and doubles while reads fill it, up to
//!   256 KiB (fewer, larger reads and writes: the kernel's per-call cost dominates a stream).
//!   Bytes are written out exactly as read; only frame headers are parsed, as they pass, so
//!   the relay always knows whether the stream it writes is at a frame boundary. A direction
//!   reads again only once the other side took everything approved, so backpressure is
//!   natural and nothing grows with message size.
//! - The bytes of a frame header are held back until the header is complete and valid, so a
//!   refused frame never reaches the other side, and the gateway can write its own close
//!   frame at any boundary.
//! - Counters: `frames` counts every relayed frame (control frames included), `messages`
//!   counts data messages completed (a text/binary frame with FIN, or the final continuation
//!   frame); control frames are not messages. `bytes` counts payload bytes. Frames read after
//!   the gateway took over the closing are dropped and not counted.
//!
//! Closing (every path is bounded by `close_timeout` once it starts):
//! - A peer's Close is forwarded, nothing after it is read from that peer, and the other
//!   side's reply is forwarded too; when both passed, both write halves are shut down.
//! - Idle timeout or `stop`: the gateway writes its close to both sides (masked toward the
//!   backend), waits for their replies (not forwarded), then shuts down.
//! - A peer lost (EOF, read or write error) without a Close: the other side gets 1014
//!   (backend lost) or 1001 (client lost), and its reply is awaited. If the lost peer stopped
//!   mid-frame, the other side is just shut down (no clean close is possible).
//! - A side that takes nothing for `send_timeout` while the relay has bytes for it is lost
//!   the same way (the bytes waiting for it are dropped), as nginx's `send_timeout` does.
//! - A protocol violation (see [`super::frame`]; includes wrongly masked frames and broken
//!   fragmentation): 1002 to the offender, 1001 to the other side, whose reply is awaited.
//! - A gateway close waits for the frame under way toward that side to end; if it never
//!   does, the connection is dropped at the deadline.
//!
//! Note: tungstenite (0.28) does not know 1014 and shows it to its users as 1002.
//!
//! Files: [`limits`] (message size and rate per sender), [`stats`] (counters the registry
//! reads), [`direction`] (one direction's buffer, frame scanning and closing state),
//! [`session`] (both directions, timers, keepalive and the closing rules above).

mod direction;
mod limits;
mod session;
mod stats;
#[cfg(test)]
mod tests;

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::io::AsTcp;
use crate::proxy::after;
use crate::telemetry::histogram::Histogram;

pub use limits::{MessageLimits, SenderLimits};
use session::{Session, Signal};
pub use stats::{DirectionStats, LiveStats};

/// A close frame's code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    pub code: u16,
    pub reason: String,
}

impl CloseFrame {
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// Who started the closing of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    Client,
    Backend,
    Gateway,
}

impl Initiator {
    pub fn as_str(self) -> &'static str {
        match self {
            Initiator::Client => "client",
            Initiator::Backend => "backend",
            Initiator::Gateway => "gateway",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// No frame either way for this long: close 1001 to both sides. Pongs do not count, so
    /// the keepalive's own exchanges do not keep an idle session open.
    pub idle_timeout: Duration,
    /// Keepalive: a side that sent nothing for this long gets a ping from the gateway.
    pub ping_interval: Option<Duration>,
    /// A pinged side that sends nothing within this long is taken as gone: the other side
    /// gets 1014 (backend) or 1001 (client) and the silent one is dropped.
    pub pong_timeout: Duration,
    /// How long to wait for the close handshake (and for a frame in flight to finish) before dropping.
    pub close_timeout: Duration,
    /// A side that takes nothing for this long while the relay has bytes for it (it stopped
    /// reading) is taken as gone: the other side gets 1001 (client) or 1014 (backend).
    pub send_timeout: Duration,
    /// Where keepalive round trips are recorded (ping to the side's next frame).
    pub ping_rtt: Option<Histogram>,
    /// What the session's policies allow each side to send (`None`: no limits; boxed, so a
    /// session without them carries 8 bytes).
    pub limits: Option<Box<MessageLimits>>,
    /// The backend's 101 accepted an extension (`Sec-WebSocket-Extensions`): frames may set
    /// RSV bits. Without one, a frame that does is a protocol error.
    pub extensions: bool,
}

#[derive(Debug, Clone)]
pub struct RelayOutcome {
    /// The close frame that ended the session (None: the connection dropped without one).
    pub close: Option<CloseFrame>,
    pub initiator: Initiator,
    pub client_to_backend: DirectionStats,
    pub backend_to_client: DirectionStats,
}

/// Close codes the gateway sends (RFC 6455 §7.4.1, IANA registry).
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_BAD_GATEWAY: u16 = 1014;

/// Relays an upgraded client connection and an upgraded backend connection until both are
/// closed. `from_client` and `from_backend` are what each side sent right behind the
/// handshake that hyper already read: they are relayed first. `stop` resolving asks the
/// gateway to close both sides with that frame (shutdown, forced disconnects); the caller
/// pins it, so the session's task holds it once.
pub async fn relay<C, B, S>(
    (client, from_client): (C, Bytes),
    (backend, from_backend): (B, Bytes),
    config: &RelayConfig,
    live: &LiveStats,
    mut stop: Pin<&mut S>,
) -> RelayOutcome
where
    C: AsyncRead + AsyncWrite + AsTcp + Unpin + Send,
    B: AsyncRead + AsyncWrite + AsTcp + Unpin + Send,
    S: Future<Output = CloseFrame> + Send,
{
    let first_wake = config
        .ping_interval
        .map_or(config.idle_timeout, |ping| ping.min(config.idle_timeout));
    let mut timer = std::pin::pin!(tokio::time::sleep_until(after(Instant::now(), first_wake)));
    let mut session = Session::new(client, backend, config, live);
    // Consumed here: the bytes may share hyper's whole read buffer, which a session must
    // not keep.
    session.c2b.seed(from_client);
    session.b2c.seed(from_backend);
    let (signal, wakers) = Signal::new();
    poll_fn(|cx| {
        let wakeups = signal.wakeups(cx, &wakers);
        session.poll(cx, stop.as_mut(), timer.as_mut(), wakeups)
    })
    .await
}
