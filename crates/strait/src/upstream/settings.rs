//! What a proxy's `backend:` says once validated: one or more targets and how to share,
//! watch and protect them. Plain data; the configuration checker builds it, the balancer
//! ([`super::balance`]) and the health state ([`super::health`]) act on it.

use std::time::Duration;

use crate::routing::BackendUrl;

/// A proxy's backend: a single URL is one target with the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSpec {
    /// The named upstream (`upstreams:` at top level) this came from; `None` when written
    /// inline under the proxy.
    pub upstream: Option<String>,
    /// At least one; URLs are distinct.
    pub targets: Vec<TargetSpec>,
    pub balance: Balance,
    /// Only with [`Balance::ConsistentHash`] (where it is required).
    pub hash_on: Option<HashOn>,
    pub health: HealthSpec,
    /// Further attempts after the first, each on another target when there is one (default 0).
    pub retries: u32,
    pub circuit_breaker: Option<BreakerSpec>,
    pub rebalance: Rebalance,
}

impl BackendSpec {
    /// One target with every default: what `backend: http://...` means.
    pub fn single(url: BackendUrl) -> Self {
        BackendSpec {
            upstream: None,
            targets: vec![TargetSpec { url, weight: 1 }],
            balance: Balance::RoundRobin,
            hash_on: None,
            health: HealthSpec::default(),
            retries: 0,
            circuit_breaker: None,
            rebalance: Rebalance::Keep,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub url: BackendUrl,
    /// 1 to 1000 (default 1).
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Weighted, smooth (as nginx's): over any window each target gets its share.
    #[default]
    RoundRobin,
    /// Fewest open WebSocket sessions plus in-flight requests, relative to weight.
    LeastConnections,
    /// The same key always lands on the same target while it is up.
    ConsistentHash,
}

/// What `consistent_hash` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// `header:NAME` (the name in lowercase).
    Header(String),
    /// `cookie:NAME`.
    Cookie(String),
    /// `query:NAME`.
    Query(String),
    /// `client_ip`.
    ClientIp,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthSpec {
    pub active: Option<ActiveCheck>,
    pub passive: Option<PassiveCheck>,
}

/// Probes each target with `GET <target path><path>`; a 2xx or 3xx within `timeout` is healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCheck {
    /// Starts with `/` (default `/`).
    pub path: String,
    /// Default 5s.
    pub interval: Duration,
    /// Default 1s.
    pub timeout: Duration,
    /// Consecutive good probes to mark a down target up (default 2).
    pub healthy_after: u32,
    /// Consecutive bad probes to mark an up target down (default 3).
    pub unhealthy_after: u32,
}

/// Marks a target down after consecutive connect failures or 5xx answers from live traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassiveCheck {
    /// Default 5.
    pub unhealthy_after: u32,
    /// Without an active check, a target marked down is tried again after this long
    /// (default 10s).
    pub cool_down: Duration,
}

/// Opens per target when too many of its recent requests failed.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSpec {
    /// 0 < ratio <= 1 (default 0.5).
    pub failure_ratio: f64,
    /// Requests in the window before the ratio counts (default 20).
    pub min_requests: u32,
    /// How long it stays open before letting one trial request through (default 30s).
    pub open_for: Duration,
}

/// What happens to WebSocket sessions on a target removed from the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rebalance {
    /// They stay open on the removed target until they end (default).
    #[default]
    Keep,
    /// They are closed with 1001 after the environment's `undeploy_grace`.
    Drain,
}
