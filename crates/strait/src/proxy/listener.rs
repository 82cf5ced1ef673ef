//! Accept phase: one listener per environment, plain TCP or TLS (as the current snapshot
//! says for that environment), serving HTTP/1.1 (with upgrades) and HTTP/2 (ALPN on TLS,
//! prior knowledge on plain TCP).
//!
//! A listener can be *retired* (its environment moved to another address or was deleted):
//! it stops accepting, and the connections it accepted carry on until gateway shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
#[cfg(target_os = "linux")]
use tokio::net::TcpSocket;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::LONGEST;
use super::exchange::Logged;
use super::h2_idle::{self, InProgress, Streams};
use super::h2_send;
use super::headers::ip_value;
use super::lag_timer::LagTimer;
use super::pipeline::{ConnInfo, Shared, handle};
use super::send_timeout::SendTimeout;
use super::sniff::{self, FirstLook};
use super::when_woken::WhenWoken;
use super::workers::Serving;
use crate::config::Timeouts;
use crate::error::{JsonAnswers, MAX_HEAD_BYTES};
use crate::io::TcpOrTls;

/// A client connection as accepted, with its TLS session if the environment has one. A
/// WebSocket handshake unwraps it from hyper's upgrade, so the relay reads it directly.
pub type ClientStream = TcpOrTls<tokio_rustls::server::TlsStream<TcpStream>>;

/// The most a new connection's TLS handshake or first bytes may take, however long
/// `client_idle` is: a client that sends nothing is dropped at the shorter of the two.
const FIRST_BYTES: Duration = Duration::from_secs(30);

pub struct Listener {
    pub env: Arc<str>,
    /// The listening sockets: one per worker thread (sharing the port), or one.
    pub tcp: Vec<TcpListener>,
    /// Cancelled when this listener should stop accepting without stopping the gateway.
    pub retire: CancellationToken,
    /// Shutdown grace to use if the environment is gone from the snapshot by then.
    pub grace: Duration,
    /// Told once the listening sockets are closed (after retirement or shutdown).
    pub closed: oneshot::Sender<()>,
}

/// How connections are served: HTTP/1.1 with upgrades, or HTTP/2.
#[derive(Clone)]
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<BoxedSpawn>,
}

/// Spawns hyper's HTTP/2 stream tasks boxed (tokio moves a spawned future by value several
/// times, and a stream's future holds every request phase), each with the watch that keeps
/// its body's `send` timeout (see [`h2_send`]).
#[derive(Clone, Copy)]
struct BoxedSpawn;

impl<F> hyper::rt::Executor<F> for BoxedSpawn
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(h2_send::watched(future));
    }
}

impl Protocols {
    fn new() -> Self {
        let mut http1 = http1::Builder::new();
        // The head timer and its limit are set per connection (see `serve_connection`).
        http1.max_buf_size(MAX_HEAD_BYTES);
        let mut http2 = http2::Builder::new(BoxedSpawn);
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEAD_BYTES as u32);
        Self { http1, http2 }
    }
}

