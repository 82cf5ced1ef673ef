//! `strait-bench compare`: for each measurement and round, starts a fresh [`Stack`] and measures
//! direct → nginx → Strait in turn, with wrk for HTTP and this binary's own load-generator
//! modes (as pinned sub-processes, each with its own descriptor limit) for WebSocket. Collects
//! every figure into [`Results`] and hands them to the report.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::cpus::{Layout, Role};
use crate::h2load::{self, H2Report};
use crate::machine::Machine;
use crate::oha::{self, OhaReport};
use crate::procs::{
    FdLimits, ended_children_cpu_seconds, raise_fd_limit, rss_tree_kib, tree_cpu_seconds,
};
use crate::registry::{self, Endpoint, Probe};
use crate::results::{Better, Results};
use crate::stack::{Side, Stack, Tools};
use crate::wrk::{self, WrkReport};
use crate::ws_load::{ConnectReport, ECHO_OPEN_RATE, EchoReport, IdleReport, StreamReport};
use crate::wsclient::Target;

/// The metric name of the load generator's own CPU use.
pub const LOAD_CPU: &str = "load generator CPU (% of one core)";
/// How the server-CPU rows' metrics begin (the unit follows).
pub const SERVER_USER: &str = "server CPU in user space";
pub const SERVER_KERNEL: &str = "server CPU in the kernel";
/// The metric name of the idle run's memory per connection (the plot and projection use it).
pub const MEMORY_PER_CONN: &str = "resident memory per connection (KiB)";
/// How the closed-loop HTTP run's section begins (not the logged or churn ones).
pub const HTTP_SECTION: &str = "HTTP keep-alive GET (";
/// How the fixed-rate HTTP runs' sections begin.
pub const PACED_SECTION: &str = "HTTP keep-alive GET at the same load";
/// The fixed-rate HTTP runs' loads, in per cent of nginx's median rate in the closed loop: a
/// light one, and one near where a 2-CPU host's shared CPUs fill (oha needs more CPU per
/// request than wrk: at 60 % both gateways' p99 there reached tens of milliseconds).
pub const PACED_SHARES: [u32; 2] = [25, 50];
/// Extra time a sub-process may take beyond its planned duration.
const CHILD_GRACE: Duration = Duration::from_secs(60);

/// What to run; `full` takes about nine minutes on two cores with its default 3 rounds.
#[derive(Clone, Debug)]
pub struct Plan {
    pub quick: bool,
    pub rounds: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub http_conns: usize,
    /// HTTP/2 connections, and the streams each keeps in flight.
    pub h2_conns: usize,
    pub h2_streams: usize,
    pub echo_conns: Vec<usize>,
    pub echo_size: usize,
    pub idle_conns: usize,
    pub idle_rate: f64,
    pub idle_hold: Duration,
    /// Most idle connections one load-generator process holds.
    pub idle_per_proc: usize,
    /// Requests timed per admin endpoint while Strait holds the idle connections.
    pub registry_requests: usize,
    pub connect_workers: usize,
    pub stream_conns: usize,
    pub stream_size: usize,
    /// Client sockets spread over 127.0.0.1 ..= 127.0.0.{sources}.
    pub sources: u8,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            quick: false,
            rounds: 3,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            http_conns: 64,
            h2_conns: 8,
            h2_streams: 8,
            echo_conns: vec![100, 1_000],
            echo_size: 64,
            // The most one gateway holds under a 20,000-descriptor limit: 2 descriptors per
            // proxied connection, ~15 of its own, 1 for the admin probe. Issue 5's figure.
            idle_conns: 9_900,
            idle_rate: 2_000.0,
            // Issue 7's figure: held a minute, then every one proven alive.
            idle_hold: Duration::from_secs(60),
            idle_per_proc: 4_000,
            registry_requests: 50,
            connect_workers: 32,
            stream_conns: 1,
            stream_size: 1 << 20,
            sources: 16,
        }
    }

    pub fn quick() -> Plan {
        Plan {
            quick: true,
            rounds: 1,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            echo_conns: vec![10, 100],
            idle_conns: 200,
            idle_rate: 1_000.0,
            idle_hold: Duration::from_secs(1),
            idle_per_proc: 100,
            registry_requests: 20,
            connect_workers: 4,
            stream_size: 256 << 10,
            ..Plan::full()
        }
    }
}

