//! End-to-end tests of the `strait` binary: `validate`, `run`, `echo` and `demo` as a user
//! runs them, in child processes.
//!
//! Readiness is the "listening on" log line read from the child's stderr; every wait is
//! bounded by [`WAIT`](common::WAIT) and fails the test when it runs out. Children are
//! started with `kill_on_drop`, so a failing test never leaves a process behind.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use common::{
    Running, Stream, assert_not_listening, finish, free_addr, http_get, json, start_echo,
    start_on_free_port, strait, temporary_folder, text, write, ws_connect, ws_next, ws_round_trip,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `strait validate NAME`, run inside the fixtures folder so messages name `NAME` as given.
async fn validate_fixture(name: &str) -> Output {
    finish(strait().current_dir(fixtures()).args(["validate", name])).await
}

// ---------------------------------------------------------------------------------------
// strait validate
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn validate_accepts_a_valid_file() {
    let output = validate_fixture("valid.yaml").await;
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("valid.yaml:") && l.contains("configuration is valid")),
        "a line saying valid.yaml is valid; stdout:\n{stdout}"
    );
    assert!(
        stdout.contains("2 environment(s)") && stdout.contains("2 proxy(ies)"),
        "the counts; stdout:\n{stdout}"
    );
    assert!(
        !stderr.contains("problem"),
        "no problems reported; stderr:\n{stderr}"
    );
}

/// One expected problem: its line and fragments of its sentence.
struct Expected {
    line: u64,
    says: &'static [&'static str],
}

