//! The backend half of the WebSocket handshake, by hand: the upgrade request's head goes out
//! in one write and the answer is read until its head is complete. A 101 hands over the
//! socket and whatever followed its head (the backend's first frames) with no HTTP machinery
//! left on it; any other answer is read again by hyper, as a whole response with its body,
//! from the bytes already read. Knows nothing of routes, policies or metrics.

use bytes::{Bytes, BytesMut};
use http::header;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::error::MAX_HEADERS;
use crate::proxy::headers::{http1_head, list_items, value_items, value_lists};
use crate::upstream::MAX_RESPONSE_HEAD as MAX_HEAD;

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the connection closed before the answer's head was complete")]
    Closed,
    #[error("the answer is not valid HTTP/1.1 ({0})")]
    Malformed(httparse::Error),
    #[error("the answer's head is longer than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("the answer's status {0} is not a valid status code")]
    Status(u16),
    #[error("the answer's header {0:?} is not valid")]
    Header(String),
    #[error("its refusal could not be read: {0}")]
    Refusal(#[from] hyper::Error),
    #[error("its 101 is not a WebSocket answer to the request: {0}")]
    NotWebSocket(&'static str),
}

/// What the backend answered to the upgrade request.
#[derive(Debug)]
pub enum Answer {
    /// 101: its headers, and the bytes that followed the head.
    Switched { headers: HeaderMap, rest: Bytes },
    /// Anything else: its status, and everything read so far from the final answer's head on.
    Refused { status: StatusCode, read: Bytes },
}

impl Answer {
    pub fn status(&self) -> StatusCode {
        match self {
            Answer::Switched { .. } => StatusCode::SWITCHING_PROTOCOLS,
            Answer::Refused { status, .. } => *status,
        }
    }
}

/// The request head: `GET` in origin form, each header on its line.
pub fn request_head(path_and_query: &str, headers: &HeaderMap) -> Vec<u8> {
    http1_head(&[b"GET ", path_and_query.as_bytes(), b" HTTP/1.1"], headers)
}

/// One parse of the bytes read so far.
#[derive(Debug)]
pub enum Head {
    /// The head is not complete yet.
    Partial,
    /// An interim answer (1xx other than 101) of this many bytes, to skip.
    Interim(usize),
    /// A 101 whose head is this many bytes.
    Switched {
        len: usize,
        headers: HeaderMap,
    },
    Refused(StatusCode),
}

pub fn parse(buf: &[u8]) -> Result<Head, AnswerError> {
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(AnswerError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(Head::Partial),
        Err(error) => return Err(AnswerError::Malformed(error)),
    };
    let code = response.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| AnswerError::Status(code))?;
    if status != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(if status.is_informational() {
            Head::Interim(len)
        } else {
            Head::Refused(status)
        });
    }
    // Room for what the client's 101 gains (`X-Request-Id`, a policy's headers): a full map
    // would grow, rehashing every header.
    let mut headers = HeaderMap::with_capacity(response.headers.len() + 4);
    for line in response.headers.iter() {
        let invalid = || AnswerError::Header(line.name.to_owned());
        let name = HeaderName::from_bytes(line.name.as_bytes()).map_err(|_| invalid())?;
        let value = HeaderValue::from_bytes(line.value).map_err(|_| invalid())?;
        headers.append(name, value);
    }
    Ok(Head::Switched { len, headers })
}

/// Checks a 101 as the client would (RFC 6455 §4.1), so that a backend that is not a
/// WebSocket server, or one that chose what was not offered, gets the client a 502 rather
/// than a session the client must fail: `Upgrade: websocket` and `Connection: upgrade`, the
/// `Sec-WebSocket-Accept` derived from the request's key, at most one subprotocol (one the
/// request offered), and only extensions the request offered.
pub fn check_switch(request: &HeaderMap, answer: &HeaderMap) -> Result<(), AnswerError> {
    let not = |why| Err(AnswerError::NotWebSocket(why));
    // An extension's name is what comes before its parameters (`x; a=1`).
    fn extension(item: &str) -> &str {
        item.split(';').next().unwrap_or_default().trim()
    }
    let offered = |item: &str| {
        list_items(request, header::SEC_WEBSOCKET_EXTENSIONS)
            .any(|asked| extension(asked).eq_ignore_ascii_case(extension(item)))
    };
    // One pass over the answer's few lines rather than a lookup per name; the accept and the
    // subprotocol must come once each.
    let (mut upgrade, mut connection) = (false, false);
    let (mut accept, mut accepts, mut chosen, mut choices) = (None, 0, None, 0);
    for (name, value) in answer {
        if *name == header::UPGRADE {
            upgrade |= value_lists(value, "websocket");
        } else if *name == header::CONNECTION {
            connection |= value_lists(value, "upgrade");
        } else if *name == header::SEC_WEBSOCKET_ACCEPT {
            (accept, accepts) = (Some(value), accepts + 1);
        } else if *name == header::SEC_WEBSOCKET_PROTOCOL {
            (chosen, choices) = (Some(value), choices + 1);
        } else if *name == header::SEC_WEBSOCKET_EXTENSIONS && !value_items(value).all(offered) {
            return not("it accepted an extension the client did not offer");
        }
    }
    if !upgrade || !connection {
        return not("it lacks `Upgrade: websocket` or `Connection: upgrade`");
    }
    let key = request
        .get(header::SEC_WEBSOCKET_KEY)
        .map_or(&b""[..], HeaderValue::as_bytes);
    let proved = accept.is_some_and(|a| a.as_bytes() == derive_accept_key(key).as_bytes());
    if accepts != 1 || !proved {
        return not("its `Sec-WebSocket-Accept` is not the one the request's key asks for");
    }
    let fits = chosen.is_none_or(|one| {
        list_items(request, header::SEC_WEBSOCKET_PROTOCOL).any(|p| p.as_bytes() == one.as_bytes())
    });
    if choices > 1 || !fits {
        return not("it chose a subprotocol the client did not offer");
    }
    Ok(())
}

