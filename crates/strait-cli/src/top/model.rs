//! The pure half of `strait top`: what the admin API answered, turned into rows. Parses
//! the Prometheus text format, computes rates between two refreshes and ranks the busiest
//! WebSocket connections. No I/O and no clock: times come in as arguments.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;
use serde_json::Value;
use strait::store::State;

/// Connections asked for per refresh: the admin API's largest page.
pub const CONNECTIONS_PER_PAGE: u64 = 500;

// ---------------------------------------------------------------------------------------
// What the admin API answers
// ---------------------------------------------------------------------------------------

/// What one refresh fetched; each part succeeds or fails on its own.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub state: Result<State, String>,
    pub connections: Result<ConnectionPage, String>,
    /// `Ok(None)`: the gateway has no `/metrics` (it answered 404).
    pub metrics: Result<Option<String>, String>,
}

/// `GET /connections`: the fields top shows; anything missing reads as empty.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ConnectionPage {
    pub total: u64,
    pub connections: Vec<Connection>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Connection {
    pub id: u64,
    pub environment: String,
    pub proxy: String,
    pub client: String,
    pub consumer: Option<String>,
    pub started: String,
    pub client_to_backend: Traffic,
    pub backend_to_client: Traffic,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Traffic {
    pub messages: u64,
    pub bytes: u64,
}

// ---------------------------------------------------------------------------------------
// The Prometheus text format
// ---------------------------------------------------------------------------------------

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The label's value; empty when absent.
    fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(key, _)| key == name)
            .map_or("", |(_, value)| value)
    }
}

/// Every sample line of a Prometheus or OpenMetrics text; comments and lines that do not
/// parse are skipped.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let (name, mut rest) = line.split_at(end);
    let mut labels = Vec::new();
    if let Some(inside) = rest.strip_prefix('{') {
        rest = parse_labels(inside, &mut labels)?;
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Reads `a="x",b="y\"z"}` into `labels`; returns what follows the `}`.
fn parse_labels<'a>(mut rest: &'a str, labels: &mut Vec<(String, String)>) -> Option<&'a str> {
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if let Some(after) = rest.strip_prefix('}') {
            return Some(after);
        }
        let (key, after) = rest.split_once('=')?;
        let quoted = after.trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i + 1,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_owned(), value));
        rest = quoted.get(end..)?;
    }
}

/// An (environment, proxy) pair.
pub type Key = (String, String);

/// The gateway's metrics that top shows, summed per (environment, proxy).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub requests: f64,
    /// Requests answered 5xx.
    pub errors: f64,
    pub ws_active: f64,
    pub ws_messages: f64,
}

/// One scrape of `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    pub by_proxy: BTreeMap<Key, Counters>,
    pub resident_bytes: Option<f64>,
    pub open_fds: Option<f64>,
}

impl Scrape {
    pub fn from_text(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for sample in parse_metrics(text) {
            let value = sample.value;
            if !value.is_finite() {
                continue;
            }
            let key = || {
                let label = |name| sample.label(name).to_owned();
                (label("environment"), label("proxy"))
            };
            match sample.name.as_str() {
                "strait_http_requests_total" => {
                    let counters = scrape.by_proxy.entry(key()).or_default();
                    counters.requests += value;
                    if sample.label("status").starts_with('5') {
                        counters.errors += value;
                    }
                }
                "strait_websocket_connections_active" => {
                    scrape.by_proxy.entry(key()).or_default().ws_active += value;
                }
                "strait_websocket_messages_total" => {
                    scrape.by_proxy.entry(key()).or_default().ws_messages += value;
                }
                "strait_process_resident_memory_bytes" => scrape.resident_bytes = Some(value),
                "strait_process_open_fds" => scrape.open_fds = Some(value),
                _ => {}
            }
        }
        scrape
    }
}

