//! Connect + relay phases for plain HTTP: stream the request to the backend and stream its
//! response back. Bodies are never buffered whole.
//!
//! Backend HTTP/1 connections live on the worker thread that serves their client connections,
//! without a lock or a hash lookup on the way. A client connection's first [`SHARED_FIRST`]
//! requests, and requests beyond its share, take one of the thread's shared connections
//! ([`shared`]): the most recent idle one to the target, else a fresh one, handed back as
//! soon as its response head is in and taken again once that response has ended. After that
//! a client connection keeps connections of its own ([`Pinned`], in its [`ConnInfo`]): one
//! for an HTTP/1 client, which sends one request at a time, up to [`H2_OWN`] for an HTTP/2
//! client, whose streams run at once — taken from the shared ones, reused for its next
//! requests to the same target, and shared again when the client connection closes. So
//! clients that come and go cost no backend connect each (nor a socket in TIME_WAIT on the
//! gateway), as with nginx's upstream keepalive. One the backend closed while idle is
//! replaced by a fresh one transparently (nothing was sent: neither a retry nor a failure
//! counts).

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use http::{Request, Response, Uri, Version};
use http_body_util::Either;
use hyper::body::{Body as _, Incoming};

use super::after;
use super::connect::{self, Attempts};
use super::exchange::Exchange;
use super::headers::{strip_hop_by_hop, to_backend};
use super::lag_timer::LagTimer;
use super::pipeline::{Body, ConnInfo, Matched};
use crate::error::{ErrorKind, GatewayError};
use crate::telemetry::{BodyProgress, BrokenBody, Counted, TooLarge};
use crate::upstream::pool::{Lease, Outcome, TargetState};
use crate::upstream::replay::{Replay, Returned};
use crate::upstream::{HttpSender, MAX_RESPONSE_HEAD, Upstream, UpstreamError, UpstreamId};

/// A request as the backend gets it.
type Outgoing = Request<Replay<Counted<Incoming>>>;

/// Backend connections an HTTP/2 client connection keeps of its own; streams beyond that
/// many at once go over shared ones.
const H2_OWN: usize = 16;

/// Requests a client connection sends over the thread's shared connections before it keeps
/// one of its own. Own ones cost fewer instructions per request (36.6k against 37.1k under
/// callgrind, keep-alive GETs) but stay with the client connection while it idles; a
/// client that sends only a few requests holds none.
const SHARED_FIRST: u8 = 8;

/// A client connection's own backend HTTP/1 connections.
///
/// Locked only for a few instructions, never across an await, and only by the tasks of one
/// client connection (one worker thread): in practice never contended.
#[derive(Default)]
pub struct Pinned(Mutex<Own>);

#[derive(Default)]
struct Own {
    /// Requests sent over shared connections before any own one, up to [`SHARED_FIRST`].
    shared: u8,
    idle: Vec<Held>,
    /// Connections out with a request, or being opened.
    lent: usize,
}

/// A backend connection and where it goes.
struct Held {
    target: Arc<TargetState>,
    upstream: UpstreamId,
    sender: HttpSender,
    /// When its last request started.
    used: tokio::time::Instant,
}

/// How long a connection may go unused before a request on it keeps a copy of its head, to
/// go once more on a fresh connection if the backend closes this one as the request goes
/// out (its keep-alive timeout ran out meanwhile). Busy connections never wait this long,
/// so they copy nothing.
const STALE_AFTER: Duration = Duration::from_millis(100);

/// How an attempt reaches its backend.
enum Path<'a> {
    /// One of the client connection's own: idle to this target, or `None` to open one.
    Own(Lent<'a>, Option<Held>),
    /// One of the thread's shared connections, or `None` to open one.
    Shared(Option<Held>),
}

/// A connection out of [`Pinned`]'s share, given back when dropped (kept idle by
/// [`Lent::keep`], or gone with a failed attempt).
struct Lent<'a>(Option<&'a Pinned>);

