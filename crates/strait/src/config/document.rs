//! The configuration as a JSON document: `{"environments": [...], "proxies": [...]}` (and
//! an optional `"admin"`), each object written exactly as in the YAML file.
//!
//! The control plane keeps its desired state in this form. A document is validated by
//! turning it into the same tree of nodes a file is read into and running the same checker,
//! so a file and the admin API obey one set of rules. Export goes the other way, to YAML in
//! the file format.

use std::path::{Path, PathBuf};

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Number, Value as Json};
use serde_saphyr::{FlowMap, FlowSeq, SerializerOptions};

use super::Config;
use super::interpolate::{self, escape, interpolate};
use super::parse::{ConfigError, Problem, problems, yaml_problem};
use super::tree::{Loc, Node, Value, parse_yaml};
use super::validate::{
    ACTIVE_CHECK_KEYS, ADMIN_KEYS, BACKEND_KEYS, BACKEND_TLS_KEYS, BASIC_AUTH_KEYS, BREAKER_KEYS,
    CONSUMER_KEYS, CREDENTIAL_KEYS, ENVIRONMENT_KEYS, HEALTH_KEYS, PASSIVE_CHECK_KEYS, PROXY_KEYS,
    TARGET_KEYS, TIMEOUT_KEYS, TLS_KEYS, TOP_KEYS, UPSTREAM_KEYS, validate,
};

/// The `file` of problems found in a JSON document.
pub const DOCUMENT_ORIGIN: &str = "admin API";

/// The `file` of a problem found by [`document_from_yaml`], which is given text only.
const YAML_TEXT_ORIGIN: &str = "configuration";

/// Validates a JSON document with the rules of the file format; `base` anchors relative
/// file paths.
///
/// Reports every problem at once. Problems have [`DOCUMENT_ORIGIN`] as their file, no line
/// or column, and name the offending value in `field` (`proxies[2].path`).
pub fn validate_document(doc: &Json, base: &Path) -> Result<Config, Vec<Problem>> {
    let root = node_from_json(doc);
    validate(Some(&root), base, "the document")
        .map_err(|found| problems(found, Path::new(DOCUMENT_ORIGIN)))
}

/// The YAML text as the same JSON document, values as written (relative paths stay
/// relative) but with `${NAME}` replaced by the environment variable. Meant for text that
/// has already been validated; only broken YAML is an error (a variable that is not set is
/// left as written). An empty file gives an empty object.
pub fn document_from_yaml(text: &str) -> Result<Json, ConfigError> {
    document_from_yaml_with(text, &interpolate::environment)
}

/// [`document_from_yaml`] with variables from `lookup` instead of the process environment.
pub fn document_from_yaml_with(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Json, ConfigError> {
    match parse_yaml(text) {
        Ok(Some(mut root)) => {
            interpolate(&mut root, lookup);
            Ok(json_from_node(&root))
        }
        Ok(None) => Ok(Json::Object(Map::new())),
        Err(problem) => Err(ConfigError::Invalid(vec![yaml_problem(
            problem,
            &PathBuf::from(YAML_TEXT_ORIGIN),
        )])),
    }
}

/// The document as YAML in the file format: environments, upstreams, proxies, consumers, then
/// admin; within each object the keys in the order the format documents them (`name` first),
/// small sections (`tls`, `timeouts`, `deploy`, `methods`, `backend_tls`, `groups`,
/// `basic_auth`, `circuit_breaker`, each health check, `backend: {upstream: NAME}`), each
/// policy and each target on one line. A literal `${` in a value is written `$${`, so reading the
/// file back gives the same text.
pub fn document_to_yaml(doc: &Json) -> String {
    let ordered = Ordered {
        value: doc,
        kind: Kind::Document,
    };
    let mut options = SerializerOptions::default();
    // `  - name: ...` under `environments:`, as in the documentation.
    options.compact_list_indent = false;
    // Plain or quoted scalars only: no folded `>` blocks for long URLs.
    options.prefer_block_scalars = false;
    // JSON is YAML too, so should the YAML writer ever fail the export is still readable.
    serde_saphyr::to_string_with_options(&ordered, options)
        .or_else(|_| serde_json::to_string_pretty(doc).map(|json| json + "\n"))
        .unwrap_or_default()
}

/// A JSON value as a node without a location. Numbers are spelled as the YAML reader spells
/// them, so both give the checker the same tree.
fn node_from_json(value: &Json) -> Node {
    let value = match value {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => Value::Number(number_text(n)),
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(items) => Value::List(items.iter().map(node_from_json).collect()),
        Json::Object(map) => Value::Map(
            map.iter()
                .map(|(key, value)| (located(Value::Text(key.clone())), node_from_json(value)))
                .collect(),
        ),
    };
    located(value)
}

fn located(value: Value) -> Node {
    Node {
        value,
        at: Loc::default(),
    }
}

/// As the YAML reader prints integers (`i64`/`u64`) and floats (`f64`).
fn number_text(n: &Number) -> String {
    if let Some(u) = n.as_u64() {
        u.to_string()
    } else if let Some(i) = n.as_i64() {
        i.to_string()
    } else {
        n.as_f64()
            .map(|f| f.to_string())
            .unwrap_or_else(|| n.to_string())
    }
}

fn json_from_node(node: &Node) -> Json {
    match &node.value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Number(n) => json_number(n),
        Value::Text(t) => Json::String(t.clone()),
        Value::List(items) => Json::Array(items.iter().map(json_from_node).collect()),
        Value::Map(entries) => Json::Object(
            entries
                .iter()
                .filter_map(|(key, value)| Some((key_text(key)?, json_from_node(value))))
                .collect(),
        ),
    }
}

