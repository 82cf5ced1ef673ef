//! `rate_limit`: at most `requests` requests per `per` window for each consumer (the client
//! IP when none was authenticated), each client IP, or the whole proxy. A WebSocket handshake
//! is a request like any other. Beyond the limit: 429 with `Retry-After`; every answer —
//! admitted or refused — carries `RateLimit-Limit`, `RateLimit-Remaining` and
//! `RateLimit-Reset` (seconds), the IETF draft's names, as Kong sends them.
//!
//! The limiter is governor's keyed GCRA (the team's choice) rather than a fixed-window
//! counter: a full quota allows a burst of `requests`, and one request comes back every
//! `per / requests` — `requests` per `per` on average, with no reset at a window's edge that
//! would let twice the quota through in a moment. governor gives the remaining quota
//! (`StateInformationMiddleware`) and the wait before the next admission (`NotUntil`)
//! directly, so the headers need no counter of our own: `Retry-After` is that wait, and
//! `RateLimit-Reset` is when the quota is whole again, `(requests - remaining) × per /
//! requests` (governor keeps the exact instant private; this is at most one step later),
//! both rounded up to a second.
//!
//! State: the counts live in the compiled policy, in governor's `DashMap` store (sharded: no
//! lock shared by every request). A configuration change compiles the policies anew, which
//! starts every count afresh. A policy on an environment is one limiter for every proxy
//! deployed there (`by: proxy` then means the whole environment). Keys whose quota is whole
//! again are evicted (`retain_recent`) whenever the store has doubled since the last
//! eviction (looked at every [`TIDY_EVERY`] requests, from [`TIDY_FLOOR`] keys on), so the
//! store stays within about twice the keys active in one window.
//!
//! The client IP is the connection's peer address (IPv4-mapped IPv6 addresses as IPv4).

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use super::{Field, Fields, Head, Kind, Phase, Policy, Reported, Shape, Verdict};
use crate::error::{ErrorKind, GatewayError};

pub const KIND: Kind = Kind {
    name: "rate_limit",
    phase: Phase::Limits,
    doc: "At most `requests` requests (WebSocket handshakes included) per `per` for each consumer, client IP or the whole proxy (429 with Retry-After and RateLimit-* headers).",
    fields: &[
        Field {
            name: "requests",
            shape: Shape::Number,
            doc: "How many requests each key may make per window (required, 1 to 1000000000).",
        },
        Field {
            name: "per",
            shape: Shape::Duration,
            doc: "The window, such as 1s, 1m or 1h (required, 1s to 366d).",
        },
        Field {
            name: "by",
            shape: Shape::Text,
            doc: "What is counted: consumer (the default; the client IP when none was authenticated), ip or proxy.",
        },
    ],
    parse,
};

pub(super) const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub(super) const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub(super) const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

const MAX_REQUESTS: u64 = 1_000_000_000;
const MIN_PER: Duration = Duration::from_secs(1);
const MAX_PER: Duration = Duration::from_secs(366 * 86_400);
/// Requests between two looks at the store's size.
const TIDY_EVERY: u32 = 256;
/// Below this many keys the store is left alone.
const TIDY_FLOOR: usize = 4096;

/// What a limit counts per.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum By {
    /// The authenticated consumer; the client IP without one.
    Consumer,
    Ip,
    Proxy,
}

/// Whom a request counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Key {
    Consumer(Arc<str>),
    Ip(IpAddr),
    Proxy,
}

impl By {
    /// Reads the `by` field (default `consumer`).
    pub(super) fn parse(fields: &mut dyn Fields) -> Result<By, Reported> {
        match fields.text("by")?.as_deref() {
            None | Some("consumer") => Ok(By::Consumer),
            Some("ip") => Ok(By::Ip),
            Some("proxy") => Ok(By::Proxy),
            Some(other) => Err(fields.problem(
                "by",
                format!("by is {other:?}; it must be consumer, ip or proxy"),
            )),
        }
    }

