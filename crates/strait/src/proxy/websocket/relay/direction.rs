//! One direction of a session: its buffer (held only while bytes are in flight), the frame
//! scan that approves bytes for writing, splicing of large payloads, and what the direction
//! knows of its source and destination while the session closes.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::io::AsTcp;
use crate::proxy::websocket::frame::{
    self, EncodedControl, FrameParser, MaskPolicy, OpCode, ProtocolError,
};
use crate::proxy::websocket::splice::Pipe;

use super::limits::{Check, Limited, Limits};
use super::stats::DirectionStats;
use super::{CloseFrame, Initiator, MessageLimits, SenderLimits};

/// What the gateway's keepalive pings carry.
pub(super) const PING_PAYLOAD: &[u8] = b"strait";
/// What a stream's buffer starts at (a small message gets one of its own size).
const BUF_SIZE: usize = 16 * 1024;
/// The most a stream's buffer grows to, doubling from `BUF_SIZE` while reads fill it.
pub(super) const MAX_BUF_SIZE: usize = 256 * 1024;
/// A data frame with at least this much payload left is spliced (plain TCP both sides, Linux).
const SPLICE_MIN: u64 = 64 * 1024;
/// Held bytes up to this size move out of a spare buffer into one of their own size when
/// the session waits (more stay in it: a stream's, whose reads fill it).
const SMALL_HOLD: usize = 1024;
/// Steps one direction may take per poll before yielding to the scheduler (each a read, a
/// write, or a read and the write it allowed).
const OPS_PER_POLL: u32 = 64;

/// The worker thread's spare read buffers (`BUF_SIZE` bytes each). An idle direction reads
/// into one and gives it back once it is idle again; so a small message costs no allocation
/// and no copy (a probe on the stack, copied into a buffer of its own size, cost ~200
/// instructions per message), and an idle session still holds no buffer. Two, as a session's
/// directions may both hold one at once: a direction stops reading after its close and keeps
/// its buffer until the session ends, when both come back.
struct Spare;

/// How many spare buffers a worker keeps: one per direction of a session.
const SPARES: usize = 2;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

impl Spare {
    #[inline]
    fn take() -> Vec<u8> {
        SPARE
            .with_borrow_mut(Vec::pop)
            .unwrap_or_else(|| vec![0; BUF_SIZE])
    }

    #[inline]
    fn give(buf: Vec<u8>) {
        if buf.len() == BUF_SIZE {
            // A session dropped as its thread exits finds the slots gone: the buffer is freed.
            let _ = SPARE.try_with(|spare| {
                if let Ok(mut spare) = spare.try_borrow_mut()
                    && spare.len() < SPARES
                {
                    spare.push(buf);
                }
            });
        }
    }
}

/// How many spare buffers this thread's worker holds.
#[cfg(test)]
pub(super) fn spares() -> usize {
    SPARE.with_borrow(Vec::len)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Client,
    Backend,
}

impl Side {
    pub(super) fn other(self) -> Self {
        match self {
            Self::Client => Self::Backend,
            Self::Backend => Self::Client,
        }
    }

    pub(super) fn initiator(self) -> Initiator {
        match self {
            Self::Client => Initiator::Client,
            Self::Backend => Initiator::Backend,
        }
    }
}

