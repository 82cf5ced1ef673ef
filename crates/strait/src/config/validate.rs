//! From the YAML tree to a validated [`Config`], collecting every problem on the way.
//!
//! Each object is checked as far as it can be: a bad value is reported and validation goes
//! on with the next key, so one pass finds every problem. Cross-object checks (duplicate
//! names, paths and listen addresses, deploy references) run on whatever parsed.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;

use super::duration::parse_duration;
use super::tree::{Loc, Node, Value};
use super::{BackendTls, Config, Environment, Proxy, Timeouts, TlsFiles};
use crate::routing::{BackendUrl, ProxyPath};

const TOP_KEYS: &[&str] = &["environments", "proxies"];
const ENVIRONMENT_KEYS: &[&str] = &[
    "name",
    "listen",
    "websocket",
    "tls",
    "timeouts",
    "shutdown_grace",
];
const TLS_KEYS: &[&str] = &["cert", "key"];
const TIMEOUT_KEYS: &[&str] = &["connect", "response", "websocket_idle"];
const PROXY_KEYS: &[&str] = &[
    "name",
    "path",
    "backend",
    "deploy",
    "methods",
    "preserve_host",
    "backend_tls",
];
const BACKEND_TLS_KEYS: &[&str] = &["ca_file"];
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
const ADD_ENVIRONMENT: &str =
    "add at least one under environments:, with a name and a listen address such as 127.0.0.1:8080";

/// Problems as (where, sentence).
pub(super) type Found = Vec<(Loc, String)>;

/// Validates the document; `base` anchors relative file paths.
pub(super) fn validate(root: Option<&Node>, base: &Path) -> Result<Config, Found> {
    let mut check = Check {
        problems: Vec::new(),
        base,
    };
    let config = check.config(root);
    match config {
        Some(config) if check.problems.is_empty() => Ok(config),
        _ if check.problems.is_empty() => Err(vec![(
            Loc::default(),
            "the configuration could not be validated (a bug in Strait)".to_owned(),
        )]),
        _ => Err(check.problems),
    }
}

/// The entries of one mapping in the file.
struct Fields<'n> {
    at: Loc,
    entries: &'n [(Node, Node)],
    /// `"tls."` inside the tls section, so messages say `tls.cert`.
    prefix: String,
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
}

struct EnvironmentDraft {
    label: String,
    name: Option<(String, Loc)>,
    listen: Option<(SocketAddr, Loc)>,
    environment: Option<Environment>,
}

struct ProxyDraft {
    label: String,
    name: Option<(String, Loc)>,
    path: Option<(ProxyPath, Loc)>,
    deploy: Vec<(String, Loc)>,
    proxy: Option<Proxy>,
}

struct Check<'b> {
    problems: Found,
    base: &'b Path,
}

