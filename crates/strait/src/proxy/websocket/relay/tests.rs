//! Both ends are real WebSocket peers (tokio-tungstenite) or raw byte ends over
//! `tokio::io::duplex`; raw bytes the relay emits are decoded with tungstenite's codec.

use super::*;

use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadBuf, duplex};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{
    CloseCode, Control, Data, OpCode as WsOpCode,
};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameSocket};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame as WsClose, Role, WebSocketConfig};

use super::direction::{Direction, MAX_BUF_SIZE, PING_PAYLOAD, Step};
use crate::policy::MessageGate;
use crate::proxy::websocket::frame::{self, FrameParser, MaskPolicy};

#[tokio::test]
async fn an_idle_direction_holds_no_buffer() {
    let (mut peer, mut src) = duplex(64 * 1024);
    let (mut dst, mut sink) = duplex(64 * 1024);
    let mut direction = Direction::new(MaskPolicy::Forbidden, false, None);
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    direction.pump(&mut cx, &mut src, &mut dst);
    assert!(
        direction.buf.is_empty(),
        "nothing read yet, nothing allocated"
    );

    peer.write_all(&[0x82, 3, 1, 2, 3])
        .await
        .expect("write a frame");
    direction.pump(&mut cx, &mut src, &mut dst);
    assert_eq!(
        direction.stats.frames, 0,
        "the empty read armed a wake-up: no read until it fires"
    );
    // The session does this when the direction's waker fires.
    direction.read_armed = false;
    direction.pump(&mut cx, &mut src, &mut dst);
    let mut relayed = [0u8; 5];
    sink.read_exact(&mut relayed).await.expect("frame relayed");
    assert_eq!(relayed, [0x82, 3, 1, 2, 3]);
    assert_eq!(direction.stats.frames, 1);
    assert!(
        direction.buf.is_empty(),
        "drained and idle again: buffer released"
    );
}

#[tokio::test]
async fn a_waiting_direction_keeps_only_the_bytes_it_holds() {
    let (mut peer, mut src) = duplex(64 * 1024);
    let (mut dst, mut sink) = duplex(64 * 1024);
    let mut direction = Direction::new(MaskPolicy::Forbidden, false, None);
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    // A frame with a 200-byte payload, its 16-bit length not yet there: the first two bytes
    // of its header are held back.
    let mut frame = vec![0x82, 126, 0, 200];
    frame.resize(4 + 200, 9);
    let (first, rest) = frame.split_at(2);
    peer.write_all(first).await.expect("write a partial header");
    direction.pump(&mut cx, &mut src, &mut dst);
    assert!(direction.buf.len() > 2, "read into a spare buffer");
    // The session does this before it waits.
    direction.settle();
    assert_eq!(direction.buf.len(), 2, "only the held bytes are kept");

    peer.write_all(rest).await.expect("write the rest");
    direction.read_armed = false;
    direction.pump(&mut cx, &mut src, &mut dst);
    let mut relayed = vec![0u8; frame.len()];
    sink.read_exact(&mut relayed).await.expect("frame relayed");
    assert_eq!(relayed, frame);
    assert_eq!(direction.stats.frames, 1);
    assert!(direction.buf.is_empty(), "idle again: buffer released");
}

/// A direction that has relayed a close and reads no more, holding the buffer it read it into.
async fn closed_direction() -> Direction {
    let (mut peer, mut src) = duplex(1024);
    let (mut dst, mut sink) = duplex(1024);
    let mut direction = Direction::new(MaskPolicy::Forbidden, false, None);
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let close = [0x88, 2, 0x03, 0xE8];
    peer.write_all(&close).await.expect("write a close");
    // One pump reads it and stops reading; the next writes it.
    direction.pump(&mut cx, &mut src, &mut dst);
    direction.pump(&mut cx, &mut src, &mut dst);
    let mut relayed = [0u8; 4];
    let read = futures_util::FutureExt::now_or_never(sink.read_exact(&mut relayed));
    assert!(matches!(read, Some(Ok(4))), "close relayed: {read:?}");
    assert_eq!(relayed, close);
    assert!(
        !direction.buf.is_empty(),
        "a closed direction keeps its buffer"
    );
    direction
}

#[tokio::test]
async fn both_directions_of_a_closed_session_give_their_buffers_to_the_next() {
    let spares = super::direction::spares;
    let session = (closed_direction().await, closed_direction().await);
    assert_eq!(spares(), 0, "both buffers lent at once");
    drop(session);
    assert_eq!(spares(), 2, "both given back to the worker");
    let next = (closed_direction().await, closed_direction().await);
    assert_eq!(spares(), 0, "the next session reads into them");
    drop(next);
}

/// A waker that counts its wake-ups.
struct Counting(std::sync::atomic::AtomicUsize);

impl std::task::Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn counting() -> (Arc<Counting>, std::task::Waker) {
    let counter = Arc::new(Counting(Default::default()));
    (counter.clone(), std::task::Waker::from(counter))
}

#[test]
fn a_signal_wakes_the_task_it_kept_and_any_other_waker_it_was_polled_with() {
    let count = |c: &Arc<Counting>| c.0.load(std::sync::atomic::Ordering::Relaxed);
    let (signal, wakers) = Signal::new();
    let [_, c2b, b2c] = &*wakers;
    let (task, task_waker) = counting();
    let _ = signal.wakeups(&Context::from_waker(&task_waker), &wakers);
    c2b.wake_by_ref();
    assert_eq!(count(&task), 1, "the kept waker woke the task");
    b2c.wake_by_ref();
    assert_eq!(count(&task), 2, "kept, not taken, by the first wake-up");

    let (other, other_waker) = counting();
    let _ = signal.wakeups(&Context::from_waker(&other_waker), &wakers);
    c2b.wake_by_ref();
    assert_eq!(
        count(&other),
        1,
        "a poll with another waker registers it too"
    );
    assert_eq!(count(&task), 3);
}

