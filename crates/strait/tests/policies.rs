//! Policies end to end, with real clients over loopback, each on HTTP and on WebSocket:
//! `api_key` from a header or the query (removed before the backend sees it unless `keep`),
//! `basic_auth` (argon2id hashes verified off the async workers), `acl` by group, an
//! environment's policies applying to its proxies; the consumer attached to WebSocket
//! sessions (listed, closable) and logged; consumers managed through the admin API and
//! persisted, declared in a file with `${VAR}` secrets, applied with `strait apply` — and no
//! secret in the API's answers, the exported configuration or the access log.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Method, Request, header};
use http_body_util::Full;
use serde_json::{Value, json};
use strait::admin::{AdminClient, apply_file};
use strait::control::Control;
use strait::echo;
use support::{Stack, declarative, expect_close, json_of, round_trip, stateful, within};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request as WsRequest, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{accept_hdr_async, connect_async};

const ALICE_KEY: &str = "alice-key-0123";
const ALICE_PW: &str = "alice password";
const BOB_KEY: &str = "bob-key-4567";
const BOB_PW: &str = "bob password";
const UNAUTHORIZED: &str =
    "this API proxy needs valid credentials, and the request did not present any";

fn consumers() -> [(&'static str, Value); 2] {
    [
        (
            "alice",
            json!({"groups": ["admins", "beta"], "credentials": {
                "api_keys": [ALICE_KEY],
                "basic_auth": {"username": "alice", "password": ALICE_PW}}}),
        ),
        (
            "bob",
            json!({"groups": ["users"], "credentials": {
                "api_keys": [BOB_KEY],
                "basic_auth": {"username": "bob", "password": BOB_PW}}}),
        ),
    ]
}

/// A WebSocket backend that reports the headers of every handshake it accepts, then echoes.
async fn capturing_backend() -> (SocketAddr, mpsc::UnboundedReceiver<HeaderMap>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                #[allow(clippy::result_large_err, reason = "tungstenite's callback type")]
                let capture = |request: &WsRequest, response: Response| {
                    let _ = tx.send(request.headers().clone());
                    Ok(response)
                };
                let Ok(mut ws) = accept_hdr_async(tcp, capture).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() || message.is_binary() {
                        let _ = futures_util::SinkExt::send(&mut ws, message).await;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// A stateful gateway: environment `prod` (WebSocket on, access log in the stack's folder),
/// consumers alice and bob, and one proxy per policy setup, all to the echo backend:
/// `/key/*` api_key (header or `?api_key=`), `/kept/*` the same with `keep`, `/basic/*`
/// basic_auth, `/admins/*` api_key + acl allow [admins], `/nousers/*` api_key + acl deny
/// [users], `/wscap/*` api_key to the capturing backend.
struct Fixture {
    api: Stack,
    echo: echo::EchoHandle,
    captured: mpsc::UnboundedReceiver<HeaderMap>,
    log: PathBuf,
}

async fn fixture() -> Fixture {
    let echo = echo::spawn("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("the echo backend starts");
    let (capture, captured) = capturing_backend().await;
    let api = stateful(None).await;
    let log = api.dir.path().join("access.log");
    api.put(
        "/environments/prod",
        &json!({"listen": "127.0.0.1:0", "websocket": true,
                "access_log": {"file": log.to_str().expect("utf-8"), "log_handshake": true}}),
    )
    .await
    .expect(201, "environment");
    for (name, body) in consumers() {
        api.put(&format!("/consumers/{name}"), &body)
            .await
            .expect(201, &format!("consumer {name}"));
    }
    let echo_url = format!("http://{}/svc", echo.local_addr());
    let key = json!({"type": "api_key", "query": "api_key"});
    let proxies = [
        ("key", "/key/*", echo_url.clone(), json!([key.clone()])),
        (
            "kept",
            "/kept/*",
            echo_url.clone(),
            json!([{"type": "api_key", "query": "api_key", "keep": true}]),
        ),
        (
            "basic",
            "/basic/*",
            echo_url.clone(),
            json!([{"type": "basic_auth"}]),
        ),
        (
            "admins",
            "/admins/*",
            echo_url.clone(),
            // Listed before the authentication it needs: phases put it after.
            json!([{"type": "acl", "allow": ["admins"]}, key.clone()]),
        ),
        (
            "nousers",
            "/nousers/*",
            echo_url.clone(),
            json!([key.clone(), {"type": "acl", "deny": ["users"]}]),
        ),
        (
            "wscap",
            "/wscap/*",
            format!("http://{capture}/ws"),
            json!([key]),
        ),
    ];
    for (name, path, backend, policies) in proxies {
        api.put(
            &format!("/proxies/{name}"),
            &json!({"path": path, "backend": backend, "policies": policies}),
        )
        .await
        .expect(201, &format!("proxy {name}"));
        api.deploy(name, "prod").await;
    }
    Fixture {
        api,
        echo,
        captured,
        log,
    }
}

/// One HTTP request through environment `env`: status, headers, body.
async fn send(
    api: &Stack,
    env: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, Bytes) {
    api.request(Method::GET, env, path, headers, Bytes::new())
        .await
}

fn basic(username: &str, password: &str) -> String {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {encoded}")
}

/// Asserts a 401 from the gateway: JSON error, the one message, these challenges.
#[track_caller]
fn assert_unauthorized(answer: &(u16, HeaderMap, Bytes), challenges: &[&str], what: &str) {
    let (status, headers, body) = answer;
    assert_eq!(*status, 401, "{what}: {}", String::from_utf8_lossy(body));
    assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{what}");
    let sent: Vec<&str> = headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect();
    assert_eq!(sent, challenges, "{what}: one challenge per scheme");
    assert_eq!(
        json_of(body),
        json!({"status": 401, "error": "unauthorized", "message": UNAUTHORIZED}),
        "{what}: the same answer whatever was wrong"
    );
}

/// A WebSocket handshake through `env` with extra headers; the 101 response or the refusal.
async fn ws_open(
    api: &Stack,
    env: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<
    (
        support::Ws,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    (u16, HeaderMap, Value),
> {
    let mut request = format!("ws://{}{path}", api.gw(env))
        .into_client_request()
        .expect("a request");
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    match within("the WebSocket handshake", connect_async(request)).await {
        Ok(pair) => Ok(pair),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response.body().clone().unwrap_or_default();
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let headers = response.headers().clone();
            Err((status, headers, body))
        }
        Err(other) => panic!("the handshake failed without an answer: {other}"),
    }
}

#[track_caller]
fn assert_ws_refused(
    result: Result<impl Sized, (u16, HeaderMap, Value)>,
    status: u16,
    kind: &str,
    what: &str,
) -> HeaderMap {
    let Err((got, headers, body)) = result else {
        panic!("{what}: the handshake was accepted");
    };
    assert_eq!(got, status, "{what}: {body}");
    assert_eq!(body["error"], kind, "{what}: {body}");
    headers
}

const KEY_CHALLENGE: &str = "ApiKey header=\"X-API-Key\", query=\"api_key\"";
const BASIC_CHALLENGE: &str = "Basic realm=\"strait\", charset=\"UTF-8\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_over_http_from_the_header_or_the_query_never_reach_the_backend() {
    let fx = fixture().await;
    let api = &fx.api;

    let (status, _, body) = send(api, "prod", "/key/a", &[("x-api-key", ALICE_KEY)]).await;
    assert_eq!(status, 200);
    let echoed = json_of(&body);
    assert!(echoed["headers"].get("x-api-key").is_none(), "{echoed}");

    let query = format!("/key/a?a=%41&api_key={BOB_KEY}&b=c+d&&z");
    let (status, _, body) = send(api, "prod", &query, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        json_of(&body)["query"],
        "a=%41&b=c+d&&z",
        "the key's parameter removed, the others byte for byte"
    );

    let missing = send(api, "prod", "/key/a", &[]).await;
    assert_unauthorized(&missing, &[KEY_CHALLENGE], "no key");
    let wrong = send(api, "prod", "/key/a", &[("x-api-key", "nope")]).await;
    assert_unauthorized(&wrong, &[KEY_CHALLENGE], "an unknown key");
    let wrong = send(api, "prod", "/key/a?api_key=nope", &[]).await;
    assert_unauthorized(&wrong, &[KEY_CHALLENGE], "an unknown key in the query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_on_a_websocket_handshake_from_the_query_or_the_header() {
    let mut fx = fixture().await;
    let api = &fx.api;

    // From the query, as a browser sends it: the backend's request target lacks it.
    let (mut ws, response) = ws_open(
        api,
        "prod",
        &format!("/key/room?x=1&api_key={ALICE_KEY}"),
        &[],
    )
    .await
    .expect("a key in the query admits the handshake");
    assert_eq!(response.headers()[echo::ECHO_URI_HEADER], "/svc/room?x=1");
    round_trip(&mut ws, "hello").await;

    // From a header: the backend's handshake lacks it.
    let (mut ws, _) = ws_open(api, "prod", "/wscap/room", &[("x-api-key", BOB_KEY)])
        .await
        .expect("a key in a header admits the handshake");
    round_trip(&mut ws, "hi").await;
    let seen = within("the backend's handshake headers", fx.captured.recv())
        .await
        .expect("captured");
    assert!(seen.get("x-api-key").is_none(), "{seen:?}");
    assert!(seen.contains_key("x-forwarded-for"), "{seen:?}");

    // Refused handshakes: 401 with the challenge, counted as refused by policy.
    let headers = assert_ws_refused(
        ws_open(api, "prod", "/key/room", &[]).await,
        401,
        "unauthorized",
        "no key",
    );
    assert_eq!(headers[header::WWW_AUTHENTICATE], KEY_CHALLENGE);
    assert_ws_refused(
        ws_open(api, "prod", "/key/room?api_key=nope", &[]).await,
        401,
        "unauthorized",
        "a wrong key",
    );
    let metrics = api.get("/metrics").await.expect(200, "metrics").text();
    let refused = metrics
        .lines()
        .find(|l| {
            l.starts_with("strait_websocket_upgrades_total{")
                && l.contains("proxy=\"key\"")
                && l.contains("outcome=\"refused_by_policy\"")
        })
        .unwrap_or_else(|| panic!("no refused_by_policy series in\n{metrics}"));
    assert!(refused.ends_with(" 2"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_forwards_the_key_on_both_protocols() {
    let fx = fixture().await;
    let api = &fx.api;
    let (status, _, body) = send(
        api,
        "prod",
        "/kept/a?api_key=x",
        &[("x-api-key", ALICE_KEY)],
    )
    .await;
    assert_eq!(status, 200);
    let echoed = json_of(&body);
    assert_eq!(echoed["headers"]["x-api-key"], ALICE_KEY);
    assert_eq!(echoed["query"], "api_key=x");
    let (_, response) = ws_open(api, "prod", &format!("/kept/r?api_key={ALICE_KEY}"), &[])
        .await
        .expect("admitted");
    assert_eq!(
        response.headers()[echo::ECHO_URI_HEADER],
        format!("/svc/r?api_key={ALICE_KEY}").as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_good_bad_and_missing_on_both_protocols() {
    let fx = fixture().await;
    let api = &fx.api;
    let good = basic("alice", ALICE_PW);
    // Twice: the first verifies the argon2 hash, the second hits the remembered success.
    for _ in 0..2 {
        let (status, _, body) = send(api, "prod", "/basic/a", &[("authorization", &good)]).await;
        assert_eq!(status, 200);
        assert!(json_of(&body)["headers"].get("authorization").is_none());
    }
    let wrong_password = basic("alice", BOB_PW);
    let unknown_user = basic("mallory", ALICE_PW);
    for (headers, what) in [
        (vec![], "no credentials"),
        (
            vec![("authorization", wrong_password.as_str())],
            "a wrong password",
        ),
        (
            vec![("authorization", unknown_user.as_str())],
            "an unknown user",
        ),
        (vec![("authorization", "Basic !!!")], "garbage"),
        (vec![("authorization", "Bearer x")], "another scheme"),
    ] {
        let answer = send(api, "prod", "/basic/a", &headers).await;
        assert_unauthorized(&answer, &[BASIC_CHALLENGE], what);
    }

    let (mut ws, _) = ws_open(
        api,
        "prod",
        "/basic/room",
        &[("authorization", &basic("bob", BOB_PW))],
    )
    .await
    .expect("good credentials admit the handshake");
    round_trip(&mut ws, "hello").await;
    let headers = assert_ws_refused(
        ws_open(
            api,
            "prod",
            "/basic/room",
            &[("authorization", &wrong_password)],
        )
        .await,
        401,
        "unauthorized",
        "a wrong password",
    );
    assert_eq!(headers[header::WWW_AUTHENTICATE], BASIC_CHALLENGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_allows_and_denies_by_group_on_both_protocols() {
    let fx = fixture().await;
    let api = &fx.api;
    let alice = [("x-api-key", ALICE_KEY)];
    let bob = [("x-api-key", BOB_KEY)];

    assert_eq!(send(api, "prod", "/admins/a", &alice).await.0, 200);
    let (status, headers, body) = send(api, "prod", "/admins/a", &bob).await;
    assert_eq!(status, 403);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let refused = json_of(&body);
    assert_eq!(refused["error"], "forbidden");
    assert_eq!(refused["status"], 403);
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"bob\"")),
        "{refused}"
    );
    assert_unauthorized(
        &send(api, "prod", "/admins/a", &[]).await,
        &[KEY_CHALLENGE],
        "acl without a consumer",
    );

    assert_eq!(send(api, "prod", "/nousers/a", &alice).await.0, 200);
    assert_eq!(send(api, "prod", "/nousers/a", &bob).await.0, 403);

    let (mut ws, _) = ws_open(api, "prod", "/admins/room", &alice)
        .await
        .expect("alice may");
    round_trip(&mut ws, "hi").await;
    assert_ws_refused(
        ws_open(api, "prod", "/admins/room", &bob).await,
        403,
        "forbidden",
        "bob may not",
    );
    assert_ws_refused(
        ws_open(api, "prod", "/nousers/room", &bob).await,
        403,
        "forbidden",
        "bob is denied",
    );
    assert!(ws_open(api, "prod", "/nousers/room", &alice).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environments_policies_apply_to_its_proxies_before_their_own() {
    let fx = fixture().await;
    let api = &fx.api;
    // `gated` authenticates every request; the proxy only authorizes the consumer it found.
    api.put(
        "/environments/gated",
        &json!({"listen": "127.0.0.1:0", "websocket": true,
                "policies": [{"type": "basic_auth", "realm": "gated"}]}),
    )
    .await
    .expect(201, "environment with policies");
    let backend = fx.echo.local_addr();
    api.put(
        "/proxies/team",
        &json!({"path": "/team/*", "backend": format!("http://{backend}/t"),
                "policies": [{"type": "acl", "allow": ["admins"]}]}),
    )
    .await
    .expect(201, "proxy with an acl only");
    api.deploy("team", "gated").await;

    let alice = basic("alice", ALICE_PW);
    assert_eq!(
        send(api, "gated", "/team/a", &[("authorization", &alice)])
            .await
            .0,
        200
    );
    assert_eq!(
        send(
            api,
            "gated",
            "/team/a",
            &[("authorization", &basic("bob", BOB_PW))]
        )
        .await
        .0,
        403
    );
    assert_unauthorized(
        &send(api, "gated", "/team/a", &[]).await,
        &["Basic realm=\"gated\", charset=\"UTF-8\""],
        "the environment's authentication",
    );
    assert!(
        ws_open(api, "gated", "/team/room", &[("authorization", &alice)])
            .await
            .is_ok()
    );
    assert_ws_refused(
        ws_open(api, "gated", "/team/room", &[]).await,
        401,
        "unauthorized",
        "no credentials",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_owns_its_sessions_for_their_whole_life() {
    let fx = fixture().await;
    let api = &fx.api;
    let (mut first, _) = ws_open(api, "prod", &format!("/key/1?api_key={ALICE_KEY}"), &[])
        .await
        .expect("alice, query key");
    let (mut second, _) = ws_open(
        api,
        "prod",
        "/basic/2",
        &[("authorization", &basic("alice", ALICE_PW))],
    )
    .await
    .expect("alice, basic auth");
    let (mut third, _) = ws_open(api, "prod", "/key/3", &[("x-api-key", BOB_KEY)])
        .await
        .expect("bob");
    for ws in [&mut first, &mut second, &mut third] {
        round_trip(ws, "ping").await;
    }

    let listed = api.get("/connections").await.expect(200, "list").json();
    let owners: Vec<&str> = listed["connections"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|c| c["consumer"].as_str().expect("a consumer"))
        .collect();
    assert_eq!(owners, ["alice", "alice", "bob"]);
    let backends = listed.to_string();
    assert!(
        !backends.contains(ALICE_KEY),
        "no key in the list: {backends}"
    );
    let alices = api
        .get("/connections?consumer=alice")
        .await
        .expect(200, "filter")
        .json();
    assert_eq!(alices["total"], 2);

    let closed = api
        .delete("/connections?consumer=alice")
        .await
        .expect(200, "close alice's sessions")
        .json();
    assert_eq!(closed, json!({"closed": 2}));
    for ws in [&mut first, &mut second] {
        assert_eq!(u16::from(expect_close(ws).await.code), 1008);
    }
    round_trip(&mut third, "still here").await;
    // A closed session leaves the registry once its relay has ended.
    let left = within("alice's sessions to end", async {
        loop {
            let left = api.get("/connections").await.expect(200, "list").json();
            if left["total"] == 1 {
                return left;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(left["connections"][0]["consumer"], "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_names_the_consumer_and_never_a_secret() {
    let fx = fixture().await;
    let api = &fx.api;
    assert_eq!(
        send(api, "prod", &format!("/key/h?api_key={ALICE_KEY}&q=1"), &[])
            .await
            .0,
        200
    );
    assert_eq!(
        send(
            api,
            "prod",
            "/basic/h",
            &[("authorization", &basic("bob", BOB_PW))]
        )
        .await
        .0,
        200
    );
    assert_eq!(
        send(api, "prod", "/key/h?api_key=wrong-guess", &[]).await.0,
        401
    );
    let (mut ws, _) = ws_open(api, "prod", &format!("/kept/s?api_key={ALICE_KEY}"), &[])
        .await
        .expect("admitted");
    round_trip(&mut ws, "one").await;
    within("the close", futures_util::SinkExt::close(&mut ws))
        .await
        .expect("closed");
    // The session's line is written once the relay has ended.
    within("the session to end", async {
        while !api.get("/connections").await.json()["connections"]
            .as_array()
            .is_some_and(Vec::is_empty)
        {
            tokio::task::yield_now().await;
        }
    })
    .await;
    api.gateway.flush_access_logs().await;

    let text = std::fs::read_to_string(&fx.log).expect("the access log");
    for secret in [ALICE_KEY, BOB_PW, "wrong-guess", &basic("bob", BOB_PW)[6..]] {
        assert!(
            !text.contains(secret),
            "{secret:?} in the access log:\n{text}"
        );
    }
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    let http: Vec<&Value> = lines.iter().filter(|l| l["type"] == "http").collect();
    assert_eq!(http.len(), 3, "{text}");
    assert_eq!(http[0]["consumer"], "alice");
    assert_eq!(http[0]["path"], "/key/h?api_key=REDACTED&q=1");
    assert_eq!(http[1]["consumer"], "bob");
    assert_eq!(
        (http[2]["status"].as_u64(), &http[2]["consumer"]),
        (Some(401), &Value::Null)
    );
    let session = lines
        .iter()
        .find(|l| l["type"] == "websocket_session")
        .unwrap_or_else(|| panic!("a session line in\n{text}"));
    assert_eq!(session["consumer"], "alice");
    assert_eq!(session["path"], "/kept/s?api_key=REDACTED");
    assert!(
        session["backend"]
            .as_str()
            .is_some_and(|b| b.ends_with("/svc/s?api_key=REDACTED")),
        "the kept key is masked in the backend URL too: {session}"
    );
    let handshake = lines
        .iter()
        .find(|l| l["type"] == "websocket_handshake")
        .unwrap_or_else(|| panic!("a handshake line in\n{text}"));
    assert_eq!(handshake["consumer"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_are_managed_through_the_admin_api_hashed_and_persisted() {
    let echo = echo::spawn("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("echo");
    let api = stateful(None).await;
    api.put("/environments/prod", &json!({"listen": "127.0.0.1:0"}))
        .await
        .expect(201, "environment");
    api.put(
        "/proxies/p",
        &json!({"path": "/p/*", "backend": format!("http://{}/", echo.local_addr()),
                "policies": [{"type": "api_key"}, {"type": "basic_auth"}]}),
    )
    .await
    .expect(201, "proxy");
    api.deploy("p", "prod").await;

    let [(_, alice), (_, bob)] = consumers();
    let created = api
        .put("/consumers/alice", &alice)
        .await
        .expect(201, "create")
        .json();
    let shown = json!({"name": "alice", "groups": ["admins", "beta"],
        "credentials": {"api_keys": 1, "basic_auth": {"username": "alice"}}});
    assert_eq!(created, shown, "the answer summarises the credentials");
    assert_eq!(
        api.get("/consumers/alice").await.expect(200, "get").json(),
        shown
    );
    assert_eq!(
        api.get("/consumers").await.expect(200, "list").json(),
        json!({"consumers": [shown]})
    );
    assert_eq!(
        send(&api, "prod", "/p/x", &[("x-api-key", ALICE_KEY)])
            .await
            .0,
        200
    );
    let good = basic("alice", ALICE_PW);
    assert_eq!(
        send(&api, "prod", "/p/x", &[("authorization", &good)])
            .await
            .0,
        200
    );

    // The same body again changes nothing: the password matches the stored hash.
    let history = api.get("/history").await.expect(200, "history").json()["total"].clone();
    api.put("/consumers/alice", &alice)
        .await
        .expect(200, "unchanged");
    assert_eq!(
        api.get("/history").await.json()["total"],
        history,
        "no new history entry"
    );

    // Secrets are nowhere; the export holds their hashes, which the API takes back.
    let config = api.get("/config").await.expect(200, "config").text();
    let history_text = api.get("/history").await.text();
    for text in [&config, &history_text] {
        assert!(
            !text.contains(ALICE_KEY) && !text.contains(ALICE_PW),
            "{text}"
        );
    }
    assert!(
        config.contains("api_key_digests:") && config.contains("$argon2id$v=19$"),
        "{config}"
    );
    let exported = strait::config::document_from_yaml(&config).expect("YAML");
    let sealed = exported["consumers"][0].clone();
    api.put("/consumers/alice", &sealed)
        .await
        .expect(200, "the hashed form is accepted unchanged");
    assert_eq!(api.get("/history").await.json()["total"], history);

    // A new password replaces the hash: the old one stops working at once.
    let changed = json!({"groups": ["admins"], "credentials": {
        "api_keys": [ALICE_KEY], "basic_auth": {"username": "alice", "password": "new one"}}});
    api.put("/consumers/alice", &changed)
        .await
        .expect(200, "updated");
    assert_eq!(
        send(&api, "prod", "/p/x", &[("authorization", &good)])
            .await
            .0,
        401
    );
    let renewed = basic("alice", "new one");
    assert_eq!(
        send(&api, "prod", "/p/x", &[("authorization", &renewed)])
            .await
            .0,
        200
    );

    // Problems are 422 with fields; a key another consumer holds is one; nothing is kept.
    let problems = api
        .put(
            "/consumers/bad",
            &json!({"credentials": {"api_keys": [""], "basic_auth": {"username": "a:b"}}}),
        )
        .await
        .expect_error(422, "invalid", "bad credentials");
    let fields: Vec<&str> = problems["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["field"].as_str())
        .collect();
    assert!(
        fields.contains(&"consumers/bad: credentials.api_keys[0]"),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"consumers/bad: credentials.basic_auth.username"),
        "{fields:?}"
    );
    let mut thief = bob.clone();
    thief["credentials"]["api_keys"] = json!([ALICE_KEY]);
    let refused =
        api.put("/consumers/bob", &thief)
            .await
            .expect_error(422, "invalid", "a key alice holds");
    assert!(!refused.to_string().contains(ALICE_KEY), "{refused}");
    api.get("/consumers/bob")
        .await
        .expect_error(404, "not_found", "nothing kept");
    api.put("/consumers/bob", &bob).await.expect(201, "bob");

    // Persisted: a second control plane on the same database serves them.
    let db = api.dir.path().join("strait.db");
    let (control, gateway) = Control::stateful(&db, Default::default())
        .await
        .expect("the database reopens");
    assert_eq!(control.consumers().await.len(), 2);
    let request = Request::get(format!(
        "http://{}/p/x",
        gateway.local_addr("prod").expect("listening")
    ))
    .header("x-api-key", BOB_KEY)
    .body(Full::new(Bytes::new()))
    .expect("request");
    let response = within("the reopened gateway", api.http.request(request))
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    gateway.shutdown().await;

    api.delete("/consumers/bob").await.expect(204, "delete");
    api.delete("/consumers/bob")
        .await
        .expect_error(404, "not_found", "gone");
    assert_eq!(
        send(&api, "prod", "/p/x", &[("x-api-key", BOB_KEY)])
            .await
            .0,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declarative_file_reads_secrets_from_the_environment_and_shows_none() {
    let echo = echo::spawn("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("echo");
    // Cargo sets CARGO_PKG_NAME for the tests it runs: a variable this test need not set.
    let package = std::env::var("CARGO_PKG_NAME").expect("cargo sets CARGO_PKG_NAME");
    let yaml = format!(
        "environments:
  - name: prod
    listen: 127.0.0.1:0
    websocket: true
    policies:
      - {{type: api_key, query: api_key}}
proxies:
  - name: echo
    path: /echo/*
    backend: http://{}/e
    deploy: [prod]
consumers:
  - name: alice
    groups: [admins]
    credentials:
      api_keys: [\"${{CARGO_PKG_NAME}}-key\"]
      basic_auth: {{username: alice, password: literal-password}}
",
        echo.local_addr()
    );
    let (api, _file) = declarative(&yaml).await;
    let key = format!("{package}-key");
    assert_eq!(
        send(&api, "prod", "/echo/x", &[("x-api-key", &key)])
            .await
            .0,
        200
    );
    assert_eq!(
        send(
            &api,
            "prod",
            "/echo/x",
            &[("x-api-key", "${CARGO_PKG_NAME}-key")]
        )
        .await
        .0,
        401
    );
    let (_, response) = ws_open(&api, "prod", &format!("/echo/ws?api_key={key}"), &[])
        .await
        .expect("admitted");
    assert_eq!(response.headers()[echo::ECHO_URI_HEADER], "/e/ws");

    let consumers = api.get("/consumers").await.expect(200, "list").text();
    let config = api.get("/config").await.expect(200, "config").text();
    for text in [&consumers, &config] {
        assert!(
            !text.contains(&key) && !text.contains("literal-password"),
            "{text}"
        );
    }
    assert!(
        config.contains("password_hash") && config.contains("$argon2id$v=19$"),
        "{config}"
    );
    api.put("/consumers/bob", &json!({}))
        .await
        .expect_error(405, "read_only", "declarative");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strait_apply_plans_consumers_and_a_dump_re_applies_without_secrets() {
    let api = stateful(None).await;
    let file = api.dir.path().join("gateway.yaml");
    std::fs::write(
        &file,
        format!(
            "environments:
  - name: prod
    listen: 127.0.0.1:0
consumers:
  - name: alice
    credentials:
      api_keys: [{ALICE_KEY}]
      basic_auth: {{username: alice, password: {ALICE_PW}}}
"
        ),
    )
    .expect("write");
    let client = AdminClient::new(&api.base, None).expect("client");
    let steps = |steps: Vec<strait::control::Step>| -> Vec<String> {
        steps.iter().map(ToString::to_string).collect()
    };
    let planned = apply_file(&client, &file, false).await.expect("apply");
    assert_eq!(
        steps(planned),
        ["create consumer alice", "create environment prod"]
    );
    let again = apply_file(&client, &file, false)
        .await
        .expect("apply again");
    assert!(
        again.is_empty(),
        "an unchanged file plans nothing: {:?}",
        steps(again)
    );

    let dumped = api.get("/config").await.expect(200, "dump").text();
    assert!(
        !dumped.contains(ALICE_KEY) && !dumped.contains(ALICE_PW),
        "{dumped}"
    );
    let dump_file = api.dir.path().join("dumped.yaml");
    std::fs::write(&dump_file, &dumped).expect("write");
    let replay = apply_file(&client, &dump_file, false)
        .await
        .expect("apply the dump");
    assert!(
        replay.is_empty(),
        "the dump re-applies unchanged: {:?}",
        steps(replay)
    );

    std::fs::write(
        &file,
        "environments:\n  - name: prod\n    listen: 127.0.0.1:0\n",
    )
    .expect("write");
    let removed = apply_file(&client, &file, false).await.expect("apply");
    assert_eq!(steps(removed), ["delete consumer alice"]);
    assert_eq!(api.get("/consumers").await.json(), json!({"consumers": []}));
}
