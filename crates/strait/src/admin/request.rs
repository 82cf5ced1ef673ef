//! Turning a request into a [`Call`]: the route (method + path segments, names
//! percent-decoded), the query parameters and the JSON body (at most [`MAX_BODY_BYTES`],
//! enforced while reading). Pure apart from reading the body; knows nothing of `Control`.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body;
use serde_json::Value;

use super::error::{ApiError, ErrorKind};
use crate::proxy::websocket::frame::MAX_CLOSE_REASON;

/// Largest request body accepted (1 MiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// `GET /history` page size when none is given, and the largest accepted.
pub const DEFAULT_PER_PAGE: u64 = 50;
pub const MAX_PER_PAGE: u64 = 500;

/// A known admin path, with its names decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    OpenApi,
    Metrics,
    Config,
    History,
    Environments,
    Environment(String),
    Proxies,
    Proxy(String),
    Deployments(String),
    Deployment { proxy: String, environment: String },
    Targets(String),
    Consumers,
    Consumer(String),
    Upstreams,
    Upstream(String),
    Connections,
    Connection(u64),
}

impl Route {
    /// Splits the path into segments and matches them; names are percent-decoded and must
    /// not be empty. An unknown path is `no_route`; a bad name is `bad_request`.
    pub fn parse(path: &str) -> Result<Route, ApiError> {
        let no_route = || {
            ApiError::new(
                ErrorKind::NoRoute,
                format!("the admin API has no route {path}; GET /openapi.json lists them"),
            )
        };
        let Some(rest) = path.strip_prefix('/') else {
            return Err(no_route());
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let route = match segments.as_slice() {
            ["health"] => Route::Health,
            ["openapi.json"] => Route::OpenApi,
            ["metrics"] => Route::Metrics,
            ["config"] => Route::Config,
            ["history"] => Route::History,
            ["environments"] => Route::Environments,
            ["environments", name] => Route::Environment(name_segment(name, "environment")?),
            ["proxies"] => Route::Proxies,
            ["proxies", name] => Route::Proxy(name_segment(name, "proxy")?),
            ["proxies", name, "deployments"] => Route::Deployments(name_segment(name, "proxy")?),
            ["proxies", name, "targets"] => Route::Targets(name_segment(name, "proxy")?),
            ["proxies", name, "deployments", environment] => Route::Deployment {
                proxy: name_segment(name, "proxy")?,
                environment: name_segment(environment, "environment")?,
            },
            ["consumers"] => Route::Consumers,
            ["consumers", name] => Route::Consumer(name_segment(name, "consumer")?),
            ["upstreams"] => Route::Upstreams,
            ["upstreams", name] => Route::Upstream(name_segment(name, "upstream")?),
            ["connections"] => Route::Connections,
            ["connections", id] => Route::Connection(id.parse().map_err(|_| {
                ApiError::new(
                    ErrorKind::NotFound,
                    format!("there is no connection with id {id:?}; ids are whole numbers"),
                )
            })?),
            _ => return Err(no_route()),
        };
        Ok(route)
    }

    /// The methods this route answers.
    pub fn methods(&self) -> &'static [Method] {
        const GET: &[Method] = &[Method::GET];
        const GET_PUT_DELETE: &[Method] = &[Method::GET, Method::PUT, Method::DELETE];
        const PUT_DELETE: &[Method] = &[Method::PUT, Method::DELETE];
        const GET_DELETE: &[Method] = &[Method::GET, Method::DELETE];
        match self {
            Route::Environment(_) | Route::Proxy(_) | Route::Consumer(_) | Route::Upstream(_) => {
                GET_PUT_DELETE
            }
            Route::Connections | Route::Connection(_) => GET_DELETE,
            Route::Deployment { .. } => PUT_DELETE,
            Route::Health
            | Route::OpenApi
            | Route::Metrics
            | Route::Config
            | Route::History
            | Route::Environments
            | Route::Proxies
            | Route::Consumers
            | Route::Upstreams
            | Route::Deployments(_)
            | Route::Targets(_) => GET,
        }
    }

