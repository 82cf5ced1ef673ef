//! From the YAML tree to a validated [`Config`], collecting every problem on the way.
//!
//! Each object is checked as far as it can be: a bad value is reported and validation goes
//! on with the next key, so one pass finds every problem. Cross-object checks (duplicate
//! names, paths and listen addresses, deploy references) run on whatever parsed.
//!
//! Every problem carries the dotted path of the value it is about (`environments[0].listen`,
//! `proxies[2].deploy[1]`), so a JSON document without line numbers still points at it.
//!
//! One `Check` walks the document; its methods are spread by subject: [`environment`]
//! (environments, listeners, admin), [`proxy`] (proxies, deploy lists, policy entries),
//! [`upstream`] (backends, targets, health checks), [`consumer`] (consumers and their
//! credentials) and [`read`] (typed readers every object uses: mappings, lists, names,
//! durations, files).

mod consumer;
mod environment;
mod proxy;
mod read;
mod upstream;

use std::path::Path;

use super::tree::{Loc, Node, Value};
use super::{Config, NamedUpstream};

// The keys of each object, in the order the file format writes them (export keeps it).
pub(super) const TOP_KEYS: &[&str] =
    &["environments", "proxies", "upstreams", "consumers", "admin"];
pub(super) const ENVIRONMENT_KEYS: &[&str] = &[
    "name",
    "listen",
    "websocket",
    "tls",
    "timeouts",
    "shutdown_grace",
    "undeploy_grace",
    "access_log",
    "policies",
    "backend_source_addresses",
];
pub(super) const ACCESS_LOG_KEYS: &[&str] = &["format", "file", "log_handshake"];
pub(super) const TLS_KEYS: &[&str] = &["cert", "key"];
pub(super) const TIMEOUT_KEYS: &[&str] = &[
    "connect",
    "response",
    "send",
    "client_idle",
    "websocket_idle",
    "websocket_ping",
    "websocket_pong_timeout",
    "websocket_max_lifetime",
];
pub(super) const PROXY_KEYS: &[&str] = &[
    "name",
    "path",
    "backend",
    "deploy",
    "methods",
    "preserve_host",
    "backend_tls",
    "policies",
];
pub(super) const BACKEND_TLS_KEYS: &[&str] = &["ca_file"];
/// A proxy's `backend:` written as a mapping: `upstream` alone, or the settings.
pub(super) const BACKEND_KEYS: &[&str] = &[
    "upstream",
    "targets",
    "balance",
    "hash_on",
    "health",
    "retries",
    "circuit_breaker",
    "rebalance",
];
/// An entry of `upstreams:`: a name and the settings of a backend mapping.
pub(super) const UPSTREAM_KEYS: &[&str] = &[
    "name",
    "targets",
    "balance",
    "hash_on",
    "health",
    "retries",
    "circuit_breaker",
    "rebalance",
];
pub(super) const TARGET_KEYS: &[&str] = &["url", "weight"];
pub(super) const HEALTH_KEYS: &[&str] = &["active", "passive"];
pub(super) const ACTIVE_CHECK_KEYS: &[&str] = &[
    "path",
    "interval",
    "timeout",
    "healthy_after",
    "unhealthy_after",
];
pub(super) const PASSIVE_CHECK_KEYS: &[&str] = &["unhealthy_after", "cool_down"];
pub(super) const BREAKER_KEYS: &[&str] = &["failure_ratio", "min_requests", "open_for"];
pub(super) const ADMIN_KEYS: &[&str] = &["listen"];
pub(super) const CONSUMER_KEYS: &[&str] = &["name", "groups", "credentials"];
pub(super) const CREDENTIAL_KEYS: &[&str] =
    &["api_keys", "api_key_digests", "basic_auth", "jwt_subject"];
pub(super) const BASIC_AUTH_KEYS: &[&str] = &["username", "password", "password_hash"];
const ADD_ENVIRONMENT: &str =
    "add at least one under environments:, with a name and a listen address such as 127.0.0.1:8080";

/// One problem: where it was written, the dotted path of the value, and a sentence.
#[derive(Debug)]
pub(super) struct Finding {
    pub at: Loc,
    /// `None` for problems with the document as a whole.
    pub field: Option<String>,
    pub message: String,
}

pub(super) type Found = Vec<Finding>;

