//! BENCHMARKS.md, written from a comparison's [`Results`] and its [`Machine`]: the targets
//! ([`crate::targets`]), medians, ratios, where Strait falls short, kernel settings and the
//! 1,000,000-connection projection.
//! The plot is [`crate::plot`]'s.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::compare::Plan;
use crate::cpus::{CpuSet, Layout, Role};
use crate::machine::Machine;
use crate::registry::{self as probe, Endpoint};
use crate::results::{Better, Results};
use crate::stack::Side;

/// The sections measured apart from the comparison (criterion, callgrind, the backpressure
/// test), written by hand after running them (the harness runs none of them); copied into the
/// report as they are.
pub const MICRO_BENCHMARKS: &str = include_str!("../../../bench/micro-benchmarks.md");

/// Writes BENCHMARKS.md and the SVG plot.
pub fn write(
    md: &Path,
    svg: &Path,
    machine: &Machine,
    plan: &Plan,
    results: &Results,
) -> Result<()> {
    if let Some(dir) = svg.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    crate::plot::write_svg(svg, results)?;
    let svg_ref = md
        .parent()
        .and_then(|dir| svg.strip_prefix(dir).ok())
        .unwrap_or(svg);
    let text = markdown(machine, plan, results, &svg_ref.display().to_string());
    std::fs::write(md, text).with_context(|| format!("cannot write {}", md.display()))
}

/// Formats a figure for a table: thousands separators, fewer decimals for larger numbers.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    if v.abs() >= 1000.0 {
        let digits = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        return if v < 0.0 { format!("-{out}") } else { out };
    }
    let decimals = if v.abs() >= 100.0 || v.fract() == 0.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.decimals$}")
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => {
            format!("{:.2}×", a / b)
        }
        _ => "—".into(),
    }
}

fn markdown(m: &Machine, plan: &Plan, results: &Results, svg: &str) -> String {
    let mut out = String::new();
    let w = &mut out;
    let secs = plan.duration.as_secs_f64();
    let default = if plan.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "Strait against nginx, both in front of the same echo backend, and the backend on its own \
         (\"direct\"). Written by `cargo run --release -p strait-bench -- compare{}{}{}{}{}` on {}, \
         measuring `{}` (the measurements took {:.1} minutes); every figure is the **median of {} round(s)**. Ratios are Strait's median divided by the other's: \
         for ↑ metrics above 1 is better for Strait, for ↓ metrics below 1 is. \
         The per-round values are under \"Every round\" at the end: their spread is the noise to \
         read the ratios against.\n",
        if plan.quick { " --quick" } else { "" },
        if plan.rounds != default.rounds {
            format!(" --rounds {}", plan.rounds)
        } else {
            String::new()
        },
        if plan.idle_conns != default.idle_conns {
            format!(" --idle-conns {}", plan.idle_conns)
        } else {
            String::new()
        },
        if plan.idle_hold != default.idle_hold {
            format!(" --idle-hold {}", plan.idle_hold.as_secs_f64())
        } else {
            String::new()
        },
        layout_flags(&m.layout),
        m.date,
        m.strait,
        results.took.as_secs_f64() / 60.0,
        plan.rounds
    );
    if plan.quick {
        let _ = writeln!(
            w,
            "> **Quick mode**: every run lasts about a second; these figures only show the harness works.\n"
        );
    }
    let _ = writeln!(
        w,
        "To reproduce (as root, for the packages; the harness itself installs nothing):\n\n\
         ```sh\n\
         bash scripts/install-bench-tools.sh --oha --pgo        # nginx, wrk, h2load, valgrind, strace, LLVM (Debian), oha (cargo, ~4 minutes); idempotent\n\
         cargo build --release                                  # target/release/strait\n\
         bash scripts/pgo.sh                                    # a profile-guided build, target/pgo/strait, ~12 minutes\n\
         cargo run --release -p strait-bench -- compare         # ~10 minutes (--idle-hold 5: ~7); --quick ~25 s; --strait target/pgo/strait for that build\n\
         cargo run --release -p strait-bench -- compare --quick --idle-conns 9900  # the registry at full size, ~1 minute\n\
         cargo run --release -p strait-bench -- compare --gateway-cpus 0-3 --backend-cpus 4-5 --load-cpus 6-7  # CPUs per role (8-CPU default)\n\
         scripts/callgrind.sh                                   # instructions per unit of work vs nginx, ~2 minutes\n\
         scripts/syscalls.sh                                    # system calls per unit of work vs nginx, ~40 s\n\
         scripts/ab.sh OLD_STRAIT NEW_STRAIT http               # two builds in alternation (http, churn, paced, h2, echo, connect, stream), ~1 minute\n\
         scripts/access-log.sh                                  # both gateways with their access log off and on, ~2 minutes\n\
         scripts/backend-connects.sh                            # backend connections opened for clients that come and go, ~10 s\n\
         scripts/paced.sh                                       # HTTP latency of both gateways at the same load, ~1 minute\n\
         ```\n\n\
         The load generator also runs on its own, e.g. `cargo run --release -p strait-bench -- echo \
         --url ws://127.0.0.1:8080/api/chat --conns 100 --duration 10` (modes `idle`, `echo`, \
         `connect`, `stream`; `--help` lists their options).\n"
    );
    crate::targets::write(w, m, plan, results);
    let _ = writeln!(w, "## Machine and versions\n");
    let _ = writeln!(w, "| | |\n|---|---|");
    let _ = writeln!(
        w,
        "| CPU | {} × {} (`nproc` = {}) |",
        m.layout.cpus, m.cpu_model, m.layout.cpus
    );
    let _ = writeln!(w, "| Memory | {:.1} GiB |", m.mem_gib);
    let _ = writeln!(w, "| Kernel | {} |", m.kernel);
    let _ = writeln!(
        w,
        "| Strait | {} (release build; TLS by rustls, ring provider) |",
        m.strait
    );
    let _ = writeln!(
        w,
        "| nginx | {} (Debian package; {}) |",
        m.nginx, m.nginx_tls
    );
    let _ = writeln!(w, "| wrk | {} |", m.wrk);
    let _ = writeln!(w, "| h2load | {} |", m.h2load);
    let _ = writeln!(
        w,
        "| oha | {} |",
        m.oha
            .as_deref()
            .unwrap_or("not found (HTTP at the same load not run)")
    );
    let _ = writeln!(
        w,
        "| Descriptor limit | soft {} → {} (raised by the harness), hard {} |",
        m.limits.soft_before, m.limits.soft_after, m.limits.hard
    );
    let _ = writeln!(
        w,
        "| Sysctls | `ip_local_port_range` {}, `somaxconn` {}, `tcp_tw_reuse` {}, `fs.nr_open` {} |\n",
        m.port_range, m.somaxconn, m.tw_reuse, m.nr_open
    );

    method(w, m, plan, results, secs);

    let _ = writeln!(w, "## Results\n");
    let _ = writeln!(
        w,
        "![latency percentiles and memory per connection]({svg})\n"
    );
    let mut section = "";
    for row in &results.rows {
        if row.section != section {
            section = &row.section;
            let _ = writeln!(w, "\n### {section}\n");
            let _ = writeln!(
                w,
                "| metric | direct | nginx | Strait | Strait/nginx | Strait/direct |"
            );
            let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|");
        }
        let [d, n, s] = Side::ALL.map(|side| row.median(side));
        let arrow = match row.better {
            Better::Higher => " ↑",
            Better::Lower => " ↓",
            Better::Neither => "",
        };
        let cell = |v: Option<f64>| v.map_or("—".into(), num);
        let _ = writeln!(
            w,
            "| {}{arrow} | {} | {} | {} | {} | {} |",
            row.metric,
            cell(d),
            cell(n),
            cell(s),
            if row.better == Better::Neither {
                "—".into()
            } else {
                ratio(s, n)
            },
            if row.better == Better::Neither {
                "—".into()
            } else {
                ratio(s, d)
            },
        );
    }
    let _ = writeln!(w);

    registry(w, plan, results);
    micro(w);
    falls_short(w, m, results);
    bounds(w, m, results);
    settings(w, m);
    scaling(w, m, results, plan);
    appendix(w, results);
    out
}

