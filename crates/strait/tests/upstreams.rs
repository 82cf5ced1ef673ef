//! Backends with several targets, end to end, with three real backends on loopback that say
//! who they are: weighted round robin within 5% over 3,000 requests; least connections
//! placing new WebSocket sessions on a freshly added target; consistent hashing stable across
//! reconnects and moving about 1/N of the keys when a target is added; a killed backend taken
//! out by passive checks and brought back by active ones; no failed idempotent request while
//! a backend is killed and restarted under load; a streamed POST never retried; the circuit
//! breaker opening and half-opening; every target down → 503 at once; `rebalance: drain`.

mod common;
mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::{WebSocketStream, connect_async};
use tokio_util::sync::CancellationToken;

use support::{Stack, expect_close, round_trip, stateful, within};

/// What a test backend answers and has seen.
struct Shared {
    name: &'static str,
    /// Requests answered (health checks not counted).
    requests: AtomicU64,
    /// The status of ordinary answers.
    status: AtomicU16,
}

/// A backend that names itself: in `X-Backend` and the body of every answer, and in the
/// 101 of a WebSocket handshake (its sessions echo). It can be killed and started again on
/// the same port.
struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Backend {
    async fn start(name: &'static str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shared = Arc::new(Shared {
            name,
            requests: AtomicU64::new(0),
            status: AtomicU16::new(200),
        });
        let addr = listener.local_addr().unwrap();
        let stop = serve(listener, shared.clone());
        Backend { addr, shared, stop }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    fn answer_with(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Stops listening and drops every connection, as a crash would.
    fn kill(&self) {
        self.stop.cancel();
    }

    /// Listens again on the same port.
    async fn restart(&mut self) {
        let listener = within("the port to be free again", async {
            loop {
                match TcpListener::bind(self.addr).await {
                    Ok(listener) => return listener,
                    Err(_) => tokio::task::yield_now().await,
                }
            }
        })
        .await;
        self.stop = serve(listener, self.shared.clone());
    }
}

fn serve(listener: TcpListener, shared: Arc<Shared>) -> CancellationToken {
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                _ = token.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => continue,
                },
            };
            let (tcp, peer) = tcp;
            let shared = shared.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let stop = token.clone();
                let service =
                    service_fn(move |req| answer(req, peer, shared.clone(), stop.clone()));
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades();
                tokio::select! {
                    _ = connection => {}
                    _ = token.cancelled() => {}
                }
            });
        }
    });
    stop
}

/// Echoes WebSocket messages, or answers HTTP with the backend's name; either way with the
/// backend's name in `x-backend` and the address the connection came from in `x-peer`.
async fn answer(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let name = shared.name;
    if let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) {
        let accept = derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    message = ws.next() => match message {
                        Some(Ok(m)) if m.is_text() || m.is_binary() => {
                            if ws.send(m).await.is_err() { return }
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                }
            }
        });
        let response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .header("x-backend", name)
            .header("x-peer", peer.ip().to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        return Ok(response);
    }
    if req.uri().path().ends_with("/health") {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok"))));
    }
    // The body is read whole before answering, so a POST's body has been streamed.
    let _ = req.into_body().collect().await;
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let status = shared.status.load(Ordering::SeqCst);
    let response = Response::builder()
        .status(status)
        .header("x-backend", name)
        .header("x-peer", peer.ip().to_string())
        .body(Full::new(Bytes::from(name)))
        .unwrap();
    Ok(response)
}

async fn three() -> [Backend; 3] {
    [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ]
}

/// A stateful gateway with environment `prod` (WebSocket on, `undeploy_grace: 0s`).
async fn gateway() -> Stack {
    let api = stateful(None).await;
    api.put(
        "/environments/prod",
        &json!({"listen": "127.0.0.1:0", "websocket": true, "undeploy_grace": "0s"}),
    )
    .await
    .expect(201, "environment");
    api
}

/// Puts proxy `svc` on `/svc/*` with this backend, deployed to `prod`.
async fn proxy(api: &Stack, backend: Value) {
    let answer = api
        .put(
            "/proxies/svc",
            &json!({"path": "/svc/*", "backend": backend}),
        )
        .await;
    match answer.status.as_u16() {
        201 => api.deploy("svc", "prod").await,
        200 => {}
        _ => panic!("proxy: {} {}", answer.status, answer.text()),
    }
}