/// Validates the document; `base` anchors relative file paths. `whole` names the document
/// in messages about it as a whole ("the file").
pub(super) fn validate(root: Option<&Node>, base: &Path, whole: &str) -> Result<Config, Found> {
    let mut check = Check {
        problems: Vec::new(),
        base,
        whole,
    };
    let config = check.config(root);
    match config {
        Some(config) if check.problems.is_empty() => Ok(config),
        _ if check.problems.is_empty() => Err(vec![Finding {
            at: Loc::default(),
            field: None,
            message: "the configuration could not be validated (a bug in Strait)".to_owned(),
        }]),
        _ => Err(check.problems),
    }
}

/// `parent.key`, or `key` at the top level.
fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// The entries of one mapping in the file.
struct Fields<'n> {
    at: Loc,
    entries: &'n [(Node, Node)],
    /// `"tls."` inside the tls section, so messages say `tls.cert`.
    prefix: String,
    /// The mapping's own dotted path (`environments[0].tls`; empty for the document).
    path: String,
}

impl<'n> Fields<'n> {
    fn entry(&self, key: &str) -> Option<&'n (Node, Node)> {
        self.entries
            .iter()
            .find(|(k, _)| matches!(&k.value, Value::Text(t) if t == key))
    }
    /// The value under `key`; `None` when absent or empty (`key:` or `key: ~`).
    fn optional(&self, key: &str) -> Option<&'n Node> {
        self.entry(key)
            .map(|(_, v)| v)
            .filter(|v| !matches!(v.value, Value::Null))
    }
    fn label(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
    /// The dotted path of the value under `key`.
    fn field(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

struct Check<'b> {
    problems: Found,
    base: &'b Path,
    whole: &'b str,
}

impl Check<'_> {
    /// Records a problem with the value at `field` (empty: the document as a whole).
    fn report(&mut self, at: Loc, field: &str, message: String) {
        self.problems.push(Finding {
            at,
            field: (!field.is_empty()).then(|| field.to_owned()),
            message,
        });
    }

    fn config(&mut self, root: Option<&Node>) -> Option<Config> {
        let whole = self.whole;
        let Some(root) = root else {
            self.report(
                Loc::default(),
                "",
                format!("no environments: {whole} is empty; {ADD_ENVIRONMENT}"),
            );
            return None;
        };
        let fields = self.mapping(
            root,
            whole,
            "a mapping with the keys environments and proxies",
            "",
        )?;
        self.known_keys(&fields, None, None, TOP_KEYS);

        let environment_nodes = match fields.optional("environments") {
            None => {
                self.report(
                    fields.at,
                    "environments",
                    format!("no environments: {ADD_ENVIRONMENT}"),
                );
                &[]
            }
            Some(node) => match self.list(
                node,
                &format!("{whole}: environments"),
                "a list of environments",
                "environments",
            ) {
                Some([]) => {
                    self.report(
                        node.at,
                        "environments",
                        format!("no environments: the list is empty; {ADD_ENVIRONMENT}"),
                    );
                    &[]
                }
                items => items.unwrap_or_default(),
            },
        };
        let environments: Vec<_> = environment_nodes
            .iter()
            .enumerate()
            .map(|(i, node)| self.environment(i, node))
            .collect();
        self.check_environments(&environments);

        let upstream_nodes = self.top_list(&fields, whole, "upstreams");
        let upstreams: Vec<_> = upstream_nodes
            .iter()
            .enumerate()
            .map(|(i, node)| self.upstream(i, node))
            .collect();
        self.check_upstreams(&upstreams);

        let proxy_nodes = self.top_list(&fields, whole, "proxies");
        let proxies: Vec<_> = proxy_nodes
            .iter()
            .enumerate()
            .map(|(i, node)| self.proxy(i, node, &upstreams))
            .collect();
        self.check_proxies(&proxies, &environments);

        let consumer_nodes = self.top_list(&fields, whole, "consumers");
        let consumers: Vec<_> = consumer_nodes
            .iter()
            .enumerate()
            .map(|(i, node)| self.consumer(i, node))
            .collect();
        self.check_consumers(&consumers);

        let admin = match fields.optional("admin") {
            None => Some(None),
            Some(node) => self.admin(node, &environments).map(Some),
        };

        Some(Config {
            environments: environments
                .into_iter()
                .map(|e| e.environment)
                .collect::<Option<_>>()?,
            upstreams: upstreams
                .into_iter()
                .map(|u| {
                    Some(NamedUpstream {
                        name: u.name?.0,
                        backend: u.backend?,
                    })
                })
                .collect::<Option<_>>()?,
            proxies: proxies
                .into_iter()
                .map(|p| p.proxy)
                .collect::<Option<_>>()?,
            consumers: consumers
                .into_iter()
                .map(|c| c.consumer)
                .collect::<Option<_>>()?,
            admin: admin?,
        })
    }
}
