//! When an HTTP/2 client connection is idle: it has had no stream in progress for
//! `client_idle`. hyper's HTTP/2 server closes a connection only when the client does (or
//! a ping goes unanswered), so an idle client that answers pings would otherwise keep the
//! connection — and the backend connections it owns — for ever. HTTP/1 needs none of this:
//! hyper's head timer closes a connection that sends no request.
//!
//! Counts streams as they begin and end (two relaxed atomic additions each); the listener
//! checks the count once per `client_idle`. Owns only this.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};

/// One HTTP/2 connection's streams in progress, and how many times one began or ended.
#[derive(Debug, Default)]
pub struct Streams {
    open: AtomicUsize,
    changes: AtomicU64,
}

impl Streams {
    /// Resolves once no stream has been in progress for `limit`: within twice `limit` of
    /// the last stream's end (the count is looked at once per `limit`).
    pub async fn idle(&self, limit: Duration) {
        let mut seen = self.changes.load(Relaxed);
        loop {
            tokio::time::sleep(limit).await;
            let now = self.changes.load(Relaxed);
            // Nothing began or ended for a whole period, and nothing is open.
            if now == seen && self.open.load(Relaxed) == 0 {
                return;
            }
            seen = now;
        }
    }
}

/// A stream in progress, from its request to the end of its response body (or its reset).
#[derive(Debug)]
pub struct InProgress(Arc<Streams>);

impl InProgress {
    pub fn begin(streams: &Arc<Streams>) -> InProgress {
        streams.open.fetch_add(1, Relaxed);
        streams.changes.fetch_add(1, Relaxed);
        InProgress(streams.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
        self.0.changes.fetch_add(1, Relaxed);
    }
}

/// A response body that keeps its stream [`InProgress`] until hyper drops it.
pub struct Holding<B> {
    body: B,
    _stream: InProgress,
}

impl<B> Holding<B> {
    pub fn new(body: B, stream: InProgress) -> Self {
        Holding {
            body,
            _stream: stream,
        }
    }
}

impl<B: Body + Unpin> Body for Holding<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(30);

    /// Whether `streams` is found idle within `within` of paused time.
    async fn idle_within(streams: &Streams, within: Duration) -> bool {
        tokio::time::timeout(within, streams.idle(LIMIT))
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_streams_is_idle_after_the_limit_not_before() {
        let streams = Streams::default();
        assert!(!idle_within(&streams, LIMIT - Duration::from_secs(1)).await);
        assert!(idle_within(&streams, LIMIT + Duration::from_secs(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_in_progress_keeps_the_connection_busy_however_long() {
        let streams = Arc::new(Streams::default());
        let stream = InProgress::begin(&streams);
        assert!(!idle_within(&streams, LIMIT * 10).await);
        drop(stream);
        assert!(idle_within(&streams, LIMIT * 2 + Duration::from_secs(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_ended_just_before_the_look_counts_as_activity() {
        let streams = Arc::new(Streams::default());
        let watch = streams.clone();
        let idle = tokio::spawn(async move { watch.idle(LIMIT).await });
        // Begins and ends within the first period: the first look must not call it idle.
        tokio::time::sleep(LIMIT - Duration::from_secs(1)).await;
        drop(InProgress::begin(&streams));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!idle.is_finished(), "idle 1 s after a stream ended");
        // The next look, a whole quiet period later, does.
        tokio::time::sleep(LIMIT).await;
        assert!(
            idle.is_finished(),
            "still busy a whole period after the last stream"
        );
    }
}
