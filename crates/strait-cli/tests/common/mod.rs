//! Helpers shared by the end-to-end tests of the `strait` binary (`cli.rs`, `control.rs`):
//! starting it as a child process and reading its output line by line, waiting for its
//! readiness log lines on freshly chosen ports, and small HTTP/1.1 and WebSocket clients.
//!
//! Every wait is bounded by [`WAIT`] and fails the test when it runs out. Children are
//! started with `kill_on_drop`, so a failing test never leaves a process behind.
#![allow(dead_code)]

use std::fmt::Debug;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;

/// The longest any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);
/// How many fresh ports to try when a chosen one was taken in the meantime.
pub const BIND_ATTEMPTS: usize = 5;

// ---------------------------------------------------------------------------------------
// Commands, output, files
// ---------------------------------------------------------------------------------------

/// `strait` with a clean environment for logging: `RUST_LOG` would override `--log-level`
/// and could hide the readiness lines; colours would garble them. No admin token either:
/// every admin API in these tests is on loopback.
pub fn strait() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strait"));
    command
        .env_remove("RUST_LOG")
        .env_remove("STRAIT_ADMIN_TOKEN")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Starts `command` with its stdout and stderr piped.
fn spawn_piped(command: &mut Command) -> Child {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the strait binary starts")
}

