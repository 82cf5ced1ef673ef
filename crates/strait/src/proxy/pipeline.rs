//! The request phases, in order. Each phase is one function; a later policy or metric
//! touches one place:
//!
//! 1. **accept** — the listener hands over a request with its [`ConnInfo`];
//! 2. **match** — normalise the path, find the route, check the method ([`match_route`]);
//! 3. **policies** — the route's chain ([`crate::policy::Chain`]): authentication →
//!    authorization → limits → transforms, once per HTTP request and once per WebSocket
//!    handshake; the consumer it authenticates stays with the request (and the session);
//! 4. **connect + relay** — HTTP forwarding ([`super::forward`]) or the WebSocket
//!    handshake and relay ([`super::websocket::handshake`]);
//! 5. **log** — metrics and the access-log line, once the response body has ended
//!    ([`super::exchange`]); a WebSocket session logs its own line when it ends.
//!
//! Every request carries an [`Exchange`]: its request id and trace context (forwarded to
//! the backend, the id also returned to the client) and what each phase learnt.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::exchange::{Exchange, Logged};
use super::headers::{check_host, from_client, lists_token};
use super::sessions::Registry;
use super::snapshot::{EnvRoutes, Route, Snapshot};
use super::websocket::handshake::ClientSide;
use super::{forward, websocket};
use crate::error::{ErrorKind, GatewayError, MAX_HEADERS};
use crate::policy::Answer;
use crate::routing::{normalize_path, target_path, target_uri};
use crate::telemetry::trace::X_REQUEST_ID;
use crate::telemetry::{Metrics, Tracer, Upgrade};

/// Response bodies: streamed from a backend, or made by the gateway.
pub type Body = Either<Incoming, Full<Bytes>>;

/// State shared by every listener and connection of one gateway.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub shutdown: CancellationToken,
    /// WebSocket session tasks, so shutdown can wait for their close handshakes.
    pub sessions: TaskTracker,
    /// Who owns each live WebSocket session, and how to close it.
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Exports a span per request and per WebSocket session.
    pub tracer: Option<Tracer>,
    /// How long a WebSocket close handshake may take.
    pub close_timeout: Duration,
    /// The worker threads that accept and serve client connections (`None`: the runtime
    /// that started the gateway does).
    pub workers: Option<super::workers::Workers>,
}

/// What the accept phase knows about the client connection.
pub struct ConnInfo {
    /// The gateway's state; here so that each request clones one `Arc`, not two.
    pub shared: Arc<Shared>,
    pub client: SocketAddr,
    /// `client`'s IP address as header text (`X-Forwarded-For`), made once per connection.
    pub client_ip: Option<http::HeaderValue>,
    pub tls: bool,
    pub env: Arc<str>,
    /// The backend connections this client connection keeps of its own.
    pub backend: forward::Pinned,
    /// Times an HTTP/1 client's wait for each response (one at a time).
    pub response_timer: super::lag_timer::LagTimer,
    /// Counts the connection, and the WebSocket session it turns into, on its worker.
    pub serving: Option<Arc<super::workers::Serving>>,
}

/// The outcome of the match phase.
pub struct Matched {
    pub env: Arc<EnvRoutes>,
    pub route: Arc<Route>,
    /// The resolved backend target (`ws://`/`wss://` for WebSocket upgrades), on the first
    /// of the backend's targets.
    pub target: http::Uri,
    /// The remaining path, kept when the backend has several targets: the connect phase
    /// resolves it again on the target it picks.
    pub remaining: Option<String>,
}

/// The phases for one request hyper read.
///
/// This and the request's other steps ([`serve`], [`forward::forward`], the WebSocket
/// handshake's) are functions returning an `async move` block rather than `async fn`s: an
/// `async fn` copies its arguments into locals when first polled and its future keeps room
/// for both, so the request head (224 to 320 bytes) would be copied once more at every step
/// and sit twice in every future (bench/micro-benchmarks.md, "Fewer copies of each request").
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps its arguments twice: see `pipeline::handle`"
)]
pub fn handle(
    conn: Arc<ConnInfo>,
    mut req: Request<Incoming>,
) -> impl Future<Output = Response<Logged>> {
    async move {
        let shared = &*conn.shared;
        let mut exchange = Exchange::begin(&conn, &req);
        exchange.tracer = shared.tracer.clone();
        let served = if is_websocket_upgrade(&req) {
            let client = ClientSide::Hyper(hyper::upgrade::on(&mut req));
            serve_upgrade(shared, &conn, req.map(drop), client, &mut exchange).await
        } else {
            serve(shared, &conn, req, &mut exchange).await
        };
        respond(served, &conn, exchange)
    }
}

