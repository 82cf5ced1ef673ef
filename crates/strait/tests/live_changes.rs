//! What control-plane changes do to traffic in flight, through the real admin API of a
//! stateful gateway (and a declarative reload): writes are live when they return, nothing
//! of another proxy is disturbed, open WebSocket sessions survive updates, undeploys close
//! them with 1001 after the environment's `undeploy_grace`, environment changes leave open
//! connections alone.
//!
//! Every wait is bounded (`support::within`); reaching a bound fails the test.

mod common;
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use http::StatusCode;
use serde_json::{Value, json};
use strait::echo::{ECHO_URI_HEADER, EchoHandle};
use support::{Stack, Ws, expect_close, round_trip, stateful, within, ws_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A stateful stack with one environment `prod` (WebSocket on) and the echo backend.
async fn prod(env: Value) -> (Stack, EchoHandle) {
    let echo = common::echo().await;
    let api = stateful(None).await;
    api.put("/environments/prod", &env)
        .await
        .expect(201, "create prod");
    (api, echo)
}

fn ws_env() -> Value {
    json!({"listen": "127.0.0.1:0", "websocket": true})
}

/// Creates a proxy on `path` to the echo's `backend_path` and deploys it to `prod`.
async fn proxy(api: &Stack, echo: &EchoHandle, name: &str, path: &str, backend_path: &str) {
    let body =
        json!({"path": path, "backend": format!("http://{}{backend_path}", echo.local_addr())});
    api.put(&format!("/proxies/{name}"), &body)
        .await
        .expect(201, &format!("create {name}"));
    api.deploy(name, "prod").await;
}

fn ws_url(addr: SocketAddr, path: &str) -> String {
    format!("ws://{addr}{path}")
}

/// The request target the echo saw for a new WebSocket session through `url`.
async fn echo_uri(url: &str) -> (Ws, String) {
    let (ws, response) = within("a WebSocket handshake", connect_async(url))
        .await
        .unwrap_or_else(|e| panic!("handshake with {url}: {e}"));
    let uri = response.headers()[ECHO_URI_HEADER]
        .to_str()
        .expect("a text header")
        .to_owned();
    (ws, uri)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_is_live_when_it_returns() {
    let (api, echo) = prod(ws_env()).await;
    let body = json!({"path": "/ryw/*", "backend": format!("http://{}/svc", echo.local_addr())});
    api.put("/proxies/ryw", &body).await.expect(201, "create");
    for round in 0..1000 {
        api.deploy("ryw", "prod").await;
        let (status, body) = api.through("prod", "/ryw/x").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "round {round}: the request right after the deploy is routed by it: {body:?}"
        );
        api.undeploy("ryw", "prod").await;
        let (status, _) = api.through("prod", "/ryw/x").await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "round {round}: the request right after the undeploy is a 404"
        );
    }
}

/// A WebSocket client that exchanges numbered messages until told to stop, checking each
/// echo (so a lost or reordered message fails), then makes one last round trip and hands
/// its connection back.
fn chatter(mut ws: Ws, id: usize, mut stop: watch::Receiver<bool>) -> JoinHandle<(Ws, u64)> {
    tokio::spawn(async move {
        let mut exchanged = 0u64;
        let mut pace = tokio::time::interval(Duration::from_millis(200));
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Bounded: at most this many exchanges, however long the test runs.
        while exchanged < 10_000 {
            round_trip(&mut ws, &format!("{id}:{exchanged}")).await;
            exchanged += 1;
            tokio::select! {
                _ = pace.tick() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        round_trip(&mut ws, &format!("{id}:last")).await;
        (ws, exchanged + 1)
    })
}

/// Sequential keep-alive GETs through `url` until told to stop: (sent, failed).
fn steady_http(url: String, mut stop: watch::Receiver<bool>) -> JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let client = support::http_client();
        let (mut sent, mut failed) = (0u64, 0u64);
        while sent < 100_000 && !*stop.borrow_and_update() {
            let request = http::Request::get(&url)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("a request");
            let ok = match within("a steady request", client.request(request)).await {
                Ok(response) => {
                    let ok = response.status() == StatusCode::OK;
                    let body = http_body_util::BodyExt::collect(response.into_body()).await;
                    ok && body.is_ok()
                }
                Err(_) => false,
            };
            sent += 1;
            failed += u64::from(!ok);
        }
        (sent, failed)
    })
}