#[tokio::test]
async fn a_stream_between_non_tcp_streams_grows_the_buffer_up_to_its_bound() {
    const PAYLOAD: usize = 2 << 20;
    let (mut peer, mut src) = duplex(4 << 20);
    let (mut dst, mut sink) = duplex(4 << 20);
    let mut direction = Direction::new(MaskPolicy::Forbidden, false, None);
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut frame = vec![0x82, 127];
    frame.extend_from_slice(&(PAYLOAD as u64).to_be_bytes());
    frame.resize(frame.len() + PAYLOAD, 7);
    peer.write_all(&frame).await.expect("write a 2 MiB frame");

    let mut largest = 0;
    for _ in 0..10_000 {
        if matches!(direction.step(&mut cx, &mut src, &mut dst), Step::Idle) {
            break;
        }
        largest = largest.max(direction.buf.len());
        assert!(direction.pipe.is_none(), "not TCP: copied, never spliced");
    }
    assert_eq!(direction.stats.frames, 1, "the whole frame relayed");
    assert_eq!(
        largest, MAX_BUF_SIZE,
        "grew while reads filled it, no further"
    );
    assert!(direction.buf.is_empty(), "idle again: buffer released");
    let mut relayed = vec![0u8; frame.len()];
    sink.read_exact(&mut relayed).await.expect("frame relayed");
    assert_eq!(relayed, frame);
}

impl AsTcp for DuplexStream {}

/// `future`, or a failed test if it takes over 30 s.
async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .unwrap_or_else(|_| panic!("{what} took over 30 s"))
}

/// Both ends of a loopback TCP connection.
async fn tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (connected, accepted) =
        tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    (connected.unwrap(), accepted.unwrap().0)
}

#[tokio::test]
async fn a_large_frame_between_plain_tcp_connections_is_spliced_byte_for_byte() {
    use crate::io::TcpOrTls;
    type Plain = TcpOrTls<DuplexStream>;
    const PAYLOAD: usize = 3 << 20;
    let (mut peer, src) = tcp_pair().await;
    let (dst, mut sink) = tcp_pair().await;
    let (mut src, mut dst) = (Plain::Plain(src), Plain::Plain(dst));
    // A 3 MiB frame (varied bytes), then a small one behind it in the same stream.
    let mut frames = vec![0x82, 127];
    frames.extend_from_slice(&(PAYLOAD as u64).to_be_bytes());
    frames.extend((0..PAYLOAD).map(|i| (i % 251) as u8));
    frames.extend_from_slice(&[0x82, 3, 1, 2, 3]);
    let sent = frames.clone();
    let writer = tokio::spawn(async move { peer.write_all(&sent).await.map(|()| peer) });
    let reader = tokio::spawn(async move {
        let mut got = vec![0u8; frames.len()];
        sink.read_exact(&mut got)
            .await
            .map(|_| (got == frames, sink))
    });

    let mut direction = Direction::new(MaskPolicy::Forbidden, false, None);
    let mut spliced = false;
    let relayed = poll_fn(|cx| {
        // Polled when woken (the session's waker would have cleared it).
        direction.read_armed = false;
        loop {
            let step = direction.step(cx, &mut src, &mut dst);
            spliced |= direction.pipe.as_ref().is_some_and(|pipe| pipe.held() > 0);
            match step {
                Step::Progress | Step::Changed => {}
                _ if direction.stats.frames == 2 && !direction.backlogged() => {
                    return Poll::Ready(());
                }
                _ => return Poll::Pending,
            }
        }
    });
    within("relaying both frames", relayed).await;
    let _peer = within("the writer", writer).await.unwrap().unwrap();
    let (same, _sink) = within("the reader", reader).await.unwrap().unwrap();
    assert!(same, "relayed bytes differ from those sent");
    assert!(spliced, "the large frame went through a pipe");
    assert_eq!(direction.stats.frames, 2);
    assert_eq!(direction.stats.bytes, PAYLOAD as u64 + 3);
    assert!(
        direction.pipe.is_none(),
        "pipe closed once no frame is spliced"
    );
    assert!(direction.buf.is_empty(), "idle again: buffer released");
}

#[tokio::test]
async fn a_backend_lost_inside_a_spliced_frame_ends_the_client_stream_after_its_bytes() {
    use crate::io::TcpOrTls;
    type Plain = TcpOrTls<DuplexStream>;
    let (mut client, client_gw) = tcp_pair().await;
    let (backend_gw, mut backend) = tcp_pair().await;
    let session = tokio::spawn(async move {
        relay(
            (Plain::Plain(client_gw), Bytes::new()),
            (Plain::Plain(backend_gw), Bytes::new()),
            &config(),
            &LiveStats::default(),
            std::pin::pin!(std::future::pending::<CloseFrame>()),
        )
        .await
    });
    // A 4 MiB frame's header and 1 MiB of its payload, then the backend is gone.
    let mut sent = vec![0x82, 127];
    sent.extend_from_slice(&(4u64 << 20).to_be_bytes());
    sent.extend((0..1 << 20).map(|i: u32| (i % 253) as u8));
    backend.write_all(&sent).await.unwrap();
    drop(backend);

    // The client gets every byte sent, then the stream ends: no close frame is possible
    // inside a frame.
    let mut got = Vec::new();
    within("the client's stream to end", client.read_to_end(&mut got))
        .await
        .unwrap();
    assert!(
        got == sent,
        "the client got {} of {} bytes",
        got.len(),
        sent.len()
    );
    let out = within("the session", session).await.unwrap();
    assert_eq!(out.initiator, Initiator::Backend);
    assert_eq!(out.close, None);
}

type Ws<S = DuplexStream> = WebSocketStream<S>;

const DUPLEX: usize = 64 * 1024;

fn config() -> RelayConfig {
    RelayConfig {
        idle_timeout: Duration::from_secs(60),
        close_timeout: Duration::from_secs(5),
        send_timeout: Duration::from_secs(60),
        ping_interval: None,
        pong_timeout: Duration::from_secs(10),
        ping_rtt: None,
        limits: None,
        extensions: false,
    }
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_frame_size(None)
        .max_message_size(None)
}

struct Running {
    handle: JoinHandle<RelayOutcome>,
    stop: Option<oneshot::Sender<CloseFrame>>,
}

impl Running {
    fn stop(&mut self, close: CloseFrame) {
        let sent = self.stop.take().map(|tx| tx.send(close).is_ok());
        assert_eq!(sent, Some(true), "relay already finished");
    }

    async fn outcome(self) -> RelayOutcome {
        self.handle.await.expect("relay task panicked")
    }
}

/// Starts a relay; returns the raw client-peer and backend-peer ends.
fn start(config: RelayConfig) -> (DuplexStream, DuplexStream, Running) {
    start_after(config, Bytes::new())
}

