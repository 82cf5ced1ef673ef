//! Prometheus metrics (OpenMetrics text at the admin API's `GET /metrics`).
//!
//! Labels are bounded: environment, proxy, method (eight values), status class, direction,
//! close code (1000-1015 exactly, others by range) and initiator — never paths or addresses.
//! The data plane records through [`RouteMetrics`], created per route when a snapshot
//! compiles: each series handle is fetched from its family once and then updated in the
//! worker thread's own [`Tally`] slots, so no lock nor atomic add is taken per request.
//! WebSocket traffic and active sessions are read from the session registry at scrape time
//! ([`SessionSource`]), so the relay pays nothing per frame for them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use super::histogram::Histogram;
use super::tally::Tally;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub environment: String,
    pub proxy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    environment: String,
    proxy: String,
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpgradeLabels {
    environment: String,
    proxy: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    environment: String,
    proxy: String,
    code: &'static str,
    initiator: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    environment: String,
    proxy: String,
    direction: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// How a WebSocket handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    Upgraded,
    /// Refused by the gateway (WebSocket disabled here, a malformed handshake, or a policy
    /// such as authentication).
    RefusedByPolicy,
    /// The backend answered with something other than 101.
    RefusedByBackend,
    /// The backend could not be reached, timed out or broke the handshake.
    BackendUnreachable,
}

impl Upgrade {
    const ALL: [Upgrade; 4] = [
        Upgrade::Upgraded,
        Upgrade::RefusedByPolicy,
        Upgrade::RefusedByBackend,
        Upgrade::BackendUnreachable,
    ];

    fn label(self) -> &'static str {
        match self {
            Upgrade::Upgraded => "upgraded",
            Upgrade::RefusedByPolicy => "refused_by_policy",
            Upgrade::RefusedByBackend => "refused_by_backend",
            Upgrade::BackendUnreachable => "backend_unreachable",
        }
    }
}

/// What the session registry reports per environment and proxy at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionTotals {
    pub environment: String,
    pub proxy: String,
    /// Sessions open now.
    pub active: u64,
    /// Messages and payload bytes since the gateway started, open and closed sessions
    /// together: `[client_to_backend, backend_to_client]`.
    pub messages: [u64; 2],
    pub bytes: [u64; 2],
    /// Messages left out by `ws_message_rate` with `on_exceed: drop`, per direction.
    pub dropped: [u64; 2],
}

/// Where WebSocket session figures come from (the session registry).
pub trait SessionSource: std::fmt::Debug + Send + Sync + 'static {
    fn totals(&self) -> Vec<SessionTotals>;
}

/// One backend target of one proxy at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetTotals {
    pub proxy: String,
    /// The target's URL.
    pub target: String,
    /// Its health checks say up (always without checks).
    pub up: bool,
    /// Open WebSocket sessions plus in-flight requests.
    pub active: u64,
    /// Requests and sessions sent to it, and those that failed.
    pub requests: u64,
    pub failures: u64,
    /// HTTP connections open to it (idle or carrying a request), and opened in all.
    pub http_connections: u64,
    pub http_connects: u64,
}

/// Where backend target figures come from (the live configuration's pools).
pub trait TargetSource: std::fmt::Debug + Send + Sync + 'static {
    fn targets(&self) -> Vec<TargetTotals>;
}

/// Every metric family of one gateway.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<RouteLabels>,
    backend_duration: HistogramFamily<RouteLabels>,
    in_flight: Family<RouteLabels, Gauge>,
    request_bytes: Family<RouteLabels, Counter>,
    response_bytes: Family<RouteLabels, Counter>,
    upgrades: Family<UpgradeLabels, Counter>,
    closes: Family<CloseLabels, Counter>,
    session_duration: HistogramFamily<RouteLabels>,
    ping_rtt: HistogramFamily<RouteLabels>,
    /// Access-log lines dropped because the writer could not keep up.
    pub access_log_dropped: Counter,
    /// The runtimes serving connections, when not the one scraping.
    runtimes: Arc<OnceLock<Vec<tokio::runtime::Handle>>>,
}