/// The number YAML gave as a JSON number that reads back to the same text; a number JSON
/// cannot hold (`.inf`, beyond 64 bits) stays text, which every check of a number also takes.
fn json_number(text: &str) -> Json {
    if let Ok(u) = text.parse::<u64>() {
        return Json::from(u);
    }
    if let Ok(i) = text.parse::<i64>() {
        return Json::from(i);
    }
    text.parse::<f64>()
        .ok()
        .filter(|f| f.to_string() == text)
        .and_then(Number::from_f64)
        .map_or_else(|| Json::String(text.to_owned()), Json::Number)
}

/// JSON keys are text; a key that is not a scalar (never valid in the format) is left out.
fn key_text(key: &Node) -> Option<String> {
    match &key.value {
        Value::Text(t) | Value::Number(t) => Some(t.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some("null".to_owned()),
        Value::List(_) | Value::Map(_) => None,
    }
}

/// Which object of the format a JSON value is, for the order of its keys on export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Document,
    Environment,
    Tls,
    Timeouts,
    Proxy,
    /// A proxy's `backend` written as a mapping.
    Backend,
    /// An entry of `upstreams`.
    Upstream,
    Target,
    Health,
    ActiveCheck,
    PassiveCheck,
    Breaker,
    BackendTls,
    Admin,
    Consumer,
    Credentials,
    BasicAuth,
    /// A policy entry: `type` first, then its fields.
    Policy,
    Other,
}