/// [`start`], the backend having sent `from_backend` right behind its 101.
fn start_after(config: RelayConfig, from_backend: Bytes) -> (DuplexStream, DuplexStream, Running) {
    let (client_peer, client_gw) = duplex(DUPLEX);
    let (backend_gw, backend_peer) = duplex(DUPLEX);
    let (tx, rx) = oneshot::channel::<CloseFrame>();
    let stop = async move {
        match rx.await {
            Ok(close) => close,
            Err(_) => std::future::pending().await,
        }
    };
    let handle = tokio::spawn(async move {
        relay(
            (client_gw, Bytes::new()),
            (backend_gw, from_backend),
            &config,
            &LiveStats::default(),
            std::pin::pin!(stop),
        )
        .await
    });
    let running = Running {
        handle,
        stop: Some(tx),
    };
    (client_peer, backend_peer, running)
}

async fn ws<S>(io: S, role: Role) -> Ws<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    WebSocketStream::from_raw_socket(io, role, Some(ws_config())).await
}

async fn start_ws(config: RelayConfig) -> (Ws, Ws, Running) {
    let (c, b, running) = start(config);
    (
        ws(c, Role::Client).await,
        ws(b, Role::Server).await,
        running,
    )
}

async fn next<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut Ws<S>) -> Message {
    match ws.next().await {
        Some(Ok(msg)) => msg,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Reads until a Close; returns its code and reason after letting the peer finish the
/// handshake (its reply flushed, the stream ended).
async fn expect_close<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut Ws<S>) -> (u16, String) {
    let close = match next(ws).await {
        Message::Close(Some(c)) => (u16::from(c.code), c.reason.as_str().to_owned()),
        other => panic!("expected a close, got {other:?}"),
    };
    while let Some(Ok(_)) = ws.next().await {}
    close
}

/// Echoes data messages; returns everything received once the stream ends.
fn echo(mut ws: Ws) -> JoinHandle<Vec<Message>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                ws.send(msg.clone()).await.expect("echo send");
            }
            seen.push(msg);
        }
        seen
    })
}

fn ws_close(code: u16, reason: &str) -> Option<WsClose> {
    Some(WsClose {
        code: CloseCode::from(code),
        reason: reason.into(),
    })
}

/// A raw frame as a client sends it (masked).
fn masked(b0: u8, payload: &[u8], len_override: Option<u64>) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let len = len_override.unwrap_or(payload.len() as u64);
    let mut out = vec![b0];
    if len <= 125 {
        out.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// Reads one frame from a raw end (its end found by our parser), decoded by tungstenite.
async fn read_raw_frame(io: &mut DuplexStream) -> Frame {
    let mut parser = FrameParser::new(MaskPolicy::Any);
    let mut bytes = Vec::new();
    loop {
        let b = io.read_u8().await.expect("frame byte");
        bytes.push(b);
        if parser.advance(&[b]).expect("valid frame").1.is_some() {
            break;
        }
    }
    decode_frames(&bytes).remove(0)
}

/// Decodes whole frames with tungstenite's codec (no unmasking, no masking rules).
fn decode_frames(bytes: &[u8]) -> Vec<Frame> {
    let mut socket = FrameSocket::new(Cursor::new(bytes.to_vec()));
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = socket.read(None) {
        frames.push(frame);
    }
    frames
}

/// A close frame's code and reason, unmasking if needed.
fn close_of(frame: &Frame) -> (u16, String) {
    assert_eq!(frame.header().opcode, WsOpCode::Control(Control::Close));
    let key = frame.header().mask.unwrap_or_default();
    let payload: Vec<u8> = (frame.payload().iter().enumerate())
        .map(|(i, b)| b ^ key[i % 4])
        .collect();
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    (
        code,
        String::from_utf8(payload[2..].to_vec()).expect("utf-8"),
    )
}

/// A stream that records every byte read through it.
struct Tap {
    inner: DuplexStream,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Tap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = buf.filled()[before..].to_vec();
        self.seen.lock().expect("tap").extend(new);
        res
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn tap(inner: DuplexStream) -> (Tap, Arc<Mutex<Vec<u8>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    (
        Tap {
            inner,
            seen: seen.clone(),
        },
        seen,
    )
}

#[tokio::test]
async fn what_the_backend_sent_behind_its_101_goes_first() {
    // A whole frame and the start of the next one, read with the backend's 101.
    let seed = Bytes::from_static(b"\x81\x05hello\x81\x05wo");
    let (client, mut backend, _running) = start_after(config(), seed);
    let mut client = ws(client, Role::Client).await;
    backend.write_all(b"rld").await.unwrap();
    assert_eq!(next(&mut client).await, Message::text("hello"));
    assert_eq!(next(&mut client).await, Message::text("world"));
}

#[tokio::test]
async fn text_and_binary_echo_then_client_close() {
    let (mut client, backend, running) = start_ws(config()).await;
    let echo = echo(backend);

    client.send(Message::text("hello")).await.unwrap();
    assert_eq!(next(&mut client).await, Message::text("hello"));
    client
        .send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        next(&mut client).await,
        Message::binary(vec![0u8, 1, 2, 255])
    );

    client.close(ws_close(1000, "done")).await.unwrap();
    assert_eq!(expect_close(&mut client).await, (1000, "done".to_owned()));

    let seen = echo.await.unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2], Message::Close(ws_close(1000, "done")));
    let out = running.outcome().await;
    assert_eq!(out.initiator, Initiator::Client);
    assert_eq!(out.close, Some(CloseFrame::new(1000, "done")));
    let expected = DirectionStats {
        frames: 3,
        messages: 2,
        bytes: 5 + 4 + 6,
        dropped: 0,
    };
    assert_eq!(out.client_to_backend, expected);
    assert_eq!(out.backend_to_client, expected);
}

#[tokio::test]
async fn backend_initiated_close_with_code_and_reason() {
    let (mut client, mut backend, running) = start_ws(config()).await;
    backend.send(Message::text("bye soon")).await.unwrap();
    assert_eq!(next(&mut client).await, Message::text("bye soon"));

    backend.close(ws_close(4000, "done")).await.unwrap();
    assert_eq!(expect_close(&mut client).await, (4000, "done".to_owned()));
    // The client's reply reached the backend, and the backend's stream then ended.
    assert_eq!(
        next(&mut backend).await,
        Message::Close(ws_close(4000, "done"))
    );
    assert!(backend.next().await.is_none());

    let out = running.outcome().await;
    assert_eq!(out.initiator, Initiator::Backend);
    assert_eq!(out.close, Some(CloseFrame::new(4000, "done")));
    assert_eq!(out.backend_to_client.frames, 2);
    assert_eq!(out.client_to_backend.frames, 1);
}

