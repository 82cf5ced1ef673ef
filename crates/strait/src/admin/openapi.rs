//! The OpenAPI document of the admin API, derived from the handlers' `#[utoipa::path]`
//! attributes and the response types, so it cannot drift from what is served.
//!
//! The environment, proxy, upstream and consumer bodies reach `Control` as JSON values (the
//! configuration validator is their schema); the types here only describe them, with the
//! YAML file's field names. A test feeds their examples through the validator, so an example
//! or a field the validator does not know fails the build's tests. The `Policy` schema is
//! generated from the policy registry, so a new policy type is documented by its own file.

use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, ResponseBuilder, content::ContentBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use super::connections::{self, Closed, Connection, ConnectionList, Traffic};
use super::error::{ErrorBody, ErrorKind, Problem};
use super::routes::{
    self, ConsumerList, Deployment, Deployments, EnvironmentList, Health, History, ProxyList,
    UpstreamList,
};
use super::targets::{self, BreakerStatus, TargetHealth, TargetList, TargetStatus};
use crate::policy::{self, Shape};

/// The name of the bearer security scheme in the document (spelled out in `security(...)` too).
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Strait admin API",
        description = "The control plane of a Strait gateway: environments, proxies and their \
            deployments, named upstreams, consumers. Every write is live in the data plane when its answer arrives. With \
            STRAIT_ADMIN_TOKEN set, every call except GET /health needs \
            `Authorization: Bearer <token>`. Errors are JSON \
            `{\"status\", \"error\", \"message\"}` (plus `problems` on 422).",
    ),
    paths(
        routes::health,
        routes::openapi_json,
        routes::metrics,
        routes::config,
        routes::history,
        routes::list_environments,
        routes::get_environment,
        routes::put_environment,
        routes::delete_environment,
        routes::list_proxies,
        routes::get_proxy,
        routes::put_proxy,
        routes::delete_proxy,
        targets::list,
        routes::list_deployments,
        routes::deploy,
        routes::undeploy,
        routes::list_consumers,
        routes::get_consumer,
        routes::put_consumer,
        routes::delete_consumer,
        routes::list_upstreams,
        routes::get_upstream,
        routes::put_upstream,
        routes::delete_upstream,
        connections::list,
        connections::get,
        connections::close,
        connections::close_matching,
    ),
    components(schemas(
        Environment,
        Proxy,
        Backend,
        BackendTargets,
        UpstreamRef,
        Upstream,
        UpstreamList,
        Target,
        WeightedTarget,
        BalanceMode,
        RebalanceMode,
        HealthChecks,
        ActiveHealthCheck,
        PassiveHealthCheck,
        CircuitBreaker,
        Policy,
        Consumer,
        ConsumerCredentials,
        BasicAuthCredentials,
        ConsumerSummary,
        CredentialSummary,
        UsernameOnly,
        ConsumerList,
        EnvironmentList,
        ProxyList,
        Deployments,
        Deployment,
        History,
        Health,
        ErrorBody,
        ErrorKind,
        Problem,
        Connection,
        ConnectionList,
        Traffic,
        Closed,
        TargetList,
        TargetStatus,
        TargetHealth,
        BreakerStatus,
    )),
    modifiers(&Auth, &Policies),
    security(("bearer" = [])),
    tags(
        (name = "status", description = "Health, this document, metrics, the whole configuration and the history"),
        (name = "environments", description = "Listeners with their TLS and timeouts"),
        (name = "proxies", description = "Paths routed to backends"),
        (name = "deployments", description = "Which proxies an environment serves"),
        (name = "upstreams", description = "Named backends with several targets, shared by proxies"),
        (name = "consumers", description = "Identities with groups and hashed credentials, for authentication policies"),
        (name = "connections", description = "Live WebSocket sessions: who holds them, their traffic, closing them"),
    ),
)]
pub struct AdminApi;

/// Adds the bearer scheme and the 401 answer of every operation that needs the token.
struct Auth;

