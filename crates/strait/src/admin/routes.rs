//! The handlers: one function per operation, each a call on [`Control`] turned into a
//! response. Their `#[utoipa::path]` attributes are the OpenAPI document, so the document
//! lists exactly what is served here.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::connections;
use super::error::{ApiError, ErrorBody, ErrorKind};
use super::openapi::{self, Consumer, ConsumerSummary, Environment, Proxy, Upstream};
use super::request::Call;
use super::targets;
use crate::control::{Control, HistoryPage, Mode, Written};

pub type Reply = Result<Response<Full<Bytes>>, ApiError>;

/// Runs one call.
pub async fn execute(control: &Control, call: Call) -> Reply {
    match call {
        Call::Health => health(control),
        Call::OpenApi => openapi_json(),
        Call::Metrics => metrics(control),
        Call::Config => config(control).await,
        Call::History { page, per_page } => history(control, page, per_page).await,
        Call::ListEnvironments => list_environments(control).await,
        Call::GetEnvironment(name) => get_environment(control, &name).await,
        Call::PutEnvironment(name, body) => put_environment(control, &name, body).await,
        Call::DeleteEnvironment { name, force } => delete_environment(control, &name, force).await,
        Call::ListProxies => list_proxies(control).await,
        Call::GetProxy(name) => get_proxy(control, &name).await,
        Call::PutProxy(name, body) => put_proxy(control, &name, body).await,
        Call::DeleteProxy(name) => delete_proxy(control, &name).await,
        Call::ListDeployments(proxy) => list_deployments(control, &proxy).await,
        Call::ListTargets(proxy) => targets::list(control, &proxy),
        Call::Deploy { proxy, environment } => deploy(control, &proxy, &environment).await,
        Call::Undeploy { proxy, environment } => undeploy(control, &proxy, &environment).await,
        Call::ListConsumers => list_consumers(control).await,
        Call::GetConsumer(name) => get_consumer(control, &name).await,
        Call::PutConsumer(name, body) => put_consumer(control, &name, body).await,
        Call::DeleteConsumer(name) => delete_consumer(control, &name).await,
        Call::ListUpstreams => list_upstreams(control).await,
        Call::GetUpstream(name) => get_upstream(control, &name).await,
        Call::PutUpstream(name, body) => put_upstream(control, &name, body).await,
        Call::DeleteUpstream(name) => delete_upstream(control, &name).await,
        Call::ListConnections {
            filter,
            page,
            per_page,
        } => connections::list(control, &filter, page, per_page),
        Call::GetConnection(id) => connections::get(control, id),
        Call::CloseConnection { id, code, reason } => connections::close(control, id, code, reason),
        Call::CloseConnections {
            filter,
            code,
            reason,
        } => connections::close_matching(control, &filter, code, &reason),
    }
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModeName {
    /// Started with `--config FILE`: the file is the source of truth; writes answer 405 `read_only`.
    Declarative,
    /// Started with `--data FILE.db`: the admin API edits the state kept in SQLite.
    Stateful,
}

impl From<Mode> for ModeName {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Declarative => ModeName::Declarative,
            Mode::Stateful => ModeName::Stateful,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the process answers.
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
    pub mode: ModeName,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnvironmentList {
    /// Sorted by name.
    #[schema(value_type = Vec<Environment>)]
    pub environments: Vec<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProxyList {
    /// Sorted by name; without `deploy` (see `/proxies/{name}/deployments`).
    #[schema(value_type = Vec<Proxy>)]
    pub proxies: Vec<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConsumerList {
    /// Sorted by name; credentials summarised (never a secret or a hash).
    #[schema(value_type = Vec<ConsumerSummary>)]
    pub consumers: Vec<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UpstreamList {
    /// Sorted by name.
    #[schema(value_type = Vec<Upstream>)]
    pub upstreams: Vec<Value>,
}

/// The environments one proxy is deployed to.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deployments {
    #[schema(example = "users")]
    pub proxy: String,
    /// Sorted.
    #[schema(example = json!(["production"]))]
    pub environments: Vec<String>,
}

/// One deployment: a proxy served in an environment.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deployment {
    #[schema(example = "users")]
    pub proxy: String,
    #[schema(example = "production")]
    pub environment: String,
}

/// One page of the change history, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    /// 1-based.
    pub page: u64,
    pub per_page: u64,
    /// Entries in the whole history.
    pub total: u64,
    pub entries: Vec<HistoryEntry>,
}

/// One change.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    pub id: u64,
    /// RFC 3339, UTC.
    #[schema(example = "2026-05-04T10:15:00Z")]
    pub time: String,
    /// `put_environment`, `delete_environment`, `put_proxy`, `delete_proxy`, `deploy`,
    /// `undeploy`, `put_consumer`, `delete_consumer`, `put_upstream`, `delete_upstream` or
    /// `reload`. Consumers appear with their credentials hashed.
    #[schema(example = "put_environment")]
    pub action: String,
    /// What changed, e.g. `environments/production`, `proxies/users/deployments/production`.
    #[schema(example = "environments/production")]
    pub object: String,
    /// The object before the change; `null` when it was created.
    pub before: Option<Value>,
    /// The object after the change; `null` when it was deleted.
    pub after: Option<Value>,
}

impl From<crate::control::HistoryEntry> for HistoryEntry {
    fn from(entry: crate::control::HistoryEntry) -> Self {
        // Exhaustive on purpose: a new field in the control plane's entry fails to compile here.
        let crate::control::HistoryEntry {
            id,
            time,
            action,
            object,
            before,
            after,
        } = entry;
        HistoryEntry {
            id,
            time,
            action,
            object,
            before,
            after,
        }
    }
}

/// Prometheus metrics
///
/// Every metric of the gateway in the OpenMetrics text format (Prometheus reads it):
/// HTTP requests, durations and bytes; WebSocket sessions, upgrades, messages, bytes,
/// closes and keepalive round trips; process and runtime figures. Labels are bounded
/// (environment, proxy, method, status class, direction, close code, initiator).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "status",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String)),
)]
pub fn metrics(control: &Control) -> Reply {
    let text = control.gateway().metrics().encode().map_err(|error| {
        ApiError::new(
            ErrorKind::Internal,
            format!("the metrics could not be encoded: {error}"),
        )
    })?;
    Ok(respond(
        StatusCode::OK,
        crate::telemetry::metrics::CONTENT_TYPE,
        Bytes::from(text),
    ))
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub(super) fn json(status: StatusCode, value: &impl Serialize) -> Reply {
    let body = serde_json::to_vec(value).map_err(|error| {
        ApiError::new(
            ErrorKind::Internal,
            format!("the answer could not be encoded as JSON: {error}"),
        )
    })?;
    Ok(respond(status, "application/json", Bytes::from(body)))
}

pub(super) fn no_content() -> Reply {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

fn written_status(written: Written) -> StatusCode {
    match written {
        Written::Created => StatusCode::CREATED,
        Written::Updated | Written::Unchanged => StatusCode::OK,
    }
}

fn missing(what: &str, name: &str) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        format!("there is no {what} named {name:?}"),
    )
}

