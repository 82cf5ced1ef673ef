//! Parsing and validation of whole files: the happy path, defaults, and every problem with
//! its line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::routing::{BackendUrl, ProxyPath};

const ORIGIN: &str = "/etc/strait/gateway.yaml";

const EXAMPLE: &str = "\
environments:
  - name: production
    listen: 127.0.0.1:8080
    websocket: true
    tls: { cert: gw.pem, key: /abs/gw-key.pem }
    timeouts: { connect: 5s, response: 60s, websocket_idle: 1h }
    shutdown_grace: 30s
    access_log: { format: combined, file: logs/access.log, log_handshake: true }
proxies:
  - name: users
    path: /api/v1/*
    backend: http://localhost:8080/service
    deploy: [production]
    methods: [GET, POST]
    preserve_host: false
    backend_tls: { ca_file: certs/ca.pem }
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

/// Asserts that exactly one problem is reported, on `line`, and that it mentions every needle.
#[track_caller]
fn assert_one_problem(text: &str, line: u64, needles: &[&str]) {
    let found = problems(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_problem(&found, line, needles);
}

#[track_caller]
fn assert_problem(found: &[Problem], line: u64, needles: &[&str]) {
    let hit = found
        .iter()
        .any(|p| p.line == Some(line) && needles.iter().all(|n| p.message.contains(n)));
    assert!(
        hit,
        "no problem on line {line} mentioning {needles:?} in {found:#?}"
    );
}

fn env(text: &str) -> String {
    format!("environments:\n  - name: a\n    listen: 127.0.0.1:9000\n{text}")
}

#[test]
fn the_example_round_trips_into_the_model() {
    let config = parse(EXAMPLE).unwrap();
    let expected = Config {
        environments: vec![Environment {
            name: "production".into(),
            listen: "127.0.0.1:8080".parse().unwrap(),
            websocket: true,
            tls: Some(TlsFiles {
                cert: "/etc/strait/gw.pem".into(),
                key: "/abs/gw-key.pem".into(),
            }),
            timeouts: Timeouts {
                connect: Duration::from_secs(5),
                response: Duration::from_secs(60),
                send: Duration::from_secs(60),
                websocket_idle: Duration::from_secs(3600),
                websocket_ping: None,
                websocket_pong_timeout: Duration::from_secs(10),
                client_idle: Duration::from_secs(30),
                websocket_max_lifetime: None,
            },
            shutdown_grace: Duration::from_secs(30),
            undeploy_grace: Some(Duration::from_secs(30)),
            access_log: AccessLogSettings {
                format: Some(AccessLogFormat::Combined),
                file: Some("/etc/strait/logs/access.log".into()),
                log_handshake: true,
            },
            policies: Vec::new(),
            backend_source_addresses: Vec::new(),
        }],
        upstreams: Vec::new(),
        proxies: vec![Proxy {
            name: "users".into(),
            path: ProxyPath::parse("/api/v1/*").unwrap(),
            backend: BackendSpec::single(
                BackendUrl::parse("http://localhost:8080/service").unwrap(),
            ),
            deploy: vec!["production".into()],
            methods: Some(vec![http::Method::GET, http::Method::POST]),
            preserve_host: false,
            backend_tls: Some(BackendTls {
                ca_file: "/etc/strait/certs/ca.pem".into(),
            }),
            policies: Vec::new(),
        }],
        consumers: Vec::new(),
        admin: None,
    };
    assert_eq!(config, expected);
}

#[test]
fn defaults_apply_when_keys_are_left_out() {
    let text = "\
environments:
  - name: dev
    listen: localhost:3000
proxies:
  - name: echo
    path: /echo
    backend: https://example.com
";
    let config = parse(text).unwrap();
    let dev = &config.environments[0];
    assert_eq!(dev.listen, SocketAddr::from(([127, 0, 0, 1], 3000)));
    assert!(!dev.websocket);
    assert_eq!(dev.tls, None);
    assert_eq!(dev.timeouts, Timeouts::default());
    assert_eq!(dev.shutdown_grace, Duration::from_secs(30));
    let echo = &config.proxies[0];
    assert!(echo.deploy.is_empty());
    assert_eq!(echo.methods, None);
    assert!(!echo.preserve_host);
    assert_eq!(echo.backend_tls, None);
}

#[test]
fn environments_alone_are_enough_and_partial_timeouts_keep_other_defaults() {
    let config = parse(&env(
        "    timeouts: { connect: 250ms }\n    shutdown_grace: 0s\n",
    ))
    .unwrap();
    let a = &config.environments[0];
    assert_eq!(a.timeouts.connect, Duration::from_millis(250));
    assert_eq!(a.timeouts.response, Timeouts::default().response);
    assert_eq!(a.shutdown_grace, Duration::ZERO);
    assert!(config.proxies.is_empty());
}

#[test]
fn relative_paths_stay_relative_when_the_file_has_no_folder() {
    let config = parse_str(
        &env("    tls: { cert: gw.pem, key: k.pem }\n"),
        Path::new("gateway.yaml"),
    )
    .unwrap();
    let tls = config.environments[0].tls.clone().unwrap();
    assert_eq!(tls.cert, PathBuf::from("gw.pem"));
}

#[test]
fn problems_display_one_line_each_with_file_line_and_column() {
    let err = parse(&env("    lisen: x\n    websocket: maybe\n")).unwrap_err();
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 2, "{shown}");
    assert!(
        lines[0]
            .starts_with("/etc/strait/gateway.yaml:4:5: environment \"a\": unknown key \"lisen\""),
        "{shown}"
    );
    assert!(
        lines[1].starts_with("/etc/strait/gateway.yaml:5:16: environment \"a\": websocket"),
        "{shown}"
    );
    let unknown = Problem {
        file: "f.yaml".into(),
        line: None,
        column: None,
        field: None,
        message: "m".into(),
    };
    assert_eq!(unknown.to_string(), "f.yaml: m");
}

#[test]
fn an_empty_file_has_no_environments() {
    for text in [
        "",
        "\n# just a comment\n",
        "proxies: []\n",
        "environments: []\n",
        "environments:\n",
    ] {
        let found = problems(text);
        assert_eq!(found.len(), 1, "{text:?}: {found:#?}");
        assert!(
            found[0].message.starts_with("no environments: "),
            "{text:?}: {found:#?}"
        );
    }
}

#[test]
fn a_yaml_syntax_error_is_reported_with_its_location() {
    assert_one_problem(
        "environments: [\n  a,\nproxies: x\n",
        1,
        &["not valid YAML: unclosed bracket"],
    );
}

#[test]
fn a_duplicate_key_is_a_yaml_error() {
    assert_one_problem(
        &env("    listen: 127.0.0.1:9001\n"),
        4,
        &["duplicate", "listen"],
    );
}

#[test]
fn unknown_keys_are_reported_at_every_level_with_the_allowed_keys() {
    let text = "\
environment: []
environments:
  - name: a
    listen: 127.0.0.1:9000
    tls: { cert: c.pem, key: k.pem, chain: x.pem }
    timeouts: { idle: 5s }
    port: 80
proxies:
  - name: p
    path: /p
    backend: http://b
    backend_tls: { ca: ca.pem }
    retries: 3
";
    let found = problems(text);
    assert_eq!(found.len(), 7, "{found:#?}");
    assert_problem(
        &found,
        1,
        &[
            "unknown key \"environment\" at the top level",
            "environments, proxies",
        ],
    );
    assert_problem(
        &found,
        5,
        &[
            "environment \"a\"",
            "unknown key \"chain\" in tls",
            "cert, key",
        ],
    );
    assert_problem(
        &found,
        6,
        &[
            "unknown key \"idle\" in timeouts",
            "connect, response, send, client_idle, websocket_idle",
        ],
    );
    assert_problem(
        &found,
        7,
        &[
            "environment \"a\": unknown key \"port\"",
            "name, listen, websocket",
        ],
    );
    assert_problem(
        &found,
        12,
        &["proxy \"p\": unknown key \"ca\" in backend_tls", "ca_file"],
    );
    assert_problem(
        &found,
        12,
        &["proxy \"p\": the required key backend_tls.ca_file is missing"],
    );
    assert_problem(
        &found,
        13,
        &["proxy \"p\": unknown key \"retries\"", "preserve_host"],
    );
}

#[test]
fn missing_required_keys_are_each_reported() {
    let text = "\
environments:
  - websocket: true
  - name: b
proxies:
  - deploy: []
  - name: q
    path: /q
";
    let found = problems(text);
    assert_eq!(found.len(), 7, "{found:#?}");
    assert_problem(&found, 2, &["environment #1", "name is missing"]);
    assert_problem(&found, 2, &["environment #1", "listen is missing"]);
    assert_problem(&found, 3, &["environment \"b\"", "listen is missing"]);
    assert_problem(&found, 5, &["proxy #1", "name is missing"]);
    assert_problem(&found, 5, &["proxy #1", "path is missing"]);
    assert_problem(&found, 5, &["proxy #1", "backend is missing"]);
    assert_problem(&found, 6, &["proxy \"q\"", "backend is missing"]);
}

#[test]
fn an_empty_required_value_is_reported() {
    assert_one_problem(
        "environments:\n  - name:\n    listen: 127.0.0.1:1\n",
        2,
        &["environment #1", "name is empty"],
    );
}

#[test]
fn wrong_types_are_each_reported() {
    let text = "\
environments:
  - name: 2024
    listen: [127.0.0.1:9000]
    websocket: yes
    tls: on
    timeouts: 5s
proxies: { name: p }
";
    let found = problems(text);
    assert_eq!(found.len(), 6, "{found:#?}");
    assert_problem(
        &found,
        2,
        &[
            "environment #1: name must be text, but it is the number 2024",
            "\"2024\"",
        ],
    );
    assert_problem(
        &found,
        3,
        &["listen must be an address such as 127.0.0.1:8080, but it is a list"],
    );
    assert_problem(
        &found,
        4,
        &["websocket must be true or false, but it is the text \"yes\""],
    );
    assert_problem(&found, 5, &["tls must be a mapping"]);
    assert_problem(&found, 6, &["timeouts must be a mapping"]);
    assert_problem(
        &found,
        7,
        &["proxies must be a list of proxies, but it is a mapping"],
    );
}

#[test]
fn the_whole_file_must_be_a_mapping() {
    assert_one_problem(
        "- a\n- b\n",
        1,
        &["the file must be a mapping", "but it is a list"],
    );
}

#[test]
fn empty_file_paths_are_reported() {
    let text = env(
        "    tls: { cert: '', key: k.pem }\nproxies:\n  - name: p\n    path: /p\n    backend: https://b\n    backend_tls: { ca_file: \"\" }\n",
    );
    let found = problems(&text);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_problem(&found, 4, &["environment \"a\": tls.cert is empty"]);
    assert_problem(&found, 9, &["proxy \"p\": backend_tls.ca_file is empty"]);
}

#[test]
fn a_wildcard_that_is_not_the_last_segment_is_reported() {
    let text = env("proxies:\n  - name: users\n    path: /a/*/b\n    backend: http://b\n");
    assert_one_problem(
        &text,
        6,
        &["proxy \"users\": ", "\"/a/*/b\"", "last segment"],
    );
}

