//! The WebSocket load generator's modes, as library functions used by the `strait-bench`
//! binary and the smoke test: `idle` (hold many connections, prove them alive, memory per
//! connection), `echo` (closed-loop round trips, rate and latency percentiles), `connect`
//! (complete sessions per second) and `stream` (throughput of large messages). Every mode is
//! bounded in connections and time and reports failures instead of panicking.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::latency::{Percentiles, SharedHistogram};
use crate::procs::{CpuMeter, rss_tree_kib};
use crate::wsclient::{Frame, Incoming, Target, WsConn, mask_for};

/// Time limit for one connect plus handshake.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);
/// Time limit for a close handshake.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);
/// Connects in flight at once while opening many connections.
const CONNECT_CONCURRENCY: usize = 512;
/// Extra time any mode may take beyond its nominal duration before it is cut off.
const GRACE: Duration = Duration::from_secs(20);

/// Connections opened by [`open_many`], and what went wrong with the others.
pub struct Opened {
    pub conns: Vec<WsConn>,
    pub failed: usize,
    pub first_error: Option<String>,
}

/// Opens `n` connections at about `rate` per second (spread over the target's sources).
pub async fn open_many(target: &Target, n: usize, rate: f64) -> Opened {
    let rate = rate.max(1.0);
    let limit = Duration::from_secs_f64(n as f64 / rate) + CONNECT_LIMIT + GRACE;
    let deadline = Instant::now() + limit;
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    let mut spawned = 0usize;
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    while spawned < n && Instant::now() < deadline {
        ticker.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate) as usize + 1).min(n);
        while spawned < due {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let target = target.clone();
            let i = spawned;
            tasks.spawn(async move {
                let conn =
                    WsConn::connect(&target, target.source(i), i as u64, CONNECT_LIMIT).await;
                drop(permit);
                conn
            });
            spawned += 1;
        }
    }
    let mut opened = Opened {
        conns: Vec::with_capacity(n),
        failed: n - spawned,
        first_error: (spawned < n)
            .then(|| format!("only {spawned} of {n} connects started in {limit:?}")),
    };
    let collect = async {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(conn)) => opened.conns.push(conn),
                Ok(Err(error)) => opened.note(error.to_string()),
                Err(error) => opened.note(format!("a connect task failed: {error}")),
            }
        }
    };
    if tokio::time::timeout_at(deadline.into(), collect)
        .await
        .is_err()
    {
        let pending = tasks.len();
        opened.failed += pending;
        opened.note(format!("{pending} connects did not finish in time"));
    }
    opened
}

impl Opened {
    fn note(&mut self, error: String) {
        self.failed += 1;
        self.first_error.get_or_insert(error);
    }
}

/// Result of the `idle` mode.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IdleReport {
    pub requested: usize,
    pub opened: usize,
    pub alive: usize,
    pub first_error: Option<String>,
    /// Resident memory of the measured process (and its children) before opening, in KiB.
    pub rss_before_kib: Option<u64>,
    /// ... after all connections were open and held.
    pub rss_after_kib: Option<u64>,
}

impl IdleReport {
    /// Resident bytes per open connection, when a process was measured.
    pub fn bytes_per_conn(&self) -> Option<f64> {
        let (before, after) = (self.rss_before_kib?, self.rss_after_kib?);
        (self.opened > 0).then(|| after.saturating_sub(before) as f64 * 1024.0 / self.opened as f64)
    }
}

/// Sends one 64-byte message on every connection, counts those that echo it, then closes them
/// (client-initiated close handshake). Bounded by `limit` overall.
pub async fn check_and_close(conns: Vec<WsConn>, limit: Duration) -> (usize, Option<String>) {
    let total = conns.len();
    let mut tasks = JoinSet::new();
    for mut conn in conns {
        tasks.spawn(async move {
            let frame = Frame::binary(&[0x5A; 64], conn.mask());
            let result = conn.round_trip(&frame, 64).await;
            conn.close(CLOSE_LIMIT).await;
            result
        });
    }
    let (mut alive, mut first_error) = (0, None);
    let collect = async {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => alive += 1,
                Ok(Err(error)) => _ = first_error.get_or_insert(error.to_string()),
                Err(error) => _ = first_error.get_or_insert(error.to_string()),
            }
        }
    };
    if tokio::time::timeout(limit, collect).await.is_err() {
        first_error.get_or_insert(format!(
            "{} of {total} liveness checks did not finish in {limit:?}",
            tasks.len()
        ));
    }
    (alive, first_error)
}