#[tokio::test]
async fn fragmented_message_passes_with_interleaved_ping() {
    let (mut client, backend, running) = start_ws(config()).await;
    let echo = echo(backend);
    let frames = [
        Frame::message(
            Bytes::from_static(b"frag"),
            WsOpCode::Data(Data::Text),
            false,
        ),
        Frame::ping(Bytes::from_static(b"mid")),
        Frame::message(
            Bytes::from_static(b"men"),
            WsOpCode::Data(Data::Continue),
            false,
        ),
        Frame::message(
            Bytes::from_static(b"ted"),
            WsOpCode::Data(Data::Continue),
            true,
        ),
    ];
    for frame in frames {
        client.send(Message::Frame(frame)).await.unwrap();
    }
    // The backend saw the ping and answered it, then got the whole message and echoed it.
    assert_eq!(
        next(&mut client).await,
        Message::Pong(Bytes::from_static(b"mid"))
    );
    assert_eq!(next(&mut client).await, Message::text("fragmented"));
    client.close(None).await.unwrap();
    while client.next().await.is_some() {}

    let seen = echo.await.unwrap();
    assert_eq!(seen[0], Message::Ping(Bytes::from_static(b"mid")));
    assert_eq!(seen[1], Message::text("fragmented"));
    let out = running.outcome().await;
    assert_eq!(
        out.client_to_backend,
        DirectionStats {
            frames: 5,
            messages: 1,
            bytes: 4 + 3 + 3 + 3,
            dropped: 0,
        }
    );
    // An empty Close reports 1005 (no status).
    assert_eq!(out.close, Some(CloseFrame::new(1005, "")));
    assert_eq!(out.initiator, Initiator::Client);
}

#[tokio::test]
async fn sixteen_mib_message_both_ways() {
    let (mut client, backend, running) = start_ws(config()).await;
    let echo = echo(backend);
    let big: Vec<u8> = (0..16 << 20).map(|i: u32| (i % 251) as u8).collect();
    client.send(Message::binary(big.clone())).await.unwrap();
    match next(&mut client).await {
        Message::Binary(got) => assert!(got == big, "16 MiB echo differs"),
        other => panic!("expected binary, got {other:?}"),
    }
    client.close(None).await.unwrap();
    while client.next().await.is_some() {}
    assert!(matches!(echo.await.unwrap()[0], Message::Binary(_)));
    let out = running.outcome().await;
    for stats in [out.client_to_backend, out.backend_to_client] {
        assert_eq!(stats.frames, 2);
        assert_eq!(stats.messages, 1);
        assert_eq!(stats.bytes, 16 << 20);
    }
}

#[tokio::test]
async fn ping_pong_pass_through_both_ways() {
    let (mut client, mut backend, running) = start_ws(config()).await;
    backend
        .send(Message::Ping(Bytes::from_static(b"from-backend")))
        .await
        .unwrap();
    client
        .send(Message::Ping(Bytes::from_static(b"from-client")))
        .await
        .unwrap();

    let backend_task = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(Ok(msg)) = backend.next().await {
            seen.push(msg);
        }
        seen
    });
    // The client sees the backend's ping, and the backend's pong to its own ping.
    let mut got = vec![next(&mut client).await, next(&mut client).await];
    got.sort_by_key(|m| m.is_pong());
    assert_eq!(
        got,
        [
            Message::Ping(Bytes::from_static(b"from-backend")),
            Message::Pong(Bytes::from_static(b"from-client")),
        ]
    );
    client.close(None).await.unwrap();
    while client.next().await.is_some() {}

    let seen = backend_task.await.unwrap();
    assert!(seen.contains(&Message::Ping(Bytes::from_static(b"from-client"))));
    assert!(seen.contains(&Message::Pong(Bytes::from_static(b"from-backend"))));
    let out = running.outcome().await;
    // Ping, pong, close each way; none of them are messages.
    assert_eq!(out.client_to_backend.frames, 3);
    assert_eq!(out.client_to_backend.messages, 0);
    assert_eq!(out.backend_to_client.frames, 3);
    assert_eq!(out.backend_to_client.messages, 0);
}

#[tokio::test]
async fn counters_after_known_exchange() {
    let (mut client, mut backend, running) = start_ws(config()).await;
    client.send(Message::text("abc")).await.unwrap();
    client.send(Message::binary(vec![7u8; 10])).await.unwrap();
    client.send(Message::binary(vec![1u8; 300])).await.unwrap();
    assert_eq!(next(&mut backend).await, Message::text("abc"));
    assert_eq!(next(&mut backend).await, Message::binary(vec![7u8; 10]));
    assert_eq!(next(&mut backend).await, Message::binary(vec![1u8; 300]));
    backend.send(Message::text("xy")).await.unwrap();
    backend
        .send(Message::binary(vec![0u8; 70_000]))
        .await
        .unwrap();
    assert_eq!(next(&mut client).await, Message::text("xy"));
    assert_eq!(next(&mut client).await, Message::binary(vec![0u8; 70_000]));

    client.close(ws_close(1000, "")).await.unwrap();
    let backend_task = tokio::spawn(async move { expect_close(&mut backend).await });
    assert_eq!(expect_close(&mut client).await, (1000, String::new()));
    assert_eq!(backend_task.await.unwrap(), (1000, String::new()));

    let out = running.outcome().await;
    assert_eq!(
        out.client_to_backend,
        DirectionStats {
            frames: 4,
            messages: 3,
            bytes: 3 + 10 + 300 + 2,
            dropped: 0,
        }
    );
    assert_eq!(
        out.backend_to_client,
        DirectionStats {
            frames: 3,
            messages: 2,
            bytes: 2 + 70_000 + 2,
            dropped: 0,
        }
    );
}

#[tokio::test]
async fn backend_eof_sends_client_1014() {
    let (client_io, mut backend, running) = start(config());
    let (client_io, seen) = tap(client_io);
    let mut client = ws(client_io, Role::Client).await;

    client.send(Message::text("x")).await.unwrap();
    // The backend got the (masked) text frame as sent, so the relay is at a boundary.
    let frame = read_raw_frame(&mut backend).await;
    assert_eq!(frame.header().opcode, WsOpCode::Data(Data::Text));
    let key = frame.header().mask.expect("client frames are masked");
    assert_eq!(frame.payload(), [b'x' ^ key[0]].as_slice());
    drop(backend);

    // tungstenite reports 1014 (unknown to it) as a protocol error; the wire says 1014.
    assert!(matches!(next(&mut client).await, Message::Close(Some(_))));
    while client.next().await.is_some() {}
    let frames = decode_frames(&seen.lock().unwrap());
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].header().mask, None);
    assert_eq!(
        close_of(&frames[0]),
        (1014, "backend connection lost".to_owned())
    );

    let out = running.outcome().await;
    assert_eq!(out.initiator, Initiator::Backend);
    assert_eq!(
        out.close,
        Some(CloseFrame::new(1014, "backend connection lost"))
    );
}

