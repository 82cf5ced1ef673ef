//! The compiled, immutable routing state the data plane reads: one route table per environment.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;

use crate::config::{Config, Timeouts};
use crate::routing::{BackendUrl, RouteTable};
use crate::upstream::{Upstream, UpstreamCache, UpstreamError};

/// A proxy as the data plane needs it, in one environment.
#[derive(Debug)]
pub struct Route {
    pub proxy: Arc<str>,
    pub backend: BackendUrl,
    /// `None`: any method.
    pub methods: Option<Vec<Method>>,
    pub preserve_host: bool,
    pub upstream: Upstream,
}

impl Route {
    pub fn allows(&self, method: &Method) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|allowed| allowed.contains(method))
    }
}

/// What one environment serves.
#[derive(Debug)]
pub struct EnvRoutes {
    pub name: Arc<str>,
    pub websocket: bool,
    pub timeouts: Timeouts,
    pub routes: RouteTable<Arc<Route>>,
}

/// Every environment's routes; swapped whole, never mutated.
#[derive(Debug, Default)]
pub struct Snapshot {
    envs: HashMap<Arc<str>, Arc<EnvRoutes>>,
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
}

impl Snapshot {
    pub fn compile(
        config: &Config,
        upstreams: &mut UpstreamCache,
    ) -> Result<Snapshot, CompileError> {
        let mut envs = HashMap::new();
        for env in &config.environments {
            let mut routes = RouteTable::default();
            for proxy in config
                .proxies
                .iter()
                .filter(|p| p.deploy.contains(&env.name))
            {
                let ca_file = proxy.backend_tls.as_ref().map(|t| t.ca_file.as_path());
                let upstream = upstreams
                    .get(ca_file, env.timeouts.connect)
                    .map_err(|source| CompileError::Upstream {
                        proxy: proxy.name.clone(),
                        source,
                    })?;
                let route = Route {
                    proxy: Arc::from(proxy.name.as_str()),
                    backend: proxy.backend.clone(),
                    methods: proxy.methods.clone(),
                    preserve_host: proxy.preserve_host,
                    upstream,
                };
                routes
                    .insert(&proxy.path, Arc::new(route))
                    .map_err(|e| CompileError::Routes {
                        env: env.name.clone(),
                        message: e.to_string(),
                    })?;
            }
            let name: Arc<str> = Arc::from(env.name.as_str());
            let compiled = EnvRoutes {
                name: name.clone(),
                websocket: env.websocket,
                timeouts: env.timeouts,
                routes,
            };
            envs.insert(name, Arc::new(compiled));
        }
        Ok(Snapshot { envs })
    }

    pub fn env(&self, name: &str) -> Option<&Arc<EnvRoutes>> {
        self.envs.get(name)
    }
}
