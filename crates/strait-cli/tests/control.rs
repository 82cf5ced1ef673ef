//! End-to-end tests of the `strait` binary's control plane, in child processes: the
//! stateful mode (`run --data`, `apply`, `dump`) surviving a restart, `apply --dry-run`,
//! the declarative mode reloading on SIGHUP and on file change, the read-only admin API in
//! declarative mode, and the refusal of an unprotected non-loopback admin address.
//!
//! Everything talks to 127.0.0.1 only, on ephemeral ports. Readiness is a log line read from
//! the child's stderr; every wait is bounded by [`WAIT`] and fails the test when it runs out.
//! Children are started with `kill_on_drop`, so a failing test never leaves a process behind.

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;

/// The longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(20);
/// How many fresh ports to try when a chosen one was taken in the meantime.
const BIND_ATTEMPTS: usize = 5;
/// How often a poll looks again (only where there is no event to wait for).
const POLL_EVERY: Duration = Duration::from_millis(50);

/// What `strait apply` prints when the plan is empty (crates/strait-cli/src/main.rs).
const NOTHING_TO_CHANGE: &str = "nothing to change: the gateway already matches";
/// What the control plane logs when a file it was asked to reload does not validate
/// (crates/strait/src/control/mod.rs, `Control::reload`).
const NOT_RELOADED: &str = "was not reloaded; the running configuration stays";

// ---------------------------------------------------------------------------------------
// Helpers: commands, output, children
// ---------------------------------------------------------------------------------------

/// `strait` with a clean environment for logging: `RUST_LOG` would override `--log-level`
/// and could hide the readiness lines; colours would garble them. No admin token either:
/// every admin API here is on loopback.
fn strait() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strait"));
    command
        .env_remove("RUST_LOG")
        .env_remove("STRAIT_ADMIN_TOKEN")
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

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit status, stdout and stderr of a finished command, for failure messages.
fn show(output: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    )
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

/// A loopback port that was free a moment ago (callers retry if it is taken meanwhile).
fn free_addr() -> SocketAddr {
    let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("ephemeral port address")
}