    /// `Allow` for a 405: every method, or only the reads when the state is read-only
    /// (an empty `Allow` means none, RFC 9110 §10.2.1).
    pub fn allow(&self, read_only: bool) -> HeaderValue {
        let list: Vec<&str> = self
            .methods()
            .iter()
            .filter(|m| !read_only || **m == Method::GET)
            .map(Method::as_str)
            .collect();
        HeaderValue::from_str(&list.join(", ")).unwrap_or(HeaderValue::from_static(""))
    }
}

/// One admin operation with its inputs, ready to run against `Control`.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Health,
    OpenApi,
    Metrics,
    Config,
    History {
        page: u64,
        per_page: u64,
    },
    ListEnvironments,
    GetEnvironment(String),
    PutEnvironment(String, Value),
    DeleteEnvironment {
        name: String,
        force: bool,
    },
    ListProxies,
    GetProxy(String),
    PutProxy(String, Value),
    DeleteProxy(String),
    ListDeployments(String),
    ListTargets(String),
    Deploy {
        proxy: String,
        environment: String,
    },
    Undeploy {
        proxy: String,
        environment: String,
    },
    ListConsumers,
    GetConsumer(String),
    PutConsumer(String, Value),
    DeleteConsumer(String),
    ListUpstreams,
    GetUpstream(String),
    PutUpstream(String, Value),
    DeleteUpstream(String),
    ListConnections {
        filter: ConnectionFilter,
        page: u64,
        per_page: u64,
    },
    GetConnection(u64),
    CloseConnection {
        id: u64,
        code: u16,
        reason: String,
    },
    CloseConnections {
        filter: ConnectionFilter,
        code: u16,
        reason: String,
    },
}

/// Which WebSocket sessions a connections call is about; `None` fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionFilter {
    pub environment: Option<String>,
    pub proxy: Option<String>,
    pub consumer: Option<String>,
}

impl ConnectionFilter {
    fn from_query(query: &str) -> Result<Self, ApiError> {
        Ok(ConnectionFilter {
            environment: param(query, "environment")?,
            proxy: param(query, "proxy")?,
            consumer: param(query, "consumer")?,
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == ConnectionFilter::default()
    }
}

/// The close code a forced disconnect sends when none is given (policy violation).
pub const DEFAULT_CLOSE_CODE: u16 = 1008;

/// `code` and `reason` of a forced disconnect: a code an endpoint may send (RFC 6455
/// §7.4: 1000-1003, 1007-1014, 3000-4999) and a reason that fits a close frame.
fn close_params(query: &str) -> Result<(u16, String), ApiError> {
    let code = match param(query, "code")? {
        None => DEFAULT_CLOSE_CODE,
        Some(text) => match text.parse::<u16>() {
            Ok(code @ (1000..=1003 | 1007..=1014 | 3000..=4999)) => code,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "the query parameter code must be a close code that may be sent: 1000-1003, 1007-1014 or 3000-4999, not {text:?}"
                )));
            }
        },
    };
    let reason = param(query, "reason")?.unwrap_or_else(|| "closed by the operator".into());
    if reason.len() > MAX_CLOSE_REASON {
        return Err(ApiError::bad_request(format!(
            "the query parameter reason is {} bytes; a close frame carries at most {MAX_CLOSE_REASON}",
            reason.len()
        )));
    }
    Ok((code, reason))
}

impl Call {
    /// Whether the call may change the state (logged at info level).
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Call::PutEnvironment(..)
                | Call::DeleteEnvironment { .. }
                | Call::PutProxy(..)
                | Call::DeleteProxy(_)
                | Call::Deploy { .. }
                | Call::Undeploy { .. }
                | Call::PutConsumer(..)
                | Call::DeleteConsumer(_)
                | Call::PutUpstream(..)
                | Call::DeleteUpstream(_)
        )
    }
}