/// A GET through the gateway: status and the backend that answered.
async fn get(api: &Stack, headers: &[(&str, &str)]) -> (u16, String) {
    let (status, _, body) = api
        .request(Method::GET, "prod", "/svc/x", headers, Bytes::new())
        .await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Opens a WebSocket session through the gateway; returns it and the backend serving it.
async fn session(api: &Stack, headers: &[(&str, &str)]) -> (support::Ws, String) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/svc/ws", api.gw("prod"))
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        let name = header::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    let (ws, response) = within("the WebSocket handshake", connect_async(request))
        .await
        .unwrap();
    let backend = response.headers()["x-backend"].to_str().unwrap().to_owned();
    (ws, backend)
}

fn target_state(api: &Stack, url: &str) -> Arc<strait::upstream::pool::TargetState> {
    let pool = api.gateway.pool("svc").expect("the proxy has a pool");
    pool.targets()
        .iter()
        .find(|t| t.url().as_str() == url)
        .cloned()
        .unwrap_or_else(|| panic!("{url} is a target"))
}

/// Waits (bounded) until `done` holds, yielding to the runtime in between.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    within(what, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn weighted_round_robin_shares_within_five_percent() {
    let backends = three().await;
    let api = gateway().await;
    proxy(
        &api,
        json!({"targets": [
            {"url": backends[0].url(), "weight": 2},
            {"url": backends[1].url()},
            backends[2].url(),
        ]}),
    )
    .await;
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..3000 {
        let (status, backend) = get(&api, &[]).await;
        assert_eq!(status, 200);
        *counts.entry(backend).or_default() += 1;
    }
    for (name, expected) in [("a", 1500.0), ("b", 750.0), ("c", 750.0)] {
        let got = f64::from(counts.get(name).copied().unwrap_or(0));
        assert!(
            (got - expected).abs() <= expected * 0.05,
            "{name}: {got} of 3000, expected {expected} ± 5% ({counts:?})"
        );
    }
}

#[tokio::test]
async fn least_connections_sends_new_sessions_to_a_fresh_target() {
    let backends = three().await;
    let api = gateway().await;
    let two =
        json!({"targets": [backends[0].url(), backends[1].url()], "balance": "least_connections"});
    proxy(&api, two).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(session(&api, &[]).await);
    }
    let on =
        |name: &str, open: &[(support::Ws, String)]| open.iter().filter(|(_, b)| b == name).count();
    assert_eq!((on("a", &open), on("b", &open)), (2, 2), "shared evenly");
    // A third target joins: it gets new sessions until it is level with the others.
    let all = json!({"targets": [backends[0].url(), backends[1].url(), backends[2].url()], "balance": "least_connections"});
    proxy(&api, all).await;
    for _ in 0..2 {
        let (ws, backend) = session(&api, &[]).await;
        assert_eq!(backend, "c", "the fresh target takes new sessions");
        open.push((ws, backend));
    }
    // The sessions opened before the change are still served where they were.
    for (ws, _) in &mut open {
        round_trip(ws, "still here").await;
    }
    assert_eq!(target_state(&api, &backends[2].url()).active(), 2);
    assert_eq!(target_state(&api, &backends[0].url()).active(), 2);
}

#[tokio::test]
async fn consistent_hashing_is_sticky_and_moves_about_a_quarter_of_keys() {
    let mut backends = three().await.into_iter().collect::<Vec<_>>();
    backends.push(Backend::start("d").await);
    let api = gateway().await;
    let spec = |n: usize| {
        json!({
            "targets": backends.iter().take(n).map(Backend::url).collect::<Vec<_>>(),
            "balance": "consistent_hash",
            "hash_on": "header:X-User-Id",
        })
    };
    proxy(&api, spec(3)).await;
    let users: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let mut before = HashMap::new();
    for user in &users {
        let (_, first) = get(&api, &[("x-user-id", user)]).await;
        let (_, again) = get(&api, &[("x-user-id", user)]).await;
        assert_eq!(first, again, "{user} stays on one target");
        before.insert(user.clone(), first);
    }
    // Reconnecting WebSocket sessions land where the user's requests do.
    for user in users.iter().take(10) {
        for _ in 0..2 {
            let (mut ws, backend) = session(&api, &[("x-user-id", user)]).await;
            assert_eq!(&backend, &before[user], "{user}'s sessions are sticky");
            ws.close(None).await.unwrap();
        }
    }
    proxy(&api, spec(4)).await;
    let mut moved = 0;
    for user in &users {
        let (_, now) = get(&api, &[("x-user-id", user)]).await;
        if now != before[user] {
            assert_eq!(now, "d", "{user} moved, and only to the new target");
            moved += 1;
        }
    }
    assert!(
        (20..=80).contains(&moved),
        "about 1/4 of 200 keys move: {moved}"
    );
}

