//! A small client of the admin API, for `strait apply` and `strait dump`: reads the current
//! state, plans the steps to a file's state, and runs them. Consumers' secrets are sealed
//! here, before anything is sent: a key travels as its digest, a password as an argon2id
//! hash (the gateway's own hash when the password still matches it, so nothing changes).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::{self, ConfigError};
use crate::control::{Step, plan, state_from_document};
use crate::policy::consumers;
use crate::store::State;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0:?} is not an admin URL such as http://127.0.0.1:8001")]
    Url(String),
    #[error("cannot reach the admin API at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{method} {path} answered {status}: {body}")]
    Refused {
        method: Method,
        path: String,
        status: StatusCode,
        body: String,
    },
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("the consumers' credentials could not be sealed: {0}")]
    Seal(String),
}

pub struct AdminClient {
    base: String,
    token: Option<String>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    pub fn new(url: &str, token: Option<String>) -> Result<AdminClient, ClientError> {
        let base = url.trim_end_matches('/').to_owned();
        match base.parse::<Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => {}
            _ => return Err(ClientError::Url(url.to_owned())),
        }
        let http = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        Ok(AdminClient { base, token, http })
    }

    /// Sends one call; returns the body of a 2xx answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Bytes, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder().method(method.clone()).uri(&url);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let payload = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let request = request
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(payload))
            .map_err(|_| ClientError::Url(url.clone()))?;
        let unreachable = |message: String| ClientError::Unreachable {
            url: self.base.clone(),
            message,
        };
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(ClientError::Refused {
                method,
                path: path.to_owned(),
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        Ok(bytes)
    }

    async fn json(&self, path: &str) -> Result<Value, ClientError> {
        let bytes = self.call(Method::GET, path, None).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            message: format!("{path} did not answer JSON: {e}"),
        })
    }

    /// The gateway's state as the admin API shows it.
    pub async fn state(&self) -> Result<State, ClientError> {
        let environments = by_name(&self.json("/environments").await?, "environments");
        let proxies = by_name(&self.json("/proxies").await?, "proxies");
        let mut deployments = BTreeSet::new();
        for name in proxies.keys() {
            let deployed = self
                .json(&format!("/proxies/{}/deployments", encode(name)))
                .await?;
            for env in items(&deployed, "environments").filter_map(Value::as_str) {
                deployments.insert((name.clone(), env.to_owned()));
            }
        }
        let upstreams = self.upstreams().await?;
        // `GET /consumers` shows no hash; the configuration export has them.
        let yaml = self.call(Method::GET, "/config", None).await?;
        let exported = config::document_from_yaml(&String::from_utf8_lossy(&yaml))?;
        let state = State {
            environments,
            proxies,
            deployments,
            consumers: state_from_document(&exported).consumers,
            upstreams,
        };
        Ok(state)
    }

    /// The named upstreams; none from a gateway older than the `/upstreams` routes (it
    /// answers 404 `no_route`), so a file without upstreams still applies to it.
    async fn upstreams(&self) -> Result<BTreeMap<String, Value>, ClientError> {
        let listed = match self.json("/upstreams").await {
            Ok(listed) => listed,
            Err(ClientError::Refused { status, body, .. })
                if status == StatusCode::NOT_FOUND && body.contains("no_route") =>
            {
                return Ok(BTreeMap::new());
            }
            Err(error) => return Err(error),
        };
        Ok(by_name(&listed, "upstreams"))
    }

    /// Runs one step of a plan.
    pub async fn run(&self, step: &Step) -> Result<(), ClientError> {
        let (method, path, body) = match step {
            Step::PutConsumer { name, body, .. } => (
                Method::PUT,
                format!("/consumers/{}", encode(name)),
                Some(body),
            ),
            Step::DeleteConsumer { name } => {
                (Method::DELETE, format!("/consumers/{}", encode(name)), None)
            }
            Step::PutEnvironment { name, body, .. } => (
                Method::PUT,
                format!("/environments/{}", encode(name)),
                Some(body),
            ),
            Step::PutUpstream { name, body, .. } => (
                Method::PUT,
                format!("/upstreams/{}", encode(name)),
                Some(body),
            ),
            Step::DeleteUpstream { name } => {
                (Method::DELETE, format!("/upstreams/{}", encode(name)), None)
            }
            Step::PutProxy { name, body, .. } => (
                Method::PUT,
                format!("/proxies/{}", encode(name)),
                Some(body),
            ),
            Step::Deploy { proxy, environment } => (
                Method::PUT,
                format!(
                    "/proxies/{}/deployments/{}",
                    encode(proxy),
                    encode(environment)
                ),
                None,
            ),
            Step::Undeploy { proxy, environment } => (
                Method::DELETE,
                format!(
                    "/proxies/{}/deployments/{}",
                    encode(proxy),
                    encode(environment)
                ),
                None,
            ),
            Step::DeleteProxy { name } => {
                (Method::DELETE, format!("/proxies/{}", encode(name)), None)
            }
            Step::DeleteEnvironment { name } => (
                Method::DELETE,
                format!("/environments/{}", encode(name)),
                None,
            ),
        };
        self.call(method, &path, body).await.map(|_| ())
    }
}

