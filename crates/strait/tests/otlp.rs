//! Spans over OTLP/HTTP: a request continues the client's trace with the gateway's own span
//! (the span id the backend sees as parent), and a WebSocket session is one span from its
//! handshake to its close, with events — not a span per message.
#![cfg(feature = "otlp")]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use strait::{Gateway, GatewayOptions, config, echo};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// A fake collector: every span of every export request, in arrival order.
async fn collector() -> (SocketAddr, mpsc::UnboundedReceiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        let body = req.into_body().collect().await?.to_bytes();
                        let doc: Value = serde_json::from_slice(&body).unwrap_or_default();
                        let spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default();
                        for span in spans {
                            let _ = tx.send(span);
                        }
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from("{}"))))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

async fn next_span(spans: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(10), spans.recv())
        .await
        .expect("a span within 10 s")
        .expect("the collector runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_sessions_are_exported_as_spans() {
    let (collector, mut spans) = collector().await;
    let backend = echo::spawn("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("echo");
    let yaml = format!(
        "environments:\n  - name: e\n    listen: 127.0.0.1:0\n    websocket: true\n\
         proxies:\n  - name: api\n    path: /api/*\n    backend: http://{}/\n    deploy: [e]\n",
        backend.local_addr()
    );
    let config = config::parse_str(&yaml, std::path::Path::new("t.yaml")).expect("config");
    let options = GatewayOptions {
        otlp_endpoint: Some(format!("http://{collector}")),
        ..GatewayOptions::default()
    };
    let gateway = Gateway::start_with(&config, options).await.expect("start");
    let addr = gateway.local_addr("e").expect("listening");

    // An HTTP request inside the client's trace.
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let request = Request::get(format!("http://{addr}/api/x"))
        .header("traceparent", parent)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (response, body) = common::send(&common::client(), request).await;
    assert_eq!(response.status(), 200);
    let seen = common::json(&body);
    let forwarded = seen["headers"]["traceparent"].as_str().expect("forwarded");

    let span = next_span(&mut spans).await;
    assert_eq!(span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(
        span["spanId"],
        forwarded[36..52],
        "the backend's parent is the gateway's span"
    );
    assert_eq!(span["name"], "GET /api/*");
    assert_eq!(span["kind"], 2);

    // A WebSocket session: one span, with its handshake and close as events.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/chat"))
        .await
        .expect("handshake");
    use futures_util::{SinkExt, StreamExt};
    for i in 0..5 {
        ws.send(Message::text(format!("m{i}"))).await.expect("send");
        let _ = ws.next().await;
    }
    ws.close(None).await.expect("close");
    while let Some(Ok(_)) = ws.next().await {}

    let span = next_span(&mut spans).await;
    assert_eq!(span["name"], "WebSocket /api/*");
    let events: Vec<&str> = span["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(events, ["handshake", "close"]);
    let attrs = span["attributes"].as_array().expect("attributes");
    let attr = |key: &str| {
        attrs
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| a["value"].clone())
            .unwrap_or_else(|| panic!("{key} in {span}"))
    };
    assert_eq!(
        attr("websocket.messages.client_to_backend")["intValue"],
        "5"
    );
    assert_eq!(attr("websocket.close.code")["intValue"], "1005");
    // Nothing more: not a span per message.
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), spans.recv())
            .await
            .is_err()
    );
    gateway.shutdown().await;
}