/// Writes `contents` to `path` atomically (a temporary file renamed over it), so the
/// gateway's file watcher never reads a half-written file.
fn write_atomically(path: &Path, contents: &str) {
    let temporary = path.with_extension("yaml.partial");
    std::fs::write(&temporary, contents).expect("write the temporary configuration");
    std::fs::rename(&temporary, path).expect("rename the configuration into place");
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

    /// Moves the lines that already arrived into `seen` and returns how many there are:
    /// a mark for [`Running::line_after`].
    fn mark(&mut self) -> usize {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.len()
    }

    /// The first line from index `from` on (already seen or still to come) matching
    /// `wanted`; `None` when the child closed its output (it exited) first. Fails the test
    /// after [`WAIT`].
    async fn line_after(
        &mut self,
        from: usize,
        what: &str,
        wanted: impl Fn(Stream, &str) -> bool,
    ) -> Option<String> {
        if let Some((_, line)) = self.seen.iter().skip(from).find(|(s, l)| wanted(*s, l)) {
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

    /// Like [`Running::line_after`], failing the test when the child exits first.
    async fn expect_line_after(
        &mut self,
        from: usize,
        what: &str,
        wanted: impl Fn(Stream, &str) -> bool,
    ) -> String {
        match self.line_after(from, what, wanted).await {
            Some(line) => line,
            None => {
                let status = timeout(WAIT, self.child.wait()).await;
                panic!(
                    "{}: exited ({status:?}) before printing {what}; output:\n{}",
                    self.name,
                    self.transcript()
                )
            }
        }
    }

    /// Waits for every readiness line in `ready`; `false` when the child exited first.
    async fn ready(&mut self, ready: &[Ready]) -> bool {
        for want in ready {
            let what = want.describe();
            if self
                .line_after(0, &what, |stream, line| want.matches(stream, line))
                .await
                .is_none()
            {
                return false;
            }
        }
        true
    }

    /// Like [`Running::ready`], failing the test when the child exits first.
    async fn expect_ready(&mut self, ready: &[Ready]) {
        for want in ready {
            let what = want.describe();
            self.expect_line_after(0, &what, |stream, line| want.matches(stream, line))
                .await;
        }
    }

    /// Sends `kill -SIGNAL PID`, e.g. `signal("TERM")`.
    async fn signal(&self, signal: &str) {
        let pid = self
            .child
            .id()
            .expect("the child is still running")
            .to_string();
        let status = timeout(
            WAIT,
            Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(&pid)
                .status(),
        )
        .await
        .expect("kill runs within 20 s")
        .expect("kill starts");
        assert!(status.success(), "kill -{signal} {pid} failed: {status}");
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

    /// SIGTERM, then asserts a graceful exit with status 0.
    async fn stop(&mut self) {
        self.signal("TERM").await;
        let status = self.exit().await;
        assert_eq!(
            status.code(),
            Some(0),
            "{} exits 0 on SIGTERM ({status}); output:\n{}",
            self.name,
            self.transcript()
        );
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

/// `... listening on http://127.0.0.1:8080 env=...` → `127.0.0.1:8080`; `None` when the
/// line says no such thing.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on http://")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// A readiness log line on stderr.
#[derive(Debug, Clone, Copy)]
enum Ready {
    /// An environment's listener: `listening on http://ADDR env=NAME`.
    Environment(SocketAddr),
    /// The admin API: `admin API listening on http://ADDR`.
    Admin(SocketAddr),
}

impl Ready {
    fn matches(&self, stream: Stream, line: &str) -> bool {
        if stream != Stream::Stderr {
            return false;
        }
        let admin = line.contains("admin API listening on http://");
        match *self {
            Ready::Environment(addr) => !admin && listening_addr(line) == Some(addr),
            Ready::Admin(addr) => admin && listening_addr(line) == Some(addr),
        }
    }

    fn describe(&self) -> String {
        match self {
            Ready::Environment(addr) => format!("\"listening on http://{addr}\" log line"),
            Ready::Admin(addr) => format!("\"admin API listening on http://{addr}\" log line"),
        }
    }
}

/// Starts a child on freshly chosen ports (`spawn` chooses them and returns them with the
/// child), retrying with other ports when one was taken between choosing and binding.
/// Waits for the readiness lines `ready` names.
async fn start_ready<T: Copy>(
    name: &'static str,
    mut spawn: impl FnMut() -> (Running, T),
    ready: impl Fn(T) -> Vec<Ready>,
) -> (Running, T) {
    for attempt in 1..=BIND_ATTEMPTS {
        let (mut child, ports) = spawn();
        if child.ready(&ready(ports)).await {
            return (child, ports);
        }
        let status = child.exit().await;
        let taken = child
            .seen
            .iter()
            .any(|(_, line)| line.contains("cannot listen"));
        assert!(
            taken && attempt < BIND_ATTEMPTS,
            "{name} exited ({status}) without listening; output:\n{}",
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
    let line = echo
        .expect_line_after(0, "\"listening on\" log line", |stream, line| {
            stream == Stream::Stderr && listening_addr(line).is_some()
        })
        .await;
    let addr = listening_addr(&line).expect("an address in the listening line");
    (echo, addr)
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

// ---------------------------------------------------------------------------------------
// Helpers: HTTP and WebSocket clients
// ---------------------------------------------------------------------------------------

/// A plain HTTP/1.1 request with `Connection: close` and an optional JSON body: the status
/// code and the response body.
async fn http(addr: SocketAddr, method: &str, target: &str, body: Option<&str>) -> (u16, Vec<u8>) {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr} for {method} {target}: {e}"));
        let mut request =
            format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if let Some(body) = body {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        } else {
            request.push_str("\r\n");
        }
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

async fn http_get(addr: SocketAddr, target: &str) -> (u16, Vec<u8>) {
    http(addr, "GET", target, None).await
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

/// Nothing accepts connections on `addr`.
async fn assert_not_listening(addr: SocketAddr, why: &str) {
    let connect = timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect attempt within 20 s");
    assert!(connect.is_err(), "nothing listens on {addr}: {why}");
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
// Configuration files
// ---------------------------------------------------------------------------------------

/// One environment `test` on `listen` (WebSocket on) and one proxy `api`:
/// `/api/*` → `http://ECHO/svc`, deployed to it.
fn api_yaml(listen: SocketAddr, echo: SocketAddr) -> String {
    format!(
        "environments:\n  - name: test\n    listen: {listen}\n    websocket: true\n\
         proxies:\n  - name: api\n    path: /api/*\n    backend: http://{echo}/svc\n    deploy: [test]\n"
    )
}

fn temporary_folder() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary folder")
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write the configuration");
    path
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
    assert_plan(
        &output,
        "did",
        &[
            "create environment test",
            "create proxy api",
            "deploy api to test",
        ],
    );
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
    let steps = [
        "create environment test",
        "create proxy api",
        "deploy api to test",
    ];

    let (mut gateway, admin) = start_stateful(&db).await;

    // A dry run prints the plan and changes nothing.
    assert_plan(&apply(&file, admin, true).await, "would", &steps);
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
    assert_plan(&apply(&file, admin, true).await, "would", &steps);

    // The real thing.
    assert_plan(&apply(&file, admin, false).await, "did", &steps);
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
        !gateway
            .seen
            .iter()
            .any(|(_, line)| line.contains(NOT_RELOADED)),
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
