//! `ws_message_rate`: at most `messages` WebSocket messages per `per` window from a side of
//! each session, and with `per_consumer: true` also from all of a consumer's sessions
//! together (the client IP's without a consumer). Beyond: `on_exceed: close` (the default)
//! closes the session, 1008 to the sender and 1001 to the other side; `drop` leaves the
//! message out, every frame of it, and the session goes on. HTTP requests are not affected.
//!
//! Each direction counts on its own. The relay asks the session's [`MessageGate`] once per
//! message, at its first frame header; control frames are not messages and are not counted.
//! The limiter is governor's GCRA, as `rate_limit`'s: a full quota allows a burst of
//! `messages`, then one more every `per / messages`. A session's own count lives with the
//! session; the per-consumer counts live in the compiled policy (a configuration change
//! starts them afresh, as `rate_limit`'s).

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::DefaultClock;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::rate_limit::{By, Key};
use super::ws_message_size::senders;
use super::{
    Field, Fields, Head, Held, Kind, MessageLimit, MessageRule, Phase, Policy, Reported, Sender,
    Shape, Verdict,
};

pub const KIND: Kind = Kind {
    name: "ws_message_rate",
    phase: Phase::Limits,
    doc: "At most `messages` WebSocket messages per `per` from a side of each session (and of each consumer's sessions together with per_consumer); beyond, the session is closed with 1008 or the message dropped. HTTP requests are not affected.",
    fields: &[
        Field {
            name: "messages",
            shape: Shape::Number,
            doc: "How many messages per window (required, 1 to 1000000000).",
        },
        Field {
            name: "per",
            shape: Shape::Duration,
            doc: "The window, such as 1s or 1m (required, 1ms to 366d).",
        },
        Field {
            name: "direction",
            shape: Shape::Text,
            doc: "Whose messages are counted: client_to_backend (the default), backend_to_client or both (each counted on its own).",
        },
        Field {
            name: "per_consumer",
            shape: Shape::Flag,
            doc: "Also count all the sessions of a consumer (the client IP without one) together (default false).",
        },
        Field {
            name: "on_exceed",
            shape: Shape::Text,
            doc: "close (the default: 1008 to the sender, 1001 to the other side) or drop (the message is left out).",
        },
    ],
    parse,
};

const MAX_MESSAGES: u64 = 1_000_000_000;
const MIN_PER: Duration = Duration::from_millis(1);
const MAX_PER: Duration = Duration::from_secs(366 * 86_400);
/// Checks between two looks at a shared store's size, and the size it is left alone below.
const TIDY_EVERY: u32 = 4096;
const TIDY_FLOOR: usize = 4096;

type Shared = RateLimiter<Key, DefaultKeyedStateStore<Key>, DefaultClock>;

/// Decides, message by message, whether a side of one session may send another.
pub struct MessageGate {
    own: DefaultDirectRateLimiter,
    shared: Option<(Arc<SharedCounts>, Key)>,
}

struct SharedCounts {
    limiter: Shared,
    checks: AtomicU32,
}

impl MessageGate {
    /// A gate for one session alone: `messages` per `per` (`None`: a window too short).
    pub fn new(messages: NonZeroU32, per: Duration) -> Option<MessageGate> {
        Some(MessageGate {
            own: RateLimiter::direct(quota(messages, per)?),
            shared: None,
        })
    }

    /// Takes one message from the session's quota (and the consumer's); false when either
    /// is spent.
    pub fn admit(&self) -> bool {
        if self.own.check().is_err() {
            return false;
        }
        match &self.shared {
            None => true,
            Some((counts, key)) => {
                counts.tidy();
                counts.limiter.check_key(key).is_ok()
            }
        }
    }
}

impl fmt::Debug for MessageGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageGate").finish_non_exhaustive()
    }
}

impl SharedCounts {
    fn new(quota: Quota) -> Self {
        SharedCounts {
            limiter: RateLimiter::dashmap(quota),
            checks: AtomicU32::new(0),
        }
    }

    /// Evicts keys whose quota is whole again, now and then, so the store follows the
    /// consumers that are sending rather than every one that ever did.
    fn tidy(&self) {
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(TIDY_EVERY)
            && self.limiter.len() >= TIDY_FLOOR
        {
            self.limiter.retain_recent();
        }
    }
}

struct WsMessageRate {
    messages: NonZeroU32,
    per: Duration,
    from: &'static [Sender],
    drop: bool,
    quota: Quota,
    /// With `per_consumer`: one store per sender, in the order of `from`.
    shared: Option<Vec<Arc<SharedCounts>>>,
}

