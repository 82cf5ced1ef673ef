//! The WebSocket relay: after the handshake, frames flow both ways unaltered.
// TODO(relay helper): implement per the interface below.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// A close frame's code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    pub code: u16,
    pub reason: String,
}

/// Who started the closing of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    Client,
    Backend,
    Gateway,
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// No frame either way for this long: close 1001 to both sides.
    pub idle_timeout: Duration,
    /// How long to wait for the close handshake (and for a frame in flight to finish) before dropping.
    pub close_timeout: Duration,
}

/// Counters for one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    pub frames: u64,
    pub messages: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone)]
pub struct RelayOutcome {
    /// The close frame that ended the session (None: the connection dropped without one).
    pub close: Option<CloseFrame>,
    pub initiator: Initiator,
    pub client_to_backend: DirectionStats,
    pub backend_to_client: DirectionStats,
}

/// Relays an upgraded client connection and an upgraded backend connection until both are closed.
/// `stop` resolving asks the gateway to close both sides with that frame (shutdown, later
/// forced disconnects).
pub async fn relay<C, B, S>(_client: C, _backend: B, _config: &RelayConfig, _stop: S) -> RelayOutcome
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    B: AsyncRead + AsyncWrite + Unpin + Send,
    S: Future<Output = CloseFrame> + Send,
{
    todo!()
}
