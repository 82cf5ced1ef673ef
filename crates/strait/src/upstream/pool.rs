//! Target pools: per-target runtime state, the leases that count traffic on it, and the
//! cache that carries that state across configuration reloads.
//!
//! Owns [`TargetState`] (atomics only), [`Lease`], [`Pool`] (one per backend of one proxy:
//! targets, balancer, rules) and [`PoolCache`]. Selection logic lives in [`super::balance`],
//! the state machines in [`super::health`] and [`super::breaker`]. No I/O, no locks on the
//! request path; it may not touch configuration parsing, routing or the proxy.
//!
//! Time: each target stores instants as ticks, nanoseconds since its own creation
//! (`tokio::time::Instant`, so `tokio::time::pause` drives it in tests).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use http::StatusCode;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::balance::Balancer;
use super::breaker::{Breaker, BreakerState, Pass};
use super::health::{Cause, Health, HealthState, log_transition};
use super::settings::{
    BackendSpec, Balance, BreakerSpec, HashOn, HealthSpec, Rebalance, TargetSpec,
};
use crate::routing::BackendUrl;
use crate::telemetry::tally::Tally;

/// One target's live state, shared by every pool generation that lists it.
#[derive(Debug)]
pub struct TargetState {
    url: BackendUrl,
    weight: AtomicU32,
    epoch: Instant,
    /// In-flight HTTP requests plus open WebSocket sessions, and leases taken in all: added
    /// to per request, in the worker thread's own slots.
    active: Tally,
    health: Health,
    breaker: Breaker,
    requests: Tally,
    failures: AtomicU64,
    /// HTTP connections open to it (idle or carrying a request), and opened in all.
    http_connections: AtomicUsize,
    http_connects: AtomicU64,
    /// Cancelled when a reload removes the target (for `rebalance: drain`).
    retired: CancellationToken,
}

/// A point-in-time view of a target, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetStats {
    pub url: String,
    pub weight: u32,
    pub active: usize,
    pub health: HealthState,
    pub breaker: BreakerState,
    pub consecutive_failures: u32,
    /// Leases taken (requests and sessions started).
    pub requests: u64,
    /// Leases reported as a failure.
    pub failures: u64,
}

impl TargetState {
    pub fn new(url: BackendUrl, weight: u32) -> Self {
        TargetState {
            url,
            weight: AtomicU32::new(weight),
            epoch: Instant::now(),
            active: Tally::default(),
            health: Health::default(),
            breaker: Breaker::default(),
            requests: Tally::default(),
            failures: AtomicU64::new(0),
            http_connections: AtomicUsize::new(0),
            http_connects: AtomicU64::new(0),
            retired: CancellationToken::new(),
        }
    }

