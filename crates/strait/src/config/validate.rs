//! From the YAML tree to a validated [`Config`], collecting every problem on the way.
//!
//! Each object is checked as far as it can be: a bad value is reported and validation goes
//! on with the next key, so one pass finds every problem. Cross-object checks (duplicate
//! names, paths and listen addresses, deploy references) run on whatever parsed.
//!
//! Every problem carries the dotted path of the value it is about (`environments[0].listen`,
//! `proxies[2].deploy[1]`), so a JSON document without line numbers still points at it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;

use super::duration::parse_duration;
use super::tree::{Loc, Node, Value};
use super::{
    AccessLogFormat, AccessLogSettings, ActiveCheck, AdminConfig, BackendSpec, BackendTls, Balance,
    BreakerSpec, Config, Consumer, Environment, HashOn, HealthSpec, KeyDigest, Login,
    NamedUpstream, PassiveCheck, Password, PolicyEntry, Proxy, Rebalance, TargetSpec, Targets,
    Timeouts, TlsFiles,
};
use crate::policy::{self, Reported};
use crate::routing::{BackendUrl, ProxyPath};

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
const MAX_WEIGHT: u32 = 1000;
const MAX_RETRIES: u32 = 10;
/// Consecutive probes or failures before a target changes state.
const MAX_STREAK: u32 = 1000;
const MAX_MIN_REQUESTS: u32 = 1_000_000;
const HASH_ON_FORMS: &str = "header:NAME, cookie:NAME, query:NAME or client_ip";
pub(super) const ADMIN_KEYS: &[&str] = &["listen"];
pub(super) const CONSUMER_KEYS: &[&str] = &["name", "groups", "credentials"];
pub(super) const CREDENTIAL_KEYS: &[&str] =
    &["api_keys", "api_key_digests", "basic_auth", "jwt_subject"];
pub(super) const BASIC_AUTH_KEYS: &[&str] = &["username", "password", "password_hash"];
const METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
    Method::TRACE,
    Method::CONNECT,
];
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_UNDEPLOY_GRACE: Duration = Duration::from_secs(30);
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

struct EnvironmentDraft {
    label: String,
    /// `environments[i]`.
    field: String,
    name: Option<(String, Loc)>,
    listen: Option<(SocketAddr, Loc)>,
    environment: Option<Environment>,
}

struct ProxyDraft {
    label: String,
    /// `proxies[i]`.
    field: String,
    name: Option<(String, Loc)>,
    path: Option<(ProxyPath, Loc)>,
    /// Each usable entry with its position in the list.
    deploy: Vec<DeployEntry>,
    proxy: Option<Proxy>,
}

struct UpstreamDraft {
    /// `upstreams[i]`.
    field: String,
    name: Option<(String, Loc)>,
    /// With `upstream: Some(name)`.
    backend: Option<BackendSpec>,
}

struct ConsumerDraft {
    /// `consumers[i]`.
    field: String,
    name: Option<(String, Loc)>,
    /// The basic-auth username, where it was written and its field.
    username: Option<(String, Loc, String)>,
    /// Every API key's digest, where it was written and its field.
    keys: Vec<(KeyDigest, Loc, String)>,
    subject: Option<(String, Loc, String)>,
    consumer: Option<Consumer>,
}

#[derive(Default)]
struct Credentials {
    api_keys: Vec<KeyDigest>,
    basic_auth: Option<Login>,
    jwt_subject: Option<String>,
}

/// A policy entry's fields as the policy reads them: wrong types are reported here with the
/// entry's place, as everywhere else in the file.
struct PolicyReader<'c, 'b, 'n> {
    check: &'c mut Check<'b>,
    fields: Fields<'n>,
    /// `proxy "users": api_key policy`.
    ctx: String,
}

impl policy::Fields for PolicyReader<'_, '_, '_> {
    fn text(&mut self, key: &str) -> Result<Option<String>, Reported> {
        let Some(node) = self.fields.optional(key) else {
            return Ok(None);
        };
        let field = self.fields.field(key);
        match self.check.text(node, &self.ctx, key, &field) {
            Some(text) => Ok(Some(text.to_owned())),
            None => Err(Reported),
        }
    }

    fn flag(&mut self, key: &str) -> Result<Option<bool>, Reported> {
        if self.fields.optional(key).is_none() {
            return Ok(None);
        }
        self.check
            .flag(&self.fields, &self.ctx, key)
            .map(Some)
            .ok_or(Reported)
    }

    fn texts(&mut self, key: &str) -> Result<Option<Vec<String>>, Reported> {
        let Some(node) = self.fields.optional(key) else {
            return Ok(None);
        };
        let field = self.fields.field(key);
        match self.check.names(node, &self.ctx, key, &field) {
            Some(items) => Ok(Some(items)),
            None => Err(Reported),
        }
    }

    fn number(&mut self, key: &str) -> Result<Option<u64>, Reported> {
        let Some(node) = self.fields.optional(key) else {
            return Ok(None);
        };
        let field = self.fields.field(key);
        let expected = "a whole number such as 100";
        let text = self
            .check
            .scalar_text(node, &self.ctx, key, expected, &field)
            .ok_or(Reported)?;
        text.parse().map(Some).map_err(|_| {
            let message = format!("{}: {key} must be {expected}, but it is {text:?}", self.ctx);
            self.check.report(node.at, &field, message);
            Reported
        })
    }

    fn duration(&mut self, key: &str) -> Result<Option<Duration>, Reported> {
        let Some(node) = self.fields.optional(key) else {
            return Ok(None);
        };
        let field = self.fields.field(key);
        self.check
            .duration(node, &self.ctx, key, &field)
            .map(Some)
            .ok_or(Reported)
    }

    fn file(&mut self, key: &str) -> Result<Option<Vec<u8>>, Reported> {
        let Some(node) = self.fields.optional(key) else {
            return Ok(None);
        };
        let field = self.fields.field(key);
        let text = self
            .check
            .text(node, &self.ctx, key, &field)
            .ok_or(Reported)?;
        let path = self.check.base.join(text);
        std::fs::read(&path).map(Some).map_err(|why| {
            let message = format!(
                "{}: {key} {} cannot be read: {why}",
                self.ctx,
                path.display()
            );
            self.check.report(node.at, &field, message);
            Reported
        })
    }

    fn problem(&mut self, key: &str, message: String) -> Reported {
        let at = self.fields.entry(key).map_or(self.fields.at, |(_, v)| v.at);
        let message = format!("{}: {message}", self.ctx);
        self.check.report(at, &self.fields.field(key), message);
        Reported
    }
}

struct DeployEntry {
    environment: String,
    at: Loc,
    index: usize,
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

    fn environment(&mut self, index: usize, node: &Node) -> EnvironmentDraft {
        let numbered = format!("environment #{}", index + 1);
        let field = format!("environments[{index}]");
        let expected = "a mapping with name, listen and optional settings";
        let Some(fields) = self.mapping(node, &numbered, expected, &field) else {
            return EnvironmentDraft {
                label: numbered,
                field,
                name: None,
                listen: None,
                environment: None,
            };
        };
        let (ctx, name) = self.name(&fields, "environment", numbered, "production");
        self.known_keys(&fields, Some(&ctx), None, ENVIRONMENT_KEYS);

        let listen = self.required(&fields, &ctx, "listen", "127.0.0.1:8080");
        let listen = listen.and_then(|n| {
            let addr = self.listen(n, &ctx, &fields.field("listen"))?;
            Some((addr, n.at))
        });
        let websocket = self.flag(&fields, &ctx, "websocket");
        let tls = match fields.optional("tls") {
            None => Some(None),
            Some(node) => self.tls(node, &ctx, &fields.field("tls")).map(Some),
        };
        let timeouts = match fields.optional("timeouts") {
            None => Some(Timeouts::default()),
            Some(node) => self.timeouts(node, &ctx, &fields.field("timeouts")),
        };
        let shutdown_grace = match fields.optional("shutdown_grace") {
            None => Some(DEFAULT_SHUTDOWN_GRACE),
            Some(node) => self.duration(
                node,
                &ctx,
                "shutdown_grace",
                &fields.field("shutdown_grace"),
            ),
        };
        let undeploy_grace = match fields.optional("undeploy_grace") {
            None => Some(Some(DEFAULT_UNDEPLOY_GRACE)),
            Some(node) => self.undeploy_grace(node, &ctx, &fields.field("undeploy_grace")),
        };

        let access_log = match fields.optional("access_log") {
            None => Some(AccessLogSettings::default()),
            Some(node) => self.access_log(node, &ctx, &fields.field("access_log")),
        };
        let policies = self.policies(&fields, &ctx);
        let sources = match fields.optional("backend_source_addresses") {
            None => Some(Vec::new()),
            Some(node) => {
                self.source_addresses(node, &ctx, &fields.field("backend_source_addresses"))
            }
        };

        let environment = (|| {
            Some(Environment {
                name: name.clone()?.0,
                listen: listen?.0,
                websocket: websocket?,
                tls: tls?,
                timeouts: timeouts?,
                shutdown_grace: shutdown_grace?,
                undeploy_grace: undeploy_grace?,
                access_log: access_log?,
                policies: policies?,
                backend_source_addresses: sources?,
            })
        })();
        EnvironmentDraft {
            label: ctx,
            field,
            name,
            listen,
            environment,
        }
    }

