//! The validated configuration model. Every value here has been checked; relative file
//! paths have been resolved against the config file's folder.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::policy::PolicyEntry;
pub use crate::policy::consumers::{Consumer, KeyDigest, Login, Password};
use crate::routing::ProxyPath;
pub use crate::upstream::settings::{
    ActiveCheck, BackendSpec, Balance, BreakerSpec, HashOn, HealthSpec, PassiveCheck, Rebalance,
    TargetSpec, Targets,
};

/// An empty `Config` (no environments, no proxies, no admin API) is what a gateway with
/// nothing configured yet serves; a file or document always has at least one environment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    pub environments: Vec<Environment>,
    /// Named backends (`upstreams:`) that proxies may use with `backend: {upstream: NAME}`.
    pub upstreams: Vec<NamedUpstream>,
    pub proxies: Vec<Proxy>,
    /// Named identities with groups and (hashed) credentials, for authentication policies.
    pub consumers: Vec<Consumer>,
    /// The admin API's listener; `None` when the file has no `admin` section.
    pub admin: Option<AdminConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminConfig {
    /// Never the same socket as an environment's listener.
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub name: String,
    /// HTTP and WebSocket share this listener.
    pub listen: SocketAddr,
    /// The environment-level WebSocket switch (default false).
    pub websocket: bool,
    pub tls: Option<TlsFiles>,
    pub timeouts: Timeouts,
    /// How long in-flight HTTP requests may take to finish on shutdown (default 30s).
    pub shutdown_grace: Duration,
    /// When a proxy is undeployed from this environment, its WebSocket sessions here are
    /// closed with 1001 after this long (default 30s; zero closes them at once). `None`
    /// (`never` in the file) lets them finish on their own.
    pub undeploy_grace: Option<Duration>,
    pub access_log: AccessLogSettings,
    /// Run for every proxy deployed here, before the proxy's own.
    pub policies: Vec<PolicyEntry>,
    /// Local addresses this environment's connections to backends leave from (empty: the
    /// kernel's choice): WebSocket sessions and HTTP connections take them in turn. Each has
    /// its own ephemeral ports.
    pub backend_source_addresses: Vec<std::net::IpAddr>,
}

/// An environment's access log (`access_log:` in the file).
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogSettings {
    /// `None` (`format: off`): nothing is logged.
    pub format: Option<AccessLogFormat>,
    /// `None`: the gateway's default destination (standard output for `strait run`).
    pub file: Option<PathBuf>,
    /// Also log each WebSocket handshake, not only the session's end.
    pub log_handshake: bool,
}

impl Default for AccessLogSettings {
    fn default() -> Self {
        AccessLogSettings {
            format: Some(AccessLogFormat::Json),
            file: None,
            log_handshake: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// nginx's `combined`.
    Combined,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// TCP (and TLS) connect to the backend (default 5s).
    pub connect: Duration,
    /// Until the backend's response head arrives, from the end of the request body; then the
    /// most the response body may pause between two parts (it is cut after that); also
    /// how long a request body may send nothing (default 60s).
    pub response: Duration,
    /// A client connection whose client takes nothing for this long while the gateway has
    /// bytes for it (a response it stopped reading) is closed (on HTTP/2, that response's
    /// stream is reset), as is a WebSocket session whose client or backend takes none of the
    /// frames waiting for it; an HTTP/2 client silent this
    /// long is pinged and dropped if it does not answer within as long (default 60s).
    pub send: Duration,
    /// A client connection with no request in progress for this long is closed: HTTP/1
    /// between requests (a request head, the first one included, must arrive within it),
    /// HTTP/2 with no open stream (GOAWAY, noticed within twice as long); a new
    /// connection's TLS handshake and first bytes get at most 30s of it (default 30s).
    pub client_idle: Duration,
    /// A WebSocket session with no frames either way for this long is closed with 1001 (default 1h).
    pub websocket_idle: Duration,
    /// Keepalive: a side of a WebSocket session that sent nothing for this long is pinged by
    /// the gateway (default off).
    pub websocket_ping: Option<Duration>,
    /// A pinged side that sends nothing back within this long is taken as gone (default 10s).
    pub websocket_pong_timeout: Duration,
    /// A WebSocket session is closed with 1001 after this long, however busy (default off).
    pub websocket_max_lifetime: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(60),
            send: Duration::from_secs(60),
            client_idle: Duration::from_secs(30),
            websocket_idle: Duration::from_secs(3600),
            websocket_ping: None,
            websocket_pong_timeout: Duration::from_secs(10),
            websocket_max_lifetime: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Proxy {
    pub name: String,
    pub path: ProxyPath,
    /// Fully resolved: a `backend: {upstream: NAME}` holds a copy of that upstream's
    /// settings, with `upstream: Some(NAME)`.
    pub backend: BackendSpec,
    /// Names of environments this proxy is deployed to (each one exists).
    pub deploy: Vec<String>,
    /// `None`: any method.
    pub methods: Option<Vec<http::Method>>,
    pub preserve_host: bool,
    pub backend_tls: Option<BackendTls>,
    pub policies: Vec<PolicyEntry>,
}

/// One entry of `upstreams:`: a backend with a name, shared by the proxies that name it.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedUpstream {
    pub name: String,
    /// Its `upstream` is `Some(name)`.
    pub backend: BackendSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendTls {
    /// Extra trust anchor for https backends, on top of the system roots.
    pub ca_file: PathBuf,
}
