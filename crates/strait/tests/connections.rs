//! Live WebSocket sessions through the admin API: the registry lists exactly the open
//! sessions with their owner and counters, forced disconnects reach both sides with the
//! chosen code, a client that stops answering pings is dropped, and a session is closed
//! when its maximum lifetime runs out.

mod support;

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Stack, Ws, expect_close, round_trip, stateful, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, protocol::CloseFrame};
use tokio_tungstenite::{accept_hdr_async, connect_async};

/// A WebSocket backend that echoes data, picks the `chat` subprotocol when offered, and
/// reports every close frame it receives.
async fn backend() -> (SocketAddr, mpsc::UnboundedReceiver<Option<CloseFrame>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                #[allow(clippy::result_large_err, reason = "tungstenite's callback type")]
                let pick = |request: &Request, mut response: Response| {
                    let offered = request
                        .headers()
                        .get("sec-websocket-protocol")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.split(',').any(|p| p.trim() == "chat"));
                    if offered {
                        response
                            .headers_mut()
                            .insert("sec-websocket-protocol", HeaderValue::from_static("chat"));
                    }
                    Ok(response)
                };
                let Ok(mut ws) = accept_hdr_async(tcp, pick).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    match message {
                        Message::Close(frame) => {
                            let _ = tx.send(frame);
                        }
                        // A failed send ends the loop at the next read.
                        m if m.is_text() || m.is_binary() => {
                            let _ = ws.send(m).await;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// A stateful stack with environment `prod` (`extra` merged into it) and proxy `chat` on
/// `/chat/*` to `backend`.
async fn stack(backend: SocketAddr, extra: Value) -> Stack {
    let api = stateful(None).await;
    let mut env = json!({"listen": "127.0.0.1:0", "websocket": true});
    if let (Some(env), Some(extra)) = (env.as_object_mut(), extra.as_object()) {
        env.extend(extra.clone());
    }
    api.put("/environments/prod", &env)
        .await
        .expect(201, "environment");
    let proxy = json!({"path": "/chat/*", "backend": format!("http://{backend}/ws")});
    api.put("/proxies/chat", &proxy).await.expect(201, "proxy");
    api.deploy("chat", "prod").await;
    api
}

/// A session through the gateway offering the `chat` subprotocol with an `Origin`.
async fn open(api: &Stack, path: &str) -> Ws {
    let mut request = format!("ws://{}{path}", api.gw("prod"))
        .into_client_request()
        .expect("a request");
    let headers = request.headers_mut();
    headers.insert("origin", HeaderValue::from_static("https://app.example"));
    headers.insert("sec-websocket-protocol", HeaderValue::from_static("chat"));
    let (ws, response) = within("the handshake", connect_async(request))
        .await
        .expect("the handshake succeeds");
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
    ws
}

async fn connections(api: &Stack, query: &str) -> Value {
    api.get(&format!("/connections{query}"))
        .await
        .expect(200, "list connections")
        .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_lists_each_open_session_with_its_owner_and_traffic() {
    let (backend, _closes) = backend().await;
    let api = stack(backend, json!({})).await;
    let mut first = open(&api, "/chat/room/1").await;
    let mut second = open(&api, "/chat/room/2").await;
    for text in ["one", "two", "three"] {
        round_trip(&mut first, text).await;
    }
    round_trip(&mut second, "hello").await;

    // The relay publishes its counters right after relaying; wait for them to show
    // (bounded: a missing publication fails the test).
    let listed = within("the counters to show", async {
        loop {
            let listed = connections(&api, "").await;
            if listed["connections"][0]["backend_to_client"]["messages"] == 3
                && listed["connections"][1]["backend_to_client"]["messages"] == 1
            {
                return listed;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(listed["total"], 2);
    let one = &listed["connections"][0];
    assert_eq!(one["environment"], "prod");
    assert_eq!(one["proxy"], "chat");
    assert_eq!(one["origin"], "https://app.example");
    assert_eq!(one["subprotocol"], "chat");
    assert_eq!(one["consumer"], Value::Null);
    assert_eq!(one["backend"], format!("ws://{backend}/ws/room/1"));
    assert!(
        one["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:"))
    );
    assert!(one["started"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(one["last_activity"].is_string());
    let sent = json!({"frames": 3, "messages": 3, "bytes": 11});
    assert_eq!(one["client_to_backend"], sent);
    assert_eq!(one["backend_to_client"], sent);
    assert_eq!(
        listed["connections"][1]["backend"],
        format!("ws://{backend}/ws/room/2")
    );

    // One by id; filters; paging.
    let id = one["id"].as_u64().expect("an id");
    let got = api
        .get(&format!("/connections/{id}"))
        .await
        .expect(200, "one")
        .json();
    assert_eq!(got["backend"], one["backend"]);
    assert_eq!(connections(&api, "?proxy=chat").await["total"], 2);
    assert_eq!(connections(&api, "?environment=staging").await["total"], 0);
    assert_eq!(connections(&api, "?consumer=alice").await["total"], 0);
    let page = connections(&api, "?per_page=1&page=2").await;
    assert_eq!(page["total"], 2);
    assert_eq!(page["connections"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["connections"][0]["id"], listed["connections"][1]["id"]);

    // A closed session leaves the registry.
    first.close(None).await.expect("close");
    within("the first session to leave", async {
        while connections(&api, "").await["total"] != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    api.get(&format!("/connections/{id}"))
        .await
        .expect_error(404, "not_found", "a closed session");
    api.get("/connections/not-a-number")
        .await
        .expect_error(404, "not_found", "a bad id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_disconnect_reaches_both_sides_with_its_code() {
    let (backend, mut closes) = backend().await;
    let api = stack(backend, json!({})).await;
    let mut ws = open(&api, "/chat/a").await;
    let listed = connections(&api, "").await;
    let id = listed["connections"][0]["id"].as_u64().expect("an id");

    api.delete(&format!("/connections/{id}?code=4000&reason=key%20revoked"))
        .await
        .expect(204, "close one");
    let close = expect_close(&mut ws).await;
    assert_eq!(close.code, CloseCode::Library(4000));
    assert_eq!(close.reason.as_str(), "key revoked");
    let at_backend = within("the backend's close", closes.recv())
        .await
        .flatten()
        .expect("the backend got a close frame");
    assert_eq!(at_backend.code, CloseCode::Library(4000));
    assert_eq!(at_backend.reason.as_str(), "key revoked");

    // The default code is 1008; a bulk close needs a filter; bad codes are refused.
    let mut a = open(&api, "/chat/b").await;
    let mut b = open(&api, "/chat/c").await;
    api.delete("/connections")
        .await
        .expect_error(400, "bad_request", "no filter");
    api.delete("/connections?proxy=chat&code=1006")
        .await
        .expect_error(400, "bad_request", "a code that may not be sent");
    let closed = api
        .delete("/connections?proxy=chat")
        .await
        .expect(200, "close all of chat")
        .json();
    assert_eq!(closed, json!({"closed": 2}));
    for ws in [&mut a, &mut b] {
        assert_eq!(expect_close(ws).await.code, CloseCode::Policy);
    }
    api.delete("/connections/999999")
        .await
        .expect_error(404, "not_found", "an unknown id");
}

/// A raw client that completes the handshake and then never reads nor writes.
async fn silent_client(gw: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(gw).await.expect("connect");
    let request = format!(
        "GET /chat/silent HTTP/1.1\r\nHost: {gw}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("send");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        within("the 101", tcp.read_exact(&mut byte))
            .await
            .expect("read the 101");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_pings_is_dropped() {
    let (backend, mut closes) = backend().await;
    let keepalive =
        json!({"timeouts": {"websocket_ping": "200ms", "websocket_pong_timeout": "200ms"}});
    let api = stack(backend, keepalive).await;
    // A healthy client keeps reading, so it answers the gateway's pings.
    let (mut sink, mut stream) = open(&api, "/chat/healthy").await.split();
    let (echoes_tx, mut echoes) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            if message.is_text() {
                let _ = echoes_tx.send(message);
            }
        }
    });
    let _silent = silent_client(api.gw("prod")).await;

    // The silent one's backend is told why; the registry lets go of it.
    let close = within("the silent session's close", closes.recv())
        .await
        .flatten()
        .expect("the backend got a close frame");
    assert_eq!(close.code, CloseCode::Away);
    assert_eq!(close.reason.as_str(), "client did not answer a ping");
    within("the silent session to leave the registry", async {
        while connections(&api, "").await["total"] != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // The active-session gauge dropped with it, and the answered pings were timed.
    let metrics = api.get("/metrics").await.expect(200, "metrics").text();
    let active = r#"strait_websocket_connections_active{environment="prod",proxy="chat"} 1"#;
    assert!(metrics.lines().any(|l| l == active), "{metrics}");
    let closes = r#"strait_websocket_closes_total{environment="prod",proxy="chat",code="1001",initiator="gateway"} 1"#;
    assert!(metrics.lines().any(|l| l == closes), "{metrics}");
    let rtt = r#"strait_websocket_ping_rtt_seconds_count{environment="prod",proxy="chat"} "#;
    let timed = metrics
        .lines()
        .find_map(|l| l.strip_prefix(rtt))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(timed.is_some_and(|n| n >= 1), "{metrics}");

    // The healthy one, open longer than ping + pong timeout, is still there.
    within("send", sink.send(Message::text("alive")))
        .await
        .expect("send");
    let echoed = within("the echo", echoes.recv()).await;
    assert_eq!(echoed, Some(Message::text("alive")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_closed_when_its_lifetime_runs_out() {
    let (backend, mut closes) = backend().await;
    let api = stack(
        backend,
        json!({"timeouts": {"websocket_max_lifetime": "300ms"}}),
    )
    .await;
    let mut ws = open(&api, "/chat/short").await;
    round_trip(&mut ws, "busy or not").await;
    let close = expect_close(&mut ws).await;
    assert_eq!(close.code, CloseCode::Away);
    assert_eq!(close.reason.as_str(), "maximum session lifetime reached");
    let at_backend = within("the backend's close", closes.recv())
        .await
        .flatten()
        .expect("a close frame");
    assert_eq!(at_backend.code, CloseCode::Away);
}
