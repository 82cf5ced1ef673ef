//! Message policies end to end, with real WebSocket clients and a real WebSocket backend
//! over loopback: `ws_message_size` (a 1 MiB limit refusing a 10 MiB message with 1009 to
//! the client and 1001 to the backend, the message never forwarded nor buffered; the
//! backend's direction) and `ws_message_rate` (1008 after exactly N messages; `drop` leaving
//! messages out while the session goes on; a consumer's sessions sharing one quota). HTTP
//! requests through the same proxies are not affected.

mod support;

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{accept_async, client_async};

use support::{Stack, declarative, expect_close, next_data, round_trip, within, ws_connect};

/// What the backend saw of one session.
#[derive(Debug, PartialEq)]
enum Seen {
    Data(usize),
    Close(u16),
}

/// A WebSocket backend that echoes data messages and reports, per message, what it received.
async fn backend() -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    match message {
                        Message::Close(frame) => {
                            let code = frame.map_or(1005, |f| u16::from(f.code));
                            let _ = tx.send(Seen::Close(code));
                        }
                        Message::Text(_) | Message::Binary(_) => {
                            let _ = tx.send(Seen::Data(message.len()));
                            if ws.send(message).await.is_err() {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn gateway(backend: SocketAddr) -> Stack {
    let yaml = format!(
        r#"
environments:
  - name: prod
    listen: 127.0.0.1:0
    websocket: true
consumers:
  - name: alice
    credentials: {{ api_keys: [alice-key-0123] }}
proxies:
  - name: size
    path: /size/*
    backend: http://{backend}
    deploy: [prod]
    policies:
      - {{ type: ws_message_size, max: 1048576 }}
  - name: down
    path: /down/*
    backend: http://{backend}
    deploy: [prod]
    policies:
      - {{ type: ws_message_size, max: 10, direction: backend_to_client }}
  - name: rate
    path: /rate/*
    backend: http://{backend}
    deploy: [prod]
    policies:
      - {{ type: ws_message_rate, messages: 3, per: 1h }}
  - name: drop
    path: /drop/*
    backend: http://{backend}
    deploy: [prod]
    policies:
      - {{ type: ws_message_rate, messages: 2, per: 1h, on_exceed: drop }}
  - name: shared
    path: /shared/*
    backend: http://{backend}
    deploy: [prod]
    policies:
      - {{ type: api_key, query: key }}
      - {{ type: ws_message_rate, messages: 3, per: 1h, per_consumer: true }}
"#
    );
    declarative(&yaml).await.0
}

fn url(stack: &Stack, path: &str) -> String {
    format!("ws://{}{path}", stack.gw("prod"))
}

async fn seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    within("the backend's report", rx.recv()).await.unwrap()
}

/// The bytes of the process's resident set.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Held by the test that moves megabytes and by the one that measures the process's memory:
/// the tests of one binary run in parallel in one process, so one would count the other's.
static MEMORY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn a_message_over_the_size_limit_closes_1009_and_never_reaches_the_backend() {
    let _alone = MEMORY.lock().await;
    let (addr, mut rx) = backend().await;
    let stack = gateway(addr).await;
    let mut ws = ws_connect(&url(&stack, "/size/a")).await;
    ws.send(Message::binary(vec![1u8; 1 << 20])).await.unwrap();
    match next_data(&mut ws).await {
        Some(Message::Binary(b)) => assert_eq!(b.len(), 1 << 20, "1 MiB is within the limit"),
        other => panic!("expected the echo, got {other:?}"),
    }
    assert_eq!(seen(&mut rx).await, Seen::Data(1 << 20));
    ws.send(Message::binary(vec![2u8; 10 << 20])).await.unwrap();
    let close = expect_close(&mut ws).await;
    assert_eq!(close.code, CloseCode::Size, "1009 to the sender");
    assert_eq!(
        seen(&mut rx).await,
        Seen::Close(1001),
        "1001 to the backend"
    );
}

#[tokio::test]
async fn a_streamed_10_mib_message_is_refused_at_its_header_and_not_buffered() {
    let _alone = MEMORY.lock().await;
    let (addr, mut rx) = backend().await;
    let stack = gateway(addr).await;
    let tcp = TcpStream::connect(stack.gw("prod")).await.unwrap();
    let (ws, _) = client_async(url(&stack, "/size/raw"), tcp).await.unwrap();
    let (mut read, mut write) = tokio::io::split(ws.into_inner());
    let before = rss();
    // A masked binary frame announcing 10 MiB, streamed in 64 KiB pieces (all-zero key:
    // the payload is sent as is). The writer stops at 10 MiB or when the gateway hangs up.
    let len: u64 = 10 << 20;
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    write.write_all(&header).await.unwrap();
    let writer = tokio::spawn(async move {
        let chunk = vec![0u8; 64 << 10];
        let mut sent = 0u64;
        while sent < len && write.write_all(&chunk).await.is_ok() {
            sent += chunk.len() as u64;
        }
    });
    // The client's first frame back is the 1009, whatever the writer is doing.
    let mut head = [0u8; 4];
    within("the close frame", read.read_exact(&mut head))
        .await
        .unwrap();
    assert_eq!(head[0], 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([head[2], head[3]]), 1009);
    // The backend is told 1001 and never sees a byte of the message.
    assert_eq!(seen(&mut rx).await, Seen::Close(1001));
    let grown = rss().saturating_sub(before);
    assert!(
        grown < 4 << 20,
        "the gateway must not buffer the message: the process grew by {grown} bytes"
    );
    writer.abort();
}

#[tokio::test]
async fn the_backend_direction_is_limited_when_asked() {
    let (addr, mut rx) = backend().await;
    let stack = gateway(addr).await;
    let mut ws = ws_connect(&url(&stack, "/down/a")).await;
    // The client may send anything; the backend's echo of it is over its 10-byte limit.
    ws.send(Message::text("longer than ten bytes"))
        .await
        .unwrap();
    assert_eq!(seen(&mut rx).await, Seen::Data(21));
    assert_eq!(
        seen(&mut rx).await,
        Seen::Close(1009),
        "1009 to the backend"
    );
    assert_eq!(expect_close(&mut ws).await.code, CloseCode::Away);
}

#[tokio::test]
async fn the_message_after_the_rate_closes_1008() {
    let (addr, mut rx) = backend().await;
    let stack = gateway(addr).await;
    let mut ws = ws_connect(&url(&stack, "/rate/a")).await;
    for i in 0..3 {
        round_trip(&mut ws, &format!("message {i}")).await;
        assert!(matches!(seen(&mut rx).await, Seen::Data(_)));
    }
    ws.send(Message::text("one too many")).await.unwrap();
    let close = expect_close(&mut ws).await;
    assert_eq!(close.code, CloseCode::Policy, "1008 to the sender");
    assert_eq!(seen(&mut rx).await, Seen::Close(1001));
    // Each session has its own quota.
    let mut again = ws_connect(&url(&stack, "/rate/b")).await;
    round_trip(&mut again, "a new session").await;
}

#[tokio::test]
async fn with_drop_messages_over_the_rate_are_left_out_and_the_session_goes_on() {
    let (addr, mut rx) = backend().await;
    let stack = gateway(addr).await;
    let mut ws = ws_connect(&url(&stack, "/drop/a")).await;
    for text in ["one", "two", "three", "four"] {
        ws.send(Message::text(text)).await.unwrap();
    }
    for text in ["one", "two"] {
        match next_data(&mut ws).await {
            Some(Message::Text(t)) => assert_eq!(t.as_str(), text),
            other => panic!("expected {text:?}, got {other:?}"),
        }
    }
    ws.close(None).await.unwrap();
    assert_eq!(seen(&mut rx).await, Seen::Data(3));
    assert_eq!(seen(&mut rx).await, Seen::Data(3));
    assert_eq!(
        seen(&mut rx).await,
        Seen::Close(1005),
        "the close came right after the two admitted messages"
    );
    let line = r#"strait_websocket_messages_dropped_total{environment="prod",proxy="drop",direction="client_to_backend"} 2"#;
    within("the dropped messages to be counted", async {
        while !stack
            .get("/metrics")
            .await
            .text()
            .lines()
            .any(|l| l == line)
        {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_consumers_sessions_share_one_message_quota() {
    let (addr, _rx) = backend().await;
    let stack = gateway(addr).await;
    let mut first = ws_connect(&url(&stack, "/shared/a?key=alice-key-0123")).await;
    let mut second = ws_connect(&url(&stack, "/shared/b?key=alice-key-0123")).await;
    round_trip(&mut first, "1").await;
    round_trip(&mut first, "2").await;
    round_trip(&mut second, "3").await;
    second.send(Message::text("4")).await.unwrap();
    assert_eq!(expect_close(&mut second).await.code, CloseCode::Policy);
}

#[tokio::test]
async fn http_requests_are_not_affected_by_message_policies() {
    let echo = strait::echo::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let stack = gateway(echo.local_addr()).await;
    for path in [
        "/size/plain",
        "/rate/1",
        "/rate/2",
        "/rate/3",
        "/rate/4",
        "/drop/5",
    ] {
        let (status, _) = stack.through("prod", path).await;
        assert_eq!(status.as_u16(), 200, "{path}");
    }
}
