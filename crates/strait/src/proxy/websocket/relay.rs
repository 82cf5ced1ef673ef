//! The WebSocket relay: after the handshake, frames flow both ways unaltered.
//!
//! This module owns the relay loop and the closing rules; frame parsing lives in
//! [`super::frame`]. Design:
//! - One future drives both directions by hand-written polling (no `split`, no spawned tasks,
//!   no locks): each stream is polled for reading by one direction and for writing by the
//!   other, in turn, from the same `poll`.
//! - Each direction owns one buffer, held only while bytes are in flight: a small message gets
//!   one of its size, a stream starts at 16 KiB and doubles while reads fill it, up to
//!   256 KiB (fewer, larger reads and writes: the kernel's per-call cost dominates a stream).
//!   Bytes are written out exactly as read; only frame headers are parsed, as they pass, so
//!   the relay always knows whether the stream it writes is at a frame boundary. A direction
//!   reads again only once the other side took everything approved, so backpressure is
//!   natural and nothing grows with message size.
//! - The bytes of a frame header are held back until the header is complete and valid, so a
//!   refused frame never reaches the other side, and the gateway can write its own close
//!   frame at any boundary.
//! - Counters: `frames` counts every relayed frame (control frames included), `messages`
//!   counts data messages completed (a text/binary frame with FIN, or the final continuation
//!   frame); control frames are not messages. `bytes` counts payload bytes. Frames read after
//!   the gateway took over the closing are dropped and not counted.
//!
//! Closing (every path is bounded by `close_timeout` once it starts):
//! - A peer's Close is forwarded, nothing after it is read from that peer, and the other
//!   side's reply is forwarded too; when both passed, both write halves are shut down.
//! - Idle timeout or `stop`: the gateway writes its close to both sides (masked toward the
//!   backend), waits for their replies (not forwarded), then shuts down.
//! - A peer lost (EOF, read or write error) without a Close: the other side gets 1014
//!   (backend lost) or 1001 (client lost), and its reply is awaited. If the lost peer stopped
//!   mid-frame, the other side is just shut down (no clean close is possible).
//! - A protocol violation (see [`super::frame`]; includes wrongly masked frames and broken
//!   fragmentation): 1002 to the offender, 1001 to the other side, whose reply is awaited.
//! - A gateway close waits for the frame under way toward that side to end; if it never
//!   does, the connection is dropped at the deadline.
//!
//! Note: tungstenite (0.28) does not know 1014 and shows it to its users as 1002.

use std::collections::hash_map::RandomState;
use std::future::{Future, poll_fn};
use std::hash::{BuildHasher, Hasher};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::io::AsTcp;
use crate::policy::{MessageGate, MessageLimit, MessageRule, Sender};
use crate::telemetry::histogram::Histogram;

use super::frame::{self, EncodedControl, FrameParser, MaskPolicy, OpCode, ProtocolError};
use super::splice::Pipe;

/// A close frame's code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    pub code: u16,
    pub reason: String,
}

impl CloseFrame {
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// Who started the closing of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    Client,
    Backend,
    Gateway,
}

impl Initiator {
    pub fn as_str(self) -> &'static str {
        match self {
            Initiator::Client => "client",
            Initiator::Backend => "backend",
            Initiator::Gateway => "gateway",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// No frame either way for this long: close 1001 to both sides. Pongs do not count, so
    /// the keepalive's own exchanges do not keep an idle session open.
    pub idle_timeout: Duration,
    /// Keepalive: a side that sent nothing for this long gets a ping from the gateway.
    pub ping_interval: Option<Duration>,
    /// A pinged side that sends nothing within this long is taken as gone: the other side
    /// gets 1014 (backend) or 1001 (client) and the silent one is dropped.
    pub pong_timeout: Duration,
    /// How long to wait for the close handshake (and for a frame in flight to finish) before dropping.
    pub close_timeout: Duration,
    /// Where keepalive round trips are recorded (ping to the side's next frame).
    pub ping_rtt: Option<Histogram>,
    /// What the session's policies allow each side to send (`None`: no limits; boxed, so a
    /// session without them carries 8 bytes).
    pub limits: Option<Box<MessageLimits>>,
}

/// The message limits of a session (`ws_message_size`, `ws_message_rate`), per sender.
#[derive(Debug, Clone, Default)]
pub struct MessageLimits {
    pub from_client: SenderLimits,
    pub from_backend: SenderLimits,
}

#[derive(Debug, Clone, Default)]
pub struct SenderLimits {
    /// The largest message, in bytes (the smallest limit given).
    pub max_size: Option<u64>,
    /// Gates each message must pass, with whether a refused message is dropped (rather
    /// than closing the session).
    pub rates: Vec<(Arc<MessageGate>, bool)>,
}

impl MessageLimits {
    /// The limits a handshake's policies handed it (`None`: none).
    pub fn from_policies<'a>(
        limits: impl IntoIterator<Item = &'a MessageLimit>,
    ) -> Option<Box<Self>> {
        let mut limits = limits.into_iter().peekable();
        limits.peek()?;
        let mut all = Box::new(MessageLimits::default());
        for limit in limits {
            let sender = match limit.from {
                Sender::Client => &mut all.from_client,
                Sender::Backend => &mut all.from_backend,
            };
            match &limit.rule {
                MessageRule::MaxSize(max) => {
                    sender.max_size = Some(sender.max_size.map_or(*max, |m| m.min(*max)));
                }
                MessageRule::Rate { gate, drop } => sender.rates.push((gate.clone(), *drop)),
            }
        }
        Some(all)
    }

    fn boxed(limits: &SenderLimits) -> Option<Box<Limits>> {
        (limits.max_size.is_some() || !limits.rates.is_empty()).then(|| {
            Box::new(Limits {
                rules: limits.clone(),
                message_len: 0,
                dropping: false,
            })
        })
    }
}

/// A direction's limits and where the message under way stands against them.
struct Limits {
    rules: SenderLimits,
    /// Payload bytes of the data message under way, its current frame included.
    message_len: u64,
    /// The message under way is being left out.
    dropping: bool,
}

/// What became of the bytes a direction just parsed, under its message limits.
enum Limited {
    Relay,
    /// Left out: they belong to a dropped message.
    Dropped,
    /// The frame broke a limit: the session is being closed.
    Refused,
}

