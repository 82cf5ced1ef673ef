//! What the gateway tells about its traffic, checked against traffic the test sent itself:
//! `GET /metrics` read by a Prometheus text parser, the JSON and `combined` access logs, and
//! request ids and W3C trace context as the backend and the client see them.

mod support;

use std::collections::HashMap;

use bytes::Bytes;
use futures_util::SinkExt;
use http::{HeaderValue, Method};
use prometheus_parse::{Scrape, Value as Sample};
use serde_json::{Value, json};
use strait::echo;
use support::{Stack, next_data, round_trip, stateful, within, ws_connect};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A stateful stack with environment `prod` (WebSocket on, access log in the stack's
/// folder with `log_handshake`, plus `extra`) and proxy `api` on `/api/*` to an echo.
async fn stack(extra: Value) -> (Stack, echo::EchoHandle) {
    let backend = echo::spawn("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("the echo backend starts");
    let api = stateful(None).await;
    let log = api.dir.path().join("access.log");
    let mut env = json!({
        "listen": "127.0.0.1:0",
        "websocket": true,
        "access_log": {"file": log.to_str().expect("utf-8 path"), "log_handshake": true},
    });
    if let (Some(env), Some(extra)) = (env.as_object_mut(), extra.as_object()) {
        env.extend(extra.clone());
    }
    api.put("/environments/prod", &env)
        .await
        .expect(201, "environment");
    let proxy =
        json!({"path": "/api/*", "backend": format!("http://{}/svc", backend.local_addr())});
    api.put("/proxies/api", &proxy).await.expect(201, "proxy");
    api.deploy("api", "prod").await;
    (api, backend)
}

/// Sends one request through the gateway; status, headers and body.
async fn send(
    api: &Stack,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static [u8],
) -> (u16, http::HeaderMap, Bytes) {
    api.request(method, "prod", path, headers, Bytes::from_static(body))
        .await
}

/// Every sample of `GET /metrics`, keyed by name and sorted labels.
async fn scrape(api: &Stack) -> HashMap<String, f64> {
    let answer = api.get("/metrics").await.expect(200, "metrics");
    assert_eq!(
        answer.headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = answer.text();
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    let mut samples = HashMap::new();
    for sample in parsed.samples {
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        let key = format!("{}{{{}}}", sample.metric, labels.join(","));
        let value = match sample.value {
            Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => v,
            Sample::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Sample::Summary(_) => continue,
        };
        samples.insert(key, value);
    }
    samples
}

fn value(samples: &HashMap<String, f64>, key: &str) -> f64 {
    samples
        .get(key)
        .copied()
        .unwrap_or_else(|| panic!("{key} is not among {:#?}", sorted_keys(samples)))
}

fn sorted_keys(samples: &HashMap<String, f64>) -> Vec<&String> {
    let mut keys: Vec<&String> = samples.keys().collect();
    keys.sort();
    keys
}

/// The key of a series of proxy `api` in environment `prod` with `labels` besides.
fn series(name: &str, labels: &[&str]) -> String {
    let mut all = vec!["environment=prod", "proxy=api"];
    all.extend_from_slice(labels);
    all.sort();
    format!("{name}{{{}}}", all.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_access_log_match_the_traffic_sent() {
    let (api, _backend) = stack(json!({})).await;

    // HTTP: 5 GETs, one POST with 100 bytes, 2 requests no proxy serves.
    let mut bytes_out = 0;
    for i in 0..5 {
        let (status, headers, body) =
            send(&api, Method::GET, &format!("/api/items/{i}?q=1"), &[], b"").await;
        assert_eq!(status, 200);
        assert!(headers.contains_key("x-request-id"));
        assert!(!body.is_empty());
        bytes_out += body.len();
    }
    let (status, _, post_body) = send(&api, Method::POST, "/api/orders", &[], &[b'x'; 100]).await;
    assert_eq!(status, 200);
    bytes_out += post_body.len();
    for _ in 0..2 {
        let (status, _, _) = send(&api, Method::GET, "/nowhere", &[], b"").await;
        assert_eq!(status, 404);
    }

    // WebSocket: one session, three round trips, closed by the client with 1000.
    let mut ws = ws_connect(&format!("ws://{}/api/chat", api.gw("prod"))).await;
    for text in ["a", "bb", "ccc"] {
        round_trip(&mut ws, text).await;
    }
    within(
        "close",
        ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        })),
    )
    .await
    .expect("close");
    while next_data(&mut ws).await.is_some() {}

    // The session's end is counted once its relay has finished: its close first, then the
    // active gauge when its registration is dropped (bounded wait for both).
    let samples = within("the session's close to be counted", async {
        loop {
            let samples = scrape(&api).await;
            let key = series(
                "strait_websocket_closes_total",
                &["code=1000", "initiator=client"],
            );
            let active = series("strait_websocket_connections_active", &[]);
            if samples.get(&key) == Some(&1.0) && samples.get(&active) == Some(&0.0) {
                return samples;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let get = series("strait_http_requests_total", &["method=GET", "status=2xx"]);
    assert_eq!(value(&samples, &get), 5.0);
    let post = series("strait_http_requests_total", &["method=POST", "status=2xx"]);
    assert_eq!(value(&samples, &post), 1.0);
    let upgrade = series("strait_http_requests_total", &["method=GET", "status=1xx"]);
    assert_eq!(
        value(&samples, &upgrade),
        1.0,
        "the handshake is a request too"
    );
    let unmatched = "strait_http_requests_total{environment=prod,method=GET,proxy=,status=4xx}";
    assert_eq!(value(&samples, unmatched), 2.0);
    assert_eq!(
        value(&samples, &series("strait_http_request_bytes_total", &[])),
        100.0
    );
    let response_bytes = series("strait_http_response_bytes_total", &[]);
    assert_eq!(value(&samples, &response_bytes), bytes_out as f64);
    assert_eq!(
        value(
            &samples,
            &series("strait_http_request_duration_seconds_count", &[])
        ),
        7.0
    );
    assert_eq!(
        value(
            &samples,
            &series("strait_http_backend_duration_seconds_count", &[])
        ),
        7.0
    );
    assert_eq!(
        value(&samples, &series("strait_http_requests_in_flight", &[])),
        0.0
    );
    let upgraded = series("strait_websocket_upgrades_total", &["outcome=upgraded"]);
    assert_eq!(value(&samples, &upgraded), 1.0);
    // Payload bytes of every frame: the three messages and the close frame (code + "done").
    let sent = [("client_to_backend", 3.0, 6.0 + 2.0 + 4.0)];
    for (direction, messages, bytes) in sent {
        let direction = format!("direction={direction}");
        let key = series("strait_websocket_messages_total", &[&direction]);
        assert_eq!(value(&samples, &key), messages, "{direction}");
        let key = series("strait_websocket_bytes_total", &[&direction]);
        assert_eq!(value(&samples, &key), bytes, "{direction}");
    }
    let echoed = series(
        "strait_websocket_messages_total",
        &["direction=backend_to_client"],
    );
    assert_eq!(value(&samples, &echoed), 3.0);
    let echoed_bytes = series(
        "strait_websocket_bytes_total",
        &["direction=backend_to_client"],
    );
    let echoed_bytes = value(&samples, &echoed_bytes);
    assert!(
        echoed_bytes >= 6.0 + 2.0,
        "the echoes and the close reply: {echoed_bytes}"
    );
    assert_eq!(
        value(
            &samples,
            &series("strait_websocket_connections_active", &[])
        ),
        0.0
    );
    assert_eq!(
        value(
            &samples,
            &series("strait_websocket_session_duration_seconds_count", &[])
        ),
        1.0
    );
    assert!(value(&samples, "strait_process_open_fds{}") > 0.0);
    assert!(value(&samples, "strait_process_resident_memory_bytes{}") > 0.0);
    assert!(value(&samples, "strait_runtime_workers{}") >= 1.0);

    // The access log: one line per HTTP request, the handshake, and the session's end.
    api.gateway.flush_access_logs().await;
    let text = std::fs::read_to_string(api.dir.path().join("access.log")).expect("the log");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    let of = |kind: &str| {
        lines
            .iter()
            .filter(|l| l["type"] == kind)
            .collect::<Vec<_>>()
    };
    assert_eq!(of("http").len(), 8, "{text}");
    assert_eq!(of("websocket_handshake").len(), 1, "{text}");
    assert_eq!(of("websocket_session").len(), 1, "{text}");

    let post = of("http")
        .into_iter()
        .find(|l| l["method"] == "POST")
        .expect("the POST's line");
    for field in [
        "time",
        "request_id",
        "trace_id",
        "environment",
        "proxy",
        "method",
        "path",
        "status",
        "duration_ms",
        "backend_ms",
        "bytes_in",
        "bytes_out",
        "client_ip",
        "consumer",
        "backend",
    ] {
        assert!(post.get(field).is_some(), "{field} in {post}");
    }
    assert_eq!(post["environment"], "prod");
    assert_eq!(post["proxy"], "api");
    assert_eq!(post["path"], "/api/orders");
    assert_eq!(post["status"], 200);
    assert_eq!(post["bytes_in"], 100);
    assert_eq!(post["bytes_out"], post_body.len());
    assert_eq!(post["client_ip"], "127.0.0.1");
    assert_eq!(post["consumer"], Value::Null);
    assert_eq!(
        post["backend"],
        format!("http://{}/svc/orders", _backend.local_addr())
    );
    assert!(
        post["duration_ms"].as_f64().expect("a number")
            >= post["backend_ms"].as_f64().expect("a number")
    );
    let get = of("http")
        .into_iter()
        .find(|l| l["path"] == "/api/items/3?q=1")
        .expect("the path with its query");
    assert_eq!(get["method"], "GET");
    let lost = of("http")
        .into_iter()
        .find(|l| l["status"] == 404)
        .expect("an unmatched request's line");
    assert_eq!(lost["proxy"], Value::Null);
    assert_eq!(lost["backend"], Value::Null);

    let session = of("websocket_session")[0];
    let handshake = of("websocket_handshake")[0];
    assert_eq!(
        session["request_id"], handshake["request_id"],
        "one id for the handshake and its session"
    );
    assert_eq!(handshake["status"], 101);
    assert_eq!(session["path"], "/api/chat");
    assert_eq!(session["close_code"], 1000);
    assert_eq!(session["close_reason"], "done");
    assert_eq!(session["initiator"], "client");
    assert_eq!(
        session["client_to_backend"],
        json!({"messages": 3, "bytes": 12})
    );
    assert_eq!(session["backend_to_client"]["messages"], 3);
    assert_eq!(
        session["backend_to_client"]["bytes"].as_f64(),
        Some(echoed_bytes)
    );
    assert_eq!(
        session["backend"],
        format!("ws://{}/svc/chat", _backend.local_addr())
    );
    assert!(session["duration_ms"].as_f64().expect("a number") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_and_trace_context_reach_the_backend_and_the_client() {
    let (api, _backend) = stack(json!({})).await;

    // A client's id and trace are carried on; the gateway's hop gets its own span.
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, headers, body) = send(
        &api,
        Method::GET,
        "/api/x",
        &[
            ("x-request-id", "client-id-7"),
            ("traceparent", parent),
            ("tracestate", "vendor=1"),
        ],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-request-id"], "client-id-7");
    let seen: Value = serde_json::from_slice(&body).expect("the echo's JSON");
    let seen = &seen["headers"];
    assert_eq!(seen["x-request-id"], "client-id-7");
    assert_eq!(seen["tracestate"], "vendor=1");
    let forwarded = seen["traceparent"].as_str().expect("a traceparent");
    assert!(
        forwarded.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{forwarded}"
    );
    assert_ne!(forwarded, parent, "the gateway's own span id");

    // Without them, both are made, and differ per request.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (_, headers, body) = send(&api, Method::GET, "/api/y", &[], b"").await;
        let seen: Value = serde_json::from_slice(&body).expect("the echo's JSON");
        let id = headers["x-request-id"].to_str().expect("ascii").to_owned();
        assert_eq!(seen["headers"]["x-request-id"], id.as_str());
        let trace = seen["headers"]["traceparent"]
            .as_str()
            .expect("a new trace");
        assert_eq!(trace.len(), 55, "{trace}");
        ids.push((id, trace[3..35].to_owned()));
    }
    assert_ne!(ids[0], ids[1]);

    // Errors the gateway makes carry the id too, and the WebSocket 101 does.
    let (status, headers, _) = send(
        &api,
        Method::GET,
        "/nowhere",
        &[("x-request-id", "lost-1")],
        b"",
    )
    .await;
    assert_eq!(
        (status, &headers["x-request-id"]),
        (404, &"lost-1".parse().expect("value"))
    );
    let url = format!("ws://{}/api/ws", api.gw("prod"));
    let (mut ws, response) = within("handshake", tokio_tungstenite::connect_async(&url))
        .await
        .expect("handshake");
    assert!(response.headers().contains_key("x-request-id"));
    within("send", ws.send(Message::text("hi")))
        .await
        .expect("send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_combined_format_reads_like_nginx() {
    let (api, _backend) = stack(json!({})).await;
    let log = api.dir.path().join("combined.log");
    let env = json!({
        "listen": "127.0.0.1:0",
        "websocket": true,
        "access_log": {"format": "combined", "file": log.to_str().expect("utf-8")},
    });
    api.put("/environments/prod", &env)
        .await
        .expect(200, "environment");
    let (status, _, body) = send(
        &api,
        Method::GET,
        "/api/a?b=1",
        &[
            ("user-agent", "curl/8.5.0"),
            ("referer", "https://r.example/"),
        ],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    // The session's line shows its handshake's headers (kept as copies, not as slices of
    // the head, which here carries a cookie the session has no use for).
    let mut request = format!("ws://{}/api/live", api.gw("prod"))
        .into_client_request()
        .expect("a request");
    let headers = request.headers_mut();
    headers.insert("user-agent", HeaderValue::from_static("ws-client/2"));
    headers.insert("referer", HeaderValue::from_static("https://ws.example/"));
    headers.insert(
        "cookie",
        HeaderValue::from_static("session=0123456789abcdef"),
    );
    let (mut ws, _) = within("handshake", tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake");
    round_trip(&mut ws, "ping?").await;
    within("close", ws.close(None)).await.expect("close");
    while next_data(&mut ws).await.is_some() {}

    let lines = within("both lines", async {
        loop {
            api.gateway.flush_access_logs().await;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.lines().count() >= 2 {
                return text;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let mut lines = lines.lines();
    let http = lines.next().expect("the GET's line");
    let expected_tail = format!(
        "\"GET /api/a?b=1 HTTP/1.1\" 200 {} \"https://r.example/\" \"curl/8.5.0\"",
        body.len()
    );
    assert!(http.starts_with("127.0.0.1 - - ["), "{http}");
    assert!(http.ends_with(&expected_tail), "{http}");
    let session = lines.next().expect("the session's line");
    assert!(
        session.contains("\"GET /api/live HTTP/1.1\" 101 5 "),
        "{session}"
    );
    assert!(
        session.ends_with("\"https://ws.example/\" \"ws-client/2\""),
        "{session}"
    );
}
