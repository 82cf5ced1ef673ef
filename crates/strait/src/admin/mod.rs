//! The admin API: the HTTP surface of the control plane.
//!
//! Owns the admin listener, authentication, routing (method + path segments, no framework),
//! the JSON shapes of requests, answers and errors, and the OpenAPI document generated from
//! the handlers (`GET /openapi.json`). Every operation is one call on [`Control`]; this
//! module may not touch the data plane (`proxy`, `upstream`) or the store directly, and it
//! does not read the environment (the CLI passes the token).
//!
//! Authentication: with a token, every request needs `Authorization: Bearer <token>`
//! (compared in constant time) except `GET /health`, which stays open for load balancers'
//! probes and tells only that the process is up and its mode. Without a token the API only
//! binds to loopback.
//!
//! Layout: `request` parses a request into a [`request::Call`], `routes` runs it (the
//! handlers, with their OpenAPI attributes), `openapi` assembles the document, `error` holds
//! the JSON error shape.

mod client;
mod connections;
mod error;
mod openapi;
mod request;
mod routes;
mod targets;

pub use client::{AdminClient, ClientError, apply_file};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response};
use http_body_util::Full;
use hyper::body::Body;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::Control;
use crate::error::{JsonAnswers, MAX_HEAD_BYTES};
use error::{ApiError, ErrorKind};
use request::{Call, Route};

/// A client that has not sent its request head in this time is dropped.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// On shutdown, in-flight admin requests get this long to finish; then they are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the admin API did not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "refusing to serve the admin API on {addr}: binding the admin API to a non-loopback \
         address without STRAIT_ADMIN_TOKEN is refused at start-up; set STRAIT_ADMIN_TOKEN to a \
         secret, or bind it to 127.0.0.1 or [::1]"
    )]
    Unprotected { addr: SocketAddr },
    #[error(
        "the admin token (STRAIT_ADMIN_TOKEN) must be non-empty printable ASCII without spaces, \
         as it is sent in an Authorization header"
    )]
    BadToken,
    #[error("cannot listen for the admin API on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The admin API, serving until [`AdminServer::shutdown`] (or until dropped, which stops
/// accepting without waiting).
pub struct AdminServer {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// The admin API's socket, bound and checked but not serving yet: binding it before the
/// gateway starts means a refused or busy admin address stops start-up before any
/// environment listens.
pub struct AdminListener {
    tcp: TcpListener,
    local_addr: SocketAddr,
    token: Option<String>,
}

impl AdminListener {
    /// Binds `addr` (port 0 allowed). Refuses a non-loopback address when `token` is
    /// `None`, and a token that cannot travel in an `Authorization` header.
    pub async fn bind(addr: SocketAddr, token: Option<String>) -> Result<Self, AdminError> {
        start_checks(addr, token.as_deref())?;
        let bind = |source| AdminError::Bind { addr, source };
        let tcp = TcpListener::bind(addr).await.map_err(bind)?;
        let local_addr = tcp.local_addr().map_err(bind)?;
        Ok(AdminListener {
            tcp,
            local_addr,
            token,
        })
    }

