//! The `send` timeout of an HTTP/2 stream. hyper polls a stream's response body only while
//! the client's flow-control window for that stream has room, so a client that stops
//! reading one stream never blocks the connection's writes (what [`super::send_timeout`]
//! watches), answers pings, and would hold the stream's backend connection for ever — up to
//! the connection's concurrent-stream limit of them.
//!
//! A backend's body on an HTTP/2 stream is therefore watched from the stream's own task:
//! the gateway's executor runs each stream's task inside [`watched`], which, whenever hyper
//! has taken a frame and waits for the client's window, reads the backend's next frame ahead
//! (one at most) and times it. When that frame has waited `send` for the client to take the
//! one before it, the watch drops the backend's body (its connection is released) and fails
//! the stream, which hyper resets when it next asks for a frame (once the client's window
//! opens; a client that never reads again is the connection's ping's to find); a stream that
//! goes away (reset, connection closed) ends its task and releases it at once, even while
//! the backend is quiet. No task, channel or timer of its own per stream while the client
//! keeps up. Bodies the gateway made itself pass as they are. Owns only this.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::after;
use super::exchange::{BoxError, Logged};

tokio::task_local! {
    /// The stream whose task is running, set by [`watched`].
    static STREAM: Arc<Stream>;
}

/// The stream's client took nothing for the `send` timeout.
#[derive(Debug, thiserror::Error)]
#[error("the client took nothing of this HTTP/2 stream for the send timeout ({0:?})")]
pub struct StreamStalled(Duration);

/// A frame of the backend's, and whether its body ends with it.
type Passed = (Frame<Bytes>, bool);

/// One HTTP/2 stream's guarded body, shared by its [`H2Body`] and its task's [`Watched`].
#[derive(Default)]
pub struct Stream {
    /// The `send` timeout, set with a backend's body: until then (and for a body the gateway
    /// made) the watch has nothing to do and takes no lock.
    limit: OnceLock<Duration>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The backend's body, until its end, a failure, a cut or the stream's end.
    body: Option<Logged>,
    /// hyper has taken a frame and not asked for the next yet (it waits for the window).
    handed: bool,
    /// What the watch read from the backend while hyper was not asking.
    ahead: Option<Ahead>,
}

enum Ahead {
    /// A frame, whether the body ends with it, and since when it waits.
    Frame(Frame<Bytes>, bool, Instant),
    End,
    Failed(BoxError),
}

impl Stream {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A response body on an HTTP/2 stream: made by the gateway, or a backend's, guarded.
pub enum H2Body {
    Direct(Logged),
    Guarded {
        stream: Arc<Stream>,
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
        let (stream, ended) = match self.get_mut() {
            H2Body::Direct(body) => return Pin::new(body).poll_frame(cx),
            H2Body::Guarded { stream, ended } => (stream, ended),
        };
        let mut state = stream.state();
        state.handed = false;
        let polled = match state.ahead.take() {
            Some(Ahead::Frame(frame, last, _)) => Poll::Ready(Some(Ok((frame, last)))),
            Some(Ahead::End) => Poll::Ready(None),
            Some(Ahead::Failed(error)) => Poll::Ready(Some(Err(error))),
            None => match state.body.as_mut() {
                None => Poll::Ready(None),
                Some(body) => read(body, cx),
            },
        };
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok((frame, last)))) => {
                if last {
                    state.body = None;
                }
                state.handed = !last;
                *ended = last;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                state.body = None;
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                state.body = None;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            H2Body::Direct(body) => body.is_end_stream(),
            H2Body::Guarded { ended, .. } => *ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            H2Body::Direct(body) => body.size_hint(),
            H2Body::Guarded { .. } => SizeHint::default(),
        }
    }
}

/// The backend's next frame, and whether its body ends with it (its length says so).
fn read(body: &mut Logged, cx: &mut Context<'_>) -> Poll<Option<Result<Passed, BoxError>>> {
    Pin::new(&mut *body)
        .poll_frame(cx)
        .map_ok(|frame| (frame, body.is_end_stream()))
}

/// `response` with a backend's body guarded by the `send` timeout `limit`, on the stream
/// whose task runs this: every HTTP/2 stream task is spawned through [`watched`] (a test
/// build fails loudly if one is not; a release build passes the body unguarded).
pub fn guard(response: Response<Logged>, limit: Duration) -> Response<H2Body> {
    response.map(|body| {
        if !body.is_backends() {
            return H2Body::Direct(body);
        }
        let stream = STREAM.try_with(Arc::clone);
        debug_assert!(
            stream.is_ok(),
            "an HTTP/2 stream task not spawned by `watched`"
        );
        let Ok(stream) = stream else {
            return H2Body::Direct(body);
        };
        stream.state().body = Some(body);
        // One response per stream: set once.
        let _ = stream.limit.set(limit);
        H2Body::Guarded {
            stream,
            ended: false,
        }
    })
}

/// A stream's task (hyper's future for it), with its body's watch.
pub fn watched<F: Future + Send + 'static>(
    future: F,
) -> impl Future<Output = F::Output> + Send + 'static
where
    F::Output: Send,
{
    let stream = Arc::new(Stream::default());
    let task = Watched {
        inner: Box::pin(future),
        stream: stream.clone(),
        sleep: None,
    };
    STREAM.scope(stream, task)
}

struct Watched<F> {
    inner: Pin<Box<F>>,
    stream: Arc<Stream>,
    /// Armed while a frame read ahead waits for the client.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<F: Future> Future for Watched<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        if let Poll::Ready(output) = this.inner.as_mut().poll(cx) {
            return Poll::Ready(output);
        }
        this.watch(cx);
        Poll::Pending
    }
}

impl<F> Watched<F> {
    /// While hyper waits for the client's window: read one frame ahead, and cut the stream
    /// once that frame has waited `send`.
    fn watch(&mut self, cx: &mut Context<'_>) {
        let Some(&limit) = self.stream.limit.get() else {
            return;
        };
        let mut state = self.stream.state();
        if state.handed
            && state.ahead.is_none()
            && let Some(body) = state.body.as_mut()
            && let Poll::Ready(next) = read(body, cx)
        {
            let ahead = match next {
                Some(Ok((frame, last))) => Ahead::Frame(frame, last, Instant::now()),
                Some(Err(error)) => Ahead::Failed(error),
                None => Ahead::End,
            };
            // Nothing more to read: the backend is let go whether or not the client reads.
            if !matches!(ahead, Ahead::Frame(_, false, _)) {
                state.body = None;
            }
            state.ahead = Some(ahead);
        }
        let Some(Ahead::Frame(_, false, since)) = state.ahead else {
            self.sleep = None;
            return;
        };
        let due = after(since, limit);
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if sleep.deadline() != due {
            sleep.as_mut().reset(due);
        }
        if sleep.as_mut().poll(cx).is_ready() {
            tracing::debug!(?limit, "HTTP/2 stream: the client took nothing, stream cut");
            state.body = None;
            state.ahead = Some(Ahead::Failed(Box::new(StreamStalled(limit))));
            self.sleep = None;
        }
    }
}