/// Asserts a failed validation: exit 1, nothing on stdout, exactly the expected problems as
/// `file:line:column: sentence` lines, and the count.
fn assert_problems(file: &str, output: &Output, expected: &[Expected]) {
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    let context = format!("{file}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(output.status.code(), Some(1), "exit code 1 for {context}");
    assert!(stdout.is_empty(), "nothing on stdout for {context}");

    // Every problem line is `file:line:column: message`, with numbers.
    let problems: Vec<(u64, u64, &str)> = stderr
        .lines()
        .filter_map(|line| line.strip_prefix(file)?.strip_prefix(':'))
        .map(|rest| {
            let mut parts = rest.splitn(3, ':');
            let line = parts.next().and_then(|n| n.parse().ok());
            let column = parts.next().and_then(|n| n.parse().ok());
            let message = parts.next().and_then(|m| m.strip_prefix(' '));
            match (line, column, message) {
                (Some(line), Some(column), Some(message)) => (line, column, message),
                _ => panic!("{file}{rest:?} is not file:line:column: message, in {context}"),
            }
        })
        .collect();
    assert_eq!(
        problems.len(),
        expected.len(),
        "the number of problems for {context}"
    );
    for want in expected {
        let found = problems.iter().find(|(line, column, message)| {
            *line == want.line && *column >= 1 && want.says.iter().all(|s| message.contains(s))
        });
        assert!(
            found.is_some(),
            "a problem at {file}:{}:<column> saying {:?}, in {context}",
            want.line,
            want.says
        );
    }
    let count = format!("{} problem(s) found; nothing was started.", expected.len());
    assert!(stderr.contains(&count), "{count:?} in {context}");
}

#[tokio::test]
async fn validate_reports_each_kind_of_problem_with_its_location() {
    let cases: &[(&str, &[Expected])] = &[
        (
            "unknown_key_top.yaml",
            &[Expected {
                line: 4,
                says: &[
                    "unknown key \"proxy\"",
                    "top level",
                    "environments, proxies",
                ],
            }],
        ),
        (
            "unknown_key_nested.yaml",
            &[Expected {
                line: 6,
                says: &["unknown key \"idle\"", "in timeouts", "websocket_idle"],
            }],
        ),
        (
            "wildcard_not_last.yaml",
            &[Expected {
                line: 6,
                says: &["\"/api/*/users\"", "`*`", "last segment"],
            }],
        ),
        (
            "duplicate_path.yaml",
            &[Expected {
                line: 10,
                says: &[
                    "proxy \"accounts\"",
                    "\"/api/*\"",
                    "already used by proxy \"users\"",
                    "environment \"production\"",
                ],
            }],
        ),
        (
            "deploy_missing_env.yaml",
            &[Expected {
                line: 8,
                says: &["environment \"staging\"", "does not exist", "production"],
            }],
        ),
        (
            "backend_ws.yaml",
            &[Expected {
                line: 8,
                says: &["ws://localhost:9000/chat", "only http and https"],
            }],
        ),
        (
            "backend_ftp.yaml",
            &[Expected {
                line: 7,
                says: &["ftp://files.internal", "only http and https"],
            }],
        ),
        (
            "duration_no_unit.yaml",
            &[Expected {
                line: 5,
                says: &["timeouts.connect", "\"5\"", "no unit"],
            }],
        ),
        (
            "duration_fraction.yaml",
            &[Expected {
                line: 4,
                says: &["shutdown_grace", "\"1.5s\"", "fraction", "1500ms"],
            }],
        ),
        (
            "duration_unknown_unit.yaml",
            &[Expected {
                line: 5,
                says: &["timeouts.response", "\"10 parsecs\""],
            }],
        ),
        (
            "listen_clash.yaml",
            &[Expected {
                line: 5,
                says: &[
                    "environment \"staging\"",
                    "127.0.0.1:8080",
                    "clashes with environment \"production\"",
                ],
            }],
        ),
        (
            "missing_required.yaml",
            &[Expected {
                line: 5,
                says: &["proxy \"users\"", "required key backend is missing"],
            }],
        ),
        (
            "invalid_method.yaml",
            &[Expected {
                line: 9,
                says: &["\"G ET\" is not an HTTP method", "capital letters"],
            }],
        ),
        (
            "three_errors.yaml",
            &[
                Expected {
                    line: 5,
                    says: &["environment \"staging\"", "clashes with"],
                },
                Expected {
                    line: 8,
                    says: &["\"/api/*/v1\"", "`*`"],
                },
                Expected {
                    line: 14,
                    says: &["environment \"qa\"", "does not exist"],
                },
            ],
        ),
    ];
    // All at once: each is a separate process, so this stays fast.
    let outputs =
        futures_util::future::join_all(cases.iter().map(|(file, _)| validate_fixture(file))).await;
    for ((file, expected), output) in cases.iter().zip(&outputs) {
        assert_problems(file, output, expected);
    }
}

#[tokio::test]
async fn validate_lists_problems_in_file_order() {
    let output = validate_fixture("three_errors.yaml").await;
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("three_errors.yaml:"))
        .collect();
    let order: Vec<&str> = lines.iter().filter_map(|l| l.split(':').nth(1)).collect();
    assert_eq!(order, ["5", "8", "14"], "stderr:\n{stderr}");
}

/// `10 parsecs` is not "a space too many": `10parsecs` is just as wrong. The message should
/// say the unit is unknown and list the units, as it does for `10parsecs`.
#[tokio::test]
async fn validate_does_not_suggest_an_invalid_duration() {
    let output = validate_fixture("duration_unknown_unit.yaml").await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        !stderr.contains("as in 10parsecs"),
        "the suggested fix must itself be valid; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("ms, s, m, h or d"),
        "the message lists the units; stderr:\n{stderr}"
    );
}

#[tokio::test]
async fn validate_reports_a_missing_file() {
    let output = validate_fixture("no_such_file.yaml").await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains("cannot read no_such_file.yaml"),
        "names the file; stderr:\n{stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("no such file"),
        "says why; stderr:\n{stderr}"
    );
    assert!(output.stdout.is_empty(), "nothing on stdout");
}

