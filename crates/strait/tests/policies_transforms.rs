//! Browser-facing and transform policies end to end, with real clients over loopback, on
//! HTTP and on WebSocket: `cors` (a preflight answered by the gateway before authentication,
//! never reaching the backend; CORS headers on an actual response from a listed origin and
//! none for another) and `headers` (request changes seen by the backend — the echo's JSON,
//! or a WebSocket backend reporting its handshake — and response changes seen by the
//! client, on the 101 too); bad entries refused by the admin API.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Method};
use serde_json::{Value, json};
use strait::echo;
use support::{Stack, json_of, round_trip, with_prod, within};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request as WsRequest, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{accept_hdr_async, connect_async};

const APP: &str = "https://app.example.com";

/// The `headers` policy both `/hdr/*` and `/wshdr/*` use.
fn transforms() -> Value {
    json!({
        "type": "headers",
        "request_remove": ["X-Secret"],
        "request_set": ["X-Consumer: $consumer", "X-Client: $client_ip", "X-Rid: $request_id"],
        "request_add": ["X-Multi: added"],
        "response_remove": ["x-echo-uri"],
        "response_set": ["X-Frame-Options: DENY", "X-Who: $consumer"],
        "response_add": ["Cache-Control: no-store"],
    })
}

/// A WebSocket backend that sends the handshake's headers it received, as a JSON object
/// (names lower-case, repeated values joined with ", "), as its first message, then echoes.
async fn reporting_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = serde_json::Map::new();
                #[allow(clippy::result_large_err, reason = "tungstenite's callback type")]
                let record = |request: &WsRequest, response: Response| {
                    for name in request.headers().keys() {
                        let values: Vec<_> = request
                            .headers()
                            .get_all(name)
                            .iter()
                            .map(|v| v.to_str().unwrap_or("?").to_owned())
                            .collect();
                        seen.insert(name.as_str().to_owned(), Value::from(values.join(", ")));
                    }
                    Ok(response)
                };
                let Ok(mut ws) = accept_hdr_async(tcp, record).await else {
                    return;
                };
                let report = Value::Object(seen).to_string();
                if ws.send(Message::text(report)).await.is_err() {
                    return;
                }
                while let Some(Ok(message)) = ws.next().await {
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A stateful gateway: environment `prod` with WebSocket on, consumer alice (key
/// `alice-key`), and proxies: `/cors/*` cors for [APP] + api_key to the echo backend,
/// `/hdr/*` api_key + [`transforms`] to the echo backend, `/wshdr/*` the same to
/// [`reporting_backend`], `/plain/*` no policy to the echo backend.
async fn fixture() -> (Stack, echo::EchoHandle) {
    let echo = echo::spawn("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("the echo backend starts");
    let reporting = reporting_backend().await;
    let api = with_prod().await;
    api.put(
        "/consumers/alice",
        &json!({"groups": ["admins"], "credentials": {"api_keys": ["alice-key"]}}),
    )
    .await
    .expect(201, "consumer");
    let backend = format!("http://{}/svc", echo.local_addr());
    let cors = json!({
        "type": "cors", "origins": [APP], "methods": ["GET", "POST"],
        "headers": ["X-API-Key", "Content-Type"], "expose_headers": ["X-Total"],
        "credentials": true, "max_age": "1h",
    });
    let proxies = [
        ("cors", backend.clone(), json!([{"type": "api_key"}, cors])),
        (
            "hdr",
            backend.clone(),
            json!([transforms(), {"type": "api_key"}]),
        ),
        (
            "wshdr",
            format!("http://{reporting}/svc"),
            json!([transforms(), {"type": "api_key"}]),
        ),
        ("plain", backend, json!([])),
    ];
    for (name, backend, policies) in proxies {
        api.put(
            &format!("/proxies/{name}"),
            &json!({"path": format!("/{name}/*"), "backend": backend, "policies": policies}),
        )
        .await
        .expect(201, &format!("proxy {name}"));
        api.deploy(name, "prod").await;
    }
    (api, echo)
}

/// One HTTP request through `prod`: status, headers and body.
async fn send(
    api: &Stack,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, Bytes) {
    api.request(method, "prod", path, headers, Bytes::new())
        .await
}

fn cors_headers(headers: &HeaderMap) -> Vec<String> {
    headers
        .keys()
        .map(|n| n.as_str().to_owned())
        .filter(|n| n.starts_with("access-control-"))
        .collect()
}

/// A WebSocket handshake through `prod` with these headers set (a `connection` replaces
/// the client's own `Upgrade`, which tungstenite writes on one line): the session and the
/// 101's headers.
async fn ws(api: &Stack, path: &str, headers: &[(&str, &str)]) -> (support::Ws, HeaderMap) {
    let mut request = format!("ws://{}{path}", api.gw("prod"))
        .into_client_request()
        .expect("a request");
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    let (session, response) = within("the WebSocket handshake", connect_async(request))
        .await
        .expect("the handshake is accepted");
    (session, response.headers().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_preflights_itself_before_authentication() {
    let (api, _echo) = fixture().await;
    let preflight = [
        ("origin", APP),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "x-api-key"),
    ];
    let (status, headers, body) = send(&api, Method::OPTIONS, "/cors/items", &preflight).await;
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
    assert!(
        body.is_empty(),
        "the echo backend never saw it: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(headers["access-control-allow-origin"], APP);
    assert_eq!(headers["vary"], "Origin");
    assert_eq!(headers["access-control-allow-methods"], "GET, POST");
    assert_eq!(
        headers["access-control-allow-headers"],
        "X-API-Key, Content-Type"
    );
    assert_eq!(headers["access-control-max-age"], "3600");
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert!(headers.contains_key("x-request-id"));

    let (status, headers, body) = send(
        &api,
        Method::OPTIONS,
        "/cors/items",
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(json_of(&body)["error"], "forbidden");
    assert!(cors_headers(&headers).is_empty(), "{headers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_headers_go_only_to_listed_origins() {
    let (api, _echo) = fixture().await;
    let (status, headers, body) = send(
        &api,
        Method::POST,
        "/cors/items",
        &[("origin", APP), ("x-api-key", "alice-key")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json_of(&body)["method"], "POST", "the backend answered");
    assert_eq!(headers["access-control-allow-origin"], APP);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert_eq!(headers["access-control-expose-headers"], "X-Total");
    assert_eq!(headers["vary"], "Origin");

    for origin in [Some("https://evil.example"), None] {
        let mut sent = vec![("x-api-key", "alice-key")];
        sent.extend(origin.map(|o| ("origin", o)));
        let (status, headers, _) = send(&api, Method::GET, "/cors/items", &sent).await;
        assert_eq!(status, 200, "{origin:?}");
        assert!(cors_headers(&headers).is_empty(), "{origin:?}: {headers:?}");
        assert!(!headers.contains_key("vary"), "{origin:?}");
    }

    // A refusal by a later policy carries them too, so the page can read the 401.
    let (status, headers, _) = send(&api, Method::GET, "/cors/items", &[("origin", APP)]).await;
    assert_eq!(status, 401);
    assert_eq!(headers["access-control-allow-origin"], APP);

    // A WebSocket handshake from a listed origin carries them on its 101.
    let (mut session, headers) = ws(
        &api,
        "/cors/room",
        &[("origin", APP), ("x-api-key", "alice-key")],
    )
    .await;
    assert_eq!(headers["access-control-allow-origin"], APP);
    round_trip(&mut session, "hello").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_transforms_reach_the_backend_and_the_client_over_http() {
    let (api, _echo) = fixture().await;
    let (status, headers, body) = send(
        &api,
        Method::GET,
        "/hdr/items",
        &[
            ("x-api-key", "alice-key"),
            ("x-secret", "s3cret"),
            ("x-consumer", "spoofed"),
            ("x-multi", "mine"),
            ("x-request-id", "rid-42"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let seen = &json_of(&body)["headers"];
    assert_eq!(seen["x-consumer"], "alice");
    assert_eq!(seen["x-client"], "127.0.0.1");
    assert_eq!(seen["x-rid"], "rid-42");
    assert_eq!(seen["x-multi"], "mine, added");
    assert!(seen.get("x-secret").is_none(), "{seen}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-who"], "alice");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["content-type"], "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_transforms_apply_to_the_handshake_and_the_101() {
    let (api, _echo) = fixture().await;
    // The echo's 101 carries x-echo-uri; the policy removes it.
    let (_plain, headers) = ws(&api, "/plain/room", &[]).await;
    assert!(headers.contains_key("x-echo-uri"));
    let (mut session, headers) = ws(&api, "/hdr/room", &[("x-api-key", "alice-key")]).await;
    assert!(!headers.contains_key("x-echo-uri"), "{headers:?}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-who"], "alice");
    assert_eq!(headers["cache-control"], "no-store");
    round_trip(&mut session, "hello").await;

    let (mut session, _) = ws(
        &api,
        "/wshdr/room",
        &[
            ("x-api-key", "alice-key"),
            ("x-secret", "s3cret"),
            ("x-consumer", "spoofed"),
            ("x-request-id", "rid-43"),
        ],
    )
    .await;
    let report = within("the backend's report", session.next())
        .await
        .expect("a message")
        .expect("no error");
    let seen: Value = serde_json::from_str(report.to_text().expect("text")).expect("JSON");
    assert_eq!(seen["x-consumer"], "alice", "{seen}");
    assert_eq!(seen["x-client"], "127.0.0.1");
    assert_eq!(seen["x-rid"], "rid-43");
    assert_eq!(seen["x-multi"], "added");
    assert!(seen.get("x-secret").is_none(), "{seen}");
    round_trip(&mut session, "hello").await;
}

/// Headers a client names in `Connection` are its own hop-by-hop ones: they go, but those the
/// gateway and its policies set under the same names reach the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_name_the_gateways_headers_away_in_connection() {
    let (api, _echo) = fixture().await;
    const NAMED: &str = "x-consumer, x-rid, x-request-id, traceparent, x-mine";
    let (status, _, body) = send(
        &api,
        Method::GET,
        "/hdr/items",
        &[
            ("x-api-key", "alice-key"),
            ("connection", NAMED),
            ("x-mine", "hop"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let seen = &json_of(&body)["headers"];
    let connection = format!("Upgrade, {NAMED}");
    let (mut session, _) = ws(
        &api,
        "/wshdr/room",
        &[
            ("x-api-key", "alice-key"),
            ("connection", &connection),
            ("x-mine", "hop"),
        ],
    )
    .await;
    let report = within("the backend's report", session.next())
        .await
        .expect("a message")
        .expect("no error");
    let seen_ws: Value = serde_json::from_str(report.to_text().expect("text")).expect("JSON");
    for seen in [seen, &seen_ws] {
        assert_eq!(seen["x-consumer"], "alice", "{seen}");
        for set in ["x-rid", "x-request-id", "traceparent"] {
            assert!(seen.get(set).is_some_and(|v| v != ""), "{set}: {seen}");
        }
        assert!(seen.get("x-mine").is_none(), "{seen}");
    }
    round_trip(&mut session, "hello").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entries_are_refused_with_the_value_named() {
    let (api, _echo) = fixture().await;
    for (policy, needle) in [
        (
            json!({"type": "cors", "origins": ["*"], "credentials": true}),
            "cannot go with origins",
        ),
        (json!({"type": "cors"}), "needs origins"),
        (
            json!({"type": "headers", "request_set": ["X-A: $jwt."]}),
            "$jwt. needs a claim name",
        ),
        (
            json!({"type": "headers", "response_add": ["X-A: $nope"]}),
            "$nope is not a variable",
        ),
        (
            json!({"type": "headers", "request_set": ["X-A"]}),
            "\\\"X-A\\\" is not \\\"Name: value\\\"",
        ),
    ] {
        let refused = api
            .put(
                "/proxies/bad",
                &json!({"path": "/bad/*", "backend": "http://127.0.0.1:1", "policies": [policy]}),
            )
            .await
            .expect_error(422, "invalid", needle);
        assert!(refused.to_string().contains(needle), "{needle}: {refused}");
    }
}

/// A gateway with a `jwt` (HS256) and a `headers` policy using `$jwt.<claim>` on `/claims/*`
/// (to the echo backend) and `/wsclaims/*` (to [`reporting_backend`]).
async fn claims_fixture() -> (Stack, echo::EchoHandle) {
    let echo = echo::spawn("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("the echo backend starts");
    let reporting = reporting_backend().await;
    let api = with_prod().await;
    let policies = json!([
        {"type": "headers",
         "request_set": ["X-User-Email: $jwt.email", "X-Level: level=$jwt.level",
                         "X-Admin: $jwt.admin", "X-Team: $jwt.team"],
         "response_set": ["X-Sub: $jwt.sub"]},
        {"type": "jwt", "secret": CLAIMS_SECRET, "anonymous": true},
    ]);
    for (name, backend) in [
        ("claims", format!("http://{}/svc", echo.local_addr())),
        ("wsclaims", format!("http://{reporting}/svc")),
    ] {
        api.put(
            &format!("/proxies/{name}"),
            &json!({"path": format!("/{name}/*"), "backend": backend, "policies": policies}),
        )
        .await
        .expect(201, &format!("proxy {name}"));
        api.deploy(name, "prod").await;
    }
    (api, echo)
}

const CLAIMS_SECRET: &str = "a-secret-for-the-claims-tests";

/// `Bearer <token>` with a text, a number and a flag claim, and no `team`.
fn claims_bearer() -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 300;
    let claims = json!({"sub": "user-7", "email": "dana@example.com", "level": 3,
                        "admin": false, "exp": exp});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(CLAIMS_SECRET.as_bytes()),
    )
    .expect("a token");
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_claims_fill_header_values_over_http() {
    let (api, _echo) = claims_fixture().await;
    let bearer = claims_bearer();
    let (status, headers, body) = send(
        &api,
        Method::GET,
        "/claims/a",
        &[("authorization", &bearer), ("x-team", "spoofed")],
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let seen = &json_of(&body)["headers"];
    assert_eq!(seen["x-user-email"], "dana@example.com", "{seen}");
    assert_eq!(seen["x-level"], "level=3", "a number as its JSON text");
    assert_eq!(seen["x-admin"], "false", "a flag as its JSON text");
    assert!(
        seen.get("x-team").is_none(),
        "an absent claim sets nothing, and the client's value is removed: {seen}"
    );
    assert_eq!(headers["x-sub"], "user-7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_claims_fill_header_values_on_a_websocket_handshake() {
    let (api, _echo) = claims_fixture().await;
    let bearer = claims_bearer();
    let (mut session, headers) = ws(
        &api,
        "/wsclaims/room",
        &[("authorization", &bearer), ("x-team", "spoofed")],
    )
    .await;
    assert_eq!(headers["x-sub"], "user-7", "on the 101");
    let report = within("the backend's report", session.next())
        .await
        .expect("a message")
        .expect("no error");
    let seen: Value = serde_json::from_str(report.to_text().expect("text")).expect("JSON");
    assert_eq!(seen["x-user-email"], "dana@example.com", "{seen}");
    assert_eq!(seen["x-level"], "level=3");
    assert_eq!(seen["x-admin"], "false");
    assert!(seen.get("x-team").is_none(), "{seen}");
    round_trip(&mut session, "hello").await;
}