/// `idle`: open `n` connections at `rate`/s, hold them `hold`, measure `pid`'s resident memory
/// before and after, then prove each connection alive with one echo.
pub async fn idle(
    target: &Target,
    n: usize,
    rate: f64,
    hold: Duration,
    pid: Option<u32>,
) -> IdleReport {
    let rss_before_kib = pid.and_then(rss_tree_kib);
    let opened = open_many(target, n, rate).await;
    tokio::time::sleep(hold).await;
    let rss_after_kib = pid.and_then(rss_tree_kib);
    let count = opened.conns.len();
    let (alive, check_error) = check_and_close(opened.conns, CONNECT_LIMIT + GRACE).await;
    IdleReport {
        requested: n,
        opened: count,
        alive,
        first_error: opened.first_error.or(check_error),
        rss_before_kib,
        rss_after_kib,
    }
}

/// Result of the `echo` mode.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EchoReport {
    pub connections: usize,
    pub messages: u64,
    pub seconds: f64,
    pub messages_per_sec: f64,
    pub latency: Percentiles,
    pub errors: usize,
    pub first_error: Option<String>,
    /// This load generator's CPU use during the run, in percent of one core.
    pub load_cpu_percent: f64,
}

/// Connections per second `echo` opens before its warm-up starts.
pub const ECHO_OPEN_RATE: f64 = 5_000.0;

/// `echo`: `conns` connections each doing closed-loop round trips of `size`-byte messages;
/// the first `warmup` is not recorded, then `duration` is.
pub async fn echo(
    target: &Target,
    conns: usize,
    size: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<EchoReport> {
    let opened = open_many(target, conns, ECHO_OPEN_RATE).await;
    if opened.conns.is_empty() {
        bail!(
            "no connection opened: {}",
            opened.first_error.unwrap_or_default()
        );
    }
    let cpu = CpuMeter::start();
    let histogram = SharedHistogram::new();
    let payload = vec![0xA5u8; size];
    let record_from = Instant::now() + warmup;
    let end = record_from + duration;
    let connections = opened.conns.len();
    let mut tasks = JoinSet::new();
    for mut conn in opened.conns {
        let mut recorder = histogram.recorder();
        let frame = Frame::binary(&payload, conn.mask());
        tasks.spawn(async move {
            let mut count = 0u64;
            let result = loop {
                let sent = Instant::now();
                if sent >= end {
                    break Ok(());
                }
                if let Err(error) = conn.round_trip(&frame, size).await {
                    break Err(error);
                }
                if sent >= record_from {
                    recorder.record(sent.elapsed());
                    count += 1;
                }
            };
            conn.close(CLOSE_LIMIT).await;
            (count, result)
        });
    }
    let mut report = EchoReport {
        connections,
        seconds: duration.as_secs_f64(),
        errors: opened.failed,
        first_error: opened.first_error,
        ..EchoReport::default()
    };
    let collect = async {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((count, result)) => {
                    report.messages += count;
                    if let Err(error) = result {
                        report.errors += 1;
                        report.first_error.get_or_insert(error.to_string());
                    }
                }
                Err(error) => {
                    report.errors += 1;
                    report.first_error.get_or_insert(error.to_string());
                }
            }
        }
    };
    if tokio::time::timeout(warmup + duration + GRACE, collect)
        .await
        .is_err()
    {
        report.errors += tasks.len();
        report
            .first_error
            .get_or_insert("connections hung past the run's end".into());
    }
    report.messages_per_sec = report.messages as f64 / report.seconds;
    report.latency = histogram.percentiles();
    report.load_cpu_percent = cpu.percent();
    Ok(report)
}

/// Result of the `connect` mode.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConnectReport {
    pub sessions: u64,
    pub seconds: f64,
    pub sessions_per_sec: f64,
    /// TCP connect plus upgrade handshake (until the 101 is read).
    pub handshake: Percentiles,
    pub failures: u64,
    pub first_error: Option<String>,
    /// This load generator's CPU use during the run, in percent of one core.
    pub load_cpu_percent: f64,
}

