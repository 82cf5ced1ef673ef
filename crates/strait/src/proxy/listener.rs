//! Accept phase: one listener per environment, plain TCP or TLS (as the current snapshot
//! says for that environment), serving HTTP/1.1 (with upgrades) and HTTP/2 (ALPN on TLS,
//! prior knowledge on plain TCP).
//!
//! A listener can be *retired* (its environment moved to another address or was deleted):
//! it stops accepting, and the connections it accepted carry on until gateway shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::pipeline::{ConnInfo, Shared, handle};

/// Largest request head accepted (request line plus headers).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A client that has not sent its request head (or finished TLS) in this time is dropped.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Listener {
    pub env: Arc<str>,
    pub tcp: TcpListener,
    /// Cancelled when this listener should stop accepting without stopping the gateway.
    pub retire: CancellationToken,
    /// Shutdown grace to use if the environment is gone from the snapshot by then.
    pub grace: Duration,
    /// Told once the listening socket is closed (after retirement or shutdown).
    pub closed: oneshot::Sender<()>,
}

impl Listener {
    pub async fn run(self, shared: Arc<Shared>) {
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
        loop {
            let accepted = tokio::select! {
                _ = shared.shutdown.cancelled() => break,
                _ = self.retire.cancelled() => break,
                accepted = self.tcp.accept() => accepted,
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
            let task = serve_connection(
                builder.clone(),
                tcp,
                client,
                self.env.clone(),
                shared.clone(),
                graceful.watcher(),
            );
            tokio::spawn(task);
        }
        drop(self.tcp);
        let _ = self.closed.send(());
        // Accepted connections keep serving; they end gracefully when the gateway stops.
        shared.shutdown.cancelled().await;
        let grace = shared
            .snapshot
            .load()
            .env(&self.env)
            .map_or(self.grace, |e| e.shutdown_grace);
        tracing::info!(env = %self.env, "stopped accepting; waiting for in-flight requests");
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(env = %self.env, ?grace, "in-flight requests outlived the shutdown grace");
        }
    }
}

async fn serve_connection(
    builder: auto::Builder<TokioExecutor>,
    tcp: TcpStream,
    client: std::net::SocketAddr,
    env: Arc<str>,
    shared: Arc<Shared>,
    watcher: Watcher,
) {
    let tls: Option<TlsAcceptor> = shared.snapshot.load().env(&env).and_then(|e| e.tls.clone());
    let client_ip = http::HeaderValue::from_str(&client.ip().to_string()).ok();
    let conn = Arc::new(ConnInfo {
        client,
        client_ip,
        tls: tls.is_some(),
        env,
        backend: Default::default(),
    });
    let service = {
        let conn = conn.clone();
        service_fn(move |req| {
            let shared = shared.clone();
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(handle(shared, conn, req).await) }
        })
    };
    let result = match tls {
        None => {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            watcher.watch(conn.into_owned()).await
        }
        Some(acceptor) => match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => {
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                watcher.watch(conn.into_owned()).await
            }
            Ok(Err(error)) => {
                tracing::debug!(%client, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%client, "TLS handshake timed out");
                return;
            }
        },
    };
    if let Err(error) = result {
        tracing::debug!(%client, %error, "connection ended with an error");
    }
}
