//! The access log: one line per HTTP request, one per WebSocket session when it ends (and
//! one at its handshake with `log_handshake`), as JSON or in nginx's `combined` format.
//!
//! The data plane formats a line and appends it to its worker thread's buffer for the
//! destination (an uncontended lock, no wake-up); a buffer past [`HAND_OVER`] goes to the
//! destination's writer task through a bounded channel, and the writer takes what the
//! buffers hold every [`FLUSH_EVERY`], so a line is written within that. Handing each line to
//! the writer, as before, woke the writer's thread for most of them: with the JSON log on,
//! 1.6 `futex` and 0.5 `write` calls per request. A full channel drops the batch and counts
//! its lines (`strait_access_log_dropped_total`) rather than slow traffic down.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::metrics::Counter;
use super::trace::trace_id_hex;
use crate::store::time::{push_combined_time, rfc3339_millis};

/// Bytes of lines a worker's buffer collects before it hands them to the writer.
const HAND_OVER: usize = 32 * 1024;
/// Handed-over buffers that may wait for the writer (8 MiB) before new ones are dropped.
const QUEUE: usize = 256;
/// How often the writer takes the lines still in the buffers.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

pub use crate::config::AccessLogFormat as Format;

/// One environment's access log, as the data plane uses it.
#[derive(Debug, Clone)]
pub struct AccessLog {
    pub format: Format,
    pub log_handshake: bool,
    sink: Sink,
}

#[derive(Debug, Clone)]
struct Sink {
    tx: mpsc::Sender<Message>,
    dropped: Counter,
    buffers: Buffers,
}

/// Lines not yet handed to the writer: one buffer per worker thread ([`crate::worker`]),
/// then one for every other thread. Each is locked by its own thread for an append, and by
/// the writer when it takes the lines: in practice never contended.
type Buffers = Arc<[Mutex<Vec<u8>>]>;

#[derive(Debug)]
enum Message {
    /// Whole lines, each ending in a newline.
    Lines(Vec<u8>),
    /// Answered once every line logged before it is written out.
    Flush(oneshot::Sender<()>),
}

fn lock(buffer: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    buffer.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open the access log {path}: {source}")]
pub struct OpenError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The writers, one per destination, shared by every environment that logs there.
#[derive(Debug, Default)]
pub struct Sinks {
    sinks: HashMap<Destination, Sink>,
    /// Worker threads, each with a buffer of its own per destination.
    workers: usize,
}

impl Sinks {
    /// Sinks for a gateway with `workers` worker threads.
    pub fn new(workers: usize) -> Self {
        Sinks {
            sinks: HashMap::new(),
            workers,
        }
    }

    /// The access log for `destination`, starting its writer if it is new. Must run inside
    /// a tokio runtime.
    pub fn get(
        &mut self,
        destination: &Destination,
        format: Format,
        log_handshake: bool,
        dropped: &Counter,
    ) -> Result<AccessLog, OpenError> {
        let sink = match self.sinks.get(destination) {
            Some(sink) => sink.clone(),
            None => {
                let out: Box<dyn AsyncWrite + Send + Unpin> = match destination {
                    Destination::Stdout => Box::new(tokio::io::stdout()),
                    Destination::File(path) => Box::new(open(path)?),
                };
                let (tx, rx) = mpsc::channel(QUEUE);
                let buffers: Buffers = (0..=self.workers).map(|_| Mutex::default()).collect();
                tokio::spawn(write(rx, out, buffers.clone()));
                let sink = Sink {
                    tx,
                    dropped: dropped.clone(),
                    buffers,
                };
                self.sinks.insert(destination.clone(), sink.clone());
                sink
            }
        };
        Ok(AccessLog {
            format,
            log_handshake,
            sink,
        })
    }

    /// Forgets the writers of destinations no environment uses any more; each one stops
    /// once the sessions still holding it have ended.
    pub fn retain(&mut self, used: &HashSet<Destination>) {
        self.sinks
            .retain(|destination, _| used.contains(destination));
    }

    /// Waits until every line sent so far is written.
    pub async fn flush(&self) {
        for sink in self.sinks.values() {
            let (tx, rx) = oneshot::channel();
            if sink.tx.send(Message::Flush(tx)).await.is_ok() {
                let _ = rx.await;
            }
        }
    }
}

fn open(path: &Path) -> Result<tokio::fs::File, OpenError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| OpenError {
            path: path.to_owned(),
            source,
        })?;
    Ok(tokio::fs::File::from_std(file))
}