/// What the limits say about a frame whose header just arrived.
enum Check {
    Pass,
    /// Leave this frame out (it belongs to a dropped message).
    Drop,
    /// Close the session: this code and reason to the sender.
    Refuse(u16, &'static str),
}

impl Limits {
    fn check(&mut self, header: &frame::FrameHeader) -> Check {
        let starts = match header.opcode {
            OpCode::Text | OpCode::Binary => true,
            OpCode::Continuation => false,
            OpCode::Close | OpCode::Ping | OpCode::Pong => return Check::Pass,
        };
        if starts {
            self.message_len = 0;
            self.dropping = false;
        } else if self.dropping {
            return Check::Drop;
        }
        self.message_len = self.message_len.saturating_add(header.payload_len);
        if self
            .rules
            .max_size
            .is_some_and(|max| self.message_len > max)
        {
            return Check::Refuse(CLOSE_TOO_BIG, "message too big");
        }
        if starts {
            for (gate, drop) in &self.rules.rates {
                if !gate.admit() {
                    if *drop {
                        self.dropping = true;
                        return Check::Drop;
                    }
                    return Check::Refuse(CLOSE_POLICY_VIOLATION, "message rate exceeded");
                }
            }
        }
        Check::Pass
    }
}

/// Counters a relay publishes as it runs, for the connection registry: one writer (the
/// relay, after each burst of activity, not per frame), any number of readers, no lock.
#[derive(Debug, Default)]
pub struct LiveStats {
    client_to_backend: AtomicDirection,
    backend_to_client: AtomicDirection,
    /// Milliseconds from [`clock_base`] to the last activity, plus one (0: none yet). A
    /// monotonic offset rather than wall-clock time: the relay already has the instant, and
    /// reading the wall clock per burst cost more than the rest of the bookkeeping.
    last_activity_ms: AtomicU64,
}

/// The instant `LiveStats` counts activity from.
fn clock_base() -> std::time::Instant {
    static BASE: OnceLock<std::time::Instant> = OnceLock::new();
    *BASE.get_or_init(std::time::Instant::now)
}

#[derive(Debug, Default)]
struct AtomicDirection {
    frames: AtomicU64,
    messages: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
}

impl AtomicDirection {
    fn store(&self, stats: &DirectionStats) {
        self.frames.store(stats.frames, Ordering::Relaxed);
        self.messages.store(stats.messages, Ordering::Relaxed);
        self.bytes.store(stats.bytes, Ordering::Relaxed);
        self.dropped.store(stats.dropped, Ordering::Relaxed);
    }