/// Liveness and mode
///
/// Open without a token, so load balancers can probe it.
#[utoipa::path(
    get,
    path = "/health",
    tag = "status",
    security(()),
    responses((status = 200, description = "The admin API is up", body = Health)),
)]
pub fn health(control: &Control) -> Reply {
    json(
        StatusCode::OK,
        &Health {
            status: "ok",
            mode: control.mode().into(),
        },
    )
}

/// This document
///
/// The OpenAPI description of the admin API, generated from the code that serves it.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "status",
    responses((status = 200, description = "OpenAPI 3 document", body = Object)),
)]
pub fn openapi_json() -> Reply {
    let text = openapi::document_json().map_err(|error| {
        ApiError::new(
            ErrorKind::Internal,
            format!("the OpenAPI document could not be encoded: {error}"),
        )
    })?;
    Ok(respond(
        StatusCode::OK,
        "application/json",
        Bytes::from(text),
    ))
}

/// The whole state as YAML
///
/// The configuration file format (`environments`, `upstreams`, `proxies` each with its
/// `deploy` list, `consumers`); it round-trips through `strait apply`.
#[utoipa::path(
    get,
    path = "/config",
    tag = "status",
    responses((status = 200, description = "The configuration file", body = String, content_type = "application/yaml")),
)]
pub async fn config(control: &Control) -> Reply {
    let yaml = control.export_yaml().await;
    Ok(respond(
        StatusCode::OK,
        "application/yaml",
        Bytes::from(yaml),
    ))
}

