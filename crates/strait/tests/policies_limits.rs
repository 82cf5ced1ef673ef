//! The limits phase end to end, with real clients over loopback: `rate_limit` on HTTP and on
//! WebSocket handshakes (429 after exactly N requests in a window, with `Retry-After` and
//! `RateLimit-*` headers that agree; the headers on admitted answers too, the 101 included),
//! counted per client IP, per consumer or for the whole proxy; `ws_connections` refusing the
//! (N+1)th session with 429 and admitting again once one has closed, HTTP untouched.
//!
//! Windows are long (a minute, an hour) so nothing comes back during a test; the only wait
//! is for a closed session to leave the list, bounded by `within`.

mod support;

use bytes::Bytes;
use http::{HeaderMap, Method, header};
use serde_json::{Value, json};
use strait::echo;
use support::{Stack, declarative, json_of, round_trip, stateful, with_prod, within};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const ALICE_KEY: &str = "alice-key-0123";
const BOB_KEY: &str = "bob-key-4567";

/// A stateful gateway: environment `prod` (WebSocket on), consumers alice and bob, and one
/// proxy per limit, all to the echo backend:
/// `/ip/*` 3 per minute by IP; `/mixed/*` 2 per minute (no authentication: by IP);
/// `/consumer/*` api_key + 1 per hour by consumer; `/shared/*` api_key + 1 per hour by IP;
/// `/whole/*` 2 per hour for the proxy; `/sessions/*` at most 2 WebSocket sessions.
struct Fixture {
    api: Stack,
    _echo: echo::EchoHandle,
}