/// [`handle`] for a WebSocket upgrade request whose head the listener read itself.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps its arguments twice: see `pipeline::handle`"
)]
pub fn handle_upgrade(
    shared: &Shared,
    conn: &ConnInfo,
    req: Request<()>,
    client: ClientSide,
) -> impl Future<Output = Response<Logged>> {
    async move {
        let mut exchange = Exchange::begin(conn, &req);
        exchange.tracer = shared.tracer.clone();
        let served = serve_upgrade(shared, conn, req, client, &mut exchange).await;
        respond(served, conn, exchange)
    }
}

/// The response as the client gets it: an error made into its JSON answer, with the
/// headers the policies set and the request id.
fn respond(
    served: Result<Response<Body>, GatewayError>,
    conn: &ConnInfo,
    mut exchange: Box<Exchange>,
) -> Response<Logged> {
    let mut response = match served {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(env = %conn.env, method = %exchange.method, path = %exchange.logged_path(), kind = error.kind.as_str(), "{error}");
            error.to_response().map(Either::Right)
        }
    };
    exchange.status = response.status();
    // The policies' removals first; then their own headers (`RateLimit-*`) win over the
    // backend's of the same name, and appended ones (`Vary`) join them. Most requests have
    // none: empty maps are not even taken (extending by one cost ~200 instructions).
    if let Some(effects) = exchange.effects.as_deref_mut() {
        let headers = response.headers_mut();
        for name in effects.response_removed.drain(..) {
            headers.remove(name);
        }
        if !effects.response_headers.is_empty() {
            let added = std::mem::take(&mut effects.response_headers);
            for name in added.keys() {
                headers.remove(name);
            }
            headers.extend(added);
        }
        for (name, value) in &effects.response_appended {
            headers.append(name, value.clone());
        }
    }
    response
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), exchange.trace.request_id.clone());
    response.map(|body| Logged::new(body, exchange))
}

/// Match, policies, connect and relay for a plain HTTP request.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps its arguments twice: see `pipeline::handle`"
)]
fn serve(
    shared: &Shared,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    exchange: &mut Exchange,
) -> impl Future<Output = Result<Response<Body>, GatewayError>> {
    async move {
        let mut matched = match_route(shared, conn, &req, false, exchange)?;
        if let Some(answered) = admit(conn, &mut matched, &mut req, false, exchange).await? {
            return Ok(answered);
        }
        let req = exchange.count_request(req);
        forward::forward(conn, matched, req, exchange).await
    }
}

/// The same for a WebSocket upgrade, whose client connection comes from `client`.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps its arguments twice: see `pipeline::handle`"
)]
fn serve_upgrade(
    shared: &Shared,
    conn: &ConnInfo,
    mut req: Request<()>,
    client: ClientSide,
    exchange: &mut Exchange,
) -> impl Future<Output = Result<Response<Body>, GatewayError>> {
    async move {
        let mut matched = match_route(shared, conn, &req, true, exchange)?;
        if !matched.env.websocket {
            matched.route.metrics.upgrade(Upgrade::RefusedByPolicy);
            return Err(GatewayError::new(
                ErrorKind::WebsocketDisabled,
                format!(
                    "WebSocket is not enabled in environment \"{}\"; set `websocket: true` on that environment to allow upgrades",
                    matched.env.name
                ),
            ));
        }
        if let Err(error) = check_websocket_request(&req) {
            matched.route.metrics.upgrade(Upgrade::RefusedByPolicy);
            return Err(error);
        }
        if let Some(answered) = admit(conn, &mut matched, &mut req, true, exchange).await? {
            return Ok(answered);
        }
        // Boxed, like the policies: the handshake's future is several KiB.
        Box::pin(websocket::handshake::forward(
            shared, conn, matched, req, client, exchange,
        ))
        .await
    }
}