async fn write(
    mut rx: mpsc::Receiver<Message>,
    mut out: Box<dyn AsyncWrite + Send + Unpin>,
    buffers: Buffers,
) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut bytes = Vec::with_capacity(64 * 1024);
    let mut flushes = Vec::new();
    let mut failed = false;
    let mut open = true;
    while open {
        let ticked = tokio::select! {
            message = rx.recv() => {
                match message {
                    Some(message) => take(message, &mut bytes, &mut flushes),
                    None => open = false,
                }
                false
            }
            _ = tick.tick() => true,
        };
        drain(&mut rx, &mut bytes, &mut flushes);
        // The lines still in the buffers: on the tick, for a flush, and at the end.
        if ticked || !open || !flushes.is_empty() {
            for buffer in buffers.iter() {
                // Locked first: a worker hands its full buffer over under that lock, so what
                // is queued from it comes before what its buffer holds.
                let mut held = lock(buffer);
                drain(&mut rx, &mut bytes, &mut flushes);
                bytes.append(&mut held);
            }
        }
        if !bytes.is_empty() && !failed {
            let written = match out.write_all(&bytes).await {
                Ok(()) => out.flush().await,
                Err(error) => Err(error),
            };
            if let Err(error) = written {
                // Said once; the gateway keeps serving without its access log.
                tracing::error!(%error, "cannot write the access log; its lines are lost from now on");
                failed = true;
            }
        }
        bytes.clear();
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

fn take(message: Message, bytes: &mut Vec<u8>, flushes: &mut Vec<oneshot::Sender<()>>) {
    match message {
        Message::Lines(mut lines) => bytes.append(&mut lines),
        Message::Flush(done) => flushes.push(done),
    }
}

/// Takes every message already queued.
fn drain(
    rx: &mut mpsc::Receiver<Message>,
    bytes: &mut Vec<u8>,
    flushes: &mut Vec<oneshot::Sender<()>>,
) {
    while let Ok(message) = rx.try_recv() {
        take(message, bytes, flushes);
    }
}

impl AccessLog {
    pub fn request(&self, record: &RequestRecord<'_>) {
        let line = match self.format {
            Format::Json => record.to_json(),
            Format::Combined => combined(
                record.client,
                record.time,
                record.method,
                record.path,
                record.version,
                record.status,
                record.bytes_out,
                record.referer,
                record.user_agent,
            )
            .into_bytes(),
        };
        self.send(&line);
    }

    pub fn session(&self, record: &SessionRecord<'_>) {
        let line = match self.format {
            Format::Json => serde_json::to_string(record).unwrap_or_default(),
            Format::Combined => combined(
                ClientIp::of(record.client),
                record.time,
                "GET",
                record.path,
                "HTTP/1.1",
                101,
                record.backend_to_client.bytes,
                record.referer,
                record.user_agent,
            ),
        };
        self.send(line.as_bytes());
    }

    /// Appends `line` to this thread's buffer, handing the buffer to the writer once full.
    fn send(&self, line: &[u8]) {
        let buffers = &self.sink.buffers;
        let own = crate::worker::current()
            .and_then(|index| buffers.get(index))
            .or_else(|| buffers.last());
        let Some(own) = own else { return };
        let mut buffer = lock(own);
        buffer.extend_from_slice(line);
        buffer.push(b'\n');
        if buffer.len() < HAND_OVER {
            return;
        }
        // Handed over under the lock (see `write`).
        let full = std::mem::replace(&mut *buffer, Vec::with_capacity(HAND_OVER + 1024));
        if let Err(refused) = self.sink.tx.try_send(Message::Lines(full))
            && let Message::Lines(lines) = refused.into_inner()
        {
            let count = lines.iter().filter(|&&b| b == b'\n').count();
            self.sink
                .dropped
                .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
        }
    }
}

/// `127.0.0.1 - - [02/Dec/2026:01:52:46 +0000] "GET /a?b HTTP/1.1" 200 512 "-" "curl/8"`
#[allow(clippy::too_many_arguments)]
fn combined(
    client: ClientIp<'_>,
    time: SystemTime,
    method: &str,
    path: &str,
    version: &str,
    status: u16,
    bytes: u64,
    referer: Option<&str>,
    user_agent: Option<&str>,
) -> String {
    // Pieces pushed in turn, not one `write!` of the whole line: see bench/micro-benchmarks.md.
    let mut line = String::with_capacity(128 + path.len());
    match client.text {
        Some(text) => line.push_str(text),
        None => _ = write!(line, "{}", client.addr.ip()),
    }
    line.push_str(" - - [");
    push_combined_time(&mut line, time);
    line.push_str("] \"");
    line.push_str(method);
    line.push(' ');
    escape_into(&mut line, path);
    line.push(' ');
    line.push_str(version);
    line.push_str("\" ");
    push_decimal(&mut line, u64::from(status));
    line.push(' ');
    push_decimal(&mut line, bytes);
    line.push_str(" \"");
    escape_into(&mut line, referer.unwrap_or("-"));
    line.push_str("\" \"");
    escape_into(&mut line, user_agent.unwrap_or("-"));
    line.push('"');
    line
}

/// Appends `n` in decimal: `write!` cost ~550 instructions a line for the status and size.
fn push_decimal(line: &mut String, n: u64) {
    if n >= 10 {
        push_decimal(line, n / 10);
    }
    line.push(char::from(b'0' + (n % 10) as u8));
}

/// Appends `text` with nginx's escaping: `"`, `\` and bytes outside printable ASCII as
/// `\xHH`.
fn escape_into(line: &mut String, text: &str) {
    let plain = |byte: &u8| *byte != b'"' && *byte != b'\\' && (0x20..0x7f).contains(byte);
    if text.as_bytes().iter().all(plain) {
        line.push_str(text);
        return;
    }
    for byte in text.bytes() {
        if plain(&byte) {
            line.push(char::from(byte));
        } else {
            let _ = write!(line, "\\x{byte:02X}");
        }
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn serialize_time<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_millis(*time))
}

fn serialize_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(millis(*d))
}

