//! Starting, reconfiguring and stopping a gateway.
//!
//! [`GatewayHandle::apply`] makes a new configuration live without dropping anything:
//! new listeners are bound before anything changes (a busy port refuses the whole change),
//! the snapshot is swapped atomically, listeners whose environment moved or went away stop
//! accepting while their connections carry on, and WebSocket sessions of undeployed proxies
//! are closed with 1001 after the environment's `undeploy_grace`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Mutex, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::listener::{self, Listener};
use super::pipeline::Shared;
use super::sessions::{Registry, Session};
use super::snapshot::{CompileError, Snapshot, Telemetry};
use super::websocket::relay::{CLOSE_GOING_AWAY, CloseFrame};
use super::workers::Workers;
use crate::config::Config;
use crate::telemetry::Metrics;
use crate::telemetry::access::{Destination, Sinks};
use crate::telemetry::metrics::{TargetSource, TargetTotals};
use crate::upstream::health::{ActiveChecks, HealthState, start_active_checks};
use crate::upstream::pool::{Pool, PoolCache};
use crate::upstream::{Resolver, UpstreamCache, UpstreamError};

/// How long a WebSocket close handshake may take before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[cfg(feature = "otlp")]
    #[error(transparent)]
    Otlp(crate::telemetry::otlp::EndpointError),
    #[error("environment {env:?}: cannot listen on {addr}: {source}")]
    Bind {
        env: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Dns(UpstreamError),
    #[error("cannot start the worker threads: {0}")]
    Workers(std::io::Error),
}

/// Entry point of the data plane.
pub struct Gateway;

/// Settings of the process rather than of the configuration.
#[derive(Debug, Clone, Default)]
pub struct GatewayOptions {
    /// Where environments without `access_log.file` write their access log (`strait run`:
    /// standard output). `None`: they do not log.
    pub access_log: Option<Destination>,
    /// An OTLP/HTTP collector (`http://host:4318`) to export spans to (needs the `otlp`
    /// feature, on by default).
    pub otlp_endpoint: Option<String>,
    /// The name servers (`ip:port`) that resolve backend host names. `None`: those of
    /// /etc/resolv.conf. Either way /etc/hosts is consulted first.
    pub dns_servers: Option<Vec<SocketAddr>>,
    /// Threads that serve client connections, each with a single-threaded runtime (`strait
    /// run`: one per CPU). 0: connections are served on the runtime that started the gateway.
    pub workers: usize,
    /// Binds each worker thread to a CPU of its own when the workers are as many as the CPUs
    /// the process may run on (`strait run`: unless `--worker-cpu-affinity off`).
    pub bind_workers: bool,
}

impl Gateway {
    /// Binds every environment's listener and starts serving. Returns once all listeners are bound.
    pub async fn start(config: &Config) -> Result<GatewayHandle, StartError> {
        Self::start_with(config, GatewayOptions::default()).await
    }

    pub async fn start_with(
        config: &Config,
        options: GatewayOptions,
    ) -> Result<GatewayHandle, StartError> {
        let registry = Arc::new(Registry::default());
        let resolver = Resolver::new(options.dns_servers.as_deref()).map_err(StartError::Dns)?;
        let tracer = match &options.otlp_endpoint {
            None => None,
            #[cfg(feature = "otlp")]
            Some(endpoint) => Some(
                crate::telemetry::otlp::Exporter::start(endpoint, "strait")
                    .map_err(StartError::Otlp)?,
            ),
            #[cfg(not(feature = "otlp"))]
            Some(endpoint) => {
                tracing::warn!(
                    endpoint,
                    "built without the otlp feature: spans are not exported"
                );
                None
            }
        };
        let workers = match options.workers {
            0 => None,
            count => {
                let workers =
                    Workers::start(count, options.bind_workers).map_err(StartError::Workers)?;
                tracing::info!(
                    workers = workers.handles().len(),
                    "worker threads accept and serve client connections"
                );
                Some(workers)
            }
        };
        // Each worker keeps its own backend connections and access-log buffers.
        let worker_count = workers.as_ref().map_or(0, |w| w.handles().len());
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            metrics: Arc::new({
                let metrics = Metrics::new(registry.clone())
                    .with_targets(Arc::new(LiveTargets(weak.clone())))
                    .with_runtimes(workers.iter().flat_map(|w| w.handles()).cloned().collect());
                match &workers {
                    Some(workers) => metrics.with_worker_connections(workers.loads()),
                    None => metrics,
                }
            }),
            tracer,
            registry,
            close_timeout: CLOSE_TIMEOUT,
            workers,
        });
        let handle = GatewayHandle {
            shared,
            tasks: TaskTracker::new(),
            running: Mutex::new(Running {
                upstreams: UpstreamCache::new(resolver),
                listeners: HashMap::new(),
                pools: PoolCache::default(),
                checks: Vec::new(),
                sinks: Sinks::new(worker_count),
            }),
            addrs: std::sync::Mutex::default(),
            options,
        };
        handle.apply(config).await?;
        Ok(handle)
    }
}