impl Pinned {
    fn own(&self) -> std::sync::MutexGuard<'_, Own> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection of this client connection's `share` to `lease`'s target if it may keep
    /// one, else a shared one.
    fn checkout(&self, lease: &Lease, upstream: &Upstream, share: usize) -> Path<'_> {
        let to_target = |held: &Held| {
            Arc::ptr_eq(&held.target, lease.target()) && held.upstream == *upstream.id()
        };
        let shared = || shared::take(to_target);
        let mut own = self.own();
        if own.shared < SHARED_FIRST {
            own.shared += 1;
            return Path::Shared(shared());
        }
        let held = match own.idle.iter().position(&to_target) {
            // Moved out whole: its references to the target go back with it (no clones).
            Some(i) => Some(own.idle.swap_remove(i)),
            None if own.idle.len() + own.lent < share => shared(),
            None => return Path::Shared(shared()),
        };
        own.lent += 1;
        Path::Own(Lent(Some(self)), held)
    }
}

impl Held {
    fn new(
        lease: &Lease,
        upstream: &Upstream,
        sender: HttpSender,
        used: tokio::time::Instant,
    ) -> Self {
        Self {
            target: lease.target().clone(),
            upstream: upstream.id().clone(),
            sender,
            used,
        }
    }
}

impl Lent<'_> {
    /// Keeps `held` idle for the next request to its target, giving the loan back under
    /// the same lock.
    fn keep(mut self, held: Held) {
        if let Some(pinned) = self.0.take() {
            let mut own = pinned.own();
            own.lent = own.lent.saturating_sub(1);
            own.idle.push(held);
        }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(pinned) = self.0 {
            let mut own = pinned.own();
            own.lent = own.lent.saturating_sub(1);
        }
    }
}

impl Drop for Pinned {
    /// The client connection is gone: its idle backend connections serve later ones.
    fn drop(&mut self) {
        let own = self.0.get_mut().unwrap_or_else(PoisonError::into_inner);
        shared::keep(std::mem::take(&mut own.idle));
    }
}

/// The backend connections a worker thread shares between its client connections (a
/// connection's tasks run on its worker's thread): handed back after each shared request's
/// response head and by client connections that close. Taken most recent first, and only
/// once ready for a request — a response still streaming keeps its connection from being
/// taken, never makes a request wait — at most [`shared::KEPT`], none unused longer than
/// [`shared::FOR`].
mod shared {
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::time::{Duration, Instant};

    use super::Held;

    /// Connections a thread keeps, over all backends, busy ones included (nginx's upstream
    /// `keepalive 256` in the comparison's configuration is per worker too).
    pub const KEPT: usize = 256;
    /// How long a connection is kept unused (hyper-util's pool keeps an idle one 90 s).
    pub const FOR: Duration = Duration::from_secs(90);

    thread_local! {
        static SHARED: RefCell<VecDeque<(Instant, Held)>> = const { RefCell::new(VecDeque::new()) };
    }

    /// Runs `f` on this thread's connections; `None` while the thread is ending.
    fn with<T>(f: impl FnOnce(&mut VecDeque<(Instant, Held)>) -> T) -> Option<T> {
        SHARED
            .try_with(|shared| {
                shared
                    .try_borrow_mut()
                    .ok()
                    .map(|mut shared| f(&mut shared))
            })
            .ok()
            .flatten()
    }

    /// Shares `held`, dropping the oldest beyond [`KEPT`].
    pub fn keep(held: impl IntoIterator<Item = Held>) {
        // Not one the backend closed, nor one to a target a reload took out.
        let mut open = held
            .into_iter()
            .filter(|held| !held.sender.is_closed() && !held.target.retired().is_cancelled())
            .peekable();
        if open.peek().is_none() {
            return;
        }
        let now = Instant::now();
        with(|shared| {
            expire(shared, now);
            shared.extend(open.map(|held| (now, held)));
            let over = shared.len().saturating_sub(KEPT);
            shared.drain(..over);
        });
    }

    /// The most recent connection that `fits` and is ready for a request, if any; closed
    /// ones (the backend hung up) are dropped on the way.
    pub fn take(fits: impl Fn(&Held) -> bool) -> Option<Held> {
        let now = Instant::now();
        with(|shared| {
            expire(shared, now);
            // From the back; removing one leaves the indices still to visit where they were.
            for at in (0..shared.len()).rev() {
                let Some((_, held)) = shared.get(at) else {
                    continue;
                };
                if !fits(held) {
                    continue;
                }
                if held.sender.is_closed() {
                    shared.remove(at);
                } else if held.sender.is_ready() {
                    return shared.remove(at).map(|(_, held)| held);
                }
            }
            None
        })
        .flatten()
    }