    fn load(&self) -> DirectionStats {
        DirectionStats {
            frames: self.frames.load(Ordering::Relaxed),
            messages: self.messages.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

impl LiveStats {
    pub fn client_to_backend(&self) -> DirectionStats {
        self.client_to_backend.load()
    }

    pub fn backend_to_client(&self) -> DirectionStats {
        self.backend_to_client.load()
    }

    /// When a frame last passed either way (`None`: not yet).
    pub fn last_activity(&self) -> Option<SystemTime> {
        let ms = self
            .last_activity_ms
            .load(Ordering::Relaxed)
            .checked_sub(1)?;
        let at = clock_base().checked_add(Duration::from_millis(ms))?;
        SystemTime::now().checked_sub(std::time::Instant::now().saturating_duration_since(at))
    }

    pub(crate) fn publish(&self, c2b: &DirectionStats, b2c: &DirectionStats, now: Instant) {
        self.client_to_backend.store(c2b);
        self.backend_to_client.store(b2c);
        let ms = now
            .into_std()
            .saturating_duration_since(clock_base())
            .as_millis();
        let ms = u64::try_from(ms).unwrap_or(u64::MAX).saturating_add(1);
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }
}

/// Counters for one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    pub frames: u64,
    pub messages: u64,
    pub bytes: u64,
    /// Data messages left out (`ws_message_rate` with `on_exceed: drop`); not in the others.
    pub dropped: u64,
}

impl DirectionStats {
    /// Counts a frame relayed whole.
    fn count(&mut self, end: &frame::FrameEnd) {
        self.frames += 1;
        self.bytes += end.header.payload_len;
        self.messages += u64::from(end.ends_message);
    }
}

#[derive(Debug, Clone)]
pub struct RelayOutcome {
    /// The close frame that ended the session (None: the connection dropped without one).
    pub close: Option<CloseFrame>,
    pub initiator: Initiator,
    pub client_to_backend: DirectionStats,
    pub backend_to_client: DirectionStats,
}

/// Close codes the gateway sends (RFC 6455 §7.4.1, IANA registry).
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_BAD_GATEWAY: u16 = 1014;

/// What the gateway's keepalive pings carry.
const PING_PAYLOAD: &[u8] = b"strait";
/// What a stream's buffer starts at (a small message gets one of its own size).
const BUF_SIZE: usize = 16 * 1024;
/// The most a stream's buffer grows to, doubling from `BUF_SIZE` while reads fill it.
const MAX_BUF_SIZE: usize = 256 * 1024;
/// A data frame with at least this much payload left is spliced (plain TCP both sides, Linux).
const SPLICE_MIN: u64 = 64 * 1024;
/// The stack buffer an idle direction reads into before it allocates `BUF_SIZE`.
const PROBE_SIZE: usize = 1024;
/// I/O operations one direction may do per poll before yielding to the scheduler.
const OPS_PER_POLL: u32 = 64;

/// Relays an upgraded client connection and an upgraded backend connection until both are
/// closed. `from_client` and `from_backend` are what each side sent right behind the
/// handshake that hyper already read: they are relayed first. `stop` resolving asks the
/// gateway to close both sides with that frame (shutdown, forced disconnects); the caller
/// pins it, so the session's task holds it once.
pub async fn relay<C, B, S>(
    (client, from_client): (C, Bytes),
    (backend, from_backend): (B, Bytes),
    config: &RelayConfig,
    live: &LiveStats,
    mut stop: Pin<&mut S>,
) -> RelayOutcome
where
    C: AsyncRead + AsyncWrite + AsTcp + Unpin + Send,
    B: AsyncRead + AsyncWrite + AsTcp + Unpin + Send,
    S: Future<Output = CloseFrame> + Send,
{
    let first_wake = config
        .ping_interval
        .map_or(config.idle_timeout, |ping| ping.min(config.idle_timeout));
    let mut timer = std::pin::pin!(tokio::time::sleep_until(after(Instant::now(), first_wake)));
    let mut session = Session::new(client, backend, config, live);
    // Consumed here: the bytes may share hyper's whole read buffer, which a session must
    // not keep.
    session.c2b.seed(from_client);
    session.b2c.seed(from_backend);
    let signal = Arc::new(Signal {
        woken: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    let waker = Waker::from(signal.clone());
    poll_fn(|cx| {
        signal.task.register(cx.waker());
        let woken = signal.woken.swap(false, Ordering::AcqRel);
        let wakeups = Wakeups {
            waker: &waker,
            stop: woken,
            timer: woken,
        };
        session.poll(cx, stop.as_mut(), timer.as_mut(), wakeups)
    })
    .await
}

/// Wakes the session for its `stop` future or its timer and notes that it did, so the
/// session polls those two only after one of them woke it (or the timer was re-armed), not
/// at every burst of traffic: polling them each time (a cancellation token's lock, a
/// oneshot, a select over five sources, the timer wheel) cost ~10 % of the relay's
/// instructions per message.
struct Signal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// What one poll of the session may look at besides the two connections.
struct Wakeups<'w> {
    /// Registers `stop` and the timer with the [`Signal`].
    waker: &'w Waker,
    /// `stop` may have resolved.
    stop: bool,
    /// The timer may have fired (or must be polled to register its new deadline).
    timer: bool,
}

/// `base + d`, saturating far in the future instead of overflowing.
fn after(base: Instant, d: Duration) -> Instant {
    base.checked_add(d)
        .or_else(|| base.checked_add(Duration::from_secs(86_400 * 365)))
        .unwrap_or(base)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Backend,
}

impl Side {
    fn other(self) -> Self {
        match self {
            Self::Client => Self::Backend,
            Self::Backend => Self::Client,
        }
    }

    fn initiator(self) -> Initiator {
        match self {
            Self::Client => Initiator::Client,
            Self::Backend => Initiator::Backend,
        }
    }
}

/// What a direction does with the frames it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Relay everything.
    Forward,
    /// Relay the frame under way, then write the pending gateway close at its end.
    Drain,
    /// The destination got its close: parse and drop, watching for the source's Close.
    Discard,
    /// Read nothing more (the source closed, died, or broke the protocol).
    Stopped,
}

/// The source side, as this direction sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    Open,
    /// Its Close frame has been read.
    Closed,
    /// EOF or a read error.
    Gone,
    /// It broke the framing rules.
    Violation,
    /// No longer read: its reply is not awaited.
    Abandoned,
}

/// The destination side, as this direction sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dst {
    Open,
    /// A close frame (the peer's or the gateway's) is written but not yet flushed.
    CloseQueued,
    CloseSent,
    /// Left mid-frame; it will be shut down without a close.
    Broken,
    /// A write failed, or the side is gone.
    Dead,
}

/// Outcome of one step of a direction.
enum Step {
    /// Did I/O; go on.
    Progress,
    /// Changed state the session must look at; go on.
    Changed,
    /// Waiting for I/O (a waker is registered).
    Blocked,
    /// Nothing to do.
    Idle,
}

/// One direction: reads frames from `src`, writes them to `dst`.
struct Direction {
    /// `[head, fwd_end)`: approved, to be written; `[fwd_end, scan)`: a header not yet
    /// complete, held back; `[scan, tail)`: read, not yet parsed.
    /// Empty while the direction is idle: allocated when bytes arrive, released when a read
    /// would block with nothing held, so idle sessions hold no buffers.
    buf: Vec<u8>,
    head: usize,
    fwd_end: usize,
    scan: usize,
    tail: usize,
    /// The last read filled all the space it was given: the next one gets a bigger buffer.
    filled: bool,
    parser: FrameParser,
    mode: Mode,
    src: Src,
    dst: Dst,
    /// The gateway's close for `dst`, written at the next boundary; and how much of it is out.
    inject: Option<EncodedControl>,
    inject_pos: usize,
    /// The gateway's keepalive ping for `dst`, written at the next boundary; and how much of it is out.
    /// Only the mask key is kept (`None` inside: unmasked, toward the client); the 12-byte
    /// frame is encoded again at each write, so an idle session holds no frame buffer.
    ping: Option<Option<[u8; 4]>>,
    ping_pos: usize,
    need_flush: bool,
    /// Relayed something other than a pong since the session last looked (idle tracking).
    active: bool,
    /// Read something from `src` since the session last looked (keepalive).
    heard: bool,
    violation: Option<ProtocolError>,
    /// What the source gets for breaking a limit (`None`: a protocol violation, 1002).
    refused: Option<(u16, &'static str)>,
    /// `None` without message limits.
    limits: Option<Box<Limits>>,
    /// The frame under way belongs to a dropped message.
    dropping_frame: bool,
    stats: DirectionStats,
    /// Payload spliced out of `src`, not yet all into `dst`; kept while a frame is spliced.
    pipe: Option<Pipe>,
    /// No pipe could be made (descriptors run out, say): copy for the rest of the session.
    no_splice: bool,
}

impl Direction {
    fn new(policy: MaskPolicy, limits: Option<&SenderLimits>) -> Self {
        Self {
            buf: Vec::new(),
            head: 0,
            fwd_end: 0,
            scan: 0,
            tail: 0,
            filled: false,
            parser: FrameParser::new(policy),
            mode: Mode::Forward,
            src: Src::Open,
            dst: Dst::Open,
            inject: None,
            inject_pos: 0,
            ping: None,
            ping_pos: 0,
            need_flush: false,
            active: false,
            heard: false,
            violation: None,
            refused: None,
            limits: limits.and_then(MessageLimits::boxed),
            dropping_frame: false,
            stats: DirectionStats::default(),
            pipe: None,
            no_splice: false,
        }
    }

    /// Starts with `bytes` already read from the source.
    fn seed(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.buf = bytes.to_vec();
            self.tail = bytes.len();
            self.heard = true;
        }
    }

