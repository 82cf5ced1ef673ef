//! End-to-end tests of the `strait` binary's control plane, in child processes: the
//! stateful mode (`run --data`, `apply`, `dump`) surviving a restart, `apply --dry-run`,
//! the declarative mode reloading on SIGHUP and on file change, the read-only admin API in
//! declarative mode, and the refusal of an unprotected non-loopback admin address.
//!
//! Everything talks to 127.0.0.1 only, on ephemeral ports. Readiness is a log line read from
//! the child's stderr; every wait is bounded by [`WAIT`] and fails the test when it runs out.
//! Children are started with `kill_on_drop`, so a failing test never leaves a process behind.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use tokio::time::{Instant, sleep, timeout_at};

use common::{
    Ready, Running, Stream, WAIT, assert_not_listening, finish, free_addr, http, http_get, json,
    start_echo, start_ready, strait, temporary_folder, text, write, ws_connect, ws_round_trip,
};

/// How often a poll looks again (only where there is no event to wait for).
const POLL_EVERY: Duration = Duration::from_millis(50);

/// What `strait apply` prints when the plan is empty (crates/strait-cli/src/main.rs).
const NOTHING_TO_CHANGE: &str = "nothing to change: the gateway already matches";
/// What the control plane logs when a file it was asked to reload does not validate
/// (crates/strait/src/control/mod.rs, `Control::reload`).
const NOT_RELOADED: &str = "was not reloaded; the running configuration stays";

// ---------------------------------------------------------------------------------------
// Helpers: commands, the admin API, assertions
// ---------------------------------------------------------------------------------------

/// Exit status, stdout and stderr of a finished command, for failure messages.
fn show(output: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    )
}

/// Writes `contents` to `path` atomically (a temporary file renamed over it), so the
/// gateway's file watcher never reads a half-written file.
fn write_atomically(path: &Path, contents: &str) {
    let temporary = path.with_extension("yaml.partial");
    std::fs::write(&temporary, contents).expect("write the temporary configuration");
    std::fs::rename(&temporary, path).expect("rename the configuration into place");
}

/// `strait run --data DB --admin ADDR` on a fresh admin port; returns the child and the
/// admin address once the admin API listens.
async fn start_stateful(db: &Path) -> (Running, SocketAddr) {
    start_ready(
        "strait run --data",
        || {
            let admin = free_addr();
            (stateful(db, admin), admin)
        },
        |admin| vec![Ready::Admin(admin)],
    )
    .await
}

fn stateful(db: &Path, admin: SocketAddr) -> Running {
    Running::spawn(
        "strait run --data",
        strait()
            .args(["--log-level", "info", "run", "--data"])
            .arg(db)
            .arg("--admin")
            .arg(admin.to_string()),
    )
}

/// `strait apply FILE --admin URL [--dry-run]`.
async fn apply(file: &Path, admin: SocketAddr, dry_run: bool) -> Output {
    let mut command = strait();
    command
        .arg("apply")
        .arg(file)
        .args(["--admin", &format!("http://{admin}")]);
    if dry_run {
        command.arg("--dry-run");
    }
    finish(&mut command).await
}

/// `strait dump --admin URL`, asserted to succeed: the YAML it prints.
async fn dump(admin: SocketAddr) -> String {
    let output = finish(strait().args(["dump", "--admin", &format!("http://{admin}")])).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "strait dump: {}",
        show(&output)
    );
    text(&output.stdout)
}