#[tokio::test]
async fn a_killed_target_is_taken_out_by_passive_checks_and_back_by_active_ones() {
    let mut backends = three().await;
    let api = gateway().await;
    proxy(
        &api,
        json!({
            "targets": backends.iter().map(Backend::url).collect::<Vec<_>>(),
            "health": {
                "passive": {"unhealthy_after": 3},
                // Probes bring a target back quickly; only traffic takes one out.
                "active": {"path": "/health", "interval": "50ms", "timeout": "40ms", "healthy_after": 1, "unhealthy_after": 1000},
            },
            "retries": 2,
        }),
    )
    .await;
    let b = target_state(&api, &backends[1].url());
    backends[1].kill();
    for _ in 0..30 {
        let (status, backend) = get(&api, &[]).await;
        assert_eq!(status, 200, "retried on another target");
        assert_ne!(backend, "b");
    }
    assert_eq!(
        b.stats().failures,
        3,
        "taken out after exactly 3 consecutive failures"
    );
    assert_eq!(
        b.health().state(),
        strait::upstream::health::HealthState::Down
    );
    backends[1].restart().await;
    until("the active check to bring b back", || {
        b.health().state() == strait::upstream::health::HealthState::Up
    })
    .await;
    let served: Vec<String> = {
        let mut served = Vec::new();
        for _ in 0..6 {
            served.push(get(&api, &[]).await.1);
        }
        served
    };
    assert!(
        served.iter().any(|s| s == "b"),
        "b serves again: {served:?}"
    );
}

#[tokio::test]
async fn no_idempotent_request_fails_while_a_target_is_killed_and_restarted() {
    let mut backends = three().await;
    let api = Arc::new(gateway().await);
    proxy(
        &api,
        json!({
            "targets": backends.iter().map(Backend::url).collect::<Vec<_>>(),
            "health": {"passive": {"unhealthy_after": 2, "cool_down": "100ms"}},
            "retries": 2,
        }),
    )
    .await;
    let load = |api: Arc<Stack>| {
        tokio::spawn(async move {
            let mut failed = Vec::new();
            for _ in 0..300 {
                let (status, body) = get(&api, &[]).await;
                if status != 200 {
                    failed.push((status, body));
                }
            }
            failed
        })
    };
    let workers: Vec<_> = (0..4).map(|_| load(api.clone())).collect();
    // Kill b once some traffic has gone through, restart it once more has.
    until("traffic to start", || backends[1].requests() >= 20).await;
    backends[1].kill();
    let after_kill = backends[0].requests() + backends[2].requests();
    until("traffic to go on", || {
        backends[0].requests() + backends[2].requests() >= after_kill + 200
    })
    .await;
    backends[1].restart().await;
    for worker in workers {
        let failed = within("the load to finish", worker).await.unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
    }
}

#[tokio::test]
async fn a_streamed_post_is_never_retried_but_a_get_is() {
    let backends = three().await;
    for backend in &backends {
        backend.answer_with(503);
    }
    let api = gateway().await;
    proxy(
        &api,
        json!({"targets": backends.iter().map(Backend::url).collect::<Vec<_>>(), "retries": 2}),
    )
    .await;
    let total = |backends: &[Backend; 3]| backends.iter().map(Backend::requests).sum::<u64>();
    // A POST whose body streams in pieces: once any of it went out, it is not sent again.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    let body = StreamBody::new(tokio_stream_from(rx));
    let request = Request::post(format!("http://{}/svc/upload", api.gw("prod")))
        .body(body)
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let sending = tokio::spawn(async move {
        for piece in ["first ", "second ", "third"] {
            tx.send(Ok(Frame::data(Bytes::from(piece)))).await.unwrap();
        }
    });
    let response = within("the POST's answer", client.request(request))
        .await
        .unwrap();
    sending.await.unwrap();
    assert_eq!(response.status(), 503, "the backend's answer, not retried");
    assert_eq!(total(&backends), 1, "the POST reached one backend once");
    // A GET has no body that went out: it is tried on the other two as well.
    let (status, _) = get(&api, &[]).await;
    assert_eq!(status, 503);
    assert_eq!(total(&backends), 4, "1 + 3 attempts");
}

