//! `strait-bench`: the WebSocket load generator (`idle`, `echo`, `connect`, `stream`) and the
//! `compare` harness against nginx. Thin: argument parsing and printing; the work is in the
//! `strait_bench` library.

// As in the gateway: nothing that may panic on what the harness reads (the network, the
// tools' output). Tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use strait_bench::compare::{self, OpenedLine, Options, Plan};
use strait_bench::cpus::{CpuSet, Layout};
use strait_bench::procs::raise_fd_limit;
use strait_bench::ws_load;
use strait_bench::wsclient::Target;
use tokio::io::AsyncBufReadExt;

/// Longest any single run may be asked to last.
const MAX_SECONDS: f64 = 3600.0;
/// Most connections one run may be asked for.
const MAX_CONNS: usize = 1_000_000;

#[derive(Parser)]
#[command(
    name = "strait-bench",
    about = "Load generator and comparison harness for Strait"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args)]
struct Load {
    /// Where to send the load, e.g. ws://127.0.0.1:8080/chat
    #[arg(long)]
    url: String,
    /// Spread client sockets over 127.0.0.1 ..= 127.0.0.N.
    #[arg(long, default_value_t = 16)]
    sources: u8,
    /// Print one JSON line instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open N connections at a ramp rate, hold them, prove each alive with one echo.
    Idle {
        #[command(flatten)]
        load: Load,
        #[arg(short, long, default_value_t = 1000)]
        n: usize,
        /// Connections opened per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Seconds to hold them before the liveness check.
        #[arg(long, default_value_t = 10.0)]
        hold: f64,
        /// Process whose resident memory (with its children) is read before and after.
        #[arg(long)]
        pid: Option<u32>,
        /// For `compare`: after opening, print a line and wait for one on stdin to check.
        #[arg(long, hide = true)]
        wait_stdin: bool,
    },
    /// C connections doing request/response round trips of B-byte messages.
    Echo {
        #[command(flatten)]
        load: Load,
        #[arg(long, default_value_t = 100)]
        conns: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// Workers that connect, upgrade and close in a loop: sessions per second.
    Connect {
        #[command(flatten)]
        load: Load,
        #[arg(long, default_value_t = 32)]
        workers: usize,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// Large binary messages sent as fast as the echo returns them: MB/s received back.
    Stream {
        #[command(flatten)]
        load: Load,
        #[arg(long, default_value_t = 1)]
        conns: usize,
        #[arg(long, default_value_t = 1 << 20)]
        size: usize,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// Direct vs nginx vs Strait; writes BENCHMARKS.md and bench/results.svg.
    Compare {
        /// Tiny runs (seconds in all) to try the harness out.
        #[arg(long)]
        quick: bool,
        /// Rounds per measurement (default 3, or 1 with --quick).
        #[arg(long)]
        rounds: Option<usize>,
        /// Idle connections to hold (default 9900, or 200 with --quick); e.g. `--quick
        /// --idle-conns 9900` checks the connection registry at full size in about a minute.
        #[arg(long)]
        idle_conns: Option<usize>,
        /// Seconds the idle connections are held before the memory reading and the liveness
        /// check (default 60, or 1 with --quick).
        #[arg(long)]
        idle_hold: Option<f64>,
        /// The strait binary (default: target/release/strait in this workspace).
        #[arg(long)]
        strait: Option<PathBuf>,
        /// Where to write the report (default: BENCHMARKS.md in this workspace).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where to write the plot (default: bench/results.svg in this workspace).
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Pin nothing: every process may run on any CPU.
        #[arg(long, conflicts_with_all = ["gateway_cpus", "backend_cpus", "load_cpus"])]
        no_pin: bool,
        /// CPUs for the gateways, nginx and Strait alike, as `taskset -c` takes them (e.g.
        /// `0-3`); each runs a worker per CPU of the set. Default: the first half of the CPUs
        /// from 4 CPUs up, else not pinned.
        #[arg(long, value_name = "LIST")]
        gateway_cpus: Option<String>,
        /// CPUs for the echo backend. Default: the next quarter from 4 CPUs up, else not
        /// pinned.
        #[arg(long, value_name = "LIST")]
        backend_cpus: Option<String>,
        /// CPUs for the load generators (wrk and h2load get a thread per CPU). Default: the
        /// rest from 4 CPUs up, else the last CPU.
        #[arg(long, value_name = "LIST")]
        load_cpus: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn seconds(what: &str, value: f64) -> Result<Duration> {
    if !(0.0..=MAX_SECONDS).contains(&value) {
        bail!("--{what} must be between 0 and {MAX_SECONDS} seconds");
    }
    Ok(Duration::from_secs_f64(value))
}

fn count(what: &str, value: usize) -> Result<usize> {
    if value == 0 || value > MAX_CONNS {
        bail!("--{what} must be between 1 and {MAX_CONNS}");
    }
    Ok(value)
}

fn workspace() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Prints `report` as one JSON line, or pretty for a person.
fn emit<T: Serialize + std::fmt::Debug>(json: bool, report: &T) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(report)?);
    }
    Ok(())
}

async fn run(command: Cmd) -> Result<()> {
    if !matches!(command, Cmd::Compare { .. }) {
        raise_fd_limit();
    }
    match command {
        Cmd::Idle {
            load,
            n,
            rate,
            hold,
            pid,
            wait_stdin,
        } => {
            let target = Target::parse(&load.url, load.sources)?;
            let n = count("n", n)?;
            let hold = seconds("hold", hold)?;
            if wait_stdin {
                return idle_for_compare(&target, n, rate).await;
            }
            let report = ws_load::idle(&target, n, rate, hold, pid).await;
            emit(load.json, &report)?;
            if !load.json
                && let Some(bytes) = report.bytes_per_conn()
            {
                println!("resident memory per connection: {:.1} KiB", bytes / 1024.0);
            }
            Ok(())
        }
        Cmd::Echo {
            load,
            conns,
            size,
            warmup,
            duration,
        } => {
            let target = Target::parse(&load.url, load.sources)?;
            let report = ws_load::echo(
                &target,
                count("conns", conns)?,
                size,
                seconds("warmup", warmup)?,
                seconds("duration", duration)?,
            )
            .await?;
            emit(load.json, &report)
        }
        Cmd::Connect {
            load,
            workers,
            duration,
        } => {
            let target = Target::parse(&load.url, load.sources)?;
            let report = ws_load::connect(
                &target,
                count("workers", workers)?,
                seconds("duration", duration)?,
            )
            .await;
            emit(load.json, &report)
        }
        Cmd::Stream {
            load,
            conns,
            size,
            warmup,
            duration,
        } => {
            let target = Target::parse(&load.url, load.sources)?;
            let report = ws_load::stream(
                &target,
                count("conns", conns)?,
                size,
                seconds("warmup", warmup)?,
                seconds("duration", duration)?,
            )
            .await?;
            emit(load.json, &report)
        }
        Cmd::Compare {
            quick,
            rounds,
            idle_conns,
            idle_hold,
            strait,
            out,
            svg,
            no_pin,
            gateway_cpus,
            backend_cpus,
            load_cpus,
        } => {
            let mut plan = if quick { Plan::quick() } else { Plan::full() };
            if let Some(rounds) = rounds {
                plan.rounds = rounds.clamp(1, 100);
            }
            if let Some(n) = idle_conns {
                // The full plan's ramp and processes: quick's are sized for 200.
                let full = Plan::full();
                plan.idle_conns = count("idle-conns", n)?;
                plan.idle_rate = full.idle_rate;
                plan.idle_per_proc = full.idle_per_proc;
            }
            if let Some(secs) = idle_hold {
                plan.idle_hold = seconds("idle-hold", secs)?;
            }
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            let mut layout = if no_pin {
                Layout::unpinned(cpus)
            } else {
                Layout::default_for(cpus)
            };
            let chosen = [&gateway_cpus, &backend_cpus, &load_cpus]
                .iter()
                .any(|list| list.is_some());
            for (list, slot) in [
                (gateway_cpus, &mut layout.gateway),
                (backend_cpus, &mut layout.backend),
                (load_cpus, &mut layout.load),
            ] {
                if let Some(list) = list {
                    *slot = Some(CpuSet::parse(&list, cpus)?);
                }
            }
            let root = workspace();
            compare::compare(Options {
                plan,
                strait: strait.unwrap_or_else(|| root.join("target/release/strait")),
                markdown: out.unwrap_or_else(|| root.join("BENCHMARKS.md")),
                svg: svg.unwrap_or_else(|| root.join("bench/results.svg")),
                layout,
                chosen_layout: chosen,
            })
            .await
        }
    }
}

/// `idle --wait-stdin`: open, report, wait for the parent's "check" line, check, report.
async fn idle_for_compare(target: &Target, n: usize, rate: f64) -> Result<()> {
    let opened = ws_load::open_many(target, n, rate).await;
    let line = OpenedLine {
        opened: opened.conns.len(),
        failed: opened.failed,
        first_error: opened.first_error.clone(),
    };
    println!("{}", serde_json::to_string(&line)?);
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let limit = Duration::from_secs_f64(MAX_SECONDS);
    // Any line, end of input or the limit all mean: check now.
    let _ = tokio::time::timeout(limit, stdin.next_line()).await;
    let count = opened.conns.len();
    let (alive, check_error) =
        ws_load::check_and_close(opened.conns, Duration::from_secs(30)).await;
    let report = ws_load::IdleReport {
        requested: n,
        opened: count,
        alive,
        first_error: opened.first_error.or(check_error),
        rss_before_kib: None,
        rss_after_kib: None,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
