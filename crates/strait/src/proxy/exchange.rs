//! Log phase: what one request did, recorded once its response body has ended (or was
//! dropped): the metrics, and the access-log line. Body wrappers count the bytes each way
//! as they stream, so nothing is buffered to measure it; the response's also cuts a backend
//! that goes quiet mid-body.

use std::borrow::Cow;
use std::error::Error;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use hyper::body::{Frame, SizeHint};

use super::WaitTimer;
use super::pipeline::{Body, ConnInfo};
use super::snapshot::{EnvRoutes, Route};
use crate::policy::{Admission, Effects};
use crate::telemetry::access::{ClientIp, Format, RequestRecord};
use crate::telemetry::trace::TraceContext;
use crate::telemetry::{BodyProgress, Counted, Tracer};
use crate::upstream::pool::Lease;

pub type BoxError = Box<dyn Error + Send + Sync>;

/// One request on its way through the phases; finished when dropped.
pub struct Exchange {
    started: Instant,
    pub trace: TraceContext,
    pub method: Method,
    version: Version,
    /// Path and query as the client sent them.
    pub uri: Uri,
    pub client: SocketAddr,
    /// The client's address as text (the connection's, made once).
    client_ip: Option<HeaderValue>,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    /// Set by the match phase once the environment is known.
    pub env: Option<Arc<EnvRoutes>>,
    /// Set by the match phase once a proxy matched.
    pub route: Option<Arc<Route>>,
    /// The backend URL the request went to; kept only for a log line that shows it
    /// ([`Exchange::keep_target`]).
    target: Option<Box<Uri>>,
    /// The backend target serving the request, held (counted active there) until the
    /// response body ends.
    pub lease: Option<Lease>,
    /// The consumer an authentication policy identified.
    pub consumer: Option<Arc<str>>,
    /// What the policies left for the response and for the request's life, if anything.
    /// Boxed: most requests have none, and every request writes and moves its record.
    pub effects: Option<Box<Effects>>,
    /// The most request body bytes to forward (`request_size`).
    pub body_limit: Option<u64>,
    /// Until the backend's response head.
    pub backend_took: Option<Duration>,
    pub status: StatusCode,
    /// The request became a WebSocket session (which logs its own line when it ends).
    pub upgraded: bool,
    /// Where this request's span goes.
    pub tracer: Option<Tracer>,
    body: Arc<BodyProgress>,
    /// Counted in flight on `route`'s metrics, until finished.
    in_flight: bool,
    finished: bool,
}

impl Exchange {
    /// Accept phase: what the request is, before anything is decided. Boxed: the record
    /// rides along with the response body, which hyper moves several times per request.
    pub fn begin<B>(conn: &ConnInfo, req: &Request<B>) -> Box<Exchange> {
        let headers = req.headers();
        Box::new(Exchange {
            started: Instant::now(),
            trace: TraceContext::from_request(headers),
            method: req.method().clone(),
            version: req.version(),
            uri: req.uri().clone(),
            client: conn.client,
            client_ip: conn.client_ip.clone(),
            referer: headers.get(header::REFERER).cloned(),
            user_agent: headers.get(header::USER_AGENT).cloned(),
            env: None,
            route: None,
            target: None,
            lease: None,
            consumer: None,
            effects: None,
            body_limit: None,
            backend_took: None,
            status: StatusCode::OK,
            upgraded: false,
            tracer: None,
            body: Arc::default(),
            in_flight: false,
            finished: false,
        })
    }

    /// Match phase: the request, its route already set, resolved to `target` (counted in
    /// flight on its route from now on).
    pub fn matched(&mut self, target: &Uri) {
        if let Some(route) = &self.route {
            route.metrics.request_began();
            self.in_flight = true;
        }
        self.keep_target(|| target.clone());
    }

    /// Policies phase: the request passed, sent as `target`, on behalf of its consumer, with
    /// the headers for its response and what to hold while it lasts.
    pub fn admitted(&mut self, admission: Admission, target: &Uri) {
        self.consumer = admission.consumer.map(|c| c.name.clone());
        let effects = admission.effects;
        self.effects = (!effects.is_empty()).then(|| Box::new(effects));
        self.body_limit = admission.body_limit;
        self.keep_target(|| target.clone());
    }

    /// Keeps the backend URL if this request's log line will show it (JSON access logs
    /// do): otherwise a clone and a drop of a `Uri` per request, for nothing.
    pub fn keep_target(&mut self, target: impl FnOnce() -> Uri) {
        let shown = self
            .env
            .as_ref()
            .and_then(|env| env.access_log.as_ref())
            .is_some_and(|log| log.format == Format::Json);
        if shown {
            self.target = Some(Box::new(target()));
        }
    }