async fn fixture() -> Fixture {
    let echo = echo::spawn("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("the echo backend starts");
    let api = with_prod().await;
    for (name, key) in [("alice", ALICE_KEY), ("bob", BOB_KEY)] {
        api.put(
            &format!("/consumers/{name}"),
            &json!({"groups": ["users"], "credentials": {"api_keys": [key]}}),
        )
        .await
        .expect(201, &format!("consumer {name}"));
    }
    let key = json!({"type": "api_key"});
    let limit = |requests: u64, per: &str, by: &str| json!({"type": "rate_limit", "requests": requests, "per": per, "by": by});
    let proxies = [
        ("ip", json!([limit(3, "1m", "ip")])),
        (
            "mixed",
            json!([{"type": "rate_limit", "requests": 2, "per": "1m"}]),
        ),
        ("consumer", json!([limit(1, "1h", "consumer"), key.clone()])),
        ("shared", json!([key, limit(1, "1h", "ip")])),
        ("whole", json!([limit(2, "1h", "proxy")])),
        ("sessions", json!([{"type": "ws_connections", "max": 2}])),
    ];
    let backend = format!("http://{}/svc", echo.local_addr());
    for (name, policies) in proxies {
        api.put(
            &format!("/proxies/{name}"),
            &json!({"path": format!("/{name}/*"), "backend": backend, "policies": policies}),
        )
        .await
        .expect(201, &format!("proxy {name}"));
        api.deploy(name, "prod").await;
    }
    Fixture { api, _echo: echo }
}

/// One HTTP GET through `prod`: status, headers, body.
async fn send(api: &Stack, path: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, Bytes) {
    api.request(Method::GET, "prod", path, headers, Bytes::new())
        .await
}

/// A WebSocket handshake through `prod`: the session with its 101, or the refusal.
async fn ws_open(
    api: &Stack,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(support::Ws, HeaderMap), (u16, HeaderMap, Value)> {
    let mut request = format!("ws://{}{path}", api.gw("prod"))
        .into_client_request()
        .expect("a request");
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    match within("the WebSocket handshake", connect_async(request)).await {
        Ok((ws, response)) => Ok((ws, response.headers().clone())),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response.body().clone().unwrap_or_default();
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            Err((status, response.headers().clone(), body))
        }
        Err(other) => panic!("the handshake failed without an answer: {other}"),
    }
}

#[track_caller]
fn number(headers: &HeaderMap, name: &str) -> u64 {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("{name} is missing from {headers:?}"))
        .to_str()
        .expect("ascii")
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The `RateLimit-*` numbers: limit, remaining, reset.
#[track_caller]
fn quota(headers: &HeaderMap) -> (u64, u64, u64) {
    (
        number(headers, "ratelimit-limit"),
        number(headers, "ratelimit-remaining"),
        number(headers, "ratelimit-reset"),
    )
}

/// A 429 from a rate limit: JSON, `Retry-After` within the window and no later than the
/// reset, nothing remaining. Returns the error's message.
#[track_caller]
fn assert_limited(status: u16, headers: &HeaderMap, body: &Value, limit: u64, window: u64) {
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["status"], 429);
    assert_eq!(body["error"], "too_many_requests");
    let (sent_limit, remaining, reset) = quota(headers);
    assert_eq!((sent_limit, remaining), (limit, 0));
    let retry = number(headers, "retry-after");
    // One request comes back every window / limit.
    let step = window / limit;
    assert!(
        (1..=step).contains(&retry),
        "Retry-After {retry}s, one request back every {step}s"
    );
    assert!(
        retry <= reset && reset <= window,
        "Retry-After {retry}s ≤ RateLimit-Reset {reset}s ≤ the window {window}s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_is_refused_after_exactly_n_requests_in_a_window() {
    let fx = fixture().await;
    let api = &fx.api;
    for (n, remaining) in [(1, 2), (2, 1), (3, 0)] {
        let (status, headers, body) = send(api, "/ip/a", &[]).await;
        assert_eq!(status, 200, "request {n} of 3");
        let (limit, left, reset) = quota(&headers);
        assert_eq!((limit, left), (3, remaining), "request {n}");
        // The quota is whole again (3 - remaining) × 20s from now.
        assert!(
            (1..=(3 - remaining) * 20).contains(&reset),
            "request {n}: reset {reset}s"
        );
        assert_eq!(
            json_of(&body)["path"],
            "/svc/a",
            "the backend's answer carries them"
        );
    }
    let (status, headers, body) = send(api, "/ip/b", &[]).await;
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let body = json_of(&body);
    assert_limited(status, &headers, &body, 3, 60);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("client 127.0.0.1") && m.contains("3 requests")),
        "{body}"
    );
    assert!(
        headers.contains_key("x-request-id"),
        "still a gateway answer"
    );
    // Other proxies have their own limits.
    assert_eq!(send(api, "/whole/x", &[]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_handshake_counts_as_a_request() {
    let fx = fixture().await;
    let api = &fx.api;
    let (status, headers, _) = send(api, "/mixed/a", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(quota(&headers).1, 1);
    let (mut ws, upgraded) = ws_open(api, "/mixed/room", &[])
        .await
        .expect("the second request: a handshake");
    assert_eq!(quota(&upgraded).0, 2, "the 101 carries the headers");
    assert_eq!(quota(&upgraded).1, 0);
    round_trip(&mut ws, "counted once, at the handshake").await;
    round_trip(&mut ws, "messages are not requests").await;

    let (status, headers, body) = ws_open(api, "/mixed/room", &[])
        .await
        .expect_err("the third request is refused");
    assert_limited(status, &headers, &body, 2, 60);
    let (status, headers, body) = send(api, "/mixed/b", &[]).await;
    assert_limited(status, &headers, &json_of(&body), 2, 60);
    round_trip(&mut ws, "the open session is not cut").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_the_consumer_the_client_ip_or_the_whole_proxy() {
    let fx = fixture().await;
    let api = &fx.api;
    let alice = [("x-api-key", ALICE_KEY)];
    let bob = [("x-api-key", BOB_KEY)];

    // By consumer: alice's quota is hers, bob's his, from the same IP.
    assert_eq!(send(api, "/consumer/a", &alice).await.0, 200);
    let (status, headers, body) = send(api, "/consumer/a", &alice).await;
    let body = json_of(&body);
    assert_limited(status, &headers, &body, 1, 3600);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("consumer \"alice\"")),
        "{body}"
    );
    let (_, upgraded) = ws_open(api, "/consumer/ws", &bob)
        .await
        .expect("bob has his own quota");
    assert_eq!(quota(&upgraded).1, 0);
    assert_eq!(
        send(api, "/consumer/a", &[]).await.0,
        401,
        "authentication runs first"
    );

    // By IP: alice and bob share one quota from one address.
    assert_eq!(send(api, "/shared/a", &alice).await.0, 200);
    let (status, headers, body) = send(api, "/shared/a", &bob).await;
    assert_limited(status, &headers, &json_of(&body), 1, 3600);

    // The whole proxy: two requests in all, whoever sends them.
    assert_eq!(send(api, "/whole/a", &alice).await.0, 200);
    assert!(ws_open(api, "/whole/ws", &[]).await.is_ok());
    let (status, headers, body) = send(api, "/whole/a", &bob).await;
    let body = json_of(&body);
    assert_limited(status, &headers, &body, 2, 3600);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("this API proxy")),
        "{body}"
    );
}

