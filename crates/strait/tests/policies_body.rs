//! `request_size` end to end, with real clients over loopback: a `Content-Length` over the
//! limit gets the 413 JSON error and never reaches the backend; a chunked body streaming
//! past the limit gets 413 with the backend having received no more than the limit — or,
//! once the backend has started answering, a cut connection; a body within the limit
//! arrives intact; a WebSocket handshake through the policy still upgrades.
//!
//! The streaming client sends each chunk only after the backend reported the previous one,
//! so what crosses the limit is known.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use strait::echo;
use support::{Stack, json_of, round_trip, with_prod, within, ws_connect};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const LIMIT: u64 = 1000;

/// What the backend saw of a request body.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// This many bytes so far.
    Progress(u64),
    /// The body ended (or failed) after this many bytes.
    Done(u64),
}

/// A backend counting requests and reporting their bodies as they arrive. `/svc/read*`
/// reads the whole body, then answers with it; `/svc/early*` answers 200 at once with a
/// streamed body that ends when the request body does.
struct Backend {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    seen: mpsc::UnboundedReceiver<Seen>,
}

async fn backend() -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(AtomicUsize::new(0));
    let (report, seen) = mpsc::unbounded_channel();
    let counter = requests.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let counter = counter.clone();
            let report = report.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let report = report.clone();
                    async move { Ok::<_, Infallible>(answer(req, report).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Backend {
        addr,
        requests,
        seen,
    }
}

type Streamed =
    StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

async fn answer(
    req: Request<Incoming>,
    report: mpsc::UnboundedSender<Seen>,
) -> Response<http_body_util::Either<Full<Bytes>, Streamed>> {
    let early = req.uri().path().starts_with("/svc/early");
    let mut body = req.into_body();
    if early {
        let (tx, rx) = mpsc::unbounded_channel::<Result<Frame<Bytes>, Infallible>>();
        let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"started\n"))));
        tokio::spawn(async move {
            let total = read(&mut body, &report).await.len() as u64;
            let _ = report.send(Seen::Done(total));
            drop(tx);
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (frame, rx))
        });
        let streamed: Streamed = StreamBody::new(Box::pin(stream));
        return Response::new(http_body_util::Either::Right(streamed));
    }
    let received = read(&mut body, &report).await;
    let _ = report.send(Seen::Done(received.len() as u64));
    Response::new(http_body_util::Either::Left(Full::new(Bytes::from(
        received,
    ))))
}

/// Reads the body to its end or its failure, reporting the count after each frame.
async fn read(body: &mut Incoming, report: &mpsc::UnboundedSender<Seen>) -> Vec<u8> {
    let mut received = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            received.extend_from_slice(data);
            let _ = report.send(Seen::Progress(received.len() as u64));
        }
    }
    received
}

/// A gateway with `/body/*` (request_size 1000) to [`backend`] and `/ws/*` (request_size
/// 16) to the echo backend, in environment `prod` with WebSocket on.
async fn fixture(backend: SocketAddr) -> (Stack, echo::EchoHandle) {
    let echo = echo::spawn("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("the echo backend starts");
    let api = with_prod().await;
    let proxies = [
        ("body", format!("http://{backend}/svc"), LIMIT),
        ("ws", format!("http://{}/svc", echo.local_addr()), 16),
    ];
    for (name, url, max) in proxies {
        api.put(
            &format!("/proxies/{name}"),
            &json!({"path": format!("/{name}/*"), "backend": url,
                    "policies": [{"type": "request_size", "max": max}]}),
        )
        .await
        .expect(201, &format!("proxy {name}"));
        api.deploy(name, "prod").await;
    }
    (api, echo)
}

#[track_caller]
fn assert_too_large(status: u16, headers: &http::HeaderMap, body: &Bytes) {
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(body));
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let body = json_of(body);
    assert_eq!(body["status"], 413, "{body}");
    assert_eq!(body["error"], "payload_too_large", "{body}");
    let message = body["message"].as_str().expect("a message");
    assert!(message.contains("1000 bytes"), "{body}");
}

async fn next(backend: &mut Backend) -> Seen {
    within("the backend's report", backend.seen.recv())
        .await
        .expect("the backend reports")
}

/// Waits until the backend has received `bytes` in all.
async fn received(backend: &mut Backend, bytes: u64) {
    loop {
        match next(backend).await {
            Seen::Progress(n) if n == bytes => return,
            Seen::Progress(n) if n < bytes => continue,
            other => panic!("expected {bytes} bytes to arrive, got {other:?}"),
        }
    }
}