fn serialize_trace_id<S: serde::Serializer>(id: &u128, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(std::str::from_utf8(&trace_id_hex(*id)).unwrap_or_default())
}

fn serialize_opt_millis<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(millis(*d)),
        None => s.serialize_none(),
    }
}

fn serialize_ip<S: serde::Serializer>(addr: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&addr.ip())
}

/// A client's IP address, with its text when its connection already made it (formatting
/// one cost ~1,300 instructions per access-log line).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp<'a> {
    pub addr: SocketAddr,
    pub text: Option<&'a str>,
}

impl ClientIp<'_> {
    pub fn of(addr: SocketAddr) -> Self {
        ClientIp { addr, text: None }
    }
}

impl Serialize for ClientIp<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.text {
            Some(text) => s.serialize_str(text),
            None => serialize_ip(&self.addr, s),
        }
    }
}

/// One HTTP request (`type: "http"`), or a WebSocket handshake (`type: "websocket_handshake"`).
#[derive(Debug, Serialize)]
pub struct RequestRecord<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the request arrived.
    #[serde(serialize_with = "serialize_time")]
    pub time: SystemTime,
    pub request_id: &'a str,
    #[serde(serialize_with = "serialize_trace_id")]
    pub trace_id: u128,
    pub environment: &'a str,
    /// `null` when no proxy matched.
    pub proxy: Option<&'a str>,
    pub method: &'a str,
    /// Path and query as the client sent them.
    pub path: &'a str,
    #[serde(skip)]
    pub version: &'a str,
    pub status: u16,
    /// Until the response body ended, in milliseconds.
    #[serde(rename = "duration_ms", serialize_with = "serialize_millis")]
    pub duration: Duration,
    /// Until the backend's response head, in milliseconds (`null`: no backend answered).
    #[serde(rename = "backend_ms", serialize_with = "serialize_opt_millis")]
    pub backend_duration: Option<Duration>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    #[serde(rename = "client_ip")]
    pub client: ClientIp<'a>,
    pub consumer: Option<&'a str>,
    /// The backend URL the request went to.
    pub backend: Option<&'a str>,
    #[serde(skip)]
    pub referer: Option<&'a str>,
    #[serde(skip)]
    pub user_agent: Option<&'a str>,
}

