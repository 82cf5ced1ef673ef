//! A request body that comes back when an attempt failed before any of it was sent, so a
//! retry on another target can send it again — and never once a byte went out.
//!
//! The HTTP client owns the body it sends. [`Replay::new`] gives the body and a [`Returned`]
//! handle: when the client drops the body without having passed on a byte of data (the
//! connect failed; an empty body), the body's state goes back through a oneshot, and
//! [`Returned::take`] hands it to the next attempt. No lock: one oneshot per attempt, and
//! only when retries are possible.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

/// Where an unsent body stands.
enum State<B> {
    Body(B),
    /// The body ended without data: replaying it is sending nothing.
    Ended,
}

/// A request body for one attempt.
pub struct Replay<B> {
    state: Option<State<B>>,
    /// The way back, dropped once some data went out and the body can no longer be sent
    /// again.
    back: Option<oneshot::Sender<State<B>>>,
}

/// The way back of an attempt's body.
pub struct Returned<B>(oneshot::Receiver<State<B>>);

impl<B> Replay<B> {
    /// A body that is sent once, whatever happens.
    pub fn once(body: B) -> Self {
        Replay {
            state: Some(State::Body(body)),
            back: None,
        }
    }

    /// A body that has ended: nothing to send.
    pub fn ended() -> Self {
        Replay {
            state: Some(State::Ended),
            back: None,
        }
    }

    /// A body that comes back through the handle if dropped unsent.
    pub fn new(body: B) -> (Self, Returned<B>) {
        Self::from_state(State::Body(body))
    }

    fn from_state(state: State<B>) -> (Self, Returned<B>) {
        let (tx, rx) = oneshot::channel();
        let replay = Replay {
            state: Some(state),
            back: Some(tx),
        };
        (replay, Returned(rx))
    }
}

impl<B> Returned<B> {
    /// The body again for another attempt, if the last one dropped it unsent.
    pub fn take(mut self) -> Option<(Replay<B>, Returned<B>)> {
        self.0.try_recv().ok().map(Replay::from_state)
    }
}

impl<B> Drop for Replay<B> {
    fn drop(&mut self) {
        if let (Some(back), Some(state)) = (self.back.take(), self.state.take()) {
            let _ = back.send(state);
        }
    }
}

impl<B> Body for Replay<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(State::Body(body)) = this.state.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) if this.back.is_some() => this.state = Some(State::Ended),
            Poll::Ready(Some(Ok(frame))) if frame.data_ref().is_none_or(|d| d.is_empty()) => {}
            Poll::Ready(Some(_)) => this.back = None,
            Poll::Ready(None) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            Some(State::Body(body)) => body.is_end_stream(),
            Some(State::Ended) | None => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            Some(State::Body(body)) => body.size_hint(),
            Some(State::Ended) | None => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    #[tokio::test]
    async fn an_unsent_body_comes_back_whole() {
        let (body, back) = Replay::new(Full::new(Bytes::from_static(b"hello")));
        drop(body);
        let (again, _back) = back.take().expect("the body came back");
        let bytes = again.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "hello");
    }

    #[tokio::test]
    async fn a_body_that_sent_data_never_comes_back() {
        let (mut body, back) = Replay::new(Full::new(Bytes::from_static(b"hello")));
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "hello");
        drop(body);
        assert!(back.take().is_none());
    }

    #[tokio::test]
    async fn an_empty_body_read_to_its_end_comes_back_empty() {
        let stream = futures_util::stream::iter(Vec::<Result<Frame<Bytes>, std::io::Error>>::new());
        let (mut body, back) = Replay::new(StreamBody::new(stream));
        assert!(body.frame().await.is_none());
        drop(body);
        let (mut again, _back) = back.take().expect("an empty body can be sent again");
        assert!(again.is_end_stream());
        assert!(again.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_body_sent_once_never_comes_back() {
        let body = Replay::once(Full::new(Bytes::from_static(b"x")));
        assert!(!body.is_end_stream());
        drop(body);
    }
}
