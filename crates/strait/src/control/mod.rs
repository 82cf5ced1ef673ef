//! The control plane: the desired state (environments, proxies, deployments, consumers,
//! named upstreams), where it is kept (a declarative file or the SQLite store), and turning
//! each change into a live gateway. Owns validation of changes (through `config`),
//! persistence (through `store`) and applying (through `proxy::GatewayHandle::apply`).
//! Knows nothing of HTTP.
//!
//! Consumers' secrets are sealed (`policy::consumers::seal`: API keys to SHA-256 digests,
//! passwords to argon2id hashes) before the state keeps them, so plaintext never reaches
//! the store, the history, `GET /config` or a log.

mod plan;
mod state;

pub use plan::{Step, plan};
pub use state::state_from_document;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::config::{self, Config, ConfigError, Problem};
use crate::policy::consumers;
use crate::proxy::GatewayHandle;
use crate::store::{Change, Record, State, Store};
use crate::upstream::pool::Pool;
use state::{document, object_problems, precheck_conflicts};

/// Where the configuration comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `strait run --config FILE`: the file is the source of truth; the admin API is read-only.
    Declarative,
    /// `strait run --data FILE.db`: the admin API edits the state kept in SQLite.
    Stateful,
}

/// One validation problem, for 422 answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    /// Where, e.g. `path`, `timeouts.connect`, `proxies[2].path`.
    pub field: String,
    pub message: String,
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    NotFound(String),
    #[error(
        "the configuration is read from a file in this mode; edit the file instead (it is reloaded on change and on SIGHUP)"
    )]
    ReadOnly,
    #[error("the change is not valid")]
    Invalid(Vec<FieldProblem>),
    #[error("{0}")]
    Conflict(String),
    #[error("storage failed: {0}")]
    Storage(String),
}

/// A page of the change history, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryPage {
    pub total: u64,
    pub entries: Vec<HistoryEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub id: u64,
    /// RFC 3339, UTC.
    pub time: String,
    /// e.g. `put_environment`, `delete_proxy`, `deploy`, `reload`.
    pub action: String,
    /// e.g. `environments/production`, `proxies/users/deployments/production`.
    pub object: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Whether a PUT created the object or replaced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    Updated,
    Unchanged,
}

/// The control plane of one gateway process. Every write returns only once the change is
/// live in the data plane.
pub struct Control {
    mode: Mode,
    gateway: Arc<GatewayHandle>,
    /// The file database in stateful mode; an in-memory one keeping history in declarative mode.
    store: Store,
    /// The desired state that is live now. Holding the lock serialises writes.
    state: Mutex<State>,
    /// Relative file paths in the state are anchored here.
    base: PathBuf,
    /// The configuration file, in declarative mode.
    file: Option<PathBuf>,
}

impl Control {
    /// Declarative mode: `file` is the source of truth; `text` is what the gateway was
    /// started from. Not read again here: a change written in between would count as already
    /// running, and the reload it calls for would find nothing to do.
    pub async fn declarative(
        file: &Path,
        text: &str,
        gateway: Arc<GatewayHandle>,
    ) -> Result<Control, ControlError> {
        let doc = config::document_from_yaml(text).map_err(|e| invalid_file(&e))?;
        let store = Store::memory().await.map_err(storage)?;
        let state = sealed(state_from_document(&doc), State::default()).await?;
        Ok(Control {
            mode: Mode::Declarative,
            gateway,
            store,
            state: Mutex::new(state),
            base: file.parent().map(Path::to_path_buf).unwrap_or_default(),
            file: Some(file.to_path_buf()),
        })
    }

