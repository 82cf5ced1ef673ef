//! The gateway's connection registry under load, seen through its admin API: while the idle
//! run holds N sessions, times `GET /connections` (the default page and the largest page) and
//! `GET /metrics`, one request after another over one keep-alive connection, and checks that
//! every answer counts the N sessions held. Also times new WebSocket sessions opened one after
//! another, before the N open and while they are held: a full house must not slow them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use crate::wsclient::{Frame, Target, WsConn};

/// The admin API's default `per_page` (`DEFAULT_PER_PAGE` in `strait::admin`, not exported;
/// each answer's `per_page` is checked against it).
pub const DEFAULT_PER_PAGE: u64 = 50;
/// The largest `per_page` the admin API accepts (`MAX_PER_PAGE`, not exported either).
pub const MAX_PER_PAGE: u64 = 500;
/// The target of issue 5: `GET /connections` answers within this at 10,000 sessions.
pub const TARGET: Duration = Duration::from_millis(100);
/// Longest one request may take before the probe gives up.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// The metric family that counts open sessions per environment and proxy.
const ACTIVE_METRIC: &str = "strait_websocket_connections_active";

/// One timed request path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /connections`: the first page at the default page size.
    ConnectionsDefault,
    /// `GET /connections?per_page=500`: the largest page.
    ConnectionsMax,
    /// `GET /metrics`: the whole OpenMetrics text.
    Metrics,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [
        Endpoint::ConnectionsDefault,
        Endpoint::ConnectionsMax,
        Endpoint::Metrics,
    ];

    pub fn path(self) -> String {
        match self {
            Endpoint::ConnectionsDefault => "/connections".into(),
            Endpoint::ConnectionsMax => format!("/connections?per_page={MAX_PER_PAGE}"),
            Endpoint::Metrics => "/metrics".into(),
        }
    }

    /// The page size the answer must carry (`None`: not a list).
    fn per_page(self) -> Option<u64> {
        match self {
            Endpoint::ConnectionsDefault => Some(DEFAULT_PER_PAGE),
            Endpoint::ConnectionsMax => Some(MAX_PER_PAGE),
            Endpoint::Metrics => None,
        }
    }

    /// Whether the 100 ms target is about this request.
    pub fn is_list(self) -> bool {
        self.per_page().is_some()
    }
}

/// The timings of one path in one probe.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Timings {
    pub path: String,
    /// Each request's time in microseconds, from sending its head to its body's last byte.
    pub micros: Vec<f64>,
    /// The size of the last answer's body.
    pub bytes: usize,
}

/// What one probe measured while `held` sessions were open.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Probe {
    /// Sessions the load generators held open during the probe.
    pub held: usize,
    /// In the order of [`Endpoint::ALL`].
    pub timings: Vec<Timings>,
    /// Answers checked in all (every answer is checked).
    pub checked: usize,
    /// Answers that did not count `held` sessions, or were malformed.
    pub mismatched: usize,
    /// What was wrong with the first few of them.
    pub mismatches: Vec<String>,
    /// New sessions opened one after another before the idle run opened its own
    /// ([`new_sessions`]).
    #[serde(default)]
    pub new_before: Option<Timings>,
    /// The same while the idle run's sessions were held.
    #[serde(default)]
    pub new_held: Option<Timings>,
    /// Connections each worker thread served, by worker (`strait_worker_connections` in the
    /// last `/metrics` answer; empty if it has none).
    #[serde(default)]
    pub workers: Vec<u64>,
}

/// Most mismatch descriptions kept per probe.
const MAX_MISMATCHES: usize = 6;

impl Probe {
    fn mismatch(&mut self, what: String) {
        self.mismatched += 1;
        if self.mismatches.len() < MAX_MISMATCHES {
            self.mismatches.push(what);
        }
    }

    pub fn timings(&self, endpoint: Endpoint) -> Option<&Timings> {
        let path = endpoint.path();
        self.timings.iter().find(|t| t.path == path)
    }
}