/// What a direction does with the frames it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
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
pub(super) enum Src {
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
pub(super) enum Dst {
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
pub(super) enum Step {
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
pub(super) struct Direction {
    /// `[head, fwd_end)`: approved, to be written; `[fwd_end, scan)`: a header not yet
    /// complete, held back; `[scan, tail)`: read, not yet parsed.
    /// Empty while the direction is idle: the worker's [`Spare`] when bytes arrive, given
    /// back when a read would block with nothing held, so idle sessions hold no buffers.
    pub(super) buf: Vec<u8>,
    /// `buf` is the worker's [`Spare`], lent while bytes are in flight.
    borrowed: bool,
    head: usize,
    fwd_end: usize,
    scan: usize,
    tail: usize,
    /// The last read filled all the space it was given: the next one gets a bigger buffer.
    filled: bool,
    parser: FrameParser,
    pub(super) mode: Mode,
    pub(super) src: Src,
    pub(super) dst: Dst,
    /// The gateway's close for `dst`, written at the next boundary; and how much of it is out.
    pub(super) inject: Option<EncodedControl>,
    pub(super) inject_pos: usize,
    /// The gateway's keepalive ping for `dst`, written at the next boundary; and how much of it is out.
    /// Only the mask key is kept (`None` inside: unmasked, toward the client); the 12-byte
    /// frame is encoded again at each write, so an idle session holds no frame buffer.
    pub(super) ping: Option<Option<[u8; 4]>>,
    ping_pos: usize,
    need_flush: bool,
    /// Relayed something other than a pong since the session last looked (idle tracking).
    pub(super) active: bool,
    /// Read something from `src` since the session last looked (keepalive).
    pub(super) heard: bool,
    /// Wrote something to `dst` since the session last looked (the send timeout).
    pub(super) wrote: bool,
    /// Since when bytes have been waiting for `dst` to take them, with nothing taken.
    pub(super) waiting_since: Option<Instant>,
    pub(super) violation: Option<ProtocolError>,
    /// What the source gets for breaking a limit (`None`: a protocol violation, 1002).
    pub(super) refused: Option<(u16, &'static str)>,
    /// `None` without message limits.
    limits: Option<Box<Limits>>,
    /// The frame under way belongs to a dropped message.
    dropping_frame: bool,
    pub(super) stats: DirectionStats,
    /// Payload spliced out of `src`, not yet all into `dst`; kept while a frame is spliced.
    pub(super) pipe: Option<Pipe>,
    /// No pipe could be made (descriptors run out, say): copy for the rest of the session.
    no_splice: bool,
    /// The last read of `src` found nothing and registered this direction's waker: reading
    /// again before that waker fires would find nothing either, so `step` does not try. The
    /// session clears it when the waker fires.
    pub(super) read_armed: bool,
}

impl Drop for Direction {
    /// A session that ends with its buffer lent gives it back, so the next session's reads
    /// do not allocate (and zero) one of their own.
    fn drop(&mut self) {
        if self.borrowed {
            Spare::give(std::mem::take(&mut self.buf));
        }
    }
}

impl Direction {
    pub(super) fn new(policy: MaskPolicy, extensions: bool, limits: Option<&SenderLimits>) -> Self {
        Self {
            buf: Vec::new(),
            borrowed: false,
            head: 0,
            fwd_end: 0,
            scan: 0,
            tail: 0,
            filled: false,
            parser: FrameParser::new(policy).allow_reserved_bits(extensions),
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
            wrote: false,
            waiting_since: None,
            violation: None,
            refused: None,
            limits: limits.and_then(MessageLimits::boxed),
            dropping_frame: false,
            stats: DirectionStats::default(),
            pipe: None,
            no_splice: false,
            read_armed: false,
        }
    }

    /// Starts with `bytes` already read from the source.
    pub(super) fn seed(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.buf = bytes.to_vec();
            self.tail = bytes.len();
            self.heard = true;
        }
    }

    /// Moves bytes until blocked, idle, or a state change; true on a state change, which the
    /// session must look at before pumping again.
    pub(super) fn pump<R, W>(&mut self, cx: &mut Context<'_>, src: &mut R, dst: &mut W) -> bool
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

    pub(super) fn step<R, W>(&mut self, cx: &mut Context<'_>, src: &mut R, dst: &mut W) -> Step
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
                    self.wrote = true;
                    Step::Progress
                }
                Some(Poll::Pending) => Step::Blocked,
                _ => self.dst_failed(),
            };
        }
        if self.head < self.fwd_end {
            return self.write_buffered(cx, dst);
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
                    self.wrote = true;
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
        if self.read_armed {
            // Nothing has arrived since the last read came back empty.
        } else if let Some(max) = splice {
            if let Some(step) = self.splice_in(cx, src, max) {
                return step;
            }
        } else if self.reading() {
            if self.buf.is_empty() {
                // Idle so far: read into the worker's spare buffer.
                self.buf = Spare::take();
                self.borrowed = true;
            }
            if let Some(space) = self.read_space() {
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
                        return self.after_read(cx, dst);
                    }
                    Poll::Ready(Err(err)) => return self.src_lost(Some(err)),
                    Poll::Pending => {
                        self.read_armed = true;
                        if self.tail == 0 {
                            // Nothing held: give the buffer back until the peer sends again.
                            self.release();
                        }
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

    /// Writes (more of) the approved bytes in the buffer.
    fn write_buffered<W: AsyncWrite + Unpin>(&mut self, cx: &mut Context<'_>, dst: &mut W) -> Step {
        let chunk = self.buf.get(self.head..self.fwd_end).unwrap_or_default();
        match Pin::new(&mut *dst).poll_write(cx, chunk) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => self.dst_failed(),
            Poll::Ready(Ok(n)) => {
                self.head += n;
                self.need_flush = true;
                self.wrote = true;
                Step::Progress
            }
            Poll::Pending => Step::Blocked,
        }
    }

    /// Bytes just came in: scans them and writes what it approved, as the next two steps
    /// would — a read happens only when nothing before the scan in `step` had work, and
    /// it changes none of that — without two more passes through `step` per message.
    fn after_read<W: AsyncWrite + Unpin>(&mut self, cx: &mut Context<'_>, dst: &mut W) -> Step {
        if !self.scanning() {
            return Step::Progress;
        }
        match self.scan_buffered() {
            Step::Progress if self.head < self.fwd_end => self.write_buffered(cx, dst),
            step => step,
        }
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
                self.release();
                self.heard = true;
                self.active = true;
                if let Some(end) = self.parser.skip_payload(n) {
                    self.stats.count(&end);
                }
                Some(Step::Progress)
            }
            Poll::Ready(Err(err)) => Some(self.src_lost(Some(err))),
            Poll::Pending => {
                self.read_armed = true;
                None
            }
        }
    }

