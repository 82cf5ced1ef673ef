//! A proxy's backend targets as the data plane sees them now: health, breaker, open
//! sessions and in-flight requests, open HTTP connections, and the totals since the target
//! appeared. Read-only; works in both modes.

use http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::openapi::BalanceMode;
use super::routes::{Reply, json};
use crate::control::Control;
use crate::upstream::breaker::BreakerState;
use crate::upstream::health::HealthState;
use crate::upstream::pool::Pool;
use crate::upstream::settings::Balance;

/// A proxy's backend targets, in the configured order.
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetList {
    #[schema(example = "users")]
    pub proxy: String,
    /// The named upstream the backend comes from (`null`: written under the proxy). Its
    /// targets' state is shared by every proxy using it.
    #[schema(example = "users-pool")]
    pub upstream: Option<String>,
    #[schema(value_type = BalanceMode, example = "round_robin")]
    pub balance: &'static str,
    pub targets: Vec<TargetStatus>,
}

/// One target now.
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetStatus {
    #[schema(example = "http://10.0.0.1:8080/service")]
    pub url: String,
    pub weight: u32,
    pub health: TargetHealth,
    /// `null` when the backend has no circuit breaker.
    pub breaker: Option<BreakerStatus>,
    /// Open WebSocket sessions plus in-flight requests.
    pub active: u64,
    /// Requests and sessions sent to it.
    pub requests: u64,
    /// Of those, the ones that failed (no connection, timeout or 5xx).
    pub failures: u64,
    /// HTTP connections open to it, idle or carrying a request (a WebSocket session's is in
    /// `active`).
    pub http_connections: u64,
    /// HTTP connections opened to it.
    pub http_connects: u64,
}

/// Whether the target takes traffic (by its health checks; always `up` without them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetHealth {
    Up,
    Down,
}

/// What the circuit breaker does with requests to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerStatus {
    /// Requests pass.
    Closed,
    /// Requests are refused until `open_for` has passed.
    Open,
    /// One trial request decides whether it closes again.
    HalfOpen,
}

fn balance_name(balance: Balance) -> &'static str {
    match balance {
        Balance::RoundRobin => "round_robin",
        Balance::LeastConnections => "least_connections",
        Balance::ConsistentHash => "consistent_hash",
    }
}

fn target_list(proxy: &str, pool: &Pool) -> TargetList {
    let has_breaker = pool.breaker_spec().is_some();
    let targets = pool
        .targets()
        .iter()
        .map(|target| {
            let stats = target.stats();
            let (open, opened) = target.http_connections();
            TargetStatus {
                url: stats.url,
                weight: stats.weight,
                health: match stats.health {
                    HealthState::Up => TargetHealth::Up,
                    HealthState::Down => TargetHealth::Down,
                },
                breaker: has_breaker.then_some(match stats.breaker {
                    BreakerState::Closed => BreakerStatus::Closed,
                    BreakerState::Open => BreakerStatus::Open,
                    BreakerState::HalfOpen => BreakerStatus::HalfOpen,
                }),
                active: u64::try_from(stats.active).unwrap_or(u64::MAX),
                requests: stats.requests,
                failures: stats.failures,
                http_connections: open,
                http_connects: opened,
            }
        })
        .collect();
    TargetList {
        proxy: proxy.to_owned(),
        upstream: pool.upstream().map(str::to_owned),
        balance: balance_name(pool.balance()),
        targets,
    }
}

/// A proxy's backend targets
///
/// Each target's health, circuit breaker, open WebSocket sessions plus in-flight requests,
/// its request and failure totals and its HTTP connections (open, opened), in the
/// configured order. Answers for every proxy of
/// the configuration, deployed or not.
#[utoipa::path(
    get,
    path = "/proxies/{name}/targets",
    tag = "proxies",
    params(("name" = String, Path, description = "Proxy name (percent-encoded)")),
    responses(
        (status = 200, description = "Its targets now", body = TargetList),
        (status = 404, description = "`not_found`: no such proxy", body = ErrorBody),
    ),
)]
pub fn list(control: &Control, proxy: &str) -> Reply {
    let pool = control.targets(proxy)?;
    json(StatusCode::OK, &target_list(proxy, &pool))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::upstream::pool::PoolCache;
    use crate::upstream::pool::tests::spec;
    use crate::upstream::settings::BreakerSpec;

    #[test]
    fn targets_are_listed_in_order_with_their_state() {
        let mut cache = PoolCache::default();
        let mut backend = spec(
            &[("http://a:1", 2), ("http://b:2", 1)],
            Balance::LeastConnections,
        );
        backend.upstream = Some("pool".into());
        backend.circuit_breaker = Some(BreakerSpec::default());
        let pool = cache.pool("upstream:pool", &backend);
        let _lease = pool.select(None, &[1]).unwrap();
        let _open = pool.targets()[0].http_connection();
        let answer = serde_json::to_value(target_list("users", &pool)).unwrap();
        assert_eq!(
            answer,
            json!({
                "proxy": "users",
                "upstream": "pool",
                "balance": "least_connections",
                "targets": [
                    {"url": "http://a:1", "weight": 2, "health": "up", "breaker": "closed",
                     "active": 1, "requests": 1, "failures": 0,
                     "http_connections": 1, "http_connects": 1},
                    {"url": "http://b:2", "weight": 1, "health": "up", "breaker": "closed",
                     "active": 0, "requests": 0, "failures": 0,
                     "http_connections": 0, "http_connects": 0},
                ],
            })
        );
        let plain = cache.pool("proxy:p", &spec(&[("http://c:3", 1)], Balance::RoundRobin));
        let answer = serde_json::to_value(target_list("p", &plain)).unwrap();
        assert_eq!(answer["upstream"], json!(null));
        assert_eq!(answer["balance"], "round_robin");
        assert_eq!(answer["targets"][0]["breaker"], json!(null));
    }
}