/// Times `requests` sequential requests to each endpoint on the admin API at `admin`, over
/// one keep-alive HTTP/1.1 connection (opened before the first timed request), and checks
/// each answer against `held`. Fails only if the API cannot be reached or answers non-2xx.
pub async fn probe(admin: SocketAddr, held: usize, requests: usize) -> Result<Probe> {
    let stream = tokio::time::timeout(REQUEST_LIMIT, TcpStream::connect(admin))
        .await
        .map_err(|_| anyhow!("cannot connect to the admin API at {admin} in {REQUEST_LIMIT:?}"))?
        .with_context(|| format!("cannot connect to the admin API at {admin}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake with the admin API")?;
    let driver = tokio::spawn(connection);
    let mut probe = Probe {
        held,
        ..Probe::default()
    };
    let result = async {
        for endpoint in Endpoint::ALL {
            let path = endpoint.path();
            let mut timings = Timings {
                path: path.clone(),
                micros: Vec::with_capacity(requests),
                bytes: 0,
            };
            for _ in 0..requests {
                let (took, body) = tokio::time::timeout(
                    REQUEST_LIMIT,
                    get(&mut sender, &admin.to_string(), &path),
                )
                .await
                .map_err(|_| anyhow!("GET {path} took longer than {REQUEST_LIMIT:?}"))??;
                timings.micros.push(took.as_secs_f64() * 1e6);
                timings.bytes = body.len();
                probe.checked += 1;
                if let Err(problem) = check(endpoint, &body, held) {
                    probe.mismatch(format!("GET {path}: {problem}"));
                }
                if endpoint == Endpoint::Metrics {
                    probe.workers = worker_connections(&String::from_utf8_lossy(&body));
                }
            }
            probe.timings.push(timings);
        }
        anyhow::Ok(())
    }
    .await;
    driver.abort();
    result.map(|()| probe)
}

/// What [`new_sessions`] times, as its [`Timings::path`].
pub const NEW_SESSION: &str = "new WebSocket session";

/// Opens `count` WebSocket sessions through the gateway at `target`, one after another: each
/// is timed from its TCP connect to the 101, then proves it relays with one 64-byte echo and
/// ends with a close handshake. Fails on the first session that does not.
pub async fn new_sessions(target: &Target, count: usize) -> Result<Timings> {
    let mut timings = Timings {
        path: NEW_SESSION.into(),
        micros: Vec::with_capacity(count),
        bytes: 0,
    };
    let payload = [0u8; 64];
    for i in 0..count {
        let started = Instant::now();
        let mut conn = WsConn::connect(target, target.source(i), i as u64, REQUEST_LIMIT).await?;
        timings.micros.push(started.elapsed().as_secs_f64() * 1e6);
        let frame = Frame::binary(&payload, conn.mask());
        tokio::time::timeout(REQUEST_LIMIT, conn.round_trip(&frame, payload.len()))
            .await
            .map_err(|_| anyhow!("a new session's echo took longer than {REQUEST_LIMIT:?}"))?
            .context("a new session's echo")?;
        conn.close(REQUEST_LIMIT).await;
    }
    Ok(timings)
}

/// One GET on the open connection: its time and its body.
async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
    path: &str,
) -> Result<(Duration, Bytes)> {
    let request = Request::get(path)
        .header(header::HOST, host)
        .body(Empty::new())?;
    sender
        .ready()
        .await
        .context("the admin API closed the keep-alive connection")?;
    let started = Instant::now();
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("GET {path}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("reading the answer to GET {path}"))?
        .to_bytes();
    let took = started.elapsed();
    if status != StatusCode::OK {
        bail!(
            "GET {path} answered {status}: {}",
            String::from_utf8_lossy(body.get(..300).unwrap_or(body.as_ref()))
        );
    }
    Ok((took, body))
}

/// The part of a `GET /connections` answer that is checked.
#[derive(Deserialize)]
struct Page {
    per_page: u64,
    total: u64,
    connections: Vec<serde::de::IgnoredAny>,
}

/// Whether an answer counts `held` sessions (and a list page has the right length).
fn check(endpoint: Endpoint, body: &[u8], held: usize) -> Result<(), String> {
    let held = held as u64;
    match endpoint.per_page() {
        Some(per_page) => {
            let page: Page = serde_json::from_slice(body)
                .map_err(|e| format!("not the connection list's JSON: {e}"))?;
            let listed = page.connections.len() as u64;
            if page.total != held {
                return Err(format!(
                    "total is {}, but {held} sessions were held",
                    page.total
                ));
            }
            if page.per_page != per_page || listed != per_page.min(held) {
                return Err(format!(
                    "per_page {} with {listed} connections listed; expected per_page {per_page} \
                     with {}",
                    page.per_page,
                    per_page.min(held)
                ));
            }
            Ok(())
        }
        None => {
            let text = std::str::from_utf8(body).map_err(|_| "not UTF-8 text".to_owned())?;
            let active = active_sessions(text);
            match active {
                Some(active) if active == held => Ok(()),
                Some(active) => Err(format!(
                    "{ACTIVE_METRIC} adds up to {active}, but {held} sessions were held"
                )),
                None if held == 0 => Ok(()),
                None => Err(format!("no {ACTIVE_METRIC} series")),
            }
        }
    }
}

/// The sum of every `strait_websocket_connections_active` series, if there is one.
pub fn active_sessions(metrics: &str) -> Option<u64> {
    let mut sum = None;
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(ACTIVE_METRIC) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue; // another family whose name starts the same way
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok());
        if let Some(value) = value {
            *sum.get_or_insert(0) += value;
        }
    }
    sum
}

