//! The access log: one line per HTTP request, one per WebSocket session when it ends (and
//! one at its handshake with `log_handshake`), as JSON or in nginx's `combined` format.
//!
//! The data plane formats a line and hands it to a bounded channel without waiting; one
//! writer task per destination batches lines into its file or stdout. A full channel drops
//! the line and counts it (`strait_access_log_dropped_total`) rather than slow traffic down.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::store::time::{combined_time, rfc3339_millis};

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE: usize = 64 * 1024;

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
}

#[derive(Debug)]
enum Message {
    Line(String),
    /// Answered once every line sent before it is written out.
    Flush(oneshot::Sender<()>),
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
}

impl Sinks {
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
                tokio::spawn(write(rx, out));
                let sink = Sink {
                    tx,
                    dropped: dropped.clone(),
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

async fn write(mut rx: mpsc::Receiver<Message>, mut out: Box<dyn AsyncWrite + Send + Unpin>) {
    let mut batch = Vec::with_capacity(256);
    let mut bytes = Vec::with_capacity(64 * 1024);
    let mut failed = false;
    while rx.recv_many(&mut batch, 256).await > 0 {
        let mut flushes = Vec::new();
        for message in batch.drain(..) {
            match message {
                Message::Line(line) => {
                    bytes.extend_from_slice(line.as_bytes());
                    bytes.push(b'\n');
                }
                Message::Flush(done) => flushes.push(done),
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
        for done in flushes {
            let _ = done.send(());
        }
    }
}

impl AccessLog {
    pub fn request(&self, record: &RequestRecord<'_>) {
        let line = match self.format {
            Format::Json => serde_json::to_string(record).unwrap_or_default(),
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
            ),
        };
        self.send(line);
    }

    pub fn session(&self, record: &SessionRecord<'_>) {
        let line = match self.format {
            Format::Json => serde_json::to_string(record).unwrap_or_default(),
            Format::Combined => combined(
                record.client,
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
        self.send(line);
    }

    fn send(&self, line: String) {
        if self.sink.tx.try_send(Message::Line(line)).is_err() {
            self.sink.dropped.inc();
        }
    }
}

/// `127.0.0.1 - - [02/Dec/2026:01:52:46 +0000] "GET /a?b HTTP/1.1" 200 512 "-" "curl/8"`
#[allow(clippy::too_many_arguments)]
fn combined(
    client: SocketAddr,
    time: SystemTime,
    method: &str,
    path: &str,
    version: &str,
    status: u16,
    bytes: u64,
    referer: Option<&str>,
    user_agent: Option<&str>,
) -> String {
    let mut line = String::with_capacity(128 + path.len());
    let _ = write!(
        line,
        "{} - - [{}] \"{method} {} {version}\" {status} {bytes} \"{}\" \"{}\"",
        client.ip(),
        combined_time(time),
        escape(path),
        escape(referer.unwrap_or("-")),
        escape(user_agent.unwrap_or("-")),
    );
    line
}

/// nginx's escaping: `"`, `\` and bytes outside printable ASCII as `\xHH`.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte == b'"' || byte == b'\\' || !(0x20..0x7f).contains(&byte) {
            let _ = write!(out, "\\x{byte:02X}");
        } else {
            out.push(char::from(byte));
        }
    }
    out
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

/// One HTTP request (`type: "http"`), or a WebSocket handshake (`type: "websocket_handshake"`).
#[derive(Debug, Serialize)]
pub struct RequestRecord<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the request arrived.
    #[serde(serialize_with = "serialize_time")]
    pub time: SystemTime,
    pub request_id: &'a str,
    pub trace_id: String,
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
    #[serde(rename = "client_ip", serialize_with = "serialize_ip")]
    pub client: SocketAddr,
    pub consumer: Option<&'a str>,
    /// The backend URL the request went to.
    pub backend: Option<&'a str>,
    #[serde(skip)]
    pub referer: Option<&'a str>,
    #[serde(skip)]
    pub user_agent: Option<&'a str>,
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

    #[test]
    fn combined_lines_look_like_nginx() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_640_366);
        let line = combined(
            "10.1.2.3:5555".parse().unwrap(),
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

    #[tokio::test]
    async fn lines_reach_the_file_in_order_and_flush_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let mut sinks = Sinks::default();
        let dropped = Counter::default();
        let destination = Destination::File(path.clone());
        let log = sinks
            .get(&destination, Format::Json, false, &dropped)
            .unwrap();
        for i in 0..1000 {
            log.send(format!("{{\"n\":{i}}}"));
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