    pub(super) fn key(self, head: &Head<'_>) -> Key {
        let ip = || Key::Ip(head.client.ip().to_canonical());
        match self {
            By::Consumer => head
                .consumer
                .as_ref()
                .map_or_else(ip, |c| Key::Consumer(c.name.clone())),
            By::Ip => ip(),
            By::Proxy => Key::Proxy,
        }
    }

    /// For messages: "consumer \"alice\"", "client 10.0.0.1", "this API proxy".
    pub(super) fn describe(key: &Key) -> String {
        match key {
            Key::Consumer(name) => format!("consumer \"{name}\""),
            Key::Ip(ip) => format!("client {ip}"),
            Key::Proxy => "this API proxy".to_owned(),
        }
    }
}

type Limiter =
    RateLimiter<Key, DefaultKeyedStateStore<Key>, DefaultClock, StateInformationMiddleware>;

struct RateLimit {
    requests: NonZeroU32,
    per: Duration,
    by: By,
    limiter: Limiter,
    /// Requests seen, for [`TIDY_EVERY`].
    seen: AtomicU32,
    /// Keys kept by the last eviction.
    kept: AtomicUsize,
}

/// The settings only: configurations are compared by their policies' `Debug` text.
impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("requests", &self.requests)
            .field("per", &self.per)
            .field("by", &self.by)
            .finish_non_exhaustive()
    }
}

fn parse(fields: &mut dyn Fields) -> Result<Arc<dyn Policy>, Reported> {
    let requests = fields.number("requests");
    let per = fields.duration("per");
    let by = By::parse(fields);
    let requests = match requests? {
        None => {
            return Err(fields.problem(
                "requests",
                "needs requests, how many requests per window (for example requests: 100)"
                    .to_owned(),
            ));
        }
        Some(n) => u32::try_from(n)
            .ok()
            .and_then(NonZeroU32::new)
            .filter(|n| u64::from(n.get()) <= MAX_REQUESTS)
            .ok_or_else(|| {
                fields.problem(
                    "requests",
                    format!("requests is {n}; it must be between 1 and {MAX_REQUESTS}"),
                )
            })?,
    };
    let per = match per? {
        None => {
            return Err(fields.problem(
                "per",
                "needs per, the window (for example per: 1m)".to_owned(),
            ));
        }
        Some(per) if !(MIN_PER..=MAX_PER).contains(&per) => {
            return Err(fields.problem(
                "per",
                format!("per is {per:?}; the window must be between 1s and 366d"),
            ));
        }
        Some(per) => per,
    };
    let by = by?;
    let quota = Quota::with_period(per / requests.get())
        .ok_or_else(|| fields.problem("per", "the window is too short".to_owned()))?
        .allow_burst(requests);
    Ok(Arc::new(RateLimit {
        requests,
        per,
        by,
        limiter: RateLimiter::dashmap(quota).with_middleware::<StateInformationMiddleware>(),
        seen: AtomicU32::new(0),
        kept: AtomicUsize::new(0),
    }))
}

impl RateLimit {
    /// Evicts keys whose quota is whole again once the store has doubled (see the module).
    fn tidy(&self) {
        if !self
            .seen
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(TIDY_EVERY)
        {
            return;
        }
        let len = self.limiter.len();
        let kept = self.kept.load(Ordering::Relaxed);
        if len >= TIDY_FLOOR && len / 2 >= kept {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            self.kept.store(self.limiter.len(), Ordering::Relaxed);
        }
    }

    /// Whole seconds, rounded up.
    fn seconds(duration: Duration) -> u64 {
        duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
    }

    /// The `RateLimit-*` headers.
    fn headers(&self, remaining: u32, reset: Duration) -> [(HeaderName, HeaderValue); 3] {
        [
            (RATELIMIT_LIMIT, HeaderValue::from(self.requests.get())),
            (RATELIMIT_REMAINING, HeaderValue::from(remaining)),
            (RATELIMIT_RESET, HeaderValue::from(Self::seconds(reset))),
        ]
    }