/// `strait_worker_connections` by worker, in the workers' order.
pub fn worker_connections(metrics: &str) -> Vec<u64> {
    let mut counts: Vec<(u64, u64)> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("strait_worker_connections{worker=\""))
        .filter_map(|rest| {
            let (worker, value) = rest.split_once("\"} ")?;
            Some((worker.parse().ok()?, value.trim().parse().ok()?))
        })
        .collect();
    counts.sort_unstable();
    counts.into_iter().map(|(_, n)| n).collect()
}

/// Median, p99 (nearest rank) and maximum of `values`, or `None` when there are none.
pub fn summary(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let median = crate::results::median(&v)?;
    let rank = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len());
    Some((median, *v.get(rank - 1)?, *v.last()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_connections_come_in_the_workers_order() {
        let text = "# TYPE strait_worker_connections gauge\n\
                    strait_worker_connections{worker=\"10\"} 7\n\
                    strait_worker_connections{worker=\"2\"} 5\n\
                    strait_worker_connections{worker=\"0\"} 4951\n\
                    strait_worker_connections_other{worker=\"1\"} 9\n# EOF\n";
        assert_eq!(worker_connections(text), [4951, 5, 7]);
        assert!(worker_connections("# EOF\n").is_empty());
    }

    #[test]
    fn active_sessions_add_up_over_series() {
        let text = "# TYPE strait_websocket_connections_active gauge\n\
                    strait_websocket_connections_active{environment=\"a\",proxy=\"p\"} 3\n\
                    strait_websocket_connections_active{environment=\"b\",proxy=\"p\"} 4\n\
                    strait_websocket_connections_active_other 100\n# EOF\n";
        assert_eq!(active_sessions(text), Some(7));
        assert_eq!(active_sessions("# EOF\n"), None);
    }

    #[test]
    fn pages_are_checked() {
        let page = |total: u64, listed: usize, per_page: u64| {
            let list: Vec<u8> = vec![0; listed];
            serde_json::json!({"page": 1, "per_page": per_page, "total": total, "connections": list})
                .to_string()
        };
        let ok = page(120, 50, 50);
        assert_eq!(
            check(Endpoint::ConnectionsDefault, ok.as_bytes(), 120),
            Ok(())
        );
        let few = page(20, 20, 500);
        assert_eq!(check(Endpoint::ConnectionsMax, few.as_bytes(), 20), Ok(()));
        let wrong = page(119, 50, 50);
        let problem = check(Endpoint::ConnectionsDefault, wrong.as_bytes(), 120).unwrap_err();
        assert!(problem.contains("total is 119"), "{problem}");
        assert!(check(Endpoint::ConnectionsMax, ok.as_bytes(), 120).is_err());
        assert!(check(Endpoint::Metrics, b"# EOF\n", 3).is_err());
        assert_eq!(check(Endpoint::Metrics, b"# EOF\n", 0), Ok(()));
    }

    #[test]
    fn summaries() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(summary(&v), Some((100.5, 198.0, 200.0)));
        assert_eq!(summary(&[5.0]), Some((5.0, 5.0, 5.0)));
        assert_eq!(summary(&[]), None);
    }
}