    fn listen(&mut self, node: &Node, ctx: &str, field: &str) -> Option<SocketAddr> {
        let text = self.scalar_text(
            node,
            ctx,
            "listen",
            "an address such as 127.0.0.1:8080",
            field,
        )?;
        let parsed = text.parse().ok().or_else(|| {
            let port = text.strip_prefix("localhost:")?.parse::<u16>().ok()?;
            Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        });
        if parsed.is_none() {
            let message = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
                format!(
                    "{ctx}: listen {text:?} has no host; write 127.0.0.1:{text} to accept connections from this machine only, or 0.0.0.0:{text} for every interface"
                )
            } else {
                format!(
                    "{ctx}: listen {text:?} is not an address; write IP:port, such as 127.0.0.1:8080, localhost:8080, 0.0.0.0:8080 or [::1]:8080"
                )
            };
            self.report(node.at, field, message);
        }
        parsed
    }

    /// `backend_source_addresses`: IP addresses (no port: each connection gets its own),
    /// each listed once.
    fn source_addresses(&mut self, node: &Node, ctx: &str, field: &str) -> Option<Vec<IpAddr>> {
        let key = "backend_source_addresses";
        let expected = "a list of this machine's IP addresses, such as [127.0.0.2, 127.0.0.3]";
        let items = self.list(node, &format!("{ctx}: {key}"), expected, field)?;
        let mut addresses: Vec<IpAddr> = Vec::new();
        let mut complete = true;
        for (index, item) in items.iter().enumerate() {
            let item_field = format!("{field}[{index}]");
            let label = format!("each entry of {key}");
            let Some(text) = self.scalar_text(
                item,
                ctx,
                &label,
                "an IP address such as 127.0.0.2",
                &item_field,
            ) else {
                complete = false;
                continue;
            };
            let problem = match text.parse::<IpAddr>() {
                Err(_) => Some(format!(
                    "{ctx}: {key} entry {text:?} is not an IP address; write the address alone, such as 127.0.0.2 or ::1 (the port is chosen per connection)"
                )),
                Ok(ip) if ip.is_unspecified() || ip.is_multicast() => Some(format!(
                    "{ctx}: {key} entry {text:?} is not an address a connection can leave from; list addresses of this machine's interfaces"
                )),
                Ok(ip) if addresses.contains(&ip) => {
                    Some(format!("{ctx}: {key} lists {text:?} twice"))
                }
                Ok(ip) => {
                    addresses.push(ip);
                    None
                }
            };
            if let Some(message) = problem {
                self.report(item.at, &item_field, message);
                complete = false;
            }
        }
        complete.then_some(addresses)
    }

    /// The optional `admin` section: the admin API's own listener.
    fn admin(&mut self, node: &Node, environments: &[EnvironmentDraft]) -> Option<AdminConfig> {
        let ctx = "admin";
        let expected = "a mapping such as { listen: 127.0.0.1:8001 }";
        let fields = self.mapping(node, ctx, expected, "admin")?;
        self.known_keys(&fields, Some(ctx), None, ADMIN_KEYS);
        let node = self.required(&fields, ctx, "listen", "127.0.0.1:8001")?;
        let field = fields.field("listen");
        let listen = self.listen(node, ctx, &field)?;
        let clash = environments.iter().find_map(|env| {
            let (env_addr, _) = env.listen?;
            listeners_clash(listen, env_addr).then_some((env, env_addr))
        });
        if let Some((env, env_addr)) = clash {
            let message = format!(
                "admin: listen {listen} clashes with {} (listen {env_addr}); the admin API needs an address of its own",
                env.label
            );
            self.report(node.at, &field, message);
            return None;
        }
        Some(AdminConfig { listen })
    }

    fn tls(&mut self, node: &Node, ctx: &str, field: &str) -> Option<TlsFiles> {
        let fields = self.section(
            node,
            ctx,
            "tls",
            TLS_KEYS,
            "a mapping such as { cert: gw.pem, key: gw-key.pem }",
            field,
        )?;
        let cert = self.file(&fields, ctx, "cert", "gw.pem");
        let key = self.file(&fields, ctx, "key", "gw-key.pem");
        Some(TlsFiles {
            cert: cert?,
            key: key?,
        })
    }

    fn access_log(&mut self, node: &Node, ctx: &str, field: &str) -> Option<AccessLogSettings> {
        let expected = "a mapping such as { format: json, file: access.log, log_handshake: false }";
        let fields = self.section(node, ctx, "access_log", ACCESS_LOG_KEYS, expected, field)?;
        let format = match fields.optional("format") {
            None => Some(Some(AccessLogFormat::Json)),
            Some(node) => {
                let label = fields.label("format");
                let field = fields.field("format");
                match self.text(node, ctx, &label, &field)? {
                    "json" => Some(Some(AccessLogFormat::Json)),
                    "combined" => Some(Some(AccessLogFormat::Combined)),
                    "off" => Some(None),
                    other => {
                        self.report(
                            node.at,
                            &field,
                            format!(
                                "{ctx}: {label} must be json, combined or off, but it is {other:?}"
                            ),
                        );
                        None
                    }
                }
            }
        };
        let file = match fields.optional("file") {
            None => Some(None),
            Some(_) => self.file(&fields, ctx, "file", "access.log").map(Some),
        };
        let log_handshake = self.flag(&fields, ctx, "log_handshake");
        Some(AccessLogSettings {
            format: format?,
            file: file?,
            log_handshake: log_handshake?,
        })
    }

    fn backend_tls(&mut self, node: &Node, ctx: &str, field: &str) -> Option<BackendTls> {
        let expected = "a mapping such as { ca_file: ca.pem }";
        let fields = self.section(node, ctx, "backend_tls", BACKEND_TLS_KEYS, expected, field)?;
        let ca_file = self.file(&fields, ctx, "ca_file", "ca.pem")?;
        Some(BackendTls { ca_file })
    }

    fn timeouts(&mut self, node: &Node, ctx: &str, field: &str) -> Option<Timeouts> {
        let fields = self.section(
            node,
            ctx,
            "timeouts",
            TIMEOUT_KEYS,
            "a mapping such as { connect: 5s, response: 60s, websocket_idle: 1h }",
            field,
        )?;
        let defaults = Timeouts::default();
        let mut timeout = |key: &str, default: Duration| match fields.optional(key) {
            None => Some(default),
            Some(node) => self.duration(node, ctx, &fields.label(key), &fields.field(key)),
        };
        let connect = timeout("connect", defaults.connect);
        let response = timeout("response", defaults.response);
        let websocket_idle = timeout("websocket_idle", defaults.websocket_idle);
        // These may be left out (off: `Some(None)`) but not zero: a zero interval would
        // ping without end. `None`: reported.
        let mut positive = |key: &str| {
            let Some(node) = fields.optional(key) else {
                return Some(None);
            };
            let label = fields.label(key);
            let d = self.duration(node, ctx, &label, &fields.field(key))?;
            if d.is_zero() {
                let why =
                    format!("{ctx}: {label}: must be more than 0s; leave it out to turn it off");
                self.report(node.at, &fields.field(key), why);
                return None;
            }
            Some(Some(d))
        };
        let websocket_ping = positive("websocket_ping");
        let websocket_pong_timeout = positive("websocket_pong_timeout");
        let websocket_max_lifetime = positive("websocket_max_lifetime");
        Some(Timeouts {
            connect: connect?,
            response: response?,
            websocket_idle: websocket_idle?,
            websocket_ping: websocket_ping?,
            websocket_pong_timeout: websocket_pong_timeout?
                .unwrap_or(defaults.websocket_pong_timeout),
            websocket_max_lifetime: websocket_max_lifetime?,
        })
    }

    fn duration(&mut self, node: &Node, ctx: &str, label: &str, field: &str) -> Option<Duration> {
        let text = self.scalar_text(node, ctx, label, "a duration such as 5s", field)?;
        parse_duration(&text)
            .map_err(|why| self.report(node.at, field, format!("{ctx}: {label}: {why}")))
            .ok()
    }

    /// A duration, `0` (close at once) or `never` (`None`: let sessions finish on their own).
    fn undeploy_grace(&mut self, node: &Node, ctx: &str, field: &str) -> Option<Option<Duration>> {
        let label = "undeploy_grace";
        let expected = "a duration such as 30s, 0 or never";
        let text = self.scalar_text(node, ctx, label, expected, field)?;
        match text.as_str() {
            "never" => return Some(None),
            "0" => return Some(Some(Duration::ZERO)),
            _ => {}
        }
        match parse_duration(&text) {
            Ok(grace) => Some(Some(grace)),
            Err(why) => {
                let message = format!(
                    "{ctx}: {label}: {why}; or write 0 to close the sessions at once, or never to let them finish on their own"
                );
                self.report(node.at, field, message);
                None
            }
        }
    }

    /// Reports each name used a second time among `items` (their `kind`: "proxy", ...);
    /// returns, item by item, whether its name is not such a repeat.
    fn unique_names<'d>(
        &mut self,
        kind: &str,
        items: impl IntoIterator<Item = (&'d Option<(String, Loc)>, &'d str)>,
    ) -> Vec<bool> {
        let mut names: HashMap<&str, Loc> = HashMap::new();
        let mut firsts = Vec::new();
        for (name, field) in items {
            let Some((name, at)) = name else {
                firsts.push(true);
                continue;
            };
            if let Some(first) = names.get(name.as_str()) {
                let message = format!(
                    "{kind} {name:?} is defined twice{}; {kind} names must be unique",
                    first_at(*first)
                );
                self.report(*at, field, message);
                firsts.push(false);
            } else {
                names.insert(name, *at);
                firsts.push(true);
            }
        }
        firsts
    }

    fn check_environments(&mut self, environments: &[EnvironmentDraft]) {
        self.unique_names(
            "environment",
            environments.iter().map(|e| (&e.name, e.field.as_str())),
        );
        for (i, env) in environments.iter().enumerate() {
            let Some((addr, at)) = env.listen else {
                continue;
            };
            let clash = environments.iter().take(i).find_map(|other| {
                let (other_addr, _) = other.listen?;
                listeners_clash(addr, other_addr).then_some((other, other_addr))
            });
            if let Some((other, other_addr)) = clash {
                let message = format!(
                    "{}: listen {addr} clashes with {} (listen {other_addr}); HTTP and WebSocket share one listener, so each environment needs its own address",
                    env.label, other.label
                );
                self.report(at, &join(&env.field, "listen"), message);
            }
        }
    }

    fn proxy(&mut self, index: usize, node: &Node, upstreams: &[UpstreamDraft]) -> ProxyDraft {
        let numbered = format!("proxy #{}", index + 1);
        let field = format!("proxies[{index}]");
        let expected = "a mapping with name, path, backend and optional settings";
        let Some(fields) = self.mapping(node, &numbered, expected, &field) else {
            return ProxyDraft {
                label: numbered,
                field,
                name: None,
                path: None,
                deploy: Vec::new(),
                proxy: None,
            };
        };
        let (ctx, name) = self.name(&fields, "proxy", numbered, "users");
        self.known_keys(&fields, Some(&ctx), None, PROXY_KEYS);

        let path = self
            .required(&fields, &ctx, "path", "/api/v1/*")
            .and_then(|node| {
                let field = fields.field("path");
                let text = self.text(node, &ctx, "path", &field)?;
                ProxyPath::parse(text)
                    .map_err(|why| self.report(node.at, &field, format!("{ctx}: {why}")))
                    .ok()
                    .map(|path| (path, node.at))
            });
        let backend = self
            .required(&fields, &ctx, "backend", "http://localhost:8080")
            .and_then(|node| self.backend(node, &ctx, &fields.field("backend"), upstreams));
        let (deploy, deploy_ok) = self.deploy(&fields, &ctx);
        let methods = match fields.optional("methods") {
            None => Some(None),
            Some(node) => self.methods(node, &ctx, &fields.field("methods")).map(Some),
        };
        let preserve_host = self.flag(&fields, &ctx, "preserve_host");
        let backend_tls = match fields.optional("backend_tls") {
            None => Some(None),
            Some(node) => self
                .backend_tls(node, &ctx, &fields.field("backend_tls"))
                .map(Some),
        };

        let policies = self.policies(&fields, &ctx);

        let proxy = (|| {
            Some(Proxy {
                name: name.clone()?.0,
                path: path.clone()?.0,
                backend: backend?,
                deploy: deploy_ok
                    .then(|| deploy.iter().map(|d| d.environment.clone()).collect())?,
                methods: methods?,
                preserve_host: preserve_host?,
                backend_tls: backend_tls?,
                policies: policies?,
            })
        })();
        ProxyDraft {
            label: ctx,
            field,
            name,
            path,
            deploy,
            proxy,
        }
    }

    /// Reads the required `name`. Returns the label that names the object in later messages:
    /// `proxy "users"`, or the numbered label (`proxy #2`) when the name is unusable.
    fn name(
        &mut self,
        fields: &Fields,
        kind: &str,
        numbered: String,
        example: &str,
    ) -> (String, Option<(String, Loc)>) {
        let node = self.required(fields, &numbered, "name", example);
        let field = fields.field("name");
        let name = node.and_then(|n| {
            let text = self.text(n, &numbered, "name", &field)?;
            Some((text.to_owned(), n.at))
        });
        let label = match &name {
            Some((name, _)) => format!("{kind} {name:?}"),
            None => numbered,
        };
        (label, name)
    }

    /// The environment names under `deploy` (none when absent), and whether every entry was
    /// usable. The names are returned either way so they can still be checked against the
    /// environments.
    fn deploy(&mut self, fields: &Fields, ctx: &str) -> (Vec<DeployEntry>, bool) {
        let Some(node) = fields.optional("deploy") else {
            return (Vec::new(), true);
        };
        let field = fields.field("deploy");
        let expected = "a list of environment names, such as [production]";
        let Some(items) = self.list(node, &format!("{ctx}: deploy"), expected, &field) else {
            return (Vec::new(), false);
        };
        let mut entries: Vec<DeployEntry> = Vec::new();
        let mut complete = true;
        for (index, item) in items.iter().enumerate() {
            let item_field = format!("{field}[{index}]");
            let Some(name) = self.text(item, ctx, "each entry of deploy", &item_field) else {
                complete = false;
                continue;
            };
            if entries.iter().any(|seen| seen.environment == name) {
                self.report(
                    item.at,
                    &item_field,
                    format!("{ctx}: deploy lists the environment {name:?} twice"),
                );
                complete = false;
            } else {
                entries.push(DeployEntry {
                    environment: name.to_owned(),
                    at: item.at,
                    index,
                });
            }
        }
        (entries, complete)
    }

    fn methods(&mut self, node: &Node, ctx: &str, field: &str) -> Option<Vec<Method>> {
        let items = self.list(
            node,
            &format!("{ctx}: methods"),
            "a list of HTTP methods, such as [GET, POST]",
            field,
        )?;
        if items.is_empty() {
            let message = format!(
                "{ctx}: methods is an empty list, so no request could match; list at least one method, or remove the key to allow any method"
            );
            self.report(node.at, field, message);
            return None;
        }
        let mut methods = Vec::new();
        let mut complete = true;
        for (index, item) in items.iter().enumerate() {
            match self.method(item, ctx, &format!("{field}[{index}]")) {
                Some(method) if !methods.contains(&method) => methods.push(method),
                Some(_) => {}
                None => complete = false,
            }
        }
        complete.then_some(methods)
    }

    fn method(&mut self, node: &Node, ctx: &str, field: &str) -> Option<Method> {
        let text = self.scalar_text(
            node,
            ctx,
            "each entry of methods",
            "an HTTP method such as GET",
            field,
        )?;
        if let Some(method) = METHODS.iter().find(|m| m.as_str() == text) {
            return Some(method.clone());
        }
        // Extension methods (PURGE, PROPFIND...) are allowed: any token, written in capitals.
        let upper = text.to_ascii_uppercase();
        let token = Method::from_bytes(text.as_bytes()).ok();
        let hint = match token {
            Some(method) if upper == text => return Some(method),
            Some(_) => format!("methods are written in capitals: {upper}"),
            None => "a method is one word of capital letters, such as GET or PURGE".to_owned(),
        };
        self.report(
            node.at,
            field,
            format!("{ctx}: {text:?} is not an HTTP method; {hint}"),
        );
        None
    }

    fn check_proxies(&mut self, proxies: &[ProxyDraft], environments: &[EnvironmentDraft]) {
        self.unique_names("proxy", proxies.iter().map(|p| (&p.name, p.field.as_str())));

        let mut known: Vec<&str> = Vec::new();
        for (name, _) in environments.iter().filter_map(|e| e.name.as_ref()) {
            if !known.contains(&name.as_str()) {
                known.push(name);
            }
        }
        // (environment, is wildcard, prefix) → the proxy that took it first.
        let mut paths: HashMap<(&str, bool, &str), &ProxyDraft> = HashMap::new();
        for proxy in proxies {
            for entry in &proxy.deploy {
                let env = &entry.environment;
                if !known.contains(&env.as_str()) {
                    let message = format!(
                        "{}: deploy names the environment {env:?}, which does not exist; the environments are {}",
                        proxy.label,
                        known.join(", ")
                    );
                    let field = format!("{}.deploy[{}]", proxy.field, entry.index);
                    self.report(entry.at, &field, message);
                    continue;
                }
                let Some((path, path_at)) = &proxy.path else {
                    continue;
                };
                let key = (env.as_str(), path.is_wildcard(), path.prefix());
                if let Some(first) = paths.get(&key) {
                    let message = format!(
                        "{}: path {:?} is already used by {} in environment {env:?}; within one environment each path belongs to one proxy",
                        proxy.label,
                        path.as_str(),
                        first.label
                    );
                    self.report(*path_at, &join(&proxy.field, "path"), message);
                } else {
                    paths.insert(key, proxy);
                }
            }
        }
    }

    // ---- backends and upstreams ----

    /// One entry of `upstreams:`.
    fn upstream(&mut self, index: usize, node: &Node) -> UpstreamDraft {
        let numbered = format!("upstream #{}", index + 1);
        let field = format!("upstreams[{index}]");
        let expected = "a mapping with name, targets and optional settings";
        let Some(fields) = self.mapping(node, &numbered, expected, &field) else {
            return UpstreamDraft {
                field,
                name: None,
                backend: None,
            };
        };
        let (ctx, name) = self.name(&fields, "upstream", numbered, "users-pool");
        self.known_keys(&fields, Some(&ctx), None, UPSTREAM_KEYS);
        let backend = self
            .backend_settings(&fields, &ctx)
            .and_then(|mut backend| {
                backend.upstream = Some(name.clone()?.0);
                Some(backend)
            });
        UpstreamDraft {
            field,
            name,
            backend,
        }
    }

    fn check_upstreams(&mut self, upstreams: &[UpstreamDraft]) {
        self.unique_names(
            "upstream",
            upstreams.iter().map(|u| (&u.name, u.field.as_str())),
        );
    }

    /// A proxy's `backend`: a URL, `{upstream: NAME}`, or a mapping with targets.
    fn backend(
        &mut self,
        node: &Node,
        ctx: &str,
        field: &str,
        upstreams: &[UpstreamDraft],
    ) -> Option<BackendSpec> {
        if !matches!(node.value, Value::Map(_)) {
            if matches!(node.value, Value::List(_) | Value::Bool(_)) {
                let message = format!(
                    "{ctx}: backend must be a URL such as http://localhost:8080 or a mapping such as {{ targets: [http://10.0.0.1:8080, http://10.0.0.2:8080] }}, but it is {}",
                    node.value.describe()
                );
                self.report(node.at, field, message);
                return None;
            }
            let text = self.text(node, ctx, "backend", field)?;
            return BackendUrl::parse(text)
                .map_err(|why| self.report(node.at, field, format!("{ctx}: {why}")))
                .ok()
                .map(BackendSpec::single);
        }
        let expected = "a mapping with targets, or { upstream: NAME }";
        let fields = self.section(node, ctx, "backend", BACKEND_KEYS, expected, field)?;
        let Some((_, upstream)) = fields.entry("upstream") else {
            return self.backend_settings(&fields, ctx);
        };
        let upstream_field = fields.field("upstream");
        let others: Vec<&str> = fields
            .entries
            .iter()
            .filter_map(|(key, _)| match &key.value {
                Value::Text(t) if t != "upstream" && BACKEND_KEYS.contains(&t.as_str()) => {
                    Some(t.as_str())
                }
                _ => None,
            })
            .collect();
        if !others.is_empty() {
            let message = format!(
                "{ctx}: backend.upstream uses a shared upstream, so it cannot be combined with {}; set them on the upstream, or write the targets here without upstream",
                others.join(", ")
            );
            self.report(upstream.at, &upstream_field, message);
            return None;
        }
        let name = self.text(upstream, ctx, "backend.upstream", &upstream_field)?;
        let found = upstreams
            .iter()
            .find(|u| u.name.as_ref().is_some_and(|(n, _)| n == name));
        match found {
            // Already reported when the upstream itself is invalid.
            Some(found) => found.backend.clone(),
            None => {
                let known: Vec<&str> = upstreams
                    .iter()
                    .filter_map(|u| u.name.as_ref().map(|(n, _)| n.as_str()))
                    .collect();
                let hint = if known.is_empty() {
                    "no upstreams are defined; add one under upstreams: with a name and targets"
                        .to_owned()
                } else {
                    format!("the upstreams are {}", known.join(", "))
                };
                let message = format!(
                    "{ctx}: backend.upstream names the upstream {name:?}, which does not exist; {hint}"
                );
                self.report(upstream.at, &upstream_field, message);
                None
            }
        }
    }

    /// The settings of a backend mapping or an upstream: targets and how to use them.
    fn backend_settings(&mut self, fields: &Fields, ctx: &str) -> Option<BackendSpec> {
        let targets = self.targets(fields, ctx);
        let balance = match fields.optional("balance") {
            None => Some(Balance::default()),
            Some(node) => {
                let label = fields.label("balance");
                let field = fields.field("balance");
                match self.text(node, ctx, &label, &field)? {
                    "round_robin" => Some(Balance::RoundRobin),
                    "least_connections" => Some(Balance::LeastConnections),
                    "consistent_hash" => Some(Balance::ConsistentHash),
                    other => {
                        let message = format!(
                            "{ctx}: {label} must be round_robin, least_connections or consistent_hash, but it is {other:?}"
                        );
                        self.report(node.at, &field, message);
                        None
                    }
                }
            }
        };
        let hash_on = match fields.optional("hash_on") {
            None => Some(None),
            Some(node) => {
                let label = fields.label("hash_on");
                let field = fields.field("hash_on");
                let text = self.text(node, ctx, &label, &field)?;
                match parse_hash_on(text) {
                    Ok(hash_on) => Some(Some(hash_on)),
                    Err(why) => {
                        self.report(node.at, &field, format!("{ctx}: {label}: {why}"));
                        None
                    }
                }
            }
        };
        let hash_on = match (balance, hash_on) {
            (Some(Balance::ConsistentHash), Some(None)) => {
                let at = fields.entry("balance").map_or(fields.at, |(_, v)| v.at);
                let message = format!(
                    "{ctx}: {} consistent_hash needs {} to say what to hash, such as hash_on: header:X-User-Id ({HASH_ON_FORMS})",
                    fields.label("balance"),
                    fields.label("hash_on")
                );
                self.report(at, &fields.field("hash_on"), message);
                None
            }
            (Some(Balance::RoundRobin | Balance::LeastConnections), Some(Some(_))) => {
                let at = fields.entry("hash_on").map_or(fields.at, |(_, v)| v.at);
                let message = format!(
                    "{ctx}: {} only applies with balance: consistent_hash; remove it or set balance: consistent_hash",
                    fields.label("hash_on")
                );
                self.report(at, &fields.field("hash_on"), message);
                None
            }
            (_, hash_on) => hash_on,
        };
        let health = match fields.optional("health") {
            None => Some(HealthSpec::default()),
            Some(node) => self.health(node, ctx, &fields.label("health"), &fields.field("health")),
        };
        let retries = self.whole(fields, ctx, "retries", 0, MAX_RETRIES, 0);
        let circuit_breaker = match fields.optional("circuit_breaker") {
            None => Some(None),
            Some(node) => {
                let label = fields.label("circuit_breaker");
                self.breaker(node, ctx, &label, &fields.field("circuit_breaker"))
                    .map(Some)
            }
        };
        let rebalance = match fields.optional("rebalance") {
            None => Some(Rebalance::default()),
            Some(node) => {
                let label = fields.label("rebalance");
                let field = fields.field("rebalance");
                match self.text(node, ctx, &label, &field)? {
                    "keep" => Some(Rebalance::Keep),
                    "drain" => Some(Rebalance::Drain),
                    other => {
                        let message =
                            format!("{ctx}: {label} must be keep or drain, but it is {other:?}");
                        self.report(node.at, &field, message);
                        None
                    }
                }
            }
        };
        Some(BackendSpec {
            upstream: None,
            targets: targets?,
            balance: balance?,
            hash_on: hash_on?,
            health: health?,
            retries: retries?,
            circuit_breaker: circuit_breaker?,
            rebalance: rebalance?,
        })
    }

    /// The required, non-empty `targets` list; each URL once.
    fn targets(&mut self, fields: &Fields, ctx: &str) -> Option<Targets> {
        let example = "[http://10.0.0.1:8080, http://10.0.0.2:8080]";
        let node = self.required(fields, ctx, "targets", example)?;
        let label = fields.label("targets");
        let field = fields.field("targets");
        let expected =
            "a list of backend URLs or mappings such as { url: http://10.0.0.1:8080, weight: 2 }";
        let items = self.list(node, &format!("{ctx}: {label}"), expected, &field)?;
        let mut targets: Vec<TargetSpec> = Vec::new();
        let mut complete = true;
        for (index, item) in items.iter().enumerate() {
            let item_label = format!("{label}[{index}]");
            let item_field = format!("{field}[{index}]");
            let Some(target) = self.target(item, ctx, &item_label, &item_field) else {
                complete = false;
                continue;
            };
            if let Some(first) = targets
                .iter()
                .position(|t| same_target(&t.url, &target.url))
            {
                let message = format!(
                    "{ctx}: {item_label} repeats the URL {} of {label}[{first}]; list each target once and give it a weight to send it more requests",
                    target.url.as_str()
                );
                self.report(item.at, &item_field, message);
                complete = false;
                continue;
            }
            targets.push(target);
        }
        let targets = complete.then_some(targets)?;
        let targets = Targets::from_vec(targets);
        if targets.is_none() {
            let message = format!(
                "{ctx}: {label} is an empty list; list at least one backend URL, such as targets: {example}"
            );
            self.report(node.at, &field, message);
        }
        targets
    }

    /// A target: a URL (weight 1) or `{ url, weight }`.
    fn target(&mut self, node: &Node, ctx: &str, label: &str, field: &str) -> Option<TargetSpec> {
        let parse_url = |check: &mut Self, node: &Node, label: &str, field: &str| {
            let text = check.text(node, ctx, label, field)?;
            BackendUrl::parse(text)
                .map_err(|why| check.report(node.at, field, format!("{ctx}: {label}: {why}")))
                .ok()
        };
        match &node.value {
            Value::Map(_) => {
                let expected = "a mapping such as { url: http://10.0.0.1:8080, weight: 2 }";
                let fields = self.section(node, ctx, label, TARGET_KEYS, expected, field)?;
                let url = self
                    .required(&fields, ctx, "url", "http://10.0.0.1:8080")
                    .and_then(|url| {
                        parse_url(self, url, &fields.label("url"), &fields.field("url"))
                    });
                let weight = self.whole(&fields, ctx, "weight", 1, MAX_WEIGHT, 1);
                Some(TargetSpec {
                    url: url?,
                    weight: weight?,
                })
            }
            Value::List(_) | Value::Bool(_) => {
                let message = format!(
                    "{ctx}: {label} must be a URL or a mapping such as {{ url: http://10.0.0.1:8080, weight: 2 }}, but it is {}",
                    node.value.describe()
                );
                self.report(node.at, field, message);
                None
            }
            _ => Some(TargetSpec {
                url: parse_url(self, node, label, field)?,
                weight: 1,
            }),
        }
    }

    /// `health: { active: {...}, passive: {...} }`; each check is off unless written.
    fn health(&mut self, node: &Node, ctx: &str, name: &str, field: &str) -> Option<HealthSpec> {
        let expected = "a mapping such as { active: { path: /health }, passive: {} }";
        let fields = self.section(node, ctx, name, HEALTH_KEYS, expected, field)?;
        let active = match fields.optional("active") {
            None => Some(None),
            Some(node) => self
                .active_check(node, ctx, &fields.label("active"), &fields.field("active"))
                .map(Some),
        };
        let passive = match fields.optional("passive") {
            None => Some(None),
            Some(node) => {
                let label = fields.label("passive");
                let expected = "a mapping such as { unhealthy_after: 5, cool_down: 10s }";
                let fields = self.section(
                    node,
                    ctx,
                    &label,
                    PASSIVE_CHECK_KEYS,
                    expected,
                    &fields.field("passive"),
                )?;
                let defaults = PassiveCheck::default();
                let unhealthy_after = self.whole(
                    &fields,
                    ctx,
                    "unhealthy_after",
                    1,
                    MAX_STREAK,
                    defaults.unhealthy_after,
                );
                let cool_down = self.positive(&fields, ctx, "cool_down", defaults.cool_down);
                Some(Some(PassiveCheck {
                    unhealthy_after: unhealthy_after?,
                    cool_down: cool_down?,
                }))
            }
        };
        Some(HealthSpec {
            active: active?,
            passive: passive?,
        })
    }

    fn active_check(
        &mut self,
        node: &Node,
        ctx: &str,
        name: &str,
        field: &str,
    ) -> Option<ActiveCheck> {
        let expected = "a mapping such as { path: /health, interval: 5s, timeout: 1s }";
        let fields = self.section(node, ctx, name, ACTIVE_CHECK_KEYS, expected, field)?;
        let defaults = ActiveCheck::default();
        let path = match fields.optional("path") {
            None => Some(defaults.path),
            Some(node) => {
                let label = fields.label("path");
                let field = fields.field("path");
                let text = self.text(node, ctx, &label, &field)?;
                if text.starts_with('/') && !text.contains(['#', ' ']) {
                    Some(text.to_owned())
                } else {
                    let message = format!(
                        "{ctx}: {label} must be a path starting with /, such as /health, but it is {text:?}"
                    );
                    self.report(node.at, &field, message);
                    None
                }
            }
        };
        let interval = self.positive(&fields, ctx, "interval", defaults.interval);
        let timeout = self.positive(&fields, ctx, "timeout", defaults.timeout);
        let healthy_after = self.whole(
            &fields,
            ctx,
            "healthy_after",
            1,
            MAX_STREAK,
            defaults.healthy_after,
        );
        let unhealthy_after = self.whole(
            &fields,
            ctx,
            "unhealthy_after",
            1,
            MAX_STREAK,
            defaults.unhealthy_after,
        );
        if let (Some(interval), Some(timeout)) = (interval, timeout)
            && timeout >= interval
        {
            let at = fields.entry("timeout").map_or(fields.at, |(_, v)| v.at);
            let message = format!(
                "{ctx}: {} ({}) must be shorter than {} ({}), so one probe ends before the next starts",
                fields.label("timeout"),
                super::format_duration(timeout),
                fields.label("interval"),
                super::format_duration(interval)
            );
            self.report(at, &fields.field("timeout"), message);
            return None;
        }
        Some(ActiveCheck {
            path: path?,
            interval: interval?,
            timeout: timeout?,
            healthy_after: healthy_after?,
            unhealthy_after: unhealthy_after?,
        })
    }

    fn breaker(&mut self, node: &Node, ctx: &str, name: &str, field: &str) -> Option<BreakerSpec> {
        let expected = "a mapping such as { failure_ratio: 0.5, min_requests: 20, open_for: 30s }";
        let fields = self.section(node, ctx, name, BREAKER_KEYS, expected, field)?;
        let defaults = BreakerSpec::default();
        let failure_ratio = match fields.optional("failure_ratio") {
            None => Some(defaults.failure_ratio),
            Some(node) => {
                let label = fields.label("failure_ratio");
                let field = fields.field("failure_ratio");
                let expected = "a number above 0 and at most 1, such as 0.5";
                let text = self.scalar_text(node, ctx, &label, expected, &field)?;
                match text.parse::<f64>() {
                    Ok(ratio) if ratio > 0.0 && ratio <= 1.0 => Some(ratio),
                    _ => {
                        let message =
                            format!("{ctx}: {label} must be {expected}, but it is {text}");
                        self.report(node.at, &field, message);
                        None
                    }
                }
            }
        };
        let min_requests = self.whole(
            &fields,
            ctx,
            "min_requests",
            1,
            MAX_MIN_REQUESTS,
            defaults.min_requests,
        );
        let open_for = self.positive(&fields, ctx, "open_for", defaults.open_for);
        Some(BreakerSpec {
            failure_ratio: failure_ratio?,
            min_requests: min_requests?,
            open_for: open_for?,
        })
    }

    /// A whole number from `min` to `max` under `key`; `default` when absent.
    fn whole(
        &mut self,
        fields: &Fields,
        ctx: &str,
        key: &str,
        min: u32,
        max: u32,
        default: u32,
    ) -> Option<u32> {
        let Some(node) = fields.optional(key) else {
            return Some(default);
        };
        let label = fields.label(key);
        let field = fields.field(key);
        let expected = format!("a whole number from {min} to {max}");
        let text = self.scalar_text(node, ctx, &label, &expected, &field)?;
        match text.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                let message = format!("{ctx}: {label} must be {expected}, but it is {text}");
                self.report(node.at, &field, message);
                None
            }
        }
    }

    /// A duration above zero under `key`; `default` when absent.
    fn positive(
        &mut self,
        fields: &Fields,
        ctx: &str,
        key: &str,
        default: Duration,
    ) -> Option<Duration> {
        let Some(node) = fields.optional(key) else {
            return Some(default);
        };
        let label = fields.label(key);
        let field = fields.field(key);
        let d = self.duration(node, ctx, &label, &field)?;
        if d.is_zero() {
            self.report(
                node.at,
                &field,
                format!("{ctx}: {label}: must be more than 0s"),
            );
            return None;
        }
        Some(d)
    }

    // ---- policies ----

    /// The optional `policies` list of an environment or a proxy.
    fn policies(&mut self, fields: &Fields, ctx: &str) -> Option<Vec<PolicyEntry>> {
        let Some(node) = fields.optional("policies") else {
            return Some(Vec::new());
        };
        let field = fields.field("policies");
        let expected = "a list of policies, such as [{type: api_key}]";
        let items = self.list(node, &format!("{ctx}: policies"), expected, &field)?;
        let mut policies = Vec::new();
        let mut complete = true;
        for (index, item) in items.iter().enumerate() {
            match self.policy(item, ctx, index, &format!("{field}[{index}]")) {
                Some(policy) => policies.push(policy),
                None => complete = false,
            }
        }
        complete.then_some(policies)
    }

    /// One `{type: ..., ...}` entry: its type from the registry, which reads the rest.
    fn policy(&mut self, node: &Node, ctx: &str, index: usize, field: &str) -> Option<PolicyEntry> {
        let numbered = format!("{ctx}: policy #{}", index + 1);
        let expected = "a mapping such as {type: api_key}";
        let fields = self.mapping(node, &numbered, expected, field)?;
        let type_node = self.required(&fields, &numbered, "type", "api_key")?;
        let name = self.text(type_node, &numbered, "type", &fields.field("type"))?;
        let Some(kind) = policy::kind(name) else {
            let message = format!(
                "{numbered}: unknown policy type {name:?}; the types are {}",
                policy::kind_names()
            );
            self.report(type_node.at, &fields.field("type"), message);
            return None;
        };
        let keys: Vec<&str> = std::iter::once("type")
            .chain(kind.fields.iter().map(|f| f.name))
            .collect();
        let section = format!("the {name} policy");
        self.known_keys(&fields, Some(ctx), Some(&section), &keys);
        let mut reader = PolicyReader {
            check: self,
            fields,
            ctx: format!("{ctx}: {name} policy"),
        };
        (kind.parse)(&mut reader).ok().map(PolicyEntry)
    }

    // ---- consumers ----

    fn consumer(&mut self, index: usize, node: &Node) -> ConsumerDraft {
        let numbered = format!("consumer #{}", index + 1);
        let field = format!("consumers[{index}]");
        let mut draft = ConsumerDraft {
            field: field.clone(),
            name: None,
            username: None,
            keys: Vec::new(),
            subject: None,
            consumer: None,
        };
        let expected = "a mapping with name, groups and credentials";
        let Some(fields) = self.mapping(node, &numbered, expected, &field) else {
            return draft;
        };
        let (ctx, name) = self.name(&fields, "consumer", numbered, "alice");
        draft.name = name.clone();
        self.known_keys(&fields, Some(&ctx), None, CONSUMER_KEYS);
        let groups = match fields.optional("groups") {
            None => Some(Vec::new()),
            Some(node) => self.names(node, &ctx, "groups", &fields.field("groups")),
        };
        let credentials = match fields.optional("credentials") {
            None => Some(Credentials::default()),
            Some(node) => self.credentials(node, &ctx, &fields.field("credentials"), &mut draft),
        };
        draft.consumer = (|| {
            let credentials = credentials?;
            Some(Consumer {
                name: name?.0,
                groups: groups?,
                api_keys: credentials.api_keys,
                basic_auth: credentials.basic_auth,
                jwt_subject: credentials.jwt_subject,
            })
        })();
        draft
    }

    /// A list of distinct non-empty names (`groups`).
    fn names(&mut self, node: &Node, ctx: &str, key: &str, field: &str) -> Option<Vec<String>> {
        let expected = "a list of names, such as [admins, beta]";
        let items = self.list(node, &format!("{ctx}: {key}"), expected, field)?;
        let mut names: Vec<String> = Vec::new();
        let mut complete = true;
        for (index, item) in items.iter().enumerate() {
            let item_field = format!("{field}[{index}]");
            match self.text(item, ctx, &format!("each entry of {key}"), &item_field) {
                Some(name) if names.iter().any(|n| n == name) => {
                    let message = format!("{ctx}: {key} lists {name:?} twice");
                    self.report(item.at, &item_field, message);
                    complete = false;
                }
                Some(name) => names.push(name.to_owned()),
                None => complete = false,
            }
        }
        complete.then_some(names)
    }

    fn credentials(
        &mut self,
        node: &Node,
        ctx: &str,
        field: &str,
        draft: &mut ConsumerDraft,
    ) -> Option<Credentials> {
        let expected = "a mapping such as { api_keys: [\"${ALICE_KEY}\"] }";
        let fields = self.section(node, ctx, "credentials", CREDENTIAL_KEYS, expected, field)?;
        let mut complete = true;
        let mut api_keys = Vec::new();
        if let Some(node) = fields.optional("api_keys") {
            let field = fields.field("api_keys");
            let label = fields.label("api_keys");
            let expected = "a list of keys, such as [\"${ALICE_KEY}\"]";
            match self.list(node, &format!("{ctx}: {label}"), expected, &field) {
                Some(items) => {
                    for (index, item) in items.iter().enumerate() {
                        let item_field = format!("{field}[{index}]");
                        match self.secret(item, ctx, &format!("{label}[{index}]"), &item_field) {
                            Some(key) => {
                                let digest = KeyDigest::of(key.as_bytes());
                                draft.keys.push((digest, item.at, item_field));
                                api_keys.push(digest);
                            }
                            None => complete = false,
                        }
                    }
                }
                None => complete = false,
            }
        }
        if let Some(node) = fields.optional("api_key_digests") {
            let field = fields.field("api_key_digests");
            let label = fields.label("api_key_digests");
            let expected = "a list of digests, such as [\"sha256:<64 hex digits>\"]";
            match self.list(node, &format!("{ctx}: {label}"), expected, &field) {
                Some(items) => {
                    for (index, item) in items.iter().enumerate() {
                        let item_field = format!("{field}[{index}]");
                        let item_label = format!("{label}[{index}]");
                        let Some(text) = self.text(item, ctx, &item_label, &item_field) else {
                            complete = false;
                            continue;
                        };
                        match KeyDigest::parse(text) {
                            Ok(digest) => {
                                draft.keys.push((digest, item.at, item_field));
                                api_keys.push(digest);
                            }
                            Err(why) => {
                                let message = format!("{ctx}: {item_label}: {why}");
                                self.report(item.at, &item_field, message);
                                complete = false;
                            }
                        }
                    }
                }
                None => complete = false,
            }
        }
        api_keys.sort_by_key(ToString::to_string);
        api_keys.dedup();
        let basic_auth = match fields.optional("basic_auth") {
            None => Some(None),
            Some(node) => self
                .login(node, ctx, &fields.field("basic_auth"), draft)
                .map(Some),
        };
        let jwt_subject = match fields.optional("jwt_subject") {
            None => Some(None),
            Some(node) => {
                let field = fields.field("jwt_subject");
                let subject = self.text(node, ctx, &fields.label("jwt_subject"), &field);
                if let Some(subject) = subject {
                    draft.subject = Some((subject.to_owned(), node.at, field));
                }
                subject.map(|s| Some(s.to_owned()))
            }
        };
        Some(Credentials {
            api_keys: complete.then_some(api_keys)?,
            basic_auth: basic_auth?,
            jwt_subject: jwt_subject?,
        })
    }

    /// `basic_auth: {username, password | password_hash}`.
    fn login(
        &mut self,
        node: &Node,
        ctx: &str,
        field: &str,
        draft: &mut ConsumerDraft,
    ) -> Option<Login> {
        let expected = "a mapping such as { username: alice, password: \"${ALICE_PW}\" }";
        let name = "credentials.basic_auth";
        let fields = self.section(node, ctx, name, BASIC_AUTH_KEYS, expected, field)?;
        let username = self
            .required(&fields, ctx, "username", "alice")
            .and_then(|node| {
                let field = fields.field("username");
                let username = self.text(node, ctx, &fields.label("username"), &field)?;
                if username.contains(':') {
                    let message = format!(
                        "{ctx}: {}: a basic-auth username cannot contain a colon",
                        fields.label("username")
                    );
                    self.report(node.at, &field, message);
                    return None;
                }
                draft.username = Some((username.to_owned(), node.at, field));
                Some(username.to_owned())
            });
        let password = match (
            fields.optional("password"),
            fields.optional("password_hash"),
        ) {
            (Some(node), None) => {
                let label = fields.label("password");
                self.secret(node, ctx, &label, &fields.field("password"))
                    .map(|p| Password::Digest(KeyDigest::of(p.as_bytes())))
            }
            (None, Some(node)) => {
                let field = fields.field("password_hash");
                let label = fields.label("password_hash");
                let text = self.text(node, ctx, &label, &field)?;
                match policy::consumers::check_password_hash(text) {
                    Ok(()) => Some(Password::Argon2(text.to_owned())),
                    Err(why) => {
                        self.report(node.at, &field, format!("{ctx}: {why}"));
                        None
                    }
                }
            }
            (Some(_), Some(node)) => {
                let message = format!(
                    "{ctx}: {}: give password or password_hash, not both",
                    fields.label("password_hash")
                );
                self.report(node.at, &fields.field("password_hash"), message);
                None
            }
            (None, None) => {
                let message = format!(
                    "{ctx}: {name} needs password (for example password: \"${{ALICE_PW}}\") or password_hash (an argon2id PHC string)"
                );
                self.report(fields.at, &fields.field("password"), message);
                None
            }
        };
        Some(Login {
            username: username?,
            password: password?,
        })
    }

    /// Names, usernames, API keys and JWT subjects each belong to one consumer. Messages
    /// never show a key, only who holds it.
    fn check_consumers(&mut self, consumers: &[ConsumerDraft]) {
        let firsts = self.unique_names(
            "consumer",
            consumers.iter().map(|c| (&c.name, c.field.as_str())),
        );
        let mut usernames: HashMap<&str, &str> = HashMap::new();
        let mut keys: HashMap<KeyDigest, &str> = HashMap::new();
        let mut subjects: HashMap<&str, &str> = HashMap::new();
        for (consumer, first) in consumers.iter().zip(firsts) {
            let (Some((name, _)), true) = (&consumer.name, first) else {
                continue;
            };
            if let Some((username, at, field)) = &consumer.username {
                match usernames.get(username.as_str()) {
                    Some(other) => {
                        let message = format!(
                            "consumer {name:?}: the basic-auth username {username:?} already belongs to consumer {other:?}"
                        );
                        self.report(*at, field, message);
                    }
                    None => {
                        usernames.insert(username, name);
                    }
                }
            }
            for (digest, at, field) in &consumer.keys {
                match keys.get(digest) {
                    Some(other) if other != name => {
                        let message = format!(
                            "consumer {name:?}: an API key here is also consumer {other:?}'s; each key identifies one consumer"
                        );
                        self.report(*at, field, message);
                    }
                    _ => {
                        keys.insert(*digest, name);
                    }
                }
            }
            if let Some((subject, at, field)) = &consumer.subject {
                match subjects.get(subject.as_str()) {
                    Some(other) => {
                        let message = format!(
                            "consumer {name:?}: the JWT subject {subject:?} already belongs to consumer {other:?}"
                        );
                        self.report(*at, field, message);
                    }
                    None => {
                        subjects.insert(subject, name);
                    }
                }
            }
        }
    }

    // ---- shapes and scalar types ----

    /// `node` (at `field`) as a mapping, or a problem naming `subject`.
    fn mapping<'n>(
        &mut self,
        node: &'n Node,
        subject: &str,
        expected: &str,
        field: &str,
    ) -> Option<Fields<'n>> {
        match &node.value {
            Value::Map(entries) => Some(Fields {
                at: node.at,
                entries,
                prefix: String::new(),
                path: field.to_owned(),
            }),
            other => {
                self.report(
                    node.at,
                    field,
                    format!(
                        "{subject} must be {expected}, but it is {}",
                        other.describe()
                    ),
                );
                None
            }
        }
    }

    /// A nested mapping such as `tls`, with its keys checked.
    fn section<'n>(
        &mut self,
        node: &'n Node,
        ctx: &str,
        name: &str,
        allowed: &[&str],
        expected: &str,
        field: &str,
    ) -> Option<Fields<'n>> {
        let mut fields = self.mapping(node, &format!("{ctx}: {name}"), expected, field)?;
        self.known_keys(&fields, Some(ctx), Some(name), allowed);
        fields.prefix = format!("{name}.");
        Some(fields)
    }

    fn known_keys(
        &mut self,
        fields: &Fields,
        ctx: Option<&str>,
        section: Option<&str>,
        allowed: &[&str],
    ) {
        for (key, _) in fields.entries {
            if matches!(&key.value, Value::Text(t) if allowed.contains(&t.as_str())) {
                continue;
            }
            let key_name = match &key.value {
                Value::Text(t) => format!("{t:?}"),
                other => format!("({})", other.describe()),
            };
            let prefix = ctx.map(|c| format!("{c}: ")).unwrap_or_default();
            let place = match (ctx, section) {
                (_, Some(section)) => format!(" in {section}"),
                (None, None) => " at the top level".to_owned(),
                (Some(_), None) => String::new(),
            };
            let message = format!(
                "{prefix}unknown key {key_name}{place}; the keys allowed there are {}",
                allowed.join(", ")
            );
            let field = match &key.value {
                Value::Text(t) => fields.field(t),
                _ => fields.path.clone(),
            };
            self.report(key.at, &field, message);
        }
    }

    fn required<'n>(
        &mut self,
        fields: &Fields<'n>,
        ctx: &str,
        key: &str,
        example: &str,
    ) -> Option<&'n Node> {
        let label = fields.label(key);
        let field = fields.field(key);
        match fields.entry(key) {
            None => {
                let message = format!(
                    "{ctx}: the required key {label} is missing (for example {key}: {example})"
                );
                self.report(fields.at, &field, message);
                None
            }
            Some((key_node, value)) if matches!(value.value, Value::Null) => {
                self.report(
                    key_node.at,
                    &field,
                    format!("{ctx}: {label} is empty (for example {key}: {example})"),
                );
                None
            }
            Some((_, value)) => Some(value),
        }
    }

    /// A relative path is resolved against the config file's folder.
    fn file(&mut self, fields: &Fields, ctx: &str, key: &str, example: &str) -> Option<PathBuf> {
        let node = self.required(fields, ctx, key, example)?;
        let text = self.text(node, ctx, &fields.label(key), &fields.field(key))?;
        Some(self.base.join(text))
    }

    fn flag(&mut self, fields: &Fields, ctx: &str, key: &str) -> Option<bool> {
        let Some(node) = fields.optional(key) else {
            return Some(false);
        };
        match node.value {
            Value::Bool(b) => Some(b),
            ref other => {
                self.report(
                    node.at,
                    &fields.field(key),
                    format!(
                        "{ctx}: {key} must be true or false, but it is {}",
                        other.describe()
                    ),
                );
                None
            }
        }
    }

    /// Non-empty text. A number is refused (`name: 2024`): YAML may have changed its spelling.
    fn text<'n>(&mut self, node: &'n Node, ctx: &str, label: &str, field: &str) -> Option<&'n str> {
        match &node.value {
            Value::Text(t) if t.is_empty() => {
                self.report(node.at, field, format!("{ctx}: {label} is empty"));
                None
            }
            Value::Text(t) => Some(t),
            Value::Number(n) => {
                self.report(node.at, field, format!("{ctx}: {label} must be text, but it is the number {n}; write it in quotes: \"{n}\""));
                None
            }
            other => {
                self.report(
                    node.at,
                    field,
                    format!(
                        "{ctx}: {label} must be text, but it is {}",
                        other.describe()
                    ),
                );
                None
            }
        }
    }

    /// Non-empty text holding a secret: problems never repeat the value.
    fn secret<'n>(
        &mut self,
        node: &'n Node,
        ctx: &str,
        label: &str,
        field: &str,
    ) -> Option<&'n str> {
        let message = match &node.value {
            Value::Text(t) if !t.is_empty() => return Some(t),
            Value::Text(_) => format!("{ctx}: {label} is empty"),
            Value::Number(_) => format!("{ctx}: {label} must be text; write it in quotes"),
            other => format!(
                "{ctx}: {label} must be text, but it is {}",
                match other {
                    Value::Bool(_) => "a boolean".to_owned(),
                    other => other.describe(),
                }
            ),
        };
        self.report(node.at, field, message);
        None
    }

    /// Text or a number as text, for values whose own parser explains a bad spelling best
    /// (`connect: 5` → "5" has no unit).
    fn scalar_text(
        &mut self,
        node: &Node,
        ctx: &str,
        label: &str,
        expected: &str,
        field: &str,
    ) -> Option<String> {
        match &node.value {
            Value::Text(t) | Value::Number(t) => Some(t.clone()),
            other => {
                self.report(
                    node.at,
                    field,
                    format!(
                        "{ctx}: {label} must be {expected}, but it is {}",
                        other.describe()
                    ),
                );
                None
            }
        }
    }

    /// The optional top-level list `key` (empty when absent or not a list, the latter reported).
    fn top_list<'n>(&mut self, fields: &Fields<'n>, whole: &str, key: &str) -> &'n [Node] {
        match fields.optional(key) {
            None => &[],
            Some(node) => self
                .list(
                    node,
                    &format!("{whole}: {key}"),
                    &format!("a list of {key}"),
                    key,
                )
                .unwrap_or_default(),
        }
    }

    fn list<'n>(
        &mut self,
        node: &'n Node,
        subject: &str,
        expected: &str,
        field: &str,
    ) -> Option<&'n [Node]> {
        match &node.value {
            Value::List(items) => Some(items),
            other => {
                self.report(
                    node.at,
                    field,
                    format!(
                        "{subject} must be {expected}, but it is {}",
                        other.describe()
                    ),
                );
                None
            }
        }
    }
}

