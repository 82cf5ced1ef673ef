//! End-to-end tests of TLS: the gateway's TLS listener (HTTP/1.1, HTTP/2 by ALPN, wss),
//! https backends trusted through `backend_tls.ca_file`, and WebSocket to https backends.
//!
//! Every test makes its own CA with rcgen and writes the files and the configuration into a
//! temporary folder, so relative `cert`, `key` and `ca_file` paths resolve against it.

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::header::HOST;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::Value;
use strait::GatewayHandle;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request as WsRequest, Response as WsResponse,
};

// ---------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------

/// Safety net around awaits that should finish quickly: a hang fails the test instead.
const SAFETY: Duration = Duration::from_secs(5);

async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(SAFETY, fut).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {SAFETY:?}: {what}"),
    }
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test CA and a leaf for `localhost` and 127.0.0.1, written into a temporary folder as
/// `ca.pem`, `gw.pem` and `gw-key.pem`.
struct Pki {
    dir: TempDir,
    ca: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    /// PKCS#8 DER.
    leaf_key: Vec<u8>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Strait test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, &ca_key);

    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("leaf parameters");
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("leaf certificate");

    let dir = tempfile::tempdir().expect("temporary folder");
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("write ca.pem");
    std::fs::write(dir.path().join("gw.pem"), leaf_cert.pem()).expect("write gw.pem");
    std::fs::write(dir.path().join("gw-key.pem"), leaf_key.serialize_pem())
        .expect("write gw-key.pem");
    Pki {
        dir,
        ca: ca_cert.der().clone(),
        leaf: leaf_cert.der().clone(),
        leaf_key: leaf_key.serialize_der(),
    }
}

impl Pki {
    /// Writes `yaml` as `strait.yaml` next to the certificates and starts a gateway from it.
    async fn gateway(&self, yaml: &str) -> GatewayHandle {
        let path = self.dir.path().join("strait.yaml");
        std::fs::write(&path, yaml).expect("write strait.yaml");
        gateway_in(yaml, &path).await
    }

    /// A client trusting only the test CA, offering these ALPN protocols.
    fn connector(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca.clone())
            .expect("CA is a valid trust anchor");
        let mut config = rustls::ClientConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }

    /// A server presenting the leaf (for hand-written https backends).
    fn acceptor(&self) -> TlsAcceptor {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf.clone()], key)
            .expect("leaf and key match");
        TlsAcceptor::from(Arc::new(config))
    }

    /// Connects to `addr` over TLS as `localhost`.
    async fn connect(&self, addr: SocketAddr, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        within("TLS handshake", async {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let name = ServerName::try_from("localhost").expect("server name");
            self.connector(alpn)
                .connect(name, tcp)
                .await
                .expect("TLS handshake with the gateway")
        })
        .await
    }
}

fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

fn proxy(name: &str, path: &str, backend: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    path: {path}\n    backend: {backend}\n    deploy: [test]\n{extra}"
    )
}

/// One environment `test`; `env_extra` lines go under it (indented by four spaces).
fn config(env_extra: &str, proxies: &str) -> String {
    format!(
        "environments:\n  - name: test\n    listen: 127.0.0.1:0\n{env_extra}proxies:\n{proxies}"
    )
}

const TLS_LISTENER: &str = "    tls: { cert: gw.pem, key: gw-key.pem }\n";
const TRUST_TEST_CA: &str = "    backend_tls: { ca_file: ca.pem }\n";

async fn collect_json(response: Response<Incoming>) -> Value {
    let body = within("response body", response.into_body().collect())
        .await
        .expect("body")
        .to_bytes();
    json(&body)
}

/// An https backend (HTTP/1.1 over TLS with the leaf) answering JSON with what it saw;
/// counts the requests it served.
async fn https_backend(pki: &Pki) -> (SocketAddr, Arc<AtomicUsize>) {
    let acceptor = pki.acceptor();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    let seen = serde_json::json!({
                        "method": req.method().as_str(),
                        "path": req.uri().path(),
                        "query": req.uri().query(),
                        "host": header("host"),
                        "x-forwarded-proto": header("x-forwarded-proto"),
                    });
                    async move {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(seen.to_string()))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, served)
}

/// A wss backend for one connection: TLS with the leaf, then a WebSocket handshake that
/// reports the request target and Host it saw, then echoes every message.
#[allow(clippy::result_large_err)] // the handshake callback's type is tungstenite's
async fn wss_backend(pki: &Pki) -> (SocketAddr, oneshot::Receiver<(String, Option<String>)>) {
    let acceptor = pki.acceptor();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (seen_tx, seen_rx) = oneshot::channel();
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let Ok(tls) = acceptor.accept(tcp).await else {
            return;
        };
        let record =
            move |req: &WsRequest, response: WsResponse| -> Result<WsResponse, ErrorResponse> {
                let host = req
                    .headers()
                    .get(HOST)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let _ = seen_tx.send((req.uri().to_string(), host));
                Ok(response)
            };
        let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tls, record).await else {
            return;
        };
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                return;
            }
        }
    });
    (addr, seen_rx)
}