    /// Moves bytes until blocked, idle, or a state change; true on a state change, which the
    /// session must look at before pumping again.
    fn pump<R, W>(&mut self, cx: &mut Context<'_>, src: &mut R, dst: &mut W) -> bool
    where
        R: AsyncRead + AsTcp + Unpin,
        W: AsyncWrite + AsTcp + Unpin,
    {
        for _ in 0..OPS_PER_POLL {
            match self.step(cx, src, dst) {
                Step::Progress => {}
                // The session reacts first, then pumps again.
                Step::Changed => return true,
                Step::Blocked | Step::Idle => return false,
            }
        }
        // Budget used: let other tasks run, come back at once.
        cx.waker().wake_by_ref();
        false
    }

    fn step<R, W>(&mut self, cx: &mut Context<'_>, src: &mut R, dst: &mut W) -> Step
    where
        R: AsyncRead + AsTcp + Unpin,
        W: AsyncWrite + AsTcp + Unpin,
    {
        // 0. A ping partly written goes out whole before anything else.
        if self.ping_pos > 0 {
            return self.write_ping(cx, dst);
        }
        // 1. Write approved bytes: spliced ones (read after everything buffered went out),
        // then buffered ones.
        if let Some(pipe) = self.pipe.as_mut().filter(|pipe| pipe.held() > 0) {
            return match dst.as_tcp().map(|tcp| pipe.drain(cx, tcp)) {
                Some(Poll::Ready(Ok(n))) if n > 0 => {
                    self.need_flush = true;
                    Step::Progress
                }
                Some(Poll::Pending) => Step::Blocked,
                _ => self.dst_failed(),
            };
        }
        if self.head < self.fwd_end {
            let chunk = self.buf.get(self.head..self.fwd_end).unwrap_or_default();
            return match Pin::new(&mut *dst).poll_write(cx, chunk) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => self.dst_failed(),
                Poll::Ready(Ok(n)) => {
                    self.head += n;
                    self.need_flush = true;
                    Step::Progress
                }
                Poll::Pending => Step::Blocked,
            };
        }
        // 1b. At a boundary, start the keepalive ping (dropped if a close is due instead).
        if self.ping.is_some() && (self.dst != Dst::Open || self.inject.is_some()) {
            self.ping = None;
        }
        if self.ping.is_some() && !self.mid_frame() {
            return self.write_ping(cx, dst);
        }
        // 2. At a boundary, write the gateway's close.
        if let Some(close) = &self.inject
            && !self.mid_frame()
        {
            if self.dst != Dst::Open {
                // The destination already got (or can no longer get) a close.
                self.inject = None;
                self.after_close_to_dst();
                return Step::Changed;
            }
            let bytes = close.as_bytes();
            let rest = bytes.get(self.inject_pos..).unwrap_or_default();
            return match Pin::new(&mut *dst).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => self.dst_failed(),
                Poll::Ready(Ok(n)) => {
                    self.inject_pos += n;
                    self.need_flush = true;
                    if self.inject_pos >= bytes.len() {
                        self.inject = None;
                        self.dst = Dst::CloseQueued;
                        self.after_close_to_dst();
                        Step::Changed
                    } else {
                        Step::Progress
                    }
                }
                Poll::Pending => Step::Blocked,
            };
        }
        // 3. A close frame is fully written: flush it out.
        if self.dst == Dst::CloseQueued {
            return match Pin::new(&mut *dst).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.need_flush = false;
                    self.dst = Dst::CloseSent;
                    Step::Changed
                }
                Poll::Ready(Err(_)) => self.dst_failed(),
                Poll::Pending => Step::Blocked,
            };
        }
        // 4. Parse what was read.
        if self.scan < self.tail && self.scanning() {
            return self.scan_buffered();
        }
        // 5. Read more, once everything read has been parsed (and everything approved written).
        if self.reading() {
            self.compact();
        }
        let splice = self.splice_len().filter(|_| {
            self.reading() && self.tail == 0 && src.as_tcp().is_some() && dst.as_tcp().is_some()
        });
        if splice.is_none() && self.pipe.as_ref().is_some_and(|pipe| pipe.held() == 0) {
            self.pipe = None;
        }
        if let Some(max) = splice {
            if let Some(step) = self.splice_in(cx, src, max) {
                return step;
            }
        } else if self.reading() && self.buf.is_empty() {
            // Idle so far: probe with a small stack buffer and allocate only if bytes came:
            // just what came when the probe was not filled (a small message, most likely all
            // there is), the full buffer when it was (a stream).
            let mut probe = [MaybeUninit::<u8>::uninit(); PROBE_SIZE];
            let mut rb = ReadBuf::uninit(&mut probe);
            match Pin::new(&mut *src).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let got = rb.filled();
                    if got.is_empty() {
                        return self.src_lost(None);
                    }
                    let size = if got.len() < PROBE_SIZE {
                        got.len()
                    } else {
                        BUF_SIZE
                    };
                    let mut buf = Vec::with_capacity(size);
                    buf.extend_from_slice(got);
                    buf.resize(size, 0);
                    self.buf = buf;
                    self.tail = got.len();
                    self.heard = true;
                    return Step::Progress;
                }
                Poll::Ready(Err(err)) => return self.src_lost(Some(err)),
                Poll::Pending => {}
            }
        } else if self.reading()
            && let Some(space) = self.read_space()
        {
            let room = space.len();
            let mut rb = ReadBuf::new(space);
            match Pin::new(&mut *src).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        return self.src_lost(None);
                    }
                    self.tail += n;
                    self.filled = n == room;
                    self.heard = true;
                    return Step::Progress;
                }
                Poll::Ready(Err(err)) => return self.src_lost(Some(err)),
                Poll::Pending => {
                    if self.tail == 0 {
                        // Nothing held: give the buffer back until the peer sends again.
                        self.buf = Vec::new();
                        self.filled = false;
                    }
                }
            }
        }
        // 6. Nothing more to read now: flush what was written.
        if self.need_flush && self.dst != Dst::Dead {
            return match Pin::new(&mut *dst).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.need_flush = false;
                    Step::Idle
                }
                Poll::Ready(Err(_)) => self.dst_failed(),
                Poll::Pending => Step::Blocked,
            };
        }
        Step::Idle
    }

    /// How much of the frame under way may be spliced (all its payload left): a data frame
    /// relayed, not dropped, with at least `SPLICE_MIN` to go.
    fn splice_len(&self) -> Option<usize> {
        let header = self.parser.header()?;
        let left = self.parser.payload_left();
        let relayed = matches!(self.mode, Mode::Forward | Mode::Drain) && !self.dropping_frame;
        (relayed && !self.no_splice && !header.opcode.is_control() && left >= SPLICE_MIN)
            .then(|| usize::try_from(left).unwrap_or(usize::MAX))
    }

    /// Reads up to `max` payload bytes from `src` into the pipe; `None` when none are there
    /// yet (a wake-up is registered).
    fn splice_in<R: AsTcp>(&mut self, cx: &mut Context<'_>, src: &R, max: usize) -> Option<Step> {
        if self.pipe.is_none() {
            match Pipe::new() {
                Ok(pipe) => self.pipe = Some(pipe),
                Err(err) => {
                    tracing::debug!(%err, "websocket relay: no pipe, copying instead");
                    self.no_splice = true;
                    return Some(Step::Progress);
                }
            }
        }
        let (pipe, tcp) = (self.pipe.as_mut()?, src.as_tcp()?);
        match pipe.fill(cx, tcp, max) {
            Poll::Ready(Ok(0)) => Some(self.src_lost(None)),
            Poll::Ready(Ok(n)) => {
                // Nothing is buffered while a frame is spliced.
                self.buf = Vec::new();
                self.heard = true;
                self.active = true;
                if let Some(end) = self.parser.skip_payload(n) {
                    self.stats.count(&end);
                }
                Some(Step::Progress)
            }
            Poll::Ready(Err(err)) => Some(self.src_lost(Some(err))),
            Poll::Pending => None,
        }
    }

    /// The source reached EOF (`None`) or failed to read.
    fn src_lost(&mut self, error: Option<std::io::Error>) -> Step {
        match error {
            None => tracing::debug!(mode = ?self.mode, "websocket relay: peer EOF"),
            Some(err) => tracing::debug!(%err, "websocket relay: read failed"),
        }
        self.src = Src::Gone;
        Step::Changed
    }

    /// Bytes read from `src` wait for `dst` to take them.
    fn backlogged(&self) -> bool {
        self.head < self.fwd_end || self.pipe.as_ref().is_some_and(|pipe| pipe.held() > 0)
    }

    /// Writes (more of) the pending ping.
    fn write_ping<W: AsyncWrite + Unpin>(&mut self, cx: &mut Context<'_>, dst: &mut W) -> Step {
        let Some(mask) = self.ping else {
            self.ping_pos = 0;
            return Step::Progress;
        };
        let ping = frame::encode_ping(PING_PAYLOAD, mask);
        let rest = ping.as_bytes().get(self.ping_pos..).unwrap_or_default();
        match Pin::new(&mut *dst).poll_write(cx, rest) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => self.dst_failed(),
            Poll::Ready(Ok(n)) => {
                self.ping_pos += n;
                self.need_flush = true;
                if self.ping_pos >= ping.as_bytes().len() {
                    self.ping = None;
                    self.ping_pos = 0;
                }
                Step::Progress
            }
            Poll::Pending => Step::Blocked,
        }
    }

    /// Where the next read goes: the free end of the buffer, grown to `BUF_SIZE` when a
    /// small first read filled it, and doubled (up to `MAX_BUF_SIZE`) after a read that
    /// filled it. `None` when the buffer is full.
    fn read_space(&mut self) -> Option<&mut [u8]> {
        let len = self.buf.len();
        let grow = std::mem::take(&mut self.filled) || self.tail == len;
        if grow && len < MAX_BUF_SIZE {
            self.buf.resize((len * 2).clamp(BUF_SIZE, MAX_BUF_SIZE), 0);
        }
        self.buf.get_mut(self.tail..).filter(|s| !s.is_empty())
    }

    /// Whether to read from the source now: it is open, wanted, and all read bytes are parsed.
    fn reading(&self) -> bool {
        self.src == Src::Open && self.mode != Mode::Stopped && self.scan == self.tail
    }

    /// Whether unparsed bytes may be parsed now.
    fn scanning(&self) -> bool {
        match self.mode {
            Mode::Forward | Mode::Discard => true,
            // At the boundary the gateway's close goes first.
            Mode::Drain => self.mid_frame(),
            Mode::Stopped => false,
        }
    }

    /// Parses `[scan, tail)`, approving (or, in Discard, dropping) whole frames.
    fn scan_buffered(&mut self) -> Step {
        while self.scan < self.tail && self.scanning() {
            let input = self.buf.get(self.scan..self.tail).unwrap_or_default();
            // Where the frame being parsed starts: its header is held back until complete.
            let frame_begin = self.scan - self.parser.held_header_len();
            let started = !self.parser.in_payload();
            match self.parser.advance(input) {
                Err(err) => {
                    // The offending header was held back: `fwd_end` stops right before it.
                    tracing::debug!(%err, "websocket relay: protocol violation");
                    self.violation = Some(err);
                    self.src = Src::Violation;
                    self.mode = Mode::Stopped;
                    self.tail = self.scan;
                    return Step::Changed;
                }
                Ok((n, end)) => {
                    self.scan += n;
                    if self.limits.is_some() && self.mode != Mode::Discard {
                        let header = end.map(|e| e.header).or(self.parser.header());
                        match self.limit(frame_begin, started.then_some(header).flatten(), end) {
                            Limited::Relay => {}
                            Limited::Dropped => continue,
                            Limited::Refused => return Step::Changed,
                        }
                    }
                    let discard = self.mode == Mode::Discard;
                    if discard {
                        self.head = self.scan;
                        self.fwd_end = self.scan;
                    } else {
                        self.fwd_end = self
                            .scan
                            .saturating_sub(self.parser.held_header_len())
                            .max(self.head);
                    }
                    // Activity: any frame under way, and every whole frame but a pong.
                    self.active |= self.parser.in_payload();
                    let Some(end) = end else { continue };
                    self.active |= end.header.opcode != OpCode::Pong;
                    if !discard {
                        self.stats.count(&end);
                    }
                    if end.header.opcode == OpCode::Close {
                        // Nothing after a Close is relayed (RFC 6455 §5.5.1).
                        self.src = Src::Closed;
                        self.mode = Mode::Stopped;
                        self.tail = self.scan;
                        if !discard && self.dst == Dst::Open {
                            self.dst = Dst::CloseQueued;
                        }
                        return Step::Changed;
                    }
                }
            }
        }
        Step::Progress
    }

    /// Applies the message limits to what `advance` just consumed: the bytes from
    /// `frame_begin` to `scan`, `started` holding the header if it was completed by this
    /// call, `end` the frame's end if reached.
    fn limit(
        &mut self,
        frame_begin: usize,
        started: Option<frame::FrameHeader>,
        end: Option<frame::FrameEnd>,
    ) -> Limited {
        let check = match (self.limits.as_mut(), started) {
            (None, _) => return Limited::Relay,
            (Some(limits), Some(header)) => Some(limits.check(&header)),
            (Some(_), None) => None,
        };
        if let Some(check) = check {
            match check {
                Check::Pass => self.dropping_frame = false,
                Check::Drop => {
                    tracing::debug!("websocket relay: message over the rate limit dropped");
                    self.dropping_frame = true;
                }
                Check::Refuse(code, reason) => {
                    // Nothing of the frame was forwarded (its header was held back), nor
                    // will be: the rest is read and dropped, watching for the sender's
                    // reply to the close it gets, until the close deadline.
                    tracing::debug!(code, reason, "websocket relay: message refused");
                    self.refused = Some((code, reason));
                    self.dropping_frame = true;
                    self.cut(frame_begin);
                    self.mode = Mode::Discard;
                    return Limited::Refused;
                }
            }
        }
        if !self.dropping_frame {
            return Limited::Relay;
        }
        self.cut(frame_begin);
        self.active = true;
        if let Some(end) = end {
            self.dropping_frame = false;
            if end.ends_message
                && let Some(limits) = self.limits.as_mut()
            {
                limits.dropping = false;
                self.stats.dropped += 1;
            }
        }
        Limited::Dropped
    }

    /// Cuts `[from, scan)` — parsed, not approved — out of the buffer; what follows moves up.
    fn cut(&mut self, from: usize) {
        self.buf.copy_within(self.scan..self.tail, from);
        self.tail -= self.scan - from;
        self.scan = from;
        self.fwd_end = from.max(self.head);
    }

    /// The stream toward `dst` is inside a frame: the gateway's own frames must wait.
    fn mid_frame(&self) -> bool {
        self.parser.in_payload() && !self.dropping_frame
    }

    /// Moves a held partial header to the front so a read has the whole buffer. Only called
    /// when everything approved is written, so at most 13 bytes move.
    fn compact(&mut self) {
        if self.head == 0 {
            return;
        }
        self.buf.copy_within(self.head..self.tail, 0);
        self.tail -= self.head;
        self.scan -= self.head;
        self.fwd_end -= self.head;
        self.head = 0;
    }

    /// `dst` received its close: stop relaying to it, keep reading the source for its own
    /// Close if it may still send one.
    fn after_close_to_dst(&mut self) {
        self.mode = if self.src == Src::Open {
            Mode::Discard
        } else {
            Mode::Stopped
        };
        // A header held back is dropped with the rest (the parser keeps its own copy).
        self.head = self.scan;
        self.fwd_end = self.scan;
    }

    fn dst_failed(&mut self) -> Step {
        tracing::debug!("websocket relay: write failed");
        self.dst = Dst::Dead;
        self.drop_pending();
        Step::Changed
    }

    fn drop_pending(&mut self) {
        self.head = self.fwd_end;
        self.pipe = None;
        self.inject = None;
        self.ping = None;
        self.ping_pos = 0;
        self.need_flush = false;
    }

    fn close_to_dst_done(&self) -> bool {
        matches!(self.dst, Dst::CloseSent | Dst::Broken | Dst::Dead)
    }

    fn src_done(&self) -> bool {
        self.src != Src::Open
    }

    /// The peer's close frame, once read.
    fn peer_close(&self) -> CloseFrame {
        match frame::parse_close_payload(self.parser.close_payload()) {
            Some((code, reason)) => CloseFrame::new(code, reason),
            None => CloseFrame::new(frame::CLOSE_NO_STATUS, ""),
        }
    }
}