    /// Drops the connections kept unused longer than [`FOR`] (the oldest are at the front).
    fn expire(shared: &mut VecDeque<(Instant, Held)>, now: Instant) {
        let old = shared
            .iter()
            .take_while(|(since, _)| now.duration_since(*since) >= FOR)
            .count();
        shared.drain(..old);
    }
}

impl std::fmt::Debug for Pinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let own = self.own();
        f.debug_struct("Pinned")
            .field("idle", &own.idle.len())
            .field("lent", &own.lent)
            .finish()
    }
}

/// Why an attempt got no response.
enum Failure {
    /// A fresh connection could not be opened.
    Connect(UpstreamError),
    /// The backend connection failed while the request was on it.
    Lost(hyper::Error),
}

impl Failure {
    fn is_connect(&self) -> bool {
        match self {
            Failure::Connect(_) => true,
            Failure::Lost(_) => false,
        }
    }

    fn as_error(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            Failure::Connect(error) => error,
            Failure::Lost(error) => error,
        }
    }
}

/// One attempt on `lease`, started at `asked`: over one of the client connection's own
/// backend connections when it may (`share` of them at most), else a shared one.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps its arguments twice: see `pipeline::handle`"
)]
fn send(
    conn: &ConnInfo,
    share: usize,
    lease: &Lease,
    upstream: &Upstream,
    mut req: Outgoing,
    asked: tokio::time::Instant,
) -> impl Future<Output = Result<Response<Incoming>, Failure>> {
    async move {
        let (lent, idle) = match conn.backend.checkout(lease, upstream, share) {
            Path::Own(lent, idle) => (Some(lent), idle),
            Path::Shared(idle) => (None, idle),
        };
        // Kept for the client connection's next request, or shared again.
        let keep = |held| match lent {
            Some(lent) => lent.keep(held),
            None => shared::keep([held]),
        };
        if let Some(mut held) = idle
            && held.sender.ready().await.is_ok()
        {
            // A request with a safe method and no body on a connection unused for a while
            // goes once more on a fresh connection if the backend closes this one before
            // answering, as nginx retries on a cached connection.
            let again = (asked.saturating_duration_since(held.used) >= STALE_AFTER
                && req.method().is_idempotent()
                && req.body().is_end_stream())
            // Boxed: held inline, it would make every request's future larger.
            .then(|| Box::new(head_of(&req)));
            held.used = asked;
            match held.sender.try_send_request(req).await {
                Ok(response) => {
                    keep(held);
                    return Ok(response);
                }
                // Not written: the backend had closed the idle connection. A fresh one takes it.
                Err(mut error) => match (error.take_message(), again) {
                    (Some(unsent), _) => req = unsent,
                    (None, Some(copy)) => {
                        tracing::debug!(error = %error.error(), "backend closed an idle connection as a request went out; sending it again on a fresh one");
                        req = *copy;
                    }
                    (None, None) => return Err(Failure::Lost(error.into_error())),
                },
            }
        }
        // Boxed: opening a connection is rare, and its future would make every request's larger.
        let mut sender = Box::pin(upstream.connect_http(lease.target()))
            .await
            .map_err(Failure::Connect)?;
        let response = sender.send_request(req).await.map_err(Failure::Lost)?;
        keep(Held::new(lease, upstream, sender, asked));
        Ok(response)
    }
}

/// A copy of a request without a body.
fn head_of(req: &Outgoing) -> Outgoing {
    let mut copy = Request::new(Replay::ended());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// `uri` in origin form (path and query), as HTTP/1 sends it.
fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query()
        .cloned()
        .map_or_else(|| Uri::from_static("/"), Uri::from)
}