/// Asserts that `strait apply` printed a plan (`plan (N step(s); VERB apply):`) listing
/// exactly `steps`, and exited 0.
fn assert_plan(output: &Output, verb: &str, steps: &[&str]) {
    let context = show(output);
    assert_eq!(output.status.code(), Some(0), "strait apply: {context}");
    let stdout = text(&output.stdout);
    let header = format!("plan ({} step(s); {verb} apply):", steps.len());
    assert!(
        stdout.lines().next() == Some(header.as_str()),
        "the plan's header {header:?} first: {context}"
    );
    let listed: Vec<&str> = stdout.lines().skip(1).map(str::trim).collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort_unstable();
    let mut expected: Vec<&str> = steps.to_vec();
    expected.sort_unstable();
    assert_eq!(listed_sorted, expected, "the plan's steps: {context}");
    // Objects before the deployments that reference them.
    let position = |step: &str| listed.iter().position(|s| *s == step);
    for deploy in steps.iter().filter(|s| s.starts_with("deploy ")) {
        for create in steps.iter().filter(|s| s.starts_with("create ")) {
            assert!(
                position(create) < position(deploy),
                "{create:?} comes before {deploy:?}: {context}"
            );
        }
    }
}

/// Asserts that `strait apply` found nothing to change and exited 0.
fn assert_nothing_to_change(output: &Output, file: &Path) {
    let context = show(output);
    assert_eq!(output.status.code(), Some(0), "strait apply: {context}");
    assert_eq!(
        text(&output.stdout).trim_end(),
        format!("{NOTHING_TO_CHANGE} {}", file.display()),
        "an empty plan: {context}"
    );
}

/// Polls `check` until it returns `Ok`, for at most [`WAIT`]; fails the test with the last
/// `Err` otherwise. Only for states that no event announces to an outside observer.
async fn poll_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + WAIT;
    let mut last = String::from("not checked yet");
    loop {
        match timeout_at(deadline, check()).await {
            Ok(Ok(())) => return,
            Ok(Err(observed)) => last = observed,
            Err(_) => break,
        }
        if Instant::now() + POLL_EVERY >= deadline {
            break;
        }
        sleep(POLL_EVERY).await;
    }
    panic!("{what}: not within {WAIT:?}; last seen: {last}");
}

/// `Ok` when GET `target` on `addr` answers `status`.
async fn answers(addr: SocketAddr, target: &str, status: u16) -> Result<(), String> {
    let (got, body) = http(addr, "GET", target, None).await;
    if got == status {
        Ok(())
    } else {
        Err(format!("GET {target} answered {got}: {}", text(&body)))
    }
}

/// GET `target` through the gateway reaches the echo, which saw `backend_path`.
async fn assert_proxied(addr: SocketAddr, target: &str, backend_path: &str) {
    let (status, body) = http_get(addr, target).await;
    assert_eq!(
        status,
        200,
        "GET {target} through the gateway; body: {}",
        text(&body)
    );
    let echoed = json(&body);
    assert_eq!(echoed["method"], "GET", "{echoed}");
    assert_eq!(echoed["path"], backend_path, "{echoed}");
}

/// GET `target` answers the gateway's own 404 `no_route`.
async fn assert_no_route(addr: SocketAddr, target: &str) {
    let (status, body) = http_get(addr, target).await;
    assert_eq!(status, 404, "GET {target}; body: {}", text(&body));
    let error = json(&body);
    assert_eq!(error["error"], "no_route", "{error}");
}

// ---------------------------------------------------------------------------------------
// Configuration files
// ---------------------------------------------------------------------------------------

/// The plan of applying [`api_yaml`] to an empty gateway.
const API_PLAN: [&str; 3] = [
    "create environment test",
    "create proxy api",
    "deploy api to test",
];

/// One environment `test` on `listen` (WebSocket on) and one proxy `api`:
/// `/api/*` → `http://ECHO/svc`, deployed to it.
fn api_yaml(listen: SocketAddr, echo: SocketAddr) -> String {
    format!(
        "environments:\n  - name: test\n    listen: {listen}\n    websocket: true\n\
         proxies:\n  - name: api\n    path: /api/*\n    backend: http://{echo}/svc\n    deploy: [test]\n"
    )
}