impl Modify for Auth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The value of STRAIT_ADMIN_TOKEN. Needed only when the gateway was \
                         started with it (always, off loopback).",
                    ))
                    .build(),
            ),
        );
        let unauthorized = ResponseBuilder::new()
            .description(
                "`unauthorized`: the bearer token is missing or wrong (with `WWW-Authenticate: Bearer`)",
            )
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ]
            .into_iter()
            .flatten()
            {
                // `security: [{}]` marks the open operations (GET /health).
                let open = operation
                    .security
                    .as_ref()
                    .is_some_and(|s| s.iter().all(|r| *r == Default::default()));
                if !open {
                    operation
                        .responses
                        .responses
                        .insert("401".into(), unauthorized.clone().into());
                }
            }
        }
    }
}

/// Replaces the `Policy` placeholder with one schema per registered policy type.
struct Policies;

impl Modify for Policies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let one_of = policy::REGISTRY
            .iter()
            .fold(OneOfBuilder::new(), |one_of, kind| {
                one_of.item(policy_schema(kind))
            })
            .description(Some(
                "One policy: `type` names it, the other fields are its settings. Policies run \
                 phase by phase (access → authentication → authorization → limits → transforms), the \
                 environment's before the proxy's within a phase.",
            ));
        components
            .schemas
            .insert("Policy".into(), RefOr::T(Schema::OneOf(one_of.build())));
    }
}

fn policy_schema(kind: &policy::Kind) -> ObjectBuilder {
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let schema = ObjectBuilder::new()
        .schema_type(Type::Object)
        .title(Some(kind.name))
        .description(Some(format!("{} (phase: {:?})", kind.doc, kind.phase)))
        .property("type", string().enum_values(Some([kind.name])))
        .required("type")
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)));
    kind.fields.iter().fold(schema, |schema, field| {
        let doc = Some(field.doc);
        let property: RefOr<Schema> = match field.shape {
            Shape::Text => string().description(doc).into(),
            Shape::Flag => ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .description(doc)
                .into(),
            Shape::Texts => ArrayBuilder::new().items(string()).description(doc).into(),
            Shape::Number => ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .description(doc)
                .into(),
            Shape::Duration => string().description(doc).into(),
        };
        schema.property(field.name, property)
    })
}

/// The document as JSON text.
pub fn document_json() -> Result<String, serde_json::Error> {
    AdminApi::openapi().to_json()
}

/// An environment, with the fields of the YAML file.
#[derive(ToSchema)]
#[schema(examples(json!({
    "name": "production",
    "listen": "0.0.0.0:8443",
    "websocket": true,
    "tls": {"cert": "certs/gw.pem", "key": "certs/gw-key.pem"},
    "timeouts": {
        "connect": "5s", "response": "60s", "send": "60s", "client_idle": "30s", "websocket_idle": "1h",
        "websocket_ping": "30s", "websocket_pong_timeout": "10s", "websocket_max_lifetime": "24h"
    },
    "shutdown_grace": "30s",
    "undeploy_grace": "30s",
    "access_log": {"format": "json", "file": "/var/log/strait/access.log", "log_handshake": false},
    "policies": [{"type": "api_key", "header": "X-API-Key", "query": "api_key", "keep": false}],
    "backend_source_addresses": ["10.0.0.2", "10.0.0.3"]
})))]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub struct Environment {
    /// Optional in a PUT body (the URL names it); when given it must match the URL.
    #[schema(required = false, example = "production")]
    name: String,
    /// Address HTTP and WebSocket share, `host:port`.
    #[schema(example = "127.0.0.1:8080")]
    listen: String,
    /// Whether WebSocket upgrades are allowed.
    #[schema(required = false, default = false)]
    websocket: bool,
    /// Serve HTTPS (and WSS) with these files; relative paths are anchored at the
    /// configuration's folder.
    #[schema(required = false)]
    tls: EnvironmentTls,
    #[schema(required = false)]
    timeouts: Timeouts,
    /// How long in-flight HTTP requests may take to finish on shutdown (a duration such as `30s`).
    #[schema(required = false, default = "30s")]
    shutdown_grace: String,
    /// How long WebSocket sessions of a proxy undeployed from this environment may carry on
    /// before they are closed with 1001: a duration, `0` (at once) or `never`.
    #[schema(required = false, default = "30s")]
    undeploy_grace: String,
    #[schema(required = false)]
    access_log: AccessLog,
    /// Run for every proxy deployed here, before the proxy's own.
    #[schema(required = false)]
    policies: Vec<Policy>,
    /// Local IP addresses connections to backends leave from (default: the kernel's choice):
    /// WebSocket sessions and HTTP connections take them in turn. Each has its own range of
    /// ephemeral ports.
    #[schema(required = false, example = json!(["10.0.0.2", "10.0.0.3"]))]
    backend_source_addresses: Vec<String>,
}

