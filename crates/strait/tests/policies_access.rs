//! Access policies end to end, with real clients over loopback, each on HTTP and on
//! WebSocket: `origin` (a handshake from an unlisted or missing Origin refused with 403, the
//! listed one admitted; HTTP judged only when it carries Origin) and `ip_filter` (deny and
//! allow by CIDR, and a trusted proxy's `X-Forwarded-For` naming the client, with spoofed
//! entries to its left ignored); both before authentication; bad entries refused by the
//! admin API with the value named.

mod support;

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use strait::echo;
use support::{Stack, json_of, round_trip, with_prod, within};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const APP: &str = "https://app.example.com";

/// A stateful gateway: environment `prod` with WebSocket on, consumer alice, and proxies to
/// the echo backend: `/origin/*` origin [APP], `/deny/*` ip_filter deny 127.0.0.1,
/// `/allow/*` ip_filter allow 127.0.0.0/8, `/proxied/*` ip_filter allow 203.0.113.0/24
/// deny 203.0.113.66 behind trusted proxy 127.0.0.1, `/keyed/*` api_key + ip_filter deny
/// 127.0.0.1 (listed after the key).
async fn fixture() -> (Stack, echo::EchoHandle) {
    let echo = echo::spawn("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("the echo backend starts");
    let api = with_prod().await;
    api.put(
        "/consumers/alice",
        &json!({"groups": ["admins"], "credentials": {"api_keys": ["alice-key"]}}),
    )
    .await
    .expect(201, "consumer");
    let backend = format!("http://{}/svc", echo.local_addr());
    let proxies = [
        ("origin", json!([{"type": "origin", "allow": [APP]}])),
        (
            "deny",
            json!([{"type": "ip_filter", "deny": ["127.0.0.1"]}]),
        ),
        (
            "allow",
            json!([{"type": "ip_filter", "allow": ["127.0.0.0/8"]}]),
        ),
        (
            "proxied",
            json!([{"type": "ip_filter", "allow": ["203.0.113.0/24"],
                    "deny": ["203.0.113.66"], "trusted_proxies": ["127.0.0.1"]}]),
        ),
        (
            "keyed",
            json!([{"type": "api_key"}, {"type": "ip_filter", "deny": ["127.0.0.1"]}]),
        ),
    ];
    for (name, policies) in proxies {
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

/// One HTTP GET through `prod`: status and body.
async fn send(api: &Stack, path: &str, headers: &[(&str, &str)]) -> (u16, Bytes) {
    let (status, _, body) = api
        .request(Method::GET, "prod", path, headers, Bytes::new())
        .await;
    (status, body)
}

/// Asserts a 403 `forbidden` JSON error; returns its message.
#[track_caller]
fn assert_forbidden(answer: &(u16, Bytes), what: &str) -> String {
    let (status, body) = answer;
    assert_eq!(*status, 403, "{what}: {}", String::from_utf8_lossy(body));
    let error = json_of(body);
    assert_eq!(error["status"], 403, "{what}: {error}");
    assert_eq!(error["error"], "forbidden", "{what}: {error}");
    error["message"].as_str().expect("a message").to_owned()
}

/// A WebSocket handshake through `prod` with extra headers: a round trip on the session
/// when admitted, or the refusal's status and JSON body.
async fn ws(api: &Stack, path: &str, headers: &[(&str, &str)]) -> Result<(), (u16, Value)> {
    let mut request = format!("ws://{}{path}", api.gw("prod"))
        .into_client_request()
        .expect("a request");
    for (name, value) in headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    match within("the WebSocket handshake", connect_async(request)).await {
        Ok((mut session, _)) => {
            round_trip(&mut session, "hello").await;
            Ok(())
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            Err((
                response.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            ))
        }
        Err(other) => panic!("the handshake failed without an answer: {other}"),
    }
}

#[track_caller]
fn assert_ws_forbidden(result: Result<(), (u16, Value)>, what: &str) -> String {
    let Err((status, body)) = result else {
        panic!("{what}: the handshake was accepted");
    };
    assert_eq!(status, 403, "{what}: {body}");
    assert_eq!(body["error"], "forbidden", "{what}: {body}");
    body["message"].as_str().expect("a message").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_guards_websocket_handshakes() {
    let (api, _echo) = fixture().await;
    ws(&api, "/origin/room", &[("origin", APP)])
        .await
        .expect("the listed origin is admitted");
    ws(
        &api,
        "/origin/room",
        &[("origin", "HTTPS://App.Example.com:443")],
    )
    .await
    .expect("the same origin, written otherwise");
    for origin in [
        "https://evil.example",
        "http://app.example.com",
        "https://app.example.com.evil.example",
        "null",
    ] {
        assert_ws_forbidden(
            ws(&api, "/origin/room", &[("origin", origin)]).await,
            origin,
        );
    }
    let message = assert_ws_forbidden(ws(&api, "/origin/room", &[]).await, "no Origin");
    assert!(message.contains("must carry an Origin"), "{message}");
    assert_ws_forbidden(
        ws(
            &api,
            "/origin/room",
            &[("origin", APP), ("origin", "https://evil.example")],
        )
        .await,
        "two Origin headers",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_judges_http_requests_that_carry_one() {
    let (api, _echo) = fixture().await;
    assert_eq!(send(&api, "/origin/a", &[("origin", APP)]).await.0, 200);
    assert_eq!(
        send(&api, "/origin/a", &[]).await.0,
        200,
        "no Origin: not a browser, let through"
    );
    let message = assert_forbidden(
        &send(&api, "/origin/a", &[("origin", "https://evil.example")]).await,
        "an unlisted origin",
    );
    assert!(
        !message.contains("evil"),
        "the value is not echoed: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_filter_denies_and_allows_the_peer_on_both_protocols() {
    let (api, _echo) = fixture().await;
    let message = assert_forbidden(&send(&api, "/deny/a", &[]).await, "denied over HTTP");
    assert_eq!(
        message,
        "client address 127.0.0.1 may not use this API proxy"
    );
    assert_ws_forbidden(ws(&api, "/deny/room", &[]).await, "denied handshake");

    let (status, body) = send(&api, "/allow/a", &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body)["path"], "/svc/a");
    ws(&api, "/allow/room", &[])
        .await
        .expect("an allowed peer's handshake");

    // Access runs before authentication: a denied client is 403, key or no key.
    assert_forbidden(&send(&api, "/keyed/a", &[]).await, "no key");
    assert_forbidden(
        &send(&api, "/keyed/a", &[("x-api-key", "alice-key")]).await,
        "a good key",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_forwarded_for_names_the_client() {
    let (api, _echo) = fixture().await;
    // The peer (127.0.0.1) is the trusted proxy, and is itself not allowed.
    assert_forbidden(&send(&api, "/proxied/a", &[]).await, "the proxy itself");
    let (status, body) = send(&api, "/proxied/a", &[("x-forwarded-for", "203.0.113.7")]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // The backend sees the chain with the peer appended.
    assert_eq!(
        json_of(&body)["headers"]["x-forwarded-for"],
        "203.0.113.7, 127.0.0.1"
    );
    // A client that is denied spoofs an allowed address to the left: the right-most wins.
    let message = assert_forbidden(
        &send(
            &api,
            "/proxied/a",
            &[("x-forwarded-for", "203.0.113.7, 203.0.113.66, 127.0.0.1")],
        )
        .await,
        "spoofed entries to the left",
    );
    assert_eq!(
        message,
        "client address 203.0.113.66 may not use this API proxy"
    );
    assert_forbidden(
        &send(&api, "/proxied/a", &[("x-forwarded-for", "198.51.100.1")]).await,
        "not on the allow list",
    );

    ws(&api, "/proxied/room", &[("x-forwarded-for", "203.0.113.7")])
        .await
        .expect("a forwarded, allowed client's handshake");
    assert_ws_forbidden(
        ws(
            &api,
            "/proxied/room",
            &[("x-forwarded-for", "203.0.113.7, 203.0.113.66")],
        )
        .await,
        "a forwarded, denied client's handshake",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entries_are_refused_naming_the_value() {
    let (api, _echo) = fixture().await;
    for (policy, needle) in [
        (
            json!({"type": "ip_filter", "deny": ["10.0.0.0/33"]}),
            "10.0.0.0/33",
        ),
        (
            json!({"type": "ip_filter", "allow": ["10.0.0.0/8"], "trusted_proxies": ["proxy.local"]}),
            "proxy.local",
        ),
        (
            json!({"type": "origin", "allow": ["*"]}),
            "remove the origin policy",
        ),
        (
            json!({"type": "origin", "allow": ["https://app.example.com/path"]}),
            "https://app.example.com/path",
        ),
    ] {
        let refused = api
            .put(
                "/proxies/bad",
                &json!({"path": "/bad/*", "backend": "http://127.0.0.1:1", "policies": [policy]}),
            )
            .await
            .expect_error(422, "invalid", needle);
        assert!(refused.to_string().contains(needle), "{refused}");
    }
}
