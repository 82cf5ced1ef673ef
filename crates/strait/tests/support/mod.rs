//! Helpers for the control-plane tests: a real `Control` (stateful on a temporary SQLite
//! file, or declarative on a temporary YAML file) behind a real `AdminServer` on
//! `127.0.0.1:0`, an HTTP client for the admin API, and small WebSocket helpers.
//!
//! Every wait is bounded by [`LIMIT`]; reaching it fails the test (timeouts are safety nets,
//! never the synchronisation).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use strait::GatewayHandle;
use strait::admin::AdminServer;
use strait::control::Control;
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// The longest any single wait may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(10);

pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {LIMIT:?} waiting for {what}"))
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A control plane with its gateway and its admin API.
pub struct Stack {
    pub control: Arc<Control>,
    pub gateway: Arc<GatewayHandle>,
    pub admin: AdminServer,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub token: Option<String>,
    pub http: HttpClient,
    /// Holds the database or the configuration file.
    pub dir: TempDir,
}

/// `Control::stateful` on a fresh database in a temporary folder, with the admin API.
pub async fn stateful(token: Option<&str>) -> Stack {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let (control, gateway) = Control::stateful(&dir.path().join("strait.db"), Default::default())
        .await
        .expect("a stateful control plane starts on a fresh database");
    with_admin(Arc::new(control), gateway, token, dir).await
}

/// [`stateful`] with environment `prod` on `127.0.0.1:0`, WebSocket on.
pub async fn with_prod() -> Stack {
    let api = stateful(None).await;
    api.put(
        "/environments/prod",
        &serde_json::json!({"listen": "127.0.0.1:0", "websocket": true}),
    )
    .await
    .expect(201, "environment");
    api
}

/// `Control::declarative` on `yaml` written to `strait.yaml` in a temporary folder, with
/// the gateway started from the same file. Returns the stack and the file's path.
pub async fn declarative(yaml: &str) -> (Stack, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("strait.yaml");
    std::fs::write(&file, yaml).expect("write the configuration file");
    let config = strait::config::load(&file)
        .unwrap_or_else(|e| panic!("test configuration is invalid:\n{e}\n---\n{yaml}"));
    let gateway = Arc::new(
        strait::Gateway::start(&config)
            .await
            .expect("the gateway starts"),
    );
    let control = Control::declarative(&file, yaml, gateway.clone())
        .await
        .expect("a declarative control plane starts");
    let stack = with_admin(Arc::new(control), gateway, None, dir).await;
    (stack, file)
}

async fn with_admin(
    control: Arc<Control>,
    gateway: Arc<GatewayHandle>,
    token: Option<&str>,
    dir: TempDir,
) -> Stack {
    let admin = AdminServer::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        control.clone(),
        token.map(str::to_owned),
    )
    .await
    .expect("the admin API starts on 127.0.0.1:0");
    Stack {
        base: format!("http://{}", admin.local_addr()),
        control,
        gateway,
        admin,
        token: token.map(str::to_owned),
        http: http_client(),
        dir,
    }
}

/// One admin API answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// Asserts the status; returns the answer for further checks.
    #[track_caller]
    pub fn expect(self, status: u16, what: &str) -> Answer {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{what}: status; body: {}",
            self.text()
        );
        self
    }

    /// Asserts an admin API error: status, `error` kind, a sentence, JSON content type.
    #[track_caller]
    pub fn expect_error(self, status: u16, kind: &str, what: &str) -> Value {
        let answer = self.expect(status, what);
        assert_eq!(
            answer.headers[header::CONTENT_TYPE],
            "application/json",
            "{what}: errors are JSON"
        );
        let body = answer.json();
        assert_eq!(body["status"], status, "{what}: {body}");
        assert_eq!(body["error"], kind, "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: a sentence for humans: {body}"
        );
        body
    }
}

impl Stack {
    /// The gateway's address for `env`.
    pub fn gw(&self, env: &str) -> SocketAddr {
        self.gateway
            .local_addr(env)
            .unwrap_or_else(|| panic!("environment {env} is listening"))
    }