/// Placeholder: replaced by one schema per policy type (see `Policies`).
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub struct Policy {
    r#type: String,
}

/// This environment's access log.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub struct AccessLog {
    /// `json` (one object per line), `combined` (nginx's format) or `off`.
    #[schema(required = false, default = "json")]
    format: String,
    /// Appended to; default: the gateway's standard output.
    #[schema(required = false)]
    file: String,
    /// Also log each WebSocket handshake, not only the session's end.
    #[schema(required = false, default = false)]
    log_handshake: bool,
}

/// Certificate chain and private key, PEM files.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub struct EnvironmentTls {
    #[schema(example = "certs/gw.pem")]
    cert: String,
    #[schema(example = "certs/gw-key.pem")]
    key: String,
}

/// Durations such as `500ms`, `5s`, `2m`, `1h`.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub struct Timeouts {
    /// TCP (and TLS) connect to the backend.
    #[schema(required = false, default = "5s")]
    connect: String,
    /// Until the backend's response head arrives, from the end of the request body; then the
    /// most the response body may pause between two parts before it is cut; also how long a
    /// request body may send nothing before it is refused with 408.
    #[schema(required = false, default = "60s")]
    response: String,
    /// A client that takes nothing for this long while the gateway has bytes for it (a
    /// response it stopped reading) is disconnected (on HTTP/2, that response's stream is
    /// reset), and so is a WebSocket session whose client
    /// or backend takes none of the frames waiting for it; an HTTP/2 client silent this long
    /// is pinged and dropped if it does not answer within as long.
    #[schema(required = false, default = "60s")]
    send: String,
    /// A client connection with no request in progress for this long is closed: HTTP/1
    /// between requests (a request head must arrive within it), HTTP/2 with no open stream.
    #[schema(required = false, default = "30s")]
    client_idle: String,
    /// A WebSocket session with no frames either way for this long is closed (pongs do not count).
    #[schema(required = false, default = "1h")]
    websocket_idle: String,
    /// Ping a side of a WebSocket session that sent nothing for this long (off when absent).
    #[schema(required = false, example = "30s")]
    websocket_ping: String,
    /// A pinged side that sends nothing back within this long is dropped.
    #[schema(required = false, default = "10s")]
    websocket_pong_timeout: String,
    /// Close every WebSocket session with 1001 after this long (off when absent).
    #[schema(required = false, example = "24h")]
    websocket_max_lifetime: String,
}

/// A proxy, with the fields of the YAML file except `deploy` (deployments have their own
/// routes).
#[derive(ToSchema)]
#[schema(examples(json!({
    "name": "users",
    "path": "/api/v1/users/*",
    "backend": "https://users.internal:8443/v1",
    "methods": ["GET", "POST"],
    "preserve_host": false,
    "backend_tls": {"ca_file": "certs/internal-ca.pem"},
    "policies": [
        {"type": "basic_auth", "realm": "users", "keep": false},
        {"type": "acl", "allow": ["admins"]}
    ]
})))]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub struct Proxy {
    /// Optional in a PUT body (the URL names it); when given it must match the URL.
    #[schema(required = false, example = "users")]
    name: String,
    /// The path it serves; a trailing `/*` serves everything under it.
    #[schema(example = "/api/v1/users/*")]
    path: String,
    backend: Backend,
    /// The methods allowed; absent means any.
    #[schema(required = false, example = json!(["GET", "POST"]))]
    methods: Vec<String>,
    /// Forward the client's `Host` instead of the backend's.
    #[schema(required = false, default = false)]
    preserve_host: bool,
    #[schema(required = false)]
    backend_tls: BackendTls,
    /// Run after the environment's policies, phase by phase.
    #[schema(required = false)]
    policies: Vec<Policy>,
}