// ---------------------------------------------------------------------------------------
// strait run
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn run_with_an_invalid_file_lists_the_problems_and_listens_nowhere() {
    let dir = temporary_folder();
    let addr = free_addr();
    // A valid environment on a free port, and two problems elsewhere.
    let yaml = format!(
        "environments:\n  - name: test\n    listen: {addr}\n    websocket: true\nproxies:\n  - name: echo\n    path: /api/*/x\n    backend: http://127.0.0.1:9/\n    deploy: [test, qa]\n"
    );
    write(dir.path(), "gw.yaml", &yaml);

    let mut run = strait();
    run.current_dir(dir.path())
        .args(["run", "--config", "gw.yaml"]);
    let mut validate = strait();
    validate
        .current_dir(dir.path())
        .args(["validate", "gw.yaml"]);
    let (run, validate) = tokio::join!(finish(&mut run), finish(&mut validate));

    assert_problems(
        "gw.yaml",
        &run,
        &[
            Expected {
                line: 7,
                says: &["\"/api/*/x\"", "`*`"],
            },
            Expected {
                line: 9,
                says: &["environment \"qa\"", "does not exist"],
            },
        ],
    );
    assert_eq!(
        text(&run.stderr),
        text(&validate.stderr),
        "run prints the same problem list as validate"
    );
    assert_not_listening(addr, "the configuration was refused").await;
}

#[tokio::test]
async fn run_reports_a_missing_file() {
    let output = finish(strait().args(["run", "--config", "/nonexistent/strait.yaml"])).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains("cannot read /nonexistent/strait.yaml"),
        "names the file; stderr:\n{stderr}"
    );
}

/// Writes to `path` a gateway on `addr` (WebSocket on) whose `/api/*` goes to the echo's
/// `/echo`.
fn write_echo_config(path: &Path, addr: SocketAddr, echo_addr: SocketAddr) {
    let yaml = format!(
        "environments:\n  - name: test\n    listen: {addr}\n    websocket: true\n    shutdown_grace: 5s\nproxies:\n  - name: echo\n    path: /api/*\n    backend: http://{echo_addr}/echo\n    deploy: [test]\n"
    );
    std::fs::write(path, yaml).expect("write the configuration");
}

/// `strait run` on a free port in front of `backend` (the configuration of
/// [`write_echo_config`], in a folder returned to outlive it), started by `spawn` with the
/// configuration's path.
async fn run_in_front_of(
    backend: SocketAddr,
    mut spawn: impl FnMut(&Path) -> Running,
) -> (tempfile::TempDir, Running, SocketAddr) {
    let dir = temporary_folder();
    let config = dir.path().join("gateway.yaml");
    let (gateway, addr) = start_on_free_port("strait run", |addr| {
        write_echo_config(&config, addr, backend);
        spawn(&config)
    })
    .await;
    (dir, gateway, addr)
}

#[tokio::test]
async fn run_proxies_http_and_websocket_to_the_echo_and_shuts_down_on_sigterm() {
    let (mut echo, echo_addr) = start_echo().await;

    let (_dir, mut gateway, addr) = run_in_front_of(echo_addr, |config| {
        Running::spawn(
            "strait run",
            strait()
                .arg("--log-level")
                .arg("info")
                .arg("run")
                .arg("--config")
                .arg(config),
        )
    })
    .await;

    // HTTP reaches the echo, with the proxy's prefix replaced by the backend path.
    let (status, body) = http_get(addr, "/api/hello?name=strait").await;
    assert_eq!(status, 200, "body: {}", String::from_utf8_lossy(&body));
    let echoed = json(&body);
    assert_eq!(echoed["method"], "GET", "{echoed}");
    assert_eq!(echoed["path"], "/echo/hello", "{echoed}");
    assert_eq!(echoed["query"], "name=strait", "{echoed}");

    // A WebSocket message makes the round trip.
    let mut ws = ws_connect(&format!("ws://{addr}/api/chat")).await;
    ws_round_trip(&mut ws, "hello through strait").await;

    // SIGTERM: the open session is closed with 1001 and the gateway exits 0.
    gateway.signal("TERM").await;
    match ws_next(&mut ws).await {
        Some(Message::Close(Some(frame))) => {
            assert_eq!(frame.code, CloseCode::Away, "close code 1001: {frame:?}")
        }
        other => panic!("expected a close frame with 1001, got {other:?}"),
    }
    // Let the client answer the close and see the end of the stream.
    while ws_next(&mut ws).await.is_some() {}
    let status = gateway.exit().await;
    assert_eq!(
        status.code(),
        Some(0),
        "strait run exits 0 on SIGTERM ({status}); output:\n{}",
        gateway.transcript()
    );

    echo.stop().await;
}

