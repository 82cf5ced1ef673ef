//! hyper answers an HTTP/1 request it cannot parse by itself, before the gateway sees it:
//! `400` for a malformed request line or header (or conflicting `Content-Length`s, an
//! unknown `Transfer-Encoding`...), `431` for a head over the size or header-count limit,
//! `414` for a request target too long — each with an empty body, then it closes the
//! connection. [`JsonAnswers`] wraps a client connection's I/O under hyper and writes the
//! gateway's JSON error in that answer's place, so every error the gateway makes has the
//! same shape.
//!
//! hyper's answer is recognised by its exact bytes, written alone: the status line,
//! `connection: close`, `content-length: 0`, `date` and the blank line, nothing else. No
//! response the gateway relays or makes is written like that: each carries `x-request-id`.
//! Owns only this substitution; it knows nothing of routing or policies.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{ErrorKind, GatewayError};

/// The most a request head may hold (hyper's read buffer, which it checks between reads:
/// a head that arrives at once may pass it by up to a read); over it hyper answers 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// hyper's limit on header fields; over it hyper answers 431 too.
pub const MAX_HEADERS: usize = 100;

/// What follows hyper's status line, up to the date's value (an IMF-fixdate, 29 bytes).
const BEFORE_DATE: &[u8] = b"\r\nconnection: close\r\ncontent-length: 0\r\ndate: ";
const DATE_LEN: usize = 29;

/// A client connection's I/O, with hyper's parse-error answers written as JSON.
#[derive(Debug)]
pub struct JsonAnswers<T> {
    io: T,
    /// The JSON answer still to write in place of hyper's.
    pending: Option<Bytes>,
}

impl<T> JsonAnswers<T> {
    pub fn new(io: T) -> Self {
        JsonAnswers { io, pending: None }
    }

    pub fn into_inner(self) -> T {
        self.io
    }
}

/// The gateway's answer in place of `written`, when `written` is hyper's parse-error answer.
fn replacement(written: &[u8]) -> Option<Bytes> {
    // Every answer hyper makes is a 4xx: most writes stop at the status's first digit.
    let after_4 = written.strip_prefix(b"HTTP/1.1 4")?;
    let (status_line, error): (&[u8], fn() -> GatewayError) = [
        (&b"00 Bad Request"[..], malformed as fn() -> GatewayError),
        (&b"31 Request Header Fields Too Large"[..], too_large),
        (&b"14 URI Too Long"[..], too_long),
    ]
    .into_iter()
    .find(|(line, _)| after_4.starts_with(line))?;
    let rest = after_4.get(status_line.len()..)?;
    let rest = rest.strip_prefix(BEFORE_DATE)?;
    let (date, end) = rest.split_at_checked(DATE_LEN)?;
    if end != b"\r\n\r\n" {
        return None;
    }
    let body = error().body();
    let mut answer = Vec::with_capacity(160 + body.len());
    answer.extend_from_slice(b"HTTP/1.1 4");
    answer.extend_from_slice(status_line);
    answer.extend_from_slice(
        b"\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: ",
    );
    answer.extend_from_slice(body.len().to_string().as_bytes());
    answer.extend_from_slice(b"\r\ndate: ");
    answer.extend_from_slice(date);
    answer.extend_from_slice(b"\r\n\r\n");
    answer.extend_from_slice(&body);
    Some(Bytes::from(answer))
}

fn malformed() -> GatewayError {
    GatewayError::new(
        ErrorKind::BadRequest,
        "the request is not valid HTTP/1.1: its request line, a header or its framing \
         (Content-Length, Transfer-Encoding) is malformed",
    )
}

fn too_large() -> GatewayError {
    GatewayError::new(
        ErrorKind::HeadersTooLarge,
        format!(
            "the request head is larger than the gateway accepts (about {} KiB) or has more \
             than {MAX_HEADERS} header fields",
            MAX_HEAD_BYTES / 1024
        ),
    )
}

fn too_long() -> GatewayError {
    GatewayError::new(ErrorKind::UriTooLong, "the request target is too long")
}