    pub fn url(&self) -> &BackendUrl {
        &self.url
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// In-flight HTTP requests plus open WebSocket sessions.
    pub fn active(&self) -> usize {
        usize::try_from(self.active.get_signed()).unwrap_or(0)
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Counts an HTTP connection to this target as open until the guard is dropped.
    pub fn http_connection(self: &Arc<Self>) -> OpenConnection {
        self.http_connections.fetch_add(1, Ordering::Relaxed);
        self.http_connects.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }

    /// HTTP connections open to it now, and opened in all.
    pub fn http_connections(&self) -> (u64, u64) {
        let open = self.http_connections.load(Ordering::Relaxed);
        (
            u64::try_from(open).unwrap_or(u64::MAX),
            self.http_connects.load(Ordering::Relaxed),
        )
    }

    /// Cancelled once a reload no longer lists this target; a WebSocket relay under
    /// `rebalance: drain` waits on it, then closes with 1001 after the grace.
    pub fn retired(&self) -> &CancellationToken {
        &self.retired
    }

    pub fn stats(&self) -> TargetStats {
        TargetStats {
            url: self.url.as_str().to_owned(),
            weight: self.weight(),
            active: self.active(),
            health: self.health.state(),
            breaker: self.breaker.state(),
            consecutive_failures: self.health.consecutive_failures(),
            requests: self.requests.get(),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// `now` as this target's ticks (never 0, so 0 means "never").
    pub(crate) fn ticks(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(since)
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// Whether selection may pick it now (health and breaker; no state change).
    fn admits(&self, rules: &Rules, now: &Now) -> bool {
        if self.health.is_up() && rules.breaker.is_none() {
            return true;
        }
        let ticks = now.ticks(self);
        self.health.admits(&rules.health, ticks)
            && rules
                .breaker
                .as_ref()
                .is_none_or(|spec| self.breaker.admits(spec, ticks))
    }
}

/// An HTTP connection to a target, counted as open until dropped.
#[derive(Debug)]
pub struct OpenConnection(Arc<TargetState>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.http_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a request on a target ended, as the passive check and the breaker see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Any answer below 500 (or a WebSocket session that was accepted).
    Success,
    /// No connection (refused, reset, TLS failure, connect timeout).
    ConnectFailed,
    /// The backend answered 5xx.
    ServerError(StatusCode),
    /// The backend did not answer in time.
    Timeout,
}

impl Outcome {
    /// 5xx → `ServerError`, anything else → `Success`.
    pub fn from_status(status: StatusCode) -> Self {
        if status.is_server_error() {
            Outcome::ServerError(status)
        } else {
            Outcome::Success
        }
    }

    pub fn is_failure(self) -> bool {
        self != Outcome::Success
    }
}

/// What a pool's targets are judged by; shared by the pool and its leases.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub health: HealthSpec,
    pub breaker: Option<BreakerSpec>,
}

/// The time of one selection or report, read from the clock only if a rule needs it: a
/// target that is up, without a breaker, needs none (two clock reads per request fewer).
#[derive(Default)]
struct Now(std::cell::OnceCell<Instant>);

impl Now {
    fn at(now: Instant) -> Self {
        Now(std::cell::OnceCell::from(now))
    }

    fn ticks(&self, target: &TargetState) -> u64 {
        target.ticks(*self.0.get_or_init(Instant::now))
    }
}

/// A request's or session's hold on a target: counted in `active` until dropped.
#[derive(Debug)]
pub struct Lease {
    target: Arc<TargetState>,
    rules: Arc<Rules>,
    index: usize,
    health: Pass,
    breaker: Pass,
    reported: bool,
}

impl Lease {
    pub fn target(&self) -> &Arc<TargetState> {
        &self.target
    }

    pub fn url(&self) -> &BackendUrl {
        &self.target.url
    }

    /// The target's position in its pool; pass it in `exclude` when retrying.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Feeds the outcome to the passive check and the breaker. Only the first report counts;
    /// keep the lease until the response body ends (or the session closes).
    pub fn report(&mut self, outcome: Outcome) {
        self.report_when(outcome, &Now::default());
    }

    pub fn report_at(&mut self, outcome: Outcome, now: Instant) {
        self.report_when(outcome, &Now::at(now));
    }

    fn report_when(&mut self, outcome: Outcome, now: &Now) {
        if self.reported {
            return;
        }
        self.reported = true;
        let failed = outcome.is_failure();
        let target = &self.target;
        if failed {
            target.failures.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(passive) = &self.rules.health.passive {
            if let Some(state) =
                target
                    .health
                    .on_request(failed, self.health, passive, now.ticks(target))
            {
                log_transition(&target.url, state, Cause::Traffic);
            }
        } else if self.health == Pass::Trial {
            target.health.release_trial();
        }
        match &self.rules.breaker {
            Some(spec) => {
                let ticks = now.ticks(target);
                if let Some(state) = target.breaker.record(spec, self.breaker, failed, ticks) {
                    tracing::info!(target_url = target.url.as_str(), ?state, "circuit breaker");
                }
            }
            None if self.breaker == Pass::Trial => target.breaker.release_trial(),
            None => {}
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.target.active.sub(1);
        if !self.reported {
            if self.health == Pass::Trial {
                self.target.health.release_trial();
            }
            if self.breaker == Pass::Trial {
                self.target.breaker.release_trial();
            }
        }
    }
}

/// Why no target could be leased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoTarget {
    /// Every target is down or its breaker is open: answer 503 at once.
    #[error("every target of this backend is down")]
    AllDown,
    /// Targets are up but all were excluded (already tried): stop retrying.
    #[error("every available target of this backend was already tried")]
    AllTried,
}

/// One backend of one proxy: its targets, how to choose among them, and the rules they are
/// judged by.
#[derive(Debug)]
pub struct Pool {
    key: String,
    /// The named upstream the backend came from (`None`: written under the proxy).
    upstream: Option<String>,
    targets: Vec<Arc<TargetState>>,
    balance: Balance,
    balancer: Balancer,
    rules: Arc<Rules>,
    hash_on: Option<HashOn>,
    retries: u32,
    rebalance: Rebalance,
    probe_rounds: watch::Sender<u64>,
}

impl Pool {
    fn new(key: &str, spec: &BackendSpec, targets: Vec<Arc<TargetState>>) -> Self {
        let weights: Vec<u32> = spec.targets.iter().map(|t| t.weight).collect();
        let urls: Vec<&str> = spec.targets.iter().map(|t| t.url.as_str()).collect();
        Pool {
            key: key.to_owned(),
            upstream: spec.upstream.clone(),
            balance: spec.balance,
            balancer: Balancer::new(spec.balance, &weights, &urls),
            targets,
            rules: Arc::new(Rules {
                health: spec.health.clone(),
                breaker: spec.circuit_breaker.clone(),
            }),
            hash_on: match spec.balance {
                Balance::ConsistentHash => spec.hash_on.clone(),
                _ => None,
            },
            retries: spec.retries,
            rebalance: spec.rebalance,
            probe_rounds: watch::Sender::new(0),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn targets(&self) -> &[Arc<TargetState>] {
        &self.targets
    }

    /// The named upstream the backend came from (`None`: written under the proxy).
    pub fn upstream(&self) -> Option<&str> {
        self.upstream.as_deref()
    }

    pub fn balance(&self) -> Balance {
        self.balance
    }

    /// The circuit breaker's settings (`None`: no breaker).
    pub fn breaker_spec(&self) -> Option<&BreakerSpec> {
        self.rules.breaker.as_ref()
    }

    /// What the data plane hashes for `consistent_hash` (see [`super::balance::hash_key`]).
    pub fn hash_on(&self) -> Option<&HashOn> {
        self.hash_on.as_ref()
    }

    pub fn retries(&self) -> u32 {
        self.retries
    }

    pub fn rebalance(&self) -> Rebalance {
        self.rebalance
    }

    pub fn health_spec(&self) -> &HealthSpec {
        &self.rules.health
    }

    /// Bumped after each active-check round (for tests and the admin API).
    pub fn probe_rounds(&self) -> watch::Receiver<u64> {
        self.probe_rounds.subscribe()
    }

    pub(crate) fn probe_round_done(&self) {
        self.probe_rounds.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Chooses a target and leases it. `key` is the request's hash key (ignored unless
    /// `consistent_hash`); `exclude` holds indices already tried ([`Lease::index`]).
    pub fn select(&self, key: Option<&[u8]>, exclude: &[usize]) -> Result<Lease, NoTarget> {
        self.select_when(key, exclude, &Now::default())
    }

    pub fn select_at(
        &self,
        key: Option<&[u8]>,
        exclude: &[usize],
        now: Instant,
    ) -> Result<Lease, NoTarget> {
        self.select_when(key, exclude, &Now::at(now))
    }

    fn select_when(
        &self,
        key: Option<&[u8]>,
        exclude: &[usize],
        now: &Now,
    ) -> Result<Lease, NoTarget> {
        // Targets whose trial another request won between the check and the lease.
        let mut lost = Lost::default();
        for _ in 0..=self.targets.len() {
            let eligible = |i: usize| {
                !exclude.contains(&i)
                    && !lost.contains(i)
                    && self
                        .targets
                        .get(i)
                        .is_some_and(|t| t.admits(&self.rules, now))
            };
            let Some(index) = self.balancer.pick(&self.targets, key, eligible) else {
                break;
            };
            match self.lease(index, now) {
                Some(lease) => return Ok(lease),
                None => lost.insert(index),
            }
        }
        let any_up = self
            .targets
            .iter()
            .enumerate()
            .any(|(i, t)| !lost.contains(i) && t.admits(&self.rules, now));
        Err(if any_up {
            NoTarget::AllTried
        } else {
            NoTarget::AllDown
        })
    }

    /// Takes the health and breaker passes (trials by compare-and-swap) and counts the lease.
    fn lease(&self, index: usize, now: &Now) -> Option<Lease> {
        let target = self.targets.get(index)?;
        // Up: a normal pass, without reading the clock for it.
        let health = if target.health.is_up() {
            Pass::Normal
        } else {
            target
                .health
                .acquire(&self.rules.health, now.ticks(target))?
        };
        let breaker = match &self.rules.breaker {
            None => Pass::Normal,
            Some(spec) => match target.breaker.acquire(spec, now.ticks(target)) {
                Some(pass) => pass,
                None => {
                    if health == Pass::Trial {
                        target.health.release_trial();
                    }
                    return None;
                }
            },
        };
        target.active.add(1);
        target.requests.add(1);
        Some(Lease {
            target: Arc::clone(target),
            rules: Arc::clone(&self.rules),
            index,
            health,
            breaker,
            reported: false,
        })
    }
}

/// A small set of target indices, allocation-free up to 128.
#[derive(Default)]
struct Lost {
    bits: u128,
    more: Vec<usize>,
}

impl Lost {
    fn contains(&self, i: usize) -> bool {
        match u32::try_from(i) {
            Ok(bit) if bit < 128 => self.bits & (1u128 << bit) != 0,
            _ => self.more.contains(&i),
        }
    }

    fn insert(&mut self, i: usize) {
        match u32::try_from(i) {
            Ok(bit) if bit < 128 => self.bits |= 1u128 << bit,
            _ => self.more.push(i),
        }
    }
}

/// Hands out [`Pool`]s whose targets keep their state across reloads.
///
/// At compile time call [`PoolCache::pool`] for each backend, then [`PoolCache::commit`] once
/// the whole configuration compiled (or [`PoolCache::rollback`] when it failed). A target is
/// the same when its pool key and URL text are the same; state for targets that the committed
/// configuration no longer lists is dropped from the cache (and retired), while leases still
/// on them keep it alive and counted. The key is the caller's choice: a proxy's name keeps
/// its state per proxy; a named upstream's name would share it between proxies using it.
#[derive(Debug, Default)]
pub struct PoolCache {
    live: HashMap<(String, String), Arc<TargetState>>,
    next: HashMap<(String, String), Arc<TargetState>>,
}

impl PoolCache {
    /// A pool for `spec`, reusing the state of targets the live configuration already has.
    pub fn pool(&mut self, key: &str, spec: &BackendSpec) -> Arc<Pool> {
        let targets = spec
            .targets
            .iter()
            .map(|target| self.target(key, target))
            .collect();
        Arc::new(Pool::new(key, spec, targets))
    }

    fn target(&mut self, key: &str, spec: &TargetSpec) -> Arc<TargetState> {
        let id = (key.to_owned(), spec.url.as_str().to_owned());
        let state = match self.next.get(&id).or_else(|| self.live.get(&id)) {
            Some(found) => {
                found.weight.store(spec.weight, Ordering::Relaxed);
                Arc::clone(found)
            }
            None => Arc::new(TargetState::new(spec.url.clone(), spec.weight)),
        };
        self.next.insert(id, Arc::clone(&state));
        state
    }

    /// Makes the pools built since the last commit the live ones; returns the targets no
    /// longer listed, already retired.
    pub fn commit(&mut self) -> Vec<Arc<TargetState>> {
        let previous = std::mem::replace(&mut self.live, std::mem::take(&mut self.next));
        previous
            .into_iter()
            .filter(|(id, _)| !self.live.contains_key(id))
            .map(|(_, state)| {
                state.retired.cancel();
                state
            })
            .collect()
    }

    /// Forgets the pools built since the last commit (the configuration did not apply).
    pub fn rollback(&mut self) {
        self.next.clear();
    }

    /// Targets in the live configuration.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::upstream::settings::{ActiveCheck, PassiveCheck, Targets};

    pub(crate) fn url(s: &str) -> BackendUrl {
        BackendUrl::parse(s).unwrap()
    }

    pub(crate) fn spec(targets: &[(&str, u32)], balance: Balance) -> BackendSpec {
        let mut spec = BackendSpec::single(url(targets.first().unwrap().0));
        spec.targets = Targets::from_vec(
            targets
                .iter()
                .map(|&(u, weight)| TargetSpec {
                    url: url(u),
                    weight,
                })
                .collect(),
        )
        .unwrap();
        spec.balance = balance;
        spec
    }

    pub(crate) fn active_check() -> ActiveCheck {
        ActiveCheck {
            path: "/".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy_after: 1,
            unhealthy_after: 1,
        }
    }

    /// Marks a target down through its active check.
    pub(crate) fn force_down(target: &TargetState) {
        let now = target.ticks(Instant::now());
        target.health.on_probe(false, &active_check(), now);
    }

    #[test]
    fn lease_counts_active_and_totals() {
        let mut cache = PoolCache::default();
        let pool = cache.pool("p", &spec(&[("http://a", 1)], Balance::RoundRobin));
        let a = Arc::clone(pool.targets().first().unwrap());
        let l1 = pool.select(None, &[]).unwrap();
        let mut l2 = pool.select(None, &[]).unwrap();
        assert_eq!(a.active(), 2);
        l2.report(Outcome::from_status(StatusCode::BAD_GATEWAY));
        l2.report(Outcome::Success); // ignored: first report counts
        drop(l2);
        assert_eq!(a.active(), 1);
        drop(l1);
        let stats = a.stats();
        assert_eq!((stats.active, stats.requests, stats.failures), (0, 2, 1));
    }

    #[test]
    fn passive_failures_take_a_target_out_of_selection() {
        let mut cache = PoolCache::default();
        let mut s = spec(&[("http://a", 1), ("http://b", 1)], Balance::RoundRobin);
        s.health.passive = Some(PassiveCheck {
            unhealthy_after: 2,
            cool_down: Duration::from_secs(10),
        });
        let pool = cache.pool("p", &s);
        let t0 = Instant::now();
        for _ in 0..4 {
            let mut lease = pool.select_at(None, &[], t0).unwrap();
            let outcome = if lease.url().as_str() == "http://a" {
                Outcome::ConnectFailed
            } else {
                Outcome::Success
            };
            lease.report_at(outcome, t0);
        }
        let a = pool.targets().first().unwrap();
        assert_eq!(a.health().state(), HealthState::Down);
        for _ in 0..5 {
            assert_eq!(
                pool.select_at(None, &[], t0).unwrap().url().as_str(),
                "http://b"
            );
        }
        // After the cool-down `a` gets one trial; while it is in flight, only `b`.
        let later = t0 + Duration::from_secs(11);
        let mut seen_a = Vec::new();
        let mut leases = Vec::new();
        for _ in 0..4 {
            let lease = pool.select_at(None, &[], later).unwrap();
            seen_a.push(lease.index() == 0);
            leases.push(lease);
        }
        assert_eq!(seen_a.iter().filter(|&&x| x).count(), 1);
        let trial = leases.iter_mut().find(|l| l.index() == 0).unwrap();
        trial.report_at(Outcome::Success, later);
        assert_eq!(a.health().state(), HealthState::Up);
    }

    #[test]
    fn all_down_and_all_tried() {
        let mut cache = PoolCache::default();
        let mut s = spec(&[("http://a", 1), ("http://b", 1)], Balance::RoundRobin);
        s.health.active = Some(active_check());
        let pool = cache.pool("p", &s);
        assert_eq!(pool.select(None, &[0, 1]).unwrap_err(), NoTarget::AllTried);
        let first = pool.select(None, &[0]).unwrap();
        assert_eq!(first.index(), 1);
        for t in pool.targets() {
            force_down(t);
        }
        assert_eq!(pool.select(None, &[]).unwrap_err(), NoTarget::AllDown);
        assert_eq!(pool.select(None, &[0]).unwrap_err(), NoTarget::AllDown);
    }

    #[test]
    fn all_down_passive_only_allows_a_trial_after_cool_down() {
        let mut cache = PoolCache::default();
        let mut s = spec(
            &[("http://a", 1), ("http://b", 1)],
            Balance::LeastConnections,
        );
        s.health.passive = Some(PassiveCheck {
            unhealthy_after: 1,
            cool_down: Duration::from_secs(10),
        });
        let pool = cache.pool("p", &s);
        let t0 = Instant::now();
        for _ in 0..2 {
            let mut lease = pool.select_at(None, &[], t0).unwrap();
            lease.report_at(Outcome::Timeout, t0);
        }
        assert_eq!(
            pool.select_at(None, &[], t0).unwrap_err(),
            NoTarget::AllDown
        );
        let later = t0 + Duration::from_secs(10);
        let l1 = pool.select_at(None, &[], later).unwrap();
        let l2 = pool.select_at(None, &[], later).unwrap();
        assert_ne!(l1.index(), l2.index());
        // Both trials in flight: nothing else.
        assert_eq!(
            pool.select_at(None, &[], later).unwrap_err(),
            NoTarget::AllDown
        );
        drop(l1); // cancelled, unreported: its trial is free again
        assert!(pool.select_at(None, &[], later).is_ok());
    }

    #[test]
    fn breaker_opens_and_trials_through_the_pool() {
        let mut cache = PoolCache::default();
        let mut s = spec(&[("http://a", 1)], Balance::RoundRobin);
        s.circuit_breaker = Some(BreakerSpec {
            failure_ratio: 0.5,
            min_requests: 2,
            open_for: Duration::from_secs(30),
        });
        let pool = cache.pool("p", &s);
        let t0 = Instant::now();
        for _ in 0..2 {
            let mut lease = pool.select_at(None, &[], t0).unwrap();
            lease.report_at(Outcome::ServerError(StatusCode::BAD_GATEWAY), t0);
        }
        assert_eq!(
            pool.select_at(None, &[], t0).unwrap_err(),
            NoTarget::AllDown
        );
        let later = t0 + Duration::from_secs(30);
        let mut trial = pool.select_at(None, &[], later).unwrap();
        assert_eq!(
            pool.select_at(None, &[], later).unwrap_err(),
            NoTarget::AllDown
        );
        trial.report_at(Outcome::Success, later);
        assert_eq!(
            pool.targets().first().unwrap().breaker().state(),
            BreakerState::Closed
        );
        assert!(pool.select_at(None, &[], later).is_ok());
    }

    #[test]
    fn cache_carries_state_across_a_reload_and_drops_removed_targets() {
        let mut cache = PoolCache::default();
        let mut v1 = spec(&[("http://a", 1), ("http://b", 1)], Balance::RoundRobin);
        v1.health.active = Some(active_check());
        let p1 = cache.pool("proxy", &v1);
        assert!(cache.commit().is_empty());
        let a1 = Arc::clone(p1.targets().first().unwrap());
        let b1 = Arc::clone(p1.targets().get(1).unwrap());
        force_down(&a1);
        let session_on_b = p1.select(None, &[]).unwrap();
        assert_eq!(session_on_b.url().as_str(), "http://b");

        // Reload: `a` stays (new weight), `b` goes, `c` arrives.
        let mut v2 = spec(&[("http://a", 3), ("http://c", 1)], Balance::RoundRobin);
        v2.health.active = Some(active_check());
        let p2 = cache.pool("proxy", &v2);
        // A failed compile in between would roll back without touching the live state.
        let retired = cache.commit();
        assert_eq!(retired.len(), 1);
        assert!(Arc::ptr_eq(retired.first().unwrap(), &b1));
        assert!(b1.retired().is_cancelled());
        drop(retired);

        let a2 = p2.targets().first().unwrap();
        assert!(Arc::ptr_eq(&a1, a2));
        assert_eq!(a2.weight(), 3);
        assert_eq!(a2.health().state(), HealthState::Down);
        assert!(!a2.retired().is_cancelled());
        assert_eq!(cache.len(), 2);

        // The session on the removed target stays counted there.
        assert_eq!(b1.active(), 1);
        drop(session_on_b);
        assert_eq!(b1.active(), 0);

        // Another reload listing `b` again starts it fresh.
        let p3 = cache.pool("proxy", &v1);
        cache.commit();
        assert!(!Arc::ptr_eq(p3.targets().get(1).unwrap(), &b1));
        // A different pool key never shares state.
        let other = cache.pool("other", &v1);
        assert!(!Arc::ptr_eq(other.targets().first().unwrap(), &a1));
    }

    #[test]
    fn rollback_keeps_the_live_generation() {
        let mut cache = PoolCache::default();
        let v1 = spec(&[("http://a", 1)], Balance::RoundRobin);
        let p1 = cache.pool("p", &v1);
        cache.commit();
        let _ = cache.pool("p", &spec(&[("http://z", 1)], Balance::RoundRobin));
        cache.rollback();
        let p2 = cache.pool("p", &v1);
        assert!(cache.commit().is_empty());
        assert!(Arc::ptr_eq(
            p1.targets().first().unwrap(),
            p2.targets().first().unwrap()
        ));
    }
}