/// The call a request makes on an already parsed route: checks the method, reads the query
/// and, for the PUTs carrying an object, the JSON body.
pub async fn call<B>(route: Route, request: Request<B>) -> Result<Call, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let method = request.method().clone();
    if !route.methods().contains(&method) {
        return Err(ApiError::new(
            ErrorKind::MethodNotAllowed,
            format!(
                "{} does not allow {method}; it allows {}",
                request.uri().path(),
                route.allow(false).to_str().unwrap_or_default()
            ),
        )
        .with_header(header::ALLOW, route.allow(false)));
    }
    let query = request.uri().query().unwrap_or_default().to_owned();
    let call = match (route, method) {
        (Route::Health, _) => Call::Health,
        (Route::OpenApi, _) => Call::OpenApi,
        (Route::Metrics, _) => Call::Metrics,
        (Route::Config, _) => Call::Config,
        (Route::History, _) => {
            let page = number_param(&query, "page", 1, u64::MAX)?.unwrap_or(1);
            let per_page =
                number_param(&query, "per_page", 1, MAX_PER_PAGE)?.unwrap_or(DEFAULT_PER_PAGE);
            Call::History { page, per_page }
        }
        (Route::Environments, _) => Call::ListEnvironments,
        (Route::Environment(name), Method::PUT) => {
            let (parts, body) = request.into_parts();
            Call::PutEnvironment(name, read_json(&parts.headers, body).await?)
        }
        (Route::Environment(name), Method::DELETE) => Call::DeleteEnvironment {
            name,
            force: bool_param(&query, "force")?.unwrap_or(false),
        },
        (Route::Environment(name), _) => Call::GetEnvironment(name),
        (Route::Proxies, _) => Call::ListProxies,
        (Route::Proxy(name), Method::PUT) => {
            let (parts, body) = request.into_parts();
            Call::PutProxy(name, read_json(&parts.headers, body).await?)
        }
        (Route::Proxy(name), Method::DELETE) => Call::DeleteProxy(name),
        (Route::Proxy(name), _) => Call::GetProxy(name),
        (Route::Deployments(proxy), _) => Call::ListDeployments(proxy),
        (Route::Targets(proxy), _) => Call::ListTargets(proxy),
        (Route::Deployment { proxy, environment }, Method::DELETE) => {
            Call::Undeploy { proxy, environment }
        }
        (Route::Deployment { proxy, environment }, _) => Call::Deploy { proxy, environment },
        (Route::Consumers, _) => Call::ListConsumers,
        (Route::Consumer(name), Method::PUT) => {
            let (parts, body) = request.into_parts();
            Call::PutConsumer(name, read_json(&parts.headers, body).await?)
        }
        (Route::Consumer(name), Method::DELETE) => Call::DeleteConsumer(name),
        (Route::Consumer(name), _) => Call::GetConsumer(name),
        (Route::Upstreams, _) => Call::ListUpstreams,
        (Route::Upstream(name), Method::PUT) => {
            let (parts, body) = request.into_parts();
            Call::PutUpstream(name, read_json(&parts.headers, body).await?)
        }
        (Route::Upstream(name), Method::DELETE) => Call::DeleteUpstream(name),
        (Route::Upstream(name), _) => Call::GetUpstream(name),
        (Route::Connections, Method::DELETE) => {
            let filter = ConnectionFilter::from_query(&query)?;
            if filter.is_empty() {
                return Err(ApiError::bad_request(
                    "DELETE /connections needs environment, proxy or consumer in the query; it will not close every session at once",
                ));
            }
            let (code, reason) = close_params(&query)?;
            Call::CloseConnections {
                filter,
                code,
                reason,
            }
        }
        (Route::Connections, _) => {
            let page = number_param(&query, "page", 1, u64::MAX)?.unwrap_or(1);
            let per_page =
                number_param(&query, "per_page", 1, MAX_PER_PAGE)?.unwrap_or(DEFAULT_PER_PAGE);
            Call::ListConnections {
                filter: ConnectionFilter::from_query(&query)?,
                page,
                per_page,
            }
        }
        (Route::Connection(id), Method::DELETE) => {
            let (code, reason) = close_params(&query)?;
            Call::CloseConnection { id, code, reason }
        }
        (Route::Connection(id), _) => Call::GetConnection(id),
    };
    Ok(call)
}

