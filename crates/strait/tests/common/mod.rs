//! Shared helpers for the end-to-end tests: a gateway from YAML on an ephemeral port,
//! the echo backend, a pooled HTTP client, and small hand-written backends.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use strait::echo::{self, EchoHandle};
use strait::{Gateway, GatewayHandle, GatewayOptions};

/// A gateway started from YAML text; `{echo}` in the text is replaced by the echo backend's
/// address when one is given. Environments should listen on `127.0.0.1:0`. Client
/// connections are served by two worker threads, as `strait run` does (the tests built on
/// `support` serve them on the test's own runtime).
pub async fn gateway(yaml: &str) -> GatewayHandle {
    gateway_in(yaml, Path::new("test.yaml")).await
}

/// Like [`gateway`], with relative file paths resolved against `origin`'s folder.
pub async fn gateway_in(yaml: &str, origin: &Path) -> GatewayHandle {
    gateway_with(yaml, origin, 2).await
}

/// Like [`gateway`], serving client connections on one worker thread: every client shares
/// that worker's backend connections.
pub async fn gateway_on_one_worker(yaml: &str) -> GatewayHandle {
    gateway_with(yaml, Path::new("test.yaml"), 1).await
}

async fn gateway_with(yaml: &str, origin: &Path, workers: usize) -> GatewayHandle {
    let config = match strait::config::parse_str(yaml, origin) {
        Ok(config) => config,
        Err(error) => panic!("test configuration is invalid:\n{error}\n---\n{yaml}"),
    };
    let options = GatewayOptions {
        workers,
        ..GatewayOptions::default()
    };
    match Gateway::start_with(&config, options).await {
        Ok(handle) => handle,
        Err(error) => panic!("gateway did not start: {error}"),
    }
}

/// The echo backend on an ephemeral port.
pub async fn echo() -> EchoHandle {
    echo::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("echo backend binds")
}

/// One environment `test` on an ephemeral port, WebSocket on, with the given proxies
/// (YAML list items, indented by two spaces, each deployed to `test`).
pub fn single_env(websocket: bool, proxies: &str) -> String {
    format!(
        "environments:\n  - name: test\n    listen: 127.0.0.1:0\n    websocket: {websocket}\nproxies:\n{proxies}"
    )
}

pub fn addr(gw: &GatewayHandle) -> SocketAddr {
    gw.local_addr("test")
        .expect("environment test is listening")
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Sends a request and collects the whole response body.
pub async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> (Response<()>, Bytes) {
    let response = client.request(req).await.expect("gateway answers");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body arrives").to_bytes();
    (Response::from_parts(parts, ()), bytes)
}

pub async fn get(client: &HttpClient, url: &str) -> (Response<()>, Bytes) {
    let req = Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    send(client, req).await
}

pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// Asserts a gateway-made JSON error with this status and kind.
pub fn assert_error(response: &Response<()>, body: &[u8], status: u16, kind: &str) {
    assert_eq!(
        response.status().as_u16(),
        status,
        "body: {}",
        String::from_utf8_lossy(body)
    );
    assert_eq!(response.headers()["content-type"], "application/json");
    let value = json(body);
    assert_eq!(value["status"], status);
    assert_eq!(value["error"], kind);
    assert!(
        value["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a human sentence: {value}"
    );
}

/// A loopback address that refuses connections for as long as the returned socket lives:
/// the socket holds the port (bound without `SO_REUSEADDR`, not listening), so nothing a
/// concurrent test starts can take it over.
pub fn refusing_port() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    (socket, addr)
}

/// A port free at the time of the call (bound, then released), for something to listen on.
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A backend that takes one request and answers `200 done` only when told to.
pub struct SlowBackend {
    pub addr: SocketAddr,
    /// Resolves once the request has arrived.
    pub arrived: tokio::sync::oneshot::Receiver<()>,
    /// Send to let it answer.
    pub release: tokio::sync::oneshot::Sender<()>,
}

pub async fn slow_backend() -> SlowBackend {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (release, release_rx) = tokio::sync::oneshot::channel::<()>();
    let (arrived_tx, arrived) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let Ok((mut tcp, _)) = listener.accept().await else {
            return;
        };
        let mut buf = [0u8; 4096];
        let _ = tcp.read(&mut buf).await;
        let _ = arrived_tx.send(());
        let _ = release_rx.await;
        let _ = tcp
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
            .await;
    });
    SlowBackend {
        addr,
        arrived,
        release,
    }
}

/// `strait_worker_connections` by worker, from the gateway's metrics.
pub fn worker_connections(gw: &GatewayHandle) -> Vec<u64> {
    let text = gw.metrics().encode().expect("metrics encode");
    // By worker number: as text, "10" would sort before "2".
    let mut counts: Vec<(u64, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("strait_worker_connections{worker=\""))
        .filter_map(|l| {
            let (worker, value) = l.split_once("\"} ")?;
            Some((worker.parse().ok()?, value.trim().parse().ok()?))
        })
        .collect();
    counts.sort();
    counts.into_iter().map(|(_, n)| n).collect()
}

/// Waits (5 s at most) until the workers' counts satisfy `done`.
pub async fn workers_until(
    gw: &GatewayHandle,
    what: &str,
    done: impl Fn(&[u64]) -> bool,
) -> Vec<u64> {
    let wait = async {
        loop {
            let counts = worker_connections(gw);
            if done(&counts) {
                return counts;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), wait).await {
        Ok(counts) => counts,
        Err(_) => panic!("timed out after 5s: {what}"),
    }
}