/// The connect and relay phases: `req` to one of the route's targets (another if one fails
/// before any of the body went out and retries are allowed), the response head back.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps its arguments twice: see `pipeline::handle`"
)]
pub fn forward(
    conn: &ConnInfo,
    matched: Matched,
    req: Request<Counted<Incoming>>,
    exchange: &mut Exchange,
) -> impl Future<Output = Result<Response<Body>, GatewayError>> {
    async move {
        // Borrowed where the future keeps it: moved out, it would be copied per request.
        let Matched {
            env,
            route,
            target,
            remaining,
        } = &matched;
        let (mut parts, body) = req.into_parts();
        // How many backend connections of its own the client connection may use.
        let share = match parts.version {
            Version::HTTP_2 => H2_OWN,
            _ => 1,
        };
        to_backend(
            &mut parts.headers,
            parts.uri.authority(),
            conn,
            route,
            false,
        )?;
        parts.version = Version::HTTP_11;
        let mut attempts = Attempts::new(route, &parts.headers, target, conn.client);
        let idempotent = parts.method.is_idempotent();
        // Without retries the body goes once; with, it comes back from an attempt that did not
        // send any of it.
        let (mut body, mut returned) = if attempts.can_retry() {
            let (body, returned) = Replay::new(body);
            (body, Some(returned))
        } else {
            (Replay::once(body), None)
        };
        loop {
            let mut lease = attempts.lease(route)?;
            let uri = connect::target_on(&lease, route, target, remaining.as_deref(), false)?;
            // The last attempt takes the head; one that may be followed by another copies it.
            let mut head = if attempts.can_retry() && returned.is_some() {
                let mut copy = Request::new(());
                *copy.method_mut() = parts.method.clone();
                *copy.headers_mut() = parts.headers.clone();
                copy.into_parts().0
            } else {
                let (empty, ()) = Request::new(()).into_parts();
                std::mem::replace(&mut parts, empty)
            };
            head.uri = origin_form(&uri);
            head.version = Version::HTTP_11;
            connect::host_on(&lease, route, &mut head.headers);
            if remaining.is_some() {
                exchange.keep_target(|| uri);
            }

            let asked = tokio::time::Instant::now();
            // A body still to stream times the backend from its end (see `answered_within`).
            let streaming = (!body.is_end_stream()).then(|| exchange.request_body());
            let outcome = {
                let sent = pin!(send(
                    conn,
                    share,
                    &lease,
                    &route.upstream,
                    Request::from_parts(head, body),
                    asked,
                ));
                // An HTTP/1 client waits for one response at a time: its connection's timer.
                let timer = (share == 1).then_some(&conn.response_timer);
                answered_within(sent, asked, env.timeouts.response, streaming, timer).await
            };
            // The body, if this attempt dropped it unsent.
            let again = returned.take().and_then(Returned::take);
            let response = match outcome {
                Err(Late::Backend) => {
                    return Err(connect::timed_out(
                        &mut lease,
                        route,
                        "",
                        env.timeouts.response,
                    ));
                }
                // The client's fault: the backend is not blamed.
                Err(Late::Body) => {
                    return Err(GatewayError::new(
                        ErrorKind::RequestTimeout,
                        format!(
                            "the request body stopped arriving: nothing came for {:?}",
                            env.timeouts.response
                        ),
                    ));
                }
                Ok(Err(error)) => {
                    // The client's body went past a `request_size` limit: the backend's request
                    // was aborted there.
                    if let Some(too_large) = TooLarge::within(error.as_error()) {
                        return Err(GatewayError::new(
                            ErrorKind::PayloadTooLarge,
                            too_large.to_string(),
                        ));
                    }
                    // The client's own body broke: a bad request, not a backend failure.
                    if let Some(broken) = BrokenBody::within(error.as_error()) {
                        return Err(GatewayError::new(ErrorKind::BadRequest, broken.to_string()));
                    }
                    lease.report(Outcome::ConnectFailed);
                    let failed = backend_error(&route.proxy, lease.url().as_str(), &error);
                    // Another target may take it if none of the body went out: after a connect
                    // failure whatever the method, after a lost connection if idempotent.
                    match again {
                        Some(unsent)
                            if attempts.can_retry() && (error.is_connect() || idempotent) =>
                        {
                            (body, returned) = (unsent.0, Some(unsent.1));
                            attempts.retry(&lease, Some(failed));
                            continue;
                        }
                        _ => return Err(failed),
                    }
                }
                Ok(Ok(response)) => response,
            };
            let status = response.status();
            lease.report(Outcome::from_status(status));
            if let Some(unsent) = again
                && attempts.can_retry()
                && attempts.others_left(route)
                && idempotent
                && matches!(status.as_u16(), 502..=504)
            {
                tracing::debug!(proxy = %route.proxy, target = lease.url().as_str(), %status, "retrying on another target");
                (body, returned) = (unsent.0, Some(unsent.1));
                attempts.retry(&lease, None);
                continue;
            }
            let took = asked.elapsed();
            exchange.backend_took = Some(took);
            route.metrics.backend_answered(took);
            if status == http::StatusCode::SWITCHING_PROTOCOLS {
                // Only an upgrade request may be answered with 101, and this was not one.
                return Err(GatewayError::new(
                    ErrorKind::BadGateway,
                    format!(
                        "the backend of API proxy \"{}\" switched protocols on a plain HTTP request",
                        route.proxy
                    ),
                ));
            }
            // The target counts the request as active until its response body ends.
            exchange.lease = Some(lease);
            let (mut parts, body) = response.into_parts();
            if let Some(coding) = strip_hop_by_hop(&mut parts.headers) {
                // Its bytes would reach the client still coded, as if they were the body.
                return Err(GatewayError::new(
                    ErrorKind::BadGateway,
                    format!(
                        "the backend of API proxy \"{}\" answered in the transfer coding {coding:?}, which the gateway does not forward",
                        route.proxy
                    ),
                ));
            }
            return Ok(Response::from_parts(parts, Either::Left(body)));
        }
    }
}