/// The body's final count.
async fn done(backend: &mut Backend) -> u64 {
    loop {
        if let Seen::Done(n) = next(backend).await {
            return n;
        }
    }
}

/// A request with a chunked body fed from the returned sender, on its own connection.
async fn streaming(
    gw: SocketAddr,
    path: &str,
) -> (
    mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>,
    impl std::future::Future<Output = hyper::Result<Response<Incoming>>>,
) {
    let tcp = within("connecting", TcpStream::connect(gw))
        .await
        .expect("the gateway accepts");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("an HTTP/1.1 connection");
    tokio::spawn(conn);
    let (tx, rx) = mpsc::unbounded_channel::<Result<Frame<Bytes>, Infallible>>();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|frame| (frame, rx))
    });
    let request = Request::post(format!("http://{gw}{path}"))
        .header(header::HOST, gw.to_string())
        .body(StreamBody::new(stream))
        .expect("a request");
    (tx, sender.send_request(request))
}

fn chunk(len: usize) -> Result<Frame<Bytes>, Infallible> {
    Ok(Frame::data(Bytes::from(vec![b'x'; len])))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_over_the_limit_never_reaches_the_backend() {
    let mut backend = backend().await;
    let (api, _echo) = fixture(backend.addr).await;
    let over = Bytes::from(vec![b'a'; 1001]);
    let (status, headers, body) = api
        .request(Method::POST, "prod", "/body/read", &[], over)
        .await;
    assert_too_large(status, &headers, &body);
    assert_eq!(
        backend.requests.load(Ordering::SeqCst),
        0,
        "refused before forwarding"
    );

    // Within the limit (exactly at it), the body arrives byte for byte.
    let within_limit: Vec<u8> = (0..LIMIT).map(|i| (i % 251) as u8).collect();
    let (status, _, body) = api
        .request(
            Method::POST,
            "prod",
            "/body/read",
            &[],
            Bytes::from(within_limit.clone()),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body.as_ref(), within_limit.as_slice(), "intact");
    assert_eq!(done(&mut backend).await, LIMIT);
    assert_eq!(backend.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_streaming_past_the_limit_gets_413() {
    let mut backend = backend().await;
    let (api, _echo) = fixture(backend.addr).await;
    let (tx, response) = streaming(api.gw("prod"), "/body/read").await;
    let response = tokio::spawn(response);
    tx.send(chunk(600)).expect("send");
    received(&mut backend, 600).await;
    tx.send(chunk(600)).expect("send");
    let response = within("the 413", response)
        .await
        .expect("the request task")
        .expect("an answer");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = within("the 413's body", response.into_body().collect())
        .await
        .expect("the body")
        .to_bytes();
    assert_too_large(status, &headers, &body);
    let total = done(&mut backend).await;
    assert!(total <= LIMIT, "the backend received {total} bytes");
    assert_eq!(total, 600, "the chunk crossing the limit was not forwarded");

    // A streamed body within the limit arrives whole.
    let (tx, response) = streaming(api.gw("prod"), "/body/read").await;
    tx.send(chunk(500)).expect("send");
    tx.send(chunk(500)).expect("send");
    drop(tx);
    let response = within("the answer", response).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    let body = within("the body", response.into_body().collect())
        .await
        .expect("the body")
        .to_bytes();
    assert_eq!(body.len(), 1000);
    assert_eq!(done(&mut backend).await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_limit_after_the_backend_answered_the_connection_is_cut() {
    let mut backend = backend().await;
    let (api, _echo) = fixture(backend.addr).await;
    let (tx, response) = streaming(api.gw("prod"), "/body/early").await;
    let response = tokio::spawn(response);
    tx.send(chunk(600)).expect("send");
    let response = within("the backend's answer", response)
        .await
        .expect("the request task")
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::OK, "the backend answered");
    received(&mut backend, 600).await;
    tx.send(chunk(600)).expect("send");
    let collected = within("the cut", response.into_body().collect()).await;
    assert!(
        collected.is_err(),
        "the response must not end cleanly: {collected:?}"
    );
    let total = done(&mut backend).await;
    assert_eq!(total, 600, "no more than the limit reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_handshake_passes_request_size() {
    let backend = backend().await;
    let (api, _echo) = fixture(backend.addr).await;
    let mut ws = ws_connect(&format!("ws://{}/ws/room", api.gw("prod"))).await;
    round_trip(&mut ws, "a message longer than sixteen bytes").await;
}