#[tokio::test]
async fn backend_eof_mid_frame_shuts_client_down() {
    let (client_io, mut backend, running) = start(config());
    let (client_io, seen) = tap(client_io);
    let mut client = ws(client_io, Role::Client).await;

    let partial = [&[0x82u8, 126, 0x01, 0x00][..], &[5u8; 10]].concat();
    backend.write_all(&partial).await.unwrap();
    drop(backend);

    // No close frame: the client stream just ends.
    while let Some(msg) = client.next().await {
        assert!(msg.is_err(), "unexpected message {msg:?}");
    }
    assert_eq!(*seen.lock().unwrap(), partial);
    let out = running.outcome().await;
    assert_eq!(out.initiator, Initiator::Backend);
    assert_eq!(out.close, None);
}

#[tokio::test]
async fn client_eof_sends_backend_1001() {
    let (mut client, backend, running) = start(config());
    let mut backend = ws(backend, Role::Server).await;
    client.write_all(&masked(0x81, b"hi", None)).await.unwrap();
    drop(client);

    assert_eq!(next(&mut backend).await, Message::text("hi"));
    // The server-role peer accepts it, so it was masked.
    assert_eq!(
        expect_close(&mut backend).await,
        (1001, "client connection lost".to_owned())
    );
    let out = running.outcome().await;
    assert_eq!(out.initiator, Initiator::Client);
    assert_eq!(
        out.close,
        Some(CloseFrame::new(1001, "client connection lost"))
    );
    assert_eq!(out.client_to_backend.messages, 1);
}