/// Where a proxy forwards requests: one `http://` or `https://` URL, several targets with
/// how to share and watch them, or `{"upstream": NAME}` for a named upstream (`upstreams:`
/// of a configuration file).
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub enum Backend {
    /// One URL: a single target with every default.
    Url(String),
    Targets(BackendTargets),
    Upstream(UpstreamRef),
}

/// A backend with one or more targets. `backend_tls` applies to every target.
#[derive(ToSchema)]
#[schema(examples(json!({
    "targets": [{"url": "http://10.0.0.1:8080/service", "weight": 2}, "http://10.0.0.2:8080/service"],
    "balance": "consistent_hash",
    "hash_on": "header:X-User-Id",
    "health": {
        "active": {"path": "/health", "interval": "5s", "timeout": "1s", "healthy_after": 2, "unhealthy_after": 3},
        "passive": {"unhealthy_after": 5, "cool_down": "10s"}
    },
    "retries": 2,
    "circuit_breaker": {"failure_ratio": 0.5, "min_requests": 20, "open_for": "30s"},
    "rebalance": "keep"
})))]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub struct BackendTargets {
    /// At least one; each URL once.
    targets: Vec<Target>,
    /// Default `round_robin`.
    #[schema(required = false)]
    balance: BalanceMode,
    /// What `consistent_hash` hashes (required with it, refused otherwise):
    /// `header:NAME`, `cookie:NAME`, `query:NAME` or `client_ip`.
    #[schema(required = false, example = "header:X-User-Id")]
    hash_on: String,
    /// Off unless given.
    #[schema(required = false)]
    health: HealthChecks,
    /// Further attempts after the first, each on another target when there is one: only
    /// after a failed connect, or a 502/503/504 to an idempotent request without a streamed
    /// body.
    #[schema(required = false, default = 0, minimum = 0, maximum = 10)]
    retries: u32,
    /// Off unless given; opens per target.
    #[schema(required = false)]
    circuit_breaker: CircuitBreaker,
    /// Default `keep`.
    #[schema(required = false)]
    rebalance: RebalanceMode,
}

/// A named upstream (`upstreams:` of the YAML file): the settings of a backend with targets,
/// shared by every proxy whose backend is `{"upstream": NAME}`.
#[derive(ToSchema)]
#[schema(examples(json!({
    "name": "users-pool",
    "targets": [{"url": "http://10.0.0.1:8080/service", "weight": 2}, "http://10.0.0.2:8080/service"],
    "balance": "consistent_hash",
    "hash_on": "header:X-User-Id",
    "health": {
        "active": {"path": "/health", "interval": "5s", "timeout": "1s", "healthy_after": 2, "unhealthy_after": 3},
        "passive": {"unhealthy_after": 5, "cool_down": "10s"}
    },
    "retries": 2,
    "circuit_breaker": {"failure_ratio": 0.5, "min_requests": 20, "open_for": "30s"},
    "rebalance": "keep"
})))]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub struct Upstream {
    /// Optional in a PUT body (the URL names it); when given it must match the URL.
    #[schema(required = false, example = "users-pool")]
    name: String,
    /// At least one; each URL once.
    targets: Vec<Target>,
    /// Default `round_robin`.
    #[schema(required = false)]
    balance: BalanceMode,
    /// What `consistent_hash` hashes (required with it, refused otherwise):
    /// `header:NAME`, `cookie:NAME`, `query:NAME` or `client_ip`.
    #[schema(required = false, example = "header:X-User-Id")]
    hash_on: String,
    /// Off unless given.
    #[schema(required = false)]
    health: HealthChecks,
    /// Further attempts after the first, each on another target when there is one: only
    /// after a failed connect, or a 502/503/504 to an idempotent request without a streamed
    /// body.
    #[schema(required = false, default = 0, minimum = 0, maximum = 10)]
    retries: u32,
    /// Off unless given; opens per target.
    #[schema(required = false)]
    circuit_breaker: CircuitBreaker,
    /// Default `keep`.
    #[schema(required = false)]
    rebalance: RebalanceMode,
}

/// A named upstream, used by name alone.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub struct UpstreamRef {
    #[schema(example = "users-pool")]
    upstream: String,
}