/// `header:NAME`, `cookie:NAME`, `query:NAME` or `client_ip`.
fn parse_hash_on(text: &str) -> Result<HashOn, String> {
    if text == "client_ip" {
        return Ok(HashOn::ClientIp);
    }
    let Some((kind, name)) = text.split_once(':') else {
        return Err(format!("{text:?} is not one of {HASH_ON_FORMS}"));
    };
    if name.is_empty() {
        return Err(format!(
            "{text:?} has no name after the colon; write {kind}:NAME, such as header:X-User-Id"
        ));
    }
    match kind {
        "header" => http::HeaderName::from_bytes(name.as_bytes())
            .map(|header| HashOn::Header(header.as_str().to_owned()))
            .map_err(|_| format!("{name:?} is not a valid header name")),
        "cookie" if is_token(name) => Ok(HashOn::Cookie(name.to_owned())),
        "cookie" => Err(format!("{name:?} is not a valid cookie name")),
        "query" if !name.contains(['&', '=', '#', ' ']) => Ok(HashOn::Query(name.to_owned())),
        "query" => Err(format!(
            "{name:?} is not a query parameter name (it cannot contain &, =, # or a space)"
        )),
        _ => Err(format!("{text:?} is not one of {HASH_ON_FORMS}")),
    }
}

/// Whether two URLs reach the same place (`http://a/x` and `http://A:80/x/` do).
fn same_target(a: &BackendUrl, b: &BackendUrl) -> bool {
    let path = |u: &BackendUrl| u.path().trim_end_matches('/').to_owned();
    a.scheme() == b.scheme()
        && a.host().eq_ignore_ascii_case(b.host())
        && a.port() == b.port()
        && path(a) == path(b)
}

/// An HTTP token (RFC 9110): what a cookie name may be.
fn is_token(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `" (first at line N)"` when the line is known.
fn first_at(at: Loc) -> String {
    at.line
        .map(|line| format!(" (first at line {line})"))
        .unwrap_or_default()
}

/// Whether two listeners would fight over the same socket. Port 0 asks the system for a free
/// port, so it never clashes.
fn listeners_clash(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let (a, b) = (a.ip(), b.ip());
    let same_family = a.is_ipv4() == b.is_ipv4();
    a == b
        || (a.is_unspecified() && b.is_unspecified())
        || ((a.is_unspecified() || b.is_unspecified()) && same_family)
}
