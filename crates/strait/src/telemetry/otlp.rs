//! Span export over OTLP/HTTP with JSON encoding (`POST {endpoint}/v1/traces`), behind the
//! `otlp` cargo feature. One span per HTTP request; one span per WebSocket session, from
//! its handshake to its close, with `handshake` and `close` events — never a span per
//! message. Spans are queued without waiting and sent in batches by one task; when the
//! queue is full or the collector is down, spans are dropped (and said so once), never
//! retried into memory.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Uri, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Spans waiting to be sent before new ones are dropped.
const QUEUE: usize = 8192;
/// Most spans in one export request.
const BATCH: usize = 512;
/// A partial batch goes out after this long.
const LINGER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
#[error("the OTLP endpoint {0:?} is not an http:// URL")]
pub struct EndpointError(String);

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Text(String),
    Int(i64),
}

/// One finished span.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: u128,
    pub span_id: u64,
    pub parent_span_id: Option<u64>,
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, Attr)>,
    pub events: Vec<Event>,
    /// The request or session failed (5xx, or a session the gateway or a lost peer ended).
    pub error: bool,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub name: &'static str,
    pub time: SystemTime,
    pub attributes: Vec<(&'static str, Attr)>,
}

/// Where spans go; cheap to clone.
#[derive(Debug, Clone)]
pub struct Exporter {
    tx: mpsc::Sender<Span>,
}

impl Exporter {
    /// Starts the export task for `endpoint` (e.g. `http://127.0.0.1:4318`). Must run inside
    /// a tokio runtime.
    pub fn start(endpoint: &str, service: &str) -> Result<Exporter, EndpointError> {
        let base = endpoint.trim_end_matches('/');
        let uri: Uri = format!("{base}/v1/traces")
            .parse()
            .map_err(|_| EndpointError(endpoint.to_owned()))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(EndpointError(endpoint.to_owned()));
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(export(rx, uri, service.to_owned()));
        Ok(Exporter { tx })
    }

    /// Queues a span; drops it if the exporter is behind.
    pub fn send(&self, span: Span) {
        let _ = self.tx.try_send(span);
    }
}

async fn export(mut rx: mpsc::Receiver<Span>, uri: Uri, service: String) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut batch = Vec::with_capacity(BATCH);
    let mut failing = false;
    loop {
        let first = match rx.recv().await {
            Some(span) => span,
            None => return,
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let body = encode(&service, &batch).to_string();
        batch.clear();
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)));
        let Ok(request) = request else { continue };
        let sent = tokio::time::timeout(Duration::from_secs(10), client.request(request)).await;
        let ok = matches!(&sent, Ok(Ok(response)) if response.status().is_success());
        if !ok && !failing {
            tracing::warn!(%uri, "OTLP export failed; spans are dropped until the collector answers");
        } else if ok && failing {
            tracing::info!(%uri, "OTLP export works again");
        }
        failing = !ok;
    }
}

fn nanos(time: SystemTime) -> String {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .to_string()
}

fn attributes(attrs: &[(&'static str, Attr)]) -> Vec<Value> {
    attrs
        .iter()
        .map(|(key, value)| {
            let value = match value {
                Attr::Text(text) => json!({"stringValue": text}),
                // OTLP JSON carries 64-bit integers as strings.
                Attr::Int(n) => json!({"intValue": n.to_string()}),
            };
            json!({"key": key, "value": value})
        })
        .collect()
}

/// The OTLP/JSON `ExportTraceServiceRequest` for `spans`.
pub fn encode(service: &str, spans: &[Span]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|span| {
            let mut value = json!({
                "traceId": format!("{:032x}", span.trace_id),
                "spanId": format!("{:016x}", span.span_id),
                "name": span.name,
                "kind": 2, // SPAN_KIND_SERVER
                "startTimeUnixNano": nanos(span.start),
                "endTimeUnixNano": nanos(span.end),
                "attributes": attributes(&span.attributes),
                "events": span.events.iter().map(|e| json!({
                    "name": e.name,
                    "timeUnixNano": nanos(e.time),
                    "attributes": attributes(&e.attributes),
                })).collect::<Vec<_>>(),
                "status": {"code": if span.error { 2 } else { 0 }},
            });
            if let (Some(parent), Some(map)) = (span.parent_span_id, value.as_object_mut()) {
                map.insert("parentSpanId".into(), json!(format!("{parent:016x}")));
            }
            value
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": "strait"}, "spans": spans}],
    }]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_encode_as_otlp_json() {
        let start = UNIX_EPOCH + Duration::from_secs(1);
        let span = Span {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            span_id: 0x00f067aa0ba902b7,
            parent_span_id: Some(1),
            name: "GET /chat/*".into(),
            start,
            end: start + Duration::from_millis(5),
            attributes: vec![("http.response.status_code", Attr::Int(101))],
            events: vec![Event {
                name: "close",
                time: start + Duration::from_millis(5),
                attributes: vec![("websocket.close.code", Attr::Int(1000))],
            }],
            error: false,
        };
        let doc = encode("strait", &[span]);
        let out = &doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(out["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(out["spanId"], "00f067aa0ba902b7");
        assert_eq!(out["parentSpanId"], "0000000000000001");
        assert_eq!(out["startTimeUnixNano"], "1000000000");
        assert_eq!(out["endTimeUnixNano"], "1005000000");
        assert_eq!(out["attributes"][0]["value"]["intValue"], "101");
        assert_eq!(out["events"][0]["name"], "close");
        assert_eq!(
            doc["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "strait"
        );
    }

    #[test]
    fn only_http_endpoints_are_taken() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let _guard = runtime.enter();
        assert!(Exporter::start("http://127.0.0.1:4318", "s").is_ok());
        assert!(Exporter::start("https://collector:4318", "s").is_err());
        assert!(Exporter::start("not a url", "s").is_err());
    }
}
