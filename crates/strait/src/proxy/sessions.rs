//! The registry of live WebSocket sessions: who owns each one (environment, proxy, client,
//! origin, subprotocol, backend), how it is doing (counters the relay publishes without a
//! lock) and a handle to close it. A shard's lock is taken when one of its sessions opens or
//! closes and when the control plane looks — never per frame.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use foldhash::HashMap;
use tokio::sync::oneshot;

use super::websocket::relay::{CloseFrame, LiveStats};
use crate::telemetry::{SessionSource, SessionTotals};

/// Who a session belongs to and where it goes, as known at the handshake.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub env: Arc<str>,
    pub proxy: Arc<str>,
    /// The client's address as the listener saw it.
    pub client: SocketAddr,
    /// The handshake's `Origin` header.
    pub origin: Option<String>,
    /// The subprotocol the backend chose.
    pub subprotocol: Option<String>,
    /// The consumer an authentication policy identified at the handshake.
    pub consumer: Option<String>,
    /// The backend URL the session was opened to (`ws://` or `wss://`).
    pub target: String,
}

/// One live session as the registry knows it.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub info: SessionInfo,
    pub started: SystemTime,
    /// Counters and last activity, published by the relay.
    pub live: LiveStats,
    close: Mutex<Option<oneshot::Sender<CloseFrame>>>,
    /// Its (environment, proxy) in its registry shard's list.
    pair: usize,
}

impl Session {
    /// Asks the relay to close both sides with `frame`; false if it was already asked or ended.
    pub fn close(&self, frame: CloseFrame) -> bool {
        let sender = match self.close.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        sender.is_some_and(|tx| tx.send(frame).is_ok())
    }
}

/// How many parts the registry is split into. A session lives in shard `id % SHARDS`: opening
/// or closing one locks only its shard, and a listing or a scrape holds each shard's lock only
/// while it walks that shard's sessions — at 1,000,000 sessions about 60,000, not all of them.
const SHARDS: usize = 16;

#[derive(Debug)]
pub struct Registry {
    next_id: AtomicU64,
    shards: [Mutex<Shard>; SHARDS],
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            next_id: AtomicU64::new(0),
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    sessions: HashMap<u64, Arc<Session>>,
    /// Every (environment, proxy) this shard has held a session of. A session knows its
    /// pair's index ([`Session::pair`]): a scrape adds it to its pair's sums hashing nothing.
    pairs: Vec<Pair>,
    index: HashMap<(Arc<str>, Arc<str>), usize>,
}

/// One (environment, proxy) within a shard.
#[derive(Debug)]
struct Pair {
    env: Arc<str>,
    proxy: Arc<str>,
    /// What its ended sessions relayed, so the metrics' totals (ended + open) only grow.
    ended: Traffic,
}

impl Shard {
    /// The index of `info`'s pair, added if new.
    fn pair(&mut self, info: &SessionInfo) -> usize {
        let key = (info.env.clone(), info.proxy.clone());
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = self.pairs.len();
        self.pairs.push(Pair {
            env: key.0.clone(),
            proxy: key.1.clone(),
            ended: Traffic::default(),
        });
        self.index.insert(key, i);
        i
    }

    /// Per pair: open sessions, and traffic of ended and open ones.
    fn totals(&self) -> Vec<(Arc<str>, Arc<str>, u64, Traffic)> {
        let mut sums: Vec<(u64, Traffic)> = self.pairs.iter().map(|p| (0, p.ended)).collect();
        for session in self.sessions.values() {
            if let Some((active, traffic)) = sums.get_mut(session.pair) {
                *active += 1;
                traffic.add(&session.live);
            }
        }
        self.pairs
            .iter()
            .zip(sums)
            .map(|(p, (active, traffic))| (p.env.clone(), p.proxy.clone(), active, traffic))
            .collect()
    }
}

