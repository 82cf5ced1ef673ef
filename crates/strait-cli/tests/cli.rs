//! End-to-end tests of the `strait` binary: `validate`, `run`, `echo` and `demo` as a user
//! runs them, in child processes.
//!
//! Readiness is the "listening on" log line read from the child's stderr; every wait is
//! bounded by [`WAIT`] and fails the test when it runs out. Children are started with
//! `kill_on_drop`, so a failing test never leaves a process behind.

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(20);
/// How many fresh ports to try when the chosen one was taken in the meantime.
const BIND_ATTEMPTS: usize = 5;

// ---------------------------------------------------------------------------------------
// Helpers: commands, output, children
// ---------------------------------------------------------------------------------------

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `strait` with a clean environment for logging: `RUST_LOG` would override `--log-level`
/// and could hide the readiness line; colours would garble it.
fn strait() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strait"));
    command
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs a command that is expected to exit by itself, within [`WAIT`].
async fn finish(command: &mut Command) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the strait binary starts");
    // Dropping the future on timeout drops the child, which kills it (kill_on_drop).
    timeout(WAIT, child.wait_with_output())
        .await
        .expect("strait exits within 20 s")
        .expect("strait's output is collected")
}

/// `strait validate NAME`, run inside the fixtures folder so messages name `NAME` as given.
async fn validate_fixture(name: &str) -> Output {
    finish(strait().current_dir(fixtures()).args(["validate", name])).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Removes ANSI escape sequences (`ESC [ ... letter`), in case colours are on anyway.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A port that was free a moment ago (the caller retries if it is taken in the meantime).
fn free_addr() -> SocketAddr {
    let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("ephemeral port address")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// A long-running child whose stdout and stderr lines arrive on a channel.
/// Dropping it kills the child (`kill_on_drop`).
struct Running {
    name: &'static str,
    child: Child,
    lines: mpsc::UnboundedReceiver<(Stream, String)>,
    /// Every line received so far, for lookups and for failure messages.
    seen: Vec<(Stream, String)>,
}

impl Running {
    fn spawn(name: &'static str, command: &mut Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the strait binary starts");
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        forward_lines(stdout, Stream::Stdout, tx.clone());
        forward_lines(stderr, Stream::Stderr, tx);
        Running {
            name,
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn transcript(&self) -> String {
        self.seen
            .iter()
            .map(|(stream, line)| format!("  [{stream:?}] {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The first line (already seen or still to come) matching `wanted`; `None` when the
    /// child closed its output (it exited) first. Fails the test after [`WAIT`].
    async fn line(&mut self, what: &str, wanted: impl Fn(Stream, &str) -> bool) -> Option<String> {
        if let Some((_, line)) = self.seen.iter().find(|(s, l)| wanted(*s, l)) {
            return Some(line.clone());
        }
        let deadline = Instant::now() + WAIT;
        loop {
            match timeout_at(deadline, self.lines.recv()).await {
                Ok(Some((stream, line))) => {
                    let found = wanted(stream, &line);
                    self.seen.push((stream, line.clone()));
                    if found {
                        return Some(line);
                    }
                }
                Ok(None) => return None,
                Err(_) => panic!(
                    "{}: no {what} within {WAIT:?}; output so far:\n{}",
                    self.name,
                    self.transcript()
                ),
            }
        }
    }

    /// Like [`Running::line`], failing the test when the child exits first.
    async fn expect_line(&mut self, what: &str, wanted: impl Fn(Stream, &str) -> bool) -> String {
        match self.line(what, wanted).await {
            Some(line) => line,
            None => {
                let status = self.child.wait().await;
                panic!(
                    "{}: exited ({status:?}) before printing {what}; output:\n{}",
                    self.name,
                    self.transcript()
                )
            }
        }
    }

    /// The address from its `listening on http://ADDR` log line, or `None` if it exited.
    async fn listening(&mut self) -> Option<SocketAddr> {
        let line = self
            .line("\"listening on\" log line", |stream, line| {
                stream == Stream::Stderr && line.contains("listening on http://")
            })
            .await?;
        Some(listening_addr(&line))
    }

    fn pid(&self) -> String {
        self.child
            .id()
            .expect("the child is still running")
            .to_string()
    }

    async fn sigterm(&self) {
        let pid = self.pid();
        let status = timeout(WAIT, Command::new("kill").args(["-TERM", &pid]).status())
            .await
            .expect("kill runs within 20 s")
            .expect("kill starts");
        assert!(status.success(), "kill -TERM {pid} failed: {status}");
    }

    /// Reads the rest of its output and waits for it to exit, within [`WAIT`].
    async fn exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            match timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => self.seen.push(line),
                Ok(None) => break,
                Err(_) => panic!(
                    "{}: did not exit within {WAIT:?}; output so far:\n{}",
                    self.name,
                    self.transcript()
                ),
            }
        }
        match timeout_at(deadline, self.child.wait()).await {
            Ok(status) => status.expect("wait for the child"),
            Err(_) => panic!(
                "{}: closed its output but did not exit within {WAIT:?}",
                self.name
            ),
        }
    }
}

fn forward_lines(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    stream: Stream,
    tx: mpsc::UnboundedSender<(Stream, String)>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send((stream, strip_ansi(&line))).is_err() {
                break;
            }
        }
    });
}

/// `... listening on http://127.0.0.1:8080 env=...` → `127.0.0.1:8080`.
fn listening_addr(line: &str) -> SocketAddr {
    let (_, rest) = line
        .split_once("listening on http://")
        .expect("a listening line");
    let addr = rest.split_whitespace().next().unwrap_or_default();
    addr.parse()
        .unwrap_or_else(|e| panic!("{addr:?} in {line:?} is not an address: {e}"))
}

/// Starts a child that should listen on a fresh port, trying another port when the chosen
/// one was taken between choosing and binding. Returns the child and its address.
async fn start_on_free_port(
    name: &'static str,
    mut spawn: impl FnMut(SocketAddr) -> Running,
) -> (Running, SocketAddr) {
    for attempt in 1..=BIND_ATTEMPTS {
        let addr = free_addr();
        let mut child = spawn(addr);
        if let Some(listening) = child.listening().await {
            assert_eq!(
                listening,
                addr,
                "{name} listens where it was told to; output:\n{}",
                child.transcript()
            );
            return (child, addr);
        }
        let status = child.exit().await;
        let taken = child
            .seen
            .iter()
            .any(|(_, line)| line.contains("cannot listen on"));
        assert!(
            taken && attempt < BIND_ATTEMPTS,
            "{name} exited ({status}) without listening on {addr}; output:\n{}",
            child.transcript()
        );
    }
    unreachable!("the loop returns or fails")
}

/// `strait echo --listen 127.0.0.1:0` and the address it reports.
async fn start_echo() -> (Running, SocketAddr) {
    let mut echo = Running::spawn(
        "strait echo",
        strait().args(["echo", "--listen", "127.0.0.1:0"]),
    );
    let addr = echo
        .listening()
        .await
        .unwrap_or_else(|| panic!("strait echo exited early:\n{}", echo.transcript()));
    (echo, addr)
}

// ---------------------------------------------------------------------------------------
// Helpers: HTTP and WebSocket clients
// ---------------------------------------------------------------------------------------

/// A plain HTTP/1.1 GET with `Connection: close`: the status code and the body.
async fn http_get(addr: SocketAddr, target: &str) -> (u16, Vec<u8>) {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect for GET");
        let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes())
            .await
            .expect("send the request");
        let mut response = Vec::new();
        tcp.read_to_end(&mut response)
            .await
            .expect("read the response");
        response
    };
    let response = timeout(WAIT, exchange)
        .await
        .expect("the HTTP exchange completes within 20 s");
    parse_response(&response)
}

