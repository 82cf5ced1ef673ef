//! `ws_connections`: at most `max` concurrent WebSocket sessions for each consumer (the
//! client IP when none was authenticated), each client IP, or the whole proxy; the handshake
//! beyond the limit gets 429. Plain HTTP requests pass untouched.
//!
//! An admitted handshake takes a [`Slot`], handed to the request through [`Head::held`]; the
//! session task holds it for the session's whole life and dropping it gives the place back,
//! however the session ends (close, error, shutdown, a failed upgrade, a backend refusing the
//! handshake). The counts are in a sharded `DashMap` (a key's shard is locked only while its
//! count changes — no lock shared by every handshake); a key whose count falls to zero is
//! removed, so the map holds only keys with live sessions.
//!
//! The counts live in the compiled policy: a configuration change compiles a new one that
//! starts from zero, while sessions already open keep their slots in the old one. Until those
//! sessions end, a key may so have up to `max` sessions more than the limit. A policy on an
//! environment counts the sessions of every proxy deployed there together.

use std::fmt;
use std::sync::Arc;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use http::header::{HeaderValue, RETRY_AFTER};

use super::rate_limit::{By, Key};
use super::{Field, Fields, Head, Held, Kind, Phase, Policy, Reported, Shape, Verdict};
use crate::error::{ErrorKind, GatewayError};

pub const KIND: Kind = Kind {
    name: "ws_connections",
    phase: Phase::Limits,
    doc: "At most `max` concurrent WebSocket sessions for each consumer, client IP or the whole proxy; the handshake beyond gets 429. HTTP requests are not affected.",
    fields: &[
        Field {
            name: "max",
            shape: Shape::Number,
            doc: "How many sessions each key may have open at once (required, 1 to 1000000).",
        },
        Field {
            name: "by",
            shape: Shape::Text,
            doc: "What is counted: consumer (the default; the client IP when none was authenticated), ip or proxy.",
        },
    ],
    parse,
};

const MAX: u64 = 1_000_000;

/// Live sessions per key; a key is present only while its count is above zero.
type Counts = DashMap<Key, u32>;

struct WsConnections {
    max: u32,
    by: By,
    counts: Arc<Counts>,
}

/// The settings only: configurations are compared by their policies' `Debug` text.
impl fmt::Debug for WsConnections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsConnections")
            .field("max", &self.max)
            .field("by", &self.by)
            .finish_non_exhaustive()
    }
}

fn parse(fields: &mut dyn Fields) -> Result<Arc<dyn Policy>, Reported> {
    let max = fields.number("max");
    let by = By::parse(fields);
    let max = match max? {
        None => {
            return Err(fields.problem(
                "max",
                "needs max, how many sessions at once (for example max: 10)".to_owned(),
            ));
        }
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| (1..=MAX).contains(&u64::from(*n)))
            .ok_or_else(|| {
                fields.problem("max", format!("max is {n}; it must be between 1 and {MAX}"))
            })?,
    };
    Ok(Arc::new(WsConnections {
        max,
        by: by?,
        counts: Arc::new(DashMap::new()),
    }))
}

/// One place taken by a live session; dropping it gives the place back.
struct Slot {
    counts: Arc<Counts>,
    key: Key,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Entry::Occupied(mut entry) = self.counts.entry(self.key.clone()) {
            let count = entry.get_mut();
            *count = count.saturating_sub(1);
            if *count == 0 {
                entry.remove();
            }
        }
    }
}

impl WsConnections {
    /// A slot for `key`, or `None` when it has `max` sessions already.
    fn take(&self, key: Key) -> Option<Slot> {
        let mut count = self.counts.entry(key.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        drop(count);
        Some(Slot {
            counts: self.counts.clone(),
            key,
        })
    }

    #[cfg(test)]
    fn live(&self, key: &Key) -> u32 {
        self.counts.get(key).map_or(0, |count| *count)
    }
}

impl Policy for WsConnections {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn apply(&self, head: &mut Head<'_>) -> Verdict {
        if !head.websocket {
            return Verdict::Pass;
        }
        let key = self.by.key(head);
        let who = By::describe(&key);
        match self.take(key) {
            Some(slot) => {
                head.effects.held.push(Held::new(slot));
                Verdict::Pass
            }
            None => Verdict::Refuse(
                GatewayError::new(
                    ErrorKind::TooManyRequests,
                    format!(
                        "{who} already has {} WebSocket sessions open, the most this API proxy allows; close one first",
                        self.max
                    ),
                )
                // Sessions last: a second is a polite floor, not a promise.
                .with_header(RETRY_AFTER, HeaderValue::from_static("1")),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Chain;
    use super::super::tests::{Given, directory, policy};
    use super::*;
    use http::HeaderMap;
    use serde_json::json;

    #[test]
    fn fields_are_checked() {
        for (values, needle) in [
            (vec![], "max"),
            (vec![("max", json!(0))], "max"),
            (vec![("max", json!(2_000_000))], "max"),
            (vec![("max", json!("ten"))], "max"),
            (vec![("max", json!(1)), ("by", json!("everyone"))], "by"),
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

    #[test]
    fn slots_count_up_to_max_and_back_down() {
        let limit = WsConnections {
            max: 2,
            by: By::Ip,
            counts: Arc::default(),
        };
        let key = || Key::Ip("10.0.0.1".parse().unwrap());
        let first = limit.take(key()).unwrap();
        let second = limit.take(key()).unwrap();
        assert!(limit.take(key()).is_none());
        assert!(limit.take(Key::Proxy).is_some(), "another key");
        assert_eq!(limit.live(&key()), 2);
        drop(first);
        assert_eq!(limit.live(&key()), 1);
        let third = limit.take(key()).unwrap();
        drop((second, third));
        assert!(limit.counts.is_empty(), "keys at zero are removed");
    }

    async fn handshake(chain: &Chain, websocket: bool) -> Result<Vec<Held>, GatewayError> {
        let mut headers = HeaderMap::new();
        let mut target = "http://b/".parse().unwrap();
        let client = "10.0.0.1:1".parse().unwrap();
        chain
            .admit(&mut headers, &mut target, client, websocket)
            .await
            .map(|admission| admission.effects.held)
    }

    #[tokio::test]
    async fn the_handshake_beyond_max_is_refused_until_a_session_ends() {
        let chain = Chain::new(
            [&policy("ws_connections", &[("max", json!(1))])],
            directory(),
        );
        let session = handshake(&chain, true).await.unwrap();
        assert_eq!(session.len(), 1);
        let refused = handshake(&chain, true).await.unwrap_err();
        assert_eq!(refused.kind, ErrorKind::TooManyRequests);
        assert!(refused.message.contains("client 10.0.0.1"), "{refused}");
        assert!(
            handshake(&chain, false).await.unwrap().is_empty(),
            "HTTP is not counted"
        );
        drop(session);
        assert!(handshake(&chain, true).await.is_ok());
    }
}