    /// Stateful mode: opens (or creates) the database and starts a gateway serving what it holds.
    pub async fn stateful(
        db: &Path,
        options: crate::GatewayOptions,
    ) -> Result<(Control, Arc<GatewayHandle>), ControlError> {
        let store = Store::open(db).await.map_err(storage)?;
        let state = store.load().await.map_err(storage)?;
        let base = db.parent().map(Path::to_path_buf).unwrap_or_default();
        let config = compile(&state, &base)?;
        let gateway = crate::Gateway::start_with(&config, options)
            .await
            .map_err(|e| ControlError::Conflict(e.to_string()))?;
        let gateway = Arc::new(gateway);
        let control = Control {
            mode: Mode::Stateful,
            gateway: gateway.clone(),
            store,
            state: Mutex::new(state),
            base,
            file: None,
        };
        Ok((control, gateway))
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn gateway(&self) -> &Arc<GatewayHandle> {
        &self.gateway
    }

    /// Every environment as in the YAML (`name` included), sorted by name.
    pub async fn environments(&self) -> Vec<Value> {
        self.state
            .lock()
            .await
            .environments
            .values()
            .cloned()
            .collect()
    }

    pub async fn environment(&self, name: &str) -> Option<Value> {
        self.state.lock().await.environments.get(name).cloned()
    }

    /// Creates or replaces an environment. `body` holds its fields as in the YAML; a `name`
    /// in the body must match `name` (or be absent). Returns the stored object.
    pub async fn put_environment(
        &self,
        name: &str,
        body: Value,
    ) -> Result<(Written, Value), ControlError> {
        let body = named(name, body)?;
        let object = format!("environments/{name}");
        self.change(|state| {
            let before = state.environments.insert(name.to_owned(), body.clone());
            let written = written(before.as_ref(), &body);
            if written == Written::Unchanged {
                return Ok((written, Vec::new(), Vec::new()));
            }
            let change = Change::PutEnvironment {
                name: name.to_owned(),
                body: body.clone(),
            };
            let record = record("put_environment", &object, before, Some(body.clone()));
            Ok((written, vec![change], vec![record]))
        })
        .await
        .map(|written| (written, body))
    }

    /// Deleting one that still has deployments is a Conflict unless `force`.
    pub async fn delete_environment(&self, name: &str, force: bool) -> Result<(), ControlError> {
        self.change(|state| {
            let Some(before) = state.environments.remove(name) else {
                return Err(not_found("environment", name));
            };
            let deployed: Vec<String> = state
                .deployments
                .iter()
                .filter(|(_, env)| env == name)
                .map(|(proxy, _)| proxy.clone())
                .collect();
            if !deployed.is_empty() && !force {
                return Err(ControlError::Conflict(format!(
                    "environment {name:?} still has deployments ({}); undeploy them first or delete with ?force=true",
                    deployed.join(", ")
                )));
            }
            state.deployments.retain(|(_, env)| env != name);
            let change = Change::DeleteEnvironment {
                name: name.to_owned(),
            };
            let object = format!("environments/{name}");
            let record = record("delete_environment", &object, Some(before), None);
            Ok(((), vec![change], vec![record]))
        })
        .await
    }

    /// Every proxy as in the YAML without `deploy`, sorted by name.
    pub async fn proxies(&self) -> Vec<Value> {
        self.state.lock().await.proxies.values().cloned().collect()
    }

    pub async fn proxy(&self, name: &str) -> Option<Value> {
        self.state.lock().await.proxies.get(name).cloned()
    }

    /// Creates or replaces a proxy (fields as in the YAML, without `deploy`); its
    /// deployments are kept.
    pub async fn put_proxy(
        &self,
        name: &str,
        body: Value,
    ) -> Result<(Written, Value), ControlError> {
        let body = named(name, body)?;
        if body.get("deploy").is_some() {
            return Err(ControlError::Invalid(vec![FieldProblem {
                field: "deploy".into(),
                message: format!(
                    "deployments are managed with PUT /proxies/{name}/deployments/{{environment}}, not in the proxy body"
                ),
            }]));
        }
        let object = format!("proxies/{name}");
        self.change(|state| {
            if let Some(upstream) = uses_upstream(&body)
                && !state.upstreams.contains_key(upstream)
            {
                return Err(ControlError::Invalid(vec![FieldProblem {
                    field: format!("proxies/{name}: backend.upstream"),
                    message: format!(
                        "proxy {name:?}: backend.upstream names the upstream {upstream:?}, which does not exist; create it first with PUT /upstreams/{upstream}"
                    ),
                }]));
            }
            let before = state.proxies.insert(name.to_owned(), body.clone());
            let written = written(before.as_ref(), &body);
            if written == Written::Unchanged {
                return Ok((written, Vec::new(), Vec::new()));
            }
            let change = Change::PutProxy {
                name: name.to_owned(),
                body: body.clone(),
            };
            let record = record("put_proxy", &object, before, Some(body.clone()));
            Ok((written, vec![change], vec![record]))
        })
        .await
        .map(|written| (written, body))
    }

    /// Deleting a proxy undeploys it everywhere.
    pub async fn delete_proxy(&self, name: &str) -> Result<(), ControlError> {
        self.change(|state| {
            let Some(before) = state.proxies.remove(name) else {
                return Err(not_found("proxy", name));
            };
            state.deployments.retain(|(proxy, _)| proxy != name);
            let change = Change::DeleteProxy {
                name: name.to_owned(),
            };
            let record = record(
                "delete_proxy",
                &format!("proxies/{name}"),
                Some(before),
                None,
            );
            Ok(((), vec![change], vec![record]))
        })
        .await
    }

    /// Every consumer as the admin API shows it (name, groups, which credentials — never a
    /// secret or a hash), sorted by name.
    pub async fn consumers(&self) -> Vec<Value> {
        let state = self.state.lock().await;
        state.consumers.values().map(consumers::summary).collect()
    }

    /// One consumer as the admin API shows it.
    pub async fn consumer(&self, name: &str) -> Option<Value> {
        let state = self.state.lock().await;
        state.consumers.get(name).map(consumers::summary)
    }

    /// Creates or replaces a consumer (fields as in the YAML; secrets in plaintext or already
    /// hashed). The body is checked, then sealed — keys digested, a password hashed with
    /// argon2id unless it matches the stored hash — and only the sealed form is kept.
    /// Returns what the admin API shows of it.
    pub async fn put_consumer(
        &self,
        name: &str,
        body: Value,
    ) -> Result<(Written, Value), ControlError> {
        if self.mode == Mode::Declarative {
            return Err(ControlError::ReadOnly);
        }
        let body = named(name, body)?;
        check_consumer(name, &body, &self.base)?;
        let previous = self.state.lock().await.consumers.get(name).cloned();
        let body = seal(body, previous).await?;
        let object = format!("consumers/{name}");
        self.change(|state| {
            let before = state.consumers.insert(name.to_owned(), body.clone());
            let written = written(before.as_ref(), &body);
            if written == Written::Unchanged {
                return Ok((written, Vec::new(), Vec::new()));
            }
            let change = Change::PutConsumer {
                name: name.to_owned(),
                body: body.clone(),
            };
            let record = record("put_consumer", &object, before, Some(body.clone()));
            Ok((written, vec![change], vec![record]))
        })
        .await
        .map(|written| (written, consumers::summary(&body)))
    }

    pub async fn delete_consumer(&self, name: &str) -> Result<(), ControlError> {
        self.change(|state| {
            let Some(before) = state.consumers.remove(name) else {
                return Err(not_found("consumer", name));
            };
            let change = Change::DeleteConsumer {
                name: name.to_owned(),
            };
            let object = format!("consumers/{name}");
            let record = record("delete_consumer", &object, Some(before), None);
            Ok(((), vec![change], vec![record]))
        })
        .await
    }

    /// Every named upstream as in the YAML (`name` included), sorted by name.
    pub async fn upstreams(&self) -> Vec<Value> {
        self.state
            .lock()
            .await
            .upstreams
            .values()
            .cloned()
            .collect()
    }

    pub async fn upstream(&self, name: &str) -> Option<Value> {
        self.state.lock().await.upstreams.get(name).cloned()
    }

    /// Creates or replaces a named upstream (fields as in the YAML). A replacement applies at
    /// once to every proxy using it.
    pub async fn put_upstream(
        &self,
        name: &str,
        body: Value,
    ) -> Result<(Written, Value), ControlError> {
        let body = named(name, body)?;
        let object = format!("upstreams/{name}");
        self.change(|state| {
            let before = state.upstreams.insert(name.to_owned(), body.clone());
            let written = written(before.as_ref(), &body);
            if written == Written::Unchanged {
                return Ok((written, Vec::new(), Vec::new()));
            }
            let change = Change::PutUpstream {
                name: name.to_owned(),
                body: body.clone(),
            };
            let record = record("put_upstream", &object, before, Some(body.clone()));
            Ok((written, vec![change], vec![record]))
        })
        .await
        .map(|written| (written, body))
    }

    /// Deleting one that a proxy still uses is a Conflict.
    pub async fn delete_upstream(&self, name: &str) -> Result<(), ControlError> {
        self.change(|state| {
            let Some(before) = state.upstreams.remove(name) else {
                return Err(not_found("upstream", name));
            };
            let users = upstream_users(state, name);
            if !users.is_empty() {
                let (noun, backends, them) = match users.len() {
                    1 => ("proxy", "its backend", "it"),
                    _ => ("proxies", "their backends", "them"),
                };
                return Err(ControlError::Conflict(format!(
                    "upstream {name:?} is still used by {noun} {}; point {backends} elsewhere or delete {them} first",
                    users.join(", "),
                )));
            }
            let change = Change::DeleteUpstream {
                name: name.to_owned(),
            };
            let object = format!("upstreams/{name}");
            let record = record("delete_upstream", &object, Some(before), None);
            Ok(((), vec![change], vec![record]))
        })
        .await
    }

    /// The environments a proxy is deployed to, sorted.
    pub async fn deployments(&self, proxy: &str) -> Result<Vec<String>, ControlError> {
        let state = self.state.lock().await;
        if !state.proxies.contains_key(proxy) {
            return Err(not_found("proxy", proxy));
        }
        Ok(deployed_to(&state, proxy))
    }

    /// A proxy's backend pool in the live configuration (deployed or not): its targets
    /// with their health and counts.
    pub fn targets(&self, proxy: &str) -> Result<Arc<Pool>, ControlError> {
        self.gateway
            .pool(proxy)
            .ok_or_else(|| not_found("proxy", proxy))
    }

    /// Idempotent.
    pub async fn deploy(&self, proxy: &str, environment: &str) -> Result<Written, ControlError> {
        self.change(|state| {
            if !state.proxies.contains_key(proxy) {
                return Err(not_found("proxy", proxy));
            }
            if !state.environments.contains_key(environment) {
                return Err(not_found("environment", environment));
            }
            let before = deployed_to(state, proxy);
            if !state
                .deployments
                .insert((proxy.to_owned(), environment.to_owned()))
            {
                return Ok((Written::Unchanged, Vec::new(), Vec::new()));
            }
            let change = Change::Deploy {
                proxy: proxy.to_owned(),
                environment: environment.to_owned(),
            };
            let object = format!("proxies/{proxy}/deployments/{environment}");
            let after = deployed_to(state, proxy);
            let record = record("deploy", &object, Some(before.into()), Some(after.into()));
            Ok((Written::Created, vec![change], vec![record]))
        })
        .await
    }

    pub async fn undeploy(&self, proxy: &str, environment: &str) -> Result<(), ControlError> {
        self.change(|state| {
            let before = deployed_to(state, proxy);
            if !state
                .deployments
                .remove(&(proxy.to_owned(), environment.to_owned()))
            {
                return Err(ControlError::NotFound(format!(
                    "proxy {proxy:?} is not deployed to environment {environment:?}"
                )));
            }
            let change = Change::Undeploy {
                proxy: proxy.to_owned(),
                environment: environment.to_owned(),
            };
            let object = format!("proxies/{proxy}/deployments/{environment}");
            let after = deployed_to(state, proxy);
            let record = record("undeploy", &object, Some(before.into()), Some(after.into()));
            Ok(((), vec![change], vec![record]))
        })
        .await
    }

    /// `page` is 1-based.
    pub async fn history(&self, page: u64, per_page: u64) -> Result<HistoryPage, ControlError> {
        let offset = page.saturating_sub(1).saturating_mul(per_page);
        let (entries, total) = self
            .store
            .history(offset, per_page)
            .await
            .map_err(storage)?;
        Ok(HistoryPage { total, entries })
    }

    /// The whole state in the YAML file format; it round-trips through `strait apply`.
    pub async fn export_yaml(&self) -> String {
        config::document_to_yaml(&document(&*self.state.lock().await))
    }

    /// Declarative mode: re-reads the file and makes it live. An invalid file leaves the
    /// running configuration untouched; every problem is logged.
    pub async fn reload(&self) -> Result<bool, ControlError> {
        let Some(file) = &self.file else {
            return Err(ControlError::Conflict(
                "only a gateway started with --config reloads a file".into(),
            ));
        };
        // One read for both: a change written between two reads would leave the gateway
        // running one text and the state recording another, which no later reload repairs.
        let loaded = std::fs::read_to_string(file)
            .map_err(|source| ConfigError::Read {
                path: file.clone(),
                source,
            })
            .and_then(|text| {
                let config = config::parse_str(&text, file)?;
                Ok((config, config::document_from_yaml(&text)?))
            });
        let (config, doc) = match loaded {
            Ok(both) => both,
            Err(error) => {
                tracing::error!(
                    "{} was not reloaded; the running configuration stays:\n{error}",
                    file.display()
                );
                return Err(invalid_file(&error));
            }
        };
        let mut state = self.state.lock().await;
        let next = sealed(state_from_document(&doc), state.clone()).await?;
        if next == *state {
            return Ok(false);
        }
        if let Err(error) = self.gateway.apply(&config).await {
            tracing::error!("{} was not reloaded: {error}", file.display());
            return Err(ControlError::Conflict(error.to_string()));
        }
        let record = record(
            "reload",
            &file.display().to_string(),
            Some(document(&state)),
            Some(document(&next)),
        );
        let change = Change::Replace {
            state: next.clone(),
        };
        if let Err(error) = self.store.commit(&[change], &[record]).await {
            tracing::warn!(%error, "the reload is live but its history entry was not kept");
        }
        *state = next;
        tracing::info!("{} reloaded", file.display());
        Ok(true)
    }

    /// Runs one write: `edit` changes a copy of the state and says what to persist; the
    /// result is validated, made live, then persisted (and rolled back if persisting fails).
    async fn change<R>(
        &self,
        edit: impl FnOnce(&mut State) -> Result<(R, Vec<Change>, Vec<Record>), ControlError>,
    ) -> Result<R, ControlError> {
        if self.mode == Mode::Declarative {
            return Err(ControlError::ReadOnly);
        }
        let mut state = self.state.lock().await;
        let mut next = state.clone();
        let (result, changes, records) = edit(&mut next)?;
        if changes.is_empty() {
            return Ok(result);
        }
        precheck_conflicts(&next)?;
        let config = compile(&next, &self.base)?;
        self.gateway
            .apply(&config)
            .await
            .map_err(|e| ControlError::Conflict(e.to_string()))?;
        if let Err(error) = self.store.commit(&changes, &records).await {
            // Keep the data plane and the database in agreement.
            if let Ok(previous) = compile(&state, &self.base)
                && let Err(undo) = self.gateway.apply(&previous).await
            {
                tracing::error!(%undo, "could not restore the previous configuration");
            }
            return Err(storage(error));
        }
        *state = next;
        Ok(result)
    }
}

/// Validates the state through the same rules as a configuration file. A file needs at
/// least one environment, but a stateful gateway may hold proxies before (or after) any
/// environment: their rules are then checked against a placeholder environment that is
/// never served.
fn compile(state: &State, base: &Path) -> Result<Config, ControlError> {
    if state.environments.is_empty()
        && state.proxies.is_empty()
        && state.consumers.is_empty()
        && state.upstreams.is_empty()
    {
        return Ok(Config::default());
    }
    let mut doc = document(state);
    let placeholder = state.environments.is_empty();
    if placeholder && let Some(envs) = doc.get_mut("environments") {
        *envs = serde_json::json!([{"name": "strait-placeholder", "listen": "127.0.0.1:0"}]);
    }
    let mut config = config::validate_document(&doc, base)
        .map_err(|problems| ControlError::Invalid(object_problems(state, &problems)))?;
    if placeholder {
        config.environments.clear();
    }
    Ok(config)
}

/// Checks one consumer body on its own (the whole state is checked again once it is sealed),
/// so a bad body is refused before any hashing and sealing always removes every plaintext.
fn check_consumer(name: &str, body: &Value, base: &Path) -> Result<(), ControlError> {
    let doc = serde_json::json!({
        "environments": [{"name": "strait-placeholder", "listen": "127.0.0.1:0"}],
        "consumers": [body],
    });
    config::validate_document(&doc, base)
        .map(drop)
        .map_err(|problems| {
            let mut state = State::default();
            state.consumers.insert(name.to_owned(), body.clone());
            ControlError::Invalid(object_problems(&state, &problems))
        })
}

/// [`consumers::seal`] off the async workers (it may hash a password).
async fn seal(body: Value, previous: Option<Value>) -> Result<Value, ControlError> {
    let sealed = tokio::task::spawn_blocking(move || consumers::seal(&body, previous.as_ref()))
        .await
        .map_err(|e| ControlError::Storage(format!("sealing the credentials failed: {e}")))?
        .map_err(|e| ControlError::Storage(e.to_string()))?;
    if consumers::has_plaintext(&sealed) {
        return Err(ControlError::Invalid(vec![FieldProblem {
            field: "credentials".into(),
            message: "the credentials could not be sealed; check api_keys and basic_auth.password"
                .into(),
        }]));
    }
    Ok(sealed)
}

/// Every consumer of `state` sealed, reusing `previous`'s hashes where passwords match.
async fn sealed(mut state: State, previous: State) -> Result<State, ControlError> {
    let consumers = std::mem::take(&mut state.consumers);
    state.consumers = tokio::task::spawn_blocking(move || {
        consumers
            .into_iter()
            .map(|(name, body)| {
                let sealed = consumers::seal(&body, previous.consumers.get(&name))?;
                Ok((name, sealed))
            })
            .collect::<Result<_, consumers::SealError>>()
    })
    .await
    .map_err(|e| ControlError::Storage(format!("sealing the credentials failed: {e}")))?
    .map_err(|e| ControlError::Storage(e.to_string()))?;
    Ok(state)
}

fn invalid_file(error: &ConfigError) -> ControlError {
    match error {
        ConfigError::Invalid(problems) => ControlError::Invalid(
            problems
                .iter()
                .map(|p: &Problem| FieldProblem {
                    field: p.field.clone().unwrap_or_default(),
                    message: p.to_string(),
                })
                .collect(),
        ),
        ConfigError::Read { .. } => ControlError::Storage(error.to_string()),
    }
}

fn storage(error: impl std::fmt::Display) -> ControlError {
    ControlError::Storage(error.to_string())
}

fn not_found(what: &str, name: &str) -> ControlError {
    ControlError::NotFound(format!("there is no {what} named {name:?}"))
}

/// The body with `name` set; a different name in the body is a 422.
fn named(name: &str, body: Value) -> Result<Value, ControlError> {
    let Value::Object(mut map) = body else {
        return Err(ControlError::Invalid(vec![FieldProblem {
            field: String::new(),
            message: "the body must be a JSON object with the fields as in the YAML file".into(),
        }]));
    };
    match map.get("name") {
        Some(Value::String(given)) if given != name => {
            return Err(ControlError::Invalid(vec![FieldProblem {
                field: "name".into(),
                message: format!("the body names {given:?} but the URL names {name:?}"),
            }]));
        }
        _ => {}
    }
    map.insert("name".into(), Value::String(name.to_owned()));
    Ok(Value::Object(map))
}

fn written(before: Option<&Value>, after: &Value) -> Written {
    match before {
        None => Written::Created,
        Some(before) if before == after => Written::Unchanged,
        Some(_) => Written::Updated,
    }
}

fn record(action: &str, object: &str, before: Option<Value>, after: Option<Value>) -> Record {
    Record {
        action: action.to_owned(),
        object: object.to_owned(),
        before,
        after,
    }
}

/// The upstream a proxy body names in `backend: {upstream: NAME}`, if any.
fn uses_upstream(proxy: &Value) -> Option<&str> {
    proxy.get("backend")?.get("upstream")?.as_str()
}

/// The proxies whose backend is the named upstream `name`, sorted.
fn upstream_users(state: &State, name: &str) -> Vec<String> {
    state
        .proxies
        .iter()
        .filter(|(_, body)| uses_upstream(body) == Some(name))
        .map(|(proxy, _)| proxy.clone())
        .collect()
}

fn deployed_to(state: &State, proxy: &str) -> Vec<String> {
    state
        .deployments
        .iter()
        .filter(|(p, _)| p == proxy)
        .map(|(_, env)| env.clone())
        .collect()
}
