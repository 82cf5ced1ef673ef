//! Backends with several targets and named upstreams: the model they give, every rule with
//! its field, and the round trip through the JSON document and back to YAML.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::routing::BackendUrl;

const ORIGIN: &str = "/etc/strait/gateway.yaml";

const EXAMPLE: &str = "\
environments:
  - name: prod
    listen: 127.0.0.1:9000
upstreams:
  - name: users-pool
    targets:
      - http://10.0.1.1:8080/users
      - { url: http://10.0.1.2:8080/users, weight: 3 }
    balance: least_connections
    retries: 1
proxies:
  - name: users
    path: /users/*
    backend:
      targets:
        - { url: http://10.0.0.1:8080/service, weight: 2 }
        - { url: http://10.0.0.2:8080/service }
        - http://10.0.0.3:8080/service
      balance: consistent_hash
      hash_on: header:X-User-Id
      health:
        active: { path: /health, interval: 5s, timeout: 1s, healthy_after: 2, unhealthy_after: 3 }
        passive: { unhealthy_after: 5, cool_down: 10s }
      retries: 2
      circuit_breaker: { failure_ratio: 0.5, min_requests: 20, open_for: 30s }
      rebalance: drain
    deploy: [prod]
  - name: accounts
    path: /accounts/*
    backend: { upstream: users-pool }
    deploy: [prod]
  - name: single
    path: /single/*
    backend: http://10.0.0.9:8080
";

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_str(text, Path::new(ORIGIN))
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Err(ConfigError::Invalid(problems)) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

fn url(text: &str) -> BackendUrl {
    BackendUrl::parse(text).unwrap()
}

fn target(text: &str, weight: u32) -> TargetSpec {
    TargetSpec {
        url: url(text),
        weight,
    }
}

/// One environment and one proxy `p` whose backend is `backend` (indented under the key),
/// after `top` (upstreams).
fn with_backend(top: &str, backend: &str) -> String {
    format!(
        "environments:\n  - name: a\n    listen: 127.0.0.1:9000\n{top}proxies:\n  - name: p\n    path: /p\n    backend:\n{backend}"
    )
}

/// The only problem, which must name `field` and mention every needle.
#[track_caller]
fn assert_one(text: &str, field: &str, needles: &[&str]) {
    let found = problems(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_field(&found, field, needles);
}

#[track_caller]
fn assert_field(found: &[Problem], field: &str, needles: &[&str]) {
    let hit = found.iter().any(|p| {
        p.field.as_deref() == Some(field) && needles.iter().all(|n| p.message.contains(n))
    });
    assert!(
        hit,
        "no problem at {field} mentioning {needles:?} in {found:#?}"
    );
}

#[test]
fn the_example_gives_the_model() {
    let config = parse(EXAMPLE).unwrap();
    let users = &config.proxies[0].backend;
    let expected = BackendSpec {
        upstream: None,
        targets: Targets::from_vec(vec![
            target("http://10.0.0.1:8080/service", 2),
            target("http://10.0.0.2:8080/service", 1),
            target("http://10.0.0.3:8080/service", 1),
        ])
        .unwrap(),
        balance: Balance::ConsistentHash,
        hash_on: Some(HashOn::Header("x-user-id".into())),
        health: HealthSpec {
            active: Some(ActiveCheck {
                path: "/health".into(),
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(1),
                healthy_after: 2,
                unhealthy_after: 3,
            }),
            passive: Some(PassiveCheck {
                unhealthy_after: 5,
                cool_down: Duration::from_secs(10),
            }),
        },
        retries: 2,
        circuit_breaker: Some(BreakerSpec {
            failure_ratio: 0.5,
            min_requests: 20,
            open_for: Duration::from_secs(30),
        }),
        rebalance: Rebalance::Drain,
    };
    assert_eq!(users, &expected);
    assert_eq!(users.primary(), &url("http://10.0.0.1:8080/service"));

    let pool = BackendSpec {
        upstream: Some("users-pool".into()),
        targets: Targets::from_vec(vec![
            target("http://10.0.1.1:8080/users", 1),
            target("http://10.0.1.2:8080/users", 3),
        ])
        .unwrap(),
        balance: Balance::LeastConnections,
        retries: 1,
        ..BackendSpec::single(url("http://10.0.1.1:8080/users"))
    };
    assert_eq!(
        config.upstreams,
        vec![NamedUpstream {
            name: "users-pool".into(),
            backend: pool.clone(),
        }]
    );
    // The proxy holds the resolved settings, and where they came from.
    assert_eq!(config.proxies[1].backend, pool);
    assert_eq!(
        config.proxies[2].backend,
        BackendSpec::single(url("http://10.0.0.9:8080"))
    );
}

#[test]
fn a_mapping_with_targets_alone_takes_every_default() {
    let text = with_backend("", "      targets: [http://a, http://b]\n");
    let backend = &parse(&text).unwrap().proxies[0].backend;
    assert_eq!(
        backend.targets.to_vec(),
        vec![target("http://a", 1), target("http://b", 1)]
    );
    assert_eq!(backend.balance, Balance::RoundRobin);
    assert_eq!(backend.hash_on, None);
    assert_eq!(backend.health, HealthSpec::default());
    assert_eq!(backend.retries, 0);
    assert_eq!(backend.circuit_breaker, None);
    assert_eq!(backend.rebalance, Rebalance::Keep);
    assert_eq!(backend.upstream, None);
}

#[test]
fn empty_checks_and_breaker_take_their_defaults() {
    let text = with_backend(
        "",
        "      targets: [http://a]\n      health: { active: {}, passive: {} }\n      circuit_breaker: {}\n",
    );
    let backend = &parse(&text).unwrap().proxies[0].backend;
    assert_eq!(backend.health.active, Some(ActiveCheck::default()));
    assert_eq!(backend.health.passive, Some(PassiveCheck::default()));
    assert_eq!(backend.circuit_breaker, Some(BreakerSpec::default()));
    let active = ActiveCheck::default();
    assert_eq!(active.path, "/");
    assert_eq!(active.interval, Duration::from_secs(5));
    assert_eq!(active.timeout, Duration::from_secs(1));
    assert_eq!((active.healthy_after, active.unhealthy_after), (2, 3));
    let passive = PassiveCheck::default();
    assert_eq!(passive.unhealthy_after, 5);
    assert_eq!(passive.cool_down, Duration::from_secs(10));
    let breaker = BreakerSpec::default();
    assert_eq!(breaker.failure_ratio, 0.5);
    assert_eq!(breaker.min_requests, 20);
    assert_eq!(breaker.open_for, Duration::from_secs(30));
}

#[test]
fn weights_are_from_1_to_1000() {
    for bad in ["0", "1001", "-1", "1.5", "heavy"] {
        let text = with_backend(
            "",
            &format!(
                "      targets:\n        - http://a\n        - {{ url: http://b, weight: {bad} }}\n"
            ),
        );
        assert_one(
            &text,
            "proxies[0].backend.targets[1].weight",
            &["proxy \"p\"", "backend.targets[1].weight", "from 1 to 1000"],
        );
    }
    let text = with_backend("", "      targets: [{ url: http://b, weight: 1000 }]\n");
    assert_eq!(
        parse(&text).unwrap().proxies[0]
            .backend
            .targets
            .first()
            .weight,
        1000
    );
}

#[test]
fn targets_are_required_and_not_empty() {
    assert_one(
        &with_backend("", "      targets: []\n"),
        "proxies[0].backend.targets",
        &["backend.targets is an empty list", "at least one"],
    );
    assert_one(
        &with_backend("", "      balance: round_robin\n"),
        "proxies[0].backend.targets",
        &["the required key backend.targets is missing"],
    );
    assert_one(
        &with_backend("", "      targets: http://a\n"),
        "proxies[0].backend.targets",
        &["backend.targets must be a list"],
    );
}

#[test]
fn a_url_is_listed_once_per_backend() {
    let text = with_backend(
        "",
        "      targets:\n        - http://a:80/x\n        - http://b\n        - { url: http://a/x, weight: 2 }\n",
    );
    assert_one(
        &text,
        "proxies[0].backend.targets[2]",
        &[
            "backend.targets[2] repeats the URL",
            "backend.targets[0]",
            "weight",
        ],
    );
    // The same URL in two backends is fine.
    let text = format!(
        "{}  - name: q\n    path: /q\n    backend: {{ targets: [http://b] }}\n",
        with_backend("", "      targets: [http://a, http://b]\n")
    );
    assert!(parse(&text).is_ok());
}

#[test]
fn bad_targets_name_their_field() {
    let text = with_backend(
        "",
        "      targets:\n        - ftp://a\n        - { url: http://b, wieght: 2 }\n        - { weight: 2 }\n        - [http://c]\n        - 8080\n",
    );
    let found = problems(&text);
    assert_eq!(found.len(), 5, "{found:#?}");
    assert_field(
        &found,
        "proxies[0].backend.targets[0]",
        &["backend.targets[0]", "http://"],
    );
    assert_field(
        &found,
        "proxies[0].backend.targets[1].wieght",
        &[
            "unknown key \"wieght\" in backend.targets[1]",
            "url, weight",
        ],
    );
    assert_field(
        &found,
        "proxies[0].backend.targets[2].url",
        &["the required key backend.targets[2].url is missing"],
    );
    assert_field(
        &found,
        "proxies[0].backend.targets[3]",
        &["backend.targets[3] must be a URL or a mapping", "a list"],
    );
    assert_field(
        &found,
        "proxies[0].backend.targets[4]",
        &["backend.targets[4] must be text", "8080"],
    );
}

#[test]
fn balance_and_rebalance_take_known_words() {
    let text = with_backend(
        "",
        "      targets: [http://a]\n      balance: random\n      rebalance: move\n",
    );
    let found = problems(&text);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_field(
        &found,
        "proxies[0].backend.balance",
        &[
            "round_robin, least_connections or consistent_hash",
            "\"random\"",
        ],
    );
    assert_field(
        &found,
        "proxies[0].backend.rebalance",
        &["keep or drain", "\"move\""],
    );
}

#[test]
fn hash_on_goes_with_consistent_hash_only() {
    assert_one(
        &with_backend(
            "",
            "      targets: [http://a]\n      balance: consistent_hash\n",
        ),
        "proxies[0].backend.hash_on",
        &["consistent_hash needs backend.hash_on", "header:X-User-Id"],
    );
    assert_one(
        &with_backend("", "      targets: [http://a]\n      hash_on: client_ip\n"),
        "proxies[0].backend.hash_on",
        &["backend.hash_on only applies with balance: consistent_hash"],
    );
    assert_one(
        &with_backend(
            "",
            "      targets: [http://a]\n      balance: round_robin\n      hash_on: client_ip\n",
        ),
        "proxies[0].backend.hash_on",
        &["only applies with balance: consistent_hash"],
    );
}

#[test]
fn hash_on_forms() {
    let hashed = |hash_on: &str| {
        let text = with_backend(
            "",
            &format!(
                "      targets: [http://a]\n      balance: consistent_hash\n      hash_on: \"{hash_on}\"\n"
            ),
        );
        parse(&text).map(|c| c.proxies[0].backend.hash_on.clone())
    };
    assert_eq!(
        hashed("header:X-User-Id").unwrap(),
        Some(HashOn::Header("x-user-id".into()))
    );
    assert_eq!(
        hashed("cookie:session").unwrap(),
        Some(HashOn::Cookie("session".into()))
    );
    assert_eq!(
        hashed("query:user").unwrap(),
        Some(HashOn::Query("user".into()))
    );
    assert_eq!(hashed("client_ip").unwrap(), Some(HashOn::ClientIp));
    for (bad, needle) in [
        ("header:", "has no name after the colon"),
        ("header:X User", "not a valid header name"),
        ("cookie:a;b", "not a valid cookie name"),
        ("query:a=b", "not a query parameter name"),
        (
            "body:x",
            "header:NAME, cookie:NAME, query:NAME or client_ip",
        ),
        (
            "client-ip",
            "header:NAME, cookie:NAME, query:NAME or client_ip",
        ),
    ] {
        let text = with_backend(
            "",
            &format!(
                "      targets: [http://a]\n      balance: consistent_hash\n      hash_on: \"{bad}\"\n"
            ),
        );
        assert_one(
            &text,
            "proxies[0].backend.hash_on",
            &["backend.hash_on: ", needle],
        );
    }
}

#[test]
fn retries_are_at_most_10() {
    let retries = |n: &str| {
        with_backend(
            "",
            &format!("      targets: [http://a]\n      retries: {n}\n"),
        )
    };
    assert_eq!(
        parse(&retries("10")).unwrap().proxies[0].backend.retries,
        10
    );
    assert_eq!(parse(&retries("0")).unwrap().proxies[0].backend.retries, 0);
    for bad in ["11", "-1", "two"] {
        assert_one(
            &retries(bad),
            "proxies[0].backend.retries",
            &["backend.retries must be a whole number from 0 to 10"],
        );
    }
}

#[test]
fn the_active_check_timeout_is_shorter_than_its_interval() {
    let active = |settings: &str| {
        with_backend(
            "",
            &format!(
                "      targets: [http://a]\n      health:\n        active: {{ {settings} }}\n"
            ),
        )
    };
    assert_one(
        &active("interval: 2s, timeout: 2s"),
        "proxies[0].backend.health.active.timeout",
        &[
            "backend.health.active.timeout (2s) must be shorter than backend.health.active.interval (2s)",
        ],
    );
    // Against the default interval (5s).
    assert_one(
        &active("timeout: 10s"),
        "proxies[0].backend.health.active.timeout",
        &["(10s) must be shorter than", "(5s)"],
    );
    assert!(parse(&active("interval: 500ms, timeout: 200ms")).is_ok());
}

#[test]
fn bad_health_settings_name_their_field() {
    let text = with_backend(
        "",
        "      targets: [http://a]\n      health:\n        active: { path: health, interval: 0s, healthy_after: 0, unhealthy_after: x, every: 1s }\n        passive: { unhealthy_after: 0 }\n        other: {}\n",
    );
    let found = problems(&text);
    assert_eq!(found.len(), 7, "{found:#?}");
    assert_field(
        &found,
        "proxies[0].backend.health.active.path",
        &["backend.health.active.path must be a path starting with /"],
    );
    assert_field(
        &found,
        "proxies[0].backend.health.active.interval",
        &["backend.health.active.interval: must be more than 0s"],
    );
    assert_field(
        &found,
        "proxies[0].backend.health.active.healthy_after",
        &["from 1 to 1000"],
    );
    assert_field(
        &found,
        "proxies[0].backend.health.active.unhealthy_after",
        &["from 1 to 1000"],
    );
    assert_field(
        &found,
        "proxies[0].backend.health.active.every",
        &["unknown key \"every\" in backend.health.active"],
    );
    assert_field(
        &found,
        "proxies[0].backend.health.passive.unhealthy_after",
        &["backend.health.passive.unhealthy_after must be a whole number from 1 to 1000"],
    );
    assert_field(
        &found,
        "proxies[0].backend.health.other",
        &["unknown key \"other\" in backend.health", "active, passive"],
    );
    let text = with_backend(
        "",
        "      targets: [http://a]\n      health: { passive: { cool_down: soon } }\n",
    );
    assert_one(
        &text,
        "proxies[0].backend.health.passive.cool_down",
        &["backend.health.passive.cool_down: "],
    );
}

#[test]
fn the_breaker_ratio_is_above_0_and_at_most_1() {
    let breaker = |settings: &str| {
        with_backend(
            "",
            &format!("      targets: [http://a]\n      circuit_breaker: {{ {settings} }}\n"),
        )
    };
    let ratio = |text: &str| {
        parse(&breaker(text)).unwrap().proxies[0]
            .backend
            .circuit_breaker
            .clone()
            .unwrap()
            .failure_ratio
    };
    assert_eq!(ratio("failure_ratio: 1"), 1.0);
    assert_eq!(ratio("failure_ratio: 0.01"), 0.01);
    for bad in ["0", "1.5", "-0.5", "half", "NaN"] {
        assert_one(
            &breaker(&format!("failure_ratio: {bad}")),
            "proxies[0].backend.circuit_breaker.failure_ratio",
            &["backend.circuit_breaker.failure_ratio must be a number above 0 and at most 1"],
        );
    }
    assert_one(
        &breaker("min_requests: 0"),
        "proxies[0].backend.circuit_breaker.min_requests",
        &["from 1 to"],
    );
    assert_one(
        &breaker("open_for: 0s"),
        "proxies[0].backend.circuit_breaker.open_for",
        &["must be more than 0s"],
    );
    assert_one(
        &breaker("ratio: 0.5"),
        "proxies[0].backend.circuit_breaker.ratio",
        &[
            "unknown key \"ratio\" in backend.circuit_breaker",
            "failure_ratio, min_requests, open_for",
        ],
    );
}

#[test]
fn unknown_backend_keys_and_wrong_shapes() {
    assert_one(
        &with_backend("", "      targets: [http://a]\n      algorithm: random\n"),
        "proxies[0].backend.algorithm",
        &[
            "unknown key \"algorithm\" in backend",
            "upstream, targets, balance",
        ],
    );
    let text = "environments:\n  - name: a\n    listen: 127.0.0.1:9000\nproxies:\n  - name: p\n    path: /p\n    backend: [http://a]\n";
    assert_one(
        text,
        "proxies[0].backend",
        &[
            "backend must be a URL such as http://localhost:8080 or a mapping",
            "a list",
        ],
    );
}

#[test]
fn a_named_upstream_is_used_by_name_alone() {
    let top = "upstreams:\n  - name: pool\n    targets: [http://a, http://b]\n";
    let text = with_backend(top, "      upstream: pool\n");
    let config = parse(&text).unwrap();
    assert_eq!(config.proxies[0].backend.upstream.as_deref(), Some("pool"));
    assert_eq!(config.proxies[0].backend, config.upstreams[0].backend);

    assert_one(
        &with_backend(top, "      upstream: pool\n      retries: 2\n"),
        "proxies[0].backend.upstream",
        &["backend.upstream uses a shared upstream, so it cannot be combined with retries"],
    );
    assert_one(
        &with_backend(top, "      upstream: nope\n"),
        "proxies[0].backend.upstream",
        &[
            "backend.upstream names the upstream \"nope\", which does not exist; the upstreams are pool",
        ],
    );
    assert_one(
        &with_backend("", "      upstream: nope\n"),
        "proxies[0].backend.upstream",
        &["which does not exist; no upstreams are defined"],
    );
}

#[test]
fn upstreams_are_checked_like_backends_and_named_once() {
    let top = "upstreams:\n  - name: pool\n    targets: [{ url: http://a, weight: 0 }]\n    hash_on: client_ip\n  - name: pool\n    targets: [http://b]\n  - targets: [http://c]\n  - name: other\n    targets: [http://c]\n    upstream: pool\n";
    let text = with_backend(top, "      upstream: pool\n");
    let found = problems(&text);
    assert_eq!(found.len(), 5, "{found:#?}");
    assert_field(
        &found,
        "upstreams[0].targets[0].weight",
        &["upstream \"pool\": targets[0].weight must be a whole number from 1 to 1000"],
    );
    assert_field(
        &found,
        "upstreams[0].hash_on",
        &["upstream \"pool\": hash_on only applies with balance: consistent_hash"],
    );
    assert_field(
        &found,
        "upstreams[1]",
        &[
            "upstream \"pool\" is defined twice",
            "upstream names must be unique",
        ],
    );
    assert_field(
        &found,
        "upstreams[2].name",
        &["upstream #3: the required key name is missing"],
    );
    assert_field(
        &found,
        "upstreams[3].upstream",
        &[
            "upstream \"other\": unknown key \"upstream\"",
            "name, targets",
        ],
    );
    // The proxy naming the broken upstream gets no second problem.
    assert!(
        found
            .iter()
            .all(|p| !p.field.as_deref().unwrap_or("").starts_with("proxies"))
    );
    assert_one(
        &format!(
            "{}upstreams: {{}}\n",
            &with_backend("", "      targets: [http://a]\n")
        ),
        "upstreams",
        &["the file: upstreams must be a list of upstreams"],
    );
}

#[test]
fn json_documents_follow_the_same_rules() {
    let doc = json!({
        "environments": [{"name": "a", "listen": "127.0.0.1:9000"}],
        "upstreams": [{"name": "pool", "targets": ["http://a", {"url": "http://b", "weight": 2}]}],
        "proxies": [
            {"name": "p", "path": "/p", "backend": {"upstream": "pool"}},
            {"name": "q", "path": "/q", "backend": {"targets": [{"url": "http://a", "weight": 1001}]}}
        ]
    });
    let found = validate_document(&doc, Path::new("/etc/strait")).unwrap_err();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_field(
        &found,
        "proxies[1].backend.targets[0].weight",
        &["from 1 to 1000"],
    );
    assert_eq!(found[0].line, None);
}

#[test]
fn several_targets_and_upstreams_round_trip_through_the_document() {
    let original = parse(EXAMPLE).unwrap();
    let doc = document_from_yaml(EXAMPLE).unwrap();
    assert_eq!(
        validate_document(&doc, Path::new("/etc/strait")),
        Ok(original.clone())
    );
    let yaml = document_to_yaml(&doc);
    let again = parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(again, original, "{yaml}");
    assert_eq!(document_from_yaml(&yaml).unwrap(), doc, "{yaml}");
}

#[test]
fn export_writes_backends_in_the_file_format() {
    let doc = json!({
        "proxies": [
            {
                "backend": {
                    "rebalance": "drain",
                    "circuit_breaker": {"open_for": "30s", "failure_ratio": 0.5},
                    "health": {"passive": {"cool_down": "10s"}, "active": {"timeout": "1s", "path": "/health"}},
                    "targets": [{"weight": 2, "url": "http://a"}, "http://b"],
                    "balance": "round_robin"
                },
                "path": "/p",
                "name": "p"
            },
            {"name": "q", "path": "/q", "backend": {"upstream": "pool"}}
        ],
        "upstreams": [{"targets": ["http://c"], "name": "pool", "retries": 1}],
        "environments": [{"name": "prod", "listen": "127.0.0.1:8080"}]
    });
    let expected = "\
environments:
  - name: prod
    listen: 127.0.0.1:8080
proxies:
  - name: p
    path: /p
    backend:
      targets:
        - {url: http://a, weight: 2}
        - http://b
      balance: round_robin
      health:
        active: {path: /health, timeout: 1s}
        passive: {cool_down: 10s}
      circuit_breaker: {failure_ratio: 0.5, open_for: 30s}
      rebalance: drain
  - name: q
    path: /q
    backend: {upstream: pool}
upstreams:
  - name: pool
    targets:
      - http://c
    retries: 1
";
    assert_eq!(document_to_yaml(&doc), expected);
}
