//! The compiled, immutable routing state the data plane reads: one route table per
//! environment, each route with its policy chain, and the consumers those policies look
//! credentials up in. A new configuration compiles into a new snapshot that is swapped whole.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use foldhash::HashMap;
use http::Method;
use tokio_rustls::TlsAcceptor;

use super::tls::{TlsError, acceptor};
use crate::config::{Config, Timeouts};
use crate::policy::Chain;
use crate::policy::consumers::Directory;
use crate::routing::{BackendUrl, RouteTable, Scheme};
use crate::telemetry::RouteMetrics;
use crate::telemetry::access::{AccessLog, Destination, OpenError, Sinks};
use crate::telemetry::metrics::Metrics;
use crate::upstream::pool::{Pool, PoolCache};
use crate::upstream::{Upstream, UpstreamCache, UpstreamError};

/// A proxy as the data plane needs it, in one environment.
#[derive(Debug)]
pub struct Route {
    pub proxy: Arc<str>,
    /// The proxy's path as written (`/api/v1/*`), for span names.
    pub path: Arc<str>,
    /// The first target's URL: the target a request resolves to before the balancer picks
    /// one (policies see it; with one target it is the one).
    pub backend: BackendUrl,
    /// `backend`'s authority as a `Host` value, made once (`None`: not a valid header value).
    pub backend_host: Option<http::HeaderValue>,
    /// `backend`'s scheme and authority, parsed once: an HTTP request's target is built on
    /// them from its path (`None`: they do not parse, and the whole target is parsed).
    pub origin: Option<(http::uri::Scheme, http::uri::Authority)>,
    /// The backend's targets, their health and how requests are shared among them.
    pub pool: Arc<Pool>,
    /// `None`: any method.
    pub methods: Option<Vec<Method>>,
    pub preserve_host: bool,
    pub upstream: Upstream,
    pub metrics: RouteMetrics,
    /// The environment's policies, then the proxy's, run phase by phase.
    pub policies: Chain,
}

impl Route {
    pub fn allows(&self, method: &Method) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|allowed| allowed.contains(method))
    }
}

/// What one environment serves.
pub struct EnvRoutes {
    pub name: Arc<str>,
    pub websocket: bool,
    pub timeouts: Timeouts,
    pub routes: RouteTable<Arc<Route>>,
    /// Names of the proxies deployed here.
    pub proxies: HashSet<Arc<str>>,
    /// Clients of this environment's listener speak TLS when set.
    pub tls: Option<TlsAcceptor>,
    pub shutdown_grace: Duration,
    /// `None`: sessions of an undeployed proxy are left to finish on their own.
    pub undeploy_grace: Option<Duration>,
    /// `None`: this environment does not log requests.
    pub access_log: Option<AccessLog>,
    /// Metrics of requests no proxy matched (proxy label `""`).
    pub unmatched: RouteMetrics,
}

/// What a compiled snapshot records into: metrics, and the access-log writers.
pub struct Telemetry<'a> {
    pub metrics: &'a Arc<Metrics>,
    pub sinks: &'a mut Sinks,
    /// Where environments without `access_log.file` log (`None`: they do not).
    pub default_log: Option<&'a Destination>,
}

/// Every environment's routes; swapped whole, never mutated.
#[derive(Default)]
pub struct Snapshot {
    envs: HashMap<Arc<str>, Arc<EnvRoutes>>,
    /// Each proxy's backend pool, shared by its routes in every environment.
    pools: HashMap<Arc<str>, Arc<Pool>>,
    /// The pools with an active health check (one per pool key), with the way to reach
    /// their targets.
    checked: Vec<(Arc<Pool>, Upstream)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("proxy {proxy:?}: {source}")]
    Upstream {
        proxy: String,
        source: UpstreamError,
    },
    #[error("environment {env:?}: {message}")]
    Routes { env: String, message: String },
    #[error("environment {env:?}: {source}")]
    Tls { env: String, source: TlsError },
    #[error("environment {env:?}: {source}")]
    AccessLog { env: String, source: OpenError },
}