// ---------------------------------------------------------------------------------------
// Stateful mode
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn stateful_state_survives_a_restart() {
    let (mut echo, echo_addr) = start_echo().await;
    let dir = temporary_folder();
    let db = dir.path().join("strait.db");
    let env_addr = free_addr();
    let file = write(dir.path(), "gateway.yaml", &api_yaml(env_addr, echo_addr));

    let (mut gateway, admin) = start_stateful(&db).await;
    let output = apply(&file, admin, false).await;
    assert_plan(&output, "did", &API_PLAN);
    // `apply` returns once the change is live: the very next request is routed by it.
    assert_proxied(env_addr, "/api/x", "/svc/x").await;

    gateway.stop().await;

    // The same database and admin port: everything comes back without an apply.
    let mut gateway = stateful(&db, admin);
    gateway
        .expect_ready(&[Ready::Environment(env_addr), Ready::Admin(admin)])
        .await;
    assert_proxied(env_addr, "/api/x", "/svc/x").await;

    let dumped = dump(admin).await;
    let dumped_file = write(dir.path(), "dumped.yaml", &dumped);
    let validated = finish(strait().arg("validate").arg(&dumped_file)).await;
    assert_eq!(
        validated.status.code(),
        Some(0),
        "the dump validates; dump:\n{dumped}\n{}",
        show(&validated)
    );
    assert!(
        text(&validated.stdout).contains("(1 environment(s), 1 proxy(ies))"),
        "one environment and one proxy in the dump:\n{dumped}\n{}",
        show(&validated)
    );
    for fragment in [
        "name: test".to_owned(),
        env_addr.to_string(),
        "name: api".to_owned(),
        "/api/*".to_owned(),
        format!("http://{echo_addr}/svc"),
    ] {
        assert!(
            dumped.contains(&fragment),
            "{fragment:?} in the dump:\n{dumped}"
        );
    }
    // The dump describes exactly what runs: applying it changes nothing.
    assert_nothing_to_change(&apply(&dumped_file, admin, false).await, &dumped_file);

    gateway.stop().await;
    echo.stop().await;
}

#[tokio::test]
async fn apply_dry_run_changes_nothing_and_apply_then_dump_round_trips() {
    let (mut echo, echo_addr) = start_echo().await;
    let dir = temporary_folder();
    let db = dir.path().join("strait.db");
    let env_addr = free_addr();
    let file = write(dir.path(), "gateway.yaml", &api_yaml(env_addr, echo_addr));

    let (mut gateway, admin) = start_stateful(&db).await;

    // A dry run prints the plan and changes nothing.
    assert_plan(&apply(&file, admin, true).await, "would", &API_PLAN);
    let empty = dump(admin).await;
    assert!(
        !empty.contains("/api/*") && !empty.contains("name: api"),
        "no proxy in the dump after a dry run:\n{empty}"
    );
    assert!(
        !empty.contains(&env_addr.to_string()),
        "no environment in the dump after a dry run:\n{empty}"
    );
    let (status, body) = http_get(admin, "/proxies").await;
    assert_eq!(status, 200, "GET /proxies: {}", text(&body));
    assert_eq!(
        json(&body)["proxies"],
        serde_json::json!([]),
        "no proxies after a dry run"
    );
    assert_not_listening(env_addr, "the dry run created no environment").await;
    // A second dry run still sees the whole plan.
    assert_plan(&apply(&file, admin, true).await, "would", &API_PLAN);

    // The real thing.
    assert_plan(&apply(&file, admin, false).await, "did", &API_PLAN);
    assert_proxied(env_addr, "/api/x", "/svc/x").await;
    let (status, body) = http_get(admin, "/proxies").await;
    assert_eq!(status, 200, "GET /proxies: {}", text(&body));
    let proxies = json(&body);
    assert_eq!(proxies["proxies"][0]["name"], "api", "{proxies}");
    assert_eq!(proxies["proxies"][0]["path"], "/api/*", "{proxies}");

    // The dump round-trips: applying it, or the original again, changes nothing.
    let dumped = dump(admin).await;
    assert!(
        dumped.contains("/api/*") && dumped.contains(&env_addr.to_string()),
        "the proxy and the environment in the dump:\n{dumped}"
    );
    let dumped_file = write(dir.path(), "dumped.yaml", &dumped);
    assert_nothing_to_change(&apply(&dumped_file, admin, false).await, &dumped_file);
    assert_nothing_to_change(&apply(&file, admin, false).await, &file);
    assert_eq!(
        dump(admin).await,
        dumped,
        "applying an unchanged file leaves the state as it was"
    );
    assert_proxied(env_addr, "/api/y", "/svc/y").await;

    gateway.stop().await;
    echo.stop().await;
}