impl RequestRecord<'_> {
    /// The record as `serde_json::to_string` writes it (a test compares them), ~4,000
    /// instructions cheaper per line: the keys go out as they are, and a value is copied
    /// whole unless it holds a character JSON escapes (then `serde_json` writes it).
    fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.path.len());
        out.extend_from_slice(b"{\"type\":");
        json_str(&mut out, self.kind);
        out.extend_from_slice(b",\"time\":");
        json_str(&mut out, &rfc3339_millis(self.time));
        out.extend_from_slice(b",\"request_id\":");
        json_str(&mut out, self.request_id);
        out.extend_from_slice(b",\"trace_id\":\"");
        out.extend_from_slice(&trace_id_hex(self.trace_id));
        out.push(b'"');
        out.extend_from_slice(b",\"environment\":");
        json_str(&mut out, self.environment);
        out.extend_from_slice(b",\"proxy\":");
        json_opt_str(&mut out, self.proxy);
        out.extend_from_slice(b",\"method\":");
        json_str(&mut out, self.method);
        out.extend_from_slice(b",\"path\":");
        json_str(&mut out, self.path);
        out.extend_from_slice(b",\"status\":");
        json_value(&mut out, &self.status);
        out.extend_from_slice(b",\"duration_ms\":");
        json_value(&mut out, &millis(self.duration));
        out.extend_from_slice(b",\"backend_ms\":");
        json_value(&mut out, &self.backend_duration.map(millis));
        out.extend_from_slice(b",\"bytes_in\":");
        json_value(&mut out, &self.bytes_in);
        out.extend_from_slice(b",\"bytes_out\":");
        json_value(&mut out, &self.bytes_out);
        out.extend_from_slice(b",\"client_ip\":");
        match self.client.text {
            Some(text) => json_str(&mut out, text),
            None => json_value(&mut out, &self.client),
        }
        out.extend_from_slice(b",\"consumer\":");
        json_opt_str(&mut out, self.consumer);
        out.extend_from_slice(b",\"backend\":");
        json_opt_str(&mut out, self.backend);
        out.push(b'}');
        out
    }
}

