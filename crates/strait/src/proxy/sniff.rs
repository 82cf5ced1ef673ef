//! The first look at a plain-TCP connection, before hyper serves it. It peeks — consumes
//! nothing — to tell the HTTP/2 preface from HTTP/1, and when the first request is a
//! complete WebSocket upgrade head, serves that handshake without a hyper connection:
//! a connection that becomes a session needs none, and hyper's set-up and upgrade hand-off
//! were a fifth of a session's cost. Only a 101 consumes the head; any other answer (a
//! policy's refusal, the backend's, an error) goes to hyper with the head still unread, so
//! hyper reads the same request again, sends that answer and serves the connection on.
//! Anything else — a head split over several packets, larger than [`PEEK`], with a body,
//! or not an upgrade — is hyper's from the start.

use std::io;
use std::mem::MaybeUninit;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::exchange::Logged;
use super::headers::{ADDED_TO_REQUEST, http1_head};
use super::pipeline::{ConnInfo, Shared, handle_upgrade, is_websocket_upgrade};
use super::websocket::handshake::ClientSide;
use crate::error::MAX_HEADERS;
use crate::io::TcpOrTls;

/// What an HTTP/2 client sends first on a connection without TLS (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The most of a first request looked at; a longer head goes to hyper.
const PEEK: usize = 4096;

/// What the connection's first bytes say.
#[derive(Debug)]
pub enum FirstLook {
    Http2,
    Http1,
    /// HTTP/1.1 starting with a complete WebSocket upgrade request (boxed: the request
    /// head is large, the other answers empty).
    Upgrade(Box<Upgrade>),
}

/// A WebSocket upgrade request read from the socket without consuming it.
#[derive(Debug)]
pub struct Upgrade {
    pub req: Request<()>,
    /// The head's length: what a 101 consumes.
    len: usize,
}

/// Peeks at a new connection's first bytes. Waits while what has come is a strict prefix
/// of the HTTP/2 preface (an HTTP/1 request differs at its first byte).
pub async fn first_look(tcp: &TcpStream) -> io::Result<FirstLook> {
    // Not zeroed (that was a tenth of a session's set-up): peeked into as uninitialised.
    let mut buf = Vec::with_capacity(PEEK);
    let mut pause = Duration::from_millis(1);
    loop {
        let mut peeked = ReadBuf::uninit(buf.spare_capacity_mut());
        std::future::poll_fn(|cx| tcp.poll_peek(cx, &mut peeked)).await?;
        let got = peeked.filled();
        let n = got.len();
        if got.starts_with(H2_PREFACE) {
            return Ok(FirstLook::Http2);
        }
        if n == 0 || !H2_PREFACE.starts_with(got) {
            return Ok(
                upgrade_head(got).map_or(FirstLook::Http1, |u| FirstLook::Upgrade(Box::new(u)))
            );
        }
        // Part of the preface: the rest is on its way. Peeked bytes keep the socket
        // readable, so wait a little (longer each time: a client that stops mid-preface
        // costs a few wake-ups until the head timeout, not a spin).
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// `buf` as a WebSocket upgrade request, if it starts with a complete, valid one without a
/// body. Any other first request (every new HTTP connection's) costs a parse and no copy;
/// an upgrade's header values share one copy of its head, as hyper's do.
fn upgrade_head(buf: &[u8]) -> Option<Upgrade> {
    if !buf.starts_with(b"GET ") {
        return None;
    }
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => return None,
    };
    let asks_upgrade = parsed
        .headers
        .iter()
        .any(|line| line.name.eq_ignore_ascii_case("upgrade"));
    if parsed.version != Some(1) || !asks_upgrade {
        return None;
    }
    let head = Bytes::copy_from_slice(buf.get(..len)?);
    // `part` lies within `buf`'s first `len` bytes (httparse slices its input): the same
    // bytes of `head`.
    let shared = |part: &[u8]| {
        let start = (part.as_ptr() as usize).checked_sub(buf.as_ptr() as usize)?;
        let end = start.checked_add(part.len()).filter(|end| *end <= len)?;
        Some(head.slice(start..end))
    };
    let uri = Uri::from_maybe_shared(shared(parsed.path?.as_bytes())?).ok()?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len() + ADDED_TO_REQUEST);
    for line in parsed.headers.iter() {
        let name = HeaderName::from_bytes(line.name.as_bytes()).ok()?;
        let value = match line.value {
            [] => HeaderValue::from_static(""),
            value => HeaderValue::from_maybe_shared(shared(value)?).ok()?,
        };
        headers.append(name, value);
    }
    // A body (which an upgrade request should not have) is hyper's to frame.
    let bodyless = !headers.contains_key(http::header::TRANSFER_ENCODING)
        && headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .all(|v| v.as_bytes() == b"0");
    let mut req = Request::new(());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    (bodyless && is_websocket_upgrade(&req)).then_some(Upgrade { req, len })
}