/// [`api_yaml`] with the proxy's backend a named upstream `pool` on the echo.
fn upstream_yaml(listen: SocketAddr, echo: SocketAddr) -> String {
    format!(
        "environments:\n  - name: test\n    listen: {listen}\n\
         upstreams:\n  - name: pool\n    targets: [http://{echo}/svc]\n    retries: 1\n\
         proxies:\n  - name: api\n    path: /api/*\n    backend: {{ upstream: pool }}\n    deploy: [test]\n"
    )
}

#[tokio::test]
async fn apply_sends_named_upstreams_and_dump_round_trips_them() {
    let (mut echo, echo_addr) = start_echo().await;
    let dir = temporary_folder();
    let db = dir.path().join("strait.db");
    let env_addr = free_addr();
    let file = write(
        dir.path(),
        "gateway.yaml",
        &upstream_yaml(env_addr, echo_addr),
    );

    let (mut gateway, admin) = start_stateful(&db).await;
    let output = apply(&file, admin, false).await;
    let steps = [
        "create environment test",
        "create upstream pool",
        "create proxy api",
        "deploy api to test",
    ];
    assert_plan(&output, "did", &steps);
    let stdout = text(&output.stdout);
    let upstream = stdout.find("create upstream pool");
    assert!(
        upstream.is_some() && upstream < stdout.find("create proxy api"),
        "the upstream before the proxy using it: {stdout}"
    );
    assert_proxied(env_addr, "/api/x", "/svc/x").await;

    // Sent as an upstream, not copied into the proxy.
    let (status, body) = http_get(admin, "/upstreams/pool").await;
    assert_eq!(status, 200, "GET /upstreams/pool: {}", text(&body));
    assert_eq!(
        json(&body),
        serde_json::json!({"name": "pool", "targets": [format!("http://{echo_addr}/svc")], "retries": 1})
    );
    let (status, body) = http_get(admin, "/proxies/api").await;
    assert_eq!(status, 200, "GET /proxies/api: {}", text(&body));
    assert_eq!(
        json(&body)["backend"],
        serde_json::json!({"upstream": "pool"})
    );

    let dumped = dump(admin).await;
    assert!(
        dumped.contains("upstreams:") && dumped.contains("name: pool"),
        "the upstream in the dump:\n{dumped}"
    );
    assert!(
        dumped.contains("backend: {upstream: pool}"),
        "the proxy names its upstream in the dump:\n{dumped}"
    );
    let dumped_file = write(dir.path(), "dumped.yaml", &dumped);
    assert_nothing_to_change(&apply(&dumped_file, admin, false).await, &dumped_file);
    assert_nothing_to_change(&apply(&file, admin, false).await, &file);
    assert_eq!(dump(admin).await, dumped, "nothing changed");

    gateway.stop().await;
    echo.stop().await;
}

// ---------------------------------------------------------------------------------------
// Declarative mode
// ---------------------------------------------------------------------------------------

/// Environment `test` on `listen` (WebSocket on, undeploy grace `never`) and the proxies
/// given as `(name, path, backend path)`, each `→ http://ECHO/BACKEND_PATH`.
fn declarative_yaml(
    listen: SocketAddr,
    echo: SocketAddr,
    proxies: &[(&str, &str, &str)],
) -> String {
    let mut yaml = format!(
        "environments:\n  - name: test\n    listen: {listen}\n    websocket: true\n    undeploy_grace: never\n    shutdown_grace: 5s\nproxies:\n"
    );
    for (name, path, backend) in proxies {
        yaml.push_str(&format!(
            "  - name: {name}\n    path: {path}\n    backend: http://{echo}{backend}\n    deploy: [test]\n"
        ));
    }
    yaml
}