/// `text` as a JSON string.
fn json_str(out: &mut Vec<u8>, text: &str) {
    // Every byte looked at, without stopping at the first to escape: the compiler then
    // checks 16 at a time.
    let escapes = text.bytes().fold(false, |any, b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if escapes {
        json_value(out, text);
    } else {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

fn json_opt_str(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => json_str(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

/// `value` as `serde_json` writes it (writing into a `Vec` cannot fail).
fn json_value<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(out, value);
}

/// What one direction of a WebSocket session carried.
#[derive(Debug, Serialize, Clone, Copy)]
pub struct Traffic {
    pub messages: u64,
    pub bytes: u64,
}

/// One ended WebSocket session (`type: "websocket_session"`).
#[derive(Debug, Serialize)]
pub struct SessionRecord<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the session ended.
    #[serde(serialize_with = "serialize_time")]
    pub time: SystemTime,
    pub request_id: &'a str,
    pub trace_id: String,
    pub session_id: u64,
    pub environment: &'a str,
    pub proxy: &'a str,
    pub path: &'a str,
    #[serde(rename = "duration_ms", serialize_with = "serialize_millis")]
    pub duration: Duration,
    pub client_to_backend: Traffic,
    pub backend_to_client: Traffic,
    /// `null`: the connection ended without a close frame.
    pub close_code: Option<u16>,
    pub close_reason: &'a str,
    /// `client`, `backend` or `gateway`.
    pub initiator: &'static str,
    #[serde(rename = "client_ip", serialize_with = "serialize_ip")]
    pub client: SocketAddr,
    pub consumer: Option<&'a str>,
    pub backend: &'a str,
    pub subprotocol: Option<&'a str>,
    #[serde(skip)]
    pub referer: Option<&'a str>,
    #[serde(skip)]
    pub user_agent: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The hand-written JSON line is exactly serde_json's: escapes, nulls, numbers.
        #[test]
        fn json_lines_are_serde_jsons(
            texts in proptest::collection::vec(any::<String>(), 8),
            plain in "[ -~]{0,40}",
            optional in proptest::collection::vec(any::<bool>(), 4),
            numbers in proptest::collection::vec(any::<u64>(), 3),
            micros in proptest::collection::vec(0u64..10_000_000_000, 2),
            ip_text in any::<bool>(),
            trace_id in any::<u128>(),
        ) {
            let text = |i: usize| texts.get(i).map_or("", String::as_str);
            let on = |i: usize| optional.get(i).copied().unwrap_or(false);
            let number = |i: usize| numbers.get(i).copied().unwrap_or(0);
            let micro = |i: usize| Duration::from_micros(micros.get(i).copied().unwrap_or(0));
            let record = RequestRecord {
                kind: "http",
                time: SystemTime::UNIX_EPOCH + Duration::from_micros(number(0) % (1 << 48)),
                request_id: text(0),
                trace_id,
                environment: &plain,
                proxy: on(0).then(|| text(2)),
                method: text(3),
                path: text(4),
                version: "HTTP/1.1",
                status: u16::try_from(number(1) % 1000).unwrap(),
                duration: micro(0),
                backend_duration: on(1).then(|| micro(1)),
                bytes_in: number(1),
                bytes_out: number(2),
                client: ClientIp {
                    addr: "[2001:db8::1]:443".parse().unwrap(),
                    text: ip_text.then(|| text(5)),
                },
                consumer: on(2).then(|| text(6)),
                backend: on(3).then(|| text(7)),
                referer: None,
                user_agent: None,
            };
            let ours = String::from_utf8(record.to_json()).unwrap();
            prop_assert_eq!(ours, serde_json::to_string(&record).unwrap());
        }

        #[test]
        fn decimals_are_what_display_writes(n in any::<u64>(), small in 0u64..1000) {
            for n in [n, small] {
                let mut line = "x".to_owned();
                push_decimal(&mut line, n);
                prop_assert_eq!(line, format!("x{n}"));
            }
        }
    }

    #[test]
    fn combined_lines_look_like_nginx() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_640_366);
        let line = combined(
            ClientIp::of("10.1.2.3:5555".parse().unwrap()),
            time,
            "GET",
            "/a b\"c?q=1",
            "HTTP/1.1",
            200,
            512,
            None,
            Some("curl/8.0"),
        );
        assert_eq!(
            line,
            r#"10.1.2.3 - - [02/Dec/2025:01:52:46 +0000] "GET /a b\x22c?q=1 HTTP/1.1" 200 512 "-" "curl/8.0""#
        );
    }

    /// A log to `access.log` in a fresh folder (kept while the first value lives), for a
    /// gateway with `workers` worker threads; its sinks and its dropped-lines counter.
    fn file_log(workers: usize) -> (tempfile::TempDir, PathBuf, Sinks, AccessLog, Counter) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let mut sinks = Sinks::new(workers);
        let dropped = Counter::default();
        let destination = Destination::File(path.clone());
        let log = sinks
            .get(&destination, Format::Json, false, &dropped)
            .unwrap();
        (dir, path, sinks, log, dropped)
    }

    #[tokio::test]
    async fn lines_reach_the_file_in_order_and_flush_waits_for_them() {
        let (_dir, path, sinks, log, dropped) = file_log(0);
        for i in 0..1000 {
            log.send(format!("{{\"n\":{i}}}").as_bytes());
        }
        sinks.flush().await;
        let text = std::fs::read_to_string(&path).unwrap();
        let numbers: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(numbers, (0..1000).collect::<Vec<_>>());
        assert_eq!(dropped.get(), 0);
    }

    /// Worker threads and another thread log at once: every line arrives, each thread's in
    /// the order it logged them, through buffers handed over when full and taken at the flush.
    #[tokio::test]
    async fn lines_of_every_worker_arrive_in_each_workers_order() {
        let (_dir, path, sinks, log, dropped) = file_log(2);
        // 5,000 lines of ~16 bytes per thread: each buffer is handed over twice.
        let threads: Vec<_> = [Some(0), Some(1), None]
            .into_iter()
            .enumerate()
            .map(|(t, worker)| {
                let log = log.clone();
                std::thread::spawn(move || {
                    if let Some(index) = worker {
                        crate::worker::set(index, crate::worker::reserve(1));
                    }
                    for n in 0..5000 {
                        log.send(format!("{{\"t\":{t},\"n\":{n}}}").as_bytes());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        sinks.flush().await;
        let mut seen = [Vec::new(), Vec::new(), Vec::new()];
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let t = usize::try_from(value["t"].as_u64().unwrap()).unwrap();
            seen[t].push(value["n"].as_u64().unwrap());
        }
        for numbers in seen {
            assert_eq!(numbers, (0..5000).collect::<Vec<_>>());
        }
        assert_eq!(dropped.get(), 0);
    }

    /// Without a flush, a line reaches the file on the writer's next tick.
    #[tokio::test]
    async fn a_line_is_written_soon_without_a_flush() {
        let (_dir, path, _sinks, log, _) = file_log(1);
        log.send(b"{\"n\":1}");
        let written = async {
            while std::fs::read_to_string(&path).unwrap_or_default() != "{\"n\":1}\n" {
                tokio::time::sleep(FLUSH_EVERY / 10).await;
            }
        };
        tokio::time::timeout(FLUSH_EVERY * 50, written)
            .await
            .expect("the line was written");
    }

    /// A buffer the writer has no room for is dropped and its lines counted.
    #[test]
    fn a_full_queue_drops_whole_buffers_and_counts_their_lines() {
        // A queue of one and no writer: the first full buffer waits, the second is dropped.
        let (tx, _rx) = mpsc::channel(1);
        let dropped = Counter::default();
        let log = AccessLog {
            format: Format::Json,
            log_handshake: false,
            sink: Sink {
                tx,
                dropped: dropped.clone(),
                buffers: (0..1).map(|_| Mutex::default()).collect(),
            },
        };
        let line = "x".repeat(1023);
        // 1,024 bytes with its newline: 32 lines fill a buffer.
        let per_buffer = HAND_OVER / 1024;
        for _ in 0..per_buffer * 2 {
            log.send(line.as_bytes());
        }
        assert_eq!(dropped.get(), u64::try_from(per_buffer).unwrap());
    }

    #[test]
    fn an_unwritable_file_is_refused_at_once() {
        let mut sinks = Sinks::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let destination = Destination::File("/nonexistent-dir/access.log".into());
        let error = sinks
            .get(&destination, Format::Json, false, &Counter::default())
            .unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent-dir/access.log"),
            "{error}"
        );
    }
}