/// Runs a command that is expected to exit by itself, within [`WAIT`].
pub async fn finish(command: &mut Command) -> Output {
    let child = spawn_piped(command);
    // Dropping the future on timeout drops the child, which kills it (kill_on_drop).
    timeout(WAIT, child.wait_with_output())
        .await
        .expect("strait exits within 20 s")
        .expect("strait's output is collected")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Removes ANSI escape sequences (`ESC [ ... letter`), in case colours are on anyway.
pub fn strip_ansi(line: &str) -> String {
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

/// A loopback address for a gateway to listen on, written into its configuration before it
/// starts. The port is above Linux's default ephemeral range (32768–60999), so no other
/// socket is given it by the kernel (a port 0 picked and released could be taken by any
/// connection the suite opens meanwhile), and distinct within this test process (cargo runs
/// test binaries one after another); one something else holds is passed over. (Starting a
/// process retries on a taken port; an environment applied to a running gateway cannot —
/// a port 0 released to the kernel once failed such an apply under the full suite.)
pub fn free_addr() -> SocketAddr {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    const FIRST: u16 = 61_000;
    const PORTS: u16 = u16::MAX - FIRST;
    for _ in 0..PORTS {
        let port = FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % PORTS;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if StdTcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free loopback port above {FIRST}");
}

pub fn temporary_folder() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary folder")
}

/// Writes `contents` to `dir/name` and returns that path.
pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write the configuration");
    path
}

// ---------------------------------------------------------------------------------------
// Long-running children
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A long-running child whose stdout and stderr lines arrive on a channel.
/// Dropping it kills the child (`kill_on_drop`).
pub struct Running {
    name: &'static str,
    child: Child,
    lines: mpsc::UnboundedReceiver<(Stream, String)>,
    /// Every line received so far, for lookups and for failure messages.
    seen: Vec<(Stream, String)>,
}

impl Running {
    pub fn spawn(name: &'static str, command: &mut Command) -> Running {
        let mut child = spawn_piped(command);
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

    /// The child's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn transcript(&self) -> String {
        self.seen
            .iter()
            .map(|(stream, line)| format!("  [{stream:?}] {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether a line received so far contains `fragment`.
    pub fn saw(&self, fragment: &str) -> bool {
        self.seen.iter().any(|(_, line)| line.contains(fragment))
    }

    /// Moves the lines that already arrived into `seen` and returns how many there are:
    /// a mark for [`Running::line_after`].
    pub fn mark(&mut self) -> usize {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.len()
    }

    /// The first line from index `from` on (already seen or still to come) matching
    /// `wanted`; `None` when the child closed its output (it exited) first. Fails the test
    /// after [`WAIT`].
    pub async fn line_after(
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
    pub async fn expect_line_after(
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

    /// [`Running::line_after`] from the first line on.
    pub async fn line(
        &mut self,
        what: &str,
        wanted: impl Fn(Stream, &str) -> bool,
    ) -> Option<String> {
        self.line_after(0, what, wanted).await
    }

    /// [`Running::expect_line_after`] from the first line on.
    pub async fn expect_line(
        &mut self,
        what: &str,
        wanted: impl Fn(Stream, &str) -> bool,
    ) -> String {
        self.expect_line_after(0, what, wanted).await
    }

    /// The address from its first `listening on http://ADDR` log line, or `None` if it
    /// exited first.
    pub async fn listening(&mut self) -> Option<SocketAddr> {
        let line = self
            .line("\"listening on\" log line", |stream, line| {
                stream == Stream::Stderr && line.contains("listening on http://")
            })
            .await?;
        let addr = listening_addr(&line)
            .unwrap_or_else(|| panic!("no address in the listening line {line:?}"));
        Some(addr)
    }

    /// Like [`Running::listening`], failing the test when the child exits first.
    pub async fn expect_listening(&mut self) -> SocketAddr {
        match self.listening().await {
            Some(addr) => addr,
            None => panic!("{} exited early:\n{}", self.name, self.transcript()),
        }
    }

    /// Waits for every readiness line in `ready`; `false` when the child exited first.
    pub async fn ready(&mut self, ready: &[Ready]) -> bool {
        for want in ready {
            let what = want.describe();
            if self
                .line(&what, |stream, line| want.matches(stream, line))
                .await
                .is_none()
            {
                return false;
            }
        }
        true
    }

    /// Like [`Running::ready`], failing the test when the child exits first.
    pub async fn expect_ready(&mut self, ready: &[Ready]) {
        for want in ready {
            let what = want.describe();
            self.expect_line(&what, |stream, line| want.matches(stream, line))
                .await;
        }
    }

    /// Sends `kill -SIGNAL PID`, e.g. `signal("TERM")`.
    pub async fn signal(&self, signal: &str) {
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
    pub async fn exit(&mut self) -> ExitStatus {
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
    pub async fn stop(&mut self) {
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
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on http://")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// A readiness log line on stderr.
#[derive(Debug, Clone, Copy)]
pub enum Ready {
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
/// `ready` waits until the child is ready, `false` when it exited first.
pub async fn start_on_free_ports<T: Copy + Debug>(
    name: &'static str,
    mut spawn: impl FnMut() -> (Running, T),
    mut ready: impl AsyncFnMut(&mut Running, T) -> bool,
) -> (Running, T) {
    for attempt in 1..=BIND_ATTEMPTS {
        let (mut child, ports) = spawn();
        if ready(&mut child, ports).await {
            return (child, ports);
        }
        let status = child.exit().await;
        assert!(
            child.saw("cannot listen") && attempt < BIND_ATTEMPTS,
            "{name} exited ({status}) without listening on {ports:?}; output:\n{}",
            child.transcript()
        );
    }
    unreachable!("the loop returns or fails")
}

/// [`start_on_free_ports`] for a child told to listen on one address: `spawn` starts it on
/// the address given. Its first `listening on` line must name that address.
pub async fn start_on_free_port(
    name: &'static str,
    mut spawn: impl FnMut(SocketAddr) -> Running,
) -> (Running, SocketAddr) {
    start_on_free_ports(
        name,
        || {
            let addr = free_addr();
            (spawn(addr), addr)
        },
        async |child: &mut Running, addr| {
            let Some(listening) = child.listening().await else {
                return false;
            };
            assert_eq!(
                listening,
                addr,
                "{name} listens where it was told to; output:\n{}",
                child.transcript()
            );
            true
        },
    )
    .await
}

/// [`start_on_free_ports`], ready once the child printed the readiness lines `ready` names.
pub async fn start_ready<T: Copy + Debug>(
    name: &'static str,
    spawn: impl FnMut() -> (Running, T),
    ready: impl Fn(T) -> Vec<Ready>,
) -> (Running, T) {
    start_on_free_ports(name, spawn, async |child: &mut Running, ports| {
        child.ready(&ready(ports)).await
    })
    .await
}

/// `strait echo --listen 127.0.0.1:0` and the address it reports.
pub async fn start_echo() -> (Running, SocketAddr) {
    let mut echo = Running::spawn(
        "strait echo",
        strait().args(["echo", "--listen", "127.0.0.1:0"]),
    );
    let addr = echo.expect_listening().await;
    (echo, addr)
}

// ---------------------------------------------------------------------------------------
// HTTP and WebSocket clients
// ---------------------------------------------------------------------------------------

/// A plain HTTP/1.1 request with `Connection: close` and an optional JSON body: the status
/// code and the response body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    body: Option<&str>,
) -> (u16, Vec<u8>) {
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

/// [`http`] with GET and no body.
pub async fn http_get(addr: SocketAddr, target: &str) -> (u16, Vec<u8>) {
    http(addr, "GET", target, None).await
}

/// The status code and the body (de-chunked, or cut at `Content-Length`) of a response.
pub fn parse_response(response: &[u8]) -> (u16, Vec<u8>) {
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

pub fn dechunk(mut body: &[u8]) -> Vec<u8> {
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

pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// Nothing accepts connections on `addr`.
pub async fn assert_not_listening(addr: SocketAddr, why: &str) {
    let connect = timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect attempt within 20 s");
    assert!(connect.is_err(), "nothing listens on {addr}: {why}");
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn ws_connect(url: &str) -> Ws {
    let (ws, response) = timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("the WebSocket handshake completes within 20 s")
        .unwrap_or_else(|e| panic!("WebSocket handshake with {url} failed: {e}"));
    assert_eq!(response.status().as_u16(), 101, "{url} switches protocols");
    ws
}

/// The next message other than ping/pong; `None` when the stream ended.
pub async fn ws_next(ws: &mut Ws) -> Option<Message> {
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

/// Sends `payload` as a text message and asserts the echo sends it back.
pub async fn ws_round_trip(ws: &mut Ws, payload: &str) {
    timeout(WAIT, ws.send(Message::text(payload)))
        .await
        .expect("send within 20 s")
        .expect("the WebSocket message is sent");
    match ws_next(ws).await {
        Some(Message::Text(echoed)) => assert_eq!(echoed.as_str(), payload, "the echo"),
        other => panic!("expected the echoed text {payload:?}, got {other:?}"),
    }
}