    /// Sends a request to the admin API with `authorization` as given (no header when `None`).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        authorization: Option<&str>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let request = request.body(Full::new(body)).expect("a valid request");
        let response = within(
            &format!("the admin API to answer {method} {path}"),
            self.http.request(request),
        )
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: the admin API answers: {e}"));
        let (parts, body) = response.into_parts();
        let body = within("the admin API's body", body.collect())
            .await
            .expect("the admin API's body arrives")
            .to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// Sends a request with the stack's token (if any) and an optional JSON body.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        let authorization = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let payload = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        self.raw(method, path, payload, authorization.as_deref())
            .await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None).await
    }

    /// PUT /proxies/{proxy}/deployments/{env}, expecting 201.
    pub async fn deploy(&self, proxy: &str, env: &str) {
        self.call(
            Method::PUT,
            &format!("/proxies/{proxy}/deployments/{env}"),
            None,
        )
        .await
        .expect(201, &format!("deploy {proxy} to {env}"));
    }

    /// DELETE /proxies/{proxy}/deployments/{env}, expecting 204.
    pub async fn undeploy(&self, proxy: &str, env: &str) {
        self.delete(&format!("/proxies/{proxy}/deployments/{env}"))
            .await
            .expect(204, &format!("undeploy {proxy} from {env}"));
    }

    /// A request through the gateway's `env` listener: status, headers and body.
    pub async fn request(
        &self,
        method: Method,
        env: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> (u16, HeaderMap, Bytes) {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.gw(env)));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body)).expect("a valid request");
        let response = within("the gateway's answer", self.http.request(request))
            .await
            .expect("the gateway answers");
        let (parts, body) = response.into_parts();
        let body = within("the gateway's body", body.collect())
            .await
            .expect("the gateway's body arrives")
            .to_bytes();
        (parts.status.as_u16(), parts.headers, body)
    }

    /// A GET through the gateway's `env` listener: status and body.
    pub async fn through(&self, env: &str, path: &str) -> (StatusCode, Bytes) {
        let url = format!("http://{}{path}", self.gw(env));
        let request = Request::get(&url)
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let response = within(
            &format!("the gateway to answer GET {url}"),
            self.http.request(request),
        )
        .await
        .unwrap_or_else(|e| panic!("GET {url}: the gateway answers: {e}"));
        let (parts, body) = response.into_parts();
        let body = within("the gateway's body", body.collect())
            .await
            .expect("the gateway's body arrives")
            .to_bytes();
        (parts.status, body)
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects and checks the 101.
pub async fn ws_connect(url: &str) -> Ws {
    let (ws, response) = within(
        &format!("the WebSocket handshake with {url}"),
        connect_async(url),
    )
    .await
    .unwrap_or_else(|e| panic!("WebSocket handshake with {url} failed: {e}"));
    assert_eq!(response.status(), 101, "{url} switches protocols");
    ws
}

/// Sends `text` and expects it back (pings and pongs skipped).
pub async fn round_trip(ws: &mut Ws, text: &str) {
    within("sending a WebSocket message", ws.send(Message::text(text)))
        .await
        .unwrap_or_else(|e| panic!("send {text:?}: {e}"));
    match next_data(ws).await {
        Some(Message::Text(echoed)) => assert_eq!(echoed.as_str(), text, "the echo"),
        other => panic!("expected the echo of {text:?}, got {other:?}"),
    }
}

/// The next message other than ping/pong; `None` when the stream ended.
pub async fn next_data(ws: &mut Ws) -> Option<Message> {
    loop {
        match within("a WebSocket message", ws.next()).await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return Some(message),
            Some(Err(e)) => panic!("WebSocket error: {e}"),
            None => return None,
        }
    }
}

/// Waits for the close frame (data messages before it are skipped).
pub async fn expect_close(ws: &mut Ws) -> CloseFrame {
    loop {
        match next_data(ws).await {
            Some(Message::Close(Some(frame))) => return frame,
            Some(Message::Close(None)) => panic!("a close frame without a code"),
            Some(_) => continue,
            None => panic!("the stream ended without a close frame"),
        }
    }
}

/// A body parsed as JSON, or a failure showing what it was.
pub fn json_of(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}
