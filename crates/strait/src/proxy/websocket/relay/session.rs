//! A session: both directions driven from one `poll`, the idle and keepalive timers, and
//! the closing rules (see the parent module).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, SystemTime};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

use crate::io::AsTcp;
use crate::proxy::websocket::frame::{self, EncodedControl, MaskPolicy};

use super::direction::{Direction, Dst, Mode, Side, Src};
use super::stats::clock_base;
use super::{
    CLOSE_BAD_GATEWAY, CLOSE_GOING_AWAY, CLOSE_PROTOCOL_ERROR, CloseFrame, Initiator, LiveStats,
    RelayConfig, RelayOutcome,
};
use crate::proxy::after;

/// Wakes the session and notes what woke it: its `stop` future or its timer ([`EVENTS`]),
/// or what one direction waits for ([`C2B`], [`B2C`]: a read that found nothing, a write
/// that did not fit). The session then polls `stop` and the timer only after they woke it,
/// and reads a side again only after its direction was woken: polling each source at every
/// burst of traffic (a cancellation token's lock, the timer wheel, a read that is sure to
/// find nothing) cost over 10 % of the relay's instructions per message.
///
/// The task's waker is kept, not taken at each wake-up: a relay is one task whose waker
/// never changes, and taking it back and registering it again cost five atomic
/// read-modify-writes per relayed message (~5 ns each). A poll with another waker (a
/// session polled by some other future) registers that one in `other` as well.
pub(super) struct Signal {
    woken: AtomicU8,
    task: OnceLock<Waker>,
    other: AtomicWaker,
    other_used: AtomicBool,
}

const EVENTS: u8 = 1;
const C2B: u8 = 2;
const B2C: u8 = 4;

impl Signal {
    /// A signal that reports everything as woken (the first poll looks at every source), and
    /// its three wakers: events, client to backend, backend to client. Boxed together: held
    /// inline, they made every session's task a size class larger (idle: 3.9 -> 4.4 KiB).
    pub(super) fn new() -> (Arc<Self>, Box<[Waker; 3]>) {
        let signal = Arc::new(Self {
            woken: AtomicU8::new(EVENTS | C2B | B2C),
            task: OnceLock::new(),
            other: AtomicWaker::new(),
            other_used: AtomicBool::new(false),
        });
        let direction = |bit| {
            Waker::from(Arc::new(DirectionWaker {
                signal: signal.clone(),
                bit,
            }))
        };
        let wakers = Box::new([Waker::from(signal.clone()), direction(C2B), direction(B2C)]);
        (signal, wakers)
    }

    /// Registers the task's waker and takes what woke it since the last poll.
    pub(super) fn wakeups<'w>(&self, cx: &Context<'_>, wakers: &'w [Waker; 3]) -> Wakeups<'w> {
        // Registered before the bits are taken: a wake-up in between is not lost.
        let task = self.task.get_or_init(|| cx.waker().clone());
        if !task.will_wake(cx.waker()) {
            self.other.register(cx.waker());
            self.other_used.store(true, Ordering::Release);
        }
        let woken = self.woken.swap(0, Ordering::AcqRel);
        let [waker, c2b, b2c] = wakers;
        Wakeups {
            waker,
            c2b,
            b2c,
            woken,
            stop: woken & EVENTS != 0,
            timer: woken & EVENTS != 0,
        }
    }

    fn note(&self, bit: u8) {
        self.woken.fetch_or(bit, Ordering::AcqRel);
        if let Some(task) = self.task.get() {
            task.wake_by_ref();
        }
        if self.other_used.load(Ordering::Acquire) {
            self.other.wake();
        }
    }
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.note(EVENTS);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.note(EVENTS);
    }
}

/// The waker of one direction's reads and writes.
struct DirectionWaker {
    signal: Arc<Signal>,
    bit: u8,
}

impl Wake for DirectionWaker {
    fn wake(self: Arc<Self>) {
        self.signal.note(self.bit);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.signal.note(self.bit);
    }
}

/// What one poll of the session may look at besides the two connections.
pub(super) struct Wakeups<'w> {
    /// Registers `stop` and the timer with the [`Signal`].
    pub(super) waker: &'w Waker,
    /// Register each direction's reads and writes.
    c2b: &'w Waker,
    b2c: &'w Waker,
    /// What woke the session (bits of [`Signal::woken`]).
    woken: u8,
    /// `stop` may have resolved.
    pub(super) stop: bool,
    /// The timer may have fired (or must be polled to register its new deadline).
    pub(super) timer: bool,
}

/// The close the other side gets when `side` is lost: 1014 for a backend, 1001 for a client.
fn lost(side: Side, why: &str) -> CloseFrame {
    match side {
        Side::Backend => CloseFrame::new(CLOSE_BAD_GATEWAY, format!("backend {why}")),
        Side::Client => CloseFrame::new(CLOSE_GOING_AWAY, format!("client {why}")),
    }
}