impl Metrics {
    pub fn new(sessions: Arc<dyn SessionSource>) -> Metrics {
        let histograms =
            || HistogramFamily::new_with_constructor(Histogram::durations as fn() -> Histogram);
        let mut metrics = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            request_duration: histograms(),
            backend_duration: histograms(),
            in_flight: Family::default(),
            request_bytes: Family::default(),
            response_bytes: Family::default(),
            upgrades: Family::default(),
            closes: Family::default(),
            session_duration: histograms(),
            ping_rtt: histograms(),
            access_log_dropped: Counter::default(),
            runtimes: Arc::default(),
        };
        let r = &mut metrics.registry;
        r.register(
            "strait_http_requests",
            "HTTP requests answered (WebSocket handshakes included), by status class",
            metrics.requests.clone(),
        );
        r.register(
            "strait_http_request_duration_seconds",
            "From the request's arrival to the end of the response body",
            metrics.request_duration.clone(),
        );
        r.register(
            "strait_http_backend_duration_seconds",
            "From sending the request to the backend to its response head",
            metrics.backend_duration.clone(),
        );
        r.register(
            "strait_http_requests_in_flight",
            "Requests matched to a proxy whose response has not finished",
            metrics.in_flight.clone(),
        );
        r.register(
            "strait_http_request_bytes",
            "Request body bytes received from clients",
            metrics.request_bytes.clone(),
        );
        r.register(
            "strait_http_response_bytes",
            "Response body bytes sent to clients",
            metrics.response_bytes.clone(),
        );
        r.register(
            "strait_websocket_upgrades",
            "WebSocket handshakes by outcome",
            metrics.upgrades.clone(),
        );
        r.register(
            "strait_websocket_closes",
            "Ended WebSocket sessions by close code and by who started the closing",
            metrics.closes.clone(),
        );
        r.register(
            "strait_websocket_session_duration_seconds",
            "How long ended WebSocket sessions lasted",
            metrics.session_duration.clone(),
        );
        r.register(
            "strait_websocket_ping_rtt_seconds",
            "From a keepalive ping to the pinged side's next frame (its pong)",
            metrics.ping_rtt.clone(),
        );
        r.register(
            "strait_access_log_dropped",
            "Access-log lines dropped because the writer could not keep up",
            metrics.access_log_dropped.clone(),
        );
        r.register_collector(Box::new(SessionCollector(sessions)));
        r.register_collector(Box::new(ProcessCollector(metrics.runtimes.clone())));
        metrics
    }

    /// Reports the busy time of `runtimes` (the worker threads serving connections) instead
    /// of the runtime that scrapes.
    pub fn with_runtimes(self, runtimes: Vec<tokio::runtime::Handle>) -> Metrics {
        let _ = self.runtimes.set(runtimes);
        self
    }

    /// Adds the client connections each worker serves (WebSocket sessions included), read
    /// from `loads` (one per worker, by index) when scraped.
    pub fn with_worker_connections(mut self, loads: Arc<[AtomicUsize]>) -> Metrics {
        self.registry
            .register_collector(Box::new(WorkerCollector(loads)));
        self
    }

    /// Adds the backend target figures, read from `targets` when scraped.
    pub fn with_targets(mut self, targets: Arc<dyn TargetSource>) -> Metrics {
        self.registry
            .register_collector(Box::new(TargetCollector(targets)));
        self
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// A counter that clones share, added to in the worker thread's own slots.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<Tally>);

impl Counter {
    pub fn inc(&self) {
        self.0.add(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.0.add(n);
    }

    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

impl TypedMetric for Counter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Counter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A gauge likewise.
#[derive(Debug, Clone, Default)]
struct Gauge(Arc<Tally>);

impl TypedMetric for Gauge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for Gauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.0.get_signed())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The handles of one route (or of an environment's unmatched requests, proxy `""`),
/// each fetched from its family on first use and then updated without a lock.
#[derive(Debug)]
pub struct RouteMetrics {
    metrics: Arc<Metrics>,
    pub labels: RouteLabels,
    handles: OnceLock<Box<Handles>>,
}

#[derive(Debug)]
struct Handles {
    /// By method (then `OTHER`) and status class.
    requests: [OnceLock<Counter>; (METHODS.len() + 1) * STATUS_CLASSES.len()],
    request_duration: OnceLock<Histogram>,
    backend_duration: OnceLock<Histogram>,
    in_flight: OnceLock<Gauge>,
    request_bytes: OnceLock<Counter>,
    response_bytes: OnceLock<Counter>,
    upgrades: [OnceLock<Counter>; Upgrade::ALL.len()],
    ping_rtt: OnceLock<Histogram>,
    /// By close code (as labelled) and initiator.
    closes: [OnceLock<Counter>; CLOSE_CODES.len() * INITIATORS.len()],
    session_duration: OnceLock<Histogram>,
}

impl Default for Handles {
    fn default() -> Self {
        Handles {
            requests: std::array::from_fn(|_| OnceLock::new()),
            request_duration: OnceLock::new(),
            backend_duration: OnceLock::new(),
            in_flight: OnceLock::new(),
            request_bytes: OnceLock::new(),
            response_bytes: OnceLock::new(),
            upgrades: std::array::from_fn(|_| OnceLock::new()),
            ping_rtt: OnceLock::new(),
            closes: std::array::from_fn(|_| OnceLock::new()),
            session_duration: OnceLock::new(),
        }
    }
}

/// The methods with their own label value; any other is `OTHER`.
const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl RouteMetrics {
    pub fn new(metrics: Arc<Metrics>, environment: &str, proxy: &str) -> RouteMetrics {
        RouteMetrics {
            metrics,
            labels: RouteLabels {
                environment: environment.to_owned(),
                proxy: proxy.to_owned(),
            },
            handles: OnceLock::new(),
        }
    }

    fn handles(&self) -> &Handles {
        self.handles.get_or_init(Box::default)
    }

    /// Counts a finished request and its traffic.
    pub fn request_done(
        &self,
        method: &Method,
        status: StatusCode,
        took: Duration,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        let m = &*self.metrics;
        let handles = self.handles();
        let method_slot = METHODS.iter().position(|known| known == method);
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        let slot = method_slot.unwrap_or(METHODS.len()) * STATUS_CLASSES.len() + class;
        if let Some(cell) = handles.requests.get(slot) {
            let counter = cell.get_or_init(|| {
                let labels = RequestLabels {
                    environment: self.labels.environment.clone(),
                    proxy: self.labels.proxy.clone(),
                    method: method_slot
                        .and_then(|i| METHODS.get(i))
                        .map_or("OTHER", Method::as_str),
                    status: STATUS_CLASSES.get(class).copied().unwrap_or("5xx"),
                };
                m.requests.get_or_create(&labels).clone()
            });
            counter.inc();
        }
        self.route(&handles.request_duration, &m.request_duration)
            .observe(took);
        if bytes_in > 0 {
            self.route(&handles.request_bytes, &m.request_bytes)
                .inc_by(bytes_in);
        }
        if bytes_out > 0 {
            self.route(&handles.response_bytes, &m.response_bytes)
                .inc_by(bytes_out);
        }
    }

    pub fn backend_answered(&self, took: Duration) {
        self.route(
            &self.handles().backend_duration,
            &self.metrics.backend_duration,
        )
        .observe(took);
    }

    /// Counts a request in flight, until [`RouteMetrics::request_ended`].
    pub fn request_began(&self) {
        self.route(&self.handles().in_flight, &self.metrics.in_flight)
            .0
            .add(1);
    }

    /// A request [`RouteMetrics::request_began`] counted is no longer in flight.
    pub fn request_ended(&self) {
        self.route(&self.handles().in_flight, &self.metrics.in_flight)
            .0
            .sub(1);
    }

    /// Counts the end of a WebSocket session (`initiator`: `client`, `backend` or `gateway`).
    pub fn session_closed(&self, code: Option<u16>, initiator: &'static str, lasted: Duration) {
        let code = close_code_index(code);
        let initiated = INITIATORS.iter().position(|i| *i == initiator);
        let cell = initiated.and_then(|i| self.handles().closes.get(code * INITIATORS.len() + i));
        let labels = || CloseLabels {
            environment: self.labels.environment.clone(),
            proxy: self.labels.proxy.clone(),
            code: CLOSE_CODES.get(code).copied().unwrap_or("other"),
            initiator,
        };
        match cell {
            Some(cell) => {
                cell.get_or_init(|| self.metrics.closes.get_or_create(&labels()).clone())
                    .inc();
            }
            None => {
                self.metrics.closes.get_or_create(&labels()).inc();
            }
        }
        self.route(
            &self.handles().session_duration,
            &self.metrics.session_duration,
        )
        .observe(lasted);
    }

    pub fn upgrade(&self, outcome: Upgrade) {
        let index = Upgrade::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        if let Some(cell) = self.handles().upgrades.get(index) {
            let counter = cell.get_or_init(|| {
                let labels = UpgradeLabels {
                    environment: self.labels.environment.clone(),
                    proxy: self.labels.proxy.clone(),
                    outcome: outcome.label(),
                };
                self.metrics.upgrades.get_or_create(&labels).clone()
            });
            counter.inc();
        }
    }

    /// The histogram the relay records keepalive round trips into.
    pub fn ping_rtt(&self) -> Histogram {
        self.route(&self.handles().ping_rtt, &self.metrics.ping_rtt)
            .clone()
    }

    fn route<'a, M, C>(&self, cell: &'a OnceLock<M>, family: &Family<RouteLabels, M, C>) -> &'a M
    where
        M: Clone,
        C: prometheus_client::metrics::family::MetricConstructor<M>,
    {
        cell.get_or_init(|| family.get_or_create(&self.labels).clone())
    }
}

/// The `code` label's values: the registered codes 1000–1015, then the rest by kind.
const CLOSE_CODES: [&str; 20] = [
    "1000", "1001", "1002", "1003", "1004", "1005", "1006", "1007", "1008", "1009", "1010", "1011",
    "1012", "1013", "1014", "1015", "none", "3xxx", "4xxx", "other",
];
/// Who can end a session, as the `initiator` label says.
const INITIATORS: [&str; 3] = ["client", "backend", "gateway"];

/// Where a close code's label is in [`CLOSE_CODES`].
fn close_code_index(code: Option<u16>) -> usize {
    match code {
        Some(code @ 1000..=1015) => usize::from(code - 1000),
        None => 16,
        Some(3000..=3999) => 17,
        Some(4000..=4999) => 18,
        Some(_) => 19,
    }
}

/// Active sessions, messages and bytes per direction, read from the registry when scraped.
#[derive(Debug)]
struct SessionCollector(Arc<dyn SessionSource>);

const DIRECTIONS: [&str; 2] = ["client_to_backend", "backend_to_client"];

impl Collector for SessionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let totals = self.0.totals();
        let labels = |t: &SessionTotals| RouteLabels {
            environment: t.environment.clone(),
            proxy: t.proxy.clone(),
        };
        let mut active = encoder.encode_descriptor(
            "strait_websocket_connections_active",
            "WebSocket sessions open now",
            None,
            MetricType::Gauge,
        )?;
        for t in &totals {
            let gauge = ConstGauge::new(i64::try_from(t.active).unwrap_or(i64::MAX));
            let route = labels(t);
            gauge.encode(active.encode_family(&route)?)?;
        }
        type Pick = fn(&SessionTotals) -> &[u64; 2];
        let counters: [(&str, &str, Pick); 3] = [
            (
                "strait_websocket_messages",
                "WebSocket data messages relayed, by direction",
                |t| &t.messages,
            ),
            (
                "strait_websocket_bytes",
                "WebSocket payload bytes relayed, by direction",
                |t| &t.bytes,
            ),
            (
                "strait_websocket_messages_dropped",
                "WebSocket data messages left out by a ws_message_rate policy, by direction",
                |t| &t.dropped,
            ),
        ];
        for (name, help, pick) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for t in &totals {
                for (direction, value) in DIRECTIONS.iter().zip(pick(t)) {
                    let labels = DirectionLabels {
                        environment: t.environment.clone(),
                        proxy: t.proxy.clone(),
                        direction,
                    };
                    ConstCounter::new(*value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    proxy: String,
    target: String,
}

/// Per backend target: up, active, requests and failures, read from the pools when scraped.
#[derive(Debug)]
struct TargetCollector(Arc<dyn TargetSource>);

impl Collector for TargetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let targets = self.0.targets();
        let labels = |t: &TargetTotals| TargetLabels {
            proxy: t.proxy.clone(),
            target: t.target.clone(),
        };
        type Gauged = fn(&TargetTotals) -> i64;
        let gauges: [(&str, &str, Gauged); 3] = [
            (
                "strait_upstream_target_up",
                "1 while the target's health checks say up, else 0",
                |t| i64::from(t.up),
            ),
            (
                "strait_upstream_target_active",
                "Open WebSocket sessions plus in-flight requests on the target",
                |t| i64::try_from(t.active).unwrap_or(i64::MAX),
            ),
            (
                "strait_upstream_target_http_connections",
                "HTTP connections open to the target, idle or carrying a request",
                |t| i64::try_from(t.http_connections).unwrap_or(i64::MAX),
            ),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for t in &targets {
                ConstGauge::new(value(t)).encode(family.encode_family(&labels(t))?)?;
            }
        }
        type Counted = fn(&TargetTotals) -> u64;
        let counters: [(&str, &str, Counted); 3] = [
            (
                "strait_upstream_target_requests",
                "Requests and WebSocket sessions sent to the target",
                |t| t.requests,
            ),
            (
                "strait_upstream_target_failures",
                "Requests to the target that failed: no connection, timeout or 5xx",
                |t| t.failures,
            ),
            (
                "strait_upstream_target_http_connects",
                "HTTP connections opened to the target",
                |t| t.http_connects,
            ),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for t in &targets {
                ConstCounter::new(value(t)).encode(family.encode_family(&labels(t))?)?;
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct WorkerCollector(Arc<[AtomicUsize]>);

impl Collector for WorkerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "strait_worker_connections",
            "Client connections (WebSocket sessions included) each worker thread serves",
            None,
            MetricType::Gauge,
        )?;
        for (worker, load) in self.0.iter().enumerate() {
            let value = i64::try_from(load.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
            let labels = [("worker", worker.to_string())];
            ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Open descriptors, their limit, resident memory and the busy time of the runtimes serving
/// connections (the worker threads, else the scraping runtime), read from `/proc` and tokio
/// when scraped (absent where they cannot be read).
#[derive(Debug)]
struct ProcessCollector(Arc<OnceLock<Vec<tokio::runtime::Handle>>>);

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauges = [
            (
                "strait_process_open_fds",
                "Open file descriptors",
                open_fds(),
            ),
            (
                "strait_process_max_fds",
                "The soft limit on open file descriptors",
                max_fds(),
            ),
            (
                "strait_process_resident_memory_bytes",
                "Resident memory",
                resident_bytes(),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
                gauge.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
            }
        }
        let current;
        let runtimes = match self.0.get() {
            Some(workers) if !workers.is_empty() => workers.as_slice(),
            _ => {
                current = tokio::runtime::Handle::try_current().ok();
                current.as_slice()
            }
        };
        if !runtimes.is_empty() {
            let (mut workers, mut busy) = (0, 0.0);
            for runtime in runtimes {
                let metrics = runtime.metrics();
                workers += metrics.num_workers();
                busy += (0..metrics.num_workers())
                    .map(|w| metrics.worker_total_busy_duration(w).as_secs_f64())
                    .sum::<f64>();
            }
            let gauge = ConstGauge::new(i64::try_from(workers).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(
                "strait_runtime_workers",
                "Tokio worker threads",
                None,
                MetricType::Gauge,
            )?)?;
            ConstCounter::new(busy).encode(encoder.encode_descriptor(
                "strait_runtime_busy_seconds",
                "Time the tokio workers spent busy, summed over workers (rate / workers = busy ratio)",
                None,
                MetricType::Counter,
            )?)?;
        }
        Ok(())
    }
}

/// Open descriptors. Linux 6.2 and later give their number as the size of `/proc/self/fd`,
/// at no cost however many there are; earlier kernels give 0 there, and the entries are
/// counted (about 1 µs each: 20 ms with 10,000 proxied connections open).
fn open_fds() -> Option<u64> {
    match std::fs::metadata("/proc/self/fd") {
        Ok(dir) if dir.len() > 0 => Some(dir.len()),
        _ => count_fds(),
    }
}

fn count_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    // One of them is the directory being read.
    Some((entries.count() as u64).saturating_sub(1))
}

fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
fn lines_for(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with(name))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(Vec<SessionTotals>);

    impl SessionSource for Fixed {
        fn totals(&self) -> Vec<SessionTotals> {
            self.0.clone()
        }
    }

    fn metrics(totals: Vec<SessionTotals>) -> Arc<Metrics> {
        Arc::new(Metrics::new(Arc::new(Fixed(totals))))
    }

    #[test]
    fn requests_are_counted_by_method_and_status_class() {
        let metrics = metrics(Vec::new());
        let route = RouteMetrics::new(metrics.clone(), "prod", "orders");
        let ok = Duration::from_millis(3);
        route.request_done(&Method::GET, StatusCode::OK, ok, 0, 10);
        route.request_done(&Method::GET, StatusCode::NO_CONTENT, ok, 0, 0);
        route.request_done(
            &Method::from_bytes(b"PURGE").unwrap(),
            StatusCode::BAD_GATEWAY,
            ok,
            5,
            7,
        );
        let text = metrics.encode().unwrap();
        let requests = lines_for(&text, "strait_http_requests_total");
        assert!(requests.contains(&r#"strait_http_requests_total{environment="prod",proxy="orders",method="GET",status="2xx"} 2"#.to_owned()), "{text}");
        assert!(requests.contains(&r#"strait_http_requests_total{environment="prod",proxy="orders",method="OTHER",status="5xx"} 1"#.to_owned()), "{text}");
        assert!(
            text.contains(
                r#"strait_http_response_bytes_total{environment="prod",proxy="orders"} 17"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"strait_http_request_bytes_total{environment="prod",proxy="orders"} 5"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"strait_http_request_duration_seconds_count{environment="prod",proxy="orders"} 3"#
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn unused_series_are_not_exported() {
        let metrics = metrics(Vec::new());
        let _route = RouteMetrics::new(metrics.clone(), "prod", "orders");
        let text = metrics.encode().unwrap();
        assert!(!text.contains("orders"), "{text}");
    }

    #[test]
    fn in_flight_counts_requests_until_they_end() {
        let metrics = metrics(Vec::new());
        let route = RouteMetrics::new(metrics.clone(), "e", "p");
        route.request_began();
        route.request_began();
        let gauge = |m: &Metrics| {
            let text = m.encode().unwrap();
            lines_for(&text, "strait_http_requests_in_flight{")
        };
        assert_eq!(
            gauge(&metrics),
            [r#"strait_http_requests_in_flight{environment="e",proxy="p"} 2"#]
        );
        route.request_ended();
        route.request_ended();
        assert_eq!(
            gauge(&metrics),
            [r#"strait_http_requests_in_flight{environment="e",proxy="p"} 0"#]
        );
    }

    #[test]
    fn session_figures_come_from_the_source() {
        let metrics = metrics(vec![SessionTotals {
            environment: "e".into(),
            proxy: "chat".into(),
            active: 3,
            messages: [10, 20],
            bytes: [100, 200],
            dropped: [0, 7],
        }]);
        let text = metrics.encode().unwrap();
        for line in [
            r#"strait_websocket_connections_active{environment="e",proxy="chat"} 3"#,
            r#"strait_websocket_messages_total{environment="e",proxy="chat",direction="client_to_backend"} 10"#,
            r#"strait_websocket_bytes_total{environment="e",proxy="chat",direction="backend_to_client"} 200"#,
            r#"strait_websocket_messages_dropped_total{environment="e",proxy="chat",direction="backend_to_client"} 7"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[derive(Debug)]
    struct Targets(Vec<TargetTotals>);

    impl TargetSource for Targets {
        fn targets(&self) -> Vec<TargetTotals> {
            self.0.clone()
        }
    }

    #[test]
    fn target_figures_come_from_the_source() {
        let target = |url: &str, up, active, requests, failures| TargetTotals {
            proxy: "users".into(),
            target: url.into(),
            up,
            active,
            requests,
            failures,
            http_connections: active / 2,
            http_connects: requests / 5,
        };
        let metrics =
            Metrics::new(Arc::new(Fixed(Vec::new()))).with_targets(Arc::new(Targets(vec![
                target("http://a:1/", true, 2, 10, 1),
                target("http://b:2/", false, 0, 5, 5),
            ])));
        let text = metrics.encode().unwrap();
        for line in [
            r#"strait_upstream_target_up{proxy="users",target="http://a:1/"} 1"#,
            r#"strait_upstream_target_up{proxy="users",target="http://b:2/"} 0"#,
            r#"strait_upstream_target_active{proxy="users",target="http://a:1/"} 2"#,
            r#"strait_upstream_target_requests_total{proxy="users",target="http://a:1/"} 10"#,
            r#"strait_upstream_target_failures_total{proxy="users",target="http://b:2/"} 5"#,
            r#"strait_upstream_target_http_connections{proxy="users",target="http://a:1/"} 1"#,
            r#"strait_upstream_target_http_connects_total{proxy="users",target="http://a:1/"} 2"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(
            text.contains("# TYPE strait_upstream_target_requests counter"),
            "{text}"
        );
    }

    #[test]
    fn close_codes_are_bounded() {
        let label = |code| CLOSE_CODES.get(close_code_index(code)).copied();
        assert_eq!(label(Some(1000)), Some("1000"));
        assert_eq!(label(Some(1015)), Some("1015"));
        assert_eq!(label(Some(4321)), Some("4xxx"));
        assert_eq!(label(Some(3000)), Some("3xxx"));
        assert_eq!(label(Some(1016)), Some("other"));
        assert_eq!(label(None), Some("none"));
    }

    #[test]
    fn process_figures_are_read() {
        let text = metrics(Vec::new()).encode().unwrap();
        assert!(text.contains("strait_process_open_fds "), "{text}");
        assert!(
            text.contains("strait_process_resident_memory_bytes "),
            "{text}"
        );
    }

    #[test]
    fn open_descriptors_are_counted_either_way() {
        // Held while counting: other tests open and close descriptors meanwhile, but never
        // these.
        let held: Vec<_> = (0..200)
            .map(|_| std::fs::File::open("/proc/self/status").unwrap())
            .collect();
        for (how, count) in [("size", open_fds()), ("entries", count_fds())] {
            let count = count.unwrap_or(0);
            assert!(count >= held.len() as u64, "{how}: {count} open");
        }
    }

    #[test]
    fn runtime_figures_are_those_of_the_serving_runtimes() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
        };
        let (a, b, c) = (runtime(), runtime(), runtime());
        let workers = Metrics::new(Arc::new(Fixed(Vec::new()))).with_runtimes(vec![
            a.handle().clone(),
            b.handle().clone(),
            c.handle().clone(),
        ]);
        let text = workers.encode().unwrap();
        assert!(
            text.lines().any(|l| l == "strait_runtime_workers 3"),
            "{text}"
        );
        // Without workers, the runtime that scrapes; outside any, none.
        let text = a.block_on(async { metrics(Vec::new()).encode().unwrap() });
        assert!(
            text.lines().any(|l| l == "strait_runtime_workers 1"),
            "{text}"
        );
        let text = metrics(Vec::new()).encode().unwrap();
        assert!(!text.contains("strait_runtime_workers"), "{text}");
    }
}