/// An mpsc receiver as a stream, for a streaming request body.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn a_post_is_retried_after_a_connect_failure() {
    let backends = three().await;
    let (_held, closed) = common::refusing_port();
    let dead = format!("http://{closed}");
    let api = gateway().await;
    proxy(
        &api,
        json!({"targets": [dead, backends[0].url()], "retries": 1}),
    )
    .await;
    for _ in 0..4 {
        let (status, _, body) = api
            .request(
                Method::POST,
                "prod",
                "/svc/x",
                &[],
                Bytes::from_static(b"payload"),
            )
            .await;
        assert_eq!((status, &body[..]), (200, &b"a"[..]));
    }
}

#[tokio::test]
async fn the_circuit_breaker_opens_then_half_opens_for_one_trial() {
    let backends = three().await;
    backends[0].answer_with(500);
    let api = gateway().await;
    proxy(
        &api,
        json!({
            "targets": [backends[0].url(), backends[1].url()],
            "circuit_breaker": {"failure_ratio": 0.5, "min_requests": 4, "open_for": "300ms"},
        }),
    )
    .await;
    let a = target_state(&api, &backends[0].url());
    use strait::upstream::breaker::BreakerState;
    let mut answers = Vec::new();
    for _ in 0..8 {
        answers.push(get(&api, &[]).await.0);
    }
    assert_eq!(a.breaker().state(), BreakerState::Open, "{answers:?}");
    let failed_before = backends[0].requests();
    assert_eq!(
        failed_before, 4,
        "a took its 4 requests, then the breaker opened"
    );
    // Open: every request goes to b.
    for _ in 0..10 {
        assert_eq!(get(&api, &[]).await, (200, "b".to_owned()));
    }
    assert_eq!(backends[0].requests(), failed_before);
    // After open_for one trial goes to a; it fails and the breaker opens again.
    let opened = Instant::now();
    until("open_for to pass", || {
        opened.elapsed() >= Duration::from_millis(300)
    })
    .await;
    let mut trial = Vec::new();
    for _ in 0..6 {
        trial.push(get(&api, &[]).await);
    }
    assert_eq!(
        backends[0].requests(),
        failed_before + 1,
        "exactly one trial: {trial:?}"
    );
    assert_eq!(a.breaker().state(), BreakerState::Open);
    // a recovers: the next trial closes the breaker.
    backends[0].answer_with(200);
    let reopened = Instant::now();
    until("open_for to pass again", || {
        reopened.elapsed() >= Duration::from_millis(300)
    })
    .await;
    for _ in 0..4 {
        assert_eq!(get(&api, &[]).await.0, 200);
    }
    assert_eq!(a.breaker().state(), BreakerState::Closed);
}

#[tokio::test]
async fn with_every_target_down_the_answer_is_503_at_once() {
    let held = [common::refusing_port(), common::refusing_port()];
    let dead: Vec<String> = held.iter().map(|(_, a)| format!("http://{a}")).collect();
    let api = gateway().await;
    proxy(
        &api,
        json!({"targets": dead, "health": {"passive": {"unhealthy_after": 1, "cool_down": "1h"}}}),
    )
    .await;
    // The first requests find the targets dead (and mark them down).
    for _ in 0..2 {
        let (status, _) = get(&api, &[]).await;
        assert_eq!(status, 502);
    }
    let started = Instant::now();
    let (status, _, body) = api
        .request(Method::GET, "prod", "/svc/x", &[], Bytes::new())
        .await;
    let took = started.elapsed();
    assert_eq!(status, 503);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"], "unavailable");
    assert!(took < Duration::from_millis(100), "answered in {took:?}");
}