/// A target: a URL (weight 1) or a URL with a weight.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub enum Target {
    Url(String),
    Weighted(WeightedTarget),
}

#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub struct WeightedTarget {
    /// `http://` or `https://`, as a single backend URL.
    #[schema(example = "http://10.0.0.1:8080/service")]
    url: String,
    /// Its share of requests relative to the others.
    #[schema(required = false, default = 1, minimum = 1, maximum = 1000)]
    weight: u32,
}

/// How requests are shared among the targets that are up.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub enum BalanceMode {
    /// Weighted and smooth.
    RoundRobin,
    /// Fewest open WebSocket sessions plus in-flight requests, relative to weight.
    LeastConnections,
    /// The same `hash_on` key lands on the same target while it is up.
    ConsistentHash,
}

/// What happens to WebSocket sessions on a target removed from the list.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub enum RebalanceMode {
    /// They stay open until they end.
    Keep,
    /// They are closed with 1001 after the environment's `undeploy_grace`.
    Drain,
}

/// Each check is off unless given; `{}` turns it on with the defaults.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub struct HealthChecks {
    #[schema(required = false)]
    active: ActiveHealthCheck,
    #[schema(required = false)]
    passive: PassiveHealthCheck,
}

/// Probes each target with `GET <target path><path>`; a 2xx or 3xx within `timeout` is healthy.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub struct ActiveHealthCheck {
    #[schema(required = false, default = "/")]
    path: String,
    #[schema(required = false, default = "5s")]
    interval: String,
    /// Shorter than `interval`.
    #[schema(required = false, default = "1s")]
    timeout: String,
    /// Consecutive good probes to mark a down target up.
    #[schema(required = false, default = 2, minimum = 1, maximum = 1000)]
    healthy_after: u32,
    /// Consecutive bad probes to mark an up target down.
    #[schema(required = false, default = 3, minimum = 1, maximum = 1000)]
    unhealthy_after: u32,
}

/// Marks a target down after consecutive connect failures or 5xx answers from live traffic.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub struct PassiveHealthCheck {
    #[schema(required = false, default = 5, minimum = 1, maximum = 1000)]
    unhealthy_after: u32,
    /// Without an active check, a target marked down is tried again after this long.
    #[schema(required = false, default = "10s")]
    cool_down: String,
}

/// Opens per target when too many of its recent requests failed; after `open_for` one trial
/// request goes through.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub struct CircuitBreaker {
    /// Above 0, at most 1.
    #[schema(required = false, default = 0.5)]
    failure_ratio: f64,
    /// Requests in the window before the ratio counts.
    #[schema(required = false, default = 20, minimum = 1)]
    min_requests: u32,
    #[schema(required = false, default = "30s")]
    open_for: String,
}

/// A consumer, with the fields of the YAML file. Secrets may be given in plaintext
/// (`api_keys`, `password`) or already hashed (`api_key_digests`, `password_hash`); only
/// hashes are stored.
#[derive(ToSchema)]
#[schema(examples(
    json!({
        "name": "alice",
        "groups": ["admins", "beta"],
        "credentials": {
            "api_keys": ["alice-key-1"],
            "basic_auth": {"username": "alice", "password": "correct horse"},
            "jwt_subject": "alice@example.com"
        }
    }),
    json!({
        "name": "alice",
        "groups": ["admins", "beta"],
        "credentials": {
            "api_key_digests": ["sha256:440ed3c8f64f49e986bac593bf8994573908b53f67f0edf23db400d18673795c"],
            "basic_auth": {"username": "alice", "password_hash": PASSWORD_HASH_EXAMPLE},
            "jwt_subject": "alice@example.com"
        }
    })
))]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub struct Consumer {
    /// Optional in a PUT body (the URL names it); when given it must match the URL.
    #[schema(required = false, example = "alice")]
    name: String,
    /// What `acl` policies allow or deny.
    #[schema(required = false, example = json!(["admins", "beta"]))]
    groups: Vec<String>,
    #[schema(required = false)]
    credentials: ConsumerCredentials,
}

