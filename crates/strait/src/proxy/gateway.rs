//! Starting and stopping a gateway: compile the configuration, bind every environment's
//! listener, and on shutdown stop accepting, let in-flight HTTP finish within the grace
//! period and close WebSocket sessions with 1001.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::listener::Listener;
use super::pipeline::Shared;
use super::snapshot::{CompileError, Snapshot};
use super::tls::{TlsError, acceptor};
use crate::config::Config;
use crate::upstream::UpstreamCache;

/// How long a WebSocket close handshake may take before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error("environment {env:?}: cannot listen on {addr}: {source}")]
    Bind {
        env: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("environment {env:?}: {source}")]
    Tls { env: String, source: TlsError },
}

/// Entry point of the data plane.
pub struct Gateway;

impl Gateway {
    /// Binds every environment's listener and starts serving. Returns once all listeners are bound.
    pub async fn start(config: &Config) -> Result<GatewayHandle, StartError> {
        let mut upstreams = UpstreamCache::default();
        let snapshot = Snapshot::compile(config, &mut upstreams)?;
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            close_timeout: CLOSE_TIMEOUT,
        });
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for env in &config.environments {
            let tls = match &env.tls {
                Some(files) => Some(acceptor(files).map_err(|source| StartError::Tls {
                    env: env.name.clone(),
                    source,
                })?),
                None => None,
            };
            let tcp = TcpListener::bind(env.listen)
                .await
                .map_err(|source| StartError::Bind {
                    env: env.name.clone(),
                    addr: env.listen,
                    source,
                })?;
            let addr = tcp.local_addr().map_err(|source| StartError::Bind {
                env: env.name.clone(),
                addr: env.listen,
                source,
            })?;
            addrs.push((env.name.clone(), addr));
            listeners.push(Listener {
                env: Arc::from(env.name.as_str()),
                tcp,
                tls,
                shutdown_grace: env.shutdown_grace,
            });
        }
        let tasks = TaskTracker::new();
        for listener in listeners {
            let scheme = if listener.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let addr = listener.tcp.local_addr().ok();
            tracing::info!(env = %listener.env, "listening on {scheme}://{}", addr.map(|a| a.to_string()).unwrap_or_default());
            tasks.spawn(listener.run(shared.clone()));
        }
        tasks.close();
        Ok(GatewayHandle {
            shared,
            tasks,
            addrs,
        })
    }
}

/// A running gateway.
pub struct GatewayHandle {
    shared: Arc<Shared>,
    tasks: TaskTracker,
    addrs: Vec<(String, SocketAddr)>,
}

impl GatewayHandle {
    /// The address an environment's listener is bound to (useful with port 0).
    pub fn local_addr(&self, env: &str) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|(name, _)| name == env)
            .map(|(_, addr)| *addr)
    }

    /// Every environment's bound address.
    pub fn local_addrs(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    /// Stops accepting, waits for in-flight HTTP requests (up to each environment's
    /// `shutdown_grace`) and closes every WebSocket session with 1001.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        self.shared.sessions.close();
        self.tasks.wait().await;
        self.shared.sessions.wait().await;
        tracing::info!("gateway stopped");
    }
}