/// `connect`: `workers` loops, each opening a connection (TCP + upgrade), then closing it with
/// a close handshake, for `duration`. Counts complete sessions.
pub async fn connect(target: &Target, workers: usize, duration: Duration) -> ConnectReport {
    let cpu = CpuMeter::start();
    let histogram = SharedHistogram::new();
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = JoinSet::new();
    for w in 0..workers {
        let target = target.clone();
        let mut recorder = histogram.recorder();
        tasks.spawn(async move {
            let (mut ok, mut failed, mut first_error) = (0u64, 0u64, None);
            for i in 0u64.. {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                let source = target.source(w + i as usize * workers);
                match WsConn::connect(&target, source, i, CONNECT_LIMIT).await {
                    Ok(conn) => {
                        recorder.record(began.elapsed());
                        conn.close(CLOSE_LIMIT).await;
                        ok += 1;
                    }
                    Err(error) => {
                        failed += 1;
                        first_error.get_or_insert(error.to_string());
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (ok, failed, first_error)
        });
    }
    let mut report = ConnectReport::default();
    let collect = async {
        while let Some(joined) = tasks.join_next().await {
            if let Ok((ok, failed, error)) = joined {
                report.sessions += ok;
                report.failures += failed;
                if let Some(error) = error {
                    report.first_error.get_or_insert(error);
                }
            }
        }
    };
    if tokio::time::timeout(duration + GRACE, collect)
        .await
        .is_err()
    {
        report
            .first_error
            .get_or_insert("connect workers hung past the run's end".into());
    }
    report.seconds = start
        .elapsed()
        .as_secs_f64()
        .min(duration.as_secs_f64())
        .max(1e-9);
    report.sessions_per_sec = report.sessions as f64 / report.seconds;
    report.handshake = histogram.percentiles();
    report.load_cpu_percent = cpu.percent();
    report
}

/// Result of the `stream` mode.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StreamReport {
    pub connections: usize,
    pub message_bytes: usize,
    /// Echoed payload bytes received back by the clients during the measured window.
    pub bytes: u64,
    pub seconds: f64,
    /// `bytes / seconds / 1e6`: each byte crossed the proxy twice (out and back).
    pub mb_per_sec: f64,
    pub first_error: Option<String>,
    /// This load generator's CPU use during the measured window, in percent of one core.
    pub load_cpu_percent: f64,
}

/// `stream`: on each of `conns` connections a writer sends `size`-byte binary messages as fast
/// as TCP accepts them while a reader counts the echoed bytes. Measures the return direction
/// during `duration`, after `warmup`.
pub async fn stream(
    target: &Target,
    conns: usize,
    size: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<StreamReport> {
    let opened = open_many(target, conns, 1_000.0).await;
    if opened.conns.is_empty() {
        bail!(
            "no connection opened: {}",
            opened.first_error.unwrap_or_default()
        );
    }
    let received = Arc::new(AtomicU64::new(0));
    let payload = vec![0x3Cu8; size];
    let end = Instant::now() + warmup + duration + Duration::from_millis(200);
    let connections = opened.conns.len();
    let mut tasks = JoinSet::new();
    for (i, conn) in opened.conns.into_iter().enumerate() {
        let WsConn {
            mut reader,
            mut writer,
            ..
        } = conn;
        let frame = Frame::binary(&payload, mask_for(i as u64));
        tasks.spawn(async move {
            while Instant::now() < end {
                if writer.write_all(frame.bytes()).await.is_err() {
                    break;
                }
            }
            Ok(())
        });
        let received = received.clone();
        tasks.spawn(async move {
            while Instant::now() < end {
                match reader.next().await? {
                    Incoming::Message(len) => _ = received.fetch_add(len as u64, Ordering::Relaxed),
                    Incoming::Ping(_) => {}
                    Incoming::Close => bail!("the server closed the session mid-stream"),
                }
            }
            Ok(())
        });
    }
    tokio::time::sleep(warmup).await;
    let (t0, b0) = (Instant::now(), received.load(Ordering::Relaxed));
    let cpu = CpuMeter::start();
    tokio::time::sleep(duration).await;
    let (t1, b1) = (Instant::now(), received.load(Ordering::Relaxed));
    let load_cpu_percent = cpu.percent();
    let mut first_error = opened.first_error;
    // Errors of tasks that already ended; the rest are cut off (dropping closes the sockets).
    while let Some(Ok(result)) = tasks.try_join_next() {
        if let Err(error) = result {
            first_error.get_or_insert(error.to_string());
        }
    }
    tasks.abort_all();
    let seconds = (t1 - t0).as_secs_f64();
    Ok(StreamReport {
        connections,
        message_bytes: size,
        bytes: b1 - b0,
        seconds,
        mb_per_sec: (b1 - b0) as f64 / seconds / 1e6,
        first_error,
        load_cpu_percent,
    })
}