/// Messages and bytes each way.
#[derive(Debug, Default, Clone, Copy)]
struct Traffic {
    messages: [u64; 2],
    bytes: [u64; 2],
    dropped: [u64; 2],
}

impl Traffic {
    fn add(&mut self, live: &LiveStats) {
        let [up, down] = [live.client_to_backend(), live.backend_to_client()];
        self.messages[0] += up.messages;
        self.messages[1] += down.messages;
        self.bytes[0] += up.bytes;
        self.bytes[1] += down.bytes;
        self.dropped[0] += up.dropped;
        self.dropped[1] += down.dropped;
    }

    fn merge(&mut self, other: &Traffic) {
        for (sum, more) in [
            (&mut self.messages, &other.messages),
            (&mut self.bytes, &other.bytes),
            (&mut self.dropped, &other.dropped),
        ] {
            sum[0] += more[0];
            sum[1] += more[1];
        }
    }
}

/// Removes its session from the registry when dropped (the relay ended, however it ended).
pub struct Registration {
    registry: Arc<Registry>,
    pub session: Arc<Session>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let session = &self.session;
        self.registry.with(session.id, |shard| {
            shard.sessions.remove(&session.id);
            if let Some(pair) = shard.pairs.get_mut(session.pair) {
                pair.ended.add(&session.live);
            }
        });
    }
}

impl Registry {
    /// Registers a session; the receiver resolves when someone asks to close it.
    pub fn register(
        self: &Arc<Self>,
        info: SessionInfo,
    ) -> (Registration, oneshot::Receiver<CloseFrame>) {
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let started = SystemTime::now();
        let session = self.with(id, |shard| {
            let pair = shard.pair(&info);
            let session = Arc::new(Session {
                id,
                info,
                started,
                live: LiveStats::default(),
                close: Mutex::new(Some(tx)),
                pair,
            });
            shard.sessions.insert(id, session.clone());
            session
        });
        (
            Registration {
                registry: self.clone(),
                session,
            },
            rx,
        )
    }

    /// Every live session, in no particular order.
    pub fn list(&self) -> Vec<Arc<Session>> {
        let mut all = Vec::with_capacity(self.len());
        for shard in &self.shards {
            lock(shard, |shard| all.extend(shard.sessions.values().cloned()));
        }
        all
    }

    pub fn get(&self, id: u64) -> Option<Arc<Session>> {
        self.with(id, |shard| shard.sessions.get(&id).cloned())
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard, |shard| shard.sessions.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `f` on the shard of session `id`.
    #[allow(
        clippy::indexing_slicing,
        reason = "a remainder of SHARDS indexes SHARDS shards"
    )]
    fn with<T>(&self, id: u64, f: impl FnOnce(&mut Shard) -> T) -> T {
        lock(&self.shards[(id % SHARDS as u64) as usize], f)
    }
}

fn lock<T>(shard: &Mutex<Shard>, f: impl FnOnce(&mut Shard) -> T) -> T {
    match shard.lock() {
        Ok(mut shard) => f(&mut shard),
        Err(poisoned) => f(&mut poisoned.into_inner()),
    }
}