    /// `uri` as logs may show it: the values of query parameters that carry credentials
    /// masked.
    pub fn shown<'u>(&self, uri: &'u str) -> Cow<'u, str> {
        match &self.route {
            Some(route) => route.policies.redact(uri),
            None => Cow::Borrowed(uri),
        }
    }

    /// The path and query as the client sent them, as logs may show them.
    pub fn logged_path(&self) -> Cow<'_, str> {
        self.shown(self.path())
    }

    /// The request body, counting its bytes as they stream to the backend and failing it
    /// past the policies' limit.
    pub fn count_request<B>(&self, req: Request<B>) -> Request<Counted<B>> {
        let progress = self.body.clone();
        req.map(|inner| Counted::new(inner, progress).with_limit(self.body_limit))
    }

    /// How far the request body has streamed.
    pub fn request_body(&self) -> &BodyProgress {
        &self.body
    }

    /// When the request arrived, on the wall clock: read only for a log line or a span,
    /// not for every request.
    pub fn arrived(&self) -> SystemTime {
        arrived_before(self.started.elapsed())
    }

    /// The path and query as the client sent them.
    pub fn path(&self) -> &str {
        self.uri.path_and_query().map_or("/", |pq| pq.as_str())
    }

    fn finish(&mut self, bytes_out: u64) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        if std::mem::take(&mut self.in_flight)
            && let Some(route) = &self.route
        {
            route.metrics.request_ended();
        }
        let Some(env) = &self.env else { return };
        let took = self.started.elapsed();
        let bytes_in = self.body.bytes();
        let metrics = self.route.as_ref().map_or(&env.unmatched, |r| &r.metrics);
        metrics.request_done(&self.method, self.status, took, bytes_in, bytes_out);
        #[cfg(feature = "otlp")]
        if let Some(tracer) = &self.tracer
            && !self.upgraded
        {
            tracer.send(self.span(env, took));
        }
        let Some(log) = &env.access_log else { return };
        if self.upgraded && !log.log_handshake {
            return;
        }
        // Kept only for a JSON line (the combined one shows no backend).
        let target = self.target.as_deref().map(uri_text);
        let target = target.as_deref().map(|t| self.shown(t));
        let path = self.logged_path();
        log.request(&RequestRecord {
            kind: if self.upgraded {
                "websocket_handshake"
            } else {
                "http"
            },
            time: arrived_before(took),
            request_id: self.trace.request_id(),
            trace_id: self.trace.trace_id,
            environment: &env.name,
            proxy: self.route.as_ref().map(|r| &*r.proxy),
            method: self.method.as_str(),
            path: &path,
            version: version_text(self.version),
            status: self.status.as_u16(),
            duration: took,
            backend_duration: self.backend_took,
            bytes_in,
            bytes_out,
            client: ClientIp {
                addr: self.client,
                text: self.client_ip.as_ref().and_then(|v| v.to_str().ok()),
            },
            consumer: self.consumer.as_deref(),
            backend: target.as_deref(),
            referer: self.referer.as_ref().and_then(|v| v.to_str().ok()),
            user_agent: self.user_agent.as_ref().and_then(|v| v.to_str().ok()),
        });
    }
}

/// The wall-clock time `took` ago.
fn arrived_before(took: Duration) -> SystemTime {
    let now = SystemTime::now();
    now.checked_sub(took).unwrap_or(now)
}

/// `uri` as its `Display` writes it, without the formatting machinery (~850 instructions
/// per access-log line).
fn uri_text(uri: &Uri) -> String {
    let path = uri.path_and_query().map_or("", |pq| pq.as_str());
    let mut text = String::with_capacity(
        uri.scheme_str().map_or(0, |s| s.len() + 3)
            + uri.authority().map_or(0, |a| a.as_str().len())
            + path.len(),
    );
    if let Some(scheme) = uri.scheme_str() {
        text.push_str(scheme);
        text.push_str("://");
    }
    if let Some(authority) = uri.authority() {
        text.push_str(authority.as_str());
    }
    text.push_str(path);
    text
}