/// Every proxy's backend targets in the live snapshot, for the metrics (read when scraped).
struct LiveTargets(Weak<Shared>);

impl std::fmt::Debug for LiveTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveTargets")
    }
}

impl TargetSource for LiveTargets {
    fn targets(&self) -> Vec<TargetTotals> {
        let Some(shared) = self.0.upgrade() else {
            return Vec::new();
        };
        let snapshot = shared.snapshot.load();
        let mut pools: Vec<_> = snapshot.pools().collect();
        pools.sort_by(|a, b| a.0.cmp(b.0));
        pools
            .into_iter()
            .flat_map(|(proxy, pool)| {
                pool.targets().iter().map(move |target| {
                    let stats = target.stats();
                    let (open, opened) = target.http_connections();
                    TargetTotals {
                        proxy: proxy.to_string(),
                        target: stats.url,
                        up: stats.health == HealthState::Up,
                        active: u64::try_from(stats.active).unwrap_or(u64::MAX),
                        requests: stats.requests,
                        failures: stats.failures,
                        http_connections: open,
                        http_connects: opened,
                    }
                })
            })
            .collect()
    }
}

/// A listener the gateway is running for one environment.
struct Bound {
    /// The address as configured (may have port 0).
    configured: SocketAddr,
    /// The address actually bound.
    local: SocketAddr,
    retire: CancellationToken,
    /// Resolves once the listening socket is closed.
    closed: oneshot::Receiver<()>,
}

/// What the control side of the gateway tracks; only `apply` touches it.
struct Running {
    listeners: HashMap<String, Bound>,
    upstreams: UpstreamCache,
    /// Backend targets' state (open sessions, health), kept across configurations.
    pools: PoolCache,
    /// The active health checkers of the live configuration; dropping one stops it.
    checks: Vec<ActiveChecks>,
    sinks: Sinks,
}

/// A running gateway.
pub struct GatewayHandle {
    shared: Arc<Shared>,
    tasks: TaskTracker,
    running: Mutex<Running>,
    /// Each environment's bound address, readable without waiting for `apply`.
    addrs: std::sync::Mutex<HashMap<String, SocketAddr>>,
    options: GatewayOptions,
}

impl GatewayHandle {
    /// The address an environment's listener is bound to (useful with port 0).
    pub fn local_addr(&self, env: &str) -> Option<SocketAddr> {
        match self.addrs.lock() {
            Ok(addrs) => addrs.get(env).copied(),
            Err(poisoned) => poisoned.into_inner().get(env).copied(),
        }
    }