/// Change history
///
/// Every change, newest first, one page at a time.
#[utoipa::path(
    get,
    path = "/history",
    tag = "status",
    params(
        ("page" = Option<u64>, Query, minimum = 1, description = "1-based page number (default 1)"),
        ("per_page" = Option<u64>, Query, minimum = 1, maximum = 500, description = "Entries per page (default 50, at most 500)"),
    ),
    responses(
        (status = 200, description = "One page of the history", body = History),
        (status = 400, description = "`bad_request`: page or per_page out of range", body = ErrorBody),
        (status = 500, description = "`storage`", body = ErrorBody),
    ),
)]
pub async fn history(control: &Control, page: u64, per_page: u64) -> Reply {
    // Exhaustive on purpose: a new field in the page fails to compile here.
    let HistoryPage { total, entries } = control.history(page, per_page).await?;
    json(
        StatusCode::OK,
        &History {
            page,
            per_page,
            total,
            entries: entries.into_iter().map(HistoryEntry::from).collect(),
        },
    )
}

/// List environments
#[utoipa::path(
    get,
    path = "/environments",
    tag = "environments",
    responses((status = 200, description = "Every environment, sorted by name", body = EnvironmentList)),
)]
pub async fn list_environments(control: &Control) -> Reply {
    let environments = control.environments().await;
    json(StatusCode::OK, &EnvironmentList { environments })
}

/// Get one environment
#[utoipa::path(
    get,
    path = "/environments/{name}",
    tag = "environments",
    params(("name" = String, Path, description = "Environment name (percent-encoded)")),
    responses(
        (status = 200, description = "The environment as stored", body = Environment),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub async fn get_environment(control: &Control, name: &str) -> Reply {
    match control.environment(name).await {
        Some(environment) => json(StatusCode::OK, &environment),
        None => Err(missing("environment", name)),
    }
}

/// Create or replace an environment
///
/// The body holds the environment's fields as in the YAML file. The change is live when
/// the answer arrives.
#[utoipa::path(
    put,
    path = "/environments/{name}",
    tag = "environments",
    params(("name" = String, Path, description = "Environment name (percent-encoded)")),
    request_body = Environment,
    responses(
        (status = 200, description = "Replaced, or unchanged", body = Environment),
        (status = 201, description = "Created", body = Environment),
        (status = 400, description = "`bad_request`: the body is not JSON", body = ErrorBody),
        (status = 405, description = "`read_only`: declarative mode", body = ErrorBody),
        (status = 409, description = "`conflict`: e.g. the address is in use", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over 1 MiB", body = ErrorBody),
        (status = 422, description = "`invalid`: see `problems`", body = ErrorBody),
        (status = 500, description = "`storage`", body = ErrorBody),
    ),
)]
pub async fn put_environment(control: &Control, name: &str, body: Value) -> Reply {
    let (written, stored) = control.put_environment(name, body).await?;
    json(written_status(written), &stored)
}

/// Delete an environment
///
/// Refused with 409 while proxies are deployed to it, unless `force=true` (which undeploys them).
#[utoipa::path(
    delete,
    path = "/environments/{name}",
    tag = "environments",
    params(
        ("name" = String, Path, description = "Environment name (percent-encoded)"),
        ("force" = Option<bool>, Query, description = "Also undeploy every proxy deployed to it (default false)"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`bad_request`: force is not true or false", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 405, description = "`read_only`: declarative mode", body = ErrorBody),
        (status = 409, description = "`conflict`: proxies are still deployed to it", body = ErrorBody),
        (status = 500, description = "`storage`", body = ErrorBody),
    ),
)]
pub async fn delete_environment(control: &Control, name: &str, force: bool) -> Reply {
    control.delete_environment(name, force).await?;
    no_content()
}