impl Check<'_> {
    fn report(&mut self, at: Loc, message: String) {
        self.problems.push((at, message));
    }

    fn config(&mut self, root: Option<&Node>) -> Option<Config> {
        let Some(root) = root else {
            self.report(
                Loc::default(),
                format!("no environments: the file is empty; {ADD_ENVIRONMENT}"),
            );
            return None;
        };
        let fields = self.mapping(
            root,
            "the file",
            "a mapping with the keys environments and proxies",
        )?;
        self.known_keys(&fields, None, None, TOP_KEYS);

        let environment_nodes = match fields.optional("environments") {
            None => {
                self.report(fields.at, format!("no environments: {ADD_ENVIRONMENT}"));
                &[]
            }
            Some(node) => match self.list(node, "the file: environments", "a list of environments")
            {
                Some([]) => {
                    self.report(
                        node.at,
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
                .list(node, "the file: proxies", "a list of proxies")
                .unwrap_or_default(),
        };
        let proxies: Vec<_> = proxy_nodes
            .iter()
            .enumerate()
            .map(|(i, node)| self.proxy(i, node))
            .collect();
        self.check_proxies(&proxies, &environments);

        Some(Config {
            environments: environments
                .into_iter()
                .map(|e| e.environment)
                .collect::<Option<_>>()?,
            proxies: proxies
                .into_iter()
                .map(|p| p.proxy)
                .collect::<Option<_>>()?,
        })
    }

    fn environment(&mut self, index: usize, node: &Node) -> EnvironmentDraft {
        let numbered = format!("environment #{}", index + 1);
        let expected = "a mapping with name, listen and optional settings";
        let Some(fields) = self.mapping(node, &numbered, expected) else {
            return EnvironmentDraft {
                label: numbered,
                name: None,
                listen: None,
                environment: None,
            };
        };
        let (ctx, name) = self.name(&fields, "environment", numbered, "production");
        self.known_keys(&fields, Some(&ctx), None, ENVIRONMENT_KEYS);

        let listen = self.required(&fields, &ctx, "listen", "127.0.0.1:8080");
        let listen = listen.and_then(|n| self.listen(n, &ctx).map(|addr| (addr, n.at)));
        let websocket = self.flag(&fields, &ctx, "websocket");
        let tls = match fields.optional("tls") {
            None => Some(None),
            Some(node) => self.tls(node, &ctx).map(Some),
        };
        let timeouts = match fields.optional("timeouts") {
            None => Some(Timeouts::default()),
            Some(node) => self.timeouts(node, &ctx),
        };
        let shutdown_grace = match fields.optional("shutdown_grace") {
            None => Some(DEFAULT_SHUTDOWN_GRACE),
            Some(node) => self.duration(node, &ctx, "shutdown_grace"),
        };

        let environment = (|| {
            Some(Environment {
                name: name.clone()?.0,
                listen: listen?.0,
                websocket: websocket?,
                tls: tls?,
                timeouts: timeouts?,
                shutdown_grace: shutdown_grace?,
            })
        })();
        EnvironmentDraft {
            label: ctx,
            name,
            listen,
            environment,
        }
    }

    fn listen(&mut self, node: &Node, ctx: &str) -> Option<SocketAddr> {
        let text = self.scalar_text(node, ctx, "listen", "an address such as 127.0.0.1:8080")?;
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
            self.report(node.at, message);
        }
        parsed
    }

    fn tls(&mut self, node: &Node, ctx: &str) -> Option<TlsFiles> {
        let fields = self.section(
            node,
            ctx,
            "tls",
            TLS_KEYS,
            "a mapping such as { cert: gw.pem, key: gw-key.pem }",
        )?;
        let cert = self.file(&fields, ctx, "cert", "gw.pem");
        let key = self.file(&fields, ctx, "key", "gw-key.pem");
        Some(TlsFiles {
            cert: cert?,
            key: key?,
        })
    }

    fn backend_tls(&mut self, node: &Node, ctx: &str) -> Option<BackendTls> {
        let expected = "a mapping such as { ca_file: ca.pem }";
        let fields = self.section(node, ctx, "backend_tls", BACKEND_TLS_KEYS, expected)?;
        let ca_file = self.file(&fields, ctx, "ca_file", "ca.pem")?;
        Some(BackendTls { ca_file })
    }

    fn timeouts(&mut self, node: &Node, ctx: &str) -> Option<Timeouts> {
        let fields = self.section(
            node,
            ctx,
            "timeouts",
            TIMEOUT_KEYS,
            "a mapping such as { connect: 5s, response: 60s, websocket_idle: 1h }",
        )?;
        let defaults = Timeouts::default();
        let mut timeout = |key: &str, default: Duration| match fields.optional(key) {
            None => Some(default),
            Some(node) => self.duration(node, ctx, &fields.label(key)),
        };
        let connect = timeout("connect", defaults.connect);
        let response = timeout("response", defaults.response);
        let websocket_idle = timeout("websocket_idle", defaults.websocket_idle);
        Some(Timeouts {
            connect: connect?,
            response: response?,
            websocket_idle: websocket_idle?,
        })
    }

    fn duration(&mut self, node: &Node, ctx: &str, label: &str) -> Option<Duration> {
        let text = self.scalar_text(node, ctx, label, "a duration such as 5s")?;
        parse_duration(&text)
            .map_err(|why| self.report(node.at, format!("{ctx}: {label}: {why}")))
            .ok()
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
                self.report(*at, message);
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
                self.report(at, message);
            }
        }
    }

    fn proxy(&mut self, index: usize, node: &Node) -> ProxyDraft {
        let numbered = format!("proxy #{}", index + 1);
        let expected = "a mapping with name, path, backend and optional settings";
        let Some(fields) = self.mapping(node, &numbered, expected) else {
            return ProxyDraft {
                label: numbered,
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
                let text = self.text(node, &ctx, "path")?;
                ProxyPath::parse(text)
                    .map_err(|why| self.report(node.at, format!("{ctx}: {why}")))
                    .ok()
                    .map(|path| (path, node.at))
            });
        let backend = self
            .required(&fields, &ctx, "backend", "http://localhost:8080")
            .and_then(|node| {
                let text = self.text(node, &ctx, "backend")?;
                BackendUrl::parse(text)
                    .map_err(|why| self.report(node.at, format!("{ctx}: {why}")))
                    .ok()
            });
        let (deploy, deploy_ok) = self.deploy(&fields, &ctx);
        let methods = match fields.optional("methods") {
            None => Some(None),
            Some(node) => self.methods(node, &ctx).map(Some),
        };
        let preserve_host = self.flag(&fields, &ctx, "preserve_host");
        let backend_tls = match fields.optional("backend_tls") {
            None => Some(None),
            Some(node) => self.backend_tls(node, &ctx).map(Some),
        };

        let proxy = (|| {
            Some(Proxy {
                name: name.clone()?.0,
                path: path.clone()?.0,
                backend: backend?,
                deploy: deploy_ok.then(|| deploy.iter().map(|(name, _)| name.clone()).collect())?,
                methods: methods?,
                preserve_host: preserve_host?,
                backend_tls: backend_tls?,
            })
        })();
        ProxyDraft {
            label: ctx,
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
        let name = node.and_then(|n| Some((self.text(n, &numbered, "name")?.to_owned(), n.at)));
        let label = match &name {
            Some((name, _)) => format!("{kind} {name:?}"),
            None => numbered,
        };
        (label, name)
    }

    /// The environment names under `deploy` (none when absent), and whether every entry was
    /// usable. The names are returned either way so they can still be checked against the
    /// environments.
    fn deploy(&mut self, fields: &Fields, ctx: &str) -> (Vec<(String, Loc)>, bool) {
        let Some(node) = fields.optional("deploy") else {
            return (Vec::new(), true);
        };
        let expected = "a list of environment names, such as [production]";
        let Some(items) = self.list(node, &format!("{ctx}: deploy"), expected) else {
            return (Vec::new(), false);
        };
        let mut names: Vec<(String, Loc)> = Vec::new();
        let mut complete = true;
        for item in items {
            let Some(name) = self.text(item, ctx, "each entry of deploy") else {
                complete = false;
                continue;
            };
            if names.iter().any(|(seen, _)| seen == name) {
                self.report(
                    item.at,
                    format!("{ctx}: deploy lists the environment {name:?} twice"),
                );
                complete = false;
            } else {
                names.push((name.to_owned(), item.at));
            }
        }
        (names, complete)
    }

    fn methods(&mut self, node: &Node, ctx: &str) -> Option<Vec<Method>> {
        let items = self.list(
            node,
            &format!("{ctx}: methods"),
            "a list of HTTP methods, such as [GET, POST]",
        )?;
        if items.is_empty() {
            let message = format!(
                "{ctx}: methods is an empty list, so no request could match; list at least one method, or remove the key to allow any method"
            );
            self.report(node.at, message);
            return None;
        }
        let mut methods = Vec::new();
        let mut complete = true;
        for item in items {
            match self.method(item, ctx) {
                Some(method) if !methods.contains(&method) => methods.push(method),
                Some(_) => {}
                None => complete = false,
            }
        }
        complete.then_some(methods)
    }

    fn method(&mut self, node: &Node, ctx: &str) -> Option<Method> {
        let text = self.scalar_text(
            node,
            ctx,
            "each entry of methods",
            "an HTTP method such as GET",
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
                self.report(*at, message);
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
            for (env, at) in &proxy.deploy {
                if !known.contains(&env.as_str()) {
                    let message = format!(
                        "{}: deploy names the environment {env:?}, which does not exist; the environments are {}",
                        proxy.label,
                        known.join(", ")
                    );
                    self.report(*at, message);
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
                    self.report(*path_at, message);
                } else {
                    paths.insert(key, proxy);
                }
            }
        }
    }

    // ---- shapes and scalar types ----

    /// `node` as a mapping, or a problem naming `subject`.
    fn mapping<'n>(&mut self, node: &'n Node, subject: &str, expected: &str) -> Option<Fields<'n>> {
        match &node.value {
            Value::Map(entries) => Some(Fields {
                at: node.at,
                entries,
                prefix: String::new(),
            }),
            other => {
                self.report(
                    node.at,
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
    ) -> Option<Fields<'n>> {
        let mut fields = self.mapping(node, &format!("{ctx}: {name}"), expected)?;
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
            self.report(key.at, message);
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
        match fields.entry(key) {
            None => {
                let message = format!(
                    "{ctx}: the required key {label} is missing (for example {key}: {example})"
                );
                self.report(fields.at, message);
                None
            }
            Some((key_node, value)) if matches!(value.value, Value::Null) => {
                self.report(
                    key_node.at,
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
        let text = self.text(node, ctx, &fields.label(key))?;
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
    fn text<'n>(&mut self, node: &'n Node, ctx: &str, label: &str) -> Option<&'n str> {
        match &node.value {
            Value::Text(t) if t.is_empty() => {
                self.report(node.at, format!("{ctx}: {label} is empty"));
                None
            }
            Value::Text(t) => Some(t),
            Value::Number(n) => {
                self.report(node.at, format!("{ctx}: {label} must be text, but it is the number {n}; write it in quotes: \"{n}\""));
                None
            }
            other => {
                self.report(
                    node.at,
                    format!(
                        "{ctx}: {label} must be text, but it is {}",
                        other.describe()
                    ),
                );
                None
            }
        }
    }

    /// Text or a number as text, for values whose own parser explains a bad spelling best
    /// (`connect: 5` → "5" has no unit).
    fn scalar_text(
        &mut self,
        node: &Node,
        ctx: &str,
        label: &str,
        expected: &str,
    ) -> Option<String> {
        match &node.value {
            Value::Text(t) | Value::Number(t) => Some(t.clone()),
            other => {
                self.report(
                    node.at,
                    format!(
                        "{ctx}: {label} must be {expected}, but it is {}",
                        other.describe()
                    ),
                );
                None
            }
        }
    }

    fn list<'n>(&mut self, node: &'n Node, subject: &str, expected: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::List(items) => Some(items),
            other => {
                self.report(
                    node.at,
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
