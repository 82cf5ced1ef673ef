//! Target health: the up/down state machine fed by active probes and live traffic, and the
//! active checker task that probes a pool's targets.
//!
//! Owns [`Health`] (atomics; time passed in as ticks, see [`super::pool::TargetState`]) and
//! [`run_active_checks`], the only place here that does I/O. It may not touch balancing,
//! the breaker, or the connections requests use: each probe opens its own connection through
//! [`Upstream::connect`] (fresh TCP, TLS with ALPN http/1.1, the connect timeout) and a
//! one-shot HTTP/1.1 handshake, so a probe checks that a new connection can be made and
//! never reuses or spoils a keep-alive connection carrying traffic.
//!
//! Rules:
//! - A target starts up.
//! - Active: `healthy_after` consecutive good probes bring a down target up, `unhealthy_after`
//!   consecutive bad probes take an up target down.
//! - Passive: `unhealthy_after` consecutive failed requests take an up target down. Going down
//!   (for either reason) resets the good-probe count, so with an active check the target comes
//!   back after `healthy_after` good probes. Without one it gets a single trial request once
//!   `cool_down` has passed: success brings it up, failure keeps it down for another `cool_down`.
//! - With neither check configured (after a reload removed them) the state is ignored.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::breaker::{Pass, nanos};
use super::pool::{Pool, TargetState};
use super::settings::{ActiveCheck, HealthSpec, PassiveCheck};
use super::{Upstream, UpstreamError};
use crate::routing::BackendUrl;

/// Whether a target takes traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    Up,
    Down,
}

/// One target's health counters.
#[derive(Debug)]
pub struct Health {
    up: AtomicBool,
    /// Ticks when it last went down (or when its last trial failed).
    down_since: AtomicU64,
    /// A cool-down trial request is in flight.
    trial: AtomicBool,
    good_probes: AtomicU32,
    bad_probes: AtomicU32,
    failures: AtomicU32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            up: AtomicBool::new(true),
            down_since: AtomicU64::new(0),
            trial: AtomicBool::new(false),
            good_probes: AtomicU32::new(0),
            bad_probes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
        }
    }
}

impl Health {
    pub fn state(&self) -> HealthState {
        if self.up.load(Ordering::Acquire) {
            HealthState::Up
        } else {
            HealthState::Down
        }
    }

    /// Consecutive failed requests counted by the passive check.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Up: admits every request, whatever the time.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Whether a request could go to the target now (no state change).
    pub fn admits(&self, spec: &HealthSpec, now: u64) -> bool {
        if self.up.load(Ordering::Acquire) {
            return true;
        }
        match (&spec.active, &spec.passive) {
            (Some(_), _) => false,
            (None, None) => true,
            (None, Some(passive)) => {
                !self.trial.load(Ordering::Acquire) && self.cooled_down(passive, now)
            }
        }
    }

    /// Admits a request: `Normal` when up, `Trial` for the one request after a cool-down
    /// (only the caller that wins the compare-and-swap), else `None`.
    pub fn acquire(&self, spec: &HealthSpec, now: u64) -> Option<Pass> {
        if self.up.load(Ordering::Acquire) {
            return Some(Pass::Normal);
        }
        match (&spec.active, &spec.passive) {
            (Some(_), _) => None,
            (None, None) => Some(Pass::Normal),
            (None, Some(passive)) if self.cooled_down(passive, now) => self
                .trial
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .ok()
                .map(|_| Pass::Trial),
            (None, Some(_)) => None,
        }
    }

    /// A trial that ended without an outcome: the next request may try instead.
    pub fn release_trial(&self) {
        self.trial.store(false, Ordering::Release);
    }

    /// An active probe result; returns the new state when it changed.
    pub fn on_probe(&self, good: bool, check: &ActiveCheck, now: u64) -> Option<HealthState> {
        if good {
            self.bad_probes.store(0, Ordering::Relaxed);
            let streak = self
                .good_probes
                .fetch_add(1, Ordering::AcqRel)
                .saturating_add(1);
            (streak >= check.healthy_after && self.mark_up()).then_some(HealthState::Up)
        } else {
            self.good_probes.store(0, Ordering::Relaxed);
            let streak = self
                .bad_probes
                .fetch_add(1, Ordering::AcqRel)
                .saturating_add(1);
            (streak >= check.unhealthy_after && self.mark_down(now)).then_some(HealthState::Down)
        }
    }