#[test]
fn a_backend_scheme_other_than_http_or_https_is_reported() {
    let text =
        env("proxies:\n  - name: files\n    path: /f\n    backend: ftp://files.example.com\n");
    assert_one_problem(
        &text,
        7,
        &[
            "proxy \"files\": ",
            "\"ftp://files.example.com\"",
            "\"ftp\"",
        ],
    );
}

#[test]
fn duplicate_paths_within_an_environment_are_reported() {
    let text = "\
environments:
  - { name: a, listen: 127.0.0.1:9000 }
  - { name: b, listen: 127.0.0.1:9001 }
proxies:
  - { name: one, path: /api/*, backend: http://x, deploy: [a] }
  - { name: two, path: /api/*, backend: http://y, deploy: [b] }
  - { name: three, path: /api/*, backend: http://z, deploy: [b, a] }
  - { name: four, path: /api, backend: http://z, deploy: [a] }
";
    let found = problems(text);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_problem(
        &found,
        7,
        &["proxy \"three\": path \"/api/*\" is already used by proxy \"two\" in environment \"b\""],
    );
    assert_problem(
        &found,
        7,
        &["proxy \"three\": path \"/api/*\" is already used by proxy \"one\" in environment \"a\""],
    );
}

#[test]
fn duplicate_environment_names_are_reported() {
    let text = "environments:\n  - { name: a, listen: 127.0.0.1:1 }\n  - { name: a, listen: 127.0.0.1:2 }\n";
    assert_one_problem(
        text,
        3,
        &["environment \"a\" is defined twice (first at line 2)"],
    );
}

#[test]
fn duplicate_proxy_names_are_reported() {
    let text = env(
        "proxies:\n  - { name: p, path: /x, backend: http://b }\n  - { name: p, path: /y, backend: http://b }\n",
    );
    assert_one_problem(
        &text,
        6,
        &["proxy \"p\" is defined twice (first at line 5)"],
    );
}

#[test]
fn deploying_to_an_unknown_environment_is_reported() {
    let text =
        env("proxies:\n  - name: p\n    path: /p\n    backend: http://b\n    deploy: [a, prod]\n");
    assert_one_problem(
        &text,
        8,
        &[
            "proxy \"p\": deploy names the environment \"prod\", which does not exist",
            "are a",
        ],
    );
}

#[test]
fn every_bad_deploy_entry_is_reported() {
    let text = env(
        "proxies:\n  - name: p\n    path: /p\n    backend: http://b\n    deploy: [a, a, 7, b]\n",
    );
    let found = problems(&text);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_problem(
        &found,
        8,
        &["proxy \"p\": deploy lists the environment \"a\" twice"],
    );
    assert_problem(
        &found,
        8,
        &["proxy \"p\": each entry of deploy must be text"],
    );
    assert_problem(&found, 8, &["environment \"b\", which does not exist"]);
}

#[test]
fn bad_durations_are_reported_with_their_field() {
    let text = "\
environments:
  - name: a
    listen: 127.0.0.1:1
    timeouts:
      connect: 5
      response: 5 s
      websocket_idle: -1s
    shutdown_grace: 1.5s
  - name: b
    listen: 127.0.0.1:2
    shutdown_grace: 99999999999999999999d
";
    let found = problems(text);
    assert_eq!(found.len(), 5, "{found:#?}");
    assert_problem(
        &found,
        5,
        &["environment \"a\": timeouts.connect: \"5\" has no unit"],
    );
    assert_problem(
        &found,
        6,
        &["environment \"a\": timeouts.response: \"5 s\" has a space"],
    );
    assert_problem(
        &found,
        7,
        &["environment \"a\": timeouts.websocket_idle: \"-1s\" is not a duration"],
    );
    assert_problem(
        &found,
        8,
        &["environment \"a\": shutdown_grace: \"1.5s\" has a fraction"],
    );
    assert_problem(
        &found,
        11,
        &["environment \"b\": shutdown_grace:", "too large"],
    );
}

#[test]
fn two_environments_on_one_listen_address_are_reported() {
    let text = "\
environments:
  - { name: a, listen: 127.0.0.1:8080 }
  - { name: b, listen: localhost:8080 }
  - { name: c, listen: 0.0.0.0:9090 }
  - { name: d, listen: 10.0.0.1:9090 }
  - { name: e, listen: 127.0.0.1:0 }
  - { name: f, listen: 127.0.0.1:0 }
  - { name: g, listen: '[::1]:8080' }
";
    let found = problems(text);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_problem(
        &found,
        3,
        &["environment \"b\": listen 127.0.0.1:8080 clashes with environment \"a\""],
    );
    assert_problem(
        &found,
        5,
        &[
            "environment \"d\": listen 10.0.0.1:9090 clashes with environment \"c\" (listen 0.0.0.0:9090)",
        ],
    );
}

#[test]
fn invalid_listen_addresses_are_reported() {
    let text = "\
environments:
  - { name: a, listen: 8080 }
  - { name: b, listen: example.com:80 }
  - { name: c, listen: '127.0.0.1:99999' }
";
    let found = problems(text);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_problem(
        &found,
        2,
        &[
            "environment \"a\": listen \"8080\" has no host",
            "127.0.0.1:8080",
        ],
    );
    assert_problem(
        &found,
        3,
        &["environment \"b\": listen \"example.com:80\" is not an address"],
    );
    assert_problem(
        &found,
        4,
        &["environment \"c\": listen \"127.0.0.1:99999\" is not an address"],
    );
}

#[test]
fn invalid_method_names_are_reported() {
    let text = env(
        "proxies:\n  - name: p\n    path: /p\n    backend: http://b\n    methods: [GET, get, \"G ET\", PURGE, CONNECT]\n",
    );
    let found = problems(&text);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_problem(
        &found,
        8,
        &["proxy \"p\": CONNECT is not proxied: the gateway routes requests by path"],
    );
    assert_problem(
        &found,
        8,
        &["proxy \"p\": \"get\" is not an HTTP method; methods are written in capitals: GET"],
    );
    assert_problem(
        &found,
        8,
        &["proxy \"p\": \"G ET\" is not an HTTP method; a method is one word of capital letters"],
    );
}

#[test]
fn extension_methods_are_accepted() {
    let text = env(
        "proxies:\n  - name: p\n    path: /p\n    backend: http://b\n    deploy: [a]\n    methods: [GET, PURGE, PROPFIND]\n",
    );
    let config = parse_str(&text, Path::new("t.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let methods: Vec<String> = config.proxies[0]
        .methods
        .iter()
        .flatten()
        .map(|m| m.to_string())
        .collect();
    assert_eq!(methods, ["GET", "PURGE", "PROPFIND"]);
}

#[test]
fn an_empty_method_list_is_reported() {
    let text = env("proxies:\n  - name: p\n    path: /p\n    backend: http://b\n    methods: []\n");
    assert_one_problem(&text, 8, &["proxy \"p\": methods is an empty list"]);
}

#[test]
fn three_different_semantic_problems_are_all_reported() {
    let text = "\
environments:
  - name: a
    listen: 127.0.0.1:8080
    timeouts: { connect: 5 }
  - name: b
    listen: 127.0.0.1:8080
proxies:
  - name: p
    path: /p
    backend: http://b
    deploy: [nowhere]
";
    let found = problems(text);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_problem(&found, 4, &["timeouts.connect"]);
    assert_problem(&found, 6, &["clashes"]);
    assert_problem(&found, 11, &["\"nowhere\""]);
}

#[test]
fn environment_problems_do_not_wait_for_proxy_problems() {
    // Problems are reported in file order whatever check found them.
    let text = "\
environments:
  - { name: a, listen: nowhere }
proxies:
  - { name: p, path: /p, backend: http://b, deploy: [x] }
  - { name: p, path: /q, backend: http://b }
";
    let found = problems(text);
    let lines: Vec<_> = found.iter().map(|p| p.line).collect();
    assert_eq!(lines, [Some(2), Some(4), Some(5)], "{found:#?}");
}

#[test]
fn aliases_and_merges_are_followed() {
    let text = "\
defaults: &t { connect: 1s }
environments:
  - { name: a, listen: 127.0.0.1:1, timeouts: *t }
";
    // `defaults` is not a key of the format, so an anchor must live inside a real value.
    assert_one_problem(text, 1, &["unknown key \"defaults\""]);
    let text = "\
environments:
  - { name: a, listen: 127.0.0.1:1, timeouts: &t { connect: 1s } }
  - { name: b, listen: 127.0.0.1:2, timeouts: *t }
";
    let config = parse(text).unwrap();
    assert_eq!(
        config.environments[1].timeouts.connect,
        Duration::from_secs(1)
    );
}

#[test]
fn an_alias_bomb_is_refused_by_the_parser_budget() {
    let mut text =
        String::from("environments:\n  - name: &a0 x\n    listen: 127.0.0.1:1\nproxies:\n");
    for i in 1..=9 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        text.push_str(&format!(
            "  - {{ name: p{i}, path: /p, backend: http://b, deploy: &a{i} [{refs}] }}\n"
        ));
    }
    let found = problems(&text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].message.contains("too large or too complex")
            || found[0].message.contains("budget"),
        "{found:#?}"
    );
}

#[test]
fn deep_nesting_is_refused() {
    let text = format!(
        "environments: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert_eq!(problems(&text).len(), 1);
}

#[test]
fn load_reads_the_file_and_reports_a_missing_one() {
    let dir = std::env::temp_dir().join(format!("strait-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, env("    tls: { cert: gw.pem, key: gw-key.pem }\n")).unwrap();
    let config = load(&path).unwrap();
    assert_eq!(
        config.environments[0].tls.clone().unwrap().cert,
        dir.join("gw.pem")
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(load(&path), Err(ConfigError::Read { .. })));
}

#[test]
fn undeploy_grace_takes_a_duration_zero_or_never() {
    let cases = [
        ("10s", Some(Duration::from_secs(10))),
        ("250ms", Some(Duration::from_millis(250))),
        ("0", Some(Duration::ZERO)),
        ("'0'", Some(Duration::ZERO)),
        ("0s", Some(Duration::ZERO)),
        ("never", None),
        ("", Some(Duration::from_secs(30))),
    ];
    for (written, expected) in cases {
        let config = parse(&env(&format!("    undeploy_grace: {written}\n")))
            .unwrap_or_else(|e| panic!("{written:?}: {e}"));
        assert_eq!(
            config.environments[0].undeploy_grace, expected,
            "{written:?}"
        );
    }
    let config = parse(&env("")).unwrap();
    assert_eq!(
        config.environments[0].undeploy_grace,
        Some(Duration::from_secs(30))
    );
}

#[test]
fn a_bad_undeploy_grace_is_reported_with_the_choices() {
    let cases = [
        ("5", "\"5\" has no unit"),
        ("Never", "\"Never\" is not a duration"),
        ("1.5s", "has a fraction"),
        ("-1s", "is not a duration"),
    ];
    for (written, reason) in cases {
        let text = env(&format!("    undeploy_grace: {written}\n"));
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{written:?}: {found:#?}");
        assert_problem(
            &found,
            4,
            &[
                "environment \"a\": undeploy_grace: ",
                reason,
                "write 0 to close the sessions at once, or never",
            ],
        );
        assert_eq!(
            found[0].field.as_deref(),
            Some("environments[0].undeploy_grace")
        );
    }
    assert_one_problem(
        &env("    undeploy_grace: true\n"),
        4,
        &["undeploy_grace must be a duration such as 30s, 0 or never, but it is the boolean true"],
    );
}

#[test]
fn the_admin_listener_is_read() {
    let config = parse(&format!("{}admin: {{ listen: 127.0.0.1:8001 }}\n", env(""))).unwrap();
    assert_eq!(
        config.admin,
        Some(AdminConfig {
            listen: "127.0.0.1:8001".parse().unwrap()
        })
    );
    let config = parse(&format!("{}admin:\n  listen: localhost:8001\n", env(""))).unwrap();
    assert_eq!(
        config.admin.map(|a| a.listen),
        Some(SocketAddr::from(([127, 0, 0, 1], 8001)))
    );
    // Port 0 asks the system for a free port, so it never clashes.
    let text = "\
environments:
  - { name: a, listen: 127.0.0.1:0 }
admin: { listen: 127.0.0.1:0 }
";
    assert!(parse(text).unwrap().admin.is_some());
    assert_eq!(parse(&env("")).unwrap().admin, None);
}

#[test]
fn admin_problems_are_reported_with_their_field() {
    let cases = [
        (
            "admin: { listen: nowhere }\n",
            "admin.listen",
            "admin: listen \"nowhere\" is not an address",
        ),
        (
            "admin: { listen: 8001 }\n",
            "admin.listen",
            "admin: listen \"8001\" has no host",
        ),
        (
            "admin: { listen: 127.0.0.1:9000 }\n",
            "admin.listen",
            "admin: listen 127.0.0.1:9000 clashes with environment \"a\" (listen 127.0.0.1:9000); the admin API needs an address of its own",
        ),
        (
            "admin: { listen: '0.0.0.0:9000' }\n",
            "admin.listen",
            "clashes with environment \"a\"",
        ),
        (
            "admin: {}\n",
            "admin.listen",
            "admin: the required key listen is missing (for example listen: 127.0.0.1:8001)",
        ),
        (
            "admin: { listen: 127.0.0.1:8001, port: 1 }\n",
            "admin.port",
            "admin: unknown key \"port\"; the keys allowed there are listen",
        ),
        (
            "admin: 127.0.0.1:8001\n",
            "admin",
            "admin must be a mapping such as { listen: 127.0.0.1:8001 }, but it is the text",
        ),
    ];
    for (admin, field, needle) in cases {
        let found = problems(&format!("{}{admin}", env("")));
        assert_eq!(found.len(), 1, "{admin:?}: {found:#?}");
        assert_problem(&found, 4, &[needle]);
        assert_eq!(found[0].field.as_deref(), Some(field), "{admin:?}");
    }
}

#[test]
fn problems_in_a_file_name_their_field() {
    let text = "\
environments:
  - name: a
    listen: 127.0.0.1:8080
    timeouts: { connect: 5 }
    tls: { cert: c.pem, chain: x.pem }
  - name: a
    listen: 127.0.0.1:8080
    websocket: maybe
proxies:
  - name: p
    path: /p
    backend: http://b
    deploy: [nowhere, 7]
    methods: [GET, get]
  - name: p
    path: /q
    backend: ftp://b
    color: red
  - { name: q, path: /p, backend: http://c, deploy: [a] }
  - { name: r, path: /p, backend: http://c, deploy: [a] }
  - just text
admin: { listen: x }
extra: 1
";
    let found = problems(text);
    let mut fields: Vec<Option<&str>> = found.iter().map(|p| p.field.as_deref()).collect();
    fields.sort();
    let mut expected = vec![
        Some("environments[0].timeouts.connect"),
        Some("environments[0].tls.chain"),
        Some("environments[0].tls.key"),
        Some("environments[1]"),
        Some("environments[1].listen"),
        Some("environments[1].websocket"),
        Some("proxies[0].deploy[0]"),
        Some("proxies[0].deploy[1]"),
        Some("proxies[0].methods[1]"),
        Some("proxies[1]"),
        Some("proxies[1].backend"),
        Some("proxies[1].color"),
        Some("proxies[3].path"),
        Some("proxies[4]"),
        Some("admin.listen"),
        Some("extra"),
    ];
    expected.sort();
    assert_eq!(fields, expected, "{found:#?}");
    // Display is unchanged: the field is for programs, the message for people.
    assert!(
        found
            .iter()
            .all(|p| p.to_string().starts_with("/etc/strait/gateway.yaml:")),
        "{found:#?}"
    );
}

#[test]
fn document_level_problems_have_no_field() {
    for text in ["", "- a\n"] {
        let found = problems(text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].field, None, "{found:#?}");
    }
    let found = problems("proxies: []\n");
    assert_eq!(found[0].field.as_deref(), Some("environments"));
    let found = problems("environments: [\n");
    assert_eq!(found[0].field, None, "broken YAML: {found:#?}");
}

#[test]
fn websocket_keepalive_and_lifetime_are_optional_and_never_zero() {
    let config = parse(&env(
        "    timeouts: { websocket_ping: 30s, websocket_pong_timeout: 5s, websocket_max_lifetime: 1h }\n",
    ))
    .unwrap();
    let t = config.environments[0].timeouts;
    assert_eq!(t.websocket_ping, Some(Duration::from_secs(30)));
    assert_eq!(t.websocket_pong_timeout, Duration::from_secs(5));
    assert_eq!(t.websocket_max_lifetime, Some(Duration::from_secs(3600)));

    let off = parse(&env("    timeouts: { connect: 1s }\n")).unwrap();
    let t = off.environments[0].timeouts;
    assert_eq!((t.websocket_ping, t.websocket_max_lifetime), (None, None));
    assert_eq!(
        t.websocket_pong_timeout,
        Timeouts::default().websocket_pong_timeout
    );

    assert_eq!(t.send, Timeouts::default().send);

    let found = problems(&env(
        "    timeouts: { websocket_ping: 0s, websocket_pong_timeout: 0s, websocket_max_lifetime: soon, send: 0s }\n",
    ));
    assert_eq!(found.len(), 4, "{found:#?}");
    assert_problem(&found, 4, &["websocket_ping", "more than 0s"]);
    assert_problem(&found, 4, &["websocket_pong_timeout", "more than 0s"]);
    assert_problem(&found, 4, &["websocket_max_lifetime"]);
    assert_problem(&found, 4, &["send", "more than 0s"]);
}

#[test]
fn client_idle_defaults_to_30s_and_is_never_zero() {
    let set = parse(&env("    timeouts: { client_idle: 75s }\n")).unwrap();
    assert_eq!(
        set.environments[0].timeouts.client_idle,
        Duration::from_secs(75)
    );
    let unset = parse(&env("    timeouts: { connect: 1s }\n")).unwrap();
    assert_eq!(
        unset.environments[0].timeouts.client_idle,
        Duration::from_secs(30)
    );
    let found = problems(&env("    timeouts: { client_idle: 0s }\n"));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_problem(&found, 4, &["client_idle", "more than 0s"]);
}

#[test]
fn access_log_settings_are_checked() {
    let config = parse(&env("    access_log: { format: off }\n")).unwrap();
    assert_eq!(config.environments[0].access_log.format, None);
    let config = parse(&env("")).unwrap();
    assert_eq!(
        config.environments[0].access_log,
        AccessLogSettings::default()
    );
    assert_one_problem(
        &env("    access_log: { format: yaml }\n"),
        4,
        &[
            "access_log.format must be json, combined or off",
            "\"yaml\"",
        ],
    );
    assert_one_problem(&env("    access_log: { path: a.log }\n"), 4, &["path"]);
    assert_one_problem(
        &env("    access_log: { log_handshake: yes please }\n"),
        4,
        &["log_handshake must be true or false"],
    );
}

// ---- consumers, policies and ${VAR} interpolation ----

/// Variables the interpolation tests see instead of the process environment.
fn vars(name: &str) -> Option<String> {
    match name {
        "ALICE_KEY" => Some("alice-key".to_owned()),
        "ALICE_PW" => Some("alice-pw".to_owned()),
        _ => None,
    }
}

fn parse_with_vars(text: &str) -> Result<Config, ConfigError> {
    parse_str_with(text, Path::new(ORIGIN), &vars)
}

const CONSUMERS: &str = "\
environments:
  - name: a
    listen: 127.0.0.1:9000
    policies:
      - {type: api_key, query: api_key}
proxies:
  - name: p
    path: /p
    backend: http://b
    deploy: [a]
    policies:
      - {type: acl, allow: [admins]}
      - {type: basic_auth, realm: p, keep: true}
consumers:
  - name: alice
    groups: [admins, beta]
    credentials:
      api_keys: [\"${ALICE_KEY}\"]
      basic_auth: {username: alice, password: \"${ALICE_PW}\"}
      jwt_subject: alice@example.com
  - name: bob
    credentials:
      api_key_digests: [\"sha256:440ED3C8F64F49E986BAC593BF8994573908B53F67F0EDF23DB400D18673795C\"]
";

#[test]
fn consumers_and_policies_are_read_with_secrets_interpolated_and_hashed() {
    let config = parse_with_vars(CONSUMERS).unwrap_or_else(|e| panic!("{e}"));
    let alice = &config.consumers[0];
    assert_eq!(alice.name, "alice");
    assert_eq!(alice.groups, ["admins", "beta"]);
    assert_eq!(alice.api_keys, [KeyDigest::of(b"alice-key")]);
    assert_eq!(
        alice.basic_auth,
        Some(Login {
            username: "alice".into(),
            password: Password::Digest(KeyDigest::of(b"alice-pw")),
        })
    );
    assert_eq!(alice.jwt_subject.as_deref(), Some("alice@example.com"));
    let bob = &config.consumers[1];
    assert_eq!(bob.api_keys, [KeyDigest::of(b"alice-key-1")]);
    assert_eq!(bob.groups, Vec::<String>::new());
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("alice-key\"") && !debug.contains("alice-pw"),
        "{debug}"
    );

    let kinds = |policies: &[PolicyEntry]| -> Vec<&str> {
        policies.iter().map(|p| p.0.kind().name).collect()
    };
    assert_eq!(kinds(&config.environments[0].policies), ["api_key"]);
    assert_eq!(kinds(&config.proxies[0].policies), ["acl", "basic_auth"]);
}

#[test]
fn an_unset_variable_is_one_problem_on_its_line() {
    let text = CONSUMERS.replace("${ALICE_PW}", "${NOT_SET_ANYWHERE}");
    let found = match parse_with_vars(&text) {
        Err(ConfigError::Invalid(found)) => found,
        other => panic!("{other:?}"),
    };
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_problem(
        &found,
        19,
        &["environment variable NOT_SET_ANYWHERE is not set"],
    );
    assert_eq!(
        found[0].field.as_deref(),
        Some("consumers[0].credentials.basic_auth.password")
    );
    // Escaped, it is literal text.
    let text = CONSUMERS.replace("${ALICE_PW}", "$${ALICE_PW}");
    let config = parse_with_vars(&text).unwrap();
    assert_eq!(
        config.consumers[0].basic_auth.as_ref().unwrap().password,
        Password::Digest(KeyDigest::of(b"${ALICE_PW}"))
    );
}

#[test]
fn policy_problems_have_their_lines() {
    let text = env("    policies:
      - {type: api_kee}
      - {type: api_key, header: 'x y', extra: 1}
      - {type: acl}
      - {type: acl, allow: [a], deny: [b]}
      - {type: basic_auth, realm: 3}
      - {header: X}
      - api_key
");
    let found = problems(&text);
    assert_problem(
        &found,
        5,
        &[
            "unknown policy type \"api_kee\"",
            "api_key, basic_auth, acl",
        ],
    );
    assert_problem(
        &found,
        6,
        &[
            "unknown key \"extra\" in the api_key policy",
            "type, header, query, keep",
        ],
    );
    assert_problem(
        &found,
        6,
        &["environment \"a\": api_key policy: header \"x y\" is not a header name"],
    );
    assert_problem(&found, 7, &["acl policy: needs allow", "or deny"]);
    assert_problem(&found, 8, &["give either allow or deny, not both"]);
    assert_problem(&found, 9, &["realm must be text, but it is the number 3"]);
    assert_problem(&found, 10, &["policy #6: the required key type is missing"]);
    assert_problem(
        &found,
        11,
        &["policy #7 must be a mapping such as {type: api_key}"],
    );
    assert_eq!(found.len(), 8, "{found:#?}");
    let fields: Vec<_> = found.iter().filter_map(|p| p.field.as_deref()).collect();
    assert!(
        fields.contains(&"environments[0].policies[1].header"),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"environments[0].policies[3].deny"),
        "{fields:?}"
    );
}

#[test]
fn consumer_problems_have_their_lines_and_never_show_a_secret() {
    let text = env("consumers:
  - name: alice
    groups: [a, a]
    credentials:
      api_keys: [k1, '', 12345]
      api_key_digests: [sha256:abc]
      basic_auth: {username: 'a:b', password: p, password_hash: x}
  - name: bob
    credentials:
      api_keys: [k1]
      basic_auth: {username: carol}
      tokens: []
  - name: carol
    credentials:
      basic_auth: {username: dave, password_hash: hunter2}
  - name: alice
");
    let found = problems(&text);
    assert_problem(&found, 6, &["consumer \"alice\": groups lists \"a\" twice"]);
    assert_problem(&found, 8, &["credentials.api_keys[1] is empty"]);
    assert_problem(
        &found,
        8,
        &["credentials.api_keys[2] must be text; write it in quotes"],
    );
    assert_problem(
        &found,
        9,
        &["credentials.api_key_digests[0]: a SHA-256 digest has 64 hex digits"],
    );
    assert_problem(
        &found,
        10,
        &["a basic-auth username cannot contain a colon"],
    );
    assert_problem(&found, 10, &["give password or password_hash, not both"]);
    assert_problem(
        &found,
        13,
        &["consumer \"bob\": an API key here is also consumer \"alice\"'s"],
    );
    assert_problem(
        &found,
        14,
        &["credentials.basic_auth needs password", "or password_hash"],
    );
    assert_problem(&found, 15, &["unknown key \"tokens\" in credentials"]);
    assert_problem(
        &found,
        18,
        &["password_hash must be an argon2id PHC string"],
    );
    assert_problem(
        &found,
        19,
        &["consumer \"alice\" is defined twice (first at line 5)"],
    );
    assert_eq!(found.len(), 11, "{found:#?}");
    for problem in &found {
        assert!(!problem.message.contains("12345"), "{problem}");
        assert!(!problem.message.contains("hunter2"), "{problem}");
    }
}

#[test]
fn usernames_and_subjects_belong_to_one_consumer() {
    let text = env("consumers:
  - {name: a, credentials: {basic_auth: {username: u, password: p}, jwt_subject: s}}
  - {name: b, credentials: {basic_auth: {username: u, password: q}, jwt_subject: s}}
");
    let found = problems(&text);
    assert_problem(
        &found,
        6,
        &["the basic-auth username \"u\" already belongs to consumer \"a\""],
    );
    assert_problem(
        &found,
        6,
        &["the JWT subject \"s\" already belongs to consumer \"a\""],
    );
    assert_eq!(found.len(), 2, "{found:#?}");
}

#[test]
fn backend_source_addresses_are_ip_addresses_listed_once() {
    let config = parse(&env(
        "    backend_source_addresses: [127.0.0.2, '::1', 10.0.0.7]\n",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let want: Vec<std::net::IpAddr> = ["127.0.0.2", "::1", "10.0.0.7"]
        .iter()
        .map(|ip| ip.parse().unwrap())
        .collect();
    assert_eq!(config.environments[0].backend_source_addresses, want);
    assert!(
        parse(&env("")).unwrap().environments[0]
            .backend_source_addresses
            .is_empty()
    );

    let cases = [
        (
            "127.0.0.2:9000",
            "is not an IP address",
            "the port is chosen per connection",
        ),
        ("gateway.local", "is not an IP address", "such as 127.0.0.2"),
        (
            "0.0.0.0",
            "is not an address a connection can leave from",
            "interfaces",
        ),
        (
            "224.0.0.1",
            "is not an address a connection can leave from",
            "interfaces",
        ),
    ];
    for (written, reason, advice) in cases {
        let text = env(&format!(
            "    backend_source_addresses: [127.0.0.3, {written}]\n"
        ));
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{written:?}: {found:#?}");
        assert_problem(
            &found,
            4,
            &[
                "environment \"a\": backend_source_addresses",
                reason,
                advice,
            ],
        );
        assert_eq!(
            found[0].field.as_deref(),
            Some("environments[0].backend_source_addresses[1]")
        );
    }
    assert_one_problem(
        &env("    backend_source_addresses: [127.0.0.2, 127.0.0.2]\n"),
        4,
        &["lists \"127.0.0.2\" twice"],
    );
    assert_one_problem(
        &env("    backend_source_addresses: 127.0.0.2\n"),
        4,
        &[
            "backend_source_addresses",
            "a list of this machine's IP addresses",
        ],
    );
}
