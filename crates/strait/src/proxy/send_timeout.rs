//! The `send` timeout of a client connection served by hyper: a client that takes nothing
//! for that long while the gateway has bytes for it is cut, as nginx's `send_timeout` does.
//! Without it a client that stops reading a response holds its connection and the backend
//! connection behind it for ever.
//!
//! [`SendTimeout`] wraps the connection's I/O and arms a timer only when a write cannot
//! proceed (the client's receive window and the socket buffer are full); the next write
//! that proceeds disarms it. Writes that go through at once, nearly all of them, cost one
//! branch. Owns only this timer; it knows nothing of requests.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::WaitTimer;

/// A client connection's I/O, cut once a write has waited `limit`.
#[derive(Debug)]
pub struct SendTimeout<T> {
    io: T,
    limit: Duration,
    /// Runs while a write waits for the client.
    timer: WaitTimer,
}

impl<T> SendTimeout<T> {
    pub fn new(io: T, limit: Duration) -> Self {
        SendTimeout {
            io,
            limit,
            timer: WaitTimer::default(),
        }
    }

    pub fn into_inner(self) -> T {
        self.io
    }

    /// `written` as the caller sees it: a write still waiting once the limit has passed
    /// becomes an error.
    fn guard<R>(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if written.is_ready() {
            self.timer.end();
            return written;
        }
        ready!(self.timer.poll_expired(cx, self.limit));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client took nothing for {:?}", self.limit),
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        this.guard(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.guard(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.io).poll_flush(cx);
        this.guard(cx, flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let shut = Pin::new(&mut this.io).poll_shutdown(cx);
        this.guard(cx, shut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_write_waiting_past_the_limit_fails_and_one_that_proceeds_disarms() {
        let (near, mut far) = duplex(8);
        let mut io = SendTimeout::new(near, Duration::from_secs(60));
        // The far end reads in time: a write waiting 59 s at most goes through.
        io.write_all(b"12345678").await.unwrap();
        let writing = io.write_all(b"abcdefgh");
        let reading = async {
            tokio::time::sleep(Duration::from_secs(59)).await;
            let mut got = [0; 8];
            far.read_exact(&mut got).await.unwrap();
            got
        };
        let (written, got) = tokio::join!(writing, reading);
        written.unwrap();
        assert_eq!(&got, b"12345678");
        // Now the far end stops reading: the waiting write fails after 60 s, not before.
        let started = Instant::now();
        let error = io.write_all(b"more").await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }
}
