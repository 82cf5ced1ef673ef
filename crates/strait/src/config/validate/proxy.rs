//! Proxies: path, backend, methods, deploy list (environments that exist), and the policy
//! entries read through [`policy::Fields`].

use std::collections::HashMap;
use std::time::Duration;

use http::Method;

use crate::config::tree::{Loc, Node};
use crate::config::{PolicyEntry, Proxy};
use crate::policy::{self, Reported};
use crate::routing::ProxyPath;

use super::environment::EnvironmentDraft;
use super::upstream::UpstreamDraft;
use super::{Check, Fields, PROXY_KEYS, join};

const METHODS: [Method; 8] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
    Method::TRACE,
];

pub(super) struct ProxyDraft {
    label: String,
    /// `proxies[i]`.
    field: String,
    name: Option<(String, Loc)>,
    path: Option<(ProxyPath, Loc)>,
    /// Each usable entry with its position in the list.
    deploy: Vec<DeployEntry>,
    pub(super) proxy: Option<Proxy>,
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

impl Check<'_> {
    pub(super) fn proxy(
        &mut self,
        index: usize,
        node: &Node,
        upstreams: &[UpstreamDraft],
    ) -> ProxyDraft {
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
        if text == Method::CONNECT.as_str() {
            let why = "the gateway routes requests by path, and a CONNECT tunnel names none";
            self.report(
                node.at,
                field,
                format!("{ctx}: CONNECT is not proxied: {why}"),
            );
            return None;
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

    pub(super) fn check_proxies(
        &mut self,
        proxies: &[ProxyDraft],
        environments: &[EnvironmentDraft],
    ) {
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

    /// The optional `policies` list of an environment or a proxy.
    pub(super) fn policies(&mut self, fields: &Fields, ctx: &str) -> Option<Vec<PolicyEntry>> {
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
}