/// List proxies
#[utoipa::path(
    get,
    path = "/proxies",
    tag = "proxies",
    responses((status = 200, description = "Every proxy, sorted by name", body = ProxyList)),
)]
pub async fn list_proxies(control: &Control) -> Reply {
    let proxies = control.proxies().await;
    json(StatusCode::OK, &ProxyList { proxies })
}

/// Get one proxy
#[utoipa::path(
    get,
    path = "/proxies/{name}",
    tag = "proxies",
    params(("name" = String, Path, description = "Proxy name (percent-encoded)")),
    responses(
        (status = 200, description = "The proxy as stored", body = Proxy),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub async fn get_proxy(control: &Control, name: &str) -> Reply {
    match control.proxy(name).await {
        Some(proxy) => json(StatusCode::OK, &proxy),
        None => Err(missing("proxy", name)),
    }
}

/// Create or replace a proxy
///
/// The body holds the proxy's fields as in the YAML file, without `deploy`; its
/// deployments are kept.
#[utoipa::path(
    put,
    path = "/proxies/{name}",
    tag = "proxies",
    params(("name" = String, Path, description = "Proxy name (percent-encoded)")),
    request_body = Proxy,
    responses(
        (status = 200, description = "Replaced, or unchanged", body = Proxy),
        (status = 201, description = "Created", body = Proxy),
        (status = 400, description = "`bad_request`: the body is not JSON", body = ErrorBody),
        (status = 405, description = "`read_only`: declarative mode", body = ErrorBody),
        (status = 409, description = "`conflict`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over 1 MiB", body = ErrorBody),
        (status = 422, description = "`invalid`: see `problems` (a `deploy` field is one)", body = ErrorBody),
        (status = 500, description = "`storage`", body = ErrorBody),
    ),
)]
pub async fn put_proxy(control: &Control, name: &str, body: Value) -> Reply {
    let (written, stored) = control.put_proxy(name, body).await?;
    json(written_status(written), &stored)
}

/// Delete a proxy
///
/// Undeploys it everywhere.
#[utoipa::path(
    delete,
    path = "/proxies/{name}",
    tag = "proxies",
    params(("name" = String, Path, description = "Proxy name (percent-encoded)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 405, description = "`read_only`: declarative mode", body = ErrorBody),
        (status = 500, description = "`storage`", body = ErrorBody),
    ),
)]
pub async fn delete_proxy(control: &Control, name: &str) -> Reply {
    control.delete_proxy(name).await?;
    no_content()
}

/// List a proxy's deployments
#[utoipa::path(
    get,
    path = "/proxies/{name}/deployments",
    tag = "deployments",
    params(("name" = String, Path, description = "Proxy name (percent-encoded)")),
    responses(
        (status = 200, description = "The environments it is deployed to", body = Deployments),
        (status = 404, description = "`not_found`: no such proxy", body = ErrorBody),
    ),
)]
pub async fn list_deployments(control: &Control, proxy: &str) -> Reply {
    let environments = control.deployments(proxy).await?;
    json(
        StatusCode::OK,
        &Deployments {
            proxy: proxy.to_owned(),
            environments,
        },
    )
}