/// The options that give `layout`, empty for this machine's default.
fn layout_flags(layout: &Layout) -> String {
    if *layout == Layout::default_for(layout.cpus) {
        return String::new();
    }
    if !layout.is_pinned() {
        return " --no-pin".into();
    }
    let flag = |name: &str, set: Option<&CpuSet>| {
        set.map_or(String::new(), |set| format!(" --{name}-cpus {set}"))
    };
    flag("gateway", layout.gateway.as_ref())
        + &flag("backend", layout.backend.as_ref())
        + &flag("load", layout.load.as_ref())
}

fn method(w: &mut String, m: &Machine, plan: &Plan, results: &Results, secs: f64) {
    let layout = &m.layout;
    let pin = if layout.groups().len() > 1 {
        format!(
            "Pinned with `taskset` to sets of CPUs that are the same or disjoint: {}. Both gateways get the same \
             CPUs (nginx a worker per CPU, Strait a worker thread per CPU), and wrk and h2load a \
             thread per load-generator CPU. A gateway's rate is then bounded by its own CPUs, unless \
             the echo's or the load generators' run out first (see \"What bounds the ratios on this \
             host\"). All run on this one machine and talk over loopback.",
            layout.describe()
        )
    } else if layout.is_pinned() {
        format!(
            "CPUs by `taskset`: {}. The roles share CPUs (a role that is not pinned, or sets that \
             overlap); the load generators are pinned so the scheduler does not bounce them \
             between cores. Load generator, gateway and echo backend all run on this one machine, \
             so absolute figures are lower than on separate hosts; the ratios are the point.",
            layout.describe()
        )
    } else {
        "Nothing is pinned (taskset missing, one CPU, or --no-pin); load generator, gateway and \
         echo backend share the machine, so the ratios are the point."
            .into()
    };
    let workers = layout.cpus_of(Role::Gateway);
    let plural = if workers == 1 { "" } else { "s" };
    let _ = writeln!(w, "## Method\n");
    let _ = writeln!(
        w,
        "- **Topology**: load generator → (nothing | nginx | Strait) → `strait echo`, all over loopback. \
         Strait runs `strait run` with an environment per port (`websocket: true`, `access_log: {{format: off}}` as \
         nginx's is off; one plain, one TLS) and one proxy `/*` to the echo deployed to each, and its admin API on \
         another loopback port; \
         nginx runs [`bench/nginx.conf.template`](bench/nginx.conf.template) ({workers} worker{plural}, `worker_rlimit_nofile` \
         and `worker_connections` at the hard limit, upstream `keepalive 256`, HTTP/1.1 upstream, the \
         `$connection_upgrade` map, 1 h read timeout, `access_log off`, buffering left on; no `worker_cpu_affinity`: \
         `auto` changed nothing measurable for nginx here). Strait serves \
         connections on {workers} worker thread{plural} (its default: one per CPU it may run on, each bound to one \
         of them), each with its own runtime and listening socket. Each gateway also listens on one more port that logs every \
         request (the \"access log on\" row); every other row runs with the logs off."
    );
    let _ = writeln!(
        w,
        "- **Order**: for each measurement, {} round(s); each round starts a fresh echo, nginx and Strait, then \
         measures direct → nginx → Strait. A fresh start per round keeps one run's memory high-water mark or \
         pooled connections out of the next.",
        plan.rounds
    );
    let _ = writeln!(w, "- **Pinning**: {pin}");
    let _ = writeln!(
        w,
        "- **HTTP**: `wrk -t{} -c{} -d{secs}s --latency` with [`bench/wrk-report.lua`](bench/wrk-report.lua) \
         (which adds p99.9) on `GET /bench/http`; the echo answers a ~0.5 KB JSON body.{}",
        layout.load_threads(plan.http_conns),
        plan.http_conns,
        if plan.warmup.is_zero() {
            ""
        } else {
            " A 1 s wrk run first warms each side up, unrecorded."
        }
    );
    let _ = writeln!(
        w,
        "- **HTTP, access log on**: the same load on each gateway's logging port, as operators run a \
         gateway: nginx's default `combined` format to a file with `buffer=32k flush=100ms`, Strait's \
         `combined` to a file (each worker's lines handed to a writer in 32 KiB pieces or every 100 ms). No \
         direct figure: the echo logs nothing. `scripts/access-log.sh` measures each gateway's log off \
         and on, JSON included, in alternation."
    );
    let _ = writeln!(
        w,
        "- **HTTP, clients that come and go**: the same load with [`bench/wrk-churn.lua`](bench/wrk-churn.lua) \
         added to the script: every {n}th request of a wrk thread asks for its connection to close \
         (`Connection: close`) and wrk opens a new one, so client connections carry ~{n} requests each. nginx \
         serves each new client from its upstream pool; Strait from its worker's shared backend connections \
         for a client's first 8 requests, then on one of them kept for the client, shared again when it \
         closes (`scripts/backend-connects.sh` counts the backend connects).",
        n = crate::wrk::CHURN_REQUESTS
    );
    let paced = results
        .rows
        .iter()
        .any(|r| r.section.starts_with(crate::compare::PACED_SECTION));
    let shares = crate::compare::PACED_SHARES.map(|share| format!("{share} %"));
    let _ = writeln!(
        w,
        "- **HTTP at the same load**: {}",
        if paced {
            format!(
                "`oha -c{} -q R --latency-correction -z{secs}s` on the same `GET /bench/http` \
                 (a thread per load-generator CPU, as wrk), R = {} of nginx's median rate in the HTTP runs above, the same R for every side{}. \
                 wrk keeps {} requests in flight, so there a side that serves fewer requests per \
                 second answers each later and its latency follows its rate; oha sends each \
                 request when it is due and times it from then (an open loop), so the sides carry \
                 the same load and their latencies compare the work per request, and a side that \
                 falls behind shows it as latency.",
                plan.http_conns,
                shares.join(" and "),
                if plan.warmup.is_zero() {
                    ""
                } else {
                    ", after a 1 s unrecorded run at that rate"
                },
                plan.http_conns
            )
        } else {
            "not run: oha was not found (`bash scripts/install-bench-tools.sh --oha` builds it \
             from crates.io, ~4 minutes)."
                .to_owned()
        }
    );
    let _ = writeln!(
        w,
        "- **HTTP/2**: `h2load -t{} -c{} -m{} -D{secs}` (HTTP/2 without TLS, prior knowledge: {} streams in \
         flight, as many as wrk's connections) on the same `GET /bench/http`{}; percentiles from its per-request \
         log. nginx 1.22 serves that on a second port (`listen … http2`); the echo and Strait tell it from \
         HTTP/1.1 on one. Both gateways forward each stream to the echo over keep-alive HTTP/1.1 \
         connections: nginx's upstream pool; Strait's shared connections of the worker for a client \
         connection's first 8 requests, then its own, up to 16 per client connection, and shared ones \
         beyond those.",
        layout.load_threads(plan.h2_conns),
        plan.h2_conns,
        plan.h2_streams,
        plan.h2_conns * plan.h2_streams,
        if plan.warmup.is_zero() {
            String::new()
        } else {
            format!(
                " after {} s of unrecorded warm-up",
                plan.warmup.as_secs_f64()
            )
        }
    );
    let _ = writeln!(
        w,
        "- **TLS**: the same two loads on each gateway's TLS port — `wrk` over HTTPS (HTTP/1.1) and `h2load` \
         offering ALPN `h2` — with one self-signed ECDSA P-256 certificate made per run (rcgen) that both \
         serve, TLS 1.3 as client and server negotiate it. nginx terminates TLS with OpenSSL (`listen … ssl \
         http2`, `ssl_session_cache shared:SSL:10m`), Strait with rustls (an environment with `tls`). The \
         connections are kept alive, so this measures record encryption and framing, not handshakes; the \
         echo speaks no TLS, so there is no direct figure."
    );
    let _ = writeln!(
        w,
        "- **WebSocket echo**: C connections, each sending a {} B binary message and waiting for its echo \
         (closed loop) for {secs} s after a {} s unrecorded warm-up; round-trip times in an HDR histogram.",
        plan.echo_size,
        plan.warmup.as_secs_f64()
    );
    let _ = writeln!(
        w,
        "- **Connection set-up**: {} clients each loop TCP connect → upgrade (until the 101 is read) → close \
         handshake (client sends close, waits for the server's close and FIN) for {secs} s; a session counts \
         when complete. The client closes with a close frame so the server side holds TIME_WAIT, not the \
         client's ephemeral port.",
        plan.connect_workers
    );
    let _ = writeln!(
        w,
        "- **Stream**: {} connection(s); a writer sends {} KiB binary messages as fast as TCP accepts them while \
         a reader counts echoed bytes. The figure is **payload bytes received back per second** (the return \
         direction); every byte crossed the proxy twice.",
        plan.stream_conns,
        plan.stream_size >> 10
    );
    let _ = writeln!(
        w,
        "- **Idle**: {} connections opened at {} per second by {} load-generator process(es) (each under its \
         own descriptor limit), held {} s; then the server's resident memory (`VmRSS` from /proc; nginx = \
         master + workers; \"direct\" = the echo backend itself) is read, and every connection proves it is \
         alive with one echo round trip. Memory per connection = (RSS while holding − RSS before opening) / \
         connections opened. The echo backend's own memory is not counted in nginx's or Strait's figure. \
         On Strait's turn its admin API is timed between the memory reading and the liveness check (see \
         \"Connection registry\" below).",
        plan.idle_conns,
        plan.idle_rate,
        plan.idle_conns.div_ceil(plan.idle_per_proc.max(1)),
        plan.idle_hold.as_secs_f64()
    );
    let _ = writeln!(
        w,
        "- **Server CPU**: for each throughput run, the user-space and kernel CPU time of the process \
         answering the load (the echo itself for \"direct\", nginx's master and workers, Strait; \
         utime and stime from /proc, every thread) over the recorded part of the run, divided by the \
         units that part completed. The kernel's share is the TCP work both gateways do for the same \
         system calls; user space is what each gateway's own code costs. With the load generator's \
         and the echo's, it is what bounds a side's rate on CPUs they share.",
    );
    let _ = writeln!(
        w,
        "- **Source addresses**: client sockets bind to 127.0.0.1–127.0.0.{} (port 0) before connecting, so \
         large runs do not run out of ephemeral ports.\n",
        plan.sources
    );
}