/// WebSocket chatter on every session of X plus steady HTTP through X, until `finish`.
struct Traffic {
    stop: watch::Sender<bool>,
    chatters: Vec<JoinHandle<(Ws, u64)>>,
    http: JoinHandle<(u64, u64)>,
}

impl Traffic {
    fn start(gw: SocketAddr, sessions: Vec<Ws>) -> Traffic {
        let (stop, watching) = watch::channel(false);
        let chatters = sessions
            .into_iter()
            .enumerate()
            .map(|(id, ws)| chatter(ws, id, watching.clone()))
            .collect();
        let http = steady_http(format!("http://{gw}/x/steady"), watching);
        Traffic {
            stop,
            chatters,
            http,
        }
    }

    /// Stops the traffic; asserts no HTTP request failed and no message was lost or
    /// reordered. Returns the sessions, all still open, and the messages exchanged.
    async fn finish(self) -> (Vec<Ws>, u64) {
        self.stop.send_replace(true);
        let (sent, failed) = within("the HTTP client to stop", self.http)
            .await
            .expect("the HTTP client task");
        assert!(sent > 0, "HTTP requests were sent meanwhile");
        assert_eq!(failed, 0, "no HTTP request failed ({sent} sent)");
        let mut sessions = Vec::new();
        let mut messages = 0;
        for chatter in self.chatters {
            let (ws, exchanged) = within("a WebSocket client to stop", chatter)
                .await
                .expect("no WebSocket client lost or misordered a message");
            messages += exchanged;
            sessions.push(ws);
        }
        (sessions, messages)
    }
}

/// Opens `count` sessions to `url`, a hundred at a time.
async fn open_many(url: &str, count: usize) -> Vec<Ws> {
    let mut all = Vec::with_capacity(count);
    while all.len() < count {
        let batch = (count - all.len()).min(100);
        all.extend(join_all((0..batch).map(|_| ws_connect(url))).await);
    }
    all
}