/// The close the other side gets when `side` is lost: 1014 for a backend, 1001 for a client.
fn lost(side: Side, why: &str) -> CloseFrame {
    match side {
        Side::Backend => CloseFrame::new(CLOSE_BAD_GATEWAY, format!("backend {why}")),
        Side::Client => CloseFrame::new(CLOSE_GOING_AWAY, format!("client {why}")),
    }
}

/// A per-relay xorshift64 for mask keys of the gateway's own frames.
struct MaskRng(u64);

impl MaskRng {
    fn seeded() -> Self {
        // RandomState carries per-process random keys (and differs per call); mix in the time.
        let mut h = RandomState::new().build_hasher();
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.write_u128(nanos);
        Self(h.finish() | 1)
    }

    fn key(&mut self) -> [u8; 4] {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        ((x >> 32) as u32).to_ne_bytes()
    }
}

/// Keepalive state of one side.
#[derive(Debug, Clone, Copy)]
struct Keepalive {
    /// When something last arrived from this side.
    heard: Instant,
    /// When the unanswered ping to this side was queued.
    pinged: Option<Instant>,
}

impl Keepalive {
    /// When the keepalive next needs a look: the pong deadline, or when a ping is due.
    fn next(&self, config: &RelayConfig, interval: Duration) -> Instant {
        match self.pinged {
            Some(at) => after(at, config.pong_timeout),
            None => after(self.heard, interval),
        }
    }
}