/// Sends a text and a binary message and expects both back, then closes.
async fn exchange<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for message in [
        Message::text(text),
        Message::binary(Bytes::from_static(&[0, 1, 2, 254, 255])),
    ] {
        within("send", ws.send(message.clone()))
            .await
            .expect("send through the gateway");
        let reply = within("echoed message", ws.next()).await;
        match reply {
            Some(Ok(reply)) => assert_eq!(reply, message),
            other => panic!("expected the echo of {message:?}, got {other:?}"),
        }
    }
    within("close", ws.close(None))
        .await
        .expect("close handshake starts");
    // The close handshake completes: the peer's close frame arrives, then the end.
    while let Some(next) = within("close handshake", ws.next()).await {
        match next {
            Ok(Message::Close(_)) | Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {}
            Ok(other) => panic!("unexpected message while closing: {other:?}"),
            Err(_) => break,
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. The TLS listener
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn https_http1_through_the_tls_listener() {
    let pki = pki();
    let echo = echo().await;
    let proxies = proxy(
        "api",
        "/api/*",
        &format!("http://{}/svc", echo.local_addr()),
        "",
    );
    let gw = pki.gateway(&config(TLS_LISTENER, &proxies)).await;
    let gw = addr(&gw);

    let tls = pki.connect(gw, &[b"http/1.1"]).await;
    assert_eq!(alpn(&tls).as_deref(), Some(&b"http/1.1"[..]));
    let (mut sender, connection) = within(
        "h1 handshake",
        hyper::client::conn::http1::handshake(TokioIo::new(tls)),
    )
    .await
    .expect("handshake");
    tokio::spawn(connection);
    for i in 0..2 {
        let req = Request::get(format!("/api/x/{i}?y=1"))
            .header(HOST, format!("localhost:{}", gw.port()))
            .body(Full::<Bytes>::default())
            .expect("request");
        let response = within("request", sender.send_request(req))
            .await
            .expect("gateway answers");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), Version::HTTP_11);
        let echoed = collect_json(response).await;
        assert_eq!(echoed["path"], format!("/svc/x/{i}"));
        assert_eq!(echoed["query"], "y=1");
        assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");
        assert_eq!(
            echoed["headers"]["x-forwarded-host"],
            format!("localhost:{}", gw.port())
        );
        assert_eq!(echoed["headers"]["host"], echo.local_addr().to_string());
    }

    // A client offering no ALPN at all still gets HTTP/1.1.
    let tls = pki.connect(gw, &[]).await;
    assert_eq!(alpn(&tls), None);
    let (mut sender, connection) = within(
        "h1 handshake",
        hyper::client::conn::http1::handshake(TokioIo::new(tls)),
    )
    .await
    .expect("handshake");
    tokio::spawn(connection);
    let req = Request::get("/api/no-alpn")
        .header(HOST, "localhost")
        .body(Full::<Bytes>::default())
        .expect("request");
    let response = within("request", sender.send_request(req))
        .await
        .expect("gateway answers");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(collect_json(response).await["path"], "/svc/no-alpn");
}