impl Snapshot {
    /// Compiles `config`. Target state comes from `pools` (call [`PoolCache::commit`] once
    /// the snapshot is live, [`PoolCache::rollback`] if it is not used).
    pub fn compile(
        config: &Config,
        upstreams: &mut UpstreamCache,
        pools: &mut PoolCache,
        telemetry: Telemetry<'_>,
    ) -> Result<Snapshot, CompileError> {
        let Telemetry {
            metrics,
            sinks,
            default_log,
        } = telemetry;
        let mut envs = HashMap::default();
        let mut destinations = HashSet::new();
        let consumers = Arc::new(Directory::new(&config.consumers));
        // A named upstream's targets are one state whichever proxies use it.
        let mut backends: HashMap<Arc<str>, Arc<Pool>> = HashMap::default();
        let mut checked = Vec::new();
        let mut checked_keys = HashSet::new();
        for proxy in &config.proxies {
            let key = match &proxy.backend.upstream {
                Some(upstream) => format!("upstream:{upstream}"),
                None => format!("proxy:{}", proxy.name),
            };
            let pool = pools.pool(&key, &proxy.backend);
            if let Some(check) = &proxy.backend.health.active
                && checked_keys.insert(key)
            {
                let ca_file = proxy.backend_tls.as_ref().map(|t| t.ca_file.as_path());
                let upstream = upstreams
                    .get(ca_file, check.timeout, &[])
                    .map_err(|source| CompileError::Upstream {
                        proxy: proxy.name.clone(),
                        source,
                    })?;
                checked.push((pool.clone(), upstream));
            }
            backends.insert(Arc::from(proxy.name.as_str()), pool);
        }
        for env in &config.environments {
            let mut routes = RouteTable::default();
            let mut proxies = HashSet::new();
            for proxy in config
                .proxies
                .iter()
                .filter(|p| p.deploy.contains(&env.name))
            {
                let ca_file = proxy.backend_tls.as_ref().map(|t| t.ca_file.as_path());
                let upstream = upstreams
                    .get(ca_file, env.timeouts.connect, &env.backend_source_addresses)
                    .map_err(|source| CompileError::Upstream {
                        proxy: proxy.name.clone(),
                        source,
                    })?;
                let name: Arc<str> = Arc::from(proxy.name.as_str());
                let Some(pool) = backends.get(&name).cloned() else {
                    continue;
                };
                let route = Route {
                    proxy: name.clone(),
                    path: Arc::from(proxy.path.as_str()),
                    backend: proxy.backend.primary().clone(),
                    backend_host: http::HeaderValue::from_str(proxy.backend.primary().authority())
                        .ok(),
                    origin: origin(proxy.backend.primary()),
                    pool,
                    methods: proxy.methods.clone(),
                    preserve_host: proxy.preserve_host,
                    upstream,
                    metrics: RouteMetrics::new(metrics.clone(), &env.name, &proxy.name),
                    policies: Chain::new(
                        env.policies.iter().chain(&proxy.policies),
                        consumers.clone(),
                    ),
                };
                routes
                    .insert(&proxy.path, Arc::new(route))
                    .map_err(|e| CompileError::Routes {
                        env: env.name.clone(),
                        message: e.to_string(),
                    })?;
                proxies.insert(name);
            }
            let tls = match &env.tls {
                Some(files) => Some(acceptor(files).map_err(|source| CompileError::Tls {
                    env: env.name.clone(),
                    source,
                })?),
                None => None,
            };
            let settings = &env.access_log;
            let destination = match &settings.file {
                Some(path) => Some(Destination::File(path.clone())),
                None => default_log.cloned(),
            };
            let access_log = match (settings.format, destination) {
                (Some(format), Some(destination)) => {
                    let log = sinks
                        .get(
                            &destination,
                            format,
                            settings.log_handshake,
                            &metrics.access_log_dropped,
                        )
                        .map_err(|source| CompileError::AccessLog {
                            env: env.name.clone(),
                            source,
                        })?;
                    destinations.insert(destination);
                    Some(log)
                }
                _ => None,
            };
            let name: Arc<str> = Arc::from(env.name.as_str());
            let compiled = EnvRoutes {
                name: name.clone(),
                websocket: env.websocket,
                timeouts: env.timeouts,
                routes,
                proxies,
                tls,
                shutdown_grace: env.shutdown_grace,
                undeploy_grace: env.undeploy_grace,
                access_log,
                unmatched: RouteMetrics::new(metrics.clone(), &env.name, ""),
            };
            envs.insert(name, Arc::new(compiled));
        }
        sinks.retain(&destinations);
        Ok(Snapshot {
            envs,
            pools: backends,
            checked,
        })
    }

    /// The backend pool of `proxy`.
    pub fn pool(&self, proxy: &str) -> Option<&Arc<Pool>> {
        self.pools.get(proxy)
    }

    /// Every proxy's pool.
    pub fn pools(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<Pool>)> {
        self.pools.iter()
    }

    /// The pools to health-check actively, each with the way to reach its targets.
    pub fn checked(&self) -> &[(Arc<Pool>, Upstream)] {
        &self.checked
    }

    pub fn env(&self, name: &str) -> Option<&Arc<EnvRoutes>> {
        self.envs.get(name)
    }

    /// Whether `proxy` is deployed to `env` in this snapshot.
    pub fn serves(&self, env: &str, proxy: &str) -> bool {
        self.env(env).is_some_and(|e| e.proxies.contains(proxy))
    }
}

/// `backend`'s scheme and authority as a request target carries them.
fn origin(backend: &BackendUrl) -> Option<(http::uri::Scheme, http::uri::Authority)> {
    let scheme = match backend.scheme() {
        Scheme::Http => http::uri::Scheme::HTTP,
        Scheme::Https => http::uri::Scheme::HTTPS,
    };
    let authority = http::uri::Authority::try_from(backend.authority()).ok()?;
    Some((scheme, authority))
}