fn parse_response(response: &[u8]) -> (u16, Vec<u8>) {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", text(response)));
    let head = text(&response[..split]);
    let body = &response[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(body)
    } else if let Some(length) = header("content-length") {
        let length: usize = length.parse().expect("numeric content-length");
        assert!(body.len() >= length, "body shorter than content-length");
        body[..length].to_vec()
    } else {
        body.to_vec()
    };
    (status, body)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = text(&body[..end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).expect("hexadecimal chunk size");
        body = &body[end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(url: &str) -> Ws {
    let (ws, response) = timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("the WebSocket handshake completes within 20 s")
        .unwrap_or_else(|e| panic!("WebSocket handshake with {url} failed: {e}"));
    assert_eq!(response.status().as_u16(), 101, "{url} switches protocols");
    ws
}

/// The next message other than ping/pong; `None` when the stream ended.
async fn ws_next(ws: &mut Ws) -> Option<Message> {
    let deadline = Instant::now() + WAIT;
    loop {
        let next = timeout_at(deadline, ws.next())
            .await
            .expect("a WebSocket message within 20 s");
        match next {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return Some(message),
            Some(Err(e)) => panic!("WebSocket error: {e}"),
            None => return None,
        }
    }
}

async fn ws_round_trip(ws: &mut Ws, payload: &str) {
    timeout(WAIT, ws.send(Message::text(payload)))
        .await
        .expect("send within 20 s")
        .expect("the WebSocket message is sent");
    match ws_next(ws).await {
        Some(Message::Text(echoed)) => assert_eq!(echoed.as_str(), payload, "the echo"),
        other => panic!("expected the echoed text {payload:?}, got {other:?}"),
    }
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
    let dir = tempfile::tempdir().expect("a temporary folder");
    let addr = free_addr();
    // A valid environment on a free port, and two problems elsewhere.
    let yaml = format!(
        "environments:\n  - name: test\n    listen: {addr}\n    websocket: true\nproxies:\n  - name: echo\n    path: /api/*/x\n    backend: http://127.0.0.1:9/\n    deploy: [test, qa]\n"
    );
    std::fs::write(dir.path().join("gw.yaml"), yaml).expect("write the configuration");

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
    let connect = timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect attempt within 20 s");
    assert!(
        connect.is_err(),
        "nothing listens on {addr} after a refused configuration"
    );
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

#[tokio::test]
async fn run_proxies_http_and_websocket_to_the_echo_and_shuts_down_on_sigterm() {
    let (mut echo, echo_addr) = start_echo().await;

    let dir = tempfile::tempdir().expect("a temporary folder");
    let config = dir.path().join("gateway.yaml");
    let (mut gateway, addr) = start_on_free_port("strait run", |addr| {
        let yaml = format!(
            "environments:\n  - name: test\n    listen: {addr}\n    websocket: true\n    shutdown_grace: 5s\nproxies:\n  - name: echo\n    path: /api/*\n    backend: http://{echo_addr}/echo\n    deploy: [test]\n"
        );
        std::fs::write(&config, yaml).expect("write the configuration");
        Running::spawn(
            "strait run",
            strait()
                .arg("--log-level")
                .arg("info")
                .arg("run")
                .arg("--config")
                .arg(&config),
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
    gateway.sigterm().await;
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

    echo.sigterm().await;
    let status = echo.exit().await;
    assert_eq!(
        status.code(),
        Some(0),
        "strait echo exits 0 on SIGTERM ({status}); output:\n{}",
        echo.transcript()
    );
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
    echo.sigterm().await;
    let status = echo.exit().await;
    assert_eq!(status.code(), Some(0), "exit 0 on SIGTERM ({status})");
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

    demo.sigterm().await;
    let status = demo.exit().await;
    assert_eq!(
        status.code(),
        Some(0),
        "strait demo exits 0 on SIGTERM ({status}); output:\n{}",
        demo.transcript()
    );
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
    let bound = demo
        .listening()
        .await
        .unwrap_or_else(|| panic!("strait demo exited early:\n{}", demo.transcript()));
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