/// How the consumer authenticates. Each key, username and subject belongs to one consumer.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub struct ConsumerCredentials {
    /// API keys in plaintext; stored as their SHA-256 digests.
    #[schema(required = false)]
    api_keys: Vec<String>,
    /// API keys already digested: `sha256:<64 hex digits>`.
    #[schema(required = false)]
    api_key_digests: Vec<String>,
    #[schema(required = false)]
    basic_auth: BasicAuthCredentials,
    /// The JWT subject that maps to this consumer.
    #[schema(required = false)]
    jwt_subject: String,
}

/// A basic-auth login: `password` or `password_hash`, not both.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub struct BasicAuthCredentials {
    /// Without a colon.
    username: String,
    /// Plaintext; stored as an argon2id hash.
    #[schema(required = false)]
    password: String,
    /// An argon2id PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`).
    #[schema(required = false)]
    password_hash: String,
}

/// A consumer as the API shows it: which credentials it has, never a secret or a hash.
#[derive(ToSchema)]
#[allow(dead_code, reason = "documentation only: answers are JSON values")]
pub struct ConsumerSummary {
    #[schema(example = "alice")]
    name: String,
    #[schema(example = json!(["admins", "beta"]))]
    groups: Vec<String>,
    credentials: CredentialSummary,
}

#[derive(ToSchema)]
#[allow(dead_code, reason = "documentation only: answers are JSON values")]
pub struct CredentialSummary {
    /// How many API keys the consumer has.
    api_keys: u64,
    /// Present when the consumer has a basic-auth login.
    #[schema(required = false)]
    basic_auth: UsernameOnly,
    #[schema(required = false)]
    jwt_subject: String,
}

#[derive(ToSchema)]
#[allow(dead_code, reason = "documentation only: answers are JSON values")]
pub struct UsernameOnly {
    username: String,
}

/// A real hash of `correct horse` (argon2id, default parameters), for the example.
const PASSWORD_HASH_EXAMPLE: &str = "$argon2id$v=19$m=19456,t=2,p=1$YeFDHOh0RnMg4qduFRrF1Q$xhCHQslnBDihY2eijCpAgfnfMI0mSmQ/K9dF9CYvPMk";

/// Trust for an https backend, on top of the system roots.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documentation only: bodies reach Control as JSON values"
)]
pub struct BackendTls {
    /// PEM file with the extra CA certificate(s).
    #[schema(example = "certs/internal-ca.pem")]
    ca_file: String,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use serde_json::{Value, json};

    use super::*;

    fn document() -> Value {
        serde_json::from_str(&document_json().unwrap()).unwrap()
    }

    #[test]
    fn document_is_openapi_3_json() {
        let doc = document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        assert_eq!(doc["info"]["title"], "Strait admin API");
    }

    #[test]
    fn every_route_is_listed_with_its_methods() {
        let doc = document();
        let expected: &[(&str, &[&str])] = &[
            ("/health", &["get"]),
            ("/openapi.json", &["get"]),
            ("/metrics", &["get"]),
            ("/config", &["get"]),
            ("/history", &["get"]),
            ("/environments", &["get"]),
            ("/environments/{name}", &["delete", "get", "put"]),
            ("/proxies", &["get"]),
            ("/proxies/{name}", &["delete", "get", "put"]),
            ("/proxies/{name}/deployments", &["get"]),
            ("/proxies/{name}/targets", &["get"]),
            ("/consumers", &["get"]),
            ("/consumers/{name}", &["delete", "get", "put"]),
            ("/upstreams", &["get"]),
            ("/upstreams/{name}", &["delete", "get", "put"]),
            (
                "/proxies/{name}/deployments/{environment}",
                &["delete", "put"],
            ),
            ("/connections", &["delete", "get"]),
            ("/connections/{id}", &["delete", "get"]),
        ];
        let paths = doc["paths"].as_object().unwrap();
        let listed: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
        let wanted: BTreeSet<&str> = expected.iter().map(|(p, _)| *p).collect();
        assert_eq!(listed, wanted);
        for (path, methods) in expected {
            let found: Vec<&str> = paths[*path]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .filter(|k| {
                    ["get", "put", "post", "delete", "patch", "head", "options"].contains(k)
                })
                .collect();
            assert_eq!(&found, methods, "{path}");
        }
    }