#[tokio::test]
async fn plain_http_on_the_tls_listener_is_not_served_in_clear() {
    let pki = pki();
    let echo = echo().await;
    let proxies = proxy(
        "api",
        "/api/*",
        &format!("http://{}/svc", echo.local_addr()),
        "",
    );
    let gw = pki.gateway(&config(TLS_LISTENER, &proxies)).await;
    let gw = addr(&gw);
    let received = within("the gateway ends the connection", async {
        let mut tcp = TcpStream::connect(gw).await.expect("connect");
        tcp.write_all(format!("GET /api/x HTTP/1.1\r\nHost: {gw}\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut received = Vec::new();
        let _ = tcp.read_to_end(&mut received).await;
        received
    })
    .await;
    assert!(
        !received.starts_with(b"HTTP/"),
        "answered in clear: {:?}",
        String::from_utf8_lossy(&received)
    );
    // And TLS clients are still served.
    let tls = pki.connect(gw, &[b"http/1.1"]).await;
    assert_eq!(alpn(&tls).as_deref(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn http2_over_tls_with_alpn_h2() {
    let pki = pki();
    let echo = echo().await;
    let proxies = proxy(
        "api",
        "/api/*",
        &format!("http://{}/svc", echo.local_addr()),
        "",
    );
    let gw = pki.gateway(&config(TLS_LISTENER, &proxies)).await;
    let gw = addr(&gw);

    let tls = pki.connect(gw, &[b"h2", b"http/1.1"]).await;
    assert_eq!(
        alpn(&tls).as_deref(),
        Some(&b"h2"[..]),
        "the gateway chose h2"
    );
    let (mut sender, connection) = within(
        "h2 handshake",
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(connection);
    // Several streams on the one connection, concurrently.
    let mut pending = Vec::new();
    for i in 0..3 {
        let req = Request::post(format!("https://localhost:{}/api/h2/{i}?q={i}", gw.port()))
            .body(Full::new(Bytes::from(vec![b'z'; 1000 * (i + 1)])))
            .expect("request");
        pending.push(sender.send_request(req));
    }
    for (i, response) in pending.into_iter().enumerate() {
        let response = within("h2 response", response)
            .await
            .expect("gateway answers over h2");
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(response.status(), StatusCode::OK);
        let echoed = collect_json(response).await;
        assert_eq!(echoed["method"], "POST");
        assert_eq!(echoed["path"], format!("/svc/h2/{i}"));
        assert_eq!(echoed["query"], format!("q={i}"));
        assert_eq!(echoed["body_length"], 1000 * (i + 1));
        assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");
        assert_eq!(
            echoed["headers"]["x-forwarded-host"],
            format!("localhost:{}", gw.port())
        );
    }
}

// ---------------------------------------------------------------------------------------
// 2. https backends
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_https_backend_is_trusted_with_ca_file_and_refused_without() {
    let pki = pki();
    let (backend, served) = https_backend(&pki).await;
    let port = backend.port();
    let proxies = [
        proxy(
            "trusted",
            "/trusted/*",
            &format!("https://localhost:{port}/x"),
            TRUST_TEST_CA,
        ),
        proxy(
            "by-ip",
            "/by-ip/*",
            &format!("https://127.0.0.1:{port}/x"),
            TRUST_TEST_CA,
        ),
        proxy(
            "untrusted",
            "/untrusted/*",
            &format!("https://localhost:{port}/x"),
            "",
        ),
    ]
    .concat();
    let gw = pki.gateway(&config("", &proxies)).await;
    let gw = addr(&gw);
    let http = client();

    let (response, body) = within(
        "trusted",
        get(&http, &format!("http://{gw}/trusted/a/b?c=1")),
    )
    .await;
    assert_eq!(response.status(), 200, "{}", String::from_utf8_lossy(&body));
    let seen = json(&body);
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/x/a/b");
    assert_eq!(seen["query"], "c=1");
    assert_eq!(seen["host"], format!("localhost:{port}"));
    assert_eq!(seen["x-forwarded-proto"], "http");

    let (response, body) = within("by ip", get(&http, &format!("http://{gw}/by-ip/z"))).await;
    assert_eq!(response.status(), 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["path"], "/x/z");
    assert_eq!(json(&body)["host"], format!("127.0.0.1:{port}"));
    assert_eq!(served.load(Ordering::SeqCst), 2);

    // Without the test CA the certificate is not trusted: 502, and the backend never sees
    // the request.
    let (response, body) =
        within("untrusted", get(&http, &format!("http://{gw}/untrusted/a"))).await;
    assert_error(&response, &body, 502, "bad_gateway");
    let message = json(&body)["message"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        message.contains("certificate"),
        "the message says why: {message}"
    );
    assert_eq!(
        served.load(Ordering::SeqCst),
        2,
        "the request went over an untrusted connection"
    );
}

// ---------------------------------------------------------------------------------------
// 3. WebSocket to an https backend (wss)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn websocket_to_an_https_backend_goes_over_wss() {
    let pki = pki();
    let (backend, seen) = wss_backend(&pki).await;
    let port = backend.port();
    let proxies = proxy(
        "chat",
        "/chat/*",
        &format!("https://localhost:{port}/ws"),
        TRUST_TEST_CA,
    );
    let gw = pki
        .gateway(&config("    websocket: true\n", &proxies))
        .await;
    let gw = addr(&gw);

    let tcp = TcpStream::connect(gw).await.expect("connect");
    let url = format!("ws://{gw}/chat/room/1?t=a%20b&x");
    let (mut ws, response) = within("upgrade", tokio_tungstenite::client_async(url, tcp))
        .await
        .expect("upgrade via the gateway");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let (target, host) = within("backend handshake", seen)
        .await
        .expect("the backend got the upgrade");
    assert_eq!(target, "/ws/room/1?t=a%20b&x");
    assert_eq!(host.as_deref(), Some(format!("localhost:{port}").as_str()));
    exchange(&mut ws, "hello over wss").await;
}

// ---------------------------------------------------------------------------------------
// 4. wss clients through the TLS listener
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_wss_client_through_the_tls_listener() {
    let pki = pki();
    let echo = echo().await;
    let proxies = proxy(
        "chat",
        "/chat/*",
        &format!("http://{}/websocket", echo.local_addr()),
        "",
    );
    let gw = pki
        .gateway(&config(
            &format!("{TLS_LISTENER}    websocket: true\n"),
            &proxies,
        ))
        .await;
    let gw = addr(&gw);

    let tls = pki.connect(gw, &[b"http/1.1"]).await;
    assert_eq!(alpn(&tls).as_deref(), Some(&b"http/1.1"[..]));
    let url = format!("wss://localhost:{}/chat/room/9?x=1", gw.port());
    let (mut ws, response) = within("upgrade", tokio_tungstenite::client_async(url, tls))
        .await
        .expect("wss upgrade");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        response.headers()[strait::echo::ECHO_URI_HEADER],
        "/websocket/room/9?x=1"
    );
    exchange(&mut ws, "hello through the TLS listener").await;
}
