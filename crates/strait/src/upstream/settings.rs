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
    /// At least one (the type guarantees it); URLs are distinct.
    pub targets: Targets,
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
            targets: Targets::one(TargetSpec { url, weight: 1 }),
            balance: Balance::RoundRobin,
            hash_on: None,
            health: HealthSpec::default(),
            retries: 0,
            circuit_breaker: None,
            rebalance: Rebalance::Keep,
        }
    }

    /// The first target's URL: what the data plane uses until the balancer picks one.
    pub fn primary(&self) -> &BackendUrl {
        &self.targets.first().url
    }
}

/// A non-empty list of targets, in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    first: TargetSpec,
    rest: Vec<TargetSpec>,
}

impl Targets {
    pub fn one(target: TargetSpec) -> Self {
        Targets {
            first: target,
            rest: Vec::new(),
        }
    }

    /// `None` when `targets` is empty.
    pub fn from_vec(targets: Vec<TargetSpec>) -> Option<Self> {
        let mut targets = targets.into_iter();
        let first = targets.next()?;
        Some(Targets {
            first,
            rest: targets.collect(),
        })
    }

    pub fn first(&self) -> &TargetSpec {
        &self.first
    }

    pub fn len(&self) -> usize {
        1 + self.rest.len()
    }

    /// Always false: there is at least one target.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn get(&self, index: usize) -> Option<&TargetSpec> {
        match index.checked_sub(1) {
            None => Some(&self.first),
            Some(i) => self.rest.get(i),
        }
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &TargetSpec> + Clone {
        std::iter::once(&self.first).chain(&self.rest)
    }

    pub fn to_vec(&self) -> Vec<TargetSpec> {
        self.iter().cloned().collect()
    }
}

impl<'a> IntoIterator for &'a Targets {
    type Item = &'a TargetSpec;
    type IntoIter =
        std::iter::Chain<std::iter::Once<&'a TargetSpec>, std::slice::Iter<'a, TargetSpec>>;

    fn into_iter(self) -> Self::IntoIter {
        std::iter::once(&self.first).chain(&self.rest)
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

impl Default for ActiveCheck {
    fn default() -> Self {
        ActiveCheck {
            path: "/".to_owned(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy_after: 2,
            unhealthy_after: 3,
        }
    }
}

impl Default for PassiveCheck {
    fn default() -> Self {
        PassiveCheck {
            unhealthy_after: 5,
            cool_down: Duration::from_secs(10),
        }
    }
}

impl Default for BreakerSpec {
    fn default() -> Self {
        BreakerSpec {
            failure_ratio: 0.5,
            min_requests: 20,
            open_for: Duration::from_secs(30),
        }
    }
}