#[tokio::test]
async fn declarative_run_reloads_on_sighup_and_on_file_change() {
    let (mut echo, echo_addr) = start_echo().await;
    let dir = temporary_folder();
    let config = dir.path().join("gateway.yaml");
    let a = ("a", "/a/*", "/alpha");
    let b = ("b", "/b/*", "/beta");

    let (mut gateway, addr) = start_ready(
        "strait run --config",
        || {
            let addr = free_addr();
            write_atomically(&config, &declarative_yaml(addr, echo_addr, &[a]));
            let child = Running::spawn(
                "strait run --config",
                strait()
                    .args(["--log-level", "info", "run", "--config"])
                    .arg(&config),
            );
            (child, addr)
        },
        |addr| vec![Ready::Environment(addr)],
    )
    .await;

    assert_proxied(addr, "/a/x", "/alpha/x").await;
    assert_no_route(addr, "/b/x").await;
    // A session opened before any change; a reload must not drop it.
    let mut ws = ws_connect(&format!("ws://{addr}/a/chat")).await;
    ws_round_trip(&mut ws, "before any reload").await;

    // Add B and send SIGHUP. Nothing outside the process announces when the new route
    // table is live, so poll (bounded) until B answers.
    write_atomically(&config, &declarative_yaml(addr, echo_addr, &[a, b]));
    gateway.signal("HUP").await;
    poll_until("GET /b/x answers 200 after SIGHUP", || {
        answers(addr, "/b/x", 200)
    })
    .await;
    assert_proxied(addr, "/b/x", "/beta/x").await;
    assert_proxied(addr, "/a/x", "/alpha/x").await;
    ws_round_trip(&mut ws, "after the reload that added B").await;

    // Remove A without a signal: the file watcher looks once a second, and nothing outside
    // the process announces the reload, so poll (bounded) until A is gone.
    write_atomically(&config, &declarative_yaml(addr, echo_addr, &[b]));
    poll_until("GET /a/x answers 404 after the file changed", || {
        answers(addr, "/a/x", 404)
    })
    .await;
    assert_no_route(addr, "/a/x").await;
    assert_proxied(addr, "/b/x", "/beta/x").await;
    // `undeploy_grace: never`: the undeployed proxy's open session carries on.
    ws_round_trip(&mut ws, "after A was undeployed").await;

    // An invalid file (`*` not last) is refused, logged, and changes nothing.
    let mark = gateway.mark();
    assert!(
        !gateway.saw(NOT_RELOADED),
        "no refused reload so far; output:\n{}",
        gateway.transcript()
    );
    let mut invalid = declarative_yaml(addr, echo_addr, &[b]);
    invalid.push_str(&format!(
        "  - name: c\n    path: /c/*/x\n    backend: http://{echo_addr}/gamma\n    deploy: [test]\n"
    ));
    write_atomically(&config, &invalid);
    gateway.signal("HUP").await;
    let file_name = config.display().to_string();
    let refused = gateway
        .expect_line_after(
            mark,
            "a log line saying the file was not reloaded",
            |stream, line| stream == Stream::Stderr && line.contains(NOT_RELOADED),
        )
        .await;
    assert!(
        refused.contains(&file_name),
        "the log names the file {file_name}: {refused:?}"
    );
    gateway
        .expect_line_after(mark, "the problem (`/c/*/x`) in the log", |stream, line| {
            stream == Stream::Stderr && line.contains("\"/c/*/x\"") && line.contains("`*`")
        })
        .await;
    assert_proxied(addr, "/b/x", "/beta/x").await;
    assert_no_route(addr, "/c/x").await;
    assert_no_route(addr, "/a/x").await;
    ws_round_trip(&mut ws, "after a refused reload").await;

    drop(ws);
    gateway.stop().await;
    echo.stop().await;
}