    /// Makes `config` live. When this returns `Ok`, the next request to any environment is
    /// routed by the new configuration. On `Err` nothing changed.
    pub async fn apply(&self, config: &Config) -> Result<(), StartError> {
        let mut running = self.running.lock().await;
        let Running {
            upstreams,
            pools,
            sinks,
            ..
        } = &mut *running;
        let telemetry = Telemetry {
            metrics: &self.shared.metrics,
            sinks,
            default_log: self.options.access_log.as_ref(),
        };
        let snapshot = match Snapshot::compile(config, upstreams, pools, telemetry) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                pools.rollback();
                return Err(error.into());
            }
        };

        // Bind what is new before changing anything, so a busy port refuses the whole change.
        let mut fresh = Vec::new();
        for env in &config.environments {
            let unchanged = running
                .listeners
                .get(&env.name)
                .is_some_and(|b| b.configured == env.listen);
            if unchanged {
                continue;
            }
            let sockets = self
                .shared
                .workers
                .as_ref()
                .map_or(1, |w| w.handles().len());
            match listener::bind(env.listen, sockets).await {
                Ok((tcp, local)) => fresh.push((env, tcp, local)),
                Err(source) => {
                    running.pools.rollback();
                    return Err(StartError::Bind {
                        env: env.name.clone(),
                        addr: env.listen,
                        source,
                    });
                }
            }
        }

        let snapshot = Arc::new(snapshot);
        let old = self.shared.snapshot.swap(snapshot.clone());
        // Targets no longer listed are retired: sessions on them under `rebalance: drain`
        // start their grace. The new checkers replace the old ones.
        running.pools.commit();
        running.checks = snapshot
            .checked()
            .iter()
            .filter_map(|(pool, upstream)| {
                start_active_checks(pool, upstream.clone())
                    .inspect_err(|error| tracing::warn!(%error, "health checks not started"))
                    .ok()
                    .flatten()
            })
            .collect();

        // Retire listeners whose environment moved or went away.
        let (kept, retired): (HashMap<_, _>, HashMap<_, _>) =
            std::mem::take(&mut running.listeners)
                .into_iter()
                .partition(|(name, bound)| {
                    config
                        .environments
                        .iter()
                        .any(|e| &e.name == name && e.listen == bound.configured)
                });
        running.listeners = kept;
        for (name, bound) in retired {
            bound.retire.cancel();
            // Once this returns the old address refuses connections instead of queueing them.
            let _ = bound.closed.await;
            tracing::info!(env = %name, addr = %bound.local, "listener retired; its connections carry on");
        }
        for (env, tcp, local) in fresh {
            let retire = CancellationToken::new();
            let (closed_tx, closed) = oneshot::channel();
            let scheme = if env.tls.is_some() { "https" } else { "http" };
            tracing::info!(env = %env.name, "listening on {scheme}://{local}");
            let listener = Listener {
                env: Arc::from(env.name.as_str()),
                tcp,
                retire: retire.clone(),
                grace: env.shutdown_grace,
                closed: closed_tx,
            };
            self.tasks.spawn(listener.run(self.shared.clone()));
            running.listeners.insert(
                env.name.clone(),
                Bound {
                    configured: env.listen,
                    local,
                    retire,
                    closed,
                },
            );
        }

        let addrs: HashMap<String, SocketAddr> = running
            .listeners
            .iter()
            .map(|(name, bound)| (name.clone(), bound.local))
            .collect();
        match self.addrs.lock() {
            Ok(mut slot) => *slot = addrs,
            Err(poisoned) => *poisoned.into_inner() = addrs,
        }
        self.close_undeployed(&old);
        Ok(())
    }

    /// Schedules the close of sessions whose proxy is no longer deployed in their environment.
    fn close_undeployed(&self, old: &Snapshot) {
        let current = self.shared.snapshot.load();
        for session in self.shared.registry.list() {
            if current.serves(&session.info.env, &session.info.proxy) {
                continue;
            }
            // The grace of the environment as it is now, or as it was if it was deleted.
            let env = current
                .env(&session.info.env)
                .or_else(|| old.env(&session.info.env));
            let Some(grace) = env.map_or(Some(Duration::ZERO), |e| e.undeploy_grace) else {
                continue; // `never`: let it finish on its own
            };
            let shared = self.shared.clone();
            tokio::spawn(close_after(shared, session, grace));
        }
    }

    /// The backend pool of `proxy` in the live configuration: its targets with their
    /// health and counts.
    pub fn pool(&self, proxy: &str) -> Option<Arc<Pool>> {
        self.shared.snapshot.load().pool(proxy).cloned()
    }

    /// Every proxy's backend pool in the live configuration, by proxy name.
    pub fn pools(&self) -> Vec<(Arc<str>, Arc<Pool>)> {
        let snapshot = self.shared.snapshot.load();
        snapshot
            .pools()
            .map(|(name, pool)| (name.clone(), pool.clone()))
            .collect()
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Waits until every access-log line so far is written out.
    pub async fn flush_access_logs(&self) {
        self.running.lock().await.sinks.flush().await;
    }

    /// Every live WebSocket session.
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        self.shared.registry.list()
    }

    /// One live WebSocket session by id.
    pub fn session(&self, id: u64) -> Option<Arc<Session>> {
        self.shared.registry.get(id)
    }

    /// Stops accepting, waits for in-flight HTTP requests (up to each environment's
    /// `shutdown_grace`) and closes every WebSocket session with 1001.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        self.tasks.close();
        self.shared.sessions.close();
        self.tasks.wait().await;
        self.shared.sessions.wait().await;
        self.flush_access_logs().await;
        tracing::info!("gateway stopped");
    }
}

/// Closes `session` after `grace` unless its proxy was deployed again in the meantime.
async fn close_after(shared: Arc<Shared>, session: Arc<Session>, grace: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(grace) => {}
        _ = shared.shutdown.cancelled() => return,
    }
    if shared
        .snapshot
        .load()
        .serves(&session.info.env, &session.info.proxy)
    {
        return;
    }
    tracing::info!(env = %session.info.env, proxy = %session.info.proxy, id = session.id, "closing a session of an undeployed proxy");
    session.close(CloseFrame::new(CLOSE_GOING_AWAY, "proxy undeployed"));
}