/// Writes `bytes` and flushes them, each tried once.
fn write_once<S: AsyncWrite + Unpin>(io: &mut S, cx: &mut Context<'_>, bytes: &[u8]) {
    if let Poll::Ready(Ok(n)) = Pin::new(&mut *io).poll_write(cx, bytes)
        && n == bytes.len()
    {
        let _ = Pin::new(io).poll_flush(cx);
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

pub(super) struct Session<'a, C, B> {
    client: C,
    backend: B,
    config: &'a RelayConfig,
    live: &'a LiveStats,
    client_alive: Keepalive,
    backend_alive: Keepalive,
    pub(super) c2b: Direction,
    pub(super) b2c: Direction,
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
    pub(super) fn new(client: C, backend: B, config: &'a RelayConfig, live: &'a LiveStats) -> Self {
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
                config.extensions,
                config.limits.as_ref().map(|l| &l.from_client),
            ),
            b2c: Direction::new(
                MaskPolicy::Forbidden,
                config.extensions,
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

    pub(super) fn poll<S>(
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
        let mut c2b_cx = Context::from_waker(wakeups.c2b);
        let mut b2c_cx = Context::from_waker(wakeups.b2c);
        if wakeups.woken & C2B != 0 {
            self.c2b.read_armed = false;
        }
        if wakeups.woken & B2C != 0 {
            self.b2c.read_armed = false;
        }
        loop {
            if self.shutting_down {
                if self.poll_shutdown(cx).is_ready() {
                    return Poll::Ready(self.outcome());
                }
            } else {
                let mut changed = self
                    .c2b
                    .pump(&mut c2b_cx, &mut self.client, &mut self.backend);
                changed |= self
                    .b2c
                    .pump(&mut b2c_cx, &mut self.backend, &mut self.client);
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
                if self.deadline.is_none() {
                    self.watch_writes(timer.as_mut(), &mut wakeups);
                }
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
                self.c2b.settle();
                self.b2c.settle();
                return Poll::Pending;
            }
            if self.deadline.is_some() {
                tracing::debug!("websocket relay: close timeout, dropping the connection");
                self.answer_closes(cx);
                return Poll::Ready(self.outcome());
            }
            let now = Instant::now();
            if self.keepalive(now) {
                // The timer has fired and is not re-armed yet: look at it again.
                wakeups.timer = true;
                continue;
            }
            if let Some(side) = self.stopped_reading(now) {
                tracing::debug!(?side, "websocket relay: send timeout");
                let why = "stopped reading";
                self.note_first(Initiator::Gateway, Some(lost(side, why)));
                self.on_dead(side, why);
                continue;
            }
            let idle_at = after(self.last_activity, self.config.idle_timeout);
            if now < idle_at {
                let mut wake = match self.config.ping_interval {
                    Some(interval) => idle_at
                        .min(self.client_alive.next(self.config, interval))
                        .min(self.backend_alive.next(self.config, interval)),
                    None => idle_at,
                };
                for since in [self.c2b.waiting_since, self.b2c.waiting_since]
                    .into_iter()
                    .flatten()
                {
                    wake = wake.min(after(since, self.config.send_timeout));
                }
                timer.as_mut().reset(wake);
                wakeups.timer = true;
                continue;
            }
            tracing::debug!("websocket relay: idle timeout");
            self.gateway_close(CloseFrame::new(CLOSE_GOING_AWAY, "idle timeout"));
        }
    }

    /// Notes since when each direction's bytes have waited for its destination with nothing
    /// taken, and brings the timer forward to the first such wait's end. The clock is read
    /// only when a wait starts or a partial write restarts it: never on a relay that keeps up.
    fn watch_writes(&mut self, timer: Pin<&mut Sleep>, wakeups: &mut Wakeups<'_>) {
        let mut now = None;
        for dir in [&mut self.c2b, &mut self.b2c] {
            let wrote = std::mem::take(&mut dir.wrote);
            if !dir.write_waits() {
                dir.waiting_since = None;
            } else if wrote || dir.waiting_since.is_none() {
                dir.waiting_since = Some(*now.get_or_insert_with(Instant::now));
            }
        }
        if let Some(now) = now {
            let due = after(now, self.config.send_timeout);
            if timer.deadline() > due {
                timer.reset(due);
                wakeups.timer = true;
            }
        }
    }

    /// A side whose bytes have waited `send_timeout` with nothing taken.
    fn stopped_reading(&self, now: Instant) -> Option<Side> {
        [(&self.c2b, Side::Backend), (&self.b2c, Side::Client)]
            .into_iter()
            .find_map(|(dir, side)| {
                let since = dir.waiting_since?;
                (now >= after(since, self.config.send_timeout)).then_some(side)
            })
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
        // Both directions relaying with nothing to report, as after nearly every message:
        // none of the checks below can fire.
        let relaying =
            |dir: &Direction| dir.src == Src::Open && dir.dst != Dst::Dead && dir.refused.is_none();
        if relaying(&self.c2b) && relaying(&self.b2c) {
            return false;
        }
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

    /// At the close timeout: a side whose close the other never answered gets the gateway's
    /// answer instead (1014 when the backend was silent, 1001 when the client was), in one
    /// attempt to write it, rather than a bare end of stream. Nothing is written inside a
    /// frame or ahead of bytes still waiting for that side.
    fn answer_closes(&mut self, cx: &mut Context<'_>) {
        for side in [Side::Client, Side::Backend] {
            let to = self.dir_to(side);
            let unanswered =
                to.dst == Dst::Open && to.inject.is_none() && !to.mid_frame() && !to.write_waits();
            if !unanswered || self.dir_from(side).src != Src::Closed {
                continue;
            }
            let close = self.encode(side, &lost(side.other(), "did not answer the close"));
            let bytes = close.as_bytes();
            // A write that does not fit at once is given up: the connection closes anyway.
            match side {
                Side::Client => write_once(&mut self.client, cx, bytes),
                Side::Backend => write_once(&mut self.backend, cx, bytes),
            }
        }
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