/// The zero-drop proof: 1,000 WebSocket sessions and steady HTTP through proxy X
/// while 200 operations run on other proxies and X is updated and redeployed 50 times;
/// then X is undeployed with `undeploy_grace: 0` and every one of its clients gets 1001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_on_other_proxies_and_redeploys_of_x_drop_nothing() {
    let (api, echo) = prod(ws_env()).await;
    proxy(&api, &echo, "x", "/x/*", "/x1").await;
    proxy(&api, &echo, "bystander", "/by/*", "/by").await;
    let gw = api.gw("prod");

    let sessions = open_many(&ws_url(gw, "/x/chat"), 1000).await;
    let mut bystander = ws_connect(&ws_url(gw, "/by/chat")).await;
    let traffic = Traffic::start(gw, sessions);

    let backend = |path: &str| format!("http://{}{path}", echo.local_addr());
    let operations = AtomicU64::new(0);
    let count = |answer: support::Answer, status: u16, what: &str| {
        answer.expect(status, what);
        operations.fetch_add(1, Ordering::Relaxed);
    };
    for i in 0..50 {
        // Four operations on another proxy: create, deploy, update, undeploy.
        let name = format!("other{i}");
        let path = format!("/other{i}/*");
        let created = json!({"path": path, "backend": backend("/o1")});
        count(
            api.put(&format!("/proxies/{name}"), &created).await,
            201,
            "create",
        );
        count(
            api.call(
                http::Method::PUT,
                &format!("/proxies/{name}/deployments/prod"),
                None,
            )
            .await,
            201,
            "deploy",
        );
        let updated = json!({"path": path, "backend": backend("/o2"), "methods": ["GET"]});
        count(
            api.put(&format!("/proxies/{name}"), &updated).await,
            200,
            "update",
        );
        count(
            api.delete(&format!("/proxies/{name}/deployments/prod"))
                .await,
            204,
            "undeploy",
        );
        // A redeploy of X: a new backend, then the (idempotent) deployment again.
        let x = json!({"path": "/x/*", "backend": backend(if i % 2 == 0 { "/x2" } else { "/x1" })});
        api.put("/proxies/x", &x).await.expect(200, "update x");
        api.call(http::Method::PUT, "/proxies/x/deployments/prod", None)
            .await
            .expect(200, "redeploy x (already deployed)");
    }
    assert_eq!(operations.load(Ordering::Relaxed), 200);

    let (mut sessions, messages) = traffic.finish().await;
    assert!(messages >= 2000, "every session exchanged messages");
    assert_eq!(
        api.gateway.sessions().len(),
        1001,
        "every session is still open"
    );

    // Undeploy X at once: each of its clients gets 1001; the bystander carries on.
    api.put(
        "/environments/prod",
        &json!({"listen": "127.0.0.1:0", "websocket": true, "undeploy_grace": "0"}),
    )
    .await
    .expect(200, "undeploy_grace 0");
    api.undeploy("x", "prod").await;
    let closes = join_all(sessions.iter_mut().map(expect_close)).await;
    for close in closes {
        assert_eq!(close.code, CloseCode::Away, "1001 Going Away: {close:?}");
    }
    round_trip(&mut bystander, "still here").await;
    let (status, _) = api.through("prod", "/x/steady").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_applies_to_new_sessions_and_open_ones_stay() {
    let (api, echo) = prod(ws_env()).await;
    proxy(&api, &echo, "chat", "/chat/*", "/v1").await;
    let url = ws_url(api.gw("prod"), "/chat/room");
    let (mut old, uri) = echo_uri(&url).await;
    assert_eq!(uri, "/v1/room");

    let body = json!({"path": "/chat/*", "backend": format!("http://{}/v2", echo.local_addr())});
    api.put("/proxies/chat", &body).await.expect(200, "update");
    let (mut new, uri) = echo_uri(&url).await;
    assert_eq!(uri, "/v2/room", "a new session goes to the new backend");
    round_trip(&mut old, "the open session carries on").await;
    round_trip(&mut new, "and so does the new one").await;
    let targets: Vec<String> = api
        .gateway
        .sessions()
        .iter()
        .map(|s| s.info.target.clone())
        .collect();
    assert!(
        targets.iter().any(|t| t.ends_with("/v1/room"))
            && targets.iter().any(|t| t.ends_with("/v2/room")),
        "one session on each backend: {targets:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeploying_within_the_grace_keeps_sessions() {
    let env = json!({"listen": "127.0.0.1:0", "websocket": true, "undeploy_grace": "1s"});
    let (api, echo) = prod(env).await;
    proxy(&api, &echo, "kept", "/kept/*", "/k").await;
    proxy(&api, &echo, "gone", "/gone/*", "/g").await;
    let gw = api.gw("prod");
    let mut kept = ws_connect(&ws_url(gw, "/kept/s")).await;
    let mut gone = ws_connect(&ws_url(gw, "/gone/s")).await;

    api.undeploy("kept", "prod").await;
    api.undeploy("gone", "prod").await;
    let (status, _) = api.through("prod", "/kept/x").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "an undeploy is a 404 at once"
    );
    round_trip(&mut gone, "within the grace the session carries on").await;
    api.deploy("kept", "prod").await;

    // The session left undeployed is closed once the grace ran out; the redeployed one,
    // whose grace ran out at the same time, stays.
    let close = expect_close(&mut gone).await;
    assert_eq!(close.code, CloseCode::Away);
    assert_eq!(close.reason.as_str(), "proxy undeployed");
    round_trip(&mut kept, "redeployed within the grace").await;
    let kept_sessions = api
        .gateway
        .sessions()
        .iter()
        .filter(|s| &*s.info.proxy == "kept")
        .count();
    assert_eq!(
        kept_sessions, 1,
        "the redeployed proxy's session is registered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_changes_leave_open_connections_alone() {
    let (api, echo) = prod(ws_env()).await;
    proxy(&api, &echo, "svc", "/svc/*", "/s").await;
    let old_addr = api.gw("prod");
    let mut session = ws_connect(&ws_url(old_addr, "/svc/chat")).await;
    // A keep-alive HTTP connection accepted on the listener before it moves.
    let mut keep_alive = TcpStream::connect(old_addr).await.expect("connect");
    assert_eq!(raw_get(&mut keep_alive, "/svc/a").await, 200);

    // WebSocket off: new upgrades refused at once, the open session and HTTP carry on.
    api.put(
        "/environments/prod",
        &json!({"listen": "127.0.0.1:0", "websocket": false}),
    )
    .await
    .expect(200, "websocket off");
    let refused = within(
        "a refused upgrade",
        connect_async(ws_url(old_addr, "/svc/chat")),
    )
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400);
            let body = response.body().as_deref().unwrap_or_default();
            assert!(
                String::from_utf8_lossy(body).contains("websocket_disabled"),
                "{body:?}"
            );
        }
        other => panic!("expected 400 websocket_disabled, got {other:?}"),
    }
    round_trip(&mut session, "websocket off leaves me alone").await;

    // A port in use refuses the whole change with 409; nothing moves.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_addr = busy.local_addr().expect("addr");
    api.put(
        "/environments/prod",
        &json!({"listen": busy_addr.to_string(), "websocket": true}),
    )
    .await
    .expect_error(409, "conflict", "a busy port");
    assert_eq!(api.gw("prod"), old_addr, "the listener did not move");
    drop(busy);

    // A new address: bound before the PUT returns; the old listener stops accepting;
    // what it accepted carries on.
    let new_addr = move_listener(&api).await;
    assert_ne!(new_addr, old_addr);
    let (status, _) = api.through("prod", "/svc/b").await;
    assert_eq!(status, StatusCode::OK, "the new address serves at once");
    assert!(
        TcpStream::connect(old_addr).await.is_err(),
        "the old address accepts no new connection"
    );
    assert_eq!(
        raw_get(&mut keep_alive, "/svc/c").await,
        200,
        "an accepted keep-alive connection carries on"
    );
    round_trip(&mut session, "the listener moved; I stay").await;

    // A new environment serves as soon as its PUT and the deploy return.
    api.put("/environments/staging", &ws_env())
        .await
        .expect(201, "create staging");
    api.deploy("svc", "staging").await;
    let (status, _) = api.through("staging", "/svc/d").await;
    assert_eq!(status, StatusCode::OK);
    let mut staged = ws_connect(&ws_url(api.gw("staging"), "/svc/chat")).await;
    round_trip(&mut staged, "staging").await;
    round_trip(&mut session, "still here").await;
}