pub struct Options {
    pub plan: Plan,
    pub strait: PathBuf,
    pub markdown: PathBuf,
    pub svg: PathBuf,
    /// Which CPUs each role runs on (see [`Layout::default_for`]).
    pub layout: Layout,
    /// Whether the layout was asked for (then a missing `taskset` is an error, not a note).
    pub chosen_layout: bool,
}

/// Runs the whole comparison and writes the report and the plot.
pub async fn compare(options: Options) -> Result<()> {
    let limits = raise_fd_limit();
    let tools = Tools::find(&options.strait)?;
    let plan = &options.plan;
    let mut layout = options.layout;
    if tools.taskset.is_none() && layout.is_pinned() {
        if options.chosen_layout {
            bail!("taskset is missing, so the CPU lists cannot be applied (Debian: util-linux)");
        }
        layout = Layout::unpinned(layout.cpus);
    }
    let machine = Machine::read(&tools, limits, layout);
    eprintln!("{}", machine.summary());
    let runner = Runner {
        tools: &tools,
        plan,
        limits,
        layout: &machine.layout,
    };
    let started = std::time::Instant::now();
    let mut results = Results::default();
    runner.all(&mut results).await?;
    results.took = started.elapsed();
    crate::report::write(&options.markdown, &options.svg, &machine, plan, &results)?;
    eprintln!(
        "wrote {} and {}",
        options.markdown.display(),
        options.svg.display()
    );
    Ok(())
}

struct Runner<'a> {
    tools: &'a Tools,
    plan: &'a Plan,
    limits: FdLimits,
    layout: &'a Layout,
}

/// One measurement kind, run for every side in every round.
#[derive(Clone, Copy, Debug)]
enum Scenario {
    Http,
    /// HTTP/1.1 again, on each gateway's listener that writes an access log.
    HttpLogged,
    /// HTTP/1.1 again, each client connection closing after ~20 requests.
    HttpChurn,
    /// HTTP/1.1 at a fixed rate (oha), this per cent of nginx's rate in the [`Scenario::Http`]
    /// runs, so every side carries the same load and latencies compare work per request.
    HttpPaced(u32),
    Http2,
    /// HTTP/1.1 and HTTP/2 over TLS (ALPN) at the gateways; the echo has no TLS to compare.
    Https,
    Http2Tls,
    Echo(usize),
    Connect,
    Stream,
    Idle,
}

/// What a TLS scenario says for the direct side, and what a logged one says.
const NO_TLS: &str = "skipped: the echo backend speaks no TLS";
const NO_LOG: &str = "skipped: the echo backend writes no access log";

/// Where an HTTP scenario's load goes on `side`: `None` for the echo backend over TLS or
/// logged.
fn http_url(scenario: Scenario, stack: &Stack, side: Side) -> Option<String> {
    let (scheme, addr) = match scenario {
        Scenario::Http2 => ("http", stack.h2_endpoint(side)),
        Scenario::Https | Scenario::Http2Tls => ("https", stack.tls_endpoint(side)?),
        Scenario::HttpLogged => ("http", stack.logged_endpoint(side)?),
        _ => ("http", stack.endpoint(side).0),
    };
    Some(format!("{scheme}://{addr}/bench/http"))
}

/// nginx's median rate in the closed-loop HTTP runs.
fn closed_loop_rate(results: &Results) -> Option<f64> {
    results
        .rows
        .iter()
        .find(|r| r.section.starts_with(HTTP_SECTION) && r.metric == "requests/s")?
        .median(Side::Nginx)
        .filter(|rate| *rate > 0.0)
}

/// The CPU time of the process answering the load (the echo for the direct run, nginx's master
/// and workers, Strait), over the recorded part of a run: read when the warm-up should be over,
/// by a task of its own, and again once the run has ended. Clock ticks are 10 ms and the
/// load generator takes a few milliseconds to start, so a 5 s run is read to within ~1 %.
struct ServerCpu {
    pid: u32,
    start: tokio::task::JoinHandle<Option<(f64, f64)>>,
}