    /// A finished request seen by the passive check; returns the new state when it changed.
    pub fn on_request(
        &self,
        failed: bool,
        pass: Pass,
        passive: &PassiveCheck,
        now: u64,
    ) -> Option<HealthState> {
        if pass == Pass::Trial {
            let changed = if failed {
                // Still down: restart the cool-down.
                self.down_since.store(now, Ordering::Release);
                None
            } else {
                self.mark_up().then_some(HealthState::Up)
            };
            self.release_trial();
            return changed;
        }
        if !failed {
            self.failures.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        (streak >= passive.unhealthy_after && self.mark_down(now)).then_some(HealthState::Down)
    }

    /// Up → down; true when this call made the change.
    fn mark_down(&self, now: u64) -> bool {
        if !self.up.load(Ordering::Acquire) {
            return false;
        }
        self.down_since.store(now, Ordering::Release);
        self.good_probes.store(0, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        self.trial.store(false, Ordering::Release);
        self.up
            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Down → up; true when this call made the change.
    fn mark_up(&self) -> bool {
        let changed = self
            .up
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if changed {
            self.failures.store(0, Ordering::Relaxed);
            self.bad_probes.store(0, Ordering::Relaxed);
        }
        changed
    }

    fn cooled_down(&self, passive: &PassiveCheck, now: u64) -> bool {
        now.saturating_sub(self.down_since.load(Ordering::Acquire)) >= nanos(passive.cool_down)
    }
}

/// What made a target change state (for the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    ActiveCheck,
    Traffic,
}

/// Logs a health transition: info for both directions.
pub fn log_transition(url: &BackendUrl, state: HealthState, cause: Cause) {
    match state {
        HealthState::Down => {
            tracing::info!(
                target_url = url.as_str(),
                ?cause,
                "backend target marked down"
            )
        }
        HealthState::Up => {
            tracing::info!(
                target_url = url.as_str(),
                ?cause,
                "backend target marked up"
            )
        }
    }
}

/// Why a probe counted as bad.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Connect(#[from] UpstreamError),
    #[error("the health check request could not be built: {0}")]
    Request(#[from] http::Error),
    #[error("the health check exchange failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("no health check answer within {0:?}")]
    Timeout(Duration),
    #[error("the health check answered {0}")]
    Status(StatusCode),
}

/// Probes every target of `pool` each `check.interval` until `cancel` fires. Each round probes
/// all targets concurrently, then applies the results and bumps [`Pool::probe_rounds`].
pub async fn run_active_checks(
    pool: Arc<Pool>,
    check: ActiveCheck,
    upstream: Upstream,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(check.interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let probes = pool
            .targets()
            .iter()
            .map(|target| probe(&upstream, target.url(), &check));
        let results = tokio::select! {
            _ = cancel.cancelled() => return,
            results = futures_util::future::join_all(probes) => results,
        };
        let now = Instant::now();
        for (target, result) in pool.targets().iter().zip(results) {
            apply_probe(target, &check, result, now);
        }
        pool.probe_round_done();
    }
}

fn apply_probe(
    target: &TargetState,
    check: &ActiveCheck,
    result: Result<StatusCode, ProbeError>,
    now: Instant,
) {
    if let Err(error) = &result {
        tracing::debug!(target_url = target.url().as_str(), %error, "health check failed");
    }
    let ticks = target.ticks(now);
    if let Some(state) = target.health().on_probe(result.is_ok(), check, ticks) {
        log_transition(target.url(), state, Cause::ActiveCheck);
    }
}

/// One probe: `GET <target path><check.path>` on a fresh connection; 2xx or 3xx is good.
async fn probe(
    upstream: &Upstream,
    url: &BackendUrl,
    check: &ActiveCheck,
) -> Result<StatusCode, ProbeError> {
    match tokio::time::timeout(check.timeout, exchange(upstream, url, check)).await {
        Err(_) => Err(ProbeError::Timeout(check.timeout)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(status)) if status.is_success() || status.is_redirection() => Ok(status),
        Ok(Ok(status)) => Err(ProbeError::Status(status)),
    }
}

async fn exchange(
    upstream: &Upstream,
    url: &BackendUrl,
    check: &ActiveCheck,
) -> Result<StatusCode, ProbeError> {
    let request = Request::get(probe_path(url.path(), &check.path))
        .header(header::HOST, url.authority())
        .header(header::USER_AGENT, "strait-health-check")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())?;
    let io = TokioIo::new(upstream.connect(url).await?);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    // The connection task ends with the exchange; aborted on the way out either way.
    let driver = AbortOnDrop(tokio::spawn(conn));
    let response = sender.send_request(request).await;
    drop(driver);
    Ok(response?.status())
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `/api` + `/health` → `/api/health`; `/api/` + `/health` → `/api/health`; `` + `/` → `/`.
fn probe_path(base: &str, path: &str) -> String {
    let base = base.strip_suffix('/').unwrap_or(base);
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    format!("{base}{path}")
}

/// A running active checker; dropping it stops the checker.
#[derive(Debug)]
pub struct ActiveChecks {
    _stop: DropGuard,
}

/// Why the active checker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartChecksError {
    #[error("active health checks need a Tokio runtime")]
    NoRuntime,
}

/// Starts the active checker of `pool` when its backend has one (`Ok(None)` otherwise).
/// Keep the handle with the applied configuration and drop it when that configuration is
/// replaced, so old and new pools do not both probe the same targets.
pub fn start_active_checks(
    pool: &Arc<Pool>,
    upstream: Upstream,
) -> Result<Option<ActiveChecks>, StartChecksError> {
    let Some(check) = pool.health_spec().active.clone() else {
        return Ok(None);
    };
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartChecksError::NoRuntime)?;
    let cancel = CancellationToken::new();
    runtime.spawn(run_active_checks(
        Arc::clone(pool),
        check,
        upstream,
        cancel.clone(),
    ));
    Ok(Some(ActiveChecks {
        _stop: cancel.drop_guard(),
    }))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::AtomicU16;