/// Serves the upgrade: on a 101, consumes the head, writes the 101 and hands the
/// connection to the session (`None`); otherwise gives back the connection, its head
/// unread, with the answer for hyper to send.
pub async fn serve(
    shared: &Shared,
    conn: &ConnInfo,
    mut tcp: TcpStream,
    upgrade: Box<Upgrade>,
    timeout: Duration,
) -> Option<(TcpStream, Response<Logged>)> {
    let (session, client) = oneshot::channel();
    let response = handle_upgrade(shared, conn, upgrade.req, ClientSide::Direct(client)).await;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Some((tcp, response));
    }
    let head = response_head(&response);
    let mut consumed = vec![0u8; upgrade.len];
    let answered = async {
        tcp.read_exact(&mut consumed).await?;
        tcp.write_all(&head).await
    };
    match tokio::time::timeout(timeout, answered).await {
        Ok(Ok(())) => {
            let _ = session.send(TcpOrTls::Plain(tcp));
        }
        // The session, never sent its connection, ends.
        Ok(Err(error)) => {
            tracing::debug!(client = %conn.client, %error, "the 101 could not be sent")
        }
        Err(_) => tracing::debug!(client = %conn.client, "sending the 101 timed out"),
    }
    None
}

/// A 101's head as HTTP/1.1 writes it.
fn response_head<B>(response: &Response<B>) -> Vec<u8> {
    http1_head(&[b"HTTP/1.1 101 Switching Protocols"], response.headers())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A connected pair over loopback: (client, server side).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    const UPGRADE: &str = "GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nUser-Agent: t\r\n\r\n";

    #[tokio::test]
    async fn http1_requests_are_told_from_the_h2_preface_without_consuming_them() {
        let (mut client, server) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let look = first_look(&server).await.unwrap();
        assert!(matches!(look, FirstLook::Http1), "{look:?}");
        let (mut client, server) = pair().await;
        client.write_all(H2_PREFACE).await.unwrap();
        let look = first_look(&server).await.unwrap();
        assert!(matches!(look, FirstLook::Http2), "{look:?}");
        // Peeked, not read: hyper still gets every byte.
        let mut buf = [0u8; 24];
        assert_eq!(server.try_read(&mut buf).unwrap(), 24);
        assert_eq!(&buf, H2_PREFACE);
    }

    #[tokio::test]
    async fn a_preface_in_pieces_is_waited_for() {
        let (mut client, server) = pair().await;
        client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let sniff = tokio::spawn(async move { first_look(&server).await.unwrap() });
        client.write_all(b"\r\nSM\r\n\r\n").await.unwrap();
        assert!(matches!(sniff.await.unwrap(), FirstLook::Http2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_stopping_mid_preface_gets_no_decision() {
        let (mut client, server) = pair().await;
        client.write_all(b"PRI *").await.unwrap();
        client.shutdown().await.unwrap();
        // Neither HTTP/1 nor HTTP/2: it waits (the caller's head timeout ends it).
        let waited = tokio::time::timeout(Duration::from_secs(30), first_look(&server)).await;
        assert!(waited.is_err(), "{waited:?}");
    }

    #[test]
    fn a_complete_upgrade_head_is_parsed_with_its_length() {
        let pipelined = format!("{UPGRADE}\u{81}\u{0}");
        let Some(upgrade) = upgrade_head(pipelined.as_bytes()) else {
            panic!("not an upgrade");
        };
        assert_eq!(upgrade.len, UPGRADE.len());
        assert_eq!(upgrade.req.uri(), "/chat?room=1");
        assert_eq!(upgrade.req.headers()["host"], "example.com");
        assert_eq!(upgrade.req.headers()["user-agent"], "t");
        assert_eq!(upgrade.req.headers().len(), 6);
    }

    #[test]
    fn anything_but_a_complete_bodyless_upgrade_is_left_to_hyper() {
        let partial = UPGRADE.get(..UPGRADE.len() - 2).unwrap();
        let post = UPGRADE.replacen("GET", "POST", 1);
        let http10 = UPGRADE.replacen("HTTP/1.1", "HTTP/1.0", 1);
        let plain = UPGRADE.replacen("Upgrade: websocket", "X-Upgrade: websocket", 1);
        let body = UPGRADE.replacen("\r\n\r\n", "\r\nContent-Length: 3\r\n\r\nabc", 1);
        let chunked = UPGRADE.replacen("\r\n\r\n", "\r\nTransfer-Encoding: chunked\r\n\r\n", 1);
        let bad_value = UPGRADE.replacen("User-Agent: t", "User-Agent: \u{7f}", 1);
        for head in [partial, &post, &http10, &plain, &body, &chunked, &bad_value] {
            assert!(upgrade_head(head.as_bytes()).is_none(), "{head:?}");
        }
        let empty_body = UPGRADE.replacen("\r\n\r\n", "\r\nContent-Length: 0\r\n\r\n", 1);
        assert!(upgrade_head(empty_body.as_bytes()).is_some());
        let empty_value = UPGRADE.replacen("User-Agent: t", "X-Empty:", 1);
        let upgrade = upgrade_head(empty_value.as_bytes()).expect("an upgrade");
        assert_eq!(upgrade.req.headers()["x-empty"], "");
        assert!(upgrade_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").is_none());
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        let many = UPGRADE.replacen("\r\n\r\n", &format!("\r\n{many}\r\n"), 1);
        assert!(upgrade_head(many.as_bytes()).is_none());
    }

    /// A client's upgrade head: the lines every WebSocket client sends, placed among extra
    /// `x-` headers by `order` (a seed), names in any case.
    fn client_head(path: &str, extra: &[(String, String)], order: usize) -> String {
        let mut lines: Vec<String> = extra
            .iter()
            .map(|(name, value)| format!("X-{name}: {value}"))
            .collect();
        let required = [
            "Host: example.com",
            "upgrade: WebSocket",
            "Connection: keep-alive, Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ];
        for (i, line) in required.into_iter().enumerate() {
            let at = (order / (i + 1)) % (lines.len() + 1);
            lines.insert(at, line.to_owned());
        }
        format!("GET {path} HTTP/1.1\r\n{}\r\n\r\n", lines.join("\r\n"))
    }

    proptest::proptest! {
        /// Any client's upgrade head takes the fast path, with its target, every header
        /// line and its exact length; cut anywhere before its end it is hyper's (None).
        #[test]
        fn upgrade_heads_are_read_whole_or_left_to_hyper(
            path in "/[a-zA-Z0-9/_.~-]{0,24}(\\?[a-z0-9=&%]{0,16})?",
            extra in proptest::collection::vec(
                ("[a-zA-Z][a-zA-Z0-9-]{0,15}", "[!-~]([ !-~]{0,20}[!-~])?"),
                0..8,
            ),
            order in 0usize..10_000,
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16),
            cut in 0usize..10_000,
        ) {
            let head = client_head(&path, &extra, order);
            let mut bytes = head.clone().into_bytes();
            bytes.extend_from_slice(&tail);
            let upgrade = upgrade_head(&bytes);
            proptest::prop_assert!(upgrade.is_some(), "{:?}", head);
            let Some(upgrade) = upgrade else { return Ok(()) };
            proptest::prop_assert_eq!(upgrade.len, head.len());
            proptest::prop_assert_eq!(upgrade.req.uri().to_string(), path);
            proptest::prop_assert_eq!(upgrade.req.headers().len(), extra.len() + 5);
            for (name, value) in &extra {
                let name = format!("x-{}", name.to_ascii_lowercase());
                let values = upgrade.req.headers().get_all(name.as_str());
                proptest::prop_assert!(
                    values.iter().any(|v| v.as_bytes() == value.as_bytes()),
                    "{} lost in {:?}", name, head
                );
            }
            let short = cut % head.len();
            proptest::prop_assert!(upgrade_head(bytes.get(..short).unwrap_or_default()).is_none());
        }

        /// Whatever follows `GET `: no panic, and anything taken is a complete upgrade
        /// within the bytes given.
        #[test]
        fn any_bytes_after_get_are_safe(rest in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut bytes = b"GET ".to_vec();
            bytes.extend_from_slice(&rest);
            if let Some(upgrade) = upgrade_head(&bytes) {
                proptest::prop_assert!(upgrade.len <= bytes.len());
                proptest::prop_assert!(is_websocket_upgrade(&upgrade.req));
            }
        }
    }

    #[test]
    fn the_101_head_carries_every_header_line() {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert("upgrade", HeaderValue::from_static("websocket"));
        headers.append("x-two", HeaderValue::from_static("a"));
        headers.append("x-two", HeaderValue::from_static("b"));
        let head = String::from_utf8(response_head(&response)).unwrap();
        assert_eq!(
            head,
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nx-two: a\r\nx-two: b\r\n\r\n"
        );
    }
}