impl ServerCpu {
    fn after(pid: u32, warmup: Duration) -> ServerCpu {
        let start = tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            tree_cpu_seconds(pid)
        });
        ServerCpu { pid, start }
    }

    /// Records user and kernel CPU time per `unit`, `units` of which the recorded part did.
    async fn record(
        self,
        results: &mut Results,
        section: &str,
        unit: &str,
        side: Side,
        units: f64,
    ) {
        let (Ok(Some(start)), Some(end)) = (self.start.await, tree_cpu_seconds(self.pid)) else {
            return;
        };
        if units <= 0.0 {
            return;
        }
        let per_unit = |from: f64, to: f64| (to - from) / units * 1e6;
        let user = format!("{SERVER_USER} (µs per {unit})");
        let kernel = format!("{SERVER_KERNEL} (µs per {unit})");
        results.add(
            section,
            &user,
            Better::Lower,
            side,
            per_unit(start.0, end.0),
        );
        results.add(
            section,
            &kernel,
            Better::Lower,
            side,
            per_unit(start.1, end.1),
        );
    }
}

impl Runner<'_> {
    async fn all(&self, results: &mut Results) -> Result<()> {
        let mut scenarios = vec![Scenario::Http, Scenario::HttpLogged, Scenario::HttpChurn];
        // Without oha, the report says how to get it (see `report::method`).
        if self.tools.oha.is_some() {
            scenarios.extend(PACED_SHARES.map(Scenario::HttpPaced));
        }
        scenarios.extend([Scenario::Http2, Scenario::Https, Scenario::Http2Tls]);
        scenarios.extend(self.plan.echo_conns.iter().map(|&c| Scenario::Echo(c)));
        scenarios.extend([Scenario::Connect, Scenario::Stream, Scenario::Idle]);
        for scenario in scenarios {
            for round in 1..=self.plan.rounds {
                // A fresh stack per round: no memory high-water mark or pooled connection
                // carries over from one measurement to the next.
                let stack = Stack::start(self.tools, self.limits.hard, self.layout).await?;
                for side in Side::ALL {
                    let label = format!(
                        "{scenario:?} round {round}/{} {}",
                        self.plan.rounds,
                        side.name()
                    );
                    match self.measure(scenario, &stack, side, results).await {
                        Ok(line) => eprintln!("[{label}] {line}"),
                        Err(error) => {
                            eprintln!("[{label}] FAILED: {error:#}");
                            results.note(format!("{label}: measurement failed: {error:#}"));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs one measurement and records its figures; returns a one-line summary.
    async fn measure(
        &self,
        scenario: Scenario,
        stack: &Stack,
        side: Side,
        results: &mut Results,
    ) -> Result<String> {
        use Better::{Higher, Lower, Neither};
        let (addr, pid) = stack.endpoint(side);
        let plan = self.plan;
        let secs = plan.duration.as_secs_f64();
        let (warmup, duration) = (plan.warmup.as_secs_f64().to_string(), secs.to_string());
        let url = |path: &str| format!("ws://{addr}{path}");
        match scenario {
            Scenario::Http | Scenario::HttpLogged | Scenario::HttpChurn | Scenario::Https => {
                let Some(url) = http_url(scenario, stack, side) else {
                    return Ok(match scenario {
                        Scenario::HttpLogged => NO_LOG,
                        _ => NO_TLS,
                    }
                    .into());
                };
                let cpu = ServerCpu::after(pid, plan.warmup);
                let churn = matches!(scenario, Scenario::HttpChurn);
                let (r, load_cpu) = self.wrk(&url, churn).await?;
                let s = format!(
                    "{} keep-alive GET{} (wrk -t{} -c{} -d{secs}s)",
                    match scenario {
                        Scenario::Https => "HTTPS",
                        _ => "HTTP",
                    },
                    match scenario {
                        Scenario::HttpLogged => ", access log on".to_owned(),
                        Scenario::HttpChurn => format!(
                            ", a new client connection every {} requests",
                            wrk::CHURN_REQUESTS
                        ),
                        _ => String::new(),
                    },
                    self.layout.load_threads(plan.http_conns),
                    plan.http_conns
                );
                let errors = (r.socket_errors + r.non2xx) as f64;
                results.add(&s, "requests/s", Higher, side, r.requests_per_sec);
                results.latency(&s, side, &r.latency);
                results.add(&s, "errors (socket + non-2xx)", Lower, side, errors);
                cpu.record(results, &s, "request", side, r.requests_per_sec * secs)
                    .await;
                results.add(&s, LOAD_CPU, Neither, side, load_cpu);
                Ok(format!(
                    "{:.0} req/s, p99 {:.0} µs, {errors} errors",
                    r.requests_per_sec, r.latency.p99_us
                ))
            }
            Scenario::HttpPaced(share) => {
                let nginx = closed_loop_rate(results)
                    .context("no rate of nginx's from the closed-loop HTTP runs to pace by")?;
                // Rounded, so the section reads well; the same in every round.
                let rate = (nginx * f64::from(share) / 100.0 / 100.0).round().max(1.0) * 100.0;
                let url = http_url(scenario, stack, side).context("every side serves HTTP")?;
                let cpu = ServerCpu::after(pid, plan.warmup);
                let r = self.oha(&url, rate).await?;
                let s = format!(
                    "{PACED_SECTION}: {share} % of nginx's rate (oha -c{} -q{rate:.0} -z{secs}s, open loop)",
                    plan.http_conns
                );
                let errors = r.errors as f64;
                results.add(&s, "requests/s", Neither, side, r.requests_per_sec);
                results.latency(&s, side, &r.latency);
                results.add(&s, "errors (failed + non-2xx)", Lower, side, errors);
                cpu.record(results, &s, "request", side, r.requests_per_sec * secs)
                    .await;
                Ok(format!(
                    "{:.0} req/s (asked {rate:.0}), p99 {:.0} µs, {errors} errors",
                    r.requests_per_sec, r.latency.p99_us
                ))
            }
            Scenario::Http2 | Scenario::Http2Tls => {
                let Some(url) = http_url(scenario, stack, side) else {
                    return Ok(NO_TLS.into());
                };
                let cpu = ServerCpu::after(pid, plan.warmup);
                let (r, load_cpu) = self.h2load(&url).await?;
                let s = format!(
                    "HTTP/2{} GET (h2load -c{} -m{} -D{secs})",
                    if matches!(scenario, Scenario::Http2) {
                        ""
                    } else {
                        " over TLS"
                    },
                    plan.h2_conns,
                    plan.h2_streams
                );
                results.add(&s, "requests/s", Higher, side, r.requests_per_sec);
                results.latency(&s, side, &r.latency);
                results.add(
                    &s,
                    "errors (failed requests, 4xx/5xx included)",
                    Lower,
                    side,
                    r.errors as f64,
                );
                cpu.record(results, &s, "request", side, r.requests_per_sec * secs)
                    .await;
                results.add(&s, LOAD_CPU, Neither, side, load_cpu);
                Ok(format!(
                    "{:.0} req/s, p99 {:.0} µs, {} errors",
                    r.requests_per_sec, r.latency.p99_us, r.errors
                ))
            }
            Scenario::Echo(conns) => {
                let size = plan.echo_size.to_string();
                let extra = [
                    ("--conns", conns.to_string()),
                    ("--size", size),
                    ("--warmup", warmup),
                    ("--duration", duration),
                ];
                let args = self.ws_args("echo", &url("/bench/echo"), &extra);
                // Its warm-up starts once every connection is open.
                let opening = Duration::from_secs_f64(conns as f64 / ECHO_OPEN_RATE);
                let cpu = ServerCpu::after(pid, opening + plan.warmup);
                let r: EchoReport = self.run_json(args, plan.warmup + plan.duration).await?;
                let s = format!(
                    "WebSocket echo, {} B messages, {conns} connections",
                    plan.echo_size
                );
                results.add(
                    &s,
                    "messages/s (round trips)",
                    Higher,
                    side,
                    r.messages_per_sec,
                );
                results.latency(&s, side, &r.latency);
                results.add(&s, "errors", Lower, side, r.errors as f64);
                cpu.record(results, &s, "round trip", side, r.messages_per_sec * secs)
                    .await;
                results.add(&s, LOAD_CPU, Neither, side, r.load_cpu_percent);
                results.error(&s, side, r.first_error.as_deref());
                Ok(format!(
                    "{:.0} msg/s, p99 {:.0} µs, {} errors",
                    r.messages_per_sec, r.latency.p99_us, r.errors
                ))
            }
            Scenario::Connect => {
                let extra = [
                    ("--workers", plan.connect_workers.to_string()),
                    ("--duration", duration),
                ];
                let args = self.ws_args("connect", &url("/bench/connect"), &extra);
                // Connection set-up has no warm-up.
                let cpu = ServerCpu::after(pid, Duration::ZERO);
                let r: ConnectReport = self.run_json(args, plan.duration).await?;
                let s = format!(
                    "WebSocket connection set-up, {} concurrent clients",
                    plan.connect_workers
                );
                results.add(
                    &s,
                    "sessions/s (connect + upgrade + close)",
                    Higher,
                    side,
                    r.sessions_per_sec,
                );
                results.add(&s, "handshake p50 (µs)", Lower, side, r.handshake.p50_us);
                results.add(&s, "handshake p99 (µs)", Lower, side, r.handshake.p99_us);
                results.add(&s, "failed connects", Lower, side, r.failures as f64);
                cpu.record(results, &s, "session", side, r.sessions_per_sec * secs)
                    .await;
                results.add(&s, LOAD_CPU, Neither, side, r.load_cpu_percent);
                results.error(&s, side, r.first_error.as_deref());
                Ok(format!(
                    "{:.0} sessions/s, {} failures",
                    r.sessions_per_sec, r.failures
                ))
            }
            Scenario::Stream => {
                let (conns, size) = (plan.stream_conns.to_string(), plan.stream_size.to_string());
                let extra = [
                    ("--conns", conns),
                    ("--size", size),
                    ("--warmup", warmup),
                    ("--duration", duration),
                ];
                let args = self.ws_args("stream", &url("/bench/stream"), &extra);
                let cpu = ServerCpu::after(pid, plan.warmup);
                let r: StreamReport = self.run_json(args, plan.warmup + plan.duration).await?;
                let s = format!(
                    "WebSocket stream, {} KiB messages, {} connection(s)",
                    plan.stream_size >> 10,
                    plan.stream_conns
                );
                results.add(&s, "echoed MB/s", Higher, side, r.mb_per_sec);
                cpu.record(results, &s, "MB echoed", side, r.mb_per_sec * secs)
                    .await;
                results.add(&s, LOAD_CPU, Neither, side, r.load_cpu_percent);
                results.error(&s, side, r.first_error.as_deref());
                Ok(format!("{:.1} MB/s", r.mb_per_sec))
            }
            Scenario::Idle => {
                // Only Strait has a connection registry to look at.
                let admin = (side == Side::Strait).then_some(stack.strait_admin);
                let (r, probe) = self.idle(&url("/bench/idle"), pid, admin).await?;
                let s = format!("Idle WebSocket connections, {} held", plan.idle_conns);
                let per_conn = r.bytes_per_conn().unwrap_or(f64::NAN) / 1024.0;
                let total = r.rss_after_kib.unwrap_or(0) as f64 / 1024.0;
                results.add(
                    &s,
                    "connections alive after the hold",
                    Higher,
                    side,
                    r.alive as f64,
                );
                results.add(&s, MEMORY_PER_CONN, Lower, side, per_conn);
                results.add(
                    &s,
                    "resident memory while holding them (MiB)",
                    Lower,
                    side,
                    total,
                );
                results.error(&s, side, r.first_error.as_deref());
                let mut line = format!(
                    "{}/{} alive, {per_conn:.1} KiB per connection",
                    r.alive, r.requested
                );
                match probe {
                    Some(Ok(probe)) => {
                        line.push_str(&probe_line(&probe));
                        for mismatch in &probe.mismatches {
                            results.note(format!("{s}, connection registry: {mismatch}"));
                        }
                        results.registry.push(probe);
                    }
                    Some(Err(error)) => {
                        line.push_str(&format!("; admin probe FAILED: {error:#}"));
                        results.note(format!(
                            "{s}, connection registry: the admin probe failed: {error:#}"
                        ));
                    }
                    None => {}
                }
                Ok(line)
            }
        }
    }

    /// A command that runs `program` on the load generators' CPUs.
    fn pinned(&self, program: &std::path::Path) -> Command {
        let taskset = self.tools.taskset.as_deref();
        Command::from(self.layout.command(Role::Load, program, taskset))
    }

    fn ws_args(&self, mode: &str, url: &str, extra: &[(&str, String)]) -> Command {
        let mut cmd = self.pinned(&self.tools.me);
        cmd.args([mode, "--json", "--url", url, "--sources"]);
        cmd.arg(self.plan.sources.to_string());
        for (flag, value) in extra {
            cmd.arg(flag);
            if !value.is_empty() {
                cmd.arg(value);
            }
        }
        cmd
    }

    async fn run_json<T: DeserializeOwned>(&self, cmd: Command, planned: Duration) -> Result<T> {
        let stdout = run_capture(cmd, planned + CHILD_GRACE).await?;
        last_json(&stdout)
    }

    /// wrk against `url` (after a short unrecorded warm-up when the plan has one), and the
    /// recorded run's CPU use (% of one core).
    async fn wrk(&self, url: &str, churn: bool) -> Result<(WrkReport, f64)> {
        let plan = self.plan;
        let script =
            std::env::temp_dir().join(format!("strait-bench-wrk-{}.lua", std::process::id()));
        let text = match churn {
            false => wrk::REPORT_SCRIPT.to_owned(),
            true => format!("{}\n{}", wrk::REPORT_SCRIPT, wrk::CHURN_SCRIPT),
        };
        std::fs::write(&script, text).context("cannot write the wrk script")?;
        let run = |secs: u64, latency: bool| {
            let mut cmd = self.pinned(&self.tools.wrk);
            cmd.args([
                &format!("-t{}", self.layout.load_threads(plan.http_conns)),
                &format!("-c{}", plan.http_conns),
                &format!("-d{secs}s"),
            ]);
            if latency {
                cmd.arg("--latency").arg("-s").arg(&script);
            }
            cmd.arg(url);
            cmd
        };
        if !plan.warmup.is_zero() {
            let secs = plan.warmup.as_secs().max(1);
            run_capture(run(secs, false), Duration::from_secs(secs) + CHILD_GRACE).await?;
        }
        let secs = plan.duration.as_secs().max(1);
        let limit = Duration::from_secs(secs) + CHILD_GRACE;
        let output = run_measured(run(secs, true), limit).await;
        let _ = std::fs::remove_file(&script);
        let (output, cpu) = output?;
        Ok((wrk::parse(&output)?, cpu / secs as f64 * 100.0))
    }

    /// oha against `url` at `rate` requests/s, after a short unrecorded warm-up when the plan
    /// has one.
    async fn oha(&self, url: &str, rate: f64) -> Result<OhaReport> {
        let plan = self.plan;
        let program = self.tools.oha.as_deref().context("oha is not installed")?;
        let run = |secs: u64| {
            let mut cmd = self.pinned(program);
            cmd.args([
                "-c",
                &plan.http_conns.to_string(),
                "-q",
                &rate.to_string(),
                "--latency-correction",
                "--worker-threads",
                &self.layout.load_threads(plan.http_conns).to_string(),
                "--no-tui",
                "--output-format",
                "json",
                "-z",
                &format!("{secs}s"),
                url,
            ]);
            cmd
        };
        if !plan.warmup.is_zero() {
            let secs = plan.warmup.as_secs().max(1);
            run_capture(run(secs), Duration::from_secs(secs) + CHILD_GRACE).await?;
        }
        let secs = plan.duration.as_secs().max(1);
        let output = run_capture(run(secs), Duration::from_secs(secs) + CHILD_GRACE).await?;
        oha::parse(&output)
    }

    /// h2load against `url`, with the plan's warm-up (unrecorded) and duration, and its CPU
    /// use (% of one core).
    async fn h2load(&self, url: &str) -> Result<(H2Report, f64)> {
        let plan = self.plan;
        let log = std::env::temp_dir().join(format!("strait-bench-h2-{}.log", std::process::id()));
        let secs = plan.duration.as_secs().max(1);
        let mut cmd = self.pinned(&self.tools.h2load);
        cmd.args([
            &format!("-t{}", self.layout.load_threads(plan.h2_conns)),
            &format!("-c{}", plan.h2_conns),
            &format!("-m{}", plan.h2_streams),
            &format!("-D{secs}"),
        ]);
        if !plan.warmup.is_zero() {
            cmd.arg(format!("--warm-up-time={}", plan.warmup.as_secs().max(1)));
        }
        cmd.arg(format!("--log-file={}", log.display())).arg(url);
        let ran = plan.warmup + Duration::from_secs(secs);
        let output = run_measured(cmd, ran + CHILD_GRACE).await;
        let logged = std::fs::read_to_string(&log).context("h2load wrote no log file");
        let _ = std::fs::remove_file(&log);
        let (output, cpu) = output?;
        // Its warm-up runs in the same process, at about the same rate.
        let load_cpu = cpu / ran.as_secs_f64() * 100.0;
        Ok((h2load::parse(&output, &logged?)?, load_cpu))
    }

    /// Idle connections spread over several load-generator processes (each under its own
    /// descriptor limit); this process reads the server's memory while all of them hold, then
    /// (with `admin`) times the gateway's admin API with all of them still held, and only then
    /// has every connection prove itself alive.
    async fn idle(
        &self,
        url: &str,
        pid: u32,
        admin: Option<SocketAddr>,
    ) -> Result<(IdleReport, Option<Result<Probe>>)> {
        let plan = self.plan;
        let procs = plan.idle_conns.div_ceil(plan.idle_per_proc.max(1)).max(1);
        let rss_before_kib = rss_tree_kib(pid);
        // New sessions on the empty gateway, to compare with the same while the house is full;
        // after the memory reading, so whatever they leave counts against the gateway.
        let target = Target::parse(url, plan.sources)?;
        let new_before = match admin {
            Some(_) => Some(registry::new_sessions(&target, plan.registry_requests).await),
            None => None,
        };
        let open_limit =
            Duration::from_secs_f64(plan.idle_conns as f64 / plan.idle_rate) + CHILD_GRACE;
        let mut children = Vec::with_capacity(procs);
        for p in 0..procs {
            let n = plan.idle_conns / procs + usize::from(p < plan.idle_conns % procs);
            let mut cmd = self.ws_args(
                "idle",
                url,
                &[
                    ("-n", n.to_string()),
                    ("--rate", (plan.idle_rate / procs as f64).to_string()),
                    ("--wait-stdin", String::new()),
                ],
            );
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true);
            let mut child = cmd
                .spawn()
                .context("cannot start an idle load-generator process")?;
            let stdin = child
                .stdin
                .take()
                .ok_or_else(|| anyhow!("no stdin pipe to the load generator"))?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| anyhow!("no stdout pipe from the load generator"))?;
            children.push((child, stdin, BufReader::new(stdout).lines()));
        }
        let mut opened = 0;
        for (_, _, lines) in &mut children {
            let line = tokio::time::timeout(open_limit, lines.next_line())
                .await
                .map_err(|_| {
                    anyhow!("an idle load generator did not finish opening within {open_limit:?}")
                })??
                .ok_or_else(|| {
                    anyhow!("an idle load generator exited while opening (see its stderr above)")
                })?;
            opened += serde_json::from_str::<OpenedLine>(&line)
                .with_context(|| format!("unexpected line from the idle load generator: {line}"))?
                .opened;
        }
        tokio::time::sleep(plan.idle_hold).await;
        let rss_after_kib = rss_tree_kib(pid);
        // After the memory reading, so the answers' allocations do not count in it.
        let probe = match admin {
            Some(admin) => Some(
                async {
                    let mut probe = registry::probe(admin, opened, plan.registry_requests).await?;
                    probe.new_before = new_before.transpose()?;
                    probe.new_held =
                        Some(registry::new_sessions(&target, plan.registry_requests).await?);
                    anyhow::Ok(probe)
                }
                .await,
            ),
            None => None,
        };
        let mut report = IdleReport {
            requested: plan.idle_conns,
            opened,
            rss_before_kib,
            rss_after_kib,
            ..IdleReport::default()
        };
        for (_, stdin, _) in &mut children {
            stdin
                .write_all(b"check\n")
                .await
                .context("cannot tell a load generator to check")?;
        }
        for (mut child, _, mut lines) in children {
            let line = tokio::time::timeout(CHILD_GRACE, lines.next_line())
                .await
                .map_err(|_| anyhow!("an idle load generator did not finish its check in time"))??
                .ok_or_else(|| anyhow!("an idle load generator exited during its check"))?;
            let part: IdleReport = serde_json::from_str(&line)
                .with_context(|| format!("unexpected line from the idle load generator: {line}"))?;
            report.alive += part.alive;
            report.first_error = report.first_error.or(part.first_error);
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
        Ok((report, probe))
    }
}

/// "; GET /connections p50 1.2 ms, ...": the probe's medians for the progress line.
fn probe_line(probe: &Probe) -> String {
    let mut line = format!("; with {} sessions held:", probe.held);
    for endpoint in Endpoint::ALL {
        if let Some((p50, _, max)) = probe
            .timings(endpoint)
            .and_then(|t| registry::summary(&t.micros))
        {
            line.push_str(&format!(
                " GET {} p50 {:.2} ms max {:.2} ms,",
                endpoint.path(),
                p50 / 1000.0,
                max / 1000.0
            ));
        }
    }
    for (when, timings) in [("before", &probe.new_before), ("held", &probe.new_held)] {
        if let Some((p50, _, max)) = timings.as_ref().and_then(|t| registry::summary(&t.micros)) {
            line.push_str(&format!(
                " new session ({when}) p50 {:.2} ms max {:.2} ms,",
                p50 / 1000.0,
                max / 1000.0
            ));
        }
    }
    line.pop();
    if probe.mismatched > 0 {
        line.push_str(&format!(
            " — {} of {} answers did NOT count {} sessions",
            probe.mismatched, probe.checked, probe.held
        ));
    }
    line
}

/// The first line an idle load generator prints in `--wait-stdin` mode.
#[derive(Deserialize, serde::Serialize)]
pub struct OpenedLine {
    pub opened: usize,
    pub failed: usize,
    pub first_error: Option<String>,
}

/// Runs a command to completion within `limit`, returning its stdout; a non-zero exit is an
/// error carrying its stderr. The child is killed if the limit passes.
async fn run_capture(mut cmd: Command, limit: Duration) -> Result<String> {
    let what = format!("{:?}", cmd.as_std());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("{what} did not finish within {limit:?} and was killed"))?
        .with_context(|| format!("{what} could not be waited for"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            stdout
        );
    }
    Ok(stdout)
}

/// [`run_capture`], and the CPU seconds the child used (read as this process's ended
/// children's, before it starts and once it is reaped; `NaN` where /proc says nothing).
async fn run_measured(cmd: Command, limit: Duration) -> Result<(String, f64)> {
    let before = ended_children_cpu_seconds();
    let stdout = run_capture(cmd, limit).await?;
    let cpu = match (before, ended_children_cpu_seconds()) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    Ok((stdout, cpu))
}

/// The last non-empty line of `stdout`, parsed as JSON.
fn last_json<T: DeserializeOwned>(stdout: &str) -> Result<T> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| anyhow!("the load generator printed nothing"))?;
    serde_json::from_str(line).with_context(|| format!("unexpected load-generator output: {line}"))
}