/// Reads at most [`MAX_BODY_BYTES`] and parses them as JSON. A declared `Content-Length`
/// over the limit is refused before reading anything.
pub async fn read_json<B>(headers: &HeaderMap, body: B) -> Result<Value, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("the request body is over the limit of {MAX_BODY_BYTES} bytes (1 MiB)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(too_large());
        }
        Err(error) => {
            return Err(ApiError::bad_request(format!(
                "the request body could not be read: {error}"
            )));
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::bad_request(format!("the body is not valid JSON: {error}")))
}

/// A path segment as a name: percent-decoded UTF-8, not empty.
fn name_segment(segment: &str, what: &str) -> Result<String, ApiError> {
    let Some(name) = percent_decode(segment) else {
        return Err(ApiError::bad_request(format!(
            "the {what} name {segment:?} in the path is not valid percent-encoded UTF-8"
        )));
    };
    if name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "the {what} name in the path is empty"
        )));
    }
    Ok(name)
}

/// Strict percent-decoding: `%` must be followed by two hex digits and the result must be
/// UTF-8. `+` stays `+`.
pub fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = text.bytes();
    let mut out = Vec::with_capacity(text.len());
    while let Some(byte) = bytes.next() {
        if byte == b'%' {
            let high = hex(bytes.next()?)?;
            let low = hex(bytes.next()?)?;
            out.push(high << 4 | low);
        } else {
            out.push(byte);
        }
    }
    String::from_utf8(out).ok()
}

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// The first value of `name` in the query, decoded. `Ok(None)` when absent.
fn param(query: &str, name: &str) -> Result<Option<String>, ApiError> {
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(key).as_deref() == Some(name) {
            return percent_decode(value).map(Some).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "the query parameter {name} is not valid percent-encoded UTF-8"
                ))
            });
        }
    }
    Ok(None)
}

fn number_param(query: &str, name: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
    let Some(text) = param(query, name)? else {
        return Ok(None);
    };
    match text.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ if max == u64::MAX => Err(ApiError::bad_request(format!(
            "the query parameter {name} must be a whole number from {min}, not {text:?}"
        ))),
        _ => Err(ApiError::bad_request(format!(
            "the query parameter {name} must be a whole number from {min} to {max}, not {text:?}"
        ))),
    }
}