/// Sends the request head and reads until the final answer's head is complete.
pub async fn ask<S>(stream: &mut S, head: &[u8]) -> Result<Answer, AnswerError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(head).await?;
    stream.flush().await?;
    let mut buf = BytesMut::with_capacity(1024);
    // How much of `buf` is known to hold no head's end (after a partial parse).
    let mut searched = 0;
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(AnswerError::Closed);
        }
        // Interim answers are dropped; what follows them may already be here.
        while !buf.is_empty() {
            // After a partial head, parsed again only once an empty line (a head's end) has
            // arrived: a head sent a byte at a time costs one scan, not a parse per byte.
            if searched > 0 && !has_empty_line(&buf, &mut searched) {
                if buf.len() >= MAX_HEAD {
                    return Err(AnswerError::TooLarge);
                }
                break;
            }
            match parse(&buf)? {
                Head::Partial => {
                    searched = buf.len();
                    break;
                }
                Head::Interim(len) => {
                    drop(buf.split_to(len));
                    searched = 0;
                }
                Head::Switched { len, headers } => {
                    drop(buf.split_to(len));
                    let rest = buf.freeze();
                    return Ok(Answer::Switched { headers, rest });
                }
                Head::Refused(status) => {
                    let read = buf.freeze();
                    return Ok(Answer::Refused { status, read });
                }
            }
        }
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len());
        }
    }
}

/// Whether `buf` holds the end of a head (CRLF CRLF, or LF LF as httparse also accepts),
/// searching only what arrived since the last look (and the three bytes before it).
fn has_empty_line(buf: &[u8], searched: &mut usize) -> bool {
    let from = searched.saturating_sub(3);
    *searched = buf.len();
    buf.get(from..)
        .unwrap_or_default()
        .windows(2)
        .any(|pair| pair == b"\n\r" || pair == b"\n\n")
}

/// A refusal as hyper reads it — head and streamed body — from the bytes [`ask`] read and
/// the rest of the connection, which stays open (driven by a task) until the body is done.
pub async fn refusal<S>(stream: S, read: Bytes) -> Result<Response<Incoming>, AnswerError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Replay {
        read,
        stream,
        written: false,
        reader: None,
    });
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    let mut connection = Some(connection);
    let asked = sender.send_request(Request::new(Empty::<Bytes>::new()));
    let answered = async {
        let mut asked = std::pin::pin!(asked);
        if let Some(driving) = connection.as_mut() {
            tokio::select! {
                response = asked.as_mut() => return response,
                // The connection ended first: the request says why.
                _ = driving => connection = None,
            }
        }
        asked.await
    };
    let response = answered.await?;
    if let Some(connection) = connection {
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "backend connection ended after a refused upgrade");
            }
        });
    }
    Ok(response)
}

/// The backend connection as hyper sees it when it reads a refusal: the bytes already read
/// first, then the socket. The request went out already; hyper's copy of it goes nowhere.
/// Nothing is readable before that copy is written: hyper takes bytes on an idle connection
/// for an unexpected message.
struct Replay<S> {
    read: Bytes,
    stream: S,
    written: bool,
    reader: Option<Waker>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.written {
            self.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if self.read.is_empty() {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        let part = self.read.split_to(n);
        buf.put_slice(&part);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written = true;
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SWITCHED: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
        Sec-WebSocket-Protocol: v2\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n";

    #[test]
    fn the_request_head_is_the_path_and_every_header() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("b:80"));
        headers.append("x-tag", HeaderValue::from_static("one"));
        headers.append("x-tag", HeaderValue::from_static("two"));
        let head = request_head("/ws?a=%20b", &headers);
        assert_eq!(
            String::from_utf8_lossy(&head),
            "GET /ws?a=%20b HTTP/1.1\r\nhost: b:80\r\nx-tag: one\r\nx-tag: two\r\n\r\n"
        );
    }

