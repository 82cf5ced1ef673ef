//! A request body that counts the bytes passing through it, as they stream, notes when it
//! ends, and may stop them at a limit.

use std::error::Error;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// How far a request body has streamed: written by its [`Counted`] body, read by the
/// exchange that logs it and by the backend's response timer.
#[derive(Debug, Default)]
pub struct BodyProgress {
    bytes: AtomicU64,
    /// Its last poll found nothing from the client yet (rather than the backend's side not
    /// asking for more).
    waiting_for_client: AtomicBool,
    /// When its last frame passed (not set for a body that had none to send).
    ended: OnceLock<Instant>,
}

impl BodyProgress {
    /// The bytes passed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether the body is waiting for the client to send more: when it is not and has not
    /// ended, the backend's side has stopped taking it.
    pub fn waiting_for_client(&self) -> bool {
        self.waiting_for_client.load(Ordering::Relaxed)
    }

    /// When the body ended, once it has.
    pub fn ended(&self) -> Option<Instant> {
        self.ended.get().copied()
    }

    fn end(&self) {
        let _ = self.ended.set(Instant::now());
    }
}

/// A request body that counts the bytes passing through it (into its [`BodyProgress`], which
/// only it writes). Kept small: hyper moves the request that holds it several times.
pub struct Counted<B> {
    inner: B,
    progress: Arc<BodyProgress>,
    /// Beyond this many bytes the body fails with [`TooLarge`] (`u64::MAX`: no limit).
    limit: u64,
}

/// The body went past its limit; the frame that crossed it was not passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request body is larger than this API proxy accepts ({limit} bytes)")]
pub struct TooLarge {
    pub limit: u64,
}

impl TooLarge {
    /// `error` or one of its sources is a [`TooLarge`].
    pub fn within(error: &(dyn Error + 'static)) -> Option<TooLarge> {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(found) = error.downcast_ref::<TooLarge>() {
                return Some(*found);
            }
            next = error.source();
        }
        None
    }
}

/// The client's body failed while it streamed (malformed chunked encoding, a connection
/// closed mid-body): the request is at fault, not the backend it was going to.
#[derive(Debug, thiserror::Error)]
#[error("the request body could not be read: {cause}")]
pub struct BrokenBody {
    /// The innermost cause, as a sentence.
    cause: String,
}

impl BrokenBody {
    fn new(error: &(dyn Error + 'static)) -> Self {
        let mut inner = error;
        while let Some(source) = inner.source() {
            inner = source;
        }
        BrokenBody {
            cause: inner.to_string(),
        }
    }

    /// `error` or one of its sources is a [`BrokenBody`].
    pub fn within<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a BrokenBody> {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(found) = error.downcast_ref::<BrokenBody>() {
                return Some(found);
            }
            next = error.source();
        }
        None
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        this.progress
            .waiting_for_client
            .store(polled.is_pending(), Ordering::Relaxed);
        let frame = match polled {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                this.progress.end();
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(error))) => {
                let error: Box<dyn Error + Send + Sync> = error.into();
                return Poll::Ready(Some(Err(Box::new(BrokenBody::new(&*error)))));
            }
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            let passed = this.progress.bytes().saturating_add(len);
            if passed > this.limit {
                let limit = this.limit;
                return Poll::Ready(Some(Err(Box::new(TooLarge { limit }))));
            }
            this.progress.bytes.store(passed, Ordering::Relaxed);
        }
        // hyper stops polling a body that says it has ended (a `Content-Length` body after
        // its last byte).
        if this.inner.is_end_stream() {
            this.progress.end();
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Counted<B> {
    pub fn new(inner: B, progress: Arc<BodyProgress>) -> Self {
        Counted {
            inner,
            progress,
            limit: u64::MAX,
        }
    }

    /// Fails the body once more than `limit` bytes have passed (none: no limit).
    pub fn with_limit(mut self, limit: Option<u64>) -> Self {
        self.limit = limit.unwrap_or(u64::MAX);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};
    use std::convert::Infallible;

    fn chunks(sizes: &[usize]) -> impl Body<Data = Bytes, Error = Infallible> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = sizes
            .iter()
            .map(|n| Ok(Frame::data(Bytes::from(vec![b'x'; *n]))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn the_frame_crossing_the_limit_fails_the_body() {
        let progress = Arc::new(BodyProgress::default());
        let mut body = Counted::new(chunks(&[4, 4, 4]), progress.clone()).with_limit(Some(9));
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_ok());
        let error = body.frame().await.unwrap().unwrap_err();
        assert_eq!(TooLarge::within(&*error), Some(TooLarge { limit: 9 }));
        assert_eq!(progress.bytes(), 8, "only what passed");
        assert_eq!(progress.ended(), None, "a failed body never ended");

        let exact = Counted::new(chunks(&[4, 5]), Arc::default()).with_limit(Some(9));
        assert_eq!(exact.collect().await.unwrap().to_bytes().len(), 9);
        let unlimited = Counted::new(chunks(&[4, 5]), Arc::default());
        assert_eq!(unlimited.collect().await.unwrap().to_bytes().len(), 9);
    }

    #[tokio::test]
    async fn the_end_is_noted_when_the_last_frame_passes() {
        let progress = Arc::new(BodyProgress::default());
        let mut body = Counted::new(chunks(&[3, 2]), progress.clone());
        assert!(body.frame().await.unwrap().is_ok());
        assert_eq!((progress.bytes(), progress.ended()), (3, None));
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.is_none());
        let ended = progress.ended().expect("ended after the last frame");
        // A body that says it has ended is not polled again: its last frame ends it.
        let sized = Arc::new(BodyProgress::default());
        let mut one = Counted::new(Full::new(Bytes::from_static(b"abc")), sized.clone());
        assert!(one.frame().await.unwrap().is_ok());
        assert!(sized.ended().is_some_and(|at| at >= ended));
        assert_eq!(sized.bytes(), 3);
    }
}
