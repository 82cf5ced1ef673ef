//! The control plane: the desired state (environments, proxies, deployments), where it is
//! kept (a declarative file or the SQLite store), and turning each change into a live
//! gateway. Owns validation of changes (through `config`), persistence (through `store`)
//! and applying (through `proxy::GatewayHandle::apply`). Knows nothing of HTTP.

use serde::Serialize;
use serde_json::Value;

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
    #[error("the configuration is read from a file in this mode; edit the file instead (it is reloaded on change and on SIGHUP)")]
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
    // lead: fields come with the implementation
}

impl Control {
    pub fn mode(&self) -> Mode {
        todo!()
    }
    /// Every environment as in the YAML (`name` included), sorted by name.
    pub async fn environments(&self) -> Vec<Value> {
        todo!()
    }
    pub async fn environment(&self, _name: &str) -> Option<Value> {
        todo!()
    }
    /// Creates or replaces an environment. `body` holds its fields as in the YAML; a `name`
    /// in the body must match `name` (or be absent). Returns the stored object.
    pub async fn put_environment(&self, _name: &str, _body: Value) -> Result<(Written, Value), ControlError> {
        todo!()
    }
    /// Deleting one that still has deployments is a Conflict unless `force`.
    pub async fn delete_environment(&self, _name: &str, _force: bool) -> Result<(), ControlError> {
        todo!()
    }
    /// Every proxy as in the YAML without `deploy`, sorted by name.
    pub async fn proxies(&self) -> Vec<Value> {
        todo!()
    }
    pub async fn proxy(&self, _name: &str) -> Option<Value> {
        todo!()
    }
    /// Creates or replaces a proxy (fields as in the YAML, without `deploy`); its
    /// deployments are kept.
    pub async fn put_proxy(&self, _name: &str, _body: Value) -> Result<(Written, Value), ControlError> {
        todo!()
    }
    /// Deleting a proxy undeploys it everywhere.
    pub async fn delete_proxy(&self, _name: &str) -> Result<(), ControlError> {
        todo!()
    }
    /// The environments a proxy is deployed to, sorted.
    pub async fn deployments(&self, _proxy: &str) -> Result<Vec<String>, ControlError> {
        todo!()
    }
    /// Idempotent.
    pub async fn deploy(&self, _proxy: &str, _environment: &str) -> Result<Written, ControlError> {
        todo!()
    }
    pub async fn undeploy(&self, _proxy: &str, _environment: &str) -> Result<(), ControlError> {
        todo!()
    }
    /// `page` is 1-based.
    pub async fn history(&self, _page: u64, _per_page: u64) -> Result<HistoryPage, ControlError> {
        todo!()
    }
    /// The whole state in the YAML file format; it round-trips through `strait apply`.
    pub async fn export_yaml(&self) -> String {
        todo!()
    }
}