/// `strait apply`: validates `file`, plans the steps from the gateway's state to the file's,
/// and runs them unless `dry_run`. Relative file paths become absolute (anchored at the
/// file's folder) so they mean the same on the gateway.
pub async fn apply_file(
    client: &AdminClient,
    file: &Path,
    dry_run: bool,
) -> Result<Vec<Step>, ClientError> {
    config::load(file)?;
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let mut desired = state_from_document(&config::document_from_yaml(&text)?);
    let base = file.parent().unwrap_or(Path::new(""));
    for env in desired.environments.values_mut() {
        absolutize(env, &["tls", "cert"], base);
        absolutize(env, &["tls", "key"], base);
    }
    for proxy in desired.proxies.values_mut() {
        absolutize(proxy, &["backend_tls", "ca_file"], base);
    }
    let current = client.state().await?;
    desired.consumers = seal_consumers(
        std::mem::take(&mut desired.consumers),
        current.consumers.clone(),
    )
    .await?;
    let steps = plan(&current, &desired);
    if !dry_run {
        for step in &steps {
            client.run(step).await?;
        }
    }
    Ok(steps)
}

/// Seals every consumer against the gateway's current one (off the async workers: it may
/// hash passwords).
async fn seal_consumers(
    desired: BTreeMap<String, Value>,
    current: BTreeMap<String, Value>,
) -> Result<BTreeMap<String, Value>, ClientError> {
    tokio::task::spawn_blocking(move || {
        desired
            .into_iter()
            .map(|(name, body)| {
                let sealed = consumers::seal(&body, current.get(&name))
                    .map_err(|e| ClientError::Seal(e.to_string()))?;
                Ok((name, sealed))
            })
            .collect()
    })
    .await
    .map_err(|e| ClientError::Seal(e.to_string()))?
}

fn absolutize(object: &mut Value, path: &[&str], base: &Path) {
    let mut slot = Some(object);
    for key in path {
        slot = slot.and_then(|v| v.get_mut(*key));
    }
    if let Some(value) = slot
        && let Some(text) = value.as_str()
        && Path::new(text).is_relative()
    {
        let absolute = std::path::absolute(base.join(text)).unwrap_or_else(|_| base.join(text));
        *value = Value::String(absolute.display().to_string());
    }
}

/// Percent-encodes a name for a path segment.
fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The items of the array `field` of an admin API answer (none if it has no such array).
fn items<'a>(answer: &'a Value, field: &str) -> impl Iterator<Item = &'a Value> {
    answer
        .get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The items of the array `field` of an admin API answer by their `name`.
fn by_name(answer: &Value, field: &str) -> BTreeMap<String, Value> {
    items(answer, field)
        .filter_map(|item| Some((item.get("name")?.as_str()?.to_owned(), item.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_for_paths() {
        assert_eq!(encode("users v2/a"), "users%20v2%2Fa");
        assert_eq!(encode("plain-name_1.x~"), "plain-name_1.x~");
    }

    #[test]
    fn relative_files_become_absolute() {
        let mut env = serde_json::json!({"tls": {"cert": "gw.pem", "key": "/abs/key.pem"}});
        absolutize(&mut env, &["tls", "cert"], Path::new("/etc/strait"));
        absolutize(&mut env, &["tls", "key"], Path::new("/etc/strait"));
        assert_eq!(env["tls"]["cert"], "/etc/strait/gw.pem");
        assert_eq!(env["tls"]["key"], "/abs/key.pem");
    }

    #[test]
    fn only_http_urls_are_accepted() {
        assert!(AdminClient::new("http://127.0.0.1:8001/", None).is_ok());
        assert!(AdminClient::new("127.0.0.1:8001", None).is_err());
    }
}
