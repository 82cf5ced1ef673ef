//! The registry of live WebSocket sessions: who owns each one (environment, proxy, client,
//! origin, subprotocol, backend), how it is doing (counters the relay publishes without a
//! lock) and a handle to close it. The lock is taken when a session opens or closes and
//! when the control plane looks — never per frame.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

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

#[derive(Debug, Default)]
pub struct Registry {
    next_id: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<u64, Arc<Session>>,
    /// What ended sessions relayed, per environment and proxy, so the metrics' totals
    /// (ended + open) only grow. Updated under the same lock as `sessions`.
    ended: HashMap<(Arc<str>, Arc<str>), Traffic>,
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
        for (i, stats) in [live.client_to_backend(), live.backend_to_client()]
            .iter()
            .enumerate()
        {
            if let (Some(m), Some(b), Some(d)) = (
                self.messages.get_mut(i),
                self.bytes.get_mut(i),
                self.dropped.get_mut(i),
            ) {
                *m += stats.messages;
                *b += stats.bytes;
                *d += stats.dropped;
            }
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
        self.registry.with(|state| {
            state.sessions.remove(&session.id);
            let key = (session.info.env.clone(), session.info.proxy.clone());
            state.ended.entry(key).or_default().add(&session.live);
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
        let session = Arc::new(Session {
            id,
            info,
            started: SystemTime::now(),
            live: LiveStats::default(),
            close: Mutex::new(Some(tx)),
        });
        self.with(|state| state.sessions.insert(id, session.clone()));
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
        self.with(|state| state.sessions.values().cloned().collect())
    }

    pub fn get(&self, id: u64) -> Option<Arc<Session>> {
        self.with(|state| state.sessions.get(&id).cloned())
    }

    pub fn len(&self) -> usize {
        self.with(|state| state.sessions.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        match self.state.lock() {
            Ok(mut state) => f(&mut state),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

impl SessionSource for Registry {
    /// Per environment and proxy: open sessions, and traffic of ended and open ones.
    fn totals(&self) -> Vec<SessionTotals> {
        self.with(|state| {
            let mut totals: HashMap<(Arc<str>, Arc<str>), (u64, Traffic)> = state
                .ended
                .iter()
                .map(|(key, traffic)| (key.clone(), (0, *traffic)))
                .collect();
            for session in state.sessions.values() {
                let key = (session.info.env.clone(), session.info.proxy.clone());
                let (active, traffic) = totals.entry(key).or_default();
                *active += 1;
                traffic.add(&session.live);
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