    /// The source reached EOF (`None`) or failed to read.
    fn src_lost(&mut self, error: Option<std::io::Error>) -> Step {
        match error {
            None => tracing::debug!(mode = ?self.mode, "websocket relay: peer EOF"),
            Some(err) => tracing::debug!(%err, "websocket relay: read failed"),
        }
        self.src = Src::Gone;
        if self.tail == 0 {
            // Nothing held: the other direction (the close's answer) may read into it next.
            self.release();
        }
        Step::Changed
    }

    /// Bytes read from `src` wait for `dst` to take them.
    pub(super) fn backlogged(&self) -> bool {
        self.head < self.fwd_end || self.pipe.as_ref().is_some_and(|pipe| pipe.held() > 0)
    }

    /// Bytes wait for `dst` to take them: approved ones, or a keepalive ping at a boundary.
    pub(super) fn write_waits(&self) -> bool {
        self.backlogged() || self.ping_pos > 0 || (self.ping.is_some() && !self.mid_frame())
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
                self.wrote = true;
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
            // A stream: the buffer becomes its own.
            self.borrowed = false;
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
    pub(super) fn mid_frame(&self) -> bool {
        self.parser.in_payload() && !self.dropping_frame
    }

    /// Drops the buffer (nothing is held), back to the worker if it is its spare.
    #[inline]
    fn release(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if std::mem::take(&mut self.borrowed) {
            Spare::give(buf);
        }
        self.filled = false;
    }

    /// The session is about to wait: a spare buffer goes back to the worker, the few bytes it
    /// still holds (a partial header, a message the destination has not taken yet) into a
    /// buffer of their own size, so a waiting session holds no more than it must.
    #[inline]
    pub(super) fn settle(&mut self) {
        if self.borrowed && self.tail - self.head <= SMALL_HOLD {
            self.keep_held();
        }
    }

    #[cold]
    fn keep_held(&mut self) {
        let held = self
            .buf
            .get(self.head..self.tail)
            .unwrap_or_default()
            .to_vec();
        self.tail -= self.head;
        self.scan -= self.head;
        self.fwd_end -= self.head;
        self.head = 0;
        self.borrowed = false;
        Spare::give(std::mem::replace(&mut self.buf, held));
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

    pub(super) fn drop_pending(&mut self) {
        self.head = self.fwd_end;
        self.pipe = None;
        self.inject = None;
        self.ping = None;
        self.ping_pos = 0;
        self.need_flush = false;
    }

    pub(super) fn close_to_dst_done(&self) -> bool {
        matches!(self.dst, Dst::CloseSent | Dst::Broken | Dst::Dead)
    }

    pub(super) fn src_done(&self) -> bool {
        self.src != Src::Open
    }

    /// The peer's close frame, once read.
    pub(super) fn peer_close(&self) -> CloseFrame {
        match frame::parse_close_payload(self.parser.close_payload()) {
            Some((code, reason)) => CloseFrame::new(code, reason),
            None => CloseFrame::new(frame::CLOSE_NO_STATUS, ""),
        }
    }
}