    /// The time until the quota is whole again, with `remaining` left.
    fn until_whole(&self, remaining: u32) -> Duration {
        let used = self.requests.get().saturating_sub(remaining);
        (self.per / self.requests.get()).saturating_mul(used)
    }
}

/// Sets the `RateLimit-*` headers unless an earlier limit left fewer requests remaining:
/// with several limits, the client sees the tightest.
fn set_tightest(map: &mut HeaderMap, headers: [(HeaderName, HeaderValue); 3]) {
    let remaining = |map: &HeaderMap| {
        map.get(RATELIMIT_REMAINING)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    };
    let theirs = remaining(map);
    let [_, (_, ours), _] = &headers;
    let ours = ours.to_str().ok().and_then(|v| v.parse::<u64>().ok());
    if let (Some(theirs), Some(ours)) = (theirs, ours)
        && theirs <= ours
    {
        return;
    }
    for (name, value) in headers {
        map.insert(name, value);
    }
}

impl Policy for RateLimit {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn apply(&self, head: &mut Head<'_>) -> Verdict {
        self.tidy();
        let key = self.by.key(head);
        match self.limiter.check_key(&key) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let headers = self.headers(remaining, self.until_whole(remaining));
                set_tightest(&mut head.effects.response_headers, headers);
                Verdict::Pass
            }
            Err(refused) => {
                let wait = refused.wait_time_from(self.limiter.clock().now());
                // At least a second: a client told 0 would retry at once.
                let retry_after = Self::seconds(wait).max(1);
                let whole = self.until_whole(0).max(wait);
                let error = GatewayError::new(
                    ErrorKind::TooManyRequests,
                    format!(
                        "{} made more than {} requests in {}; retry in {retry_after}s",
                        By::describe(&key),
                        self.requests,
                        crate::config::format_duration(self.per),
                    ),
                )
                .with_header(RETRY_AFTER, HeaderValue::from(retry_after));
                Verdict::Refuse(
                    self.headers(0, whole)
                        .into_iter()
                        .fold(error, |error, (name, value)| error.with_header(name, value)),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Chain;
    use super::super::tests::{Given, directory, policy};
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_checked() {
        for (values, needle) in [
            (vec![("per", json!("1m"))], "requests"),
            (vec![("requests", json!(10))], "per"),
            (
                vec![("requests", json!(0)), ("per", json!("1m"))],
                "requests",
            ),
            (
                vec![("requests", json!(5_000_000_000_u64)), ("per", json!("1m"))],
                "requests",
            ),
            (
                vec![("requests", json!("ten")), ("per", json!("1m"))],
                "requests",
            ),
            (vec![("requests", json!(10)), ("per", json!("0s"))], "per"),
            (
                vec![("requests", json!(10)), ("per", json!("500ms"))],
                "per",
            ),
            (vec![("requests", json!(10)), ("per", json!("400d"))], "per"),
            (
                vec![("requests", json!(10)), ("per", json!("1 minute"))],
                "per",
            ),
            (
                vec![
                    ("requests", json!(10)),
                    ("per", json!("1m")),
                    ("by", json!("user")),
                ],
                "by",
            ),
        ] {
            let mut given = Given::new(&values);
            assert!((KIND.parse)(&mut given).is_err(), "{values:?}");
            assert!(
                given.problems.iter().any(|p| p.starts_with(needle)),
                "{values:?}: {:?}",
                given.problems
            );
        }
    }

    async fn admit(
        chain: &Chain,
        key: Option<&str>,
        client: &str,
    ) -> Result<HeaderMap, GatewayError> {
        let mut headers = HeaderMap::new();
        if let Some(key) = key {
            headers.insert("x-api-key", HeaderValue::from_str(key).unwrap());
        }
        let mut target = "http://b/".parse().unwrap();
        chain
            .admit(&mut headers, &mut target, client.parse().unwrap(), false)
            .await
            .map(|admission| admission.effects.response_headers)
    }

    fn number(headers: &HeaderMap, name: &str) -> u64 {
        headers[name].to_str().unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn the_quota_counts_down_then_refuses_with_consistent_headers() {
        let limit = policy(
            "rate_limit",
            &[("requests", json!(3)), ("per", json!("1m"))],
        );
        let chain = Chain::new([&limit], directory());
        for remaining in [2, 1, 0] {
            let headers = admit(&chain, None, "10.0.0.1:1").await.unwrap();
            assert_eq!(number(&headers, "ratelimit-limit"), 3);
            assert_eq!(number(&headers, "ratelimit-remaining"), remaining);
            assert_eq!(number(&headers, "ratelimit-reset"), (3 - remaining) * 20);
        }
        let refused = admit(&chain, None, "10.0.0.1:2").await.unwrap_err();
        assert_eq!(refused.kind, ErrorKind::TooManyRequests);
        let response = refused.to_response();
        let headers = response.headers();
        assert_eq!(number(headers, "ratelimit-remaining"), 0);
        let retry = number(headers, "retry-after");
        assert!((19..=20).contains(&retry), "{retry}");
        let reset = number(headers, "ratelimit-reset");
        assert!((59..=60).contains(&reset), "{reset}");
        assert!(refused.message.contains("client 10.0.0.1"), "{refused}");
        assert!(
            admit(&chain, None, "10.0.0.2:1").await.is_ok(),
            "another IP has its own quota"
        );
        assert!(
            admit(&chain, None, "[::ffff:10.0.0.1]:3").await.is_err(),
            "an IPv4-mapped address is the same client"
        );
    }

    #[tokio::test]
    async fn consumers_have_their_own_quota_and_proxy_shares_one() {
        let key = policy("api_key", &[]);
        let per_consumer = policy(
            "rate_limit",
            &[("requests", json!(1)), ("per", json!("1h"))],
        );
        let chain = Chain::new([&key, &per_consumer], directory());
        assert!(admit(&chain, Some("alice-key"), "10.0.0.1:1").await.is_ok());
        let refused = admit(&chain, Some("alice-key"), "10.0.0.9:1")
            .await
            .unwrap_err();
        assert!(refused.message.contains("consumer \"alice\""), "{refused}");
        assert!(admit(&chain, Some("bob-key"), "10.0.0.1:1").await.is_ok());

        let whole = policy(
            "rate_limit",
            &[
                ("requests", json!(2)),
                ("per", json!("1h")),
                ("by", json!("proxy")),
            ],
        );
        let chain = Chain::new([&whole], directory());
        assert!(admit(&chain, None, "10.0.0.1:1").await.is_ok());
        assert!(admit(&chain, None, "10.0.0.2:1").await.is_ok());
        assert!(admit(&chain, None, "10.0.0.3:1").await.is_err());
    }

    #[tokio::test]
    async fn the_tighter_of_two_limits_is_reported() {
        for narrow_first in [false, true] {
            // Fresh limiters each time: the policies hold the counts.
            let wide = policy(
                "rate_limit",
                &[("requests", json!(100)), ("per", json!("1m"))],
            );
            let narrow = policy(
                "rate_limit",
                &[("requests", json!(5)), ("per", json!("1s"))],
            );
            let chain = if narrow_first {
                Chain::new([&narrow, &wide], directory())
            } else {
                Chain::new([&wide, &narrow], directory())
            };
            let headers = admit(&chain, None, "10.0.0.1:1").await.unwrap();
            assert_eq!(number(&headers, "ratelimit-limit"), 5);
            assert_eq!(number(&headers, "ratelimit-remaining"), 4);
        }
    }

    #[test]
    fn debug_shows_settings_only() {
        let a = policy(
            "rate_limit",
            &[("requests", json!(3)), ("per", json!("1m"))],
        );
        let b = policy(
            "rate_limit",
            &[("requests", json!(3)), ("per", json!("1m"))],
        );
        assert_eq!(a, b);
        assert!(format!("{a:?}").contains("Consumer"));
    }
}