impl SessionSource for Registry {
    /// Per environment and proxy: open sessions, and traffic of ended and open ones. Each
    /// shard is read under its own lock, so every figure only grows from one scrape to the
    /// next.
    fn totals(&self) -> Vec<SessionTotals> {
        let mut totals: HashMap<(Arc<str>, Arc<str>), (u64, Traffic)> = HashMap::default();
        for shard in &self.shards {
            for (env, proxy, active, traffic) in lock(shard, |shard| shard.totals()) {
                let (sum, all) = totals.entry((env, proxy)).or_default();
                *sum += active;
                all.merge(&traffic);
            }
        }
        totals
            .into_iter()
            .map(|((env, proxy), (active, traffic))| SessionTotals {
                environment: env.to_string(),
                proxy: proxy.to_string(),
                active,
                messages: traffic.messages,
                bytes: traffic.bytes,
                dropped: traffic.dropped,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::websocket::relay::DirectionStats;

    fn info(proxy: &str) -> SessionInfo {
        SessionInfo {
            env: "e".into(),
            proxy: proxy.into(),
            client: SocketAddr::from(([127, 0, 0, 1], 1)),
            origin: None,
            subprotocol: None,
            consumer: None,
            target: "ws://b/".into(),
        }
    }

    #[test]
    fn sessions_are_listed_until_their_registration_drops() {
        let registry = Arc::new(Registry::default());
        let (first, _rx1) = registry.register(info("p"));
        let (second, _rx2) = registry.register(info("q"));
        assert_ne!(first.session.id, second.session.id);
        assert_eq!(registry.len(), 2);
        let first_id = first.session.id;
        drop(first);
        let left = registry.list();
        assert_eq!(left.len(), 1);
        assert_eq!(&*left[0].info.proxy, "q");
        assert!(registry.get(second.session.id).is_some());
        assert!(registry.get(first_id).is_none());
    }

    fn stats(messages: u64) -> DirectionStats {
        DirectionStats {
            frames: messages,
            messages,
            bytes: 10 * messages,
            dropped: 0,
        }
    }

    fn totals_of(registry: &Registry, proxy: &str) -> Option<SessionTotals> {
        registry.totals().into_iter().find(|t| t.proxy == proxy)
    }

    #[test]
    fn totals_count_open_and_ended_sessions_per_proxy_across_shards() {
        let registry = Arc::new(Registry::default());
        // Three times as many sessions as shards: every shard holds some of each proxy.
        let mut held: Vec<_> = (0..3 * SHARDS)
            .map(|i| registry.register(info(if i % 3 == 0 { "p" } else { "q" })))
            .collect();
        for (registration, _) in &held {
            let live = &registration.session.live;
            live.publish(&stats(1), &stats(2), tokio::time::Instant::now());
        }
        assert_eq!(registry.len(), 3 * SHARDS);
        assert_eq!(registry.list().len(), 3 * SHARDS);
        let p = totals_of(&registry, "p").expect("p is reported");
        let n = SHARDS as u64;
        assert_eq!(
            (p.active, p.messages, p.bytes),
            (n, [n, 2 * n], [10 * n, 20 * n])
        );
        let q = totals_of(&registry, "q").expect("q is reported");
        assert_eq!((q.active, q.messages), (2 * n, [2 * n, 4 * n]));

        // Ended sessions leave the open count but keep their traffic in the totals.
        held.retain(|(registration, _)| &*registration.session.info.proxy == "q");
        let p = totals_of(&registry, "p").expect("p stays reported");
        assert_eq!(
            (p.active, p.messages, p.bytes),
            (0, [n, 2 * n], [10 * n, 20 * n])
        );
        assert_eq!(registry.len(), 2 * SHARDS);

        // Open sessions' later traffic adds to what was counted.
        for (registration, _) in &held {
            let live = &registration.session.live;
            live.publish(&stats(3), &stats(4), tokio::time::Instant::now());
        }
        let q = totals_of(&registry, "q").expect("q is reported");
        assert_eq!((q.active, q.messages), (2 * n, [6 * n, 8 * n]));
        held.clear();
        let q = totals_of(&registry, "q").expect("q stays reported");
        assert_eq!((q.active, q.messages), (0, [6 * n, 8 * n]));
        assert!(registry.is_empty());
    }

    #[tokio::test]
    async fn close_reaches_the_relay_once() {
        let registry = Arc::new(Registry::default());
        let (registration, rx) = registry.register(info("p"));
        assert!(registration.session.close(CloseFrame::new(4000, "bye")));
        assert!(!registration.session.close(CloseFrame::new(4001, "again")));
        let frame = rx.await.expect("the close request arrives");
        assert_eq!(frame.code, 4000);
    }
}