/// A backend whose response body breaks off after its head: the client's answer is cut, and
/// the gateway's log says why (the access log keeps the status that went out).
#[tokio::test]
async fn a_backend_body_that_breaks_off_is_logged_as_a_warning() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let backend = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut head = [0u8; 4096];
            let _ = tcp.read(&mut head).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n")
                .await;
        }
    });
    let (_dir, mut gateway, addr) = run_in_front_of(backend, |config| {
        Running::spawn("strait run", strait().args(["run", "--config"]).arg(config))
    })
    .await;
    // Whatever reaches the client (hyper may not have written the head yet), it ends.
    let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
    client
        .write_all(format!("GET /api/x HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut got = Vec::new();
    let read = tokio::time::timeout(common::WAIT, client.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the cut response ends: {:?}", text(&got));
    let line = gateway
        .expect_line("the broken body's warning", |stream, line| {
            stream == Stream::Stderr && line.contains("response body broke off")
        })
        .await;
    assert!(
        line.contains("WARN") && line.contains("proxy=\"echo\""),
        "{line}"
    );
    gateway.stop().await;
}

/// At its descriptor limit the gateway turns new connections away — a JSON 502 when it has
/// no descriptor left for the backend, a log line when it cannot even accept — keeps the
/// sessions it holds, and serves again once some close. It never crashes.
#[tokio::test]
async fn at_the_descriptor_limit_new_connections_are_refused_and_nothing_is_lost() {
    const LIMIT: u32 = 128;
    let (mut echo, echo_addr) = start_echo().await;
    let (_dir, mut gateway, addr) = run_in_front_of(echo_addr, |config| {
        // The shell lowers the soft and the hard limit, so the gateway cannot raise its own;
        // `exec` keeps the process (and `kill_on_drop`) the gateway's.
        let plain = strait();
        let plain = plain.as_std();
        let mut limited = tokio::process::Command::new("bash");
        limited
            .arg("-c")
            .arg(format!("ulimit -n {LIMIT} && exec \"$@\""))
            .arg("bash")
            .arg(plain.get_program())
            .args(["--log-level", "info", "run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .env_remove("STRAIT_ADMIN_TOKEN")
            .envs(plain.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        Running::spawn("strait run", &mut limited)
    })
    .await;
    assert!(
        gateway.saw(&format!("file-descriptor limit {LIMIT}")),
        "the limit is reported at start-up; output:\n{}",
        gateway.transcript()
    );

    // Two descriptors per session: the limit is reached well within LIMIT attempts.
    let url = format!("ws://{addr}/api/chat");
    let mut sessions = Vec::new();
    let refused = loop {
        assert!(
            sessions.len() < LIMIT as usize,
            "{} sessions under a limit of {LIMIT}",
            sessions.len()
        );
        let attempt = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tokio_tungstenite::connect_async(&url),
        )
        .await;
        match attempt {
            Ok(Ok((ws, _))) => sessions.push(ws),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
                break format!("answered {}", response.status());
            }
            Ok(Err(error)) => panic!("unexpected handshake failure: {error}"),
            Err(_) => break "not accepted".to_owned(),
        }
    };
    assert!(!sessions.is_empty(), "some sessions fit ({refused})");
    if refused == "not accepted" {
        gateway
            .expect_line("the refusal logged", |_, line| {
                line.contains("cannot accept a new connection")
            })
            .await;
    } else {
        assert_eq!(
            refused,
            "answered 502 Bad Gateway",
            "{}",
            gateway.transcript()
        );
    }

    // Nothing held was lost; closing some makes room again.
    for (i, ws) in sessions.iter_mut().enumerate() {
        ws_round_trip(ws, &format!("still here {i}")).await;
    }
    let keep = sessions.len() / 2;
    for mut ws in sessions.drain(keep..) {
        let _ = ws.close(None).await;
        while ws_next(&mut ws).await.is_some() {}
    }
    let mut again = ws_connect(&url).await;
    ws_round_trip(&mut again, "room again").await;
    let (status, _) = http_get(addr, "/api/after").await;
    assert_eq!(status, 200);

    drop((sessions, again));
    gateway.stop().await;
    echo.stop().await;
}

// ---------------------------------------------------------------------------------------
// strait echo
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn echo_answers_http_directly_and_stops_on_sigterm() {
    let (mut echo, addr) = start_echo().await;
    let (status, body) = http_get(addr, "/direct/path?x=1").await;
    assert_eq!(status, 200);
    let echoed = json(&body);
    assert_eq!(echoed["path"], "/direct/path", "{echoed}");
    assert_eq!(echoed["query"], "x=1", "{echoed}");
    echo.signal("TERM").await;
    let status = echo.exit().await;
    assert_eq!(status.code(), Some(0), "exit 0 on SIGTERM ({status})");
}

/// The process asked the kernel for no transparent huge pages (`src/alloc.rs`): the status
/// line reads 1 for a process that did not (this test's own, on a kernel that allows them).
#[tokio::test]
async fn the_gateway_process_runs_without_transparent_huge_pages() {
    let (echo, _) = start_echo().await;
    let pid = echo.pid().expect("echo is running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let thp = status.lines().find_map(|l| l.strip_prefix("THP_enabled:"));
    // Kernels before 5.0 have no such line; there is nothing to check then.
    if let Some(thp) = thp {
        assert_eq!(thp.trim(), "0", "THP_enabled in\n{status}");
    }
}

// ---------------------------------------------------------------------------------------
// strait demo
// ---------------------------------------------------------------------------------------

/// `'http://127.0.0.1:8080/api/hello?name=strait'` in a curl line → (address, target).
fn curl_target(line: &str) -> (SocketAddr, String) {
    let url = line
        .split('\'')
        .nth(1)
        .unwrap_or_else(|| panic!("no quoted URL in {line:?}"));
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("{url:?} is not an http:// URL"));
    let (authority, target) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = authority
        .parse()
        .unwrap_or_else(|e| panic!("{authority:?} in {url:?} is not an address: {e}"));
    let target = if target.is_empty() { "/" } else { target };
    (addr, target.to_owned())
}

#[tokio::test]
async fn demo_prints_working_instructions_and_stops_on_sigterm() {
    let (mut demo, addr) = start_on_free_port("strait demo", |addr| {
        Running::spawn(
            "strait demo",
            strait().args([
                "demo",
                "--listen",
                &addr.to_string(),
                "--backend",
                "127.0.0.1:0",
            ]),
        )
    })
    .await;

    let curl = demo
        .expect_line("a curl line on stdout", |stream, line| {
            stream == Stream::Stdout && line.trim_start().starts_with("curl ")
        })
        .await;
    let ws_line = demo
        .expect_line("a ws:// URL on stdout", |stream, line| {
            stream == Stream::Stdout && line.contains("ws://")
        })
        .await;

    // Following the printed curl URL reaches the echo backend.
    let (curl_addr, target) = curl_target(&curl);
    assert_eq!(curl_addr, addr, "the curl line uses the listen address");
    let (status, body) = http_get(curl_addr, &target).await;
    assert_eq!(status, 200, "body: {}", String::from_utf8_lossy(&body));
    let echoed = json(&body);
    assert_eq!(echoed["method"], "GET", "{echoed}");
    assert!(
        echoed["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/echo")),
        "the echo saw the backend path: {echoed}"
    );
    let query = target.split_once('?').map(|(_, q)| q);
    assert_eq!(echoed["query"].as_str(), query, "{echoed}");

    // So does the printed WebSocket URL.
    let ws_url = ws_line
        .split_whitespace()
        .find(|word| word.starts_with("ws://"))
        .expect("a ws:// word")
        .trim_end_matches(['`', '\'', ')', ','])
        .to_owned();
    assert!(
        ws_url.starts_with(&format!("ws://{addr}/")),
        "the ws:// URL uses the listen address: {ws_url}"
    );
    let mut ws = ws_connect(&ws_url).await;
    ws_round_trip(&mut ws, "hello demo").await;
    drop(ws);

    demo.stop().await;
}

/// `--listen 127.0.0.1:0` is accepted (and `--backend 127.0.0.1:0` is even suggested), so
/// the printed instructions must name the port actually bound, not port 0.
#[tokio::test]
async fn demo_on_port_zero_prints_the_bound_port() {
    let mut demo = Running::spawn(
        "strait demo",
        strait().args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "127.0.0.1:0",
        ]),
    );
    let bound = demo.expect_listening().await;
    assert_ne!(bound.port(), 0, "the log names the bound port");
    let curl = demo
        .expect_line("a curl line on stdout", |stream, line| {
            stream == Stream::Stdout && line.trim_start().starts_with("curl ")
        })
        .await;
    let (curl_addr, _) = curl_target(&curl);
    assert_eq!(
        curl_addr, bound,
        "the curl line names the bound address: {curl:?}"
    );
}