impl<T: AsyncWrite + Unpin> JsonAnswers<T> {
    /// Writes what is left of the JSON answer, if any.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(rest) = &mut self.pending {
            if !rest.has_remaining() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            rest.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `written` (all of it) in place of hyper's answer when it is one.
    fn substitute(&mut self, cx: &mut Context<'_>, written: &[u8]) -> Option<io::Result<usize>> {
        let answer = replacement(written)?;
        self.pending = Some(answer);
        // hyper's bytes count as written; the JSON answer goes now or at the next flush.
        match self.poll_pending(cx) {
            Poll::Ready(Err(error)) => Some(Err(error)),
            Poll::Ready(Ok(())) | Poll::Pending => Some(Ok(written.len())),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonAnswers<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonAnswers<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(done) = this.substitute(cx, buf) {
            return Poll::Ready(done);
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        // hyper's answer is one buffer: a write of several is never it.
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next())
            && let Some(done) = this.substitute(cx, only)
        {
            return Poll::Ready(done);
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever is written, the check neither panics nor takes anything that is not
        /// hyper's exact answer: a change of any one byte of it is left alone.
        #[test]
        fn only_the_exact_answer_is_taken(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            at in 0usize..200,
            flip in 1u8..=255,
        ) {
            let _ = replacement(&bytes);
            let mut answer = hyper_answer("400 Bad Request");
            let date = answer.len() - 4 - DATE.len()..answer.len() - 4;
            let i = at % answer.len();
            if let Some(byte) = answer.get_mut(i) {
                *byte ^= flip;
            }
            // The date's value is not checked, only its length.
            prop_assert_eq!(replacement(&answer).is_some(), date.contains(&i));
        }
    }

    const DATE: &str = "Thu, 03 Dec 2026 14:29:43 GMT";

    fn hyper_answer(status: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"
        )
        .into_bytes()
    }

    fn parse(answer: &[u8]) -> (u16, Vec<(String, String)>, serde_json::Value) {
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(len) = response.parse(answer).unwrap() else {
            panic!("a complete head");
        };
        let headers = response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let body = serde_json::from_slice(&answer[len..]).unwrap();
        (response.code.unwrap(), headers, body)
    }

    #[test]
    fn each_of_hypers_answers_becomes_json_with_the_same_status() {
        for (status, code, kind) in [
            ("400 Bad Request", 400, "bad_request"),
            (
                "431 Request Header Fields Too Large",
                431,
                "headers_too_large",
            ),
            ("414 URI Too Long", 414, "uri_too_long"),
        ] {
            let answer = replacement(&hyper_answer(status)).expect("recognised");
            let (got, headers, body) = parse(&answer);
            assert_eq!(got, code);
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(header("content-type"), Some("application/json"));
            assert_eq!(header("connection"), Some("close"));
            assert_eq!(header("date"), Some(DATE));
            let length = header("content-length").unwrap().parse::<usize>().unwrap();
            assert_eq!(
                length,
                answer.len() - answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() - 4
            );
            assert_eq!(body["status"], code);
            assert_eq!(body["error"], kind);
            assert!(body["message"].as_str().unwrap().len() > 20, "{body}");
        }
    }

    #[test]
    fn anything_else_is_left_alone() {
        let mut longer = hyper_answer("400 Bad Request");
        longer.extend_from_slice(b"x");
        let mut with_id = b"HTTP/1.1 400 Bad Request\r\nx-request-id: 1".to_vec();
        with_id.extend_from_slice(&hyper_answer("400 Bad Request")[24..]);
        for written in [
            longer,
            with_id,
            hyper_answer("404 Not Found"),
            hyper_answer("400 Bad Request")[..60].to_vec(),
            b"HTTP/1.0 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Thu, 03 Dec 2026 14:29:43 GMT\r\n\r\n".to_vec(),
            b"{\"body\": 1}".to_vec(),
            Vec::new(),
        ] {
            assert!(replacement(&written).is_none(), "{}", String::from_utf8_lossy(&written));
        }
    }

    #[tokio::test]
    async fn the_answer_replaces_hypers_on_the_wire_and_other_bytes_pass() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (near, mut far) = tokio::io::duplex(64);
        let mut io = JsonAnswers::new(near);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        io.write_all(ok).await.unwrap();
        let hyper = hyper_answer("400 Bad Request");
        // Written whole (the pipe takes 64 bytes at a time: the rest goes at the flush).
        let n = std::future::poll_fn(|cx| Pin::new(&mut io).poll_write(cx, &hyper))
            .await
            .unwrap();
        assert_eq!(n, hyper.len());
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            far.read_to_end(&mut all).await.map(|_| all)
        });
        io.shutdown().await.unwrap();
        drop(io);
        let all = reader.await.unwrap().unwrap();
        let (first, second) = all.split_at(ok.len());
        assert_eq!(first, ok);
        let (code, _, body) = parse(second);
        assert_eq!((code, body["error"].as_str()), (400, Some("bad_request")));
    }
}
