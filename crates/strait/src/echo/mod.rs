//! The built-in echo backend (`strait echo`): HTTP requests are answered with a JSON echo
//! of method, path, raw query, headers and body length; WebSocket messages are echoed back,
//! and a client that breaks the protocol gets the close code that says how (1002, 1007,
//! 1009). It serves the demo, the tests and the benchmarks. It knows nothing of the gateway.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, coding::CloseCode};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::proxy::lists_token;

/// The 101 answer carries the request target the echo saw, so clients can check routing.
pub const ECHO_URI_HEADER: &str = "x-echo-uri";
/// Largest WebSocket message the echo accepts.
const MAX_MESSAGE: usize = 64 << 20;

/// A running echo backend.
pub struct EchoHandle {
    addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl EchoHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Binds `addr` (port 0 for an ephemeral port) and serves until shut down.
pub async fn spawn(addr: SocketAddr) -> io::Result<EchoHandle> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(serve(listener, shutdown.clone()));
    Ok(EchoHandle {
        addr,
        shutdown,
        tasks,
    })
}

/// Serves on an already-bound listener until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (tcp, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "echo backend cannot accept");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, shutdown.clone()));
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    shutdown: CancellationToken,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // Only a complete upgrade request is upgraded: any other request, even one with a
    // `Sec-WebSocket-Key`, is echoed as plain HTTP (a gateway in front of a backend that
    // switched protocols on a plain request could only answer 502).
    let headers = req.headers();
    if req.method() == Method::GET
        && lists_token(headers, header::UPGRADE, "websocket")
        && lists_token(headers, header::CONNECTION, "upgrade")
        && headers.contains_key(header::SEC_WEBSOCKET_KEY)
    {
        return Ok(upgrade(req, shutdown));
    }
    let (parts, mut body) = req.into_parts();
    let mut body_length: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => body_length += frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let mut headers = BTreeMap::<String, String>::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let echo = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_length": body_length,
    });
    let mut response = Response::new(Full::new(Bytes::from(echo.to_string())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Accepts the upgrade (choosing the first offered subprotocol) and echoes every message.
fn upgrade(mut req: Request<Incoming>, shutdown: CancellationToken) -> Response<Full<Bytes>> {
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec())
        .unwrap_or_default();
    let protocols = req.headers().get(header::SEC_WEBSOCKET_PROTOCOL).cloned();
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(&key)) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    let chosen = protocols
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    if let Some(Ok(chosen)) = chosen.map(HeaderValue::from_str) {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, chosen);
    }
    let uri = req.uri().path_and_query().map_or("/", |p| p.as_str());
    if let Ok(uri) = HeaderValue::from_str(uri) {
        headers.insert(ECHO_URI_HEADER, uri);
    }
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = ws.close(None).await;
                    return;
                }
                message = ws.next() => message,
            };
            match message {
                Some(Ok(message)) if message.is_text() || message.is_binary() => {
                    if ws.send(message).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {} // ping, pong and close are answered by the library
                Some(Err(error)) => {
                    // A peer that broke the protocol is told why before the connection goes.
                    let code = match error {
                        WsError::Utf8(_) => CloseCode::Invalid,
                        WsError::Capacity(_) => CloseCode::Size,
                        WsError::Protocol(_) => CloseCode::Protocol,
                        _ => return,
                    };
                    let mut reason = error.to_string();
                    while reason.len() > 123 {
                        reason.pop();
                    }
                    let _ = ws
                        .close(Some(CloseFrame {
                            code,
                            reason: reason.into(),
                        }))
                        .await;
                    return;
                }
                None => return,
            }
        }
    });
    response
}