/// The gateway's peak resident memory (`VmHWM`) in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("a VmHWM line in {status}"))
}

/// 1 GiB streams through a real `strait run` while the gateway's peak memory stays flat.
#[tokio::test]
async fn a_one_gib_upload_passes_in_flat_memory() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const GIB: u64 = 1 << 30;
    let (_echo, echo_addr) = start_echo().await;
    let dir = temporary_folder();
    let config = dir.path().join("gateway.yaml");
    let (gateway, addr) = start_on_free_port("strait run", |addr| {
        let yaml = format!(
            "environments:\n  - name: test\n    listen: {addr}\nproxies:\n  - name: up\n    path: /up/*\n    backend: http://{echo_addr}/svc\n    deploy: [test]\n"
        );
        std::fs::write(&config, yaml).expect("write the configuration");
        Running::spawn("strait run", strait().arg("run").arg("--config").arg(&config))
    })
    .await;
    let pid = gateway.pid().expect("the gateway runs");
    let before = peak_rss_kib(pid);

    let upload = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST /up/big HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {GIB}\r\nConnection: close\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.expect("send the head");
        let chunk = vec![b'x'; 256 * 1024];
        for _ in 0..GIB / chunk.len() as u64 {
            tcp.write_all(&chunk).await.expect("send the body");
        }
        let mut response = Vec::new();
        tcp.read_to_end(&mut response)
            .await
            .expect("read the answer");
        response
    };
    let response = tokio::time::timeout(std::time::Duration::from_secs(300), upload)
        .await
        .expect("1 GiB passes within 5 minutes");
    let (status, body) = common::parse_response(&response);
    assert_eq!(status, 200, "{}", text(&body));
    assert_eq!(
        json(&body)["body_length"],
        GIB,
        "every byte reached the backend"
    );

    let growth = peak_rss_kib(pid).saturating_sub(before);
    assert!(
        growth < 64 * 1024,
        "the gateway's peak memory grew by {growth} KiB while 1 GiB passed"
    );
}