/// Binds `addr` for `count` accept loops; returns the sockets and the address they got.
/// Several (on Linux) are as many sockets sharing the port with `SO_REUSEPORT`: the kernel
/// gives each new connection to one of them, so each worker accepts its own without waking
/// the others. Otherwise one socket. Either way a port in use is an error.
pub async fn bind(
    addr: SocketAddr,
    count: usize,
) -> std::io::Result<(Vec<TcpListener>, SocketAddr)> {
    #[cfg(target_os = "linux")]
    if count > 1 {
        let shared_port = |addr: SocketAddr| {
            let socket = match addr {
                SocketAddr::V4(_) => TcpSocket::new_v4()?,
                SocketAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.bind(addr)?;
            socket.listen(BACKLOG)
        };
        // A port something already listens on is refused, as a plain bind would refuse it:
        // sockets with `SO_REUSEPORT` would join the group of one that set it too (a stale
        // gateway of the same user, say) and take half its connections, or it half theirs.
        // The probe also picks the port when `addr` says 0.
        let local = std::net::TcpListener::bind(addr)?.local_addr()?;
        let mut all = Vec::with_capacity(count);
        for _ in 0..count {
            all.push(shared_port(local)?);
        }
        return Ok((all, local));
    }
    let _ = count;
    let tcp = TcpListener::bind(addr).await?;
    let local = tcp.local_addr()?;
    Ok((vec![tcp], local))
}

/// Pending connections each listening socket holds before the kernel refuses more.
#[cfg(target_os = "linux")]
const BACKLOG: u32 = 1024;

impl Listener {
    pub async fn run(self, shared: Arc<Shared>) {
        let protocols = Protocols::new();
        // Every connection this listener accepted, so shutdown can wait for them.
        let connections = TaskTracker::new();
        // One accept loop per socket: on the worker threads when there are some, so a
        // connection is served where it was accepted; else here.
        let accepting = TaskTracker::new();
        let workers = shared.workers.as_ref().map_or(&[][..], |w| w.handles());
        for (i, tcp) in self.tcp.into_iter().enumerate() {
            let index = i % workers.len().max(1);
            let accept = Accept {
                env: self.env.clone(),
                protocols: protocols.clone(),
                connections: connections.clone(),
                retire: self.retire.clone(),
                shared: shared.clone(),
                worker: index,
            };
            let Some(worker) = workers.get(index) else {
                accepting.spawn(accept.run(tcp));
                continue;
            };
            // The socket leaves this runtime's reactor for the worker's.
            match tcp.into_std() {
                Ok(tcp) => _ = accepting.spawn_on(accept.run_moved(tcp), worker),
                Err(error) => {
                    tracing::error!(env = %self.env, %error, "cannot hand a listening socket to a worker")
                }
            }
        }
        accepting.close();
        accepting.wait().await;
        let _ = self.closed.send(());
        // Accepted connections keep serving; they end gracefully when the gateway stops.
        shared.shutdown.cancelled().await;
        connections.close();
        let grace = shared
            .snapshot
            .load()
            .env(&self.env)
            .map_or(self.grace, |e| e.shutdown_grace);
        tracing::info!(env = %self.env, "stopped accepting; waiting for in-flight requests");
        if tokio::time::timeout(grace, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(env = %self.env, ?grace, "in-flight requests outlived the shutdown grace");
        }
    }
}

/// One accept loop: serves each connection on the runtime it runs on, until the listener
/// retires or the gateway shuts down (its socket closes when it returns).
struct Accept {
    env: Arc<str>,
    protocols: Protocols,
    connections: TaskTracker,
    retire: CancellationToken,
    shared: Arc<Shared>,
    /// The worker this loop runs on (when there are workers).
    worker: usize,
}

impl Accept {
    async fn run_moved(self, tcp: std::net::TcpListener) {
        match TcpListener::from_std(tcp) {
            Ok(tcp) => self.run(tcp).await,
            Err(error) => {
                tracing::error!(env = %self.env, %error, "a worker cannot listen on its socket")
            }
        }
    }

    async fn run(self, tcp: TcpListener) {
        let shared = &self.shared;
        // Made once: a token's waiter is registered on the first poll, not on every accept.
        let stop = std::pin::pin!(async {
            tokio::select! {
                _ = shared.shutdown.cancelled() => {}
                _ = self.retire.cancelled() => {}
            }
        });
        let mut stop = WhenWoken::new(stop);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = &mut stop => break,
                accepted = tcp.accept() => accepted,
            };
            let (tcp, client) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of descriptors or memory: refuse for a moment rather than spin or crash.
                    tracing::error!(env = %self.env, %error, "cannot accept a new connection; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            // Counted on the worker that serves it: this one, or a less busy one.
            let (serving, elsewhere) = match &shared.workers {
                Some(workers) => {
                    let (serving, elsewhere) = workers.assign(self.worker);
                    (Some(serving), elsewhere)
                }
                None => (None, None),
            };
            let serve = serve_connection(
                self.protocols.clone(),
                tcp,
                elsewhere.is_some(),
                client,
                self.env.clone(),
                shared.clone(),
                serving,
            );
            // Boxed: spawning moves the future by value several times; a pointer is cheaper
            // to move than the whole connection state.
            _ = match elsewhere {
                Some(worker) => self.connections.spawn_on(Box::pin(serve), worker),
                None => self.connections.spawn(Box::pin(serve)),
            };
        }
    }
}