fn falls_short(w: &mut String, m: &Machine, results: &Results) {
    let _ = writeln!(w, "## Where Strait falls short\n");
    let _ = writeln!(
        w,
        "Generated from the medians above: every figure where Strait is more than 5 % worse than \
         nginx, as Strait's median vs nginx's (ratio).\n"
    );
    let mut any = false;
    let mut sections: Vec<(&str, Vec<String>)> = Vec::new();
    for row in &results.rows {
        let (Some(s), Some(n)) = (row.median(Side::Strait), row.median(Side::Nginx)) else {
            continue;
        };
        let worse = match row.better {
            Better::Higher => s < n * 0.95,
            Better::Lower => s > n * 1.05 && s - n > 1e-9,
            Better::Neither => false,
        };
        if !worse {
            continue;
        }
        let how = if n != 0.0 {
            format!("{:.2}×", s / n)
        } else {
            "nginx: 0".into()
        };
        let item = format!("{} {} vs {} ({how})", row.metric, num(s), num(n));
        match sections.iter_mut().find(|(name, _)| *name == row.section) {
            Some((_, items)) => items.push(item),
            None => sections.push((&row.section, vec![item])),
        }
    }
    for (section, items) in sections {
        any = true;
        let _ = writeln!(
            w,
            "- **{section}** (Strait vs nginx): {}.",
            items.join("; ")
        );
    }
    if !any {
        let _ = writeln!(
            w,
            "- In these runs, no figure of Strait's is more than 5 % worse than nginx's."
        );
    }
    for row in results
        .rows
        .iter()
        .filter(|r| r.metric == crate::compare::LOAD_CPU)
    {
        let cores = m.layout.cpus_of(Role::Load);
        if let Some(cpu) = row
            .median(Side::Direct)
            .filter(|c| *c >= 90.0 * cores as f64)
        {
            let _ = writeln!(
                w,
                "\nCaveat: in \"{}\" the load generator's {} {:.0} % busy even without a \
                 proxy, so that run measures the generator as much as the servers and its ratios are \
                 pulled towards 1.",
                row.section,
                if cores == 1 {
                    "own core was"
                } else {
                    "cores were"
                },
                cpu / cores as f64
            );
        }
    }
    if !results.notes.is_empty() {
        let _ = writeln!(
            w,
            "\nErrors the load generators reported (first error per run):\n"
        );
        for note in &results.notes {
            let _ = writeln!(w, "- {}", note.replace('\n', " "));
        }
    }
    let _ = writeln!(w);
}