#[cfg(feature = "otlp")]
impl Exchange {
    /// The request's span: the gateway's hop in the client's trace (or a new one).
    fn span(&self, env: &EnvRoutes, took: Duration) -> crate::telemetry::otlp::Span {
        use crate::telemetry::otlp::{Attr, Span};
        let text = |s: &str| Attr::Text(s.to_owned());
        let mut attributes = vec![
            ("http.request.method", text(self.method.as_str())),
            ("url.path", text(self.uri.path())),
            (
                "http.response.status_code",
                Attr::Int(i64::from(self.status.as_u16())),
            ),
            ("client.address", text(&self.client.ip().to_string())),
            ("strait.environment", text(&env.name)),
            ("strait.request_id", text(self.trace.request_id())),
        ];
        if let Some(route) = &self.route {
            attributes.push(("http.route", text(&route.path)));
            attributes.push(("strait.proxy", text(&route.proxy)));
        }
        if let Some(consumer) = &self.consumer {
            attributes.push(("enduser.id", text(consumer)));
        }
        let start = arrived_before(took);
        Span {
            trace_id: self.trace.trace_id,
            span_id: self.trace.span_id,
            parent_span_id: self.trace.parent_span_id,
            name: self.span_name("HTTP"),
            start,
            end: start.checked_add(took).unwrap_or(start),
            attributes,
            events: Vec::new(),
            error: self.status.is_server_error(),
        }
    }
}

impl Exchange {
    /// `GET /api/*` (method and proxy path), or the method alone when no proxy matched.
    pub fn span_name(&self, what: &str) -> String {
        let what = if what == "HTTP" {
            self.method.as_str()
        } else {
            what
        };
        match &self.route {
            Some(route) => format!("{what} {}", route.path),
            None => what.to_owned(),
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.finish(0);
    }
}

pub fn version_text(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// A response body that finishes its [`Exchange`] when it ends or is dropped, and fails
/// when its backend sends nothing for the environment's `response` timeout between two
/// frames (nginx's `proxy_read_timeout`) while the client sends nothing either: a backend
/// hung mid-body no longer holds its client, and the client connection, for ever.
pub struct Logged {
    inner: Body,
    bytes: u64,
    exchange: Box<Exchange>,
    /// Runs while the backend is quiet.
    quiet: WaitTimer,
    /// The request body's bytes when the timer was set: a backend may answer only once
    /// an upload still arriving has ended, so the timer starts again while it grows.
    quiet_upload: u64,
}

/// The backend sent nothing of its response body for this long.
#[derive(Debug, thiserror::Error)]
#[error("the backend sent nothing of its response body for {0:?}")]
pub struct BackendQuiet(Duration);

impl Logged {
    pub fn new(inner: Body, exchange: Box<Exchange>) -> Self {
        Logged {
            inner,
            bytes: 0,
            exchange,
            quiet: WaitTimer::default(),
            quiet_upload: 0,
        }
    }

    /// The body streams from a backend (rather than being made by the gateway).
    pub fn is_backends(&self) -> bool {
        matches!(self.inner, http_body_util::Either::Left(_))
    }

    /// The body is waiting for its backend: the timer starts (once per wait) and fails the
    /// body when it fires.
    fn poll_quiet(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(limit) = self.exchange.env.as_ref().map(|env| env.timeouts.response) else {
            return Poll::Pending;
        };
        loop {
            if !self.quiet.waiting() {
                self.quiet_upload = self.exchange.request_body().bytes();
            }
            ready!(self.quiet.poll_expired(cx, limit));
            if self.exchange.request_body().bytes() == self.quiet_upload {
                tracing::debug!(?limit, path = %self.exchange.logged_path(), "backend quiet mid-body: response cut");
                return Poll::Ready(Some(Err(Box::new(BackendQuiet(limit)))));
            }
            self.quiet.end();
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.exchange.finish(self.bytes);
    }
}

impl hyper::body::Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.quiet.end();
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => this.exchange.finish(this.bytes),
            Poll::Pending => return this.poll_quiet(cx),
            // The status line may be out already: the access log keeps it, this says why
            // the body is short (as nginx's "upstream prematurely closed connection").
            Poll::Ready(Some(Err(error))) => tracing::warn!(
                proxy = this.exchange.route.as_ref().map_or("-", |r| &*r.proxy),
                path = %this.exchange.logged_path(),
                bytes_sent = this.bytes,
                %error,
                "the backend's response body broke off: the client's response is cut short"
            ),
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `uri_text` writes what `Display` does, whatever parts the URI has.
    #[test]
    fn uri_text_is_the_display_text() {
        for text in [
            "http://backend:8080/api/v1/users?id=7&x=%20",
            "https://backend",
            "ws://127.0.0.1:9/chat",
            "/only/a/path?q",
            "/",
            "backend.example:443",
            "*",
        ] {
            let uri: Uri = text.parse().unwrap();
            assert_eq!(uri_text(&uri), uri.to_string(), "{text}");
        }
    }
}