    /// Starts answering calls on `control`.
    pub fn serve(self, control: Arc<Control>) -> AdminServer {
        let local_addr = self.local_addr;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let app = Arc::new(App {
            control,
            token: self.token,
        });
        tasks.spawn(serve(self.tcp, app, shutdown.clone()));
        tasks.close();
        tracing::info!("admin API listening on http://{local_addr}");
        AdminServer {
            local_addr,
            shutdown,
            tasks,
        }
    }
}

impl AdminServer {
    /// [`AdminListener::bind`], then [`AdminListener::serve`].
    pub async fn start(
        addr: SocketAddr,
        control: Arc<Control>,
        token: Option<String>,
    ) -> Result<AdminServer, AdminError> {
        Ok(AdminListener::bind(addr, token).await?.serve(control))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets in-flight requests finish (at most 10 s), then returns.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.wait().await;
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// What `start` refuses before binding: a bad token, or no token off loopback.
fn start_checks(addr: SocketAddr, token: Option<&str>) -> Result<(), AdminError> {
    match token {
        Some(token) if !valid_token(token) => Err(AdminError::BadToken),
        None if !addr.ip().to_canonical().is_loopback() => Err(AdminError::Unprotected { addr }),
        _ => Ok(()),
    }
}

/// The OpenAPI document of the admin API as JSON (what `GET /openapi.json` serves).
pub fn openapi_json() -> Result<String, serde_json::Error> {
    openapi::document_json()
}

/// What every connection shares.
struct App {
    control: Arc<Control>,
    token: Option<String>,
}

impl App {
    async fn respond<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let (call, result) = match prepare(request, self.token.as_deref()).await {
            Ok((route, call)) => {
                let writes = call.writes();
                let result = routes::execute(&self.control, call).await;
                // A write refused in declarative mode: only the reads are allowed there.
                let result = result.map_err(|error| match error.kind {
                    ErrorKind::ReadOnly => error.with_header(header::ALLOW, route.allow(true)),
                    _ => error,
                });
                (Some(writes), result)
            }
            Err(error) => (None, Err(error)),
        };
        let mut response = result.unwrap_or_else(|error| error.to_response());
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let status = response.status().as_u16();
        if call == Some(true) {
            tracing::info!(%method, path, status, "admin API change");
        } else {
            tracing::debug!(%method, path, status, "admin API call");
        }
        response
    }
}

/// Authenticates (unless the path is `/health`), routes and reads the request.
async fn prepare<B>(request: Request<B>, token: Option<&str>) -> Result<(Route, Call), ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let open = request.uri().path() == "/health";
    if let Some(token) = token
        && !open
    {
        authorize(request.headers(), token)?;
    }
    let route = Route::parse(request.uri().path())?;
    let call = request::call(route.clone(), request).await?;
    Ok((route, call))
}

/// Checks `Authorization: Bearer <token>` (scheme case-insensitive).
fn authorize(headers: &HeaderMap, token: &str) -> Result<(), ApiError> {
    let unauthorized = |message: &str| {
        ApiError::new(ErrorKind::Unauthorized, message)
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "the admin API needs an Authorization: Bearer <token> header with the admin token",
        ));
    };
    let given = value
        .as_bytes()
        .split_at_checked(7)
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|(_, rest)| rest.trim_ascii());
    match given {
        Some(given) if constant_time_eq(given, token.as_bytes()) => Ok(()),
        Some(_) => Err(unauthorized("the bearer token is not the admin token")),
        None => Err(unauthorized(
            "the Authorization header must be Bearer <token> with the admin token",
        )),
    }
}

/// Compares without stopping at the first difference, so the time taken does not tell how
/// much of a guess was right. The length is not secret (it ends the comparison early).
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    let difference = given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

/// A token that can travel in a header and be typed back: visible ASCII, no spaces.
fn valid_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

async fn serve(tcp: TcpListener, app: Arc<App>, shutdown: CancellationToken) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = ended
                    && error.is_panic()
                {
                    tracing::error!(%error, "an admin API connection panicked");
                }
                continue;
            }
            accepted = tcp.accept() => accepted,
        };
        let (stream, client) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                tracing::error!(%error, "admin API cannot accept a connection; retrying shortly");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_connection(
            builder.clone(),
            stream,
            client,
            app.clone(),
            graceful.watcher(),
        ));
    }
    drop(tcp);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "admin API requests outlived the shutdown grace; cutting them");
    }
    connections.shutdown().await;
    tracing::info!("admin API stopped");
}