/// The client's hop-by-hop headers out, the trace headers in, then the route's policies;
/// `Some` when a policy answered the request itself.
async fn admit<B>(
    conn: &ConnInfo,
    matched: &mut Matched,
    req: &mut Request<B>,
    websocket: bool,
    exchange: &mut Exchange,
) -> Result<Option<Response<Body>>, GatewayError> {
    from_client(req.headers_mut(), websocket)?;
    // Before the policies, so `$request_id` in a `headers` policy sees it.
    exchange.trace.to_backend(req.headers_mut());
    if matched.route.policies.is_empty() {
        return Ok(None);
    }
    // Boxed: the chain's future is several KiB, and inline it would make every request's
    // future (moved into hyper's connection task) that large.
    let answered = Box::pin(policies(conn, matched, req, websocket, exchange)).await?;
    Ok(answered.map(|answer| {
        let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
        *response.status_mut() = answer.status;
        *response.headers_mut() = answer.headers;
        response
    }))
}

/// Policies phase: the route's chain on the request head. It may remove credentials from
/// the headers and the target; the consumer it authenticates is recorded on the exchange
/// (the access log, and a WebSocket session's owner). A refused handshake counts as
/// refused by policy. `Some` when a policy answered the request itself (a CORS preflight).
async fn policies<B>(
    conn: &ConnInfo,
    matched: &mut Matched,
    req: &mut Request<B>,
    websocket: bool,
    exchange: &mut Exchange,
) -> Result<Option<Answer>, GatewayError> {
    let Matched { route, target, .. } = matched;
    let chain = &route.policies;
    let method = req.method().clone();
    match chain
        .admit_as(&method, req.headers_mut(), target, conn.client, websocket)
        .await
    {
        Ok(mut admission) => {
            let answer = admission.answer.take();
            exchange.admitted(admission, target);
            Ok(answer)
        }
        Err(error) => {
            if websocket {
                route.metrics.upgrade(Upgrade::RefusedByPolicy);
            }
            Err(error)
        }
    }
}

/// Match phase: normalise the path, find the longest matching proxy, check the method.
fn match_route<B>(
    shared: &Shared,
    conn: &ConnInfo,
    req: &Request<B>,
    websocket: bool,
    exchange: &mut Exchange,
) -> Result<Matched, GatewayError> {
    let snapshot = shared.snapshot.load();
    let env = snapshot.env(&conn.env).cloned().ok_or_else(|| {
        GatewayError::new(
            ErrorKind::NoRoute,
            format!("environment \"{}\" is not configured", conn.env),
        )
    })?;
    exchange.env = Some(env.clone());
    check_host(req.version(), req.uri().authority(), req.headers())?;
    // HTTP/1's heads stop there as hyper parses them; HTTP/2's limit is in bytes only.
    if req.headers().len() > MAX_HEADERS {
        return Err(GatewayError::new(
            ErrorKind::HeadersTooLarge,
            format!(
                "the request carries {} header fields; the gateway takes at most {MAX_HEADERS}",
                req.headers().len()
            ),
        ));
    }
    // A tunnel names a host, not a path (nginx and Kong do not proxy it either). `Allow`:
    // the standard methods a proxy may accept.
    if req.method() == Method::CONNECT {
        return Err(GatewayError::new(
            ErrorKind::MethodNotAllowed,
            "the gateway does not proxy CONNECT: it routes requests by path, and a CONNECT \
             tunnel names none",
        )
        .with_header(
            header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE"),
        ));
    }
    let raw_path = req.uri().path();
    let path = normalize_path(raw_path).map_err(|e| {
        GatewayError::new(
            ErrorKind::BadRequest,
            format!("the request path {raw_path:?} is not acceptable: {e}"),
        )
    })?;
    let found = env.routes.lookup(&path).ok_or_else(|| {
        GatewayError::new(
            ErrorKind::NoRoute,
            format!("no API proxy serves {path} in environment \"{}\"", env.name),
        )
    })?;
    let route = found.value.clone();
    // Set here, before the route's own errors, so that they are counted as its own.
    exchange.route = Some(route.clone());
    if !route.allows(req.method()) {
        let allowed: Vec<&str> = route.methods.iter().flatten().map(Method::as_str).collect();
        let error = GatewayError::new(
            ErrorKind::MethodNotAllowed,
            format!(
                "API proxy \"{}\" does not accept {} requests; it accepts {}",
                route.proxy,
                req.method(),
                allowed.join(", ")
            ),
        );
        return Err(match http::HeaderValue::from_str(&allowed.join(", ")) {
            Ok(value) => error.with_header(header::ALLOW, value),
            Err(_) => error,
        });
    }
    let query = req.uri().query();
    let target = || target_uri(&route.backend, found.remaining, query, websocket);
    let parsed = match (&route.origin, websocket) {
        // The backend's scheme and authority parsed once; only the path is parsed here.
        (Some((scheme, authority)), false) => {
            let path = target_path(&route.backend, found.remaining, query);
            http::uri::PathAndQuery::try_from(path)
                .ok()
                .and_then(|path| {
                    let mut parts = http::uri::Parts::default();
                    parts.scheme = Some(scheme.clone());
                    parts.authority = Some(authority.clone());
                    parts.path_and_query = Some(path);
                    http::Uri::from_parts(parts).ok()
                })
        }
        // Takes the `String` itself (parsing a `&str` would copy it).
        _ => http::Uri::try_from(target()).ok(),
    };
    // Rebuilt for the error.
    let target = parsed.ok_or_else(|| {
        GatewayError::new(
            ErrorKind::BadRequest,
            format!("the resolved target {:?} is not a valid URI", target()),
        )
    })?;
    exchange.matched(&target);
    let remaining = (route.pool.targets().len() > 1).then(|| found.remaining.to_owned());
    Ok(Matched {
        env,
        route,
        target,
        remaining,
    })
}