    #[test]
    fn the_served_methods_match_the_document() {
        use super::super::request::Route;
        let doc = document();
        let samples = [
            ("/health", "/health"),
            ("/openapi.json", "/openapi.json"),
            ("/config", "/config"),
            ("/history", "/history"),
            ("/environments", "/environments"),
            ("/environments/{name}", "/environments/e"),
            ("/proxies", "/proxies"),
            ("/proxies/{name}", "/proxies/p"),
            ("/proxies/{name}/deployments", "/proxies/p/deployments"),
            ("/proxies/{name}/targets", "/proxies/p/targets"),
            ("/consumers", "/consumers"),
            ("/consumers/{name}", "/consumers/c"),
            ("/upstreams", "/upstreams"),
            ("/upstreams/{name}", "/upstreams/u"),
            (
                "/proxies/{name}/deployments/{environment}",
                "/proxies/p/deployments/e",
            ),
        ];
        for (template, sample) in samples {
            let mut served: Vec<String> = Route::parse(sample)
                .unwrap()
                .methods()
                .iter()
                .map(|m| m.as_str().to_ascii_lowercase())
                .collect();
            served.sort();
            let mut documented: Vec<String> = doc["paths"][template]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            documented.sort();
            assert_eq!(served, documented, "{template}");
        }
    }