#[tokio::test]
async fn rebalance_drain_closes_sessions_on_a_removed_target_and_keep_does_not() {
    let backends = three().await;
    let api = gateway().await;
    for rebalance in ["drain", "keep"] {
        let both =
            json!({"targets": [backends[0].url(), backends[1].url()], "rebalance": rebalance});
        proxy(&api, both).await;
        let mut open = Vec::new();
        for _ in 0..2 {
            open.push(session(&api, &[]).await);
        }
        let names: Vec<&str> = open.iter().map(|(_, b)| b.as_str()).collect();
        assert_eq!(names.iter().filter(|n| **n == "a").count(), 1, "{names:?}");
        let only_b = json!({"targets": [backends[1].url()], "rebalance": rebalance});
        proxy(&api, only_b).await;
        for (ws, backend) in &mut open {
            if backend == "a" && rebalance == "drain" {
                let close = expect_close(ws).await;
                assert_eq!(u16::from(close.code), 1001);
                assert_eq!(close.reason.as_str(), "backend target removed");
            } else {
                round_trip(ws, "still open").await;
            }
        }
        for (mut ws, _) in open {
            let _ = ws.close(None).await;
        }
    }
}

#[tokio::test]
async fn with_more_retries_than_targets_the_last_backend_answer_is_returned() {
    let backends = three().await;
    for backend in &backends {
        backend.answer_with(503);
    }
    let api = gateway().await;
    proxy(
        &api,
        json!({"targets": [backends[0].url(), backends[1].url()], "retries": 5}),
    )
    .await;
    let (status, body) = get(&api, &[]).await;
    assert_eq!(status, 503);
    assert!(
        body == "a" || body == "b",
        "the backend's own answer: {body}"
    );
    assert_eq!(
        backends[0].requests() + backends[1].requests(),
        2,
        "each target once"
    );
}

/// With `backend_source_addresses`, every connection to a backend leaves from one of them:
/// WebSocket sessions and HTTP connections take them in turn; an address this machine does
/// not have is a clear 502 naming it.
#[tokio::test]
async fn backend_connections_leave_from_the_environments_source_addresses_in_turn() {
    let backend = Backend::start("a").await;
    let api = stateful(None).await;
    let sources = ["127.0.0.2", "127.0.0.3"];
    api.put(
        "/environments/prod",
        &json!({"listen": "127.0.0.1:0", "websocket": true, "backend_source_addresses": sources}),
    )
    .await
    .expect(201, "environment");
    proxy(&api, json!(backend.url())).await;

    let mut peers = HashMap::new();
    for _ in 0..4 {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let request = format!("ws://{}/svc/ws", api.gw("prod"))
            .into_client_request()
            .unwrap();
        let (_ws, response) = within("the WebSocket handshake", connect_async(request))
            .await
            .unwrap();
        let peer = response.headers()["x-peer"].to_str().unwrap().to_owned();
        *peers.entry(peer).or_insert(0) += 1;
    }
    let want: HashMap<String, i32> = sources.iter().map(|s| (s.to_string(), 2)).collect();
    assert_eq!(peers, want, "four sessions, two from each source");

    for _ in 0..4 {
        let (status, headers, _) = api
            .request(Method::GET, "prod", "/svc/x", &[], Bytes::new())
            .await;
        assert_eq!(status, 200);
        let peer = headers["x-peer"].to_str().unwrap();
        assert!(sources.contains(&peer), "an HTTP request came from {peer}");
    }

    // 192.0.2.1 (TEST-NET-1) is no address of this machine: the change is refused, and
    // the environment keeps serving from its sources.
    let refused = api
        .put(
            "/environments/prod",
            &json!({"listen": "127.0.0.1:0", "websocket": true, "backend_source_addresses": ["192.0.2.1"]}),
        )
        .await;
    let text = refused.text();
    assert!(
        refused.status.is_client_error(),
        "{} {text}",
        refused.status
    );
    assert!(
        text.contains("source address 192.0.2.1 cannot be used"),
        "{text}"
    );
    let (status, headers, _) = api
        .request(Method::GET, "prod", "/svc/x", &[], Bytes::new())
        .await;
    assert_eq!(status, 200);
    assert!(sources.contains(&headers["x-peer"].to_str().unwrap()));
}