    use http::Response;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;
    use crate::upstream::pool::PoolCache;
    use crate::upstream::settings::{BackendSpec, TargetSpec, Targets};

    const S: u64 = 1_000_000_000;

    fn active(healthy_after: u32, unhealthy_after: u32) -> ActiveCheck {
        ActiveCheck {
            path: "/health".into(),
            interval: Duration::from_millis(10),
            timeout: Duration::from_secs(2),
            healthy_after,
            unhealthy_after,
        }
    }

    fn passive(unhealthy_after: u32) -> PassiveCheck {
        PassiveCheck {
            unhealthy_after,
            cool_down: Duration::from_secs(10),
        }
    }

    #[test]
    fn active_down_then_up() {
        let h = Health::default();
        let c = active(2, 3);
        assert_eq!(h.on_probe(false, &c, S), None);
        assert_eq!(h.on_probe(false, &c, S), None);
        assert_eq!(h.on_probe(false, &c, S), Some(HealthState::Down));
        assert_eq!(h.on_probe(false, &c, S), None);
        assert_eq!(h.state(), HealthState::Down);
        let spec = HealthSpec {
            active: Some(c.clone()),
            passive: None,
        };
        assert!(!h.admits(&spec, 1000 * S));
        assert_eq!(h.on_probe(true, &c, S), None);
        assert_eq!(h.on_probe(false, &c, S), None);
        assert_eq!(h.on_probe(true, &c, S), None);
        assert_eq!(h.on_probe(true, &c, S), Some(HealthState::Up));
        assert!(h.admits(&spec, S));
    }

    #[test]
    fn passive_down_then_active_brings_it_back() {
        let h = Health::default();
        let c = active(2, 3);
        let p = passive(3);
        // Good probes before the failures do not count afterwards.
        h.on_probe(true, &c, S);
        h.on_probe(true, &c, S);
        assert_eq!(h.on_request(true, Pass::Normal, &p, S), None);
        assert_eq!(h.on_request(false, Pass::Normal, &p, S), None);
        assert_eq!(h.on_request(true, Pass::Normal, &p, S), None);
        assert_eq!(h.on_request(true, Pass::Normal, &p, S), None);
        assert_eq!(
            h.on_request(true, Pass::Normal, &p, S),
            Some(HealthState::Down)
        );
        let spec = HealthSpec {
            active: Some(c.clone()),
            passive: Some(p),
        };
        // No cool-down trial when an active check exists.
        assert_eq!(h.acquire(&spec, 1000 * S), None);
        assert_eq!(h.on_probe(true, &c, 2 * S), None);
        assert_eq!(h.on_probe(true, &c, 3 * S), Some(HealthState::Up));
        assert_eq!(h.acquire(&spec, 3 * S), Some(Pass::Normal));
    }

    #[test]
    fn passive_cool_down_gives_one_trial() {
        let h = Health::default();
        let p = passive(2);
        let spec = HealthSpec {
            active: None,
            passive: Some(p.clone()),
        };
        h.on_request(true, Pass::Normal, &p, S);
        assert_eq!(
            h.on_request(true, Pass::Normal, &p, S),
            Some(HealthState::Down)
        );
        assert!(!h.admits(&spec, 10 * S));
        assert_eq!(h.acquire(&spec, 10 * S), None);
        // After cool_down: exactly one trial.
        assert!(h.admits(&spec, 11 * S));
        assert_eq!(h.acquire(&spec, 11 * S), Some(Pass::Trial));
        assert!(!h.admits(&spec, 11 * S));
        assert_eq!(h.acquire(&spec, 11 * S), None);
        // It fails: down for another cool_down.
        assert_eq!(h.on_request(true, Pass::Trial, &p, 12 * S), None);
        assert_eq!(h.state(), HealthState::Down);
        assert_eq!(h.acquire(&spec, 21 * S), None);
        assert_eq!(h.acquire(&spec, 22 * S), Some(Pass::Trial));
        // It succeeds: up.
        assert_eq!(
            h.on_request(false, Pass::Trial, &p, 22 * S),
            Some(HealthState::Up)
        );
        assert_eq!(h.acquire(&spec, 22 * S), Some(Pass::Normal));
        assert_eq!(h.consecutive_failures(), 0);
    }

