//! What the connection registry costs, where the public API reaches it:
//! - `metrics_encode/fake_pairs/N`: `Metrics::encode` (the body of `GET /metrics`) with a
//!   session source reporting N (environment, proxy) pairs, so the per-pair series cost;
//! - `live_sessions/*/N`: a gateway in this process holding N real WebSocket sessions (client →
//!   gateway → echo, all idle): `Metrics::encode`, whose session source walks every open
//!   session, one registry shard's lock at a time; `GatewayHandle::sessions`, the snapshot
//!   `GET /connections` starts from (it then picks one page out, sorts and serialises it);
//!   and the two ways to count open descriptors: the size of `/proc/self/fd`
//!   (`proc_fd_size`, what `encode` reads on Linux 6.2 and later) and its entries
//!   (`proc_fd_count`, the fallback) (this process holds 4 descriptors per session, a
//!   gateway alone 2);
//! - `registry/*/N`: registering and dropping one session record, and the per-(environment,
//!   proxy) totals the metrics read, with N other sessions registered.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use strait::telemetry::{Metrics, SessionSource, SessionTotals};
use strait_bench::ws_load;
use strait_bench::wsclient::Target;

#[derive(Debug)]
struct Fake(Vec<SessionTotals>);

impl SessionSource for Fake {
    fn totals(&self) -> Vec<SessionTotals> {
        self.0.clone()
    }
}

fn fake_pairs(n: usize) -> Vec<SessionTotals> {
    (0..n)
        .map(|i| {
            let i64 = i as u64;
            SessionTotals {
                environment: format!("env{}", i % 4),
                proxy: format!("proxy-{i}"),
                active: i64 % 100,
                messages: [i64 * 10, i64 * 11],
                bytes: [i64 * 1000, i64 * 1100],
                dropped: [0, 0],
            }
        })
        .collect()
}

fn encode_fake(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics_encode");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for pairs in [100usize, 10_000] {
        let metrics = Metrics::new(Arc::new(Fake(fake_pairs(pairs))));
        let len = metrics.encode().map(|t| t.len()).unwrap_or(0);
        eprintln!("metrics_encode/fake_pairs/{pairs}: {len} bytes of text");
        group.bench_function(BenchmarkId::new("fake_pairs", pairs), |b| {
            b.iter(|| black_box(metrics.encode().map(|t| t.len())))
        });
    }
    group.finish();
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn live_sessions(c: &mut Criterion) {
    let limits = strait_bench::procs::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // Encode as the admin API does: inside the runtime (it reports the runtime's workers).
    let _inside = runtime.enter();
    let (echo, gateway, target) = runtime.block_on(async {
        let echo = strait::echo::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("echo backend binds");
        let yaml = strait_bench::stack::strait_yaml(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            echo.local_addr(),
            None,
            None,
            None,
        );
        let config =
            strait::config::parse_str(&yaml, Path::new("bench.yaml")).expect("valid config");
        let gateway = strait::Gateway::start(&config)
            .await
            .expect("gateway starts");
        let addr = gateway.local_addr("bench").expect("bench listens");
        let target = Target::parse(&format!("ws://{addr}/bench"), 8).expect("valid URL");
        (echo, gateway, target)
    });
    let mut group = c.benchmark_group("live_sessions");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut held = Vec::new();
    // Four descriptors per session in this process: stay well under the limit.
    let most = (limits.soft_after.saturating_sub(200) / 4) as usize;
    for sessions in [0usize, 1_000, 4_000] {
        if sessions > most {
            eprintln!("live_sessions/{sessions}: skipped, the descriptor limit allows {most}");
            continue;
        }
        let more = sessions - held.len();
        if more > 0 {
            let opened = runtime.block_on(ws_load::open_many(&target, more, 5_000.0));
            assert_eq!(
                opened.conns.len(),
                more,
                "sessions open: {:?}",
                opened.first_error
            );
            held.extend(opened.conns);
        }
        assert_eq!(
            gateway.sessions().len(),
            sessions,
            "the registry lists them"
        );
        eprintln!(
            "live_sessions/{sessions}: {} descriptors open in this process",
            open_fds()
        );
        group.bench_function(BenchmarkId::new("metrics_encode", sessions), |b| {
            b.iter(|| black_box(gateway.metrics().encode().map(|t| t.len())))
        });
        group.bench_function(BenchmarkId::new("sessions_snapshot", sessions), |b| {
            b.iter(|| black_box(gateway.sessions().len()))
        });
        group.bench_function(BenchmarkId::new("proc_fd_count", sessions), |b| {
            b.iter(|| black_box(open_fds()))
        });
        group.bench_function(BenchmarkId::new("proc_fd_size", sessions), |b| {
            b.iter(|| black_box(std::fs::metadata("/proc/self/fd").map(|d| d.len())))
        });
    }
    group.finish();
    drop(held);
    runtime.block_on(async {
        gateway.shutdown().await;
        echo.shutdown().await;
    });
}

/// One session's registration and removal (what each WebSocket session pays at its start
/// and end), and the totals a scrape reads, beside `live` other sessions.
fn register_drop(c: &mut Criterion) {
    use strait::proxy::{Registry, SessionInfo};
    let info = SessionInfo {
        env: "bench".into(),
        proxy: "echo".into(),
        client: SocketAddr::from(([127, 0, 0, 1], 40000)),
        origin: None,
        subprotocol: None,
        consumer: None,
        target: "ws://127.0.0.1:9000/bench".into(),
    };
    let mut group = c.benchmark_group("registry");
    for live in [0usize, 10_000] {
        let registry = Arc::new(Registry::default());
        let held: Vec<_> = (0..live).map(|_| registry.register(info.clone())).collect();
        group.bench_function(BenchmarkId::new("register_drop", live), |b| {
            b.iter(|| drop(black_box(registry.register(info.clone()))))
        });
        group.bench_function(BenchmarkId::new("totals", live), |b| {
            b.iter(|| black_box(registry.totals().len()))
        });
        drop(held);
    }
    group.finish();
}

criterion_group!(benches, encode_fake, live_sessions, register_drop);
criterion_main!(benches);