#[tokio::test]
async fn client_eof_mid_frame_shuts_backend_down() {
    let (mut client, backend, running) = start(config());
    let mut backend = ws(backend, Role::Server).await;
    let frame = masked(0x82, &[9u8; 100], None);
    client.write_all(&frame[..50]).await.unwrap();
    drop(client);

    while let Some(msg) = backend.next().await {
        assert!(msg.is_err(), "unexpected message {msg:?}");
    }
    let out = running.outcome().await;
    assert_eq!(out.initiator, Initiator::Client);
    assert_eq!(out.close, None);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_closes_both_sides() {
    let cfg = RelayConfig {
        idle_timeout: Duration::from_secs(30),
        ..config()
    };
    let (mut client, backend, running) = start_ws(cfg).await;
    let echo = echo(backend);
    // Activity a little before the first deadline pushes the timeout back.
    tokio::time::sleep(Duration::from_secs(20)).await;
    client.send(Message::text("still here")).await.unwrap();
    assert_eq!(next(&mut client).await, Message::text("still here"));
    let last = Instant::now();

    assert_eq!(
        expect_close(&mut client).await,
        (1001, "idle timeout".to_owned())
    );
    assert_eq!(last.elapsed(), Duration::from_secs(30));
    let seen = echo.await.unwrap();
    assert_eq!(
        seen.last(),
        Some(&Message::Close(ws_close(1001, "idle timeout")))
    );

    let out = running.outcome().await;
    assert_eq!(out.initiator, Initiator::Gateway);
    assert_eq!(out.close, Some(CloseFrame::new(1001, "idle timeout")));
    // Replies to the gateway's close are not relayed or counted.
    assert_eq!(out.client_to_backend.frames, 1);
    assert_eq!(out.backend_to_client.frames, 1);
    assert!(last.elapsed() < Duration::from_secs(31));
}

/// A peer task's messages; fails (in paused time, at once) if it runs past ten minutes.
async fn bounded(task: JoinHandle<Vec<Message>>) -> Vec<Message> {
    tokio::time::timeout(Duration::from_secs(600), task)
        .await
        .expect("the session ends within ten minutes")
        .expect("the peer task")
}

fn keepalive(ping: u64, pong: u64, idle: u64) -> RelayConfig {
    RelayConfig {
        idle_timeout: Duration::from_secs(idle),
        ping_interval: Some(Duration::from_secs(ping)),
        pong_timeout: Duration::from_secs(pong),
        ..config()
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_dropped_after_an_unanswered_ping() {
    // The client end is never read or written: a phone that lost its network.
    let (_silent, backend, running) = start(keepalive(30, 10, 3600));
    let started = Instant::now();
    let seen = bounded(echo(ws(backend, Role::Server).await)).await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(40),
        "ping at 30s, given up at 40s"
    );
    assert!(
        seen.contains(&Message::Ping(Bytes::from_static(PING_PAYLOAD))),
        "the backend was pinged too: {seen:?}"
    );
    assert_eq!(
        seen.last(),
        Some(&Message::Close(ws_close(
            1001,
            "client did not answer a ping"
        )))
    );
    let out = running.outcome().await;
    assert_eq!(out.initiator, Initiator::Gateway);
    assert_eq!(
        out.close,
        Some(CloseFrame::new(1001, "client did not answer a ping"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_side_held_back_by_a_slow_peer_is_not_taken_for_dead() {
    // The backend streams and never reads (so never answers a ping); the client reads
    // one message a second. The relay reads the backend only as fast as the client
    // drains, which must not count as the backend being silent.
    let (mut client, mut backend, running) = start_ws(keepalive(5, 5, 3600)).await;
    let flood = tokio::spawn(async move {
        let message = Message::binary(vec![7u8; 100]);
        while backend.send(message.clone()).await.is_ok() {}
    });
    for _ in 0..60 {
        assert!(next(&mut client).await.is_binary(), "still streaming");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        !running.handle.is_finished(),
        "a minute of slow reading later, still open"
    );
    flood.abort();
}

#[tokio::test(start_paused = true)]
async fn answered_pings_keep_a_session_but_not_from_going_idle() {
    let (client, backend, running) = start_ws(keepalive(10, 5, 60)).await;
    let started = Instant::now();
    // Both peers read all the time, so they answer every ping.
    let (client, backend) = (echo(client), echo(backend));
    let (client, backend) = (bounded(client).await, bounded(backend).await);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(60),
        "pongs are not activity"
    );
    for seen in [&client, &backend] {
        let pings = seen.iter().filter(|m| m.is_ping()).count();
        assert!(pings >= 5, "pinged every 10s: {seen:?}");
        assert_eq!(
            seen.last(),
            Some(&Message::Close(ws_close(1001, "idle timeout")))
        );
    }
    assert_eq!(running.outcome().await.initiator, Initiator::Gateway);
}

#[tokio::test]
async fn stop_closes_both_sides_with_its_frame() {
    let (mut client, backend, mut running) = start_ws(config()).await;
    let echo = echo(backend);
    client.send(Message::text("before")).await.unwrap();
    assert_eq!(next(&mut client).await, Message::text("before"));

    running.stop(CloseFrame::new(1001, "gateway shutting down"));
    assert_eq!(
        expect_close(&mut client).await,
        (1001, "gateway shutting down".to_owned())
    );
    let seen = echo.await.unwrap();
    assert_eq!(
        seen.last(),
        Some(&Message::Close(ws_close(1001, "gateway shutting down")))
    );
    let out = running.outcome().await;
    assert_eq!(out.initiator, Initiator::Gateway);
    assert_eq!(
        out.close,
        Some(CloseFrame::new(1001, "gateway shutting down"))
    );
}

#[tokio::test(start_paused = true)]
async fn stop_waits_for_frame_in_flight() {
    let (mut client, mut backend, mut running) = start(config());
    let frame = masked(0x82, &[3u8; 100], None);
    client.write_all(&frame[..46]).await.unwrap();
    let mut got = vec![0u8; 46];
    backend.read_exact(&mut got).await.unwrap();
    assert_eq!(got, frame[..46]);

    running.stop(CloseFrame::new(1001, "gateway shutting down"));
    // The client (at a boundary) gets the close at once...
    let to_client = read_raw_frame(&mut client).await;
    assert_eq!(to_client.header().mask, None);
    assert_eq!(
        close_of(&to_client),
        (1001, "gateway shutting down".to_owned())
    );
    // ...the backend gets nothing while the frame is unfinished...
    let mut byte = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_secs(1), backend.read(&mut byte)).await;
    assert!(waited.is_err(), "backend got bytes mid-frame: {waited:?}");
    // ...then the rest of the frame, then its masked close.
    client.write_all(&frame[46..]).await.unwrap();
    let mut rest = vec![0u8; frame.len() - 46];
    backend.read_exact(&mut rest).await.unwrap();
    assert_eq!(rest, frame[46..]);
    let to_backend = read_raw_frame(&mut backend).await;
    assert!(to_backend.header().mask.is_some());
    assert_eq!(
        close_of(&to_backend),
        (1001, "gateway shutting down".to_owned())
    );

    // Both reply; the relay finishes without waiting for the timeout.
    let start = Instant::now();
    client
        .write_all(frame::encode_close(1001, "", Some([1, 2, 3, 4])).as_bytes())
        .await
        .unwrap();
    backend
        .write_all(frame::encode_close(1001, "", None).as_bytes())
        .await
        .unwrap();
    let out = running.outcome().await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(out.initiator, Initiator::Gateway);
    assert_eq!(
        out.client_to_backend,
        DirectionStats {
            frames: 1,
            messages: 1,
            bytes: 100,
            dropped: 0,
        }
    );
    let mut tail = Vec::new();
    backend.read_to_end(&mut tail).await.unwrap();
    assert!(tail.is_empty());
}

/// A close the other side never answers is answered by the gateway when the close
/// timeout ends, so the closing side gets a close frame rather than a bare end of stream.
#[tokio::test(start_paused = true)]
async fn a_close_the_backend_never_answers_is_answered_at_the_close_timeout() {
    let (client, mut backend, running) = start(config());
    let mut client = ws(client, Role::Client).await;
    let bye = WsClose {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    client.close(Some(bye)).await.unwrap();
    // The backend gets the close (a masked header, the code, "bye") and never answers.
    let mut forwarded = [0u8; 2 + 4 + 2 + 3];
    backend.read_exact(&mut forwarded).await.unwrap();
    let start = Instant::now();
    match client.next().await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1014, "{frame:?}");
        }
        other => panic!("expected the gateway's close, got {other:?}"),
    }
    assert_eq!(start.elapsed(), config().close_timeout);
    let out = running.outcome().await;
    assert_eq!(out.initiator, Initiator::Client);
}

#[tokio::test(start_paused = true)]
async fn stop_drops_connection_when_frame_never_ends() {
    let (mut client, mut backend, mut running) = start(config());
    let frame = masked(0x82, &[3u8; 100], None);
    client.write_all(&frame[..46]).await.unwrap();
    let mut got = vec![0u8; 46];
    backend.read_exact(&mut got).await.unwrap();

    let start = Instant::now();
    running.stop(CloseFrame::new(1001, "gateway shutting down"));
    let out = running.outcome().await;
    assert_eq!(start.elapsed(), config().close_timeout);
    assert_eq!(out.initiator, Initiator::Gateway);
    // The backend never saw a close: just the end of the stream.
    let mut tail = Vec::new();
    backend.read_to_end(&mut tail).await.unwrap();
    assert!(tail.is_empty());
}

#[tokio::test]
async fn client_protocol_violation() {
    let (mut client, mut backend, running) = start_ws(config()).await;
    client.send(Message::text("before")).await.unwrap();
    let bad = Frame::message(
        Bytes::from_static(b"?"),
        WsOpCode::Data(Data::Reserved(3)),
        true,
    );
    client.send(Message::Frame(bad)).await.unwrap();

    assert_eq!(next(&mut backend).await, Message::text("before"));
    let backend_task = tokio::spawn(async move { expect_close(&mut backend).await });
    assert_eq!(
        expect_close(&mut client).await,
        (1002, "protocol error".to_owned())
    );
    assert_eq!(
        backend_task.await.unwrap(),
        (1001, "peer protocol error".to_owned())
    );
    let out = running.outcome().await;
    assert_eq!(out.initiator, Initiator::Gateway);
    assert_eq!(out.close, Some(CloseFrame::new(1002, "protocol error")));
    assert_eq!(out.client_to_backend.frames, 1);
    assert_eq!(out.client_to_backend.messages, 1);
}

#[tokio::test]
async fn backend_protocol_violation() {
    let (client, mut backend, running) = start(config());
    let mut client = ws(client, Role::Client).await;
    // A ping longer than 125 bytes: refused before any of it reaches the client.
    let bad = [&[0x89u8, 126, 0, 200][..], &[0u8; 200]].concat();
    backend.write_all(&bad).await.unwrap();

    let to_backend = read_raw_frame(&mut backend).await;
    assert!(to_backend.header().mask.is_some());
    assert_eq!(close_of(&to_backend), (1002, "protocol error".to_owned()));
    assert_eq!(
        expect_close(&mut client).await,
        (1001, "peer protocol error".to_owned())
    );
    let out = running.outcome().await;
    assert_eq!(out.initiator, Initiator::Gateway);
    assert_eq!(out.close, Some(CloseFrame::new(1002, "protocol error")));
    assert_eq!(out.backend_to_client, DirectionStats::default());
}

#[tokio::test(start_paused = true)]
async fn buffering_is_bounded_when_the_backend_stalls() {
    let (mut client, _backend, _running) = start(config());
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = written.clone();
    let writer = tokio::spawn(async move {
        // A 1 MiB frame's header, then its payload, for as long as the relay takes it.
        client
            .write_all(&masked(0x82, &[], Some(1 << 20)))
            .await
            .unwrap();
        let chunk = [0u8; 4096];
        loop {
            client.write_all(&chunk).await.unwrap();
            counter.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let total = written.load(std::sync::atomic::Ordering::Relaxed);
    // Two duplex pipes plus the relay's one buffer, whatever the message size.
    assert!(
        total <= 2 * DUPLEX + MAX_BUF_SIZE,
        "relay buffered too much: {total}"
    );
    assert!(total >= DUPLEX, "relay did not move data: {total}");
    writer.abort();
}

fn limited(from_client: SenderLimits, from_backend: SenderLimits) -> RelayConfig {
    RelayConfig {
        limits: Some(Box::new(MessageLimits {
            from_client,
            from_backend,
        })),
        ..config()
    }
}

fn max_size(max: u64) -> SenderLimits {
    SenderLimits {
        max_size: Some(max),
        rates: Vec::new(),
    }
}

fn rate(messages: u32, drop: bool) -> SenderLimits {
    let messages = std::num::NonZeroU32::new(messages).unwrap();
    let gate = MessageGate::new(messages, Duration::from_secs(3600)).unwrap();
    SenderLimits {
        max_size: None,
        rates: vec![(Arc::new(gate), drop)],
    }
}

#[tokio::test]
async fn a_message_over_the_size_limit_closes_1009_and_never_reaches_the_backend() {
    let config = limited(max_size(1000), SenderLimits::default());
    let (mut client, mut backend, running) = start_ws(config).await;
    client.send(Message::binary(vec![7u8; 1000])).await.unwrap();
    assert_eq!(next(&mut backend).await, Message::binary(vec![7u8; 1000]));
    client.send(Message::binary(vec![8u8; 1001])).await.unwrap();

    let backend_task = tokio::spawn(async move { expect_close(&mut backend).await });
    assert_eq!(
        expect_close(&mut client).await,
        (1009, "message too big".to_owned())
    );
    assert_eq!(
        backend_task.await.unwrap(),
        (1001, "peer message too big".to_owned())
    );
    let out = running.outcome().await;
    assert_eq!(out.close, Some(CloseFrame::new(1009, "message too big")));
    assert_eq!(out.client_to_backend.messages, 1);
    assert_eq!(out.client_to_backend.bytes, 1000);
}

#[tokio::test]
async fn a_huge_message_is_refused_at_its_first_frame_header() {
    let config = RelayConfig {
        // The client never finishes the frame, so its close cannot come: the session
        // ends at the close deadline.
        close_timeout: Duration::from_millis(200),
        ..limited(max_size(1 << 20), SenderLimits::default())
    };
    let (mut client, backend, running) = start(config);
    let mut backend = ws(backend, Role::Server).await;
    // A header announcing 10 GiB and a few bytes of it: the relay refuses it at once,
    // without waiting for (or buffering) the rest.
    let header = masked(0x82, &[], Some(10 << 30));
    client.write_all(&header).await.unwrap();
    client.write_all(&[0u8; 64]).await.unwrap();
    let to_client = read_raw_frame(&mut client).await;
    assert_eq!(close_of(&to_client), (1009, "message too big".to_owned()));
    assert_eq!(
        expect_close(&mut backend).await,
        (1001, "peer message too big".to_owned())
    );
    let out = running.outcome().await;
    assert_eq!(out.close, Some(CloseFrame::new(1009, "message too big")));
    assert_eq!(out.client_to_backend.frames, 0);
}

#[tokio::test]
async fn fragments_count_together_toward_the_size_limit() {
    let config = limited(max_size(100), SenderLimits::default());
    let (mut client, backend, running) = start(config);
    let mut backend = ws(backend, Role::Server).await;
    client
        .write_all(&masked(0x01, &[b'a'; 60], None))
        .await
        .unwrap();
    client
        .write_all(&masked(0x80, &[b'b'; 60], None))
        .await
        .unwrap();
    let to_client = read_raw_frame(&mut client).await;
    assert_eq!(close_of(&to_client), (1009, "message too big".to_owned()));
    assert_eq!(
        expect_close(&mut backend).await,
        (1001, "peer message too big".to_owned())
    );
    client
        .write_all(&masked(0x88, &1009u16.to_be_bytes(), None))
        .await
        .unwrap();
    let out = running.outcome().await;
    assert_eq!(
        out.client_to_backend.frames, 1,
        "the first fragment went through"
    );
    assert_eq!(out.client_to_backend.messages, 0);
}

#[tokio::test]
async fn the_backend_limit_applies_to_the_backend_only() {
    let config = limited(SenderLimits::default(), max_size(10));
    let (mut client, mut backend, running) = start_ws(config).await;
    client
        .send(Message::text("a client message longer than ten"))
        .await
        .unwrap();
    assert_eq!(
        next(&mut backend).await,
        Message::text("a client message longer than ten")
    );
    backend
        .send(Message::text("a backend reply longer than ten"))
        .await
        .unwrap();
    let client_task = tokio::spawn(async move { expect_close(&mut client).await });
    assert_eq!(
        expect_close(&mut backend).await,
        (1009, "message too big".to_owned())
    );
    assert_eq!(
        client_task.await.unwrap(),
        (1001, "peer message too big".to_owned())
    );
    running.outcome().await;
}

#[tokio::test]
async fn a_message_over_the_rate_closes_1008() {
    let config = limited(rate(3, false), SenderLimits::default());
    let (mut client, backend, running) = start_ws(config).await;
    let echoed = echo(backend);
    for i in 0..3 {
        client.send(Message::text(format!("m{i}"))).await.unwrap();
        assert_eq!(next(&mut client).await, Message::text(format!("m{i}")));
    }
    client.send(Message::text("one too many")).await.unwrap();
    assert_eq!(
        expect_close(&mut client).await,
        (1008, "message rate exceeded".to_owned())
    );
    let seen = echoed.await.unwrap();
    assert_eq!(seen.iter().filter(|m| m.is_text()).count(), 3);
    assert!(matches!(seen.last(), Some(Message::Close(Some(c))) if u16::from(c.code) == 1001));
    let out = running.outcome().await;
    assert_eq!(
        out.close,
        Some(CloseFrame::new(1008, "message rate exceeded"))
    );
}

#[tokio::test]
async fn with_drop_a_message_over_the_rate_is_left_out_whole_and_the_session_goes_on() {
    let config = limited(rate(2, true), SenderLimits::default());
    let (mut client, backend, running) = start(config);
    let mut backend = ws(backend, Role::Server).await;
    client.write_all(&masked(0x81, b"m1", None)).await.unwrap();
    client.write_all(&masked(0x81, b"m2", None)).await.unwrap();
    // Over the quota: a fragmented message with a ping between its frames. Its frames
    // are dropped; the ping still passes.
    let mut burst = masked(0x01, b"dropped-", None);
    burst.extend(masked(0x89, b"still here", None));
    burst.extend(masked(0x80, b"whole", None));
    burst.extend(masked(0x82, &[1, 2, 3], None));
    client.write_all(&burst).await.unwrap();
    assert_eq!(next(&mut backend).await, Message::text("m1"));
    assert_eq!(next(&mut backend).await, Message::text("m2"));
    assert_eq!(
        next(&mut backend).await,
        Message::Ping(Bytes::from_static(b"still here"))
    );
    // The backend answered the ping and can still talk to the client.
    backend.send(Message::text("reply")).await.unwrap();
    // The pong and the reply, in whichever order tungstenite wrote them.
    let mut got = Vec::new();
    for _ in 0..2 {
        let frame = read_raw_frame(&mut client).await;
        got.push((frame.header().opcode, frame.payload().to_vec()));
    }
    assert!(got.contains(&(WsOpCode::Control(Control::Pong), b"still here".to_vec())));
    assert!(got.contains(&(WsOpCode::Data(Data::Text), b"reply".to_vec())));
    client
        .write_all(&masked(0x88, &1000u16.to_be_bytes(), None))
        .await
        .unwrap();
    assert_eq!(expect_close(&mut backend).await.0, 1000);
    let out = running.outcome().await;
    assert_eq!(
        out.client_to_backend.messages, 2,
        "dropped messages are not relayed"
    );
    assert_eq!(
        out.client_to_backend.dropped, 2,
        "the fragmented one and the binary one"
    );
}

fn send_timeout(secs: u64) -> RelayConfig {
    RelayConfig {
        send_timeout: Duration::from_secs(secs),
        idle_timeout: Duration::from_secs(3600),
        ..config()
    }
}

/// Sends 16 KiB binary messages (at most 64 MiB) until the relay stops taking them, and
/// returns what arrived meanwhile.
fn flood(ws: Ws) -> JoinHandle<Vec<Message>> {
    let (mut sink, mut stream) = ws.split();
    tokio::spawn(async move {
        let flooding = tokio::spawn(async move {
            for _ in 0..4096 {
                if sink
                    .send(Message::binary(vec![7u8; 16 * 1024]))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        while let Some(Ok(msg)) = stream.next().await {
            seen.push(msg);
        }
        flooding.abort();
        seen
    })
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_dropped_after_the_send_timeout() {
    // The client end is never read: the backend's flood fills the pipes and the relay's
    // buffer, then waits.
    let (_deaf, backend, running) = start(send_timeout(30));
    let started = Instant::now();
    let seen = bounded(flood(ws(backend, Role::Server).await)).await;
    assert_eq!(
        seen.last(),
        Some(&Message::Close(ws_close(1001, "client stopped reading")))
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(30) && took < Duration::from_secs(31),
        "{took:?}"
    );
    let out = running.outcome().await;
    assert_eq!(out.initiator, Initiator::Gateway);
    assert_eq!(
        out.close,
        Some(CloseFrame::new(1001, "client stopped reading"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_backend_that_stops_reading_gives_the_client_1014_after_the_send_timeout() {
    let (client, _deaf, running) = start(send_timeout(30));
    let started = Instant::now();
    let seen = bounded(flood(ws(client, Role::Client).await)).await;
    // tungstenite shows 1014 (unknown to it) as a protocol error; the outcome names it.
    assert!(
        matches!(seen.last(), Some(Message::Close(Some(_)))),
        "{seen:?}"
    );
    let out = running.outcome().await;
    assert!(
        started.elapsed() >= Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        out.close,
        Some(CloseFrame::new(1014, "backend stopped reading"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_is_kept_while_it_takes_something_within_the_send_timeout() {
    const MESSAGES: usize = 16;
    const SIZE: usize = 16 * 1024;
    // Each message: a 4-byte header (16-bit length) and its payload.
    const BYTES: usize = MESSAGES * (SIZE + 4);
    let (mut client, backend, running) = start(send_timeout(30));
    let mut backend = ws(backend, Role::Server).await;
    let (all_read, read) = oneshot::channel::<()>();
    let sender = tokio::spawn(async move {
        for _ in 0..MESSAGES {
            backend
                .send(Message::binary(vec![7u8; SIZE]))
                .await
                .unwrap();
        }
        // Closing starts the close timeout: only once the client has everything.
        read.await.unwrap();
        backend.close(ws_close(1000, "done")).await.unwrap();
        while let Some(Ok(_)) = backend.next().await {}
    });
    let started = Instant::now();
    // 4 KiB every 20 s: far slower than the backend sends, never 30 s without taking some.
    let mut got = vec![0u8; BYTES];
    for chunk in got.chunks_mut(4096) {
        tokio::time::sleep(Duration::from_secs(20)).await;
        client.read_exact(chunk).await.unwrap();
    }
    assert!(
        started.elapsed() > Duration::from_secs(1200),
        "{:?}",
        started.elapsed()
    );
    all_read.send(()).unwrap();
    let mut client = ws(client, Role::Client).await;
    assert_eq!(expect_close(&mut client).await, (1000, "done".to_owned()));
    sender.await.unwrap();
    let out = running.outcome().await;
    assert_eq!(out.initiator, Initiator::Backend);
    assert_eq!(out.backend_to_client.messages, MESSAGES as u64);
}