/// How many sessions `/connections` lists on proxy `sessions`.
async fn sessions(api: &Stack) -> u64 {
    api.get("/connections?proxy=sessions")
        .await
        .expect(200, "list")
        .json()["total"]
        .as_u64()
        .expect("a total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_beyond_max_is_refused_until_one_closes() {
    let fx = fixture().await;
    let api = &fx.api;
    let (mut first, _) = ws_open(api, "/sessions/1", &[]).await.expect("first");
    let (mut second, _) = ws_open(api, "/sessions/2", &[]).await.expect("second");
    round_trip(&mut first, "one").await;
    round_trip(&mut second, "two").await;

    let (status, headers, body) = ws_open(api, "/sessions/3", &[])
        .await
        .expect_err("the third session is refused");
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(body["error"], "too_many_requests");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("client 127.0.0.1") && m.contains("2 WebSocket")),
        "{body}"
    );
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert_eq!(
        send(api, "/sessions/plain", &[]).await.0,
        200,
        "plain HTTP is not limited"
    );
    assert_eq!(
        sessions(api).await,
        2,
        "the refused one never became a session"
    );

    within("the close handshake", first.close(None))
        .await
        .expect("close");
    // The place is given back when the session task ends; it leaves the list after that.
    within("the closed session to end", async {
        while sessions(api).await != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let (mut third, _) = ws_open(api, "/sessions/3", &[])
        .await
        .expect("admitted once one has closed");
    round_trip(&mut third, "three").await;
    round_trip(&mut second, "still two").await;
    assert!(
        ws_open(api, "/sessions/4", &[]).await.is_err(),
        "full again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_or_absurd_limits_are_refused_with_their_field() {
    let api = stateful(None).await;
    for (policy, field) in [
        (
            json!({"type": "rate_limit", "requests": 0, "per": "1m"}),
            "requests",
        ),
        (
            json!({"type": "rate_limit", "requests": 10, "per": "0s"}),
            "per",
        ),
        (
            json!({"type": "rate_limit", "requests": "many", "per": "1m"}),
            "requests",
        ),
        (
            json!({"type": "rate_limit", "requests": 10, "per": "1m", "by": "user"}),
            "by",
        ),
        (json!({"type": "ws_connections", "max": 0}), "max"),
        (json!({"type": "ws_connections", "max": -1}), "max"),
    ] {
        let problem = api
            .put(
                "/proxies/bad",
                &json!({"path": "/bad/*", "backend": "http://127.0.0.1:1", "policies": [policy]}),
            )
            .await
            .expect_error(422, "invalid", &policy.to_string());
        assert!(
            problem
                .to_string()
                .contains(&format!("policies[0].{field}")),
            "{policy}: {problem}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yaml_file_writes_limits_as_plain_numbers() {
    let echo = echo::spawn("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("echo");
    let yaml = format!(
        "environments:
  - name: prod
    listen: 127.0.0.1:0
    websocket: true
    policies:
      - {{type: rate_limit, requests: 2, per: 1h, by: proxy}}
      - {{type: ws_connections, max: 1}}
proxies:
  - name: echo
    path: /echo/*
    backend: http://{}/e
    deploy: [prod]
",
        echo.local_addr()
    );
    let (api, _file) = declarative(&yaml).await;
    let (_ws, upgraded) = ws_open(&api, "/echo/ws", &[]).await.expect("one session");
    assert_eq!(quota(&upgraded), (2, 1, 1800));
    let (status, headers, _) = send(&api, "/echo/x", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(quota(&headers).1, 0);
    let (status, headers, body) = send(&api, "/echo/x", &[]).await;
    assert_limited(status, &headers, &json_of(&body), 2, 3600);
}