/// Reads from `tcp` until the end of an HTTP head; returns the head and whatever followed it.
async fn read_head(tcp: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = async {
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let rest = got.split_off(end + 4);
                return (text(&got), rest);
            }
            let mut chunk = [0u8; 1024];
            let n = tcp.read(&mut chunk).await.expect("read a head");
            assert!(
                n > 0,
                "the peer closed before its head ended: {}",
                text(&got)
            );
            got.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(common::WAIT, read)
        .await
        .expect("a complete head in time")
}

/// The backpressure case: a WebSocket client that reads 1 KB/s while its backend
/// sends as fast as it can. The gateway reads from the backend only as fast as the client
/// takes the data: the backend's writes block once the sockets' buffers and the relay's one
/// bounded buffer are full, the gateway's memory does not grow with what the backend
/// would send, the bytes the client gets are the backend's frames, and the gateway keeps
/// serving other sessions meanwhile.
#[tokio::test]
async fn a_slow_websocket_client_holds_a_flooding_backend_back_in_bounded_memory() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

    /// Each of the backend's frames: 16 KiB of payload (copied by the relay, not spliced).
    const PAYLOAD: usize = 16 * 1024;
    /// What the backend would send without backpressure: bounds the test, not the gateway.
    const FLOOD_CAP: u64 = 2 << 30;
    /// How long the client reads, 100 bytes every 100 ms.
    const READING: Duration = Duration::from_secs(4);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the backend");
    let flood_addr = listener.local_addr().expect("backend address");
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let flood = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("the gateway connects");
        let (head, _) = read_head(&mut tcp).await;
        let key = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-key"))
            .map(|(_, key)| key.trim().to_owned())
            .expect("the forwarded handshake carries the key");
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        );
        tcp.write_all(answer.as_bytes())
            .await
            .expect("send the 101");
        let mut frame = vec![0x82, 126];
        frame.extend_from_slice(&(PAYLOAD as u16).to_be_bytes());
        frame.resize(frame.len() + PAYLOAD, b'f');
        while counter.load(Ordering::Relaxed) < FLOOD_CAP {
            if tcp.write_all(&frame).await.is_err() {
                break;
            }
            counter.fetch_add(frame.len() as u64, Ordering::Relaxed);
        }
    });

    let (mut echo, echo_addr) = start_echo().await;
    let dir = temporary_folder();
    let config = dir.path().join("gateway.yaml");
    let (gateway, addr) = start_on_free_port("strait run", |addr| {
        let yaml = format!(
            "environments:\n  - name: test\n    listen: {addr}\n    websocket: true\nproxies:\n  - name: flood\n    path: /flood\n    backend: http://{flood_addr}/\n    deploy: [test]\n  - name: echo\n    path: /api/*\n    backend: http://{echo_addr}/echo\n    deploy: [test]\n"
        );
        std::fs::write(&config, yaml).expect("write the configuration");
        Running::spawn("strait run", strait().arg("run").arg("--config").arg(&config))
    })
    .await;
    let pid = gateway.pid().expect("the gateway runs");

    let mut client = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the gateway");
    let request = format!(
        "GET /flood HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    client
        .write_all(request.as_bytes())
        .await
        .expect("send the upgrade");
    let (head, mut received) = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let before = peak_rss_kib(pid);

    // 1 KB/s: 100 bytes every 100 ms.
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    let reading = tokio::time::Instant::now();
    while reading.elapsed() < READING {
        pace.tick().await;
        let mut chunk = [0u8; 100];
        let n = client.read(&mut chunk).await.expect("read the flood");
        assert!(n > 0, "the gateway closed the slow session");
        received.extend_from_slice(&chunk[..n]);
    }

    // Another session is served meanwhile.
    let mut ws = ws_connect(&format!("ws://{addr}/api/chat")).await;
    ws_round_trip(&mut ws, "served beside the flood").await;

    let sent = written.load(Ordering::Relaxed);
    let growth = peak_rss_kib(pid).saturating_sub(before);
    eprintln!(
        "backend wrote {} KiB while the client read {} bytes; gateway peak memory grew {growth} KiB",
        sent / 1024,
        received.len()
    );
    assert!(
        received.len() < 8 * 1024,
        "the client read at 1 KB/s: {} bytes",
        received.len()
    );
    assert_eq!(
        received.get(..4),
        Some(&[0x82, 126, 0x40, 0x00][..]),
        "the backend's first frame header reaches the client as it was sent"
    );
    assert!(
        received.iter().skip(4).all(|b| *b == b'f'),
        "then its payload"
    );
    // Between the backend and the client, four sockets' kernel buffers (each at most
    // `tcp_wmem`/`tcp_rmem`'s maximum, a few MiB unless raised) fill before the backend blocks.
    assert!(
        sent < 256 << 20,
        "the backend was held back: it wrote {} MiB for a client that read {} bytes",
        sent >> 20,
        received.len()
    );
    assert!(
        growth < 8 * 1024,
        "the gateway's peak memory grew by {growth} KiB while the backend wrote {} MiB",
        sent >> 20
    );

    drop(client);
    // With the client gone, the gateway closes the backend: its writes fail and it stops.
    tokio::time::timeout(common::WAIT, flood)
        .await
        .expect("the flooding backend is disconnected")
        .expect("the backend task");
    echo.stop().await;
}