    #[test]
    fn released_trial_lets_another_try() {
        let h = Health::default();
        let p = passive(1);
        let spec = HealthSpec {
            active: None,
            passive: Some(p.clone()),
        };
        h.on_request(true, Pass::Normal, &p, S);
        assert_eq!(h.acquire(&spec, 20 * S), Some(Pass::Trial));
        h.release_trial();
        assert_eq!(h.acquire(&spec, 20 * S), Some(Pass::Trial));
    }

    #[test]
    fn probe_paths() {
        assert_eq!(probe_path("", "/"), "/");
        assert_eq!(probe_path("", "/health"), "/health");
        assert_eq!(probe_path("/api", "/health"), "/api/health");
        assert_eq!(probe_path("/api/", "/health"), "/api/health");
        assert_eq!(probe_path("/", "/"), "/");
    }

    /// Answers every request with the status currently in `status`, and records the path.
    async fn tiny_server(status: Arc<AtomicU16>) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let status = Arc::clone(&status);
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let code = if req.uri().path() == "/base/health" {
                            status.load(Ordering::SeqCst)
                        } else {
                            404
                        };
                        async move {
                            let mut res = Response::new(Full::new(Bytes::new()));
                            *res.status_mut() = StatusCode::from_u16(code).unwrap();
                            Ok::<_, Infallible>(res)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        addr
    }

    /// Waits (event-driven, bounded) until the checker has finished a round after which
    /// `done` holds.
    async fn until(pool: &Pool, done: impl Fn() -> bool) {
        let mut rounds = pool.probe_rounds();
        let wait = async {
            while !done() {
                rounds.changed().await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("the checker should reach the state");
    }

    #[tokio::test]
    async fn active_checker_marks_down_then_up() {
        let status = Arc::new(AtomicU16::new(200));
        let addr = tiny_server(Arc::clone(&status)).await;
        let url = BackendUrl::parse(&format!("http://{addr}/base/")).unwrap();
        let mut spec = BackendSpec::single(url);
        spec.health.active = Some(active(2, 2));
        let mut cache = PoolCache::default();
        let pool = cache.pool("p", &spec);
        cache.commit();
        let resolver = crate::upstream::Resolver::new(None).unwrap();
        let upstream = Upstream::new(None, Duration::from_secs(1), &[], resolver).unwrap();
        let checks = start_active_checks(&pool, upstream).unwrap().unwrap();
        let target = Arc::clone(pool.targets().first().unwrap());

        until(&pool, || {
            target.health().good_probes.load(Ordering::SeqCst) >= 1
        })
        .await;
        assert_eq!(target.health().state(), HealthState::Up);

        status.store(500, Ordering::SeqCst);
        until(&pool, || target.health().state() == HealthState::Down).await;
        assert!(pool.select(None, &[]).is_err());

        status.store(200, Ordering::SeqCst);
        until(&pool, || target.health().state() == HealthState::Up).await;
        assert!(pool.select(None, &[]).is_ok());

        // Dropping the handle stops the checker: no round completes any more.
        drop(checks);
        let mut rounds = pool.probe_rounds();
        rounds.mark_unchanged();
        let more = tokio::time::timeout(Duration::from_millis(200), rounds.changed()).await;
        // Either no change, or one round that was already finishing when it was cancelled.
        if more.is_ok() {
            let again = tokio::time::timeout(Duration::from_millis(200), rounds.changed()).await;
            assert!(again.is_err(), "the checker should have stopped");
        }
    }

    #[tokio::test]
    async fn unreachable_target_counts_as_bad() {
        // Bind then drop: nothing listens on the port.
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let url = BackendUrl::parse(&format!("http://{addr}")).unwrap();
        let mut spec = BackendSpec::single(url.clone());
        spec.targets = Targets::from_vec(vec![
            TargetSpec { url, weight: 1 },
            TargetSpec {
                url: BackendUrl::parse("http://127.0.0.1:9").unwrap(),
                weight: 1,
            },
        ])
        .unwrap();
        spec.health.active = Some(active(1, 1));
        let mut cache = PoolCache::default();
        let pool = cache.pool("p", &spec);
        let resolver = crate::upstream::Resolver::new(None).unwrap();
        let upstream = Upstream::new(None, Duration::from_secs(1), &[], resolver).unwrap();
        let _checks = start_active_checks(&pool, upstream).unwrap().unwrap();
        let first = Arc::clone(pool.targets().first().unwrap());
        until(&pool, || first.health().state() == HealthState::Down).await;
    }
}
