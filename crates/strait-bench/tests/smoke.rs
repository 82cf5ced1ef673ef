//! Smoke test of the load generator: the echo backend and a gateway (with its admin API)
//! in-process, the admin probe run while sessions are held, each mode run briefly through the
//! gateway, results checked for sanity. Needs no nginx, wrk or release build, and takes a few
//! seconds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use strait::Gateway;
use strait::admin::AdminServer;
use strait::control::Control;
use strait_bench::registry::{self, Endpoint};
use strait_bench::ws_load;
use strait_bench::wsclient::Target;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_runs_through_the_gateway() {
    let echo = strait::echo::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("echo backend binds");
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let dir = tempfile::tempdir().expect("a temporary folder");
    // The TLS and logging environments as `compare` runs them: the certificate must load.
    let cert = strait_bench::stack::Certificate::write(dir.path()).expect("a certificate");
    let log = dir.path().join("access.log");
    let yaml = strait_bench::stack::strait_yaml(
        loopback,
        echo.local_addr(),
        None,
        Some((loopback, &cert)),
        Some((loopback, &log)),
    );
    let file = dir.path().join("smoke.yaml");
    std::fs::write(&file, &yaml).expect("the config is written");
    let config = strait::config::load(&file).expect("valid config");
    let gateway = Arc::new(Gateway::start(&config).await.expect("gateway starts"));
    let control = Control::declarative(&file, &yaml, gateway.clone())
        .await
        .expect("declarative control");
    let admin = AdminServer::start(loopback, Arc::new(control), None)
        .await
        .expect("the admin API starts");
    let addr = gateway
        .local_addr("bench")
        .expect("environment bench listens");
    assert!(gateway.local_addr("bench-tls").is_some(), "{yaml}");
    let target = Target::parse(&format!("ws://{addr}/smoke"), 4).expect("valid URL");

    // The admin probe as `compare` runs it on Strait's idle turn: sessions held, then checked.
    let held = ws_load::open_many(&target, 30, 500.0).await;
    assert_eq!(held.conns.len(), 30, "{:?}", held.first_error);
    let probe = registry::probe(admin.local_addr(), 30, 3)
        .await
        .expect("the admin API answers");
    assert_eq!(probe.mismatched, 0, "{:?}", probe.mismatches);
    assert_eq!(probe.checked, 9);
    for endpoint in Endpoint::ALL {
        let timings = probe.timings(endpoint).expect("every endpoint timed");
        assert_eq!(timings.micros.len(), 3, "{timings:?}");
        assert!(timings.micros.iter().all(|&us| us > 0.0), "{timings:?}");
    }
    let miscounted = registry::probe(admin.local_addr(), 31, 1)
        .await
        .expect("the admin API answers");
    assert_eq!(
        miscounted.mismatched, 3,
        "a wrong count is caught in every answer"
    );
    // New sessions opened one by one while the 30 are held (after the counts above: a
    // closed session leaves the registry a moment after its client sees the close).
    let new = registry::new_sessions(&target, 3)
        .await
        .expect("new sessions open, echo and close");
    assert_eq!(new.micros.len(), 3, "{new:?}");
    assert!(new.micros.iter().all(|&us| us > 0.0), "{new:?}");
    let (alive, error) = ws_load::check_and_close(held.conns, Duration::from_secs(10)).await;
    assert_eq!(alive, 30, "{error:?}");

    let idle = ws_load::idle(
        &target,
        50,
        500.0,
        Duration::from_millis(200),
        Some(std::process::id()),
    )
    .await;
    assert_eq!(idle.opened, 50, "{idle:?}");
    assert_eq!(idle.alive, 50, "every idle connection answers: {idle:?}");
    assert!(
        idle.rss_before_kib.is_some() && idle.rss_after_kib.is_some(),
        "{idle:?}"
    );

    let echoed = ws_load::echo(
        &target,
        10,
        64,
        Duration::from_millis(100),
        Duration::from_secs(1),
    )
    .await
    .expect("echo mode runs");
    assert_eq!(echoed.connections, 10);
    assert_eq!(echoed.errors, 0, "{echoed:?}");
    assert!(
        echoed.messages > 0 && echoed.messages_per_sec > 0.0,
        "{echoed:?}"
    );
    let p = echoed.latency;
    assert!(
        0.0 < p.p50_us && p.p50_us <= p.p99_us && p.p99_us <= p.p999_us && p.p999_us <= p.max_us,
        "{p:?}"
    );

    let streamed = ws_load::stream(
        &target,
        1,
        256 << 10,
        Duration::from_millis(100),
        Duration::from_secs(1),
    )
    .await
    .expect("stream mode runs");
    assert!(
        streamed.bytes > 0 && streamed.mb_per_sec > 0.0,
        "{streamed:?}"
    );
    assert_eq!(
        streamed.bytes % (256 << 10),
        0,
        "only whole messages are counted"
    );

    let connected = ws_load::connect(&target, 4, Duration::from_millis(500)).await;
    assert!(connected.sessions > 0, "{connected:?}");
    assert_eq!(connected.failures, 0, "{connected:?}");
    assert!(connected.handshake.p50_us <= connected.handshake.p99_us);

    // The logging environment writes a `combined` line per session to its file.
    let logged = gateway
        .local_addr("bench-logged")
        .expect("environment bench-logged listens");
    let logged = Target::parse(&format!("ws://{logged}/logged"), 4).expect("valid URL");
    let connected = ws_load::connect(&logged, 2, Duration::from_millis(200)).await;
    assert!(connected.sessions > 0, "{connected:?}");
    gateway.flush_access_logs().await;
    let text = std::fs::read_to_string(&log).expect("the access log is written");
    assert!(text.lines().count() > 0, "{yaml}");
    assert!(
        text.lines()
            .all(|line| line.contains("\"GET /logged HTTP/1.1\" 101 ")),
        "{text}"
    );

    admin.shutdown().await;
    gateway.shutdown().await;
    echo.shutdown().await;
}