/// Moves `prod` to a free port (retrying when the chosen port is taken meanwhile).
async fn move_listener(api: &Stack) -> SocketAddr {
    for _ in 0..5 {
        let addr = common::closed_port();
        let answer = api
            .put(
                "/environments/prod",
                &json!({"listen": addr.to_string(), "websocket": true}),
            )
            .await;
        if answer.status == StatusCode::OK {
            assert_eq!(api.gw("prod"), addr);
            return addr;
        }
        answer.expect(409, "only a port taken meanwhile may refuse the move");
    }
    panic!("no free port in five tries")
}

/// A GET on an open keep-alive connection; the status code. The echo's JSON body is
/// read whole by its Content-Length.
async fn raw_get(tcp: &mut TcpStream, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n");
    within("send", tcp.write_all(request.as_bytes()))
        .await
        .expect("send a request");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        within("the response head", tcp.read_exact(&mut byte))
            .await
            .expect("read the response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("a content-length in {head}"));
    let mut body = vec![0u8; length];
    within("the response body", tcp.read_exact(&mut body))
        .await
        .expect("read the body");
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("a status line in {head}"))
}

/// A declarative reload that adds, changes and removes proxies (X's backend included)
/// drops no session and fails no request; a file that does not validate changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declarative_reload_drops_nothing() {
    let echo = common::echo().await;
    let backend = echo.local_addr();
    let file = |x_backend: &str, others: &str| {
        format!(
            "environments:\n  - name: prod\n    listen: 127.0.0.1:0\n    websocket: true\n    undeploy_grace: 0\nproxies:\n  - name: x\n    path: /x/*\n    backend: http://{backend}{x_backend}\n    deploy: [prod]\n{others}"
        )
    };
    let other = |name: &str| {
        format!(
            "  - name: {name}\n    path: /{name}/*\n    backend: http://{backend}/{name}\n    deploy: [prod]\n"
        )
    };
    let (api, path) = support::declarative(&file("/x1", &other("old"))).await;
    let gw = api.gw("prod");
    let mut old = ws_connect(&ws_url(gw, "/old/s")).await;
    let sessions = open_many(&ws_url(gw, "/x/chat"), 100).await;
    let traffic = Traffic::start(gw, sessions);

    std::fs::write(&path, file("/x2", &other("new"))).expect("rewrite the file");
    assert!(
        api.control.reload().await.expect("the new file is valid"),
        "the reload changed something"
    );
    let (status, _) = api.through("prod", "/new/a").await;
    assert_eq!(status, StatusCode::OK, "the added proxy serves");
    let (_, uri) = echo_uri(&ws_url(gw, "/x/chat")).await;
    assert_eq!(uri, "/x2/chat", "new X sessions use the new backend");
    let close = expect_close(&mut old).await;
    assert_eq!(
        close.code,
        CloseCode::Away,
        "the removed proxy's session: 1001"
    );

    std::fs::write(&path, "environments: [").expect("write a broken file");
    assert!(
        api.control.reload().await.is_err(),
        "a broken file is refused"
    );
    let (status, _) = api.through("prod", "/new/a").await;
    assert_eq!(status, StatusCode::OK, "the running configuration stays");

    let (sessions, _) = traffic.finish().await;
    assert_eq!(sessions.len(), 100, "every X session survived");
}