struct Session<'a, C, B> {
    client: C,
    backend: B,
    config: &'a RelayConfig,
    live: &'a LiveStats,
    client_alive: Keepalive,
    backend_alive: Keepalive,
    c2b: Direction,
    b2c: Direction,
    /// Who started closing, and the close frame that did it.
    first: Option<(Initiator, Option<CloseFrame>)>,
    client_dead: bool,
    backend_dead: bool,
    client_close_noted: bool,
    backend_close_noted: bool,
    client_violation_noted: bool,
    backend_violation_noted: bool,
    /// Set once closing starts: the session ends by then, whatever happens.
    deadline: Option<Instant>,
    last_activity: Instant,
    stop_done: bool,
    shutting_down: bool,
    client_shut: bool,
    backend_shut: bool,
    rng: MaskRng,
}

impl<'a, C, B> Session<'a, C, B>
where
    C: AsyncRead + AsyncWrite + AsTcp + Unpin,
    B: AsyncRead + AsyncWrite + AsTcp + Unpin,
{
    fn new(client: C, backend: B, config: &'a RelayConfig, live: &'a LiveStats) -> Self {
        // Fixed before the first activity it measures.
        clock_base();
        let alive = Keepalive {
            heard: Instant::now(),
            pinged: None,
        };
        Self {
            client,
            backend,
            config,
            live,
            client_alive: alive,
            backend_alive: alive,
            c2b: Direction::new(
                MaskPolicy::Required,
                config.limits.as_ref().map(|l| &l.from_client),
            ),
            b2c: Direction::new(
                MaskPolicy::Forbidden,
                config.limits.as_ref().map(|l| &l.from_backend),
            ),
            first: None,
            client_dead: false,
            backend_dead: false,
            client_close_noted: false,
            backend_close_noted: false,
            client_violation_noted: false,
            backend_violation_noted: false,
            deadline: None,
            last_activity: Instant::now(),
            stop_done: false,
            shutting_down: false,
            client_shut: false,
            backend_shut: false,
            rng: MaskRng::seeded(),
        }
    }

    fn poll<S>(
        &mut self,
        cx: &mut Context<'_>,
        mut stop: Pin<&mut S>,
        mut timer: Pin<&mut Sleep>,
        mut wakeups: Wakeups<'_>,
    ) -> Poll<RelayOutcome>
    where
        S: Future<Output = CloseFrame>,
    {
        let mut signalled = Context::from_waker(wakeups.waker);
        loop {
            if self.shutting_down {
                if self.poll_shutdown(cx).is_ready() {
                    return Poll::Ready(self.outcome());
                }
            } else {
                let mut changed = self.c2b.pump(cx, &mut self.client, &mut self.backend);
                changed |= self.b2c.pump(cx, &mut self.backend, &mut self.client);
                if self.c2b.heard || self.b2c.heard {
                    let now = Instant::now();
                    if std::mem::take(&mut self.c2b.heard) {
                        self.client_alive.heard = now;
                    }
                    if std::mem::take(&mut self.b2c.heard) {
                        self.backend_alive.heard = now;
                    }
                    if self.c2b.active || self.b2c.active {
                        self.c2b.active = false;
                        self.b2c.active = false;
                        self.last_activity = now;
                    }
                    self.live.publish(&self.c2b.stats, &self.b2c.stats, now);
                }
                changed |= self.react();
                if self.handshake_done() {
                    self.shutting_down = true;
                    continue;
                }
                if changed {
                    continue;
                }
                if self.deadline.is_none()
                    && !self.stop_done
                    && std::mem::take(&mut wakeups.stop)
                    && let Poll::Ready(close) = stop.as_mut().poll(&mut signalled)
                {
                    self.stop_done = true;
                    tracing::debug!(code = close.code, "websocket relay: stop requested");
                    self.gateway_close(close);
                    continue;
                }
            }
            // Timers: the idle deadline (re-armed lazily) while open, the close deadline after.
            if let Some(deadline) = self.deadline
                && timer.deadline() != deadline
            {
                timer.as_mut().reset(deadline);
                wakeups.timer = true;
            }
            if !std::mem::take(&mut wakeups.timer)
                || timer.as_mut().poll(&mut signalled).is_pending()
            {
                return Poll::Pending;
            }
            if self.deadline.is_some() {
                tracing::debug!("websocket relay: close timeout, dropping the connection");
                return Poll::Ready(self.outcome());
            }
            let now = Instant::now();
            if self.keepalive(now) {
                // The timer has fired and is not re-armed yet: look at it again.
                wakeups.timer = true;
                continue;
            }
            let idle_at = after(self.last_activity, self.config.idle_timeout);
            if now < idle_at {
                let wake = match self.config.ping_interval {
                    Some(interval) => idle_at
                        .min(self.client_alive.next(self.config, interval))
                        .min(self.backend_alive.next(self.config, interval)),
                    None => idle_at,
                };
                timer.as_mut().reset(wake);
                wakeups.timer = true;
                continue;
            }
            tracing::debug!("websocket relay: idle timeout");
            self.gateway_close(CloseFrame::new(CLOSE_GOING_AWAY, "idle timeout"));
        }
    }

    /// Pings each side that has been silent for the ping interval, and gives up on a side
    /// that left a ping unanswered for the pong timeout. True if the session changed.
    fn keepalive(&mut self, now: Instant) -> bool {
        let Some(interval) = self.config.ping_interval else {
            return false;
        };
        for side in [Side::Client, Side::Backend] {
            // A side is judged only while it could be heard and its ping has gone out:
            // while what it sent waits for the other side to take it (backpressure), the
            // relay does not read it, and a ping still queued behind a frame was not sent.
            let from = self.dir_from(side);
            let backlogged = from.src == Src::Open && from.backlogged();
            let ping_queued = self.dir_to(side).ping.is_some();
            let state = match side {
                Side::Client => &mut self.client_alive,
                Side::Backend => &mut self.backend_alive,
            };
            if backlogged {
                state.heard = now;
                state.pinged = None;
                continue;
            }
            if ping_queued {
                state.pinged = Some(now);
                continue;
            }
            match state.pinged {
                Some(at) if state.heard >= at => {
                    if let Some(rtt) = &self.config.ping_rtt {
                        rtt.observe(state.heard.duration_since(at));
                    }
                    state.pinged = None;
                }
                Some(at) => {
                    if now >= after(at, self.config.pong_timeout) {
                        tracing::debug!(?side, "websocket relay: ping unanswered");
                        let why = "did not answer a ping";
                        self.note_first(Initiator::Gateway, Some(lost(side, why)));
                        self.on_dead(side, why);
                        return true;
                    }
                    continue;
                }
                None => {}
            }
            if now >= after(state.heard, interval) {
                state.pinged = Some(now);
                let mask = (side == Side::Backend).then(|| self.rng.key());
                let dir = self.dir_to(side);
                if dir.dst == Dst::Open && dir.inject.is_none() && dir.ping.is_none() {
                    dir.ping = Some(mask);
                    return true;
                }
            }
        }
        false
    }

    fn dir_from(&mut self, side: Side) -> &mut Direction {
        match side {
            Side::Client => &mut self.c2b,
            Side::Backend => &mut self.b2c,
        }
    }

    fn dir_to(&mut self, side: Side) -> &mut Direction {
        self.dir_from(side.other())
    }

    /// Reacts to what the directions reported; true if anything changed.
    fn react(&mut self) -> bool {
        let mut changed = false;
        for side in [Side::Client, Side::Backend] {
            let (close_noted, violation_noted) = match side {
                Side::Client => (self.client_close_noted, self.client_violation_noted),
                Side::Backend => (self.backend_close_noted, self.backend_violation_noted),
            };
            let src = self.dir_from(side).src;
            if src == Src::Closed && !close_noted {
                match side {
                    Side::Client => self.client_close_noted = true,
                    Side::Backend => self.backend_close_noted = true,
                }
                let close = self.dir_from(side).peer_close();
                tracing::debug!(?side, code = close.code, "websocket relay: close received");
                self.note_first(side.initiator(), Some(close));
                self.start_deadline();
                changed = true;
            }
            let refused = self.dir_from(side).refused.is_some();
            if (src == Src::Violation || refused) && !violation_noted {
                match side {
                    Side::Client => self.client_violation_noted = true,
                    Side::Backend => self.backend_violation_noted = true,
                }
                self.on_violation(side);
                changed = true;
            }
            let dead = match side {
                Side::Client => self.client_dead,
                Side::Backend => self.backend_dead,
            };
            if !dead && (src == Src::Gone || self.dir_to(side).dst == Dst::Dead) {
                self.on_dead(side, "connection lost");
                changed = true;
            }
        }
        changed
    }

    fn note_first(&mut self, initiator: Initiator, close: Option<CloseFrame>) {
        if self.first.is_none() {
            self.first = Some((initiator, close));
        }
    }

    fn start_deadline(&mut self) {
        if self.deadline.is_none() {
            self.deadline = Some(after(Instant::now(), self.config.close_timeout));
        }
    }

    fn encode(&mut self, to: Side, close: &CloseFrame) -> EncodedControl {
        // The gateway is the client toward the backend: its frames there are masked.
        let mask = (to == Side::Backend).then(|| self.rng.key());
        frame::encode_close(close.code, &close.reason, mask)
    }

    /// Queues the gateway's close for `to`, unless it already has (or is getting) one.
    fn queue_close(&mut self, to: Side, close: &CloseFrame) {
        if self.dir_to(to).dst != Dst::Open || self.dir_to(to).inject.is_some() {
            return;
        }
        let encoded = self.encode(to, close);
        let dir = self.dir_to(to);
        dir.inject = Some(encoded);
        dir.inject_pos = 0;
        if dir.mode == Mode::Forward {
            dir.mode = Mode::Drain;
        }
    }

    /// Idle timeout or `stop`: close both sides with `close`.
    fn gateway_close(&mut self, close: CloseFrame) {
        self.queue_close(Side::Client, &close);
        self.queue_close(Side::Backend, &close);
        self.note_first(Initiator::Gateway, Some(close));
        self.start_deadline();
    }

    /// `side` broke the protocol: 1002 to it, 1001 to the other, at their boundaries.
    fn on_violation(&mut self, side: Side) {
        let (code, reason) = self
            .dir_from(side)
            .refused
            .unwrap_or((CLOSE_PROTOCOL_ERROR, "protocol error"));
        let to_violator = CloseFrame::new(code, reason);
        let to_other = CloseFrame::new(CLOSE_GOING_AWAY, format!("peer {reason}"));
        tracing::debug!(?side, err = ?self.dir_from(side).violation, "websocket relay: closing");
        self.queue_close(side, &to_violator);
        self.queue_close(side.other(), &to_other);
        self.note_first(Initiator::Gateway, Some(to_violator));
        self.start_deadline();
    }

    /// `side` hit EOF, failed, or can no longer be written: close the other side cleanly if
    /// its stream is at a boundary (1014 for a lost backend, 1001 for a lost client), else
    /// shut it down.
    fn on_dead(&mut self, side: Side, why: &str) {
        match side {
            Side::Client => self.client_dead = true,
            Side::Backend => self.backend_dead = true,
        }
        let other = side.other();
        // Nothing more is written to `side`; the other side is still read for its reply.
        let toward = self.dir_to(side);
        if matches!(toward.dst, Dst::Open | Dst::CloseQueued) {
            toward.dst = Dst::Dead;
            toward.drop_pending();
        }
        if matches!(toward.mode, Mode::Forward | Mode::Drain) {
            toward.mode = if toward.src == Src::Open {
                Mode::Discard
            } else {
                Mode::Stopped
            };
        }
        // Nothing more is read from `side`.
        let from = self.dir_from(side);
        if from.src == Src::Open {
            from.src = Src::Gone;
        }
        from.mode = Mode::Stopped;
        if from.dst == Dst::Open {
            if from.mid_frame() {
                // Mid-frame: the other stream cannot be closed cleanly.
                tracing::debug!(?side, "websocket relay: peer lost mid-frame");
                from.dst = Dst::Broken;
                from.drop_pending();
                let back = self.dir_to(side);
                if back.src == Src::Open {
                    back.src = Src::Abandoned;
                }
                back.mode = Mode::Stopped;
                self.note_first(side.initiator(), None);
            } else if from.inject.is_none() {
                let close = lost(side, why);
                tracing::debug!(?side, code = close.code, "websocket relay: peer lost");
                self.queue_close(other, &close);
                self.note_first(side.initiator(), Some(close));
            }
        }
        self.start_deadline();
    }

    /// Both sides got a close (or are gone) and both sides' replies are in (or not expected).
    fn handshake_done(&self) -> bool {
        self.c2b.close_to_dst_done()
            && self.b2c.close_to_dst_done()
            && self.c2b.src_done()
            && self.b2c.src_done()
    }

    /// Shuts down the write halves still usable. Errors are ignored: the session is over.
    /// Plain TCP is left as it is: the socket is closed as soon as the relay returns, which
    /// sends the same FIN without a system call of its own (TLS writes its close_notify).
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.client_shut {
            self.client_shut = !matches!(self.b2c.dst, Dst::CloseSent | Dst::Broken)
                || self.client.as_tcp().is_some()
                || Pin::new(&mut self.client).poll_shutdown(cx).is_ready();
        }
        if !self.backend_shut {
            self.backend_shut = !matches!(self.c2b.dst, Dst::CloseSent | Dst::Broken)
                || self.backend.as_tcp().is_some()
                || Pin::new(&mut self.backend).poll_shutdown(cx).is_ready();
        }
        if self.client_shut && self.backend_shut {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn outcome(&self) -> RelayOutcome {
        self.live
            .publish(&self.c2b.stats, &self.b2c.stats, Instant::now());
        let (initiator, close) = self.first.clone().unwrap_or((Initiator::Gateway, None));
        RelayOutcome {
            close,
            initiator,
            client_to_backend: self.c2b.stats,
            backend_to_client: self.b2c.stats,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Both ends are real WebSocket peers (tokio-tungstenite) or raw byte ends over
    //! `tokio::io::duplex`; raw bytes the relay emits are decoded with tungstenite's codec.
    use super::*;

    use std::io::Cursor;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{
        CloseCode, Control, Data, OpCode as WsOpCode,
    };
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameSocket};
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame as WsClose, Role, WebSocketConfig};

    #[tokio::test]
    async fn an_idle_direction_holds_no_buffer() {
        let (mut peer, mut src) = duplex(64 * 1024);
        let (mut dst, mut sink) = duplex(64 * 1024);
        let mut direction = Direction::new(MaskPolicy::Forbidden, None);
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
    async fn a_stream_between_non_tcp_streams_grows_the_buffer_up_to_its_bound() {
        const PAYLOAD: usize = 2 << 20;
        let (mut peer, mut src) = duplex(4 << 20);
        let (mut dst, mut sink) = duplex(4 << 20);
        let mut direction = Direction::new(MaskPolicy::Forbidden, None);
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

        let mut direction = Direction::new(MaskPolicy::Forbidden, None);
        let mut spliced = false;
        let relayed = poll_fn(|cx| {
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
            ping_interval: None,
            pong_timeout: Duration::from_secs(10),
            ping_rtt: None,
            limits: None,
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
    fn start_after(
        config: RelayConfig,
        from_backend: Bytes,
    ) -> (DuplexStream, DuplexStream, Running) {
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
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
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
            close_timeout: Duration::from_secs(5),
            ping_interval: None,
            pong_timeout: Duration::from_secs(10),
            ping_rtt: None,
            limits: None,
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
            close_timeout: Duration::from_secs(5),
            ping_interval: Some(Duration::from_secs(ping)),
            pong_timeout: Duration::from_secs(pong),
            ping_rtt: None,
            limits: None,
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
}
