//! Relay counters: per-direction totals, and the lock-free copy a running relay publishes
//! for the connection registry.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::proxy::websocket::frame;

/// Counters a relay publishes as it runs, for the connection registry: one writer (the
/// relay, after each burst of activity, not per frame), any number of readers, no lock.
#[derive(Debug, Default)]
pub struct LiveStats {
    client_to_backend: AtomicDirection,
    backend_to_client: AtomicDirection,
    /// Milliseconds from [`clock_base`] to the last activity, plus one (0: none yet). A
    /// monotonic offset rather than wall-clock time: the relay already has the instant, and
    /// reading the wall clock per burst cost more than the rest of the bookkeeping.
    last_activity_ms: AtomicU64,
}

/// The instant `LiveStats` counts activity from.
pub(super) fn clock_base() -> std::time::Instant {
    static BASE: OnceLock<std::time::Instant> = OnceLock::new();
    *BASE.get_or_init(std::time::Instant::now)
}

#[derive(Debug, Default)]
struct AtomicDirection {
    frames: AtomicU64,
    messages: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
}

impl AtomicDirection {
    fn store(&self, stats: &DirectionStats) {
        self.frames.store(stats.frames, Ordering::Relaxed);
        self.messages.store(stats.messages, Ordering::Relaxed);
        self.bytes.store(stats.bytes, Ordering::Relaxed);
        self.dropped.store(stats.dropped, Ordering::Relaxed);
    }

    fn load(&self) -> DirectionStats {
        DirectionStats {
            frames: self.frames.load(Ordering::Relaxed),
            messages: self.messages.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

impl LiveStats {
    pub fn client_to_backend(&self) -> DirectionStats {
        self.client_to_backend.load()
    }

    pub fn backend_to_client(&self) -> DirectionStats {
        self.backend_to_client.load()
    }

    /// When a frame last passed either way (`None`: not yet).
    pub fn last_activity(&self) -> Option<SystemTime> {
        let ms = self
            .last_activity_ms
            .load(Ordering::Relaxed)
            .checked_sub(1)?;
        let at = clock_base().checked_add(Duration::from_millis(ms))?;
        SystemTime::now().checked_sub(std::time::Instant::now().saturating_duration_since(at))
    }

    pub(crate) fn publish(&self, c2b: &DirectionStats, b2c: &DirectionStats, now: Instant) {
        self.client_to_backend.store(c2b);
        self.backend_to_client.store(b2c);
        let ms = now
            .into_std()
            .saturating_duration_since(clock_base())
            .as_millis();
        let ms = u64::try_from(ms).unwrap_or(u64::MAX).saturating_add(1);
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }
}

/// Counters for one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    pub frames: u64,
    pub messages: u64,
    pub bytes: u64,
    /// Data messages left out (`ws_message_rate` with `on_exceed: drop`); not in the others.
    pub dropped: u64,
}

impl DirectionStats {
    /// Counts a frame relayed whole.
    pub(super) fn count(&mut self, end: &frame::FrameEnd) {
        self.frames += 1;
        self.bytes += end.header.payload_len;
        self.messages += u64::from(end.ends_message);
    }
}