/// One section's figures for [`bounds`], all per unit of work in µs (rates per second).
struct Shares {
    /// The load generator's CPU per unit, from the run through Strait (or the direct run).
    load: f64,
    /// The echo's own CPU per unit, from the direct run.
    echo: f64,
    /// The reference's server CPU (nginx's; none against direct).
    reference: f64,
    user: f64,
    kernel: f64,
    /// Strait's rate over the reference's.
    measured: f64,
}

impl Shares {
    /// Against nginx, or (a stream) against the direct run.
    fn read(results: &Results, section: &str, against: Side) -> Option<Shares> {
        let median = |prefix: &str, side: Side| {
            results
                .rows
                .iter()
                .find(|r| r.section == section && r.metric.starts_with(prefix))
                .and_then(|r| r.median(side))
        };
        let rate = |side: Side| {
            results
                .rows
                .iter()
                .find(|r| r.section == section && r.better == Better::Higher)
                .and_then(|r| r.median(side))
        };
        let server = |side: Side| {
            Some(
                median(crate::compare::SERVER_USER, side)?
                    + median(crate::compare::SERVER_KERNEL, side)?,
            )
        };
        // The load generator's CPU per unit, on the run whose load it was.
        let from = if against == Side::Direct {
            Side::Direct
        } else {
            Side::Strait
        };
        let load = median(crate::compare::LOAD_CPU, from)? / 100.0 / rate(from)? * 1e6;
        Some(Shares {
            load,
            echo: server(Side::Direct)?,
            reference: if against == Side::Direct {
                0.0
            } else {
                server(against)?
            },
            user: median(crate::compare::SERVER_USER, Side::Strait)?,
            kernel: median(crate::compare::SERVER_KERNEL, Side::Strait)?,
            measured: rate(Side::Strait)? / rate(against)?,
        })
    }

    fn shared(&self) -> f64 {
        self.load + self.echo
    }

    /// A side's rate (units per µs) if only CPU time counted, with `gateway` µs per unit in
    /// the gateway: the least, over the groups of roles sharing CPUs, of a group's CPUs over
    /// its members' CPU time per unit.
    fn rate(&self, groups: &[(usize, Vec<Role>)], gateway: f64) -> f64 {
        groups
            .iter()
            .map(|(cpus, roles)| {
                let cost: f64 = roles
                    .iter()
                    .map(|role| match role {
                        Role::Gateway => gateway,
                        Role::Backend => self.echo,
                        Role::Load => self.load,
                    })
                    .sum();
                *cpus as f64 / cost
            })
            .fold(f64::INFINITY, f64::min)
    }

    /// Strait's rate over the reference's if only CPU time counted.
    fn modelled(&self, groups: &[(usize, Vec<Role>)]) -> f64 {
        self.rate(groups, self.user + self.kernel) / self.rate(groups, self.reference)
    }

    /// The same with Strait's user-space time at zero.
    fn ceiling(&self, groups: &[(usize, Vec<Role>)]) -> f64 {
        self.rate(groups, self.kernel) / self.rate(groups, self.reference)
    }
}