/// Deploy a proxy to an environment
///
/// Idempotent: 201 when the deployment is new, 200 when it already existed. No body.
#[utoipa::path(
    put,
    path = "/proxies/{name}/deployments/{environment}",
    tag = "deployments",
    params(
        ("name" = String, Path, description = "Proxy name (percent-encoded)"),
        ("environment" = String, Path, description = "Environment name (percent-encoded)"),
    ),
    responses(
        (status = 200, description = "Already deployed", body = Deployment),
        (status = 201, description = "Deployed", body = Deployment),
        (status = 404, description = "`not_found`: no such proxy or environment", body = ErrorBody),
        (status = 405, description = "`read_only`: declarative mode", body = ErrorBody),
        (status = 409, description = "`conflict`: e.g. its path is taken in that environment", body = ErrorBody),
        (status = 422, description = "`invalid`", body = ErrorBody),
        (status = 500, description = "`storage`", body = ErrorBody),
    ),
)]
pub async fn deploy(control: &Control, proxy: &str, environment: &str) -> Reply {
    let written = control.deploy(proxy, environment).await?;
    json(
        written_status(written),
        &Deployment {
            proxy: proxy.to_owned(),
            environment: environment.to_owned(),
        },
    )
}

/// Undeploy a proxy from an environment
#[utoipa::path(
    delete,
    path = "/proxies/{name}/deployments/{environment}",
    tag = "deployments",
    params(
        ("name" = String, Path, description = "Proxy name (percent-encoded)"),
        ("environment" = String, Path, description = "Environment name (percent-encoded)"),
    ),
    responses(
        (status = 204, description = "Undeployed"),
        (status = 404, description = "`not_found`: not deployed there", body = ErrorBody),
        (status = 405, description = "`read_only`: declarative mode", body = ErrorBody),
        (status = 409, description = "`conflict`", body = ErrorBody),
        (status = 500, description = "`storage`", body = ErrorBody),
    ),
)]
pub async fn undeploy(control: &Control, proxy: &str, environment: &str) -> Reply {
    control.undeploy(proxy, environment).await?;
    no_content()
}

/// List consumers
///
/// Each with its groups and which credentials it has: the number of API keys, the
/// basic-auth username, the JWT subject. Secrets and their hashes are never shown.
#[utoipa::path(
    get,
    path = "/consumers",
    tag = "consumers",
    responses((status = 200, description = "Every consumer, sorted by name", body = ConsumerList)),
)]
pub async fn list_consumers(control: &Control) -> Reply {
    let consumers = control.consumers().await;
    json(StatusCode::OK, &ConsumerList { consumers })
}

/// Get one consumer
#[utoipa::path(
    get,
    path = "/consumers/{name}",
    tag = "consumers",
    params(("name" = String, Path, description = "Consumer name (percent-encoded)")),
    responses(
        (status = 200, description = "The consumer, credentials summarised", body = ConsumerSummary),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub async fn get_consumer(control: &Control, name: &str) -> Reply {
    match control.consumer(name).await {
        Some(consumer) => json(StatusCode::OK, &consumer),
        None => Err(missing("consumer", name)),
    }
}

/// Create or replace a consumer
///
/// The body holds the consumer's fields as in the YAML file. Secrets may be plaintext
/// (`api_keys`, `basic_auth.password`) or already hashed (`api_key_digests`,
/// `basic_auth.password_hash`); only hashes are stored — API keys as SHA-256 digests,
/// passwords as argon2id — and the answer shows none of them.
#[utoipa::path(
    put,
    path = "/consumers/{name}",
    tag = "consumers",
    params(("name" = String, Path, description = "Consumer name (percent-encoded)")),
    request_body = Consumer,
    responses(
        (status = 200, description = "Replaced, or unchanged", body = ConsumerSummary),
        (status = 201, description = "Created", body = ConsumerSummary),
        (status = 400, description = "`bad_request`: the body is not JSON", body = ErrorBody),
        (status = 405, description = "`read_only`: declarative mode", body = ErrorBody),
        (status = 409, description = "`conflict`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over 1 MiB", body = ErrorBody),
        (status = 422, description = "`invalid`: see `problems` (e.g. a key or username another consumer has)", body = ErrorBody),
        (status = 500, description = "`storage`", body = ErrorBody),
    ),
)]
pub async fn put_consumer(control: &Control, name: &str, body: Value) -> Reply {
    let (written, shown) = control.put_consumer(name, body).await?;
    json(written_status(written), &shown)
}