    #[test]
    fn bearer_scheme_guards_everything_but_health() {
        let doc = document();
        assert_eq!(
            doc["components"]["securitySchemes"][BEARER],
            json!({"type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"][BEARER]["description"]})
        );
        assert_eq!(doc["security"], json!([{ BEARER: [] }]));
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let has_401 = operation["responses"].get("401").is_some();
                if path == "/health" {
                    assert_eq!(operation["security"], json!([{}]), "{method} {path}");
                    assert!(!has_401);
                } else {
                    assert!(operation.get("security").is_none(), "{method} {path}");
                    assert!(has_401, "{method} {path} lacks its 401");
                }
            }
        }
    }

    #[test]
    fn error_kinds_are_listed() {
        let doc = document();
        let kinds = &doc["components"]["schemas"]["ErrorKind"]["enum"];
        for kind in [
            "not_found",
            "read_only",
            "invalid",
            "conflict",
            "storage",
            "bad_request",
            "no_route",
            "method_not_allowed",
            "payload_too_large",
            "unauthorized",
            "uri_too_long",
            "headers_too_large",
        ] {
            assert!(
                kinds.as_array().unwrap().contains(&json!(kind)),
                "{kind} in {kinds}"
            );
        }
    }

    /// The leaf keys of a JSON value, dotted (`tls.cert`).
    fn keys(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
        if let Value::Object(map) = value {
            for (key, inner) in map {
                let name = format!("{prefix}{key}");
                keys(inner, &format!("{name}."), out);
                out.insert(name);
            }
        }
    }

    /// The property names of a schema, following `$ref`s, dotted.
    fn properties(doc: &Value, schema: &Value, prefix: &str, out: &mut BTreeSet<String>) {
        let schema = match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let name = reference.rsplit('/').next().unwrap();
                &doc["components"]["schemas"][name]
            }
            None => schema,
        };
        if let Some(map) = schema.get("properties").and_then(Value::as_object) {
            for (key, inner) in map {
                let name = format!("{prefix}{key}");
                properties(doc, inner, &format!("{name}."), out);
                out.insert(name);
            }
        }
    }

    /// The documented fields, their example and the configuration validator agree: the
    /// example uses every documented field and validates as a configuration file.
    #[test]
    fn body_schemas_match_the_configuration_format() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let example = |name: &str| schemas[name]["examples"][0].clone();
        let (environment, mut proxy) = (example("Environment"), example("Proxy"));
        for (name, sample) in [("Environment", &environment), ("Proxy", &proxy)] {
            let (mut documented, mut used) = (BTreeSet::new(), BTreeSet::new());
            properties(&doc, &schemas[name], "", &mut documented);
            keys(sample, "", &mut used);
            assert_eq!(documented, used, "{name}: schema properties vs example");
        }
        proxy["deploy"] = json!(["production"]);
        let file = json!({"environments": [environment], "proxies": [proxy]});
        // JSON is YAML.
        let parsed = crate::config::parse_str(&file.to_string(), Path::new("/etc/strait/x.yaml"));
        assert!(parsed.is_ok(), "{parsed:?}");

        // The consumer's examples (plaintext and hashed secrets) together use every field,
        // and each one validates; the hashed one holds the plaintext one's secrets.
        let examples = schemas["Consumer"]["examples"].as_array().unwrap();
        let (mut documented, mut used) = (BTreeSet::new(), BTreeSet::new());
        properties(&doc, &schemas["Consumer"], "", &mut documented);
        for example in examples {
            keys(example, "", &mut used);
            let file = json!({"environments": [environment], "consumers": [example]});
            let parsed =
                crate::config::parse_str(&file.to_string(), Path::new("/etc/strait/x.yaml"));
            assert!(parsed.is_ok(), "{parsed:?}");
        }
        assert_eq!(documented, used, "Consumer: schema properties vs examples");
        let [plain, hashed] = examples.as_slice() else {
            panic!("two consumer examples")
        };
        assert_eq!(
            crate::policy::consumers::seal(plain, Some(hashed)).unwrap(),
            *hashed,
            "the hashed example is the plaintext one sealed"
        );
    }

    /// A backend with targets: the example uses every documented field and is a valid
    /// backend; `backend` is a URL, that mapping or `{upstream: NAME}`.
    #[test]
    fn the_backend_schema_matches_the_configuration_format() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["Backend"]["oneOf"].as_array().unwrap().len(), 3);
        let example = schemas["BackendTargets"]["examples"][0].clone();
        let (mut documented, mut used) = (BTreeSet::new(), BTreeSet::new());
        properties(&doc, &schemas["BackendTargets"], "", &mut documented);
        keys(&example, "", &mut used);
        assert_eq!(
            documented, used,
            "BackendTargets: schema properties vs example"
        );
        let file = json!({
            "environments": [{"name": "a", "listen": "127.0.0.1:0"}],
            "upstreams": [{"name": "pool", "targets": ["http://b"]}],
            "proxies": [
                {"name": "p", "path": "/p", "backend": example},
                {"name": "q", "path": "/q", "backend": {"upstream": "pool"}}
            ]
        });
        let parsed = crate::config::parse_str(&file.to_string(), Path::new("/etc/strait/x.yaml"));
        assert!(parsed.is_ok(), "{parsed:?}");
    }

    /// The upstream's example uses every documented field and validates as a file's
    /// `upstreams:` entry; its fields are a backend's with targets plus `name`.
    #[test]
    fn the_upstream_schema_matches_the_configuration_format() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let example = schemas["Upstream"]["examples"][0].clone();
        let (mut documented, mut used) = (BTreeSet::new(), BTreeSet::new());
        properties(&doc, &schemas["Upstream"], "", &mut documented);
        keys(&example, "", &mut used);
        assert_eq!(documented, used, "Upstream: schema properties vs example");
        let mut backend = BTreeSet::from(["name".to_owned()]);
        properties(&doc, &schemas["BackendTargets"], "", &mut backend);
        assert_eq!(documented, backend, "Upstream vs BackendTargets");
        let file = json!({
            "environments": [{"name": "a", "listen": "127.0.0.1:0"}],
            "upstreams": [example],
            "proxies": [{"name": "p", "path": "/p", "backend": {"upstream": "users-pool"}}]
        });
        let parsed = crate::config::parse_str(&file.to_string(), Path::new("/etc/strait/x.yaml"));
        assert!(parsed.is_ok(), "{parsed:?}");
    }

    #[test]
    fn every_policy_type_is_documented_with_its_fields() {
        let doc = document();
        let variants = doc["components"]["schemas"]["Policy"]["oneOf"]
            .as_array()
            .unwrap();
        assert_eq!(variants.len(), crate::policy::REGISTRY.len());
        for (variant, kind) in variants.iter().zip(crate::policy::REGISTRY) {
            assert_eq!(variant["properties"]["type"]["enum"], json!([kind.name]));
            let mut fields: Vec<&str> = variant["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            fields.sort_unstable();
            let mut expected: Vec<&str> = kind.fields.iter().map(|f| f.name).collect();
            expected.push("type");
            expected.sort_unstable();
            assert_eq!(fields, expected, "{}", kind.name);
        }
    }
}