/// The ratio Strait's rate in `section` over `against`'s could reach with no time in user
/// space, on this machine's CPU layout; `None` without the CPU rows the model needs.
pub fn ceiling(m: &Machine, results: &Results, section: &str, against: Side) -> Option<f64> {
    Shares::read(results, section, against).map(|shares| shares.ceiling(&m.layout.groups()))
}

/// What bounds the ratios on a host where the load generator, the echo and the gateway share
/// the CPUs: the modelled ratio, and its ceiling for a gateway that spent nothing in user space.
fn bounds(w: &mut String, m: &Machine, results: &Results) {
    let mut sections: Vec<&str> = Vec::new();
    for row in &results.rows {
        if row.metric.starts_with(crate::compare::SERVER_USER) && !sections.contains(&&*row.section)
        {
            sections.push(&row.section);
        }
    }
    let rows: Vec<(&str, Side, Shares)> = sections
        .into_iter()
        .filter_map(|section| {
            let against = if section.starts_with("WebSocket stream") {
                Side::Direct
            } else {
                Side::Nginx
            };
            Some((section, against, Shares::read(results, section, against)?))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let groups = m.layout.groups();
    let how = match groups.as_slice() {
        [(cpus, _)] => format!(
            "The load generator (L), the echo (E) and the gateway (G) share the same {cpus} CPUs, \
             so while they keep them busy a side's rate is about CPUs / (L + E + G) per unit of \
             work, and Strait's over nginx's is (L + E + G_nginx) / (L + E + G_Strait) — against \
             the direct run, whose figure has no G, (L + E) / (L + E + G_Strait)."
        ),
        _ => format!(
            "The load generator (L), the echo (E) and the gateway (G) are pinned to sets of CPUs \
             that are the same or disjoint ({}), so a side's rate is about the least, over each \
             set, of its CPU count \
             over the CPU time per unit of work of the roles on it: a gateway limited by its own \
             CPUs gives Strait's rate over nginx's as G_nginx / G_Strait.",
            m.layout.describe()
        ),
    };
    let _ = writeln!(w, "## What bounds the ratios on this host\n");
    let _ = writeln!(
        w,
        "Generated from the medians above. {how} L is the load generator's CPU row over the rate; \
         E the direct run's server rows; G a gateway's user-space plus kernel rows. A gateway's \
         kernel time is the TCP work of its system calls, the same calls for both \
         (`scripts/syscalls.sh`), so the **ceiling** — the same ratio with Strait's user-space \
         time at zero — bounds what any gateway could reach here. Where model and measurement \
         part, the servers also wait on each other, not only on CPU; for HTTP/2 the direct run's \
         echo serves HTTP/2 itself, so E is approximate. Sections without a direct run (TLS) have \
         no E and are left out.\n"
    );
    let _ = writeln!(
        w,
        "| workload | against | L + E (µs) | reference's G (µs) | Strait's G: user + kernel (µs) | \
         ratio modelled / measured | ceiling at zero user space |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---:|");
    for (section, against, shares) in rows {
        let _ = writeln!(
            w,
            "| {section} | {} | {} | {} | {} + {} | {:.2}× / {:.2}× | {:.2}× |",
            against.name(),
            num(shares.shared()),
            if against == Side::Direct {
                "—".into()
            } else {
                num(shares.reference)
            },
            num(shares.user),
            num(shares.kernel),
            shares.modelled(&groups),
            shares.measured,
            shares.ceiling(&groups),
        );
    }
    let _ = writeln!(w);
}

fn settings(w: &mut String, m: &Machine) {
    let _ = writeln!(w, "## Kernel and ulimit settings for large runs\n");
    let _ = writeln!(
        w,
        "- **Descriptors**: each proxied connection costs the gateway 2 descriptors (client + backend), the \
         client 1 and the backend 1. The harness raises its own soft `RLIMIT_NOFILE` to the hard limit \
         ({} → {}; children — echo, Strait, nginx, load generators — inherit it) and gives nginx \
         `worker_rlimit_nofile {}`. It **could not** raise the hard limit ({}: not permitted in this \
         environment), so one process holds at most ~{} descriptors: the idle run spreads its clients over \
         several processes, and a gateway tops out near {} proxied connections. For more: `ulimit -Hn` / \
         systemd `LimitNOFILE=`, and `fs.nr_open` (here {}) above the per-process figure you want.",
        m.limits.soft_before,
        m.limits.soft_after,
        m.limits.hard,
        m.limits.hard,
        num(m.limits.hard as f64),
        num((m.limits.hard / 2) as f64),
        m.nr_open
    );
    let _ = writeln!(
        w,
        "- **Ephemeral ports**: `net.ipv4.ip_local_port_range` is {} here ({} ports). A client socket bound to \
         a source address with port 0 takes one of them per source address, so the load generator spreads over \
         127.0.0.x; the gateway's own connections to a backend address:port are limited to that many per \
         source address: list several in the environment's `backend_source_addresses` (taken in turn) to \
         multiply it. Strait binds those with `IP_BIND_ADDRESS_NO_PORT` (as nginx's `proxy_bind` does), so \
         the port is picked at connect for the whole four-tuple and each backend address:port gets its own \
         range. Widen with `sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\"`. \
         `tcp_tw_reuse` is {} (2 = reuse TIME_WAIT ports for loopback only).",
        m.port_range,
        m.ephemeral_ports().map_or("?".into(), |p| num(p as f64)),
        m.tw_reuse
    );
    let _ = writeln!(
        w,
        "- **Accept queues**: `net.core.somaxconn` is {} here; Strait's listener asks for a backlog of 1024 \
         (tokio's default) and nginx is configured with `backlog=1024` to match. Raise `somaxconn` and \
         `net.ipv4.tcp_max_syn_backlog` for bursts of thousands of connects.",
        m.somaxconn
    );
    let _ = writeln!(
        w,
        "- **The harness changes no sysctl**: it only reads and reports them. It sets only its own soft \
         descriptor limit.\n"
    );
}

fn scaling(w: &mut String, m: &Machine, results: &Results, plan: &Plan) {
    let _ = writeln!(w, "## Scaling to 1,000,000 connections\n");
    let per_conn = results.find("Idle", crate::compare::MEMORY_PER_CONN);
    let kib = |side| per_conn.and_then(|r| r.median(side));
    let _ = writeln!(
        w,
        "Projected from the idle run's medians ({} connections), linearly — an estimate, not a measurement:\n",
        num(plan.idle_conns as f64)
    );
    let _ = writeln!(
        w,
        "| | KiB per connection (measured) | resident memory at 1,000,000 |"
    );
    let _ = writeln!(w, "|---|---:|---:|");
    for (side, label) in [
        (Side::Strait, "Strait"),
        (Side::Nginx, "nginx (master + workers)"),
        (Side::Direct, "echo backend (direct)"),
    ] {
        let gib = kib(side).map(|k| k * 1e6 / (1024.0 * 1024.0));
        let _ = writeln!(
            w,
            "| {label} | {} | {} |",
            kib(side).map_or("—".into(), num),
            gib.map_or("—".into(), |g| format!("{} GiB", num(g)))
        );
    }
    let ports = m.ephemeral_ports().unwrap_or(28_232);
    let hard = m.limits.hard.max(1);
    let _ = writeln!(
        w,
        "\n- Kernel memory for the sockets themselves (socket structures and buffers, several KiB per \
         socket, 4 sockets per proxied connection on one host) is not in these RSS figures and comes on top.\n\
         - **Descriptors**: the gateway needs 2,000,000 (client + backend side): `fs.nr_open` and its \
         `RLIMIT_NOFILE` above that (the default `nr_open` is 1,048,576). With this machine's hard limit of {} \
         the clients alone need {} load-generator processes.\n\
         - **Ports**: {} ephemeral ports per source address (this range) means the clients need at least {} \
         source addresses (127.0.0.x on loopback; real clients come from many addresses anyway), and the \
         gateway's 1,000,000 backend connections need at least {} backend address:port pairs — or as many \
         `backend_source_addresses` on the environment — plus a wider `ip_local_port_range`.\n\
         - **Admin API and metrics**: a `/metrics` scrape adds up every session, ~11 ns each, one of the \
         registry's 16 shards at a time (see \"Registry micro-benchmarks\"): ~11 ms of work at 1,000,000, \
         with no shard locked for more than ~0.7 ms; open descriptors come from the size of \
         `/proc/self/fd` (Linux 6.2 and later), whatever their number. `GET /connections` copies every \
         matching session's handle (~10–15 ns each, so ~15 ms at 1,000,000), then picks its page out in \
         one selection pass and sorts only that page; not measured here beyond the run above.\n",
        num(hard as f64),
        1_000_000u64.div_ceil(hard.saturating_sub(100).max(1)),
        num(ports as f64),
        1_000_000u64.div_ceil(ports),
        1_000_000u64.div_ceil(ports)
    );
}

fn appendix(w: &mut String, results: &Results) {
    let _ = writeln!(w, "## Every round\n");
    let _ = writeln!(w, "| measurement | metric | direct | nginx | Strait |");
    let _ = writeln!(w, "|---|---|---|---|---|");
    for row in &results.rows {
        let cell = |side: Side| {
            row.of(side)
                .iter()
                .map(|&v| num(v))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            row.section,
            row.metric,
            cell(Side::Direct),
            cell(Side::Nginx),
            cell(Side::Strait)
        );
    }
}

/// One row of the registry table: how many, median, p99 and maximum in ms, and `size`.
fn timing_row(w: &mut String, label: &str, micros: &[f64], size: &str) {
    let ms = |us: f64| num(us / 1000.0);
    let (p50, p99, max) = probe::summary(micros)
        .map_or(("—".into(), "—".into(), "—".into()), |(a, b, c)| {
            (ms(a), ms(b), ms(c))
        });
    let _ = writeln!(
        w,
        "| {label} | {} | {p50} | {p99} | {max} | {size} |",
        micros.len()
    );
}

/// `GET /connections` and `GET /metrics` while Strait held the idle run's sessions, every
/// round's requests pooled, with the verdict against issue 5's target.
fn registry(w: &mut String, plan: &Plan, results: &Results) {
    let probes = &results.registry;
    let held_min = probes.iter().map(|p| p.held).min();
    let held_max = probes.iter().map(|p| p.held).max();
    let held = match (held_min, held_max) {
        (Some(a), Some(b)) if a == b => num(a as f64),
        (Some(a), Some(b)) => format!("{}–{}", num(a as f64), num(b as f64)),
        _ => num(plan.idle_conns as f64),
    };
    let _ = writeln!(w, "## Connection registry at {held} sessions\n");
    if probes.is_empty() {
        let _ = writeln!(
            w,
            "Not measured in this run: the admin API probe failed or the idle run did not reach \
             it (see the errors under \"Where Strait falls short\").\n"
        );
        return;
    }
    let _ = writeln!(
        w,
        "While Strait held the idle run's sessions (after the memory reading, before the liveness \
         check), the harness sent {} requests to each of these admin API paths, one after another \
         over one keep-alive HTTP/1.1 connection, in each of {} round(s); the times below pool every \
         round and run from sending the request to the answer's last byte; p99 is the nearest rank, so \
         with fewer than 100 answers it is the slowest. The admin API runs on Strait's control runtime, \
         beside the worker threads holding the sessions, which are idle meanwhile. The last two rows \
         are {} new WebSocket sessions per round opened one after another through the gateway, timed \
         from the TCP connect to the 101 (each then echoes 64 bytes and closes): before the idle run \
         opened its sessions, and while they were held.\n",
        plan.registry_requests,
        probes.len(),
        plan.registry_requests
    );
    let _ = writeln!(
        w,
        "| request | answers | median (ms) | p99 (ms) | max (ms) | answer size |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|");
    let mut list_max: Option<f64> = None;
    let mut list_count = 0usize;
    let mut list_over = 0usize;
    let target_us = probe::TARGET.as_secs_f64() * 1e6;
    for endpoint in Endpoint::ALL {
        let timings: Vec<_> = probes.iter().filter_map(|p| p.timings(endpoint)).collect();
        let micros: Vec<f64> = timings
            .iter()
            .flat_map(|t| t.micros.iter().copied())
            .collect();
        let bytes = timings.iter().map(|t| t.bytes).max().unwrap_or(0);
        let label = match endpoint {
            Endpoint::ConnectionsDefault => format!(
                "`GET /connections` (first page, default {} per page)",
                probe::DEFAULT_PER_PAGE
            ),
            Endpoint::ConnectionsMax => format!("`GET {}` (largest page)", endpoint.path()),
            Endpoint::Metrics => "`GET /metrics`".into(),
        };
        let size = format!("{} KiB", num(bytes as f64 / 1024.0));
        timing_row(w, &label, &micros, &size);
        if endpoint.is_list() {
            list_count += micros.len();
            list_over += micros.iter().filter(|&&us| us >= target_us).count();
            if let Some((_, _, max)) = probe::summary(&micros) {
                list_max = Some(list_max.map_or(max, |m: f64| m.max(max)));
            }
        }
    }
    for (label, timings) in [
        (
            "new WebSocket session, nothing else held",
            probes
                .iter()
                .filter_map(|p| p.new_before.as_ref())
                .collect::<Vec<_>>(),
        ),
        (
            "new WebSocket session, the idle run's sessions held",
            probes.iter().filter_map(|p| p.new_held.as_ref()).collect(),
        ),
    ] {
        let micros: Vec<f64> = timings
            .iter()
            .flat_map(|t| t.micros.iter().copied())
            .collect();
        timing_row(w, label, &micros, "—");
    }
    let checked: usize = probes.iter().map(|p| p.checked).sum();
    let mismatched: usize = probes.iter().map(|p| p.mismatched).sum();
    let shares: Vec<String> = probes
        .iter()
        .filter(|p| !p.workers.is_empty())
        .map(|p| {
            let counts: Vec<String> = p.workers.iter().map(|&n| num(n as f64)).collect();
            counts.join(" / ")
        })
        .collect();
    if !shares.is_empty() {
        let _ = writeln!(
            w,
            "\nThe worker threads' shares of the connections held (`strait_worker_connections`, \
             by worker), round by round: {}.",
            shares.join("; ")
        );
    }
    if mismatched == 0 {
        let _ = writeln!(
            w,
            "\nEvery one of the {} answers counted the sessions held (`total` of each list page, the \
             sum of `strait_websocket_connections_active` in `/metrics`).",
            num(checked as f64)
        );
    } else {
        let _ = writeln!(
            w,
            "\n**Count mismatch: {} of {} answers did not count the sessions held**; the first ones:\n",
            num(mismatched as f64),
            num(checked as f64)
        );
        for probe in probes {
            for mismatch in &probe.mismatches {
                let _ = writeln!(
                    w,
                    "- with {} sessions held: {mismatch}",
                    num(probe.held as f64)
                );
            }
        }
    }
    let target_ms = probe::TARGET.as_millis();
    let slowest = list_max.map_or("—".into(), |us| num(us / 1000.0));
    let scale = held_min.unwrap_or(0);
    let verdict = if list_count == 0 {
        "not measured (no `GET /connections` answer was timed)".to_owned()
    } else if scale < 9_000 {
        format!(
            "**not tested at that scale in this run**: only {held} sessions were held (the slowest of \
             {list_count} `GET /connections` answers took {slowest} ms)"
        )
    } else if list_over == 0 && mismatched == 0 {
        format!(
            "**met** — the slowest of {list_count} `GET /connections` answers (both page sizes) took \
             {slowest} ms with {held} sessions held, the most one gateway process holds under this \
             machine's descriptor limit (2 per proxied connection)"
        )
    } else if list_over == 0 {
        format!(
            "**fast enough but not correct** — the slowest `GET /connections` took {slowest} ms, yet \
             some answers miscounted the sessions (above)"
        )
    } else {
        format!(
            "**not met** — {list_over} of {list_count} `GET /connections` answers took {target_ms} ms \
             or more (the slowest {slowest} ms) with {held} sessions held"
        )
    };
    let _ = writeln!(
        w,
        "\nVerdict against issue 5 (\"`GET /connections` answering in under {target_ms} ms\" at 10,000 \
         connections): {verdict}.\n"
    );
}

/// The hand-written criterion section, when it has any text.
fn micro(w: &mut String) {
    let text = MICRO_BENCHMARKS.trim();
    if !text.is_empty() {
        let _ = writeln!(w, "{text}\n");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(num(1234567.4), "1,234,567");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(0.5), "0.50");
        assert_eq!(num(3.0), "3");
    }

    #[test]
    fn bounds_model_each_section_against_its_reference() {
        use crate::compare::{LOAD_CPU, SERVER_KERNEL, SERVER_USER};
        let mut results = Results::default();
        let user = format!("{SERVER_USER} (µs per request)");
        let kernel = format!("{SERVER_KERNEL} (µs per request)");
        // A section's rate, server user and kernel CPU, and load-generator CPU, per side.
        let mut section = |name: &str, rate: &str, figures: [[f64; 3]; 4]| {
            let metrics = [
                (rate, Better::Higher),
                (user.as_str(), Better::Lower),
                (kernel.as_str(), Better::Lower),
                (LOAD_CPU, Better::Neither),
            ];
            for ((metric, better), values) in metrics.into_iter().zip(figures) {
                for (side, value) in Side::ALL.into_iter().zip(values) {
                    if value.is_finite() {
                        results.add(name, metric, better, side, value);
                    }
                }
            }
        };
        section(
            "HTTP keep-alive GET",
            "requests/s",
            [
                [80_000.0, 44_796.0, 42_221.0],
                [3.23, 4.87, 9.05],
                [7.58, 15.2, 13.9],
                [90.0, 60.0, 60.0],
            ],
        );
        section(
            "WebSocket stream, 1024 KiB messages",
            "echoed MB/s",
            [
                [1207.0, 263.0, 574.0],
                [138.0, 107.0, 28.7],
                [689.0, 3512.0, 982.0],
                [75.9, 33.6, 37.0],
            ],
        );
        // No direct run over TLS: no E, no row.
        let none = f64::NAN;
        section(
            "HTTPS keep-alive GET",
            "requests/s",
            [
                [none, 37_469.0, 37_592.0],
                [none, 9.18, 11.1],
                [none, 14.8, 14.4],
                [none, 60.0, 60.0],
            ],
        );

        let mut w = String::new();
        bounds(&mut w, &Machine::placeholder(), &results);
        // L = 60 % of a core / 42,221 per s = 14.2 µs, E = 10.8 µs: (25.0 + 20.1) / (25.0 +
        // 23.0) modelled, (25.0 + 20.1) / (25.0 + 13.9) at zero user space.
        let http_row = w
            .lines()
            .find(|l| l.starts_with("| HTTP keep-alive"))
            .unwrap();
        assert!(
            http_row.contains("| nginx | 25.0 | 20.1 | 9.05 + 13.9 | 0.94× / 0.94× | 1.16× |"),
            "{http_row}"
        );
        // Against direct: (629 + 827) / (1,456 + 1,011); measured 574 / 1,207.
        let stream_row = w
            .lines()
            .find(|l| l.starts_with("| WebSocket stream"))
            .unwrap();
        assert!(
            stream_row.contains("| direct | 1,456 | — | 28.7 + 982 | 0.59× / 0.48× | 0.60× |"),
            "{stream_row}"
        );
        assert!(!w.contains("| HTTPS"), "{w}");
        assert!(w.contains("same 2 CPUs"), "{w}");

        // The gateway on CPU 0, the echo and the load generator on CPU 1: HTTP is bound by
        // CPU 1 (L + E = 25.0 µs against G = 20.1 or 23.0), so both gateways model alike.
        let mut split = Machine::placeholder();
        split.layout.gateway = Some(CpuSet::parse("0", 2).unwrap());
        split.layout.backend = Some(CpuSet::parse("1", 2).unwrap());
        let mut w = String::new();
        bounds(&mut w, &split, &results);
        let http_row = w.lines().find(|l| l.starts_with("| HTTP keep-alive"));
        let http_row = http_row.unwrap();
        assert!(
            http_row.contains("| 9.05 + 13.9 | 1.00× / 0.94× | 1.00× |"),
            "{http_row}"
        );
        // The stream is bound by the gateway's CPU: 1,456 µs of L + E against 1,011 of G.
        let stream_row = w.lines().find(|l| l.starts_with("| WebSocket stream"));
        let stream_row = stream_row.unwrap();
        assert!(
            stream_row.contains("| 28.7 + 982 | 1.00× / 0.48× | 1.00× |"),
            "{stream_row}"
        );
        assert!(
            w.contains("the same or disjoint (gateway CPU 0 (1 of 2)"),
            "{w}"
        );
    }

    #[test]
    fn the_method_says_where_each_role_ran() {
        let mut m = Machine::placeholder();
        let shared = markdown(&m, &Plan::full(), &Results::default(), "plot.svg");
        assert!(
            shared.contains("load generators CPU 1 (1 of 2)"),
            "{shared}"
        );
        assert!(shared.contains("The roles share CPUs"), "{shared}");
        assert!(shared.contains(
            "nginx runs [`bench/nginx.conf.template`](bench/nginx.conf.template) (2 workers"
        ));
        m.layout = Layout::default_for(8);
        let own = markdown(&m, &Plan::full(), &Results::default(), "plot.svg");
        assert!(own.contains("gateway CPU 0-3 (4 of 8)"), "{own}");
        assert!(
            own.contains("sets of CPUs that are the same or disjoint"),
            "{own}"
        );
        assert!(own.contains("(4 workers"), "{own}");
        assert!(own.contains("`wrk -t2 -c64"), "{own}");
        m.layout = Layout::unpinned(8);
        let none = markdown(&m, &Plan::full(), &Results::default(), "plot.svg");
        assert!(none.contains("Nothing is pinned"), "{none}");
        assert!(none.contains("`wrk -t8 -c64"), "{none}");
    }

    #[test]
    fn the_method_says_whether_http_ran_at_the_same_load() {
        let m = Machine::placeholder();
        let without = markdown(&m, &Plan::full(), &Results::default(), "plot.svg");
        assert!(
            without.contains("same load**: not run: oha was not found"),
            "{without}"
        );
        assert!(without.contains("| oha | not found"), "{without}");
        let mut results = Results::default();
        let section = format!("{}: 40 % of nginx's rate", crate::compare::PACED_SECTION);
        results.add(&section, "requests/s", Better::Neither, Side::Nginx, 1.0);
        let with = markdown(&m, &Plan::full(), &results, "plot.svg");
        assert!(
            with.contains("R = 25 % and 50 % of nginx's median rate"),
            "{with}"
        );
        assert!(with.contains("after a 1 s unrecorded run"), "{with}");
    }

    #[test]
    fn the_report_names_the_options_it_ran_with() {
        let m = Machine::placeholder();
        let results = Results::default();
        let default = markdown(&m, &Plan::full(), &results, "plot.svg");
        assert!(default.contains("-- compare` on"), "{default}");
        assert!(default.contains("held 60 s;"), "{default}");

        let mut plan = Plan::full();
        plan.idle_hold = Duration::from_secs(5);
        plan.idle_conns = 500;
        plan.rounds = 5;
        let changed = markdown(&m, &plan, &results, "plot.svg");
        assert!(
            changed.contains("-- compare --rounds 5 --idle-conns 500 --idle-hold 5` on"),
            "{changed}"
        );
        assert!(changed.contains("held 5 s;"), "{changed}");

        let mut split = m;
        split.layout.gateway = Some(CpuSet::parse("0", 2).unwrap());
        let pinned = markdown(&split, &plan, &results, "plot.svg");
        assert!(
            pinned.contains("--idle-hold 5 --gateway-cpus 0 --load-cpus 1` on"),
            "{pinned}"
        );
        split.layout = Layout::unpinned(2);
        let unpinned = markdown(&split, &plan, &results, "plot.svg");
        assert!(
            unpinned.contains("--idle-hold 5 --no-pin` on"),
            "{unpinned}"
        );
    }
}
