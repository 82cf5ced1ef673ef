//! From the YAML tree to a validated [`Config`], collecting every problem on the way.
//!
//! Each object is checked as far as it can be: a bad value is reported and validation goes
//! on with the next key, so one pass finds every problem. Cross-object checks (duplicate
//! names, paths and listen addresses, deploy references) run on whatever parsed.
//!
//! Every problem carries the dotted path of the value it is about (`environments[0].listen`,
//! `proxies[2].deploy[1]`), so a JSON document without line numbers still points at it.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;

use super::duration::parse_duration;
use super::tree::{Loc, Node, Value};
use super::{
    AccessLogFormat, AccessLogSettings, AdminConfig, BackendTls, Config, Consumer, Environment,
    KeyDigest, Login, Password, PolicyEntry, Proxy, Timeouts, TlsFiles,
};
use crate::policy::{self, Reported};
use crate::routing::{BackendUrl, ProxyPath};

// The keys of each object, in the order the file format writes them (export keeps it).
pub(super) const TOP_KEYS: &[&str] = &["environments", "proxies", "consumers", "admin"];
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

        let proxy_nodes = match fields.optional("proxies") {
            None => &[],
            Some(node) => self
                .list(
                    node,
                    &format!("{whole}: proxies"),
                    "a list of proxies",
                    "proxies",
                )
                .unwrap_or_default(),
        };
        let proxies: Vec<_> = proxy_nodes
            .iter()
            .enumerate()
            .map(|(i, node)| self.proxy(i, node))
            .collect();
        self.check_proxies(&proxies, &environments);

        let consumer_nodes = match fields.optional("consumers") {
            None => &[],
            Some(node) => self
                .list(
                    node,
                    &format!("{whole}: consumers"),
                    "a list of consumers",
                    "consumers",
                )
                .unwrap_or_default(),
        };
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

    fn check_environments(&mut self, environments: &[EnvironmentDraft]) {
        let mut names: HashMap<&str, Loc> = HashMap::new();
        for env in environments {
            let Some((name, at)) = &env.name else {
                continue;
            };
            if let Some(first) = names.get(name.as_str()) {
                let message = format!(
                    "environment {name:?} is defined twice{}; environment names must be unique",
                    first_at(*first)
                );
                self.report(*at, &env.field, message);
            } else {
                names.insert(name, *at);
            }
        }
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

    fn proxy(&mut self, index: usize, node: &Node) -> ProxyDraft {
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
            .and_then(|node| {
                let field = fields.field("backend");
                let text = self.text(node, &ctx, "backend", &field)?;
                BackendUrl::parse(text)
                    .map_err(|why| self.report(node.at, &field, format!("{ctx}: {why}")))
                    .ok()
            });
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
        let mut names: HashMap<&str, Loc> = HashMap::new();
        for proxy in proxies {
            let Some((name, at)) = &proxy.name else {
                continue;
            };
            if let Some(first) = names.get(name.as_str()) {
                let message = format!(
                    "proxy {name:?} is defined twice{}; proxy names must be unique",
                    first_at(*first)
                );
                self.report(*at, &proxy.field, message);
            } else {
                names.insert(name, *at);
            }
        }

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
        let mut names: HashMap<&str, Loc> = HashMap::new();
        let mut usernames: HashMap<&str, &str> = HashMap::new();
        let mut keys: HashMap<KeyDigest, &str> = HashMap::new();
        let mut subjects: HashMap<&str, &str> = HashMap::new();
        for consumer in consumers {
            let Some((name, at)) = &consumer.name else {
                continue;
            };
            if let Some(first) = names.get(name.as_str()) {
                let message = format!(
                    "consumer {name:?} is defined twice{}; consumer names must be unique",
                    first_at(*first)
                );
                self.report(*at, &consumer.field, message);
                continue;
            }
            names.insert(name, *at);
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