impl Kind {
    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Document => TOP_KEYS,
            Kind::Environment => ENVIRONMENT_KEYS,
            Kind::Tls => TLS_KEYS,
            Kind::Timeouts => TIMEOUT_KEYS,
            Kind::Proxy => PROXY_KEYS,
            Kind::Backend => BACKEND_KEYS,
            Kind::Upstream => UPSTREAM_KEYS,
            Kind::Target => TARGET_KEYS,
            Kind::Health => HEALTH_KEYS,
            Kind::ActiveCheck => ACTIVE_CHECK_KEYS,
            Kind::PassiveCheck => PASSIVE_CHECK_KEYS,
            Kind::Breaker => BREAKER_KEYS,
            Kind::BackendTls => BACKEND_TLS_KEYS,
            Kind::Admin => ADMIN_KEYS,
            Kind::Consumer => CONSUMER_KEYS,
            Kind::Credentials => CREDENTIAL_KEYS,
            Kind::BasicAuth => BASIC_AUTH_KEYS,
            Kind::Policy => &["type"],
            Kind::Other => &[],
        }
    }

    /// The kind of the value under `key` (for a list, of its items).
    fn child(self, key: &str) -> Kind {
        match (self, key) {
            (Kind::Document, "environments") => Kind::Environment,
            (Kind::Document, "proxies") => Kind::Proxy,
            (Kind::Document, "upstreams") => Kind::Upstream,
            (Kind::Proxy, "backend") => Kind::Backend,
            (Kind::Backend | Kind::Upstream, "targets") => Kind::Target,
            (Kind::Backend | Kind::Upstream, "health") => Kind::Health,
            (Kind::Backend | Kind::Upstream, "circuit_breaker") => Kind::Breaker,
            (Kind::Health, "active") => Kind::ActiveCheck,
            (Kind::Health, "passive") => Kind::PassiveCheck,
            (Kind::Document, "admin") => Kind::Admin,
            (Kind::Environment, "tls") => Kind::Tls,
            (Kind::Environment, "timeouts") => Kind::Timeouts,
            (Kind::Proxy, "backend_tls") => Kind::BackendTls,
            (Kind::Document, "consumers") => Kind::Consumer,
            (Kind::Consumer, "credentials") => Kind::Credentials,
            (Kind::Credentials, "basic_auth") => Kind::BasicAuth,
            (Kind::Environment | Kind::Proxy, "policies") => Kind::Policy,
            _ => Kind::Other,
        }
    }

    /// Whether `value` under `key` is written on one line, as in the documentation.
    fn flow(self, key: &str, value: &Json) -> bool {
        // `backend: { upstream: users }`, but a backend with targets as a block.
        let upstream_only = |value: &Json| {
            value
                .as_object()
                .is_some_and(|map| map.len() == 1 && map.contains_key("upstream"))
        };
        matches!(
            (self, key),
            (Kind::Environment, "tls" | "timeouts")
                | (Kind::Proxy, "deploy" | "methods" | "backend_tls")
                | (Kind::Consumer, "groups")
                | (Kind::Credentials, "basic_auth")
                | (Kind::Backend | Kind::Upstream, "circuit_breaker")
                | (Kind::Health, "active" | "passive")
        ) || (self == Kind::Proxy && key == "backend" && upstream_only(value))
    }

    /// Whether each item of the list under `key` is written on one line.
    fn flow_items(self, key: &str) -> bool {
        matches!(
            (self, key),
            (Kind::Environment | Kind::Proxy, "policies")
                | (Kind::Backend | Kind::Upstream, "targets")
        )
    }
}

/// A JSON value serialized with its mappings' keys in the format's order: the known keys
/// first in documented order, then any others as they come.
struct Ordered<'a> {
    value: &'a Json,
    kind: Kind,
}

/// The map's entries, known keys first in the order of `kind`'s keys, then the others in
/// the map's order (a stable sort ranks them all last).
fn ordered_entries(map: &Map<String, Json>, kind: Kind) -> Vec<(&String, &Json)> {
    let known = kind.keys();
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by_key(|(key, _)| known.iter().position(|k| k == key).unwrap_or(known.len()));
    entries
}

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.value {
            Json::Object(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (key, value) in ordered_entries(map, self.kind) {
                    let child = Ordered {
                        value,
                        kind: self.kind.child(key),
                    };
                    match value {
                        Json::Object(_) if self.kind.flow(key, value) => {
                            out.serialize_entry(key, &FlowMap(child))?;
                        }
                        Json::Array(_) if self.kind.flow(key, value) => {
                            out.serialize_entry(key, &FlowSeq(child))?;
                        }
                        Json::Array(items) if self.kind.flow_items(key) => {
                            let items: Vec<FlowItem<'_>> = items
                                .iter()
                                .map(|value| {
                                    let item = Ordered {
                                        value,
                                        kind: child.kind,
                                    };
                                    match value {
                                        Json::Object(_) => FlowItem::Map(FlowMap(item)),
                                        _ => FlowItem::Plain(item),
                                    }
                                })
                                .collect();
                            out.serialize_entry(key, &items)?;
                        }
                        _ => out.serialize_entry(key, &child)?,
                    }
                }
                out.end()
            }
            Json::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for value in items {
                    out.serialize_element(&Ordered {
                        value,
                        kind: self.kind,
                    })?;
                }
                out.end()
            }
            Json::String(text) if text.contains("${") => escape(text).serialize(serializer),
            scalar => scalar.serialize(serializer),
        }
    }
}

/// An item of a list written one item per line: a mapping in flow style, anything else
/// (a target written as a plain URL) as it is.
enum FlowItem<'a> {
    Map(FlowMap<Ordered<'a>>),
    Plain(Ordered<'a>),
}

impl Serialize for FlowItem<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FlowItem::Map(map) => map.serialize(serializer),
            FlowItem::Plain(value) => value.serialize(serializer),
        }
    }
}
