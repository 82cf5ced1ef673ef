//! Backends, written inline on a proxy or named under `upstreams:`: targets and weights,
//! balancing and `hash_on`, health checks, retries and the circuit breaker.

use crate::config::tree::{Loc, Node, Value};
use crate::config::{
    ActiveCheck, BackendSpec, Balance, BreakerSpec, HashOn, HealthSpec, PassiveCheck, Rebalance,
    TargetSpec, Targets,
};
use crate::routing::BackendUrl;

use super::{
    ACTIVE_CHECK_KEYS, BACKEND_KEYS, BREAKER_KEYS, Check, Fields, HEALTH_KEYS, PASSIVE_CHECK_KEYS,
    TARGET_KEYS, UPSTREAM_KEYS,
};

const MAX_WEIGHT: u32 = 1000;

const MAX_RETRIES: u32 = 10;

/// Consecutive probes or failures before a target changes state.
const MAX_STREAK: u32 = 1000;

const MAX_MIN_REQUESTS: u32 = 1_000_000;

const HASH_ON_FORMS: &str = "header:NAME, cookie:NAME, query:NAME or client_ip";

pub(super) struct UpstreamDraft {
    /// `upstreams[i]`.
    field: String,
    pub(super) name: Option<(String, Loc)>,
    /// With `upstream: Some(name)`.
    pub(super) backend: Option<BackendSpec>,
}

impl Check<'_> {
    /// One entry of `upstreams:`.
    pub(super) fn upstream(&mut self, index: usize, node: &Node) -> UpstreamDraft {
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

    pub(super) fn check_upstreams(&mut self, upstreams: &[UpstreamDraft]) {
        self.unique_names(
            "upstream",
            upstreams.iter().map(|u| (&u.name, u.field.as_str())),
        );
    }

    /// A proxy's `backend`: a URL, `{upstream: NAME}`, or a mapping with targets.
    pub(super) fn backend(
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
        let balance = self.choice(
            fields,
            ctx,
            "balance",
            &[
                ("round_robin", Balance::RoundRobin),
                ("least_connections", Balance::LeastConnections),
                ("consistent_hash", Balance::ConsistentHash),
            ],
            Balance::default(),
        );
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
        let rebalance = self.choice(
            fields,
            ctx,
            "rebalance",
            &[("keep", Rebalance::Keep), ("drain", Rebalance::Drain)],
            Rebalance::default(),
        );
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
                crate::config::format_duration(timeout),
                fields.label("interval"),
                crate::config::format_duration(interval)
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