/// A change written to the file after the gateway read it but before its control plane
/// started (the window `strait run --config` has at start-up) is still reloaded: the
/// control plane takes the text the gateway started from, not the file as it is by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_written_while_the_gateway_starts_is_reloaded() {
    let echo = common::echo().await;
    let backend = echo.local_addr();
    let file = |names: &[&str]| {
        let proxies: String = names
            .iter()
            .map(|name| {
                format!("  - name: {name}\n    path: /{name}/*\n    backend: http://{backend}/{name}\n    deploy: [prod]\n")
            })
            .collect();
        format!("environments:\n  - name: prod\n    listen: 127.0.0.1:0\nproxies:\n{proxies}")
    };
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("strait.yaml");
    let started_from = file(&["a"]);
    std::fs::write(&path, &started_from).expect("write the file");
    let config = strait::config::parse_str(&started_from, &path).expect("a valid file");
    let gateway = std::sync::Arc::new(strait::Gateway::start(&config).await.expect("starts"));
    let gw = gateway.local_addr("prod").expect("prod listens");

    std::fs::write(&path, file(&["a", "b"])).expect("rewrite the file");
    let control = strait::control::Control::declarative(&path, &started_from, gateway.clone())
        .await
        .expect("a declarative control plane starts");
    assert!(
        control.reload().await.expect("the new file is valid"),
        "the reload found the added proxy to apply"
    );
    let mut tcp = TcpStream::connect(gw).await.expect("connect");
    assert_eq!(
        raw_get(&mut tcp, "/b/x").await,
        200,
        "the added proxy serves"
    );
    assert_eq!(
        raw_get(&mut tcp, "/a/x").await,
        200,
        "the first one still does"
    );
}
