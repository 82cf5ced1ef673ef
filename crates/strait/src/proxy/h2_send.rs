//! The `send` timeout of an HTTP/2 stream. hyper polls a stream's response body only while
//! the client's flow-control window for that stream has room, so a client that stops
//! reading one stream never blocks the connection's writes (what [`super::send_timeout`]
//! watches), answers pings, and would hold the stream's backend connection for ever — up to
//! the connection's concurrent-stream limit of them.
//!
//! A backend's body on an HTTP/2 stream is therefore relayed by a task of its own through a
//! one-frame channel: when a frame has waited `send` for the client to take the one before
//! it, the task drops the backend's body (its connection is released) and fails the stream,
//! which hyper resets; a stream that goes away (reset, connection closed) releases it at
//! once, even while the backend is quiet. Bodies the gateway made itself pass as they are.
//! Owns only this.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::after;
use super::exchange::{BoxError, Logged};

/// The stream's client took nothing for the `send` timeout.
#[derive(Debug, thiserror::Error)]
#[error("the client took nothing of this HTTP/2 stream for the send timeout ({0:?})")]
pub struct StreamStalled(Duration);

/// A frame as the relay passes it on, and whether the backend's body ends with it.
type Passed = (Frame<Bytes>, bool);

/// A response body on an HTTP/2 stream: made by the gateway, or a backend's, relayed.
pub enum H2Body {
    Direct(Logged),
    Relayed {
        frames: mpsc::Receiver<Passed>,
        /// Why the relay gave up, after the frames it sent before.
        failed: oneshot::Receiver<BoxError>,
        /// The last frame came: hyper sends it with END_STREAM instead of an empty DATA
        /// frame after it (and stops polling).
        ended: bool,
    },
}

impl hyper::body::Body for H2Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let (frames, failed, ended) = match self.get_mut() {
            H2Body::Direct(body) => return Pin::new(body).poll_frame(cx),
            H2Body::Relayed {
                frames,
                failed,
                ended,
            } => (frames, failed, ended),
        };
        if let Poll::Ready(Some((frame, last))) = frames.poll_recv(cx) {
            *ended = last;
            return Poll::Ready(Some(Ok(frame)));
        }
        match Pin::new(failed).poll(cx) {
            Poll::Ready(Ok(error)) => Poll::Ready(Some(Err(error))),
            // The relay ended without failing: the frames have all been taken.
            Poll::Ready(Err(_)) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            H2Body::Direct(body) => body.is_end_stream(),
            H2Body::Relayed { ended, .. } => *ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            H2Body::Direct(body) => body.size_hint(),
            H2Body::Relayed { .. } => SizeHint::default(),
        }
    }
}

/// `response` with a backend's body relayed under the `send` timeout `limit`.
pub fn guard(response: Response<Logged>, limit: Duration) -> Response<H2Body> {
    response.map(|body| {
        if !body.is_backends() {
            return H2Body::Direct(body);
        }
        let (tx, frames) = mpsc::channel(1);
        let (fail, failed) = oneshot::channel();
        // Boxed: spawning moves the future by value several times.
        tokio::spawn(Box::pin(relay(body, tx, fail, limit)));
        H2Body::Relayed {
            frames,
            failed,
            ended: false,
        }
    })
}

async fn relay(
    mut body: Logged,
    tx: mpsc::Sender<Passed>,
    fail: oneshot::Sender<BoxError>,
    limit: Duration,
) {
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            () = tx.closed() => return,
        };
        let frame = match frame {
            None => return,
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                let _ = fail.send(error);
                return;
            }
        };
        // Whether the backend's body ends with this frame (its length says so).
        let last = body.is_end_stream();
        // The timer starts only when the client has not taken the previous frame yet.
        let frame = match tx.try_send((frame, last)) {
            Ok(()) if last => return,
            Ok(()) => continue,
            Err(TrySendError::Closed(_)) => return,
            Err(TrySendError::Full(frame)) => frame,
        };
        match tokio::time::timeout_at(after(Instant::now(), limit), tx.send(frame)).await {
            Ok(Ok(())) if last => return,
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::debug!(?limit, "HTTP/2 stream: the client took nothing, stream cut");
                let _ = fail.send(Box::new(StreamStalled(limit)));
                return;
            }
        }
    }
}