/// Serves one client connection; `serving` counts it (and its WebSocket session) on its
/// worker. A connection `moved` from the worker that accepted it first leaves that one's
/// reactor for this one's.
async fn serve_connection(
    protocols: Protocols,
    tcp: TcpStream,
    moved: bool,
    client: SocketAddr,
    env: Arc<str>,
    shared: Arc<Shared>,
    serving: Option<Serving>,
) {
    let tcp = match moved {
        false => tcp,
        true => match tcp.into_std().and_then(TcpStream::from_std) {
            Ok(tcp) => tcp,
            Err(error) => {
                tracing::error!(%client, %error, "cannot move a connection to another worker");
                return;
            }
        },
    };
    let (tls, timeouts): (Option<TlsAcceptor>, _) = match shared.snapshot.load().env(&env) {
        Some(e) => (e.tls.clone(), e.timeouts),
        None => (None, Timeouts::default()),
    };
    // Capped: hyper adds its timeouts to an `Instant` unchecked.
    let (send_limit, idle_limit) = (timeouts.send, timeouts.client_idle.min(LONGEST));
    let first_limit = idle_limit.min(FIRST_BYTES);
    let client_ip = ip_value(client.ip());
    let conn = Arc::new(ConnInfo {
        shared: shared.clone(),
        client,
        client_ip,
        tls: tls.is_some(),
        env,
        backend: Default::default(),
        response_timer: Default::default(),
        serving: serving.map(Arc::new),
    });
    // HTTP/2 by ALPN on TLS, by its preface (prior knowledge) on plain TCP. A plain-TCP
    // connection opening with a WebSocket upgrade is served without hyper, unless refused.
    let mut refused = None;
    let (stream, h2) = match tls {
        None => {
            let look = sniff::first_look(&tcp);
            let first = "reading the first request";
            let Some(look) = before_head_timeout(client, first_limit, first, look).await else {
                return;
            };
            match look {
                FirstLook::Http2 => (TcpOrTls::Plain(tcp), true),
                FirstLook::Http1 => (TcpOrTls::Plain(tcp), false),
                FirstLook::Upgrade(upgrade) => {
                    let served = sniff::serve(&shared, &conn, tcp, upgrade, first_limit);
                    let Some((tcp, answer)) = served.await else {
                        return;
                    };
                    refused = Some(answer);
                    (TcpOrTls::Plain(tcp), false)
                }
            }
        }
        Some(acceptor) => {
            let accepted = acceptor.accept(tcp);
            let handshake = "the TLS handshake";
            let Some(stream) = before_head_timeout(client, first_limit, handshake, accepted).await
            else {
                return;
            };
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
            (TcpOrTls::Tls(Box::new(stream)), h2)
        }
    };
    let shutdown = &shared.shutdown;
    let result = if h2 {
        let mut http2 = protocols.http2;
        // A peer silent for `send` is pinged, and dropped if it does not answer within `send`:
        // a half-open HTTP/2 connection holds no stream that would ever time out.
        let ping = send_limit.min(LONGEST);
        // Each stream counts as in progress until its response body is done.
        let streams = Arc::new(Streams::default());
        let counted = streams.clone();
        let begin = move || InProgress::begin(&counted);
        let service = service(conn, refused, begin, move |answer, stream| {
            h2_send::guard(answer, send_limit).map(|body| h2_idle::Holding::new(body, stream))
        });
        let conn = http2
            .keep_alive_interval(ping)
            .keep_alive_timeout(ping)
            .serve_connection(TokioIo::new(SendTimeout::new(stream, send_limit)), service);
        // GOAWAY when the gateway shuts down, or once the client has been idle.
        let stop = async {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = streams.idle(idle_limit) => {
                    tracing::debug!(%client, "HTTP/2 connection idle for client_idle: closing");
                }
            }
        };
        until_stopped(conn, stop, |c| c.graceful_shutdown()).await
    } else {
        let mut http1 = protocols.http1;
        let service = service(conn, refused, || (), |answer, ()| answer);
        let conn = http1
            .timer(LagTimer::default())
            .header_read_timeout(idle_limit)
            .serve_connection(
                TokioIo::new(SendTimeout::new(JsonAnswers::new(stream), send_limit)),
                service,
            )
            .with_upgrades();
        until_stopped(conn, shutdown.cancelled(), |c| c.graceful_shutdown()).await
    };
    if let Err(error) = result {
        tracing::debug!(%client, %error, "connection ended with an error");
    }
}

/// The service hyper runs for each request of a connection: `begin` as it comes (what it
/// makes lives until `finish` has the answer), the pipeline, its answer passed through
/// `finish`. One async block around `handle`, so the future hyper stores and moves per
/// request stays the size of `handle`'s.
fn service<B: hyper::body::Body, T: Send + 'static>(
    conn: Arc<ConnInfo>,
    refused: Option<Response<Logged>>,
    begin: impl Fn() -> T + Clone + Send + 'static,
    finish: impl Fn(Response<Logged>, T) -> Response<B> + Clone + Send + 'static,
) -> impl Service<
    Request<Incoming>,
    Response = Response<B>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<B>, Infallible>> + Send,
> {
    // The refused upgrade's answer, for hyper to send when it has read that request.
    let refused = refused.map(|answer| Mutex::new(Some(answer)));
    service_fn(move |req: Request<Incoming>| {
        let conn = conn.clone();
        let finish = finish.clone();
        let begun = begin();
        let answered = refused
            .as_ref()
            .and_then(|answer| answer.lock().ok()?.take());
        async move {
            let answer = match answered {
                Some(answer) => answer,
                None => handle(conn, req).await,
            };
            Ok(finish(answer, begun))
        }
    })
}

/// `step` of a new connection, within `limit`; `None` (logged) if it failed or took too long.
async fn before_head_timeout<T, E: std::fmt::Display>(
    client: SocketAddr,
    limit: Duration,
    step: &str,
    future: impl Future<Output = Result<T, E>>,
) -> Option<T> {
    match tokio::time::timeout(limit, future).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(error)) => {
            tracing::debug!(%client, %error, "{step} failed");
            None
        }
        Err(_) => {
            tracing::debug!(%client, "{step} timed out");
            None
        }
    }
}

/// Serves `conn`; once `stop` resolves (the gateway shuts down, an HTTP/2 client is idle),
/// asks it to finish what is in flight and close (HTTP/1: after the current response;
/// HTTP/2: GOAWAY) and waits for that.
async fn until_stopped<C, E>(
    conn: C,
    stop: impl Future<Output = ()>,
    graceful: impl FnOnce(Pin<&mut C>),
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut conn = std::pin::pin!(conn);
    let stop = std::pin::pin!(stop);
    tokio::select! {
        biased;
        result = conn.as_mut() => return result,
        () = WhenWoken::new(stop) => {}
    }
    graceful(conn.as_mut());
    conn.await
}