/// Delete a consumer
///
/// Its credentials stop working for new requests at once; its open WebSocket sessions
/// carry on (close them with `DELETE /connections?consumer=`).
#[utoipa::path(
    delete,
    path = "/consumers/{name}",
    tag = "consumers",
    params(("name" = String, Path, description = "Consumer name (percent-encoded)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 405, description = "`read_only`: declarative mode", body = ErrorBody),
        (status = 500, description = "`storage`", body = ErrorBody),
    ),
)]
pub async fn delete_consumer(control: &Control, name: &str) -> Reply {
    control.delete_consumer(name).await?;
    no_content()
}

/// List named upstreams
#[utoipa::path(
    get,
    path = "/upstreams",
    tag = "upstreams",
    responses((status = 200, description = "Every named upstream, sorted by name", body = UpstreamList)),
)]
pub async fn list_upstreams(control: &Control) -> Reply {
    let upstreams = control.upstreams().await;
    json(StatusCode::OK, &UpstreamList { upstreams })
}

/// Get one named upstream
#[utoipa::path(
    get,
    path = "/upstreams/{name}",
    tag = "upstreams",
    params(("name" = String, Path, description = "Upstream name (percent-encoded)")),
    responses(
        (status = 200, description = "The upstream as stored", body = Upstream),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub async fn get_upstream(control: &Control, name: &str) -> Reply {
    match control.upstream(name).await {
        Some(upstream) => json(StatusCode::OK, &upstream),
        None => Err(missing("upstream", name)),
    }
}

/// Create or replace a named upstream
///
/// The body holds the upstream's fields as in the YAML file (`upstreams:`). Proxies use it
/// with `backend: {"upstream": NAME}`; a replacement applies to every one of them when the
/// answer arrives (open WebSocket sessions stay on their target).
#[utoipa::path(
    put,
    path = "/upstreams/{name}",
    tag = "upstreams",
    params(("name" = String, Path, description = "Upstream name (percent-encoded)")),
    request_body = Upstream,
    responses(
        (status = 200, description = "Replaced, or unchanged", body = Upstream),
        (status = 201, description = "Created", body = Upstream),
        (status = 400, description = "`bad_request`: the body is not JSON", body = ErrorBody),
        (status = 405, description = "`read_only`: declarative mode", body = ErrorBody),
        (status = 409, description = "`conflict`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over 1 MiB", body = ErrorBody),
        (status = 422, description = "`invalid`: see `problems`", body = ErrorBody),
        (status = 500, description = "`storage`", body = ErrorBody),
    ),
)]
pub async fn put_upstream(control: &Control, name: &str, body: Value) -> Reply {
    let (written, stored) = control.put_upstream(name, body).await?;
    json(written_status(written), &stored)
}

/// Delete a named upstream
///
/// Refused with 409 while a proxy uses it.
#[utoipa::path(
    delete,
    path = "/upstreams/{name}",
    tag = "upstreams",
    params(("name" = String, Path, description = "Upstream name (percent-encoded)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 405, description = "`read_only`: declarative mode", body = ErrorBody),
        (status = 409, description = "`conflict`: proxies still use it", body = ErrorBody),
        (status = 500, description = "`storage`", body = ErrorBody),
    ),
)]
pub async fn delete_upstream(control: &Control, name: &str) -> Reply {
    control.delete_upstream(name).await?;
    no_content()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_named_in_snake_case() {
        assert_eq!(
            serde_json::to_value(ModeName::from(Mode::Declarative)).unwrap(),
            "declarative"
        );
        assert_eq!(
            serde_json::to_value(ModeName::from(Mode::Stateful)).unwrap(),
            "stateful"
        );
    }

    #[test]
    fn writes_answer_201_only_when_created() {
        assert_eq!(written_status(Written::Created), StatusCode::CREATED);
        assert_eq!(written_status(Written::Updated), StatusCode::OK);
        assert_eq!(written_status(Written::Unchanged), StatusCode::OK);
    }

    #[test]
    fn served_openapi_is_json() {
        let response = openapi_json().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
