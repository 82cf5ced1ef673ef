//! The registry of live WebSocket sessions: who owns each one (environment, proxy, client)
//! and a handle to close it. The lock is taken when a session opens or closes and when
//! the control plane looks — never per frame.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::oneshot;

use super::websocket::relay::CloseFrame;

/// One live session as the registry knows it.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub env: Arc<str>,
    pub proxy: Arc<str>,
    pub client: SocketAddr,
    pub target: String,
    pub started: SystemTime,
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
    sessions: Mutex<HashMap<u64, Arc<Session>>>,
}

/// Removes its session from the registry when dropped (the relay ended, however it ended).
pub struct Registration {
    registry: Arc<Registry>,
    pub session: Arc<Session>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.with(|map| map.remove(&self.session.id));
    }
}

impl Registry {
    /// Registers a session; the receiver resolves when someone asks to close it.
    pub fn register(
        self: &Arc<Self>,
        env: Arc<str>,
        proxy: Arc<str>,
        client: SocketAddr,
        target: String,
    ) -> (Registration, oneshot::Receiver<CloseFrame>) {
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let session = Arc::new(Session {
            id,
            env,
            proxy,
            client,
            target,
            started: SystemTime::now(),
            close: Mutex::new(Some(tx)),
        });
        self.with(|map| map.insert(id, session.clone()));
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
        self.with(|map| map.values().cloned().collect())
    }

    pub fn len(&self) -> usize {
        self.with(|map| map.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<u64, Arc<Session>>) -> T) -> T {
        match self.sessions.lock() {
            Ok(mut map) => f(&mut map),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_listed_until_their_registration_drops() {
        let registry = Arc::new(Registry::default());
        let client = SocketAddr::from(([127, 0, 0, 1], 1));
        let (first, _rx1) = registry.register("e".into(), "p".into(), client, "ws://b/".into());
        let (second, _rx2) = registry.register("e".into(), "q".into(), client, "ws://b/".into());
        assert_ne!(first.session.id, second.session.id);
        assert_eq!(registry.len(), 2);
        drop(first);
        let left = registry.list();
        assert_eq!(left.len(), 1);
        assert_eq!(&*left[0].proxy, "q");
    }

    #[tokio::test]
    async fn close_reaches_the_relay_once() {
        let registry = Arc::new(Registry::default());
        let client = SocketAddr::from(([127, 0, 0, 1], 1));
        let (registration, rx) = registry.register("e".into(), "p".into(), client, String::new());
        assert!(registration.session.close(CloseFrame::new(4000, "bye")));
        assert!(!registration.session.close(CloseFrame::new(4001, "again")));
        let frame = rx.await.expect("the close request arrives");
        assert_eq!(frame.code, 4000);
    }
}
