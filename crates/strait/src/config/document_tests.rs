//! JSON documents: validation through the file's rules (problems name their field), and
//! conversion to and from the YAML file format.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value as Json, json};

use super::*;
use crate::routing::{BackendUrl, ProxyPath};

const BASE: &str = "/etc/strait";
const ORIGIN: &str = "/etc/strait/gateway.yaml";

/// Every key of the format, relative file paths included.
const EXAMPLE: &str = "\
environments:
  - name: production
    listen: 127.0.0.1:8080
    websocket: true
    tls: { cert: gw.pem, key: /abs/gw-key.pem }
    timeouts: { connect: 5s, response: 60s, websocket_idle: 1h }
    shutdown_grace: 30s
    undeploy_grace: never
  - name: staging
    listen: '[::1]:0'
    undeploy_grace: 0
proxies:
  - name: users
    path: /api/v1/*
    backend: http://localhost:8080/service
    deploy: [production, staging]
    methods: [GET, POST, PURGE]
    preserve_host: true
    backend_tls: { ca_file: certs/ca.pem }
  - name: echo
    path: /echo
    backend: https://example.com
admin:
  listen: 127.0.0.1:8001
";

fn sample() -> Json {
    json!({
        "environments": [
            {
                "name": "production",
                "listen": "127.0.0.1:8080",
                "websocket": true,
                "tls": {"cert": "gw.pem", "key": "/abs/gw-key.pem"},
                "timeouts": {"connect": "5s", "response": "60s", "websocket_idle": "1h"},
                "shutdown_grace": "30s",
                "undeploy_grace": "never"
            },
            {"name": "staging", "listen": "[::1]:0", "undeploy_grace": 0}
        ],
        "proxies": [
            {
                "name": "users",
                "path": "/api/v1/*",
                "backend": "http://localhost:8080/service",
                "deploy": ["production", "staging"],
                "methods": ["GET", "POST", "PURGE"],
                "preserve_host": true,
                "backend_tls": {"ca_file": "certs/ca.pem"}
            },
            {"name": "echo", "path": "/echo", "backend": "https://example.com"}
        ],
        "admin": {"listen": "127.0.0.1:8001"}
    })
}

fn expected_config() -> Config {
    Config {
        environments: vec![
            Environment {
                name: "production".into(),
                listen: "127.0.0.1:8080".parse().unwrap(),
                websocket: true,
                tls: Some(TlsFiles {
                    cert: "/etc/strait/gw.pem".into(),
                    key: "/abs/gw-key.pem".into(),
                }),
                timeouts: Timeouts::default(),
                shutdown_grace: Duration::from_secs(30),
                undeploy_grace: None,
                access_log: Default::default(),
                policies: Vec::new(),
                backend_source_addresses: Vec::new(),
            },
            Environment {
                name: "staging".into(),
                listen: "[::1]:0".parse().unwrap(),
                websocket: false,
                tls: None,
                timeouts: Timeouts::default(),
                shutdown_grace: Duration::from_secs(30),
                undeploy_grace: Some(Duration::ZERO),
                access_log: Default::default(),
                policies: Vec::new(),
                backend_source_addresses: Vec::new(),
            },
        ],
        upstreams: Vec::new(),
        proxies: vec![
            Proxy {
                name: "users".into(),
                path: ProxyPath::parse("/api/v1/*").unwrap(),
                backend: BackendSpec::single(
                    BackendUrl::parse("http://localhost:8080/service").unwrap(),
                ),
                deploy: vec!["production".into(), "staging".into()],
                methods: Some(vec![
                    http::Method::GET,
                    http::Method::POST,
                    http::Method::from_bytes(b"PURGE").unwrap(),
                ]),
                preserve_host: true,
                backend_tls: Some(BackendTls {
                    ca_file: "/etc/strait/certs/ca.pem".into(),
                }),
                policies: Vec::new(),
            },
            Proxy {
                name: "echo".into(),
                path: ProxyPath::parse("/echo").unwrap(),
                backend: BackendSpec::single(BackendUrl::parse("https://example.com").unwrap()),
                deploy: Vec::new(),
                methods: None,
                preserve_host: false,
                backend_tls: None,
                policies: Vec::new(),
            },
        ],
        consumers: Vec::new(),
        admin: Some(AdminConfig {
            listen: "127.0.0.1:8001".parse().unwrap(),
        }),
    }
}

fn validate(doc: &Json) -> Result<Config, Vec<Problem>> {
    validate_document(doc, Path::new(BASE))
}

fn json_problems(doc: &Json) -> Vec<Problem> {
    match validate(doc) {
        Err(problems) => problems,
        Ok(config) => panic!("expected problems, got {config:?}"),
    }
}

/// Asserts that a problem names `field` and mentions every needle.
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

/// A one-environment document with `env` merged into the environment and `proxies` as given.
fn doc_with(env: Json, proxies: Json) -> Json {
    let mut environment = json!({"name": "a", "listen": "127.0.0.1:9000"});
    if let (Some(target), Json::Object(extra)) = (environment.as_object_mut(), env) {
        target.extend(extra);
    }
    json!({"environments": [environment], "proxies": proxies})
}

#[test]
fn a_valid_document_gives_the_model() {
    assert_eq!(validate(&sample()), Ok(expected_config()));
}

#[test]
fn a_document_and_its_yaml_file_give_the_same_config() {
    assert_eq!(
        parse_str(EXAMPLE, Path::new(ORIGIN)).unwrap(),
        expected_config()
    );
    assert_eq!(document_from_yaml(EXAMPLE).unwrap(), sample());
}

#[test]
fn json_problems_have_a_label_no_location_and_a_field() {
    let doc = json!({
        "environments": [{"name": "a", "listen": "127.0.0.1:9000", "websocket": "yes"}],
        "proxies": [{"name": "p", "path": "/p", "backend": "http://b", "retries": 3}]
    });
    let found = json_problems(&doc);
    assert_eq!(found.len(), 2, "{found:#?}");
    for problem in &found {
        assert_eq!(problem.file, Path::new(DOCUMENT_ORIGIN));
        assert_eq!((problem.line, problem.column), (None, None));
    }
    assert_field(
        &found,
        "environments[0].websocket",
        &["environment \"a\": websocket must be true or false, but it is the text \"yes\""],
    );
    assert_field(
        &found,
        "proxies[0].retries",
        &["proxy \"p\": unknown key \"retries\"", "preserve_host"],
    );
    let shown: Vec<String> = found.iter().map(Problem::to_string).collect();
    assert!(
        shown.iter().all(|s| s.starts_with("admin API: ")),
        "{shown:?}"
    );
}

#[test]
fn a_wrong_type_names_its_field() {
    let found = json_problems(&doc_with(
        json!({"name": 7, "tls": "gw.pem", "timeouts": {"connect": true}}),
        json!({"name": "p"}),
    ));
    assert_eq!(found.len(), 4, "{found:#?}");
    assert_field(
        &found,
        "environments[0].name",
        &["environment #1: name must be text, but it is the number 7"],
    );
    assert_field(&found, "environments[0].tls", &["tls must be a mapping"]);
    assert_field(
        &found,
        "environments[0].timeouts.connect",
        &["timeouts.connect must be a duration such as 5s, but it is the boolean true"],
    );
    assert_field(
        &found,
        "proxies",
        &["the document: proxies must be a list of proxies, but it is a mapping"],
    );
}

#[test]
fn a_bad_duration_names_its_field() {
    let found = json_problems(&doc_with(
        json!({"timeouts": {"response": "5 s"}, "shutdown_grace": 5, "undeploy_grace": "soon"}),
        json!([]),
    ));
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_field(
        &found,
        "environments[0].timeouts.response",
        &["environment \"a\": timeouts.response: \"5 s\" has a space"],
    );
    // A JSON number is spelled as the YAML number would be: `5` has no unit in both.
    assert_field(
        &found,
        "environments[0].shutdown_grace",
        &["shutdown_grace: \"5\" has no unit"],
    );
    assert_field(
        &found,
        "environments[0].undeploy_grace",
        &["undeploy_grace: \"soon\" is not a duration", "never"],
    );
}

#[test]
fn json_numbers_read_like_yaml_numbers() {
    let doc = doc_with(
        json!({"timeouts": {"connect": 1.5, "response": -2}, "undeploy_grace": 0}),
        json!([]),
    );
    let yaml = "\
environments:
  - name: a
    listen: 127.0.0.1:9000
    timeouts: { connect: 1.5, response: -2 }
    undeploy_grace: 0
";
    let messages = |problems: Vec<Problem>| -> Vec<(Option<String>, String)> {
        problems.into_iter().map(|p| (p.field, p.message)).collect()
    };
    let from_json = messages(json_problems(&doc));
    let Err(ConfigError::Invalid(from_yaml)) = parse_str(yaml, Path::new(ORIGIN)) else {
        panic!("the YAML should be invalid");
    };
    assert_eq!(from_json, messages(from_yaml));
    assert_eq!(from_json.len(), 2, "{from_json:#?}");
    assert!(
        from_json[0].1.contains("\"1.5\" has a fraction"),
        "{from_json:#?}"
    );
}

#[test]
fn duplicates_name_the_second_object() {
    let doc = json!({
        "environments": [
            {"name": "a", "listen": "127.0.0.1:9000"},
            {"name": "a", "listen": "127.0.0.1:9001"}
        ],
        "proxies": [
            {"name": "one", "path": "/api/*", "backend": "http://x", "deploy": ["a"]},
            {"name": "two", "path": "/api/*", "backend": "http://y", "deploy": ["a"]},
            {"name": "two", "path": "/other", "backend": "http://z"}
        ]
    });
    let found = json_problems(&doc);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_field(
        &found,
        "environments[1]",
        &["environment \"a\" is defined twice; environment names must be unique"],
    );
    assert_field(
        &found,
        "proxies[1].path",
        &["proxy \"two\": path \"/api/*\" is already used by proxy \"one\" in environment \"a\""],
    );
    assert_field(
        &found,
        "proxies[2]",
        &["proxy \"two\" is defined twice; proxy names must be unique"],
    );
}

#[test]
fn a_deploy_naming_a_missing_environment_names_the_entry() {
    let found = json_problems(&doc_with(
        json!({}),
        json!([{"name": "p", "path": "/p", "backend": "http://b", "deploy": ["a", "prod", 3, "a"]}]),
    ));
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_field(
        &found,
        "proxies[0].deploy[1]",
        &[
            "proxy \"p\": deploy names the environment \"prod\", which does not exist; the environments are a",
        ],
    );
    assert_field(
        &found,
        "proxies[0].deploy[2]",
        &["each entry of deploy must be text, but it is the number 3"],
    );
    assert_field(
        &found,
        "proxies[0].deploy[3]",
        &["deploy lists the environment \"a\" twice"],
    );
}

#[test]
fn missing_keys_and_bad_methods_name_their_field() {
    let found = json_problems(&json!({
        "environments": [{"name": "a"}],
        "proxies": [{"name": "p", "path": "/p", "backend": "http://b", "methods": ["GET", "get"]}]
    }));
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_field(
        &found,
        "environments[0].listen",
        &["environment \"a\": the required key listen is missing"],
    );
    assert_field(
        &found,
        "proxies[0].methods[1]",
        &["\"get\" is not an HTTP method; methods are written in capitals: GET"],
    );
}

#[test]
fn undeploy_grace_in_json() {
    for (written, expected) in [
        (json!("never"), None),
        (json!(0), Some(Duration::ZERO)),
        (json!("0"), Some(Duration::ZERO)),
        (json!("0s"), Some(Duration::ZERO)),
        (json!("10s"), Some(Duration::from_secs(10))),
        (Json::Null, Some(Duration::from_secs(30))),
    ] {
        let config = validate(&doc_with(json!({"undeploy_grace": written}), json!([])))
            .unwrap_or_else(|p| panic!("{written}: {p:#?}"));
        assert_eq!(config.environments[0].undeploy_grace, expected, "{written}");
    }
    let found = json_problems(&doc_with(json!({"undeploy_grace": [1]}), json!([])));
    assert_field(
        &found,
        "environments[0].undeploy_grace",
        &["undeploy_grace must be a duration such as 30s, 0 or never, but it is a list"],
    );
}

#[test]
fn admin_in_json() {
    let mut doc = doc_with(json!({}), json!([]));
    doc["admin"] = json!({"listen": "127.0.0.1:8001"});
    assert_eq!(
        validate(&doc).unwrap().admin,
        Some(AdminConfig {
            listen: "127.0.0.1:8001".parse().unwrap()
        })
    );
    for (admin, needle) in [
        (
            json!({"listen": "127.0.0.1:9000"}),
            "clashes with environment \"a\"",
        ),
        (
            json!({"listen": "0.0.0.0:9000"}),
            "clashes with environment \"a\"",
        ),
        (json!({"listen": "nowhere"}), "is not an address"),
        (json!({"listen": 8001}), "has no host"),
    ] {
        doc["admin"] = admin;
        let found = json_problems(&doc);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_field(&found, "admin.listen", &[needle]);
    }
}

#[test]
fn document_level_problems() {
    let found = json_problems(&json!(["environments"]));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].field, None);
    assert!(
        found[0]
            .message
            .starts_with("the document must be a mapping"),
        "{found:#?}"
    );
    let found = json_problems(&json!({"environments": [], "color": "red"}));
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_field(
        &found,
        "environments",
        &["no environments: the list is empty"],
    );
    assert_field(&found, "color", &["unknown key \"color\" at the top level"]);
}

#[test]
fn a_document_exports_to_yaml_that_gives_the_same_config() {
    let doc = sample();
    let yaml = document_to_yaml(&doc);
    let from_yaml = parse_str(&yaml, Path::new(ORIGIN)).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(Ok(from_yaml), validate(&doc), "{yaml}");
    assert_eq!(document_from_yaml(&yaml).unwrap(), doc, "{yaml}");
}

#[test]
fn export_writes_the_file_format() {
    // Keys in any order in the document come out in the documented order.
    let doc = json!({
        "proxies": [{
            "backend_tls": {"ca_file": "ca.pem"},
            "methods": ["GET"],
            "deploy": ["prod"],
            "backend": "http://b",
            "path": "/p",
            "name": "p"
        }],
        "admin": {"listen": "127.0.0.1:8001"},
        "environments": [{
            "undeploy_grace": "never",
            "timeouts": {"websocket_idle": "1h", "connect": "5s"},
            "listen": "127.0.0.1:8080",
            "name": "prod"
        }]
    });
    let expected = "\
environments:
  - name: prod
    listen: 127.0.0.1:8080
    timeouts: {connect: 5s, websocket_idle: 1h}
    undeploy_grace: never
proxies:
  - name: p
    path: /p
    backend: http://b
    deploy: [prod]
    methods: [GET]
    backend_tls: {ca_file: ca.pem}
admin:
  listen: 127.0.0.1:8001
";
    assert_eq!(document_to_yaml(&doc), expected);
}

#[test]
fn text_that_looks_like_other_yaml_stays_text_on_export() {
    let names = [
        "true", "null", "~", "123", "0", "no", "on", "1e3", "- x", "a: b", "#x", "[x]", "{x}",
        "*x", "&x", "!x", "'x'", "\"x\"", " x", "x ", "", "a\nb", "日本",
    ];
    let environments: Vec<Json> = names
        .iter()
        .enumerate()
        .map(|(i, name)| json!({"name": name, "listen": format!("127.0.0.1:{}", 9000 + i)}))
        .collect();
    let doc =
        json!({"environments": environments, "proxies": [], "admin": {"listen": "[::1]:8001"}});
    let yaml = document_to_yaml(&doc);
    assert_eq!(document_from_yaml(&yaml).unwrap(), doc, "{yaml}");

    // The same inside the one-line sections.
    let doc = doc_with(
        json!({"tls": {"cert": "a, b}.pem", "key": "[k]: x.pem"}, "timeouts": {"connect": "5s # no"}}),
        json!([{
            "name": "p",
            "path": "/p",
            "backend": "http://b/?q=1&r=#x",
            "deploy": names,
            "methods": ["GET, POST", "]"],
            "backend_tls": {"ca_file": "{x}"}
        }]),
    );
    let yaml = document_to_yaml(&doc);
    assert_eq!(document_from_yaml(&yaml).unwrap(), doc, "{yaml}");
}

#[test]
fn unknown_keys_are_kept_after_the_known_ones() {
    let doc = json!({"zeta": 1, "environments": [{"name": "a", "alpha": [1, {"b": 2}]}]});
    let yaml = document_to_yaml(&doc);
    assert_eq!(document_from_yaml(&yaml).unwrap(), doc, "{yaml}");
    assert!(yaml.find("environments:") < yaml.find("zeta:"), "{yaml}");
    assert!(yaml.find("name: a") < yaml.find("alpha:"), "{yaml}");
}

#[test]
fn a_file_round_trips_through_the_document() {
    let original = parse_str(EXAMPLE, Path::new(ORIGIN)).unwrap();
    let doc = document_from_yaml(EXAMPLE).unwrap();
    // The document keeps paths as written; the base folder anchors them.
    assert_eq!(doc["environments"][0]["tls"]["cert"], "gw.pem");
    assert_eq!(doc["proxies"][0]["backend_tls"]["ca_file"], "certs/ca.pem");
    assert_eq!(validate(&doc), Ok(original.clone()));
    let yaml = document_to_yaml(&doc);
    let again = parse_str(&yaml, Path::new(ORIGIN)).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(again, original, "{yaml}");
    // Another folder anchors the same relative paths elsewhere.
    let elsewhere = parse_str(&yaml, Path::new("/srv/gateway.yaml")).unwrap();
    assert_eq!(
        elsewhere.environments[0]
            .tls
            .as_ref()
            .map(|t| t.cert.clone()),
        Some("/srv/gw.pem".into())
    );
}

#[test]
fn document_from_yaml_follows_aliases_and_reports_broken_yaml() {
    let text = "\
environments:
  - { name: a, listen: 127.0.0.1:1, timeouts: &t { connect: 1s } }
  - { name: b, listen: 127.0.0.1:2, timeouts: *t }
";
    let doc = document_from_yaml(text).unwrap();
    assert_eq!(doc["environments"][1]["timeouts"], json!({"connect": "1s"}));
    assert_eq!(document_from_yaml("").unwrap(), json!({}));
    assert_eq!(document_from_yaml("# nothing\n").unwrap(), json!({}));
    match document_from_yaml("environments: [\n") {
        Err(ConfigError::Invalid(problems)) => {
            assert_eq!(problems.len(), 1, "{problems:#?}");
            assert!(
                problems[0].message.contains("not valid YAML"),
                "{problems:#?}"
            );
        }
        other => panic!("expected a YAML problem, got {other:?}"),
    }
}

#[test]
fn consumers_and_policies_export_in_the_file_format() {
    let doc = json!({
        "environments": [{
            "policies": [{"query": "k", "type": "api_key"}],
            "listen": "127.0.0.1:8080",
            "name": "prod"
        }],
        "proxies": [],
        "consumers": [{
            "credentials": {
                "basic_auth": {"password_hash": "$argon2id$v=19$x", "username": "al"},
                "api_key_digests": ["sha256:ab"]
            },
            "groups": ["admins", "beta"],
            "name": "alice"
        }, {"name": "literal", "credentials": {"jwt_subject": "${NOT_A_VARIABLE}"}}]
    });
    let expected = "\
environments:
  - name: prod
    listen: 127.0.0.1:8080
    policies:
      - {type: api_key, query: k}
proxies: []
consumers:
  - name: alice
    groups: [admins, beta]
    credentials:
      api_key_digests:
        - sha256:ab
      basic_auth: {username: al, password_hash: $argon2id$v=19$x}
  - name: literal
    credentials:
      jwt_subject: $${NOT_A_VARIABLE}
";
    let yaml = document_to_yaml(&doc);
    assert_eq!(yaml, expected);
    assert_eq!(document_from_yaml(&yaml).unwrap(), doc, "{yaml}");
}

#[test]
fn documents_from_files_are_interpolated() {
    let text =
        "consumers:\n  - {name: a, credentials: {api_keys: [\"${K}\", \"$${K}\", \"${UNSET}\"]}}\n";
    let lookup = |name: &str| (name == "K").then(|| "v".to_owned());
    let doc = document_from_yaml_with(text, &lookup).unwrap();
    assert_eq!(
        doc["consumers"][0]["credentials"]["api_keys"],
        json!(["v", "${K}", "${UNSET}"])
    );
}