/// The rest of a valid opening handshake (RFC 6455 §4.2.1), checked before any policy or
/// backend: HTTP/1.1 (an HTTP/1.0 connection cannot be upgraded), no body (its bytes would
/// reach the backend as frames), version 13, the only one there is (a 426 names it, as §4.4
/// asks), and a key of 16 bytes in base64, once.
fn check_websocket_request(req: &Request<()>) -> Result<(), GatewayError> {
    if req.version() != http::Version::HTTP_11 {
        return Err(GatewayError::new(
            ErrorKind::BadRequest,
            format!(
                "a WebSocket upgrade needs HTTP/1.1; this request is {:?}",
                req.version()
            ),
        ));
    }
    let headers = req.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes() != b"0");
    if has_body {
        return Err(GatewayError::new(
            ErrorKind::BadRequest,
            "a WebSocket upgrade request carries no body: send it without `Content-Length` or `Transfer-Encoding`",
        ));
    }
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    if !matches!((versions.next(), versions.next()), (Some(v), None) if v == "13") {
        return Err(GatewayError::new(
            ErrorKind::UpgradeRequired,
            "this gateway speaks WebSocket version 13 (RFC 6455): send `Sec-WebSocket-Version: 13`",
        )
        .with_header(
            header::SEC_WEBSOCKET_VERSION,
            http::HeaderValue::from_static("13"),
        ));
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let valid = match (keys.next(), keys.next()) {
        (Some(key), None) => {
            use base64::Engine as _;
            // Decoded on the stack: 24 characters hold at most 18 bytes.
            let mut nonce = [0u8; 18];
            key.len() == 24
                && base64::engine::general_purpose::STANDARD
                    .decode_slice(key.as_bytes(), &mut nonce)
                    .is_ok_and(|n| n == 16)
        }
        _ => false,
    };
    if !valid {
        return Err(GatewayError::new(
            ErrorKind::BadRequest,
            "a WebSocket upgrade needs one `Sec-WebSocket-Key` header: 16 random bytes in base64",
        ));
    }
    Ok(())
}

/// An upgrade request in the RFC 6455 sense: GET with `Upgrade: websocket` and `Connection: upgrade`.
pub fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET
        && lists_token(req.headers(), header::UPGRADE, "websocket")
        && lists_token(req.headers(), header::CONNECTION, "upgrade")
}