/// Why no answer came in time.
enum Late {
    /// The backend took longer than `response` from the end of the request.
    Backend,
    /// The client's body passed nothing for `response`: the request is at fault.
    Body,
}

/// Waits for `sent`, the backend's answer, for `limit` from the end of the request (`asked`,
/// or the end of its `body` when one is still streaming) — as nginx's `proxy_read_timeout`
/// starts once the request is sent: an upload that keeps arriving is never cut, however long
/// it takes. A body that passes nothing for `limit` (noticed within twice that) is
/// [`Late::Body`] when it waits for the client, as nginx's `client_body_timeout`, and
/// [`Late::Backend`] when the backend stopped taking it.
///
/// `timer`, the client connection's when it waits for one response at a time, spares the
/// timer wheel an update per request.
///
/// `sent` comes pinned by the caller: taken by value and pinned here, it would sit twice in
/// this future (the argument's slot stays reserved), 0.8 KiB more in every request's future,
/// which hyper moves several times per request.
async fn answered_within<F: Future>(
    mut sent: Pin<&mut F>,
    asked: tokio::time::Instant,
    limit: Duration,
    body: Option<&BodyProgress>,
    timer: Option<&LagTimer>,
) -> Result<F::Output, Late> {
    let mut deadline = after(asked, limit);
    let Some(body) = body else {
        let Some(timer) = timer else {
            return tokio::time::timeout_at(deadline, sent)
                .await
                .map_err(|_| Late::Backend);
        };
        let mut late = timer.wait_until(deadline);
        return poll_fn(|cx| match sent.as_mut().poll(cx) {
            Poll::Ready(output) => Poll::Ready(Ok(output)),
            Poll::Pending => Pin::new(&mut late).poll(cx).map(|()| Err(Late::Backend)),
        })
        .await;
    };
    let mut seen = body.bytes();
    loop {
        if let Ok(output) = tokio::time::timeout_at(deadline, sent.as_mut()).await {
            return Ok(output);
        }
        if let Some(ended) = body.ended() {
            let due = after(tokio::time::Instant::from_std(ended), limit);
            if due <= tokio::time::Instant::now() {
                return Err(Late::Backend);
            }
            deadline = due;
        } else {
            let now = body.bytes();
            if now == seen {
                return Err(if body.waiting_for_client() {
                    Late::Body
                } else {
                    Late::Backend
                });
            }
            seen = now;
            deadline = after(deadline, limit);
        }
    }
}

fn backend_error(proxy: &str, backend: &str, error: &Failure) -> GatewayError {
    // The innermost cause says most; an error without a source says it itself.
    let mut inner = error.as_error();
    while let Some(source) = inner.source() {
        inner = source;
    }
    let cause = inner.to_string();
    let what = if inner
        .downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_parse_too_large)
    {
        // The sentence names the limit: keep them together.
        const _: () = assert!(MAX_RESPONSE_HEAD == 64 * 1024);
        "answered with a head over the 64 KiB the gateway reads"
    } else if error.is_connect() {
        "could not be reached"
    } else {
        "failed before answering"
    };
    tracing::warn!(proxy, backend, %cause, "backend {what}");
    GatewayError::new(
        ErrorKind::BadGateway,
        format!("the backend of API proxy \"{proxy}\" {what}: {cause}"),
    )
}