/// Per-second increase of a counter read `seconds` apart. A counter that went down was
/// reset (the gateway restarted), so all of its current value is new.
pub fn rate(now: f64, before: f64, seconds: f64) -> Option<f64> {
    if seconds <= 0.0 {
        return None;
    }
    let increase = if now >= before { now - before } else { now };
    Some(increase / seconds)
}

/// Seconds since the Unix epoch of an RFC 3339 UTC time such as `2024-05-01T12:34:56.789Z`.
pub fn unix_seconds(text: &str) -> Option<f64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let number = |part: Option<&str>, range: std::ops::RangeInclusive<i64>| {
        part?.parse::<i64>().ok().filter(|n| range.contains(n))
    };
    let mut date = date.split('-');
    let year = number(date.next(), 1970..=9999)?;
    let month = number(date.next(), 1..=12)?;
    let day = number(date.next(), 1..=31)?;
    let mut time = time.split(':');
    let hour = number(time.next(), 0..=23)?;
    let minute = number(time.next(), 0..=59)?;
    let second: f64 = time
        .next()?
        .parse()
        .ok()
        .filter(|s| (0.0..61.0).contains(s))?;
    // Howard Hinnant's days_from_civil, with years starting in March.
    let year = if month <= 2 { year - 1 } else { year };
    let (era, year_of_era) = (year.div_euclid(400), year.rem_euclid(400));
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some((days * 86_400 + hour * 3600 + minute * 60) as f64 + second)
}

// ---------------------------------------------------------------------------------------
// The model: readings over time, and the rows they make
// ---------------------------------------------------------------------------------------

/// A reading and when it was taken, in seconds on a monotonic clock.
#[derive(Debug, Clone)]
struct Reading<T> {
    at: f64,
    value: T,
}

/// The latest and the one-before readings of each source, and what went wrong last time.
#[derive(Debug, Default)]
pub struct Model {
    state: State,
    connections: Option<Reading<ConnectionPage>>,
    earlier_connections: Option<Reading<ConnectionPage>>,
    metrics: Option<Reading<Scrape>>,
    earlier_metrics: Option<Reading<Scrape>>,
    metrics_missing: bool,
    problems: Vec<String>,
    refreshed: bool,
}