#[tokio::test]
async fn admin_api_is_read_only_in_declarative_mode() {
    let dir = temporary_folder();
    let config = dir.path().join("gateway.yaml");
    // The backend is never contacted.
    let (mut gateway, (_, admin)) = start_ready(
        "strait run --config --admin",
        || {
            let (listen, admin) = (free_addr(), free_addr());
            let yaml = format!(
                "environments:\n  - name: test\n    listen: {listen}\nproxies:\n  - name: files\n    path: /files/*\n    backend: http://127.0.0.1:9/files\n    deploy: [test]\n"
            );
            write_atomically(&config, &yaml);
            let child = Running::spawn(
                "strait run --config --admin",
                strait()
                    .args(["--log-level", "info", "run", "--config"])
                    .arg(&config)
                    .args(["--admin", &admin.to_string()]),
            );
            (child, (listen, admin))
        },
        |(listen, admin)| vec![Ready::Environment(listen), Ready::Admin(admin)],
    )
    .await;

    let body = r#"{"path": "/x/*", "backend": "http://127.0.0.1:9/x"}"#;
    let (status, answer) = http(admin, "PUT", "/proxies/x", Some(body)).await;
    assert_eq!(status, 405, "PUT /proxies/x: {}", text(&answer));
    let error = json(&answer);
    assert_eq!(error["error"], "read_only", "{error}");

    let (status, answer) = http_get(admin, "/proxies").await;
    assert_eq!(status, 200, "GET /proxies: {}", text(&answer));
    let listed = json(&answer);
    let proxies = listed["proxies"]
        .as_array()
        .unwrap_or_else(|| panic!("a `proxies` list: {listed}"));
    assert_eq!(proxies.len(), 1, "only the file's proxy: {listed}");
    assert_eq!(proxies[0]["name"], "files", "{listed}");
    assert_eq!(proxies[0]["path"], "/files/*", "{listed}");

    // The refused write left nothing behind.
    let (status, answer) = http_get(admin, "/proxies/x").await;
    assert_eq!(status, 404, "GET /proxies/x: {}", text(&answer));

    gateway.stop().await;
}

#[tokio::test]
async fn admin_refuses_a_non_loopback_address_without_a_token() {
    let dir = temporary_folder();
    let listen = free_addr();
    let admin_port = free_addr().port();
    let config = write(
        dir.path(),
        "gateway.yaml",
        &format!(
            "environments:\n  - name: test\n    listen: {listen}\nproxies:\n  - name: files\n    path: /files/*\n    backend: http://127.0.0.1:9/files\n    deploy: [test]\n"
        ),
    );
    let admin = format!("0.0.0.0:{admin_port}");

    let output = finish(
        strait()
            .env_remove("STRAIT_ADMIN_TOKEN")
            .args(["--log-level", "info", "run", "--config"])
            .arg(&config)
            .args(["--admin", &admin]),
    )
    .await;
    let context = show(&output);
    assert_eq!(output.status.code(), Some(1), "exit 1: {context}");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("refusing to serve the admin API on {admin}")),
        "says it refuses, and where: {context}"
    );
    assert!(
        stderr.contains("non-loopback") && stderr.contains("STRAIT_ADMIN_TOKEN"),
        "says why and what to set: {context}"
    );
    assert!(
        !stderr.contains("admin API listening"),
        "the admin API never listened: {context}"
    );
    // A start that is refused binds nothing, like a start with an invalid file: the data
    // plane must not accept connections for the moment before the process exits 1.
    assert!(
        !stderr.contains("listening on"),
        "the refused process never listened anywhere (not even on the environment's {listen}): {context}"
    );
    // Checked over loopback only: 0.0.0.0 would have included 127.0.0.1.
    let loopback = SocketAddr::from(([127, 0, 0, 1], admin_port));
    assert_not_listening(loopback, "the admin API was refused").await;
    assert_not_listening(listen, "the process exited").await;
}