async fn serve_connection(
    builder: auto::Builder<TokioExecutor>,
    stream: TcpStream,
    client: SocketAddr,
    app: Arc<App>,
    watcher: Watcher,
) {
    let service = service_fn(move |request| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.respond(request).await) }
    });
    // hyper's own answers to requests it cannot parse become JSON errors, like every other.
    let conn = builder.serve_connection(TokioIo::new(JsonAnswers::new(stream)), service);
    if let Err(error) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(%client, %error, "admin API connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, StatusCode};

    fn request(method: Method, uri: &str, authorization: Option<&str>) -> Request<Full<Bytes>> {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(value) = authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        builder.body(Full::new(Bytes::new())).unwrap()
    }

    async fn prepared(
        method: Method,
        uri: &str,
        authorization: Option<&str>,
        token: Option<&str>,
    ) -> Result<Call, ApiError> {
        prepare(request(method, uri, authorization), token)
            .await
            .map(|(_, call)| call)
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"s3cret", b"s3cres"));
        assert!(!constant_time_eq(b"t3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"s3crets", b"s3cret"));
    }

    #[test]
    fn tokens_must_be_printable_without_spaces() {
        assert!(valid_token("abc-DEF_123.~+/="));
        assert!(!valid_token(""));
        assert!(!valid_token("two words"));
        assert!(!valid_token("tab\there"));
        assert!(!valid_token("é"));
    }

    #[test]
    fn bearer_header_is_checked() {
        let headers = |value: &str| {
            let mut map = HeaderMap::new();
            map.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            map
        };
        assert!(authorize(&headers("Bearer s3cret"), "s3cret").is_ok());
        assert!(authorize(&headers("bearer s3cret"), "s3cret").is_ok());
        assert!(authorize(&headers("BEARER   s3cret "), "s3cret").is_ok());
        for wrong in [
            "Bearer s3cre",
            "Bearer s3crett",
            "Bearer",
            "Bearer ",
            "Basic s3cret",
            "s3cret",
            "Bearers3cret",
        ] {
            let error = authorize(&headers(wrong), "s3cret").unwrap_err();
            assert_eq!(error.kind, ErrorKind::Unauthorized, "{wrong}");
            let response = error.to_response();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        }
        let error = authorize(&HeaderMap::new(), "s3cret").unwrap_err();
        assert_eq!(error.kind, ErrorKind::Unauthorized);
        assert_eq!(
            error.to_response().headers()[header::WWW_AUTHENTICATE],
            "Bearer"
        );
    }

    #[tokio::test]
    async fn with_a_token_everything_but_health_needs_it() {
        let token = Some("s3cret");
        assert_eq!(
            prepared(Method::GET, "/health", None, token).await.unwrap(),
            Call::Health
        );
        for (method, uri) in [
            (Method::GET, "/environments"),
            (Method::GET, "/openapi.json"),
            (Method::GET, "/config"),
            (Method::PUT, "/proxies/p/deployments/e"),
            // Unknown routes too: nothing is told before authentication.
            (Method::GET, "/nope"),
            (Method::GET, "/health/"),
        ] {
            let error = prepared(method.clone(), uri, None, token)
                .await
                .unwrap_err();
            assert_eq!(error.kind, ErrorKind::Unauthorized, "{method} {uri}");
            let error = prepared(method.clone(), uri, Some("Bearer wrong!"), token)
                .await
                .unwrap_err();
            assert_eq!(error.kind, ErrorKind::Unauthorized, "{method} {uri}");
        }
        assert_eq!(
            prepared(Method::GET, "/environments", Some("Bearer s3cret"), token)
                .await
                .unwrap(),
            Call::ListEnvironments
        );
        let error = prepared(Method::GET, "/nope", Some("Bearer s3cret"), token)
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::NoRoute);
    }

    #[tokio::test]
    async fn without_a_token_nothing_is_asked() {
        assert_eq!(
            prepared(Method::GET, "/proxies", None, None).await.unwrap(),
            Call::ListProxies
        );
        let error = prepared(Method::PATCH, "/proxies", None, None)
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::MethodNotAllowed);
    }

    #[test]
    fn non_loopback_without_token_is_refused() {
        for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:0", "[::ffff:192.0.2.1]:0"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let error = start_checks(addr, None).unwrap_err();
            assert!(matches!(error, AdminError::Unprotected { .. }));
            assert!(
                error.to_string().contains(
                    "binding the admin API to a non-loopback address without STRAIT_ADMIN_TOKEN is refused at start-up"
                ),
                "{addr}: {error}"
            );
        }
        for addr in [
            "127.0.0.1:0",
            "127.1.2.3:0",
            "[::1]:0",
            "[::ffff:127.0.0.1]:0",
        ] {
            assert!(start_checks(addr.parse().unwrap(), None).is_ok(), "{addr}");
        }
        assert!(start_checks("0.0.0.0:0".parse().unwrap(), Some("s3cret")).is_ok());
        assert!(matches!(
            start_checks("127.0.0.1:0".parse().unwrap(), Some("")),
            Err(AdminError::BadToken)
        ));
    }
}