/// What the view shows: totals and rows. `None` renders as "–" (not known yet, or not
/// available from this gateway).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Screen {
    /// Whether any refresh finished yet.
    pub refreshed: bool,
    /// What failed in the last refresh (the rows are from the last good one).
    pub problems: Vec<String>,
    /// The gateway answered 404 to `/metrics`.
    pub metrics_missing: bool,
    pub totals: Totals,
    pub environments: Vec<EnvironmentRow>,
    pub proxies: Vec<ProxyRow>,
    /// Busiest first.
    pub connections: Vec<ConnectionRow>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub requests: Option<f64>,
    pub errors: Option<f64>,
    /// Open WebSocket sessions (`total` of `/connections`).
    pub active: Option<u64>,
    pub resident_bytes: Option<f64>,
    pub open_fds: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvironmentRow {
    pub name: String,
    pub listen: String,
    pub websocket: bool,
    pub proxies: usize,
    pub requests: Option<f64>,
    pub active: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyRow {
    /// Empty for a proxy deployed nowhere.
    pub environment: String,
    /// Empty for requests that matched no proxy.
    pub proxy: String,
    pub path: String,
    pub requests: Option<f64>,
    pub errors: Option<f64>,
    pub active: Option<u64>,
    /// WebSocket messages per second, both directions.
    pub messages: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectionRow {
    pub connection: Connection,
    pub age_seconds: Option<f64>,
    /// `None` on the first refresh: the rank then comes from the totals.
    pub rates: Option<ConnectionRates>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConnectionRates {
    /// Messages per second, client to backend.
    pub messages_in: f64,
    /// Messages per second, backend to client.
    pub messages_out: f64,
    /// Payload bytes per second, both directions.
    pub bytes: f64,
}

/// Makes `next` the latest reading and the latest the earlier one.
fn shift<T>(latest: &mut Option<Reading<T>>, earlier: &mut Option<Reading<T>>, next: Reading<T>) {
    *earlier = latest.replace(next);
}

/// Messages (in, out) and bytes a connection has carried.
fn carried(c: &Connection) -> (u64, u64, u64) {
    let (to_backend, to_client) = (c.client_to_backend, c.backend_to_client);
    (
        to_backend.messages,
        to_client.messages,
        to_backend.bytes.saturating_add(to_client.bytes),
    )
}

impl Model {
    /// Takes in one refresh made at `at` (seconds, monotonic). A part that failed keeps its
    /// last reading on screen, without rates until it answers again.
    pub fn update(&mut self, fetched: Fetched, at: f64) {
        self.refreshed = true;
        self.problems.clear();
        match fetched.state {
            Ok(state) => self.state = state,
            Err(problem) => self.problems.push(problem),
        }
        match fetched.connections {
            Ok(page) => shift(
                &mut self.connections,
                &mut self.earlier_connections,
                Reading { at, value: page },
            ),
            Err(problem) => {
                self.earlier_connections = None;
                self.problems.push(problem);
            }
        }
        match fetched.metrics {
            Ok(Some(text)) => {
                self.metrics_missing = false;
                let value = Scrape::from_text(&text);
                shift(
                    &mut self.metrics,
                    &mut self.earlier_metrics,
                    Reading { at, value },
                );
            }
            Ok(None) => {
                self.metrics_missing = true;
                (self.metrics, self.earlier_metrics) = (None, None);
            }
            Err(problem) => {
                self.earlier_metrics = None;
                self.problems.push(problem);
            }
        }
        // An unreachable gateway fails every part the same way: say it once.
        self.problems.dedup();
    }

    /// The rows as of `now_unix` (seconds since the epoch, for the connections' ages).
    pub fn screen(&self, now_unix: f64) -> Screen {
        let scrape = self.metrics.as_ref().map(|m| &m.value);
        let proxies = self.proxy_rows();
        // `None` without two scrapes, even when there is no row to sum.
        let sum = |f: fn(&ProxyRow) -> Option<f64>| {
            let total: Option<f64> = proxies.iter().map(f).sum();
            total.filter(|_| self.metrics.is_some() && self.earlier_metrics.is_some())
        };
        let (requests, errors) = (sum(|p| p.requests), sum(|p| p.errors));
        let environments = self
            .state
            .environments
            .iter()
            .map(|(name, env)| {
                let rows = || proxies.iter().filter(|p| p.environment == *name);
                EnvironmentRow {
                    name: name.clone(),
                    listen: env
                        .get("listen")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                    websocket: env.get("websocket").and_then(Value::as_bool) == Some(true),
                    proxies: self
                        .state
                        .deployments
                        .iter()
                        .filter(|d| d.1 == *name)
                        .count(),
                    requests: requests.and(rows().map(|p| p.requests).sum()),
                    active: rows().map(|p| p.active).sum(),
                }
            })
            .collect();
        Screen {
            refreshed: self.refreshed,
            problems: self.problems.clone(),
            metrics_missing: self.metrics_missing,
            totals: Totals {
                requests,
                errors,
                active: self.connections.as_ref().map(|c| c.value.total),
                resident_bytes: scrape.and_then(|s| s.resident_bytes),
                open_fds: scrape.and_then(|s| s.open_fds),
            },
            environments,
            proxies,
            connections: self.connection_rows(now_unix),
        }
    }

    /// Per (environment, proxy): requests, 5xx and messages per second, when two scrapes
    /// are known. A series new in the latest scrape counts from zero.
    fn metric_rates(&self) -> Option<BTreeMap<&Key, (f64, f64, f64)>> {
        let (now, before) = (self.metrics.as_ref()?, self.earlier_metrics.as_ref()?);
        let seconds = now.at - before.at;
        let mut rates = BTreeMap::new();
        for (key, counters) in &now.value.by_proxy {
            let old = before.value.by_proxy.get(key).copied().unwrap_or_default();
            let requests = rate(counters.requests, old.requests, seconds)?;
            let errors = rate(counters.errors, old.errors, seconds)?;
            let messages = rate(counters.ws_messages, old.ws_messages, seconds)?;
            rates.insert(key, (requests, errors, messages));
        }
        Some(rates)
    }

    /// One row per deployment, per proxy deployed nowhere, and per pair only the metrics or
    /// the connections know of; sorted by environment, then proxy.
    fn proxy_rows(&self) -> Vec<ProxyRow> {
        let mut keys: BTreeSet<Key> = self
            .state
            .deployments
            .iter()
            .map(|(proxy, env)| (env.clone(), proxy.clone()))
            .collect();
        for proxy in self.state.proxies.keys() {
            if !keys.iter().any(|(_, p)| p == proxy) {
                keys.insert((String::new(), proxy.clone()));
            }
        }
        let scrape = self.metrics.as_ref().map(|m| &m.value);
        keys.extend(scrape.into_iter().flat_map(|s| s.by_proxy.keys().cloned()));
        // Without metrics, the open sessions per pair are counted from the connection list.
        let mut counted: HashMap<Key, u64> = HashMap::new();
        for c in self.connections.iter().flat_map(|c| &c.value.connections) {
            let key = (c.environment.clone(), c.proxy.clone());
            *counted.entry(key.clone()).or_default() += 1;
            keys.insert(key);
        }
        let rates = self.metric_rates();
        keys.into_iter()
            .map(|key| {
                let rate = rates
                    .as_ref()
                    .map(|r| r.get(&key).copied().unwrap_or_default());
                let active = match scrape {
                    Some(s) => Some(s.by_proxy.get(&key).map_or(0.0, |c| c.ws_active) as u64),
                    None => self
                        .connections
                        .as_ref()
                        .map(|_| counted.get(&key).copied().unwrap_or(0)),
                };
                let path = self.state.proxies.get(&key.1).and_then(|p| p.get("path"));
                ProxyRow {
                    path: path.and_then(Value::as_str).unwrap_or("").into(),
                    requests: rate.map(|r| r.0),
                    errors: rate.map(|r| r.1),
                    messages: rate.map(|r| r.2),
                    active,
                    environment: key.0,
                    proxy: key.1,
                }
            })
            .collect()
    }

    /// Every listed connection, busiest first: by messages plus bytes per second since the
    /// previous refresh, or by their totals on the first one. A connection new since then
    /// carried all of its traffic in between.
    fn connection_rows(&self, now_unix: f64) -> Vec<ConnectionRow> {
        let Some(latest) = &self.connections else {
            return Vec::new();
        };
        let earlier = self.earlier_connections.as_ref().map(|e| {
            let by_id: HashMap<u64, &Connection> =
                e.value.connections.iter().map(|c| (c.id, c)).collect();
            (latest.at - e.at, by_id)
        });
        let mut ranked: Vec<(f64, ConnectionRow)> = latest
            .value
            .connections
            .iter()
            .map(|c| {
                let (msgs_in, msgs_out, bytes) = carried(c);
                let rates = earlier.as_ref().and_then(|(seconds, by_id)| {
                    let before = by_id.get(&c.id).map_or((0, 0, 0), |b| carried(b));
                    Some(ConnectionRates {
                        messages_in: rate(msgs_in as f64, before.0 as f64, *seconds)?,
                        messages_out: rate(msgs_out as f64, before.1 as f64, *seconds)?,
                        bytes: rate(bytes as f64, before.2 as f64, *seconds)?,
                    })
                });
                let score = rates.map_or(msgs_in as f64 + msgs_out as f64 + bytes as f64, |r| {
                    r.messages_in + r.messages_out + r.bytes
                });
                let row = ConnectionRow {
                    connection: c.clone(),
                    age_seconds: unix_seconds(&c.started).map(|s| (now_unix - s).max(0.0)),
                    rates,
                };
                (score, row)
            })
            .collect();
        ranked.sort_by(|(a, x), (b, y)| b.total_cmp(a).then(x.connection.id.cmp(&y.connection.id)));
        ranked.into_iter().map(|(_, row)| row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn requests(environment: &str, proxy: &str, method: &str, status: &str, n: f64) -> String {
        format!(
            "strait_http_requests_total{{environment=\"{environment}\",proxy=\"{proxy}\",method=\"{method}\",status=\"{status}\"}} {n}\n"
        )
    }

    fn messages(environment: &str, proxy: &str, direction: &str, n: f64) -> String {
        format!(
            "strait_websocket_messages_total{{environment=\"{environment}\",proxy=\"{proxy}\",direction=\"{direction}\"}} {n}\n"
        )
    }

    fn state() -> State {
        let mut state = State::default();
        state.environments.insert(
            "prod".into(),
            json!({"name": "prod", "listen": "127.0.0.1:8080", "websocket": true}),
        );
        for (name, path) in [
            ("users", "/users/*"),
            ("chat", "/chat/*"),
            ("idle", "/idle"),
        ] {
            state
                .proxies
                .insert(name.into(), json!({"name": name, "path": path}));
        }
        for proxy in ["users", "chat"] {
            state.deployments.insert((proxy.into(), "prod".into()));
        }
        state
    }

    /// A connection of `chat` in `prod` with these totals (in = client to backend).
    fn connection(id: u64, messages: (u64, u64), bytes: (u64, u64)) -> Connection {
        Connection {
            id,
            environment: "prod".into(),
            proxy: "chat".into(),
            client: format!("127.0.0.1:{}", 50_000 + id),
            consumer: None,
            started: "2024-05-01T12:34:56.789Z".into(),
            client_to_backend: Traffic {
                messages: messages.0,
                bytes: bytes.0,
            },
            backend_to_client: Traffic {
                messages: messages.1,
                bytes: bytes.1,
            },
        }
    }

    fn fetched(metrics: Option<String>, connections: Vec<Connection>) -> Fetched {
        Fetched {
            state: Ok(state()),
            connections: Ok(ConnectionPage {
                total: connections.len() as u64,
                connections,
            }),
            metrics: Ok(metrics),
        }
    }

    fn row<'a>(screen: &'a Screen, environment: &str, proxy: &str) -> &'a ProxyRow {
        screen
            .proxies
            .iter()
            .find(|p| p.environment == environment && p.proxy == proxy)
            .unwrap_or_else(|| panic!("a row for {environment}/{proxy}: {screen:#?}"))
    }

    #[test]
    fn samples_are_parsed_with_escaped_labels_and_comments_skipped() {
        let text = "# HELP x Something.\n# TYPE x counter\n\n\
                    x{path=\"a \\\"b\\\" \\\\ c\\nd\", code = \"2\",} 3.5 1714566896000\n\
                    up 1\nnan_gauge NaN\n# EOF\n";
        let samples = parse_metrics(text);
        assert_eq!(samples.len(), 3, "{samples:?}");
        assert_eq!(samples[0].name, "x");
        assert_eq!(
            samples[0].labels,
            vec![
                ("path".to_owned(), "a \"b\" \\ c\nd".to_owned()),
                ("code".to_owned(), "2".to_owned())
            ]
        );
        assert_eq!(samples[0].value, 3.5);
        assert_eq!((samples[1].name.as_str(), samples[1].value), ("up", 1.0));
        assert!(samples[1].labels.is_empty());
        assert!(samples[2].value.is_nan());
    }

    #[test]
    fn garbage_is_skipped_without_panicking() {
        let garbage = [
            "{",
            "}",
            "=",
            "m{",
            "m{a",
            "m{a=",
            "m{a=\"",
            "m{a=\"x\\",
            "m{a=\"x\"",
            "m{a=\"x\"} ",
            "m{a=1} 2",
            "m{a=\"x\"}} 2",
            "m notanumber",
            "m",
            "\u{feff}m{é=\"ü\"} x",
        ];
        for line in garbage {
            assert_eq!(parse_metrics(line), Vec::new(), "{line:?}");
        }
        // Every cut of a valid text parses (or skips its last line) without panicking.
        let text = format!(
            "{}{}",
            requests("é", "p\\\"", "GET", "2xx", 1.0),
            "m{a=\"ü\"} 2\n"
        );
        for (cut, _) in text.char_indices() {
            let samples = parse_metrics(&text[..cut]);
            assert!(samples.len() <= 2);
        }
    }

    #[test]
    fn a_scrape_sums_over_method_and_status_and_ignores_unknown_metrics() {
        let text = [
            requests("prod", "users", "GET", "2xx", 10.0),
            requests("prod", "users", "POST", "5xx", 2.0),
            requests("prod", "users", "GET", "5xx", 1.0),
            "strait_websocket_connections_active{environment=\"prod\",proxy=\"chat\"} 4\n".into(),
            messages("prod", "chat", "client_to_backend", 100.0),
            messages("prod", "chat", "backend_to_client", 50.0),
            "strait_websocket_bytes_total{environment=\"prod\",proxy=\"chat\",direction=\"client_to_backend\"} 4096\n".into(),
            "strait_process_resident_memory_bytes 1.5e7\nstrait_process_open_fds 42\n".into(),
            "other_total{environment=\"prod\",proxy=\"users\"} 99\n".into(),
        ]
        .concat();
        let scrape = Scrape::from_text(&text);
        let users = scrape.by_proxy[&("prod".to_owned(), "users".to_owned())];
        assert_eq!(users.requests, 10.0 + 2.0 + 1.0);
        assert_eq!(users.errors, 2.0 + 1.0);
        let chat = scrape.by_proxy[&("prod".to_owned(), "chat".to_owned())];
        assert_eq!(chat.ws_active, 4.0);
        assert_eq!(chat.ws_messages, 100.0 + 50.0);
        assert_eq!(scrape.by_proxy.len(), 2);
        assert_eq!(scrape.resident_bytes, Some(1.5e7));
        assert_eq!(scrape.open_fds, Some(42.0));
    }

    #[test]
    fn rates_are_increases_per_second_and_a_reset_counts_from_zero() {
        assert_eq!(rate(30.0, 10.0, 2.0), Some((30.0 - 10.0) / 2.0));
        assert_eq!(rate(5.0, 100.0, 2.0), Some(5.0 / 2.0));
        assert_eq!(rate(5.0, 1.0, 0.0), None);
    }

    #[test]
    fn proxy_rates_come_from_two_scrapes() {
        let first = [
            requests("prod", "users", "GET", "2xx", 10.0),
            requests("prod", "users", "POST", "5xx", 2.0),
            requests("prod", "", "GET", "4xx", 3.0),
            messages("prod", "chat", "client_to_backend", 100.0),
            messages("prod", "chat", "backend_to_client", 50.0),
        ]
        .concat();
        let second = [
            requests("prod", "users", "GET", "2xx", 30.0),
            requests("prod", "users", "POST", "5xx", 6.0),
            requests("prod", "", "GET", "4xx", 3.0),
            requests("prod", "new", "GET", "2xx", 8.0),
            messages("prod", "chat", "client_to_backend", 140.0),
            messages("prod", "chat", "backend_to_client", 70.0),
            "strait_websocket_connections_active{environment=\"prod\",proxy=\"chat\"} 2\n".into(),
            "strait_process_resident_memory_bytes 2048\n".into(),
        ]
        .concat();
        let mut model = Model::default();
        model.update(fetched(Some(first), Vec::new()), 10.0);
        let screen = model.screen(0.0);
        assert_eq!(screen.totals.requests, None, "one scrape has no rate");
        assert_eq!(row(&screen, "prod", "users").requests, None);

        model.update(fetched(Some(second), Vec::new()), 12.0);
        let screen = model.screen(0.0);
        let seconds = 12.0 - 10.0;
        let users = row(&screen, "prod", "users");
        assert_eq!(users.path, "/users/*");
        assert_eq!(users.requests, Some((30.0 - 10.0 + 6.0 - 2.0) / seconds));
        assert_eq!(users.errors, Some((6.0 - 2.0) / seconds));
        assert_eq!(users.active, Some(0));
        let chat = row(&screen, "prod", "chat");
        assert_eq!(chat.messages, Some((140.0 - 100.0 + 70.0 - 50.0) / seconds));
        assert_eq!(chat.active, Some(2), "the gauge, not the (empty) list");
        assert_eq!(row(&screen, "prod", "").requests, Some(0.0));
        // A series that appeared since the first scrape counts from zero.
        assert_eq!(row(&screen, "prod", "new").requests, Some(8.0 / seconds));
        // Deployed nowhere: a row without an environment.
        assert_eq!(row(&screen, "", "idle").path, "/idle");
        let total = (30.0 - 10.0 + 6.0 - 2.0 + 8.0) / seconds;
        assert_eq!(screen.totals.requests, Some(total));
        assert_eq!(screen.totals.errors, Some((6.0 - 2.0) / seconds));
        assert_eq!(screen.totals.resident_bytes, Some(2048.0));
        assert_eq!(screen.totals.open_fds, None);
        let prod = &screen.environments[0];
        assert_eq!(
            (prod.name.as_str(), prod.listen.as_str(), prod.websocket),
            ("prod", "127.0.0.1:8080", true)
        );
        assert_eq!(prod.proxies, 2, "users and chat are deployed there");
        assert_eq!(prod.requests, Some(total));
        assert_eq!(prod.active, Some(2));
        let order: Vec<(&str, &str)> = screen
            .proxies
            .iter()
            .map(|p| (p.environment.as_str(), p.proxy.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("", "idle"),
                ("prod", ""),
                ("prod", "chat"),
                ("prod", "new"),
                ("prod", "users")
            ]
        );
    }

    #[test]
    fn without_metrics_the_sessions_are_counted_from_the_list() {
        let mut model = Model::default();
        let sessions = vec![connection(1, (0, 0), (0, 0)), connection(2, (0, 0), (0, 0))];
        model.update(fetched(None, sessions.clone()), 1.0);
        model.update(fetched(None, sessions), 2.0);
        let screen = model.screen(0.0);
        assert!(screen.metrics_missing);
        assert!(screen.problems.is_empty());
        assert_eq!(screen.totals.active, Some(2));
        assert_eq!(screen.totals.requests, None);
        let chat = row(&screen, "prod", "chat");
        assert_eq!(
            (chat.active, chat.requests, chat.messages),
            (Some(2), None, None)
        );
        assert_eq!(row(&screen, "prod", "users").active, Some(0));
        assert_eq!(screen.environments[0].active, Some(2));
        assert_eq!(screen.environments[0].requests, None);
    }

    #[test]
    fn the_busiest_connections_come_first() {
        let mut model = Model::default();
        let idle = |id| connection(id, (10, 10), (500, 500));
        model.update(
            fetched(None, vec![idle(1), connection(2, (1, 1), (5, 5))]),
            5.0,
        );
        let started = 1_714_566_896.789;
        let screen = model.screen(started + 65.0);
        let ids: Vec<u64> = screen.connections.iter().map(|c| c.connection.id).collect();
        assert_eq!(ids, [1, 2], "by totals on the first refresh");
        assert!(screen.connections.iter().all(|c| c.rates.is_none()));
        let age = screen.connections[0].age_seconds.expect("an age");
        assert!((age - 65.0).abs() < 1e-6, "{age}");

        // 2 s later: 1 carried nothing more, 2 carried 4+2 messages and 400 bytes, and 3 is new.
        let busy = connection(2, (1 + 4, 1 + 2), (5 + 300, 5 + 100));
        let new = connection(3, (1, 0), (100, 0));
        model.update(fetched(None, vec![idle(1), busy, new]), 7.0);
        let screen = model.screen(started);
        let ids: Vec<u64> = screen.connections.iter().map(|c| c.connection.id).collect();
        assert_eq!(ids, [2, 3, 1]);
        let rates = |i: usize| screen.connections[i].rates.expect("rates");
        let expected = ConnectionRates {
            messages_in: 4.0 / 2.0,
            messages_out: 2.0 / 2.0,
            bytes: 400.0 / 2.0,
        };
        assert_eq!(rates(0), expected);
        assert_eq!(
            rates(1).bytes,
            100.0 / 2.0,
            "new: all its traffic is recent"
        );
        assert_eq!(rates(2), ConnectionRates::default());
    }

    #[test]
    fn an_unreachable_gateway_is_reported_once_and_the_last_rows_stay() {
        let mut model = Model::default();
        model.update(fetched(None, vec![connection(1, (0, 0), (0, 0))]), 1.0);
        let down = "cannot reach the admin API at http://127.0.0.1:1: refused".to_owned();
        model.update(
            Fetched {
                state: Err(down.clone()),
                connections: Err(down.clone()),
                metrics: Err(down.clone()),
            },
            2.0,
        );
        let screen = model.screen(0.0);
        assert_eq!(screen.problems, [down]);
        assert_eq!(row(&screen, "prod", "chat").active, Some(1));
        assert!(screen.connections.iter().all(|c| c.rates.is_none()));

        model.update(fetched(None, vec![connection(1, (0, 0), (0, 0))]), 3.0);
        let screen = model.screen(0.0);
        assert!(screen.problems.is_empty());
        assert!(screen.connections.iter().all(|c| c.rates.is_some()));
    }

    #[test]
    fn the_connection_list_reads_as_the_admin_api_writes_it() {
        let body = json!({
            "page": 1, "per_page": 500, "total": 1,
            "connections": [{
                "id": 7, "environment": "prod", "proxy": "chat", "client": "203.0.113.7:51234",
                "origin": null, "consumer": "alice", "subprotocol": null,
                "backend": "ws://10.0.0.1:9090/chat", "started": "2024-05-01T12:34:56.789Z",
                "last_activity": null,
                "client_to_backend": {"frames": 3, "messages": 2, "bytes": 10},
                "backend_to_client": {"frames": 1, "messages": 1, "bytes": 4}
            }]
        });
        let page: ConnectionPage = serde_json::from_value(body).expect("parses");
        assert_eq!(page.total, 1);
        let c = &page.connections[0];
        assert_eq!((c.id, c.consumer.as_deref()), (7, Some("alice")));
        assert_eq!(carried(c), (2, 1, 10 + 4));
    }

    #[test]
    fn utc_times_are_read() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0.0));
        // `date -u -d 2000-02-29T00:00:00Z +%s`
        assert_eq!(unix_seconds("2000-02-29T00:00:00Z"), Some(951_782_400.0));
        let t = unix_seconds("2024-05-01T12:34:56.789Z").expect("parses");
        assert!((t - 1_714_566_896.789).abs() < 1e-3, "{t}");
        for bad in [
            "",
            "x",
            "2024-13-01T00:00:00Z",
            "2024-05-01T12:34:56",
            "99999999999999999999-01-01T00:00:00Z",
            "2024-05-01T12:34:xxZ",
        ] {
            assert_eq!(unix_seconds(bad), None, "{bad:?}");
        }
    }
}