/// The settings only: configurations are compared by their policies' `Debug` text.
impl fmt::Debug for WsMessageRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsMessageRate")
            .field("messages", &self.messages)
            .field("per", &self.per)
            .field("from", &self.from)
            .field("per_consumer", &self.shared.is_some())
            .field("drop", &self.drop)
            .finish_non_exhaustive()
    }
}

fn parse(fields: &mut dyn Fields) -> Result<Arc<dyn Policy>, Reported> {
    let messages = fields.number("messages");
    let per = fields.duration("per");
    let from = senders(fields);
    let per_consumer = fields.flag("per_consumer");
    let drop = match fields.text("on_exceed") {
        Err(reported) => Err(reported),
        Ok(None) => Ok(false),
        Ok(Some(text)) => match text.as_str() {
            "close" => Ok(false),
            "drop" => Ok(true),
            other => Err(fields.problem(
                "on_exceed",
                format!("on_exceed is {other:?}; it must be close or drop"),
            )),
        },
    };
    let messages = match messages? {
        None => {
            return Err(fields.problem(
                "messages",
                "needs messages, how many messages per window (for example messages: 100)"
                    .to_owned(),
            ));
        }
        Some(n) => u32::try_from(n)
            .ok()
            .and_then(NonZeroU32::new)
            .filter(|n| u64::from(n.get()) <= MAX_MESSAGES)
            .ok_or_else(|| {
                fields.problem(
                    "messages",
                    format!("messages is {n}; it must be between 1 and {MAX_MESSAGES}"),
                )
            })?,
    };
    let per = match per? {
        None => {
            return Err(fields.problem(
                "per",
                "needs per, the window (for example per: 1s)".to_owned(),
            ));
        }
        Some(per) if !(MIN_PER..=MAX_PER).contains(&per) => {
            return Err(fields.problem(
                "per",
                format!("per is {per:?}; the window must be between 1ms and 366d"),
            ));
        }
        Some(per) => per,
    };
    let (from, per_consumer, drop) = (from?, per_consumer?.unwrap_or(false), drop?);
    let quota = quota(messages, per)
        .ok_or_else(|| fields.problem("per", "the window is too short".to_owned()))?;
    let shared = per_consumer.then(|| {
        from.iter()
            .map(|_| Arc::new(SharedCounts::new(quota)))
            .collect()
    });
    Ok(Arc::new(WsMessageRate {
        messages,
        per,
        from,
        drop,
        quota,
        shared,
    }))
}

/// `messages` per `per`, all of them at once if they come at once.
fn quota(messages: NonZeroU32, per: Duration) -> Option<Quota> {
    Some(Quota::with_period(per / messages.get())?.allow_burst(messages))
}

impl Policy for WsMessageRate {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn apply(&self, head: &mut Head<'_>) -> Verdict {
        if !head.websocket {
            return Verdict::Pass;
        }
        let key = self.shared.as_ref().map(|_| By::Consumer.key(head));
        for (index, &from) in self.from.iter().enumerate() {
            let shared = self
                .shared
                .as_ref()
                .and_then(|stores| stores.get(index))
                .zip(key.clone())
                .map(|(store, key)| (store.clone(), key));
            let gate = MessageGate {
                own: RateLimiter::direct(self.quota),
                shared,
            };
            head.effects.held.push(Held::messages(MessageLimit {
                from,
                rule: MessageRule::Rate {
                    gate: Arc::new(gate),
                    drop: self.drop,
                },
            }));
        }
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hourly(messages: u32) -> Quota {
        quota(
            NonZeroU32::new(messages).unwrap(),
            Duration::from_secs(3600),
        )
        .unwrap()
    }

    #[test]
    fn a_session_gets_its_quota_then_is_refused() {
        let gate =
            MessageGate::new(NonZeroU32::new(5).unwrap(), Duration::from_secs(3600)).unwrap();
        let admitted = (0..8).filter(|_| gate.admit()).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn sessions_of_one_consumer_share_the_consumer_quota() {
        let counts = Arc::new(SharedCounts::new(hourly(4)));
        let session = |name: &str| MessageGate {
            own: RateLimiter::direct(hourly(4)),
            shared: Some((counts.clone(), Key::Consumer(Arc::from(name)))),
        };
        let (a, b) = (session("alice"), session("alice"));
        let admitted = (0..3).filter(|_| a.admit()).count() + (0..3).filter(|_| b.admit()).count();
        assert_eq!(admitted, 4, "alice's two sessions share 4");
        assert!(session("bob").admit(), "bob has his own quota");
    }
}