fn bool_param(query: &str, name: &str) -> Result<Option<bool>, ApiError> {
    match param(query, name)?.as_deref() {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(ApiError::bad_request(format!(
            "the query parameter {name} must be true or false, not {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;
    use serde_json::json;

    fn request(method: Method, uri: &str, body: &str) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    }

    async fn call_of(method: Method, uri: &str, body: &str) -> Result<Call, ApiError> {
        let req = request(method, uri, body);
        let route = Route::parse(req.uri().path())?;
        call(route, req).await
    }

    #[test]
    fn paths_parse_into_routes() {
        let cases = [
            ("/health", Route::Health),
            ("/openapi.json", Route::OpenApi),
            ("/metrics", Route::Metrics),
            ("/config", Route::Config),
            ("/history", Route::History),
            ("/environments", Route::Environments),
            ("/environments/prod", Route::Environment("prod".into())),
            ("/proxies", Route::Proxies),
            ("/proxies/users", Route::Proxy("users".into())),
            ("/consumers", Route::Consumers),
            ("/consumers/alice", Route::Consumer("alice".into())),
            ("/upstreams", Route::Upstreams),
            (
                "/upstreams/users-pool",
                Route::Upstream("users-pool".into()),
            ),
            (
                "/proxies/users/deployments",
                Route::Deployments("users".into()),
            ),
            ("/proxies/users/targets", Route::Targets("users".into())),
            (
                "/proxies/users/deployments/prod",
                Route::Deployment {
                    proxy: "users".into(),
                    environment: "prod".into(),
                },
            ),
        ];
        for (path, route) in cases {
            assert_eq!(Route::parse(path).unwrap(), route, "{path}");
        }
    }

    #[test]
    fn names_are_percent_decoded() {
        assert_eq!(
            Route::parse("/environments/eu%20west").unwrap(),
            Route::Environment("eu west".into())
        );
        assert_eq!(
            Route::parse("/proxies/a%2Fb/deployments/%C3%A9t%C3%A9").unwrap(),
            Route::Deployment {
                proxy: "a/b".into(),
                environment: "été".into()
            }
        );
        assert_eq!(
            Route::parse("/proxies/a+b").unwrap(),
            Route::Proxy("a+b".into())
        );
        assert_eq!(
            Route::parse("/upstreams/users%20pool").unwrap(),
            Route::Upstream("users pool".into())
        );
    }

    #[test]
    fn unknown_paths_are_no_route() {
        for path in [
            "",
            "/",
            "/nope",
            "/health/",
            "/environments/a/b",
            "/proxies/a/deployments/b/c",
            "/proxies/a/other",
            "/proxies/a/targets/x",
            "/upstreams/a/b",
            "/upstream",
            "//environments",
            "*",
        ] {
            let error = Route::parse(path).unwrap_err();
            assert_eq!(error.kind, ErrorKind::NoRoute, "{path}");
            assert_eq!(error.kind.status(), 404);
        }
    }

    #[test]
    fn empty_or_badly_encoded_names_are_bad_requests() {
        for path in [
            "/environments/",
            "/proxies/",
            "/proxies//deployments",
            "/proxies//targets",
            "/proxies/a/deployments/",
            "/upstreams/",
            "/upstreams/%zz",
            "/environments/%",
            "/environments/%4",
            "/environments/%zz",
            "/environments/%FF",
        ] {
            let error = Route::parse(path).unwrap_err();
            assert_eq!(error.kind, ErrorKind::BadRequest, "{path}");
        }
        assert!(
            Route::parse("/environments/")
                .unwrap_err()
                .message
                .contains("empty")
        );
    }

    #[test]
    fn percent_decoding_is_strict() {
        assert_eq!(percent_decode("a%41%62c").as_deref(), Some("aAbc"));
        assert_eq!(percent_decode("").as_deref(), Some(""));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%a"), None);
        assert_eq!(percent_decode("%g0"), None);
        assert_eq!(percent_decode("%C3"), None);
    }

    #[test]
    fn allow_lists_the_methods() {
        assert_eq!(
            Route::Environment("x".into()).allow(false),
            "GET, PUT, DELETE"
        );
        assert_eq!(Route::Environment("x".into()).allow(true), "GET");
        let deployment = Route::Deployment {
            proxy: "p".into(),
            environment: "e".into(),
        };
        assert_eq!(deployment.allow(false), "PUT, DELETE");
        assert_eq!(deployment.allow(true), "");
        assert_eq!(Route::History.allow(false), "GET");
        assert_eq!(Route::Upstreams.allow(false), "GET");
        assert_eq!(Route::Upstream("u".into()).allow(false), "GET, PUT, DELETE");
        assert_eq!(Route::Upstream("u".into()).allow(true), "GET");
    }

    #[tokio::test]
    async fn methods_and_routes_make_calls() {
        let cases = [
            (Method::GET, "/health", Call::Health),
            (Method::GET, "/openapi.json", Call::OpenApi),
            (Method::GET, "/metrics", Call::Metrics),
            (Method::GET, "/config", Call::Config),
            (Method::GET, "/environments", Call::ListEnvironments),
            (
                Method::GET,
                "/environments/prod",
                Call::GetEnvironment("prod".into()),
            ),
            (
                Method::DELETE,
                "/environments/prod",
                Call::DeleteEnvironment {
                    name: "prod".into(),
                    force: false,
                },
            ),
            (
                Method::DELETE,
                "/environments/prod?force=true",
                Call::DeleteEnvironment {
                    name: "prod".into(),
                    force: true,
                },
            ),
            (Method::GET, "/proxies", Call::ListProxies),
            (Method::GET, "/proxies/u", Call::GetProxy("u".into())),
            (Method::GET, "/consumers", Call::ListConsumers),
            (Method::GET, "/consumers/a", Call::GetConsumer("a".into())),
            (
                Method::DELETE,
                "/consumers/a",
                Call::DeleteConsumer("a".into()),
            ),
            (Method::DELETE, "/proxies/u", Call::DeleteProxy("u".into())),
            (Method::GET, "/upstreams", Call::ListUpstreams),
            (
                Method::GET,
                "/upstreams/pool",
                Call::GetUpstream("pool".into()),
            ),
            (
                Method::DELETE,
                "/upstreams/a%2Fb",
                Call::DeleteUpstream("a/b".into()),
            ),
            (
                Method::GET,
                "/proxies/u/deployments",
                Call::ListDeployments("u".into()),
            ),
            (
                Method::GET,
                "/proxies/a%20b/targets",
                Call::ListTargets("a b".into()),
            ),
            (
                Method::PUT,
                "/proxies/u/deployments/prod",
                Call::Deploy {
                    proxy: "u".into(),
                    environment: "prod".into(),
                },
            ),
            (
                Method::DELETE,
                "/proxies/u/deployments/prod",
                Call::Undeploy {
                    proxy: "u".into(),
                    environment: "prod".into(),
                },
            ),
        ];
        for (method, uri, expected) in cases {
            assert_eq!(
                call_of(method.clone(), uri, "").await.unwrap(),
                expected,
                "{method} {uri}"
            );
        }
    }

    #[tokio::test]
    async fn puts_carry_their_json_body() {
        let body = r#"{"listen": "127.0.0.1:8080"}"#;
        assert_eq!(
            call_of(Method::PUT, "/environments/prod", body)
                .await
                .unwrap(),
            Call::PutEnvironment("prod".into(), json!({"listen": "127.0.0.1:8080"}))
        );
        assert_eq!(
            call_of(Method::PUT, "/proxies/u", r#"{"path": "/u/*"}"#)
                .await
                .unwrap(),
            Call::PutProxy("u".into(), json!({"path": "/u/*"}))
        );
        assert_eq!(
            call_of(Method::PUT, "/consumers/a", r#"{"groups": ["g"]}"#)
                .await
                .unwrap(),
            Call::PutConsumer("a".into(), json!({"groups": ["g"]}))
        );
        assert_eq!(
            call_of(
                Method::PUT,
                "/upstreams/pool",
                r#"{"targets": ["http://a"]}"#
            )
            .await
            .unwrap(),
            Call::PutUpstream("pool".into(), json!({"targets": ["http://a"]}))
        );
    }

    #[tokio::test]
    async fn malformed_json_is_a_bad_request_with_serdes_message() {
        let error = call_of(Method::PUT, "/environments/prod", "{\"listen\": ")
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadRequest);
        assert!(
            error.message.contains("EOF while parsing"),
            "{}",
            error.message
        );
        let error = call_of(Method::PUT, "/proxies/u", "").await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadRequest);
    }

    #[tokio::test]
    async fn wrong_method_is_405_with_allow() {
        let error = call_of(Method::POST, "/environments/prod", "")
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::MethodNotAllowed);
        let response = error.to_response();
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()[header::ALLOW], "GET, PUT, DELETE");
        let error = call_of(Method::GET, "/proxies/u/deployments/prod", "")
            .await
            .unwrap_err();
        assert_eq!(error.to_response().headers()[header::ALLOW], "PUT, DELETE");
        let error = call_of(Method::PUT, "/proxies/u/targets", "")
            .await
            .unwrap_err();
        assert_eq!(error.to_response().headers()[header::ALLOW], "GET");
        let error = call_of(Method::DELETE, "/history", "").await.unwrap_err();
        assert_eq!(error.to_response().headers()[header::ALLOW], "GET");
        let error = call_of(Method::PUT, "/upstreams", "{}").await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::MethodNotAllowed);
        assert_eq!(error.to_response().headers()[header::ALLOW], "GET");
        let error = call_of(Method::POST, "/upstreams/pool", "{}")
            .await
            .unwrap_err();
        assert_eq!(
            error.to_response().headers()[header::ALLOW],
            "GET, PUT, DELETE"
        );
    }

    #[tokio::test]
    async fn history_paging_has_defaults_and_bounds() {
        let history = |page, per_page| Call::History { page, per_page };
        assert_eq!(
            call_of(Method::GET, "/history", "").await.unwrap(),
            history(1, 50)
        );
        assert_eq!(
            call_of(Method::GET, "/history?page=3&per_page=500", "")
                .await
                .unwrap(),
            history(3, 500)
        );
        assert_eq!(
            call_of(Method::GET, "/history?other=x&per_page=1", "")
                .await
                .unwrap(),
            history(1, 1)
        );
        for bad in [
            "page=0",
            "page=-1",
            "page=x",
            "per_page=0",
            "per_page=501",
            "per_page=",
        ] {
            let error = call_of(Method::GET, &format!("/history?{bad}"), "")
                .await
                .unwrap_err();
            assert_eq!(error.kind, ErrorKind::BadRequest, "{bad}");
        }
    }

    #[tokio::test]
    async fn force_must_be_true_or_false() {
        let error = call_of(Method::DELETE, "/environments/prod?force=yes", "")
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadRequest);
        assert_eq!(
            call_of(Method::DELETE, "/environments/prod?force=false", "")
                .await
                .unwrap(),
            Call::DeleteEnvironment {
                name: "prod".into(),
                force: false
            }
        );
    }

    #[tokio::test]
    async fn body_at_the_limit_is_read() {
        // A JSON string filling exactly 1 MiB with its quotes.
        let body = format!("\"{}\"", "a".repeat(MAX_BODY_BYTES - 2));
        let value = read_json(&HeaderMap::new(), Full::new(Bytes::from(body)))
            .await
            .unwrap();
        assert_eq!(value.as_str().map(str::len), Some(MAX_BODY_BYTES - 2));
    }

    #[tokio::test]
    async fn body_over_the_limit_is_413_while_reading() {
        // No Content-Length: the limit is enforced on the streamed bytes.
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..17)
            .map(|_| Ok(Frame::data(Bytes::from(vec![b' '; 64 * 1024]))))
            .collect();
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        let error = read_json(&HeaderMap::new(), body).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::PayloadTooLarge);
        assert_eq!(error.to_response().status(), 413);
    }

    #[tokio::test]
    async fn declared_length_over_the_limit_is_413_before_reading() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(MAX_BODY_BYTES as u64 + 1),
        );
        let error = read_json(&headers, Full::new(Bytes::from_static(b"{}")))
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::PayloadTooLarge);
    }

    #[tokio::test]
    async fn upstream_writes_are_writes_and_need_a_json_body() {
        let put = call_of(Method::PUT, "/upstreams/pool", r#"{"targets": []}"#)
            .await
            .unwrap();
        assert!(put.writes());
        let delete = call_of(Method::DELETE, "/upstreams/pool", "")
            .await
            .unwrap();
        assert!(delete.writes());
        assert!(!Call::ListUpstreams.writes());
        assert!(!Call::GetUpstream("pool".into()).writes());
        let error = call_of(Method::PUT, "/upstreams/pool", "{\"targets\": ")
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadRequest);
    }
}