    fn map(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in lines {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn a_101_is_checked_as_the_client_would() {
        // RFC 6455 §1.3's key and its accept.
        let request = map(&[
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "chat, v2"),
            (
                "sec-websocket-extensions",
                "permessage-deflate; client_max_window_bits",
            ),
        ]);
        let good = [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ];
        let with = |changes: &[(&'static str, Option<&'static str>)]| {
            let mut lines: Vec<_> = good
                .iter()
                .filter(|(name, _)| !changes.iter().any(|(n, _)| n == name))
                .copied()
                .collect();
            lines.extend(changes.iter().filter_map(|(n, v)| v.map(|v| (*n, v))));
            map(&lines)
        };
        for (changes, problem) in [
            (vec![], None),
            (
                vec![
                    ("upgrade", Some("WebSocket")),
                    ("connection", Some("keep-alive, upgrade")),
                ],
                None,
            ),
            (vec![("sec-websocket-protocol", Some("v2"))], None),
            (
                vec![(
                    "sec-websocket-extensions",
                    Some("Permessage-Deflate; server_no_context_takeover"),
                )],
                None,
            ),
            (vec![("upgrade", None)], Some("Upgrade: websocket")),
            (
                vec![("connection", Some("keep-alive"))],
                Some("Connection: upgrade"),
            ),
            (vec![("sec-websocket-accept", None)], Some("Accept")),
            (
                vec![("sec-websocket-accept", Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA="))],
                Some("Accept"),
            ),
            (
                vec![("sec-websocket-protocol", Some("evil"))],
                Some("subprotocol"),
            ),
            (
                vec![("sec-websocket-protocol", Some("chat, v2"))],
                Some("subprotocol"),
            ),
            (
                vec![("sec-websocket-extensions", Some("x-webkit-deflate-frame"))],
                Some("extension"),
            ),
        ] {
            let result = check_switch(&request, &with(&changes));
            match (problem, result) {
                (None, Ok(())) => {}
                (Some(problem), Err(error)) => {
                    assert!(error.to_string().contains(problem), "{changes:?}: {error}");
                }
                (problem, result) => panic!("{changes:?}: expected {problem:?}, got {result:?}"),
            }
        }
        // Nothing offered: neither a subprotocol nor an extension may be chosen.
        let bare = map(&[("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")]);
        assert!(check_switch(&bare, &with(&[])).is_ok());
        for extra in [
            ("sec-websocket-protocol", Some("chat")),
            ("sec-websocket-extensions", Some("permessage-deflate")),
        ] {
            assert!(check_switch(&bare, &with(&[extra])).is_err(), "{extra:?}");
        }
    }

    #[test]
    fn a_101_gives_its_length_and_every_header_in_order() {
        let Ok(Head::Switched { len, headers }) = parse(SWITCHED) else {
            panic!("a complete 101");
        };
        assert_eq!(len, SWITCHED.len());
        assert_eq!(headers["sec-websocket-protocol"], "v2");
        let cookies: Vec<_> = headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
    }

    #[test]
    fn interim_answers_are_skipped_and_others_refuse() {
        let early = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n";
        assert!(matches!(parse(early), Ok(Head::Interim(n)) if n == early.len()));
        let refused = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno";
        assert!(matches!(
            parse(refused),
            Ok(Head::Refused(StatusCode::FORBIDDEN))
        ));
    }

    #[test]
    fn broken_answers_are_errors_with_a_reason() {
        for (bytes, want) in [
            (&b"SSH-2.0-OpenSSH\r\n\r\n"[..], "not valid HTTP/1.1"),
            (
                b"HTTP/1.1 101 OK\r\nBad Name: x\r\n\r\n",
                "not valid HTTP/1.1",
            ),
            (b"HTTP/1.1 101 OK\r\nx: \x01\r\n\r\n", "not valid HTTP/1.1"),
        ] {
            match parse(bytes) {
                Err(error) => assert!(error.to_string().contains(want), "{error}"),
                Ok(head) => panic!("{head:?} from {:?}", String::from_utf8_lossy(bytes)),
            }
        }
        let long = [b"HTTP/1.1 101 OK\r\nx: ".as_slice(), &[b'a'; MAX_HEAD]].concat();
        assert!(matches!(parse(&long), Err(AnswerError::TooLarge)));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        let many = format!("HTTP/1.1 101 OK\r\n{many}\r\n");
        assert!(matches!(
            parse(many.as_bytes()),
            Err(AnswerError::Malformed(_))
        ));
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        match tokio::runtime::Builder::new_current_thread().build() {
            Ok(runtime) => runtime.block_on(future),
            Err(error) => panic!("a runtime: {error}"),
        }
    }

    /// A backend answering with `answer` in pieces of `step` bytes (a 1-byte step reads
    /// every partial head).
    fn ask_in_pieces(answer: &[u8], step: usize) -> (Result<Answer, AnswerError>, Vec<u8>) {
        block_on(async {
            let (mut gateway, backend) = tokio::io::duplex(1 << 20);
            let (mut from, mut to) = tokio::io::split(backend);
            let answer = answer.to_vec();
            let backend = tokio::spawn(async move {
                let mut request = vec![0; 9];
                let _ = from.read_exact(&mut request).await;
                for piece in answer.chunks(step.max(1)) {
                    let _ = to.write_all(piece).await;
                }
                request
            });
            let answer = ask(&mut gateway, b"GET / HTT").await;
            drop(gateway);
            (answer, backend.await.unwrap_or_default())
        })
    }

    #[test]
    fn ask_returns_the_frames_behind_a_101_after_interim_answers() {
        let frame = b"\x81\x02hi";
        let whole = [&b"HTTP/1.1 100 Continue\r\n\r\n"[..], SWITCHED, frame].concat();
        for step in [1, 7, whole.len()] {
            let (answer, request) = ask_in_pieces(&whole, step);
            assert_eq!(request, b"GET / HTT");
            match answer {
                Ok(Answer::Switched { headers, rest }) => {
                    assert_eq!(headers["upgrade"], "websocket");
                    // In pieces, the read may stop at the head; whatever came is the frame's.
                    assert!(frame.starts_with(&rest), "step {step}: {rest:?}");
                    if step == whole.len() {
                        assert_eq!(&rest[..], frame);
                    }
                }
                other => panic!("step {step}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_refusal_is_read_again_by_hyper_with_its_chunked_body() {
        let refused = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 Forbidden\r\n\
            Transfer-Encoding: chunked\r\nX-Why: policy\r\n\r\n3\r\nno \r\n5\r\ntoken\r\n0\r\n\r\n";
        for step in [5, refused.len()] {
            let got = block_on(async {
                let (mut gateway, mut backend) = tokio::io::duplex(1 << 20);
                let (answer, body) = tokio::join!(
                    async {
                        let Answer::Refused { status, read } = ask(&mut gateway, b"GET").await?
                        else {
                            panic!("a refusal");
                        };
                        assert_eq!(status, 403);
                        let response = refusal(gateway, read).await?;
                        let why = response.headers()["x-why"].clone();
                        let body = http_body_util::BodyExt::collect(response.into_body()).await?;
                        Ok::<_, AnswerError>((why, body.to_bytes()))
                    },
                    async {
                        let mut request = [0; 3];
                        let _ = backend.read_exact(&mut request).await;
                        for piece in refused.chunks(step) {
                            let _ = backend.write_all(piece).await;
                        }
                        backend
                    }
                );
                drop(body);
                answer
            });
            match got {
                Ok((why, body)) => {
                    assert_eq!(why, "policy");
                    assert_eq!(&body[..], b"no token");
                }
                Err(error) => panic!("step {step}: {error}"),
            }
        }
    }

    #[test]
    fn a_head_without_an_end_stops_at_the_limit() {
        let endless = [
            b"HTTP/1.1 101 OK\r\nx: ".as_slice(),
            &[b'a'; MAX_HEAD + 1000],
        ]
        .concat();
        let (answer, _) = ask_in_pieces(&endless, 1000);
        assert!(matches!(answer, Err(AnswerError::TooLarge)), "{answer:?}");
    }

    #[test]
    fn a_backend_closing_early_is_an_error() {
        let (answer, _) = ask_in_pieces(b"HTTP/1.1 101 Switching", 4);
        assert!(matches!(answer, Err(AnswerError::Closed)), "{answer:?}");
    }

    proptest! {
        /// Any bytes: an answer or an error, never a panic; a complete 101 is found at
        /// its exact length whatever follows it.
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
            let with = [SWITCHED, &bytes].concat();
            let found = matches!(parse(&with), Ok(Head::Switched { len, .. }) if len == SWITCHED.len());
            prop_assert!(found);
        }

        /// Every prefix of a valid answer is partial, never an error.
        #[test]
        fn prefixes_are_partial(cut in 0..SWITCHED.len()) {
            let partial = matches!(parse(&SWITCHED[..cut]), Ok(Head::Partial));
            prop_assert!(partial);
        }
    }
}
